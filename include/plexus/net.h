/* plexus — servers, listeners and connections.
 *
 * A px_server_t owns the workers, the listening sockets and every connection.
 * A connection (px_conn_t) pairs a transport (how bytes move: a plain socket,
 * or a stack of layers such as TLS over the socket) with a protocol (what the
 * bytes mean: HTTP/1.1, WebSocket, ...). Protocols are vtables registered on
 * the server by name; a connection can change protocol in place (HTTP ->
 * WebSocket, a sniffer -> what it found), and protocols never see whether TLS
 * is underneath.
 *
 * Each listener has a pipeline (px_listen_opts_t): its transport, then the
 * protocol every connection starts with, which may be a real protocol or a
 * chooser that reads the first bytes and switches (px_conn_start_protocol).
 * Connections can also be made outbound (px_conn_connect) and are then the
 * same px_conn_t. docs/internals/connections.md has the life cycle and rules.
 *
 * Threading: a connection belongs to the worker that accepted (or connected)
 * it; every px_conn_* call must be made on that worker's thread. Server set-up
 * (listen, protocols, modules) happens before px_server_start, on one thread. */
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
/** Free a server that is not running (module states first, newest first). Accepts NULL. */
PX_EXTERN void px_server_free(px_server_t *s);

/* ---- listeners and their pipelines ------------------------------------------- */

/** A transport recipe: how accepted (or connected) sockets are wrapped. NULL
 * everywhere means plain. The TLS transport (plexus/tls.h, issue 12) is one;
 * it must outlive the server. */
typedef struct px_transport_factory px_transport_factory_t;

/** One listener's pipeline: socket -> transport -> first protocol. */
typedef struct px_listen_opts {
    /** "127.0.0.1:8080", "[::1]:8080", "localhost:0"  TCP, one SO_REUSEPORT socket per worker
     *                                                 (port 0 picks a free port once, shared by
     * all) "unix:/path/to/sock"                           Unix socket shared by all workers "fd:N"
     * an inherited listening socket, shared */
    const char *addr;
    /** NULL = plain. Its handshake (if any) completes before the first protocol starts. */
    const px_transport_factory_t *transport;
    /** Name of the protocol every connection starts with (px_server_add_protocol);
     * NULL = the server's default. It may be a chooser: a protocol that reads
     * the first bytes (bounded by px_conn_set_read_limit and px_conn_set_timeout)
     * and then switches with px_conn_start_protocol. Resolved by px_server_start
     * (-EINVAL if no such protocol). */
    const char *protocol;
    /** Open connections from this listener (all workers); over it the
     * connection is rejected like over px_server_opts_t.max_connections. 0 = no
     * limit of its own. */
    unsigned max_connections;
    /** listen(2) backlog; 0 = the server's. */
    int backlog;
    /** Bound on the transport handshake; 0 = 10 s. */
    uint64_t handshake_timeout_ms;
} px_listen_opts_t;

PX_EXTERN void px_listen_opts_init(px_listen_opts_t *o);
/** Add a listener (call before start; up to 16). Binds now, so errors
 * (EADDRINUSE, bad syntax -> -EINVAL) come back at once. Copies what it needs. */
PX_EXTERN int px_server_listen_opts(px_server_t *s, const px_listen_opts_t *o);
/** px_server_listen_opts with the default pipeline: plain, default protocol. */
PX_EXTERN int px_server_listen(px_server_t *s, const char *addr);
/** Number of listeners, and the actual address of listener i ("127.0.0.1:43123"). */
PX_EXTERN unsigned px_server_listener_count(const px_server_t *s);
PX_EXTERN const char *px_server_listener_name(const px_server_t *s, unsigned i);

/* ---- running ------------------------------------------------------------------ */

/** Start the worker threads (they begin accepting). -EINVAL if no protocol is
 * registered or a listener names an unknown one. */
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
/** Hook called on each worker when a graceful shutdown begins there, before its
 * connections are told (on_shutdown): for work that is not a connection (sessions of a
 * long-polling transport, ...). Before px_server_start; up to 4. 0 or -ENOSPC. */
