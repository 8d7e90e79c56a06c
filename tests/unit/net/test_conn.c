/* Unit tests for connections and transports (src/net/conn.c, connect.c,
 * transport_plain.c) and the listener pipeline (server.c, listener.c).
 *
 * Most tests drive one worker's loop by hand on the test thread
 * (px__netw_start, then px_loop_run_once), with a connection made from one end
 * of a socketpair (px__conn_adopt) and the test holding the other end as the
 * peer: every state of docs/internals/connections.md is reached
 * deterministically. Covered:
 * - read dispatch and partial consumption, the read limit, pause/resume with
 *   re-dispatch of kept bytes, switching protocol in place (inside on_read
 *   and from outside), close with linger (and its timeout), abort, EOF;
 * - the output queue with scratch, slice and file pieces and partial writes
 *   on a small socket buffer, the output cap, timers and the idle default;
 * - a fake transport stacked over the socket: transformed bytes both ways,
 *   the sendfile fallback, a read that wants writable, a write that wants
 *   readable, bytes pending inside the layer, a shutdown that must wait, a
 *   handshake on a listener (and its timeout and failure), and a chooser that
 *   reads the first bytes and pushes the layer over them (prefix replay);
 * - px_conn_connect: TCP and unix success, refused, timeout (a full backlog;
 *   a handshake that never ends), bad addresses, close before ready;
 * - with worker threads: px_conn_connect from a worker, several listeners with
 *   different protocols and a per-listener limit, unknown protocols, the
 *   protocol registry, and per-module state. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "worker_by_hand.h"
#include "net/net_int.h"
#include "net/transport.h"

/* ---- what the protocols saw ------------------------------------------------------- */

static struct {
    char lines[1 << 16]; /* every line the line protocol consumed, in order */
    size_t nlines_bytes;
    int nlines;
    int accepts, drains, timeouts, eofs, closes, connects, connect_status;
    size_t read_limit; /* line protocol: applied at accept when nonzero */
    char events[64];   /* order of connect/close callbacks: "c" on_connect, "x" on_close */
    char got[1 << 16]; /* client protocol: bytes received */
    size_t ngot;
} T;

static void note(char ev)
{
    size_t n = strlen(T.events);
    if (n + 1 < sizeof T.events)
        T.events[n] = ev;
}

static int starts(const char *line, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n >= w && memcmp(line, word, w) == 0;
}

static const px_protocol_t upper_proto;

/* "line": one command per line; unknown lines are only recorded. */
static ssize_t line_read(px_conn_t *c, char *data, size_t len)
{
    size_t used = 0;
    char *nl;
    while ((nl = memchr(data + used, '\n', len - used)) != NULL) {
        char *line = data + used;
        size_t n = (size_t)(nl - line) + 1;
        if (T.nlines_bytes + n <= sizeof T.lines) {
            memcpy(T.lines + T.nlines_bytes, line, n);
            T.nlines_bytes += n;
        }
        T.nlines++;
        used += n;
        if (starts(line, n, "pause")) {
            px_conn_pause_read(c, 1);
            break;
        }
        if (starts(line, n, "close")) {
            px_conn_write(c, "bye\n", 4);
            px_conn_close(c);
            return -1;
        }
        if (starts(line, n, "abort")) {
            px_conn_abort(c);
            return -1;
        }
        if (starts(line, n, "echo "))
            assert_int_equal(px_conn_write(c, line + 5, n - 5), 0);
        if (starts(line, n, "upper")) {
            px_conn_set_protocol(c, &upper_proto, NULL); /* the rest goes to "upper" at once */
            return (ssize_t)used;
        }
    }
    return (ssize_t)used;
}

static void *line_accept(px_conn_t *c, void *ud)
{
    (void)ud;
    T.accepts++;
    if (T.read_limit)
        px_conn_set_read_limit(c, T.read_limit);
    return &T;
}

static void line_drain(px_conn_t *c)
{
    (void)c;
    T.drains++;
}

static void line_timeout(px_conn_t *c)
{
    (void)c;
    T.timeouts++;
}

static void line_eof(px_conn_t *c)
{
    T.eofs++;
    px_conn_write(c, "eof\n", 4);
    px_conn_close(c);
}

static void count_close(px_conn_t *c)
{
    (void)c;
    T.closes++;
    note('x');
}

static const px_protocol_t line_proto = {
    .name = "line",
    .on_read = line_read,
    .on_drain = line_drain,
    .on_timeout = line_timeout,
    .on_eof = line_eof,
    .on_close = count_close,
};

/* "upper": echoes every byte upper-cased; default timeout and EOF handling. */
static ssize_t upper_read(px_conn_t *c, char *data, size_t len)
{
    char out[4096];
    size_t n = len < sizeof out ? len : sizeof out;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(data[i] >= 'a' && data[i] <= 'z' ? data[i] - 32 : data[i]);
    px_conn_write(c, out, n);
    return (ssize_t)n;
}

static const px_protocol_t upper_proto = {
    .name = "upper",
    .on_read = upper_read,
    .on_close = count_close,
};

/* "sniff": a chooser. 'H' first: our stand-in for a TLS record, so the fake
 * layer is pushed over the bytes; a complete line: "line"; 8 bytes without
 * one (the byte limit): "upper"; silent past 200 ms: "line" with what came. */
static const px_transport_factory_t fake_factory;

static ssize_t sniff_read(px_conn_t *c, char *data, size_t len)
{
    if (data[0] == 'H') {
        assert_int_equal(px__conn_push_transport(c, &fake_factory, data, len), 0);
        return (ssize_t)len;
    }
    if (memchr(data, '\n', len)) {
        assert_int_equal(px_conn_start_protocol(c, "line"), 0);
        return 0; /* the same bytes go to "line" */
    }
    if (len >= 8)
        assert_int_equal(px_conn_start_protocol(c, "upper"), 0);
    return 0;
}

static void *sniff_accept(px_conn_t *c, void *ud)
{
    (void)ud;
    px_conn_set_read_limit(c, 8);
    px_conn_set_timeout(c, 200);
    return NULL;
}

static void sniff_timeout(px_conn_t *c)
{
    assert_int_equal(px_conn_start_protocol(c, "line"), 0);
}

static void sniff_connect(px_conn_t *c, int status)
{
    T.connects++;
    T.connect_status = status;
    if (status == 0)
        assert_int_equal(px_conn_start_protocol(c, "line"), 0);
}

static const px_protocol_t sniff_proto = {
    .name = "sniff",
    .on_read = sniff_read,
    .on_timeout = sniff_timeout,
    .on_close = count_close,
    .on_connect = sniff_connect,
};

/* "client": outbound connections record what arrives and the outcome. */
static ssize_t client_read(px_conn_t *c, char *data, size_t len)
{
    (void)c;
    if (T.ngot + len <= sizeof T.got) {
        memcpy(T.got + T.ngot, data, len);
        T.ngot += len;
    }
    return (ssize_t)len;
}

static void client_connect(px_conn_t *c, int status)
{
    T.connects++;
    T.connect_status = status;
    note('c');
    if (status == 0)
        assert_false(px_conn_is_closing(c));
    else
        assert_true(px_conn_is_closing(c));
}

static const px_protocol_t client_proto = {
    .name = "client",
    .on_read = client_read,
    .on_close = count_close,
    .on_connect = client_connect,
};

/* ---- a fake transport layer -------------------------------------------------------- */

