/* WebSocket frame header parser/encoder and payload unmasking (RFC 6455 5.2-5.3). */
#include "ws/ws_frame.h"

#include <string.h>

#include "util/utf8.h"

#ifdef PX_WS_HAVE_X86_SIMD
#include <immintrin.h>
#endif

static int fail(px__ws_frame_t *f, uint16_t code, const char *why)
{
    f->close_code = code;
    f->error = why;
    return PX_PARSE_ERROR;
}

int px__ws_parse_frame(const uint8_t *buf, size_t len, px__ws_frame_t *f, unsigned flags,
                       uint64_t max_payload)
{
    if (len < 1)
        return PX_PARSE_INCOMPLETE;

    /* Everything byte 0 can prove wrong is checked before asking for byte 1, so a
     * peer speaking another protocol is dropped after one byte. */
    unsigned b0 = buf[0];
    unsigned opcode = b0 & 0x0Fu;
    if ((opcode >= 3 && opcode <= 7) || opcode >= 0xB)
        return fail(f, PX_WS_CLOSE_PROTOCOL, "reserved opcode");
    int control = px__ws_opcode_is_control(opcode);
    unsigned rsv = b0 & 0x70u;
    if (rsv) {
        if (rsv & ~flags)
            return fail(f, PX_WS_CLOSE_PROTOCOL, "reserved bit set without a negotiated extension");
        /* Extension bits (RSV1 = permessage-deflate) describe a whole message, so
         * they may only appear on the frame that starts one (RFC 7692 6.1). */
        if (opcode != PX_WS_OP_TEXT && opcode != PX_WS_OP_BINARY)
            return fail(f, PX_WS_CLOSE_PROTOCOL,
                        "reserved bit set on a control or continuation frame");
    }
    if (control && !(b0 & 0x80u))
        return fail(f, PX_WS_CLOSE_PROTOCOL, "fragmented control frame");

    if (len < 2)
        return PX_PARSE_INCOMPLETE;
    unsigned b1 = buf[1];
    unsigned masked = b1 >> 7;
    if ((flags & PX_WS_PARSE_SERVER) && !masked)
        return fail(f, PX_WS_CLOSE_PROTOCOL, "unmasked frame from client");
    if ((flags & PX_WS_PARSE_CLIENT) && masked)
        return fail(f, PX_WS_CLOSE_PROTOCOL, "masked frame from server");
    unsigned len7 = b1 & 0x7Fu;
    if (control && len7 > PX_WS_MAX_CONTROL_PAYLOAD)
        return fail(f, PX_WS_CLOSE_PROTOCOL, "control frame payload over 125 bytes");

    size_t hlen = 2;
    uint64_t plen = len7;
    if (len7 == 126) {
        if (len < 4)
            return PX_PARSE_INCOMPLETE;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        if (plen < 126)
            return fail(f, PX_WS_CLOSE_PROTOCOL, "non-minimal 16-bit payload length");
        hlen = 4;
    } else if (len7 == 127) {
        /* The top bit alone proves the error: do not wait for the other 7 bytes. */
        if (len >= 3 && (buf[2] & 0x80u))
            return fail(f, PX_WS_CLOSE_PROTOCOL, "64-bit payload length with the top bit set");
        if (len < 10)
            return PX_PARSE_INCOMPLETE;
        plen = 0;
        for (int i = 2; i < 10; i++)
            plen = plen << 8 | buf[i];
        if (plen < 65536)
            return fail(f, PX_WS_CLOSE_PROTOCOL, "non-minimal 64-bit payload length");
        hlen = 10;
    }
    if (plen > max_payload)
        return fail(f, PX_WS_CLOSE_TOO_BIG, "frame payload too big");

    if (masked) {
        if (len < hlen + 4)
            return PX_PARSE_INCOMPLETE;
        memcpy(f->mask, buf + hlen, 4);
        hlen += 4;
    } else {
        memset(f->mask, 0, 4);
    }
    f->fin = (b0 >> 7) & 1u;
    f->rsv1 = (b0 >> 6) & 1u;
    f->rsv2 = (b0 >> 5) & 1u;
    f->rsv3 = (b0 >> 4) & 1u;
    f->masked = masked & 1u;
    f->opcode = opcode & 0xFu;
    f->payload_len = plen;
    f->close_code = 0;
    f->error = NULL;
    return (int)hlen;
}

