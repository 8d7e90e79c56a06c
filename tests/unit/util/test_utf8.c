/* Unit tests for src/util/utf8.c: every code point, every invalid class with the
 * exact fail-fast position, whole and split feeding, exhaustive 1-3 byte inputs
 * and random inputs against a slow reference written from the definition
 * (tests/fuzz/utf8_ref.h, shared with the fuzzer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard.h"
#include "xorshift.h"

#include "../../fuzz/utf8_ref.h"
#include "util/utf8.h"
#include "plexus/common.h"

/* Encoder that also produces the forbidden forms (surrogates, > 10FFFF). */
static size_t encode(uint32_t cp, uint8_t *o)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static uint64_t rng = 0x243F6A8885A308D3ull;

static px__utf8_state_t feed_g(px__utf8_state_t st, const uint8_t *p, size_t n)
{
    return px__utf8_feed(st, at_guard(p, n), n);
}

/* Check s against the reference: whole, every 2-way split, byte by byte; the
 * REJECT must appear exactly when the first bad byte is fed. */
static void check_all_ways(const uint8_t *s, size_t n)
{
    int complete;
    size_t bad = ref_first_bad(s, n, &complete);
    px__utf8_state_t whole = feed_g(PX_UTF8_ACCEPT, s, n);
    assert_int_equal(px__utf8_feed_dfa(PX_UTF8_ACCEPT, s, n), whole);
    if (bad < n) {
        assert_int_equal(whole, PX_UTF8_REJECT);
        assert_int_not_equal(feed_g(PX_UTF8_ACCEPT, s, bad), PX_UTF8_REJECT);
        assert_int_equal(feed_g(PX_UTF8_ACCEPT, s, bad + 1), PX_UTF8_REJECT);
    } else {
        assert_int_not_equal(whole, PX_UTF8_REJECT);
        assert_int_equal(px__utf8_complete(whole), complete);
    }
    for (size_t cut = 0; cut <= n; cut++) {
        px__utf8_state_t a = feed_g(PX_UTF8_ACCEPT, s, cut);
        assert_int_equal(a == PX_UTF8_REJECT, bad < cut);
        px__utf8_state_t b = feed_g(a, s + cut, n - cut);
        assert_int_equal(b, whole);
    }
    px__utf8_state_t st = PX_UTF8_ACCEPT;
    for (size_t i = 0; i < n; i++) {
        st = feed_g(st, s + i, 1);
        assert_int_equal(st == PX_UTF8_REJECT, i >= bad);
    }
    assert_int_equal(st, whole);
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_every_code_point(void **state)
{
    (void)state;
    uint8_t b[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        size_t n = encode(cp, b);
        px__utf8_state_t st = px__utf8_feed(PX_UTF8_ACCEPT, b, n);
        int surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        if (surrogate)
            assert_int_equal(st, PX_UTF8_REJECT);
        else if (st != PX_UTF8_ACCEPT)
            fail_msg("U+%04X rejected", cp);
        /* Mid-sequence states are neither accept nor reject. */
        if (!surrogate)
            for (size_t k = 1; k < n; k++) {
                px__utf8_state_t m = px__utf8_feed(PX_UTF8_ACCEPT, b, k);
                assert_int_not_equal(m, PX_UTF8_ACCEPT);
                assert_int_not_equal(m, PX_UTF8_REJECT);
            }
    }
    /* Past U+10FFFF the 4-byte form is rejected at the second byte or the lead. */
    for (uint32_t cp = 0x110000; cp < 0x200000; cp += 0x111) {
        size_t n = encode(cp, b);
        assert_int_equal(px__utf8_feed(PX_UTF8_ACCEPT, b, n), PX_UTF8_REJECT);
        assert_int_equal(px__utf8_feed(PX_UTF8_ACCEPT, b, 2), PX_UTF8_REJECT);
    }
}

static void test_boundaries_split(void **state)
{
    (void)state;
    static const uint32_t cps[] = {0x0,     0x7F,    0x80,    0x7FF,    0x800,   0xFFF,  0x1000,
                                   0xCFFF,  0xD000,  0xD7FF,  0xE000,   0xFFFD,  0xFFFF, 0x10000,
                                   0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF};
    uint8_t s[256];
    size_t n = 0;
    for (size_t i = 0; i < PX_ARRAY_SIZE(cps); i++)
        n += encode(cps[i], s + n);
    check_all_ways(s, n);
    assert_true(px__utf8_valid(s, n));
    static const char *texts[] = {"",
                                  "a",
                                  "κόσμε",
                                  "Привет, мир",
                                  "日本語テキスト",
                                  "😀 𝄞 emoji",
                                  "mixed ascii and ü and € and 𐍈 done"};
    for (size_t i = 0; i < PX_ARRAY_SIZE(texts); i++) {
        check_all_ways((const uint8_t *)texts[i], strlen(texts[i]));
        assert_true(px__utf8_valid((const uint8_t *)texts[i], strlen(texts[i])));
    }
}

typedef struct bad_utf8 {
    const char *name;
    const char *s;
    size_t bad; /* index of the first invalid byte */
} bad_utf8_t;

static const bad_utf8_t bad_table[] = {
    {"overlong 2-byte C0 80 (NUL)", "\xC0\x80", 0},
    {"overlong 2-byte C1 BF", "\xC1\xBF", 0},
    {"overlong 3-byte E0 80 AF", "\xE0\x80\xAF", 1},
    {"overlong 3-byte E0 9F BF", "\xE0\x9F\xBF", 1},
    {"overlong 4-byte F0 80 80 AF", "\xF0\x80\x80\xAF", 1},
    {"overlong 4-byte F0 8F BF BF", "\xF0\x8F\xBF\xBF", 1},
    {"surrogate D800", "\xED\xA0\x80", 1},
    {"surrogate DBFF", "\xED\xAF\xBF", 1},
    {"surrogate DC00", "\xED\xB0\x80", 1},
    {"surrogate DFFF", "\xED\xBF\xBF", 1},
    {"surrogate pair (CESU-8)", "\xED\xA0\xBD\xED\xB8\x80", 1},
    {"U+110000", "\xF4\x90\x80\x80", 1},
    {"U+13FFFF", "\xF4\xBF\xBF\xBF", 1},
    {"lead F5", "\xF5\x80\x80\x80", 0},
    {"lead F7", "\xF7\xBF\xBF\xBF", 0},
    {"lead F8 (5-byte form)", "\xF8\x88\x80\x80\x80", 0},
    {"lead FC (6-byte form)", "\xFC\x84\x80\x80\x80\x80", 0},
    {"byte FE", "\xFE", 0},
    {"byte FF", "\xFF", 0},
    {"lone continuation 80", "\x80", 0},
    {"lone continuation BF", "\xBF", 0},
    {"continuation after ASCII", "abc\x80", 3},
    {"extra continuation after 2-byte", "\xC2\xA9\x80", 2},
    {"extra continuation after 4-byte", "\xF0\x9F\x98\x80\x80", 4},
    {"2-byte truncated by ASCII", "\xC2\x41", 1},
    {"3-byte truncated after 1", "\xE2\x41", 1},
    {"3-byte truncated after 2", "\xE2\x82\x41", 2},
    {"4-byte truncated after 3", "\xF0\x9F\x98\x41", 3},
    {"4-byte truncated by a lead", "\xF0\x9F\xC2\xA9", 2},
    {"3-byte truncated by a lead", "\xE2\x82\xE2\x82\xAC", 2},
    {"valid then bad", "\xE2\x82\xAC\xE2\x82\xAC\xC0\xAF", 6},
    {"bad after long ascii", "The quick brown fox jumps over the lazy dog!\xFF", 44},
    {"bad after 33 ascii", "0123456789abcdef0123456789abcdefX\xC1\x81", 33},
};

static void test_invalid_classes(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad_table); i++) {
        const bad_utf8_t *t = &bad_table[i];
        print_message("  %s\n", t->name);
        const uint8_t *s = (const uint8_t *)t->s;
        size_t n = strlen(t->s);
        int complete;
        assert_int_equal(ref_first_bad(s, n, &complete), t->bad);
        check_all_ways(s, n);
        assert_false(px__utf8_valid(s, n));
    }
}

