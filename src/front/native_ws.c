/* The native protocol over WebSocket (GET /ws): one JSON object per text frame, parsed by
 * native_proto.c and executed here against the hub core (docs/protocol.md). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "front/native.h"
#include "front/native_proto.h"
#include "plexus/version.h"

/* ---- output -----------------------------------------------------------------------------------
 */

static void ws_text(px__nsession_t *s, const char *p, size_t n)
{
    if (s->ws)
        px_ws_send(s->ws, PX_WS_TEXT, p, n);
}

static void ws_json(px__nsession_t *s, px_json_writer_t *w)
{
    if (!w->err)
        ws_text(s, w->buf, w->len);
}

static void put_reply(px_json_writer_t *w, int has_id, int64_t id)
{
    PX_JSON_PUT_LIT(w, "{\"op\":\"reply\"");
    if (has_id) {
        PX_JSON_PUT_LIT(w, ",\"id\":");
        px_json_put_i64(w, id);
    }
}

__attribute__((format(printf, 5, 6))) static void
ws_error(px__nsession_t *s, int has_id, int64_t id, const char *code, const char *fmt, ...)
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
    ws_json(s, &w);
}

static void answer_error(px__nsession_t *s, const px__hreq_t *r)
{
    ws_error(s, r->has_id, r->id, r->err_code ? r->err_code : "error", "%s", r->err_msg);
}

static void unsub_reply(px__nsession_t *s, int has_id, int64_t id, const char *channel, size_t clen)
{
    char buf[PX__CHANNEL_MAX + 80];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    put_reply(&w, has_id, id);
    PX_JSON_PUT_LIT(&w, ",\"channel\":");
    px_json_put_str(&w, channel, clen);
    PX_JSON_PUT_LIT(&w, "}");
    ws_json(s, &w);
}

/* ---- deliveries (the format's deliver, on the worker) -------------------------------------------
 */

size_t px__native_ws_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);
size_t px__native_ws_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    PX_UNUSED(item);
    size_t n = 0;
    for (px__hsub_t *u = list, *next; u; u = next) {
        next = u->next;
        if (kind == PX__DELIVER_PRESENCE && !u->presence)
            continue;
        px__nsession_t *s = px__native_session(u->client);
        if (!frame) {
            /* The hub could not encode it (out of memory): never skip a message silently;
             * the client reconnects and resumes with since. */
            if (s->ws)
                px_ws_close(s->ws, 1011, "a message could not be delivered");
        } else if (s->ws && px_ws_send_frame(s->ws, frame) == 0) {
            n++;
        }
    }
    return n;
}

/* ---- the hub client
 * ---------------------------------------------------------------------------------- */

static size_t c_output(px__hclient_t *c)
{
    px__nsession_t *s = px__native_session(c);
    return s->ws ? px_ws_pending(s->ws) : 0;
}

static int c_write(px__hclient_t *c, px__hsub_t *u, px_slice_t *frame)
{
    PX_UNUSED(u);
    px__nsession_t *s = px__native_session(c);
    return s->ws ? px_ws_send_frame(s->ws, frame) : -EPIPE;
}

static void c_subscribed(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    px__nsession_t *s = px__native_session(c);
    px__nsub_t *x = px__hsub_extra(u);
    if (r->status) {
        ws_error(s, x->has_id, x->id, r->err_code ? r->err_code : "error", "%s", r->err_msg);
        if (u->cancelled)
            ws_error(s, x->cancel_has_id, x->cancel_id, "not_subscribed", "not subscribed to %.*s",
                     (int)u->name_len, u->name);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 4096);
    put_reply(&w, x->has_id, x->id);
    PX_JSON_PUT_LIT(&w, ",\"channel\":");
    px_json_put_str(&w, u->name, u->name_len);
    PX_JSON_PUT_LIT(&w, ",\"epoch\":");
    px_json_put_str(&w, r->epoch, strlen(r->epoch));
    PX_JSON_PUT_LIT(&w, ",\"offset\":");
    px_json_put_u64(&w, r->offset);
    if (r->recovered >= 0) {
        if (r->recovered)
            PX_JSON_PUT_LIT(&w, ",\"recovered\":true");
        else
            PX_JSON_PUT_LIT(&w, ",\"recovered\":false");
    }
    PX_JSON_PUT_LIT(&w, "}");
    ws_json(s, &w);
    px_json_writer_dispose(&w);
    if (u->cancelled) /* the hub had the unsubscribe right after: answer it now */
        unsub_reply(s, x->cancel_has_id, x->cancel_id, u->name, u->name_len);
}

