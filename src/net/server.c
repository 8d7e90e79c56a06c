/* The server: workers + listeners (with their pipelines) + connections, the
 * protocol registry and per-module state, graceful shutdown, signals. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"

int px__m_conns = -1, px__m_accepted = -1, px__m_rejected = -1, px__m_bytes_in = -1,
    px__m_bytes_out = -1, px__m_loop_lag = -1;

void px_server_opts_init(px_server_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->workers = 0;
    o->max_connections = 10000;
    o->idle_timeout_ms = 60000;
    o->output_cap = 4u << 20;
    o->shutdown_timeout_ms = 10000;
    o->backlog = 1024;
}

static void register_metrics(void)
{
    px__m_conns = px_metric_register("plexus_connections", "Open connections",
                                     PX_METRIC_GAUGE | PX_METRIC_PER_WORKER);
    px__m_accepted = px_metric_register("plexus_connections_accepted_total", "Connections accepted",
                                        PX_METRIC_COUNTER);
    px__m_rejected = px_metric_register("plexus_connections_rejected_total",
                                        "Connections rejected over --max-connections or out of fds",
                                        PX_METRIC_COUNTER);
    px__m_bytes_in = px_metric_register("plexus_bytes_received_total", "Bytes read from clients",
                                        PX_METRIC_COUNTER);
    px__m_bytes_out = px_metric_register("plexus_bytes_sent_total", "Bytes written to clients",
                                         PX_METRIC_COUNTER);
    px__m_loop_lag = px_metric_register("plexus_loop_lag_milliseconds",
                                        "Time the last loop iteration spent dispatching",
                                        PX_METRIC_GAUGE | PX_METRIC_PER_WORKER);
}

px_server_t *px_server_new(const px_server_opts_t *o)
{
    px_server_opts_t defaults;
    if (!o) {
        px_server_opts_init(&defaults);
        o = &defaults;
    }
    register_metrics();
    px_server_t *s = px__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->opts = *o;
    s->default_protocol = -1;
    if (!s->opts.backlog)
        s->opts.backlog = 1024;
    if (!s->opts.output_cap)
        s->opts.output_cap = 4u << 20;
    s->workers = px_workers_new(o->workers);
    if (!s->workers) {
        px__free(s);
        return NULL;
    }
    unsigned n = px_workers_count(s->workers);
    s->nw = px__calloc(n, sizeof *s->nw);
    if (!s->nw) {
        px_workers_free(s->workers);
        px__free(s);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        px__netw_t *nw = &s->nw[i];
        nw->server = s;
        nw->worker = px_workers_get(s->workers, i);
        nw->loop = px_worker_loop(nw->worker);
        nw->reserve_fd = -1;
        nw->output_cap = s->opts.output_cap;
    }
    return s;
}

void px_server_free(px_server_t *s)
{
    if (!s)
        return;
    /* Newest first: a module may use what an older one set up. */
    for (unsigned i = s->nmodules; i-- > 0;)
        if (s->modules[i].free_fn)
            s->modules[i].free_fn(s->modules[i].data);
    px__free(s->modules);
    for (unsigned i = 0; i < s->nprotocols; i++)
        px__free(s->protocols[i].name);
    for (unsigned i = 0; i < s->nlisteners; i++)
        px__listener_close(&s->listeners[i]);
    unsigned n = px_workers_count(s->workers);
    for (unsigned i = 0; i < n; i++) {
        px__netw_t *nw = &s->nw[i];
        px__scratch_free_all(nw);
        px__free(nw->rbuf);
        if (nw->reserve_fd >= 0)
            close(nw->reserve_fd);
    }
    px_workers_free(s->workers);
    px__free(s->nw);
    px__free(s->reject_msg);
    px__free(s);
}

void px_listen_opts_init(px_listen_opts_t *o)
{
    memset(o, 0, sizeof *o);
}

