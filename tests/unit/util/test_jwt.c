/* Unit tests for src/hub/jwt.c. Tokens come from three independent sources: constants
 * computed with Python's hmac/base64 when the test was written, px__jwt_sign_hs256, and
 * mint() below (OpenSSL EVP_EncodeBlock + HMAC), which can also forge arbitrary headers,
 * algorithms and payloads that the library's signer refuses to produce. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util/glob.h"
#include "util/jwt.h"

#define SECRET     "plexus-test-secret-0123456789abcdef"
#define SECRET_LEN (sizeof SECRET - 1)
#define NOW        ((int64_t)1750000000)

/* Computed at authoring time:
 *   python3 -c 'import hmac,hashlib,base64; b=lambda x: base64.urlsafe_b64encode(x)
 *     .rstrip(b"=").decode(); s=b(HDR)+"."+b(PAYLOAD); print(s+"."+b(hmac.new(SECRET,
 *     s.encode(), hashlib.sha256).digest()))'
 * with HDR = {"alg":"HS256","typ":"JWT"} and PAYLOAD = KNOWN_PAYLOAD. */
#define KNOWN_PAYLOAD                                                                              \
    "{\"sub\":\"alice\",\"iat\":1700000000,\"exp\":4102444800,\"channels\":{\"subscribe\":"        \
    "[\"room:*\",\"news\"],\"publish\":[\"room:*\"]},\"info\":{\"name\":\"Alice\","                \
    "\"color\":\"#f00\"}}"
static const char known_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJjaGFubmVscyI6eyJzdWJzY3"
    "JpYmUiOlsicm9vbToqIiwibmV3cyJdLCJwdWJsaXNoIjpbInJvb206KiJdfSwiaW5mbyI6eyJuYW1lIjoiQWxpY2Ui"
    "LCJjb2xvciI6IiNmMDAifX0.tWzZoj7nvZKSoR_6t2-Z1GDwXZ7gWE4LkMDetIL0NOg";
/* header {"alg":"HS256"} (no typ), payload {"sub":"bob","channels":["chat:?","lobby"]} */
static const char known_token2[] =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJjaGFubmVscyI6WyJjaGF0Oj8iLCJsb2JieSJdfQ."
    "f9WqlmykA7iabW-kmHnVJ8On8YjtmeD9k3S3j-8p_sE";

static px__jwt_claims_t claims;
static const char *err;

static int verify(const char *tok, size_t len, int64_t now)
{
    err = "unset";
    return px__jwt_verify_hs256(tok, len, (const uint8_t *)SECRET, SECRET_LEN, now, &claims, &err);
}
#define VERIFY(tok) verify((tok), strlen(tok), NOW)

