/* Webhooks: channel_occupied / channel_vacated and member_added / member_removed from the hub
 * thread (observers), client_event and cache_miss from the sessions' workers. Everything is
 * handled on worker 0: presence events are debounced (a user who leaves and comes back
 * within DEBOUNCE_MS causes neither), events are batched per webhook into
 * {"time_ms", "events"} bodies signed with X-Pusher-Key / X-Pusher-Signature, sent with
 * px_fetch one at a time per webhook, retried with exponential backoff for up to
 * RETRY_FOR_MS, and queued within a bound (the oldest are dropped, counted and logged). */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "front/pusher.h"

#define DEBOUNCE_MS     3000
#define BATCH_DELAY_MS  50
#define BATCH_MAX       100    /* events per POST */
#define RETRY_FOR_MS    300000 /* 5 minutes */
#define RETRY_FIRST_MS  1000
#define RETRY_MAX_MS    60000
#define HOOK_TIMEOUT_MS 10000

enum { HK_OCCUPIED = 1, HK_VACATED, HK_ADDED, HK_REMOVED, HK_CLIENT, HK_CACHE_MISS };

static const unsigned kind_bit[] = {0,
                                    PX_PUSHER_HOOK_CHANNEL_OCCUPIED,
                                    PX_PUSHER_HOOK_CHANNEL_VACATED,
                                    PX_PUSHER_HOOK_MEMBER_ADDED,
                                    PX_PUSHER_HOOK_MEMBER_REMOVED,
                                    PX_PUSHER_HOOK_CLIENT_EVENT,
                                    PX_PUSHER_HOOK_CACHE_MISS};

static int m_sent = -1, m_failed = -1, m_dropped = -1, m_retries = -1;

typedef struct hevent {
    struct hevent *next;
    size_t len;
    char json[];
} hevent_t;

typedef struct hbatch {
    struct hbatch *next;
    size_t nevents;
    uint64_t first_ms; /* first attempt */
    unsigned tries;
    size_t len;
    char body[];
} hbatch_t;

typedef struct htarget {
    phooks_t *h;
    papp_t *app;
    const px_pusher_webhook_t *w;
    hevent_t *ev_head, *ev_tail; /* waiting for the next batch */
    size_t nev;
    hbatch_t *q_head, *q_tail; /* batches to send; the head is in flight or waits to retry */
    size_t queued;             /* events in the batches */
    int in_flight;
    px_timer_t retry;
} htarget_t;

/* A member event waiting out the debounce. */
typedef struct hpend {
    px__hentry_t e;
    struct hpend *prev, *next;
    int kind;
    papp_t *app;
    uint64_t due;
    size_t clen, ulen;
    char key[]; /* app index byte, channel, NUL, user */
} hpend_t;

struct phooks {
    px__pusher_t *p;
    htarget_t *targets;
    size_t ntargets;
    px_timer_t flush, debounce;
    px__hashmap_t pend;
    hpend_t *pend_head;
    px__hobserver_t obs;
};

/* ---- sending -------------------------------------------------------------------------------- */

static void pump(htarget_t *t);

static void batch_drop_head(htarget_t *t)
{
    hbatch_t *b = t->q_head;
    t->q_head = b->next;
    if (!t->q_head)
        t->q_tail = NULL;
    t->queued -= b->nevents;
    px__free(b);
}

static void on_sent(const px_fetch_res_t *res, void *ud)
{
    htarget_t *t = ud;
    t->in_flight = 0;
    hbatch_t *b = t->q_head;
    if (!b)
        return;
    if (res->status == 0 && res->http_status >= 200 && res->http_status < 300) {
        px_metric_add(m_sent, 1);
        batch_drop_head(t);
        pump(t);
        return;
    }
    uint64_t now = px_now_ms();
    if (now - b->first_ms >= RETRY_FOR_MS) {
        px_metric_add(m_failed, 1);
        px_log(PX_LOG_WARN,
               "pusher app %s: webhook %s failed for %u s (last: %s%d): %zu event(s) dropped",
               t->app->o.id, t->w->url, RETRY_FOR_MS / 1000, res->status ? res->error : "HTTP ",
               res->status ? 0 : res->http_status, b->nevents);
        batch_drop_head(t);
        pump(t);
        return;
    }
    uint64_t delay = RETRY_FIRST_MS << (b->tries > 6 ? 6 : b->tries - 1);
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    px_metric_add(m_retries, 1);
    px_log(PX_LOG_DEBUG, "pusher app %s: webhook %s: %s%d; retry in %llu ms", t->app->o.id,
           t->w->url, res->status ? res->error : "HTTP ", res->status ? 0 : res->http_status,
           (unsigned long long)delay);
    px_timer_start(px_worker_loop(px_worker_self()), &t->retry, delay);
}

