/* The protocol-neutral request: what a handler sees (accessors, parameters,
 * the per-request arena), the response API (px_respond*, px_res_header),
 * streams, abort and drain callbacks, the access log, and the HTTP module's
 * set-up (options, per-worker caches).
 *
 * Nothing here knows the wire: the request's owner (an HTTP/1.1 connection in
 * http1.c; an HTTP/2 stream later) writes heads and bodies through
 * req->ops. This file keeps the life-cycle rules every owner shares
 * (docs/internals/http.md): answered once, finished once, the owner told
 * (ops->done) only for a request finished outside its handler. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/http_int.h"

static int m_requests = -1, m_responses_4xx = -1, m_responses_5xx = -1;

void px_http_opts_init(px_http_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_request_line = 8192;
    o->max_header_size = 16384;
    o->max_headers = 100;
    o->max_body = 1u << 20;
    o->header_timeout_ms = 10000;
    o->keepalive_timeout_ms = 60000;
    o->max_requests = 0;
    o->access_log = 0;
    o->h2 = 1;
    o->h2_max_concurrent_streams = 100;
    o->h2_initial_window = 256u << 10;
    o->h2_max_frame_size = 16384;
}

const char *px_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default:
        return status < 300   ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

const char *px__http_error_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 416: return "range_not_satisfiable";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 503: return "service_unavailable";
    case 505: return "http_version_not_supported";
    default: return status >= 500 ? "internal_error" : "error";
    }
}

/* ---- set-up ------------------------------------------------------------------ */

static char http_module_key; /* px_server_module: the px__http_t */

static void http_free(void *p)
{
    px__http_t *h = p;
    px__router_free(h);
    for (unsigned i = 0; i < h->nworkers; i++)
        px__free(h->workers[i].hdrs);
    px__free(h->workers);
    px__free(h);
}

px__http_t *px__http_get(px_server_t *s)
{
    px__http_t *h = px_server_module(s, &http_module_key);
    if (h)
        return h;
    px_http_opts_t o;
    px_http_opts_init(&o);
    if (px_http_configure(s, &o) != 0)
        return NULL;
    return px_server_module(s, &http_module_key);
}

int px_http_configure(px_server_t *s, const px_http_opts_t *o)
{
    if (o->h2 && (o->h2_max_concurrent_streams < 1 || o->h2_max_concurrent_streams > 0x7fffffffu ||
                  o->h2_initial_window < 1 || o->h2_initial_window > 0x7fffffffu ||
                  o->h2_max_frame_size < 16384 || o->h2_max_frame_size > 16777215))
        return -EINVAL;
    px__http_t *h = px_server_module(s, &http_module_key);
    if (!h) {
        h = px__calloc(1, sizeof *h);
        if (!h)
            return -ENOMEM;
        h->server = s;
        px_workers_t *ws = px_server_workers(s);
        h->nworkers = px_workers_count(ws);
        h->workers = px__calloc(h->nworkers, sizeof *h->workers);
        if (!h->workers) {
            px__free(h);
            return -ENOMEM;
        }
        for (unsigned i = 0; i < h->nworkers; i++)
            h->workers[i].worker = px_workers_get(ws, i);
        if (px_server_module_set(s, &http_module_key, h, http_free) != 0) {
            http_free(h);
            return -ENOMEM;
        }
        px__http1_setup(h);
        m_requests = px_metric_register("plexus_http_requests_total", "HTTP requests handled",
                                        PX_METRIC_COUNTER);
        m_responses_4xx = px_metric_register("plexus_http_responses_4xx_total",
                                             "HTTP responses with a 4xx status", PX_METRIC_COUNTER);
        m_responses_5xx = px_metric_register("plexus_http_responses_5xx_total",
                                             "HTTP responses with a 5xx status", PX_METRIC_COUNTER);
    }
    for (unsigned i = 0; i < h->nworkers; i++) {
        px__free(h->workers[i].hdrs);
        h->workers[i].hdrs =
            px__calloc(o->max_headers ? o->max_headers : 1, sizeof(px__http_header_t));
        if (!h->workers[i].hdrs)
            return -ENOMEM;
    }
    h->opts = *o;
    h->limits.max_request_line = o->max_request_line;
    h->limits.max_header_bytes = o->max_header_size;
    h->limits.max_headers = o->max_headers;
    if (o->h2 && !h->h2_registered) {
        int r = px__h2_setup(h);
        if (r)
            return r;
        h->h2_registered = 1;
    }
    return 0;
}