/* Independent base64url: OpenSSL's standard base64, then translate and strip padding. */
static size_t b64url(const void *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    size_t o = (size_t)len;
    while (o && out[o - 1] == '=')
        o--;
    for (size_t i = 0; i < o; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[o] = '\0';
    return o;
}

/* Builds header.payload.signature with any digest (NULL md: empty signature). */
static char *mint(const char *header, const char *payload, const EVP_MD *md, const char *secret)
{
    static char tok[16384];
    size_t o = b64url(header, strlen(header), tok);
    tok[o++] = '.';
    o += b64url(payload, strlen(payload), tok + o);
    unsigned char mac[64];
    unsigned int mlen = 0;
    if (md)
        assert_non_null(HMAC(md, secret, (int)strlen(secret), (unsigned char *)tok, o, mac, &mlen));
    tok[o++] = '.';
    o += b64url(mac, mlen, tok + o);
    tok[o] = '\0';
    return tok;
}
#define HS256_HDR     "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define MINT(payload) mint(HS256_HDR, (payload), EVP_sha256(), SECRET)

static void test_known_good(void **state)
{
    (void)state;
    assert_int_equal(VERIFY(known_token), 0);
    assert_null(err);
    assert_string_equal(claims.sub, "alice");
    assert_int_equal(claims.sub_len, 5);
    assert_int_equal(claims.iat, 1700000000);
    assert_int_equal(claims.exp, 4102444800);
    assert_int_equal(claims.nbf, 0);
    assert_true(claims.has_channels);
    assert_int_equal(claims.npatterns, 3);
    const char info[] = "{\"name\":\"Alice\",\"color\":\"#f00\"}";
    assert_int_equal(claims.info.len, sizeof info - 1);
    assert_memory_equal(claims.info.ptr, info, claims.info.len);
    assert_ptr_equal(claims.info.ptr, claims.info_buf);
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "room:42", 7));
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "room:42", 7));
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "news", 4));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "news", 4));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "newsx", 5));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "room", 4));

    /* the library signer reproduces the Python-computed token exactly */
    char out[1024];
    int n = px__jwt_sign_hs256(KNOWN_PAYLOAD, strlen(KNOWN_PAYLOAD), (const uint8_t *)SECRET,
                               SECRET_LEN, out, sizeof out);
    assert_int_equal(n, (int)strlen(known_token));
    assert_string_equal(out, known_token);

    /* second constant: no typ, plain-array channels meaning both actions */
    assert_int_equal(VERIFY(known_token2), 0);
    assert_string_equal(claims.sub, "bob");
    assert_int_equal(claims.exp, 0);
    assert_null(claims.info.ptr);
    assert_int_equal(claims.npatterns, 2);
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "chat:1", 6));
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "chat:1", 6));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "chat:12", 7));
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "lobby", 5));
}

static void test_sign_roundtrip(void **state)
{
    (void)state;
    char out[PX_JWT_MAX_TOKEN + 1];
    const char payload[] = " {\"sub\":\"c\\u00e9\",\"exp\":1750000001} ";
    int n = px__jwt_sign_hs256(payload, sizeof payload - 1, (const uint8_t *)SECRET, SECRET_LEN,
                               out, sizeof out);
    assert_true(n > 0);
    assert_int_equal(verify(out, (size_t)n, NOW), 0);
    assert_string_equal(claims.sub, "c\xc3\xa9");
    /* independent minting agrees byte for byte */
    assert_string_equal(out, mint(HS256_HDR, payload, EVP_sha256(), SECRET));

    /* signer errors */
    assert_int_equal(
        px__jwt_sign_hs256("[1]", 3, (const uint8_t *)SECRET, SECRET_LEN, out, sizeof out),
        -EINVAL);
    assert_int_equal(
        px__jwt_sign_hs256("{", 1, (const uint8_t *)SECRET, SECRET_LEN, out, sizeof out), -EINVAL);
    assert_int_equal(px__jwt_sign_hs256("{}", 2, (const uint8_t *)SECRET, 0, out, sizeof out),
                     -EINVAL);
    /* "{}" signs to 36 + 1 + 3 + 1 + 43 = 84 bytes; 84 needs 85 with the NUL */
    assert_int_equal(px__jwt_sign_hs256("{}", 2, (const uint8_t *)SECRET, SECRET_LEN, out, 84),
                     -ENOSPC);
    assert_int_equal(px__jwt_sign_hs256("{}", 2, (const uint8_t *)SECRET, SECRET_LEN, out, 85), 84);
    static char huge[7000];
    memset(huge, ' ', sizeof huge);
    huge[0] = '{';
    huge[sizeof huge - 1] = '}';
    assert_int_equal(
        px__jwt_sign_hs256(huge, sizeof huge, (const uint8_t *)SECRET, SECRET_LEN, out, sizeof out),
        -EMSGSIZE);
}

