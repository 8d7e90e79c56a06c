/* Unit tests for the pure sniffer (src/net/sniff.c): the TLS ClientHello
 * parser (a real hello from openssl s_client, cut at every byte, re-split
 * into several records, and broken in the ways a parser must survive), the
 * probes (ssh, openvpn, xmpp, tls-sni, http-host, regex with its window and
 * NUL bytes, default), host matching with wildcards, and px__sniff_decide:
 * built-in protocols, rule order, "need more" versus final decisions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "net/sniff.h"

/* openssl s_client -servername git.example.com (TLS 1.3, one record). */
static const char hello_hex[] =
    "160301013c010001380303018db8a94d9eaf9044b3acd1e530a7b8701433e4ed81b6b0f241ccf2ae3097d9206813ed"
    "35"
    "cb622e77c542379529b11ba9e64e3b1d486a4b8f6143554d681eaebf003e130213031301c02cc030009fcca9cca8cc"
    "aa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000"
    "b1"
    "00000014001200000f6769742e6578616d706c652e636f6d000b000403000102000a00160014001d0017001e001900"
    "18"
    "01000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b080408"
    "05"
    "0806040105010601030303010302040205020602002b0009080304030303020301002d00020101003300260024001d"
    "00"
    "20b84b8a643c7c7141c0176b13c87b91841273757defbd7f70c32f4c1e7d453002";

static unsigned char hello[512];
static size_t hello_len;

static void load_hello(void)
{
    hello_len = strlen(hello_hex) / 2;
    for (size_t i = 0; i < hello_len; i++) {
        unsigned v;
        sscanf(hello_hex + 2 * i, "%2x", &v);
        hello[i] = (unsigned char)v;
    }
}

/* The same handshake message carried by records of at most `rec` bytes. */
static size_t refragment(const unsigned char *in, size_t len, size_t rec, unsigned char *out)
{
    const unsigned char *hs = in + 5;
    size_t hl = len - 5, o = 0;
    for (size_t at = 0; at < hl; at += rec) {
        size_t n = hl - at < rec ? hl - at : rec;
        out[o++] = 0x16;
        out[o++] = 0x03;
        out[o++] = 0x01;
        out[o++] = (unsigned char)(n >> 8);
        out[o++] = (unsigned char)n;
        memcpy(out + o, hs + at, n);
        o += n;
    }
    return o;
}

/* A minimal ClientHello with the given server_name extension body (or none). */
static size_t build_hello(unsigned char *out, const char *name, size_t name_len, int with_ext)
{
    unsigned char body[1024];
    size_t b = 0;
    body[b++] = 3; /* legacy_version 3.3 */
    body[b++] = 3;
    memset(body + b, 0xab, 32); /* random */
    b += 32;
    body[b++] = 0; /* session id */
    body[b++] = 0; /* cipher suites: one */
    body[b++] = 2;
    body[b++] = 0x13;
    body[b++] = 0x01;
    body[b++] = 1; /* compression: null */
    body[b++] = 0;
    if (with_ext) {
        size_t ext_at = b;
        b += 2;
        /* a supported_versions-like extension first, to be skipped */
        body[b++] = 0x00;
        body[b++] = 0x2b;
        body[b++] = 0;
        body[b++] = 3;
        body[b++] = 2;
        body[b++] = 3;
        body[b++] = 4;
        if (name) {
            size_t list = 3 + name_len;
            body[b++] = 0; /* server_name */
            body[b++] = 0;
            body[b++] = (unsigned char)((list + 2) >> 8);
            body[b++] = (unsigned char)(list + 2);
            body[b++] = (unsigned char)(list >> 8);
            body[b++] = (unsigned char)list;
            body[b++] = 0; /* host_name */
            body[b++] = (unsigned char)(name_len >> 8);
            body[b++] = (unsigned char)name_len;
            memcpy(body + b, name, name_len);
            b += name_len;
        }
        size_t el = b - ext_at - 2;
        body[ext_at] = (unsigned char)(el >> 8);
        body[ext_at + 1] = (unsigned char)el;
    }
    size_t o = 0, hs = 4 + b;
    out[o++] = 0x16;
    out[o++] = 0x03;
    out[o++] = 0x01;
    out[o++] = (unsigned char)(hs >> 8);
    out[o++] = (unsigned char)hs;
    out[o++] = 1; /* client_hello */
    out[o++] = 0;
    out[o++] = (unsigned char)(b >> 8);
    out[o++] = (unsigned char)b;
    memcpy(out + o, body, b);
    return o + b;
}

