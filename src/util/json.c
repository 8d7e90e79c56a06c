/* JSON tokenizer, lookups and writer (see json.h). The tokenizer is a flat state machine
 * with an explicit bit stack instead of recursion, so nesting depth costs no C stack and
 * the depth bound is the caller's choice. */
#include "plexus/json.h"
#include "util/utf8.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

#define NO_PARENT UINT32_MAX

/* ---- byte classes --------------------------------------------------------------- */

/* Bytes that end a fast run inside a string: '"', '\\', controls and non-ASCII. A table
 * beats the four comparisons in the byte-at-a-time tail of every string. */
static const uint8_t str_special[256] = {
    [0x00 ... 0x1F] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x80 ... 0xFF] = 1,
};

static inline int is_str_special(unsigned c)
{
    return str_special[c & 0xFF];
}

/* Nonzero if any of the 8 bytes is special (exact as a boolean: a borrow can only spill
 * into a higher byte after a lower byte already tested positive). */
static inline uint64_t swar_special(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    uint64_t lt20 = (v - ones * 0x20) & ~v;
    uint64_t zq = (q - ones) & ~q, zb = (b - ones) & ~b;
    return (lt20 | zq | zb | v) & high;
}

static inline int hexval(unsigned c)
{
    if (c - '0' < 10)
        return (int)(c - '0');
    c |= 0x20;
    if (c - 'a' < 6)
        return (int)(c - 'a' + 10);
    return -1;
}

