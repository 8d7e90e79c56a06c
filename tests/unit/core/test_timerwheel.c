/* Unit tests for the hierarchical timer wheel (src/core/timerwheel.c).
 *
 * Besides targeted cases, a structural checker walks every slot and verifies
 * that each armed timer sits exactly where its (_at, now) says it should, and a
 * randomized differential test drives the wheel and a sorted-array model with
 * the same operations, including callbacks that add and delete timers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/timerwheel.h"

/* ---- helpers -------------------------------------------------------------- */

/* splitmix64: deterministic, seedable, good enough for test inputs. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform-ish in [0, n); n > 0. */
static uint64_t rnd_below(uint64_t n)
{
    return rnd() % n;
}

static px__wheel_t wheel; /* ~14 KiB: keep it off the stack */

/* Where the wheel must keep a timer armed for `at` when its clock is `now`
 * (restates the placement rule of timerwheel.c independently). */
static void expected_place(uint64_t now, uint64_t at, unsigned *level, unsigned *idx)
{
    if (at <= now) {
        *level = 0;
        *idx = (unsigned)(now & 63);
        return;
    }
    unsigned l = 0;
    while (l < 7 && (at >> (6 * (l + 1))) != (now >> (6 * (l + 1))))
        l++;
    if (l == 7) { /* beyond the top level: the far slot */
        *level = 6;
        *idx = 0;
        return;
    }
    *level = l;
    *idx = (unsigned)((at >> (6 * l)) & 63);
}

/* Walk every slot: links are consistent, every timer is placed as if just
 * added, occupied bits cover non-empty slots. Returns the number armed. */
static size_t check_wheel(const px__wheel_t *w)
{
    size_t n = 0;
    for (unsigned l = 0; l < PX__WHEEL_LEVELS; l++) {
        for (unsigned i = 0; i < PX__WHEEL_SLOTS; i++) {
            const px_timer_t *head = &w->slots[l][i];
            if (head->_next != head)
                assert_true(w->occupied[l] & ((uint64_t)1 << i));
            for (const px_timer_t *t = head->_next; t != head; t = t->_next) {
                unsigned el, ei;
                assert_ptr_equal(t->_next->_prev, t);
                assert_ptr_equal(t->_prev->_next, t);
                expected_place(w->now, t->_at, &el, &ei);
                assert_int_equal(el, l);
                assert_int_equal(ei, i);
                n++;
            }
        }
    }
    return n;
}

/* ---- a recording timer ---------------------------------------------------- */

typedef struct rec_timer {
    px_timer_t timer;
    unsigned id;
    uint64_t seq; /* arming order, for the tie rule */
    int fired;
    uint64_t fired_now;                   /* wheel.now when it fired */
    void (*hook)(struct rec_timer *self); /* extra action inside the callback */
    struct rec_timer *other;              /* target of the hook */
} rec_timer_t;

static unsigned fire_log[1 << 16];
static size_t fire_len;
static uint64_t arm_seq;

static void rec_cb(px_timer_t *t)
{
    rec_timer_t *r = PX_CONTAINER_OF(t, rec_timer_t, timer);
    assert_ptr_equal(t->data, r);
    assert_null(t->_next); /* inactive while its callback runs */
    assert_true(t->_at <= wheel.now);
    r->fired++;
    r->fired_now = wheel.now;
    if (fire_len < PX_ARRAY_SIZE(fire_log))
        fire_log[fire_len++] = r->id;
    if (r->hook)
        r->hook(r);
}

static void rec_init(rec_timer_t *r, unsigned id)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    r->timer.cb = rec_cb;
    r->timer.data = r;
}

static void rec_arm(rec_timer_t *r, uint64_t at)
{
    r->seq = ++arm_seq;
    px__wheel_add(&wheel, &r->timer, at);
}

static void reset(uint64_t now)
{
    px__wheel_init(&wheel, now);
    fire_len = 0;
    arm_seq = 0;
}

/* ---- basic ---------------------------------------------------------------- */

