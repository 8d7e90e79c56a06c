/* The option table and its three sources. Precedence, lowest first: built-in
 * defaults, the JSON config file, PLEXUS_* environment variables, flags. */
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/config_int.h"
#include "plexus/app.h"
#include "plexus/json.h"
#include "plexus/sniff.h"
#include "plexus/version.h"

enum opt_type { T_STR, T_LIST, T_UINT, T_UINT64, T_SIZE, T_DURATION, T_BOOL };

typedef struct opt {
    const char *name; /* flag without dashes; env PLEXUS_<NAME>; config-file key */
    enum opt_type type;
    size_t off;
    const char *def; /* default, parsed like user input; NULL = unset */
    const char *meta;
    const char *help;
    const char *choices; /* T_STR: "a|b|c" allowed values, or NULL */
    const char *group;
    /* Numeric options: the inclusive range, written like a value of the option
     * ("64KiB", "1h"), checked for every source (defaults included) and shown
     * by --help. NULL for the other types. */
    const char *min, *max;
} opt_t;

#define O(field) offsetof(px_config_t, field)

static const opt_t options[] = {
    {"listen", T_LIST, O(listen), "127.0.0.1:8080", "ADDR",
     "address to listen on, repeatable: HOST:PORT, [V6]:PORT, unix:PATH, fd:N", NULL, "Server"},
    {"workers", T_UINT, O(workers), "0", "N",
     "worker threads, each with its own event loop (0 = one per CPU)", NULL, "Server", "0", "256"},
    {"max-connections", T_UINT, O(max_connections), "10000", "N",
     "open connections allowed; over it new ones get 503 and are closed", NULL, "Server", "1",
     "1000000"},
    {"idle-timeout", T_DURATION, O(idle_timeout_ms), "60s", "DURATION",
     "close a connection idle this long (0 = never)", NULL, "Server", "0", "1d"},
    {"output-cap", T_SIZE, O(output_cap), "4MiB", "SIZE",
     "output bytes queued per connection before it counts as a slow consumer", NULL, "Server",
     "64KiB", "1GiB"},
    {"shutdown-timeout", T_DURATION, O(shutdown_timeout_ms), "10s", "DURATION",
     "on SIGTERM/SIGINT, time left to in-flight work before connections are closed", NULL, "Server",
     "0", "1h"},
    {"static", T_STR, O(static_dir), NULL, "DIR",
     "serve static files from DIR (default: the bundled web/ directory)", NULL, "HTTP"},
    {"max-body", T_SIZE, O(max_body), "1MiB", "SIZE", "largest request body accepted (413 over it)",
     NULL, "HTTP", "0", "1GiB"},
    {"max-request-line", T_SIZE, O(max_request_line), "8KiB", "SIZE",
     "longest request line (414 over it)", NULL, "HTTP", "256", "1MiB"},
    {"max-header-size", T_SIZE, O(max_header_size), "16KiB", "SIZE",
     "largest request header block (431 over it)", NULL, "HTTP", "1KiB", "16MiB"},
    {"max-headers", T_UINT, O(max_headers), "100", "N",
     "most header fields in a request (431 over it)", NULL, "HTTP", "1", "10000"},
    {"header-timeout", T_DURATION, O(header_timeout_ms), "10s", "DURATION",
     "time allowed to send a request head (slowloris defence)", NULL, "HTTP", "100ms", "1h"},
    {"keepalive-timeout", T_DURATION, O(keepalive_timeout_ms), "60s", "DURATION",
     "close a keep-alive connection idle between requests this long (0 = never)", NULL, "HTTP", "0",
     "1d"},
    {"max-requests", T_UINT, O(max_requests), "0", "N",
     "requests served per connection before it is closed (0 = no limit)", NULL, "HTTP", "0",
     "4294967295"},
    {"access-log", T_STR, O(access_log), "off", "FORMAT",
     "access log, one line per request: off|text|json", "off|text|json", "HTTP"},
    {"http2", T_BOOL, O(http2), "true", "",
     "accept HTTP/2: h2c with prior knowledge on plain listeners, h2 by ALPN over TLS "
     "(--http2=false: HTTP/1.1 only)",
     NULL, "HTTP/2"},
    {"http2-max-streams", T_UINT, O(http2_max_streams), "100", "N",
     "concurrent streams per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS)", NULL, "HTTP/2",
     "1", "10000"},
    {"http2-window", T_SIZE, O(http2_window), "256KiB", "SIZE",
     "flow-control window of each HTTP/2 stream (SETTINGS_INITIAL_WINDOW_SIZE)", NULL, "HTTP/2",
     "16KiB", "1GiB"},
    {"http2-max-frame-size", T_SIZE, O(http2_max_frame_size), "16KiB", "SIZE",
     "largest HTTP/2 frame payload accepted (SETTINGS_MAX_FRAME_SIZE)", NULL, "HTTP/2", "16KiB",
     "16777215"},
    {"ws-max-message", T_SIZE, O(ws_max_message), "1MiB", "SIZE",
     "largest WebSocket message accepted (close 1009 over it)", NULL, "WebSocket", "1KiB", "1GiB"},
    {"ws-ping-interval", T_DURATION, O(ws_ping_interval_ms), "30s", "DURATION",
     "ping WebSocket clients this often; close those silent for two intervals (0 = off)", NULL,
     "WebSocket", "0", "1d"},
    {"ws-deflate", T_BOOL, O(ws_deflate), "false", "",
     "accept permessage-deflate (compresses messages of 256 bytes and more)", NULL, "WebSocket"},
    {"ws-slow-policy", T_STR, O(ws_slow_policy), "close", "POLICY",
     "a client whose output budget (--output-cap) is full: close (1008) or drop messages",
     "close|drop", "WebSocket"},
    {"data-dir", T_STR, O(data_dir), "./var", "DIR", "where the SQLite database lives", NULL,
     "Hub"},
    {"data-dir-shared", T_BOOL, O(data_dir_shared), "false", "",
     "several plexus processes of this host share --data-dir as one server (each must set it; "
     "Passenger's processes of one app; docs/internals/processes.md)",
     NULL, "Hub"},
    {"store", T_STR, O(store), "sqlite", "URL",
     "where history lives: sqlite (one node, in --data-dir), or shared by several nodes: "
     "redis://HOST:PORT[/DB], unix:/PATH (docs/scaling.md)",
     NULL, "Hub"},
    {"broker", T_STR, O(broker), NULL, "URL",
     "fan-out between nodes: redis://HOST:PORT[/DB] or unix:/PATH (default: the --store's own)",
     NULL, "Hub"},
    {"presence-ttl", T_DURATION, O(presence_ttl_ms), "30s", "DURATION",
     "several nodes: a crashed node's presence members leave after this", NULL, "Hub", "1s", "1h"},
    {"durability", T_STR, O(durability), "normal", "MODE",
     "normal: acknowledged messages survive a crash (kill -9); full: also a power loss (fsync)",
     "normal|full", "Hub"},
    {"history-size", T_UINT64, O(history_size), "1000", "N",
     "messages kept per channel (0 = unlimited)", NULL, "Hub", "0", "1000000000"},
    {"history-ttl", T_DURATION, O(history_ttl_ms), "0", "DURATION",
     "drop messages older than this (0 = keep)", NULL, "Hub", "0", "3650d"},
    {"jwt-secret", T_STR, O(jwt_secret), NULL, "SECRET",
     "HS256 secret that signs client tokens (claims: sub, exp, channels, info)", NULL, "Hub"},
    {"api-key", T_STR, O(api_key), NULL, "KEY", "key for the HTTP API (Authorization: Bearer KEY)",
     NULL, "Hub"},
    {"allow-anonymous", T_BOOL, O(allow_anonymous), "false", "",
     "let clients without a token subscribe and publish (and open the HTTP API if no --api-key)",
     NULL, "Hub"},
    {"max-payload", T_SIZE, O(max_payload), "64KiB", "SIZE", "largest message data", NULL, "Hub",
     "1", "1GiB"},
    {"max-channels", T_UINT, O(max_channels), "100", "N", "subscriptions per connection", NULL,
     "Hub", "1", "100000"},
    {"publish-rate", T_UINT, O(publish_rate), "100", "N",
     "publishes per second per connection (0 = no limit)", NULL, "Hub", "0", "1000000"},
    {"history-limit-max", T_UINT, O(history_limit_max), "1000", "N",
     "largest `limit` a history request may ask for", NULL, "Hub", "1", "100000"},
    {"subscribe-rate", T_UINT, O(subscribe_rate), "100", "N",
     "subscribes and unsubscribes per second per connection (0 = no limit)", NULL, "Hub", "0",
     "1000000"},
    {"max-inflight", T_UINT, O(max_inflight), "32", "N",
     "requests of one WebSocket connection waiting for an answer; over it: too_many_requests", NULL,
     "Hub", "1", "100000"},
    {"pusher-app", T_LIST, O(pusher_app), NULL, "ID:KEY:SECRET",
     "serve the Pusher protocol for this app (repeatable; options per app: --pusher-apps)", NULL,
     "Pusher"},
    {"pusher-apps", T_STR, O(pusher_apps), NULL, "JSON",
     "Pusher apps with their options, a JSON array (in the config file: the array itself)", NULL,
     "Pusher"},
    /* One port: the sniffer, pass-through rules, PROXY protocol (docs/one-port.md). */
    {"forward", T_LIST, O(forward), NULL, "NAME=TARGET[,OPT=VAL]",
     "pass connections whose first bytes match probe NAME (ssh, openvpn, xmpp, tls-sni:HOST, "
     "http-host:HOST, regex:ERE, default) to TARGET (HOST:PORT or unix:PATH), repeatable, tried "
     "in order; options proxy=v1|v2, max-conns=N, idle=DURATION, connect-timeout=DURATION, "
     "window=BYTES, probe=PROBE (docs/one-port.md)",
     NULL, "One port"},
    {"sniff-timeout", T_DURATION, O(sniff_timeout_ms), "3s", "DURATION",
     "time a client has to send enough bytes to be recognised; then the default rule, or close",
     NULL, "One port", "100ms", "1h"},
    {"sniff-max", T_SIZE, O(sniff_max), "16KiB", "SIZE",
     "bytes the sniffer looks at before it decides", NULL, "One port", "64", "1MiB"},
    {"proxy-protocol-from", T_LIST, O(proxy_protocol_from), NULL, "CIDR",
     "accept a PROXY protocol v1/v2 header from these sources (CIDR, address or unix), "
     "repeatable; from anyone else it closes the connection",
     NULL, "One port"},
    {"log-level", T_STR, O(log_level), "info", "LEVEL", "debug|info|warn|error",
     "debug|info|warn|error|off", "Logs"},
    {"log-format", T_STR, O(log_format), "text", "FORMAT",
     "text|json, one line per event on stderr", "text|json", "Logs"},
    {"log-file", T_STR, O(log_file), NULL, "PATH",
     "log to PATH instead of stderr (re-opened on SIGHUP)", NULL, "Logs"},
    {"tls", T_BOOL, O(tls), "false", "",
     "the --listen addresses speak TLS (HTTPS, WSS); needs --tls-cert and --tls-key, or --tls-dir",
     NULL, "TLS"},
    {"tls-cert", T_LIST, O(tls_cert), NULL, "FILE",
     "certificate chain (PEM, leaf first), repeatable: the first is the default, the others are "
     "chosen by SNI",
     NULL, "TLS"},
    {"tls-key", T_LIST, O(tls_key), NULL, "FILE",
     "private key (PEM, unencrypted) of the --tls-cert given at the same position, repeatable",
     NULL, "TLS"},
    {"tls-dir", T_STR, O(tls_dir), NULL, "DIR",
     "more certificates: NAME.crt + NAME.key, NAME.pem (both), or SUB/fullchain.pem + "
     "SUB/privkey.pem (certbot's live/); NAME.ocsp is a staple",
     NULL, "TLS"},
    {"tls-ocsp", T_LIST, O(tls_ocsp), NULL, "FILE",
     "OCSP response (DER) to staple, repeatable; each goes with the certificate it is about", NULL,
     "TLS"},
    {"tls-only", T_BOOL, O(tls_only), "false", "",
     "plain HTTP on a TLS listener gets a 301 to https:// (GET, HEAD) or a 400", NULL, "TLS"},
    {"tls-ticket-rotation", T_DURATION, O(tls_ticket_rotation_ms), "1h", "DURATION",
     "replace the session ticket key this often; a ticket lasts one interval (0 = no tickets)",
     NULL, "TLS", "0", "7d"},
    {"tls-session-cache", T_UINT, O(tls_session_cache), "20480", "N",
     "TLS sessions kept for resumption by session id (0 = none)", NULL, "TLS", "0", "10000000"},
    {"tls-ktls", T_STR, O(tls_ktls), "on", "on|off",
     "kernel TLS when the kernel offers it (static files keep sendfile over TLS)", "on|off", "TLS"},
    {"tls-handshake-timeout", T_DURATION, O(tls_handshake_timeout_ms), "10s", "DURATION",
     "time allowed for a TLS handshake", NULL, "TLS", "100ms", "1h"},
    {"config", T_STR, O(config_file), NULL, "FILE",
     "read options from a JSON file: {\"listen\": [\"127.0.0.1:8080\"], \"workers\": 2}", NULL,
     "General"},
};

