/* Outbound HTTP (src/http/fetch.c, plexus/fetch.h) against a local HTTP server: a plexus
 * server in this process with a few routes (hello, echo, big, slow, status). The client
 * side runs a loop on the test thread (px_fetch_client_*) or on the server's own workers
 * (px_fetch). Covered: GET and POST with headers and a body, response headers, HTTP error
 * codes, the response-size bound, the timeout, refused connections, bad schemes, many
 * requests at once, cancel (no callback), px_fetch from a worker and its clients freed with
 * the server (with a kept-alive connection). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "plexus/fetch.h"
#include "plexus/http.h"

static px_server_t *srv;
static char base[64];
static px_loop_t *loop;
static px_fetch_client_t *cli;

/* ---- the server ------------------------------------------------------------------------ */

static void h_hello(px_req_t *req, void *ud)
{
    (void)ud;
    px_res_header(req, "X-Test", "yes");
    px_respond(req, 200, "text/plain", "hi", 2);
}

static void h_echo(px_req_t *req, void *ud)
{
    (void)ud;
    px_str_t b = px_req_body(req);
    px_str_t ct = px_req_header(req, "x-mine");
    char hv[64];
    snprintf(hv, sizeof hv, "%.*s", (int)ct.len, ct.ptr ? ct.ptr : "");
    px_res_header(req, "X-Mine-Was", hv);
    px_str_t m = px_req_method(req);
    char mv[16];
    snprintf(mv, sizeof mv, "%.*s", (int)m.len, m.ptr);
    px_res_header(req, "X-Method", mv);
    px_respond(req, 200, "application/octet-stream", b.ptr, b.len);
}

static void h_big(px_req_t *req, void *ud)
{
    (void)ud;
    size_t n = 2u << 20;
    char *p = malloc(n);
    memset(p, 'x', n);
    px_respond(req, 200, "text/plain", p, n);
    free(p);
}

static void h_status(px_req_t *req, void *ud)
{
    (void)ud;
    px_respond_error(req, 418, "teapot", "short and stout");
}

/* Answered 1.5 s later (after the client's timeout), from a timer on the worker. */
typedef struct slow {
    px_timer_t t;
    px_req_t *req;
} slow_t;

static void slow_fire(px_timer_t *t)
{
    slow_t *s = t->data;
    px_respond(s->req, 200, "text/plain", "late", 4);
    free(s);
}

static void h_slow(px_req_t *req, void *ud)
{
    (void)ud;
    slow_t *s = calloc(1, sizeof *s);
    s->req = req;
    px_timer_init(&s->t, slow_fire, s);
    px_timer_start(px_worker_loop(px_req_worker(req)), &s->t, 1500);
}

static int setup(void **state)
{
    (void)state;
    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 2;
    o.shutdown_timeout_ms = 3000;
    srv = px_server_new(&o);
    assert_non_null(srv);
    assert_int_equal(px_server_listen(srv, "127.0.0.1:0"), 0);
    assert_int_equal(px_route(srv, "GET", "/hello", h_hello, NULL), 0);
    assert_int_equal(px_route(srv, "*", "/echo", h_echo, NULL), 0);
    assert_int_equal(px_route(srv, "GET", "/big", h_big, NULL), 0);
    assert_int_equal(px_route(srv, "GET", "/status", h_status, NULL), 0);
    assert_int_equal(px_route(srv, "GET", "/slow", h_slow, NULL), 0);
    assert_int_equal(px_fetch_enable(srv), 0);
    assert_int_equal(px_server_start(srv), 0);
    snprintf(base, sizeof base, "http://%s", px_server_listener_name(srv, 0));
    loop = px_loop_new();
    cli = px_fetch_client_new(loop);
    assert_non_null(cli);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    px_fetch_client_free(cli);
    px_loop_free(loop);
    px_server_shutdown(srv);
    px_server_wait(srv);
    px_server_free(srv);
    return 0;
}

/* ---- the client -------------------------------------------------------------------------- */

typedef struct got {
    int done, status, http_status;
    char body[256];
    size_t body_len;
    char hdr[64], hdr2[64];
    const char *hname, *hname2;
    char error[256];
} got_t;