static void test_signature_failures(void **state)
{
    (void)state;
    char tok[sizeof known_token];
    /* wrong secret */
    assert_int_equal(px__jwt_verify_hs256(known_token, strlen(known_token),
                                          (const uint8_t *)"other", 5, NOW, &claims, &err),
                     PX_JWT_ESIGNATURE);
    assert_string_equal(err, "invalid signature");
    assert_int_equal(px__jwt_verify_hs256(known_token, strlen(known_token), (const uint8_t *)SECRET,
                                          SECRET_LEN - 1, NOW, &claims, &err),
                     PX_JWT_ESIGNATURE);
    /* every single-character change of the payload part breaks the signature (or the
     * encoding), never verifies */
    const char *p1 = strchr(known_token, '.') + 1, *p2 = strrchr(known_token, '.');
    for (const char *c = p1; c < p2; c++) {
        memcpy(tok, known_token, sizeof tok);
        tok[c - known_token] = *c == 'A' ? 'B' : 'A';
        int rc = VERIFY(tok);
        assert_true(rc == PX_JWT_ESIGNATURE || rc == PX_JWT_EMALFORMED);
    }
    /* tampered payload, cleanly encoded: exp pushed out, old signature kept */
    /* (mint() returns a static buffer: keep copies) */
    char forged[1024], good[1024], evil[1024];
    snprintf(good, sizeof good, "%s", MINT("{\"sub\":\"alice\",\"exp\":1}"));
    snprintf(evil, sizeof evil, "%s", MINT("{\"sub\":\"alice\",\"exp\":9999999999}"));
    assert_int_equal(VERIFY(evil), 0);
    snprintf(forged, sizeof forged, "%.*s%s", (int)(strrchr(evil, '.') - evil), evil,
             strrchr(good, '.'));
    assert_int_equal(VERIFY(forged), PX_JWT_ESIGNATURE);
    /* tampered header (extra kid), old signature kept */
    snprintf(good, sizeof good, "%s", MINT("{\"sub\":\"alice\"}"));
    snprintf(evil, sizeof evil, "%s",
             mint("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"x\"}", "{\"sub\":\"alice\"}",
                  EVP_sha256(), SECRET));
    snprintf(forged, sizeof forged, "%.*s%s", (int)(strrchr(evil, '.') - evil), evil,
             strrchr(good, '.'));
    assert_int_equal(VERIFY(forged), PX_JWT_ESIGNATURE);
    /* a legitimately signed kid header is fine */
    assert_int_equal(VERIFY(evil), 0);
    /* signature of the right length but canonical-encoding violation: last char carries
     * non-zero unused bits (43 chars = 258 bits for 256) */
    memcpy(tok, known_token, sizeof tok);
    char *last = tok + strlen(tok) - 1;
    assert_int_equal(*last, 'g'); /* 'g' = 32 = 100000b: low 2 bits 0 */
    *last = 'h';                  /* same top 4 bits, unused bit set */
    assert_int_equal(VERIFY(tok), PX_JWT_EMALFORMED);
    assert_string_equal(err, "malformed signature encoding");
}

