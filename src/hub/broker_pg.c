/* Cross-node fan-out over PostgreSQL LISTEN/NOTIFY (the broker of --store postgres://...
 * when no --broker is given).
 *
 * One connection (pg_conn.c, on the hub thread's loop) LISTENs on one notification channel
 * per hub channel with local subscribers: "px_" + 16 hex chars of sha1(prefix ":" channel)
 * (PostgreSQL identifiers are at most 63 bytes; hub channel names up to 200); the payload
 * names the channel, so a hash collision only costs a filtered message. After a commit
 * the hub publishes with pg_notify() on the same connection:
 *     "PX1 " node " " epoch " " offset " " time " " publisher " " event_len " " channel_len
 *     "\n" channel event data
 * NOTIFY payloads are text of at most 8000 bytes: a message whose data is larger, holds a
 * NUL or is not UTF-8 goes as "PX1P ..." without event and data, and the nodes read it
 * from the store by offset (sink->poke).
 * The notifications of one loop iteration (a group commit's messages, in their order) go
 * out as one statement, one transaction (sql_notify_many): a NOTIFY commit is costly in
 * PostgreSQL (an xid, a commit record, the cluster-wide notify queue lock, a signal to
 * every listening backend), so paying it per message made the database the bottleneck
 * (~10x the CPU per publish). Anything else sent on the connection flushes them first, so
 * the connection's order is the order of the calls.
 *
 * Presence across nodes: each node's members are rows of plexus_presence (store_pg.c's
 * schema v2) with an expiry by the database's clock that the node keeps refreshing; join
 * and leave go to the other nodes on the channel's notification channel:
 *     "PXP " node " " J|L " " client " " user_len " " channel_len "\n" channel user info
 * A list deletes the expired members in the same statement (DELETE ... RETURNING: of two
 * nodes sweeping at once, one gets each row) and announces their leave, once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "hub/broker.h"
#include "hub/frontend.h"
#include "hub/pg_conn.h"
#include "util/crypto.h"
#include "util/hashmap.h"
#include "util/utf8.h"

#define NOTIFY_MAX 7900 /* under PostgreSQL's 8000-byte payload limit */
/* Notifications held for one statement at most (then it goes out at once). */
#define BATCH_MAX       4096
#define BATCH_MAX_BYTES (4u << 20)

/* Notification names and payloads, in order, as one statement: the arrays' order is the
 * order of the pg_notify calls (the sort runs before the volatile target list), so the
 * order of the notifications in the queue. */
static const char sql_notify_many[] =
    "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(c, p, i)"
    " ORDER BY i";

/* A PostgreSQL binary array of text being built: the 20-byte header is filled at the end,
 * then per element a 4-byte length and its bytes. */
typedef struct tarray {
    char *buf;
    size_t len, cap;
} tarray_t;

typedef struct pchan {
    px__hentry_t e;
    int confirmed;
    size_t name_len;
    char name[];
} pchan_t;

typedef struct pbroker {
    px__broker_t base;
    char *conninfo;
    px_loop_t *loop;
    px__broker_sink_t sink;
    px__pgconn_t conn;
    px__hashmap_t chans;
    tarray_t names, payloads; /* notifications not sent yet */
    size_t batch_n;
    px_defer_t flush;
    char node[17];
    char prefix[64];
} pbroker_t;

static pbroker_t *PB(px__broker_t *b)
{
    return PX_CONTAINER_OF(b, pbroker_t, base);
}

static void notify_name(const pbroker_t *b, px_str_t ch, char out[20])
{
    static const char hex[] = "0123456789abcdef";
    size_t pl = strlen(b->prefix);
    char buf[64 + 1 + PX__CHANNEL_MAX];
    memcpy(buf, b->prefix, pl);
    buf[pl] = ':';
    memcpy(buf + pl + 1, ch.ptr, ch.len);
    uint8_t md[20];
    px__sha1(buf, pl + 1 + ch.len, md);
    memcpy(out, "px_", 3);
    for (int i = 0; i < 8; i++) {
        out[3 + 2 * i] = hex[md[i] >> 4];
        out[4 + 2 * i] = hex[md[i] & 15];
    }
    out[19] = '\0';
}

