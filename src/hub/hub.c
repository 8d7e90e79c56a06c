/* The hub thread: the single ordering point of every channel.
 *
 * Publishes that reach its mailbox in one wake-up are committed to the store in
 * one transaction (group commit: while a commit runs, the next batch gathers),
 * then each message is encoded once per wire format into shared slices, kept
 * in the channel's recent-history ring, posted to every worker that has
 * subscribers, and acknowledged. Subscriptions pass through here too, which is
 * what makes recovery exact: the reply to a subscribe and the catch-up
 * messages are posted to the worker before any later delivery, and the
 * worker's mailbox is FIFO, so nothing is missed or duplicated. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "hub/hub_int.h"
#include "hub/json.h"

int px__m_publishes = -1, px__m_deliveries = -1, px__m_commit_us = -1, px__m_commits = -1,
    px__m_channels = -1;

typedef struct ring_ent {
    uint64_t offset;
    int64_t time_ms;
    px_slice_t *frame; /* the WebSocket frame; data is frame->data[data_off..+data_len) */
    uint32_t data_off, data_len;
} ring_ent_t;

typedef struct presence_ent {
    struct presence_ent *next;
    char client[PX__CLIENT_ID_LEN + 1];
    char *user, *info;
    size_t user_len, info_len;
    unsigned worker;
} presence_ent_t;

typedef struct hchan {
    px__centry_t e;
    char name[PX__CHANNEL_MAX + 1];
    size_t name_len;
    char epoch[PX_STORE_EPOCH_MAX + 1];
    /* last_offset: the latest committed offset, the one clients see. next_offset: the
     * next one to give out, > last_offset. A failed commit leaves last_offset alone and
     * its offsets burned (never given out again by this process: after a failed fsync
     * the batch may still surface after a crash). After a restart the store's last
     * offset is the truth, and nobody has seen an offset above it. */
    uint64_t last_offset, next_offset;
    unsigned total_subs, sse_subs;
    unsigned *worker_subs; /* subscriptions per worker: deliveries go where > 0 */
    ring_ent_t *ring;      /* recent messages, ring_cap entries (a power of two), grown on demand */
    uint32_t ring_start, ring_count, ring_cap;
    presence_ent_t *presence;
    unsigned presence_count;
    unsigned mark : 1; /* scratch flag for a pass over a batch */
} hchan_t;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void px_hub_opts_init(px_hub_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = "./var";
    o->durability = PX_HUB_DURABILITY_NORMAL;
    o->history_size = 1000;
    o->history_ttl_ms = 0;
    o->max_payload = 64 * 1024;
    o->max_channels = 100;
    o->publish_rate = 100;
    o->history_limit_max = 1000;
    o->sse_keepalive_ms = 15000;
    o->subscribe_rate = 100;
    o->max_inflight = 32;
}

int px__channel_name_ok(const char *s, size_t len)
{
    if (len < 1 || len > PX__CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        /* ch != 0: strchr() would find the terminator (a NUL would pass). */
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != 0 && strchr("_-=@,.;:/", ch))))
            return 0;
    }
    return 1;
}

/* ---- channels ------------------------------------------------------------------ */

static hchan_t *chan_find(px_hub_t *h, const char *name, size_t len)
{
    px__centry_t *e = px__chanmap_get(&h->channels, name, len);
    return e ? PX_CONTAINER_OF(e, hchan_t, e) : NULL;
}

static hchan_t *chan_new(px_hub_t *h, const char *name, size_t len, const char *epoch,
                         uint64_t last_offset)
{
    hchan_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->worker_subs = px__calloc(h->nworkers, sizeof *c->worker_subs);
    if (!c->worker_subs) {
        px__free(c);
        return NULL;
    }
    memcpy(c->name, name, len);
    c->name_len = len;
    c->e.key = c->name;
    c->e.key_len = len;
    if (epoch)
        snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
    else if (px__store_fresh_epoch(h->store, (px_str_t){name, len}, c->epoch) != 0)
        px__store_epoch_new(c->epoch);
    c->last_offset = last_offset;
    c->next_offset = last_offset + 1;
    if (px__chanmap_put(&h->channels, &c->e) != 0) {
        px__free(c->worker_subs);
        px__free(c);
        return NULL;
    }
    px_metric_add(px__m_channels, 1);
    return c;
}

static hchan_t *chan_get(px_hub_t *h, const char *name, size_t len)
{
    hchan_t *c = chan_find(h, name, len);
    return c ? c : chan_new(h, name, len, NULL, 0);
}

static ring_ent_t *ring_at(const hchan_t *c, uint32_t i)
{
    return &c->ring[(c->ring_start + i) & (c->ring_cap - 1)];
}

static void ring_pop(hchan_t *c)
{
    px_slice_unref(ring_at(c, 0)->frame);
    c->ring_start = (c->ring_start + 1) & (c->ring_cap - 1);
    c->ring_count--;
}

/* Keep the latest `cap` (<= PX__RING_MAX) messages. The ring grows as messages come,
 * so a channel that gets few holds little. */
static void ring_push(hchan_t *c, uint64_t offset, int64_t time_ms, px_slice_t *frame,
                      uint32_t data_off, uint32_t data_len, size_t cap)
{
    if (cap == 0)
        return;
    if (c->ring_count >= cap)
        ring_pop(c);
    if (c->ring_count == c->ring_cap) {
        uint32_t ncap = c->ring_cap ? c->ring_cap * 2 : 4;
        ring_ent_t *n = px__malloc(ncap * sizeof *n);
        if (!n)
            return; /* history is still in the store; the ring is a cache */
        for (uint32_t i = 0; i < c->ring_count; i++)
            n[i] = *ring_at(c, i);
        px__free(c->ring);
        c->ring = n;
        c->ring_cap = ncap;
        c->ring_start = 0;
    }
    ring_ent_t *e = ring_at(c, c->ring_count);
    e->offset = offset;
    e->time_ms = time_ms;
    e->frame = px_slice_ref(frame);
    e->data_off = data_off;
    e->data_len = data_len;
    c->ring_count++;
}

