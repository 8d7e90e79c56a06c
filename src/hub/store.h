/* Durable channel history: the storage backend interface.
 *
 * One storage thread owns a px__store_t and is the only caller of everything in this
 * header (the API is synchronous and not thread-safe). It group-commits publishes
 * that arrive together with one append() call, then acknowledges them.
 *
 * Backends implement px__store_ops_t (a `static const` table with designated
 * initializers, like nginx ngx_event_actions_t or Redis ConnectionType) and embed
 * px__store_t as the first member of their own handle. SQLite is the default and
 * the only backend compiled today; see docs/storage.md for how another plugs in. */
#ifndef PX_HUB_STORE_H
#define PX_HUB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "hub/limits.h"
#include "plexus/common.h"
#include "plexus/loop.h"

#ifndef PX_DURABILITY_NORMAL
/** Survives a process crash (kill -9); a power loss may drop the last commits (WAL,
 *  synchronous=NORMAL). The database itself is never corrupted by either. */
#define PX_DURABILITY_NORMAL 0
/** Survives power loss: every commit is fsync'ed before append() returns. */
#define PX_DURABILITY_FULL 1
#endif

/** Startup integrity check (see docs/storage.md for the cost trade-off). */
#define PX_STORE_CHECK_AUTO  0 /* full check up to PX_STORE_CHECK_FULL_MAX bytes, quick above */
#define PX_STORE_CHECK_FULL  1 /* PRAGMA integrity_check: pages, records, indexes vs tables */
#define PX_STORE_CHECK_QUICK 2 /* PRAGMA quick_check: same minus index/UNIQUE cross-checks */
/** PX_STORE_CHECK_AUTO switches to the quick check above this database size. */
#define PX_STORE_CHECK_FULL_MAX ((uint64_t)256 << 20)

typedef struct px__store px__store_t;
typedef struct px__store_ops px__store_ops_t;

/** Base of every backend handle; backends put it first and cast (PX_CONTAINER_OF). */
struct px__store {
    const px__store_ops_t *ops; /* never NULL while the store is open */
};

/** One message. For append() every span is borrowed for the duration of the call; for
 *  read() callbacks they point into the backend and are valid only during the callback. */
typedef struct px__store_msg {
    px_str_t channel; /* 1..PX__CHANNEL_MAX bytes, any values */
    px_str_t epoch;   /* append: the channel's epoch, or empty for "the stored one" (a new
                       * channel: its fresh epoch). read: the channel's current epoch. */
    uint64_t offset;  /* 1..PX__OFFSET_MAX, strictly increasing per channel and epoch;
                       * append: 0 = the store chooses */
    int64_t time_ms;  /* unix ms, assigned by the hub; TTL retention compares it */
    px_str_t data;    /* raw bytes (JSON); may be empty; ptr may be NULL only if len is 0 */
    px_str_t event;   /* the event name ("" for none, the native protocol's); as data */
} px__store_msg_t;

/** What append() committed for one message: its offset, and the channel's epoch (points
 *  into the store, valid until its next call). */
typedef struct px__store_assigned {
    uint64_t offset;
    px_str_t epoch;
} px__store_assigned_t;

/** A channel as loaded at startup. */
typedef struct px__store_channel {
    char name[PX__CHANNEL_MAX + 1]; /* name_len bytes then NUL; may contain NULs itself */
    size_t name_len;                /* 1..PX__CHANNEL_MAX */
    char epoch[PX__EPOCH_MAX + 1];  /* NUL-terminated */
    uint64_t last_offset; /* highest offset ever appended in this epoch (0 = none), kept even
                           * after retention deleted every message */
} px__store_channel_t;