static void on_done(const px_fetch_res_t *res, void *ud)
{
    got_t *g = ud;
    g->done++;
    g->status = res->status;
    g->http_status = res->http_status;
    g->body_len = res->body.len;
    snprintf(g->body, sizeof g->body, "%.*s", (int)(res->body.len < 200 ? res->body.len : 200),
             res->body.ptr ? res->body.ptr : "");
    snprintf(g->error, sizeof g->error, "%s", res->error);
    if (g->hname) {
        px_str_t v = px_fetch_res_header(res, g->hname);
        snprintf(g->hdr, sizeof g->hdr, "%.*s", (int)v.len, v.ptr ? v.ptr : "");
    }
    if (g->hname2) {
        px_str_t v = px_fetch_res_header(res, g->hname2);
        snprintf(g->hdr2, sizeof g->hdr2, "%.*s", (int)v.len, v.ptr ? v.ptr : "");
    }
}

static void run_until(volatile int *flag, int want, int ms)
{
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (*flag < want && px_now_ms() < end)
        px_loop_run_once(loop, 10);
}

static void fetch(const px_fetch_req_t *r, got_t *g)
{
    assert_int_equal(px_fetch_client_start(cli, r, on_done, g, NULL), 0);
    assert_int_equal(g->done, 0); /* never from inside the call */
    run_until(&g->done, 1, 10000);
    assert_int_equal(g->done, 1);
}

static void url(char *out, size_t n, const char *path)
{
    snprintf(out, n, "%s%s", base, path);
}

static void test_get(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/hello");
    got_t g = {.hname = "x-test", .hname2 = "Content-Type"};
    fetch(&(px_fetch_req_t){.url = u}, &g);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.http_status, 200);
    assert_string_equal(g.body, "hi");
    assert_string_equal(g.hdr, "yes");
    assert_string_equal(g.hdr2, "text/plain");
    assert_int_equal(px_fetch_client_pending(cli), 0);
}

static void test_post_headers_body(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/echo");
    const char *hdrs[] = {"X-Mine: 42", "Content-Type: application/json", NULL};
    /* Over 1 KiB: curl would wait for "100 Continue" without the empty Expect header. */
    static char body[3000];
    memset(body, 'b', sizeof body);
    memcpy(body, "{\"a\":", 5);
    got_t g = {.hname = "x-mine-was", .hname2 = "x-method"};
    uint64_t t0 = px_now_ms();
    fetch(
        &(px_fetch_req_t){
            .method = "POST", .url = u, .headers = hdrs, .body = body, .body_len = sizeof body},
        &g);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.http_status, 200);
    assert_int_equal(g.body_len, sizeof body);
    assert_memory_equal(g.body, "{\"a\":bbb", 8);
    assert_string_equal(g.hdr, "42");
    assert_string_equal(g.hdr2, "POST");
    assert_true(px_now_ms() - t0 < 900);

    got_t p = {.hname2 = "x-method"};
    fetch(&(px_fetch_req_t){.method = "PUT", .url = u, .body = "x", .body_len = 1}, &p);
    assert_int_equal(p.http_status, 200);
    assert_string_equal(p.hdr2, "PUT");
    assert_string_equal(p.body, "x");
}

static void test_http_error_is_a_response(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/status");
    got_t g = {0};
    fetch(&(px_fetch_req_t){.url = u}, &g);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.http_status, 418);
    assert_non_null(strstr(g.body, "teapot"));
    url(u, sizeof u, "/nowhere");
    got_t n = {0};
    fetch(&(px_fetch_req_t){.url = u}, &n);
    assert_int_equal(n.http_status, 404);
}

static void test_response_bound(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/big");
    got_t g = {0};
    fetch(&(px_fetch_req_t){.url = u}, &g);
    assert_int_equal(g.status, -EMSGSIZE);
    assert_int_equal(g.http_status, 0);
    assert_true(g.error[0] != '\0');
    got_t ok = {0};
    fetch(&(px_fetch_req_t){.url = u, .max_response = 4u << 20}, &ok);
    assert_int_equal(ok.status, 0);
    assert_int_equal(ok.body_len, 2u << 20);
}