static pchan_t *pchan_find(pbroker_t *b, const char *name, size_t len)
{
    px__hentry_t *e = px__hashmap_get(&b->chans, name, len);
    return e ? PX_CONTAINER_OF(e, pchan_t, e) : NULL;
}

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

/* Room for n more bytes (the header's room reserved first). */
static char *tarray_room(tarray_t *a, size_t n)
{
    if (!a->len)
        a->len = 20;
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + n)
            cap *= 2;
        char *nb = px__realloc(a->buf, cap);
        if (!nb)
            return NULL;
        a->buf = nb;
        a->cap = cap;
    }
    return a->buf + a->len;
}

static void tarray_finish(tarray_t *a, size_t n)
{
    put32(a->buf, 1);
    put32(a->buf + 4, 0);
    put32(a->buf + 8, 25); /* text */
    put32(a->buf + 12, (uint32_t)n);
    put32(a->buf + 16, 1);
}

static void batch_clear(pbroker_t *b)
{
    b->names.len = b->payloads.len = 0;
    b->batch_n = 0;
}

/* Send the held notifications (one statement); dropped if the connection is down (best
 * effort, like a publish refused while it is down: the other nodes find the gap). */
static void batch_flush(pbroker_t *b)
{
    if (!b->batch_n)
        return;
    if (px__pgconn_ready(&b->conn)) {
        tarray_finish(&b->names, b->batch_n);
        tarray_finish(&b->payloads, b->batch_n);
        const char *vals[2] = {b->names.buf, b->payloads.buf};
        int lens[2] = {(int)b->names.len, (int)b->payloads.len}, fmts[2] = {1, 1};
        if (!PQsendQueryParams(px__pgconn_pq(&b->conn), sql_notify_many, 2, NULL, vals, lens, fmts,
                               0))
            px__pgconn_broken(&b->conn);
        else
            px__pgconn_end(&b->conn, 1, NULL, NULL);
    }
    batch_clear(b);
}

static void on_flush(px_defer_t *d)
{
    batch_flush(d->data);
}

/* ---- inbound ----------------------------------------------------------------------------------
 */

static int take_u64(const char **p, const char *end, char stop, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    while (s < end && *s >= '0' && *s <= '9' && v < UINT64_MAX / 10)
        v = v * 10 + (uint64_t)(*s++ - '0');
    if (s == *p || s >= end || *s != stop)
        return -1;
    *out = v;
    *p = s + 1;
    return 0;
}

/* "PXP " node " " J|L " " client " " user_len " " channel_len "\n" channel user info */
static void on_presence_notify(pbroker_t *b, const char *p, const char *end)
{
    if (end - p < 17 || p[16] != ' ' || memcmp(p, b->node, 16) == 0)
        return; /* malformed or ours */
    p += 17;
    if (end - p < 2 || (p[0] != 'J' && p[0] != 'L') || p[1] != ' ')
        return;
    int op = p[0] == 'J' ? PX__JOIN : PX__LEAVE;
    p += 2;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp)
        return;
    px_str_t client = {p, (size_t)(sp - p)};
    p = sp + 1;
    uint64_t ul, cl;
    if (take_u64(&p, end, ' ', &ul) || take_u64(&p, end, '\n', &cl) || cl > (uint64_t)(end - p) ||
        ul > (uint64_t)(end - p) - cl)
        return;
    px_str_t ch = {p, (size_t)cl};
    if (!pchan_find(b, ch.ptr, ch.len))
        return; /* not followed here (or a hash collision) */
    px__broker_member_t m = {
        client, {p + cl, (size_t)ul}, {p + cl + ul, (size_t)(end - p - cl - ul)}};
    b->sink.presence(b->sink.ud, ch, op, &m);
}

