/* The options' values (px_config_t of plexus/app.h): one table of options
 * (config.c) is the single place that defines every flag, its PLEXUS_<NAME>
 * environment variable, its config-file key, its default and its help text. */
#ifndef PX_CLI_CONFIG_INT_H
#define PX_CLI_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/app.h"

#define PX_CONFIG_MAX_LISTEN 16
#define PX_CONFIG_MAX_CERTS  64 /* values of the other repeatable options, each */

struct px_config {
    /* server */
    char *listen[PX_CONFIG_MAX_LISTEN];
    unsigned nlisten;
    /* Per listener, from the config file's listener objects ({"addr": ..., "tls": true}):
     * 1 or 0, or -1 for the global --tls / --tls-only (strings, flags, environment). */
    signed char listen_tls[PX_CONFIG_MAX_LISTEN];
    signed char listen_tls_only[PX_CONFIG_MAX_LISTEN];
    unsigned workers;
    unsigned max_connections;
    uint64_t idle_timeout_ms;
    uint64_t output_cap;
    uint64_t shutdown_timeout_ms;
    /* logs */
    char *log_level;
    char *log_format;
    char *log_file;
    /* http */
    char *static_dir;
    uint64_t max_body;
    uint64_t max_request_line;
    uint64_t max_header_size;
    unsigned max_headers;
    uint64_t header_timeout_ms;
    uint64_t keepalive_timeout_ms;
    unsigned max_requests;
    char *access_log;
    /* http/2 */
    int http2;
    unsigned http2_max_streams;
    uint64_t http2_window;
    uint64_t http2_max_frame_size;
    /* websocket */
    uint64_t ws_max_message;
    uint64_t ws_ping_interval_ms;
    int ws_deflate;
    char *ws_slow_policy;
    /* hub */
    char *data_dir;
    int data_dir_shared;
    char *store;
    char *broker;
    uint64_t presence_ttl_ms;
    char *durability;
    uint64_t history_size;
    uint64_t history_ttl_ms;
    char *jwt_secret;
    char *api_key;
    int allow_anonymous;
    uint64_t max_payload;
    unsigned max_channels;
    unsigned publish_rate;
    unsigned history_limit_max;
    unsigned subscribe_rate;
    unsigned max_inflight;
    /* tls */
    int tls;
    int tls_only;
    char *tls_cert[PX_CONFIG_MAX_CERTS];
    unsigned ntls_cert;
    char *tls_key[PX_CONFIG_MAX_CERTS];
    unsigned ntls_key;
    char *tls_ocsp[PX_CONFIG_MAX_CERTS];
    unsigned ntls_ocsp;
    char *tls_dir;
    uint64_t tls_ticket_rotation_ms;
    unsigned tls_session_cache;
    char *tls_ktls;
    uint64_t tls_handshake_timeout_ms;

    /* one port: sniffer, pass-through, PROXY protocol (docs/one-port.md) */
    char *forward[PX_CONFIG_MAX_CERTS];
    unsigned nforward;
    uint64_t sniff_timeout_ms;
    uint64_t sniff_max;
    char *proxy_protocol_from[PX_CONFIG_MAX_CERTS];
    unsigned nproxy_protocol_from;

    /* pusher */
    char *pusher_app[PX_CONFIG_MAX_LISTEN]; /* "ID:KEY:SECRET" */
    unsigned npusher_app;
    char *pusher_apps; /* JSON: an array of app objects (docs/pusher.md) */
    /* meta */
    char *config_file;
    /* list options already given as flags (their first flag replaces loaded values),
     * indexed like the option table */
    unsigned char list_from_flags[64];
};

/** Does listener i (cfg->listen[i]) use TLS / answer plain HTTP with a redirect? */
int px__config_listen_tls(const px_config_t *cfg, unsigned i);
int px__config_listen_tls_only(const px_config_t *cfg, unsigned i);

#endif
