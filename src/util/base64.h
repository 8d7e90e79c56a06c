/* Base64 (RFC 4648): the standard alphabet with padding (WebSocket's accept value) and the
 * unpadded URL alphabet (JWT, RFC 7515 §2). Pure: no allocation, no I/O. */
#ifndef PX_UTIL_BASE64_H
#define PX_UTIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/** Encoded length of n bytes: padded standard, and unpadded URL. */
static inline size_t px__base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}
static inline size_t px__base64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/** Encode in[0..n) into out (room for px__base64_len(n), or px__base64url_len(n), bytes;
 * no NUL added). Returns the bytes written. */
size_t px__base64_encode(const uint8_t *in, size_t n, char *out);
size_t px__base64url_encode(const uint8_t *in, size_t n, char *out);

/** Decode unpadded base64url. Rejects '=', characters outside the alphabet, an impossible
 * length (4k+1) and non-zero unused trailing bits, so every byte string has exactly one
 * accepted encoding. Returns the decoded length, or -1 (also when over `cap`). */
long px__base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

#endif
