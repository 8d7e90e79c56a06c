/* libFuzzer harness for the incremental UTF-8 validator.
 *
 * Differential against a slow reference written from the definition (a prefix is
 * acceptable while some completion decodes to a scalar value in the range its
 * length encodes minimally), plus split-invariance: feeding the input in pieces
 * (cut points derived from the input) gives exactly the state of feeding it whole,
 * and the REJECT appears exactly at the first invalid byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* Can the code point range [lo, hi] of a partial sequence still end up as a
 * scalar value in [min, max]? */
static int extendable(uint32_t lo, uint32_t hi, uint32_t min, uint32_t max)
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
static size_t ref_first_bad(const uint8_t *s, size_t n, int *complete)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-size copy so ASan catches over-reads by the wide loads. */
    uint8_t *s = calloc(1, size ? size : 1);
    CHECK(s);
    if (size)
        memcpy(s, data, size);

    int complete;
    size_t bad = ref_first_bad(s, size, &complete);
    px__utf8_state_t whole = px__utf8_feed(PX_UTF8_ACCEPT, s, size);
    CHECK(px__utf8_feed_dfa(PX_UTF8_ACCEPT, s, size) == whole);
    if (bad < size) {
        CHECK(whole == PX_UTF8_REJECT);
        CHECK(px__utf8_feed(PX_UTF8_ACCEPT, s, bad) != PX_UTF8_REJECT);
        CHECK(px__utf8_feed(PX_UTF8_ACCEPT, s, bad + 1) == PX_UTF8_REJECT);
        CHECK(!px__utf8_valid(s, size));
    } else {
        CHECK(whole != PX_UTF8_REJECT);
        CHECK(px__utf8_complete(whole) == complete);
        CHECK(px__utf8_valid(s, size) == complete);
    }

    /* Split feeding: piece lengths from a tiny LCG seeded by the input. */
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < size && i < 16; i++)
        x = (x ^ s[i]) * 16777619u;
    px__utf8_state_t st = PX_UTF8_ACCEPT;
    size_t pos = 0;
    while (pos < size) {
        x = x * 1103515245u + 12345u;
        size_t piece = (x >> 16) % 70;
        if (piece > size - pos)
            piece = size - pos;
        uint8_t *c = malloc(piece ? piece : 1);
        CHECK(c);
        memcpy(c, s + pos, piece);
        px__utf8_state_t nx = px__utf8_feed(st, c, piece);
        free(c);
        if (nx == PX_UTF8_REJECT) {
            /* It must be this piece that holds the first bad byte. */
            CHECK(bad >= pos && bad < pos + piece);
        } else {
            CHECK(bad >= pos + piece);
        }
        st = nx;
        pos += piece;
        if (st == PX_UTF8_REJECT)
            break;
    }
    if (st != PX_UTF8_REJECT)
        CHECK(st == whole);
    CHECK(px__utf8_feed(PX_UTF8_REJECT, s, size) == PX_UTF8_REJECT);
    free(s);
    return 0;
}
