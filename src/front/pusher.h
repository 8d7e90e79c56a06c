/* Internals of the Pusher protocol front-end (pusher*.c, docs/pusher.md). A client of the hub
 * core like any front: sessions embed a px__hclient_t, one wire format is registered with
 * the hub, observers feed the webhooks.
 *
 *   pusher.c        set-up, apps, the channel mapping, socket ids, signatures, per-worker state
 *   pusher_conf.c   apps from flags and from the config file's JSON
 *   pusher_proto.c  the pure parsers (client messages, the signed query)
 *   pusher_enc.c    the wire format (hub thread) and the JSON the sessions send
 *   pusher_sess.c   a connection's protocol, whatever carries it (subscribe, client events,
 *                   sign-in, presence, cache, keep-alive)
 *   pusher_ws.c     WebSocket transport: /app/{key}
 *   pusher_xhr.c    pusher-js's HTTP fallback: xhr_streaming, xhr (polling), xhr_send
 *   pusher_http.c   the HTTP API under /apps/{id}/
 *   pusher_hooks.c  webhooks (on worker 0, over px_fetch) */
#ifndef PX_FRONT_PUSHER_H
#define PX_FRONT_PUSHER_H

#include <pthread.h>
#include <stdatomic.h>

#include "front/pusher_proto.h"
#include "hub/frontend.h"
#include "plexus/fetch.h"
#include "plexus/json.h"
#include "plexus/pusher.h"
#include "plexus/ws.h"

typedef struct px__pusher px__pusher_t;
typedef struct papp papp_t;
typedef struct psess psess_t;
typedef struct xsess xsess_t;
typedef struct phooks phooks_t;

#define PUSHER_PONG_TIMEOUT_MS 30000
#define PUSHER_EVENT_NATIVE    "message" /* the event name of a message without one */
#define PUSHER_WATCHLIST_MAX   100

/* An app: its options with owned strings, and what the front derives from them. */
struct papp {
    px_pusher_app_t o;
    unsigned index;
    size_t prefix_len;
    atomic_uint nconns;   /* open connections, every worker */
    unsigned hook_events; /* union of its webhooks' events */
};

typedef struct pbucket {
    double tokens; /* a token-bucket rate limiter */
    uint64_t ms;
} pbucket_t;

int px__pusher_rate_ok(pbucket_t *b, unsigned rate);
void px__pusher_bucket_init(pbucket_t *b, unsigned rate);

/* ---- sessions (pusher_sess.c) ---------------------------------------------------------------- */

enum { PS_WS = 1, PS_XHR };

/* One Pusher connection, whatever carries it. Lives on the worker of its hub client. The
 * fields a delivery reads come first (one cache line, next to nothing else it touches). */
struct psess {
    px_ws_t *ws;          /* PS_WS while open */
    uint64_t sid;         /* socket_id as a number: the publisher id of its messages */
    uint8_t kind;         /* PS_WS or PS_XHR */
    unsigned closing : 1; /* closed by us or the peer: nothing more is taken or sent */
    unsigned ping_sent : 1;
    xsess_t *xs; /* PS_XHR: the session (a reference) */
    px__hclient_t hc;
    px__pusher_t *p;
    papp_t *app;
    uint64_t last_in;         /* px_now_ms() of the last message received */
    uint64_t ping_at;         /* when our pusher:ping went out (ping_sent) */
    uint64_t signin_deadline; /* px_now_ms(); 0 = none */
    px_timer_t timer;         /* keep-alive and the sign-in deadline */
    pbucket_t events;         /* client events */
    char *user;               /* signed in as (malloc'd), or NULL */
    size_t user_len;
    psess_t *prev, *next; /* the worker's sessions */
};

/** Its client id in presence (16 hex digits of the socket id). */
void px__pusher_client_id(const psess_t *ps, char out[PX__CLIENT_ID_LEN + 1]);

/* px__hsub_t.mark of a Pusher subscription: messages reach it (the client was told it is
 * subscribed; a watch or a hidden user channel never). */
#define PSUB_DELIVER 1u

/* A subscription's Pusher state (px__hsub_extra), then the presence member's user id. */
enum { PT_PUBLIC = 1, PT_PRIVATE, PT_ENCRYPTED, PT_PRESENCE, PT_USER, PT_WATCH };

typedef struct psub {
    uint8_t type;              /* PT_* */
    unsigned cache : 1;        /* a cache- channel */
    unsigned client_asked : 1; /* the client subscribed (PT_USER: made at sign-in) */
    unsigned answered : 1;     /* the hub answered */
    unsigned visible : 1;      /* succeeded was sent: deliveries reach the client */
    unsigned unsub : 1;        /* unsubscribed while the subscribe was at the hub */
    size_t user_len;           /* PT_PRESENCE: the member's user id follows */
    char user[];
} psub_t;

