/* The hub thread: the single ordering point of every channel.
 *
 * Publishes that reach its mailbox in one wake-up are committed to the store in one
 * transaction (group commit: while a commit runs, the next batch gathers; the store chooses
 * the offsets), then each message is encoded once per wire format that has subscribers on
 * its channel, kept in the channel's ring of recent messages, posted to every worker with
 * subscribers, and acknowledged. Subscriptions pass through here too, which is what makes
 * recovery exact: the answer to a subscribe (with the first page of its replay) is posted to
 * the worker before any later delivery, and the worker's mailbox is FIFO, so nothing is missed
 * or duplicated. Reads (history, catch-up pages, presence, listings) wait for the commit of
 * the publishes that arrived with them and take a bounded slice of each loop iteration. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "hub/hub_int.h"

int px__m_publishes = -1, px__m_deliveries = -1, px__m_commit_us = -1, px__m_commits = -1,
    px__m_channels = -1;
static int m_store_up = -1, m_broker_up = -1, m_store_queue = -1, m_store_reconnects = -1,
           m_broker_reconnects = -1, m_store_reads = -1, m_store_read_us = -1, m_inbound = -1,
           m_gap_reads = -1, m_commit_failures = -1;

/* Several nodes: rows read per store read (a prefetch, a gap or a catch-up). */
#define NET_READ_ROWS PX__RING_MAX
/* A message past a gap waits this long for the missing ones to arrive through the broker
 * (they are usually in flight: another node committed them just before) before the gap is
 * read from the store; and a failed read is retried after GAP_RETRY_MS. */
#define GAP_GRACE_MS 30
#define GAP_RETRY_MS 500
/* A node that crashed between its commit and its broker publish leaves a message nobody
 * announces; the next message shows the gap, and if none comes, this: a LIVE channel reads
 * the store once TAIL_CHECK_MS after its last delivery (once per burst, not periodically). */
#define TAIL_CHECK_MS 1000
/* Out-of-order messages held per channel; past it the oldest gap is given up. */
#define PEND_MAX 65536
/* Asynchronous group commits in flight at once (completions come back in order). */
#define COMMITS_INFLIGHT 1

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void px_hub_opts_init(px_hub_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = "./var";
    o->durability = PX_HUB_DURABILITY_NORMAL;
    o->history_size = 1000;
    o->history_ttl_ms = 0;
    o->max_payload = 64 * 1024;
    o->presence_ttl_ms = 30000;
}

const px_hub_opts_t *px_hub_options(const px_hub_t *h)
{
    return &h->opts;
}

int px_hub_channel_valid(px_str_t channel)
{
    return px__channel_name_ok(channel.ptr, channel.len);
}

int px__channel_name_ok(const char *s, size_t len)
{
    if (len < 1 || len > PX__CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        /* ch != 0: strchr() would find the terminator (a NUL would pass). */
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != 0 && strchr("_-=@,.;:/", ch))))
            return 0;
    }
    return 1;
}

int px__hub_add_format(px_hub_t *h, const px__hformat_t *f)
{
    for (unsigned i = 0; i < h->nformats; i++)
        if (h->formats[i] == f)
            return (int)i;
    if (h->started)
        return -EBUSY;
    if (h->nformats == PX__FORMATS_MAX)
        return -ENOSPC;
    h->formats[h->nformats] = f;
    return (int)h->nformats++;
}

int px__hub_add_observer(px_hub_t *h, const px__hobserver_t *o)
{
    if (h->started)
        return -EBUSY;
    if (h->nobservers == PX__OBSERVERS_MAX)
        return -ENOSPC;
    h->observers[h->nobservers++] = o;
    return 0;
}

static void observe_occupied(px_hub_t *h, const char *name, size_t len, int occupied)
{
    for (unsigned i = 0; i < h->nobservers; i++)
        if (h->observers[i]->occupied)
            h->observers[i]->occupied(h->observers[i]->ctx, (px_str_t){name, len}, occupied);
}

/* ---- messages ------------------------------------------------------------------------------ */

px_hub_msg_t *px__hub_msg_new_user(px_str_t channel, px_str_t event, px_str_t data,
                                   uint64_t publisher, px_str_t user)
{
    if (channel.len > PX__CHANNEL_MAX || event.len > UINT16_MAX || data.len > UINT32_MAX ||
        user.len > PX__USER_MAX)
        return NULL;
    px_hub_msg_t *m = px__malloc(sizeof *m + channel.len + event.len + data.len + user.len + 4);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    atomic_init(&m->refs, 1);
    m->channel_len = (uint16_t)channel.len;
    m->event_len = (uint16_t)event.len;
    m->data_len = (uint32_t)data.len;
    m->user_len = (uint16_t)user.len;
    m->publisher = publisher;
    char *p = m->bytes;
    const px_str_t parts[4] = {channel, event, data, user};
    for (int i = 0; i < 4; i++) {
        if (parts[i].len)
            memcpy(p, parts[i].ptr, parts[i].len);
        p[parts[i].len] = '\0';
        p += parts[i].len + 1;
    }
    return m;
}

px_hub_msg_t *px__hub_msg_new(px_str_t channel, px_str_t event, px_str_t data, uint64_t publisher)
{
    return px__hub_msg_new_user(channel, event, data, publisher, (px_str_t){NULL, 0});
}

px_str_t px_hub_msg_channel(const px_hub_msg_t *m)
{
    return (px_str_t){px__msg_channel(m), m->channel_len};
}

px_str_t px_hub_msg_event(const px_hub_msg_t *m)
{
    return (px_str_t){px__msg_event(m), m->event_len};
}

px_str_t px_hub_msg_data(const px_hub_msg_t *m)
{
    return (px_str_t){px__msg_data(m), m->data_len};
}

uint64_t px_hub_msg_offset(const px_hub_msg_t *m)
{
    return m->offset;
}

const char *px_hub_msg_epoch(const px_hub_msg_t *m)
{
    return m->epoch;
}

int64_t px_hub_msg_time(const px_hub_msg_t *m)
{
    return m->time_ms;
}

uint64_t px_hub_msg_publisher(const px_hub_msg_t *m)
{
    return m->publisher;
}

px_hub_msg_t *px_hub_msg_ref(px_hub_msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void px_hub_msg_unref(px_hub_msg_t *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < PX__FORMATS_MAX; i++)
        px_slice_unref(m->enc[i]);
    px__free(m);
}

/* The encoding of `m` in format `f` (hub thread), made once and kept with the message. */
static px_slice_t *msg_encoded(px_hub_t *h, px_hub_msg_t *m, unsigned f)
{
    const px__hformat_t *fmt = h->formats[f];
    if (!fmt->encode)
        return NULL;
    if (!m->enc[f])
        m->enc[f] = fmt->encode(m, fmt->ctx);
    return m->enc[f];
}

/* ---- requests -------------------------------------------------------------------------------- */

px__hreq_t *px__hreq_new(px_hub_t *h, int type, const char *channel, size_t len)
{
    px__hreq_t *r = px__xcalloc(1, sizeof *r);
    r->hub = h;
    r->type = (uint8_t)type;
    r->recovered = -1;
    if (channel) {
        memcpy(r->channel, channel, len);
        r->channel_len = len;
    }
    px__arena_init(&r->arena, 0);
    return r;
}

void px__hreq_free(px__hreq_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nmsgs; i++)
        px_hub_msg_unref(r->msgs[i]);
    px__free(r->msgs);
    for (size_t i = 0; i < r->nframes; i++)
        px_slice_unref(r->frames[i]);
    px__free(r->frames);
    px_hub_msg_unref(r->m);
    px__free((void *)r->who.user.ptr);
    px__free((void *)r->who.info.ptr);
    px__arena_dispose(&r->arena);
    px__free(r);
}

static void hreq_error(px__hreq_t *r, int status, const char *code, const char *msg)
{
    r->status = status;
    r->err_code = code;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
}

static void on_answer(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(w);
    px__hreq_t *r = (px__hreq_t *)m;
    r->done(r);
}

/* Hand the answer back to its origin (or free a request nobody waits for). */
static void answer(px_hub_t *h, px__hreq_t *r)
{
    if (!r->done) {
        px__hreq_free(r);
    } else if (r->worker == PX__NO_WORKER) {
        r->done(r);
    } else {
        r->msg.cb = on_answer;
        px_worker_post(px_workers_get(h->workers, r->worker), &r->msg);
    }
}

/* ---- channels ------------------------------------------------------------------------------- */

/* Presence: one entry per listed client, in arrival order, found by client id, and grouped
 * by user so that a user with several connections is one member. Every join and leave is
 * O(1): two hash lookups and list links. A client subscribed twice at the hub (a subscribe
 * whose unsubscribe follows its answer, with the next subscribe in between) holds its entry
 * twice: `refs`. */
typedef struct user_ent user_ent_t;

typedef struct presence_ent {
    px__hentry_t e;                     /* in pres->clients; key: who.client */
    struct presence_ent *prev, *next;   /* the channel's entries, oldest first */
    struct presence_ent *uprev, *unext; /* entries of the same user, oldest first */
    user_ent_t *u;                      /* NULL: an entry without a user */
    px__presence_t who;                 /* user/info malloc'd */
    unsigned worker;
    unsigned refs; /* subscriptions of the client that listed it */
} presence_ent_t;

struct user_ent {
    px__hentry_t e; /* in pres->by_user; key: head->who.user (every entry's user is the same) */
    presence_ent_t *head, *tail;
    unsigned count;
};

typedef struct pres {
    px__hashmap_t clients, by_user;
    presence_ent_t *head, *tail;
    unsigned count; /* entries */
    unsigned users; /* distinct users; an entry without a user counts as one */
} pres_t;

/* Shared stores (h->net): a channel's state on this node. COLD: no local subscriber, so
 * this node does not follow it (epoch, last_offset and ring are hints at most). SYNCING:
 * the broker subscription is being made, then the store's head read. LIVE: epoch,
 * last_offset and ring follow the store: every message of the channel passes here in
 * offset order, committed locally or by another node. With SQLite channels stay COLD and
 * none of this is used. */
enum { CH_COLD, CH_SYNCING, CH_LIVE };

typedef struct hchan {
    px__hentry_t e;
    char name[PX__CHANNEL_MAX + 1];
    size_t name_len;
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t last_offset; /* the latest committed offset: the one clients see */
    /* Offsets a failed commit may have used (after a failed fsync the batch may still come
     * back after a crash): never given to other messages by this process, so the next
     * commit asks the store for offsets after them (a gap). 0 or <= last_offset: none. */
    uint64_t burned;
    unsigned batch_n; /* messages of this channel in the batch being committed */
    unsigned total_subs;
    unsigned fmt_subs[PX__FORMATS_MAX]; /* subscriptions per format: encode where > 0 */
    unsigned *worker_subs;              /* subscriptions per worker: deliver where > 0 */
    px_hub_msg_t **ring;                /* recent messages, ring_cap (a power of two) slots */
    uint32_t ring_start, ring_count, ring_cap;
    pres_t *pres; /* NULL while nobody is listed */
    /* several nodes (h->net) */
    px_hub_t *hub;
    uint8_t state;     /* CH_* */
    uint8_t busy;      /* a request of this channel waits for a store read: the others queue */
    uint8_t reading;   /* a gap or catch-up read is in flight */
    uint8_t resync;    /* a message of another epoch was seen: read the channel from 0 */
    uint8_t running;   /* run_waitq is on the stack: the channel must stay */
    uint8_t pres_seen; /* presence is used here: sweep the shared members (crashed nodes) */
    uint8_t kicked;    /* on the hub's kick list: run_waitq soon (the channel must stay) */
    struct hchan *kick_next;
    unsigned ops;                  /* store calls in flight that point to this channel */
    px__hreq_t *wq_head, *wq_tail; /* requests waiting for the channel, FIFO */
    px_hub_msg_t **pend;           /* committed messages past a gap, by offset */
    uint32_t npend, pend_cap;
    px_timer_t gap_timer;
    px_timer_t tail_timer; /* TAIL_CHECK_MS after the last delivery */
} hchan_t;

static hchan_t *chan_find(px_hub_t *h, const char *name, size_t len)
{
    px__hentry_t *e = px__hashmap_get(&h->channels, name, len);
    return e ? PX_CONTAINER_OF(e, hchan_t, e) : NULL;
}

static void gap_timer_cb(px_timer_t *t);
static void tail_timer_cb(px_timer_t *t);

