/* Internals of the HTTP layer: the protocol-neutral request (request.c), the
 * HTTP/1.1 connection (http1.c), the router (router.c) and static files
 * (static.c). docs/internals/http.md has the request life cycle. */
#ifndef PX_HTTP_INT_H
#define PX_HTTP_INT_H

#include <stddef.h>
#include <string.h>

#include "core/arena.h"
#include "http/http1_parse.h"
#include "http/upgrade.h"
#include "plexus/http.h"

#define PX__HTTP_MAX_PARAMS 8

typedef struct px__route px__route_t;

/* Per worker, touched by that worker only. */
typedef struct px__http_worker {
    px_worker_t *worker;
    int64_t date_sec; /* wall second the cached Date line was made for */
    char date[48];    /* "Date: Sun, 22 Nov 2026 04:05:00 GMT\r\n" */
    size_t date_len;
    px__http_header_t *hdrs; /* HTTP/1 parse scratch: max_headers entries */
} px__http_worker_t;

/* The HTTP module's state (px_server_module): options, routes, per-worker
 * caches. Read-only once the server runs, except each worker's own entry. */
typedef struct px__http {
    px_server_t *server;
    px_http_opts_t opts;
    px__http1_limits_t limits;
    px__route_t *routes; /* registration order */
    size_t nroutes, routes_cap;
    px__http_worker_t *workers;
    unsigned nworkers;
    int h2_registered; /* "h2" is a protocol of the server (h2.c) */
} px__http_t;

typedef struct px__res_header {
    struct px__res_header *next;
    px_str_t name, value;
} px__res_header_t;

/* Content length of a response head (px__req_ops_t.head). */
#define PX__CLEN_NONE   (-1) /* no body and no Content-Length (204, 304) */
#define PX__CLEN_STREAM (-2) /* a stream: the body follows in pieces, length unknown */

/* What the owner of a request (an HTTP/1.1 connection; an HTTP/2 stream later)
 * does for the response API (request.c). Every op runs on the owner's worker.
 * request.c calls them only in the states stated; the owner keeps its own
 * protocol state (framing, keep-alive, timers, reading). */
typedef struct px__req_ops {
    unsigned char http_major; /* for the access log: "HTTP/<major>.<minor>" */
    /* Queue the response head: status (100..999), Server, Date, Content-Type (if
     * ctype), Content-Length (clen >= 0) or none (PX__CLEN_NONE) or a stream
     * (PX__CLEN_STREAM: Cache-Control: no-cache, and the protocol's framing),
     * the user's req->res_headers, then `body` (blen bytes, the whole body of a
     * px_respond; NULL otherwise). Sets req->res_bytes to the bytes queued.
     * Queued past the output budget: an answer is queued whole. With
     * PX__CLEN_STREAM and req->streaming set, the owner enters its stream state
     * (and leaves it again if this fails); without req->streaming (HEAD) it is
     * only the head a stream would have. Nonzero: the caller aborts. */
    int (*head)(px_req_t *req, int status, const char *ctype, int64_t clen, const void *body,
                size_t blen);
    /* Body bytes after the head: a copy of p[0..len), or a reference to
     * sl[off..off+len) when sl. Answer body (not streaming): queued whole.
     * Stream (req->streaming; len > 0): one chunk, framing included, all or
     * nothing within the output budget: -ENOBUFS leaves the stream intact,
     * -EPIPE once the client has gone, another error aborts. */
    int (*body)(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len);
    /* len (> 0) bytes of file fd from off, after a head with that length; the
     * owner owns fd from now on, even on failure. */
    int (*file)(px_req_t *req, int fd, uint64_t off, uint64_t len);
    /* A stream's body is complete (HTTP/1.1: the last chunk). Not after abort. */
    void (*end)(px_req_t *req);
    /* The request is finished (req->finished) outside its handler (req->async):
     * the owner logs it and goes on (next request, close, free). A request
     * finished inside its handler is seen by the owner when the handler
     * returns: no call. */
    void (*done)(px_req_t *req);
    /* Cut the response: the client sees it incomplete (HTTP/1.1: abort the
     * connection). The owner marks the request aborted later, from the loop. */
    void (*abort)(px_req_t *req);
    /* Output bytes queued and not yet written (slow-consumer checks). */
    size_t (*pending)(const px_req_t *req);
    /* Peer address as text, as px_conn_peer_name. */
    int (*peer)(const px_req_t *req, char *buf, size_t len);
    /* Hand the connection to another protocol (HTTP/1.1 Upgrade); NULL when
     * the owner cannot (an HTTP/2 stream). See px__req_upgrade. */
    int (*upgrade)(px_req_t *req, const px_protocol_t *proto, void *state, px_conn_t **out);
    /* Answer 200 and make the stream a tunnel (HTTP/2 extended CONNECT); NULL
     * when the owner has none (HTTP/1.1). See px__req_tunnel. */
    int (*tunnel)(px_req_t *req, const px__tunnel_cb_t *cb, void *ud, px__tunnel_t **out);
} px__req_ops_t;