static int sni_of(const void *p, size_t len, char *name)
{
    size_t n = 0;
    int r = px__sniff_hello_sni(p, len, name, &n);
    if (r == 1)
        assert_int_equal(strlen(name), n);
    return r;
}

static void test_hello_real(void **state)
{
    (void)state;
    char name[PX__SNI_MAX + 1];
    assert_int_equal(sni_of(hello, hello_len, name), 1);
    assert_string_equal(name, "git.example.com");
    /* Cut anywhere before the name ends: incomplete, never an error. */
    const unsigned char *at = memmem(hello, hello_len, "git.example.com", 15);
    size_t end = (size_t)(at - hello) + 15;
    for (size_t n = 0; n < end; n++)
        assert_int_equal(sni_of(hello, n, name), PX_PARSE_INCOMPLETE);
    for (size_t n = end; n <= hello_len; n++)
        assert_int_equal(sni_of(hello, n, name), 1);
    /* The same hello in records of 1, 7, 64 and 200 bytes. */
    static unsigned char frag[512 * 6];
    size_t sizes[] = {1, 7, 64, 200};
    for (size_t i = 0; i < 4; i++) {
        size_t fl = refragment(hello, hello_len, sizes[i], frag);
        assert_int_equal(sni_of(frag, fl, name), 1);
        assert_string_equal(name, "git.example.com");
        assert_int_equal(sni_of(frag, fl / 3, name), PX_PARSE_INCOMPLETE);
    }
}

static void test_hello_synthetic(void **state)
{
    (void)state;
    unsigned char h[2048];
    char name[PX__SNI_MAX + 1];
    size_t n = build_hello(h, "a.b", 3, 1);
    assert_int_equal(sni_of(h, n, name), 1);
    assert_string_equal(name, "a.b");
    n = build_hello(h, NULL, 0, 1); /* extensions, none of them server_name */
    assert_int_equal(sni_of(h, n, name), 0);
    n = build_hello(h, NULL, 0, 0); /* no extensions at all */
    assert_int_equal(sni_of(h, n, name), 0);
    char longname[300];
    memset(longname, 'x', sizeof longname);
    n = build_hello(h, longname, 255, 1);
    assert_int_equal(sni_of(h, n, name), 1);
    assert_int_equal(strlen(name), 255);
    n = build_hello(h, longname, 256, 1); /* longer than any host name */
    assert_int_equal(sni_of(h, n, name), PX_PARSE_ERROR);
    n = build_hello(h, "a\0b", 3, 1); /* a NUL inside */
    assert_int_equal(sni_of(h, n, name), PX_PARSE_ERROR);
}

static void test_hello_malformed(void **state)
{
    (void)state;
    unsigned char h[2048];
    char name[PX__SNI_MAX + 1];
    size_t n = build_hello(h, "a.b", 3, 1);
    unsigned char m[2048];
#define BROKEN(off, val)                                                                           \
    do {                                                                                           \
        memcpy(m, h, n);                                                                           \
        m[off] = (unsigned char)(val);                                                             \
        assert_int_equal(sni_of(m, n, name), PX_PARSE_ERROR);                                      \
    } while (0)
    BROKEN(0, 0x17);               /* not a handshake record */
    BROKEN(1, 0x02);               /* not TLS 1.x */
    BROKEN(5, 2);                  /* server_hello, not client_hello */
    BROKEN(9, 2);                  /* legacy_version 2.x */
    BROKEN(9 + 2 + 32, 33);        /* session id over 32 bytes */
    BROKEN(9 + 2 + 32 + 1 + 1, 3); /* odd cipher suites length */
    BROKEN(9 + 2 + 32 + 1 + 4, 0); /* no compression method */
    BROKEN(3, 0x50);               /* record longer than TLS allows */
    memcpy(m, h, n);
    m[3] = m[4] = 0; /* a record of length 0 */
    assert_int_equal(sni_of(m, n, name), PX_PARSE_ERROR);
    /* An extensions length that disagrees with the message length. */
    size_t ext = 9 + 2 + 32 + 1 + 4 + 2;
    memcpy(m, h, n);
    m[ext + 1] = (unsigned char)(m[ext + 1] + 1);
    assert_true(sni_of(m, n, name) < 0);
    /* Junk is an error, not a crash; nothing at all is incomplete. */
    assert_int_equal(sni_of("GET / HTTP/1.1\r\n", 16, name), PX_PARSE_ERROR);
    assert_int_equal(sni_of("", 0, name), PX_PARSE_INCOMPLETE);
#undef BROKEN
}

