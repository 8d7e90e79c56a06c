/* SQLite storage backend (see store.h for the contract, docs/storage.md for the design).
 *
 * Layout of one store: <data_dir>/plexus.db (+ -wal, -shm while open) and
 * <data_dir>/plexus.lock (flock'ed so two servers never share a history).
 *
 * All channels are cached in memory (name -> id, epoch, last offset, trim state) so an
 * append costs one INSERT per message plus at most one bounded DELETE per channel
 * touched; channel rows are only written when a channel is created or changes epoch
 * (see the schema for why last_offset survives anyway). The cache only changes inside a
 * transaction and every change is journaled in an undo log, so a failed commit restores
 * it exactly (SQLite rolls back the file, we roll back the cache). */
#include "hub/store.h"
#include "util/crypto.h"
#include "util/siphash.h"
#include "core/alloc.h"

#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 3
#define APPLICATION_ID 0x706c7873 /* "plxs": `file plexus.db` and our open tell it apart */
#define DB_NAME        "plexus.db"
#define LOCK_NAME      "plexus.lock"
/* One process: a wait can only come from an operator's sqlite3 shell. Shared (several
 * processes of one host, px__store_opts_t.shared): the others' commits, each short. */
#define BUSY_TIMEOUT_MS 5000
/* 4000 pages = 16 MiB of WAL between checkpoints. A checkpoint runs in the committing
 * (storage) thread and costs two fsyncs whatever its size, so fewer, larger ones cost
 * less in total; hot index pages are also copied once per checkpoint, not per commit.
 * -DWAL_AUTOCHECKPOINT=N to experiment with bench_store. */
#ifndef WAL_AUTOCHECKPOINT
#define WAL_AUTOCHECKPOINT 4000
#endif
/* After a checkpoint the WAL file is truncated back to this size. */
#define JOURNAL_SIZE_LIMIT (64 << 20)
#define CACHE_KIB          16384
/* Retention work bounds: append() deletes at most max(TRIM_APPEND_MIN, 2 x rows it
 * added) per channel, so steady state keeps up and a backlog (history_size lowered)
 * drains over several appends; one trim() call deletes/seeks at most TRIM_CALL_BUDGET. */
#define TRIM_APPEND_MIN  1024
#define TRIM_CALL_BUDGET 10000

/* Cached state of one channel that transactions change (saved whole in the undo log). */
typedef struct chan_state {
    uint64_t last_offset; /* highest offset appended in this epoch, 0 = none (see schema) */
    uint64_t floor;       /* if floor_known: no stored message has offset <= floor */
    bool floor_known;     /* false after a partial trim (offsets may be sparse: re-seek) */
    bool pending;         /* history_size not yet enforced; counted in store.n_pending */
    uint8_t epoch_len;    /* 1..PX__EPOCH_MAX */
    char epoch[PX__EPOCH_MAX + 1];
} chan_state_t;

typedef struct chan {
    struct chan *next; /* hash chain */
    uint64_t hash;     /* siphash(name) */
    int64_t id;        /* channels.id, > 0 */
    chan_state_t st;
    size_t undo;     /* 1 + index in store.undo if the current transaction touched it, else 0 */
    size_t added;    /* messages added by the current append() (trim budget) */
    size_t name_len; /* 1..PX__CHANNEL_MAX */
    char name[];     /* name_len bytes, then NUL */
} chan_t;

typedef struct undo {
    chan_t *c;
    bool created;    /* the transaction created c: unlink and free it on rollback */
    chan_state_t st; /* c->st before the transaction touched it */
} undo_t;

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_INS_MSG,
    Q_INS_CHAN,
    Q_UPD_CHAN,
    Q_DEL_CHAN,
    Q_DEL_UPTO,
    Q_HEAD,
    Q_READ,
    Q_TTL_SCAN,
    Q_TTL_KEEP,
    Q_TTL_DEL,
    Q_CHAN_ROW,
    Q_COUNT
};

/* Every statement the store runs after open, prepared once (SQLITE_PREPARE_PERSISTENT). */
static const char *const sql_text[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_INS_MSG] = ("INSERT INTO messages(channel_id, offset, time_ms, data, event)"
                   " VALUES(?1, ?2, ?3, ?4, ?5)"),
    [Q_INS_CHAN] = "INSERT INTO channels(name, epoch, last_offset) VALUES(?1, ?2, 0)",
    [Q_UPD_CHAN] = "UPDATE channels SET epoch = ?2, last_offset = ?3 WHERE id = ?1",
    [Q_DEL_CHAN] = "DELETE FROM messages WHERE channel_id = ?1",
    [Q_DEL_UPTO] = "DELETE FROM messages WHERE channel_id = ?1 AND offset <= ?2",
    [Q_HEAD] = "SELECT offset FROM messages WHERE channel_id = ?1 ORDER BY offset LIMIT 1",
    [Q_READ] =
        ("SELECT offset, time_ms, data, event FROM messages WHERE channel_id = ?1 AND offset > ?2 "
         "ORDER BY offset LIMIT ?3"),
    [Q_TTL_SCAN] = "SELECT seq, time_ms FROM messages ORDER BY seq LIMIT ?1",
    /* Before TTL deletes a channel's newest message, make its row hold the last offset. The
     * newest message of a channel is also its highest seq (both grow with every append). */
    [Q_TTL_KEEP] = ("UPDATE channels SET last_offset = (SELECT max(offset) FROM messages"
                    " WHERE channel_id = channels.id)"
                    " WHERE id IN (SELECT channel_id FROM messages WHERE seq <= ?1)"
                    " AND (SELECT seq FROM messages WHERE channel_id = channels.id"
                    " ORDER BY offset DESC LIMIT 1) <= ?1"),
    [Q_TTL_DEL] = "DELETE FROM messages WHERE seq <= ?1",
    /* Shared store: a channel as the database holds it (see the schema for last offset). */
    [Q_CHAN_ROW] = ("SELECT id, epoch, last_offset, (SELECT max(offset) FROM messages"
                    " WHERE channel_id = channels.id) FROM channels WHERE name = ?1"),
};

/* migrations[v] upgrades a database at user_version v to v + 1, inside one transaction
 * that also sets user_version. A new schema version appends an entry; never edit one.
 *
 * messages is a rowid table in arrival order (seq) plus a unique (channel_id, offset)
 * index rather than a WITHOUT ROWID table clustered by (channel_id, offset): appends
 * interleaved over many channels then write sequential table pages and small index
 * entries (2-4x faster inserts, much better with KiB-sized payloads, see
 * docs/storage.md), and TTL retention becomes a single range delete on seq.
 *
 * channels.last_offset is exact only while the channel stores no message; otherwise the
 * channel's highest stored offset is its last offset:
 *     last offset = max(channels.last_offset, max(messages.offset of the channel))
 * Appends therefore never rewrite channel rows (one scattered page per channel per
 * commit less: ~25% less WAL with 10k channels), and the only deletes that can remove a
 * channel's newest message (TTL) first copy its offset into the row (Q_TTL_KEEP).
 * history_size >= 1 always keeps the newest message; an epoch change rewrites the row. */
static const char *const migrations[] = {
    "PRAGMA application_id = 1886156915;" /* APPLICATION_ID */
    "CREATE TABLE channels("
    " id INTEGER PRIMARY KEY,"
    " name BLOB NOT NULL UNIQUE,"
    " epoch TEXT NOT NULL,"
    " last_offset INTEGER NOT NULL);"
    "CREATE TABLE messages("
    " seq INTEGER PRIMARY KEY,"
    " channel_id INTEGER NOT NULL,"
    " offset INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL,"
    " data BLOB NOT NULL);"
    "CREATE UNIQUE INDEX messages_by_channel ON messages(channel_id, offset);",
    /* 2: the store's instance id, made once with the database: fresh_epoch() keys on it.
     * (In parentheses: one element of two literals, not two elements missing a comma.) */
    ("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
     "INSERT INTO meta VALUES('instance', lower(hex(randomblob(16))));"),
    /* 3: messages keep their event name (a Pusher event's; "" for the native protocol's). */
    "ALTER TABLE messages ADD COLUMN event BLOB NOT NULL DEFAULT x'';",
};
_Static_assert(PX_ARRAY_SIZE(migrations) == SCHEMA_VERSION, "one migration per version");
_Static_assert(APPLICATION_ID == 1886156915, "keep the migration literal in sync");

