/* The hub's front ends, on the workers: the native WebSocket protocol at /ws,
 * the HTTP API under /api, Server-Sent Events and /metrics. Each worker keeps
 * its own sessions and a local index channel -> subscriptions; requests go to
 * the hub thread as messages and come back as replies and deliveries. */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "hub/hub_int.h"
#include "hub/json.h"
#include "plexus/version.h"

#define MAX_TOKENS 512

typedef struct session session_t;
typedef struct local_chan local_chan_t;

typedef struct sub {
    session_t *s;
    local_chan_t *lc;          /* set once active */
    struct sub *cprev, *cnext; /* in the local channel, once active */
    struct sub *snext;         /* in the session */
    unsigned presence : 1;     /* wants join/leave events */
    unsigned active : 1;       /* the hub confirmed: deliveries reach it */
    unsigned catching_up : 1;  /* the hub counted it; history pages go out before it is active */
    unsigned cancelled : 1;    /* unsubscribed while the subscribe was at the hub */
    unsigned cancel_has_id : 1;
    int64_t cancel_id; /* the unsubscribe's id, answered after the subscribe's reply */
    uint64_t cursor;   /* catching up: offset of the last message replayed */
    size_t name_len;
    char name[PX__CHANNEL_MAX + 1];
} sub_t;

struct local_chan {
    px__centry_t e;
    sub_t *subs;
    unsigned count;
    size_t name_len;
    char name[PX__CHANNEL_MAX + 1];
};

/* Paced requests: answers that can be long (history, catch-up pages) go to the hub one
 * at a time per session, the next only once the previous answer has been written out
 * (the connection drained). A client that reads slowly gets its backlog slowly instead of
 * overflowing its output budget, and holds the hub to one bounded read at a time. */
enum { PACED_IDLE, PACED_AT_HUB, PACED_DRAINING };

typedef struct bucket {
    double tokens; /* token-bucket rate limiter */
    uint64_t ms;
} bucket_t;

struct session {
    int kind; /* ORIGIN_WS or ORIGIN_SSE */
    px_hub_t *hub;
    unsigned worker;
    px_ws_t *ws;
    px_req_t *req; /* SSE stream */
    session_t *sse_prev, *sse_next;
    px_jwt_claims_t *claims; /* NULL: anonymous */
    sub_t *subs;
    unsigned nsubs;
    unsigned pending; /* requests at the hub thread: the session lives until they return */
    unsigned dead : 1;
    unsigned authorized : 1;      /* passed the token / anonymous check */
    unsigned paced : 2;           /* PACED_*: the paced request in progress */
    hub_req_t *pq_head, *pq_tail; /* paced requests waiting for their turn */
    unsigned npq;
    sub_t *paced_sub;    /* the subscription whose page is at the hub (NULL once dropped) */
    px_timer_t expiry;   /* the token's exp: the session ends then (unless renewed) */
    bucket_t publishes;  /* --publish-rate */
    bucket_t subscribes; /* --subscribe-rate (subscribe and unsubscribe) */
    char client[PX__CLIENT_ID_LEN + 1];
};

typedef struct hub_local {
    px_hub_t *hub;
    px__chanmap_t chans;
    session_t *sse; /* SSE sessions, for keep-alive comments */
    px_timer_t sse_timer;
    int sse_timer_on;
} hub_local_t;

static hub_local_t *local_of(px_hub_t *h, unsigned worker)
{
    return &h->locals[worker];
}

/* ---- sessions and subscriptions ------------------------------------------------------ */

static void session_maybe_free(session_t *s)
{
    if (!s->dead || s->pending)
        return;
    px__free(s->claims);
    px__free(s);
}

/* The session's subscription to `name`, active or waiting for the hub;
 * one that was unsubscribed while waiting no longer counts. */
static sub_t *find_sub(session_t *s, const char *name, size_t len)
{
    for (sub_t *u = s->subs; u; u = u->snext)
        if (!u->cancelled && u->name_len == len && memcmp(u->name, name, len) == 0)
            return u;
    return NULL;
}

static void req_release(hub_req_t *r)
{
    px__free(r->data);
    px__free(r->user);
    px__free(r->info);
    px__free(r->claims);
    px__free(r);
}

