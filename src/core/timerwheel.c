/* Hierarchical timer wheel (contract in timerwheel.h).
 *
 * Placement. A timer lives at the level of the highest 6-bit digit in which
 * its expiry differs from w->now, in the slot named by that digit of _at:
 *
 *     level = msb(_at ^ now) / 6,  slot = (_at >> 6 * level) & 63
 *
 * so a level-L slot holds the timers that share every digit above L with now
 * and whose digit L is larger than now's. Three consequences the code relies
 * on:
 * - The slot at now's own digit is never used at levels >= 1. At level 0 it
 *   is the "due slot": timers with _at <= now go there (past expiries, and
 *   timers armed during a run).
 * - Expiries that differ from now above bit 41 (beyond the 7 levels; only
 *   reachable near a 2^42 ms boundary or with absurd delays) go to the "far
 *   slot", slot 0 of the top level. Slot 0 of the top level is otherwise
 *   unused (a regular top-level slot index is larger than now's digit), and
 *   it is the one cascaded when now crosses a multiple of 2^42.
 * - Placement depends only on (_at, now), and run() cascades a slot as soon
 *   as now enters it, so the wheel always looks as if every timer had just
 *   been added. All timers with equal _at therefore sit in one slot, in the
 *   order they were armed, and cascading walks a slot in order and appends:
 *   ties keep their arming order without a sequence number in px_timer_t.
 *
 * Advancing time. The next event is always in the lowest level that has an
 * occupied slot above now's digit (everything at level L expires before the
 * next level L+1 boundary). run() jumps straight to that slot's start time,
 * cascades it (levels >= 1) and then drains the due slot, so an idle gap of
 * hours costs a few bitmap scans, not one step per millisecond.
 *
 * Firing. run() first moves every expired timer, in firing order, onto a list
 * on its stack, sets w->now to the target time, and only then calls back. A
 * callback that deletes or re-arms a pending timer simply unlinks it from that
 * list, and anything armed by a callback lands in the wheel (at worst in the
 * due slot) and waits for the next run. */
#include "core/timerwheel.h"

#include <assert.h>

#define LEVEL_BITS ((unsigned)PX__WHEEL_BITS)
#define SLOT_MASK  ((uint64_t)PX__WHEEL_SLOTS - 1)
#define TOP_LEVEL  ((unsigned)PX__WHEEL_LEVELS - 1)
/* Bits of time covered by all levels: 42 (~139 years of milliseconds). */
#define SPAN_BITS (LEVEL_BITS * (unsigned)PX__WHEEL_LEVELS)
/* Top-level slot holding timers beyond the current 2^42 ms block. */
#define FAR_SLOT 0u
/* px__wheel_timeout() scans at most this many timers of a higher-level slot for
 * an exact answer; a busier slot answers with its start (a cascade point). */
#define TIMEOUT_SCAN_MAX 8u

static inline unsigned digit(uint64_t time, unsigned level)
{
    return (unsigned)((time >> (level * LEVEL_BITS)) & SLOT_MASK);
}

/* Bits strictly above `idx` (idx in 0..63). */
static inline uint64_t bits_above(unsigned idx)
{
    return ~(uint64_t)1 << idx;
}

/* First millisecond covered by slot `idx` of `level`, in now's enclosing block. */
static inline uint64_t slot_start(uint64_t now, unsigned level, unsigned idx)
{
    unsigned shift = level * LEVEL_BITS;
    uint64_t block = now >> (shift + LEVEL_BITS) << (shift + LEVEL_BITS);
    return block | ((uint64_t)idx << shift);
}

/* Start of the next 2^42 ms block, when the far slot is cascaded; UINT64_MAX if
 * there is none (then no expiry can be in it either). */
static inline uint64_t far_boundary(uint64_t now)
{
    uint64_t block = now >> SPAN_BITS;
    if (block == UINT64_MAX >> SPAN_BITS)
        return UINT64_MAX;
    return (block + 1) << SPAN_BITS;
}

static inline void list_init(px_timer_t *head)
{
    head->_next = head->_prev = head;
}

static inline int list_empty(const px_timer_t *head)
{
    return head->_next == head;
}

static inline void list_append(px_timer_t *head, px_timer_t *t)
{
    t->_prev = head->_prev;
    t->_next = head;
    head->_prev->_next = t;
    head->_prev = t;
}

/* Move all of `src` to the tail of `dst`; `src` ends up empty. */
static inline void list_splice_tail(px_timer_t *dst, px_timer_t *src)
{
    if (list_empty(src))
        return;
    src->_next->_prev = dst->_prev;
    dst->_prev->_next = src->_next;
    src->_prev->_next = dst;
    dst->_prev = src->_prev;
    list_init(src);
}

