/* HS256 JWT verification and signing (see jwt.h). Everything lives on the stack with
 * fixed bounds; OpenSSL provides HMAC-SHA256 and the constant-time compare. */
#include "util/base64.h"
#include "util/crypto.h"
#include "util/glob.h"
#include "util/jwt.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

#include "plexus/json.h"

#define SIG_LEN     32  /* HMAC-SHA256 output */
#define SIG_B64_LEN 43  /* its unpadded base64url length */
#define HEADER_MAX  512 /* decoded header bytes; real headers are ~30 */
/* ---- channel permissions ----------------------------------------------------------- */

/* Upper bound of the decoded payload of a PX_JWT_MAX_TOKEN token. */
#define PAYLOAD_MAX (PX_JWT_MAX_TOKEN / 4 * 3)
#define HEADER_TOKS 32
#define CLAIM_TOKS  256

static int bad(const char **error, const char *msg, int rc)
{
    if (error)
        *error = msg;
    return rc;
}

int px__jwt_channel_allowed(const px__jwt_claims_t *c, int action, const char *channel, size_t len)
{
    if (!c || !c->has_channels)
        return 0;
    for (uint32_t i = 0; i < c->npatterns; i++) {
        const px__jwt_pattern_t *p = &c->patterns[i];
        if ((p->actions & action) && px__glob_match(c->pattern_buf + p->off, p->len, channel, len))
            return 1;
    }
    return 0;
}

/* ---- claims ----------------------------------------------------------------------- */

/* Appends every string of array token `arr` as a pattern with `actions`. */
static int add_patterns(const px_json_doc_t *doc, int arr, uint8_t actions, px__jwt_claims_t *c,
                        size_t *used, const char **error)
{
    const px_json_tok_t *t = doc->toks;
    if (t[arr].type != PX_JSON_ARRAY)
        return bad(error, "channels patterns must be an array of strings", PX_JWT_EMALFORMED);
    for (uint32_t k = (uint32_t)arr + 1; k < t[arr].next; k = t[k].next) {
        if (t[k].type != PX_JSON_STRING)
            return bad(error, "channels patterns must be an array of strings", PX_JWT_EMALFORMED);
        if (c->npatterns == PX_JWT_MAX_PATTERNS)
            return bad(error, "too many channel patterns", PX_JWT_EBOUNDS);
        int n =
            px_json_unescape(doc, (int)k, c->pattern_buf + *used, sizeof c->pattern_buf - *used);
        if (n < 0)
            return bad(error, "channel patterns too long", PX_JWT_EBOUNDS);
        if (memchr(c->pattern_buf + *used, '\0', (size_t)n))
            return bad(error, "NUL in channel pattern", PX_JWT_EMALFORMED);
        c->patterns[c->npatterns++] =
            (px__jwt_pattern_t){.off = (uint16_t)*used, .len = (uint16_t)n, .actions = actions};
        *used += (size_t)n; /* the NUL px_json_unescape wrote is overwritten by the next */
    }
    return 0;
}

static int parse_channels(const px_json_doc_t *doc, int v, px__jwt_claims_t *c, const char **error)
{
    size_t used = 0;
    int rc;
    c->has_channels = true;
    if (doc->toks[v].type == PX_JSON_ARRAY)
        return add_patterns(doc, v, PX_JWT_SUBSCRIBE | PX_JWT_PUBLISH, c, &used, error);
    if (doc->toks[v].type != PX_JSON_OBJECT)
        return bad(error, "channels claim must be an object or an array", PX_JWT_EMALFORMED);
    static const char *const keys[] = {"subscribe", "publish"};
    int at[2];
    if (px_json_get_keys(doc, v, keys, 2, at, NULL) < 0)
        return bad(error, "duplicate key in channels claim", PX_JWT_EMALFORMED);
    if (at[0] >= 0 && (rc = add_patterns(doc, at[0], PX_JWT_SUBSCRIBE, c, &used, error)) < 0)
        return rc;
    if (at[1] >= 0 && (rc = add_patterns(doc, at[1], PX_JWT_PUBLISH, c, &used, error)) < 0)
        return rc;
    return 0;
}

static int numeric_date(const px_json_doc_t *doc, int v, int64_t *out, const char *msg,
                        const char **error)
{
    if (px_json_get_i64(doc, v, out) < 0)
        return bad(error, msg, PX_JWT_EMALFORMED);
    return 0;
}