/* Unlink and free `u`, which is not (or no longer) active, with its queued pages. */
static void forget_sub(session_t *s, sub_t *u)
{
    for (sub_t **pp = &s->subs; *pp; pp = &(*pp)->snext)
        if (*pp == u) {
            *pp = u->snext;
            break;
        }
    s->nsubs--;
    hub_req_t *prev = NULL;
    for (hub_req_t *r = s->pq_head, *next; r; r = next) {
        next = r->next;
        if (r->tag != u) {
            prev = r;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            s->pq_head = next;
        if (s->pq_tail == r)
            s->pq_tail = prev;
        s->npq--;
        req_release(r);
    }
    if (s->paced_sub == u)
        s->paced_sub = NULL; /* its page answer, when it comes, is dropped */
    px__free(u);
}

static void activate(session_t *s, sub_t *u)
{
    hub_local_t *L = local_of(s->hub, s->worker);
    px__centry_t *e = px__chanmap_get(&L->chans, u->name, u->name_len);
    local_chan_t *lc = e ? PX_CONTAINER_OF(e, local_chan_t, e) : NULL;
    if (!lc) {
        lc = px__xcalloc(1, sizeof *lc);
        memcpy(lc->name, u->name, u->name_len);
        lc->name_len = u->name_len;
        lc->e.key = lc->name;
        lc->e.key_len = lc->name_len;
        if (px__chanmap_put(&L->chans, &lc->e) != 0) {
            px__free(lc);
            return;
        }
    }
    u->lc = lc;
    u->active = 1;
    u->cprev = NULL;
    u->cnext = lc->subs;
    if (lc->subs)
        lc->subs->cprev = u;
    lc->subs = u;
    lc->count++;
}

static void deactivate(session_t *s, sub_t *u)
{
    if (!u->active)
        return;
    local_chan_t *lc = u->lc;
    if (u->cprev)
        u->cprev->cnext = u->cnext;
    else
        lc->subs = u->cnext;
    if (u->cnext)
        u->cnext->cprev = u->cprev;
    u->active = 0;
    u->lc = NULL;
    if (--lc->count == 0) {
        hub_local_t *L = local_of(s->hub, s->worker);
        px__chanmap_del(&L->chans, &lc->e);
        px__free(lc);
    }
}

static hub_req_t *req_new(session_t *s, int type, const char *channel, size_t len)
{
    hub_req_t *r = px__xcalloc(1, sizeof *r);
    r->type = type;
    r->worker = s ? s->worker : 0;
    r->origin_kind = s ? s->kind : ORIGIN_HTTP;
    r->origin = s;
    if (channel) {
        memcpy(r->channel, channel, len);
        r->channel_len = len;
    }
    return r;
}

/* Tell the hub thread that `s` left `name` (it counted the subscription). */
static void post_unsubscribe(session_t *s, const char *name, size_t len)
{
    hub_req_t *r = req_new(s, HREQ_UNSUBSCRIBE, name, len);
    r->origin = NULL; /* no reply */
    if (s->kind == ORIGIN_WS)
        memcpy(r->client, s->client, sizeof r->client);
    px__hub_post(s->hub, r);
}

/* Remove `u` from `s` and tell the hub thread. */
static void drop_sub(session_t *s, sub_t *u)
{
    deactivate(s, u);
    post_unsubscribe(s, u->name, u->name_len);
    forget_sub(s, u);
}

static void session_close(session_t *s)
{
    /* Subscriptions still waiting for their reply are dropped when it comes; those the
     * hub counted (live or catching up) are dropped now. */
    sub_t *u = s->subs;
    while (u) {
        sub_t *next = u->snext;
        if (u->active || u->catching_up)
            drop_sub(s, u);
        u = next;
    }
    while (s->pq_head) {
        hub_req_t *r = s->pq_head;
        s->pq_head = r->next;
        req_release(r);
    }
    s->pq_tail = NULL;
    s->npq = 0;
    px_timer_stop(&s->expiry);
    if (s->kind == ORIGIN_SSE) {
        hub_local_t *L = local_of(s->hub, s->worker);
        if (s->sse_prev)
            s->sse_prev->sse_next = s->sse_next;
        else
            L->sse = s->sse_next;
        if (s->sse_next)
            s->sse_next->sse_prev = s->sse_prev;
    }
    s->dead = 1;
    s->ws = NULL;
    s->req = NULL;
    session_maybe_free(s);
}

/* ---- WebSocket output ------------------------------------------------------------------ */

static void ws_text(session_t *s, const char *p, size_t n)
{
    if (s->ws)
        px_ws_send(s->ws, PX_WS_TEXT, p, n);
}

static void ws_error(session_t *s, int has_id, int64_t id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void ws_error(session_t *s, int has_id, int64_t id, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char buf[512];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"error\"");
    if (has_id) {
        PX_JSON_PUT_LIT(&w, ",\"id\":");
        px_json_put_i64(&w, id);
    }
    PX_JSON_PUT_LIT(&w, ",\"code\":");
    px_json_put_str(&w, code, strlen(code));
    PX_JSON_PUT_LIT(&w, ",\"message\":");
    px_json_put_str(&w, msg, strlen(msg));
    PX_JSON_PUT_LIT(&w, "}");
    if (!w.err)
        ws_text(s, w.buf, w.len);
}

/* ---- paced requests ------------------------------------------------------------------------- */

/* Bytes of messages per history answer or catch-up page: a quarter of the output budget
 * (the page is written only once the connection has drained), at most PX__PAGE_MAX. */
static size_t page_bytes(const session_t *s)
{
    size_t cap = px_server_opts(s->hub->server)->output_cap / 4;
    return cap < 1 ? 1 : cap > PX__PAGE_MAX ? PX__PAGE_MAX : cap;
}

static size_t session_output(const session_t *s)
{
    if (s->ws)
        return px_conn_pending(px_ws_conn(s->ws));
    return s->req ? px_stream_pending(s->req) : 0;
}

static void paced_pump(session_t *s)
{
    while (s->paced == PACED_IDLE && s->pq_head && !s->dead) {
        hub_req_t *r = s->pq_head;
        s->pq_head = r->next;
        if (!s->pq_head)
            s->pq_tail = NULL;
        s->npq--;
        r->next = NULL;
        r->paced = 1;
        if (r->type == HREQ_PAGE)
            s->paced_sub = r->tag;
        s->paced = PACED_AT_HUB;
        s->pending++;
        px__hub_post(s->hub, r);
    }
}

static void paced_push(session_t *s, hub_req_t *r)
{
    r->next = NULL;
    if (s->pq_tail)
        s->pq_tail->next = r;
    else
        s->pq_head = r;
    s->pq_tail = r;
    s->npq++;
    paced_pump(s);
}

/* The paced answer has been queued for the client: the next waits until it is written. */
static void paced_done(session_t *s)
{
    s->paced_sub = NULL;
    s->paced = session_output(s) ? PACED_DRAINING : PACED_IDLE;
    paced_pump(s);
}

static void session_drained(session_t *s)
{
    if (s->paced == PACED_DRAINING) {
        s->paced = PACED_IDLE;
        paced_pump(s);
    }
}

/* Ask for the next catch-up page of `u`. */
static void queue_page(session_t *s, sub_t *u)
{
    hub_req_t *r = req_new(s, HREQ_PAGE, u->name, u->name_len);
    r->since_offset = u->cursor;
    r->max_bytes = page_bytes(s);
    r->tag = u;
    paced_push(s, r);
}

static int rate_ok(bucket_t *b, unsigned rate)
{
    if (!rate)
        return 1;
    uint64_t now = px_now_ms();
    b->tokens += (double)(now - b->ms) * rate / 1000.0;
    if (b->tokens > rate)
        b->tokens = rate;
    b->ms = now;
    if (b->tokens < 1)
        return 0;
    b->tokens -= 1;
    return 1;
}

static void bucket_init(bucket_t *b, unsigned rate)
{
    b->tokens = rate;
    b->ms = px_now_ms();
}

/* ---- auth ---------------------------------------------------------------------------------- */

/* Verify a client token. Returns 0 and *out (malloc'd claims) or an error text. */
static const char *verify_token(px_hub_t *h, px_str_t tok, px_jwt_claims_t **out)
{
    if (!h->opts.jwt_secret)
        return "this server does not accept tokens (no --jwt-secret)";
    px_jwt_claims_t *c = px__xmalloc(sizeof *c);
    const char *why = NULL;
    int r = px_jwt_verify_hs256(tok.ptr, tok.len, (const uint8_t *)h->opts.jwt_secret,
                                strlen(h->opts.jwt_secret), (int64_t)time(NULL), c, &why);
    if (r) {
        px__free(c);
        return why ? why : "invalid token";
    }
    *out = c;
    return NULL;
}

static int allowed(const session_t *s, int action, const char *ch, size_t len)
{
    if (!s->claims || !s->claims->has_channels)
        return 1; /* anonymous (allowed by config) or a token without a channels claim */
    return px_jwt_channel_allowed(s->claims, action, ch, len);
}

/* ---- the native protocol --------------------------------------------------------------------- */

/* ---- token expiry ---------------------------------------------------------------------------- */

static void sse_end(session_t *s);

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A token is valid until its exp, not only when the connection opens: then the
 * session ends (WebSocket: an error with code token_expired and close 1008; SSE: a
 * "token-expired" event and the end of the stream) unless {"op":"auth"} renewed it. */
static void on_expiry(px_timer_t *t)
{
    session_t *s = t->data;
    if (s->dead)
        return;
    s->authorized = 0; /* nothing more is taken from it */
    if (s->ws) {
        ws_error(s, 0, 0, "token_expired",
                 "the token expired: renew it with {\"op\":\"auth\"} before it does, or reconnect");
        px_ws_close(s->ws, 1008, "token expired");
    } else if (s->req) {
        static const char ev[] = "event: token-expired\ndata: {\"error\":\"token_expired\","
                                 "\"message\":\"the token expired\"}\n\n";
        px_stream_write(s->req, ev, sizeof ev - 1);
        sse_end(s);
    }
}

static void arm_expiry(session_t *s)
{
    px_timer_stop(&s->expiry);
    if (!s->claims || !s->claims->exp)
        return;
    int64_t ms = s->claims->exp * 1000 - wall_ms();
    px_timer_start(px_worker_loop(px_worker_self()), &s->expiry, ms > 0 ? (uint64_t)ms : 0);
}

static void ws_open(px_ws_t *ws, px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    session_t *s = px__xcalloc(1, sizeof *s);
    s->kind = ORIGIN_WS;
    s->hub = h;
    s->worker = px_worker_id(px_conn_worker(px_ws_conn(ws)));
    s->ws = ws;
    bucket_init(&s->publishes, h->opts.publish_rate);
    bucket_init(&s->subscribes, h->opts.subscribe_rate);
    px_timer_init(&s->expiry, on_expiry, s);
    unsigned char rnd[PX__CLIENT_ID_LEN / 2];
    px_random(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(s->client + 2 * i, 3, "%02x", rnd[i]);
    px_ws_set_data(ws, s);

    px_str_t tok;
    int have = px_req_query_param(req, "token", &tok) == 1 && tok.len;
    px_str_t auth = px_req_header(req, "authorization");
    if (!have && auth.len > 7 && strncasecmp(auth.ptr, "Bearer ", 7) == 0) {
        tok = (px_str_t){auth.ptr + 7, auth.len - 7};
        have = 1;
    }
    const char *why = NULL;
    if (have)
        why = verify_token(h, tok, &s->claims);
    else if (!h->opts.allow_anonymous)
        why = "a token is required (?token=<JWT>)";
    if (why) {
        ws_error(s, 0, 0, "unauthorized", "%s", why);
        px_ws_close(ws, 1008, "unauthorized");
        return;
    }
    s->authorized = 1;
    arm_expiry(s);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "{\"op\":\"welcome\",\"client\":\"%s\",\"version\":\"%s\"}",
                     s->client, PX_VERSION_STRING);
    ws_text(s, buf, (size_t)n);
}

static void ws_close_cb(px_ws_t *ws, int code, px_str_t reason, void *ud)
{
    PX_UNUSED(code);
    PX_UNUSED(reason);
    PX_UNUSED(ud);
    session_t *s = px_ws_get_data(ws);
    if (s)
        session_close(s);
}

/* A history request without "limit" gets 100 messages, or fewer if
 * --history-limit-max is lower (the default must be a valid limit). */
static uint64_t default_limit(const px_hub_t *h)
{
    return h->opts.history_limit_max < 100 ? h->opts.history_limit_max : 100;
}

static void unsub_reply(session_t *s, int has_id, int64_t id, const char *channel, size_t clen)
{
    char buf[PX__CHANNEL_MAX + 80];
    int n = has_id
                ? snprintf(buf, sizeof buf, "{\"op\":\"reply\",\"id\":%lld,\"channel\":\"%.*s\"}",
                           (long long)id, (int)clen, channel)
                : snprintf(buf, sizeof buf, "{\"op\":\"reply\",\"channel\":\"%.*s\"}", (int)clen,
                           channel);
    ws_text(s, buf, (size_t)n);
}

static void ws_auth(session_t *s, int has_id, int64_t id, px_json_doc_t *doc, int tok);

static void ws_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    px_hub_t *h = ud;
    session_t *s = px_ws_get_data(ws);
    if (!s || !s->authorized)
        return; /* being closed as unauthorized */
    if (opcode != PX_WS_TEXT) {
        ws_error(s, 0, 0, "bad_request", "the protocol uses JSON text frames");
        return;
    }
    px_json_tok_t toks[MAX_TOKENS];
    px_json_doc_t doc;
    if (px_json_parse(&doc, data, len, toks, MAX_TOKENS, 32) < 0) {
        char why[128];
        px_json_format_error(&doc, why, sizeof why);
        if (doc.err == PX_JSON_E_TOKENS || doc.err == PX_JSON_E_DEPTH)
            ws_error(s, 0, 0, "too_complex", "message too complex: %s", why);
        else
            ws_error(s, 0, 0, "invalid_json", "%s", why);
        return;
    }
    if (toks[0].type != PX_JSON_OBJECT) {
        ws_error(s, 0, 0, "bad_request", "a message is a JSON object");
        return;
    }
    static const char *const keys[] = {"op",       "id",    "channel", "data", "since",
                                       "presence", "limit", "info",    "token"};
    enum { K_OP, K_ID, K_CHANNEL, K_DATA, K_SINCE, K_PRESENCE, K_LIMIT, K_INFO, K_TOKEN, K_COUNT };
    int v[K_COUNT];
    size_t dup;
    if (px_json_get_keys(&doc, 0, keys, K_COUNT, v, &dup) != 0) {
        /* The answer still carries the id when "id" itself is unambiguous. */
        int64_t did = 0;
        int it = dup != K_ID ? px_json_get(&doc, 0, "id") : -1;
        int has = it >= 0 && px_json_get_i64(&doc, it, &did) == 0;
        ws_error(s, has, did, "bad_request", "duplicate \"%s\"", keys[dup]);
        return;
    }
    int has_id = v[K_ID] >= 0;
    int64_t id = 0;
    if (has_id && px_json_get_i64(&doc, v[K_ID], &id) != 0) {
        ws_error(s, 0, 0, "bad_request", "\"id\" must be an integer");
        return;
    }
    char op[16];
    if (v[K_OP] < 0 || toks[v[K_OP]].type != PX_JSON_STRING ||
        px_json_unescape(&doc, v[K_OP], op, sizeof op) < 0) {
        ws_error(s, has_id, id, "bad_request", "missing or invalid \"op\"");
        return;
    }
    if (strcmp(op, "ping") == 0) {
        char buf[64];
        int n = has_id ? snprintf(buf, sizeof buf, "{\"op\":\"pong\",\"id\":%lld}", (long long)id)
                       : snprintf(buf, sizeof buf, "{\"op\":\"pong\"}");
        ws_text(s, buf, (size_t)n);
        return;
    }
    if (strcmp(op, "auth") == 0) {
        ws_auth(s, has_id, id, &doc, v[K_TOKEN]);
        return;
    }
    int is_sub = strcmp(op, "subscribe") == 0, is_unsub = strcmp(op, "unsubscribe") == 0,
        is_pub = strcmp(op, "publish") == 0, is_hist = strcmp(op, "history") == 0,
        is_pres = strcmp(op, "presence") == 0;
    if (!(is_sub || is_unsub || is_pub || is_hist || is_pres)) {
        ws_error(s, has_id, id, "unknown_op", "unknown op \"%s\"", op);
        return;
    }
    char channel[PX__CHANNEL_MAX + 1];
    int cl = v[K_CHANNEL] >= 0 && toks[v[K_CHANNEL]].type == PX_JSON_STRING
                 ? px_json_unescape(&doc, v[K_CHANNEL], channel, sizeof channel)
                 : -1;
    if (cl < 0 || !px__channel_name_ok(channel, (size_t)cl)) {
        ws_error(s, has_id, id, "invalid_channel",
                 "\"channel\" must be 1-200 bytes of A-Z a-z 0-9 _ - = @ , . ; : /");
        return;
    }
    size_t clen = (size_t)cl;
    if ((is_sub || is_unsub) && !rate_ok(&s->subscribes, h->opts.subscribe_rate)) {
        ws_error(s, has_id, id, "rate_limited",
                 "more than %u subscribes and unsubscribes per second", h->opts.subscribe_rate);
        return;
    }
    if (!is_unsub && s->pending + s->npq >= h->opts.max_inflight) {
        ws_error(s, has_id, id, "too_many_requests",
                 "%u requests of this connection are still being answered", s->pending + s->npq);
        return;
    }

    if (is_unsub) {
        sub_t *u = find_sub(s, channel, clen);
        if (!u) {
            ws_error(s, has_id, id, "not_subscribed", "not subscribed to %s", channel);
            return;
        }
        if (!u->active && !u->catching_up) {
            /* The subscribe is still at the hub. The hub thread takes this
             * worker's requests in order, so it applies the unsubscribe right
             * after it; the answer waits for the subscribe's reply. */
            u->cancelled = 1;
            u->cancel_has_id = has_id != 0;
            u->cancel_id = id;
            post_unsubscribe(s, channel, clen);
            return;
        }
        drop_sub(s, u);
        unsub_reply(s, has_id, id, channel, clen);
        return;
    }
    int action = is_pub ? PX_JWT_PUBLISH : PX_JWT_SUBSCRIBE;
    if (!allowed(s, action, channel, clen)) {
        ws_error(s, has_id, id, "forbidden", "your token does not allow %s on %s",
                 is_pub ? "publish" : "subscribe", channel);
        return;
    }

    hub_req_t *r;
    if (is_sub) {
        if (find_sub(s, channel, clen)) {
            ws_error(s, has_id, id, "already_subscribed", "already subscribed to %s", channel);
            return;
        }
        if (s->nsubs >= h->opts.max_channels) {
            ws_error(s, has_id, id, "too_many_channels", "at most %u channels per connection",
                     h->opts.max_channels);
            return;
        }
        r = req_new(s, HREQ_SUBSCRIBE, channel, clen);
        if (v[K_SINCE] >= 0) {
            int st = v[K_SINCE];
            int eo = -1, oo = -1;
            if (toks[st].type == PX_JSON_OBJECT) {
                eo = px_json_get(&doc, st, "epoch");
                oo = px_json_get(&doc, st, "offset");
            }
            if (oo < 0 || px_json_get_u64(&doc, oo, &r->since_offset) != 0 ||
                (eo >= 0 &&
                 (toks[eo].type != PX_JSON_STRING ||
                  px_json_unescape(&doc, eo, r->since_epoch, sizeof r->since_epoch) < 0))) {
                px__free(r);
                ws_error(s, has_id, id, "bad_request",
                         "\"since\" must be {\"epoch\":\"...\",\"offset\":N}");
                return;
            }
            r->has_since = 1;
        }
        bool pres = false;
        if (v[K_PRESENCE] >= 0 && px_json_get_bool(&doc, v[K_PRESENCE], &pres) != 0) {
            px__free(r);
            ws_error(s, has_id, id, "bad_request", "\"presence\" must be true or false");
            return;
        }
        r->presence = pres;
        memcpy(r->client, s->client, sizeof r->client);
        if (s->claims && s->claims->sub_len) {
            r->user = px__xmalloc(s->claims->sub_len);
            memcpy(r->user, s->claims->sub, s->claims->sub_len);
            r->user_len = s->claims->sub_len;
        }
        if (s->claims && s->claims->info.ptr) {
            r->info = px__xmalloc(s->claims->info.len);
            memcpy(r->info, s->claims->info.ptr, s->claims->info.len);
            r->info_len = s->claims->info.len;
        } else if (!s->claims && v[K_INFO] >= 0) {
            /* Anonymous clients describe themselves; a token's info is never overridden. */
            px_str_t raw = px_json_raw(&doc, v[K_INFO]);
            if (raw.len > 1024) {
                px__free(r->user);
                px__free(r);
                ws_error(s, has_id, id, "bad_request", "\"info\" is limited to 1024 bytes");
                return;
            }
            r->info = px__xmalloc(raw.len);
            memcpy(r->info, raw.ptr, raw.len);
            r->info_len = raw.len;
        }
        sub_t *u = px__xcalloc(1, sizeof *u);
        u->s = s;
        u->presence = pres;
        memcpy(u->name, channel, clen);
        u->name_len = clen;
        u->snext = s->subs;
        s->subs = u;
        s->nsubs++;
        r->tag = u;
        if (r->has_since && s->paced == PACED_IDLE && !s->pq_head) {
            /* The first page of the replay comes with the reply; the rest as it drains. */
            r->max_bytes = page_bytes(s);
            r->paced = 1;
            s->paced = PACED_AT_HUB;
        }
    } else if (is_pub) {
        if (v[K_DATA] < 0) {
            ws_error(s, has_id, id, "bad_request", "publish needs \"data\"");
            return;
        }
        px_str_t raw = px_json_raw(&doc, v[K_DATA]);
        if (raw.len > h->opts.max_payload) {
            ws_error(s, has_id, id, "payload_too_large", "data is %zu bytes; the limit is %zu",
                     raw.len, h->opts.max_payload);
            return;
        }
        if (!rate_ok(&s->publishes, h->opts.publish_rate)) {
            ws_error(s, has_id, id, "rate_limited", "more than %u publishes per second",
                     h->opts.publish_rate);
            return;
        }
        r = req_new(s, HREQ_PUBLISH, channel, clen);
        r->data = px__xmalloc(raw.len ? raw.len : 1);
        memcpy(r->data, raw.ptr, raw.len);
        r->data_len = raw.len;
    } else if (is_hist) {
        r = req_new(s, HREQ_HISTORY, channel, clen);
        uint64_t limit = default_limit(h);
        if (v[K_SINCE] >= 0) {
            int st = v[K_SINCE];
            int oo = toks[st].type == PX_JSON_OBJECT ? px_json_get(&doc, st, "offset") : st;
            if (oo < 0 || px_json_get_u64(&doc, oo, &r->since_offset) != 0) {
                px__free(r);
                ws_error(s, has_id, id, "bad_request",
                         "\"since\" must be an offset or {\"offset\":N}");
                return;
            }
        }
        if (v[K_LIMIT] >= 0 && (px_json_get_u64(&doc, v[K_LIMIT], &limit) != 0 || limit == 0 ||
                                limit > h->opts.history_limit_max)) {
            px__free(r);
            ws_error(s, has_id, id, "bad_request", "\"limit\" must be 1..%u",
                     h->opts.history_limit_max);
            return;
        }
        r->limit = (size_t)limit;
        r->max_bytes = page_bytes(s);
        r->has_id = has_id;
        r->id = id;
        paced_push(s, r);
        return;
    } else {
        r = req_new(s, HREQ_PRESENCE, channel, clen);
    }
    r->has_id = has_id;
    r->id = id;
    s->pending++;
    px__hub_post(h, r);
}

