/* A Pusher connection's protocol, whatever carries it (WebSocket or the xhr transports):
 * the handshake, keep-alive, subscriptions of every channel type, presence, cache channels,
 * client events, user sign-in with its own channel and watchlist. Runs on the worker of the
 * session's hub client. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "front/pusher.h"

static psess_t *sess_of(px__hclient_t *c)
{
    return PX_CONTAINER_OF(c, psess_t, hc);
}

/* ---- output ---------------------------------------------------------------------------------- */

void px__pusher_sess_send(psess_t *ps, const char *json, size_t len)
{
    if (ps->closing)
        return;
    if (ps->kind == PS_WS) {
        if (ps->ws)
            px_ws_send(ps->ws, PX_WS_TEXT, json, len);
    } else if (ps->xs) {
        px__pusher_xhr_send(ps->xs, json, len);
    }
}

static void send_w(psess_t *ps, px_json_writer_t *w)
{
    if (!w->err)
        px__pusher_sess_send(ps, w->buf, w->len);
}

static void put_error(px_json_writer_t *w, int code, const char *msg)
{
    PX_JSON_PUT_LIT(w, "{\"event\":\"pusher:error\",\"data\":{\"code\":");
    if (code)
        px_json_put_i64(w, code);
    else
        PX_JSON_PUT_LIT(w, "null");
    PX_JSON_PUT_LIT(w, ",\"message\":");
    px_json_put_str(w, msg, strlen(msg));
    PX_JSON_PUT_LIT(w, "}}");
}

void px__pusher_sess_error(psess_t *ps, int code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char buf[512];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    put_error(&w, code, msg);
    send_w(ps, &w);
}

void px__pusher_sess_close(psess_t *ps, int code, const char *reason)
{
    if (ps->closing)
        return;
    ps->closing = 1;
    px_timer_stop(&ps->timer);
    if (ps->kind == PS_WS) {
        if (ps->ws)
            px_ws_close(ps->ws, code, reason);
    } else if (ps->xs) {
        px__pusher_xhr_close(ps->xs, code, reason); /* ends the session: px__pusher_sess_gone */
    }
}

void px__pusher_sess_fail(psess_t *ps, int code, const char *fmt, ...)
{
    if (ps->closing)
        return;
    char msg[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    px__pusher_sess_error(ps, code, "%s", msg);
    px__pusher_sess_close(ps, code, msg);
}

/* {"event":"pusher:subscription_error","channel":..,"data":{"type","error","status"}} */
static void sub_error(psess_t *ps, px_str_t channel, const char *type, int status, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static void sub_error(psess_t *ps, px_str_t channel, const char *type, int status, const char *fmt,
                      ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char buf[1024];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher:subscription_error\",\"channel\":");
    px_json_put_str(&w, channel.ptr, channel.len);
    PX_JSON_PUT_LIT(&w, ",\"data\":{\"type\":");
    px_json_put_str(&w, type, strlen(type));
    PX_JSON_PUT_LIT(&w, ",\"error\":");
    px_json_put_str(&w, msg, strlen(msg));
    PX_JSON_PUT_LIT(&w, ",\"status\":");
    px_json_put_i64(&w, status);
    PX_JSON_PUT_LIT(&w, "}}");
    send_w(ps, &w);
}

/* An event with `data` sent as a JSON string (how Pusher sends its own events). */
static void send_event(psess_t *ps, const char *event, px_str_t channel, const char *data,
                       size_t dlen)
{
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 64u << 20);
    PX_JSON_PUT_LIT(&w, "{\"event\":");
    px_json_put_str(&w, event, strlen(event));
    if (channel.len) {
        PX_JSON_PUT_LIT(&w, ",\"channel\":");
        px_json_put_str(&w, channel.ptr, channel.len);
    }
    PX_JSON_PUT_LIT(&w, ",\"data\":");
    px_json_put_str(&w, data, dlen);
    PX_JSON_PUT_LIT(&w, "}");
    send_w(ps, &w);
    px_json_writer_dispose(&w);
}

/* ---- keep-alive and the sign-in deadline ---------------------------------------------------- */

static void arm(psess_t *ps);

/* How long a pusher:ping waits for its pong: the activity timeout, at most 30 s. */
static uint64_t pong_ms(const psess_t *ps)
{
    uint64_t a = (uint64_t)ps->app->o.activity_timeout_s * 1000;
    return a < PUSHER_PONG_TIMEOUT_MS ? a : PUSHER_PONG_TIMEOUT_MS;
}

