/* plexus: the server binary. It is a user of the public API like any other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/config.h"
#include "plexus/http.h"
#include "plexus/hub.h"
#include "plexus/metrics.h"
#include "plexus/native.h"
#include "plexus/ws.h"
#include "plexus/log.h"
#include "plexus/net.h"
#include "plexus/sniff.h"
#include "plexus/tls.h"
#include "plexus/version.h"

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

static void healthz(px_req_t *req, void *ud)
{
    PX_UNUSED(ud);
    static const char body[] = "{\"status\":\"ok\"}";
    px_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* The bundled web/ directory: next to the source tree in a build, or installed. */
static const char *default_static_dir(void)
{
    struct stat st;
    if (stat(PX_WEB_DIR, &st) == 0 && S_ISDIR(st.st_mode))
        return PX_WEB_DIR;
    return PX_INSTALL_WEB_DIR;
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
 * failure: *code is then 2). */
static px_tls_t *tls_setup(const px_config_t *cfg, int *code)
{
    int any = 0;
    for (unsigned i = 0; i < cfg->nlisten; i++)
        any |= px_config_listen_tls(cfg, i);
    *code = 0;
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
    char err[1024];
    px_tls_t *tls = px_tls_new(&to, err, sizeof err);
    if (!tls) {
        fprintf(stderr, "plexus: %s: %s (see plexus --help)\n", tls_flag(cfg, err), err);
        *code = 2;
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
 * one without). 0, or the exit code after a message. */
static int sniffer(px_server_t *s, const px_config_t *cfg, const char *name, px_tls_t *tls,
                   int tls_only)
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
    char err[512];
    if (px_sniff_register(s, name, &sn, err, sizeof err) != 0) {
        fprintf(stderr, "plexus: --forward: %s\n", err);
        return 2;
    }
    return 0;
}

/* Everything after option parsing; returns the exit code. Whatever it creates
 * is freed by its caller through `server`, `hub` and `tls`. */
