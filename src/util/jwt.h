/* JWT verification for hub connections: HS256 (HMAC-SHA256) only, compact serialization.
 *
 * Accepted header: {"alg":"HS256"} with an optional "typ":"JWT" and ignored extras such as
 * "kid". alg "none" and every other algorithm are rejected before any claim is read, the
 * signature is checked in constant time before the payload is parsed, and duplicate keys
 * in the header or among the recognised claims are rejected (no ambiguity about which
 * value was signed).
 *
 * Recognised claims (all optional; others are ignored):
 *   sub       string, at most PX_JWT_MAX_SUB - 1 bytes, no NUL
 *   exp, nbf, iat   integer NumericDates (seconds); a fraction or exponent is rejected
 *   channels  {"subscribe":[patterns],"publish":[patterns]} or [patterns] meaning both
 *   info      any JSON value, kept as raw text (presence user info)
 * Exceeding a bound rejects the token (-E2BIG) rather than silently dropping permissions.
 * The secret may be any length > 0; RFC 7518 §3.2 asks for >= 32 bytes, which is the
 * configuration loader's job to enforce.
 */
#ifndef PX_UTIL_JWT_H
#define PX_UTIL_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PX_JWT_MAX_TOKEN    8192 /* bytes of compact serialization */
#define PX_JWT_MAX_SUB      256  /* including the NUL */
#define PX_JWT_MAX_PATTERNS 32
#define PX_JWT_PATTERN_BUF  1024 /* total bytes of all channel patterns */
#define PX_JWT_MAX_INFO     1024 /* bytes of the raw "info" JSON */

/* Actions, also bits of px__jwt_pattern_t.actions. */
#define PX_JWT_SUBSCRIBE 1
#define PX_JWT_PUBLISH   2

/* Distinct failures of px__jwt_verify_hs256 (each also gets a specific message). */
#define PX_JWT_EMALFORMED (-EINVAL)       /* not a JWT, bad base64url/JSON, bad claim type */
#define PX_JWT_ETOOLONG   (-EMSGSIZE)     /* token longer than PX_JWT_MAX_TOKEN */
#define PX_JWT_EALG       (-ENOTSUP)      /* alg is not HS256 (none, HS512, RS256...) or crit */
#define PX_JWT_ESIGNATURE (-EACCES)       /* HMAC mismatch: wrong secret or tampered token */
#define PX_JWT_EEXPIRED   (-EKEYEXPIRED)  /* now >= exp */
#define PX_JWT_ENOTYET    (-EKEYREJECTED) /* now < nbf */
#define PX_JWT_EBOUNDS    (-E2BIG)        /* a claim exceeds the fixed storage below */

typedef struct px__jwt_pattern {
    uint16_t off;    /* into px__jwt_claims_t.pattern_buf; off + len <= PX_JWT_PATTERN_BUF */
    uint16_t len;    /* bytes, not NUL-terminated; glob syntax of px__glob_match */
    uint8_t actions; /* PX_JWT_SUBSCRIBE | PX_JWT_PUBLISH, never 0 */
} px__jwt_pattern_t;

typedef struct px__jwt_claims {
    char sub[PX_JWT_MAX_SUB]; /* subject (user id), NUL-terminated, "" if absent */
    size_t sub_len;           /* strlen(sub) */
    int64_t exp;              /* 0 if absent (then the token never expires) */
    int64_t nbf, iat;         /* 0 if absent */
    /* False when the token has no "channels" claim: px__jwt_channel_allowed then denies
     * everything and the hub applies its own policy. */
    bool has_channels;
    uint32_t npatterns; /* <= PX_JWT_MAX_PATTERNS */
    px__jwt_pattern_t patterns[PX_JWT_MAX_PATTERNS];
    /* +1: px_json_unescape NUL-terminates, so the last pattern needs one spare byte. */
    char pattern_buf[PX_JWT_PATTERN_BUF + 1];
    /* Raw JSON text of "info" (validated), pointing into info_buf; {NULL, 0} if absent.
     * Points into this struct: re-point it (or call px__jwt_claims_fixup) after copying. */
    px_str_t info;
    char info_buf[PX_JWT_MAX_INFO];
} px__jwt_claims_t;

/**
 * Verify an HS256 token and extract its claims into *out (overwritten; its content is
 * unspecified after a failure). Claims needing more than 256 JSON tokens, nesting deeper
 * than 16, or a header above 512 decoded bytes are rejected with PX_JWT_EBOUNDS.
 * `now_unix` is the current time in seconds; no leeway is applied (pass now - leeway to
 * tolerate clock skew on exp, at the cost of the same skew on nbf).
 * Returns 0 or one of the PX_JWT_E* codes above; *error (if not NULL) receives a static
 * message such as "alg none is not allowed" or "token expired" (NULL on success).
 * Does not allocate; uses about 12 KiB of stack.
 */
int px__jwt_verify_hs256(const char *token, size_t len, const uint8_t *secret, size_t secret_len,
                         int64_t now_unix, px__jwt_claims_t *out, const char **error);

/**
 * Mint a token with header {"alg":"HS256","typ":"JWT"} over `payload` (which must be a JSON
 * object; it is encoded byte for byte). Writes a NUL-terminated token into out.
 * Returns the token length, -EINVAL (payload not a JSON object, empty secret), -EMSGSIZE
 * (token would exceed PX_JWT_MAX_TOKEN) or -ENOSPC (cap too small).
 */
int px__jwt_sign_hs256(const char *payload, size_t payload_len, const uint8_t *secret,
                       size_t secret_len, char *out, size_t cap);

/** 1 if a channels pattern carrying `action` matches channel[0..len), else 0. */
int px__jwt_channel_allowed(const px__jwt_claims_t *c, int action, const char *channel, size_t len);

/** Re-point c->info at c->info_buf after the struct was copied by value. */
static inline void px__jwt_claims_fixup(px__jwt_claims_t *c)
{
    if (c->info.ptr)
        c->info.ptr = c->info_buf;
}

#ifdef __cplusplus
}
#endif
#endif