PX_EXTERN int px_server_on_drain(px_server_t *s, void (*cb)(px_worker_t *w, void *ud), void *ud);
/** Hook called (on the main thread) on SIGHUP after logs are re-opened. */
PX_EXTERN void px_server_on_reload(px_server_t *s, void (*cb)(px_server_t *, void *), void *ud);
PX_EXTERN px_workers_t *px_server_workers(px_server_t *s);
PX_EXTERN const px_server_opts_t *px_server_opts(const px_server_t *s);
/** Bytes written verbatim to a connection rejected over max_connections before
 * it is closed (the HTTP layer installs a 503 response). Copied. */
PX_EXTERN void px_server_set_reject_message(px_server_t *s, const void *p, size_t len);
/** Currently open accepted connections, all workers (approximate while running). */
PX_EXTERN unsigned px_server_connection_count(const px_server_t *s);

/* ---- per-module state ----------------------------------------------------------- */

/**
 * Each module that builds on the server (HTTP, WebSocket, HTTP/2, the hub, an
 * application) keeps its own state under a key: the address of a static
 * object of the module (`static char key;` ... `&key`; not const, so the
 * compiler never merges two keys).
 * Setting a key again replaces its data without freeing the old data. Set
 * before px_server_start; read from any thread afterwards. px_server_free
 * calls each `free_fn` (may be NULL), newest first. 0 or -ENOMEM.
 */
PX_EXTERN int px_server_module_set(px_server_t *s, const void *key, void *data,
                                   void (*free_fn)(void *));
/** The data set for `key`, or NULL. */
PX_EXTERN void *px_server_module(const px_server_t *s, const void *key);
/** Compatibility: one user slot, a module key of its own (prefer px_server_module_set). */
PX_EXTERN void px_server_set_data(px_server_t *s, void *data, void (*free_fn)(void *));
PX_EXTERN void *px_server_get_data(const px_server_t *s);

/* ---- protocols --------------------------------------------------------------------- */

/** What the bytes mean. Every callback runs on the connection's worker, never
 * re-entered for the same connection, and never after on_close. */
typedef struct px_protocol {
    const char *name;
    /** Bytes arrived. Consume what you can and return how many bytes you used;
     * the rest is kept (bounded by px_conn_set_read_limit) and presented again,
     * with the next bytes appended. `data` may be modified in place (unmasking).
     * Return -1 after closing the connection. If the callback switches protocol
     * (px_conn_set_protocol, px_conn_start_protocol), the remaining bytes go to
     * the new protocol at once. */
    ssize_t (*on_read)(px_conn_t *c, char *data, size_t len);
    /** Output queue fully written (optional): resume producing. */
    void (*on_drain)(px_conn_t *c);
    /** The timer set by px_conn_set_timeout fired (optional; default: close). */
    void (*on_timeout)(px_conn_t *c);
    /** Graceful shutdown began (optional; default: close once output is flushed). */
    void (*on_shutdown)(px_conn_t *c);
    /** The peer closed its side (optional; default: close once output is flushed). */
    void (*on_eof)(px_conn_t *c);
    /** The connection is going away: release protocol state. No more output.
     * Called exactly once for every connection that has a protocol. */
    void (*on_close)(px_conn_t *c);
    /** The transport became ready (optional): an outbound connection
     * (px_conn_connect) is connected and its transport handshake done
     * (status 0), or it failed (-ECONNREFUSED, -ETIMEDOUT, -ENOENT, ...; the
     * connection is already closing and on_close follows). Not called on a
     * connection the protocol closed before it was ready. */
    void (*on_connect)(px_conn_t *c, int status);
} px_protocol_t;

/**
 * Register protocol `p` under `name` (NULL = p->name) on the server, with the
 * function that creates its per-connection state: on_accept(c, ud) runs on the
 * connection's worker when a connection starts this protocol (its return value
 * becomes px_conn_state). on_accept may abort the connection. The first
 * registered protocol is the default for listeners that name none. Registering
 * a name again replaces it. Before px_server_start. 0, -EINVAL, -ENOSPC (16).
 */
