/* Pass-through rules and the splice proxy (see proxy.h).
 *
 * Life of a proxied connection, all on the worker that accepted it:
 *
 *   COPY    the back connection is connecting; the PROXY header and the
 *           sniffed bytes wait in its output queue. Bytes that arrive on either
 *           side meanwhile go through the ordinary px_conn queues (a backend
 *           that speaks first, such as sshd's banner, answers at once).
 *   SPLICE  once the back is connected and both queues and input buffers are
 *           empty, both connections enter PX__RAW (px__conn_raw): their
 *           watchers call splice_io, and bytes move socket -> pipe -> socket
 *           with splice(2), never through user space.
 *   closed  an error, the idle timeout, a server shutdown, or both directions
 *           finished (EOF read and forwarded each way): both are aborted (in
 *           SPLICE nothing is queued: every byte read was written). The state
 *           is freed when both connections have closed (two on_close).
 *
 * Each direction is {src socket, pipe, dst socket}: "up" from the client to
 * the backend (metric direction="in"), "down" back (direction="out"). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"
#include "net/proxy.h"
#include "net/proxy_protocol.h"

/* ---- rules ------------------------------------------------------------------------- */

static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* "500ms", "30s", "10m", "1h", "1d"; a bare number is seconds (like the CLI). */
static int parse_duration(const char *s, size_t n, uint64_t *ms)
{
    size_t d = 0;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    uint64_t v, mul;
    const char *u = s + d;
    size_t un = n - d;
    if (parse_uint(s, d, 1000000000, &v))
        return -1;
    if (un == 0 || (un == 1 && *u == 's'))
        mul = 1000;
    else if (un == 2 && memcmp(u, "ms", 2) == 0)
        mul = 1;
    else if (un == 1 && *u == 'm')
        mul = 60000;
    else if (un == 1 && *u == 'h')
        mul = 3600000;
    else if (un == 1 && *u == 'd')
        mul = 86400000;
    else
        return -1;
    *ms = v * mul;
    return 0;
}

static int is_probe_text(const char *s)
{
    static const char *const exact[] = {"ssh", "openvpn", "xmpp", "default"};
    for (size_t i = 0; i < PX_ARRAY_SIZE(exact); i++)
        if (strcmp(s, exact[i]) == 0)
            return 1;
    return strncmp(s, "tls-sni:", 8) == 0 || strncmp(s, "http-host:", 10) == 0 ||
           strncmp(s, "regex:", 6) == 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        goto fail;                                                                                 \
    } while (0)