static void chan_free(hchan_t *c)
{
    while (c->ring_count)
        ring_pop(c);
    px__free(c->ring);
    presence_ent_t *p = c->presence;
    while (p) {
        presence_ent_t *next = p->next;
        px__free(p->user);
        px__free(p->info);
        px__free(p);
        p = next;
    }
    px__free(c->worker_subs);
    px__free(c);
}

/* A channel nobody uses and that has nothing stored leaves memory: otherwise every name
 * ever subscribed to would stay forever. (It comes back with a new epoch; it had no
 * message, so a client resuming it loses nothing but gets recovered:false.) */
static void chan_maybe_free(px_hub_t *h, hchan_t *c)
{
    if (c->total_subs || c->presence || c->last_offset || c->ring_count)
        return;
    px__chanmap_del(&h->channels, &c->e);
    px_metric_add(px__m_channels, -1);
    chan_free(c);
}

/* ---- encoding --------------------------------------------------------------------- */

/* {"op":"message","channel":"<name>","offset":N,"data":<raw>} as a WebSocket frame.
 * Channel names need no JSON escaping (their alphabet has no quote, backslash or
 * control character). */
static px_slice_t *encode_ws(const hchan_t *c, uint64_t offset, const char *data, size_t len,
                             uint32_t *data_off)
{
    char head[PX__CHANNEL_MAX + 96];
    int hn = snprintf(head, sizeof head,
                      "{\"op\":\"message\",\"channel\":\"%.*s\",\"offset\":%llu,\"data\":",
                      (int)c->name_len, c->name, (unsigned long long)offset);
    size_t plen = (size_t)hn + len + 1;
    uint8_t fh[14];
    size_t fhl = plen < 126 ? 2 : plen <= 0xffff ? 4 : 10;
    px_slice_t *s = px_slice_new(fhl + plen);
    if (!s)
        return NULL;
    uint8_t *p = (uint8_t *)s->data;
    fh[0] = 0x81; /* FIN + text */
    if (fhl == 2) {
        fh[1] = (uint8_t)plen;
    } else if (fhl == 4) {
        fh[1] = 126;
        fh[2] = (uint8_t)(plen >> 8);
        fh[3] = (uint8_t)plen;
    } else {
        fh[1] = 127;
        for (int i = 0; i < 8; i++)
            fh[2 + i] = (uint8_t)((uint64_t)plen >> (56 - 8 * i));
    }
    memcpy(p, fh, fhl);
    memcpy(p + fhl, head, (size_t)hn);
    memcpy(p + fhl + (size_t)hn, data, len);
    p[fhl + (size_t)hn + len] = '}';
    *data_off = (uint32_t)(fhl + (size_t)hn);
    return s;
}

/* An SSE event: "id: N\ndata: <line>\n...\n\n". Data lines are split at line
 * breaks so multi-line JSON stays one event. */
static px_slice_t *encode_sse(uint64_t offset, const char *data, size_t len)
{
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    px_slice_t *s = px_slice_new(32 + len + lines * 6 + 2);
    if (!s)
        return NULL;
    char *p = s->data;
    size_t n = (size_t)snprintf(p, 32, "id: %llu\ndata: ", (unsigned long long)offset);
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];
        if (ch == '\r')
            continue;
        if (ch == '\n') {
            memcpy(p + n, "\ndata: ", 7);
            n += 7;
            continue;
        }
        p[n++] = ch;
    }
    p[n++] = '\n';
    p[n++] = '\n';
    s->len = (uint32_t)n;
    return s;
}

/* ---- replies ------------------------------------------------------------------------ */

static hub_rep_t *rep_new(const hub_req_t *r)
{
    hub_rep_t *rep = px__xcalloc(1, sizeof *rep);
    rep->msg.cb = px__hub_on_reply;
    rep->type = r->type;
    rep->origin_kind = r->origin_kind;
    rep->origin = r->origin;
    rep->tag = r->tag;
    rep->has_id = r->has_id;
    rep->id = r->id;
    rep->paced = r->paced;
    rep->channel_len = r->channel_len;
    memcpy(rep->channel, r->channel, r->channel_len);
    return rep;
}

static void rep_error(hub_rep_t *rep, int status, const char *code, const char *msg)
{
    rep->status = status;
    rep->err_code = code;
    snprintf(rep->err_msg, sizeof rep->err_msg, "%s", msg);
}

static void rep_body(hub_rep_t *rep, px_json_writer_t *w)
{
    if (w->err) {
        rep_error(rep, 500, "internal_error", "reply too large");
        px_json_writer_dispose(w);
        return;
    }
    rep->body = w->buf;
    rep->body_len = w->len;
    w->buf = NULL; /* ownership moves to the reply */
}

static void put_id(px_json_writer_t *w, const hub_req_t *r)
{
    if (r->has_id) {
        PX_JSON_PUT_LIT(w, ",\"id\":");
        px_json_put_i64(w, r->id);
    }
}

static void send_rep(px_hub_t *h, const hub_req_t *r, hub_rep_t *rep)
{
    px_worker_post(px_workers_get(px_server_workers(h->server), r->worker), &rep->msg);
}

static void req_free(hub_req_t *r)
{
    px__free(r->claims);
    px__free(r->data);
    px__free(r->user);
    px__free(r->info);
    px__free(r);
}

