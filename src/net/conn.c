/* Connections: read dispatch to the protocol, the output queue (shared slices,
 * scratch copies, files) flushed once per loop iteration, the transport stack
 * (handshake, want-read/want-write, pending bytes), and the close sequence
 * (never freed inside its own callback: finalisation is deferred).
 * docs/internals/connections.md describes the states and their invariants. */
#include <arpa/inet.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/conn_direct.h"
#include "net/net_int.h"
#include "net/transport.h"

#define MAX_IOV          64
#define PX__COALESCE_MAX 4096 /* small pieces joined before a write, bytes */

static _Atomic uint64_t next_conn_id = 1;

/* ---- scratch slices: reusable buffers for small copied writes -------------- */

/* Two sizes. A connection's first copied bytes go to a small slice (an HTTP
 * response, a few WebSocket frames: what one iteration queues on a busy
 * connection), moved to a large one when they outgrow it: ten thousand
 * subscribers with a few frames queued each then hold 10 MB, not 160. */
/* The small blocks' caches (see px__fcache_t). A slice is linked through its
 * data, a ring through its first entry. */
static inline void *fc_get(px__fcache_t *fc, size_t link_off)
{
    char *b = fc->head;
    if (!b)
        return NULL;
    memcpy(&fc->head, b + link_off, sizeof(void *));
    if (--fc->n < fc->low)
        fc->low = fc->n;
    return b;
}

static inline int fc_put(px__fcache_t *fc, void *b, size_t link_off)
{
    if (fc->n >= PX__FCACHE_MAX)
        return 0;
    memcpy((char *)b + link_off, &fc->head, sizeof(void *));
    fc->head = b;
    fc->n++;
    return 1;
}

static void fc_trim(px__fcache_t *fc, size_t link_off, void (*free_fn)(void *))
{
    unsigned drop = fc->low;
    if (fc->n - drop < PX__FCACHE_KEEP)
        drop = fc->n > PX__FCACHE_KEEP ? fc->n - PX__FCACHE_KEEP : 0;
    while (drop--)
        free_fn(fc_get(fc, link_off));
    fc->low = fc->n;
}

#define SLICE_LINK offsetof(px_slice_t, data)

static void slice_free(void *p)
{
    px_slice_unref(p);
}

static px_slice_t *scratch_get(px__netw_t *nw, size_t len)
{
    if (len <= PX__SCRATCH_SMALL) {
        px_slice_t *s = fc_get(&nw->small, SLICE_LINK);
        return s ? s : px_slice_new(PX__SCRATCH_SMALL);
    }
    if (nw->nscratch)
        return nw->scratch[--nw->nscratch];
    return px_slice_new(PX__SCRATCH_SIZE);
}

static void scratch_put(px__netw_t *nw, px_slice_t *s)
{
    if (px_slice_refs(s) == 1) {
        if (s->len == PX__SCRATCH_SMALL && fc_put(&nw->small, s, SLICE_LINK))
            return;
        if (s->len == PX__SCRATCH_SIZE && nw->nscratch < PX__SCRATCH_CACHE) {
            nw->scratch[nw->nscratch++] = s;
            return;
        }
    }
    px_slice_unref(s);
}

void px__scratch_free_all(px__netw_t *nw)
{
    while (nw->nscratch)
        px_slice_unref(nw->scratch[--nw->nscratch]);
    for (void *b; (b = fc_get(&nw->small, SLICE_LINK)) != NULL;)
        px_slice_unref(b);
    for (void *b; (b = fc_get(&nw->rings, 0)) != NULL;)
        px__free(b);
}

