/* permessage-deflate (RFC 7692): offer negotiation and per-connection zlib streams. */
#include "ws/ws_deflate.h"

#include <limits.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "core/alloc.h"

/* ---- negotiation ---------------------------------------------------------------- */

/* tchar (RFC 7230 3.2.6), the characters of an HTTP token. */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

typedef struct cursor {
    const char *p, *end;
} cursor_t;

static void skip_ows(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int peek(const cursor_t *c)
{
    return c->p < c->end ? (unsigned char)*c->p : -1;
}

static int parse_token(cursor_t *c, px_str_t *tok)
{
    const char *s = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    tok->ptr = s;
    tok->len = (size_t)(c->p - s);
    return tok->len ? 0 : -1;
}

/* A parameter value is only ever compared against short digit strings, so it is
 * unescaped into a small buffer; a longer value is kept as "too long" (vlen set
 * past the buffer), which no check accepts. */
#define VALUE_MAX 8

static int parse_value(cursor_t *c, char *buf, size_t *vlen)
{
    *vlen = 0;
    if (peek(c) != '"') {
        px_str_t tok;
        if (parse_token(c, &tok) != 0)
            return -1;
        if (tok.len <= VALUE_MAX)
            memcpy(buf, tok.ptr, tok.len);
        *vlen = tok.len;
        return 0;
    }
    c->p++;
    for (;;) {
        if (c->p >= c->end)
            return -1; /* unterminated */
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"')
            return 0;
        if (ch == '\\') {
            if (c->p >= c->end)
                return -1;
            ch = (unsigned char)*c->p++;
            if (ch != '\t' && (ch < 0x20 || ch == 0x7F))
                return -1; /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
        } else if (ch != '\t' && (ch < 0x20 || ch == 0x7F)) {
            return -1; /* qdtext */
        }
        if (*vlen < VALUE_MAX)
            buf[*vlen] = (char)ch;
        (*vlen)++;
    }
}

static int name_is(px_str_t tok, const char *name)
{
    size_t n = strlen(name);
    return tok.len == n && strncasecmp(tok.ptr, name, n) == 0;
}

/* Window bits: "a decimal integer value without leading zeroes between 8 and 15,
 * inclusive" (RFC 7692 7.1.2.1). Returns 8..15 or 0. */
static unsigned parse_bits(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return (unsigned)(v[0] - '0');
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10u + (unsigned)(v[1] - '0');
    return 0;
}

/* One permessage-deflate offer. */
typedef struct offer {
    unsigned seen_snct : 1, seen_cnct : 1, seen_smwb : 1, seen_cmwb : 1;
    unsigned invalid : 1; /* decline it (RFC 7692 5, 7) */
    unsigned smwb;        /* server_max_window_bits, valid if seen_smwb */
    unsigned cmwb;        /* client_max_window_bits value, 0 if given without one */
} offer_t;

static void offer_param(offer_t *o, px_str_t name, int has_value, const char *v, size_t vlen)
{
    if (name_is(name, "server_no_context_takeover")) {
        if (o->seen_snct || has_value)
            o->invalid = 1;
        o->seen_snct = 1;
    } else if (name_is(name, "client_no_context_takeover")) {
        if (o->seen_cnct || has_value)
            o->invalid = 1;
        o->seen_cnct = 1;
    } else if (name_is(name, "server_max_window_bits")) {
        if (o->seen_smwb || !has_value || !(o->smwb = parse_bits(v, vlen)))
            o->invalid = 1;
        o->seen_smwb = 1;
    } else if (name_is(name, "client_max_window_bits")) {
        if (o->seen_cmwb || (has_value && !(o->cmwb = parse_bits(v, vlen))))
            o->invalid = 1;
        o->seen_cmwb = 1;
    } else {
        o->invalid = 1; /* "an extension parameter not defined for use in an offer" */
    }
}

/* Parse one field value; the first acceptable offer lands in *chosen. Returns 0,
 * or -1 on a syntax error. */
static int parse_field(px_str_t value, offer_t *chosen, int *have)
{
    cursor_t c = {value.ptr, value.ptr + value.len};
    for (;;) {
        /* 1#element allows empty elements: ", ," (RFC 7230 7). */
        skip_ows(&c);
        if (peek(&c) == ',') {
            c.p++;
            continue;
        }
        if (peek(&c) < 0)
            return 0;
        px_str_t ext;
        if (parse_token(&c, &ext) != 0)
            return -1;
        int pmd = name_is(ext, "permessage-deflate");
        offer_t o = {0};
        for (;;) {
            skip_ows(&c);
            if (peek(&c) != ';')
                break;
            c.p++;
            skip_ows(&c);
            px_str_t name;
            if (parse_token(&c, &name) != 0)
                return -1;
            skip_ows(&c);
            char v[VALUE_MAX];
            size_t vlen = 0;
            int has_value = 0;
            if (peek(&c) == '=') {
                c.p++;
                skip_ows(&c);
                if (parse_value(&c, v, &vlen) != 0)
                    return -1;
                has_value = 1;
            }
            if (pmd)
                offer_param(&o, name, has_value, v, vlen);
        }
        int next = peek(&c);
        if (next >= 0 && next != ',')
            return -1;
        if (pmd && !o.invalid && !*have) {
            *chosen = o;
            *have = 1;
        }
    }
}

static unsigned min_u(unsigned a, unsigned b)
{
    return a < b ? a : b;
}

int px__ws_deflate_negotiate(const px__ws_deflate_config_t *cfg, const px_str_t *values, size_t n,
                             char *out, size_t out_cap, size_t *out_len,
                             px__ws_deflate_params_t *params)
{
    unsigned cfg_s = cfg->server_max_window_bits ? cfg->server_max_window_bits : 15;
    unsigned cfg_c = cfg->client_max_window_bits ? cfg->client_max_window_bits : 15;
    if (cfg_s < 8 || cfg_s > 15 || cfg_c < 8 || cfg_c > 15 || cfg->level < -1 || cfg->level > 9 ||
        cfg->mem_level > 9)
        return -EINVAL;
    if (!cfg->enabled)
        return 0;

    offer_t o = {0};
    int have = 0;
    for (size_t i = 0; i < n; i++)
        if (parse_field(values[i], &o, &have) != 0)
            return -EBADMSG;
    if (!have)
        return 0;

    px__ws_deflate_params_t p = {0};
    /* An offered server_no_context_takeover binds us; we may add it anyway. */
    p.server_no_context_takeover = o.seen_snct || cfg->server_no_context_takeover;
    p.client_no_context_takeover = cfg->request_client_no_context_takeover ||
                                   (o.seen_cnct && cfg->accept_client_no_context_takeover);
    /* server_max_window_bits: answer with at most the offered value; without an
     * offer we may still announce our own smaller window. */
    int send_s = o.seen_smwb || cfg_s < 15;
    p.server_max_window_bits = (uint8_t)(o.seen_smwb ? min_u(o.smwb, cfg_s) : cfg_s);
    /* client_max_window_bits: only if offered (7.1.2.2). An offered value is just
     * a hint (without an answer the client may use 15), so answer it explicitly. */
    int send_c = 0;
    p.client_max_window_bits = 15;
    if (o.seen_cmwb) {
        unsigned v = o.cmwb ? min_u(o.cmwb, cfg_c) : cfg_c;
        send_c = v < 15 || o.cmwb != 0;
        p.client_max_window_bits = (uint8_t)v;
    }
    p.level = cfg->level;
    p.mem_level = cfg->mem_level ? cfg->mem_level : 8;

    char sw[32] = "", cw[32] = "";
    if (send_s)
        snprintf(sw, sizeof sw, "; server_max_window_bits=%u", (unsigned)p.server_max_window_bits);
    if (send_c)
        snprintf(cw, sizeof cw, "; client_max_window_bits=%u", (unsigned)p.client_max_window_bits);
    int len = snprintf(out, out_cap, "permessage-deflate%s%s%s%s",
                       p.server_no_context_takeover ? "; server_no_context_takeover" : "",
                       p.client_no_context_takeover ? "; client_no_context_takeover" : "", sw, cw);
    if (len < 0 || (size_t)len >= out_cap)
        return -ENOBUFS;
    *out_len = (size_t)len;
    *params = p;
    return 1;
}

/* ---- zlib memory ---------------------------------------------------------------------
 * Each zlib block carries a header with its size so zfree can refund the budget. */

struct px__ws_deflate {
    px__ws_deflate_params_t params;
    size_t budget; /* bytes zlib may hold; SIZE_MAX when unlimited */
    size_t used;   /* bytes zlib holds now, headers included; <= budget */
    z_stream def;  /* initialised iff def_live */
    z_stream inf;  /* initialised iff inf_live */
    unsigned def_live : 1;
    unsigned inf_live : 1;
    unsigned inf_in_msg : 1; /* frames of a message were inflated, fin not yet seen */
    unsigned inf_ended : 1;  /* the message's deflate data hit a final block (BFINAL) */
    int inf_err;             /* sticky inflate error (negative errno) or 0 */
};

#define ZHDR alignof(max_align_t)

static voidpf zalloc_cb(voidpf opaque, uInt items, uInt size)
{
    px__ws_deflate_t *c = opaque;
    size_t n;
    if (__builtin_mul_overflow((size_t)items, (size_t)size, &n) || n > SIZE_MAX - ZHDR)
        return Z_NULL;
    n += ZHDR;
    if (n > c->budget - c->used)
        return Z_NULL;
    unsigned char *p = px__malloc(n);
    if (!p)
        return Z_NULL;
    memcpy(p, &n, sizeof n);
    c->used += n;
    return p + ZHDR;
}

static void zfree_cb(voidpf opaque, voidpf ptr)
{
    px__ws_deflate_t *c = opaque;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - ZHDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    c->used -= n;
    px__free(p);
}

/* zlib cannot deflate raw data with a 256-byte window; 9 bits is equivalent for
 * the peer (see px__ws_deflate_params_t). */
static int deflate_bits(const px__ws_deflate_params_t *p)
{
    return p->server_max_window_bits < 9 ? 9 : p->server_max_window_bits;
}

size_t px__ws_deflate_mem_estimate(const px__ws_deflate_params_t *p)
{
    unsigned wb = (unsigned)deflate_bits(p);
    unsigned ml = p->mem_level ? p->mem_level : 8;
    /* zlib.h: deflate needs (1 << (windowBits+2)) + (1 << (memLevel+9)) plus its
     * state (~6 KB); newer zlibs keep 5 instead of 4 bytes per literal, hence
     * the extra 1 << (memLevel+6). inflate needs 1 << windowBits plus ~7 KB. */
    size_t def = ((size_t)1 << (wb + 2)) + ((size_t)1 << (ml + 9)) + ((size_t)1 << (ml + 6)) +
                 8192 + 8 * ZHDR;
    size_t inf = ((size_t)1 << p->client_max_window_bits) + 8192 + 4 * ZHDR;
    return def + inf;
}

px__ws_deflate_t *px__ws_deflate_new(const px__ws_deflate_params_t *params, size_t mem_budget)
{
    px__ws_deflate_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->params = *params;
    if (c->params.server_max_window_bits < 8 || c->params.server_max_window_bits > 15)
        c->params.server_max_window_bits = 15;
    if (c->params.client_max_window_bits < 8 || c->params.client_max_window_bits > 15)
        c->params.client_max_window_bits = 15;
    if (c->params.mem_level < 1 || c->params.mem_level > 9)
        c->params.mem_level = 8;
    if (c->params.level < -1 || c->params.level > 9)
        c->params.level = -1;
    c->budget = mem_budget ? mem_budget : SIZE_MAX;
    return c;
}

void px__ws_deflate_free(px__ws_deflate_t *c)
{
    if (!c)
        return;
    if (c->def_live)
        deflateEnd(&c->def);
    if (c->inf_live)
        inflateEnd(&c->inf);
    px__free(c);
}

size_t px__ws_deflate_mem_used(const px__ws_deflate_t *c)
{
    return c->used;
}

uint16_t px__ws_deflate_close_code(int err)
{
    switch (err) {
    case -EMSGSIZE: return 1009; /* message too big */
    case -EBADMSG: return 1007;  /* invalid frame payload data */
    default: return 1011;        /* internal error: out of memory */
    }
}

static int zerr(int zret)
{
    return zret == Z_MEM_ERROR ? -ENOMEM : zret == Z_DATA_ERROR ? -EBADMSG : -EINVAL;
}

static void z_setup(px__ws_deflate_t *c, z_stream *z)
{
    memset(z, 0, sizeof *z);
    z->zalloc = zalloc_cb;
    z->zfree = zfree_cb;
    z->opaque = c;
}

/* Hand zlib the next piece of the input once it has used up the last one: avail_in
 * is a uInt, so a larger input goes in pieces. */
static inline void next_input(z_stream *z, const uint8_t **next, size_t *left)
{
    if (z->avail_in == 0 && *left) {
        uInt chunk = *left > UINT_MAX ? UINT_MAX : (uInt)*left;
        z->next_in = (Bytef *)(uintptr_t)*next;
        z->avail_in = chunk;
        *next += chunk;
        *left -= chunk;
    }
}

/* Point zlib's output at out's free space: min(want, allowed) bytes reserved, at
 * most `allowed` (and what a uInt holds) offered in *room. 0 or -ENOMEM. */
static int next_output(z_stream *z, px_buf_t *out, size_t want, size_t allowed, size_t *room)
{
    int r = px_buf_reserve(out, want < allowed ? want : allowed);
    if (r != 0)
        return r;
    size_t n = px_buf_room(out);
    if (n > allowed)
        n = allowed;
    if (n > UINT_MAX)
        n = UINT_MAX;
    z->next_out = (Bytef *)px_buf_tail(out);
    z->avail_out = (uInt)n;
    *room = n;
    return 0;
}

/* ---- deflate ------------------------------------------------------------------- */

static int def_open(px__ws_deflate_t *c)
{
    if (c->def_live)
        return 0;
    z_setup(c, &c->def);
    int r = deflateInit2(&c->def, c->params.level, Z_DEFLATED, -deflate_bits(&c->params),
                         c->params.mem_level, Z_DEFAULT_STRATEGY);
    if (r != Z_OK)
        return zerr(r); /* deflateInit2 frees what it got */
    c->def_live = 1;
    return 0;
}

int px__ws_deflate_message(px__ws_deflate_t *c, const uint8_t *in, size_t len, px_buf_t *out,
                           size_t max_out)
{
    if (len == 0) {
        /* zlib emits nothing for a flush right after a flush, and an empty
         * message is just the 0x00 that starts an empty stored block (RFC 7692
         * 7.2.3.6); the window is unchanged either way. */
        if (max_out < 1)
            return -EMSGSIZE;
        return px_buf_append(out, "", 1);
    }
    int r = def_open(c);
    if (r != 0)
        return r;
    z_stream *z = &c->def;
    /* Live size, not an index: px_buf_reserve may slide the live bytes down. */
    size_t start = px_buf_size(out);
    /* The sync flush ends with 00 00 FF FF, which we strip: allow 4 more, and one
     * more than that to tell "fits exactly" from "too big". */
    size_t limit = max_out > SIZE_MAX - 6 ? SIZE_MAX - 1 : max_out + 5;
    size_t produced = 0;
    const uint8_t *next = in;
    size_t left = len; /* not yet handed to zlib */
    z->avail_in = 0;
    for (;;) {
        next_input(z, &next, &left);
        int flush = left || z->avail_in ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        if (produced >= limit) {
            r = -EMSGSIZE;
            break;
        }
        size_t room;
        r = next_output(z, out, deflateBound(z, z->avail_in + left) + 16, limit - produced, &room);
        if (r != 0)
            break;
        int zr = deflate(z, flush);
        size_t got = room - z->avail_out;
        out->len += got;
        produced += got;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            r = zerr(zr);
            break;
        }
        /* Done once the flush fitted: zlib returns with avail_out > 0. */
        if (flush == Z_SYNC_FLUSH && z->avail_out > 0)
            break;
    }
    if (r == 0 && produced > limit - 1)
        r = -EMSGSIZE;
    if (r == 0) {
        const uint8_t *tail = (const uint8_t *)px_buf_tail(out) - 4;
        if (PX_UNLIKELY(produced < 4 || memcmp(tail, "\x00\x00\xff\xff", 4) != 0))
            r = -EINVAL; /* zlib broke its sync-flush contract; never seen */
        else
            out->len -= 4;
    }
    if (r != 0) {
        /* The peer will not see this message compressed: forget it. */
        out->len = out->off + start;
        deflateReset(z);
        return r;
    }
    if (c->params.server_no_context_takeover)
        deflateReset(z);
    return 0;
}

