/* plexus — workers and mailboxes (the actor model).
 *
 * A worker is a thread running its own loop; it owns every object registered
 * on that loop. Threads never share those objects: they send messages. Each
 * worker has a mailbox, a lock-free multi-producer single-consumer queue woken
 * by an eventfd; any thread may post, only the worker consumes. */
#ifndef PLEXUS_WORKER_H
#define PLEXUS_WORKER_H

#include "plexus/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_worker px_worker_t;
typedef struct px_workers px_workers_t;
typedef struct px_msg px_msg_t;

/** Runs on the receiving worker's thread, which then owns `m` (free it, reuse it). */
typedef void (*px_msg_cb)(px_worker_t *w, px_msg_t *m);

/** A message header, embedded at the start (or anywhere) of the sender's struct. */
struct px_msg {
    px_msg_cb cb;
    /* private */
    px_msg_t *_next; /* atomic link in the mailbox queue */
};

/** Create `n` workers (0 = one per online CPU). Loops exist; threads do not yet. */
PX_EXTERN px_workers_t *px_workers_new(unsigned n);
/** Free stopped (joined) workers. Accepts NULL. */
PX_EXTERN void px_workers_free(px_workers_t *ws);
PX_EXTERN unsigned px_workers_count(const px_workers_t *ws);
PX_EXTERN px_worker_t *px_workers_get(px_workers_t *ws, unsigned i);
/** Start one thread per worker; each calls on_start(worker, ud) on its own thread,
 * then runs its loop until px_workers_stop(). Signals are blocked in workers. */
PX_EXTERN int px_workers_start(px_workers_t *ws, void (*on_start)(px_worker_t *, void *), void *ud);
/** Ask every worker's loop to return (any thread). */
PX_EXTERN void px_workers_stop(px_workers_t *ws);
/** Wait for every worker thread to end. */
PX_EXTERN void px_workers_join(px_workers_t *ws);

/** After px_workers_join: run the messages still queued in every mailbox on the
 * calling thread, so none is leaked (their callbacks see a stopped loop). Returns how
 * many ran (a callback may post more: call again until it returns 0). */
PX_EXTERN size_t px_workers_drain(px_workers_t *ws);

/** Post `m` to `w`'s mailbox. Any thread, lock-free, never blocks; `m` must stay
 * valid until its callback runs on `w`. */
PX_EXTERN void px_worker_post(px_worker_t *w, px_msg_t *m);
/** The worker running on the calling thread, or NULL. */
PX_EXTERN px_worker_t *px_worker_self(void);
PX_EXTERN unsigned px_worker_id(const px_worker_t *w);
PX_EXTERN px_loop_t *px_worker_loop(px_worker_t *w);
PX_EXTERN px_workers_t *px_worker_group(px_worker_t *w);
/** A user pointer per worker (set before start, or on the worker itself). */
PX_EXTERN void px_worker_set_data(px_worker_t *w, void *data);
PX_EXTERN void *px_worker_get_data(const px_worker_t *w);
/** Number of online CPUs (at least 1). */
PX_EXTERN unsigned px_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
