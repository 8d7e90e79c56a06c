/* Cross-node fan-out over Redis pub/sub (--broker redis://...).
 *
 * Two connections on the hub thread's loop (redis_conn.c): one in subscriber mode, with
 * one Redis channel P:c:<channel> per hub channel that has local subscribers (a node only
 * receives what it delivers), and one for PUBLISH. After a commit the hub publishes the
 * message once (not once per subscriber or per node: Redis fans it out to the nodes).
 *
 * A message on the bus (binary-safe, the Redis channel names the hub channel):
 *     "PX1 " node " " epoch " " offset " " time_ms " " publisher " " event_len "\n" event data
 * node: the publishing node's random id; a node ignores its own messages (it fanned them
 * out at commit). Messages are best effort: the hub finds a missed one in the shared store
 * when the next one shows the gap, and re-reads every channel after a reconnect (the
 * subscribed callback fires again for each). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "core/alloc.h"
#include "core/log.h"
#include "hub/broker.h"
#include "hub/frontend.h"
#include "hub/redis_conn.h"
#include "util/hashmap.h"

#define BUS_MAGIC      "PX1 "
#define BUS_PRES_MAGIC "PXP "

/* Presence of channel C: hash P:p:C (client -> "<user length>:<user><info>") and sorted set
 * P:pz:C (client -> expiry, unix ms by Redis's clock). Both expire 3 TTLs after the last
 * add or refresh, so a channel everybody left leaves nothing behind. */
static const char pres_add_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[1])\n"
    "for i = 2, #ARGV, 2 do\n"
    "  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "  redis.call('zadd', KEYS[2], now + ttl, ARGV[i])\n"
    "end\n"
    "redis.call('pexpire', KEYS[1], ttl * 3)\n"
    "redis.call('pexpire', KEYS[2], ttl * 3)\n"
    "return 1\n";

static const char pres_remove_lua[] = "redis.call('zrem', KEYS[2], ARGV[1])\n"
                                      "return redis.call('hdel', KEYS[1], ARGV[1])\n";

/* {n removed, removed client, value, ..., then client, value of every member left} */
static const char pres_list_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)\n"
    "local out = {#gone}\n"
    "for _, c in ipairs(gone) do\n"
    "  local v = redis.call('hget', KEYS[1], c)\n"
    "  redis.call('hdel', KEYS[1], c)\n"
    "  redis.call('zrem', KEYS[2], c)\n"
    "  out[#out + 1] = c\n"
    "  out[#out + 1] = v or ''\n"
    "end\n"
    "local all = redis.call('hgetall', KEYS[1])\n"
    "for i = 1, #all do out[#out + 1] = all[i] end\n"
    "return out\n";

/* A Redis channel we subscribed to or are leaving. hiredis 0.14 keeps one callback per
 * channel and drops it when an "unsubscribe" reply comes, even one that answers an
 * UNSUBSCRIBE sent before a newer SUBSCRIBE: so a SUBSCRIBE waits for the answer of an
 * UNSUBSCRIBE still in flight. */
typedef struct bchan {
    px__hentry_t e;
    int wanted;        /* the hub has local subscribers */
    int confirmed;     /* SUBSCRIBE answered on the current connection */
    int unsub_pending; /* UNSUBSCRIBE sent, its answer not yet come */
    size_t name_len;
    char name[]; /* hub channel name */
} bchan_t;

typedef struct rbroker {
    px__broker_t base;
    px__rurl_t url;
    px_loop_t *loop;
    px__broker_sink_t sink;
    px__rconn_t pub, sub;
    px__hashmap_t chans; /* channels with local subscribers */
    char node[17];
    char rprefix[80]; /* "<prefix>:c:" */
    size_t rprefix_len;
    uint64_t dropped; /* publishes dropped while the connection was down */
} rbroker_t;

static rbroker_t *RB(px__broker_t *b)
{
    return PX_CONTAINER_OF(b, rbroker_t, base);
}