static void test_empty(void **state)
{
    (void)state;
    reset(1000);
    assert_int_equal(px__wheel_timeout(&wheel, 1000), -1);
    assert_int_equal(px__wheel_run(&wheel, 5000), 0);
    assert_int_equal(wheel.now, 5000);
    /* Time going backward is treated as no time passing. */
    assert_int_equal(px__wheel_run(&wheel, 10), 0);
    assert_int_equal(wheel.now, 5000);
    assert_int_equal(px__wheel_timeout(&wheel, 10), -1);
    assert_int_equal(check_wheel(&wheel), 0);
}

static void test_single(void **state)
{
    rec_timer_t a;
    (void)state;
    reset(100);
    rec_init(&a, 1);
    assert_null(a.timer._next);
    rec_arm(&a, 150);
    assert_non_null(a.timer._next);
    assert_int_equal(px__wheel_timeout(&wheel, 100), 50);
    assert_int_equal(px__wheel_timeout(&wheel, 120), 30);
    assert_int_equal(px__wheel_timeout(&wheel, 150), 0);
    assert_int_equal(px__wheel_run(&wheel, 149), 0);
    assert_int_equal(px__wheel_timeout(&wheel, 149), 1);
    assert_int_equal(px__wheel_run(&wheel, 150), 1);
    assert_int_equal(a.fired, 1);
    assert_int_equal(a.fired_now, 150);
    assert_null(a.timer._next);
    assert_int_equal(px__wheel_run(&wheel, 100000), 0);
    assert_int_equal(px__wheel_timeout(&wheel, 100000), -1);
}

/* ---- ordering ------------------------------------------------------------- */

#define ORDER_N 20000
static rec_timer_t order_timers[ORDER_N];

static void test_ordering(void **state)
{
    const uint64_t base = 123456789;
    (void)state;
    rng_seed(1);
    reset(base);

    /* Half crowd into 200 ms (many ties), the rest spread over ~18 hours. */
    for (unsigned i = 0; i < ORDER_N; i++) {
        rec_init(&order_timers[i], i);
        uint64_t d = (i & 1) ? 1 + rnd_below(200) : 1 + rnd_below((uint64_t)1 << 26);
        rec_arm(&order_timers[i], base + d);
    }
    /* Re-arm a few, which sends them behind their ties. */
    for (unsigned i = 0; i < ORDER_N; i += 97)
        rec_arm(&order_timers[i], order_timers[i].timer._at);
    assert_int_equal(check_wheel(&wheel), ORDER_N);

    uint64_t now = base, prev = base;
    size_t fired = 0;
    while (fired < ORDER_N) {
        uint64_t step = rnd_below(8) == 0 ? rnd_below((uint64_t)1 << 21) : rnd_below(50);
        prev = now;
        now += step;
        size_t before = fire_len;
        fired += px__wheel_run(&wheel, now);
        assert_int_equal(fire_len, fired);
        /* Each fired in the first run whose time reached its expiry. */
        for (size_t k = before; k < fire_len; k++) {
            const rec_timer_t *r = &order_timers[fire_log[k]];
            assert_true(r->timer._at <= now);
            assert_true(r->timer._at > prev || prev == base);
            assert_int_equal(r->fired_now, now);
        }
        if (rnd_below(64) == 0)
            assert_int_equal(check_wheel(&wheel), ORDER_N - fired);
    }
    for (size_t k = 1; k < fire_len; k++) {
        const rec_timer_t *a = &order_timers[fire_log[k - 1]];
        const rec_timer_t *b = &order_timers[fire_log[k]];
        assert_true(a->timer._at <= b->timer._at);
        if (a->timer._at == b->timer._at)
            assert_true(a->seq < b->seq);
    }
    for (unsigned i = 0; i < ORDER_N; i++)
        assert_int_equal(order_timers[i].fired, 1);
    assert_int_equal(px__wheel_timeout(&wheel, now), -1);
}

/* Timers armed with expiries in the past, in scrambled order, fire sorted by
 * expiry at the next run, ties in arming order, before later ones. */