static void insert(px__wheel_t *w, px_timer_t *t)
{
    uint64_t now = w->now, at = t->_at;
    unsigned level, idx;

    if (at <= now) {
        level = 0;
        idx = digit(now, 0);
    } else {
        unsigned msb = 63u - (unsigned)__builtin_clzll(at ^ now);
        level = msb / LEVEL_BITS;
        if (level > TOP_LEVEL) {
            level = TOP_LEVEL;
            idx = FAR_SLOT;
        } else {
            idx = digit(at, level);
        }
    }
    list_append(&w->slots[level][idx], t);
    w->occupied[level] |= (uint64_t)1 << idx;
}

void px__wheel_init(px__wheel_t *w, uint64_t now)
{
    w->now = now;
    for (unsigned l = 0; l < PX__WHEEL_LEVELS; l++) {
        w->occupied[l] = 0;
        for (unsigned i = 0; i < PX__WHEEL_SLOTS; i++) {
            px_timer_t *head = &w->slots[l][i];
            head->cb = NULL;
            head->data = NULL;
            head->_at = 0;
            list_init(head);
        }
    }
}

void px__wheel_add(px__wheel_t *w, px_timer_t *t, uint64_t at)
{
    px__wheel_del(t);
    t->_at = at;
    insert(w, t);
}

void px__wheel_del(px_timer_t *t)
{
    if (!t->_next)
        return;
    t->_prev->_next = t->_next;
    t->_next->_prev = t->_prev;
    t->_next = t->_prev = NULL;
}

/* The next slot that holds timers after now's due slot: the lowest occupied
 * slot above now's digit at the lowest such level, else the far slot. Empty
 * slots with a stale occupied bit are skipped; their bits are reported in
 * `stale` (per level) when it is not NULL so that run() can clear them.
 * Returns 0 if no timer is armed outside the due slot. */
static int find_next(const px__wheel_t *w, uint64_t *stale, unsigned *level_out, unsigned *idx_out)
{
    for (unsigned l = 0; l < PX__WHEEL_LEVELS; l++) {
        uint64_t bits = w->occupied[l] & bits_above(digit(w->now, l));
        while (bits) {
            unsigned i = (unsigned)__builtin_ctzll(bits);
            if (!list_empty(&w->slots[l][i])) {
                *level_out = l;
                *idx_out = i;
                return 1;
            }
            if (stale)
                stale[l] |= (uint64_t)1 << i;
            bits &= bits - 1;
        }
    }
    if (w->occupied[TOP_LEVEL] & ((uint64_t)1 << FAR_SLOT)) {
        if (!list_empty(&w->slots[TOP_LEVEL][FAR_SLOT])) {
            *level_out = TOP_LEVEL;
            *idx_out = FAR_SLOT;
            return 1;
        }
        if (stale)
            stale[TOP_LEVEL] |= (uint64_t)1 << FAR_SLOT;
    }
    return 0;
}

/* Re-place every timer of a slot relative to the (already advanced) w->now. */
static void cascade(px__wheel_t *w, unsigned level, unsigned idx)
{
    px_timer_t *head = &w->slots[level][idx];
    px_timer_t *t = head->_next;

    /* Detach first: the far slot may receive its own timers back. The detached
     * chain still ends with a link to `head`, which terminates the walk. */
    list_init(head);
    w->occupied[level] &= ~((uint64_t)1 << idx);
    while (t != head) {
        px_timer_t *next = t->_next;
        insert(w, t);
        t = next;
    }
}

/* Stable merge of two NULL-terminated chains (linked by _next) by _at; `a`
 * holds the earlier-armed timers and wins ties. */
static px_timer_t *merge(px_timer_t *a, px_timer_t *b)
{
    px_timer_t first, *tail = &first;
    while (a && b) {
        if (b->_at < a->_at) {
            tail->_next = b;
            b = b->_next;
        } else {
            tail->_next = a;
            a = a->_next;
        }
        tail = tail->_next;
    }
    tail->_next = a ? a : b;
    return first._next;
}

/* Stable sort of a list by _at. Only the due slot can hold different expiries
 * (past-due timers armed since the last run), and it is nearly always short
 * and already sorted, so check that first. Otherwise a bottom-up merge sort:
 * bin[k] holds a sorted run of 2^k timers, older than those in lower bins. */