int px__fwd_rule_parse(px__fwd_rule_t *r, const char *spec, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->probe.kind = PX__PROBE_DEFAULT; /* nothing to dispose yet */
    r->m_in = r->m_out = r->m_conns = r->m_open = r->m_fail = r->m_rejected = -1;
    r->idle_ms = PX__FWD_IDLE_MS;
    r->connect_ms = PX__FWD_CONNECT_MS;
    r->spec = px__xstrdup(spec);
    char *probe = NULL;
    size_t window = 0;
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec)
        FAIL("'%s': expected NAME=TARGET[,OPTION=VALUE...]", spec);
    size_t nlen = (size_t)(eq - spec);
    if (nlen > PX__FWD_NAME_MAX)
        FAIL("'%s': the name is longer than %d characters", spec, PX__FWD_NAME_MAX);
    memcpy(r->name, spec, nlen);
    r->name[nlen] = '\0';
    for (size_t i = 0; i < nlen; i++) {
        unsigned char ch = (unsigned char)r->name[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '"' || ch == '\\' || ch == ',')
            FAIL("'%s': the name may not contain spaces, quotes, backslashes or commas", spec);
    }
    const char *t = eq + 1, *comma = strchr(t, ',');
    size_t tlen = comma ? (size_t)(comma - t) : strlen(t);
    r->target = px__xmalloc(tlen + 1);
    memcpy(r->target, t, tlen);
    r->target[tlen] = '\0';
    struct sockaddr_storage ss;
    socklen_t sl;
    if (px__connect_addr(r->target, &ss, &sl) != 0)
        FAIL("'%s': target '%s' is not HOST:PORT (numeric, or localhost), [V6]:PORT or unix:PATH",
             spec, r->target);
    for (const char *o = comma ? comma + 1 : NULL; o;) {
        const char *oe = strchr(o, ','), *ov = strchr(o, '=');
        if (strncmp(o, "probe=", 6) == 0) {
            probe = px__xstrdup(o + 6); /* the rest: a regex may contain commas */
            break;
        }
        size_t olen = oe ? (size_t)(oe - o) : strlen(o);
        if (!ov || ov > o + olen)
            FAIL("'%s': option '%.*s' is not KEY=VALUE", spec, (int)olen, o);
        size_t klen = (size_t)(ov - o), vlen = olen - klen - 1;
        const char *v = ov + 1;
        uint64_t n;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(o, k, klen) == 0)
        if (KEY("proxy")) {
            if (vlen == 2 && memcmp(v, "v1", 2) == 0)
                r->proxy = 1;
            else if (vlen == 2 && memcmp(v, "v2", 2) == 0)
                r->proxy = 2;
            else if (vlen == 4 && memcmp(v, "none", 4) == 0)
                r->proxy = 0;
            else
                FAIL("'%s': proxy=%.*s: expected v1, v2 or none", spec, (int)vlen, v);
        } else if (KEY("max-conns")) {
            if (parse_uint(v, vlen, 1000000, &n))
                FAIL("'%s': max-conns=%.*s: expected 0..1000000", spec, (int)vlen, v);
            r->max_conns = (unsigned)n;
        } else if (KEY("idle")) {
            if (parse_duration(v, vlen, &r->idle_ms))
                FAIL("'%s': idle=%.*s: expected a duration (e.g. 30s, 10m, 1h; 0 = never)", spec,
                     (int)vlen, v);
        } else if (KEY("connect-timeout")) {
            if (parse_duration(v, vlen, &r->connect_ms) || r->connect_ms == 0)
                FAIL("'%s': connect-timeout=%.*s: expected a duration above 0 (e.g. 500ms, 5s)",
                     spec, (int)vlen, v);
        } else if (KEY("window")) {
            if (parse_uint(v, vlen, PX__REGEX_WINDOW_MAX, &n) || n == 0)
                FAIL("'%s': window=%.*s: expected 1..%d bytes", spec, (int)vlen, v,
                     PX__REGEX_WINDOW_MAX);
            window = (size_t)n;
        } else {
            FAIL("'%s': unknown option '%.*s' (probe, proxy, max-conns, idle, connect-timeout, "
                 "window)",
                 spec, (int)klen, o);
        }
#undef KEY
        o = oe ? oe + 1 : NULL;
    }
    if (!probe) {
        if (!is_probe_text(r->name))
            FAIL("'%s': '%s' is not a probe (ssh, openvpn, xmpp, tls-sni:HOST, http-host:HOST, "
                 "regex:ERE, default): name the rule after one, or add probe=...",
                 spec, r->name);
        probe = px__xstrdup(r->name);
    }
    char perr[256];
    if (px__probe_compile(&r->probe, probe, window, perr, sizeof perr) != 0) {
        r->probe.kind = PX__PROBE_DEFAULT;
        FAIL("'%s': %s", spec, perr);
    }
    px__free(probe);
    return 0;
fail:
    px__free(probe);
    return -EINVAL;
}

#undef FAIL

int px__fwd_rule_metrics(px__fwd_rule_t *r)
{
    char n[192];
#define REG(field, fmt, help, type)                                                                \
    do {                                                                                           \
        snprintf(n, sizeof n, fmt, r->name);                                                       \
        if ((r->field = px_metric_register(n, help, type)) < 0)                                    \
            return r->field;                                                                       \
    } while (0)
    REG(m_in, "plexus_forward_bytes_total{rule=\"%s\",direction=\"in\"}",
        "Bytes passed through to backends (in: client to backend; out: backend to client)",
        PX_METRIC_COUNTER);
    REG(m_out, "plexus_forward_bytes_total{rule=\"%s\",direction=\"out\"}",
        "Bytes passed through to backends (in: client to backend; out: backend to client)",
        PX_METRIC_COUNTER);
    REG(m_conns, "plexus_forward_connections_total{rule=\"%s\"}",
        "Connections handed to a pass-through rule", PX_METRIC_COUNTER);
    REG(m_open, "plexus_forward_connections_open{rule=\"%s\"}",
        "Connections open through a pass-through rule", PX_METRIC_GAUGE);
    REG(m_fail, "plexus_forward_failures_total{rule=\"%s\"}",
        "Pass-through connections whose backend could not be reached (refused, timeout, ...)",
        PX_METRIC_COUNTER);
    REG(m_rejected, "plexus_forward_rejected_total{rule=\"%s\"}",
        "Connections closed because the rule's max-conns was reached", PX_METRIC_COUNTER);
#undef REG
    return 0;
}