static void test_past_due_order(void **state)
{
    rec_timer_t t[64];
    (void)state;
    rng_seed(2);
    reset(10000);
    for (unsigned i = 0; i < 64; i++) {
        rec_init(&t[i], i);
        rec_arm(&t[i], 10000 - rnd_below(16)); /* <= now: due */
    }
    rec_timer_t later;
    rec_init(&later, 99);
    rec_arm(&later, 10001);
    assert_int_equal(px__wheel_timeout(&wheel, 10000), 0);
    assert_int_equal(check_wheel(&wheel), 65);
    assert_int_equal(px__wheel_run(&wheel, 10000), 64);
    for (size_t k = 1; k < fire_len; k++) {
        const rec_timer_t *a = &t[fire_log[k - 1]], *b = &t[fire_log[k]];
        assert_true(a->timer._at < b->timer._at ||
                    (a->timer._at == b->timer._at && a->seq < b->seq));
    }
    assert_int_equal(later.fired, 0);
    assert_int_equal(px__wheel_run(&wheel, 10001), 1);
    assert_int_equal(later.fired, 1);
}

/* ---- cancel --------------------------------------------------------------- */

static void hook_del_other(rec_timer_t *self)
{
    px__wheel_del(&self->other->timer);
    px__wheel_del(&self->timer); /* inactive already: a no-op */
}

static void test_cancel(void **state)
{
    rec_timer_t a, b, c, d;
    (void)state;
    reset(0);
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_init(&c, 2);
    rec_init(&d, 3);

    px__wheel_del(&a.timer); /* never armed: no-op */
    assert_null(a.timer._next);

    rec_arm(&a, 10);
    rec_arm(&b, 10);
    rec_arm(&c, 5000);
    px__wheel_del(&b.timer);
    assert_null(b.timer._next);
    px__wheel_del(&b.timer); /* twice: no-op */
    assert_int_equal(check_wheel(&wheel), 2);
    assert_int_equal(px__wheel_run(&wheel, 4999), 1);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 0);
    px__wheel_del(&c.timer);
    assert_int_equal(px__wheel_timeout(&wheel, 4999), -1);
    assert_int_equal(px__wheel_run(&wheel, 1000000), 0);
    assert_int_equal(c.fired, 0);

    /* Deleted inside the callback of another timer due in the same run: both
     * a tie and a later expiry in the same run. */
    a.fired = b.fired = 0;
    rec_arm(&a, 1000010);
    rec_arm(&b, 1000010);
    rec_arm(&c, 1000011);
    rec_arm(&d, 1000012);
    a.hook = hook_del_other;
    a.other = &b;
    c.hook = hook_del_other;
    c.other = &d;
    assert_int_equal(px__wheel_run(&wheel, 1000020), 2);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 0);
    assert_int_equal(c.fired, 1);
    assert_int_equal(d.fired, 0);
    assert_null(b.timer._next);
    assert_null(d.timer._next);
    assert_int_equal(check_wheel(&wheel), 0);

    /* Deleting every timer of a slot leaves only a stale occupied bit, which
     * neither timeout nor run may mistake for a timer. */
    rec_arm(&a, 1000020 + 300000);
    rec_arm(&b, 1000020 + 300001);
    px__wheel_del(&a.timer);
    px__wheel_del(&b.timer);
    assert_int_equal(px__wheel_timeout(&wheel, 1000020), -1);
    assert_int_equal(px__wheel_run(&wheel, 1000020 + 400000), 0);
    assert_int_equal(px__wheel_timeout(&wheel, 1000020 + 400000), -1);
}

/* ---- re-arm --------------------------------------------------------------- */

static void hook_rearm_self_now(rec_timer_t *self)
{
    rec_arm(self, wheel.now); /* 0 ms: already due, but not in this run */
}

static void hook_rearm_self_past(rec_timer_t *self)
{
    rec_arm(self, wheel.now - 5);
}

static void hook_rearm_other(rec_timer_t *self)
{
    rec_arm(self->other, self->other->timer._at + 0);
}

