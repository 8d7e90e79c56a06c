/* The hub on the workers: clients (connections of a front-end), their subscriptions, the
 * local index channel -> subscriptions, deliveries, and the pacing of long answers.
 *
 * Everything here runs on one worker and touches only that worker's objects. A client
 * sends requests to the hub thread and gets them back answered (px__hreq_t round trip);
 * it stays alive while any is out (`pending`), even after its connection closed.
 *
 * Paced requests: answers that can be long (history, the pages of a subscription's replay)
 * go to the hub one at a time per client, the next only once the previous answer has been
 * written out (the connection drained). A client that reads slowly gets its backlog slowly
 * instead of overflowing its output budget, and holds the hub to one bounded read. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "hub/hub_int.h"

struct px__lchan {
    px__hentry_t e;
    px__hsub_t *lists[PX__FORMATS_MAX]; /* active subscriptions, per format */
    unsigned count;
    size_t name_len;
    char name[PX__CHANNEL_MAX + 1];
};

typedef struct px__hlocal {
    px__hashmap_t chans;
} px__hlocal_t;

int px__hub_locals_init(px_hub_t *h);
void px__hub_locals_free(px_hub_t *h);
void px__hub_on_delivery(px_worker_t *w, px_msg_t *m);

int px__hub_locals_init(px_hub_t *h)
{
    h->locals = px__calloc(h->nworkers, sizeof *h->locals);
    if (!h->locals)
        return -ENOMEM;
    for (unsigned i = 0; i < h->nworkers; i++)
        px__hashmap_init(&h->locals[i].chans);
    return 0;
}

void px__hub_locals_free(px_hub_t *h)
{
    if (!h->locals)
        return;
    for (unsigned i = 0; i < h->nworkers; i++) {
        px__hashmap_t *m = &h->locals[i].chans;
        for (px__hentry_t *e = px__hashmap_next(m, NULL), *next; e; e = next) {
            next = px__hashmap_next(m, e);
            px__free(PX_CONTAINER_OF(e, px__lchan_t, e));
        }
        px__hashmap_dispose(m);
    }
    px__free(h->locals);
    h->locals = NULL;
}

/* ---- the local index ----------------------------------------------------------------------- */

/* Deliveries reach `s` from now on. -ENOMEM if the worker's index could not take it. */
static int activate(px__hclient_t *c, px__hsub_t *s)
{
    px__hlocal_t *L = &c->hub->locals[c->worker];
    px__hentry_t *e = px__hashmap_get(&L->chans, s->name, s->name_len);
    px__lchan_t *lc = e ? PX_CONTAINER_OF(e, px__lchan_t, e) : NULL;
    if (!lc) {
        lc = px__xcalloc(1, sizeof *lc);
        memcpy(lc->name, s->name, s->name_len);
        lc->name_len = s->name_len;
        lc->e.key = lc->name;
        lc->e.key_len = lc->name_len;
        if (px__hashmap_put(&L->chans, &lc->e) != 0) {
            px__free(lc);
            return -ENOMEM;
        }
    }
    s->lc = lc;
    s->active = 1;
    s->catching_up = 0;
    s->prev = NULL;
    s->next = lc->lists[s->format];
    if (s->next)
        s->next->prev = s;
    lc->lists[s->format] = s;
    lc->count++;
    return 0;
}

static void deactivate(px__hclient_t *c, px__hsub_t *s)
{
    if (!s->active)
        return;
    px__lchan_t *lc = s->lc;
    if (s->prev)
        s->prev->next = s->next;
    else
        lc->lists[s->format] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->active = 0;
    s->lc = NULL;
    s->prev = s->next = NULL;
    if (--lc->count == 0) {
        px__hlocal_t *L = &c->hub->locals[c->worker];
        px__hashmap_del(&L->chans, &lc->e);
        px__free(lc);
    }
}

