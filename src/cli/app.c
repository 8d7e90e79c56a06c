/* The plexus server assembled from its options (plexus/app.h): what the CLI runs, and what
 * the Node.js addon runs on a socket it took from Node. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/config_int.h"
#include "core/alloc.h"
#include "plexus/app.h"
#include "plexus/http.h"
#include "plexus/log.h"
#include "plexus/metrics.h"
#include "plexus/native.h"
#include "plexus/pusher.h"
#include "plexus/sniff.h"
#include "plexus/tls.h"
#include "plexus/version.h"
#include "plexus/ws.h"

struct px_app {
    const px_config_t *cfg;
    px_server_t *server;
    px_hub_t *hub;
    px_tls_t *tls;
    int started;
};

void px_app_opts_init(px_app_opts_t *o)
{
    memset(o, 0, sizeof *o);
}

static void metrics(px_req_t *req, void *ud)
{
    px_server_t *s = ud;
    px_buf_t b;
    px_buf_init(&b, 16u << 20);
    if (px_metrics_render(&b, px_workers_count(px_server_workers(s))) != 0) {
        px_buf_dispose(&b);
        px_respond_error(req, 500, NULL, "cannot render metrics");
        return;
    }
    px_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", px_buf_head(&b),
               px_buf_size(&b));
    px_buf_dispose(&b);
}

/* 200 {"status":"ok"}, or 503 naming the backend that is down (several nodes). */
static void healthz(px_req_t *req, void *ud)
{
    px_app_t *app = ud;
    char why[200] = "";
    if (app->hub && px_hub_health(app->hub, why, sizeof why) != 0) {
        char body[512];
        size_t n = 0;
        n += (size_t)snprintf(body, sizeof body, "{\"status\":\"down\",\"reason\":\"");
        for (const char *p = why; *p && n + 8 < sizeof body; p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch < 0x20 || ch == '"' || ch == '\\')
                n += (size_t)snprintf(body + n, sizeof body - n, "\\u%04x", ch);
            else
                body[n++] = (char)ch;
        }
        n += (size_t)snprintf(body + n, sizeof body - n, "\"}");
        px_respond(req, 503, "application/json", body, n);
        return;
    }
    static const char body[] = "{\"status\":\"ok\"}";
    px_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* ---- TLS (issue 12) ------------------------------------------------------------------ */

/* The option a TLS loading error is about, from the file it names. */
static const char *tls_flag(const px_config_t *cfg, const char *err)
{
    if (cfg->tls_dir && (strncmp(err, "directory", 9) == 0 || strstr(err, cfg->tls_dir)))
        return "--tls-dir";
    if (strncmp(err, "key file", 8) == 0)
        return "--tls-key";
    if (strncmp(err, "OCSP file", 9) == 0)
        return "--tls-ocsp";
    return "--tls-cert";
}

/* Load the certificates when a listener uses TLS (NULL otherwise, or on
 * failure: the message is then in err). */
static px_tls_t *tls_setup(const px_config_t *cfg, char *err, size_t errlen, int *failed)
{
    int any = 0;
    for (unsigned i = 0; i < cfg->nlisten; i++)
        any |= px__config_listen_tls(cfg, i);
    *failed = 0;
    if (!any)
        return NULL;
    px_tls_opts_t to;
    px_tls_opts_init(&to);
    to.cert_files = (const char *const *)cfg->tls_cert;
    to.key_files = (const char *const *)cfg->tls_key;
    to.ncerts = cfg->ntls_cert;
    to.cert_dir = cfg->tls_dir;
    to.ocsp_files = (const char *const *)cfg->tls_ocsp;
    to.nocsp = cfg->ntls_ocsp;
    to.ticket_rotation_ms = cfg->tls_ticket_rotation_ms;
    to.session_cache = cfg->tls_session_cache;
    to.ktls = strcmp(cfg->tls_ktls, "on") == 0;
    char why[1024];
    px_tls_t *tls = px_tls_new(&to, why, sizeof why);
    if (!tls) {
        snprintf(err, errlen, "%s: %s (see plexus --help)", tls_flag(cfg, why), why);
        *failed = 1;
        return NULL;
    }
    for (unsigned i = 0; i < px_tls_cert_count(tls); i++) {
        char names[512];
        px_tls_cert_names(tls, i, names, sizeof names);
        px_log(PX_LOG_INFO, "TLS certificate %u for %s%s", i, names[0] ? names : "(no DNS name)",
               i == 0 ? " (the default)" : "");
    }
    return tls;
}