static hchan_t *chan_new(px_hub_t *h, const char *name, size_t len, const char *epoch,
                         uint64_t last_offset)
{
    hchan_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->worker_subs = px__calloc(h->nworkers, sizeof *c->worker_subs);
    if (!c->worker_subs) {
        px__free(c);
        return NULL;
    }
    memcpy(c->name, name, len);
    c->name_len = len;
    c->hub = h;
    c->e.key = c->name;
    c->e.key_len = len;
    /* A channel the store does not hold yet has its fresh epoch: the same after it leaves
     * memory, after a restart, and in every process sharing the store. */
    if (epoch)
        snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    else if (!h->store || px__store_fresh_epoch(h->store, (px_str_t){name, len}, c->epoch) != 0)
        px__store_epoch_new(c->epoch);
    px_timer_init(&c->gap_timer, gap_timer_cb, c);
    px_timer_init(&c->tail_timer, tail_timer_cb, c);
    c->last_offset = last_offset;
    if (px__hashmap_put(&h->channels, &c->e) != 0) {
        px__free(c->worker_subs);
        px__free(c);
        return NULL;
    }
    px_metric_add(px__m_channels, 1);
    return c;
}

static hchan_t *chan_get(px_hub_t *h, const char *name, size_t len)
{
    hchan_t *c = chan_find(h, name, len);
    return c ? c : chan_new(h, name, len, NULL, 0);
}

static px_hub_msg_t *ring_at(const hchan_t *c, uint32_t i)
{
    return c->ring[(c->ring_start + i) & (c->ring_cap - 1)];
}

static void ring_pop(hchan_t *c)
{
    px_hub_msg_unref(ring_at(c, 0));
    c->ring_start = (c->ring_start + 1) & (c->ring_cap - 1);
    c->ring_count--;
}

/* Keep the latest `cap` (<= PX__RING_MAX) messages. The ring grows as messages come, so a
 * channel that gets few holds little. */
static void ring_push(hchan_t *c, px_hub_msg_t *m, size_t cap)
{
    if (cap == 0)
        return;
    if (c->ring_count >= cap)
        ring_pop(c);
    if (c->ring_count == c->ring_cap) {
        uint32_t ncap = c->ring_cap ? c->ring_cap * 2 : 4;
        px_hub_msg_t **n = px__malloc(ncap * sizeof *n);
        if (n) {
            for (uint32_t i = 0; i < c->ring_count; i++)
                n[i] = ring_at(c, i);
            px__free(c->ring);
            c->ring = n;
            c->ring_cap = ncap;
            c->ring_start = 0;
        } else if (c->ring_count) {
            /* History is still in the store (the ring is a cache), but the ring must stay a
             * run of consecutive messages, as reads trust it from its first offset on: the
             * oldest makes room. */
            ring_pop(c);
        } else {
            return;
        }
    }
    c->ring[(c->ring_start + c->ring_count) & (c->ring_cap - 1)] = px_hub_msg_ref(m);
    c->ring_count++;
}

static void presence_free(presence_ent_t *p)
{
    px__free((void *)p->who.user.ptr);
    px__free((void *)p->who.info.ptr);
    px__free(p);
}

static void pres_free(pres_t *ps)
{
    if (!ps)
        return;
    for (presence_ent_t *p = ps->head, *next; p; p = next) {
        next = p->next;
        presence_free(p);
    }
    for (px__hentry_t *e = px__hashmap_next(&ps->by_user, NULL), *next; e; e = next) {
        next = px__hashmap_next(&ps->by_user, e);
        px__free(PX_CONTAINER_OF(e, user_ent_t, e));
    }
    px__hashmap_dispose(&ps->clients);
    px__hashmap_dispose(&ps->by_user);
    px__free(ps);
}

static unsigned pres_count(const hchan_t *c)
{
    return c->pres ? c->pres->count : 0;
}

static unsigned pres_users(const hchan_t *c)
{
    return c->pres ? c->pres->users : 0;
}

/* Is `user` listed in c's presence? */
static int pres_has_user(const hchan_t *c, px_str_t user)
{
    return c->pres && user.len && px__hashmap_get(&c->pres->by_user, user.ptr, user.len) != NULL;
}

/* List `p` (its who is owned by it from now on). Returns 0 with *first (the user arrives),
 * -EEXIST (the client is listed: its entry holds one more reference; p is still the caller's)
 * or -ENOMEM (p not listed, still the caller's). */
static int pres_add(hchan_t *c, presence_ent_t *p, int *first)
{
    if (!c->pres) {
        c->pres = px__calloc(1, sizeof *c->pres);
        if (!c->pres)
            return -ENOMEM;
        px__hashmap_init(&c->pres->clients);
        px__hashmap_init(&c->pres->by_user);
    }
    pres_t *ps = c->pres;
    p->e.key = p->who.client;
    p->e.key_len = strlen(p->who.client);
    px__hentry_t *held = px__hashmap_get(&ps->clients, p->e.key, p->e.key_len);
    if (held) { /* a client is listed once per channel */
        PX_CONTAINER_OF(held, presence_ent_t, e)->refs++;
        return -EEXIST;
    }
    user_ent_t *u = NULL;
    *first = 1;
    if (p->who.user.len) {
        px__hentry_t *e = px__hashmap_get(&ps->by_user, p->who.user.ptr, p->who.user.len);
        if (e) {
            u = PX_CONTAINER_OF(e, user_ent_t, e);
            *first = 0;
        } else {
            u = px__calloc(1, sizeof *u);
            if (!u)
                return -ENOMEM;
            u->e.key = p->who.user.ptr;
            u->e.key_len = p->who.user.len;
            if (px__hashmap_put(&ps->by_user, &u->e) != 0) {
                px__free(u);
                return -ENOMEM;
            }
        }
    }
    if (px__hashmap_put(&ps->clients, &p->e) != 0) {
        if (u && !u->count) {
            px__hashmap_del(&ps->by_user, &u->e);
            px__free(u);
        }
        return -ENOMEM;
    }
    p->u = u;
    p->refs = 1;
    if (u) {
        p->uprev = u->tail;
        p->unext = NULL;
        if (u->tail)
            u->tail->unext = p;
        else
            u->head = p;
        u->tail = p;
        u->count++;
    }
    p->prev = ps->tail;
    p->next = NULL;
    if (ps->tail)
        ps->tail->next = p;
    else
        ps->head = p;
    ps->tail = p;
    ps->count++;
    ps->users += *first;
    return 0;
}

/* Drop one reference to the entry of `client`; the last one unlists it and returns it (the
 * caller frees it), with *last (the user is gone). NULL if it is not listed or still held. */
static presence_ent_t *pres_remove(hchan_t *c, const char *client, int *last)
{
    pres_t *ps = c->pres;
    if (!ps)
        return NULL;
    px__hentry_t *e = px__hashmap_get(&ps->clients, client, strlen(client));
    if (!e)
        return NULL;
    presence_ent_t *p = PX_CONTAINER_OF(e, presence_ent_t, e);
    if (--p->refs)
        return NULL;
    px__hashmap_del(&ps->clients, &p->e);
    if (p->prev)
        p->prev->next = p->next;
    else
        ps->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        ps->tail = p->prev;
    ps->count--;
    *last = 1;
    user_ent_t *u = p->u;
    if (u) {
        if (p->uprev)
            p->uprev->unext = p->unext;
        else
            u->head = p->unext;
        if (p->unext)
            p->unext->uprev = p->uprev;
        else
            u->tail = p->uprev;
        if (--u->count) {
            *last = 0;
            u->e.key = u->head->who.user.ptr; /* the same bytes: the hash does not change */
        } else {
            px__hashmap_del(&ps->by_user, &u->e);
            px__free(u);
        }
        p->u = NULL;
    }
    ps->users -= *last;
    if (!ps->count) {
        pres_free(ps);
        c->pres = NULL;
    }
    return p;
}

static void pend_clear(hchan_t *c);

static void chan_free(hchan_t *c)
{
    px_timer_stop(&c->gap_timer);
    px_timer_stop(&c->tail_timer);
    pend_clear(c);
    px__free(c->pend);
    while (c->ring_count)
        ring_pop(c);
    px__free(c->ring);
    pres_free(c->pres);
    px__free(c->worker_subs);
    px__free(c);
}

/* A channel nobody uses and that has nothing stored leaves memory, or every name ever
 * subscribed to would stay forever. It keeps its (fresh) epoch when it comes back. */
static void chan_maybe_free(px_hub_t *h, hchan_t *c)
{
    if (c->total_subs || c->pres || c->ring_count || c->burned)
        return;
    /* With SQLite an offset is the channel's memory of its history; with a shared store
     * the store keeps it and a COLD channel only needs to wait for what points to it. */
    if (h->net ? (c->state != CH_COLD || c->batch_n || c->ops || c->busy || c->wq_head ||
                  c->running || c->npend || c->kicked)
               : c->last_offset != 0)
        return;
    px__hashmap_del(&h->channels, &c->e);
    px_metric_add(px__m_channels, -1);
    chan_free(c);
}

/* ---- fan-out ------------------------------------------------------------------------------------
 */

typedef struct px__delivery {
    px_msg_t msg;
    px_hub_t *hub;
    int kind;
    px_hub_msg_t *m;      /* PX__DELIVER_MESSAGE */
    px__presence_ev_t ev; /* PX__DELIVER_PRESENCE (strings point into `bytes`) */
    px__presence_t who;
    px_slice_t *frames[PX__FORMATS_MAX];
    char bytes[];
} px__delivery_t;

void px__hub_on_delivery(px_worker_t *w, px_msg_t *m); /* client.c */

static void deliver_to_workers(px_hub_t *h, hchan_t *c, px__delivery_t *proto, size_t extra)
{
    for (unsigned i = 0; i < h->nworkers; i++) {
        if (!c->worker_subs[i])
            continue;
        /* Small and bounded (a presence event's names); a delivery that could not be made
         * would be a message lost without a word, so no memory is fatal here. */
        px__delivery_t *d = px__xmalloc(sizeof *d + extra);
        memcpy(d, proto, sizeof *d + extra);
        d->msg.cb = px__hub_on_delivery;
        if (d->kind != PX__DELIVER_MESSAGE) { /* re-point into this copy */
            size_t nl = c->name_len;
            d->ev.channel.ptr = d->bytes;
            d->ev.who = &d->who;
            d->who.user.ptr = d->who.user.len ? d->bytes + nl : NULL;
            d->who.info.ptr = d->who.info.len ? d->bytes + nl + d->who.user.len : NULL;
        } else {
            px_hub_msg_ref(d->m);
        }
        for (unsigned f = 0; f < PX__FORMATS_MAX; f++)
            if (d->frames[f])
                px_slice_ref(d->frames[f]);
        px_worker_post(px_workers_get(h->workers, i), &d->msg);
    }
}

static void fan_out(px_hub_t *h, hchan_t *c, px_hub_msg_t *m)
{
    if (!c->total_subs)
        return;
    px__delivery_t d = {.hub = h, .kind = PX__DELIVER_MESSAGE, .m = m};
    for (unsigned f = 0; f < h->nformats; f++)
        if (c->fmt_subs[f])
            d.frames[f] = msg_encoded(h, m, f);
    deliver_to_workers(h, c, &d, 0);
}

static void presence_event(px_hub_t *h, hchan_t *c, int op, const px__presence_t *who,
                           int user_edge)
{
    if (user_edge)
        for (unsigned i = 0; i < h->nobservers; i++)
            if (h->observers[i]->presence)
                h->observers[i]->presence(h->observers[i]->ctx, (px_str_t){c->name, c->name_len},
                                          op, who);
    if (!c->total_subs)
        return;
    size_t nl = c->name_len;
    size_t extra = nl + who->user.len + who->info.len; /* name | user | info */
    px__delivery_t *d = px__xcalloc(1, sizeof *d + extra);
    d->hub = h;
    d->kind = PX__DELIVER_PRESENCE;
    memcpy(d->bytes, c->name, c->name_len);
    memcpy(d->who.client, who->client, sizeof d->who.client);
    d->who.user.len = who->user.len;
    d->who.info.len = who->info.len;
    if (who->user.len)
        memcpy(d->bytes + nl, who->user.ptr, who->user.len);
    if (who->info.len)
        memcpy(d->bytes + nl + who->user.len, who->info.ptr, who->info.len);
    d->ev = (px__presence_ev_t){.op = op,
                                .channel = {d->bytes, nl},
                                .who = &d->who,
                                .user_first = op == PX__JOIN && user_edge,
                                .user_last = op == PX__LEAVE && user_edge};
    d->who.user.ptr = who->user.len ? d->bytes + nl : NULL;
    d->who.info.ptr = who->info.len ? d->bytes + nl + who->user.len : NULL;
    for (unsigned f = 0; f < h->nformats; f++)
        if (c->fmt_subs[f] && h->formats[f]->encode_presence)
            d->frames[f] = h->formats[f]->encode_presence(&d->ev, h->formats[f]->ctx);
    deliver_to_workers(h, c, d, extra);
    for (unsigned f = 0; f < PX__FORMATS_MAX; f++)
        px_slice_unref(d->frames[f]);
    px__free(d);
}