static void on_retry(px_timer_t *tm)
{
    pump(tm->data);
}

static void pump(htarget_t *t)
{
    hbatch_t *b = t->q_head;
    if (!b || t->in_flight || px_timer_active(&t->retry))
        return;
    char sig[65], hsig[100], hkey[300];
    px__pusher_sign(t->app, b->body, b->len, sig);
    snprintf(hsig, sizeof hsig, "X-Pusher-Signature: %s", sig);
    snprintf(hkey, sizeof hkey, "X-Pusher-Key: %s", t->app->o.key);
    const char *headers[] = {"Content-Type: application/json", hkey, hsig, NULL};
    px_fetch_req_t r = {.method = "POST",
                        .url = t->w->url,
                        .headers = headers,
                        .body = b->body,
                        .body_len = b->len,
                        .timeout_ms = HOOK_TIMEOUT_MS,
                        .max_response = 64u << 10};
    if (!b->tries++)
        b->first_ms = px_now_ms();
    if (px_fetch(t->h->p->server, &r, on_sent, t, NULL) == 0) {
        t->in_flight = 1;
    } else {
        px_fetch_res_t fail = {.status = -ENOMEM, .error = "cannot start the request"};
        on_sent(&fail, t);
    }
}

/* Pending events of `t` into batches of BATCH_MAX, within the queue's bound. */
static void batch_up(htarget_t *t)
{
    int64_t now = px__pusher_wall_ms();
    while (t->ev_head) {
        size_t n = 0, len = 40;
        for (hevent_t *e = t->ev_head; e && n < BATCH_MAX; e = e->next, n++)
            len += e->len + 1;
        hbatch_t *b = px__malloc(sizeof *b + len);
        if (!b)
            break;
        memset(b, 0, sizeof *b);
        int k = snprintf(b->body, len, "{\"time_ms\":%lld,\"events\":[", (long long)now);
        size_t at = (size_t)k;
        for (size_t i = 0; i < n; i++) {
            hevent_t *e = t->ev_head;
            t->ev_head = e->next;
            if (i)
                b->body[at++] = ',';
            memcpy(b->body + at, e->json, e->len);
            at += e->len;
            px__free(e);
        }
        b->body[at++] = ']';
        b->body[at++] = '}';
        b->len = at;
        b->nevents = n;
        t->nev -= n;
        if (t->q_tail)
            t->q_tail->next = b;
        else
            t->q_head = b;
        t->q_tail = b;
        t->queued += n;
    }
    if (!t->ev_head)
        t->ev_tail = NULL;
    /* Over the bound: drop the oldest batches that are not in flight. */
    size_t dropped = 0;
    while (t->queued > t->app->o.webhook_queue_max && t->q_head) {
        hbatch_t *victim = t->q_head;
        if (t->in_flight || px_timer_active(&t->retry)) {
            victim = t->q_head->next; /* the head is being sent: drop the next */
            if (!victim)
                break;
            t->q_head->next = victim->next;
            if (t->q_tail == victim)
                t->q_tail = t->q_head;
            t->queued -= victim->nevents;
            dropped += victim->nevents;
            px__free(victim);
            continue;
        }
        dropped += victim->nevents;
        batch_drop_head(t);
    }
    if (dropped) {
        px_metric_add(m_dropped, (int64_t)dropped);
        px_log(PX_LOG_WARN,
               "pusher app %s: webhook %s is not keeping up: %zu oldest event(s) dropped "
               "(queue bound %u)",
               t->app->o.id, t->w->url, dropped, t->app->o.webhook_queue_max);
    }
    pump(t);
}

static void on_flush(px_timer_t *tm)
{
    phooks_t *h = tm->data;
    for (size_t i = 0; i < h->ntargets; i++)
        if (h->targets[i].ev_head)
            batch_up(&h->targets[i]);
}

