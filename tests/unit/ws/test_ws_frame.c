/* Unit tests for src/http/ws_frame.c: header parser (every length boundary, every
 * split point, every error with its close code), encoder round trip, unmasking
 * against a byte loop, close-code validity. Parser inputs sit at the end of a
 * page followed by an inaccessible one, so any over-read faults. */
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

#include "ws/ws_frame.h"

static int parse_g(const uint8_t *p, size_t n, px__ws_frame_t *f, unsigned flags, uint64_t max)
{
    return px__ws_parse_frame(at_guard(p, n), n, f, flags, max);
}

/* ---- length boundaries ---------------------------------------------------------------- */

static const uint64_t boundaries[] = {0,
                                      1,
                                      124,
                                      125,
                                      126,
                                      127,
                                      128,
                                      255,
                                      256,
                                      65534,
                                      65535,
                                      65536,
                                      65537,
                                      1u << 24,
                                      UINT32_MAX,
                                      (uint64_t)UINT32_MAX + 1,
                                      (UINT64_C(1) << 62),
                                      (UINT64_C(1) << 63) - 1};

static void test_length_boundaries(void **state)
{
    (void)state;
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    for (size_t i = 0; i < PX_ARRAY_SIZE(boundaries); i++) {
        uint64_t len = boundaries[i];
        for (int masked = 0; masked <= 1; masked++) {
            uint8_t h[PX_WS_MAX_HEADER];
            size_t hl = px__ws_encode_header(h, PX_WS_OP_BINARY, 1, 0, len, masked ? key : NULL);
            size_t want = (len < 126 ? 2 : len < 65536 ? 4 : 10) + (masked ? 4 : 0);
            assert_int_equal(hl, want);
            assert_int_equal(px__ws_header_size(len, masked), want);
            unsigned role = masked ? PX_WS_PARSE_SERVER : PX_WS_PARSE_CLIENT;
            px__ws_frame_t f;
            /* Every split: shorter prefixes are incomplete, the full one parses. */
            for (size_t k = 0; k < hl; k++)
                assert_int_equal(parse_g(h, k, &f, role, UINT64_MAX), PX_PARSE_INCOMPLETE);
            assert_int_equal(parse_g(h, hl, &f, role, UINT64_MAX), (int)hl);
            assert_true(f.fin);
            assert_int_equal(f.opcode, PX_WS_OP_BINARY);
            assert_true(f.payload_len == len);
            assert_int_equal(f.masked, masked);
            if (masked)
                assert_memory_equal(f.mask, key, 4);
            assert_null(f.error);
            /* Trailing payload bytes are not part of the header. */
            uint8_t more[PX_WS_MAX_HEADER + 3];
            memcpy(more, h, hl);
            memset(more + hl, 0xEE, 3);
            assert_int_equal(parse_g(more, hl + 3, &f, role, UINT64_MAX), (int)hl);
            /* The limit is inclusive. */
            assert_int_equal(parse_g(h, hl, &f, role, len), (int)hl);
            if (len > 0) {
                assert_int_equal(parse_g(h, hl, &f, role, len - 1), PX_PARSE_ERROR);
                assert_int_equal(f.close_code, 1009);
            }
        }
    }
}

/* ---- errors ---------------------------------------------------------------------------- */

typedef struct bad_case {
    const char *name;
    uint8_t bytes[16];
    size_t len;    /* full input */
    size_t detect; /* shortest prefix that already fails */
    unsigned flags;
    uint64_t max;
    uint16_t code;
} bad_case_t;

