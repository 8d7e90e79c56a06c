/* Unit tests for the event loop (src/core/loop.c + loop_epoll.c.h): fd watchers,
 * timers through the loop, run_once timeouts, deferred callbacks, and the
 * stale-event rule of plexus/loop.h (px_io_stop drops events already fetched
 * in the batch being dispatched, so an fd closed and reused inside a callback
 * never sees its predecessor's readiness).
 *
 * Run it under ASan too (build/h-core-asan): the stale-event test frees a
 * watcher inside another watcher's callback, so any later access to it by the
 * loop is a heap-use-after-free report. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "plexus/loop.h"
#include "core/loop_int.h"

/* Upper bound on scheduling jitter for timing assertions (ms). Generous: the
 * tests prove "waits about this long", not precise latency. */
#define SLACK_MS 250

static px_loop_t *loop;

static int setup(void **state)
{
    (void)state;
    loop = px_loop_new();
    return loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    px_loop_free(loop);
    loop = NULL;
    return 0;
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void put(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static uint64_t ms_since(uint64_t start_ns)
{
    return (px_now_ns() - start_ns) / 1000000u;
}

/* ---- fd watchers ------------------------------------------------------------ */

typedef struct {
    px_io_t io;
    int calls;
    unsigned last;
} rec_io_t;

static void rec_io_cb(px_io_t *io, unsigned events)
{
    rec_io_t *r = PX_CONTAINER_OF(io, rec_io_t, io);
    assert_ptr_equal(io->data, r);
    r->calls++;
    r->last = events;
}

static void test_io_events(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    rec_io_t r = {0};
    px_io_init(&r.io, sv[0], rec_io_cb, &r);
    assert_null(r.io._loop);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), 0);
    assert_ptr_equal(r.io._loop, loop);

    /* Nothing to read: nothing fires. */
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 0);

    put(sv[1]);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last, PX_READABLE);
    /* Level-triggered: fires again while data is unread. */
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 2);
    drain(sv[0]);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 2);

    /* Change interest to writable only: readiness to read is not reported. */
    put(sv[1]);
    assert_int_equal(px_io_start(loop, &r.io, PX_WRITABLE), 0);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(r.calls, 3);
    assert_int_equal(r.last, PX_WRITABLE);
    /* Same set again is a no-op. */
    assert_int_equal(px_io_start(loop, &r.io, PX_WRITABLE), 0);

    /* Interest 0: registered but silent, even with data pending. */
    assert_int_equal(px_io_start(loop, &r.io, 0), 0);
    assert_ptr_equal(r.io._loop, loop);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 3);

    /* Both, then the peer hangs up: readable (EOF) and HUP. */
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE | PX_WRITABLE), 0);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(r.calls, 4);
    assert_int_equal(r.last, PX_READABLE | PX_WRITABLE);
    drain(sv[0]);
    close(sv[1]);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), 0);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(r.calls, 5);
    assert_true(r.last & PX_READABLE);
    assert_true(r.last & PX_HUP);
    assert_false(r.last & PX_WRITABLE);

    px_io_stop(&r.io);
    assert_null(r.io._loop);
    assert_int_equal(r.io._events, 0);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 5);
    close(sv[0]);
}

/* PX_EXCLUSIVE (shared listening sockets): accepted by epoll and reported as
 * plain readability. */
static void test_io_exclusive(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    rec_io_t r = {0};
    px_io_init(&r.io, sv[0], rec_io_cb, &r);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE | PX_EXCLUSIVE), 0);
    assert_ptr_equal(r.io._loop, loop);
    put(sv[1]);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last, PX_READABLE);
    px_io_stop(&r.io);
    close(sv[0]);
    close(sv[1]);
}

static void test_io_start_errors(void **state)
{
    (void)state;
    rec_io_t r = {0};
    px_io_init(&r.io, -1, rec_io_cb, &r);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), -EBADF);
    assert_null(r.io._loop);
    /* epoll refuses regular files. */
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    px_io_init(&r.io, fd, rec_io_cb, &r);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), -EPERM);
    assert_null(r.io._loop);
    px_io_stop(&r.io); /* failed start: still safe to stop */
    close(fd);
}