/* Four hex digits at p (caller checked the length), or -1. */
static inline long hex4(const unsigned char *p)
{
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return (long)((a << 12) | (b << 8) | (c << 4) | d);
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    /* Compact frames have no whitespace: one compare settles the common case. */
    if (PX_LIKELY(p<end && * p> ' '))
        return p;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline int is_digit(unsigned c)
{
    return c - '0' < 10;
}

/* ---- tokenizer ------------------------------------------------------------------- */

/* Scans a string body. `p` is just after the opening quote. Returns a pointer to the
 * closing quote, or NULL with *msg / *errp describing the problem. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                        uint8_t *flags, const char **msg,
                                        const unsigned char **errp)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if (swar_special(v))
                break;
            p += 8;
        }
        while (p < end && !is_str_special(*p))
            p++;
        if (PX_UNLIKELY(p == end)) {
            *msg = "unterminated string";
            return NULL;
        }
        unsigned c = *p;
        if (c == '"')
            return p;
        if (c == '\\') {
            *flags |= PX_JSON_F_ESCAPED;
            if (end - p < 2) {
                *msg = "unterminated string";
                return NULL;
            }
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't': p += 2; continue;
            case 'u': break;
            default:
                *errp = p;
                *msg = "invalid escape in string";
                return NULL;
            }
            long cp = end - p >= 6 ? hex4(p + 2) : -1;
            if (cp < 0) {
                *errp = p;
                *msg = "invalid \\u escape in string";
                return NULL;
            }
            const unsigned char *esc = p;
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                long lo = -1;
                if (cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u')
                    lo = hex4(p + 2);
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    *errp = esc;
                    *msg = "lone surrogate in \\u escape";
                    return NULL;
                }
                p += 6;
            }
            continue;
        }
        if (c < 0x20) {
            *errp = p;
            *msg = "control character in string";
            return NULL;
        }
        const unsigned char *q = px__utf8_seq(p, end);
        if (!q) {
            *errp = p;
            *msg = "invalid UTF-8 in string";
            return NULL;
        }
        p = q;
    }
}

static int fail(px_json_doc_t *doc, px_json_err_t err, const char *msg, size_t off, uint32_t n)
{
    doc->err = err;
    doc->err_msg = msg;
    doc->err_off = (uint32_t)off;
    doc->ntoks = n;
    return PX_PARSE_ERROR;
}

int px_json_parse(px_json_doc_t *doc, const char *src, size_t len, px_json_tok_t *toks,
                  uint32_t cap, uint32_t max_depth)
{
    const unsigned char *const base = (const unsigned char *)src;
    const unsigned char *p = base, *end;
    /* Bit d set = the container open at depth d (0-based) is an object. */
    uint64_t is_obj[PX_JSON_MAX_DEPTH / 64];
    /* Invariant: `parent` is the innermost open container (NO_PARENT at top level) and
     * every open container's `next` field temporarily holds its own parent's index;
     * closing restores the real `next`. Only meaningful when toks != NULL. */
    uint32_t parent = NO_PARENT, depth = 0, n = 0, idx;
    bool in_obj = false;
    const char *msg;
    const unsigned char *errp;
    uint8_t flags;

    doc->src = src;
    doc->toks = toks;
    doc->cap = toks ? (cap > INT32_MAX ? INT32_MAX : cap) : 0;
    doc->ntoks = 0;
    doc->err = PX_JSON_OK;
    doc->err_off = 0;
    doc->err_msg = NULL;
    doc->len = 0;
    if (PX_UNLIKELY(len > PX_JSON_MAX_LEN))
        return fail(doc, PX_JSON_E_TOO_LARGE, "input too large", 0, 0);
    doc->len = (uint32_t)len;
    cap = doc->cap;
    if (max_depth == 0)
        max_depth = PX_JSON_DEFAULT_DEPTH;
    if (max_depth > PX_JSON_MAX_DEPTH)
        max_depth = PX_JSON_MAX_DEPTH;
    end = base + len;

    p = skip_ws(p, end);
    if (p == end)
        return fail(doc, PX_JSON_E_SYNTAX, "empty input", (size_t)(p - base), 0);

value:
    p = skip_ws(p, end);
    if (PX_UNLIKELY(p == end))
        return fail(doc, PX_JSON_E_SYNTAX, "unexpected end of input, expected a value",
                    (size_t)(p - base), n);
    if (toks) {
        if (PX_UNLIKELY(n >= cap))
            return fail(doc, PX_JSON_E_TOKENS, "too many tokens", (size_t)(p - base), n);
        if (depth && !in_obj)
            toks[parent].size++;
    }
    idx = n++;
    switch (*p) {
    case '{':
    case '[':
        if (PX_UNLIKELY(depth >= max_depth))
            return fail(doc, PX_JSON_E_DEPTH, "nesting too deep", (size_t)(p - base), n - 1);
        in_obj = *p == '{';
        if (toks)
            toks[idx] = (px_json_tok_t){.start = (uint32_t)(p - base),
                                        .next = parent,
                                        .type = in_obj ? PX_JSON_OBJECT : PX_JSON_ARRAY};
        parent = idx;
        if (in_obj)
            is_obj[depth / 64] |= 1ull << (depth % 64);
        else
            is_obj[depth / 64] &= ~(1ull << (depth % 64));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == (in_obj ? '}' : ']'))
            goto close;
        if (in_obj)
            goto key;
        goto value;
    case '"':
        flags = 0;
        errp = p;
        {
            const unsigned char *q = scan_string(p + 1, end, &flags, &msg, &errp);
            if (PX_UNLIKELY(!q))
                return fail(doc, PX_JSON_E_SYNTAX, msg, (size_t)(errp - base), n - 1);
            if (toks)
                toks[idx] = (px_json_tok_t){.start = (uint32_t)(p + 1 - base),
                                            .end = (uint32_t)(q - base),
                                            .next = idx + 1,
                                            .type = PX_JSON_STRING,
                                            .flags = flags};
            p = q + 1;
        }
        goto after;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9': {
        const unsigned char *s = p;
        flags = PX_JSON_F_INT;
        if (*p == '-') {
            flags |= PX_JSON_F_NEG;
            p++;
        }
        if (p == end || !is_digit(*p))
            return fail(doc, PX_JSON_E_SYNTAX, "invalid number", (size_t)(s - base), n - 1);
        if (*p == '0') {
            p++;
            if (p < end && is_digit(*p))
                return fail(doc, PX_JSON_E_SYNTAX, "leading zero in number", (size_t)(s - base),
                            n - 1);
        } else {
            while (p < end && is_digit(*p))
                p++;
        }
        if (p < end && *p == '.') {
            p++;
            if (p == end || !is_digit(*p))
                return fail(doc, PX_JSON_E_SYNTAX, "expected digit after '.' in number",
                            (size_t)(p - base), n - 1);
            while (p < end && is_digit(*p))
                p++;
            flags &= (uint8_t)~PX_JSON_F_INT;
        }
        if (p < end && (*p | 0x20) == 'e') {
            p++;
            if (p < end && (*p == '+' || *p == '-'))
                p++;
            if (p == end || !is_digit(*p))
                return fail(doc, PX_JSON_E_SYNTAX, "expected digit in exponent", (size_t)(p - base),
                            n - 1);
            while (p < end && is_digit(*p))
                p++;
            flags &= (uint8_t)~PX_JSON_F_INT;
        }
        if (toks)
            toks[idx] = (px_json_tok_t){.start = (uint32_t)(s - base),
                                        .end = (uint32_t)(p - base),
                                        .next = idx + 1,
                                        .type = PX_JSON_NUMBER,
                                        .flags = flags};
        goto after;
    }
    case 't':
    case 'f':
    case 'n': {
        static const struct {
            const char *text;
            uint8_t len, type;
        } lits[] = {
            {"true", 4, PX_JSON_TRUE}, {"false", 5, PX_JSON_FALSE}, {"null", 4, PX_JSON_NULL}};
        unsigned k = *p == 't' ? 0 : *p == 'f' ? 1 : 2;
        if ((size_t)(end - p) < lits[k].len || memcmp(p, lits[k].text, lits[k].len) != 0)
            return fail(doc, PX_JSON_E_SYNTAX, "invalid literal", (size_t)(p - base), n - 1);
        if (toks)
            toks[idx] = (px_json_tok_t){.start = (uint32_t)(p - base),
                                        .end = (uint32_t)(p - base) + lits[k].len,
                                        .next = idx + 1,
                                        .type = lits[k].type};
        p += lits[k].len;
        goto after;
    }
    default:
        /* Reaching a closer here means it followed a comma (an empty container is
         * handled when it opens). */
        if (*p == ']' && depth && !in_obj)
            msg = "trailing comma in array";
        else if (*p == '}' || *p == ']' || *p == ',')
            msg = "expected a value";
        else
            msg = "unexpected character";
        return fail(doc, PX_JSON_E_SYNTAX, msg, (size_t)(p - base), n - 1);
    }