void px__conn_caches_trim(px__netw_t *nw)
{
    fc_trim(&nw->small, SLICE_LINK, slice_free);
    fc_trim(&nw->rings, 0, px__free);
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
        n = cap == PX__OUT_SMALL ? fc_get(&c->nw->rings, 0) : NULL;
        if (!n)
            n = px__malloc(cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        for (uint32_t i = 0; i < c->out_count; i++)
            n[i] = *out_at(c, i);
        if (c->out_cap != PX__OUT_SMALL || !fc_put(&c->nw->rings, c->out, 0))
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
        if (c->out_cap != PX__OUT_SMALL || !fc_put(&c->nw->rings, c->out, 0))
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

static inline void schedule(px_conn_t *c)
{
    if (!c->scheduled) {
        c->scheduled = 1;
        px_defer(c->nw->loop, &c->defer);
    }
}

static inline int check_room(px_conn_t *c, size_t len)
{
    if (c->closing)
        return -EPIPE;
    size_t cap = c->nw->output_cap;
    if (len > cap - c->out_bytes || c->out_bytes > cap)
        return -ENOBUFS;
    return 0;
}

static __attribute__((noinline)) int write_copy(px_conn_t *c, const void *p, size_t len,
                                                int over_cap)
{
    int r = over_cap ? (c->closing ? -EPIPE : 0) : check_room(c, len);
    if (r || len == 0)
        return r;
    const char *src = p;
    /* Append to the last scratch slice while it has room. */
    if (c->out_count) {
        px__out_t *last = out_at(c, c->out_count - 1);
        if (last->kind == PX__OUT_SCRATCH) {
            px_slice_t *s = last->u.slice;
            size_t end = last->off + last->len;
            if (PX_UNLIKELY(len > s->len - end) && s->len == PX__SCRATCH_SMALL &&
                last->len + len <= PX__SCRATCH_SIZE && px_slice_refs(s) == 1) {
                /* Outgrown: continue in a large slice, one contiguous piece. */
                px_slice_t *big = scratch_get(c->nw, PX__SCRATCH_SIZE);
                if (big) {
                    memcpy(big->data, s->data + last->off, (size_t)last->len);
                    scratch_put(c->nw, s);
                    last->u.slice = s = big;
                    last->off = 0;
                    end = (size_t)last->len;
                }
            }
            size_t room = s->len - end;
            size_t n = len < room ? len : room;
            memcpy(s->data + end, src, n);
            last->len += n;
            c->out_bytes += n;
            src += n;
            len -= n;
        }
    }
    while (len) {
        px_slice_t *s = len > PX__SCRATCH_SIZE ? px_slice_new(len) : scratch_get(c->nw, len);
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
    /* The common case of a busy connection (frames to a subscriber, pipelined
     * responses): the bytes fit the scratch slice being filled. */
    if (PX_LIKELY(c->out_count && !c->closing)) {
        px__out_t *last = out_at(c, c->out_count - 1);
        size_t end = last->off + last->len, cap = c->nw->output_cap;
        if (last->kind == PX__OUT_SCRATCH && len <= last->u.slice->len - end &&
            c->out_bytes + len <= cap) {
            memcpy(last->u.slice->data + end, p, len);
            last->len += len;
            c->out_bytes += len;
            schedule(c);
            return 0;
        }
    }
    return write_copy(c, p, len, 0);
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

int px__conn_write_slice_now(px_conn_t *c, px_slice_t *s, size_t off, size_t len)
{
    if (c->out_count || c->phase != PX__OPEN || c->closing || c->tp != &px__transport_plain ||
        len == 0 || off > s->len || len > s->len - off || len > c->nw->output_cap)
        return write_slice(c, s, off, len, 0);
    struct iovec iov = {s->data + off, len};
    ssize_t n = c->tp->ops->writev(c->tp, c, &iov, 1);
    if (n > 0) {
        px__metric_add(px__m_bytes_out, n);
        off += (size_t)n;
        len -= (size_t)n;
        if (len == 0)
            return 0;
    }
    /* The rest (all of it on an error: the deferred flush meets it again). */
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
static void update_interest(px_conn_t *c);

/* Write as much queued output as the transport takes. Returns 0 when the queue
 * is empty, PX__WANT_WRITE / PX__WANT_READ when the transport must wait, or
 * another -errno (connection dead). */
static int flush(px_conn_t *c)
{
    px__transport_t *tp = c->tp;
    while (c->out_count) {
        px__out_t *first = out_at(c, 0);
        if (first->kind == PX__OUT_FILE) {
            ssize_t n;
            off_t off = (off_t)first->file_off;
            size_t want = first->len > (1u << 30) ? (1u << 30) : (size_t)first->len;
            if (tp->ops->sendfile) {
                n = tp->ops->sendfile(tp, c, first->u.fd, &off, want);
            } else {
                /* A retry after PX__WANT_* reads the same bytes again (same
                 * offset, same length), as a TLS layer requires. */
                char tmp[16384];
                size_t k = want < sizeof tmp ? want : sizeof tmp;
                ssize_t got = pread(first->u.fd, tmp, k, off);
                if (got <= 0)
                    return got == 0 ? -EIO : -errno;
                struct iovec iov = {tmp, (size_t)got};
                n = tp->ops->writev(tp, c, &iov, 1);
            }
            if (n < 0)
                return (int)n;
            if (n == 0)
                return -EIO; /* file shrank under us */
            px__metric_add(px__m_bytes_out, n);
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
        ssize_t n = tp->ops->writev(tp, c, iov, k);
        if (n < 0)
            return (int)n;
        px__metric_add(px__m_bytes_out, n);
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

/* Does the connection want bytes from the transport? (Lingering: to discard.) */
static int reading(const px_conn_t *c)
{
    return (!c->closing && !c->read_paused && !c->eof) || c->lingering;
}

/* The interest set outside the plain OPEN state: the transport asked for the
 * other direction, or the connection is connecting / handshaking. */
static unsigned interest_slow(const px_conn_t *c)
{
    unsigned w = c->tp_wants, ev = 0;
    if (c->phase == PX__RAW)
        return c->io._events; /* the protocol arms the watcher itself */
    if (c->phase == PX__CONNECTING)
        return PX_WRITABLE;
    if (c->phase == PX__HANDSHAKE)
        return w & PX__HS_WANTS_WRITE ? PX_WRITABLE : PX_READABLE;
    if (reading(c))
        ev |= w & PX__READ_WANTS_WRITE ? PX_WRITABLE : PX_READABLE;
    if (c->out_count)
        ev |= w & PX__WRITE_WANTS_READ ? PX_READABLE : PX_WRITABLE;
    if (w & PX__SHUT_WANTS_READ)
        ev |= PX_READABLE;
    if (w & PX__SHUT_WANTS_WRITE)
        ev |= PX_WRITABLE;
    return ev;
}

static __attribute__((noinline)) void update_interest_slow(px_conn_t *c)
{
    px_io_start(c->nw->loop, &c->io, interest_slow(c));
}

static inline void update_interest(px_conn_t *c)
{
    if (PX_UNLIKELY(c->phase | c->tp_wants)) {
        update_interest_slow(c);
        return;
    }
    unsigned ev = 0;
    if (reading(c))
        ev |= PX_READABLE;
    if (c->out_count)
        ev |= PX_WRITABLE;
    px_io_start(c->nw->loop, &c->io, ev);
}

/* Shut the write direction; a transport that must wait (TLS close_notify on a
 * full socket) is retried on the event it asked for. 0 or -errno. */
static int shut_step(px_conn_t *c)
{
    c->tp_wants &= (uint8_t) ~(PX__SHUT_WANTS_READ | PX__SHUT_WANTS_WRITE);
    int r = c->tp->ops->shutdown(c->tp, c);
    if (r == PX__WANT_READ)
        c->tp_wants |= PX__SHUT_WANTS_READ;
    else if (r == PX__WANT_WRITE)
        c->tp_wants |= PX__SHUT_WANTS_WRITE;
    else if (r < 0)
        return r;
    return 0;
}

/* Output is done on a closing connection: shut our side and linger briefly,
 * reading and discarding, so a peer that still sends does not get an RST that
 * would destroy the reply it has not read yet. */
static void start_linger(px_conn_t *c)
{
    if (c->eof || c->aborted || shut_step(c) != 0) {
        kill_conn(c);
        return;
    }
    c->lingering = 1;
    px_conn_set_timeout(c, PX__LINGER_MS);
    update_interest(c);
}

/* The flush stopped short: the transport waits for an event, or failed. */
static __attribute__((noinline)) void flush_blocked(px_conn_t *c, int r)
{
    if (r == PX__WANT_READ) {
        c->tp_wants |= PX__WRITE_WANTS_READ;
    } else if (r == PX__WANT_WRITE) {
        c->tp_wants &= (uint8_t)~PX__WRITE_WANTS_READ;
    } else {
        px_conn_abort(c);
        return;
    }
    update_interest(c);
}

static void do_flush(px_conn_t *c)
{
    int r = flush(c);
    if (PX_UNLIKELY(r != 0)) {
        flush_blocked(c, r);
        return;
    }
    if (PX_UNLIKELY(c->tp_wants))
        c->tp_wants &= (uint8_t)~PX__WRITE_WANTS_READ;
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
    if (!c->finalized && c->out_count && c->phase == PX__OPEN)
        do_flush(c);
}

static void dispatch(px_conn_t *c, char *data, size_t len, int from_in);
static void finalize(px_conn_t *c);
static void read_slow(px_conn_t *c);
static void handshake_step(px_conn_t *c);
static void connect_failed(px_conn_t *c, int err);

/* on_deferred for a connection still connecting or handshaking. */
static void deferred_not_open(px_conn_t *c)
{
    if (c->aborted)
        return;
    if (c->phase == PX__CONNECTING && c->err) {
        connect_failed(c, c->err);
    } else if (c->phase == PX__HANDSHAKE && c->read_again) {
        /* Bytes sit in a layer (replayed ones): the socket will not signal them. */
        c->read_again = 0;
        handshake_step(c);
    }
}

static void on_deferred(px_defer_t *d)
{
    px_conn_t *c = d->data;
    c->scheduled = 0;
    if (c->finalized) { /* queued again while it was being finalised */
        px__free(c);
        return;
    }
    if (PX_UNLIKELY(c->phase != PX__OPEN)) {
        deferred_not_open(c);
    } else {
        if (!c->aborted && c->redispatch && !c->read_paused && !c->closing && px_buf_size(&c->in)) {
            c->redispatch = 0;
            dispatch(c, px_buf_head(&c->in), px_buf_size(&c->in), 1);
        }
        if (PX_UNLIKELY(c->read_again) && !c->aborted) {
            c->read_again = 0;
            read_slow(c);
        }
        if (!c->aborted && c->out_count)
            do_flush(c);
        else if (!c->aborted && c->closing && !c->lingering)
            start_linger(c);
    }
    if (c->aborted)
        finalize(c); /* its only caller: inlined */
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
    /* Everything presentable was presented: what stays waits for new bytes (or
     * for a resume, which sets it again). */
    if (PX_UNLIKELY(c->redispatch))
        c->redispatch = 0;
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

/* A layer keeps bytes the socket will not announce (TLS records): read them
 * from the deferred callback. */
static void check_pending(px_conn_t *c)
{
    if (reading(c) && !c->aborted && px__transport_pending(c->tp, c)) {
        c->read_again = 1;
        schedule(c);
    }
}

/* The end of a read that could not complete (n < 0, not EOF). */
static void read_blocked(px_conn_t *c, ssize_t n)
{
    if (n == PX__WANT_READ)
        return;
    if (n == PX__WANT_WRITE) {
        c->tp_wants |= PX__READ_WANTS_WRITE;
        update_interest(c);
        return;
    }
    if (c->lingering)
        kill_conn(c);
    else
        px_conn_abort(c);
}

/* Inlined into on_io, the hot path; the rare callers go through read_slow. */
static inline __attribute__((always_inline)) void on_readable(px_conn_t *c)
{
    px__netw_t *nw = c->nw;
    px__transport_t *tp = c->tp;
    if (PX_UNLIKELY(c->tp_wants & PX__READ_WANTS_WRITE)) {
        c->tp_wants &= (uint8_t)~PX__READ_WANTS_WRITE;
        update_interest(c);
    }
    if (c->lingering) {
        ssize_t n = tp->ops->read(tp, c, nw->rbuf, PX__READ_CHUNK);
        if (n == 0)
            kill_conn(c);
        else if (n < 0)
            read_blocked(c, n);
        else if (PX_UNLIKELY(tp->ops->pending != NULL))
            check_pending(c);
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
    ssize_t n = tp->ops->read(tp, c, buf, cap);
    if (n <= 0) {
        if (n < 0) {
            read_blocked(c, n);
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
    px__metric_add(px__m_bytes_in, n);
    if (from_in) {
        c->in.len += (size_t)n;
        dispatch(c, px_buf_head(&c->in), px_buf_size(&c->in), 1);
    } else {
        dispatch(c, buf, (size_t)n, 0);
    }
    if (PX_UNLIKELY(tp->ops->pending != NULL))
        check_pending(c);
}

static __attribute__((noinline)) void read_slow(px_conn_t *c)
{
    on_readable(c);
}

/* ---- transport readiness: connect, handshake ----------------------------------- */

/* Start the protocol registered as `e` on c, from the connection defaults. */
static void start_entry(px_conn_t *c, const px__proto_entry_t *e)
{
    px_server_t *s = c->nw->server;
    px_timer_stop(&c->timer);
    c->read_limit = PX__READ_CHUNK;
    px_conn_set_protocol(c, e->proto, NULL);
    if (e->on_accept)
        c->state = e->on_accept(c, e->ud);
    if (s->opts.idle_timeout_ms && !c->closing && !px_timer_active(&c->timer))
        px_conn_set_timeout(c, s->opts.idle_timeout_ms);
}

static const px__proto_entry_t *first_protocol(px_conn_t *c)
{
    px_server_t *s = c->nw->server;
    if (c->listener != PX__NO_LISTENER && s->listeners[c->listener].entry)
        return s->listeners[c->listener].entry;
    return px__server_protocol(s, NULL);
}

/* The transport is ready (connected, handshake done): the protocol takes over. */
static void transport_ready(px_conn_t *c)
{
    c->phase = PX__OPEN;
    c->tp_wants = 0;
    px_timer_stop(&c->timer); /* the connect / handshake bound */
    if (!c->proto) {
        /* Accepted through a transport with a handshake: the pipeline starts now. */
        const px__proto_entry_t *e = first_protocol(c);
        if (!e) {
            px_conn_abort(c);
            return;
        }
        start_entry(c, e);
    } else if (!c->closing && c->proto->on_connect) {
        c->proto->on_connect(c, 0);
    }
    if (c->aborted)
        return;
    /* Output queued meanwhile, a close requested meanwhile, and bytes that
     * arrived with the handshake's last flight: all from the deferred callback. */
    c->read_again = 1;
    schedule(c);
    update_interest(c);
}

static void handshake_step(px_conn_t *c)
{
    int r = c->tp->ops->handshake(c->tp, c);
    if (r == PX__WANT_READ || r == PX__WANT_WRITE) {
        if (r == PX__WANT_WRITE)
            c->tp_wants |= PX__HS_WANTS_WRITE;
        else
            c->tp_wants &= (uint8_t)~PX__HS_WANTS_WRITE;
        if (r == PX__WANT_READ && px__transport_pending(c->tp, c)) {
            c->read_again = 1;
            schedule(c);
        }
        update_interest(c);
        return;
    }
    if (r < 0) {
        px_log(PX_LOG_DEBUG, "conn %llu: %s handshake failed: %s", (unsigned long long)c->id,
               c->tp->ops->name, px_strerror(r));
        connect_failed(c, r);
        return;
    }
    transport_ready(c);
}

/* Connect or handshake failed (or timed out): tell the protocol, if it still
 * cares, after marking the connection closing, so it cannot write. */
static void connect_failed(px_conn_t *c, int err)
{
    int tell = c->proto && c->proto->on_connect && !c->closing;
    c->err = err; /* why, for the layers' close (a TLS layer counts handshake timeouts) */
    px_conn_abort(c);
    if (tell)
        c->proto->on_connect(c, err);
}

static void connect_step(px_conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (c->err)
        err = -c->err; /* failed at once, before any event */
    else if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        connect_failed(c, -err);
        return;
    }
    if (c->tp->ops->handshake) {
        c->phase = PX__HANDSHAKE;
        handshake_step(c);
        return;
    }
    transport_ready(c);
}

/* Events outside the plain OPEN state. */
static void on_io_slow(px_conn_t *c, unsigned events)
{
    if (c->phase == PX__CONNECTING) {
        connect_step(c);
        return;
    }
    if (c->phase == PX__HANDSHAKE) {
        handshake_step(c);
        return;
    }
    unsigned w = c->tp_wants;
    int hup = (events & PX_HUP) != 0;
    if (w & (PX__SHUT_WANTS_READ | PX__SHUT_WANTS_WRITE)) {
        if (hup || (events & (w & PX__SHUT_WANTS_READ ? PX_READABLE : PX_WRITABLE))) {
            if (shut_step(c) != 0) {
                kill_conn(c);
                return;
            }
            update_interest(c);
        }
    }
    /* Each operation runs on the event it waits for: its own, or the one the
     * transport asked for instead. */
    unsigned flush_on = w & PX__WRITE_WANTS_READ ? PX_READABLE : PX_WRITABLE;
    unsigned read_on = w & PX__READ_WANTS_WRITE ? PX_WRITABLE : PX_READABLE;
    if (c->out_count && (hup || (events & flush_on))) {
        do_flush(c);
        if (c->aborted)
            return;
    }
    if (hup || (events & read_on))
        read_slow(c);
}

static void on_io(px_io_t *io, unsigned events)
{
    px_conn_t *c = io->data;
    if (PX_UNLIKELY(c->phase | c->tp_wants)) {
        on_io_slow(c, events);
        return;
    }
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
    if (PX_UNLIKELY(c->phase == PX__CONNECTING || c->phase == PX__HANDSHAKE)) {
        /* The connect or the transport handshake took too long. */
        px_log(PX_LOG_DEBUG, "conn %llu: %s timed out", (unsigned long long)c->id,
               c->phase == PX__CONNECTING ? "connect" : "handshake");
        connect_failed(c, -ETIMEDOUT);
        return;
    }
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

/* Allocate and register a connection on fd (plain transport, no protocol). */
static inline __attribute__((always_inline)) px_conn_t *
conn_alloc(px__netw_t *nw, int fd, unsigned listener, unsigned events)
{
    px_conn_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nw = nw;
    c->tp = &px__transport_plain;
    c->listener = (uint8_t)listener;
    c->read_limit = PX__READ_CHUNK;
    c->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed);
    px_buf_init(&c->in, 0);
    px_timer_init(&c->timer, on_timer, c);
    px_defer_init(&c->defer, on_deferred, c);
    px_io_init(&c->io, fd, on_io, c);
    if (px_io_start(nw->loop, &c->io, events) != 0) {
        px__free(c);
        return NULL;
    }
    c->next = nw->conns;
    if (nw->conns)
        nw->conns->prev = c;
    nw->conns = c;
    nw->nconns++;
    return c;
}

/* Put the layer `f` makes on top of c's stack; start its handshake. */
static int push_layer(px_conn_t *c, const px_transport_factory_t *f, uint64_t timeout_ms)
{
    px__transport_t *t = NULL;
    int r = f->create(f, c, c->tp, &t);
    if (r)
        return r;
    c->tp = t;
    if (t->ops->handshake && c->phase == PX__OPEN) {
        c->phase = PX__HANDSHAKE;
        c->tp_wants = 0;
        px_conn_set_timeout(c, timeout_ms ? timeout_ms : PX__HANDSHAKE_MS);
    }
    return 0;
}

px_conn_t *px__conn_new(px__netw_t *nw, int fd, unsigned listener)
{
    px_server_t *s = nw->server;
    px_conn_t *c = conn_alloc(nw, fd, listener, PX_READABLE);
    if (!c)
        return NULL;
    px_metric_add(px__m_conns, 1);
    px_metric_add(px__m_accepted, 1);
    const px__listener_t *l = listener != PX__NO_LISTENER ? &s->listeners[listener] : NULL;
    if (l && l->transport) {
        int r = push_layer(c, l->transport, l->handshake_timeout_ms);
        if (r) {
            px_log(PX_LOG_WARN, "conn %llu: cannot set up the %s transport: %s",
                   (unsigned long long)c->id, l->transport->name, px_strerror(r));
            px_conn_abort(c);
            return c;
        }
        if (c->phase == PX__HANDSHAKE) {
            update_interest(c);
            return c; /* the first protocol starts when the handshake is done */
        }
    }
    const px__proto_entry_t *e = first_protocol(c);
    if (!e) {
        px_conn_abort(c);
        return c;
    }
    /* start_entry without what a fresh connection does not need (its timer is
     * inactive, its read limit the default, its input empty). */
    c->proto = e->proto;
    if (e->on_accept)
        c->state = e->on_accept(c, e->ud);
    if (s->opts.idle_timeout_ms && !c->closing && !px_timer_active(&c->timer))
        px_conn_set_timeout(c, s->opts.idle_timeout_ms);
    return c;
}

px_conn_t *px__conn_adopt(px__netw_t *nw, int fd)
{
    atomic_fetch_add_explicit(&nw->server->nconns, 1, memory_order_relaxed);
    px_conn_t *c = px__conn_new(nw, fd, PX__NO_LISTENER);
    if (!c)
        atomic_fetch_sub_explicit(&nw->server->nconns, 1, memory_order_relaxed);
    return c;
}

int px__conn_push_transport(px_conn_t *c, const px_transport_factory_t *f, const void *replay,
                            size_t len)
{
    if (c->closing || c->phase != PX__OPEN)
        return -EINVAL;
    px__transport_t *old = c->tp, *prefix = NULL;
    if (len) {
        int r = px__transport_prefix_new(old, replay, len, &prefix);
        if (r)
            return r;
        c->tp = prefix;
    }
    uint64_t hs_ms = c->listener != PX__NO_LISTENER
                         ? c->nw->server->listeners[c->listener].handshake_timeout_ms
                         : 0;
    int r = push_layer(c, f, hs_ms);
    if (r) {
        if (prefix)
            prefix->ops->close(prefix, c);
        c->tp = old;
        return r;
    }
    /* The replayed bytes are not announced by the socket: step at once. */
    c->read_again = 1;
    schedule(c);
    update_interest(c);
    return 0;
}

static void finalize(px_conn_t *c)
{
    if (c->finalized)
        return;
    c->finalized = 1;
    c->closing = 1;
    px__netw_t *nw = c->nw;
    px_server_t *s = nw->server;
    if (c->proto && c->proto->on_close)
        c->proto->on_close(c);
    px_timer_stop(&c->timer);
    px_io_stop(&c->io);
    for (px__transport_t *t = c->tp, *lower; t; t = lower) {
        lower = t->lower; /* read first: close frees t */
        t->ops->close(t, c);
    }
    out_clear(c);
    px_buf_dispose(&c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        nw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    nw->nconns--;
    if (!c->outbound) {
        atomic_fetch_sub_explicit(&s->nconns, 1, memory_order_relaxed);
        if (c->listener != PX__NO_LISTENER && s->listeners[c->listener].max_connections)
            atomic_fetch_sub_explicit(&s->listeners[c->listener].nconns, 1, memory_order_relaxed);
        px_metric_add(px__m_conns, -1);
    }
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
    if (!c->proto) /* still in its transport handshake: nothing in flight */
        px_conn_abort(c);
    else if (c->proto->on_shutdown)
        c->proto->on_shutdown(c);
    else
        px_conn_close(c);
}

void px_conn_set_timeout(px_conn_t *c, uint64_t ms)
{
    if (ms) {
        /* Pushed back to where it is (each of the requests or messages of one
         * read does it): leave it. (A timer re-armed for the same instant would
         * move after the others due then; no connection relies on that order.) */
        if (px_timer_active(&c->timer) && ms < UINT64_MAX - px_loop_now(c->nw->loop) &&
            c->timer._at == px_loop_now(c->nw->loop) + ms)
            return;
        px_timer_start(c->nw->loop, &c->timer, ms);
    } else {
        px_timer_stop(&c->timer);
    }
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
    if (!paused && PX_UNLIKELY(c->tp->ops->pending != NULL)) {
        c->read_again = 1; /* bytes a layer kept while paused: the socket is quiet */
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
    if (px_buf_size(&c->in)) {
        /* Kept bytes belong to the new protocol. Inside on_read, dispatch hands
         * them over at once (and clears this); otherwise the deferred callback. */
        c->redispatch = 1;
        schedule(c);
    }
}

int px_conn_start_protocol(px_conn_t *c, const char *name)
{
    const px__proto_entry_t *e = px__server_protocol(c->nw->server, name);
    if (!e || !name)
        return -ENOENT;
    if (c->closing)
        return -EPIPE;
    start_entry(c, e);
    return 0;
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

int px__conn_addresses(const px_conn_t *c, struct sockaddr_storage *peer,
                       struct sockaddr_storage *local)
{
    for (px__transport_t *t = c->tp; t; t = t->lower)
        if (t->ops->addresses && t->ops->addresses(t, (px_conn_t *)c, peer, local) == 0)
            return 0;
    socklen_t sl = sizeof *peer;
    if (peer && getpeername(c->io.fd, (struct sockaddr *)peer, &sl) != 0)
        return -errno;
    sl = sizeof *local;
    if (local && getsockname(c->io.fd, (struct sockaddr *)local, &sl) != 0)
        return -errno;
    return 0;
}

void px__conn_raw(px_conn_t *c, px_io_cb cb, void *data)
{
    if (cb) {
        c->phase = PX__RAW;
        c->io.cb = cb;
        c->io.data = data;
        return;
    }
    if (c->phase != PX__RAW)
        return;
    c->phase = PX__OPEN;
    c->io.cb = on_io;
    c->io.data = c;
    update_interest(c);
}

int px_conn_peer_name(const px_conn_t *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int r = px__conn_addresses(c, &ss, NULL);
    if (r)
        return r;
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

/* ---- outbound ------------------------------------------------------------------ */

px_conn_t *px__conn_outbound(px__netw_t *nw, int fd, int err, const px_connect_opts_t *o,
                             const px_protocol_t *p, void *state)
{
    /* Failed at once: nothing to wait for (an unconnected socket would even
     * report writable). */
    px_conn_t *c = conn_alloc(nw, fd, PX__NO_LISTENER, err ? 0u : (unsigned)PX_WRITABLE);
    if (!c)
        return NULL;
    c->outbound = 1;
    c->phase = PX__CONNECTING;
    c->proto = p;
    c->state = state;
    if (o->transport) {
        int r = push_layer(c, o->transport, 0); /* CONNECTING: its handshake waits */
        if (r)
            err = err ? err : r;
    }
    if (o->timeout_ms)
        px_conn_set_timeout(c, o->timeout_ms);
    if (err) {
        /* Reported from the loop, like every outcome. */
        c->err = err;
        schedule(c);
    }
    return c;
}
