/* Unit tests for the router (src/http/router.c) and for the request API
 * (src/http/request.c) over a fake owner: requests here have no connection and
 * no socket, only a conn-ops table that records what a protocol would send.
 * That the router, the response API, streams and static files run on it
 * unchanged is what lets an HTTP/2 stream own requests too.
 *
 * Router: literals (raw bytes, trailing slash), :params (decoded, never empty),
 * the final * (the rest of the path, not the bare prefix), 405 with Allow,
 * HEAD -> GET, CONNECT (501 without a CONNECT route), "*" methods,
 * registration order, bad patterns, query decoding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "http/http_int.h"

static px_server_t *srv;
static px__http_t *http;

/* ---- a fake owner: records the response ---------------------------------------------- */

typedef struct fake {
    px_req_t req;
    px__http_header_t hdrs[8];
    int heads, status;
    int64_t clen;
    char ctype[64];
    char res_headers[512]; /* "name: value\n" each */
    char out[8192];        /* body bytes, as they would be framed by nobody */
    size_t nout;
    size_t room; /* stream budget left (0: unlimited) */
    int stream_head, ends, dones, aborts, files;
} fake_t;

static fake_t F;

static int fake_head(px_req_t *req, int status, const char *ctype, int64_t clen, const void *body,
                     size_t blen)
{
    fake_t *f = req->owner;
    f->heads++;
    f->status = status;
    f->clen = clen;
    f->stream_head = clen == PX__CLEN_STREAM && req->streaming;
    snprintf(f->ctype, sizeof f->ctype, "%s", ctype ? ctype : "");
    size_t n = 0;
    for (px__res_header_t *rh = req->res_headers; rh; rh = rh->next)
        n += (size_t)snprintf(f->res_headers + n, sizeof f->res_headers - n, "%.*s: %.*s\n",
                              (int)rh->name.len, rh->name.ptr, (int)rh->value.len, rh->value.ptr);
    assert_true(blen <= sizeof f->out);
    if (blen)
        memcpy(f->out, body, blen);
    f->nout = blen;
    req->res_bytes = blen;
    return 0;
}

static int fake_body(px_req_t *req, const void *p, px_slice_t *sl, size_t off, size_t len)
{
    fake_t *f = req->owner;
    if (req->streaming && f->room) {
        if (len > f->room)
            return -ENOBUFS;
        f->room -= len;
    }
    assert_true(f->nout + len <= sizeof f->out);
    memcpy(f->out + f->nout, sl ? (const char *)sl->data + off : p, len);
    f->nout += len;
    return 0;
}

static int fake_file(px_req_t *req, int fd, uint64_t off, uint64_t len)
{
    fake_t *f = req->owner;
    f->files++;
    assert_true(f->nout + len <= sizeof f->out);
    assert_int_equal(pread(fd, f->out + f->nout, len, (off_t)off), (ssize_t)len);
    f->nout += len;
    close(fd);
    return 0;
}

static void fake_end(px_req_t *req)
{
    ((fake_t *)req->owner)->ends++;
}

static void fake_done(px_req_t *req)
{
    assert_true(req->finished);
    ((fake_t *)req->owner)->dones++;
}

static void fake_abort(px_req_t *req)
{
    ((fake_t *)req->owner)->aborts++;
}

static size_t fake_pending(const px_req_t *req)
{
    return ((const fake_t *)req->owner)->nout;
}

static int fake_peer(const px_req_t *req, char *buf, size_t len)
{
    (void)req;
    snprintf(buf, len, "fake");
    return 0;
}

static const px__req_ops_t fake_ops = {
    .http_major = 2,
    .head = fake_head,
    .body = fake_body,
    .file = fake_file,
    .end = fake_end,
    .done = fake_done,
    .abort = fake_abort,
    .pending = fake_pending,
    .peer = fake_peer,
    .upgrade = NULL, /* like an HTTP/2 stream */
};

static px_str_t S(const char *s)
{
    return (px_str_t){s, strlen(s)};
}

