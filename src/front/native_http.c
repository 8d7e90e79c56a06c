/* The native protocol over HTTP: the API under /api/channels and Server-Sent Events
 * (docs/protocol.md). Every request is answered asynchronously from the hub's answer. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "front/native.h"
#include "util/crypto.h"

static unsigned req_worker(px_req_t *req)
{
    return px_worker_id(px_req_worker(req));
}

/* ---- authorization -----------------------------------------------------------------------------
 */

/* Check the API credentials. Returns 0 (allowed; *claims set for a JWT) or answers the
 * request with 401/403 and returns -1. */
static int api_auth(px__native_t *n, px_req_t *req, px__jwt_claims_t **claims)
{
    *claims = NULL;
    px_str_t auth = px_req_header(req, "authorization");
    px_str_t tok = {NULL, 0};
    if (auth.len > 7 && strncasecmp(auth.ptr, "Bearer ", 7) == 0)
        tok = (px_str_t){auth.ptr + 7, auth.len - 7};
    else if (px_req_query_param(req, "token", &tok) != 1)
        tok = (px_str_t){NULL, 0};
    if (!tok.len) {
        if (n->opts.allow_anonymous && !n->opts.api_key)
            return 0;
        px_res_header(req, "WWW-Authenticate", "Bearer");
        px_respond_error(req, 401, "unauthorized",
                         "send \"Authorization: Bearer <api key or token>\"");
        return -1;
    }
    if (n->opts.api_key) {
        size_t kl = strlen(n->opts.api_key);
        if (tok.len == kl && px__memcmp_ct(tok.ptr, n->opts.api_key, kl) == 0)
            return 0;
    }
    if (n->opts.jwt_secret && !px__native_verify_token(n, tok, claims))
        return 0;
    px_respond_error(req, 403, "forbidden", "invalid API key or token");
    return -1;
}

/* Authorize `action` on the request's channel. *keep (may be NULL) receives the token's
 * claims (malloc'd, NULL for the API key or anonymous access); otherwise they are freed. */
