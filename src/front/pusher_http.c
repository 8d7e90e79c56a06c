/* The Pusher HTTP API under /apps/{id}/, as the `pusher` server SDKs call it: signed query
 * strings (auth_key, auth_timestamp within 600 s, auth_version, body_md5, auth_signature over
 * "METHOD\npath\nsorted query"), events and batch events published to the hub, channel
 * listings and information, presence users, and terminating a user's connections. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "front/pusher.h"
#include "util/crypto.h"

#define TIMESTAMP_WINDOW_S 600

static unsigned req_worker(px_req_t *req)
{
    return px_worker_id(px_req_worker(req));
}

static void respond_json(px_req_t *req, int status, px_json_writer_t *w)
{
    if (w->err)
        px_respond_error(req, 500, "internal_error", "reply too large");
    else
        px_respond(req, status, "application/json", w->buf, w->len);
    px_json_writer_dispose(w);
}

/* ---- authentication ---------------------------------------------------------------------- */

/* Check the request's signature. Returns the app, or NULL after answering (404, 403, 400,
 * 401, 413). *q receives the parsed query (its strings live in the request's arena). */
static papp_t *api_auth(px__pusher_t *p, px_req_t *req, px__pquery_t *q)
{
    px_str_t id = px_req_param(req, "app");
    papp_t *app = px__pusher_app_by_id(p, id.ptr, id.len);
    if (!app) {
        px_respond_error(req, 404, "unknown_app", "no app with id %.*s on this server",
                         (int)(id.len > 64 ? 64 : id.len), id.ptr);
        return NULL;
    }
    if (!app->o.enabled) {
        px_respond_error(req, 403, "app_disabled", "app %s is disabled", app->o.id);
        return NULL;
    }
    px_str_t qs = px_req_query(req);
    char *buf = px_req_alloc(req, 3 * qs.len + 16);
    if (!buf) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return NULL;
    }
    if (px__pusher_query_parse(qs.ptr ? qs.ptr : "", qs.len, q, buf, 3 * qs.len + 16) != 0) {
        px_respond_error(req, 400, "bad_request", "%s", q->err);
        return NULL;
    }
    if (q->auth_key.len != strlen(app->o.key) ||
        memcmp(q->auth_key.ptr, app->o.key, q->auth_key.len) != 0) {
        px_respond_error(req, 401, "unauthorized", "auth_key is not the key of app %s", app->o.id);
        return NULL;
    }
    int64_t ts = 0;
    for (size_t i = 0; i < q->auth_timestamp.len && i < 12; i++) {
        char c = q->auth_timestamp.ptr[i];
        ts = c >= '0' && c <= '9' ? ts * 10 + (c - '0') : -1;
        if (ts < 0)
            break;
    }
    int64_t now = (int64_t)time(NULL);
    if (!q->auth_timestamp.len || q->auth_timestamp.len > 12 || ts <= 0 ||
        ts < now - TIMESTAMP_WINDOW_S || ts > now + TIMESTAMP_WINDOW_S) {
        px_respond_error(req, 401, "unauthorized",
                         "auth_timestamp must be the current unix time, within %d seconds (server "
                         "time: %lld)",
                         TIMESTAMP_WINDOW_S, (long long)now);
        return NULL;
    }
    if (q->auth_version.len &&
        (q->auth_version.len != 3 || memcmp(q->auth_version.ptr, "1.0", 3))) {
        px_respond_error(req, 401, "unauthorized", "auth_version must be 1.0");
        return NULL;
    }
    px_str_t body = px_req_body(req);
    if (body.len) {
        uint8_t md[16];
        char hex[33];
        px__md5(body.ptr, body.len, md);
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        if (q->body_md5.len != 32 || strncasecmp(q->body_md5.ptr, hex, 32) != 0) {
            px_respond_error(req, 401, "unauthorized", "body_md5 is not the MD5 of the body");
            return NULL;
        }
    }
    /* auth_signature = hex HMAC-SHA256(secret, "METHOD\npath\nquery") */
    px_str_t method = px_req_method(req), path = px_req_path(req);
    size_t n = method.len + 1 + path.len + 1 + q->to_sign.len;
    char *s = px_req_alloc(req, n);
    if (!s) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return NULL;
    }
    memcpy(s, method.ptr, method.len);
    s[method.len] = '\n';
    memcpy(s + method.len + 1, path.ptr, path.len);
    s[method.len + 1 + path.len] = '\n';
    memcpy(s + method.len + path.len + 2, q->to_sign.ptr, q->to_sign.len);
    char want[65], got[64];
    px__pusher_sign(app, s, n, want);
    int ok = q->auth_signature.len == 64;
    for (size_t i = 0; ok && i < 64; i++) {
        char c = q->auth_signature.ptr[i];
        got[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    if (!ok || px__memcmp_ct(got, want, 64) != 0) {
        px_respond_error(req, 401, "unauthorized",
                         "Invalid signature: expected HMAC-SHA256 hex digest of \"%.*s\\n%.*s\\n"
                         "<sorted query>\"",
                         (int)method.len, method.ptr, (int)(path.len > 200 ? 200 : path.len),
                         path.ptr);
        return NULL;
    }
    return app;
}

/* Is `info` (a comma-separated list) asking for `what`? */
static int info_has(px_str_t info, const char *what)
{
    size_t wl = strlen(what);
    const char *p = info.ptr, *end = p ? p + info.len : NULL;
    while (p && p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;
        if ((size_t)(e - p) == wl && memcmp(p, what, wl) == 0)
            return 1;
        p = c ? c + 1 : end;
    }
    return 0;
}

static int is_presence(const char *name, size_t len)
{
    return len > 9 && memcmp(name, "presence-", 9) == 0;
}

/* A channel name of the API: the client alphabet, the app's length bound, and '#' only for
 * #server-to-user- (sendToUser). Returns the hub name's length, or 0 after answering 400. */
static size_t api_channel(px_req_t *req, papp_t *app, px_str_t name, char hub[PX__CHANNEL_MAX + 1])
{
    size_t hl = 0;
    if (px__pusher_channel_ok(name.ptr, name.len) && name.len <= app->o.max_channel_name_length &&
        (name.ptr[0] != '#' || (name.len > 16 && memcmp(name.ptr, "#server-to-user-", 16) == 0)))
        hl = px__pusher_hub_name(app, name.ptr, name.len, hub);
    if (!hl)
        px_respond_error(req, 400, "invalid_channel",
                         "\"%.*s\" is not a channel name (1-%u characters of A-Z a-z 0-9 _ - = "
                         "@ , . ;)",
                         (int)(name.len > 210 ? 210 : name.len), name.ptr ? name.ptr : "",
                         app->o.max_channel_name_length);
    return hl;
}

/* ---- publishing: events and batch_events -------------------------------------------------- */

typedef struct pitem {
    char hub[PX__CHANNEL_MAX + 1];
    size_t hub_len;
    char name[PX__CHANNEL_MAX + 2];
    size_t name_len;
    int info_subs, info_users; /* asked for in "info" */
    unsigned subs, users;
} pitem_t;

typedef struct pjob {
    px__pusher_t *p;
    papp_t *app;
    int batch;
    size_t n, pending;
    int status; /* the first failure, 0 if none */
    char err[160];
    int phase; /* 0 publishing, 1 asking for info */
    pitem_t items[];
} pjob_t;

static void job_info_done(px__hreq_t *r);
static void job_publish_done(px__hreq_t *r);

static void job_respond(px_req_t *req, pjob_t *j)
{
    if (j->status) {
        px_respond_error(req, j->status, "publish_failed", "%s", j->err);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 16u << 20);
    int any = 0;
    for (size_t i = 0; i < j->n; i++)
        any |= j->items[i].info_subs || j->items[i].info_users;
    if (!any) {
        PX_JSON_PUT_LIT(&w, "{}");
    } else if (j->batch) {
        PX_JSON_PUT_LIT(&w, "{\"batch\":[");
        for (size_t i = 0; i < j->n; i++) {
            pitem_t *it = &j->items[i];
            if (i)
                PX_JSON_PUT_LIT(&w, ",");
            PX_JSON_PUT_LIT(&w, "{");
            if (it->info_subs) {
                PX_JSON_PUT_LIT(&w, "\"subscription_count\":");
                px_json_put_u64(&w, it->subs);
            }
            if (it->info_users) {
                if (it->info_subs)
                    PX_JSON_PUT_LIT(&w, ",");
                PX_JSON_PUT_LIT(&w, "\"user_count\":");
                px_json_put_u64(&w, it->users);
            }
            PX_JSON_PUT_LIT(&w, "}");
        }
        PX_JSON_PUT_LIT(&w, "]}");
    } else {
        PX_JSON_PUT_LIT(&w, "{\"channels\":{");
        for (size_t i = 0; i < j->n; i++) {
            pitem_t *it = &j->items[i];
            if (i)
                PX_JSON_PUT_LIT(&w, ",");
            px_json_put_str(&w, it->name, it->name_len);
            PX_JSON_PUT_LIT(&w, ":{");
            if (it->info_subs) {
                PX_JSON_PUT_LIT(&w, "\"subscription_count\":");
                px_json_put_u64(&w, it->subs);
            }
            if (it->info_users) {
                if (it->info_subs)
                    PX_JSON_PUT_LIT(&w, ",");
                PX_JSON_PUT_LIT(&w, "\"user_count\":");
                px_json_put_u64(&w, it->users);
            }
            PX_JSON_PUT_LIT(&w, "}");
        }
        PX_JSON_PUT_LIT(&w, "}}");
    }
    respond_json(req, 200, &w);
}

static void job_publish_step(px_req_t *req, pjob_t *j)
{
    if (--j->pending)
        return;
    int info = 0;
    for (size_t i = 0; i < j->n; i++)
        info |= j->items[i].info_subs || j->items[i].info_users;
    if (j->status || !info) {
        job_respond(req, j);
        return;
    }
    /* The channels' counts, after the publish (the SDKs' "info"). */
    j->phase = 1;
    for (size_t i = 0; i < j->n; i++) {
        pitem_t *it = &j->items[i];
        if (!it->info_subs && !it->info_users)
            continue;
        px__hreq_t *q = px__hreq_new(j->p->hub, PX__HREQ_PRESENCE, it->hub, it->hub_len);
        q->worker = req_worker(req);
        q->done = job_info_done;
        q->ud = req;
        q->tag = j;
        q->id = (int64_t)i;
        j->pending++;
        px__hub_post(j->p->hub, q);
    }
}

static void job_publish_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    pjob_t *j = r->tag;
    if (r->status && !j->status) {
        j->status = r->status >= 400 && r->status < 600 ? r->status : 503;
        snprintf(j->err, sizeof j->err, "%s", r->err_msg);
    }
    px__hreq_free(r);
    job_publish_step(req, j);
}