/* SIGHUP: certificates renewed on disk are loaded; a broken set keeps the old. */
static void tls_reload(px_server_t *s, void *ud)
{
    PX_UNUSED(s);
    px_tls_t *tls = ud;
    char err[1024];
    if (px_tls_reload(tls, err, sizeof err) == 0)
        px_log(PX_LOG_INFO, "TLS: %u certificate(s) reloaded", px_tls_cert_count(tls));
    else
        px_log(PX_LOG_ERROR, "TLS: reload failed, keeping the current certificates: %s", err);
}

/* Register the sniffer `name` once (TLS listeners use one with the TLS context, plain ones
 * one without). 0, or -1 with the message in err. */
static int sniffer(px_server_t *s, const px_config_t *cfg, const char *name, px_tls_t *tls,
                   int tls_only, char *err, size_t errlen)
{
    if (px_server_protocol_registered(s, name))
        return 0;
    px_sniff_opts_t sn;
    px_sniff_opts_init(&sn);
    sn.forward = (const char *const *)cfg->forward;
    sn.nforward = cfg->nforward;
    sn.timeout_ms = cfg->sniff_timeout_ms;
    sn.max_bytes = (size_t)cfg->sniff_max;
    sn.proxy_from = (const char *const *)cfg->proxy_protocol_from;
    sn.nproxy_from = cfg->nproxy_protocol_from;
    sn.tls = tls;
    sn.tls_only = tls_only;
    char why[512];
    if (px_sniff_register(s, name, &sn, why, sizeof why) != 0) {
        snprintf(err, errlen, "--forward: %s", why);
        return -1;
    }
    return 0;
}

#define FAIL(c, ...)                                                                               \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        *code = (c);                                                                               \
        return -1;                                                                                 \
    } while (0)

/* The Pusher front (docs/pusher.md) for the apps of --pusher-app and pusher-apps. */
static int pusher_setup(px_app_t *app, char *err, size_t errlen, int *code)
{
    const px_config_t *cfg = app->cfg;
    px_pusher_apps_t *apps = px_pusher_apps_new();
    if (!apps)
        FAIL(1, "out of memory");
    char perr[400] = "";
    int rc = 0;
    if (cfg->pusher_apps &&
        px_pusher_apps_add_json(apps, cfg->pusher_apps, strlen(cfg->pusher_apps), perr,
                                sizeof perr) != 0) {
        snprintf(err, errlen, "pusher-apps: %s", perr);
        rc = 2;
    }
    for (unsigned i = 0; !rc && i < cfg->npusher_app; i++)
        if (px_pusher_apps_add_flag(apps, cfg->pusher_app[i], perr, sizeof perr) != 0) {
            snprintf(err, errlen, "--pusher-app %s", perr);
            rc = 2;
        }
    size_t napps = px_pusher_apps_count(apps);
    if (!rc && px_pusher_apps_validate(px_pusher_apps_get(apps), napps, perr, sizeof perr) != 0) {
        snprintf(err, errlen, "pusher apps: %s", perr);
        rc = 2;
    }
    if (!rc) {
        int r = px_pusher_routes(app->server, app->hub, px_pusher_apps_get(apps), napps);
        if (r) {
            snprintf(err, errlen, "cannot serve the Pusher protocol: %s", px_strerror(r));
            rc = 1;
        }
    }
    px_pusher_apps_free(apps);
    if (rc) {
        *code = rc;
        return -1;
    }
    px_log(PX_LOG_INFO, "Pusher protocol: %zu app(s) at /app/{key} and /apps/{id}/", napps);
    return 0;
}

/* Everything after option parsing; 0, or -1 with err and *code set. What it creates is
 * freed by px_app_free. */
