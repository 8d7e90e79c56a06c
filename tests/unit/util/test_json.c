/* Unit tests for src/hub/json.c: RFC 8259 accept/reject tables (JSONTestSuite-style y_/n_
 * cases, written here), token layout, bounds, lookups and the writer. Every parse runs on
 * input that ends exactly at a guard page, so any read past the end faults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard.h"

#include "plexus/json.h"

static int parse(px_json_doc_t *doc, const char *s, size_t n, px_json_tok_t *toks, uint32_t cap,
                 uint32_t depth)
{
    return px_json_parse(doc, at_guard(s, n), n, toks, cap, depth);
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- accept / reject tables ----------------------------------------------------- */

struct yes {
    const char *text;
    size_t len;
    uint32_t ntoks;
};

static const struct yes yes_cases[] = {
    {S("{}"), 1},
    {S("[]"), 1},
    {S("\"\""), 1},
    {S("0"), 1},
    {S("-0"), 1},
    {S("-0.0e-0"), 1},
    {S("1.5e+10"), 1},
    {S("-1E-2"), 1},
    {S("123456789012345678901234567890"), 1}, /* huge but grammatical */
    {S("1e999999"), 1},
    {S("true"), 1},
    {S("false"), 1},
    {S("null"), 1},
    {S(" \t\r\n[1 , 2 ]\n"), 3},
    {S("[[[[]]]]"), 4},
    {S("[[],{},[[]]]"), 5},
    {S("{\"a\":{\"b\":[1,{\"c\":null}]}}"), 9},
    {S("{\"\":0}"), 3},
    {S("{\"a\":1,\"a\":2}"), 5}, /* legal JSON; duplicates are a lookup-level policy */
    {S("[1,\"a\",true,false,null,-2.5]"), 7},
    {S("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), 1},
    {S("\"\\u00e9\\u00E9\""), 1},
    {S("\"\\ud83d\\ude00\""), 1},   /* surrogate pair */
    {S("\"\\uDBFF\\uDFFF\""), 1},   /* U+10FFFF */
    {S("\"\\u0000\""), 1},          /* NUL escape is legal */
    {S("\"\\uFFFF\\uFDD0\""), 1},   /* noncharacters are still characters */
    {S("\"\xc3\xa9\""), 1},         /* raw 2-byte */
    {S("\"\xe2\x82\xac\""), 1},     /* raw 3-byte */
    {S("\"\xf0\x9f\x98\x80\""), 1}, /* raw 4-byte */
    {S("\"\xf4\x8f\xbf\xbf\""), 1}, /* U+10FFFF raw */
    {S("\"\xef\xbb\xbf\""), 1},     /* a BOM inside a string is just U+FEFF */
    {S("\"\x7f\""), 1},             /* DEL is not a control character for JSON */
    {S("\"0123456789abcdefghijklmnopqrstuvwxyz\xc3\xa9 long enough for the 8-byte path\""), 1},
    {S("[\"a\",{\"k\":[\"\\u0041\"]},\"b\"]"), 7},
};

struct no {
    const char *text;
    size_t len;
    const char *msg; /* expected err_msg */
    uint32_t off;    /* expected err_off */
};

static const struct no no_cases[] = {
    {S(""), "empty input", 0},
    {S("   \n\t"), "empty input", 5},
    {S("[1,]"), "trailing comma in array", 3},
    {S("{\"a\":1,}"), "trailing comma in object", 7},
    {S("[01]"), "leading zero in number", 1},
    {S("00"), "leading zero in number", 0},
    {S("-01"), "leading zero in number", 0},
    {S("-"), "invalid number", 0},
    {S("-a"), "invalid number", 0},
    {S("1."), "expected digit after '.' in number", 2},
    {S("1.e3"), "expected digit after '.' in number", 2},
    {S(".1"), "unexpected character", 0},
    {S("1e"), "expected digit in exponent", 2},
    {S("1e+"), "expected digit in exponent", 3},
    {S("+1"), "unexpected character", 0},
    {S("NaN"), "unexpected character", 0},
    {S("Infinity"), "unexpected character", 0},
    {S("-Infinity"), "invalid number", 0},
    {S("[1 2]"), "expected ',' or ']'", 3},
    {S("{\"a\" 1}"), "expected ':' after object key", 5},
    {S("{a:1}"), "expected string key", 1},
    {S("{'a':1}"), "expected string key", 1},
    {S("{\"a\":1 \"b\":2}"), "expected ',' or '}'", 7},
    {S("\"abc"), "unterminated string", 0},
    {S("{\"op\":\"publish\", \"channel"), "unterminated string", 17},
    {S("\"a\\"), "unterminated string", 0},
    {S("\"a\x01z\""), "control character in string", 2},
    {S("\"\t\""), "control character in string", 1},
    {S("\"\n\""), "control character in string", 1},
    {S("\"\\x41\""), "invalid escape in string", 1},
    {S("\"\\'\""), "invalid escape in string", 1},
    {S("\"\\u12\""), "invalid \\u escape in string", 1},
    {S("\"\\u12G4\""), "invalid \\u escape in string", 1},
    {S("\"\\u"), "invalid \\u escape in string", 1},
    {S("\"\\uD800\""), "lone surrogate in \\u escape", 1},
    {S("\"\\uDC00\""), "lone surrogate in \\u escape", 1},
    {S("\"x\\uDFFF\\uD800\""), "lone surrogate in \\u escape", 2},
    {S("\"\\uD800\\u0041\""), "lone surrogate in \\u escape", 1},
    {S("\"\\uD800\\uD800\""), "lone surrogate in \\u escape", 1},
    {S("\"\\uD800\\n\""), "lone surrogate in \\u escape", 1},
    {S("\"\xc0\x80\""), "invalid UTF-8 in string", 1},         /* overlong NUL */
    {S("\"\xc1\xbf\""), "invalid UTF-8 in string", 1},         /* overlong */
    {S("\"\xe0\x9f\xbf\""), "invalid UTF-8 in string", 1},     /* overlong 3-byte */
    {S("\"\xf0\x8f\xbf\xbf\""), "invalid UTF-8 in string", 1}, /* overlong 4-byte */
    {S("\"\xed\xa0\x80\""), "invalid UTF-8 in string", 1},     /* raw surrogate */
    {S("\"\xf4\x90\x80\x80\""), "invalid UTF-8 in string", 1}, /* > U+10FFFF */
    {S("\"\xf5\x80\x80\x80\""), "invalid UTF-8 in string", 1},
    {S("\"\xff\""), "invalid UTF-8 in string", 1},
    {S("\"ab\x80\""), "invalid UTF-8 in string", 3},   /* stray continuation */
    {S("\"\xe2\x82\""), "invalid UTF-8 in string", 1}, /* truncated */
    {S("\"\xe2\x82"), "invalid UTF-8 in string", 1},   /* truncated at end of input */
    {S("\"\xc3\""), "invalid UTF-8 in string", 1},
    {S("\"12345678\xc3(\""), "invalid UTF-8 in string", 9},
    {S("\xef\xbb\xbf{}"), "unexpected character", 0}, /* BOM */
    {S("/*c*/{}"), "unexpected character", 0},
    {S("[1,,2]"), "expected a value", 3},
    {S("[,1]"), "expected a value", 1},
    {S("{,}"), "expected string key", 1},
    {S("{\"a\":}"), "expected a value", 5},
    {S("[\0]"), "unexpected character", 1},
    {S("\0"), "unexpected character", 0},
    {S("[1] [2]"), "unexpected data after the JSON value", 4},
    {S("{}x"), "unexpected data after the JSON value", 2},
    {S("1 2"), "unexpected data after the JSON value", 2},
    {S("\"a\" \"b\""), "unexpected data after the JSON value", 4},
    {S("truee"), "unexpected data after the JSON value", 4},
    {S("[truee]"), "expected ',' or ']'", 5},
    {S("tru"), "invalid literal", 0},
    {S("nul"), "invalid literal", 0},
    {S("fals"), "invalid literal", 0},
    {S("True"), "unexpected character", 0},
    {S("["), "unexpected end of input, expected a value", 1},
    {S("[1"), "unexpected end of input in array", 2},
    {S("[1,"), "unexpected end of input, expected a value", 3},
    {S("]"), "expected a value", 0},
    {S("{"), "unexpected end of input in object", 1},
    {S("{\"a\""), "expected ':' after object key", 4},
    {S("{\"a\":"), "unexpected end of input, expected a value", 5},
    {S("{\"a\":1"), "unexpected end of input in object", 6},
    {S("[\"a\"\xc3\xa9]"), "expected ',' or ']'", 4},
    {S("\xc3\xa9"), "unexpected character", 0},
    {S("[1]\x0c"), "unexpected data after the JSON value", 3}, /* form feed is not JSON ws */
    {S("[1,2}"), "expected ',' or ']'", 4},
    {S("{\"a\":1]"), "expected ',' or '}'", 6},
};

static void test_accept_table(void **state)
{
    (void)state;
    px_json_tok_t toks[64];
    px_json_doc_t doc;
    for (size_t i = 0; i < PX_ARRAY_SIZE(yes_cases); i++) {
        const struct yes *c = &yes_cases[i];
        int rc = parse(&doc, c->text, c->len, toks, 64, 0);
        if (rc != (int)c->len)
            fail_msg("case %zu (%.*s): rc %d, %s at %u", i, (int)c->len, c->text, rc,
                     doc.err_msg ? doc.err_msg : "-", doc.err_off);
        assert_int_equal(doc.ntoks, c->ntoks);
        assert_int_equal(doc.err, PX_JSON_OK);
        assert_null(doc.err_msg);
        /* validate-only mode agrees and counts the same tokens */
        assert_int_equal(parse(&doc, c->text, c->len, NULL, 0, 0), (int)c->len);
        assert_int_equal(doc.ntoks, c->ntoks);
    }
}

static void test_reject_table(void **state)
{
    (void)state;
    px_json_tok_t toks[64];
    px_json_doc_t doc;
    for (size_t i = 0; i < PX_ARRAY_SIZE(no_cases); i++) {
        const struct no *c = &no_cases[i];
        int rc = parse(&doc, c->text, c->len, toks, 64, 0);
        if (rc != PX_PARSE_ERROR || doc.err != PX_JSON_E_SYNTAX || strcmp(doc.err_msg, c->msg) ||
            doc.err_off != c->off)
            fail_msg("case %zu: rc %d err %d '%s' at %u, want '%s' at %u", i, rc, doc.err,
                     doc.err_msg ? doc.err_msg : "-", doc.err_off, c->msg, c->off);
        /* validate-only mode reports the same error */
        assert_int_equal(parse(&doc, c->text, c->len, NULL, 0, 0), PX_PARSE_ERROR);
        assert_string_equal(doc.err_msg, c->msg);
        assert_int_equal(doc.err_off, c->off);
    }
}

static void test_error_format(void **state)
{
    (void)state;
    px_json_doc_t doc;
    char buf[64];
    assert_int_equal(parse(&doc, S("{\"op\":\"publish\", \"channel"), NULL, 0, 0), PX_PARSE_ERROR);
    px_json_format_error(&doc, buf, sizeof buf);
    assert_string_equal(buf, "unterminated string at byte 17");
    assert_int_equal(parse(&doc, S("[]"), NULL, 0, 0), 2);
    px_json_format_error(&doc, buf, sizeof buf);
    assert_string_equal(buf, "ok");
    /* truncation keeps the buffer NUL-terminated */
    assert_int_equal(parse(&doc, S("[1,]"), NULL, 0, 0), PX_PARSE_ERROR);
    px_json_format_error(&doc, buf, 8);
    assert_string_equal(buf, "trailin");
}

/* Reference UTF-8 validity, written differently from json.c: decode the code point, then
 * reject overlongs, surrogates and values above U+10FFFF. */
static int ref_utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned long cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void test_utf8_exhaustive(void **state)
{
    (void)state;
    px_json_doc_t doc;
    unsigned char buf[8];
    /* every 1-, 2- and 3-byte sequence of non-ASCII lead, inside a string */
    for (unsigned a = 0x80; a < 0x100; a++) {
        for (unsigned b = 0; b < 0x100; b++) {
            for (unsigned c = 0; c < 0x100; c++) {
                size_t n = 0;
                buf[n++] = '"';
                buf[n++] = (unsigned char)a;
                buf[n++] = (unsigned char)b;
                buf[n++] = (unsigned char)c;
                buf[n++] = '"';
                /* Bytes < 0x20, '"' and '\\' would be judged as JSON, not UTF-8. */
                int plain =
                    b >= 0x20 && b != '"' && b != '\\' && c >= 0x20 && c != '"' && c != '\\';
                if (!plain)
                    continue;
                int want = ref_utf8_ok(buf + 1, 3);
                int got = px_json_parse(&doc, (const char *)buf, n, NULL, 0, 0) == (int)n;
                if (want != got)
                    fail_msg("%02x %02x %02x: want %d got %d", a, b, c, want, got);
            }
        }
    }
    /* 4-byte leads with every second byte and a few third/fourth bytes */
    static const unsigned char tails[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0, 0xff};
    for (unsigned a = 0xf0; a < 0x100; a++)
        for (unsigned b = 0x20; b < 0x100; b++)
            for (size_t ci = 0; ci < sizeof tails; ci++)
                for (size_t di = 0; di < sizeof tails; di++) {
                    unsigned c = tails[ci], d = tails[di];
                    if (b == '"' || b == '\\' || c < 0x20 || d < 0x20)
                        continue;
                    unsigned char s[6] = {
                        '"', (unsigned char)a, (unsigned char)b, (unsigned char)c, (unsigned char)d,
                        '"'};
                    int want = ref_utf8_ok(s + 1, 4);
                    int got = px_json_parse(&doc, (const char *)s, 6, NULL, 0, 0) == 6;
                    if (want != got)
                        fail_msg("%02x %02x %02x %02x: want %d got %d", a, b, c, d, want, got);
                }
}

/* ---- token layout ----------------------------------------------------------------- */

static const char publish[] =
    "{\"op\":\"publish\",\"id\":2,\"channel\":\"room\",\"data\":{\"x\":[1,2,{\"y\":\"z\"}],"
    "\"s\":\"\\u00e9\"} }";

static void test_token_layout(void **state)
{
    (void)state;
    px_json_tok_t t[32];
    px_json_doc_t doc;
    size_t n = sizeof publish - 1;
    assert_int_equal(parse(&doc, publish, n, t, 32, 0), (int)n);
    assert_int_equal(doc.ntoks, 18);
    assert_int_equal(t[0].type, PX_JSON_OBJECT);
    assert_int_equal(t[0].size, 4);
    assert_int_equal(t[0].next, 18);
    assert_int_equal(t[0].start, 0);
    assert_int_equal(t[0].end, n);
    /* "op" key: span excludes quotes */
    assert_int_equal(t[1].type, PX_JSON_STRING);
    assert_memory_equal(doc.src + t[1].start, "op", 2);
    assert_int_equal(t[1].end - t[1].start, 2);
    assert_int_equal(doc.src[t[1].start - 1], '"');
    assert_int_equal(doc.src[t[1].end], '"');
    assert_int_equal(t[4].type, PX_JSON_NUMBER);
    assert_true(t[4].flags & PX_JSON_F_INT);
    /* data object: index 8, children up to 18 */
    int data = px_json_get(&doc, 0, "data");
    assert_int_equal(data, 8);
    assert_int_equal(t[data].type, PX_JSON_OBJECT);
    assert_int_equal(t[data].size, 2);
    assert_int_equal(t[data].next, 18);
    px_str_t raw = px_json_raw(&doc, data);
    const char *want = "{\"x\":[1,2,{\"y\":\"z\"}],\"s\":\"\\u00e9\"}";
    assert_int_equal(raw.len, strlen(want));
    assert_memory_equal(raw.ptr, want, raw.len);
    /* the array inside: 3 elements, skip lands on key "s" */
    int x = px_json_get(&doc, data, "x");
    assert_int_equal(t[x].type, PX_JSON_ARRAY);
    assert_int_equal(t[x].size, 3);
    assert_int_equal(t[t[x].next].type, PX_JSON_STRING);
    assert_true(px_json_streq(&doc, (int)t[x].next, "s", 1));
    /* string raw span includes quotes */
    raw = px_json_raw(&doc, px_json_get(&doc, 0, "channel"));
    assert_int_equal(raw.len, 6);
    assert_memory_equal(raw.ptr, "\"room\"", 6);
    int s = px_json_get(&doc, data, "s");
    assert_true(t[s].flags & PX_JSON_F_ESCAPED);
    assert_true(px_json_streq(&doc, s, "\xc3\xa9", 2));
    /* object iteration idiom from json.h */
    int k = 1;
    const char *names[] = {"op", "id", "channel", "data"};
    for (uint32_t m = 0; m < t[0].size; m++, k = (int)t[k + 1].next)
        assert_true(px_json_streq(&doc, k, names[m], strlen(names[m])));
    assert_int_equal(k, 18);
}

static void test_token_capacity(void **state)
{
    (void)state;
    px_json_tok_t t[32];
    px_json_doc_t doc;
    size_t n = sizeof publish - 1;
    assert_int_equal(parse(&doc, publish, n, NULL, 0, 0), (int)n);
    uint32_t need = doc.ntoks;
    assert_int_equal(need, 18);
    assert_int_equal(parse(&doc, publish, n, t, need, 0), (int)n);
    for (uint32_t cap = 0; cap < need; cap++) {
        memset(t, 0xAA, sizeof t);
        assert_int_equal(parse(&doc, publish, n, t, cap, 0), PX_PARSE_ERROR);
        assert_int_equal(doc.err, PX_JSON_E_TOKENS);
        assert_string_equal(doc.err_msg, "too many tokens");
        /* nothing written past cap */
        for (uint32_t i = cap; i < 32; i++)
            assert_int_equal(t[i].start, 0xAAAAAAAAu);
    }
    /* a large flat array hits the bound at the right element */
    char big[2001];
    for (int i = 0; i < 1000; i++) {
        big[2 * i] = i ? ',' : '[';
        big[2 * i + 1] = '0';
    }
    big[2000] = ']';
    assert_int_equal(parse(&doc, big, sizeof big, t, 32, 0), PX_PARSE_ERROR);
    assert_int_equal(doc.err, PX_JSON_E_TOKENS);
    assert_int_equal(doc.err_off, 2 * 31 + 1);
    assert_int_equal(parse(&doc, big, sizeof big, NULL, 0, 0), (int)sizeof big);
    assert_int_equal(doc.ntoks, 1001);
}

static void test_depth_limit(void **state)
{
    (void)state;
    static char deep[4200];
    px_json_tok_t t[8];
    px_json_doc_t doc;
    /* 64 nested arrays pass with the default limit, 65 do not */
    for (size_t d = 63; d <= 65; d++) {
        memset(deep, '[', d);
        memset(deep + d, ']', d);
        int rc = parse(&doc, deep, 2 * d, NULL, 0, 0);
        if (d <= 64) {
            assert_int_equal(rc, (int)(2 * d));
        } else {
            assert_int_equal(rc, PX_PARSE_ERROR);
            assert_int_equal(doc.err, PX_JSON_E_DEPTH);
            assert_string_equal(doc.err_msg, "nesting too deep");
            assert_int_equal(doc.err_off, 64);
        }
    }
    /* explicit small limit, objects and arrays mixed */
    assert_int_equal(parse(&doc, S("{\"a\":[{\"b\":1}]}"), t, 8, 3), 15);
    assert_int_equal(parse(&doc, S("{\"a\":[{\"b\":[]}]}"), t, 8, 3), PX_PARSE_ERROR);
    assert_int_equal(doc.err, PX_JSON_E_DEPTH);
    assert_int_equal(parse(&doc, S("1"), t, 8, 1), 1);
    /* clamped at PX_JSON_MAX_DEPTH; 2100 levels of '[' never recurse */
    memset(deep, '[', 2100);
    memset(deep + 2100, ']', 2100);
    assert_int_equal(parse(&doc, deep, 4200, NULL, 0, UINT32_MAX), PX_PARSE_ERROR);
    assert_int_equal(doc.err, PX_JSON_E_DEPTH);
    assert_int_equal(doc.err_off, PX_JSON_MAX_DEPTH);
    assert_int_equal(parse(&doc, deep + 2100 - 1024, 2048, NULL, 0, UINT32_MAX), 2048);
    /* alternating object/array nesting keeps track of the container kind across 64-bit words */
    static char alt[64 * 200];
    size_t n = 0;
    for (int i = 0; i < 200; i++) {
        memcpy(alt + n, i % 2 ? "[" : "{\"k\":", i % 2 ? 1 : 5);
        n += i % 2 ? 1 : 5;
    }
    alt[n++] = '0';
    for (int i = 199; i >= 0; i--)
        alt[n++] = i % 2 ? ']' : '}';
    assert_int_equal(parse(&doc, alt, n, NULL, 0, 200), (int)n);
    assert_int_equal(parse(&doc, alt, n, NULL, 0, 199), PX_PARSE_ERROR);
    alt[n - 1] = ']'; /* mismatched closer at the outermost level */
    assert_int_equal(parse(&doc, alt, n, NULL, 0, 200), PX_PARSE_ERROR);
    assert_string_equal(doc.err_msg, "expected ',' or '}'");
}

static void test_too_large(void **state)
{
    (void)state;
    px_json_doc_t doc;
    assert_int_equal(px_json_parse(&doc, "[]", (size_t)PX_JSON_MAX_LEN + 1, NULL, 0, 0),
                     PX_PARSE_ERROR);
    assert_int_equal(doc.err, PX_JSON_E_TOO_LARGE);
}

/* ---- lookups ------------------------------------------------------------------------ */

static void test_get_helpers(void **state)
{
    (void)state;
    px_json_tok_t t[64];
    px_json_doc_t doc;
    static const char text[] =
        "{\"op\":\"subscribe\",\"id\":1,\"channel\":\"room\",\"since\":{\"epoch\":\"ab12\","
        "\"offset\":41},\"presence\":true,\"\\u0063ount\":-7,\"big\":9223372036854775807,"
        "\"min\":-9223372036854775808,\"over\":9223372036854775808,\"frac\":1.0,\"exp\":1e2,"
        "\"u\":18446744073709551615,\"uover\":18446744073709551616,\"neg0\":-0,"
        "\"esc\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\",\"nul\":\"x\\u0000y\"}";
    size_t n = sizeof text - 1;
    assert_int_equal(parse(&doc, text, n, t, 64, 0), (int)n);

    assert_int_equal(px_json_get(&doc, 0, "nope"), -ENOENT);
    assert_int_equal(px_json_get(&doc, 1, "op"), -EINVAL); /* not an object */
    assert_int_equal(px_json_get(&doc, 999, "op"), -EINVAL);
    assert_int_equal(px_json_get(&doc, -1, "op"), -EINVAL);
    int op = px_json_get(&doc, 0, "op");
    assert_true(op > 0);
    assert_true(px_json_streq(&doc, op, "subscribe", 9));
    assert_false(px_json_streq(&doc, op, "subscrib", 8));
    assert_false(px_json_streq(&doc, op, "subscribe!", 10));
    assert_false(px_json_streq(&doc, op - 1 + 3, "subscribe", 9)); /* a number token */

    int64_t v;
    uint64_t u;
    bool b;
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "id"), &v), 0);
    assert_int_equal(v, 1);
    /* escaped key "\u0063ount" == "count" */
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "count"), &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "big"), &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "min"), &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "over"), &v), -ERANGE);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "frac"), &v), -EINVAL);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "exp"), &v), -EINVAL);
    assert_int_equal(px_json_get_i64(&doc, op, &v), -EINVAL);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "neg0"), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(px_json_get_u64(&doc, px_json_get(&doc, 0, "u"), &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(px_json_get_u64(&doc, px_json_get(&doc, 0, "uover"), &u), -ERANGE);
    assert_int_equal(px_json_get_u64(&doc, px_json_get(&doc, 0, "count"), &u), -ERANGE);
    assert_int_equal(px_json_get_u64(&doc, px_json_get(&doc, 0, "neg0"), &u), 0);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, 0, "nope"), &v), -EINVAL);

    assert_int_equal(px_json_get_bool(&doc, px_json_get(&doc, 0, "presence"), &b), 0);
    assert_true(b);
    assert_int_equal(px_json_get_bool(&doc, op, &b), -EINVAL);

    /* nested lookups */
    int since = px_json_get(&doc, 0, "since");
    assert_int_equal(t[since].type, PX_JSON_OBJECT);
    assert_int_equal(px_json_get_i64(&doc, px_json_get(&doc, since, "offset"), &v), 0);
    assert_int_equal(v, 41);
    assert_true(px_json_streq(&doc, px_json_get(&doc, since, "epoch"), "ab12", 4));
    assert_int_equal(px_json_get(&doc, since, "id"), -ENOENT); /* not searched outside */

    /* unescape */
    char buf[64];
    int esc = px_json_get(&doc, 0, "esc");
    const char want[] = "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80";
    assert_int_equal(px_json_unescape(&doc, esc, buf, sizeof buf), (int)sizeof want - 1);
    assert_string_equal(buf, want);
    assert_true(px_json_streq(&doc, esc, want, sizeof want - 1));
    assert_false(px_json_streq(&doc, esc, want, sizeof want - 2));
    /* exact fit needs room for the NUL */
    assert_int_equal(px_json_unescape(&doc, esc, buf, sizeof want), (int)sizeof want - 1);
    assert_int_equal(px_json_unescape(&doc, esc, buf, sizeof want - 1), -ENOSPC);
    assert_int_equal(px_json_unescape(&doc, esc, buf, 0), -ENOSPC);
    assert_int_equal(px_json_unescape(&doc, op, buf, 10), 9);
    assert_int_equal(px_json_unescape(&doc, op, buf, 9), -ENOSPC);
    assert_int_equal(px_json_unescape(&doc, since, buf, sizeof buf), -EINVAL);
    int nul = px_json_get(&doc, 0, "nul");
    assert_int_equal(px_json_unescape(&doc, nul, buf, sizeof buf), 3);
    assert_memory_equal(buf, "x\0y", 4);
    assert_true(px_json_streq(&doc, nul, "x\0y", 3));
    assert_false(px_json_streq(&doc, nul, "x", 1));
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    px_json_tok_t t[32];
    px_json_doc_t doc;
    static const char *const keys[] = {"op", "id", "channel", "data"};
    int at[4];
    size_t dup = 99;

    static const char ok[] = "{\"op\":\"publish\",\"id\":2,\"x\":{\"op\":1},\"data\":{\"op\":2}}";
    assert_int_equal(parse(&doc, ok, sizeof ok - 1, t, 32, 0), (int)sizeof ok - 1);
    assert_int_equal(px_json_get_keys(&doc, 0, keys, 4, at, &dup), 0);
    assert_int_equal(at[0], 2);
    assert_int_equal(at[1], 4);
    assert_int_equal(at[2], -ENOENT);
    assert_int_equal(t[at[3]].type, PX_JSON_OBJECT);
    assert_int_equal(dup, 99);

    static const char twice[] = "{\"op\":\"publish\",\"data\":1,\"op\":\"subscribe\"}";
    assert_int_equal(parse(&doc, twice, sizeof twice - 1, t, 32, 0), (int)sizeof twice - 1);
    assert_int_equal(px_json_get(&doc, 0, "op"), -EEXIST);
    assert_true(px_json_get(&doc, 0, "data") > 0);
    assert_int_equal(px_json_get_keys(&doc, 0, keys, 4, at, &dup), -EEXIST);
    assert_int_equal(dup, 0);
    /* duplicates of keys outside the set are not our business */
    static const char *const others[] = {"id", "data"};
    assert_int_equal(px_json_get_keys(&doc, 0, others, 2, at, NULL), 0);

    /* a duplicate hidden behind an escape is still a duplicate */
    static const char hidden[] = "{\"op\":\"a\",\"\\u006fp\":\"b\"}";
    assert_int_equal(parse(&doc, hidden, sizeof hidden - 1, t, 32, 0), (int)sizeof hidden - 1);
    assert_int_equal(px_json_get(&doc, 0, "op"), -EEXIST);
    assert_int_equal(px_json_get_keys(&doc, 0, keys, 4, at, &dup), -EEXIST);

    assert_int_equal(parse(&doc, S("[1]"), t, 32, 0), 3);
    assert_int_equal(px_json_get_keys(&doc, 0, keys, 4, at, NULL), -EINVAL);
    static const char *const many[33] = {"a"};
    assert_int_equal(parse(&doc, S("{}"), t, 32, 0), 2);
    assert_int_equal(px_json_get_keys(&doc, 0, many, 33, at, NULL), -EINVAL);
}