void px__fwd_rule_dispose(px__fwd_rule_t *r)
{
    if (!r)
        return;
    px__probe_dispose(&r->probe);
    px__free(r->spec);
    px__free(r->target);
    r->spec = r->target = NULL;
}

/* ---- the proxy ----------------------------------------------------------------------- */

enum { COPY, SPLICE };

/* Bytes a side may have queued towards its peer, in COPY, before it stops
 * being read (backpressure before the splice starts). */
#define COPY_HIGH (64 * 1024)
/* Bytes asked of one splice(2) into a pipe; it moves at most the pipe's free
 * room (PIPE_SIZE, or the default 64 KiB when the kernel refuses more). */
#define SPLICE_CHUNK (256 * 1024)
#ifndef PIPE_SIZE
#define PIPE_SIZE (256 * 1024) /* asked for each pipe (F_SETPIPE_SZ) */
#endif
/* Read-write rounds per event and direction, so one busy pair cannot starve
 * the worker's other connections (level-triggered epoll calls again). */
#define SPLICE_ROUNDS 4

typedef struct dir {
    int pr, pw;        /* the pipe: read end, write end */
    size_t in_pipe;    /* bytes spliced in and not yet out */
    uint8_t src_eof;   /* end of stream read from src */
    uint8_t src_empty; /* the last read found nothing: wait for readable */
    uint8_t dst_full;  /* the last write would block: wait for writable */
    uint8_t shut;      /* dst's write side shut after src's EOF (half-close forwarded) */
    int metric;        /* bytes counter of this direction */
} dir_t;

typedef struct proxy {
    px__fwd_rule_t *rule;
    px_conn_t *front, *back; /* NULL once that connection closed */
    int stage;               /* COPY, SPLICE */
    int alive;               /* connections whose on_close has not run yet */
    int finishing;           /* both are being closed */
    int queued;              /* `defer` is queued (the state outlives it) */
    uint64_t last_active;    /* loop ms of the last byte moved */
    dir_t up, down;          /* client -> backend, backend -> client */
    px_defer_t defer;        /* try the switch to SPLICE outside connection callbacks */
} proxy_t;

static const px_protocol_t front_proto, back_proto;

static void proxy_free(proxy_t *p)
{
    dir_t *ds[2] = {&p->up, &p->down};
    for (int i = 0; i < 2; i++) {
        if (ds[i]->pr >= 0)
            close(ds[i]->pr);
        if (ds[i]->pw >= 0)
            close(ds[i]->pw);
    }
    atomic_fetch_sub_explicit(&p->rule->open, 1, memory_order_relaxed);
    px_metric_add(p->rule->m_open, -1);
    px__free(p);
}

static void defer_cb(px_defer_t *d);

/* Close both sides at once. In SPLICE nothing is queued (every byte read was
 * written), and the usual reasons are final (both EOFs, an error, idle). */
static void finish(proxy_t *p)
{
    if (p->finishing)
        return;
    p->finishing = 1;
    if (p->front)
        px_conn_abort(p->front);
    if (p->back)
        px_conn_abort(p->back);
}

static void note_active(proxy_t *p, px_conn_t *c)
{
    p->last_active = px_loop_now(px_conn_loop(c));
}

/* Arm a side's watcher for what its directions wait for. A side with nothing
 * to wait for is unregistered, so a hang-up (always reported by epoll) cannot
 * wake us in a loop. */
