/* Worker threads: one epoll loop each, owning a fixed slice of the connections
 * (global id i lives on thread i % threads, local index i / threads).
 *
 * Connection life: NEW -> CONNECTING (non-blocking connect from a 127.0.0.x
 * source) -> UPGRADING (WS only: request sent, waiting for the 101) -> SETUP
 * (protocol opening bytes sent, waiting for its acknowledgements) -> READY, or
 * CLOSED from any state. Connection slots are never reused or freed while the
 * threads run, so an event fetched for a connection closed earlier in the same
 * epoll batch is recognised by state == CLOSED and skipped. */
#include "wsload.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define TS_MASK      ((1ull << 48) - 1)
#define RDBUF_SIZE   (256u * 1024)
#define PUB_WBUF_MAX (256u * 1024) /* publisher stops encoding above this backlog */
#define PUB_BATCH    64u

enum { CS_NEW, CS_CONNECTING, CS_UPGRADING, CS_SETUP, CS_READY, CS_CLOSED };
enum { WHY_CONNECT, WHY_TIMEOUT, WHY_HANDSHAKE, WHY_IO, WHY_PROTO };

struct wl_conn {
    wl_pconn_t pc;
    int fd;                 /* -1 when not open */
    uint8_t state;          /* CS_* */
    bool out_armed;         /* EPOLLOUT is in the interest set */
    bool was_ready;         /* reached READY at some point (loss accounting) */
    bool in_msg;            /* WS: a fragmented message is being received */
    uint16_t pending_ready; /* SETUP: WL_EV_READY events still expected */
    uint64_t deadline;      /* handshake deadline (wl_now_ns), until READY */
    uint64_t sent;          /* echo: requests sent = next sequence number to send */
    uint64_t next;          /* echo/sub: next expected sequence number */
    wl_buf_t rbuf;          /* raw bytes read but not yet parsed */
    wl_buf_t sbuf;          /* WS: fragments of a message, or stream bytes left unparsed */
    wl_buf_t wbuf;          /* bytes not yet written */
    char accept[WL_WS_ACCEPT_LEN + 1];
};

static bool is_ws(const wl_thread_t *t)
{
    return (t->run->cfg->proto->flags & WL_PROTO_WS) != 0;
}