size_t px__ws_encode_header(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t payload_len,
                            const uint8_t *mask)
{
    size_t n;
    out[0] = (uint8_t)((fin ? 0x80u : 0) | (rsv1 ? 0x40u : 0) | (opcode & 0x0Fu));
    uint8_t mbit = mask ? 0x80u : 0;
    if (payload_len < 126) {
        out[1] = (uint8_t)(mbit | payload_len);
        n = 2;
    } else if (payload_len <= 0xFFFF) {
        out[1] = (uint8_t)(mbit | 126u);
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = (uint8_t)(mbit | 127u);
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

/* ---- unmasking -----------------------------------------------------------------
 * Payload byte i (counting from the frame start) is XORed with mask[i % 4]. For a
 * piece starting at `offset`, rotating the key by offset % 4 makes p[j] use
 * key[j % 4], and any block whose length is a multiple of 4 keeps that phase, so
 * the wide loops below only need the rotated key replicated across a register. */

static inline uint32_t rotated_key(const uint8_t mask[4], uint64_t offset)
{
    uint8_t k[4];
    unsigned r = (unsigned)(offset & 3u);
    for (unsigned i = 0; i < 4; i++)
        k[i] = mask[(r + i) & 3u];
    uint32_t k32;
    memcpy(&k32, k, 4); /* memory order, so a memcpy'd word XORs byte-for-byte */
    return k32;
}

void px__ws_unmask_scalar(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset)
{
    unsigned r = (unsigned)(offset & 3u);
    for (size_t i = 0; i < len; i++)
        p[i] ^= mask[(r + i) & 3u];
}

/* XOR the last < 8 bytes; p[0] has phase 0 relative to the 4-byte key word. */
static inline void tail_bytes(uint8_t *p, size_t len, uint32_t k32)
{
    uint8_t k[4];
    memcpy(k, &k32, 4);
    for (size_t i = 0; i < len; i++)
        p[i] ^= k[i & 3u];
}

static inline void xor_words(uint8_t *p, size_t len, uint32_t k32)
{
    uint64_t k64 = (uint64_t)k32 << 32 | k32; /* byte order irrelevant: both halves equal */
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, 32);
        w[0] ^= k64;
        w[1] ^= k64;
        w[2] ^= k64;
        w[3] ^= k64;
        memcpy(p + i, w, 32);
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= k64;
        memcpy(p + i, &w, 8);
    }
    tail_bytes(p + i, len - i, k32);
}

void px__ws_unmask_word(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset)
{
    if (len == 0) /* (p may be NULL) */
        return;
    xor_words(p, len, rotated_key(mask, offset));
}

#ifdef PX_WS_HAVE_X86_SIMD
/* Bring p up to `align` with the scalar loop so the wide stores never split a
 * cache line; returns the number of bytes done and advances the key phase. */
static inline size_t align_head(uint8_t *p, size_t len, size_t align, uint32_t *k32)
{
    size_t head = (size_t)(-(uintptr_t)p & (align - 1));
    if (head > len)
        head = len;
    uint8_t k[4];
    memcpy(k, k32, 4);
    for (size_t i = 0; i < head; i++)
        p[i] ^= k[i & 3u];
    /* Rotate so the byte at p + head uses k[0]. */
    uint8_t r[4];
    for (unsigned i = 0; i < 4; i++)
        r[i] = k[(head + i) & 3u];
    memcpy(k32, r, 4);
    return head;
}

