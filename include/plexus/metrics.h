/* plexus — metrics registry. Each worker (and each other registered thread)
 * writes its own slot with plain stores: no shared atomics on hot paths. A read
 * sums the slots. Register every metric at start-up, before workers start. */
#ifndef PLEXUS_METRICS_H
#define PLEXUS_METRICS_H

#include "plexus/common.h"
#include "plexus/buf.h"

#ifdef __cplusplus
extern "C" {
#endif

enum px_metric_type {
    PX_METRIC_COUNTER = 0,
    PX_METRIC_GAUGE = 1,
    /** Flag: also render one sample per worker (label worker="N"). */
    PX_METRIC_PER_WORKER = 0x10,
};

#define PX_METRICS_MAX 256

/** Register (or look up, if the name exists) a metric. Returns its id >= 0, or
 * -ENOSPC / -EINVAL. Not thread-safe: call at start-up. The name may carry
 * labels, `family{key="value",...}` (at most 191 characters in all): metrics
 * of one family are rendered under one HELP/TYPE header, with the help and
 * type of the first one registered. */
PX_EXTERN int px_metric_register(const char *name, const char *help, int type);
/** Add `v` (may be negative for gauges) in the calling thread's slot. */
PX_EXTERN void px_metric_add(int id, int64_t v);
/** Set the calling thread's slot (gauges such as loop lag). */
PX_EXTERN void px_metric_set(int id, int64_t v);
/** Sum over all slots. Any thread; values are eventually consistent. */
PX_EXTERN int64_t px_metric_value(int id);
PX_EXTERN int64_t px_metric_worker_value(int id, unsigned worker);
/** Append every metric in Prometheus text format 0.0.4. */
PX_EXTERN int px_metrics_render(px_buf_t *out, unsigned nworkers);

#ifdef __cplusplus
}
#endif
#endif
