/* Micro-benchmark of the loop and worker APIs (src/core/loop.c, mailbox.c,
 * worker.c), through the public calls a protocol uses. One line each:
 *
 *   timer re-arm           px_timer_start on 10k active timers (idle-timeout pattern),
 *                          one px_timer_stop per 8 starts
 *   timer fire             1M timers due now, fired by px_loop_run_once (x20)
 *   mailbox 1 producer     one thread posts to one worker, which counts them
 *   mailbox 4 producers    four threads post to one worker
 *   ping-pong              one message bounced between two workers (round trips)
 *   defer batch            1000 deferred callbacks queued per loop iteration
 *   defer re-queue         one callback that re-queues itself: full loop iterations
 *                          (epoll_wait(0) included)
 *
 * Usage: bench_loop [scale]   (scale multiplies every count; default 1) */
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "plexus/loop.h"
#include "plexus/worker.h"

static double scale = 1.0;

static size_t scaled(size_t n)
{
    double v = (double)n * scale;
    return v < 1 ? 1 : (size_t)v;
}

static void report(const char *what, double ops, double secs, const char *unit, const char *detail)
{
    printf("%-20s %12.0f %s/s   (%s, %.3f s)\n", what, ops / secs, unit, detail, secs);
    fflush(stdout);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "bench_loop: out of memory\n");
        exit(1);
    }
    return p;
}

static px_loop_t *xloop(void)
{
    px_loop_t *loop = px_loop_new();
    if (!loop) {
        fprintf(stderr, "bench_loop: px_loop_new failed\n");
        exit(1);
    }
    return loop;
}

static uint64_t rng_state = 42;

/* ---- timers ----------------------------------------------------------------- */

static size_t fired;

static void on_timer(px_timer_t *t)
{
    (void)t;
    fired++;
}

static void bench_timer_rearm(void)
{
    enum { NT = 10000 };
    size_t ops = scaled(100000000);
    px_loop_t *loop = xloop();
    px_timer_t *t = xcalloc(NT, sizeof *t);
    uint64_t *delay = xcalloc(4096, sizeof *delay);
    for (size_t i = 0; i < 4096; i++)
        delay[i] = 1000 + bench_splitmix(&rng_state) % 59000; /* 1 s .. 60 s */
    for (size_t i = 0; i < NT; i++) {
        px_timer_init(&t[i], on_timer, NULL);
        px_timer_start(loop, &t[i], delay[i & 4095]);
    }
    uint64_t t0 = px_now_ns();
    for (size_t i = 0; i < ops; i++) {
        px_timer_t *x = &t[(i * 7919) % NT];
        if ((i & 7) == 7)
            px_timer_stop(x);
        else
            px_timer_start(loop, x, delay[i & 4095]);
    }
    double s = bench_secs_since(t0);
    report("timer re-arm", (double)ops, s, "ops", "10k active timers, 1/8 stops");
    for (size_t i = 0; i < NT; i++)
        px_timer_stop(&t[i]);
    free(delay);
    free(t);
    px_loop_free(loop);
}

static void bench_timer_fire(void)
{
    size_t n = scaled(1000000), rounds = 20;
    px_loop_t *loop = xloop();
    px_timer_t *t = xcalloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++)
        px_timer_init(&t[i], on_timer, NULL);
    double s = 0;
    fired = 0;
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++)
            px_timer_start(loop, &t[i], 0);
        uint64_t t0 = px_now_ns(); /* arming is measured above */
        while (fired < n * (r + 1))
            px_loop_run_once(loop, 0);
        s += bench_secs_since(t0);
    }
    report("timer fire", (double)(n * rounds), s, "timers", "1M due at once, px_loop_run_once");
    free(t);
    px_loop_free(loop);
}

/* ---- mailbox: producers -> one worker ------------------------------------------- */

static size_t mb_got, mb_want;
static sem_t mb_done;

static void count_msg(px_worker_t *w, px_msg_t *m)
{
    (void)w;
    (void)m;
    if (++mb_got == mb_want)
        sem_post(&mb_done);
}

typedef struct {
    px_worker_t *w;
    px_msg_t *msgs;
    size_t n;
} producer_t;

static void *produce(void *p)
{
    producer_t *a = p;
    for (size_t i = 0; i < a->n; i++) {
        a->msgs[i].cb = count_msg;
        px_worker_post(a->w, &a->msgs[i]);
    }
    return NULL;
}

