/* Unit tests for the HTTP/1.1 request parser and the chunked decoder.
 *
 * Every case runs on every implementation this CPU has (scalar, sse4.2, avx2)
 * and is fed whole, one byte at a time, and split in two at every position.
 * Input is placed right before (or right after) a PROT_NONE page, so a read
 * past buf + len (or before buf) crashes, and successive calls see the data at
 * different addresses, so a parser that kept pointers instead of offsets would
 * be caught.
 *
 * The parser source is included (not linked) to reach its byte-class table and
 * scanners, and to count scanned bytes (PX_HTTP1_TEST_HOOKS). It comes before
 * cmocka.h, whose fail() macro would otherwise apply to it. */
#define PX_HTTP1_TEST_HOOKS 1
#include "http/http1_parse.c"

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

#define GUARD_ROOM (64 * 1024) /* largest input a test places */
#include "guard.h"

/* ---- implementations ------------------------------------------------------------------- */

static const int all_impls[] = {PX__HTTP1_IMPL_SCALAR, PX__HTTP1_IMPL_SSE42, PX__HTTP1_IMPL_AVX2};

/* Switch to impls[i]; 0 if this CPU lacks it (the scalar one always works). */
static int use_impl(size_t i)
{
    return px__http1_force_impl(all_impls[i]) == 0;
}

/* ---- request cases --------------------------------------------------------------------- */

enum { CHK = 1, KA = 2, EXP = 4, EXPO = 8, UPG = 16, HEAD = 32 };
#define INCOMPLETE 1                 /* .status for input that never completes a head */
#define NONE       ((const char *)1) /* expected span {NULL, 0} */

typedef struct rcase {
    const char *name;
    const char *in;
    size_t len;  /* 0: strlen(in) */
    int status;  /* 0: valid; INCOMPLETE; else the expected error status */
    size_t tail; /* valid: bytes after the head (body, next request) */
    const char *method, *target, *path, *query, *host, *upgrade_proto; /* NULL: not checked */
    int minor;       /* valid: expected minor version */
    int nhdr;        /* valid: expected header count, -1: not checked */
    int64_t cl;      /* valid: expected content_length */
    unsigned bits;   /* valid: CHK | KA | ... exactly */
    const char *why; /* error: the expected reason, if given */
} rcase_t;

/* V() gives defaults that a case may override: designated initializers
 * naming a field twice are intended here. */
#pragma GCC diagnostic ignored "-Woverride-init"

#define GET11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define V(...)                                                                                     \
    {                                                                                              \
        .status = 0, .minor = 1, .nhdr = -1, .cl = -1, .bits = KA, __VA_ARGS__                     \
    }
#define E(st, ...)                                                                                 \
    {                                                                                              \
        .status = st, __VA_ARGS__                                                                  \
    }