static void on_notify(px__pgconn_t *c, const PGnotify *n, void *ud)
{
    PX_UNUSED(c);
    pbroker_t *b = ud;
    const char *p = n->extra, *end = p + strlen(n->extra);
    int poke = 0;
    if (end - p >= 4 && memcmp(p, "PXP ", 4) == 0) {
        on_presence_notify(b, p + 4, end);
        return;
    }
    if (end - p >= 4 && memcmp(p, "PX1 ", 4) == 0)
        p += 4;
    else if (end - p >= 5 && memcmp(p, "PX1P ", 5) == 0)
        p += 5, poke = 1;
    else
        return;
    if (end - p < 17 || p[16] != ' ')
        return;
    if (memcmp(p, b->node, 16) == 0)
        return; /* ours */
    p += 17;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp)
        return;
    px_str_t epoch = {p, (size_t)(sp - p)};
    p = sp + 1;
    uint64_t offset, time_ms, publisher, ev_len, ch_len;
    if (take_u64(&p, end, ' ', &offset) || take_u64(&p, end, ' ', &time_ms) ||
        take_u64(&p, end, ' ', &publisher) || take_u64(&p, end, ' ', &ev_len) ||
        take_u64(&p, end, '\n', &ch_len) || ch_len > (uint64_t)(end - p) ||
        ev_len > (uint64_t)(end - p) - ch_len)
        return;
    px_str_t ch = {p, (size_t)ch_len};
    if (!pchan_find(b, ch.ptr, ch.len) || !px__store_epoch_ok(epoch) || offset == 0 ||
        offset > PX__OFFSET_MAX)
        return; /* not ours (a hash collision) or malformed */
    if (poke) {
        b->sink.poke(b->sink.ud, ch);
        return;
    }
    p += ch_len;
    px_str_t event = {p, (size_t)ev_len};
    px_str_t data = {p + ev_len, (size_t)(end - p - ev_len)};
    px_hub_msg_t *m = px__hub_msg_new(ch, event, data, publisher);
    if (!m)
        return;
    m->offset = offset;
    m->time_ms = (int64_t)time_ms;
    memcpy(m->epoch, epoch.ptr, epoch.len);
    m->epoch[epoch.len] = '\0';
    b->sink.message(b->sink.ud, m);
    px_hub_msg_unref(m);
}

/* ---- subscriptions ----------------------------------------------------------------------------
 */

typedef struct listen_op {
    pbroker_t *b;
    size_t n;
    char **names;
    size_t *lens;
} listen_op_t;

static void on_listened(px__pgconn_t *c, int status, PGresult **res, int n, void *ud)
{
    PX_UNUSED(c);
    listen_op_t *op = ud;
    pbroker_t *b = op->b;
    for (size_t i = 0; i < op->n; i++) {
        int st = status;
        if (!st && ((int)i >= n || PQresultStatus(res[i]) != PGRES_COMMAND_OK))
            st = -EIO;
        pchan_t *pc = pchan_find(b, op->names[i], op->lens[i]);
        if (pc && !pc->confirmed) {
            if (!st)
                pc->confirmed = 1;
            b->sink.subscribed(b->sink.ud, (px_str_t){op->names[i], op->lens[i]}, st);
        }
        px__free(op->names[i]);
    }
    px__free(op->names);
    px__free(op->lens);
    px__free(op);
}

static int send_listen(pbroker_t *b, const char *verb, px_str_t ch)
{
    char name[20], sql[48];
    notify_name(b, ch, name);
    snprintf(sql, sizeof sql, "%s %s", verb, name);
    if (!PQsendQueryParams(px__pgconn_pq(&b->conn), sql, 0, NULL, NULL, NULL, NULL, 0)) {
        px__pgconn_broken(&b->conn);
        return -ENOTCONN;
    }
    return 0;
}

static int listen_many(pbroker_t *b, pchan_t **list, size_t n)
{
    batch_flush(b);
    listen_op_t *op = px__xcalloc(1, sizeof *op);
    op->b = b;
    op->names = px__xcalloc(n, sizeof *op->names);
    op->lens = px__xcalloc(n, sizeof *op->lens);
    for (size_t i = 0; i < n; i++) {
        if (send_listen(b, "LISTEN", (px_str_t){list[i]->name, list[i]->name_len})) {
            for (size_t j = 0; j < op->n; j++)
                px__free(op->names[j]);
            px__free(op->names);
            px__free(op->lens);
            px__free(op);
            return -ENOTCONN;
        }
        op->names[op->n] = px__xmemdup(list[i]->name, list[i]->name_len);
        op->lens[op->n++] = list[i]->name_len;
    }
    int r = px__pgconn_end(&b->conn, (int)n, on_listened, op);
    if (r) {
        for (size_t j = 0; j < op->n; j++)
            px__free(op->names[j]);
        px__free(op->names);
        px__free(op->lens);
        px__free(op);
    }
    return r;
}

