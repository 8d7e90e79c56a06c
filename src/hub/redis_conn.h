/* A Redis connection driven by the hub thread's loop: hiredis's async API with an adapter
 * for px_loop (px_io_t for the socket, px_timer_t for connect/command deadlines and
 * reconnects). No thread, no blocking call: commands are queued on the socket and their
 * replies come back as callbacks on the loop's thread.
 *
 * The connection reconnects by itself (backoff 100 ms .. 2 s) and says so through
 * on_ready/on_down; while it is down, px__rconn_command fails at once (-ENOTCONN) so
 * callers fail fast instead of queueing. A command without a reply for `timeout_ms`
 * drops the connection: every pending callback then gets a NULL reply.
 *
 * hiredis 0.14 (Debian 12) has no TLS: rediss:// is refused with a clear error. */
#ifndef PX_HUB_REDIS_CONN_H
#define PX_HUB_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "plexus/loop.h"

struct redisAsyncContext;
struct redisReply;

/** What a redis:// or unix: URL says.
 *    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&timeout=MS]
 *    unix:PATH[?db=N&password=P&prefix=P&timeout=MS]   (also redis+unix:// and unix://) */
typedef struct px__rurl {
    char host[256]; /* TCP host (an IP or a name resolved at connect), or "" for unix */
    int port;       /* default 6379 */
    char path[256]; /* unix socket path, or "" */
    int db;
    char user[128];
    char password[256];
    char prefix[64];     /* key and channel prefix (default "plexus") */
    uint64_t timeout_ms; /* connect and command deadline (default 2000) */
} px__rurl_t;

/** Parse; 0 or -EINVAL with `err` naming the problem. */
int px__rurl_parse(const char *url, px__rurl_t *u, char *err, size_t errlen);

typedef struct px__rconn px__rconn_t;
/** A reply (NULL when the connection failed or dropped before it came); valid during the
 *  callback only. */
typedef void (*px__rconn_cb)(px__rconn_t *c, struct redisReply *reply, void *ud);

struct px__rconn {
    px__rurl_t url;
    const char *what; /* for logs: "store", "broker", "broker-sub" */
    px_loop_t *loop;
    struct redisAsyncContext *ac; /* NULL while down */
    px_io_t io;
    unsigned want;  /* PX_READABLE|PX_WRITABLE hiredis asked for */
    int state;      /* PX__RCONN_* */
    int subscriber; /* pub/sub mode: replies are not counted (no deadline) */
    px_timer_t retry, watchdog;
    uint64_t backoff_ms;
    uint64_t progress_ms; /* loop time of the last reply (or of the first pending command) */
    unsigned pending;     /* commands sent, reply not yet come (not in subscriber mode) */
    unsigned handshake;   /* AUTH/SELECT replies still awaited */
    uint64_t reconnects;
    int closing;
    void (*on_ready)(px__rconn_t *c, void *ud); /* connected, authenticated, db selected */
    void (*on_down)(px__rconn_t *c, void *ud);  /* was ready, is not (pending ones failed) */
    /* subscriber mode: every reply (confirmations and messages), NULL when dropped */
    void (*on_push)(px__rconn_t *c, struct redisReply *reply, void *ud);
    void *ud;
    char last_error[160];
};

enum { PX__RCONN_DOWN, PX__RCONN_CONNECTING, PX__RCONN_READY };

/** Initialise and start connecting (on the loop's thread, or before it runs). */
void px__rconn_start(px__rconn_t *c, px_loop_t *loop, const px__rurl_t *u, const char *what);
/** Drop the connection; pending callbacks run with NULL replies, on_down does not. */
void px__rconn_stop(px__rconn_t *c);
static inline int px__rconn_ready(const px__rconn_t *c)
{
    return c->state == PX__RCONN_READY;
}
/** Queue a command (argv form). cb may be NULL (reply ignored). -ENOTCONN while the
 *  connection is not ready (no callback then), -ENOMEM. */
int px__rconn_command(px__rconn_t *c, px__rconn_cb cb, void *ud, int argc, const char **argv,
                      const size_t *argvlen);

#endif
