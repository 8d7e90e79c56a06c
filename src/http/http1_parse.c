/* HTTP/1.1 request-head parser and chunked decoder. The contract is in
 * http1_parse.h; comments here say how the code stays strict, bounded and
 * linear when input arrives in pieces. */
#include "http/http1_parse.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define PX_HTTP1_X86 1
#include <immintrin.h>
#endif

/* ---- byte classes -------------------------------------------------------------------- */

enum {
    C_TCHAR = 1,  /* token: field names, methods, codings (RFC 9110 5.6.2) */
    C_VALUE = 2,  /* field-value byte: HTAB, SP, VCHAR, obs-text (RFC 9110 5.5) */
    C_TARGET = 4, /* request-target byte the scan passes over: 0x21-0x7E except '?' and '#' */
    C_HOST = 8,   /* URI host[:port]: unreserved, pct-encoded, sub-delims, ':', '[', ']' */
};

/* Generated from the definitions above; the unit test recomputes every entry. */
/* clang-format off */
static const uint8_t cls[256] = {
    /*         _0   _1   _2   _3   _4   _5   _6   _7   _8   _9   _a   _b   _c   _d   _e   _f */
    /* 0_ */ 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x2, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0,
    /* 1_ */ 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0,
    /* 2_ */ 0x2, 0xf, 0x6, 0x3, 0xf, 0xf, 0xf, 0xf, 0xe, 0xe, 0xf, 0xf, 0xe, 0xf, 0xf, 0x6,
    /* 3_ */ 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xe, 0xe, 0x6, 0xe, 0x6, 0x2,
    /* 4_ */ 0x6, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf,
    /* 5_ */ 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xe, 0x6, 0xe, 0x7, 0xf,
    /* 6_ */ 0x7, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf,
    /* 7_ */ 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0xf, 0x6, 0x7, 0x6, 0xf, 0x0,
    /* 8_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* 9_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* a_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* b_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* c_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* d_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* e_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
    /* f_ */ 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2, 0x2,
};
/* clang-format on */

static inline int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline uint32_t load32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Case-insensitive compare of `n` input bytes against lower-case `lit`, which
 * holds only letters, digits, '-', ':' and '/'. (c | 0x20) maps 'A'-'Z' onto
 * 'a'-'z' and leaves those other characters alone; the only other bytes it
 * maps onto them are CTLs, which never reach this function (callers pass
 * validated tokens or request-target bytes). `n` is a constant at every call,
 * so this becomes a few (overlapping) word compares; no load leaves s[0..n)
 * or lit[0..n). */
static inline int lower_eq(const char *s, const char *lit, size_t n)
{
    if (n >= 8) {
        uint64_t diff = 0;
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
            diff |= (load64(s + i) | 0x2020202020202020u) ^ load64(lit + i);
        if (i < n)
            diff |= (load64(s + n - 8) | 0x2020202020202020u) ^ load64(lit + n - 8);
        return diff == 0;
    }
    if (n >= 4)
        return (((load32(s) | 0x20202020u) ^ load32(lit)) |
                ((load32(s + n - 4) | 0x20202020u) ^ load32(lit + n - 4))) == 0;
    for (size_t i = 0; i < n; i++)
        if ((s[i] | 0x20) != lit[i])
            return 0;
    return 1;
}

/* ---- scanners -------------------------------------------------------------------------
 * Each returns the first byte in [p, end) that stops its class, or end:
 *   token:  not a tchar                  (ends a method or a field name)
 *   value:  a CTL other than HTAB, or DEL (CR ends a field value)
 *   target: not 0x21-0x7E, or '?', or '#'
 *
 * The request line is scanned in 32 (AVX2) or 16 (SSE4.2) byte blocks inside
 * [p, end); for the last bytes the block that ends at `end` is loaded (it starts
 * before p, never before the buffer) and the bits below p are dropped.
 *
 * Field lines go through a 64-byte window classified once for both field
 * classes: finding a colon and then the CR is a shift and a count on two masks,
 * and the next line usually starts inside the same window. A load-classify-
 * movemask per scan would chain ~20 cycles of latency into every scan (each
 * scan starts where the previous one stopped) and lose to the scalar loop,
 * whose predicted branches let the CPU run ahead.
 *
 * No load ever touches memory outside the caller's buffer; buffers shorter
 * than a block are scanned one byte at a time. */

#ifdef PX_HTTP1_TEST_HOOKS
/* Bytes passed over by scans: lets the unit test prove resumption is linear. */
extern size_t px__http1_scanned;
size_t px__http1_scanned;
#define COUNT_SCANNED(n) (px__http1_scanned += (size_t)(n))
#else
#define COUNT_SCANNED(n) ((void)0)
#endif

/* A classified 64-byte window of the buffer (see above). */
typedef struct win {
    const char *lo, *hi; /* the caller's whole buffer: every load stays inside */
    const char *base;    /* the masks describe base[0..64); NULL: nothing loaded yet */
    uint64_t tok;        /* bit i: base[i] is not a tchar */
    uint64_t val;        /* bit i: base[i] is not a field-value byte */
} win_t;

/* Scanners are passed to parse_head as constant function pointers: after
 * inlining, each instantiation calls (and inlines) its own set directly. A
 * dispatching helper without a target attribute would not do: gcc refuses to
 * inline an avx2 function into it, even once the helper itself is inlined
 * into an avx2 function. */
typedef const char *(*scan_fn)(win_t *w, const char *p, const char *end);

static inline const char *scan_scalar(const char *p, const char *end, unsigned m)
{
    const char *q = p;
    /* four at a time while all four belong; the byte loop finds which did not */
    while (end - q >= 4 && (cls[(unsigned char)q[0]] & cls[(unsigned char)q[1]] &
                            cls[(unsigned char)q[2]] & cls[(unsigned char)q[3]] & m))
        q += 4;
    while (q < end && (cls[(unsigned char)*q] & m))
        q++;
    COUNT_SCANNED(q - p + (q < end));
    return q;
}

#ifdef PX_HTTP1_X86
#define TARGET_SSE42 __attribute__((target("sse4.2")))
#define TARGET_AVX2  __attribute__((target("avx2")))

/* Token bytes by nibble lookup: row bit (hi nibble 2..7 -> bit 0..5) AND column
 * mask (lo nibble) is non-zero exactly for tchars; bytes >= 0x80 get hi row 0. */
