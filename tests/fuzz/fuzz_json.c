/* libFuzzer harness for src/hub/json.c. The input is one JSON document. Checks:
 *  - token mode and validate-only mode agree (result, error, token count);
 *  - every token lies inside the input, strings sit between quotes, `next` skips exactly
 *    the descendants, container sizes match their children;
 *  - differential: re-serializing the tokens compactly gives the input minus insignificant
 *    whitespace (computed independently here), and that text parses to the same tokens;
 *  - every string survives unescape -> writer -> parse -> unescape unchanged;
 *  - integer accessors agree with strtoll/strtoull, lookups find first-or-duplicate keys. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "plexus/json.h"

#define CAP 4096

static px_json_tok_t toks[CAP], toks2[CAP], stoks[4];

/* Input without whitespace outside strings: a tiny lexer independent of the tokenizer. */
static size_t strip_ws(const char *s, size_t n, char *out)
{
    size_t o = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\')
                out[o++] = s[++i];
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
            out[o++] = c;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            out[o++] = c;
        }
    }
    return o;
}

/* Writes the value at token i compactly; returns the index after it. */
static uint32_t reserialize(const px_json_doc_t *d, uint32_t i, px_json_writer_t *w)
{
    const px_json_tok_t *t = &d->toks[i];
    if (t->type != PX_JSON_OBJECT && t->type != PX_JSON_ARRAY) {
        px_str_t raw = px_json_raw(d, (int)i);
        px_json_put_raw(w, raw.ptr, raw.len);
        return i + 1;
    }
    int obj = t->type == PX_JSON_OBJECT;
    px_json_put_raw(w, obj ? "{" : "[", 1);
    uint32_t k = i + 1;
    for (uint32_t m = 0; m < t->size; m++) {
        if (m)
            px_json_put_raw(w, ",", 1);
        if (obj) {
            k = reserialize(d, k, w);
            px_json_put_raw(w, ":", 1);
        }
        k = reserialize(d, k, w);
    }
    CHECK(k == t->next);
    px_json_put_raw(w, obj ? "}" : "]", 1);
    return k;
}

static void check_structure(const px_json_doc_t *d, size_t size)
{
    const px_json_tok_t *t = d->toks;
    CHECK(d->ntoks >= 1 && d->ntoks <= CAP);
    CHECK(t[0].next == d->ntoks);
    for (uint32_t i = 0; i < d->ntoks; i++) {
        CHECK(t[i].type >= PX_JSON_OBJECT && t[i].type <= PX_JSON_NULL);
        CHECK(t[i].start <= t[i].end && t[i].end <= size);
        CHECK(t[i].next > i && t[i].next <= d->ntoks);
        if (t[i].type == PX_JSON_STRING) {
            CHECK(t[i].start >= 1 && d->src[t[i].start - 1] == '"');
            CHECK(t[i].end < size && d->src[t[i].end] == '"');
        }
        if (t[i].type != PX_JSON_OBJECT && t[i].type != PX_JSON_ARRAY) {
            CHECK(t[i].next == i + 1 && t[i].size == 0);
            continue;
        }
        CHECK(d->src[t[i].start] == (t[i].type == PX_JSON_OBJECT ? '{' : '['));
        CHECK(d->src[t[i].end - 1] == (t[i].type == PX_JSON_OBJECT ? '}' : ']'));
        uint32_t children = 0;
        for (uint32_t k = i + 1; k < t[i].next; k = t[k].next) {
            CHECK(t[k].start > t[i].start && t[k].end < t[i].end);
            if (t[i].type == PX_JSON_OBJECT && children % 2 == 0)
                CHECK(t[k].type == PX_JSON_STRING);
            children++;
        }
        CHECK(children == (t[i].type == PX_JSON_OBJECT ? 2 * t[i].size : t[i].size));
    }
}

static void check_strings(const px_json_doc_t *d)
{
    static char buf[65536], again[65536], wbuf[6 * 65536 + 2];
    for (uint32_t i = 0; i < d->ntoks; i++) {
        const px_json_tok_t *t = &d->toks[i];
        if (t->type != PX_JSON_STRING || t->end - t->start >= sizeof buf)
            continue;
        int n = px_json_unescape(d, (int)i, buf, sizeof buf);
        CHECK(n >= 0 && (uint32_t)n <= t->end - t->start && buf[n] == '\0');
        CHECK(px_json_streq(d, (int)i, buf, (size_t)n));
        if (n > 0) {
            CHECK(!px_json_streq(d, (int)i, buf, (size_t)n - 1));
            buf[n - 1] ^= 1;
            CHECK(!px_json_streq(d, (int)i, buf, (size_t)n));
            buf[n - 1] ^= 1;
            /* a buffer without room for the NUL is refused, never overrun */
            CHECK(px_json_unescape(d, (int)i, again, (size_t)n) == -ENOSPC);
        }
        /* round trip through the writer */
        px_json_writer_t w;
        px_json_writer_init(&w, wbuf, sizeof wbuf);
        px_json_put_str(&w, buf, (size_t)n);
        CHECK(w.err == 0);
        px_json_doc_t d2;
        CHECK(px_json_parse(&d2, wbuf, w.len, stoks, 4, 1) == (int)w.len);
        CHECK(d2.ntoks == 1 && stoks[0].type == PX_JSON_STRING);
        CHECK(px_json_unescape(&d2, 0, again, sizeof again) == n);
        CHECK(memcmp(again, buf, (size_t)n) == 0);
    }
}