static void conn_ready(px__pgconn_t *c, void *ud)
{
    PX_UNUSED(c);
    pbroker_t *b = ud;
    size_t n = b->chans.count, i = 0;
    if (!n)
        return;
    pchan_t **list = px__xcalloc(n, sizeof *list);
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL); e;
         e = px__hashmap_next(&b->chans, e)) {
        list[i] = PX_CONTAINER_OF(e, pchan_t, e);
        list[i++]->confirmed = 0;
    }
    listen_many(b, list, n); /* each confirmation makes the hub catch up */
    px__free(list);
}

static void conn_down(px__pgconn_t *c, void *ud)
{
    PX_UNUSED(c);
    PX_UNUSED(ud);
    /* Pending LISTENs fail through their operation's callback; the others are renewed. */
}

/* ---- ops --------------------------------------------------------------------------------------
 */

static int pb_open(const char *url, px_loop_t *loop, const px__broker_sink_t *sink,
                   px__broker_t **out, char *err, size_t errlen)
{
    char *pe = NULL;
    PQconninfoOption *o = PQconninfoParse(url, &pe);
    if (!o) {
        snprintf(err, errlen, "postgres broker: %s", pe ? pe : "bad URL");
        PQfreemem(pe);
        return -EINVAL;
    }
    PQconninfoFree(o);
    pbroker_t *b = px__xcalloc(1, sizeof *b);
    b->base.ops = &px__broker_pg;
    b->conninfo = px__xstrdup(url);
    b->loop = loop;
    b->sink = *sink;
    px_defer_init(&b->flush, on_flush, b);
    snprintf(b->prefix, sizeof b->prefix, "plexus");
    px__hashmap_init(&b->chans);
    char e[PX__EPOCH_MAX + 1];
    px__store_epoch_new(e);
    memcpy(b->node, e, 16);
    b->node[16] = '\0';
    *out = &b->base;
    return 0;
}

static int pb_start(px__broker_t *base)
{
    pbroker_t *b = PB(base);
    b->conn.on_ready = conn_ready;
    b->conn.on_down = conn_down;
    b->conn.on_notify = on_notify;
    b->conn.ud = b;
    px__pgconn_start(&b->conn, b->loop, b->conninfo, "broker", 5000);
    return 0;
}

static void pb_close(px__broker_t *base)
{
    pbroker_t *b = PB(base);
    px__pgconn_stop(&b->conn);
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL), *next; e; e = next) {
        next = px__hashmap_next(&b->chans, e);
        px__free(PX_CONTAINER_OF(e, pchan_t, e));
    }
    px__hashmap_dispose(&b->chans);
    px__free(b->names.buf);
    px__free(b->payloads.buf);
    px__free(b->conninfo);
    px__free(b);
}

static void pb_stat(px__broker_t *base, px__backend_stat_t *st)
{
    pbroker_t *b = PB(base);
    st->up = px__pgconn_ready(&b->conn);
    st->queue = b->conn.pending;
    st->reconnects = b->conn.reconnects ? b->conn.reconnects - 1 : 0;
    st->error = st->up ? "" : b->conn.last_error[0] ? b->conn.last_error : "not connected";
}

