/* Pusher apps from text: "--pusher-app ID:KEY:SECRET" and the config file's "pusher-apps"
 * (a JSON array of objects, keys as in docs/pusher.md). Errors name the app and the key. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "front/pusher.h"

void px_pusher_app_init(px_pusher_app_t *a)
{
    memset(a, 0, sizeof *a);
    a->enabled = 1;
    a->client_events = 1;
    a->user_auth_timeout_ms = 30000;
    a->activity_timeout_s = 30;
    a->max_client_events_per_s = 10;
    a->max_event_payload = 100u << 10;
    a->max_event_channels = 100;
    a->max_event_batch = 10;
    a->max_presence_members = 100;
    a->max_presence_member_size = 2u << 10;
    a->max_channel_name_length = 200;
    a->max_event_name_length = 200;
    a->max_channels_per_connection = 100;
    a->cache_ttl_ms = 30 * 60 * 1000;
    a->webhook_queue_max = 10000;
}

/* ---- a list of apps that owns its strings ------------------------------------------------ */

typedef struct app_store {
    px_pusher_app_t app;
    char *strs[8]; /* id, key, secret, prefix */
    char **origins;
    px_pusher_webhook_t *hooks;
} app_store_t;

struct px_pusher_apps {
    app_store_t *v;
    px_pusher_app_t *flat; /* rebuilt by get */
    size_t n;
};

px_pusher_apps_t *px_pusher_apps_new(void)
{
    return px__xcalloc(1, sizeof(px_pusher_apps_t));
}

static void store_dispose(app_store_t *a)
{
    for (int i = 0; i < 8; i++)
        px__free(a->strs[i]);
    for (char **o = a->origins; o && *o; o++)
        px__free(*o);
    px__free(a->origins);
    for (size_t i = 0; a->hooks && i < a->app.nwebhooks; i++) {
        px__free((void *)a->hooks[i].url);
        px__free((void *)a->hooks[i].channel_prefix);
        px__free((void *)a->hooks[i].channel_suffix);
    }
    px__free(a->hooks);
}

void px_pusher_apps_free(px_pusher_apps_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        store_dispose(&l->v[i]);
    px__free(l->v);
    px__free(l->flat);
    px__free(l);
}

size_t px_pusher_apps_count(const px_pusher_apps_t *l)
{
    return l->n;
}

const px_pusher_app_t *px_pusher_apps_get(const px_pusher_apps_t *l)
{
    px_pusher_apps_t *m = (px_pusher_apps_t *)l;
    px__free(m->flat);
    m->flat = px__xcalloc(l->n ? l->n : 1, sizeof *m->flat);
    for (size_t i = 0; i < l->n; i++)
        m->flat[i] = l->v[i].app;
    return m->flat;
}

static app_store_t *push(px_pusher_apps_t *l)
{
    app_store_t *v = px__realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return NULL;
    l->v = v;
    app_store_t *a = &v[l->n++];
    memset(a, 0, sizeof *a);
    px_pusher_app_init(&a->app);
    return a;
}

