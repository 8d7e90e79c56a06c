/* Loop internals shared by loop.c and its backend (loop_epoll.c.h). */
#ifndef PX_CORE_LOOP_INT_H
#define PX_CORE_LOOP_INT_H

#include <sys/epoll.h>
#include "plexus/loop.h"
#include "core/timerwheel.h"

#define PX__LOOP_MAX_EVENTS 256

struct px_loop {
    int epfd;
    int stop;        /* set by px_loop_stop: px_loop_run returns after this iteration */
    int dispatching; /* inside the event batch: px_io_stop must scrub pending events */
    int batch_pos;   /* index of the event being dispatched */
    int batch_len;   /* events fetched by the last epoll_wait */
    uint64_t now;    /* cached monotonic ms */
    int64_t wall;    /* cached unix seconds */
    uint64_t lag_ms; /* dispatch time of the previous iteration */
    void *data;
    px_defer_t *defer_head, *defer_tail;
    px__wheel_t wheel;
    struct epoll_event events[PX__LOOP_MAX_EVENTS];
};

#endif
