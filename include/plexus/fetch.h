/* plexus — outbound HTTP: the one way plexus (webhooks) and handlers call external services.
 *
 * libcurl's multi interface driven by a worker's event loop: curl's sockets are watched by
 * the loop (px_io_t) and its timeouts are a loop timer, so a request never blocks the worker
 * and thousands can be in flight at once. HTTP/1.1, HTTP/2 and TLS (https://) as curl
 * provides them; only http:// and https:// URLs are accepted.
 *
 *   static void done(const px_fetch_res_t *res, void *ud) {
 *       if (res->status == 0) printf("%d: %.*s\n", res->http_status, (int)res->body.len,
 * res->body.ptr);
 *   }
 *   px_fetch_enable(server);                   // before px_server_start
 *   ...                                         // later, in a handler (on a worker):
 *   px_fetch_req_t r = {.method = "POST", .url = "http://127.0.0.1:9000/hook", .body = "{}",
 * .body_len = 2}; px_fetch(server, &r, done, NULL, NULL);
 *
 * Threads: a client belongs to one loop; every call on it and every callback happens on that
 * loop's thread. The outcome is always reported from the loop, never from inside the call
 * that started the request. */
#ifndef PLEXUS_FETCH_H
#define PLEXUS_FETCH_H

#include "plexus/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_fetch px_fetch_t;
typedef struct px_fetch_client px_fetch_client_t;

typedef struct px_fetch_req {
    const char *method;         /**< "GET" (when NULL), "POST", "PUT", "DELETE", "HEAD", ... */
    const char *url;            /**< http:// or https:// (other schemes fail with -EPROTO) */
    const char *const *headers; /**< "Name: value" strings ending with NULL; may be NULL */
    const void *body;           /**< request body (copied), or NULL */
    size_t body_len;
    uint64_t timeout_ms;         /**< whole transfer (0 = 30 s) */
    uint64_t connect_timeout_ms; /**< connect + TLS handshake (0 = 10 s) */
    size_t max_response;         /**< response body bound (0 = 1 MiB); over it: -EMSGSIZE */
    int follow_redirects;        /**< follow up to 5 redirects (default 0: no) */
} px_fetch_req_t;

typedef struct px_fetch_res {
    /** 0: a response came (whatever its code: see http_status). Else a negative errno:
     *  -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH (name not resolved or unreachable),
     *  -EMSGSIZE (body over max_response), -EPROTO (bad URL or scheme, protocol error),
     *  -EIO (anything else); `error` says more. */
    int status;
    int http_status;   /**< 200, 404, ...; 0 without a response */
    px_str_t body;     /**< valid during the callback */
    const char *error; /**< one line when status < 0, "" otherwise */
    uint64_t elapsed_ms;
    /* private */
    px_str_t _head;
} px_fetch_res_t;

/** Value of the response header `name` (case-insensitive; the last response's, after
 * redirects), valid during the callback; {NULL,0} if absent. */
PX_EXTERN px_str_t px_fetch_res_header(const px_fetch_res_t *res, const char *name);

typedef void (*px_fetch_cb)(const px_fetch_res_t *res, void *ud);

/** A client on `loop` (call on the loop's thread). NULL if libcurl cannot start. */
PX_EXTERN px_fetch_client_t *px_fetch_client_new(px_loop_t *loop);
/** Cancel what is in flight (no callback runs) and free; on the loop's thread, or after the
 * loop has stopped. Never inside one of the client's callbacks. Accepts NULL. */
PX_EXTERN void px_fetch_client_free(px_fetch_client_t *c);
/** Start a request; `cb(res, ud)` runs once, on the loop, when it is over (`out`, if not
 * NULL, receives a handle valid until then). The request's strings are copied. 0,
 * -EINVAL (no URL), -ENOMEM. */
PX_EXTERN int px_fetch_client_start(px_fetch_client_t *c, const px_fetch_req_t *req, px_fetch_cb cb,
                                    void *ud, px_fetch_t **out);
/** Requests in flight. */
PX_EXTERN size_t px_fetch_client_pending(const px_fetch_client_t *c);
/** Stop a request in flight: its callback will not run. */
PX_EXTERN void px_fetch_cancel(px_fetch_t *f);

/** Let px_fetch be used on `s`'s workers (before px_server_start; idempotent). Each worker
 * gets its own client on first use; they are freed with the server. */
PX_EXTERN int px_fetch_enable(px_server_t *s);
/** px_fetch_client_start on the calling worker's client. Call on a worker of `s` (a
 * handler, a worker message): -EPERM otherwise, -EINVAL if px_fetch_enable was not
 * called. */
PX_EXTERN int px_fetch(px_server_t *s, const px_fetch_req_t *req, px_fetch_cb cb, void *ud,
                       px_fetch_t **out);

#ifdef __cplusplus
}
#endif
#endif