/* ---- writer ------------------------------------------------------------------------- */

static void test_writer_basic(void **state)
{
    (void)state;
    char buf[128];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"ack\",\"id\":");
    px_json_put_i64(&w, INT64_MIN);
    PX_JSON_PUT_LIT(&w, ",\"a\":");
    px_json_put_i64(&w, INT64_MAX);
    PX_JSON_PUT_LIT(&w, ",\"u\":");
    px_json_put_u64(&w, UINT64_MAX);
    PX_JSON_PUT_LIT(&w, ",\"z\":");
    px_json_put_i64(&w, 0);
    PX_JSON_PUT_LIT(&w, ",\"s\":");
    px_json_put_str(&w, "", 0);
    PX_JSON_PUT_LIT(&w, ",\"d\":");
    px_json_put_raw(&w, "[1]", 3);
    PX_JSON_PUT_LIT(&w, "}");
    assert_int_equal(w.err, 0);
    const char want[] = "{\"op\":\"ack\",\"id\":-9223372036854775808,\"a\":9223372036854775807,"
                        "\"u\":18446744073709551615,\"z\":0,\"s\":\"\",\"d\":[1]}";
    assert_int_equal(w.len, sizeof want - 1);
    assert_memory_equal(buf, want, w.len);
    px_json_doc_t doc;
    assert_int_equal(px_json_parse(&doc, buf, w.len, NULL, 0, 0), (int)w.len);
    px_json_writer_dispose(&w); /* fixed writers: no-op */
    px_json_writer_dispose(NULL);
}

