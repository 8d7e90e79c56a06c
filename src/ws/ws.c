/* WebSocket connections: the upgrade handshake, the frame state machine on top
 * of the pure pieces (ws_frame, utf8, ws_deflate), keep-alive pings, the close
 * handshake, backpressure, and topics (cross-worker broadcast of one frame).
 *
 * Input: a frame is handled when it is complete; bytes of a frame still
 * arriving stay in the connection's input buffer. Its available payload is
 * unmasked and (for text) UTF-8-checked as it arrives, `done` bytes at a time,
 * so a bad byte fails the connection at once, even mid-frame, and no byte is
 * processed twice. A single-frame message is delivered straight from the
 * input buffer; fragments are collected in `msg`.
 *
 * Compressed frames are inflated when complete, in slices: one on_read call
 * inflates at most INFLATE_BUDGET_IN bytes of input or INFLATE_BUDGET_OUT of
 * output, then yields (reads paused, resumed from a deferred callback, so the
 * rest of the loop runs in between) and goes on where it stopped (`fed`).
 *
 * Once the server has sent its close, data frames are dropped unread (not
 * unmasked, inflated or delivered): only the peer's close matters then. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/upgrade.h"
#include "net/conn_direct.h"
#include "plexus/ws.h"
#include "util/base64.h"
#include "util/crypto.h"
#include "util/utf8.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

static int m_ws_open = -1, m_ws_in = -1, m_ws_out = -1, m_ws_slow = -1;

typedef struct ws_route {
    const px_ws_callbacks_t *cb;
    void *ud;
    const px_ws_opts_t *opts; /* the module's: px_ws_configure changes them in place */
    struct ws_route *next;
} ws_route_t;

/* The WebSocket module's state on a server (px_server_module): its options and its routes
 * (freed with the server). Made by the first px_ws_configure or px_ws_route, so a server
 * without WebSocket links none of this file (nor SHA-1 and zlib with it). */
typedef struct ws_module {
    px_ws_opts_t opts;
    ws_route_t *routes;
} ws_module_t;

static char ws_module_key;

static void ws_module_free(void *p)
{
    ws_module_t *m = p;
    while (m->routes) {
        ws_route_t *r = m->routes;
        m->routes = r->next;
        px__free(r);
    }
    px__free(m);
}

static ws_module_t *ws_module(px_server_t *s)
{
    ws_module_t *m = px_server_module(s, &ws_module_key);
    if (m)
        return m;
    m = px__calloc(1, sizeof *m);
    if (!m)
        return NULL;
    px_ws_opts_init(&m->opts);
    if (px_server_module_set(s, &ws_module_key, m, ws_module_free) != 0) {
        px__free(m);
        return NULL;
    }
    return m;
}

/* What a connection needs only now and then (fragmented or compressed
 * messages, a close from either side, an inflate that yields): allocated the
 * first time, kept until the connection ends, so an idle connection is one
 * small struct. */
typedef struct ws_rx {
    px_buf_t msg;      /* fragments of the message being received */
    uint64_t fed;      /* compressed payload bytes of the current frame already inflated
                          (the frame is complete; 0 unless a slice ran out of budget) */
    uint64_t skip;     /* payload bytes still to drop of a data frame after close_sent */
    px_defer_t resume; /* ends a yield: resumes reading on the next loop iteration */
    uint8_t close_reason_len;
    char close_reason[123];
} ws_rx_t;

struct px_ws {
    /* First cache line: what delivering a frame reads (topics, px_ws_send_frame). */
    px_conn_t *c;           /* the connection (under a tunnel: the HTTP/2 connection) */
    px__tunnel_t *t;        /* NULL on HTTP/1.1; the HTTP/2 stream under it (RFC 8441) */
    px_ws_t *tnext, *tprev; /* links in the topic's per-worker list */
    px_ws_topic_t *topic;
    uint32_t t_epoch; /* topic batch this member already has frames [0, t_from) of */
    uint32_t t_from;
    unsigned msg_compressed : 1;
    unsigned close_sent : 1;
    unsigned close_received : 1;
    unsigned awaiting_pong : 1;
    unsigned failed : 1;
    unsigned yielded : 1;    /* reads paused by an inflate slice that ran out of budget */
    unsigned dead : 1;       /* closed while rx->resume was queued: the callback frees ws */
    uint16_t close_code;     /* received from the peer (1005 none, 1006 none yet) */
    uint8_t msg_opcode;      /* opcode of the fragmented message in progress, 0 if none */
    px__utf8_state_t utf8;   /* across the text message being received */
    const ws_route_t *route; /* route->opts: the options */
    /* Reading. */
    uint64_t done;             /* payload bytes of the current frame already unmasked/checked */
    ws_rx_t *rx;               /* NULL until needed */
    px__ws_deflate_t *deflate; /* NULL unless negotiated */
    void *data;
    char *subprotocol;
};

static const px_protocol_t ws_protocol;
static void on_resume(px_defer_t *d);
static void topic_sync(px_ws_t *ws);

static ws_rx_t *rx_get(px_ws_t *ws)
{
    if (PX_LIKELY(ws->rx != NULL))
        return ws->rx;
    ws_rx_t *rx = px__calloc(1, sizeof *rx);
    if (!rx)
        return NULL;
    px_buf_init(&rx->msg, 0);
    px_defer_init(&rx->resume, on_resume, ws);
    ws->rx = rx;
    return rx;
}

static size_t msg_size(const px_ws_t *ws)
{
    return ws->rx ? px_buf_size(&ws->rx->msg) : 0;
}

/* ---- the byte stream under a WebSocket --------------------------------------------------------
 * An HTTP/1.1 connection (ws->c, upgraded in place) or an HTTP/2 stream (ws->t,
 * an extended CONNECT): the same frames over either. On HTTP/1.1 each of these
 * is the px_conn_* call it was, behind one well-predicted branch. */

static inline int bs_write(px_ws_t *ws, const void *p, size_t n)
{
    return PX_LIKELY(!ws->t) ? px_conn_write(ws->c, p, n) : ws->t->ops->write(ws->t, p, n, 0);
}

static inline int bs_write_nocap(px_ws_t *ws, const void *p, size_t n)
{
    return PX_LIKELY(!ws->t) ? px_conn_write_nocap(ws->c, p, n) : ws->t->ops->write(ws->t, p, n, 1);
}

static inline int bs_write_slice(px_ws_t *ws, px_slice_t *s, size_t off, size_t n)
{
    return PX_LIKELY(!ws->t) ? px_conn_write_slice(ws->c, s, off, n)
                             : ws->t->ops->write_slice(ws->t, s, off, n, 0);
}

static inline size_t bs_pending(const px_ws_t *ws)
{
    return PX_LIKELY(!ws->t) ? px_conn_pending(ws->c) : ws->t->ops->pending(ws->t);
}

static inline int bs_closing(const px_ws_t *ws)
{
    return PX_LIKELY(!ws->t) ? px_conn_is_closing(ws->c) : ws->t->ops->is_closing(ws->t);
}

static inline void bs_close(px_ws_t *ws)
{
    if (PX_LIKELY(!ws->t))
        px_conn_close(ws->c);
    else
        ws->t->ops->close(ws->t);
}

