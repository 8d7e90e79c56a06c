/* Unit tests of the hub core (src/hub/hub.c, client.c, api.c) with a fake store and a fake
 * front-end, on the real threads: two workers and the hub thread.
 *
 * Harness. The test thread posts jobs to a worker (px_worker_post) and waits for them on a
 * condition variable. Whatever a client of the fake front sees on its worker (answers,
 * replayed frames, deliveries) is recorded as events under one mutex, and the test waits
 * for the events it expects (WAIT_UNTIL, bounded). Assertions run on the test thread only.
 *  - The fake store (fs_*) is an in-memory px__store_ops_t: channels with epochs and offsets,
 *    append choosing offsets, read/earliest, trim, fresh_epoch, and fault injection (fail
 *    the next N appends or reads with a chosen errno, slow reads).
 *  - The fake front registers two wire formats whose frames are short texts:
 *    "m:<channel>:<offset>", "j:<channel>:<client>" / "l:..." (presence), "g:<channel>:<offset>"
 *    (gap); format B also asks for a gap frame on subscribe (like SSE).
 *  - Every test checks for leaks with a counting allocator (tests/unit/oom_alloc.h). The same
 *    allocator drives the OOM loops: it fails the Nth fallible allocation, never those of
 *    px__xmalloc & co. (which abort by design: fixed-size objects), recognised by the call
 *    sites inside them, learnt once at start. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "hub/hub_int.h"
#include "oom_alloc.h"

#define WAIT_MS 20000 /* the longest wait for an expected event (sanitizer builds are slow) */

/* ---- shared state, events ---------------------------------------------------------------------
 */

typedef struct ev {
    char kind;     /* S subscribed, W replayed frame, D delivered frame, X delivery whose frame
                      could not be encoded, A answer, E subscription ended */
    char ch[40];   /* the subscription's or the request's channel */
    char text[64]; /* a frame's text */
    char code[24]; /* error code */
    char epoch[PX__EPOCH_MAX + 1];
    char member[48]; /* presence answers: the first member, "client/user" */
    uint64_t off;    /* frames: the message's (or gap's) offset; S and A: r->offset */
    int status, recovered, type, more, truncated, cancelled, contiguous;
    size_t n;             /* A: messages (history) or members (presence) */
    uint64_t first, last; /* A: the first and last message's offset */
    unsigned subscribers;
} ev_t;

typedef struct tclient {
    px__hclient_t hc;
    size_t output;   /* what ops->output reports */
    int fail_writes; /* ops->write fails */
    char close_in;   /* close the client inside this callback: 'S' subscribed, 'E' ended */
    int released;    /* ops->release ran */
    ev_t *ev;
    size_t nev, cev;
} tclient_t;

typedef struct fstore fstore_t;

static struct {
    pthread_mutex_t mu; /* recursive: guards events, client knobs, job flags */
    pthread_cond_t cv;
    px_workers_t *workers;
    px_hub_t *hub;
    fstore_t *fs;
    int fmt[2];
    int fail_gap;   /* the formats' encode_gap fails */
    int broker;     /* up(): a fake broker instead of the local one */
    char blog[512]; /* what the fake broker was told: "+ch -ch m:ch:offset ..." */
    long live0;     /* allocations alive before the hub was made */
    tclient_t *clients[64];
    int nclients;
} g;

static void lock(void)
{
    pthread_mutex_lock(&g.mu);
}

