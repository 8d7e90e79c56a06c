#ifndef PX_CORE_METRICS_H
#define PX_CORE_METRICS_H
#include "plexus/metrics.h"

/* Slots: 0..PX__MAX_WORKERS-1 for workers, then a few for service threads
 * (storage actor, main). A thread binds its slot once; unbound threads share
 * the last slot, written with atomic adds. */
#define PX__METRIC_SLOTS       264
#define PX__METRIC_SLOT_SHARED (PX__METRIC_SLOTS - 1)
void px__metrics_bind(unsigned slot);
#endif
