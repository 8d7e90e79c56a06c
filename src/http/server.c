/* HTTP/1.1 server: the protocol callbacks, request life cycle and responses.
 *
 * Fast path: a request whose head and body are in the bytes just read is
 * parsed in place (spans point into the read buffer), handled, and answered
 * into the connection's output queue; every request of a pipelined batch is
 * answered before the single writev at the end of the loop iteration. Only a
 * request that outlives the read (a body arriving later, or an async handler)
 * is copied ("detached") into the per-request arena. */
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

static const px_protocol_t http_protocol;

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

static const char *error_code(int status)
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

static void *on_accept(px_conn_t *c, void *ud);

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
    px__http_t *h = px_server_module(s, &http_module_key);
    if (!h) {
        h = px__calloc(1, sizeof *h);
        if (!h)
            return -ENOMEM;
        h->server = s;
        h->nworkers = px_workers_count(px_server_workers(s));
        h->workers = px__calloc(h->nworkers, sizeof *h->workers);
        if (!h->workers) {
            px__free(h);
            return -ENOMEM;
        }
        if (px_server_module_set(s, &http_module_key, h, http_free) != 0) {
            http_free(h);
            return -ENOMEM;
        }
        px_server_add_protocol(s, "http/1.1", &http_protocol, on_accept, h);
        static const char reject[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            "Content-Length: 82\r\nConnection: close\r\n\r\n"
            "{\"error\":\"service_unavailable\",\"message\":\"too many connections, try again "
            "later\"}";
        px_server_set_reject_message(s, reject, sizeof reject - 1);
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
            px__calloc(o->max_headers ? o->max_headers : 1, sizeof(px_http_header_t));
        if (!h->workers[i].hdrs)
            return -ENOMEM;
    }
    h->opts = *o;
    h->limits.max_request_line = o->max_request_line;
    h->limits.max_header_bytes = o->max_header_size;
    h->limits.max_headers = o->max_headers;
    return 0;
}

/* ---- connection state ---------------------------------------------------------- */

static void req_reset(px__http_conn_t *hc)
{
    memset(&hc->req, 0, sizeof hc->req);
    hc->req.hc = hc;
    px__arena_reset(&hc->arena);
}

/* Idle time allowed between requests: the keep-alive timeout, or the server's
 * general idle timeout (--idle-timeout) if that is shorter. */
static uint64_t keepalive_ms(const px__http_t *h)
{
    uint64_t ka = h->opts.keepalive_timeout_ms;
    uint64_t idle = px_server_opts(h->server)->idle_timeout_ms;
    return idle && (ka == 0 || idle < ka) ? idle : ka;
}

static void *on_accept(px_conn_t *c, void *ud)
{
    px__http_t *h = ud;
    px__http_conn_t *hc = px__calloc(1, sizeof *hc);
    if (!hc) {
        px_conn_abort(c);
        return NULL;
    }
    hc->c = c;
    hc->http = h;
    hc->hw = &h->workers[px_worker_id(px_conn_worker(c))];
    px_http1_parser_init(&hc->parser);
    px__arena_init(&hc->arena, 0);
    px_buf_init(&hc->body, 0);
    hc->req.hc = hc;
    hc->state = HC_HEAD;
    /* Enough for the longest head plus a body that arrives with it. */
    px_conn_set_read_limit(c, h->opts.max_header_size + 1);
    px_conn_set_timeout(c, keepalive_ms(h));
    return hc;
}

static void hc_free(px__http_conn_t *hc)
{
    px__arena_dispose(&hc->arena);
    px_buf_dispose(&hc->body);
    px__free(hc);
}

/* Date header, formatted once per second per worker. */
static const char *date_line(px__http_conn_t *hc, size_t *len)
{
    px__http_worker_t *hw = hc->hw;
    int64_t now = hc->c ? px_loop_wall_time(px_conn_loop(hc->c)) : (int64_t)time(NULL);
    if (now != hw->date_sec) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        hw->date_len =
            strftime(hw->date, sizeof hw->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        hw->date_sec = now;
    }
    *len = hw->date_len;
    return hw->date;
}

/* ---- detaching: make a request outlive the read buffer -------------------------- */

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

