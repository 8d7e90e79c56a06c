/* Unit tests of the native front-end's pure parts (src/front/native_proto.c, native_enc.c)
 * under the OOM allocator (tests/unit/oom_alloc.h):
 *  - px__native_parse never allocates, whatever the frame (it is pure);
 *  - every encoder (WebSocket and SSE messages, presence events, gaps, the JSON of history
 *    and presence answers) either produces exactly the bytes it produces with memory, or
 *    fails cleanly (NULL or a writer error) without leaking, when any of its allocations
 *    fails. The handlers in native_ws.c / native_http.c need a live connection; they are
 *    covered by the integration tests. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "front/native.h"
#include "front/native_proto.h"
#include "oom_alloc.h"

/* ---- parse: pure -------------------------------------------------------------------------- */

static char scratch[PX_JWT_MAX_TOKEN + 1];

static int parse(const char *frame, px__nop_t *op)
{
    long calls = atomic_load(&oom.calls);
    oom_arm(0);
    int r = px__native_parse(frame, strlen(frame), op, scratch, sizeof scratch);
    oom_arm(-1);
    assert_int_equal(atomic_load(&oom.calls), calls); /* not one allocation */
    return r;
}

static void test_parse_allocates_nothing(void **state)
{
    PX_UNUSED(state);
    px__nop_t op;
    assert_int_equal(parse("{\"op\":\"ping\",\"id\":1}", &op), 0);
    assert_int_equal(op.op, PX__NOP_PING);
    assert_int_equal(
        parse("{\"op\":\"subscribe\",\"id\":2,\"channel\":\"room\",\"since\":{\"epoch\""
              ":\"abc\",\"offset\":5},\"presence\":true,\"info\":{\"a\":[1,2]}}",
              &op),
        0);
    assert_int_equal(op.op, PX__NOP_SUBSCRIBE);
    assert_int_equal(op.since_offset, 5);
    assert_string_equal(op.since_epoch, "abc");
    assert_int_equal(op.info.len, 11);
    assert_int_equal(
        parse("{\"op\":\"publish\",\"channel\":\"room\",\"data\":{\"x\":\"\\u00e9\"}}", &op), 0);
    assert_int_equal(op.data.len, 14);
    assert_int_equal(
        parse("{\"op\":\"history\",\"channel\":\"a:b\",\"since\":3,\"limit\":10}", &op), 0);
    assert_int_equal(op.limit, 10);
    assert_int_equal(parse("{\"op\":\"auth\",\"token\":\"a.b\\u002ec\"}", &op), 0);
    assert_int_equal(op.token.len, 5);

    static const char *const bad[] = {
        "{\"op\":\"nope\"}",
        "[1]",
        "{\"op\":",
        "{\"op\":\"publish\",\"channel\":\"bad name\",\"data\":1}",
        "{\"op\":\"publish\",\"id\":1,\"id\":2,\"channel\":\"a\",\"data\":1}",
        "{\"op\":\"subscribe\",\"channel\":\"a\",\"since\":7}",
        "{\"op\":\"history\",\"channel\":\"a\",\"since\":\"x\"}",
        "{\"op\":\"auth\",\"token\":\"\"}",
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad); i++) {
        assert_int_equal(parse(bad[i], &op), -1);
        assert_non_null(op.err_code);
    }
    static char deep[200], many[8192];
    for (int i = 0; i < 100; i++)
        deep[i] = '[';
    assert_int_equal(parse(deep, &op), -1);
    assert_string_equal(op.err_code, "too_complex");
    size_t n =
        (size_t)snprintf(many, sizeof many, "{\"op\":\"publish\",\"channel\":\"a\",\"data\":[");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%s1", i ? "," : "");
    snprintf(many + n, sizeof many - n, "]}");
    assert_int_equal(parse(many, &op), -1);
    assert_string_equal(op.err_code, "too_complex");
}

/* ---- encoders: clean failure at every allocation ------------------------------------------- */

static px_hub_msg_t *small, *mid, *large, *lines;
static px__presence_t who = {.client = "c1", .user = {"bob", 3}, .info = {"{\"n\":1}", 7}};
static px__presence_t anon = {.client = "c2"};