static void hook_rearm_other_later(rec_timer_t *self)
{
    rec_arm(self->other, wheel.now + 100);
}

static void test_rearm(void **state)
{
    rec_timer_t a, b, c;
    (void)state;
    reset(0);
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_init(&c, 2);

    /* Moving earlier and later. */
    rec_arm(&a, 100);
    rec_arm(&a, 50);
    assert_int_equal(check_wheel(&wheel), 1);
    assert_int_equal(px__wheel_run(&wheel, 60), 1);
    assert_int_equal(a.fired_now, 60);
    assert_int_equal(px__wheel_run(&wheel, 200), 0);
    rec_arm(&a, 250);
    rec_arm(&a, 300000);
    assert_int_equal(px__wheel_run(&wheel, 299999), 0);
    assert_int_equal(px__wheel_run(&wheel, 300000), 1);
    assert_int_equal(a.fired, 2);

    /* Re-arming a tie sends it behind the others. */
    fire_len = 0;
    rec_arm(&a, 300010);
    rec_arm(&b, 300010);
    rec_arm(&c, 300010);
    rec_arm(&a, 300010);
    assert_int_equal(px__wheel_run(&wheel, 300010), 3);
    assert_int_equal(fire_log[0], 1);
    assert_int_equal(fire_log[1], 2);
    assert_int_equal(fire_log[2], 0);

    /* A 0 ms timer re-arming itself fires once per run, not forever. */
    a.fired = 0;
    a.hook = hook_rearm_self_now;
    rec_arm(&a, 300010);
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(px__wheel_timeout(&wheel, 300010), 0);
        assert_int_equal(px__wheel_run(&wheel, 300010), 1);
        assert_int_equal(a.fired, i);
        assert_non_null(a.timer._next);
    }
    a.hook = hook_rearm_self_past;
    assert_int_equal(px__wheel_run(&wheel, 300011), 1);
    assert_int_equal(px__wheel_run(&wheel, 300011), 1);
    assert_int_equal(a.timer._at, 300011 - 5);
    a.hook = NULL;
    assert_int_equal(px__wheel_run(&wheel, 300012), 1);
    assert_null(a.timer._next);

    /* Re-armed by another callback while due in the same run: not this run. */
    fire_len = 0;
    a.hook = hook_rearm_other;
    a.other = &b;
    rec_arm(&a, 300020);
    rec_arm(&b, 300020);
    assert_int_equal(px__wheel_run(&wheel, 300030), 1);
    assert_int_equal(fire_log[0], 0);
    assert_int_equal(px__wheel_run(&wheel, 300030), 1);
    assert_int_equal(fire_log[1], 1);

    /* ... or moved past the run's time: fires at its new time only. */
    a.hook = hook_rearm_other_later;
    b.fired = 0;
    rec_arm(&a, 300040);
    rec_arm(&b, 300041);
    assert_int_equal(px__wheel_run(&wheel, 300050), 1);
    assert_int_equal(b.fired, 0);
    assert_int_equal(b.timer._at, 300150);
    assert_int_equal(px__wheel_run(&wheel, 300149), 0);
    assert_int_equal(px__wheel_run(&wheel, 300150), 1);
    assert_int_equal(b.fired, 1);
}

/* ---- wrap and jumps ------------------------------------------------------- */

#define WRAP_MAX 256
static rec_timer_t wrap_timers[WRAP_MAX];

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Arm timers at `ats` from clock `base`, then run at every at-1 and at: each
 * must fire exactly at its expiry, in order. */