static void on_timer(px_timer_t *t)
{
    psess_t *ps = t->data;
    if (ps->closing)
        return;
    uint64_t now = px_now_ms();
    if (ps->signin_deadline && !ps->user && now >= ps->signin_deadline) {
        px__pusher_sess_fail(ps, 4009, "Connection not authorized within timeout.");
        return;
    }
    uint64_t act = (uint64_t)ps->app->o.activity_timeout_s * 1000;
    if (ps->ping_sent) { /* cleared by any message from the client */
        if (now >= ps->ping_at + pong_ms(ps)) {
            if (ps->kind == PS_XHR && !px__pusher_xhr_attached(ps->xs))
                px__pusher_sess_fail(ps, 4202, "Closed after inactivity");
            else
                px__pusher_sess_fail(ps, 4201, "Pong reply not received");
            return;
        }
    } else if (now >= ps->last_in + act) {
        static const char ping[] = "{\"event\":\"pusher:ping\",\"data\":\"{}\"}";
        px__pusher_sess_send(ps, ping, sizeof ping - 1);
        ps->ping_sent = 1;
        ps->ping_at = now;
    }
    arm(ps);
}

static void arm(psess_t *ps)
{
    uint64_t now = px_now_ms();
    uint64_t at = ps->ping_sent ? ps->ping_at + pong_ms(ps)
                                : ps->last_in + (uint64_t)ps->app->o.activity_timeout_s * 1000;
    if (ps->signin_deadline && !ps->user && ps->signin_deadline < at)
        at = ps->signin_deadline;
    px_timer_start(px_worker_loop(px_worker_self()), &ps->timer, at > now ? at - now : 0);
}

/* ---- life cycle ---------------------------------------------------------------------------------
 */

void px__pusher_client_id(const psess_t *ps, char out[PX__CLIENT_ID_LEN + 1])
{
    snprintf(out, PX__CLIENT_ID_LEN + 1, "%016llx", (unsigned long long)ps->sid);
}

psess_t *px__pusher_sess_new(px__pusher_t *p, papp_t *app, int kind, unsigned worker)
{
    psess_t *ps = px__calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    px__hclient_init(&ps->hc, p->hub, worker, &px__pusher_client_ops);
    ps->p = p;
    ps->app = app;
    ps->kind = (uint8_t)kind;
    ps->sid = px__pusher_new_sid(p);
    px__pusher_bucket_init(&ps->events, app->o.max_client_events_per_s);
    px_timer_init(&ps->timer, on_timer, ps);
    plocal_t *L = &p->locals[worker];
    ps->next = L->sessions;
    if (L->sessions)
        L->sessions->prev = ps;
    L->sessions = ps;
    atomic_fetch_add_explicit(&app->nconns, 1, memory_order_relaxed);
    px_metric_add(px__pusher_m_conns, 1);
    return ps;
}

void px__pusher_sess_start(psess_t *ps)
{
    char sid[32], data[96];
    px__pusher_socket_id(ps->sid, sid, sizeof sid);
    int n = snprintf(data, sizeof data, "{\"socket_id\":\"%s\",\"activity_timeout\":%u}", sid,
                     ps->app->o.activity_timeout_s);
    send_event(ps, "pusher:connection_established", (px_str_t){NULL, 0}, data, (size_t)n);
    ps->last_in = px_now_ms();
    if (ps->app->o.user_authentication)
        ps->signin_deadline = ps->last_in + ps->app->o.user_auth_timeout_ms;
    arm(ps);
}

void px__pusher_sess_gone(psess_t *ps)
{
    if (ps->hc.closed)
        return;
    ps->closing = 1;
    ps->ws = NULL;
    px_timer_stop(&ps->timer);
    plocal_t *L = &ps->p->locals[ps->hc.worker];
    if (ps->prev)
        ps->prev->next = ps->next;
    else if (L->sessions == ps)
        L->sessions = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    ps->prev = ps->next = NULL;
    atomic_fetch_sub_explicit(&ps->app->nconns, 1, memory_order_relaxed);
    px_metric_add(px__pusher_m_conns, -1);
    px__hclient_close(&ps->hc); /* frees ps once the hub has answered what is out */
}

/* ---- channels
 * ------------------------------------------------------------------------------------ */

static int has_prefix(px_str_t s, const char *p)
{
    size_t n = strlen(p);
    return s.len > n && memcmp(s.ptr, p, n) == 0;
}

/* The channel's type by its name, and whether it is a cache channel. */
static int channel_type(px_str_t name, int *cache)
{
    *cache = 0;
    if (has_prefix(name, "#server-to-user-"))
        return PT_USER;
    if (name.ptr[0] == '#')
        return 0;
    if (has_prefix(name, "private-encrypted-")) {
        *cache = has_prefix((px_str_t){name.ptr + 18, name.len - 18}, "cache-");
        return PT_ENCRYPTED;
    }
    if (has_prefix(name, "private-")) {
        *cache = has_prefix((px_str_t){name.ptr + 8, name.len - 8}, "cache-");
        return PT_PRIVATE;
    }
    if (has_prefix(name, "presence-")) {
        *cache = has_prefix((px_str_t){name.ptr + 9, name.len - 9}, "cache-");
        return PT_PRESENCE;
    }
    *cache = has_prefix(name, "cache-");
    return PT_PUBLIC;
}

/* The member a presence subscribe lists: from channel_data {"user_id","user_info"}, or the
 * signed-in user when there is none. Returns 0, or -1 after answering. */
static int presence_member(psess_t *ps, px_str_t channel, px_str_t cd, px_str_t *user,
                           px_str_t *info, char *idbuf, size_t idcap)
{
    if (!cd.len) {
        if (!ps->user) {
            sub_error(ps, channel, "AuthError", 401,
                      "presence channels need channel_data (or a signed-in user)");
            return -1;
        }
        *user = (px_str_t){ps->user, ps->user_len};
        *info = (px_str_t){NULL, 0};
        return 0;
    }
    if (cd.len > ps->app->o.max_presence_member_size + 512) {
        sub_error(ps, channel, "LimitReached", 413, "channel_data is over %zu bytes",
                  ps->app->o.max_presence_member_size);
        return -1;
    }
    px_json_tok_t toks[256];
    px_json_doc_t doc;
    if (px_json_parse(&doc, cd.ptr, cd.len, toks, 256, 32) < 0 || toks[0].type != PX_JSON_OBJECT) {
        sub_error(ps, channel, "AuthError", 400, "channel_data must be a JSON object");
        return -1;
    }
    int uid = px_json_get(&doc, 0, "user_id"), ui = px_json_get(&doc, 0, "user_info");
    if (uid >= 0 && toks[uid].type == PX_JSON_NUMBER) {
        size_t n = toks[uid].end - toks[uid].start;
        if (n >= idcap)
            uid = -1;
        else {
            memcpy(idbuf, cd.ptr + toks[uid].start, n);
            *user = (px_str_t){idbuf, n};
        }
    } else if (uid >= 0 && toks[uid].type == PX_JSON_STRING) {
        int n = px_json_unescape(&doc, uid, idbuf, idcap);
        if (n <= 0 || (size_t)n != strlen(idbuf))
            uid = -1;
        else
            *user = (px_str_t){idbuf, (size_t)n};
    } else {
        uid = -1;
    }
    if (uid < 0) {
        sub_error(ps, channel, "AuthError", 400,
                  "channel_data needs a \"user_id\" (a string or a number of at most %zu bytes)",
                  idcap - 1);
        return -1;
    }
    *info = ui >= 0 ? px_json_raw(&doc, ui) : (px_str_t){NULL, 0};
    if (info->len > ps->app->o.max_presence_member_size) {
        sub_error(ps, channel, "LimitReached", 413, "user_info is over %zu bytes",
                  ps->app->o.max_presence_member_size);
        return -1;
    }
    return 0;
}

static unsigned client_channels(const psess_t *ps)
{
    unsigned n = 0;
    for (const px__hsub_t *u = ps->hc.subs; u; u = u->cnext) {
        const psub_t *x = px__hsub_extra((px__hsub_t *)u);
        n += !u->cancelled && !x->unsub && x->client_asked;
    }
    return n;
}

static px__hsub_t *subscribe(psess_t *ps, const char *hub, size_t hl, const px__subopts_t *so,
                             int type, int cache, px_str_t member)
{
    px__hsub_t *u =
        px__hclient_subscribe(&ps->hc, hub, hl, ps->p->fmt, so, sizeof(psub_t) + member.len + 1);
    if (!u)
        return NULL;
    psub_t *x = px__hsub_extra(u);
    memset(x, 0, sizeof *x);
    x->type = (uint8_t)type;
    x->cache = cache != 0;
    x->user_len = member.len;
    if (member.len)
        memcpy(x->user, member.ptr, member.len);
    x->user[member.len] = '\0';
    return u;
}

static void send_succeeded(psess_t *ps, px__hsub_t *u, const px__hreq_t *r);

static void do_subscribe(psess_t *ps, const px__pmsg_t *m)
{
    px_str_t ch = m->channel;
    const px_pusher_app_t *o = &ps->app->o;
    int cache = 0;
    int type = px__pusher_channel_ok(ch.ptr, ch.len) ? channel_type(ch, &cache) : 0;
    if (!type || ch.len > o->max_channel_name_length) {
        sub_error(ps, ch, "InvalidChannel", 400,
                  "a channel name is 1-%u characters of A-Z a-z 0-9 _ - = @ , . ;",
                  o->max_channel_name_length);
        return;
    }
    char hub[PX__CHANNEL_MAX + 1];
    size_t hl = px__pusher_hub_name(ps->app, ch.ptr, ch.len, hub);
    if (!hl) {
        sub_error(ps, ch, "InvalidChannel", 400, "the channel name is too long for this app");
        return;
    }
    char sid[32];
    int sl = px__pusher_socket_id(ps->sid, sid, sizeof sid);
    px__hsub_t *have = px__hclient_find(&ps->hc, hub, hl);
    if (type == PT_USER) {
        /* Only a user's own channel, made when it signed in. */
        psub_t *x = have ? px__hsub_extra(have) : NULL;
        if (!x || x->type != PT_USER) {
            sub_error(ps, ch, "AuthError", 403,
                      "#server-to-user- channels are for the signed-in user only");
            return;
        }
        x->client_asked = 1;
        if (x->answered && !x->visible)
            send_succeeded(ps, have, NULL);
        return;
    }
    if (have) {
        psub_t *x = px__hsub_extra(have);
        if (x->type == PT_WATCH) {
            sub_error(ps, ch, "AuthError", 403, "not a channel of this connection");
        } else if (x->unsub) { /* subscribed again before the hub answered the first */
            x->unsub = 0;
            x->client_asked = 1;
        }
        return; /* already subscribed */
    }
    if (client_channels(ps) >= o->max_channels_per_connection) {
        sub_error(ps, ch, "LimitReached", 403, "at most %u channels per connection",
                  o->max_channels_per_connection);
        return;
    }
    px_str_t user = {NULL, 0}, info = {NULL, 0};
    char idbuf[201];
    if (type == PT_PRESENCE &&
        presence_member(ps, ch, m->channel_data, &user, &info, idbuf, sizeof idbuf) != 0)
        return;
    if (type != PT_PUBLIC) {
        /* socket_id:channel[:channel_data], signed with the app's secret. */
        size_t need = (size_t)sl + 1 + ch.len + 1 + m->channel_data.len;
        char stack[1024];
        char *buf = need <= sizeof stack ? stack : px__malloc(need);
        if (!buf) {
            sub_error(ps, ch, "InternalError", 500, "out of memory");
            return;
        }
        size_t n = 0;
        memcpy(buf, sid, (size_t)sl);
        n += (size_t)sl;
        buf[n++] = ':';
        memcpy(buf + n, ch.ptr, ch.len);
        n += ch.len;
        if (type == PT_PRESENCE && m->channel_data.len) {
            buf[n++] = ':';
            memcpy(buf + n, m->channel_data.ptr, m->channel_data.len);
            n += m->channel_data.len;
        }
        int ok = px__pusher_auth_ok(ps->app, m->auth, buf, n);
        if (buf != stack)
            px__free(buf);
        if (!ok) {
            sub_error(ps, ch, "AuthError", 401,
                      "Invalid signature: Expected HMAC SHA256 hex "
                      "digest of socket_id:channel[:channel_data]");
            return;
        }
    }
    px__presence_t who = {.user = user, .info = info};
    px__pusher_client_id(ps, who.client);
    px__subopts_t so = {.presence = type == PT_PRESENCE,
                        .who = type == PT_PRESENCE ? &who : NULL,
                        .want_list = type == PT_PRESENCE,
                        .want_last = cache,
                        .presence_max = type == PT_PRESENCE ? o->max_presence_members : 0};
    px__hsub_t *u = subscribe(ps, hub, hl, &so, type, cache, user);
    if (!u) {
        sub_error(ps, ch, "InternalError", 500, "out of memory");
        return;
    }
    ((psub_t *)px__hsub_extra(u))->client_asked = 1;
}