/* {"op":"auth","token":"<JWT>"}: renew the connection's token before it expires. The new
 * token must be valid, name the same user (sub) and allow every current subscription;
 * otherwise the old one stays. */
static void ws_auth(session_t *s, int has_id, int64_t id, px_json_doc_t *doc, int tok)
{
    char buf[PX_JWT_MAX_TOKEN + 1];
    int n = tok >= 0 && doc->toks[tok].type == PX_JSON_STRING
                ? px_json_unescape(doc, tok, buf, sizeof buf)
                : -1;
    if (n <= 0) {
        ws_error(s, has_id, id, "bad_request", "auth needs \"token\": a JWT of at most %d bytes",
                 PX_JWT_MAX_TOKEN);
        return;
    }
    if (!s->claims) {
        ws_error(s, has_id, id, "forbidden", "this connection has no token to renew");
        return;
    }
    px_jwt_claims_t *c = NULL;
    const char *why = verify_token(s->hub, (px_str_t){buf, (size_t)n}, &c);
    if (why) {
        ws_error(s, has_id, id, "unauthorized", "%s", why);
        return;
    }
    if (c->sub_len != s->claims->sub_len || memcmp(c->sub, s->claims->sub, c->sub_len) != 0) {
        px__free(c);
        ws_error(s, has_id, id, "forbidden", "the new token names another user");
        return;
    }
    for (sub_t *u = s->subs; u; u = u->snext) {
        if (!u->cancelled && c->has_channels &&
            !px_jwt_channel_allowed(c, PX_JWT_SUBSCRIBE, u->name, u->name_len)) {
            px__free(c);
            ws_error(s, has_id, id, "forbidden", "the new token does not allow subscribe on %.*s",
                     (int)u->name_len, u->name);
            return;
        }
    }
    px__free(s->claims);
    s->claims = c;
    arm_expiry(s);
    char out[96];
    int k = snprintf(out, sizeof out, "{\"op\":\"reply\"");
    if (has_id)
        k += snprintf(out + k, sizeof out - (size_t)k, ",\"id\":%lld", (long long)id);
    if (c->exp)
        k += snprintf(out + k, sizeof out - (size_t)k, ",\"exp\":%lld", (long long)c->exp);
    k += snprintf(out + k, sizeof out - (size_t)k, "}");
    ws_text(s, out, (size_t)k);
}