static void test_writer_escaping(void **state)
{
    (void)state;
    char in[256], out[2048], back[512];
    px_json_tok_t t[2];
    px_json_doc_t doc;
    px_json_writer_t w;
    /* every ASCII byte, then valid multi-byte UTF-8 */
    for (int i = 0; i < 128; i++)
        in[i] = (char)i;
    const char mb[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf";
    memcpy(in + 128, mb, sizeof mb - 1);
    size_t n = 128 + sizeof mb - 1;
    px_json_writer_init(&w, out, sizeof out);
    px_json_put_str(&w, in, n);
    assert_int_equal(w.err, 0);
    assert_int_equal(px_json_parse(&doc, out, w.len, t, 2, 0), (int)w.len);
    assert_int_equal(t[0].type, PX_JSON_STRING);
    assert_int_equal(px_json_unescape(&doc, 0, back, sizeof back), (int)n);
    assert_memory_equal(back, in, n);
    assert_true(px_json_streq(&doc, 0, in, n));
    /* short escapes are used where they exist */
    px_json_writer_init(&w, out, sizeof out);
    px_json_put_str(&w, "a\"\\\b\f\n\r\t\x01\x1f/", 11);
    const char want[] = "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f/\"";
    assert_int_equal(w.len, sizeof want - 1);
    assert_memory_equal(out, want, w.len);
    /* invalid UTF-8 becomes U+FFFD per byte; valid neighbours survive */
    px_json_writer_init(&w, out, sizeof out);
    px_json_put_str(&w, "a\xff\xc3\xa9\xc3(\xed\xa0\x80z", 10);
    const char want2[] = "\"a\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd("
                         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz\"";
    assert_int_equal(w.len, sizeof want2 - 1);
    assert_memory_equal(out, want2, w.len);
    assert_int_equal(px_json_parse(&doc, out, w.len, NULL, 0, 0), (int)w.len);
}

static void test_writer_overflow(void **state)
{
    (void)state;
    char buf[16];
    px_json_writer_t w;
    /* exact fit */
    px_json_writer_init(&w, buf, 7);
    px_json_put_str(&w, "hello", 5);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 7);
    /* one short: sticky error, nothing past cap, later small puts do not resume */
    memset(buf, 'X', sizeof buf);
    px_json_writer_init(&w, buf, 6);
    px_json_put_str(&w, "hello", 5);
    assert_int_equal(w.err, -ENOSPC);
    assert_true(w.len <= 6);
    assert_int_equal(buf[6], 'X');
    size_t len = w.len;
    px_json_put_raw(&w, "", 0);
    px_json_put_i64(&w, 1);
    assert_int_equal(w.len, len);
    assert_int_equal(w.err, -ENOSPC);
    px_json_writer_reset(&w);
    px_json_put_u64(&w, 123456);
    assert_int_equal(w.err, 0);
    assert_memory_equal(buf, "123456", 6);
    px_json_writer_init(&w, NULL, 0);
    px_json_put_raw(&w, "x", 1);
    assert_int_equal(w.err, -ENOSPC);
}

