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

#include "fuzz.h"
#include "utf8_ref.h"
#include "util/utf8.h"

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
        size_t piece = fuzz_lcg(&x) % 70;
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
