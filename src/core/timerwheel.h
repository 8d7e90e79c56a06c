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
    /* Time of the last run (never decreases). Every armed timer sits where
     * its (_at, now) puts it: level msb(_at ^ now) / 6, slot (_at >> 6 * level)
     * & 63; timers with _at <= now in level 0 slot (now & 63), timers beyond
     * the 42-bit span in top-level slot 0 (see timerwheel.c). */
    uint64_t now;
    /* Bit i of occupied[L] is set whenever slots[L][i] is non-empty; it may
     * also stay set for an emptied slot (px__wheel_del cannot clear it). */
    uint64_t occupied[PX__WHEEL_LEVELS];
    /* List heads (sentinels) of circular lists, in arming order. */
    px_timer_t slots[PX__WHEEL_LEVELS][PX__WHEEL_SLOTS];
} px__wheel_t;

void px__wheel_init(px__wheel_t *w, uint64_t now);
/** Arm `t` to expire at `at` (absolute). Re-arms if `t` is active. An `at` in the
 * past expires on the next run. */
void px__wheel_add(px__wheel_t *w, px_timer_t *t, uint64_t at);
/** Disarm `t`; a no-op if inactive. Needs no wheel pointer (px_timer_stop has
 * none): `occupied` bits are therefore hints that may stay set for a slot that
 * became empty; run clears them lazily and timeout skips them. */
void px__wheel_del(px_timer_t *t);
/** Advance the wheel to `now` (an earlier `now` counts as w->now) and fire the
 * expired timers; returns how many fired. A long idle gap costs a few bitmap
 * scans, not one step per millisecond. Not reentrant: callbacks must not call
 * px__wheel_run on the same wheel. A callback may free the owner of any timer
 * it has stopped first (a stopped timer is never touched again). */
size_t px__wheel_run(px__wheel_t *w, uint64_t now);
/** Milliseconds from `now` until the next expiry: 0 if one is due, -1 if none
 * is armed. May answer earlier than the exact expiry (a cascade point of a
 * crowded higher-level slot), never later. Cheap: bitmap scans and at most
 * a few list entries, no walk over all timers. */
int64_t px__wheel_timeout(const px__wheel_t *w, uint64_t now);

#endif