#define NOPTS (sizeof options / sizeof options[0])
_Static_assert(NOPTS <= sizeof(((px_config_t *)0)->list_from_flags), "list_from_flags");

/* A load in progress: where die() jumps back to, with the message. One per thread. */
typedef struct load_ctx {
    jmp_buf jb;
    char *err;
    size_t errlen;
    char *text;    /* the config file being parsed, freed on the way out */
    char *scratch; /* a copy being split, freed on the way out */
    px_json_tok_t *toks;
} load_ctx_t;

static _Thread_local load_ctx_t *load_ctx;

/* A bad option: the message goes to the caller of px_config_load / px_config_set. */
static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(load_ctx->err, load_ctx->errlen, fmt, ap);
    va_end(ap);
    longjmp(load_ctx->jb, 1);
}

static const opt_t *find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Parse "123", with an optional unit; returns 0 or -EINVAL. */
static int parse_scaled(const char *s, uint64_t *out, int kind)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    uint64_t mul = 1;
    if (kind == T_SIZE) {
        static const struct {
            const char *u;
            uint64_t m;
        } units[] = {{"", 1},          {"B", 1},         {"KiB", 1024},  {"K", 1024},
                     {"k", 1024},      {"MiB", 1 << 20}, {"M", 1 << 20}, {"m", 1 << 20},
                     {"GiB", 1 << 30}, {"G", 1 << 30},   {"g", 1 << 30}};
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(end, units[i].u) == 0)
                break;
        if (i == sizeof units / sizeof units[0])
            return -EINVAL;
        mul = units[i].m;
    } else if (kind == T_DURATION) {
        if (strcmp(end, "ms") == 0)
            mul = 1;
        else if (strcmp(end, "s") == 0 || *end == '\0')
            mul = 1000; /* a bare number is seconds */
        else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
            mul = 60000;
        else if (strcmp(end, "h") == 0)
            mul = 3600000;
        else if (strcmp(end, "d") == 0)
            mul = 86400000;
        else
            return -EINVAL;
    } else if (*end) {
        return -EINVAL;
    }
    if (v > UINT64_MAX / mul)
        return -EINVAL;
    *out = v * mul;
    return 0;
}