static inline void bs_abort(px_ws_t *ws)
{
    if (PX_LIKELY(!ws->t))
        px_conn_abort(ws->c);
    else
        ws->t->ops->abort(ws->t);
}

static inline void bs_timeout(px_ws_t *ws, uint64_t ms)
{
    if (PX_LIKELY(!ws->t))
        px_conn_set_timeout(ws->c, ms);
    else
        ws->t->ops->set_timeout(ws->t, ms);
}

static inline void bs_pause(px_ws_t *ws, int paused)
{
    if (PX_LIKELY(!ws->t))
        px_conn_pause_read(ws->c, paused);
    else
        ws->t->ops->pause(ws->t, paused);
}

/* Inflate work per on_read call: a slice costs a few milliseconds at most, so
 * a huge or hostile compressed message never holds the worker for long. Input
 * goes in INFLATE_CHUNK bytes at a time, which bounds the output of one call
 * too (deflate expands at most ~1032:1). */
#define INFLATE_CHUNK      (4u << 10)
#define INFLATE_BUDGET_IN  (256u << 10)
#define INFLATE_BUDGET_OUT (4u << 20)

typedef struct budget {
    size_t in, out; /* inflate bytes used in this on_read call */
} budget_t;

void px_ws_opts_init(px_ws_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_message = 16u << 20;
    o->ping_interval_ms = 30000;
    o->close_timeout_ms = 5000;
    o->deflate = 0;
    o->deflate_threshold = 256;
    o->deflate_memory = 512u << 10;
    o->slow_policy = PX_WS_SLOW_CLOSE;
}

static void register_metrics(void)
{
    m_ws_open =
        px_metric_register("plexus_ws_connections", "Open WebSocket connections", PX_METRIC_GAUGE);
    m_ws_in = px_metric_register("plexus_ws_messages_received_total", "WebSocket messages received",
                                 PX_METRIC_COUNTER);
    m_ws_out = px_metric_register("plexus_ws_messages_sent_total",
                                  "WebSocket messages queued for sending", PX_METRIC_COUNTER);
    m_ws_slow = px_metric_register("plexus_ws_slow_consumer_closes_total",
                                   "WebSocket connections closed over their output budget",
                                   PX_METRIC_COUNTER);
}

int px_ws_configure(px_server_t *s, const px_ws_opts_t *o)
{
    if (o->max_message == 0)
        return -EINVAL;
    ws_module_t *m = ws_module(s);
    if (!m)
        return -ENOMEM;
    m->opts = *o;
    return 0;
}

/* ---- sending ------------------------------------------------------------------------ */

/* Output budget exceeded: apply the policy. */
static int slow_consumer(px_ws_t *ws)
{
    if (ws->route->opts->slow_policy == PX_WS_SLOW_DROP)
        return -ENOBUFS;
    if (!ws->failed) {
        ws->failed = 1;
        px_metric_add(m_ws_slow, 1);
        px_log(PX_LOG_WARN, "ws conn %llu: slow consumer, %zu bytes queued: closing with 1008",
               (unsigned long long)px_conn_id(ws->c), bs_pending(ws));
        uint8_t frame[2 + 2 + 13] = {0x88, 2 + 13, 1008 >> 8, 1008 & 0xff};
        memcpy(frame + 4, "slow consumer", 13);
        bs_write_nocap(ws, frame, sizeof frame);
        ws->close_sent = 1;
        bs_close(ws);
    }
    return -ENOBUFS;
}

/* Messages up to this size are sent as one piece (header and payload joined on
 * the stack): one write into the connection's output instead of two. */
#define WS_JOIN_MAX 256

/* send_raw on an HTTP/2 stream (RFC 8441): the same, through the tunnel's ops. */
static __attribute__((noinline)) int send_raw_tunnel(px_ws_t *ws, unsigned opcode, int rsv1,
                                                     const void *data, size_t len)
{
    if (ws->close_sent || bs_closing(ws))
        return -EPIPE;
    uint8_t hdr[PX_WS_MAX_HEADER];
    size_t hl = px__ws_encode_header(hdr, opcode, 1, rsv1, len, NULL);
    size_t pending = bs_pending(ws);
    int over = 0;
    if (pending + hl + len > px_server_opts(px_conn_server(ws->c))->output_cap) {
        if (pending)
            return slow_consumer(ws);
        over = 1;
    }
    int r = over ? bs_write_nocap(ws, hdr, hl) : bs_write(ws, hdr, hl);
    if (r == 0 && len)
        r = over ? bs_write_nocap(ws, data, len) : bs_write(ws, data, len);
    if (r == -ENOBUFS)
        return slow_consumer(ws);
    if (r == 0 && !px__ws_opcode_is_control(opcode))
        px_metric_add(m_ws_out, 1);
    return r;
}

/* The HTTP/1.1 path calls the connection directly: one test of ws->t, no more. */
static int send_raw(px_ws_t *ws, unsigned opcode, int rsv1, const void *data, size_t len)
{
    if (PX_UNLIKELY(ws->t)) {
        if (PX_UNLIKELY(ws->topic != NULL))
            topic_sync(ws);
        return send_raw_tunnel(ws, opcode, rsv1, data, len);
    }
    if (ws->close_sent)
        return -EPIPE;
    if (PX_UNLIKELY(ws->topic != NULL))
        topic_sync(ws);
    uint8_t hdr[PX_WS_MAX_HEADER + WS_JOIN_MAX];
    size_t hl = px__ws_encode_header(hdr, opcode, 1, rsv1, len, NULL);
    if (len <= WS_JOIN_MAX) {
        if (len)
            memcpy(hdr + hl, data, len);
        int r = px_conn_write(ws->c, hdr, hl + len);
        if (PX_LIKELY(r == 0)) {
            if (!px__ws_opcode_is_control(opcode))
                px__metric_add(m_ws_out, 1);
            return 0;
        }
        if (r != -ENOBUFS)
            return r;
        /* Over the budget: the policy below decides. */
    }
    if (px_conn_is_closing(ws->c))
        return -EPIPE;
    size_t pending = px_conn_pending(ws->c);
    int over = 0;
    if (pending + hl + len > px_server_opts(px_conn_server(ws->c))->output_cap) {
        /* The budget bounds a backlog, not one message: a message bigger than the
         * whole budget (max_message may exceed output_cap) goes out when nothing
         * else is queued, or it could never be sent at all. */
        if (pending)
            return slow_consumer(ws);
        over = 1;
    }
    int r = over ? px_conn_write_nocap(ws->c, hdr, hl) : px_conn_write(ws->c, hdr, hl);
    if (r == 0 && len)
        r = over ? px_conn_write_nocap(ws->c, data, len) : px_conn_write(ws->c, data, len);
    if (r == -ENOBUFS)
        return slow_consumer(ws);
    if (r == 0 && !px__ws_opcode_is_control(opcode))
        px__metric_add(m_ws_out, 1);
    return r;
}

