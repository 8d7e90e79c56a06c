/* The local broker: one node, nobody else to tell. Every call succeeds and does nothing;
 * it exists so the hub has one code path whether or not other nodes are configured. */
#include "core/alloc.h"
#include "hub/broker.h"

static int local_open(const char *url, px_loop_t *loop, const px__broker_sink_t *sink,
                      px__broker_t **out, char *err, size_t errlen)
{
    PX_UNUSED(url);
    PX_UNUSED(loop);
    PX_UNUSED(sink);
    PX_UNUSED(err);
    PX_UNUSED(errlen);
    px__broker_t *b = px__calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->ops = &px__broker_local;
    *out = b;
    return 0;
}

static void local_close(px__broker_t *b)
{
    px__free(b);
}

static int local_publish(px__broker_t *b, const px_hub_msg_t *m)
{
    PX_UNUSED(b);
    PX_UNUSED(m);
    return 0;
}

static int local_interest(px__broker_t *b, px_str_t channel)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    return 0;
}

const px__broker_ops_t px__broker_local = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .publish = local_publish,
    .subscribe = local_interest,
    .unsubscribe = local_interest,
};
