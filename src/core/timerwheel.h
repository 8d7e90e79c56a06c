/* Hierarchical timer wheel over intrusive px_timer_t entries (internal).
 * Times are absolute milliseconds on the owner's monotonic clock.
 *
 * Contract:
 * - add/del are O(1) and never allocate; a timer is in at most one wheel.
 * - px__wheel_run(now) fires every timer with _at <= now, in order of _at
 *   (ties: the order they were added), and each at most once per arming.
 *   A callback may add or delete any timer, itself included. A timer armed
 *   during a run never fires in that same run, even if already due: it fires in
 *   the next one (so a 0 ms timer that re-arms itself cannot starve the loop).
 * - px__wheel_timeout(now) never returns later than the next expiry. */
#ifndef PX_CORE_TIMERWHEEL_H
#define PX_CORE_TIMERWHEEL_H

#include <stddef.h>
#include <stdint.h>
#include "plexus/loop.h"

#define PX__WHEEL_BITS   6
#define PX__WHEEL_SLOTS  (1u << PX__WHEEL_BITS) /* 64 slots per level */
#define PX__WHEEL_LEVELS 7                      /* 6 * 7 = 42 bits of ms: ~139 years */

typedef struct px__wheel {
    uint64_t now;                                     /* time of the last run */
    size_t count;                                     /* active timers */
    uint64_t occupied[PX__WHEEL_LEVELS];              /* bit i: slot i non-empty */
    px_timer_t slots[PX__WHEEL_LEVELS][PX__WHEEL_SLOTS]; /* list heads (sentinels) */
} px__wheel_t;

void px__wheel_init(px__wheel_t *w, uint64_t now);
/** Arm `t` to expire at `at` (absolute). Re-arms if `t` is active. An `at` in the
 * past expires on the next run. */
void px__wheel_add(px__wheel_t *w, px_timer_t *t, uint64_t at);
/** Disarm `t`; a no-op if inactive. */
void px__wheel_del(px__wheel_t *w, px_timer_t *t);
/** Fire expired timers; returns how many fired. */
size_t px__wheel_run(px__wheel_t *w, uint64_t now);
/** Milliseconds until the next expiry: 0 if one is due, -1 if none is armed. */
int64_t px__wheel_timeout(const px__wheel_t *w, uint64_t now);

#endif