static void do_unsubscribe(psess_t *ps, const px__pmsg_t *m)
{
    char hub[PX__CHANNEL_MAX + 1];
    size_t hl = px__pusher_channel_ok(m->channel.ptr, m->channel.len)
                    ? px__pusher_hub_name(ps->app, m->channel.ptr, m->channel.len, hub)
                    : 0;
    px__hsub_t *u = hl ? px__hclient_find(&ps->hc, hub, hl) : NULL;
    if (!u)
        return;
    psub_t *x = px__hsub_extra(u);
    if (x->type == PT_WATCH)
        return;
    if (x->type == PT_USER) { /* the user's channel stays while it is signed in */
        x->client_asked = 0;
        x->visible = 0;
        u->mark = 0;
        return;
    }
    if (!x->answered) {
        x->unsub = 1; /* unsubscribed from the hub when its answer comes */
        x->client_asked = 0;
        return;
    }
    px__hclient_unsubscribe(&ps->hc, u);
}

/* ---- client events --------------------------------------------------------------------------- */

static void do_client_event(psess_t *ps, const px__pmsg_t *m)
{
    const px_pusher_app_t *o = &ps->app->o;
    px__pusher_t *p = ps->p;
    if (!o->client_events) {
        px__pusher_sess_error(ps, 0, "Client events are not enabled for this app");
        return;
    }
    if (m->event.len > o->max_event_name_length) {
        px__pusher_sess_error(ps, 0, "Event name is longer than %u characters",
                              o->max_event_name_length);
        return;
    }
    char hub[PX__CHANNEL_MAX + 1];
    size_t hl = px__pusher_channel_ok(m->channel.ptr, m->channel.len)
                    ? px__pusher_hub_name(ps->app, m->channel.ptr, m->channel.len, hub)
                    : 0;
    px__hsub_t *u = hl ? px__hclient_find(&ps->hc, hub, hl) : NULL;
    psub_t *x = u ? px__hsub_extra(u) : NULL;
    if (!x || !x->visible || x->type == PT_USER || x->type == PT_WATCH) {
        px__pusher_sess_error(ps, 0, "Client event rejected: not subscribed to %.*s",
                              (int)m->channel.len, m->channel.ptr);
        return;
    }
    if (x->type != PT_PRIVATE && x->type != PT_PRESENCE) {
        px__pusher_sess_error(ps, 0,
                              "Client event rejected: only private and presence channels "
                              "take client events (not encrypted ones)");
        return;
    }
    size_t max = o->max_event_payload;
    if (px_hub_options(p->hub)->max_payload < max)
        max = px_hub_options(p->hub)->max_payload;
    if (m->data.len > max) {
        px__pusher_sess_error(ps, 0, "Client event rejected: data is over %zu bytes", max);
        return;
    }
    if (!px__pusher_rate_ok(&ps->events, o->max_client_events_per_s)) {
        px__pusher_sess_error(ps, 4301, "Client event rejected due to rate limit (%u per second)",
                              o->max_client_events_per_s);
        return;
    }
    px_str_t user = x->type == PT_PRESENCE ? (px_str_t){x->user, x->user_len} : (px_str_t){NULL, 0};
    px__hreq_t *r = px__hreq_new(p->hub, PX__HREQ_PUBLISH, hub, hl);
    r->m = px__hub_msg_new_user((px_str_t){hub, hl}, m->event, m->data, ps->sid, user);
    if (!r->m) {
        px__hreq_free(r);
        px__pusher_sess_error(ps, 0, "out of memory");
        return;
    }
    r->worker = ps->hc.worker;
    px__hub_post(p->hub, r); /* nobody waits for the answer: the hub frees it */
    if (ps->app->hook_events & PX_PUSHER_HOOK_CLIENT_EVENT)
        px__pusher_hook_client_event(p, ps->app, m->channel, m->event, m->data, ps->sid, user);
}