void px__hub_on_delivery(px_worker_t *w, px_msg_t *m)
{
    struct px__delivery_view { /* the head of hub.c's px__delivery_t */
        px_msg_t msg;
        px_hub_t *hub;
        int kind;
        px_hub_msg_t *m;
        px__presence_ev_t ev;
        px__presence_t who;
        px_slice_t *frames[PX__FORMATS_MAX];
    } *d = (struct px__delivery_view *)m;
    px_hub_t *h = d->hub;
    px__hlocal_t *L = &h->locals[px_worker_id(w)];
    px_str_t ch = d->kind == PX__DELIVER_MESSAGE ? px_hub_msg_channel(d->m) : d->ev.channel;
    px__hentry_t *e = px__hashmap_get(&L->chans, ch.ptr, ch.len);
    int64_t n = 0;
    if (e) {
        px__lchan_t *lc = PX_CONTAINER_OF(e, px__lchan_t, e);
        const void *item =
            d->kind == PX__DELIVER_MESSAGE ? (const void *)d->m : (const void *)&d->ev;
        /* The local channel may go away while delivering (the last subscription dropped):
         * nothing is read from it after a format's list is handed over. */
        px__hsub_t *lists[PX__FORMATS_MAX];
        memcpy(lists, lc->lists, sizeof lists);
        for (unsigned f = 0; f < h->nformats; f++)
            if (lists[f])
                n += (int64_t)h->formats[f]->deliver(lists[f], d->kind, d->frames[f], item);
    }
    px_metric_add(px__m_deliveries, n);
    for (unsigned f = 0; f < PX__FORMATS_MAX; f++)
        px_slice_unref(d->frames[f]);
    if (d->kind == PX__DELIVER_MESSAGE)
        px_hub_msg_unref(d->m);
    px__free(d);
}

/* ---- clients ------------------------------------------------------------------------------- */

void px__hclient_init(px__hclient_t *c, px_hub_t *h, unsigned worker, const px__hclient_ops_t *ops)
{
    memset(c, 0, sizeof *c);
    c->ops = ops;
    c->hub = h;
    c->worker = worker;
    c->page_bytes = PX__PAGE_MAX;
}

static void maybe_release(px__hclient_t *c)
{
    if (c->closed && c->pending == 0 && c->ops->release)
        c->ops->release(c);
}

px__hsub_t *px__hclient_find(px__hclient_t *c, const char *name, size_t len)
{
    for (px__hsub_t *s = c->subs; s; s = s->cnext)
        if (!s->cancelled && s->name_len == len && memcmp(s->name, name, len) == 0)
            return s;
    return NULL;
}

static void client_done(px__hreq_t *r);

static px__hreq_t *client_req(px__hclient_t *c, int type, const char *name, size_t len)
{
    px__hreq_t *r = px__hreq_new(c->hub, type, name, len);
    r->worker = c->worker;
    r->done = client_done;
    r->ud = c;
    return r;
}

static void post(px__hclient_t *c, px__hreq_t *r)
{
    c->pending++;
    px__hub_post(c->hub, r);
}

/* ---- paced requests -----------------------------------------------------------------------------
 */

static void paced_pump(px__hclient_t *c)
{
    while (c->paced == PX__PACED_IDLE && c->pq_head && !c->closed) {
        px__hreq_t *r = c->pq_head;
        c->pq_head = r->next;
        if (!c->pq_head)
            c->pq_tail = NULL;
        c->npq--;
        r->next = NULL;
        r->paced = 1;
        if (r->type == PX__HREQ_PAGE)
            c->paced_sub = r->tag;
        c->paced = PX__PACED_AT_HUB;
        post(c, r);
    }
}

static void paced_push(px__hclient_t *c, px__hreq_t *r)
{
    r->next = NULL;
    if (c->pq_tail)
        c->pq_tail->next = r;
    else
        c->pq_head = r;
    c->pq_tail = r;
    c->npq++;
    paced_pump(c);
}

/* The paced answer has been queued for the client: the next waits until it is written. */
static void paced_done(px__hclient_t *c)
{
    c->paced_sub = NULL;
    c->paced = c->ops->output(c) ? PX__PACED_DRAINING : PX__PACED_IDLE;
    paced_pump(c);
}

void px__hclient_drained(px__hclient_t *c)
{
    if (c->paced == PX__PACED_DRAINING) {
        c->paced = PX__PACED_IDLE;
        paced_pump(c);
    }
}

void px__hclient_request(px__hclient_t *c, px__hreq_t *r, int paced)
{
    r->worker = c->worker;
    r->done = client_done;
    r->ud = c;
    if (paced)
        paced_push(c, r);
    else
        post(c, r);
}

