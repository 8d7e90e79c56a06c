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
#include "plexus/pusher.h"
#include "plexus/ws.h"
#include "plexus/log.h"
#include "plexus/net.h"
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

/* Everything after option parsing; returns the exit code. Whatever it creates
 * is freed by its caller through `server` and `hub`. */
static int run(px_config_t *cfgp, px_server_t **serverp, px_hub_t **hubp)
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
    for (unsigned i = 0; i < cfg.nlisten; i++) {
        int r = px_server_listen(server, cfg.listen[i]);
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
    if (cfg.npusher_app || cfg.pusher_apps) {
        px_pusher_apps_t *apps = px_pusher_apps_new();
        char perr[400] = "";
        int pr = cfg.pusher_apps
                     ? px_pusher_apps_add_json(apps, cfg.pusher_apps, strlen(cfg.pusher_apps), perr,
                                               sizeof perr)
                     : 0;
        if (pr) {
            fprintf(stderr, "plexus: pusher-apps: %s\n", perr);
            px_pusher_apps_free(apps);
            return 2;
        }
        for (unsigned i = 0; i < cfg.npusher_app; i++) {
            if (px_pusher_apps_add_flag(apps, cfg.pusher_app[i], perr, sizeof perr) != 0) {
                fprintf(stderr, "plexus: --pusher-app %s\n", perr);
                px_pusher_apps_free(apps);
                return 2;
            }
        }
        size_t napps = px_pusher_apps_count(apps);
        if (px_pusher_apps_validate(px_pusher_apps_get(apps), napps, perr, sizeof perr) != 0) {
            fprintf(stderr, "plexus: pusher apps: %s\n", perr);
            px_pusher_apps_free(apps);
            return 2;
        }
        pr = px_pusher_routes(server, hub, px_pusher_apps_get(apps), napps);
        px_pusher_apps_free(apps);
        if (pr) {
            fprintf(stderr, "plexus: cannot serve the Pusher protocol: %s\n", px_strerror(pr));
            return 1;
        }
        px_log(PX_LOG_INFO, "Pusher protocol: %zu app(s) at /app/{key} and /apps/{id}/", napps);
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
    int code = run(&cfg, &server, &hub);
    /* The hub stops after the server's workers (it drains what they left). */
    px_hub_free(hub);
    px_server_free(server);
    px_config_free(&cfg);
    return code;
}