static int build(px_app_t *app, const px_app_opts_t *ao, char *err, size_t errlen, int *code)
{
    const px_config_t *cfg = app->cfg;
    px_log_set_level(px_log_level_parse(cfg->log_level));
    px_log_set_format(cfg->log_format);
    if (cfg->log_file && px_log_set_file(cfg->log_file) != 0)
        FAIL(2, "--log-file %s: cannot open", cfg->log_file);

    px_server_opts_t so;
    px_server_opts_init(&so);
    so.workers = cfg->workers;
    so.max_connections = cfg->max_connections;
    so.idle_timeout_ms = cfg->idle_timeout_ms;
    so.output_cap = (size_t)cfg->output_cap;
    so.shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    px_server_t *server = app->server = px_server_new(&so);
    if (!server)
        FAIL(2, "--workers %u: cannot start that many workers", cfg->workers);
    int failed;
    px_tls_t *tls = app->tls = tls_setup(cfg, err, errlen, &failed);
    if (failed) {
        *code = 2;
        return -1;
    }
    /* One port for several protocols (docs/one-port.md): a listener sniffs when it has TLS
     * (so TLS and plain HTTP share it) or when pass-through rules (--forward) or trusted
     * PROXY sources (--proxy-protocol-from) are configured; otherwise it keeps the plain
     * fast path (HTTP from the first byte). One sniffer per kind of listener. */
    int forwarding = cfg->nforward > 0 || cfg->nproxy_protocol_from > 0;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        int has_tls = px__config_listen_tls(cfg, i);
        int tls_only = has_tls && px__config_listen_tls_only(cfg, i);
        const char *chooser = tls_only ? "sniff-tls-only" : has_tls ? "sniff-tls" : "sniff";
        if ((has_tls || forwarding) &&
            sniffer(server, cfg, chooser, has_tls ? tls : NULL, tls_only, err, errlen) != 0) {
            *code = 2;
            return -1;
        }
        px_listen_opts_t lo;
        px_listen_opts_init(&lo);
        lo.addr = cfg->listen[i];
        /* Named, not NULL: the server's default protocol is the first registered, a
         * sniffer once a TLS listener exists, and a plain listener must not sniff
         * (nor redirect to TLS with --tls-only). "http/1.1" is registered below. */
        lo.protocol = has_tls || forwarding ? chooser : "http/1.1";
        lo.handshake_timeout_ms = cfg->tls_handshake_timeout_ms;
        int r = px_server_listen_opts(server, &lo);
        if (r)
            FAIL(2, "--listen %s: %s", cfg->listen[i],
                 r == -EINVAL ? "invalid address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)"
                              : px_strerror(r));
    }
    px_http_opts_t ho;
    px_http_opts_init(&ho);
    ho.max_body = (size_t)cfg->max_body;
    ho.max_request_line = (size_t)cfg->max_request_line;
    ho.max_header_size = (size_t)cfg->max_header_size;
    ho.max_headers = cfg->max_headers;
    ho.header_timeout_ms = cfg->header_timeout_ms;
    ho.keepalive_timeout_ms = cfg->keepalive_timeout_ms;
    ho.max_requests = cfg->max_requests;
    ho.access_log = strcmp(cfg->access_log, "json") == 0 ? 2 : strcmp(cfg->access_log, "text") == 0;
    ho.h2 = cfg->http2;
    ho.h2_max_concurrent_streams = cfg->http2_max_streams;
    ho.h2_initial_window = (uint32_t)cfg->http2_window;
    ho.h2_max_frame_size = (uint32_t)cfg->http2_max_frame_size;
    if (px_http_configure(server, &ho) != 0 ||
        px_route(server, "GET", "/healthz", healthz, app) != 0)
        FAIL(1, "out of memory");
    if (tls) {
        /* After the HTTP layer: "http/1.1" stays the default protocol. */
        if (px_tls_redirect_register(server) != 0)
            FAIL(1, "out of memory");
        px_server_on_reload(server, tls_reload, tls);
    }
    px_ws_opts_t wo;
    px_ws_opts_init(&wo);
    wo.max_message = (size_t)cfg->ws_max_message;
    wo.ping_interval_ms = cfg->ws_ping_interval_ms;
    wo.deflate = cfg->ws_deflate;
    wo.slow_policy = strcmp(cfg->ws_slow_policy, "drop") == 0 ? PX_WS_SLOW_DROP : PX_WS_SLOW_CLOSE;
    if (px_ws_configure(server, &wo) != 0)
        FAIL(2, "--ws-max-message must be at least 1 byte");

    px_hub_opts_t hopts;
    px_hub_opts_init(&hopts);
    hopts.data_dir = cfg->data_dir;
    hopts.data_dir_shared = cfg->data_dir_shared;
    hopts.store = cfg->store;
    hopts.broker = cfg->broker;
    hopts.presence_ttl_ms = cfg->presence_ttl_ms;
    hopts.durability =
        strcmp(cfg->durability, "full") == 0 ? PX_HUB_DURABILITY_FULL : PX_HUB_DURABILITY_NORMAL;
    hopts.history_size = cfg->history_size;
    hopts.history_ttl_ms = cfg->history_ttl_ms;
    hopts.max_payload = (size_t)cfg->max_payload;
    char why[512] = "";
    px_hub_t *hub = app->hub = px_hub_new(px_server_workers(server), &hopts, why, sizeof why);
    if (!hub) {
        if (strncmp(why, "--", 2) == 0)
            FAIL(2, "%s", why);
        else if (cfg->store && strcmp(cfg->store, "sqlite") != 0)
            FAIL(2, "--store %s: %s", cfg->store, why);
        else
            FAIL(2, "--data-dir %s: %s", cfg->data_dir, why);
    }
    px_native_opts_t nopts;
    px_native_opts_init(&nopts);
    nopts.jwt_secret = cfg->jwt_secret;
    nopts.api_key = cfg->api_key;
    nopts.allow_anonymous = cfg->allow_anonymous;
    nopts.max_channels = cfg->max_channels;
    nopts.publish_rate = cfg->publish_rate;
    nopts.history_limit_max = cfg->history_limit_max;
    nopts.subscribe_rate = cfg->subscribe_rate;
    nopts.max_inflight = cfg->max_inflight;
    if (px_native_routes(server, hub, &nopts) != 0 ||
        px_route(server, "GET", "/metrics", metrics, server) != 0)
        FAIL(1, "out of memory");
    if ((cfg->npusher_app || cfg->pusher_apps) && pusher_setup(app, err, errlen, code) != 0)
        return -1;
    if (ao && ao->on_routes) {
        int r = ao->on_routes(server, hub, ao->ud);
        if (r)
            FAIL(1, "adding routes: %s", px_strerror(r));
    }
    if (cfg->allow_anonymous)
        px_log(PX_LOG_WARN,
               "--allow-anonymous: clients without a token may subscribe and publish%s",
               cfg->api_key ? "" : "; the HTTP API is open (no --api-key)");
    else if (!cfg->jwt_secret)
        px_log(PX_LOG_WARN,
               "no --jwt-secret and no --allow-anonymous: WebSocket clients cannot connect");

    const char *static_dir = cfg->static_dir ? cfg->static_dir : ao ? ao->default_static : NULL;
    if (static_dir) {
        int sr = px_route_static(server, "/", static_dir);
        if (sr)
            FAIL(2, "--static %s: %s", static_dir, px_strerror(sr));
    }
    return 0;
}