/* ---- fan-out ------------------------------------------------------------------------- */

static void fan_out(px_hub_t *h, hchan_t *c, int kind, px_slice_t *ws_frame, px_slice_t *sse_frame)
{
    px_workers_t *ws = px_server_workers(h->server);
    for (unsigned i = 0; i < h->nworkers; i++) {
        if (!c->worker_subs[i])
            continue;
        hub_delivery_t *d = px__malloc(sizeof *d + c->name_len);
        if (!d) {
            px_log(PX_LOG_ERROR, "out of memory delivering to worker %u", i);
            continue;
        }
        d->msg.cb = px__hub_on_delivery;
        d->hub = h;
        d->kind = kind;
        d->ws_frame = px_slice_ref(ws_frame);
        d->sse_frame = sse_frame ? px_slice_ref(sse_frame) : NULL;
        d->channel_len = c->name_len;
        memcpy(d->channel, c->name, c->name_len);
        px_worker_post(px_workers_get(ws, i), &d->msg);
    }
}

static void presence_event(px_hub_t *h, hchan_t *c, const char *op, const presence_ent_t *p)
{
    if (!c->total_subs)
        return;
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 8192);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"");
    px_json_put_raw(&w, op, strlen(op));
    PX_JSON_PUT_LIT(&w, "\",\"channel\":");
    px_json_put_str(&w, c->name, c->name_len);
    PX_JSON_PUT_LIT(&w, ",\"client\":");
    px_json_put_str(&w, p->client, strlen(p->client));
    if (p->user) {
        PX_JSON_PUT_LIT(&w, ",\"user\":");
        px_json_put_str(&w, p->user, p->user_len);
    }
    if (p->info) {
        PX_JSON_PUT_LIT(&w, ",\"info\":");
        px_json_put_raw(&w, p->info, p->info_len);
    }
    PX_JSON_PUT_LIT(&w, "}");
    if (!w.err) {
        px_slice_t *frame = px_ws_frame_new(PX_WS_TEXT, w.buf, w.len);
        if (frame) {
            fan_out(h, c, DELIVER_PRESENCE, frame, NULL);
            px_slice_unref(frame);
        }
    }
    px_json_writer_dispose(&w);
}

/* ---- publish: group commit ------------------------------------------------------------ */

static void commit_batch(px_defer_t *d)
{
    px_hub_t *h = d->data;
    hub_req_t *batch = h->batch_head;
    size_t n = h->batch_len;
    h->batch_head = h->batch_tail = NULL;
    h->batch_len = 0;
    if (!batch)
        return;

    px_store_msg_t *msgs = px__xcalloc(n, sizeof *msgs);
    hchan_t **chans = px__xcalloc(n, sizeof *chans);
    int64_t now = wall_ms();
    size_t i = 0;
    for (hub_req_t *r = batch; r; r = r->next, i++) {
        hchan_t *c = chan_get(h, r->channel, r->channel_len);
        chans[i] = c;
        if (!c)
            continue;
        r->offset = c->next_offset++;
        r->time_ms = now;
        msgs[i] = (px_store_msg_t){.channel = {c->name, c->name_len},
                                   .epoch = {c->epoch, strlen(c->epoch)},
                                   .offset = r->offset,
                                   .time_ms = now,
                                   .data = {r->data, r->data_len}};
    }
    /* Channels that could not be created (out of memory) are left out. */
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (chans[j])
            msgs[k++] = msgs[j];
    uint64_t t0 = px_now_ns();
    int rc = px__store_append(h->store, msgs, k);
    px_metric_add(px__m_commit_us, (int64_t)((px_now_ns() - t0) / 1000));
    px_metric_add(px__m_commits, 1);
    if (rc != 0)
        px_log(PX_LOG_ERROR, "store: commit of %zu message(s) failed: %s", k,
               px__store_errmsg(h->store));

    i = 0;
    for (hub_req_t *r = batch, *next; r; r = next, i++) {
        next = r->next;
        hchan_t *c = chans[i];
        hub_rep_t *rep = rep_new(r);
        if (!c || rc != 0) {
            /* Nothing of the batch is visible: last_offset stays where it was, so no
             * client ever sees these offsets, and next_offset never gives them out
             * again (gaps are allowed). */
            rep_error(rep, 503, "storage_error", "the message could not be stored");
            send_rep(h, r, rep);
            req_free(r);
            continue;
        }
        c->last_offset = r->offset; /* offsets rise within a batch */
        px_metric_add(px__m_publishes, 1);
        uint32_t data_off;
        px_slice_t *frame = encode_ws(c, r->offset, r->data, r->data_len, &data_off);
        px_slice_t *sse = c->sse_subs ? encode_sse(r->offset, r->data, r->data_len) : NULL;
        if (frame) {
            size_t cap = h->opts.history_size && h->opts.history_size < PX__RING_MAX
                             ? (size_t)h->opts.history_size
                             : PX__RING_MAX;
            ring_push(c, r->offset, r->time_ms, frame, data_off, (uint32_t)r->data_len, cap);
            fan_out(h, c, DELIVER_MESSAGE, frame, sse);
        }
        px_slice_unref(frame);
        px_slice_unref(sse);

        px_json_writer_t w;
        px_json_writer_init_growable(&w, 1024);
        if (r->origin_kind == ORIGIN_HTTP) {
            PX_JSON_PUT_LIT(&w, "{\"channel\":");
            px_json_put_str(&w, c->name, c->name_len);
            PX_JSON_PUT_LIT(&w, ",\"epoch\":");
            px_json_put_str(&w, c->epoch, strlen(c->epoch));
            PX_JSON_PUT_LIT(&w, ",\"offset\":");
            px_json_put_u64(&w, r->offset);
            PX_JSON_PUT_LIT(&w, "}");
            rep->status = 201;
        } else {
            PX_JSON_PUT_LIT(&w, "{\"op\":\"reply\"");
            put_id(&w, r);
            PX_JSON_PUT_LIT(&w, ",\"offset\":");
            px_json_put_u64(&w, r->offset);
            PX_JSON_PUT_LIT(&w, "}");
        }
        rep_body(rep, &w);
        send_rep(h, r, rep);
        req_free(r);
    }
    if (rc != 0) {
        /* Channels this failed batch created hold nothing: let them go. */
        for (size_t j = 0; j < n; j++) { /* each channel once */
            if (chans[j] && chans[j]->mark)
                chans[j] = NULL;
            else if (chans[j])
                chans[j]->mark = 1;
        }
        for (size_t j = 0; j < n; j++)
            if (chans[j]) {
                chans[j]->mark = 0;
                chan_maybe_free(h, chans[j]);
            }
    }
    px__free(msgs);
    px__free(chans);
}

