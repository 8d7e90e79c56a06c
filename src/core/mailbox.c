#include <stdint.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "core/mailbox.h"

#define NEXT(m) ((_Atomic(px_msg_t *) *)&(m)->_next)

int px__mailbox_init(px__mailbox_t *mb)
{
    atomic_store_explicit(NEXT(&mb->stub), NULL, memory_order_relaxed);
    atomic_init(&mb->head, &mb->stub);
    mb->tail = &mb->stub;
    atomic_init(&mb->signaled, 0);
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return mb->efd < 0 ? -errno : 0;
}

void px__mailbox_dispose(px__mailbox_t *mb)
{
    if (mb->efd >= 0)
        close(mb->efd);
    mb->efd = -1;
}

static void enqueue(px__mailbox_t *mb, px_msg_t *m)
{
    atomic_store_explicit(NEXT(m), NULL, memory_order_relaxed);
    px_msg_t *prev = atomic_exchange_explicit(&mb->head, m, memory_order_acq_rel);
    /* Between the exchange and this store the queue is briefly "broken": the
     * consumer sees prev->next == NULL and stops; our signal below wakes it. */
    atomic_store_explicit(NEXT(prev), m, memory_order_release);
}

int px__mailbox_push(px__mailbox_t *mb, px_msg_t *m)
{
    enqueue(mb, m);
    if (atomic_exchange_explicit(&mb->signaled, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        ssize_t r;
        do
            r = write(mb->efd, &one, sizeof one);
        while (r < 0 && errno == EINTR);
        /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
        return 1;
    }
    return 0;
}

void px__mailbox_ack(px__mailbox_t *mb)
{
    uint64_t v;
    ssize_t r;
    do
        r = read(mb->efd, &v, sizeof v);
    while (r < 0 && errno == EINTR);
    /* An RMW, not a plain store: if a producer's exchange came before ours, we
     * read its value and so synchronise with it (its push is visible to the
     * pops that follow); if ours came first, it sees 0 and signals again. */
    atomic_exchange_explicit(&mb->signaled, 0, memory_order_acq_rel);
}

px_msg_t *px__mailbox_pop(px__mailbox_t *mb)
{
    px_msg_t *tail = mb->tail;
    px_msg_t *next = atomic_load_explicit(NEXT(tail), memory_order_acquire);
    if (tail == &mb->stub) {
        if (!next)
            return NULL;
        mb->tail = next;
        tail = next;
        next = atomic_load_explicit(NEXT(next), memory_order_acquire);
    }
    if (next) {
        mb->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&mb->head, memory_order_acquire))
        return NULL; /* a producer is mid-push; it signals when done */
    /* tail is the last message: re-insert the stub behind it so tail can advance. */
    enqueue(mb, &mb->stub);
    next = atomic_load_explicit(NEXT(tail), memory_order_acquire);
    if (next) {
        mb->tail = next;
        return tail;
    }
    return NULL;
}