#define TCHAR_LUT_LO                                                                               \
    0x3a, 0x3f, 0x3e, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3e, 0x3e, 0x3d, 0x15, 0x34, 0x15, 0x3d, 0x1c
#define TCHAR_LUT_HI 0, 0, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 0, 0

/* Bit i set: byte i of v is not a tchar. */
TARGET_SSE42 static inline unsigned stop_token16(__m128i v)
{
    const __m128i lo = _mm_setr_epi8(TCHAR_LUT_LO), hi = _mm_setr_epi8(TCHAR_LUT_HI);
    const __m128i nib = _mm_set1_epi8(0x0f);
    __m128i a = _mm_shuffle_epi8(lo, _mm_and_si128(v, nib));
    __m128i b = _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
    return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(a, b), _mm_setzero_si128()));
}

/* Bit i set: byte i is < 0x20 but not HTAB, or 0x7F. */
TARGET_SSE42 static inline unsigned stop_value16(__m128i v)
{
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
    __m128i tab = _mm_cmpeq_epi8(v, _mm_set1_epi8('\t'));
    __m128i del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_andnot_si128(tab, ctl), del));
}

/* Bit i set: byte i is outside 0x21-0x7E, or '?' or '#'. Adding 0x5F maps
 * 0x21-0x7E onto 0x80-0xDD, the signed bytes <= -35; everything else is > -35. */
TARGET_SSE42 static inline unsigned stop_target16(__m128i v)
{
    __m128i out = _mm_cmpgt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x5f)), _mm_set1_epi8(-35));
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('?'));
    __m128i h = _mm_cmpeq_epi8(v, _mm_set1_epi8('#'));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(out, _mm_or_si128(q, h)));
}

/* W-byte blocks (16: SSE4.2, 32: AVX2) inside [p, end); then, for the last < W
 * bytes, the block that ends at `end` with the bits below p dropped; in a buffer
 * shorter than W, `tail` (the scalar loop, or the 16-byte scanner). */
#define DEFINE_SCAN_BLOCK(name, target, W, load, stop, tail)                                       \
    target static inline const char *name(const char *p, const char *end, const char *lo)          \
    {                                                                                              \
        while (end - p >= W) {                                                                     \
            unsigned m = stop(load(p));                                                            \
            COUNT_SCANNED(m ? __builtin_ctz(m) + 1 : W);                                           \
            if (m)                                                                                 \
                return p + __builtin_ctz(m);                                                       \
            p += W;                                                                                \
        }                                                                                          \
        if (p < end && end - lo >= W) {                                                            \
            unsigned m = stop(load(end - W));                                                      \
            m >>= W - (end - p);                                                                   \
            COUNT_SCANNED(m ? __builtin_ctz(m) + 1 : end - p);                                     \
            return m ? p + __builtin_ctz(m) : end;                                                 \
        }                                                                                          \
        return tail;                                                                               \
    }
#define LOAD16(q) _mm_loadu_si128((const __m128i *)(const void *)(q))
#define LOAD32(q) _mm256_loadu_si256((const __m256i *)(const void *)(q))
DEFINE_SCAN_BLOCK(scan_token_sse42, TARGET_SSE42, 16, LOAD16, stop_token16,
                  scan_scalar(p, end, C_TCHAR))
DEFINE_SCAN_BLOCK(scan_value_sse42, TARGET_SSE42, 16, LOAD16, stop_value16,
                  scan_scalar(p, end, C_VALUE))
DEFINE_SCAN_BLOCK(scan_target_sse42, TARGET_SSE42, 16, LOAD16, stop_target16,
                  scan_scalar(p, end, C_TARGET))

TARGET_SSE42 static inline void win_load_sse42(win_t *w, const char *base)
{
    uint64_t tok = 0, val = 0;
    for (int i = 0; i < 4; i++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(base + 16 * i));
        tok |= (uint64_t)stop_token16(v) << (16 * i);
        val |= (uint64_t)stop_value16(v) << (16 * i);
    }
    w->base = base;
    w->tok = tok;
    w->val = val;
}

TARGET_AVX2 static inline unsigned stop_token32(__m256i v)
{
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_setr_epi8(TCHAR_LUT_LO));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_setr_epi8(TCHAR_LUT_HI));
    const __m256i nib = _mm256_set1_epi8(0x0f);
    __m256i a = _mm256_shuffle_epi8(lo, _mm256_and_si256(v, nib));
    __m256i b = _mm256_shuffle_epi8(hi, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
    __m256i z = _mm256_cmpeq_epi8(_mm256_and_si256(a, b), _mm256_setzero_si256());
    return (unsigned)_mm256_movemask_epi8(z);
}

TARGET_AVX2 static inline unsigned stop_value32(__m256i v)
{
    __m256i ctl = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v);
    __m256i tab = _mm256_cmpeq_epi8(v, _mm256_set1_epi8('\t'));
    __m256i del = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x7f));
    return (unsigned)_mm256_movemask_epi8(_mm256_or_si256(_mm256_andnot_si256(tab, ctl), del));
}

TARGET_AVX2 static inline unsigned stop_target32(__m256i v)
{
    __m256i out =
        _mm256_cmpgt_epi8(_mm256_add_epi8(v, _mm256_set1_epi8(0x5f)), _mm256_set1_epi8(-35));
    __m256i q = _mm256_cmpeq_epi8(v, _mm256_set1_epi8('?'));
    __m256i h = _mm256_cmpeq_epi8(v, _mm256_set1_epi8('#'));
    return (unsigned)_mm256_movemask_epi8(_mm256_or_si256(out, _mm256_or_si256(q, h)));
}

DEFINE_SCAN_BLOCK(scan_token_avx2, TARGET_AVX2, 32, LOAD32, stop_token32,
                  scan_token_sse42(p, end, lo))
DEFINE_SCAN_BLOCK(scan_value_avx2, TARGET_AVX2, 32, LOAD32, stop_value32,
                  scan_value_sse42(p, end, lo))
DEFINE_SCAN_BLOCK(scan_target_avx2, TARGET_AVX2, 32, LOAD32, stop_target32,
                  scan_target_sse42(p, end, lo))

