#include <errno.h>
#include <string.h>

#include "core/alloc.h"
#include "util/hashmap.h"

uint64_t px__hashmap_hash(const px__hashmap_t *m, const char *key, size_t len)
{
    return px__siphash13(&m->key, key, len);
}

void px__hashmap_init(px__hashmap_t *m)
{
    memset(m, 0, sizeof *m);
    px__sipkey_random(&m->key);
}

void px__hashmap_dispose(px__hashmap_t *m)
{
    px__free(m->buckets);
    memset(m, 0, sizeof *m); /* (the key too: init again before reuse) */
}

px__hentry_t *px__hashmap_get(const px__hashmap_t *m, const char *key, size_t len)
{
    if (!m->nbuckets)
        return NULL;
    uint64_t h = px__hashmap_hash(m, key, len);
    for (px__hentry_t *e = m->buckets[h & (m->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static int grow(px__hashmap_t *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    px__hentry_t **b = px__calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        px__hentry_t *e = m->buckets[i];
        while (e) {
            px__hentry_t *next = e->next;
            size_t k = e->hash & (n - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    px__free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int px__hashmap_put(px__hashmap_t *m, px__hentry_t *e)
{
    /* Growth may fail (longer chains until the next put grows it); only a map without a
     * table cannot take the entry. */
    if (m->count >= m->nbuckets && grow(m) != 0 && !m->nbuckets)
        return -ENOMEM;
    e->hash = px__hashmap_hash(m, e->key, e->key_len);
    size_t k = e->hash & (m->nbuckets - 1);
    e->next = m->buckets[k];
    m->buckets[k] = e;
    m->count++;
    return 0;
}

void px__hashmap_del(px__hashmap_t *m, px__hentry_t *e)
{
    px__hentry_t **pp = &m->buckets[e->hash & (m->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = e->next;
        m->count--;
    }
}

px__hentry_t *px__hashmap_next(const px__hashmap_t *m, px__hentry_t *prev)
{
    size_t i = 0;
    if (prev) {
        if (prev->next)
            return prev->next;
        i = (prev->hash & (m->nbuckets - 1)) + 1;
    }
    for (; i < m->nbuckets; i++)
        if (m->buckets[i])
            return m->buckets[i];
    return NULL;
}