void px__ws_deflate_reset_context(px__ws_deflate_t *c)
{
    if (c->def_live)
        deflateReset(&c->def);
}

/* ---- inflate -------------------------------------------------------------------- */

static int inf_open(px__ws_deflate_t *c)
{
    if (c->inf_live)
        return 0;
    z_setup(c, &c->inf);
    int r = inflateInit2(&c->inf, -(int)c->params.client_max_window_bits);
    if (r != Z_OK)
        return zerr(r);
    c->inf_live = 1;
    return 0;
}

/* Start a new deflate stream on the inflater, keeping the window as its
 * dictionary when `keep` (a final block ended the old stream but the context
 * continues).
 *
 * O(1) either way: inflateResetKeep (zlib.h, "undocumented functions", in every
 * zlib since 1.2.5.1 and in zlib-ng's compat API) resets the stream but leaves
 * the sliding window (wsize, whave, wnext) in place, so back-references into
 * the old stream still resolve. The documented route, inflateGetDictionary +
 * inflateReset + inflateSetDictionary, copies the 32 KiB window out and back on
 * every final block: a message of 2-byte empty final blocks (03 00) cost 16 KiB
 * of copying per input byte, 1.4 s of a worker for a 1 MB frame. */
static int inf_restart(px__ws_deflate_t *c, int keep)
{
    z_stream *z = &c->inf;
    c->inf_ended = 0;
    if ((keep ? inflateResetKeep(z) : inflateReset(z)) != Z_OK)
        return -EINVAL;
    return 0;
}

