#ifndef PX_CORE_WORKER_INT_H
#define PX_CORE_WORKER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include "core/mailbox.h"

#define PX__MAX_WORKERS 256

struct px_worker {
    px__mailbox_t mailbox;
    unsigned id;
    int started; /* thread created and not yet joined */
    px_loop_t *loop;
    px_workers_t *group;
    px_io_t mailbox_io;
    px_msg_t stop_msg; /* preallocated so px_workers_stop never allocates */
    pthread_t thread;
    void *data;
};

struct px_workers {
    unsigned count;
    atomic_int stopping; /* px_workers_stop posts each stop message once */
    void (*on_start)(px_worker_t *, void *);
    void *on_start_ud;
    px_worker_t *w[];
};

#endif