/*
 * A request, protocol-neutral. Its owner provides the storage (HTTP/1.1: one
 * embedded in the connection, reused request after request), the ops and the
 * head (`h`, parsed from HTTP/1 or built from HTTP/2 header frames).
 *
 * States (flags below): handler running (sync) -> answered (finished) inside
 * it, or the handler returned first (async: the owner keeps the request and
 * waits for `finished`, told by ops->done). A stream is responded but not
 * finished until px_stream_end. Invariants:
 * - finished implies responded; streaming implies responded.
 * - async is set only by the owner, once the handler has returned unfinished;
 *   then the head lives in the arena (detached) and ops->done runs exactly once.
 * - aborted: the client is gone (set by the owner from its loop, never while
 *   the handler runs); abort_cb runs once; writes fail with -EPIPE; the owner
 *   of an async request still ends it (which frees it).
 */
struct px_req {
    /* Set by the owner, kept across requests (px__req_reset keeps them). */
    const px__req_ops_t *ops;
    void *owner; /* the HTTP/1.1 connection, an HTTP/2 stream */
    px__http_t *http;
    px__http_worker_t *hw;
    px__arena_t arena; /* request memory: reset when the request ends */
    /* Per request (zeroed by px__req_reset). */
    px__http1_request_t h; /* head; spans point into the owner's input or, once
                             detached, into the arena */
    px_str_t body;
    unsigned nparams;
    px_str_t param_names[PX__HTTP_MAX_PARAMS];
    px_str_t param_values[PX__HTTP_MAX_PARAMS];
    px__res_header_t *res_headers, *res_headers_tail;
    void (*abort_cb)(px_req_t *, void *);
    void *abort_ud;
    void (*drain_cb)(px_req_t *, void *); /* streams: output fully written */
    void *drain_ud;
    uint64_t start_ns; /* for the access log */
    int status;        /* answered status (access log) */
    uint64_t res_bytes;
    unsigned responded : 1; /* answered (or stream started) */
    unsigned finished : 1;  /* answer complete (stream ended) */
    unsigned async : 1;     /* the handler returned unfinished: ops->done ends it */
    unsigned detached : 1;  /* head and body copied into the arena (or built there) */
    unsigned body_kept : 1; /* body bytes belong to the owner until the request ends */
    unsigned aborted : 1;   /* client gone */
    unsigned streaming : 1;
    unsigned upgraded : 1;
};

/* Start of the per-request part of px_req_t. */
#define PX__REQ_RESET_OFF offsetof(px_req_t, h)

/* Ready `req` for its owner (once, at creation). */
void px__req_init(px_req_t *req, const px__req_ops_t *ops, void *owner, px__http_t *http,
                  px__http_worker_t *hw);
/* Release what px__req_init and the requests since took. */
void px__req_dispose(px_req_t *req);

/* Ready the request for the owner's next one: per-request fields zeroed, the
 * arena's memory released (but one block). */
static inline void px__req_reset(px_req_t *req)
{
    memset((char *)req + PX__REQ_RESET_OFF, 0, sizeof *req - PX__REQ_RESET_OFF);
    px__arena_reset(&req->arena);
}

/* Run the request's handler (router). */
void px__req_run(px_req_t *req);
/* Copy the head (and the body, unless body_kept) into the arena so the
 * request outlives the owner's input. 0 or -ENOMEM. */
int px__req_detach(px_req_t *req);
/* The client has gone: mark the request and tell its abort callback. */
void px__req_gone(px_req_t *req);
/* One access-log line for the request (if the access log is on). */
void px__req_log(px_req_t *req);

/* Status -> error code for px_respond_error ("not_found"). */
const char *px__http_error_code(int status);
/* Percent-decode `in` into the arena ('+' is a space when plus_space). */
int px__http_decode(px__arena_t *a, px_str_t in, px_str_t *out, int plus_space);

/* The "Date: ...\r\n" line for wall second `now`, cached per worker. */
void px__http_date_refresh(px__http_worker_t *hw, int64_t now);
static inline const char *px__http_date(px__http_worker_t *hw, int64_t now, size_t *len)
{
    if (now != hw->date_sec)
        px__http_date_refresh(hw, now);
    *len = hw->date_len;
    return hw->date;
}

px__http_t *px__http_get(px_server_t *s);

/* http1.c */
/* Register the "http/1.1" protocol and its 503 for rejected connections. */
void px__http1_setup(px__http_t *h);

/* h2.c */
/* Register the "h2" protocol (HTTP/2 over nghttp2) and its metrics. 0 or -errno. */
int px__h2_setup(px__http_t *h);
/* The client connection preface (RFC 9113 3.4), 24 bytes. */
#define PX__H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PX__H2_PREFACE_LEN 24

/* router.c */
/* ud_free (may be NULL) releases ud when the server is freed. */
int px__router_add(px__http_t *h, const char *method, const char *pattern, px_handler_fn fn,
                   void *ud, void (*ud_free)(void *));
void px__router_dispatch(px__http_t *h, px_req_t *req);
void px__router_free(px__http_t *h);
/* static.c */
const char *px__mime_type(const char *path, size_t len);

#endif