static void test_alg_rejection(void **state)
{
    (void)state;
    const char *payload = "{\"sub\":\"mallory\"}";
    static const struct {
        const char *header;
        const char *msg;
        int rc;
    } cases[] = {
        {"{\"alg\":\"none\"}", "alg none is not allowed", PX_JWT_EALG},
        {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "alg none is not allowed", PX_JWT_EALG},
        {"{\"alg\":\"NONE\"}", "alg none is not allowed", PX_JWT_EALG},
        {"{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "unsupported alg (only HS256 is accepted)",
         PX_JWT_EALG},
        {"{\"alg\":\"HS384\"}", "unsupported alg (only HS256 is accepted)", PX_JWT_EALG},
        {"{\"alg\":\"RS256\"}", "unsupported alg (only HS256 is accepted)", PX_JWT_EALG},
        {"{\"alg\":\"ES256\"}", "unsupported alg (only HS256 is accepted)", PX_JWT_EALG},
        {"{\"alg\":\"hs256\"}", "unsupported alg (only HS256 is accepted)", PX_JWT_EALG},
        {"{\"alg\":\"HS256 \"}", "unsupported alg (only HS256 is accepted)", PX_JWT_EALG},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "crit header is not supported", PX_JWT_EALG},
        {"{\"typ\":\"JWT\"}", "header has no alg", PX_JWT_EMALFORMED},
        {"{\"alg\":256}", "alg must be a string", PX_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\",\"alg\":\"none\"}", "duplicate key in header", PX_JWT_EMALFORMED},
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "duplicate key in header", PX_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\",\"typ\":\"JWS\"}", "typ must be JWT", PX_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\",\"typ\":1}", "typ must be JWT", PX_JWT_EMALFORMED},
        {"[\"HS256\"]", "header is not a JSON object", PX_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\",}", "header is not a JSON object", PX_JWT_EMALFORMED},
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(cases); i++) {
        /* unsigned (alg none style), HS256-signed and HS512-signed variants all fail the
         * same way: the header is judged before the signature */
        const EVP_MD *mds[] = {NULL, EVP_sha256(), EVP_sha512()};
        for (size_t m = 0; m < 3; m++) {
            const char *tok = mint(cases[i].header, payload, mds[m], SECRET);
            int rc = VERIFY(tok);
            if (rc != cases[i].rc || strcmp(err, cases[i].msg))
                fail_msg("case %zu/%zu %s: rc %d '%s'", i, m, cases[i].header, rc, err);
        }
    }
    /* lowercase "jwt" typ is accepted (media types are case-insensitive) */
    assert_int_equal(
        VERIFY(mint("{\"typ\":\"jwt\",\"alg\":\"HS256\"}", payload, EVP_sha256(), SECRET)), 0);
}

static void test_time_claims(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "{\"exp\":%lld}", (long long)NOW - 1);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EEXPIRED);
    assert_string_equal(err, "token expired");
    snprintf(p, sizeof p, "{\"exp\":%lld}", (long long)NOW);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EEXPIRED); /* exp is exclusive */
    snprintf(p, sizeof p, "{\"exp\":%lld}", (long long)NOW + 1);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.exp, NOW + 1);
    snprintf(p, sizeof p, "{\"nbf\":%lld}", (long long)NOW + 1);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_ENOTYET);
    assert_string_equal(err, "token not yet valid (nbf)");
    snprintf(p, sizeof p, "{\"nbf\":%lld,\"iat\":%lld}", (long long)NOW, (long long)NOW);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.nbf, NOW);
    assert_int_equal(claims.iat, NOW);
    /* exp:0 present means expired in 1970, not "absent" */
    assert_int_equal(VERIFY(MINT("{\"exp\":0}")), PX_JWT_EEXPIRED);
    /* types */
    assert_int_equal(VERIFY(MINT("{\"exp\":1.5e9}")), PX_JWT_EMALFORMED);
    assert_string_equal(err, "exp must be an integer");
    assert_int_equal(VERIFY(MINT("{\"exp\":\"4102444800\"}")), PX_JWT_EMALFORMED);
    assert_int_equal(VERIFY(MINT("{\"nbf\":true}")), PX_JWT_EMALFORMED);
    assert_string_equal(err, "nbf must be an integer");
    assert_int_equal(VERIFY(MINT("{\"iat\":99999999999999999999}")), PX_JWT_EMALFORMED);
    assert_int_equal(VERIFY(MINT("{\"exp\":1,\"exp\":4102444800}")), PX_JWT_EMALFORMED);
    assert_string_equal(err, "duplicate claim");
    /* a malformed claim is reported as such even when the token is also expired */
    assert_int_equal(VERIFY(MINT("{\"exp\":1,\"sub\":7}")), PX_JWT_EMALFORMED);
}