/* How parse_scaled reads a numeric option (T_UINT64 has no unit either), and
 * what a value that does not parse should have been. */
static int number_kind(const opt_t *o)
{
    return o->type == T_UINT64 ? T_UINT : (int)o->type;
}

static const char *const number_what[] = {
    [T_UINT] = "a non-negative integer",
    [T_UINT64] = "a non-negative integer",
    [T_SIZE] = "a size (e.g. 512, 64KiB, 4MiB)",
    [T_DURATION] = "a duration (e.g. 500ms, 10s, 5m)",
};

/* A numeric value against the option's range (the table's min and max). */
static void check_range(const opt_t *o, uint64_t v, const char *val, const char *origin)
{
    if (!o->min)
        return;
    int kind = number_kind(o);
    uint64_t lo, hi;
    if (parse_scaled(o->min, &lo, kind) || parse_scaled(o->max, &hi, kind))
        die("internal error: bad range for %s", o->name);
    if (v < lo || v > hi)
        die("%s %s: '%s' is out of range (%s..%s)", origin, o->name, val, o->min, o->max);
}

/* Bounds that depend on another option, checked once every source is in. */
static void check_relations(const px_config_t *cfg)
{
    if (cfg->max_header_size < cfg->max_request_line)
        die("option --max-header-size (%llu bytes) is below --max-request-line (%llu bytes): "
            "the header block includes the request line",
            (unsigned long long)cfg->max_header_size, (unsigned long long)cfg->max_request_line);
    if (cfg->max_payload > cfg->ws_max_message)
        die("option --max-payload (%llu bytes) is above --ws-max-message (%llu bytes): such a "
            "message could not be published over WebSocket",
            (unsigned long long)cfg->max_payload, (unsigned long long)cfg->ws_max_message);
}

