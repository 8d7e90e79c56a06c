/* A counting allocator for unit tests that can fail the Nth allocation (SQLite's OOM tests,
 * curl's torture mode): install it with oom_install(), arm it with oom_arm(n), and check
 * oom.live for leaks. Thread-safe (the hub's threads allocate too).
 *
 * Only fallible allocations fail. px__xmalloc & co. abort on OOM by design (fixed-size
 * objects, STYLE.md), so a failure there would end the test instead of testing a path:
 * oom_install() learns the return addresses of their calls into the allocator (each has one
 * or two call sites), and those calls are never failed. Include it in one test file only. */
#ifndef PX_TEST_OOM_ALLOC_H
#define PX_TEST_OOM_ALLOC_H

#include <stdatomic.h>
#include <stdlib.h>

#include "core/alloc.h"

static struct {
    atomic_long countdown; /* fallible allocations left before one fails; < 0: never */
    atomic_long live;      /* allocated minus freed */
    atomic_long calls;     /* allocation calls, failed or not */
    atomic_int failed;     /* the countdown fired */
    void *xsites[32];      /* return addresses inside px__x*(): never failed */
    int nxsites;
    int learning;
} oom = {.countdown = -1};

static int oom_x_site(void *ra)
{
    for (int i = 0; i < oom.nxsites; i++)
        if (oom.xsites[i] == ra)
            return 1;
    return 0;
}

static int oom_fail(void *ra)
{
    atomic_fetch_add(&oom.calls, 1);
    if (oom.learning) {
        if (!oom_x_site(ra) && oom.nxsites < (int)(sizeof oom.xsites / sizeof oom.xsites[0]))
            oom.xsites[oom.nxsites++] = ra;
        return 0;
    }
    if (oom_x_site(ra))
        return 0;
    long n = atomic_load(&oom.countdown);
    while (n >= 0) {
        if (atomic_compare_exchange_weak(&oom.countdown, &n, n - 1)) {
            if (n != 0)
                return 0;
            atomic_store(&oom.failed, 1);
            return 1;
        }
    }
    return 0;
}

static void *oom_malloc(size_t n)
{
    if (oom_fail(__builtin_return_address(0)))
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&oom.live, 1);
    return p;
}

static void *oom_calloc(size_t a, size_t b)
{
    if (oom_fail(__builtin_return_address(0)))
        return NULL;
    void *p = calloc(a, b);
    if (p)
        atomic_fetch_add(&oom.live, 1);
    return p;
}

static void *oom_realloc(void *p, size_t n)
{
    if (oom_fail(__builtin_return_address(0)))
        return NULL;
    void *q = realloc(p, n);
    if (!p && q)
        atomic_fetch_add(&oom.live, 1);
    return q;
}

static void oom_free(void *p)
{
    if (p)
        atomic_fetch_sub(&oom.live, 1);
    free(p);
}

/* Install the allocator and learn where px__xmalloc & co. call it. 0 or -errno. */
static int oom_install(void)
{
    int r = px_set_allocator(oom_malloc, oom_realloc, oom_calloc, oom_free);
    if (r)
        return r;
    oom.learning = 1;
    for (size_t n = 0; n < 2; n++) {
        px__free(px__xmalloc(n));
        px__free(px__xcalloc(n, 1));
        px__free(px__xcalloc(1, n));
        px__free(px__xcalloc(n, n));
        px__free(px__xmemdup("a", n));
    }
    px__free(px__xstrdup(""));
    px__free(px__xstrdup("a"));
    oom.learning = 0;
    return 0;
}

/* Fail the nth fallible allocation from now (n < 0: none); oom.failed says if it came. */
static void oom_arm(long n)
{
    if (n >= 0)
        atomic_store(&oom.failed, 0);
    atomic_store(&oom.countdown, n);
}

#endif