static void run_exact(uint64_t base, const uint64_t *ats, unsigned n)
{
    static uint64_t stops[2 * WRAP_MAX];
    unsigned nstops = 0;

    assert_true(n <= WRAP_MAX);
    reset(base);
    for (unsigned i = 0; i < n; i++) {
        rec_init(&wrap_timers[i], i);
        rec_arm(&wrap_timers[i], ats[i]);
        stops[nstops++] = ats[i] - 1;
        stops[nstops++] = ats[i];
    }
    assert_int_equal(check_wheel(&wheel), n);
    qsort(stops, nstops, sizeof stops[0], cmp_u64);
    for (unsigned s = 0; s < nstops; s++) {
        uint64_t min = UINT64_MAX;
        for (unsigned i = 0; i < n; i++)
            if (wrap_timers[i].timer._next && wrap_timers[i].timer._at < min)
                min = wrap_timers[i].timer._at;
        int64_t to = px__wheel_timeout(&wheel, wheel.now);
        if (min == UINT64_MAX)
            assert_int_equal(to, -1);
        else if (min <= wheel.now)
            assert_int_equal(to, 0);
        else
            assert_true(to > 0 && (uint64_t)to <= min - wheel.now);

        size_t before = fire_len;
        px__wheel_run(&wheel, stops[s]);
        for (size_t k = before; k < fire_len; k++) {
            const rec_timer_t *r = &wrap_timers[fire_log[k]];
            /* On time: at its expiry, or at the first run if armed already due. */
            assert_int_equal(r->fired_now, wheel.now);
            assert_true(r->timer._at == wheel.now || r->timer._at <= base);
        }
        assert_int_equal(check_wheel(&wheel), n - fire_len);
    }
    assert_int_equal(fire_len, n);
}

static void test_wrap_levels(void **state)
{
    static const uint64_t bases[] = {
        0,
        1000,
        (uint64_t)1 << 40,
        ((uint64_t)1 << 40) + 12345,
        ((uint64_t)1 << 42) - 100,
        ((uint64_t)1 << 42) - 1,
        3 * ((uint64_t)1 << 42) - 5000,
        ((uint64_t)1000 << 42) - 7,
    };
    uint64_t ats[WRAP_MAX];
    (void)state;

    for (unsigned b = 0; b < PX_ARRAY_SIZE(bases); b++) {
        uint64_t base = bases[b];
        unsigned n = 0;
        for (unsigned k = 1; k <= 7; k++) {
            uint64_t span = (uint64_t)1 << (6 * k);
            /* Relative to the base... */
            ats[n++] = base + span - 1;
            ats[n++] = base + span;
            ats[n++] = base + span + 1;
            /* ... and at the next aligned boundary of that level. */
            uint64_t m = (base / span + 1) * span;
            ats[n++] = m - 1;
            ats[n++] = m;
            ats[n++] = m + 1;
            ats[n++] = m + span - 1;
        }
        ats[n++] = base + 1;
        ats[n++] = base + 1; /* a tie */
        run_exact(base, ats, n);
    }
}

/* An expiry just across a 2^42 boundary starts in the far slot. */
static void test_far_boundary(void **state)
{
    rec_timer_t a, b;
    const uint64_t edge = (uint64_t)1 << 42;
    (void)state;

    reset(edge - 3);
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_arm(&a, edge + 2);
    rec_arm(&b, edge - 1);
    assert_int_equal(check_wheel(&wheel), 2);
    int64_t to = px__wheel_timeout(&wheel, wheel.now);
    assert_true(to >= 0 && to <= 2);
    for (uint64_t now = edge - 3; now < edge + 2; now++) {
        px__wheel_run(&wheel, now);
        assert_int_equal(a.fired, 0);
        assert_int_equal(b.fired, now >= edge - 1);
        to = px__wheel_timeout(&wheel, now);
        assert_true(to >= 0 && (uint64_t)to <= edge + 2 - now);
    }
    assert_int_equal(px__wheel_run(&wheel, edge + 2), 1);
    assert_int_equal(a.fired, 1);

    /* Absurd expiries: far beyond the wheel's 42 bits, up to UINT64_MAX. */
    reset(1000);
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_arm(&a, UINT64_MAX);
    rec_arm(&b, ((uint64_t)1 << 50) + 5);
    assert_int_equal(check_wheel(&wheel), 2);
    to = px__wheel_timeout(&wheel, 1000);
    assert_true(to > 0 && (uint64_t)to <= ((uint64_t)1 << 50) + 5 - 1000);
    assert_int_equal(px__wheel_run(&wheel, (uint64_t)1 << 45), 0);
    assert_int_equal(check_wheel(&wheel), 2);
    assert_int_equal(px__wheel_run(&wheel, ((uint64_t)1 << 50) + 4), 0);
    assert_int_equal(px__wheel_timeout(&wheel, wheel.now), 1);
    assert_int_equal(px__wheel_run(&wheel, ((uint64_t)1 << 50) + 5), 1);
    assert_int_equal(b.fired, 1);
    assert_int_equal(px__wheel_run(&wheel, UINT64_MAX - 1), 0);
    assert_int_equal(px__wheel_timeout(&wheel, wheel.now), 1);
    assert_int_equal(px__wheel_run(&wheel, UINT64_MAX), 1);
    assert_int_equal(a.fired, 1);
    assert_int_equal(px__wheel_timeout(&wheel, UINT64_MAX), -1);
}