static int parse_claims(const char *payload, size_t len, int64_t now, px__jwt_claims_t *c,
                        const char **error)
{
    px_json_tok_t toks[CLAIM_TOKS];
    px_json_doc_t doc;
    int rc;
    if (px_json_parse(&doc, payload, len, toks, CLAIM_TOKS, 16) < 0)
        return bad(error,
                   doc.err == PX_JSON_E_SYNTAX ? "payload is not valid JSON"
                                               : "payload too complex",
                   doc.err == PX_JSON_E_SYNTAX ? PX_JWT_EMALFORMED : PX_JWT_EBOUNDS);
    if (toks[0].type != PX_JSON_OBJECT)
        return bad(error, "payload is not a JSON object", PX_JWT_EMALFORMED);

    enum { SUB, EXP, NBF, IAT, CHANNELS, INFO, NKEYS };
    static const char *const keys[NKEYS] = {"sub", "exp", "nbf", "iat", "channels", "info"};
    int at[NKEYS];
    if (px_json_get_keys(&doc, 0, keys, NKEYS, at, NULL) < 0)
        return bad(error, "duplicate claim", PX_JWT_EMALFORMED);

    if (at[SUB] >= 0) {
        if (toks[at[SUB]].type != PX_JSON_STRING)
            return bad(error, "sub must be a string", PX_JWT_EMALFORMED);
        int n = px_json_unescape(&doc, at[SUB], c->sub, sizeof c->sub);
        if (n < 0)
            return bad(error, "sub too long", PX_JWT_EBOUNDS);
        if (strlen(c->sub) != (size_t)n)
            return bad(error, "NUL in sub", PX_JWT_EMALFORMED);
        c->sub_len = (size_t)n;
    }
    if (at[EXP] >= 0 &&
        (rc = numeric_date(&doc, at[EXP], &c->exp, "exp must be an integer", error)) < 0)
        return rc;
    if (at[NBF] >= 0 &&
        (rc = numeric_date(&doc, at[NBF], &c->nbf, "nbf must be an integer", error)) < 0)
        return rc;
    if (at[IAT] >= 0 &&
        (rc = numeric_date(&doc, at[IAT], &c->iat, "iat must be an integer", error)) < 0)
        return rc;
    if (at[CHANNELS] >= 0 && (rc = parse_channels(&doc, at[CHANNELS], c, error)) < 0)
        return rc;
    if (at[INFO] >= 0) {
        px_str_t raw = px_json_raw(&doc, at[INFO]);
        if (raw.len > sizeof c->info_buf)
            return bad(error, "info claim too large", PX_JWT_EBOUNDS);
        memcpy(c->info_buf, raw.ptr, raw.len);
        c->info = (px_str_t){c->info_buf, raw.len};
    }
    /* Time checks last, so a malformed claim is reported as such rather than as expired. */
    if (at[EXP] >= 0 && now >= c->exp)
        return bad(error, "token expired", PX_JWT_EEXPIRED);
    if (at[NBF] >= 0 && now < c->nbf)
        return bad(error, "token not yet valid (nbf)", PX_JWT_ENOTYET);
    return 0;
}

/* Parses the decoded header and checks it announces HS256. */
static int check_header(const char *hdr, size_t len, const char **error)
{
    px_json_tok_t toks[HEADER_TOKS];
    px_json_doc_t doc;
    if (px_json_parse(&doc, hdr, len, toks, HEADER_TOKS, 8) < 0 || toks[0].type != PX_JSON_OBJECT)
        return bad(error, "header is not a JSON object", PX_JWT_EMALFORMED);
    static const char *const keys[] = {"alg", "typ", "crit"};
    int at[3];
    if (px_json_get_keys(&doc, 0, keys, 3, at, NULL) < 0)
        return bad(error, "duplicate key in header", PX_JWT_EMALFORMED);
    if (at[0] < 0)
        return bad(error, "header has no alg", PX_JWT_EMALFORMED);
    if (toks[at[0]].type != PX_JSON_STRING)
        return bad(error, "alg must be a string", PX_JWT_EMALFORMED);
    if (!px_json_streq(&doc, at[0], "HS256", 5)) {
        char alg[8];
        int n = px_json_unescape(&doc, at[0], alg, sizeof alg);
        if (n == 4 && strncasecmp(alg, "none", 4) == 0)
            return bad(error, "alg none is not allowed", PX_JWT_EALG);
        return bad(error, "unsupported alg (only HS256 is accepted)", PX_JWT_EALG);
    }
    if (at[1] >= 0) {
        /* RFC 7519 §5.1 recommends "JWT"; media type names are case-insensitive. */
        char typ[4];
        int n = toks[at[1]].type == PX_JSON_STRING ? px_json_unescape(&doc, at[1], typ, sizeof typ)
                                                   : -EINVAL;
        if (n != 3 || strncasecmp(typ, "JWT", 3) != 0)
            return bad(error, "typ must be JWT", PX_JWT_EMALFORMED);
    }
    /* RFC 7515 §4.1.11: extensions listed in crit must be understood; we know none. */
    if (at[2] >= 0)
        return bad(error, "crit header is not supported", PX_JWT_EALG);
    return 0;
}