typedef struct px__store_opts {
    const char *data_dir;    /* SQLite: directory, created 0700 if missing; holds plexus.db */
    const char *conninfo;    /* network backends: their URL (redis://, postgres://) */
    int durability;          /* PX_DURABILITY_NORMAL or PX_DURABILITY_FULL */
    int check;               /* PX_STORE_CHECK_* (0 = AUTO) */
    uint64_t history_size;   /* keep at most this many messages per channel; 0 = unlimited */
    uint64_t history_ttl_ms; /* delete messages older than this (by trim()); 0 = forever */
    /* SQLite: several processes of one host share data_dir (docs/internals/processes.md):
     * channel state is re-read inside every write transaction, so the offsets the store
     * assigns stay one sequence per channel; a store opened without it refuses to share. */
    bool shared;
} px__store_opts_t;

/** What an asynchronous read found: the channel's state in the store when the read ran,
 *  and up to `limit` messages after `since` (spans valid during the callback only). */
typedef struct px__store_view {
    int status;            /* 0 or a negative errno (then nothing else is meaningful) */
    px_str_t epoch;        /* the channel's epoch (its fresh one if the store does not hold it) */
    uint64_t last_offset;  /* highest offset ever appended in that epoch (0 = none) */
    uint64_t first_offset; /* lowest offset still stored, or last_offset + 1 when none */
    const px__store_msg_t *msgs; /* in offset order; msgs[i].epoch is `epoch` */
    size_t n;
} px__store_view_t;

/** An asynchronous append finished: status 0 and out[i] for msgs[i], or a negative errno
 *  (nothing of the batch committed, or, after a lost connection, maybe all of it: the
 *  offsets are then not reused, the store assigns them). out is valid during the call. */
typedef void (*px__store_append_cb)(void *ud, int status, const px__store_assigned_t *out);
typedef void (*px__store_read_cb)(void *ud, const px__store_view_t *v);

/** A network backend's state (stores and brokers). */
typedef struct px__backend_stat {
    int up;              /* connected and usable */
    unsigned queue;      /* commands sent, not answered yet */
    uint64_t reconnects; /* connections made after the first */
    const char *error;   /* why it is down ("" if up); valid until the next call */
} px__backend_stat_t;

/** Backend capabilities (px__store_ops_t.flags). */
#define PX_STORE_ASYNC  0x1u /* network: append_async/read_async on the hub thread's loop */
#define PX_STORE_SHARED 0x2u /* several nodes share it: offsets and epochs may move under us */

/* Callbacks return 0 to continue, > 0 to stop early (the call then returns 0), or a
 * negative errno to stop and make the call return it. They must not call the store. */
typedef int (*px__store_channel_cb)(void *ud, const px__store_channel_t *c);
typedef int (*px__store_msg_cb)(void *ud, const px__store_msg_t *m);

/**
 * A storage backend. Every function returns 0 or a negative errno (documented
 * exceptions: trim() may return 1) and, on failure, leaves a description for errmsg().
 * Common codes: -EINVAL bad argument (nothing touched), -ENOENT unknown channel, -EIO
 * I/O error, -ENOSPC disk full, -EBUSY locked by another process, -EUCLEAN corruption.
 */
struct px__store_ops {
    const char *name; /* "sqlite" */

    /** Open (creating if needed) and verify the store: schema version, integrity check,
     *  pragmas. On failure *out is NULL and `err` holds one line naming the path and the
     *  cause; a failed integrity check is an error (the data is never silently recreated). */
    int (*open)(const px__store_opts_t *o, px__store_t **out, char *err, size_t errlen);
    /** Close and free; accepts NULL. Nothing is pending (every call is synchronous). */
    void (*close)(px__store_t *s);
    /** Text of the last failure on this store ("" if none); valid until the next call. */
    const char *(*errmsg)(px__store_t *s);