int px_server_listen_opts(px_server_t *s, const px_listen_opts_t *o)
{
    if (!o || !o->addr || o->backlog < 0)
        return -EINVAL;
    if (s->nlisteners == PX__MAX_LISTENERS)
        return -ENOSPC;
    px__listener_t *l = &s->listeners[s->nlisteners];
    int r = px__listener_open(s, l, o->addr, o->backlog ? o->backlog : s->opts.backlog);
    if (r)
        return r;
    l->protocol = o->protocol ? px__xstrdup(o->protocol) : NULL;
    l->transport = o->transport;
    l->max_connections = o->max_connections;
    l->handshake_timeout_ms = o->handshake_timeout_ms;
    s->nlisteners++;
    return 0;
}

int px_server_listen(px_server_t *s, const char *addr)
{
    px_listen_opts_t o;
    px_listen_opts_init(&o);
    o.addr = addr;
    return px_server_listen_opts(s, &o);
}

unsigned px_server_listener_count(const px_server_t *s)
{
    return s->nlisteners;
}

const char *px_server_listener_name(const px_server_t *s, unsigned i)
{
    return i < s->nlisteners ? s->listeners[i].name : NULL;
}

/* ---- protocols and modules ---------------------------------------------------- */

static int find_protocol(const px_server_t *s, const char *name)
{
    for (unsigned i = 0; i < s->nprotocols; i++)
        if (strcmp(s->protocols[i].name, name) == 0)
            return (int)i;
    return -1;
}

int px_server_add_protocol(px_server_t *s, const char *name, const px_protocol_t *p,
                           void *(*on_accept)(px_conn_t *c, void *ud), void *ud)
{
    if (!p || !p->on_read || !(name ? name : p->name))
        return -EINVAL;
    if (!name)
        name = p->name;
    int i = find_protocol(s, name);
    if (i < 0) {
        if (s->nprotocols == PX__MAX_PROTOCOLS)
            return -ENOSPC;
        i = (int)s->nprotocols++;
        s->protocols[i].name = px__xstrdup(name);
    }
    s->protocols[i].proto = p;
    s->protocols[i].on_accept = on_accept;
    s->protocols[i].ud = ud;
    return 0;
}

int px_server_protocol_registered(const px_server_t *s, const char *name)
{
    return find_protocol(s, name) >= 0;
}

void px_server_set_protocol(px_server_t *s, const px_protocol_t *p,
                            void *(*on_accept)(px_conn_t *c, void *ud), void *ud)
{
    if (px_server_add_protocol(s, NULL, p, on_accept, ud) == 0)
        s->default_protocol = find_protocol(s, p->name);
}

const px__proto_entry_t *px__server_protocol(const px_server_t *s, const char *name)
{
    if (!name) {
        if (s->nprotocols == 0)
            return NULL;
        return &s->protocols[s->default_protocol >= 0 ? s->default_protocol : 0];
    }
    int i = find_protocol(s, name);
    return i >= 0 ? &s->protocols[i] : NULL;
}

int px_server_module_set(px_server_t *s, const void *key, void *data, void (*free_fn)(void *))
{
    for (unsigned i = 0; i < s->nmodules; i++) {
        if (s->modules[i].key == key) {
            s->modules[i].data = data;
            s->modules[i].free_fn = free_fn;
            return 0;
        }
    }
    px__module_t *m = px__realloc(s->modules, (s->nmodules + 1) * sizeof *m);
    if (!m)
        return -ENOMEM;
    s->modules = m;
    m[s->nmodules++] = (px__module_t){.key = key, .data = data, .free_fn = free_fn};
    return 0;
}

void *px_server_module(const px_server_t *s, const void *key)
{
    for (unsigned i = 0; i < s->nmodules; i++)
        if (s->modules[i].key == key)
            return s->modules[i].data;
    return NULL;
}

static char user_data_key; /* px_server_set_data's module */

