/* Connections: read dispatch to the protocol, the output queue (shared slices,
 * scratch copies, files) flushed once per loop iteration, and the close
 * sequence (never freed inside its own callback: finalisation is deferred). */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"

#define MAX_IOV          64
#define PX__COALESCE_MAX 4096 /* small pieces joined before a write, bytes */

static _Atomic uint64_t next_conn_id = 1;

/* ---- plain socket transport ----------------------------------------------- */

static ssize_t plain_read(px_conn_t *c, void *buf, size_t len)
{
    ssize_t n = recv(c->io.fd, buf, len, 0);
    return n >= 0 ? n : -errno;
}

static ssize_t plain_writev(px_conn_t *c, const struct iovec *iov, int iovcnt)
{
    ssize_t n;
    if (iovcnt == 1) { /* the common case (one response, one frame batch): no iovec to import */
        n = send(c->io.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
        n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
    }
    return n >= 0 ? n : -errno;
}

static ssize_t plain_sendfile(px_conn_t *c, int fd, off_t *off, size_t len)
{
    ssize_t n = sendfile(c->io.fd, fd, off, len);
    return n >= 0 ? n : -errno;
}

static int plain_shutdown(px_conn_t *c)
{
    return shutdown(c->io.fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void plain_close(px_conn_t *c)
{
    close(c->io.fd);
}

static const px_transport_t plain_transport = {
    .name = "tcp",
    .read = plain_read,
    .writev = plain_writev,
    .sendfile = plain_sendfile,
    .shutdown = plain_shutdown,
    .close = plain_close,
};

/* ---- scratch slices: reusable buffers for small copied writes -------------- */

static px_slice_t *scratch_get(px__netw_t *nw)
{
    if (nw->nscratch)
        return nw->scratch[--nw->nscratch];
    return px_slice_new(PX__SCRATCH_SIZE);
}

static void scratch_put(px__netw_t *nw, px_slice_t *s)
{
    if (px_slice_refs(s) == 1 && nw->nscratch < PX__SCRATCH_CACHE)
        nw->scratch[nw->nscratch++] = s;
    else
        px_slice_unref(s);
}

void px__scratch_free_all(px__netw_t *nw)
{
    while (nw->nscratch)
        px_slice_unref(nw->scratch[--nw->nscratch]);
    while (nw->nrings)
        px__free(nw->rings[--nw->nrings]);
}

/* ---- output queue ---------------------------------------------------------- */

/* out_cap is a power of two. */
static px__out_t *out_at(px_conn_t *c, uint32_t i)
{
    return &c->out[(c->out_head + i) & (c->out_cap - 1)];
}

static int out_push(px_conn_t *c, px__out_t e)
{
    if (c->out_count == c->out_cap) {
        uint32_t cap = c->out_cap ? c->out_cap * 2 : PX__OUT_SMALL;
        px__out_t *n;
        /* Queues go empty -> non-empty once per message on a busy connection:
         * small rings come from a per-worker cache, not malloc. */
        if (cap == PX__OUT_SMALL && c->nw->nrings)
            n = c->nw->rings[--c->nw->nrings];
        else
            n = px__malloc(cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        for (uint32_t i = 0; i < c->out_count; i++)
            n[i] = *out_at(c, i);
        if (c->out_cap == PX__OUT_SMALL && c->nw->nrings < PX__RING_CACHE)
            c->nw->rings[c->nw->nrings++] = c->out;
        else
            px__free(c->out);
        c->out = n;
        c->out_cap = cap;
        c->out_head = 0;
    }
    *out_at(c, c->out_count++) = e;
    c->out_bytes += e.len;
    return 0;
}

static void out_release(px_conn_t *c, px__out_t *e)
{
    if (e->kind == PX__OUT_FILE)
        close(e->u.fd);
    else if (e->kind == PX__OUT_SCRATCH)
        scratch_put(c->nw, e->u.slice);
    else
        px_slice_unref(e->u.slice);
}

static void out_pop(px_conn_t *c)
{
    out_release(c, out_at(c, 0));
    c->out_head = (c->out_head + 1) & (c->out_cap - 1);
    if (--c->out_count == 0) {
        /* An idle connection holds no output memory. */
        if (c->out_cap == PX__OUT_SMALL && c->nw->nrings < PX__RING_CACHE)
            c->nw->rings[c->nw->nrings++] = c->out;
        else
            px__free(c->out);
        c->out = NULL;
        c->out_cap = c->out_head = 0;
    }
}

static void out_clear(px_conn_t *c)
{
    while (c->out_count)
        out_pop(c);
    c->out_bytes = 0;
}

static void schedule(px_conn_t *c)
{
    px_defer(c->nw->loop, &c->defer);
}

static int check_room(px_conn_t *c, size_t len)
{
    if (c->closing)
        return -EPIPE;
    if (len > c->nw->server->opts.output_cap - c->out_bytes ||
        c->out_bytes > c->nw->server->opts.output_cap)
        return -ENOBUFS;
    return 0;
}

static int write_copy(px_conn_t *c, const void *p, size_t len, int over_cap)
{
    int r = over_cap ? (c->closing ? -EPIPE : 0) : check_room(c, len);
    if (r || len == 0)
        return r;
    const char *src = p;
    /* Append to the last scratch slice while it has room. */
    if (c->out_count) {
        px__out_t *last = out_at(c, c->out_count - 1);
        if (last->kind == PX__OUT_SCRATCH) {
            size_t end = last->off + last->len;
            size_t room = last->u.slice->len - end;
            size_t n = len < room ? len : room;
            memcpy(last->u.slice->data + end, src, n);
            last->len += n;
            c->out_bytes += n;
            src += n;
            len -= n;
        }
    }
    while (len) {
        px_slice_t *s = len > PX__SCRATCH_SIZE ? px_slice_new(len) : scratch_get(c->nw);
        if (!s)
            return -ENOMEM;
        size_t n = len < s->len ? len : s->len;
        memcpy(s->data, src, n);
        px__out_t e = {.kind = len > PX__SCRATCH_SIZE ? PX__OUT_SLICE : PX__OUT_SCRATCH,
                       .off = 0,
                       .u.slice = s,
                       .len = n};
        if ((r = out_push(c, e)) != 0) {
            px_slice_unref(s);
            return r;
        }
        src += n;
        len -= n;
    }
    schedule(c);
    return 0;
}

int px_conn_write(px_conn_t *c, const void *p, size_t len)
{
    return write_copy(c, p, len, 0);
}

int px__conn_write_over_cap(px_conn_t *c, const void *p, size_t len)
{
    return write_copy(c, p, len, 1);
}

int px_conn_write_nocap(px_conn_t *c, const void *p, size_t len)
{
    return write_copy(c, p, len, 1);
}

size_t px_conn_room(const px_conn_t *c)
{
    size_t cap = c->nw->server->opts.output_cap;
    return c->closing || c->out_bytes >= cap ? 0 : cap - c->out_bytes;
}

static int write_slice(px_conn_t *c, px_slice_t *s, size_t off, size_t len, int over_cap)
{
    int r = over_cap ? (c->closing ? -EPIPE : 0) : check_room(c, len);
    if (r || len == 0)
        return r;
    if (off > s->len || len > s->len - off)
        return -EINVAL;
    px__out_t e = {
        .kind = PX__OUT_SLICE, .off = (uint32_t)off, .u.slice = px_slice_ref(s), .len = len};
    if ((r = out_push(c, e)) != 0) {
        px_slice_unref(s);
        return r;
    }
    schedule(c);
    return 0;
}

int px_conn_write_slice(px_conn_t *c, px_slice_t *s, size_t off, size_t len)
{
    return write_slice(c, s, off, len, 0);
}

int px_conn_write_slice_nocap(px_conn_t *c, px_slice_t *s, size_t off, size_t len)
{
    return write_slice(c, s, off, len, 1);
}

int px_conn_sendfile(px_conn_t *c, int fd, uint64_t off, uint64_t len)
{
    int r = c->closing ? -EPIPE : 0;
    if (r == 0 && len) {
        px__out_t e = {.kind = PX__OUT_FILE, .u.fd = fd, .len = len, .file_off = off};
        r = out_push(c, e);
        if (r == 0) {
            /* Files are read by the kernel as the socket drains: they do not
             * count against the output budget, which bounds memory. */
            c->out_bytes -= len;
            schedule(c);
            return 0;
        }
    }
    close(fd);
    return r;
}

size_t px_conn_pending(const px_conn_t *c)
{
    return c->out_bytes;
}

static void kill_conn(px_conn_t *c);

/* Write as much queued output as the socket takes. Returns 0 when the queue is
 * empty, -EAGAIN when the socket is full, or another -errno (connection dead). */
static int flush(px_conn_t *c)
{
    while (c->out_count) {
        px__out_t *first = out_at(c, 0);
        if (first->kind == PX__OUT_FILE) {
            ssize_t n;
            off_t off = (off_t)first->file_off;
            size_t want = first->len > (1u << 30) ? (1u << 30) : (size_t)first->len;
            if (c->transport->sendfile) {
                n = c->transport->sendfile(c, first->u.fd, &off, want);
            } else {
                char tmp[16384];
                size_t k = want < sizeof tmp ? want : sizeof tmp;
                ssize_t got = pread(first->u.fd, tmp, k, off);
                if (got <= 0)
                    return got == 0 ? -EIO : -errno;
                struct iovec iov = {tmp, (size_t)got};
                n = c->transport->writev(c, &iov, 1);
            }
            if (n < 0)
                return (int)n;
            if (n == 0)
                return -EIO; /* file shrank under us */
            px_metric_add(px__m_bytes_out, n);
            first->file_off += (uint64_t)n;
            first->len -= (uint64_t)n;
            if (first->len == 0)
                out_pop(c);
            continue;
        }
        struct iovec iov[MAX_IOV];
        int k = 0;
        size_t total = 0;
        for (uint32_t i = 0; i < c->out_count && k < MAX_IOV; i++) {
            px__out_t *e = out_at(c, i);
            if (e->kind == PX__OUT_FILE)
                break;
            iov[k].iov_base = e->u.slice->data + e->off;
            iov[k].iov_len = (size_t)e->len;
            total += iov[k].iov_len;
            k++;
        }
        /* Many small pieces (broadcast frames queued one by one) cost the kernel
         * per piece; copied into one buffer they cost one memcpy here. */
        char joined[PX__COALESCE_MAX];
        if (k > 1 && total <= sizeof joined) {
            size_t at = 0;
            for (int i = 0; i < k; i++) {
                memcpy(joined + at, iov[i].iov_base, iov[i].iov_len);
                at += iov[i].iov_len;
            }
            iov[0] = (struct iovec){joined, total};
            k = 1;
        }
        ssize_t n = c->transport->writev(c, iov, k);
        if (n < 0)
            return (int)n;
        px_metric_add(px__m_bytes_out, n);
        size_t left = (size_t)n;
        while (left) {
            px__out_t *e = out_at(c, 0);
            if (left < e->len) {
                e->off += (uint32_t)left;
                e->len -= left;
                c->out_bytes -= left;
                left = 0;
            } else {
                left -= (size_t)e->len;
                c->out_bytes -= (size_t)e->len;
                out_pop(c);
            }
        }
    }
    return 0;
}

static void update_interest(px_conn_t *c)
{
    unsigned ev = 0;
    if ((!c->closing && !c->read_paused && !c->eof) || c->lingering)
        ev |= PX_READABLE;
    if (c->out_count)
        ev |= PX_WRITABLE;
    px_io_start(c->nw->loop, &c->io, ev);
}

/* Output is done on a closing connection: shut our side and linger briefly,
 * reading and discarding, so a peer that still sends does not get an RST that
 * would destroy the reply it has not read yet. */
static void start_linger(px_conn_t *c)
{
    if (c->eof || c->aborted || c->transport->shutdown(c) != 0) {
        kill_conn(c);
        return;
    }
    c->lingering = 1;
    px_conn_set_timeout(c, PX__LINGER_MS);
    update_interest(c);
}

static void do_flush(px_conn_t *c)
{
    int r = flush(c);
    if (r == -EAGAIN) {
        update_interest(c);
        return;
    }
    if (r < 0) {
        px_conn_abort(c);
        return;
    }
    if (c->closing) {
        if (!c->lingering)
            start_linger(c);
        return;
    }
    update_interest(c);
    if (c->proto->on_drain)
        c->proto->on_drain(c);
}

void px_conn_flush(px_conn_t *c)
{
    if (!c->finalized && c->out_count)
        do_flush(c);
}

static void dispatch(px_conn_t *c, char *data, size_t len, int from_in);
static void finalize(px_conn_t *c);

static void on_deferred(px_defer_t *d)
{
    px_conn_t *c = d->data;
    if (c->finalized) { /* queued again while it was being finalised */
        px__free(c);
        return;
    }
    if (!c->aborted && c->redispatch && !c->read_paused && !c->closing && px_buf_size(&c->in)) {
        c->redispatch = 0;
        dispatch(c, px_buf_head(&c->in), px_buf_size(&c->in), 1);
    }
    if (!c->aborted && c->out_count)
        do_flush(c);
    else if (!c->aborted && c->closing && !c->lingering)
        start_linger(c);
    if (c->aborted)
        finalize(c);
}

/* ---- input ---------------------------------------------------------------- */

/* Hand `data` to the protocol (and to the next one, if it switches). Unused
 * bytes end up in c->in. `from_in`: data points into c->in. */
static void dispatch(px_conn_t *c, char *data, size_t len, int from_in)
{
    size_t used = 0;
    while (used < len && !c->closing && !c->read_paused) {
        const px_protocol_t *p = c->proto;
        ssize_t r = p->on_read(c, data + used, len - used);
        if (r < 0 || c->closing)
            break;
        used += (size_t)r;
        if (c->proto == p)
            break;
    }
    if (c->closing) {
        px_buf_dispose(&c->in);
        return;
    }
    if (from_in) {
        px_buf_consume(&c->in, used);
    } else if (used < len) {
        /* The read limit bounds an unfinished request or frame. Bytes left over
         * because the protocol paused (a pipelined request behind one answered
         * asynchronously, or output backpressure) are complete input already
         * read: at most one read's worth, kept until the protocol resumes. */
        if ((!c->read_paused && len - used > c->read_limit) ||
            px_buf_append(&c->in, data + used, len - used) != 0) {
            px_log(PX_LOG_WARN, "conn %llu: %zu unconsumed input bytes over the limit, closing",
                   (unsigned long long)c->id, len - used);
            px_conn_abort(c);
            return;
        }
    }
    if (px_buf_size(&c->in) == 0)
        px_buf_dispose(&c->in); /* idle connections hold no input memory */
    else if (px_buf_size(&c->in) > c->read_limit && !c->read_paused) {
        px_log(PX_LOG_WARN, "conn %llu: input over the read limit, closing",
               (unsigned long long)c->id);
        px_conn_abort(c);
    }
}

static void on_readable(px_conn_t *c)
{
    px__netw_t *nw = c->nw;
    if (c->lingering) {
        ssize_t n = c->transport->read(c, nw->rbuf, PX__READ_CHUNK);
        if (n == 0 || (n < 0 && n != -EAGAIN))
            kill_conn(c);
        return;
    }
    if (c->closing || c->read_paused || c->eof)
        return;
    char *buf;
    size_t cap;
    int from_in = px_buf_size(&c->in) > 0;
    if (from_in) {
        /* Continue an unfinished request/frame where it is kept. */
        size_t have = px_buf_size(&c->in);
        size_t want = have < c->read_limit ? c->read_limit - have + 1 : 1; /* +1: detect overflow */
        if (want > PX__READ_CHUNK)
            want = PX__READ_CHUNK;
        if (px_buf_reserve(&c->in, want) != 0) {
            px_conn_abort(c);
            return;
        }
        buf = px_buf_tail(&c->in);
        cap = px_buf_room(&c->in);
    } else {
        buf = nw->rbuf;
        cap = PX__READ_CHUNK;
    }
    ssize_t n = c->transport->read(c, buf, cap);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        if (n < 0) {
            px_conn_abort(c);
            return;
        }
        c->eof = 1;
        update_interest(c);
        if (c->proto->on_eof)
            c->proto->on_eof(c);
        else
            px_conn_close(c);
        return;
    }
    px_metric_add(px__m_bytes_in, n);
    if (from_in) {
        c->in.len += (size_t)n;
        dispatch(c, px_buf_head(&c->in), px_buf_size(&c->in), 1);
    } else {
        dispatch(c, buf, (size_t)n, 0);
    }
}

static void on_io(px_io_t *io, unsigned events)
{
    px_conn_t *c = io->data;
    if (events & PX_WRITABLE) {
        do_flush(c);
        if (c->aborted)
            return;
    }
    if (events & PX_READABLE)
        on_readable(c);
}

static void on_timer(px_timer_t *t)
{
    px_conn_t *c = t->data;
    if (c->lingering || c->closing) {
        /* The peer neither read our last bytes nor closed in time. */
        px_conn_abort(c);
        return;
    }
    if (c->proto->on_timeout)
        c->proto->on_timeout(c);
    else
        px_conn_close(c);
}

/* ---- life cycle ------------------------------------------------------------ */

px_conn_t *px__conn_new(px__netw_t *nw, int fd)
{
    px_server_t *s = nw->server;
    px_conn_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nw = nw;
    c->transport = &plain_transport;
    c->proto = s->protocol;
    c->read_limit = PX__READ_CHUNK;
    c->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed);
    px_buf_init(&c->in, 0);
    px_timer_init(&c->timer, on_timer, c);
    px_defer_init(&c->defer, on_deferred, c);
    px_io_init(&c->io, fd, on_io, c);
    if (px_io_start(nw->loop, &c->io, PX_READABLE) != 0) {
        px__free(c);
        return NULL;
    }
    c->next = nw->conns;
    if (nw->conns)
        nw->conns->prev = c;
    nw->conns = c;
    nw->nconns++;
    px_metric_add(px__m_conns, 1);
    px_metric_add(px__m_accepted, 1);
    if (s->on_accept)
        c->state = s->on_accept(c, s->accept_ud);
    if (s->opts.idle_timeout_ms && !px_timer_active(&c->timer))
        px_conn_set_timeout(c, s->opts.idle_timeout_ms);
    return c;
}

static void finalize(px_conn_t *c)
{
    if (c->finalized)
        return;
    c->finalized = 1;
    c->closing = 1;
    px__netw_t *nw = c->nw;
    if (c->proto && c->proto->on_close)
        c->proto->on_close(c);
    px_timer_stop(&c->timer);
    px_io_stop(&c->io);
    c->transport->close(c);
    out_clear(c);
    px_buf_dispose(&c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        nw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    nw->nconns--;
    atomic_fetch_sub_explicit(&nw->server->nconns, 1, memory_order_relaxed);
    px_metric_add(px__m_conns, -1);
    /* finalize runs only from the connection's deferred callback, never inside
     * a protocol callback. If something queued the callback again meanwhile,
     * that queued run frees the connection (it sees `finalized`). */
    if (!c->defer._queued)
        px__free(c);
    px__netw_conn_gone(nw);
}

/* Close now from anywhere: the deferred callback finalises after the batch. */
static void kill_conn(px_conn_t *c)
{
    c->aborted = 1;
    c->closing = 1;
    schedule(c);
}

void px_conn_abort(px_conn_t *c)
{
    if (c->finalized)
        return;
    out_clear(c);
    kill_conn(c);
}

void px_conn_close(px_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    /* c->in is not freed here: a protocol callback may be reading from it right
     * now (close from inside on_read). dispatch() and finalize() free it. */
    /* Bound the time a peer that never reads can hold us. */
    px_conn_set_timeout(c, c->nw->server->opts.shutdown_timeout_ms
                               ? c->nw->server->opts.shutdown_timeout_ms
                               : 10000);
    schedule(c);
}

int px_conn_is_closing(const px_conn_t *c)
{
    return c->closing;
}

void px__conn_shutdown(px_conn_t *c)
{
    if (c->closing)
        return;
    if (c->proto->on_shutdown)
        c->proto->on_shutdown(c);
    else
        px_conn_close(c);
}

void px_conn_set_timeout(px_conn_t *c, uint64_t ms)
{
    if (ms)
        px_timer_start(c->nw->loop, &c->timer, ms);
    else
        px_timer_stop(&c->timer);
}

void px_conn_pause_read(px_conn_t *c, int paused)
{
    if (c->closing || (unsigned)!!paused == c->read_paused)
        return;
    c->read_paused = !!paused;
    if (!paused && px_buf_size(&c->in)) {
        c->redispatch = 1;
        schedule(c);
    }
    update_interest(c);
}

void px_conn_set_read_limit(px_conn_t *c, size_t max)
{
    c->read_limit = max ? max : 1;
}

void px_conn_set_protocol(px_conn_t *c, const px_protocol_t *p, void *state)
{
    c->proto = p;
    c->state = state;
}

void *px_conn_state(const px_conn_t *c)
{
    return c->state;
}

px_server_t *px_conn_server(const px_conn_t *c)
{
    return c->nw->server;
}

px_worker_t *px_conn_worker(const px_conn_t *c)
{
    return c->nw->worker;
}

px_loop_t *px_conn_loop(const px_conn_t *c)
{
    return c->nw->loop;
}

uint64_t px_conn_id(const px_conn_t *c)
{
    return c->id;
}

int px_conn_fd(const px_conn_t *c)
{
    return c->io.fd;
}

int px_conn_peer_name(const px_conn_t *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->io.fd, (struct sockaddr *)&ss, &sl) != 0)
        return -errno;
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "unix");
    }
    return 0;
}