typedef struct sqlite_store {
    px__store_t base; /* first: px__store_t * <-> sqlite_store_t * */
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
    int lock_fd; /* flock'ed plexus.lock, -1 if not open */
    bool shared; /* several processes write: the cache is re-read (chan_sync) before use */
    /* Shared, on the hub thread (attach): finished asynchronous calls, whose callbacks
     * run on the next turn of the loop (never inside the call, as store.h requires). */
    px_loop_t *loop;
    px_defer_t done_defer;
    struct sq_job *done_head, *done_tail;
    uint64_t history_size;
    uint64_t ttl_ms;

    /* Channel cache: every row of `channels`, no more, outside of a transaction. When
     * shared, rows other processes made or changed since are read in by chan_sync. */
    chan_t **buckets; /* nbuckets chains; nbuckets is a power of two */
    size_t nbuckets;
    size_t nchans;
    px__sipkey_t hash_key; /* random per store: names come from clients (hash flooding) */
    size_t n_pending;      /* channels with st.pending set */
    size_t trim_cursor;    /* bucket where the next trim() resumes its history_size pass */

    undo_t *undo; /* entries for the open transaction, in touch order */
    size_t undo_len;
    size_t undo_cap;

    char instance[33];   /* meta.instance: 32 hex chars, made with the database */
    char path[PATH_MAX]; /* <data_dir>/plexus.db */
    char err[768];       /* last failure, see errmsg() */
} sqlite_store_t;

/* The table of a store opened with px__store_opts_t.shared (below). */
static const px__store_ops_t px__store_sqlite_shared;
static void sq_jobs_fail(sqlite_store_t *s);

static sqlite_store_t *from_base(px__store_t *b)
{
    assert(b && (b->ops == &px__store_sqlite || b->ops == &px__store_sqlite_shared));
    return PX_CONTAINER_OF(b, sqlite_store_t, base);
}

/* ---- errors ------------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static int errf(sqlite_store_t *s, int err, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    return err;
}

/* SQLite result code -> negative errno. OS errors come from sqlite3_system_errno, read
 * right after the failing call (the one place errno is converted). */
static int rc_errno(sqlite_store_t *s, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH: return -EPERM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return -EUCLEAN;
    case SQLITE_TOOBIG: return -EMSGSIZE;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return -EINVAL;
    case SQLITE_CANTOPEN: {
        int e = s->db ? sqlite3_system_errno(s->db) : 0;
        return e > 0 ? -e : -EACCES;
    }
    default: return -EIO;
    }
}

/* Record a failed SQLite call `what` and return its errno. Call before anything else
 * touches the connection (sqlite3_errmsg describes the most recent call). */
static int fail(sqlite_store_t *s, int rc, const char *what)
{
    int prim = rc & 0xff;
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
        return errf(s, rc_errno(s, rc),
                    "%s: integrity check failed (%s: %s); restore the file from a backup or "
                    "move it away to start with an empty history",
                    s->path, what, msg);
    return errf(s, rc_errno(s, rc), "%s: %s: %s", s->path, what, msg);
}

/* ---- small statement helpers ------------------------------------------------------- */

/* Step a statement that returns no rows to completion and reset it. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static void bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    assert(v <= PX__OFFSET_MAX);
    sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

/* Blobs: a zero-length span must still bind a (non-NULL) empty blob, not SQL NULL. */
static void bind_span(sqlite3_stmt *st, int i, px_str_t v)
{
    sqlite3_bind_blob64(st, i, v.len ? v.ptr : "", v.len, SQLITE_STATIC);
}

/* One integer from a pragma or query; SQLite's code on failure. */
static int query_int(sqlite_store_t *s, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- channel cache ----------------------------------------------------------------- */

static chan_t *chan_find(sqlite_store_t *s, px_str_t name, uint64_t h)
{
    for (chan_t *c = s->buckets[h & (s->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && c->name_len == name.len && memcmp(c->name, name.ptr, name.len) == 0)
            return c;
    return NULL;
}

static void chan_link(sqlite_store_t *s, chan_t *c)
{
    if (s->nchans >= s->nbuckets) {
        /* Grow at load factor 1. If memory is short keep the old table: longer chains
         * are slower, not wrong. */
        size_t n = s->nbuckets * 2;
        chan_t **nb = px__calloc(n, sizeof(*nb));
        if (nb) {
            for (size_t i = 0; i < s->nbuckets; i++) {
                for (chan_t *e = s->buckets[i], *next; e; e = next) {
                    next = e->next;
                    e->next = nb[e->hash & (n - 1)];
                    nb[e->hash & (n - 1)] = e;
                }
            }
            px__free(s->buckets);
            s->buckets = nb;
            s->nbuckets = n;
        }
    }
    chan_t **head = &s->buckets[c->hash & (s->nbuckets - 1)];
    c->next = *head;
    *head = c;
    s->nchans++;
}

static void chan_unlink(sqlite_store_t *s, chan_t *c)
{
    chan_t **pp = &s->buckets[c->hash & (s->nbuckets - 1)];
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    s->nchans--;
}

static chan_t *chan_alloc(px_str_t name, uint64_t h, int64_t id, px_str_t epoch)
{
    chan_t *c = px__calloc(1, sizeof(*c) + name.len + 1);
    if (!c)
        return NULL;
    c->hash = h;
    c->id = id;
    c->name_len = name.len;
    memcpy(c->name, name.ptr, name.len);
    c->st.epoch_len = (uint8_t)epoch.len;
    memcpy(c->st.epoch, epoch.ptr, epoch.len);
    return c;
}

static bool epoch_eq(const chan_t *c, px_str_t e)
{
    return c->st.epoch_len == e.len && memcmp(c->st.epoch, e.ptr, e.len) == 0;
}

static void set_pending(sqlite_store_t *s, chan_t *c, bool on)
{
    if (c->st.pending != on) {
        c->st.pending = on;
        if (on)
            s->n_pending++;
        else
            s->n_pending--;
    }
}

/* ---- transactions and the undo log -------------------------------------------------- */

static int undo_reserve(sqlite_store_t *s)
{
    if (s->undo_len < s->undo_cap)
        return 0;
    size_t cap = s->undo_cap ? s->undo_cap * 2 : 64;
    undo_t *u = px__realloc(s->undo, cap * sizeof(*u));
    if (!u)
        return errf(s, -ENOMEM, "%s: out of memory for the undo log", s->path);
    s->undo = u;
    s->undo_cap = cap;
    return 0;
}

/* Journal c before the transaction first changes its cached state. */
static int touch(sqlite_store_t *s, chan_t *c)
{
    if (c->undo)
        return 0;
    int r = undo_reserve(s);
    if (r < 0)
        return r;
    s->undo[s->undo_len++] = (undo_t){.c = c, .st = c->st};
    c->undo = s->undo_len;
    return 0;
}

static int txn_begin(sqlite_store_t *s)
{
    assert(s->undo_len == 0);
    /* A ROLLBACK that failed earlier (I/O error) may have left one open: never build on
     * it, and never let it wedge every later call. */
    if (!sqlite3_get_autocommit(s->db))
        run(s->q[Q_ROLLBACK]);
    int rc = run(s->q[Q_BEGIN]);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "begin transaction");
    return 0;
}

/* Undo everything since txn_begin, in the file (ROLLBACK) and in the cache. */
static void txn_rollback(sqlite_store_t *s)
{
    /* SQLite may already have rolled back by itself (I/O error, disk full). */
    if (!sqlite3_get_autocommit(s->db))
        run(s->q[Q_ROLLBACK]);
    for (size_t i = s->undo_len; i-- > 0;) {
        undo_t *u = &s->undo[i];
        chan_t *c = u->c;
        set_pending(s, c, u->created ? false : u->st.pending);
        if (u->created) {
            chan_unlink(s, c);
            px__free(c);
        } else {
            c->st = u->st;
            c->undo = 0;
            c->added = 0;
        }
    }
    s->undo_len = 0;
}

static int txn_commit(sqlite_store_t *s)
{
    int rc = run(s->q[Q_COMMIT]);
    if (rc != SQLITE_DONE) {
        int r = fail(s, rc, "commit");
        txn_rollback(s);
        return r;
    }
    for (size_t i = 0; i < s->undo_len; i++) {
        s->undo[i].c->undo = 0;
        s->undo[i].c->added = 0;
    }
    s->undo_len = 0;
    return 0;
}

/* ---- channel operations (inside a transaction) ------------------------------------- */

static int chan_create(sqlite_store_t *s, px_str_t name, uint64_t h, px_str_t epoch, chan_t **out)
{
    int r = undo_reserve(s);
    if (r < 0)
        return r;
    sqlite3_stmt *st = s->q[Q_INS_CHAN];
    bind_span(st, 1, name);
    sqlite3_bind_text(st, 2, epoch.ptr, (int)epoch.len, SQLITE_STATIC);
    int rc = run(st);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "insert channel");
    chan_t *c = chan_alloc(name, h, sqlite3_last_insert_rowid(s->db), epoch);
    if (!c)
        return errf(s, -ENOMEM, "%s: out of memory for a channel", s->path);
    /* A new channel has no messages: nothing to trim below offset 0. */
    c->st.floor_known = true;
    chan_link(s, c);
    s->undo[s->undo_len++] = (undo_t){.c = c, .created = true};
    c->undo = s->undo_len;
    *out = c;
    return 0;
}

/* The hub started a new history for c: drop the old one. c is already touched. */
static int chan_reset(sqlite_store_t *s, chan_t *c, px_str_t epoch)
{
    sqlite3_bind_int64(s->q[Q_DEL_CHAN], 1, c->id);
    int rc = run(s->q[Q_DEL_CHAN]);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "delete old epoch");
    c->st.epoch_len = (uint8_t)epoch.len;
    memset(c->st.epoch, 0, sizeof(c->st.epoch));
    memcpy(c->st.epoch, epoch.ptr, epoch.len);
    c->st.last_offset = 0;
    c->st.floor = 0;
    c->st.floor_known = true;
    set_pending(s, c, false);
    return 0;
}