/* ---- history --------------------------------------------------------------------------- */

/* Where read messages go: a JSON writer (history answers) or encoded frames (subscribe
 * catch-up). Bounded by `limit` messages and `max_bytes` of output; the first message
 * always fits, so an answer makes progress whatever the bound. */
typedef struct collect {
    px_json_writer_t *w; /* history JSON, or NULL */
    int sse;             /* frames as SSE events instead of WebSocket frames */
    int comma_first;     /* JSON: a "," before the first message too (a continuation page) */
    const hchan_t *c;
    px_slice_t **frames;
    size_t nframes, cap;
    size_t count, limit; /* limit 0 = no limit */
    size_t bytes, max_bytes;
    int cut;       /* stopped at max_bytes */
    uint64_t last; /* offset of the last message collected */
} collect_t;

static int collect_room(collect_t *col)
{
    if (col->nframes == col->cap) {
        size_t cap = col->cap ? col->cap * 2 : 16;
        px_slice_t **f = px__realloc(col->frames, cap * sizeof *f);
        if (!f)
            return -ENOMEM;
        col->frames = f;
        col->cap = cap;
    }
    return 0;
}

static void collect_dispose(collect_t *col)
{
    for (size_t i = 0; i < col->nframes; i++)
        px_slice_unref(col->frames[i]);
    px__free(col->frames);
    col->frames = NULL;
    col->nframes = col->cap = 0;
    col->count = 0;
}

/* The event that tells a resuming client that history no longer reaches back to what it
 * has: from here on it gets live messages after the channel's offset. SSE: "event:
 * recovery-failed" with the offset as id (the next reconnect resumes from there);
 * WebSocket: {"op":"recovery-failed",...}. */
static px_slice_t *encode_recovery_failed(const hchan_t *c, int sse)
{
    char buf[PX__CHANNEL_MAX + PX_STORE_EPOCH_MAX + 128];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    if (sse)
        PX_JSON_PUT_LIT(&w, "{\"channel\":");
    else
        PX_JSON_PUT_LIT(&w, "{\"op\":\"recovery-failed\",\"channel\":");
    px_json_put_str(&w, c->name, c->name_len);
    PX_JSON_PUT_LIT(&w, ",\"epoch\":");
    px_json_put_str(&w, c->epoch, strlen(c->epoch));
    PX_JSON_PUT_LIT(&w, ",\"offset\":");
    px_json_put_u64(&w, c->last_offset);
    PX_JSON_PUT_LIT(&w, "}");
    if (w.err)
        return NULL;
    if (!sse)
        return px_ws_frame_new(PX_WS_TEXT, w.buf, w.len);
    px_slice_t *s = px_slice_new(w.len + 64);
    if (!s)
        return NULL;
    int n = snprintf(s->data, w.len + 64, "event: recovery-failed\nid: %llu\ndata: %.*s\n\n",
                     (unsigned long long)c->last_offset, (int)w.len, w.buf);
    s->len = (uint32_t)n;
    return s;
}

/* Collect one message. Returns 0 to go on, 1 when the bounds are reached (this message
 * not taken), or a negative errno. */
static int collect_one(collect_t *col, uint64_t offset, int64_t time_ms, const char *data,
                       size_t len, px_slice_t *ws_frame)
{
    if (col->limit && col->count >= col->limit)
        return 1;
    size_t est = len + 64 + col->c->name_len;
    if (col->count && col->bytes + est > col->max_bytes) {
        col->cut = 1;
        return 1;
    }
    col->bytes += est;
    col->last = offset;
    if (col->w) {
        px_json_writer_t *w = col->w;
        if (col->count || col->comma_first)
            PX_JSON_PUT_LIT(w, ",");
        PX_JSON_PUT_LIT(w, "{\"offset\":");
        px_json_put_u64(w, offset);
        PX_JSON_PUT_LIT(w, ",\"time\":");
        px_json_put_i64(w, time_ms);
        PX_JSON_PUT_LIT(w, ",\"data\":");
        px_json_put_raw(w, data, len);
        PX_JSON_PUT_LIT(w, "}");
        col->count++;
        return w->err;
    }
    if (collect_room(col) != 0)
        return -ENOMEM;
    px_slice_t *s;
    if (col->sse) {
        s = encode_sse(offset, data, len);
    } else if (ws_frame) {
        s = px_slice_ref(ws_frame);
    } else {
        uint32_t off;
        s = encode_ws(col->c, offset, data, len, &off);
    }
    if (!s)
        return -ENOMEM;
    col->frames[col->nframes++] = s;
    col->count++;
    return 0;
}

