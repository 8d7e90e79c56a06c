/* libFuzzer harness for the WebSocket frame header parser and unmasking.
 *
 * Input: byte 0 picks the parse flags, byte 1 the payload limit, the rest is the
 * wire data. Invariants checked:
 *  - the result is a header length in 2..14, INCOMPLETE or ERROR (1002/1009 + reason);
 *  - every prefix gives INCOMPLETE or the same answer (the parser never needs to
 *    "take back" a result), and a prefix shorter than the header is INCOMPLETE;
 *  - the parser reads only within its buffer (each prefix lives in its own
 *    exactly-sized allocation so ASan sees any over-read);
 *  - an accepted header honours the flags and limit, and re-encodes to the same
 *    bytes (the parser only accepts minimal length encodings);
 *  - every unmask strategy agrees with the byte loop, piecewise or whole, and
 *    unmasking twice is the identity. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ws/ws_frame.h"

static const uint64_t limits[] = {
    0, 1, 125, 126, 127, 65535, 65536, 1u << 20, UINT32_MAX, UINT64_MAX >> 1, UINT64_MAX};

static int parse_copy(const uint8_t *p, size_t n, px__ws_frame_t *f, unsigned flags, uint64_t lim)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c);
    if (n)
        memcpy(c, p, n);
    int r = px__ws_parse_frame(c, n, f, flags, lim);
    free(c);
    return r;
}

static void same_result(int r, const px__ws_frame_t *a, int r2, const px__ws_frame_t *b)
{
    CHECK(r == r2);
    if (r == PX_PARSE_ERROR) {
        CHECK(a->close_code == b->close_code);
        CHECK(strcmp(a->error, b->error) == 0);
    } else if (r >= 0) {
        CHECK(a->fin == b->fin && a->rsv1 == b->rsv1 && a->rsv2 == b->rsv2 && a->rsv3 == b->rsv3);
        CHECK(a->masked == b->masked && a->opcode == b->opcode);
        CHECK(a->payload_len == b->payload_len && memcmp(a->mask, b->mask, 4) == 0);
    }
}

static void check_frame(const uint8_t *wire, size_t n, unsigned flags, uint64_t lim)
{
    px__ws_frame_t f;
    memset(&f, 0xAA, sizeof f);
    int r = parse_copy(wire, n, &f, flags, lim);
    CHECK(r == PX_PARSE_INCOMPLETE || r == PX_PARSE_ERROR || (r >= 2 && r <= PX_WS_MAX_HEADER));
    if (r == PX_PARSE_ERROR) {
        CHECK(f.close_code == PX_WS_CLOSE_PROTOCOL || f.close_code == PX_WS_CLOSE_TOO_BIG);
        CHECK(f.error && f.error[0]);
    }
    if (r >= 0) {
        CHECK((size_t)r <= n);
        unsigned op = f.opcode;
        CHECK(op <= 2 || (op >= 8 && op <= 10));
        CHECK(f.payload_len <= lim && f.payload_len < (UINT64_C(1) << 63));
        if (px__ws_opcode_is_control(op))
            CHECK(f.fin && f.payload_len <= PX_WS_MAX_CONTROL_PAYLOAD);
        if (f.rsv1 || f.rsv2 || f.rsv3)
            CHECK(op == PX_WS_OP_TEXT || op == PX_WS_OP_BINARY);
        CHECK(!f.rsv1 || (flags & PX_WS_RSV1));
        CHECK(!f.rsv2 || (flags & PX_WS_RSV2));
        CHECK(!f.rsv3 || (flags & PX_WS_RSV3));
        if (flags & PX_WS_PARSE_SERVER)
            CHECK(f.masked);
        if (flags & PX_WS_PARSE_CLIENT)
            CHECK(!f.masked);
        CHECK((size_t)r == px__ws_header_size(f.payload_len, f.masked));
        if (!f.rsv2 && !f.rsv3) {
            uint8_t enc[PX_WS_MAX_HEADER];
            size_t el = px__ws_encode_header(enc, op, f.fin, f.rsv1, f.payload_len,
                                             f.masked ? f.mask : NULL);
            CHECK(el == (size_t)r && memcmp(enc, wire, el) == 0);
        }
    }
    /* Prefixes: only the first 15 bytes can matter. */
    size_t upto = n < PX_WS_MAX_HEADER + 1 ? n : PX_WS_MAX_HEADER + 1;
    for (size_t k = 0; k < upto; k++) {
        px__ws_frame_t g;
        int r2 = parse_copy(wire, k, &g, flags, lim);
        if (r >= 0 && k < (size_t)r)
            CHECK(r2 == PX_PARSE_INCOMPLETE);
        else if (r2 != PX_PARSE_INCOMPLETE)
            same_result(r2, &g, r, &f);
    }
}

