/* The HTTP/1.1 connection: the px_protocol_t callbacks, the parse loop with
 * pipelining, request bodies (Content-Length and chunked, 100-continue,
 * 413/417), keep-alive and timeouts, output backpressure, streams' framing
 * (chunked or close-delimited), HEAD, and Upgrade. It owns one px_req_t,
 * reused request after request, and answers for it through `h1_ops`.
 *
 * Fast path: a request whose head and body are in the bytes just read is
 * parsed in place (spans point into the read buffer), handled, and answered
 * into the connection's output queue; every request of a pipelined batch is
 * answered before the single writev at the end of the loop iteration. Only a
 * request that outlives the read (a body arriving later, or an async handler)
 * is copied ("detached") into the request's arena.
 *
 * Responses go out in request order: while a request is outstanding (async,
 * or a stream) reading stops (HC_ASYNC) or later bytes are discarded
 * (HC_STREAM); while answers wait unread past the output budget, reading
 * stops too (out_paused) until they drain. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "http/http_int.h"

enum h1_state {
    HC_HEAD,   /* reading a request head (or running its handler) */
    HC_BODY,   /* head done (detached), reading a body that did not arrive with it */
    HC_ASYNC,  /* handler returned without answering; reading paused */
    HC_STREAM, /* a streamed response owns the connection */
};

/* Invariants: req.async iff state is HC_ASYNC or HC_STREAM (outside the
 * handler); c == NULL only once the connection has gone while such a request
 * is outstanding (its owner's answer then frees this). */
typedef struct h1_conn {
    px_conn_t *c; /* NULL once the connection is gone while a request is outstanding */
    px__http_t *http;
    px__http1_parser_t parser;
    int state;
    unsigned nreq;
    unsigned eof : 1;         /* client half-closed: close after the current answer */
    unsigned close_after : 1; /* graceful shutdown or HTTP/1.0 stream: close after the answer */
    unsigned head_timer : 1;  /* header timeout armed for a partial head */
    unsigned own_hdrs : 1;    /* req.h.headers is this request's arena copy */
    unsigned out_paused : 1;  /* reading stopped until the output budget drains */
    unsigned discarded : 1;   /* client bytes dropped during a stream: close after it */
    unsigned keep_alive : 1;  /* decided when answering the current request */
    unsigned chunked_out : 1; /* the current stream uses chunked framing */
    /* HC_BODY: */
    unsigned body_chunked : 1;
    px_buf_t body; /* the body, once it did not come with its head (req.body_kept) */
    px__http1_chunked_t chunked;
    uint64_t body_left; /* Content-Length bytes still to read */
    px_req_t req;
} h1_conn_t;

static const px_protocol_t http_protocol;
static const px__req_ops_t h1_ops;

/* ---- set-up ------------------------------------------------------------------ */

static void *on_accept(px_conn_t *c, void *ud);