/* Transforms bytes (XOR), and on request: returns PX__WANT_WRITE from a read,
 * PX__WANT_READ from a write, PX__WANT_WRITE from shutdown, keeps what it read
 * and hands it out `record` bytes at a time (like TLS records: pending), and
 * runs a scripted handshake: 'W' wait for writable once, 'r' read one byte,
 * which must be 'H', 'w' write 'h', 'x' fail. Offers no sendfile. */
typedef struct fake {
    px__transport_t base;
    uint8_t xor ;
    const char *hs;
    int want_write_next_read, want_read_next_write, shut_want_write;
    size_t record;
    char buf[4096];
    size_t boff, blen;
    int shutdowns;
} fake_t;

static fake_t fake_cfg; /* template for the next layer the factory makes */
static fake_t *last_fake;
static int fake_closes;

static int fake_handshake(px__transport_t *t, px_conn_t *c)
{
    fake_t *f = (fake_t *)t;
    while (*f->hs) {
        char step = *f->hs;
        if (step == 'W') {
            f->hs++;
            return PX__WANT_WRITE;
        }
        if (step == 'x')
            return -EPROTO;
        if (step == 'r') {
            char b;
            ssize_t n = t->lower->ops->read(t->lower, c, &b, 1);
            if (n < 0)
                return (int)n;
            if (n == 0 || b != 'H')
                return -EPROTO;
        } else {
            struct iovec iov = {(void *)"h", 1};
            ssize_t n = t->lower->ops->writev(t->lower, c, &iov, 1);
            if (n < 0)
                return (int)n;
        }
        f->hs++;
    }
    return 0;
}

static ssize_t fake_read(px__transport_t *t, px_conn_t *c, void *buf, size_t len)
{
    fake_t *f = (fake_t *)t;
    if (f->want_write_next_read) {
        f->want_write_next_read = 0;
        return PX__WANT_WRITE;
    }
    ssize_t n;
    if (f->record) {
        if (f->boff == f->blen) {
            n = t->lower->ops->read(t->lower, c, f->buf, sizeof f->buf);
            if (n <= 0)
                return n;
            f->boff = 0;
            f->blen = (size_t)n;
        }
        size_t k = f->blen - f->boff;
        k = k < f->record ? k : f->record;
        k = k < len ? k : len;
        memcpy(buf, f->buf + f->boff, k);
        f->boff += k;
        n = (ssize_t)k;
    } else {
        n = t->lower->ops->read(t->lower, c, buf, len);
    }
    for (ssize_t i = 0; i < n; i++)
        ((char *)buf)[i] ^= (char)f->xor ;
    return n;
}

static ssize_t fake_writev(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int iovcnt)
{
    fake_t *f = (fake_t *)t;
    if (f->want_read_next_write) {
        f->want_read_next_write = 0;
        return PX__WANT_READ;
    }
    static char tmp[1 << 17];
    size_t n = 0;
    for (int i = 0; i < iovcnt && n < sizeof tmp; i++) {
        size_t k = iov[i].iov_len < sizeof tmp - n ? iov[i].iov_len : sizeof tmp - n;
        memcpy(tmp + n, iov[i].iov_base, k);
        n += k;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] ^= (char)f->xor ;
    struct iovec one = {tmp, n};
    return t->lower->ops->writev(t->lower, c, &one, 1);
}

static size_t fake_pending(px__transport_t *t, px_conn_t *c)
{
    fake_t *f = (fake_t *)t;
    return f->blen - f->boff + px__transport_pending(t->lower, c);
}

static int fake_shutdown(px__transport_t *t, px_conn_t *c)
{
    fake_t *f = (fake_t *)t;
    if (f->shut_want_write) {
        f->shut_want_write = 0;
        return PX__WANT_WRITE;
    }
    f->shutdowns++;
    return t->lower->ops->shutdown(t->lower, c);
}

static void fake_close(px__transport_t *t, px_conn_t *c)
{
    (void)c;
    fake_closes++;
    if (last_fake == (fake_t *)t)
        last_fake = NULL;
    free(t);
}

static const px__transport_ops_t fake_ops = {
    .name = "fake",
    .read = fake_read,
    .writev = fake_writev,
    .pending = fake_pending,
    .shutdown = fake_shutdown,
    .close = fake_close,
};

static const px__transport_ops_t fake_ops_hs = {
    .name = "fake",
    .handshake = fake_handshake,
    .read = fake_read,
    .writev = fake_writev,
    .pending = fake_pending,
    .shutdown = fake_shutdown,
    .close = fake_close,
};

static int fake_create(const px_transport_factory_t *fac, px_conn_t *c, px__transport_t *lower,
                       px__transport_t **out)
{
    (void)c;
    fake_t *f = malloc(sizeof *f);
    if (!f)
        return -ENOMEM;
    *f = *(const fake_t *)fac->ud;
    f->base.ops = f->hs ? &fake_ops_hs : &fake_ops;
    f->base.lower = lower;
    last_fake = f;
    *out = &f->base;
    return 0;
}

static const px_transport_factory_t fake_factory = {
    .name = "fake", .create = fake_create, .ud = &fake_cfg};

static void xorbuf(char *p, size_t n, uint8_t x)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= (char)x;
}

/* ---- set-up ---------------------------------------------------------------------------- */

static int setup_with(size_t output_cap, uint64_t idle_ms)
{
    memset(&T, 0, sizeof T);
    memset(&fake_cfg, 0, sizeof fake_cfg);
    last_fake = NULL;
    fake_closes = 0;
    px_server_opts_t o;
    hand_opts(&o, output_cap);
    o.idle_timeout_ms = idle_ms;
    srv = px_server_new(&o);
    if (!srv)
        return -1;
    /* "line" first: the default protocol. */
    if (px_server_add_protocol(srv, NULL, &line_proto, line_accept, NULL) != 0 ||
        px_server_add_protocol(srv, NULL, &upper_proto, NULL, NULL) != 0 ||
        px_server_add_protocol(srv, NULL, &sniff_proto, sniff_accept, NULL) != 0)
        return -1;
    set_worker();
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return setup_with(0, 0);
}

/* What px_server_start and a worker thread do, on the test thread. */
static void manual_start(void)
{
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        srv->listeners[i].entry = px__server_protocol(srv, srv->listeners[i].protocol);
        assert_non_null(srv->listeners[i].entry);
    }
    px__netw_start(nw);
}

static int teardown(void **state)
{
    (void)state;
    worker_teardown(NULL);
    return 0;
}

/* A connection on one end of a socketpair, `peer` the other end. */
static px_conn_t *pair(void)
{
    return adopt_pair(manual_start, 0);
}

/* Read what the server sends until `want` bytes, EOF (returns with *eof) or
 * `ms` pass, running the loop meanwhile (the server writes from it). */
static size_t recv_loop(int fd, char *buf, size_t want, int ms, int *eof)
{
    size_t got = 0;
    uint64_t end = px_now_ms() + (uint64_t)ms;
    if (eof)
        *eof = 0;
    while (got < want && px_now_ms() < end) {
        px_loop_run_once(loop, 2);
        ssize_t n = recv(fd, buf + got, want - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0 || (n < 0 && errno != EAGAIN)) {
            if (eof)
                *eof = 1;
            break;
        }
    }
    return got;
}

static void expect_recv(int fd, const char *s)
{
    char buf[256];
    size_t n = strlen(s);
    assert_true(n < sizeof buf);
    size_t got = recv_loop(fd, buf, n, 2000, NULL);
    buf[got] = '\0';
    assert_string_equal(buf, s);
}