#define S PX_WS_PARSE_SERVER
#define C PX_WS_PARSE_CLIENT
#define M 0x11, 0x22, 0x33, 0x44
static const bad_case_t bad_cases[] = {
    {"opcode 3", {0x83, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode 4", {0x84, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode 5", {0x05, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode 6", {0x86, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode 7", {0x87, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode B", {0x8B, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode C", {0x8C, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode D", {0x8D, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode E", {0x8E, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"opcode F", {0x0F, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"rsv1 not negotiated", {0xC1, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"rsv2 not negotiated", {0xA1, 0x80, M}, 6, 1, S | PX_WS_RSV1, UINT64_MAX, 1002},
    {"rsv3 not negotiated", {0x92, 0x80, M}, 6, 1, S | PX_WS_RSV1, UINT64_MAX, 1002},
    {"rsv1 on continuation", {0xC0, 0x80, M}, 6, 1, S | PX_WS_RSV1, UINT64_MAX, 1002},
    {"rsv1 on ping", {0xC9, 0x80, M}, 6, 1, S | PX_WS_RSV1, UINT64_MAX, 1002},
    {"rsv1 on close", {0xC8, 0x80, M}, 6, 1, S | PX_WS_RSV1, UINT64_MAX, 1002},
    {"rsv2 on pong", {0xAA, 0x80, M}, 6, 1, S | 0x70u, UINT64_MAX, 1002},
    {"fragmented close", {0x08, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"fragmented ping", {0x09, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"fragmented pong", {0x0A, 0x80, M}, 6, 1, S, UINT64_MAX, 1002},
    {"unmasked from client", {0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, 7, 2, S, UINT64_MAX, 1002},
    {"masked from server", {0x81, 0x85, M, 1, 2, 3, 4, 5}, 11, 2, C, UINT64_MAX, 1002},
    {"ping 126 (16-bit form)", {0x89, 0xFE, 0x00, 0x7E, M}, 8, 2, S, UINT64_MAX, 1002},
    {"close 127 (64-bit form)",
     {0x88, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x7E, M},
     14,
     2,
     S,
     UINT64_MAX,
     1002},
    {"16-bit form for 125", {0x82, 0xFE, 0x00, 0x7D, M}, 8, 4, S, UINT64_MAX, 1002},
    {"16-bit form for 0", {0x82, 0xFE, 0x00, 0x00, M}, 8, 4, S, UINT64_MAX, 1002},
    {"64-bit form for 65535",
     {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, M},
     14,
     10,
     S,
     UINT64_MAX,
     1002},
    {"64-bit form for 126",
     {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x7E, M},
     14,
     10,
     S,
     UINT64_MAX,
     1002},
    {"64-bit top bit", {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, M}, 14, 3, S, UINT64_MAX, 1002},
    {"64-bit all ones",
     {0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, M},
     14,
     3,
     S,
     UINT64_MAX,
     1002},
    {"too big 7-bit", {0x82, 0x8A, M}, 6, 2, S, 9, 1009},
    {"too big 16-bit", {0x82, 0xFE, 0x01, 0x00, M}, 8, 4, S, 255, 1009},
    {"too big 64-bit", {0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, M}, 14, 10, S, UINT32_MAX, 1009},
    {"too big, empty limit", {0x81, 0x81, M, 'x'}, 7, 2, S, 0, 1009},
};
#undef M

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad_cases); i++) {
        const bad_case_t *t = &bad_cases[i];
        print_message("  %s\n", t->name);
        px__ws_frame_t f;
        for (size_t k = 0; k <= t->len; k++) {
            memset(&f, 0, sizeof f);
            int r = parse_g(t->bytes, k, &f, t->flags, t->max);
            if (k < t->detect) {
                assert_int_equal(r, PX_PARSE_INCOMPLETE);
            } else {
                assert_int_equal(r, PX_PARSE_ERROR);
                assert_int_equal(f.close_code, t->code);
                assert_non_null(f.error);
            }
        }
    }
}

static void test_flags_accept(void **state)
{
    (void)state;
    px__ws_frame_t f;
    static const uint8_t text_rsv1[] = {0xC1, 0x80, 1, 2, 3, 4};
    assert_int_equal(parse_g(text_rsv1, 6, &f, S | PX_WS_RSV1, UINT64_MAX), 6);
    assert_true(f.rsv1 && f.fin && !f.rsv2 && !f.rsv3);
    static const uint8_t bin_rsv1_nofin[] = {0x42, 0x80, 1, 2, 3, 4};
    assert_int_equal(parse_g(bin_rsv1_nofin, 6, &f, S | PX_WS_RSV1, UINT64_MAX), 6);
    assert_true(f.rsv1 && !f.fin);
    static const uint8_t all_rsv[] = {0xF2, 0x00};
    assert_int_equal(parse_g(all_rsv, 2, &f, 0x70u, UINT64_MAX), 2);
    assert_true(f.rsv1 && f.rsv2 && f.rsv3 && !f.masked);
    /* Without a role the mask bit is not checked either way. */
    static const uint8_t unmasked[] = {0x81, 0x00};
    static const uint8_t masked[] = {0x81, 0x80, 9, 9, 9, 9};
    assert_int_equal(parse_g(unmasked, 2, &f, 0, UINT64_MAX), 2);
    assert_int_equal(parse_g(masked, 6, &f, 0, UINT64_MAX), 6);
    /* Control frames at the limit, continuation without fin. */
    static const uint8_t ping125[] = {0x89, 0xFD, 1, 2, 3, 4};
    assert_int_equal(parse_g(ping125, 6, &f, S, UINT64_MAX), 6);
    assert_int_equal(f.opcode, PX_WS_OP_PING);
    assert_true(f.payload_len == 125);
    static const uint8_t cont[] = {0x00, 0x80, 1, 2, 3, 4};
    assert_int_equal(parse_g(cont, 6, &f, S, UINT64_MAX), 6);
    assert_int_equal(f.opcode, PX_WS_OP_CONT);
    assert_false(f.fin);
    /* The 1002 checks come before the size limit. */
    static const uint8_t ping126[] = {0x89, 0xFE, 0, 200, 1, 2, 3, 4};
    assert_int_equal(parse_g(ping126, 8, &f, S, 10), PX_PARSE_ERROR);
    assert_int_equal(f.close_code, 1002);
}
#undef S
#undef C

static void test_roundtrip(void **state)
{
    (void)state;
    static const unsigned ops[] = {PX_WS_OP_CONT,  PX_WS_OP_TEXT, PX_WS_OP_BINARY,
                                   PX_WS_OP_CLOSE, PX_WS_OP_PING, PX_WS_OP_PONG};
    static const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
    for (size_t o = 0; o < PX_ARRAY_SIZE(ops); o++) {
        int control = px__ws_opcode_is_control(ops[o]);
        for (size_t b = 0; b < PX_ARRAY_SIZE(boundaries); b++) {
            uint64_t len = boundaries[b];
            if (control && len > 125)
                continue;
            for (int bits = 0; bits < 8; bits++) {
                int fin = bits & 1, rsv1 = (bits >> 1) & 1, masked = (bits >> 2) & 1;
                if (control && !fin)
                    continue;
                if (rsv1 && ops[o] != PX_WS_OP_TEXT && ops[o] != PX_WS_OP_BINARY)
                    continue;
                uint8_t h[PX_WS_MAX_HEADER];
                size_t hl = px__ws_encode_header(h, ops[o], fin, rsv1, len, masked ? key : NULL);
                px__ws_frame_t f;
                int r = parse_g(h, hl, &f, PX_WS_RSV1, UINT64_MAX);
                assert_int_equal(r, (int)hl);
                assert_int_equal(f.opcode, ops[o]);
                assert_int_equal(f.fin, fin);
                assert_int_equal(f.rsv1, rsv1);
                assert_int_equal(f.masked, masked);
                assert_true(f.payload_len == len);
            }
        }
    }
    /* RFC 6455 5.7 examples. */
    static const uint8_t hello_unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t hello_masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                           0x7f, 0x9f, 0x4d, 0x51, 0x58};
    px__ws_frame_t f;
    assert_int_equal(parse_g(hello_unmasked, sizeof hello_unmasked, &f, PX_WS_PARSE_CLIENT, 125),
                     2);
    assert_true(f.payload_len == 5);
    assert_int_equal(parse_g(hello_masked, sizeof hello_masked, &f, PX_WS_PARSE_SERVER, 125), 6);
    uint8_t pl[5];
    memcpy(pl, hello_masked + 6, 5);
    px__ws_unmask(pl, 5, f.mask, 0);
    assert_memory_equal(pl, "Hello", 5);
    uint8_t h[PX_WS_MAX_HEADER];
    assert_int_equal(px__ws_encode_header(h, PX_WS_OP_TEXT, 1, 0, 5, f.mask), 6);
    assert_memory_equal(h, hello_masked, 6);
    static const uint8_t big[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
    assert_int_equal(px__ws_encode_header(h, PX_WS_OP_BINARY, 1, 0, 65536, NULL), 10);
    assert_memory_equal(h, big, 10);
    static const uint8_t mid[] = {0x82, 0x7E, 0x01, 0x00};
    assert_int_equal(px__ws_encode_header(h, PX_WS_OP_BINARY, 1, 0, 256, NULL), 4);
    assert_memory_equal(h, mid, 4);
}

/* ---- unmask ---------------------------------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static void reference_unmask(uint8_t *p, size_t n, const uint8_t m[4], uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= m[(off + i) % 4];
}

typedef void (*unmask_fn)(uint8_t *, size_t, const uint8_t *, uint64_t);

static void check_fn(unmask_fn fn, const char *name, size_t maxlen, size_t step)
{
    enum { PAD = 40 };
    size_t cap = maxlen + 2 * PAD + 64;
    uint8_t *orig = malloc(cap), *want = malloc(cap), *got = malloc(cap);
    assert_non_null(orig);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < cap; i++)
        orig[i] = (uint8_t)xorshift64(&rng);
    uint8_t key[4];
    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)xorshift64(&rng);
    print_message("  %s\n", name);
    for (size_t len = 0; len <= maxlen; len += (len < 300 ? 1 : step)) {
        for (uint64_t off = 0; off < 8; off++) {
            for (size_t align = 0; align < 33; align += (len < 300 ? 1 : 8)) {
                memcpy(want, orig, cap);
                memcpy(got, orig, cap);
                reference_unmask(want + PAD + align, len, key, off);
                fn(got + PAD + align, len, key, off);
                /* The bytes around the range must be untouched. */
                assert_memory_equal(got, want, cap);
            }
        }
    }
    free(orig);
    free(want);
    free(got);
}

static void test_unmask_strategies(void **state)
{
    (void)state;
    check_fn(px__ws_unmask_scalar, "scalar", 300, 1);
    check_fn(px__ws_unmask_word, "word", 300, 1);
    check_fn(px__ws_unmask, "dispatch", 4200, 517);
#ifdef PX_WS_HAVE_X86_SIMD
    check_fn(px__ws_unmask_sse2, "sse2", 4200, 517);
    if (px__ws_have_avx2())
        check_fn(px__ws_unmask_avx2, "avx2", 4200, 517);
    else
        print_message("  (no AVX2 on this CPU)\n");
#endif
}

static void test_unmask_big_and_piecewise(void **state)
{
    (void)state;
    size_t n = (1u << 20) + 13;
    uint8_t *buf = malloc(n), *ref = malloc(n), *orig = malloc(n);
    assert_non_null(buf);
    assert_non_null(ref);
    assert_non_null(orig);
    for (size_t i = 0; i < n; i++)
        orig[i] = (uint8_t)xorshift64(&rng);
    static const uint8_t key[4] = {0x01, 0x80, 0xff, 0x5a};
    memcpy(ref, orig, n);
    reference_unmask(ref, n, key, 0);
    memcpy(buf, orig, n);
    px__ws_unmask(buf, n, key, 0);
    assert_memory_equal(buf, ref, n);
    /* As it would arrive from the socket: random piece sizes, running offset. */
    for (int round = 0; round < 20; round++) {
        memcpy(buf, orig, n);
        size_t pos = 0;
        while (pos < n) {
            size_t piece = (size_t)(xorshift64(&rng) % (round < 10 ? 100 : 70000));
            if (piece > n - pos)
                piece = n - pos;
            px__ws_unmask(buf + pos, piece, key, pos);
            pos += piece;
        }
        assert_memory_equal(buf, ref, n);
    }
    /* Only offset % 4 matters, even for huge offsets. */
    memcpy(buf, orig, 1000);
    px__ws_unmask(buf, 1000, key, (UINT64_C(1) << 62) + 2);
    memcpy(ref, orig, 1000);
    reference_unmask(ref, 1000, key, 2);
    assert_memory_equal(buf, ref, 1000);
    free(buf);
    free(ref);
    free(orig);
}

static void test_close_codes(void **state)
{
    (void)state;
    for (unsigned code = 0; code < 70000; code++) {
        int want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                   (code >= 3000 && code <= 4999);
        assert_int_equal(px__ws_close_code_valid(code), want);
    }
    assert_false(px__ws_close_code_valid(1004));
    assert_false(px__ws_close_code_valid(1005));
    assert_false(px__ws_close_code_valid(1006));
    assert_false(px__ws_close_code_valid(1015));
    assert_true(px__ws_close_code_valid(1014));
    assert_false(px__ws_close_code_valid(2999));
    assert_true(px__ws_close_code_valid(3000));
    assert_true(px__ws_close_code_valid(4999));
    assert_false(px__ws_close_code_valid(5000));
    assert_false(px__ws_close_code_valid(UINT32_MAX));
}

static void test_close_payload(void **state)
{
    (void)state;
    unsigned code = 0;
    px_str_t reason;
    assert_int_equal(px__ws_parse_close(NULL, 0, &code, &reason), 0);
    assert_int_equal(code, 1005);
    assert_int_equal(reason.len, 0);
    assert_int_equal(px__ws_parse_close((const uint8_t *)"\x03", 1, &code, &reason), 1002);
    assert_int_equal(px__ws_parse_close((const uint8_t *)"\x03\xe8", 2, &code, &reason), 0);
    assert_int_equal(code, 1000);
    assert_int_equal(reason.len, 0);
    assert_int_equal(px__ws_parse_close((const uint8_t *)"\x03\xe9"
                                                         "bye \xE2\x82\xAC",
                                        9, &code, &reason),
                     0);
    assert_int_equal(code, 1001);
    assert_int_equal(reason.len, 7);
    assert_memory_equal(reason.ptr, "bye \xE2\x82\xAC", 7);
    /* 1005/1006/1015 and unassigned codes are protocol errors on the wire. */
    static const unsigned bad_codes[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad_codes); i++) {
        uint8_t b[2] = {(uint8_t)(bad_codes[i] >> 8), (uint8_t)bad_codes[i]};
        assert_int_equal(px__ws_parse_close(b, 2, &code, &reason), 1002);
    }
    assert_int_equal(px__ws_parse_close((const uint8_t *)"\x0f\xa0\xff", 3, &code, &reason), 1007);
    assert_int_equal(px__ws_parse_close((const uint8_t *)"\x0f\xa0\xE2\x82", 4, &code, &reason),
                     1007);

    uint8_t out[PX_WS_MAX_CONTROL_PAYLOAD];
    assert_int_equal(px__ws_encode_close(out, 0, "ignored", 7), 0);
    assert_int_equal(px__ws_encode_close(out, 4000, "ok", 2), 4);
    assert_memory_equal(out, "\x0f\xa0ok", 4);
    /* Long reasons are cut to 123 bytes, never inside a character. */
    char lng[300];
    for (size_t shift = 0; shift < 4; shift++) {
        size_t n = 0;
        for (size_t i = 0; i < shift; i++)
            lng[n++] = 'a';
        while (n + 4 <= sizeof lng) {
            memcpy(lng + n, "\xF0\x9F\x98\x80", 4);
            n += 4;
        }
        size_t len = px__ws_encode_close(out, 1000, lng, n);
        assert_true(len <= PX_WS_MAX_CONTROL_PAYLOAD && len >= PX_WS_MAX_CONTROL_PAYLOAD - 3);
        assert_int_equal(px__ws_parse_close(out, len, &code, &reason), 0);
        assert_int_equal(code, 1000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_length_boundaries), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_flags_accept),      cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_unmask_strategies), cmocka_unit_test(test_unmask_big_and_piecewise),
        cmocka_unit_test(test_close_codes),       cmocka_unit_test(test_close_payload),
    };
    return cmocka_run_group_tests(tests, setup_guards, teardown_guards);
}