TARGET_AVX2 static inline void win_load_avx2(win_t *w, const char *base)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)base);
    __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(base + 32));
    w->base = base;
    w->tok = (uint64_t)stop_token32(a) | (uint64_t)stop_token32(b) << 32;
    w->val = (uint64_t)stop_value32(a) | (uint64_t)stop_value32(b) << 32;
}

/* First stop byte in [p, end) from the window's `field` mask, loading the next
 * window when p passes the current one (at p, or ending at the buffer's end so
 * no load leaves it). Buffers under 64 bytes use the block scanner. */
#define DEFINE_WIN_SCAN(name, target, load, field, block)                                          \
    target static inline const char *name(win_t *w, const char *p, const char *end)                \
    {                                                                                              \
        const char *p0 = p;                                                                        \
        (void)p0;                                                                                  \
        if (p >= end) /* else a window at the buffer's end would never contain p */                \
            return end;                                                                            \
        for (;;) {                                                                                 \
            uintptr_t off = (uintptr_t)p - (uintptr_t)w->base;                                     \
            if (off < 64) {                                                                        \
                uint64_t m = w->field >> off;                                                      \
                if (m) {                                                                           \
                    const char *q = p + __builtin_ctzll(m);                                        \
                    q = q < end ? q : end;                                                         \
                    COUNT_SCANNED(q - p0 + (q < end));                                             \
                    return q;                                                                      \
                }                                                                                  \
                p += 64 - off;                                                                     \
                if (p >= end) {                                                                    \
                    COUNT_SCANNED(end - p0);                                                       \
                    return end;                                                                    \
                }                                                                                  \
            }                                                                                      \
            if (w->hi - p >= 64)                                                                   \
                load(w, p);                                                                        \
            else if (w->hi - w->lo >= 64)                                                          \
                load(w, w->hi - 64);                                                               \
            else                                                                                   \
                return block(p, end, w->lo);                                                       \
        }                                                                                          \
    }
DEFINE_WIN_SCAN(win_token_sse42, TARGET_SSE42, win_load_sse42, tok, scan_token_sse42)
DEFINE_WIN_SCAN(win_value_sse42, TARGET_SSE42, win_load_sse42, val, scan_value_sse42)
DEFINE_WIN_SCAN(win_token_avx2, TARGET_AVX2, win_load_avx2, tok, scan_token_avx2)
DEFINE_WIN_SCAN(win_value_avx2, TARGET_AVX2, win_load_avx2, val, scan_value_avx2)

#endif /* PX_HTTP1_X86 */

static const char *scan_token_scalar(win_t *w, const char *p, const char *end)
{
    (void)w;
    return scan_scalar(p, end, C_TCHAR);
}

static const char *scan_value_scalar(win_t *w, const char *p, const char *end)
{
    (void)w;
    return scan_scalar(p, end, C_VALUE);
}

static const char *scan_target_scalar(win_t *w, const char *p, const char *end)
{
    (void)w;
    return scan_scalar(p, end, C_TARGET);
}

/* ---- request head ------------------------------------------------------------------ */

enum {
    ST_NEW = 0, /* no call yet: *req not initialised */
    ST_EMPTY,   /* skipping empty lines before the request line */
    ST_METHOD,  /* _line = _mark = method start */
    ST_TARGET,  /* _mark = target start; _aux = 1 + offset of the first '?', 0 if none yet */
    ST_VERSION, /* _mark = version start; re-read from there (at most 10 bytes) */
    ST_LINE,    /* at the start of a field line or of the final empty line */
    ST_NAME,    /* _line = name start */
    ST_OWS,     /* _aux = end of the name (the colon); skipping OWS before the value */
    ST_VALUE,   /* _mark = value start; _aux as in ST_OWS */
    ST_DONE,
    ST_ERROR,
};

enum {
    F_HOST = 1 << 0,       /* a Host field was seen */
    F_CL = 1 << 1,         /* a Content-Length field was seen */
    F_TE = 1 << 2,         /* a Transfer-Encoding field was seen */
    F_TE_OTHER = 1 << 3,   /* ...naming a coding other than chunked: 501 unless a 400 comes */
    F_UPGRADE = 1 << 4,    /* an Upgrade field was seen */
    F_CONN_CLOSE = 1 << 5, /* Connection tokens seen so far */
    F_CONN_KEEPALIVE = 1 << 6,
    F_CONN_UPGRADE = 1 << 7,
    F_ABSOLUTE = 1 << 8,  /* absolute-form target: req->host is its authority */
    F_PATH_ROOT = 1 << 9, /* absolute-form target without a path: path is "/" */
};

/* While the head is incomplete, spans hold 1 + offset instead of a pointer
 * (0 stays "absent"); finish() turns them into pointers into the final buffer. */
static inline px_str_t span(size_t off, size_t len)
{
    return (px_str_t){(const char *)(uintptr_t)(off + 1), len};
}

static inline void rebase(px_str_t *s, const char *buf)
{
    if (s->ptr)
        s->ptr = buf + ((uintptr_t)s->ptr - 1);
}

static inline const char *at(const char *buf, px_str_t s)
{
    return buf + ((uintptr_t)s.ptr - 1);
}

static int reject(px__http1_parser_t *p, px__http1_request_t *req, int status, const char *why)
{
    p->_state = ST_ERROR;
    req->status = status;
    req->error = why;
    return PX_PARSE_ERROR;
}

#define REJECT(status, why) return reject(p, req, status, why)

/* Split the target of a complete request line into path/query/host and check
 * its form against the method (RFC 9112 3.2). */