static void job_info_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    pjob_t *j = r->tag;
    pitem_t *it = &j->items[r->id];
    it->subs = r->subscribers;
    it->users = r->users;
    px__hreq_free(r);
    if (--j->pending == 0)
        job_respond(req, j);
}

/* One event of the body ({name, data, channels|channel, socket_id, info}) into the job's items
 * from `first`: returns how many channels, or -1 after answering. */
static int parse_event(px_req_t *req, papp_t *app, const px_json_doc_t *doc, int obj, int batch,
                       pjob_t *j, size_t first, px_str_t *name, px_str_t *data, uint64_t *sid)
{
    const px_pusher_app_t *o = &app->o;
    static const char *const keys[] = {"name", "data", "channels", "channel", "socket_id", "info"};
    enum { K_NAME, K_DATA, K_CHANNELS, K_CHANNEL, K_SOCKET, K_INFO, K_COUNT };
    int v[K_COUNT];
    size_t dup;
    if (doc->toks[obj].type != PX_JSON_OBJECT) {
        px_respond_error(req, 400, "bad_request", "an event is a JSON object");
        return -1;
    }
    if (px_json_get_keys(doc, obj, keys, K_COUNT, v, &dup) != 0) {
        px_respond_error(req, 400, "bad_request", "duplicate \"%s\"", keys[dup]);
        return -1;
    }
    char *nb = px_req_alloc(req, PX__PUSHER_NAME_MAX + 1);
    int nl =
        v[K_NAME] >= 0 && nb ? px_json_unescape(doc, v[K_NAME], nb, PX__PUSHER_NAME_MAX + 1) : -1;
    if (nl < 0 || (size_t)nl != strlen(nb)) {
        px_respond_error(req, 400, "bad_request",
                         "\"name\" must be a string of at most %u characters (the event name)",
                         o->max_event_name_length);
        return -1;
    }
    *name = (px_str_t){nb, (size_t)nl};
    if (!name->len || name->len > o->max_event_name_length ||
        (name->len >= 7 && memcmp(name->ptr, "pusher:", 7) == 0) ||
        (name->len >= 16 && memcmp(name->ptr, "pusher_internal:", 16) == 0)) {
        px_respond_error(req, 400, "bad_request",
                         "an event name is 1-%u characters and does not start with pusher: or "
                         "pusher_internal:",
                         o->max_event_name_length);
        return -1;
    }
    if (v[K_DATA] < 0) {
        px_respond_error(req, 400, "bad_request", "\"data\" is required");
        return -1;
    }
    *data = px_json_raw(doc, v[K_DATA]);
    size_t max = o->max_event_payload, hubmax = px_hub_options(j->p->hub)->max_payload;
    if (data->len > (max < hubmax ? max : hubmax)) {
        px_respond_error(req, 413, "payload_too_large", "data is %zu bytes; the limit is %zu",
                         data->len, max < hubmax ? max : hubmax);
        return -1;
    }
    *sid = 0;
    if (v[K_SOCKET] >= 0) {
        const px_json_tok_t *t = &doc->toks[v[K_SOCKET]];
        *sid = t->type == PX_JSON_STRING
                   ? px__pusher_socket_id_parse(doc->src + t->start, t->end - t->start)
                   : 0;
        if (!*sid) {
            px_respond_error(req, 400, "bad_request", "socket_id must look like \"123.456\"");
            return -1;
        }
    }
    px_str_t info = {NULL, 0};
    if (v[K_INFO] >= 0 && doc->toks[v[K_INFO]].type == PX_JSON_STRING)
        info = (px_str_t){doc->src + doc->toks[v[K_INFO]].start,
                          doc->toks[v[K_INFO]].end - doc->toks[v[K_INFO]].start};
    /* channels: an array (events) or one channel */
    int single = v[K_CHANNEL], arr = batch ? -1 : v[K_CHANNELS];
    size_t n = 0;
    int ctoks[1000];
    if (arr >= 0) {
        if (doc->toks[arr].type != PX_JSON_ARRAY) {
            px_respond_error(req, 400, "bad_request", "\"channels\" must be an array of names");
            return -1;
        }
        if (doc->toks[arr].size > o->max_event_channels || doc->toks[arr].size > 1000) {
            px_respond_error(req, 400, "bad_request", "at most %u channels per event",
                             o->max_event_channels);
            return -1;
        }
        int e = arr + 1;
        for (uint32_t i = 0; i < doc->toks[arr].size; i++, e = (int)doc->toks[e].next)
            ctoks[n++] = e;
    } else if (single >= 0) {
        ctoks[n++] = single;
    }
    if (!n) {
        px_respond_error(req, 400, "bad_request", "an event needs \"channels\" or \"channel\"");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const px_json_tok_t *t = &doc->toks[ctoks[i]];
        pitem_t *it = &j->items[first + i];
        char cb[PX__PUSHER_NAME_MAX + 1];
        int cl = t->type == PX_JSON_STRING ? px_json_unescape(doc, ctoks[i], cb, sizeof cb) : -1;
        if (cl < 0) {
            px_respond_error(req, 400, "invalid_channel", "channel names are short strings");
            return -1;
        }
        px_str_t cn = {cb, (size_t)cl};
        it->hub_len = api_channel(req, app, cn, it->hub);
        if (!it->hub_len)
            return -1;
        memcpy(it->name, cn.ptr, cn.len);
        it->name_len = cn.len;
        it->info_subs = info_has(info, "subscription_count");
        it->info_users = info_has(info, "user_count") && is_presence(cn.ptr, cn.len);
    }
    return (int)n;
}