static int chan_save(sqlite_store_t *s, chan_t *c)
{
    sqlite3_stmt *st = s->q[Q_UPD_CHAN];
    sqlite3_bind_int64(st, 1, c->id);
    sqlite3_bind_text(st, 2, c->st.epoch, c->st.epoch_len, SQLITE_STATIC);
    bind_u64(st, 3, c->st.last_offset);
    int rc = run(st);
    return rc == SQLITE_DONE ? 0 : fail(s, rc, "update channel");
}

/* Lowest stored offset of c into *first, 0 if it has none. */
static int chan_head(sqlite_store_t *s, const chan_t *c, uint64_t *first)
{
    sqlite3_stmt *st = s->q[Q_HEAD];
    sqlite3_bind_int64(st, 1, c->id);
    int rc = sqlite3_step(st);
    *first = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(s, rc, "find first message");
    return 0;
}

/* Enforce history_size on c, deleting at most `budget` rows; adds rows + seeks done to
 * *cost. Leaves c pending if it could not finish. Inside a transaction. */
static int trim_size(sqlite_store_t *s, chan_t *c, uint64_t budget, uint64_t *cost)
{
    uint64_t bound = c->st.last_offset > s->history_size ? c->st.last_offset - s->history_size : 0;
    if (!s->history_size || !bound || (c->st.floor_known && c->st.floor >= bound)) {
        if (c->st.pending) {
            int r = touch(s, c);
            if (r < 0)
                return r;
            set_pending(s, c, false);
        }
        return 0;
    }
    int r = touch(s, c);
    if (r < 0)
        return r;
    if (!c->st.floor_known) {
        uint64_t first;
        if ((r = chan_head(s, c, &first)) < 0)
            return r;
        ++*cost;
        c->st.floor = first ? first - 1 : c->st.last_offset;
        c->st.floor_known = true;
        if (c->st.floor >= bound) {
            set_pending(s, c, false);
            return 0;
        }
    }
    /* Offsets are unique, so (floor, floor + budget] holds at most `budget` rows. */
    uint64_t cut = bound - c->st.floor > budget ? c->st.floor + budget : bound;
    sqlite3_stmt *st = s->q[Q_DEL_UPTO];
    sqlite3_bind_int64(st, 1, c->id);
    bind_u64(st, 2, cut);
    int rc = run(st);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "trim channel");
    *cost += (uint64_t)sqlite3_changes(s->db) + 1;
    c->st.floor = cut;
    if (cut < bound) {
        c->st.floor_known = false; /* jump over any gap with a fresh seek next time */
        set_pending(s, c, true);
    } else {
        set_pending(s, c, false);
    }
    return 0;
}

/* ---- the ops ----------------------------------------------------------------------- */

/* A shared store (several processes append): bring the cached channel up to date with the
 * database, which other processes may have changed since (a new channel, appends, a new
 * epoch). Inside a write transaction (BEGIN IMMEDIATE holds the write lock) what it reads
 * stays true until the commit, so offsets the store assigns are one sequence across every
 * process; outside one it is a snapshot. Once per channel per transaction (a touched
 * channel is current). *out: the channel, or NULL if the database does not hold it. Not
 * shared: the cache is the truth, a lookup. */
static int chan_sync(sqlite_store_t *s, px_str_t name, uint64_t h, bool in_txn, chan_t **out)
{
    chan_t *c = *out = chan_find(s, name, h);
    if (!s->shared || (c && c->undo))
        return 0;
    sqlite3_stmt *st = s->q[Q_CHAN_ROW];
    bind_span(st, 1, name);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? 0 : fail(s, rc, "read channel");
    }
    int64_t id = sqlite3_column_int64(st, 0);
    px_str_t epoch = {(const char *)sqlite3_column_text(st, 1),
                      (size_t)sqlite3_column_bytes(st, 1)};
    uint64_t last = (uint64_t)sqlite3_column_int64(st, 2);
    uint64_t top = (uint64_t)sqlite3_column_int64(st, 3); /* NULL (no message) reads as 0 */
    if (top > last)
        last = top;
    int r = 0;
    if (!px__store_epoch_ok(epoch)) {
        r = errf(s, -EUCLEAN, "%s: channel row with an invalid epoch", s->path);
    } else if (!c) {
        if (in_txn && (r = undo_reserve(s)) < 0)
            goto out;
        if (!(c = chan_alloc(name, h, id, epoch))) {
            r = errf(s, -ENOMEM, "%s: out of memory for a channel", s->path);
            goto out;
        }
        c->st.last_offset = last;
        chan_link(s, c);
        if (in_txn) { /* a rollback forgets it; the next call reads it again */
            s->undo[s->undo_len++] = (undo_t){.c = c, .created = true};
            c->undo = s->undo_len;
        }
    } else if (c->id != id || c->st.last_offset != last || !epoch_eq(c, epoch)) {
        if (in_txn && (r = touch(s, c)) < 0)
            goto out;
        c->id = id;
        c->st.last_offset = last;
        c->st.epoch_len = (uint8_t)epoch.len;
        memset(c->st.epoch, 0, sizeof(c->st.epoch));
        memcpy(c->st.epoch, epoch.ptr, epoch.len);
        c->st.floor_known = false; /* another process may have trimmed: seek again */
    }
out:
    sqlite3_reset(st);
    *out = c;
    return r;
}

static int sq_fresh_epoch(px__store_t *base, px_str_t channel, char out[PX__EPOCH_MAX + 1]);