/* The list options: where their count lives, and how many entries they take. */
static unsigned *list_count(px_config_t *cfg, const opt_t *o, unsigned *max)
{
    *max = PX_CONFIG_MAX_CERTS;
    if (o->off == O(tls_cert))
        return &cfg->ntls_cert;
    if (o->off == O(tls_key))
        return &cfg->ntls_key;
    if (o->off == O(tls_ocsp))
        return &cfg->ntls_ocsp;
    if (o->off == O(forward))
        return &cfg->nforward;
    if (o->off == O(proxy_protocol_from))
        return &cfg->nproxy_protocol_from;
    *max = PX_CONFIG_MAX_LISTEN;
    if (o->off == O(pusher_app))
        return &cfg->npusher_app;
    return &cfg->nlisten;
}

static void set_value(px_config_t *cfg, const opt_t *o, const char *val, const char *origin)
{
    char *base = (char *)cfg + o->off;
    uint64_t v;
    switch (o->type) {
    case T_STR:
        if (o->choices) {
            size_t n = strlen(val);
            const char *c = o->choices;
            int ok = 0;
            while (*c) {
                const char *bar = strchr(c, '|');
                size_t k = bar ? (size_t)(bar - c) : strlen(c);
                if (k == n && memcmp(c, val, n) == 0)
                    ok = 1;
                c += k + (bar ? 1 : 0);
            }
            if (!ok)
                die("%s %s: '%s' is not one of %s", origin, o->name, val, o->choices);
        }
        free(*(char **)base);
        *(char **)base = strdup(val);
        break;
    case T_LIST: {
        char **list = (char **)base;
        unsigned max, *count = list_count(cfg, o, &max);
        if (*count == max)
            die("%s %s: at most %u values", origin, o->name, max);
        if (count == &cfg->nlisten) {
            cfg->listen_tls[*count] = -1;
            cfg->listen_tls_only[*count] = -1;
        }
        char why[512] = ""; /* rules and sources are checked as they come */
        if ((count == &cfg->nforward && px_forward_check(val, why, sizeof why)) ||
            (count == &cfg->nproxy_protocol_from && px_proxy_from_check(val, why, sizeof why)))
            die("%s %s: %s", origin, o->name, why);
        list[(*count)++] = strdup(val);
        break;
    }
    case T_UINT:
    case T_UINT64:
    case T_SIZE:
    case T_DURATION:
        if (parse_scaled(val, &v, number_kind(o)) || (o->type == T_UINT && v > 0xffffffffu))
            die("%s %s: '%s' is not %s", origin, o->name, val, number_what[o->type]);
        check_range(o, v, val, origin);
        if (o->type == T_UINT)
            *(unsigned *)base = (unsigned)v;
        else
            *(uint64_t *)base = v;
        break;
    case T_BOOL:
        if (strcmp(val, "1") == 0 || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0)
            *(int *)base = 1;
        else if (strcmp(val, "0") == 0 || strcmp(val, "false") == 0 || strcmp(val, "no") == 0)
            *(int *)base = 0;
        else
            die("%s %s: '%s' is not true or false", origin, o->name, val);
        break;
    }
}