static void test_truncated_at_end(void **state)
{
    (void)state;
    static const char *cuts[] = {"\xC2",     "\xE2",         "\xE2\x82",        "\xF0",
                                 "\xF0\x9F", "\xF0\x9F\x98", "abc\xF4\x8F\xBF", "\xE0\xA0",
                                 "\xED\x9F"};
    for (size_t i = 0; i < PX_ARRAY_SIZE(cuts); i++) {
        const uint8_t *s = (const uint8_t *)cuts[i];
        size_t n = strlen(cuts[i]);
        px__utf8_state_t st = feed_g(PX_UTF8_ACCEPT, s, n);
        assert_int_not_equal(st, PX_UTF8_REJECT); /* might still complete */
        assert_false(px__utf8_complete(st));
        assert_false(px__utf8_valid(s, n));
        check_all_ways(s, n);
    }
    /* Completing in the next piece works, an ASCII byte rejects. */
    px__utf8_state_t st = px__utf8_feed(PX_UTF8_ACCEPT, (const uint8_t *)"\xF0\x9F", 2);
    assert_int_equal(px__utf8_feed(st, (const uint8_t *)"\x98\x80", 2), PX_UTF8_ACCEPT);
    assert_int_equal(px__utf8_feed(st, (const uint8_t *)"A", 1), PX_UTF8_REJECT);
    /* REJECT is absorbing. */
    assert_int_equal(px__utf8_feed(PX_UTF8_REJECT, (const uint8_t *)"abc", 3), PX_UTF8_REJECT);
    assert_int_equal(px__utf8_feed(PX_UTF8_REJECT, NULL, 0), PX_UTF8_REJECT);
    assert_int_equal(px__utf8_feed(PX_UTF8_ACCEPT, NULL, 0), PX_UTF8_ACCEPT);
}

