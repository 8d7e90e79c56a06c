/* Unit tests for the metrics registry (src/core/metrics.c): registration is
 * idempotent by name, each thread writes its own slot and reads sum the slots,
 * unbound threads share one atomically-updated slot, and the Prometheus text
 * rendering (with per-worker samples).
 *
 * The registry is process-global: every test uses its own metric names, and
 * the test that fills the registry runs last. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "plexus/metrics.h"
#include "plexus/worker.h"
#include "core/metrics.h"

static void test_register_idempotent(void **state)
{
    (void)state;
    int a = px_metric_register("t_reg_total", "Things registered", PX_METRIC_COUNTER);
    assert_true(a >= 0);
    /* Same name: same id, whatever the other arguments say. */
    assert_int_equal(px_metric_register("t_reg_total", "Things registered", PX_METRIC_COUNTER), a);
    assert_int_equal(px_metric_register("t_reg_total", "other help", PX_METRIC_GAUGE), a);
    int b = px_metric_register("t_reg_other", NULL, PX_METRIC_GAUGE);
    assert_true(b >= 0);
    assert_int_not_equal(a, b);
    assert_int_equal(px_metric_register("t_reg_other", NULL, PX_METRIC_GAUGE), b);

    assert_int_equal(px_metric_register(NULL, "x", PX_METRIC_COUNTER), -EINVAL);
    char name[200];
    memset(name, 'n', sizeof name);
    name[192] = '\0'; /* one over the 191-character limit */
    assert_int_equal(px_metric_register(name, "x", PX_METRIC_COUNTER), -EINVAL);
    name[191] = '\0';
    int c = px_metric_register(name, "x", PX_METRIC_COUNTER);
    assert_true(c >= 0);
    assert_int_equal(px_metric_register(name, "x", PX_METRIC_COUNTER), c);
}

static void test_invalid_ids(void **state)
{
    (void)state;
    int id = px_metric_register("t_invalid_ids", "x", PX_METRIC_COUNTER);
    assert_true(id >= 0);
    px_metric_add(-1, 5); /* ignored, no crash */
    px_metric_add(PX_METRICS_MAX, 5);
    px_metric_set(-1, 5);
    px_metric_set(PX_METRICS_MAX, 5);
    assert_int_equal(px_metric_value(-1), 0);
    assert_int_equal(px_metric_value(PX_METRICS_MAX), 0);
    assert_int_equal(px_metric_worker_value(-1, 0), 0);
    assert_int_equal(px_metric_worker_value(id, 1u << 20), 0);
    assert_int_equal(px_metric_value(id), 0);
}

static void test_main_thread(void **state)
{
    (void)state;
    /* The main thread is not bound to a worker slot: it uses the shared one. */
    int c = px_metric_register("t_main_total", "x", PX_METRIC_COUNTER);
    int g = px_metric_register("t_main_gauge", "x", PX_METRIC_GAUGE);
    px_metric_add(c, 5);
    px_metric_add(c, 7);
    assert_int_equal(px_metric_value(c), 12);
    px_metric_add(g, 10);
    px_metric_add(g, -13);
    assert_int_equal(px_metric_value(g), -3);
    px_metric_set(g, 40);
    assert_int_equal(px_metric_value(g), 40);
    for (unsigned w = 0; w < 4; w++)
        assert_int_equal(px_metric_worker_value(c, w), 0);
}

/* Bound threads (one slot each) and unbound threads (sharing a slot) add at
 * the same time; the read is the exact sum once they are done. */
#define BOUND   4
#define UNBOUND 4
#define ADDS    20000

typedef struct {
    int id;
    int slot; /* -1: stay unbound */
    pthread_barrier_t *go;
} adder_t;

static void *adder(void *p)
{
    adder_t *a = p;
    if (a->slot >= 0)
        px__metrics_bind((unsigned)a->slot);
    pthread_barrier_wait(a->go);
    int per = a->slot >= 0 ? ADDS * (a->slot + 1) : ADDS;
    for (int i = 0; i < per; i++)
        px_metric_add(a->id, 1);
    return NULL;
}