/* Tell the channel's subscribers that its history restarted (recovery-failed), in the
 * formats that can say it. */
static void gap_event(px_hub_t *h, hchan_t *c)
{
    if (!c->total_subs)
        return;
    px__delivery_t *d = px__calloc(1, sizeof *d + c->name_len);
    if (!d)
        return;
    d->hub = h;
    d->kind = PX__DELIVER_GAP;
    memcpy(d->bytes, c->name, c->name_len);
    d->ev = (px__presence_ev_t){.op = 0, .channel = {d->bytes, c->name_len}, .who = &d->who};
    int any = 0;
    for (unsigned f = 0; f < h->nformats; f++)
        if (c->fmt_subs[f] && h->formats[f]->encode_gap) {
            d->frames[f] = h->formats[f]->encode_gap((px_str_t){c->name, c->name_len}, c->epoch,
                                                     c->last_offset, h->formats[f]->ctx);
            any |= d->frames[f] != NULL;
        }
    if (any)
        deliver_to_workers(h, c, d, c->name_len);
    for (unsigned f = 0; f < PX__FORMATS_MAX; f++)
        px_slice_unref(d->frames[f]);
    px__free(d);
}

/* ---- publish: group commit ---------------------------------------------------------------------
 */

static void commit_async(px_hub_t *h);

static void commit_batch(px_defer_t *d)
{
    px_hub_t *h = d->data;
    if (h->net) {
        commit_async(h);
        return;
    }
    px__hreq_t *batch = h->batch_head;
    size_t n = h->batch_len;
    h->batch_head = h->batch_tail = NULL;
    h->batch_len = 0;
    if (!batch)
        return;

    /* The batch is as long as the clients made it: out of memory fails it, visibly. */
    px__store_msg_t *msgs = px__calloc(n, sizeof *msgs);
    px__store_assigned_t *got = px__calloc(n, sizeof *got);
    hchan_t **chans = px__calloc(n, sizeof *chans);
    if (!msgs || !got || !chans) {
        for (px__hreq_t *r = batch, *next; r; r = next) {
            next = r->next;
            hreq_error(r, 503, "internal_error", "out of memory");
            answer(h, r);
        }
        px__free(msgs);
        px__free(got);
        px__free(chans);
        return;
    }
    int64_t now = wall_ms();
    size_t i = 0, k = 0;
    for (px__hreq_t *r = batch; r; r = r->next, i++) {
        hchan_t *c = chan_get(h, r->channel, r->channel_len);
        chans[i] = c;
        r->m->time_ms = now;
        if (c) { /* the store chooses the offset (0) and knows the epoch (empty) */
            c->batch_n++;
            msgs[k++] =
                (px__store_msg_t){.channel = {c->name, c->name_len},
                                  .offset = c->burned > c->last_offset ? c->burned + c->batch_n : 0,
                                  .time_ms = now,
                                  .data = px_hub_msg_data(r->m),
                                  .event = px_hub_msg_event(r->m)};
        }
    }
    uint64_t t0 = px_now_ns();
    int rc = px__store_append_assigned(h->store, msgs, k, got);
    px_metric_add(px__m_commit_us, (int64_t)((px_now_ns() - t0) / 1000));
    px_metric_add(px__m_commits, 1);
    if (rc != 0)
        px_log(PX_LOG_ERROR, "store: commit of %zu message(s) failed: %s", k,
               px__store_errmsg(h->store));

    for (size_t j = 0; j < n; j++) {
        hchan_t *c = chans[j];
        if (c && c->batch_n) {
            if (rc != 0)
                c->burned = (c->burned > c->last_offset ? c->burned : c->last_offset) + c->batch_n;
            c->batch_n = 0;
        }
    }
    size_t cap = h->opts.history_size && h->opts.history_size < PX__RING_MAX
                     ? (size_t)h->opts.history_size
                     : PX__RING_MAX;
    i = k = 0;
    for (px__hreq_t *r = batch, *next; r; r = next, i++) {
        next = r->next;
        hchan_t *c = chans[i];
        px__store_assigned_t *sm = c ? &got[k++] : NULL;
        if (!c || rc != 0) {
            /* Nothing of the batch is visible: the channel's offset stays where it was. */
            hreq_error(r, 503, "storage_error", "the message could not be stored");
            answer(h, r);
            continue;
        }
        px_hub_msg_t *m = r->m;
        m->offset = sm->offset;
        snprintf(m->epoch, sizeof m->epoch, "%.*s", (int)sm->epoch.len, sm->epoch.ptr);
        if (strcmp(c->epoch, m->epoch) != 0) {
            /* The store started a new history (a shared store lost it): what the ring and the
             * burned offsets say belongs to the old one. */
            snprintf(c->epoch, sizeof c->epoch, "%s", m->epoch);
            while (c->ring_count)
                ring_pop(c);
            c->burned = 0;
        }
        c->last_offset = m->offset; /* offsets rise within a batch */
        px_metric_add(px__m_publishes, 1);
        ring_push(c, m, cap);
        fan_out(h, c, m);
        px__broker_publish(h->broker, m); /* other nodes (best effort: see broker.h) */
        snprintf(r->epoch, sizeof r->epoch, "%s", c->epoch);
        r->offset = m->offset;
        answer(h, r);
    }
    px__free(msgs);
    px__free(got);
    px__free(chans);
}

/* ---- history ------------------------------------------------------------------------------------
 */

/* Where read messages go, bounded by `limit` messages and `max_bytes` of their encoded
 * size; the first message always fits, so an answer makes progress whatever the bound. */
typedef struct collect {
    px_hub_t *h;
    px__hreq_t *r;
    int format; /* also encode in this format (pages), or -1 */
    size_t cap, count, limit, bytes, max_bytes;
    int cut;                      /* stopped at max_bytes */
    uint64_t last;                /* offset of the last message collected */
    const struct px__hview *view; /* shared stores: what the store answered for this request */
} collect_t;