/* "<prefix>:c:<channel>" into buf (cap >= rprefix_len + PX__CHANNEL_MAX). */
static size_t rname(const rbroker_t *b, px_str_t ch, char *buf)
{
    memcpy(buf, b->rprefix, b->rprefix_len);
    memcpy(buf + b->rprefix_len, ch.ptr, ch.len);
    return b->rprefix_len + ch.len;
}

static bchan_t *bchan_find(rbroker_t *b, const char *name, size_t len)
{
    px__hentry_t *e = px__hashmap_get(&b->chans, name, len);
    return e ? PX_CONTAINER_OF(e, bchan_t, e) : NULL;
}

/* ---- inbound ----------------------------------------------------------------------------------
 */

static int next_field(const char **p, const char *end, const char **f, size_t *len)
{
    const char *sp = memchr(*p, ' ', (size_t)(end - *p));
    if (!sp)
        return -1;
    *f = *p;
    *len = (size_t)(sp - *p);
    *p = sp + 1;
    return 0;
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "PXP " node " " J|L " " client " " user_len "\n" user info */
static void on_bus_presence(rbroker_t *b, px_str_t ch, const char *p, size_t n)
{
    const char *end = p + n, *node, *op, *client, *f;
    size_t node_len, op_len, client_len, fl;
    uint64_t user_len;
    if (next_field(&p, end, &node, &node_len) || next_field(&p, end, &op, &op_len) ||
        next_field(&p, end, &client, &client_len) || op_len != 1 || (*op != 'J' && *op != 'L'))
        goto bad;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || parse_u64(p, (size_t)(nl - p), &user_len) || user_len > (size_t)(end - nl - 1))
        goto bad;
    PX_UNUSED(f);
    PX_UNUSED(fl);
    if (node_len == 16 && memcmp(node, b->node, 16) == 0)
        return; /* ours: delivered locally already */
    p = nl + 1;
    px__broker_member_t who = {
        {client, client_len}, {p, (size_t)user_len}, {p + user_len, (size_t)(end - p - user_len)}};
    b->sink.presence(b->sink.ud, ch, *op == 'J' ? PX__JOIN : PX__LEAVE, &who);
    return;
bad:
    px_log(PX_LOG_WARN, "redis broker: ignored a malformed presence event on %.*s", (int)ch.len,
           ch.ptr);
}

static void on_bus_message(rbroker_t *b, const char *rch, size_t rlen, const char *p, size_t n)
{
    if (rlen <= b->rprefix_len || memcmp(rch, b->rprefix, b->rprefix_len) != 0)
        return;
    px_str_t ch = {rch + b->rprefix_len, rlen - b->rprefix_len};
    const char *end = p + n, *f;
    size_t fl;
    if (n >= 4 && memcmp(p, BUS_PRES_MAGIC, 4) == 0) {
        on_bus_presence(b, ch, p + 4, n - 4);
        return;
    }
    if (n < 4 || memcmp(p, BUS_MAGIC, 4) != 0)
        goto bad;
    p += 4;
    const char *node, *epoch;
    size_t node_len, epoch_len;
    uint64_t offset, time_ms, publisher, event_len;
    if (next_field(&p, end, &node, &node_len) || next_field(&p, end, &epoch, &epoch_len) ||
        next_field(&p, end, &f, &fl) || parse_u64(f, fl, &offset) || next_field(&p, end, &f, &fl) ||
        parse_u64(f, fl, &time_ms) || next_field(&p, end, &f, &fl) || parse_u64(f, fl, &publisher))
        goto bad;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || parse_u64(p, (size_t)(nl - p), &event_len) || event_len > (size_t)(end - nl - 1))
        goto bad;
    if (node_len == 16 && memcmp(node, b->node, 16) == 0)
        return; /* ours: fanned out at commit */
    if (!px__store_epoch_ok((px_str_t){epoch, epoch_len}) || offset == 0 ||
        offset > PX__OFFSET_MAX || !px__channel_name_ok(ch.ptr, ch.len))
        goto bad;
    p = nl + 1;
    px_str_t event = {p, (size_t)event_len};
    px_str_t data = {p + event_len, (size_t)(end - p - event_len)};
    px_hub_msg_t *m = px__hub_msg_new(ch, event, data, publisher);
    if (!m) {
        px_log(PX_LOG_ERROR, "redis broker: out of memory for a message");
        return;
    }
    m->offset = offset;
    m->time_ms = (int64_t)time_ms;
    memcpy(m->epoch, epoch, epoch_len);
    m->epoch[epoch_len] = '\0';
    b->sink.message(b->sink.ud, m);
    px_hub_msg_unref(m);
    return;
