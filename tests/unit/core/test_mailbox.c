/* Unit tests for mailboxes and workers (src/core/mailbox.c, src/core/worker.c).
 *
 * What must hold, with any number of producers:
 * - every message posted is delivered exactly once;
 * - messages from one producer arrive in the order it posted them;
 * - the consumer is woken through the eventfd alone: a lost wake-up shows up
 *   as a poll() that times out with messages still undelivered.
 *
 * The file is also built with -fsanitize=thread (ctest unit/core/test_mailbox_tsan,
 * see tests/CMakeLists.txt), so every cross-thread access here goes through the
 * mailbox, an atomic, a semaphore or a join. Assertions run on the main thread
 * only: worker callbacks record problems in counters checked afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "plexus/worker.h"
#include "core/mailbox.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifdef UNDER_TSAN
#define SCALE 4 /* TSan is 5-15x slower: smaller runs, same shapes */
#else
#define SCALE 1
#endif

/* A test message: who sent it and its sequence number for that sender. */
typedef struct tmsg {
    px_msg_t hdr;
    unsigned from;
    unsigned seq;
} tmsg_t;

static atomic_int errors; /* problems seen off the main thread */

/* ---- the raw MPSC queue ------------------------------------------------------ */

static int efd_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void test_mailbox_single_thread(void **state)
{
    (void)state;
    px__mailbox_t *mb = calloc(1, sizeof *mb);
    assert_non_null(mb);
    assert_int_equal(px__mailbox_init(mb), 0);
    assert_true(mb->efd >= 0);
    assert_null(px__mailbox_pop(mb));
    assert_false(efd_readable(mb->efd, 0));

    tmsg_t m[5];
    /* One message at a time: exercises the stub re-insertion path each time. */
    for (unsigned i = 0; i < 5; i++) {
        m[i].seq = i;
        int wrote = px__mailbox_push(mb, &m[i].hdr);
        assert_int_equal(wrote, 1); /* first push after an ack signals */
        assert_true(efd_readable(mb->efd, 0));
        px__mailbox_ack(mb);
        assert_false(efd_readable(mb->efd, 0));
        assert_ptr_equal(px__mailbox_pop(mb), &m[i].hdr);
        assert_null(px__mailbox_pop(mb));
    }
    /* A burst: FIFO, and only the first push writes the eventfd. */
    int writes = 0;
    for (unsigned i = 0; i < 5; i++)
        writes += px__mailbox_push(mb, &m[i].hdr);
    assert_int_equal(writes, 1);
    px__mailbox_ack(mb);
    for (unsigned i = 0; i < 5; i++)
        assert_ptr_equal(px__mailbox_pop(mb), &m[i].hdr);
    assert_null(px__mailbox_pop(mb));
    /* A message can be posted again once it has been popped. */
    px__mailbox_push(mb, &m[0].hdr);
    px__mailbox_ack(mb);
    assert_ptr_equal(px__mailbox_pop(mb), &m[0].hdr);
    assert_null(px__mailbox_pop(mb));
    px__mailbox_dispose(mb);
    assert_int_equal(mb->efd, -1);
    px__mailbox_dispose(mb); /* twice is harmless */
    free(mb);
}

#define RAW_PRODUCERS 4
#define RAW_MSGS      (100000 / SCALE)

typedef struct {
    px__mailbox_t *mb;
    tmsg_t *msgs;
    unsigned id;
    pthread_barrier_t *go;
} raw_producer_t;

static void *raw_producer(void *p)
{
    raw_producer_t *a = p;
    pthread_barrier_wait(a->go);
    for (unsigned i = 0; i < RAW_MSGS; i++) {
        a->msgs[i].from = a->id;
        a->msgs[i].seq = i;
        px__mailbox_push(a->mb, &a->msgs[i].hdr);
        if ((i & 1023) == 0)
            sched_yield(); /* vary the interleavings */
    }
    return NULL;
}

/* N producer threads, the main thread consumes, sleeping in poll() on the
 * eventfd exactly like a worker loop does. */
