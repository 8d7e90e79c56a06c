/* Request-scoped memory (nginx pools, h2o mem pools): bump allocation from
 * blocks, all released at once. Nothing is allocated until first use, so a
 * request that needs no memory costs nothing. Internal. */
#ifndef PX_CORE_ARENA_H
#define PX_CORE_ARENA_H

#include <stddef.h>

typedef struct px__arena_block px__arena_block_t;

typedef struct px__arena {
    px__arena_block_t *head; /* newest block first */
    size_t used;             /* bytes used in head */
    size_t total;            /* bytes handed out (bounded by max) */
    size_t max;              /* 0 = unlimited */
} px__arena_t;

void px__arena_init(px__arena_t *a, size_t max);
/** 16-byte aligned memory, or NULL (allocation failure or over max). */
void *px__arena_alloc(px__arena_t *a, size_t n);
void *px__arena_memdup(px__arena_t *a, const void *p, size_t n);
/** Free everything but keep the first block for reuse. */
void px__arena_reset(px__arena_t *a);
/** Free everything. */
void px__arena_dispose(px__arena_t *a);

#endif
