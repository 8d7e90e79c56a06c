/* fwdload: load generator and backend for the pass-through benchmark
 * (bench/forward.sh, docs/benchmarks.md).
 *
 *   fwdload backend PORT
 *       127.0.0.1:PORT. Each connection starts with a 20-byte banner (an SSH
 *       identification line, so a proxy's ssh probe picks it):
 *       "SSH-2.0-bench-tput\r\n": every later byte is counted (in one total for
 *       all connections) and dropped. "SSH-2.0-bench-ping\r\n": every later
 *       byte is echoed. "SSH-2.0-bench-stat\r\n": the total goes back as 8
 *       bytes (big-endian) and the connection closes.
 *   fwdload tput PORT CONNS SECONDS CHUNK BACKEND_PORT
 *       CONNS connections to 127.0.0.1:PORT each write CHUNK-byte buffers as
 *       fast as they are taken, for SECONDS; then the client waits until the
 *       backend's total stops growing (what was in flight arrives) and
 *       closes. Prints "bytes N conns_ok K errors E seconds S" (N: bytes the
 *       backend received meanwhile, asked directly on BACKEND_PORT). No
 *       half-close is needed (sslh does not forward one).
 *   fwdload ping PORT ROUNDS SIZE
 *       One connection; ROUNDS times: write SIZE bytes, read them back.
 *       Prints "p50_us X p90_us Y p99_us Z rounds R errors E" (after 10 %
 *       warm-up rounds, not counted).
 *
 * Single-threaded, epoll, non-blocking; only 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BANNER_LEN 20
static const char banner_tput[] = "SSH-2.0-bench-tput\r\n";
static const char banner_ping[] = "SSH-2.0-bench-ping\r\n";
static const char banner_stat[] = "SSH-2.0-bench-stat\r\n";
static uint64_t total_received; /* backend: tput bytes, all connections */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- backend ------------------------------------------------------------------------- */

typedef struct bconn {
    int fd;
    int mode; /* 0: reading the banner, 1: tput, 2: ping */
    size_t got_banner;
    char banner[BANNER_LEN];
    char *pend; /* ping: bytes not echoed yet */
    size_t npend;
} bconn_t;

static void bclose(int ep, bconn_t *b)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, b->fd, NULL);
    close(b->fd);
    free(b->pend);
    free(b);
}

static __attribute__((noreturn)) void backend(int port)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1024) != 0)
        die("backend bind/listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char buf[1 << 18];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            bconn_t *b = evs[i].data.ptr;
            if (!b) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    b = calloc(1, sizeof *b);
                    b->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = b};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(b->fd, buf, sizeof buf);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0) {
                    bclose(ep, b);
                    break;
                }
                char *p = buf;
                size_t len = (size_t)r;
                if (b->mode == 0) {
                    size_t k = BANNER_LEN - b->got_banner < len ? BANNER_LEN - b->got_banner : len;
                    memcpy(b->banner + b->got_banner, p, k);
                    b->got_banner += k;
                    p += k;
                    len -= k;
                    if (b->got_banner == BANNER_LEN)
                        b->mode = memcmp(b->banner, banner_ping, BANNER_LEN) == 0   ? 2
                                  : memcmp(b->banner, banner_stat, BANNER_LEN) == 0 ? 3
                                                                                    : 1;
                }
                if (b->mode == 3) {
                    uint64_t c = total_received;
                    unsigned char out[8];
                    for (int k = 7; k >= 0; k--, c >>= 8)
                        out[k] = (unsigned char)c;
                    int fl = fcntl(b->fd, F_GETFL);
                    fcntl(b->fd, F_SETFL, fl & ~O_NONBLOCK);
                    if (write_all(b->fd, out, 8) != 0)
                        perror("backend: stat");
                    bclose(ep, b);
                    break;
                }
                if (b->mode == 1) {
                    total_received += len;
                } else if (b->mode == 2 && len) {
                    /* Echo (blocking briefly is fine: ping messages are tiny). */
                    int fl = fcntl(b->fd, F_GETFL);
                    fcntl(b->fd, F_SETFL, fl & ~O_NONBLOCK);
                    int w = write_all(b->fd, p, len);
                    fcntl(b->fd, F_SETFL, fl);
                    if (w != 0) {
                        bclose(ep, b);
                        break;
                    }
                }
            }
        }
    }
}

/* ---- throughput client ------------------------------------------------------------------- */

