/* Listeners: TCP (one SO_REUSEPORT socket per worker, so the kernel spreads
 * connections without a shared accept queue), Unix and inherited fds (one
 * socket shared by all workers with EPOLLEXCLUSIVE), and the accept path with
 * its limits. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        snprintf(out, len, "unix");
    }
}

/* Split "host:port" / "[v6]:port". */
int px__split_host_port(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        if ((size_t)(end - addr - 1) >= hostlen)
            return -EINVAL;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hostlen)
            return -EINVAL;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= portlen)
        return -EINVAL;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -EINVAL;
    if (atol(p) > 65535)
        return -EINVAL;
    memcpy(port, p, strlen(p) + 1);
    return 0;
}

static int tcp_socket(const struct sockaddr *sa, socklen_t salen, int backlog)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        goto fail;
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, sa, salen) != 0 || listen(fd, backlog) != 0)
        goto fail;
    return fd;
fail:;
    int e = -errno;
    close(fd);
    return e;
}

static int open_tcp(px_server_t *s, px__listener_t *l, const char *addr, int backlog)
{
    char host[256], port[8];
    if (px__split_host_port(addr, host, sizeof host, port, sizeof port) != 0)
        return -EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || !res)
        return -EINVAL;
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    socklen_t sslen = res->ai_addrlen;
    freeaddrinfo(res);

    /* SO_REUSEPORT would let us join another process's port group and steal
     * its connections: a plain bind first proves the port is free. */
    int port_given = ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port != 0
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port != 0;
    if (port_given) {
        int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        int one = 1;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ss.ss_family == AF_INET6)
            setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        int e = bind(probe, (struct sockaddr *)&ss, sslen) == 0 ? 0 : -errno;
        close(probe);
        if (e)
            return e;
    }
    unsigned n = px_workers_count(s->workers);
    l->kind = PX__LISTEN_TCP;
    l->shared_fd = -1;
    l->worker_fds = px__xcalloc(n, sizeof(int));
    l->nfds = n;
    for (unsigned i = 0; i < n; i++)
        l->worker_fds[i] = -1;
    for (unsigned i = 0; i < n; i++) {
        int fd = tcp_socket((struct sockaddr *)&ss, sslen, backlog);
        if (fd < 0) {
            px__listener_close(l);
            return fd;
        }
        l->worker_fds[i] = fd;
        if (i == 0) {
            /* Port 0: every other worker binds the port the kernel chose. */
            socklen_t len = sizeof ss;
            getsockname(fd, (struct sockaddr *)&ss, &len);
            sslen = len;
            format_addr((struct sockaddr *)&ss, l->name, sizeof l->name);
        }
    }
    return 0;
}

static int open_unix(px__listener_t *l, const char *path, int backlog)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof un.sun_path)
        return -EINVAL;
    memcpy(un.sun_path, path, strlen(path) + 1);
    /* A socket file left by a previous run that died is stale: remove it, but
     * never remove anything that is not a socket. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        /* Stale only if nobody answers: never take over a live server's socket. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        int live = connect(probe, (struct sockaddr *)&un, sizeof un) == 0 || errno != ECONNREFUSED;
        close(probe);
        if (live)
            return -EADDRINUSE;
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&un, sizeof un) != 0 || listen(fd, backlog) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    l->kind = PX__LISTEN_UNIX;
    l->shared_fd = fd;
    l->unix_path = px__xstrdup(path);
    snprintf(l->name, sizeof l->name, "unix:%s", path);
    return 0;
}

static int open_fd(px__listener_t *l, const char *num)
{
    char *end;
    long v = strtol(num, &end, 10);
    if (!*num || *end || v < 0 || v > 1 << 20)
        return -EINVAL;
    int fd = (int)v;
    int acc = 0;
    socklen_t len = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0)
        return errno == ENOTSOCK ? -ENOTSOCK : -EBADF;
    if (!acc)
        return -EINVAL;
    int r = set_nonblock(fd);
    if (r)
        return r;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    l->kind = PX__LISTEN_FD;
    l->shared_fd = fd;
    snprintf(l->name, sizeof l->name, "fd:%d", fd);
    return 0;
}

int px__listener_open(px_server_t *s, px__listener_t *l, const char *addr, int backlog)
{
    memset(l, 0, sizeof *l);
    l->shared_fd = -1;
    if (strncmp(addr, "unix:", 5) == 0)
        return open_unix(l, addr + 5, backlog);
    if (strncmp(addr, "fd:", 3) == 0)
        return open_fd(l, addr + 3);
    return open_tcp(s, l, addr, backlog);
}

void px__listener_close(px__listener_t *l)
{
    if (l->worker_fds) {
        for (unsigned i = 0; i < l->nfds; i++)
            if (l->worker_fds[i] >= 0)
                close(l->worker_fds[i]);
        px__free(l->worker_fds);
        l->worker_fds = NULL;
    }
    if (l->shared_fd >= 0 && l->kind == PX__LISTEN_UNIX) {
        close(l->shared_fd);
        if (l->unix_path)
            unlink(l->unix_path);
    } else if (l->shared_fd >= 0) {
        close(l->shared_fd); /* an inherited fd: ours to close at exit */
    }
    l->shared_fd = -1;
    px__free(l->unix_path);
    l->unix_path = NULL;
    px__free(l->protocol);
    l->protocol = NULL;
}