static void history_answer(px__nsession_t *s, px__hreq_t *r)
{
    px_json_writer_t w;
    px_json_writer_init_growable(&w, (64u << 20));
    put_reply(&w, r->has_id, r->id);
    PX_JSON_PUT_LIT(&w, ",\"channel\":");
    px_json_put_str(&w, r->channel, r->channel_len);
    PX_JSON_PUT_LIT(&w, ",\"epoch\":");
    if (r->epoch[0])
        px_json_put_str(&w, r->epoch, strlen(r->epoch));
    else
        PX_JSON_PUT_LIT(&w, "null");
    PX_JSON_PUT_LIT(&w, ",\"offset\":");
    px_json_put_u64(&w, r->offset);
    PX_JSON_PUT_LIT(&w, ",\"messages\":[");
    px__native_put_messages(&w, r->msgs, r->nmsgs, 0);
    PX_JSON_PUT_LIT(&w, "]");
    if (r->truncated)
        PX_JSON_PUT_LIT(&w, ",\"truncated\":true");
    if (r->more)
        PX_JSON_PUT_LIT(&w, ",\"more\":true");
    PX_JSON_PUT_LIT(&w, "}");
    if (w.err)
        ws_error(s, r->has_id, r->id, "internal_error", "reply too large");
    else
        ws_json(s, &w);
    px_json_writer_dispose(&w);
}

static void c_answer(px__hclient_t *c, px__hreq_t *r)
{
    px__nsession_t *s = px__native_session(c);
    if (r->status) {
        answer_error(s, r);
        return;
    }
    px_json_writer_t w;
    switch (r->type) {
    case PX__HREQ_PUBLISH: {
        char buf[96];
        px_json_writer_init(&w, buf, sizeof buf);
        put_reply(&w, r->has_id, r->id);
        PX_JSON_PUT_LIT(&w, ",\"offset\":");
        px_json_put_u64(&w, r->offset);
        PX_JSON_PUT_LIT(&w, "}");
        ws_json(s, &w);
        break;
    }
    case PX__HREQ_HISTORY: history_answer(s, r); break;
    case PX__HREQ_PRESENCE:
        px_json_writer_init_growable(&w, 16u << 20);
        put_reply(&w, r->has_id, r->id);
        PX_JSON_PUT_LIT(&w, ",\"channel\":");
        px_json_put_str(&w, r->channel, r->channel_len);
        px__native_put_presence(&w, r);
        PX_JSON_PUT_LIT(&w, "}");
        ws_json(s, &w);
        px_json_writer_dispose(&w);
        break;
    }
}

static void c_ended(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    ws_error(px__native_session(c), 0, 0, r->err_code ? r->err_code : "error",
             "%s; the subscription to %.*s has ended", r->err_msg, (int)u->name_len, u->name);
}

static const px__hclient_ops_t ws_client_ops = {
    .output = c_output,
    .write = c_write,
    .subscribed = c_subscribed,
    .answer = c_answer,
    .ended = c_ended,
    .release = px__native_session_release,
};

/* ---- the connection
 * ------------------------------------------------------------------------------------ */

void px__native_ws_expired(px__nsession_t *s)
{
    if (!s->ws)
        return;
    ws_error(s, 0, 0, "token_expired",
             "the token expired: renew it with {\"op\":\"auth\"} before it does, or reconnect");
    px_ws_close(s->ws, 1008, "token expired");
}

static void ws_open(px_ws_t *ws, px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px__nsession_t *s = px__xcalloc(1, sizeof *s);
    unsigned worker = px_worker_id(px_conn_worker(px_ws_conn(ws)));
    px__hclient_init(&s->hc, n->hub, worker, &ws_client_ops);
    s->hc.page_bytes = px__native_page_bytes(n);
    px__native_session_init(s, n, NS_WS, worker);
    s->ws = ws;
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
        why = px__native_verify_token(n, tok, &s->claims);
    else if (!n->opts.allow_anonymous)
        why = "a token is required (?token=<JWT>)";
    if (why) {
        ws_error(s, 0, 0, "unauthorized", "%s", why);
        px_ws_close(ws, 1008, "unauthorized");
        return;
    }
    s->authorized = 1;
    px__native_arm_expiry(s);
    char buf[128];
    int k = snprintf(buf, sizeof buf, "{\"op\":\"welcome\",\"client\":\"%s\",\"version\":\"%s\"}",
                     s->client, PX_VERSION_STRING);
    ws_text(s, buf, (size_t)k);
}

static void ws_close_cb(px_ws_t *ws, int code, px_str_t reason, void *ud)
{
    PX_UNUSED(code);
    PX_UNUSED(reason);
    PX_UNUSED(ud);
    px__nsession_t *s = px_ws_get_data(ws);
    if (!s)
        return;
    s->ws = NULL;
    px_timer_stop(&s->expiry);
    px__hclient_close(&s->hc); /* frees s once the hub has answered what is out */
}

