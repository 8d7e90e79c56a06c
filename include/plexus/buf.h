/* plexus — byte buffers.
 *
 * px_buf_t: a growable byte buffer with a hard cap (`max`): growing past it
 * fails with -EMSGSIZE instead of allocating, so a peer cannot make the server
 * buffer without bound.
 *
 * px_slice_t: an immutable, reference-counted byte block. One slice can be
 * queued on many connections (on many workers) at once and written with
 * writev without copying: this is how a broadcast frame is shared. The count
 * is atomic because workers release their references independently. */
#ifndef PLEXUS_BUF_H
#define PLEXUS_BUF_H

#include "plexus/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_buf {
    char *data;
    size_t off; /* bytes consumed at the front; data[off..len) is live */
    size_t len; /* end of live bytes */
    size_t cap; /* allocated */
    size_t max; /* hard cap on cap; 0 = SIZE_MAX */
} px_buf_t;

PX_EXTERN void px_buf_init(px_buf_t *b, size_t max);
PX_EXTERN void px_buf_dispose(px_buf_t *b);
/** Make room for `n` more bytes after len. 0, -ENOMEM, or -EMSGSIZE past `max`.
 * May move data (pointers into the buffer become invalid). */
PX_EXTERN PX_MUST_CHECK int px_buf_reserve(px_buf_t *b, size_t n);
PX_EXTERN PX_MUST_CHECK int px_buf_append(px_buf_t *b, const void *p, size_t n);
/** Drop `n` bytes from the front (O(1); space is reclaimed on the next reserve). */
PX_EXTERN void px_buf_consume(px_buf_t *b, size_t n);
PX_EXTERN void px_buf_reset(px_buf_t *b);
static inline size_t px_buf_size(const px_buf_t *b)
{
    return b->len - b->off;
}
/* Never NULL + offset (undefined behaviour): an unallocated buffer has no bytes. */
static inline char *px_buf_head(const px_buf_t *b)
{
    return b->data ? b->data + b->off : (char *)"";
}
static inline char *px_buf_tail(const px_buf_t *b)
{
    return b->data ? b->data + b->len : (char *)"";
}
static inline size_t px_buf_room(const px_buf_t *b)
{
    return b->cap - b->len;
}

typedef struct px_slice {
    /* private */
    int _refs; /* atomic; the slice is freed when it drops to 0 */
    /* public, read-only once shared */
    uint32_t len;
    char data[];
} px_slice_t;

/** New slice of `len` bytes (uninitialised), one reference held by the caller.
 * NULL on allocation failure. Fill `data` before sharing it. */
PX_EXTERN px_slice_t *px_slice_new(size_t len);
PX_EXTERN px_slice_t *px_slice_copy(const void *p, size_t len);
PX_EXTERN px_slice_t *px_slice_ref(px_slice_t *s);
/** Drop one reference; frees at zero. Accepts NULL. Any thread. */
PX_EXTERN void px_slice_unref(px_slice_t *s);
PX_EXTERN int px_slice_refs(const px_slice_t *s);

#ifdef __cplusplus
}
#endif
#endif
