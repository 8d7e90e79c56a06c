/* Mailbox: intrusive MPSC queue (Vyukov's algorithm, own implementation) plus an
 * eventfd for wake-ups. Internal; workers embed one each. */
#ifndef PX_CORE_MAILBOX_H
#define PX_CORE_MAILBOX_H

#include <stdatomic.h>
#include "plexus/worker.h"

typedef struct px__mailbox {
    /* Producers exchange `head`; the consumer alone touches `tail`. Padding keeps
     * them on different cache lines so producers do not bounce the consumer's
     * line (padding, not _Alignas: the struct lives in malloc'ed memory). */
    _Atomic(px_msg_t *) head;
    char _pad1[64];
    px_msg_t *tail;
    px_msg_t stub;
    int efd;
    char _pad2[64];
    /* 1 while a wake-up is pending (eventfd written and not yet consumed):
     * producers write the eventfd only on the 0 -> 1 transition. */
    atomic_int signaled;
} px__mailbox_t;

int px__mailbox_init(px__mailbox_t *mb);
void px__mailbox_dispose(px__mailbox_t *mb);
/** Enqueue and wake the consumer if needed. Any thread. Returns 1 if it wrote the eventfd. */
int px__mailbox_push(px__mailbox_t *mb, px_msg_t *m);
/** Consumer: acknowledge the wake-up. Call before draining, then drain fully. */
void px__mailbox_ack(px__mailbox_t *mb);
/** Consumer: next message or NULL (empty, or a producer is mid-push: it will
 * signal again when done). */
px_msg_t *px__mailbox_pop(px__mailbox_t *mb);

#endif
