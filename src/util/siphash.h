/* SipHash (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012): a
 * keyed 64-bit hash. Tables whose keys come from the network hash with it and
 * a random key, so a client cannot choose keys that pile up in one bucket
 * (hash flooding). */
#ifndef PX_UTIL_SIPHASH_H
#define PX_UTIL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/** A 128-bit key: k0 = bytes 0..7, k1 = bytes 8..15, little-endian. */
typedef struct px__sipkey {
    uint64_t k0, k1;
} px__sipkey_t;

/** SipHash-1-3 (one compression round, three finalization rounds): the variant
 * for hash tables, about twice as fast as 2-4 on short keys (Rust's HashMap and
 * CPython use it too). */
uint64_t px__siphash13(const px__sipkey_t *key, const void *data, size_t len);

/** SipHash-2-4, the reference variant (its published vectors check the code). */
uint64_t px__siphash24(const px__sipkey_t *key, const void *data, size_t len);

/** Fill `key` from getrandom. Never fails: without a random source (never seen
 * on Linux 3.17+) it falls back to mixing the clock and addresses, which is
 * still unpredictable to a remote client but not cryptographic. */
void px__sipkey_random(px__sipkey_t *key);

#endif
