/* The Pusher front-end: set-up, apps, the channel mapping, socket ids, signatures and the
 * per-worker state (see pusher.h for the files). */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "front/pusher.h"
#include "util/crypto.h"

int px__pusher_m_conns = -1;

int64_t px__pusher_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int px__pusher_rate_ok(pbucket_t *b, unsigned rate)
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

void px__pusher_bucket_init(pbucket_t *b, unsigned rate)
{
    b->tokens = rate;
    b->ms = px_now_ms();
}

/* ---- apps ------------------------------------------------------------------------------------ */

papp_t *px__pusher_app_by_key(px__pusher_t *p, const char *key, size_t len)
{
    for (size_t i = 0; i < p->napps; i++)
        if (strlen(p->apps[i].o.key) == len && memcmp(p->apps[i].o.key, key, len) == 0)
            return &p->apps[i];
    return NULL;
}

papp_t *px__pusher_app_by_id(px__pusher_t *p, const char *id, size_t len)
{
    for (size_t i = 0; i < p->napps; i++)
        if (strlen(p->apps[i].o.id) == len && memcmp(p->apps[i].o.id, id, len) == 0)
            return &p->apps[i];
    return NULL;
}

int px__pusher_origin_ok(const papp_t *app, px_str_t origin)
{
    const char *const *o = app->o.allowed_origins;
    if (!o || !*o)
        return 1;
    for (; *o; o++)
        if (strcmp(*o, "*") == 0 ||
            (strlen(*o) == origin.len && strncasecmp(*o, origin.ptr, origin.len) == 0))
            return 1;
    return 0;
}

/* ---- channels: Pusher names and hub names ------------------------------------------------------
 *
 * A Pusher channel `name` of an app is the hub channel prefix + name, except the leading '#'
 * of "#server-to-user-{id}", which is ':' in the hub (its alphabet has no '#'). Pusher names
 * never hold ':', and non-empty prefixes end with one, so every hub name belongs to one
 * app at most: the one whose prefix leaves a valid Pusher name. */

size_t px__pusher_hub_name(const papp_t *app, const char *name, size_t len,
                           char out[PX__CHANNEL_MAX + 1])
{
    size_t pl = app->prefix_len;
    if (pl + len > PX__CHANNEL_MAX || !len)
        return 0;
    memcpy(out, app->o.channel_prefix, pl);
    memcpy(out + pl, name, len);
    if (name[0] == '#')
        out[pl] = ':';
    out[pl + len] = '\0';
    return pl + len;
}

size_t px__pusher_name_of(const papp_t *app, const char *h, size_t hl, char *out)
{
    size_t pl = app->prefix_len;
    if (hl <= pl || memcmp(h, app->o.channel_prefix, pl) != 0)
        return 0;
    size_t n = hl - pl;
    memcpy(out, h + pl, n);
    if (out[0] == ':')
        out[0] = '#';
    out[n] = '\0';
    return px__pusher_channel_ok(out, n) ? n : 0;
}

papp_t *px__pusher_app_of_channel(px__pusher_t *p, const char *h, size_t hl, char *name,
                                  size_t *name_len)
{
    papp_t *best = NULL;
    for (size_t i = 0; i < p->napps; i++) {
        papp_t *a = &p->apps[i];
        if (best && a->prefix_len <= best->prefix_len)
            continue;
        size_t n = px__pusher_name_of(a, h, hl, name);
        if (n) {
            best = a;
            *name_len = n;
        }
    }
    if (best) /* the last call may have been another app's */
        *name_len = px__pusher_name_of(best, h, hl, name);
    return best;
}

/* ---- socket ids and signatures ----------------------------------------------------------------
 */

/* "A.B": A is random per process (never 0), B counts connections. As a number (A << 32 | B)
 * it is the publisher id of the connection's messages; the native front's ids (connection
 * numbers) stay below 2^32, so they never collide. */
uint64_t px__pusher_new_sid(px__pusher_t *p)
{
    uint32_t lo = atomic_fetch_add_explicit(&p->sid_lo, 1, memory_order_relaxed) + 1;
    return (uint64_t)p->sid_hi << 32 | lo;
}