/* Date header, formatted once per second per worker (px__http_date). */
void px__http_date_refresh(px__http_worker_t *hw, int64_t now)
{
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    hw->date_len = strftime(hw->date, sizeof hw->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    hw->date_sec = now;
}

/* ---- the request's life ------------------------------------------------------------ */

void px__req_init(px_req_t *req, const px__req_ops_t *ops, void *owner, px__http_t *http,
                  px__http_worker_t *hw)
{
    memset(req, 0, sizeof *req);
    req->ops = ops;
    req->owner = owner;
    req->http = http;
    req->hw = hw;
    px__arena_init(&req->arena, 0);
}

void px__req_dispose(px_req_t *req)
{
    px__arena_dispose(&req->arena);
}

void px__req_run(px_req_t *req)
{
    req->start_ns = req->http->opts.access_log ? px_now_ns() : 0;
    px_metric_add(m_requests, 1);
    px__router_dispatch(req->http, req);
}

void px__req_gone(px_req_t *req)
{
    req->aborted = 1;
    if (req->abort_cb)
        req->abort_cb(req, req->abort_ud);
}

static int dup_str(px__arena_t *a, px_str_t *s)
{
    if (!s->ptr)
        return 0;
    char *p = px__arena_memdup(a, s->ptr, s->len);
    if (!p)
        return -ENOMEM;
    s->ptr = p;
    return 0;
}

int px__req_detach(px_req_t *req)
{
    if (req->detached)
        return 0;
    px__arena_t *a = &req->arena;
    px__http1_request_t *h = &req->h;
    px__http_header_t *hdrs =
        px__arena_alloc(a, (h->num_headers ? h->num_headers : 1) * sizeof *hdrs);
    if (!hdrs)
        return -ENOMEM;
    int r = dup_str(a, &h->method) | dup_str(a, &h->target) | dup_str(a, &h->path) |
            dup_str(a, &h->query) | dup_str(a, &h->host) | dup_str(a, &h->upgrade_proto);
    /* A body the owner read after its head stays the owner's until the request ends. */
    if (!req->body_kept)
        r |= dup_str(a, &req->body);
    for (size_t i = 0; i < h->num_headers; i++) {
        hdrs[i] = h->headers[i];
        r |= dup_str(a, &hdrs[i].name) | dup_str(a, &hdrs[i].value);
    }
    h->headers = hdrs;
    /* Params were decoded into the arena already, or point into the path. */
    for (unsigned i = 0; i < req->nparams; i++)
        r |= dup_str(a, &req->param_values[i]);
    req->detached = 1;
    return r ? -ENOMEM : 0;
}

/* ---- the access log ------------------------------------------------------------------ */

/* A request span (target, method) for a log line, with '"' and '\\' escaped (both
 * are 0x21-0x7E only, so nothing else needs it): a client cannot forge fields of
 * the JSON access log. Cut (with "...") to fit `cap`, so the line stays within
 * the logger's message buffer and remains valid JSON. */
static void log_span(px_str_t t, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < t.len; i++) {
        if (n + 6 > cap) { /* room for an escaped byte, "..." and the NUL */
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        unsigned char ch = (unsigned char)t.ptr[i];
        if (ch == '"' || ch == '\\')
            out[n++] = '\\';
        out[n++] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch; /* a rejected head may hold anything */
    }
    if (n == 0)
        out[n++] = '-';
    out[n] = '\0';
}

/* The client's address. Behind Phusion Passenger (a Unix socket peer: Passenger's, the
 * only one that connects there) the connection's peer says nothing, and the front server
 * names the client: `!~Passenger-Client-Address` (set by Passenger, which drops such
 * headers from clients), else the last X-Forwarded-For entry (the nearest proxy's). From a
 * TCP peer neither is believed: any client can send them. */
static int client_address(const px_req_t *req, char *buf, size_t len)
{
    int r = req->ops->peer(req, buf, len);
    if (r != 0 || strcmp(buf, "unix") != 0)
        return r;
    px_str_t best = {NULL, 0};
    int from_passenger = 0;
    for (size_t i = 0; i < req->h.num_headers; i++) {
        const px__http_header_t *hd = &req->h.headers[i];
        if (hd->name.len == 26 &&
            strncasecmp(hd->name.ptr, "!~Passenger-Client-Address", 26) == 0) {
            best = hd->value;
            from_passenger = 1;
        } else if (!from_passenger && hd->name.len == 15 &&
                   strncasecmp(hd->name.ptr, "X-Forwarded-For", 15) == 0) {
            best = hd->value;
            const char *comma = memrchr(best.ptr, ',', best.len);
            if (comma) {
                best.len -= (size_t)(comma + 1 - best.ptr);
                best.ptr = comma + 1;
            }
        }
    }
    while (best.len && (best.ptr[0] == ' ' || best.ptr[0] == '\t')) {
        best.ptr++;
        best.len--;
    }
    while (best.len && (best.ptr[best.len - 1] == ' ' || best.ptr[best.len - 1] == '\t'))
        best.len--;
    if (!best.len || best.len >= len)
        return 0;
    for (size_t i = 0; i < best.len; i++) { /* an IPv4 or IPv6 address, nothing else */
        char c = best.ptr[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == '.' || c == ':' || c == '[' || c == ']'))
            return 0;
    }
    memcpy(buf, best.ptr, best.len);
    buf[best.len] = '\0';
    return 0;
}

