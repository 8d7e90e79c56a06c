/* The library's few cryptographic primitives, over OpenSSL: one place for each. */
#ifndef PX_UTIL_CRYPTO_H
#define PX_UTIL_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/** HMAC-SHA256 of data[0..n) with key[0..klen). 0 or -EIO. */
int px__hmac_sha256(const void *key, size_t klen, const void *data, size_t n, uint8_t mac[32]);
/** SHA-1 (the WebSocket handshake's accept value; not for anything that needs strength). */
void px__sha1(const void *data, size_t n, uint8_t md[20]);
/** MD5 (the Pusher HTTP API's body_md5; not for anything that needs strength). */
void px__md5(const void *data, size_t n, uint8_t md[16]);
/** Constant-time comparison of a and b (n bytes): 0 when equal. */
int px__memcmp_ct(const void *a, const void *b, size_t n);

#endif
