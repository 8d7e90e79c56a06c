/* History in Redis Streams, shared by every node (--store redis://...).
 *
 * Per channel C (keys under the URL's prefix P, default "plexus"):
 *   P:m:C   a hash: e = the channel's epoch, o = its last offset (HINCRBY assigns offsets)
 *   P:s:C   a stream: entry id "<offset>-0", fields d (data) and t (unix ms)
 *   P:instance  a random id made when the Redis data set is new
 * Two Lua scripts do all the work atomically in Redis, one round trip per group commit
 * (append: every message of the batch, whatever its channel) or per read. The epoch of a
 * channel is derived from the instance id and the channel name when its hash is created:
 * the same on every node, and a new one after Redis lost its data (a restart without
 * persistence), so clients asking to recover from the old epoch get recovery-failed rather
 * than other messages under the same offsets. Like Centrifugo's Redis engine.
 *
 * Retention: XADD MAXLEN ~ history_size (reads clamp to exactly history_size); every
 * append sets the stream's TTL to history_ttl (an idle channel's history expires whole,
 * its hash and so its epoch and offsets stay); reads skip and trim (XTRIM MINID) entries
 * older than history_ttl. The hash has no TTL: run Redis with maxmemory-policy noeviction
 * (a hash evicted alone would restart the channel's offsets in the same epoch).
 *
 * Asynchronous only (PX_STORE_ASYNC): the hub thread calls append_async/read_async; the
 * synchronous calls the SQLite store answers return -ENOTSUP here, except open (a blocking
 * check at startup, before the hub thread runs), load_channels (nothing: channels are
 * loaded as nodes need them) and fresh_epoch (computed like the script does). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "core/alloc.h"
#include "core/log.h"
#include "hub/redis_conn.h"
#include "hub/store.h"
#include "util/crypto.h"

static const char append_lua[] =
    "local p = ARGV[1]\n"
    "local maxlen, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local ik = p .. ':instance'\n"
    "local inst = redis.call('get', ik)\n"
    "if not inst then inst = ARGV[4]; redis.call('set', ik, inst) end\n"
    "local out = {inst}\n"
    "local i = 5\n"
    "while i <= #ARGV do\n"
    "  local ch, t, d = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "  i = i + 3\n"
    "  local mk, sk = p .. ':m:' .. ch, p .. ':s:' .. ch\n"
    "  local e = redis.call('hget', mk, 'e')\n"
    "  if not e then\n"
    "    e = string.sub(redis.sha1hex(inst .. ':' .. ch), 1, 16)\n"
    "    redis.call('hset', mk, 'e', e)\n"
    "  end\n"
    "  local o = redis.call('hincrby', mk, 'o', 1)\n"
    "  if maxlen > 0 then\n"
    "    redis.call('xadd', sk, 'MAXLEN', '~', maxlen, o .. '-0', 'd', d, 't', t)\n"
    "  else\n"
    "    redis.call('xadd', sk, o .. '-0', 'd', d, 't', t)\n"
    "  end\n"
    "  if ttl > 0 then redis.call('expire', sk, ttl) end\n"
    "  out[#out + 1] = e\n"
    "  out[#out + 1] = o\n"
    "end\n"
    "return out\n";

static const char read_lua[] =
    "local p, ch = ARGV[1], ARGV[2]\n"
    "local since, limit = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local cutoff, maxlen = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local ik = p .. ':instance'\n"
    "local inst = redis.call('get', ik)\n"
    "if not inst then inst = ARGV[7]; redis.call('set', ik, inst) end\n"
    "local mk, sk = p .. ':m:' .. ch, p .. ':s:' .. ch\n"
    "local e = redis.call('hget', mk, 'e')\n"
    "if not e then return {inst, string.sub(redis.sha1hex(inst .. ':' .. ch), 1, 16), 0, 1} end\n"
    "local top = tonumber(redis.call('hget', mk, 'o') or '0')\n"
    "local lo = 1\n"
    "if maxlen > 0 and top > maxlen then lo = top - maxlen + 1 end\n"
    "local first = top + 1\n"
    "local done = false\n"
    "while not done do\n"
    "  local r = redis.call('xrange', sk, lo .. '-0', '+', 'COUNT', 64)\n"
    "  if #r == 0 then break end\n"
    "  for i = 1, #r do\n"
    "    local o = tonumber(string.match(r[i][1], '^(%d+)'))\n"
    "    if cutoff == 0 or tonumber(r[i][2][4]) >= cutoff then first = o; done = true; break end\n"
    "    lo = o + 1\n"
    "  end\n"
    "end\n"
    "if cutoff > 0 and first > 1 then redis.call('xtrim', sk, 'MINID', first .. '-0') end\n"
    "local out = {inst, e, top, first}\n"
    "if limit > 0 then\n"
    "  local start = since + 1\n"
    "  if start < first then start = first end\n"
    "  if start <= top then\n"
    "    local r = redis.call('xrange', sk, start .. '-0', '+', 'COUNT', limit)\n"
    "    for i = 1, #r do\n"
    "      out[#out + 1] = tonumber(string.match(r[i][1], '^(%d+)'))\n"
    "      out[#out + 1] = r[i][2][4]\n"
    "      out[#out + 1] = r[i][2][2]\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

typedef struct rstore {
    px__store_t base;
    px__rurl_t url;
    uint64_t history_size, history_ttl_ms;
    px__rconn_t conn;
    int attached;
    char inst[64]; /* the data set's instance id as last seen ("" = unknown yet) */
    char cand[17]; /* our candidate instance id if the data set has none */
    char sha_append[41], sha_read[41];
    char err[256];
} rstore_t;

