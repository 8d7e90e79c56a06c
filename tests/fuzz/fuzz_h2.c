/* libFuzzer harness for the HTTP/2 connection (src/http/h2.c): nghttp2's
 * session with our callbacks, the requests they build and the answers the
 * handlers give, on a real connection.
 *
 * One server (one worker, its loop driven by hand, as in the unit tests) with
 * routes that answer in each way a request can be answered: from memory, a
 * body echo, a shared slice, a file, a stream (written, ended), an async
 * answer given on the next loop turn, and a WebSocket (RFC 8441 tunnel). Each
 * input is the bytes a client sends after the connection preface, written in
 * two pieces (split where the input says) into one end of a socketpair whose
 * other end is a connection that starts as HTTP/1.1 and switches on the
 * preface. The loop runs until quiet; the connection is then aborted and
 * everything it held must be released (ASan: no leak, no use after free). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "http/http_int.h"
#include "net/net_int.h"
#include "plexus/log.h"
#include "plexus/metrics.h"
#include "plexus/ws.h"

static px_server_t *srv;
static px__netw_t *nw;
static px_loop_t *loop;
static px_slice_t *shared;
static char file_path[64];
static px_req_t *held[8];
static unsigned nheld;

static void r_hello(px_req_t *req, void *ud)
{
    (void)ud;
    px_respond(req, 200, "text/plain", "hello", 5);
}

static void r_echo(px_req_t *req, void *ud)
{
    (void)ud;
    px_str_t b = px_req_body(req);
    px_res_header(req, "X-Len", "1");
    px_respond(req, 200, "application/octet-stream", b.ptr, b.len);
}

static void r_slice(px_req_t *req, void *ud)
{
    (void)ud;
    px_respond_slice(req, 200, "text/plain", shared);
}

static void r_file(px_req_t *req, void *ud)
{
    (void)ud;
    int fd = open(file_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        px_respond_error(req, 500, NULL, "no file");
        return;
    }
    px_respond_file(req, 200, "application/octet-stream", fd, 3, 40000);
}

static void r_stream(px_req_t *req, void *ud)
{
    (void)ud;
    if (px_stream_start(req, 200, "text/event-stream") != 0)
        return;
    px_stream_write(req, "data: 1\n\n", 9);
    px_stream_write_slice(req, shared, 0, shared->len);
    px_stream_end(req);
}

static void held_abort(px_req_t *req, void *ud)
{
    (void)req, (void)ud;
}

static void r_async(px_req_t *req, void *ud)
{
    (void)ud;
    if (nheld == sizeof held / sizeof held[0]) {
        px_respond(req, 503, NULL, NULL, 0);
        return;
    }
    px_req_on_abort(req, held_abort, NULL);
    held[nheld++] = req;
}

/* Async answers: given from the loop, after the handler returned. */
static void answer_held(void)
{
    while (nheld) {
        px_req_t *req = held[--nheld];
        px_respond(req, 200, "text/plain", "late", 4);
    }
}

static void ws_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    (void)ud;
    px_ws_send(ws, opcode, data, len);
}

static const px_ws_callbacks_t ws_cb = {.on_message = ws_message};

static void setup(void)
{
    px_log_set_level(PX_LOG_OFF);
    px_server_opts_t so;
    px_server_opts_init(&so);
    so.workers = 1;
    so.output_cap = 256u << 10;
    srv = px_server_new(&so);
    px_http_opts_t ho;
    px_http_opts_init(&ho);
    ho.max_body = 64u << 10;
    ho.h2_max_concurrent_streams = 16;
    px_http_configure(srv, &ho);
    px_route(srv, "GET", "/", r_hello, NULL);
    px_route(srv, "*", "/echo", r_echo, NULL);
    px_route(srv, "GET", "/slice", r_slice, NULL);
    px_route(srv, "GET", "/file", r_file, NULL);
    px_route(srv, "GET", "/stream", r_stream, NULL);
    px_route(srv, "*", "/async", r_async, NULL);
    px_ws_route(srv, "/ws", &ws_cb, NULL);
    shared = px_slice_new(3000);
    memset(shared->data, 'S', shared->len);
    snprintf(file_path, sizeof file_path, "/tmp/px-fuzz-h2-%d", (int)getpid());
    int fd = open(file_path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    static char block[50000];
    memset(block, 'F', sizeof block);
    CHECK(fd >= 0);
    CHECK(write(fd, block, sizeof block) == (ssize_t)sizeof block);
    close(fd);
    nw = &srv->nw[0];
    loop = px_worker_loop(px_workers_get(px_server_workers(srv), 0));
    px__netw_start(nw);
}

static void run(int ms_turns)
{
    for (int i = 0; i < ms_turns; i++)
        px_loop_run_once(loop, 0);
}

static void drain_peer(int peer)
{
    char buf[65536];
    while (recv(peer, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

static void send_all(int peer, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = send(peer, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return;
        run(2);
        drain_peer(peer);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        setup();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    px_conn_t *c = px__conn_adopt(nw, sv[0]);
    if (!c) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    static const char preface[] = PX__H2_PREFACE;
    send_all(sv[1], (const uint8_t *)preface, PX__H2_PREFACE_LEN);
    /* The first byte says where to split the rest. */
    size_t cut = 0;
    if (size) {
        cut = data[0] % size;
        data++;
        size--;
    }
    send_all(sv[1], data, cut);
    run(4);
    drain_peer(sv[1]);
    send_all(sv[1], data + cut, size - cut);
    for (int i = 0; i < 8; i++) {
        run(2);
        drain_peer(sv[1]);
        answer_held();
    }
    for (px_conn_t *x = nw->conns; x; x = x->next)
        px_conn_abort(x);
    run(4);
    answer_held(); /* requests whose connection went: their answers free them */
    run(2);
    close(sv[1]);
    return 0;
}

/* PX_FUZZ_H2_STATS=1: say what the inputs reached (a corpus that never gets past
 * the preface would replay green and prove nothing). */
__attribute__((destructor)) static void stats(void)
{
    if (!srv || !getenv("PX_FUZZ_H2_STATS"))
        return;
    int streams = px_metric_register("plexus_http2_streams_total", "", PX_METRIC_COUNTER);
    int reqs = px_metric_register("plexus_http_requests_total", "", PX_METRIC_COUNTER);
    int ws = px_metric_register("plexus_ws_messages_received_total", "", PX_METRIC_COUNTER);
    fprintf(stderr, "h2 streams %lld, requests %lld, websocket messages %lld\n",
            (long long)px_metric_value(streams), (long long)px_metric_value(reqs),
            (long long)px_metric_value(ws));
}