static int fail_alloc_after = -1;
static void *oom_malloc(size_t n)
{
    if (fail_alloc_after == 0)
        return NULL;
    if (fail_alloc_after > 0)
        fail_alloc_after--;
    return malloc(n);
}
static void *oom_realloc(void *p, size_t n)
{
    if (fail_alloc_after == 0)
        return NULL;
    if (fail_alloc_after > 0)
        fail_alloc_after--;
    return realloc(p, n);
}

static void test_writer_growable(void **state)
{
    (void)state;
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 4096);
    for (int i = 0; i < 1000; i++)
        px_json_put_raw(&w, "ab", 2);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 2000);
    assert_true(w.cap >= 2000 && w.cap <= 4096);
    for (int i = 0; i < 1048; i++)
        px_json_put_raw(&w, "ab", 2);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 4096);
    px_json_put_raw(&w, "c", 1); /* limit reached */
    assert_int_equal(w.err, -ENOSPC);
    px_json_writer_dispose(&w);
    assert_null(w.buf);

    /* a single put larger than the limit fails without allocating a huge buffer */
    px_json_writer_init_growable(&w, 100);
    static char big[200];
    px_json_put_raw(&w, big, sizeof big);
    assert_int_equal(w.err, -ENOSPC);
    px_json_writer_dispose(&w);
    px_json_writer_init_growable(&w, 0);
    px_json_put_raw(&w, "x", 1);
    assert_int_equal(w.err, -ENOSPC);
    px_json_writer_dispose(&w);

    /* allocation failure: -ENOMEM, sticky, the buffer so far is kept and freed by dispose */
    assert_int_equal(px_set_allocator(oom_malloc, oom_realloc, calloc, free), 0);
    for (int fail_at = 0; fail_at < 4; fail_at++) {
        fail_alloc_after = fail_at;
        px_json_writer_init_growable(&w, 1 << 20);
        for (int i = 0; i < 4000; i++)
            px_json_put_str(&w, "abc", 3);
        assert_int_equal(w.err, -ENOMEM);
        px_json_writer_dispose(&w);
    }
    fail_alloc_after = -1;
    assert_int_equal(px_set_allocator(malloc, realloc, calloc, free), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_table),    cmocka_unit_test(test_reject_table),
        cmocka_unit_test(test_error_format),    cmocka_unit_test(test_utf8_exhaustive),
        cmocka_unit_test(test_token_layout),    cmocka_unit_test(test_token_capacity),
        cmocka_unit_test(test_depth_limit),     cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_get_helpers),     cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_writer_basic),    cmocka_unit_test(test_writer_escaping),
        cmocka_unit_test(test_writer_overflow), cmocka_unit_test(test_writer_growable),
    };
    return cmocka_run_group_tests(tests, setup_guards, teardown_guards);
}