    /** Call cb once per stored channel (order unspecified). For startup: restores epochs
     *  and last offsets, which survive restarts and retention. */
    int (*load_channels)(px__store_t *s, px__store_channel_cb cb, void *ud);
    /** Persist that `channel` lives in `epoch`, in its own transaction. New channel: stored
     *  with last_offset 0. Same epoch: no-op. Different epoch: the hub started a new
     *  history, so the old messages are deleted and last_offset restarts at 0. append()
     *  does the same implicitly; this is for making an epoch durable before any message. */
    int (*create_channel)(px__store_t *s, px_str_t channel, px_str_t epoch);
    /** Store msgs[0..n) in ONE transaction and return only after it committed (for
     *  PX_DURABILITY_FULL: fsync'ed). On any error nothing of the batch is committed and
     *  the store stays usable. The store chooses offsets and epochs: a message with offset
     *  0 gets the channel's last offset + 1 (a shared store can so assign them for every
     *  node), an empty epoch means the channel's stored one, or for a new channel its
     *  fresh_epoch(). A non-zero offset must exceed the channel's last offset (gaps are
     *  allowed; -EINVAL otherwise); a different non-empty epoch resets the channel as in
     *  create_channel(). On success out[i] (when out is not NULL) holds what message i got;
     *  msgs is never modified. history_size is
     *  applied to every channel touched (bounded work; leftovers go to trim()). n == 0 is a
     *  no-op. */
    int (*append)(px__store_t *s, const px__store_msg_t *msgs, size_t n, px__store_assigned_t *out);
    /** Call cb for the messages of `channel` with offset > since, in offset order, at most
     *  `limit` of them (0 = no limit). -ENOENT if the channel is unknown. */
    int (*read)(px__store_t *s, px_str_t channel, uint64_t since, size_t limit, px__store_msg_cb cb,
                void *ud);
    /** Apply retention: history_ttl_ms against now_ms (unix ms), and history_size for
     *  channels append() could not finish. Does a bounded amount of work per call: returns
     *  1 if it stopped with more to do (call again soon), 0 when done. Cheap when there is
     *  nothing to delete, so call it periodically (e.g. every second). */
    int (*trim)(px__store_t *s, int64_t now_ms);
    /** *first_offset = the lowest stored offset of `channel`, or last_offset + 1 when none
     *  is stored. History is complete after `since` iff since + 1 >= *first_offset.
     *  -ENOENT if the channel is unknown. */
    int (*earliest)(px__store_t *s, px_str_t channel, uint64_t *first_offset);
    /** The epoch of a channel the store does not hold (yet), written NUL-terminated into
     *  out: the same for every call, after restarts and in every process sharing the
     *  store, and different in a store created anew (where history was lost). So a
     *  channel may leave the hub's memory while it has no message and keep its epoch. */
    int (*fresh_epoch)(px__store_t *s, px_str_t channel, char out[PX__EPOCH_MAX + 1]);

    /* ---- asynchronous backends (flags & PX_STORE_ASYNC): network stores. The hub thread
     * drives them from its own loop and never waits: it goes on with other channels while
     * a commit or a read is in flight. A synchronous backend leaves these NULL. */
    unsigned flags; /* PX_STORE_* */
    /** On the hub thread, before any other asynchronous call: connect on `loop`. */
    int (*attach)(px__store_t *s, px_loop_t *loop);
    /** Like append(), asynchronously: cb runs later on the loop (never inside this call),
     *  exactly once. msgs and their spans must stay valid until then. Fails at once
     *  (no callback) with -ENOTCONN while the backend is down: publishes fail fast. */
    int (*append_async)(px__store_t *s, const px__store_msg_t *msgs, size_t n,
                        px__store_append_cb cb, void *ud);
    /** The channel's state and up to `limit` messages after `since` (limit 0: the state
     *  only); cb runs later, exactly once. -ENOTCONN at once while down (no callback). */
    int (*read_async)(px__store_t *s, px_str_t channel, uint64_t since, size_t limit,
                      px__store_read_cb cb, void *ud);
    /** Reachability and counters, for /healthz and /metrics (hub thread). */
    void (*stat)(px__store_t *s, px__backend_stat_t *st);
};

/** The SQLite backend (store_sqlite.c). */
extern const px__store_ops_t px__store_sqlite;
/** Redis Streams (store_redis.c): --store redis://HOST:PORT[/DB]. */
extern const px__store_ops_t px__store_redis;
/** PostgreSQL (store_pg.c): --store postgres://USER@HOST:PORT/DB. */
extern const px__store_ops_t px__store_pg;

