/* The hub core as front-ends (src/front/) see it: messages, wire formats, requests and
 * clients. Internal to the library (not installed); the hub's own state is in hub_int.h.
 *
 * Two kinds of threads touch hub state, never the same object:
 *  - the hub thread (an actor: its own loop and mailbox) owns the store and the channel
 *    table: epochs, offsets, recent messages, per-worker and per-format subscription
 *    counts, presence. It is the ordering point: every publish is committed (group
 *    commit), then fanned out, then acknowledged.
 *  - each worker owns its clients (connections of a front-end), their subscriptions and
 *    its local index channel -> subscriptions.
 * They talk with messages only: a request (px__hreq_t) travels worker -> hub thread ->
 * worker, carrying its answer back; deliveries (px__delivery_t) go hub -> workers.
 *
 * The core knows no wire format. A front-end registers formats (px__hformat_t): the hub
 * thread asks each format that has subscribers on a channel to encode a message once, and
 * every subscription of that format on every worker shares the bytes. Everything else a
 * front needs (replies, errors, presence lists) comes back neutral and the front encodes
 * it on its worker. See docs/internals/hub.md. */
#ifndef PX_HUB_FRONTEND_H
#define PX_HUB_FRONTEND_H

#include "core/arena.h"
#include <stdatomic.h>

#include "hub/broker.h"
#include "util/hashmap.h"
#include "hub/store.h"
#include "plexus/hub.h"

#define PX__RING_MAX    256        /* recent messages per channel kept in memory */
#define PX__PAGE_MAX    (1u << 20) /* bytes of messages per history answer or catch-up page */
#define PX__FORMATS_MAX 6          /* wire formats registered by front-ends */
#define PX__NO_WORKER   (~0u)      /* a request answered on the hub thread */

/** The channel-name alphabet of the hub: 1..200 bytes of A-Z a-z 0-9 _ - = @ , . ; : / */
int px__channel_name_ok(const char *s, size_t len);

/* ---- messages ------------------------------------------------------------------------------ */

/* Immutable once committed, shared by reference by every worker and every front. */
struct px_hub_msg {
    _Atomic uint32_t refs;
    uint16_t channel_len;
    uint16_t event_len;
    uint32_t data_len;
    uint16_t user_len; /* the publisher's user id (memory only: not stored; "" from history) */
    uint64_t offset;   /* assigned by the store at commit */
    int64_t time_ms;   /* unix ms at commit */
    uint64_t publisher;
    char epoch[PX__EPOCH_MAX + 1];
    px_slice_t *enc[PX__FORMATS_MAX]; /* encodings; hub thread only (a cache for replays) */
    char bytes[];                     /* channel, event, data, user: each followed by a NUL */
};

px_hub_msg_t *px__hub_msg_new(px_str_t channel, px_str_t event, px_str_t data, uint64_t publisher);
/** The same with the publisher's user id (<= PX__USER_MAX bytes; e.g. a Pusher presence
 * member's user_id for client events). Kept in memory with the message, not stored. */
px_hub_msg_t *px__hub_msg_new_user(px_str_t channel, px_str_t event, px_str_t data,
                                   uint64_t publisher, px_str_t user);
static inline const char *px__msg_channel(const px_hub_msg_t *m)
{
    return m->bytes;
}
static inline const char *px__msg_event(const px_hub_msg_t *m)
{
    return m->bytes + m->channel_len + 1;
}
static inline const char *px__msg_data(const px_hub_msg_t *m)
{
    return m->bytes + m->channel_len + 1 + m->event_len + 1;
}
static inline const char *px__msg_user(const px_hub_msg_t *m)
{
    return px__msg_data(m) + m->data_len + 1;
}

/* ---- presence -------------------------------------------------------------------------------- */

typedef struct px__presence {
    char client[PX__CLIENT_ID_LEN + 1];
    px_str_t user, info; /* user: a name; info: raw JSON; {NULL, 0} when absent */
} px__presence_t;

enum { PX__JOIN = 1, PX__LEAVE };

/* Presence is kept per client (one entry per listed subscription) and counted per user:
 * several connections of one user (tabs, devices, workers) are one member for fronts that
 * show users. An entry without a user is a member of its own. */