/* The peer sees the end of the stream (orderly or reset). */
static void expect_eof(int fd)
{
    char b;
    int eof;
    size_t got = recv_loop(fd, &b, 1, 3000, &eof);
    assert_int_equal(got, 0);
    assert_true(eof);
}

static int nothing_to_read(int fd)
{
    char b;
    return recv(fd, &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

/* ---- input ------------------------------------------------------------------------------ */

static void test_dispatch_partial(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    assert_int_equal(T.accepts, 1);
    assert_ptr_equal(c->proto, &line_proto);
    send_str(peer, "hello\nwor");
    RUN_UNTIL(T.nlines == 1, 1000);
    assert_int_equal(T.nlines, 1);
    /* The unconsumed tail is kept, and presented again with what follows. */
    assert_int_equal(px_buf_size(&c->in), 3);
    send_str(peer, "ld\n");
    RUN_UNTIL(T.nlines == 2, 1000);
    assert_int_equal(T.nlines_bytes, 12);
    assert_memory_equal(T.lines, "hello\nworld\n", 12);
    /* Consumed: the input buffer's memory is released. */
    assert_int_equal(px_buf_size(&c->in), 0);
    assert_null(c->in.data);
    /* Several lines in one read: one on_read call, all consumed. */
    send_str(peer, "a\nb\nc\n");
    RUN_UNTIL(T.nlines == 5, 1000);
    assert_int_equal(T.nlines, 5);
}

static void test_read_limit(void **state)
{
    (void)state;
    T.read_limit = 16;
    px_conn_t *c = pair();
    send_str(peer, "0123456789abcdef"); /* exactly the limit: kept */
    run_for(30);
    assert_int_equal(px_buf_size(&c->in), 16);
    assert_int_equal(T.closes, 0);
    send_str(peer, "g"); /* one over: the connection is aborted */
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
    expect_eof(peer);
}

static void test_read_limit_first_read(void **state)
{
    (void)state;
    T.read_limit = 8;
    pair();
    send_str(peer, "ok\n0123456789"); /* the tail alone is over the limit */
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.nlines, 1);
    assert_int_equal(T.closes, 1);
}

static void test_pause_resume(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    send_str(peer, "pause\nline2\nline3\n");
    RUN_UNTIL(T.nlines == 1, 1000);
    run_for(20);
    assert_int_equal(T.nlines, 1);
    assert_true(c->read_paused);
    assert_int_equal(px_buf_size(&c->in), 12); /* kept while paused */
    assert_int_equal(c->io._events & PX_READABLE, 0);
    send_str(peer, "line4\n");
    run_for(20);
    assert_int_equal(T.nlines, 1); /* not read while paused */
    /* Resume: kept bytes are re-dispatched without a new byte arriving, then
     * the socket is read again. */
    px_conn_pause_read(c, 0);
    assert_true(c->redispatch);
    RUN_UNTIL(T.nlines == 4, 1000);
    assert_int_equal(T.nlines, 4);
    assert_memory_equal(T.lines, "pause\nline2\nline3\nline4\n", 24);
    assert_false(c->redispatch);
    assert_true(c->io._events & PX_READABLE);
}

static void test_switch_in_place(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    /* Inside on_read: the bytes after "upper\n" go to the new protocol at once. */
    send_str(peer, "hello\nupper\nabc");
    expect_recv(peer, "ABC");
    assert_int_equal(T.nlines, 2);
    assert_ptr_equal(c->proto, &upper_proto);
    send_str(peer, "xyz");
    expect_recv(peer, "XYZ");
}

static void test_switch_outside_read(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    send_str(peer, "partial");
    run_for(20);
    assert_int_equal(px_buf_size(&c->in), 7);
    assert_int_equal(px_conn_start_protocol(c, "nope"), -ENOENT);
    /* From outside a read (a timer, another connection): the kept bytes are
     * presented to the new protocol from the loop. */
    assert_int_equal(px_conn_start_protocol(c, "upper"), 0);
    expect_recv(peer, "PARTIAL");
    assert_int_equal(px_buf_size(&c->in), 0);
}

static void test_eof(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    send_str(peer, "x\n");
    shutdown(peer, SHUT_WR);
    expect_recv(peer, "eof\n");
    assert_int_equal(T.eofs, 1);
    assert_true(c->eof);
    expect_eof(peer);
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
}

/* ---- closing -------------------------------------------------------------------------------- */

static void test_close_linger(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    send_str(peer, "echo hi\nclose\n");
    expect_recv(peer, "hi\nbye\n");
    expect_eof(peer); /* our write side is shut */
    assert_true(c->closing);
    assert_true(c->lingering);
    assert_int_equal(T.closes, 0); /* still there: reading and discarding */
    assert_int_equal(c->io._events, PX_READABLE);
    send_str(peer, "late\n");
    run_for(30);
    assert_int_equal(T.nlines, 2); /* discarded, not dispatched */
    assert_int_equal(T.closes, 0);
    close(peer); /* the peer's EOF ends the linger */
    peer = -1;
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
    assert_int_equal(nw->nconns, 0);
}

static void test_linger_timeout(void **state)
{
    (void)state;
    pair();
    send_str(peer, "close\n");
    expect_recv(peer, "bye\n");
    uint64_t t0 = px_now_ms();
    RUN_UNTIL(T.closes == 1, 4000); /* a peer that never closes is dropped */
    assert_int_equal(T.closes, 1);
    assert_true(px_now_ms() - t0 >= PX__LINGER_MS - 200);
}

static void test_abort_drops_output(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    send_str(peer, "echo lost\nabort\nnot-read\n");
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
    assert_int_equal(T.nlines, 2);
    (void)c; /* freed */
    expect_eof(peer);
}

static void test_close_from_outside(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    assert_int_equal(px_conn_write(c, "last\n", 5), 0);
    px_conn_close(c);
    px_conn_close(c); /* idempotent */
    assert_int_equal(px_conn_write(c, "more", 4), -EPIPE);
    assert_true(px_conn_is_closing(c));
    expect_recv(peer, "last\n");
    expect_eof(peer);
    shutdown(peer, SHUT_WR);
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
}

/* ---- output -----------------------------------------------------------------------------------
 */

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 7 + seed) % 26);
    return p;
}

static int temp_file(const char *data, size_t n)
{
    char path[] = "/tmp/px-conn-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    return fd;
}

/* Scratch copies, a shared slice, a file, a big copy and a small one, queued in
 * one go on a socket with a small buffer: sent in order through partial writes. */
