/* UTF-8 validation as a "shift" DFA derived from Unicode Table 3-7.
 *
 * Table 3-7 (well-formed byte sequences) reads, per code point range:
 *   00..7F
 *   C2..DF 80..BF
 *   E0     A0..BF 80..BF
 *   E1..EC 80..BF 80..BF
 *   ED     80..9F 80..BF          (excludes surrogates D800..DFFF)
 *   EE..EF 80..BF 80..BF
 *   F0     90..BF 80..BF 80..BF   (excludes overlongs below U+10000)
 *   F1..F3 80..BF 80..BF 80..BF
 *   F4     80..8F 80..BF 80..BF   (excludes > U+10FFFF)
 * C0, C1 and F5..FF never occur. After the lead byte, only the second byte has a
 * range narrower than 80..BF, so the automaton needs these states:
 *   ACC  between sequences           REJ  absorbing error
 *   C1/C2/C3  need 1/2/3 more bytes from 80..BF
 *   E0 (next A0..BF), ED (next 80..9F), F0 (next 90..BF), F4 (next 80..8F),
 *   each of which then continues as C1 (E0, ED) or C2 (F0, F4).
 * Bytes fall into classes by how they act on those states: 00..7F, 80..8F, 90..9F,
 * A0..BF, the lead-byte groups above, and the never-valid bytes.
 *
 * Encoding: every state is a bit offset (a multiple of 6) into a 64-bit row, and
 * the row for byte b holds, at offset s, the state reached from s on b. One step
 * is then `s = row[b] >> (s & 63)`: a load that does not depend on the previous
 * step plus one shift, so the loop-carried chain is a single cycle. */
#include "util/utf8.h"

#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum {
    ACC = 0,
    REJ = 6,
    C1 = 12,
    C2 = 18,
    C3 = 24,
    E0 = 30,
    ED = 36,
    F0 = 42,
    F4 = 48,
};

_Static_assert(ACC == PX_UTF8_ACCEPT && REJ == PX_UTF8_REJECT, "public state values");

/* The row for one byte class: next state from each of the 8 live states; REJ
 * always stays REJ. */
#define ROW(acc, c1, c2, c3, e0, ed, f0, f4)                                                       \
    ((uint64_t)(acc) << ACC | (uint64_t)REJ << REJ | (uint64_t)(c1) << C1 | (uint64_t)(c2) << C2 | \
     (uint64_t)(c3) << C3 | (uint64_t)(e0) << E0 | (uint64_t)(ed) << ED | (uint64_t)(f0) << F0 |   \
     (uint64_t)(f4) << F4)

/* A lead byte is only legal between sequences. */
#define LEAD(next) ROW(next, REJ, REJ, REJ, REJ, REJ, REJ, REJ)
/* A continuation byte in 80..BF advances every "need n more" state; the four
 * restricted second-byte states accept it only inside their own range. */
#define CONT(e0, ed, f0, f4) ROW(REJ, ACC, C1, C2, e0, ed, f0, f4)

#define R_ASCII   LEAD(ACC)
#define R_80_8F   CONT(REJ, C1, REJ, C2)
#define R_90_9F   CONT(REJ, C1, C2, REJ)
#define R_A0_BF   CONT(C1, REJ, C2, REJ)
#define R_INVALID LEAD(REJ)

/* clang-format off */
static const uint64_t rows[256] = {
    [0x00 ... 0x7F] = R_ASCII,
    [0x80 ... 0x8F] = R_80_8F,
    [0x90 ... 0x9F] = R_90_9F,
    [0xA0 ... 0xBF] = R_A0_BF,
    [0xC0 ... 0xC1] = R_INVALID,
    [0xC2 ... 0xDF] = LEAD(C1),
    [0xE0]          = LEAD(E0),
    [0xE1 ... 0xEC] = LEAD(C2),
    [0xED]          = LEAD(ED),
    [0xEE ... 0xEF] = LEAD(C2),
    [0xF0]          = LEAD(F0),
    [0xF1 ... 0xF3] = LEAD(C3),
    [0xF4]          = LEAD(F4),
    [0xF5 ... 0xFF] = R_INVALID,
};
/* clang-format on */

#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE uint64_t run(uint64_t s, const uint8_t *p, const uint8_t *end)
{
    while (p < end)
        s = rows[*p++] >> (s & 63);
    return s & 63;
}