static int filter_ok(const px_pusher_webhook_t *w, px_str_t ch)
{
    if (w->channel_prefix && *w->channel_prefix) {
        size_t n = strlen(w->channel_prefix);
        if (ch.len < n || memcmp(ch.ptr, w->channel_prefix, n) != 0)
            return 0;
    }
    if (w->channel_suffix && *w->channel_suffix) {
        size_t n = strlen(w->channel_suffix);
        if (ch.len < n || memcmp(ch.ptr + ch.len - n, w->channel_suffix, n) != 0)
            return 0;
    }
    return 1;
}

/* Queue one event object for every webhook of `app` that wants it. */
static void emit(phooks_t *h, papp_t *app, int kind, px_str_t channel, const char *json, size_t len)
{
    for (size_t i = 0; i < h->ntargets; i++) {
        htarget_t *t = &h->targets[i];
        if (t->app != app || !(t->w->events & kind_bit[kind]) || !filter_ok(t->w, channel))
            continue;
        hevent_t *e = px__malloc(sizeof *e + len);
        if (!e)
            continue;
        e->next = NULL;
        e->len = len;
        memcpy(e->json, json, len);
        if (t->ev_tail)
            t->ev_tail->next = e;
        else
            t->ev_head = e;
        t->ev_tail = e;
        t->nev++;
    }
    if (!px_timer_active(&h->flush))
        px_timer_start(px_worker_loop(px_worker_self()), &h->flush, BATCH_DELAY_MS);
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"",
                                        "channel_occupied",
                                        "channel_vacated",
                                        "member_added",
                                        "member_removed",
                                        "client_event",
                                        "cache_miss"};
    return names[kind];
}

static void emit_simple(phooks_t *h, papp_t *app, int kind, px_str_t ch, px_str_t user)
{
    char buf[PX__CHANNEL_MAX + 512];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"name\":");
    px_json_put_str(&w, kind_name(kind), strlen(kind_name(kind)));
    PX_JSON_PUT_LIT(&w, ",\"channel\":");
    px_json_put_str(&w, ch.ptr, ch.len);
    if (user.len) {
        PX_JSON_PUT_LIT(&w, ",\"user_id\":");
        px_json_put_str(&w, user.ptr, user.len);
    }
    PX_JSON_PUT_LIT(&w, "}");
    if (!w.err)
        emit(h, app, kind, ch, w.buf, w.len);
}

/* ---- debounced presence -----------------------------------------------------------------------
 */

static void pend_unlink(phooks_t *h, hpend_t *pd)
{
    px__hashmap_del(&h->pend, &pd->e);
    if (pd->prev)
        pd->prev->next = pd->next;
    else
        h->pend_head = pd->next;
    if (pd->next)
        pd->next->prev = pd->prev;
}

static void on_debounce(px_timer_t *tm)
{
    phooks_t *h = tm->data;
    uint64_t now = px_now_ms();
    for (hpend_t *pd = h->pend_head, *next; pd; pd = next) {
        next = pd->next;
        if (pd->due > now)
            continue;
        pend_unlink(h, pd);
        emit_simple(h, pd->app, pd->kind, (px_str_t){pd->key + 1, pd->clen},
                    (px_str_t){pd->key + 2 + pd->clen, pd->ulen});
        px__free(pd);
    }
    if (h->pend_head)
        px_timer_start(px_worker_loop(px_worker_self()), tm, 250);
}

static void member_event(phooks_t *h, papp_t *app, int kind, px_str_t ch, px_str_t user)
{
    size_t klen = 1 + ch.len + 1 + user.len;
    char key[1 + PX__CHANNEL_MAX + 2 + PX__USER_MAX];
    if (klen > sizeof key)
        return;
    key[0] = (char)app->index;
    memcpy(key + 1, ch.ptr, ch.len);
    key[1 + ch.len] = '\0';
    memcpy(key + 2 + ch.len, user.ptr, user.len);
    px__hentry_t *e = px__hashmap_get(&h->pend, key, klen);
    if (e) { /* the opposite event is waiting: the user came back (or left at once) */
        hpend_t *pd = PX_CONTAINER_OF(e, hpend_t, e);
        pend_unlink(h, pd);
        px__free(pd);
        return;
    }
    hpend_t *pd = px__malloc(sizeof *pd + klen);
    if (!pd)
        return;
    memset(pd, 0, sizeof *pd);
    memcpy(pd->key, key, klen);
    pd->e.key = pd->key;
    pd->e.key_len = klen;
    pd->kind = kind;
    pd->app = app;
    pd->clen = ch.len;
    pd->ulen = user.len;
    pd->due = px_now_ms() + DEBOUNCE_MS;
    if (px__hashmap_put(&h->pend, &pd->e) != 0) {
        px__free(pd);
        return;
    }
    pd->next = h->pend_head;
    if (h->pend_head)
        h->pend_head->prev = pd;
    h->pend_head = pd;
    if (!px_timer_active(&h->debounce))
        px_timer_start(px_worker_loop(px_worker_self()), &h->debounce, 250);
}