static char *dupn(const char *s, size_t n)
{
    char *d = px__xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

__attribute__((format(printf, 3, 4))) static int err_set(char *err, size_t len, const char *fmt,
                                                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Ids and keys go into URL paths: letters, digits and - _ . only. */
static int name_ok(const char *s)
{
    if (!*s || strlen(s) > 128)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
            return 0;
    return 1;
}

int px_pusher_apps_add_flag(px_pusher_apps_t *l, const char *spec, char *err, size_t errlen)
{
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || c1 == spec || c2 == c1 + 1 || !c2[1])
        return err_set(err, errlen, "'%s' is not ID:KEY:SECRET", spec);
    app_store_t *a = push(l);
    if (!a)
        return -ENOMEM;
    a->app.id = a->strs[0] = dupn(spec, (size_t)(c1 - spec));
    a->app.key = a->strs[1] = dupn(c1 + 1, (size_t)(c2 - c1 - 1));
    a->app.secret = a->strs[2] = dupn(c2 + 1, strlen(c2 + 1));
    if (!name_ok(a->app.id) || !name_ok(a->app.key))
        return err_set(err, errlen,
                       "'%s': the id and the key are 1-128 letters, digits, '-', '_' or '.'", spec);
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

typedef struct jctx {
    const px_json_doc_t *doc;
    char *err;
    size_t errlen;
    size_t app; /* 1-based, for messages */
    const char *key;
} jctx_t;

static int jerr(jctx_t *x, const char *what)
{
    return err_set(x->err, x->errlen, "app %zu: \"%s\": %s", x->app, x->key, what);
}

static int j_str(jctx_t *x, int tok, char **out)
{
    const px_json_tok_t *t = &x->doc->toks[tok];
    if (t->type == PX_JSON_NUMBER && (t->flags & PX_JSON_F_INT)) { /* an id given as a number */
        *out = dupn(x->doc->src + t->start, t->end - t->start);
        return 0;
    }
    if (t->type != PX_JSON_STRING)
        return jerr(x, "expected a string");
    size_t cap = t->end - t->start + 1;
    char *s = px__xmalloc(cap);
    int n = px_json_unescape(x->doc, tok, s, cap);
    if (n < 0 || (size_t)n != strlen(s)) {
        px__free(s);
        return jerr(x, "expected a string without NUL");
    }
    *out = s;
    return 0;
}

static int j_bool(jctx_t *x, int tok, int *out)
{
    bool b;
    if (px_json_get_bool(x->doc, tok, &b) != 0)
        return jerr(x, "expected true or false");
    *out = b;
    return 0;
}

/* A number, or a string with a unit: sizes (B, KiB, MiB, GiB, K, M, G) or durations (ms, s,
 * m, h, d; a bare number is `bare_mul` units: 1 for sizes, 1000 for seconds). */
static int j_scaled(jctx_t *x, int tok, uint64_t *out, int duration, uint64_t max)
{
    const px_json_tok_t *t = &x->doc->toks[tok];
    char buf[64];
    const char *s;
    if (t->type == PX_JSON_NUMBER) {
        if (!(t->flags & PX_JSON_F_INT) || (t->flags & PX_JSON_F_NEG))
            return jerr(x, "expected a non-negative integer");
        size_t n = t->end - t->start;
        if (n >= sizeof buf)
            return jerr(x, "number too large");
        memcpy(buf, x->doc->src + t->start, n);
        buf[n] = '\0';
        s = buf;
    } else if (t->type == PX_JSON_STRING) {
        if (px_json_unescape(x->doc, tok, buf, sizeof buf) < 0)
            return jerr(x, "value too long");
        s = buf;
    } else {
        return jerr(x, duration ? "expected a duration (a number of seconds, or \"500ms\", "
                                  "\"30s\", \"5m\")"
                                : "expected a size (a number of bytes, or \"2KiB\", \"1MiB\")");
    }
    if (!isdigit((unsigned char)*s))
        return jerr(x, "expected a non-negative number");
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;
    if (duration) {
        if (!*end || strcmp(end, "s") == 0)
            mul = 1000;
        else if (strcmp(end, "ms") == 0)
            mul = 1;
        else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
            mul = 60000;
        else if (strcmp(end, "h") == 0)
            mul = 3600000;
        else if (strcmp(end, "d") == 0)
            mul = 86400000;
        else
            return jerr(x, "unknown unit (ms, s, m, h, d)");
    } else {
        if (!*end || strcmp(end, "B") == 0)
            mul = 1;
        else if (strcmp(end, "KiB") == 0 || strcmp(end, "K") == 0 || strcmp(end, "k") == 0)
            mul = 1024;
        else if (strcmp(end, "MiB") == 0 || strcmp(end, "M") == 0)
            mul = 1u << 20;
        else if (strcmp(end, "GiB") == 0 || strcmp(end, "G") == 0)
            mul = 1u << 30;
        else
            return jerr(x, "unknown unit (B, KiB, MiB, GiB)");
    }
    if (v > max / mul)
        return jerr(x, "out of range");
    *out = v * mul;
    return 0;
}

static int j_uint(jctx_t *x, int tok, unsigned *out, unsigned lo, unsigned hi)
{
    uint64_t v;
    if (px_json_get_u64(x->doc, tok, &v) != 0)
        return jerr(x, "expected a non-negative integer");
    if (v < lo || v > hi) {
        char m[64];
        snprintf(m, sizeof m, "out of range (%u..%u)", lo, hi);
        return jerr(x, m);
    }
    *out = (unsigned)v;
    return 0;
}

static const struct {
    const char *name;
    unsigned bit;
} hook_names[] = {{"channel_occupied", PX_PUSHER_HOOK_CHANNEL_OCCUPIED},
                  {"channel_vacated", PX_PUSHER_HOOK_CHANNEL_VACATED},
                  {"member_added", PX_PUSHER_HOOK_MEMBER_ADDED},
                  {"member_removed", PX_PUSHER_HOOK_MEMBER_REMOVED},
                  {"client_event", PX_PUSHER_HOOK_CLIENT_EVENT},
                  {"cache_miss", PX_PUSHER_HOOK_CACHE_MISS}};

static int j_webhooks(jctx_t *x, int tok, app_store_t *a)
{
    const px_json_doc_t *d = x->doc;
    if (d->toks[tok].type != PX_JSON_ARRAY)
        return jerr(x, "expected an array of {\"url\": ..., \"events\": [...]}");
    size_t n = d->toks[tok].size;
    a->hooks = px__xcalloc(n ? n : 1, sizeof *a->hooks);
    a->app.webhooks = a->hooks;
    int e = tok + 1;
    for (size_t i = 0; i < n; i++, e = (int)d->toks[e].next) {
        px_pusher_webhook_t *h = &a->hooks[i];
        a->app.nwebhooks = i + 1;
        if (d->toks[e].type != PX_JSON_OBJECT)
            return jerr(x, "each webhook is an object");
        int k = e + 1;
        for (uint32_t m = 0; m < d->toks[e].size; m++, k = (int)d->toks[k + 1].next) {
            char key[32];
            if (px_json_unescape(d, k, key, sizeof key) < 0)
                return jerr(x, "unknown webhook key");
            int v = k + 1;
            char *s = NULL;
            if (strcmp(key, "url") == 0) {
                if (j_str(x, v, &s))
                    return -EINVAL;
                h->url = s;
            } else if (strcmp(key, "channel-prefix") == 0) {
                if (j_str(x, v, &s))
                    return -EINVAL;
                h->channel_prefix = s;
            } else if (strcmp(key, "channel-suffix") == 0) {
                if (j_str(x, v, &s))
                    return -EINVAL;
                h->channel_suffix = s;
            } else if (strcmp(key, "events") == 0) {
                if (d->toks[v].type != PX_JSON_ARRAY)
                    return jerr(x, "webhook \"events\": expected an array of event names");
                int ev = v + 1;
                for (uint32_t j = 0; j < d->toks[v].size; j++, ev = (int)d->toks[ev].next) {
                    char nm[32] = "";
                    unsigned bit = 0;
                    if (d->toks[ev].type == PX_JSON_STRING &&
                        px_json_unescape(d, ev, nm, sizeof nm) >= 0)
                        for (size_t q = 0; q < PX_ARRAY_SIZE(hook_names); q++)
                            if (strcmp(nm, hook_names[q].name) == 0)
                                bit = hook_names[q].bit;
                    if (!bit)
                        return jerr(x, "webhook \"events\": names are channel_occupied, "
                                       "channel_vacated, member_added, member_removed, "
                                       "client_event, cache_miss");
                    h->events |= bit;
                }
            } else {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "unknown webhook key \"%s\" (url, events, channel-prefix, "
                         "channel-suffix)",
                         key);
                return jerr(x, msg);
            }
        }
        if (!h->url)
            return jerr(x, "a webhook needs a \"url\"");
    }
    return 0;
}

static int j_app(jctx_t *x, int obj, app_store_t *a)
{
    const px_json_doc_t *d = x->doc;
    px_pusher_app_t *p = &a->app;
    int k = obj + 1;
    for (uint32_t m = 0; m < d->toks[obj].size; m++, k = (int)d->toks[k + 1].next) {
        char key[48];
        if (px_json_unescape(d, k, key, sizeof key) < 0)
            return err_set(x->err, x->errlen, "app %zu: unknown key", x->app);
        x->key = key;
        int v = k + 1;
        uint64_t u64;
        int r = 0;
        if (strcmp(key, "id") == 0)
            px__free(a->strs[0]), a->strs[0] = NULL, r = j_str(x, v, &a->strs[0]),
                                  p->id = a->strs[0];
        else if (strcmp(key, "key") == 0)
            px__free(a->strs[1]), a->strs[1] = NULL, r = j_str(x, v, &a->strs[1]),
                                  p->key = a->strs[1];
        else if (strcmp(key, "secret") == 0)
            px__free(a->strs[2]), a->strs[2] = NULL, r = j_str(x, v, &a->strs[2]),
                                  p->secret = a->strs[2];
        else if (strcmp(key, "channel-prefix") == 0)
            px__free(a->strs[3]), a->strs[3] = NULL, r = j_str(x, v, &a->strs[3]),
                                  p->channel_prefix = a->strs[3];
        else if (strcmp(key, "enabled") == 0)
            r = j_bool(x, v, &p->enabled);
        else if (strcmp(key, "client-events") == 0)
            r = j_bool(x, v, &p->client_events);
        else if (strcmp(key, "user-authentication") == 0)
            r = j_bool(x, v, &p->user_authentication);
        else if (strcmp(key, "user-authentication-timeout") == 0)
            r = j_scaled(x, v, &p->user_auth_timeout_ms, 1, 86400000);
        else if (strcmp(key, "activity-timeout") == 0) {
            r = j_scaled(x, v, &u64, 1, 3600000);
            if (!r && u64 < 1000)
                r = jerr(x, "at least 1s");
            p->activity_timeout_s = (unsigned)(u64 / 1000);
        } else if (strcmp(key, "cache-ttl") == 0)
            r = j_scaled(x, v, &p->cache_ttl_ms, 1, 365ull * 86400000);
        else if (strcmp(key, "max-connections") == 0)
            r = j_uint(x, v, &p->max_connections, 0, 10000000);
        else if (strcmp(key, "max-client-events-per-second") == 0)
            r = j_uint(x, v, &p->max_client_events_per_s, 0, 1000000);
        else if (strcmp(key, "max-backend-events-per-second") == 0)
            r = j_uint(x, v, &p->max_backend_events_per_s, 0, 10000000);
        else if (strcmp(key, "max-event-payload") == 0) {
            r = j_scaled(x, v, &u64, 0, 1u << 30);
            p->max_event_payload = (size_t)u64;
        } else if (strcmp(key, "max-event-channels") == 0)
            r = j_uint(x, v, &p->max_event_channels, 1, 1000);
        else if (strcmp(key, "max-event-batch-size") == 0)
            r = j_uint(x, v, &p->max_event_batch, 1, 1000);
        else if (strcmp(key, "max-presence-members") == 0)
            r = j_uint(x, v, &p->max_presence_members, 1, 1000000);
        else if (strcmp(key, "max-presence-member-size") == 0) {
            r = j_scaled(x, v, &u64, 0, 1u << 20);
            p->max_presence_member_size = (size_t)u64;
        } else if (strcmp(key, "max-channel-name-length") == 0)
            r = j_uint(x, v, &p->max_channel_name_length, 1, 200);
        else if (strcmp(key, "max-event-name-length") == 0)
            r = j_uint(x, v, &p->max_event_name_length, 1, 200);
        else if (strcmp(key, "webhook-queue-max") == 0)
            r = j_uint(x, v, &p->webhook_queue_max, 1, 10000000);
        else if (strcmp(key, "max-channels-per-connection") == 0)
            r = j_uint(x, v, &p->max_channels_per_connection, 1, 100000);
        else if (strcmp(key, "allowed-origins") == 0) {
            if (d->toks[v].type != PX_JSON_ARRAY)
                return jerr(x, "expected an array of origins (\"https://example.com\")");
            size_t n = d->toks[v].size;
            a->origins = px__xcalloc(n + 1, sizeof *a->origins);
            int e = v + 1;
            for (size_t i = 0; i < n; i++, e = (int)d->toks[e].next)
                if (j_str(x, e, &a->origins[i]))
                    return -EINVAL;
            p->allowed_origins = (const char *const *)a->origins;
        } else if (strcmp(key, "webhooks") == 0)
            r = j_webhooks(x, v, a);
        else {
            return err_set(x->err, x->errlen,
                           "app %zu: unknown key \"%s\" (see docs/pusher.md for the keys)", x->app,
                           key);
        }
        if (r)
            return r;
    }
    if (!p->id || !p->key || !p->secret)
        return err_set(x->err, x->errlen, "app %zu: \"id\", \"key\" and \"secret\" are required",
                       x->app);
    if (!name_ok(p->id) || !name_ok(p->key))
        return err_set(x->err, x->errlen,
                       "app %zu: the id and the key are 1-128 letters, digits, '-', '_' or '.'",
                       x->app);
    return 0;
}

int px_pusher_apps_add_json(px_pusher_apps_t *l, const char *json, size_t len, char *err,
                            size_t errlen)
{
    enum { MAXTOK = 8192 };
    px_json_tok_t *toks = px__xmalloc(MAXTOK * sizeof *toks);
    px_json_doc_t doc;
    int r = 0;
    if (px_json_parse(&doc, json, len, toks, MAXTOK, 16) < 0) {
        char m[128];
        px_json_format_error(&doc, m, sizeof m);
        r = err_set(err, errlen, "invalid JSON: %s", m);
    } else if (toks[0].type != PX_JSON_ARRAY) {
        r = err_set(err, errlen, "expected an array of app objects");
    } else {
        int e = 1;
        for (uint32_t i = 0; i < toks[0].size && !r; i++, e = (int)toks[e].next) {
            jctx_t x = {.doc = &doc, .err = err, .errlen = errlen, .app = l->n + 1};
            if (toks[e].type != PX_JSON_OBJECT) {
                r = err_set(err, errlen, "app %zu: expected an object", x.app);
                break;
            }
            app_store_t *a = push(l);
            if (!a) {
                r = -ENOMEM;
                break;
            }
            r = j_app(&x, e, a);
        }
    }
    px__free(toks);
    return r;
}

/* ---- the front's own copy ----------------------------------------------------------------- */

static const char *cp(const char *s)
{
    return s ? px__xstrdup(s) : NULL;
}

void px__pusher_app_dispose(papp_t *a)
{
    px_pusher_app_t *o = &a->o;
    px__free((void *)o->id);
    px__free((void *)o->key);
    px__free((void *)o->secret);
    px__free((void *)o->channel_prefix);
    for (const char *const *s = o->allowed_origins; s && *s; s++)
        px__free((void *)*s);
    px__free((void *)o->allowed_origins);
    for (size_t i = 0; i < o->nwebhooks; i++) {
        px__free((void *)o->webhooks[i].url);
        px__free((void *)o->webhooks[i].channel_prefix);
        px__free((void *)o->webhooks[i].channel_suffix);
    }
    px__free((void *)o->webhooks);
}

/* Hub names of the app are prefix + Pusher name: "" or letters, digits and - _ . ending
 * with ':' (Pusher names never hold ':', so a hub name belongs to one app at most). */
static int prefix_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return 1;
    if (n > 64 || s[n - 1] != ':')
        return 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
            return 0;
    return 1;
}

