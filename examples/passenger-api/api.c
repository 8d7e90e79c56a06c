/* Your own C API, served by plexus inside a Node.js app (Phusion Passenger, shared hosting).
 * `npm install` builds this file into the plexus addon (see package.json); app.js loads
 * that addon. Everything plexus serves is there too: the demo page, /ws, /api/channels,
 * SSE, /metrics. Handlers run on plexus's worker threads, never on Node's.
 *
 * Write routes against plexus/http.h (and plexus/hub.h to publish), then restart the app
 * (Passenger: touch tmp/restart.txt). */
#include <stdio.h>
#include <string.h>

#include <plexus/http.h>
#include <plexus/hub.h>

/* The addon calls this once, before the server starts. 0 or a negative errno. */
int plexus_routes(px_server_t *s, px_hub_t *hub);

/* GET /api/hello?name=NAME -> {"hello":"NAME","worker":N} */
static void hello(px_req_t *req, void *ud)
{
    PX_UNUSED(ud);
    px_str_t name = PX_STR_LIT("world");
    px_req_query_param(req, "name", &name);
    if (name.len > 64)
        return (void)px_respond_error(req, 400, "invalid_name", "name: at most 64 bytes");
    for (size_t i = 0; i < name.len; i++)
        if (name.ptr[i] == '"' || name.ptr[i] == '\\' || (unsigned char)name.ptr[i] < 0x20)
            return (void)px_respond_error(req, 400, "invalid_name", "name: plain characters only");
    char body[128];
    int n = snprintf(body, sizeof body, "{\"hello\":\"%.*s\",\"worker\":%u}", (int)name.len,
                     name.ptr, px_worker_id(px_req_worker(req)));
    px_respond(req, 200, "application/json", body, (size_t)n);
}

/* GET /api/plaintext: the benchmark route (docs/benchmarks.md). */
static void plaintext(px_req_t *req, void *ud)
{
    PX_UNUSED(ud);
    px_respond(req, 200, "text/plain", "Hello, World!", 13);
}

/* POST /api/counter/:name: publish the request body (a JSON value) on channel
 * "counter-NAME" through the hub; subscribers of every process get it. */

static void published(const px_hub_ack_t *ack, void *ud)
{
    px_req_t *req = ud;
    if (ack->status != 0)
        return (void)px_respond_error(req, 503, ack->error, "publish failed");
    char body[96];
    int n = snprintf(body, sizeof body, "{\"offset\":%llu}", (unsigned long long)ack->offset);
    px_respond(req, 200, "application/json", body, (size_t)n);
}

static void counter(px_req_t *req, void *ud)
{
    px_hub_t *hub = ud;
    px_str_t name = px_req_param(req, "name");
    char channel[80];
    int n = snprintf(channel, sizeof channel, "counter-%.*s", (int)name.len, name.ptr);
    if (n < 0 || (size_t)n >= sizeof channel)
        return (void)px_respond_error(req, 400, "invalid_name", "name: at most 64 bytes");
    px_str_t body = px_req_body(req);
    if (!body.len)
        body = PX_STR_LIT("null");
    int r = px_hub_publish(hub, (px_str_t){channel, (size_t)n}, PX_STR_LIT(""), body, 0, published,
                           req);
    if (r)
        px_respond_error(req, r == -EINVAL ? 400 : 413, "invalid_publish", "%s", px_strerror(r));
}

int plexus_routes(px_server_t *s, px_hub_t *hub)
{
    int r = px_route(s, "GET", "/api/hello", hello, NULL);
    if (!r)
        r = px_route(s, "GET", "/api/plaintext", plaintext, NULL);
    if (!r)
        r = px_route(s, "POST", "/api/counter/:name", counter, hub);
    return r;
}
