/* Unit tests for px__sha1 (src/util/crypto.c), which is ours rather than
 * OpenSSL's: the FIPS 180-4 / RFC 3174 example vectors, RFC 6455's handshake
 * example, then every length 0..300 (each padding case and block boundary)
 * against OpenSSL's SHA1 (an implementation nobody here wrote). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "util/crypto.h"

static void hex(const uint8_t md[20], char out[41])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 20; i++) {
        out[2 * i] = d[md[i] >> 4];
        out[2 * i + 1] = d[md[i] & 15];
    }
    out[40] = 0;
}

static void check(const char *msg, size_t n, const char *want)
{
    uint8_t md[20];
    char got[41];
    px__sha1(msg, n, md);
    hex(md, got);
    assert_string_equal(got, want);
}

static void test_published_vectors(void **state)
{
    (void)state;
    check("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check(m448, strlen(m448), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    static char million[1000000];
    memset(million, 'a', sizeof million);
    check(million, sizeof million, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void test_websocket_accept(void **state)
{
    (void)state;
    /* RFC 6455 1.3: key "dGhlIHNhbXBsZSBub25jZQ==" -> accept "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
     * the base64 of this digest. */
    const char *in = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    check(in, strlen(in), "b37a4f2cc0624f1690f64606cf385945b2bec4ea");
}

static void test_every_length_against_openssl(void **state)
{
    (void)state;
    uint8_t buf[300];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    for (size_t n = 0; n <= sizeof buf; n++) {
        uint8_t a[20], b[20];
        px__sha1(buf, n, a);
        SHA1(buf, n, b);
        assert_memory_equal(a, b, 20);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vectors),
        cmocka_unit_test(test_websocket_accept),
        cmocka_unit_test(test_every_length_against_openssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
