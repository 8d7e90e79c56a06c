/* plexus — the native protocol front-end of the hub: WebSocket at /ws, the HTTP API under
 * /api/channels and Server-Sent Events (docs/protocol.md).
 *
 *   px_native_opts_t no;
 *   px_native_opts_init(&no);
 *   no.jwt_secret = "...";
 *   px_native_routes(server, hub, &no);   // before px_hub_start
 */
#ifndef PLEXUS_NATIVE_H
#define PLEXUS_NATIVE_H

#include "plexus/http.h"
#include "plexus/hub.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_native_opts {
    const char *jwt_secret;     /**< HS256 secret for client tokens (NULL = no tokens) */
    const char *api_key;        /**< bearer key for the HTTP API (NULL = none) */
    int allow_anonymous;        /**< clients without a token may do anything */
    unsigned max_channels;      /**< subscriptions per connection (default 100) */
    unsigned publish_rate;      /**< publishes per second per connection (default 100; 0 = off) */
    unsigned subscribe_rate;    /**< subscribes + unsubscribes per second per connection
                                     (default 100; 0 = off) */
    unsigned max_inflight;      /**< requests of one connection waiting for an answer (32) */
    unsigned history_limit_max; /**< largest history `limit` (default 1000) */
    uint64_t sse_keepalive_ms;  /**< SSE comment interval (default 15 s) */
} px_native_opts_t;

PX_EXTERN void px_native_opts_init(px_native_opts_t *o);
/** Add the native protocol's routes to `s` for `hub`: GET /ws (WebSocket), and under
 * /api/channels: POST and GET {channel}/messages, GET {channel}/presence, GET
 * {channel}/events (SSE), GET /api/channels. Call before px_hub_start (it registers the
 * protocol's wire formats with the hub). The options are copied. 0 or a negative errno. */
PX_EXTERN int px_native_routes(px_server_t *s, px_hub_t *hub, const px_native_opts_t *o);

#ifdef __cplusplus
}
#endif
#endif