static int check_target(px__http1_parser_t *p, const char *buf, px__http1_request_t *req)
{
    const char *m = at(buf, req->method), *t = at(buf, req->target);
    size_t mlen = req->method.len, n = req->target.len;
    size_t toff = (uintptr_t)req->target.ptr - 1;
    /* end of path (offset): the first '?' or the end of the target */
    size_t qoff = p->_aux ? p->_aux - 1 : toff + n;

    req->is_head = mlen == 4 && memcmp(m, "HEAD", 4) == 0;
    if (mlen == 7 && memcmp(m, "CONNECT", 7) == 0) {
        /* authority-form: uri-host ":" port */
        size_t colon = n;
        for (size_t i = 0; i < n; i++) {
            if (!(cls[(unsigned char)t[i]] & C_HOST))
                REJECT(400, "CONNECT target is not host:port");
            if (t[i] == ':')
                colon = i;
        }
        if (colon == 0 || colon + 1 >= n)
            REJECT(400, "CONNECT target is not host:port");
        for (size_t i = colon + 1; i < n; i++)
            if (t[i] < '0' || t[i] > '9')
                REJECT(400, "CONNECT target is not host:port");
        req->host = req->target;
        p->_flags |= F_ABSOLUTE;
        return 0;
    }
    if (t[0] == '/') { /* origin-form */
        req->path = span(toff, qoff - toff);
    } else if (n == 1 && t[0] == '*') {
        if (!(mlen == 7 && memcmp(m, "OPTIONS", 7) == 0))
            REJECT(400, "asterisk-form target with a method other than OPTIONS");
        req->path = req->target;
        return 0;
    } else { /* absolute-form: only for the schemes this server speaks */
        size_t s;
        if (n > 7 && lower_eq(t, "http://", 7))
            s = 7;
        else if (n > 8 && lower_eq(t, "https://", 8))
            s = 8;
        else
            REJECT(400, "invalid request target");
        size_t a = toff + s, e = a; /* authority is [a, e) */
        while (e < qoff && buf[e] != '/') {
            if (buf[e] == '@')
                REJECT(400, "userinfo in request target");
            if (!(cls[(unsigned char)buf[e]] & C_HOST))
                REJECT(400, "invalid authority in request target");
            e++;
        }
        if (e == a)
            REJECT(400, "empty authority in request target");
        req->host = span(a, e - a);
        p->_flags |= F_ABSOLUTE;
        if (e < qoff)
            req->path = span(e, qoff - e);
        else
            p->_flags |= F_PATH_ROOT;
    }
    if (p->_aux)
        req->query = span(qoff + 1, toff + n - qoff - 1);
    return 0;
}

/* Walk a comma-separated list of tokens (RFC 9110 5.6.1), ignoring empty
 * elements and OWS. Returns the next element start, or NULL at the end. On
 * return *tok is the token; *rest is the byte after the token and its OWS. */
static const char *list_next(const char *s, const char *e, px_str_t *tok, const char **rest)
{
    while (s < e && (*s == ',' || is_ows(*s)))
        s++;
    if (s == e)
        return NULL;
    const char *t = s;
    s = scan_scalar(s, e, C_TCHAR);
    *tok = (px_str_t){t, (size_t)(s - t)};
    while (s < e && is_ows(*s))
        s++;
    *rest = s;
    return t;
}