/* A request as an owner would build it (its memory is the test's: detached).
 * Header arguments: name, value pairs, then NULL. */
static px_req_t *fake_request(const char *method, const char *target, ...)
{
    px__req_dispose(&F.req);
    memset(&F, 0, sizeof F);
    px__req_init(&F.req, &fake_ops, &F, http, &http->workers[0]);
    px__http1_request_t *h = &F.req.h;
    h->method = S(method);
    h->target = S(target);
    const char *q = strchr(target, '?');
    if (target[0] == '/') {
        h->path = (px_str_t){target, q ? (size_t)(q - target) : strlen(target)};
        h->query = q ? S(q + 1) : (px_str_t){NULL, 0};
    }
    h->minor_version = 1;
    h->keep_alive = 1;
    h->content_length = -1;
    h->is_head = strcmp(method, "HEAD") == 0;
    h->headers = F.hdrs;
    va_list ap;
    va_start(ap, target);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        F.hdrs[h->num_headers].name = S(name);
        F.hdrs[h->num_headers].value = S(va_arg(ap, const char *));
        h->num_headers++;
    }
    va_end(ap);
    F.req.detached = 1;
    return &F.req;
}

/* Run the request's handler as an owner does; an unfinished request becomes async. */
static void run(px_req_t *req)
{
    px__req_run(req);
    if (!req->finished && !req->upgraded)
        req->async = 1;
}

static void run_expect(const char *method, const char *target, int status)
{
    run(fake_request(method, target, NULL));
    assert_true(F.req.finished);
    assert_int_equal(F.status, status);
}

/* ---- handlers -------------------------------------------------------------------------- */

static char last[256]; /* which handler ran, and what it saw */

static void named(px_req_t *req, void *ud)
{
    size_t n = (size_t)snprintf(last, sizeof last, "%s", (const char *)ud);
    for (unsigned i = 0; i < req->nparams; i++)
        n += (size_t)snprintf(last + n, sizeof last - n, " %.*s=%.*s", (int)req->param_names[i].len,
                              req->param_names[i].ptr, (int)req->param_values[i].len,
                              req->param_values[i].ptr);
    px_respond(req, 200, "text/plain", last, strlen(last));
}

static px_req_t *held;

static void hold(px_req_t *req, void *ud)
{
    (void)ud;
    held = req;
}

static int gone_calls;

static void gone(px_req_t *req, void *ud)
{
    (void)ud;
    assert_true(px_req_aborted(req));
    gone_calls++;
}

static void streamer(px_req_t *req, void *ud)
{
    (void)ud;
    int r = px_stream_start(req, 200, "text/event-stream");
    if (r != 0)
        return;
    held = req;
    px_req_on_abort(req, gone, NULL);
    assert_int_equal(px_stream_write(req, "data: 1\n\n", 9), 0);
}

static void bad_status(px_req_t *req, void *ud)
{
    (void)ud;
    px_respond(req, 42, "text/plain", "oops", 4);
}

static void json(px_req_t *req, void *ud)
{
    (void)ud;
    px_res_header(req, "X-One", "1");
    px_respond(req, 200, "application/json", "{}", 2);
}

static int setup(void **state)
{
    (void)state;
    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 1;
    srv = px_server_new(&o);
    if (!srv)
        return -1;
    http = px__http_get(srv);
    memset(&F, 0, sizeof F);
    held = NULL;
    gone_calls = 0;
    last[0] = '\0';
    return http ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    px__req_dispose(&F.req);
    memset(&F, 0, sizeof F);
    px_server_free(srv);
    srv = NULL;
    return 0;
}

/* ---- router ------------------------------------------------------------------------------ */

