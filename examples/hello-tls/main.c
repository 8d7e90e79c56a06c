/* hello-tls — examples/hello over TLS: the HTTPS benchmark target of
 * bench/tls.sh (a separate program so that examples/hello keeps no OpenSSL
 * code and its small footprint). Written only against the public API.
 *   GET /plaintext -> "Hello, World!" (text/plain)
 *   GET /json      -> {"message":"Hello, World!"}
 * Usage: hello-tls --tls-cert FILE --tls-key FILE [--listen ADDR]... [--workers N]
 *   (default 127.0.0.1:8443, one worker per CPU; every listener speaks TLS) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexus/http.h>
#include <plexus/log.h>
#include <plexus/tls.h>

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
    fprintf(stderr,
            "hello-tls: %s\nusage: hello-tls --tls-cert FILE --tls-key FILE [--listen ADDR]... "
            "[--workers N]\n",
            why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen[8];
    int nlisten = 0;
    const char *cert = NULL, *key = NULL;
    px_server_opts_t opts;
    px_server_opts_init(&opts);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nlisten < 8) {
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
        listen[nlisten++] = "127.0.0.1:8443";
    if (!cert || !key)
        return usage("--tls-cert and --tls-key are required");
    px_tls_opts_t to;
    px_tls_opts_init(&to);
    to.cert_files = &cert;
    to.key_files = &key;
    to.ncerts = 1;
    char err[512];
    px_tls_t *tls = px_tls_new(&to, err, sizeof err);
    if (!tls) {
        fprintf(stderr, "hello-tls: %s\n", err);
        return 2;
    }

    px_server_t *s = px_server_new(&opts);
    if (!s) {
        px_tls_free(tls);
        return 1;
    }
    for (int i = 0; i < nlisten; i++) {
        px_listen_opts_t lo;
        px_listen_opts_init(&lo);
        lo.addr = listen[i];
        int r = px_server_listen_tls(s, &lo, tls);
        if (r) {
            fprintf(stderr, "hello-tls: --listen %s: %s\n", listen[i], px_strerror(r));
            px_server_free(s);
            px_tls_free(tls);
            return 2;
        }
    }
    px_route(s, "GET", "/plaintext", plaintext, NULL);
    px_route(s, "GET", "/json", json, NULL);
    int r = px_server_run(s);
    px_server_free(s);
    px_tls_free(tls);
    return r ? 1 : 0;
}
