/* plexus — servers, listeners and connections.
 *
 * A px_server_t owns the workers, the listening sockets and every connection.
 * A connection (px_conn_t) pairs a transport (how bytes move: plain socket now,
 * TLS later) with a protocol (what the bytes mean: HTTP/1.1, WebSocket, ...).
 * Both are small vtables, so a connection can change protocol in place
 * (HTTP -> WebSocket) and protocols never see whether TLS is underneath.
 *
 * Threading: a connection belongs to the worker that accepted it; every px_conn_*
 * call must be made on that worker's thread. */
#ifndef PLEXUS_NET_H
#define PLEXUS_NET_H

#include <sys/types.h>
#include <sys/uio.h>

#include "plexus/buf.h"
#include "plexus/loop.h"
#include "plexus/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_server px_server_t;
typedef struct px_conn px_conn_t;

/* ---- server --------------------------------------------------------------- */

typedef struct px_server_opts {
    unsigned workers;             /**< worker threads; 0 = online CPUs */
    unsigned max_connections;     /**< over it: reject (default 10000) */
    uint64_t idle_timeout_ms;     /**< default idle timeout protocols use (default 60000) */
    size_t output_cap;            /**< max queued output bytes per connection (default 4 MiB) */
    uint64_t shutdown_timeout_ms; /**< grace period for in-flight work (default 10000) */
    int backlog;                  /**< listen(2) backlog (default 1024) */
} px_server_opts_t;

PX_EXTERN void px_server_opts_init(px_server_opts_t *o);
/** Create a server (workers exist, threads not started). NULL on failure. */
PX_EXTERN px_server_t *px_server_new(const px_server_opts_t *o);
/** Free a server that is not running. Accepts NULL. */
PX_EXTERN void px_server_free(px_server_t *s);
/**
 * Listen on `addr` (call before start; repeatable):
 *   "127.0.0.1:8080", "[::1]:8080", "localhost:0"  TCP, one SO_REUSEPORT socket per worker
 *                                                   (port 0 picks a free port once, shared by all)
 *   "unix:/path/to/sock"                            Unix socket shared by all workers
 *   "fd:N"                                          an inherited listening socket, shared
 * Binds now, so errors (EADDRINUSE, bad syntax -> -EINVAL) come back at once.
 */
PX_EXTERN int px_server_listen(px_server_t *s, const char *addr);
/** Number of listeners, and the actual address of listener i ("127.0.0.1:43123"). */
PX_EXTERN unsigned px_server_listener_count(const px_server_t *s);
PX_EXTERN const char *px_server_listener_name(const px_server_t *s, unsigned i);
/** Start the worker threads (they begin accepting). */
PX_EXTERN int px_server_start(px_server_t *s);
/** Begin a graceful shutdown: stop accepting, let protocols finish in-flight work,
 * force-close what remains after shutdown_timeout_ms. Any thread, idempotent. */
PX_EXTERN void px_server_shutdown(px_server_t *s);
/** Wait until every worker has stopped. Returns 0. */
PX_EXTERN int px_server_wait(px_server_t *s);
/**
 * Start, then serve until SIGINT or SIGTERM (graceful shutdown, then return 0).
 * SIGHUP re-opens the log file and calls the reload hook. SIGPIPE is ignored.
 */
PX_EXTERN int px_server_run(px_server_t *s);
/** Hook called (on the main thread) on SIGHUP after logs are re-opened. */
PX_EXTERN void px_server_on_reload(px_server_t *s, void (*cb)(px_server_t *, void *), void *ud);
PX_EXTERN px_workers_t *px_server_workers(px_server_t *s);
PX_EXTERN const px_server_opts_t *px_server_opts(const px_server_t *s);
/** Bytes written verbatim to a connection rejected over max_connections before
 * it is closed (the HTTP layer installs a 503 response). Copied. */
PX_EXTERN void px_server_set_reject_message(px_server_t *s, const void *p, size_t len);
/** A user pointer (the HTTP layer keeps its router here), freed with
 * `free_fn` (may be NULL) by px_server_free. */
PX_EXTERN void px_server_set_data(px_server_t *s, void *data, void (*free_fn)(void *));
PX_EXTERN void *px_server_get_data(const px_server_t *s);
/** Currently open connections, all workers (approximate while running). */
PX_EXTERN unsigned px_server_connection_count(const px_server_t *s);

/* ---- transports and protocols ---------------------------------------------- */

/** How bytes move. Plain sockets now; TLS is a second implementation. */
typedef struct px_transport {
    const char *name;
    /** > 0 bytes read, 0 on EOF, -EAGAIN, or -errno. */
    ssize_t (*read)(px_conn_t *c, void *buf, size_t len);
    /** Bytes written (may be partial), -EAGAIN, or -errno. */
    ssize_t (*writev)(px_conn_t *c, const struct iovec *iov, int iovcnt);
    /** Zero-copy file send; NULL means the connection falls back to pread + writev. */
    ssize_t (*sendfile)(px_conn_t *c, int fd, off_t *off, size_t len);
    /** Shut the write side down after the last byte (TLS: close_notify). */
    int (*shutdown)(px_conn_t *c);
    void (*close)(px_conn_t *c);
} px_transport_t;

