/* Unit tests for the HTTP/1.1 connection (src/http/http1.c) with the request
 * API on top (src/http/request.c).
 *
 * One worker's loop is driven by hand on the test thread (px__netw_start,
 * then px_loop_run_once), with an HTTP/1.1 connection made from one end of a
 * socketpair (px__conn_adopt) and the test holding the other end as the
 * client, so every state of docs/internals/http.md is reached
 * deterministically. Covered: a request and its head, pipelining (answers in
 * order), heads and bodies split across reads, chunked bodies, 100-continue
 * and 417, async answers (held pipelined requests) and aborts, streams
 * (chunked, close-delimited on 1.0, drain callback, discarded input, started
 * and ended inside the handler), HEAD, 413/431/408, keep-alive against close
 * and the request limit, output backpressure, Upgrade, and peer/worker. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "worker_by_hand.h"
#include "http/http_int.h"
#include "net/net_int.h"

static px_conn_t *conn; /* the server side of the pair; `peer` is the client side */

/* ---- what the handlers saw and hold ------------------------------------------------ */

static struct {
    int hello, echo, big, async, streams, drains, aborts, upgrades;
    int stream_start_ret;
    px_req_t *held;   /* an async request not answered yet */
    px_req_t *stream; /* an open stream */
    size_t big_len;
    px_worker_t *worker; /* what px_req_worker said */
    char peer[64];
} H;

static void hello(px_req_t *req, void *ud)
{
    (void)ud;
    H.hello++;
    px_respond(req, 200, "text/plain", "hello", 5);
}

static void echo(px_req_t *req, void *ud)
{
    (void)ud;
    H.echo++;
    px_str_t b = px_req_body(req);
    px_respond(req, 200, "application/octet-stream", b.ptr, b.len);
}

static void big(px_req_t *req, void *ud)
{
    (void)ud;
    H.big++;
    char *p = px_req_alloc(req, H.big_len);
    assert_non_null(p);
    memset(p, 'a' + H.big % 26, H.big_len);
    px_respond(req, 200, "text/plain", p, H.big_len);
}

static void on_abort(px_req_t *req, void *ud)
{
    (void)ud;
    assert_true(px_req_aborted(req));
    H.aborts++;
}

static void async_h(px_req_t *req, void *ud)
{
    (void)ud;
    H.async++;
    H.held = req;
    px_req_on_abort(req, on_abort, NULL);
}

static void on_drain(px_req_t *req, void *ud)
{
    (void)ud;
    assert_ptr_equal(req, H.stream);
    H.drains++;
}

static void stream_h(px_req_t *req, void *ud)
{
    (void)ud;
    H.streams++;
    H.stream_start_ret = px_stream_start(req, 200, "text/plain");
    if (H.stream_start_ret != 0)
        return;
    H.stream = req;
    px_req_on_abort(req, on_abort, NULL);
    px_stream_on_drain(req, on_drain, NULL);
    assert_int_equal(px_stream_write(req, "first", 5), 0);
}

/* A stream started, written and ended before the handler returns. */
static void stream_sync(px_req_t *req, void *ud)
{
    (void)ud;
    H.streams++;
    assert_int_equal(px_stream_start(req, 200, "text/plain"), 0);
    assert_int_equal(px_stream_write(req, "a", 1), 0);
    assert_int_equal(px_stream_write(req, "bc", 2), 0);
    assert_int_equal(px_stream_end(req), 0);
}

static void with_header(px_req_t *req, void *ud)
{
    (void)ud;
    assert_int_equal(px_res_header(req, "X-Test", "yes"), 0);
    assert_int_equal(px_res_header(req, "Bad", "a\r\nb"), -EINVAL);
    px_respond(req, 201, NULL, "made", 4);
    assert_int_equal(px_res_header(req, "X-Late", "1"), -EALREADY);
    assert_int_equal(px_respond(req, 200, NULL, "", 0), -EALREADY);
}

static void whoami(px_req_t *req, void *ud)
{
    (void)ud;
    H.worker = px_req_worker(req);
    assert_int_equal(px_req_peer(req, H.peer, sizeof H.peer), 0);
    px_respond(req, 200, "text/plain", H.peer, strlen(H.peer));
}

/* "upper": what an upgraded connection speaks (echoes upper-cased). */
static ssize_t upper_read(px_conn_t *c, char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (data[i] >= 'a' && data[i] <= 'z')
            data[i] = (char)(data[i] - 32);
    px_conn_write(c, data, len);
    return (ssize_t)len;
}