static char out[1 << 17], ref[1 << 17];

/* One encoding into `buf`: 0 and its length, or -ENOMEM (everything it allocated freed). */
typedef int (*enc_fn)(char *buf, size_t *len);

static int from_slice(px_slice_t *s, char *buf, size_t *len)
{
    if (!s)
        return -ENOMEM;
    assert_true(s->len <= sizeof out);
    memcpy(buf, s->data, s->len);
    *len = s->len;
    px_slice_unref(s);
    return 0;
}

static int from_writer(px_json_writer_t *w, char *buf, size_t *len)
{
    int r = w->err;
    if (!r) {
        memcpy(buf, w->buf, w->len);
        *len = w->len;
    }
    px_json_writer_dispose(w);
    return r;
}

static int ws_small(char *b, size_t *l)
{
    return from_slice(px__native_ws_format.encode(small, NULL), b, l);
}
static int ws_mid(char *b, size_t *l)
{
    return from_slice(px__native_ws_format.encode(mid, NULL), b, l);
}
static int ws_large(char *b, size_t *l)
{
    return from_slice(px__native_ws_format.encode(large, NULL), b, l);
}
static int ws_join(char *b, size_t *l)
{
    px__presence_ev_t e = {.op = PX__JOIN, .channel = {"room", 4}, .who = &who};
    return from_slice(px__native_ws_format.encode_presence(&e, NULL), b, l);
}
static int ws_leave(char *b, size_t *l)
{
    px__presence_ev_t e = {.op = PX__LEAVE, .channel = {"room", 4}, .who = &anon};
    return from_slice(px__native_ws_format.encode_presence(&e, NULL), b, l);
}
static int ws_gap(char *b, size_t *l)
{
    return from_slice(px__native_ws_format.encode_gap((px_str_t){"room", 4}, "e1", 9, NULL), b, l);
}
static int sse_msg(char *b, size_t *l)
{
    return from_slice(px__native_sse_format.encode(lines, NULL), b, l);
}
static int sse_gap(char *b, size_t *l)
{
    return from_slice(px__native_sse_format.encode_gap((px_str_t){"room", 4}, "e1", 9, NULL), b, l);
}
static int put_messages(char *b, size_t *l)
{
    px_hub_msg_t *msgs[] = {small, mid, lines};
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 1 << 20);
    PX_JSON_PUT_LIT(&w, "[");
    px__native_put_messages(&w, msgs, 3, 0);
    PX_JSON_PUT_LIT(&w, "]");
    return from_writer(&w, b, l);
}
static int put_presence(char *b, size_t *l)
{
    px__presence_t members[] = {who, anon};
    px__hreq_t r = {.pres = members, .npres = 2, .subscribers = 5};
    px_json_writer_t w;
    px_json_writer_init_growable(&w, 1 << 20);
    PX_JSON_PUT_LIT(&w, "{\"channel\":\"room\"");
    px__native_put_presence(&w, &r);
    PX_JSON_PUT_LIT(&w, "}");
    return from_writer(&w, b, l);
}

/* Fail the Nth allocation of `fn`, N = 0, 1, ...: a clean -ENOMEM and no leak each time,
 * until it runs without a failure and gives the same bytes as with memory. */
static size_t oom_loop(enc_fn fn)
{
    size_t reflen = 0, len = 0;
    assert_int_equal(fn(ref, &reflen), 0);
    for (long n = 0;; n++) {
        long live = atomic_load(&oom.live);
        oom_arm(n);
        int r = fn(out, &len);
        oom_arm(-1);
        assert_int_equal(atomic_load(&oom.live), live);
        if (r == 0) {
            assert_int_equal(len, reflen);
            assert_memory_equal(out, ref, len);
        } else {
            assert_int_equal(r, -ENOMEM);
        }
        if (!atomic_load(&oom.failed)) {
            assert_int_equal(r, 0);
            break;
        }
        assert_true(n < 100);
    }
    return reflen;
}

