/* pusher-js's HTTP fallback transports, for networks where WebSocket cannot pass:
 *
 *   POST {httpPath}/app/{key}/{server}/{session}/xhr_streaming   receive, one long response
 *   POST {httpPath}/app/{key}/{server}/{session}/xhr             receive, one poll
 *   POST {httpPath}/app/{key}/{server}/{session}/xhr_send        send: a JSON array of messages
 *
 * (httpPath is "/pusher" by default.) Responses are lines: "o" (open), "a[<msg>,...]" (messages,
 * each a JSON-encoded Pusher event), "h" (heartbeat), "c[code,reason]" (closed).
 *
 * The requests of one session come on separate HTTP requests that may land on any worker. The
 * session (xsess_t, shared, locked) is owned by the worker that created it: its Pusher session
 * and hub client live there, and it queues the output lines. A receive request is held by the
 * worker it arrived on (an xrecv_t in that worker's list) and is attached to the session; the
 * owner wakes it with a message when output is queued, and the receiver takes the lines under
 * the lock and writes them. A newer receive request replaces the attached one (which is told to
 * end with a message), and sends are posted to the owner. Messages name a receiver by
 * (session, generation), never by pointer, so one that ended meanwhile is simply not found. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "front/pusher.h"

#define POLL_WAIT_MS     25000 /* a poll with nothing to say answers "h" after this */
#define HEARTBEAT_MS     25000 /* streams get "h" this often */
#define XHR_OUT_MAX      (4u << 20)
#define XHR_SESSIONS_MAX 100000

enum { XR_STREAM = 1, XR_POLL };

struct xsess {
    px__hentry_t e; /* in p->xsessions (under p->xmu) while in_table */
    px__pusher_t *p;
    atomic_int refs;
    pthread_mutex_t mu;
    unsigned owner;  /* the worker of ps */
    psess_t *ps;     /* owner only; NULL once released */
    px_defer_t gone; /* ends ps outside the caller's stack */
    int in_table;    /* under p->xmu */
    /* under mu */
    px_buf_t out; /* lines for the next receiver */
    int closed;
    char close_line[160];
    unsigned rworker; /* the attached receiver: its worker, generation, kind (0: none) */
    uint64_t rgen;
    int rkind;
    int wake_posted;
    size_t id_len;
    char id[];
};

struct xrecv {
    xrecv_t *prev, *next; /* the worker's receivers */
    px__pusher_t *p;
    px_req_t *req;
    xsess_t *xs; /* a reference */
    uint64_t gen;
    int kind;
    unsigned worker;
    unsigned streaming : 1;
    px_timer_t timer;
};

static atomic_ullong next_gen = 1;

static xsess_t *xs_ref(xsess_t *xs)
{
    atomic_fetch_add_explicit(&xs->refs, 1, memory_order_relaxed);
    return xs;
}