bad:
    px_log(PX_LOG_WARN, "redis broker: ignored a malformed message on %.*s", (int)rlen, rch);
}

static int send_subscribe(rbroker_t *b, const char *cmd, px_str_t ch);

static void on_push(px__rconn_t *c, redisReply *r, void *ud)
{
    PX_UNUSED(c);
    rbroker_t *b = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    const redisReply *kind = r->element[0], *rch = r->element[1], *x = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || rch->type != REDIS_REPLY_STRING)
        return;
    if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0) {
        if (x->type == REDIS_REPLY_STRING)
            on_bus_message(b, rch->str, rch->len, x->str, x->len);
    } else if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
        if (rch->len <= b->rprefix_len)
            return;
        bchan_t *bc = bchan_find(b, rch->str + b->rprefix_len, rch->len - b->rprefix_len);
        if (!bc || !bc->wanted || bc->confirmed)
            return; /* unsubscribed meanwhile */
        bc->confirmed = 1;
        b->sink.subscribed(b->sink.ud, (px_str_t){bc->name, bc->name_len}, 0);
    } else if (kind->len == 11 && memcmp(kind->str, "unsubscribe", 11) == 0) {
        if (rch->len <= b->rprefix_len)
            return;
        bchan_t *bc = bchan_find(b, rch->str + b->rprefix_len, rch->len - b->rprefix_len);
        if (!bc || !bc->unsub_pending || --bc->unsub_pending)
            return;
        if (bc->wanted) {
            send_subscribe(b, "SUBSCRIBE", (px_str_t){bc->name, bc->name_len});
        } else {
            px__hashmap_del(&b->chans, &bc->e);
            px__free(bc);
        }
    }
}

/* ---- connection events ------------------------------------------------------------------------
 */

static int send_subscribe(rbroker_t *b, const char *cmd, px_str_t ch)
{
    char buf[128 + PX__CHANNEL_MAX];
    const char *argv[2] = {cmd, buf};
    size_t argvlen[2] = {strlen(cmd), rname(b, ch, buf)};
    return px__rconn_command(&b->sub, NULL, NULL, 2, argv, argvlen);
}

static void sub_ready(px__rconn_t *c, void *ud)
{
    PX_UNUSED(c);
    rbroker_t *b = ud;
    /* Subscribe again to everything; each confirmation tells the hub to catch up. Channels
     * being left are gone with the old connection. */
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL), *next; e; e = next) {
        next = px__hashmap_next(&b->chans, e);
        bchan_t *bc = PX_CONTAINER_OF(e, bchan_t, e);
        bc->confirmed = 0;
        bc->unsub_pending = 0;
        if (!bc->wanted) {
            px__hashmap_del(&b->chans, &bc->e);
            px__free(bc);
            continue;
        }
        send_subscribe(b, "SUBSCRIBE", (px_str_t){bc->name, bc->name_len});
    }
}