/* ---- sign-in --------------------------------------------------------------------------------- */

static void do_signin(psess_t *ps, const px__pmsg_t *m)
{
    char sid[32];
    int sl = px__pusher_socket_id(ps->sid, sid, sizeof sid);
    size_t need = (size_t)sl + 8 + m->user_data.len;
    char *buf = px__malloc(need);
    if (!buf)
        return;
    memcpy(buf, sid, (size_t)sl);
    memcpy(buf + sl, "::user::", 8);
    memcpy(buf + sl + 8, m->user_data.ptr, m->user_data.len);
    int ok = px__pusher_auth_ok(ps->app, m->auth, buf, need);
    px__free(buf);
    if (!ok) {
        px__pusher_sess_fail(ps, 4009, "Invalid signature for pusher:signin");
        return;
    }
    px_json_tok_t toks[512];
    px_json_doc_t doc;
    char id[201];
    int idt = -1, wl = -1, info = -1;
    if (px_json_parse(&doc, m->user_data.ptr, m->user_data.len, toks, 512, 32) >= 0 &&
        toks[0].type == PX_JSON_OBJECT) {
        idt = px_json_get(&doc, 0, "id");
        wl = px_json_get(&doc, 0, "watchlist");
        info = px_json_get(&doc, 0, "user_info");
    }
    int idl = idt >= 0 ? px_json_unescape(&doc, idt, id, sizeof id) : -1;
    if (idl <= 0 || (size_t)idl != strlen(id)) {
        px__pusher_sess_fail(ps, 4009, "user_data needs an \"id\", a non-empty string");
        return;
    }
    if (ps->user) {
        if ((size_t)idl != ps->user_len || memcmp(ps->user, id, ps->user_len) != 0)
            px__pusher_sess_error(ps, 4009, "already signed in as another user");
        return;
    }
    ps->user = px__xmemdup(id, (size_t)idl + 1);
    ps->user_len = (size_t)idl;
    ps->signin_deadline = 0;

    /* pusher:signin_success {"user_data": "<the signed text>"} */
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 1u << 20);
    PX_JSON_PUT_LIT(&w, "{\"user_data\":");
    px_json_put_str(&w, m->user_data.ptr, m->user_data.len);
    PX_JSON_PUT_LIT(&w, "}");
    if (!w.err)
        send_event(ps, "pusher:signin_success", (px_str_t){NULL, 0}, w.buf, w.len);
    px_json_writer_dispose(&w);

    /* The user's own channel, listed in its presence (which makes the user online); the
     * client subscribes to it next (pusher-js does at once). */
    char name[PX__CHANNEL_MAX + 1], hub[PX__CHANNEL_MAX + 1];
    int nl = snprintf(name, sizeof name, "#server-to-user-%s", id);
    size_t hl = nl > 0 && (size_t)nl < sizeof name && px__pusher_channel_ok(name, (size_t)nl)
                    ? px__pusher_hub_name(ps->app, name, (size_t)nl, hub)
                    : 0;
    if (hl) {
        px__presence_t who = {.user = {ps->user, ps->user_len},
                              .info = info >= 0 ? px_json_raw(&doc, info) : (px_str_t){NULL, 0}};
        px__pusher_client_id(ps, who.client);
        px__subopts_t so = {.who = &who};
        subscribe(ps, hub, hl, &so, PT_USER, 0, (px_str_t){NULL, 0});
    }
    /* Watched users: a subscription to each one's channel for its online/offline events. */
    if (wl >= 0 && toks[wl].type == PX_JSON_ARRAY) {
        int e = wl + 1;
        for (uint32_t i = 0; i < toks[wl].size && i < PUSHER_WATCHLIST_MAX;
             i++, e = (int)toks[e].next) {
            char wid[201];
            int k =
                toks[e].type == PX_JSON_STRING ? px_json_unescape(&doc, e, wid, sizeof wid) : -1;
            if (k <= 0 || ((size_t)k == ps->user_len && memcmp(wid, ps->user, (size_t)k) == 0))
                continue;
            nl = snprintf(name, sizeof name, "#server-to-user-%s", wid);
            hl = nl > 0 && (size_t)nl < sizeof name && px__pusher_channel_ok(name, (size_t)nl)
                     ? px__pusher_hub_name(ps->app, name, (size_t)nl, hub)
                     : 0;
            if (!hl || px__hclient_find(&ps->hc, hub, hl))
                continue;
            px__subopts_t so = {.presence = 1};
            subscribe(ps, hub, hl, &so, PT_WATCH, 0, (px_str_t){wid, (size_t)k});
        }
    }
}