void px__req_log(px_req_t *req)
{
    int mode = req->http->opts.access_log;
    if (!mode)
        return;
    char peer[64] = "-";
    client_address(req, peer, sizeof peer);
    char method[128], target[1024];
    log_span(req->h.method, method, sizeof method);
    log_span(req->h.target, target, sizeof target);
    double ms = req->start_ns ? (double)(px_now_ns() - req->start_ns) / 1e6 : 0.0;
    if (mode == 2)
        px_log(PX_LOG_INFO,
               "{\"peer\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes\":%llu,"
               "\"ms\":%.3f}",
               peer, method, target, req->status, (unsigned long long)req->res_bytes, ms);
    else
        px_log(PX_LOG_INFO, "%s \"%s %s HTTP/%u.%d\" %d %llu %.3fms", peer, method, target,
               (unsigned)req->ops->http_major, req->h.minor_version, req->status,
               (unsigned long long)req->res_bytes, ms);
}

/* ---- answering ----------------------------------------------------------------------- */

/* The request is finished: an owner waiting for it (async) goes on now; the
 * handler's caller sees `finished` otherwise. */
static void finish(px_req_t *req)
{
    req->finished = 1;
    if (req->async)
        req->ops->done(req);
}

static int begin_answer(px_req_t *req)
{
    if (req->responded)
        return -EALREADY;
    req->responded = 1;
    if (req->aborted) {
        finish(req);
        return -EPIPE;
    }
    return 0;
}

/* The status that goes out (a handler bug must not produce a malformed status
 * line), counted. */
static int answer_status(px_req_t *req, int status)
{
    if (status < 100 || status > 999)
        status = 500;
    req->status = status;
    if (status >= 500)
        px_metric_add(m_responses_5xx, 1);
    else if (status >= 400)
        px_metric_add(m_responses_4xx, 1);
    return status;
}

static int finish_answer(px_req_t *req, int r)
{
    if (r) {
        /* Part of the response may be queued: never leave a head without its body
         * (the next response would land where the body belongs). */
        px_log(PX_LOG_WARN, "cannot queue the response to %.*s %.*s: %s",
               (int)(req->h.method.len < 32 ? req->h.method.len : 32), req->h.method.ptr,
               (int)(req->h.path.len < 256 ? req->h.path.len : 256), req->h.path.ptr,
               px_strerror(r));
        req->ops->abort(req);
    }
    finish(req);
    return r;
}

int px_respond(px_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    int r = begin_answer(req);
    if (r)
        return r;
    status = answer_status(req, status);
    int nobody = req->h.is_head || status == 204 || status == 304 || status < 200;
    r = req->ops->head(req, status, content_type,
                       status == 204 || status == 304 ? PX__CLEN_NONE : (int64_t)len,
                       nobody ? NULL : body, nobody ? 0 : len);
    return finish_answer(req, r);
}

int px_respond_slice(px_req_t *req, int status, const char *content_type, px_slice_t *body)
{
    int r = begin_answer(req);
    if (r)
        return r;
    status = answer_status(req, status);
    r = req->ops->head(req, status, content_type, (int64_t)body->len, NULL, 0);
    if (r == 0 && !req->h.is_head)
        r = req->ops->body(req, NULL, body, 0, body->len);
    if (!req->h.is_head)
        req->res_bytes += body->len;
    return finish_answer(req, r);
}

