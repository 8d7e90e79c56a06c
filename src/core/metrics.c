#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/metrics.h"

typedef struct {
    char name[192]; /* "family" or "family{label=\"value\",...}" */
    char help[160];
    int type;
} metric_def_t;

static metric_def_t defs[PX_METRICS_MAX];
static int ndefs;
/* Each slot row is written by one thread only (relaxed load + store compiles
 * to a plain add); readers may see a slightly stale value, never a torn one. */
_Atomic int64_t px__metric_values[PX__METRIC_SLOTS][PX_METRICS_MAX];
__thread int px__metric_slot = -1;
#define values  px__metric_values
#define my_slot px__metric_slot

void px__metrics_bind(unsigned slot)
{
    my_slot = slot < PX__METRIC_SLOT_SHARED ? (int)slot : -1;
}

int px_metric_register(const char *name, const char *help, int type)
{
    if (!name || strlen(name) >= sizeof defs[0].name)
        return -EINVAL;
    for (int i = 0; i < ndefs; i++)
        if (strcmp(defs[i].name, name) == 0)
            return i;
    if (ndefs == PX_METRICS_MAX)
        return -ENOSPC;
    metric_def_t *d = &defs[ndefs];
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->help, sizeof d->help, "%s", help ? help : "");
    d->type = type;
    return ndefs++;
}

void px_metric_add(int id, int64_t v)
{
    px__metric_add(id, v);
}

void px_metric_set(int id, int64_t v)
{
    if (id < 0 || id >= PX_METRICS_MAX)
        return;
    int slot = my_slot >= 0 ? my_slot : PX__METRIC_SLOT_SHARED;
    atomic_store_explicit(&values[slot][id], v, memory_order_relaxed);
}

int64_t px_metric_value(int id)
{
    if (id < 0 || id >= PX_METRICS_MAX)
        return 0;
    int64_t sum = 0;
    for (int s = 0; s < PX__METRIC_SLOTS; s++)
        sum += atomic_load_explicit(&values[s][id], memory_order_relaxed);
    return sum;
}

int64_t px_metric_worker_value(int id, unsigned worker)
{
    if (id < 0 || id >= PX_METRICS_MAX || worker >= PX__METRIC_SLOT_SHARED)
        return 0;
    return atomic_load_explicit(&values[worker][id], memory_order_relaxed);
}

/* Length of the family name: the metric name without its labels. */
static size_t family_len(const char *name)
{
    return strcspn(name, "{");
}

static int same_family(const metric_def_t *a, const metric_def_t *b)
{
    size_t n = family_len(a->name);
    return n == family_len(b->name) && memcmp(a->name, b->name, n) == 0;
}

int px_metrics_render(px_buf_t *out, unsigned nworkers)
{
    char line[512];
    for (int i = 0; i < ndefs; i++) {
        const metric_def_t *d = &defs[i];
        /* Labelled metrics ("name{rule=\"ssh\"}") of one family share one
         * HELP/TYPE header and are rendered together, where the first appears. */
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = same_family(&defs[j], d);
        if (seen)
            continue;
        int base = d->type & 0xf;
        int fl = (int)family_len(d->name);
        int n = snprintf(line, sizeof line, "# HELP %.*s %s\n# TYPE %.*s %s\n", fl, d->name,
                         d->help, fl, d->name, base == PX_METRIC_COUNTER ? "counter" : "gauge");
        int r = px_buf_append(out, line, (size_t)n);
        if (r)
            return r;
        for (int k = i; k < ndefs; k++) {
            const metric_def_t *e = &defs[k];
            if (k != i && !same_family(e, d))
                continue;
            if ((e->type & PX_METRIC_PER_WORKER) && !strchr(e->name, '{')) {
                for (unsigned w = 0; w < nworkers; w++) {
                    n = snprintf(line, sizeof line, "%s{worker=\"%u\"} %lld\n", e->name, w,
                                 (long long)px_metric_worker_value(k, w));
                    if ((r = px_buf_append(out, line, (size_t)n)))
                        return r;
                }
            } else {
                n = snprintf(line, sizeof line, "%s %lld\n", e->name,
                             (long long)px_metric_value(k));
                if ((r = px_buf_append(out, line, (size_t)n)))
                    return r;
            }
        }
    }
    return 0;
}