static void test_mailbox_mpsc(void **state)
{
    (void)state;
    px__mailbox_t *mb = calloc(1, sizeof *mb);
    assert_non_null(mb);
    assert_int_equal(px__mailbox_init(mb), 0);
    tmsg_t *msgs = calloc((size_t)RAW_PRODUCERS * RAW_MSGS, sizeof *msgs);
    unsigned char *seen = calloc((size_t)RAW_PRODUCERS * RAW_MSGS, 1);
    assert_non_null(msgs);
    assert_non_null(seen);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RAW_PRODUCERS + 1);
    pthread_t th[RAW_PRODUCERS];
    raw_producer_t args[RAW_PRODUCERS];
    for (unsigned i = 0; i < RAW_PRODUCERS; i++) {
        args[i] = (raw_producer_t){mb, msgs + (size_t)i * RAW_MSGS, i, &go};
        assert_int_equal(pthread_create(&th[i], NULL, raw_producer, &args[i]), 0);
    }
    pthread_barrier_wait(&go);

    unsigned next[RAW_PRODUCERS] = {0};
    size_t got = 0, total = (size_t)RAW_PRODUCERS * RAW_MSGS, wakeups = 0;
    while (got < total) {
        /* A lost wake-up leaves messages queued and the eventfd silent. */
        if (!efd_readable(mb->efd, 10000)) {
            fail_msg("no wake-up with %zu of %zu messages delivered", got, total);
        }
        wakeups++;
        px__mailbox_ack(mb);
        px_msg_t *m;
        while ((m = px__mailbox_pop(mb)) != NULL) {
            tmsg_t *t = (tmsg_t *)m;
            assert_true(t->from < RAW_PRODUCERS);
            assert_int_equal(t->seq, next[t->from]); /* per-producer FIFO */
            next[t->from]++;
            size_t idx = (size_t)t->from * RAW_MSGS + t->seq;
            assert_int_equal(seen[idx], 0); /* exactly once */
            seen[idx] = 1;
            got++;
        }
    }
    for (unsigned i = 0; i < RAW_PRODUCERS; i++)
        pthread_join(th[i], NULL);
    /* Nothing extra: the queue is empty and stays empty. */
    px__mailbox_ack(mb);
    assert_null(px__mailbox_pop(mb));
    for (unsigned i = 0; i < RAW_PRODUCERS; i++)
        assert_int_equal(next[i], RAW_MSGS);
    print_message("    %zu messages, %zu wake-ups\n", total, wakeups);
    pthread_barrier_destroy(&go);
    px__mailbox_dispose(mb);
    free(seen);
    free(msgs);
    free(mb);
}

/* ---- workers ------------------------------------------------------------------- */

static void test_workers_basics(void **state)
{
    (void)state;
    assert_null(px_worker_self());
    px_workers_free(NULL);
    px_workers_t *ws = px_workers_new(0);
    assert_non_null(ws);
    assert_int_equal(px_workers_count(ws), px_cpu_count());
    px_workers_free(ws);

    ws = px_workers_new(3);
    assert_non_null(ws);
    assert_int_equal(px_workers_count(ws), 3);
    for (unsigned i = 0; i < 3; i++) {
        px_worker_t *w = px_workers_get(ws, i);
        assert_non_null(w);
        assert_int_equal(px_worker_id(w), i);
        assert_ptr_equal(px_worker_group(w), ws);
        assert_non_null(px_worker_loop(w));
        assert_ptr_equal(px_loop_get_data(px_worker_loop(w)), w);
        px_worker_set_data(w, &state);
        assert_ptr_equal(px_worker_get_data(w), &state);
    }
    assert_null(px_workers_get(ws, 3));
    /* Never started: freeing is enough (join is a no-op). */
    px_workers_join(ws);
    px_workers_free(ws);
    assert_null(px_workers_new(100000)); /* over the worker limit */
}

/* -- N external producers -> one worker -- */

#define W_PRODUCERS 4
#define W_MSGS      (50000 / SCALE)

static unsigned w_next[W_PRODUCERS]; /* worker-owned until join */
static size_t w_got;
static px_worker_t *w_target;

static void count_cb(px_worker_t *w, px_msg_t *m)
{
    tmsg_t *t = (tmsg_t *)m;
    if (w != w_target || px_worker_self() != w || t->from >= W_PRODUCERS ||
        t->seq != w_next[t->from]) {
        atomic_fetch_add(&errors, 1);
        return;
    }
    w_next[t->from]++;
    w_got++;
}