static void ws_drain(px_ws_t *ws, void *ud)
{
    PX_UNUSED(ud);
    session_t *s = px_ws_get_data(ws);
    if (s)
        session_drained(s);
}

static const px_ws_callbacks_t hub_ws_callbacks = {
    .on_open = ws_open,
    .on_message = ws_message,
    .on_drain = ws_drain,
    .on_close = ws_close_cb,
};

/* ---- replies and deliveries (on the worker) -------------------------------------------------- */

static void rep_free(hub_rep_t *rep)
{
    for (size_t i = 0; i < rep->nframes; i++)
        px_slice_unref(rep->frames[i]);
    px__free(rep->frames);
    px__free(rep->body);
    px__free(rep);
}

static void sse_end(session_t *s)
{
    px_req_t *req = s->req;
    if (!req)
        return;
    session_close(s);
    px_stream_end(req);
}

static void session_frames(session_t *s, hub_rep_t *rep)
{
    if (s->kind == ORIGIN_WS) {
        for (size_t i = 0; i < rep->nframes && s->ws; i++)
            px_ws_send_frame(s->ws, rep->frames[i]);
    } else {
        for (size_t i = 0; i < rep->nframes && s->req; i++)
            if (px_stream_write_slice(s->req, rep->frames[i], 0, rep->frames[i]->len) != 0) {
                sse_end(s);
                return;
            }
    }
}