static int store_row(void *ud, const px_store_msg_t *m)
{
    return collect_one(ud, m->offset, m->time_ms, m->data.ptr, m->data.len, NULL);
}

/* --history-ttl applies to the ring as to the store (store_sqlite.c trim_ttl:
 * time_ms < now - ttl is expired): drop expired entries, oldest first, before
 * the ring answers, or it would serve messages the store no longer has. */
static void ring_expire(px_hub_t *h, hchan_t *c)
{
    uint64_t ttl = h->opts.history_ttl_ms;
    if (!ttl || ttl >= (uint64_t)INT64_MAX)
        return;
    int64_t cutoff = wall_ms() - (int64_t)ttl;
    while (c->ring_count && ring_at(c, 0)->time_ms < cutoff)
        ring_pop(c);
}

/* Messages of `c` with offset > since, within col's bounds. Returns 1 if complete
 * (nothing after `since` is missing from history), 0 if history no longer reaches back
 * that far, < 0 on error. `since` past the channel's offset reads nothing (complete). */
static int read_history(px_hub_t *h, hchan_t *c, uint64_t since, collect_t *col)
{
    ring_expire(h, c);
    if (since >= c->last_offset)
        return 1;
    uint64_t first = c->ring_count ? ring_at(c, 0)->offset : 0;
    if (c->ring_count && first <= since + 1) {
        for (uint32_t i = 0; i < c->ring_count; i++) {
            ring_ent_t *e = ring_at(c, i);
            if (e->offset <= since)
                continue;
            int r = collect_one(col, e->offset, e->time_ms, e->frame->data + e->data_off,
                                e->data_len, e->frame);
            if (r)
                return r < 0 ? r : 1;
        }
        return 1;
    }
    uint64_t earliest = 0;
    int r = px__store_earliest(h->store, (px_str_t){c->name, c->name_len}, &earliest);
    if (r == -ENOENT)
        return 0; /* nothing stored (yet the channel has an offset): lost */
    if (r)
        return r;
    int complete = since + 1 >= earliest;
    r = px__store_read(h->store, (px_str_t){c->name, c->name_len}, since,
                       col->limit ? col->limit - col->count : 0, store_row, col);
    if (r)
        return r;
    return complete;
}

/* ---- requests -------------------------------------------------------------------------- */

/* The reply's page fields after a catch-up read: `final` once the page reaches the
 * channel's offset (deliveries take over from there: the worker's mailbox is FIFO). */
static void page_result(hub_rep_t *rep, const hchan_t *c, collect_t *col, uint64_t since)
{
    rep->page_last = col->count ? col->last : since;
    rep->final = rep->page_last >= c->last_offset;
    rep->count = col->count;
    rep->frames = col->frames;
    rep->nframes = col->nframes;
    col->frames = NULL;
    col->nframes = col->cap = 0;
}

static void do_subscribe(px_hub_t *h, hub_req_t *r)
{
    hub_rep_t *rep = rep_new(r);
    hchan_t *c = chan_get(h, r->channel, r->channel_len);
    if (!c) {
        rep_error(rep, 503, "internal_error", "out of memory");
        send_rep(h, r, rep);
        return;
    }
    c->worker_subs[r->worker]++;
    c->total_subs++;
    if (r->origin_kind == ORIGIN_SSE)
        c->sse_subs++;
    rep->presence = r->presence;

    /* Recovery: the epoch must match and history must still hold everything after
     * `since`; a `since` past the channel's offset is not ours to vouch for. Messages go
     * out in pages as the client's connection drains (HREQ_PAGE), so a long backlog
     * neither overflows its output budget nor occupies this thread in one go. */
    int recovered = -1;
    collect_t col = {.sse = r->origin_kind == ORIGIN_SSE, .c = c, .max_bytes = r->max_bytes};
    uint64_t since = c->last_offset;
    if (r->has_since) {
        if ((r->since_epoch[0] && strcmp(r->since_epoch, c->epoch) != 0) ||
            r->since_offset > c->last_offset) {
            recovered = 0;
        } else if (r->max_bytes == 0) {
            /* Nothing replayed now: the first page comes when the worker asks. Whether
             * history still reaches back is checked without reading it. */
            ring_expire(h, c);
            uint64_t earliest = c->ring_count ? ring_at(c, 0)->offset : 0;
            int rr = 1;
            if (r->since_offset < c->last_offset &&
                !(c->ring_count && earliest <= r->since_offset + 1)) {
                rr = px__store_earliest(h->store, (px_str_t){c->name, c->name_len}, &earliest);
                rr = rr == 0 ? r->since_offset + 1 >= earliest : rr == -ENOENT ? 0 : rr;
            }
            recovered = rr == 1;
            since = r->since_offset;
        } else {
            int rr = read_history(h, c, r->since_offset, &col);
            recovered = rr == 1;
            if (rr != 1)
                collect_dispose(&col);
            else
                since = r->since_offset;
        }
    }
    if (recovered == 0) {
        px_slice_t *ev = r->origin_kind == ORIGIN_SSE ? encode_recovery_failed(c, 1) : NULL;
        if (ev && collect_room(&col) == 0)
            col.frames[col.nframes++] = ev;
        else
            px_slice_unref(ev);
    }
    page_result(rep, c, &col, since);

    px_json_writer_t w;
    px_json_writer_init_growable(&w, 4096);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"reply\"");
    put_id(&w, r);
    PX_JSON_PUT_LIT(&w, ",\"channel\":");
    px_json_put_str(&w, c->name, c->name_len);
    PX_JSON_PUT_LIT(&w, ",\"epoch\":");
    px_json_put_str(&w, c->epoch, strlen(c->epoch));
    PX_JSON_PUT_LIT(&w, ",\"offset\":");
    px_json_put_u64(&w, c->last_offset);
    if (recovered >= 0) {
        if (recovered)
            PX_JSON_PUT_LIT(&w, ",\"recovered\":true");
        else
            PX_JSON_PUT_LIT(&w, ",\"recovered\":false");
    }
    PX_JSON_PUT_LIT(&w, "}");
    rep_body(rep, &w);

    /* Presence: remember who, tell the others (after the reply is queued, so the
     * joiner's own join event follows its reply). */
    presence_ent_t *p = NULL;
    if (r->client[0] && r->origin_kind == ORIGIN_WS) {
        p = px__calloc(1, sizeof *p);
        if (p) {
            memcpy(p->client, r->client, sizeof p->client);
            p->user = r->user;
            p->user_len = r->user_len;
            p->info = r->info;
            p->info_len = r->info_len;
            r->user = r->info = NULL;
            p->worker = r->worker;
            p->next = c->presence;
            c->presence = p;
            c->presence_count++;
        }
    }
    send_rep(h, r, rep);
    if (p)
        presence_event(h, c, "join", p);
}