/** What the bytes mean. Every callback runs on the connection's worker. */
typedef struct px_protocol {
    const char *name;
    /** Bytes arrived. Consume what you can and return how many bytes you used;
     * the rest is kept (bounded by px_conn_set_read_limit) and presented again,
     * with the next bytes appended. `data` may be modified in place (unmasking).
     * Return -1 after closing the connection. If the callback switches protocol,
     * the remaining bytes go to the new protocol at once. */
    ssize_t (*on_read)(px_conn_t *c, char *data, size_t len);
    /** Output queue fully written (optional): resume producing. */
    void (*on_drain)(px_conn_t *c);
    /** The timer set by px_conn_set_timeout fired (optional; default: close). */
    void (*on_timeout)(px_conn_t *c);
    /** Graceful shutdown began (optional; default: close once output is flushed). */
    void (*on_shutdown)(px_conn_t *c);
    /** The peer closed its side (optional; default: close once output is flushed). */
    void (*on_eof)(px_conn_t *c);
    /** The connection is going away: release protocol state. No more output. */
    void (*on_close)(px_conn_t *c);
} px_protocol_t;

/** Protocol that every new connection starts with, with its user pointer. */
PX_EXTERN void px_server_set_protocol(px_server_t *s, const px_protocol_t *p,
                                      void *(*on_accept)(px_conn_t *c, void *ud), void *ud);

/* ---- connections ------------------------------------------------------------ */

/** Switch protocol in place; `state` becomes px_conn_state(). The old protocol's
 * on_close is NOT called: the caller hands over or frees the old state itself. */
PX_EXTERN void px_conn_set_protocol(px_conn_t *c, const px_protocol_t *p, void *state);
PX_EXTERN void *px_conn_state(const px_conn_t *c);
/** Queue a copy of `p` for sending. Output is flushed once per loop iteration
 * (one writev for everything queued). -ENOBUFS past output_cap, -ENOMEM, -EPIPE if closing. */
PX_EXTERN int px_conn_write(px_conn_t *c, const void *p, size_t len);
/** Queue bytes of a shared slice without copying; takes its own reference. */
PX_EXTERN int px_conn_write_slice(px_conn_t *c, px_slice_t *s, size_t off, size_t len);
/** Queue `len` bytes of file `fd` from `off`; the connection owns `fd` from now on
 * (closed after sending, or on error). */
PX_EXTERN int px_conn_sendfile(px_conn_t *c, int fd, uint64_t off, uint64_t len);
/** Like px_conn_write and px_conn_write_slice, but past output_cap too: for output whose
 * size its producer bounds (a whole HTTP response, a close frame) on a protocol that bounds
 * its own backlog (HTTP/1.1 stops reading requests while the budget is used up). */
PX_EXTERN int px_conn_write_nocap(px_conn_t *c, const void *p, size_t len);
PX_EXTERN int px_conn_write_slice_nocap(px_conn_t *c, px_slice_t *s, size_t off, size_t len);
/** Bytes queued and not yet written. */
PX_EXTERN size_t px_conn_pending(const px_conn_t *c);
/** Bytes that may still be queued before output_cap (0 when over it or closing): a
 * protocol checks it to queue a unit (a chunk with its framing) all or nothing. */
PX_EXTERN size_t px_conn_room(const px_conn_t *c);
/** Write queued output now instead of at the end of the iteration. */
PX_EXTERN void px_conn_flush(px_conn_t *c);
/** Close gracefully: stop reading, send what is queued, then close. */
PX_EXTERN void px_conn_close(px_conn_t *c);
/** Close now, dropping queued output. */
PX_EXTERN void px_conn_abort(px_conn_t *c);
PX_EXTERN int px_conn_is_closing(const px_conn_t *c);
/** (Re)arm the connection's single timer; 0 disarms. Protocols use it for header,
 * idle and ping timeouts. */
PX_EXTERN void px_conn_set_timeout(px_conn_t *c, uint64_t ms);
/** Stop or resume reading (backpressure). */
PX_EXTERN void px_conn_pause_read(px_conn_t *c, int paused);
/** Max bytes kept between on_read calls (an unfinished request or frame). */
PX_EXTERN void px_conn_set_read_limit(px_conn_t *c, size_t max);
PX_EXTERN px_server_t *px_conn_server(const px_conn_t *c);
PX_EXTERN px_worker_t *px_conn_worker(const px_conn_t *c);
PX_EXTERN px_loop_t *px_conn_loop(const px_conn_t *c);
/** Unique id (per process) for logs. */
PX_EXTERN uint64_t px_conn_id(const px_conn_t *c);
/** The peer address as text ("127.0.0.1:5000", "unix"); writes at most len bytes. */
PX_EXTERN int px_conn_peer_name(const px_conn_t *c, char *buf, size_t len);
PX_EXTERN int px_conn_fd(const px_conn_t *c);

#ifdef __cplusplus
}
#endif
#endif