/* A replay page went out: live from here, or ask for the next one. */
static void after_page(session_t *s, sub_t *u, const hub_rep_t *rep)
{
    if (rep->final) {
        u->catching_up = 0;
        activate(s, u);
    } else {
        u->catching_up = 1;
        u->cursor = rep->page_last;
        queue_page(s, u);
    }
}

static void subscribe_reply(session_t *s, sub_t *u, hub_rep_t *rep)
{
    if (rep->status >= 400 || rep->err_code) {
        if (s->kind == ORIGIN_WS) {
            ws_error(s, rep->has_id, rep->id, rep->err_code ? rep->err_code : "error", "%s",
                     rep->err_msg);
            if (u->cancelled)
                ws_error(s, u->cancel_has_id, u->cancel_id, "not_subscribed",
                         "not subscribed to %.*s", (int)rep->channel_len, rep->channel);
        }
        forget_sub(s, u);
        if (s->kind != ORIGIN_WS)
            sse_end(s);
        return;
    }
    if (s->kind == ORIGIN_WS)
        ws_text(s, rep->body, rep->body_len);
    if (u->cancelled) {
        /* The hub had the unsubscribe right after: nothing of it goes out. */
        unsub_reply(s, u->cancel_has_id, u->cancel_id, rep->channel, rep->channel_len);
        forget_sub(s, u);
        return;
    }
    session_frames(s, rep);
    if (!s->dead)
        after_page(s, u, rep);
}

