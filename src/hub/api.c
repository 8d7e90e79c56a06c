/* The public C API of the hub (plexus/hub.h): publish from any thread, subscribe a C
 * callback on a worker, history and presence queries. It is a front-end like the others:
 * its subscriptions have their own format (no encoding: the callback gets the message). */
#include <string.h>

#include "core/alloc.h"
#include "hub/hub_int.h"

/* The calling thread's worker id among the hub's workers, or PX__NO_WORKER. */
static unsigned self_worker(const px_hub_t *h)
{
    px_worker_t *w = px_worker_self();
    return w && px_worker_group(w) == h->workers ? px_worker_id(w) : PX__NO_WORKER;
}

/* A request to the hub thread for the calling thread: `done` runs back on its worker
 * (or on the hub thread when the caller is not a worker of the hub). */
static px__hreq_t *api_request(px_hub_t *h, int type, px_str_t channel, void (*done)(px__hreq_t *r),
                               void *ud)
{
    px__hreq_t *r = px__hreq_new(h, type, channel.ptr, channel.len);
    r->worker = self_worker(h);
    r->done = done;
    r->ud = ud;
    return r;
}

/* ---- publish ------------------------------------------------------------------------------- */

static void publish_done(px__hreq_t *r)
{
    if (r->ack) {
        px_hub_ack_t a = {.status = r->status ? (r->status == 503 ? -EIO : -EINVAL) : 0,
                          .error = r->err_code,
                          .epoch = r->epoch,
                          .offset = r->offset};
        r->ack(&a, r->ud);
    }
    px__hreq_free(r);
}

int px_hub_publish(px_hub_t *h, px_str_t channel, px_str_t event, px_str_t data, uint64_t publisher,
                   px_hub_ack_fn cb, void *ud)
{
    if (!px__channel_name_ok(channel.ptr, channel.len) || event.len > 200)
        return -EINVAL;
    if (data.len > h->opts.max_payload)
        return -EMSGSIZE;
    px_hub_msg_t *m = px__hub_msg_new(channel, event, data, publisher);
    if (!m)
        return -ENOMEM;
    px__hreq_t *r = api_request(h, PX__HREQ_PUBLISH, channel, publish_done, ud);
    r->m = m;
    r->ack = cb;
    px__hub_post(h, r);
    return 0;
}

/* ---- C subscriptions
 * ----------------------------------------------------------------------------- */

struct px_hub_sub {
    px__hclient_t c;           /* one client per C subscription: its own life cycle */
    px_hub_sub_t *prev, *next; /* the worker's C subscriptions (freed with the hub) */
    px__hsub_t *s;
    const px_hub_sub_cbs_t *cbs;
    void *ud;
    int stopped; /* px_hub_unsubscribe was called: no more callbacks */
};

static size_t api_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    PX_UNUSED(frame);
    size_t n = 0;
    if (kind != PX__DELIVER_MESSAGE)
        return 0;
    for (px__hsub_t *s = list, *next; s; s = next) {
        next = s->next;
        px_hub_sub_t *u = PX_CONTAINER_OF(s->client, px_hub_sub_t, c);
        if (!u->stopped && u->cbs->on_message) {
            u->cbs->on_message(u, item, u->ud);
            n++;
        }
    }
    return n;
}

static const px__hformat_t api_format = {.name = "c-api", .deliver = api_deliver};

int px__hub_api_init(px_hub_t *h);
int px__hub_api_init(px_hub_t *h)
{
    h->api_subs = px__calloc(h->nworkers, sizeof *h->api_subs);
    if (!h->api_subs)
        return -ENOMEM;
    int f = px__hub_add_format(h, &api_format);
    return f < 0 ? f : 0;
}

static size_t api_output(px__hclient_t *c)
{
    PX_UNUSED(c);
    return 0;
}

static void api_subscribed(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    PX_UNUSED(s);
    px_hub_sub_t *u = PX_CONTAINER_OF(c, px_hub_sub_t, c);
    if (!u->stopped && u->cbs->on_subscribed)
        u->cbs->on_subscribed(u, r->status ? -EIO : 0, r->epoch, r->offset, u->ud);
}

static void api_message(px__hclient_t *c, px__hsub_t *s, const px_hub_msg_t *m)
{
    PX_UNUSED(s);
    px_hub_sub_t *u = PX_CONTAINER_OF(c, px_hub_sub_t, c);
    if (!u->stopped && u->cbs->on_message)
        u->cbs->on_message(u, m, u->ud);
}

static void unlink_sub(px_hub_sub_t *u)
{
    px_hub_sub_t **head = &u->c.hub->api_subs[u->c.worker];
    if (u->prev)
        u->prev->next = u->next;
    else if (*head == u)
        *head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
}