int px_respond_error(px_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* JSON-escape the message (it may quote a path). */
    char body[1400];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"",
                                code ? code : px__http_error_code(status));
    for (const char *p = msg; *p && n < sizeof body - 8; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            body[n++] = '\\';
            body[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(body + n, sizeof body - n, "\\u%04x", ch);
        } else if (ch >= 0x80) {
            body[n++] = '?'; /* request bytes need not be UTF-8: keep the JSON valid */
        } else {
            body[n++] = (char)ch;
        }
    }
    body[n++] = '"';
    body[n++] = '}';
    return px_respond(req, status, "application/json", body, n);
}

int px_respond_file(px_req_t *req, int status, const char *content_type, int fd, uint64_t off,
                    uint64_t len)
{
    int r = begin_answer(req);
    if (r) {
        close(fd);
        return r;
    }
    status = answer_status(req, status);
    r = req->ops->head(req, status, content_type, (int64_t)len, NULL, 0);
    if (r == 0 && !req->h.is_head && len)
        r = req->ops->file(req, fd, off, len);
    else
        close(fd);
    if (!req->h.is_head)
        req->res_bytes += len;
    return finish_answer(req, r);
}

int px_res_header(px_req_t *req, const char *name, const char *value)
{
    if (req->responded)
        return -EALREADY;
    size_t nl = strlen(name), vl = strlen(value);
    /* Never let a caller's CR/LF split the response. */
    for (size_t i = 0; i < nl; i++)
        if (name[i] == '\r' || name[i] == '\n' || name[i] == ':')
            return -EINVAL;
    for (size_t i = 0; i < vl; i++)
        if (value[i] == '\r' || value[i] == '\n')
            return -EINVAL;
    px__arena_t *a = &req->arena;
    px__res_header_t *rh = px__arena_alloc(a, sizeof *rh);
    char *n = px__arena_memdup(a, name, nl);
    char *v = px__arena_memdup(a, value, vl);
    if (!rh || !n || !v)
        return -ENOMEM;
    rh->next = NULL;
    rh->name = (px_str_t){n, nl};
    rh->value = (px_str_t){v, vl};
    if (req->res_headers_tail)
        req->res_headers_tail->next = rh;
    else
        req->res_headers = rh;
    req->res_headers_tail = rh;
    return 0;
}

void px_req_abort(px_req_t *req)
{
    if (!req->finished && !req->aborted)
        req->ops->abort(req);
}

/* ---- streams ----------------------------------------------------------------------- */

int px_stream_start(px_req_t *req, int status, const char *content_type)
{
    int r = begin_answer(req);
    if (r)
        return r;
    status = answer_status(req, status);
    if (req->h.is_head) {
        /* The head a GET would get, and the request is over: there is no stream. */
        req->abort_cb = NULL;
        r = req->ops->head(req, status, content_type, PX__CLEN_STREAM, NULL, 0);
        finish_answer(req, r);
        return r ? r : 1;
    }
    if (px__req_detach(req) != 0) {
        req->abort_cb = NULL;
        return finish_answer(req, -ENOMEM);
    }
    req->streaming = 1;
    r = req->ops->head(req, status, content_type, PX__CLEN_STREAM, NULL, 0);
    if (r) {
        /* No stream: the request ends here (the connection closes) and its
         * owner, told by the return value, hears nothing more from it. */
        req->streaming = 0;
        req->abort_cb = NULL;
        return finish_answer(req, r);
    }
    return 0;
}

static int stream_chunk(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len)
{
    if (!req->streaming || req->finished)
        return -EINVAL;
    if (req->aborted)
        return -EPIPE;
    if (len == 0)
        return 0;
    return req->ops->body(req, p, sl, off, len);
}

int px_stream_write(px_req_t *req, const void *p, size_t len)
{
    return stream_chunk(req, p, NULL, 0, len);
}

int px_stream_write_slice(px_req_t *req, px_slice_t *s, size_t off, size_t len)
{
    return stream_chunk(req, NULL, s, off, len);
}

void px_stream_on_drain(px_req_t *req, void (*cb)(px_req_t *, void *), void *ud)
{
    req->drain_cb = cb;
    req->drain_ud = ud;
}

size_t px_stream_pending(const px_req_t *req)
{
    return req->aborted ? 0 : req->ops->pending(req);
}

int px_stream_end(px_req_t *req)
{
    if (!req->streaming || req->finished)
        return -EINVAL;
    if (!req->aborted)
        req->ops->end(req);
    finish(req);
    return 0;
}

/* ---- upgrade ------------------------------------------------------------------------- */