void px__http1_setup(px__http_t *h)
{
    px_server_add_protocol(h->server, "http/1.1", &http_protocol, on_accept, h);
    static const char reject[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Content-Length: 82\r\nConnection: close\r\n\r\n"
        "{\"error\":\"service_unavailable\",\"message\":\"too many connections, try again "
        "later\"}";
    px_server_set_reject_message(h->server, reject, sizeof reject - 1);
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
    h1_conn_t *hc = px__calloc(1, sizeof *hc);
    if (!hc) {
        px_conn_abort(c);
        return NULL;
    }
    hc->c = c;
    hc->http = h;
    px__req_init(&hc->req, &h1_ops, hc, h, &h->workers[px_worker_id(px_conn_worker(c))]);
    px__http1_parser_init(&hc->parser);
    px_buf_init(&hc->body, 0);
    hc->state = HC_HEAD;
    /* Enough for the longest head plus a body that arrives with it. */
    px_conn_set_read_limit(c, h->opts.max_header_size + 1);
    px_conn_set_timeout(c, keepalive_ms(h));
    return hc;
}

static void hc_free(h1_conn_t *hc)
{
    px__req_dispose(&hc->req);
    px_buf_dispose(&hc->body);
    px__free(hc);
}

/* ---- writing responses ------------------------------------------------------------ */

/* Status line and headers, then `body` if any. `clen` < 0: no Content-Length.
 * Inlined into the op (h1_head): once per request, so no extra call. */
static inline __attribute__((always_inline)) int write_head(h1_conn_t *hc, px_req_t *req,
                                                            int status, const char *ctype,
                                                            int64_t clen, const char *extra,
                                                            const void *body, size_t blen)
{
    px__http_t *h = hc->http;
    hc->keep_alive =
        req->h.keep_alive && !hc->eof && !hc->close_after && status != 400 &&
        !(h->opts.max_requests && hc->nreq >= h->opts.max_requests) &&
        !(status == 413 || status == 408 || status == 431 || status == 414 || status == 417);

    /* Built with memcpy, not snprintf: this runs once per request. Every piece is
     * bounded so the head never overflows (pieces from handlers are checked). */
    char head[1024];
    size_t len = 0, dlen;
    int64_t now = hc->c ? px_loop_wall_time(px_conn_loop(hc->c)) : (int64_t)time(NULL);
    const char *date = px__http_date(req->hw, now, &dlen);
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
    if (!hc->keep_alive) {
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

/* The head of a stream (PX__CLEN_STREAM): chunked on HTTP/1.1, close-delimited
 * on 1.0; for HEAD only the head a stream would have. */
static __attribute__((noinline)) int stream_head(h1_conn_t *hc, px_req_t *req, int status,
                                                 const char *ctype)
{
    const char *extra = req->h.minor_version >= 1
                            ? "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
                            : "Cache-Control: no-cache\r\n";
    if (!req->streaming)
        return write_head(hc, req, status, ctype, -1, extra, NULL, 0);
    hc->chunked_out = req->h.minor_version >= 1;
    hc->state = HC_STREAM;
    /* Without chunked framing the end of the stream is the end of the connection. A
     * chunked one may be followed by the next request, unless client bytes were
     * discarded meanwhile (a stream started by the handler reads on, to see EOF). */
    if (!hc->chunked_out)
        hc->close_after = 1;
    int r = write_head(hc, req, status, ctype, -1, extra, NULL, 0);
    if (r) {
        hc->state = req->async ? HC_ASYNC : HC_HEAD;
        return r;
    }
    px_conn_set_timeout(hc->c, 0);
    px_conn_set_read_limit(hc->c, 4096);
    return 0;
}

static int h1_head(px_req_t *req, int status, const char *ctype, int64_t clen, const void *body,
                   size_t blen)
{
    h1_conn_t *hc = req->owner;
    if (PX_UNLIKELY(clen == PX__CLEN_STREAM))
        return stream_head(hc, req, status, ctype);
    return write_head(hc, req, status, ctype, clen, NULL, body, blen);
}

/* An answer's body is queued whole; a stream's chunk (its framing, then `len`
 * bytes from `p` or from slice `sl`) all or nothing: -ENOBUFS leaves the stream
 * intact; a failure half-way kills the connection rather than leave a broken
 * chunk. */
static int h1_body(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len)
{
    h1_conn_t *hc = req->owner;
    if (!req->streaming)
        return sl ? px_conn_write_slice_nocap(hc->c, sl, off, len)
                  : px_conn_write_nocap(hc->c, p, len);
    if (!hc->c)
        return -EPIPE;
    char hdr[24];
    size_t hn = hc->chunked_out ? (size_t)snprintf(hdr, sizeof hdr, "%zx\r\n", len) : 0;
    size_t tn = hc->chunked_out ? 2 : 0;
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

static int h1_file(px_req_t *req, int fd, uint64_t off, uint64_t len)
{
    h1_conn_t *hc = req->owner;
    return px_conn_sendfile(hc->c, fd, off, len);
}

static void h1_end(px_req_t *req)
{
    h1_conn_t *hc = req->owner;
    if (hc->c && hc->chunked_out)
        px_conn_write(hc->c, "0\r\n\r\n", 5);
}

static void h1_abort(px_req_t *req)
{
    h1_conn_t *hc = req->owner;
    hc->keep_alive = 0;
    if (hc->c)
        px_conn_abort(hc->c);
}

static size_t h1_pending(const px_req_t *req)
{
    const h1_conn_t *hc = req->owner;
    return hc->c ? px_conn_pending(hc->c) : 0;
}

static int h1_peer(const px_req_t *req, char *buf, size_t len)
{
    const h1_conn_t *hc = req->owner;
    return hc->c ? px_conn_peer_name(hc->c, buf, len) : -ENOTCONN;
}

static int h1_upgrade(px_req_t *req, const px_protocol_t *proto, void *state, px_conn_t **out)
{
    h1_conn_t *hc = req->owner;
    if (req->responded || !hc->c || hc->state != HC_HEAD)
        return -EINVAL;
    req->responded = 1;
    req->upgraded = 1;
    req->status = 101;
    px__req_log(req);
    px_conn_set_protocol(hc->c, proto, state);
    *out = hc->c;
    return 0;
}

static void process(h1_conn_t *hc, char *data, size_t len, size_t *used);

/* The answer to the current request is complete: log, then go on with the
 * connection (next pipelined request, keep-alive wait, or close). Also
 * h1_ops.done, for a request finished outside its handler. */
static void request_done(px_req_t *req)
{
    h1_conn_t *hc = req->owner;
    if (!hc->c) {
        /* The connection went away while the request was outstanding. */
        hc_free(hc);
        return;
    }
    if (hc->http->opts.access_log)
        px__req_log(req);
    int keep = hc->keep_alive && !hc->discarded;
    hc->discarded = 0;
    hc->keep_alive = 0;
    int was_async = hc->state == HC_ASYNC || hc->state == HC_STREAM;
    px__req_reset(req);
    px_buf_dispose(&hc->body);
    px__http1_parser_init(&hc->parser);
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

static const px__req_ops_t h1_ops = {
    .http_major = 1,
    .head = h1_head,
    .body = h1_body,
    .file = h1_file,
    .end = h1_end,
    .done = request_done,
    .abort = h1_abort,
    .pending = h1_pending,
    .peer = h1_peer,
    .upgrade = h1_upgrade,
};

/* ---- the protocol ----------------------------------------------------------------------- */

/* Log a request answered outside the handler path (rejected, 413/417 early).
 * Without a complete head, method and target are not trustworthy: "-". */
static void log_rejected(px_req_t *req, int head_ok)
{
    if (!head_ok) {
        req->h.method = req->h.target = (px_str_t){NULL, 0};
        req->h.minor_version = 1;
    }
    px__req_log(req);
}

static void reject(h1_conn_t *hc, int status, int head_ok, const char *msg)
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

/* Body bytes for a detached request (HC_BODY). Returns bytes used; sets *done. */
static ssize_t feed_body(h1_conn_t *hc, char *data, size_t len, int *done)
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
    ssize_t r = px__http1_decode_chunked(&hc->chunked, px_buf_head(&hc->body) + decoded, &n);
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
static void process(h1_conn_t *hc, char *data, size_t len, size_t *used)
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
            req->body_kept = 1;
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
                req->h.headers = req->hw->hdrs;
            int r = px__http1_parse_request(&hc->parser, data + pos, len - pos, &req->h,
                                            h->opts.max_headers, &h->limits);
            if (r == PX_PARSE_INCOMPLETE && !hc->own_hdrs) {
                /* The worker's header array is shared by its connections: a head
                 * that spans reads keeps its own copy of what is parsed so far. */
                px__http_header_t *mine =
                    px__arena_alloc(&req->arena, h->opts.max_headers * sizeof *mine);
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
                if (px__req_detach(req) != 0) {
                    reject(hc, 500, 1, "out of memory");
                    pos = len;
                    break;
                }
                pos += head;
                px_buf_init(&hc->body, h->opts.max_body + 64 * 1024);
                hc->body_chunked = req->h.chunked;
                hc->body_left = req->h.chunked ? 0 : (uint64_t)cl;
                if (req->h.chunked)
                    px__http1_chunked_init(&hc->chunked);
                hc->state = HC_BODY;
                if (req->h.expect_continue)
                    px_conn_write(hc->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                px_conn_set_timeout(hc->c, h->opts.header_timeout_ms);
                continue;
            }
            req->body = (px_str_t){data + pos + head, cl > 0 ? (size_t)cl : 0};
            pos += head + (cl > 0 ? (size_t)cl : 0);
        }
        px__req_run(req);
        if (!hc->c)
            break;
        if (req->upgraded) {
            /* The new protocol owns the connection and the bytes that follow. */
            hc->c = NULL;
            hc_free(hc);
            *used = pos;
            return;
        }
        if (!req->finished) {
            /* Async, or a stream: keep the request alive beyond this read; hold
             * later ones (responses go out in order). */
            req->async = 1;
            if (!req->responded)
                hc->state = HC_ASYNC;
            if (px__req_detach(req) != 0) {
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

/* The first bytes of a connection are HTTP/2's preface (h2c with prior
 * knowledge): hand the connection to "h2", which gets the same bytes. 1 when
 * switched, 0 when not a preface, -1 when the bytes so far are a prefix of it. */
static __attribute__((noinline)) int maybe_h2(h1_conn_t *hc, const char *data, size_t len)
{
    size_t n = len < PX__H2_PREFACE_LEN ? len : PX__H2_PREFACE_LEN;
    if (memcmp(data, PX__H2_PREFACE, n) != 0 || !hc->http->h2_registered || !hc->http->opts.h2)
        return 0;
    if (n < PX__H2_PREFACE_LEN)
        return -1;
    px_conn_t *c = hc->c;
    if (px_conn_start_protocol(c, "h2") != 0)
        return 0;
    hc->c = NULL;
    hc_free(hc);
    return 1;
}

static ssize_t http_on_read(px_conn_t *c, char *data, size_t len)
{
    h1_conn_t *hc = px_conn_state(c);
    size_t used = 0;
    /* One check on the first request of a connection: "PRI * HTTP/2.0". */
    if (PX_UNLIKELY(hc->nreq == 0 && data[0] == 'P' && hc->state == HC_HEAD && !hc->own_hdrs)) {
        int r = maybe_h2(hc, data, len);
        if (r != 0)
            return 0; /* switched (the new protocol reads these bytes), or wait for more */
    }
    process(hc, data, len, &used);
    if (px_conn_is_closing(c))
        return -1;
    /* Unused bytes are a partial head: they stay in the connection buffer,
     * bounded by the head limit (the parser reports 414/431 before that). */
    return (ssize_t)used;
}

static void http_on_drain(px_conn_t *c)
{
    h1_conn_t *hc = px_conn_state(c);
    if (hc->out_paused) {
        hc->out_paused = 0;
        px_conn_pause_read(c, 0); /* re-dispatches the requests kept meanwhile */
    }
    if (hc->state == HC_STREAM && hc->req.drain_cb && !hc->req.finished)
        hc->req.drain_cb(&hc->req, hc->req.drain_ud);
}

static void http_on_timeout(px_conn_t *c)
{
    h1_conn_t *hc = px_conn_state(c);
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
    h1_conn_t *hc = px_conn_state(c);
    hc->close_after = 1;
    if ((hc->state == HC_HEAD && !hc->head_timer) || hc->state == HC_STREAM)
        px_conn_close(c); /* idle between requests; a stream's owner hears it via on_abort */
}

static void http_on_eof(px_conn_t *c)
{
    h1_conn_t *hc = px_conn_state(c);
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
    h1_conn_t *hc = px_conn_state(c);
    if (!hc)
        return;
    hc->c = NULL;
    px_req_t *req = &hc->req;
    if ((hc->state == HC_ASYNC || hc->state == HC_STREAM) && !req->finished) {
        /* Someone still holds the request: it frees hc when it answers. */
        px__req_gone(req);
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