int px_ws_send(px_ws_t *ws, int opcode, const void *data, size_t len)
{
    if (opcode != PX_WS_TEXT && opcode != PX_WS_BINARY && opcode != PX_WS_PING &&
        opcode != PX_WS_PONG)
        return -EINVAL;
    if (px__ws_opcode_is_control((unsigned)opcode) && len > PX_WS_MAX_CONTROL_PAYLOAD)
        return -EMSGSIZE;
    if (ws->deflate && !px__ws_opcode_is_control((unsigned)opcode) &&
        len >= ws->route->opts->deflate_threshold) {
        px_buf_t out;
        px_buf_init(&out, 0);
        int r = px__ws_deflate_message(ws->deflate, data, len, &out, len);
        if (r == 0) {
            r = send_raw(ws, (unsigned)opcode, 1, px_buf_head(&out), px_buf_size(&out));
            px_buf_dispose(&out);
            return r;
        }
        px_buf_dispose(&out); /* incompressible (or no memory): send it plain */
    }
    return send_raw(ws, (unsigned)opcode, 0, data, len);
}

px_slice_t *px_ws_frame_new(int opcode, const void *data, size_t len)
{
    uint8_t hdr[PX_WS_MAX_HEADER];
    size_t hl = px__ws_encode_header(hdr, (unsigned)opcode, 1, 0, len, NULL);
    px_slice_t *s = px_slice_new(hl + len);
    if (!s)
        return NULL;
    memcpy(s->data, hdr, hl);
    if (len)
        memcpy(s->data + hl, data, len);
    return s;
}

/* Frames up to this size are copied into the connection's output rather than
 * shared: a copy of a few dozen bytes costs less than taking and dropping a
 * reference (atomic, the frame may be shared by several workers) and a queue
 * entry each, and a subscriber's frames then leave in one piece. */
#define WS_COPY_MAX 512

/* px_ws_send_frame without the topic check (topics call it for their batches). */
static int send_frame(px_ws_t *ws, px_slice_t *frame)
{
    if (ws->close_sent)
        return -EPIPE; /* (px_conn_write* return -EPIPE once the connection closes) */
    int r;
    if (PX_LIKELY(!ws->t)) { /* a broadcast's hot path: the connection directly */
        r = frame->len <= WS_COPY_MAX ? px_conn_write(ws->c, frame->data, frame->len)
                                      : px_conn_write_slice(ws->c, frame, 0, frame->len);
        if (PX_LIKELY(r == 0)) {
            px__metric_add(m_ws_out, 1);
            return 0;
        }
        if (r == -ENOBUFS && px_conn_pending(ws->c) == 0)
            r = px_conn_write_nocap(ws->c, frame->data, frame->len); /* as in send_raw */
    } else {
        if (bs_closing(ws))
            return -EPIPE;
        r = bs_write_slice(ws, frame, 0, frame->len);
        if (r == -ENOBUFS && bs_pending(ws) == 0)
            r = bs_write_nocap(ws, frame->data, frame->len);
    }
    if (r == -ENOBUFS)
        return slow_consumer(ws);
    if (r == 0)
        px__metric_add(m_ws_out, 1);
    return r;
}

int px_ws_send_frame(px_ws_t *ws, px_slice_t *frame)
{
    if (PX_UNLIKELY(ws->topic != NULL))
        topic_sync(ws);
    return send_frame(ws, frame);
}

static void send_close(px_ws_t *ws, unsigned code, const char *reason, size_t rlen)
{
    if (ws->close_sent || bs_closing(ws))
        return;
    if (ws->topic)
        topic_sync(ws);
    uint8_t payload[2 + 123];
    size_t n = 0;
    if (code) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)(code & 0xff);
        if (rlen > 123)
            rlen = 123;
        if (rlen)
            memcpy(payload + 2, reason, rlen);
        n = 2 + rlen;
    }
    uint8_t hdr[PX_WS_MAX_HEADER];
    size_t hl = px__ws_encode_header(hdr, PX_WS_OP_CLOSE, 1, 0, n, NULL);
    bs_write_nocap(ws, hdr, hl);
    bs_write_nocap(ws, payload, n);
    ws->close_sent = 1;
}

int px_ws_close(px_ws_t *ws, int code, const char *reason)
{
    if (code != 0 && !px__ws_close_code_valid((unsigned)code))
        return -EINVAL;
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 123 || (rl && !px__utf8_valid((const uint8_t *)reason, rl)))
        return -EINVAL;
    if (ws->close_sent)
        return -EALREADY;
    send_close(ws, (unsigned)code, reason, rl);
    /* Wait for the peer's close (bounded); then we close TCP. */
    bs_timeout(ws, ws->route->opts->close_timeout_ms);
    return 0;
}

/* Fail the connection (RFC 6455 7.1.7): send a close with `code`, drop input. */
static void fail(px_ws_t *ws, unsigned code, const char *why)
{
    if (ws->failed)
        return;
    ws->failed = 1;
    px_log(PX_LOG_DEBUG, "ws conn %llu: closing with %u: %s", (unsigned long long)px_conn_id(ws->c),
           code, why);
    send_close(ws, code, why, strlen(why) > 123 ? 123 : strlen(why));
    bs_close(ws);
}

/* ---- receiving -------------------------------------------------------------------------- */

static void deliver(px_ws_t *ws, int opcode, const char *data, size_t len)
{
    px__metric_add(m_ws_in, 1);
    if (ws->route->cb->on_message)
        ws->route->cb->on_message(ws, opcode, data, len, ws->route->ud);
}

