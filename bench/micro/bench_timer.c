/* Micro-benchmark of the timer wheel (src/core/timerwheel.c), in the spirit of
 * libuv's benchmark-million-timers. Prints one line per measurement:
 *
 *   timer add+del: N ops/s      1M timers, random delays 1 ms..60 s, added then deleted
 *   timer add+run: N ops/s      1M timers added, then the clock stepped 1 ms at a time to expiry
 *   timer re-arm:  N ops/s      idle-timeout pattern: active timers pushed 30 s ahead
 *
 * An "op" is one add, one delete, one fire or one re-arm. Usage: bench_timer [n]. */
#include <stdio.h>
#include <stdlib.h>
#include <inttypes.h>

#include "bench.h"
#include "plexus/common.h"
#include "core/timerwheel.h"

#define DEFAULT_N 1000000u
#define MAX_DELAY 60000u /* ms */
#define IDLE_MS   30000u
#define REARM_OPS 20000000u

static uint64_t rng_state = 42;

static size_t fired;

static void on_timer(px_timer_t *t)
{
    (void)t;
    fired++;
}

static void report(const char *what, double ops, double secs, const char *detail)
{
    printf("%-16s %12.0f ops/s   (%s, %.3f s)\n", what, ops / secs, detail, secs);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "bench_timer: out of memory\n");
        exit(1);
    }
    return p;
}

static void init_timers(px_timer_t *timers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        timers[i].cb = on_timer;
        timers[i].data = NULL;
        timers[i]._next = timers[i]._prev = NULL;
    }
}

/* (a) add n timers, then delete them in arming order. */
static void bench_add_del(px__wheel_t *w, px_timer_t *timers, const uint32_t *delay, size_t n,
                          uint64_t base)
{
    char detail[96];
    px__wheel_init(w, base);
    init_timers(timers, n);

    uint64_t t0 = px_now_ns();
    for (size_t i = 0; i < n; i++)
        px__wheel_add(w, &timers[i], base + delay[i]);
    double add_s = bench_secs_since(t0);

    t0 = px_now_ns();
    for (size_t i = 0; i < n; i++)
        px__wheel_del(&timers[i]);
    double del_s = bench_secs_since(t0);

    snprintf(detail, sizeof detail, "%zu adds + %zu dels", n, n);
    report("timer add+del:", 2.0 * (double)n, add_s + del_s, detail);
    snprintf(detail, sizeof detail, "%zu timers into a wheel growing to %zu", n, n);
    report("  add only:", (double)n, add_s, detail);
    snprintf(detail, sizeof detail, "%zu timers", n);
    report("  del only:", (double)n, del_s, detail);

    /* The short-request pattern: armed and cancelled again at once. */
    t0 = px_now_ns();
    for (size_t i = 0; i < n; i++) {
        px__wheel_add(w, &timers[i], base + delay[i]);
        px__wheel_del(&timers[i]);
    }
    double pair_s = bench_secs_since(t0);
    snprintf(detail, sizeof detail, "%zu add,del pairs on an empty wheel", n);
    report("  add,del pairs:", 2.0 * (double)n, pair_s, detail);
}

/* (b) add n timers, then fire them all: stepping the clock 1 ms per run (a busy
 * loop) and, separately, with one jump over the whole minute (an idle loop). */
static void bench_add_run(px__wheel_t *w, px_timer_t *timers, const uint32_t *delay, size_t n,
                          uint64_t base)
{
    char detail[96];

    for (int jump = 0; jump < 2; jump++) {
        px__wheel_init(w, base);
        init_timers(timers, n);
        fired = 0;

        uint64_t t0 = px_now_ns();
        for (size_t i = 0; i < n; i++)
            px__wheel_add(w, &timers[i], base + delay[i]);
        double add_s = bench_secs_since(t0);

        t0 = px_now_ns();
        size_t runs = 0;
        if (jump) {
            px__wheel_run(w, base + MAX_DELAY);
            runs = 1;
        } else {
            for (uint64_t now = base + 1; now <= base + MAX_DELAY; now++, runs++)
                px__wheel_run(w, now);
        }
        double run_s = bench_secs_since(t0);
        if (fired != n || px__wheel_timeout(w, w->now) != -1) {
            fprintf(stderr, "bench_timer: fired %zu of %zu\n", fired, n);
            exit(1);
        }
        if (!jump) {
            snprintf(detail, sizeof detail, "%zu adds + %zu fires over %zu runs of 1 ms", n, n,
                     runs);
            report("timer add+run:", 2.0 * (double)n, add_s + run_s, detail);
            snprintf(detail, sizeof detail, "%zu fires, %zu runs", n, runs);
            report("  run only:", (double)n, run_s, detail);
        } else {
            snprintf(detail, sizeof detail, "%zu fires in one run jumping %u ms", n, MAX_DELAY);
            report("  run, one jump:", (double)n, run_s, detail);
        }
    }
}

/* (c) `conns` connections each hold an idle timer; every "read" pushes that
 * connection's timer IDLE_MS ahead. The clock advances 1 ms (with a run) every
 * `per_ms` reads, so nothing expires: this is pure re-arm cost. */
static void bench_rearm(px__wheel_t *w, px_timer_t *timers, size_t conns, uint64_t base,
                        const char *label)
{
    char detail[96];
    const size_t per_ms = 1000;
    uint32_t *order = xcalloc(REARM_OPS, sizeof *order);

    for (size_t i = 0; i < REARM_OPS; i++)
        order[i] = (uint32_t)(bench_splitmix(&rng_state) % conns);
    px__wheel_init(w, base);
    init_timers(timers, conns);
    for (size_t i = 0; i < conns; i++)
        px__wheel_add(w, &timers[i], base + IDLE_MS);
    fired = 0;

    uint64_t now = base;
    uint64_t t0 = px_now_ns();
    for (size_t i = 0; i < REARM_OPS; i++) {
        px__wheel_add(w, &timers[order[i]], now + IDLE_MS);
        if (i % per_ms == per_ms - 1)
            px__wheel_run(w, ++now);
    }
    double s = bench_secs_since(t0);
    snprintf(detail, sizeof detail, "%u re-arms, %zu active timers, %zu expired", REARM_OPS, conns,
             fired);
    report(label, (double)REARM_OPS, s, detail);
    free(order);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : DEFAULT_N;
    if (n == 0)
        n = DEFAULT_N;

    px__wheel_t *w = xcalloc(1, sizeof *w);
    px_timer_t *timers = xcalloc(n, sizeof *timers);
    uint32_t *delay = xcalloc(n, sizeof *delay);
    /* A realistic clock value, so that expiries cross level boundaries. */
    uint64_t base = px_now_ms();

    for (size_t i = 0; i < n; i++)
        delay[i] = (uint32_t)(1 + bench_splitmix(&rng_state) % MAX_DELAY);

    bench_add_del(w, timers, delay, n, base);
    bench_add_run(w, timers, delay, n, base);
    bench_rearm(w, timers, n < 10000 ? n : 10000, base, "timer re-arm:");
    bench_rearm(w, timers, n, base, "  re-arm, all n:");

    free(delay);
    free(timers);
    free(w);
    return 0;
}