static void test_exhaustive_short(void **state)
{
    (void)state;
    uint8_t s[3];
    /* Every 1- and 2-byte input, every 3-byte input (16.7M). */
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        int complete;
        size_t bad = ref_first_bad(s, 1, &complete);
        px__utf8_state_t st = px__utf8_feed(PX_UTF8_ACCEPT, s, 1);
        assert_int_equal(st == PX_UTF8_REJECT, bad < 1);
        assert_int_equal(st == PX_UTF8_ACCEPT, bad == 1 && complete);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            px__utf8_state_t st2 = px__utf8_feed(st, s + 1, 1);
            bad = ref_first_bad(s, 2, &complete);
            assert_int_equal(st2 == PX_UTF8_REJECT, bad < 2);
            assert_int_equal(st2 == PX_UTF8_ACCEPT, bad == 2 && complete);
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                px__utf8_state_t st3 = px__utf8_feed(st2, s + 2, 1);
                bad = ref_first_bad(s, 3, &complete);
                if ((st3 == PX_UTF8_REJECT) != (bad < 3) ||
                    (st3 == PX_UTF8_ACCEPT) != (bad == 3 && complete))
                    fail_msg("%02X %02X %02X: state %u, reference bad=%zu complete=%d", a, b, c,
                             st3, bad, complete);
            }
        }
    }
    /* 4-byte sequences: every lead F0..F7 with every second byte and sampled rest. */
    uint8_t t[4];
    for (unsigned a = 0xF0; a < 0xF8; a++)
        for (unsigned b = 0; b < 256; b++)
            for (unsigned c = 0x70; c < 0xD0; c += 3)
                for (unsigned d = 0x70; d < 0xD0; d += 5) {
                    t[0] = (uint8_t)a, t[1] = (uint8_t)b, t[2] = (uint8_t)c, t[3] = (uint8_t)d;
                    int complete;
                    size_t bad = ref_first_bad(t, 4, &complete);
                    px__utf8_state_t st = px__utf8_feed(PX_UTF8_ACCEPT, t, 4);
                    assert_int_equal(st == PX_UTF8_REJECT, bad < 4);
                    assert_int_equal(st == PX_UTF8_ACCEPT, bad == 4 && complete);
                }
}

/* Random strings mixing ASCII runs (to exercise the SIMD skip), valid multi-byte
 * characters, and occasional random bytes. */