static void arm(px_conn_t *c, const dir_t *rd, const dir_t *wr)
{
    unsigned ev = 0;
    if (!rd->src_eof && !(rd->in_pipe && rd->dst_full))
        ev |= PX_READABLE;
    if (wr->in_pipe && wr->dst_full)
        ev |= PX_WRITABLE;
    if (ev) {
        if (px_io_start(px_conn_loop(c), &c->io, ev) != 0)
            px_conn_abort(c);
    } else {
        px_io_stop(&c->io);
    }
}

/* Move what can move in one direction. 0, or -errno (the pair is dead). */
static int pump(dir_t *d, int src, int dst)
{
    for (int round = 0; round < SPLICE_ROUNDS; round++) {
        int progress = 0;
        if (!d->src_eof && !d->src_empty && !(d->in_pipe && d->dst_full)) {
            size_t want = SPLICE_CHUNK;
            ssize_t n = splice(src, NULL, d->pw, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe += (size_t)n;
                progress = 1;
                /* Less than asked: the socket is most likely drained. Level-
                 * triggered epoll says so if not, and a read is saved. */
                if ((size_t)n < want)
                    d->src_empty = 1;
            } else if (n == 0) {
                d->src_eof = 1;
            } else if (errno == EAGAIN) {
                d->src_empty = 1; /* (or the pipe has no free slot: the write below frees it) */
            } else if (errno != EINTR) {
                return -errno;
            }
        }
        if (d->in_pipe && !d->dst_full) {
            ssize_t n =
                splice(d->pr, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (size_t)n;
                px_metric_add(d->metric, n);
                progress = 1;
            } else if (n < 0 && errno == EAGAIN) {
                d->dst_full = 1;
            } else if (n < 0 && errno != EINTR) {
                return -errno;
            }
        }
        if (!progress)
            break;
    }
    if (d->src_eof && d->in_pipe == 0 && !d->shut) {
        d->shut = 1;
        if (shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN)
            return -errno;
    }
    return 0;
}

static void splice_io(px_io_t *io, unsigned events)
{
    proxy_t *p = io->data;
    /* Closed by someone else (a server shutdown's abort, a failed re-arm)
     * while events of this batch were still coming. */
    if (p->finishing || !p->front || !p->back || px_conn_is_closing(p->front) ||
        px_conn_is_closing(p->back)) {
        finish(p);
        return;
    }
    int is_front = io == &p->front->io;
    dir_t *rd = is_front ? &p->up : &p->down; /* reads from this socket */
    dir_t *wr = is_front ? &p->down : &p->up; /* writes to it */
    if (events & (PX_READABLE | PX_HUP))
        rd->src_empty = 0;
    if (events & (PX_WRITABLE | PX_HUP))
        wr->dst_full = 0;
    int ffd = p->front->io.fd, bfd = p->back->io.fd;
    int r = pump(&p->up, ffd, bfd);
    if (r == 0)
        r = pump(&p->down, bfd, ffd);
    if (r != 0) {
        px_log(PX_LOG_DEBUG, "forward %s: conn %llu: %s", p->rule->name,
               (unsigned long long)px_conn_id(p->front), px_strerror(r));
        finish(p);
        return;
    }
    note_active(p, p->front);
    if (p->up.shut && p->down.shut) {
        finish(p); /* both directions ended and were forwarded */
        return;
    }
    arm(p->front, &p->up, &p->down);
    arm(p->back, &p->down, &p->up);
}

static int open_pipe(dir_t *d)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return -errno;
    /* A bigger pipe moves more per splice(2) (fewer calls, fewer wake-ups).
     * Best effort: over the per-user pipe budget the kernel refuses, and the
     * default 64 KiB works too. */
    if (PIPE_SIZE > 65536)
        (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE);
    d->pr = fds[0];
    d->pw = fds[1];
    return 0;
}

