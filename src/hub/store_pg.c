/* History in PostgreSQL, shared by every node (--store postgres://...).
 *
 * Tables (created and migrated at start; plexus_schema holds the version):
 *   plexus_instance  (id)                          one row, random when the database is new
 *   plexus_channels  (name PK, epoch, last_offset) the per-channel counter
 *   plexus_messages  (channel, offset PK, time_ms, data bytea)
 *   plexus_presence  (channel, client PK, usr, info, expires)  members across nodes (v2,
 *                    broker_pg.c)
 * A group commit is one statement (one transaction, one round trip, sql_append below): the
 * channel rows are upserted in name order and advanced under their locks (so nodes
 * committing to the same channel take turns and offsets never repeat or go back), the
 * messages inserted, and what history_size pushed out deleted. A new channel's epoch is
 * md5(instance || ':' || name), the same on every node; a database created anew has a new
 * instance, so new epochs (clients recovering from the old ones get recovery-failed).
 * --history-ttl: reads skip expired messages; a timer deletes them in batches of 10 000.
 *
 * Asynchronous only (libpq non-blocking, pipeline mode, pg_conn.c); the synchronous calls
 * are refused like in store_redis.c. open() connects once, blocking, at startup (before the
 * hub thread runs) to create or migrate the schema. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <libpq-fe.h>

#include "core/alloc.h"
#include "core/log.h"
#include "hub/pg_conn.h"
#include "hub/store.h"

#define SCHEMA_VERSION 2
#define TRIM_BATCH     "10000"
#define TRIM_EVERY_MS  1000

/* Migrations: migration[v] brings the schema from version v to v + 1. */
static const char *const migration[SCHEMA_VERSION] = {
    "CREATE TABLE plexus_instance (id text NOT NULL);"
    "INSERT INTO plexus_instance SELECT substr(md5(random()::text || clock_timestamp()::text),"
    " 1, 16);"
    "CREATE TABLE plexus_channels (name text PRIMARY KEY, epoch text NOT NULL,"
    " last_offset bigint NOT NULL);"
    "CREATE TABLE plexus_messages (channel text NOT NULL, \"offset\" bigint NOT NULL,"
    " time_ms bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (channel, \"offset\"));"
    "CREATE INDEX plexus_messages_time ON plexus_messages (time_ms);",
    /* 1 -> 2: presence across nodes with the PostgreSQL broker (each node's members with
     * the expiry it keeps refreshing). */
    "CREATE TABLE plexus_presence (channel text NOT NULL, client text NOT NULL,"
    " usr text NOT NULL, info text NOT NULL, expires timestamptz NOT NULL,"
    " PRIMARY KEY (channel, client));",
};

/* A whole group commit in one statement (one transaction): $1 channels, $2 times, $3 data
 * (binary arrays, one element per message, in order), $4 history_size (0 = unlimited).
 * Each channel row is upserted once, in name order (nodes lock rows in the same order, so
 * two commits cannot deadlock), and advanced by its number of messages; the messages get
 * the offsets below the new last_offset in their batch order; what history_size pushed
 * out is deleted. Answers (epoch, offset) per message, in batch order.
 * The delete walks the primary key from each committed channel's first offset, at most
 * TRIM_BATCH rows per channel and commit (reads skip what history_size pushed out anyway,
 * so a backlog, after history_size was lowered, goes over the next commits). Written as a
 * join of plexus_messages with c, its plan was a hash join over a sequential scan of the
 * whole table: every commit read all of the history (~9 ms at 15 000 rows), which made
 * publishes 10x slower than with SQLite, and slower as the history grew (prepare_all()
 * also keeps the planner off sequential scans). */
