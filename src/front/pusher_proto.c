/* The Pusher protocol's pure parsers (see pusher_proto.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front/pusher_proto.h"
#include "plexus/json.h"

__attribute__((format(printf, 2, 3))) static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, 160, fmt, ap);
    va_end(ap);
    return -1;
}

int px__pusher_channel_ok(const char *s, size_t len)
{
    if (len < 1 || len > PX__PUSHER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (ch == '_' || ch == '-' || ch == '=' || ch == '@' || ch == ',' || ch == '.' ||
            ch == ';' || (ch == '#' && i == 0 && len > 1))
            continue;
        return 0;
    }
    return 1;
}

/* A bump allocator over the caller's scratch buffer. */
typedef struct bump {
    char *p;
    size_t left;
} bump_t;

/* Unescape string token `tok` into the scratch; -1 if it does not fit `max` bytes. */
static int take_str(const px_json_doc_t *doc, int tok, bump_t *b, size_t max, px_str_t *out)
{
    if (doc->toks[tok].type != PX_JSON_STRING)
        return -1;
    size_t cap = b->left < max + 1 ? b->left : max + 1;
    int n = px_json_unescape(doc, tok, b->p, cap);
    if (n < 0)
        return -1;
    *out = (px_str_t){b->p, (size_t)n};
    b->p += n + 1;
    b->left -= (size_t)n + 1;
    return 0;
}

/* The object that "data" holds: the token itself, or a JSON string holding an object
 * (decoded into the scratch and tokenized into `inner`). Returns the object's token (in
 * *docp), or -1. */
static int data_object(const px_json_doc_t *doc, int tok, bump_t *b, px_json_doc_t *inner,
                       px_json_tok_t *itoks, uint32_t icap, const px_json_doc_t **docp)
{
    if (tok < 0)
        return -1;
    if (doc->toks[tok].type == PX_JSON_OBJECT) {
        *docp = doc;
        return tok;
    }
    if (doc->toks[tok].type != PX_JSON_STRING)
        return -1;
    px_str_t text;
    if (take_str(doc, tok, b, b->left ? b->left - 1 : 0, &text) != 0)
        return -1;
    if (px_json_parse(inner, text.ptr, text.len, itoks, icap, PX__PUSHER_MAX_DEPTH) < 0 ||
        itoks[0].type != PX_JSON_OBJECT)
        return -1;
    *docp = inner;
    return 0;
}