static void page_reply(session_t *s, hub_rep_t *rep)
{
    sub_t *u = s->paced_sub; /* NULL if it was dropped meanwhile */
    if (!u)
        return;
    if (rep->status >= 400 || rep->err_code) {
        /* The replay cannot go on: the subscription ends, the client is told. */
        if (s->kind == ORIGIN_WS) {
            ws_error(s, 0, 0, rep->err_code ? rep->err_code : "error",
                     "%s; the subscription to %.*s has ended", rep->err_msg, (int)rep->channel_len,
                     rep->channel);
            drop_sub(s, u);
        } else {
            sse_end(s);
        }
        return;
    }
    session_frames(s, rep);
    if (!s->dead)
        after_page(s, u, rep);
}

static void session_reply(session_t *s, hub_rep_t *rep)
{
    s->pending--;
    sub_t *u = rep->type == HREQ_SUBSCRIBE ? rep->tag : NULL;
    if (s->dead) {
        /* The hub counted a subscription whose session has gone. */
        if (rep->type == HREQ_SUBSCRIBE && !rep->status && !rep->err_code && !(u && u->cancelled))
            post_unsubscribe(s, rep->channel, rep->channel_len);
        if (u) /* never activated */
            forget_sub(s, u);
        session_maybe_free(s);
        return;
    }
    if (u) {
        subscribe_reply(s, u, rep);
    } else if (rep->type == HREQ_PAGE) {
        page_reply(s, rep);
    } else if (s->kind == ORIGIN_WS) {
        if (rep->status >= 400 || rep->err_code)
            ws_error(s, rep->has_id, rep->id, rep->err_code ? rep->err_code : "error", "%s",
                     rep->err_msg);
        else
            ws_text(s, rep->body, rep->body_len);
    }
    if (rep->paced && !s->dead)
        paced_done(s);
}

static void history_reply(px_req_t *req, hub_rep_t *rep);

void px__hub_on_reply(px_worker_t *w, px_msg_t *m)
{
    hub_rep_t *rep = (hub_rep_t *)m;
    PX_UNUSED(w);
    if (rep->origin_kind == ORIGIN_HTTP) {
        px_req_t *req = rep->origin;
        if (rep->type == HREQ_HISTORY && rep->tag)
            history_reply(req, rep);
        else if (rep->status >= 400 || rep->err_code)
            px_respond_error(req, rep->status ? rep->status : 500, rep->err_code, "%s",
                             rep->err_msg);
        else
            px_respond(req, rep->status ? rep->status : 200, "application/json", rep->body,
                       rep->body_len);
    } else if (rep->origin) {
        session_reply(rep->origin, rep);
    }
    rep_free(rep);
}

void px__hub_on_delivery(px_worker_t *w, px_msg_t *m)
{
    hub_delivery_t *d = (hub_delivery_t *)m;
    hub_local_t *L = local_of(d->hub, px_worker_id(w));
    px__centry_t *e = px__chanmap_get(&L->chans, d->channel, d->channel_len);
    int64_t n = 0;
    if (e) {
        local_chan_t *lc = PX_CONTAINER_OF(e, local_chan_t, e);
        sub_t *next;
        for (sub_t *u = lc->subs; u; u = next) {
            next = u->cnext;
            session_t *s = u->s;
            if (d->kind == DELIVER_PRESENCE && !u->presence)
                continue;
            if (s->kind == ORIGIN_WS) {
                if (s->ws && px_ws_send_frame(s->ws, d->ws_frame) == 0)
                    n++;
            } else if (d->kind == DELIVER_MESSAGE && d->sse_frame && s->req) {
                if (px_stream_write_slice(s->req, d->sse_frame, 0, d->sse_frame->len) != 0) {
                    px_log(PX_LOG_WARN, "SSE client over its output budget: closing");
                    sse_end(s);
                } else {
                    n++;
                }
            }
        }
    }
    px_metric_add(px__m_deliveries, n);
    px_slice_unref(d->ws_frame);
    px_slice_unref(d->sse_frame);
    px__free(d);
}

/* ---- HTTP API -------------------------------------------------------------------------------- */

/* Check the API credentials. Returns 0 (allowed; *claims set for a JWT) or
 * answers the request with 401/403 and returns -1. */
static int api_auth(px_hub_t *h, px_req_t *req, px_jwt_claims_t **claims)
{
    *claims = NULL;
    px_str_t auth = px_req_header(req, "authorization");
    px_str_t tok = {NULL, 0};
    if (auth.len > 7 && strncasecmp(auth.ptr, "Bearer ", 7) == 0)
        tok = (px_str_t){auth.ptr + 7, auth.len - 7};
    else if (px_req_query_param(req, "token", &tok) != 1)
        tok = (px_str_t){NULL, 0};
    if (!tok.len) {
        if (h->opts.allow_anonymous && !h->opts.api_key)
            return 0;
        px_res_header(req, "WWW-Authenticate", "Bearer");
        px_respond_error(req, 401, "unauthorized",
                         "send \"Authorization: Bearer <api key or token>\"");
        return -1;
    }
    if (h->opts.api_key) {
        size_t kl = strlen(h->opts.api_key);
        if (tok.len == kl && CRYPTO_memcmp(tok.ptr, h->opts.api_key, kl) == 0)
            return 0;
    }
    if (h->opts.jwt_secret && !verify_token(h, tok, claims))
        return 0;
    px_respond_error(req, 403, "forbidden", "invalid API key or token");
    return -1;
}

/* Authorize `action` on the request's channel. *keep (may be NULL) receives the token's
 * claims (malloc'd, NULL for the API key or anonymous access); otherwise they are freed. */
static int api_channel_claims(px_hub_t *h, px_req_t *req, int action, px_str_t *out,
                              px_jwt_claims_t **keep)
{
    px_jwt_claims_t *claims;
    if (api_auth(h, req, &claims) != 0)
        return -1;
    px_str_t ch = px_req_param(req, "channel");
    if (!px__channel_name_ok(ch.ptr, ch.len)) {
        px__free(claims);
        px_respond_error(req, 400, "invalid_channel",
                         "a channel name is 1-200 bytes of A-Z a-z 0-9 _ - = @ , . ; : /");
        return -1;
    }
    if (claims && claims->has_channels && !px_jwt_channel_allowed(claims, action, ch.ptr, ch.len)) {
        px__free(claims);
        px_respond_error(req, 403, "forbidden", "your token does not allow %s on this channel",
                         action == PX_JWT_PUBLISH ? "publish" : "subscribe");
        return -1;
    }
    if (keep)
        *keep = claims;
    else
        px__free(claims);
    *out = ch;
    return 0;
}