typedef struct px__presence_ev {
    int op; /* PX__JOIN or PX__LEAVE */
    px_str_t channel;
    const px__presence_t *who;
    /* JOIN: no other entry of this user was listed (the user arrives); LEAVE: no entry of
     * this user is left (the user is gone). Always 1 for an entry without a user. */
    unsigned user_first : 1, user_last : 1;
} px__presence_ev_t;

/* Watching the channel table from the hub thread (e.g. a front's webhooks). Calls are made
 * on the hub thread, in order, and must be short and must not block: post the work to a
 * worker. */
typedef struct px__hobserver {
    /** A channel got its first subscription (occupied 1) or lost its last (0), counting
     * every front's subscriptions. */
    void (*occupied)(void *ctx, px_str_t channel, int occupied);
    /** A user arrived (PX__JOIN, user_first) or is gone (PX__LEAVE, user_last) in the
     * presence of a channel. */
    void (*presence)(void *ctx, px_str_t channel, int op, const px__presence_t *who);
    void *ctx;
} px__hobserver_t;

#define PX__OBSERVERS_MAX 4
/** Add an observer (before px_hub_start). 0, -ENOSPC or -EBUSY. It must outlive the hub. */
int px__hub_add_observer(px_hub_t *h, const px__hobserver_t *o);

/* ---- formats --------------------------------------------------------------------------------- */

typedef struct px__hsub px__hsub_t;

/* GAP: the channel's history restarted (a shared store lost it: a new epoch); `frame` is
 * the format's encode_gap and `item` a px__presence_ev_t with only the channel set. */
enum { PX__DELIVER_MESSAGE = 1, PX__DELIVER_PRESENCE, PX__DELIVER_GAP };

/* A wire format of a front-end. encode* run on the hub thread (once per message and format
 * with subscribers); deliver runs on a worker for the list of its subscriptions of this
 * format in one channel (linked by `next`; presence events go only to those with
 * `presence`), with `frame` and `item`, the px_hub_msg_t or px__presence_ev_t. `frame` is
 * NULL when the format has no encoder, or when its encoder failed (out of memory): the
 * subscribers then miss that item, and the format must tell them (e.g. close the connection
 * so that the client recovers), never drop it silently. It returns how many it delivered
 * (a metric). A subscription may be dropped while the list is walked: read `next` first. */
typedef struct px__hformat {
    const char *name;
    px_slice_t *(*encode)(const px_hub_msg_t *m, void *ctx);
    px_slice_t *(*encode_presence)(const px__presence_ev_t *e, void *ctx);
    /* The catch-up of a subscription found history trimmed past it: from here on live. */
    px_slice_t *(*encode_gap)(px_str_t channel, const char *epoch, uint64_t offset, void *ctx);
    size_t (*deliver)(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);
    void *ctx;
    /* Encode a gap also when the subscribe itself finds one (a format whose subscribe has
     * no answer of its own to say recovered:false, like SSE). */
    int gap_on_subscribe;
} px__hformat_t;

/** Register a format (before px_hub_start). Returns its id (0..PX__FORMATS_MAX-1) or
 * -ENOSPC. The table must outlive the hub. */
int px__hub_add_format(px_hub_t *h, const px__hformat_t *f);

/* ---- requests ---------------------------------------------------------------------------------
 */

enum {
    PX__HREQ_PUBLISH = 1,
    PX__HREQ_SUBSCRIBE,
    PX__HREQ_UNSUBSCRIBE,
    PX__HREQ_HISTORY,
    PX__HREQ_PAGE, /* the next catch-up page of a subscription the hub counted already */
    PX__HREQ_PRESENCE,
    PX__HREQ_CHANNELS,
};

typedef struct px__hreq px__hreq_t;

typedef struct px__chaninfo {
    char name[PX__CHANNEL_MAX + 1];
    size_t name_len;
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t offset;
    unsigned subscribers, presence;
    unsigned users; /* distinct users in presence */
} px__chaninfo_t;

/* One object for a request and its answer: filled by the origin, answered by the hub
 * thread, then handed to `done` on the origin's worker (or on the hub thread when
 * worker == PX__NO_WORKER), which frees it (px__hreq_free). */