static void output_pieces(px_conn_t *c, int xor)
{
    int small = 4096;
    setsockopt(c->io.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    char *a = pattern(100, 1), *b = pattern(20000, 2), *f = pattern(101000, 3),
         *d = pattern(30000, 4);
    size_t total = 100 + 20000 + 100000 + 30000 + 4;
    char *want = malloc(total);
    memcpy(want, a, 100);
    memcpy(want + 100, b, 20000);
    memcpy(want + 20100, f + 1000, 100000);
    memcpy(want + 120100, d, 30000);
    memcpy(want + 150100, "end\n", 4);

    assert_int_equal(px_conn_write(c, a, 100), 0);
    px_slice_t *s = px_slice_copy(b, 20000);
    assert_int_equal(px_conn_write_slice(c, s, 0, 20000), 0);
    px_slice_unref(s); /* the queue holds its own reference */
    assert_int_equal(px_conn_sendfile(c, temp_file(f, 101000), 1000, 100000), 0);
    assert_int_equal(px_conn_write(c, d, 30000), 0);
    assert_int_equal(px_conn_write(c, "end\n", 4), 0);
    assert_int_equal(px_conn_pending(c), total - 100000); /* files do not count */

    /* The peer does not read yet: the socket fills, the rest waits for writable. */
    int drains = T.drains;
    run_for(20);
    assert_true(px_conn_pending(c) > 0 || c->out_count > 0);
    assert_true(c->io._events & PX_WRITABLE);
    assert_int_equal(T.drains, drains);

    char *got = malloc(total);
    size_t n = recv_loop(peer, got, total, 5000, NULL);
    assert_int_equal(n, total);
    if (xor)
        xorbuf(got, total, (uint8_t) xor);
    assert_memory_equal(got, want, total);
    RUN_UNTIL(T.drains > drains, 1000);
    assert_true(T.drains > drains);
    assert_int_equal(px_conn_pending(c), 0);
    assert_int_equal(c->out_count, 0);
    assert_null(c->out); /* an idle connection holds no output memory */
    assert_int_equal(c->io._events & PX_WRITABLE, 0);
    free(a);
    free(b);
    free(f);
    free(d);
    free(want);
    free(got);
}

static void test_output_pieces(void **state)
{
    (void)state;
    output_pieces(pair(), 0);
}

static int setup_small_cap(void **state)
{
    (void)state;
    return setup_with(64 * 1024, 0);
}

static void test_output_cap(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    char *p = pattern(64 * 1024, 5);
    assert_int_equal(px_conn_write(c, p, 64 * 1024), 0);
    assert_int_equal(px_conn_write(c, "x", 1), -ENOBUFS);
    px_slice_t *s = px_slice_copy("y", 1);
    assert_int_equal(px_conn_write_slice(c, s, 0, 1), -ENOBUFS);
    assert_int_equal(px_conn_write_slice(c, s, 1, 1), -ENOBUFS);
    px_slice_unref(s);
    /* A connection's last words may go over. */
    assert_int_equal(px_conn_write_nocap(c, "z", 1), 0);
    assert_int_equal(px_conn_pending(c), 64 * 1024 + 1);
    char *got = malloc(64 * 1024 + 1);
    assert_int_equal(recv_loop(peer, got, 64 * 1024 + 1, 3000, NULL), 64 * 1024 + 1);
    assert_memory_equal(got, p, 64 * 1024);
    assert_int_equal(got[64 * 1024], 'z');
    /* Drained: room again. */
    assert_int_equal(px_conn_write(c, p, 64 * 1024), 0);
    px_conn_abort(c);
    assert_int_equal(px_conn_pending(c), 0);
    assert_int_equal(px_conn_write_nocap(c, "z", 1), -EPIPE);
    free(p);
    free(got);
}

/* ---- timers ------------------------------------------------------------------------------------
 */

static void test_timers(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    assert_false(px_timer_active(&c->timer)); /* idle timeout 0 in this server */
    px_conn_set_timeout(c, 30);
    RUN_UNTIL(T.timeouts == 1, 1000);
    assert_int_equal(T.timeouts, 1);
    run_for(60);
    assert_int_equal(T.timeouts, 1); /* once */
    px_conn_set_timeout(c, 30);
    px_conn_set_timeout(c, 0); /* disarmed */
    run_for(80);
    assert_int_equal(T.timeouts, 1);
    /* A protocol without on_timeout: the connection closes. */
    px_conn_set_protocol(c, &upper_proto, NULL);
    px_conn_set_timeout(c, 20);
    expect_eof(peer);
    close(peer);
    peer = -1;
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
}

static int setup_idle(void **state)
{
    (void)state;
    return setup_with(0, 50);
}

static void test_idle_default(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    /* on_accept armed no timer: the server's idle timeout applies. */
    assert_true(px_timer_active(&c->timer));
    RUN_UNTIL(T.timeouts == 1, 1000);
    assert_int_equal(T.timeouts, 1);
}

/* ---- a stacked transport ------------------------------------------------------------------------
 */

static px_conn_t *pair_fake(void)
{
    px_conn_t *c = pair();
    assert_int_equal(px__conn_push_transport(c, &fake_factory, NULL, 0), 0);
    assert_non_null(last_fake);
    assert_ptr_equal(c->tp, &last_fake->base);
    assert_ptr_equal(c->tp->lower, &px__transport_plain);
    assert_int_equal(c->phase, PX__OPEN); /* no handshake */
    px_loop_run_once(loop, 0);            /* the push's own read attempt */
    return c;
}

static void send_xor(int fd, const char *s, uint8_t x)
{
    char buf[256];
    size_t n = strlen(s);
    memcpy(buf, s, n);
    xorbuf(buf, n, x);
    assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void test_stacked_transform(void **state)
{
    (void)state;
    fake_cfg.xor = 0x20;
    px_conn_t *c = pair_fake();
    send_xor(peer, "echo stacked\n", 0x20);
    char buf[16];
    assert_int_equal(recv_loop(peer, buf, 8, 2000, NULL), 8);
    xorbuf(buf, 8, 0x20);
    assert_memory_equal(buf, "stacked\n", 8);
    /* No sendfile in the layer: files go through pread + writev, transformed. */
    output_pieces(c, 0x20);
    /* Closing shuts down through the stack and closes every layer. */
    px_conn_close(c);
    expect_eof(peer);
    assert_int_equal(last_fake->shutdowns, 1);
    close(peer);
    peer = -1;
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(fake_closes, 1);
}

static void test_read_wants_write(void **state)
{
    (void)state;
    px_conn_t *c = pair_fake();
    last_fake->want_write_next_read = 1;
    send_str(peer, "a\n");
    px_loop_run_once(loop, 100); /* readable: the read wants writable */
    /* The read waits for writable, and only that is armed. */
    assert_int_equal(c->tp_wants, PX__READ_WANTS_WRITE);
    assert_int_equal(c->io._events, PX_WRITABLE);
    assert_int_equal(T.nlines, 0);
    px_loop_run_once(loop, 100); /* writable: the read is retried */
    assert_int_equal(T.nlines, 1);
    assert_int_equal(c->tp_wants, 0);
    assert_int_equal(c->io._events, PX_READABLE);
}

static void test_write_wants_read(void **state)
{
    (void)state;
    px_conn_t *c = pair_fake();
    last_fake->want_read_next_write = 1;
    send_str(peer, "echo x\n");
    RUN_UNTIL(c->tp_wants, 1000);
    /* Output is queued, yet writable is not armed: the write waits for readable. */
    assert_int_equal(c->tp_wants, PX__WRITE_WANTS_READ);
    assert_int_equal(c->io._events, PX_READABLE);
    assert_int_equal(c->out_count, 1);
    run_for(30);
    assert_true(nothing_to_read(peer));
    send_str(peer, "y\n"); /* readable: the write is retried, and the read done */
    expect_recv(peer, "x\n");
    assert_int_equal(T.nlines, 2);
    assert_int_equal(c->tp_wants, 0);
    assert_int_equal(c->io._events, PX_READABLE);
}

static void test_pending_in_layer(void **state)
{
    (void)state;
    fake_cfg.record = 6;
    px_conn_t *c = pair_fake();
    /* One socket event; the layer hands the bytes out six at a time. */
    send_str(peer, "aaaaa\nbbbbb\nccccc\n");
    RUN_UNTIL(T.nlines == 3, 1000);
    assert_int_equal(T.nlines, 3);
    assert_int_equal(px__transport_pending(c->tp, c), 0);
    /* Paused with bytes inside the layer: resuming reads them, although the
     * socket stays quiet. */
    send_str(peer, "pause\nddddd\neeeee\n");
    RUN_UNTIL(T.nlines == 4, 1000);
    run_for(20);
    assert_int_equal(T.nlines, 4);
    assert_int_equal(px__transport_pending(c->tp, c), 12);
    px_conn_pause_read(c, 0);
    RUN_UNTIL(T.nlines == 6, 1000);
    assert_int_equal(T.nlines, 6);
    assert_memory_equal(T.lines + 18, "pause\nddddd\neeeee\n", 18);
}

static void test_shutdown_wants_write(void **state)
{
    (void)state;
    px_conn_t *c = pair_fake();
    last_fake->shut_want_write = 1;
    send_str(peer, "close\n");
    RUN_UNTIL(c->lingering, 1000);
    expect_recv(peer, "bye\n");
    expect_eof(peer); /* retried on writable */
    assert_int_equal(last_fake->shutdowns, 1);
    assert_int_equal(c->tp_wants, 0);
    assert_true(c->lingering);
}

/* ---- the listener pipeline: a transport with a handshake
 * ------------------------------------------ */

static int tcp_client(const char *name)
{
    const char *colon = strrchr(name, ':');
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&in, sizeof in), 0);
    return fd;
}

