/* libFuzzer harness for src/hub/jwt.c. The first byte selects what the rest is:
 *   0: a compact token, verified with a fixed secret (must never crash);
 *   1: a claims payload, signed with px__jwt_sign_hs256 then verified, so the claims code
 *      is reached behind a valid signature;
 *   2: a header, signed here with HMAC-SHA256 over a fixed payload (alg/typ/crit logic);
 *   3: "pattern\0subject": px__glob_match against a dynamic-programming reference.
 * Successful verifications must leave the claims struct within its documented bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz.h"
#include "plexus/json.h"
#include "util/glob.h"
#include "util/jwt.h"

static const uint8_t secret[] = "fuzz-secret";
#define NOW ((int64_t)1750000000)

static void check_claims(const px__jwt_claims_t *c)
{
    CHECK(c->sub_len < PX_JWT_MAX_SUB && strlen(c->sub) == c->sub_len);
    CHECK(c->npatterns <= PX_JWT_MAX_PATTERNS);
    CHECK(c->has_channels || c->npatterns == 0);
    for (uint32_t i = 0; i < c->npatterns; i++) {
        const px__jwt_pattern_t *p = &c->patterns[i];
        CHECK((size_t)p->off + p->len <= PX_JWT_PATTERN_BUF);
        CHECK(p->actions >= 1 && p->actions <= 3);
        /* a pattern without wildcards matches itself */
        if (!memchr(c->pattern_buf + p->off, '*', p->len) &&
            !memchr(c->pattern_buf + p->off, '?', p->len))
            CHECK(px__jwt_channel_allowed(c, p->actions, c->pattern_buf + p->off, p->len));
    }
    if (c->info.ptr) {
        CHECK(c->info.ptr == c->info_buf && c->info.len <= PX_JWT_MAX_INFO);
        px_json_doc_t d;
        CHECK(px_json_parse(&d, c->info.ptr, c->info.len, NULL, 0, 0) == (int)c->info.len);
    } else {
        CHECK(c->info.len == 0);
    }
    (void)px__jwt_channel_allowed(c, PX_JWT_SUBSCRIBE, "room:1", 6);
    (void)px__jwt_channel_allowed(c, PX_JWT_PUBLISH, "", 0);
}

static size_t b64url(const void *in, size_t n, char *out)
{
    size_t o = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (o && out[o - 1] == '=')
        o--;
    for (size_t i = 0; i < o; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return o;
}

/* Reference glob: DP over prefixes, obviously correct and quadratic. */
static int ref_glob(const uint8_t *p, size_t pn, const uint8_t *s, size_t sn)
{
    static uint8_t dp[257][257];
    dp[0][0] = 1;
    for (size_t j = 1; j <= sn; j++)
        dp[0][j] = 0;
    for (size_t i = 1; i <= pn; i++) {
        dp[i][0] = p[i - 1] == '*' && dp[i - 1][0];
        for (size_t j = 1; j <= sn; j++) {
            if (p[i - 1] == '*')
                dp[i][j] = dp[i - 1][j] || dp[i][j - 1];
            else
                dp[i][j] = (p[i - 1] == '?' || p[i - 1] == s[j - 1]) && dp[i - 1][j - 1];
        }
    }
    return dp[pn][sn];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static px__jwt_claims_t claims;
    static char tok[3 * PX_JWT_MAX_TOKEN];
    const char *err = NULL;
    if (size < 1)
        return 0;
    unsigned mode = data[0] & 3;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    int rc;

    switch (mode) {
    case 0:
        rc = px__jwt_verify_hs256(in, n, secret, sizeof secret - 1, NOW, &claims, &err);
        CHECK(rc == 0 ? err == NULL : err != NULL);
        if (rc == 0)
            check_claims(&claims);
        break;
    case 1:
        rc = px__jwt_sign_hs256(in, n, secret, sizeof secret - 1, tok, sizeof tok);
        if (rc < 0)
            break;
        CHECK((size_t)rc == strlen(tok) && rc <= PX_JWT_MAX_TOKEN);
        rc = px__jwt_verify_hs256(tok, (size_t)rc, secret, sizeof secret - 1, NOW, &claims, &err);
        /* the signer only emits well-formed HS256 tokens */
        CHECK(rc != PX_JWT_ESIGNATURE && rc != PX_JWT_EALG && rc != PX_JWT_ETOOLONG);
        if (rc == 0)
            check_claims(&claims);
        else
            CHECK(err != NULL);
        /* the same token under another secret never verifies */
        rc = px__jwt_verify_hs256(tok, strlen(tok), (const uint8_t *)"x", 1, NOW, &claims, &err);
        CHECK(rc != 0);
        break;
    case 2: {
        if (n > 2048)
            break;
        static const char payload[] = "{\"sub\":\"u\",\"channels\":[\"*\"]}";
        size_t o = b64url(in, n, tok);
        tok[o++] = '.';
        o += b64url(payload, sizeof payload - 1, tok + o);
        unsigned char mac[32];
        unsigned int mlen = 0;
        CHECK(HMAC(EVP_sha256(), secret, sizeof secret - 1, (unsigned char *)tok, o, mac, &mlen));
        tok[o++] = '.';
        o += b64url(mac, mlen, tok + o);
        rc = px__jwt_verify_hs256(tok, o, secret, sizeof secret - 1, NOW, &claims, &err);
        if (rc == 0) {
            /* only a header that really says HS256 can pass */
            px_json_tok_t t[64];
            px_json_doc_t d;
            CHECK(px_json_parse(&d, in, n, t, 64, 8) == (int)n);
            CHECK(px_json_streq(&d, px_json_get(&d, 0, "alg"), "HS256", 5));
            CHECK(strcmp(claims.sub, "u") == 0);
            check_claims(&claims);
        }
        break;
    }
    case 3: {
        const uint8_t *p = data + 1, *z = memchr(p, 0, n);
        if (!z)
            break;
        size_t pn = (size_t)(z - p), sn = n - pn - 1;
        if (pn > 256 || sn > 256)
            break;
        int got = px__glob_match((const char *)p, pn, (const char *)z + 1, sn);
        CHECK(got == ref_glob(p, pn, z + 1, sn));
        break;
    }
    }
    return 0;
}
