/* Fan-out between nodes: the broker interface.
 *
 * Several plexus nodes sharing one store behave as one server when each node tells the
 * others about the messages it committed. A broker carries that: after a commit the hub
 * thread publishes the message; a broker that has messages from other nodes hands them to
 * the hub thread, which fans them out to its own subscribers in offset order (a message
 * that arrives after a gap has the gap read from the shared store first; one at or below
 * the channel's offset is a duplicate and dropped). A node needs messages only for
 * channels it has subscribers on: the hub says when that starts and stops.
 *
 * Every call is made on the hub thread; implementations are asynchronous (driven by the
 * hub thread's loop) and never block it. The local broker (broker_local.c) is the one-node
 * default: it has no other node to talk to. Redis pub/sub and PostgreSQL LISTEN/NOTIFY
 * implement it for several nodes (docs/internals/store-and-broker.md). */
#ifndef PX_HUB_BROKER_H
#define PX_HUB_BROKER_H

#include "hub/store.h"
#include "plexus/hub.h"

typedef struct px__broker px__broker_t;

/** A presence member as the broker carries it (spans valid during the call). */
typedef struct px__broker_member {
    px_str_t client; /* the member's client id (16 hex chars) */
    px_str_t user, info;
} px__broker_member_t;

typedef void (*px__broker_members_cb)(void *ud, int status, const px__broker_member_t *m, size_t n);

/** The hub's entry points for what a broker receives (all called on the hub thread). */
typedef struct px__broker_sink {
    /** A message another node committed: channel, event, data, offset, epoch, time and
     *  publisher set. The callee takes its own reference if it keeps it. */
    void (*message)(void *ud, px_hub_msg_t *m);
    /** subscribe(channel) took effect (status 0: messages published from now on will
     *  come) or failed (a negative errno: the connection is down). Also after a reconnect,
     *  for every channel subscribed again: messages may have been missed meanwhile. */
    void (*subscribed)(void *ud, px_str_t channel, int status);
    /** A presence event of another node's member (op PX__JOIN/PX__LEAVE of frontend.h),
     *  or the leave of a member whose node stopped refreshing it (found by a sweep). */
    void (*presence)(void *ud, px_str_t channel, int op, const px__broker_member_t *who);
    /** Something was committed on `channel` that the broker could not carry (too large):
     *  read it from the store. */
    void (*poke)(void *ud, px_str_t channel);
    void *ud;
} px__broker_sink_t;

typedef struct px__broker_ops {
    const char *name; /* "local", "redis", "pg" */
    /** Open (no I/O yet); `loop` is the hub thread's, for the broker's own I/O, which
     *  starts with start(). On failure `err` holds one line naming the cause. */
    int (*open)(const char *url, px_loop_t *loop, const px__broker_sink_t *sink, px__broker_t **out,
                char *err, size_t errlen);
    /** On the hub thread: connect. May be NULL. */
    int (*start)(px__broker_t *b);
    void (*close)(px__broker_t *b);
    /** Reachability and counters (hub thread). May be NULL (always up). */
    void (*stat)(px__broker_t *b, px__backend_stat_t *st);
    /** A message this node committed, for the others (best effort: a node that misses it
     *  finds it in the shared store when the next message shows the gap). */
    int (*publish)(px__broker_t *b, const px_hub_msg_t *m);
    /** This node has (or no longer has) subscribers on `channel`. */
    int (*subscribe)(px__broker_t *b, px_str_t channel);
    int (*unsubscribe)(px__broker_t *b, px_str_t channel);
    /** subscribe() confirms through sink->subscribed (the local broker never does: the
     *  hub does not wait for it). */
    int confirms;

    /* ---- presence across nodes (NULL in the local broker: presence stays local). Each
     * node keeps its members alive by refreshing them within ttl_ms; members of a node
     * that stopped (crashed) expire and a sweep announces their leave, once. */
    /** Add a member and tell the other nodes (join). */
    int (*presence_add)(px__broker_t *b, px_str_t channel, const px__broker_member_t *who,
                        uint64_t ttl_ms);
    /** Remove a member and tell the other nodes (leave). */
    int (*presence_remove)(px__broker_t *b, px_str_t channel, const px__broker_member_t *who);
    /** Keep this node's members of `channel` alive for another ttl_ms. */
    int (*presence_refresh)(px__broker_t *b, px_str_t channel, const px__broker_member_t *m,
                            size_t n, uint64_t ttl_ms);
    /** Every node's members of `channel` (expired ones removed, their leave announced). */
    int (*presence_list)(px__broker_t *b, px_str_t channel, px__broker_members_cb cb, void *ud);
} px__broker_ops_t;

/** Base of every broker handle (backends put it first). */
struct px__broker {
    const px__broker_ops_t *ops;
};

extern const px__broker_ops_t px__broker_local;
/** Redis pub/sub (broker_redis.c): --broker redis://HOST:PORT[/DB]. */
extern const px__broker_ops_t px__broker_redis;
/** PostgreSQL LISTEN/NOTIFY (broker_pg.c): the default with --store postgres://. */
extern const px__broker_ops_t px__broker_pg;
/** Processes of one host sharing a data directory (broker_proc.c): the broker of the
 *  SQLite store in shared mode; its "URL" is the data directory. */
extern const px__broker_ops_t px__broker_proc;

static inline int px__broker_publish(px__broker_t *b, const px_hub_msg_t *m)
{
    return b ? b->ops->publish(b, m) : -ESHUTDOWN; /* closed: the hub is stopping */
}
static inline int px__broker_subscribe(px__broker_t *b, px_str_t channel)
{
    return b ? b->ops->subscribe(b, channel) : -ESHUTDOWN; /* closed: the hub is stopping */
}
static inline int px__broker_unsubscribe(px__broker_t *b, px_str_t channel)
{
    return b ? b->ops->unsubscribe(b, channel) : -ESHUTDOWN; /* closed: the hub is stopping */
}
static inline void px__broker_close(px__broker_t *b)
{
    if (b)
        b->ops->close(b);
}

#endif