static int pb_publish(px__broker_t *base, const px_hub_msg_t *m)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    px_str_t ch = px_hub_msg_channel(m), ev = px_hub_msg_event(m), data = px_hub_msg_data(m);
    if (ch.len && (memchr(ch.ptr, 0, ch.len) || !px__utf8_valid((const uint8_t *)ch.ptr, ch.len)))
        return -EINVAL; /* not text: it would fail the whole statement */
    char head[128 + PX__CHANNEL_MAX];
    int full = ev.len + data.len + ch.len + 128 <= NOTIFY_MAX && !memchr(data.ptr, 0, data.len) &&
               !memchr(ev.ptr, 0, ev.len) && px__utf8_valid((const uint8_t *)data.ptr, data.len) &&
               px__utf8_valid((const uint8_t *)ev.ptr, ev.len);
    int hl = snprintf(head, sizeof head, "%s %s %s %llu %lld %llu %zu %zu\n", full ? "PX1" : "PX1P",
                      b->node, m->epoch, (unsigned long long)m->offset, (long long)m->time_ms,
                      (unsigned long long)m->publisher, full ? ev.len : 0, ch.len);
    size_t n = (size_t)hl + ch.len + (full ? ev.len + data.len : 0);
    char *pn = tarray_room(&b->names, 4 + 20);
    char *pp = pn ? tarray_room(&b->payloads, 4 + n) : NULL;
    if (!pp)
        return -ENOMEM;
    put32(pn, 19);
    notify_name(b, ch, pn + 4); /* its NUL lands past the element, overwritten or unused */
    b->names.len += 4 + 19;
    put32(pp, (uint32_t)n);
    pp += 4;
    memcpy(pp, head, (size_t)hl);
    memcpy(pp + hl, ch.ptr, ch.len);
    if (full) {
        if (ev.len)
            memcpy(pp + hl + ch.len, ev.ptr, ev.len);
        if (data.len)
            memcpy(pp + hl + ch.len + ev.len, data.ptr, data.len);
    }
    b->payloads.len += 4 + n;
    if (++b->batch_n >= BATCH_MAX || b->payloads.len >= BATCH_MAX_BYTES)
        batch_flush(b);
    else
        px_defer(b->loop, &b->flush);
    return 0;
}

static int pb_subscribe(px__broker_t *base, px_str_t channel)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    pchan_t *pc = pchan_find(b, channel.ptr, channel.len);
    if (!pc) {
        pc = px__calloc(1, sizeof *pc + channel.len + 1);
        if (!pc)
            return -ENOMEM;
        memcpy(pc->name, channel.ptr, channel.len);
        pc->name_len = channel.len;
        pc->e.key = pc->name;
        pc->e.key_len = channel.len;
        if (px__hashmap_put(&b->chans, &pc->e) != 0) {
            px__free(pc);
            return -ENOMEM;
        }
    }
    pc->confirmed = 0;
    int r = listen_many(b, &pc, 1);
    if (r) {
        px__hashmap_del(&b->chans, &pc->e);
        px__free(pc);
    }
    return r;
}

static int pb_unsubscribe(px__broker_t *base, px_str_t channel)
{
    pbroker_t *b = PB(base);
    pchan_t *pc = pchan_find(b, channel.ptr, channel.len);
    if (!pc)
        return 0;
    px__hashmap_del(&b->chans, &pc->e);
    px__free(pc);
    /* LISTEN and UNLISTEN run in order on the one connection: a LISTEN sent later wins. */
    batch_flush(b);
    if (px__pgconn_ready(&b->conn) && send_listen(b, "UNLISTEN", channel) == 0)
        px__pgconn_end(&b->conn, 1, NULL, NULL);
    return 0;
}

/* ---- presence across nodes ---------------------------------------------------------------------
 */

static char *cstr(px_str_t v)
{
    char *o = px__malloc(v.len + 1);
    if (o) {
        if (v.len)
            memcpy(o, v.ptr, v.len);
        o[v.len] = '\0';
    }
    return o;
}

/* Text that PostgreSQL and NOTIFY take: no NUL, UTF-8. */
static int text_ok(px_str_t v)
{
    return !v.len || (!memchr(v.ptr, 0, v.len) && px__utf8_valid((const uint8_t *)v.ptr, v.len));
}

static int member_ok(const px__broker_member_t *m)
{
    return text_ok(m->client) && text_ok(m->user) && text_ok(m->info);
}

static int send_sql(pbroker_t *b, const char *sql, int n, const char *const *vals)
{
    if (!PQsendQueryParams(px__pgconn_pq(&b->conn), sql, n, NULL, vals, NULL, NULL, 0)) {
        px__pgconn_broken(&b->conn);
        return -ENOTCONN;
    }
    return 0;
}

