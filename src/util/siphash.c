/* SipHash-c-d over bytes, little-endian as the reference implementation. */
#include "util/siphash.h"

#include <string.h>
#include <unistd.h>

#include "plexus/common.h"

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

/* `c` and `d` are constants at every call, so the rounds unroll. */
static inline __attribute__((always_inline)) uint64_t
siphash(const px__sipkey_t *key, const void *data, size_t len, int c, int d)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ key->k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ key->k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ key->k0;
    uint64_t v3 = 0x7465646279746573ull ^ key->k1;
    const unsigned char *p = data;
    const unsigned char *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        uint64_t m = load64(p);
        v3 ^= m;
        for (int i = 0; i < c; i++)
            SIPROUND;
        v0 ^= m;
    }
    /* The last block: the 0-7 remaining bytes, and the length's low byte on top. */
    uint64_t b = (uint64_t)len << 56;
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; /* fallthrough */
    case 6: b |= (uint64_t)p[5] << 40; /* fallthrough */
    case 5: b |= (uint64_t)p[4] << 32; /* fallthrough */
    case 4: b |= (uint64_t)p[3] << 24; /* fallthrough */
    case 3: b |= (uint64_t)p[2] << 16; /* fallthrough */
    case 2: b |= (uint64_t)p[1] << 8;  /* fallthrough */
    case 1: b |= (uint64_t)p[0]; break;
    default: break;
    }
    v3 ^= b;
    for (int i = 0; i < c; i++)
        SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int i = 0; i < d; i++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t px__siphash13(const px__sipkey_t *key, const void *data, size_t len)
{
    return siphash(key, data, len, 1, 3);
}

uint64_t px__siphash24(const px__sipkey_t *key, const void *data, size_t len)
{
    return siphash(key, data, len, 2, 4);
}

void px__sipkey_random(px__sipkey_t *key)
{
    unsigned char raw[16];
    if (px_random(raw, sizeof raw) == 0) {
        key->k0 = load64(raw);
        key->k1 = load64(raw + 8);
        return;
    }
    /* No getrandom: a remote client still cannot see the clock or the layout. */
    static const px__sipkey_t fixed = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull};
    uint64_t t = px_now_ns(), a = (uint64_t)(uintptr_t)key, pid = (uint64_t)getpid();
    key->k0 = px__siphash24(&fixed, &t, sizeof t) ^ a;
    key->k1 = px__siphash24(&fixed, &a, sizeof a) ^ (pid << 32) ^ t;
}
