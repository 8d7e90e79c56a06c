/* Unit tests for WebSocket topics (src/ws/ws.c): the order a member sees.
 *
 * A worker keeps the frames published during one loop iteration and writes
 * them to every member at the end of it; whatever else reaches a member first
 * hands it the frames it is owed. These tests run a real server (one worker
 * thread, 127.0.0.1 port 0) whose route /t joins the topic on open and obeys
 * the commands of each text message:
 *   pub:X   publish X to the topic      say:X   send X to this connection
 *   leave   leave the topic             join    join it again
 * A client sends several commands in one write, so that the worker handles
 * them in one read, inside one batch. Covered: a direct send after a publish
 * (and before another) keeps its place; a member that leaves gets what was
 * published before it left and nothing after; one that joins mid-batch gets
 * only what follows; more frames in one read than a batch holds all arrive, in
 * order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "plexus/net.h"
#include "plexus/ws.h"

static px_server_t *srv;
static px_ws_topic_t *topic;

static void t_open(px_ws_t *ws, px_req_t *req, void *ud)
{
    (void)req;
    (void)ud;
    px_ws_topic_join(topic, ws);
}

static void t_message(px_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
    (void)opcode;
    (void)ud;
    if (len > 4 && memcmp(data, "pub:", 4) == 0) {
        px_slice_t *f = px_ws_frame_new(PX_WS_TEXT, data + 4, len - 4);
        assert_non_null(f);
        px_ws_topic_publish(topic, f);
        px_slice_unref(f);
    } else if (len > 4 && memcmp(data, "say:", 4) == 0) {
        px_ws_send(ws, PX_WS_TEXT, data + 4, len - 4);
    } else if (len == 5 && memcmp(data, "leave", 5) == 0) {
        px_ws_topic_leave(ws);
    } else if (len == 4 && memcmp(data, "join", 4) == 0) {
        px_ws_topic_join(topic, ws);
    }
}

static const px_ws_callbacks_t t_cb = {.on_open = t_open, .on_message = t_message};

static int setup(void **state)
{
    (void)state;
    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 1;
    o.shutdown_timeout_ms = 2000;
    srv = px_server_new(&o);
    if (!srv)
        return -1;
    topic = px_ws_topic_new(srv);
    if (!topic || px_ws_route(srv, "/t", &t_cb, NULL) != 0 ||
        px_server_listen(srv, "127.0.0.1:0") != 0 || px_server_start(srv) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    px_server_shutdown(srv);
    px_server_wait(srv);
    px_server_free(srv);
    px_ws_topic_free(topic); /* after the server stopped, as documented */
    srv = NULL;
    topic = NULL;
    return 0;
}

/* ---- a minimal client ----------------------------------------------------------- */

typedef struct client {
    int fd;
    char buf[1 << 16];
    size_t n;
} client_t;

static client_t A, B;

static void read_more(client_t *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1); /* (a generous bound: never reached when correct) */
    ssize_t k = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
    assert_true(k > 0);
    c->n += (size_t)k;
}

static void connect_client(client_t *c)
{
    const char *name = px_server_listener_name(srv, 0);
    const char *colon = strrchr(name, ':');
    assert_non_null(colon);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *req =
        "GET /t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_int_equal(send(c->fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    c->n = 0;
    char *end;
    while ((end = memmem(c->buf, c->n, "\r\n\r\n", 4)) == NULL)
        read_more(c);
    assert_memory_equal(c->buf, "HTTP/1.1 101", 12);
    size_t head = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + head, c->n - head);
    c->n -= head;
    /* The 101 is written after on_open: the connection is a member now. */
}

/* Masked text frames (a zero mask key: the payload goes as is), all in one write. */
static void send_commands(client_t *c, const char *const *cmds, size_t k)
{
    char out[8192];
    size_t n = 0;
    for (size_t i = 0; i < k; i++) {
        size_t len = strlen(cmds[i]);
        assert_true(len < 126 && n + 6 + len <= sizeof out);
        out[n++] = (char)0x81;
        out[n++] = (char)(0x80 | len);
        memset(out + n, 0, 4);
        n += 4;
        memcpy(out + n, cmds[i], len);
        n += len;
    }
    assert_int_equal(send(c->fd, out, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* The next text frame the server sent to c, as a string. */
static void next_frame(client_t *c, char *out, size_t cap)
{
    while (c->n < 2 || c->n < 2 + (size_t)(c->buf[1] & 0x7f))
        read_more(c);
    assert_int_equal((unsigned char)c->buf[0], 0x81);
    size_t len = (size_t)(c->buf[1] & 0x7f);
    assert_true(len < 126 && len < cap);
    memcpy(out, c->buf + 2, len);
    out[len] = 0;
    memmove(c->buf, c->buf + 2 + len, c->n - 2 - len);
    c->n -= 2 + len;
}

static void expect(client_t *c, const char *const *want, size_t k)
{
    char got[128];
    for (size_t i = 0; i < k; i++) {
        next_frame(c, got, sizeof got);
        assert_string_equal(got, want[i]);
    }
}

static void two_members(void)
{
    connect_client(&A);
    connect_client(&B);
}

static void close_both(void)
{
    close(A.fd);
    close(B.fd);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_direct_send_keeps_its_place(void **state)
{
    (void)state;
    two_members();
    const char *cmds[] = {"pub:1", "say:2", "pub:3", "say:4"};
    send_commands(&A, cmds, 4);
    const char *a[] = {"1", "2", "3", "4"};
    expect(&A, a, 4);
    const char *b[] = {"1", "3"};
    expect(&B, b, 2);
    close_both();
}

static void test_leave_gets_what_it_is_owed(void **state)
{
    (void)state;
    two_members();
    /* A gets 1 (published while it was a member), then nothing more but its own say. */
    const char *cmds[] = {"pub:1", "leave", "pub:2", "say:end"};
    send_commands(&A, cmds, 4);
    const char *a[] = {"1", "end"};
    expect(&A, a, 2);
    const char *b[] = {"1", "2"};
    expect(&B, b, 2);
    close_both();
}

static void test_join_mid_batch_gets_only_later_frames(void **state)
{
    (void)state;
    two_members();
    const char *cmds[] = {"leave", "pub:x", "join", "pub:y"};
    send_commands(&A, cmds, 4);
    const char *a[] = {"y"};
    expect(&A, a, 1);
    const char *b[] = {"x", "y"};
    expect(&B, b, 2);
    close_both();
}

static void test_more_frames_than_a_batch(void **state)
{
    (void)state;
    two_members();
    enum { N = 300 };
    static char text[N][16];
    const char *cmds[N];
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof text[i], "pub:%d", i);
        cmds[i] = text[i];
    }
    send_commands(&A, cmds, N);
    char got[128], want[16];
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "%d", i);
        next_frame(&A, got, sizeof got);
        assert_string_equal(got, want);
        next_frame(&B, got, sizeof got);
        assert_string_equal(got, want);
    }
    close_both();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_send_keeps_its_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leave_gets_what_it_is_owed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_mid_batch_gets_only_later_frames, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_more_frames_than_a_batch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
