/* libFuzzer harness for the PROXY protocol parser and writers
 * (src/net/proxy_protocol.c).
 *
 * Each input is parsed whole with a limit derived from it, and at many prefix
 * lengths, every time from a fresh heap buffer of exactly those bytes.
 * Promises checked: the result is a length within the input and the limit, 0,
 * PX_PARSE_INCOMPLETE or PX_PARSE_ERROR; 0 exactly when px__proxy_detect says
 * no; once a prefix gives an answer other than "incomplete", the whole input
 * gives the same one (with the same addresses); and a header with addresses,
 * written again as v1 and as v2, parses back to the same addresses. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy_protocol.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static int parse(const uint8_t *data, size_t len, size_t max, px_proxy_hdr_t *h)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    memset(h, 0xa5, sizeof *h);
    int r = px__proxy_parse(copy, len, max, h);
    int d = px__proxy_detect(copy, len);
    free(copy);
    CHECK(r == PX_PARSE_ERROR || r == PX_PARSE_INCOMPLETE || (r >= 0 && (size_t)r <= len));
    CHECK((r == 0) == (d == 0));
    if (r > 0) {
        CHECK((size_t)r <= max);
        CHECK(h->version == 1 || h->version == 2);
        if (!h->local) {
            CHECK(h->src.ss_family == h->dst.ss_family);
            CHECK(h->src.ss_family == AF_INET || h->src.ss_family == AF_INET6);
        }
    }
    return r;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && memcmp(&x->sin_addr, &y->sin_addr, 4) == 0;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 70000)
        return 0;
    size_t max = size && (data[size - 1] & 1) ? 64 + data[size - 1] * 8u : 70000;
    px_proxy_hdr_t whole, part;
    int w = parse(data, size, max, &whole);
    size_t step = size <= 400 ? 1 : size / 200;
    for (size_t n = 0; n <= size; n += step) {
        int r = parse(data, n, max, &part);
        if (r != PX_PARSE_INCOMPLETE) {
            CHECK(r == w);
            if (r > 0) {
                CHECK(part.local == whole.local && part.version == whole.version);
                if (!part.local)
                    CHECK(same_addr(&part.src, &whole.src) && same_addr(&part.dst, &whole.dst));
            }
            break;
        }
    }
    if (w > 0 && !whole.local) {
        char buf[PX_PROXY_WRITE_MAX];
        for (int v = 1; v <= 2; v++) {
            ssize_t n = v == 1 ? px__proxy_write_v1(buf, sizeof buf, &whole.src, &whole.dst)
                               : px__proxy_write_v2(buf, sizeof buf, &whole.src, &whole.dst);
            CHECK(n > 0 && (size_t)n <= sizeof buf);
            px_proxy_hdr_t again;
            CHECK(parse((const uint8_t *)buf, (size_t)n, 4096, &again) == (int)n);
            CHECK(!again.local && again.version == v);
            CHECK(same_addr(&again.src, &whole.src) && same_addr(&again.dst, &whole.dst));
        }
    }
    return 0;
}