int px__pusher_socket_id(uint64_t sid, char *out, size_t n)
{
    return snprintf(out, n, "%u.%u", (unsigned)(sid >> 32), (unsigned)(sid & 0xffffffffu));
}

void px__pusher_sign(const papp_t *app, const void *data, size_t len, char out[65])
{
    uint8_t mac[32];
    static const char hex[] = "0123456789abcdef";
    if (px__hmac_sha256(app->o.secret, strlen(app->o.secret), data, len, mac) != 0)
        memset(mac, 0, sizeof mac);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = '\0';
}

int px__pusher_auth_ok(const papp_t *app, px_str_t auth, const void *data, size_t len)
{
    size_t kl = strlen(app->o.key);
    char want[65];
    px__pusher_sign(app, data, len, want);
    if (auth.len != kl + 1 + 64 || memcmp(auth.ptr, app->o.key, kl) != 0 || auth.ptr[kl] != ':')
        return 0;
    char got[64];
    for (int i = 0; i < 64; i++) { /* hex digits may come in upper case */
        char c = auth.ptr[kl + 1 + i];
        got[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    return px__memcmp_ct(got, want, 64) == 0;
}

/* ---- connecting: the URL's checks (pusher-js acts on these codes) ------------------------------
 */

int px__pusher_check_connect(px__pusher_t *p, px_req_t *req, px_str_t key, papp_t **out,
                             const char **why)
{
    *out = NULL;
    papp_t *app = key.len ? px__pusher_app_by_key(p, key.ptr, key.len) : NULL;
    if (!app) {
        *why = "App key not in this server";
        return 4001;
    }
    *out = app;
    px_str_t proto;
    int r = px_req_query_param(req, "protocol", &proto);
    if (r <= 0 || !proto.len) {
        *why = "No protocol version supplied";
        return 4008;
    }
    unsigned v = 0;
    for (size_t i = 0; i < proto.len; i++) {
        if (proto.ptr[i] < '0' || proto.ptr[i] > '9' || i > 4) {
            *why = "Invalid version string format";
            return 4006;
        }
        v = v * 10 + (unsigned)(proto.ptr[i] - '0');
    }
    if (v < 5 || v > 7) {
        *why = "Unsupported protocol version (5 to 7 are)";
        return 4007;
    }
    if (!app->o.enabled) {
        *why = "App disabled";
        return 4003;
    }
    px_str_t origin = px_req_header(req, "origin");
    if (origin.len && !px__pusher_origin_ok(app, origin)) {
        *why = "Origin not allowed";
        return 4009;
    }
    return 0;
}

/* ---- per worker
 * ------------------------------------------------------------------------------------
 */

plocal_t *px__pusher_local(px__pusher_t *p)
{
    return &p->locals[px_worker_id(px_worker_self())];
}

char *px__pusher_scratch(px__pusher_t *p, size_t need)
{
    plocal_t *L = px__pusher_local(p);
    if (L->scratch_len < need) {
        char *n = px__realloc(L->scratch, need);
        if (!n)
            return NULL;
        L->scratch = n;
        L->scratch_len = need;
    }
    return L->scratch;
}

void px__pusher_terminate_local(px__pusher_t *p, papp_t *app, px_str_t user)
{
    plocal_t *L = px__pusher_local(p);
    for (psess_t *ps = L->sessions, *next; ps; ps = next) {
        next = ps->next;
        if (ps->app == app && ps->user && ps->user_len == user.len &&
            memcmp(ps->user, user.ptr, user.len) == 0)
            px__pusher_sess_fail(ps, 4009, "You got disconnected by the app.");
    }
}

/* Graceful shutdown: every session is told to reconnect at once (4200) — WebSocket ones
 * by their connection's shutdown, the others (xhr) here. */
static void on_drain(px_worker_t *w, void *ud)
{
    px__pusher_t *p = ud;
    px__pusher_xhr_drain(p, px_worker_id(w));
}

static void pusher_free(void *ptr)
{
    px__pusher_t *p = ptr;
    px__pusher_xhr_free(p);
    px__pusher_hooks_free(p);
    for (size_t i = 0; i < p->napps; i++)
        px__pusher_app_dispose(&p->apps[i]);
    px__free(p->apps);
    for (unsigned i = 0; p->locals && i < p->nworkers; i++) {
        px__free(p->locals[i].backend);
        px__free(p->locals[i].scratch);
    }
    px__free(p->locals);
    px__free(p);
}

int px_pusher_apps_validate(const px_pusher_app_t *apps, size_t napps, char *err, size_t errlen)
{
    if (!napps) {
        snprintf(err, errlen, "no Pusher app");
        return -EINVAL;
    }
    papp_t *v = px__xcalloc(napps, sizeof *v);
    int r = 0;
    size_t done = 0;
    for (size_t i = 0; i < napps && !r; i++, done++) {
        r = px__pusher_app_copy(&v[i], &apps[i], (unsigned)i, err, errlen);
        for (size_t j = 0; j < i && !r; j++) {
            const px_pusher_app_t *a = &v[i].o, *b = &v[j].o;
            const char *what = strcmp(a->id, b->id) == 0     ? "id"
                               : strcmp(a->key, b->key) == 0 ? "key"
                               : strcmp(a->channel_prefix, b->channel_prefix) == 0
                                   ? "channel-prefix"
                                   : NULL;
            if (what) {
                snprintf(err, errlen, "Pusher apps %s and %s have the same %s", b->id, a->id, what);
                r = -EINVAL;
            }
        }
    }
    for (size_t i = 0; i < done; i++)
        px__pusher_app_dispose(&v[i]);
    px__free(v);
    return r;
}

int px_pusher_routes(px_server_t *s, px_hub_t *hub, const px_pusher_app_t *apps, size_t napps)
{
    static char key;
    if (px_server_module(s, &key))
        return -EALREADY;
    if (!napps)
        return -EINVAL;
    px__pusher_t *p = px__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->server = s;
    p->hub = hub;
    p->nworkers = px_workers_count(px_server_workers(s));
    p->apps = px__xcalloc(napps, sizeof *p->apps);
    p->napps = napps;
    pthread_mutex_init(&p->xmu, NULL);
    px__hashmap_init(&p->xsessions);
    int r = px_server_module_set(s, &key, p, pusher_free);
    if (r) {
        pusher_free(p);
        return r;
    }
    char err[256];
    if (px_pusher_apps_validate(apps, napps, err, sizeof err) != 0) {
        px_log(PX_LOG_ERROR, "%s", err);
        p->napps = 0;
        return -EINVAL;
    }
    for (size_t i = 0; i < napps; i++) {
        px__pusher_app_copy(&p->apps[i], &apps[i], (unsigned)i, err, sizeof err);
        atomic_init(&p->apps[i].nconns, 0);
        p->hook_events |= p->apps[i].hook_events;
    }
    px__pusher_m_conns =
        px_metric_register("plexus_pusher_connections",
                           "Open Pusher connections (WebSocket and xhr sessions)", PX_METRIC_GAUGE);
    uint32_t hi = 0;
    px_random(&hi, sizeof hi);
    p->sid_hi = (hi & 0x7fffffffu) | 1u;
    atomic_init(&p->sid_lo, 0);
    p->locals = px__xcalloc(p->nworkers, sizeof *p->locals);
    for (unsigned i = 0; i < p->nworkers; i++) {
        p->locals[i].backend = px__xcalloc(napps, sizeof *p->locals[i].backend);
        for (size_t a = 0; a < napps; a++) {
            unsigned rate = p->apps[a].o.max_backend_events_per_s;
            px__pusher_bucket_init(&p->locals[i].backend[a],
                                   rate ? (rate + p->nworkers - 1) / p->nworkers : 0);
        }
    }
    px__pusher_format_init(p);
    p->fmt = px__hub_add_format(hub, &p->format);
    if (p->fmt < 0)
        return p->fmt;
    r = px_fetch_enable(s);
    if (!r)
        r = px__pusher_hooks_init(p);
    if (!r)
        r = px_server_on_drain(s, on_drain, p);
    if (!r)
        r = px__pusher_ws_init(p);
    if (!r)
        r = px__pusher_xhr_init(p);
    if (!r)
        r = px__pusher_http_init(p);
    return r;
}