static void sort_list(px_timer_t *head)
{
    px_timer_t *t, *bin[64] = {NULL};
    unsigned nbins = 0;

    for (t = head->_next; t->_next != head; t = t->_next)
        if (t->_next->_at < t->_at)
            break;
    if (t->_next == head)
        return;

    head->_prev->_next = NULL;
    t = head->_next;
    while (t) {
        px_timer_t *carry = t;
        unsigned k;
        t = t->_next;
        carry->_next = NULL;
        for (k = 0; k < nbins && bin[k]; k++) {
            carry = merge(bin[k], carry);
            bin[k] = NULL;
        }
        bin[k] = carry;
        if (k == nbins)
            nbins++;
    }
    px_timer_t *sorted = NULL;
    for (unsigned k = 0; k < nbins; k++)
        if (bin[k])
            sorted = merge(bin[k], sorted);

    /* Rebuild the back links and close the circle. */
    px_timer_t *prev = head;
    for (t = sorted; t; t = t->_next) {
        prev->_next = t;
        t->_prev = prev;
        prev = t;
    }
    prev->_next = head;
    head->_prev = prev;
}

static void take_due(px__wheel_t *w, px_timer_t *expired)
{
    unsigned idx = digit(w->now, 0);
    list_splice_tail(expired, &w->slots[0][idx]);
    w->occupied[0] &= ~((uint64_t)1 << idx);
}

/* Advance w->now to `now`, moving every timer with _at <= now onto `expired`
 * in firing order. Calls no callbacks. */
static void expire(px__wheel_t *w, uint64_t now, px_timer_t *expired)
{
    px_timer_t *due = &w->slots[0][digit(w->now, 0)];

    if (!list_empty(due))
        sort_list(due);
    take_due(w, expired);

    while (w->now < now) {
        uint64_t stale[PX__WHEEL_LEVELS] = {0};
        unsigned level, idx;
        int found = find_next(w, stale, &level, &idx);

        for (unsigned l = 0; l < PX__WHEEL_LEVELS; l++)
            w->occupied[l] &= ~stale[l];
        if (!found)
            break;

        uint64_t t;
        if (level == TOP_LEVEL && idx == FAR_SLOT) {
            t = far_boundary(w->now);
            if (t > now)
                break;
            /* Skip whole empty 2^42 blocks: jump to the block of the earliest
             * far expiry (or of `now`). Nothing else is armed to be missed. */
            uint64_t min = UINT64_MAX;
            const px_timer_t *head = &w->slots[TOP_LEVEL][FAR_SLOT];
            for (const px_timer_t *f = head->_next; f != head; f = f->_next)
                if (f->_at < min)
                    min = f->_at;
            uint64_t jump = (min < now ? min : now) >> SPAN_BITS << SPAN_BITS;
            if (jump > t)
                t = jump;
        } else {
            t = slot_start(w->now, level, idx);
            if (t > now)
                break;
        }
        /* Every digit below `level` becomes 0 and those slots are empty, so
         * jumping over their boundaries skips no cascade. */
        w->now = t;
        if (level > 0)
            cascade(w, level, idx);
        take_due(w, expired);
    }
    /* No event lies in (w->now, now]: timers keep their places relative to
     * the new time (their digits at their levels stay above now's). */
    w->now = now;
}

size_t px__wheel_run(px__wheel_t *w, uint64_t now)
{
    px_timer_t expired;
    size_t fired = 0;

    if (now < w->now)
        now = w->now;
    list_init(&expired);
    expire(w, now, &expired);

    /* Pop one at a time: callbacks may unlink any entry of `expired`. */
    while (!list_empty(&expired)) {
        px_timer_t *t = expired._next;
        px__wheel_del(t);
        assert(t->cb != NULL);
        t->cb(t);
        fired++;
    }
    return fired;
}

/* Lower bound of the earliest expiry in a slot that starts at `start`: exact
 * when the slot is short, else `start`. */
static uint64_t slot_bound(const px_timer_t *head, uint64_t start)
{
    uint64_t min = UINT64_MAX;
    unsigned n = 0;
    for (const px_timer_t *t = head->_next; t != head; t = t->_next) {
        if (++n > TIMEOUT_SCAN_MAX)
            return start;
        if (t->_at < min)
            min = t->_at;
    }
    return min;
}

int64_t px__wheel_timeout(const px__wheel_t *w, uint64_t now)
{
    unsigned level, idx;
    uint64_t at;

    if (now < w->now)
        now = w->now;
    if (!list_empty(&w->slots[0][digit(w->now, 0)]))
        return 0;
    if (!find_next(w, NULL, &level, &idx))
        return -1;
    if (level == 0) {
        at = slot_start(w->now, 0, idx);
    } else if (level == TOP_LEVEL && idx == FAR_SLOT) {
        at = slot_bound(&w->slots[level][idx], far_boundary(w->now));
    } else {
        at = slot_bound(&w->slots[level][idx], slot_start(w->now, level, idx));
    }
    if (at <= now)
        return 0;
    uint64_t d = at - now;
    return d > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)d;
}