static int sq_append(px__store_t *base, const px__store_msg_t *msgs, size_t n,
                     px__store_assigned_t *out)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    if (n == 0)
        return 0;
    /* Validate everything first: a bad message must not cost a transaction. */
    for (size_t i = 0; i < n; i++) {
        const px__store_msg_t *m = &msgs[i];
        if (!px__store_channel_ok(m->channel))
            return errf(s, -EINVAL, "append: message %zu: channel name must be 1..%d bytes", i,
                        PX__CHANNEL_MAX);
        if (m->epoch.len && !px__store_epoch_ok(m->epoch))
            return errf(s, -EINVAL, "append: message %zu: invalid epoch", i);
        if (m->offset > PX__OFFSET_MAX)
            return errf(s, -EINVAL, "append: message %zu: offset out of range", i);
        if ((m->data.len && !m->data.ptr) || (m->event.len && !m->event.ptr))
            return errf(s, -EINVAL, "append: message %zu: NULL data or event", i);
        if (m->data.len > INT_MAX)
            return errf(s, -EMSGSIZE, "append: message %zu: data too large", i);
    }

    int r = txn_begin(s);
    if (r < 0)
        return r;
    sqlite3_stmt *ins = s->q[Q_INS_MSG];
    chan_t *c = NULL;
    for (size_t i = 0; i < n; i++) {
        const px__store_msg_t *m = &msgs[i];
        /* Group commits often carry runs of one channel: skip the hash for those. */
        if (!c || c->name_len != m->channel.len ||
            memcmp(c->name, m->channel.ptr, m->channel.len) != 0) {
            uint64_t h = px__siphash13(&s->hash_key, m->channel.ptr, m->channel.len);
            if ((r = chan_sync(s, m->channel, h, true, &c)) < 0)
                goto fail;
            if (!c) {
                char fresh[PX__EPOCH_MAX + 1];
                px_str_t e = m->epoch;
                if (!e.len) { /* a new channel starts in its fresh epoch */
                    if ((r = sq_fresh_epoch(base, m->channel, fresh)) < 0)
                        goto fail;
                    e = (px_str_t){fresh, strlen(fresh)};
                }
                if ((r = chan_create(s, m->channel, h, e, &c)) < 0)
                    goto fail;
            }
        }
        if ((r = touch(s, c)) < 0)
            goto fail;
        if (m->epoch.len && !epoch_eq(c, m->epoch) && (r = chan_reset(s, c, m->epoch)) < 0)
            goto fail;
        uint64_t off = m->offset ? m->offset : c->st.last_offset + 1; /* 0: the store chooses */
        if (off <= c->st.last_offset || off > PX__OFFSET_MAX) {
            r = errf(s, -EINVAL,
                     "append: message %zu: offset %llu is not after the channel's last offset "
                     "%llu",
                     i, (unsigned long long)off, (unsigned long long)c->st.last_offset);
            goto fail;
        }
        sqlite3_bind_int64(ins, 1, c->id);
        bind_u64(ins, 2, off);
        sqlite3_bind_int64(ins, 3, m->time_ms);
        bind_span(ins, 4, m->data);
        bind_span(ins, 5, m->event);
        int rc = run(ins);
        if (rc != SQLITE_DONE) {
            r = fail(s, rc, "insert message");
            goto fail;
        }
        c->st.last_offset = off;
        c->added++;
        if (out) /* valid until the next call (the cache entry lives on after a commit) */
            out[i] = (px__store_assigned_t){off, {c->st.epoch, c->st.epoch_len}};
    }
    /* undo lists exactly the channels this batch touched (trim_size adds none). Rows of
     * new or re-epoched channels are written; the others are described by their newest
     * message (see the schema). */
    for (size_t i = 0; i < s->undo_len; i++) {
        const undo_t *u = &s->undo[i];
        chan_t *t = u->c;
        if ((u->created || u->st.epoch_len != t->st.epoch_len ||
             memcmp(u->st.epoch, t->st.epoch, t->st.epoch_len) != 0) &&
            (r = chan_save(s, t)) < 0)
            goto fail;
        if (s->history_size) {
            uint64_t cost = 0, budget = 2 * (uint64_t)t->added;
            if ((r = trim_size(s, t, budget > TRIM_APPEND_MIN ? budget : TRIM_APPEND_MIN, &cost)) <
                0)
                goto fail;
        }
    }
    return txn_commit(s);
fail:
    txn_rollback(s);
    return r;
}

static int sq_create_channel(px__store_t *base, px_str_t channel, px_str_t epoch)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    if (!px__store_channel_ok(channel))
        return errf(s, -EINVAL, "create_channel: channel name must be 1..%d bytes",
                    PX__CHANNEL_MAX);
    if (!px__store_epoch_ok(epoch))
        return errf(s, -EINVAL, "create_channel: invalid epoch");
    uint64_t h = px__siphash13(&s->hash_key, channel.ptr, channel.len);
    chan_t *c = chan_find(s, channel, h);
    if (c && epoch_eq(c, epoch) && !s->shared)
        return 0;
    int r = txn_begin(s);
    if (r < 0)
        return r;
    if ((r = chan_sync(s, channel, h, true, &c)) < 0) {
        txn_rollback(s);
        return r;
    }
    if (c && epoch_eq(c, epoch)) {
        r = 0;
    } else if (!c) {
        r = chan_create(s, channel, h, epoch, &c);
    } else if ((r = touch(s, c)) == 0 && (r = chan_reset(s, c, epoch)) == 0) {
        r = chan_save(s, c);
    }
    if (r < 0) {
        txn_rollback(s);
        return r;
    }
    return txn_commit(s);
}

static int sq_read(px__store_t *base, px_str_t channel, uint64_t since, size_t limit,
                   px__store_msg_cb cb, void *ud)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    if (!px__store_channel_ok(channel))
        return errf(s, -EINVAL, "read: channel name must be 1..%d bytes", PX__CHANNEL_MAX);
    chan_t *c;
    int sr =
        chan_sync(s, channel, px__siphash13(&s->hash_key, channel.ptr, channel.len), false, &c);
    if (sr < 0)
        return sr;
    if (!c)
        return errf(s, -ENOENT, "read: unknown channel");
    if (since >= PX__OFFSET_MAX)
        return 0;
    sqlite3_stmt *st = s->q[Q_READ];
    sqlite3_bind_int64(st, 1, c->id);
    bind_u64(st, 2, since);
    /* LIMIT -1 is SQLite's "no limit". */
    sqlite3_bind_int64(st, 3, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
    px__store_msg_t m = {
        .channel = {c->name, c->name_len},
        .epoch = {c->st.epoch, c->st.epoch_len},
    };
    int rc, r = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        m.offset = (uint64_t)sqlite3_column_int64(st, 0);
        m.time_ms = sqlite3_column_int64(st, 1);
        const void *p = sqlite3_column_blob(st, 2);
        m.data.len = (size_t)sqlite3_column_bytes(st, 2);
        m.data.ptr = p ? p : "";
        const void *e = sqlite3_column_blob(st, 3);
        m.event.len = (size_t)sqlite3_column_bytes(st, 3);
        m.event.ptr = e ? e : "";
        if ((r = cb(ud, &m)) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        r = fail(s, rc, "read messages");
        sqlite3_reset(st);
        return r;
    }
    sqlite3_reset(st);
    return r < 0 ? r : 0;
}

static int sq_earliest(px__store_t *base, px_str_t channel, uint64_t *first_offset)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    if (!px__store_channel_ok(channel))
        return errf(s, -EINVAL, "earliest: channel name must be 1..%d bytes", PX__CHANNEL_MAX);
    chan_t *c;
    int r = chan_sync(s, channel, px__siphash13(&s->hash_key, channel.ptr, channel.len), false, &c);
    if (r < 0)
        return r;
    if (!c)
        return errf(s, -ENOENT, "earliest: unknown channel");
    uint64_t first;
    r = chan_head(s, c, &first);
    if (r < 0)
        return r;
    *first_offset = first ? first : c->st.last_offset + 1;
    return 0;
}

static int sq_load_channels(px__store_t *base, px__store_channel_cb cb, void *ud)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    /* The cache holds exactly the committed rows, so no I/O is needed. */
    px__store_channel_t out;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (chan_t *c = s->buckets[i]; c; c = c->next) {
            memcpy(out.name, c->name, c->name_len + 1);
            out.name_len = c->name_len;
            memcpy(out.epoch, c->st.epoch, sizeof(out.epoch));
            out.last_offset = c->st.last_offset;
            int r = cb(ud, &out);
            if (r != 0)
                return r < 0 ? r : 0;
        }
    }
    return 0;
}

/* TTL: messages are deleted as a prefix of arrival order (seq) while they are older than
 * the cutoff. That keeps every channel's history one contiguous range of offsets. */
static int trim_ttl(sqlite_store_t *s, int64_t cutoff, uint64_t *budget, bool *more)
{
    sqlite3_stmt *st = s->q[Q_TTL_SCAN];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)*budget + 1);
    int64_t last_seq = 0;
    uint64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int64(st, 1) >= cutoff)
            break;
        if (n == *budget) {
            *more = true;
            break;
        }
        last_seq = sqlite3_column_int64(st, 0);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(s, rc, "scan expired messages");
    *budget -= n < *budget ? n + 1 : *budget;
    if (!n)
        return 0;
    sqlite3_bind_int64(s->q[Q_TTL_KEEP], 1, last_seq);
    if ((rc = run(s->q[Q_TTL_KEEP])) != SQLITE_DONE)
        return fail(s, rc, "keep last offsets");
    sqlite3_bind_int64(s->q[Q_TTL_DEL], 1, last_seq);
    rc = run(s->q[Q_TTL_DEL]);
    return rc == SQLITE_DONE ? 0 : fail(s, rc, "delete expired messages");
}