static size_t random_text(uint8_t *s, size_t cap)
{
    size_t n = 0, want = (size_t)(xorshift64(&rng) % cap);
    int noise = (int)(xorshift64(&rng) % 4); /* 0: valid only */
    while (n + 4 <= want) {
        uint64_t r = xorshift64(&rng);
        switch (r % 8) {
        case 0:
        case 1:
        case 2: {
            size_t run = (size_t)((r >> 8) % 48);
            for (size_t i = 0; i < run && n < want; i++)
                s[n++] = (uint8_t)(' ' + (xorshift64(&rng) % 95));
            break;
        }
        case 3: n += encode((uint32_t)(0x80 + (r >> 8) % (0x800 - 0x80)), s + n); break;
        case 4: {
            uint32_t cp = (uint32_t)(0x800 + (r >> 8) % (0x10000 - 0x800));
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp -= 0x1000;
            n += encode(cp, s + n);
            break;
        }
        case 5: n += encode((uint32_t)(0x10000 + (r >> 8) % 0x100000), s + n); break;
        default:
            if (noise && (r >> 8) % (unsigned)(8 * noise) == 0)
                s[n++] = (uint8_t)(r >> 20);
            else
                s[n++] = 'x';
        }
    }
    return n;
}

static void test_random_differential(void **state)
{
    (void)state;
    enum { CAP = 600 };
    uint8_t s[CAP + 4];
    size_t rejected = 0, total = 20000;
    for (size_t iter = 0; iter < total; iter++) {
        size_t n = random_text(s, CAP);
        int complete;
        size_t bad = ref_first_bad(s, n, &complete);
        px__utf8_state_t whole = feed_g(PX_UTF8_ACCEPT, s, n);
        if (bad < n) {
            rejected++;
            assert_int_equal(whole, PX_UTF8_REJECT);
            assert_int_not_equal(feed_g(PX_UTF8_ACCEPT, s, bad), PX_UTF8_REJECT);
            assert_int_equal(feed_g(PX_UTF8_ACCEPT, s, bad + 1), PX_UTF8_REJECT);
        } else {
            assert_int_equal(whole == PX_UTF8_ACCEPT, complete);
            assert_int_not_equal(whole, PX_UTF8_REJECT);
        }
        /* Random pieces. */
        px__utf8_state_t st = PX_UTF8_ACCEPT;
        size_t pos = 0;
        while (pos < n) {
            size_t piece = (size_t)(xorshift64(&rng) % 40);
            if (piece > n - pos)
                piece = n - pos;
            st = feed_g(st, s + pos, piece);
            pos += piece;
            assert_int_equal(st == PX_UTF8_REJECT, bad < pos);
        }
        assert_int_equal(st, whole);
        if (iter < 300)
            check_all_ways(s, n);
    }
    print_message("  %zu of %zu random inputs invalid\n", rejected, total);
    assert_true(rejected > total / 10 && rejected < total - total / 10);
}

static void test_ascii_fast_path_positions(void **state)
{
    (void)state;
    /* A bad byte (and a valid 2-byte char) at every position of a long ASCII run:
     * the fast path must hand over at exactly the right byte. */
    uint8_t s[200];
    for (size_t pos = 0; pos < 150; pos++) {
        for (size_t len = pos + 1; len <= 200; len += 7) {
            memset(s, 'a', len);
            s[pos] = 0x80;
            check_all_ways(s, len); /* at the guard page: no over-reads */
            if (pos + 1 < len) {
                s[pos] = 0xC3, s[pos + 1] = 0xA9;
                assert_int_equal(feed_g(PX_UTF8_ACCEPT, s, len), PX_UTF8_ACCEPT);
                s[pos + 1] = 'a';
                assert_int_equal(feed_g(PX_UTF8_ACCEPT, s, len), PX_UTF8_REJECT);
                assert_int_not_equal(feed_g(PX_UTF8_ACCEPT, s, pos + 1), PX_UTF8_REJECT);
            }
        }
    }
    /* Long all-ASCII input with a multi-byte char at the very end. */
    uint8_t big[4096];
    memset(big, 'z', sizeof big);
    assert_true(px__utf8_valid(big, sizeof big));
    big[4093] = 0xE2, big[4094] = 0x82, big[4095] = 0xAC;
    assert_int_equal(feed_g(PX_UTF8_ACCEPT, big, sizeof big), PX_UTF8_ACCEPT);
    assert_int_not_equal(feed_g(PX_UTF8_ACCEPT, big, 4095), PX_UTF8_ACCEPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_point),
        cmocka_unit_test(test_boundaries_split),
        cmocka_unit_test(test_invalid_classes),
        cmocka_unit_test(test_truncated_at_end),
        cmocka_unit_test(test_exhaustive_short),
        cmocka_unit_test(test_random_differential),
        cmocka_unit_test(test_ascii_fast_path_positions),
    };
    return cmocka_run_group_tests(tests, setup_guards, teardown_guards);
}
