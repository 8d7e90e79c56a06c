/* Internals of src/net shared by server.c, listener.c, conn.c, connect.c and
 * the transports. docs/internals/connections.md explains the state machine. */
#ifndef PX_NET_INT_H
#define PX_NET_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "plexus/net.h"

#define PX__READ_CHUNK    (64 * 1024) /* per-worker shared read buffer */
#define PX__SCRATCH_SIZE  (16 * 1024) /* output scratch slices for copied writes */
#define PX__SCRATCH_CACHE 8           /* free large scratch slices kept per worker */
/* Small scratch slices: a 1 KiB allocation with the slice header and malloc's. */
#define PX__SCRATCH_SMALL (1024 - 16)
#define PX__MAX_LISTENERS 16
#define PX__MAX_PROTOCOLS 16
#define PX__OUT_SMALL     4 /* entries in a new output ring */
/* Free small rings and small scratch slices are kept per worker (px__fcache_t)
 * as many as the busiest moment of the last second needed (a broadcast to
 * 10 000 connections needs 10 000 of each for the length of a loop iteration),
 * at most PX__FCACHE_MAX; px__conn_caches_trim frees the rest once a second,
 * down to PX__FCACHE_KEEP. */
#define PX__FCACHE_KEEP  64
#define PX__FCACHE_MAX   65536
#define PX__LINGER_MS    2000  /* read-and-discard after a close, so the peer gets our reply */
#define PX__HANDSHAKE_MS 10000 /* default bound on a transport handshake */
#define PX__NO_LISTENER  0xff  /* px_conn.listener of a connection no listener accepted */

enum { PX__LISTEN_TCP, PX__LISTEN_UNIX, PX__LISTEN_FD };

/* A protocol registered by name (px_server_add_protocol). */
typedef struct px__proto_entry {
    char *name;
    const px_protocol_t *proto;
    void *(*on_accept)(px_conn_t *c, void *ud);
    void *ud;
} px__proto_entry_t;

typedef struct px__listener {
    int kind;
    char name[128];  /* as bound, for logs ("127.0.0.1:43123", "unix:/x", "fd:3") */
    char *unix_path; /* removed at free (we created it) */
    int shared_fd;   /* UNIX/FD: one socket for every worker (EPOLLEXCLUSIVE); TCP: -1 */
    int *worker_fds; /* TCP: one SO_REUSEPORT socket per worker; -1 once closed */
    unsigned nfds;   /* TCP: entries in worker_fds */
    /* The pipeline (px_listen_opts_t), fixed before start. */
    char *protocol; /* first protocol's name; NULL = the server's default */
    const px_transport_factory_t *transport; /* NULL = plain */
    unsigned max_connections;                /* 0 = only the server's limit */
    uint64_t handshake_timeout_ms;
    const px__proto_entry_t *entry; /* `protocol` resolved by px_server_start */
    atomic_uint nconns; /* with max_connections: open connections accepted here (all workers) */
} px__listener_t;

typedef struct px__netw px__netw_t;

/* A free list of equal blocks (linked through their first bytes). `low` is the
 * fewest free since the last trim: that many were not needed. */
typedef struct px__fcache {
    void *head;
    unsigned n, low;
} px__fcache_t;

enum px__out_kind { PX__OUT_SLICE, PX__OUT_SCRATCH, PX__OUT_FILE };

typedef struct px__out {
    uint8_t kind;
    uint32_t off; /* SLICE/SCRATCH: start in the slice */
    union {
        px_slice_t *slice;
        int fd;
    } u;
    uint64_t len;      /* bytes still to send */
    uint64_t file_off; /* FILE: next offset */
} px__out_t;

/* px_conn.phase. OPEN is 0 so that the hot path tests (phase | tp_wants) once. */
enum {
    PX__OPEN = 0,   /* transport ready: reads go to the protocol, output is flushed */
    PX__CONNECTING, /* outbound connect(2) in progress: waiting for writable */
    PX__HANDSHAKE,  /* the top layer's handshake runs; no protocol reads or flushes */
    PX__RAW,        /* the protocol drives the socket itself (splice, proxy.c): see px__conn_raw */
};

/* px_conn.tp_wants: an operation the transport could not finish waits for the
 * other direction (TLS), or a handshake step waits for writable. */
enum {
    PX__READ_WANTS_WRITE = 1u << 0, /* retry the read when writable */
    PX__WRITE_WANTS_READ = 1u << 1, /* retry the flush when readable */
    PX__SHUT_WANTS_READ = 1u << 2,  /* retry the shutdown when readable */
    PX__SHUT_WANTS_WRITE = 1u << 3, /* retry the shutdown when writable */
    PX__HS_WANTS_WRITE = 1u << 4,   /* HANDSHAKE: step again when writable (else readable) */
};

typedef struct px__transport px__transport_t;

