/* libFuzzer harness for the permessage-deflate inflater (and deflater).
 *
 * Byte 0 picks the window bits (8..15), client_no_context_takeover, the mode and
 * the output limit; byte 1 seeds the cut points; the rest is the data.
 *  - Inflate mode: the data, cut into 1-3 messages, is inflated twice, once in
 *    random frame pieces and once one frame per message. Both must agree exactly
 *    (result and output), output never exceeds max_out, zlib memory never
 *    exceeds the budget, and errors are only -EBADMSG / -EMSGSIZE.
 *  - Round-trip mode: the data, cut into messages, is compressed by our deflater
 *    and inflated by a peer in random frames: the bytes must come back. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ws/ws_deflate.h"
#include "plexus/buf.h"

static const size_t limits[8] = {0, 1, 16, 100, 1000, 4096, 20000, 65536};

/* Feed one message in pieces; cuts come from the LCG. */
static int feed_message(px__ws_deflate_t *c, const uint8_t *m, size_t n, uint32_t *seed, int pieces,
                        px_buf_t *out, size_t max_out)
{
    size_t pos = 0;
    for (;;) {
        size_t piece = n - pos;
        if (pieces && piece > 0 && fuzz_lcg(seed) % 4 != 0)
            piece = fuzz_lcg(seed) % (piece + 1);
        int fin = pos + piece == n;
        int r = px__ws_inflate(c, m + pos, piece, fin, out, max_out);
        CHECK(px_buf_size(out) <= max_out);
        if (r != 0 || fin)
            return r;
        pos += piece;
    }
}

static px__ws_deflate_params_t make_params(int snct, int cnct, unsigned sbits, unsigned cbits)
{
    px__ws_deflate_params_t p = {0};
    p.server_no_context_takeover = snct ? 1u : 0u;
    p.client_no_context_takeover = cnct ? 1u : 0u;
    p.server_max_window_bits = (uint8_t)sbits;
    p.client_max_window_bits = (uint8_t)cbits;
    p.level = -1;
    p.mem_level = 8;
    return p;
}

static void inflate_mode(const uint8_t *d, size_t n, unsigned bits, int cnct, size_t max_out,
                         uint32_t seed)
{
    px__ws_deflate_params_t p = make_params(0, cnct, 15, bits);
    px__ws_deflate_t *a = px__ws_deflate_new(&p, 0), *b = px__ws_deflate_new(&p, 0);
    CHECK(a && b);
    px_buf_t oa, ob;
    px_buf_init(&oa, 0);
    px_buf_init(&ob, 0);
    uint32_t cuts = seed;
    size_t pos = 0;
    for (int m = 0; m < 3 && pos <= n; m++) {
        size_t len = m == 2 ? n - pos : fuzz_lcg(&cuts) % (n - pos + 1);
        px_buf_reset(&oa);
        px_buf_reset(&ob);
        int ra = feed_message(a, d + pos, len, &cuts, 1, &oa, max_out);
        int rb = feed_message(b, d + pos, len, &cuts, 0, &ob, max_out);
        CHECK(ra == 0 || ra == -EBADMSG || ra == -EMSGSIZE);
        CHECK(ra == rb);
        if (ra != 0)
            break;
        CHECK(px_buf_size(&oa) == px_buf_size(&ob));
        /* (px_buf_head of a never-grown buffer is NULL + 0: only look when non-empty) */
        CHECK(px_buf_size(&oa) == 0 ||
              memcmp(px_buf_head(&oa), px_buf_head(&ob), px_buf_size(&oa)) == 0);
        pos += len;
        if (cnct) {
            /* Nothing is carried between messages: trimming must be harmless. */
            px__ws_deflate_trim(a);
            CHECK(px__ws_deflate_mem_used(a) == 0);
        }
    }
    px_buf_dispose(&oa);
    px_buf_dispose(&ob);
    px__ws_deflate_free(a);
    px__ws_deflate_free(b);
}

static void roundtrip_mode(const uint8_t *d, size_t n, unsigned bits, int snct, uint32_t seed)
{
    px__ws_deflate_params_t sp = make_params(snct, 0, bits, 15);
    px__ws_deflate_params_t cp = make_params(0, snct, 15, bits);
    size_t budget = px__ws_deflate_mem_estimate(&sp);
    px__ws_deflate_t *srv = px__ws_deflate_new(&sp, budget), *peer = px__ws_deflate_new(&cp, 0);
    CHECK(srv && peer);
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    uint32_t cuts = seed;
    size_t pos = 0;
    for (int m = 0; m < 4 && pos <= n; m++) {
        size_t len = m == 3 ? n - pos : fuzz_lcg(&cuts) % (n - pos + 1);
        px_buf_reset(&z);
        px_buf_reset(&out);
        /* Sometimes demand that compression pays; a refusal must keep both sides
         * in step (the message would go out uncompressed). */
        size_t max_z = fuzz_lcg(&cuts) % 3 == 0 ? len / 2 : SIZE_MAX;
        int r = px__ws_deflate_message(srv, d + pos, len, &z, max_z);
        CHECK(r == 0 || (r == -EMSGSIZE && max_z != SIZE_MAX));
        CHECK(px__ws_deflate_mem_used(srv) <= budget);
        if (r == 0) {
            CHECK(px_buf_size(&z) <= max_z);
            r = feed_message(peer, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &cuts, 1,
                             &out, len);
            CHECK(r == 0);
            CHECK(px_buf_size(&out) == len);
            CHECK(len == 0 || memcmp(px_buf_head(&out), d + pos, len) == 0);
        }
        pos += len;
    }
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(srv);
    px__ws_deflate_free(peer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned sel = data[0];
    unsigned bits = 8 + (sel & 7u);
    int flag = (sel >> 3) & 1;
    size_t max_out = limits[(sel >> 5) & 7u];
    uint32_t seed = data[1] * 2654435761u;
    if (sel & 0x10u)
        roundtrip_mode(data + 2, size - 2, bits, flag, seed);
    else
        inflate_mode(data + 2, size - 2, bits, flag, max_out, seed);
    return 0;
}
