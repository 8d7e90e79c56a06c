/* What every fuzz harness (tests/fuzz/fuzz_<parser>.c) shares: the entry point's
 * prototype, the invariant check, and the generator of cut points. A new harness
 * includes this and defines LLVMFuzzerTestOneInput. */
#ifndef PX_TESTS_FUZZ_FUZZ_H
#define PX_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Called once per input, by libFuzzer (PX_BUILD_FUZZERS) or by replay_main.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test: a failure names itself and crashes, which
 * libFuzzer and the corpus replay both report with the input. */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A tiny LCG: where to cut the input into pieces, derived from the input itself
 * (seed it from input bytes) so that a crash replays. Returns 15 bits. */
static inline uint32_t fuzz_lcg(uint32_t *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x >> 16;
}

#endif