static int api_channel(px__native_t *n, px_req_t *req, int action, px_str_t *out,
                       px__jwt_claims_t **keep)
{
    px__jwt_claims_t *claims;
    if (api_auth(n, req, &claims) != 0)
        return -1;
    px_str_t ch = px_req_param(req, "channel");
    if (!px__channel_name_ok(ch.ptr, ch.len)) {
        px__free(claims);
        px_respond_error(req, 400, "invalid_channel",
                         "a channel name is 1-200 bytes of A-Z a-z 0-9 _ - = @ , . ; : /");
        return -1;
    }
    if (claims && claims->has_channels &&
        !px__jwt_channel_allowed(claims, action, ch.ptr, ch.len)) {
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

static px__hreq_t *http_req(px__native_t *n, px_req_t *req, int type, px_str_t ch,
                            void (*done)(px__hreq_t *))
{
    px__hreq_t *r = px__hreq_new(n->hub, type, ch.ptr, ch.len);
    r->worker = req_worker(req);
    r->done = done;
    r->ud = req;
    return r;
}

static int answered_error(px_req_t *req, px__hreq_t *r)
{
    if (!r->status)
        return 0;
    px_respond_error(req, r->status, r->err_code, "%s", r->err_msg);
    return 1;
}

static void respond_json(px_req_t *req, int status, px_json_writer_t *w)
{
    if (w->err)
        px_respond_error(req, 500, "internal_error", "reply too large");
    else
        px_respond(req, status, "application/json", w->buf, w->len);
    px_json_writer_dispose(w);
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

/* ---- publish ------------------------------------------------------------------------------------
 */

static void publish_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    if (!answered_error(req, r)) {
        char buf[PX__CHANNEL_MAX + PX__EPOCH_MAX + 96];
        px_json_writer_t w;
        px_json_writer_init(&w, buf, sizeof buf);
        PX_JSON_PUT_LIT(&w, "{\"channel\":");
        px_json_put_str(&w, r->channel, r->channel_len);
        PX_JSON_PUT_LIT(&w, ",\"epoch\":");
        px_json_put_str(&w, r->epoch, strlen(r->epoch));
        PX_JSON_PUT_LIT(&w, ",\"offset\":");
        px_json_put_u64(&w, r->offset);
        PX_JSON_PUT_LIT(&w, "}");
        respond_json(req, 201, &w);
    }
    px__hreq_free(r);
}

static void api_publish(px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px_str_t ch;
    if (api_channel(n, req, PX_JWT_PUBLISH, &ch, NULL) != 0)
        return;
    px_str_t body = px_req_body(req);
    size_t max = px_hub_options(n->hub)->max_payload;
    if (body.len > max) {
        px_respond_error(req, 413, "payload_too_large", "data is %zu bytes; the limit is %zu",
                         body.len, max);
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
    size_t len = body.len;
    while (len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, len--;
    while (len &&
           (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r' || p[len - 1] == '\n'))
        len--;
    px__hreq_t *r = http_req(n, req, PX__HREQ_PUBLISH, ch, publish_done);
    r->m = px__hub_msg_new(ch, (px_str_t){"", 0}, (px_str_t){p, len}, 0);
    if (!r->m) {
        px__hreq_free(r);
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    px__hub_post(n->hub, r);
}

/* ---- history
 * --------------------------------------------------------------------------------------- */

/* A history answer longer than one page is streamed: the first page opens the JSON array,
 * each further page is asked for once the previous one has been written (paced by the
 * client's reading), and the last closes it. The hub does one bounded read per page;
 * nothing is built for a client that has gone. */
typedef struct hist_stream {
    px__native_t *nat;
    uint64_t since; /* offset of the last message sent */
    size_t left;    /* messages still wanted */
    unsigned streaming : 1;
    unsigned at_hub : 1;  /* a page is being read */
    unsigned aborted : 1; /* the client left while a page was at the hub */
    unsigned truncated : 1;
    size_t channel_len;
    char channel[PX__CHANNEL_MAX + 1];
} hist_stream_t;

static void history_done(px__hreq_t *r);

static void history_ask(px_req_t *req, hist_stream_t *hs)
{
    px__hreq_t *r = http_req(hs->nat, req, PX__HREQ_HISTORY,
                             (px_str_t){hs->channel, hs->channel_len}, history_done);
    r->since_offset = hs->since;
    r->limit = hs->left;
    r->max_bytes = px__native_page_bytes(hs->nat);
    r->tag = hs;
    hs->at_hub = 1;
    px__hub_post(hs->nat->hub, r);
}

static void history_drain(px_req_t *req, void *ud)
{
    hist_stream_t *hs = ud;
    if (!hs->at_hub && !hs->aborted)
        history_ask(req, hs);
}

static void history_abort(px_req_t *req, void *ud)
{
    hist_stream_t *hs = ud;
    if (hs->at_hub)
        hs->aborted = 1; /* ended when the page comes back */
    else
        px_stream_end(req);
}

static void put_history_head(px_json_writer_t *w, const px__hreq_t *r)
{
    PX_JSON_PUT_LIT(w, "{\"channel\":");
    px_json_put_str(w, r->channel, r->channel_len);
    PX_JSON_PUT_LIT(w, ",\"epoch\":");
    if (r->epoch[0])
        px_json_put_str(w, r->epoch, strlen(r->epoch));
    else
        PX_JSON_PUT_LIT(w, "null");
    PX_JSON_PUT_LIT(w, ",\"offset\":");
    px_json_put_u64(w, r->offset);
    PX_JSON_PUT_LIT(w, ",\"messages\":[");
}

static void history_page(px_req_t *req, hist_stream_t *hs, px__hreq_t *r)
{
    int first = !hs->streaming;
    px_json_writer_t w;
    px_json_writer_init_growable(&w, r->max_bytes + (16u << 20));
    if (first)
        put_history_head(&w, r);
    px__native_put_messages(&w, r->msgs, r->nmsgs, !first);
    hs->left -= r->nmsgs < hs->left ? r->nmsgs : hs->left;
    hs->since = r->page_last;
    if (r->truncated)
        hs->truncated = 1;
    int last = !r->more || hs->left == 0;
    if (last) {
        PX_JSON_PUT_LIT(&w, "]");
        if (hs->truncated)
            PX_JSON_PUT_LIT(&w, ",\"truncated\":true");
        PX_JSON_PUT_LIT(&w, "}");
    }
    if (w.err) {
        px_json_writer_dispose(&w);
        if (hs->streaming)
            px_req_abort(req); /* the head is out: cut the transfer */
        else
            px_respond_error(req, 500, "internal_error", "reply too large");
        return;
    }
    if (first && last) { /* it all fits one answer: a plain response */
        respond_json(req, 200, &w);
        return;
    }
    if (first) {
        if (px_stream_start(req, 200, "application/json") != 0) {
            px_json_writer_dispose(&w);
            return; /* HEAD (the head went out) or a failure: the request is over */
        }
        hs->streaming = 1;
        px_stream_on_drain(req, history_drain, hs);
        px_req_on_abort(req, history_abort, hs);
    }
    int rc = px_stream_write(req, w.buf, w.len);
    px_json_writer_dispose(&w);
    if (rc != 0)
        px_req_abort(req); /* on_abort ends the stream */
    else if (last)
        px_stream_end(req);
    /* else the next page is asked for when this one has been written (history_drain) */
}

static void history_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    hist_stream_t *hs = r->tag;
    hs->at_hub = 0;
    if (hs->aborted) {
        px_stream_end(req);
    } else if (r->status) {
        if (hs->streaming)
            px_req_abort(req);
        else
            answered_error(req, r);
    } else {
        history_page(req, hs, r);
    }
    px__hreq_free(r);
}

static void api_history(px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px_str_t ch;
    if (api_channel(n, req, PX_JWT_SUBSCRIBE, &ch, NULL) != 0)
        return;
    unsigned lmax = n->opts.history_limit_max;
    uint64_t since = 0, limit = lmax < 100 ? lmax : 100;
    if (query_u64(req, "since", &since) < 0) {
        px_respond_error(req, 400, "bad_request",
                         "since must be an offset (a non-negative integer)");
        return;
    }
    if (query_u64(req, "limit", &limit) < 0 || limit == 0 || limit > lmax) {
        px_respond_error(req, 400, "bad_request", "limit must be 1..%u", lmax);
        return;
    }
    hist_stream_t *hs = px_req_alloc(req, sizeof *hs);
    if (!hs) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    memset(hs, 0, sizeof *hs);
    hs->nat = n;
    hs->since = since;
    hs->left = (size_t)limit;
    memcpy(hs->channel, ch.ptr, ch.len);
    hs->channel_len = ch.len;
    history_ask(req, hs);
}

/* ---- presence and listings
 * --------------------------------------------------------------------------- */

static void presence_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    if (!answered_error(req, r)) {
        px_json_writer_t w;
        px_json_writer_init_growable(&w, 16u << 20);
        PX_JSON_PUT_LIT(&w, "{\"channel\":");
        px_json_put_str(&w, r->channel, r->channel_len);
        px__native_put_presence(&w, r);
        PX_JSON_PUT_LIT(&w, "}");
        respond_json(req, 200, &w);
    }
    px__hreq_free(r);
}

static void api_presence(px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px_str_t ch;
    if (api_channel(n, req, PX_JWT_SUBSCRIBE, &ch, NULL) != 0)
        return;
    px__hub_post(n->hub, http_req(n, req, PX__HREQ_PRESENCE, ch, presence_done));
}

static void channels_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    const px__jwt_claims_t *cl = r->tag; /* a token's claims, or NULL */
    if (!answered_error(req, r)) {
        px_json_writer_t w;
        px_json_writer_init_growable(&w, 64u << 20);
        PX_JSON_PUT_LIT(&w, "{\"channels\":[");
        int first = 1;
        for (size_t i = 0; i < r->nchans; i++) {
            const px__chaninfo_t *c = &r->chans[i];
            /* A token sees only the channels it may subscribe to. */
            if (cl && cl->has_channels &&
                !px__jwt_channel_allowed(cl, PX_JWT_SUBSCRIBE, c->name, c->name_len))
                continue;
            if (!first)
                PX_JSON_PUT_LIT(&w, ",");
            first = 0;
            PX_JSON_PUT_LIT(&w, "{\"channel\":");
            px_json_put_str(&w, c->name, c->name_len);
            PX_JSON_PUT_LIT(&w, ",\"subscribers\":");
            px_json_put_u64(&w, c->subscribers);
            PX_JSON_PUT_LIT(&w, ",\"presence\":");
            px_json_put_u64(&w, c->presence);
            PX_JSON_PUT_LIT(&w, ",\"epoch\":");
            px_json_put_str(&w, c->epoch, strlen(c->epoch));
            PX_JSON_PUT_LIT(&w, ",\"offset\":");
            px_json_put_u64(&w, c->offset);
            PX_JSON_PUT_LIT(&w, "}");
        }
        PX_JSON_PUT_LIT(&w, "]}");
        respond_json(req, 200, &w);
    }
    px__free(r->tag);
    px__hreq_free(r);
}

static void api_channels(px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px__jwt_claims_t *claims;
    if (api_auth(n, req, &claims) != 0)
        return;
    px__hreq_t *r = http_req(n, req, PX__HREQ_CHANNELS, (px_str_t){NULL, 0}, channels_done);
    r->tag = claims;
    px__hub_post(n->hub, r);
}

/* ---- Server-Sent Events
 * ----------------------------------------------------------------------------- */

static void sse_unlink(px__nsession_t *s)
{
    px__nlocal_t *L = &s->nat->locals[s->hc.worker];
    if (s->sse_prev)
        s->sse_prev->sse_next = s->sse_next;
    else if (L->sse == s)
        L->sse = s->sse_next;
    if (s->sse_next)
        s->sse_next->sse_prev = s->sse_prev;
    s->sse_prev = s->sse_next = NULL;
}

/* End the stream (answers the request) and close the session. */
static void sse_end(px__nsession_t *s)
{
    px_req_t *req = s->req;
    if (!req)
        return;
    s->req = NULL;
    sse_unlink(s);
    px_timer_stop(&s->expiry);
    px__hclient_close(&s->hc); /* frees s once the hub has answered what is out */
    px_stream_end(req);
}

size_t px__native_sse_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);
size_t px__native_sse_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    PX_UNUSED(item);
    size_t n = 0;
    if (kind == PX__DELIVER_PRESENCE) /* messages and recovery-failed (gap) events */
        return 0;
    for (px__hsub_t *u = list, *next; u; u = next) {
        next = u->next;
        px__nsession_t *s = px__native_session(u->client);
        if (!s->req)
            continue;
        if (!frame) { /* not encoded (out of memory): end, the client resumes from its id */
            sse_end(s);
        } else if (px_stream_write_slice(s->req, frame, 0, frame->len) != 0) {
            px_log(PX_LOG_WARN, "SSE client over its output budget: closing");
            sse_end(s);
        } else {
            n++;
        }
    }
    return n;
}

void px__native_sse_expired(px__nsession_t *s)
{
    if (!s->req)
        return;
    static const char ev[] = "event: token-expired\ndata: {\"error\":\"token_expired\","
                             "\"message\":\"the token expired\"}\n\n";
    px_stream_write(s->req, ev, sizeof ev - 1);
    sse_end(s);
}

static size_t c_output(px__hclient_t *c)
{
    px__nsession_t *s = px__native_session(c);
    return s->req ? px_stream_pending(s->req) : 0;
}

static int c_write(px__hclient_t *c, px__hsub_t *u, px_slice_t *frame)
{
    PX_UNUSED(u);
    px__nsession_t *s = px__native_session(c);
    if (!s->req)
        return -EPIPE;
    if (px_stream_write_slice(s->req, frame, 0, frame->len) != 0) {
        sse_end(s);
        return -EPIPE;
    }
    return 0;
}

static void c_subscribed(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    PX_UNUSED(u);
    if (r->status) /* the stream ends: nothing to subscribe it to */
        sse_end(px__native_session(c));
}

static void c_answer(px__hclient_t *c, px__hreq_t *r)
{
    PX_UNUSED(c);
    PX_UNUSED(r);
}

static void c_ended(px__hclient_t *c, px__hsub_t *u, px__hreq_t *r)
{
    PX_UNUSED(u);
    PX_UNUSED(r);
    sse_end(px__native_session(c));
}

static const px__hclient_ops_t sse_client_ops = {
    .output = c_output,
    .write = c_write,
    .subscribed = c_subscribed,
    .answer = c_answer,
    .ended = c_ended,
    .release = px__native_session_release,
};

static void sse_keepalive(px_timer_t *t)
{
    px__nlocal_t *L = t->data;
    px__native_t *n = NULL;
    for (px__nsession_t *s = L->sse, *next; s; s = next) {
        next = s->sse_next;
        n = s->nat;
        if (s->req && px_stream_write(s->req, ": keep-alive\n\n", 14) != 0)
            sse_end(s);
    }
    if (L->sse && n)
        px_timer_start(px_worker_loop(px_worker_self()), t, n->opts.sse_keepalive_ms);
    else
        L->sse_timer_on = 0;
}

static void sse_abort(px_req_t *req, void *ud)
{
    PX_UNUSED(req);
    sse_end(ud);
}

static void sse_drain(px_req_t *req, void *ud)
{
    PX_UNUSED(req);
    px__nsession_t *s = ud;
    px__hclient_drained(&s->hc);
}

static void api_events(px_req_t *req, void *ud)
{
    px__native_t *n = ud;
    px_str_t ch;
    px__jwt_claims_t *claims = NULL;
    if (api_channel(n, req, PX_JWT_SUBSCRIBE, &ch, &claims) != 0)
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
    unsigned worker = req_worker(req);
    px__nsession_t *s = px__xcalloc(1, sizeof *s);
    px__hclient_init(&s->hc, n->hub, worker, &sse_client_ops);
    s->hc.page_bytes = px__native_page_bytes(n);
    px__native_session_init(s, n, NS_SSE, worker);
    s->claims = claims;
    s->authorized = 1;
    s->req = req;
    px__nlocal_t *L = &n->locals[worker];
    s->sse_next = L->sse;
    if (L->sse)
        L->sse->sse_prev = s;
    L->sse = s;
    px_req_on_abort(req, sse_abort, s);
    px_res_header(req, "X-Accel-Buffering", "no");
    if (px_stream_start(req, 200, "text/event-stream") != 0) {
        /* HEAD, or a failure: the request is over and on_abort will not come. */
        s->req = NULL;
        sse_unlink(s);
        px__hclient_close(&s->hc);
        return;
    }
    px_stream_write(req, "retry: 2000\n\n", 13);
    px_stream_on_drain(req, sse_drain, s);
    px__native_arm_expiry(s);
    if (!L->sse_timer_on) {
        L->sse_timer_on = 1;
        px_timer_init(&L->sse_timer, sse_keepalive, L);
        px_timer_start(px_worker_loop(px_req_worker(req)), &L->sse_timer, n->opts.sse_keepalive_ms);
    }
    px__subopts_t so = {.has_since = has_since, .since_offset = since};
    if (!px__hclient_subscribe(&s->hc, ch.ptr, ch.len, n->sse_fmt, &so, 0))
        sse_end(s);
}

int px__native_http_init(px__native_t *n)
{
    px_server_t *s = n->server;
    int r = px_route(s, "POST", "/api/channels/:channel/messages", api_publish, n);
    r |= px_route(s, "GET", "/api/channels/:channel/messages", api_history, n);
    r |= px_route(s, "GET", "/api/channels/:channel/presence", api_presence, n);
    r |= px_route(s, "GET", "/api/channels/:channel/events", api_events, n);
    r |= px_route(s, "GET", "/api/channels", api_channels, n);
    return r ? -ENOMEM : 0;
}