int px__pusher_parse(const char *data, size_t len, px__pmsg_t *o, char *scratch, size_t scratch_len)
{
    memset(o, 0, sizeof *o);
    if (scratch_len < 2 * len + 16)
        return fail(o->err, "message too large");
    px_json_tok_t toks[PX__PUSHER_MAX_TOKENS];
    px_json_doc_t doc;
    if (px_json_parse(&doc, data, len, toks, PX__PUSHER_MAX_TOKENS, PX__PUSHER_MAX_DEPTH) < 0) {
        char why[100];
        px_json_format_error(&doc, why, sizeof why);
        return fail(o->err, "invalid JSON: %s", why);
    }
    if (toks[0].type != PX_JSON_OBJECT)
        return fail(o->err, "a message is a JSON object");
    static const char *const keys[] = {"event", "channel", "data"};
    enum { K_EVENT, K_CHANNEL, K_DATA, K_COUNT };
    int v[K_COUNT];
    size_t dup;
    if (px_json_get_keys(&doc, 0, keys, K_COUNT, v, &dup) != 0)
        return fail(o->err, "duplicate \"%s\"", keys[dup]);
    bump_t b = {scratch, scratch_len};
    if (v[K_EVENT] < 0 || take_str(&doc, v[K_EVENT], &b, PX__PUSHER_NAME_MAX, &o->event) != 0 ||
        o->event.len == 0)
        return fail(o->err, "\"event\" must be a string of 1..%d bytes", PX__PUSHER_NAME_MAX);
    const char *ev = o->event.ptr;
    size_t evl = o->event.len;
#define EV_IS(lit) (evl == sizeof(lit) - 1 && memcmp(ev, lit, evl) == 0)
    if (EV_IS("pusher:ping")) {
        o->type = PX__PM_PING;
        return 0;
    }
    if (EV_IS("pusher:pong")) {
        o->type = PX__PM_PONG;
        return 0;
    }
    if (evl > 7 && memcmp(ev, "client-", 7) == 0) {
        o->type = PX__PM_CLIENT;
        if (v[K_CHANNEL] < 0 ||
            take_str(&doc, v[K_CHANNEL], &b, PX__PUSHER_NAME_MAX, &o->channel) != 0 ||
            !o->channel.len)
            return fail(o->err, "a client event needs a \"channel\"");
        o->data = v[K_DATA] >= 0 ? px_json_raw(&doc, v[K_DATA]) : (px_str_t){"null", 4};
        return 0;
    }
    int sub = EV_IS("pusher:subscribe"), unsub = EV_IS("pusher:unsubscribe"),
        signin = EV_IS("pusher:signin");
    if (!sub && !unsub && !signin) {
        o->type = PX__PM_OTHER;
        return 0;
    }
    px_json_tok_t itoks[64];
    px_json_doc_t inner;
    const px_json_doc_t *d = NULL;
    int obj = data_object(&doc, v[K_DATA], &b, &inner, itoks, 64, &d);
    if (obj < 0)
        return fail(o->err, "\"data\" must be an object");
    static const char *const dkeys[] = {"channel", "auth", "channel_data", "user_data"};
    enum { D_CHANNEL, D_AUTH, D_CHANNEL_DATA, D_USER_DATA, D_COUNT };
    int dv[D_COUNT];
    if (px_json_get_keys(d, obj, dkeys, D_COUNT, dv, &dup) != 0)
        return fail(o->err, "duplicate \"%s\" in data", dkeys[dup]);
    if (dv[D_AUTH] >= 0 && d->toks[dv[D_AUTH]].type != PX_JSON_NULL &&
        take_str(d, dv[D_AUTH], &b, PX__PUSHER_AUTH_MAX, &o->auth) != 0)
        return fail(o->err, "\"auth\" must be a string of at most %d bytes", PX__PUSHER_AUTH_MAX);
    if (signin) {
        o->type = PX__PM_SIGNIN;
        if (dv[D_USER_DATA] < 0 ||
            take_str(d, dv[D_USER_DATA], &b, b.left ? b.left - 1 : 0, &o->user_data) != 0 ||
            !o->user_data.len)
            return fail(o->err, "pusher:signin needs \"user_data\", a string");
        if (!o->auth.len)
            return fail(o->err, "pusher:signin needs \"auth\"");
        return 0;
    }
    o->type = sub ? PX__PM_SUBSCRIBE : PX__PM_UNSUBSCRIBE;
    if (dv[D_CHANNEL] < 0 ||
        take_str(d, dv[D_CHANNEL], &b, PX__PUSHER_NAME_MAX, &o->channel) != 0 || !o->channel.len)
        return fail(o->err, "\"data\" needs a \"channel\" of 1..%d bytes", PX__PUSHER_NAME_MAX);
    if (sub && dv[D_CHANNEL_DATA] >= 0 && d->toks[dv[D_CHANNEL_DATA]].type != PX_JSON_NULL &&
        take_str(d, dv[D_CHANNEL_DATA], &b, b.left ? b.left - 1 : 0, &o->channel_data) != 0)
        return fail(o->err, "\"channel_data\" must be a string");
    return 0;
#undef EV_IS
}

/* ---- the signed query ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) to out; returns the length or -1. */
static long pct_decode(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    return (long)k;
}