static void test_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *tok;
        const char *msg;
    } cases[] = {
        {"", "empty token"},
        {"abc", "token must have three dot-separated parts"},
        {"a.b", "token must have three dot-separated parts"},
        {"a.b.c.d", "token must have three dot-separated parts"},
        {"..", "malformed header encoding"},
        {".e30.sig", "malformed header encoding"},
        /* header with '=' padding, '+', '/', space, 4k+1 length */
        {"eyJhbGciOiJIUzI1NiJ9=.e30.x", "malformed header encoding"},
        {"eyJhbGciOiJIUzI1NiJ9+.e30.x", "malformed header encoding"},
        {"eyJhbGciOiJIUzI1N/J9.e30.x", "malformed header encoding"},
        {"eyJhbGciOiJIUzI1N J9.e30.x", "malformed header encoding"},
        {"eyJhbGciOiJIUzI1NiJ9A.e30.x", "malformed header encoding"},
        /* non-canonical trailing bits in the header ("e30" -> "e31" is "{}" + bit) */
        {"e31.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed header encoding"},
        {"e30.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "header has no alg"},
        /* signature: wrong length, padded, invalid characters */
        {"eyJhbGciOiJIUzI1NiJ9.e30.", "malformed signature encoding"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.AAAA", "malformed signature encoding"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
         "malformed signature encoding"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*",
         "malformed signature encoding"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "malformed signature encoding"},
        {"eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "invalid signature"},
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(cases); i++) {
        int rc = VERIFY(cases[i].tok);
        if (rc >= 0 || strcmp(err, cases[i].msg))
            fail_msg("case %zu %s: rc %d '%s'", i, cases[i].tok, rc, err);
    }
    /* payload problems behind a valid signature */
    static const struct {
        const char *payload;
        const char *msg;
        int rc;
    } bad_payloads[] = {
        {"", "malformed payload encoding", PX_JWT_EMALFORMED},
        {"{", "payload is not valid JSON", PX_JWT_EMALFORMED},
        {"{\"a\":1,}", "payload is not valid JSON", PX_JWT_EMALFORMED},
        {"[1]", "payload is not a JSON object", PX_JWT_EMALFORMED},
        {"\"x\"", "payload is not a JSON object", PX_JWT_EMALFORMED},
        {"{\"sub\":\"\xff\"}", "payload is not valid JSON", PX_JWT_EMALFORMED},
        {"{\"sub\":1}", "sub must be a string", PX_JWT_EMALFORMED},
        {"{\"sub\":\"a\\u0000b\"}", "NUL in sub", PX_JWT_EMALFORMED},
        {"{\"channels\":\"room\"}", "channels claim must be an object or an array",
         PX_JWT_EMALFORMED},
        {"{\"channels\":[1]}", "channels patterns must be an array of strings", PX_JWT_EMALFORMED},
        {"{\"channels\":{\"publish\":\"x\"}}", "channels patterns must be an array of strings",
         PX_JWT_EMALFORMED},
        {"{\"channels\":{\"publish\":[],\"publish\":[\"*\"]}}", "duplicate key in channels claim",
         PX_JWT_EMALFORMED},
        {"{\"channels\":[\"a\\u0000\"]}", "NUL in channel pattern", PX_JWT_EMALFORMED},
        {"{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}", "payload too complex", PX_JWT_EBOUNDS},
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad_payloads); i++) {
        int rc = VERIFY(MINT(bad_payloads[i].payload));
        if (rc != bad_payloads[i].rc || strcmp(err, bad_payloads[i].msg))
            fail_msg("payload %zu %s: rc %d '%s'", i, bad_payloads[i].payload, rc, err);
    }
    /* API misuse */
    assert_int_equal(
        px__jwt_verify_hs256(known_token, strlen(known_token), NULL, 0, NOW, &claims, &err),
        -EINVAL);
    assert_int_equal(px__jwt_verify_hs256(known_token, strlen(known_token), (const uint8_t *)SECRET,
                                          SECRET_LEN, NOW, NULL, &err),
                     -EINVAL);
    assert_int_equal(
        px__jwt_verify_hs256(NULL, 0, (const uint8_t *)SECRET, SECRET_LEN, NOW, &claims, NULL),
        PX_JWT_EMALFORMED);
}