int px__pusher_app_copy(papp_t *dst, const px_pusher_app_t *src, unsigned index, char *err,
                        size_t errlen)
{
    memset(dst, 0, sizeof *dst);
    if (!src->id || !src->key || !src->secret || !*src->secret || !name_ok(src->id) ||
        !name_ok(src->key))
        return err_set(err, errlen,
                       "Pusher app %u: an id, a key (1-128 letters, digits, '-', "
                       "'_', '.') and a secret are required",
                       index + 1);
    px_pusher_app_t *o = &dst->o;
    *o = *src;
    o->id = cp(src->id);
    o->key = cp(src->key);
    o->secret = cp(src->secret);
    char def[160];
    snprintf(def, sizeof def, "%s:", src->id);
    o->channel_prefix = px__xstrdup(src->channel_prefix ? src->channel_prefix : index ? def : "");
    dst->prefix_len = strlen(o->channel_prefix);
    dst->index = index;
    size_t n = 0;
    while (src->allowed_origins && src->allowed_origins[n])
        n++;
    if (src->allowed_origins) {
        const char **v = px__xcalloc(n + 1, sizeof *v);
        for (size_t i = 0; i < n; i++)
            v[i] = cp(src->allowed_origins[i]);
        o->allowed_origins = v;
    }
    if (src->nwebhooks) {
        px_pusher_webhook_t *h = px__xcalloc(src->nwebhooks, sizeof *h);
        for (size_t i = 0; i < src->nwebhooks; i++) {
            h[i].url = cp(src->webhooks[i].url);
            h[i].events = src->webhooks[i].events ? src->webhooks[i].events : PX_PUSHER_HOOK_ALL;
            h[i].channel_prefix = cp(src->webhooks[i].channel_prefix);
            h[i].channel_suffix = cp(src->webhooks[i].channel_suffix);
            dst->hook_events |= h[i].events;
        }
        o->webhooks = h;
    }
    if (!prefix_ok(o->channel_prefix))
        return err_set(err, errlen,
                       "Pusher app %s: channel-prefix \"%s\" must be empty or letters, digits, "
                       "'-', '_', '.' ending with ':'",
                       o->id, o->channel_prefix);
    for (size_t i = 0; i < o->nwebhooks; i++) {
        const char *u = o->webhooks[i].url;
        if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
            return err_set(err, errlen, "Pusher app %s: webhook URL \"%s\" is not http(s)://",
                           o->id, u ? u : "");
    }
    if (!o->max_channel_name_length || o->max_channel_name_length > 200 ||
        !o->max_event_name_length || o->max_event_name_length > 200 || !o->max_event_channels ||
        !o->max_event_batch || !o->activity_timeout_s || !o->max_channels_per_connection ||
        !o->webhook_queue_max)
        return err_set(err, errlen, "Pusher app %s: a limit is out of range", o->id);
    return 0;
}
