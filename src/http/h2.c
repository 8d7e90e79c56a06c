/* HTTP/2 (RFC 9113) on nghttp2: the "h2" protocol. One nghttp2 server session
 * per connection turns the connection's bytes into frames (HPACK, flow control,
 * stream states and most of the protocol's validation are nghttp2's); every
 * request stream owns a px_req_t answered through `h2_ops`, so the router,
 * static files, SSE and the hub's API run unchanged (docs/internals/http.md).
 *
 * Input: on_read hands the bytes to nghttp2_session_mem_recv; its callbacks
 * build each request's head in the stream's arena (detached from the start),
 * collect a body (bounded by max_body) and run the handler when the request is
 * complete. Handlers run inside those callbacks; nghttp2 allows submitting
 * from them, and nothing is sent until the receive call has returned.
 *
 * Output: a response is a HEADERS submission plus, when it has a body, a data
 * provider that pulls from the stream's queue of chunks (memory in the
 * request's arena, shared slices, file ranges). DATA frames are written with
 * NGHTTP2_DATA_FLAG_NO_COPY: `send_data` queues the 9-byte frame header and
 * then the payload itself on the connection (a slice by reference; file bytes
 * read from the file into a read-ahead slice bounded by the flow-control
 * windows, never the whole file). The session is flushed (nghttp2_session_send)
 * after each read and, for answers that come later, from a deferred callback.
 *
 * Budget: memory a connection holds for its client is bounded by the server's
 * output_cap, as on HTTP/1.1. nghttp2 stops (WOULDBLOCK) when the connection's
 * queue passes the high-water mark and resumes when it drains; bytes waiting in
 * the streams' queues (a client that opens no window) count too: past the cap a
 * stream chunk is refused (-ENOBUFS) and new requests wait before their handler
 * runs. Request bodies are bounded per connection by withholding the
 * connection-level window while too much is buffered.
 *
 * Life of a stream (h2_stream_t): made by the first HEADERS; freed when both
 * nghttp2 has closed it (on_stream_close) and its request is finished. A
 * stream closed while its request is outstanding (async, streaming) marks the
 * request gone; the owner's answer then frees it (done). When the connection
 * closes, such streams stay with `hc == NULL` until answered. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/http_int.h"

/* Abuse limits (docs/http2.md): token buckets per connection, `burst` frames
 * at once, `rate` more per second. Over one: GOAWAY ENHANCE_YOUR_CALM. */
#define RESET_RATE_MIN   100 /* client resets per second (at least; max streams if higher) */
#define SETTINGS_BURST   32
#define SETTINGS_RATE    8
#define PING_BURST       64
#define PING_RATE        16
#define EMPTY_DATA_BURST 128
#define EMPTY_DATA_RATE  32
#define MAX_CONTINUATION 8 /* CONTINUATION frames after a HEADERS (nghttp2 option) */

#define SEND_HIGH_WATER (512u << 10) /* stop framing past this many queued bytes */
#define READ_AHEAD_MAX  (256u << 10) /* file bytes read at once for DATA frames */
#define SMALL_COPY      512          /* slice pieces up to this are copied, not referenced */
#define SPARE_STREAMS   16           /* ended streams kept per connection for the next ones */

enum { CH_MEM, CH_SLICE, CH_FILE };

/* A piece of a response body waiting to be framed. */
typedef struct h2_chunk {
    uint8_t kind;
    int fd;         /* CH_FILE: owned, closed when done */
    const char *p;  /* CH_MEM: bytes in the request's arena */
    px_slice_t *sl; /* CH_SLICE: one reference held */
    uint64_t off;   /* CH_SLICE: offset in sl; CH_FILE: offset in the file */
    uint64_t len;   /* bytes left */
} h2_chunk_t;

typedef struct h2_conn h2_conn_t;

/* Invariants: closed => not in hc->streams; freed only when closed and
 * (req.finished or the handler never ran); hc == NULL only once the connection
 * has gone while the request was outstanding. */
typedef struct h2_stream {
    px_req_t req;
    h2_conn_t *hc;
    int32_t id;
    struct h2_stream *prev, *next; /* hc->streams (open ones) */
    struct h2_stream *lnext;       /* hc->waiting or hc->drains */
    px_timer_t timer;              /* the request must be complete in time (header timeout) */
    /* the head, built in the request's arena */
    px__http_header_t *hdrs;
    uint32_t nhdrs, hcap;
    size_t hsize; /* header list size so far (name + value + 32 per field) */
    px_str_t method, path, authority, protocol;
    px_buf_t body;
    /* output: a ring of chunks */
    h2_chunk_t *q;
    uint32_t qhead, qcount, qcap;
    h2_chunk_t qinl[2];
    uint64_t qbytes; /* bytes queued, memory and files */
    uint64_t qmem;   /* memory bytes queued (they count against the budget) */
    px_slice_t *ra;  /* file read-ahead: bytes [ra_off, ra_off + ra->len) of ra_fd */
    uint64_t ra_off;
    int ra_fd;
    int reject; /* answer this status instead of running the handler */
    const char *reject_msg;
    unsigned has_data : 1; /* the response has a data provider */
    unsigned eof : 1;      /* the body is complete once the queue is empty */
    unsigned deferred : 1; /* the data provider is waiting for bytes */
    unsigned closed : 1;   /* nghttp2 closed the stream */
    unsigned complete : 1; /* the request (head and body) is in */
    unsigned ran : 1;      /* the handler ran (or a substitute answer was given) */
    unsigned waiting : 1;  /* in hc->waiting: the handler waits for the budget */
    unsigned draining : 1; /* in hc->drains */
    unsigned in_gone : 1;  /* px__req_gone is running from on_stream_close */
    unsigned trailers : 1; /* the headers being received are trailers (ignored) */
    unsigned discard : 1;  /* a substitute answer went out: the handler's body is dropped */
    /* A tunnel (RFC 8441 extended CONNECT): a WebSocket runs on the stream. */
    unsigned tunnel : 1;
    unsigned tpaused : 1;  /* the tunnel's user stopped reading: bytes stay in tin */
    unsigned tclosing : 1; /* our side is ending (close or abort) */
    unsigned queued : 1;   /* in hc->redeliver */
    px__tunnel_t tun;
    const px__tunnel_cb_t *tcb; /* NULL once on_close was called */
    void *tud;
    px_buf_t tin; /* received, not used yet (bounded by tlimit) */
    size_t tlimit;
    struct h2_stream *rnext; /* hc->redeliver */
} h2_stream_t;

typedef struct bucket {
    uint64_t last_ms;
    uint64_t milli; /* tokens x 1000 */
} bucket_t;

struct h2_conn {
    px_conn_t *c;
    px__http_t *http;
    nghttp2_session *sess;
    h2_stream_t *streams; /* open streams */
    unsigned nstreams;
    h2_stream_t *waiting, *waiting_tail; /* complete requests waiting for the budget */
    h2_stream_t *drains;                 /* streams whose queue emptied: tell drain_cb */
    h2_stream_t *redeliver;              /* tunnels resumed with bytes kept */
    h2_stream_t *spare;                  /* ended streams to reuse (lnext), nspare of them */
    unsigned nspare;
    uint64_t qmem;       /* sum of the streams' qmem */
    uint64_t body_bytes; /* request body bytes held */
    uint64_t withheld;   /* connection window not yet given back */
    px_defer_t kick;     /* flush from the loop (answers given later) */
    bucket_t resets, settings, pings, empty_data;
    unsigned in_recv : 1;       /* inside nghttp2_session_mem_recv */
    unsigned in_flush : 1;      /* inside flush(): no recursion */
    unsigned shutdown : 1;      /* GOAWAY sent: close when the last stream is done */
    unsigned term : 1;          /* the session was terminated (GOAWAY with an error) */
    unsigned ping_out : 1;      /* a PING of ours awaits its ACK */
    unsigned dead : 1;          /* on_close ran while `kick` was queued: it frees this */
    unsigned settings_sent : 1; /* our first SETTINGS is out (send_first_settings) */
};