static void clear_list(px_config_t *cfg, const opt_t *o)
{
    unsigned max, *count = list_count(cfg, o, &max);
    char **list = (char **)((char *)cfg + o->off);
    for (unsigned i = 0; i < *count; i++)
        free(list[i]);
    *count = 0;
}

void px_config_usage(FILE *out)
{
    fprintf(out,
            "plexus %s — multi-protocol real-time server\n\n"
            "Usage: plexus [OPTIONS]\n\n"
            "Every option can also be set with the environment variable PLEXUS_<NAME>\n"
            "(e.g. PLEXUS_MAX_CONNECTIONS=500) or as a key in the --config JSON file.\n"
            "Precedence: flags > environment > config file > defaults.\n"
            "Sizes take B, KiB, MiB, GiB; durations ms, s, m, h, d (a bare number is seconds).\n",
            PX_VERSION_STRING);
    const char *group = "";
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &options[i];
        if (strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(out, "\n%s:\n", group);
        }
        char lhs[64];
        if (o->type == T_BOOL)
            snprintf(lhs, sizeof lhs, "--%s", o->name);
        else
            snprintf(lhs, sizeof lhs, "--%s %s", o->name, o->meta);
        fprintf(out, "  %-28s %s", lhs, o->help);
        if (o->min)
            fprintf(out, " (%s..%s)", o->min, o->max);
        if (o->def && o->type != T_BOOL)
            fprintf(out, " [default: %s]", o->def);
        fprintf(out, "\n");
    }
    fprintf(out, "\n  %-28s %s\n  %-28s %s\n", "-h, --help", "show this help and exit",
            "-V, --version", "print the version and exit");
}

