/* Internals of the native protocol front-end (native_*.c): the WebSocket protocol at /ws,
 * the HTTP API and Server-Sent Events (docs/protocol.md). A client of the hub core like
 * any front: sessions embed a px__hclient_t, the wire formats are registered with the hub. */
#ifndef PX_FRONT_NATIVE_H
#define PX_FRONT_NATIVE_H

#include "hub/frontend.h"
#include "plexus/json.h"
#include "util/jwt.h"
#include "plexus/native.h"
#include "plexus/ws.h"

typedef struct px__native px__native_t;
typedef struct px__nsession px__nsession_t;

enum { NS_WS = 1, NS_SSE };

typedef struct px__bucket {
    double tokens; /* token-bucket rate limiter */
    uint64_t ms;
} px__bucket_t;

/* A WebSocket or SSE connection of the native protocol. */
struct px__nsession {
    px__hclient_t hc;
    int kind; /* NS_WS or NS_SSE */
    px__native_t *nat;
    px_ws_t *ws;   /* NS_WS while open */
    px_req_t *req; /* NS_SSE while streaming */
    px__nsession_t *sse_prev, *sse_next;
    px__jwt_claims_t *claims; /* NULL: anonymous */
    unsigned authorized : 1;  /* passed the token / anonymous check, and not expired */
    px_timer_t expiry;        /* the token's exp: the session ends then (unless renewed) */
    px__bucket_t publishes;   /* --publish-rate */
    px__bucket_t subscribes;  /* --subscribe-rate (subscribe and unsubscribe) */
    char client[PX__CLIENT_ID_LEN + 1];
};

/* What a native subscription keeps besides the core's (px__hsub_extra). */
typedef struct px__nsub {
    int has_id; /* the subscribe's id */
    int64_t id;
    int cancel_has_id; /* the unsubscribe's id, answered after the subscribe's reply */
    int64_t cancel_id;
} px__nsub_t;

typedef struct px__nlocal {
    px__nsession_t *sse; /* SSE sessions, for keep-alive comments */
    px_timer_t sse_timer;
    int sse_timer_on;
} px__nlocal_t;

struct px__native {
    px_hub_t *hub;
    px_server_t *server;
    px_native_opts_t opts; /* strings copied */
    int ws_fmt, sse_fmt;   /* the wire formats' ids at the hub */
    unsigned nworkers;
    px__nlocal_t *locals;
};

/* native_enc.c: the wire formats (hub thread) and the JSON of answers (workers). */
extern const px__hformat_t px__native_ws_format, px__native_sse_format;
void px__native_put_messages(px_json_writer_t *w, px_hub_msg_t *const *msgs, size_t n, int comma);
void px__native_put_presence(px_json_writer_t *w, const px__hreq_t *r);

/* native_ws.c / native_http.c */
int px__native_ws_init(px__native_t *n);
int px__native_http_init(px__native_t *n);
void px__native_ws_expired(px__nsession_t *s);
void px__native_sse_expired(px__nsession_t *s);

/* Shared by both: sessions, auth and limits. */
static inline px__nsession_t *px__native_session(px__hclient_t *c)
{
    return PX_CONTAINER_OF(c, px__nsession_t, hc);
}
void px__native_session_init(px__nsession_t *s, px__native_t *n, int kind, unsigned worker);
void px__native_session_release(px__hclient_t *c); /* the hub client's release op */
const char *px__native_verify_token(px__native_t *n, px_str_t tok, px__jwt_claims_t **out);
int px__native_rate_ok(px__bucket_t *b, unsigned rate);
void px__native_bucket_init(px__bucket_t *b, unsigned rate);
void px__native_arm_expiry(px__nsession_t *s);
size_t px__native_page_bytes(const px__native_t *n);
int64_t px__native_wall_ms(void);

#endif