static void test_literals(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/", named, "root"), 0);
    assert_int_equal(px_route(srv, "GET", "/a", named, "a"), 0);
    assert_int_equal(px_route(srv, "GET", "/a/b", named, "ab"), 0);
    assert_int_equal(px_route(srv, "GET", "/a/b/", named, "ab/"), 0);
    assert_int_equal(px_route(srv, "GET", "/caf%C3%A9", named, "cafe"), 0);
    run_expect("GET", "/", 200);
    assert_string_equal(last, "root");
    run_expect("GET", "/a", 200);
    assert_string_equal(last, "a");
    run_expect("GET", "/a/b", 200);
    assert_string_equal(last, "ab");
    run_expect("GET", "/a/b/", 200);
    assert_string_equal(last, "ab/");
    run_expect("GET", "/a/b?x=1", 200); /* the query is not the path */
    assert_string_equal(last, "ab");
    /* Literals compare raw bytes: the encoding must be the registered one. */
    run_expect("GET", "/caf%C3%A9", 200);
    assert_string_equal(last, "cafe");
    run_expect("GET", "/caf%c3%a9", 404);
    run_expect("GET", "/a/", 404);
    run_expect("GET", "/a/c", 404);
    run_expect("GET", "/a/b/c", 404);
    run_expect("GET", "/ab", 404);
    run_expect("GET", "//a", 404);
    assert_non_null(memmem(F.out, F.nout, "\"error\":\"not_found\"", 19));
    assert_string_equal(F.ctype, "application/json");
}

static void test_params(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/users/:id/posts/:post", named, "p"), 0);
    run_expect("GET", "/users/42/posts/7", 200);
    assert_string_equal(last, "p id=42 post=7");
    assert_int_equal(px_req_param(&F.req, "id").len, 2);
    assert_null(px_req_param(&F.req, "nope").ptr);
    /* Decoded: an encoded slash stays inside its segment. */
    run_expect("GET", "/users/a%2Fb/posts/%41", 200);
    assert_string_equal(last, "p id=a/b post=A");
    /* '+' is a plus in a path. */
    run_expect("GET", "/users/a+b/posts/1", 200);
    assert_string_equal(last, "p id=a+b post=1");
    run_expect("GET", "/users/%zz/posts/1", 400);
    run_expect("GET", "/users/%4/posts/1", 400);
    /* A parameter is never empty; segments must all be there. */
    run_expect("GET", "/users//posts/1", 404);
    run_expect("GET", "/users/1/posts", 404);
    run_expect("GET", "/users/1/posts/", 404);
    run_expect("GET", "/users/1/posts/2/3", 404);
}

static void test_wildcard(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/static/*", named, "s"), 0);
    assert_int_equal(px_route(srv, "GET", "/all/:x/*", named, "x"), 0);
    run_expect("GET", "/static/a/b.css", 200);
    assert_string_equal(last, "s *=a/b.css");
    assert_string_equal(px_req_param(&F.req, "*").ptr, "a/b.css");
    run_expect("GET", "/static/", 200);
    assert_string_equal(last, "s *=");
    run_expect("GET", "/static/%2e%2e/x", 200); /* decoded; static.c refuses it */
    assert_string_equal(last, "s *=../x");
    /* The bare prefix has no rest to match the wildcard. */
    run_expect("GET", "/static", 404);
    run_expect("GET", "/staticx", 404);
    run_expect("GET", "/all/1/2/3", 200);
    assert_string_equal(last, "x x=1 *=2/3");
    run_expect("GET", "/all/1", 404);
}

static void test_405_allow(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "POST", "/items", named, "post"), 0);
    assert_int_equal(px_route(srv, "DELETE", "/items", named, "del"), 0);
    assert_int_equal(px_route(srv, "GET", "/things", named, "get"), 0);
    assert_int_equal(px_route(srv, "PUT", "/things", named, "put"), 0);
    run_expect("GET", "/items", 405);
    assert_string_equal(F.res_headers, "Allow: POST, DELETE\n");
    assert_non_null(memmem(F.out, F.nout, "method_not_allowed", 18));
    run_expect("POST", "/things", 405);
    assert_string_equal(F.res_headers, "Allow: GET, HEAD, PUT\n");
    run_expect("DELETE", "/items", 200);
    assert_string_equal(last, "del");
    run_expect("POST", "/nothing", 404);
}