/* ---- input --------------------------------------------------------------------------------------
 */

void px__pusher_sess_input(psess_t *ps, const char *data, size_t len)
{
    if (ps->closing)
        return;
    ps->last_in = px_now_ms();
    ps->ping_sent = 0; /* any message answers our ping */
    char *scratch = px__pusher_scratch(ps->p, 2 * len + 16);
    if (!scratch) {
        px__pusher_sess_error(ps, 0, "out of memory");
        return;
    }
    px__pmsg_t m;
    if (px__pusher_parse(data, len, &m, scratch, 2 * len + 16) != 0) {
        px__pusher_sess_error(ps, 0, "%s", m.err);
        return;
    }
    switch (m.type) {
    case PX__PM_PING: {
        static const char pong[] = "{\"event\":\"pusher:pong\",\"data\":\"{}\"}";
        px__pusher_sess_send(ps, pong, sizeof pong - 1);
        break;
    }
    case PX__PM_SUBSCRIBE: do_subscribe(ps, &m); break;
    case PX__PM_UNSUBSCRIBE: do_unsubscribe(ps, &m); break;
    case PX__PM_CLIENT: do_client_event(ps, &m); break;
    case PX__PM_SIGNIN: do_signin(ps, &m); break;
    default: break; /* pong, and events the server does not handle */
    }
}

/* ---- the hub's answers --------------------------------------------------------------------------
 */

/* subscription_succeeded: "{}", or for presence {"presence":{"count","ids","hash"}}. `r` is
 * the subscribe's answer (NULL when sent again later: presence channels then ask nothing new
 * and send what pusher-js needs, the count of one). */
static void send_succeeded(psess_t *ps, px__hsub_t *u, const px__hreq_t *r)
{
    psub_t *x = px__hsub_extra(u);
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = px__pusher_name_of(ps->app, u->name, u->name_len, name);
    x->visible = 1;
    u->mark = PSUB_DELIVER;
    if (x->type != PT_PRESENCE || !r) {
        send_event(ps, "pusher_internal:subscription_succeeded", (px_str_t){name, nl}, "{}", 2);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 64u << 20);
    PX_JSON_PUT_LIT(&w, "{\"presence\":{\"count\":");
    px_json_put_u64(&w, r->npres);
    PX_JSON_PUT_LIT(&w, ",\"ids\":[");
    for (size_t i = 0; i < r->npres; i++) {
        if (i)
            PX_JSON_PUT_LIT(&w, ",");
        px_json_put_str(&w, r->pres[i].user.ptr ? r->pres[i].user.ptr : "", r->pres[i].user.len);
    }
    PX_JSON_PUT_LIT(&w, "],\"hash\":{");
    for (size_t i = 0; i < r->npres; i++) {
        if (i)
            PX_JSON_PUT_LIT(&w, ",");
        px_json_put_str(&w, r->pres[i].user.ptr ? r->pres[i].user.ptr : "", r->pres[i].user.len);
        PX_JSON_PUT_LIT(&w, ":");
        if (r->pres[i].info.len)
            px_json_put_raw(&w, r->pres[i].info.ptr, r->pres[i].info.len);
        else
            PX_JSON_PUT_LIT(&w, "null");
    }
    PX_JSON_PUT_LIT(&w, "}}}");
    if (!w.err)
        send_event(ps, "pusher_internal:subscription_succeeded", (px_str_t){name, nl}, w.buf,
                   w.len);
    px_json_writer_dispose(&w);
}

static void cache_miss(psess_t *ps, px__hsub_t *u)
{
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = px__pusher_name_of(ps->app, u->name, u->name_len, name);
    char buf[PX__CHANNEL_MAX + 80];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher:cache_miss\",\"channel\":");
    px_json_put_str(&w, name, nl);
    PX_JSON_PUT_LIT(&w, ",\"data\":\"{}\"}");
    send_w(ps, &w);
    if (ps->app->hook_events & PX_PUSHER_HOOK_CACHE_MISS)
        px__pusher_hook_cache_miss(ps->p, ps->app, (px_str_t){name, nl});
}