/* COPY -> SPLICE, once nothing is in flight through the px_conn queues. */
static void try_splice(proxy_t *p)
{
    px_conn_t *f = p->front, *b = p->back;
    if (p->stage != COPY || p->finishing || !f || !b || px_conn_is_closing(f) ||
        px_conn_is_closing(b) || b->phase != PX__OPEN || f->phase != PX__OPEN)
        return;
    if (f->out_count || b->out_count || px_buf_size(&f->in) || px_buf_size(&b->in))
        return; /* on_drain (or the next read) asks again */
    int r = open_pipe(&p->up);
    if (r == 0)
        r = open_pipe(&p->down);
    if (r != 0) {
        px_log(PX_LOG_WARN, "forward %s: conn %llu: cannot create a pipe: %s", p->rule->name,
               (unsigned long long)px_conn_id(f), px_strerror(r));
        finish(p);
        return;
    }
    p->stage = SPLICE;
    /* EOFs seen while copying are in up/down.src_eof (set by on_eof). */
    px__conn_raw(f, splice_io, p);
    px__conn_raw(b, splice_io, p);
    px_conn_set_timeout(b, 0);
    /* Whatever the sockets hold now is announced by the watchers (level-
     * triggered); an EOF already read is forwarded now. */
    splice_io(&f->io, 0);
}

static void defer_cb(px_defer_t *d)
{
    proxy_t *p = d->data;
    p->queued = 0;
    if (p->alive == 0) { /* both closed while this was queued */
        proxy_free(p);
        return;
    }
    try_splice(p);
}

static void want_splice(proxy_t *p)
{
    if (p->stage == COPY && !p->finishing && p->front) {
        p->queued = 1;
        px_defer(px_conn_loop(p->front), &p->defer);
    }
}

/* COPY: one side's bytes go to the other's queue; a side stops being read
 * while the other has more than COPY_HIGH queued. */
static ssize_t copy_read(px_conn_t *c, char *data, size_t len)
{
    proxy_t *p = px_conn_state(c);
    px_conn_t *to = c == p->front ? p->back : p->front;
    if (!to || px_conn_is_closing(to)) {
        px_conn_close(c);
        return -1;
    }
    if (px_conn_write_nocap(to, data, len) != 0) {
        finish(p);
        return -1;
    }
    px_metric_add(c == p->front ? p->up.metric : p->down.metric, (int64_t)len);
    note_active(p, c);
    if (px_conn_pending(to) > COPY_HIGH)
        px_conn_pause_read(c, 1);
    want_splice(p);
    return (ssize_t)len;
}

static void copy_drain(px_conn_t *c)
{
    proxy_t *p = px_conn_state(c);
    px_conn_t *from = c == p->front ? p->back : p->front;
    if (from && !px_conn_is_closing(from))
        px_conn_pause_read(from, 0);
    want_splice(p);
}

static void copy_eof(px_conn_t *c)
{
    proxy_t *p = px_conn_state(c);
    if (c == p->front)
        p->up.src_eof = 1;
    else
        p->down.src_eof = 1;
    want_splice(p); /* forwarded as a shutdown once splicing */
}

static void proxy_timeout(px_conn_t *c)
{
    proxy_t *p = px_conn_state(c);
    uint64_t now = px_loop_now(px_conn_loop(c)), idle = p->rule->idle_ms;
    if (idle && now - p->last_active < idle) {
        px_conn_set_timeout(c, idle - (now - p->last_active));
        return;
    }
    px_log(PX_LOG_DEBUG, "forward %s: conn %llu idle for %llu ms, closing", p->rule->name,
           (unsigned long long)px_conn_id(p->front ? p->front : c), (unsigned long long)idle);
    finish(p);
}

static void proxy_shutdown(px_conn_t *c)
{
    /* A tunnel has no request boundary to wait for: the server is stopping. */
    finish(px_conn_state(c));
}

static void proxy_close(px_conn_t *c)
{
    proxy_t *p = px_conn_state(c);
    if (c == p->front)
        p->front = NULL;
    else
        p->back = NULL;
    px_conn_t *other = p->front ? p->front : p->back;
    if (other && !px_conn_is_closing(other)) {
        if (p->stage == SPLICE || other->phase == PX__CONNECTING)
            px_conn_abort(other); /* nothing queued (or nothing sent yet); may be PX__RAW */
        else
            px_conn_close(other); /* flush what was copied to it, then close */
    }
    if (p->stage == SPLICE)
        p->finishing = 1; /* the other's events of this batch must not splice */
    if (--p->alive == 0 && !p->queued)
        proxy_free(p);
}

