/* The library's cryptographic primitives (see crypto.h): OpenSSL, and SHA-1 here. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "util/crypto.h"

int px__hmac_sha256(const void *key, size_t klen, const void *data, size_t n, uint8_t mac[32])
{
    unsigned int mlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, data, n, mac, &mlen) || mlen != 32)
        return -EIO;
    return 0;
}

/* SHA-1 (FIPS 180-4, 6.1), here rather than OpenSSL's: the WebSocket handshake
 * is the only user on a plain server, and OpenSSL's first digest initialises
 * its library and providers, which faults about 2.5 MB of its code into the
 * process. */
static uint32_t rol32(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32 - k));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t tmp = rol32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void px__sha1(const void *data, size_t n, uint8_t md[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const uint8_t *p = data;
    size_t left = n;
    for (; left >= 64; left -= 64, p += 64)
        sha1_block(h, p);
    /* The tail, 0x80, zeros, and the length in bits (big-endian): one or two blocks. */
    uint8_t last[128] = {0};
    if (left)
        memcpy(last, p, left);
    last[left] = 0x80;
    size_t end = left < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++)
        last[end - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, last);
    if (end == 128)
        sha1_block(h, last + 64);
    for (int i = 0; i < 5; i++) {
        md[4 * i] = (uint8_t)(h[i] >> 24);
        md[4 * i + 1] = (uint8_t)(h[i] >> 16);
        md[4 * i + 2] = (uint8_t)(h[i] >> 8);
        md[4 * i + 3] = (uint8_t)h[i];
    }
}

void px__md5(const void *data, size_t n, uint8_t md[16])
{
    unsigned int len = 16;
    EVP_Digest(data, n, md, &len, EVP_md5(), NULL);
}

int px__memcmp_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n);
}