static int sq_trim(px__store_t *base, int64_t now_ms)
{
    sqlite_store_t *s = from_base(base);
    s->err[0] = '\0';
    bool ttl =
        s->ttl_ms && s->ttl_ms < (uint64_t)INT64_MAX && now_ms > INT64_MIN + (int64_t)s->ttl_ms;
    if (!ttl && !s->n_pending)
        return 0;
    int r = txn_begin(s);
    if (r < 0)
        return r;
    uint64_t budget = TRIM_CALL_BUDGET;
    bool more = false;
    if (ttl && (r = trim_ttl(s, now_ms - (int64_t)s->ttl_ms, &budget, &more)) < 0)
        goto fail;
    /* history_size leftovers, resuming where the previous call stopped. */
    for (size_t visited = 0; s->n_pending && budget && visited < s->nbuckets; visited++) {
        size_t b = s->trim_cursor++ & (s->nbuckets - 1);
        for (chan_t *c = s->buckets[b]; c && budget; c = c->next) {
            if (!c->st.pending)
                continue;
            uint64_t cost = 0;
            if ((r = trim_size(s, c, budget, &cost)) < 0)
                goto fail;
            budget -= cost < budget ? cost : budget;
        }
    }
    if ((r = txn_commit(s)) < 0)
        return r;
    return more || s->n_pending ? 1 : 0;
fail:
    txn_rollback(s);
    return r;
}

static const char *sq_errmsg(px__store_t *base)
{
    return from_base(base)->err;
}

/* ---- open / close ------------------------------------------------------------------ */

static void sq_close(px__store_t *base)
{
    if (!base)
        return;
    sqlite_store_t *s = from_base(base);
    assert(s->undo_len == 0);
    sq_jobs_fail(s);
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->q[i]);
    /* Last connection: SQLite checkpoints and removes the WAL. */
    if (s->db)
        sqlite3_close(s->db);
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (chan_t *c = s->buckets[i], *next; c; c = next) {
            next = c->next;
            px__free(c);
        }
    }
    px__free(s->buckets);
    px__free(s->undo);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock, after SQLite let go of the files */
    px__free(s);
}

/* mkdir -p with mode 0700 for the parts it creates. `path` is modified and restored. */
static int mkdir_p(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
        *p = '/';
        if (r < 0)
            return r;
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat sb;
    if (stat(path, &sb) < 0)
        return -errno;
    return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

static int open_dir_and_lock(sqlite_store_t *s, const char *data_dir, bool shared)
{
    char dir[PATH_MAX], lock[PATH_MAX];
    size_t len = strlen(data_dir);
    while (len > 1 && data_dir[len - 1] == '/')
        len--;
    _Static_assert(sizeof(LOCK_NAME) >= sizeof(DB_NAME), "lock name is the longer one");
    if (len + sizeof("/" LOCK_NAME) > sizeof(dir))
        return errf(s, -ENAMETOOLONG, "data directory path too long: %s", data_dir);
    memcpy(dir, data_dir, len);
    dir[len] = '\0';
    memcpy(s->path, dir, len);
    memcpy(s->path + len, "/" DB_NAME, sizeof("/" DB_NAME));
    memcpy(lock, dir, len);
    memcpy(lock + len, "/" LOCK_NAME, sizeof("/" LOCK_NAME));

    int r = mkdir_p(dir);
    if (r < 0)
        return errf(s, r, "cannot create data directory %s: %s", dir, px_strerror(r));
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        r = -errno;
        return errf(s, r, "cannot open lock file %s: %s (is the data directory writable?)", lock,
                    px_strerror(r));
    }
    /* Shared: every process of the group holds it shared; one that does not share the
     * directory holds it exclusively. Either way the two kinds never mix. */
    if (flock(s->lock_fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        r = -errno;
        if (r == -EWOULDBLOCK)
            return errf(s, -EBUSY,
                        shared ? "data directory %s is in use by a plexus process that does not "
                                 "share it (%s)"
                               : "data directory %s is in use by another plexus process (%s)",
                        dir, lock);
        return errf(s, r, "cannot lock %s: %s", lock, px_strerror(r));
    }
    return 0;
}

static int integrity_check(sqlite_store_t *s, int mode)
{
    if (mode == PX_STORE_CHECK_AUTO) {
        /* Both checks read every page; the full one also verifies every index entry
         * against its row, which costs ~2-3x more. Bound startup time on big files. */
        char wal[PATH_MAX + 8];
        struct stat sb;
        uint64_t size = stat(s->path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        snprintf(wal, sizeof(wal), "%s-wal", s->path);
        if (stat(wal, &sb) == 0)
            size += (uint64_t)sb.st_size;
        mode = size <= PX_STORE_CHECK_FULL_MAX ? PX_STORE_CHECK_FULL : PX_STORE_CHECK_QUICK;
    }
    const char *name = mode == PX_STORE_CHECK_FULL ? "integrity_check" : "quick_check";
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA %s(5)", name);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc, name);
    char report[512] = "";
    size_t used = 0;
    bool ok = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        if (!line)
            continue;
        if (strcmp(line, "ok") == 0) {
            ok = true;
            continue;
        }
        int w = snprintf(report + used, sizeof(report) - used, "%s%s", used ? "; " : "", line);
        if (w > 0)
            used = used + (size_t)w < sizeof(report) ? used + (size_t)w : sizeof(report) - 1;
    }
    if (rc != SQLITE_DONE) {
        int r = fail(s, rc, name);
        sqlite3_finalize(st);
        return r;
    }
    sqlite3_finalize(st);
    if (!ok || used)
        return errf(s, -EUCLEAN,
                    "%s: integrity check failed (PRAGMA %s: %s); restore the file from a backup "
                    "or move it away to start with an empty history",
                    s->path, name, used ? report : "no result");
    return 0;
}

static int exec(sqlite_store_t *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : fail(s, rc, what);
}

static int configure(sqlite_store_t *s, int durability)
{
    /* journal_mode answers with the mode it ended up in (WAL needs shared memory).
     * Processes opening a new shared database together race to switch it to WAL, and
     * SQLite may answer SQLITE_BUSY there without calling the busy handler: retry for
     * as long as the busy timeout would have waited. */
    sqlite3_stmt *st = NULL;
    int rc;
    for (int waited_ms = 0;; waited_ms += 10) {
        rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= BUSY_TIMEOUT_MS)
            break;
        sqlite3_finalize(st);
        st = NULL;
        sqlite3_sleep(10);
    }
    if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        bool wal = mode && strcmp(mode, "wal") == 0;
        sqlite3_finalize(st);
        if (!wal)
            return errf(s, -ENOTSUP, "%s: cannot enable WAL journal mode (got %s)", s->path,
                        mode ? mode : "nothing");
    } else {
        int r = fail(s, rc, "set WAL journal mode");
        sqlite3_finalize(st);
        return r;
    }
    char sql[256];
    snprintf(sql, sizeof(sql),
             "PRAGMA synchronous = %s; PRAGMA wal_autocheckpoint = %d;"
             "PRAGMA journal_size_limit = %d; PRAGMA cache_size = -%d;"
             "PRAGMA temp_store = MEMORY; PRAGMA trusted_schema = OFF;",
             durability == PX_DURABILITY_FULL ? "FULL" : "NORMAL", WAL_AUTOCHECKPOINT,
             JOURNAL_SIZE_LIMIT, CACHE_KIB);
    return exec(s, sql, "set pragmas");
}

