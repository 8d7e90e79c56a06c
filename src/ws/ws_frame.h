/* WebSocket framing (RFC 6455 section 5): pure header parser and encoder, payload
 * unmasking and close-code validation. No I/O, no allocation, no connection state:
 * src/http/ws.c keeps the state (fragmentation, which message is compressed) and
 * calls these on its read buffer. */
#ifndef PX_WS_FRAME_H
#define PX_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/common.h"

/** Frame opcodes (RFC 6455 5.2). 3-7 and 0xB-0xF are reserved and rejected. */
enum px__ws_opcode {
    PX_WS_OP_CONT = 0x0,
    PX_WS_OP_TEXT = 0x1,
    PX_WS_OP_BINARY = 0x2,
    PX_WS_OP_CLOSE = 0x8,
    PX_WS_OP_PING = 0x9,
    PX_WS_OP_PONG = 0xA,
};

/** Control frames (close, ping, pong) have the top opcode bit set. */
static inline int px__ws_opcode_is_control(unsigned opcode)
{
    return (opcode & 0x8u) != 0;
}

/* Close codes this layer produces (RFC 6455 7.4.1). */
#define PX_WS_CLOSE_NORMAL       1000
#define PX_WS_CLOSE_GOING_AWAY   1001
#define PX_WS_CLOSE_PROTOCOL     1002
#define PX_WS_CLOSE_UNSUPPORTED  1003
#define PX_WS_CLOSE_NO_STATUS    1005 /* never sent: "the close frame had no code" */
#define PX_WS_CLOSE_ABNORMAL     1006 /* never sent: "the connection dropped" */
#define PX_WS_CLOSE_INVALID_DATA 1007
#define PX_WS_CLOSE_POLICY       1008
#define PX_WS_CLOSE_TOO_BIG      1009
#define PX_WS_CLOSE_INTERNAL     1011

/* Flags for px__ws_parse_frame.
 *
 * PX_WS_RSV1..3 are the header bits themselves (byte 0, 0x40/0x20/0x10): pass the
 * ones an extension negotiated. They are accepted only on the frame that starts a
 * data message (opcode TEXT or BINARY); on control and continuation frames they
 * are always a protocol error, which is exactly RFC 7692 6.1 for RSV1 of
 * permessage-deflate ("Per-Message Compressed" may be set only on the first frame
 * of a message). So the caller needs no extra bookkeeping for RSV1.
 *
 * PX_WS_PARSE_SERVER: we are the server, the peer is a client; every frame must be
 * masked (RFC 6455 5.1). PX_WS_PARSE_CLIENT: we are the client; a masked frame is
 * an error. With neither, the mask bit is not checked. */
#define PX_WS_RSV1         0x40u
#define PX_WS_RSV2         0x20u
#define PX_WS_RSV3         0x10u
#define PX_WS_PARSE_SERVER 0x100u
#define PX_WS_PARSE_CLIENT 0x200u

/** Longest header: 2 + 8 (64-bit length) + 4 (mask key). */
#define PX_WS_MAX_HEADER 14

/** Largest payload of a control frame (RFC 6455 5.5). */
#define PX_WS_MAX_CONTROL_PAYLOAD 125

/** A parsed frame header. Filled in completely when px__ws_parse_frame returns a
 * header length; on PX_PARSE_ERROR only close_code and error are meaningful; on
 * PX_PARSE_INCOMPLETE nothing is. No pointers into the input are kept. */
typedef struct px__ws_frame {
    unsigned fin : 1;     /* last frame of its message; always 1 for control frames */
    unsigned rsv1 : 1;    /* only ever 1 if PX_WS_RSV1 was passed and opcode is TEXT/BINARY */
    unsigned rsv2 : 1;    /* likewise for PX_WS_RSV2 */
    unsigned rsv3 : 1;    /* likewise for PX_WS_RSV3 */
    unsigned masked : 1;  /* mask[] is valid; 1 under PX_WS_PARSE_SERVER, 0 under _CLIENT */
    unsigned opcode : 4;  /* one of enum px__ws_opcode (reserved ones are rejected) */
    uint8_t mask[4];      /* masking key; zero when !masked */
    uint64_t payload_len; /* < 2^63, <= max_payload, <= 125 for control frames */
    uint16_t close_code;  /* on PX_PARSE_ERROR: 1002 (protocol error) or 1009 (too big) */
    const char *error;    /* on PX_PARSE_ERROR: static human-readable reason, else NULL */
} px__ws_frame_t;

