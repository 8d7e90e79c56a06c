/* Inputs placed against a PROT_NONE page (picohttpparser's test.c): a read past
 * the end of an input placed with guard_put (or before the start of one placed
 * with guard_put_front) crashes the test at once, sanitizer or not.
 *
 *     return cmocka_run_group_tests(tests, setup_guards, teardown_guards);
 *     ... px__utf8_feed(st, at_guard(p, n), n) ...
 *
 * Two guarded regions of GUARD_ROOM bytes (define it before the include for
 * another size), so that a test can hold two inputs at once. */
#ifndef PX_TESTS_UNIT_GUARD_H
#define PX_TESTS_UNIT_GUARD_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#ifndef GUARD_ROOM
#define GUARD_ROOM (256 * 1024) /* largest input a test places */
#endif

typedef struct guard {
    char *base; /* GUARD_ROOM usable bytes, with a PROT_NONE page before and after */
} guard_t;

static guard_t g_guard[2];

static inline size_t guard_page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    assert_true(page > 0 && GUARD_ROOM % page == 0);
    return (size_t)page;
}

static inline void guard_init(guard_t *g)
{
    size_t page = guard_page_size();
    char *m = mmap(NULL, GUARD_ROOM + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m, page, PROT_NONE), 0);
    assert_int_equal(mprotect(m + page + GUARD_ROOM, page, PROT_NONE), 0);
    g->base = m + page;
}

/* cmocka group set-up and tear-down: both regions. */
static inline int setup_guards(void **state)
{
    (void)state;
    guard_init(&g_guard[0]);
    guard_init(&g_guard[1]);
    return 0;
}

static inline int teardown_guards(void **state)
{
    (void)state;
    size_t page = guard_page_size();
    for (int i = 0; i < 2; i++)
        munmap(g_guard[i].base - page, GUARD_ROOM + 2 * page);
    return 0;
}

/* Copy data[0..n) into region `which` so that it ends exactly at the guard page. */
static inline char *guard_put(int which, const void *data, size_t n)
{
    assert_true(n <= GUARD_ROOM);
    char *dst = g_guard[which].base + GUARD_ROOM - n;
    memmove(dst, data, n);
    return dst;
}

/* Copy data[0..n) into region `which` so that it starts right after the front
 * guard page: a load before the buffer crashes. */
static inline char *guard_put_front(int which, const void *data, size_t n)
{
    assert_true(n <= GUARD_ROOM);
    char *dst = g_guard[which].base;
    memmove(dst, data, n);
    return dst;
}

/* The usual case: one input at the end of region 0, as any pointer type. */
static inline void *at_guard(const void *data, size_t n)
{
    return guard_put(0, data, n);
}

#endif