/* ---- probes and decisions ------------------------------------------------------- */

static px__probe_t P[8];
static const px__probe_t *PP[8];
static unsigned NP;

static void rules(const char *first, ...)
{
    for (unsigned i = 0; i < NP; i++)
        px__probe_dispose(&P[i]);
    NP = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *t = first; t; t = va_arg(ap, const char *)) {
        char err[256];
        size_t window = 0;
        if (strncmp(t, "w5:", 3) == 0) {
            window = 5;
            t += 3;
        }
        assert_int_equal(px__probe_compile(&P[NP], t, window, err, sizeof err), 0);
        PP[NP] = &P[NP];
        NP++;
    }
    va_end(ap);
}

static int decide_n(const void *data, size_t len, int final, int *rule)
{
    px__sniff_result_t r;
    int v = px__sniff_decide(PP, NP, data, len, final, &r);
    assert_int_equal(v, r.verdict);
    if (rule)
        *rule = r.rule;
    if (final)
        assert_int_not_equal(v, PX__SNIFF_MORE);
    return v;
}

static int decide(const char *s, int final)
{
    return decide_n(s, strlen(s), final, NULL);
}

static void test_probe_compile(void **state)
{
    (void)state;
    px__probe_t p;
    char err[256];
    const char *bad[] = {"ftp",         "tls-sni:",   "http-host:", "regex:", "regex:(",
                         "tls-sni:a b", "tls-sni:*.", "SSH",        ""};
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        assert_int_equal(px__probe_compile(&p, bad[i], 0, err, sizeof err), -EINVAL);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(px__probe_compile(&p, "tls-sni:Git.Example.COM.", 0, err, sizeof err), 0);
    assert_string_equal(p.host, "git.example.com");
    assert_int_equal(p.wildcard, 0);
    assert_int_equal(px__probe_compile(&p, "http-host:*.example.com", 0, err, sizeof err), 0);
    assert_string_equal(p.host, ".example.com");
    assert_int_equal(p.wildcard, 1);
}

static void test_host_match(void **state)
{
    (void)state;
    px__probe_t p;
    char err[64];
    assert_int_equal(px__probe_compile(&p, "tls-sni:git.example.com", 0, err, sizeof err), 0);
    assert_true(px__probe_host_match(&p, "git.example.com", 15));
    assert_true(px__probe_host_match(&p, "GIT.Example.com", 15));
    assert_true(px__probe_host_match(&p, "git.example.com.", 16));
    assert_false(px__probe_host_match(&p, "xgit.example.com", 16));
    assert_false(px__probe_host_match(&p, "git.example.co", 14));
    assert_int_equal(px__probe_compile(&p, "tls-sni:*.example.com", 0, err, sizeof err), 0);
    assert_true(px__probe_host_match(&p, "a.example.com", 13));
    assert_true(px__probe_host_match(&p, "a.b.example.com", 15));
    assert_false(px__probe_host_match(&p, "example.com", 11));
    assert_false(px__probe_host_match(&p, ".example.com", 12));
    assert_false(px__probe_host_match(&p, "aexample.com", 12));
}