static void xs_unref(xsess_t *xs)
{
    if (atomic_fetch_sub_explicit(&xs->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&xs->mu);
    px_buf_dispose(&xs->out);
    px__free(xs);
}

static void table_remove(xsess_t *xs)
{
    px__pusher_t *p = xs->p;
    pthread_mutex_lock(&p->xmu);
    int was = xs->in_table;
    if (was) {
        px__hashmap_del(&p->xsessions, &xs->e);
        xs->in_table = 0;
    }
    pthread_mutex_unlock(&p->xmu);
    if (was)
        xs_unref(xs);
}

static xsess_t *table_find(px__pusher_t *p, const char *id, size_t len)
{
    pthread_mutex_lock(&p->xmu);
    px__hentry_t *e = px__hashmap_get(&p->xsessions, id, len);
    xsess_t *xs = e ? xs_ref(PX_CONTAINER_OF(e, xsess_t, e)) : NULL;
    pthread_mutex_unlock(&p->xmu);
    return xs;
}

/* ---- messages between workers ------------------------------------------------------------ */

enum { XM_WAKE = 1, XM_KICK, XM_INPUT };

typedef struct xmsg {
    px_msg_t msg;
    int kind;
    xsess_t *xs; /* a reference */
    uint64_t gen;
    size_t len;
    char data[];
} xmsg_t;

static void on_xmsg(px_worker_t *w, px_msg_t *m);

static void post(xsess_t *xs, unsigned worker, int kind, uint64_t gen, const char *data, size_t len)
{
    xmsg_t *x = px__malloc(sizeof *x + len);
    if (!x)
        return;
    x->msg.cb = on_xmsg;
    x->kind = kind;
    x->xs = xs_ref(xs);
    x->gen = gen;
    x->len = len;
    if (len)
        memcpy(x->data, data, len);
    px_worker_post(px_workers_get(px_server_workers(xs->p->server), worker), &x->msg);
}

/* Under xs->mu: tell the attached receiver that there is output. */
static void wake_locked(xsess_t *xs)
{
    if (xs->rkind && !xs->wake_posted) {
        xs->wake_posted = 1;
        post(xs, xs->rworker, XM_WAKE, xs->rgen, NULL, 0);
    }
}

/* ---- receivers (on the worker that holds the request) ---------------------------------------- */

static void recv_end(xrecv_t *r, const char *last, size_t len)
{
    plocal_t *L = &r->p->locals[r->worker];
    if (r->prev)
        r->prev->next = r->next;
    else if (L->recvs == r)
        L->recvs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    px_timer_stop(&r->timer);
    if (r->streaming) {
        if (len)
            px_stream_write(r->req, last, len);
        px_stream_end(r->req);
    } else {
        px_respond(r->req, 200, "application/javascript; charset=UTF-8", last, len);
    }
    xs_unref(r->xs);
    px__free(r);
}

static xrecv_t *recv_find(px__pusher_t *p, unsigned worker, xsess_t *xs, uint64_t gen)
{
    for (xrecv_t *r = p->locals[worker].recvs; r; r = r->next)
        if (r->xs == xs && r->gen == gen)
            return r;
    return NULL;
}

/* Take what the session has for receiver `r` and write it; a poll ends with it, and so does
 * everything once the session is closed. */
static void recv_pump(xrecv_t *r)
{
    xsess_t *xs = r->xs;
    pthread_mutex_lock(&xs->mu);
    if (xs->rgen != r->gen || !xs->rkind) {
        pthread_mutex_unlock(&xs->mu);
        return;
    }
    size_t n = px_buf_size(&xs->out);
    char *bytes = NULL;
    int closed = xs->closed;
    if (n) {
        bytes = px__malloc(n);
        if (!bytes) {
            pthread_mutex_unlock(&xs->mu);
            return;
        }
        memcpy(bytes, px_buf_head(&xs->out), n);
        px_buf_reset(&xs->out);
    }
    int end = closed || (r->kind == XR_POLL && n);
    if (end)
        xs->rkind = 0;
    char close_line[sizeof xs->close_line];
    snprintf(close_line, sizeof close_line, "%s", closed && !n ? xs->close_line : "");
    pthread_mutex_unlock(&xs->mu);
    if (end) {
        if (n)
            recv_end(r, bytes, n);
        else
            recv_end(r, close_line, strlen(close_line));
    } else if (n && px_stream_write(r->req, bytes, n) != 0) {
        px_req_abort(r->req); /* on_abort ends it */
    }
    px__free(bytes);
}

static void recv_timer(px_timer_t *t)
{
    xrecv_t *r = t->data;
    if (r->kind == XR_STREAM) {
        if (px_stream_write(r->req, "h\n", 2) != 0)
            px_req_abort(r->req);
        else
            px_timer_start(px_worker_loop(px_worker_self()), t, HEARTBEAT_MS);
        return;
    }
    /* A poll with nothing: "h" (pusher-js polls again). */
    xsess_t *xs = r->xs;
    pthread_mutex_lock(&xs->mu);
    if (xs->rgen == r->gen)
        xs->rkind = 0;
    pthread_mutex_unlock(&xs->mu);
    recv_end(r, "h\n", 2);
}

static void recv_abort(px_req_t *req, void *ud)
{
    PX_UNUSED(req);
    xrecv_t *r = ud;
    xsess_t *xs = r->xs;
    pthread_mutex_lock(&xs->mu);
    if (xs->rgen == r->gen)
        xs->rkind = 0;
    pthread_mutex_unlock(&xs->mu);
    recv_end(r, NULL, 0);
}

static void on_xmsg(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(w);
    xmsg_t *x = (xmsg_t *)m;
    xsess_t *xs = x->xs;
    px__pusher_t *p = xs->p;
    if (px_worker_self()) { /* not when drained after the workers stopped */
        unsigned me = px_worker_id(px_worker_self());
        xrecv_t *r;
        switch (x->kind) {
        case XM_WAKE:
            pthread_mutex_lock(&xs->mu);
            if (xs->rgen == x->gen)
                xs->wake_posted = 0;
            pthread_mutex_unlock(&xs->mu);
            if ((r = recv_find(p, me, xs, x->gen)))
                recv_pump(r);
            break;
        case XM_KICK:
            if ((r = recv_find(p, me, xs, x->gen)))
                recv_end(r, NULL, 0);
            break;
        case XM_INPUT:
            if (xs->ps)
                px__pusher_sess_input(xs->ps, x->data, x->len);
            break;
        }
    }
    xs_unref(xs);
    px__free(x);
}

/* ---- the session's side (on the owner) ------------------------------------------------------ */

static void append_locked(xsess_t *xs, const char *p, size_t n, int *over)
{
    if (px_buf_append(&xs->out, p, n) != 0)
        *over = 1;
}

void px__pusher_xhr_send(xsess_t *xs, const char *json, size_t len)
{
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 6 * len + 64);
    PX_JSON_PUT_LIT(&w, "a[");
    px_json_put_str(&w, json, len);
    PX_JSON_PUT_LIT(&w, "]\n");
    int over = w.err != 0;
    pthread_mutex_lock(&xs->mu);
    if (!xs->closed && !over) {
        append_locked(xs, w.buf, w.len, &over);
        wake_locked(xs);
    }
    pthread_mutex_unlock(&xs->mu);
    px_json_writer_dispose(&w);
    if (over && xs->ps && !xs->ps->closing)
        px__pusher_sess_fail(xs->ps, 4100, "Over capacity: the client does not read");
}

