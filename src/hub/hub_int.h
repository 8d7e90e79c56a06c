/* The hub's own state (hub.c, client.c, api.c). Front-ends see frontend.h only. */
#ifndef PX_HUB_INT_H
#define PX_HUB_INT_H

#include <pthread.h>

#include "hub/frontend.h"

/* ---- the hub ----------------------------------------------------------------------------------
 */

struct px_hub {
    px_workers_t *workers; /* the server's: deliveries and answers go there */
    unsigned nworkers;
    px_hub_opts_t opts;
    char *data_dir;
    px__store_t *store;
    px__broker_t *broker; /* fan-out to other nodes (the local one: nobody) */
    px_workers_t *actor;  /* one worker: the hub thread */
    const px__hformat_t *formats[PX__FORMATS_MAX];
    unsigned nformats;
    const px__hobserver_t *observers[PX__OBSERVERS_MAX];
    unsigned nobservers;
    px__hashmap_t channels;       /* hub thread only */
    struct px__hlocal *locals;    /* per worker: that worker only */
    struct px_hub_sub **api_subs; /* per worker: the C API's subscriptions (api.c) */
    px_defer_t commit_defer;
    px__hreq_t *batch_head, *batch_tail;
    size_t batch_len;
    px_defer_t read_defer; /* reads (history, pages, presence, listings) after commits */
    px__hreq_t *rq_head, *rq_tail;
    px_timer_t trim_timer;
    int started;
    /* Several nodes (docs/scaling.md): the store is asynchronous and shared. */
    int net;
    int closing;               /* px_hub_free: no new store calls */
    unsigned commits_inflight; /* asynchronous group commits not answered yet */
    px_timer_t health_timer;
    px_timer_t presence_timer; /* refresh this node's members, sweep expired ones */
    px_defer_t kick_defer;     /* runs the waiting requests of channels on kick_head */
    struct hchan *kick_head;
    pthread_mutex_t health_mu; /* health_* are read by workers (px_hub_health) */
    int health_down;
    char health_why[200];
};

/** px_hub_new with a store opened by the caller (tests: a fake store). The hub owns `store`
 * from here on, also on failure (NULL, with `err` naming the cause). */
px_hub_t *px__hub_new_store(px_workers_t *workers, const px_hub_opts_t *o, px__store_t *store,
                            char *err, size_t errlen);

extern int px__m_publishes, px__m_deliveries, px__m_commit_us, px__m_commits, px__m_channels;

#endif