/* Run in[0..len) through the inflater into out. `tail` marks our own 00 00 FF FF.
 *
 * A final block (BFINAL, RFC 7692 7.2.3.4) ends zlib's stream, but the message
 * may go on: the RFC's own example follows it with 0x00, which together with the
 * tail is an empty stored block. So bytes after a final block start a new stream
 * that keeps the window, and only the tail right after a final block is dropped. */
static int inf_feed(px__ws_deflate_t *c, const uint8_t *in, size_t len, int tail, px_buf_t *out,
                    size_t max_out)
{
    z_stream *z = &c->inf;
    size_t left = len;
    const uint8_t *next = in;
    z->avail_in = 0;
    for (;;) {
        next_input(z, &next, &left);
        if (c->inf_ended) {
            if (tail || z->avail_in == 0)
                return 0;
            int r = inf_restart(c, 1);
            if (r != 0)
                return r;
        }
        size_t have = px_buf_size(out);
        if (have > max_out)
            return -EMSGSIZE;
        size_t allowed = max_out - have;
        uint8_t spare;
        size_t room;
        if (allowed == 0) {
            /* Full: one byte of scratch tells whether more output is pending. */
            z->next_out = &spare;
            z->avail_out = 1;
            room = 1;
        } else {
            int r = next_output(z, out, (size_t)z->avail_in * 4 + 1024, allowed, &room);
            if (r != 0)
                return r;
        }
        uInt in_before = z->avail_in;
        int zr = inflate(z, Z_SYNC_FLUSH);
        size_t got = room - z->avail_out;
        if (allowed == 0) {
            if (got)
                return -EMSGSIZE;
        } else {
            out->len += got;
        }
        if (zr == Z_STREAM_END) {
            c->inf_ended = 1;
            continue;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return zerr(zr == Z_NEED_DICT ? Z_DATA_ERROR : zr);
        /* Everything in, and zlib stopped with room to spare: all out. */
        if (z->avail_in == 0 && left == 0 && z->avail_out > 0)
            return 0;
        if (PX_UNLIKELY(got == 0 && z->avail_in == in_before && z->avail_out > 0))
            return -EBADMSG; /* no progress with input and room: never seen */
    }
}

/* The message is over: keep or drop the window for the next one. */
static int inf_end_message(px__ws_deflate_t *c)
{
    int keep = !c->params.client_no_context_takeover;
    if (c->inf_ended)
        return inf_restart(c, keep);
    /* The tail is an empty stored block, so a well-formed message leaves zlib
     * waiting for a block header (data_type bit 128, zlib.h). Anything else means
     * the sender cut a block and our tail went into it. */
    if (!(c->inf.data_type & 128))
        return -EBADMSG;
    if (!keep)
        inflateReset(&c->inf);
    return 0;
}

int px__ws_inflate(px__ws_deflate_t *c, const uint8_t *in, size_t len, int fin, px_buf_t *out,
                   size_t max_out)
{
    if (c->inf_err)
        return c->inf_err;
    int r = inf_open(c);
    if (r == 0) {
        c->inf_in_msg = 1;
        r = inf_feed(c, in, len, 0, out, max_out);
    }
    if (r == 0 && fin) {
        static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};
        r = inf_feed(c, sync_tail, 4, 1, out, max_out);
        if (r == 0)
            r = inf_end_message(c);
        c->inf_in_msg = 0;
    }
    if (r != 0)
        c->inf_err = r;
    return r;
}

void px__ws_deflate_trim(px__ws_deflate_t *c)
{
    if (c->def_live && c->params.server_no_context_takeover) {
        deflateEnd(&c->def);
        c->def_live = 0;
    }
    if (c->inf_live && c->params.client_no_context_takeover && !c->inf_in_msg && !c->inf_err) {
        inflateEnd(&c->inf);
        c->inf_live = 0;
    }
}
