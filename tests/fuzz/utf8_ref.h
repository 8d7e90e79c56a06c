/* A slow UTF-8 reference written from the definition, for differential checks of
 * src/util/utf8.c (fuzz_utf8.c, unit/util/test_utf8.c): a prefix is acceptable
 * while its code point bits can still be completed to a scalar value (not a
 * surrogate) in the range its sequence length encodes without being overlong;
 * the validator must reject at the first byte where that fails. */
#ifndef PX_TESTS_FUZZ_UTF8_REF_H
#define PX_TESTS_FUZZ_UTF8_REF_H

#include <stddef.h>
#include <stdint.h>

/* Can the code point range [lo, hi] of a partial sequence still end up as a
 * scalar value in [min, max]? */
static inline int extendable(uint32_t lo, uint32_t hi, uint32_t min, uint32_t max)
{
    if (lo < min)
        lo = min;
    if (hi > max)
        hi = max;
    if (lo > hi)
        return 0;
    return !(lo >= 0xD800 && hi <= 0xDFFF);
}

/* Index of the first byte that makes s[0..i] not a prefix of valid UTF-8, or n if
 * there is none; *complete says whether s ends between sequences. */
static inline size_t ref_first_bad(const uint8_t *s, size_t n, int *complete)
{
    static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
    static const uint32_t max[4] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    size_t i = 0;
    *complete = 1;
    while (i < n) {
        uint8_t b = s[i];
        unsigned need;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            need = 1, cp = b & 0x1Fu;
        } else if ((b & 0xF0) == 0xE0) {
            need = 2, cp = b & 0x0Fu;
        } else if ((b & 0xF8) == 0xF0) {
            need = 3, cp = b & 0x07u;
        } else {
            return i;
        }
        size_t j = i;
        for (unsigned k = 0; k <= need; k++, j++) {
            if (k > 0) {
                if (j >= n) {
                    *complete = 0;
                    return n;
                }
                if ((s[j] & 0xC0) != 0x80)
                    return j;
                cp = cp << 6 | (s[j] & 0x3Fu);
            }
            unsigned rest = 6 * (need - k);
            uint32_t lo = cp << rest, hi = lo | ((1u << rest) - 1);
            if (!extendable(lo, hi, min[need], max[need]))
                return j;
        }
        i = j;
    }
    return n;
}

#endif