int px__jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len,
                         int64_t now_unix, px__jwt_claims_t *out, const char **error)
{
    uint8_t header[HEADER_MAX];
    uint8_t payload[PAYLOAD_MAX];
    uint8_t sig[SIG_LEN], mac[SIG_LEN];
    int rc;

    if (error)
        *error = NULL;
    if (!out)
        return bad(error, "no claims output", -EINVAL);
    memset(out, 0, offsetof(px__jwt_claims_t, patterns));
    out->info = (px_str_t){NULL, 0};
    if (!secret || secret_len == 0 || secret_len > INT_MAX)
        return bad(error, "invalid secret", -EINVAL);
    if (!token || len == 0)
        return bad(error, "empty token", PX_JWT_EMALFORMED);
    if (len > PX_JWT_MAX_TOKEN)
        return bad(error, "token too long", PX_JWT_ETOOLONG);

    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return bad(error, "token must have three dot-separated parts", PX_JWT_EMALFORMED);
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);

    if (hlen > HEADER_MAX / 3 * 4)
        return bad(error, "header too long", PX_JWT_EBOUNDS);
    long n = px__base64url_decode(token, hlen, header, sizeof header);
    if (n <= 0)
        return bad(error, "malformed header encoding", PX_JWT_EMALFORMED);
    if ((rc = check_header((const char *)header, (size_t)n, error)) < 0)
        return rc;

    if (slen != SIG_B64_LEN || px__base64url_decode(dot2 + 1, slen, sig, sizeof sig) != SIG_LEN)
        return bad(error, "malformed signature encoding", PX_JWT_EMALFORMED);
    if (px__hmac_sha256(secret, secret_len, token, (size_t)(dot2 - token), mac) < 0)
        return bad(error, "HMAC computation failed", -EIO);
    if (px__memcmp_ct(mac, sig, SIG_LEN) != 0)
        return bad(error, "invalid signature", PX_JWT_ESIGNATURE);

    /* Authenticated from here on: the payload is what the secret holder wrote. */
    n = px__base64url_decode(dot1 + 1, plen, payload, sizeof payload);
    if (n <= 0)
        return bad(error, "malformed payload encoding", PX_JWT_EMALFORMED);
    return parse_claims((const char *)payload, (size_t)n, now_unix, out, error);
}

int px__jwt_sign_hs256(const char *payload, size_t payload_len, const uint8_t *secret,
                       size_t secret_len, char *out, size_t cap)
{
    /* base64url of {"alg":"HS256","typ":"JWT"} */
    static const char hdr[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    px_json_doc_t doc;
    uint8_t mac[SIG_LEN];

    if (!secret || secret_len == 0 || secret_len > INT_MAX || !payload)
        return -EINVAL;
    if (px_json_parse(&doc, payload, payload_len, NULL, 0, 0) < 0)
        return -EINVAL;
    size_t i = 0;
    while (payload[i] == ' ' || payload[i] == '\t' || payload[i] == '\n' || payload[i] == '\r')
        i++;
    if (payload[i] != '{')
        return -EINVAL;

    size_t plen = px__base64url_len(payload_len);
    size_t total = sizeof hdr - 1 + 1 + plen + 1 + SIG_B64_LEN;
    if (payload_len > PX_JWT_MAX_TOKEN || total > PX_JWT_MAX_TOKEN)
        return -EMSGSIZE;
    if (total >= cap)
        return -ENOSPC;
    size_t o = sizeof hdr - 1;
    memcpy(out, hdr, o);
    out[o++] = '.';
    o += px__base64url_encode((const uint8_t *)payload, payload_len, out + o);
    if (px__hmac_sha256(secret, secret_len, out, o, mac) < 0)
        return -EIO;
    out[o++] = '.';
    o += px__base64url_encode(mac, SIG_LEN, out + o);
    out[o] = '\0';
    return (int)o;
}