px__utf8_state_t px__utf8_feed_dfa(px__utf8_state_t state, const uint8_t *p, size_t len)
{
    uint64_t s = state & 63u;
    if (len == 0)
        return (px__utf8_state_t)s;
    const uint8_t *end = p + len;
    /* Check for REJ every 64 bytes so invalid input stops early. */
    while (end - p > 64) {
        s = run(s, p, p + 64);
        p += 64;
        if (s == REJ)
            return REJ;
    }
    return (px__utf8_state_t)run(s, p, end);
}

/* First byte at or after p with the top bit set, or a position within 8 bytes of
 * end from which the caller continues byte by byte. Not inlined: a standalone
 * copy of this loop measured ~20% faster on long ASCII than the inlined one. */
static __attribute__((noinline)) const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end)
{
#ifdef __SSE2__
    while (end - p >= 32) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
        unsigned m = (unsigned)_mm_movemask_epi8(a) | (unsigned)_mm_movemask_epi8(b) << 16;
        if (m)
            return p + __builtin_ctz(m);
        p += 32;
    }
    if (end - p >= 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)p));
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w &= 0x8080808080808080ull;
        if (w) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            return p + (__builtin_clzll(w) >> 3);
#else
            return p + (__builtin_ctzll(w) >> 3); /* lowest set bit = first such byte */
#endif
        }
        p += 8;
    }
    return p;
}

/* Are p[0..32) all ASCII? */
static ALWAYS_INLINE int ascii32(const uint8_t *p)
{
#ifdef __SSE2__
    __m128i a = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    return _mm_movemask_epi8(_mm_or_si128(a, b)) == 0;
#else
    uint64_t w[4];
    memcpy(w, p, 32);
    return ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull) == 0;
#endif
}

static ALWAYS_INLINE uint64_t feed_body(uint64_t s, const uint8_t *p, const uint8_t *end)
{
    /* How far the DFA runs before the fast path is tried again: doubles while
     * the text stays non-ASCII, so mixed-script text pays for the check rarely,
     * and drops back once an ASCII run turns up. */
    size_t stretch = 64;
    while (end - p >= 32) {
        /* Enter the fast path only when a whole 32-byte block is ASCII, so that
         * in non-ASCII text the branch is predictably not taken. Test the data
         * first: it is known early, while `s` comes at the end of the DFA's
         * serial chain. */
        if (ascii32(p) && s == ACC) {
            p = skip_ascii(p + 32, end);
            stretch = 64;
            continue;
        }
        /* Step the DFA in 64-byte blocks (a constant length lets the compiler
         * unroll), checking for REJ once per block. */
        const uint8_t *stop = (size_t)(end - p) > stretch ? p + stretch : end;
        while (stop - p >= 64) {
            s = run(s, p, p + 64);
            p += 64;
            if (s == REJ)
                return REJ;
        }
        if (stretch < 1024)
            stretch *= 2;
        if (stop == end)
            break;
    }
    return run(s, p, end);
}

px__utf8_state_t px__utf8_feed(px__utf8_state_t state, const uint8_t *p, size_t len)
{
    uint64_t s = state & 63u;
    if (s == REJ || len == 0) /* (p may be NULL when len is 0) */
        return (px__utf8_state_t)s;
    return (px__utf8_state_t)feed_body(s, p, p + len);
}

int px__utf8_valid(const uint8_t *p, size_t len)
{
    return px__utf8_feed(PX_UTF8_ACCEPT, p, len) == PX_UTF8_ACCEPT;
}

/* Validates one UTF-8 sequence whose lead byte p[0] >= 0x80 (RFC 3629 table: no
 * overlongs, no surrogates, nothing above U+10FFFF). Returns the byte after it, or NULL. */
const unsigned char *px__utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0xC2)
        return NULL; /* stray continuation byte, or overlong C0/C1 lead */
    if (c < 0xE0) {
        need = 1;
    } else if (c < 0xF0) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c < 0xF5) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* > U+10FFFF */
    } else {
        return NULL;
    }
    if ((size_t)(end - p) <= need)
        return NULL;
    if (p[1] < lo || p[1] > hi)
        return NULL;
    for (size_t i = 2; i <= need; i++)
        if ((p[i] & 0xC0) != 0x80)
            return NULL;
    return p + need + 1;
}