static void unlock(void)
{
    pthread_mutex_unlock(&g.mu);
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Wait on the test thread until `cond` (evaluated under g.mu) holds. */
#define WAIT_UNTIL(cond)                                                                           \
    do {                                                                                           \
        struct timespec dl_;                                                                       \
        deadline(&dl_, WAIT_MS);                                                                   \
        lock();                                                                                    \
        while (!(cond)) {                                                                          \
            if (pthread_cond_timedwait(&g.cv, &g.mu, &dl_) == ETIMEDOUT && !(cond)) {              \
                unlock();                                                                          \
                fail_msg("line %d: timed out waiting for %s", __LINE__, #cond);                    \
            }                                                                                      \
        }                                                                                          \
        unlock();                                                                                  \
    } while (0)

static tclient_t *TC(px__hclient_t *hc)
{
    return PX_CONTAINER_OF(hc, tclient_t, hc);
}

static void record(tclient_t *c, const ev_t *e)
{
    lock();
    if (c->nev == c->cev) {
        c->cev = c->cev ? c->cev * 2 : 64;
        c->ev = realloc(c->ev, c->cev * sizeof *c->ev);
        if (!c->ev)
            abort();
    }
    c->ev[c->nev++] = *e;
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static void record_frame(tclient_t *c, char kind, const px__hsub_t *s, const px_slice_t *f)
{
    ev_t e = {.kind = kind};
    snprintf(e.ch, sizeof e.ch, "%.*s", (int)s->name_len, s->name);
    if (f) {
        snprintf(e.text, sizeof e.text, "%.*s", (int)f->len, f->data);
        const char *colon = strrchr(e.text, ':');
        e.off = colon ? strtoull(colon + 1, NULL, 10) : 0;
    }
    record(c, &e);
}

static void record_req(tclient_t *c, char kind, const char *ch, size_t chlen, const px__hreq_t *r)
{
    ev_t e = {.kind = kind, .type = r->type, .status = r->status, .off = r->offset};
    snprintf(e.ch, sizeof e.ch, "%.*s", (int)chlen, ch);
    snprintf(e.code, sizeof e.code, "%s", r->err_code ? r->err_code : "");
    snprintf(e.epoch, sizeof e.epoch, "%s", r->epoch);
    e.recovered = r->recovered;
    e.more = r->more;
    e.truncated = r->truncated;
    e.n = r->type == PX__HREQ_PRESENCE ? r->npres : r->nmsgs;
    e.subscribers = r->subscribers;
    e.contiguous = 1;
    for (size_t i = 0; i < r->nmsgs; i++)
        if (i && r->msgs[i]->offset != r->msgs[i - 1]->offset + 1)
            e.contiguous = 0;
    if (r->nmsgs) {
        e.first = r->msgs[0]->offset;
        e.last = r->msgs[r->nmsgs - 1]->offset;
    }
    if (r->npres)
        snprintf(e.member, sizeof e.member, "%s/%.*s", r->pres[0].client, (int)r->pres[0].user.len,
                 r->pres[0].user.len ? r->pres[0].user.ptr : "");
    record(c, &e);
}

/* Events of c of `kind` on `ch` (any channel when NULL). */
static size_t nev(tclient_t *c, char kind, const char *ch)
{
    size_t n = 0;
    lock();
    for (size_t i = 0; i < c->nev; i++)
        n += c->ev[i].kind == kind && (!ch || strcmp(c->ev[i].ch, ch) == 0);
    unlock();
    return n;
}

/* The i-th event of c of `kind` on `ch`; fails the test if there is none. */
static ev_t ev_at(tclient_t *c, char kind, const char *ch, size_t i)
{
    lock();
    for (size_t k = 0; k < c->nev; k++) {
        ev_t e = c->ev[k];
        if (e.kind == kind && (!ch || strcmp(e.ch, ch) == 0) && i-- == 0) {
            unlock();
            return e;
        }
    }
    unlock();
    fail_msg("no event %c #%zu on %s", kind, i, ch ? ch : "*");
    return (ev_t){0};
}

/* Offsets of the message frames ("m:...") c got on `ch` through events of `kinds`, in order. */
static size_t msg_offsets(tclient_t *c, const char *ch, const char *kinds, uint64_t *out,
                          size_t max)
{
    size_t n = 0;
    lock();
    for (size_t i = 0; i < c->nev && n < max; i++) {
        const ev_t *e = &c->ev[i];
        if (strchr(kinds, e->kind) && strcmp(e->ch, ch) == 0 && e->text[0] == 'm')
            out[n++] = e->off;
    }
    unlock();
    return n;
}

static uint64_t last_msg_offset(tclient_t *c, const char *ch)
{
    uint64_t last = 0;
    lock();
    for (size_t i = 0; i < c->nev; i++)
        if (strchr("WD", c->ev[i].kind) && strcmp(c->ev[i].ch, ch) == 0 && c->ev[i].text[0] == 'm')
            last = c->ev[i].off;
    unlock();
    return last;
}

/* c got the messages first..last of `ch` through `kinds`, each once, in order, and no other. */
static void expect_run(tclient_t *c, const char *ch, const char *kinds, uint64_t first,
                       uint64_t last)
{
    static uint64_t got[4096];
    size_t n = msg_offsets(c, ch, kinds, got, PX_ARRAY_SIZE(got));
    for (size_t i = 0; i < n; i++)
        if (got[i] != first + i)
            fail_msg("%s: message #%zu has offset %llu, expected %llu", ch, i,
                     (unsigned long long)got[i], (unsigned long long)(first + i));
    assert_int_equal(n, last >= first ? last - first + 1 : 0);
}

/* ---- the fake store -----------------------------------------------------------------------------
 */

typedef struct fmsg {
    uint64_t offset;
    int64_t time_ms;
    char *data;
    size_t len;
} fmsg_t;

typedef struct fchan {
    char name[PX__CHANNEL_MAX + 1];
    size_t name_len;
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t last; /* the highest offset appended (kept when messages are trimmed) */
    fmsg_t *msgs;  /* the stored messages, in offset order */
    size_t n, cap;
    unsigned undo_call; /* the append call that saved undo_*: rolled back if it fails */
    size_t undo_n;
    uint64_t undo_last;
} fchan_t;

struct fstore {
    px__store_t base;
    pthread_mutex_t mu; /* the hub thread calls the store; the test looks in and injects */
    fchan_t **chans;
    size_t nchans, cap;
    uint64_t history_size;
    unsigned calls;
    int fail_appends, append_err; /* fail the next N appends with this errno */
    int fail_reads, read_err;     /* the next N reads */
    unsigned read_delay_us;       /* every read takes this long */
    unsigned appends, reads;      /* calls seen */
    char err[96];
};

static fstore_t *FS(px__store_t *s)
{
    return PX_CONTAINER_OF(s, fstore_t, base);
}

static fchan_t *fs_find(fstore_t *fs, px_str_t ch)
{
    for (size_t i = 0; i < fs->nchans; i++)
        if (fs->chans[i]->name_len == ch.len && memcmp(fs->chans[i]->name, ch.ptr, ch.len) == 0)
            return fs->chans[i];
    return NULL;
}

/* The same for a name in every call (a store created anew would use another seed). */
static void fs_epoch_of(px_str_t ch, char out[PX__EPOCH_MAX + 1])
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < ch.len; i++)
        h = (h ^ (unsigned char)ch.ptr[i]) * 16777619u;
    snprintf(out, PX__EPOCH_MAX + 1, "fake-%08x", h);
}

static fchan_t *fs_new_chan(fstore_t *fs, px_str_t ch)
{
    if (fs->nchans == fs->cap) {
        size_t ncap = fs->cap ? fs->cap * 2 : 8;
        fchan_t **n = px__realloc(fs->chans, ncap * sizeof *n);
        if (!n)
            return NULL;
        fs->chans = n;
        fs->cap = ncap;
    }
    fchan_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    memcpy(c->name, ch.ptr, ch.len);
    c->name_len = ch.len;
    fs_epoch_of(ch, c->epoch);
    fs->chans[fs->nchans++] = c;
    return c;
}

static void fs_drop_first(fchan_t *c, size_t k)
{
    if (k == 0)
        return;
    for (size_t i = 0; i < k; i++)
        px__free(c->msgs[i].data);
    memmove(c->msgs, c->msgs + k, (c->n - k) * sizeof *c->msgs);
    c->n -= k;
}

static void fs_chan_free(fchan_t *c)
{
    fs_drop_first(c, c->n);
    px__free(c->msgs);
    px__free(c);
}

static fstore_t *fs_new(uint64_t history_size)
{
    fstore_t *fs = px__calloc(1, sizeof *fs);
    if (!fs)
        return NULL;
    pthread_mutex_init(&fs->mu, NULL);
    fs->history_size = history_size;
    return fs;
}

static const px__store_ops_t fs_ops;

static int fs_open(const px__store_opts_t *o, px__store_t **out, char *err, size_t errlen)
{
    fstore_t *fs = fs_new(o->history_size);
    if (!fs) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    fs->base.ops = &fs_ops;
    *out = &fs->base;
    return 0;
}

static void fs_close(px__store_t *s)
{
    fstore_t *fs = FS(s);
    for (size_t i = 0; i < fs->nchans; i++)
        fs_chan_free(fs->chans[i]);
    px__free(fs->chans);
    pthread_mutex_destroy(&fs->mu);
    px__free(fs);
}

static const char *fs_errmsg(px__store_t *s)
{
    return FS(s)->err;
}

static int fs_load(px__store_t *s, px__store_channel_cb cb, void *ud)
{
    fstore_t *fs = FS(s);
    int r = 0;
    pthread_mutex_lock(&fs->mu);
    for (size_t i = 0; i < fs->nchans && !r; i++) {
        px__store_channel_t sc = {.name_len = fs->chans[i]->name_len,
                                  .last_offset = fs->chans[i]->last};
        memcpy(sc.name, fs->chans[i]->name, sc.name_len);
        memcpy(sc.epoch, fs->chans[i]->epoch, sizeof sc.epoch);
        r = cb(ud, &sc);
    }
    pthread_mutex_unlock(&fs->mu);
    return r < 0 ? r : 0;
}

static int fs_create(px__store_t *s, px_str_t ch, px_str_t epoch)
{
    fstore_t *fs = FS(s);
    pthread_mutex_lock(&fs->mu);
    fchan_t *c = fs_find(fs, ch);
    int r = 0;
    if (!c && !(c = fs_new_chan(fs, ch)))
        r = -ENOMEM;
    else if (epoch.len && (epoch.len != strlen(c->epoch) || memcmp(epoch.ptr, c->epoch, epoch.len)))
        r = -EINVAL; /* a new epoch for a channel: the hub never asks, the fake does not do it */
    pthread_mutex_unlock(&fs->mu);
    return r;
}

/* One transaction: everything of the batch or nothing (a failed call is rolled back). */
static int fs_append(px__store_t *s, const px__store_msg_t *msgs, size_t n,
                     px__store_assigned_t *out)
{
    fstore_t *fs = FS(s);
    pthread_mutex_lock(&fs->mu);
    fs->appends++;
    fs->err[0] = '\0';
    unsigned call = ++fs->calls;
    size_t nchans0 = fs->nchans;
    int r = 0;
    if (fs->fail_appends > 0) {
        fs->fail_appends--;
        snprintf(fs->err, sizeof fs->err, "injected append failure");
        r = fs->append_err;
    }
    for (size_t i = 0; i < n && !r; i++) {
        const px__store_msg_t *m = &msgs[i];
        fchan_t *c = px__store_channel_ok(m->channel) ? fs_find(fs, m->channel) : NULL;
        if (!px__store_channel_ok(m->channel) || (m->epoch.len && !px__store_epoch_ok(m->epoch))) {
            r = -EINVAL;
            break;
        }
        if (!c && !(c = fs_new_chan(fs, m->channel))) {
            r = -ENOMEM;
            break;
        }
        if (c->undo_call != call) {
            c->undo_call = call;
            c->undo_n = c->n;
            c->undo_last = c->last;
        }
        uint64_t off = m->offset ? m->offset : c->last + 1;
        if (off <= c->last || (m->epoch.len && (m->epoch.len != strlen(c->epoch) ||
                                                memcmp(m->epoch.ptr, c->epoch, m->epoch.len)))) {
            r = -EINVAL;
            break;
        }
        if (c->n == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 16;
            fmsg_t *nm = px__realloc(c->msgs, ncap * sizeof *nm);
            if (!nm) {
                r = -ENOMEM;
                break;
            }
            c->msgs = nm;
            c->cap = ncap;
        }
        char *d = px__malloc(m->data.len ? m->data.len : 1);
        if (!d) {
            r = -ENOMEM;
            break;
        }
        if (m->data.len)
            memcpy(d, m->data.ptr, m->data.len);
        c->msgs[c->n++] = (fmsg_t){off, m->time_ms, d, m->data.len};
        c->last = off;
        if (out)
            out[i] = (px__store_assigned_t){off, {c->epoch, strlen(c->epoch)}};
    }
    for (size_t i = 0; i < fs->nchans; i++) {
        fchan_t *c = fs->chans[i];
        if (c->undo_call != call)
            continue;
        if (r == 0) {
            if (fs->history_size && c->n > fs->history_size)
                fs_drop_first(c, c->n - (size_t)fs->history_size);
        } else if (i < nchans0) {
            while (c->n > c->undo_n)
                px__free(c->msgs[--c->n].data);
            c->last = c->undo_last;
        }
    }
    if (r) {
        for (size_t i = nchans0; i < fs->nchans; i++)
            fs_chan_free(fs->chans[i]);
        fs->nchans = nchans0;
        if (!fs->err[0])
            snprintf(fs->err, sizeof fs->err, "append: %s", strerror(-r));
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int fs_read(px__store_t *s, px_str_t ch, uint64_t since, size_t limit, px__store_msg_cb cb,
                   void *ud)
{
    fstore_t *fs = FS(s);
    pthread_mutex_lock(&fs->mu);
    fs->reads++;
    if (fs->read_delay_us)
        usleep(fs->read_delay_us);
    int r = 0;
    fchan_t *c = fs_find(fs, ch);
    if (fs->fail_reads > 0) {
        fs->fail_reads--;
        snprintf(fs->err, sizeof fs->err, "injected read failure");
        r = fs->read_err;
    } else if (!c) {
        r = -ENOENT;
    }
    for (size_t i = 0, k = 0; !r && c && i < c->n && (!limit || k < limit); i++) {
        const fmsg_t *m = &c->msgs[i];
        if (m->offset <= since)
            continue;
        px__store_msg_t sm = {.channel = ch,
                              .epoch = {c->epoch, strlen(c->epoch)},
                              .offset = m->offset,
                              .time_ms = m->time_ms,
                              .data = {m->data, m->len}};
        k++;
        int x = cb(ud, &sm);
        if (x)
            r = x < 0 ? x : 1;
    }
    pthread_mutex_unlock(&fs->mu);
    return r < 0 ? r : 0;
}

static int fs_trim(px__store_t *s, int64_t now_ms)
{
    PX_UNUSED(now_ms);
    PX_UNUSED(s); /* history_size is applied by append, TTLs are not faked */
    return 0;
}

static int fs_earliest(px__store_t *s, px_str_t ch, uint64_t *first)
{
    fstore_t *fs = FS(s);
    pthread_mutex_lock(&fs->mu);
    fchan_t *c = fs_find(fs, ch);
    if (c)
        *first = c->n ? c->msgs[0].offset : c->last + 1;
    pthread_mutex_unlock(&fs->mu);
    return c ? 0 : -ENOENT;
}

static int fs_fresh_epoch(px__store_t *s, px_str_t ch, char out[PX__EPOCH_MAX + 1])
{
    PX_UNUSED(s);
    fs_epoch_of(ch, out);
    return 0;
}

static const px__store_ops_t fs_ops = {
    .name = "fake",
    .open = fs_open,
    .close = fs_close,
    .errmsg = fs_errmsg,
    .load_channels = fs_load,
    .create_channel = fs_create,
    .append = fs_append,
    .read = fs_read,
    .trim = fs_trim,
    .earliest = fs_earliest,
    .fresh_epoch = fs_fresh_epoch,
};

/* Test hooks (test thread). */
static void fs_inject(int appends, int append_err, int reads, int read_err)
{
    pthread_mutex_lock(&g.fs->mu);
    g.fs->fail_appends = appends;
    g.fs->append_err = append_err;
    g.fs->fail_reads = reads;
    g.fs->read_err = read_err;
    pthread_mutex_unlock(&g.fs->mu);
}

/* Retention deleted every message of `ch` before `first`. */
static void fs_trim_below(const char *ch, uint64_t first)
{
    pthread_mutex_lock(&g.fs->mu);
    fchan_t *c = fs_find(g.fs, (px_str_t){ch, strlen(ch)});
    size_t k = 0;
    while (c && k < c->n && c->msgs[k].offset < first)
        k++;
    if (c)
        fs_drop_first(c, k);
    pthread_mutex_unlock(&g.fs->mu);
}

/* The store lost the channel's history (a shared store's stream was deleted): a new epoch,
 * offsets start again. */
static void fs_lose(const char *ch, const char *epoch)
{
    pthread_mutex_lock(&g.fs->mu);
    fchan_t *c = fs_find(g.fs, (px_str_t){ch, strlen(ch)});
    if (c) {
        fs_drop_first(c, c->n);
        c->last = 0;
        snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    }
    pthread_mutex_unlock(&g.fs->mu);
}

static unsigned fs_reads(void)
{
    pthread_mutex_lock(&g.fs->mu);
    unsigned n = g.fs->reads;
    pthread_mutex_unlock(&g.fs->mu);
    return n;
}

static uint64_t fs_last(const char *ch)
{
    pthread_mutex_lock(&g.fs->mu);
    fchan_t *c = fs_find(g.fs, (px_str_t){ch, strlen(ch)});
    uint64_t last = c ? c->last : 0;
    pthread_mutex_unlock(&g.fs->mu);
    return last;
}

static const char *epoch_of(const char *ch)
{
    static char e[PX__EPOCH_MAX + 1];
    fs_epoch_of((px_str_t){ch, strlen(ch)}, e);
    return e;
}

/* ---- the fake front-end ------------------------------------------------------------------------
 */

__attribute__((format(printf, 1, 2))) static px_slice_t *text_slice(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return px_slice_copy(buf, (size_t)n);
}

static px_slice_t *f_encode(const px_hub_msg_t *m, void *ctx)
{
    PX_UNUSED(ctx);
    return text_slice("m:%s:%llu", px__msg_channel(m), (unsigned long long)m->offset);
}

static px_slice_t *f_encode_presence(const px__presence_ev_t *e, void *ctx)
{
    PX_UNUSED(ctx);
    return text_slice("%c:%.*s:%s", e->op == PX__JOIN ? 'j' : 'l', (int)e->channel.len,
                      e->channel.ptr, e->who->client);
}

static px_slice_t *f_encode_gap(px_str_t ch, const char *epoch, uint64_t offset, void *ctx)
{
    PX_UNUSED(ctx);
    PX_UNUSED(epoch);
    lock();
    int fail = g.fail_gap;
    unlock();
    return fail ? NULL : text_slice("g:%.*s:%llu", (int)ch.len, ch.ptr, (unsigned long long)offset);
}

/* A frame NULL for a format that encodes means its encoding failed (out of memory): the front
 * must not drop it silently; this one records X (a real one closes the connection). */
static size_t f_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    PX_UNUSED(item);
    size_t n = 0;
    for (px__hsub_t *s = list, *next; s; s = next) {
        next = s->next;
        if (kind == PX__DELIVER_PRESENCE && !s->presence)
            continue;
        record_frame(TC(s->client), frame ? 'D' : 'X', s, frame);
        n++;
    }
    return n;
}

static const px__hformat_t fmt_a = {
    .name = "test-a",
    .encode = f_encode,
    .encode_presence = f_encode_presence,
    .encode_gap = f_encode_gap,
    .deliver = f_deliver,
};

static const px__hformat_t fmt_b = {
    .name = "test-b",
    .encode = f_encode,
    .encode_presence = f_encode_presence,
    .encode_gap = f_encode_gap,
    .deliver = f_deliver,
    .gap_on_subscribe = 1,
};

static size_t c_output(px__hclient_t *hc)
{
    lock();
    size_t n = TC(hc)->output;
    unlock();
    return n;
}

static int c_write(px__hclient_t *hc, px__hsub_t *s, px_slice_t *f)
{
    record_frame(TC(hc), 'W', s, f);
    lock();
    int fail = TC(hc)->fail_writes;
    unlock();
    return fail ? -EPIPE : 0;
}

static void c_message(px__hclient_t *hc, px__hsub_t *s, const px_hub_msg_t *m)
{
    PX_UNUSED(m);
    record_frame(TC(hc), 'M', s, NULL);
}

static void close_if(px__hclient_t *hc, char where)
{
    lock();
    int yes = TC(hc)->close_in == where;
    unlock();
    if (yes)
        px__hclient_close(hc);
}

static void c_subscribed(px__hclient_t *hc, px__hsub_t *s, px__hreq_t *r)
{
    ev_t e = {.kind = 'S', .status = r->status, .off = r->offset, .recovered = r->recovered};
    snprintf(e.ch, sizeof e.ch, "%.*s", (int)s->name_len, s->name);
    snprintf(e.code, sizeof e.code, "%s", r->err_code ? r->err_code : "");
    snprintf(e.epoch, sizeof e.epoch, "%s", r->epoch);
    e.cancelled = s->cancelled;
    record(TC(hc), &e);
    close_if(hc, 'S');
}

static void c_answer(px__hclient_t *hc, px__hreq_t *r)
{
    record_req(TC(hc), 'A', r->channel, r->channel_len, r);
}

static void c_ended(px__hclient_t *hc, px__hsub_t *s, px__hreq_t *r)
{
    record_req(TC(hc), 'E', s->name, s->name_len, r);
    close_if(hc, 'E');
}

static void c_release(px__hclient_t *hc)
{
    lock();
    TC(hc)->released = 1;
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static const px__hclient_ops_t client_ops = {
    .output = c_output,
    .write = c_write,
    .message = c_message,
    .subscribed = c_subscribed,
    .answer = c_answer,
    .ended = c_ended,
    .release = c_release,
};

/* A client of the fake front on worker `w` (closed and freed by down()). */
static tclient_t *client(unsigned w)
{
    tclient_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    px__hclient_init(&c->hc, g.hub, w, &client_ops);
    assert_true(g.nclients < (int)PX_ARRAY_SIZE(g.clients));
    g.clients[g.nclients++] = c;
    return c;
}

static void set_output(tclient_t *c, size_t n)
{
    lock();
    c->output = n;
    unlock();
}

/* ---- jobs: code run on a worker (or the hub thread) while the test thread waits ----------------
 */

/* What a job does: the client, the request's parameters, and results. */
typedef struct call {
    tclient_t *c;
    const char *ch;
    int fmt;   /* 0: format A, 1: format B */
    int since; /* subscribe: with `since` */
    uint64_t since_off;
    const char *since_epoch;
    int presence;    /* subscribe: join/leave events wanted */
    const char *who; /* subscribe: listed in presence as this client (and user) */
    const char *user;
    int n;       /* publishes (default 1), history requests (default 1) */
    size_t size; /* publish: data bytes (default 1); drained: output left */
    size_t page; /* subscribe: the client's page_bytes */
    size_t limit, max_bytes;
    int paced;
    /* results */
    px__hsub_t *sub;
    int rc;
    unsigned paced_state, npq, pending, nsubs;
    int active, catching_up;
} call_t;

typedef struct job {
    px_msg_t msg;
    void (*fn)(call_t *);
    call_t *a;
    int done;
} job_t;

static void job_run(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(w);
    job_t *j = (job_t *)m;
    j->fn(j->a);
    lock();
    j->done = 1;
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static job_t *job_post(px_worker_t *w, void (*fn)(call_t *), call_t *a)
{
    job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->msg.cb = job_run;
    j->fn = fn;
    j->a = a;
    px_worker_post(w, &j->msg);
    return j;
}

static void job_wait(job_t *j)
{
    WAIT_UNTIL(j->done);
    free(j);
}

static px_worker_t *worker_of(const call_t *a)
{
    return px_workers_get(g.workers, a->c->hc.worker);
}

static call_t *call_on(call_t *a, void (*fn)(call_t *))
{
    job_wait(job_post(worker_of(a), fn, a));
    return a;
}

static job_t *post_on(call_t *a, void (*fn)(call_t *))
{
    return job_post(worker_of(a), fn, a);
}

static int hub_call(call_t *a, void (*fn)(call_t *))
{
    job_wait(job_post(px_workers_get(g.hub->actor, 0), fn, a));
    return a->rc;
}

/* Run fn on the client's worker and wait: CALL(w_publish, .c = c, .ch = "room", .n = 3). */
#define CALL(fn, ...) call_on(&(call_t){__VA_ARGS__}, fn)
/* The same without waiting (the call_t lives in the enclosing block): job_wait() it. */
#define POST(fn, ...) post_on(&(call_t){__VA_ARGS__}, fn)
/* Run fn on the hub thread and wait; its result (a->rc). */
#define HUB_CALL(fn, ...) hub_call(&(call_t){__VA_ARGS__}, fn)

static const char big[70000];

static void w_subscribe(call_t *a)
{
    px__presence_t who = {.user = {NULL, 0}, .info = {NULL, 0}};
    px__subopts_t o = {.has_since = a->since,
                       .since_offset = a->since_off,
                       .since_epoch = a->since_epoch,
                       .presence = a->presence};
    if (a->who) {
        snprintf(who.client, sizeof who.client, "%s", a->who);
        if (a->user)
            who.user = (px_str_t){a->user, strlen(a->user)};
        o.who = &who;
    }
    if (a->page)
        a->c->hc.page_bytes = a->page;
    a->sub = px__hclient_subscribe(&a->c->hc, a->ch, strlen(a->ch), g.fmt[a->fmt], &o, 0);
    if (!a->sub) { /* refused on the worker: the client sees it at once */
        ev_t e = {.kind = 'S', .status = -ENOMEM};
        snprintf(e.ch, sizeof e.ch, "%s", a->ch);
        record(a->c, &e);
    }
}

static void w_unsubscribe(call_t *a)
{
    px__hsub_t *s = px__hclient_find(&a->c->hc, a->ch, strlen(a->ch));
    a->rc = s ? px__hclient_unsubscribe(&a->c->hc, s) : -ENOENT;
}

static void w_sub_unsub(call_t *a)
{
    w_subscribe(a);
    a->rc = a->sub ? px__hclient_unsubscribe(&a->c->hc, a->sub) : -ENOMEM;
}

static void w_publish(call_t *a)
{
    for (int i = 0; i < (a->n ? a->n : 1); i++) {
        px__hreq_t *r = px__hreq_new(g.hub, PX__HREQ_PUBLISH, a->ch, strlen(a->ch));
        r->m = px__hub_msg_new((px_str_t){a->ch, strlen(a->ch)}, (px_str_t){"", 0},
                               (px_str_t){big, a->size ? a->size : 1}, 0);
        if (!r->m) { /* refused on the worker */
            r->status = -ENOMEM;
            record_req(a->c, 'A', a->ch, strlen(a->ch), r);
            px__hreq_free(r);
            continue;
        }
        px__hclient_request(&a->c->hc, r, 0);
    }
}

static void w_history(call_t *a)
{
    for (int i = 0; i < (a->n ? a->n : 1); i++) {
        px__hreq_t *r = px__hreq_new(g.hub, PX__HREQ_HISTORY, a->ch, strlen(a->ch));
        r->since_offset = a->since_off;
        r->limit = a->limit ? a->limit : 1000;
        r->max_bytes = a->max_bytes ? a->max_bytes : PX__PAGE_MAX;
        px__hclient_request(&a->c->hc, r, a->paced);
    }
}

static void w_presence(call_t *a)
{
    px__hclient_request(&a->c->hc, px__hreq_new(g.hub, PX__HREQ_PRESENCE, a->ch, strlen(a->ch)), 0);
}

static void w_close(call_t *a)
{
    px__hclient_close(&a->c->hc);
}

static void w_drained(call_t *a)
{
    set_output(a->c, a->size);
    px__hclient_drained(&a->c->hc);
}

static void w_drained_unsub(call_t *a)
{
    w_drained(a);
    w_unsubscribe(a);
}

/* The client's pacing state and its subscription to a->ch. */
static void w_state(call_t *a)
{
    px__hclient_t *hc = &a->c->hc;
    a->paced_state = hc->paced;
    a->npq = hc->npq;
    a->pending = hc->pending;
    a->nsubs = hc->nsubs;
    px__hsub_t *s = a->ch ? px__hclient_find(hc, a->ch, strlen(a->ch)) : NULL;
    a->active = s && s->active;
    a->catching_up = s && s->catching_up;
}

/* Hub thread: is the channel in the hub's memory? */
static void h_has_channel(call_t *a)
{
    a->rc = px__hashmap_get(&g.hub->channels, a->ch, strlen(a->ch)) != NULL;
}

/* Round trip through the hub and back to c: every answer and delivery the hub sent to c's
 * worker before has been handled when this returns. The presence answer is returned. */
static ev_t settle(tclient_t *c, const char *ch)
{
    size_t n = nev(c, 'A', ch);
    CALL(w_presence, .c = c, .ch = ch);
    WAIT_UNTIL(nev(c, 'A', ch) > n);
    return ev_at(c, 'A', ch, n);
}

/* Subscribe and wait for the answer. */
static ev_t subscribe(call_t a)
{
    size_t n = nev(a.c, 'S', a.ch);
    call_on(&a, w_subscribe);
    WAIT_UNTIL(nev(a.c, 'S', a.ch) > n);
    return ev_at(a.c, 'S', a.ch, n);
}
#define SUBSCRIBE(...) subscribe((call_t){__VA_ARGS__})

/* Publish n messages from c and wait for their acks. */
static void publish(tclient_t *c, const char *ch, int n, size_t size)
{
    size_t before = nev(c, 'A', ch);
    CALL(w_publish, .c = c, .ch = ch, .n = n, .size = size);
    WAIT_UNTIL(nev(c, 'A', ch) >= before + (size_t)n);
}

/* ---- the fake broker: records what the hub tells it (hub thread) ---------------------------- */

__attribute__((format(printf, 1, 2))) static void blog_add(const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lock();
    size_t n = strlen(g.blog);
    snprintf(g.blog + n, sizeof g.blog - n, "%s%s", n ? " " : "", buf);
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static int fb_publish(px__broker_t *b, const px_hub_msg_t *m)
{
    PX_UNUSED(b);
    blog_add("m:%s:%llu", px__msg_channel(m), (unsigned long long)m->offset);
    return 0;
}

static int fb_subscribe(px__broker_t *b, px_str_t ch)
{
    PX_UNUSED(b);
    blog_add("+%.*s", (int)ch.len, ch.ptr);
    return 0;
}

static int fb_unsubscribe(px__broker_t *b, px_str_t ch)
{
    PX_UNUSED(b);
    blog_add("-%.*s", (int)ch.len, ch.ptr);
    return 0;
}

static void fb_close(px__broker_t *b)
{
    px__free(b);
}

static const px__broker_ops_t fb_ops = {.name = "fake",
                                        .close = fb_close,
                                        .publish = fb_publish,
                                        .subscribe = fb_subscribe,
                                        .unsubscribe = fb_unsubscribe};

static int blog_is(const char *want)
{
    lock();
    int r = strcmp(g.blog, want) == 0;
    unlock();
    return r;
}

/* ---- the hub ------------------------------------------------------------------------------------
 */

static void up(uint64_t history_size)
{
    char err[256];
    g.live0 = atomic_load(&oom.live);
    g.workers = px_workers_new(2);
    assert_non_null(g.workers);
    fstore_t *fs = fs_new(history_size);
    assert_non_null(fs);
    fs->base.ops = &fs_ops;
    px_hub_opts_t o;
    px_hub_opts_init(&o);
    o.history_size = history_size;
    g.fs = fs;
    g.hub = px__hub_new_store(g.workers, &o, &fs->base, err, sizeof err);
    assert_non_null(g.hub);
    g.fmt[0] = px__hub_add_format(g.hub, &fmt_a);
    g.fmt[1] = px__hub_add_format(g.hub, &fmt_b);
    assert_true(g.fmt[0] >= 0 && g.fmt[1] >= 0);
    g.blog[0] = '\0';
    if (g.broker) { /* before the hub thread starts, it is the hub's to replace */
        px__broker_close(g.hub->broker);
        g.hub->broker = px__calloc(1, sizeof *g.hub->broker);
        assert_non_null(g.hub->broker);
        g.hub->broker->ops = &fb_ops;
    }
    assert_int_equal(px_hub_start(g.hub), 0);
    assert_int_equal(px_workers_start(g.workers, NULL, NULL), 0);
}

/* Stop everything (also after a failed test). */
static void down_now(void)
{
    if (g.workers) {
        px_workers_stop(g.workers);
        px_workers_join(g.workers);
    }
    px_hub_free(g.hub);
    px_workers_free(g.workers);
    g.hub = NULL;
    g.workers = NULL;
    g.fs = NULL;
    for (int i = 0; i < g.nclients; i++) {
        free(g.clients[i]->ev);
        free(g.clients[i]);
    }
    g.nclients = 0;
    g.fail_gap = 0;
    g.broker = 0;
}

/* Close every client, wait until the hub released them, stop, and check for leaks. */
static void down(void)
{
    for (int i = 0; i < g.nclients; i++) {
        tclient_t *c = g.clients[i];
        CALL(w_close, .c = c); /* a no-op on a closed client */
        WAIT_UNTIL(c->released);
    }
    down_now();
    assert_int_equal(atomic_load(&oom.live), g.live0);
}

static int teardown(void **state)
{
    PX_UNUSED(state);
    oom_arm(-1);
    if (g.hub)
        down_now();
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_allocator_sites(void **state)
{
    PX_UNUSED(state);
    /* The OOM allocator never fails px__x*() (they would abort), only the fallible calls. */
    oom_arm(0);
    void *x = px__xmalloc(16);
    assert_int_equal(atomic_load(&oom.failed), 0);
    void *p = px__malloc(16);
    assert_null(p);
    assert_int_equal(atomic_load(&oom.failed), 1);
    oom_arm(-1);
    px__free(x);
}

/* Publishes are acknowledged with the offsets the store chose: 1, 2, 3... per channel, in
 * the channel's (fresh) epoch, whichever worker they come from. */
static void test_publish_acks(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c0 = client(0), *c1 = client(1);
    publish(c1, "room", 10, 0);
    for (size_t i = 0; i < 10; i++) {
        ev_t e = ev_at(c1, 'A', "room", i);
        assert_int_equal(e.status, 0);
        assert_int_equal(e.off, i + 1);
        assert_string_equal(e.epoch, epoch_of("room"));
    }
    job_t *j0 = POST(w_publish, .c = c0, .ch = "room", .n = 20);
    job_t *j1 = POST(w_publish, .c = c1, .ch = "room", .n = 20);
    job_wait(j0);
    job_wait(j1);
    WAIT_UNTIL(nev(c0, 'A', "room") == 20 && nev(c1, 'A', "room") == 30);
    int seen[51] = {0};
    for (int k = 0; k < 2; k++) {
        tclient_t *c = k ? c1 : c0;
        uint64_t prev = 0;
        for (size_t i = k ? 10 : 0; i < nev(c, 'A', "room"); i++) {
            ev_t e = ev_at(c, 'A', "room", i);
            assert_int_equal(e.status, 0);
            assert_true(e.off > prev && e.off <= 50); /* each worker's in order */
            prev = e.off;
            seen[e.off]++;
        }
    }
    for (int i = 11; i <= 50; i++)
        assert_int_equal(seen[i], 1);
    publish(c0, "other", 1, 0);
    assert_int_equal(ev_at(c0, 'A', "other", 0).off, 1);
    assert_int_equal(fs_last("room"), 50);
    down();
}

/* Every subscription, on either worker and of either format, gets every message once, in
 * offset order. */
static void test_fanout_in_order(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *s0 = client(0), *s1 = client(1), *s2 = client(0), *p = client(1);
    assert_int_equal(SUBSCRIBE(.c = s0, .ch = "room").status, 0);
    assert_int_equal(SUBSCRIBE(.c = s1, .ch = "room").status, 0);
    ev_t e = SUBSCRIBE(.c = s2, .ch = "room", .fmt = 1);
    assert_int_equal(e.status, 0);
    assert_int_equal(e.off, 0);
    assert_int_equal(e.recovered, -1);
    for (int i = 0; i < 5; i++)
        CALL(w_publish, .c = p, .ch = "room", .n = 10);
    WAIT_UNTIL(nev(s0, 'D', "room") == 50 && nev(s1, 'D', "room") == 50 &&
               nev(s2, 'D', "room") == 50);
    expect_run(s0, "room", "D", 1, 50);
    expect_run(s1, "room", "D", 1, 50);
    expect_run(s2, "room", "D", 1, 50);
    assert_int_equal(nev(p, 'D', NULL), 0);
    down();
}

/* A subscribe racing publishes: with `since`, replay + live deliveries are every message
 * exactly once in order; without, live deliveries start right after the answer's offset. */
static void test_subscribe_races_publishes(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1);
    publish(p, "race", 20, 0);
    uint64_t total = 20;
    for (int round = 0; round < 5; round++) {
        tclient_t *rec = client(0), *live = client(round & 1);
        job_t *jp = POST(w_publish, .c = p, .ch = "race", .n = 100);
        job_t *jr = POST(w_subscribe, .c = rec, .ch = "race", .since = 1, .fmt = round & 1);
        job_t *jl = POST(w_subscribe, .c = live, .ch = "race");
        job_wait(jp);
        job_wait(jr);
        job_wait(jl);
        total += 100;
        WAIT_UNTIL(nev(p, 'A', "race") == total);
        WAIT_UNTIL(last_msg_offset(rec, "race") == total && nev(live, 'S', "race") == 1);
        ev_t s = ev_at(rec, 'S', "race", 0);
        assert_int_equal(s.status, 0);
        assert_int_equal(s.recovered, 1);
        expect_run(rec, "race", "WD", 1, total);
        ev_t l = ev_at(live, 'S', "race", 0);
        if (l.off < total)
            WAIT_UNTIL(last_msg_offset(live, "race") == total);
        expect_run(live, "race", "WD", l.off + 1, total);
    }
    down();
}

/* A backlog larger than a page is replayed page by page as the client drains: nothing more
 * is asked for while its output reports queued bytes; every message once, in order, then
 * live. The first pages come from the store, the rest from the ring. */
static void test_catch_up_paced(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *c = client(0);
    publish(p, "log", 300, 100);
    unsigned reads0 = fs_reads();
    set_output(c, 1);
    /* ~167 bytes counted per message: 5 per 1000-byte page. */
    ev_t s =
        SUBSCRIBE(.c = c, .ch = "log", .since = 1, .since_epoch = epoch_of("log"), .page = 1000);
    assert_int_equal(s.status, 0);
    assert_int_equal(s.recovered, 1);
    assert_int_equal(s.off, 300);
    WAIT_UNTIL(nev(c, 'W', "log") == 5);
    call_t *st = CALL(w_state, .c = c, .ch = "log");
    assert_int_equal(st->paced_state, PX__PACED_DRAINING);
    assert_int_equal(st->npq, 1); /* the next page waits for the output */
    assert_int_equal(st->pending, 0);
    assert_true(st->catching_up);
    usleep(30 * 1000);
    assert_int_equal(nev(c, 'W', "log"), 5);
    size_t pages = 1;
    for (;;) {
        size_t before = nev(c, 'W', "log");
        CALL(w_drained, .c = c, .size = 1);
        WAIT_UNTIL(nev(c, 'W', "log") > before);
        st = CALL(w_state, .c = c, .ch = "log");
        pages++;
        assert_int_equal(st->paced_state, PX__PACED_DRAINING);
        assert_int_equal(st->pending, 0);
        if (st->active)
            break;
        assert_int_equal(st->npq, 1);
        assert_true(pages < 100);
    }
    assert_int_equal(pages, 60);
    assert_true(fs_reads() > reads0); /* offsets 1..44 are no longer in the ring */
    publish(p, "log", 5, 100);
    WAIT_UNTIL(nev(c, 'D', "log") == 5);
    expect_run(c, "log", "W", 1, 300);
    expect_run(c, "log", "WD", 1, 305);
    down();
}

/* Unsubscribed while its subscribe is at the hub: the answer comes back cancelled, then
 * nothing; the hub does not count it. A cancelled subscribe that fails does not take
 * another subscription's count with it. */
static void test_unsubscribe_pending(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c = client(0), *other = client(0), *p = client(1);
    call_t *a = CALL(w_sub_unsub, .c = c, .ch = "pend");
    assert_int_equal(a->rc, 0);
    WAIT_UNTIL(nev(c, 'S', "pend") == 1);
    assert_int_equal(ev_at(c, 'S', "pend", 0).cancelled, 1);
    assert_int_equal(settle(c, "pend").subscribers, 0);
    assert_int_equal(HUB_CALL(h_has_channel, .ch = "pend"), 0);
    publish(p, "pend", 3, 0);
    settle(c, "pend");
    assert_int_equal(nev(c, 'D', NULL), 0);

    /* A subscribe that fails (its gap frame cannot be made), cancelled meanwhile. */
    assert_int_equal(SUBSCRIBE(.c = other, .ch = "pend").status, 0);
    lock();
    g.fail_gap = 1;
    unlock();
    a = CALL(w_sub_unsub, .c = c, .ch = "pend", .fmt = 1, .since = 1, .since_off = 99);
    assert_int_equal(a->rc, 0);
    WAIT_UNTIL(nev(c, 'S', "pend") == 2);
    ev_t s = ev_at(c, 'S', "pend", 1);
    assert_int_equal(s.status, 503);
    assert_string_equal(s.code, "internal_error");
    assert_int_equal(settle(c, "pend").subscribers, 1);
    publish(p, "pend", 1, 0);
    WAIT_UNTIL(nev(other, 'D', "pend") == 1);
    down();
}

/* Unsubscribed while catching up: with its next page queued, or with it at the hub (its
 * answer is then dropped). Either way nothing more is replayed and the hub forgets it. */
static void test_unsubscribe_catching_up(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *c = client(0), *d = client(0);
    publish(p, "cup", 300, 100);
    set_output(c, 1);
    SUBSCRIBE(.c = c, .ch = "cup", .since = 1, .page = 1000);
    WAIT_UNTIL(nev(c, 'W', "cup") == 5);
    assert_int_equal(CALL(w_unsubscribe, .c = c, .ch = "cup")->rc, 1);
    call_t *st = CALL(w_state, .c = c, .ch = "cup");
    assert_int_equal(st->npq, 0);
    assert_int_equal(st->nsubs, 0);
    CALL(w_drained, .c = c);
    assert_int_equal(settle(c, "cup").subscribers, 0);
    assert_int_equal(nev(c, 'W', "cup"), 5);

    set_output(d, 1);
    SUBSCRIBE(.c = d, .ch = "cup", .since = 1, .page = 1000);
    WAIT_UNTIL(nev(d, 'W', "cup") == 5);
    assert_int_equal(CALL(w_drained_unsub, .c = d, .ch = "cup", .size = 1)->rc, 1);
    assert_int_equal(settle(d, "cup").subscribers, 0);
    assert_int_equal(nev(d, 'W', "cup"), 5);
    st = CALL(w_state, .c = d);
    assert_int_equal(st->npq, 0);
    assert_int_equal(st->pending, 0);
    publish(p, "cup", 1, 0);
    settle(d, "cup");
    assert_int_equal(nev(d, 'D', NULL) + nev(c, 'D', NULL), 0);
    down();
}

static void w_many_then_close(call_t *a)
{
    w_publish(a);
    w_history(a);
    w_presence(a);
    w_subscribe(a);
    w_close(a);
    a->pending = a->c->hc.pending;
    lock();
    a->rc = a->c->released;
    unlock();
}

/* A client closed with requests out lives until they return, and hears nothing after. */
static void test_close_with_requests_out(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c = client(0), *o = client(1);
    call_t *a = CALL(w_many_then_close, .c = c, .ch = "gone", .n = 5, .since = 1);
    assert_int_equal(a->pending, 5 + 5 + 1 + 1);
    assert_int_equal(a->rc, 0);
    WAIT_UNTIL(c->released);
    assert_int_equal(nev(c, 'A', NULL) + nev(c, 'S', NULL), 0);
    assert_int_equal(fs_last("gone"), 5); /* the publishes were made all the same */
    assert_int_equal(settle(o, "gone").subscribers, 0);
    down();
}

/* A failed commit: 503 storage_error, the channel's offset stays, and the offsets the failed
 * batch may have used are never given to later messages. */
static void test_failed_commit(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *s = client(0), *late = client(0);
    SUBSCRIBE(.c = s, .ch = "room");
    publish(p, "room", 2, 0);
    fs_inject(1, -EIO, 0, 0);
    publish(p, "room", 1, 0);
    ev_t e = ev_at(p, 'A', "room", 2);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "storage_error");
    assert_int_equal(SUBSCRIBE(.c = late, .ch = "room").off, 2);
    fs_inject(1000, -ENOSPC, 0, 0); /* however the three are batched */
    publish(p, "room", 3, 0);
    fs_inject(0, 0, 0, 0);
    for (size_t i = 3; i < 6; i++)
        assert_int_equal(ev_at(p, 'A', "room", i).status, 503);
    assert_int_equal(fs_last("room"), 2);
    publish(p, "room", 2, 0);
    assert_int_equal(ev_at(p, 'A', "room", 6).off, 7);
    assert_int_equal(ev_at(p, 'A', "room", 7).off, 8);
    WAIT_UNTIL(nev(s, 'D', "room") == 4);
    uint64_t got[4];
    assert_int_equal(msg_offsets(s, "room", "D", got, 4), 4);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 2);
    assert_int_equal(got[2], 7);
    assert_int_equal(got[3], 8);
    CALL(w_history, .c = p, .ch = "room");
    WAIT_UNTIL(nev(p, 'A', "room") == 9);
    e = ev_at(p, 'A', "room", 8);
    assert_int_equal(e.n, 4);
    assert_int_equal(e.last, 8);
    assert_int_equal(e.truncated, 0);
    down();
}

/* `since` ahead of the channel, or in another epoch, is never recovered (format B writes its
 * gap frame); `since` at the channel's offset is, with nothing to replay. A history read
 * error at subscribe is reported as not recovered. */
static void test_since_not_recoverable(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *a = client(0), *b = client(1), *x = client(0), *n = client(0);
    publish(p, "ah", 5, 0);
    ev_t e = SUBSCRIBE(.c = a, .ch = "ah", .since = 1, .since_off = 10);
    assert_int_equal(e.recovered, 0);
    assert_int_equal(e.off, 5);
    e = SUBSCRIBE(.c = b, .ch = "ah", .fmt = 1, .since = 1, .since_off = 10);
    assert_int_equal(e.recovered, 0);
    WAIT_UNTIL(nev(b, 'W', "ah") == 1);
    assert_string_equal(ev_at(b, 'W', "ah", 0).text, "g:ah:5");
    assert_int_equal(
        SUBSCRIBE(.c = x, .ch = "ah", .since = 1, .since_off = 1, .since_epoch = "another")
            .recovered,
        0);
    e = SUBSCRIBE(.c = n, .ch = "ah", .since = 1, .since_off = 5, .since_epoch = epoch_of("ah"));
    assert_int_equal(e.recovered, 1);
    publish(p, "ah", 1, 0);
    WAIT_UNTIL(nev(a, 'D', "ah") == 1 && nev(b, 'D', "ah") == 1 && nev(x, 'D', "ah") == 1 &&
               nev(n, 'D', "ah") == 1);
    assert_int_equal(nev(a, 'W', NULL) + nev(x, 'W', NULL) + nev(n, 'W', NULL), 0);
    expect_run(b, "ah", "WD", 6, 6);

    /* 300 messages: offset 1 is only in the store, whose read fails. */
    publish(p, "rf", 300, 0);
    fs_inject(0, 0, 1, -EIO);
    tclient_t *r = client(0);
    e = SUBSCRIBE(.c = r, .ch = "rf", .since = 1, .since_off = 1);
    assert_int_equal(e.status, 0);
    assert_int_equal(e.recovered, 0);
    down();
}

/* History trimmed past a subscription while it catches up: the format's gap frame, then
 * live. */
static void test_gap_during_catch_up(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *c = client(0);
    publish(p, "gap", 300, 100);
    set_output(c, 1);
    SUBSCRIBE(.c = c, .ch = "gap", .since = 1, .page = 1000);
    WAIT_UNTIL(nev(c, 'W', "gap") == 5);
    fs_trim_below("gap", 200);
    CALL(w_drained, .c = c);
    WAIT_UNTIL(nev(c, 'W', "gap") == 6);
    assert_string_equal(ev_at(c, 'W', "gap", 5).text, "g:gap:300");
    assert_true(CALL(w_state, .c = c, .ch = "gap")->active);
    publish(p, "gap", 3, 0);
    WAIT_UNTIL(nev(c, 'D', "gap") == 3);
    expect_run(c, "gap", "W", 1, 5);
    expect_run(c, "gap", "D", 301, 303);

    /* A gap frame that cannot be made ends the subscription (it must not go on silently). */
    tclient_t *d = client(0);
    publish(p, "gap2", 300, 100);
    set_output(d, 1);
    SUBSCRIBE(.c = d, .ch = "gap2", .since = 1, .page = 1000);
    WAIT_UNTIL(nev(d, 'W', "gap2") == 5);
    fs_trim_below("gap2", 200);
    lock();
    g.fail_gap = 1;
    unlock();
    CALL(w_drained, .c = d);
    WAIT_UNTIL(nev(d, 'E', "gap2") == 1);
    assert_int_equal(ev_at(d, 'E', "gap2", 0).status, 503);
    assert_int_equal(nev(d, 'W', "gap2"), 5);
    assert_int_equal(settle(d, "gap2").subscribers, 0);
    down();
}

/* History answers: cut at max_bytes (`more`, continue from the last offset), cut at the
 * limit (no `more`), and `truncated` when retention removed messages after `since`. */
static void test_history_more_truncated(void **state)
{
    PX_UNUSED(state);
    up(20);
    tclient_t *c = client(0);
    publish(c, "h", 30, 100);
    uint64_t since = 0, next = 11;
    size_t answers = 0, before = nev(c, 'A', "h");
    for (;;) {
        CALL(w_history, .c = c, .ch = "h", .since_off = since, .max_bytes = 500, .paced = 1);
        WAIT_UNTIL(nev(c, 'A', "h") == before + answers + 1);
        ev_t e = ev_at(c, 'A', "h", before + answers);
        answers++;
        assert_int_equal(e.status, 0);
        assert_int_equal(e.off, 30);
        assert_int_equal(e.truncated, since == 0);
        assert_int_equal(e.n, e.more ? 3 : 30 - since); /* ~165 bytes counted per message */
        assert_int_equal(e.first, next);
        assert_true(e.contiguous);
        next = e.last + 1;
        since = e.last;
        if (!e.more)
            break;
        assert_true(answers < 20);
    }
    assert_int_equal(next, 31);
    assert_int_equal(answers, 7);
    CALL(w_history, .c = c, .ch = "h", .since_off = 20, .limit = 3);
    WAIT_UNTIL(nev(c, 'A', "h") == before + answers + 1);
    ev_t e = ev_at(c, 'A', "h", before + answers);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.first, 21);
    assert_int_equal(e.more, 0);
    assert_int_equal(e.truncated, 0);
    CALL(w_history, .c = c, .ch = "nothing-here");
    WAIT_UNTIL(nev(c, 'A', "nothing-here") == 1);
    e = ev_at(c, 'A', "nothing-here", 0);
    assert_int_equal(e.status, 0);
    assert_int_equal(e.n, 0);
    assert_string_equal(e.epoch, "");
    down();
}

/* Join and leave events go only to subscriptions that asked for them; the joiner's own
 * join follows its answer; a presence query lists the members. */
static void test_presence(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *w = client(0), *q = client(1), *m = client(1), *j = client(0);
    SUBSCRIBE(.c = w, .ch = "pr", .presence = 1);
    SUBSCRIBE(.c = q, .ch = "pr");
    SUBSCRIBE(.c = m, .ch = "pr", .who = "member-m", .user = "bob");
    WAIT_UNTIL(nev(w, 'D', "pr") == 1);
    assert_string_equal(ev_at(w, 'D', "pr", 0).text, "j:pr:member-m");
    ev_t e = settle(q, "pr");
    assert_int_equal(e.subscribers, 3);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.member, "member-m/bob");
    SUBSCRIBE(.c = j, .ch = "pr", .presence = 1, .who = "member-j");
    WAIT_UNTIL(nev(j, 'D', "pr") == 1 && nev(w, 'D', "pr") == 2);
    lock();
    ev_t first = j->ev[0], second = j->ev[1];
    unlock();
    assert_int_equal(first.kind, 'S'); /* its answer, then its own join */
    assert_string_equal(second.text, "j:pr:member-j");
    assert_int_equal(CALL(w_unsubscribe, .c = m, .ch = "pr")->rc, 1);
    WAIT_UNTIL(nev(w, 'D', "pr") == 3 && nev(j, 'D', "pr") == 2);
    assert_string_equal(ev_at(w, 'D', "pr", 2).text, "l:pr:member-m");
    CALL(w_close, .c = j);
    WAIT_UNTIL(nev(w, 'D', "pr") == 4);
    assert_string_equal(ev_at(w, 'D', "pr", 3).text, "l:pr:member-j");
    e = settle(q, "pr");
    assert_int_equal(e.subscribers, 2);
    assert_int_equal(e.n, 0);
    assert_int_equal(nev(q, 'D', NULL) + nev(m, 'D', NULL), 0);
    down();
}

/* A channel with no subscriber and nothing stored leaves the hub's memory, and comes back in
 * the same epoch (the store's fresh_epoch); one with messages stays. */
static void test_channel_freed(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c = client(0);
    ev_t e = SUBSCRIBE(.c = c, .ch = "tmp");
    assert_string_equal(e.epoch, epoch_of("tmp"));
    assert_int_equal(HUB_CALL(h_has_channel, .ch = "tmp"), 1);
    assert_int_equal(CALL(w_unsubscribe, .c = c, .ch = "tmp")->rc, 1);
    assert_int_equal(HUB_CALL(h_has_channel, .ch = "tmp"), 0);
    e = SUBSCRIBE(.c = c, .ch = "tmp");
    assert_string_equal(e.epoch, epoch_of("tmp"));
    assert_int_equal(e.off, 0);
    CALL(w_close, .c = c);
    WAIT_UNTIL(c->released);
    assert_int_equal(HUB_CALL(h_has_channel, .ch = "tmp"), 0);

    tclient_t *k = client(1);
    SUBSCRIBE(.c = k, .ch = "kept");
    publish(k, "kept", 1, 0);
    assert_int_equal(CALL(w_unsubscribe, .c = k, .ch = "kept")->rc, 1);
    assert_int_equal(HUB_CALL(h_has_channel, .ch = "kept"), 1);
    down();
}

/* The store answers a commit with another epoch (it lost the channel's history): the hub
 * takes it, and forgets the recent messages of the old one. */
static void test_store_new_epoch(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c = client(0);
    publish(c, "ep", 5, 0);
    fs_lose("ep", "lost-history");
    publish(c, "ep", 1, 0);
    ev_t e = ev_at(c, 'A', "ep", 5);
    assert_int_equal(e.off, 1);
    assert_string_equal(e.epoch, "lost-history");
    CALL(w_history, .c = c, .ch = "ep");
    WAIT_UNTIL(nev(c, 'A', "ep") == 7);
    e = ev_at(c, 'A', "ep", 6);
    assert_string_equal(e.epoch, "lost-history");
    assert_int_equal(e.n, 1);
    assert_int_equal(e.last, 1);
    e = SUBSCRIBE(.c = c, .ch = "ep", .since = 1, .since_off = 5, .since_epoch = epoch_of("ep"));
    assert_int_equal(e.recovered, 0);
    down();
}

/* The broker (fan-out to other nodes) hears of a channel when its first subscription comes
 * and its last goes, and of every committed message, never of a failed one. */
static void test_broker_calls(void **state)
{
    PX_UNUSED(state);
    g.broker = 1;
    up(1000);
    tclient_t *a = client(0), *b = client(1);
    SUBSCRIBE(.c = a, .ch = "bk");
    SUBSCRIBE(.c = b, .ch = "bk");
    publish(a, "bk", 2, 0);
    fs_inject(1, -EIO, 0, 0);
    publish(a, "bk", 1, 0);
    assert_int_equal(CALL(w_unsubscribe, .c = a, .ch = "bk")->rc, 1);
    publish(b, "other", 1, 0);
    assert_true(blog_is("+bk m:bk:1 m:bk:2 m:other:1"));
    assert_int_equal(CALL(w_unsubscribe, .c = b, .ch = "bk")->rc, 1);
    CALL(w_sub_unsub, .c = a, .ch = "cx"); /* cancelled: counted, then not */
    WAIT_UNTIL(blog_is("+bk m:bk:1 m:bk:2 m:other:1 -bk +cx -cx"));
    down();
}

/* 100 slow history reads queued, then, once the hub thread is busy with them, a publish: it
 * is committed and acknowledged after the slice of reads in progress, not behind all of
 * them. */
static void test_reads_do_not_delay_publish(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *c = client(0);
    publish(c, "big", 300, 0);
    pthread_mutex_lock(&g.fs->mu);
    /* Offset 1 is only in the store: every read goes there and takes 4 ms (100 reads: 0.4 s,
     * so a busy machine delaying this thread does not look like a publish stuck behind). */
    g.fs->read_delay_us = 4000;
    pthread_mutex_unlock(&g.fs->mu);
    unsigned reads0 = fs_reads();
    CALL(w_history, .c = c, .ch = "big", .n = 100);
    while (fs_reads() < reads0 + 3) /* the hub thread has taken them all in and is reading */
        usleep(100);
    CALL(w_publish, .c = c, .ch = "other");
    WAIT_UNTIL(nev(c, 'A', "big") == 400 && nev(c, 'A', "other") == 1);
    size_t reads_before = 0;
    lock();
    for (size_t i = 0; i < c->nev && strcmp(c->ev[i].ch, "other") != 0; i++)
        reads_before += c->ev[i].type == PX__HREQ_HISTORY;
    unlock();
    print_message("history answers before the publish's ack: %zu of 100\n", reads_before);
    assert_true(reads_before < 50);
    assert_int_equal(ev_at(c, 'A', "other", 0).status, 0);
    down();
}

/* ---- the public C API ---------------------------------------------------------------------- */

typedef struct api_rec {
    px_worker_t *expect; /* callbacks must run there (NULL: the hub thread) */
    int wrong_thread;
    int acks, ack_status;
    uint64_t ack_offset;
    int subscribed, sub_status;
    uint64_t sub_offset;
    int msgs;
    uint64_t offs[64];
    char event[16];
    int history, hist_status;
    size_t hist_count;
    uint64_t hist_first, hist_last;
    int presence;
    unsigned subscribers;
    px_hub_sub_t *sub;
    int unsub_on_subscribed, unsub_on_message;
} api_rec_t;

static api_rec_t api[6];

static void check_thread(api_rec_t *r)
{
    px_worker_t *self = px_worker_self();
    int ok = r->expect ? self == r->expect : self && px_worker_group(self) == g.hub->actor;
    if (!ok)
        r->wrong_thread++;
}

static void api_ack(const px_hub_ack_t *a, void *ud)
{
    api_rec_t *r = ud;
    lock();
    check_thread(r);
    r->acks++;
    r->ack_status = a->status;
    r->ack_offset = a->offset;
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static void api_subscribed(px_hub_sub_t *s, int status, const char *epoch, uint64_t offset,
                           void *ud)
{
    PX_UNUSED(epoch);
    api_rec_t *r = ud;
    lock();
    check_thread(r);
    r->subscribed++;
    r->sub_status = status;
    r->sub_offset = offset;
    int unsub = r->unsub_on_subscribed;
    pthread_cond_broadcast(&g.cv);
    unlock();
    if (unsub)
        px_hub_unsubscribe(s);
}

static void api_message(px_hub_sub_t *s, const px_hub_msg_t *m, void *ud)
{
    api_rec_t *r = ud;
    lock();
    check_thread(r);
    if (r->msgs < (int)PX_ARRAY_SIZE(r->offs))
        r->offs[r->msgs] = px_hub_msg_offset(m);
    r->msgs++;
    px_str_t ev = px_hub_msg_event(m);
    snprintf(r->event, sizeof r->event, "%.*s", (int)ev.len, ev.ptr);
    int unsub = r->unsub_on_message;
    pthread_cond_broadcast(&g.cv);
    unlock();
    if (unsub)
        px_hub_unsubscribe(s);
}

static const px_hub_sub_cbs_t api_cbs = {.on_subscribed = api_subscribed,
                                         .on_message = api_message};

static void api_history_cb(const px_hub_history_t *h, void *ud)
{
    api_rec_t *r = ud;
    lock();
    check_thread(r);
    r->history++;
    r->hist_status = h->status;
    r->hist_count = h->count;
    if (h->count) {
        r->hist_first = px_hub_msg_offset(h->msgs[0]);
        r->hist_last = px_hub_msg_offset(h->msgs[h->count - 1]);
    }
    pthread_cond_broadcast(&g.cv);
    unlock();
}

static void api_presence_cb(const px_hub_presence_t *p, void *ud)
{
    api_rec_t *r = ud;
    lock();
    check_thread(r);
    r->presence++;
    r->subscribers = p->subscribers;
    pthread_cond_broadcast(&g.cv);
    unlock();
}

/* call_t.ch: the channel; .n: which api[] record; .size: 1 = unsubscribe instead. */
static void w_api_subscribe(call_t *a)
{
    api_rec_t *r = &api[a->n];
    lock();
    r->expect = px_worker_self();
    unlock();
    px_hub_sub_t *s = px_hub_subscribe(g.hub, (px_str_t){a->ch, strlen(a->ch)}, &api_cbs, r);
    lock();
    r->sub = s;
    unlock();
    a->rc = s != NULL;
}

static void w_api_unsubscribe(call_t *a)
{
    px_hub_unsubscribe(api[a->n].sub);
}

static void w_api_sub_unsub(call_t *a)
{
    w_api_subscribe(a);
    w_api_unsubscribe(a);
}

static void w_api_publish(call_t *a)
{
    api_rec_t *r = &api[a->n];
    lock();
    r->expect = px_worker_self();
    unlock();
    a->rc = px_hub_publish(g.hub, (px_str_t){a->ch, strlen(a->ch)}, (px_str_t){"tick", 4},
                           (px_str_t){"1", 1}, 7, api_ack, r);
}

static void w_api_queries(call_t *a)
{
    api_rec_t *r = &api[a->n];
    lock();
    r->expect = px_worker_self();
    unlock();
    px_str_t ch = {a->ch, strlen(a->ch)};
    a->rc = px_hub_history(g.hub, ch, 0, 10, api_history_cb, r) |
            px_hub_presence(g.hub, ch, api_presence_cb, r);
}

static void test_api(void **state)
{
    PX_UNUSED(state);
    up(1000);
    memset(api, 0, sizeof api);
    px_str_t ch = {"api", 3};
    tclient_t *sentinel = client(1), *c0 = client(0);

    /* Publish from a thread that is not a worker: acknowledged on the hub thread. */
    assert_int_equal(
        px_hub_publish(g.hub, ch, (px_str_t){"tick", 4}, (px_str_t){"1", 1}, 7, api_ack, &api[0]),
        0);
    WAIT_UNTIL(api[0].acks == 1);
    assert_int_equal(api[0].ack_status, 0);
    assert_int_equal(api[0].ack_offset, 1);
    assert_int_equal(px_hub_publish(g.hub, (px_str_t){"bad name", 8}, ch, ch, 0, NULL, NULL),
                     -EINVAL);
    assert_int_equal(px_hub_publish(g.hub, ch, ch, (px_str_t){big, 70000}, 0, NULL, NULL),
                     -EMSGSIZE);
    assert_null(px_hub_subscribe(g.hub, ch, &api_cbs, &api[1])); /* not on a worker */

    /* Subscribe on worker 1; publishes from worker 0 are acknowledged there. */
    assert_int_equal(CALL(w_api_subscribe, .c = sentinel, .ch = "api", .n = 1)->rc, 1);
    WAIT_UNTIL(api[1].subscribed == 1);
    assert_int_equal(api[1].sub_status, 0);
    assert_int_equal(api[1].sub_offset, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(CALL(w_api_publish, .c = c0, .ch = "api", .n = 2)->rc, 0);
    WAIT_UNTIL(api[2].acks == 3 && api[1].msgs == 3);
    assert_int_equal(api[2].ack_offset, 4);
    for (int i = 0; i < 3; i++)
        assert_int_equal(api[1].offs[i], 2 + i);
    assert_string_equal(api[1].event, "tick");

    /* Unsubscribe: no callback after it. */
    CALL(w_api_unsubscribe, .c = sentinel, .n = 1);
    SUBSCRIBE(.c = sentinel, .ch = "api");
    publish(c0, "api", 1, 0);
    WAIT_UNTIL(nev(sentinel, 'D', "api") == 1);
    assert_int_equal(api[1].msgs, 3);

    /* Queries on worker 0, answered there. */
    assert_int_equal(CALL(w_api_queries, .c = c0, .ch = "api", .n = 3)->rc, 0);
    WAIT_UNTIL(api[3].history == 1 && api[3].presence == 1);
    assert_int_equal(api[3].hist_status, 0);
    assert_int_equal(api[3].hist_count, 5);
    assert_int_equal(api[3].hist_first, 1);
    assert_int_equal(api[3].hist_last, 5);
    assert_int_equal(api[3].subscribers, 1);

    /* Unsubscribed inside its callbacks; and before its subscribe was answered. */
    lock();
    api[4].unsub_on_message = 1;
    api[5].unsub_on_subscribed = 1;
    unlock();
    CALL(w_api_subscribe, .c = c0, .ch = "self", .n = 4);
    CALL(w_api_subscribe, .c = c0, .ch = "early", .n = 5);
    CALL(w_api_sub_unsub, .c = c0, .ch = "never", .n = 0);
    WAIT_UNTIL(api[4].subscribed == 1 && api[5].subscribed == 1);
    publish(c0, "self", 2, 0);
    publish(c0, "early", 1, 0);
    publish(c0, "never", 1, 0);
    assert_int_equal(settle(c0, "self").subscribers, 0);
    assert_int_equal(settle(c0, "early").subscribers, 0);
    assert_int_equal(settle(c0, "never").subscribers, 0);
    assert_int_equal(api[4].msgs, 1);
    assert_int_equal(api[5].msgs, 0);

    /* Left subscribed: px_hub_free frees it (down() checks for leaks). */
    CALL(w_api_subscribe, .c = c0, .ch = "left", .n = 0);
    for (size_t i = 0; i < PX_ARRAY_SIZE(api); i++)
        assert_int_equal(api[i].wrong_thread, 0);
    down();
}

/* The front's callbacks close the client or fail: nothing leaks and the hub's counts follow. */
static void test_front_closes_in_callbacks(void **state)
{
    PX_UNUSED(state);
    up(1000);
    tclient_t *p = client(1), *a = client(0), *b = client(0), *c = client(1), *o = client(1);
    publish(p, "cbk", 300, 100);

    lock();
    a->close_in = 'S'; /* closes inside its subscribe answer */
    b->fail_writes = 1;
    unlock();
    SUBSCRIBE(.c = a, .ch = "cbk");
    WAIT_UNTIL(a->released);
    SUBSCRIBE(.c = b, .ch = "cbk", .since = 1, .since_off = 297);
    WAIT_UNTIL(nev(b, 'W', "cbk") == 1); /* its first replayed frame could not be written */
    assert_int_equal(CALL(w_state, .c = b)->nsubs, 0);
    assert_int_equal(settle(o, "cbk").subscribers, 0);

    /* A catch-up page that cannot be read ends the subscription; this front closes the
     * client from that callback (as SSE does). */
    set_output(c, 1);
    lock();
    c->close_in = 'E';
    unlock();
    SUBSCRIBE(.c = c, .ch = "cbk", .since = 1, .page = 1000);
    WAIT_UNTIL(nev(c, 'W', "cbk") == 5);
    fs_inject(0, 0, 1, -EIO);
    CALL(w_drained, .c = c);
    WAIT_UNTIL(c->released);
    ev_t e = ev_at(c, 'E', "cbk", 0);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "storage_error");
    assert_int_equal(settle(o, "cbk").subscribers, 0);
    publish(p, "cbk", 1, 0);
    settle(b, "cbk");
    assert_int_equal(nev(b, 'D', NULL), 0);
    down();
}

/* ---- out of memory -------------------------------------------------------------------------- */

/* Making a hub: fail the Nth allocation until it succeeds; an error each time, no leak. */
static void test_oom_new(void **state)
{
    PX_UNUSED(state);
    for (long n = 0;; n++) {
        long live0 = atomic_load(&oom.live);
        px_workers_t *ws = px_workers_new(2);
        fstore_t *fs = fs_new(1000);
        assert_non_null(ws);
        assert_non_null(fs);
        fs->base.ops = &fs_ops;
        /* a channel to load */
        assert_int_equal(fs_create(&fs->base, (px_str_t){"loaded", 6}, (px_str_t){"", 0}), 0);
        px_hub_opts_t o;
        px_hub_opts_init(&o);
        char err[128] = "";
        oom_arm(n);
        px_hub_t *h = px__hub_new_store(ws, &o, &fs->base, err, sizeof err);
        oom_arm(-1);
        int ok = h != NULL;
        if (!ok)
            assert_non_null(strstr(err, "out of memory"));
        px_hub_free(h);
        px_workers_free(ws);
        assert_int_equal(atomic_load(&oom.live), live0);
        if (ok && !atomic_load(&oom.failed))
            break;
        assert_true(n < 1000);
    }
}

/* s got every acknowledged message once, in order, after the backlog 1..3 if it recovered
 * it; unless it was told otherwise: a delivery it could not get (X) or its end (E). */
static void expect_all_or_told(tclient_t *s, const ev_t *sub, const uint64_t *acked, size_t nacked)
{
    if (sub->status != 0 || !nacked)
        return;
    WAIT_UNTIL(last_msg_offset(s, "o") >= acked[nacked - 1] || nev(s, 'X', "o") ||
               nev(s, 'E', "o"));
    if (nev(s, 'X', "o") || nev(s, 'E', "o"))
        return;
    uint64_t got[32];
    size_t k = msg_offsets(s, "o", "WD", got, 32), base = sub->recovered == 1 ? 3 : 0;
    if (k != base + nacked) {
        lock();
        for (size_t i = 0; i < s->nev; i++)
            print_message("ev %c %s %s off=%llu st=%d rec=%d\n", s->ev[i].kind, s->ev[i].ch,
                          s->ev[i].text, (unsigned long long)s->ev[i].off, s->ev[i].status,
                          s->ev[i].recovered);
        unlock();
        for (size_t i = 0; i < nacked; i++)
            print_message("acked %llu\n", (unsigned long long)acked[i]);
    }
    assert_int_equal(k, base + nacked);
    for (size_t i = 0; i < base; i++)
        assert_int_equal(got[i], i + 1);
    for (size_t i = 0; i < nacked; i++)
        assert_int_equal(got[base + i], acked[i]);
}

/* One scenario under OOM: whatever fails, every request is answered (or refused where it is
 * made), acknowledged messages reach the subscribers once and in order unless they were
 * told otherwise, presence events are not lost silently, and nothing leaks. */
static void oom_scenario(long n, int *failed)
{
    up(1000);
    memset(api, 0, sizeof api);
    tclient_t *s = client(0), *q = client(0), *p = client(1), *m = client(1);
    publish(p, "o", 3, 0); /* a backlog, before the failures */
    oom_arm(n);
    ev_t sub = SUBSCRIBE(.c = s, .ch = "o", .since = 1, .presence = 1, .who = "s");
    ev_t qsub = SUBSCRIBE(.c = q, .ch = "o", .since = 1, .page = 100); /* a page per message */
    CALL(w_publish, .c = p, .ch = "o", .n = 4);
    WAIT_UNTIL(nev(p, 'A', "o") == 7);
    uint64_t acked[8];
    size_t nacked = 0;
    for (size_t i = 3; i < 7; i++) {
        ev_t e = ev_at(p, 'A', "o", i);
        if (e.status == 0)
            acked[nacked++] = e.off;
        else
            assert_true(e.status == 503 || e.status == -ENOMEM);
    }
    int rc = px_hub_publish(g.hub, (px_str_t){"o", 1}, (px_str_t){"", 0}, (px_str_t){"1", 1}, 0,
                            api_ack, &api[0]);
    assert_true(rc == 0 || rc == -ENOMEM);
    if (rc == 0) {
        WAIT_UNTIL(api[0].acks == 1);
        if (api[0].ack_status == 0)
            acked[nacked++] = api[0].ack_offset;
        else
            assert_int_equal(api[0].ack_status, -EIO);
    }
    CALL(w_history, .c = p, .ch = "o", .paced = 1);
    CALL(w_presence, .c = p, .ch = "o");
    WAIT_UNTIL(nev(p, 'A', "o") == 9);
    for (size_t i = 7; i < 9; i++) {
        ev_t e = ev_at(p, 'A', "o", i);
        assert_true(e.status == 0 || e.status == 503);
    }
    ev_t join = SUBSCRIBE(.c = m, .ch = "o", .who = "m");
    CALL(w_unsubscribe, .c = m, .ch = "o");
    expect_all_or_told(s, &sub, acked, nacked);
    expect_all_or_told(q, &qsub, acked, nacked);
    if (sub.status == 0) /* its own join, then m's join and leave */
        WAIT_UNTIL(nev(s, 'D', "o") + nev(s, 'X', "o") >= 1 + nacked + (join.status == 0 ? 2 : 0) ||
                   nev(s, 'E', "o"));
    oom_arm(-1);
    *failed = atomic_load(&oom.failed);
    assert_int_equal(api[0].wrong_thread, 0);
    down();
}

/* Fail the Nth allocation, N = 0, 1, 2... until the scenario runs without a failure; three
 * rounds, as the threads interleave their allocations differently each time. */
static void test_oom_hub(void **state)
{
    PX_UNUSED(state);
    for (int round = 0; round < 3; round++) {
        long n = 0;
        for (;; n++) {
            int failed;
            oom_scenario(n, &failed);
            if (!failed)
                break;
            assert_true(n < 2000);
        }
        print_message("hub OOM loop: %ld allocations failed one at a time\n", n);
    }
}

#define T(fn) cmocka_unit_test_teardown(fn, teardown)

int main(void)
{
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g.mu, &ma);
    pthread_cond_init(&g.cv, NULL);
    if (oom_install() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_allocator_sites),
        T(test_publish_acks),
        T(test_fanout_in_order),
        T(test_subscribe_races_publishes),
        T(test_catch_up_paced),
        T(test_unsubscribe_pending),
        T(test_unsubscribe_catching_up),
        T(test_close_with_requests_out),
        T(test_failed_commit),
        T(test_since_not_recoverable),
        T(test_gap_during_catch_up),
        T(test_history_more_truncated),
        T(test_presence),
        T(test_channel_freed),
        T(test_store_new_epoch),
        T(test_broker_calls),
        T(test_reads_do_not_delay_publish),
        T(test_api),
        T(test_front_closes_in_callbacks),
        T(test_oom_new),
        T(test_oom_hub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