/* One run across a long idle gap fires everything in order (and must not step
 * millisecond by millisecond: 2^41 ms would never finish). */
static void test_long_jump(void **state)
{
    static rec_timer_t t[512];
    const uint64_t base = (uint64_t)1 << 40;
    (void)state;
    rng_seed(3);
    reset(base);
    for (unsigned i = 0; i < 512; i++) {
        rec_init(&t[i], i);
        uint64_t d = rnd_below(4) == 0 ? rnd_below(1000) : rnd_below((uint64_t)1 << 41);
        rec_arm(&t[i], base + d);
    }
    rec_timer_t late;
    rec_init(&late, 999);
    rec_arm(&late, base + ((uint64_t)1 << 41) + 1);

    size_t first = px__wheel_run(&wheel, base + 3600 * 1000);
    assert_int_equal(first, fire_len);
    assert_true(first >= 64); /* the quarter armed within a second, at least */
    size_t rest = px__wheel_run(&wheel, base + ((uint64_t)1 << 41));
    assert_int_equal(first + rest, 512);
    for (size_t k = 1; k < fire_len; k++) {
        const rec_timer_t *a = &t[fire_log[k - 1]], *b = &t[fire_log[k]];
        assert_true(a->timer._at < b->timer._at ||
                    (a->timer._at == b->timer._at && a->seq < b->seq));
    }
    assert_int_equal(late.fired, 0);
    assert_int_equal(px__wheel_timeout(&wheel, wheel.now), 1);
    assert_int_equal(check_wheel(&wheel), 1);
}

/* ---- timeout -------------------------------------------------------------- */

#define TO_N 64
static rec_timer_t to_timers[TO_N];

static void test_timeout_random(void **state)
{
    (void)state;
    rng_seed(4);
    for (int round = 0; round < 2000; round++) {
        uint64_t base = rnd_below(4) == 0 ? rnd() >> 2 : rnd_below((uint64_t)1 << 43);
        unsigned n = (unsigned)rnd_below(TO_N);
        uint64_t min = UINT64_MAX;
        reset(base);
        for (unsigned i = 0; i < n; i++) {
            uint64_t d;
            switch (rnd_below(5)) {
            case 0: d = rnd_below(64); break;
            case 1: d = rnd_below(5000); break;
            case 2: d = rnd_below((uint64_t)1 << 20); break;
            case 3: d = rnd_below((uint64_t)1 << 30); break;
            default: d = rnd_below((uint64_t)1 << 44); break;
            }
            rec_init(&to_timers[i], i);
            rec_arm(&to_timers[i], base + 1 + d);
        }
        /* Delete some, possibly the earliest, leaving stale bits behind. */
        for (unsigned i = 0; i < n; i++) {
            if (rnd_below(3) == 0)
                px__wheel_del(&to_timers[i].timer);
            else if (to_timers[i].timer._at < min)
                min = to_timers[i].timer._at;
        }
        /* Asking from the wheel's own time and from later (the loop's clock may
         * be ahead of the last run). */
        for (int q = 0; q < 3; q++) {
            uint64_t now = q == 0 ? base : base + rnd_below((uint64_t)1 << (10 * q));
            int64_t to = px__wheel_timeout(&wheel, now);
            if (min == UINT64_MAX) {
                assert_int_equal(to, -1);
            } else if (min <= now) {
                assert_int_equal(to, 0);
            } else {
                assert_true(to >= 0);
                assert_true((uint64_t)to <= min - now);
                if (now == base)
                    assert_true(to > 0); /* nothing is due yet */
            }
        }
        /* Sleeping for the timeout repeatedly reaches the earliest expiry in a
         * few wake-ups (cascade points), firing nothing early. */
        if (min != UINT64_MAX) {
            int wakeups = 0;
            for (;;) {
                int64_t to = px__wheel_timeout(&wheel, wheel.now);
                assert_true(to >= 0);
                size_t fired = px__wheel_run(&wheel, wheel.now + (uint64_t)to);
                if (fired) {
                    assert_int_equal(wheel.now, min);
                    break;
                }
                assert_true(++wakeups <= 2 * PX__WHEEL_LEVELS + 2);
            }
        }
    }
}