static void check_unmask(const uint8_t *p, size_t n, const uint8_t key[4], uint64_t off)
{
    uint8_t *ref = malloc(n + 1), *a = malloc(n + 1), *b = malloc(n + 1);
    CHECK(ref && a && b);
    memcpy(ref, p, n);
    px__ws_unmask_scalar(ref, n, key, off);
    void (*fns[])(uint8_t *, size_t, const uint8_t *, uint64_t) = {
        px__ws_unmask,
        px__ws_unmask_word,
#ifdef PX_WS_HAVE_X86_SIMD
        px__ws_unmask_sse2,
#endif
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        /* Odd start addresses exercise the alignment prologues. */
        memcpy(a + 1, p, n);
        fns[i](a + 1, n, key, off);
        CHECK(memcmp(a + 1, ref, n) == 0);
        fns[i](a + 1, n, key, off);
        CHECK(memcmp(a + 1, p, n) == 0);
    }
#ifdef PX_WS_HAVE_X86_SIMD
    if (px__ws_have_avx2()) {
        memcpy(b, p, n);
        px__ws_unmask_avx2(b, n, key, off);
        CHECK(memcmp(b, ref, n) == 0);
    }
#endif
    /* Piecewise, split where the key says. */
    memcpy(b, p, n);
    size_t cut = n ? key[0] % (n + 1) : 0;
    px__ws_unmask(b, cut, key, off);
    px__ws_unmask(b + cut, n - cut, key, off + cut);
    CHECK(memcmp(b, ref, n) == 0);
    free(ref);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned sel = data[0];
    unsigned flags = sel & 0x70u; /* RSV1..3 allowed */
    if (sel & 1u)
        flags |= PX_WS_PARSE_SERVER;
    else if (sel & 2u)
        flags |= PX_WS_PARSE_CLIENT;
    uint64_t lim = limits[data[1] % (sizeof limits / sizeof limits[0])];
    const uint8_t *wire = data + 2;
    size_t n = size - 2;
    check_frame(wire, n, flags, lim);
    /* The same bytes under the opposite role and with every extension bit. */
    check_frame(wire, n, (flags ^ (PX_WS_PARSE_SERVER | PX_WS_PARSE_CLIENT)) | 0x70u, UINT64_MAX);

    if (n >= 4) {
        uint8_t key[4];
        memcpy(key, wire, 4);
        check_unmask(wire + 4, n - 4, key, sel);
    }
    /* Close payloads: an accepted one re-encodes to itself. */
    {
        size_t cl = n > PX_WS_MAX_CONTROL_PAYLOAD ? PX_WS_MAX_CONTROL_PAYLOAD : n;
        unsigned cc = 0;
        px_str_t why;
        unsigned fail = px__ws_parse_close(wire, cl, &cc, &why);
        CHECK(fail == 0 || fail == PX_WS_CLOSE_PROTOCOL || fail == PX_WS_CLOSE_INVALID_DATA);
        if (fail == 0 && cl >= 2) {
            uint8_t again[PX_WS_MAX_CONTROL_PAYLOAD];
            size_t al = px__ws_encode_close(again, cc, why.ptr, why.len);
            CHECK(al == cl && memcmp(again, wire, cl) == 0);
        }
    }
    unsigned code = n >= 2 ? (unsigned)wire[0] << 8 | wire[1] : 0;
    int v = px__ws_close_code_valid(code);
    CHECK(v == ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                (code >= 3000 && code <= 4999)));
    return 0;
}
