/* What the HTTP layer offers the layers above it inside the library (the WebSocket
 * layer): switching a request's connection to another protocol. Not installed. */
#ifndef PX_HTTP_UPGRADE_H
#define PX_HTTP_UPGRADE_H

#include "plexus/http.h"

/* Switch the request's connection to `proto` with `state` (HTTP/1.1 Upgrade), after
 * which the caller writes the 101 itself on *out (the connection), then the new protocol
 * gets the bytes after the head. The request is answered. -ENOTSUP when the owner cannot
 * (HTTP/2), -EINVAL when not now (answered, or a pipelined request is pending). */
int px__req_upgrade(px_req_t *req, const px_protocol_t *proto, void *state, px_conn_t **out);

/* ---- tunnels: an HTTP/2 stream carrying a WebSocket (RFC 8441) ---------------------- */

/* A byte stream inside an HTTP/2 connection, made by an extended CONNECT
 * (:protocol websocket). The WebSocket layer runs on it as it runs on a
 * px_conn_t: the same calls, through these ops, and the same callbacks. Every
 * op runs on the connection's worker. */
typedef struct px__tunnel px__tunnel_t;
typedef struct px__tunnel_ops {
    /* Queue bytes (copied) or a slice reference; -ENOBUFS past the connection's
     * output budget (unless nocap), -EPIPE once closing. */
    int (*write)(px__tunnel_t *t, const void *p, size_t len, int nocap);
    int (*write_slice)(px__tunnel_t *t, px_slice_t *s, size_t off, size_t len, int nocap);
    size_t (*pending)(const px__tunnel_t *t); /* bytes queued, not yet framed */
    int (*is_closing)(const px__tunnel_t *t);
    void (*close)(px__tunnel_t *t);                    /* our END_STREAM once the queue is out */
    void (*abort)(px__tunnel_t *t);                    /* RST_STREAM CANCEL */
    void (*set_timeout)(px__tunnel_t *t, uint64_t ms); /* 0 disarms; fires on_timeout */
    void (*pause)(px__tunnel_t *t, int paused);        /* stop/resume on_read (bytes kept) */
    void (*set_read_limit)(px__tunnel_t *t, size_t max);
} px__tunnel_ops_t;
struct px__tunnel {
    const px__tunnel_ops_t *ops;
    px_conn_t *conn; /* the HTTP/2 connection (worker, loop, ids); NULL once it has gone */
};

/* What the tunnel's user is told, as a px_protocol_t is (ud: its state). on_read
 * returns the bytes used (the rest is kept, bounded by the read limit, and
 * presented again with more) or -1 after closing. on_close: exactly once, the
 * last call. */
typedef struct px__tunnel_cb {
    ssize_t (*on_read)(void *ud, char *data, size_t len);
    void (*on_drain)(void *ud);
    void (*on_timeout)(void *ud);
    void (*on_shutdown)(void *ud);
    void (*on_close)(void *ud);
} px__tunnel_cb_t;

/* 1 if the request is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441):
 * answered with px__req_tunnel, not with a 101. */
int px__req_is_tunnel(const px_req_t *req);
/* Answer 200 (with the response headers set by px_res_header) and turn the
 * request's stream into a tunnel for `cb`/`ud`. 0 or -errno (then nothing was
 * sent and the request is still to be answered). */
int px__req_tunnel(px_req_t *req, const px__tunnel_cb_t *cb, void *ud, px__tunnel_t **out);

#endif
