/* libpq non-blocking + pipeline mode on px_loop. See pg_conn.h. */
#include "hub/pg_conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define WATCHDOG_MS    100

struct px__pgop {
    px__pgop_t *next;
    px__pg_cb cb;
    void *ud;
    int nq;         /* queries in the operation */
    int n;          /* results collected */
    PGresult **res; /* nq slots */
    int status;
};

static void op_finish(px__pgconn_t *c, px__pgop_t *op)
{
    if (op->cb)
        op->cb(c, op->status, op->status ? NULL : op->res, op->n, op->ud);
    for (int i = 0; i < op->n; i++)
        PQclear(op->res[i]);
    px__free(op->res);
    px__free(op);
}

static void run_failed(px_defer_t *d)
{
    px__pgconn_t *c = d->data;
    while (c->failed) {
        px__pgop_t *op = c->failed;
        c->failed = op->next;
        op_finish(c, op);
    }
}

static void update_io(px__pgconn_t *c, unsigned events)
{
    if (c->pq)
        px_io_start(c->loop, &c->io, events);
}

static void schedule_retry(px__pgconn_t *c)
{
    c->state = PX__PG_DOWN;
    if (c->closing)
        return;
    px_timer_start(c->loop, &c->retry, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Drop the connection; pending operations fail (their callbacks run from a deferred
 * callback, never inside the caller's call). */
static void drop(px__pgconn_t *c, const char *why, int status)
{
    int was_ready = c->state == PX__PG_READY;
    if (why)
        snprintf(c->last_error, sizeof c->last_error, "%s", why);
    if (c->pq) {
        px_io_stop(&c->io);
        PQfinish(c->pq);
        c->pq = NULL;
    }
    px__pgop_t **tail = &c->failed;
    while (*tail)
        tail = &(*tail)->next;
    for (px__pgop_t *op = c->head; op; op = op->next)
        op->status = status;
    *tail = c->head;
    c->head = c->tail = NULL;
    c->pending = 0;
    if (c->failed && !c->closing)
        px_defer(c->loop, &c->fail_defer);
    if (was_ready && !c->closing)
        px_log(PX_LOG_WARN, "postgres %s: connection lost: %s", c->what, c->last_error);
    schedule_retry(c);
    if (was_ready && c->on_down && !c->closing)
        c->on_down(c, c->ud);
}

void px__pgconn_broken(px__pgconn_t *c)
{
    drop(c, c->pq ? PQerrorMessage(c->pq) : "connection lost", -EIO);
}

static void clean_error(px__pgconn_t *c, const char *msg)
{
    snprintf(c->last_error, sizeof c->last_error, "%s", msg ? msg : "");
    size_t n = strlen(c->last_error);
    while (n && (c->last_error[n - 1] == '\n' || c->last_error[n - 1] == ' '))
        c->last_error[--n] = '\0';
}

static void became_ready(px__pgconn_t *c)
{
    if (PQsetnonblocking(c->pq, 1) != 0 || PQenterPipelineMode(c->pq) != 1) {
        drop(c, "cannot enter pipeline mode", -EIO);
        return;
    }
    c->state = PX__PG_READY;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->progress_ms = px_loop_now(c->loop);
    if (c->reconnects++)
        px_log(PX_LOG_INFO, "postgres %s: connected again", c->what);
    update_io(c, PX_READABLE);
    if (c->on_ready)
        c->on_ready(c, c->ud);
}

static void connect_step(px__pgconn_t *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pq);
    /* The socket may change while libpq tries the addresses of a host in turn. */
    int fd = PQsocket(c->pq);
    if (fd != c->io.fd) {
        px_io_stop(&c->io);
        px_io_init(&c->io, fd, c->io.cb, c);
    }
    switch (st) {
    case PGRES_POLLING_READING: update_io(c, PX_READABLE); break;
    case PGRES_POLLING_WRITING: update_io(c, PX_WRITABLE); break;
    case PGRES_POLLING_OK: became_ready(c); break;
    default:
        clean_error(c, PQerrorMessage(c->pq));
        if (c->reconnects == 0)
            px_log(PX_LOG_WARN, "postgres %s: cannot connect: %s (retrying)", c->what,
                   c->last_error);
        px_io_stop(&c->io);
        PQfinish(c->pq);
        c->pq = NULL;
        schedule_retry(c);
        break;
    }
}

/* Collect every result that is ready; an operation completes at its pipeline sync. */
static void read_results(px__pgconn_t *c)
{
    while (c->pq && !PQisBusy(c->pq)) {
        PGresult *r = PQgetResult(c->pq);
        px__pgop_t *op = c->head;
        if (!r) {
            /* End of one query's results; nothing more buffered unless another follows. */
            if (!op || PQisBusy(c->pq))
                break;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (!op) {
            PQclear(r);
            drop(c, "a result nobody asked for", -EPROTO);
            return;
        }
        c->progress_ms = px_loop_now(c->loop);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            c->head = op->next;
            if (!c->head)
                c->tail = NULL;
            c->pending--;
            op_finish(c, op);
            continue;
        }
        if (op->n < op->nq)
            op->res[op->n++] = r;
        else
            PQclear(r);
    }
}

static void on_io(px_io_t *io, unsigned events)
{
    px__pgconn_t *c = io->data;
    if (c->state == PX__PG_CONNECTING) {
        connect_step(c);
        return;
    }
    if (!c->pq)
        return;
    if (events & PX_WRITABLE) {
        int f = PQflush(c->pq);
        if (f < 0) {
            px__pgconn_broken(c);
            return;
        }
        update_io(c, f ? PX_READABLE | PX_WRITABLE : PX_READABLE);
    }
    if (events & (PX_READABLE | PX_HUP)) {
        if (!PQconsumeInput(c->pq)) {
            clean_error(c, PQerrorMessage(c->pq));
            drop(c, NULL, -EIO);
            return;
        }
        read_results(c);
        PGnotify *n;
        while (c->pq && (n = PQnotifies(c->pq))) {
            if (c->on_notify)
                c->on_notify(c, n, c->ud);
            PQfreemem(n);
        }
    }
}

static void do_connect(px__pgconn_t *c)
{
    c->pq = PQconnectStart(c->conninfo);
    if (!c->pq) {
        schedule_retry(c);
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        clean_error(c, PQerrorMessage(c->pq));
        PQfinish(c->pq);
        c->pq = NULL;
        schedule_retry(c);
        return;
    }
    c->state = PX__PG_CONNECTING;
    c->progress_ms = px_loop_now(c->loop);
    px_io_init(&c->io, PQsocket(c->pq), on_io, c);
    update_io(c, PX_WRITABLE);
}

static void retry_cb(px_timer_t *t)
{
    px__pgconn_t *c = t->data;
    if (!c->closing && !c->pq)
        do_connect(c);
}

static void watchdog_cb(px_timer_t *t)
{
    px__pgconn_t *c = t->data;
    uint64_t now = px_loop_now(c->loop);
    if (c->pq && (c->state == PX__PG_CONNECTING || c->pending) &&
        now - c->progress_ms > c->timeout_ms) {
        px_log(PX_LOG_WARN, "postgres %s: no answer for %llu ms, reconnecting", c->what,
               (unsigned long long)(now - c->progress_ms));
        if (c->state == PX__PG_CONNECTING) {
            snprintf(c->last_error, sizeof c->last_error, "connect timed out");
            px_io_stop(&c->io);
            PQfinish(c->pq);
            c->pq = NULL;
            schedule_retry(c);
        } else {
            drop(c, "timed out", -ETIMEDOUT);
        }
    }
    if (!c->closing)
        px_timer_start(c->loop, &c->watchdog, WATCHDOG_MS);
}

void px__pgconn_start(px__pgconn_t *c, px_loop_t *loop, const char *conninfo, const char *what,
                      uint64_t timeout_ms)
{
    c->conninfo = px__xstrdup(conninfo);
    c->what = what;
    c->loop = loop;
    c->timeout_ms = timeout_ms;
    c->backoff_ms = BACKOFF_MIN_MS;
    px_timer_init(&c->retry, retry_cb, c);
    px_timer_init(&c->watchdog, watchdog_cb, c);
    px_defer_init(&c->fail_defer, run_failed, c);
    px_timer_start(loop, &c->watchdog, WATCHDOG_MS);
    do_connect(c);
}

void px__pgconn_stop(px__pgconn_t *c)
{
    if (!c->loop)
        return;
    c->closing = 1;
    px_timer_stop(&c->retry);
    px_timer_stop(&c->watchdog);
    drop(c, "shutting down", -ESHUTDOWN);
    run_failed(&c->fail_defer);
    px__free(c->conninfo);
    c->conninfo = NULL;
}

int px__pgconn_end(px__pgconn_t *c, int nq, px__pg_cb cb, void *ud)
{
    if (!px__pgconn_ready(c))
        return -ENOTCONN;
    px__pgop_t *op = px__calloc(1, sizeof *op);
    if (op)
        op->res = px__calloc((size_t)(nq ? nq : 1), sizeof *op->res);
    if (!op || !op->res || PQpipelineSync(c->pq) != 1) {
        if (op)
            px__free(op->res);
        px__free(op);
        px__pgconn_broken(c);
        return -ENOTCONN;
    }
    op->cb = cb;
    op->ud = ud;
    op->nq = nq;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    if (c->pending++ == 0)
        c->progress_ms = px_loop_now(c->loop);
    int f = PQflush(c->pq);
    if (f < 0) {
        /* The operation is queued: it fails with the others, from the deferred call. */
        px__pgconn_broken(c);
        return 0;
    }
    update_io(c, f ? PX_READABLE | PX_WRITABLE : PX_READABLE);
    return 0;
}
