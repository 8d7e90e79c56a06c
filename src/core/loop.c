/* Event loop: epoll + timer wheel + deferred callbacks (see plexus/loop.h).
 *
 * One iteration: poll -> dispatch fd events -> run due timers -> run deferred
 * callbacks. Deferred callbacks run last so that output produced by events and
 * timers in this iteration is flushed once (one writev per connection). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/loop_int.h"

#include "core/loop_epoll.c.h"

static void update_time(px_loop_t *loop)
{
    loop->now = px_now_ms();
    loop->wall = (int64_t)time(NULL);
}

px_loop_t *px_loop_new(void)
{
    px_loop_t *loop = px__calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    if (backend_create(loop) != 0) {
        px__free(loop);
        return NULL;
    }
    update_time(loop);
    px__wheel_init(&loop->wheel, loop->now);
    return loop;
}

void px_loop_free(px_loop_t *loop)
{
    if (!loop)
        return;
    backend_destroy(loop);
    px__free(loop);
}

void px_io_init(px_io_t *io, int fd, px_io_cb cb, void *data)
{
    io->fd = fd;
    io->cb = cb;
    io->data = data;
    io->_loop = NULL;
    io->_events = 0;
}

int px_io_start(px_loop_t *loop, px_io_t *io, unsigned events)
{
    int r;
    if (io->_loop == NULL) {
        r = backend_ctl(loop, io, EPOLL_CTL_ADD, events);
        if (r == 0)
            io->_loop = loop;
    } else {
        if ((io->_events & ~(unsigned)PX_EXCLUSIVE) == (events & ~(unsigned)PX_EXCLUSIVE))
            return 0;
        r = backend_ctl(loop, io, EPOLL_CTL_MOD, events);
    }
    if (r == 0)
        io->_events = events;
    return r;
}

void px_io_stop(px_io_t *io)
{
    px_loop_t *loop = io->_loop;
    if (!loop)
        return;
    backend_del(loop, io);
    io->_loop = NULL;
    io->_events = 0;
    /* Events for this watcher may already sit later in the batch being
     * dispatched. Its owner may close the fd (which a new accept can reuse)
     * and free `io`, so scrub them now (libuv uv__platform_invalidate_fd). */
    if (loop->dispatching) {
        for (int i = loop->batch_pos + 1; i < loop->batch_len; i++)
            if (loop->events[i].data.ptr == io)
                loop->events[i].data.ptr = NULL;
    }
}

void px_timer_init(px_timer_t *t, px_timer_cb cb, void *data)
{
    memset(t, 0, sizeof *t);
    t->cb = cb;
    t->data = data;
}

void px_timer_start(px_loop_t *loop, px_timer_t *t, uint64_t delay_ms)
{
    uint64_t at = delay_ms > UINT64_MAX - loop->now ? UINT64_MAX : loop->now + delay_ms;
    px__wheel_add(&loop->wheel, t, at);
}

void px_timer_stop(px_timer_t *t)
{
    px__wheel_del(t);
}

int px_timer_active(const px_timer_t *t)
{
    return t->_next != NULL;
}

void px_defer_init(px_defer_t *d, px_defer_cb cb, void *data)
{
    d->cb = cb;
    d->data = data;
    d->_next = NULL;
    d->_queued = 0;
}

void px_defer(px_loop_t *loop, px_defer_t *d)
{
    if (d->_queued)
        return;
    d->_queued = 1;
    d->_next = NULL;
    if (loop->defer_tail)
        loop->defer_tail->_next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
}

static void run_deferred(px_loop_t *loop)
{
    /* Take the current list: callbacks queued while it runs go to the next
     * iteration (which then polls with a zero timeout), so a callback that
     * re-queues itself cannot starve I/O. */
    px_defer_t *d = loop->defer_head;
    loop->defer_head = loop->defer_tail = NULL;
    while (d) {
        px_defer_t *next = d->_next;
        d->_next = NULL;
        d->_queued = 0;
        d->cb(d);
        d = next;
    }
}

static int poll_timeout(px_loop_t *loop, int timeout_ms)
{
    if (loop->defer_head || loop->stop)
        return 0;
    int64_t t = px__wheel_timeout(&loop->wheel, loop->now);
    if (t >= 0 && (timeout_ms < 0 || t < timeout_ms))
        return t > 0x7fffffff ? 0x7fffffff : (int)t;
    return timeout_ms;
}

int px_loop_run_once(px_loop_t *loop, int timeout_ms)
{
    int n = backend_poll(loop, poll_timeout(loop, timeout_ms));
    if (n < 0)
        return n;
    update_time(loop);
    uint64_t start = loop->now;

    loop->dispatching = 1;
    loop->batch_len = n;
    for (loop->batch_pos = 0; loop->batch_pos < n; loop->batch_pos++) {
        struct epoll_event *ev = &loop->events[loop->batch_pos];
        px_io_t *io = ev->data.ptr;
        if (!io) /* scrubbed by px_io_stop earlier in this batch */
            continue;
        unsigned events = from_epoll(ev->events);
        /* Report only what the owner still asks for (errors always). */
        if (!(io->_events & PX_WRITABLE))
            events &= ~(unsigned)PX_WRITABLE;
        if (!(io->_events & PX_READABLE) && !(events & PX_HUP))
            events &= ~(unsigned)PX_READABLE;
        if (events)
            io->cb(io, events);
    }
    loop->dispatching = 0;
    loop->batch_len = 0;

    px__wheel_run(&loop->wheel, loop->now);
    run_deferred(loop);
    loop->lag_ms = px_now_ms() - start;
    return 0;
}

int px_loop_run(px_loop_t *loop)
{
    int r = 0;
    while (!loop->stop && r == 0)
        r = px_loop_run_once(loop, -1);
    loop->stop = 0;
    return r;
}

void px_loop_stop(px_loop_t *loop)
{
    loop->stop = 1;
}

uint64_t px_loop_now(const px_loop_t *loop)
{
    return loop->now;
}

uint64_t px_loop_update_time(px_loop_t *loop)
{
    update_time(loop);
    return loop->now;
}

int64_t px_loop_wall_time(const px_loop_t *loop)
{
    return loop->wall;
}

uint64_t px_loop_lag_ms(const px_loop_t *loop)
{
    return loop->lag_ms;
}

void px_loop_set_data(px_loop_t *loop, void *data)
{
    loop->data = data;
}

void *px_loop_get_data(const px_loop_t *loop)
{
    return loop->data;
}
