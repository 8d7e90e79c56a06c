/* Unit tests for listener address parsing and binding (src/net/listener.c),
 * through the public px_server_listen on a server with one worker (not
 * started: binding happens in px_server_listen itself).
 *
 * Covers: TCP host:port and [v6]:port, port 0 resolved to the real port, bad
 * syntax -> -EINVAL, a port taken by someone else -> -EADDRINUSE, unix:PATH
 * (stale socket file replaced, a non-socket file refused, removed at free),
 * fd:N with a listening socket we create, and fd:N that is not a listening
 * socket -> an error. Every failure path is checked for leaked descriptors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "plexus/net.h"
#include "px_skip.h"

static px_server_t *srv;
static char tmpdir[64];

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static px_server_t *new_server(void)
{
    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 1;
    return px_server_new(&o);
}

static int setup(void **state)
{
    (void)state;
    srv = new_server();
    return srv ? 0 : -1;
}

/* What a second server gets when it listens on `addr`. */
static int second_listen(const char *addr)
{
    px_server_t *second = new_server();
    assert_non_null(second);
    int r = px_server_listen(second, addr);
    px_server_free(second);
    return r;
}

static int teardown(void **state)
{
    (void)state;
    px_server_free(srv);
    srv = NULL;
    return 0;
}

/* The loopback address of `family` with `port`, in *ss; returns its length. */
static socklen_t loopback(int family, unsigned port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in->sin_port = htons((uint16_t)port);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = in6addr_loopback;
    in6->sin6_port = htons((uint16_t)port);
    return sizeof *in6;
}

static int tcp_listener(int family, int do_listen, unsigned *port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    if (do_listen)
        assert_int_equal(listen(fd, 16), 0);
    len = sizeof ss;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    *port = family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                              : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

static int connect_tcp(int family, unsigned port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int r = connect(fd, (struct sockaddr *)&ss, len);
    int e = errno;
    close(fd);
    return r == 0 ? 0 : -e;
}

static unsigned name_port(const char *name)
{
    const char *colon = strrchr(name, ':');
    assert_non_null(colon);
    return (unsigned)atoi(colon + 1);
}

static int have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    int ok = bind(fd, (struct sockaddr *)&in6, sizeof in6) == 0;
    close(fd);
    return ok;
}

/* ---- TCP ------------------------------------------------------------------------- */

static void test_tcp_port0(void **state)
{
    (void)state;
    assert_int_equal(px_server_listener_count(srv), 0);
    assert_null(px_server_listener_name(srv, 0));
    assert_int_equal(px_server_listen(srv, "127.0.0.1:0"), 0);
    assert_int_equal(px_server_listener_count(srv), 1);
    const char *name = px_server_listener_name(srv, 0);
    assert_non_null(name);
    assert_int_equal(strncmp(name, "127.0.0.1:", 10), 0);
    unsigned port = name_port(name);
    assert_true(port > 0 && port < 65536);
    /* Bound and listening already: the kernel completes a handshake. */
    assert_int_equal(connect_tcp(AF_INET, port), 0);

    /* A second port-0 listener gets a port of its own. */
    assert_int_equal(px_server_listen(srv, "127.0.0.1:0"), 0);
    assert_int_equal(px_server_listener_count(srv), 2);
    assert_int_not_equal(name_port(px_server_listener_name(srv, 1)), port);
    assert_null(px_server_listener_name(srv, 2));
}

static void test_tcp_explicit_port(void **state)
{
    (void)state;
    /* Find a free port, release it, then ask for it by number. */
    unsigned port;
    int fd = tcp_listener(AF_INET, 0, &port);
    close(fd);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    assert_int_equal(px_server_listen(srv, addr), 0);
    assert_string_equal(px_server_listener_name(srv, 0), addr);
    assert_int_equal(connect_tcp(AF_INET, port), 0);
}

static void test_tcp_localhost(void **state)
{
    (void)state;
    assert_int_equal(px_server_listen(srv, "localhost:0"), 0);
    const char *name = px_server_listener_name(srv, 0);
    assert_true(strncmp(name, "127.0.0.1:", 10) == 0 || strncmp(name, "[::1]:", 6) == 0);
    assert_true(name_port(name) > 0);
}