static void test_head_fallback(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/g", named, "get"), 0);
    assert_int_equal(px_route(srv, "HEAD", "/h", named, "head"), 0);
    assert_int_equal(px_route(srv, "GET", "/h", named, "get-h"), 0);
    run_expect("HEAD", "/g", 200);
    assert_string_equal(last, "get");
    /* The head says how long the body would be; no body goes to the owner. */
    assert_int_equal(F.clen, 3);
    assert_int_equal(F.nout, 0);
    run_expect("HEAD", "/h", 200);
    assert_string_equal(last, "head");
    /* GET does not fall back to HEAD. */
    assert_int_equal(px_route(srv, "HEAD", "/only-head", named, "oh"), 0);
    run_expect("GET", "/only-head", 405);
    assert_string_equal(F.res_headers, "Allow: HEAD\n");
}

static void test_connect(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "*", "/x", named, "any"), 0);
    run(fake_request("CONNECT", "example.com:443", NULL));
    assert_int_equal(F.status, 501);
    assert_non_null(memmem(F.out, F.nout, "not_implemented", 15));
    assert_int_equal(px_route(srv, "CONNECT", "/whatever", named, "tunnel"), 0);
    run(fake_request("CONNECT", "example.com:443", NULL));
    assert_int_equal(F.status, 200);
    assert_string_equal(last, "tunnel");
    assert_int_equal(F.req.nparams, 0);
}

static void test_any_method_and_order(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "*", "/any", named, "any"), 0);
    assert_int_equal(px_route(srv, "GET", "/a/:x", named, "param"), 0);
    assert_int_equal(px_route(srv, "GET", "/a/b", named, "literal"), 0);
    run_expect("PATCH", "/any", 200);
    assert_string_equal(last, "any");
    run_expect("BREW", "/any", 200);
    /* Registration order: the first match wins. */
    run_expect("GET", "/a/b", 200);
    assert_string_equal(last, "param x=b");
}

static void test_bad_patterns(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "nope", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "/a/*/b", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "/a/:", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h/:i", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h", named, "8"), 0);
    assert_int_equal(px_route(srv, "", "/a", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "SIXTEENCHARSLONG", "/a", named, ""), -EINVAL);
    assert_int_equal(px_route(srv, "GET", "/a", NULL, NULL), -EINVAL);
    run_expect("GET", "/1/2/3/4/5/6/7/8", 200);
    assert_string_equal(last, "8 a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8");
}

static void test_query(void **state)
{
    (void)state;
    px_req_t *req = fake_request("GET", "/q?a=1&b=hello+world&c=%41%42&d&e=%zz&=x&f=", NULL);
    px_str_t v;
    assert_int_equal(px_req_query(req).len, strlen("a=1&b=hello+world&c=%41%42&d&e=%zz&=x&f="));
    assert_int_equal(px_req_query_param(req, "a", &v), 1);
    assert_int_equal(v.len, 1);
    assert_memory_equal(v.ptr, "1", 1);
    assert_int_equal(px_req_query_param(req, "b", &v), 1);
    assert_string_equal(v.ptr, "hello world");
    assert_int_equal(px_req_query_param(req, "c", &v), 1);
    assert_string_equal(v.ptr, "AB");
    assert_int_equal(px_req_query_param(req, "d", &v), 1);
    assert_int_equal(v.len, 0);
    assert_int_equal(px_req_query_param(req, "f", &v), 1);
    assert_int_equal(v.len, 0);
    assert_int_equal(px_req_query_param(req, "e", &v), -EINVAL);
    assert_int_equal(px_req_query_param(req, "", &v), 1);
    assert_memory_equal(v.ptr, "x", 1);
    assert_int_equal(px_req_query_param(req, "z", &v), 0);
    assert_null(v.ptr);
    req = fake_request("GET", "/q", NULL);
    assert_int_equal(px_req_query_param(req, "a", &v), 0);
    assert_null(px_req_query(req).ptr);
}

/* ---- the request over a fake owner (no connection) ------------------------------------- */