/* The upsert of one member with an expiry ttl_ms from now (the database's clock). */
static const char sql_pres_upsert[] =
    "INSERT INTO plexus_presence (channel, client, usr, info, expires)"
    " VALUES ($1, $2, $3, $4, clock_timestamp() + $5::bigint * interval '1 millisecond')"
    " ON CONFLICT (channel, client) DO UPDATE SET usr = excluded.usr, info = excluded.info,"
    " expires = excluded.expires";

static int send_upsert(pbroker_t *b, const char *ch, const px__broker_member_t *m, const char *ttl)
{
    char *cl = cstr(m->client), *u = cstr(m->user), *i = cstr(m->info);
    int r = -ENOMEM;
    if (cl && u && i) {
        const char *vals[5] = {ch, cl, u, i, ttl};
        r = send_sql(b, sql_pres_upsert, 5, vals);
    }
    px__free(cl);
    px__free(u);
    px__free(i);
    return r;
}

/* The pg_notify of a join or leave, for the other nodes. */
static int send_announce(pbroker_t *b, px_str_t ch, int op, const px__broker_member_t *m)
{
    char head[96];
    int hl =
        snprintf(head, sizeof head, "PXP %s %c %.*s %zu %zu\n", b->node, op == PX__JOIN ? 'J' : 'L',
                 (int)m->client.len, m->client.ptr, m->user.len, ch.len);
    size_t n = (size_t)hl + ch.len + m->user.len + m->info.len;
    char *payload = px__malloc(n + 1);
    if (!payload)
        return -ENOMEM;
    memcpy(payload, head, (size_t)hl);
    memcpy(payload + hl, ch.ptr, ch.len);
    if (m->user.len)
        memcpy(payload + hl + ch.len, m->user.ptr, m->user.len);
    if (m->info.len)
        memcpy(payload + hl + ch.len + m->user.len, m->info.ptr, m->info.len);
    payload[n] = '\0';
    char name[20];
    notify_name(b, ch, name);
    const char *vals[2] = {name, payload};
    int r = send_sql(b, "SELECT pg_notify($1, $2)", 2, vals);
    px__free(payload);
    return r;
}

/* After the one query just sent: the announce, and the operation's end (with whatever was
 * sent: an operation's query count must match what went out). */
static int end_with_announce(pbroker_t *b, px_str_t ch, int op, const px__broker_member_t *m)
{
    int a = send_announce(b, ch, op, m);
    if (a == -ENOTCONN)
        return a;
    return px__pgconn_end(&b->conn, a == 0 ? 2 : 1, NULL, NULL);
}

static int pb_presence_refresh(px__broker_t *base, px_str_t ch, const px__broker_member_t *m,
                               size_t n, uint64_t ttl_ms)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    batch_flush(b);
    char *c = cstr(ch), ttl[24];
    if (!c)
        return -ENOMEM;
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    int nq = 0, r = 0;
    for (size_t i = 0; i < n && !r; i++)
        if (member_ok(&m[i]) && (r = send_upsert(b, c, &m[i], ttl)) == 0)
            nq++;
    px__free(c);
    if (r == -ENOTCONN)
        return r;
    return nq ? px__pgconn_end(&b->conn, nq, NULL, NULL) : r;
}

static int pb_presence_add(px__broker_t *base, px_str_t ch, const px__broker_member_t *who,
                           uint64_t ttl_ms)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    batch_flush(b);
    if (!text_ok(ch) || !member_ok(who))
        return -EINVAL; /* presence stays on this node */
    char *c = cstr(ch), ttl[24];
    if (!c)
        return -ENOMEM;
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    int r = send_upsert(b, c, who, ttl);
    px__free(c);
    return r ? r : end_with_announce(b, ch, PX__JOIN, who);
}

static int pb_presence_remove(px__broker_t *base, px_str_t ch, const px__broker_member_t *who)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    batch_flush(b);
    if (!text_ok(ch) || !member_ok(who))
        return -EINVAL;
    char *c = cstr(ch), *cl = cstr(who->client);
    int r = -ENOMEM;
    if (c && cl) {
        const char *vals[2] = {c, cl};
        r = send_sql(b, "DELETE FROM plexus_presence WHERE channel = $1 AND client = $2", 2, vals);
    }
    px__free(c);
    px__free(cl);
    return r ? r : end_with_announce(b, ch, PX__LEAVE, who);
}

