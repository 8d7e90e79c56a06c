/* libFuzzer harness for src/front/pusher_proto.c px__pusher_query_parse: the query string of
 * a Pusher HTTP API request, put in the form that is signed. A parse either fails with a
 * message, or gives at most PX__PQ_MAX_PARAMS distinct non-empty keys, the auth fields equal
 * to their parameters, and a string to sign that holds every parameter but auth_signature as
 * key=value, sorted by key, inside the caller's buffer. Pure: the same input, the same result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "front/pusher_proto.h"

static int cmp(px_str_t a, px_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *q = (const char *)data;
    size_t bl = 3 * size + 16;
    char *b1 = malloc(bl), *b2 = malloc(bl);
    px__pquery_t a, b;
    int r = px__pusher_query_parse(q, size, &a, b1, bl);
    int r2 = px__pusher_query_parse(q, size, &b, b2, bl);
    CHECK(r == r2);
    if (r) {
        CHECK(r == -1 && a.err[0] && strcmp(a.err, b.err) == 0);
        free(b1);
        free(b2);
        return 0;
    }
    CHECK(a.nparams == b.nparams && a.nparams <= PX__PQ_MAX_PARAMS);
    CHECK(a.to_sign.len == b.to_sign.len &&
          memcmp(a.to_sign.ptr, b.to_sign.ptr, a.to_sign.len) == 0);
    CHECK(a.to_sign.ptr >= b1 && a.to_sign.ptr + a.to_sign.len <= b1 + bl);
    size_t expect = 0, listed = 0;
    for (size_t i = 0; i < a.nparams; i++) {
        CHECK(a.keys[i].len > 0);
        CHECK(a.keys[i].ptr >= b1 && a.keys[i].ptr + a.keys[i].len <= b1 + bl);
        for (size_t j = 0; j < i; j++)
            CHECK(cmp(a.keys[i], a.keys[j]) != 0);
        int sig = a.keys[i].len == 14 && memcmp(a.keys[i].ptr, "auth_signature", 14) == 0;
        if (sig) {
            CHECK(cmp(a.auth_signature, a.values[i]) == 0);
            continue;
        }
        expect += a.keys[i].len + 1 + a.values[i].len;
        listed++;
    }
    CHECK(a.to_sign.len == expect + (listed ? listed - 1 : 0));
    /* Rebuilt independently: pick the smallest key not taken yet, each time. */
    char *want = malloc(a.to_sign.len + 1);
    size_t at = 0;
    int taken[PX__PQ_MAX_PARAMS] = {0};
    for (size_t n = 0; n < listed; n++) {
        int best = -1;
        for (size_t i = 0; i < a.nparams; i++) {
            if (taken[i] ||
                (a.keys[i].len == 14 && memcmp(a.keys[i].ptr, "auth_signature", 14) == 0))
                continue;
            if (best < 0 || cmp(a.keys[i], a.keys[best]) < 0)
                best = (int)i;
        }
        CHECK(best >= 0);
        taken[best] = 1;
        if (n)
            want[at++] = '&';
        memcpy(want + at, a.keys[best].ptr, a.keys[best].len);
        at += a.keys[best].len;
        want[at++] = '=';
        if (a.values[best].len)
            memcpy(want + at, a.values[best].ptr, a.values[best].len);
        at += a.values[best].len;
    }
    CHECK(at == a.to_sign.len && (!at || memcmp(want, a.to_sign.ptr, at) == 0));
    free(want);
    free(b1);
    free(b2);
    return 0;
}
