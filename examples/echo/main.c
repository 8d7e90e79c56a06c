/* echo — WebSocket echo and broadcast server, written only against the public API.
 *   /echo       every message is sent back to its sender; a client that offers
 *               subprotocols gets "echo" if it offered it, else its first one
 *   /broadcast  every message is sent to every connection on /broadcast (sender
 *               included), encoded once and shared by all of them
 * Usage: echo [--listen ADDR]... [--workers N]   (default 127.0.0.1:8080, one per CPU) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/ws.h>

static px_ws_topic_t *everyone;

static void echo_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    (void)ud;
    px_ws_send(ws, opcode, data, len);
}

/* Accepting whatever the client offers first exercises the server's handling
 * of long and odd subprotocol offers (tests/integration/44-ws-hostile.py). */
static int echo_subprotocol(px_req_t *req, const px_str_t *offered, size_t n, void *ud)
{
    (void)req;
    (void)ud;
    for (size_t i = 0; i < n; i++)
        if (offered[i].len == 4 && memcmp(offered[i].ptr, "echo", 4) == 0)
            return (int)i;
    return 0;
}

static void broadcast_open(px_ws_t *ws, px_req_t *req, void *ud)
{
    (void)req;
    (void)ud;
    px_ws_topic_join(everyone, ws);
}

static void broadcast_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    (void)ws;
    (void)ud;
    px_slice_t *frame = px_ws_frame_new(opcode, data, len);
    if (!frame)
        return;
    px_ws_topic_publish(everyone, frame);
    px_slice_unref(frame);
}

static const px_ws_callbacks_t echo_cb = {.select_subprotocol = echo_subprotocol,
                                          .on_message = echo_message};
static const px_ws_callbacks_t broadcast_cb = {.on_open = broadcast_open,
                                               .on_message = broadcast_message};

static int usage(const char *why)
{
    fprintf(stderr, "echo: %s\nusage: echo [--listen ADDR]... [--workers N]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen[8];
    int nlisten = 0;
    px_server_opts_t opts;
    px_server_opts_init(&opts);
    opts.max_connections = 100000;
    opts.idle_timeout_ms = 0; /* WebSocket keep-alive pings decide */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nlisten < 8) {
            listen[nlisten++] = argv[++i];
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 0 || n > 256)
                return usage("--workers: expected a number from 0 to 256");
            opts.workers = (unsigned)n;
        } else {
            return usage("unknown argument");
        }
    }
    if (nlisten == 0)
        listen[nlisten++] = "127.0.0.1:8080";

    px_server_t *s = px_server_new(&opts);
    if (!s)
        return 1;
    for (int i = 0; i < nlisten; i++) {
        int r = px_server_listen(s, listen[i]);
        if (r) {
            fprintf(stderr, "echo: --listen %s: %s\n", listen[i], px_strerror(r));
            px_server_free(s);
            return 2;
        }
    }
    px_ws_opts_t wo;
    px_ws_opts_init(&wo);
    wo.max_message = 64u << 20; /* the conformance suite echoes 16 MiB messages */
    wo.deflate = 1;
    px_ws_configure(s, &wo);
    everyone = px_ws_topic_new(s);
    px_ws_route(s, "/echo", &echo_cb, NULL);
    px_ws_route(s, "/broadcast", &broadcast_cb, NULL);
    int r = px_server_run(s);
    px_server_free(s);
    px_ws_topic_free(everyone);
    return r ? 1 : 0;
}