after:
    if (depth == 0)
        goto done;
    p = skip_ws(p, end);
    if (PX_UNLIKELY(p == end))
        return fail(doc, PX_JSON_E_SYNTAX,
                    in_obj ? "unexpected end of input in object"
                           : "unexpected end of input in array",
                    (size_t)(p - base), n);
    if (*p == ',') {
        p++;
        if (in_obj)
            goto key;
        goto value;
    }
    if (PX_UNLIKELY(*p != (in_obj ? '}' : ']')))
        return fail(doc, PX_JSON_E_SYNTAX, in_obj ? "expected ',' or '}'" : "expected ',' or ']'",
                    (size_t)(p - base), n);
close:
    /* p is at the closer of container `parent`. */
    if (toks) {
        px_json_tok_t *t = &toks[parent];
        uint32_t up = t->next;
        t->next = n;
        t->end = (uint32_t)(p - base) + 1;
        parent = up;
    }
    depth--;
    in_obj = depth && (is_obj[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;
    p++;
    goto after;

key:
    p = skip_ws(p, end);
    if (PX_UNLIKELY(p == end))
        return fail(doc, PX_JSON_E_SYNTAX, "unexpected end of input in object", (size_t)(p - base),
                    n);
    if (PX_UNLIKELY(*p != '"'))
        return fail(doc, PX_JSON_E_SYNTAX,
                    *p == '}' ? "trailing comma in object" : "expected string key",
                    (size_t)(p - base), n);
    if (toks) {
        if (PX_UNLIKELY(n >= cap))
            return fail(doc, PX_JSON_E_TOKENS, "too many tokens", (size_t)(p - base), n);
        toks[parent].size++;
    }
    idx = n++;
    flags = 0;
    errp = p;
    {
        const unsigned char *q = scan_string(p + 1, end, &flags, &msg, &errp);
        if (PX_UNLIKELY(!q))
            return fail(doc, PX_JSON_E_SYNTAX, msg, (size_t)(errp - base), n - 1);
        if (toks)
            toks[idx] = (px_json_tok_t){.start = (uint32_t)(p + 1 - base),
                                        .end = (uint32_t)(q - base),
                                        .next = idx + 1,
                                        .type = PX_JSON_STRING,
                                        .flags = flags};
        p = skip_ws(q + 1, end);
    }
    if (PX_UNLIKELY(p == end || *p != ':'))
        return fail(doc, PX_JSON_E_SYNTAX, "expected ':' after object key", (size_t)(p - base), n);
    p++;
    goto value;

done:
    p = skip_ws(p, end);
    if (PX_UNLIKELY(p != end))
        return fail(doc, PX_JSON_E_SYNTAX, "unexpected data after the JSON value",
                    (size_t)(p - base), n);
    doc->ntoks = n;
    return (int)len;
}

int px_json_format_error(const px_json_doc_t *doc, char *buf, size_t cap)
{
    if (doc->err == PX_JSON_OK)
        return snprintf(buf, cap, "ok");
    return snprintf(buf, cap, "%s at byte %u", doc->err_msg ? doc->err_msg : "error",
                    (unsigned)doc->err_off);
}

/* ---- reading values ---------------------------------------------------------------- */

static inline int valid_tok(const px_json_doc_t *doc, int tok)
{
    return doc->toks && tok >= 0 && (uint32_t)tok < doc->ntoks;
}

/* Decodes one escape at p (just after the backslash) into utf8[]; returns its byte count
 * and advances *pp past the escape. Input was validated by the tokenizer. */
static size_t decode_escape(const unsigned char **pp, const unsigned char *end, char utf8[4])
{
    const unsigned char *p = *pp;
    unsigned long cp;
    switch (*p) {
    case 'b': utf8[0] = '\b'; break;
    case 'f': utf8[0] = '\f'; break;
    case 'n': utf8[0] = '\n'; break;
    case 'r': utf8[0] = '\r'; break;
    case 't': utf8[0] = '\t'; break;
    case 'u':
        cp = (unsigned long)hex4(p + 1);
        p += 5;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)hex4(p + 2) - 0xDC00);
            p += 6;
        }
        *pp = p;
        if (cp < 0x80) {
            utf8[0] = (char)cp;
            return 1;
        }
        if (cp < 0x800) {
            utf8[0] = (char)(0xC0 | (cp >> 6));
            utf8[1] = (char)(0x80 | (cp & 0x3F));
            return 2;
        }
        if (cp < 0x10000) {
            utf8[0] = (char)(0xE0 | (cp >> 12));
            utf8[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            utf8[2] = (char)(0x80 | (cp & 0x3F));
            return 3;
        }
        utf8[0] = (char)(0xF0 | (cp >> 18));
        utf8[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        utf8[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        utf8[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
    default: /* '"', '\\', '/' */ utf8[0] = (char)*p; break;
    }
    *pp = p + 1;
    return 1;
}

int px_json_streq(const px_json_doc_t *doc, int tok, const char *s, size_t n)
{
    if (!valid_tok(doc, tok) || doc->toks[tok].type != PX_JSON_STRING)
        return 0;
    const px_json_tok_t *t = &doc->toks[tok];
    const unsigned char *p = (const unsigned char *)doc->src + t->start;
    const unsigned char *end = (const unsigned char *)doc->src + t->end;
    if (!(t->flags & PX_JSON_F_ESCAPED))
        return (size_t)(end - p) == n && memcmp(p, s, n) == 0;
    /* Decoded text is never longer than the raw text. */
    if (n > (size_t)(end - p))
        return 0;
    size_t i = 0;
    while (p < end) {
        if (*p != '\\') {
            if (i == n || (unsigned char)s[i] != *p)
                return 0;
            i++;
            p++;
            continue;
        }
        char u[4];
        p++;
        size_t k = decode_escape(&p, end, u);
        if (n - i < k || memcmp(s + i, u, k) != 0)
            return 0;
        i += k;
    }
    return i == n;
}

static int lookup(const px_json_doc_t *doc, int obj, const char *const *keys, const size_t *lens,
                  size_t nkeys, int *out, size_t *dup)
{
    if (!valid_tok(doc, obj) || doc->toks[obj].type != PX_JSON_OBJECT)
        return -EINVAL;
    for (size_t j = 0; j < nkeys; j++)
        out[j] = -ENOENT;
    const px_json_tok_t *toks = doc->toks;
    uint32_t k = (uint32_t)obj + 1;
    for (uint32_t m = 0; m < toks[obj].size; m++) {
        const px_json_tok_t *kt = &toks[k];
        size_t rawlen = kt->end - kt->start;
        for (size_t j = 0; j < nkeys; j++) {
            /* Raw length >= decoded length, equal without escapes: cheap pre-filter. */
            if (kt->flags & PX_JSON_F_ESCAPED ? rawlen < lens[j] : rawlen != lens[j])
                continue;
            if (!px_json_streq(doc, (int)k, keys[j], lens[j]))
                continue;
            if (out[j] >= 0) {
                if (dup)
                    *dup = j;
                return -EEXIST;
            }
            out[j] = (int)k + 1;
            break;
        }
        k = toks[k + 1].next;
    }
    return 0;
}

int px_json_get(const px_json_doc_t *doc, int obj, const char *key)
{
    size_t len = strlen(key);
    int v;
    int rc = lookup(doc, obj, &key, &len, 1, &v, NULL);
    return rc < 0 ? rc : v;
}

int px_json_get_keys(const px_json_doc_t *doc, int obj, const char *const *keys, size_t nkeys,
                     int *out, size_t *dup)
{
    size_t lens[32];
    if (nkeys > PX_ARRAY_SIZE(lens))
        return -EINVAL;
    for (size_t j = 0; j < nkeys; j++)
        lens[j] = strlen(keys[j]);
    return lookup(doc, obj, keys, lens, nkeys, out, dup);
}

/* Magnitude of an integer token, saturating just above `limit` is not needed: returns
 * -ERANGE once the value exceeds `limit`. */
static int int_magnitude(const px_json_doc_t *doc, int tok, uint64_t limit, uint64_t *mag,
                         bool *neg)
{
    if (!valid_tok(doc, tok))
        return -EINVAL;
    const px_json_tok_t *t = &doc->toks[tok];
    if (t->type != PX_JSON_NUMBER || !(t->flags & PX_JSON_F_INT))
        return -EINVAL;
    const char *p = doc->src + t->start, *end = doc->src + t->end;
    *neg = *p == '-';
    p += *neg;
    uint64_t v = 0;
    for (; p < end; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *mag = v;
    return 0;
}

int px_json_get_i64(const px_json_doc_t *doc, int tok, int64_t *out)
{
    uint64_t mag;
    bool neg;
    int rc = int_magnitude(doc, tok, (uint64_t)INT64_MAX + 1, &mag, &neg);
    if (rc < 0)
        return rc;
    if (neg)
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else if (mag > INT64_MAX)
        return -ERANGE;
    else
        *out = (int64_t)mag;
    return 0;
}

int px_json_get_u64(const px_json_doc_t *doc, int tok, uint64_t *out)
{
    uint64_t mag;
    bool neg;
    int rc = int_magnitude(doc, tok, UINT64_MAX, &mag, &neg);
    if (rc < 0)
        return rc;
    if (neg && mag != 0)
        return -ERANGE;
    *out = mag;
    return 0;
}

int px_json_get_bool(const px_json_doc_t *doc, int tok, bool *out)
{
    if (!valid_tok(doc, tok))
        return -EINVAL;
    uint8_t type = doc->toks[tok].type;
    if (type != PX_JSON_TRUE && type != PX_JSON_FALSE)
        return -EINVAL;
    *out = type == PX_JSON_TRUE;
    return 0;
}

int px_json_unescape(const px_json_doc_t *doc, int tok, char *buf, size_t cap)
{
    if (!valid_tok(doc, tok) || doc->toks[tok].type != PX_JSON_STRING)
        return -EINVAL;
    const px_json_tok_t *t = &doc->toks[tok];
    const unsigned char *p = (const unsigned char *)doc->src + t->start;
    const unsigned char *end = (const unsigned char *)doc->src + t->end;
    size_t n = 0;
    if (!(t->flags & PX_JSON_F_ESCAPED)) {
        n = (size_t)(end - p);
        if (n >= cap)
            return -ENOSPC;
        memcpy(buf, p, n);
    } else {
        while (p < end) {
            const unsigned char *run = p;
            while (p < end && *p != '\\')
                p++;
            size_t k = (size_t)(p - run);
            if (k >= cap - n)
                return -ENOSPC;
            memcpy(buf + n, run, k);
            n += k;
            if (p == end)
                break;
            char u[4];
            p++;
            k = decode_escape(&p, end, u);
            if (k >= cap - n)
                return -ENOSPC;
            memcpy(buf + n, u, k);
            n += k;
        }
        if (n >= cap)
            return -ENOSPC;
    }
    buf[n] = '\0';
    return (int)n;
}

/* ---- writer ---------------------------------------------------------------------- */

void px_json_writer_init(px_json_writer_t *w, char *buf, size_t cap)
{
    *w = (px_json_writer_t){.buf = buf, .cap = cap};
}

void px_json_writer_init_growable(px_json_writer_t *w, size_t limit)
{
    *w = (px_json_writer_t){.limit = limit};
    if (limit == 0)
        w->err = -ENOSPC;
}

void px_json_writer_dispose(px_json_writer_t *w)
{
    if (!w)
        return;
    if (w->limit)
        px__free(w->buf);
    *w = (px_json_writer_t){0};
}

/* Makes room for n more bytes; returns 0 or sets the sticky error. */
static int reserve(px_json_writer_t *w, size_t n)
{
    if (PX_LIKELY(w->cap - w->len >= n))
        return 0;
    if (w->err)
        return w->err;
    if (!w->limit || n > w->limit - w->len) {
        w->err = -ENOSPC;
        return w->err;
    }
    size_t want = w->len + n, ncap = w->cap ? w->cap : 256;
    while (ncap < want)
        ncap = ncap > w->limit / 2 ? w->limit : ncap * 2;
    if (ncap > w->limit)
        ncap = w->limit;
    char *nb = px__realloc(w->buf, ncap);
    if (!nb) {
        w->err = -ENOMEM;
        return w->err;
    }
    w->buf = nb;
    w->cap = ncap;
    return 0;
}

void px_json_put_raw(px_json_writer_t *w, const void *p, size_t n)
{
    /* Once failed, stay failed even if a later small put would fit: the frame is lost. */
    if (w->err || reserve(w, n) < 0)
        return;
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void px_json_put_str(px_json_writer_t *w, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)str, *end = p + n;
    px_json_put_raw(w, "\"", 1);
    while (p < end && !w->err) {
        const unsigned char *run = p;
        while (p < end && !is_str_special(*p))
            p++;
        /* Valid multi-byte sequences extend the run: they need no escaping. */
        while (p < end && *p >= 0x80) {
            const unsigned char *q = px__utf8_seq(p, end);
            if (!q)
                break;
            p = q;
            while (p < end && !is_str_special(*p))
                p++;
        }
        px_json_put_raw(w, run, (size_t)(p - run));
        if (p == end)
            break;
        unsigned c = *p++;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"':
        case '\\': e[1] = (char)c; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            if (c >= 0x80) { /* invalid UTF-8 byte */
                px_json_put_raw(w, "\xEF\xBF\xBD", 3);
                continue;
            }
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            k = 6;
            break;
        }
        px_json_put_raw(w, e, k);
    }
    px_json_put_raw(w, "\"", 1);
}

void px_json_put_u64(px_json_writer_t *w, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    px_json_put_raw(w, tmp + i, sizeof tmp - i);
}

void px_json_put_i64(px_json_writer_t *w, int64_t v)
{
    if (v < 0) {
        px_json_put_raw(w, "-", 1);
        /* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
        px_json_put_u64(w, 0 - (uint64_t)v);
        return;
    }
    px_json_put_u64(w, (uint64_t)v);
}