static int api_channel(px_hub_t *h, px_req_t *req, int action, px_str_t *out)
{
    return api_channel_claims(h, req, action, out, NULL);
}

static hub_req_t *http_req(px_req_t *req, int type, px_str_t ch)
{
    hub_req_t *r = req_new(NULL, type, ch.ptr, ch.len);
    r->worker = px_worker_id(px_req_worker(req));
    r->origin_kind = ORIGIN_HTTP;
    r->origin = req;
    return r;
}

static void api_publish(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_str_t ch;
    if (api_channel(h, req, PX_JWT_PUBLISH, &ch) != 0)
        return;
    px_str_t body = px_req_body(req);
    if (body.len > h->opts.max_payload) {
        px_respond_error(req, 413, "payload_too_large", "data is %zu bytes; the limit is %zu",
                         body.len, h->opts.max_payload);
        return;
    }
    px_json_doc_t doc;
    if (px_json_parse(&doc, body.ptr ? body.ptr : "", body.len, NULL, 0, 64) < 0) {
        char why[128];
        px_json_format_error(&doc, why, sizeof why);
        px_respond_error(req, 400, "invalid_json", "the body must be one JSON value: %s", why);
        return;
    }
    /* Keep the raw bytes, trimmed of surrounding whitespace. */
    const char *p = body.ptr;
    size_t n = body.len;
    while (n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    hub_req_t *r = http_req(req, HREQ_PUBLISH, ch);
    r->data = px__xmalloc(n ? n : 1);
    memcpy(r->data, p, n);
    r->data_len = n;
    px__hub_post(h, r);
}

static int query_u64(px_req_t *req, const char *name, uint64_t *out)
{
    px_str_t v;
    int r = px_req_query_param(req, name, &v);
    if (r <= 0)
        return r;
    if (v.len == 0 || v.len > 19)
        return -EINVAL;
    uint64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -EINVAL;
        x = x * 10 + (uint64_t)(v.ptr[i] - '0');
    }
    *out = x;
    return 1;
}

/* An HTTP history answer longer than one page is streamed: the first page opens the
 * JSON array, each further page is asked for once the previous one has been written
 * (paced by the client's reading), and the last closes it. The hub does one bounded
 * read per page; nothing is built for a client that has gone. */
typedef struct hist_stream {
    px_hub_t *hub;
    uint64_t since; /* offset of the last message sent */
    size_t left;    /* messages still wanted */
    size_t page;    /* bytes per page */
    unsigned streaming : 1;
    unsigned at_hub : 1;  /* a continuation page is being read */
    unsigned aborted : 1; /* the client left while a page was at the hub */
    unsigned truncated : 1;
    size_t channel_len;
    char channel[PX__CHANNEL_MAX + 1];
} hist_stream_t;

static hub_req_t *http_req(px_req_t *req, int type, px_str_t ch);

static void history_end(px_req_t *req, hist_stream_t *hs)
{
    static const char tail[] = "]}", ttail[] = "],\"truncated\":true}";
    if (hs->truncated)
        px_stream_write(req, ttail, sizeof ttail - 1);
    else
        px_stream_write(req, tail, sizeof tail - 1);
    px_stream_end(req);
}

static void history_drain(px_req_t *req, void *ud)
{
    hist_stream_t *hs = ud;
    if (hs->at_hub || hs->aborted)
        return;
    hub_req_t *r = http_req(req, HREQ_HISTORY, (px_str_t){hs->channel, hs->channel_len});
    r->since_offset = hs->since;
    r->limit = hs->left;
    r->max_bytes = hs->page;
    r->cont = 1;
    r->tag = hs;
    hs->at_hub = 1;
    px__hub_post(hs->hub, r);
}

static void history_abort(px_req_t *req, void *ud)
{
    hist_stream_t *hs = ud;
    if (hs->at_hub)
        hs->aborted = 1; /* ended when the page comes back */
    else
        px_stream_end(req);
}

static void history_reply(px_req_t *req, hub_rep_t *rep)
{
    hist_stream_t *hs = rep->tag;
    hs->at_hub = 0;
    if (hs->aborted) {
        px_stream_end(req);
        return;
    }
    if (rep->status >= 400 || rep->err_code) {
        if (!hs->streaming)
            px_respond_error(req, rep->status ? rep->status : 500, rep->err_code, "%s",
                             rep->err_msg);
        else /* the head is out: cut the transfer so the client sees it incomplete */
            px_req_abort(req);
        return;
    }
    if (!hs->streaming) {
        if (!rep->more) { /* it all fits one answer: a plain response */
            px_respond(req, 200, "application/json", rep->body, rep->body_len);
            return;
        }
        if (px_stream_start(req, 200, "application/json") != 0)
            return; /* HEAD (the head went out) or a failure: the request is over */
        hs->streaming = 1;
        px_stream_on_drain(req, history_drain, hs);
        px_req_on_abort(req, history_abort, hs);
    }
    hs->left -= rep->count < hs->left ? rep->count : hs->left;
    hs->since = rep->page_last;
    if (rep->truncated)
        hs->truncated = 1;
    if (px_stream_write(req, rep->body, rep->body_len) != 0) {
        px_req_abort(req);
        return;
    }
    if (!rep->more || hs->left == 0)
        history_end(req, hs);
    /* else the next page is asked for when this one has been written (history_drain) */
}

static void api_history(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_str_t ch;
    if (api_channel(h, req, PX_JWT_SUBSCRIBE, &ch) != 0)
        return;
    uint64_t since = 0, limit = default_limit(h);
    if (query_u64(req, "since", &since) < 0) {
        px_respond_error(req, 400, "bad_request",
                         "since must be an offset (a non-negative integer)");
        return;
    }
    if (query_u64(req, "limit", &limit) < 0 || limit == 0 || limit > h->opts.history_limit_max) {
        px_respond_error(req, 400, "bad_request", "limit must be 1..%u", h->opts.history_limit_max);
        return;
    }
    hist_stream_t *hs = px_req_alloc(req, sizeof *hs);
    if (!hs) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    memset(hs, 0, sizeof *hs);
    hs->hub = h;
    hs->left = (size_t)limit;
    size_t cap = px_server_opts(h->server)->output_cap / 4;
    hs->page = cap < 1 ? 1 : cap > PX__PAGE_MAX ? PX__PAGE_MAX : cap;
    memcpy(hs->channel, ch.ptr, ch.len);
    hs->channel_len = ch.len;
    hub_req_t *r = http_req(req, HREQ_HISTORY, ch);
    r->since_offset = since;
    r->limit = (size_t)limit;
    r->max_bytes = hs->page;
    r->tag = hs;
    px__hub_post(h, r);
}