void px_server_set_data(px_server_t *s, void *data, void (*free_fn)(void *))
{
    if (px_server_module_set(s, &user_data_key, data, free_fn) != 0)
        px_log(PX_LOG_ERROR, "px_server_set_data: out of memory");
}

void *px_server_get_data(const px_server_t *s)
{
    return px_server_module(s, &user_data_key);
}

void px_server_set_reject_message(px_server_t *s, const void *p, size_t len)
{
    px__free(s->reject_msg);
    s->reject_msg = px__xmalloc(len);
    memcpy(s->reject_msg, p, len);
    s->reject_len = len;
}

px_workers_t *px_server_workers(px_server_t *s)
{
    return s->workers;
}

const px_server_opts_t *px_server_opts(const px_server_t *s)
{
    return &s->opts;
}

unsigned px_server_connection_count(const px_server_t *s)
{
    return atomic_load_explicit(&((px_server_t *)s)->nconns, memory_order_relaxed);
}

int px_server_on_drain(px_server_t *s, void (*cb)(px_worker_t *w, void *ud), void *ud)
{
    if (s->ndrain_hooks == PX_ARRAY_SIZE(s->drain_hooks))
        return -ENOSPC;
    s->drain_hooks[s->ndrain_hooks].cb = cb;
    s->drain_hooks[s->ndrain_hooks].ud = ud;
    s->ndrain_hooks++;
    return 0;
}

void px_server_on_reload(px_server_t *s, void (*cb)(px_server_t *, void *), void *ud)
{
    s->reload_cb = cb;
    s->reload_ud = ud;
}

/* ---- per-worker start and drain ------------------------------------------ */

static void lag_timer_cb(px_timer_t *t)
{
    px__netw_t *nw = t->data;
    px_metric_set(px__m_loop_lag, (int64_t)px_loop_lag_ms(nw->loop));
    px__conn_caches_trim(nw);
    if (!nw->draining)
        px_timer_start(nw->loop, t, 1000);
}

static void stop_worker_loop(px_defer_t *d)
{
    px__netw_t *nw = d->data;
    px_timer_stop(&nw->shutdown_timer);
    px_timer_stop(&nw->lag_timer);
    px_timer_stop(&nw->accept_retry);
    px_loop_stop(nw->loop);
}

void px__netw_start(px__netw_t *nw)
{
    px_server_t *s = nw->server;
    px_worker_t *w = nw->worker;
    nw->rbuf = px__xmalloc(PX__READ_CHUNK);
    nw->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (unsigned i = 0; i < s->nlisteners; i++) {
        px__listener_t *l = &s->listeners[i];
        px_io_init(&nw->listen_io[i], px__listener_fd(l, px_worker_id(w)), px__on_listen_readable,
                   nw);
        unsigned ev = PX_READABLE | (l->kind == PX__LISTEN_TCP ? 0u : (unsigned)PX_EXCLUSIVE);
        int r = px_io_start(nw->loop, &nw->listen_io[i], ev);
        if (r)
            px_log(PX_LOG_ERROR, "cannot watch listener %s: %s", l->name, px_strerror(r));
    }
    px_defer_init(&nw->stop_defer, stop_worker_loop, nw);
    px_timer_init(&nw->accept_retry, px__accept_retry, nw);
    px_timer_init(&nw->lag_timer, lag_timer_cb, nw);
    px_timer_start(nw->loop, &nw->lag_timer, 1000);
}

static void on_worker_start(px_worker_t *w, void *ud)
{
    px_server_t *s = ud;
    px__netw_start(&s->nw[px_worker_id(w)]);
}

int px_server_start(px_server_t *s)
{
    if (s->nprotocols == 0) {
        px_log(PX_LOG_ERROR, "no protocol registered: nothing to serve");
        return -EINVAL;
    }
    for (unsigned i = 0; i < s->nlisteners; i++) {
        px__listener_t *l = &s->listeners[i];
        l->entry = px__server_protocol(s, l->protocol);
        if (!l->entry) {
            px_log(PX_LOG_ERROR, "listener %s: no protocol named \"%s\"", l->name, l->protocol);
            return -EINVAL;
        }
    }
    return px_workers_start(s->workers, on_worker_start, s);
}