static const char sql_append[] =
    "WITH u AS (SELECT ch, t, d, i FROM unnest($1::text[], $2::bigint[], $3::bytea[])"
    " WITH ORDINALITY AS x(ch, t, d, i)),"
    " cnt AS (SELECT ch, count(*) AS n FROM u GROUP BY ch),"
    " c AS (INSERT INTO plexus_channels AS tb (name, epoch, last_offset)"
    " SELECT cnt.ch, (SELECT substr(md5(id || ':' || cnt.ch), 1, 16) FROM plexus_instance), cnt.n"
    " FROM cnt ORDER BY cnt.ch"
    " ON CONFLICT (name) DO UPDATE SET last_offset = tb.last_offset + excluded.last_offset"
    " RETURNING name, epoch, last_offset),"
    " m AS (SELECT u.i, c.epoch, c.last_offset - cnt.n"
    " + row_number() OVER (PARTITION BY u.ch ORDER BY u.i) AS off, u.ch, u.t, u.d"
    " FROM u JOIN c ON c.name = u.ch JOIN cnt ON cnt.ch = u.ch),"
    " ins AS (INSERT INTO plexus_messages (channel, \"offset\", time_ms, data)"
    " SELECT ch, off, t, d FROM m),"
    " del AS (DELETE FROM plexus_messages WHERE $4::bigint > 0 AND ctid = ANY(ARRAY("
    "SELECT o.ctid FROM c CROSS JOIN LATERAL (SELECT pm.ctid FROM plexus_messages pm"
    " WHERE pm.channel = c.name AND pm.\"offset\" <= c.last_offset - $4::bigint"
    " ORDER BY pm.\"offset\" LIMIT " TRIM_BATCH ") o)))"
    " SELECT epoch, off FROM m ORDER BY i";

/* Row k = 0: the channel's head (o = last offset, t = first offset kept, d = epoch);
 * rows k = 1: messages after $2 (o = offset, t = time, d = data). $3: TTL cutoff (unix ms,
 * 0 = none), $4: limit, $5: history_size (0 = unlimited). */
static const char sql_read[] =
    "WITH h AS (SELECT coalesce(ch.epoch, substr(md5(i.id || ':' || $1), 1, 16)) AS epoch,"
    " coalesce(ch.last_offset, 0) AS last_offset"
    " FROM plexus_instance i LEFT JOIN plexus_channels ch ON ch.name = $1)"
    " SELECT 0 AS k, h.last_offset AS o,"
    " coalesce((SELECT min(\"offset\") FROM plexus_messages WHERE channel = $1"
    " AND time_ms >= $3::bigint AND ($5::bigint = 0 OR \"offset\" > h.last_offset - $5::bigint)),"
    " h.last_offset + 1) AS t, convert_to(h.epoch, 'UTF8') AS d FROM h"
    " UNION ALL (SELECT 1, \"offset\", time_ms, data FROM plexus_messages, h"
    " WHERE channel = $1 AND \"offset\" > $2::bigint AND time_ms >= $3::bigint"
    " AND ($5::bigint = 0 OR \"offset\" > h.last_offset - $5::bigint)"
    " ORDER BY \"offset\" LIMIT $4::bigint)";

static const char sql_trim_ttl[] =
    "DELETE FROM plexus_messages WHERE ctid = ANY(ARRAY(SELECT ctid FROM plexus_messages"
    " WHERE time_ms < $1::bigint LIMIT " TRIM_BATCH "))";

typedef struct pstore {
    px__store_t base;
    char *conninfo;
    uint64_t history_size, history_ttl_ms;
    px__pgconn_t conn;
    int attached;
    int trimming;
    px_timer_t trim_timer;
    char inst[64];
    char err[256];
} pstore_t;

static pstore_t *PS(px__store_t *s)
{
    return PX_CONTAINER_OF(s, pstore_t, base);
}

static int64_t wall_ms_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- open: schema ------------------------------------------------------------------------------
 */

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "postgres store: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -EIO;
}

static void quiet_notice(void *arg, const char *msg)
{
    PX_UNUSED(arg);
    PX_UNUSED(msg); /* "relation ... already exists, skipping" and the like */
}

