#ifndef PX_CORE_METRICS_H
#define PX_CORE_METRICS_H
#include <stdatomic.h>

#include "plexus/metrics.h"

/* Slots: 0..PX__MAX_WORKERS-1 for workers, then a few for service threads
 * (storage actor, main). A thread binds its slot once; unbound threads share
 * the last slot, written with atomic adds. */
#define PX__METRIC_SLOTS       264
#define PX__METRIC_SLOT_SHARED (PX__METRIC_SLOTS - 1)
void px__metrics_bind(unsigned slot);

/* px_metric_add, inlined for the library's per-message paths. */
extern _Atomic int64_t px__metric_values[PX__METRIC_SLOTS][PX_METRICS_MAX];
extern __thread int px__metric_slot;

static inline void px__metric_add(int id, int64_t v)
{
    if (PX_UNLIKELY((unsigned)id >= PX_METRICS_MAX))
        return;
    int slot = px__metric_slot;
    if (PX_LIKELY(slot >= 0)) {
        _Atomic int64_t *p = &px__metric_values[slot][id];
        atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + v,
                              memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&px__metric_values[PX__METRIC_SLOT_SHARED][id], v,
                                  memory_order_relaxed);
    }
}
#endif