static void test_io_stop_unregistered(void **state)
{
    (void)state;
    rec_io_t r = {0};
    px_io_init(&r.io, 12345, rec_io_cb, &r);
    px_io_stop(&r.io); /* never started */
    px_io_stop(&r.io);
    assert_null(r.io._loop);

    /* Stopped twice, and stopped after its fd was already closed. */
    int sv[2];
    make_pair(sv);
    px_io_init(&r.io, sv[0], rec_io_cb, &r);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), 0);
    px_io_stop(&r.io);
    px_io_stop(&r.io);
    assert_int_equal(px_io_start(loop, &r.io, PX_READABLE), 0); /* restartable */
    close(sv[0]);
    px_io_stop(&r.io);
    assert_null(r.io._loop);
    close(sv[1]);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(r.calls, 0);
}

/* A callback that stops (and closes) its own watcher, while a second watcher
 * has an event in the same batch; then one that stops and restarts itself. */
typedef struct {
    px_io_t io;
    int calls;
    int mode; /* 0: stop + close self; 1: stop + restart self */
} self_io_t;

static void self_cb(px_io_t *io, unsigned events)
{
    (void)events;
    self_io_t *s = PX_CONTAINER_OF(io, self_io_t, io);
    s->calls++;
    px_io_stop(io);
    assert_null(io->_loop);
    if (s->mode == 0) {
        close(io->fd);
        io->fd = -1;
    } else {
        assert_int_equal(px_io_start(loop, io, PX_READABLE), 0);
    }
}

static void test_io_stop_self(void **state)
{
    (void)state;
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    self_io_t sa = {.mode = 0}, sb = {.mode = 0};
    px_io_init(&sa.io, a[0], self_cb, &sa);
    px_io_init(&sb.io, b[0], self_cb, &sb);
    assert_int_equal(px_io_start(loop, &sa.io, PX_READABLE), 0);
    assert_int_equal(px_io_start(loop, &sb.io, PX_READABLE), 0);
    put(a[1]);
    put(b[1]);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    /* Both in one batch (each fd ready before the poll): each ran once. */
    assert_int_equal(sa.calls, 1);
    assert_int_equal(sb.calls, 1);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(sa.calls, 1);
    assert_int_equal(sb.calls, 1);
    close(a[1]);
    close(b[1]);

    /* Stop + restart inside the callback: keeps firing while readable. */
    int c[2];
    make_pair(c);
    self_io_t sc = {.mode = 1};
    px_io_init(&sc.io, c[0], self_cb, &sc);
    assert_int_equal(px_io_start(loop, &sc.io, PX_READABLE), 0);
    put(c[1]);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(sc.calls, 1);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(sc.calls, 2);
    px_io_stop(&sc.io);
    close(c[0]);
    close(c[1]);
}

/* ---- THE stale-event case ------------------------------------------------------ */

/* Two watchers (heap) on two readable socketpairs, in one epoll batch. The
 * first callback to run (call it A; epoll decides which) stops B's watcher,
 * closes B's fd, frees B's struct, and registers a new watcher (heap again:
 * without ASan the allocator likely hands back B's address) on a new socket
 * that has B's fd number and nothing to read. B's already-fetched event must
 * be dropped: B's callback never runs (ASan would flag the freed struct), and
 * the new watcher is not woken by B's stale readiness. */
static struct {
    px_io_t *w[2];
    int peer[2];
    int calls[2];
    int first;
    int batch_ok;
    px_io_t *fresh;
    int fresh_peer;
    int fresh_calls;
    int mode; /* 0: free and reuse the fd; 1: only set the victim's interest to 0 */
} st;

static void fresh_cb(px_io_t *io, unsigned events)
{
    (void)io;
    (void)events;
    st.fresh_calls++;
}

static void stale_cb(px_io_t *io, unsigned events)
{
    int me = (int)(intptr_t)io->data;
    (void)events;
    st.calls[me]++;
    if (st.first >= 0)
        return; /* the other watcher ran after us: checked by the test */
    st.first = me;
    int other = 1 - me;
    /* Both events were fetched together and ours is the first. */
    st.batch_ok = loop->dispatching && loop->batch_len == 2 && loop->batch_pos == 0;
    drain(io->fd);

    px_io_t *victim = st.w[other];
    if (st.mode == 1) {
        assert_int_equal(px_io_start(loop, victim, 0), 0);
        return;
    }
    int vfd = victim->fd;
    px_io_stop(victim);
    close(vfd);
    close(st.peer[other]);
    st.peer[other] = -1;
    free(victim);
    st.w[other] = NULL;

    int sv[2];
    make_pair(sv);
    int nfd, npeer;
    if (sv[0] == vfd) {
        nfd = sv[0];
        npeer = sv[1];
    } else if (sv[1] == vfd) {
        nfd = sv[1];
        npeer = sv[0];
    } else {
        assert_int_equal(dup2(sv[0], vfd), vfd);
        close(sv[0]);
        nfd = vfd;
        npeer = sv[1];
    }
    assert_int_equal(nfd, vfd); /* the number B's stale event refers to */
    st.fresh = malloc(sizeof *st.fresh);
    assert_non_null(st.fresh);
    px_io_init(st.fresh, nfd, fresh_cb, NULL);
    assert_int_equal(px_io_start(loop, st.fresh, PX_READABLE), 0);
    st.fresh_peer = npeer;
}