/* One element of the config file's "listen" array given as an object:
 * {"addr": "0.0.0.0:443", "tls": true, "tls-only": true}. */
static void listen_object(px_config_t *cfg, const opt_t *o, px_json_doc_t *doc,
                          const px_json_tok_t *toks, int obj, unsigned idx, const char *origin)
{
    char addr[1024] = "";
    int tls = -1, only = -1;
    int k = obj + 1;
    for (uint32_t m = 0; m < toks[obj].size; m++, k = (int)toks[k + 1].next) {
        char key[64];
        if (px_json_unescape(doc, k, key, sizeof key) < 0)
            die("%s listen[%u]: unknown key (too long)", origin, idx);
        int v = k + 1;
        if (strcmp(key, "addr") == 0) {
            if (toks[v].type != PX_JSON_STRING || px_json_unescape(doc, v, addr, sizeof addr) < 0)
                die("%s listen[%u].addr: expected a string (HOST:PORT, [V6]:PORT, unix:PATH or "
                    "fd:N)",
                    origin, idx);
        } else if (strcmp(key, "tls") == 0 || strcmp(key, "tls-only") == 0) {
            if (toks[v].type != PX_JSON_TRUE && toks[v].type != PX_JSON_FALSE)
                die("%s listen[%u].%s: expected true or false", origin, idx, key);
            *(key[3] ? &only : &tls) = toks[v].type == PX_JSON_TRUE;
        } else {
            die("%s listen[%u]: unknown key \"%s\" (a listener has addr, tls, tls-only)", origin,
                idx, key);
        }
    }
    if (!addr[0])
        die("%s listen[%u]: \"addr\" is missing", origin, idx);
    set_value(cfg, o, addr, origin);
    cfg->listen_tls[cfg->nlisten - 1] = (signed char)tls;
    cfg->listen_tls_only[cfg->nlisten - 1] = (signed char)only;
}

int px__config_listen_tls(const px_config_t *cfg, unsigned i)
{
    return cfg->listen_tls[i] < 0 ? cfg->tls : cfg->listen_tls[i];
}

int px__config_listen_tls_only(const px_config_t *cfg, unsigned i)
{
    return cfg->listen_tls_only[i] < 0 ? cfg->tls_only : cfg->listen_tls_only[i];
}

/* TLS options that depend on each other and on the listeners. */
static void check_tls(const px_config_t *cfg)
{
    if (cfg->ntls_cert != cfg->ntls_key)
        die("options --tls-cert and --tls-key come in pairs: %u certificate(s), %u key(s)",
            cfg->ntls_cert, cfg->ntls_key);
    int any = 0;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        int tls = px__config_listen_tls(cfg, i);
        any |= tls;
        if (!tls && cfg->listen_tls_only[i] > 0)
            die("option tls-only of listener %s: the listener does not use TLS (\"tls\": true)",
                cfg->listen[i]);
    }
    if (any && !cfg->ntls_cert && !cfg->tls_dir)
        die("option --tls: a TLS listener needs a certificate: --tls-cert FILE --tls-key FILE, or "
            "--tls-dir DIR");
    if (cfg->tls_only && !any)
        die("option --tls-only: no listener uses TLS (add --tls)");
}

/* The keys of a JSON object (a --config file, or the options given as JSON text), each
 * set like its flag. `where` names the source in errors ("--config FILE", "options"). */