/* Count `n` backend events against the app's rate (per worker: the rate over the workers). */
static int backend_rate_ok(px__pusher_t *p, papp_t *app, px_req_t *req, size_t n)
{
    unsigned rate = app->o.max_backend_events_per_s;
    if (!rate)
        return 1;
    pbucket_t *b = &p->locals[req_worker(req)].backend[app->index];
    unsigned per = (rate + p->nworkers - 1) / p->nworkers;
    for (size_t i = 0; i < n; i++)
        if (!px__pusher_rate_ok(b, per)) {
            px_respond_error(req, 429, "rate_limited", "over %u events per second for app %s", rate,
                             app->o.id);
            return 0;
        }
    return 1;
}

static void publish(px_req_t *req, px__pusher_t *p, pjob_t *j, size_t first, size_t n,
                    px_str_t name, px_str_t data, uint64_t sid)
{
    for (size_t i = first; i < first + n; i++) {
        pitem_t *it = &j->items[i];
        px__hreq_t *r = px__hreq_new(p->hub, PX__HREQ_PUBLISH, it->hub, it->hub_len);
        r->m = px__hub_msg_new((px_str_t){it->hub, it->hub_len}, name, data, sid);
        if (!r->m) {
            px__hreq_free(r);
            if (!j->status) {
                j->status = 503;
                snprintf(j->err, sizeof j->err, "out of memory");
            }
            continue;
        }
        r->worker = req_worker(req);
        r->done = job_publish_done;
        r->ud = req;
        r->tag = j;
        j->pending++;
        px__hub_post(p->hub, r);
    }
}

