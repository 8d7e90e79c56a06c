/* Unit tests for the PROXY protocol parser and writers (src/net/proxy_protocol.c):
 * v1 TCP4/TCP6/UNKNOWN, v2 PROXY/LOCAL over IPv4/IPv6/unix with TLVs, every
 * prefix of a valid header (incomplete, never an error), the strictness rules
 * (spaces, ports, addresses, CRLF, lengths, versions, TLVs, the caller's
 * limit), detection, and writer -> parser round trips. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "net/proxy_protocol.h"

static int parse(const void *p, size_t len, px_proxy_hdr_t *h)
{
    return px__proxy_parse(p, len, 4096, h);
}

static void addr_is(const struct sockaddr_storage *ss, const char *host, unsigned port)
{
    char buf[64];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        assert_int_equal(ntohs(in->sin_port), port);
    } else {
        assert_int_equal(ss->ss_family, AF_INET6);
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        assert_int_equal(ntohs(in6->sin6_port), port);
    }
    assert_string_equal(buf, host);
}

/* Every proper prefix of a valid header is incomplete. */
static void prefixes_incomplete(const void *p, size_t len)
{
    px_proxy_hdr_t h;
    for (size_t n = 0; n < len; n++)
        assert_int_equal(parse(p, n, &h), PX_PARSE_INCOMPLETE);
}

static void test_v1(void **state)
{
    (void)state;
    px_proxy_hdr_t h;
    const char *l4 = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /";
    size_t n4 = strlen(l4) - 5;
    assert_int_equal(parse(l4, strlen(l4), &h), (int)n4);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 0);
    addr_is(&h.src, "192.0.2.7", 56324);
    addr_is(&h.dst, "198.51.100.1", 443);
    prefixes_incomplete(l4, n4);

    const char *l6 = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    assert_int_equal(parse(l6, strlen(l6), &h), (int)strlen(l6));
    addr_is(&h.src, "2001:db8::1", 65535);
    addr_is(&h.dst, "::1", 0);

    assert_int_equal(parse("PROXY UNKNOWN\r\n", 15, &h), 15);
    assert_int_equal(h.local, 1);
    const char *lu = "PROXY UNKNOWN ffff::1 ::2 1 2\r\n";
    assert_int_equal(parse(lu, strlen(lu), &h), (int)strlen(lu));
    assert_int_equal(h.local, 1);

    /* The longest TCP line (104 bytes; the specification allows 107). */
    const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "65535 65535\r\n";
    assert_int_equal(strlen(longest), 104);
    assert_int_equal(parse(longest, strlen(longest), &h), 104);
}

static void test_v1_strict(void **state)
{
    (void)state;
    px_proxy_hdr_t h;
    const char *bad[] = {
        "PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",  /* two spaces */
        "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",  /* trailing space */
        "PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",     /* a port missing */
        "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n", /* a field too many */
        "PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n", /* leading zero */
        "PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n", /* the family says IPv4 */
        "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",   /* CR without LF */
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",    /* LF alone: no CR within the limit */
        "PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n", /* a control character */
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = parse(bad[i], strlen(bad[i]), &h);
        if (r != PX_PARSE_ERROR)
            fail_msg("accepted (%d): %s", r, bad[i]);
    }
    /* 107 bytes without CRLF: over the limit, whatever follows. */
    char over[200];
    memset(over, '1', sizeof over);
    memcpy(over, "PROXY TCP4 ", 11);
    assert_int_equal(parse(over, 107, &h), PX_PARSE_ERROR);
    assert_int_equal(parse(over, 106, &h), PX_PARSE_INCOMPLETE);
    /* The caller's limit applies too. */
    const char *l4 = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
    assert_int_equal(px__proxy_parse(l4, strlen(l4), 20, &h), PX_PARSE_ERROR);
}

static size_t v2(unsigned char *b, unsigned verb, unsigned fam, const void *addr, size_t alen,
                 const void *tlv, size_t tlen)
{
    static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(b, sig, 12);
    b[12] = (unsigned char)verb;
    b[13] = (unsigned char)fam;
    size_t body = alen + tlen;
    b[14] = (unsigned char)(body >> 8);
    b[15] = (unsigned char)body;
    if (alen)
        memcpy(b + 16, addr, alen);
    if (tlen)
        memcpy(b + 16 + alen, tlv, tlen);
    return 16 + body;
}

static void test_v2(void **state)
{
    (void)state;
    px_proxy_hdr_t h;
    unsigned char b[1024];
    unsigned char a4[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb};
    size_t n = v2(b, 0x21, 0x11, a4, 12, NULL, 0);
    assert_int_equal(parse(b, n + 3, &h), (int)n);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 0);
    addr_is(&h.src, "192.0.2.7", 56324);
    addr_is(&h.dst, "198.51.100.1", 443);
    prefixes_incomplete(b, n);

    unsigned char a6[36] = {
        0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, [32] = 0x30, [33] = 0x39, [34] = 0, [35] = 80};
    unsigned char tlv[] = {0x04, 0x00, 0x02, 'n', 's', 0x01, 0x00, 0x02, 'h', '2'};
    n = v2(b, 0x21, 0x21, a6, 36, tlv, sizeof tlv);
    assert_int_equal(parse(b, n, &h), (int)n);
    addr_is(&h.src, "2001:db8::1", 12345);
    addr_is(&h.dst, "::1", 80);

    /* LOCAL (a health check), UNSPEC, unix, UDP: no addresses to use. */
    n = v2(b, 0x20, 0x00, NULL, 0, NULL, 0);
    assert_int_equal(parse(b, n, &h), 16);
    assert_int_equal(h.local, 1);
    n = v2(b, 0x20, 0x11, a4, 12, NULL, 0);
    assert_int_equal(parse(b, n, &h), 28);
    assert_int_equal(h.local, 1);
    unsigned char au[216] = {0};
    n = v2(b, 0x21, 0x31, au, 216, NULL, 0);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_int_equal(h.local, 1);
    n = v2(b, 0x21, 0x12, a4, 12, NULL, 0);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_int_equal(h.local, 1);
}