static void sub_down(px__rconn_t *c, void *ud)
{
    PX_UNUSED(c);
    rbroker_t *b = ud;
    /* Subscriptions waiting for their confirmation fail now (the hub answers 503); the
     * others are renewed on reconnect. Collect first: the sink may call back into us. */
    size_t n = 0;
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL); e; e = px__hashmap_next(&b->chans, e))
        n += PX_CONTAINER_OF(e, bchan_t, e)->wanted && !PX_CONTAINER_OF(e, bchan_t, e)->confirmed;
    if (!n)
        return;
    char **names = px__xcalloc(n, sizeof *names);
    size_t *lens = px__xcalloc(n, sizeof *lens);
    size_t i = 0;
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL); e;
         e = px__hashmap_next(&b->chans, e)) {
        bchan_t *bc = PX_CONTAINER_OF(e, bchan_t, e);
        if (bc->wanted && !bc->confirmed) {
            names[i] = px__xmemdup(bc->name, bc->name_len);
            lens[i++] = bc->name_len;
        }
    }
    for (i = 0; i < n; i++) {
        b->sink.subscribed(b->sink.ud, (px_str_t){names[i], lens[i]}, -ENOTCONN);
        px__free(names[i]);
    }
    px__free(names);
    px__free(lens);
}

/* ---- ops --------------------------------------------------------------------------------------
 */

static int rb_open(const char *url, px_loop_t *loop, const px__broker_sink_t *sink,
                   px__broker_t **out, char *err, size_t errlen)
{
    rbroker_t *b = px__xcalloc(1, sizeof *b);
    b->base.ops = &px__broker_redis;
    if (px__rurl_parse(url, &b->url, err, errlen) != 0) {
        px__free(b);
        return -EINVAL;
    }
    b->loop = loop;
    b->sink = *sink;
    px__hashmap_init(&b->chans);
    char e[PX__EPOCH_MAX + 1];
    px__store_epoch_new(e);
    memcpy(b->node, e, 16);
    b->node[16] = '\0';
    b->rprefix_len = (size_t)snprintf(b->rprefix, sizeof b->rprefix, "%s:c:", b->url.prefix);
    *out = &b->base;
    return 0;
}

static int rb_start(px__broker_t *base)
{
    rbroker_t *b = RB(base);
    b->sub.subscriber = 1;
    b->sub.on_ready = sub_ready;
    b->sub.on_down = sub_down;
    b->sub.on_push = on_push;
    b->sub.ud = b;
    px__rconn_start(&b->pub, b->loop, &b->url, "broker");
    px__rconn_start(&b->sub, b->loop, &b->url, "broker-sub");
    return 0;
}

static void rb_close(px__broker_t *base)
{
    rbroker_t *b = RB(base);
    if (b->loop && b->pub.loop)
        px__rconn_stop(&b->pub);
    if (b->loop && b->sub.loop)
        px__rconn_stop(&b->sub);
    for (px__hentry_t *e = px__hashmap_next(&b->chans, NULL), *next; e; e = next) {
        next = px__hashmap_next(&b->chans, e);
        px__free(PX_CONTAINER_OF(e, bchan_t, e));
    }
    px__hashmap_dispose(&b->chans);
    px__free(b);
}

static void rb_stat(px__broker_t *base, px__backend_stat_t *st)
{
    rbroker_t *b = RB(base);
    st->up = px__rconn_ready(&b->pub) && px__rconn_ready(&b->sub);
    st->queue = b->pub.pending;
    st->reconnects = (b->pub.reconnects ? b->pub.reconnects - 1 : 0) +
                     (b->sub.reconnects ? b->sub.reconnects - 1 : 0);
    const char *e = !px__rconn_ready(&b->pub) ? b->pub.last_error : b->sub.last_error;
    st->error = st->up ? "" : e[0] ? e : "not connected";
}