static void api_events(px_req_t *req, void *ud, int batch)
{
    px__pusher_t *p = ud;
    px__pquery_t q;
    papp_t *app = api_auth(p, req, &q);
    if (!app)
        return;
    px_str_t body = px_req_body(req);
    enum { MAXTOK = 16384 };
    px_json_tok_t *toks = px_req_alloc(req, MAXTOK * sizeof *toks);
    px_json_doc_t doc;
    if (!toks) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    if (px_json_parse(&doc, body.ptr ? body.ptr : "", body.len, toks, MAXTOK, 32) < 0 ||
        toks[0].type != PX_JSON_OBJECT) {
        char why[128] = "not an object";
        if (doc.err)
            px_json_format_error(&doc, why, sizeof why);
        px_respond_error(req, 400, "invalid_json", "the body must be a JSON object: %s", why);
        return;
    }
    int events[1000];
    size_t nev = 0, total = 0;
    if (batch) {
        int b = px_json_get(&doc, 0, "batch");
        if (b < 0 || toks[b].type != PX_JSON_ARRAY) {
            px_respond_error(req, 400, "bad_request", "the body is {\"batch\": [events]}");
            return;
        }
        if (toks[b].size > app->o.max_event_batch || toks[b].size > 1000) {
            px_respond_error(req, 400, "bad_request", "at most %u events per batch",
                             app->o.max_event_batch);
            return;
        }
        int e = b + 1;
        for (uint32_t i = 0; i < toks[b].size; i++, e = (int)toks[e].next)
            events[nev++] = e;
        total = nev;
    } else {
        events[nev++] = 0;
        int c = px_json_get(&doc, 0, "channels");
        total = c >= 0 && toks[c].type == PX_JSON_ARRAY && toks[c].size ? toks[c].size : 1;
        if (total > app->o.max_event_channels || total > 1000) {
            px_respond_error(req, 400, "bad_request", "at most %u channels per event",
                             app->o.max_event_channels);
            return;
        }
    }
    pjob_t *j = px_req_alloc(req, sizeof *j + total * sizeof(pitem_t));
    if (!j) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    memset(j, 0, sizeof *j + total * sizeof(pitem_t));
    j->p = p;
    j->app = app;
    j->batch = batch;
    j->n = total;
    /* Everything is checked before anything is published. */
    px_str_t names[1000], datas[1000];
    uint64_t sids[1000];
    size_t counts[1000];
    size_t at = 0;
    for (size_t i = 0; i < nev; i++) {
        int n =
            parse_event(req, app, &doc, events[i], batch, j, at, &names[i], &datas[i], &sids[i]);
        if (n < 0)
            return;
        counts[i] = (size_t)n;
        at += (size_t)n;
    }
    if (!backend_rate_ok(p, app, req, at))
        return;
    j->n = at;
    j->pending = 1; /* held until every publish is posted */
    at = 0;
    for (size_t i = 0; i < nev; i++) {
        publish(req, p, j, at, counts[i], names[i], datas[i], sids[i]);
        at += counts[i];
    }
    job_publish_step(req, j); /* the hold: the last answer responds */
}