static void test_builtin(void **state)
{
    (void)state;
    rules(NULL);
    assert_int_equal(decide("GET / HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide("OPTIONS * HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide("PROPFIND /d HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide("GE", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("GE", 1), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("GET", 0), PX__SNIFF_MORE); /* "GET" then a space */
    assert_int_equal(decide("GETX / HTTP/1.1", 0), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("get / HTTP/1.1", 0),
                     PX__SNIFF_UNKNOWN); /* methods are case-sensitive */
    assert_int_equal(decide("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0), PX__SNIFF_H2);
    assert_int_equal(decide("PRI * HTTP/2.0\r\n", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("PRI * HTTP/2.0\r\n", 1), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide_n(hello, hello_len, 0, NULL), PX__SNIFF_TLS);
    assert_int_equal(decide_n(hello, 2, 0, NULL), PX__SNIFF_TLS);
    assert_int_equal(decide_n(hello, 1, 0, NULL), PX__SNIFF_MORE);
    assert_int_equal(decide_n("\x16\x02", 2, 0, NULL), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("SSH-2.0-OpenSSH_9.2\r\n", 0), PX__SNIFF_UNKNOWN); /* no ssh rule */
    assert_int_equal(decide("\x01\x02junk", 0), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("", 1), PX__SNIFF_UNKNOWN);
}

static void test_ssh(void **state)
{
    (void)state;
    int rule = -1;
    rules("ssh", NULL);
    assert_int_equal(decide_n("SSH-2.0-OpenSSH_9.2p1\r\n", 23, 0, &rule), PX__SNIFF_RULE);
    assert_int_equal(rule, 0);
    assert_int_equal(decide("SSH-1.99-old", 0), PX__SNIFF_RULE);
    assert_int_equal(decide("SSH-", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("SSH-", 1), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("SSH-1.5-ancient", 0), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("GET / HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
}

static void test_openvpn(void **state)
{
    (void)state;
    rules("openvpn", NULL);
    /* length 14, P_CONTROL_HARD_RESET_CLIENT_V2 (7 << 3), key id 0, session id... */
    unsigned char v2[16] = {0x00, 0x0e, 7 << 3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0};
    assert_int_equal(decide_n(v2, sizeof v2, 0, NULL), PX__SNIFF_RULE);
    unsigned char v3[3] = {0x01, 0x20, 10 << 3};
    assert_int_equal(decide_n(v3, 3, 0, NULL), PX__SNIFF_RULE);
    assert_int_equal(decide_n(v2, 2, 0, NULL), PX__SNIFF_MORE);
    unsigned char key1[3] = {0x00, 0x0e, (7 << 3) | 1}; /* key id 1: not a first packet */
    assert_int_equal(decide_n(key1, 3, 0, NULL), PX__SNIFF_UNKNOWN);
    unsigned char data_op[3] = {0x00, 0x0e, 6 << 3}; /* P_DATA_V1 */
    assert_int_equal(decide_n(data_op, 3, 0, NULL), PX__SNIFF_UNKNOWN);
    unsigned char huge[3] = {0x08, 0x00, 7 << 3}; /* 2048 bytes: too long for a reset */
    assert_int_equal(decide_n(huge, 3, 0, NULL), PX__SNIFF_UNKNOWN);
    /* Neither HTTP nor TLS look like a length below 2 KiB. */
    assert_int_equal(decide("GET / HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide_n(hello, hello_len, 0, NULL), PX__SNIFF_TLS);
}

static void test_xmpp(void **state)
{
    (void)state;
    rules("xmpp", NULL);
    assert_int_equal(decide("<?xml version='1.0'?><stream:stream to='example.com' "
                            "xmlns='jabber:client' "
                            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                            0),
                     PX__SNIFF_RULE);
    assert_int_equal(decide("<stream:stream xmlns='jabber:server' to='x'>", 0), PX__SNIFF_RULE);
    assert_int_equal(decide("<?xml version='1.0'?>", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("<?xml version='1.0'?>", 1), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("<stream:stream xmlns='urn:other'>", 0), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("<?x", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("<html>", 0), PX__SNIFF_UNKNOWN);
}

static void test_tls_sni(void **state)
{
    (void)state;
    int rule = -1;
    rules("tls-sni:other.example.com", "tls-sni:*.example.com", NULL);
    assert_int_equal(decide_n(hello, hello_len, 0, &rule), PX__SNIFF_RULE);
    assert_int_equal(rule, 1);
    /* Cut short: wait (the rule may still match), or at the limit, let TLS have it. */
    assert_int_equal(decide_n(hello, 100, 0, NULL), PX__SNIFF_MORE);
    assert_int_equal(decide_n(hello, 100, 1, NULL), PX__SNIFF_TLS);
    rules("tls-sni:git.example.org", NULL);
    assert_int_equal(decide_n(hello, hello_len, 0, NULL), PX__SNIFF_TLS);
    assert_int_equal(decide("GET / HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
}

static void test_http_host(void **state)
{
    (void)state;
    int rule = -1;
    rules("ssh", "http-host:api.example.com", NULL);
    const char *req = "GET /x HTTP/1.1\r\nUser-Agent: t\r\nhOsT:  API.example.com:8080 \r\n\r\n";
    assert_int_equal(decide_n(req, strlen(req), 0, &rule), PX__SNIFF_RULE);
    assert_int_equal(rule, 1);
    assert_int_equal(decide("GET /x HTTP/1.1\r\nHost: api.example.com\r\n", 0), PX__SNIFF_MORE);
    assert_int_equal(decide("GET /x HTTP/1.1\r\nHost: api.example.com\r\n", 1), PX__SNIFF_HTTP);
    assert_int_equal(decide("GET /x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide("GET /x HTTP/1.1\r\nX-Host: api.example.com\r\n\r\n", 0),
                     PX__SNIFF_HTTP);
    assert_int_equal(decide("GET /x HTTP/1.0\r\n\r\n", 0), PX__SNIFF_HTTP); /* no Host at all */
    /* The port is not part of the name, for IPv6 literals either. */
    rules("http-host:api.example.com", NULL);
    assert_int_equal(decide("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0), PX__SNIFF_HTTP);
    assert_int_equal(decide("GET / HTTP/1.1\r\nHost: api.example.com.\r\n\r\n", 0), PX__SNIFF_RULE);
}

static void test_regex(void **state)
{
    (void)state;
    rules("regex:^HELLO [0-9]+", NULL);
    assert_int_equal(decide("HELLO 42\n", 0), PX__SNIFF_RULE);
    assert_int_equal(decide("HELLO ", 0), PX__SNIFF_MORE); /* unknown bytes wait for the regex */
    assert_int_equal(decide("HELLO ", 1), PX__SNIFF_UNKNOWN);
    assert_int_equal(decide("GET / HTTP/1.1\r\n", 0), PX__SNIFF_HTTP);
    /* Bytes are not a C string: a NUL neither ends them nor matches '.'. */
    rules("regex:CD$", NULL);
    assert_int_equal(decide_n("AB\0CD", 5, 0, NULL), PX__SNIFF_RULE);
    rules("regex:^AB.CD", NULL);
    assert_int_equal(decide_n("AB\0CD", 5, 1, NULL), PX__SNIFF_UNKNOWN);
    /* The window bounds what the regex sees. */
    rules("w5:regex:WORLD", NULL);
    assert_int_equal(decide("HELLO WORLD", 1), PX__SNIFF_UNKNOWN);
    rules("w5:regex:^HELLO", NULL);
    assert_int_equal(decide("HELLO WORLD", 1), PX__SNIFF_RULE);
}

static void test_order_and_default(void **state)
{
    (void)state;
    int rule = -1;
    rules("default", "regex:^GET /tunnel", "http-host:*.example.com", NULL);
    /* The regex comes first: it wins over the by-host rule and over HTTP. */
    assert_int_equal(decide_n("GET /tunnel HTTP/1.1\r\nHost: a.example.com\r\n\r\n", 45, 0, &rule),
                     PX__SNIFF_RULE);
    assert_int_equal(rule, 1);
    assert_int_equal(decide_n("GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", 39, 0, &rule),
                     PX__SNIFF_RULE);
    assert_int_equal(rule, 2);
    /* default never matches bytes. */
    assert_int_equal(decide("anything", 1), PX__SNIFF_UNKNOWN);
    /* A rule that needs more bytes holds the later ones back. */
    rules("tls-sni:x.example.com", "regex:^\x16", NULL);
    assert_int_equal(decide_n(hello, 50, 0, NULL), PX__SNIFF_MORE);
    assert_int_equal(decide_n(hello, 50, 1, &rule), PX__SNIFF_RULE);
    assert_int_equal(rule, 1);
}

static int setup(void **state)
{
    (void)state;
    load_hello();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_real),
        cmocka_unit_test(test_hello_synthetic),
        cmocka_unit_test(test_hello_malformed),
        cmocka_unit_test(test_probe_compile),
        cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_builtin),
        cmocka_unit_test(test_ssh),
        cmocka_unit_test(test_openvpn),
        cmocka_unit_test(test_xmpp),
        cmocka_unit_test(test_tls_sni),
        cmocka_unit_test(test_http_host),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_order_and_default),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