static int check_schema(sqlite_store_t *s)
{
    int64_t app_id = 0, version = 0, objects = 0;
    /* One read transaction: another process of a shared directory may be creating the
     * schema meanwhile, and the three answers must come from the same state of the file. */
    int rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = query_int(s, "PRAGMA application_id", &app_id);
    if (rc == SQLITE_OK)
        rc = query_int(s, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK)
        rc = query_int(s, "SELECT count(*) FROM sqlite_master", &objects);
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc, "read schema version");
    if (app_id == 0 && version == 0 && objects == 0) {
        /* Brand new file. */
    } else if (app_id != APPLICATION_ID) {
        return errf(s, -EINVAL, "%s is not a plexus database (application_id %lld)", s->path,
                    (long long)app_id);
    } else if (version > SCHEMA_VERSION) {
        return errf(s, -ENOTSUP,
                    "%s has schema version %lld, newer than this plexus supports (%d); run a "
                    "newer plexus or restore an older backup",
                    s->path, (long long)version, SCHEMA_VERSION);
    } else if (version < 1) {
        return errf(s, -EINVAL, "%s has invalid schema version %lld", s->path, (long long)version);
    }
    for (int64_t v = version; v < SCHEMA_VERSION; v++) {
        char sql[64];
        int r = exec(s, "BEGIN IMMEDIATE", "begin migration");
        /* Processes sharing the directory may open a new file at the same time: the version
         * read above can be stale, the one read under the write lock is not. */
        if (r == 0 && (rc = query_int(s, "PRAGMA user_version", &v)) != SQLITE_OK)
            r = fail(s, rc, "read schema version");
        if (r == 0 && v >= SCHEMA_VERSION) {
            r = exec(s, "COMMIT", "commit migration");
            if (r == 0)
                break;
        }
        if (r == 0)
            r = exec(s, migrations[v], "migrate schema");
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)v + 1);
        if (r == 0)
            r = exec(s, sql, "set schema version");
        if (r == 0)
            r = exec(s, "COMMIT", "commit migration");
        if (r < 0) {
            if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return r;
        }
    }
    return 0;
}

static int load_cache(sqlite_store_t *s)
{
    sqlite3_stmt *st;
    /* One index seek per channel for the last offset (see the schema). */
    int rc =
        sqlite3_prepare_v2(s->db,
                           "SELECT id, name, epoch, max(last_offset, ifnull((SELECT max(offset)"
                           " FROM messages WHERE channel_id = channels.id), 0)) FROM channels",
                           -1, &st, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc, "load channels");
    int r = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        bool typed = sqlite3_column_type(st, 1) == SQLITE_BLOB &&
                     sqlite3_column_type(st, 2) == SQLITE_TEXT &&
                     sqlite3_column_type(st, 3) == SQLITE_INTEGER;
        px_str_t name = {sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1)};
        px_str_t epoch = {(const char *)sqlite3_column_text(st, 2),
                          (size_t)sqlite3_column_bytes(st, 2)};
        sqlite3_int64 last = sqlite3_column_int64(st, 3);
        if (!typed || !px__store_channel_ok(name) || !px__store_epoch_ok(epoch) || last < 0) {
            r = errf(s, -EUCLEAN, "%s: integrity check failed: invalid channel row %lld", s->path,
                     (long long)sqlite3_column_int64(st, 0));
            break;
        }
        uint64_t h = px__siphash13(&s->hash_key, name.ptr, name.len);
        chan_t *c = chan_alloc(name, h, sqlite3_column_int64(st, 0), epoch);
        if (!c) {
            r = errf(s, -ENOMEM, "%s: out of memory loading channels", s->path);
            break;
        }
        c->st.last_offset = (uint64_t)last;
        chan_link(s, c);
        /* history_size may have shrunk since the last run: let trim() visit everyone. */
        set_pending(s, c, s->history_size != 0);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = fail(s, rc, "load channels");
    sqlite3_finalize(st);
    return r;
}

/* Test-only VFS name, or NULL for the default VFS (see the fault shim below). */
static const char *fault_vfs_name(void);

static int load_instance(sqlite_store_t *s)
{
    sqlite3_stmt *st;
    int rc =
        sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'instance'", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc, "read the store's instance id");
    rc = sqlite3_step(st);
    const unsigned char *v = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    int ok = v && strlen((const char *)v) == sizeof(s->instance) - 1;
    if (ok)
        memcpy(s->instance, v, sizeof(s->instance));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(s, rc, "read the store's instance id");
    return ok ? 0 : errf(s, -EUCLEAN, "%s: the store's instance id is missing or invalid", s->path);
}

static int do_open(sqlite_store_t *s, const px__store_opts_t *o)
{
    s->shared = o->shared;
    int r = open_dir_and_lock(s, o->data_dir, o->shared);
    if (r < 0)
        return r;
    px__sipkey_random(&s->hash_key);
    s->buckets = px__calloc(64, sizeof(*s->buckets));
    if (!s->buckets)
        return errf(s, -ENOMEM, "out of memory");
    s->nbuckets = 64;

    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_EXRESCODE
    flags |= SQLITE_OPEN_EXRESCODE;
#endif
    int rc = sqlite3_open_v2(s->path, &s->db, flags, fault_vfs_name());
    if (rc != SQLITE_OK) {
        r = fail(s, rc, "cannot open database");
        return r;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* A file we may not write is opened read-only without complaint: refuse instead. */
    if (sqlite3_db_readonly(s->db, "main") == 1)
        return errf(s, -EROFS, "%s: database file is read-only (check its permissions)", s->path);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* The first read: a foreign or mangled header fails here (SQLITE_NOTADB). */
    int64_t ignored;
    if ((rc = query_int(s, "PRAGMA application_id", &ignored)) != SQLITE_OK)
        return fail(s, rc, "read database header");
    /* Verify before writing anything (setting WAL mode writes the header). */
    if ((r = integrity_check(s, o->check)) < 0)
        return r;
    if ((r = configure(s, o->durability)) < 0)
        return r;
    if ((r = check_schema(s)) < 0)
        return r;
    for (int i = 0; i < Q_COUNT; i++) {
        rc = sqlite3_prepare_v3(s->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL);
        if (rc != SQLITE_OK)
            return fail(s, rc, "prepare statements");
    }
    if ((r = load_instance(s)) < 0)
        return r;
    return load_cache(s);
}

/* The epoch of a channel not stored yet: HMAC-SHA256(instance, name), 16 hex chars. The
 * same name gets the same epoch in every process on this database and after restarts,
 * so a channel that leaves memory while empty keeps its epoch; a new database (history
 * lost) has a new instance and so new epochs. */
static int sq_fresh_epoch(px__store_t *base, px_str_t channel, char out[PX__EPOCH_MAX + 1])
{
    sqlite_store_t *s = from_base(base);
    if (!px__store_channel_ok(channel))
        return errf(s, -EINVAL, "invalid channel name");
    uint8_t mac[32];
    if (px__hmac_sha256(s->instance, strlen(s->instance), channel.ptr, channel.len, mac) != 0)
        return errf(s, -EIO, "HMAC failed");
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 8; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[16] = '\0';
    return 0;
}

static int sq_open(const px__store_opts_t *o, px__store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    const char *bad = NULL;
    if (!o || !o->data_dir || !*o->data_dir)
        bad = "data_dir is required";
    else if (o->durability != PX_DURABILITY_NORMAL && o->durability != PX_DURABILITY_FULL)
        bad = "durability must be PX_DURABILITY_NORMAL or PX_DURABILITY_FULL";
    else if (o->check < PX_STORE_CHECK_AUTO || o->check > PX_STORE_CHECK_QUICK)
        bad = "check must be one of PX_STORE_CHECK_*";
    if (bad) {
        if (errlen)
            snprintf(err, errlen, "sqlite store: %s", bad);
        return -EINVAL;
    }
    sqlite_store_t *s = px__calloc(1, sizeof(*s));
    if (!s) {
        if (errlen)
            snprintf(err, errlen, "sqlite store: out of memory");
        return -ENOMEM;
    }
    /* Shared: the asynchronous interface too, so the hub runs it like the other shared
     * stores (several processes are several nodes); one process keeps the storage
     * thread and its group commit. */
    s->base.ops = o->shared ? &px__store_sqlite_shared : &px__store_sqlite;
    s->lock_fd = -1;
    s->history_size = o->history_size > PX__OFFSET_MAX ? 0 : o->history_size;
    s->ttl_ms = o->history_ttl_ms;
    int r = do_open(s, o);
    if (r < 0) {
        if (errlen)
            snprintf(err, errlen, "%s", s->err);
        sq_close(&s->base);
        return r;
    }
    *out = &s->base;
    return 0;
}

struct sqlite3 *px__store_sqlite_handle(px__store_t *base)
{
    return from_base(base)->db;
}

const px__store_ops_t px__store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .load_channels = sq_load_channels,
    .create_channel = sq_create_channel,
    .append = sq_append,
    .read = sq_read,
    .trim = sq_trim,
    .earliest = sq_earliest,
    .fresh_epoch = sq_fresh_epoch,
};

