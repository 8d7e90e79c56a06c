#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"

#define BLOCK_SIZE 4096

struct px__arena_block {
    px__arena_block_t *next;
    size_t size; /* usable bytes in data */
    _Alignas(16) unsigned char data[];
};

void px__arena_init(px__arena_t *a, size_t max)
{
    a->head = NULL;
    a->used = 0;
    a->total = 0;
    a->max = max;
}

void *px__arena_alloc(px__arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (a->max && (n > a->max || a->total > a->max - n))
        return NULL;
    if (!a->head || a->head->size - a->used < n) {
        size_t size =
            n > BLOCK_SIZE - sizeof(px__arena_block_t) ? n : BLOCK_SIZE - sizeof(px__arena_block_t);
        px__arena_block_t *b = px__malloc(sizeof *b + size);
        if (!b)
            return NULL;
        b->size = size;
        if (a->head && size > BLOCK_SIZE) {
            /* A big one-off block goes behind the current one, which keeps its free space. */
            b->next = a->head->next;
            a->head->next = b;
            a->total += n;
            return b->data;
        }
        b->next = a->head;
        a->head = b;
        a->used = 0;
    }
    void *p = a->head->data + a->used;
    a->used += n;
    a->total += n;
    return p;
}

void *px__arena_memdup(px__arena_t *a, const void *p, size_t n)
{
    void *d = px__arena_alloc(a, n + 1);
    if (d) {
        if (n)
            memcpy(d, p, n);
        ((char *)d)[n] = '\0';
    }
    return d;
}

void px__arena_reset(px__arena_t *a)
{
    px__arena_block_t *b = a->head;
    if (!b)
        return;
    /* Keep the last (oldest) standard block: the next request reuses it. */
    while (b->next) {
        px__arena_block_t *next = b->next;
        px__free(b);
        b = next;
    }
    if (b->size > BLOCK_SIZE) {
        px__free(b);
        b = NULL;
    }
    a->head = b;
    a->used = 0;
    a->total = 0;
}

void px__arena_dispose(px__arena_t *a)
{
    px__arena_block_t *b = a->head;
    while (b) {
        px__arena_block_t *next = b->next;
        px__free(b);
        b = next;
    }
    a->head = NULL;
    a->used = a->total = 0;
}