static void on_control(px_ws_t *ws, const px__ws_frame_t *f, const uint8_t *p)
{
    size_t len = (size_t)f->payload_len;
    switch (f->opcode) {
    case PX_WS_OP_PING:
        if (!ws->close_sent)
            send_raw(ws, PX_WS_OP_PONG, 0, p, len); /* answer at once */
        break;
    case PX_WS_OP_PONG: ws->awaiting_pong = 0; break;
    case PX_WS_OP_CLOSE: {
        unsigned code = 1005;
        if (len == 1) {
            fail(ws, PX_WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
            return;
        }
        if (len >= 2) {
            code = (unsigned)p[0] << 8 | p[1];
            if (!px__ws_close_code_valid(code)) {
                fail(ws, PX_WS_CLOSE_PROTOCOL, "invalid close code");
                return;
            }
            if (!px__utf8_valid(p + 2, len - 2)) {
                fail(ws, PX_WS_CLOSE_INVALID_DATA, "close reason is not valid UTF-8");
                return;
            }
            ws_rx_t *rx = len > 2 ? rx_get(ws) : NULL;
            if (rx) { /* (without memory, the reason is not kept: the code is) */
                rx->close_reason_len = (uint8_t)(len - 2);
                memcpy(rx->close_reason, p + 2, len - 2);
            }
        }
        ws->close_code = (uint16_t)code;
        ws->close_received = 1;
        /* Echo the close (with the peer's code), then close TCP ourselves. */
        if (!ws->close_sent)
            send_close(ws, code == 1005 ? 0 : code, NULL, 0);
        bs_close(ws);
        break;
    }
    }
}

/* Inflate the rest of a complete compressed frame (from rx->fed) into msg,
 * within the budget. 0: frame done; 1: budget spent, call again later; -1:
 * failed. */
static int inflate_frame(px_ws_t *ws, const px__ws_frame_t *f, const uint8_t *p, budget_t *b)
{
    size_t len = (size_t)f->payload_len;
    size_t max = ws->route->opts->max_message;
    ws_rx_t *rx = ws->rx; /* set up with the message */
    for (;;) {
        size_t n = len - (size_t)rx->fed;
        if (n > INFLATE_CHUNK)
            n = INFLATE_CHUNK;
        int last = rx->fed + n == len;
        size_t before = px_buf_size(&rx->msg);
        int r = px__ws_inflate(ws->deflate, p + rx->fed, n, last && f->fin, &rx->msg, max);
        if (r) {
            fail(ws, (unsigned)px__ws_deflate_close_code(r),
                 r == -EMSGSIZE ? "message too big" : "invalid compressed data");
            return -1;
        }
        rx->fed += n;
        size_t got = px_buf_size(&rx->msg) - before;
        /* (nothing inflated yet may mean no buffer: no NULL + 0, which is UB) */
        if (ws->msg_opcode == PX_WS_OP_TEXT && got) {
            ws->utf8 =
                px__utf8_feed(ws->utf8, (const uint8_t *)px_buf_head(&rx->msg) + before, got);
            if (ws->utf8 == PX_UTF8_REJECT) {
                fail(ws, PX_WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
                return -1;
            }
        }
        b->in += n;
        b->out += got;
        if (last) {
            rx->fed = 0;
            return 0;
        }
        if (b->in >= INFLATE_BUDGET_IN || b->out >= INFLATE_BUDGET_OUT)
            return 1;
    }
}

/* A complete data frame (payload unmasked, text checked unless compressed).
 * 0: done; 1: a compressed frame is not fully inflated yet (budget spent, call
 * again with the same frame); -1: failed. */
static inline __attribute__((always_inline)) int on_data_frame(px_ws_t *ws, const px__ws_frame_t *f,
                                                               uint8_t *p, budget_t *b)
{
    size_t len = (size_t)f->payload_len;
    size_t max = ws->route->opts->max_message;
    if (ws->rx && ws->rx->fed) {
        /* resuming a frame whose message is already set up */
    } else if (f->opcode != PX_WS_OP_CONT) {
        if (ws->msg_opcode) {
            fail(ws, PX_WS_CLOSE_PROTOCOL, "new message before the previous one ended");
            return -1;
        }
        if (f->rsv1 && !ws->deflate) {
            fail(ws, PX_WS_CLOSE_PROTOCOL, "RSV1 set without permessage-deflate");
            return -1;
        }
        if (f->fin && !f->rsv1) { /* the common case: zero-copy delivery */
            if (f->opcode == PX_WS_OP_TEXT && !px__utf8_complete(ws->utf8)) {
                fail(ws, PX_WS_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence");
                return -1;
            }
            ws->utf8 = PX_UTF8_ACCEPT;
            deliver(ws, f->opcode, (const char *)p, len);
            return 0;
        }
        ws_rx_t *rx = rx_get(ws);
        if (!rx) {
            fail(ws, PX_WS_CLOSE_INTERNAL, "out of memory");
            return -1;
        }
        ws->msg_opcode = (uint8_t)f->opcode;
        ws->msg_compressed = f->rsv1;
        px_buf_init(&rx->msg, max + 1);
    } else if (!ws->msg_opcode) {
        fail(ws, PX_WS_CLOSE_PROTOCOL, "continuation frame without a message");
        return -1;
    }
    ws_rx_t *rx = ws->rx; /* a message is in progress: set up above or by its first frame */
    if (ws->msg_compressed) {
        int r = inflate_frame(ws, f, p, b);
        if (r)
            return r;
    } else {
        if (px_buf_size(&rx->msg) + len > max || px_buf_append(&rx->msg, p, len) != 0) {
            fail(ws, PX_WS_CLOSE_TOO_BIG, "message too big");
            return -1;
        }
    }
    if (!f->fin)
        return 0;
    if (ws->msg_opcode == PX_WS_OP_TEXT && !px__utf8_complete(ws->utf8)) {
        fail(ws, PX_WS_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence");
        return -1;
    }
    int opcode = ws->msg_opcode;
    ws->msg_opcode = 0;
    ws->utf8 = PX_UTF8_ACCEPT;
    /* A message of empty fragments never allocated msg: pass "" rather than
     * px_buf_head() of a NULL buffer (NULL + 0 is UB, and callers expect non-NULL). */
    deliver(ws, opcode, px_buf_size(&rx->msg) ? px_buf_head(&rx->msg) : "", px_buf_size(&rx->msg));
    px_buf_dispose(&rx->msg);
    return 0;
}

/* Out of inflate budget: stop reading until the next loop iteration, which
 * hands the kept input back (from the deferred callback, after the other
 * connections and timers of this iteration had their turn). */
static void yield_reads(px_ws_t *ws)
{
    ws->yielded = 1;
    bs_pause(ws, 1);
    px_defer(px_conn_loop(ws->c), &ws->rx->resume); /* (only inflating yields: rx is set up) */
}

static void ws_free(px_ws_t *ws)
{
    if (ws->rx) {
        px_buf_dispose(&ws->rx->msg);
        px__free(ws->rx);
    }
    px__free(ws);
}

static void on_resume(px_defer_t *d)
{
    px_ws_t *ws = d->data;
    if (ws->dead) { /* closed while this was queued */
        ws_free(ws);
        return;
    }
    if (ws->yielded) {
        ws->yielded = 0;
        bs_pause(ws, 0); /* re-dispatches the input kept meanwhile */
    }
}

/* Frames from the peer (both byte streams): returns the bytes used, or -1 once closing. */
static inline __attribute__((always_inline)) ssize_t ws_input(px_ws_t *ws, char *data, size_t len)
{
    size_t pos = 0;
    unsigned flags = PX_WS_PARSE_SERVER | (ws->deflate ? PX_WS_RSV1 : 0u);
    budget_t budget = {0, 0};
    while (pos < len && !ws->failed && !bs_closing(ws) && !ws->yielded) {
        if (PX_UNLIKELY(ws->rx && ws->rx->skip)) { /* the rest of a data frame after our close */
            ws_rx_t *rx = ws->rx;
            size_t n = len - pos < rx->skip ? len - pos : (size_t)rx->skip;
            pos += n;
            rx->skip -= n;
            continue;
        }
        px__ws_frame_t f;
        int hl = px__ws_parse_frame((const uint8_t *)data + pos, len - pos, &f, flags,
                                    ws->route->opts->max_message);
        if (hl == PX_PARSE_INCOMPLETE)
            break;
        if (hl < 0) {
            fail(ws, f.close_code, f.error ? f.error : "bad frame");
            return -1;
        }
        if (ws->close_sent && !px__ws_opcode_is_control(f.opcode)) {
            /* We closed: data frames are dropped unread, without the work of
             * unmasking, checking or inflating them (RFC 6455 1.4: after
             * sending a close, an endpoint only waits for the peer's). */
            pos += (size_t)hl;
            ws->done = 0;
            ws->msg_opcode = 0;
            if (f.payload_len || ws->rx) {
                ws_rx_t *rx = rx_get(ws);
                if (!rx) {
                    bs_close(ws); /* (we sent our close already) */
                    return -1;
                }
                rx->skip = f.payload_len;
                rx->fed = 0;
                px_buf_dispose(&rx->msg);
            }
            continue;
        }
        /* Errors the header alone proves come first: fail fast, and with the same
         * close code however the bytes were split into reads (a new text frame
         * inside an open message is 1002 even if its payload is not UTF-8). A
         * frame being resumed (fed) has passed them already. */
        if (!px__ws_opcode_is_control(f.opcode) && !(ws->rx && ws->rx->fed) &&
            (f.opcode == PX_WS_OP_CONT) != (ws->msg_opcode != 0)) {
            fail(ws, PX_WS_CLOSE_PROTOCOL,
                 ws->msg_opcode ? "new message before the previous one ended"
                                : "continuation frame without a message");
            return -1;
        }
        /* An uncompressed fragment that cannot fit the message limit fails now,
         * before its payload is read. */
        if (f.opcode == PX_WS_OP_CONT && !ws->msg_compressed &&
            msg_size(ws) + f.payload_len > ws->route->opts->max_message) {
            fail(ws, PX_WS_CLOSE_TOO_BIG, "message too big");
            return -1;
        }
        uint8_t *payload = (uint8_t *)data + pos + (size_t)hl;
        size_t avail = len - pos - (size_t)hl;
        if (avail > f.payload_len)
            avail = (size_t)f.payload_len;
        if (avail > ws->done) {
            /* Work on the bytes that arrived since the last call only. */
            size_t n = avail - (size_t)ws->done;
            uint8_t *fresh = payload + ws->done;
            px__ws_unmask(fresh, n, f.mask, ws->done);
            int text = f.opcode == PX_WS_OP_TEXT ||
                       (f.opcode == PX_WS_OP_CONT && ws->msg_opcode == PX_WS_OP_TEXT);
            int compressed = f.opcode == PX_WS_OP_CONT ? ws->msg_compressed : f.rsv1;
            if (text && !compressed) {
                ws->utf8 = px__utf8_feed(ws->utf8, fresh, n);
                if (ws->utf8 == PX_UTF8_REJECT) {
                    fail(ws, PX_WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
                    return -1;
                }
            }
            ws->done = avail;
        }
        if (avail < f.payload_len) {
            /* Keep the frame (header included) for the next read; the message limit
             * bounds what is kept. */
            break;
        }
        if (px__ws_opcode_is_control(f.opcode)) {
            ws->done = 0;
            pos += (size_t)hl + (size_t)f.payload_len;
            on_control(ws, &f, payload);
            continue;
        }
        int r = on_data_frame(ws, &f, payload, &budget);
        if (r < 0)
            return -1;
        if (r > 0) {
            /* Budget spent inside this frame: keep it (already unmasked, `done`
             * stays) and go on with it next iteration. */
            yield_reads(ws);
            break;
        }
        ws->done = 0;
        pos += (size_t)hl + (size_t)f.payload_len;
    }
    if (ws->failed || bs_closing(ws))
        return -1;
    /* Any traffic proves the peer alive: push the ping back. */
    if (ws->route->opts->ping_interval_ms && !ws->close_sent)
        bs_timeout(ws, ws->route->opts->ping_interval_ms);
    return (ssize_t)pos;
}

static ssize_t ws_on_read(px_conn_t *c, char *data, size_t len)
{
    return ws_input(px_conn_state(c), data, len);
}

static void ws_timeout(void *ud)
{
    px_ws_t *ws = ud;
    if (ws->close_sent || ws->failed) {
        bs_abort(ws); /* the peer never answered our close */
        return;
    }
    if (ws->awaiting_pong) {
        px_log(PX_LOG_DEBUG, "ws conn %llu: no pong, closing",
               (unsigned long long)px_conn_id(ws->c));
        fail(ws, PX_WS_CLOSE_GOING_AWAY, "ping timeout");
        return;
    }
    ws->awaiting_pong = 1;
    send_raw(ws, PX_WS_OP_PING, 0, NULL, 0);
    bs_timeout(ws, ws->route->opts->ping_interval_ms);
}

static void ws_shutdown(void *ud)
{
    px_ws_t *ws = ud;
    if (!ws->close_sent && ws->route->cb->on_shutdown)
        ws->route->cb->on_shutdown(ws, ws->route->ud);
    if (!ws->close_sent)
        send_close(ws, PX_WS_CLOSE_GOING_AWAY, "server shutting down", 20);
    bs_close(ws);
}

static void ws_drain(void *ud)
{
    px_ws_t *ws = ud;
    if (ws->route->cb->on_drain)
        ws->route->cb->on_drain(ws, ws->route->ud);
}

static void ws_closed(void *ud)
{
    px_ws_t *ws = ud;
    px_ws_topic_leave(ws);
    if (ws->route->cb->on_close) {
        px_str_t reason = {"", 0};
        if (ws->rx)
            reason = (px_str_t){ws->rx->close_reason, ws->rx->close_reason_len};
        ws->route->cb->on_close(ws, ws->close_received ? ws->close_code : 1006, reason,
                                ws->route->ud);
    }
    px_metric_add(m_ws_open, -1);
    px__ws_deflate_free(ws->deflate);
    px__free(ws->subprotocol);
    if (ws->rx && ws->rx->resume._queued)
        ws->dead = 1; /* on_resume frees it */
    else
        ws_free(ws);
}

static void ws_on_timeout(px_conn_t *c)
{
    ws_timeout(px_conn_state(c));
}

static void ws_on_shutdown(px_conn_t *c)
{
    ws_shutdown(px_conn_state(c));
}

static void ws_on_drain(px_conn_t *c)
{
    ws_drain(px_conn_state(c));
}

static void ws_on_close(px_conn_t *c)
{
    ws_closed(px_conn_state(c));
}

static const px_protocol_t ws_protocol = {
    .name = "websocket",
    .on_read = ws_on_read,
    .on_drain = ws_on_drain,
    .on_timeout = ws_on_timeout,
    .on_shutdown = ws_on_shutdown,
    .on_close = ws_on_close,
};

/* A WebSocket on an HTTP/2 stream (RFC 8441): the same callbacks. */
static ssize_t ws_tunnel_read(void *ud, char *data, size_t len)
{
    return ws_input(ud, data, len);
}

static const px__tunnel_cb_t ws_tunnel_cb = {
    .on_read = ws_tunnel_read,
    .on_drain = ws_drain,
    .on_timeout = ws_timeout,
    .on_shutdown = ws_shutdown,
    .on_close = ws_closed,
};

/* ---- handshake ------------------------------------------------------------------------------- */

/* Does the comma-separated header value contain `token` (case-insensitive)? */
static int has_token(px_str_t v, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
            i++;
        size_t s = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v.ptr[e - 1] == ' ' || v.ptr[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v.ptr + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* The key must be base64 of exactly 16 bytes: 22 chars + "==". */
static int key_valid(px_str_t k)
{
    if (k.len != 24 || k.ptr[22] != '=' || k.ptr[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = k.ptr[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    /* The last char before padding carries 2 bits: its low 4 bits must be zero. */
    return strchr("AQgw", k.ptr[21]) != NULL;
}

static void accept_value(px_str_t key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char buf[24 + 36], md[20];
    memcpy(buf, key.ptr, 24);
    memcpy(buf + 24, guid, 36);
    px__sha1(buf, sizeof buf, md);
    out[px__base64_encode(md, sizeof md, out)] = '\0';
}

/* What a client may offer as subprotocols (RFC 6455 4.1: a list of tokens).
 * The hook sees at most WS_PROTOCOL_MAX_TOKENS of them, each at most
 * WS_PROTOCOL_MAX_TOKEN bytes (room for a bearer token, as some protocols
 * carry one there); more is refused with 400 rather than cut. */
#define WS_PROTOCOL_MAX_BYTES  4096 /* every Sec-WebSocket-Protocol line together */
#define WS_PROTOCOL_MAX_TOKENS 32
#define WS_PROTOCOL_MAX_TOKEN  1024

static int is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return 1;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Collect the subprotocols offered on every Sec-WebSocket-Protocol line.
 * Returns NULL, or why the offer is refused (400). */
static const char *offered_subprotocols(px_req_t *req, px_str_t *offered, size_t *n)
{
    size_t total = 0;
    *n = 0;
    for (size_t i = 0, nh = px_req_header_count(req); i < nh; i++) {
        px_str_t name, v;
        px_req_header_at(req, i, &name, &v);
        if (name.len != 22 || strncasecmp(name.ptr, "sec-websocket-protocol", 22) != 0)
            continue;
        total += v.len;
        if (total > WS_PROTOCOL_MAX_BYTES)
            return "Sec-WebSocket-Protocol is longer than 4096 bytes";
        size_t k = 0;
        for (;;) {
            /* 1#token: empty elements and OWS around commas are allowed */
            while (k < v.len && (v.ptr[k] == ' ' || v.ptr[k] == '\t' || v.ptr[k] == ','))
                k++;
            if (k == v.len)
                break;
            size_t s = k;
            while (k < v.len && is_tchar((unsigned char)v.ptr[k]))
                k++;
            size_t e = k;
            while (k < v.len && (v.ptr[k] == ' ' || v.ptr[k] == '\t'))
                k++;
            if (e == s || (k < v.len && v.ptr[k] != ','))
                return "Sec-WebSocket-Protocol is not a comma-separated list of tokens";
            if (e - s > WS_PROTOCOL_MAX_TOKEN)
                return "a subprotocol is longer than 1024 bytes";
            if (*n == WS_PROTOCOL_MAX_TOKENS)
                return "more than 32 subprotocols offered";
            offered[(*n)++] = (px_str_t){v.ptr + s, e - s};
        }
    }
    return NULL;
}

/* A bounded writer for the 101 head: once something does not fit, `over` is
 * set and nothing more is written. */
typedef struct hbuf {
    char *p;
    size_t cap, len;
    int over;
} hbuf_t;

static void hb_add(hbuf_t *b, const char *s, size_t n)
{
    if (b->over || n > b->cap - b->len) {
        b->over = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void hb_str(hbuf_t *b, const char *s)
{
    hb_add(b, s, strlen(s));
}

/* The HTTP/2 end of the handshake: 200 on the stream, which becomes the WebSocket's. */
static void tunnel_open(px_req_t *req, px_ws_t *ws, const ws_route_t *route, const char *ext,
                        size_t ext_len)
{
    char extbuf[PX_WS_DEFLATE_RESPONSE_MAX + 1];
    int r = 0;
    if (ws->subprotocol)
        r |= px_res_header(req, "Sec-WebSocket-Protocol", ws->subprotocol);
    if (ext) {
        memcpy(extbuf, ext, ext_len);
        extbuf[ext_len] = '\0';
        r |= px_res_header(req, "Sec-WebSocket-Extensions", extbuf);
    }
    px__tunnel_t *t = NULL;
    if (r == 0)
        r = px__req_tunnel(req, &ws_tunnel_cb, ws, &t);
    if (r) {
        px__ws_deflate_free(ws->deflate);
        px__free(ws->subprotocol);
        px__free(ws);
        px_respond_error(req, 500, NULL, "the stream cannot carry a WebSocket");
        return;
    }
    ws->t = t;
    ws->c = t->conn;
    px_metric_add(m_ws_open, 1);
    t->ops->set_read_limit(t, route->opts->max_message + PX_WS_MAX_HEADER);
    bs_timeout(ws, route->opts->ping_interval_ms);
    if (route->cb->on_open)
        route->cb->on_open(ws, req, route->ud);
}

static void ws_handshake(px_req_t *req, void *ud)
{
    const ws_route_t *route = ud;
    const px_ws_opts_t *opts = route->opts;
    /* HTTP/2 (RFC 8441): an extended CONNECT with :protocol websocket, answered
     * 200 on its stream; no Upgrade, Connection or key. */
    int h2 = px__req_is_tunnel(req);
    px_str_t upgrade = px_req_header(req, "upgrade");
    px_str_t connection = px_req_header(req, "connection");
    if (!h2 && (!upgrade.ptr || !has_token(upgrade, "websocket"))) {
        px_res_header(req, "Upgrade", "websocket");
        px_res_header(req, "Sec-WebSocket-Version", "13");
        px_respond_error(req, 426, "upgrade_required", "this endpoint speaks WebSocket only");
        return;
    }
    if (!h2 && px_req_http_minor(req) < 1) {
        px_respond_error(req, 400, NULL, "WebSocket needs HTTP/1.1");
        return;
    }
    if (!h2 && (!connection.ptr || !has_token(connection, "upgrade"))) {
        px_respond_error(req, 400, NULL, "Connection header must contain \"Upgrade\"");
        return;
    }
    px_str_t version = px_req_header(req, "sec-websocket-version");
    if (version.len != 2 || memcmp(version.ptr, "13", 2) != 0) {
        px_res_header(req, "Sec-WebSocket-Version", "13");
        px_respond_error(req, 426, "upgrade_required", "only WebSocket version 13 is supported");
        return;
    }
    px_str_t key = px_req_header(req, "sec-websocket-key");
    if (!h2 && !key_valid(key)) {
        px_respond_error(req, 400, NULL, "Sec-WebSocket-Key must be 16 bytes in base64");
        return;
    }
    /* Any body, even an empty chunked one: the bytes after the head are the peer's first
     * WebSocket frames, so a body cannot be told apart from them. */
    if (!h2 && (px_req_body(req).len || px_req_header(req, "transfer-encoding").ptr)) {
        px_respond_error(req, 400, NULL, "an upgrade request has no body");
        return;
    }
    if (route->cb->check_origin) {
        int st = route->cb->check_origin(req, px_req_header(req, "origin"), route->ud);
        if (st) {
            px_respond_error(req, st, "origin_refused", "origin not allowed");
            return;
        }
    }
    px_str_t offered[WS_PROTOCOL_MAX_TOKENS];
    size_t noffered = 0;
    const char *bad = offered_subprotocols(req, offered, &noffered);
    if (bad) {
        px_respond_error(req, 400, "bad_subprotocol", "%s", bad);
        return;
    }
    int chosen = -1;
    if (noffered && route->cb->select_subprotocol) {
        chosen = route->cb->select_subprotocol(req, offered, noffered, route->ud);
        if (chosen >= (int)noffered)
            chosen = -1;
    }
    /* permessage-deflate */
    char ext[PX_WS_DEFLATE_RESPONSE_MAX];
    size_t ext_len = 0;
    px__ws_deflate_params_t dp;
    int use_deflate = 0;
    if (opts->deflate) {
        px_str_t values[8];
        size_t nv = 0;
        for (size_t i = 0, n = px_req_header_count(req); i < n && nv < 8; i++) {
            px_str_t name, value;
            px_req_header_at(req, i, &name, &value);
            if (name.len == 24 && strncasecmp(name.ptr, "sec-websocket-extensions", 24) == 0)
                values[nv++] = value;
        }
        if (nv) {
            px__ws_deflate_config_t cfg = PX_WS_DEFLATE_CONFIG_DEFAULT;
            cfg.server_no_context_takeover = 1; /* less memory; messages compress independently */
            use_deflate =
                px__ws_deflate_negotiate(&cfg, values, nv, ext, sizeof ext, &ext_len, &dp) == 1;
        }
    }

    px_ws_t *ws = px__calloc(1, sizeof *ws);
    if (!ws) {
        px_respond_error(req, 503, NULL, "out of memory");
        return;
    }
    ws->route = route;
    ws->close_code = 1006;
    ws->utf8 = PX_UTF8_ACCEPT;
    if (use_deflate) {
        ws->deflate = px__ws_deflate_new(&dp, opts->deflate_memory);
        if (!ws->deflate)
            use_deflate = 0;
    }
    if (chosen >= 0) {
        ws->subprotocol = px__malloc(offered[chosen].len + 1);
        if (!ws->subprotocol) {
            px__ws_deflate_free(ws->deflate);
            px__free(ws);
            px_respond_error(req, 503, NULL, "out of memory");
            return;
        }
        memcpy(ws->subprotocol, offered[chosen].ptr, offered[chosen].len);
        ws->subprotocol[offered[chosen].len] = '\0';
    }

    if (h2) {
        tunnel_open(req, ws, route, use_deflate ? ext : NULL, ext_len);
        return;
    }
    char accept[29];
    accept_value(key, accept);
    /* Room for every line at its longest (the subprotocol and extension values
     * are capped above); the writer still refuses to overflow, so a response
     * that does not fit is a 500, never a cut or overrun head. */
    char resp[160 + WS_PROTOCOL_MAX_TOKEN + PX_WS_DEFLATE_RESPONSE_MAX];
    hbuf_t hb = {resp, sizeof resp, 0, 0};
    hb_str(&hb, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: ");
    hb_add(&hb, accept, 28);
    hb_str(&hb, "\r\n");
    if (ws->subprotocol) {
        hb_str(&hb, "Sec-WebSocket-Protocol: ");
        hb_str(&hb, ws->subprotocol);
        hb_str(&hb, "\r\n");
    }
    if (use_deflate) {
        hb_str(&hb, "Sec-WebSocket-Extensions: ");
        hb_add(&hb, ext, ext_len);
        hb_str(&hb, "\r\n");
    }
    hb_str(&hb, "\r\n");
    if (hb.over) {
        px__ws_deflate_free(ws->deflate);
        px__free(ws->subprotocol);
        px__free(ws);
        px_respond_error(req, 500, NULL, "the handshake response does not fit");
        return;
    }
    px_conn_t *c;
    if (px__req_upgrade(req, &ws_protocol, ws, &c) != 0) {
        /* Not in a state to switch (cannot be, after the checks above): answer, so
         * the request is never left unanswered. */
        px__ws_deflate_free(ws->deflate);
        px__free(ws->subprotocol);
        px__free(ws);
        px_respond_error(req, 500, NULL, "the connection cannot switch protocols");
        return;
    }
    ws->c = c;
    px_metric_add(m_ws_open, 1);
    if (px_conn_write(c, resp, hb.len) != 0) {
        px_conn_abort(c); /* ws_on_close frees ws */
        return;
    }
    px_conn_set_read_limit(c, opts->max_message + PX_WS_MAX_HEADER);
    px_conn_set_timeout(c, opts->ping_interval_ms);
    if (route->cb->on_open)
        route->cb->on_open(ws, req, route->ud);
}

int px_ws_route(px_server_t *s, const char *pattern, const px_ws_callbacks_t *cb, void *ud)
{
    if (!cb)
        return -EINVAL;
    ws_module_t *m = ws_module(s);
    ws_route_t *r = m ? px__malloc(sizeof *r) : NULL;
    if (!r)
        return -ENOMEM;
    register_metrics();
    r->cb = cb;
    r->ud = ud;
    r->opts = &m->opts;
    int e = px_route(s, "GET", pattern, ws_handshake, r);
    if (e) {
        px__free(r);
        return e;
    }
    r->next = m->routes;
    m->routes = r;
    return 0;
}

void px_ws_set_data(px_ws_t *ws, void *data)
{
    ws->data = data;
}

void *px_ws_get_data(const px_ws_t *ws)
{
    return ws->data;
}

px_conn_t *px_ws_conn(const px_ws_t *ws)
{
    return ws->c;
}

size_t px_ws_pending(const px_ws_t *ws)
{
    return bs_pending(ws);
}

px_str_t px_ws_subprotocol(const px_ws_t *ws)
{
    return ws->subprotocol ? (px_str_t){ws->subprotocol, strlen(ws->subprotocol)}
                           : (px_str_t){NULL, 0};
}

/* ---- topics ------------------------------------------------------------------------------------
 *
 * A topic has one member list per worker. Frames published on a worker (or
 * posted to it by another) are not written to each member at once: they are
 * kept (a reference each) and written to every member in one pass from a
 * deferred callback at the end of the loop iteration, all of a member's frames
 * together. A broadcast to N members then reads each member's memory once per
 * iteration rather than once per frame, which is what a fan-out to thousands
 * of members costs in cache misses. Order is kept: anything else sent to a
 * member (px_ws_send, px_ws_send_frame, a close) and leaving the topic first
 * hands it the frames it is owed (topic_sync); a member that joins mid-batch
 * gets only the frames published after it joined. */

#define TOPIC_BATCH_MAX   64          /* frames kept per worker before writing them out */
#define TOPIC_BATCH_BYTES (256 << 10) /* or bytes */

typedef struct topic_local {
    px_ws_t *head;
    _Atomic size_t count; /* read by publishers on other threads to skip empty workers */
    /* The batch (this worker only): frames [0, npending), one reference each. */
    px_slice_t **pending;
    uint32_t npending, cap;
    uint32_t epoch; /* batch number: a member with t_epoch == epoch has [0, t_from) */
    size_t bytes;
    px_defer_t drain;
} topic_local_t;

struct px_ws_topic {
    px_server_t *server;
    unsigned nworkers;
    topic_local_t *local;
};

typedef struct topic_msg {
    px_msg_t msg;
    px_ws_topic_t *topic;
    px_slice_t *frame;
} topic_msg_t;

static void topic_drain(px_defer_t *d);

px_ws_topic_t *px_ws_topic_new(px_server_t *s)
{
    px_ws_topic_t *t = px__calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->server = s;
    t->nworkers = px_workers_count(px_server_workers(s));
    /* One cache line or more per worker: each is written by its worker only. */
    size_t sz = (sizeof(topic_local_t) + 63) & ~(size_t)63;
    t->local = px__calloc(t->nworkers, sz > sizeof(topic_local_t) ? sz : sizeof(topic_local_t));
    if (!t->local) {
        px__free(t);
        return NULL;
    }
    for (unsigned i = 0; i < t->nworkers; i++)
        px_defer_init(&t->local[i].drain, topic_drain, &t->local[i]);
    return t;
}

static void batch_release(topic_local_t *l)
{
    for (uint32_t i = 0; i < l->npending; i++)
        px_slice_unref(l->pending[i]);
    l->npending = 0;
    l->bytes = 0;
    l->epoch++;
}

void px_ws_topic_free(px_ws_topic_t *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->nworkers; i++) {
        batch_release(&t->local[i]);
        px__free(t->local[i].pending);
    }
    px__free(t->local);
    px__free(t);
}

static topic_local_t *local_of(px_ws_topic_t *t, px_ws_t *ws)
{
    return &t->local[px_worker_id(px_conn_worker(ws->c))];
}

/* Write frames [from, n) of the batch to `ws`. */
static void send_batch(px_ws_t *ws, topic_local_t *l, uint32_t from)
{
    for (uint32_t i = from; i < l->npending; i++)
        if (send_frame(ws, l->pending[i]) == -EPIPE)
            break; /* closing: so are the rest */
}

/* Before anything else reaches `ws`: the frames of the current batch it is owed. */
static void topic_sync(px_ws_t *ws)
{
    topic_local_t *l = local_of(ws->topic, ws);
    if (!l->npending)
        return;
    uint32_t from = ws->t_epoch == l->epoch ? ws->t_from : 0;
    ws->t_epoch = l->epoch;
    ws->t_from = l->npending;
    if (from < l->npending)
        send_batch(ws, l, from);
}

/* The whole batch to a member that is owed all of it: `all` (the frames joined,
 * or the only frame) by reference, when it fits the member's budget; else frame
 * by frame, so that the slow-consumer policy sees each as before. */
static void send_all(px_ws_t *ws, topic_local_t *l, px_slice_t *all)
{
    if (ws->close_sent)
        return;
    if (!ws->t && px_conn_room(ws->c) >= all->len &&
        px__conn_write_slice_now(ws->c, all, 0, all->len) == 0) {
        px__metric_add(m_ws_out, l->npending);
        return;
    }
    send_batch(ws, l, 0);
}

static void drain_local(topic_local_t *l)
{
    uint32_t n = l->npending;
    if (!n)
        return;
    /* One buffer with every frame of the batch, shared by every member: each
     * member costs one queue entry and one write of hot bytes, whatever the
     * number of frames. */
    px_slice_t *all = n == 1 ? px_slice_ref(l->pending[0]) : px_slice_new(l->bytes);
    if (all && n > 1) {
        size_t at = 0;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(all->data + at, l->pending[i]->data, l->pending[i]->len);
            at += l->pending[i]->len;
        }
    }
    px_ws_t *next;
    for (px_ws_t *ws = l->head; ws; ws = next) {
        next = ws->tnext; /* a slow consumer may leave the topic while we iterate */
        uint32_t from = ws->t_epoch == l->epoch ? ws->t_from : 0;
        /* Every member is stamped with each batch it sees, so an old stamp can
         * never equal a later batch number. */
        ws->t_epoch = l->epoch;
        ws->t_from = n;
        if (from == 0 && all)
            send_all(ws, l, all);
        else if (from < n)
            send_batch(ws, l, from);
    }
    px_slice_unref(all);
    batch_release(l);
}

static void topic_drain(px_defer_t *d)
{
    drain_local(d->data);
}

int px_ws_topic_join(px_ws_topic_t *t, px_ws_t *ws)
{
    if (ws->topic)
        return -EALREADY;
    topic_local_t *l = local_of(t, ws);
    ws->topic = t;
    ws->t_epoch = l->epoch; /* not the frames published before it joined */
    ws->t_from = l->npending;
    ws->tprev = NULL;
    ws->tnext = l->head;
    if (l->head)
        l->head->tprev = ws;
    l->head = ws;
    atomic_fetch_add_explicit(&l->count, 1, memory_order_relaxed);
    return 0;
}

void px_ws_topic_leave(px_ws_t *ws)
{
    px_ws_topic_t *t = ws->topic;
    if (!t)
        return;
    topic_sync(ws); /* what was published while it was a member */
    topic_local_t *l = local_of(t, ws);
    if (ws->tprev)
        ws->tprev->tnext = ws->tnext;
    else
        l->head = ws->tnext;
    if (ws->tnext)
        ws->tnext->tprev = ws->tprev;
    ws->topic = NULL;
    ws->tprev = ws->tnext = NULL;
    atomic_fetch_sub_explicit(&l->count, 1, memory_order_relaxed);
}

size_t px_ws_topic_size(const px_ws_topic_t *t)
{
    size_t n = 0;
    for (unsigned i = 0; i < t->nworkers; i++)
        n += atomic_load_explicit(&t->local[i].count, memory_order_relaxed);
    return n;
}

/* Add `frame` (the caller's reference, handed over) to worker `wid`'s batch. */
static void batch_add(px_ws_topic_t *t, unsigned wid, px_loop_t *loop, px_slice_t *frame)
{
    topic_local_t *l = &t->local[wid];
    if (!l->head) {
        px_slice_unref(frame);
        return;
    }
    if (l->npending == TOPIC_BATCH_MAX || l->bytes + frame->len > TOPIC_BATCH_BYTES)
        drain_local(l);
    if (l->npending == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        px_slice_t **p = px__realloc(l->pending, cap * sizeof *p);
        if (!p) { /* no room to keep it: write it to every member now */
            drain_local(l);
            for (px_ws_t *ws = l->head, *next; ws; ws = next) {
                next = ws->tnext;
                send_frame(ws, frame);
            }
            px_slice_unref(frame);
            return;
        }
        l->pending = p;
        l->cap = cap;
    }
    l->pending[l->npending++] = frame;
    l->bytes += frame->len;
    px_defer(loop, &l->drain); /* (a no-op when queued) */
}

static void on_topic_msg(px_worker_t *w, px_msg_t *m)
{
    topic_msg_t *tm = (topic_msg_t *)m;
    batch_add(tm->topic, px_worker_id(w), px_worker_loop(w), tm->frame);
    px__free(tm);
}

int px_ws_topic_publish(px_ws_topic_t *t, px_slice_t *frame)
{
    px_worker_t *self = px_worker_self();
    px_workers_t *ws = px_server_workers(t->server);
    int r = 0;
    for (unsigned i = 0; i < t->nworkers; i++) {
        if (atomic_load_explicit(&t->local[i].count, memory_order_relaxed) == 0)
            continue;
        px_worker_t *w = px_workers_get(ws, i);
        if (w == self) {
            batch_add(t, i, px_worker_loop(w), px_slice_ref(frame));
            continue;
        }
        topic_msg_t *tm = px__malloc(sizeof *tm);
        if (!tm) {
            r = -ENOMEM;
            continue;
        }
        tm->msg.cb = on_topic_msg;
        tm->topic = t;
        tm->frame = px_slice_ref(frame);
        px_worker_post(w, &tm->msg);
    }
    return r;
}