/* The next catch-up page of a counted subscription. If history was trimmed past the
 * subscription's position meanwhile, the client is told (recovery-failed) and goes live. */
static void do_page(px_hub_t *h, hub_req_t *r)
{
    hub_rep_t *rep = rep_new(r);
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    collect_t col = {.sse = r->origin_kind == ORIGIN_SSE, .c = c, .max_bytes = r->max_bytes};
    int rr = c ? read_history(h, c, r->since_offset, &col) : 0;
    if (rr < 0) {
        collect_dispose(&col);
        rep_error(rep, 503, "storage_error", "history could not be read");
    } else if (!c) {
        rep->final = 1; /* cannot be: the subscription holds the channel */
    } else if (rr == 0) {
        collect_dispose(&col);
        px_slice_t *ev = encode_recovery_failed(c, col.sse);
        if (ev && collect_room(&col) == 0)
            col.frames[col.nframes++] = ev;
        else
            px_slice_unref(ev);
        page_result(rep, c, &col, c->last_offset);
    } else {
        page_result(rep, c, &col, r->since_offset);
    }
    send_rep(h, r, rep);
}

static void do_unsubscribe(px_hub_t *h, hub_req_t *r)
{
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    if (!c)
        return;
    if (c->worker_subs[r->worker])
        c->worker_subs[r->worker]--;
    if (c->total_subs)
        c->total_subs--;
    if (r->origin_kind == ORIGIN_SSE && c->sse_subs)
        c->sse_subs--;
    if (r->client[0]) {
        for (presence_ent_t **pp = &c->presence; *pp; pp = &(*pp)->next) {
            presence_ent_t *p = *pp;
            if (strcmp(p->client, r->client) == 0) {
                *pp = p->next;
                c->presence_count--;
                presence_event(h, c, "leave", p);
                px__free(p->user);
                px__free(p->info);
                px__free(p);
                break;
            }
        }
    }
    chan_maybe_free(h, c);
}

/* A history answer: WebSocket, a whole reply (with "more":true when cut at max_bytes);
 * HTTP, the body, or with rep->more the start of a streamed body whose array is left
 * open for continuation pages (r->cont: a fragment of further elements). */
static void do_history(px_hub_t *h, hub_req_t *r)
{
    hub_rep_t *rep = rep_new(r);
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    int http = r->origin_kind == ORIGIN_HTTP;
    px_json_writer_t w;
    px_json_writer_init_growable(&w, r->max_bytes + (16u << 20)); /* + the first message */
    if (!r->cont) {
        if (http) {
            PX_JSON_PUT_LIT(&w, "{\"channel\":");
        } else {
            PX_JSON_PUT_LIT(&w, "{\"op\":\"reply\"");
            put_id(&w, r);
            PX_JSON_PUT_LIT(&w, ",\"channel\":");
        }
        px_json_put_str(&w, r->channel, r->channel_len);
        PX_JSON_PUT_LIT(&w, ",\"epoch\":");
        if (c)
            px_json_put_str(&w, c->epoch, strlen(c->epoch));
        else
            PX_JSON_PUT_LIT(&w, "null");
        PX_JSON_PUT_LIT(&w, ",\"offset\":");
        px_json_put_u64(&w, c ? c->last_offset : 0);
        PX_JSON_PUT_LIT(&w, ",\"messages\":[");
    }
    int complete = 1;
    collect_t col = {
        .w = &w, .c = c, .limit = r->limit, .max_bytes = r->max_bytes, .comma_first = r->cont};
    if (c) {
        int rr = read_history(h, c, r->since_offset, &col);
        if (rr < 0) {
            px_json_writer_dispose(&w);
            rep_error(rep, 503, "storage_error", "history could not be read");
            send_rep(h, r, rep);
            return;
        }
        complete = rr == 1;
    }
    rep->count = col.count;
    rep->page_last = col.count ? col.last : r->since_offset;
    rep->truncated = !complete;
    /* More to come only if the page was cut and the channel has messages past it. */
    rep->more = col.cut && c && rep->page_last < c->last_offset;
    if (!http || !rep->more) {
        if (!r->cont || !http)
            PX_JSON_PUT_LIT(&w, "]");
        if (!complete && !r->cont)
            PX_JSON_PUT_LIT(&w, ",\"truncated\":true");
        if (!http && rep->more)
            PX_JSON_PUT_LIT(&w, ",\"more\":true");
        if (!r->cont)
            PX_JSON_PUT_LIT(&w, "}");
    }
    rep->status = 200;
    rep_body(rep, &w);
    send_rep(h, r, rep);
}