void px__netw_conn_gone(px__netw_t *nw)
{
    /* Deferred, not at once: a connection finalised just now may still have its
     * own deferred callback queued (it frees the connection); FIFO order runs
     * it before this one, so the loop never stops with a connection unfreed. */
    if (nw->draining && nw->nconns == 0)
        px_defer(nw->loop, &nw->stop_defer);
}

static void on_shutdown_timeout(px_timer_t *t)
{
    px__netw_t *nw = t->data;
    if (nw->nconns)
        px_log(PX_LOG_WARN, "shutdown timeout: closing %u connection(s) still open", nw->nconns);
    for (px_conn_t *c = nw->conns; c; c = c->next)
        px_conn_abort(c);
}

static void on_drain_msg(px_worker_t *w, px_msg_t *m)
{
    px__netw_t *nw = PX_CONTAINER_OF(m, px__netw_t, shutdown_msg);
    px_server_t *s = nw->server;
    if (nw->draining)
        return;
    nw->draining = 1;
    for (unsigned i = 0; i < s->nlisteners; i++) {
        px_io_stop(&nw->listen_io[i]);
        px__listener_t *l = &s->listeners[i];
        if (l->kind == PX__LISTEN_TCP) {
            /* Close our own SO_REUSEPORT socket now: connections still in its
             * queue are reset rather than left waiting on a dead worker. */
            close(l->worker_fds[px_worker_id(w)]);
            l->worker_fds[px_worker_id(w)] = -1;
        }
    }
    px_timer_init(&nw->shutdown_timer, on_shutdown_timeout, nw);
    px_timer_start(nw->loop, &nw->shutdown_timer, s->opts.shutdown_timeout_ms);
    for (unsigned i = 0; i < s->ndrain_hooks; i++)
        s->drain_hooks[i].cb(w, s->drain_hooks[i].ud);
    px_conn_t *next;
    for (px_conn_t *c = nw->conns; c; c = next) {
        next = c->next;
        px__conn_shutdown(c);
    }
    px__netw_conn_gone(nw);
}

void px_server_shutdown(px_server_t *s)
{
    if (atomic_exchange(&s->shutting_down, 1))
        return;
    unsigned n = px_workers_count(s->workers);
    for (unsigned i = 0; i < n; i++) {
        s->nw[i].shutdown_msg.cb = on_drain_msg;
        px_worker_post(s->nw[i].worker, &s->nw[i].shutdown_msg);
    }
}

int px_server_wait(px_server_t *s)
{
    px_workers_join(s->workers);
    return 0;
}

int px_server_run(px_server_t *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int r = px_server_start(s);
    if (r)
        return r;
    for (unsigned i = 0; i < s->nlisteners; i++)
        px_log(PX_LOG_INFO, "listening on %s", s->listeners[i].name);
    /* Poll the flag too: px_server_shutdown() may come from another thread. */
    struct timespec tick = {0, 200 * 1000 * 1000};
    while (!atomic_load(&s->shutting_down)) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig < 0)
            continue;
        if (sig == SIGHUP) {
            px_log_reopen();
            px_log(PX_LOG_INFO, "SIGHUP: logs re-opened");
            if (s->reload_cb)
                s->reload_cb(s, s->reload_ud);
            continue;
        }
        px_log(PX_LOG_INFO, "%s: shutting down (grace period %llu ms)",
               sig == SIGINT ? "SIGINT" : "SIGTERM",
               (unsigned long long)s->opts.shutdown_timeout_ms);
        px_server_shutdown(s);
    }
    px_server_shutdown(s);
    px_server_wait(s);
    px_log(PX_LOG_INFO, "stopped");
    return 0;
}