static void api_events_one(px_req_t *req, void *ud)
{
    api_events(req, ud, 0);
}

static void api_batch_events(px_req_t *req, void *ud)
{
    api_events(req, ud, 1);
}

/* ---- channels ---------------------------------------------------------------------------------
 */

typedef struct qctx {
    px__pusher_t *p;
    papp_t *app;
    px_str_t prefix;
    int user_count, subscription_count, cache;
    int users; /* channels/{name}/users */
    size_t name_len;
    char name[PX__CHANNEL_MAX + 2];
} qctx_t;

static void channels_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    qctx_t *x = r->tag;
    if (r->status) {
        px_respond_error(req, r->status, r->err_code, "%s", r->err_msg);
        px__hreq_free(r);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 64u << 20);
    PX_JSON_PUT_LIT(&w, "{\"channels\":{");
    int first = 1;
    for (size_t i = 0; i < r->nchans; i++) {
        const px__chaninfo_t *c = &r->chans[i];
        char name[PX__CHANNEL_MAX + 2];
        size_t nl = 0;
        if (px__pusher_app_of_channel(x->p, c->name, c->name_len, name, &nl) != x->app ||
            name[0] == '#')
            continue;
        if (x->prefix.len && (nl < x->prefix.len || memcmp(name, x->prefix.ptr, x->prefix.len)))
            continue;
        if (!first)
            PX_JSON_PUT_LIT(&w, ",");
        first = 0;
        px_json_put_str(&w, name, nl);
        PX_JSON_PUT_LIT(&w, ":{");
        if (x->user_count) {
            PX_JSON_PUT_LIT(&w, "\"user_count\":");
            px_json_put_u64(&w, c->users);
        }
        if (x->subscription_count) {
            if (x->user_count)
                PX_JSON_PUT_LIT(&w, ",");
            PX_JSON_PUT_LIT(&w, "\"subscription_count\":");
            px_json_put_u64(&w, c->subscribers);
        }
        PX_JSON_PUT_LIT(&w, "}");
    }
    PX_JSON_PUT_LIT(&w, "}}");
    respond_json(req, 200, &w);
    px__hreq_free(r);
}