static void stale_setup(int mode)
{
    memset(&st, 0, sizeof st);
    st.first = -1;
    st.mode = mode;
    for (int i = 0; i < 2; i++) {
        int sv[2];
        make_pair(sv);
        st.w[i] = malloc(sizeof *st.w[i]);
        assert_non_null(st.w[i]);
        px_io_init(st.w[i], sv[0], stale_cb, (void *)(intptr_t)i);
        st.peer[i] = sv[1];
        assert_int_equal(px_io_start(loop, st.w[i], PX_READABLE), 0);
    }
    /* Both readable before the poll: one batch of two events. */
    put(st.peer[0]);
    put(st.peer[1]);
}

static void stale_cleanup(void)
{
    for (int i = 0; i < 2; i++) {
        if (st.w[i]) {
            px_io_stop(st.w[i]);
            close(st.w[i]->fd);
            free(st.w[i]);
        }
        if (st.peer[i] >= 0)
            close(st.peer[i]);
    }
    if (st.fresh) {
        px_io_stop(st.fresh);
        close(st.fresh->fd);
        close(st.fresh_peer);
        free(st.fresh);
    }
}

static void test_stale_event_fd_reuse(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        stale_setup(0);
        assert_int_equal(px_loop_run_once(loop, 1000), 0);
        assert_true(st.first == 0 || st.first == 1);
        assert_true(st.batch_ok);
        int a = st.first, b = 1 - a;
        assert_int_equal(st.calls[a], 1);
        assert_int_equal(st.calls[b], 0);    /* B's stale event was dropped */
        assert_int_equal(st.fresh_calls, 0); /* and not delivered to the new watcher */
        assert_null(st.w[b]);

        /* Later iterations: the new watcher is quiet until its socket is
         * readable, then works normally. */
        assert_int_equal(px_loop_run_once(loop, 20), 0);
        assert_int_equal(st.fresh_calls, 0);
        assert_int_equal(st.calls[a], 1);
        put(st.fresh_peer);
        assert_int_equal(px_loop_run_once(loop, 1000), 0);
        assert_int_equal(st.fresh_calls, 1);
        stale_cleanup();
    }
}

/* Same batch, but A only silences B (interest 0): B's fetched event must not
 * be reported either, since the owner no longer asks for it. */
static void test_stale_event_interest_change(void **state)
{
    (void)state;
    stale_setup(1);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_true(st.batch_ok);
    int a = st.first, b = 1 - a;
    assert_int_equal(st.calls[a], 1);
    assert_int_equal(st.calls[b], 0);
    /* Asking again delivers B's (still pending) data. */
    assert_int_equal(px_io_start(loop, st.w[b], PX_READABLE), 0);
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_int_equal(st.calls[b], 1);
    stale_cleanup();
}

/* ---- timers through the loop ----------------------------------------------------- */

static int fire_order[16];
static int nfired;

typedef struct {
    px_timer_t t;
    int id;
} id_timer_t;

static void order_cb(px_timer_t *t)
{
    id_timer_t *it = PX_CONTAINER_OF(t, id_timer_t, t);
    assert_false(px_timer_active(t));
    if (nfired < 16)
        fire_order[nfired++] = it->id;
}