static void api_presence(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_str_t ch;
    if (api_channel(h, req, PX_JWT_SUBSCRIBE, &ch) != 0)
        return;
    px__hub_post(h, http_req(req, HREQ_PRESENCE, ch));
}

static void api_channels(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_jwt_claims_t *claims;
    if (api_auth(h, req, &claims) != 0)
        return;
    hub_req_t *r = http_req(req, HREQ_CHANNELS, (px_str_t){NULL, 0});
    r->claims = claims; /* the listing shows only what the token may subscribe to */
    px__hub_post(h, r);
}

/* ---- Server-Sent Events ---------------------------------------------------------------------- */

static void sse_keepalive(px_timer_t *t)
{
    hub_local_t *L = t->data;
    for (session_t *s = L->sse, *next; s; s = next) {
        next = s->sse_next;
        if (s->req && px_stream_write(s->req, ": keep-alive\n\n", 14) != 0)
            sse_end(s);
    }
    if (L->sse)
        px_timer_start(px_worker_loop(px_worker_self()), t, L->hub->opts.sse_keepalive_ms);
    else
        L->sse_timer_on = 0;
}

static void sse_abort(px_req_t *req, void *ud)
{
    session_t *s = ud;
    PX_UNUSED(req);
    if (s->req) {
        session_close(s);
        px_stream_end(req); /* answers (frees) the request */
    }
}

static void sse_drain(px_req_t *req, void *ud)
{
    PX_UNUSED(req);
    session_drained(ud);
}

static void api_events(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_str_t ch;
    px_jwt_claims_t *claims = NULL;
    if (api_channel_claims(h, req, PX_JWT_SUBSCRIBE, &ch, &claims) != 0)
        return;
    uint64_t since = 0;
    int has_since = 0;
    px_str_t last = px_req_header(req, "last-event-id");
    if (last.len) {
        uint64_t x = 0;
        for (size_t i = 0; i < last.len; i++) {
            if (last.ptr[i] < '0' || last.ptr[i] > '9' || i >= 19) {
                px__free(claims);
                px_respond_error(req, 400, "bad_request", "Last-Event-ID must be an offset");
                return;
            }
            x = x * 10 + (uint64_t)(last.ptr[i] - '0');
        }
        since = x;
        has_since = 1;
    } else {
        int r = query_u64(req, "since", &since);
        if (r < 0) {
            px__free(claims);
            px_respond_error(req, 400, "bad_request", "since must be an offset");
            return;
        }
        has_since = r == 1;
    }
    session_t *s = px__xcalloc(1, sizeof *s);
    s->kind = ORIGIN_SSE;
    s->hub = h;
    s->claims = claims;
    s->authorized = 1;
    px_timer_init(&s->expiry, on_expiry, s);
    s->worker = px_worker_id(px_req_worker(req));
    s->req = req;
    hub_local_t *L = local_of(h, s->worker);
    s->sse_next = L->sse;
    if (L->sse)
        L->sse->sse_prev = s;
    L->sse = s;
    px_req_on_abort(req, sse_abort, s);
    px_res_header(req, "X-Accel-Buffering", "no");
    if (px_stream_start(req, 200, "text/event-stream") != 0) {
        session_close(s); /* the request is over and on_abort will not come */
        return;
    }
    px_stream_write(req, "retry: 2000\n\n", 13);
    px_stream_on_drain(req, sse_drain, s);
    arm_expiry(s);
    if (!L->sse_timer_on) {
        L->sse_timer_on = 1;
        px_timer_init(&L->sse_timer, sse_keepalive, L);
        px_timer_start(px_worker_loop(px_req_worker(req)), &L->sse_timer, h->opts.sse_keepalive_ms);
    }
    sub_t *u = px__xcalloc(1, sizeof *u);
    u->s = s;
    memcpy(u->name, ch.ptr, ch.len);
    u->name_len = ch.len;
    s->subs = u;
    s->nsubs = 1;
    hub_req_t *r = req_new(s, HREQ_SUBSCRIBE, ch.ptr, ch.len);
    r->tag = u;
    r->has_since = has_since;
    r->since_offset = since;
    if (has_since) { /* replayed in pages as the stream drains */
        r->max_bytes = page_bytes(s);
        r->paced = 1;
        s->paced = PACED_AT_HUB;
    }
    s->pending++;
    px__hub_post(h, r);
}

/* ---- /metrics -------------------------------------------------------------------------------- */

static void metrics(px_req_t *req, void *ud)
{
    px_hub_t *h = ud;
    px_buf_t b;
    px_buf_init(&b, 16u << 20);
    if (px_metrics_render(&b, h->nworkers) != 0) {
        px_buf_dispose(&b);
        px_respond_error(req, 500, NULL, "cannot render metrics");
        return;
    }
    px_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", px_buf_head(&b),
               px_buf_size(&b));
    px_buf_dispose(&b);
}

int px__hub_front_init(px_hub_t *h)
{
    h->locals = px__calloc(h->nworkers, sizeof *h->locals);
    if (!h->locals)
        return -ENOMEM;
    for (unsigned i = 0; i < h->nworkers; i++) {
        h->locals[i].hub = h;
        px__chanmap_init(&h->locals[i].chans);
    }
    px_server_t *s = h->server;
    int r = px_ws_route(s, "/ws", &hub_ws_callbacks, h);
    r |= px_route(s, "POST", "/api/channels/:channel/messages", api_publish, h);
    r |= px_route(s, "GET", "/api/channels/:channel/messages", api_history, h);
    r |= px_route(s, "GET", "/api/channels/:channel/presence", api_presence, h);
    r |= px_route(s, "GET", "/api/channels/:channel/events", api_events, h);
    r |= px_route(s, "GET", "/api/channels", api_channels, h);
    r |= px_route(s, "GET", "/metrics", metrics, h);
    return r ? -ENOMEM : 0;
}

void px__hub_front_free(px_hub_t *h)
{
    if (!h->locals)
        return;
    for (unsigned i = 0; i < h->nworkers; i++) {
        px__chanmap_t *m = &h->locals[i].chans;
        for (px__centry_t *e = px__chanmap_next(m, NULL), *next; e; e = next) {
            next = px__chanmap_next(m, e);
            px__free(PX_CONTAINER_OF(e, local_chan_t, e));
        }
        px__chanmap_dispose(m);
    }
    px__free(h->locals);
    h->locals = NULL;
}