static void back_connect(px_conn_t *c, int status)
{
    proxy_t *p = px_conn_state(c);
    if (status < 0) {
        px_metric_add(p->rule->m_fail, 1);
        px_log(PX_LOG_WARN, "forward %s: cannot reach %s: %s", p->rule->name, p->rule->target,
               px_strerror(status));
        if (p->front && !px_conn_is_closing(p->front))
            px_conn_close(p->front);
        return;
    }
    want_splice(p);
}

static const px_protocol_t front_proto = {
    .name = "forward",
    .on_read = copy_read,
    .on_drain = copy_drain,
    .on_eof = copy_eof,
    .on_timeout = proxy_timeout,
    .on_shutdown = proxy_shutdown,
    .on_close = proxy_close,
};

static const px_protocol_t back_proto = {
    .name = "forward-backend",
    .on_read = copy_read,
    .on_drain = copy_drain,
    .on_eof = copy_eof,
    .on_timeout = proxy_timeout,
    .on_shutdown = proxy_shutdown,
    .on_close = proxy_close,
    .on_connect = back_connect,
};

int px__proxy_start(px_conn_t *c, px__fwd_rule_t *r, const void *first, size_t len)
{
    unsigned n = atomic_fetch_add_explicit(&r->open, 1, memory_order_relaxed);
    if (r->max_conns && n >= r->max_conns) {
        atomic_fetch_sub_explicit(&r->open, 1, memory_order_relaxed);
        px_metric_add(r->m_rejected, 1);
        px_log(PX_LOG_DEBUG, "forward %s: conn %llu refused: max-conns=%u reached", r->name,
               (unsigned long long)px_conn_id(c), r->max_conns);
        px_conn_abort(c);
        return -EBUSY;
    }
    px_metric_add(r->m_open, 1);
    px_metric_add(r->m_conns, 1);
    proxy_t *p = px__calloc(1, sizeof *p);
    if (!p) {
        atomic_fetch_sub_explicit(&r->open, 1, memory_order_relaxed);
        px_metric_add(r->m_open, -1);
        px_conn_abort(c);
        return -ENOMEM;
    }
    p->rule = r;
    p->front = c;
    p->up.pr = p->up.pw = p->down.pr = p->down.pw = -1;
    p->up.metric = r->m_in;
    p->down.metric = r->m_out;
    px_defer_init(&p->defer, defer_cb, p);
    note_active(p, c);

    px_connect_opts_t co;
    px_connect_opts_init(&co);
    co.timeout_ms = r->connect_ms;
    px_conn_t *b = NULL;
    int rc = px_conn_connect(px_conn_server(c), r->target, &co, &back_proto, p, &b);
    if (rc != 0) {
        px_metric_add(r->m_fail, 1);
        px_log(PX_LOG_WARN, "forward %s: cannot connect to %s: %s", r->name, r->target,
               px_strerror(rc));
        proxy_free(p);
        px_conn_abort(c);
        return rc;
    }
    p->back = b;
    p->alive = 2;
    if (r->proxy) {
        struct sockaddr_storage peer, local;
        char hdr[PX_PROXY_WRITE_MAX];
        if (px__conn_addresses(c, &peer, &local) != 0) {
            memset(&peer, 0, sizeof peer); /* unknown: an UNKNOWN / LOCAL header */
            local = peer;
        }
        ssize_t hn = r->proxy == 1 ? px__proxy_write_v1(hdr, sizeof hdr, &peer, &local)
                                   : px__proxy_write_v2(hdr, sizeof hdr, &peer, &local);
        if (hn > 0)
            px_conn_write_nocap(b, hdr, (size_t)hn);
    }
    if (len) {
        px_conn_write_nocap(b, first, len);
        px_metric_add(r->m_in, (int64_t)len); /* the sniffed bytes count as passed */
    }
    /* The front now belongs to the proxy: the sniffer's limits are gone. */
    px_conn_set_protocol(c, &front_proto, p);
    px_conn_set_read_limit(c, PX__READ_CHUNK);
    px_conn_set_timeout(c, r->idle_ms);
    return 0;
}
