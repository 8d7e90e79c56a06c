/* The native protocol front-end: set-up, and what its WebSocket and SSE sessions share
 * (tokens, rate limits, token expiry). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "front/native.h"

void px_native_opts_init(px_native_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_channels = 100;
    o->publish_rate = 100;
    o->subscribe_rate = 100;
    o->max_inflight = 32;
    o->history_limit_max = 1000;
    o->sse_keepalive_ms = 15000;
}

static void native_free(void *p)
{
    px__native_t *n = p;
    px__free((void *)n->opts.jwt_secret);
    px__free((void *)n->opts.api_key);
    px__free(n->locals);
    px__free(n);
}

int px_native_routes(px_server_t *s, px_hub_t *hub, const px_native_opts_t *o)
{
    static char key; /* one native front per server */
    if (px_server_module(s, &key))
        return -EALREADY;
    px__native_t *n = px__calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->hub = hub;
    n->server = s;
    if (o)
        n->opts = *o;
    else
        px_native_opts_init(&n->opts);
    n->opts.jwt_secret = o && o->jwt_secret && *o->jwt_secret ? px__xstrdup(o->jwt_secret) : NULL;
    n->opts.api_key = o && o->api_key && *o->api_key ? px__xstrdup(o->api_key) : NULL;
    n->nworkers = px_workers_count(px_server_workers(s));
    n->locals = px__calloc(n->nworkers, sizeof *n->locals);
    int r = !n->locals ? -ENOMEM : px_server_module_set(s, &key, n, native_free);
    if (r) {
        native_free(n);
        return r;
    }
    n->ws_fmt = px__hub_add_format(hub, &px__native_ws_format);
    n->sse_fmt = px__hub_add_format(hub, &px__native_sse_format);
    if (n->ws_fmt < 0 || n->sse_fmt < 0)
        return n->ws_fmt < 0 ? n->ws_fmt : n->sse_fmt;
    r = px__native_ws_init(n);
    return r ? r : px__native_http_init(n);
}

int64_t px__native_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bytes of messages per history answer or catch-up page: a quarter of the output budget
 * (a page goes out only once the connection has drained), at most PX__PAGE_MAX. */
size_t px__native_page_bytes(const px__native_t *n)
{
    size_t cap = px_server_opts(n->server)->output_cap / 4;
    return cap < 1 ? 1 : cap > PX__PAGE_MAX ? PX__PAGE_MAX : cap;
}

/* ---- tokens and limits ---------------------------------------------------------------------- */

/* Verify a client token. Returns NULL and *out (malloc'd claims), or an error text. */
const char *px__native_verify_token(px__native_t *n, px_str_t tok, px__jwt_claims_t **out)
{
    if (!n->opts.jwt_secret)
        return "this server does not accept tokens (no --jwt-secret)";
    px__jwt_claims_t *c = px__xmalloc(sizeof *c);
    const char *why = NULL;
    int r = px__jwt_verify_hs256(tok.ptr, tok.len, (const uint8_t *)n->opts.jwt_secret,
                                 strlen(n->opts.jwt_secret), (int64_t)time(NULL), c, &why);
    if (r) {
        px__free(c);
        return why ? why : "invalid token";
    }
    *out = c;
    return NULL;
}

int px__native_rate_ok(px__bucket_t *b, unsigned rate)
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

void px__native_bucket_init(px__bucket_t *b, unsigned rate)
{
    b->tokens = rate;
    b->ms = px_now_ms();
}

/* ---- sessions ----------------------------------------------------------------------------------
 */

/* A token is valid until its exp, not only when the connection opens: then the session
 * ends (WebSocket: an error with code token_expired and close 1008; SSE: a token-expired
 * event and the end of the stream) unless {"op":"auth"} renewed it. */
static void on_expiry(px_timer_t *t)
{
    px__nsession_t *s = t->data;
    if (s->hc.closed)
        return;
    s->authorized = 0; /* nothing more is taken from it */
    if (s->kind == NS_WS)
        px__native_ws_expired(s);
    else
        px__native_sse_expired(s);
}

void px__native_arm_expiry(px__nsession_t *s)
{
    px_timer_stop(&s->expiry);
    if (!s->claims || !s->claims->exp)
        return;
    int64_t ms = s->claims->exp * 1000 - px__native_wall_ms();
    px_timer_start(px_worker_loop(px_worker_self()), &s->expiry, ms > 0 ? (uint64_t)ms : 0);
}

void px__native_session_init(px__nsession_t *s, px__native_t *n, int kind, unsigned worker)
{
    s->kind = kind;
    s->nat = n;
    px_timer_init(&s->expiry, on_expiry, s);
    px__native_bucket_init(&s->publishes, n->opts.publish_rate);
    px__native_bucket_init(&s->subscribes, n->opts.subscribe_rate);
    PX_UNUSED(worker);
}

void px__native_session_release(px__hclient_t *c)
{
    px__nsession_t *s = px__native_session(c);
    px__free(s->claims);
    px__free(s);
}