static int rb_publish(px__broker_t *base, const px_hub_msg_t *m)
{
    rbroker_t *b = RB(base);
    char head[256];
    px_str_t ev = px_hub_msg_event(m), data = px_hub_msg_data(m);
    int hl = snprintf(head, sizeof head, BUS_MAGIC "%s %s %llu %lld %llu %zu\n", b->node, m->epoch,
                      (unsigned long long)m->offset, (long long)m->time_ms,
                      (unsigned long long)m->publisher, ev.len);
    size_t n = (size_t)hl + ev.len + data.len;
    char *payload = px__malloc(n);
    if (!payload)
        return -ENOMEM;
    memcpy(payload, head, (size_t)hl);
    if (ev.len)
        memcpy(payload + hl, ev.ptr, ev.len);
    if (data.len)
        memcpy(payload + hl + ev.len, data.ptr, data.len);
    char ch[128 + PX__CHANNEL_MAX];
    const char *argv[3] = {"PUBLISH", ch, payload};
    size_t argvlen[3] = {7, rname(b, px_hub_msg_channel(m), ch), n};
    int r = px__rconn_command(&b->pub, NULL, NULL, 3, argv, argvlen);
    px__free(payload);
    if (r)
        b->dropped++;
    return r;
}

static int rb_subscribe(px__broker_t *base, px_str_t channel)
{
    rbroker_t *b = RB(base);
    if (!px__rconn_ready(&b->sub))
        return -ENOTCONN;
    bchan_t *bc = bchan_find(b, channel.ptr, channel.len);
    if (!bc) {
        bc = px__calloc(1, sizeof *bc + channel.len + 1);
        if (!bc)
            return -ENOMEM;
        memcpy(bc->name, channel.ptr, channel.len);
        bc->name_len = channel.len;
        bc->e.key = bc->name;
        bc->e.key_len = channel.len;
        if (px__hashmap_put(&b->chans, &bc->e) != 0) {
            px__free(bc);
            return -ENOMEM;
        }
    }
    bc->wanted = 1;
    bc->confirmed = 0;
    if (bc->unsub_pending)
        return 0; /* sent when the UNSUBSCRIBE is answered */
    int r = send_subscribe(b, "SUBSCRIBE", channel);
    if (r) {
        bc->wanted = 0;
        px__hashmap_del(&b->chans, &bc->e);
        px__free(bc);
    }
    return r;
}

static int rb_unsubscribe(px__broker_t *base, px_str_t channel)
{
    rbroker_t *b = RB(base);
    bchan_t *bc = bchan_find(b, channel.ptr, channel.len);
    if (!bc || !bc->wanted)
        return 0;
    bc->wanted = 0;
    bc->confirmed = 0;
    if (px__rconn_ready(&b->sub) && send_subscribe(b, "UNSUBSCRIBE", channel) == 0) {
        bc->unsub_pending++;
        return 0;
    }
    if (!bc->unsub_pending) {
        px__hashmap_del(&b->chans, &bc->e);
        px__free(bc);
    }
    return 0;
}

/* ---- presence ----------------------------------------------------------------------------------
 */

static size_t pres_keys(const rbroker_t *b, px_str_t ch, char *hk, char *zk, size_t *zl)
{
    size_t pl = strlen(b->url.prefix);
    memcpy(hk, b->url.prefix, pl);
    memcpy(hk + pl, ":p:", 3);
    memcpy(hk + pl + 3, ch.ptr, ch.len);
    memcpy(zk, b->url.prefix, pl);
    memcpy(zk + pl, ":pz:", 4);
    memcpy(zk + pl + 4, ch.ptr, ch.len);
    *zl = pl + 4 + ch.len;
    return pl + 3 + ch.len;
}

/* "<user length>:<user><info>" */
static char *member_value(const px__broker_member_t *m, size_t *len)
{
    char head[24];
    int hl = snprintf(head, sizeof head, "%zu:", m->user.len);
    *len = (size_t)hl + m->user.len + m->info.len;
    char *v = px__malloc(*len ? *len : 1);
    if (!v)
        return NULL;
    memcpy(v, head, (size_t)hl);
    if (m->user.len)
        memcpy(v + hl, m->user.ptr, m->user.len);
    if (m->info.len)
        memcpy(v + hl + m->user.len, m->info.ptr, m->info.len);
    return v;
}

