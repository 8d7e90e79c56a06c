/* plexus — common definitions shared by every public header. */
#ifndef PLEXUS_COMMON_H
#define PLEXUS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks a symbol exported from libplexus (the library builds with -fvisibility=hidden). */
#define PX_EXTERN        __attribute__((visibility("default")))
#define PX_MUST_CHECK    __attribute__((warn_unused_result))
#define PX_UNUSED(x)     ((void)(x))
#define PX_LIKELY(x)     __builtin_expect(!!(x), 1)
#define PX_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#define PX_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/** Pointer to the struct that embeds `ptr` as `member`. */
#define PX_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/** A byte span pointing into someone else's buffer (not NUL-terminated). */
typedef struct px_str {
    const char *ptr;
    size_t len;
} px_str_t;
#define PX_STR_LIT(s) ((px_str_t){(s), sizeof(s) - 1})

/* Parser contract (picohttpparser style): >= 0 bytes consumed, or one of these. */
#define PX_PARSE_ERROR      (-1)
#define PX_PARSE_INCOMPLETE (-2)

/**
 * Library calls return 0 or a negative errno (-ENOMEM, -EAGAIN, ...). errno is
 * read once, at the syscall. px_strerror() names such a code.
 */
PX_EXTERN const char *px_strerror(int err);

/**
 * Replace the allocator used by every libplexus allocation (like uv_replace_allocator).
 * Call before creating any object. Tests use it to inject allocation failures.
 * Returns 0, or -EINVAL if a function is NULL.
 */
PX_EXTERN int px_set_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                               void *(*calloc_fn)(size_t, size_t), void (*free_fn)(void *));

/** Monotonic clock in milliseconds / nanoseconds. */
PX_EXTERN uint64_t px_now_ms(void);
PX_EXTERN uint64_t px_now_ns(void);

/** Fill `buf` with `len` cryptographically random bytes (getrandom). Returns 0 or -errno. */
PX_EXTERN int px_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