PX_EXTERN int px_server_add_protocol(px_server_t *s, const char *name, const px_protocol_t *p,
                                     void *(*on_accept)(px_conn_t *c, void *ud), void *ud);
/** 1 if a protocol named `name` is registered on `s`, else 0. */
PX_EXTERN int px_server_protocol_registered(const px_server_t *s, const char *name);
/** Compatibility: px_server_add_protocol(s, p->name, ...) and make it the default. */
PX_EXTERN void px_server_set_protocol(px_server_t *s, const px_protocol_t *p,
                                      void *(*on_accept)(px_conn_t *c, void *ud), void *ud);

/* ---- connections ------------------------------------------------------------ */

/** Switch protocol in place; `state` becomes px_conn_state(). The old protocol's
 * on_close is NOT called: the caller hands over or frees the old state itself.
 * Bytes kept unconsumed go to the new protocol (at once inside on_read,
 * otherwise from the loop). */
PX_EXTERN void px_conn_set_protocol(px_conn_t *c, const px_protocol_t *p, void *state);
/** Switch to the registered protocol `name`: like px_conn_set_protocol with the
 * state its on_accept creates, starting from the connection defaults (read
 * limit 64 KiB, the timer disarmed, then the server's idle timeout if
 * on_accept set none). How a chooser hands the connection over. The caller
 * frees its own state. 0, -ENOENT (not registered), -EPIPE (closing). */
PX_EXTERN int px_conn_start_protocol(px_conn_t *c, const char *name);
PX_EXTERN void *px_conn_state(const px_conn_t *c);
/** Queue a copy of `p` for sending. Output is flushed once per loop iteration
 * (one writev for everything queued). -ENOBUFS past output_cap, -ENOMEM, -EPIPE if closing. */
PX_EXTERN int px_conn_write(px_conn_t *c, const void *p, size_t len);
/** Queue bytes of a shared slice without copying; takes its own reference. */
PX_EXTERN int px_conn_write_slice(px_conn_t *c, px_slice_t *s, size_t off, size_t len);
/** Queue `len` bytes of file `fd` from `off`; the connection owns `fd` from now on
 * (closed after sending, or on error). Sent with sendfile(2) when the transport
 * offers it, else read and written 16 KiB at a time. */
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
/** The socket (for splice(2), socket options). The connection owns it. */
PX_EXTERN int px_conn_fd(const px_conn_t *c);

/* ---- outbound connections ----------------------------------------------------------- */

typedef struct px_connect_opts {
    /** Bound on connect + transport handshake; on expiry on_connect(c, -ETIMEDOUT).
     * 0 = no bound (not advised). Default 10 s. */
    uint64_t timeout_ms;
    /** NULL = plain (e.g. TLS to a backend, issue 12). */
    const px_transport_factory_t *transport;
} px_connect_opts_t;

PX_EXTERN void px_connect_opts_init(px_connect_opts_t *o);
/**
 * Connect to `addr` ("127.0.0.1:22", "[::1]:22", "localhost:22" or
 * "unix:/path"; names other than localhost are not resolved: no blocking DNS on
 * a worker), without blocking. Call on a worker thread of `s` (from a protocol
 * callback or a worker message); the connection belongs to that worker, so it
 * can be paired with a connection the worker accepted (a pass-through proxy).
 * `p` runs it with `state` from the start: on_connect(c, 0) once connected, or
 * on_connect(c, -errno) and then on_close. The outcome is always reported from
 * the loop, never from inside this call. Bytes written before on_connect are
 * queued and sent once connected. Outbound connections are not counted in
 * max_connections or in the plexus_connections metric; server shutdown closes
 * them like the others.
 * Returns 0 with *out set (valid until on_close), or -EINVAL (bad address),
 * -EPERM (not on a worker of s), -ENOMEM, -EMFILE ... with nothing created.
 */
PX_EXTERN int px_conn_connect(px_server_t *s, const char *addr, const px_connect_opts_t *o,
                              const px_protocol_t *p, void *state, px_conn_t **out);

#ifdef __cplusplus
}
#endif
#endif