/* ---- inputs: messages to worker 0 ---------------------------------------------------------------
 */

typedef struct hmsg {
    px_msg_t msg;
    phooks_t *h;
    papp_t *app;
    int kind;
    uint64_t sid;
    size_t clen, ulen, elen, dlen;
    char bytes[]; /* channel, user, event, data */
} hmsg_t;

static void on_hmsg(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(w);
    hmsg_t *x = (hmsg_t *)m;
    phooks_t *h = x->h;
    px_str_t ch = {x->bytes, x->clen}, user = {x->bytes + x->clen, x->ulen};
    if (!px_worker_self()) { /* drained after the workers stopped */
        px__free(x);
        return;
    }
    switch (x->kind) {
    case HK_ADDED:
    case HK_REMOVED: member_event(h, x->app, x->kind, ch, user); break;
    case HK_CLIENT: {
        px_str_t ev = {user.ptr + user.len, x->elen}, data = {ev.ptr + ev.len, x->dlen};
        px_json_writer_t jw;
        px_json_writer_init_growable(&jw, 4u << 20);
        PX_JSON_PUT_LIT(&jw, "{\"name\":\"client_event\",\"channel\":");
        px_json_put_str(&jw, ch.ptr, ch.len);
        PX_JSON_PUT_LIT(&jw, ",\"event\":");
        px_json_put_str(&jw, ev.ptr, ev.len);
        PX_JSON_PUT_LIT(&jw, ",\"data\":");
        if (data.len && data.ptr[0] == '"')
            px_json_put_raw(&jw, data.ptr, data.len);
        else
            px_json_put_str(&jw, data.ptr, data.len);
        char sid[32];
        px__pusher_socket_id(x->sid, sid, sizeof sid);
        PX_JSON_PUT_LIT(&jw, ",\"socket_id\":");
        px_json_put_str(&jw, sid, strlen(sid));
        if (user.len) {
            PX_JSON_PUT_LIT(&jw, ",\"user_id\":");
            px_json_put_str(&jw, user.ptr, user.len);
        }
        PX_JSON_PUT_LIT(&jw, "}");
        if (!jw.err)
            emit(h, x->app, HK_CLIENT, ch, jw.buf, jw.len);
        px_json_writer_dispose(&jw);
        break;
    }
    default: emit_simple(h, x->app, x->kind, ch, (px_str_t){NULL, 0}); break;
    }
    px__free(x);
}

static void post(phooks_t *h, papp_t *app, int kind, px_str_t ch, px_str_t user, px_str_t ev,
                 px_str_t data, uint64_t sid)
{
    hmsg_t *x = px__malloc(sizeof *x + ch.len + user.len + ev.len + data.len);
    if (!x)
        return;
    x->msg.cb = on_hmsg;
    x->h = h;
    x->app = app;
    x->kind = kind;
    x->sid = sid;
    x->clen = ch.len;
    x->ulen = user.len;
    x->elen = ev.len;
    x->dlen = data.len;
    char *b = x->bytes;
    const px_str_t parts[] = {ch, user, ev, data};
    for (int i = 0; i < 4; i++) {
        if (parts[i].len)
            memcpy(b, parts[i].ptr, parts[i].len);
        b += parts[i].len;
    }
    px_worker_post(px_workers_get(px_server_workers(h->p->server), 0), &x->msg);
}

static const px_str_t none = {NULL, 0};

void px__pusher_hook_client_event(px__pusher_t *p, papp_t *app, px_str_t channel, px_str_t event,
                                  px_str_t data, uint64_t sid, px_str_t user)
{
    if (p->hooks)
        post(p->hooks, app, HK_CLIENT, channel, user, event, data, sid);
}

void px__pusher_hook_cache_miss(px__pusher_t *p, papp_t *app, px_str_t channel)
{
    if (p->hooks)
        post(p->hooks, app, HK_CACHE_MISS, channel, none, none, none, 0);
}