static const px_protocol_t h2_protocol;
static const px__req_ops_t h2_ops;

static int m_streams = -1, m_rst_recv = -1, m_rst_sent = -1, m_conns = -1;

/* GOAWAY sent, one labelled metric per error code that has a reason of its own
 * (RFC 9113 7: codes 0x0..0xd); any other code is counted as "other". */
#define GOAWAY_CODES 14
static const char *const goaway_reason[GOAWAY_CODES] = {
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
};
static int m_goaway[GOAWAY_CODES + 1]; /* [GOAWAY_CODES]: other; registered by px__h2_setup */

static nghttp2_session_callbacks *callbacks; /* built once by px__h2_setup */
static nghttp2_option *session_opts;

/* ---- helpers ------------------------------------------------------------------------- */

static uint64_t now_ms(h2_conn_t *hc)
{
    return px_loop_now(px_conn_loop(hc->c));
}

static int bucket_take(bucket_t *b, uint64_t burst, uint64_t rate, uint64_t now)
{
    if (b->last_ms == 0) {
        b->milli = burst * 1000;
        b->last_ms = now;
    }
    b->milli += (now - b->last_ms) * rate; /* rate per second = rate milli-tokens per ms */
    if (b->milli > burst * 1000)
        b->milli = burst * 1000;
    b->last_ms = now;
    if (b->milli < 1000)
        return -1;
    b->milli -= 1000;
    return 0;
}

static uint64_t out_budget(const h2_conn_t *hc)
{
    return px_server_opts(px_conn_server(hc->c))->output_cap;
}

/* Memory held for the client: framed output on the connection plus bytes
 * waiting in the streams' queues. */
static uint64_t out_used(const h2_conn_t *hc)
{
    return px_conn_pending(hc->c) + hc->qmem;
}

static uint64_t high_water(const h2_conn_t *hc)
{
    uint64_t cap = out_budget(hc);
    return cap / 2 < SEND_HIGH_WATER ? cap / 2 : SEND_HIGH_WATER;
}

static void flush(h2_conn_t *hc);

static void on_kick(px_defer_t *d)
{
    h2_conn_t *hc = d->data;
    if (hc->dead) {
        px__free(hc);
        return;
    }
    flush(hc);
}

/* Send what was submitted: at the end of the current read, or from the loop. */
static void kick(h2_conn_t *hc)
{
    if (!hc->in_recv && !hc->in_flush)
        px_defer(px_conn_loop(hc->c), &hc->kick);
}

static void terminate(h2_conn_t *hc, uint32_t code, const char *why)
{
    if (hc->term)
        return;
    hc->term = 1;
    char peer[64] = "-";
    px_conn_peer_name(hc->c, peer, sizeof peer);
    px_log(code == NGHTTP2_ENHANCE_YOUR_CALM ? PX_LOG_WARN : PX_LOG_DEBUG,
           "h2 conn %llu (%s): GOAWAY %s: %s", (unsigned long long)px_conn_id(hc->c), peer,
           nghttp2_http2_strerror(code), why);
    nghttp2_session_terminate_session(hc->sess, code);
}

/* ---- streams: queue and life ------------------------------------------------------------ */

static h2_chunk_t *q_at(h2_stream_t *st, uint32_t i)
{
    return &st->q[(st->qhead + i) & (st->qcap - 1)];
}

static int q_push(h2_stream_t *st, h2_chunk_t ch)
{
    if (st->qcount == st->qcap) {
        uint32_t cap = st->qcap * 2;
        h2_chunk_t *n = px__malloc(cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        for (uint32_t i = 0; i < st->qcount; i++)
            n[i] = *q_at(st, i);
        if (st->q != st->qinl)
            px__free(st->q);
        st->q = n;
        st->qcap = cap;
        st->qhead = 0;
    }
    *q_at(st, st->qcount++) = ch;
    st->qbytes += ch.len;
    if (ch.kind != CH_FILE) {
        st->qmem += ch.len;
        if (st->hc)
            st->hc->qmem += ch.len;
    }
    return 0;
}

/* Copy p into the stream's queue: appended to the last chunk when it is a
 * slice of our own with room (WebSocket frame headers are a few bytes each). */
static int q_copy(h2_stream_t *st, const void *p, size_t len)
{
    if (st->qcount) {
        h2_chunk_t *last = q_at(st, st->qcount - 1);
        if (last->kind == CH_SLICE && last->fd == 1 &&
            last->off + last->len + len <= last->sl->len && px_slice_refs(last->sl) == 1) {
            memcpy(last->sl->data + last->off + last->len, p, len);
            last->len += len;
            st->qbytes += len;
            st->qmem += len;
            if (st->hc)
                st->hc->qmem += len;
            return 0;
        }
    }
    size_t cap = len < 4096 ? 4096 : len;
    px_slice_t *s = px_slice_new(cap);
    if (!s)
        return -ENOMEM;
    memcpy(s->data, p, len);
    /* fd = 1 marks a slice of our own that may be appended to */
    int r = q_push(st, (h2_chunk_t){.kind = CH_SLICE, .fd = 1, .sl = s, .off = 0, .len = len});
    if (r)
        px_slice_unref(s);
    return r;
}

static void chunk_release(h2_chunk_t *ch)
{
    if (ch->kind == CH_FILE)
        close(ch->fd);
    else if (ch->kind == CH_SLICE)
        px_slice_unref(ch->sl);
}

static void q_pop(h2_stream_t *st)
{
    chunk_release(q_at(st, 0));
    st->qhead = (st->qhead + 1) & (st->qcap - 1);
    st->qcount--;
}

/* Consume n bytes from the front chunk (accounting only). */
static void q_advance(h2_stream_t *st, h2_chunk_t *ch, uint64_t n)
{
    ch->off += n;
    if (ch->kind == CH_MEM)
        ch->p += n;
    ch->len -= n;
    st->qbytes -= n;
    if (ch->kind != CH_FILE) {
        st->qmem -= n;
        if (st->hc)
            st->hc->qmem -= n;
    }
    if (ch->len == 0)
        q_pop(st);
}

static void q_clear(h2_stream_t *st)
{
    while (st->qcount)
        q_pop(st);
    if (st->hc)
        st->hc->qmem -= st->qmem;
    st->qmem = st->qbytes = 0;
    if (st->ra) {
        px_slice_unref(st->ra);
        st->ra = NULL;
    }
}

static void stream_timeout(px_timer_t *t);

static h2_stream_t *stream_new(h2_conn_t *hc, int32_t id)
{
    /* A stream of this connection that ended lately, with its arena's block:
     * a request costs no allocation of ours in the steady state. */
    h2_stream_t *st = hc->spare;
    px__arena_t arena;
    if (st) {
        hc->spare = st->lnext;
        hc->nspare--;
        arena = st->req.arena;
        memset(st, 0, sizeof *st);
    } else {
        st = px__calloc(1, sizeof *st);
        if (!st)
            return NULL;
        px__arena_init(&arena, 0);
    }
    st->hc = hc;
    st->id = id;
    px__req_init(&st->req, &h2_ops, st, hc->http,
                 &hc->http->workers[px_worker_id(px_conn_worker(hc->c))]);
    st->req.arena = arena;
    /* The head and small answers live here; the head is bounded by max_header_size. */
    st->q = st->qinl;
    st->qcap = 2;
    st->ra_fd = -1;
    px_buf_init(&st->body, 0);
    px_buf_init(&st->tin, 0);
    px_timer_init(&st->timer, stream_timeout, st);
    st->next = hc->streams;
    if (hc->streams)
        hc->streams->prev = st;
    hc->streams = st;
    hc->nstreams++;
    return st;
}

static void body_release(h2_stream_t *st)
{
    h2_conn_t *hc = st->hc;
    size_t n = px_buf_size(&st->body);
    px_buf_dispose(&st->body);
    if (!hc || !n)
        return;
    hc->body_bytes -= n;
    /* Give back the connection window withheld while bodies piled up. */
    if (hc->withheld &&
        hc->body_bytes < hc->http->opts.max_body + hc->http->opts.h2_initial_window) {
        nghttp2_session_consume_connection(hc->sess, (size_t)hc->withheld);
        hc->withheld = 0;
        kick(hc);
    }
}

static void unlink_stream(h2_stream_t *st)
{
    h2_conn_t *hc = st->hc;
    if (st->prev)
        st->prev->next = st->next;
    else
        hc->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    hc->nstreams--;
    /* Off the lists a flush walks. */
    for (h2_stream_t **pp = &hc->waiting; *pp; pp = &(*pp)->lnext) {
        if (*pp == st) {
            *pp = st->lnext;
            break;
        }
    }
    hc->waiting_tail = NULL;
    for (h2_stream_t *w = hc->waiting; w; w = w->lnext)
        hc->waiting_tail = w;
    for (h2_stream_t **pp = &hc->drains; *pp; pp = &(*pp)->lnext) {
        if (*pp == st) {
            *pp = st->lnext;
            break;
        }
    }
    for (h2_stream_t **pp = &hc->redeliver; *pp; pp = &(*pp)->rnext) {
        if (*pp == st) {
            *pp = st->rnext;
            break;
        }
    }
    st->queued = 0;
    st->rnext = NULL;
    st->waiting = st->draining = 0;
    st->lnext = NULL;
}

static void stream_free(h2_stream_t *st)
{
    px_timer_stop(&st->timer);
    q_clear(st);
    body_release(st);
    px_buf_dispose(&st->tin);
    if (st->q != st->qinl)
        px__free(st->q);
    h2_conn_t *hc = st->hc;
    if (hc && hc->nspare < SPARE_STREAMS) {
        px__arena_reset(&st->req.arena);
        st->lnext = hc->spare;
        hc->spare = st;
        hc->nspare++;
        return;
    }
    px__req_dispose(&st->req);
    px__free(st);
}

/* ---- the response ops ----------------------------------------------------------------------- */

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s, (void)id, (void)buf, (void)ud;
    h2_stream_t *st = src->ptr;
    if (st->qbytes == 0) {
        if (st->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = st->qbytes < length ? (size_t)st->qbytes : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == st->qbytes && st->eof)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void resume(h2_stream_t *st)
{
    if (st->deferred && st->hc && !st->closed) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->hc->sess, st->id);
    }
    if (st->hc)
        kick(st->hc);
}

