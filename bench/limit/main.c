/* limit: the floor for bench/http.sh, a minimal HTTP/1.1 server that sends
 * prebuilt responses (issue 17).
 *
 *   limit --listen 127.0.0.1:PORT [--workers 1]
 *
 * One thread, level-triggered epoll. Per readable connection: one read, every
 * complete request in it answered from a prebuilt response (GET /plaintext,
 * GET /json: the bytes examples/hello sends; anything else 404), then one
 * write for the whole batch (what the socket does not take waits for
 * EPOLLOUT, and reading stops meanwhile). The Date header is patched in the
 * prebuilt responses once a second. No parser beyond finding the end of each
 * head and the path of its request line: requests with a body are refused
 * (400, close). What plexus does per request above this is its overhead. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#define IN_MAX  (64 * 1024) /* unanswered bytes kept per connection (a partial head) */
#define OUT_MAX (1 << 20)   /* the responses of one read */

typedef struct conn {
    int fd;
    size_t in_len, out_len, out_off;
    char *in, *out; /* a partial head; responses the socket did not take (NULL if none) */
    int close_after;
} conn_t;

typedef struct resp {
    char buf[256];
    size_t len;
    size_t date_at; /* offset of the 29-byte date value */
} resp_t;

static resp_t plaintext, json, notfound, badreq;
static time_t date_second;
static volatile sig_atomic_t stop;

static void build(resp_t *r, const char *status, const char *type, const char *body)
{
    r->len = (size_t)snprintf(r->buf, sizeof r->buf,
                              "HTTP/1.1 %s\r\nServer: limit\r\nDate: %29s\r\nContent-Type: "
                              "%s\r\nContent-Length: %zu\r\n\r\n%s",
                              status, "", type, strlen(body), body);
    r->date_at = (size_t)(strstr(r->buf, "Date: ") - r->buf) + 6;
}

static void patch_dates(void)
{
    time_t now = time(NULL);
    if (now == date_second)
        return;
    date_second = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    char d[32];
    strftime(d, sizeof d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    resp_t *all[] = {&plaintext, &json, &notfound, &badreq};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        memcpy(all[i]->buf + all[i]->date_at, d, 29);
}

/* The batch's responses go to one shared buffer; only what the socket does not
 * take is copied to the connection (c->out). */
static char obuf[OUT_MAX];
static size_t olen;

static int out_add(const resp_t *r)
{
    if (olen + r->len > sizeof obuf)
        return -1;
    memcpy(obuf + olen, r->buf, r->len);
    olen += r->len;
    return 0;
}

/* Answer every complete head in p[0..n); returns the bytes used, -1 to close. */
static ssize_t answer(conn_t *c, const char *p, size_t n)
{
    size_t used = 0;
    for (;;) {
        const char *end = memmem(p + used, n - used, "\r\n\r\n", 4);
        if (!end)
            return (ssize_t)used;
        const char *h = p + used;
        size_t hl = (size_t)(end + 4 - h);
        const resp_t *r = &notfound;
        if (hl >= 4 && memcmp(h, "GET ", 4) != 0) {
            r = &badreq; /* (a body would follow: not this server's business) */
            c->close_after = 1;
        } else if (hl > 15 && memcmp(h + 4, "/plaintext ", 11) == 0) {
            r = &plaintext;
        } else if (hl > 10 && memcmp(h + 4, "/json ", 6) == 0) {
            r = &json;
        }
        if (out_add(r) != 0)
            return -1;
        used += hl;
        if (c->close_after)
            return (ssize_t)used;
    }
}

static void conn_free(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* 0: all written; 1: the socket is full (wait for EPOLLOUT); -1: dead. */
static int flush(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k < 0)
            return errno == EAGAIN ? 1 : -1;
        c->out_off += (size_t)k;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 0;
}

/* One write for the batch in obuf; the rest is kept. Same returns as flush. */
static int send_batch(conn_t *c)
{
    size_t n = olen, off = 0;
    olen = 0;
    while (off < n) {
        ssize_t k = send(c->fd, obuf + off, n - off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno != EAGAIN)
                return -1;
            c->out = malloc(n - off);
            if (!c->out)
                return -1;
            memcpy(c->out, obuf + off, n - off);
            c->out_len = n - off;
            c->out_off = 0;
            return 1;
        }
        off += (size_t)k;
    }
    return 0;
}

static void on_conn(int ep, conn_t *c, unsigned events, char *rbuf, size_t rcap)
{
    if (events & EPOLLOUT) {
        int r = flush(c);
        if (r < 0 || (r == 0 && c->close_after)) {
            conn_free(ep, c);
            return;
        }
        if (r == 1)
            return;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    /* Read after any kept partial head, in the shared buffer. */
    size_t have = c->in_len;
    if (have)
        memcpy(rbuf, c->in, have);
    ssize_t k = recv(c->fd, rbuf + have, rcap - have, 0);
    if (k == 0 || (k < 0 && errno != EAGAIN)) {
        conn_free(ep, c);
        return;
    }
    if (k < 0)
        return;
    size_t n = have + (size_t)k;
    ssize_t used = answer(c, rbuf, n);
    if (used < 0 || (n - (size_t)used) > IN_MAX) {
        olen = 0;
        conn_free(ep, c);
        return;
    }
    size_t left = n - (size_t)used;
    if (left && !c->close_after) {
        char *p = realloc(c->in, left);
        if (!p) {
            olen = 0;
            conn_free(ep, c);
            return;
        }
        c->in = p;
        memcpy(c->in, rbuf + used, left);
    } else {
        free(c->in);
        c->in = NULL;
    }
    c->in_len = c->close_after ? 0 : left;
    if (!olen)
        return;
    int r = send_batch(c);
    if (r < 0 || (r == 0 && c->close_after)) {
        conn_free(ep, c);
    } else if (r == 1) {
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            listen_at = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            i++; /* always one thread */
        else
            listen_at = NULL, i = argc;
    }
    const char *colon = listen_at ? strrchr(listen_at, ':') : NULL;
    if (!colon) {
        fprintf(stderr, "usage: limit --listen HOST:PORT [--workers 1]\n");
        return 2;
    }
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen_at), listen_at);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "limit: bad address %s\n", listen_at);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0) {
        perror("limit: listen");
        return 1;
    }
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGPIPE, SIG_IGN);
    build(&plaintext, "200 OK", "text/plain", "Hello, World!");
    build(&json, "200 OK", "application/json", "{\"message\":\"Hello, World!\"}");
    build(&notfound, "404 Not Found", "text/plain", "not found");
    build(&badreq, "400 Bad Request", "text/plain", "bad request");
    patch_dates();

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    static char rbuf[IN_MAX + 64 * 1024];
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 1000);
        patch_dates();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                on_conn(ep, evs[i].data.ptr, evs[i].events, rbuf, sizeof rbuf);
                continue;
            }
            for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    break;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conn_t *c = calloc(1, sizeof *c);
                if (!c) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            }
        }
    }
    return 0;
}