/* Room for one more message (and its frame) in r's arrays of capacity *cap. */
static int collect_room(px__hreq_t *r, size_t *cap)
{
    if (r->nmsgs < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    px_hub_msg_t **m = px__realloc(r->msgs, ncap * sizeof *m);
    if (!m)
        return -ENOMEM;
    r->msgs = m;
    px_slice_t **f = px__realloc(r->frames, ncap * sizeof *f);
    if (!f)
        return -ENOMEM;
    r->frames = f;
    *cap = ncap;
    return 0;
}

static void collect_reset(px__hreq_t *r)
{
    for (size_t i = 0; i < r->nmsgs; i++)
        px_hub_msg_unref(r->msgs[i]);
    for (size_t i = 0; i < r->nframes; i++)
        px_slice_unref(r->frames[i]);
    r->nmsgs = r->nframes = 0;
}

/* Collect `m`. 0 to go on, 1 when the bounds are reached (m not taken), < 0 on error. */
static int collect_one(collect_t *col, px_hub_msg_t *m)
{
    if (col->limit && col->count >= col->limit)
        return 1;
    size_t est = m->data_len + m->channel_len + m->event_len + 64;
    if (col->count && col->bytes + est > col->max_bytes) {
        col->cut = 1;
        return 1;
    }
    if (collect_room(col->r, &col->cap) != 0)
        return -ENOMEM;
    if (col->format >= 0 && col->h->formats[col->format]->encode) {
        px_slice_t *s = msg_encoded(col->h, m, (unsigned)col->format);
        if (!s)
            return -ENOMEM;
        col->r->frames[col->r->nframes++] = px_slice_ref(s);
    }
    col->r->msgs[col->r->nmsgs++] = px_hub_msg_ref(m);
    col->bytes += est;
    col->last = m->offset;
    col->count++;
    return 0;
}

typedef struct row_ctx {
    collect_t *col;
    const hchan_t *c;
} row_ctx_t;

static int store_row(void *ud, const px__store_msg_t *sm)
{
    row_ctx_t *x = ud;
    px_hub_msg_t *m =
        px__hub_msg_new((px_str_t){x->c->name, x->c->name_len}, sm->event, sm->data, 0);
    if (!m)
        return -ENOMEM;
    m->offset = sm->offset;
    m->time_ms = sm->time_ms;
    snprintf(m->epoch, sizeof m->epoch, "%s", x->c->epoch);
    int r = collect_one(x->col, m);
    px_hub_msg_unref(m);
    return r;
}

/* --history-ttl applies to the ring as to the store (store_sqlite.c trim_ttl: time_ms <
 * now - ttl is expired): drop expired entries, oldest first, before the ring answers, or
 * it would serve messages the store no longer has. */
static void ring_expire(px_hub_t *h, hchan_t *c)
{
    uint64_t ttl = h->opts.history_ttl_ms;
    if (!ttl || ttl >= (uint64_t)INT64_MAX)
        return;
    int64_t cutoff = wall_ms() - (int64_t)ttl;
    while (c->ring_count && ring_at(c, 0)->time_ms < cutoff)
        ring_pop(c);
}

static int view_complete(const hchan_t *c, const struct px__hview *v, uint64_t since);
static int view_read(px_hub_t *h, hchan_t *c, uint64_t since, collect_t *col);

/* Does history still hold everything after `since`? 1 yes, 0 no, < 0 error. */
static int history_complete(px_hub_t *h, hchan_t *c, uint64_t since, const struct px__hview *v)
{
    ring_expire(h, c);
    if (h->net && v)
        return view_complete(c, v, since);
    if (since >= c->last_offset)
        return 1;
    if (c->ring_count && ring_at(c, 0)->offset <= since + 1)
        return 1;
    if (h->net)
        return view_complete(c, v, since);
    uint64_t earliest = 0;
    int r = px__store_earliest(h->store, (px_str_t){c->name, c->name_len}, &earliest);
    if (r == -ENOENT)
        return 0; /* nothing stored, yet the channel has an offset: lost */
    return r ? r : since + 1 >= earliest;
}

/* Messages of `c` with offset > since, within col's bounds. Returns 1 if complete (nothing
 * after `since` is missing from history), 0 if history no longer reaches back that far,
 * < 0 on error. `since` at or past the channel's offset reads nothing (complete). */
static int read_history(px_hub_t *h, hchan_t *c, uint64_t since, collect_t *col)
{
    ring_expire(h, c);
    if (h->net && col->view) /* the store answered: it may hold more than the ring (a gap) */
        return view_read(h, c, since, col);
    if (since >= c->last_offset)
        return 1;
    if (c->ring_count && ring_at(c, 0)->offset <= since + 1) {
        for (uint32_t i = 0; i < c->ring_count; i++) {
            px_hub_msg_t *m = ring_at(c, i);
            if (m->offset <= since)
                continue;
            int r = collect_one(col, m);
            if (r)
                return r < 0 ? r : 1;
        }
        return 1;
    }
    if (h->net)
        return view_read(h, c, since, col);
    int complete = history_complete(h, c, since, NULL);
    if (complete < 0)
        return complete;
    row_ctx_t x = {col, c};
    int r = px__store_read(h->store, (px_str_t){c->name, c->name_len}, since,
                           col->limit ? col->limit - col->count : 0, store_row, &x);
    return r ? r : complete;
}

/* ---- requests
 * ------------------------------------------------------------------------------------ */

/* After a catch-up read: `final` once the answer reaches the channel's offset (deliveries
 * take over from there: the worker's mailbox is FIFO). */
static void page_result(px__hreq_t *r, const hchan_t *c, const collect_t *col, uint64_t since)
{
    r->page_last = col->count ? col->last : since;
    r->final = r->page_last >= c->last_offset;
}

/* Append the format's gap frame to r's replay. -ENOMEM if it could not be made: the client
 * must not go on as if nothing were missing. */
static int add_gap(px_hub_t *h, px__hreq_t *r, hchan_t *c)
{
    const px__hformat_t *f = h->formats[r->format];
    if (!f->encode_gap)
        return 0;
    px_slice_t **fr = px__realloc(r->frames, (r->nframes + 1) * sizeof *fr);
    if (!fr)
        return -ENOMEM;
    r->frames = fr;
    px_slice_t *s =
        f->encode_gap((px_str_t){c->name, c->name_len}, c->epoch, c->last_offset, f->ctx);
    if (!s)
        return -ENOMEM;
    r->frames[r->nframes++] = s;
    return 0;
}

/* Copy c's members into r->pres (in r's arena): every entry, or one per user (its earliest
 * entry) with `by_user`. 0 or -ENOMEM. */
static int fill_members(const hchan_t *c, px__hreq_t *r, int by_user)
{
    r->users = pres_users(c);
    unsigned n = by_user ? pres_users(c) : pres_count(c);
    if (!n)
        return 0;
    r->pres = px__arena_alloc(&r->arena, n * sizeof *r->pres);
    if (!r->pres)
        return -ENOMEM;
    for (presence_ent_t *p = c->pres->head; p; p = p->next) {
        if (by_user && p->u && p->u->head != p)
            continue;
        px__presence_t *o = &r->pres[r->npres++];
        memcpy(o->client, p->who.client, sizeof o->client);
        o->user = (px_str_t){
            p->who.user.len ? px__arena_memdup(&r->arena, p->who.user.ptr, p->who.user.len) : NULL,
            p->who.user.len};
        o->info = (px_str_t){
            p->who.info.len ? px__arena_memdup(&r->arena, p->who.info.ptr, p->who.info.len) : NULL,
            p->who.info.len};
        if ((o->user.len && !o->user.ptr) || (o->info.len && !o->info.ptr))
            return -ENOMEM;
    }
    return 0;
}

/* A subscription that could not be made for want of memory: 503, not counted (the origin
 * forgets it). */
static void sub_refuse_oom(px_hub_t *h, px__hreq_t *r, hchan_t *c)
{
    collect_reset(r);
    hreq_error(r, 503, "internal_error", "out of memory");
    chan_maybe_free(h, c);
    answer(h, r);
}

static int net_needs_read(px_hub_t *h, hchan_t *c, uint64_t since);
static void net_presence_add(px_hub_t *h, hchan_t *c, const presence_ent_t *p);
static void net_presence_remove(px_hub_t *h, hchan_t *c, const presence_ent_t *p);
static void suspend(px_hub_t *h, hchan_t *c, px__hreq_t *r, uint64_t since, size_t limit);
static void net_chan_cold(px_hub_t *h, hchan_t *c);

static void do_subscribe(px_hub_t *h, px__hreq_t *r)
{
    hchan_t *c = r->format < h->nformats ? chan_get(h, r->channel, r->channel_len) : NULL;
    if (!c) {
        hreq_error(r, 503, "internal_error", "out of memory");
        answer(h, r);
        return;
    }
    /* A bound on members refuses a new user, never another connection of a listed one. */
    if (r->in_presence && r->presence_max && pres_users(c) >= r->presence_max &&
        !pres_has_user(c, r->who.user)) {
        hreq_error(r, 403, "too_many_members", "the channel has its maximum of members");
        chan_maybe_free(h, c);
        answer(h, r);
        return;
    }
    /* A shared store: what the ring cannot answer is read first (nothing counted yet; the
     * request runs again with the answer in r->view). */
    if (h->net && r->has_since && !r->view &&
        (!r->since_epoch[0] || strcmp(r->since_epoch, c->epoch) == 0) &&
        r->since_offset <= c->last_offset && net_needs_read(h, c, r->since_offset)) {
        suspend(h, c, r, r->since_offset, r->max_bytes ? NET_READ_ROWS : 0);
        return;
    }

    /* Recovery: the epoch must match and history must still hold everything after `since`;
     * a `since` past the channel's offset is not ours to vouch for. The replay goes out in
     * pages as the client's connection drains (PAGE requests), so a long backlog neither
     * overflows its output budget nor occupies this thread in one go. */
    collect_t col = {
        .h = h, .r = r, .format = r->format, .max_bytes = r->max_bytes, .view = r->view};
    uint64_t since = c->last_offset;
    if (r->has_since) {
        if ((r->since_epoch[0] && strcmp(r->since_epoch, c->epoch) != 0) ||
            r->since_offset > c->last_offset) {
            r->recovered = 0;
        } else if (r->max_bytes == 0) {
            /* Nothing replayed now; whether history still reaches back is checked alone. */
            int rr = history_complete(h, c, r->since_offset, r->view);
            r->recovered = rr == 1;
            if (rr == 1)
                since = r->since_offset;
        } else {
            int rr = read_history(h, c, r->since_offset, &col);
            r->recovered = rr == 1;
            if (rr == 1) {
                since = r->since_offset;
            } else {
                collect_reset(r);
                col.count = 0;
            }
        }
        if (r->recovered == 0 && h->formats[r->format]->gap_on_subscribe && add_gap(h, r, c) != 0) {
            sub_refuse_oom(h, r, c);
            return;
        }
    }
    /* Presence: listed before the subscription counts, so that out of memory refuses it
     * (503) instead of leaving a member out, or its member list short, without a word. The
     * others hear of it after the answer is queued (the joiner's own event follows it). */
    presence_ent_t *p = NULL;
    int first = 0, listed = 0;
    if (r->in_presence) {
        p = px__calloc(1, sizeof *p);
        int rc = -ENOMEM;
        if (p) {
            p->who = r->who;
            p->worker = r->worker;
            rc = pres_add(c, p, &first);
        }
        if (rc == 0) {
            r->who.user = r->who.info = (px_str_t){NULL, 0}; /* p owns them now */
        } else {
            px__free(p); /* -EEXIST: the client is listed already, nothing to tell */
            p = NULL;
            if (c->pres && !c->pres->count) {
                pres_free(c->pres);
                c->pres = NULL;
            }
        }
        if (rc == -ENOMEM) {
            sub_refuse_oom(h, r, c);
            return;
        }
        listed = 1;
    }
    if (r->want_list && fill_members(c, r, 1) != 0) {
        r->npres = 0;
        r->pres = NULL;
        int last;
        presence_ent_t *gone = listed ? pres_remove(c, r->who.client, &last) : NULL;
        if (gone) /* its reference was the only one: nobody was told of it yet */
            presence_free(gone);
        sub_refuse_oom(h, r, c);
        return;
    }
    /* Counted after the recovery read (nothing runs in between on this thread): deliveries of
     * every later commit reach the worker after this answer. */
    c->worker_subs[r->worker]++;
    if (c->total_subs++ == 0) {
        if (!h->net) /* net: the channel subscribed when it synced */
            px__broker_subscribe(h->broker, (px_str_t){c->name, c->name_len});
        observe_occupied(h, c->name, c->name_len, 1);
    }
    c->fmt_subs[r->format]++;
    page_result(r, c, &col, since);
    snprintf(r->epoch, sizeof r->epoch, "%s", c->epoch);
    r->offset = c->last_offset;
    if (r->want_last && !r->has_since && c->last_offset) {
        /* The latest message, neutral (no frame): the origin replays it itself. */
        collect_t last = {.h = h, .r = r, .format = -1, .limit = 1, .max_bytes = SIZE_MAX};
        if (read_history(h, c, c->last_offset - 1, &last) < 0)
            collect_reset(r);
    }

    r->users = pres_users(c);
    answer(h, r);
    if (p) {
        /* Other nodes first: whoever hears of this join here and then subscribes
         * elsewhere must not receive it there after its own subscription. */
        net_presence_add(h, c, p);
        presence_event(h, c, PX__JOIN, &p->who, first);
    }
}

/* The next catch-up page of a counted subscription. If history was trimmed past the
 * subscription's position meanwhile, the client is told (a gap) and goes live. */
static void do_page(px_hub_t *h, px__hreq_t *r)
{
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    if (!c) { /* cannot be: the subscription holds the channel */
        r->final = 1;
        answer(h, r);
        return;
    }
    if (h->net && !r->view && net_needs_read(h, c, r->since_offset)) {
        suspend(h, c, r, r->since_offset, NET_READ_ROWS);
        return;
    }
    collect_t col = {
        .h = h, .r = r, .format = r->format, .max_bytes = r->max_bytes, .view = r->view};
    int rr = read_history(h, c, r->since_offset, &col);
    if (rr < 0) {
        collect_reset(r);
        hreq_error(r, 503, "storage_error", "history could not be read");
    } else if (rr == 0) {
        collect_reset(r);
        col.count = 0;
        if (add_gap(h, r, c) != 0) {
            collect_reset(r);
            hreq_error(r, 503, "internal_error", "out of memory");
        } else {
            page_result(r, c, &col, c->last_offset);
        }
    } else {
        page_result(r, c, &col, r->since_offset);
    }
    snprintf(r->epoch, sizeof r->epoch, "%s", c->epoch);
    r->offset = c->last_offset;
    answer(h, r);
}

static void do_unsubscribe(px_hub_t *h, px__hreq_t *r)
{
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    if (c) {
        if (c->worker_subs[r->worker])
            c->worker_subs[r->worker]--;
        if (c->total_subs && --c->total_subs == 0) {
            if (h->net)
                net_chan_cold(h, c);
            else
                px__broker_unsubscribe(h->broker, (px_str_t){c->name, c->name_len});
            observe_occupied(h, c->name, c->name_len, 0);
        }
        if (r->format < PX__FORMATS_MAX && c->fmt_subs[r->format])
            c->fmt_subs[r->format]--;
        if (r->in_presence) {
            int last = 0;
            presence_ent_t *p = pres_remove(c, r->who.client, &last);
            if (p) {
                presence_event(h, c, PX__LEAVE, &p->who, last);
                net_presence_remove(h, c, p);
                presence_free(p);
            }
        }
        chan_maybe_free(h, c);
    }
    answer(h, r);
}

/* History: messages (neutral, referenced) after `since`, at most `limit` and `max_bytes`. */
static void net_history(px_hub_t *h, hchan_t *c, px__hreq_t *r);
static uint64_t view_head(const struct px__hview *v);

static void do_history(px_hub_t *h, px__hreq_t *r)
{
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    if (h->net && c && c->state != CH_LIVE) {
        net_history(h, c, r); /* nobody follows it here: the store answers */
        return;
    }
    if (h->net && c && !r->view && net_needs_read(h, c, r->since_offset)) {
        suspend(h, c, r, r->since_offset, r->limit ? r->limit : NET_READ_ROWS);
        return;
    }
    int complete = 1;
    collect_t col = {.h = h,
                     .r = r,
                     .format = -1,
                     .limit = r->limit,
                     .max_bytes = r->max_bytes,
                     .view = r->view};
    if (c) {
        int rr = read_history(h, c, r->since_offset, &col);
        if (rr < 0) {
            collect_reset(r);
            hreq_error(r, 503, "storage_error", "history could not be read");
            answer(h, r);
            return;
        }
        complete = rr == 1;
        snprintf(r->epoch, sizeof r->epoch, "%s", c->epoch);
        r->offset = c->last_offset;
        if (h->net && view_head(r->view) > r->offset) /* committed, still behind a gap here */
            r->offset = view_head(r->view);
    }
    r->page_last = col.count ? col.last : r->since_offset;
    r->truncated = !complete;
    /* More to come only if the answer was cut and the channel has messages past it. */
    r->more = col.cut && c && r->page_last < r->offset;
    answer(h, r);
}

static int net_presence(px_hub_t *h, px__hreq_t *r);

static void do_presence(px_hub_t *h, px__hreq_t *r)
{
    if (h->net && net_presence(h, r) == 0)
        return; /* every node's members, answered when the broker has them */
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    r->subscribers = c ? c->total_subs : 0;
    if (c && fill_members(c, r, r->by_user) != 0)
        hreq_error(r, 503, "internal_error", "out of memory");
    if (c && r->want_last && c->last_offset) {
        collect_t last = {.h = h, .r = r, .format = -1, .limit = 1, .max_bytes = SIZE_MAX};
        if (read_history(h, c, c->last_offset - 1, &last) < 0)
            collect_reset(r);
    }
    if (c)
        r->offset = c->last_offset;
    answer(h, r);
}

/* Channels with subscribers. */
static void do_channels(px_hub_t *h, px__hreq_t *r)
{
    size_t n = 0;
    for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL); e;
         e = px__hashmap_next(&h->channels, e))
        n += PX_CONTAINER_OF(e, hchan_t, e)->total_subs > 0;
    r->chans = n ? px__arena_alloc(&r->arena, n * sizeof *r->chans) : NULL;
    if (n && !r->chans) {
        hreq_error(r, 503, "internal_error", "out of memory");
        answer(h, r);
        return;
    }
    for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL); e;
         e = px__hashmap_next(&h->channels, e)) {
        hchan_t *c = PX_CONTAINER_OF(e, hchan_t, e);
        if (!c->total_subs)
            continue;
        px__chaninfo_t *o = &r->chans[r->nchans++];
        memcpy(o->name, c->name, c->name_len + 1);
        o->name_len = c->name_len;
        memcpy(o->epoch, c->epoch, sizeof o->epoch);
        o->offset = c->last_offset;
        o->subscribers = c->total_subs;
        o->presence = pres_count(c);
        o->users = pres_users(c);
    }
    answer(h, r);
}

