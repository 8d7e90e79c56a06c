/* plexus — the hub: channels with ordered, durable history and presence, shared by every
 * front-end (the native WebSocket/HTTP/SSE protocol of plexus/native.h, and C code).
 *
 *   px_hub_t *hub = px_hub_new(px_server_workers(server), &opts, err, sizeof err);
 *   px_native_routes(server, hub, NULL);  // /ws, /api/... (plexus/native.h)
 *   px_hub_start(hub);                    // the hub thread
 *   px_server_run(server);
 *   px_hub_free(hub);                     // after the server stopped
 *
 * Threads: the hub runs its own thread (storage, ordering, fan-out). Calls marked "any
 * thread" may be made from anywhere; "worker" calls must be made on one of the workers
 * the hub was created with, and their callbacks run on that same worker. Callbacks must
 * not block. See docs/internals/hub.md. */
#ifndef PLEXUS_HUB_H
#define PLEXUS_HUB_H

#include "plexus/buf.h"
#include "plexus/worker.h"

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
    size_t max_payload;      /**< largest message data in bytes (default 64 KiB) */
    /** Where history lives: NULL or "sqlite" (one node, in data_dir), or a shared store for
     *  several nodes: "redis://HOST:PORT[/DB]", "unix:/PATH" (Redis Streams). See
     *  docs/scaling.md. */
    const char *store;
    /** Fan-out between nodes: NULL (the store's own: Redis pub/sub for a Redis store; none
     *  for SQLite) or "redis://HOST:PORT[/DB]". Only with a shared store. */
    const char *broker;
    /** Several nodes: a node refreshes its presence members in the shared backend within
     *  this time; those of a node that stopped (crashed) leave after it (default 30 s). */
    uint64_t presence_ttl_ms;
    /** SQLite: several processes of this host share data_dir and behave as one server
     *  (Passenger's processes of one app; docs/internals/processes.md). Every process of
     *  the group must set it; off, a second process on the directory refuses to start. */
    int data_dir_shared;
} px_hub_opts_t;

PX_EXTERN void px_hub_opts_init(px_hub_opts_t *o);
/** Open the store (a database that cannot be opened or fails its integrity check is an
 * error, with `err` naming the cause) and load the channels. `workers` are the threads
 * that will use the hub (a server's: px_server_workers). */
PX_EXTERN px_hub_t *px_hub_new(px_workers_t *workers, const px_hub_opts_t *o, char *err,
                               size_t errlen);
/** Start the hub thread (storage, ordering, fan-out). */
PX_EXTERN int px_hub_start(px_hub_t *h);
/** Stop the hub thread and close the store, after the workers stopped. Accepts NULL. */
PX_EXTERN void px_hub_free(px_hub_t *h);
PX_EXTERN const px_hub_opts_t *px_hub_options(const px_hub_t *h);
/** Whether the hub's backends are reachable (any thread): 0, or -ENOTCONN with a one-line
 *  reason in `why` ("store: connection refused"). A hub on SQLite is always up. */
PX_EXTERN int px_hub_health(px_hub_t *h, char *why, size_t len);

/* ---- messages ---------------------------------------------------------------------------- */

/** A committed message: immutable, reference-counted (any thread). */
typedef struct px_hub_msg px_hub_msg_t;

PX_EXTERN px_str_t px_hub_msg_channel(const px_hub_msg_t *m);
/** The event name ("" for the native protocol's plain messages). */
PX_EXTERN px_str_t px_hub_msg_event(const px_hub_msg_t *m);
/** The data as published (the native protocol: a JSON value, byte for byte). */
PX_EXTERN px_str_t px_hub_msg_data(const px_hub_msg_t *m);
PX_EXTERN uint64_t px_hub_msg_offset(const px_hub_msg_t *m);
PX_EXTERN const char *px_hub_msg_epoch(const px_hub_msg_t *m);
/** Unix time in milliseconds when the message was committed. */
PX_EXTERN int64_t px_hub_msg_time(const px_hub_msg_t *m);
/** Who published it (an id the publisher chose, e.g. its connection id; 0 = nobody). */
PX_EXTERN uint64_t px_hub_msg_publisher(const px_hub_msg_t *m);
PX_EXTERN px_hub_msg_t *px_hub_msg_ref(px_hub_msg_t *m);
PX_EXTERN void px_hub_msg_unref(px_hub_msg_t *m);

