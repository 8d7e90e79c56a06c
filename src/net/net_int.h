/* Internals of src/net shared by server.c, listener.c and conn.c. */
#ifndef PX_NET_INT_H
#define PX_NET_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "plexus/net.h"

#define PX__READ_CHUNK    (64 * 1024) /* per-worker shared read buffer */
#define PX__SCRATCH_SIZE  (16 * 1024) /* output scratch slices for small writes */
#define PX__SCRATCH_CACHE 64          /* free scratch slices kept per worker */
#define PX__MAX_LISTENERS 16
#define PX__OUT_SMALL     4    /* entries in a new output ring */
#define PX__RING_CACHE    256  /* free small rings kept per worker */
#define PX__LINGER_MS     2000 /* read-and-discard after a close, so the peer gets our reply */

enum { PX__LISTEN_TCP, PX__LISTEN_UNIX, PX__LISTEN_FD };

typedef struct px__listener {
    int kind;
    char name[128];  /* as bound, for logs ("127.0.0.1:43123", "unix:/x", "fd:3") */
    char *unix_path; /* removed at free (we created it) */
    int shared_fd;   /* UNIX/FD: one socket for every worker (EPOLLEXCLUSIVE); TCP: -1 */
    int *worker_fds; /* TCP: one SO_REUSEPORT socket per worker; -1 once closed */
    unsigned nfds;   /* TCP: entries in worker_fds */
} px__listener_t;

typedef struct px__netw px__netw_t;

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

struct px_conn {
    px_io_t io; /* io.fd is the socket */
    const px_transport_t *transport;
    const px_protocol_t *proto;
    void *state; /* the protocol's */
    px__netw_t *nw;
    px_conn_t *prev, *next; /* the worker's connection list */
    px_timer_t timer;
    px_defer_t defer; /* flush, re-dispatch and close: runs after the event batch */
    px_buf_t in;      /* unconsumed input; memory held only while non-empty */
    size_t read_limit;
    px__out_t *out; /* ring of out_cap entries; NULL while empty */
    uint32_t out_head, out_count, out_cap;
    size_t out_bytes; /* sum of len over entries; bounded by output_cap */
    uint64_t id;
    unsigned closing : 1;   /* px_conn_close/abort called: no more reads or protocol output */
    unsigned aborted : 1;   /* drop output, close at once */
    unsigned lingering : 1; /* write side shut; reading and discarding until EOF */
    unsigned read_paused : 1;
    unsigned eof : 1;
    unsigned redispatch : 1; /* input kept while paused must be handed over on resume */
    unsigned finalized : 1;
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
    px_slice_t *scratch[PX__SCRATCH_CACHE];
    unsigned nscratch;
    px__out_t *rings[PX__RING_CACHE]; /* free output rings of PX__OUT_SMALL entries */
    unsigned nrings;
    px_timer_t shutdown_timer;
    px_timer_t lag_timer;  /* samples loop lag into metrics once a second */
    px_defer_t stop_defer; /* stops the loop after connections finalised this iteration are freed */
    px_timer_t accept_retry; /* re-watch listeners after running out of fds */
    px_msg_t shutdown_msg;
};

struct px_server {
    px_server_opts_t opts;
    px_workers_t *workers;
    px__netw_t *nw; /* one per worker */
    px__listener_t listeners[PX__MAX_LISTENERS];
    unsigned nlisteners;
    const px_protocol_t *protocol;
    void *(*on_accept)(px_conn_t *c, void *ud);
    void *accept_ud;
    char *reject_msg;
    size_t reject_len;
    atomic_uint nconns;
    atomic_int shutting_down;
    void (*reload_cb)(px_server_t *, void *);
    void *reload_ud;
    void *data;
    void (*data_free)(void *);
};

/* listener.c */
int px__listener_open(px_server_t *s, px__listener_t *l, const char *addr);
void px__listener_close(px__listener_t *l);
int px__listener_fd(const px__listener_t *l, unsigned worker);
void px__on_listen_readable(px_io_t *io, unsigned events);
void px__accept_retry(px_timer_t *t);

/* conn.c */
px_conn_t *px__conn_new(px__netw_t *nw, int fd);
void px__conn_shutdown(px_conn_t *c);
void px__scratch_free_all(px__netw_t *nw);

/* Queue bytes even past output_cap: a close frame for a slow consumer, tiny
 * and the connection's last words. */
int px__conn_write_over_cap(px_conn_t *c, const void *p, size_t len);

/* server.c */
void px__netw_conn_gone(px__netw_t *nw);

/* metrics ids, registered by px_server_new */
extern int px__m_conns, px__m_accepted, px__m_rejected, px__m_bytes_in, px__m_bytes_out,
    px__m_loop_lag;

#endif
