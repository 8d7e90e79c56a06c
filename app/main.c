/* plexus: the server binary. It is a user of the public API like any other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/config.h"
#include "plexus/http.h"
#include "plexus/log.h"
#include "plexus/net.h"
#include "plexus/version.h"

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

int main(int argc, char **argv)
{
    px_config_t cfg;
    px_config_load(&cfg, argc, argv);

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
    px_server_t *server = px_server_new(&so);
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
            px_server_free(server);
            px_config_free(&cfg);
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
    if (px_http_configure(server, &ho) != 0 || px_route(server, "GET", "/healthz", healthz, NULL) != 0) {
        fprintf(stderr, "plexus: out of memory\n");
        return 1;
    }
    const char *static_dir = cfg.static_dir ? cfg.static_dir : default_static_dir();
    int sr = px_route_static(server, "/", static_dir);
    if (sr) {
        fprintf(stderr, "plexus: --static %s: %s\n", static_dir, px_strerror(sr));
        px_server_free(server);
        px_config_free(&cfg);
        return 2;
    }
    px_log(PX_LOG_INFO, "plexus %s starting with %u worker(s)", PX_VERSION_STRING,
           px_workers_count(px_server_workers(server)));
    int r = px_server_run(server);
    px_server_free(server);
    px_config_free(&cfg);
    return r == 0 ? 0 : 1;
}
