/* The Pusher protocol's pure parts: one client message parsed (WebSocket text frame, or an
 * element of an xhr_send array), and the signed query string of an HTTP API request put in
 * the canonical form that is signed. No allocation, no I/O, no configuration (limits that
 * depend on the app are the executor's). Fuzzed by tests/fuzz/fuzz_pusher.c and
 * tests/fuzz/fuzz_pusher_query.c. */
#ifndef PX_FRONT_PUSHER_PROTO_H
#define PX_FRONT_PUSHER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/common.h"

#define PX__PUSHER_NAME_MAX   256 /* bytes of an event or channel name the parser accepts */
#define PX__PUSHER_AUTH_MAX   512 /* bytes of an "auth" value */
#define PX__PUSHER_MAX_TOKENS 1024
#define PX__PUSHER_MAX_DEPTH  32

enum {
    PX__PM_PING = 1,
    PX__PM_PONG,
    PX__PM_SUBSCRIBE,
    PX__PM_UNSUBSCRIBE,
    PX__PM_SIGNIN,
    PX__PM_CLIENT, /* client-* */
    PX__PM_OTHER,  /* any other event: ignored by the server */
};

typedef struct px__pmsg {
    int type;
    px_str_t event;        /* the event name (unescaped) */
    px_str_t channel;      /* subscribe, unsubscribe, client: unescaped, non-empty */
    px_str_t auth;         /* subscribe, signin: unescaped ({NULL,0} if absent) */
    px_str_t channel_data; /* subscribe: unescaped, the exact text that was signed */
    px_str_t user_data;    /* signin: unescaped, non-empty */
    px_str_t data;         /* client: the raw JSON value ("null" if absent) */
    char err[160];         /* on error */
} px__pmsg_t;

/**
 * Parse one client message. Returns 0 with *o filled, or -1 with o->err. Strings point into
 * `data` or into `scratch`, which must hold at least 2 * len + 16 bytes (string values are
 * unescaped there; a "data" given as a JSON string holding an object is decoded there too).
 */
int px__pusher_parse(const char *data, size_t len, px__pmsg_t *o, char *scratch,
                     size_t scratch_len);

/** Channel names: 1..PX__PUSHER_NAME_MAX bytes of A-Z a-z 0-9 _ - = @ , . ; and an optional
 * leading '#' (1 if valid). */
int px__pusher_channel_ok(const char *s, size_t len);

#define PX__PQ_MAX_PARAMS 32

typedef struct px__pquery {
    /* Decoded values ({NULL,0} when absent), pointing into the caller's buffer. */
    px_str_t auth_key, auth_timestamp, auth_version, body_md5, auth_signature;
    /* What is signed after "METHOD\npath\n": every parameter but auth_signature, sorted by
     * key (bytes), as key=value joined with '&', decoded. */
    px_str_t to_sign;
    size_t nparams;
    px_str_t keys[PX__PQ_MAX_PARAMS], values[PX__PQ_MAX_PARAMS];
    char err[128];
} px__pquery_t;

/**
 * Parse a raw query string (without '?'): key=value pairs separated by '&', percent-decoded
 * ('+' stays '+'), at most PX__PQ_MAX_PARAMS, no empty or repeated key. Returns 0, or -1
 * with o->err. `buf` must hold at least 3 * len + 16 bytes.
 */
int px__pusher_query_parse(const char *q, size_t len, px__pquery_t *o, char *buf, size_t buflen);
/** The value of parameter `key` in a parsed query ({NULL,0} if absent). */
px_str_t px__pusher_query_get(const px__pquery_t *o, const char *key);

/** A socket id "A.B" (decimal, each < 2^32, no leading '+' or '-') as a 64-bit id
 * (A << 32 | B); 0 if malformed. */
uint64_t px__pusher_socket_id_parse(const char *s, size_t len);

#endif
