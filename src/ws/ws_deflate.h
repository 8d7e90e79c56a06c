/* permessage-deflate (RFC 7692) for the server side of a WebSocket connection:
 * negotiation of the Sec-WebSocket-Extensions offer, and a per-connection context
 * that compresses outgoing messages and inflates incoming ones with zlib.
 *
 * Every zlib allocation goes through px__malloc (so px_set_allocator failure
 * injection reaches it) and is charged to the context's memory budget; a stream
 * that does not fit fails with -ENOMEM instead of allocating.
 *
 * Errors are negative errno values; px__ws_deflate_close_code() maps each to the
 * close code the connection should be failed with. */
#ifndef PX_WS_DEFLATE_H
#define PX_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/buf.h"
#include "plexus/common.h"

/* ---- negotiation ------------------------------------------------------------ */

/** Server preferences. Zero-initialised means "disabled"; start from
 * PX_WS_DEFLATE_CONFIG_DEFAULT. */
typedef struct px__ws_deflate_config {
    unsigned enabled : 1;
    /* Always answer server_no_context_takeover (even when not offered): our
     * deflater resets per message, which also makes the compressed bytes of a
     * message independent of the connection (shareable across connections). */
    unsigned server_no_context_takeover : 1;
    /* Echo client_no_context_takeover when the client offers it. The client then
     * promises fresh windows, so our inflater resets per message and holds no
     * history between messages (px__ws_deflate_trim can free it). */
    unsigned accept_client_no_context_takeover : 1;
    /* Answer client_no_context_takeover even when not offered (RFC 7692 7.1.1.2
     * lets the server demand it; every client must support it). */
    unsigned request_client_no_context_takeover : 1;
    /* Largest window we compress with, 8..15 (0 = 15). A smaller offer wins. If
     * below 15 we announce it even when not offered (7.1.2.1 allows that). */
    uint8_t server_max_window_bits;
    /* Largest window we let the client use, 8..15 (0 = 15). Only enforceable when
     * the client offered client_max_window_bits (7.1.2.2: otherwise the response
     * must not carry it and the client may use 15). */
    uint8_t client_max_window_bits;
    int8_t level;      /* zlib compression level 0..9, or -1 for zlib's default (6) */
    uint8_t mem_level; /* zlib memLevel 1..9 (0 = 8): deflate hash memory */
} px__ws_deflate_config_t;

#define PX_WS_DEFLATE_CONFIG_DEFAULT                                                               \
    ((px__ws_deflate_config_t){.enabled = 1,                                                       \
                               .accept_client_no_context_takeover = 1,                             \
                               .server_max_window_bits = 15,                                       \
                               .client_max_window_bits = 15,                                       \
                               .level = -1,                                                        \
                               .mem_level = 8})

/** What was agreed (RFC 7692 "agreed parameters"), plus our local zlib tuning.
 * Window bits are always 8..15 here; absent parameters mean 15. */
typedef struct px__ws_deflate_params {
    unsigned server_no_context_takeover : 1; /* we reset our deflater after each message */
    unsigned client_no_context_takeover : 1; /* client resets; we may reset our inflater */
    uint8_t server_max_window_bits; /* our compression window; 8 is compressed with 9, whose
                                       matches reach at most 250 bytes back, so a peer with
                                       a 256-byte window still decodes it (zlib has no raw
                                       256-byte deflate window) */
    uint8_t client_max_window_bits; /* the client's window = our inflate window */
    int8_t level;                   /* from the config */
    uint8_t mem_level;              /* from the config, 1..9 */
} px__ws_deflate_params_t;

/** Room px__ws_deflate_negotiate may need for the response value (every parameter
 * present): fits in this many bytes including the NUL. */
#define PX_WS_DEFLATE_RESPONSE_MAX 160

/**
 * Pick the first acceptable permessage-deflate offer from the request's
 * Sec-WebSocket-Extensions field values (`values[0..n)`, in header order; several
 * field lines are equivalent to one joined with commas) and build the response
 * field value.
 *
 * Offers for other extensions are skipped. A permessage-deflate offer is declined
 * (and the next one tried, RFC 7692 5 and 7) when it has an unknown parameter, the
 * same parameter twice, a value on a *_no_context_takeover parameter, or a window
 * bits value that is not a decimal 8..15 without leading zeros (a quoted-string
 * value is unquoted first, RFC 6455 9.1); server_max_window_bits without a value
 * is invalid, client_max_window_bits may omit it. Extension and parameter names
 * are matched case-insensitively.
 *
 * Every valid offer is acceptable with this implementation: requested windows are
 * honoured (8 via 9, see px__ws_deflate_params_t) and no_context_takeover is always
 * possible.
 *
 * Returns 1 with `params` filled and out[0..*out_len) holding the NUL-terminated
 * response value (e.g. "permessage-deflate; client_max_window_bits=12"); 0 if
 * nothing was accepted (config disabled, no offer, or only invalid offers): send
 * no Sec-WebSocket-Extensions; -EBADMSG if a field value is not valid
 * extension-list syntax (RFC 6455 9.1), also meaning "no extension" (the caller
 * may instead refuse the handshake with 400); -ENOBUFS if out_cap is too small
 * (PX_WS_DEFLATE_RESPONSE_MAX always suffices); -EINVAL for a config value out of
 * range. `params` and `out` are only written on 1.
 */
