/* The Pusher wire format: a hub message becomes {"event","channel","data"[,"user_id"]} in one
 * WebSocket text frame, encoded once on the hub thread for every Pusher subscription of the
 * channel (xhr sessions take the frame's payload); presence events become member_added /
 * member_removed (one per user: user_first / user_last) or, on a user's own channel,
 * watchlist online / offline events.
 *
 * Event names: a message without one (the native protocol's, the C API's) is "message", and
 * its data (a JSON value) is sent JSON-encoded as a string, as Pusher servers send data; a
 * Pusher message keeps its data as it came (the HTTP API's string, a client event's value). */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "front/pusher.h"

int px__pusher_put_message(px__pusher_t *p, px_json_writer_t *w, const px_hub_msg_t *m)
{
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = 0;
    if (!px__pusher_app_of_channel(p, px__msg_channel(m), m->channel_len, name, &nl))
        return -ENOENT;
    PX_JSON_PUT_LIT(w, "{\"event\":");
    if (m->event_len)
        px_json_put_str(w, px__msg_event(m), m->event_len);
    else
        PX_JSON_PUT_LIT(w, "\"" PUSHER_EVENT_NATIVE "\"");
    PX_JSON_PUT_LIT(w, ",\"channel\":");
    px_json_put_str(w, name, nl);
    PX_JSON_PUT_LIT(w, ",\"data\":");
    if (m->event_len)
        px_json_put_raw(w, px__msg_data(m), m->data_len);
    else
        px_json_put_str(w, px__msg_data(m), m->data_len);
    if (m->user_len) {
        PX_JSON_PUT_LIT(w, ",\"user_id\":");
        px_json_put_str(w, px__msg_user(m), m->user_len);
    }
    PX_JSON_PUT_LIT(w, "}");
    return w->err;
}

static px_slice_t *encode(const px_hub_msg_t *m, void *ctx)
{
    px_json_writer_t w;
    px_json_writer_init_growable(&w, (size_t)m->data_len * 6 + 4096);
    px_slice_t *s = NULL;
    if (px__pusher_put_message(ctx, &w, m) == 0)
        s = px_ws_frame_new(PX_WS_TEXT, w.buf, w.len);
    px_json_writer_dispose(&w);
    return s;
}

#define USER_CHAN "#server-to-user-"

static px_slice_t *encode_presence(const px__presence_ev_t *e, void *ctx)
{
    px__pusher_t *p = ctx;
    int join = e->op == PX__JOIN;
    if ((join && !e->user_first) || (!join && !e->user_last) || !e->who->user.len)
        return NULL; /* another connection of a member: nothing to say */
    char name[PX__CHANNEL_MAX + 2];
    size_t nl = 0;
    if (!px__pusher_app_of_channel(p, e->channel.ptr, e->channel.len, name, &nl))
        return NULL;
    px_json_writer_t w, d;
    px_json_writer_init_growable(&w, 1u << 20);
    px_json_writer_init_growable(&d, 1u << 20);
    if (nl > sizeof USER_CHAN - 1 && memcmp(name, USER_CHAN, sizeof USER_CHAN - 1) == 0) {
        /* The user of this channel came online or went offline: for its watchers. */
        PX_JSON_PUT_LIT(&d, "{\"events\":[{\"name\":");
        if (join)
            PX_JSON_PUT_LIT(&d, "\"online\"");
        else
            PX_JSON_PUT_LIT(&d, "\"offline\"");
        PX_JSON_PUT_LIT(&d, ",\"user_ids\":[");
        px_json_put_str(&d, e->who->user.ptr, e->who->user.len);
        PX_JSON_PUT_LIT(&d, "]}]}");
        PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher_internal:watchlist_events\",\"data\":");
    } else if (nl > 9 && memcmp(name, "presence-", 9) == 0) {
        PX_JSON_PUT_LIT(&d, "{\"user_id\":");
        px_json_put_str(&d, e->who->user.ptr, e->who->user.len);
        if (join && e->who->info.len) {
            PX_JSON_PUT_LIT(&d, ",\"user_info\":");
            px_json_put_raw(&d, e->who->info.ptr, e->who->info.len);
        }
        PX_JSON_PUT_LIT(&d, "}");
        if (join)
            PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher_internal:member_added\",\"channel\":");
        else
            PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher_internal:member_removed\",\"channel\":");
        px_json_put_str(&w, name, nl);
        PX_JSON_PUT_LIT(&w, ",\"data\":");
    } else {
        px_json_writer_dispose(&w);
        px_json_writer_dispose(&d);
        return NULL;
    }
    px_json_put_str(&w, d.buf, d.len);
    PX_JSON_PUT_LIT(&w, "}");
    px_slice_t *s = w.err || d.err ? NULL : px_ws_frame_new(PX_WS_TEXT, w.buf, w.len);
    px_json_writer_dispose(&w);
    px_json_writer_dispose(&d);
    return s;
}

px_str_t px__pusher_frame_payload(const px_slice_t *frame)
{
    const uint8_t *b = (const uint8_t *)frame->data;
    size_t len = b[1] & 0x7f, hl = 2;
    if (len == 126)
        hl = 4;
    else if (len == 127)
        hl = 10;
    return (px_str_t){frame->data + hl, frame->len - hl};
}

static void send_frame(psess_t *ps, px_slice_t *frame)
{
    if (ps->kind == PS_WS) {
        if (ps->ws)
            px_ws_send_frame(ps->ws, frame);
    } else if (ps->xs) {
        px_str_t j = px__pusher_frame_payload(frame);
        px__pusher_xhr_send(ps->xs, j.ptr, j.len);
    }
}

size_t px__pusher_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    size_t n = 0;
    if (!frame)
        return 0;
    if (kind == PX__DELIVER_MESSAGE) {
        uint64_t publisher = ((const px_hub_msg_t *)item)->publisher;
        for (px__hsub_t *u = list, *next; u; u = next) {
            next = u->next;
            if (!(u->mark & PSUB_DELIVER))
                continue; /* not subscribed yet (or a watch) */
            psess_t *ps = PX_CONTAINER_OF(u->client, psess_t, hc);
            if (ps->closing || ps->sid == publisher)
                continue; /* closing, or its own event */
            if (ps->kind == PS_WS)
                px_ws_send_frame(ps->ws, frame); /* ws is set while not closing */
            else
                send_frame(ps, frame);
            n++;
        }
        return n;
    }
    const px__presence_ev_t *e = item;
    for (px__hsub_t *u = list, *next; u; u = next) {
        next = u->next;
        if (!u->presence)
            continue;
        psess_t *ps = PX_CONTAINER_OF(u->client, psess_t, hc);
        const psub_t *x = px__hsub_extra(u);
        if (ps->closing)
            continue;
        if (x->type == PT_PRESENCE) {
            /* Never told about itself (any of its own connections). */
            if (!x->visible || (x->user_len == e->who->user.len &&
                                memcmp(x->user, e->who->user.ptr, x->user_len) == 0))
                continue;
        } else if (x->type != PT_WATCH) {
            continue;
        }
        send_frame(ps, frame);
        n++;
    }
    return n;
}

void px__pusher_format_init(px__pusher_t *p)
{
    p->format = (px__hformat_t){.name = "pusher",
                                .encode = encode,
                                .encode_presence = encode_presence,
                                .deliver = px__pusher_deliver,
                                .ctx = p};
}
