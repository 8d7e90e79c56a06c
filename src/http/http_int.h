/* Internals of the HTTP/1.1 server (server.c, router.c, static.c). */
#ifndef PX_HTTP_INT_H
#define PX_HTTP_INT_H

#include "core/arena.h"
#include "http/http1_parse.h"
#include "plexus/http.h"
#include "plexus/ws.h"

#define PX__HTTP_MAX_PARAMS 8

typedef struct px__route px__route_t;

typedef struct px__http_worker {
    int64_t date_sec; /* wall second the cached Date line was made for */
    char date[48];    /* "Date: Sun, 22 Nov 2026 04:05:00 GMT\r\n" */
    size_t date_len;
    px_http_header_t *hdrs; /* parse scratch: max_headers entries */
} px__http_worker_t;

typedef struct px__http {
    px_server_t *server;
    px_http_opts_t opts;
    px_http1_limits_t limits;
    px__route_t *routes; /* registration order */
    size_t nroutes, routes_cap;
    px__http_worker_t *workers;
    unsigned nworkers;
    px_ws_opts_t ws_opts; /* for every WebSocket route (px_ws_configure) */
    int ws_opts_set;      /* ws_opts holds defaults or px_ws_configure's */
} px__http_t;

typedef struct px__res_header {
    struct px__res_header *next;
    px_str_t name, value;
} px__res_header_t;

typedef struct px__http_conn px__http_conn_t;

struct px_req {
    px__http_conn_t *hc;
    px_http1_request_t h; /* head; spans point into the connection buffer or, once
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
    unsigned detached : 1;  /* head and body copied into the arena */
    unsigned aborted : 1;   /* client gone */
    unsigned streaming : 1;
    unsigned chunked_out : 1; /* stream uses chunked framing */
    unsigned keep_alive : 1;  /* decided when answering */
    unsigned upgraded : 1;
};

enum px__hc_state {
    HC_HEAD,   /* reading a request head */
    HC_BODY,   /* head done (detached), reading a body that did not arrive with it */
    HC_ASYNC,  /* handler returned without answering; reading paused */
    HC_STREAM, /* a streamed response owns the connection */
};

struct px__http_conn {
    px_conn_t *c; /* NULL once the connection is gone while a request is outstanding */
    px__http_t *http;
    px__http_worker_t *hw;
    px_http1_parser_t parser;
    px__arena_t arena;
    px_req_t req;
    int state;
    unsigned nreq;
    unsigned eof : 1;         /* client half-closed: close after the current answer */
    unsigned close_after : 1; /* graceful shutdown: close after the current answer */
    unsigned head_timer : 1;  /* header timeout armed for a partial head */
    unsigned own_hdrs : 1;    /* req.h.headers is this connection's arena copy */
    unsigned out_paused : 1;  /* reading stopped until the output budget drains */
    unsigned discarded : 1;   /* client bytes dropped during a stream: close after it */
    unsigned body_owned : 1;  /* req.body points into `body` (freed when the request ends) */
    /* HC_BODY: */
    px_buf_t body;
    px_http1_chunked_t chunked;
    unsigned body_chunked : 1;
    uint64_t body_left; /* Content-Length bytes still to read */
};

px__http_t *px__http_get(px_server_t *s);
/* router.c */
/* ud_free (may be NULL) releases ud when the server is freed. */
int px__router_add(px__http_t *h, const char *method, const char *pattern, px_handler_fn fn,
                   void *ud, void (*ud_free)(void *));
void px__router_dispatch(px__http_t *h, px_req_t *req);
void px__router_free(px__http_t *h);
/* static.c */
const char *px__mime_type(const char *path, size_t len);

#endif