static void api_channels(px_req_t *req, void *ud)
{
    px__pusher_t *p = ud;
    px__pquery_t q;
    papp_t *app = api_auth(p, req, &q);
    if (!app)
        return;
    qctx_t *x = px_req_alloc(req, sizeof *x);
    if (!x) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    memset(x, 0, sizeof *x);
    x->p = p;
    x->app = app;
    x->prefix = px__pusher_query_get(&q, "filter_by_prefix");
    px_str_t info = px__pusher_query_get(&q, "info");
    x->user_count = info_has(info, "user_count");
    x->subscription_count = info_has(info, "subscription_count");
    if (x->user_count && !is_presence(x->prefix.ptr ? x->prefix.ptr : "", x->prefix.len + 1)) {
        px_respond_error(req, 400, "bad_request",
                         "info=user_count needs filter_by_prefix=presence- (presence channels)");
        return;
    }
    px__hreq_t *r = px__hreq_new(p->hub, PX__HREQ_CHANNELS, NULL, 0);
    r->worker = req_worker(req);
    r->done = channels_done;
    r->ud = req;
    r->tag = x;
    px__hub_post(p->hub, r);
}

static void channel_done(px__hreq_t *r)
{
    px_req_t *req = r->ud;
    qctx_t *x = r->tag;
    if (r->status) {
        px_respond_error(req, r->status, r->err_code, "%s", r->err_msg);
        px__hreq_free(r);
        return;
    }
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 64u << 20);
    if (x->users) {
        PX_JSON_PUT_LIT(&w, "{\"users\":[");
        for (size_t i = 0, k = 0; i < r->npres; i++) {
            if (!r->pres[i].user.len)
                continue;
            if (k++)
                PX_JSON_PUT_LIT(&w, ",");
            PX_JSON_PUT_LIT(&w, "{\"id\":");
            px_json_put_str(&w, r->pres[i].user.ptr, r->pres[i].user.len);
            PX_JSON_PUT_LIT(&w, "}");
        }
        PX_JSON_PUT_LIT(&w, "]}");
        respond_json(req, 200, &w);
        px__hreq_free(r);
        return;
    }
    PX_JSON_PUT_LIT(&w, "{\"occupied\":");
    if (r->subscribers)
        PX_JSON_PUT_LIT(&w, "true");
    else
        PX_JSON_PUT_LIT(&w, "false");
    if (x->user_count) {
        PX_JSON_PUT_LIT(&w, ",\"user_count\":");
        px_json_put_u64(&w, r->users);
    }
    if (x->subscription_count) {
        PX_JSON_PUT_LIT(&w, ",\"subscription_count\":");
        px_json_put_u64(&w, r->subscribers);
    }
    if (x->cache && r->nmsgs) {
        const px_hub_msg_t *m = r->msgs[0];
        int64_t age = px__pusher_wall_ms() - m->time_ms;
        int64_t ttl = (int64_t)x->app->o.cache_ttl_ms - age;
        if (ttl > 0) {
            PX_JSON_PUT_LIT(&w, ",\"cache\":{\"event\":");
            if (m->event_len)
                px_json_put_str(&w, px__msg_event(m), m->event_len);
            else
                PX_JSON_PUT_LIT(&w, "\"" PUSHER_EVENT_NATIVE "\"");
            PX_JSON_PUT_LIT(&w, ",\"data\":");
            if (m->event_len)
                px_json_put_raw(&w, px__msg_data(m), m->data_len);
            else
                px_json_put_str(&w, px__msg_data(m), m->data_len);
            PX_JSON_PUT_LIT(&w, ",\"ttl\":");
            px_json_put_i64(&w, (ttl + 999) / 1000);
            PX_JSON_PUT_LIT(&w, "}");
        }
    }
    PX_JSON_PUT_LIT(&w, "}");
    respond_json(req, 200, &w);
    px__hreq_free(r);
}