static rstore_t *RS(px__store_t *s)
{
    return PX_CONTAINER_OF(s, rstore_t, base);
}

static void sha_hex(const char *text, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t md[20];
    px__sha1(text, strlen(text), md);
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

/* What the scripts compute: the first 16 hex chars of sha1(instance ":" channel). */
static void derive_epoch(const char *inst, px_str_t ch, char out[PX__EPOCH_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t il = strlen(inst);
    char *buf = px__xmalloc(il + 1 + ch.len);
    memcpy(buf, inst, il);
    buf[il] = ':';
    memcpy(buf + il + 1, ch.ptr, ch.len);
    uint8_t md[20];
    px__sha1(buf, il + 1 + ch.len, md);
    px__free(buf);
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[16] = '\0';
}

static void set_inst(rstore_t *s, const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_STRING && r->len < sizeof s->inst &&
        (r->len != strlen(s->inst) || memcmp(r->str, s->inst, r->len) != 0)) {
        if (s->inst[0])
            px_log(PX_LOG_WARN,
                   "redis store: the data set is new (instance %.*s, was %s): channels get new "
                   "epochs, clients recovering from before get recovery-failed",
                   (int)r->len, r->str, s->inst);
        memcpy(s->inst, r->str, r->len);
        s->inst[r->len] = '\0';
    }
}

/* ---- open (blocking, at startup) --------------------------------------------------------------
 */

static int reply_err(const redisReply *r, char *buf, size_t len)
{
    if (!r)
        return -EIO;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(buf, len, "%.*s", (int)r->len, r->str);
        return -EIO;
    }
    return 0;
}