static void test_neutral_respond(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/json", json, NULL), 0);
    px_req_t *req = fake_request("GET", "/json", "Accept", "application/json", NULL);
    assert_string_equal(px_req_header(req, "accept").ptr, "application/json");
    assert_int_equal(px_req_header_count(req), 1);
    run(req);
    assert_true(req->finished);
    assert_int_equal(F.heads, 1);
    assert_int_equal(F.status, 200);
    assert_string_equal(F.ctype, "application/json");
    assert_int_equal(F.clen, 2);
    assert_int_equal(F.nout, 2);
    assert_memory_equal(F.out, "{}", 2);
    assert_string_equal(F.res_headers, "X-One: 1\n");
    assert_int_equal(F.dones, 0); /* finished inside the handler: the owner sees it itself */
    assert_int_equal(req->status, 200);
    /* The request's peer and worker are the owner's. */
    char peer[16];
    assert_int_equal(px_req_peer(req, peer, sizeof peer), 0);
    assert_string_equal(peer, "fake");
    assert_ptr_equal(px_req_worker(req), px_workers_get(px_server_workers(srv), 0));
    /* No connection to switch: an HTTP/2-like owner refuses Upgrade. */
    px_conn_t *c = NULL;
    req = fake_request("GET", "/json", NULL);
    assert_int_equal(px__req_upgrade(req, NULL, NULL, &c), -ENOTSUP);
    assert_null(c);
}

static void test_neutral_status(void **state)
{
    (void)state;
    /* A handler's impossible status becomes 500, with its body (the length
     * announced is the length sent). */
    assert_int_equal(px_route(srv, "GET", "/bad", bad_status, NULL), 0);
    run_expect("GET", "/bad", 500);
    assert_int_equal(F.clen, 4);
    assert_int_equal(F.nout, 4);
    /* 204 and 304 have neither a body nor a length. */
    px_req_t *req = fake_request("GET", "/x", NULL);
    assert_int_equal(px_respond(req, 204, NULL, "body", 4), 0);
    assert_int_equal(F.clen, PX__CLEN_NONE);
    assert_int_equal(F.nout, 0);
    px_slice_t *s = px_slice_new(5);
    memcpy(s->data, "slice", 5);
    req = fake_request("GET", "/x", NULL);
    assert_int_equal(px_respond_slice(req, 200, "text/plain", s), 0);
    assert_int_equal(F.clen, 5);
    assert_memory_equal(F.out, "slice", 5);
    assert_int_equal(req->res_bytes, 5);
    px_slice_unref(s);
}

static void test_neutral_async(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/hold", hold, NULL), 0);
    px_req_t *req = fake_request("GET", "/hold", NULL);
    run(req);
    assert_ptr_equal(held, req);
    assert_false(req->responded);
    assert_true(req->async);
    assert_int_equal(F.heads, 0);
    /* Answered later: the owner is told once. */
    assert_int_equal(px_respond(req, 202, NULL, "ok", 2), 0);
    assert_int_equal(F.dones, 1);
    assert_int_equal(F.status, 202);
    assert_int_equal(px_respond(req, 200, NULL, "again", 5), -EALREADY);
    assert_int_equal(F.dones, 1);
    /* Client gone before the answer: the answer is dropped, the owner told. */
    req = fake_request("GET", "/hold", NULL);
    run(req);
    px_req_on_abort(req, gone, NULL);
    px__req_gone(req);
    assert_int_equal(gone_calls, 1);
    assert_int_equal(px_respond(req, 200, NULL, "x", 1), -EPIPE);
    assert_int_equal(F.heads, 0);
    assert_int_equal(F.dones, 1);
}