/** The hub's channel names: 1..200 bytes of A-Z a-z 0-9 _ - = @ , . ; : / (1 if valid). */
PX_EXTERN int px_hub_channel_valid(px_str_t channel);

/* ---- publish (any thread) ------------------------------------------------------------------- */

/** The outcome of a publish. status 0: `offset` is the message's, in `epoch`. Else a
 * negative errno and `error`, a machine code ("storage_error", "invalid_channel"...). */
typedef struct px_hub_ack {
    int status;
    const char *error;
    const char *epoch;
    uint64_t offset;
} px_hub_ack_t;

typedef void (*px_hub_ack_fn)(const px_hub_ack_t *ack, void *ud);

/**
 * Publish `data` on `channel` (copied). Acknowledged only once committed to the store:
 * `cb` (may be NULL) runs then, on the calling worker if called on one of the hub's
 * workers, otherwise on the hub thread (keep it short and thread-safe). -EINVAL for a bad
 * channel name, -EMSGSIZE over max_payload, -ENOMEM; nothing is published then and `cb`
 * is not called.
 */
PX_EXTERN int px_hub_publish(px_hub_t *h, px_str_t channel, px_str_t event, px_str_t data,
                             uint64_t publisher, px_hub_ack_fn cb, void *ud);

/* ---- subscribe a C callback (worker) ------------------------------------------------------------
 */

typedef struct px_hub_sub px_hub_sub_t;

typedef struct px_hub_sub_cbs {
    /** The subscription took effect (status 0; `epoch`/`offset`: the channel's position
     * then) or failed (a negative errno; no other callback follows). */
    void (*on_subscribed)(px_hub_sub_t *s, int status, const char *epoch, uint64_t offset,
                          void *ud);
    /** A message, in offset order. */
    void (*on_message)(px_hub_sub_t *s, const px_hub_msg_t *m, void *ud);
} px_hub_sub_cbs_t;

/** Subscribe on the calling worker; callbacks run there until px_hub_unsubscribe. NULL on
 * a bad channel name or no memory. */
PX_EXTERN px_hub_sub_t *px_hub_subscribe(px_hub_t *h, px_str_t channel, const px_hub_sub_cbs_t *cbs,
                                         void *ud);
/** Stop (on the subscription's worker); no callback runs after this returns. */
PX_EXTERN void px_hub_unsubscribe(px_hub_sub_t *s);

/* ---- queries (worker) --------------------------------------------------------------------------
 */

/** A history answer: messages after `since`, in order. truncated: history no longer
 * reaches back to `since`; more: the answer was cut at its byte bound (ask again from the
 * last offset). The messages are valid during the callback (px_hub_msg_ref to keep one). */
typedef struct px_hub_history {
    int status; /* 0 or a negative errno */
    const char *epoch;
    uint64_t offset; /* the channel's latest offset */
    const px_hub_msg_t *const *msgs;
    size_t count;
    int truncated, more;
} px_hub_history_t;

/** Read history on the calling worker: at most `limit` messages after `since`; `cb` runs
 * there. 0 or a negative errno (then no callback). */
PX_EXTERN int px_hub_history(px_hub_t *h, px_str_t channel, uint64_t since, size_t limit,
                             void (*cb)(const px_hub_history_t *r, void *ud), void *ud);

/** A presence answer: who is subscribed and listed (WebSocket clients of the native
 * protocol, and every front-end that lists its clients). */
typedef struct px_hub_member {
    const char *client;
    px_str_t user, info;
} px_hub_member_t;

typedef struct px_hub_presence {
    int status;
    unsigned subscribers; /* every subscription, listed or not */
    const px_hub_member_t *members;
    size_t count;
} px_hub_presence_t;

PX_EXTERN int px_hub_presence(px_hub_t *h, px_str_t channel,
                              void (*cb)(const px_hub_presence_t *r, void *ud), void *ud);

#ifdef __cplusplus
}
#endif
#endif
