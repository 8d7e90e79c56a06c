/* Outbound connections (px_conn_connect): a non-blocking connect(2) to a TCP
 * or unix address, whose outcome reaches the protocol's on_connect from the
 * loop. The connection is then an ordinary px_conn_t of the calling worker
 * (conn.c: PX__CONNECTING, then the transport handshake, then OPEN). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/net_int.h"

void px_connect_opts_init(px_connect_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = 10000;
}

/* Numeric addresses only, plus "localhost": a name lookup would block the
 * worker (resolve names at configuration time instead). */
int px__connect_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        const char *path = addr + 5;
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof un->sun_path)
            return -EINVAL;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, n + 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    char host[64], port[8];
    if (px__split_host_port(addr, host, sizeof host, port, sizeof port) != 0)
        return -EINVAL;
    unsigned pn = (unsigned)atoi(port);
    if (pn == 0)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0)
        memcpy(host, "127.0.0.1", sizeof "127.0.0.1");
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)pn);
        *len = sizeof *in;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)pn);
        *len = sizeof *in6;
        return 0;
    }
    return -EINVAL;
}

int px__conn_connect(px__netw_t *nw, const char *addr, const px_connect_opts_t *o,
                     const px_protocol_t *p, void *state, px_conn_t **out)
{
    px_connect_opts_t defaults;
    if (!o) {
        px_connect_opts_init(&defaults);
        o = &defaults;
    }
    if (!addr || !p || !p->on_read)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len;
    int r = px__connect_addr(addr, &ss, &len);
    if (r)
        return r;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int err = 0;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS)
        err = -errno; /* refused, no such path, a full unix backlog (EAGAIN): from the loop */
    px_conn_t *c = px__conn_outbound(nw, fd, err, o, p, state);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

int px_conn_connect(px_server_t *s, const char *addr, const px_connect_opts_t *o,
                    const px_protocol_t *p, void *state, px_conn_t **out)
{
    px_worker_t *w = px_worker_self();
    if (!w || px_worker_group(w) != s->workers)
        return -EPERM;
    return px__conn_connect(&s->nw[px_worker_id(w)], addr, o, p, state, out);
}