unsigned px__hclient_inflight(const px__hclient_t *c)
{
    return c->pending + c->npq - c->npages;
}

/* Ask for the next replay page of `s`. */
static void queue_page(px__hclient_t *c, px__hsub_t *s)
{
    px__hreq_t *r = client_req(c, PX__HREQ_PAGE, s->name, s->name_len);
    r->format = s->format;
    r->since_offset = s->cursor;
    r->max_bytes = c->page_bytes;
    r->tag = s;
    c->npages++;
    paced_push(c, r);
}

/* ---- subscriptions
 * --------------------------------------------------------------------------------- */

px__hsub_t *px__hclient_subscribe(px__hclient_t *c, const char *name, size_t len, int format,
                                  const px__subopts_t *o, size_t extra)
{
    px__hsub_t *s = px__calloc(1, sizeof *s + extra + len + 1);
    if (!s)
        return NULL;
    s->client = c;
    s->format = (uint8_t)format;
    s->presence = o->presence != 0;
    s->name = (char *)s->extra + extra;
    memcpy(s->name, name, len);
    s->name[len] = '\0';
    s->name_len = len;
    px__hreq_t *r = client_req(c, PX__HREQ_SUBSCRIBE, name, len);
    r->format = (uint8_t)format;
    r->tag = s;
    r->presence = o->presence != 0;
    r->want_list = o->want_list != 0;
    r->want_last = o->want_last != 0;
    r->presence_max = o->presence_max;
    if (o->has_since) {
        r->has_since = 1;
        r->since_offset = o->since_offset;
        if (o->since_epoch)
            snprintf(r->since_epoch, sizeof r->since_epoch, "%s", o->since_epoch);
        if (c->paced == PX__PACED_IDLE && !c->pq_head) {
            /* The first page of the replay comes with the answer; the rest as it drains. */
            r->max_bytes = c->page_bytes;
            r->paced = 1;
            c->paced = PX__PACED_AT_HUB;
        }
    }
    if (o->who) {
        r->in_presence = 1;
        memcpy(r->who.client, o->who->client, sizeof r->who.client);
        if (o->who->user.len)
            r->who.user =
                (px_str_t){px__xmemdup(o->who->user.ptr, o->who->user.len), o->who->user.len};
        if (o->who->info.len)
            r->who.info =
                (px_str_t){px__xmemdup(o->who->info.ptr, o->who->info.len), o->who->info.len};
        memcpy(s->who_client, o->who->client, sizeof s->who_client);
    }
    s->cnext = c->subs;
    c->subs = s;
    c->nsubs++;
    post(c, r);
    return s;
}