static void api_release(px__hclient_t *c)
{
    px_hub_sub_t *u = PX_CONTAINER_OF(c, px_hub_sub_t, c);
    unlink_sub(u);
    px__free(u);
}

/* After the workers stopped: subscriptions nobody ended go with the hub. */
void px__hub_api_free(px_hub_t *h);
void px__hub_api_free(px_hub_t *h)
{
    if (!h->api_subs)
        return;
    for (unsigned w = 0; w < h->nworkers; w++)
        while (h->api_subs[w]) {
            px_hub_sub_t *u = h->api_subs[w];
            unlink_sub(u);
            for (px__hsub_t *s = u->c.subs, *next; s; s = next) {
                next = s->cnext;
                px__free(s);
            }
            px__free(u);
        }
    px__free(h->api_subs);
    h->api_subs = NULL;
}

static void api_nothing(px__hclient_t *c, px__hreq_t *r)
{
    PX_UNUSED(c);
    PX_UNUSED(r);
}

static void api_ended(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    PX_UNUSED(c);
    PX_UNUSED(s);
    PX_UNUSED(r);
}

static const px__hclient_ops_t api_ops = {
    .output = api_output,
    .message = api_message,
    .subscribed = api_subscribed,
    .answer = api_nothing,
    .ended = api_ended,
    .release = api_release,
};

px_hub_sub_t *px_hub_subscribe(px_hub_t *h, px_str_t channel, const px_hub_sub_cbs_t *cbs, void *ud)
{
    unsigned w = self_worker(h);
    if (w == PX__NO_WORKER || !cbs || !px__channel_name_ok(channel.ptr, channel.len))
        return NULL;
    px_hub_sub_t *u = px__calloc(1, sizeof *u);
    if (!u)
        return NULL;
    px__hclient_init(&u->c, h, w, &api_ops);
    u->cbs = cbs;
    u->ud = ud;
    px__subopts_t o = {0};
    u->s = px__hclient_subscribe(&u->c, channel.ptr, channel.len,
                                 px__hub_add_format(h, &api_format), &o, 0);
    if (!u->s) {
        px__free(u);
        return NULL;
    }
    u->next = h->api_subs[w];
    if (u->next)
        u->next->prev = u;
    h->api_subs[w] = u;
    return u;
}

void px_hub_unsubscribe(px_hub_sub_t *u)
{
    if (!u || u->stopped)
        return;
    u->stopped = 1;
    px__hclient_close(&u->c); /* frees u once the hub has answered what is out */
}

/* ---- queries
 * -------------------------------------------------------------------------------------- */

static void history_done(px__hreq_t *r)
{
    px_hub_history_t a = {.status = r->status ? -EIO : 0,
                          .epoch = r->epoch[0] ? r->epoch : NULL,
                          .offset = r->offset,
                          .msgs = (const px_hub_msg_t *const *)r->msgs,
                          .count = r->nmsgs,
                          .truncated = r->truncated,
                          .more = r->more};
    r->history_cb(&a, r->ud);
    px__hreq_free(r);
}

int px_hub_history(px_hub_t *h, px_str_t channel, uint64_t since, size_t limit,
                   void (*cb)(const px_hub_history_t *r, void *ud), void *ud)
{
    if (!cb || !px__channel_name_ok(channel.ptr, channel.len) || limit == 0)
        return -EINVAL;
    px__hreq_t *r = api_request(h, PX__HREQ_HISTORY, channel, history_done, ud);
    r->since_offset = since;
    r->limit = limit;
    r->max_bytes = PX__PAGE_MAX;
    r->history_cb = cb;
    px__hub_post(h, r);
    return 0;
}

static void presence_done(px__hreq_t *r)
{
    px_hub_member_t *mem = r->npres ? px__arena_alloc(&r->arena, r->npres * sizeof *mem) : NULL;
    px_hub_presence_t a = {.status = r->status || (r->npres && !mem) ? -EIO : 0,
                           .subscribers = r->subscribers};
    if (mem) {
        for (size_t i = 0; i < r->npres; i++)
            mem[i] = (px_hub_member_t){r->pres[i].client, r->pres[i].user, r->pres[i].info};
        a.members = mem;
        a.count = r->npres;
    }
    r->presence_cb(&a, r->ud);
    px__hreq_free(r);
}

int px_hub_presence(px_hub_t *h, px_str_t channel, void (*cb)(const px_hub_presence_t *r, void *ud),
                    void *ud)
{
    if (!cb || !px__channel_name_ok(channel.ptr, channel.len))
        return -EINVAL;
    px__hreq_t *r = api_request(h, PX__HREQ_PRESENCE, channel, presence_done, ud);
    r->presence_cb = cb;
    px__hub_post(h, r);
    return 0;
}