typedef struct {
    px_worker_t *w;
    tmsg_t *msgs;
    unsigned id;
} w_producer_t;

static void *w_producer(void *p)
{
    w_producer_t *a = p;
    for (unsigned i = 0; i < W_MSGS; i++) {
        a->msgs[i].hdr.cb = count_cb;
        a->msgs[i].from = a->id;
        a->msgs[i].seq = i;
        px_worker_post(a->w, &a->msgs[i].hdr);
    }
    return NULL;
}

static atomic_int started_on;

static void note_start(px_worker_t *w, void *ud)
{
    if (ud != &started_on || px_worker_self() != w)
        atomic_fetch_add(&errors, 1);
    atomic_fetch_add(&started_on, 1);
}

static void test_workers_producers(void **state)
{
    (void)state;
    atomic_store(&errors, 0);
    atomic_store(&started_on, 0);
    memset(w_next, 0, sizeof w_next);
    w_got = 0;
    px_workers_t *ws = px_workers_new(1);
    assert_non_null(ws);
    w_target = px_workers_get(ws, 0);
    tmsg_t *msgs = calloc((size_t)W_PRODUCERS * W_MSGS, sizeof *msgs);
    assert_non_null(msgs);
    assert_int_equal(px_workers_start(ws, note_start, &started_on), 0);

    pthread_t th[W_PRODUCERS];
    w_producer_t args[W_PRODUCERS];
    for (unsigned i = 0; i < W_PRODUCERS; i++) {
        args[i] = (w_producer_t){w_target, msgs + (size_t)i * W_MSGS, i};
        assert_int_equal(pthread_create(&th[i], NULL, w_producer, &args[i]), 0);
    }
    for (unsigned i = 0; i < W_PRODUCERS; i++)
        pthread_join(th[i], NULL);
    /* The stop message is posted after every producer message (the joins
     * order it), so the worker handles them all before its loop returns. */
    px_workers_stop(ws);
    px_workers_join(ws);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(atomic_load(&started_on), 1);
    assert_int_equal(w_got, (size_t)W_PRODUCERS * W_MSGS);
    for (unsigned i = 0; i < W_PRODUCERS; i++)
        assert_int_equal(w_next[i], W_MSGS);
    px_workers_free(ws);
    free(msgs);
}

/* -- ping-pong between two workers -- */

#define PP_ROUNDS (20000 / SCALE)

typedef struct {
    px_msg_t hdr;
    unsigned rounds;  /* written by whichever worker holds the ball */
    unsigned hits[2]; /* deliveries per worker */
    sem_t done;
} ball_t;

static ball_t ball;

static void ball_cb(px_worker_t *w, px_msg_t *m)
{
    ball_t *b = PX_CONTAINER_OF(m, ball_t, hdr);
    unsigned id = px_worker_id(w);
    if (px_worker_self() != w || id > 1) {
        atomic_fetch_add(&errors, 1);
        return;
    }
    b->hits[id]++;
    if (id == 1) {
        px_worker_post(px_workers_get(px_worker_group(w), 0), m);
        return;
    }
    if (++b->rounds == PP_ROUNDS)
        sem_post(&b->done);
    else
        px_worker_post(px_workers_get(px_worker_group(w), 1), m);
}

static void serve_ball(px_worker_t *w, void *ud)
{
    (void)ud;
    if (px_worker_id(w) == 0)
        px_worker_post(px_workers_get(px_worker_group(w), 1), &ball.hdr);
}

static void test_workers_ping_pong(void **state)
{
    (void)state;
    atomic_store(&errors, 0);
    memset(&ball, 0, sizeof ball);
    ball.hdr.cb = ball_cb;
    sem_init(&ball.done, 0, 0);
    px_workers_t *ws = px_workers_new(2);
    assert_non_null(ws);
    uint64_t t0 = px_now_ns();
    assert_int_equal(px_workers_start(ws, serve_ball, NULL), 0);
    while (sem_wait(&ball.done) != 0)
        ;
    double secs = (double)(px_now_ns() - t0) / 1e9;
    px_workers_stop(ws);
    px_workers_join(ws);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(ball.rounds, PP_ROUNDS);
    assert_int_equal(ball.hits[0], PP_ROUNDS);
    assert_int_equal(ball.hits[1], PP_ROUNDS);
    print_message("    %u round trips in %.3f s\n", ball.rounds, secs);
    px_workers_free(ws);
    sem_destroy(&ball.done);
}