static int on_transfer_encoding(px__http1_parser_t *p, px__http1_request_t *req, const char *v,
                                size_t vlen)
{
    const char *e = v + vlen, *s = v;
    px_str_t tok;
    int count = 0;
    if (req->minor_version == 0)
        REJECT(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (p->_flags & F_CL)
        REJECT(400, "both Content-Length and Transfer-Encoding");
    p->_flags |= F_TE;
    while (list_next(s, e, &tok, &s)) {
        int chunked = tok.len == 7 && lower_eq(tok.ptr, "chunked", 7);
        if (tok.len == 0)
            REJECT(400, "invalid Transfer-Encoding");
        if (req->chunked)
            REJECT(400, chunked ? "chunked applied more than once"
                                : "chunked is not the final transfer coding");
        if (chunked) {
            req->chunked = 1;
        } else {
            p->_flags |= F_TE_OTHER;
        }
        if (s < e && *s == ';') {
            if (chunked)
                REJECT(400, "parameters on chunked");
            /* The coding is unsupported, so the request fails (501, or 400 if
             * something else is wrong): its parameters need no exact parse. */
            while (s < e && *s != ',')
                s++;
        }
        if (s < e && *s != ',')
            REJECT(400, "invalid Transfer-Encoding");
        count++;
    }
    if (count == 0)
        REJECT(400, "empty Transfer-Encoding");
    return 0;
}

/* uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2), given only C_HOST
 * bytes: a non-empty host, either an IP-literal in brackets or a name without
 * brackets, and a port of digits (possibly empty). */
static int host_port_valid(const char *v, size_t n)
{
    size_t i = 0;
    if (v[0] == '[') {
        const char *close = memchr(v, ']', n);
        if (!close || close == v + 1)
            return 0;
        i = (size_t)(close - v) + 1;
        if (memchr(v + 1, '[', i - 2))
            return 0;
    } else {
        while (i < n && v[i] != ':') {
            if (v[i] == '[' || v[i] == ']')
                return 0;
            i++;
        }
        if (i == 0)
            return 0; /* ":80": no host */
    }
    if (i == n)
        return 1;
    if (v[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return 1;
}

/* Derive request facts from one complete field line. Names are validated
 * tokens, so lower_eq applies; switching on the length first keeps the cost of
 * uninteresting fields to one compare. */
static int on_field(px__http1_parser_t *p, px__http1_request_t *req, const char *name, size_t nlen,
                    const char *v, size_t voff, size_t vlen)
{
    const char *e = v + vlen, *s = v;
    px_str_t tok;
    switch (nlen) {
    case 4:
        if (!lower_eq(name, "host", 4))
            return 0;
        if (p->_flags & F_HOST)
            REJECT(400, "multiple Host fields");
        p->_flags |= F_HOST;
        if (vlen == 0)
            REJECT(400, "empty Host"); /* RFC 9110 4.2.1: http URIs have a host */
        if (scan_scalar(v, e, C_HOST) != e || !host_port_valid(v, vlen))
            REJECT(400, "invalid Host");
        if (!(p->_flags & F_ABSOLUTE))
            req->host = span(voff, vlen);
        return 0;
    case 6:
        if (!lower_eq(name, "expect", 6))
            return 0;
        while (list_next(s, e, &tok, &s)) {
            if (tok.len == 12 && (s == e || *s == ',') && lower_eq(tok.ptr, "100-continue", 12)) {
                req->expect_continue = 1;
            } else {
                req->expect_other = 1;
                while (s < e && *s != ',')
                    s++;
            }
        }
        return 0;
    case 7:
        if (!lower_eq(name, "upgrade", 7))
            return 0;
        if (p->_flags & F_UPGRADE)
            REJECT(400, "multiple Upgrade fields");
        p->_flags |= F_UPGRADE;
        req->upgrade_proto = span(voff, vlen);
        return 0;
    case 10:
        if (!lower_eq(name, "connection", 10))
            return 0;
        while (list_next(s, e, &tok, &s)) {
            if (tok.len == 0 || (s < e && *s != ','))
                REJECT(400, "invalid Connection");
            if (tok.len == 5 && lower_eq(tok.ptr, "close", 5))
                p->_flags |= F_CONN_CLOSE;
            else if (tok.len == 10 && lower_eq(tok.ptr, "keep-alive", 10))
                p->_flags |= F_CONN_KEEPALIVE;
            else if (tok.len == 7 && lower_eq(tok.ptr, "upgrade", 7))
                p->_flags |= F_CONN_UPGRADE;
        }
        return 0;
    case 14: {
        if (!lower_eq(name, "content-length", 14))
            return 0;
        if (p->_flags & F_CL)
            REJECT(400, "multiple Content-Length fields");
        if (p->_flags & F_TE)
            REJECT(400, "both Content-Length and Transfer-Encoding");
        p->_flags |= F_CL;
        if (vlen == 0)
            REJECT(400, "invalid Content-Length");
        int64_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            unsigned d = (unsigned)(unsigned char)v[i] - '0';
            if (d > 9)
                REJECT(400, "invalid Content-Length");
            if (n > (INT64_MAX - (int64_t)d) / 10)
                REJECT(400, "Content-Length too large");
            n = n * 10 + (int64_t)d;
        }
        req->content_length = n;
        return 0;
    }
    case 17:
        if (!lower_eq(name, "transfer-encoding", 17))
            return 0;
        return on_transfer_encoding(p, req, v, vlen);
    default: return 0;
    }
}

/* The empty line ended the head at `end`: settle what needed every field. */
static int finish(px__http1_parser_t *p, const char *buf, px__http1_request_t *req, size_t end)
{
    unsigned f = p->_flags;
    if (req->minor_version == 1 && !(f & F_HOST))
        REJECT(400, "missing Host");
    if (f & F_TE_OTHER)
        REJECT(501, "unsupported transfer coding");
    if (f & F_CONN_CLOSE)
        req->keep_alive = 0;
    else
        req->keep_alive = req->minor_version == 1 || (f & F_CONN_KEEPALIVE);
    /* RFC 9110 7.8 and 10.1.1: HTTP/1.0 requests cannot upgrade or expect 100 */
    req->upgrade = req->minor_version == 1 && (f & F_CONN_UPGRADE) && (f & F_UPGRADE) &&
                   req->upgrade_proto.len > 0;
    if (req->minor_version == 0)
        req->expect_continue = 0;

    rebase(&req->method, buf);
    rebase(&req->target, buf);
    rebase(&req->path, buf);
    rebase(&req->query, buf);
    rebase(&req->host, buf);
    rebase(&req->upgrade_proto, buf);
    if (f & F_PATH_ROOT)
        req->path = PX_STR_LIT("/");
    for (size_t i = 0; i < req->num_headers; i++) { /* never absent: no NULL test */
        px__http_header_t *h = &req->headers[i];
        h->name.ptr = at(buf, h->name);
        h->value.ptr = at(buf, h->value);
    }
    p->_state = ST_DONE;
    p->_pos = end;
    return (int)end;
}

/* One instantiation per implementation (parse_scalar/_sse42/_avx2), each with
 * its scanners. Only bytes below `end` are read; `end` is len capped by
 * max_header_bytes, so that limit holds without a separate check. The parser
 * state lives in locals (stored back when more input is needed): with
 * -fno-strict-aliasing every store into *req would otherwise reload it. */
static inline __attribute__((always_inline)) int
parse_head(px__http1_parser_t *p, const char *buf, size_t len, px__http1_request_t *req,
           size_t nmax, const px__http1_limits_t *lim, scan_fn scan_method, scan_fn scan_target,
           scan_fn scan_name, scan_fn scan_value)
{
    win_t w = {buf, buf + len, NULL, 0, 0};
    size_t end = len, pos = p->_pos, line = p->_line, mark = p->_mark, aux = p->_aux;
    size_t nh = req->num_headers, rl_room = lim->max_request_line;
    px__http_header_t *const hdrs = req->headers;
    unsigned st = p->_state;
    const char *q;
    if (end > lim->max_header_bytes)
        end = lim->max_header_bytes;
    if (end > INT_MAX)
        end = INT_MAX; /* the return type is int */

    switch (st) {
    case ST_EMPTY:
        for (;;) {
            if (pos == end)
                goto more;
            if (buf[pos] != '\r')
                break;
            if (pos + 1 == end)
                goto more;
            if (buf[pos + 1] != '\n')
                REJECT(400, "bare CR");
            if (p->_nempty == PX_HTTP1_MAX_EMPTY_LINES)
                REJECT(400, "too many empty lines before the request line");
            p->_nempty++;
            pos += 2;
        }
        if (buf[pos] == '\n')
            REJECT(400, "bare LF");
        line = mark = pos;
        st = ST_METHOD;
        /* fallthrough */
    case ST_METHOD:
    case ST_TARGET:
    request_line : {
        /* The request line must end (CR) by line + rl_room: scan no further. */
        int capped = end - line > rl_room;
        size_t stop = capped ? line + rl_room + 1 : end;
        q = st == ST_METHOD ? scan_method(&w, buf + pos, buf + stop)
                            : scan_target(&w, buf + pos, buf + stop);
        pos = (size_t)(q - buf);
        if (pos == stop) {
            if (capped)
                REJECT(414, "request line too long");
            goto more;
        }
        if (st == ST_TARGET && (*q == '?' || *q == '#')) {
            if (*q == '#')
                REJECT(400, "fragment in request target");
            if (!aux)
                aux = pos + 1;
            pos++;
            goto request_line;
        }
        if (*q != ' ') {
            if (st == ST_METHOD)
                REJECT(400, "invalid character in method");
            if (*q == '\r' || *q == '\n')
                REJECT(400, "missing HTTP version");
            REJECT(400, "invalid character in request target");
        }
        if (pos == mark)
            REJECT(400, st == ST_METHOD ? "empty method" : "empty request target");
        if (st == ST_METHOD) {
            req->method = span(mark, pos - mark);
            mark = ++pos;
            st = ST_TARGET;
            goto request_line;
        }
        req->target = span(mark, pos - mark);
        mark = ++pos;
        st = ST_VERSION;
        if (pos + 8 - line > rl_room)
            REJECT(414, "request line too long");
    }
        /* fallthrough */
    case ST_VERSION: {
        /* "HTTP/" DIGIT "." DIGIT CRLF, case-sensitive; checked as far as it
         * has arrived, so garbage fails early. */
        static const char want[] = "HTTP/1.1\r\n";
        size_t n = end - mark < 10 ? end - mark : 10;
        int usual = n == 10 && memcmp(buf + mark, "HTTP/1.", 7) == 0 &&
                    (buf[mark + 7] == '1' || buf[mark + 7] == '0') && buf[mark + 8] == '\r' &&
                    buf[mark + 9] == '\n';
        COUNT_SCANNED(n);
        for (size_t i = 0; !usual && i < n; i++) { /* name what is wrong, or wait */
            char c = buf[mark + i];
            if (i == 5 || i == 7) {
                if (c < '0' || c > '9')
                    REJECT(400, "invalid HTTP version");
                /* RFC 9110 2.5: a higher minor version of HTTP/1 is answered as
                 * 1.1; another major version cannot be (HTTP/2 and up do not
                 * use this syntax): 505. */
                if (i == 7 && buf[mark + 5] != '1')
                    REJECT(505, "HTTP version not supported");
            } else if (c != want[i]) {
                if (i == 8 && c == '\n')
                    REJECT(400, "bare LF");
                REJECT(400, i == 9 ? "bare CR" : "invalid HTTP version");
            }
        }
        if (n < 10) {
            pos = end;
            goto more;
        }
        req->minor_version = buf[mark + 7] == '0' ? 0 : 1; /* 1.2-1.9 are processed as 1.1 */
        pos = mark + 10;
        p->_aux = aux;
        int rc = check_target(p, buf, req);
        if (rc)
            return rc;
        st = ST_LINE;
    }
        /* fallthrough */
    case ST_LINE:
    field_line:
        if (pos == end)
            goto more;
        if (PX_UNLIKELY(!(cls[(unsigned char)buf[pos]] & C_TCHAR))) {
            char c = buf[pos];
            if (c == '\r') {
                if (pos + 1 == end)
                    goto more;
                if (buf[pos + 1] != '\n')
                    REJECT(400, "bare CR");
                req->num_headers = nh;
                return finish(p, buf, req, pos + 2);
            }
            if (c == '\n')
                REJECT(400, "bare LF");
            if (is_ows(c))
                REJECT(400,
                       nh ? "obsolete line folding" : "whitespace before the first field line");
            REJECT(400, c == ':' ? "empty field name" : "invalid character in field name");
        }
        if (nh >= nmax)
            REJECT(431, "too many header fields");
        line = pos++;
        st = ST_NAME;
        /* fallthrough */
    case ST_NAME:
        q = scan_name(&w, buf + pos, buf + end);
        pos = (size_t)(q - buf);
        if (pos == end)
            goto more;
        if (*q != ':') {
            if (is_ows(*q))
                REJECT(400, "whitespace between field name and colon");
            if (*q == '\r' || *q == '\n')
                REJECT(400, "field line without a colon");
            REJECT(400, "invalid character in field name");
        }
        /* headers[nh] is written only once the line is complete: while the
         * head is incomplete, the caller may copy entries [0, num_headers)
         * to another array. */
        aux = pos++;
        st = ST_OWS;
        /* fallthrough */
    case ST_OWS:
        if (pos < end && buf[pos] == ' ') /* the usual single SP */
            pos++;
        while (pos < end && is_ows(buf[pos])) {
            COUNT_SCANNED(1);
            pos++;
        }
        if (pos == end)
            goto more;
        mark = pos;
        st = ST_VALUE;
        /* fallthrough */
    case ST_VALUE: {
        q = scan_value(&w, buf + pos, buf + end);
        pos = (size_t)(q - buf);
        if (pos == end)
            goto more;
        if (*q != '\r')
            REJECT(400, *q == '\n' ? "bare LF" : "invalid character in field value");
        if (pos + 1 == end)
            goto more; /* resume at the CR */
        if (q[1] != '\n')
            REJECT(400, "bare CR");
        size_t ve = pos;
        while (ve > mark && is_ows(buf[ve - 1]))
            ve--;
        hdrs[nh].name = span(line, aux - line);
        hdrs[nh].value = span(mark, ve - mark);
        int rc = on_field(p, req, buf + line, aux - line, buf + mark, mark, ve - mark);
        if (rc)
            return rc;
        nh++;
        pos += 2;
        st = ST_LINE;
        goto field_line;
    }
    default:
        assert(0 && "px__http1_parse_request: parser not initialised");
        REJECT(500, "parser state corrupted");
    }
more:
    p->_pos = pos;
    p->_line = line;
    p->_mark = mark;
    p->_aux = aux;
    p->_state = (uint8_t)st;
    req->num_headers = nh;
    if (end == len)
        return PX_PARSE_INCOMPLETE;
    REJECT(431, "request head too large"); /* more bytes are there, past the limit */
}

static int parse_scalar(px__http1_parser_t *p, const char *buf, size_t len,
                        px__http1_request_t *req, size_t nmax, const px__http1_limits_t *lim)
{
    return parse_head(p, buf, len, req, nmax, lim, scan_token_scalar, scan_target_scalar,
                      scan_token_scalar, scan_value_scalar);
}

#ifdef PX_HTTP1_X86
/* One parse per instruction set. The request line is two scans per request, not
 * worth a window: it uses the block scanners. flatten inlines the scanners (same
 * target) into the whole parse, so one predictable branch per call selects the
 * implementation, not a call per line. */
#define DEFINE_PARSE(isa, target)                                                                  \
    target static const char *line_token_##isa(win_t *w, const char *p, const char *end)           \
    {                                                                                              \
        return scan_token_##isa(p, end, w->lo);                                                    \
    }                                                                                              \
    target static const char *line_target_##isa(win_t *w, const char *p, const char *end)          \
    {                                                                                              \
        return scan_target_##isa(p, end, w->lo);                                                   \
    }                                                                                              \
    target __attribute__((flatten)) static int parse_##isa(                                        \
        px__http1_parser_t *p, const char *buf, size_t len, px__http1_request_t *req, size_t nmax, \
        const px__http1_limits_t *lim)                                                             \
    {                                                                                              \
        return parse_head(p, buf, len, req, nmax, lim, line_token_##isa, line_target_##isa,        \
                          win_token_##isa, win_value_##isa);                                       \
    }
DEFINE_PARSE(sse42, TARGET_SSE42)
DEFINE_PARSE(avx2, TARGET_AVX2)
#endif

/* Chosen once, before main (no thread can race the write). */
static int g_impl = PX__HTTP1_IMPL_SCALAR;

static int impl_supported(int impl)
{
#ifdef PX_HTTP1_X86
    __builtin_cpu_init();
    if (impl == PX__HTTP1_IMPL_AVX2)
        return __builtin_cpu_supports("avx2");
    if (impl == PX__HTTP1_IMPL_SSE42)
        return __builtin_cpu_supports("sse4.2");
#endif
    return impl == PX__HTTP1_IMPL_SCALAR;
}

__attribute__((constructor)) static void select_impl(void)
{
    g_impl = impl_supported(PX__HTTP1_IMPL_AVX2)    ? PX__HTTP1_IMPL_AVX2
             : impl_supported(PX__HTTP1_IMPL_SSE42) ? PX__HTTP1_IMPL_SSE42
                                                    : PX__HTTP1_IMPL_SCALAR;
}

int px__http1_force_impl(int impl)
{
    if (impl == PX__HTTP1_IMPL_AUTO) {
        select_impl();
        return 0;
    }
    if (!impl_supported(impl))
        return -ENOTSUP;
    g_impl = impl;
    return 0;
}

int px__http1_impl(void)
{
    return g_impl;
}

const char *px__http1_impl_name(int impl)
{
    switch (impl) {
    case PX__HTTP1_IMPL_SCALAR: return "scalar";
    case PX__HTTP1_IMPL_SSE42: return "sse4.2";
    case PX__HTTP1_IMPL_AVX2: return "avx2";
    default: return "auto";
    }
}

void px__http1_parser_init(px__http1_parser_t *p)
{
    memset(p, 0, sizeof *p);
}

int px__http1_parse_request(px__http1_parser_t *p, const char *buf, size_t len,
                            px__http1_request_t *req, size_t headers_cap,
                            const px__http1_limits_t *lim)
{
    static const px__http1_limits_t defaults = PX_HTTP1_LIMITS_DEFAULT;
    if (!lim)
        lim = &defaults;
    size_t nmax = headers_cap < lim->max_headers ? headers_cap : lim->max_headers;
    if (p->_state == ST_NEW) {
        px__http_header_t *h = req->headers;
        memset(req, 0, sizeof *req);
        req->headers = h;
        req->content_length = -1;
        p->_state = ST_EMPTY;
    }
    if (PX_UNLIKELY(p->_state >= ST_DONE)) {
        assert(0 && "px__http1_parse_request called again without px__http1_parser_init");
        REJECT(500, "parser reused without px__http1_parser_init");
    }
    switch (g_impl) {
#ifdef PX_HTTP1_X86
    case PX__HTTP1_IMPL_AVX2: return parse_avx2(p, buf, len, req, nmax, lim);
    case PX__HTTP1_IMPL_SSE42: return parse_sse42(p, buf, len, req, nmax, lim);
#endif
    default: return parse_scalar(p, buf, len, req, nmax, lim);
    }
}

int px__http1_header_eq(px_str_t name, const char *lower_name, size_t len)
{
    if (name.len != len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name.ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lower_name[i])
            return 0;
    }
    return 1;
}

const px__http_header_t *px__http1_find_next(const px__http1_request_t *req, const char *lower_name,
                                             const px__http_header_t *prev)
{
    size_t len = strlen(lower_name);
    size_t i = prev ? (size_t)(prev - req->headers) + 1 : 0;
    for (; i < req->num_headers; i++)
        if (px__http1_header_eq(req->headers[i].name, lower_name, len))
            return &req->headers[i];
    return NULL;
}

const px__http_header_t *px__http1_find_header(const px__http1_request_t *req,
                                               const char *lower_name)
{
    return px__http1_find_next(req, lower_name, NULL);
}

/* ---- chunked decoder ------------------------------------------------------------------
 * Byte-at-a-time state machine for the framing (RFC 9112 7.1), bulk memmove for
 * chunk data. Every byte is looked at once, whatever the split between calls. */

enum {
    CS_SIZE0,     /* first hex digit of chunk-size */
    CS_SIZE,      /* more hex digits; _size so far */
    CS_SIZE_BWS,  /* BWS after the size or an extension: only ';' may follow */
    CS_EXT_BWS1,  /* after ';': BWS, then chunk-ext-name */
    CS_EXT_NAME,  /* in chunk-ext-name */
    CS_EXT_BWS2,  /* BWS after the name: '=' or ';' */
    CS_EXT_BWS3,  /* after '=': BWS, then token or quoted-string */
    CS_EXT_TOKEN, /* in a token value */
    CS_EXT_QSTR,  /* in a quoted-string value */
    CS_EXT_QESC,  /* after a backslash in it */
    CS_EXT_QEND,  /* after its closing quote */
    CS_SIZE_LF,   /* CR ended the size line */
    CS_DATA,      /* _size data bytes left */
    CS_DATA_CR,   /* CRLF after the data */
    CS_DATA_LF,
    CS_TR_LINE, /* start of a trailer field line or of the final empty line */
    CS_TR_NAME,
    CS_TR_VALUE,
    CS_TR_LF,  /* CR ended a trailer field line */
    CS_END_LF, /* CR of the final empty line */
    CS_DONE,
    CS_ERROR,
};

void px__http1_chunked_init(px__http1_chunked_t *d)
{
    memset(d, 0, sizeof *d);
    d->max_line = PX_HTTP1_CHUNK_LINE_MAX;
    d->max_trailer = PX_HTTP1_CHUNK_TRAILER_MAX;
    d->_state = CS_SIZE0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t px__http1_decode_chunked(px__http1_chunked_t *d, char *buf, size_t *len)
{
    size_t n = *len, src = 0, dst = 0;
    unsigned st = d->_state;
    const char *why;

    if (st >= CS_DONE) {
        why = "decoder used after the end of the body";
        goto error;
    }
    while (src < n) {
        if (st == CS_DATA) {
            size_t take = n - src;
            if (d->_size < take)
                take = (size_t)d->_size;
            if (dst != src)
                memmove(buf + dst, buf + src, take);
            dst += take;
            src += take;
            d->_size -= take;
            if (d->_size == 0)
                st = CS_DATA_CR;
            continue;
        }
        unsigned char c = (unsigned char)buf[src++];
        unsigned cc = cls[c];
        if (st < CS_SIZE_LF && c != '\r' && ++d->_count > d->max_line) {
            why = "chunk-size line too long";
            goto error;
        }
        if (st >= CS_TR_LINE && ++d->_count > d->max_trailer) {
            why = "trailer section too large";
            goto error;
        }
        switch (st) {
        case CS_SIZE0:
        case CS_SIZE: {
            int h = hexval(c);
            if (h >= 0) {
                /* _size * 16 + 15 must stay <= INT64_MAX */
                if (d->_size > (uint64_t)INT64_MAX >> 4) {
                    why = "chunk size too large";
                    goto error;
                }
                d->_size = d->_size << 4 | (unsigned)h;
                st = CS_SIZE;
                continue;
            }
            if (st == CS_SIZE0) {
                why = "invalid chunk size";
                goto error;
            }
            if (c == '\r')
                st = CS_SIZE_LF;
            else if (c == ';')
                st = CS_EXT_BWS1;
            else if (is_ows((char)c))
                st = CS_SIZE_BWS;
            else {
                why = c == '\n' ? "bare LF in chunk-size line" : "invalid chunk size";
                goto error;
            }
            continue;
        }
        case CS_SIZE_BWS:
            if (c == ';')
                st = CS_EXT_BWS1;
            else if (!is_ows((char)c))
                goto bad_ext;
            continue;
        case CS_EXT_BWS1:
            if (cc & C_TCHAR)
                st = CS_EXT_NAME;
            else if (!is_ows((char)c))
                goto bad_ext;
            continue;
        case CS_EXT_NAME:
        case CS_EXT_TOKEN:
            if (cc & C_TCHAR)
                continue;
            if (c == '\r')
                st = CS_SIZE_LF;
            else if (c == ';')
                st = CS_EXT_BWS1;
            else if (c == '=' && st == CS_EXT_NAME)
                st = CS_EXT_BWS3;
            else if (is_ows((char)c))
                st = st == CS_EXT_NAME ? CS_EXT_BWS2 : CS_SIZE_BWS;
            else
                goto bad_ext;
            continue;
        case CS_EXT_BWS2:
            if (c == '=')
                st = CS_EXT_BWS3;
            else if (c == ';')
                st = CS_EXT_BWS1;
            else if (!is_ows((char)c))
                goto bad_ext;
            continue;
        case CS_EXT_BWS3:
            if (cc & C_TCHAR)
                st = CS_EXT_TOKEN;
            else if (c == '"')
                st = CS_EXT_QSTR;
            else if (!is_ows((char)c))
                goto bad_ext;
            continue;
        case CS_EXT_QSTR: /* qdtext: HTAB, SP, VCHAR except '"' and '\\', obs-text */
            if (c == '"')
                st = CS_EXT_QEND;
            else if (c == '\\')
                st = CS_EXT_QESC;
            else if (!(cc & C_VALUE))
                goto bad_ext;
            continue;
        case CS_EXT_QESC: /* quoted-pair: HTAB, SP, VCHAR, obs-text */
            if (!(cc & C_VALUE))
                goto bad_ext;
            st = CS_EXT_QSTR;
            continue;
        case CS_EXT_QEND:
            if (c == '\r')
                st = CS_SIZE_LF;
            else if (c == ';')
                st = CS_EXT_BWS1;
            else if (is_ows((char)c))
                st = CS_SIZE_BWS;
            else
                goto bad_ext;
            continue;
        case CS_SIZE_LF:
            if (c != '\n') {
                why = "bare CR in chunk-size line";
                goto error;
            }
            d->_count = 0;
            st = d->_size ? CS_DATA : CS_TR_LINE;
            continue;
        case CS_DATA_CR:
            if (c != '\r') {
                why = "chunk data not followed by CRLF";
                goto error;
            }
            st = CS_DATA_LF;
            continue;
        case CS_DATA_LF:
            if (c != '\n') {
                why = "chunk data not followed by CRLF";
                goto error;
            }
            st = CS_SIZE0;
            continue;
        case CS_TR_LINE:
            if (c == '\r')
                st = CS_END_LF;
            else if (cc & C_TCHAR)
                st = CS_TR_NAME;
            else {
                why = c == '\n'                         ? "bare LF in trailer section"
                      : cc & C_VALUE && is_ows((char)c) ? "obsolete line folding in trailer section"
                                                        : "invalid trailer field";
                goto error;
            }
            continue;
        case CS_TR_NAME:
            if (c == ':')
                st = CS_TR_VALUE;
            else if (!(cc & C_TCHAR)) {
                why = is_ows((char)c) ? "whitespace between trailer field name and colon"
                                      : "invalid trailer field";
                goto error;
            }
            continue;
        case CS_TR_VALUE:
            if (c == '\r')
                st = CS_TR_LF;
            else if (!(cc & C_VALUE)) {
                why = c == '\n' ? "bare LF in trailer section" : "invalid trailer field";
                goto error;
            }
            continue;
        case CS_TR_LF:
        case CS_END_LF:
            if (c != '\n') {
                why = "bare CR in trailer section";
                goto error;
            }
            if (st == CS_END_LF) {
                size_t rest = n - src;
                if (rest && dst != src)
                    memmove(buf + dst, buf + src, rest);
                d->_state = CS_DONE;
                *len = dst;
                return (ssize_t)rest;
            }
            st = CS_TR_LINE;
            continue;
        default:
            assert(0 && "unreachable chunked state");
            why = "internal error";
            goto error;
        }
    }
    d->_state = (uint8_t)st;
    *len = dst;
    return PX_PARSE_INCOMPLETE;

bad_ext:
    why = "invalid chunk extension";
error:
    d->_state = CS_ERROR;
    d->error = why;
    *len = dst;
    return PX_PARSE_ERROR;
}