static void test_v2_strict(void **state)
{
    (void)state;
    px_proxy_hdr_t h;
    unsigned char b[1024];
    unsigned char a4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    size_t n = v2(b, 0x11, 0x11, a4, 12, NULL, 0); /* version 1 */
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    n = v2(b, 0x22, 0x11, a4, 12, NULL, 0); /* command 2 */
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    n = v2(b, 0x21, 0x41, a4, 12, NULL, 0); /* family 4 */
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    n = v2(b, 0x21, 0x21, a4, 12, NULL, 0); /* IPv6 needs 36 bytes */
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    unsigned char tlv_bad[] = {0x04, 0x00, 0x09, 'x'}; /* longer than what is left */
    n = v2(b, 0x21, 0x11, a4, 12, tlv_bad, sizeof tlv_bad);
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    unsigned char tlv_short[] = {0x04, 0x00}; /* not even a TLV header */
    n = v2(b, 0x21, 0x11, a4, 12, tlv_short, sizeof tlv_short);
    assert_int_equal(parse(b, n, &h), PX_PARSE_ERROR);
    /* Longer than the caller allows: an error at once, without waiting. */
    unsigned char big[600] = {0};
    n = v2(b, 0x21, 0x11, a4, 12, big, 0);
    b[14] = 0x02; /* 512 + 12 bytes announced */
    assert_int_equal(px__proxy_parse(b, 16, 256, &h), PX_PARSE_ERROR);
    assert_int_equal(px__proxy_parse(b, 16, 4096, &h), PX_PARSE_INCOMPLETE);
}

static void test_detect(void **state)
{
    (void)state;
    px_proxy_hdr_t h;
    assert_int_equal(px__proxy_detect("", 0), PX_PARSE_INCOMPLETE);
    assert_int_equal(px__proxy_detect("PRO", 3), PX_PARSE_INCOMPLETE);
    assert_int_equal(px__proxy_detect("PROXY", 5), PX_PARSE_INCOMPLETE);
    assert_int_equal(px__proxy_detect("PROXY ", 6), 1);
    assert_int_equal(px__proxy_detect("PROPFIND", 8), 0);
    assert_int_equal(px__proxy_detect("POST", 4), 0);
    assert_int_equal(px__proxy_detect("GET", 3), 0);
    assert_int_equal(px__proxy_detect("\r\n\r\n\0\r\n", 7), PX_PARSE_INCOMPLETE);
    assert_int_equal(px__proxy_detect("\r\n\r\n\0\r\nQUIT\n", 12), 1);
    assert_int_equal(px__proxy_detect("\r\n\r\nX", 5), 0);
    assert_int_equal(parse("GET / HTTP/1.1\r\n", 16, &h), 0);
    assert_int_equal(parse("\x16\x03\x01", 3, &h), 0);
}

static void set4(struct sockaddr_storage *ss, const char *a, unsigned port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, a, &in->sin_addr);
    in->sin_port = htons((uint16_t)port);
}

static void set6(struct sockaddr_storage *ss, const char *a, unsigned port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, a, &in6->sin6_addr);
    in6->sin6_port = htons((uint16_t)port);
}

static void test_write_roundtrip(void **state)
{
    (void)state;
    struct sockaddr_storage s, d, none;
    px_proxy_hdr_t h;
    char b[PX_PROXY_WRITE_MAX];
    memset(&none, 0, sizeof none);
    for (int v6 = 0; v6 < 2; v6++) {
        if (v6) {
            set6(&s, "2001:db8::7", 50000);
            set6(&d, "::1", 443);
        } else {
            set4(&s, "203.0.113.9", 50000);
            set4(&d, "127.0.0.1", 443);
        }
        for (int ver = 1; ver <= 2; ver++) {
            ssize_t n = ver == 1 ? px__proxy_write_v1(b, sizeof b, &s, &d)
                                 : px__proxy_write_v2(b, sizeof b, &s, &d);
            assert_true(n > 0 && n <= PX_PROXY_WRITE_MAX);
            assert_int_equal(parse(b, (size_t)n, &h), (int)n);
            assert_int_equal(h.version, ver);
            assert_int_equal(h.local, 0);
            addr_is(&h.src, v6 ? "2001:db8::7" : "203.0.113.9", 50000);
            addr_is(&h.dst, v6 ? "::1" : "127.0.0.1", 443);
            /* Too small a buffer: nothing written. */
            ssize_t small = ver == 1 ? px__proxy_write_v1(b, (size_t)n - 1, &s, &d)
                                     : px__proxy_write_v2(b, (size_t)n - 1, &s, &d);
            assert_int_equal(small, -ENOSPC);
        }
    }
    /* A unix client, or mixed families: UNKNOWN / LOCAL. */
    ssize_t n = px__proxy_write_v1(b, sizeof b, &none, &d);
    assert_int_equal(n, 15);
    assert_memory_equal(b, "PROXY UNKNOWN\r\n", 15);
    n = px__proxy_write_v2(b, sizeof b, &none, &d);
    assert_int_equal(parse(b, (size_t)n, &h), 16);
    assert_int_equal(h.local, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),     cmocka_unit_test(test_v1_strict),
        cmocka_unit_test(test_v2),     cmocka_unit_test(test_v2_strict),
        cmocka_unit_test(test_detect), cmocka_unit_test(test_write_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
