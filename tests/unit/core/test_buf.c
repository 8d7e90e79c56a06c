/* Unit tests for byte buffers and shared slices (src/core/buf.c).
 *
 * The whole file runs under a counting allocator installed with
 * px_set_allocator before any libplexus object exists: every test ends by
 * checking that the number of live allocations is back to where it started,
 * and the allocator can be told to fail the Nth call from now (OOM injection,
 * SQLite/curl torture style). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "plexus/buf.h"

/* ---- counting, failure-injecting allocator --------------------------------- */

static atomic_long live_allocs;  /* blocks currently allocated through libplexus */
static atomic_long total_allocs; /* successful allocations ever */
static atomic_long fail_in = -1; /* fail the call when this reaches 0; -1 = never */

static int should_fail(void)
{
    long v = atomic_load(&fail_in);
    while (v >= 0) {
        if (atomic_compare_exchange_weak(&fail_in, &v, v - 1))
            return v == 0;
    }
    return 0;
}

static void *t_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = malloc(n);
    if (p) {
        atomic_fetch_add(&live_allocs, 1);
        atomic_fetch_add(&total_allocs, 1);
    }
    return p;
}

static void *t_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = calloc(n, size);
    if (p) {
        atomic_fetch_add(&live_allocs, 1);
        atomic_fetch_add(&total_allocs, 1);
    }
    return p;
}

static void *t_realloc(void *old, size_t n)
{
    if (should_fail())
        return NULL;
    void *p = realloc(old, n);
    if (p && !old) {
        atomic_fetch_add(&live_allocs, 1);
        atomic_fetch_add(&total_allocs, 1);
    }
    return p;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live_allocs, 1);
    free(p);
}

/* Fail the allocation `n` calls from now (0 = the very next one). */
static void fail_after(long n)
{
    atomic_store(&fail_in, n);
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&fail_in, -1);
    atomic_store(&live_allocs, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&fail_in, -1);
    /* Every test must give back everything it took. */
    assert_int_equal(atomic_load(&live_allocs), 0);
    return 0;
}

static void fill_pattern(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 7 + seed) % 26);
}

static int check_pattern(const char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)('a' + (i * 7 + seed) % 26))
            return 0;
    return 1;
}

/* ---- px_buf ----------------------------------------------------------------- */

static void test_set_allocator_invalid(void **state)
{
    (void)state;
    assert_int_equal(px_set_allocator(NULL, t_realloc, t_calloc, t_free), -EINVAL);
    assert_int_equal(px_set_allocator(t_malloc, t_realloc, t_calloc, NULL), -EINVAL);
    /* A refused call leaves the current allocator in place. */
    px_slice_t *s = px_slice_new(1);
    assert_non_null(s);
    assert_int_equal(atomic_load(&live_allocs), 1);
    px_slice_unref(s);
}

static void test_buf_init_empty(void **state)
{
    (void)state;
    px_buf_t b;
    px_buf_init(&b, 0);
    assert_null(b.data);
    assert_int_equal(px_buf_size(&b), 0);
    assert_int_equal(b.max, SIZE_MAX); /* 0 means unbounded */
    assert_int_equal(px_buf_room(&b), 0);
    /* An empty buffer holds no memory, and reserving nothing allocates nothing. */
    assert_int_equal(px_buf_reserve(&b, 0), 0);
    assert_int_equal(atomic_load(&live_allocs), 0);
    px_buf_dispose(&b);
    px_buf_dispose(NULL); /* accepts NULL */
}

