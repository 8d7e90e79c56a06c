#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "plexus/buf.h"
#include "core/alloc.h"

void px_buf_init(px_buf_t *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : SIZE_MAX;
}

void px_buf_dispose(px_buf_t *b)
{
    if (!b)
        return;
    px__free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

int px_buf_reserve(px_buf_t *b, size_t n)
{
    size_t live = b->len - b->off;
    if (n > b->max || live > b->max - n)
        return -EMSGSIZE;
    if (b->cap - b->len >= n)
        return 0;
    /* Reclaim consumed space first: cheaper than growing. */
    if (b->off > 0 && b->cap - live >= n) {
        memmove(b->data, b->data + b->off, live);
        b->off = 0;
        b->len = live;
        return 0;
    }
    size_t want = live + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    if (cap > b->max)
        cap = b->max;
    char *p;
    if (b->off == 0) {
        p = px__realloc(b->data, cap);
        if (!p)
            return -ENOMEM;
    } else {
        p = px__malloc(cap);
        if (!p)
            return -ENOMEM;
        memcpy(p, b->data + b->off, live);
        px__free(b->data);
    }
    b->data = p;
    b->cap = cap;
    b->off = 0;
    b->len = live;
    return 0;
}

int px_buf_append(px_buf_t *b, const void *p, size_t n)
{
    int r = px_buf_reserve(b, n);
    if (r != 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void px_buf_consume(px_buf_t *b, size_t n)
{
    size_t live = b->len - b->off;
    if (n >= live)
        b->off = b->len = 0;
    else
        b->off += n;
}

void px_buf_reset(px_buf_t *b)
{
    b->off = b->len = 0;
}

#define REFS(s) ((_Atomic int *)&(s)->_refs)

px_slice_t *px_slice_new(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    px_slice_t *s = px__malloc(sizeof *s + len);
    if (!s)
        return NULL;
    atomic_init(REFS(s), 1);
    s->len = (uint32_t)len;
    return s;
}

px_slice_t *px_slice_copy(const void *p, size_t len)
{
    px_slice_t *s = px_slice_new(len);
    if (s && len)
        memcpy(s->data, p, len);
    return s;
}

px_slice_t *px_slice_ref(px_slice_t *s)
{
    atomic_fetch_add_explicit(REFS(s), 1, memory_order_relaxed);
    return s;
}

void px_slice_unref(px_slice_t *s)
{
    if (!s)
        return;
    /* acq_rel: the thread that frees must see every write made before the
     * other threads dropped their references. */
    if (atomic_fetch_sub_explicit(REFS(s), 1, memory_order_acq_rel) == 1)
        px__free(s);
}

int px_slice_refs(const px_slice_t *s)
{
    return atomic_load_explicit((_Atomic int *)&s->_refs, memory_order_relaxed);
}