static void test_timer_order(void **state)
{
    (void)state;
    nfired = 0;
    static const uint64_t delays[] = {30, 10, 20, 20, 0, 45};
    /* Expected: by expiry, ties in arming order. */
    static const int expect[] = {4, 1, 2, 3, 0, 5};
    id_timer_t t[6];
    px_loop_update_time(loop);
    for (int i = 0; i < 6; i++) {
        t[i].id = i;
        px_timer_init(&t[i].t, order_cb, &t[i]);
        assert_false(px_timer_active(&t[i].t));
        px_timer_start(loop, &t[i].t, delays[i]);
        assert_true(px_timer_active(&t[i].t));
    }
    uint64_t t0 = px_now_ns();
    while (nfired < 6 && ms_since(t0) < 45 + SLACK_MS)
        assert_int_equal(px_loop_run_once(loop, -1), 0);
    assert_int_equal(nfired, 6);
    assert_memory_equal(fire_order, expect, sizeof expect);
    assert_true(ms_since(t0) >= 40); /* ms clocks truncate: allow a little */
}

static void test_timer_stop_rearm(void **state)
{
    (void)state;
    nfired = 0;
    id_timer_t a = {.id = 1}, b = {.id = 2};
    px_timer_init(&a.t, order_cb, &a);
    px_timer_init(&b.t, order_cb, &b);
    px_timer_stop(&a.t); /* inactive: no-op */
    px_loop_update_time(loop);
    px_timer_start(loop, &a.t, 10);
    px_timer_start(loop, &b.t, 20);
    px_timer_stop(&a.t);
    assert_false(px_timer_active(&a.t));
    px_timer_start(loop, &b.t, 5);  /* re-arm earlier */
    px_timer_start(loop, &a.t, 30); /* re-arm after stop */
    uint64_t t0 = px_now_ns();
    while (nfired < 2 && ms_since(t0) < 30 + SLACK_MS)
        assert_int_equal(px_loop_run_once(loop, -1), 0);
    assert_int_equal(nfired, 2);
    assert_int_equal(fire_order[0], 2);
    assert_int_equal(fire_order[1], 1);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(nfired, 2); /* one shot */
}

/* A 0 ms timer that re-arms itself fires once per iteration: it cannot keep
 * run_once from returning. */
static int spin_count;
static void spin_cb(px_timer_t *t)
{
    spin_count++;
    px_timer_start(loop, t, 0);
}

static void test_timer_rearm_self(void **state)
{
    (void)state;
    px_timer_t t;
    px_timer_init(&t, spin_cb, NULL);
    px_timer_start(loop, &t, 0);
    spin_count = 0;
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(px_loop_run_once(loop, -1), 0);
        assert_int_equal(spin_count, i);
    }
    px_timer_stop(&t);
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_int_equal(spin_count, 5);
}

static void test_run_once_timeouts(void **state)
{
    (void)state;
    uint64_t t0, el;

    /* timeout 0 with nothing to do returns at once. */
    t0 = px_now_ns();
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_true(ms_since(t0) < SLACK_MS);

    /* A plain timeout, no timers: waits that long. */
    t0 = px_now_ns();
    assert_int_equal(px_loop_run_once(loop, 40), 0);
    el = ms_since(t0);
    assert_true(el >= 39);
    assert_true(el < 40 + SLACK_MS);

    /* timeout -1 with a timer: waits for the timer, which fires. */
    nfired = 0;
    id_timer_t a = {.id = 7};
    px_timer_init(&a.t, order_cb, &a);
    px_loop_update_time(loop);
    px_timer_start(loop, &a.t, 50);
    t0 = px_now_ns();
    int iters = 0;
    while (nfired == 0 && iters < 10) {
        assert_int_equal(px_loop_run_once(loop, -1), 0);
        iters++;
    }
    el = ms_since(t0);
    assert_int_equal(nfired, 1);
    assert_true(iters <= 3); /* not a busy loop of early wake-ups */
    assert_true(el >= 47);
    assert_true(el < 50 + SLACK_MS);

    /* A timeout shorter than the next timer: returns on the timeout, the
     * timer stays armed. */
    px_loop_update_time(loop);
    px_timer_start(loop, &a.t, 500);
    t0 = px_now_ns();
    assert_int_equal(px_loop_run_once(loop, 20), 0);
    el = ms_since(t0);
    assert_true(el >= 19);
    assert_true(el < 20 + SLACK_MS);
    assert_int_equal(nfired, 1);
    assert_true(px_timer_active(&a.t));

    /* A timer earlier than the timeout shortens the wait. */
    px_timer_start(loop, &a.t, 30);
    t0 = px_now_ns();
    assert_int_equal(px_loop_run_once(loop, 5000), 0);
    el = ms_since(t0);
    assert_true(el < 30 + SLACK_MS);
    assert_int_equal(nfired, 2);

    /* The cached clocks are refreshed by each iteration. */
    uint64_t now = px_loop_now(loop);
    assert_true(now <= px_now_ms());
    assert_true(px_now_ms() - now < SLACK_MS);
    assert_true(px_loop_wall_time(loop) > 1600000000);
    assert_true(px_loop_update_time(loop) >= now);
}

