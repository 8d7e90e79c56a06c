/* A PostgreSQL connection driven by the hub thread's loop: libpq's non-blocking API in
 * pipeline mode, with the socket in a px_io_t and px_timer_t for deadlines and reconnects.
 * No thread, no blocking call after start.
 *
 * An operation is a few queries sent with PQsendQueryParams on px__pgconn_pq() between
 * px__pgconn_ready() and px__pgconn_end(), which closes it with a pipeline sync: libpq sends
 * the lot in one write and the server runs it as one transaction (one round trip). The
 * callback gets the operation's results in order, once, on the loop (never inside
 * px__pgconn_end). While the connection is down operations are refused at once (callers
 * fail fast); one that is not answered within the deadline drops the connection, and
 * every pending operation then fails. Reconnects by itself (100 ms .. 2 s backoff);
 * on_ready runs after each connect (LISTEN again, schema checks). NOTIFY messages go to
 * on_notify. */
#ifndef PX_HUB_PG_CONN_H
#define PX_HUB_PG_CONN_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/loop.h"

typedef struct px__pgconn px__pgconn_t;

/** status 0: res[0..n) are the operation's results (PGRES_COMMAND_OK, PGRES_TUPLES_OK,
 *  or the error of the failed query and PGRES_PIPELINE_ABORTED for those after it);
 *  < 0: the connection failed before the answer (res is NULL). Results are freed after
 *  the callback returns. */
typedef void (*px__pg_cb)(px__pgconn_t *c, int status, PGresult **res, int n, void *ud);

typedef struct px__pgop px__pgop_t;

struct px__pgconn {
    char *conninfo;
    const char *what; /* "store", "broker" (logs) */
    px_loop_t *loop;
    PGconn *pq; /* NULL while down */
    px_io_t io;
    int state; /* PX__PG_* */
    px_timer_t retry, watchdog;
    px_defer_t fail_defer; /* runs the callbacks of operations failed by a drop */
    uint64_t backoff_ms, timeout_ms;
    uint64_t progress_ms;
    px__pgop_t *head, *tail; /* sent, in order */
    px__pgop_t *failed;      /* dropped, callbacks pending */
    unsigned pending;
    uint64_t reconnects;
    int closing;
    void (*on_ready)(px__pgconn_t *c, void *ud);
    void (*on_down)(px__pgconn_t *c, void *ud);
    void (*on_notify)(px__pgconn_t *c, const PGnotify *n, void *ud);
    void *ud;
    char last_error[200];
};

enum { PX__PG_DOWN, PX__PG_CONNECTING, PX__PG_READY };

void px__pgconn_start(px__pgconn_t *c, px_loop_t *loop, const char *conninfo, const char *what,
                      uint64_t timeout_ms);
/** Drop the connection; pending callbacks run now with -ESHUTDOWN. */
void px__pgconn_stop(px__pgconn_t *c);
static inline int px__pgconn_ready(const px__pgconn_t *c)
{
    return c->state == PX__PG_READY && c->pq;
}
static inline PGconn *px__pgconn_pq(px__pgconn_t *c)
{
    return c->pq;
}
/** Close the operation whose queries were just sent (nq of them): sync and flush. 0, or
 *  -ENOTCONN (the connection dropped; no callback). */
int px__pgconn_end(px__pgconn_t *c, int nq, px__pg_cb cb, void *ud);
/** A query could not be sent (PQsendQueryParams returned 0): drop the connection. */
void px__pgconn_broken(px__pgconn_t *c);

#endif