static px_conn_t *listen_and_accept(const char *hs, uint64_t hs_timeout)
{
    fake_cfg.hs = hs;
    px_listen_opts_t lo;
    px_listen_opts_init(&lo);
    lo.addr = "127.0.0.1:0";
    lo.transport = &fake_factory;
    lo.protocol = "line";
    lo.handshake_timeout_ms = hs_timeout;
    lo.max_connections = 5;
    assert_int_equal(px_server_listen_opts(srv, &lo), 0);
    manual_start();
    peer = tcp_client(px_server_listener_name(srv, 0));
    RUN_UNTIL(nw->nconns == 1, 1000);
    assert_int_equal(nw->nconns, 1);
    px_conn_t *c = nw->conns;
    assert_int_equal(c->phase, PX__HANDSHAKE);
    assert_null(c->proto); /* the protocol starts after the handshake */
    assert_int_equal(T.accepts, 0);
    assert_int_equal(atomic_load(&srv->listeners[0].nconns), 1); /* it has a limit */
    return c;
}

static void test_listener_handshake(void **state)
{
    (void)state;
    px_conn_t *c = listen_and_accept("Wrw", 0);
    assert_int_equal(c->io._events, PX_READABLE); /* the client speaks first */
    send_str(peer, "H");
    RUN_UNTIL(c->tp_wants & PX__HS_WANTS_WRITE, 1000);
    assert_int_equal(c->io._events, PX_WRITABLE); /* 'W': the step wants writable */
    assert_int_equal(T.accepts, 0);
    expect_recv(peer, "h");
    assert_int_equal(T.accepts, 1);
    assert_int_equal(c->phase, PX__OPEN);
    assert_ptr_equal(c->proto, &line_proto);
    send_str(peer, "echo after\n");
    expect_recv(peer, "after\n");
    close(peer);
    peer = -1;
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(atomic_load(&srv->listeners[0].nconns), 0);
    assert_int_equal(px_server_connection_count(srv), 0);
}

static void test_listener_handshake_timeout(void **state)
{
    (void)state;
    listen_and_accept("r", 100);
    uint64_t t0 = px_now_ms();
    expect_eof(peer); /* silent client: dropped after the handshake bound */
    assert_true(px_now_ms() - t0 >= 80);
    RUN_UNTIL(nw->nconns == 0, 1000);
    assert_int_equal(T.accepts, 0);
    assert_int_equal(T.closes, 0); /* no protocol ever ran: no on_close */
    assert_int_equal(fake_closes, 1);
}

static void test_listener_handshake_failure(void **state)
{
    (void)state;
    listen_and_accept("x", 0);
    send_str(peer, "?");
    expect_eof(peer);
    RUN_UNTIL(nw->nconns == 0, 1000);
    assert_int_equal(T.accepts, 0);
    assert_int_equal(fake_closes, 1);
}

/* ---- a chooser: sniff the first bytes, then pick -----------------------------------------------
 */

static px_conn_t *pair_sniff(void)
{
    px_conn_t *c = pair();
    assert_int_equal(px_conn_start_protocol(c, "sniff"), 0);
    assert_ptr_equal(c->proto, &sniff_proto);
    assert_int_equal(c->read_limit, 8);
    return c;
}

static void test_sniff_line(void **state)
{
    (void)state;
    px_conn_t *c = pair_sniff();
    send_str(peer, "ec"); /* not enough to choose: kept */
    run_for(20);
    assert_ptr_equal(c->proto, &sniff_proto);
    assert_int_equal(px_buf_size(&c->in), 2);
    send_str(peer, "ho a\n");
    expect_recv(peer, "a\n"); /* "line" got every byte, the sniffed ones too */
    assert_ptr_equal(c->proto, &line_proto);
    assert_int_equal(c->read_limit, PX__READ_CHUNK);
}

static void test_sniff_byte_limit(void **state)
{
    (void)state;
    px_conn_t *c = pair_sniff();
    send_str(peer, "abcdefgh");
    expect_recv(peer, "ABCDEFGH");
    assert_ptr_equal(c->proto, &upper_proto);
}

static void test_sniff_timeout(void **state)
{
    (void)state;
    px_conn_t *c = pair_sniff();
    send_str(peer, "x");
    run_for(50);
    assert_ptr_equal(c->proto, &sniff_proto);
    RUN_UNTIL(c->proto == &line_proto, 1000); /* silent past the timeout: the default */
    assert_ptr_equal(c->proto, &line_proto);
    send_str(peer, "\n");
    RUN_UNTIL(T.nlines == 1, 1000);
    assert_memory_equal(T.lines, "x\n", 2);
}

static void test_sniff_push_transport(void **state)
{
    (void)state;
    fake_cfg.hs = "rw";
    fake_cfg.xor = 0x20;
    px_conn_t *c = pair_sniff();
    /* The handshake byte and the first encoded bytes in one segment: all of
     * them read by the chooser, then replayed under the pushed layer. */
    char msg[32] = "H";
    memcpy(msg + 1, "echo c\n", 7);
    xorbuf(msg + 1, 7, 0x20);
    assert_int_equal(send(peer, msg, 8, MSG_NOSIGNAL), 8);
    char buf[8];
    assert_int_equal(recv_loop(peer, buf, 3, 2000, NULL), 3);
    assert_int_equal(buf[0], 'h');
    xorbuf(buf + 1, 2, 0x20);
    assert_memory_equal(buf + 1, "c\n", 2);
    assert_int_equal(T.connects, 1);
    assert_int_equal(T.connect_status, 0);
    assert_ptr_equal(c->proto, &line_proto);
    /* Three layers: fake over prefix over the socket. */
    assert_string_equal(c->tp->ops->name, "fake");
    assert_string_equal(c->tp->lower->ops->name, "prefix");
    assert_ptr_equal(c->tp->lower->lower, &px__transport_plain);
    send_xor(peer, "echo d\n", 0x20);
    assert_int_equal(recv_loop(peer, buf, 2, 2000, NULL), 2);
    xorbuf(buf, 2, 0x20);
    assert_memory_equal(buf, "d\n", 2);
}

/* ---- raw mode (PX__RAW) and addresses from a layer ------------------------------------------ */

static int raw_events;