static void check_numbers(const px_json_doc_t *d)
{
    char tmp[64];
    for (uint32_t i = 0; i < d->ntoks; i++) {
        const px_json_tok_t *t = &d->toks[i];
        int64_t v;
        uint64_t u;
        int rc = px_json_get_i64(d, (int)i, &v);
        int rcu = px_json_get_u64(d, (int)i, &u);
        if (t->type != PX_JSON_NUMBER || !(t->flags & PX_JSON_F_INT)) {
            CHECK(rc == -EINVAL && rcu == -EINVAL);
            continue;
        }
        size_t len = t->end - t->start;
        if (len >= sizeof tmp) {
            CHECK(rc == -ERANGE && rcu == -ERANGE);
            continue;
        }
        memcpy(tmp, d->src + t->start, len);
        tmp[len] = '\0';
        errno = 0;
        long long ref = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) {
            CHECK(rc == -ERANGE);
        } else {
            CHECK(rc == 0 && v == ref);
        }
        errno = 0;
        unsigned long long uref = strtoull(tmp, NULL, 10);
        if (tmp[0] == '-') {
            CHECK(rcu == (ref == 0 && errno != ERANGE ? 0 : -ERANGE));
        } else if (errno == ERANGE) {
            CHECK(rcu == -ERANGE);
        } else {
            CHECK(rcu == 0 && u == uref);
        }
    }
}

static void check_lookups(const px_json_doc_t *d)
{
    static char key[1024];
    for (uint32_t i = 0; i < d->ntoks; i++) {
        const px_json_tok_t *t = &d->toks[i];
        if (t->type != PX_JSON_OBJECT || t->size > 32)
            continue;
        uint32_t k = i + 1;
        for (uint32_t m = 0; m < t->size; m++, k = d->toks[k + 1].next) {
            int n = px_json_unescape(d, (int)k, key, sizeof key);
            if (n < 0 || strlen(key) != (size_t)n)
                continue; /* px_json_get takes a C string */
            /* reference: count decoded-equal keys */
            int count = 0, first = -1;
            uint32_t k2 = i + 1;
            for (uint32_t m2 = 0; m2 < t->size; m2++, k2 = d->toks[k2 + 1].next) {
                if (px_json_streq(d, (int)k2, key, (size_t)n)) {
                    if (first < 0)
                        first = (int)k2 + 1;
                    count++;
                }
            }
            CHECK(count >= 1);
            int got = px_json_get(d, (int)i, key);
            CHECK(count == 1 ? got == first : got == -EEXIST);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char stripped[1 << 20], out[1 << 20];
    const char *src = (const char *)data;
    if (size > sizeof stripped)
        return 0;
    px_json_doc_t d, dv;
    int rc = px_json_parse(&d, src, size, toks, CAP, 64);
    int rcv = px_json_parse(&dv, src, size, NULL, 0, 64);
    if (rc < 0) {
        CHECK(rc == PX_PARSE_ERROR && d.err != PX_JSON_OK && d.err_msg && d.err_off <= size);
        if (d.err == PX_JSON_E_TOKENS) {
            CHECK(rcv == (int)size ? dv.ntoks > CAP : dv.err_off >= d.err_off);
        } else {
            CHECK(rcv == PX_PARSE_ERROR && dv.err == d.err && dv.err_off == d.err_off &&
                  strcmp(dv.err_msg, d.err_msg) == 0);
        }
        char msg[128];
        CHECK(px_json_format_error(&d, msg, sizeof msg) > 0);
        return 0;
    }
    CHECK(rc == (int)size && rcv == rc && dv.ntoks == d.ntoks);
    check_structure(&d, size);

    /* differential re-serialization */
    px_json_writer_t w;
    px_json_writer_init(&w, out, sizeof out);
    CHECK(reserialize(&d, 0, &w) == d.ntoks);
    CHECK(w.err == 0);
    size_t sn = strip_ws(src, size, stripped);
    CHECK(sn == w.len && memcmp(stripped, out, sn) == 0);
    px_json_doc_t d2;
    CHECK(px_json_parse(&d2, out, w.len, toks2, CAP, 64) == (int)w.len);
    CHECK(d2.ntoks == d.ntoks);
    for (uint32_t i = 0; i < d.ntoks; i++)
        CHECK(toks2[i].type == toks[i].type && toks2[i].size == toks[i].size &&
              toks2[i].next == toks[i].next && toks2[i].flags == toks[i].flags);

    /* a tighter token budget or depth limit fails cleanly */
    if (d.ntoks > 1) {
        CHECK(px_json_parse(&d2, src, size, toks2, d.ntoks - 1, 64) == PX_PARSE_ERROR);
        CHECK(d2.err == PX_JSON_E_TOKENS);
    }
    check_strings(&d);
    check_numbers(&d);
    check_lookups(&d);
    return 0;
}
