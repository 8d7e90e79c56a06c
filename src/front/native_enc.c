/* The native protocol's wire formats: messages, presence events and gaps encoded once on
 * the hub thread for every subscription of the format; and the JSON of answers built on
 * the workers. Channel names need no JSON escaping (their alphabet has no quote, backslash
 * or control character), which the fast encoders rely on. */
#include <stdio.h>
#include <string.h>

#include "front/native.h"
#include "ws/ws_frame.h"

/* ---- WebSocket --------------------------------------------------------------------------------
 */

/* {"op":"message","channel":"<name>","offset":N,"data":<raw>} as one text frame. */
static px_slice_t *ws_encode(const px_hub_msg_t *m, void *ctx)
{
    PX_UNUSED(ctx);
    char head[PX__CHANNEL_MAX + 96];
    int hn = snprintf(head, sizeof head,
                      "{\"op\":\"message\",\"channel\":\"%.*s\",\"offset\":%llu,\"data\":",
                      (int)m->channel_len, px__msg_channel(m), (unsigned long long)m->offset);
    size_t len = m->data_len;
    size_t plen = (size_t)hn + len + 1;
    uint8_t fh[PX_WS_MAX_HEADER];
    size_t fhl = px__ws_encode_header(fh, PX_WS_TEXT, 1, 0, plen, NULL);
    px_slice_t *s = px_slice_new(fhl + plen);
    if (!s)
        return NULL;
    uint8_t *p = (uint8_t *)s->data;
    memcpy(p, fh, fhl);
    memcpy(p + fhl, head, (size_t)hn);
    memcpy(p + fhl + (size_t)hn, px__msg_data(m), len);
    p[fhl + (size_t)hn + len] = '}';
    return s;
}

static px_slice_t *json_frame(px_json_writer_t *w)
{
    px_slice_t *s = w->err ? NULL : px_ws_frame_new(PX_WS_TEXT, w->buf, w->len);
    px_json_writer_dispose(w);
    return s;
}

static px_slice_t *ws_encode_presence(const px__presence_ev_t *e, void *ctx)
{
    PX_UNUSED(ctx);
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 8192);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"");
    if (e->op == PX__JOIN)
        PX_JSON_PUT_LIT(&w, "join");
    else
        PX_JSON_PUT_LIT(&w, "leave");
    PX_JSON_PUT_LIT(&w, "\",\"channel\":");
    px_json_put_str(&w, e->channel.ptr, e->channel.len);
    PX_JSON_PUT_LIT(&w, ",\"client\":");
    px_json_put_str(&w, e->who->client, strlen(e->who->client));
    if (e->who->user.len) {
        PX_JSON_PUT_LIT(&w, ",\"user\":");
        px_json_put_str(&w, e->who->user.ptr, e->who->user.len);
    }
    if (e->who->info.len) {
        PX_JSON_PUT_LIT(&w, ",\"info\":");
        px_json_put_raw(&w, e->who->info.ptr, e->who->info.len);
    }
    PX_JSON_PUT_LIT(&w, "}");
    return json_frame(&w);
}

/* "channel":..,"epoch":..,"offset":N}: the end of a recovery-failed object, on both
 * wire formats. */
static void put_gap(px_json_writer_t *w, px_str_t channel, const char *epoch, uint64_t offset)
{
    PX_JSON_PUT_LIT(w, "\"channel\":");
    px_json_put_str(w, channel.ptr, channel.len);
    PX_JSON_PUT_LIT(w, ",\"epoch\":");
    px_json_put_str(w, epoch, strlen(epoch));
    PX_JSON_PUT_LIT(w, ",\"offset\":");
    px_json_put_u64(w, offset);
    PX_JSON_PUT_LIT(w, "}");
}

/* {"op":"recovery-failed","channel":..,"epoch":..,"offset":N}: history no longer reaches
 * back to what the client has; live messages after `offset` follow. */
static px_slice_t *ws_encode_gap(px_str_t channel, const char *epoch, uint64_t offset, void *ctx)
{
    PX_UNUSED(ctx);
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 1024);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"recovery-failed\",");
    put_gap(&w, channel, epoch, offset);
    return json_frame(&w);
}