/* Echo every byte straight from the socket: the protocol must see none. */
static void raw_cb(px_io_t *io, unsigned events)
{
    px_conn_t *c = io->data;
    raw_events++;
    char b[64];
    if (events & PX_READABLE) {
        ssize_t n = recv(c->io.fd, b, sizeof b, 0);
        if (n > 0)
            assert_int_equal(send(c->io.fd, b, (size_t)n, MSG_NOSIGNAL), n);
    }
}

static void test_raw_mode(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    px__conn_raw(c, raw_cb, c);
    assert_int_equal(c->phase, PX__RAW);
    assert_int_equal(px_io_start(loop, &c->io, PX_READABLE), 0);
    send_str(peer, "echo raw\n");
    char buf[16];
    assert_int_equal(recv_loop(peer, buf, 9, 2000, NULL), 9);
    assert_memory_equal(buf, "echo raw\n", 9); /* the line protocol would answer "raw\n" */
    assert_int_equal(T.nlines, 0);
    assert_true(raw_events >= 1);
    /* The connection leaves the protocol's interest set alone... */
    px_conn_pause_read(c, 1);
    px_conn_pause_read(c, 0);
    assert_int_equal(c->io._events, PX_READABLE);
    /* ...and its timer still reaches the protocol. */
    px_conn_set_timeout(c, 20);
    RUN_UNTIL(T.timeouts == 1, 1000);
    assert_int_equal(T.timeouts, 1);
    /* Taken back: the protocol reads again. */
    px__conn_raw(c, NULL, NULL);
    assert_int_equal(c->phase, PX__OPEN);
    send_str(peer, "echo back\n");
    assert_int_equal(recv_loop(peer, buf, 5, 2000, NULL), 5);
    assert_memory_equal(buf, "back\n", 5);
    assert_int_equal(T.nlines, 1);
    /* Abort works in raw mode too (the splice proxy closes that way). */
    px__conn_raw(c, raw_cb, c);
    px_conn_abort(c);
    RUN_UNTIL(T.closes == 1, 1000);
    assert_int_equal(T.closes, 1);
}

/* A layer that only delegates, and knows other addresses (like a PROXY header's). */
static ssize_t addr_read(px__transport_t *t, px_conn_t *c, void *buf, size_t len)
{
    return t->lower->ops->read(t->lower, c, buf, len);
}

static ssize_t addr_writev(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int n)
{
    return t->lower->ops->writev(t->lower, c, iov, n);
}

static int addr_shutdown(px__transport_t *t, px_conn_t *c)
{
    return t->lower->ops->shutdown(t->lower, c);
}

static void addr_close(px__transport_t *t, px_conn_t *c)
{
    (void)t;
    (void)c;
}

static int addr_addresses(px__transport_t *t, px_conn_t *c, struct sockaddr_storage *p,
                          struct sockaddr_storage *l)
{
    (void)t;
    (void)c;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)p;
    memset(p, 0, sizeof *p);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::9", &in6->sin6_addr);
    in6->sin6_port = htons(4242);
    if (l)
        *l = *p;
    return 0;
}

static const px__transport_ops_t addr_ops = {
    .name = "addr",
    .read = addr_read,
    .writev = addr_writev,
    .shutdown = addr_shutdown,
    .close = addr_close,
    .addresses = addr_addresses,
};

static void test_layer_addresses(void **state)
{
    (void)state;
    px_conn_t *c = pair();
    char name[64];
    assert_int_equal(px_conn_peer_name(c, name, sizeof name), 0);
    assert_string_equal(name, "unix"); /* the socket's */
    static px__transport_t layer = {.ops = &addr_ops};
    layer.lower = c->tp;
    c->tp = &layer;
    assert_int_equal(px_conn_peer_name(c, name, sizeof name), 0);
    assert_string_equal(name, "[2001:db8::9]:4242");
    struct sockaddr_storage p, l;
    assert_int_equal(px__conn_addresses(c, &p, &l), 0);
    assert_int_equal(l.ss_family, AF_INET6);
    send_str(peer, "echo through\n"); /* the layer delegates */
    char buf[16];
    assert_int_equal(recv_loop(peer, buf, 8, 2000, NULL), 8);
    assert_memory_equal(buf, "through\n", 8);
}

/* ---- outbound connections
 * ------------------------------------------------------------------------ */

static int tcp_listener(int backlog, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(listen(fd, backlog), 0);
    socklen_t len = sizeof in;
    getsockname(fd, (struct sockaddr *)&in, &len);
    *port = ntohs(in.sin_port);
    return fd;
}

static int accept_loop(int lfd)
{
    assert_int_equal(fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK), 0);
    for (uint64_t end = px_now_ms() + 2000; px_now_ms() < end;) {
        px_loop_run_once(loop, 2);
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
    }
    fail_msg("no connection to accept");
    return -1;
}

static px_conn_t *connect_to(const char *addr, const px_connect_opts_t *o)
{
    if (!nw->rbuf)
        manual_start();
    px_loop_update_time(loop); /* as inside a callback: timers count from now */
    px_conn_t *c = NULL;
    assert_int_equal(px__conn_connect(nw, addr, o, &client_proto, &T, &c), 0);
    assert_non_null(c);
    assert_int_equal(T.connects, 0); /* never reported inside the call */
    return c;
}

/* Connected: queued bytes go out, bytes come in, the peer's close ends it. */
static void exchange(px_conn_t *c, int lfd)
{
    assert_int_equal(px_conn_write(c, "ping\n", 5), 0); /* queued before connected */
    int fd = accept_loop(lfd);
    RUN_UNTIL(T.connects == 1, 2000);
    assert_int_equal(T.connects, 1);
    assert_int_equal(T.connect_status, 0);
    assert_int_equal(c->phase, PX__OPEN);
    expect_recv(fd, "ping\n");
    send_str(fd, "pong\n");
    RUN_UNTIL(T.ngot == 5, 1000);
    assert_memory_equal(T.got, "pong\n", 5);
    close(fd);
    RUN_UNTIL(T.closes == 1, 1000);
    assert_string_equal(T.events, "cx");
    assert_int_equal(nw->nconns, 0);
}

static void test_connect_tcp(void **state)
{
    (void)state;
    unsigned port;
    int lfd = tcp_listener(16, &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    px_conn_t *c = connect_to(addr, NULL);
    assert_true(c->outbound);
    assert_int_equal(c->phase, PX__CONNECTING);
    assert_int_equal(px_server_connection_count(srv), 0); /* not an accepted one */
    exchange(c, lfd);
    close(lfd);
}

static void test_connect_refused(void **state)
{
    (void)state;
    unsigned port;
    close(tcp_listener(1, &port)); /* a port nobody listens on */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    connect_to(addr, NULL);
    RUN_UNTIL(T.closes == 1, 2000);
    assert_int_equal(T.connect_status, -ECONNREFUSED);
    assert_string_equal(T.events, "cx"); /* on_connect, then on_close */
}

/* A listener whose accept queue is full drops the SYN: a connect to `addr` hangs. */
typedef struct full {
    int lfd, fillers[4];
    char addr[64];
} full_t;

static void full_open(full_t *fl)
{
    unsigned port;
    fl->lfd = tcp_listener(0, &port);
    snprintf(fl->addr, sizeof fl->addr, "127.0.0.1:%u", port);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 4; i++) {
        fl->fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fl->fillers[i], (struct sockaddr *)&in, sizeof in);
    }
    usleep(50 * 1000);
}