static void do_presence(px_hub_t *h, hub_req_t *r)
{
    hub_rep_t *rep = rep_new(r);
    hchan_t *c = chan_find(h, r->channel, r->channel_len);
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 16u << 20);
    if (r->origin_kind == ORIGIN_HTTP) {
        PX_JSON_PUT_LIT(&w, "{\"channel\":");
    } else {
        PX_JSON_PUT_LIT(&w, "{\"op\":\"reply\"");
        put_id(&w, r);
        PX_JSON_PUT_LIT(&w, ",\"channel\":");
    }
    px_json_put_str(&w, r->channel, r->channel_len);
    PX_JSON_PUT_LIT(&w, ",\"count\":");
    px_json_put_u64(&w, c ? c->presence_count : 0);
    PX_JSON_PUT_LIT(&w, ",\"subscribers\":");
    px_json_put_u64(&w, c ? c->total_subs : 0);
    PX_JSON_PUT_LIT(&w, ",\"clients\":[");
    int first = 1;
    for (presence_ent_t *p = c ? c->presence : NULL; p; p = p->next) {
        if (!first)
            PX_JSON_PUT_LIT(&w, ",");
        first = 0;
        PX_JSON_PUT_LIT(&w, "{\"client\":");
        px_json_put_str(&w, p->client, strlen(p->client));
        if (p->user) {
            PX_JSON_PUT_LIT(&w, ",\"user\":");
            px_json_put_str(&w, p->user, p->user_len);
        }
        if (p->info) {
            PX_JSON_PUT_LIT(&w, ",\"info\":");
            px_json_put_raw(&w, p->info, p->info_len);
        }
        PX_JSON_PUT_LIT(&w, "}");
    }
    PX_JSON_PUT_LIT(&w, "]}");
    rep->status = 200;
    rep_body(rep, &w);
    send_rep(h, r, rep);
}

static void do_channels(px_hub_t *h, hub_req_t *r)
{
    hub_rep_t *rep = rep_new(r);
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 64u << 20);
    PX_JSON_PUT_LIT(&w, "{\"channels\":[");
    int first = 1;
    const px_jwt_claims_t *cl = r->claims && r->claims->has_channels ? r->claims : NULL;
    for (px__centry_t *e = px__chanmap_next(&h->channels, NULL); e;
         e = px__chanmap_next(&h->channels, e)) {
        hchan_t *c = PX_CONTAINER_OF(e, hchan_t, e);
        if (!c->total_subs)
            continue; /* "active": has subscribers */
        if (cl && !px_jwt_channel_allowed(cl, PX_JWT_SUBSCRIBE, c->name, c->name_len))
            continue; /* a token sees only the channels it may subscribe to */
        if (!first)
            PX_JSON_PUT_LIT(&w, ",");
        first = 0;
        PX_JSON_PUT_LIT(&w, "{\"channel\":");
        px_json_put_str(&w, c->name, c->name_len);
        PX_JSON_PUT_LIT(&w, ",\"subscribers\":");
        px_json_put_u64(&w, c->total_subs);
        PX_JSON_PUT_LIT(&w, ",\"presence\":");
        px_json_put_u64(&w, c->presence_count);
        PX_JSON_PUT_LIT(&w, ",\"epoch\":");
        px_json_put_str(&w, c->epoch, strlen(c->epoch));
        PX_JSON_PUT_LIT(&w, ",\"offset\":");
        px_json_put_u64(&w, c->last_offset);
        PX_JSON_PUT_LIT(&w, "}");
    }
    PX_JSON_PUT_LIT(&w, "]}");
    rep->status = 200;
    rep_body(rep, &w);
    send_rep(h, r, rep);
}

static void do_read(px_hub_t *h, hub_req_t *r)
{
    switch (r->type) {
    case HREQ_HISTORY: do_history(h, r); break;
    case HREQ_PAGE: do_page(h, r); break;
    case HREQ_PRESENCE: do_presence(h, r); break;
    case HREQ_CHANNELS: do_channels(h, r); break;
    }
    req_free(r);
}

/* Reads wait behind the commit of the publishes that arrived with them and take a
 * bounded slice of each loop iteration: a publish never waits for a queue of bulk
 * reads, only for the slice in progress. Each read is itself bounded (max_bytes). */
#define READ_SLICE_NS (2 * 1000 * 1000)

/* Answer queued reads for up to `budget_ns` (0: all). Returns 1 if some are left. */
static int drain_reads(px_hub_t *h, uint64_t budget_ns)
{
    uint64_t t0 = px_now_ns();
    while (h->rq_head) {
        hub_req_t *r = h->rq_head;
        h->rq_head = r->next;
        if (!h->rq_head)
            h->rq_tail = NULL;
        do_read(h, r);
        if (budget_ns && h->rq_head && px_now_ns() - t0 > budget_ns)
            return 1;
    }
    return 0;
}

static void run_reads(px_defer_t *d)
{
    px_hub_t *h = d->data;
    if (h->batch_head)
        commit_batch(&h->commit_defer);
    if (drain_reads(h, READ_SLICE_NS)) /* the rest in the next iteration, after its mailbox */
        px_defer(px_worker_loop(px_workers_get(h->actor, 0)), &h->read_defer);
}