static int str_cmp(px_str_t a, px_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

px_str_t px__pusher_query_get(const px__pquery_t *o, const char *key)
{
    px_str_t k = {key, strlen(key)};
    for (size_t i = 0; i < o->nparams; i++)
        if (str_cmp(o->keys[i], k) == 0)
            return o->values[i];
    return (px_str_t){NULL, 0};
}

int px__pusher_query_parse(const char *q, size_t len, px__pquery_t *o, char *buf, size_t buflen)
{
    memset(o, 0, sizeof *o);
    if (buflen < 3 * len + 16)
        return fail(o->err, "query string too long");
    char *p = buf;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && q[j] != '&')
            j++;
        if (j > i) { /* empty pieces ("a=1&&b=2") are skipped */
            const char *eq = memchr(q + i, '=', j - i);
            size_t kl = eq ? (size_t)(eq - (q + i)) : j - i;
            if (kl == 0)
                return fail(o->err, "empty parameter name");
            if (o->nparams == PX__PQ_MAX_PARAMS)
                return fail(o->err, "more than %d query parameters", PX__PQ_MAX_PARAMS);
            long dk = pct_decode(q + i, kl, p);
            if (dk <= 0)
                return fail(o->err, "bad percent-encoding in a parameter name");
            px_str_t k = {p, (size_t)dk};
            p += dk;
            px_str_t v = {p, 0};
            if (eq) {
                long dv = pct_decode(eq + 1, (size_t)(q + j - eq - 1), p);
                if (dv < 0)
                    return fail(o->err, "bad percent-encoding in the value of \"%.*s\"",
                                (int)(k.len > 40 ? 40 : k.len), k.ptr);
                v.len = (size_t)dv;
                p += dv;
            }
            for (size_t m = 0; m < o->nparams; m++)
                if (str_cmp(o->keys[m], k) == 0)
                    return fail(o->err, "parameter \"%.*s\" given twice",
                                (int)(k.len > 40 ? 40 : k.len), k.ptr);
            o->keys[o->nparams] = k;
            o->values[o->nparams] = v;
            o->nparams++;
        }
        i = j + 1;
    }
    /* Sort (insertion: at most 32) and join, leaving out the signature itself. */
    size_t idx[PX__PQ_MAX_PARAMS];
    for (size_t a = 0; a < o->nparams; a++) {
        size_t b = a;
        while (b > 0 && str_cmp(o->keys[idx[b - 1]], o->keys[a]) > 0) {
            idx[b] = idx[b - 1];
            b--;
        }
        idx[b] = a;
    }
    char *s = p;
    for (size_t a = 0; a < o->nparams; a++) {
        px_str_t k = o->keys[idx[a]], v = o->values[idx[a]];
#define KEY_IS(lit) (k.len == sizeof(lit) - 1 && memcmp(k.ptr, lit, k.len) == 0)
        if (KEY_IS("auth_signature")) {
            o->auth_signature = v;
            continue;
        }
        if (KEY_IS("auth_key"))
            o->auth_key = v;
        else if (KEY_IS("auth_timestamp"))
            o->auth_timestamp = v;
        else if (KEY_IS("auth_version"))
            o->auth_version = v;
        else if (KEY_IS("body_md5"))
            o->body_md5 = v;
#undef KEY_IS
        if (p > s)
            *p++ = '&';
        memcpy(p, k.ptr, k.len);
        p += k.len;
        *p++ = '=';
        if (v.len)
            memcpy(p, v.ptr, v.len);
        p += v.len;
    }
    o->to_sign = (px_str_t){s, (size_t)(p - s)};
    return 0;
}

uint64_t px__pusher_socket_id_parse(const char *s, size_t len)
{
    const char *dot = len ? memchr(s, '.', len) : NULL;
    if (!dot)
        return 0;
    uint64_t part[2] = {0, 0};
    const char *ranges[2][2] = {{s, dot}, {dot + 1, s + len}};
    for (int k = 0; k < 2; k++) {
        const char *a = ranges[k][0], *e = ranges[k][1];
        if (a == e || e - a > 10)
            return 0;
        for (; a < e; a++) {
            if (*a < '0' || *a > '9')
                return 0;
            part[k] = part[k] * 10 + (uint64_t)(*a - '0');
        }
        if (part[k] > UINT32_MAX)
            return 0;
    }
    return part[0] << 32 | part[1];
}
