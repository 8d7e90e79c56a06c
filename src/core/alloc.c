#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

static struct {
    void *(*malloc_fn)(size_t);
    void *(*realloc_fn)(void *, size_t);
    void *(*calloc_fn)(size_t, size_t);
    void (*free_fn)(void *);
} allocator = {malloc, realloc, calloc, free};

int px_set_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                     void *(*calloc_fn)(size_t, size_t), void (*free_fn)(void *))
{
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
        return -EINVAL;
    allocator.malloc_fn = malloc_fn;
    allocator.realloc_fn = realloc_fn;
    allocator.calloc_fn = calloc_fn;
    allocator.free_fn = free_fn;
    return 0;
}

void *px__malloc(size_t n)
{
    return allocator.malloc_fn(n);
}

void *px__calloc(size_t nmemb, size_t size)
{
    return allocator.calloc_fn(nmemb, size);
}

void *px__realloc(void *p, size_t n)
{
    return allocator.realloc_fn(p, n);
}

void px__free(void *p)
{
    if (p)
        allocator.free_fn(p);
}

static void oom(size_t n)
{
    fprintf(stderr, "plexus: out of memory allocating %zu bytes\n", n);
    abort();
}

void *px__xmalloc(size_t n)
{
    void *p = allocator.malloc_fn(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *px__xcalloc(size_t nmemb, size_t size)
{
    void *p = allocator.calloc_fn(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *px__xmemdup(const void *p, size_t n)
{
    void *q = px__xmalloc(n ? n : 1);
    if (n)
        memcpy(q, p, n);
    return q;
}

char *px__xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = px__xmalloc(n);
    memcpy(p, s, n);
    return p;
}

const char *px_strerror(int err)
{
    return strerror(err < 0 ? -err : err);
}

uint64_t px_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t px_now_ms(void)
{
    return px_now_ns() / 1000000u;
}

int px_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
