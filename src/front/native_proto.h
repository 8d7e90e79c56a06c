/* The native WebSocket protocol's client messages (docs/protocol.md), parsed: a pure
 * function from one text frame to a request, or to the exact error the client gets. No
 * allocation, no I/O, no configuration: limits that depend on options (payload size,
 * history limit, permissions) are the executor's (native_ws.c). Fuzzed by
 * tests/fuzz/fuzz_native.c. */
#ifndef PX_FRONT_NATIVE_PROTO_H
#define PX_FRONT_NATIVE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "hub/frontend.h"
#include "plexus/json.h"

#define PX__NATIVE_MAX_TOKENS 512 /* JSON tokens per frame (every value and key counts) */
#define PX__NATIVE_MAX_DEPTH  32
#define PX__NATIVE_INFO_MAX   1024 /* bytes of a subscribe's "info" */

enum {
    PX__NOP_PING = 1,
    PX__NOP_SUBSCRIBE,
    PX__NOP_UNSUBSCRIBE,
    PX__NOP_PUBLISH,
    PX__NOP_HISTORY,
    PX__NOP_PRESENCE,
    PX__NOP_AUTH,
};

typedef struct px__nop {
    int op;
    int has_id;
    int64_t id;
    size_t channel_len; /* every op but ping and auth: a valid channel name */
    char channel[PX__CHANNEL_MAX + 1];
    px_str_t data; /* publish: the raw JSON value (points into the frame) */
    int has_since; /* subscribe: {epoch, offset}; history: offset or {offset} */
    uint64_t since_offset;
    char since_epoch[PX__EPOCH_MAX + 1];
    int presence;  /* subscribe: join/leave events wanted */
    int has_limit; /* history */
    uint64_t limit;
    px_str_t info;  /* subscribe: raw JSON (<= PX__NATIVE_INFO_MAX), {NULL, 0} if absent */
    px_str_t token; /* auth: the token, unescaped into the caller's scratch buffer */
    /* on error */
    const char *err_code;
    char err_msg[256];
} px__nop_t;

/**
 * Parse one text frame. Returns 0 with *out filled, or -1 with out->err_code and
 * out->err_msg (and has_id/id when the frame's id could be read) for the error reply.
 * `scratch` (at least 8193 bytes) receives an unescaped auth token.
 */
int px__native_parse(const char *data, size_t len, px__nop_t *out, char *scratch,
                     size_t scratch_len);

#endif
