/* The socket transport layer, and the prefix layer that replays bytes read
 * before a layer was pushed (see transport.h). */
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "net/net_int.h"
#include "net/transport.h"

/* ---- plain socket ------------------------------------------------------------------ */

/* Hot path: one recv/send(msg) each, errno converted once, on the error path
 * only. EAGAIN becomes the direction to wait for. */

static ssize_t plain_read(px__transport_t *t, px_conn_t *c, void *buf, size_t len)
{
    PX_UNUSED(t);
    ssize_t n = recv(c->io.fd, buf, len, 0);
    if (PX_LIKELY(n >= 0))
        return n;
    return errno == EAGAIN ? PX__WANT_READ : -errno;
}

static ssize_t plain_writev(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int iovcnt)
{
    PX_UNUSED(t);
    ssize_t n;
    if (iovcnt == 1) { /* the common case (one response, one frame batch): no iovec to import */
        n = send(c->io.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
        n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
    }
    if (PX_LIKELY(n >= 0))
        return n;
    return errno == EAGAIN ? PX__WANT_WRITE : -errno;
}

static ssize_t plain_sendfile(px__transport_t *t, px_conn_t *c, int fd, off_t *off, size_t len)
{
    PX_UNUSED(t);
    ssize_t n = sendfile(c->io.fd, fd, off, len);
    if (n >= 0)
        return n;
    return errno == EAGAIN ? PX__WANT_WRITE : -errno;
}

static int plain_shutdown(px__transport_t *t, px_conn_t *c)
{
    PX_UNUSED(t);
    return shutdown(c->io.fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void plain_close(px__transport_t *t, px_conn_t *c)
{
    PX_UNUSED(t);
    close(c->io.fd);
}

static const px__transport_ops_t plain_ops = {
    .name = "tcp",
    .read = plain_read,
    .writev = plain_writev,
    .sendfile = plain_sendfile,
    .shutdown = plain_shutdown,
    .close = plain_close,
};

/* Stateless: shared by every plain connection of every worker (never written). */
px__transport_t px__transport_plain = {.ops = &plain_ops, .lower = NULL};

/* ---- prefix: replay bytes read before the layer above was pushed --------------------- */

typedef struct prefix {
    px__transport_t base;
    size_t off, len; /* data[off..len) not yet returned */
    char data[];
} prefix_t;

static ssize_t prefix_read(px__transport_t *t, px_conn_t *c, void *buf, size_t len)
{
    prefix_t *p = (prefix_t *)t;
    if (p->off == p->len)
        return t->lower->ops->read(t->lower, c, buf, len);
    size_t n = p->len - p->off < len ? p->len - p->off : len;
    memcpy(buf, p->data + p->off, n);
    p->off += n;
    return (ssize_t)n;
}

static ssize_t prefix_writev(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int iovcnt)
{
    return t->lower->ops->writev(t->lower, c, iov, iovcnt);
}

static ssize_t prefix_sendfile(px__transport_t *t, px_conn_t *c, int fd, off_t *off, size_t len)
{
    return t->lower->ops->sendfile(t->lower, c, fd, off, len);
}

static size_t prefix_pending(px__transport_t *t, px_conn_t *c)
{
    prefix_t *p = (prefix_t *)t;
    return p->len - p->off + px__transport_pending(t->lower, c);
}

static int prefix_shutdown(px__transport_t *t, px_conn_t *c)
{
    return t->lower->ops->shutdown(t->lower, c);
}

static void prefix_close(px__transport_t *t, px_conn_t *c)
{
    PX_UNUSED(c);
    px__free(t);
}

/* Two tables: sendfile is offered exactly when the layer below offers it. */
static const px__transport_ops_t prefix_ops = {
    .name = "prefix",
    .read = prefix_read,
    .writev = prefix_writev,
    .sendfile = prefix_sendfile,
    .pending = prefix_pending,
    .shutdown = prefix_shutdown,
    .close = prefix_close,
};

static const px__transport_ops_t prefix_ops_nosendfile = {
    .name = "prefix",
    .read = prefix_read,
    .writev = prefix_writev,
    .pending = prefix_pending,
    .shutdown = prefix_shutdown,
    .close = prefix_close,
};

int px__transport_prefix_new(px__transport_t *lower, const void *data, size_t len,
                             px__transport_t **out)
{
    prefix_t *p = px__malloc(sizeof *p + len);
    if (!p)
        return -ENOMEM;
    p->base.ops = lower->ops->sendfile ? &prefix_ops : &prefix_ops_nosendfile;
    p->base.lower = lower;
    p->off = 0;
    p->len = len;
    if (len)
        memcpy(p->data, data, len);
    *out = &p->base;
    return 0;
}