static int migrate(pstore_t *s, PGconn *c, char *err, size_t errlen)
{
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    /* One node migrates at a time (an advisory lock inside the transaction). */
    if (exec_ok(c, "BEGIN", err, errlen) ||
        exec_ok(c, "SELECT pg_advisory_xact_lock(7411016)", err, errlen) ||
        exec_ok(c, "CREATE TABLE IF NOT EXISTS plexus_schema (version integer NOT NULL)", err,
                errlen))
        return -EIO;
    PGresult *r = PQexec(c, "SELECT version FROM plexus_schema");
    int version = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgres store: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -EIO;
    }
    int fresh = PQntuples(r) == 0;
    if (!fresh)
        version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "postgres store: the database schema is version %d, this plexus knows up to "
                 "%d (upgrade plexus)",
                 version, SCHEMA_VERSION);
        exec_ok(c, "ROLLBACK", err + strlen(err), 0);
        return -EPROTO;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        if (exec_ok(c, migration[v], err, errlen))
            return -EIO;
        px_log(PX_LOG_INFO, "postgres store: schema migrated to version %d", v + 1);
    }
    char q[96];
    snprintf(q, sizeof q,
             fresh ? "INSERT INTO plexus_schema VALUES (%d)"
                   : "UPDATE plexus_schema SET version = %d",
             SCHEMA_VERSION);
    if (exec_ok(c, q, err, errlen) || exec_ok(c, "COMMIT", err, errlen))
        return -EIO;
    r = PQexec(c, "SELECT id FROM plexus_instance");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        snprintf(s->inst, sizeof s->inst, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int p_open(const px__store_opts_t *o, px__store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o->conninfo || !*o->conninfo) {
        snprintf(err, errlen, "postgres store: no URL");
        return -EINVAL;
    }
    pstore_t *s = px__xcalloc(1, sizeof *s);
    s->base.ops = &px__store_pg;
    s->conninfo = px__xstrdup(o->conninfo);
    s->history_size = o->history_size;
    s->history_ttl_ms = o->history_ttl_ms;
    /* Blocking, at startup only: create or migrate the schema. An unreachable server is
     * not fatal (publishes fail fast until it is up); a refused login or a schema newer
     * than ours is. */
    char *pe = NULL;
    PQconninfoOption *opts = PQconninfoParse(o->conninfo, &pe);
    if (!opts) {
        snprintf(err, errlen, "postgres store: %s", pe ? pe : "bad URL");
        size_t n = strlen(err);
        while (n && err[n - 1] == '\n')
            err[--n] = '\0';
        PQfreemem(pe);
        px__free(s->conninfo);
        px__free(s);
        return -EINVAL;
    }
    PQconninfoFree(opts);
    PGconn *c = PQconnectdb(o->conninfo);
    int r = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(c);
        if (strstr(msg, "authentication") || strstr(msg, "does not exist") ||
            strstr(msg, "password")) {
            snprintf(err, errlen, "postgres store: %s", msg);
            r = -EACCES;
        } else {
            px_log(PX_LOG_WARN, "postgres store: %s (starting anyway; retrying)", msg);
        }
    } else {
        r = migrate(s, c, err, errlen);
    }
    PQfinish(c);
    if (r) {
        size_t n = strlen(err);
        while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
            err[--n] = '\0';
        px__free(s->conninfo);
        px__free(s);
        return r;
    }
    *out = &s->base;
    return 0;
}

static void p_close(px__store_t *b)
{
    if (!b)
        return;
    pstore_t *s = PS(b);
    if (s->attached) {
        px_timer_stop(&s->trim_timer);
        px__pgconn_stop(&s->conn);
    }
    px__free(s->conninfo);
    px__free(s);
}

static const char *p_errmsg(px__store_t *b)
{
    pstore_t *s = PS(b);
    if (!s->err[0] && s->conn.last_error[0])
        return s->conn.last_error;
    return s->err;
}

static int p_load_channels(px__store_t *b, px__store_channel_cb cb, void *ud)
{
    PX_UNUSED(b);
    PX_UNUSED(cb);
    PX_UNUSED(ud);
    return 0;
}

static int p_create_channel(px__store_t *b, px_str_t channel, px_str_t epoch)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(epoch);
    return -ENOTSUP;
}

