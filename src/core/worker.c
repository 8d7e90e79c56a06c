/* Workers: one thread + one loop + one mailbox each (see plexus/worker.h). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "core/metrics.h"
#include "core/worker_int.h"

static __thread px_worker_t *current_worker;

px_worker_t *px_worker_self(void)
{
    return current_worker;
}

unsigned px_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void on_mailbox(px_io_t *io, unsigned events)
{
    PX_UNUSED(events);
    px_worker_t *w = io->data;
    px__mailbox_ack(&w->mailbox);
    px_msg_t *m;
    while ((m = px__mailbox_pop(&w->mailbox)) != NULL)
        m->cb(w, m);
}

px_workers_t *px_workers_new(unsigned n)
{
    if (n == 0)
        n = px_cpu_count();
    if (n > PX__MAX_WORKERS)
        return NULL;
    px_workers_t *ws = px__calloc(1, sizeof *ws + n * sizeof(px_worker_t *));
    if (!ws)
        return NULL;
    ws->count = n;
    for (unsigned i = 0; i < n; i++) {
        px_worker_t *w = px__calloc(1, sizeof *w);
        if (!w)
            goto fail;
        ws->w[i] = w;
        w->id = i;
        w->group = ws;
        w->mailbox.efd = -1;
        w->loop = px_loop_new();
        if (!w->loop || px__mailbox_init(&w->mailbox) != 0)
            goto fail;
        px_loop_set_data(w->loop, w);
        px_io_init(&w->mailbox_io, w->mailbox.efd, on_mailbox, w);
        if (px_io_start(w->loop, &w->mailbox_io, PX_READABLE) != 0)
            goto fail;
    }
    return ws;
fail:
    px_workers_free(ws);
    return NULL;
}

void px_workers_free(px_workers_t *ws)
{
    if (!ws)
        return;
    for (unsigned i = 0; i < ws->count; i++) {
        px_worker_t *w = ws->w[i];
        if (!w)
            continue;
        if (w->loop)
            px_io_stop(&w->mailbox_io);
        px__mailbox_dispose(&w->mailbox);
        px_loop_free(w->loop);
        px__free(w);
    }
    px__free(ws);
}

unsigned px_workers_count(const px_workers_t *ws)
{
    return ws->count;
}

px_worker_t *px_workers_get(px_workers_t *ws, unsigned i)
{
    return i < ws->count ? ws->w[i] : NULL;
}

static void *thread_main(void *arg)
{
    px_worker_t *w = arg;
    current_worker = w;
    px__metrics_bind(w->id);
    if (w->group->on_start)
        w->group->on_start(w, w->group->on_start_ud);
    int r = px_loop_run(w->loop);
    if (r < 0)
        px_log(PX_LOG_ERROR, "worker loop failed: %s", px_strerror(r));
    current_worker = NULL;
    return NULL;
}

int px_workers_start(px_workers_t *ws, void (*on_start)(px_worker_t *, void *), void *ud)
{
    ws->on_start = on_start;
    ws->on_start_ud = ud;
    atomic_store(&ws->stopping, 0);
    /* Workers never take signals: the main thread waits for them with sigwait. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = 0;
    for (unsigned i = 0; i < ws->count; i++) {
        int e = pthread_create(&ws->w[i]->thread, NULL, thread_main, ws->w[i]);
        if (e != 0) {
            r = -e;
            px_workers_stop(ws);
            for (unsigned j = 0; j < i; j++)
                pthread_join(ws->w[j]->thread, NULL);
            break;
        }
        ws->w[i]->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

static void on_stop(px_worker_t *w, px_msg_t *m)
{
    PX_UNUSED(m);
    px_loop_stop(w->loop);
}

void px_workers_stop(px_workers_t *ws)
{
    /* A message can be queued once: posting the same stop message twice would
     * link it to itself. */
    if (atomic_exchange(&ws->stopping, 1))
        return;
    for (unsigned i = 0; i < ws->count; i++) {
        px_worker_t *w = ws->w[i];
        w->stop_msg.cb = on_stop;
        px_worker_post(w, &w->stop_msg);
    }
}

void px_workers_join(px_workers_t *ws)
{
    for (unsigned i = 0; i < ws->count; i++) {
        if (ws->w[i]->started) {
            pthread_join(ws->w[i]->thread, NULL);
            ws->w[i]->started = 0;
        }
    }
}

size_t px_workers_drain(px_workers_t *ws)
{
    size_t n = 0;
    for (unsigned i = 0; i < ws->count; i++) {
        px_worker_t *w = ws->w[i];
        px_msg_t *m;
        while ((m = px__mailbox_pop(&w->mailbox)) != NULL) {
            m->cb(w, m);
            n++;
        }
    }
    return n;
}

void px_worker_post(px_worker_t *w, px_msg_t *m)
{
    px__mailbox_push(&w->mailbox, m);
}

unsigned px_worker_id(const px_worker_t *w)
{
    return w->id;
}

px_loop_t *px_worker_loop(px_worker_t *w)
{
    return w->loop;
}

px_workers_t *px_worker_group(px_worker_t *w)
{
    return w->group;
}

void px_worker_set_data(px_worker_t *w, void *data)
{
    w->data = data;
}

void *px_worker_get_data(const px_worker_t *w)
{
    return w->data;
}