static void test_neutral_stream(void **state)
{
    (void)state;
    assert_int_equal(px_route(srv, "GET", "/events", streamer, NULL), 0);
    px_req_t *req = fake_request("GET", "/events", NULL);
    run(req);
    assert_ptr_equal(held, req);
    assert_true(F.stream_head);
    assert_int_equal(F.clen, PX__CLEN_STREAM);
    assert_string_equal(F.ctype, "text/event-stream");
    assert_true(req->detached && req->streaming && req->async && !req->finished);
    F.room = 8;
    assert_int_equal(px_stream_write(req, "data: 2\n\n", 9), -ENOBUFS); /* intact */
    assert_int_equal(px_stream_write(req, "data: 2\n", 8), 0);
    px_slice_t *s = px_slice_new(4);
    memcpy(s->data, "xyz\n", 4);
    F.room = 0;
    assert_int_equal(px_stream_write_slice(req, s, 1, 3), 0);
    px_slice_unref(s);
    assert_int_equal(F.nout, 9 + 8 + 3);
    assert_memory_equal(F.out, "data: 1\n\ndata: 2\nyz\n", 20);
    assert_int_equal(px_stream_pending(req), 20);
    assert_int_equal(px_stream_end(req), 0);
    assert_int_equal(F.ends, 1);
    assert_int_equal(F.dones, 1);
    assert_int_equal(px_stream_end(req), -EINVAL);
    assert_int_equal(px_stream_write(req, "x", 1), -EINVAL);
    /* The client leaves: writes fail, the end frames nothing, the owner is told. */
    req = fake_request("GET", "/events", NULL);
    run(req);
    px_req_abort(req);
    assert_int_equal(F.aborts, 1);
    px__req_gone(req); /* what the owner does from its loop after an abort */
    assert_int_equal(gone_calls, 1);
    px_req_abort(req); /* gone already: nothing more to cut */
    assert_int_equal(F.aborts, 1);
    assert_int_equal(px_stream_write(req, "x", 1), -EPIPE);
    assert_int_equal(px_stream_pending(req), 0);
    assert_int_equal(px_stream_end(req), 0);
    assert_int_equal(F.ends, 0);
    assert_int_equal(F.dones, 1);
    /* HEAD: the head of a stream, and the request is over. */
    held = NULL;
    req = fake_request("HEAD", "/events", NULL);
    run(req);
    assert_true(req->finished);
    assert_false(req->async);
    assert_int_equal(F.clen, PX__CLEN_STREAM);
    assert_false(F.stream_head);
    assert_int_equal(F.nout, 0);
    assert_null(held);
}

static void test_neutral_static(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_test_router_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/hello.txt", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("static hello\n", fp);
    fclose(fp);
    assert_int_equal(px_route_static(srv, "/files/", dir), 0);
    /* The file goes to the owner as a file range (sendfile; DATA frames on h2). */
    run_expect("GET", "/files/hello.txt", 200);
    assert_int_equal(F.files, 1);
    assert_int_equal(F.clen, 13);
    assert_string_equal(F.ctype, "text/plain; charset=utf-8");
    assert_int_equal(F.nout, 13);
    assert_memory_equal(F.out, "static hello\n", 13);
    assert_non_null(strstr(F.res_headers, "ETag: "));
    char etag[64];
    const char *e = strstr(F.res_headers, "ETag: ") + 6;
    snprintf(etag, sizeof etag, "%.*s", (int)(strchr(e, '\n') - e), e);
    /* Conditional: 304 without a body. */
    run(fake_request("GET", "/files/hello.txt", "If-None-Match", etag, NULL));
    assert_int_equal(F.status, 304);
    assert_int_equal(F.files, 0);
    /* A range. */
    run(fake_request("GET", "/files/hello.txt", "Range", "bytes=7-11", NULL));
    assert_int_equal(F.status, 206);
    assert_int_equal(F.nout, 5);
    assert_memory_equal(F.out, "hello", 5);
    /* HEAD: the length, no file. */
    run_expect("HEAD", "/files/hello.txt", 200);
    assert_int_equal(F.clen, 13);
    assert_int_equal(F.files, 0);
    run_expect("GET", "/files/%2e%2e/etc/passwd", 403);
    run_expect("GET", "/files/nope", 404);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_405_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_any_method_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_patterns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neutral_respond, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neutral_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neutral_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neutral_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_neutral_static, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
