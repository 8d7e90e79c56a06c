/* plexus — the Pusher Channels protocol (v7) front-end of the hub: pusher-js, Laravel Echo
 * and the `pusher` server SDKs work unmodified (docs/pusher.md).
 *
 *   px_pusher_app_t app;
 *   px_pusher_app_init(&app);
 *   app.id = "1"; app.key = "app-key"; app.secret = "app-secret";
 *   px_pusher_routes(server, hub, &app, 1);   // before px_hub_start
 *
 * Routes: GET /app/{key} (WebSocket), POST /pusher/app/{key}/{server}/{session}/xhr_streaming,
 * /xhr and /xhr_send (pusher-js's HTTP fallback transports), and the HTTP API under
 * /apps/{id}/ (events, batch_events, channels, channels/{name}, channels/{name}/users,
 * users/{id}/terminate_connections). Every Pusher channel is a hub channel: the native
 * protocol, SSE and the C API see the same messages. */
#ifndef PLEXUS_PUSHER_H
#define PLEXUS_PUSHER_H

#include "plexus/http.h"
#include "plexus/hub.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Webhook events (px_pusher_webhook_t.events, a bit mask). */
enum {
    PX_PUSHER_HOOK_CHANNEL_OCCUPIED = 1u << 0,
    PX_PUSHER_HOOK_CHANNEL_VACATED = 1u << 1,
    PX_PUSHER_HOOK_MEMBER_ADDED = 1u << 2,
    PX_PUSHER_HOOK_MEMBER_REMOVED = 1u << 3,
    PX_PUSHER_HOOK_CLIENT_EVENT = 1u << 4,
    PX_PUSHER_HOOK_CACHE_MISS = 1u << 5,
    PX_PUSHER_HOOK_ALL = 0x3f,
};

typedef struct px_pusher_webhook {
    const char *url;            /**< http:// or https:// */
    unsigned events;            /**< PX_PUSHER_HOOK_* (0 = all) */
    const char *channel_prefix; /**< only channels starting with this (NULL = any) */
    const char *channel_suffix; /**< only channels ending with this (NULL = any) */
} px_pusher_webhook_t;

/** One app: credentials and per-app options (defaults from px_pusher_app_init). */
typedef struct px_pusher_app {
    const char *id, *key, *secret;        /**< required */
    int enabled;                          /**< 0: connections get 4003, the API 403 (default 1) */
    int client_events;                    /**< client-* events on private/presence channels (1) */
    int user_authentication;              /**< connections must pusher:signin (0) */
    uint64_t user_auth_timeout_ms;        /**< ... within this time, else 4009 (30 s) */
    const char *const *allowed_origins;   /**< NULL-terminated; NULL = any origin */
    unsigned max_connections;             /**< 0 = no limit; over it: 4004 */
    unsigned activity_timeout_s;          /**< sent in connection_established (30) */
    unsigned max_client_events_per_s;     /**< per connection (10); over it: 4301 */
    unsigned max_backend_events_per_s;    /**< HTTP API events per second (0 = no limit); 429 */
    size_t max_event_payload;             /**< bytes of an event's data (100 KiB) */
    unsigned max_event_channels;          /**< channels of one event (100) */
    unsigned max_event_batch;             /**< events of one batch (10) */
    unsigned max_presence_members;        /**< users per presence channel (100) */
    size_t max_presence_member_size;      /**< bytes of a member's user_info (2 KiB) */
    unsigned max_channel_name_length;     /**< (200) */
    unsigned max_event_name_length;       /**< (200) */
    unsigned max_channels_per_connection; /**< subscriptions of one connection (100) */
    uint64_t cache_ttl_ms;                /**< how long a cache channel's event counts (30 min) */
    /** Hub channels of this app are this prefix + the Pusher name (docs/pusher.md). NULL:
     * "" for the first app, "{id}:" for the others. Non-empty prefixes end with ':'. */
    const char *channel_prefix;
    const px_pusher_webhook_t *webhooks;
    size_t nwebhooks;
    unsigned webhook_queue_max; /**< events queued per webhook; the oldest go first (10000) */
} px_pusher_app_t;

PX_EXTERN void px_pusher_app_init(px_pusher_app_t *a);

/** Apps parsed from text (a flag "ID:KEY:SECRET", or a JSON array of app objects, see
 * docs/pusher.md): a list that owns its strings. */
typedef struct px_pusher_apps px_pusher_apps_t;
PX_EXTERN px_pusher_apps_t *px_pusher_apps_new(void);
PX_EXTERN void px_pusher_apps_free(px_pusher_apps_t *l);
/** Add "ID:KEY:SECRET". 0, or -EINVAL with `err` naming the problem. */
PX_EXTERN int px_pusher_apps_add_flag(px_pusher_apps_t *l, const char *spec, char *err,
                                      size_t errlen);
/** Add every app of a JSON array of objects. 0, or -EINVAL with `err` naming the app and the
 * key ("app 2: \"max-connections\": expected a non-negative integer"). */
PX_EXTERN int px_pusher_apps_add_json(px_pusher_apps_t *l, const char *json, size_t len, char *err,
                                      size_t errlen);
PX_EXTERN size_t px_pusher_apps_count(const px_pusher_apps_t *l);
PX_EXTERN const px_pusher_app_t *px_pusher_apps_get(const px_pusher_apps_t *l);

/** Check apps as px_pusher_routes would: 0, or -EINVAL with `err` naming the app and the
 * problem (a missing field, a bad prefix or webhook URL, two apps with the same id, key or
 * prefix). */
PX_EXTERN int px_pusher_apps_validate(const px_pusher_app_t *apps, size_t napps, char *err,
                                      size_t errlen);
/** Add the Pusher routes for `apps` (copied) to `s` and `hub`. Call before px_hub_start (it
 * registers the protocol's wire format and observers with the hub). 0, -EINVAL with a log
 * line (no app, a duplicate id or key, a bad prefix or webhook URL), -ENOMEM. */
PX_EXTERN int px_pusher_routes(px_server_t *s, px_hub_t *hub, const px_pusher_app_t *apps,
                               size_t napps);

#ifdef __cplusplus
}
#endif
#endif