static void on_request(px_worker_t *w, px_msg_t *m)
{
    hub_req_t *r = (hub_req_t *)m;
    px_hub_t *h = px_worker_get_data(w);
    r->next = NULL;
    switch (r->type) {
    case HREQ_PUBLISH:
        if (h->batch_tail)
            h->batch_tail->next = r;
        else
            h->batch_head = r;
        h->batch_tail = r;
        h->batch_len++;
        /* Runs after this mailbox drain: everything that arrived together commits together. */
        px_defer(px_worker_loop(w), &h->commit_defer);
        return;
    case HREQ_HISTORY:
    case HREQ_PAGE:
    case HREQ_PRESENCE:
    case HREQ_CHANNELS:
        if (h->rq_tail)
            h->rq_tail->next = r;
        else
            h->rq_head = r;
        h->rq_tail = r;
        px_defer(px_worker_loop(w), &h->read_defer);
        return;
    /* Subscriptions are taken in arrival order with publishes: a subscribe sent before
     * a publish counts before that publish fans out. Their replay is one bounded page. */
    case HREQ_SUBSCRIBE: do_subscribe(h, r); break;
    case HREQ_UNSUBSCRIBE: do_unsubscribe(h, r); break;
    }
    req_free(r);
}

void px__hub_post(px_hub_t *h, hub_req_t *r)
{
    r->msg.cb = on_request;
    px_worker_post(px_workers_get(h->actor, 0), &r->msg);
}

/* ---- life cycle ------------------------------------------------------------------------- */

static int load_channel(void *ud, const px_store_channel_t *sc)
{
    px_hub_t *h = ud;
    return chan_new(h, sc->name, sc->name_len, sc->epoch, sc->last_offset) ? 0 : -ENOMEM;
}

static void trim_cb(px_timer_t *t)
{
    px_hub_t *h = t->data;
    int r = px__store_trim(h->store, wall_ms());
    px_timer_start(px_worker_loop(px_workers_get(h->actor, 0)), t, r == 1 ? 10 : 1000);
}

static void actor_start(px_worker_t *w, void *ud)
{
    px_hub_t *h = ud;
    px_worker_set_data(w, h);
    px_defer_init(&h->commit_defer, commit_batch, h);
    px_defer_init(&h->read_defer, run_reads, h);
    px_timer_init(&h->trim_timer, trim_cb, h);
    px_timer_start(px_worker_loop(w), &h->trim_timer, 1000);
}

static char *dup_opt(const char *s)
{
    return s ? px__xstrdup(s) : NULL;
}

px_hub_t *px_hub_new(px_server_t *s, const px_hub_opts_t *o, char *err, size_t errlen)
{
    px_hub_t *h = px__xcalloc(1, sizeof *h);
    h->server = s;
    h->opts = *o;
    h->data_dir = dup_opt(o->data_dir ? o->data_dir : "./var");
    h->jwt_secret = dup_opt(o->jwt_secret && *o->jwt_secret ? o->jwt_secret : NULL);
    h->api_key = dup_opt(o->api_key && *o->api_key ? o->api_key : NULL);
    h->opts.data_dir = h->data_dir;
    h->opts.jwt_secret = h->jwt_secret;
    h->opts.api_key = h->api_key;
    h->nworkers = px_workers_count(px_server_workers(s));
    px__chanmap_init(&h->channels);

    px__m_publishes = px_metric_register("plexus_hub_publishes_total",
                                         "Messages published and stored", PX_METRIC_COUNTER);
    px__m_deliveries =
        px_metric_register("plexus_hub_deliveries_total",
                           "Messages delivered to subscribers (fan-out)", PX_METRIC_COUNTER);
    px__m_commit_us = px_metric_register("plexus_store_commit_microseconds_total",
                                         "Time spent in store commits", PX_METRIC_COUNTER);
    px__m_commits = px_metric_register("plexus_store_commits_total",
                                       "Store commits (group commits)", PX_METRIC_COUNTER);
    px__m_channels =
        px_metric_register("plexus_hub_channels", "Channels known to the hub", PX_METRIC_GAUGE);

    px_store_opts_t so = {.data_dir = h->data_dir,
                          .durability = o->durability == PX_HUB_DURABILITY_FULL
                                            ? PX_DURABILITY_FULL
                                            : PX_DURABILITY_NORMAL,
                          .history_size = o->history_size,
                          .history_ttl_ms = o->history_ttl_ms};
    int r = px__store_open(NULL, &so, &h->store, err, errlen);
    if (r) {
        px_hub_free(h);
        return NULL;
    }
    r = px__store_load_channels(h->store, load_channel, h);
    if (r) {
        snprintf(err, errlen, "%s: cannot load channels: %s", h->data_dir,
                 px__store_errmsg(h->store));
        px_hub_free(h);
        return NULL;
    }
    h->actor = px_workers_new(1);
    if (!h->actor || px__hub_front_init(h) != 0) {
        snprintf(err, errlen, "out of memory");
        px_hub_free(h);
        return NULL;
    }
    return h;
}

int px_hub_start(px_hub_t *h)
{
    int r = px_workers_start(h->actor, actor_start, h);
    if (r == 0)
        h->started = 1;
    return r;
}

void px_hub_free(px_hub_t *h)
{
    if (!h)
        return;
    if (h->started) {
        px_workers_stop(h->actor);
        px_workers_join(h->actor);
        /* Requests that reached the hub after its loop ended: answer nothing,
         * free them. Replies still queued at stopped workers are drained there. */
        px_workers_drain(h->actor);
        commit_batch(&h->commit_defer);
        drain_reads(h, 0); /* answered, so the requests waiting for them are released */
    }
    if (h->actor)
        px_workers_drain(px_server_workers(h->server));
    px__hub_front_free(h);
    px_workers_free(h->actor);
    for (px__centry_t *e = px__chanmap_next(&h->channels, NULL), *next; e; e = next) {
        next = px__chanmap_next(&h->channels, e);
        chan_free(PX_CONTAINER_OF(e, hchan_t, e));
    }
    px__chanmap_dispose(&h->channels);
    px__store_close(h->store);
    px__free(h->data_dir);
    px__free(h->jwt_secret);
    px__free(h->api_key);
    px__free(h);
}