static void c_subscribed(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    psess_t *ps = sess_of(c);
    psub_t *x = px__hsub_extra(u);
    if (ps->closing || u->cancelled)
        return;
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = px__pusher_name_of(ps->app, u->name, u->name_len, name);
    if (r->status) {
        if (x->type == PT_WATCH || x->type == PT_USER) {
            px_log(PX_LOG_WARN, "pusher: %s of %.*s failed: %s",
                   x->type == PT_WATCH ? "watching" : "the user channel", (int)nl, name,
                   r->err_msg);
        } else if (x->client_asked && !x->unsub) {
            int limit = r->err_code && strcmp(r->err_code, "too_many_members") == 0;
            sub_error(ps, (px_str_t){name, nl}, limit ? "LimitReached" : "InternalError", r->status,
                      "%s", r->err_msg);
        }
        return; /* the core forgets the subscription */
    }
    x->answered = 1;
    if (x->unsub) {
        px__hclient_unsubscribe(c, u); /* forgotten right after this returns */
        return;
    }
    switch (x->type) {
    case PT_WATCH:
        if (r->users) {
            /* The watched user is online now; changes follow as presence events. */
            char data[300];
            px_json_writer_t w;
            px_json_writer_init(&w, data, sizeof data);
            PX_JSON_PUT_LIT(&w, "{\"events\":[{\"name\":\"online\",\"user_ids\":[");
            px_json_put_str(&w, x->user, x->user_len);
            PX_JSON_PUT_LIT(&w, "]}]}");
            if (!w.err)
                send_event(ps, "pusher_internal:watchlist_events", (px_str_t){NULL, 0}, w.buf,
                           w.len);
        }
        return;
    case PT_USER:
        if (x->client_asked)
            send_succeeded(ps, u, r);
        return;
    default:
        send_succeeded(ps, u, r);
        if (x->cache && r->nmsgs == 0)
            cache_miss(ps, u);
        /* else the cached message comes through c_message (the core replays it next) */
        return;
    }
}

/* The latest message of a cache channel, replayed right after subscription_succeeded. */
static void c_message(px__hclient_t *c, px__hsub_t *u, const px_hub_msg_t *m)
{
    psess_t *ps = sess_of(c);
    psub_t *x = px__hsub_extra(u);
    if (ps->closing || !x->cache || !x->visible)
        return;
    if ((uint64_t)(px__pusher_wall_ms() - m->time_ms) > ps->app->o.cache_ttl_ms) {
        cache_miss(ps, u);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, (size_t)m->data_len * 6 + 4096);
    if (px__pusher_put_message(ps->p, &w, m) == 0)
        px__pusher_sess_send(ps, w.buf, w.len);
    px_json_writer_dispose(&w);
}

static size_t c_output(px__hclient_t *c)
{
    psess_t *ps = sess_of(c);
    if (ps->kind == PS_WS)
        return ps->ws ? px_conn_pending(px_ws_conn(ps->ws)) : 0;
    return ps->xs ? px__pusher_xhr_pending(ps->xs) : 0;
}

static int c_write(px__hclient_t *c, px__hsub_t *u, px_slice_t *frame)
{
    PX_UNUSED(u);
    psess_t *ps = sess_of(c);
    if (ps->closing)
        return -EPIPE;
    if (ps->kind == PS_WS)
        return ps->ws ? px_ws_send_frame(ps->ws, frame) : -EPIPE;
    px_str_t j = px__pusher_frame_payload(frame);
    px__pusher_xhr_send(ps->xs, j.ptr, j.len);
    return 0;
}

static void c_answer(px__hclient_t *c, px__hreq_t *r)
{
    PX_UNUSED(c);
    PX_UNUSED(r);
}

static void c_ended(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    PX_UNUSED(c);
    PX_UNUSED(u);
    PX_UNUSED(r);
}

static void c_release(px__hclient_t *c)
{
    psess_t *ps = sess_of(c);
    if (ps->xs)
        px__pusher_xhr_release(ps->xs);
    px__free(ps->user);
    px__free(ps);
}

const px__hclient_ops_t px__pusher_client_ops = {
    .output = c_output,
    .write = c_write,
    .message = c_message,
    .subscribed = c_subscribed,
    .answer = c_answer,
    .ended = c_ended,
    .release = c_release,
};
