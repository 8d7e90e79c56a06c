/* plexus: the server binary. It is a user of the public API like any other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"
#include "plexus/log.h"
#include "plexus/net.h"
#include "plexus/version.h"

/* Placeholder protocol until the HTTP layer lands: answer every read with a
 * fixed 200 so the loop can be exercised end to end. */
static const char placeholder[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: "
                                  "text/plain\r\n\r\nok\n";

static ssize_t ph_read(px_conn_t *c, char *data, size_t len)
{
    /* One response per request head (count blank-line terminators). */
    size_t used = 0;
    for (size_t i = 3; i < len; i++) {
        if (data[i] == '\n' && data[i - 1] == '\r' && data[i - 2] == '\n' && data[i - 3] == '\r') {
            px_conn_write(c, placeholder, sizeof placeholder - 1);
            used = i + 1;
        }
    }
    return (ssize_t)used;
}

static const px_protocol_t placeholder_proto = {.name = "placeholder", .on_read = ph_read};

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
    px_server_set_protocol(server, &placeholder_proto, NULL, NULL);
    px_log(PX_LOG_INFO, "plexus %s starting with %u worker(s)", PX_VERSION_STRING,
           px_workers_count(px_server_workers(server)));
    int r = px_server_run(server);
    px_server_free(server);
    px_config_free(&cfg);
    return r == 0 ? 0 : 1;
}