struct px__hreq {
    px_msg_t msg;
    px__hreq_t *next; /* queues: the hub's batch and read queue, a client's paced queue */
    px_hub_t *hub;
    uint8_t type;
    uint8_t format;  /* subscribe, page: the subscription's format */
    unsigned worker; /* where the answer goes */
    void (*done)(px__hreq_t *r);
    px_hub_ack_fn ack; /* the public API's callbacks (the origin's) */
    void (*history_cb)(const px_hub_history_t *, void *);
    void (*presence_cb)(const px_hub_presence_t *, void *);
    void *ud;   /* the origin's: never touched by the hub thread */
    void *tag;  /* the origin's: never touched by the hub thread */
    int has_id; /* the origin's request id (a front's): never touched by the hub thread */
    int64_t id;
    unsigned paced : 1;
    unsigned has_since : 1;
    unsigned presence : 1;    /* subscribe: wants join/leave events */
    unsigned in_presence : 1; /* subscribe/unsubscribe: the client is listed in presence */
    unsigned final : 1;       /* answer (subscribe, page): the replay is complete, live from now */
    unsigned more : 1;        /* answer (history): cut at max_bytes, messages left */
    unsigned truncated : 1;   /* answer (history): messages after `since` are missing */
    unsigned want_list : 1;   /* subscribe: the answer lists the members (pres, one per user) */
    unsigned want_last : 1; /* subscribe, presence: the answer carries the latest message (msgs) */
    unsigned by_user : 1;   /* presence: one entry per user (the earliest listed) */

    size_t channel_len;
    char channel[PX__CHANNEL_MAX + 1];
    uint64_t since_offset;
    char since_epoch[PX__EPOCH_MAX + 1];
    size_t limit;          /* history: messages (0 = none asked) */
    size_t max_bytes;      /* history, pages: encoded bytes per answer (at least one message);
                              subscribe: 0 = replay nothing now, the origin asks for pages */
    unsigned presence_max; /* subscribe with in_presence: refuse a new user when the channel
                              has this many users already (0 = no bound) */
    px__presence_t who;    /* subscribe/unsubscribe with in_presence; user/info malloc'd */
    px_hub_msg_t *m;       /* publish: the message (offset, time, epoch set at commit) */

    /* answer */
    int status;           /* 0 ok; else an HTTP-like status (400, 500, 503) */
    const char *err_code; /* machine code on error */
    char err_msg[160];
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t offset;     /* the channel's offset (subscribe, history, listing) */
    int recovered;       /* subscribe with since: 1 or 0; -1 without */
    uint64_t page_last;  /* offset of the last message in this answer (or the since asked) */
    px_hub_msg_t **msgs; /* history, pages: the messages, in order (references) */
    size_t nmsgs;
    px_slice_t **frames; /* subscribe, page: the same messages encoded in `format`, or a gap */
    size_t nframes;
    px__presence_t *pres; /* presence: the members (strings point into `arena`) */
    size_t npres;
    unsigned subscribers;
    unsigned users; /* presence, subscribe: distinct users listed in the channel's presence */
    px__chaninfo_t *chans; /* listing */
    size_t nchans;
    px__arena_t arena;      /* answer storage */
    struct px__hview *view; /* hub thread: a store read made for this request (shared
                             * stores), consumed when the request runs again */
};

px__hreq_t *px__hreq_new(px_hub_t *h, int type, const char *channel, size_t len);
void px__hreq_free(px__hreq_t *r);
/** Send a request to the hub thread (any thread). */
void px__hub_post(px_hub_t *h, px__hreq_t *r);

/* ---- clients (worker side) ----------------------------------------------------------------------
 */

typedef struct px__hclient px__hclient_t;

/* What a front implements for its clients (one static table per front). Every callback
 * runs on the client's worker. */
typedef struct px__hclient_ops {
    /** Bytes queued on the client's connection: replays are paced by it. */
    size_t (*output)(px__hclient_t *c);
    /** Queue an encoded frame of a replay. < 0: the client cannot take it (gone). */
    int (*write)(px__hclient_t *c, px__hsub_t *s, px_slice_t *frame);
    /** A replayed message for a format without an encoder. */
    void (*message)(px__hclient_t *c, px__hsub_t *s, const px_hub_msg_t *m);
    /** The answer to a subscribe (r->status 0: subscribed, then replayed messages follow). A
     *  subscription cancelled meanwhile (s->cancelled) is forgotten right after this returns. */
    void (*subscribed)(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r);
    /** The answer to any other request of the client (publish, history, presence, ...). */
    void (*answer)(px__hclient_t *c, px__hreq_t *r);
    /** A catch-up page could not be read: the subscription is over (dropped after this). */
    void (*ended)(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r);
    /** The client is closed and nothing refers to it any more: free the embedding object. */
    void (*release)(px__hclient_t *c);
} px__hclient_ops_t;