static void do_read(px_hub_t *h, px__hreq_t *r)
{
    switch (r->type) {
    case PX__HREQ_HISTORY: do_history(h, r); break;
    case PX__HREQ_PAGE: do_page(h, r); break;
    case PX__HREQ_PRESENCE: do_presence(h, r); break;
    case PX__HREQ_CHANNELS: do_channels(h, r); break;
    default: answer(h, r); break;
    }
}

/* Reads wait behind the commit of the publishes that arrived with them and take a bounded
 * slice of each loop iteration: a publish never waits for a queue of bulk reads, only for
 * the slice in progress. Each read is itself bounded (max_bytes). */
#define READ_SLICE_NS (2 * 1000 * 1000)

static void net_submit(px_hub_t *h, px__hreq_t *r);

/* Answer queued reads for up to `budget_ns` (0: all). Returns 1 if some are left. */
static int drain_reads(px_hub_t *h, uint64_t budget_ns)
{
    uint64_t t0 = px_now_ns();
    while (h->rq_head) {
        px__hreq_t *r = h->rq_head;
        h->rq_head = r->next;
        if (!h->rq_head)
            h->rq_tail = NULL;
        r->next = NULL;
        if (h->net && (r->type == PX__HREQ_HISTORY || r->type == PX__HREQ_PAGE))
            net_submit(h, r);
        else
            do_read(h, r);
        if (budget_ns && h->rq_head && px_now_ns() - t0 > budget_ns)
            return 1;
    }
    return 0;
}

static void run_reads(px_defer_t *d)
{
    px_hub_t *h = d->data;
    if (h->batch_head)
        commit_batch(&h->commit_defer);
    if (drain_reads(h, READ_SLICE_NS)) /* the rest in the next iteration, after its mailbox */
        px_defer(px_worker_loop(px_workers_get(h->actor, 0)), &h->read_defer);
}

static void on_request(px_worker_t *w, px_msg_t *m)
{
    px__hreq_t *r = (px__hreq_t *)m;
    px_hub_t *h = px_worker_get_data(w);
    r->next = NULL;
    switch (r->type) {
    case PX__HREQ_PUBLISH:
        if (h->batch_tail)
            h->batch_tail->next = r;
        else
            h->batch_head = r;
        h->batch_tail = r;
        h->batch_len++;
        /* Runs after this mailbox drain: everything that arrived together commits together. */
        px_defer(px_worker_loop(w), &h->commit_defer);
        return;
    case PX__HREQ_SUBSCRIBE:
        /* In arrival order with publishes: a subscribe sent before a publish counts before
         * that publish fans out. Its replay is one bounded page. */
        if (h->net)
            net_submit(h, r);
        else
            do_subscribe(h, r);
        return;
    case PX__HREQ_UNSUBSCRIBE:
        if (h->net)
            net_submit(h, r);
        else
            do_unsubscribe(h, r);
        return;
    default:
        if (h->rq_tail)
            h->rq_tail->next = r;
        else
            h->rq_head = r;
        h->rq_tail = r;
        px_defer(px_worker_loop(w), &h->read_defer);
        return;
    }
}

void px__hub_post(px_hub_t *h, px__hreq_t *r)
{
    r->msg.cb = on_request;
    px_worker_post(px_workers_get(h->actor, 0), &r->msg);
}

/* ---- several nodes: a shared, asynchronous store ----------------------------------------------
 *
 * The store (Redis, PostgreSQL) assigns offsets for every node and answers later, on this
 * thread's loop: the hub never waits for it. Ordering stays per channel:
 *  - a LIVE channel (one with local subscribers, followed through the broker) delivers its
 *    messages in offset order whoever committed them: a message past a gap waits in `pend`
 *    (GAP_GRACE_MS for the broker to bring the missing ones, then they are read from the
 *    store); one at or below last_offset is a duplicate and dropped;
 *  - requests of a channel (subscribe, unsubscribe, page, history) run in arrival order: while
 *    one waits for a store read (`busy`) or for the channel to sync, the later ones queue
 *    (`wq`); other channels go on. A request that needs the store is suspended before it
 *    changes anything and runs again with the answer (r->view);
 *  - group commits stay one batch for every channel (one round trip), COMMITS_INFLIGHT at once;
 *    an acknowledgement still waits for the commit. */

typedef struct px__hview {
    int status;
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t last, first;
    px_hub_msg_t **msgs; /* rows read, as messages of the channel */
    size_t n;
    int full; /* the read stopped at its row limit: more may follow */
} hview_t;

static px_loop_t *hub_loop(px_hub_t *h)
{
    return px_worker_loop(px_workers_get(h->actor, 0));
}

static size_t ring_cap_opt(const px_hub_t *h)
{
    return h->opts.history_size && h->opts.history_size < PX__RING_MAX
               ? (size_t)h->opts.history_size
               : PX__RING_MAX;
}

static int str_is(px_str_t a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.ptr, b, a.len) == 0;
}

static void ring_clear(hchan_t *c)
{
    while (c->ring_count)
        ring_pop(c);
}

static void pend_clear(hchan_t *c)
{
    for (uint32_t i = 0; i < c->npend; i++)
        px_hub_msg_unref(c->pend[i]);
    c->npend = 0;
}

/* Keep m (by offset, once) if it is past `base`. */
static void pend_insert(hchan_t *c, px_hub_msg_t *m, uint64_t base)
{
    if (m->offset <= base)
        return;
    uint32_t i = c->npend;
    while (i && c->pend[i - 1]->offset > m->offset)
        i--;
    if (i && c->pend[i - 1]->offset == m->offset)
        return;
    if (c->npend == PEND_MAX) { /* give the oldest gap up rather than grow without bound */
        px_log(PX_LOG_WARN, "hub: %.*s: %u messages behind a gap, skipping it", (int)c->name_len,
               c->name, c->npend);
        c->last_offset = c->pend[0]->offset - 1;
        ring_clear(c);
        return;
    }
    if (c->npend == c->pend_cap) {
        uint32_t ncap = c->pend_cap ? c->pend_cap * 2 : 8;
        px_hub_msg_t **n = px__realloc(c->pend, ncap * sizeof *n);
        if (!n)
            return; /* the store still has it: a gap read brings it */
        c->pend = n;
        c->pend_cap = ncap;
    }
    memmove(c->pend + i + 1, c->pend + i, (c->npend - i) * sizeof *c->pend);
    c->pend[i] = px_hub_msg_ref(m);
    c->npend++;
}

static void gap_read(px_hub_t *h, hchan_t *c);

/* Run the channel's waiting requests from a deferred callback: the caller may still be
 * using the channel (run_waitq may free it). */
static void kick(px_hub_t *h, hchan_t *c)
{
    if (c->kicked)
        return;
    c->kicked = 1;
    c->kick_next = h->kick_head;
    h->kick_head = c;
    px_defer(hub_loop(h), &h->kick_defer);
}

static void run_waitq(px_hub_t *h, hchan_t *c);

static void kick_run(px_defer_t *d)
{
    px_hub_t *h = d->data;
    while (h->kick_head) {
        hchan_t *c = h->kick_head;
        h->kick_head = c->kick_next;
        c->kicked = 0;
        run_waitq(h, c);
    }
}

/* Deliver what follows last_offset without a hole; arm the gap timer if a hole is left. */
static void deliver_ready(px_hub_t *h, hchan_t *c)
{
    size_t cap = ring_cap_opt(h);
    uint32_t i = 0;
    while (i < c->npend && c->pend[i]->offset <= c->last_offset + 1) {
        px_hub_msg_t *m = c->pend[i++];
        if (m->offset == c->last_offset + 1) {
            c->last_offset = m->offset;
            ring_push(c, m, cap);
            fan_out(h, c, m);
            px_timer_start(hub_loop(h), &c->tail_timer, TAIL_CHECK_MS);
        }
        px_hub_msg_unref(m);
    }
    if (i) {
        memmove(c->pend, c->pend + i, (c->npend - i) * sizeof *c->pend);
        c->npend -= i;
    }
    if (!c->npend) {
        px_timer_stop(&c->gap_timer);
        if (c->wq_head) /* subscribes waited for the hole to close */
            kick(h, c);
    } else if (!c->reading && !px_timer_active(&c->gap_timer)) {
        px_timer_start(hub_loop(h), &c->gap_timer, GAP_GRACE_MS);
    }
}

/* A committed message of channel c (this node's or another's). */
static void net_accept(px_hub_t *h, hchan_t *c, px_hub_msg_t *m)
{
    if (c->state == CH_COLD)
        return;
    if (c->state == CH_SYNCING) { /* sorted out when the head read answers */
        pend_insert(c, m, 0);
        return;
    }
    if (strcmp(m->epoch, c->epoch) != 0) {
        /* The store restarted the channel (its stream was lost): follow it from 0. */
        c->resync = 1;
        gap_read(h, c);
        return;
    }
    if (m->offset <= c->last_offset)
        return; /* a duplicate */
    pend_insert(c, m, c->last_offset);
    deliver_ready(h, c);
}

static px_hub_msg_t *row_msg(const hchan_t *c, const px__store_msg_t *sm, const char *epoch)
{
    /* The event name where the store keeps it (SQLite); network stores leave it empty. */
    px_hub_msg_t *m = px__hub_msg_new((px_str_t){c->name, c->name_len}, sm->event, sm->data, 0);
    if (!m)
        return NULL;
    m->offset = sm->offset;
    m->time_ms = sm->time_ms;
    snprintf(m->epoch, sizeof m->epoch, "%s", epoch);
    return m;
}

static void set_epoch(hchan_t *c, px_str_t e)
{
    size_t n = e.len < PX__EPOCH_MAX ? e.len : PX__EPOCH_MAX;
    memcpy(c->epoch, e.ptr, n);
    c->epoch[n] = '\0';
}

static void gap_done(void *ud, const px__store_view_t *v)
{
    hchan_t *c = ud;
    px_hub_t *h = c->hub;
    c->reading = 0;
    c->ops--;
    px_metric_add(m_gap_reads, 1);
    if (c->state != CH_LIVE || h->closing) {
        chan_maybe_free(h, c);
        return;
    }
    if (v->status) {
        px_timer_start(hub_loop(h), &c->gap_timer, GAP_RETRY_MS);
        return;
    }
    int was_resync = c->resync;
    c->resync = 0;
    if (!str_is(v->epoch, c->epoch)) {
        /* A new history in the store: so here. Subscribers see the new epoch on the next
         * messages; clients recovering from the old one get recovery-failed. */
        px_log(PX_LOG_WARN, "hub: %.*s: the store has a new epoch %.*s (was %s)", (int)c->name_len,
               c->name, (int)v->epoch.len, v->epoch.ptr, c->epoch);
        set_epoch(c, v->epoch);
        c->last_offset = 0;
        ring_clear(c);
        pend_clear(c);
        gap_event(h, c);
        if (!was_resync) { /* rows were read after the old offset: read from 0 */
            c->resync = 1;
            gap_read(h, c);
            return;
        }
    }
    if (v->first_offset > c->last_offset + 1) {
        /* Retention removed what we had not seen: what is gone is gone, go on from there. */
        c->last_offset = v->first_offset - 1;
        ring_clear(c);
    }
    for (size_t i = 0; i < v->n; i++) {
        px_hub_msg_t *m = row_msg(c, &v->msgs[i], c->epoch);
        if (!m)
            break;
        pend_insert(c, m, c->last_offset);
        px_hub_msg_unref(m);
    }
    deliver_ready(h, c);
    if (c->npend) {
        if (v->n >= NET_READ_ROWS) {
            gap_read(h, c);
        } else if (v->last_offset + 1 >= c->pend[0]->offset) {
            /* The store held everything before the next message and gave nothing in
             * between: the hole is not in the store (trimmed), skip it. */
            c->last_offset = c->pend[0]->offset - 1;
            ring_clear(c);
            deliver_ready(h, c);
        }
    } else if (v->last_offset > c->last_offset) {
        gap_read(h, c); /* catching up: more than one read's worth */
    }
}

/* Read what follows last_offset from the store (a gap, a catch-up after a reconnect, or a
 * new epoch), one read per channel at a time. */
static void gap_read(px_hub_t *h, hchan_t *c)
{
    if (c->reading || c->state != CH_LIVE || h->closing)
        return;
    px_timer_stop(&c->gap_timer);
    int r = h->store->ops->read_async(h->store, (px_str_t){c->name, c->name_len},
                                      c->resync ? 0 : c->last_offset, NET_READ_ROWS, gap_done, c);
    if (r) {
        px_timer_start(hub_loop(h), &c->gap_timer, GAP_RETRY_MS);
        return;
    }
    c->reading = 1;
    c->ops++;
}