size_t px__native_ws_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);

const px__hformat_t px__native_ws_format = {
    .name = "native-ws",
    .encode = ws_encode,
    .encode_presence = ws_encode_presence,
    .encode_gap = ws_encode_gap,
    .deliver = px__native_ws_deliver,
};

/* ---- Server-Sent Events -------------------------------------------------------------------------
 */

/* "id: N\ndata: <line>\n...\n\n": data lines are split at line breaks so multi-line JSON
 * stays one event. */
static px_slice_t *sse_encode(const px_hub_msg_t *m, void *ctx)
{
    PX_UNUSED(ctx);
    const char *data = px__msg_data(m);
    size_t len = m->data_len, lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    px_slice_t *s = px_slice_new(32 + len + lines * 6 + 2);
    if (!s)
        return NULL;
    char *p = s->data;
    size_t n = (size_t)snprintf(p, 32, "id: %llu\ndata: ", (unsigned long long)m->offset);
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

/* "event: recovery-failed" with the channel's position as data and as id (so the next
 * reconnect resumes from here). */
static px_slice_t *sse_encode_gap(px_str_t channel, const char *epoch, uint64_t offset, void *ctx)
{
    PX_UNUSED(ctx);
    char buf[PX__CHANNEL_MAX + PX__EPOCH_MAX + 128];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{");
    put_gap(&w, channel, epoch, offset);
    if (w.err)
        return NULL;
    px_slice_t *s = px_slice_new(w.len + 64);
    if (!s)
        return NULL;
    int n = snprintf(s->data, w.len + 64, "event: recovery-failed\nid: %llu\ndata: %.*s\n\n",
                     (unsigned long long)offset, (int)w.len, w.buf);
    s->len = (uint32_t)n;
    return s;
}

size_t px__native_sse_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item);

const px__hformat_t px__native_sse_format = {
    .name = "native-sse",
    .encode = sse_encode,
    .encode_gap = sse_encode_gap,
    .deliver = px__native_sse_deliver,
    .gap_on_subscribe = 1,
};

/* ---- answers (workers)
 * ------------------------------------------------------------------------------ */

/* ,{"offset":N,"time":T,"data":<raw>}... (a leading comma if `comma`). */
void px__native_put_messages(px_json_writer_t *w, px_hub_msg_t *const *msgs, size_t n, int comma)
{
    for (size_t i = 0; i < n; i++) {
        const px_hub_msg_t *m = msgs[i];
        if (i || comma)
            PX_JSON_PUT_LIT(w, ",");
        PX_JSON_PUT_LIT(w, "{\"offset\":");
        px_json_put_u64(w, m->offset);
        PX_JSON_PUT_LIT(w, ",\"time\":");
        px_json_put_i64(w, m->time_ms);
        PX_JSON_PUT_LIT(w, ",\"data\":");
        px_json_put_raw(w, px__msg_data(m), m->data_len);
        PX_JSON_PUT_LIT(w, "}");
    }
}

/* "count":N,"subscribers":N,"clients":[...] */
void px__native_put_presence(px_json_writer_t *w, const px__hreq_t *r)
{
    PX_JSON_PUT_LIT(w, ",\"count\":");
    px_json_put_u64(w, r->npres);
    PX_JSON_PUT_LIT(w, ",\"subscribers\":");
    px_json_put_u64(w, r->subscribers);
    PX_JSON_PUT_LIT(w, ",\"clients\":[");
    for (size_t i = 0; i < r->npres; i++) {
        const px__presence_t *p = &r->pres[i];
        if (i)
            PX_JSON_PUT_LIT(w, ",");
        PX_JSON_PUT_LIT(w, "{\"client\":");
        px_json_put_str(w, p->client, strlen(p->client));
        if (p->user.len) {
            PX_JSON_PUT_LIT(w, ",\"user\":");
            px_json_put_str(w, p->user.ptr, p->user.len);
        }
        if (p->info.len) {
            PX_JSON_PUT_LIT(w, ",\"info\":");
            px_json_put_raw(w, p->info.ptr, p->info.len);
        }
        PX_JSON_PUT_LIT(w, "}");
    }
    PX_JSON_PUT_LIT(w, "]");
}