static void test_tcp_ipv6(void **state)
{
    (void)state;
    if (!have_ipv6_loopback())
        px_skip("no-ipv6", "no IPv6 loopback on this host");
    assert_int_equal(px_server_listen(srv, "[::1]:0"), 0);
    const char *name = px_server_listener_name(srv, 0);
    assert_int_equal(strncmp(name, "[::1]:", 6), 0);
    unsigned port = name_port(name);
    assert_true(port > 0);
    assert_int_equal(connect_tcp(AF_INET6, port), 0);
    /* V6ONLY: the same port number on IPv4 is not ours. */
    assert_int_not_equal(connect_tcp(AF_INET, port), 0);
}

/* Only inputs that fail before any name lookup: no DNS in unit tests. */
static void test_bad_addresses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:80a",
        "127.0.0.1: 80",
        "127.0.0.1:123456789012345678901234567890",
        "[::1]",
        "[::1]:",
        "[::1]8080",
        "[::1:8080",
        "[::1]:65536",
        "unix:",
        "fd:",
        "fd:abc",
        "fd:-1",
        "fd:3x",
        "fd:99999999999",
    };
    int fds = open_fds();
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad); i++) {
        int r = px_server_listen(srv, bad[i]);
        if (r != -EINVAL)
            fail_msg("'%s' -> %d (%s), expected -EINVAL", bad[i], r, r ? px_strerror(r) : "ok");
    }
    assert_int_equal(px_server_listener_count(srv), 0);
    assert_int_equal(open_fds(), fds);
}

static void test_tcp_in_use(void **state)
{
    (void)state;
    /* Someone else's listening socket (no SO_REUSEPORT) holds the port. */
    unsigned port;
    int fd = tcp_listener(AF_INET, 1, &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    int fds = open_fds();
    assert_int_equal(px_server_listen(srv, addr), -EADDRINUSE);
    assert_int_equal(px_server_listener_count(srv), 0);
    assert_int_equal(open_fds(), fds);
    close(fd);
}

/* Two servers of ours on one explicit port: the second must fail, not join
 * the first one's SO_REUSEPORT group and silently take half its connections.
 * (Exactly what `plexus --listen 127.0.0.1:8080` twice does; see
 * tests/integration/11-lifecycle.py.) listener.c probes an explicit port
 * before joining with SO_REUSEPORT. */
static void test_tcp_in_use_by_plexus(void **state)
{
    (void)state;
    assert_int_equal(px_server_listen(srv, "127.0.0.1:0"), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "%s", px_server_listener_name(srv, 0));
    int r = second_listen(addr);
    assert_int_equal(r, -EADDRINUSE);
}

static void test_too_many_listeners(void **state)
{
    (void)state;
    unsigned n = 0;
    int r;
    while ((r = px_server_listen(srv, "127.0.0.1:0")) == 0)
        n++;
    assert_int_equal(r, -ENOSPC);
    assert_int_equal(n, 16);
    assert_int_equal(px_server_listener_count(srv), 16);
}

/* ---- unix ----------------------------------------------------------------------- */

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/px-listener-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

/* A fresh tmpdir, path = tmpdir/name and addr = "unix:" path. */
static void tmp_unix(const char *name, char path[128], char addr[160])
{
    make_tmpdir();
    snprintf(path, 128, "%s/%s", tmpdir, name);
    snprintf(addr, 160, "unix:%s", path);
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
    int r = connect(fd, (struct sockaddr *)&un, sizeof un);
    int e = errno;
    close(fd);
    return r == 0 ? 0 : -e;
}

static int is_socket(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static void test_unix(void **state)
{
    (void)state;
    char path[128], addr[160];
    tmp_unix("px.sock", path, addr);
    assert_int_equal(px_server_listen(srv, addr), 0);
    assert_string_equal(px_server_listener_name(srv, 0), addr);
    assert_true(is_socket(path));
    assert_int_equal(connect_unix(path), 0);
    /* Freed: the socket file goes away with the server. */
    px_server_free(srv);
    srv = NULL;
    assert_false(is_socket(path));
    assert_int_equal(rmdir(tmpdir), 0);
}

static void test_unix_stale(void **state)
{
    (void)state;
    char path[128], addr[160];
    tmp_unix("stale.sock", path, addr);
    /* A previous run that died left its socket file behind. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof un.sun_path);
    memcpy(un.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    close(fd);
    assert_true(is_socket(path));
    assert_int_equal(connect_unix(path), -ECONNREFUSED);
    assert_int_equal(px_server_listen(srv, addr), 0);
    assert_int_equal(connect_unix(path), 0);
    px_server_free(srv);
    srv = NULL;
    assert_int_equal(rmdir(tmpdir), 0);
}

static void test_unix_not_a_socket(void **state)
{
    (void)state;
    char path[128], addr[160];
    tmp_unix("regular", path, addr);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "keep", 4), 4);
    close(fd);
    int fds = open_fds();
    /* Never removes something that is not a socket. */
    assert_int_equal(px_server_listen(srv, addr), -EEXIST);
    assert_int_equal(open_fds(), fds);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 4);
    /* A directory that does not exist, and a path longer than sun_path. */
    char deep[300];
    snprintf(deep, sizeof deep, "unix:%s/missing/x.sock", tmpdir);
    assert_int_equal(px_server_listen(srv, deep), -ENOENT);
    char longp[300];
    memset(longp, 'a', sizeof longp);
    memcpy(longp, "unix:/tmp/", 10);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(px_server_listen(srv, longp), -EINVAL);
    assert_int_equal(open_fds(), fds);
    assert_int_equal(px_server_listener_count(srv), 0);
    unlink(path);
    assert_int_equal(rmdir(tmpdir), 0);
}

/* A socket file a live server listens on is not stale: a second server must
 * fail instead of unlinking it and taking the path over: open_unix probes the
 * file with connect() first (only ECONNREFUSED means stale). */
static void test_unix_in_use(void **state)
{
    (void)state;
    char path[128], addr[160];
    tmp_unix("live.sock", path, addr);
    assert_int_equal(px_server_listen(srv, addr), 0);
    int r = second_listen(addr);
    px_server_free(srv);
    srv = NULL;
    unlink(path);
    assert_int_equal(rmdir(tmpdir), 0);
    assert_int_equal(r, -EADDRINUSE);
}

/* ---- fd:N ------------------------------------------------------------------------- */

static void test_fd_listening(void **state)
{
    (void)state;
    unsigned port;
    int fd = tcp_listener(AF_INET, 1, &port);
    char addr[32];
    snprintf(addr, sizeof addr, "fd:%d", fd);
    assert_int_equal(px_server_listen(srv, addr), 0);
    assert_string_equal(px_server_listener_name(srv, 0), addr);
    /* Made non-blocking (accept must never block a worker). */
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(connect_tcp(AF_INET, port), 0);
    /* The server owns it from now on: freed with the server. */
    px_server_free(srv);
    srv = NULL;
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
}

static void test_fd_unix_listening(void **state)
{
    (void)state;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    /* Abstract address: nothing to clean up in the file system. */
    snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "px-listener-test-%d", (int)getpid());
    socklen_t len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1));
    assert_int_equal(bind(fd, (struct sockaddr *)&un, len), 0);
    assert_int_equal(listen(fd, 4), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "fd:%d", fd);
    assert_int_equal(px_server_listen(srv, addr), 0);
    assert_int_equal(px_server_listener_count(srv), 1);
}