static int startup_check(rstore_t *s, char *err, size_t errlen)
{
    struct timeval tv = {(time_t)(s->url.timeout_ms / 1000),
                         (suseconds_t)(s->url.timeout_ms % 1000) * 1000};
    redisContext *c = s->url.path[0] ? redisConnectUnixWithTimeout(s->url.path, tv)
                                     : redisConnectWithTimeout(s->url.host, s->url.port, tv);
    if (!c || c->err) {
        /* Not fatal: the hub starts, publishes fail fast until Redis is reachable. */
        px_log(PX_LOG_WARN, "redis store: %s:%d%s: %s (starting anyway; retrying)",
               s->url.path[0] ? s->url.path : s->url.host, s->url.port, "",
               c ? c->errstr : "out of memory");
        redisFree(c);
        return 0;
    }
    redisSetTimeout(c, tv);
    char msg[200] = "";
    int rc = 0;
    redisReply *r = NULL;
    if (s->url.password[0]) {
        r = s->url.user[0] ? redisCommand(c, "AUTH %s %s", s->url.user, s->url.password)
                           : redisCommand(c, "AUTH %s", s->url.password);
        rc = reply_err(r, msg, sizeof msg);
        freeReplyObject(r);
    }
    if (!rc && s->url.db) {
        r = redisCommand(c, "SELECT %d", s->url.db);
        rc = reply_err(r, msg, sizeof msg);
        freeReplyObject(r);
    }
    if (!rc) {
        r = redisCommand(c, "SCRIPT LOAD %s", append_lua);
        rc = reply_err(r, msg, sizeof msg);
        freeReplyObject(r);
    }
    if (!rc) {
        r = redisCommand(c, "SCRIPT LOAD %s", read_lua);
        rc = reply_err(r, msg, sizeof msg);
        freeReplyObject(r);
    }
    if (!rc) {
        char key[80];
        snprintf(key, sizeof key, "%s:instance", s->url.prefix);
        r = redisCommand(c, "SET %s %s NX", key, s->cand);
        rc = reply_err(r, msg, sizeof msg);
        freeReplyObject(r);
        if (!rc) {
            r = redisCommand(c, "GET %s", key);
            rc = reply_err(r, msg, sizeof msg);
            set_inst(s, r);
            freeReplyObject(r);
        }
    }
    if (rc && !msg[0])
        snprintf(msg, sizeof msg, "%s", c->errstr[0] ? c->errstr : "no reply");
    redisFree(c);
    if (rc) {
        snprintf(err, errlen, "redis store: %s", msg);
        return -EIO;
    }
    return 0;
}

static int r_open(const px__store_opts_t *o, px__store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    rstore_t *s = px__xcalloc(1, sizeof *s);
    s->base.ops = &px__store_redis;
    if (px__rurl_parse(o->conninfo, &s->url, err, errlen) != 0) {
        px__free(s);
        return -EINVAL;
    }
    s->history_size = o->history_size;
    s->history_ttl_ms = o->history_ttl_ms;
    char e[PX__EPOCH_MAX + 1];
    px__store_epoch_new(e);
    memcpy(s->cand, e, 16);
    s->cand[16] = '\0';
    sha_hex(append_lua, s->sha_append);
    sha_hex(read_lua, s->sha_read);
    int r = startup_check(s, err, errlen);
    if (r) {
        px__free(s);
        return r;
    }
    *out = &s->base;
    return 0;
}

static void r_close(px__store_t *b)
{
    if (!b)
        return;
    rstore_t *s = RS(b);
    if (s->attached)
        px__rconn_stop(&s->conn);
    px__free(s);
}

static const char *r_errmsg(px__store_t *b)
{
    rstore_t *s = RS(b);
    if (!s->err[0] && s->conn.last_error[0])
        return s->conn.last_error;
    return s->err;
}

static int r_load_channels(px__store_t *b, px__store_channel_cb cb, void *ud)
{
    PX_UNUSED(b);
    PX_UNUSED(cb);
    PX_UNUSED(ud);
    return 0;
}

static int r_create_channel(px__store_t *b, px_str_t channel, px_str_t epoch)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(epoch);
    return -ENOTSUP;
}

static int r_append(px__store_t *b, const px__store_msg_t *msgs, size_t n,
                    px__store_assigned_t *out)
{
    PX_UNUSED(msgs);
    PX_UNUSED(out);
    snprintf(RS(b)->err, sizeof RS(b)->err, "the redis store is asynchronous only");
    return n ? -ENOTSUP : 0;
}