/* -- every worker posts to every worker (itself included) at once -- */

#define A_WORKERS 4
#define A_MSGS    (5000 / SCALE)

static tmsg_t (*a_msgs)[A_WORKERS][A_MSGS];   /* [from][to][seq] */
static unsigned a_next[A_WORKERS][A_WORKERS]; /* [to][from], owned by worker `to` */
static unsigned a_total[A_WORKERS];
static sem_t a_done;

static void all_cb(px_worker_t *w, px_msg_t *m)
{
    tmsg_t *t = (tmsg_t *)m;
    unsigned to = px_worker_id(w);
    if (px_worker_self() != w || to >= A_WORKERS || t->from >= A_WORKERS ||
        t->seq != a_next[to][t->from] || &a_msgs[t->from][to][t->seq] != t) {
        atomic_fetch_add(&errors, 1);
        return;
    }
    a_next[to][t->from]++;
    if (++a_total[to] == A_WORKERS * A_MSGS)
        sem_post(&a_done);
}

static void all_start(px_worker_t *w, void *ud)
{
    (void)ud;
    unsigned from = px_worker_id(w);
    px_workers_t *ws = px_worker_group(w);
    /* Interleave destinations so every mailbox has several producers at once. */
    for (unsigned i = 0; i < A_MSGS; i++) {
        for (unsigned to = 0; to < A_WORKERS; to++) {
            tmsg_t *t = &a_msgs[from][to][i];
            t->hdr.cb = all_cb;
            t->from = from;
            t->seq = i;
            px_worker_post(px_workers_get(ws, to), &t->hdr);
        }
    }
}

static void test_workers_all_to_all(void **state)
{
    (void)state;
    atomic_store(&errors, 0);
    a_msgs = calloc(A_WORKERS, sizeof *a_msgs);
    assert_non_null(a_msgs);
    memset(a_next, 0, sizeof a_next);
    memset(a_total, 0, sizeof a_total);
    sem_init(&a_done, 0, 0);
    px_workers_t *ws = px_workers_new(A_WORKERS);
    assert_non_null(ws);
    assert_int_equal(px_workers_start(ws, all_start, NULL), 0);
    for (unsigned i = 0; i < A_WORKERS; i++)
        while (sem_wait(&a_done) != 0)
            ;
    px_workers_stop(ws);
    px_workers_join(ws);
    assert_int_equal(atomic_load(&errors), 0);
    for (unsigned to = 0; to < A_WORKERS; to++) {
        assert_int_equal(a_total[to], A_WORKERS * A_MSGS);
        for (unsigned from = 0; from < A_WORKERS; from++)
            assert_int_equal(a_next[to][from], A_MSGS);
    }
    px_workers_free(ws);
    sem_destroy(&a_done);
    free(a_msgs);
}

/* -- stop and join: repeated start/stop cycles, stop racing with traffic -- */

static void noop_cb(px_worker_t *w, px_msg_t *m)
{
    (void)w;
    (void)m;
}

static void test_workers_stop_join(void **state)
{
    (void)state;
    static tmsg_t msgs[8][256];
    for (int round = 0; round < 20 / SCALE + 1; round++) {
        px_workers_t *ws = px_workers_new(8);
        assert_non_null(ws);
        assert_int_equal(px_workers_start(ws, NULL, NULL), 0);
        for (unsigned w = 0; w < 8; w++)
            for (unsigned i = 0; i < 256; i++) {
                msgs[w][i].hdr.cb = noop_cb;
                px_worker_post(px_workers_get(ws, w), &msgs[w][i].hdr);
            }
        px_workers_stop(ws);
        px_workers_join(ws);
        px_workers_join(ws); /* idempotent */
        px_workers_free(ws);
    }
}

int main(void)
{
    alarm(120); /* a lost wake-up must fail the run, not hang it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox_single_thread), cmocka_unit_test(test_mailbox_mpsc),
        cmocka_unit_test(test_workers_basics),        cmocka_unit_test(test_workers_producers),
        cmocka_unit_test(test_workers_ping_pong),     cmocka_unit_test(test_workers_all_to_all),
        cmocka_unit_test(test_workers_stop_join),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