static void gap_timer_cb(px_timer_t *t)
{
    hchan_t *c = t->data;
    gap_read(c->hub, c);
}

static void tail_timer_cb(px_timer_t *t)
{
    hchan_t *c = t->data;
    if (c->reading) /* that read may have started before the missing commit */
        px_timer_start(hub_loop(c->hub), &c->tail_timer, TAIL_CHECK_MS);
    else if (!c->npend) /* with a hole the gap timer reads already */
        gap_read(c->hub, c);
}

/* ---- requests of a channel, in order --------------------------------------------------------- */

static int needs_live(const px__hreq_t *r)
{
    return r->type == PX__HREQ_SUBSCRIBE || r->type == PX__HREQ_PAGE;
}

static void chan_sync(px_hub_t *h, hchan_t *c);

static void dispatch_chan(px_hub_t *h, px__hreq_t *r)
{
    switch (r->type) {
    case PX__HREQ_SUBSCRIBE: do_subscribe(h, r); break;
    case PX__HREQ_UNSUBSCRIBE: do_unsubscribe(h, r); break;
    case PX__HREQ_PAGE: do_page(h, r); break;
    case PX__HREQ_HISTORY: do_history(h, r); break;
    default: do_read(h, r); break;
    }
}

/* Run the channel's queued requests while it can. May free c (the caller's last use). */
static void run_waitq(px_hub_t *h, hchan_t *c)
{
    if (c->running)
        return;
    c->running = 1;
    while (c->wq_head && !c->busy) {
        px__hreq_t *r = c->wq_head;
        if (needs_live(r) && c->state != CH_LIVE) {
            if (c->state == CH_COLD)
                chan_sync(h, c); /* answers the waiting ones with an error if it fails */
            if (c->state != CH_COLD)
                break;
            continue;
        }
        if (needs_live(r) && c->npend) {
            /* Messages wait behind a hole: a subscription answered now would get them
             * twice (in its replay and live). Close the hole first: read it now. */
            gap_read(h, c);
            break;
        }
        c->wq_head = r->next;
        if (!c->wq_head)
            c->wq_tail = NULL;
        r->next = NULL;
        dispatch_chan(h, r);
    }
    c->running = 0;
    /* A channel synced for subscribes that all failed or left has no reason to follow. */
    if (c->state == CH_LIVE && !c->total_subs && !c->wq_head && !c->busy)
        net_chan_cold(h, c);
    chan_maybe_free(h, c);
}

static void net_submit(px_hub_t *h, px__hreq_t *r)
{
    hchan_t *c = r->type == PX__HREQ_UNSUBSCRIBE ? chan_find(h, r->channel, r->channel_len)
                                                 : chan_get(h, r->channel, r->channel_len);
    if (!c) {
        dispatch_chan(h, r); /* answers it (unknown channel, or out of memory) */
        return;
    }
    r->next = NULL;
    if (c->wq_tail)
        c->wq_tail->next = r;
    else
        c->wq_head = r;
    c->wq_tail = r;
    run_waitq(h, c);
}

/* The ring cannot answer after `since`: the store must (LIVE channels). */
static int net_needs_read(px_hub_t *h, hchan_t *c, uint64_t since)
{
    ring_expire(h, c);
    /* Messages held behind a gap are committed (maybe acknowledged): only the store has
     * everything then. */
    if (c->npend)
        return 1;
    return since < c->last_offset && !(c->ring_count && ring_at(c, 0)->offset <= since + 1);
}

static void hview_free(hview_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        px_hub_msg_unref(v->msgs[i]);
    px__free(v->msgs);
    px__free(v);
}

static hview_t *hview_make(const hchan_t *c, const px__store_view_t *sv, size_t limit)
{
    hview_t *v = px__xcalloc(1, sizeof *v);
    v->status = sv->status;
    if (v->status)
        return v;
    size_t n = sv->epoch.len < PX__EPOCH_MAX ? sv->epoch.len : PX__EPOCH_MAX;
    memcpy(v->epoch, sv->epoch.ptr, n);
    v->last = sv->last_offset;
    v->first = sv->first_offset;
    v->full = limit && sv->n >= limit;
    if (sv->n) {
        v->msgs = px__calloc(sv->n, sizeof *v->msgs);
        if (!v->msgs) {
            v->status = -ENOMEM;
            return v;
        }
    }
    for (size_t i = 0; i < sv->n; i++) {
        v->msgs[i] = row_msg(c, &sv->msgs[i], v->epoch);
        if (!v->msgs[i]) {
            v->status = -ENOMEM;
            return v;
        }
        v->n++;
    }
    return v;
}

typedef struct susp {
    hchan_t *c;
    px__hreq_t *r;
    size_t limit;
    uint64_t t0;
} susp_t;

static void resume(px_hub_t *h, hchan_t *c, px__hreq_t *r, hview_t *v)
{
    c->busy = 0;
    r->view = v;
    if (h->closing && !v->status)
        v->status = -ESHUTDOWN;
    dispatch_chan(h, r); /* answers r: it must not be touched after */
    hview_free(v);
    run_waitq(h, c);
}

static void view_done(void *ud, const px__store_view_t *sv)
{
    susp_t *s = ud;
    hchan_t *c = s->c;
    px_hub_t *h = c->hub;
    c->ops--;
    px_metric_add(m_store_reads, 1);
    px_metric_add(m_store_read_us, (int64_t)((px_now_ns() - s->t0) / 1000));
    hview_t *v = hview_make(c, sv, s->limit);
    px__hreq_t *r = s->r;
    px__free(s);
    resume(h, c, r, v);
}

/* Read c after `since` (up to `limit` rows, 0: the channel's state only) and run r again
 * with the answer; the channel's later requests wait meanwhile. */
static void suspend(px_hub_t *h, hchan_t *c, px__hreq_t *r, uint64_t since, size_t limit)
{
    c->busy = 1;
    int rc = -ESHUTDOWN;
    susp_t *s = px__xcalloc(1, sizeof *s);
    *s = (susp_t){c, r, limit, px_now_ns()};
    if (!h->closing)
        rc = h->store->ops->read_async(h->store, (px_str_t){c->name, c->name_len}, since, limit,
                                       view_done, s);
    if (rc == 0) {
        c->ops++;
        return;
    }
    px__free(s);
    hview_t *v = px__xcalloc(1, sizeof *v);
    v->status = rc;
    /* Runs r again at once, with the error: it answers 503. The caller returns right
     * after suspend(), and run_waitq does not run twice (running). */
    c->busy = 0;
    r->view = v;
    dispatch_chan(h, r);
    hview_free(v);
}

/* The channel's last offset according to the store's answer (0 without one). */
static uint64_t view_head(const hview_t *v)
{
    return v && !v->status ? v->last : 0;
}

/* History complete after `since` according to the store's answer? */
static int view_complete(const hchan_t *c, const hview_t *v, uint64_t since)
{
    if (!v)
        return -EAGAIN;
    if (v->status)
        return v->status;
    if (strcmp(v->epoch, c->epoch) != 0)
        return 0; /* the store's history is another one */
    return since + 1 >= v->first;
}

/* read_history for a LIVE channel from the store's answer, then the ring where it joins. */
static int view_read(px_hub_t *h, hchan_t *c, uint64_t since, collect_t *col)
{
    const hview_t *v = col->view;
    int complete = view_complete(c, v, since);
    if (complete <= 0)
        return complete;
    for (size_t i = 0; i < v->n; i++) {
        if (v->msgs[i]->offset <= since)
            continue;
        int r = collect_one(col, v->msgs[i]);
        if (r)
            return r < 0 ? r : 1;
    }
    uint64_t last = col->count ? col->last : since;
    ring_expire(h, c);
    if (c->ring_count && ring_at(c, 0)->offset <= last + 1) {
        for (uint32_t i = 0; i < c->ring_count; i++) {
            px_hub_msg_t *m = ring_at(c, i);
            if (m->offset <= last)
                continue;
            int r = collect_one(col, m);
            if (r)
                return r < 0 ? r : 1;
        }
    } else if (last < (c->last_offset > v->last ? c->last_offset : v->last)) {
        col->cut = 1; /* more in the store: the next page or request reads it */
    }
    return 1;
}

/* History of a channel this node does not follow: the store's answer alone. */
static void net_history(px_hub_t *h, hchan_t *c, px__hreq_t *r)
{
    if (!r->view) {
        suspend(h, c, r, r->since_offset, r->limit ? r->limit : NET_READ_ROWS);
        return;
    }
    const hview_t *v = r->view;
    if (v->status) {
        hreq_error(r, 503, "storage_error", "history could not be read");
        answer(h, r);
        return;
    }
    collect_t col = {
        .h = h, .r = r, .format = -1, .limit = r->limit, .max_bytes = r->max_bytes, .view = v};
    int rc = 0;
    for (size_t i = 0; i < v->n && !rc; i++)
        if (v->msgs[i]->offset > r->since_offset)
            rc = collect_one(&col, v->msgs[i]);
    if (rc < 0) {
        collect_reset(r);
        hreq_error(r, 503, "internal_error", "out of memory");
        answer(h, r);
        return;
    }
    snprintf(r->epoch, sizeof r->epoch, "%s", v->epoch);
    r->offset = v->last;
    r->page_last = col.count ? col.last : r->since_offset;
    r->truncated = !(r->since_offset >= v->last || r->since_offset + 1 >= v->first);
    r->more = (col.cut || v->full) && r->page_last < v->last;
    answer(h, r);
}

/* ---- following a channel: COLD -> SYNCING -> LIVE -> COLD ------------------------------------ */

static void sync_failed(px_hub_t *h, hchan_t *c, int status)
{
    px_log(PX_LOG_WARN, "hub: %.*s: cannot follow the channel: %s", (int)c->name_len, c->name,
           px_strerror(status));
    px__broker_unsubscribe(h->broker, (px_str_t){c->name, c->name_len});
    c->state = CH_COLD;
    pend_clear(c);
    /* The requests that needed it fail fast; the others (unsubscribes) go on. */
    while (c->wq_head && needs_live(c->wq_head)) {
        px__hreq_t *r = c->wq_head;
        c->wq_head = r->next;
        if (!c->wq_head)
            c->wq_tail = NULL;
        r->next = NULL;
        hreq_error(r, 503, "storage_error", "the message backend is unavailable");
        answer(h, r);
    }
}