size_t px__pusher_xhr_pending(xsess_t *xs)
{
    pthread_mutex_lock(&xs->mu);
    size_t n = px_buf_size(&xs->out);
    pthread_mutex_unlock(&xs->mu);
    return n;
}

int px__pusher_xhr_attached(xsess_t *xs)
{
    pthread_mutex_lock(&xs->mu);
    int a = xs->rkind != 0;
    pthread_mutex_unlock(&xs->mu);
    return a;
}

static void on_gone(px_defer_t *d)
{
    xsess_t *xs = d->data;
    if (xs->ps)
        px__pusher_sess_gone(xs->ps);
}

void px__pusher_xhr_close(xsess_t *xs, int code, const char *reason)
{
    pthread_mutex_lock(&xs->mu);
    if (!xs->closed) {
        xs->closed = 1;
        px_json_writer_t w;
        px_json_writer_init(&w, xs->close_line, sizeof xs->close_line - 2);
        PX_JSON_PUT_LIT(&w, "c[");
        px_json_put_i64(&w, code);
        PX_JSON_PUT_LIT(&w, ",");
        px_json_put_str(&w, reason, strlen(reason));
        PX_JSON_PUT_LIT(&w, "]\n");
        if (w.err)
            snprintf(xs->close_line, sizeof xs->close_line, "c[%d,\"\"]\n", code);
        else
            xs->close_line[w.len] = '\0';
        int over = 0;
        append_locked(xs, xs->close_line, strlen(xs->close_line), &over);
        wake_locked(xs);
    }
    pthread_mutex_unlock(&xs->mu);
    table_remove(xs);
    px_defer(px_worker_loop(px_worker_self()), &xs->gone);
}

void px__pusher_xhr_release(xsess_t *xs)
{
    xs->ps = NULL;
    xs_unref(xs);
}

/* ---- requests ----------------------------------------------------------------------------------
 */

static void cors(px_req_t *req)
{
    px_str_t origin = px_req_header(req, "origin");
    if (origin.len && origin.len < 512) {
        char o[512];
        snprintf(o, sizeof o, "%.*s", (int)origin.len, origin.ptr);
        px_res_header(req, "Access-Control-Allow-Origin", o);
        px_res_header(req, "Access-Control-Allow-Credentials", "true");
        px_res_header(req, "Vary", "Origin");
    } else {
        px_res_header(req, "Access-Control-Allow-Origin", "*");
    }
}

static void preflight(px_req_t *req, void *ud)
{
    PX_UNUSED(ud);
    cors(req);
    px_res_header(req, "Access-Control-Allow-Methods", "POST, OPTIONS");
    px_res_header(req, "Access-Control-Allow-Headers", "Content-Type");
    px_res_header(req, "Access-Control-Max-Age", "86400");
    px_respond(req, 204, NULL, NULL, 0);
}

/* The session id: "key/server/session" from the path (each part short and plain). */
static size_t session_id(px_req_t *req, char *out, size_t cap)
{
    px_str_t k = px_req_param(req, "key"), sv = px_req_param(req, "server"),
             ss = px_req_param(req, "session");
    if (!k.len || !sv.len || !ss.len || sv.len > 16 || ss.len > 64 || k.len > 128 ||
        k.len + sv.len + ss.len + 3 > cap)
        return 0;
    const px_str_t parts[] = {sv, ss};
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < parts[i].len; j++) {
            char c = parts[i].ptr[j];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '_' || c == '-'))
                return 0;
        }
    return (size_t)snprintf(out, cap, "%.*s/%.*s/%.*s", (int)k.len, k.ptr, (int)sv.len, sv.ptr,
                            (int)ss.len, ss.ptr);
}