/* ---- deferred callbacks -------------------------------------------------------- */

static char trace[64];
static size_t ntrace;
static px_defer_t d[5];
static int requeued;

static void log_event(char c)
{
    if (ntrace < sizeof trace - 1)
        trace[ntrace++] = c;
    trace[ntrace] = '\0';
}

static void defer_cb(px_defer_t *x)
{
    int i = (int)(intptr_t)x->data;
    assert_false(x->_queued); /* not queued while it runs */
    log_event((char)('0' + i));
    if (i == 2 && !requeued) {
        requeued = 1;
        px_defer(loop, &d[2]); /* itself: next iteration */
        px_defer(loop, &d[4]); /* another: next iteration */
        px_defer(loop, &d[1]); /* already ran this time: next iteration */
    }
}

static void defer_io_cb(px_io_t *io, unsigned events)
{
    (void)events;
    log_event('I');
    drain(io->fd);
    px_defer(loop, &d[1]);
    px_defer(loop, &d[2]);
    px_defer(loop, &d[1]); /* already queued: no-op */
    px_defer(loop, &d[3]);
    assert_string_equal(trace, "I"); /* none ran inside the batch */
}

static void defer_timer_cb(px_timer_t *t)
{
    (void)t;
    log_event('T');
}

static void test_defer(void **state)
{
    (void)state;
    ntrace = 0;
    trace[0] = '\0';
    requeued = 0;
    for (int i = 0; i < 5; i++)
        px_defer_init(&d[i], defer_cb, (void *)(intptr_t)i);
    int sv[2];
    make_pair(sv);
    px_io_t io;
    px_io_init(&io, sv[0], defer_io_cb, NULL);
    assert_int_equal(px_io_start(loop, &io, PX_READABLE), 0);
    px_timer_t t;
    px_timer_init(&t, defer_timer_cb, NULL);
    px_timer_start(loop, &t, 0);
    put(sv[1]);

    /* Events, then due timers, then deferred callbacks FIFO; what they
     * queue waits for the next iteration. */
    assert_int_equal(px_loop_run_once(loop, 1000), 0);
    assert_string_equal(trace, "IT123");
    assert_true(d[2]._queued && d[4]._queued && d[1]._queued);

    /* Pending deferred work: the next poll does not block, even with -1. */
    uint64_t t0 = px_now_ns();
    assert_int_equal(px_loop_run_once(loop, -1), 0);
    assert_true(ms_since(t0) < SLACK_MS);
    assert_string_equal(trace, "IT123241");
    assert_int_equal(px_loop_run_once(loop, 0), 0);
    assert_string_equal(trace, "IT123241"); /* d2 re-queued itself only once */
    assert_null(loop->defer_head);

    px_io_stop(&io);
    close(sv[0]);
    close(sv[1]);
}

/* ---- px_loop_run / px_loop_stop -------------------------------------------------- */

static int ticks;
static void stop_after_3(px_timer_t *t)
{
    if (++ticks % 3 == 0)
        px_loop_stop(loop);
    else
        px_timer_start(loop, t, 1);
}

static void test_run_stop(void **state)
{
    (void)state;
    int tag;
    px_loop_set_data(loop, &tag);
    assert_ptr_equal(px_loop_get_data(loop), &tag);
    px_timer_t t;
    px_timer_init(&t, stop_after_3, NULL);
    ticks = 0;
    px_timer_start(loop, &t, 1);
    assert_int_equal(px_loop_run(loop), 0);
    assert_int_equal(ticks, 3);
    /* The stop request was consumed: run again, it stops again. */
    px_timer_start(loop, &t, 1);
    assert_int_equal(px_loop_run(loop), 0);
    assert_int_equal(ticks, 6);
    (void)px_loop_lag_ms(loop);
}

int main(void)
{
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_exclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_start_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_stop_unregistered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_stop_self, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_event_fd_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_event_interest_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_stop_rearm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_rearm_self, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_once_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_stop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