static int run(px_config_t *cfgp, px_server_t **serverp, px_hub_t **hubp, px_tls_t **tlsp)
{
    px_config_t cfg = *cfgp;

    px_log_set_level(px_log_level_parse(cfg.log_level));
    px_log_set_format(cfg.log_format);
    if (cfg.log_file && px_log_set_file(cfg.log_file) != 0) {
        fprintf(stderr, "plexus: --log-file %s: cannot open\n", cfg.log_file);
        return 2;
    }

    px_server_opts_t so;
    px_server_opts_init(&so);
    so.workers = cfg.workers;
    so.max_connections = cfg.max_connections;
    so.idle_timeout_ms = cfg.idle_timeout_ms;
    so.output_cap = (size_t)cfg.output_cap;
    so.shutdown_timeout_ms = cfg.shutdown_timeout_ms;
    px_server_t *server = *serverp = px_server_new(&so);
    if (!server) {
        fprintf(stderr, "plexus: --workers %u: cannot start that many workers\n", cfg.workers);
        return 2;
    }
    int code;
    px_tls_t *tls = *tlsp = tls_setup(&cfg, &code);
    if (code)
        return code;
    /* One port for several protocols (docs/one-port.md): a listener sniffs when it has TLS
     * (so TLS and plain HTTP share it) or when pass-through rules (--forward) or trusted
     * PROXY sources (--proxy-protocol-from) are configured; otherwise it keeps the plain
     * fast path (HTTP from the first byte). One sniffer per kind of listener. */
    int forwarding = cfg.nforward > 0 || cfg.nproxy_protocol_from > 0;
    for (unsigned i = 0; i < cfg.nlisten; i++) {
        int has_tls = px_config_listen_tls(&cfg, i);
        int tls_only = has_tls && px_config_listen_tls_only(&cfg, i);
        const char *chooser = tls_only ? "sniff-tls-only" : has_tls ? "sniff-tls" : "sniff";
        if ((has_tls || forwarding) &&
            (code = sniffer(server, &cfg, chooser, has_tls ? tls : NULL, tls_only)) != 0)
            return code;
        px_listen_opts_t lo;
        px_listen_opts_init(&lo);
        lo.addr = cfg.listen[i];
        lo.protocol = has_tls || forwarding ? chooser : NULL;
        lo.handshake_timeout_ms = cfg.tls_handshake_timeout_ms;
        int r = px_server_listen_opts(server, &lo);
        if (r) {
            fprintf(stderr, "plexus: --listen %s: %s\n", cfg.listen[i],
                    r == -EINVAL ? "invalid address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)"
                                 : px_strerror(r));
            return 2;
        }
    }
    px_http_opts_t ho;
    px_http_opts_init(&ho);
    ho.max_body = (size_t)cfg.max_body;
    ho.max_request_line = (size_t)cfg.max_request_line;
    ho.max_header_size = (size_t)cfg.max_header_size;
    ho.max_headers = cfg.max_headers;
    ho.header_timeout_ms = cfg.header_timeout_ms;
    ho.keepalive_timeout_ms = cfg.keepalive_timeout_ms;
    ho.max_requests = cfg.max_requests;
    ho.access_log = strcmp(cfg.access_log, "json") == 0 ? 2 : strcmp(cfg.access_log, "text") == 0;
    if (px_http_configure(server, &ho) != 0 ||
        px_route(server, "GET", "/healthz", healthz, NULL) != 0) {
        fprintf(stderr, "plexus: out of memory\n");
        return 1;
    }
    if (tls) {
        /* After the HTTP layer: "http/1.1" stays the default protocol. */
        if (px_tls_redirect_register(server) != 0) {
            fprintf(stderr, "plexus: out of memory\n");
            return 1;
        }
        px_server_on_reload(server, tls_reload, tls);
    }
    px_ws_opts_t wo;
    px_ws_opts_init(&wo);
    wo.max_message = (size_t)cfg.ws_max_message;
    wo.ping_interval_ms = cfg.ws_ping_interval_ms;
    wo.deflate = cfg.ws_deflate;
    wo.slow_policy = strcmp(cfg.ws_slow_policy, "drop") == 0 ? PX_WS_SLOW_DROP : PX_WS_SLOW_CLOSE;
    if (px_ws_configure(server, &wo) != 0) {
        fprintf(stderr, "plexus: --ws-max-message must be at least 1 byte\n");
        return 2;
    }

    px_hub_opts_t hopts;
    px_hub_opts_init(&hopts);
    hopts.data_dir = cfg.data_dir;
    hopts.durability =
        strcmp(cfg.durability, "full") == 0 ? PX_HUB_DURABILITY_FULL : PX_HUB_DURABILITY_NORMAL;
    hopts.history_size = cfg.history_size;
    hopts.history_ttl_ms = cfg.history_ttl_ms;
    hopts.max_payload = (size_t)cfg.max_payload;
    char err[512] = "";
    px_hub_t *hub = *hubp = px_hub_new(px_server_workers(server), &hopts, err, sizeof err);
    if (!hub) {
        fprintf(stderr, "plexus: --data-dir %s: %s\n", cfg.data_dir, err);
        return 2;
    }
    px_native_opts_t nopts;
    px_native_opts_init(&nopts);
    nopts.jwt_secret = cfg.jwt_secret;
    nopts.api_key = cfg.api_key;
    nopts.allow_anonymous = cfg.allow_anonymous;
    nopts.max_channels = cfg.max_channels;
    nopts.publish_rate = cfg.publish_rate;
    nopts.history_limit_max = cfg.history_limit_max;
    nopts.subscribe_rate = cfg.subscribe_rate;
    nopts.max_inflight = cfg.max_inflight;
    if (px_native_routes(server, hub, &nopts) != 0 ||
        px_route(server, "GET", "/metrics", metrics, server) != 0) {
        fprintf(stderr, "plexus: out of memory\n");
        return 1;
    }
    if (cfg.allow_anonymous)
        px_log(PX_LOG_WARN,
               "--allow-anonymous: clients without a token may subscribe and publish%s",
               cfg.api_key ? "" : "; the HTTP API is open (no --api-key)");
    else if (!cfg.jwt_secret)
        px_log(PX_LOG_WARN,
               "no --jwt-secret and no --allow-anonymous: WebSocket clients cannot connect");

    const char *static_dir = cfg.static_dir ? cfg.static_dir : default_static_dir();
    int sr = px_route_static(server, "/", static_dir);
    if (sr) {
        fprintf(stderr, "plexus: --static %s: %s\n", static_dir, px_strerror(sr));
        return 2;
    }
    px_log(PX_LOG_INFO, "plexus %s starting with %u worker(s)", PX_VERSION_STRING,
           px_workers_count(px_server_workers(server)));
    if (px_hub_start(hub) != 0) {
        fprintf(stderr, "plexus: cannot start the hub thread\n");
        return 1;
    }
    return px_server_run(server) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    px_config_t cfg;
    px_config_load(&cfg, argc, argv);
    px_server_t *server = NULL;
    px_hub_t *hub = NULL;
    px_tls_t *tls = NULL;
    int code = run(&cfg, &server, &hub, &tls);
    /* The hub stops after the server's workers (it drains what they left). */
    px_hub_free(hub);
    px_server_free(server);
    px_tls_free(tls); /* after every connection that used it */
    px_config_free(&cfg);
    return code;
}