static void full_close(full_t *fl)
{
    for (int i = 0; i < 4; i++)
        close(fl->fillers[i]);
    close(fl->lfd);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    full_t fl;
    full_open(&fl);
    px_connect_opts_t o;
    px_connect_opts_init(&o);
    assert_int_equal(o.timeout_ms, 10000);
    o.timeout_ms = 200;
    uint64_t t0 = px_now_ms();
    connect_to(fl.addr, &o);
    RUN_UNTIL(T.closes == 1, 3000);
    assert_int_equal(T.connect_status, -ETIMEDOUT);
    assert_true(px_now_ms() - t0 >= 180);
    assert_string_equal(T.events, "cx");
    full_close(&fl);
}

static void test_connect_close_before_ready(void **state)
{
    (void)state;
    full_t fl;
    full_open(&fl);
    px_connect_opts_t o;
    px_connect_opts_init(&o);
    o.timeout_ms = 100;
    px_conn_t *c = connect_to(fl.addr, &o);
    px_conn_close(c); /* given up: no on_connect, on_close only */
    RUN_UNTIL(T.closes == 1, 3000);
    assert_int_equal(T.connects, 0);
    assert_string_equal(T.events, "x");
    full_close(&fl);
}

static char tmpdir[64];

static int unix_listener(char *addr, size_t len)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/px-conn-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/s", tmpdir);
    snprintf(addr, len, "unix:%s", un.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

static void unix_cleanup(int lfd)
{
    char path[128];
    snprintf(path, sizeof path, "%s/s", tmpdir);
    close(lfd);
    unlink(path);
    rmdir(tmpdir);
}

static void test_connect_unix(void **state)
{
    (void)state;
    char addr[128];
    int lfd = unix_listener(addr, sizeof addr);
    exchange(connect_to(addr, NULL), lfd);
    unix_cleanup(lfd);
}

static void test_connect_unix_refused(void **state)
{
    (void)state;
    char addr[128];
    int lfd = unix_listener(addr, sizeof addr);
    close(lfd); /* the socket file stays: stale */
    connect_to(addr, NULL);

    RUN_UNTIL(T.closes == 1, 2000);
    assert_int_equal(T.connect_status, -ECONNREFUSED);
    char path[128];
    snprintf(path, sizeof path, "%s/s", tmpdir);
    unlink(path);
    memset(&T, 0, sizeof T);
    connect_to(addr, NULL); /* no such file */
    RUN_UNTIL(T.closes == 1, 2000);
    assert_int_equal(T.connect_status, -ENOENT);
    assert_string_equal(T.events, "cx");
    rmdir(tmpdir);
}

/* A transport on an outbound connection: its handshake completes before
 * on_connect; one that never completes runs into the same timeout. */
static void test_connect_unix_handshake(void **state)
{
    (void)state;
    char addr[128];
    int lfd = unix_listener(addr, sizeof addr);
    fake_cfg.hs = "rw";
    px_connect_opts_t o;
    px_connect_opts_init(&o);
    o.transport = &fake_factory;
    o.timeout_ms = 200;
    px_conn_t *c = connect_to(addr, &o);
    int fd = accept_loop(lfd);
    run_for(30);
    assert_int_equal(c->phase, PX__HANDSHAKE);
    assert_int_equal(T.connects, 0);
    send_str(fd, "H");
    expect_recv(fd, "h");
    RUN_UNTIL(T.connects == 1, 1000);
    assert_int_equal(T.connect_status, 0);
    close(fd);
    RUN_UNTIL(T.closes == 1, 1000);

    memset(&T, 0, sizeof T);
    uint64_t t0 = px_now_ms();
    connect_to(addr, &o);
    fd = accept_loop(lfd); /* connected, but the handshake never ends */
    RUN_UNTIL(T.closes == 1, 2000);
    assert_int_equal(T.connect_status, -ETIMEDOUT);
    assert_true(px_now_ms() - t0 >= 180);
    assert_string_equal(T.events, "cx");
    close(fd);
    unix_cleanup(lfd);
}

static void test_connect_bad_args(void **state)
{
    (void)state;
    manual_start();
    static const char *const bad[] = {
        "",      "nonsense", "127.0.0.1",   "127.0.0.1:0", "127.0.0.1:65536", "example.com:80",
        "unix:", "[::1]",    "300.1.1.1:80"};
    px_conn_t *c = NULL;
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad); i++) {
        int r = px__conn_connect(nw, bad[i], NULL, &client_proto, NULL, &c);
        if (r != -EINVAL)
            fail_msg("'%s' -> %d, expected -EINVAL", bad[i], r);
    }
    static const px_protocol_t no_read = {.name = "x"};
    assert_int_equal(px__conn_connect(nw, "127.0.0.1:1", NULL, &no_read, NULL, &c), -EINVAL);
    assert_int_equal(nw->nconns, 0);
    /* Not on a worker thread of the server. */
    assert_int_equal(px_conn_connect(srv, "127.0.0.1:1", NULL, &client_proto, NULL, &c), -EPERM);
}

/* ---- with worker threads
 * --------------------------------------------------------------------------- */

static struct {
    px_msg_t msg;
    char addr[64];
    _Atomic int status; /* 1 = pending */
    _Atomic int got_pong;
    _Atomic int closed;
} W;

static void w_connect(px_conn_t *c, int status)
{
    if (status == 0)
        px_conn_write(c, "ping\n", 5);
    atomic_store(&W.status, status);
}

static ssize_t w_read(px_conn_t *c, char *data, size_t len)
{
    (void)c;
    if (len >= 5 && memcmp(data, "pong\n", 5) == 0)
        atomic_store(&W.got_pong, 1);
    return (ssize_t)len;
}

static void w_close(px_conn_t *c)
{
    (void)c;
    atomic_store(&W.closed, 1);
}

static const px_protocol_t w_proto = {
    .name = "w", .on_read = w_read, .on_close = w_close, .on_connect = w_connect};

static void on_connect_msg(px_worker_t *w, px_msg_t *m)
{
    (void)w;
    (void)m;
    px_conn_t *c = NULL;
    int r = px_conn_connect(srv, W.addr, NULL, &w_proto, NULL, &c);
    if (r)
        atomic_store(&W.status, r);
}

#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        for (int i_ = 0; i_ < 400 && !(cond); i_++)                                                \
            usleep(5000);                                                                          \
    } while (0)

static int setup_threads(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    atomic_store(&W.status, 1);
    if (setup_with(0, 0) != 0)
        return -1;
    nw = NULL; /* the worker thread owns it */
    return 0;
}

static int teardown_threads(void **state)
{
    (void)state;
    px_server_shutdown(srv);
    px_server_wait(srv);
    px_server_free(srv);
    srv = NULL;
    return 0;
}

static void test_connect_from_worker(void **state)
{
    (void)state;
    unsigned port;
    int lfd = tcp_listener(16, &port);
    snprintf(W.addr, sizeof W.addr, "127.0.0.1:%u", port);
    assert_int_equal(px_server_start(srv), 0);
    W.msg.cb = on_connect_msg;
    px_worker_post(px_workers_get(px_server_workers(srv), 0), &W.msg);
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 2000), 1);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    WAIT_FOR(atomic_load(&W.status) != 1);
    assert_int_equal(atomic_load(&W.status), 0);
    char buf[8];
    assert_int_equal(recv(fd, buf, 5, MSG_WAITALL), 5);
    assert_memory_equal(buf, "ping\n", 5);
    send_str(fd, "pong\n");
    WAIT_FOR(atomic_load(&W.got_pong));
    assert_true(atomic_load(&W.got_pong));
    close(fd);
    WAIT_FOR(atomic_load(&W.closed));
    assert_true(atomic_load(&W.closed));
    close(lfd);
}