static void ws_drain(px_ws_t *ws, void *ud)
{
    PX_UNUSED(ud);
    px__nsession_t *s = px_ws_get_data(ws);
    if (s)
        px__hclient_drained(&s->hc);
}

static int allowed(const px__nsession_t *s, int action, const char *ch, size_t len)
{
    if (!s->claims || !s->claims->has_channels)
        return 1; /* anonymous (allowed by config) or a token without a channels claim */
    return px__jwt_channel_allowed(s->claims, action, ch, len);
}

/* {"op":"auth","token":"<JWT>"}: renew the connection's token before it expires. The new
 * token must be valid, name the same user (sub) and allow every current subscription;
 * otherwise the old one stays. */
static void do_auth(px__nsession_t *s, const px__nop_t *op)
{
    if (!s->claims) {
        ws_error(s, op->has_id, op->id, "forbidden", "this connection has no token to renew");
        return;
    }
    px__jwt_claims_t *c = NULL;
    const char *why = px__native_verify_token(s->nat, op->token, &c);
    if (why) {
        ws_error(s, op->has_id, op->id, "unauthorized", "%s", why);
        return;
    }
    if (c->sub_len != s->claims->sub_len || memcmp(c->sub, s->claims->sub, c->sub_len) != 0) {
        px__free(c);
        ws_error(s, op->has_id, op->id, "forbidden", "the new token names another user");
        return;
    }
    for (px__hsub_t *u = s->hc.subs; u; u = u->cnext) {
        if (!u->cancelled && c->has_channels &&
            !px__jwt_channel_allowed(c, PX_JWT_SUBSCRIBE, u->name, u->name_len)) {
            px__free(c);
            ws_error(s, op->has_id, op->id, "forbidden",
                     "the new token does not allow subscribe on %.*s", (int)u->name_len, u->name);
            return;
        }
    }
    px__free(s->claims);
    s->claims = c;
    px__native_arm_expiry(s);
    char out[96];
    px_json_writer_t w;
    px_json_writer_init(&w, out, sizeof out);
    put_reply(&w, op->has_id, op->id);
    if (c->exp) {
        PX_JSON_PUT_LIT(&w, ",\"exp\":");
        px_json_put_i64(&w, c->exp);
    }
    PX_JSON_PUT_LIT(&w, "}");
    ws_json(s, &w);
}

static void do_subscribe(px__nsession_t *s, const px__nop_t *op)
{
    const px_native_opts_t *o = &s->nat->opts;
    if (px__hclient_find(&s->hc, op->channel, op->channel_len)) {
        ws_error(s, op->has_id, op->id, "already_subscribed", "already subscribed to %s",
                 op->channel);
        return;
    }
    if (s->hc.nsubs >= o->max_channels) {
        ws_error(s, op->has_id, op->id, "too_many_channels", "at most %u channels per connection",
                 o->max_channels);
        return;
    }
    /* Listed in presence as this client, with the token's user and info (a client without
     * a token may describe itself with "info"; a token's info is never overridden). */
    px__presence_t who = {.user = {NULL, 0}, .info = {NULL, 0}};
    memcpy(who.client, s->client, sizeof who.client);
    if (s->claims && s->claims->sub_len)
        who.user = (px_str_t){s->claims->sub, s->claims->sub_len};
    if (s->claims && s->claims->info.ptr)
        who.info = s->claims->info;
    else if (!s->claims)
        who.info = op->info;
    px__subopts_t so = {.has_since = op->has_since,
                        .since_offset = op->since_offset,
                        .since_epoch = op->since_epoch,
                        .presence = op->presence,
                        .who = &who};
    px__hsub_t *u = px__hclient_subscribe(&s->hc, op->channel, op->channel_len, s->nat->ws_fmt, &so,
                                          sizeof(px__nsub_t));
    if (!u) {
        ws_error(s, op->has_id, op->id, "internal_error", "out of memory");
        return;
    }
    px__nsub_t *x = px__hsub_extra(u);
    x->has_id = op->has_id;
    x->id = op->id;
}

static void do_unsubscribe(px__nsession_t *s, const px__nop_t *op)
{
    px__hsub_t *u = px__hclient_find(&s->hc, op->channel, op->channel_len);
    if (!u) {
        ws_error(s, op->has_id, op->id, "not_subscribed", "not subscribed to %s", op->channel);
        return;
    }
    px__nsub_t *x = px__hsub_extra(u);
    x->cancel_has_id = op->has_id;
    x->cancel_id = op->id;
    if (px__hclient_unsubscribe(&s->hc, u)) /* done at once: else answered with the subscribe */
        unsub_reply(s, op->has_id, op->id, op->channel, op->channel_len);
}