static void sync_done(void *ud, const px__store_view_t *v)
{
    hchan_t *c = ud;
    px_hub_t *h = c->hub;
    c->ops--;
    if (c->state != CH_SYNCING) {
        run_waitq(h, c);
        return;
    }
    if (v->status || h->closing) {
        sync_failed(h, c, v->status ? v->status : -ESHUTDOWN);
        run_waitq(h, c);
        return;
    }
    set_epoch(c, v->epoch);
    c->last_offset = v->last_offset;
    ring_clear(c);
    c->state = CH_LIVE;
    /* Messages that came while syncing: keep those of this epoch after the head. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->npend; i++) {
        px_hub_msg_t *m = c->pend[i];
        if (m->offset > c->last_offset && strcmp(m->epoch, c->epoch) == 0)
            c->pend[k++] = m;
        else
            px_hub_msg_unref(m);
    }
    c->npend = k;
    deliver_ready(h, c);
    run_waitq(h, c);
}

/* The broker subscription is in place: read where the channel is. */
static void sync_head(px_hub_t *h, hchan_t *c)
{
    int r = h->closing ? -ESHUTDOWN
                       : h->store->ops->read_async(h->store, (px_str_t){c->name, c->name_len}, 0, 0,
                                                   sync_done, c);
    if (r) {
        sync_failed(h, c, r);
        return;
    }
    c->ops++;
}

static void chan_sync(px_hub_t *h, hchan_t *c)
{
    c->state = CH_SYNCING;
    ring_clear(c);
    pend_clear(c);
    int r =
        h->closing ? -ESHUTDOWN : px__broker_subscribe(h->broker, (px_str_t){c->name, c->name_len});
    if (r) {
        sync_failed(h, c, r);
        return;
    }
    if (!h->broker->ops->confirms)
        sync_head(h, c);
}

/* The last local subscriber left: stop following. */
static void net_chan_cold(px_hub_t *h, hchan_t *c)
{
    if (c->state == CH_COLD)
        return;
    px__broker_unsubscribe(h->broker, (px_str_t){c->name, c->name_len});
    c->state = CH_COLD;
    c->resync = 0;
    c->pres_seen = 0;
    ring_clear(c);
    pend_clear(c);
    px_timer_stop(&c->gap_timer);
    px_timer_stop(&c->tail_timer);
}

static void on_broker_message(void *ud, px_hub_msg_t *m)
{
    px_hub_t *h = ud;
    hchan_t *c = chan_find(h, px__msg_channel(m), m->channel_len);
    if (!c || c->state == CH_COLD)
        return;
    px_metric_add(m_inbound, 1);
    net_accept(h, c, m);
}

static void on_broker_poke(void *ud, px_str_t channel)
{
    px_hub_t *h = ud;
    hchan_t *c = chan_find(h, channel.ptr, channel.len);
    if (c && c->state == CH_LIVE)
        gap_read(h, c);
}

static void on_broker_subscribed(void *ud, px_str_t channel, int status)
{
    px_hub_t *h = ud;
    hchan_t *c = chan_find(h, channel.ptr, channel.len);
    if (!c)
        return;
    if (c->state == CH_SYNCING) {
        if (status) {
            sync_failed(h, c, status);
            run_waitq(h, c);
        } else {
            sync_head(h, c);
            if (c->state == CH_COLD)
                run_waitq(h, c);
        }
    } else if (c->state == CH_LIVE && status == 0) {
        gap_read(h, c); /* subscribed again after a reconnect: catch up */
    }
}

/* ---- asynchronous group commit ----------------------------------------------------------------
 */

typedef struct acommit {
    px_hub_t *h;
    px__hreq_t *batch;
    size_t n, k;
    px__store_msg_t *msgs;
    hchan_t **chans;
    uint64_t t0;
    int sent;
} acommit_t;

static void commit_done(void *ud, int status, const px__store_assigned_t *got)
{
    acommit_t *a = ud;
    px_hub_t *h = a->h;
    if (a->sent) {
        h->commits_inflight--;
        px_metric_add(px__m_commit_us, (int64_t)((px_now_ns() - a->t0) / 1000));
        px_metric_add(px__m_commits, 1);
    }
    if (status) {
        px_metric_add(m_commit_failures, 1);
        px_log(PX_LOG_ERROR, "store: commit of %zu message(s) failed: %s", a->k,
               h->store ? px__store_errmsg(h->store) : "shutting down");
    }
    size_t i = 0, k = 0;
    for (px__hreq_t *r = a->batch, *next; r; r = next, i++) {
        next = r->next;
        hchan_t *c = a->chans[i];
        const px__store_assigned_t *sm = c && !status ? &got[k++] : NULL;
        if (c)
            c->batch_n--;
        if (!c || status) {
            hreq_error(r, 503, "storage_error", "the message could not be stored");
            answer(h, r);
            continue;
        }
        px_hub_msg_t *m = r->m;
        m->offset = sm->offset;
        snprintf(m->epoch, sizeof m->epoch, "%.*s", (int)sm->epoch.len, sm->epoch.ptr);
        px_metric_add(px__m_publishes, 1);
        px__broker_publish(h->broker, m);
        net_accept(h, c, m);
        snprintf(r->epoch, sizeof r->epoch, "%s", m->epoch);
        r->offset = m->offset;
        answer(h, r);
    }
    /* Channels the batch no longer holds may leave memory: each once (a channel appears
     * once per message; the first pass marks it so the second frees it once). */
    size_t nfree = 0;
    for (i = 0; i < a->n; i++) {
        hchan_t *c = a->chans[i];
        if (c && !c->batch_n) {
            c->batch_n = UINT_MAX;
            a->chans[nfree++] = c;
        }
    }
    for (i = 0; i < nfree; i++) {
        a->chans[i]->batch_n = 0;
        chan_maybe_free(h, a->chans[i]);
    }
    px__free(a->msgs);
    px__free(a->chans);
    px__free(a);
    if (h->batch_head && !h->closing)
        px_defer(hub_loop(h), &h->commit_defer);
}

static void commit_async(px_hub_t *h)
{
    if (!h->batch_head || (h->commits_inflight >= COMMITS_INFLIGHT && !h->closing))
        return; /* the commit in flight re-arms commit_defer when it completes */
    acommit_t *a = px__xcalloc(1, sizeof *a);
    a->h = h;
    a->batch = h->batch_head;
    a->n = h->batch_len;
    h->batch_head = h->batch_tail = NULL;
    h->batch_len = 0;
    a->msgs = px__xcalloc(a->n, sizeof *a->msgs);
    a->chans = px__xcalloc(a->n, sizeof *a->chans);
    int64_t now = wall_ms();
    size_t i = 0;
    for (px__hreq_t *r = a->batch; r; r = r->next, i++) {
        hchan_t *c = chan_get(h, r->channel, r->channel_len);
        a->chans[i] = c;
        r->m->time_ms = now;
        if (c) {
            c->batch_n++;
            a->msgs[a->k++] = (px__store_msg_t){.channel = {c->name, c->name_len},
                                                .time_ms = now,
                                                .data = px_hub_msg_data(r->m),
                                                .event = px_hub_msg_event(r->m)};
        }
    }
    a->t0 = px_now_ns();
    int rc = h->closing ? -ESHUTDOWN
                        : h->store->ops->append_async(h->store, a->msgs, a->k, commit_done, a);
    if (rc) {
        commit_done(a, rc, NULL); /* fail fast: the backend is down */
        return;
    }
    a->sent = 1;
    h->commits_inflight++;
}

/* ---- presence across nodes ---------------------------------------------------------------------
 * Each node lists its own members in the broker (Redis) and refreshes them every third of
 * --presence-ttl; join/leave go to the other nodes on the bus. A node that stops
 * refreshing (crashed) has its members removed by the next sweep of any node that
 * follows the channel, which announces their leave once. */

static px__broker_member_t member_of(const presence_ent_t *p)
{
    return (px__broker_member_t){{p->who.client, strlen(p->who.client)}, p->who.user, p->who.info};
}

static void net_presence_add(px_hub_t *h, hchan_t *c, const presence_ent_t *p)
{
    if (!h->net || h->closing || !h->broker->ops->presence_add)
        return;
    c->pres_seen = 1;
    px__broker_member_t m = member_of(p);
    h->broker->ops->presence_add(h->broker, (px_str_t){c->name, c->name_len}, &m,
                                 h->opts.presence_ttl_ms);
}

static void net_presence_remove(px_hub_t *h, hchan_t *c, const presence_ent_t *p)
{
    if (!h->net || h->closing || !h->broker->ops->presence_remove)
        return;
    px__broker_member_t m = member_of(p);
    h->broker->ops->presence_remove(h->broker, (px_str_t){c->name, c->name_len}, &m);
}

static void on_broker_presence(void *ud, px_str_t channel, int op, const px__broker_member_t *m)
{
    px_hub_t *h = ud;
    hchan_t *c = chan_find(h, channel.ptr, channel.len);
    if (!c || c->state != CH_LIVE || m->client.len != PX__CLIENT_ID_LEN)
        return;
    px__presence_t who = {.user = m->user, .info = m->info};
    c->pres_seen = 1;
    memcpy(who.client, m->client.ptr, PX__CLIENT_ID_LEN);
    who.client[PX__CLIENT_ID_LEN] = '\0';
    /* Another node's member: a user edge unless the user is listed here too (members are
     * counted per user within a node; across nodes only as far as this one sees). */
    presence_event(h, c, op, &who, !pres_has_user(c, who.user));
}

typedef struct plist_req {
    px_hub_t *h;
    px__hreq_t *r;
} plist_req_t;

static void on_presence_list(void *ud, int status, const px__broker_member_t *ms, size_t n)
{
    plist_req_t *x = ud;
    px_hub_t *h = x->h;
    px__hreq_t *r = x->r;
    px__free(x);
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    r->subscribers = c ? c->total_subs : 0; /* this node's */
    if (c && n)
        c->pres_seen = 1;
    if (status) {
        hreq_error(r, 503, "storage_error", "presence could not be read");
        answer(h, r);
        return;
    }
    r->pres = n ? px__arena_alloc(&r->arena, n * sizeof *r->pres) : NULL;
    if (n && !r->pres) {
        hreq_error(r, 503, "internal_error", "out of memory");
        answer(h, r);
        return;
    }
    /* Members are counted per user, as this node's presence index does; with by_user one
     * entry per user (its first) is listed. An entry without a user counts as one. */
    px__hashmap_t seen;
    px__hashmap_init(&seen);
    px__hentry_t *ents = n ? px__calloc(n, sizeof *ents) : NULL;
    if (n && !ents) {
        hreq_error(r, 503, "internal_error", "out of memory");
        answer(h, r);
        return;
    }
    r->users = 0;
    for (size_t i = 0; i < n; i++) {
        if (ms[i].client.len != PX__CLIENT_ID_LEN)
            continue;
        if (ms[i].user.len) {
            if (px__hashmap_get(&seen, ms[i].user.ptr, ms[i].user.len)) {
                if (r->by_user)
                    continue;
            } else {
                ents[i].key = ms[i].user.ptr;
                ents[i].key_len = ms[i].user.len;
                if (px__hashmap_put(&seen, &ents[i]) != 0) {
                    hreq_error(r, 503, "internal_error", "out of memory");
                    break;
                }
                r->users++;
            }
        } else {
            r->users++;
        }
        px__presence_t *o = &r->pres[r->npres++];
        memcpy(o->client, ms[i].client.ptr, PX__CLIENT_ID_LEN);
        o->client[PX__CLIENT_ID_LEN] = '\0';
        o->user = (px_str_t){
            ms[i].user.len ? px__arena_memdup(&r->arena, ms[i].user.ptr, ms[i].user.len) : NULL,
            ms[i].user.len};
        o->info = (px_str_t){
            ms[i].info.len ? px__arena_memdup(&r->arena, ms[i].info.ptr, ms[i].info.len) : NULL,
            ms[i].info.len};
    }
    px__hashmap_dispose(&seen);
    px__free(ents);
    answer(h, r);
}

/* 0: the answer comes later; < 0: answer from this node's members (no broker presence). */
static int net_presence(px_hub_t *h, px__hreq_t *r)
{
    if (h->closing || !h->broker->ops->presence_list)
        return -ENOTSUP;
    plist_req_t *x = px__xcalloc(1, sizeof *x);
    x->h = h;
    x->r = r;
    int rc = h->broker->ops->presence_list(h->broker, (px_str_t){r->channel, r->channel_len},
                                           on_presence_list, x);
    if (rc) {
        px__free(x);
        hreq_error(r, 503, "storage_error", "presence is unavailable (the broker is down)");
        answer(h, r);
    }
    return 0;
}

static void presence_cb(px_timer_t *t)
{
    px_hub_t *h = t->data;
    for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL); e;
         e = px__hashmap_next(&h->channels, e)) {
        hchan_t *c = PX_CONTAINER_OF(e, hchan_t, e);
        px_str_t ch = {c->name, c->name_len};
        if (pres_count(c)) {
            px__broker_member_t *ms = px__calloc(pres_count(c), sizeof *ms);
            size_t n = 0;
            for (presence_ent_t *p = c->pres->head; p && ms; p = p->next)
                ms[n++] = member_of(p);
            if (ms)
                h->broker->ops->presence_refresh(h->broker, ch, ms, n, h->opts.presence_ttl_ms);
            px__free(ms);
        }
        /* A sweep, where presence is used: a crashed node's members leave once. */
        if (c->state == CH_LIVE && c->pres_seen)
            h->broker->ops->presence_list(h->broker, ch, NULL, NULL);
    }
    uint64_t every = h->opts.presence_ttl_ms / 3;
    px_timer_start(hub_loop(h), t, every < 100 ? 100 : every);
}

/* ---- health ------------------------------------------------------------------------------------
 */

static void health_cb(px_timer_t *t)
{
    px_hub_t *h = t->data;
    px__backend_stat_t ss = {.up = 1, .error = ""}, bs = {.up = 1, .error = ""};
    if (h->store->ops->stat)
        h->store->ops->stat(h->store, &ss);
    if (h->broker->ops->stat)
        h->broker->ops->stat(h->broker, &bs);
    px_metric_set(m_store_up, ss.up);
    px_metric_set(m_broker_up, bs.up);
    px_metric_set(m_store_queue, ss.queue + bs.queue);
    px_metric_set(m_store_reconnects, (int64_t)ss.reconnects);
    px_metric_set(m_broker_reconnects, (int64_t)bs.reconnects);
    pthread_mutex_lock(&h->health_mu);
    h->health_down = !ss.up || !bs.up;
    if (!ss.up)
        snprintf(h->health_why, sizeof h->health_why, "store (%s): %s", h->store->ops->name,
                 ss.error);
    else if (!bs.up)
        snprintf(h->health_why, sizeof h->health_why, "broker (%s): %s", h->broker->ops->name,
                 bs.error);
    else
        h->health_why[0] = '\0';
    int down = h->health_down;
    pthread_mutex_unlock(&h->health_mu);
    px_timer_start(hub_loop(h), t, down ? 20 : 250);
}