static int r_read(px__store_t *b, px_str_t channel, uint64_t since, size_t limit,
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

static int r_trim(px__store_t *b, int64_t now_ms)
{
    PX_UNUSED(b);
    PX_UNUSED(now_ms);
    return 0; /* MAXLEN, EXPIRE and reads do it */
}

static int r_earliest(px__store_t *b, px_str_t channel, uint64_t *first)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    PX_UNUSED(first);
    return -ENOTSUP;
}

static int r_fresh_epoch(px__store_t *b, px_str_t channel, char out[PX__EPOCH_MAX + 1])
{
    rstore_t *s = RS(b);
    if (!s->inst[0])
        return -EAGAIN;
    derive_epoch(s->inst, channel, out);
    return 0;
}

/* ---- asynchronous calls -----------------------------------------------------------------------
 */

typedef struct rop {
    rstore_t *s;
    px__store_append_cb acb;
    px__store_read_cb rcb;
    void *ud;
    size_t n; /* append: messages */
    int argc;
    const char **argv;
    size_t *argvlen;
    char *nums; /* number strings the argv points into */
    int retried;
} rop_t;

static void rop_free(rop_t *op)
{
    px__free(op->argv);
    px__free(op->argvlen);
    px__free(op->nums);
    px__free(op);
}

static int rop_send(rop_t *op);

/* A script error that is not ours to fix: Redis restarted and forgot the script. */
static int noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

static int retry_with_eval(rop_t *op, const redisReply *r)
{
    if (!noscript(r) || op->retried)
        return 0;
    op->retried = 1;
    op->argv[0] = "EVAL";
    op->argv[1] = op->acb ? append_lua : read_lua;
    op->argvlen[0] = 4;
    op->argvlen[1] = strlen(op->argv[1]);
    return rop_send(op) == 0;
}