static void thread_error(wl_thread_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void thread_error(wl_thread_t *t, const char *fmt, ...)
{
    if (t->first_error[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->first_error, sizeof(t->first_error), fmt, ap);
    va_end(ap);
}

static void conn_set_out(wl_thread_t *t, wl_conn_t *c, bool want)
{
    if (c->out_armed == want || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u),
                             .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->out_armed = want;
}

/* Where protocol callbacks write: straight into wbuf for raw TCP, into the
 * thread's frame scratch for WebSocket (conn_commit frames it). */
static wl_buf_t *conn_out(wl_thread_t *t, wl_conn_t *c)
{
    return is_ws(t) ? &t->fout : &c->wbuf;
}

static void conn_commit(wl_thread_t *t, wl_conn_t *c)
{
    if (!is_ws(t) || t->fout.len == 0)
        return;
    const wl_config_t *cfg = t->run->cfg;
    unsigned op = (cfg->text || (cfg->proto->flags & WL_PROTO_TEXT)) ? WL_WS_TEXT : WL_WS_BIN;
    wl_ws_frame_append(&c->wbuf, op, t->fout.data, t->fout.len, (uint32_t)wl_rng_next(&t->rng));
    t->fout.len = 0;
}

static void conn_close(wl_thread_t *t, wl_conn_t *c, int why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void conn_close(wl_thread_t *t, wl_conn_t *c, int why, const char *fmt, ...)
{
    if (c->state == CS_CLOSED)
        return;
    wl_run_t *run = t->run;
    if (c->state < CS_READY) {
        t->opening--;
        atomic_fetch_add(&run->failed, 1);
        if (why == WHY_TIMEOUT)
            t->c.conn_timeout++;
        else if (c->state == CS_CONNECTING)
            t->c.conn_failed++;
        else
            t->c.handshake_failed++; /* upgrade or protocol setup */
    } else {
        t->c.closed_early++;
        if (why == WHY_PROTO)
            t->c.proto_errors++;
        if (c->pc.role == WL_ROLE_SUB) {
            t->waiting[c->next & t->ring_mask]--;
            t->subs_live--;
        } else if (c->pc.role == WL_ROLE_ECHO) {
            t->inflight_local -= c->sent - c->next;
        }
    }
    if (c->pc.role == WL_ROLE_PUB)
        atomic_store(&run->pub_state, -1);
    if (fmt != NULL && t->first_error[0] == '\0') {
        char msg[192];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        thread_error(t, "conn %u: %s", c->pc.id, msg);
    }
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = CS_CLOSED;
    wl_buf_free(&c->rbuf);
    wl_buf_free(&c->sbuf);
    wl_buf_free(&c->wbuf);
}

static const char *errstr(int err, char *buf, size_t n)
{
    return strerror_r(err, buf, n);
}

static void conn_flush(wl_thread_t *t, wl_conn_t *c)
{
    if (c->state < CS_UPGRADING || c->state == CS_CLOSED)
        return;
    while (c->wbuf.len > 0) {
        ssize_t n = send(c->fd, c->wbuf.data, c->wbuf.len, MSG_NOSIGNAL);
        if (n > 0) {
            wl_buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_set_out(t, c, true);
            return;
        }
        char eb[64];
        conn_close(t, c, WHY_IO, "send: %s", errstr(errno, eb, sizeof(eb)));
        return;
    }
    conn_set_out(t, c, false);
}

/* ---- scenario logic ------------------------------------------------------------- */

static bool in_window(const wl_thread_t *t)
{
    return t->now >= t->mstart && t->now < t->mend;
}

static void echo_send(wl_thread_t *t, wl_conn_t *c)
{
    const wl_config_t *cfg = t->run->cfg;
    wl_payload_put(t->payload, (t->now - t->run->t_base) & TS_MASK, c->sent++);
    cfg->proto->encode(&c->pc, t->payload, cfg->size, conn_out(t, c));
    conn_commit(t, c);
    t->inflight_local++;
    t->c.sent++;
    if (in_window(t))
        t->c.sent_window++;
}

static void echo_fill(wl_thread_t *t, wl_conn_t *c)
{
    uint32_t w = t->run->cfg->window;
    while (c->sent - c->next < w)
        echo_send(t, c);
}

static void record_latency(wl_thread_t *t, uint64_t ts)
{
    t->c.msgs_total++;
    if (in_window(t)) {
        t->c.msgs++;
        wl_hist_add(&t->hist, ((t->now - t->run->t_base) - ts) & TS_MASK);
    }
}

/* Returns -1 if the connection was closed. */
static int echo_receive(wl_thread_t *t, wl_conn_t *c, const uint8_t *p, size_t len)
{
    uint64_t ts, seq;
    if (len != t->run->cfg->size || !wl_payload_get(p, len, &ts, &seq) || seq >= c->sent) {
        t->c.bad_payload++;
        conn_close(t, c, WHY_PROTO, "unexpected echo payload (%zu bytes)", len);
        return -1;
    }
    if (seq < c->next) {
        t->c.dup++;
        return 0;
    }
    if (seq > c->next)
        t->c.lost += seq - c->next;
    t->inflight_local -= seq + 1 - c->next;
    c->next = seq + 1;
    record_latency(t, ts);
    if (t->phase == WL_PHASE_RUN)
        echo_fill(t, c);
    return 0;
}

static int sub_receive(wl_thread_t *t, wl_conn_t *c, const uint8_t *p, size_t len)
{
    uint64_t ts, seq;
    if (len != t->run->cfg->size || !wl_payload_get(p, len, &ts, &seq))
        goto bad;
    if (seq < c->next) {
        t->c.dup++;
        return 0;
    }
    /* The publisher never runs more than window ahead of sub_min_local. */
    if (seq - t->sub_min_local > t->ring_mask)
        goto bad;
    if (seq > c->next)
        t->c.lost += seq - c->next;
    t->waiting[c->next & t->ring_mask]--;
    c->next = seq + 1;
    t->waiting[c->next & t->ring_mask]++;
    record_latency(t, ts);
    return 0;
bad:
    t->c.bad_payload++;
    conn_close(t, c, WHY_PROTO, "unexpected publication payload (%zu bytes)", len);
    return -1;
}

/* Smallest next-expected sequence over this thread's live subscribers, published
 * for the publisher's window. All live values lie within ring_mask of the old
 * minimum, so the scan stops at the true minimum. */
static void sub_min_update(wl_thread_t *t)
{
    uint64_t m = UINT64_MAX;
    if (t->subs_live > 0) {
        m = t->sub_min_local;
        uint64_t stop = m + t->ring_mask;
        while (t->waiting[m & t->ring_mask] == 0) {
            m++;
            assert(m <= stop && "waiting[] out of step with subs_live");
            if (m > stop)
                abort();
        }
        t->sub_min_local = m;
    }
    if (m == atomic_load_explicit(&t->sub_min, memory_order_relaxed))
        return;
    atomic_store(&t->sub_min, m); /* seq_cst: pairs with pub_blocked below */
    wl_run_t *run = t->run;
    if (atomic_load(&run->pub_blocked) && atomic_exchange(&run->pub_blocked, 0)) {
        t->pub_wakeups++;
        if (t->idx != 0) {
            uint64_t one = 1;
            ssize_t n = write(run->threads[0].evfd, &one, sizeof(one));
            (void)n;
        }
    }
}

/* Publish as much as the window and the rate allow. Returns true if it stopped
 * only because of its batch size (call again soon). */
static bool pub_pump(wl_thread_t *t)
{
    wl_conn_t *c = t->pub;
    wl_run_t *run = t->run;
    const wl_config_t *cfg = run->cfg;
    if (c == NULL || c->state != CS_READY || t->phase != WL_PHASE_RUN)
        return false;
    if (c->wbuf.len >= PUB_WBUF_MAX)
        return false; /* EPOLLOUT brings us back */
    uint64_t seq = t->pub_seq_local;
    uint64_t gmin = wl_engine_sub_min(run);
    if (gmin == UINT64_MAX || seq >= gmin + cfg->window) {
        atomic_store(&run->pub_blocked, 1);
        gmin = wl_engine_sub_min(run); /* re-check: a subscriber may have moved meanwhile */
        if (gmin == UINT64_MAX || seq >= gmin + cfg->window)
            return false;
        atomic_store(&run->pub_blocked, 0);
    }
    uint64_t n = gmin + cfg->window - seq;
    if (cfg->rate > 0) {
        uint64_t due = (uint64_t)(cfg->rate * (double)(t->now - t->pub_t0) / 1e9) + 1;
        if (due <= seq)
            return false;
        if (due - seq < n)
            n = due - seq;
    }
    bool more = n > PUB_BATCH;
    if (more)
        n = PUB_BATCH;
    t->now = wl_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        wl_payload_put(t->payload, (t->now - run->t_base) & TS_MASK, seq + i);
        cfg->proto->encode(&c->pc, t->payload, cfg->size, conn_out(t, c));
        conn_commit(t, c);
    }
    t->c.sent += n;
    if (in_window(t))
        t->c.sent_window += n;
    t->pub_seq_local = seq + n;
    atomic_store_explicit(&run->pub_seq, seq + n, memory_order_release);
    conn_flush(t, c);
    return more && c->state == CS_READY && c->wbuf.len < PUB_WBUF_MAX;
}

/* epoll timeout for the publisher's thread. */
static int pub_timeout(const wl_thread_t *t)
{
    const wl_config_t *cfg = t->run->cfg;
    if (t->pub == NULL || t->phase != WL_PHASE_RUN || cfg->rate <= 0)
        return 100;
    double due_at = (double)t->pub_t0 + (double)t->pub_seq_local * 1e9 / cfg->rate;
    double wait_ms = (due_at - (double)t->now) / 1e6;
    if (wait_ms <= 0)
        return 0;
    return wait_ms >= 100 ? 100 : (int)wait_ms + 1;
}

/* ---- connection state machine ------------------------------------------------------ */

static void conn_established(wl_thread_t *t, wl_conn_t *c)
{
    c->state = CS_READY;
    c->was_ready = true;
    c->deadline = 0;
    t->opening--;
    atomic_fetch_add(&t->run->established, 1);
    switch (c->pc.role) {
    case WL_ROLE_SUB:
        /* Subscribers only become ready before RUN: the publisher starts at 0. */
        c->next = 0;
        t->waiting[0]++;
        t->subs_live++;
        break;
    case WL_ROLE_PUB: atomic_store(&t->run->pub_state, 1); break;
    default: break;
    }
}

static void conn_start_setup(wl_thread_t *t, wl_conn_t *c)
{
    const wl_proto_t *proto = t->run->cfg->proto;
    int n = 0;
    if (proto->setup != NULL) {
        n = proto->setup(&c->pc, conn_out(t, c));
        conn_commit(t, c);
    }
    if (n > 0) {
        c->state = CS_SETUP;
        c->pending_ready = (uint16_t)n;
    } else {
        conn_established(t, c);
    }
}

static void conn_open(wl_thread_t *t, wl_conn_t *c)
{
    const wl_config_t *cfg = t->run->cfg;
    char eb[64];
    t->opening++;
    c->state = CS_CONNECTING;
    c->deadline = t->now + (uint64_t)(cfg->connect_timeout * 1e9);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_close(t, c, WHY_CONNECT, "socket: %s", errstr(errno, eb, sizeof(eb)));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cfg->src_addrs > 0) {
        /* Port chosen at connect() time, per 4-tuple: many more than 28k ports. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + c->pc.id % cfg->src_addrs);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            conn_close(t, c, WHY_CONNECT, "bind: %s", errstr(errno, eb, sizeof(eb)));
            return;
        }
    }
    struct sockaddr_in dst = cfg->dst;
    if (c->pc.role == WL_ROLE_SUB && cfg->n_sub_ports) {
        unsigned k = c->pc.id % (cfg->n_sub_ports + 1);
        if (k)
            dst.sin_port = htons(cfg->sub_ports[k - 1]);
    }
    if (connect(c->fd, (const struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        conn_close(t, c, WHY_CONNECT, "connect: %s", errstr(errno, eb, sizeof(eb)));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_close(t, c, WHY_CONNECT, "epoll_ctl: %s", errstr(errno, eb, sizeof(eb)));
        return;
    }
    c->out_armed = true;
}

static void conn_on_connected(wl_thread_t *t, wl_conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    char eb[64];
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        conn_close(t, c, WHY_CONNECT, "connect: %s", errstr(err, eb, sizeof(eb)));
        return;
    }
    if (is_ws(t)) {
        wl_ws_build_request(&c->wbuf, t->run->cfg, &t->rng, c->accept);
        c->state = CS_UPGRADING;
    } else {
        c->state = CS_UPGRADING; /* lets conn_flush write; SETUP/READY follow at once */
        conn_start_setup(t, c);
    }
    conn_flush(t, c);
}

static int on_event(wl_thread_t *t, wl_conn_t *c, const wl_event_t *ev)
{
    switch (ev->kind) {
    case WL_EV_NONE: return 0;
    case WL_EV_READY:
        if (c->state == CS_SETUP && --c->pending_ready == 0)
            conn_established(t, c);
        return 0;
    case WL_EV_DELIVERY:
        if (c->state != CS_READY)
            return 0;
        if (c->pc.role == WL_ROLE_ECHO)
            return echo_receive(t, c, ev->payload, ev->len);
        if (c->pc.role == WL_ROLE_SUB)
            return sub_receive(t, c, ev->payload, ev->len);
        return 0; /* publisher / idle: ignored */
    }
    return 0;
}

/* Feed protocol bytes; returns bytes consumed or -1 if the connection closed. */
static ssize_t stream_input(wl_thread_t *t, wl_conn_t *c, const uint8_t *in, size_t len)
{
    const wl_proto_t *proto = t->run->cfg->proto;
    size_t off = 0;
    while (off < len) {
        wl_event_t ev = {.kind = WL_EV_NONE};
        ssize_t r = proto->parse(&c->pc, in + off, len - off, &ev, conn_out(t, c));
        conn_commit(t, c);
        if (r == 0)
            break;
        if (r < 0) {
            int n = ev.payload != NULL ? (int)(ev.len < 80 ? ev.len : 80) : 0;
            conn_close(t, c, WHY_PROTO, "%s protocol error%s%.*s", proto->name, n ? ": " : "", n,
                       ev.payload != NULL ? (const char *)ev.payload : "");
            return -1;
        }
        off += (size_t)r;
        if (on_event(t, c, &ev) < 0 || c->state == CS_CLOSED)
            return -1;
    }
    return (ssize_t)off;
}

static int message_input(wl_thread_t *t, wl_conn_t *c, const uint8_t *in, size_t len)
{
    ssize_t r = stream_input(t, c, in, len);
    if (r < 0)
        return -1;
    if ((size_t)r != len) {
        conn_close(t, c, WHY_PROTO, "%s: message not fully parsed", t->run->cfg->proto->name);
        return -1;
    }
    return 0;
}

static int frame_input(wl_thread_t *t, wl_conn_t *c, wl_ws_frame_t *f)
{
    switch (f->opcode) {
    case WL_WS_PING:
        wl_ws_frame_append(&c->wbuf, WL_WS_PONG, f->payload, f->len,
                           (uint32_t)wl_rng_next(&t->rng));
        return 0;
    case WL_WS_PONG: return 0;
    case WL_WS_CLOSE: conn_close(t, c, WHY_IO, "server sent a close frame"); return -1;
    default: break;
    }
    if ((f->opcode == WL_WS_CONT) != c->in_msg) {
        conn_close(t, c, WHY_PROTO, "bad fragmentation");
        return -1;
    }
    c->in_msg = !f->fin;
    if (t->run->cfg->proto->flags & WL_PROTO_STREAM) {
        if (c->sbuf.len == 0) {
            ssize_t used = stream_input(t, c, f->payload, f->len);
            if (used < 0)
                return -1;
            if ((size_t)used < f->len)
                wl_buf_append(&c->sbuf, f->payload + used, f->len - (size_t)used);
        } else {
            wl_buf_append(&c->sbuf, f->payload, f->len);
            ssize_t used = stream_input(t, c, c->sbuf.data, c->sbuf.len);
            if (used < 0)
                return -1;
            wl_buf_consume(&c->sbuf, (size_t)used);
        }
        return 0;
    }
    if (f->fin && c->sbuf.len == 0)
        return message_input(t, c, f->payload, f->len);
    wl_buf_append(&c->sbuf, f->payload, f->len);
    if (!f->fin)
        return 0;
    int r = message_input(t, c, c->sbuf.data, c->sbuf.len);
    if (r == 0)
        c->sbuf.len = 0;
    return r;
}

/* Consume what can be consumed of in[0..len); -1 if the connection closed. */
static ssize_t conn_input(wl_thread_t *t, wl_conn_t *c, uint8_t *in, size_t len)
{
    size_t off = 0;
    if (c->state == CS_UPGRADING) {
        const char *why = NULL;
        ssize_t h = wl_ws_check_response(in, len, c->accept, &why);
        if (h == 0)
            return 0;
        if (h < 0) {
            conn_close(t, c, WHY_HANDSHAKE, "upgrade: %s", why);
            return -1;
        }
        off = (size_t)h;
        conn_start_setup(t, c);
    }
    if (!is_ws(t)) {
        ssize_t r = stream_input(t, c, in + off, len - off);
        return r < 0 ? -1 : (ssize_t)off + r;
    }
    while (off < len) {
        wl_ws_frame_t f;
        ssize_t r = wl_ws_frame_parse(in + off, len - off, &f);
        if (r == 0)
            break;
        if (r < 0) {
            conn_close(t, c, WHY_PROTO, "invalid WebSocket frame");
            return -1;
        }
        off += (size_t)r;
        if (frame_input(t, c, &f) < 0)
            return -1;
    }
    return (ssize_t)off;
}

static void conn_on_readable(wl_thread_t *t, wl_conn_t *c)
{
    char eb[64];
    for (int iter = 0; iter < 8; iter++) {
        uint8_t *dst;
        size_t room;
        bool scratch = c->rbuf.len == 0;
        if (scratch) {
            dst = t->rdbuf;
            room = t->rdcap;
        } else {
            wl_buf_reserve(&c->rbuf, 64 * 1024);
            dst = c->rbuf.data + c->rbuf.len;
            room = c->rbuf.cap - c->rbuf.len;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n == 0) {
            conn_close(t, c, WHY_IO, "server closed the connection");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(t, c, WHY_IO, "recv: %s", errstr(errno, eb, sizeof(eb)));
            return;
        }
        t->now = wl_now_ns(); /* receive time of everything in this chunk */
        uint8_t *p = scratch ? dst : c->rbuf.data;
        size_t plen = scratch ? (size_t)n : c->rbuf.len + (size_t)n;
        if (!scratch)
            c->rbuf.len = plen;
        ssize_t used = conn_input(t, c, p, plen);
        if (used < 0 || c->state == CS_CLOSED)
            return;
        if (scratch)
            wl_buf_append(&c->rbuf, p + used, plen - (size_t)used);
        else
            wl_buf_consume(&c->rbuf, (size_t)used);
        if ((size_t)n < room)
            break;
    }
    conn_flush(t, c);
}

/* ---- thread loop ---------------------------------------------------------------------- */

static void open_more(wl_thread_t *t)
{
    while (t->opening < t->burst && t->next_open < t->nconns)
        conn_open(t, &t->conns[t->next_open++]);
}

static void check_deadlines(wl_thread_t *t)
{
    for (uint32_t i = t->scan_lo; i < t->next_open; i++) {
        wl_conn_t *c = &t->conns[i];
        if (c->state == CS_READY || c->state == CS_CLOSED) {
            if (i == t->scan_lo)
                t->scan_lo++;
            continue;
        }
        if (t->now >= c->deadline)
            conn_close(t, c, WHY_TIMEOUT, "handshake timeout");
    }
}

static void enter_phase(wl_thread_t *t, int phase)
{
    wl_run_t *run = t->run;
    if (t->phase < WL_PHASE_RUN && phase >= WL_PHASE_RUN) {
        t->mstart = atomic_load(&run->t_mstart);
        t->mend = atomic_load(&run->t_mend);
        /* Stragglers are failed: every participant starts together. */
        for (uint32_t i = 0; i < t->nconns; i++) {
            wl_conn_t *c = &t->conns[i];
            if (c->state == CS_NEW) {
                c->state = CS_CONNECTING; /* counted as opened, then failed */
                t->opening++;
                conn_close(t, c, WHY_TIMEOUT, "not opened before the run started");
            } else if (c->state != CS_READY && c->state != CS_CLOSED) {
                conn_close(t, c, WHY_TIMEOUT, "not established before the run started");
            }
        }
        t->next_open = t->nconns;
        if (phase == WL_PHASE_RUN) {
            t->pub_t0 = t->now;
            if (run->cfg->scenario == WL_SC_ECHO) {
                for (uint32_t i = 0; i < t->nconns; i++) {
                    wl_conn_t *c = &t->conns[i];
                    if (c->state == CS_READY) {
                        echo_fill(t, c);
                        conn_flush(t, c);
                    }
                }
            }
        }
    }
    t->phase = phase;
}

static void finalize(wl_thread_t *t)
{
    wl_run_t *run = t->run;
    uint64_t published = atomic_load(&run->pub_seq);
    for (uint32_t i = 0; i < t->nconns; i++) {
        wl_conn_t *c = &t->conns[i];
        if (!c->was_ready)
            continue;
        if (c->pc.role == WL_ROLE_ECHO)
            t->c.unanswered += c->sent - c->next;
        else if (c->pc.role == WL_ROLE_SUB && published > c->next)
            t->c.unanswered += published - c->next;
    }
}

static void *thread_main(void *arg)
{
    wl_thread_t *t = arg;
    wl_run_t *run = t->run;
    struct epoll_event evs[1024];
    uint64_t next_scan = 0;
    for (;;) {
        t->now = wl_now_ns();
        int phase = atomic_load(&run->phase);
        if (phase != t->phase)
            enter_phase(t, phase);
        if (t->phase == WL_PHASE_STOP)
            break;
        if (t->phase == WL_PHASE_CONNECT) {
            open_more(t);
            if (t->now >= next_scan) {
                check_deadlines(t);
                next_scan = t->now + 100000000ull;
            }
        }
        int timeout = 100;
        if (t->pub != NULL)
            timeout = pub_pump(t) ? 0 : pub_timeout(t);
        int n = epoll_wait(t->epfd, evs, 1024, timeout);
        if (n < 0 && errno != EINTR) {
            thread_error(t, "epoll_wait: %d", errno);
            break;
        }
        t->now = wl_now_ns();
        for (int i = 0; i < n; i++) {
            wl_conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                uint64_t v;
                ssize_t r = read(t->evfd, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (c->state == CS_CLOSED)
                continue;
            uint32_t e = evs[i].events;
            if (c->state == CS_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    conn_on_connected(t, c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
                conn_on_readable(t, c);
            if (c->state != CS_CLOSED && (e & EPOLLOUT))
                conn_flush(t, c);
        }
        sub_min_update(t);
        atomic_store_explicit(&t->inflight, t->inflight_local, memory_order_relaxed);
        atomic_store_explicit(&t->received, t->c.msgs_total, memory_order_relaxed);
    }
    finalize(t);
    for (uint32_t i = 0; i < t->nconns; i++) {
        wl_conn_t *c = &t->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        wl_buf_free(&c->rbuf);
        wl_buf_free(&c->sbuf);
        wl_buf_free(&c->wbuf);
    }
    return NULL;
}

/* ---- public entry points --------------------------------------------------------------- */

int wl_engine_start(wl_run_t *run)
{
    const wl_config_t *cfg = run->cfg;
    unsigned nt = cfg->threads;
    run->nthreads = nt;
    run->threads = calloc(nt, sizeof(wl_thread_t));
    if (run->threads == NULL)
        return -ENOMEM;
    uint64_t ring = 1;
    while (ring < 2ull * cfg->window + 2)
        ring <<= 1;
    uint32_t burst = cfg->connect_burst / nt;
    if (burst == 0)
        burst = 1;
    for (unsigned k = 0; k < nt; k++) {
        wl_thread_t *t = &run->threads[k];
        t->run = run;
        t->idx = k;
        t->phase = WL_PHASE_CONNECT;
        t->burst = burst;
        t->nconns = run->total > k ? (run->total - k + nt - 1) / nt : 0;
        t->conns = calloc(t->nconns ? t->nconns : 1, sizeof(wl_conn_t));
        t->rdcap = RDBUF_SIZE;
        t->rdbuf = malloc(t->rdcap);
        t->payload = malloc(cfg->size);
        t->waiting = calloc(ring, sizeof(uint32_t));
        if (t->conns == NULL || t->rdbuf == NULL || t->payload == NULL || t->waiting == NULL)
            return -ENOMEM;
        t->ring_mask = ring - 1;
        memset(t->payload, 'x', cfg->size);
        wl_hist_init(&t->hist);
        t->rng.s = (wl_now_ns() ^ (0x9e3779b97f4a7c15ull * (k + 1))) | 1;
        atomic_init(&t->sub_min, UINT64_MAX);
        atomic_init(&t->inflight, 0);
        atomic_init(&t->received, 0);
        for (uint32_t j = 0; j < t->nconns; j++) {
            wl_conn_t *c = &t->conns[j];
            c->fd = -1;
            c->state = CS_NEW;
            c->pc.id = k + j * nt;
            c->pc.cfg = cfg;
            switch (cfg->scenario) {
            case WL_SC_ECHO: c->pc.role = WL_ROLE_ECHO; break;
            case WL_SC_IDLE: c->pc.role = WL_ROLE_IDLE; break;
            case WL_SC_FANOUT: c->pc.role = c->pc.id == 0 ? WL_ROLE_PUB : WL_ROLE_SUB; break;
            }
        }
        if (cfg->scenario == WL_SC_FANOUT && k == 0)
            t->pub = &t->conns[0];
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (t->epfd < 0 || t->evfd < 0)
            return -errno;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev) < 0)
            return -errno;
    }
    for (unsigned k = 0; k < nt; k++) {
        int err = pthread_create(&run->threads[k].tid, NULL, thread_main, &run->threads[k]);
        if (err != 0)
            return -err;
    }
    return 0;
}

void wl_engine_set_phase(wl_run_t *run, int phase)
{
    atomic_store(&run->phase, phase);
    for (unsigned k = 0; k < run->nthreads; k++) {
        uint64_t one = 1;
        ssize_t n = write(run->threads[k].evfd, &one, sizeof(one));
        (void)n;
    }
}

void wl_engine_join(wl_run_t *run)
{
    for (unsigned k = 0; k < run->nthreads; k++)
        pthread_join(run->threads[k].tid, NULL);
}

void wl_engine_free(wl_run_t *run)
{
    if (run->threads == NULL)
        return;
    for (unsigned k = 0; k < run->nthreads; k++) {
        wl_thread_t *t = &run->threads[k];
        if (t->epfd > 0)
            close(t->epfd);
        if (t->evfd > 0)
            close(t->evfd);
        free(t->conns);
        free(t->rdbuf);
        free(t->payload);
        free(t->waiting);
        wl_buf_free(&t->fout);
    }
    free(run->threads);
    run->threads = NULL;
}

uint64_t wl_engine_inflight(wl_run_t *run)
{
    uint64_t sum = 0;
    for (unsigned k = 0; k < run->nthreads; k++)
        sum += atomic_load_explicit(&run->threads[k].inflight, memory_order_relaxed);
    return sum;
}

uint64_t wl_engine_sub_min(wl_run_t *run)
{
    uint64_t m = UINT64_MAX;
    for (unsigned k = 0; k < run->nthreads; k++) {
        uint64_t v = atomic_load(&run->threads[k].sub_min);
        if (v < m)
            m = v;
    }
    return m;
}

uint64_t wl_engine_received(wl_run_t *run)
{
    uint64_t sum = 0;
    for (unsigned k = 0; k < run->nthreads; k++)
        sum += atomic_load_explicit(&run->threads[k].received, memory_order_relaxed);
    return sum;
}