/* A connection of a front, as the hub sees it: embedded in the front's session. */
struct px__hclient {
    const px__hclient_ops_t *ops;
    px_hub_t *hub;
    unsigned worker;
    px__hsub_t *subs;
    unsigned nsubs;
    unsigned pending; /* requests at the hub thread: the client lives until they return */
    unsigned closed : 1;
    unsigned paced : 2;            /* PX__PACED_*: the paced request in progress */
    px__hreq_t *pq_head, *pq_tail; /* paced requests waiting for their turn */
    unsigned npq;
    unsigned npages;       /* replay pages queued or at the hub: the server's, not the client's */
    px__hsub_t *paced_sub; /* the subscription whose page is at the hub (NULL once dropped) */
    size_t page_bytes;     /* bytes per replay page for this client */
};

enum { PX__PACED_IDLE, PX__PACED_AT_HUB, PX__PACED_DRAINING };

typedef struct px__lchan px__lchan_t;

/* A subscription of a client. Allocated by px__hclient_subscribe with `extra` bytes for
 * the front (px__hsub_extra). */
struct px__hsub {
    px__hclient_t *client;
    px__hsub_t *prev, *next; /* in the local channel's list for its format, while active */
    px__hsub_t *cnext;       /* in the client's list */
    px__lchan_t *lc;         /* while active */
    uint8_t format;
    uint8_t mark;          /* the front's, for its delivery path: next to the links, unlike extra */
    unsigned presence : 1; /* wants join/leave events */
    unsigned active : 1;   /* deliveries reach it */
    unsigned catching_up : 1; /* the hub counted it; replay pages go out before it is active */
    unsigned cancelled : 1;   /* unsubscribed while the subscribe was at the hub */
    uint64_t cursor;          /* catching up: offset of the last message replayed */
    char who_client[PX__CLIENT_ID_LEN + 1]; /* listed in presence as this client, or "" */
    size_t name_len;
    char *name;          /* NUL-terminated, in the same allocation, after extra: a
                            subscription holds its name's bytes, not PX__CHANNEL_MAX */
    max_align_t extra[]; /* the front's */
};

static inline void *px__hsub_extra(px__hsub_t *s)
{
    return s->extra;
}

typedef struct px__subopts {
    int has_since;
    uint64_t since_offset;
    const char *since_epoch;   /* NULL or "" = any */
    int presence;              /* join/leave events wanted */
    const px__presence_t *who; /* list the client in presence (copied), or NULL */
    int want_list;             /* the answer lists the members, one per user (r->pres) */
    int want_last;             /* the answer carries the latest message (r->msgs; replayed
                                  through ops->message after ops->subscribed) */
    unsigned presence_max;     /* with `who`: refuse a new user past this many (0 = none) */
} px__subopts_t;

void px__hclient_init(px__hclient_t *c, px_hub_t *h, unsigned worker, const px__hclient_ops_t *ops);
/** The client's subscription to `name` (active, catching up or waiting for the hub). */
px__hsub_t *px__hclient_find(px__hclient_t *c, const char *name, size_t len);
/** Subscribe; the answer comes through ops->subscribed. NULL on -ENOMEM. */
px__hsub_t *px__hclient_subscribe(px__hclient_t *c, const char *name, size_t len, int format,
                                  const px__subopts_t *o, size_t extra);
/** Unsubscribe `s`: returns 1 if done (s is freed), 0 if its subscribe is still at the hub
 * (s->cancelled is set; ops->subscribed answers it, then it is freed). */
int px__hclient_unsubscribe(px__hclient_t *c, px__hsub_t *s);
/** Send a request answered through ops->answer. `paced`: one at a time, after the output
 * drained (long answers: history). */
void px__hclient_request(px__hclient_t *c, px__hreq_t *r, int paced);
/** Requests of the client waiting for an answer (at the hub or queued); replay pages,
 * which the server asks for on the client's behalf, do not count. */
unsigned px__hclient_inflight(const px__hclient_t *c);
/** The connection's output has been written out: the next paced request may go. */
void px__hclient_drained(px__hclient_t *c);
/** The connection is gone: drop every subscription. ops->release runs once nothing
 * refers to the client (maybe at once). */
void px__hclient_close(px__hclient_t *c);

#endif
