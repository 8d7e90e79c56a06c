/* Incremental UTF-8 validation for WebSocket text messages (RFC 6455 8.1) and close
 * reasons. A message can be fed in arbitrary pieces (frame by frame, or as it is
 * unmasked/inflated); the validator rejects at the first byte that cannot start or
 * continue a well-formed sequence (Unicode Table 3-7): overlongs, surrogates
 * U+D800-DFFF, code points above U+10FFFF, stray continuation bytes, and a
 * truncated sequence as soon as the next byte is not a continuation. Pure: no
 * allocation, no I/O, no global state. */
#ifndef PX_UTIL_UTF8_H
#define PX_UTIL_UTF8_H

#include <stddef.h>
#include <stdint.h>

/** Validator state: PX_UTF8_ACCEPT between code points, PX_UTF8_REJECT once an
 * invalid byte was seen (absorbing: feeding more never leaves it), any other value
 * means "inside a multi-byte sequence". Start every message with PX_UTF8_ACCEPT.
 * Values other than those returned by px__utf8_feed must not be passed in. */
typedef uint32_t px__utf8_state_t;
#define PX_UTF8_ACCEPT 0u
#define PX_UTF8_REJECT 6u

/**
 * Continue validating with p[0..len). Returns the new state: PX_UTF8_ACCEPT,
 * PX_UTF8_REJECT, or an in-sequence state to pass to the next call. The state
 * becomes REJECT exactly at the first invalid byte (feeding the input up to just
 * before it never rejects), and the scan stops within 64 bytes after it. Runs of
 * ASCII are skipped 32 bytes at a time with SSE2; other text goes through a
 * table-driven DFA at about one byte per cycle.
 */
px__utf8_state_t px__utf8_feed(px__utf8_state_t state, const uint8_t *p, size_t len);

/** True when `state` ends a valid message: not rejected and not mid-sequence. Check
 * this at the end of a text message (fin); a mid-sequence state there means the
 * message was truncated (close with 1007). */
static inline int px__utf8_complete(px__utf8_state_t state)
{
    return state == PX_UTF8_ACCEPT;
}

/** One-shot: is p[0..len) entirely valid UTF-8? (Close-frame reasons.) 1 or 0. */
int px__utf8_valid(const uint8_t *p, size_t len);

/** One sequence whose lead byte p[0] >= 0x80, checked by itself (the JSON tokenizer
 * validates strings as it scans them): the same rules, the byte after it, or NULL. */
const unsigned char *px__utf8_seq(const unsigned char *p, const unsigned char *end);

/** The byte-at-a-time DFA without the ASCII fast path (tests, benchmarks). */
px__utf8_state_t px__utf8_feed_dfa(px__utf8_state_t state, const uint8_t *p, size_t len);

#endif