int px__listener_fd(const px__listener_t *l, unsigned worker)
{
    return l->kind == PX__LISTEN_TCP ? l->worker_fds[worker] : l->shared_fd;
}

static void reject(px_server_t *s, int fd)
{
    if (s->reject_len) {
        /* Best effort, non-blocking: a fresh socket's send buffer is empty. */
        ssize_t r = send(fd, s->reject_msg, s->reject_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r;
        shutdown(fd, SHUT_WR);
    }
    close(fd);
    px_metric_add(px__m_rejected, 1);
}

void px__on_listen_readable(px_io_t *io, unsigned events)
{
    PX_UNUSED(events);
    px__netw_t *nw = io->data;
    px_server_t *s = nw->server;
    unsigned li = (unsigned)(io - nw->listen_io);
    px__listener_t *l = &s->listeners[li];
    /* Bounded batch: other connections on this worker must not wait for a
     * connection storm to end. */
    for (int i = 0; i < 64 && !nw->draining; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds: the pending connection would make a level-
                 * triggered listener spin. Give up the reserve fd, accept and
                 * close the connection, take the reserve back. */
                int rejected = 0;
                if (nw->reserve_fd >= 0) {
                    close(nw->reserve_fd);
                    fd = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0) {
                        reject(s, fd);
                        rejected = 1;
                    }
                    nw->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                uint64_t now = px_loop_now(nw->loop);
                if (rejected && now - nw->emfile_logged_ms >= 1000) {
                    nw->emfile_logged_ms = now; /* at most one line a second */
                    px_log(PX_LOG_WARN, "out of file descriptors: rejecting connections");
                }
                if (!rejected || nw->reserve_fd < 0) {
                    /* No reserve (another thread took the number) or nothing was
                     * pending: stop watching the listeners for a moment rather
                     * than spin on them. */
                    for (unsigned k = 0; k < s->nlisteners; k++)
                        px_io_stop(&nw->listen_io[k]);
                    px_timer_start(nw->loop, &nw->accept_retry, 100);
                    return;
                }
                continue;
            }
            px_log(PX_LOG_ERROR, "accept: %s", strerror(errno));
            return;
        }
        /* Counted first, then checked: workers accepting at once cannot both
         * take the last place. */
        unsigned n = atomic_fetch_add_explicit(&s->nconns, 1, memory_order_relaxed);
        int over = n >= s->opts.max_connections;
        if (l->max_connections && /* counted only where limited */
            atomic_fetch_add_explicit(&l->nconns, 1, memory_order_relaxed) >= l->max_connections)
            over = 1;
        if (over) {
            atomic_fetch_sub_explicit(&s->nconns, 1, memory_order_relaxed);
            if (l->max_connections)
                atomic_fetch_sub_explicit(&l->nconns, 1, memory_order_relaxed);
            reject(s, fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix */
        if (!px__conn_new(nw, fd, li)) {
            atomic_fetch_sub_explicit(&s->nconns, 1, memory_order_relaxed);
            if (l->max_connections)
                atomic_fetch_sub_explicit(&l->nconns, 1, memory_order_relaxed);
            close(fd);
        }
    }
}

void px__accept_retry(px_timer_t *t)
{
    px__netw_t *nw = t->data;
    px_server_t *s = nw->server;
    if (nw->draining)
        return;
    if (nw->reserve_fd < 0)
        nw->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (unsigned k = 0; k < s->nlisteners; k++) {
        px__listener_t *l = &s->listeners[k];
        unsigned ev = PX_READABLE | (l->kind == PX__LISTEN_TCP ? 0u : (unsigned)PX_EXCLUSIVE);
        px_io_start(nw->loop, &nw->listen_io[k], ev);
    }
}