static void refuse(px_req_t *req, int code, const char *why)
{
    char line[200];
    int n = snprintf(line, sizeof line, "c[%d,\"%s\"]\n", code, why);
    px_respond(req, 200, "application/javascript; charset=UTF-8", line, (size_t)n);
}

/* A new session, owned by this worker. NULL after answering the request. */
static xsess_t *session_new(px__pusher_t *p, px_req_t *req, const char *id, size_t idl)
{
    papp_t *app;
    const char *why = NULL;
    int code = px__pusher_check_connect(p, req, px_req_param(req, "key"), &app, &why);
    if (!code && app->o.max_connections &&
        atomic_load_explicit(&app->nconns, memory_order_relaxed) >= app->o.max_connections) {
        code = 4004;
        why = "Over connection quota";
    }
    if (!code) {
        pthread_mutex_lock(&p->xmu);
        size_t n = p->xsessions.count;
        pthread_mutex_unlock(&p->xmu);
        if (n >= XHR_SESSIONS_MAX) {
            code = 4100;
            why = "Over capacity";
        }
    }
    if (code) {
        refuse(req, code, why);
        return NULL;
    }
    unsigned worker = px_worker_id(px_req_worker(req));
    xsess_t *xs = px__calloc(1, sizeof *xs + idl + 1);
    psess_t *ps = xs ? px__pusher_sess_new(p, app, PS_XHR, worker) : NULL;
    if (!ps) {
        px__free(xs);
        refuse(req, 4100, "Over capacity");
        return NULL;
    }
    xs->p = p;
    atomic_init(&xs->refs, 2); /* the table and the Pusher session */
    pthread_mutex_init(&xs->mu, NULL);
    px_buf_init(&xs->out, XHR_OUT_MAX);
    xs->owner = worker;
    xs->ps = ps;
    px_defer_init(&xs->gone, on_gone, xs);
    memcpy(xs->id, id, idl);
    xs->id_len = idl;
    xs->e.key = xs->id;
    xs->e.key_len = idl;
    ps->xs = xs;
    int over = 0;
    append_locked(xs, "o\n", 2, &over);
    pthread_mutex_lock(&p->xmu);
    int dup = px__hashmap_get(&p->xsessions, id, idl) != NULL;
    if (!dup && px__hashmap_put(&p->xsessions, &xs->e) == 0)
        xs->in_table = 1;
    pthread_mutex_unlock(&p->xmu);
    if (!xs->in_table)
        xs_unref(xs); /* a race with the same id (or no memory): this one is not findable */
    px__pusher_sess_start(ps);
    return xs_ref(xs);
}

static void receive(px_req_t *req, void *ud, int kind)
{
    px__pusher_t *p = ud;
    cors(req);
    char id[256];
    size_t idl = session_id(req, id, sizeof id);
    if (!idl) {
        px_respond_error(req, 400, "bad_request", "not a session path");
        return;
    }
    xsess_t *xs = table_find(p, id, idl);
    if (!xs && !(xs = session_new(p, req, id, idl)))
        return;
    unsigned me = px_worker_id(px_req_worker(req));
    xrecv_t *r = px__calloc(1, sizeof *r);
    if (!r) {
        xs_unref(xs);
        px_respond_error(req, 503, "internal_error", "out of memory");
        return;
    }
    r->p = p;
    r->req = req;
    r->xs = xs; /* the reference taken above */
    r->kind = kind;
    r->worker = me;
    r->gen = atomic_fetch_add_explicit(&next_gen, 1, memory_order_relaxed);
    px_timer_init(&r->timer, recv_timer, r);
    plocal_t *L = &p->locals[me];
    r->next = L->recvs;
    if (L->recvs)
        L->recvs->prev = r;
    L->recvs = r;
    px_req_on_abort(req, recv_abort, r);
    if (kind == XR_STREAM) {
        if (px_stream_start(req, 200, "application/javascript; charset=UTF-8") != 0) {
            /* The request is over (a failure or HEAD): nothing to attach. */
            if (r->prev)
                r->prev->next = r->next;
            else
                L->recvs = r->next;
            if (r->next)
                r->next->prev = r->prev;
            xs_unref(xs);
            px__free(r);
            return;
        }
        r->streaming = 1;
    }
    pthread_mutex_lock(&xs->mu);
    if (xs->rkind) /* the receiver it replaces ends */
        post(xs, xs->rworker, XM_KICK, xs->rgen, NULL, 0);
    xs->rworker = me;
    xs->rgen = r->gen;
    xs->rkind = kind;
    xs->wake_posted = 0;
    pthread_mutex_unlock(&xs->mu);
    px_timer_start(px_worker_loop(px_req_worker(req)), &r->timer,
                   kind == XR_STREAM ? HEARTBEAT_MS : POLL_WAIT_MS);
    recv_pump(r);
}

