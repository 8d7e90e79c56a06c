/* What the micro-benchmarks (bench/micro/bench_*.c) share: clocks, seeded
 * pseudo-random numbers and a compiler barrier. A new micro-benchmark includes
 * this rather than its own copies. */
#ifndef PX_BENCH_MICRO_BENCH_H
#define PX_BENCH_MICRO_BENCH_H

#include <stdint.h>
#include <time.h>

#include "plexus/loop.h"

/* This thread's CPU time, not wall time: the machine is shared (2 cores, other
 * builds and fuzzers), and CPU time leaves out the time we were not running. */
static inline uint64_t bench_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double bench_cpu_s(void)
{
    return (double)bench_cpu_ns() * 1e-9;
}

/* Wall seconds since px_now_ns() was start_ns (what the loop's own clock says). */
static inline double bench_secs_since(uint64_t start_ns)
{
    return (double)(px_now_ns() - start_ns) / 1e9;
}

/* Fixed-seed generators: every run measures the same inputs. */
static inline uint64_t bench_xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static inline uint64_t bench_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Keep the compiler from dropping or hoisting the measured work. */
#define CLOBBER(p) __asm__ volatile("" : : "r"(p) : "memory")

#endif