static const px_protocol_t upper_proto = {.name = "upper", .on_read = upper_read};

static void upgrade_h(px_req_t *req, void *ud)
{
    (void)ud;
    px_conn_t *c = NULL;
    assert_int_equal(px__req_upgrade(req, &upper_proto, NULL, &c), 0);
    assert_ptr_equal(c, conn);
    H.upgrades++;
    /* Answered now: a second switch or an answer is refused. */
    assert_int_equal(px__req_upgrade(req, &upper_proto, NULL, &c), -EINVAL);
    px_conn_write(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: upper\r\n\r\n", 52);
}

/* ---- set-up ---------------------------------------------------------------------------- */

static int setup_with(size_t output_cap, const px_http_opts_t *ho)
{
    memset(&H, 0, sizeof H);
    px_server_opts_t o;
    hand_opts(&o, output_cap);
    srv = px_server_new(&o);
    if (!srv)
        return -1;
    if (ho && px_http_configure(srv, ho) != 0)
        return -1;
    int r = px_route(srv, "GET", "/hello", hello, NULL);
    r |= px_route(srv, "POST", "/echo", echo, NULL);
    r |= px_route(srv, "GET", "/big", big, NULL);
    r |= px_route(srv, "GET", "/async", async_h, NULL);
    r |= px_route(srv, "GET", "/stream", stream_h, NULL);
    r |= px_route(srv, "GET", "/stream-sync", stream_sync, NULL);
    r |= px_route(srv, "GET", "/header", with_header, NULL);
    r |= px_route(srv, "GET", "/whoami", whoami, NULL);
    r |= px_route(srv, "GET", "/upgrade", upgrade_h, NULL);
    if (r)
        return -1;
    set_worker();
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return setup_with(0, NULL);
}

static void answer_held(void)
{
    if (H.held) {
        px_req_t *req = H.held;
        H.held = NULL;
        px_respond(req, 200, "text/plain", "late", 4);
    }
    if (H.stream) {
        px_req_t *req = H.stream;
        H.stream = NULL;
        px_stream_end(req);
    }
}

static int teardown(void **state)
{
    (void)state;
    worker_teardown(answer_held); /* frees what the closed connections left to their owners */
    conn = NULL;
    return 0;
}

static char rx[1 << 21];
static size_t nrx;
static int rx_eof;

/* An HTTP/1.1 connection on one end of a socketpair; the client on the other. */
static void start_worker(void)
{
    px__netw_start(nw);
}

static void pair(int small_buffers)
{
    nrx = 0;
    rx_eof = 0;
    conn = adopt_pair(start_worker, small_buffers);
}

/* Run the loop for `ms`, collecting what the server sends. */
static void pump(int ms)
{
    uint64_t end = px_now_ms() + (uint64_t)ms;
    do {
        px_loop_run_once(loop, 1);
        for (;;) {
            if (nrx == sizeof rx)
                break;
            ssize_t n = recv(peer, rx + nrx, sizeof rx - nrx, MSG_DONTWAIT);
            if (n > 0) {
                nrx += (size_t)n;
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                rx_eof = 1;
            break;
        }
    } while (px_now_ms() < end && !rx_eof);
}

typedef struct resp {
    int status;
    char head[4096];
    char body[1 << 17];
    size_t body_len;
} resp_t;

static resp_t R; /* the last response read */

/* Value of header `name` in a response head, or NULL (NUL-terminated copy). */
static const char *header(const resp_t *r, const char *name)
{
    static char v[256];
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *s = p + nl + 1;
            while (*s == ' ')
                s++;
            const char *e = strstr(s, "\r\n");
            size_t n = (size_t)(e - s) < sizeof v - 1 ? (size_t)(e - s) : sizeof v - 1;
            memcpy(v, s, n);
            v[n] = '\0';
            return v;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* One complete response at the start of rx (consumed), or 0. `no_body`: the
 * answer to a HEAD. Bodies: Content-Length, chunked, or up to EOF. */
static int parse_response(resp_t *r, int no_body)
{
    char *end = memmem(rx, nrx, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hl = (size_t)(end - rx) + 4;
    assert_true(hl < sizeof r->head);
    memcpy(r->head, rx, hl);
    r->head[hl] = '\0';
    int minor;
    assert_int_equal(sscanf(r->head, "HTTP/1.%d %d", &minor, &r->status), 2);
    r->body_len = 0;
    const char *cl = header(r, "Content-Length");
    const char *te = header(r, "Transfer-Encoding");
    size_t used = hl;
    if (no_body || r->status < 200 || r->status == 204 || r->status == 304) {
        /* no body */
    } else if (cl) {
        size_t n = strtoull(cl, NULL, 10);
        if (nrx < hl + n)
            return 0;
        assert_true(n <= sizeof r->body);
        memcpy(r->body, rx + hl, n);
        r->body_len = n;
        used += n;
    } else if (te && strcmp(te, "chunked") == 0) {
        for (;;) {
            char *crlf = memmem(rx + used, nrx - used, "\r\n", 2);
            if (!crlf)
                return 0;
            size_t sz = strtoull(rx + used, NULL, 16);
            size_t data = (size_t)(crlf - rx) + 2;
            if (nrx < data + sz + 2)
                return 0;
            assert_memory_equal(rx + data + sz, "\r\n", 2);
            used = data + sz + 2;
            if (sz == 0)
                break;
            assert_true(r->body_len + sz <= sizeof r->body);
            memcpy(r->body + r->body_len, rx + data, sz);
            r->body_len += sz;
        }
    } else {
        if (!rx_eof)
            return 0;
        size_t n = nrx - hl;
        assert_true(n <= sizeof r->body);
        memcpy(r->body, rx + hl, n);
        r->body_len = n;
        used = nrx;
    }
    r->body[r->body_len] = '\0';
    memmove(rx, rx + used, nrx - used);
    nrx -= used;
    return 1;
}

static void read_response(int no_body)
{
    uint64_t end = px_now_ms() + 3000;
    while (!parse_response(&R, no_body)) {
        assert_true(px_now_ms() < end);
        pump(2);
    }
}

static void expect(int status, const char *body)
{
    read_response(0);
    assert_int_equal(R.status, status);
    if (body) {
        assert_int_equal(R.body_len, strlen(body));
        assert_memory_equal(R.body, body, R.body_len);
    }
}

/* The server closed the connection, after everything it sent was read. */
static void expect_closed(void)
{
    uint64_t end = px_now_ms() + 3000;
    while (!rx_eof && px_now_ms() < end)
        pump(2);
    assert_true(rx_eof);
    assert_int_equal(nrx, 0);
}

/* Nothing more arrives for a while. */
static void expect_nothing(void)
{
    pump(30);
    assert_int_equal(nrx, 0);
    assert_false(rx_eof);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* ---- tests ----------------------------------------------------------------------------- */

static void test_one_request(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/hello"));
    expect(200, "hello");
    assert_memory_equal(R.head, "HTTP/1.1 200 OK\r\n", 17);
    assert_string_equal(header(&R, "Server"), "plexus");
    assert_string_equal(header(&R, "Content-Type"), "text/plain");
    assert_string_equal(header(&R, "Content-Length"), "5");
    assert_non_null(header(&R, "Date"));
    assert_null(header(&R, "Connection"));
    /* User headers, an answer without a type, no second answer. */
    send_str(peer, GET("/header"));
    expect(201, "made");
    assert_string_equal(header(&R, "X-Test"), "yes");
    assert_null(header(&R, "Content-Type"));
    /* Not found, and the connection still serves. */
    send_str(peer, GET("/nothing"));
    expect(404, NULL);
    assert_non_null(strstr(R.body, "\"error\":\"not_found\""));
    send_str(peer, GET("/hello"));
    expect(200, "hello");
    assert_int_equal(H.hello, 2);
}

static void test_pipelining(void **state)
{
    (void)state;
    pair(0);
    /* Four requests in one read: answered in order, one writev. */
    send_str(peer,
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none"
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntwo" GET(
                 "/hello") "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthree");
    expect(200, "one");
    expect(200, "two");
    expect(200, "hello");
    expect(200, "three");
    expect_nothing();
}

static void test_split_reads(void **state)
{
    (void)state;
    pair(0);
    /* A head in three pieces. */
    send_str(peer, "GET /hel");
    pump(10);
    send_str(peer, "lo HTTP/1.1\r\nHo");
    pump(10);
    assert_int_equal(H.hello, 0);
    send_str(peer, "st: t\r\n\r\n");
    expect(200, "hello");
    /* A body after its head, in two pieces, then the next request with the last one. */
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
    pump(10);
    assert_int_equal(H.echo, 0);
    send_str(peer, "56789" GET("/hello"));
    expect(200, "0123456789");
    expect(200, "hello");
}

static void test_chunked_body(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    pump(10);
    send_str(peer, "lo\r\n6\r\n world\r\n");
    pump(10);
    assert_int_equal(H.echo, 0);
    send_str(peer, "0\r\n\r\n" GET("/hello"));
    expect(200, "hello world");
    expect(200, "hello");
    /* A bad chunk size is a 400, and the connection closes. */
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    expect(400, NULL);
    expect_closed();
}

static void test_expect_continue(void **state)
{
    (void)state;
    pair(0);
    send_str(peer,
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    read_response(0);
    assert_int_equal(R.status, 100);
    assert_int_equal(H.echo, 0);
    send_str(peer, "abc");
    expect(200, "abc");
    /* Any other expectation: 417 at once, the body never read, then close. */
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: x\r\n\r\n");
    expect(417, NULL);
    assert_string_equal(header(&R, "Connection"), "close");
    expect_closed();
    assert_int_equal(H.echo, 1);
}

static void test_async(void **state)
{
    (void)state;
    pair(0);
    /* The async answer holds the pipelined request behind it. */
    send_str(peer, GET("/async") GET("/hello"));
    pump(20);
    assert_int_equal(H.async, 1);
    assert_non_null(H.held);
    assert_int_equal(H.hello, 0);
    assert_int_equal(nrx, 0);
    /* The head outlives the read: it was copied. */
    assert_memory_equal(px_req_path(H.held).ptr, "/async", 6);
    px_req_t *req = H.held;
    H.held = NULL;
    assert_int_equal(px_respond(req, 200, "text/plain", "later", 5), 0);
    expect(200, "later");
    expect(200, "hello");
    assert_int_equal(H.hello, 1);
    assert_int_equal(H.aborts, 0);
}

static void test_async_abort(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/async"));
    pump(20);
    assert_non_null(H.held);
    /* The connection goes (reads are paused while a request is held, so a
     * client's EOF is seen once it is answered; a server-side close is seen
     * at once). */
    px_conn_abort(conn);
    for (int i = 0; i < 20 && !H.aborts; i++)
        px_loop_run_once(loop, 5);
    assert_int_equal(H.aborts, 1);
    assert_true(px_req_aborted(H.held));
    /* The connection is gone; the owner still answers, which frees it. */
    px_req_t *req = H.held;
    H.held = NULL;
    assert_int_equal(px_respond(req, 200, NULL, "x", 1), -EPIPE);
}

static void test_req_abort(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/stream"));
    read_response(1); /* the head only */
    assert_string_equal(header(&R, "Transfer-Encoding"), "chunked");
    px_req_abort(H.stream);
    for (int i = 0; i < 20 && !H.aborts; i++)
        px_loop_run_once(loop, 5);
    assert_int_equal(H.aborts, 1);
    assert_int_equal(px_stream_write(H.stream, "x", 1), -EPIPE);
    assert_int_equal(px_stream_pending(H.stream), 0);
    px_req_t *req = H.stream;
    H.stream = NULL;
    assert_int_equal(px_stream_end(req), 0);
    /* The client sees the stream cut: no last chunk, the connection gone. */
    pump(20);
    assert_true(rx_eof);
    assert_null(memmem(rx, nrx, "0\r\n\r\n", 5));
}

static void test_stream(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/stream"));
    read_response(1);
    assert_int_equal(R.status, 200);
    assert_string_equal(header(&R, "Transfer-Encoding"), "chunked");
    assert_string_equal(header(&R, "Cache-Control"), "no-cache");
    assert_null(header(&R, "Content-Length"));
    pump(20);
    assert_int_equal(nrx, 10);
    assert_memory_equal(rx, "5\r\nfirst\r\n", 10);
    assert_true(H.drains >= 1); /* written out: produce more */
    nrx = 0;
    int drains = H.drains;
    assert_int_equal(px_stream_write(H.stream, "more", 4), 0);
    assert_int_equal(px_stream_write(H.stream, "", 0), 0);
    pump(20);
    assert_int_equal(nrx, 9);
    assert_memory_equal(rx, "4\r\nmore\r\n", 9);
    assert_int_equal(H.drains, drains + 1);
    nrx = 0;
    px_req_t *req = H.stream;
    H.stream = NULL;
    assert_int_equal(px_stream_end(req), 0);
    pump(20);
    assert_int_equal(nrx, 5);
    assert_memory_equal(rx, "0\r\n\r\n", 5);
    nrx = 0;
    /* A chunked stream keeps the connection. */
    send_str(peer, GET("/hello"));
    expect(200, "hello");
    assert_int_equal(H.aborts, 0);
}

static void test_stream_http10(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, "GET /stream HTTP/1.0\r\n\r\n");
    pump(20);
    assert_non_null(memmem(rx, nrx, "\r\n\r\nfirst", 9));
    assert_null(memmem(rx, nrx, "Transfer-Encoding", 17));
    assert_non_null(memmem(rx, nrx, "Connection: close\r\n", 19));
    px_req_t *req = H.stream;
    H.stream = NULL;
    assert_int_equal(px_stream_write(req, "-more", 5), 0);
    assert_int_equal(px_stream_end(req), 0);
    /* Close-delimited: the end of the stream is the end of the connection. */
    read_response(0);
    assert_int_equal(R.body_len, 10);
    assert_memory_equal(R.body, "first-more", 10);
    assert_true(rx_eof);
}

static void test_stream_discards(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/stream"));
    read_response(1);
    /* Bytes sent during a stream are dropped: after it the connection closes. */
    send_str(peer, GET("/hello"));
    pump(20);
    assert_int_equal(H.hello, 0);
    px_req_t *req = H.stream;
    H.stream = NULL;
    px_stream_end(req);
    pump(20);
    assert_non_null(memmem(rx, nrx, "0\r\n\r\n", 5));
    nrx = 0;
    expect_closed();
    assert_int_equal(H.hello, 0);
}

static void test_stream_in_handler(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/stream-sync") GET("/hello"));
    expect(200, "abc");
    assert_string_equal(header(&R, "Transfer-Encoding"), "chunked");
    expect(200, "hello");
    send_str(peer, GET("/hello"));
    expect(200, "hello");
}

static void test_head(void **state)
{
    (void)state;
    pair(0);
    /* HEAD falls back to GET: the head, Content-Length of the body, no body. */
    send_str(peer, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" GET("/hello"));
    read_response(1);
    assert_int_equal(R.status, 200);
    assert_string_equal(header(&R, "Content-Length"), "5");
    expect(200, "hello");
    /* HEAD on a stream: the head a GET would get, and the request is over. */
    send_str(peer, "HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n" GET("/hello"));
    read_response(1);
    assert_int_equal(H.stream_start_ret, 1);
    assert_null(H.stream);
    assert_string_equal(header(&R, "Transfer-Encoding"), "chunked");
    expect(200, "hello");
    expect_nothing();
}

static void test_too_large_body(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\nabc");
    expect(413, NULL);
    assert_non_null(strstr(R.body, "payload_too_large"));
    assert_string_equal(header(&R, "Connection"), "close");
    expect_closed();
    assert_int_equal(H.echo, 0);
}

static void test_chunked_too_large(void **state)
{
    (void)state;
    px_http_opts_t o;
    px_http_opts_init(&o);
    o.max_body = 8;
    teardown(state);
    assert_int_equal(setup_with(0, &o), 0);
    pair(0);
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
    expect(413, NULL);
    expect_closed();
    assert_int_equal(H.echo, 0);
}

static void test_too_large_head(void **state)
{
    (void)state;
    pair(0);
    static char req[20000];
    int n = snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'x', sizeof req - (size_t)n - 5);
    memcpy(req + sizeof req - 5, "\r\n\r\n", 5);
    send_str(peer, req);
    expect(431, NULL);
    assert_non_null(strstr(R.body, "headers_too_large"));
    expect_closed();
    assert_int_equal(H.hello, 0);
}

static void test_timeouts(void **state)
{
    px_http_opts_t o;
    px_http_opts_init(&o);
    o.header_timeout_ms = 100;
    o.keepalive_timeout_ms = 150;
    teardown(state);
    assert_int_equal(setup_with(0, &o), 0);
    pair(0);
    /* Idle between requests: closed without an answer. */
    send_str(peer, GET("/hello"));
    expect(200, "hello");
    expect_closed();
    close(peer);
    peer = -1;
    /* A head that does not complete in time: 408. */
    pair(0);
    send_str(peer, "GET /hello HTTP/1.1\r\nHost");
    uint64_t t0 = px_now_ms();
    expect(408, NULL);
    assert_true(px_now_ms() - t0 >= 80);
    assert_non_null(strstr(R.body, "request_timeout"));
    expect_closed();
    close(peer);
    peer = -1;
    /* A body that does not complete in time: 408 too. */
    pair(0);
    send_str(peer, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    expect(408, NULL);
    expect_closed();
    assert_int_equal(H.echo, 0);
}

static void test_keepalive(void **state)
{
    (void)state;
    pair(0);
    /* HTTP/1.0 asking to keep alive: said so, and kept. */
    send_str(peer, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect(200, "hello");
    assert_string_equal(header(&R, "Connection"), "keep-alive");
    expect_nothing();
    /* HTTP/1.1 with Connection: close: answered, then closed. */
    send_str(peer, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" GET("/hello"));
    expect(200, "hello");
    assert_string_equal(header(&R, "Connection"), "close");
    expect_closed();
    assert_int_equal(H.hello, 2);
    close(peer);
    peer = -1;
    /* HTTP/1.0 by default: close. */
    pair(0);
    send_str(peer, "GET /hello HTTP/1.0\r\n\r\n");
    expect(200, "hello");
    assert_string_equal(header(&R, "Connection"), "close");
    expect_closed();
}

static void test_max_requests(void **state)
{
    px_http_opts_t o;
    px_http_opts_init(&o);
    o.max_requests = 2;
    teardown(state);
    assert_int_equal(setup_with(0, &o), 0);
    pair(0);
    send_str(peer, GET("/hello") GET("/hello") GET("/hello"));
    expect(200, "hello");
    assert_null(header(&R, "Connection"));
    expect(200, "hello");
    assert_string_equal(header(&R, "Connection"), "close");
    expect_closed();
    assert_int_equal(H.hello, 2);
}

static void test_backpressure(void **state)
{
    teardown(state);
    assert_int_equal(setup_with(64 * 1024, NULL), 0);
    H.big_len = 48 * 1024;
    pair(1);
    /* 20 answers of 48 KiB asked at once, and the client reads nothing: once the
     * answers waiting use up the 64 KiB budget, no further request is read. */
    char reqs[20 * 64];
    size_t n = 0;
    for (int i = 0; i < 20; i++) {
        memcpy(reqs + n, GET("/big"), strlen(GET("/big")));
        n += strlen(GET("/big"));
    }
    reqs[n] = '\0';
    send_str(peer, reqs);
    for (int i = 0; i < 50; i++)
        px_loop_run_once(loop, 2);
    assert_true(H.big >= 1);
    assert_true(H.big <= 3);
    /* Each answer is queued whole: the backlog is the budget plus one answer. */
    assert_true(px_conn_pending(conn) <= 64 * 1024 + H.big_len + 1024);
    /* Reading lets the rest through, in order, whole. */
    for (int i = 0; i < 20; i++) {
        read_response(0);
        assert_int_equal(R.status, 200);
        assert_int_equal(R.body_len, H.big_len);
        assert_int_equal(R.body[0], 'a' + (i + 1) % 26);
        assert_int_equal(R.body[R.body_len - 1], 'a' + (i + 1) % 26);
    }
    assert_int_equal(H.big, 20);
    expect_nothing();
}

static void test_upgrade(void **state)
{
    (void)state;
    pair(0);
    /* The bytes after the head go to the new protocol, in the same read. */
    send_str(peer,
             "GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: upper\r\n\r\n"
             "hello");
    read_response(1);
    assert_int_equal(R.status, 101);
    pump(20);
    assert_int_equal(nrx, 5);
    assert_memory_equal(rx, "HELLO", 5);
    assert_int_equal(H.upgrades, 1);
}

static void test_peer_worker(void **state)
{
    (void)state;
    pair(0);
    send_str(peer, GET("/whoami"));
    read_response(0);
    assert_int_equal(R.status, 200);
    char name[64] = "";
    assert_int_equal(px_conn_peer_name(conn, name, sizeof name), 0);
    assert_string_equal(R.body, name);
    assert_ptr_equal(H.worker, nw->worker);
    assert_ptr_equal(px_worker_loop(H.worker), loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_req_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_discards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_in_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_worker, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