int px_hub_health(px_hub_t *h, char *why, size_t len)
{
    pthread_mutex_lock(&h->health_mu);
    int down = h->health_down;
    if (len)
        snprintf(why, len, "%s", h->health_why);
    pthread_mutex_unlock(&h->health_mu);
    return down ? -ENOTCONN : 0;
}

/* ---- life cycle
 * ---------------------------------------------------------------------------------- */

static int load_channel(void *ud, const px__store_channel_t *sc)
{
    px_hub_t *h = ud;
    return chan_new(h, sc->name, sc->name_len, sc->epoch, sc->last_offset) ? 0 : -ENOMEM;
}

static void trim_cb(px_timer_t *t)
{
    px_hub_t *h = t->data;
    int r = px__store_trim(h->store, wall_ms());
    px_timer_start(px_worker_loop(px_workers_get(h->actor, 0)), t, r == 1 ? 10 : 1000);
}

static void actor_start(px_worker_t *w, void *ud)
{
    px_hub_t *h = ud;
    px_worker_set_data(w, h);
    px_defer_init(&h->commit_defer, commit_batch, h);
    px_defer_init(&h->read_defer, run_reads, h);
    px_timer_init(&h->trim_timer, trim_cb, h);
    px_timer_start(px_worker_loop(w), &h->trim_timer, 1000);
    /* Network backends connect from here: their I/O is this thread's. */
    if (h->store->ops->attach)
        h->store->ops->attach(h->store, px_worker_loop(w));
    if (h->broker->ops->start)
        h->broker->ops->start(h->broker);
    px_timer_init(&h->health_timer, health_cb, h);
    px_timer_init(&h->presence_timer, presence_cb, h);
    px_defer_init(&h->kick_defer, kick_run, h);
    if (h->net)
        px_timer_start(px_worker_loop(w), &h->health_timer, 50);
    if (h->net && h->broker->ops->presence_refresh)
        px_timer_start(px_worker_loop(w), &h->presence_timer, 100);
}

/* "redis://..." -> "redis"; NULL/"sqlite" -> NULL (the default); else the URL's scheme. */
static const char *backend_of(const char *url, char *buf, size_t len)
{
    if (!url || !*url || strcmp(url, "sqlite") == 0)
        return NULL;
    if (strncmp(url, "redis://", 8) == 0 || strncmp(url, "rediss://", 9) == 0 ||
        strncmp(url, "unix:", 5) == 0 || strncmp(url, "redis+unix://", 13) == 0)
        return "redis";
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return "postgres";
    const char *colon = strchr(url, ':');
    snprintf(buf, len, "%.*s", colon ? (int)(colon - url) : (int)strlen(url), url);
    return buf;
}

static const px__broker_ops_t *broker_of(const char *url)
{
    const char *kind = url && *url ? url : NULL;
    if (!kind)
        return &px__broker_local;
    if (strncmp(kind, "redis://", 8) == 0 || strncmp(kind, "rediss://", 9) == 0 ||
        strncmp(kind, "unix:", 5) == 0 || strncmp(kind, "redis+unix://", 13) == 0)
        return &px__broker_redis;
    return NULL;
}

int px__hub_locals_init(px_hub_t *h); /* client.c */
void px__hub_locals_free(px_hub_t *h);
int px__hub_api_init(px_hub_t *h); /* api.c */
void px__hub_api_free(px_hub_t *h);

px_hub_t *px_hub_new(px_workers_t *workers, const px_hub_opts_t *o, char *err, size_t errlen)
{
    px__store_opts_t so = {.data_dir = o->data_dir ? o->data_dir : "./var",
                           .conninfo = o->store,
                           .durability = o->durability == PX_HUB_DURABILITY_FULL
                                             ? PX_DURABILITY_FULL
                                             : PX_DURABILITY_NORMAL,
                           .history_size = o->history_size,
                           .history_ttl_ms = o->history_ttl_ms,
                           .shared = o->data_dir_shared != 0};
    if (!broker_of(o->broker)) { /* before the store connects */
        snprintf(err, errlen, "--broker %s: expected redis://HOST:PORT[/DB] or unix:PATH",
                 o->broker);
        return NULL;
    }
    char kind[32];
    const char *backend = backend_of(o->store, kind, sizeof kind);
    if (o->data_dir_shared && backend) {
        snprintf(err, errlen,
                 "--data-dir-shared: only with the SQLite store (a --store URL is shared by "
                 "every node already)");
        return NULL;
    }
    px__store_t *store = NULL;
    if (px__store_open(backend, &so, &store, err, errlen) != 0)
        return NULL;
    return px__hub_new_store(workers, o, store, err, errlen);
}

px_hub_t *px__hub_new_store(px_workers_t *workers, const px_hub_opts_t *o, px__store_t *store,
                            char *err, size_t errlen)
{
    px_hub_t *h = px__xcalloc(1, sizeof *h);
    h->workers = workers;
    h->nworkers = px_workers_count(workers);
    h->opts = *o;
    h->data_dir = px__xstrdup(o->data_dir ? o->data_dir : "./var");
    h->opts.data_dir = h->data_dir;
    h->store = store;
    if (!h->opts.presence_ttl_ms) /* options zeroed by hand rather than px_hub_opts_init */
        h->opts.presence_ttl_ms = 30000;
    px__hashmap_init(&h->channels);

    px__m_publishes = px_metric_register("plexus_hub_publishes_total",
                                         "Messages published and stored", PX_METRIC_COUNTER);
    px__m_deliveries =
        px_metric_register("plexus_hub_deliveries_total",
                           "Messages delivered to subscribers (fan-out)", PX_METRIC_COUNTER);
    px__m_commit_us = px_metric_register("plexus_store_commit_microseconds_total",
                                         "Time spent in store commits", PX_METRIC_COUNTER);
    px__m_commits = px_metric_register("plexus_store_commits_total",
                                       "Store commits (group commits)", PX_METRIC_COUNTER);
    px__m_channels =
        px_metric_register("plexus_hub_channels", "Channels known to the hub", PX_METRIC_GAUGE);
    m_store_up =
        px_metric_register("plexus_store_up", "1 if the store is reachable", PX_METRIC_GAUGE);
    m_broker_up =
        px_metric_register("plexus_broker_up", "1 if the broker is reachable", PX_METRIC_GAUGE);
    m_store_queue = px_metric_register("plexus_backend_queue_depth",
                                       "Commands sent to the store and broker, not answered yet",
                                       PX_METRIC_GAUGE);
    m_store_reconnects = px_metric_register("plexus_store_reconnects_total",
                                            "Connections to the store made again", PX_METRIC_GAUGE);
    m_broker_reconnects = px_metric_register(
        "plexus_broker_reconnects_total", "Connections to the broker made again", PX_METRIC_GAUGE);
    m_store_reads =
        px_metric_register("plexus_store_reads_total",
                           "Asynchronous store reads (history, catch-up)", PX_METRIC_COUNTER);
    m_store_read_us =
        px_metric_register("plexus_store_read_microseconds_total",
                           "Time from a store read's request to its answer", PX_METRIC_COUNTER);
    m_inbound = px_metric_register("plexus_broker_messages_total",
                                   "Messages from other nodes received through the broker",
                                   PX_METRIC_COUNTER);
    m_gap_reads = px_metric_register("plexus_hub_gap_reads_total",
                                     "Store reads for messages missing between two (gaps, "
                                     "catch-up after a reconnect)",
                                     PX_METRIC_COUNTER);
    m_commit_failures =
        px_metric_register("plexus_store_commit_failures_total",
                           "Group commits the store refused or could not take", PX_METRIC_COUNTER);
    pthread_mutex_init(&h->health_mu, NULL);

    const px__broker_ops_t *bops = broker_of(o->broker);
    if (!bops) {
        snprintf(err, errlen, "--broker %s: expected redis://HOST:PORT[/DB] or unix:PATH",
                 o->broker);
        px_hub_free(h);
        return NULL;
    }
    unsigned flags = h->store->ops->flags;
    h->net = (flags & PX_STORE_ASYNC) && (flags & PX_STORE_SHARED);
    if (h->net) { /* /healthz says 503 until the backends are connected */
        h->health_down = 1;
        snprintf(h->health_why, sizeof h->health_why, "connecting to the store and the broker");
    }
    if (bops != &px__broker_local && !h->net) {
        snprintf(err, errlen,
                 "--broker needs a store shared by the nodes (--store redis://... or "
                 "postgres://...); SQLite is one node's");
        px_hub_free(h);
        return NULL;
    }
    /* A shared store without a broker of its own choosing: its natural one. */
    const char *burl = o->broker;
    if (h->net && bops == &px__broker_local) {
        if (strcmp(h->store->ops->name, "sqlite") == 0) { /* processes of one host */
            bops = &px__broker_proc;
            burl = h->data_dir;
        } else {
            bops = strcmp(h->store->ops->name, "redis") == 0 ? &px__broker_redis : &px__broker_pg;
            burl = o->store;
        }
    }
    int r = px__store_load_channels(h->store, load_channel, h);
    if (r) {
        snprintf(err, errlen, "%s: cannot load channels: %s", h->data_dir,
                 r == -ENOMEM ? "out of memory" : px__store_errmsg(h->store));
        px_hub_free(h);
        return NULL;
    }
    h->actor = px_workers_new(1);
    px__broker_sink_t sink = {.message = on_broker_message,
                              .subscribed = on_broker_subscribed,
                              .presence = on_broker_presence,
                              .poke = on_broker_poke,
                              .ud = h};
    if (h->actor && (r = bops->open(burl, px_worker_loop(px_workers_get(h->actor, 0)), &sink,
                                    &h->broker, err, errlen)) != 0) {
        if (r == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        px_hub_free(h);
        return NULL;
    }
    if (!h->actor || px__hub_locals_init(h) != 0 || px__hub_api_init(h) != 0) {
        snprintf(err, errlen, "out of memory");
        px_hub_free(h);
        return NULL;
    }
    return h;
}

int px_hub_start(px_hub_t *h)
{
    int r = px_workers_start(h->actor, actor_start, h);
    if (r == 0)
        h->started = 1;
    return r;
}

void px_hub_free(px_hub_t *h)
{
    if (!h)
        return;
    if (h->started) {
        px_workers_stop(h->actor);
        px_workers_join(h->actor);
        /* Requests that reached the hub after its loop ended are answered here, so that
         * their origins are released; answers still queued at stopped workers are drained
         * there. */
        px_workers_drain(h->actor);
        h->closing = 1; /* network backends: nothing new goes out, what is pending fails */
        commit_batch(&h->commit_defer);
        drain_reads(h, 0);
        if (h->net) {
            /* Close the network backends while the hub thread's loop exists (their
             * watchers and timers are on it); pending calls come back with errors now and
             * their requests are answered (503) before the workers' mailboxes drain. */
            for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL); e;
                 e = px__hashmap_next(&h->channels, e)) {
                px_timer_stop(&PX_CONTAINER_OF(e, hchan_t, e)->gap_timer);
                px_timer_stop(&PX_CONTAINER_OF(e, hchan_t, e)->tail_timer);
            }
            px_timer_stop(&h->health_timer);
            px_timer_stop(&h->presence_timer);
            px__broker_close(h->broker);
            h->broker = NULL;
            px__store_close(h->store);
            h->store = NULL;
            for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL); e;
                 e = px__hashmap_next(&h->channels, e)) {
                px_timer_stop(&PX_CONTAINER_OF(e, hchan_t, e)->gap_timer);
                px_timer_stop(&PX_CONTAINER_OF(e, hchan_t, e)->tail_timer);
            }
        }
    }
    /* Answers run at the workers can post to the hub again (a subscribe answered for a
     * client that is gone posts its unsubscribe), and the hub's answers go back to the
     * workers: drain both until neither has anything left. */
    if (h->actor)
        while (px_workers_drain(h->workers) + px_workers_drain(h->actor) > 0)
            ;
    px__hub_api_free(h);
    px__hub_locals_free(h);
    px_workers_free(h->actor);
    for (px__hentry_t *e = px__hashmap_next(&h->channels, NULL), *next; e; e = next) {
        next = px__hashmap_next(&h->channels, e);
        chan_free(PX_CONTAINER_OF(e, hchan_t, e));
    }
    px__hashmap_dispose(&h->channels);
    px__broker_close(h->broker);
    px__store_close(h->store);
    pthread_mutex_destroy(&h->health_mu);
    px__free(h->data_dir);
    px__free(h);
}