static void test_timeout(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, "/slow");
    got_t g = {0};
    uint64_t t0 = px_now_ms();
    fetch(&(px_fetch_req_t){.url = u, .timeout_ms = 300}, &g);
    uint64_t took = px_now_ms() - t0;
    assert_int_equal(g.status, -ETIMEDOUT);
    assert_true(took >= 250 && took < 1400);
}

/* A port nobody listens on (bound, never listening), a bad scheme, a bad URL. */
static void test_failures(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    got_t g = {0};
    fetch(&(px_fetch_req_t){.url = u}, &g);
    close(fd);
    assert_int_equal(g.status, -ECONNREFUSED);

    got_t f = {0};
    fetch(&(px_fetch_req_t){.url = "ftp://127.0.0.1/x"}, &f);
    assert_int_equal(f.status, -EPROTO);
    got_t b = {0};
    fetch(&(px_fetch_req_t){.url = "http://[::1"}, &b);
    assert_int_equal(b.status, -EPROTO);
    assert_int_equal(px_fetch_client_start(cli, &(px_fetch_req_t){.url = NULL}, on_done, &b, NULL),
                     -EINVAL);
}

static void test_many_and_cancel(void **state)
{
    (void)state;
    enum { N = 200 };
    static got_t gs[N];
    memset(gs, 0, sizeof gs);
    volatile int total = 0;
    char u[128];
    url(u, sizeof u, "/hello");
    px_fetch_t *handles[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(
            px_fetch_client_start(cli, &(px_fetch_req_t){.url = u}, on_done, &gs[i], &handles[i]),
            0);
    assert_int_equal(px_fetch_client_pending(cli), N);
    for (int i = 0; i < N; i += 10)
        px_fetch_cancel(handles[i]); /* every tenth: no callback */
    assert_int_equal(px_fetch_client_pending(cli), N - N / 10);
    uint64_t end = px_now_ms() + 20000;
    while (px_fetch_client_pending(cli) && px_now_ms() < end)
        px_loop_run_once(loop, 10);
    for (int i = 0; i < N; i++) {
        total += gs[i].done;
        if (i % 10 == 0)
            assert_int_equal(gs[i].done, 0);
        else
            assert_int_equal(gs[i].http_status, 200);
    }
    assert_int_equal(total, N - N / 10);
}

/* px_fetch on a worker of the server (here: to the server itself). */
typedef struct wjob {
    px_msg_t msg;
    got_t g;
    volatile int rc, done;
    char url[128];
} wjob_t;

static void w_done(const px_fetch_res_t *res, void *ud)
{
    wjob_t *j = ud;
    on_done(res, &j->g);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
}

static void w_run(px_worker_t *w, px_msg_t *m)
{
    (void)w;
    wjob_t *j = (wjob_t *)m;
    j->rc = px_fetch(srv, &(px_fetch_req_t){.url = j->url}, w_done, j, NULL);
    if (j->rc)
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
}

static void test_px_fetch_on_worker(void **state)
{
    (void)state;
    /* Not on a worker: refused. */
    got_t g = {0};
    assert_int_equal(px_fetch(srv, &(px_fetch_req_t){.url = base}, on_done, &g, NULL), -EPERM);
    static wjob_t j;
    memset(&j, 0, sizeof j);
    j.g.hname = "x-test";
    url(j.url, sizeof j.url, "/hello");
    j.msg.cb = w_run;
    px_worker_post(px_workers_get(px_server_workers(srv), 1), &j.msg);
    for (int i = 0; i < 1000 && !__atomic_load_n(&j.done, __ATOMIC_ACQUIRE); i++)
        usleep(10000);
    assert_int_equal(j.rc, 0);
    assert_int_equal(j.g.http_status, 200);
    assert_string_equal(j.g.hdr, "yes");
    /* The worker's client keeps the connection alive; it is freed with the server. */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_get),
        T(test_post_headers_body),
        T(test_http_error_is_a_response),
        T(test_response_bound),
        T(test_timeout),
        T(test_failures),
        T(test_many_and_cancel),
        T(test_px_fetch_on_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