static int p_append(px__store_t *b, const px__store_msg_t *msgs, size_t n,
                    px__store_assigned_t *out)
{
    PX_UNUSED(msgs);
    PX_UNUSED(out);
    snprintf(PS(b)->err, sizeof PS(b)->err, "the postgres store is asynchronous only");
    return n ? -ENOTSUP : 0;
}

static int p_read(px__store_t *b, px_str_t channel, uint64_t since, size_t limit,
                  px__store_msg_cb cb, void *ud)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(since);
    PX_UNUSED(limit);
    PX_UNUSED(cb);
    PX_UNUSED(ud);
    return -ENOTSUP;
}

static int p_trim(px__store_t *b, int64_t now_ms)
{
    PX_UNUSED(b);
    PX_UNUSED(now_ms);
    return 0; /* its own timer, asynchronously */
}

static int p_earliest(px__store_t *b, px_str_t channel, uint64_t *first)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(first);
    return -ENOTSUP;
}

/* A shared store's channels are always read from it before the hub serves them (their
 * head gives the epoch, computed in SQL): no local guess is needed. */
static int p_fresh_epoch(px__store_t *b, px_str_t channel, char out[PX__EPOCH_MAX + 1])
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(out);
    return -EAGAIN;
}

/* ---- asynchronous calls ------------------------------------------------------------------------
 */

static int prepare_all(pstore_t *s)
{
    PGconn *c = px__pgconn_pq(&s->conn);
    /* Plans that do not depend on the table's size at the time they are made. With one
     * plan per statement (a custom plan for each execution costs more CPU than running the
     * append, ~1 ms of planning), made when the history is empty, PostgreSQL picked a
     * sequential scan of plexus_messages for the append's retention delete and kept it:
     * every commit then read the whole history. Every statement here has an index to
     * walk, so sequential scans are off (plexus_instance, one row, has no index and is
     * scanned anyway); JIT is off since that setting's cost penalty would trigger it
     * (~400 ms per execution). Its own operation: an older server that refuses a setting
     * still gets the statements prepared. */
    static const char *const settings[] = {"SET plan_cache_mode = force_generic_plan",
                                           "SET enable_seqscan = off", "SET jit = off"};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        if (!PQsendQueryParams(c, settings[i], 0, NULL, NULL, NULL, NULL, 0)) {
            px__pgconn_broken(&s->conn);
            return -EIO;
        }
    int r = px__pgconn_end(&s->conn, 3, NULL, NULL);
    if (r)
        return r;
    if (!PQsendPrepare(c, "px_append", sql_append, 4, NULL) ||
        !PQsendPrepare(c, "px_read", sql_read, 5, NULL) ||
        !PQsendPrepare(c, "px_trim_ttl", sql_trim_ttl, 1, NULL)) {
        px__pgconn_broken(&s->conn);
        return -EIO;
    }
    return px__pgconn_end(&s->conn, 3, NULL, NULL);
}

static void on_ready(px__pgconn_t *c, void *ud)
{
    PX_UNUSED(c);
    prepare_all(ud);
}

