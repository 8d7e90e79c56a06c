/* The Pusher protocol over WebSocket: ws[s]://host/app/{key}?protocol=7&client=js&version=..
 * One Pusher event per text frame. */
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "front/pusher.h"

static void refuse(px_ws_t *ws, int code, const char *why)
{
    char buf[256];
    px_json_writer_t w;
    px_json_writer_init(&w, buf, sizeof buf);
    PX_JSON_PUT_LIT(&w, "{\"event\":\"pusher:error\",\"data\":{\"code\":");
    px_json_put_i64(&w, code);
    PX_JSON_PUT_LIT(&w, ",\"message\":");
    px_json_put_str(&w, why, strlen(why));
    PX_JSON_PUT_LIT(&w, "}}");
    if (!w.err)
        px_ws_send(ws, PX_WS_TEXT, w.buf, w.len);
    px_ws_close(ws, code, why);
}

static void ws_open(px_ws_t *ws, px_req_t *req, void *ud)
{
    px__pusher_t *p = ud;
    px_ws_set_data(ws, NULL);
    papp_t *app;
    const char *why = NULL;
    int code = px__pusher_check_connect(p, req, px_req_param(req, "key"), &app, &why);
    if (!code && app->o.max_connections &&
        atomic_load_explicit(&app->nconns, memory_order_relaxed) >= app->o.max_connections) {
        code = 4004;
        why = "Over connection quota";
    }
    if (code) {
        refuse(ws, code, why);
        return;
    }
    unsigned worker = px_worker_id(px_conn_worker(px_ws_conn(ws)));
    psess_t *ps = px__pusher_sess_new(p, app, PS_WS, worker);
    if (!ps) {
        refuse(ws, 4100, "Over capacity");
        return;
    }
    ps->ws = ws;
    px_ws_set_data(ws, ps);
    px__pusher_sess_start(ps);
}

static void ws_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    PX_UNUSED(ud);
    psess_t *ps = px_ws_get_data(ws);
    if (!ps)
        return;
    if (opcode != PX_WS_TEXT) {
        px__pusher_sess_error(ps, 0, "the protocol uses JSON text frames");
        return;
    }
    px__pusher_sess_input(ps, data, len);
}

static void ws_drain(px_ws_t *ws, void *ud)
{
    PX_UNUSED(ud);
    psess_t *ps = px_ws_get_data(ws);
    if (ps)
        px__hclient_drained(&ps->hc);
}

static void ws_close_cb(px_ws_t *ws, int code, px_str_t reason, void *ud)
{
    PX_UNUSED(code);
    PX_UNUSED(reason);
    PX_UNUSED(ud);
    psess_t *ps = px_ws_get_data(ws);
    if (!ps)
        return;
    px_ws_set_data(ws, NULL);
    ps->ws = NULL;
    px__pusher_sess_gone(ps);
}

/* Graceful shutdown: 4200 tells pusher-js to reconnect at once (to another node, or to
 * this one once it is back). */
static void ws_shutdown(px_ws_t *ws, void *ud)
{
    PX_UNUSED(ud);
    psess_t *ps = px_ws_get_data(ws);
    if (ps)
        px__pusher_sess_fail(ps, 4200, "Server shutting down");
}

static const px_ws_callbacks_t ws_callbacks = {
    .on_open = ws_open,
    .on_message = ws_message,
    .on_drain = ws_drain,
    .on_close = ws_close_cb,
    .on_shutdown = ws_shutdown,
};

/* /app/{key}/anything: not a Pusher endpoint (4005). */
static void ws_open_bad_path(px_ws_t *ws, px_req_t *req, void *ud)
{
    PX_UNUSED(req);
    PX_UNUSED(ud);
    refuse(ws, 4005, "Path not found");
}

static const px_ws_callbacks_t ws_bad_path = {.on_open = ws_open_bad_path};

int px__pusher_ws_init(px__pusher_t *p)
{
    int r = px_ws_route(p->server, "/app/:key", &ws_callbacks, p);
    return r ? r : px_ws_route(p->server, "/app/:key/*", &ws_bad_path, p);
}