static void test_slots_summed(void **state)
{
    (void)state;
    int id = px_metric_register("t_slots_total", "x", PX_METRIC_COUNTER);
    assert_true(id >= 0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, BOUND + UNBOUND);
    pthread_t th[BOUND + UNBOUND];
    adder_t args[BOUND + UNBOUND];
    for (int i = 0; i < BOUND + UNBOUND; i++) {
        args[i] = (adder_t){id, i < BOUND ? i : -1, &go};
        assert_int_equal(pthread_create(&th[i], NULL, adder, &args[i]), 0);
    }
    for (int i = 0; i < BOUND + UNBOUND; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    int64_t expect = 0;
    for (int w = 0; w < BOUND; w++) {
        assert_int_equal(px_metric_worker_value(id, (unsigned)w), (int64_t)ADDS * (w + 1));
        expect += (int64_t)ADDS * (w + 1);
    }
    expect += (int64_t)ADDS * UNBOUND; /* shared slot: atomic adds lose nothing */
    assert_int_equal(px_metric_value(id), expect);
    assert_int_equal(px_metric_worker_value(id, BOUND), 0);
}

/* Worker threads bind their slot (= worker id) by themselves. */
static int w_counter, w_gauge;
static sem_t w_started;

static void worker_start(px_worker_t *w, void *ud)
{
    (void)ud;
    unsigned id = px_worker_id(w);
    px_metric_add(w_counter, 10 * (int64_t)(id + 1));
    px_metric_set(w_gauge, 100 + (int64_t)id);
    sem_post(&w_started);
}

static void test_worker_slots(void **state)
{
    (void)state;
    w_counter = px_metric_register("t_worker_total", "x", PX_METRIC_COUNTER);
    w_gauge = px_metric_register("t_worker_gauge", "x", PX_METRIC_GAUGE | PX_METRIC_PER_WORKER);
    sem_init(&w_started, 0, 0);
    px_workers_t *ws = px_workers_new(3);
    assert_non_null(ws);
    assert_int_equal(px_workers_start(ws, worker_start, NULL), 0);
    for (int i = 0; i < 3; i++)
        while (sem_wait(&w_started) != 0)
            ;
    px_workers_stop(ws);
    px_workers_join(ws);
    px_workers_free(ws);
    sem_destroy(&w_started);
    for (unsigned w = 0; w < 3; w++) {
        assert_int_equal(px_metric_worker_value(w_counter, w), 10 * (int64_t)(w + 1));
        assert_int_equal(px_metric_worker_value(w_gauge, w), 100 + (int64_t)w);
    }
    assert_int_equal(px_metric_value(w_counter), 60);
    assert_int_equal(px_metric_value(w_gauge), 303);
}

/* ---- rendering --------------------------------------------------------------------- */

static int64_t lag_values[3] = {5, 0, -7};

static void *set_lag(void *p)
{
    int id = *(int *)p;
    for (unsigned w = 0; w < 3; w++) {
        px__metrics_bind(w);
        px_metric_set(id, lag_values[w]);
    }
    return NULL;
}

/* Every line is a comment (# HELP / # TYPE) or `name[{labels}] integer`. */
static void check_exposition(const char *text, size_t len)
{
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(nl);
        size_t n = (size_t)(nl - p);
        if (n >= 7 && (memcmp(p, "# HELP ", 7) == 0 || memcmp(p, "# TYPE ", 7) == 0)) {
            p = nl + 1;
            continue;
        }
        const char *sp = memchr(p, ' ', n);
        assert_non_null(sp);
        for (const char *q = p; q < sp && *q != '{'; q++)
            assert_true((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                        (*q >= '0' && *q <= '9') || *q == '_' || *q == ':');
        const char *v = sp + 1;
        if (*v == '-')
            v++;
        assert_true(v < nl);
        for (; v < nl; v++)
            assert_true(*v >= '0' && *v <= '9');
        p = nl + 1;
    }
}

static void test_render(void **state)
{
    (void)state;
    int c = px_metric_register("t_render_total", "Rendered things", PX_METRIC_COUNTER);
    int g =
        px_metric_register("t_render_lag_ms", "Loop lag", PX_METRIC_GAUGE | PX_METRIC_PER_WORKER);
    px_metric_add(c, 42);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, set_lag, &g), 0);
    pthread_join(th, NULL);

    px_buf_t out;
    px_buf_init(&out, 0);
    assert_int_equal(px_metrics_render(&out, 3), 0);
    assert_int_equal(px_buf_append(&out, "", 1), 0); /* NUL for strstr */
    const char *text = px_buf_head(&out);
    check_exposition(text, px_buf_size(&out) - 1);

    assert_non_null(strstr(text, "# HELP t_render_total Rendered things\n"
                                 "# TYPE t_render_total counter\n"
                                 "t_render_total 42\n"));
    assert_non_null(strstr(text, "# HELP t_render_lag_ms Loop lag\n"
                                 "# TYPE t_render_lag_ms gauge\n"
                                 "t_render_lag_ms{worker=\"0\"} 5\n"
                                 "t_render_lag_ms{worker=\"1\"} 0\n"
                                 "t_render_lag_ms{worker=\"2\"} -7\n"));
    /* Per-worker metrics render only per-worker samples; others one sum. */
    assert_null(strstr(text, "t_render_lag_ms -"));
    assert_null(strstr(text, "t_render_lag_ms{worker=\"3\"}"));
    assert_null(strstr(text, "t_render_total{"));
    /* Each metric once, in registration order. */
    const char *first = strstr(text, "# HELP t_render_total ");
    assert_ptr_equal(strstr(first + 1, "# HELP t_render_total "), NULL);
    assert_true(strstr(text, "# HELP t_reg_total ") < first);
    assert_true(first < strstr(text, "# HELP t_render_lag_ms "));

    /* Rendering appends. */
    size_t before = px_buf_size(&out);
    assert_int_equal(px_metrics_render(&out, 0), 0);
    assert_true(px_buf_size(&out) > before);
    px_buf_dispose(&out);

    /* A full output buffer: the error comes back. */
    px_buf_init(&out, 64);
    assert_int_equal(px_metrics_render(&out, 3), -EMSGSIZE);
    px_buf_dispose(&out);
}