px_app_t *px_app_new(const px_config_t *cfg, const px_app_opts_t *o, char *err, size_t errlen,
                     int *code)
{
    int dummy;
    if (!code)
        code = &dummy;
    px_app_t *app = px__calloc(1, sizeof *app);
    if (!app) {
        snprintf(err, errlen, "out of memory");
        *code = 1;
        return NULL;
    }
    app->cfg = cfg;
    if (build(app, o, err, errlen, code) != 0) {
        px_app_free(app);
        return NULL;
    }
    return app;
}

int px_app_start(px_app_t *app)
{
    /* Threads inherit the mask of their creator: ours never take a signal meant for the
     * process (the CLI waits for them with sigtimedwait, Node handles them itself). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    px_log(PX_LOG_INFO, "plexus %s starting with %u worker(s)", PX_VERSION_STRING,
           px_workers_count(px_server_workers(app->server)));
    int r = px_hub_start(app->hub);
    if (r == 0) {
        r = px_server_start(app->server);
        app->started = r == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r == 0)
        for (unsigned i = 0; i < px_server_listener_count(app->server); i++)
            px_log(PX_LOG_INFO, "listening on %s", px_server_listener_name(app->server, i));
    return r;
}

int px_app_run(px_app_t *app)
{
    px_log(PX_LOG_INFO, "plexus %s starting with %u worker(s)", PX_VERSION_STRING,
           px_workers_count(px_server_workers(app->server)));
    int r = px_hub_start(app->hub);
    if (r)
        return r;
    app->started = 1;
    return px_server_run(app->server);
}

void px_app_shutdown(px_app_t *app)
{
    px_server_shutdown(app->server);
}

int px_app_wait(px_app_t *app)
{
    int r = px_server_wait(app->server);
    px_log(PX_LOG_INFO, "stopped");
    return r;
}

px_server_t *px_app_server(px_app_t *app)
{
    return app->server;
}

px_hub_t *px_app_hub(px_app_t *app)
{
    return app->hub;
}

void px_app_free(px_app_t *app)
{
    if (!app)
        return;
    /* The hub stops after the server's workers (it drains what they left). */
    px_hub_free(app->hub);
    px_server_free(app->server);
    px_tls_free(app->tls); /* after every connection that used it */
    px__free(app);
}