static int result_error(pstore_t *s, int status, PGresult **res, int n, int want)
{
    if (status) {
        snprintf(s->err, sizeof s->err, "postgres: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "connection lost");
        return status;
    }
    for (int i = 0; i < n; i++) {
        ExecStatusType st = PQresultStatus(res[i]);
        if (st == PGRES_FATAL_ERROR) {
            snprintf(s->err, sizeof s->err, "postgres: %s", PQresultErrorMessage(res[i]));
            size_t l = strlen(s->err);
            while (l && s->err[l - 1] == '\n')
                s->err[--l] = '\0';
            return -EIO;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            snprintf(s->err, sizeof s->err, "postgres: %s", PQresStatus(st));
            return -EIO;
        }
    }
    if (n < want) {
        snprintf(s->err, sizeof s->err, "postgres: %d of %d results", n, want);
        return -EPROTO;
    }
    return 0;
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

typedef struct pop {
    pstore_t *s;
    px__store_append_cb acb;
    px__store_read_cb rcb;
    void *ud;
    size_t n;
    size_t limit;
} pop_t;

/* One result: a row (epoch, offset) per message, in batch order. */
static void on_append(px__pgconn_t *c, int status, PGresult **res, int n, void *ud)
{
    PX_UNUSED(c);
    pop_t *op = ud;
    pstore_t *s = op->s;
    int st = result_error(s, status, res, n, 1);
    px__store_assigned_t *out = NULL;
    if (!st) {
        PGresult *r = res[0];
        out = px__xcalloc(op->n ? op->n : 1, sizeof *out);
        if ((size_t)PQntuples(r) != op->n)
            st = -EPROTO;
        for (size_t i = 0; i < op->n && !st; i++) {
            if (PQgetlength(r, (int)i, 0) < 1 || PQgetlength(r, (int)i, 0) > PX__EPOCH_MAX ||
                PQgetlength(r, (int)i, 1) != 8) {
                st = -EPROTO;
                break;
            }
            out[i].epoch = (px_str_t){PQgetvalue(r, (int)i, 0), (size_t)PQgetlength(r, (int)i, 0)};
            out[i].offset = be64(PQgetvalue(r, (int)i, 1));
        }
        if (st)
            snprintf(s->err, sizeof s->err, "postgres: bad answer to an append");
    }
    op->acb(op->ud, st, st ? NULL : out);
    px__free(out);
    px__free(op);
}

/* PostgreSQL's binary array format, one dimension, no NULLs: header, then each element as
 * a 4-byte length and its bytes. `elem(i, &len)` gives element i. */
typedef const char *(*elem_fn)(const px__store_msg_t *m, char *tmp, int *len);

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static char *binary_array(const px__store_msg_t *msgs, size_t n, uint32_t oid, elem_fn elem,
                          int *outlen)
{
    size_t total = 20;
    char tmp[8];
    for (size_t i = 0; i < n; i++) {
        int l;
        elem(&msgs[i], tmp, &l);
        total += 4 + (size_t)l;
    }
    if (total > INT32_MAX)
        return NULL;
    char *buf = px__malloc(total);
    if (!buf)
        return NULL;
    put32(buf, 1);
    put32(buf + 4, 0);
    put32(buf + 8, oid);
    put32(buf + 12, (uint32_t)n);
    put32(buf + 16, 1);
    char *p = buf + 20;
    for (size_t i = 0; i < n; i++) {
        int l;
        const char *e = elem(&msgs[i], tmp, &l);
        put32(p, (uint32_t)l);
        if (l)
            memcpy(p + 4, e, (size_t)l);
        p += 4 + l;
    }
    *outlen = (int)total;
    return buf;
}

static const char *elem_channel(const px__store_msg_t *m, char *tmp, int *len)
{
    PX_UNUSED(tmp);
    *len = (int)m->channel.len;
    return m->channel.ptr;
}

static const char *elem_time(const px__store_msg_t *m, char *tmp, int *len)
{
    uint64_t v = (uint64_t)m->time_ms;
    for (int i = 0; i < 8; i++)
        tmp[i] = (char)(v >> (56 - 8 * i));
    *len = 8;
    return tmp;
}

static const char *elem_data(const px__store_msg_t *m, char *tmp, int *len)
{
    PX_UNUSED(tmp);
    *len = (int)m->data.len;
    return m->data.len ? m->data.ptr : "";
}

static int p_append_async(px__store_t *b, const px__store_msg_t *msgs, size_t n,
                          px__store_append_cb cb, void *ud)
{
    pstore_t *s = PS(b);
    if (!px__pgconn_ready(&s->conn)) {
        snprintf(s->err, sizeof s->err, "postgres: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "not connected");
        return -ENOTCONN;
    }
    for (size_t i = 0; i < n; i++)
        if (!px__store_channel_ok(msgs[i].channel) || msgs[i].data.len > INT32_MAX)
            return -EINVAL;
    int lens[4] = {0};
    char *chs = binary_array(msgs, n, 25 /* text */, elem_channel, &lens[0]);
    char *times = binary_array(msgs, n, 20 /* int8 */, elem_time, &lens[1]);
    char *datas = binary_array(msgs, n, 17 /* bytea */, elem_data, &lens[2]);
    char sbuf[24];
    lens[3] = snprintf(sbuf, sizeof sbuf, "%llu", (unsigned long long)s->history_size);
    int r = -ENOMEM;
    if (chs && times && datas) {
        const char *vals[4] = {chs, times, datas, sbuf};
        int fmts[4] = {1, 1, 1, 0};
        if (!PQsendQueryPrepared(px__pgconn_pq(&s->conn), "px_append", 4, vals, lens, fmts, 1)) {
            px__pgconn_broken(&s->conn);
            r = -ENOTCONN;
        } else {
            pop_t *op = px__xcalloc(1, sizeof *op);
            *op = (pop_t){.s = s, .acb = cb, .ud = ud, .n = n};
            r = px__pgconn_end(&s->conn, 1, on_append, op);
            if (r)
                px__free(op);
        }
    }
    px__free(chs);
    px__free(times);
    px__free(datas);
    return r;
}

static void on_read(px__pgconn_t *c, int status, PGresult **res, int n, void *ud)
{
    PX_UNUSED(c);
    pop_t *op = ud;
    pstore_t *s = op->s;
    px__store_view_t v = {0};
    v.status = result_error(s, status, res, n, 1);
    px__store_msg_t *msgs = NULL;
    if (!v.status) {
        PGresult *r = res[0];
        int rows = PQntuples(r), head = -1;
        for (int i = 0; i < rows; i++)
            if (PQgetlength(r, i, 0) == 4 && memcmp(PQgetvalue(r, i, 0), "\0\0\0\0", 4) == 0)
                head = i;
        if (head < 0 || PQgetlength(r, head, 1) != 8 || PQgetlength(r, head, 2) != 8 ||
            PQgetlength(r, head, 3) < 1 || PQgetlength(r, head, 3) > PX__EPOCH_MAX) {
            v.status = -EPROTO;
        } else {
            v.last_offset = be64(PQgetvalue(r, head, 1));
            v.first_offset = be64(PQgetvalue(r, head, 2));
            v.epoch = (px_str_t){PQgetvalue(r, head, 3), (size_t)PQgetlength(r, head, 3)};
            msgs = rows > 1 ? px__calloc((size_t)rows - 1, sizeof *msgs) : NULL;
            if (rows > 1 && !msgs)
                v.status = -ENOMEM;
            for (int i = 0; i < rows && !v.status; i++) {
                if (i == head)
                    continue;
                if (PQgetlength(r, i, 1) != 8 || PQgetlength(r, i, 2) != 8) {
                    v.status = -EPROTO;
                    break;
                }
                msgs[v.n++] =
                    (px__store_msg_t){.channel = {"", 0},
                                      .epoch = v.epoch,
                                      .offset = be64(PQgetvalue(r, i, 1)),
                                      .time_ms = (int64_t)be64(PQgetvalue(r, i, 2)),
                                      .data = {PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3)}};
            }
        }
        if (v.status == -EPROTO)
            snprintf(s->err, sizeof s->err, "postgres: bad answer to a read");
        if (v.status)
            v.n = 0;
        v.msgs = msgs;
    }
    op->rcb(op->ud, &v);
    px__free(msgs);
    px__free(op);
}

static int p_read_async(px__store_t *b, px_str_t channel, uint64_t since, size_t limit,
                        px__store_read_cb cb, void *ud)
{
    pstore_t *s = PS(b);
    if (!px__pgconn_ready(&s->conn)) {
        snprintf(s->err, sizeof s->err, "postgres: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "not connected");
        return -ENOTCONN;
    }
    if (!px__store_channel_ok(channel))
        return -EINVAL;
    char chbuf[PX__CHANNEL_MAX + 1], sb[24], cb_[24], lb[24], hb[24];
    memcpy(chbuf, channel.ptr, channel.len);
    chbuf[channel.len] = '\0';
    int64_t cutoff = 0;
    if (s->history_ttl_ms && s->history_ttl_ms < (uint64_t)INT64_MAX)
        cutoff = wall_ms_now() - (int64_t)s->history_ttl_ms;
    const char *vals[5] = {chbuf, sb, cb_, lb, hb};
    int lens[5] = {(int)channel.len, snprintf(sb, sizeof sb, "%llu", (unsigned long long)since),
                   snprintf(cb_, sizeof cb_, "%lld", (long long)(cutoff > 0 ? cutoff : 0)),
                   snprintf(lb, sizeof lb, "%zu", limit),
                   snprintf(hb, sizeof hb, "%llu", (unsigned long long)s->history_size)};
    if (!PQsendQueryPrepared(px__pgconn_pq(&s->conn), "px_read", 5, vals, lens, NULL, 1)) {
        px__pgconn_broken(&s->conn);
        return -ENOTCONN;
    }
    pop_t *op = px__xcalloc(1, sizeof *op);
    *op = (pop_t){.s = s, .rcb = cb, .ud = ud, .limit = limit};
    int r = px__pgconn_end(&s->conn, 1, on_read, op);
    if (r)
        px__free(op);
    return r;
}

/* ---- retention by TTL: batches on a timer -----------------------------------------------------
 */

static void on_trim(px__pgconn_t *c, int status, PGresult **res, int n, void *ud)
{
    PX_UNUSED(c);
    pstore_t *s = ud;
    s->trimming = 0;
    int more = !status && n == 1 && PQresultStatus(res[0]) == PGRES_COMMAND_OK &&
               atoi(PQcmdTuples(res[0])) >= atoi(TRIM_BATCH);
    px_timer_start(s->conn.loop, &s->trim_timer, more ? 10 : TRIM_EVERY_MS);
}

static void trim_cb(px_timer_t *t)
{
    pstore_t *s = t->data;
    if (s->trimming || !px__pgconn_ready(&s->conn)) {
        px_timer_start(s->conn.loop, t, TRIM_EVERY_MS);
        return;
    }
    char cb_[24];
    const char *vals[1] = {cb_};
    int lens[1] = {
        snprintf(cb_, sizeof cb_, "%lld", (long long)(wall_ms_now() - (int64_t)s->history_ttl_ms))};
    if (!PQsendQueryPrepared(px__pgconn_pq(&s->conn), "px_trim_ttl", 1, vals, lens, NULL, 0)) {
        px__pgconn_broken(&s->conn);
        px_timer_start(s->conn.loop, t, TRIM_EVERY_MS);
        return;
    }
    if (px__pgconn_end(&s->conn, 1, on_trim, s) == 0)
        s->trimming = 1;
    else
        px_timer_start(s->conn.loop, t, TRIM_EVERY_MS);
}

static int p_attach(px__store_t *b, px_loop_t *loop)
{
    pstore_t *s = PS(b);
    s->conn.on_ready = on_ready;
    s->conn.ud = s;
    px__pgconn_start(&s->conn, loop, s->conninfo, "store", 5000);
    s->attached = 1;
    px_timer_init(&s->trim_timer, trim_cb, s);
    if (s->history_ttl_ms && s->history_ttl_ms < (uint64_t)INT64_MAX)
        px_timer_start(loop, &s->trim_timer, TRIM_EVERY_MS);
    return 0;
}

static void p_stat(px__store_t *b, px__backend_stat_t *st)
{
    pstore_t *s = PS(b);
    st->up = px__pgconn_ready(&s->conn);
    st->queue = s->conn.pending;
    st->reconnects = s->conn.reconnects ? s->conn.reconnects - 1 : 0;
    st->error = st->up ? "" : s->conn.last_error[0] ? s->conn.last_error : "not connected";
}

const px__store_ops_t px__store_pg = {
    .name = "postgres",
    .open = p_open,
    .close = p_close,
    .errmsg = p_errmsg,
    .load_channels = p_load_channels,
    .create_channel = p_create_channel,
    .append = p_append,
    .read = p_read,
    .trim = p_trim,
    .earliest = p_earliest,
    .fresh_epoch = p_fresh_epoch,
    .flags = PX_STORE_ASYNC | PX_STORE_SHARED,
    .attach = p_attach,
    .append_async = p_append_async,
    .read_async = p_read_async,
    .stat = p_stat,
};