static int detach(px_req_t *req)
{
    if (req->detached)
        return 0;
    px__arena_t *a = &req->hc->arena;
    px_http1_request_t *h = &req->h;
    px_http_header_t *hdrs =
        px__arena_alloc(a, (h->num_headers ? h->num_headers : 1) * sizeof *hdrs);
    if (!hdrs)
        return -ENOMEM;
    int r = dup_str(a, &h->method) | dup_str(a, &h->target) | dup_str(a, &h->path) |
            dup_str(a, &h->query) | dup_str(a, &h->host) | dup_str(a, &h->upgrade_proto);
    /* A body read after its head already lives in hc->body until the request ends. */
    if (!req->hc->body_owned)
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

/* ---- writing responses ------------------------------------------------------------ */

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

static void access_log(px_req_t *req)
{
    px__http_conn_t *hc = req->hc;
    if (!hc->http->opts.access_log || !hc->c)
        return;
    char peer[64] = "-";
    px_conn_peer_name(hc->c, peer, sizeof peer);
    char method[128], target[1024];
    log_span(req->h.method, method, sizeof method);
    log_span(req->h.target, target, sizeof target);
    double ms = req->start_ns ? (double)(px_now_ns() - req->start_ns) / 1e6 : 0.0;
    if (hc->http->opts.access_log == 2)
        px_log(PX_LOG_INFO,
               "{\"peer\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes\":%llu,"
               "\"ms\":%.3f}",
               peer, method, target, req->status, (unsigned long long)req->res_bytes, ms);
    else
        px_log(PX_LOG_INFO, "%s \"%s %s HTTP/1.%d\" %d %llu %.3fms", peer, method, target,
               req->h.minor_version, req->status, (unsigned long long)req->res_bytes, ms);
}

/* Write status line and headers. `clen` < 0: no Content-Length (streams). */
static int write_head(px_req_t *req, int status, const char *ctype, int64_t clen, const char *extra,
                      const void *body, size_t blen)
{
    px__http_conn_t *hc = req->hc;
    px__http_t *h = hc->http;
    if (status < 100 || status > 999)
        status = 500; /* a handler bug must not produce a malformed status line */
    req->status = status;
    req->keep_alive =
        req->h.keep_alive && !hc->eof && !hc->close_after && status != 400 &&
        !(h->opts.max_requests && hc->nreq >= h->opts.max_requests) &&
        !(status == 413 || status == 408 || status == 431 || status == 414 || status == 417);
    if (status >= 500)
        px_metric_add(m_responses_5xx, 1);
    else if (status >= 400)
        px_metric_add(m_responses_4xx, 1);

    /* Built with memcpy, not snprintf: this runs once per request. Every piece is
     * bounded so the head never overflows (pieces from handlers are checked). */
    char head[1024];
    size_t len = 0, dlen;
    const char *date = date_line(hc, &dlen);
    const char *reason = px_http_reason(status);
    size_t rl = strlen(reason), cl = ctype ? strlen(ctype) : 0, el = extra ? strlen(extra) : 0;
    if (cl > 256 || el > 512)
        return -ENOBUFS;
    memcpy(head, "HTTP/1.1 ", 9);
    head[9] = (char)('0' + status / 100 % 10);
    head[10] = (char)('0' + status / 10 % 10);
    head[11] = (char)('0' + status % 10);
    head[12] = ' ';
    len = 13;
    memcpy(head + len, reason, rl);
    len += rl;
    memcpy(head + len, "\r\nServer: plexus\r\n", 18);
    len += 18;
    memcpy(head + len, date, dlen);
    len += dlen;
    if (ctype) {
        memcpy(head + len, "Content-Type: ", 14);
        memcpy(head + len + 14, ctype, cl);
        memcpy(head + len + 14 + cl, "\r\n", 2);
        len += 16 + cl;
    }
    if (clen >= 0) {
        memcpy(head + len, "Content-Length: ", 16);
        len += 16;
        char digits[24];
        size_t nd = 0;
        uint64_t v = (uint64_t)clen;
        do
            digits[nd++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        while (nd)
            head[len++] = digits[--nd];
        head[len++] = '\r';
        head[len++] = '\n';
    }
    if (extra) {
        memcpy(head + len, extra, el);
        len += el;
    }
    if (!req->keep_alive) {
        memcpy(head + len, "Connection: close\r\n", 19);
        len += 19;
    } else if (req->h.minor_version == 0) {
        memcpy(head + len, "Connection: keep-alive\r\n", 24);
        len += 24;
    }
    if (len >= sizeof head - 2)
        return -ENOBUFS;
    int r;
    size_t written = 0; /* head bytes already queued (access log) */
    if (req->res_headers) {
        /* User headers can be long: write what we have, then them. */
        if ((r = px_conn_write_nocap(hc->c, head, len)) != 0)
            return r;
        written = len;
        for (px__res_header_t *rh = req->res_headers; rh; rh = rh->next) {
            r = px_conn_write_nocap(hc->c, rh->name.ptr, rh->name.len);
            r |= px_conn_write_nocap(hc->c, ": ", 2);
            r |= px_conn_write_nocap(hc->c, rh->value.ptr, rh->value.len);
            r |= px_conn_write_nocap(hc->c, "\r\n", 2);
            if (r)
                return r;
            written += rh->name.len + rh->value.len + 4;
        }
        len = 0;
    }
    head[len++] = '\r';
    head[len++] = '\n';
    req->res_bytes = written + len + blen;
    if (body && blen && blen <= sizeof head - len) {
        memcpy(head + len, body, blen); /* small body: one copy, one queue entry */
        return px_conn_write_nocap(hc->c, head, len + blen);
    }
    r = px_conn_write_nocap(hc->c, head, len);
    if (r == 0 && body && blen)
        r = px_conn_write_nocap(hc->c, body, blen);
    return r;
}

static void process(px__http_conn_t *hc, char *data, size_t len, size_t *used);

/* The answer to the current request is complete: log, then go on with the
 * connection (next pipelined request, keep-alive wait, or close). */
static void request_done(px_req_t *req)
{
    px__http_conn_t *hc = req->hc;
    req->finished = 1;
    if (!hc->c) {
        /* The connection went away while the request was outstanding. */
        hc_free(hc);
        return;
    }
    access_log(req);
    int keep = req->keep_alive && !hc->discarded;
    hc->discarded = 0;
    int was_async = hc->state == HC_ASYNC || hc->state == HC_STREAM;
    req_reset(hc);
    px_buf_dispose(&hc->body);
    hc->body_owned = 0;
    px_http1_parser_init(&hc->parser);
    hc->own_hdrs = 0;
    hc->state = HC_HEAD;
    if (!keep) {
        px_conn_close(hc->c);
        return;
    }
    px_conn_set_read_limit(hc->c, hc->http->opts.max_header_size + 1);
    px_conn_set_timeout(hc->c, keepalive_ms(hc->http));
    hc->head_timer = 0;
    if (was_async)
        px_conn_pause_read(hc->c, 0); /* re-dispatches pipelined bytes kept meanwhile */
}

static int begin_answer(px_req_t *req)
{
    if (req->responded)
        return -EALREADY;
    req->responded = 1;
    if (!req->hc->c || req->aborted) {
        request_done(req);
        return -EPIPE;
    }
    return 0;
}

static int finish_answer(px_req_t *req, int r)
{
    if (r) {
        /* Part of the response may be queued: never leave a head without its body
         * (the next response would land where the body belongs). */
        px_log(PX_LOG_WARN, "conn %llu: cannot queue response: %s",
               (unsigned long long)px_conn_id(req->hc->c), px_strerror(r));
        req->keep_alive = 0;
        px_conn_abort(req->hc->c);
    }
    /* Sync answers are finished by the parse loop; async ones here. */
    if (req->hc->state == HC_ASYNC)
        request_done(req);
    return r;
}

static char *extra_headers(px_req_t *req, const char *extra)
{
    PX_UNUSED(req);
    return (char *)extra;
}

int px_respond(px_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    int r = begin_answer(req);
    if (r)
        return r;
    int nobody = req->h.is_head || status == 204 || status == 304 || status < 200;
    r = write_head(req, status, content_type, status == 204 || status == 304 ? -1 : (int64_t)len,
                   extra_headers(req, NULL), nobody ? NULL : body, nobody ? 0 : len);
    return finish_answer(req, r);
}

int px_respond_slice(px_req_t *req, int status, const char *content_type, px_slice_t *body)
{
    int r = begin_answer(req);
    if (r)
        return r;
    r = write_head(req, status, content_type, body->len, NULL, NULL, 0);
    if (r == 0 && !req->h.is_head)
        r = px_conn_write_slice_nocap(req->hc->c, body, 0, body->len);
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
                                code ? code : error_code(status));
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
    r = write_head(req, status, content_type, (int64_t)len, NULL, NULL, 0);
    if (r == 0 && !req->h.is_head && len)
        r = px_conn_sendfile(req->hc->c, fd, off, len);
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
    px__arena_t *a = &req->hc->arena;
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

/* ---- streams ----------------------------------------------------------------------- */

int px_stream_start(px_req_t *req, int status, const char *content_type)
{
    int r = begin_answer(req);
    if (r)
        return r;
    px__http_conn_t *hc = req->hc;
    const char *extra = req->h.minor_version >= 1
                            ? "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
                            : "Cache-Control: no-cache\r\n";
    if (req->h.is_head) {
        /* The head a GET would get, and the request is over: there is no stream. */
        req->abort_cb = NULL;
        r = write_head(req, status, content_type, -1, extra, NULL, 0);
        finish_answer(req, r);
        return r ? r : 1;
    }
    int was_async = hc->state == HC_ASYNC;
    if (detach(req) != 0) {
        req->abort_cb = NULL;
        px_conn_abort(hc->c);
        return -ENOMEM;
    }
    req->streaming = 1;
    req->chunked_out = req->h.minor_version >= 1;
    hc->state = HC_STREAM;
    /* Without chunked framing the end of the stream is the end of the connection. A
     * chunked one may be followed by the next request, unless client bytes were
     * discarded meanwhile (a stream started by the handler reads on, to see EOF). */
    if (!req->chunked_out)
        hc->close_after = 1;
    r = write_head(req, status, content_type, -1, extra, NULL, 0);
    if (r) {
        /* No stream: the request ends here (the connection closes) and its
         * owner, told by the return value, hears nothing more from it. */
        req->streaming = 0;
        req->keep_alive = 0;
        req->abort_cb = NULL;
        hc->state = was_async ? HC_ASYNC : HC_HEAD;
        return finish_answer(req, r);
    }
    px_conn_set_timeout(hc->c, 0);
    px_conn_set_read_limit(hc->c, 4096);
    return 0;
}

/* Queue one chunk (its framing, then `len` bytes from `p` or from slice `sl`) all or
 * nothing: -ENOBUFS leaves the stream intact; a failure half-way kills the connection
 * rather than leave a broken chunk. */
static int stream_chunk(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len)
{
    px__http_conn_t *hc = req->hc;
    if (!req->streaming || req->finished)
        return -EINVAL;
    if (!hc->c || req->aborted)
        return -EPIPE;
    if (len == 0)
        return 0;
    char hdr[24];
    size_t hn = req->chunked_out ? (size_t)snprintf(hdr, sizeof hdr, "%zx\r\n", len) : 0;
    size_t tn = req->chunked_out ? 2 : 0;
    if (px_conn_room(hc->c) < hn + len + tn)
        return px_conn_is_closing(hc->c) ? -EPIPE : -ENOBUFS;
    int r = hn ? px_conn_write(hc->c, hdr, hn) : 0;
    if (r == 0)
        r = sl ? px_conn_write_slice(hc->c, sl, off, len) : px_conn_write(hc->c, p, len);
    if (r == 0 && tn)
        r = px_conn_write(hc->c, "\r\n", 2);
    if (r)
        px_conn_abort(hc->c);
    return r;
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
    return req->hc->c ? px_conn_pending(req->hc->c) : 0;
}

int px_stream_end(px_req_t *req)
{
    px__http_conn_t *hc = req->hc;
    if (!req->streaming || req->finished)
        return -EINVAL;
    if (hc->c && !req->aborted && req->chunked_out)
        px_conn_write(hc->c, "0\r\n\r\n", 5);
    request_done(req);
    return 0;
}

/* ---- upgrade ------------------------------------------------------------------------- */

int px_req_upgrade(px_req_t *req, const px_protocol_t *proto, void *state)
{
    px__http_conn_t *hc = req->hc;
    if (req->responded || !hc->c || hc->state != HC_HEAD)
        return -EINVAL;
    req->responded = 1;
    req->upgraded = 1;
    req->status = 101;
    access_log(req);
    px_conn_set_protocol(hc->c, proto, state);
    return 0;
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

px_conn_t *px_req_conn(const px_req_t *req)
{
    return req->hc->c;
}

void *px_req_alloc(px_req_t *req, size_t n)
{
    return px__arena_alloc(&req->hc->arena, n);
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
        const px_http_header_t *hd = &req->h.headers[i];
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

/* Percent-decode s into the arena ('+' is a space in queries). */
int px__http_decode(px__arena_t *a, px_str_t in, px_str_t *out, int plus_space);
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
            if (i + 2 >= in.len + 0 && i + 2 > in.len - 1 + 1)
                return -EINVAL;
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
            return px__http_decode(&req->hc->arena, raw, out, 1) == 0 ? 1 : -EINVAL;
        }
        i = end + 1;
    }
    *out = (px_str_t){NULL, 0};
    return 0;
}

/* ---- the protocol ----------------------------------------------------------------------- */

/* Log a request answered outside the handler path (rejected, 413/417 early).
 * Without a complete head, method and target are not trustworthy: "-". */
static void log_rejected(px_req_t *req, int head_ok)
{
    if (!head_ok) {
        req->h.method = req->h.target = (px_str_t){NULL, 0};
        req->h.minor_version = 1;
    }
    access_log(req);
}

static void reject(px__http_conn_t *hc, int status, int head_ok, const char *msg)
{
    px_req_t *req = &hc->req;
    /* The head may be unparsed: answer HTTP/1.1 and close. */
    req->h.keep_alive = 0;
    req->h.is_head = 0;
    hc->state = HC_HEAD;
    px_respond_error(req, status, NULL, "%s", msg);
    log_rejected(req, head_ok);
    if (!px_conn_is_closing(hc->c))
        px_conn_close(hc->c);
}

static void run_handler(px__http_conn_t *hc)
{
    px_req_t *req = &hc->req;
    req->start_ns = hc->http->opts.access_log ? px_now_ns() : 0;
    px_metric_add(m_requests, 1);
    px__router_dispatch(hc->http, req);
}

/* Body bytes for a detached request (HC_BODY). Returns bytes used; sets *done. */
static ssize_t feed_body(px__http_conn_t *hc, char *data, size_t len, int *done)
{
    *done = 0;
    if (len == 0)
        return 0; /* the head came alone: hc->body has no storage yet */
    if (!hc->body_chunked) {
        size_t n = len < hc->body_left ? len : (size_t)hc->body_left;
        if (px_buf_append(&hc->body, data, n) != 0)
            return -1;
        hc->body_left -= n;
        *done = hc->body_left == 0;
        return (ssize_t)n;
    }
    /* Chunked: append raw bytes after the decoded ones, decode them in place. */
    size_t decoded = px_buf_size(&hc->body);
    size_t room_max = hc->http->opts.max_body + 64 * 1024; /* framing overhead allowance */
    if (decoded + len > room_max) {
        reject(hc, 413, 1, "chunked request body exceeds the limit");
        return -1;
    }
    if (px_buf_append(&hc->body, data, len) != 0)
        return -1;
    size_t n = len;
    ssize_t r = px_http1_decode_chunked(&hc->chunked, px_buf_head(&hc->body) + decoded, &n);
    if (r == PX_PARSE_ERROR) {
        reject(hc, 400, 1, hc->chunked.error ? hc->chunked.error : "bad chunked encoding");
        return -1;
    }
    hc->body.len = hc->body.off + decoded + n;
    if (px_buf_size(&hc->body) > hc->http->opts.max_body) {
        reject(hc, 413, 1, "request body exceeds the limit");
        return -1;
    }
    if (r == PX_PARSE_INCOMPLETE)
        return (ssize_t)len;
    *done = 1;
    return (ssize_t)(len - (size_t)r); /* r bytes after the body belong to the next request */
}

/* Handle complete requests in data[0..len); *used gets the bytes consumed. */
static void process(px__http_conn_t *hc, char *data, size_t len, size_t *used)
{
    px__http_t *h = hc->http;
    size_t pos = 0;
    while (hc->c && !px_conn_is_closing(hc->c)) {
        px_req_t *req = &hc->req;
        if (hc->state == HC_STREAM) {
            /* A stream's client has nothing more to say: discard (and so the
             * connection cannot be kept alive after the stream). */
            if (pos < len)
                hc->discarded = 1;
            pos = len;
            break;
        }
        if (hc->state == HC_ASYNC)
            break;
        if (hc->state == HC_BODY) {
            int done;
            ssize_t r = feed_body(hc, data + pos, len - pos, &done);
            if (r < 0) {
                pos = len;
                break;
            }
            pos += (size_t)r;
            if (!done)
                break;
            req->body = (px_str_t){px_buf_head(&hc->body), px_buf_size(&hc->body)};
            hc->body_owned = 1;
        } else {
            if (pos == len)
                break;
            if (px_conn_room(hc->c) == 0) {
                /* Answers wait unread past the output budget: read no further request
                 * until they drain (http_on_drain). Each answer is queued whole, so
                 * the backlog stays within the budget plus one answer. */
                hc->out_paused = 1;
                px_conn_pause_read(hc->c, 1);
                break;
            }
            if (!hc->own_hdrs)
                req->h.headers = hc->hw->hdrs;
            int r = px_http1_parse_request(&hc->parser, data + pos, len - pos, &req->h,
                                           h->opts.max_headers, &h->limits);
            if (r == PX_PARSE_INCOMPLETE && !hc->own_hdrs) {
                /* The worker's header array is shared by its connections: a head
                 * that spans reads keeps its own copy of what is parsed so far. */
                px_http_header_t *mine =
                    px__arena_alloc(&hc->arena, h->opts.max_headers * sizeof *mine);
                if (!mine) {
                    reject(hc, 500, 0, "out of memory");
                    pos = len;
                    break;
                }
                memcpy(mine, req->h.headers, req->h.num_headers * sizeof *mine);
                req->h.headers = mine;
                hc->own_hdrs = 1;
            }
            if (r == PX_PARSE_INCOMPLETE) {
                if (!hc->head_timer) {
                    hc->head_timer = 1;
                    px_conn_set_timeout(hc->c, h->opts.header_timeout_ms);
                }
                break;
            }
            if (r == PX_PARSE_ERROR) {
                reject(hc, req->h.status ? req->h.status : 400, 0,
                       req->h.error ? req->h.error : "malformed request");
                pos = len;
                break;
            }
            hc->nreq++;
            size_t head = (size_t)r;
            int64_t cl = req->h.content_length;
            if (req->h.expect_other) {
                /* 417 at once, never after a "100 Continue" that invited the body;
                 * then close (417 is not keep-alive): a body is never read. */
                px_respond_error(req, 417, NULL, "only \"Expect: 100-continue\" is supported");
                log_rejected(req, 1);
                if (!px_conn_is_closing(hc->c))
                    px_conn_close(hc->c);
                pos = len;
                break;
            }
            if (cl > 0 && (uint64_t)cl > h->opts.max_body) {
                /* Answer before reading the body, then close: the body is never read. */
                px_respond_error(req, 413, NULL,
                                 "request body of %lld bytes exceeds the %zu-byte limit",
                                 (long long)cl, h->opts.max_body);
                log_rejected(req, 1);
                if (!px_conn_is_closing(hc->c))
                    px_conn_close(hc->c);
                pos = len;
                break;
            }
            if (req->h.chunked || (cl > 0 && (uint64_t)cl > len - pos - head)) {
                /* The body is not all here: keep the head, stream the body in. */
                if (detach(req) != 0) {
                    reject(hc, 500, 1, "out of memory");
                    pos = len;
                    break;
                }
                pos += head;
                px_buf_init(&hc->body, h->opts.max_body + 64 * 1024);
                hc->body_chunked = req->h.chunked;
                hc->body_left = req->h.chunked ? 0 : (uint64_t)cl;
                if (req->h.chunked)
                    px_http1_chunked_init(&hc->chunked);
                hc->state = HC_BODY;
                if (req->h.expect_continue)
                    px_conn_write(hc->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                px_conn_set_timeout(hc->c, h->opts.header_timeout_ms);
                continue;
            }
            req->body = (px_str_t){data + pos + head, cl > 0 ? (size_t)cl : 0};
            pos += head + (cl > 0 ? (size_t)cl : 0);
        }
        run_handler(hc);
        if (!hc->c)
            break;
        if (req->upgraded) {
            /* The new protocol owns the connection and the bytes that follow. */
            hc->c = NULL;
            hc_free(hc);
            *used = pos;
            return;
        }
        if (!req->responded || hc->state == HC_STREAM) {
            /* Async: keep the request alive beyond this read; hold later ones. */
            if (!req->responded)
                hc->state = HC_ASYNC;
            if (detach(req) != 0) {
                px_conn_abort(hc->c);
                pos = len;
                break;
            }
            px_conn_set_timeout(hc->c, 0);
            if (hc->state == HC_ASYNC)
                px_conn_pause_read(hc->c, 1);
            continue;
        }
        request_done(req);
    }
    *used = pos;
}

static ssize_t http_on_read(px_conn_t *c, char *data, size_t len)
{
    px__http_conn_t *hc = px_conn_state(c);
    size_t used = 0;
    process(hc, data, len, &used);
    if (px_conn_is_closing(c))
        return -1;
    /* Unused bytes are a partial head: they stay in the connection buffer,
     * bounded by the head limit (the parser reports 414/431 before that). */
    return (ssize_t)used;
}

static void http_on_drain(px_conn_t *c)
{
    px__http_conn_t *hc = px_conn_state(c);
    if (hc->out_paused) {
        hc->out_paused = 0;
        px_conn_pause_read(c, 0); /* re-dispatches the requests kept meanwhile */
    }
    if (hc->state == HC_STREAM && hc->req.drain_cb && !hc->req.finished)
        hc->req.drain_cb(&hc->req, hc->req.drain_ud);
}

static void http_on_timeout(px_conn_t *c)
{
    px__http_conn_t *hc = px_conn_state(c);
    if (hc->state == HC_HEAD && hc->head_timer) {
        reject(hc, 408, 0, "the request head was not received in time");
        return;
    }
    if (hc->state == HC_BODY) {
        reject(hc, 408, 1, "the request body was not received in time");
        return;
    }
    if (hc->state == HC_HEAD)
        px_conn_close(c); /* idle keep-alive */
}

static void http_on_shutdown(px_conn_t *c)
{
    px__http_conn_t *hc = px_conn_state(c);
    hc->close_after = 1;
    if ((hc->state == HC_HEAD && !hc->head_timer) || hc->state == HC_STREAM)
        px_conn_close(c); /* idle between requests; a stream's owner hears it via on_abort */
}

static void http_on_eof(px_conn_t *c)
{
    px__http_conn_t *hc = px_conn_state(c);
    hc->eof = 1;
    if (hc->state == HC_HEAD || hc->state == HC_BODY)
        px_conn_close(c);
    /* HC_ASYNC: answer first (keep_alive is off now), then close. HC_STREAM: the
     * client left; the close below tells the stream's owner. */
    if (hc->state == HC_STREAM)
        px_conn_close(c);
}

static void http_on_close(px_conn_t *c)
{
    px__http_conn_t *hc = px_conn_state(c);
    if (!hc)
        return;
    hc->c = NULL;
    px_req_t *req = &hc->req;
    if ((hc->state == HC_ASYNC || hc->state == HC_STREAM) && !req->finished) {
        /* Someone still holds the request: it frees hc when it answers. */
        req->aborted = 1;
        if (req->abort_cb)
            req->abort_cb(req, req->abort_ud);
        return;
    }
    hc_free(hc);
}

static const px_protocol_t http_protocol = {
    .name = "http/1.1",
    .on_read = http_on_read,
    .on_drain = http_on_drain,
    .on_timeout = http_on_timeout,
    .on_shutdown = http_on_shutdown,
    .on_eof = http_on_eof,
    .on_close = http_on_close,
};
