/* One worker of a px_server_t driven by hand on the test thread, for the unit
 * tests of what runs on a worker (unit/net/test_conn.c, unit/http/test_http1.c):
 * the worker's loop turns only when the test calls px_loop_run_once (RUN_UNTIL,
 * run_for), and each connection is made from one end of a socketpair
 * (adopt_pair) while the test holds the other end, `peer`. Every state of a
 * connection is then reached deterministically.
 *
 * The test file's set-up creates `srv` (hand_opts: one worker) and sets `nw`
 * and `loop` (set_worker); its tear-down calls worker_teardown. */
#ifndef PX_TESTS_UNIT_WORKER_BY_HAND_H
#define PX_TESTS_UNIT_WORKER_BY_HAND_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "net/net_int.h"

static px_server_t *srv;
static px__netw_t *nw;  /* srv's worker 0 */
static px_loop_t *loop; /* its loop */
static int peer = -1;   /* the test's end of the last socketpair */

/* Options for `srv`: one worker, a 2 s shutdown timeout, and output_cap when
 * not 0 (the default otherwise). */
static inline void hand_opts(px_server_opts_t *o, size_t output_cap)
{
    px_server_opts_init(o);
    o->workers = 1;
    o->shutdown_timeout_ms = 2000;
    if (output_cap)
        o->output_cap = output_cap;
}

static inline void set_worker(void)
{
    nw = &srv->nw[0];
    loop = nw->loop;
}

/* Run the loop until `cond` holds or `ms` pass. */
#define RUN_UNTIL(cond, ms)                                                                        \
    do {                                                                                           \
        uint64_t end_ = px_now_ms() + (ms);                                                        \
        while (!(cond) && px_now_ms() < end_)                                                      \
            px_loop_run_once(loop, 5);                                                             \
    } while (0)

static inline void run_for(int ms)
{
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (px_now_ms() < end)
        px_loop_run_once(loop, 5);
}

/* A connection of the worker on one end of a new socketpair, `peer` the other
 * end. `start` starts the worker the first time (px__netw_start and what else
 * the test needs). small_buffers: 4 KiB socket buffers (the server's send, the
 * peer's receive), so that output backs up after a few writes. */
static inline px_conn_t *adopt_pair(void (*start)(void), int small_buffers)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK), 0);
    if (small_buffers) {
        int small = 4096;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    peer = sv[1];
    if (!nw->rbuf)
        start();
    px_conn_t *c = px__conn_adopt(nw, sv[0]);
    assert_non_null(c);
    return c;
}

static inline void send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Abort every connection of the worker (if it ever started) and wait until it
 * has freed them all; `settle` (may be NULL) runs once the aborts have been
 * dispatched, to release what the closed connections left to the test's
 * handlers. Then free the server and close `peer`. */
static inline void worker_teardown(void (*settle)(void))
{
    if (nw && nw->rbuf) {
        for (px_conn_t *c = nw->conns; c; c = c->next)
            px_conn_abort(c);
        if (settle) {
            for (int i = 0; i < 20; i++)
                px_loop_run_once(loop, 5);
            settle();
        }
        RUN_UNTIL(nw->nconns == 0, 1000);
        px_loop_run_once(loop, 0); /* frees connections finalised last */
        assert_int_equal(nw->nconns, 0);
    }
    if (peer >= 0)
        close(peer);
    peer = -1;
    px_server_free(srv);
    srv = NULL;
    nw = NULL;
    loop = NULL;
}

#endif