/* ---- differential test against a sorted-array model ----------------------- */

#define DIFF_POOL 1024

typedef struct diff_timer {
    px_timer_t timer;
    unsigned id;
    /* The model's view. */
    int active;
    int pending; /* expected to fire in the current run */
    uint64_t at, seq;
} diff_timer_t;

static diff_timer_t diff[DIFF_POOL];
static unsigned expect[DIFF_POOL]; /* this run's expected firing order */
static unsigned expect_len, expect_pos;
static uint64_t diff_run_now;
static size_t diff_fired;

static uint64_t random_at(uint64_t now)
{
    switch (rnd_below(12)) {
    case 0: return now;                                      /* 0 ms */
    case 1: return now - (now < 100 ? now : rnd_below(100)); /* past */
    case 2: return now + 1 + rnd_below(64);
    case 3: return now + 1 + rnd_below(4096);
    case 4: return now + 1 + rnd_below((uint64_t)1 << 18);
    case 5: return now + 1 + rnd_below((uint64_t)1 << 24);
    case 6: return now + 1 + rnd_below((uint64_t)1 << 36);
    case 7: return now + rnd_below((uint64_t)1 << 44);     /* crosses 2^42 */
    case 8: return (now + rnd_below(20000)) / 1000 * 1000; /* ties */
    case 9: return (now + rnd_below(1 << 22)) >> 18 << 18; /* ties, aligned */
    default: return now + 1 + rnd_below(30000);            /* idle timeouts */
    }
}

static void diff_arm(diff_timer_t *d, uint64_t at)
{
    d->active = 1;
    d->pending = 0;
    d->at = at;
    d->seq = ++arm_seq;
    px__wheel_add(&wheel, &d->timer, at);
}

static void diff_del(diff_timer_t *d)
{
    d->active = 0;
    d->pending = 0;
    px__wheel_del(&d->timer);
}

static void diff_cb(px_timer_t *t)
{
    diff_timer_t *d = PX_CONTAINER_OF(t, diff_timer_t, timer);
    assert_int_equal(wheel.now, diff_run_now);
    /* Skip expected entries cancelled or re-armed by earlier callbacks. */
    while (expect_pos < expect_len && !diff[expect[expect_pos]].pending)
        expect_pos++;
    assert_true(expect_pos < expect_len);
    assert_int_equal(expect[expect_pos], d->id);
    expect_pos++;
    d->pending = 0;
    d->active = 0;
    diff_fired++;

    /* Mutate from inside the callback, sometimes. */
    switch (rnd_below(8)) {
    case 0: /* re-arm self */ diff_arm(d, random_at(wheel.now)); break;
    case 1: diff_del(&diff[rnd_below(DIFF_POOL)]); break;
    case 2: diff_arm(&diff[rnd_below(DIFF_POOL)], random_at(wheel.now)); break;
    case 3: diff_arm(&diff[rnd_below(DIFF_POOL)], wheel.now); break;
    default: break;
    }
}

