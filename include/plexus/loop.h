/* plexus — event loop: fd watchers (epoll), timers (intrusive timer wheel),
 * deferred callbacks. One loop per worker thread; a loop and everything
 * registered on it are touched only by the thread that runs it. Other threads
 * reach a loop through its worker's mailbox (plexus/worker.h). */
#ifndef PLEXUS_LOOP_H
#define PLEXUS_LOOP_H

#include "plexus/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_loop px_loop_t;

/* ---- fd watchers -------------------------------------------------------- */

enum {
    PX_READABLE = 1u << 0,
    PX_WRITABLE = 1u << 1,
    /** Reported only: peer hung up or the socket has an error. */
    PX_HUP = 1u << 2,
    /** Requested only: share a listening fd between loops (EPOLLEXCLUSIVE). */
    PX_EXCLUSIVE = 1u << 3,
};

typedef struct px_io px_io_t;
typedef void (*px_io_cb)(px_io_t *io, unsigned events);

/** An fd watcher, embedded in its owner. Level-triggered. */
struct px_io {
    int fd;
    px_io_cb cb;
    void *data;
    /* private */
    px_loop_t *_loop; /* NULL while not registered */
    unsigned _events; /* currently registered PX_READABLE|PX_WRITABLE */
};

PX_EXTERN void px_io_init(px_io_t *io, int fd, px_io_cb cb, void *data);
/** Register or change the interest set. events == 0 keeps it registered but silent. */
PX_EXTERN int px_io_start(px_loop_t *loop, px_io_t *io, unsigned events);
/** Unregister. Events for `io` already fetched in the current dispatch batch are
 * dropped, so the owner may close the fd and free `io` after this returns
 * (once outside its own callback). Safe on an unregistered watcher. */
PX_EXTERN void px_io_stop(px_io_t *io);

/* ---- timers ------------------------------------------------------------- */

typedef struct px_timer px_timer_t;
typedef void (*px_timer_cb)(px_timer_t *t);

/** A timer, embedded in its owner: starting one never allocates. Millisecond
 * resolution. Invariant: _next == NULL exactly when the timer is inactive. */
struct px_timer {
    px_timer_cb cb;
    void *data;
    /* private */
    px_timer_t *_next, *_prev; /* links in a wheel slot (circular) */
    uint64_t _at;              /* absolute expiry, loop milliseconds */
};

PX_EXTERN void px_timer_init(px_timer_t *t, px_timer_cb cb, void *data);
/** (Re)arm `t` to fire once, `delay_ms` after the loop's current time. */
PX_EXTERN void px_timer_start(px_loop_t *loop, px_timer_t *t, uint64_t delay_ms);
/** Disarm; a no-op on an inactive timer. */
PX_EXTERN void px_timer_stop(px_timer_t *t);
PX_EXTERN int px_timer_active(const px_timer_t *t);

/* ---- deferred callbacks ----------------------------------------------------- */

typedef struct px_defer px_defer_t;
typedef void (*px_defer_cb)(px_defer_t *d);

/** A callback run once after the current dispatch batch (before the next poll).
 * Used to free objects outside their own callbacks and to flush output. */
struct px_defer {
    px_defer_cb cb;
    void *data;
    /* private */
    px_defer_t *_next;
    int _queued;
};

PX_EXTERN void px_defer_init(px_defer_t *d, px_defer_cb cb, void *data);
/** Queue `d` (a no-op if already queued). Runs on the loop's thread, FIFO. */
PX_EXTERN void px_defer(px_loop_t *loop, px_defer_t *d);

/* ---- the loop ------------------------------------------------------------- */

PX_EXTERN px_loop_t *px_loop_new(void);
/** Free a loop that is not running. Watchers and timers must be stopped first. */
PX_EXTERN void px_loop_free(px_loop_t *loop);
/** Run until px_loop_stop(). Returns 0 or -errno if epoll fails. */
PX_EXTERN int px_loop_run(px_loop_t *loop);
/** Run one iteration: poll (waiting at most timeout_ms, -1 = until an event or
 * timer), dispatch, run timers and deferred callbacks. */
PX_EXTERN int px_loop_run_once(px_loop_t *loop, int timeout_ms);
/** Ask the loop to return from px_loop_run() after the current iteration.
 * Loop thread only; other threads post a message to the worker instead. */
PX_EXTERN void px_loop_stop(px_loop_t *loop);
/** The loop's clock, cached once per iteration (milliseconds, monotonic). */
PX_EXTERN uint64_t px_loop_now(const px_loop_t *loop);
/** Refresh the cached clock (after a long callback). */
PX_EXTERN uint64_t px_loop_update_time(px_loop_t *loop);
/** Wall-clock seconds cached once per iteration (for Date headers and logs). */
PX_EXTERN int64_t px_loop_wall_time(const px_loop_t *loop);
/** Milliseconds the last iteration spent dispatching (loop lag, for metrics). */
PX_EXTERN uint64_t px_loop_lag_ms(const px_loop_t *loop);
/** Arbitrary per-loop user pointer (the worker that runs the loop). */
PX_EXTERN void px_loop_set_data(px_loop_t *loop, void *data);
PX_EXTERN void *px_loop_get_data(const px_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif
