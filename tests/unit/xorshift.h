/* xorshift64 (13, 7, 17): the unit tests' deterministic pseudo-random inputs.
 * Each test file keeps its own state and seed (static uint64_t rng = ...), so
 * its inputs do not depend on any other file. */
#ifndef PX_TESTS_UNIT_XORSHIFT_H
#define PX_TESTS_UNIT_XORSHIFT_H

#include <stdint.h>

static inline uint64_t xorshift64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#endif