/* The payload of a server WebSocket text frame (FIN, no mask) as a string. */
static const char *ws_payload(const char *f, size_t len)
{
    assert_int_equal((unsigned char)f[0], 0x81);
    size_t hl = (unsigned char)f[1] < 126 ? 2 : (unsigned char)f[1] == 126 ? 4 : 10;
    static char text[1 << 17];
    memcpy(text, f + hl, len - hl);
    text[len - hl] = '\0';
    return text;
}

static void test_encoders_oom(void **state)
{
    PX_UNUSED(state);
    size_t n = oom_loop(ws_small);
    assert_string_equal(
        ws_payload(ref, n),
        "{\"op\":\"message\",\"channel\":\"room\",\"offset\":7,\"data\":{\"a\":1}}");
    n = oom_loop(ws_mid);
    assert_int_equal((unsigned char)ref[1], 126);
    assert_int_equal(((unsigned char)ref[2] << 8 | (unsigned char)ref[3]), n - 4);
    n = oom_loop(ws_large);
    assert_int_equal((unsigned char)ref[1], 127);
    assert_int_equal(
        n,
        10 + strlen("{\"op\":\"message\",\"channel\":\"room\",\"offset\":7,\"data\":") + 70000 + 1);
    n = oom_loop(ws_join);
    assert_string_equal(ws_payload(ref, n),
                        "{\"op\":\"join\",\"channel\":\"room\",\"client\":\"c1\","
                        "\"user\":\"bob\",\"info\":{\"n\":1}}");
    n = oom_loop(ws_leave);
    assert_string_equal(ws_payload(ref, n),
                        "{\"op\":\"leave\",\"channel\":\"room\",\"client\":\"c2\"}");
    n = oom_loop(ws_gap);
    assert_string_equal(ws_payload(ref, n), "{\"op\":\"recovery-failed\",\"channel\":\"room\","
                                            "\"epoch\":\"e1\",\"offset\":9}");
    n = oom_loop(sse_msg);
    assert_int_equal(n, strlen("id: 7\ndata: [1,\ndata: 2]\n\n"));
    assert_memory_equal(ref, "id: 7\ndata: [1,\ndata: 2]\n\n", n);
    n = oom_loop(sse_gap);
    const char *gap = "event: recovery-failed\nid: 9\ndata: "
                      "{\"channel\":\"room\",\"epoch\":\"e1\",\"offset\":9}\n\n";
    assert_int_equal(n, strlen(gap));
    assert_memory_equal(ref, gap, n);
    n = oom_loop(put_messages);
    const char *first = "[{\"offset\":7,\"time\":1700000000000,\"data\":{\"a\":1}},";
    assert_memory_equal(ref, first, strlen(first));
    n = oom_loop(put_presence);
    ref[n] = '\0';
    assert_string_equal(ref, "{\"channel\":\"room\",\"count\":2,\"subscribers\":5,\"clients\":["
                             "{\"client\":\"c1\",\"user\":\"bob\",\"info\":{\"n\":1}},"
                             "{\"client\":\"c2\"}]}");
}

static px_hub_msg_t *msg(const char *data, size_t len)
{
    px_hub_msg_t *m =
        px__hub_msg_new((px_str_t){"room", 4}, (px_str_t){"", 0}, (px_str_t){data, len}, 0);
    assert_non_null(m);
    m->offset = 7;
    m->time_ms = 1700000000000;
    snprintf(m->epoch, sizeof m->epoch, "e1");
    return m;
}

int main(void)
{
    if (oom_install() != 0)
        return 1;
    static char big[70000], mid200[200];
    memset(big, '1', sizeof big);
    memset(mid200, '2', sizeof mid200);
    small = msg("{\"a\":1}", 7);
    mid = msg(mid200, sizeof mid200);
    large = msg(big, sizeof big);
    lines = msg("[1,\r\n2]", 7);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_allocates_nothing),
        cmocka_unit_test(test_encoders_oom),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    px_hub_msg_unref(small);
    px_hub_msg_unref(mid);
    px_hub_msg_unref(large);
    px_hub_msg_unref(lines);
    return r;
}