static void test_bounds(void **state)
{
    (void)state;
    static char p[PX_JWT_MAX_TOKEN * 2];
    static char tok[PX_JWT_MAX_TOKEN * 2];
    /* too long: rejected before any decoding, even if otherwise valid */
    memset(tok, 'A', PX_JWT_MAX_TOKEN + 1);
    tok[10] = '.';
    tok[20] = '.';
    assert_int_equal(verify(tok, PX_JWT_MAX_TOKEN + 1, NOW), PX_JWT_ETOOLONG);
    assert_string_equal(err, "token too long");
    int n = snprintf(p, sizeof p, "{\"pad\":\"%6100s\"}", "");
    const char *t = MINT(p);
    assert_true(strlen(t) > PX_JWT_MAX_TOKEN);
    assert_int_equal(verify(t, strlen(t), NOW), PX_JWT_ETOOLONG);
    /* just under the limit verifies */
    n = snprintf(p, sizeof p, "{\"pad\":\"%6000s\"}", "");
    t = MINT(p);
    assert_true(strlen(t) <= PX_JWT_MAX_TOKEN);
    assert_int_equal(verify(t, strlen(t), NOW), 0);
    (void)n;

    /* oversized header: refused before decoding */
    snprintf(p, sizeof p, "{\"alg\":\"HS256\",\"kid\":\"%0500d\"}", 0);
    assert_int_equal(VERIFY(mint(p, "{}", EVP_sha256(), SECRET)), PX_JWT_EBOUNDS);
    assert_string_equal(err, "header too long");
    snprintf(p, sizeof p, "{\"alg\":\"HS256\",\"kid\":\"%0480d\"}", 0);
    assert_int_equal(VERIFY(mint(p, "{}", EVP_sha256(), SECRET)), 0);

    /* sub: 255 bytes fit, 256 do not */
    n = snprintf(p, sizeof p, "{\"sub\":\"%0255d\"}", 0);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.sub_len, 255);
    n = snprintf(p, sizeof p, "{\"sub\":\"%0256d\"}", 0);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EBOUNDS);
    assert_string_equal(err, "sub too long");

    /* patterns: 32 fit, 33 do not */
    size_t o = (size_t)snprintf(p, sizeof p, "{\"channels\":[");
    for (int i = 0; i < 33; i++)
        o += (size_t)snprintf(p + o, sizeof p - o, "%s\"c%d:*\"", i ? "," : "", i);
    snprintf(p + o, sizeof p - o, "]}");
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EBOUNDS);
    assert_string_equal(err, "too many channel patterns");
    char *cut = strstr(p, ",\"c32:*\"");
    memcpy(cut, "]}", 3);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.npatterns, 32);
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "c31:x", 5));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "c32:x", 5));

    /* pattern bytes: 1024 in total fit (the NUL written by unescape must not overflow) */
    snprintf(p, sizeof p, "{\"channels\":{\"subscribe\":[\"%0512d\"],\"publish\":[\"%0512d\"]}}", 1,
             2);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.patterns[1].off + claims.patterns[1].len, PX_JWT_PATTERN_BUF);
    snprintf(p, sizeof p, "{\"channels\":{\"subscribe\":[\"%0512d\"],\"publish\":[\"%0513d\"]}}", 1,
             2);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EBOUNDS);
    assert_string_equal(err, "channel patterns too long");

    /* info: 1024 raw bytes fit, 1025 do not */
    snprintf(p, sizeof p, "{\"info\":\"%01022d\"}", 0);
    assert_int_equal(VERIFY(MINT(p)), 0);
    assert_int_equal(claims.info.len, 1024);
    snprintf(p, sizeof p, "{\"info\":\"%01023d\"}", 0);
    assert_int_equal(VERIFY(MINT(p)), PX_JWT_EBOUNDS);
    assert_string_equal(err, "info claim too large");
    assert_int_equal(VERIFY(MINT("{\"info\":null}")), 0);
    assert_int_equal(claims.info.len, 4);
    assert_memory_equal(claims.info.ptr, "null", 4);

    /* copying the claims struct and fixing up info */
    assert_int_equal(VERIFY(known_token), 0);
    px__jwt_claims_t copy = claims;
    memset(&claims, 0, sizeof claims);
    px__jwt_claims_fixup(&copy);
    assert_ptr_equal(copy.info.ptr, copy.info_buf);
    assert_memory_equal(copy.info.ptr, "{\"name\"", 7);
}

