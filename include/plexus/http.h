/* plexus — HTTP/1.1 server, router and responses.
 *
 *   px_server_t *s = px_server_new(NULL);
 *   px_server_listen(s, "127.0.0.1:8080");
 *   px_route(s, "GET", "/hello/:name", hello, NULL);
 *   px_server_run(s);
 *
 * A handler runs on the worker that owns the request (px_req_worker), whatever
 * protocol carried it (HTTP/1.1 today; HTTP/2 streams produce the same
 * requests, so handlers never see a connection). It answers with one of
 * the px_respond* calls before returning, or later (asynchronously) from the same
 * worker: a request that was not answered when its handler returned stays
 * pending, the connection keeps later pipelined requests waiting (responses go
 * out in order), and the request stays valid until it is answered. An async
 * owner must answer exactly once; if the client has gone, the answer is
 * dropped and the request freed. */
#ifndef PLEXUS_HTTP_H
#define PLEXUS_HTTP_H

#include "plexus/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_req px_req_t;
typedef void (*px_handler_fn)(px_req_t *req, void *ud);

typedef struct px_http_opts {
    size_t max_request_line;       /**< 414 over it (default 8 KiB) */
    size_t max_header_size;        /**< whole head; 431 over it (default 16 KiB) */
    unsigned max_headers;          /**< 431 over it (default 100) */
    size_t max_body;               /**< 413 over it, sent before the body is read (default 1 MiB) */
    uint64_t header_timeout_ms;    /**< time to receive a full head (default 10 s) */
    uint64_t keepalive_timeout_ms; /**< idle time between requests (default 60 s) */
    unsigned max_requests;         /**< per connection, then Connection: close (0 = no limit) */
    int access_log;                /**< 0 off, 1 text, 2 JSON (one log line per request) */
    /* HTTP/2 (docs/http2.md). The "h2" protocol is registered by the first
     * px_http_configure (or px_route) with h2 set: TLS listeners offer it by ALPN,
     * and a plain listener switches to it on the client's connection preface
     * (h2c with prior knowledge). Later calls change the settings, not whether
     * "h2" is registered. The header list size is bounded by max_header_size,
     * the field count by max_headers, a request body by max_body. */
    int h2;                             /**< accept HTTP/2 (default 1) */
    unsigned h2_max_concurrent_streams; /**< SETTINGS_MAX_CONCURRENT_STREAMS (default 100) */
    uint32_t h2_initial_window; /**< SETTINGS_INITIAL_WINDOW_SIZE, per stream (default 256 KiB) */
    uint32_t h2_max_frame_size; /**< SETTINGS_MAX_FRAME_SIZE we accept (default 16 KiB) */
} px_http_opts_t;

PX_EXTERN void px_http_opts_init(px_http_opts_t *o);
/** Make `s` speak HTTP/1.1 (and HTTP/2 unless o->h2 is 0) with these options
 * (px_route does it with defaults). -EINVAL for an HTTP/2 setting out of its
 * range (streams 1..2^31-1, window 1..2^31-1, frame size 16384..16777215). */
PX_EXTERN int px_http_configure(px_server_t *s, const px_http_opts_t *o);

/* ---- routes ------------------------------------------------------------------ */

/**
 * Route `method` ("GET", "POST", ..., or "*" for any) and `pattern` to `fn`.
 * Patterns are paths whose segments are literals, `:name` (one segment, read
 * with px_req_param) or a final `*` (the rest of the path, px_req_param(req, "*")).
 * Routes are tried in registration order; a path that matches only with other
 * methods gets 405 with Allow, no match at all gets 404. HEAD falls back to GET.
 * CONNECT (whose target is an authority, not a path) goes to the first route
 * registered with the method "CONNECT", whatever its pattern; without one it
 * gets 501.
 * Returns 0, -EINVAL for a malformed pattern, -ENOMEM.
 */
PX_EXTERN int px_route(px_server_t *s, const char *method, const char *pattern, px_handler_fn fn,
                       void *ud);

/** Serve files under `root` for GET/HEAD at `prefix` ("/" or "/assets/"): sendfile,
 * MIME types, ETag/If-None-Match and Last-Modified/If-Modified-Since (304), single
 * Range (206/416), index.html. Paths leaving the root (.., encoded dots or slashes,
 * NUL, symlinks pointing outside) are refused. */
PX_EXTERN int px_route_static(px_server_t *s, const char *prefix, const char *root);

/* ---- requests (valid until answered) ------------------------------------------ */

PX_EXTERN px_str_t px_req_method(const px_req_t *req);
/** Path as sent (percent-encoded), without the query. */
PX_EXTERN px_str_t px_req_path(const px_req_t *req);
/** Raw query string without '?' ({NULL,0} if none). */
PX_EXTERN px_str_t px_req_query(const px_req_t *req);
/** Percent-decoded value of query parameter `name`; 1 if present, 0 if not,
 * -EINVAL if it is badly encoded. */
