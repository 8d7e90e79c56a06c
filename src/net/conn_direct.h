#ifndef PX_NET_CONN_DIRECT_H
#define PX_NET_CONN_DIRECT_H
#include "plexus/net.h"

/* px_conn_write_slice, written to the socket at once when nothing is queued
 * on a plain open connection (what it does not take is queued as usual).
 * For callers that already run after the event batch and write to many
 * connections (a topic's deliveries): no queue entry and no deferred flush
 * per connection. */
int px__conn_write_slice_now(px_conn_t *c, px_slice_t *s, size_t off, size_t len);
#endif