PX_MUST_CHECK int px__ws_deflate_negotiate(const px__ws_deflate_config_t *cfg,
                                           const px_str_t *values, size_t n, char *out,
                                           size_t out_cap, size_t *out_len,
                                           px__ws_deflate_params_t *params);

/* ---- per-connection context ------------------------------------------------------ */

typedef struct px__ws_deflate px__ws_deflate_t;

/**
 * New context for one connection (server role: it deflates with the server_*
 * parameters and inflates with the client_* ones). The zlib streams are created
 * on first use and charged to `mem_budget` bytes (0 = unlimited);
 * px__ws_deflate_mem_estimate tells what they need. Returns NULL on allocation
 * failure. Free with px__ws_deflate_free.
 */
px__ws_deflate_t *px__ws_deflate_new(const px__ws_deflate_params_t *params, size_t mem_budget);

/** Free the context and its streams. Accepts NULL. */
void px__ws_deflate_free(px__ws_deflate_t *ctx);

/** Bytes zlib will ask for with these params, deflater + inflater, bookkeeping
 * included: an upper bound, about 20 KB above what zlib 1.2.13 takes (e.g.
 * 328 KB for 15/15 bits and mem_level 8, of which the deflater is ~290 KB; a
 * lower mem_level or server window shrinks that). Use it to size mem_budget; a
 * budget that covers only the inflater (2^client_max_window_bits + ~9 KB) still
 * lets the connection receive compressed messages and send uncompressed ones. */
size_t px__ws_deflate_mem_estimate(const px__ws_deflate_params_t *params);

/** zlib bytes currently held by the context. */
size_t px__ws_deflate_mem_used(const px__ws_deflate_t *ctx);

/**
 * Inflate one frame's payload of a compressed message (RSV1 was set on its first
 * frame) and append the output to `out`. Call it for every data frame of the
 * message in order, with `fin` set on the last one; at fin the 00 00 FF FF tail
 * is appended internally, the message must end on a deflate block boundary, and
 * the inflater is reset when the client agreed to client_no_context_takeover.
 * A block with BFINAL set (RFC 7692 7.2.3.4) is accepted anywhere: bytes after
 * it start a new deflate stream that keeps the window (in constant time, so the
 * cost of a call is linear in its input whatever the blocks). Payloads must
 * already be unmasked. A frame may be fed in pieces (fin only on the last piece
 * of the message's last frame), e.g. to bound the work done at once.
 *
 * `max_out` bounds px_buf_size(out) after the call (it counts what `out` already
 * held, so pass the message limit and one buffer per message): output stops at
 * max_out + 1 bytes and the call fails, so a decompression bomb never makes us
 * allocate more than about max_out (set out->max to max_out to make that exact;
 * px_buf_reserve otherwise may round its capacity up to the next power of two).
 *
 * Returns 0; -EMSGSIZE past max_out or out->max (close 1009); -EBADMSG for data
 * that is not valid deflate (bad block, distance beyond the window, ...) or a
 * message cut inside a block (close 1007); -ENOMEM when the inflater does not
 * fit the budget or allocation fails (close 1011). On error `out` may hold
 * partial output and the context's inflater is dead: every later call returns
 * the same error (the connection must be failed anyway).
 */
PX_MUST_CHECK int px__ws_inflate(px__ws_deflate_t *ctx, const uint8_t *in, size_t len, int fin,
                                 px_buf_t *out, size_t max_out);

/**
 * Compress one whole message and append the frame payload to `out` (sync flush,
 * trailing 00 00 FF FF removed, RFC 7692 7.2.1); send it with RSV1 set on the
 * first frame. Resets the deflater afterwards when server_no_context_takeover
 * was agreed.
 *
 * If the payload would exceed `max_out` bytes, stops early, leaves `out` as it
 * was and returns -EMSGSIZE: send the message uncompressed. The deflater has
 * then been reset, because the peer never sees this message in compressed form
 * and our window must not refer to it. Pass max_out = len to compress only when
 * it saves bytes, SIZE_MAX for always.
 *
 * Tip: append PX_WS_MAX_HEADER placeholder bytes to `out` first; once the length
 * is known, write the header right-aligned before the payload and advance out->off
 * to its start, so frame and payload are contiguous without a copy.
 *
 * Returns 0; -EMSGSIZE (above); -ENOMEM if the deflater does not fit the budget
 * or `out` cannot grow (the deflater is reset or absent: the message can still be
 * sent uncompressed and later ones compressed).
 */
PX_MUST_CHECK int px__ws_deflate_message(px__ws_deflate_t *ctx, const uint8_t *in, size_t len,
                                         px_buf_t *out, size_t max_out);

/**
 * Forget the deflater's history. Needed when a message compressed elsewhere (a
 * broadcast frame compressed once by a context with server_no_context_takeover)
 * is sent on a connection with context takeover: the peer's window now includes
 * that message and ours does not, so our next message must not refer back.
 */
void px__ws_deflate_reset_context(px__ws_deflate_t *ctx);

/**
 * Free the streams that hold no history between messages (the deflater under
 * server_no_context_takeover, the inflater under client_no_context_takeover, when
 * no message is in progress). They are recreated on next use. Call it when a
 * connection goes idle to drop ~300 KB of zlib state.
 */
void px__ws_deflate_trim(px__ws_deflate_t *ctx);

/** Close code for an error returned above: -EMSGSIZE 1009, -EBADMSG 1007,
 * anything else 1011. */
uint16_t px__ws_deflate_close_code(int err);

#endif