/** Backend by name ("sqlite", "redis"); NULL or "" selects the default. NULL if unknown. */
const px__store_ops_t *px__store_backend(const char *name);
/** Open a store with the named backend (see px__store_backend); -ENOENT + err text if the
 *  backend is unknown or not compiled in. */
int px__store_open(const char *backend, const px__store_opts_t *o, px__store_t **out, char *err,
                   size_t errlen);
/** Write a fresh random epoch (16 lowercase hex chars + NUL) into out. 0 or -errno. */
int px__store_epoch_new(char out[PX__EPOCH_MAX + 1]);

/* Argument checks shared by backends: true if valid. */
bool px__store_channel_ok(px_str_t channel);
bool px__store_epoch_ok(px_str_t epoch);

/* Dispatch (Redis connection.h style): the storage thread calls these, never the table. */
static inline void px__store_close(px__store_t *s)
{
    if (s)
        s->ops->close(s);
}
static inline const char *px__store_errmsg(px__store_t *s)
{
    return s->ops->errmsg(s);
}
static inline int px__store_load_channels(px__store_t *s, px__store_channel_cb cb, void *ud)
{
    return s->ops->load_channels(s, cb, ud);
}
static inline int px__store_create_channel(px__store_t *s, px_str_t channel, px_str_t epoch)
{
    return s->ops->create_channel(s, channel, epoch);
}
static inline int px__store_append(px__store_t *s, const px__store_msg_t *msgs, size_t n)
{
    return s->ops->append(s, msgs, n, NULL);
}
static inline int px__store_append_assigned(px__store_t *s, const px__store_msg_t *msgs, size_t n,
                                            px__store_assigned_t *out)
{
    return s->ops->append(s, msgs, n, out);
}
static inline int px__store_read(px__store_t *s, px_str_t channel, uint64_t since, size_t limit,
                                 px__store_msg_cb cb, void *ud)
{
    return s->ops->read(s, channel, since, limit, cb, ud);
}
static inline int px__store_trim(px__store_t *s, int64_t now_ms)
{
    return s->ops->trim(s, now_ms);
}
static inline int px__store_earliest(px__store_t *s, px_str_t channel, uint64_t *first_offset)
{
    return s->ops->earliest(s, channel, first_offset);
}
static inline int px__store_fresh_epoch(px__store_t *s, px_str_t channel,
                                        char out[PX__EPOCH_MAX + 1])
{
    return s->ops->fresh_epoch(s, channel, out);
}

/* ---- SQLite specifics: diagnostics and the failure-injection shim (tests) ---------- */

struct sqlite3;
/** The connection of a SQLite store, for tests and diagnostics (pragmas, stats). Do not
 *  write through it: the store caches channel state. */
struct sqlite3 *px__store_sqlite_handle(px__store_t *s);

/* I/O fault kinds (bit mask) for px__store_sqlite_fault. */
#define PX_STORE_FAULT_READ  0x01u /* xRead fails with SQLITE_IOERR_READ */
#define PX_STORE_FAULT_WRITE 0x02u /* xWrite / xTruncate fail with SQLITE_IOERR_WRITE */
#define PX_STORE_FAULT_SYNC  0x04u /* xSync fails with SQLITE_IOERR_FSYNC */
#define PX_STORE_FAULT_OPEN  0x08u /* xOpen fails with SQLITE_CANTOPEN */
#define PX_STORE_FAULT_FULL  0x10u /* modifier: write faults return SQLITE_FULL (disk full) */

/**
 * I/O-error shim in the style of SQLite's own ioerr tests. The first call registers a
 * VFS wrapping the default one; stores opened after that go through it (zero cost for
 * stores that do not). Then: the next `skip` file operations of the given kinds
 * succeed, the `fail` after them fail (fail < 0: every one until re-armed). kinds == 0
 * disarms. Process-global and not thread-safe: tests only.
 */
void px__store_sqlite_fault(unsigned kinds, long skip, long fail);
/** Number of operations failed since the last px__store_sqlite_fault() call. */
long px__store_sqlite_fault_hits(void);

#endif