static int cmp_expect(const void *a, const void *b)
{
    const diff_timer_t *x = &diff[*(const unsigned *)a], *y = &diff[*(const unsigned *)b];
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void diff_run(uint64_t now)
{
    diff_run_now = now < wheel.now ? wheel.now : now;
    expect_len = expect_pos = 0;
    for (unsigned i = 0; i < DIFF_POOL; i++) {
        if (diff[i].active && diff[i].at <= diff_run_now) {
            diff[i].pending = 1;
            expect[expect_len++] = i;
        }
    }
    qsort(expect, expect_len, sizeof expect[0], cmp_expect);
    diff_fired = 0;
    size_t n = px__wheel_run(&wheel, now);
    assert_int_equal(n, diff_fired);
    while (expect_pos < expect_len && !diff[expect[expect_pos]].pending)
        expect_pos++;
    assert_int_equal(expect_pos, expect_len); /* nothing due was left behind */
    assert_int_equal(wheel.now, diff_run_now);
}

static uint64_t random_advance(void)
{
    uint64_t r = rnd_below(20);
    if (r < 8)
        return rnd_below(4);
    if (r < 14)
        return rnd_below(100);
    if (r < 17)
        return rnd_below(70000);
    if (r == 17)
        return rnd_below((uint64_t)1 << 26); /* ~18 hours */
    /* Now and then a jump across 2^42 ms boundaries. */
    if (r == 18)
        return rnd_below(50) == 0 ? rnd_below((uint64_t)1 << 43) : rnd_below(1 << 20);
    return 0;
}

static void differential(uint64_t base, uint64_t seed, int ops)
{
    rng_seed(seed);
    reset(base);
    for (unsigned i = 0; i < DIFF_POOL; i++) {
        memset(&diff[i], 0, sizeof diff[i]);
        diff[i].id = i;
        diff[i].timer.cb = diff_cb;
    }
    uint64_t now = base;
    for (int op = 0; op < ops; op++) {
        diff_timer_t *d = &diff[rnd_below(DIFF_POOL)];
        unsigned what = (unsigned)rnd_below(100);
        if (what < 40) {
            diff_arm(d, random_at(wheel.now));
        } else if (what < 55) {
            diff_del(d);
        } else if (what < 85) {
            now += random_advance();
            /* Occasionally a clock that went backward. */
            diff_run(rnd_below(100) == 0 && now > 50 ? now - 50 : now);
        } else {
            uint64_t q = wheel.now + (rnd_below(4) == 0 ? rnd_below(5000) : 0);
            uint64_t min = UINT64_MAX;
            for (unsigned i = 0; i < DIFF_POOL; i++)
                if (diff[i].active && diff[i].at < min)
                    min = diff[i].at;
            int64_t to = px__wheel_timeout(&wheel, q);
            if (min == UINT64_MAX) {
                assert_int_equal(to, -1);
            } else if (min <= q) {
                assert_int_equal(to, 0);
            } else {
                assert_true(to >= 0 && (uint64_t)to <= min - q);
                if (q == wheel.now)
                    assert_true(to > 0);
            }
        }
        assert_int_equal(d->timer._next != NULL, d->active);
        if (op % 4096 == 0) {
            size_t active = 0;
            for (unsigned i = 0; i < DIFF_POOL; i++) {
                active += (size_t)diff[i].active;
                assert_int_equal(diff[i].timer._next != NULL, diff[i].active);
            }
            assert_int_equal(check_wheel(&wheel), active);
        }
    }
}

static void test_differential(void **state)
{
    (void)state;
    differential(0, 11, 40000);
    differential((uint64_t)1 << 40, 12, 30000);
    differential(((uint64_t)1 << 42) - 100000, 13, 30000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),        cmocka_unit_test(test_single),
        cmocka_unit_test(test_ordering),     cmocka_unit_test(test_past_due_order),
        cmocka_unit_test(test_cancel),       cmocka_unit_test(test_rearm),
        cmocka_unit_test(test_wrap_levels),  cmocka_unit_test(test_far_boundary),
        cmocka_unit_test(test_long_jump),    cmocka_unit_test(test_timeout_random),
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