/* Lower-case copy of a response header name (HTTP/2 field names are lower case). */
static char *lower_dup(px__arena_t *a, px_str_t s)
{
    char *d = px__arena_alloc(a, s.len + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < s.len; i++) {
        char ch = s.ptr[i];
        d[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    d[s.len] = '\0';
    return d;
}

/* Connection-specific fields have no place in HTTP/2 (RFC 9113 8.2.2). */
static int conn_specific(const char *n, size_t len)
{
    return (len == 10 && memcmp(n, "connection", 10) == 0) ||
           (len == 10 && memcmp(n, "keep-alive", 10) == 0) ||
           (len == 16 && memcmp(n, "proxy-connection", 16) == 0) ||
           (len == 17 && memcmp(n, "transfer-encoding", 17) == 0) ||
           (len == 7 && memcmp(n, "upgrade", 7) == 0);
}

#define NV(n, nl, v, vl)                                                                           \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl),                                      \
                  NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE})

static int h2_head(px_req_t *req, int status, const char *ctype, int64_t clen, const void *body,
                   size_t blen)
{
    h2_stream_t *st = req->owner;
    h2_conn_t *hc = st->hc;
    if (!hc || st->closed)
        return -EPIPE;
    if (req->h.upgrade && !st->tunnel && status >= 200 && status < 300) {
        /* An extended CONNECT answered 2xx by a handler that is no WebSocket
         * endpoint: the client would take the body for WebSocket frames. */
        static const char msg[] =
            "{\"error\":\"not_found\",\"message\":\"no WebSocket endpoint at this path\"}";
        status = 404;
        ctype = "application/json";
        body = msg;
        blen = sizeof msg - 1;
        clen = (int64_t)blen;
        st->discard = 1;
        req->status = 404;
    }
    px__arena_t *a = &req->arena;
    size_t nres = 0;
    for (px__res_header_t *rh = req->res_headers; rh; rh = rh->next)
        nres++;
    nghttp2_nv *nv = px__arena_alloc(a, (6 + nres) * sizeof *nv);
    char *sbuf = px__arena_alloc(a, 4 + 24);
    if (!nv || !sbuf)
        return -ENOMEM;
    size_t n = 0, hbytes = 0;
    sbuf[0] = (char)('0' + status / 100 % 10);
    sbuf[1] = (char)('0' + status / 10 % 10);
    sbuf[2] = (char)('0' + status % 10);
    sbuf[3] = '\0';
    nv[n++] = NV(":status", 7, sbuf, 3);
    nv[n++] = NV("server", 6, "plexus", 6);
    size_t dlen;
    const char *date =
        px__http_date(req->hw, px_loop_wall_time(px_conn_loop(hc->c)), &dlen); /* "Date: ...\r\n" */
    nv[n++] = NV("date", 4, date + 6, dlen - 8);
    if (ctype)
        nv[n++] = NV("content-type", 12, ctype, strlen(ctype));
    if (clen >= 0) {
        char digits[24], *cl = sbuf + 4;
        size_t nd = 0, k = 0;
        uint64_t v = (uint64_t)clen;
        do
            digits[nd++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        while (nd)
            cl[k++] = digits[--nd];
        nv[n++] = NV("content-length", 14, cl, k);
    }
    if (clen == PX__CLEN_STREAM && !st->tunnel)
        nv[n++] = NV("cache-control", 13, "no-cache", 8);
    for (px__res_header_t *rh = req->res_headers; rh; rh = rh->next) {
        char *name = lower_dup(a, rh->name);
        if (!name)
            return -ENOMEM;
        if (conn_specific(name, rh->name.len))
            continue;
        nv[n++] = NV(name, rh->name.len, rh->value.ptr, rh->value.len);
    }
    for (size_t i = 0; i < n; i++)
        hbytes += nv[i].namelen + nv[i].valuelen + 4;
    /* An answer from memory is queued whole, past the budget if need be, but not
     * once the client already holds the budget unread (it opens no window): many
     * concurrent answers would pile up without bound. The stream is reset
     * instead, as a stream chunk over the budget is refused. */
    if (clen > 0 && !req->h.is_head && clen != PX__CLEN_STREAM && out_used(hc) >= out_budget(hc))
        return -ENOBUFS;
    int with_data;
    if (clen == PX__CLEN_STREAM) {
        with_data = req->streaming || st->tunnel;
        st->eof = !with_data;
    } else {
        /* The whole body follows in this same call (px_respond*): nothing is sent
         * before the handler's call returns. */
        with_data = !req->h.is_head && clen > 0;
        st->eof = 1;
    }
    if (body && blen) {
        const char *copy = px__arena_memdup(a, body, blen);
        if (!copy || q_push(st, (h2_chunk_t){.kind = CH_MEM, .p = copy, .len = blen}) != 0)
            return -ENOMEM;
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
    int r = nghttp2_submit_response(hc->sess, st->id, nv, n, with_data ? &prd : NULL);
    if (r != 0)
        return -EPIPE;
    st->has_data = with_data != 0;
    req->res_bytes = hbytes + blen;
    kick(hc);
    return 0;
}

static int h2_body(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len)
{
    h2_stream_t *st = req->owner;
    h2_conn_t *hc = st->hc;
    if (!hc || st->closed)
        return -EPIPE;
    if (st->discard)
        return 0;
    if (!req->streaming) {
        /* An answer's body: queued whole. */
        h2_chunk_t ch;
        if (sl) {
            ch = (h2_chunk_t){.kind = CH_SLICE, .sl = px_slice_ref(sl), .off = off, .len = len};
        } else {
            const char *copy = px__arena_memdup(&req->arena, p, len);
            if (!copy)
                return -ENOMEM;
            ch = (h2_chunk_t){.kind = CH_MEM, .p = copy, .len = len};
        }
        int r = q_push(st, ch);
        if (r && sl)
            px_slice_unref(sl);
        return r;
    }
    if (px_conn_is_closing(hc->c) || hc->term)
        return -EPIPE;
    /* A stream chunk: all or nothing within the connection's budget. */
    if (out_used(hc) + len > out_budget(hc))
        return -ENOBUFS;
    px_slice_t *s = sl ? px_slice_ref(sl) : px_slice_copy(p, len);
    if (!s)
        return -ENOMEM;
    int r = q_push(st, (h2_chunk_t){.kind = CH_SLICE, .sl = s, .off = sl ? off : 0, .len = len});
    if (r) {
        px_slice_unref(s);
        return r;
    }
    resume(st);
    return 0;
}

static int h2_file(px_req_t *req, int fd, uint64_t off, uint64_t len)
{
    h2_stream_t *st = req->owner;
    if (!st->hc || st->closed || st->discard) {
        close(fd);
        return st->discard ? 0 : -EPIPE;
    }
    int r = q_push(st, (h2_chunk_t){.kind = CH_FILE, .fd = fd, .off = off, .len = len});
    if (r)
        close(fd);
    return r;
}

static void h2_end(px_req_t *req)
{
    h2_stream_t *st = req->owner;
    st->eof = 1;
    resume(st);
}

static void h2_abort(px_req_t *req)
{
    h2_stream_t *st = req->owner;
    h2_conn_t *hc = st->hc;
    if (!hc || st->closed)
        return;
    nghttp2_submit_rst_stream(hc->sess, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    kick(hc);
}

static size_t h2_pending(const px_req_t *req)
{
    const h2_stream_t *st = req->owner;
    return st->hc ? (size_t)st->qmem : 0;
}

static int h2_peer(const px_req_t *req, char *buf, size_t len)
{
    const h2_stream_t *st = req->owner;
    return st->hc ? px_conn_peer_name(st->hc->c, buf, len) : -ENOTCONN;
}

/* The request is finished outside its handler. */
static void h2_done(px_req_t *req)
{
    h2_stream_t *st = req->owner;
    if (req->http->opts.access_log)
        px__req_log(req);
    if (st->in_gone)
        return; /* on_stream_close frees it after px__req_gone */
    if (st->closed || !st->hc) {
        stream_free(st);
        return;
    }
    kick(st->hc);
}

/* ---- tunnels (RFC 8441) ------------------------------------------------------------------- */

static void tun_set_timeout(px__tunnel_t *t, uint64_t ms);

static h2_stream_t *tun_stream(const px__tunnel_t *t)
{
    return (h2_stream_t *)((char *)t - offsetof(h2_stream_t, tun));
}

static int tun_is_closing(const px__tunnel_t *t)
{
    h2_stream_t *st = tun_stream(t);
    return !st->hc || st->closed || st->tclosing || px_conn_is_closing(st->hc->c) || st->hc->term;
}

static int tun_room(h2_stream_t *st, size_t len, int nocap)
{
    if (tun_is_closing(&st->tun))
        return -EPIPE;
    if (!nocap && out_used(st->hc) + len > out_budget(st->hc))
        return -ENOBUFS;
    return 0;
}

static int tun_write(px__tunnel_t *t, const void *p, size_t len, int nocap)
{
    h2_stream_t *st = tun_stream(t);
    int r = tun_room(st, len, nocap);
    if (r || len == 0)
        return r;
    if ((r = q_copy(st, p, len)) == 0)
        resume(st);
    return r;
}

static int tun_write_slice(px__tunnel_t *t, px_slice_t *sl, size_t off, size_t len, int nocap)
{
    h2_stream_t *st = tun_stream(t);
    if (len <= SMALL_COPY)
        return tun_write(t, sl->data + off, len, nocap);
    int r = tun_room(st, len, nocap);
    if (r)
        return r;
    r = q_push(st, (h2_chunk_t){.kind = CH_SLICE, .sl = px_slice_ref(sl), .off = off, .len = len});
    if (r) {
        px_slice_unref(sl);
        return r;
    }
    resume(st);
    return 0;
}

static size_t tun_pending(const px__tunnel_t *t)
{
    return (size_t)tun_stream(t)->qmem;
}

static void tun_close(px__tunnel_t *t)
{
    h2_stream_t *st = tun_stream(t);
    if (st->tclosing)
        return;
    st->tclosing = 1;
    st->eof = 1; /* END_STREAM once the queue is out */
    resume(st);
    /* The peer's END_STREAM should follow; if it does not, the timer's callback
     * (the WebSocket's, which has closed) resets the stream. */
    if (!px_timer_active(&st->timer))
        tun_set_timeout(t, 5000);
}

static void tun_abort(px__tunnel_t *t)
{
    h2_stream_t *st = tun_stream(t);
    st->tclosing = 1;
    if (!st->hc || st->closed)
        return;
    nghttp2_submit_rst_stream(st->hc->sess, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    kick(st->hc);
}

static void tun_set_timeout(px__tunnel_t *t, uint64_t ms)
{
    h2_stream_t *st = tun_stream(t);
    if (ms && st->hc)
        px_timer_start(px_conn_loop(st->hc->c), &st->timer, ms);
    else
        px_timer_stop(&st->timer);
}

static void tun_pause(px__tunnel_t *t, int paused)
{
    h2_stream_t *st = tun_stream(t);
    st->tpaused = paused != 0;
    if (!paused && px_buf_size(&st->tin) && st->hc && !st->queued) {
        st->queued = 1;
        st->rnext = st->hc->redeliver;
        st->hc->redeliver = st;
        kick(st->hc);
    }
}

static void tun_set_read_limit(px__tunnel_t *t, size_t max)
{
    tun_stream(t)->tlimit = max ? max : 1;
}

static const px__tunnel_ops_t tunnel_ops = {
    .write = tun_write,
    .write_slice = tun_write_slice,
    .pending = tun_pending,
    .is_closing = tun_is_closing,
    .close = tun_close,
    .abort = tun_abort,
    .set_timeout = tun_set_timeout,
    .pause = tun_pause,
    .set_read_limit = tun_set_read_limit,
};

/* Hand the bytes kept to the tunnel's user. */
static void tun_deliver(h2_stream_t *st)
{
    while (st->tcb && !st->tpaused && px_buf_size(&st->tin) && !tun_is_closing(&st->tun)) {
        size_t have = px_buf_size(&st->tin);
        ssize_t n = st->tcb->on_read(st->tud, px_buf_head(&st->tin), have);
        if (n < 0 || !st->tcb) {
            px_buf_dispose(&st->tin);
            return;
        }
        px_buf_consume(&st->tin, (size_t)n);
        if ((size_t)n < have)
            break; /* a partial frame: wait for more */
    }
    if (px_buf_size(&st->tin) == 0)
        px_buf_dispose(&st->tin);
}

/* The tunnel's user hears the end, once. */
static void tun_gone(h2_stream_t *st)
{
    const px__tunnel_cb_t *cb = st->tcb;
    st->tcb = NULL;
    if (cb)
        cb->on_close(st->tud);
}

static int h2_tunnel(px_req_t *req, const px__tunnel_cb_t *cb, void *ud, px__tunnel_t **out)
{
    h2_stream_t *st = req->owner;
    if (!st->hc || st->closed)
        return -EPIPE;
    st->tunnel = 1;
    int r = h2_head(req, 200, NULL, PX__CLEN_STREAM, NULL, 0);
    if (r) {
        st->tunnel = 0;
        return r;
    }
    req->responded = 1;
    req->upgraded = 1;
    req->status = 200;
    if (req->http->opts.access_log)
        px__req_log(req);
    st->tun = (px__tunnel_t){&tunnel_ops, st->hc->c};
    st->tcb = cb;
    st->tud = ud;
    st->tlimit = 64u << 10;
    px_timer_stop(&st->timer);
    /* Bytes the client sent after its CONNECT are the tunnel's. */
    if (px_buf_size(&st->body)) {
        if (px_buf_append(&st->tin, px_buf_head(&st->body), px_buf_size(&st->body)) == 0)
            tun_pause(&st->tun, 0);
        body_release(st);
    }
    *out = &st->tun;
    return 0;
}

static const px__req_ops_t h2_ops = {
    .http_major = 2,
    .head = h2_head,
    .body = h2_body,
    .file = h2_file,
    .end = h2_end,
    .done = h2_done,
    .abort = h2_abort,
    .pending = h2_pending,
    .peer = h2_peer,
    .upgrade = NULL,
    .tunnel = h2_tunnel,
};

/* ---- running requests ------------------------------------------------------------------------ */

static void run_stream(h2_stream_t *st)
{
    px_req_t *req = &st->req;
    st->ran = 1;
    px_timer_stop(&st->timer);
    if (st->reject) {
        req->h.is_head = 0;
        px_respond_error(req, st->reject, NULL, "%s", st->reject_msg);
    } else {
        px__req_run(req);
    }
    if (req->finished) {
        if (req->http->opts.access_log)
            px__req_log(req);
        if (st->closed) /* answered and closed inside the handler: cannot happen today */
            stream_free(st);
        return;
    }
    if (req->upgraded)
        return; /* a tunnel now: the stream lives until it closes */
    req->async = 1;
}

/* Run now, or wait while the client's unread output is over the budget. */
static void ready(h2_conn_t *hc, h2_stream_t *st)
{
    st->complete = 1;
    st->req.body =
        (px_str_t){px_buf_size(&st->body) ? px_buf_head(&st->body) : "", px_buf_size(&st->body)};
    st->req.body_kept = 1;
    px_timer_stop(&st->timer);
    if (!hc->waiting && out_used(hc) < out_budget(hc)) {
        run_stream(st);
        return;
    }
    st->waiting = 1;
    if (hc->waiting_tail)
        hc->waiting_tail->lnext = st;
    else
        hc->waiting = st;
    hc->waiting_tail = st;
}

/* Answer at once with an error, before the request is complete (413, 408). */
static void answer_early(h2_conn_t *hc, h2_stream_t *st, int status, const char *msg)
{
    (void)hc;
    if (st->ran)
        return;
    st->reject = status;
    st->reject_msg = msg;
    run_stream(st);
}

static void stream_timeout(px_timer_t *t)
{
    h2_stream_t *st = t->data;
    h2_conn_t *hc = st->hc;
    if (st->tunnel) {
        if (st->tcb && st->tcb->on_timeout)
            st->tcb->on_timeout(st->tud);
        return;
    }
    if (!hc || st->ran || st->closed)
        return;
    answer_early(hc, st, 408, "the request was not received in time");
    kick(hc);
}

/* ---- nghttp2 callbacks
 * --------------------------------------------------------------------------- */

/* The server's first SETTINGS: nghttp2 is given no concurrency limit of its own
 * (it would answer a stream over it with a connection error), and the client
 * is told ours, which on_begin_headers enforces with REFUSED_STREAM. Patched in
 * the serialized frame: the entry has the same size either way. */
static int send_first_settings(h2_conn_t *hc, const uint8_t *data, size_t len)
{
    uint8_t buf[9 + 6 * 16];
    size_t flen = len >= 9 ? (size_t)data[0] << 16 | (size_t)data[1] << 8 | data[2] : 0;
    if (len < 9 || data[3] != NGHTTP2_SETTINGS || data[4] != 0 || 9 + flen > sizeof buf ||
        9 + flen > len)
        return px_conn_write_nocap(hc->c, data, len);
    memcpy(buf, data, 9 + flen);
    uint32_t v = hc->http->opts.h2_max_concurrent_streams;
    for (size_t i = 9; i + 6 <= 9 + flen; i += 6) {
        if (buf[i] == 0 && buf[i + 1] == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            buf[i + 2] = (uint8_t)(v >> 24);
            buf[i + 3] = (uint8_t)(v >> 16);
            buf[i + 4] = (uint8_t)(v >> 8);
            buf[i + 5] = (uint8_t)v;
        }
    }
    int r = px_conn_write_nocap(hc->c, buf, 9 + flen);
    if (r == 0 && len > 9 + flen)
        r = px_conn_write_nocap(hc->c, data + 9 + flen, len - 9 - flen);
    return r;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s, (void)flags;
    h2_conn_t *hc = ud;
    if (PX_UNLIKELY(!hc->settings_sent)) {
        hc->settings_sent = 1;
        return send_first_settings(hc, data, len) == 0 ? (ssize_t)len
                                                       : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (px_conn_pending(hc->c) >= high_water(hc))
        return NGHTTP2_ERR_WOULDBLOCK;
    if (px_conn_write_nocap(hc->c, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

/* File bytes [off, off + n) as a slice reference on the connection, read ahead
 * within what the flow-control windows let us send next. */
static int write_file(h2_conn_t *hc, h2_stream_t *st, h2_chunk_t *ch, size_t n)
{
    if (!st->ra || st->ra_fd != ch->fd || ch->off < st->ra_off ||
        ch->off + n > st->ra_off + st->ra->len) {
        int32_t sw = nghttp2_session_get_stream_remote_window_size(hc->sess, st->id);
        int32_t cw = nghttp2_session_get_remote_window_size(hc->sess);
        uint64_t more = (uint64_t)(sw < cw ? (sw > 0 ? sw : 0) : (cw > 0 ? cw : 0));
        uint64_t want = n + more;
        if (want > READ_AHEAD_MAX)
            want = READ_AHEAD_MAX < n ? n : READ_AHEAD_MAX;
        if (want > ch->len)
            want = ch->len;
        px_slice_t *s = px_slice_new((size_t)want);
        if (!s)
            return -ENOMEM;
        size_t got = 0;
        while (got < want) {
            ssize_t k = pread(ch->fd, s->data + got, (size_t)want - got, (off_t)(ch->off + got));
            if (k <= 0) {
                px_slice_unref(s);
                return k == 0 ? -EIO : -errno; /* the file shrank or failed */
            }
            got += (size_t)k;
        }
        if (st->ra)
            px_slice_unref(st->ra);
        st->ra = s;
        st->ra_off = ch->off;
        st->ra_fd = ch->fd;
    }
    return px_conn_write_slice_nocap(hc->c, st->ra, (size_t)(ch->off - st->ra_off), n);
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    (void)s;
    h2_conn_t *hc = ud;
    h2_stream_t *st = src->ptr;
    if (px_conn_pending(hc->c) >= high_water(hc))
        return NGHTTP2_ERR_WOULDBLOCK;
    px_conn_t *c = hc->c;
    int r = px_conn_write_nocap(c, framehd, 9);
    if (frame->data.padlen > 0) /* we never pad, but the field would be the pad length */
        r |= px_conn_write_nocap(c, "\0", 1);
    size_t left = length;
    while (r == 0 && left) {
        h2_chunk_t *ch = q_at(st, 0);
        size_t k = ch->len < left ? (size_t)ch->len : left;
        if (ch->kind == CH_MEM)
            r = px_conn_write_nocap(c, ch->p, k);
        else if (ch->kind == CH_SLICE)
            r = k <= SMALL_COPY ? px_conn_write_nocap(c, ch->sl->data + ch->off, k)
                                : px_conn_write_slice_nocap(c, ch->sl, (size_t)ch->off, k);
        else
            r = write_file(hc, st, ch, k);
        if (r)
            break;
        left -= k;
        q_advance(st, ch, k);
    }
    if (r) {
        px_log(PX_LOG_WARN, "h2 conn %llu stream %d: cannot send the body: %s",
               (unsigned long long)px_conn_id(c), st->id, px_strerror(r));
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (st->qbytes == 0 && !st->eof && !st->draining &&
        ((st->req.drain_cb && st->req.streaming) || (st->tunnel && st->tcb && st->tcb->on_drain))) {
        st->draining = 1;
        st->lnext = hc->drains;
        hc->drains = st;
    }
    if (st->qbytes == 0 && st->ra) {
        px_slice_unref(st->ra);
        st->ra = NULL;
    }
    return 0;
}

/* Checks nghttp2 leaves out with RFC 7540 priorities off (RFC 9113 6.3). */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    (void)s;
    h2_conn_t *hc = ud;
    if (hd->type == NGHTTP2_PRIORITY && hd->stream_id == 0) {
        terminate(hc, NGHTTP2_PROTOCOL_ERROR, "PRIORITY on stream 0");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    h2_conn_t *hc = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st)
            st->trailers = 1;
        return 0;
    }
    if (hc->nstreams >= hc->http->opts.h2_max_concurrent_streams) {
        /* Over SETTINGS_MAX_CONCURRENT_STREAMS: refused, the client may retry it
         * (RFC 9113 5.1.2, 8.7); nghttp2 decodes and drops its header block. */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2_stream_t *st = stream_new(hc, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    px_metric_add(m_streams, 1);
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
    px_timer_start(px_conn_loop(hc->c), &st->timer, hc->http->opts.header_timeout_ms);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags, (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!st)
        return 0;
    px__http_t *h = st->req.http;
    /* RFC 9113 6.5.2 counts 32 bytes per field: an HPACK "bomb" of small
     * references to a big table entry is bounded by this, not by the bytes
     * on the wire. Past the limit, fields are dropped and the answer is 431. */
    st->hsize += namelen + valuelen + 32;
    if (st->reject || st->trailers)
        return 0;
    if (st->hsize > h->opts.max_header_size) {
        st->reject = 431;
        st->reject_msg = "the request header list exceeds the limit";
        return 0;
    }
    px__arena_t *a = &st->req.arena;
    if (namelen && name[0] == ':') {
        char *v = px__arena_memdup(a, value, valuelen);
        if (!v)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        px_str_t sv = {v, valuelen};
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            st->method = sv;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            st->path = sv;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            st->authority = sv;
        else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0)
            st->protocol = sv;
        return 0; /* :scheme: checked by nghttp2, not needed */
    }
    if (st->nhdrs == h->opts.max_headers) {
        st->reject = 431;
        st->reject_msg = "too many header fields";
        return 0;
    }
    if (st->nhdrs == st->hcap) {
        uint32_t cap = st->hcap ? st->hcap * 2 : 16;
        if (cap > h->opts.max_headers)
            cap = (uint32_t)h->opts.max_headers;
        px__http_header_t *n = px__arena_alloc(a, cap * sizeof *n);
        if (!n)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (st->nhdrs)
            memcpy(n, st->hdrs, st->nhdrs * sizeof *n);
        st->hdrs = n;
        st->hcap = cap;
    }
    char *nm = px__arena_memdup(a, name, namelen);
    char *v = px__arena_memdup(a, value, valuelen);
    if (!nm || !v)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->hdrs[st->nhdrs++] = (px__http_header_t){{nm, namelen}, {v, valuelen}};
    return 0;
}

static int64_t parse_clen(px_str_t v)
{
    if (!v.len || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        n = n * 10 + (v.ptr[i] - '0');
    }
    return n;
}

/* The head is complete: fill the request as the HTTP/1 parser would. */
static int build_head(h2_stream_t *st)
{
    px_req_t *req = &st->req;
    px__http1_request_t *h = &req->h;
    h->method = st->method;
    h->target = st->path;
    h->minor_version = 0;
    h->keep_alive = 1;
    h->content_length = -1;
    h->is_head = st->method.len == 4 && memcmp(st->method.ptr, "HEAD", 4) == 0;
    if (st->path.ptr) {
        const char *q = memchr(st->path.ptr, '?', st->path.len);
        if (q) {
            h->path = (px_str_t){st->path.ptr, (size_t)(q - st->path.ptr)};
            h->query = (px_str_t){q + 1, st->path.len - h->path.len - 1};
        } else {
            h->path = st->path;
        }
    }
    px_str_t host = st->authority;
    for (uint32_t i = 0; i < st->nhdrs; i++) {
        px__http_header_t *f = &st->hdrs[i];
        if (f->name.len == 14 && memcmp(f->name.ptr, "content-length", 14) == 0)
            h->content_length = parse_clen(f->value);
        else if (!host.ptr && f->name.len == 4 && memcmp(f->name.ptr, "host", 4) == 0)
            host = f->value;
    }
    h->host = host;
    /* Handlers read Host as on HTTP/1.1: :authority stands in for it. */
    if (st->authority.ptr &&
        !px__http1_find_header(
            &(px__http1_request_t){.headers = st->hdrs, .num_headers = st->nhdrs}, "host")) {
        if (st->nhdrs == st->hcap) {
            uint32_t cap = st->hcap + 1;
            px__http_header_t *n = px__arena_alloc(&req->arena, cap * sizeof *n);
            if (!n)
                return -ENOMEM;
            if (st->nhdrs)
                memcpy(n, st->hdrs, st->nhdrs * sizeof *n);
            st->hdrs = n;
            st->hcap = cap;
        }
        st->hdrs[st->nhdrs++] = (px__http_header_t){{"host", 4}, st->authority};
    }
    h->headers = st->hdrs;
    h->num_headers = st->nhdrs;
    req->detached = 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    h2_conn_t *hc = ud;
    uint64_t now = now_ms(hc);
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (!st || st->ran)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (build_head(st) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            /* The request line HTTP/1.1 would have ("GET <path> HTTP/1.1") is
             * bounded as there (--max-request-line). */
            if (!st->reject &&
                st->method.len + st->path.len + 10 > hc->http->opts.max_request_line) {
                st->reject = 414;
                st->reject_msg = "the request target exceeds the limit";
            }
            if (st->protocol.ptr && !st->reject) {
                if (st->protocol.len == 9 && memcmp(st->protocol.ptr, "websocket", 9) == 0) {
                    /* RFC 8441: routed like the GET an HTTP/1.1 upgrade is, and
                     * answered by the WebSocket layer with px__req_tunnel. */
                    st->req.h.method = (px_str_t){"GET", 3};
                    st->req.h.upgrade = 1;
                    st->req.h.upgrade_proto = st->protocol;
                } else {
                    st->reject = 501;
                    st->reject_msg = "extended CONNECT is only supported for websocket";
                }
            }
            int64_t cl = st->req.h.content_length;
            if (!st->reject && cl > 0 && (uint64_t)cl > hc->http->opts.max_body) {
                /* Answered before the body is read; the stream is then reset. */
                st->reject = 413;
                st->reject_msg = "the request body exceeds the limit";
                answer_early(hc, st, 413, st->reject_msg);
                return 0;
            }
        }
        /* CONNECT (RFC 9113 8.5) never ends its request: what follows is a tunnel's
         * bytes, so it is answered at once (501 unless a route takes CONNECT). */
        int connect = st->method.len == 7 && memcmp(st->method.ptr, "CONNECT", 7) == 0;
        if (!st->complete && ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) || connect))
            ready(hc, st);
        return 0;
    }
    case NGHTTP2_DATA: {
        if (frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
            bucket_take(&hc->empty_data, EMPTY_DATA_BURST, EMPTY_DATA_RATE, now) != 0) {
            terminate(hc, NGHTTP2_ENHANCE_YOUR_CALM, "flood of empty DATA frames");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st && st->tunnel && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            tun_close(&st->tun); /* the client is done: so are we (RFC 8441 4) */
        else if (st && !st->ran && !st->complete && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            ready(hc, st);
        return 0;
    }
    case NGHTTP2_RST_STREAM: {
        px_metric_add(m_rst_recv, 1);
        uint64_t rate = hc->http->opts.h2_max_concurrent_streams;
        if (rate < RESET_RATE_MIN)
            rate = RESET_RATE_MIN;
        if (bucket_take(&hc->resets, 2 * rate, rate, now) != 0) {
            terminate(hc, NGHTTP2_ENHANCE_YOUR_CALM, "too many stream resets (rapid reset)");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
            bucket_take(&hc->settings, SETTINGS_BURST, SETTINGS_RATE, now) != 0) {
            terminate(hc, NGHTTP2_ENHANCE_YOUR_CALM, "SETTINGS flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            hc->ping_out = 0;
            return 0;
        }
        if (bucket_take(&hc->pings, PING_BURST, PING_RATE, now) != 0) {
            terminate(hc, NGHTTP2_ENHANCE_YOUR_CALM, "PING flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    default: return 0;
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    h2_conn_t *hc = ud;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    /* The stream's window is given back at once (its body is bounded by
     * max_body); the connection's only while the bodies held stay bounded. */
    nghttp2_session_consume_stream(s, id, len);
    if (hc->body_bytes + len > hc->http->opts.max_body + hc->http->opts.h2_initial_window)
        hc->withheld += len;
    else
        nghttp2_session_consume_connection(s, len);
    if (st && st->tunnel) {
        if (!st->tcb || st->tclosing)
            return 0;
        if (px_buf_size(&st->tin) + len > st->tlimit || px_buf_append(&st->tin, data, len) != 0) {
            px_log(PX_LOG_WARN, "h2 conn %llu stream %d: tunnel input over its limit, resetting",
                   (unsigned long long)px_conn_id(hc->c), id);
            tun_abort(&st->tun);
            px_buf_dispose(&st->tin);
            return 0;
        }
        tun_deliver(st);
        return 0;
    }
    if (!st || st->ran)
        return 0; /* answered early (413, 408): the rest of the body is dropped */
    if (px_buf_size(&st->body) + len > hc->http->opts.max_body) {
        answer_early(hc, st, 413, "the request body exceeds the limit");
        body_release(st);
        return 0;
    }
    if (px_buf_append(&st->body, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    hc->body_bytes += len;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    h2_conn_t *hc = ud;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    unlink_stream(st);
    st->closed = 1;
    px_timer_stop(&st->timer);
    q_clear(st);
    body_release(st);
    if (st->tunnel) {
        tun_gone(st);
        stream_free(st);
    } else if (!st->ran || st->req.finished) {
        stream_free(st);
    } else {
        /* The handler's owner still holds the request: tell it; its answer
         * (or the end of its stream) frees the stream through done. */
        st->in_gone = 1;
        px__req_gone(&st->req);
        st->in_gone = 0;
        if (st->req.finished)
            stream_free(st);
    }
    if (hc->nstreams == 0)
        kick(hc); /* idle timer, or the end of a graceful shutdown */
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    h2_conn_t *hc = ud;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        px_metric_add(m_rst_sent, 1);
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
        uint32_t e = frame->goaway.error_code;
        px_metric_add(m_goaway[e < GOAWAY_CODES ? e : GOAWAY_CODES], 1);
    } else if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
               (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* The answer is complete before the request (413, 408): stop the rest of
         * the request with NO_ERROR (RFC 9113 8.1). */
        h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st && !st->complete && !st->closed)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    (void)hc;
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *frame, int err, void *ud)
{
    (void)s, (void)ud;
    px_log(PX_LOG_DEBUG, "h2: invalid frame type %u on stream %d: %s", frame->hd.type,
           frame->hd.stream_id, nghttp2_strerror(err));
    return 0;
}

/* ---- the connection ----------------------------------------------------------------------------
 */

/* Idle time allowed with no open stream (as HTTP/1.1 between requests). */
static uint64_t idle_ms(const h2_conn_t *hc)
{
    uint64_t ka = hc->http->opts.keepalive_timeout_ms;
    uint64_t idle = px_server_opts(hc->http->server)->idle_timeout_ms;
    return idle && (ka == 0 || idle < ka) ? idle : ka;
}

/* Flush the session: frames out, drain callbacks, postponed handlers; close
 * when the session is over. */
static void flush(h2_conn_t *hc)
{
    px_conn_t *c = hc->c;
    if (hc->in_flush || px_conn_is_closing(c))
        return;
    hc->in_flush = 1;
    for (int round = 0; round < 64; round++) {
        int r = nghttp2_session_send(hc->sess);
        if (r != 0) {
            px_log(PX_LOG_DEBUG, "h2 conn %llu: send: %s", (unsigned long long)px_conn_id(c),
                   nghttp2_strerror(r));
            hc->in_flush = 0;
            px_conn_abort(c);
            return;
        }
        int again = 0;
        while (hc->drains) {
            h2_stream_t *st = hc->drains;
            hc->drains = st->lnext;
            st->lnext = NULL;
            st->draining = 0;
            if (st->tunnel) {
                if (st->tcb && st->tcb->on_drain && !st->tclosing)
                    st->tcb->on_drain(st->tud);
                again = 1;
            } else if (st->req.drain_cb && !st->req.finished && !st->req.aborted) {
                st->req.drain_cb(&st->req, st->req.drain_ud);
                again = 1;
            }
        }
        while (hc->redeliver) {
            h2_stream_t *st = hc->redeliver;
            hc->redeliver = st->rnext;
            st->rnext = NULL;
            st->queued = 0;
            tun_deliver(st);
            again = 1;
        }
        while (hc->waiting && out_used(hc) < out_budget(hc)) {
            h2_stream_t *st = hc->waiting;
            hc->waiting = st->lnext;
            if (!hc->waiting)
                hc->waiting_tail = NULL;
            st->lnext = NULL;
            st->waiting = 0;
            run_stream(st);
            again = 1;
        }
        if (!again || px_conn_is_closing(c))
            break;
    }
    hc->in_flush = 0;
    if (px_conn_is_closing(c))
        return;
    if (!nghttp2_session_want_read(hc->sess) && !nghttp2_session_want_write(hc->sess)) {
        px_conn_close(c);
        return;
    }
    if (hc->shutdown && hc->nstreams == 0 && !nghttp2_session_want_write(hc->sess)) {
        px_conn_close(c);
        return;
    }
    /* Idle: no open stream (with streams open, the same timer pings a quiet peer). */
    if (hc->nstreams == 0)
        px_conn_set_timeout(c, idle_ms(hc));
}

static void *h2_accept(px_conn_t *c, void *ud)
{
    px__http_t *h = ud;
    h2_conn_t *hc = px__calloc(1, sizeof *hc);
    if (!hc || nghttp2_session_server_new2(&hc->sess, callbacks, hc, session_opts) != 0) {
        px__free(hc);
        px_conn_abort(c);
        return NULL;
    }
    hc->c = c;
    hc->http = h;
    px_defer_init(&hc->kick, on_kick, hc);
    const px_http_opts_t *o = &h->opts;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0x7fffffff}, /* see send_first_settings */
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->h2_initial_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, o->h2_max_frame_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)o->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* WebSocket over HTTP/2 (RFC 8441) */
    };
    nghttp2_submit_settings(hc->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    /* The connection window: room for the streams' windows, at least 1 MiB. */
    uint64_t cw = (uint64_t)o->h2_initial_window * 4;
    if (cw < (1u << 20))
        cw = 1u << 20;
    if (cw > 0x7fffffff)
        cw = 0x7fffffff;
    nghttp2_session_set_local_window_size(hc->sess, NGHTTP2_FLAG_NONE, 0, (int32_t)cw);
    /* Frames (the preface's SETTINGS, then any) are bounded by the frame size;
     * nghttp2 keeps partial frames itself, so the connection keeps nothing. */
    px_conn_set_read_limit(c, 64u << 10);
    px_conn_set_timeout(c, idle_ms(hc));
    px_metric_add(m_conns, 1);
    return hc;
}

static ssize_t h2_on_read(px_conn_t *c, char *data, size_t len)
{
    h2_conn_t *hc = px_conn_state(c);
    if (hc->term) /* GOAWAY with an error sent: nothing more is read */
        return (ssize_t)len;
    hc->in_recv = 1;
    ssize_t r = nghttp2_session_mem_recv(hc->sess, (const uint8_t *)data, len);
    hc->in_recv = 0;
    if (r < 0) {
        if (!hc->term) {
            uint32_t code = r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                                ? NGHTTP2_ENHANCE_YOUR_CALM
                            : r == NGHTTP2_ERR_NOMEM || r == NGHTTP2_ERR_CALLBACK_FAILURE
                                ? NGHTTP2_INTERNAL_ERROR
                                : NGHTTP2_PROTOCOL_ERROR;
            terminate(hc, code, nghttp2_strerror((int)r));
        }
        nghttp2_session_send(hc->sess); /* the GOAWAY */
        px_conn_close(c);
        return -1;
    }
    if (px_conn_is_closing(c))
        return -1;
    if (hc->nstreams)
        px_conn_set_timeout(c, idle_ms(hc)); /* traffic: the peer is alive */
    flush(hc);
    if (px_conn_is_closing(c))
        return -1;
    return (ssize_t)len;
}

static void h2_on_drain(px_conn_t *c)
{
    h2_conn_t *hc = px_conn_state(c);
    flush(hc);
}

static void h2_on_timeout(px_conn_t *c)
{
    h2_conn_t *hc = px_conn_state(c);
    if (hc->nstreams == 0) {
        /* Idle: say goodbye properly, then close. */
        nghttp2_submit_goaway(hc->sess, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->sess), NGHTTP2_NO_ERROR,
                              NULL, 0);
        hc->shutdown = 1;
        flush(hc);
        if (!px_conn_is_closing(c))
            px_conn_close(c);
        return;
    }
    if (hc->ping_out) {
        px_log(PX_LOG_DEBUG, "h2 conn %llu: no PING ACK, closing",
               (unsigned long long)px_conn_id(c));
        px_conn_abort(c);
        return;
    }
    /* Streams are open but the peer is quiet: is it still there? */
    hc->ping_out = 1;
    nghttp2_submit_ping(hc->sess, NGHTTP2_FLAG_NONE, NULL);
    px_conn_set_timeout(c, idle_ms(hc));
    flush(hc);
}

static void h2_on_shutdown(px_conn_t *c)
{
    h2_conn_t *hc = px_conn_state(c);
    if (!hc->shutdown) {
        /* Streamed answers (SSE) never end by themselves: cut them; WebSockets
         * say goodbye (1001). Both go out before the GOAWAY, which strict
         * clients take as the last word; their owners hear it (on_abort) once
         * the reset is out. */
        for (h2_stream_t *st = hc->streams, *next; st; st = next) {
            next = st->next;
            if (st->tunnel && st->tcb && st->tcb->on_shutdown)
                st->tcb->on_shutdown(st->tud);
            else if (st->req.streaming && !st->req.finished)
                nghttp2_submit_rst_stream(hc->sess, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        }
        flush(hc);
        if (px_conn_is_closing(c))
            return;
        hc->shutdown = 1;
        nghttp2_submit_goaway(hc->sess, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->sess), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    flush(hc);
}

static void h2_on_eof(px_conn_t *c)
{
    /* A client that half-closes cannot send WINDOW_UPDATE or SETTINGS ACK any
     * more: what is queued goes out, then the connection closes. */
    h2_conn_t *hc = px_conn_state(c);
    flush(hc);
    if (!px_conn_is_closing(c))
        px_conn_close(c);
}

static void h2_on_close(px_conn_t *c)
{
    h2_conn_t *hc = px_conn_state(c);
    if (!hc)
        return;
    px_metric_add(m_conns, -1);
    /* Streams whose requests are outstanding stay with their owners. */
    while (hc->streams) {
        h2_stream_t *st = hc->streams;
        unlink_stream(st);
        px_timer_stop(&st->timer);
        q_clear(st);
        body_release(st);
        st->closed = 1;
        st->hc = NULL;
        if (st->tunnel) {
            tun_gone(st);
            stream_free(st);
            continue;
        }
        if (!st->ran || st->req.finished) {
            stream_free(st);
            continue;
        }
        st->in_gone = 1;
        px__req_gone(&st->req);
        st->in_gone = 0;
        if (st->req.finished)
            stream_free(st);
    }
    while (hc->spare) {
        h2_stream_t *st = hc->spare;
        hc->spare = st->lnext;
        px__req_dispose(&st->req);
        px__free(st);
    }
    nghttp2_session_del(hc->sess);
    hc->sess = NULL;
    if (hc->kick._queued)
        hc->dead = 1; /* on_kick frees it */
    else
        px__free(hc);
}

static const px_protocol_t h2_protocol = {
    .name = "h2",
    .on_read = h2_on_read,
    .on_drain = h2_on_drain,
    .on_timeout = h2_on_timeout,
    .on_shutdown = h2_on_shutdown,
    .on_eof = h2_on_eof,
    .on_close = h2_on_close,
};

/* ---- set-up ------------------------------------------------------------------------------------
 */

int px__h2_setup(px__http_t *h)
{
    if (!callbacks) {
        if (nghttp2_session_callbacks_new(&callbacks) != 0)
            return -ENOMEM;
        nghttp2_session_callbacks_set_send_callback(callbacks, on_send);
        nghttp2_session_callbacks_set_send_data_callback(callbacks, on_send_data);
        nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame);
        if (nghttp2_option_new(&session_opts) != 0)
            return -ENOMEM;
        /* The windows are given back by us (on_data_chunk), so that buffered
         * request bodies stay bounded per connection. */
        nghttp2_option_set_no_auto_window_update(session_opts, 1);
        nghttp2_option_set_no_closed_streams(session_opts, 1);
        nghttp2_option_set_max_continuations(session_opts, MAX_CONTINUATION);
        nghttp2_option_set_max_outbound_ack(session_opts, 1000);
        nghttp2_option_set_max_settings(session_opts, 32);
        /* Our own reset limiter answers ENHANCE_YOUR_CALM first (nghttp2's own
         * would close with another code). */
        nghttp2_option_set_stream_reset_rate_limit(session_opts, 1u << 20, 1u << 20);
    }
    m_conns =
        px_metric_register("plexus_http2_connections", "Open HTTP/2 connections", PX_METRIC_GAUGE);
    m_streams = px_metric_register("plexus_http2_streams_total", "HTTP/2 request streams opened",
                                   PX_METRIC_COUNTER);
    m_rst_recv = px_metric_register("plexus_http2_resets_received_total",
                                    "RST_STREAM frames received from clients", PX_METRIC_COUNTER);
    m_rst_sent = px_metric_register("plexus_http2_resets_sent_total", "RST_STREAM frames sent",
                                    PX_METRIC_COUNTER);
    for (unsigned i = 0; i <= GOAWAY_CODES; i++) {
        char name[96];
        snprintf(name, sizeof name, "plexus_http2_goaway_sent_total{reason=\"%s\"}",
                 i < GOAWAY_CODES ? goaway_reason[i] : "other");
        m_goaway[i] =
            px_metric_register(name, "GOAWAY frames sent, by error code (no_error: shutdown, idle)",
                               PX_METRIC_COUNTER);
    }
    return px_server_add_protocol(h->server, "h2", &h2_protocol, h2_accept, h);
}