static int reply_status(rstore_t *s, const redisReply *r, size_t min_elems)
{
    if (!r) {
        snprintf(s->err, sizeof s->err, "redis: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "connection lost");
        return -EIO;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(s->err, sizeof s->err, "redis: %.*s", (int)r->len, r->str);
        return -EIO;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < min_elems) {
        snprintf(s->err, sizeof s->err, "redis: unexpected reply to a script");
        return -EPROTO;
    }
    return 0;
}

static int elem_u64(const redisReply *e, uint64_t *out)
{
    if (e->type == REDIS_REPLY_INTEGER && e->integer >= 0) {
        *out = (uint64_t)e->integer;
        return 0;
    }
    if (e->type == REDIS_REPLY_STRING) {
        char *end;
        char tmp[32];
        if (e->len == 0 || e->len >= sizeof tmp)
            return -1;
        memcpy(tmp, e->str, e->len);
        tmp[e->len] = '\0';
        unsigned long long v = strtoull(tmp, &end, 10);
        if (*end)
            return -1;
        *out = v;
        return 0;
    }
    return -1;
}

static void on_append(px__rconn_t *c, redisReply *r, void *ud)
{
    PX_UNUSED(c);
    rop_t *op = ud;
    rstore_t *s = op->s;
    if (retry_with_eval(op, r))
        return;
    int st = reply_status(s, r, 1 + 2 * op->n);
    px__store_assigned_t *out = NULL;
    if (!st) {
        set_inst(s, r->element[0]);
        out = px__xcalloc(op->n ? op->n : 1, sizeof *out);
        for (size_t i = 0; i < op->n && !st; i++) {
            const redisReply *e = r->element[1 + 2 * i], *o = r->element[2 + 2 * i];
            if (e->type != REDIS_REPLY_STRING || e->len < 1 || e->len > PX__EPOCH_MAX ||
                elem_u64(o, &out[i].offset) || out[i].offset == 0)
                st = -EPROTO;
            out[i].epoch = (px_str_t){e->str, e->len};
        }
        if (st)
            snprintf(s->err, sizeof s->err, "redis: bad reply to the append script");
    }
    op->acb(op->ud, st, st ? NULL : out);
    px__free(out);
    rop_free(op);
}

static void on_read(px__rconn_t *c, redisReply *r, void *ud)
{
    PX_UNUSED(c);
    rop_t *op = ud;
    rstore_t *s = op->s;
    if (retry_with_eval(op, r))
        return;
    px__store_view_t v = {0};
    v.status = reply_status(s, r, 4);
    px__store_msg_t *msgs = NULL;
    if (!v.status) {
        set_inst(s, r->element[0]);
        const redisReply *e = r->element[1];
        if (e->type != REDIS_REPLY_STRING || e->len < 1 || e->len > PX__EPOCH_MAX ||
            elem_u64(r->element[2], &v.last_offset) || elem_u64(r->element[3], &v.first_offset) ||
            (r->elements - 4) % 3 != 0)
            v.status = -EPROTO;
        v.epoch = e->type == REDIS_REPLY_STRING ? (px_str_t){e->str, e->len} : (px_str_t){"", 0};
        v.n = (r->elements - 4) / 3;
        msgs = v.n ? px__calloc(v.n, sizeof *msgs) : NULL;
        if (v.n && !msgs)
            v.status = -ENOMEM;
        for (size_t i = 0; i < v.n && !v.status; i++) {
            const redisReply *o = r->element[4 + 3 * i], *t = r->element[5 + 3 * i],
                             *d = r->element[6 + 3 * i];
            uint64_t off = 0, tm = 0;
            if (elem_u64(o, &off) || elem_u64(t, &tm) || d->type != REDIS_REPLY_STRING) {
                v.status = -EPROTO;
                break;
            }
            msgs[i] = (px__store_msg_t){.channel = {"", 0},
                                        .epoch = v.epoch,
                                        .offset = off,
                                        .time_ms = (int64_t)tm,
                                        .data = {d->str, d->len}};
        }
        if (v.status == -EPROTO)
            snprintf(s->err, sizeof s->err, "redis: bad reply to the read script");
        v.msgs = msgs;
        if (v.status)
            v.n = 0;
    }
    op->rcb(op->ud, &v);
    px__free(msgs);
    rop_free(op);
}

static int rop_send(rop_t *op)
{
    return px__rconn_command(&op->s->conn, op->acb ? on_append : on_read, op, op->argc, op->argv,
                             op->argvlen);
}

static uint64_t ttl_seconds(const rstore_t *s)
{
    return s->history_ttl_ms ? (s->history_ttl_ms + 999) / 1000 : 0;
}

static int64_t wall_ms_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int r_append_async(px__store_t *b, const px__store_msg_t *msgs, size_t n,
                          px__store_append_cb cb, void *ud)
{
    rstore_t *s = RS(b);
    if (!px__rconn_ready(&s->conn)) {
        snprintf(s->err, sizeof s->err, "redis: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "not connected");
        return -ENOTCONN;
    }
    for (size_t i = 0; i < n; i++)
        if (!px__store_channel_ok(msgs[i].channel))
            return -EINVAL;
    rop_t *op = px__calloc(1, sizeof *op);
    size_t argc = 7 + 3 * n;
    if (!op)
        return -ENOMEM;
    op->s = s;
    op->acb = cb;
    op->ud = ud;
    op->n = n;
    op->argc = (int)argc;
    op->argv = px__calloc(argc, sizeof *op->argv);
    op->argvlen = px__calloc(argc, sizeof *op->argvlen);
    op->nums = px__malloc(24 * (n + 3));
    if (!op->argv || !op->argvlen || !op->nums) {
        rop_free(op);
        return -ENOMEM;
    }
    char *num = op->nums;
#define ARG(i, p, l) (op->argv[i] = (p), op->argvlen[i] = (l))
/* A fresh candidate instance id per call: if Redis lost its data set, the next script makes
 * a new one (and so new epochs), whichever node gets there first. */
#define CAND(i)                                                                                    \
    do {                                                                                           \
        px__store_epoch_new(num);                                                                  \
        ARG(i, num, 16);                                                                           \
        num += 24;                                                                                 \
    } while (0)
#define NUM(i, v)                                                                                  \
    do {                                                                                           \
        int w_ = snprintf(num, 24, "%llu", (unsigned long long)(v));                               \
        ARG(i, num, (size_t)w_);                                                                   \
        num += 24;                                                                                 \
    } while (0)
    ARG(0, "EVALSHA", 7);
    ARG(1, s->sha_append, 40);
    ARG(2, "0", 1);
    ARG(3, s->url.prefix, strlen(s->url.prefix));
    NUM(4, s->history_size);
    NUM(5, ttl_seconds(s));
    CAND(6);
    for (size_t i = 0; i < n; i++) {
        size_t k = 7 + 3 * i;
        ARG(k, msgs[i].channel.ptr, msgs[i].channel.len);
        int w = snprintf(num, 24, "%lld", (long long)msgs[i].time_ms);
        ARG(k + 1, num, (size_t)w);
        num += 24;
        ARG(k + 2, msgs[i].data.len ? msgs[i].data.ptr : "", msgs[i].data.len);
    }
    int r = rop_send(op);
    if (r) {
        rop_free(op);
        return r;
    }
    return 0;
}

static int r_read_async(px__store_t *b, px_str_t channel, uint64_t since, size_t limit,
                        px__store_read_cb cb, void *ud)
{
    rstore_t *s = RS(b);
    if (!px__rconn_ready(&s->conn)) {
        snprintf(s->err, sizeof s->err, "redis: %s",
                 s->conn.last_error[0] ? s->conn.last_error : "not connected");
        return -ENOTCONN;
    }
    if (!px__store_channel_ok(channel))
        return -EINVAL;
    rop_t *op = px__calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    op->s = s;
    op->rcb = cb;
    op->ud = ud;
    op->argc = 10;
    op->argv = px__calloc(10, sizeof *op->argv);
    op->argvlen = px__calloc(10, sizeof *op->argvlen);
    op->nums = px__malloc(24 * 5);
    if (!op->argv || !op->argvlen || !op->nums) {
        rop_free(op);
        return -ENOMEM;
    }
    char *num = op->nums;
    int64_t cutoff = 0;
    if (s->history_ttl_ms && s->history_ttl_ms < (uint64_t)INT64_MAX)
        cutoff = wall_ms_now() - (int64_t)s->history_ttl_ms;
    if (cutoff < 0)
        cutoff = 0;
    ARG(0, "EVALSHA", 7);
    ARG(1, s->sha_read, 40);
    ARG(2, "0", 1);
    ARG(3, s->url.prefix, strlen(s->url.prefix));
    ARG(4, channel.ptr, channel.len);
    NUM(5, since);
    NUM(6, limit);
    NUM(7, (uint64_t)cutoff);
    NUM(8, s->history_size);
    CAND(9);
#undef ARG
#undef NUM
#undef CAND
    int r = rop_send(op);
    if (r) {
        rop_free(op);
        return r;
    }
    return 0;
}

static int r_attach(px__store_t *b, px_loop_t *loop)
{
    rstore_t *s = RS(b);
    px__rconn_start(&s->conn, loop, &s->url, "store");
    s->attached = 1;
    return 0;
}

static void r_stat(px__store_t *b, px__backend_stat_t *st)
{
    rstore_t *s = RS(b);
    st->up = px__rconn_ready(&s->conn);
    st->queue = s->conn.pending;
    st->reconnects = s->conn.reconnects ? s->conn.reconnects - 1 : 0;
    st->error = st->up ? "" : s->conn.last_error[0] ? s->conn.last_error : "not connected";
}

const px__store_ops_t px__store_redis = {
    .name = "redis",
    .open = r_open,
    .close = r_close,
    .errmsg = r_errmsg,
    .load_channels = r_load_channels,
    .create_channel = r_create_channel,
    .append = r_append,
    .read = r_read,
    .trim = r_trim,
    .earliest = r_earliest,
    .fresh_epoch = r_fresh_epoch,
    .flags = PX_STORE_ASYNC | PX_STORE_SHARED,
    .attach = r_attach,
    .append_async = r_append_async,
    .read_async = r_read_async,
    .stat = r_stat,
};