void px__ws_unmask_sse2(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset)
{
    uint32_t k32 = rotated_key(mask, offset);
    size_t i = align_head(p, len, 16, &k32);
    __m128i k = _mm_set1_epi32((int)k32);
    for (; i + 64 <= len; i += 64) {
        __m128i *q = (__m128i *)(void *)(p + i);
        __m128i a = _mm_load_si128(q), b = _mm_load_si128(q + 1);
        __m128i c = _mm_load_si128(q + 2), d = _mm_load_si128(q + 3);
        _mm_store_si128(q, _mm_xor_si128(a, k));
        _mm_store_si128(q + 1, _mm_xor_si128(b, k));
        _mm_store_si128(q + 2, _mm_xor_si128(c, k));
        _mm_store_si128(q + 3, _mm_xor_si128(d, k));
    }
    for (; i + 16 <= len; i += 16) {
        __m128i *q = (__m128i *)(void *)(p + i);
        _mm_store_si128(q, _mm_xor_si128(_mm_load_si128(q), k));
    }
    xor_words(p + i, len - i, k32);
}

__attribute__((target("avx2"))) void px__ws_unmask_avx2(uint8_t *p, size_t len,
                                                        const uint8_t mask[4], uint64_t offset)
{
    uint32_t k32 = rotated_key(mask, offset);
    size_t i = align_head(p, len, 32, &k32);
    __m256i k = _mm256_set1_epi32((int)k32);
    for (; i + 128 <= len; i += 128) {
        __m256i *q = (__m256i *)(void *)(p + i);
        __m256i a = _mm256_load_si256(q), b = _mm256_load_si256(q + 1);
        __m256i c = _mm256_load_si256(q + 2), d = _mm256_load_si256(q + 3);
        _mm256_store_si256(q, _mm256_xor_si256(a, k));
        _mm256_store_si256(q + 1, _mm256_xor_si256(b, k));
        _mm256_store_si256(q + 2, _mm256_xor_si256(c, k));
        _mm256_store_si256(q + 3, _mm256_xor_si256(d, k));
    }
    for (; i + 32 <= len; i += 32) {
        __m256i *q = (__m256i *)(void *)(p + i);
        _mm256_store_si256(q, _mm256_xor_si256(_mm256_load_si256(q), k));
    }
    xor_words(p + i, len - i, k32);
}

int px__ws_have_avx2(void)
{
    return __builtin_cpu_supports("avx2");
}
#endif

void px__ws_unmask(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset)
{
    /* Below ~64 bytes alignment and dispatch cost more than they save. */
    if (len < 64) {
        px__ws_unmask_word(p, len, mask, offset);
        return;
    }
#ifdef PX_WS_HAVE_X86_SIMD
    if (len >= 256 && __builtin_cpu_supports("avx2"))
        px__ws_unmask_avx2(p, len, mask, offset);
    else
        px__ws_unmask_sse2(p, len, mask, offset);
#else
    px__ws_unmask_word(p, len, mask, offset);
#endif
}

int px__ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return 1; /* 3000-3999 IANA-registered libraries/frameworks, 4000-4999 private */
    if (code < 1000 || code > 1014)
        return 0;
    /* 1004 reserved; 1005/1006 mean "no code"/"dropped" and are never sent. */
    return code != 1004 && code != 1005 && code != 1006;
}

unsigned px__ws_parse_close(const uint8_t *p, size_t len, unsigned *code, px_str_t *reason)
{
    reason->ptr = "";
    reason->len = 0;
    if (len == 0) {
        *code = PX_WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (len == 1)
        return PX_WS_CLOSE_PROTOCOL;
    unsigned c = (unsigned)p[0] << 8 | p[1];
    if (!px__ws_close_code_valid(c))
        return PX_WS_CLOSE_PROTOCOL;
    if (!px__utf8_valid(p + 2, len - 2))
        return PX_WS_CLOSE_INVALID_DATA;
    *code = c;
    reason->ptr = (const char *)p + 2;
    reason->len = len - 2;
    return 0;
}

size_t px__ws_encode_close(uint8_t *out, unsigned code, const char *reason, size_t reason_len)
{
    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    size_t n = reason_len;
    if (n > PX_WS_MAX_CONTROL_PAYLOAD - 2) {
        n = PX_WS_MAX_CONTROL_PAYLOAD - 2;
        /* Back up over continuation bytes so no character is cut in half. */
        while (n > 0 && ((unsigned char)reason[n] & 0xC0u) == 0x80u)
            n--;
    }
    if (n)
        memcpy(out + 2, reason, n);
    return n + 2;
}
