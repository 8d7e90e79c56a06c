/* plexus — the hub: channels, history, presence and auth over WebSocket (/ws),
 * HTTP (/api/...) and Server-Sent Events. See docs/protocol.md.
 *
 *   px_hub_t *hub = px_hub_new(server, &opts, err, sizeof err);  // opens the store, adds routes
 *   px_hub_start(hub);          // the hub thread
 *   px_server_run(server);
 *   px_hub_free(hub);           // after the server stopped */
#ifndef PLEXUS_HUB_H
#define PLEXUS_HUB_H

#include "plexus/http.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_hub px_hub_t;

enum { PX_HUB_DURABILITY_NORMAL = 0, PX_HUB_DURABILITY_FULL = 1 };

typedef struct px_hub_opts {
    const char *data_dir;    /**< SQLite database directory (default "./var") */
    int durability;          /**< NORMAL: survives kill -9; FULL: fsync before every ack */
    uint64_t history_size;   /**< messages kept per channel (default 1000; 0 = unlimited) */
    uint64_t history_ttl_ms; /**< drop older messages (default 0 = forever) */
    const char *jwt_secret;  /**< HS256 secret for client tokens (NULL = no tokens) */
    const char *api_key;     /**< bearer key for the HTTP API (NULL = none) */
    int allow_anonymous;     /**< clients without a token may do anything */
    size_t max_payload;      /**< largest message data in bytes (default 64 KiB) */
    unsigned max_channels;   /**< subscriptions per connection (default 100) */
    unsigned publish_rate;   /**< publishes per second per connection (default 100; 0 = no limit) */
    unsigned subscribe_rate; /**< subscribes + unsubscribes per second per connection (default
                                  100; 0 = no limit) */
    unsigned max_inflight;   /**< requests of one connection waiting for the hub (default 32) */
    unsigned history_limit_max; /**< largest history `limit` (default 1000) */
    uint64_t sse_keepalive_ms;  /**< SSE comment interval (default 15 s) */
} px_hub_opts_t;

PX_EXTERN void px_hub_opts_init(px_hub_opts_t *o);
/** Open the store (a database that cannot be opened or fails its integrity check
 * is an error, with `err` naming the cause), load channels, and add the hub's
 * routes to `s`: /ws, /api/channels..., /metrics. */
PX_EXTERN px_hub_t *px_hub_new(px_server_t *s, const px_hub_opts_t *o, char *err, size_t errlen);
/** Start the hub thread (storage, ordering, fan-out). */
PX_EXTERN int px_hub_start(px_hub_t *h);
/** Stop the hub thread and close the store, after the server's workers stopped.
 * Accepts NULL. */
PX_EXTERN void px_hub_free(px_hub_t *h);

#ifdef __cplusplus
}
#endif
#endif