/* ---- shared: the asynchronous interface (docs/internals/processes.md) -------------- *
 * Several processes of one host are several nodes of one server: the hub drives this
 * store like the network ones. A call runs synchronously on the hub thread (a commit of
 * a few milliseconds; the busy timeout bounds a wait for another process's commit) and
 * its result is copied into a job whose callback runs on the loop's next turn. */

typedef struct sq_job {
    struct sq_job *next;
    px__store_append_cb acb;
    px__store_read_cb rcb;
    void *ud;
    int status;
    size_t n;                  /* assigned (append) or messages (read) */
    px__store_assigned_t *out; /* append: n entries, epochs into `bytes` */
    px__store_view_t view;     /* read: msgs into `msgs`, spans into `bytes` */
    px__store_msg_t *msgs;
    char *bytes; /* the copies the spans point into */
    size_t bytes_len, bytes_cap;
} sq_job_t;

static void sq_job_free(sq_job_t *j)
{
    px__free(j->out);
    px__free(j->msgs);
    px__free(j->bytes);
    px__free(j);
}

static void sq_job_run(sqlite_store_t *s, sq_job_t *j, int status)
{
    PX_UNUSED(s);
    if (j->acb) {
        j->acb(j->ud, status ? status : j->status, status || j->status ? NULL : j->out);
    } else {
        if (status) {
            j->view = (px__store_view_t){.status = status};
        } else if (j->view.status == 0) {
            for (size_t i = 0; i < j->n; i++) { /* offsets into `bytes` become pointers */
                j->msgs[i].epoch =
                    (px_str_t){j->bytes + (uintptr_t)j->view.epoch.ptr, j->view.epoch.len};
                j->msgs[i].data.ptr = j->bytes + (uintptr_t)j->msgs[i].data.ptr;
                j->msgs[i].event.ptr = j->bytes + (uintptr_t)j->msgs[i].event.ptr;
                j->msgs[i].channel = (px_str_t){"", 0};
            }
            j->view.epoch.ptr = j->bytes + (uintptr_t)j->view.epoch.ptr;
            j->view.msgs = j->msgs;
            j->view.n = j->n;
        }
        j->rcb(j->ud, &j->view);
    }
}

static void sq_jobs_done(px_defer_t *d)
{
    sqlite_store_t *s = d->data;
    sq_job_t *j = s->done_head;
    s->done_head = s->done_tail = NULL;
    while (j) { /* callbacks may queue new jobs: they run on the next turn */
        sq_job_t *next = j->next;
        sq_job_run(s, j, 0);
        sq_job_free(j);
        j = next;
    }
}

/* Closing with calls whose callbacks have not run: they fail now (exactly once). Like the
 * hub's own deferred work, the store's is embedded in it: close it only once its loop runs
 * no more (the hub closes its backends after its thread's loop ended). */
static void sq_jobs_fail(sqlite_store_t *s)
{
    while (s->done_head) {
        sq_job_t *j = s->done_head;
        s->done_head = j->next;
        if (!s->done_head)
            s->done_tail = NULL;
        sq_job_run(s, j, -ESHUTDOWN);
        sq_job_free(j);
    }
}

static void sq_job_queue(sqlite_store_t *s, sq_job_t *j)
{
    j->next = NULL;
    if (s->done_tail)
        s->done_tail->next = j;
    else
        s->done_head = j;
    s->done_tail = j;
    px_defer(s->loop, &s->done_defer);
}

/* Append bytes to the job's copy; returns their offset in it, or SIZE_MAX (no memory). */
static size_t sq_job_copy(sq_job_t *j, const void *p, size_t len)
{
    if (j->bytes_len + len + 1 > j->bytes_cap) {
        size_t cap = j->bytes_cap ? j->bytes_cap : 256;
        while (cap < j->bytes_len + len + 1)
            cap *= 2;
        char *nb = px__realloc(j->bytes, cap);
        if (!nb)
            return SIZE_MAX;
        j->bytes = nb;
        j->bytes_cap = cap;
    }
    size_t at = j->bytes_len;
    if (len)
        memcpy(j->bytes + at, p, len);
    j->bytes[at + len] = '\0';
    j->bytes_len += len + 1;
    return at;
}

static int sq_attach(px__store_t *base, px_loop_t *loop)
{
    sqlite_store_t *s = from_base(base);
    s->loop = loop;
    px_defer_init(&s->done_defer, sq_jobs_done, s);
    return 0;
}

static int sq_append_async(px__store_t *base, const px__store_msg_t *msgs, size_t n,
                           px__store_append_cb cb, void *ud)
{
    sqlite_store_t *s = from_base(base);
    if (!s->loop)
        return -ENOTCONN;
    sq_job_t *j = px__calloc(1, sizeof *j);
    px__store_assigned_t *out = n ? px__calloc(n, sizeof *out) : NULL;
    if (!j || (n && !out)) {
        px__free(j);
        px__free(out);
        return -ENOMEM;
    }
    j->acb = cb;
    j->ud = ud;
    j->n = n;
    j->out = out;
    j->status = sq_append(base, msgs, n, out);
    if (j->status == 0) { /* the epochs point into the store until its next call: copy */
        size_t *at = n ? px__calloc(n, sizeof *at) : NULL;
        for (size_t i = 0; i < n && !j->status; i++)
            if (!at || (at[i] = sq_job_copy(j, out[i].epoch.ptr, out[i].epoch.len)) == SIZE_MAX)
                j->status = -ENOMEM; /* committed, but unacknowledged: the hub says 503 */
        for (size_t i = 0; i < n && !j->status; i++)
            out[i].epoch.ptr = j->bytes + at[i];
        px__free(at);
    }
    sq_job_queue(s, j);
    return 0;
}

typedef struct sq_collect {
    sq_job_t *j;
    size_t cap;
} sq_collect_t;

static int sq_collect(void *ud, const px__store_msg_t *m)
{
    sq_collect_t *c = ud;
    sq_job_t *j = c->j;
    if (j->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        px__store_msg_t *nm = px__realloc(j->msgs, cap * sizeof *nm);
        if (!nm)
            return -ENOMEM;
        j->msgs = nm;
        c->cap = cap;
    }
    size_t at = sq_job_copy(j, m->data.ptr, m->data.len);
    size_t ev = at == SIZE_MAX ? SIZE_MAX : sq_job_copy(j, m->event.ptr, m->event.len);
    if (ev == SIZE_MAX)
        return -ENOMEM;
    /* Offsets into j->bytes for now (it may move): pointers when the callback runs. */
    j->msgs[j->n++] = (px__store_msg_t){.offset = m->offset,
                                        .time_ms = m->time_ms,
                                        .data = {(const char *)(uintptr_t)at, m->data.len},
                                        .event = {(const char *)(uintptr_t)ev, m->event.len}};
    return 0;
}

/* The channel's state and messages from one snapshot (a read transaction). */
static int sq_read_view(sqlite_store_t *s, sq_job_t *j, px_str_t channel, uint64_t since,
                        size_t limit)
{
    uint64_t h = px__siphash13(&s->hash_key, channel.ptr, channel.len);
    chan_t *c;
    int r = chan_sync(s, channel, h, false, &c);
    if (r < 0)
        return r;
    size_t at;
    if (!c) { /* not stored (yet): its fresh epoch, nothing before offset 1 */
        char fresh[PX__EPOCH_MAX + 1];
        if ((r = sq_fresh_epoch(&s->base, channel, fresh)) < 0)
            return r;
        if ((at = sq_job_copy(j, fresh, strlen(fresh))) == SIZE_MAX)
            return -ENOMEM;
        j->view.epoch = (px_str_t){(const char *)(uintptr_t)at, strlen(fresh)};
        j->view.last_offset = 0;
        j->view.first_offset = 1;
        return 0;
    }
    if ((at = sq_job_copy(j, c->st.epoch, c->st.epoch_len)) == SIZE_MAX)
        return -ENOMEM;
    j->view.epoch = (px_str_t){(const char *)(uintptr_t)at, c->st.epoch_len};
    j->view.last_offset = c->st.last_offset;
    uint64_t first;
    if ((r = chan_head(s, c, &first)) < 0)
        return r;
    j->view.first_offset = first ? first : c->st.last_offset + 1;
    if (limit == 0)
        return 0;
    sq_collect_t col = {.j = j};
    return sq_read(&s->base, channel, since, limit, sq_collect, &col);
}