static void load_json(px_config_t *cfg, char *text, size_t len, const char *where)
{
    enum { MAXTOK = 8192 /* pusher-apps with their webhooks */ };
    px_json_tok_t *toks = load_ctx->toks = malloc(MAXTOK * sizeof *toks);
    if (!toks)
        die("%s: out of memory", where);
    px_json_doc_t doc;
    if (px_json_parse(&doc, text, len, toks, MAXTOK, 16) < 0) {
        char msg[160];
        px_json_format_error(&doc, msg, sizeof msg);
        die("%s: invalid JSON: %s", where, msg);
    }
    if (toks[0].type != PX_JSON_OBJECT)
        die("%s: the top level must be a JSON object", where);
    int k = 1;
    for (uint32_t m = 0; m < toks[0].size; m++, k = (int)toks[k + 1].next) {
        char key[64];
        if (px_json_unescape(&doc, k, key, sizeof key) < 0)
            die("%s: unknown key (too long)", where);
        const opt_t *o = find(key, strlen(key));
        if (!o || strcmp(key, "config") == 0)
            die("%s: unknown key \"%s\"", where, key);
        int v = k + 1;
        char origin[300];
        snprintf(origin, sizeof origin, "%s: key", where);
        if (strcmp(key, "pusher-apps") == 0 &&
            (toks[v].type == PX_JSON_ARRAY || toks[v].type == PX_JSON_OBJECT)) {
            /* Kept as JSON text: the Pusher front reads it (px_pusher_apps_add_json). */
            px_str_t raw = px_json_raw(&doc, v);
            free(cfg->pusher_apps);
            cfg->pusher_apps = malloc(raw.len + 1);
            if (!cfg->pusher_apps)
                die("%s: out of memory", where);
            memcpy(cfg->pusher_apps, raw.ptr, raw.len);
            cfg->pusher_apps[raw.len] = '\0';
            continue;
        }
        char val[1024];
        if (o->type == T_LIST) { /* a string (below), or an array of them */
            clear_list(cfg, o);
            if (toks[v].type == PX_JSON_ARRAY) {
                int e = v + 1;
                for (uint32_t j = 0; j < toks[v].size; j++, e = (int)toks[e].next) {
                    if (toks[e].type == PX_JSON_OBJECT && o->off == O(listen)) {
                        listen_object(cfg, o, &doc, toks, e, j, origin);
                        continue;
                    }
                    if (toks[e].type != PX_JSON_STRING ||
                        px_json_unescape(&doc, e, val, sizeof val) < 0)
                        die("%s %s: expected an array of strings", origin, key);
                    set_value(cfg, o, val, origin);
                }
                continue;
            }
            if (toks[v].type != PX_JSON_STRING)
                die("%s %s: expected a string or an array of strings", origin, key);
        }
        if (toks[v].type == PX_JSON_STRING) {
            if (px_json_unescape(&doc, v, val, sizeof val) < 0)
                die("%s %s: value too long", origin, key);
        } else if (toks[v].type == PX_JSON_NUMBER || toks[v].type == PX_JSON_TRUE ||
                   toks[v].type == PX_JSON_FALSE) {
            size_t n = toks[v].end - toks[v].start;
            if (n >= sizeof val)
                die("%s %s: value too long", origin, key);
            memcpy(val, text + toks[v].start, n);
            val[n] = '\0';
        } else {
            die("%s %s: expected a string, number or boolean", origin, key);
        }
        set_value(cfg, o, val, origin);
    }
}

static void load_file(px_config_t *cfg, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("--config %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size > (1 << 20)) {
        fclose(f);
        die("--config %s: not a regular file under 1 MiB", path);
    }
    size_t len = (size_t)st.st_size;
    char *text = load_ctx->text = malloc(len + 1);
    size_t got = text ? fread(text, 1, len, f) : 0;
    fclose(f);
    if (!text || got != len)
        die("--config %s: cannot read", path);
    char where[300];
    snprintf(where, sizeof where, "--config %s", path);
    load_json(cfg, text, len, where);
}

/* Run `fn` with die() jumping back here: 0, or -EINVAL with the message in err. */
static int guarded(px_config_t *cfg, int argc, char **argv, const char *json, int env, char *err,
                   size_t errlen, void (*fn)(px_config_t *, int, char **, const char *, int))
{
    static char dummy[1];
    load_ctx_t ctx = {.err = errlen ? err : dummy, .errlen = errlen ? errlen : 1};
    load_ctx_t *volatile saved = load_ctx;
    load_ctx = &ctx;
    int r = 0;
    if (setjmp(ctx.jb) == 0)
        fn(cfg, argc, argv, json, env);
    else
        r = -EINVAL;
    free(ctx.text);
    free(ctx.scratch);
    free(ctx.toks);
    load_ctx = saved;
    return r;
}

static void set_defaults(px_config_t *cfg, int argc, char **argv, const char *json, int env)
{
    PX_UNUSED(argc);
    PX_UNUSED(argv);
    PX_UNUSED(json);
    PX_UNUSED(env);
    for (size_t i = 0; i < NOPTS; i++)
        if (options[i].def)
            set_value(cfg, &options[i], options[i].def, "default");
}