static int parse_member_value(const char *v, size_t n, px__broker_member_t *m)
{
    const char *colon = memchr(v, ':', n);
    uint64_t ul;
    if (!colon || parse_u64(v, (size_t)(colon - v), &ul) || ul > n - (size_t)(colon - v) - 1)
        return -1;
    m->user = (px_str_t){colon + 1, (size_t)ul};
    m->info = (px_str_t){colon + 1 + ul, n - (size_t)(colon - v) - 1 - (size_t)ul};
    return 0;
}

/* Tell the other nodes (their local presence subscribers). */
static void announce(rbroker_t *b, px_str_t ch, int op, const px__broker_member_t *m)
{
    char head[128];
    int hl = snprintf(head, sizeof head, BUS_PRES_MAGIC "%s %c %.*s %zu\n", b->node,
                      op == PX__JOIN ? 'J' : 'L', (int)m->client.len, m->client.ptr, m->user.len);
    size_t n = (size_t)hl + m->user.len + m->info.len;
    char *payload = px__malloc(n);
    if (!payload)
        return;
    memcpy(payload, head, (size_t)hl);
    if (m->user.len)
        memcpy(payload + hl, m->user.ptr, m->user.len);
    if (m->info.len)
        memcpy(payload + hl + m->user.len, m->info.ptr, m->info.len);
    char rch[128 + PX__CHANNEL_MAX];
    const char *argv[3] = {"PUBLISH", rch, payload};
    size_t argvlen[3] = {7, rname(b, ch, rch), n};
    px__rconn_command(&b->pub, NULL, NULL, 3, argv, argvlen);
    px__free(payload);
}

/* EVAL script 2 hk zk args... */
static int pres_eval(rbroker_t *b, const char *script, px_str_t ch, int nargs, const char **args,
                     const size_t *lens, px__rconn_cb cb, void *ud)
{
    char hk[80 + PX__CHANNEL_MAX], zk[80 + PX__CHANNEL_MAX];
    size_t zl, hl = pres_keys(b, ch, hk, zk, &zl);
    const char **argv = px__calloc((size_t)nargs + 5, sizeof *argv);
    size_t *argvlen = px__calloc((size_t)nargs + 5, sizeof *argvlen);
    if (!argv || !argvlen) {
        px__free(argv);
        px__free(argvlen);
        return -ENOMEM;
    }
    argv[0] = "EVAL", argvlen[0] = 4;
    argv[1] = script, argvlen[1] = strlen(script);
    argv[2] = "2", argvlen[2] = 1;
    argv[3] = hk, argvlen[3] = hl;
    argv[4] = zk, argvlen[4] = zl;
    for (int i = 0; i < nargs; i++)
        argv[5 + i] = args[i], argvlen[5 + i] = lens[i];
    int r = px__rconn_command(&b->pub, cb, ud, nargs + 5, argv, argvlen);
    px__free(argv);
    px__free(argvlen);
    return r;
}

static int rb_presence_refresh(px__broker_t *base, px_str_t ch, const px__broker_member_t *m,
                               size_t n, uint64_t ttl_ms)
{
    rbroker_t *b = RB(base);
    if (!n)
        return 0;
    const char **args = px__calloc(1 + 2 * n, sizeof *args);
    size_t *lens = px__calloc(1 + 2 * n, sizeof *lens);
    char **vals = px__calloc(n, sizeof *vals);
    char ttl[24];
    int r = -ENOMEM;
    if (!args || !lens || !vals)
        goto out;
    args[0] = ttl;
    lens[0] = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms);
    for (size_t i = 0; i < n; i++) {
        vals[i] = member_value(&m[i], &lens[2 + 2 * i]);
        if (!vals[i])
            goto out;
        args[1 + 2 * i] = m[i].client.ptr;
        lens[1 + 2 * i] = m[i].client.len;
        args[2 + 2 * i] = vals[i];
    }
    r = pres_eval(b, pres_add_lua, ch, (int)(1 + 2 * n), args, lens, NULL, NULL);
out:
    if (vals)
        for (size_t i = 0; i < n; i++)
            px__free(vals[i]);
    px__free(vals);
    px__free(args);
    px__free(lens);
    return r;
}