static int sq_read_async(px__store_t *base, px_str_t channel, uint64_t since, size_t limit,
                         px__store_read_cb cb, void *ud)
{
    sqlite_store_t *s = from_base(base);
    if (!s->loop)
        return -ENOTCONN;
    if (!px__store_channel_ok(channel))
        return -EINVAL;
    sq_job_t *j = px__calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->rcb = cb;
    j->ud = ud;
    s->err[0] = '\0';
    if (!sqlite3_get_autocommit(s->db)) /* a failed ROLLBACK left one open (txn_begin) */
        run(s->q[Q_ROLLBACK]);
    int r = exec(s, "BEGIN", "begin a read");
    if (r == 0) {
        r = sq_read_view(s, j, channel, since, limit);
        int e = exec(s, "COMMIT", "end a read");
        if (r == 0)
            r = e;
    }
    if (r) {
        j->n = 0;
        j->view = (px__store_view_t){.status = r};
    }
    sq_job_queue(s, j);
    return 0;
}

/* The cache is not the truth when shared: the hub reads a channel's head from the store
 * before it serves the channel (like the other shared stores). */
static int sq_load_nothing(px__store_t *base, px__store_channel_cb cb, void *ud)
{
    PX_UNUSED(base);
    PX_UNUSED(cb);
    PX_UNUSED(ud);
    return 0;
}

static void sq_stat(px__store_t *base, px__backend_stat_t *st)
{
    PX_UNUSED(base);
    st->up = 1;
    st->queue = 0;
    st->reconnects = 0;
    st->error = "";
}

static const px__store_ops_t px__store_sqlite_shared = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .load_channels = sq_load_nothing,
    .create_channel = sq_create_channel,
    .append = sq_append,
    .read = sq_read,
    .trim = sq_trim,
    .earliest = sq_earliest,
    .fresh_epoch = sq_fresh_epoch,
    .flags = PX_STORE_ASYNC | PX_STORE_SHARED,
    .attach = sq_attach,
    .append_async = sq_append_async,
    .read_async = sq_read_async,
    .stat = sq_stat,
};

/* ---- failure injection: a VFS that wraps the default one ---------------------------- *
 * Like SQLite's test_vfs/ioerr harness: every file SQLite opens through "px-fault" is a
 * fault_file_t in front of the real file; matching operations consult fault_hit(). */

typedef struct fault_file {
    sqlite3_file base;  /* first: SQLite sees this */
    sqlite3_file *real; /* the default VFS's file, allocated right behind this struct */
} fault_file_t;

static struct {
    bool installed;
    sqlite3_vfs vfs;   /* copy of the default VFS with our name, size and xOpen */
    sqlite3_vfs *real; /* the default VFS */
    unsigned kinds;    /* PX_STORE_FAULT_* armed */
    long skip;         /* matching operations still allowed to succeed */
    long fail;         /* then this many fail (< 0: all) */
    long hits;
} fault;

static const char *fault_vfs_name(void)
{
    return fault.installed ? fault.vfs.zName : NULL;
}

static bool fault_hit(unsigned kind)
{
    if (!(fault.kinds & kind) || fault.fail == 0)
        return false;
    if (fault.skip > 0) {
        fault.skip--;
        return false;
    }
    if (fault.fail > 0)
        fault.fail--;
    fault.hits++;
    return true;
}

static sqlite3_file *real_file(sqlite3_file *f)
{
    return ((fault_file_t *)f)->real;
}

static int ff_close(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods ? r->pMethods->xClose(r) : SQLITE_OK;
}

static int ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    if (fault_hit(PX_STORE_FAULT_READ))
        return SQLITE_IOERR_READ;
    sqlite3_file *r = real_file(f);
    return r->pMethods->xRead(r, buf, n, off);
}

static int write_fault_code(int ioerr)
{
    return fault.kinds & PX_STORE_FAULT_FULL ? SQLITE_FULL : ioerr;
}

static int ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (fault_hit(PX_STORE_FAULT_WRITE))
        return write_fault_code(SQLITE_IOERR_WRITE);
    sqlite3_file *r = real_file(f);
    return r->pMethods->xWrite(r, buf, n, off);
}

static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    if (fault_hit(PX_STORE_FAULT_WRITE))
        return write_fault_code(SQLITE_IOERR_TRUNCATE);
    sqlite3_file *r = real_file(f);
    return r->pMethods->xTruncate(r, size);
}

static int ff_sync(sqlite3_file *f, int flags)
{
    if (fault_hit(PX_STORE_FAULT_SYNC))
        return SQLITE_IOERR_FSYNC;
    sqlite3_file *r = real_file(f);
    return r->pMethods->xSync(r, flags);
}

static int ff_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xFileSize(r, size);
}

static int ff_lock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xLock(r, level);
}

static int ff_unlock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xUnlock(r, level);
}

static int ff_check_reserved(sqlite3_file *f, int *out)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int ff_file_control(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int ff_sector_size(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xSectorSize(r);
}

static int ff_device_characteristics(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

static int ff_shm_map(sqlite3_file *f, int pg, int size, int extend, void volatile **pp)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_IOERR_SHMMAP;
    return r->pMethods->xShmMap(r, pg, size, extend, pp);
}

static int ff_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->iVersion < 2 ? SQLITE_IOERR_SHMLOCK
                                     : r->pMethods->xShmLock(r, offset, n, flags);
}

static void ff_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion >= 2)
        r->pMethods->xShmBarrier(r);
}

static int ff_shm_unmap(sqlite3_file *f, int delete_flag)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->iVersion < 2 ? SQLITE_OK : r->pMethods->xShmUnmap(r, delete_flag);
}

static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    sqlite3_file *r = real_file(f);
    if (r->pMethods->iVersion < 3) {
        *pp = NULL;
        return SQLITE_OK;
    }
    return r->pMethods->xFetch(r, off, amt, pp);
}

static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = real_file(f);
    return r->pMethods->iVersion < 3 ? SQLITE_OK : r->pMethods->xUnfetch(r, off, p);
}

static const sqlite3_io_methods fault_io = {
    .iVersion = 3,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_file_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_check_reserved,
    .xFileControl = ff_file_control,
    .xSectorSize = ff_sector_size,
    .xDeviceCharacteristics = ff_device_characteristics,
    .xShmMap = ff_shm_map,
    .xShmLock = ff_shm_lock,
    .xShmBarrier = ff_shm_barrier,
    .xShmUnmap = ff_shm_unmap,
    .xFetch = ff_fetch,
    .xUnfetch = ff_unfetch,
};

static int ff_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    PX_UNUSED(vfs);
    fault_file_t *ff = (fault_file_t *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    ff->real->pMethods = NULL;
    if (fault_hit(PX_STORE_FAULT_OPEN)) {
        f->pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    int rc = fault.real->xOpen(fault.real, name, ff->real, flags, out_flags);
    /* SQLite calls xClose whenever pMethods is set, even after a failed open. */
    f->pMethods = ff->real->pMethods ? &fault_io : NULL;
    return rc;
}

void px__store_sqlite_fault(unsigned kinds, long skip, long fail_n)
{
    if (!fault.installed) {
        sqlite3_initialize();
        fault.real = sqlite3_vfs_find(NULL);
        fault.vfs = *fault.real;
        fault.vfs.pNext = NULL;
        fault.vfs.zName = "px-fault";
        fault.vfs.szOsFile = (int)sizeof(fault_file_t) + fault.real->szOsFile;
        fault.vfs.xOpen = ff_open;
        sqlite3_vfs_register(&fault.vfs, 0);
        fault.installed = true;
    }
    fault.kinds = kinds;
    fault.skip = skip;
    fault.fail = kinds ? fail_n : 0;
    fault.hits = 0;
}

long px__store_sqlite_fault_hits(void)
{
    return fault.hits;
}
