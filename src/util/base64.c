/* Base64 encoders and the strict base64url decoder (see base64.h). */
#include "util/base64.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The whole groups and the tail; `pad` completes the last group with '='. */
static size_t encode(const char *alphabet, int pad, const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    return o;
}

size_t px__base64_encode(const uint8_t *in, size_t n, char *out)
{
    return encode(std_alphabet, 1, in, n, out);
}

size_t px__base64url_encode(const uint8_t *in, size_t n, char *out)
{
    return encode(url_alphabet, 0, in, n, out);
}

static int url_value(unsigned c)
{
    if (c - 'A' < 26)
        return (int)(c - 'A');
    if (c - 'a' < 26)
        return (int)(c - 'a' + 26);
    if (c - '0' < 10)
        return (int)(c - '0' + 52);
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long px__base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        return -1;
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    for (; i < n; i++) {
        int v = url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    switch (n % 4) {
    case 2: /* 12 bits: one byte + 4 unused bits */
        if (acc & 0xF)
            return -1;
        out[o++] = (uint8_t)(acc >> 4);
        break;
    case 3: /* 18 bits: two bytes + 2 unused bits */
        if (acc & 0x3)
            return -1;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
        break;
    }
    return (long)o;
}