px_config_t *px_config_new(void)
{
    px_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    char err[200];
    if (guarded(cfg, 0, NULL, NULL, 0, err, sizeof err, set_defaults) != 0) {
        px_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* One option as a flag: the first value of a list option replaces the loaded ones. */
static void set_flag(px_config_t *cfg, const opt_t *o, const char *val)
{
    if (o->type == T_LIST && !cfg->list_from_flags[o - options]) {
        /* The first --listen (--tls-cert, ...) flag replaces the values from
         * defaults, file or env. */
        clear_list(cfg, o);
        cfg->list_from_flags[o - options] = 1;
    }
    char oname[80];
    snprintf(oname, sizeof oname, "--%s", o->name);
    opt_t named = *o;
    named.name = oname;
    set_value(cfg, &named, val, "flag");
}

static void load_all(px_config_t *cfg, int argc, char **argv, const char *json, int use_env)
{
    /* --config first: the file is the lowest user source. */
    const char *config = use_env ? getenv("PLEXUS_CONFIG") : NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
    }
    if (json || config) {
        clear_list(cfg, find("listen", 6));
        if (json) {
            size_t len = strlen(json);
            char *text = load_ctx->text = malloc(len + 1);
            if (!text)
                die("options: out of memory");
            memcpy(text, json, len + 1);
            load_json(cfg, text, len, "options");
        } else {
            load_file(cfg, config);
            free(cfg->config_file);
            cfg->config_file = strdup(config);
        }
        if (!cfg->nlisten)
            set_value(cfg, find("listen", 6), "127.0.0.1:8080", "default");
    }

    for (size_t i = 0; use_env && i < NOPTS; i++) {
        const opt_t *o = &options[i];
        char env[80] = "PLEXUS_";
        size_t n = 7;
        for (const char *p = o->name; *p && n < sizeof env - 1; p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = '\0';
        const char *val = getenv(env);
        if (!val || strcmp(o->name, "config") == 0)
            continue;
        char origin[100];
        snprintf(origin, sizeof origin, "environment variable %s, option", env);
        if (o->type == T_LIST) {
            /* Several values: comma- or space-separated; forwarding rules hold commas
             * themselves, so they are separated by ';' (or newlines). */
            const char *sep = o->off == O(forward) ? ";\n" : ",; \n";
            clear_list(cfg, o);
            char *copy = load_ctx->scratch = strdup(val), *save = NULL;
            if (!copy)
                die("%s %s: out of memory", origin, o->name);
            for (char *t = strtok_r(copy, sep, &save); t; t = strtok_r(NULL, sep, &save))
                set_value(cfg, o, t, origin);
            free(copy);
            load_ctx->scratch = NULL;
        } else {
            set_value(cfg, o, val, origin);
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            die("unexpected argument '%s'", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_t *o = find(name, nlen);
        if (!o)
            die("unknown flag --%.*s", (int)nlen, name);
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == T_BOOL) {
            val = "true";
        } else {
            if (i + 1 >= argc)
                die("flag --%s needs a value (%s)", o->name, o->meta);
            val = argv[++i];
        }
        if (strcmp(o->name, "config") == 0)
            continue; /* loaded above */
        set_flag(cfg, o, val);
    }
    check_relations(cfg);
    check_tls(cfg);
}

int px_config_load(px_config_t *cfg, int argc, char **argv, const char *json, int env, char *err,
                   size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            px_config_usage(stdout);
            return PX_CONFIG_HELP;
        }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("plexus %s\n", PX_VERSION_STRING);
            return PX_CONFIG_VERSION;
        }
    }
    return guarded(cfg, argc, argv, json, env, err, errlen, load_all);
}

/* px_config_set's body: argv carries the name and the value. */
static void set_one(px_config_t *cfg, int argc, char **argv, const char *json, int env)
{
    PX_UNUSED(argc);
    PX_UNUSED(json);
    PX_UNUSED(env);
    const opt_t *o = find(argv[0], strlen(argv[0]));
    if (!o || strcmp(o->name, "config") == 0)
        die("unknown option %s", argv[0]);
    set_flag(cfg, o, argv[1]);
    check_relations(cfg);
}

int px_config_set(px_config_t *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    char *args[2] = {(char *)name, (char *)value};
    return guarded(cfg, 2, args, NULL, 0, err, errlen, set_one);
}

const char *px_config_get(const px_config_t *cfg, const char *name)
{
    const opt_t *o = find(name, strlen(name));
    if (!o || o->type != T_STR)
        return NULL;
    return *(char *const *)((const char *)cfg + o->off);
}

void px_config_free(px_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NOPTS; i++)
        if (options[i].type == T_LIST)
            clear_list(cfg, &options[i]);
    for (size_t i = 0; i < NOPTS; i++)
        if (options[i].type == T_STR) {
            char **p = (char **)((char *)cfg + options[i].off);
            free(*p);
            *p = NULL;
        }
    free(cfg);
}