/* A connection. Owned by one worker (nw); only that thread touches it.
 * Invariants (checked by tests/unit/net/test_conn.c, explained in
 * docs/internals/connections.md):
 * - finalized => freed by the deferred callback, nothing else runs;
 *   aborted => closing; lingering => closing and the output queue is empty.
 * - closing: no more protocol reads and no more protocol output (px_conn_write
 *   returns -EPIPE); the queue still drains unless aborted.
 * - in holds bytes the protocol did not consume, never more than read_limit
 *   (over it the connection is aborted); its memory is released when empty.
 * - out_bytes = sum of len over queued SLICE/SCRATCH entries (files do not
 *   count) <= output_cap, except what px_conn_write_nocap queued (a whole response, a close).
 * - phase != OPEN: the protocol gets no bytes and nothing is flushed (output
 *   queued meanwhile waits); proto is NULL only for an accepted connection
 *   whose transport handshake has not finished.
 * - redispatch: c->in must be presented to the protocol again although no
 *   byte arrived (resumed, or the protocol switched outside a read);
 *   read_again: a layer holds bytes (pending) the socket will not signal. */
struct px_conn {
    /* First cache line: everything queuing output touches (px_conn_write*, once
     * per subscriber on a broadcast) and the state tests of on_io. */
    px__out_t *out; /* ring of out_cap entries; NULL while empty */
    uint32_t out_head, out_count, out_cap;
    uint8_t phase;      /* PX__OPEN, PX__CONNECTING, PX__HANDSHAKE */
    uint8_t tp_wants;   /* PX__*_WANTS_* */
    uint8_t listener;   /* index in server->listeners, PX__NO_LISTENER if none */
    uint8_t read_again; /* a layer holds bytes (pending): read (or step the handshake) again */
    size_t out_bytes;   /* sum of len over entries; bounded by output_cap */
    px__netw_t *nw;
    unsigned closing : 1;   /* px_conn_close/abort called: no more reads or protocol output */
    unsigned aborted : 1;   /* drop output, close at once */
    unsigned lingering : 1; /* write side shut; reading and discarding until EOF */
    unsigned read_paused : 1;
    unsigned eof : 1;
    unsigned redispatch : 1; /* input kept while paused must be handed over on resume */
    unsigned finalized : 1;
    unsigned outbound : 1;  /* made by px_conn_connect */
    unsigned scheduled : 1; /* == defer._queued, kept here so that a write reads one line */
    int err; /* CONNECTING: connect(2) failed at once with this -errno; after a failed connect
                or handshake (connect_failed): why, e.g. -ETIMEDOUT */
    px__transport_t *tp; /* top of the transport stack (&px__transport_plain when plain) */
    const px_protocol_t *proto;
    /* The rest: reads, timers, the worker's list. */
    void *state;            /* the protocol's */
    px_defer_t defer;       /* flush, re-dispatch and close: runs after the event batch */
    px_io_t io;             /* io.fd is the socket */
    px_conn_t *prev, *next; /* the worker's connection list */
    px_timer_t timer;
    px_buf_t in; /* unconsumed input; memory held only while non-empty */
    size_t read_limit;
    uint64_t id;
};

struct px__netw {
    px_server_t *server;
    px_worker_t *worker;
    px_loop_t *loop;
    px_io_t listen_io[PX__MAX_LISTENERS];
    px_conn_t *conns; /* list head */
    unsigned nconns;
    int draining;
    int reserve_fd; /* spare fd given up on EMFILE to accept-and-close */
    uint64_t emfile_logged_ms;
    char *rbuf;
    size_t output_cap; /* the server's, read by every write */
    px_slice_t *scratch[PX__SCRATCH_CACHE];
    unsigned nscratch;
    px__fcache_t small; /* free small scratch slices (px_slice_t, linked through data) */
    px__fcache_t rings; /* free output rings of PX__OUT_SMALL entries */
    px_timer_t shutdown_timer;
    px_timer_t lag_timer;  /* samples loop lag into metrics once a second */
    px_defer_t stop_defer; /* stops the loop after connections finalised this iteration are freed */
    px_timer_t accept_retry; /* re-watch listeners after running out of fds */
    px_msg_t shutdown_msg;
};

/* Per-module state (px_server_module_set). */
typedef struct px__module {
    const void *key;
    void *data;
    void (*free_fn)(void *);
} px__module_t;