static void ws_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    px__native_t *n = ud;
    px__nsession_t *s = px_ws_get_data(ws);
    if (!s || !s->authorized)
        return; /* being closed as unauthorized, or its token expired */
    if (opcode != PX_WS_TEXT) {
        ws_error(s, 0, 0, "bad_request", "the protocol uses JSON text frames");
        return;
    }
    px__nop_t op;
    char scratch[PX_JWT_MAX_TOKEN + 1];
    if (px__native_parse(data, len, &op, scratch, sizeof scratch) != 0) {
        ws_error(s, op.has_id, op.id, op.err_code, "%s", op.err_msg);
        return;
    }
    const px_native_opts_t *o = &n->opts;
    switch (op.op) {
    case PX__NOP_PING: {
        char buf[64];
        int k = op.has_id
                    ? snprintf(buf, sizeof buf, "{\"op\":\"pong\",\"id\":%lld}", (long long)op.id)
                    : snprintf(buf, sizeof buf, "{\"op\":\"pong\"}");
        ws_text(s, buf, (size_t)k);
        return;
    }
    case PX__NOP_AUTH: do_auth(s, &op); return;
    }
    int is_sub = op.op == PX__NOP_SUBSCRIBE, is_unsub = op.op == PX__NOP_UNSUBSCRIBE;
    if ((is_sub || is_unsub) && !px__native_rate_ok(&s->subscribes, o->subscribe_rate)) {
        ws_error(s, op.has_id, op.id, "rate_limited",
                 "more than %u subscribes and unsubscribes per second", o->subscribe_rate);
        return;
    }
    if (!is_unsub && px__hclient_inflight(&s->hc) >= o->max_inflight) {
        ws_error(s, op.has_id, op.id, "too_many_requests",
                 "%u requests of this connection are still being answered",
                 px__hclient_inflight(&s->hc));
        return;
    }
    if (is_unsub) {
        do_unsubscribe(s, &op);
        return;
    }
    int action = op.op == PX__NOP_PUBLISH ? PX_JWT_PUBLISH : PX_JWT_SUBSCRIBE;
    if (!allowed(s, action, op.channel, op.channel_len)) {
        ws_error(s, op.has_id, op.id, "forbidden", "your token does not allow %s on %s",
                 action == PX_JWT_PUBLISH ? "publish" : "subscribe", op.channel);
        return;
    }
    px__hreq_t *r;
    switch (op.op) {
    case PX__NOP_SUBSCRIBE: do_subscribe(s, &op); return;
    case PX__NOP_PUBLISH: {
        size_t max = px_hub_options(n->hub)->max_payload;
        if (op.data.len > max) {
            ws_error(s, op.has_id, op.id, "payload_too_large",
                     "data is %zu bytes; the limit is %zu", op.data.len, max);
            return;
        }
        if (!px__native_rate_ok(&s->publishes, o->publish_rate)) {
            ws_error(s, op.has_id, op.id, "rate_limited", "more than %u publishes per second",
                     o->publish_rate);
            return;
        }
        r = px__hreq_new(n->hub, PX__HREQ_PUBLISH, op.channel, op.channel_len);
        r->m = px__hub_msg_new((px_str_t){op.channel, op.channel_len}, (px_str_t){"", 0}, op.data,
                               px_conn_id(px_ws_conn(ws)));
        if (!r->m) {
            px__hreq_free(r);
            ws_error(s, op.has_id, op.id, "internal_error", "out of memory");
            return;
        }
        break;
    }
    case PX__NOP_HISTORY: {
        uint64_t limit = op.has_limit                 ? op.limit
                         : o->history_limit_max < 100 ? o->history_limit_max
                                                      : 100;
        if (limit == 0 || limit > o->history_limit_max) {
            ws_error(s, op.has_id, op.id, "bad_request", "\"limit\" must be 1..%u",
                     o->history_limit_max);
            return;
        }
        r = px__hreq_new(n->hub, PX__HREQ_HISTORY, op.channel, op.channel_len);
        r->since_offset = op.since_offset;
        r->limit = (size_t)limit;
        r->max_bytes = px__native_page_bytes(n);
        r->has_id = op.has_id;
        r->id = op.id;
        px__hclient_request(&s->hc, r, 1); /* paced: a long answer waits for the output */
        return;
    }
    default: r = px__hreq_new(n->hub, PX__HREQ_PRESENCE, op.channel, op.channel_len); break;
    }
    r->has_id = op.has_id;
    r->id = op.id;
    px__hclient_request(&s->hc, r, 0);
}

static const px_ws_callbacks_t ws_callbacks = {
    .on_open = ws_open,
    .on_message = ws_message,
    .on_drain = ws_drain,
    .on_close = ws_close_cb,
};

int px__native_ws_init(px__native_t *n)
{
    return px_ws_route(n->server, "/ws", &ws_callbacks, n);
}