static void test_buf_growth(void **state)
{
    (void)state;
    px_buf_t b;
    px_buf_init(&b, 0);
    char chunk[1000];
    size_t total = 0, last_cap = 0;
    unsigned grows = 0;
    for (unsigned i = 0; i < 300; i++) {
        fill_pattern(chunk, sizeof chunk, i);
        assert_int_equal(px_buf_append(&b, chunk, sizeof chunk), 0);
        total += sizeof chunk;
        assert_int_equal(px_buf_size(&b), total);
        assert_true(b.cap >= b.len);
        if (b.cap != last_cap) {
            grows++;
            last_cap = b.cap;
        }
    }
    /* Geometric growth: 300 appends must not mean 300 reallocations. */
    assert_true(grows < 20);
    for (unsigned i = 0; i < 300; i++)
        assert_true(check_pattern(px_buf_head(&b) + i * sizeof chunk, sizeof chunk, i));
    /* reserve guarantees room and leaves the contents alone. */
    assert_int_equal(px_buf_reserve(&b, 12345), 0);
    assert_true(px_buf_room(&b) >= 12345);
    assert_int_equal(px_buf_size(&b), total);
    assert_true(check_pattern(px_buf_head(&b), sizeof chunk, 0));
    /* Appending 0 bytes is fine, even from NULL. */
    assert_int_equal(px_buf_append(&b, NULL, 0), 0);
    assert_int_equal(px_buf_size(&b), total);
    px_buf_reset(&b);
    assert_int_equal(px_buf_size(&b), 0);
    assert_non_null(b.data); /* reset keeps the memory */
    px_buf_dispose(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_buf_max(void **state)
{
    (void)state;
    px_buf_t b;
    px_buf_init(&b, 100);
    char data[200];
    fill_pattern(data, sizeof data, 3);
    assert_int_equal(px_buf_append(&b, data, 60), 0);
    assert_true(b.cap <= 100); /* growth is clamped at max */

    px_buf_t before = b;
    char *copy = malloc(b.cap);
    assert_non_null(copy);
    memcpy(copy, b.data, b.cap);
    long allocs = atomic_load(&total_allocs);

    /* Past max: -EMSGSIZE, and nothing changed (no allocation, no move). */
    assert_int_equal(px_buf_append(&b, data, 41), -EMSGSIZE);
    assert_int_equal(px_buf_reserve(&b, 41), -EMSGSIZE);
    assert_int_equal(px_buf_reserve(&b, SIZE_MAX), -EMSGSIZE);
    assert_int_equal(px_buf_reserve(&b, SIZE_MAX - 30), -EMSGSIZE); /* overflow-safe */
    assert_int_equal(atomic_load(&total_allocs), allocs);
    assert_ptr_equal(b.data, before.data);
    assert_int_equal(b.off, before.off);
    assert_int_equal(b.len, before.len);
    assert_int_equal(b.cap, before.cap);
    assert_memory_equal(b.data, copy, b.cap);
    free(copy);

    /* Exactly up to max is fine. */
    assert_int_equal(px_buf_append(&b, data + 60, 40), 0);
    assert_int_equal(px_buf_size(&b), 100);
    assert_memory_equal(px_buf_head(&b), data, 100);
    assert_int_equal(px_buf_append(&b, data, 1), -EMSGSIZE);

    /* max counts live bytes: consuming makes room again. */
    px_buf_consume(&b, 30);
    assert_int_equal(px_buf_append(&b, data + 100, 30), 0);
    assert_int_equal(px_buf_size(&b), 100);
    assert_memory_equal(px_buf_head(&b), data + 30, 100);
    assert_true(b.cap <= 100);
    px_buf_dispose(&b);
}

static void test_buf_consume_reclaim(void **state)
{
    (void)state;
    px_buf_t b;
    px_buf_init(&b, 0);
    char data[512];
    fill_pattern(data, sizeof data, 9);
    assert_int_equal(px_buf_append(&b, data, 200), 0);
    size_t cap = b.cap;
    char *mem = b.data;

    px_buf_consume(&b, 150);
    assert_int_equal(px_buf_size(&b), 50);
    assert_int_equal(b.off, 150);
    assert_memory_equal(px_buf_head(&b), data + 150, 50);

    /* Room at the end is short, but live + n fits in cap: the live bytes are
     * moved to the front instead of allocating. */
    long allocs = atomic_load(&total_allocs);
    size_t want = cap - 50; /* exactly what fits after compaction */
    assert_true(want > px_buf_room(&b));
    assert_int_equal(px_buf_reserve(&b, want), 0);
    assert_int_equal(atomic_load(&total_allocs), allocs);
    assert_ptr_equal(b.data, mem);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.off, 0);
    assert_int_equal(px_buf_size(&b), 50);
    assert_memory_equal(px_buf_head(&b), data + 150, 50);

    /* Consume with off > 0, then grow past cap: new block, live bytes kept. */
    px_buf_consume(&b, 10);
    assert_int_equal(px_buf_append(&b, data, 500), 0);
    assert_int_equal(px_buf_size(&b), 540);
    assert_int_equal(b.off, 0);
    assert_memory_equal(px_buf_head(&b), data + 160, 40);
    assert_memory_equal(px_buf_head(&b) + 40, data, 500);

    /* Consuming everything (or more) empties the buffer and rewinds it. */
    px_buf_consume(&b, 539);
    assert_int_equal(px_buf_size(&b), 1);
    px_buf_consume(&b, 1000);
    assert_int_equal(px_buf_size(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    px_buf_dispose(&b);
}

static void test_buf_oom(void **state)
{
    (void)state;
    px_buf_t b;
    px_buf_init(&b, 0);
    char data[4096];
    fill_pattern(data, sizeof data, 5);

    /* First allocation fails: -ENOMEM and the buffer is still empty. */
    fail_after(0);
    assert_int_equal(px_buf_append(&b, data, 10), -ENOMEM);
    assert_null(b.data);
    assert_int_equal(px_buf_size(&b), 0);
    assert_int_equal(b.cap, 0);

    assert_int_equal(px_buf_append(&b, data, 100), 0);
    px_buf_t before = b;

    /* Growing in place (off == 0, realloc path) fails: intact. */
    fail_after(0);
    assert_int_equal(px_buf_append(&b, data, sizeof data), -ENOMEM);
    assert_ptr_equal(b.data, before.data);
    assert_int_equal(b.cap, before.cap);
    assert_int_equal(b.len, before.len);
    assert_int_equal(b.off, before.off);
    assert_memory_equal(px_buf_head(&b), data, 100);

    /* Growing with consumed bytes at the front (malloc + copy path) fails: intact. */
    px_buf_consume(&b, 40);
    before = b;
    fail_after(0);
    assert_int_equal(px_buf_reserve(&b, sizeof data), -ENOMEM);
    assert_ptr_equal(b.data, before.data);
    assert_int_equal(b.off, 40);
    assert_int_equal(px_buf_size(&b), 60);
    assert_memory_equal(px_buf_head(&b), data + 40, 60);

    /* The same operation succeeds once memory is back. */
    assert_int_equal(px_buf_append(&b, data, sizeof data), 0);
    assert_int_equal(px_buf_size(&b), 60 + sizeof data);
    assert_memory_equal(px_buf_head(&b), data + 40, 60);
    assert_memory_equal(px_buf_head(&b) + 60, data, sizeof data);
    px_buf_dispose(&b);
}

/* OOM loop (SQLite style): fail at N, raise N until the operation sequence
 * succeeds; after every failure the buffer must hold a consistent prefix and
 * disposing it must free everything. */
static void test_buf_oom_loop(void **state)
{
    (void)state;
    char data[3000];
    fill_pattern(data, sizeof data, 1);
    int done = 0;
    for (long n = 0; n < 100 && !done; n++) {
        px_buf_t b;
        px_buf_init(&b, 0);
        fail_after(n);
        size_t expect = 0;
        int r = 0;
        for (unsigned i = 0; i < 20 && r == 0; i++) {
            r = px_buf_append(&b, data, sizeof data);
            if (r == 0)
                expect += sizeof data;
            if (i % 3 == 2 && r == 0) {
                px_buf_consume(&b, 1000);
                expect -= 1000;
            }
        }
        fail_after(-1);
        assert_true(r == 0 || r == -ENOMEM);
        assert_int_equal(px_buf_size(&b), expect);
        done = r == 0;
        px_buf_dispose(&b);
        assert_int_equal(atomic_load(&live_allocs), 0);
    }
    assert_true(done);
}

/* ---- slices ------------------------------------------------------------------ */

static void test_slice_refs(void **state)
{
    (void)state;
    px_slice_t *s = px_slice_new(64);
    assert_non_null(s);
    assert_int_equal(s->len, 64);
    assert_int_equal(px_slice_refs(s), 1);
    assert_int_equal(atomic_load(&live_allocs), 1);
    assert_ptr_equal(px_slice_ref(s), s);
    assert_ptr_equal(px_slice_ref(s), s);
    assert_int_equal(px_slice_refs(s), 3);
    px_slice_unref(s);
    px_slice_unref(s);
    assert_int_equal(px_slice_refs(s), 1);
    assert_int_equal(atomic_load(&live_allocs), 1); /* still held */
    px_slice_unref(s);
    assert_int_equal(atomic_load(&live_allocs), 0); /* freed at zero */
    px_slice_unref(NULL);                           /* accepts NULL */
}

static void test_slice_copy(void **state)
{
    (void)state;
    char data[300];
    fill_pattern(data, sizeof data, 2);
    px_slice_t *s = px_slice_copy(data, sizeof data);
    assert_non_null(s);
    assert_int_equal(s->len, sizeof data);
    assert_memory_equal(s->data, data, sizeof data);
    data[0] = 'X'; /* a copy, not a view */
    assert_int_not_equal(s->data[0], 'X');
    px_slice_unref(s);

    px_slice_t *e = px_slice_copy(NULL, 0); /* empty slice is valid */
    assert_non_null(e);
    assert_int_equal(e->len, 0);
    px_slice_unref(e);
}

static void test_slice_failures(void **state)
{
    (void)state;
    fail_after(0);
    assert_null(px_slice_new(10));
    fail_after(0);
    assert_null(px_slice_copy("abc", 3));
    fail_after(-1);
    /* Longer than the 32-bit length field: refused without allocating. */
    long allocs = atomic_load(&total_allocs);
    assert_null(px_slice_new((size_t)UINT32_MAX + 1));
    assert_int_equal(atomic_load(&total_allocs), allocs);
}

/* Many threads share one slice, each taking and dropping references; the
 * owner's reference is dropped concurrently too. Exactly one free, by
 * whichever thread drops the last reference, and the bytes every thread reads
 * are the ones written before sharing. */
#define SHARE_THREADS 8
#define SHARE_ROUNDS  20000

typedef struct {
    px_slice_t *s;
    pthread_barrier_t *go;
    int bad;
} share_arg_t;

static void *share_thread(void *p)
{
    share_arg_t *a = p;
    pthread_barrier_wait(a->go);
    for (int i = 0; i < SHARE_ROUNDS; i++) {
        px_slice_t *r = px_slice_ref(a->s);
        if ((i & 63) == 0 && !check_pattern(r->data, r->len, 4))
            a->bad++;
        if (i & 1) {
            px_slice_t *r2 = px_slice_ref(r);
            px_slice_unref(r2);
        }
        px_slice_unref(r);
    }
    px_slice_unref(a->s); /* this thread's own reference, given by the owner */
    return NULL;
}

static void test_slice_threads(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        px_slice_t *s = px_slice_new(1024);
        assert_non_null(s);
        fill_pattern(s->data, s->len, 4);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, SHARE_THREADS + 1);
        pthread_t th[SHARE_THREADS];
        share_arg_t args[SHARE_THREADS];
        for (int i = 0; i < SHARE_THREADS; i++) {
            args[i] = (share_arg_t){.s = px_slice_ref(s), .go = &go};
            assert_int_equal(pthread_create(&th[i], NULL, share_thread, &args[i]), 0);
        }
        assert_int_equal(px_slice_refs(s), SHARE_THREADS + 1);
        pthread_barrier_wait(&go);
        px_slice_unref(s); /* the owner lets go while the threads still work */
        for (int i = 0; i < SHARE_THREADS; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(args[i].bad, 0);
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(atomic_load(&live_allocs), 0);
    }
}

int main(void)
{
    /* Before any libplexus object exists, as px_set_allocator requires. */
    if (px_set_allocator(t_malloc, t_realloc, t_calloc, t_free) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_allocator_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_init_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_consume_reclaim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_oom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf_oom_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slice_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slice_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slice_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slice_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