static uint64_t backend_total(int port)
{
    int fd = connect_to(port);
    unsigned char c[8];
    uint64_t v = 0;
    if (write_all(fd, banner_stat, BANNER_LEN) != 0 || read_all(fd, c, 8) != 0)
        die("stat");
    for (int b = 0; b < 8; b++)
        v = v << 8 | c[b];
    close(fd);
    return v;
}

static int tput(int port, int conns, double seconds, size_t chunk, int backend_port)
{
    uint64_t before = backend_total(backend_port);
    int ep = epoll_create1(0);
    int *fds = calloc((size_t)conns, sizeof *fds);
    char *data = malloc(chunk);
    for (size_t i = 0; i < chunk; i++)
        data[i] = (char)(i * 131 + 7);
    for (int i = 0; i < conns; i++) {
        fds[i] = connect_to(port);
        if (write_all(fds[i], banner_tput, BANNER_LEN) != 0)
            die("banner");
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
    }
    size_t *off = calloc((size_t)conns, sizeof *off); /* position in the current chunk */
    double t0 = now_s(), end = t0 + seconds;
    struct epoll_event evs[256];
    int errors = 0;
    while (now_s() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            for (int rounds = 0; rounds < 4; rounds++) {
                ssize_t w = write(fds[i], data + off[i], chunk - off[i]);
                if (w < 0) {
                    if (errno != EAGAIN) {
                        errors++;
                        epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                    }
                    break;
                }
                off[i] = (off[i] + (size_t)w) % chunk;
            }
        }
    }
    /* What is still in socket buffers and pipes arrives: wait until the
     * backend's total holds still for 200 ms (at most 10 s). */
    uint64_t last = backend_total(backend_port), total;
    double still = now_s(), give_up = still + 10;
    for (;;) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        total = backend_total(backend_port);
        if (total != last) {
            last = total;
            still = now_s();
        } else if (now_s() - still >= 0.2 || now_s() > give_up) {
            break;
        }
    }
    double secs = still - t0;
    int ok = 0;
    for (int i = 0; i < conns; i++) {
        /* A connection the server dropped reads EOF or an error now. */
        char c;
        ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN)
            ok++;
    }
    total -= before;
    printf("bytes %llu conns_ok %d errors %d seconds %.3f\n", (unsigned long long)total, ok, errors,
           secs);
    /* FWDLOAD_HOLD: keep the connections open until stdin ends, so that the
     * caller can read the CPU time of a server that forks per connection
     * while its children are alive. */
    if (getenv("FWDLOAD_HOLD")) {
        char b[64];
        while (read(0, b, sizeof b) > 0)
            ;
    }
    for (int i = 0; i < conns; i++)
        close(fds[i]);
    return errors ? 1 : 0;
}

/* ---- ping-pong latency --------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int ping(int port, int rounds, size_t size)
{
    int fd = connect_to(port);
    if (write_all(fd, banner_ping, BANNER_LEN) != 0)
        die("banner");
    char *out = malloc(size), *in = malloc(size);
    memset(out, 'p', size);
    int warm = rounds / 10, errors = 0;
    double *lat = calloc((size_t)rounds, sizeof *lat);
    for (int i = 0; i < warm + rounds; i++) {
        double t = now_s();
        if (write_all(fd, out, size) != 0 || read_all(fd, in, size) != 0) {
            errors++;
            break;
        }
        if (i >= warm)
            lat[i - warm] = (now_s() - t) * 1e6;
    }
    close(fd);
    if (errors) {
        printf("p50_us 0 p90_us 0 p99_us 0 rounds 0 errors %d\n", errors);
        return 1;
    }
    qsort(lat, (size_t)rounds, sizeof *lat, cmp_double);
    printf("p50_us %.1f p90_us %.1f p99_us %.1f rounds %d errors 0\n", lat[rounds / 2],
           lat[rounds * 9 / 10], lat[rounds * 99 / 100], rounds);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "backend") == 0)
        backend(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "tput") == 0)
        return tput(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), (size_t)atol(argv[5]),
                    atoi(argv[6]));
    if (argc == 5 && strcmp(argv[1], "ping") == 0)
        return ping(atoi(argv[2]), atoi(argv[3]), (size_t)atol(argv[4]));
    fprintf(stderr, "usage: fwdload backend PORT | tput PORT CONNS SECONDS CHUNK BACKEND_PORT | "
                    "ping PORT ROUNDS SIZE\n");
    return 2;
}