PX_EXTERN int px_req_query_param(px_req_t *req, const char *name, px_str_t *out);
/** Percent-decoded path parameter (":name" or "*"); {NULL,0} if none. */
PX_EXTERN px_str_t px_req_param(const px_req_t *req, const char *name);
/** First header with this name (case-insensitive); {NULL,0} if absent. */
PX_EXTERN px_str_t px_req_header(const px_req_t *req, const char *name);
/** Number of headers, and header i. */
PX_EXTERN size_t px_req_header_count(const px_req_t *req);
PX_EXTERN int px_req_header_at(const px_req_t *req, size_t i, px_str_t *name, px_str_t *value);
/** The whole request body (chunked bodies are decoded). */
PX_EXTERN px_str_t px_req_body(const px_req_t *req);
PX_EXTERN int px_req_http_minor(const px_req_t *req);
/** The worker the request runs on (its loop: px_worker_loop), the only thread
 * that may touch the request. */
PX_EXTERN px_worker_t *px_req_worker(const px_req_t *req);
/** The client's address as text ("127.0.0.1:5000"), at most `len` bytes with
 * the NUL. On a Unix socket (Phusion Passenger's) it is the address the front
 * server names: `!~Passenger-Client-Address`, else the last X-Forwarded-For
 * entry, else "unix"; these headers are ignored from TCP peers. For logs and
 * per-client limits. 0, or a negative errno once the client has gone. */
PX_EXTERN int px_req_peer(const px_req_t *req, char *buf, size_t len);
/** Memory that lives until the request is answered (arena; no free needed).
 * NULL on failure. */
PX_EXTERN void *px_req_alloc(px_req_t *req, size_t n);
/** Called if the client goes away before an async request is answered (streams:
 * when the stream's connection closes). */
PX_EXTERN void px_req_on_abort(px_req_t *req, void (*cb)(px_req_t *, void *), void *ud);
/** 1 once the client has gone (an async owner may stop work early). */
PX_EXTERN int px_req_aborted(const px_req_t *req);
/** Cut the answer short: the client sees it incomplete (HTTP/1.1: the
 * connection is closed at once, dropping what is queued). For an answer that
 * cannot be completed once its head is out, e.g. a stream whose source failed.
 * The request is then one whose client has gone: on_abort runs (from the
 * loop, not inside this call), writes fail with -EPIPE, and its owner still
 * ends it (px_stream_end, or px_respond* for a request not yet answered). */
PX_EXTERN void px_req_abort(px_req_t *req);

/* ---- responses ------------------------------------------------------------------ */

/** Add a response header (copied). Call before px_respond*. */
PX_EXTERN int px_res_header(px_req_t *req, const char *name, const char *value);
/** Answer with a body from memory (copied; for HEAD, only the headers go out). */
PX_EXTERN int px_respond(px_req_t *req, int status, const char *content_type, const void *body,
                         size_t len);
/** Answer with a shared slice (not copied): the same bytes for many clients. */
PX_EXTERN int px_respond_slice(px_req_t *req, int status, const char *content_type,
                               px_slice_t *body);
/** Answer with an error: a JSON body {"error":"<code>","message":"<message>"}. */
PX_EXTERN int px_respond_error(px_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Answer with `len` bytes of file `fd` from `off` (sendfile); takes ownership of fd. */
PX_EXTERN int px_respond_file(px_req_t *req, int status, const char *content_type, int fd,
                              uint64_t off, uint64_t len);

/** Start a streamed response (chunked on HTTP/1.1, close-delimited on 1.0),
 * e.g. Server-Sent Events. The connection then carries only this stream.
 * Returns 0: the stream is open. On failure (negative errno) the request is over:
 * the connection closes, on_abort is never called and `req` must not be used again.
 * For a HEAD request it returns 1: the head went out and the request is over in the
 * same way (there is no stream to write). */
PX_EXTERN int px_stream_start(px_req_t *req, int status, const char *content_type);
/** Queue one chunk (a copy). All or nothing: -ENOBUFS when it does not fit the
 * connection's output budget (the stream is intact; the client reads too slowly),
 * -EPIPE once the client has gone. */
PX_EXTERN int px_stream_write(px_req_t *req, const void *p, size_t len);
/** Write a shared slice as one chunk without copying it (as px_stream_write). */
PX_EXTERN int px_stream_write_slice(px_req_t *req, px_slice_t *s, size_t off, size_t len);
/** Called each time the stream's queued output has been written out completely:
 * the moment to produce more when pacing a long answer (history, catch-up). */
PX_EXTERN void px_stream_on_drain(px_req_t *req, void (*cb)(px_req_t *, void *), void *ud);
/** Bytes queued for the stream's client and not yet written (slow-consumer
 * checks); 0 once the client has gone. */
PX_EXTERN size_t px_stream_pending(const px_req_t *req);
/** End the stream (answers the request). */
PX_EXTERN int px_stream_end(px_req_t *req);

/** Reason phrase for a status code ("Not Found"). */
PX_EXTERN const char *px_http_reason(int status);

#ifdef __cplusplus
}
#endif
#endif