static void xhr_streaming(px_req_t *req, void *ud)
{
    receive(req, ud, XR_STREAM);
}

static void xhr_polling(px_req_t *req, void *ud)
{
    receive(req, ud, XR_POLL);
}

static void xhr_send(px_req_t *req, void *ud)
{
    px__pusher_t *p = ud;
    cors(req);
    char id[256];
    size_t idl = session_id(req, id, sizeof id);
    xsess_t *xs = idl ? table_find(p, id, idl) : NULL;
    if (!xs) {
        px_respond_error(req, 404, "not_found", "no such session");
        return;
    }
    px_str_t body = px_req_body(req);
    enum { MAXTOK = 4096 };
    px_json_tok_t *toks = px_req_alloc(req, MAXTOK * sizeof *toks);
    px_json_doc_t doc;
    if (!toks || px_json_parse(&doc, body.ptr ? body.ptr : "", body.len, toks, MAXTOK, 8) < 0 ||
        toks[0].type != PX_JSON_ARRAY) {
        xs_unref(xs);
        px_respond_error(req, 400, "bad_request", "the body is a JSON array of strings");
        return;
    }
    char *buf = px_req_alloc(req, body.len + 1);
    int e = 1;
    for (uint32_t i = 0; buf && i < toks[0].size; i++, e = (int)toks[e].next) {
        int n = toks[e].type == PX_JSON_STRING ? px_json_unescape(&doc, e, buf, body.len + 1) : -1;
        if (n > 0)
            post(xs, xs->owner, XM_INPUT, 0, buf, (size_t)n);
    }
    xs_unref(xs);
    px_respond(req, 204, NULL, NULL, 0);
}

/* ---- set-up, shutdown ------------------------------------------------------------------------ */

/* Graceful shutdown on `worker`: its sessions close with 4200, and so does every receive
 * request it holds, now (its connections are closed right after this: a wake-up message
 * would come too late), whichever worker owns the session. */
void px__pusher_xhr_drain(px__pusher_t *p, unsigned worker)
{
    for (psess_t *ps = p->locals[worker].sessions, *next; ps; ps = next) {
        next = ps->next;
        if (ps->kind == PS_XHR)
            px__pusher_sess_fail(ps, 4200, "Server shutting down");
    }
    static const char bye[] = "c[4200,\"Server shutting down\"]\n";
    while (p->locals[worker].recvs) {
        xrecv_t *r = p->locals[worker].recvs;
        recv_pump(r); /* what is queued (the close line, for our own sessions) */
        if (p->locals[worker].recvs != r)
            continue; /* it ended */
        xsess_t *xs = r->xs;
        pthread_mutex_lock(&xs->mu);
        if (xs->rgen == r->gen)
            xs->rkind = 0;
        pthread_mutex_unlock(&xs->mu);
        recv_end(r, bye, sizeof bye - 1);
    }
}

void px__pusher_xhr_free(px__pusher_t *p)
{
    for (px__hentry_t *e = px__hashmap_next(&p->xsessions, NULL), *next; e; e = next) {
        next = px__hashmap_next(&p->xsessions, e);
        xsess_t *xs = PX_CONTAINER_OF(e, xsess_t, e);
        px__hashmap_del(&p->xsessions, e);
        xs->in_table = 0;
        xs_unref(xs);
    }
    px__hashmap_dispose(&p->xsessions);
    pthread_mutex_destroy(&p->xmu);
}

int px__pusher_xhr_init(px__pusher_t *p)
{
    px_server_t *s = p->server;
    int r =
        px_route(s, "POST", "/pusher/app/:key/:server/:session/xhr_streaming", xhr_streaming, p);
    r |= px_route(s, "POST", "/pusher/app/:key/:server/:session/xhr", xhr_polling, p);
    r |= px_route(s, "POST", "/pusher/app/:key/:server/:session/xhr_send", xhr_send, p);
    r |= px_route(s, "OPTIONS", "/pusher/app/*", preflight, p);
    return r ? -ENOMEM : 0;
}