static const rcase_t req_cases[] = {
    /* ---- valid ---- */
    V(.name = "simple", .in = "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
      .method = "GET", .target = "/index.html", .path = "/index.html", .query = NONE,
      .host = "example.com", .upgrade_proto = NONE, .nhdr = 1),
    V(.name = "http/1.0 no host", .in = "GET / HTTP/1.0\r\n\r\n", .minor = 0, .bits = 0,
      .host = NONE, .nhdr = 0),
    V(.name = "http/1.0 keep-alive", .in = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
      .minor = 0, .bits = KA),
    V(.name = "http/1.0 close wins",
      .in = "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", .minor = 0, .bits = 0),
    V(.name = "connection close", .in = GET11 "Connection: close\r\n\r\n", .bits = 0),
    V(.name = "connection CLOSE two fields",
      .in = GET11 "Connection: te\r\nconnection: , CLOSE ,\r\n\r\n", .bits = 0),
    V(.name = "lower-case names",
      .in = "POST /u HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\nconnection: upgrade\r\n"
            "upgrade: websocket\r\nexpect: 100-continue\r\n\r\nhello",
      .tail = 5, .host = "h", .cl = 5, .bits = KA | UPG | EXP, .upgrade_proto = "websocket",
      .nhdr = 5),
    V(.name = "upper-case names",
      .in = "POST / HTTP/1.1\r\nHOST: h\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n", .bits = KA | CHK),
    V(.name = "websocket upgrade",
      .in =
          "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
          "Sec-WebSocket-Version: 13\r\n\r\n",
      .bits = KA | UPG, .upgrade_proto = "websocket"),
    V(.name = "upgrade without connection token", .in = GET11 "Upgrade: h2c\r\n\r\n", .bits = KA,
      .upgrade_proto = "h2c"),
    V(.name = "upgrade on 1.0 ignored",
      .in = "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", .minor = 0,
      .bits = 0, .upgrade_proto = "websocket"),
    V(.name = "empty upgrade", .in = GET11 "Connection: upgrade\r\nUpgrade:\r\n\r\n", .bits = KA,
      .upgrade_proto = ""),
    V(.name = "query", .in = "GET /a/b?x=1&y=?2 HTTP/1.1\r\nHost: a\r\n\r\n", .path = "/a/b",
      .query = "x=1&y=?2", .target = "/a/b?x=1&y=?2"),
    V(.name = "empty query", .in = "GET /? HTTP/1.1\r\nHost: a\r\n\r\n", .path = "/", .query = ""),
    V(.name = "visible ascii in target",
      .in = "GET /!$&'()*+,;=:@-._~%20[]{}|\\^`\"<> HTTP/1.1\r\nHost: a\r\n\r\n",
      .path = "/!$&'()*+,;=:@-._~%20[]{}|\\^`\"<>", .query = NONE),
    V(.name = "absolute-form",
      .in = "GET http://example.com:8080/p/q?x=y HTTP/1.1\r\nHost: other\r\n\r\n",
      .host = "example.com:8080", .path = "/p/q", .query = "x=y",
      .target = "http://example.com:8080/p/q?x=y"),
    V(.name = "absolute-form no path", .in = "GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n",
      .host = "example.com", .path = "/", .query = NONE),
    V(.name = "absolute-form https query only",
      .in = "GET HTTPS://Ex.com?a HTTP/1.1\r\nHost: x\r\n\r\n", .host = "Ex.com", .path = "/",
      .query = "a"),
    V(.name = "asterisk-form", .in = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", .method = "OPTIONS",
      .path = "*", .query = NONE),
    V(.name = "authority-form",
      .in = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
      .host = "example.com:443", .path = NONE, .query = NONE, .target = "example.com:443"),
    V(.name = "leading empty lines", .in = "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
      .method = "GET"),
    V(.name = "pipelined", .in = GET11 "\r\n" GET11 "\r\n", .tail = 27, .nhdr = 1),
    V(.name = "body follows", .in = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
      .tail = 4, .cl = 4),
    V(.name = "ows trimmed", .in = GET11 "X-A: \t a b \t\r\nX-B:\r\nX-C:    \r\n\r\n", .nhdr = 4),
    V(.name = "obs-text and htab in value", .in = GET11 "X: caf\xc3\xa9\tok\xff\x80\r\n\r\n",
      .nhdr = 2),
    V(.name = "expect 100-continue", .in = GET11 "Expect: 100-Continue\r\n\r\n", .bits = KA | EXP),
    V(.name = "expect other", .in = GET11 "Expect: foo=bar\r\n\r\n", .bits = KA | EXPO),
    V(.name = "expect both", .in = GET11 "Expect: 100-continue, x\r\n\r\n",
      .bits = KA | EXP | EXPO),
    V(.name = "expect on 1.0 ignored", .in = "GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
      .minor = 0, .bits = 0),
    V(.name = "head", .in = "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", .bits = KA | HEAD),
    V(.name = "head is case-sensitive", .in = "head / HTTP/1.1\r\nHost: a\r\n\r\n", .bits = KA,
      .method = "head"),
    V(.name = "extension method", .in = "M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n",
      .method = "M-SEARCH"),
    V(.name = "token method", .in = "PURGE! /x HTTP/1.1\r\nHost: a\r\n\r\n", .method = "PURGE!"),
    V(.name = "te chunked",
      .in = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", .bits = KA | CHK),
    V(.name = "te empty elements", .in = GET11 "Transfer-Encoding: , chunked ,\r\n\r\n",
      .bits = KA | CHK),
    V(.name = "content-length zero", .in = GET11 "Content-Length: 0\r\n\r\n", .cl = 0),
    V(.name = "content-length leading zeros", .in = GET11 "Content-Length: 007\r\n\r\n", .cl = 7),
    V(.name = "content-length max", .in = GET11 "Content-Length: 9223372036854775807\r\n\r\n",
      .cl = INT64_MAX),
    V(.name = "ipv6 host", .in = "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
      .host = "[::1]:8080"),
    V(.name = "ipv6 host no port", .in = "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", .host = "[::1]"),
    V(.name = "host empty port", .in = "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", .host = "a:"),
    V(.name = "host ipv4 port", .in = "GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
      .host = "10.0.0.1:80"),
    V(.name = "long header value",
      .in = GET11 "X-Long: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n\r\n",
      .nhdr = 2),
    V(.name = "long header name",
      .in = GET11 "X-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef: v\r\n\r\n",
      .nhdr = 2),
    V(.name = "all tchars in name",
      .in = GET11 "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ: v"
                  "\r\n\r\n",
      .nhdr = 2),
    V(.name = "browser",
      .in = "GET /static/app.js?v=1234 HTTP/1.1\r\n"
            "Host: www.example.com\r\n"
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
            "Accept: */*\r\n"
            "Accept-Language: en-US,en;q=0.5\r\n"
            "Accept-Encoding: gzip, deflate, br\r\n"
            "Referer: https://www.example.com/\r\n"
            "Connection: keep-alive\r\n"
            "Cookie: session=abcdef0123456789; theme=dark\r\n"
            "Sec-Fetch-Dest: script\r\n"
            "Sec-Fetch-Mode: no-cors\r\n\r\n",
      .nhdr = 10, .host = "www.example.com", .path = "/static/app.js", .query = "v=1234"),

    /* ---- incomplete ---- */
    E(INCOMPLETE, .name = "no final crlf", .in = GET11),
    E(INCOMPLETE, .name = "half crlf", .in = GET11 "\r"),
    E(INCOMPLETE, .name = "empty", .in = ""),
    E(INCOMPLETE, .name = "only empty lines", .in = "\r\n\r\n"),

    /* ---- framing ---- */
    E(400, .name = "cl and te", .why = "both Content-Length and Transfer-Encoding",
      .in = GET11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E(400, .name = "te and cl", .why = "both Content-Length and Transfer-Encoding",
      .in = GET11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
    E(400, .name = "te gzip and cl",
      .in = GET11 "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"),
    E(400, .name = "two equal cl", .why = "multiple Content-Length fields",
      .in = GET11 "Content-Length: 5\r\ncontent-length: 5\r\n\r\n"),
    E(400, .name = "cl list", .in = GET11 "Content-Length: 5, 5\r\n\r\n"),
    E(400, .name = "cl letters", .why = "invalid Content-Length",
      .in = GET11 "Content-Length: abc\r\n\r\n"),
    E(400, .name = "cl negative", .in = GET11 "Content-Length: -1\r\n\r\n"),
    E(400, .name = "cl plus", .in = GET11 "Content-Length: +5\r\n\r\n"),
    E(400, .name = "cl inner space", .in = GET11 "Content-Length: 1 2\r\n\r\n"),
    E(400, .name = "cl empty", .in = GET11 "Content-Length:\r\n\r\n"),
    E(400, .name = "cl hex", .in = GET11 "Content-Length: 0x10\r\n\r\n"),
    E(400, .name = "cl overflow", .why = "Content-Length too large",
      .in = GET11 "Content-Length: 9223372036854775808\r\n\r\n"),
    E(400, .name = "cl huge", .in = GET11 "Content-Length: 99999999999999999999999999\r\n\r\n"),
    E(501, .name = "te gzip chunked", .why = "unsupported transfer coding",
      .in = GET11 "Transfer-Encoding: gzip, chunked\r\n\r\n"),
    E(501, .name = "te gzip", .in = GET11 "Transfer-Encoding: gzip\r\n\r\n"),
    E(501, .name = "te identity", .in = GET11 "Transfer-Encoding: identity\r\n\r\n"),
    E(501, .name = "te gzip params", .in = GET11 "Transfer-Encoding: foo;a=b, chunked\r\n\r\n"),
    E(501, .name = "te two fields unknown first",
      .in = GET11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E(400, .name = "te chunked gzip", .why = "chunked is not the final transfer coding",
      .in = GET11 "Transfer-Encoding: chunked, gzip\r\n\r\n"),
    E(400, .name = "te chunked twice", .why = "chunked applied more than once",
      .in = GET11 "Transfer-Encoding: chunked, chunked\r\n\r\n"),
    E(400, .name = "te chunked twice fields",
      .in = GET11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E(400, .name = "te chunked then gzip field",
      .in = GET11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"),
    E(400, .name = "te chunked params", .in = GET11 "Transfer-Encoding: chunked;x=1\r\n\r\n"),
    E(400, .name = "te quoted", .in = GET11 "Transfer-Encoding: \"chunked\"\r\n\r\n"),
    E(400, .name = "te empty", .in = GET11 "Transfer-Encoding:\r\n\r\n"),
    E(400, .name = "te commas only", .in = GET11 "Transfer-Encoding: , ,\r\n\r\n"),
    E(400, .name = "te chunked junk", .in = GET11 "Transfer-Encoding: chunked x\r\n\r\n"),
    E(400, .name = "te on 1.0", .why = "Transfer-Encoding in an HTTP/1.0 request",
      .in = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),

    /* ---- line syntax ---- */
    E(400, .name = "obs-fold", .why = "obsolete line folding", .in = GET11 "X: a\r\n b\r\n\r\n"),
    E(400, .name = "obs-fold tab", .in = GET11 "X: a\r\n\tb\r\n\r\n"),
    E(400, .name = "space before first field", .why = "whitespace before the first field line",
      .in = "GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    E(400, .name = "bare cr in request line", .in = "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "bare cr after version", .in = "GET / HTTP/1.1\rHost: a\r\n\r\n"),
    E(400, .name = "bare cr in value", .why = "bare CR", .in = GET11 "X: a\rb\r\n\r\n"),
    E(400, .name = "bare cr end of value", .in = GET11 "X: a\r\r\n\r\n"),
    E(400, .name = "bare cr in name", .in = GET11 "X\r: a\r\n\r\n"),
    E(400, .name = "bare cr final line", .in = GET11 "\rX\r\n"),
    E(400, .name = "bare cr leading", .in = "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "bare lf request line", .in = "GET / HTTP/1.1\nHost: a\r\n\r\n"),
    E(400, .name = "bare lf field line", .why = "bare LF", .in = GET11 "X: a\n\r\n"),
    E(400, .name = "bare lf final", .why = "bare LF", .in = GET11 "\n"),
    E(400, .name = "bare lf only", .in = "GET / HTTP/1.1\nHost: a\n\n"),
    E(400, .name = "bare lf leading", .why = "bare LF",
      .in = "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "bare lf in name", .in = GET11 "X\n: a\r\n\r\n"),
    E(400, .name = "space before colon", .why = "whitespace between field name and colon",
      .in = "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    E(400, .name = "tab before colon", .in = GET11 "X\t: a\r\n\r\n"),
    E(400, .name = "empty name", .why = "empty field name", .in = GET11 ": a\r\n\r\n"),
    E(400, .name = "no colon", .why = "field line without a colon", .in = GET11 "Xyz\r\n\r\n"),
    E(400, .name = "quote in name", .why = "invalid character in field name",
      .in = GET11 "X\"y: a\r\n\r\n"),
    E(400, .name = "at in name", .in = GET11 "X@y: a\r\n\r\n"),
    E(400, .name = "non-ascii in name", .in = GET11 "H\xc3\xb6st: a\r\n\r\n"),
    E(400, .name = "nul in name", .in = GET11 "X\0y: a\r\n\r\n",
      .len = sizeof(GET11 "X\0y: a\r\n\r\n") - 1),
    E(400, .name = "nul in value", .in = GET11 "X: a\0b\r\n\r\n",
      .len = sizeof(GET11 "X: a\0b\r\n\r\n") - 1),
    E(400, .name = "ctl in value", .in = GET11 "X: a\x01 b\r\n\r\n"),
    E(400, .name = "esc in value", .in = GET11 "X: a\x1b[31m\r\n\r\n"),
    E(400, .name = "del in value", .why = "invalid character in field value",
      .in = GET11 "X: a\x7f\r\n\r\n"),
    E(400, .name = "too many empty lines", .why = "too many empty lines before the request line",
      .in = "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),

    /* ---- request line ---- */
    E(400, .name = "paren in method", .why = "invalid character in method",
      .in = "G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "non-ascii method", .in = "GE\x80T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "empty method", .in = " / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "double space", .in = "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "tab separator", .in = "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "space in target", .in = "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "ctl in target", .in = "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "del in target", .in = "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "non-ascii in target", .why = "invalid character in request target",
      .in = "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "fragment", .why = "fragment in request target",
      .in = "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "fragment after query", .in = "GET /a?x#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "http/0.9", .why = "missing HTTP version", .in = "GET /\r\n\r\n"),
    E(400, .name = "trailing space after version", .in = "GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    E(400, .name = "lower-case version", .in = "GET / http/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "version 1.10", .why = "invalid HTTP version",
      .in = "GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
    E(400, .name = "version 11", .in = "GET / HTTP/11\r\nHost: a\r\n\r\n"),
    E(400, .name = "version no minor", .in = "GET / HTTP/1\r\nHost: a\r\n\r\n"),
    E(400, .name = "version letters", .in = "GET / HTTP/a.b\r\nHost: a\r\n\r\n"),
    V(.name = "http/1.2 as 1.1", .in = "GET / HTTP/1.2\r\nHost: a\r\n\r\n", .minor = 1),
    V(.name = "http/1.9 as 1.1",
      .in = "GET / HTTP/1.9\r\nHost: a\r\nConnection: upgrade\r\n"
            "Upgrade: websocket\r\n\r\n",
      .minor = 1, .bits = KA | UPG, .upgrade_proto = "websocket"),
    V(.name = "http/1.5 needs host too", .in = "GET / HTTP/1.5\r\n\r\n", .status = 400),
    E(505, .name = "http/2.0", .why = "HTTP version not supported",
      .in = "GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    E(505, .name = "http/2.1", .in = "GET / HTTP/2.1\r\nHost: a\r\n\r\n"),
    E(505, .name = "http/9.9", .in = "GET / HTTP/9.9\r\nHost: a\r\n\r\n"),
    E(505, .name = "http/0.9 versioned", .in = "GET / HTTP/0.9\r\nHost: a\r\n\r\n"),
    E(505, .name = "http/3.0 early", .in = "GET / HTTP/3.0"),
    E(400, .name = "asterisk with get",
      .why = "asterisk-form target with a method other than OPTIONS",
      .in = "GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "connect origin-form", .in = "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "connect without port", .in = "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "connect empty port", .in = "CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "connect bad port", .in = "CONNECT example.com:8a HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "connect path", .in = "CONNECT a.com:1/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "ftp scheme", .in = "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "relative target", .in = "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "empty authority", .in = "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "userinfo", .why = "userinfo in request target",
      .in = "GET http://u:p@h/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "bad authority", .in = "GET http://h\"x/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E(400, .name = "scheme only", .in = "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"),

    /* ---- host and other fields ---- */
    E(400, .name = "missing host", .why = "missing Host", .in = "GET / HTTP/1.1\r\nX: a\r\n\r\n"),
    E(400, .name = "absolute-form still needs host", .in = "GET http://a/ HTTP/1.1\r\n\r\n"),
    E(400, .name = "two hosts", .why = "multiple Host fields",
      .in = "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
    E(400, .name = "host with space", .in = "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    E(400, .name = "empty host", .why = "empty Host", .in = "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    E(400, .name = "blank host", .why = "empty Host", .in = "GET / HTTP/1.1\r\nHost:  \t \r\n\r\n"),
    E(400, .name = "empty host on 1.0", .in = "GET / HTTP/1.0\r\nHost:\r\n\r\n"),
    E(400, .name = "empty host absolute-form", .in = "GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n"),
    E(400, .name = "empty host before port", .why = "invalid Host",
      .in = "GET / HTTP/1.1\r\nHost: :80\r\n\r\n"),
    E(400, .name = "host two colons", .in = "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n"),
    E(400, .name = "host bad port", .in = "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"),
    E(400, .name = "host unclosed bracket", .in = "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"),
    E(400, .name = "host empty brackets", .in = "GET / HTTP/1.1\r\nHost: []:80\r\n\r\n"),
    E(400, .name = "host bracket inside", .in = "GET / HTTP/1.1\r\nHost: a]b\r\n\r\n"),
    E(400, .name = "host after bracket", .in = "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"),
    E(400, .name = "host with slash", .why = "invalid Host",
      .in = "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    E(400, .name = "host with userinfo", .in = "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
    E(400, .name = "host non-ascii", .in = "GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n"),
    E(400, .name = "two upgrades", .why = "multiple Upgrade fields",
      .in = GET11 "Upgrade: a\r\nUpgrade: b\r\n\r\n"),
    E(400, .name = "bad connection", .in = GET11 "Connection: close;x\r\n\r\n"),
    E(400, .name = "bad connection quote", .in = GET11 "Connection: \"close\"\r\n\r\n"),
};

/* What a call returned, for comparing feeding modes. */
typedef struct outcome {
    int rc;
    int status;
} outcome_t;

static const char *g_case; /* names the failing case in messages */
static const char *g_mode;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("case \"%s\" [%s, %s]: %s\n", g_case, px__http1_impl_name(g_impl), g_mode, \
                        #cond);                                                                    \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

static int in_buf(const char *ptr, size_t n, const char *buf, size_t len)
{
    return ptr >= buf && ptr + n <= buf + len;
}

static void check_span(px_str_t s, const char *want)
{
    if (!want)
        return;
    if (want == NONE) {
        CHECK(s.ptr == NULL && s.len == 0);
        return;
    }
    CHECK(s.ptr != NULL);
    CHECK(s.len == strlen(want));
    CHECK(memcmp(s.ptr, want, s.len) == 0);
}

/* `head`: the expected head length; buf[0..len) was the parsed input. */
static void check_request(const rcase_t *c, int rc, const px__http1_request_t *r, const char *buf,
                          size_t len, size_t head)
{
    if (c->status == INCOMPLETE) {
        CHECK(rc == PX_PARSE_INCOMPLETE);
        return;
    }
    if (c->status) {
        CHECK(rc == PX_PARSE_ERROR);
        CHECK(r->status == c->status);
        CHECK(r->error != NULL && r->error[0] != '\0');
        if (c->why && strcmp(r->error, c->why) != 0)
            print_error("error \"%s\", want \"%s\"\n", r->error, c->why);
        CHECK(!c->why || strcmp(r->error, c->why) == 0);
        return;
    }
    CHECK(rc >= 0 && head <= len);
    CHECK((size_t)rc == head);
    CHECK(memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
    check_span(r->method, c->method);
    check_span(r->target, c->target);
    check_span(r->path, c->path);
    check_span(r->query, c->query);
    check_span(r->host, c->host);
    check_span(r->upgrade_proto, c->upgrade_proto);
    CHECK(r->minor_version == c->minor);
    if (c->nhdr >= 0)
        CHECK(r->num_headers == (size_t)c->nhdr);
    CHECK(r->content_length == c->cl);
    unsigned bits = (r->chunked ? CHK : 0) | (r->keep_alive ? KA : 0) |
                    (r->expect_continue ? EXP : 0) | (r->expect_other ? EXPO : 0) |
                    (r->upgrade ? UPG : 0) | (r->is_head ? HEAD : 0);
    CHECK(bits == c->bits);
    /* every span lies inside the head (path "/" of absolute-form aside) */
    CHECK(in_buf(r->method.ptr, r->method.len, buf, head));
    CHECK(in_buf(r->target.ptr, r->target.len, buf, head));
    CHECK(!r->path.ptr || in_buf(r->path.ptr, r->path.len, buf, head) ||
          (r->path.len == 1 && r->path.ptr[0] == '/'));
    CHECK(!r->query.ptr || in_buf(r->query.ptr, r->query.len, buf, head));
    CHECK(!r->host.ptr || in_buf(r->host.ptr, r->host.len, buf, head));
    for (size_t i = 0; i < r->num_headers; i++) {
        const px__http_header_t *h = &r->headers[i];
        CHECK(h->name.len > 0 && in_buf(h->name.ptr, h->name.len, buf, head));
        CHECK(in_buf(h->value.ptr, h->value.len, buf, head));
        CHECK(h->name.ptr[h->name.len] == ':');
        if (h->value.len) {
            CHECK(!is_ows(h->value.ptr[0]) && !is_ows(h->value.ptr[h->value.len - 1]));
            CHECK(memchr(h->value.ptr, '\r', h->value.len) == NULL);
        }
    }
}

#define NHDR 128

/* Parse `in` in pieces: ends[0] < ends[1] < ... = prefix lengths given on
 * successive calls, the first copy starting right after a guard page, the
 * others ending right before one, alternating between the two guard areas so
 * the buffer moves every call. Stops at the first final
 * result. Returns it; *last_len is the length of the prefix that produced it. */
static outcome_t feed(const char *in, const size_t *ends, size_t nends, px__http1_request_t *req,
                      px__http_header_t *hdrs, size_t cap, const px__http1_limits_t *lim,
                      const char **last_buf, size_t *last_len)
{
    px__http1_parser_t p;
    px__http1_parser_init(&p);
    req->headers = hdrs;
    outcome_t o = {PX_PARSE_INCOMPLETE, 0};
    for (size_t i = 0; i < nends; i++) {
        /* the first call's data starts at a guard page, later ones end at one */
        const char *b = i ? guard_put((int)(i & 1), in, ends[i]) : guard_put_front(0, in, ends[i]);
        o.rc = px__http1_parse_request(&p, b, ends[i], req, cap, lim);
        *last_buf = b;
        *last_len = ends[i];
        if (o.rc != PX_PARSE_INCOMPLETE) {
            o.status = o.rc == PX_PARSE_ERROR ? req->status : 0;
            break;
        }
    }
    return o;
}

/* Run one case in all three feeding modes on the current implementation. */
static void run_request(const rcase_t *c, const char *in, size_t n, size_t cap,
                        const px__http1_limits_t *lim)
{
    px__http_header_t hdrs[NHDR];
    px__http1_request_t req;
    const char *b;
    size_t blen, ends[2];
    g_case = c->name;

    /* (a) whole */
    g_mode = "whole";
    ends[0] = n;
    outcome_t whole = feed(in, ends, 1, &req, hdrs, cap, lim, &b, &blen);
    size_t head = n - c->tail;
    check_request(c, whole.rc, &req, b, n, head);

    /* (b) one byte more per call (a first call with 0 bytes included). Like
     * the server does, the finished entries move to another header array
     * between calls; the entries past them are garbage. */
    g_mode = "byte by byte";
    {
        static px__http_header_t other[NHDR];
        px__http_header_t *arrays[2] = {hdrs, other};
        px__http1_parser_t p;
        px__http1_parser_init(&p);
        req.headers = hdrs;
        int rc = PX_PARSE_INCOMPLETE;
        size_t i;
        for (i = 0; i <= n; i++) {
            b = guard_put((int)(i & 1), in, i);
            rc = px__http1_parse_request(&p, b, i, &req, cap, lim);
            if (rc != PX_PARSE_INCOMPLETE)
                break;
            px__http_header_t *next = arrays[(i + 1) & 1];
            memset(next, 0xa5, sizeof(px__http_header_t) * NHDR);
            memcpy(next, req.headers, req.num_headers * sizeof *next);
            req.headers = next;
        }
        CHECK(rc == whole.rc);
        if (rc == PX_PARSE_ERROR)
            CHECK(req.status == whole.status);
        else if (rc >= 0)
            CHECK(i == (size_t)rc); /* known exactly when its last byte arrives */
        if (c->status == 0)
            check_request(c, rc, &req, b, i, head);
    }

    /* (c) split in two at every position, buffer moved between the calls */
    g_mode = "split";
    for (size_t k = 0; k < n; k++) {
        ends[0] = k;
        ends[1] = n;
        outcome_t o = feed(in, ends, 2, &req, hdrs, cap, lim, &b, &blen);
        CHECK(o.rc == whole.rc && o.status == whole.status);
        if (c->status == 0)
            check_request(c, o.rc, &req, b, blen, head);
    }
}

static void test_request_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_SIZE(all_impls); i++) {
        if (!use_impl(i))
            continue;
        for (size_t j = 0; j < PX_ARRAY_SIZE(req_cases); j++) {
            const rcase_t *c = &req_cases[j];
            size_t n = c->len ? c->len : strlen(c->in);
            run_request(c, c->in, n, NHDR, NULL);
        }
    }
    px__http1_force_impl(PX__HTTP1_IMPL_AUTO);
}

/* ---- field contents and lookup -------------------------------------------------------- */

static int parse_whole(const char *s, size_t n, px__http1_request_t *req, px__http_header_t *hdrs,
                       size_t cap, const px__http1_limits_t *lim)
{
    px__http1_parser_t p;
    px__http1_parser_init(&p);
    req->headers = hdrs;
    return px__http1_parse_request(&p, guard_put(0, s, n), n, req, cap, lim);
}

static void assert_span(px_str_t s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}

static void test_fields(void **state)
{
    (void)state;
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t a b \t\r\nx-a:\r\nX-C:    \r\n"
                             "X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\r\n";
    px__http_header_t hdrs[16];
    px__http1_request_t req;
    assert_int_equal(parse_whole(in, sizeof in - 1, &req, hdrs, 16, NULL), (int)sizeof in - 1);
    assert_int_equal(req.num_headers, 6);
    assert_span(req.headers[1].name, "X-A");
    assert_span(req.headers[1].value, "a b");
    assert_span(req.headers[2].name, "x-a");
    assert_span(req.headers[2].value, "");
    assert_span(req.headers[3].value, "");
    const px__http_header_t *h = px__http1_find_header(&req, "x-forwarded-for");
    assert_non_null(h);
    assert_span(h->value, "1.2.3.4");
    h = px__http1_find_next(&req, "x-forwarded-for", h);
    assert_non_null(h);
    assert_span(h->value, "5.6.7.8");
    assert_null(px__http1_find_next(&req, "x-forwarded-for", h));
    assert_null(px__http1_find_header(&req, "x-missing"));
    assert_ptr_equal(px__http1_find_header(&req, "host"), &req.headers[0]);
    assert_true(px__http1_header_eq(PX_STR_LIT("Content-TYPE"), "content-type", 12));
    assert_false(px__http1_header_eq(PX_STR_LIT("Content-TYP"), "content-type", 12));
    assert_false(px__http1_header_eq(PX_STR_LIT("Content_Type"), "content-type", 12));
    assert_false(px__http1_header_eq(PX_STR_LIT("@"), "`", 1)); /* '@' | 0x20 == '`' */
}

/* Pipelined: the second request starts where the first head ended. */
static void test_pipelined(void **state)
{
    (void)state;
    static const char in[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    px__http_header_t hdrs[4];
    px__http1_request_t req;
    px__http1_parser_t p;
    const char *b = guard_put(0, in, sizeof in - 1);
    req.headers = hdrs;
    px__http1_parser_init(&p);
    int n1 = px__http1_parse_request(&p, b, sizeof in - 1, &req, 4, NULL);
    assert_int_equal(n1, 28);
    assert_span(req.path, "/1");
    px__http1_parser_init(&p);
    int n2 = px__http1_parse_request(&p, b + n1, sizeof in - 1 - (size_t)n1, &req, 4, NULL);
    assert_int_equal(n2, 28);
    assert_span(req.path, "/2");
    assert_span(req.host, "b");
}

/* ---- limits ---------------------------------------------------------------------------- */

static char g_big[GUARD_ROOM];

/* "GET /aaaa... HTTP/1.1\r\nHost: a\r\n\r\n" whose request line is `line` bytes. */
static size_t build_long_line(size_t line, int finish)
{
    size_t n = 0;
    memcpy(g_big, "GET /", 5);
    n = 5;
    while (n < line - 9)
        g_big[n++] = 'a';
    memcpy(g_big + n, " HTTP/1.1", 9);
    n += 9;
    if (finish) {
        memcpy(g_big + n, "\r\nHost: a\r\n\r\n", 13);
        n += 13;
    }
    return n;
}

static void test_request_line_limit(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_SIZE(all_impls); i++) {
        if (!use_impl(i))
            continue;
        rcase_t ok = V(.name = "request line at the limit");
        rcase_t big = E(414, .name = "request line over the limit");
        size_t n = build_long_line(8192, 1);
        run_request(&ok, g_big, n, NHDR, NULL);
        n = build_long_line(8193, 1);
        run_request(&big, g_big, n, NHDR, NULL);

        /* Detected as soon as the line passes the limit, CRLF or not: with
         * 8192 bytes the CR may still come, with 8193 it cannot. */
        memset(g_big, 'a', sizeof g_big);
        memcpy(g_big, "GET /", 5);
        px__http_header_t hdrs[4];
        px__http1_request_t req;
        assert_int_equal(parse_whole(g_big, 8192, &req, hdrs, 4, NULL), PX_PARSE_INCOMPLETE);
        assert_int_equal(parse_whole(g_big, 8193, &req, hdrs, 4, NULL), PX_PARSE_ERROR);
        assert_int_equal(req.status, 414);
        /* a method that never ends */
        memset(g_big, 'G', 9000);
        assert_int_equal(parse_whole(g_big, 9000, &req, hdrs, 4, NULL), PX_PARSE_ERROR);
        assert_int_equal(req.status, 414);
        /* once the target ends, 414 if "HTTP/1.1" cannot fit any more */
        n = build_long_line(8192, 0);
        assert_int_equal(parse_whole(g_big, n - 8, &req, hdrs, 4, NULL), PX_PARSE_INCOMPLETE);
        size_t t = build_long_line(8193, 0);
        assert_int_equal(parse_whole(g_big, t - 8, &req, hdrs, 4, NULL), PX_PARSE_ERROR);
        assert_int_equal(req.status, 414);
    }
    px__http1_force_impl(PX__HTTP1_IMPL_AUTO);
}

/* A head of exactly `total` bytes with `nfields` fields (Host included), the
 * room spread evenly over the fields after Host. */
static size_t build_block(size_t total, size_t nfields)
{
    static const char start[] = "GET / HTTP/1.1\r\nHost: a\r\n";
    size_t n = sizeof start - 1, extra = nfields - 1;
    memcpy(g_big, start, n);
    assert_true(extra > 0 && total >= n + 2 + 10 * extra);
    size_t room = total - n - 2, per = room / extra; /* "X-nnnn: " value "\r\n" */
    for (size_t i = 0; i < extra; i++) {
        size_t line = i + 1 < extra ? per : room - per * (extra - 1);
        snprintf(g_big + n, 9, "X-%04u: ", (unsigned)(i % 10000));
        memset(g_big + n + 8, 'v', line - 10);
        memcpy(g_big + n + line - 2, "\r\n", 2);
        n += line;
    }
    memcpy(g_big + n, "\r\n", 2);
    assert_int_equal(n + 2, total);
    return total;
}

static void run_request_str(const rcase_t *c, const char *in, const px__http1_limits_t *lim)
{
    run_request(c, in, strlen(in), NHDR, lim);
}

static void test_header_limits(void **state)
{
    (void)state;
    px__http_header_t hdrs[NHDR];
    px__http1_request_t req;
    for (size_t i = 0; i < PX_ARRAY_SIZE(all_impls); i++) {
        if (!use_impl(i))
            continue;
        rcase_t ok = V(.name = "head at 16384 bytes", .nhdr = 2);
        rcase_t big = E(431, .name = "head at 16385 bytes");
        run_request(&ok, g_big, build_block(16384, 2), NHDR, NULL);
        run_request(&big, g_big, build_block(16385, 2), NHDR, NULL);

        rcase_t ok100 = V(.name = "100 fields", .nhdr = 100);
        rcase_t big101 = E(431, .name = "101 fields");
        run_request(&ok100, g_big, build_block(2000, 100), NHDR, NULL);
        run_request(&big101, g_big, build_block(2000, 101), NHDR, NULL);

        /* the caller's array is the limit when smaller */
        rcase_t ok4 = V(.name = "cap 4 ok", .nhdr = 4);
        rcase_t big5 = E(431, .name = "cap 4 exceeded");
        run_request(&ok4, g_big, build_block(200, 4), 4, NULL);
        run_request(&big5, g_big, build_block(200, 5), 4, NULL);

        /* custom limits */
        px__http1_limits_t lim = {.max_request_line = 20, .max_header_bytes = 64, .max_headers = 2};
        rcase_t small = V(.name = "custom limits ok", .nhdr = 2);
        run_request_str(&small, "GET /012345 HTTP/1.1\r\nHost: a\r\nX: 0123456789012\r\n\r\n",
                        &lim);
        rcase_t rl = E(414, .name = "custom line limit");
        run_request_str(&rl, "GET /0123456 HTTP/1.1\r\nHost: a\r\n\r\n", &lim);
        rcase_t hb = E(431, .name = "custom head limit");
        run_request_str(
            &hb, "GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789012345678901234567890123456789\r\n\r\n",
            &lim);
        rcase_t hn = E(431, .name = "custom count limit");
        run_request_str(&hn, "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n", &lim);

        /* 431 comes as soon as the limit is passed: an unterminated value */
        memset(g_big, 'v', sizeof g_big);
        memcpy(g_big, "GET / HTTP/1.1\r\nX: ", 19);
        assert_int_equal(parse_whole(g_big, 16384, &req, hdrs, NHDR, NULL), PX_PARSE_INCOMPLETE);
        assert_int_equal(parse_whole(g_big, 16385, &req, hdrs, NHDR, NULL), PX_PARSE_ERROR);
        assert_int_equal(req.status, 431);
    }
    px__http1_force_impl(PX__HTTP1_IMPL_AUTO);
}

/* ---- linear resumption ---------------------------------------------------------------- */

/* Feed `n` bytes one more per call; return bytes scanned overall. */
static size_t scanned_byte_by_byte(const char *in, size_t n, int expect)
{
    px__http_header_t hdrs[NHDR];
    px__http1_request_t req;
    px__http1_parser_t p;
    px__http1_parser_init(&p);
    req.headers = hdrs;
    px__http1_scanned = 0;
    int rc = PX_PARSE_INCOMPLETE;
    for (size_t i = 1; i <= n && rc == PX_PARSE_INCOMPLETE; i++)
        rc = px__http1_parse_request(&p, guard_put((int)(i & 1), in, i), i, &req, NHDR, NULL);
    assert_int_equal(rc, expect);
    return px__http1_scanned;
}

static void test_linear_resume(void **state)
{
    (void)state;
    for (size_t i = 0; i < PX_ARRAY_SIZE(all_impls); i++) {
        if (!use_impl(i))
            continue;
        /* 16 KiB of many short fields */
        size_t n = build_block(16384, 90);
        size_t s = scanned_byte_by_byte(g_big, n, (int)n);
        print_message("    %s: 16 KiB head fed byte by byte: %zu bytes scanned (%.2f/byte)\n",
                      px__http1_impl_name(g_impl), s, (double)s / (double)n);
        assert_true(s <= 3 * n);
        /* one 16 KiB value */
        n = build_block(16384, 2);
        s = scanned_byte_by_byte(g_big, n, (int)n);
        assert_true(s <= 3 * n);
        /* a long target and long OWS */
        n = build_long_line(8000, 1);
        assert_true(scanned_byte_by_byte(g_big, n, (int)n) <= 3 * n);
        memset(g_big, ' ', 12000);
        memcpy(g_big, "GET / HTTP/1.1\r\nHost:", 21);
        memcpy(g_big + 12000, "a\r\n\r\n", 5);
        assert_true(scanned_byte_by_byte(g_big, 12005, 12005) <= 3 * 12005);
    }
    px__http1_force_impl(PX__HTTP1_IMPL_AUTO);
}

/* ---- byte classes and SIMD scanners --------------------------------------------------- */

static int is_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void test_class_table(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        unsigned want = 0;
        if (is_tchar(c))
            want |= C_TCHAR;
        if (c == '\t' || (c >= 0x20 && c != 0x7f))
            want |= C_VALUE;
        if (c >= 0x21 && c <= 0x7e && c != '?' && c != '#')
            want |= C_TARGET;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c && strchr("-._~%!$&'()*+,;=:[]", c)))
            want |= C_HOST;
        if (cls[c] != want)
            print_error("cls[0x%02x] = 0x%02x, want 0x%02x\n", (unsigned)c, cls[c], want);
        assert_int_equal(cls[c], want);
    }
}

/* One scan through every SIMD scanner the CPU has, compared with the scalar
 * one: the block scanners, and the window scanners both with a fresh window
 * and with one left by an earlier scan of the same buffer. `cut` < len makes
 * the scan end before the buffer does (the parser's head limit). */
static void check_scan(size_t fi, const char *b, size_t len, size_t from, size_t cut)
{
    static const unsigned mask[3] = {C_TCHAR, C_VALUE, C_TARGET};
    const char *end = b + cut;
    const char *want = scan_scalar(b + from, end, mask[fi]);
    assert_true(want <= end);
#ifdef PX_HTTP1_X86
    typedef const char *(*block_fn)(const char *, const char *, const char *);
    static const block_fn block[3][2] = {{scan_token_sse42, scan_token_avx2},
                                         {scan_value_sse42, scan_value_avx2},
                                         {scan_target_sse42, scan_target_avx2}};
    static const scan_fn window[3][2] = {
        {win_token_sse42, win_token_avx2}, {win_value_sse42, win_value_avx2}, {NULL, NULL}};
    for (int k = 0; k < 2; k++) {
        if (!impl_supported(k ? PX__HTTP1_IMPL_AVX2 : PX__HTTP1_IMPL_SSE42))
            continue;
        const char *got = block[fi][k](b + from, end, b);
        if (got == want && window[fi][k]) {
            win_t w = {b, b + len, NULL, 0, 0};
            got = window[fi][k](&w, b + from, end);
            if (got == want) { /* reuse the window a scan from the start left */
                window[fi][k](&w, b, b + len);
                got = window[fi][k](&w, b + from, end);
            }
        }
        if (got != want)
            print_error("family %zu impl %d len %zu from %zu cut %zu: got %td want %td\n", fi, k,
                        len, from, cut, got - b, want - b);
        assert_ptr_equal(got, want);
    }
#else
    (void)len;
#endif
}

/* Every stop byte at every position of buffers up to 40 bytes, and common
 * stop bytes in buffers up to 150 (windows are 64 bytes), each buffer ending
 * at a guard page, then starting at one; scans start at, before and after the
 * stop byte. */
static void test_scanners(void **state)
{
    (void)state;
    static const char *const fill[3] = {"aZ9-!~", "a \t\x80\xff~", "/a%~!"};
    static const unsigned char common[] = {0,   '\t', '\n', '\r', ' ',  '!', '"', '#',
                                           '(', ',',  '/',  ':',  ';',  '?', '@', 'A',
                                           'a', '{',  '~',  0x7f, 0x80, 0xff};
    char buf[160];
    for (size_t fi = 0; fi < 3; fi++) {
        size_t nf = strlen(fill[fi]);
        for (size_t len = 0; len <= 150; len += len < 70 ? 1 : 7) {
            size_t nbytes = len <= 40 ? 256 : sizeof common;
            for (size_t ci = 0; ci < nbytes; ci++) {
                int c = len <= 40 ? (int)ci : common[ci];
                for (size_t pos = 0; pos <= len; pos += len <= 70 ? 1 : 3) {
                    for (size_t i = 0; i < len; i++)
                        buf[i] = fill[fi][i % nf];
                    if (pos < len) /* pos == len: no stop byte */
                        buf[pos] = (char)c;
                    size_t froms[] = {0, pos ? pos - 1 : 0, pos, pos + 1, len / 3, len};
                    for (int front = 0; front < 2; front++) {
                        const char *b =
                            front ? guard_put_front(0, buf, len) : guard_put(0, buf, len);
                        for (size_t k = 0; k < PX_ARRAY_SIZE(froms); k++) {
                            if (froms[k] > len)
                                continue;
                            check_scan(fi, b, len, froms[k], len);
                            if (len > froms[k] + 5)
                                check_scan(fi, b, len, froms[k], len - 5);
                        }
                    }
                }
            }
        }
    }
}

/* ---- chunked decoder ------------------------------------------------------------------- */

typedef struct ccase {
    const char *name;
    const char *in;
    size_t len;      /* 0: strlen(in) */
    int ok;          /* 1: body completes; 0: error; 2: incomplete */
    const char *out; /* decoded data (ok == 1 or 2) */
    size_t rest;     /* ok == 1: bytes after the body */
} ccase_t;

#define CV(nm, input, o, r)                                                                        \
    {                                                                                              \
        .name = nm, .in = input, .ok = 1, .out = o, .rest = r                                      \
    }
#define CI(nm, input, o)                                                                           \
    {                                                                                              \
        .name = nm, .in = input, .ok = 2, .out = o                                                 \
    }
#define CE(nm, input)                                                                              \
    {                                                                                              \
        .name = nm, .in = input, .ok = 0                                                           \
    }

static const ccase_t chunk_cases[] = {
    CV("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CV("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0),
    CV("hex upper and lower", "A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n",
       "0123456789abcdefghijk", 0),
    CV("leading zeros", "0000000000000000000005\r\nhello\r\n000\r\n\r\n", "hello", 0),
    CV("empty body", "0\r\n\r\n", "", 0),
    CV("pipelined rest", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc", 16),
    CV("extension", "5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello", 0),
    CV("extensions with bws", "5 ; a = b ;c;d=\"x y\"\t;e\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CV("quoted extension escapes", "5;a=\"q\\\"\\\\ \\\t\x80\"\r\nhello\r\n0\r\n\r\n", "hello", 0),
    CV("trailer", "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY:\r\n\r\n", "hello", 0),
    CV("trailer obs-text", "0\r\nX: \xff\tz\r\n\r\nrest", "", 4),
    CV("crlf in data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", 0),
    CI("max size incomplete", "7fffffffffffffff\r\nabc", "abc"),
    CI("no last chunk", "5\r\nhello\r\n", "hello"),
    CI("no final crlf", "5\r\nhello\r\n0\r\n", "hello"),
    CI("in trailer", "0\r\nX: y\r\n", ""),
    CE("no size", "\r\nhello\r\n0\r\n\r\n"),
    CE("non-hex", "g\r\nhello\r\n0\r\n\r\n"),
    CE("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
    CE("negative", "-5\r\nhello\r\n0\r\n\r\n"),
    CE("leading space", " 5\r\nhello\r\n0\r\n\r\n"),
    CE("trailing space", "5 \r\nhello\r\n0\r\n\r\n"),
    CE("overflow 2^63", "8000000000000000\r\n"),
    CE("overflow 17 digits", "10000000000000000\r\n"),
    CE("bare lf after size", "5\nhello\r\n0\r\n\r\n"),
    CE("bare cr after size", "5\rhello\r\n0\r\n\r\n"),
    CE("data too long", "5\r\nhelloX\r\n0\r\n\r\n"),
    CE("data bare lf", "5\r\nhello\n0\r\n\r\n"),
    CE("data cr only", "5\r\nhello\r0\r\n\r\n"),
    CE("ext ctl", "5;a\x01\r\nhello\r\n0\r\n\r\n"),
    CE("ext empty name", "5;=x\r\nhello\r\n0\r\n\r\n"),
    CE("ext empty", "5;\r\nhello\r\n0\r\n\r\n"),
    CE("ext no value", "5;a=\r\nhello\r\n0\r\n\r\n"),
    CE("ext bad token", "5;a=b@c\r\nhello\r\n0\r\n\r\n"),
    CE("ext del in quotes", "5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n"),
    CE("ext lf in quotes", "5;a=\"\n\"\r\nhello\r\n0\r\n\r\n"),
    CE("ext unterminated quote", "5;a=\"x\r\nhello\r\n0\r\n\r\n"),
    CE("ext junk after quote", "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n"),
    CE("ext bare lf", "5;a\nhello\r\n0\r\n\r\n"),
    CE("ext trailing bws", "5;a \r\nhello\r\n0\r\n\r\n"), /* BWS only before ';' or '=' */
    CE("ext value trailing bws", "5;a=b \r\nhello\r\n0\r\n\r\n"),
    CE("trailer no colon", "0\r\nX\r\n\r\n"),
    CE("trailer space before colon", "0\r\nX : y\r\n\r\n"),
    CE("trailer empty name", "0\r\n: y\r\n\r\n"),
    CE("trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n"),
    CE("trailer bare lf", "0\r\nX: y\n\r\n"),
    CE("trailer bare cr", "0\r\nX: y\rz\r\n\r\n"),
    CE("trailer ctl", "0\r\nX: \x01\r\n\r\n"),
    CE("trailer bad name", "0\r\nX(: y\r\n\r\n"),
    CE("final bare lf", "0\r\n\n"),
    CE("final bare cr", "0\r\n\rx"),
};

/* Decode `in` split at the given cut points (each piece in its own buffer at a
 * guard page). Checks the decoded data and what follows the body. */
static void run_chunked(const ccase_t *c, const char *in, size_t n, const size_t *cuts,
                        size_t ncuts, const px__http1_chunked_t *limits)
{
    static char out[GUARD_ROOM];
    px__http1_chunked_t d;
    px__http1_chunked_init(&d);
    if (limits) {
        d.max_line = limits->max_line;
        d.max_trailer = limits->max_trailer;
    }
    size_t olen = 0, start = 0;
    ssize_t rc = PX_PARSE_INCOMPLETE;
    char rest[256];
    size_t rlen = 0;
    for (size_t i = 0; i <= ncuts && rc == PX_PARSE_INCOMPLETE; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        size_t piece = end - start;
        char *b = guard_put((int)(i & 1), in + start, piece);
        size_t len = piece;
        rc = px__http1_decode_chunked(&d, b, &len);
        CHECK(len <= piece);
        memcpy(out + olen, b, len);
        olen += len;
        if (rc >= 0) {
            CHECK(len + (size_t)rc <= piece);
            CHECK((size_t)rc <= sizeof rest);
            memcpy(rest, b + len, (size_t)rc);
            rlen = (size_t)rc;
            /* the unfed bytes also follow the body */
            CHECK(rlen + (n - end) <= sizeof rest);
            memcpy(rest + rlen, in + end, n - end);
            rlen += n - end;
        }
        start = end;
    }
    if (c->ok == 0) {
        CHECK(rc == PX_PARSE_ERROR);
        CHECK(d.error != NULL);
        return;
    }
    if (c->ok == 2) {
        CHECK(rc == PX_PARSE_INCOMPLETE);
    } else {
        CHECK(rc >= 0);
        CHECK(rlen == c->rest);
        CHECK(memcmp(rest, in + n - c->rest, c->rest) == 0);
    }
    CHECK(olen == strlen(c->out));
    CHECK(memcmp(out, c->out, olen) == 0);
}

static void run_chunked_all(const ccase_t *c, const char *in, size_t n,
                            const px__http1_chunked_t *limits)
{
    static size_t cuts[GUARD_ROOM];
    g_case = c->name;
    g_mode = "whole";
    run_chunked(c, in, n, NULL, 0, limits);
    g_mode = "split";
    for (size_t k = 0; k <= n; k++)
        run_chunked(c, in, n, &k, 1, limits);
    g_mode = "byte by byte";
    for (size_t k = 0; k < n; k++)
        cuts[k] = k + 1;
    run_chunked(c, in, n, cuts, n, limits);
}

static void run_chunked_str(const ccase_t *c, const char *in, const px__http1_chunked_t *limits)
{
    run_chunked_all(c, in, strlen(in), limits);
}

static void test_chunked_table(void **state)
{
    (void)state;
    for (size_t j = 0; j < PX_ARRAY_SIZE(chunk_cases); j++) {
        const ccase_t *c = &chunk_cases[j];
        run_chunked_all(c, c->in, c->len ? c->len : strlen(c->in), NULL);
    }
}

static void test_chunked_limits(void **state)
{
    (void)state;
    static char in[16384];
    px__http1_chunked_t lim;
    px__http1_chunked_init(&lim);
    lim.max_line = 16;
    lim.max_trailer = 16;
    ccase_t ok = CV("size line at limit", NULL, "a", 0);
    ccase_t bad = CE("size line over limit", NULL);
    run_chunked_str(&ok, "1;aaaaaaaaaaaaaa\r\na\r\n0\r\n\r\n", &lim); /* 16-byte line */
    run_chunked_str(&bad, "1;aaaaaaaaaaaaaaa\r\na\r\n0\r\n\r\n", &lim);
    ccase_t tok = CV("trailer at limit", NULL, "", 0);
    ccase_t tbad = CE("trailer over limit", NULL);
    run_chunked_str(&tok, "0\r\nX: 123456789\r\n\r\n", &lim); /* 14 + 2 bytes */
    run_chunked_str(&tbad, "0\r\nX: 1234567890\r\n\r\n", &lim);

    /* default limits: 4096-byte size line, 8192-byte trailer section */
    size_t n = 0;
    in[n++] = '1';
    in[n++] = ';';
    while (n < 4096)
        in[n++] = 'e';
    memcpy(in + n, "\r\nx\r\n0\r\n\r\n", 10);
    ccase_t dok = CV("default line limit", NULL, "x", 0);
    run_chunked_all(&dok, in, n + 10, NULL);
    in[n] = 'e';
    memcpy(in + n + 1, "\r\nx\r\n0\r\n\r\n", 10);
    ccase_t dbad = CE("default line limit exceeded", NULL);
    run_chunked_all(&dbad, in, n + 11, NULL);

    /* a big chunk moves through in place */
    n = (size_t)snprintf(in, 32, "%x\r\n", 12000);
    for (size_t i = 0; i < 12000; i++)
        in[n++] = (char)('a' + i % 26);
    memcpy(in + n, "\r\n0\r\n\r\n", 7);
    px__http1_chunked_t d;
    px__http1_chunked_init(&d);
    size_t len = n + 7;
    char *b = guard_put(0, in, len);
    assert_int_equal(px__http1_decode_chunked(&d, b, &len), 0);
    assert_int_equal(len, 12000);
    for (size_t i = 0; i < 12000; i++)
        assert_int_equal(b[i], 'a' + i % 26);
    /* used after the end */
    len = 1;
    assert_int_equal(px__http1_decode_chunked(&d, b, &len), PX_PARSE_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_table),   cmocka_unit_test(test_scanners),
        cmocka_unit_test(test_request_table), cmocka_unit_test(test_fields),
        cmocka_unit_test(test_pipelined),     cmocka_unit_test(test_request_line_limit),
        cmocka_unit_test(test_header_limits), cmocka_unit_test(test_linear_resume),
        cmocka_unit_test(test_chunked_table), cmocka_unit_test(test_chunked_limits),
    };
    return cmocka_run_group_tests(tests, setup_guards, teardown_guards);
}