psess_t *px__pusher_sess_new(px__pusher_t *p, papp_t *app, int kind, unsigned worker);
/** Send connection_established and arm the timers. */
void px__pusher_sess_start(psess_t *ps);
/** A message from the client (one text frame, one xhr_send element). */
void px__pusher_sess_input(psess_t *ps, const char *data, size_t len);
/** The transport is gone: drop everything (ps is freed once the hub let it go). */
void px__pusher_sess_gone(psess_t *ps);
/** Send pusher:error with `code` (0: null) and close the connection with it (code >= 4000). */
void px__pusher_sess_fail(psess_t *ps, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Send a text message (one Pusher event as JSON). */
void px__pusher_sess_send(psess_t *ps, const char *json, size_t len);
void px__pusher_sess_error(psess_t *ps, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Close with a code (4200 at shutdown, 4009 when terminated) after a pusher:error. */
void px__pusher_sess_close(psess_t *ps, int code, const char *reason);
/** The session's socket_id ("A.B"). */
int px__pusher_socket_id(uint64_t sid, char *out, size_t n);
extern const px__hclient_ops_t px__pusher_client_ops;
size_t px__pusher_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);

/* ---- the wire format (pusher_enc.c) --------------------------------------------------------- */

/** Fill p->format (its ctx is the front). */
void px__pusher_format_init(px__pusher_t *p);
/** The JSON of a message as a Pusher event (growable writer; any thread). */
int px__pusher_put_message(px__pusher_t *p, px_json_writer_t *w, const px_hub_msg_t *m);
/** The Pusher name of hub channel `h` for `app` ("#server-to-user-1" for its ":server-to-user-1"),
 * into out; its length, or 0 if `h` is not one of the app's channels. */
size_t px__pusher_name_of(const papp_t *app, const char *h, size_t hl, char *out);
/** The app a hub channel belongs to (and its Pusher name), or NULL. */
papp_t *px__pusher_app_of_channel(px__pusher_t *p, const char *h, size_t hl, char *name,
                                  size_t *name_len);
/** The hub name of Pusher channel `name` in `app`; its length, 0 if too long. */
size_t px__pusher_hub_name(const papp_t *app, const char *name, size_t len,
                           char out[PX__CHANNEL_MAX + 1]);
/** The payload of a WebSocket frame made by px_ws_frame_new (server frames: unmasked). */
px_str_t px__pusher_frame_payload(const px_slice_t *frame);

/* ---- per worker, the front --------------------------------------------------------------------
 */

typedef struct xrecv xrecv_t;

typedef struct plocal {
    psess_t *sessions;  /* every session of the front on this worker */
    xrecv_t *recvs;     /* xhr receive requests held on this worker */
    pbucket_t *backend; /* per app: HTTP API events (--max-backend-events-per-s / workers) */
    char *scratch;      /* message parsing (grown on demand) */
    size_t scratch_len;
} plocal_t;

struct px__pusher {
    px_server_t *server;
    px_hub_t *hub;
    papp_t *apps;
    size_t napps;
    px__hformat_t format; /* registered with the hub (it outlives the hub: freed with the server) */
    int fmt;              /* its id at the hub */
    unsigned nworkers;
    plocal_t *locals;
    uint32_t sid_hi; /* random per process: socket ids are unique across restarts */
    atomic_uint sid_lo;
    /* xhr sessions, shared by every worker (pusher_xhr.c) */
    pthread_mutex_t xmu;
    px__hashmap_t xsessions;
    /* webhooks (pusher_hooks.c) */
    phooks_t *hooks;
    unsigned hook_events; /* union over every app */
};

papp_t *px__pusher_app_by_key(px__pusher_t *p, const char *key, size_t len);
papp_t *px__pusher_app_by_id(px__pusher_t *p, const char *id, size_t len);
plocal_t *px__pusher_local(px__pusher_t *p);
char *px__pusher_scratch(px__pusher_t *p, size_t need);
uint64_t px__pusher_new_sid(px__pusher_t *p);
/** hex(HMAC-SHA256(secret, data)) into out (65 bytes). */
void px__pusher_sign(const papp_t *app, const void *data, size_t len, char out[65]);
/** Constant-time: is `auth` equal to "key:" + hex(HMAC(secret, data))? */
int px__pusher_auth_ok(const papp_t *app, px_str_t auth, const void *data, size_t len);
/** Is `origin` allowed by the app? */
int px__pusher_origin_ok(const papp_t *app, px_str_t origin);
/** Check a connection's URL (key, protocol): 0, or a Pusher close code with *why. */
int px__pusher_check_connect(px__pusher_t *p, px_req_t *req, px_str_t key, papp_t **app,
                             const char **why);
int64_t px__pusher_wall_ms(void);
extern int px__pusher_m_conns; /* plexus_pusher_connections */

int px__pusher_ws_init(px__pusher_t *p);
int px__pusher_xhr_init(px__pusher_t *p);
void px__pusher_xhr_free(px__pusher_t *p);
void px__pusher_xhr_drain(px__pusher_t *p, unsigned worker);
int px__pusher_http_init(px__pusher_t *p);
/** Close every session of `app` signed in as `user` on this worker (4009). */
void px__pusher_terminate_local(px__pusher_t *p, papp_t *app, px_str_t user);

/* xhr sessions (pusher_xhr.c), called by pusher_sess.c on the owner's worker */
void px__pusher_xhr_send(xsess_t *xs, const char *json, size_t len);
void px__pusher_xhr_close(xsess_t *xs, int code, const char *reason);
void px__pusher_xhr_release(xsess_t *xs);
size_t px__pusher_xhr_pending(xsess_t *xs);
/** A receive request (stream or poll) is attached: the client is there. */
int px__pusher_xhr_attached(xsess_t *xs);

/* ---- webhooks (pusher_hooks.c) ----------------------------------------------------------------
 */

int px__pusher_hooks_init(px__pusher_t *p);
void px__pusher_hooks_free(px__pusher_t *p);
/** A client event (any worker): queued for the app's client_event webhooks. */
void px__pusher_hook_client_event(px__pusher_t *p, papp_t *app, px_str_t channel, px_str_t event,
                                  px_str_t data, uint64_t sid, px_str_t user);
/** A cache miss on `channel` (its Pusher name), any worker. */
void px__pusher_hook_cache_miss(px__pusher_t *p, papp_t *app, px_str_t channel);

/* pusher_conf.c */
int px__pusher_app_copy(papp_t *dst, const px_pusher_app_t *src, unsigned index, char *err,
                        size_t errlen);
void px__pusher_app_dispose(papp_t *a);

#endif