/**
 * Parse a frame header from buf[0..len).
 *
 * Returns the header length (2..14) with `f` filled in, PX_PARSE_INCOMPLETE if
 * more bytes are needed, or PX_PARSE_ERROR with f->close_code and f->error set.
 * An error is reported as soon as the bytes that prove it are present (a reserved
 * opcode fails with len == 1), and the result for a longer buffer is never
 * different: once a prefix gives an error or a length, every longer input does
 * too. Never reads past buf[len-1] nor past the header.
 *
 * Checks, in this order:
 *  - reserved opcode                                     -> 1002
 *  - RSV bit not in `flags`, or any RSV bit on a control
 *    or continuation frame                               -> 1002
 *  - control frame with fin = 0                          -> 1002
 *  - mask bit clear under PX_WS_PARSE_SERVER, set under
 *    PX_WS_PARSE_CLIENT                                  -> 1002
 *  - control frame with payload length > 125             -> 1002
 *  - non-minimal length (126 with < 126, 127 with
 *    < 65536) or 64-bit length with the top bit set      -> 1002
 *  - payload_len > max_payload                           -> 1009
 * Pass UINT64_MAX as max_payload for "no limit".
 */
PX_MUST_CHECK int px__ws_parse_frame(const uint8_t *buf, size_t len, px__ws_frame_t *f,
                                     unsigned flags, uint64_t max_payload);

/**
 * Encode a header into out (room for PX_WS_MAX_HEADER bytes). `mask` NULL for a
 * server-to-client frame; otherwise the 4-byte key is written and the mask bit set
 * (the caller masks the payload with px__ws_unmask, which is its own inverse).
 * opcode must be one of enum px__ws_opcode and payload_len < 2^63. Uses the
 * shortest length encoding. Returns the header length (2..14).
 */
size_t px__ws_encode_header(uint8_t *out, unsigned opcode, int fin, int rsv1, uint64_t payload_len,
                            const uint8_t *mask);

/** Length px__ws_encode_header would produce. */
static inline size_t px__ws_header_size(uint64_t payload_len, int masked)
{
    size_t n = payload_len < 126 ? 2 : payload_len <= 0xFFFF ? 4 : 10;
    return masked ? n + 4 : n;
}

/**
 * XOR (un)mask p[0..len) in place with `mask`. `offset` is the position of p[0]
 * within the frame payload, so a payload may be unmasked piecewise as it arrives
 * (only offset % 4 matters). Any alignment and length. Uses AVX2 when the CPU has
 * it, otherwise SSE2 on x86-64, 64-bit words elsewhere.
 */
void px__ws_unmask(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset);

/* The individual strategies, for tests and bench/micro/bench_ws.c. Same contract as
 * px__ws_unmask. _sse2/_avx2 exist only on x86; _avx2 must only be called when
 * px__ws_have_avx2() is true. */
void px__ws_unmask_scalar(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset);
void px__ws_unmask_word(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset);
#if defined(__x86_64__)
#define PX_WS_HAVE_X86_SIMD 1
void px__ws_unmask_sse2(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset);
void px__ws_unmask_avx2(uint8_t *p, size_t len, const uint8_t mask[4], uint64_t offset);
int px__ws_have_avx2(void);
#endif

/**
 * Whether `code` may appear in a close frame on the wire (RFC 6455 7.4 and the
 * IANA "WebSocket Close Code Number" registry): 1000-1003, 1007-1014 and
 * 3000-4999. 1004 (reserved), 1005, 1006 and 1015 (local-only pseudo codes),
 * anything below 1000, 1016-2999 (unassigned protocol range) and >= 5000 are not.
 * Returns 1 or 0.
 */
int px__ws_close_code_valid(unsigned code);

/**
 * Check a received close frame's payload (RFC 6455 5.5.1, 7.1.5-7.1.6). An empty
 * payload means "no status" (*code = 1005, empty reason). Otherwise the first
 * two bytes are the code in network order, which must pass
 * px__ws_close_code_valid, and the rest is a UTF-8 reason; *reason points into
 * `p`. Payloads are at most 125 bytes (the parser enforces it).
 * Returns 0, or the close code to fail the connection with: 1002 for a 1-byte
 * payload or an invalid code, 1007 for a reason that is not UTF-8.
 */
PX_MUST_CHECK unsigned px__ws_parse_close(const uint8_t *p, size_t len, unsigned *code,
                                          px_str_t *reason);

/**
 * Build a close payload: `code` (px__ws_close_code_valid, or 0 for an empty
 * payload) and `reason`, cut to the 123 bytes that fit, at a UTF-8 character
 * boundary. `out` needs PX_WS_MAX_CONTROL_PAYLOAD bytes. Returns the length.
 */
size_t px__ws_encode_close(uint8_t *out, unsigned code, const char *reason, size_t reason_len);

#endif