static void test_channels(void **state)
{
    (void)state;
    /* no channels claim: deny by default */
    assert_int_equal(VERIFY(MINT("{\"sub\":\"x\"}")), 0);
    assert_false(claims.has_channels);
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "a", 1));
    assert_false(px__jwt_channel_allowed(NULL, PX_JWT_SUBSCRIBE, "a", 1));
    /* empty list: present, denies */
    assert_int_equal(VERIFY(MINT("{\"channels\":[]}")), 0);
    assert_true(claims.has_channels);
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "a", 1));
    /* "*" alone allows everything, including the empty channel name */
    assert_int_equal(VERIFY(MINT("{\"channels\":{\"subscribe\":[\"*\"],\"x\":1}}")), 0);
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "", 0));
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_SUBSCRIBE, "any:thing", 9));
    assert_false(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "any:thing", 9));
    /* escaped pattern characters are decoded before matching */
    assert_int_equal(VERIFY(MINT("{\"channels\":[\"r\\u00e9union:\\u002a\"]}")), 0);
    assert_true(px__jwt_channel_allowed(&claims, PX_JWT_PUBLISH, "r\xc3\xa9union:1", 10));
}

static void test_glob(void **state)
{
    (void)state;
    static const struct {
        const char *p, *s;
        int want;
    } cases[] = {
        {"", "", 1},
        {"", "a", 0},
        {"*", "", 1},
        {"**", "", 1},
        {"*", "anything:at.all", 1},
        {"?", "", 0},
        {"?", "a", 1},
        {"?", "ab", 0},
        {"a?c", "abc", 1},
        {"a?c", "ac", 0},
        {"room:*", "room:1", 1},
        {"room:*", "room:", 1},
        {"room:*", "room", 0},
        {"room:*", "rooms:1", 0},
        {"*:lobby", "eu:lobby", 1},
        {"*:lobby", "eu:lobby2", 0},
        {"a*b*c", "abc", 1},
        {"a*b*c", "aXbYc", 1},
        {"a*b*c", "aXbYcZ", 0},
        {"a*b*c", "acb", 0},
        {"*a*b*c*", "xxaxxbxxc", 1},
        {"*abc", "ababc", 1},
        {"a*", "a", 1},
        {"a*b", "a", 0},
        {"*?", "", 0},
        {"*?", "x", 1},
        {"?*?", "x", 0},
        {"a", "*", 0}, /* a '*' in the subject is just a byte */
        {"*", "*", 1},
        {"?", "\xc3\xa9", 0}, /* '?' is one byte, not one character */
        {"??", "\xc3\xa9", 1},
        {"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(cases); i++) {
        int got = px__glob_match(cases[i].p, strlen(cases[i].p), cases[i].s, strlen(cases[i].s));
        if (got != cases[i].want)
            fail_msg("glob '%s' vs '%s': got %d", cases[i].p, cases[i].s, got);
    }
    /* embedded NUL bytes are ordinary bytes (lengths, not C strings) */
    assert_true(px__glob_match("a\0*", 3, "a\0bc", 4));
    assert_false(px__glob_match("a\0*", 3, "a", 1));

    /* pathological pattern: many stars against a long near-miss subject stays fast */
    static char pat[1024], subj[8192];
    for (size_t i = 0; i < sizeof pat - 1; i += 2) {
        pat[i] = 'a';
        pat[i + 1] = '*';
    }
    pat[sizeof pat - 1] = 'b';
    memset(subj, 'a', sizeof subj);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_false(px__glob_match(pat, sizeof pat, subj, sizeof subj));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 500); /* O(plen * slen) = 8M steps at most; exponential would never end */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_good),
        cmocka_unit_test(test_sign_roundtrip),
        cmocka_unit_test(test_signature_failures),
        cmocka_unit_test(test_alg_rejection),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_glob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