struct px_server {
    px_server_opts_t opts;
    px_workers_t *workers;
    px__netw_t *nw; /* one per worker */
    px__listener_t listeners[PX__MAX_LISTENERS];
    unsigned nlisteners;
    px__proto_entry_t protocols[PX__MAX_PROTOCOLS];
    unsigned nprotocols;
    int default_protocol; /* index in protocols; -1: the first registered */
    px__module_t *modules;
    unsigned nmodules;
    char *reject_msg;
    size_t reject_len;
    atomic_uint nconns; /* accepted connections open (outbound ones are not counted) */
    atomic_int shutting_down;
    void (*reload_cb)(px_server_t *, void *);
    void *reload_ud;
    struct {
        void (*cb)(px_worker_t *, void *);
        void *ud;
    } drain_hooks[4]; /* px_server_on_drain */
    unsigned ndrain_hooks;
};

/* listener.c */
int px__listener_open(px_server_t *s, px__listener_t *l, const char *addr, int backlog);
void px__listener_close(px__listener_t *l);
int px__listener_fd(const px__listener_t *l, unsigned worker);
void px__on_listen_readable(px_io_t *io, unsigned events);
void px__accept_retry(px_timer_t *t);
/* "host:port" / "[v6]:port" -> host and port strings. 0 or -EINVAL. */
int px__split_host_port(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);

/* conn.c */
/* A connection on accepted socket `fd`, counted by the caller in
 * server->nconns. `listener` (an index, or PX__NO_LISTENER for the default
 * pipeline: plain transport, default protocol) chooses the pipeline. Returns
 * NULL if it could not be set up (the caller closes fd and uncounts it). */
px_conn_t *px__conn_new(px__netw_t *nw, int fd, unsigned listener);
/* px__conn_new for a socket that came from elsewhere (tests; a socket handed
 * over): counts it in server->nconns itself. */
px_conn_t *px__conn_adopt(px__netw_t *nw, int fd);
void px__conn_shutdown(px_conn_t *c);
void px__scratch_free_all(px__netw_t *nw);
/* Once a second: free cached blocks the last second did not need. */
void px__conn_caches_trim(px__netw_t *nw);
/* Push a layer made by `f` on top of c's transport stack, with `replay` (bytes
 * already read from the current top, e.g. a sniffed TLS ClientHello) replayed
 * under it first. The new layer's handshake (if any) runs at once from the
 * loop; the protocol keeps the connection and hears the outcome through
 * on_connect(c, status). Called from the protocol's on_read, which then
 * returns the replayed bytes as consumed. 0 or -errno (nothing changed). */
int px__conn_push_transport(px_conn_t *c, const px_transport_factory_t *f, const void *replay,
                            size_t len);
/* A connection in PX__CONNECTING on socket fd, whose connect(2) was issued
 * (err: its immediate failure to report from the loop, or 0). connect.c. */
px_conn_t *px__conn_outbound(px__netw_t *nw, int fd, int err, const px_connect_opts_t *o,
                             const px_protocol_t *p, void *state);
/* An address px_conn_connect accepts ("127.0.0.1:22", "[::1]:22",
 * "localhost:22", "unix:/path") as a sockaddr. 0 or -EINVAL. connect.c. */
int px__connect_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len);
/* Start the outbound connection of px_conn_connect on worker nw. */
int px__conn_connect(px__netw_t *nw, const char *addr, const px_connect_opts_t *o,
                     const px_protocol_t *p, void *state, px_conn_t **out);

/* Hand the socket's watcher to the protocol (cb != NULL) or take it back
 * (cb == NULL). In PX__RAW the connection neither reads, writes nor changes
 * the interest set: c->io calls cb(io, events) with io->data = data, and the
 * protocol arms c->io itself (px_io_start). The timer (on_timeout) and a
 * server shutdown (on_shutdown) still reach the protocol, px_conn_abort
 * works, and finalisation unregisters c->io as usual. Entering requires an
 * OPEN connection that is not closing, with an empty output queue, called
 * outside the connection's own io and deferred callbacks' transport work
 * (e.g. from on_drain, a timer, another connection's callback). Taking the
 * watcher back returns to OPEN and re-arms it; px_conn_close then behaves as
 * usual. The splice proxy uses it to move bytes without the input buffer and
 * output queue (docs/internals/connections.md). */
void px__conn_raw(px_conn_t *c, px_io_cb cb, void *data);
/* The peer and local addresses: from the top transport layer that knows them
 * (a PROXY header), else the socket's. Either pointer may be NULL. 0 or -errno. */
int px__conn_addresses(const px_conn_t *c, struct sockaddr_storage *peer,
                       struct sockaddr_storage *local);

/* server.c */
void px__netw_conn_gone(px__netw_t *nw);
/* What a worker does when it starts (read buffer, listeners, timers); the
 * worker threads call it, and unit tests call it to drive a loop by hand. */
void px__netw_start(px__netw_t *nw);
const px__proto_entry_t *px__server_protocol(const px_server_t *s, const char *name);

/* metrics ids, registered by px_server_new */
extern int px__m_conns, px__m_accepted, px__m_rejected, px__m_bytes_in, px__m_bytes_out,
    px__m_loop_lag;

#endif
