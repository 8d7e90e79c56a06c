/* libFuzzer harness for px__http1_decode_chunked.
 *
 * The input is decoded whole, in 2-4 pieces cut where a hash of the input says,
 * and (when short) one byte per call, each piece in its own exact-size heap
 * buffer. All must agree on the outcome, the decoded bytes and the bytes that
 * follow the body. A hash also picks tight line/trailer limits at times. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http/http1_parse.h"

typedef struct outcome {
    ssize_t rc;
    const char *error;
    size_t dlen, rlen; /* decoded bytes in out[0..dlen), then what followed the body */
    uint8_t *out;
} outcome_t;

static void decode(const uint8_t *data, size_t size, const size_t *cuts, size_t ncuts,
                   const px__http1_chunked_t *lim, outcome_t *o)
{
    px__http1_chunked_t d;
    px__http1_chunked_init(&d);
    d.max_line = lim->max_line;
    d.max_trailer = lim->max_trailer;
    o->rc = PX_PARSE_INCOMPLETE;
    o->error = NULL;
    o->dlen = o->rlen = 0;
    size_t start = 0;
    for (size_t i = 0; i <= ncuts && o->rc == PX_PARSE_INCOMPLETE; i++) {
        size_t end = i < ncuts ? cuts[i] : size, n = end - start;
        char *b = malloc(n ? n : 1);
        CHECK(b);
        memcpy(b, data + start, n);
        size_t len = n;
        o->rc = px__http1_decode_chunked(&d, b, &len);
        CHECK(len <= n);
        memcpy(o->out + o->dlen, b, len);
        o->dlen += len;
        if (o->rc >= 0) {
            /* the body ended: what followed it is the rest of this piece, then
             * every byte not fed yet */
            CHECK(len + (size_t)o->rc <= n);
            CHECK(memcmp(b + len, data + end - (size_t)o->rc, (size_t)o->rc) == 0);
            o->rlen = (size_t)o->rc + (size - end);
        } else if (o->rc == PX_PARSE_ERROR) {
            CHECK(d.error != NULL);
            o->error = d.error;
        } else {
            CHECK(o->rc == PX_PARSE_INCOMPLETE);
        }
        free(b);
        start = end;
    }
}

static void same(const outcome_t *a, const outcome_t *b)
{
    CHECK(a->error == b->error);
    if (a->rc >= 0)
        CHECK(b->rc >= 0 && a->rlen == b->rlen); /* rc itself depends on the cut */
    else
        CHECK(a->rc == b->rc);
    CHECK(a->dlen == b->dlen);
    CHECK(memcmp(a->out, b->out, a->dlen) == 0);
}

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211u;
    return h;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = hash(data, size);
    px__http1_chunked_t lim;
    px__http1_chunked_init(&lim);
    if ((h & 7) == 0) {
        lim.max_line = (h >> 8) % 32;
        lim.max_trailer = (h >> 16) % 64;
    }
    outcome_t whole = {.out = malloc(size + 1)}, other = {.out = malloc(size + 1)};
    CHECK(whole.out && other.out);

    decode(data, size, NULL, 0, &lim, &whole);
    CHECK(whole.dlen + whole.rlen <= size);

    size_t cuts[3];
    size_t ncuts = 1 + (h >> 24) % 3;
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = size ? (size_t)((h >> (32 + 10 * i)) % (size + 1)) : 0;
    qsort(cuts, ncuts, sizeof cuts[0], cmp_size);
    decode(data, size, cuts, ncuts, &lim, &other);
    same(&whole, &other);

    if (size <= 1024) {
        static size_t each[1024];
        for (size_t i = 0; i < size; i++)
            each[i] = i + 1;
        decode(data, size, each, size, &lim, &other);
        same(&whole, &other);
    }
    free(whole.out);
    free(other.out);
    return 0;
}