/* Expired members deleted (gone = true) and every member left, by one statement: the
 * DELETE and the SELECT see the same now(), so each member is in exactly one part. */
static const char sql_pres_list[] =
    "WITH gone AS (DELETE FROM plexus_presence WHERE channel = $1 AND expires < now()"
    " RETURNING client, usr, info)"
    " SELECT true, client, usr, info FROM gone"
    " UNION ALL SELECT false, client, usr, info FROM plexus_presence"
    " WHERE channel = $1 AND expires >= now()";

typedef struct plist {
    pbroker_t *b;
    px__broker_members_cb cb;
    void *ud;
    size_t ch_len;
    char ch[];
} plist_t;

static px_str_t col(const PGresult *r, int row, int c)
{
    return (px_str_t){PQgetvalue(r, row, c), (size_t)PQgetlength(r, row, c)};
}

static void on_pres_list(px__pgconn_t *c, int status, PGresult **res, int n, void *ud)
{
    plist_t *pl = ud;
    pbroker_t *b = pl->b;
    px_str_t ch = {pl->ch, pl->ch_len};
    px__broker_member_t *ms = NULL;
    size_t nm = 0;
    int st = status;
    const PGresult *r = !st && n >= 1 ? res[0] : NULL;
    if (!st && (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 4))
        st = -EIO;
    if (!st) {
        batch_flush(b);
        int rows = PQntuples(r), gone = 0;
        ms = rows ? px__calloc((size_t)rows, sizeof *ms) : NULL;
        if (rows && !ms)
            st = -ENOMEM;
        for (int i = 0; i < rows && !st; i++) {
            px__broker_member_t m = {col(r, i, 1), col(r, i, 2), col(r, i, 3)};
            if (PQgetvalue(r, i, 0)[0] == 't') {
                /* Its node stopped refreshing it: its leave, once (this statement deleted
                 * it, so no other node reports it). */
                b->sink.presence(b->sink.ud, ch, PX__LEAVE, &m);
                if (px__pgconn_ready(c) && send_announce(b, ch, PX__LEAVE, &m) == 0)
                    gone++;
            } else {
                ms[nm++] = m;
            }
        }
        if (gone && px__pgconn_ready(c))
            px__pgconn_end(c, gone, NULL, NULL);
    }
    if (pl->cb)
        pl->cb(pl->ud, st, ms, nm);
    px__free(ms);
    px__free(pl);
}

static int pb_presence_list(px__broker_t *base, px_str_t ch, px__broker_members_cb cb, void *ud)
{
    pbroker_t *b = PB(base);
    if (!px__pgconn_ready(&b->conn))
        return -ENOTCONN;
    batch_flush(b);
    if (!text_ok(ch))
        return -EINVAL;
    plist_t *pl = px__malloc(sizeof *pl + ch.len + 1);
    char *c = cstr(ch);
    if (!pl || !c) {
        px__free(pl);
        px__free(c);
        return -ENOMEM;
    }
    pl->b = b;
    pl->cb = cb;
    pl->ud = ud;
    pl->ch_len = ch.len;
    memcpy(pl->ch, ch.ptr, ch.len);
    const char *vals[1] = {c};
    int r = send_sql(b, sql_pres_list, 1, vals);
    px__free(c);
    if (r == 0)
        r = px__pgconn_end(&b->conn, 1, on_pres_list, pl);
    if (r)
        px__free(pl);
    return r;
}

const px__broker_ops_t px__broker_pg = {
    .name = "pg",
    .open = pb_open,
    .start = pb_start,
    .close = pb_close,
    .stat = pb_stat,
    .publish = pb_publish,
    .subscribe = pb_subscribe,
    .unsubscribe = pb_unsubscribe,
    .confirms = 1,
    .presence_add = pb_presence_add,
    .presence_remove = pb_presence_remove,
    .presence_refresh = pb_presence_refresh,
    .presence_list = pb_presence_list,
};