/* Labelled metrics: one family, one HELP/TYPE header, samples together even
 * when another metric was registered between them. */
static void test_render_labels(void **state)
{
    (void)state;
    int a =
        px_metric_register("t_lab_total{rule=\"ssh\",dir=\"in\"}", "Labelled", PX_METRIC_COUNTER);
    int other = px_metric_register("t_lab_other", "Between", PX_METRIC_GAUGE);
    int b =
        px_metric_register("t_lab_total{rule=\"ssh\",dir=\"out\"}", "Labelled", PX_METRIC_COUNTER);
    assert_true(a >= 0 && other >= 0 && b >= 0 && a != b);
    px_metric_add(a, 7);
    px_metric_add(b, 9);
    px_buf_t out;
    px_buf_init(&out, 0);
    assert_int_equal(px_metrics_render(&out, 2), 0);
    assert_int_equal(px_buf_append(&out, "", 1), 0);
    const char *text = px_buf_head(&out);
    check_exposition(text, px_buf_size(&out) - 1);
    assert_non_null(strstr(text, "# HELP t_lab_total Labelled\n"
                                 "# TYPE t_lab_total counter\n"
                                 "t_lab_total{rule=\"ssh\",dir=\"in\"} 7\n"
                                 "t_lab_total{rule=\"ssh\",dir=\"out\"} 9\n"
                                 "# HELP t_lab_other Between\n"));
    const char *h = strstr(text, "# HELP t_lab_total");
    assert_null(strstr(h + 1, "# HELP t_lab_total"));
    px_buf_dispose(&out);
}

/* Runs last: fills the registry. */
static void test_registry_full(void **state)
{
    (void)state;
    int existing = px_metric_register("t_reg_total", "x", PX_METRIC_COUNTER);
    assert_true(existing >= 0);
    char name[32];
    int last = -1, i = 0, r;
    for (;; i++) {
        snprintf(name, sizeof name, "t_fill_%d", i);
        r = px_metric_register(name, "x", PX_METRIC_COUNTER);
        if (r < 0)
            break;
        assert_true(r > last);
        last = r;
        assert_true(i < PX_METRICS_MAX);
    }
    assert_int_equal(r, -ENOSPC);
    assert_int_equal(last, PX_METRICS_MAX - 1);
    /* Lookups of existing names still work when full. */
    assert_int_equal(px_metric_register("t_reg_total", "x", PX_METRIC_COUNTER), existing);
    snprintf(name, sizeof name, "t_fill_%d", i - 1);
    assert_int_equal(px_metric_register(name, "x", PX_METRIC_COUNTER), last);
    /* The last id is usable. */
    px_metric_add(last, 3);
    assert_int_equal(px_metric_value(last), 3);
    px_buf_t out;
    px_buf_init(&out, 0);
    assert_int_equal(px_metrics_render(&out, 1), 0);
    px_buf_dispose(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_idempotent), cmocka_unit_test(test_invalid_ids),
        cmocka_unit_test(test_main_thread),         cmocka_unit_test(test_slots_summed),
        cmocka_unit_test(test_worker_slots),        cmocka_unit_test(test_render),
        cmocka_unit_test(test_render_labels),       cmocka_unit_test(test_registry_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