static int rb_presence_add(px__broker_t *base, px_str_t ch, const px__broker_member_t *who,
                           uint64_t ttl_ms)
{
    rbroker_t *b = RB(base);
    int r = rb_presence_refresh(base, ch, who, 1, ttl_ms);
    if (r == 0)
        announce(b, ch, PX__JOIN, who);
    return r;
}

static int rb_presence_remove(px__broker_t *base, px_str_t ch, const px__broker_member_t *who)
{
    rbroker_t *b = RB(base);
    const char *args[1] = {who->client.ptr};
    size_t lens[1] = {who->client.len};
    int r = pres_eval(b, pres_remove_lua, ch, 1, args, lens, NULL, NULL);
    if (r == 0)
        announce(b, ch, PX__LEAVE, who);
    return r;
}

typedef struct plist {
    rbroker_t *b;
    px__broker_members_cb cb;
    void *ud;
    size_t ch_len;
    char ch[];
} plist_t;

static void on_pres_list(px__rconn_t *c, redisReply *r, void *ud)
{
    PX_UNUSED(c);
    plist_t *pl = ud;
    rbroker_t *b = pl->b;
    px_str_t ch = {pl->ch, pl->ch_len};
    int st = 0;
    px__broker_member_t *ms = NULL;
    size_t nm = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 ||
        (size_t)r->element[0]->integer * 2 + 1 > r->elements || (r->elements - 1) % 2 != 0) {
        st = -EIO;
    } else {
        size_t gone = (size_t)r->element[0]->integer;
        /* Members whose node stopped refreshing them: their leave, once (the script
         * removed them atomically, so no other node reports them). */
        for (size_t i = 0; i < gone; i++) {
            const redisReply *cl = r->element[1 + 2 * i], *v = r->element[2 + 2 * i];
            px__broker_member_t m = {{cl->str, cl->len}, {"", 0}, {"", 0}};
            if (cl->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                parse_member_value(v->str, v->len, &m))
                continue;
            announce(b, ch, PX__LEAVE, &m);
            b->sink.presence(b->sink.ud, ch, PX__LEAVE, &m);
        }
        size_t first = 1 + 2 * gone, left = (r->elements - first) / 2;
        ms = left ? px__calloc(left, sizeof *ms) : NULL;
        if (left && !ms)
            st = -ENOMEM;
        for (size_t i = 0; i < left && !st; i++) {
            const redisReply *cl = r->element[first + 2 * i], *v = r->element[first + 2 * i + 1];
            if (cl->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                parse_member_value(v->str, v->len, &ms[nm]))
                continue;
            ms[nm++].client = (px_str_t){cl->str, cl->len};
        }
    }
    if (pl->cb)
        pl->cb(pl->ud, st, ms, nm);
    px__free(ms);
    px__free(pl);
}

static int rb_presence_list(px__broker_t *base, px_str_t ch, px__broker_members_cb cb, void *ud)
{
    rbroker_t *b = RB(base);
    plist_t *pl = px__malloc(sizeof *pl + ch.len);
    if (!pl)
        return -ENOMEM;
    pl->b = b;
    pl->cb = cb;
    pl->ud = ud;
    pl->ch_len = ch.len;
    memcpy(pl->ch, ch.ptr, ch.len);
    int r = pres_eval(b, pres_list_lua, ch, 0, NULL, NULL, on_pres_list, pl);
    if (r)
        px__free(pl);
    return r;
}

const px__broker_ops_t px__broker_redis = {
    .name = "redis",
    .open = rb_open,
    .start = rb_start,
    .close = rb_close,
    .stat = rb_stat,
    .publish = rb_publish,
    .subscribe = rb_subscribe,
    .unsubscribe = rb_unsubscribe,
    .confirms = 1,
    .presence_add = rb_presence_add,
    .presence_remove = rb_presence_remove,
    .presence_refresh = rb_presence_refresh,
    .presence_list = rb_presence_list,
};