int px__req_upgrade(px_req_t *req, const px_protocol_t *proto, void *state, px_conn_t **out)
{
    if (!req->ops->upgrade)
        return -ENOTSUP;
    return req->ops->upgrade(req, proto, state, out);
}

int px__req_is_tunnel(const px_req_t *req)
{
    return req->ops->tunnel && req->h.upgrade;
}

int px__req_tunnel(px_req_t *req, const px__tunnel_cb_t *cb, void *ud, px__tunnel_t **out)
{
    if (!px__req_is_tunnel(req))
        return -ENOTSUP;
    if (req->responded)
        return -EALREADY;
    return req->ops->tunnel(req, cb, ud, out);
}

/* ---- request accessors ----------------------------------------------------------------- */

px_str_t px_req_method(const px_req_t *req)
{
    return req->h.method;
}

px_str_t px_req_path(const px_req_t *req)
{
    return req->h.path;
}

px_str_t px_req_query(const px_req_t *req)
{
    return req->h.query;
}

px_str_t px_req_body(const px_req_t *req)
{
    return req->body;
}

int px_req_http_minor(const px_req_t *req)
{
    return req->h.minor_version;
}

px_worker_t *px_req_worker(const px_req_t *req)
{
    return req->hw->worker;
}

int px_req_peer(const px_req_t *req, char *buf, size_t len)
{
    return client_address(req, buf, len);
}

void *px_req_alloc(px_req_t *req, size_t n)
{
    return px__arena_alloc(&req->arena, n);
}

void px_req_on_abort(px_req_t *req, void (*cb)(px_req_t *, void *), void *ud)
{
    req->abort_cb = cb;
    req->abort_ud = ud;
}

int px_req_aborted(const px_req_t *req)
{
    return req->aborted;
}

px_str_t px_req_header(const px_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->h.num_headers; i++) {
        const px__http_header_t *hd = &req->h.headers[i];
        if (hd->name.len == n && strncasecmp(hd->name.ptr, name, n) == 0)
            return hd->value;
    }
    return (px_str_t){NULL, 0};
}

size_t px_req_header_count(const px_req_t *req)
{
    return req->h.num_headers;
}

int px_req_header_at(const px_req_t *req, size_t i, px_str_t *name, px_str_t *value)
{
    if (i >= req->h.num_headers)
        return -ENOENT;
    *name = req->h.headers[i].name;
    *value = req->h.headers[i].value;
    return 0;
}

px_str_t px_req_param(const px_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < req->nparams; i++)
        if (req->param_names[i].len == n && memcmp(req->param_names[i].ptr, name, n) == 0)
            return req->param_values[i];
    return (px_str_t){NULL, 0};
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int px__http_decode(px__arena_t *a, px_str_t in, px_str_t *out, int plus_space)
{
    if (!memchr(in.ptr, '%', in.len) && !(plus_space && memchr(in.ptr, '+', in.len))) {
        *out = in;
        return 0;
    }
    char *d = px__arena_alloc(a, in.len + 1);
    if (!d)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < in.len; i++) {
        char ch = in.ptr[i];
        if (ch == '%') {
            int hi = i + 1 < in.len ? hexval((unsigned char)in.ptr[i + 1]) : -1;
            int lo = i + 2 < in.len ? hexval((unsigned char)in.ptr[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -EINVAL;
            d[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (ch == '+' && plus_space) {
            d[n++] = ' ';
        } else {
            d[n++] = ch;
        }
    }
    d[n] = '\0';
    *out = (px_str_t){d, n};
    return 0;
}

int px_req_query_param(px_req_t *req, const char *name, px_str_t *out)
{
    px_str_t q = req->h.query;
    size_t nl = strlen(name);
    size_t i = 0;
    while (q.ptr && i <= q.len) {
        size_t end = i;
        while (end < q.len && q.ptr[end] != '&')
            end++;
        const char *kv = q.ptr + i;
        size_t kvlen = end - i;
        const char *eq = memchr(kv, '=', kvlen);
        size_t klen = eq ? (size_t)(eq - kv) : kvlen;
        if (klen == nl && memcmp(kv, name, nl) == 0) {
            px_str_t raw = eq ? (px_str_t){eq + 1, kvlen - klen - 1} : (px_str_t){kv + kvlen, 0};
            return px__http_decode(&req->arena, raw, out, 1) == 0 ? 1 : -EINVAL;
        }
        i = end + 1;
    }
    *out = (px_str_t){NULL, 0};
    return 0;
}