/* Observers (hub thread): only channels of an app that wants the event, not users' own
 * channels (#server-to-user-), which are the server's bookkeeping. */
static void obs_occupied(void *ctx, px_str_t channel, int occupied)
{
    phooks_t *h = ctx;
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = 0;
    papp_t *app = px__pusher_app_of_channel(h->p, channel.ptr, channel.len, name, &nl);
    int kind = occupied ? HK_OCCUPIED : HK_VACATED;
    if (app && name[0] != '#' && (app->hook_events & kind_bit[kind]))
        post(h, app, kind, (px_str_t){name, nl}, none, none, none, 0);
}

static void obs_presence(void *ctx, px_str_t channel, int op, const px__presence_t *who)
{
    phooks_t *h = ctx;
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = 0;
    papp_t *app = px__pusher_app_of_channel(h->p, channel.ptr, channel.len, name, &nl);
    int kind = op == PX__JOIN ? HK_ADDED : HK_REMOVED;
    if (app && nl > 9 && memcmp(name, "presence-", 9) == 0 && who->user.len &&
        (app->hook_events & kind_bit[kind]))
        post(h, app, kind, (px_str_t){name, nl}, who->user, none, none, 0);
}

int px__pusher_hooks_init(px__pusher_t *p)
{
    if (!p->hook_events)
        return 0;
    m_sent = px_metric_register("plexus_pusher_webhooks_sent_total",
                                "Webhook requests delivered (2xx)", PX_METRIC_COUNTER);
    m_failed = px_metric_register("plexus_pusher_webhooks_failed_total",
                                  "Webhook requests given up after retrying for 5 minutes",
                                  PX_METRIC_COUNTER);
    m_retries = px_metric_register("plexus_pusher_webhook_retries_total",
                                   "Webhook requests retried", PX_METRIC_COUNTER);
    m_dropped = px_metric_register("plexus_pusher_webhook_events_dropped_total",
                                   "Webhook events dropped from a full queue", PX_METRIC_COUNTER);
    phooks_t *h = px__xcalloc(1, sizeof *h);
    h->p = p;
    p->hooks = h;
    for (size_t i = 0; i < p->napps; i++)
        h->ntargets += p->apps[i].o.nwebhooks;
    h->targets = px__xcalloc(h->ntargets, sizeof *h->targets);
    size_t k = 0;
    for (size_t i = 0; i < p->napps; i++)
        for (size_t j = 0; j < p->apps[i].o.nwebhooks; j++, k++) {
            htarget_t *t = &h->targets[k];
            t->h = h;
            t->app = &p->apps[i];
            t->w = &p->apps[i].o.webhooks[j];
            px_timer_init(&t->retry, on_retry, t);
        }
    px_timer_init(&h->flush, on_flush, h);
    px_timer_init(&h->debounce, on_debounce, h);
    px__hashmap_init(&h->pend);
    h->obs = (px__hobserver_t){.occupied = obs_occupied, .presence = obs_presence, .ctx = h};
    unsigned want = PX_PUSHER_HOOK_CHANNEL_OCCUPIED | PX_PUSHER_HOOK_CHANNEL_VACATED |
                    PX_PUSHER_HOOK_MEMBER_ADDED | PX_PUSHER_HOOK_MEMBER_REMOVED;
    return p->hook_events & want ? px__hub_add_observer(p->hub, &h->obs) : 0;
}

void px__pusher_hooks_free(px__pusher_t *p)
{
    phooks_t *h = p->hooks;
    if (!h)
        return;
    size_t lost = 0;
    for (size_t i = 0; i < h->ntargets; i++) {
        htarget_t *t = &h->targets[i];
        px_timer_stop(&t->retry);
        lost += t->nev + t->queued;
        while (t->ev_head) {
            hevent_t *e = t->ev_head;
            t->ev_head = e->next;
            px__free(e);
        }
        while (t->q_head)
            batch_drop_head(t);
    }
    if (lost)
        px_log(PX_LOG_WARN, "pusher: %zu webhook event(s) not delivered at shutdown", lost);
    px_timer_stop(&h->flush);
    px_timer_stop(&h->debounce);
    while (h->pend_head) {
        hpend_t *pd = h->pend_head;
        pend_unlink(h, pd);
        px__free(pd);
    }
    px__hashmap_dispose(&h->pend);
    px__free(h->targets);
    px__free(h);
    p->hooks = NULL;
}