/* Unlink and free `s`, which is not active, with its queued pages. */
static void forget(px__hclient_t *c, px__hsub_t *s)
{
    for (px__hsub_t **pp = &c->subs; *pp; pp = &(*pp)->cnext)
        if (*pp == s) {
            *pp = s->cnext;
            break;
        }
    c->nsubs--;
    px__hreq_t *prev = NULL;
    for (px__hreq_t *r = c->pq_head, *next; r; r = next) {
        next = r->next;
        if (r->tag != s || r->type != PX__HREQ_PAGE) {
            prev = r;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            c->pq_head = next;
        if (c->pq_tail == r)
            c->pq_tail = prev;
        c->npq--;
        c->npages--;
        px__hreq_free(r);
    }
    if (c->paced_sub == s)
        c->paced_sub = NULL; /* its page answer, when it comes, is dropped */
    px__free(s);
}

/* Tell the hub thread that `s` is gone (it counted the subscription). */
static void post_unsubscribe(px__hclient_t *c, const px__hsub_t *s)
{
    px__hreq_t *r = px__hreq_new(c->hub, PX__HREQ_UNSUBSCRIBE, s->name, s->name_len);
    r->worker = c->worker;
    r->format = s->format;
    if (s->who_client[0]) {
        r->in_presence = 1;
        memcpy(r->who.client, s->who_client, sizeof r->who.client);
    }
    px__hub_post(c->hub, r); /* no answer (done NULL): the hub frees it */
}

static void drop(px__hclient_t *c, px__hsub_t *s)
{
    deactivate(c, s);
    post_unsubscribe(c, s);
    forget(c, s);
}

int px__hclient_unsubscribe(px__hclient_t *c, px__hsub_t *s)
{
    if (!s->active && !s->catching_up) {
        /* The subscribe is still at the hub: its answer undoes it (an unsubscribe sent now
         * would undo someone else's count if the subscribe failed). */
        s->cancelled = 1;
        return 0;
    }
    drop(c, s);
    return 1;
}

void px__hclient_close(px__hclient_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    /* Subscriptions still waiting for their answer are dropped when it comes; those the
     * hub counted (live or catching up) are dropped now. */
    for (px__hsub_t *s = c->subs, *next; s; s = next) {
        next = s->cnext;
        if (s->active || s->catching_up)
            drop(c, s);
    }
    while (c->pq_head) {
        px__hreq_t *r = c->pq_head;
        c->pq_head = r->next;
        if (r->type == PX__HREQ_PAGE)
            c->npages--;
        px__hreq_free(r);
    }
    c->pq_tail = NULL;
    c->npq = 0;
    maybe_release(c);
}

/* ---- answers
 * ---------------------------------------------------------------------------------------- */

/* Is `s` still one of c's subscriptions? (s itself may have been freed: not read.) */
static int holds(const px__hclient_t *c, const px__hsub_t *s)
{
    for (const px__hsub_t *p = c->subs; p; p = p->cnext)
        if (p == s)
            return 1;
    return 0;
}

/* `s` cannot go on (r says why): the front is told, then it is dropped, unless the front
 * closed the client meanwhile and that dropped it. */
static void end_sub(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    c->ops->ended(c, s, r);
    if (holds(c, s))
        drop(c, s);
}

/* A replay page went out: live from here, or ask for the next one. */
static void after_page(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    if (!r->final) {
        s->catching_up = 1;
        s->cursor = r->page_last;
        queue_page(c, s);
    } else if (activate(c, s) != 0) {
        r->status = 503;
        r->err_code = "internal_error";
        snprintf(r->err_msg, sizeof r->err_msg, "out of memory");
        end_sub(c, s, r);
    }
}

/* Write a replay (frames in the subscription's format, or neutral messages). */
static int replay(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    if (r->nframes) {
        for (size_t i = 0; i < r->nframes; i++)
            if (c->ops->write(c, s, r->frames[i]) < 0 || c->closed)
                return -EPIPE;
    } else {
        for (size_t i = 0; i < r->nmsgs && !c->closed; i++)
            c->ops->message(c, s, r->msgs[i]);
    }
    return c->closed ? -EPIPE : 0;
}

static void subscribe_answer(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    if (!c->closed)
        c->ops->subscribed(c, s, r);
    if (r->status || s->cancelled || c->closed) {
        /* Failed (the hub did not count it), or unsubscribed or closed meanwhile, maybe in
         * the callback (the hub counted it: undo that). */
        if (!r->status)
            post_unsubscribe(c, s);
        forget(c, s);
        return;
    }
    if (replay(c, s, r) == 0)
        after_page(c, s, r);
    else if (holds(c, s))
        drop(c, s); /* the client could not take its replay (a close dropped it already) */
}

static void page_answer(px__hclient_t *c, px__hreq_t *r)
{
    px__hsub_t *s = c->paced_sub; /* NULL if it was dropped meanwhile */
    if (!s || c->closed)
        return;
    if (r->status) {
        end_sub(c, s, r); /* the replay cannot go on: the subscription ends */
        return;
    }
    if (replay(c, s, r) == 0)
        after_page(c, s, r);
    else if (holds(c, s))
        drop(c, s);
}

static void client_done(px__hreq_t *r)
{
    px__hclient_t *c = r->ud;
    int paced = r->paced;
    if (r->type == PX__HREQ_SUBSCRIBE) {
        subscribe_answer(c, r->tag, r);
    } else if (r->type == PX__HREQ_PAGE) {
        c->npages--;
        page_answer(c, r);
    } else if (!c->closed)
        c->ops->answer(c, r);
    px__hreq_free(r);
    if (paced && !c->closed)
        paced_done(c);
    /* Counted down last: the client cannot be released inside its own callbacks. */
    c->pending--;
    maybe_release(c);
}
