/* plexus — WebSocket (RFC 6455, permessage-deflate RFC 7692).
 *
 *   static void on_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
 *   { px_ws_send(ws, opcode, data, len); }
 *   static const px_ws_callbacks_t echo = {.on_message = on_message};
 *   px_ws_route(server, "/echo", &echo, NULL);
 *
 * Callbacks run on the connection's worker. A px_ws_t is valid from on_open to
 * the end of on_close. */
#ifndef PLEXUS_WS_H
#define PLEXUS_WS_H

#include "plexus/http.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_ws px_ws_t;

enum {
    PX_WS_TEXT = 0x1,
    PX_WS_BINARY = 0x2,
    PX_WS_CLOSE = 0x8,
    PX_WS_PING = 0x9,
    PX_WS_PONG = 0xA,
};

/** What to do with a connection whose output budget (the server's output_cap)
 * is full: close it with 1008 (default), or drop the messages it cannot take. */
enum { PX_WS_SLOW_CLOSE = 0, PX_WS_SLOW_DROP = 1 };

typedef struct px_ws_opts {
    size_t max_message;        /**< larger messages: close 1009 (default 16 MiB) */
    uint64_t ping_interval_ms; /**< server pings; a peer silent for two intervals is closed (default
                                  30 s; 0 = off) */
    uint64_t close_timeout_ms; /**< wait for the peer's close reply (default 5 s) */
    int deflate;               /**< accept permessage-deflate offers (default 0) */
    size_t deflate_threshold;  /**< smaller messages are sent uncompressed (default 256) */
    size_t deflate_memory;     /**< zlib memory budget per connection (default 512 KiB) */
    int slow_policy;           /**< PX_WS_SLOW_CLOSE or PX_WS_SLOW_DROP */
} px_ws_opts_t;

typedef struct px_ws_callbacks {
    /** Handshake checks (optional): return 0 to accept `origin` ({NULL,0} if the
     * client sent none), or an HTTP status (403) to refuse. */
    int (*check_origin)(px_req_t *req, px_str_t origin, void *ud);
    /** Pick a subprotocol (optional): return the index into offered[] or -1 for none. */
    int (*select_subprotocol)(px_req_t *req, const px_str_t *offered, size_t n, void *ud);
    /** Connection open. `req` (the upgrade request) is valid during the call only. */
    void (*on_open)(px_ws_t *ws, px_req_t *req, void *ud);
    /** A whole message (text is valid UTF-8), valid during the call. */
    void (*on_message)(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud);
    /** Output drained after backpressure (optional). */
    void (*on_drain)(px_ws_t *ws, void *ud);
    /** Connection gone: `code` is the peer's close code, 1005 if it sent none, 1006 if
     * the connection dropped without a close frame. */
    void (*on_close)(px_ws_t *ws, int code, px_str_t reason, void *ud);
    /** Graceful server shutdown began (optional): close with a code of the route's
     * protocol (px_ws_close; a Pusher server says 4200 "reconnect now"). Without it, or
     * if it does not close, the connection is closed with 1001. */
    void (*on_shutdown)(px_ws_t *ws, void *ud);
} px_ws_callbacks_t;

PX_EXTERN void px_ws_opts_init(px_ws_opts_t *o);
/** WebSocket options for every route of `s` (call before px_server_start). */
PX_EXTERN int px_ws_configure(px_server_t *s, const px_ws_opts_t *o);
/** Accept WebSocket upgrades on GET `pattern` (same patterns as px_route).
 * `cb` must outlive the server. Non-upgrade requests get 426. */
PX_EXTERN int px_ws_route(px_server_t *s, const char *pattern, const px_ws_callbacks_t *cb,
                          void *ud);

/** Send one message (copied; compressed if negotiated and over the threshold).
 * 0, -EPIPE if closing, -ENOBUFS if the output budget is full (the slow-consumer
 * policy has been applied). */
PX_EXTERN int px_ws_send(px_ws_t *ws, int opcode, const void *data, size_t len);
/** Start the close handshake with `code` and a short UTF-8 `reason` (may be NULL). */
PX_EXTERN int px_ws_close(px_ws_t *ws, int code, const char *reason);
PX_EXTERN void px_ws_set_data(px_ws_t *ws, void *data);
PX_EXTERN void *px_ws_get_data(const px_ws_t *ws);
/** The connection under the WebSocket (its worker, loop, id). Over HTTP/2 (RFC
 * 8441) that is the HTTP/2 connection, shared with other streams: use
 * px_ws_pending for this WebSocket's own backlog. */
PX_EXTERN px_conn_t *px_ws_conn(const px_ws_t *ws);
/** Bytes queued for this WebSocket's client and not yet sent. */
PX_EXTERN size_t px_ws_pending(const px_ws_t *ws);
/** The negotiated subprotocol ({NULL,0} if none). */
PX_EXTERN px_str_t px_ws_subprotocol(const px_ws_t *ws);

/* ---- broadcast: one encoded frame, many connections, any worker ---------------- */

/** Encode an unmasked server frame once into a shareable slice (NULL on OOM). */
PX_EXTERN px_slice_t *px_ws_frame_new(int opcode, const void *data, size_t len);
/** Queue a pre-encoded frame: frames up to 512 bytes are copied into the
 * connection's output, bigger ones shared (it takes its own reference). Same
 * return values as px_ws_send. */
PX_EXTERN int px_ws_send_frame(px_ws_t *ws, px_slice_t *frame);

/** A set of connections spread over workers that receive the same frames. */
typedef struct px_ws_topic px_ws_topic_t;
PX_EXTERN px_ws_topic_t *px_ws_topic_new(px_server_t *s);
/** Free a topic with no members left (after the server stopped). */
PX_EXTERN void px_ws_topic_free(px_ws_topic_t *t);
/** Add/remove `ws` (on its worker). A connection is in at most one topic and
 * leaves it automatically when it closes. */
PX_EXTERN int px_ws_topic_join(px_ws_topic_t *t, px_ws_t *ws);
PX_EXTERN void px_ws_topic_leave(px_ws_t *ws);
/** Send `frame` to every member, all sharing the same bytes: other workers get
 * it through their mailboxes; on each worker, the frames of one loop iteration
 * are written to every member together at the end of it (anything else sent to
 * a member, or its leaving, first flushes what it is owed: order is kept). A
 * member joining later gets only later frames. Any thread. */
PX_EXTERN int px_ws_topic_publish(px_ws_topic_t *t, px_slice_t *frame);
PX_EXTERN size_t px_ws_topic_size(const px_ws_topic_t *t);

#ifdef __cplusplus
}
#endif
#endif
