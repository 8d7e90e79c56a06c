/* Internals of the hub. Two kinds of threads touch hub state, and never the same
 * object:
 *  - the hub thread (an actor with its own loop and mailbox) owns the store,
 *    the channel table (epochs, offsets, recent-history rings, per-worker
 *    subscriber counts, presence). It is the single ordering point: every
 *    publish gets its offset there, is committed (group commit), then fanned out.
 *  - each worker owns its sessions (WebSocket and SSE clients) and its local
 *    index channel -> subscriptions.
 * They talk with messages only (hub_req_t worker -> hub, hub_rep_t and
 * hub_delivery_t hub -> worker). */
#ifndef PX_HUB_INT_H
#define PX_HUB_INT_H

#include "hub/chanmap.h"
#include "hub/jwt.h"
#include "hub/store.h"
#include "plexus/hub.h"
#include "plexus/ws.h"

#define PX__CHANNEL_MAX   200
#define PX__CLIENT_ID_LEN 16
#define PX__RING_MAX      256        /* recent messages per channel kept in memory */
#define PX__PAGE_MAX      (1u << 20) /* bytes of messages per history answer or catch-up page */

enum { ORIGIN_WS = 1, ORIGIN_SSE, ORIGIN_HTTP };
enum {
    HREQ_PUBLISH = 1,
    HREQ_SUBSCRIBE,
    HREQ_UNSUBSCRIBE,
    HREQ_HISTORY,
    HREQ_PRESENCE,
    HREQ_CHANNELS,
    HREQ_PAGE /* the next catch-up page of a subscription the hub counted already */
};
enum { DELIVER_MESSAGE = 1, DELIVER_PRESENCE };

typedef struct hub_req {
    px_msg_t msg;
    struct hub_req *next; /* hub thread: publish batch */
    int type;
    unsigned worker; /* the reply goes to this worker */
    int origin_kind;
    void *origin; /* session_t (WS/SSE) or px_req_t (HTTP): never touched by the hub thread */
    void *tag;    /* the front's own reference (a subscription), passed back in the reply */
    int has_id;
    int64_t id;
    size_t channel_len;
    char channel[PX__CHANNEL_MAX + 1];
    /* subscribe */
    int has_since;
    uint64_t since_offset;
    char since_epoch[PX_STORE_EPOCH_MAX + 1];
    int presence; /* wants join/leave events */
    char client[PX__CLIENT_ID_LEN + 1];
    char *user, *info; /* malloc'd, may be NULL; presence data */
    size_t user_len, info_len;
    /* history, catch-up pages */
    size_t limit;
    size_t max_bytes;        /* encoded messages per answer (at least one message); subscribe: 0 =
                                replay nothing yet, the worker asks for pages (HREQ_PAGE) */
    int cont;                /* HTTP history: a continuation page (a fragment of the array) */
    int paced;               /* the session's paced request (echoed in the reply) */
    px_jwt_claims_t *claims; /* channel listing: filter by this token (malloc'd, may be NULL) */
    /* publish */
    char *data; /* malloc'd raw JSON */
    size_t data_len;
    uint64_t offset; /* assigned by the hub thread */
    int64_t time_ms;
} hub_req_t;

typedef struct hub_rep {
    px_msg_t msg;
    int type;
    int has_id;
    int64_t id;
    int origin_kind;
    void *origin;
    void *tag;
    int status;           /* HTTP status for HTTP origins; 0 = success for others */
    const char *err_code; /* machine code on error */
    char err_msg[160];
    size_t channel_len;
    char channel[PX__CHANNEL_MAX + 1];
    char *body; /* malloc'd JSON reply text (WS: the whole frame payload) */
    size_t body_len;
    px_slice_t **frames; /* subscribe, pages: missed messages, encoded for the origin kind */
    size_t nframes;
    int presence;
    int paced;          /* echoed from the request */
    int final;          /* subscribe, page: replay complete, the subscription is live now */
    int more;           /* history: cut at max_bytes with messages left (HTTP: array open) */
    int truncated;      /* history: messages after `since` are missing (history trimmed) */
    uint64_t page_last; /* offset of the last message in this answer (or the `since` asked) */
    size_t count;       /* messages in this answer */
} hub_rep_t;

typedef struct hub_delivery {
    px_msg_t msg;
    px_hub_t *hub;
    int kind;
    px_slice_t *ws_frame;  /* WebSocket frame, shared by every subscriber */
    px_slice_t *sse_frame; /* SSE event, NULL if the channel has no SSE subscriber */
    size_t channel_len;
    char channel[];
} hub_delivery_t;

struct px_hub {
    px_server_t *server;
    px_hub_opts_t opts;
    char *data_dir, *jwt_secret, *api_key;
    px_store_t *store;
    px_workers_t *actor; /* one worker: the hub thread */
    unsigned nworkers;
    px__chanmap_t channels;   /* hub thread only */
    struct hub_local *locals; /* per worker: that worker only */
    px_defer_t commit_defer;
    hub_req_t *batch_head, *batch_tail;
    size_t batch_len;
    px_defer_t read_defer; /* reads (history, pages, presence, listings) after commits */
    hub_req_t *rq_head, *rq_tail;
    px_timer_t trim_timer;
    int started;
};

/* hub.c (hub thread side) */
void px__hub_post(px_hub_t *h, hub_req_t *r);
/* front.c (worker side) */
void px__hub_on_reply(px_worker_t *w, px_msg_t *m);
void px__hub_on_delivery(px_worker_t *w, px_msg_t *m);
int px__hub_front_init(px_hub_t *h);
void px__hub_front_free(px_hub_t *h);
int px__channel_name_ok(const char *s, size_t len);

extern int px__m_publishes, px__m_deliveries, px__m_commit_us, px__m_commits, px__m_channels;

#endif