static void channel_query(px_req_t *req, px__pusher_t *p, int users)
{
    px__pquery_t q;
    papp_t *app = api_auth(p, req, &q);
    if (!app)
        return;
    px_str_t name = px_req_param(req, "channel");
    char hub[PX__CHANNEL_MAX + 1];
    size_t hl = api_channel(req, app, name, hub);
    if (!hl)
        return;
    qctx_t *x = px_req_alloc(req, sizeof *x);
    if (!x) {
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    memset(x, 0, sizeof *x);
    x->p = p;
    x->app = app;
    x->users = users;
    px_str_t info = px__pusher_query_get(&q, "info");
    x->user_count = info_has(info, "user_count");
    x->subscription_count = info_has(info, "subscription_count");
    x->cache = info_has(info, "cache");
    int presence = is_presence(name.ptr, name.len);
    if ((users || x->user_count) && !presence) {
        px_respond_error(req, 400, "bad_request", "%s is only for presence channels",
                         users ? "the users list" : "info=user_count");
        return;
    }
    px__hreq_t *r = px__hreq_new(p->hub, PX__HREQ_PRESENCE, hub, hl);
    r->by_user = 1;
    r->want_last = x->cache != 0;
    r->worker = req_worker(req);
    r->done = channel_done;
    r->ud = req;
    r->tag = x;
    px__hub_post(p->hub, r);
}

static void api_channel_info(px_req_t *req, void *ud)
{
    channel_query(req, ud, 0);
}

static void api_users(px_req_t *req, void *ud)
{
    channel_query(req, ud, 1);
}

/* ---- users ---------------------------------------------------------------------------------- */

typedef struct term_msg {
    px_msg_t msg;
    px__pusher_t *p;
    papp_t *app;
    size_t len;
    char user[];
} term_msg_t;

static void on_terminate(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(w);
    term_msg_t *t = (term_msg_t *)m;
    if (px_worker_self()) /* not while draining after the workers stopped */
        px__pusher_terminate_local(t->p, t->app, (px_str_t){t->user, t->len});
    px__free(t);
}

static void api_terminate(px_req_t *req, void *ud)
{
    px__pusher_t *p = ud;
    px__pquery_t q;
    papp_t *app = api_auth(p, req, &q);
    if (!app)
        return;
    px_str_t user = px_req_param(req, "user");
    if (!user.len || user.len > 200) {
        px_respond_error(req, 400, "bad_request", "a user id is 1-200 bytes");
        return;
    }
    px_workers_t *ws = px_server_workers(p->server);
    for (unsigned i = 0; i < p->nworkers; i++) {
        term_msg_t *t = px__malloc(sizeof *t + user.len);
        if (!t)
            continue;
        t->msg.cb = on_terminate;
        t->p = p;
        t->app = app;
        t->len = user.len;
        memcpy(t->user, user.ptr, user.len);
        px_worker_post(px_workers_get(ws, i), &t->msg);
    }
    px_respond(req, 200, "application/json", "{}", 2);
}

int px__pusher_http_init(px__pusher_t *p)
{
    px_server_t *s = p->server;
    int r = px_route(s, "POST", "/apps/:app/events", api_events_one, p);
    r |= px_route(s, "POST", "/apps/:app/batch_events", api_batch_events, p);
    r |= px_route(s, "GET", "/apps/:app/channels", api_channels, p);
    r |= px_route(s, "GET", "/apps/:app/channels/:channel", api_channel_info, p);
    r |= px_route(s, "GET", "/apps/:app/channels/:channel/users", api_users, p);
    r |= px_route(s, "POST", "/apps/:app/users/:user/terminate_connections", api_terminate, p);
    return r ? -ENOMEM : 0;
}