static void bench_mailbox(unsigned nprod)
{
    size_t per = scaled(2000000) / nprod;
    px_workers_t *ws = px_workers_new(1);
    if (!ws || px_workers_start(ws, NULL, NULL) != 0) {
        fprintf(stderr, "bench_loop: cannot start a worker\n");
        exit(1);
    }
    px_msg_t *msgs = xcalloc(per * nprod, sizeof *msgs);
    mb_got = 0;
    mb_want = per * nprod;
    sem_init(&mb_done, 0, 0);
    pthread_t th[8];
    producer_t args[8];
    uint64_t t0 = px_now_ns();
    for (unsigned i = 0; i < nprod; i++) {
        args[i] = (producer_t){px_workers_get(ws, 0), msgs + i * per, per};
        pthread_create(&th[i], NULL, produce, &args[i]);
    }
    while (sem_wait(&mb_done) != 0)
        ;
    double s = bench_secs_since(t0);
    for (unsigned i = 0; i < nprod; i++)
        pthread_join(th[i], NULL);
    char what[32], detail[64];
    snprintf(what, sizeof what, "mailbox %u producer%s", nprod, nprod > 1 ? "s" : "");
    snprintf(detail, sizeof detail, "%zu messages to one worker", mb_want);
    report(what, (double)mb_want, s, "msgs", detail);
    px_workers_stop(ws);
    px_workers_join(ws);
    px_workers_free(ws);
    sem_destroy(&mb_done);
    free(msgs);
}

/* ---- ping-pong between two workers ----------------------------------------------- */

static struct {
    px_msg_t hdr;
    size_t rounds, want;
    sem_t done;
} ball;

static void bounce(px_worker_t *w, px_msg_t *m)
{
    px_workers_t *ws = px_worker_group(w);
    if (px_worker_id(w) == 1) {
        px_worker_post(px_workers_get(ws, 0), m);
        return;
    }
    if (++ball.rounds == ball.want)
        sem_post(&ball.done);
    else
        px_worker_post(px_workers_get(ws, 1), m);
}

static void bench_ping_pong(void)
{
    ball.rounds = 0;
    ball.want = scaled(50000);
    ball.hdr.cb = bounce;
    sem_init(&ball.done, 0, 0);
    px_workers_t *ws = px_workers_new(2);
    if (!ws || px_workers_start(ws, NULL, NULL) != 0) {
        fprintf(stderr, "bench_loop: cannot start workers\n");
        exit(1);
    }
    uint64_t t0 = px_now_ns();
    px_worker_post(px_workers_get(ws, 1), &ball.hdr);
    while (sem_wait(&ball.done) != 0)
        ;
    double s = bench_secs_since(t0);
    report("ping-pong", (double)ball.want, s, "round trips", "one message, two workers");
    px_workers_stop(ws);
    px_workers_join(ws);
    px_workers_free(ws);
    sem_destroy(&ball.done);
}

/* ---- deferred callbacks ---------------------------------------------------------- */

static size_t ran;

static void on_defer(px_defer_t *d)
{
    (void)d;
    ran++;
}

static px_loop_t *requeue_loop;
static size_t requeue_left;

static void requeue(px_defer_t *d)
{
    ran++;
    if (--requeue_left)
        px_defer(requeue_loop, d);
}

static void bench_defer(void)
{
    enum { BATCH = 1000 };
    size_t iters = scaled(50000);
    px_loop_t *loop = xloop();
    px_defer_t *d = xcalloc(BATCH, sizeof *d);
    for (size_t i = 0; i < BATCH; i++)
        px_defer_init(&d[i], on_defer, NULL);
    ran = 0;
    uint64_t t0 = px_now_ns();
    for (size_t it = 0; it < iters; it++) {
        for (size_t i = 0; i < BATCH; i++)
            px_defer(loop, &d[i]);
        px_loop_run_once(loop, 0);
    }
    double s = bench_secs_since(t0);
    report("defer batch", (double)ran, s, "callbacks", "1000 queued per iteration");

    px_defer_t r;
    px_defer_init(&r, requeue, NULL);
    requeue_loop = loop;
    requeue_left = scaled(300000);
    size_t n = requeue_left;
    ran = 0;
    px_defer(loop, &r);
    t0 = px_now_ns();
    while (ran < n)
        px_loop_run_once(loop, -1); /* never blocks: work is pending */
    s = bench_secs_since(t0);
    report("defer re-queue", (double)n, s, "iterations", "one self-re-queueing callback");
    free(d);
    px_loop_free(loop);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        scale = atof(argv[1]);
        if (scale <= 0) {
            fprintf(stderr, "usage: bench_loop [scale > 0]\n");
            return 2;
        }
    }
    bench_timer_rearm();
    bench_timer_fire();
    bench_mailbox(1);
    bench_mailbox(4);
    bench_ping_pong();
    bench_defer();
    return 0;
}