/* Until listener i has no connection open (the previous client's is gone). */
static void wait_listener_idle(unsigned i)
{
    WAIT_FOR(atomic_load(&srv->listeners[i].nconns) == 0);
    assert_int_equal(atomic_load(&srv->listeners[i].nconns), 0);
}

/* Blocking request/response over a fresh TCP connection. */
static void roundtrip(const char *name, const char *send_s, const char *want)
{
    int fd = tcp_client(name);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send_str(fd, send_s);
    char buf[64] = {0};
    size_t n = strlen(want);
    assert_int_equal(recv(fd, buf, n, MSG_WAITALL), (ssize_t)n);
    assert_string_equal(buf, want);
    close(fd);
}

static void test_listeners(void **state)
{
    (void)state;
    px_server_set_reject_message(srv, "busy\n", 5);
    px_listen_opts_t lo;
    assert_int_equal(px_server_listen(srv, "127.0.0.1:0"), 0); /* default: "line" */
    px_listen_opts_init(&lo);
    lo.addr = "127.0.0.1:0";
    lo.protocol = "upper";
    assert_int_equal(px_server_listen_opts(srv, &lo), 0);
    lo.protocol = "sniff";
    lo.max_connections = 1;
    assert_int_equal(px_server_listen_opts(srv, &lo), 0);
    lo.addr = NULL;
    assert_int_equal(px_server_listen_opts(srv, &lo), -EINVAL);
    assert_int_equal(px_server_listener_count(srv), 3);
    assert_int_equal(px_server_start(srv), 0);
    const char *a = px_server_listener_name(srv, 0), *b = px_server_listener_name(srv, 1),
               *s = px_server_listener_name(srv, 2);

    roundtrip(a, "echo one\n", "one\n");
    roundtrip(b, "two", "TWO");
    roundtrip(s, "echo three\n", "three\n"); /* sniffed: a line */
    wait_listener_idle(2);
    roundtrip(s, "abcdefgh", "ABCDEFGH"); /* sniffed: the byte limit */
    wait_listener_idle(2);

    /* The sniffing listener takes one connection at a time. */
    int first = tcp_client(s);
    send_str(first, "echo hold\n");
    char buf[16] = {0};
    assert_int_equal(recv(first, buf, 5, MSG_WAITALL), 5);
    int second = tcp_client(s);
    struct timeval tv = {2, 0};
    setsockopt(second, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    memset(buf, 0, sizeof buf);
    assert_int_equal(recv(second, buf, sizeof buf, MSG_WAITALL), 5);
    assert_string_equal(buf, "busy\n");
    close(second);
    roundtrip(a, "echo other\n", "other\n"); /* other listeners are not affected */
    close(first);
    wait_listener_idle(2); /* once the first is gone, there is room again */
    roundtrip(s, "echo again\n", "again\n");
}

static void test_unknown_protocol(void **state)
{
    (void)state;
    px_listen_opts_t lo;
    px_listen_opts_init(&lo);
    lo.addr = "127.0.0.1:0";
    lo.protocol = "nope";
    assert_int_equal(px_server_listen_opts(srv, &lo), 0);
    assert_int_equal(px_server_start(srv), -EINVAL);

    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 1;
    px_server_t *bare = px_server_new(&o);
    assert_int_equal(px_server_start(bare), -EINVAL); /* nothing registered */
    static const px_protocol_t no_read = {.name = "x"};
    assert_int_equal(px_server_add_protocol(bare, NULL, &no_read, NULL, NULL), -EINVAL);
    px_server_free(bare);
}

static int teardown_unstarted(void **state)
{
    (void)state;
    px_server_free(srv);
    srv = NULL;
    return 0;
}

static void test_protocol_registry(void **state)
{
    (void)state;
    /* The first registered is the default ("line" in setup_with). */
    assert_ptr_equal(px__server_protocol(srv, NULL)->proto, &line_proto);
    assert_ptr_equal(px__server_protocol(srv, "upper")->proto, &upper_proto);
    assert_null(px__server_protocol(srv, "nope"));
    /* A name registered again is replaced, not added. */
    unsigned n = srv->nprotocols;
    assert_int_equal(px_server_add_protocol(srv, "upper", &upper_proto, line_accept, NULL), 0);
    assert_int_equal(srv->nprotocols, n);
    assert_ptr_equal(px__server_protocol(srv, "upper")->on_accept, line_accept);
    /* The compatibility wrapper registers under p->name and makes it the default. */
    px_server_set_protocol(srv, &sniff_proto, sniff_accept, NULL);
    assert_int_equal(srv->nprotocols, n);
    assert_ptr_equal(px__server_protocol(srv, NULL)->proto, &sniff_proto);
    /* One name per registration, up to the limit. */
    char name[16];
    int r = 0;
    for (unsigned i = 0; r == 0; i++) {
        snprintf(name, sizeof name, "p%u", i);
        r = px_server_add_protocol(srv, name, &line_proto, NULL, NULL);
    }
    assert_int_equal(r, -ENOSPC);
    assert_int_equal(srv->nprotocols, PX__MAX_PROTOCOLS);
}

/* ---- per-module state
 * ------------------------------------------------------------------------------ */

static char freed_order[8];

static void free_a(void *p)
{
    (void)p;
    strncat(freed_order, "a", sizeof freed_order - strlen(freed_order) - 1);
}

static void free_b(void *p)
{
    (void)p;
    strncat(freed_order, "b", sizeof freed_order - strlen(freed_order) - 1);
}

static void test_modules(void **state)
{
    (void)state;
    static char key_a, key_b;
    static int data_a, data_b, data_c;
    freed_order[0] = '\0';
    assert_null(px_server_module(srv, &key_a));
    assert_int_equal(px_server_module_set(srv, &key_a, &data_a, free_a), 0);
    assert_int_equal(px_server_module_set(srv, &key_b, &data_b, free_b), 0);
    assert_ptr_equal(px_server_module(srv, &key_a), &data_a);
    assert_ptr_equal(px_server_module(srv, &key_b), &data_b);
    /* The compatibility slot is a module of its own. */
    px_server_set_data(srv, &data_c, NULL);
    assert_ptr_equal(px_server_get_data(srv), &data_c);
    assert_ptr_equal(px_server_module(srv, &key_a), &data_a);
    px_server_free(srv);
    srv = NULL;
    assert_string_equal(freed_order, "ba"); /* newest first */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dispatch_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_limit_first_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_outside_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_linger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linger_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_drops_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_outside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_cap, setup_small_cap, teardown),
        cmocka_unit_test_setup_teardown(test_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_default, setup_idle, teardown),
        cmocka_unit_test_setup_teardown(test_stacked_transform, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_wants_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_wants_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_in_layer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_wants_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_handshake_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_handshake_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sniff_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sniff_byte_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sniff_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sniff_push_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_close_before_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_unix_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_unix_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_from_worker, setup_threads, teardown_threads),
        cmocka_unit_test_setup_teardown(test_listeners, setup_threads, teardown_threads),
        cmocka_unit_test_setup_teardown(test_unknown_protocol, setup_threads, teardown_unstarted),
        cmocka_unit_test_setup_teardown(test_protocol_registry, setup_threads, teardown_unstarted),
        cmocka_unit_test_setup_teardown(test_modules, setup_threads, teardown_unstarted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