static void test_fd_not_listening(void **state)
{
    (void)state;
    char addr[32];
    int fds = open_fds();

    /* A bound TCP socket that never called listen(). */
    unsigned port;
    int fd = tcp_listener(AF_INET, 0, &port);
    snprintf(addr, sizeof addr, "fd:%d", fd);
    assert_int_equal(px_server_listen(srv, addr), -EINVAL);
    assert_int_not_equal(fcntl(fd, F_GETFD), -1); /* left open: still the caller's */
    close(fd);

    /* A UDP socket. */
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    snprintf(addr, sizeof addr, "fd:%d", fd);
    assert_int_equal(px_server_listen(srv, addr), -EINVAL);
    close(fd);

    /* Not a socket at all: a pipe. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    snprintf(addr, sizeof addr, "fd:%d", p[0]);
    assert_int_equal(px_server_listen(srv, addr), -ENOTSOCK);
    close(p[0]);
    close(p[1]);

    /* Not open. */
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(fd);
    snprintf(addr, sizeof addr, "fd:%d", fd);
    assert_int_equal(px_server_listen(srv, addr), -EBADF);

    assert_int_equal(px_server_listener_count(srv), 0);
    assert_int_equal(open_fds(), fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tcp_port0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_explicit_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_localhost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_ipv6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_in_use_by_plexus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix_not_a_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_listening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_unix_listening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_not_listening, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
