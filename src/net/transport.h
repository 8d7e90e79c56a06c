/* Transports: how a connection's bytes move (internal to src/net).
 *
 * A connection (src/net/conn.c) reads, writes and shuts down through the top of
 * a stack of transport layers. The bottom layer is the socket (plain, in
 * transport_plain.c); layers above it transform the bytes (TLS, issue 12) or
 * replay bytes that were read before the layer was pushed (the prefix layer,
 * which lets a sniffer read the first bytes and then put TLS under them).
 * Protocols never see which layers there are. docs/internals/connections.md
 * describes the whole picture.
 *
 * Contract of every layer:
 * - All operations run on the connection's worker thread, only from
 *   src/net/conn.c (or from the layer above, for the layer below).
 * - read/writev/sendfile/handshake/shutdown return a byte count or 0 (see each
 *   one), PX__WANT_READ or PX__WANT_WRITE when the operation cannot progress
 *   until the socket is readable / writable, or another -errno (the connection
 *   is dead). A TLS read may need the socket writable and a write may need it
 *   readable: the connection arms exactly what was asked for and retries the
 *   same operation when that event arrives.
 * - A write that returned PX__WANT_* is retried with the same leading bytes
 *   (possibly more, possibly at another address): a TLS layer sets OpenSSL's
 *   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE.
 * - pending() > 0 promises that the next read returns bytes without the socket
 *   becoming readable (OpenSSL keeps decrypted records: SSL_pending). The
 *   connection then reads again from its deferred callback; epoll would never
 *   wake it for bytes that are no longer in the socket. A layer counts what
 *   the layers below it hold too (px__transport_pending does it for layers
 *   that only delegate).
 * - close() releases this layer's own state only; the connection closes the
 *   layers top-down, and the bottom layer closes the socket. */
#ifndef PX_NET_TRANSPORT_H
#define PX_NET_TRANSPORT_H

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "plexus/net.h"

/* Retry when the socket is readable / writable. Outside the errno range, so a
 * layer can return them next to -errno without ambiguity. */
#define PX__WANT_READ  (-10001)
#define PX__WANT_WRITE (-10002)

typedef struct px__transport px__transport_t;
typedef struct px__transport_ops px__transport_ops_t;

/** One layer. Implementations embed it first in their own state. The plain
 * socket layer has no state beyond the fd (c->io.fd), so every plain
 * connection shares one static instance (px__transport_plain): a plain
 * connection costs no allocation and its read is one indirect call to recv. */
struct px__transport {
    const px__transport_ops_t *ops;
    px__transport_t *lower; /* the layer below; NULL at the bottom (the socket) */
};

struct px__transport_ops {
    const char *name; /* "tcp", "prefix", "tls", ... (logs) */
    /** One step of the layer's handshake (NULL: none). 0 when done, PX__WANT_*,
     * or -errno (the handshake failed; the connection is aborted). The
     * connection calls it again on the wanted event until it returns 0. */
    int (*handshake)(px__transport_t *t, px_conn_t *c);
    /** > 0 bytes read, 0 on end of stream, PX__WANT_*, or -errno. */
    ssize_t (*read)(px__transport_t *t, px_conn_t *c, void *buf, size_t len);
    /** Bytes written (> 0, may be partial), PX__WANT_*, or -errno. iovcnt >= 1,
     * total length > 0. */
    ssize_t (*writev)(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int iovcnt);
    /** Send `len` bytes of file `fd` from *off, advancing it (NULL: the
     * connection falls back to pread + writev, 16 KiB at a time). */
    ssize_t (*sendfile)(px__transport_t *t, px_conn_t *c, int fd, off_t *off, size_t len);
    /** Bytes readable without waiting for the socket (NULL: never any). */
    size_t (*pending)(px__transport_t *t, px_conn_t *c);
    /** End the write direction after the last byte (TCP: SHUT_WR; TLS:
     * close_notify, then the layer below). 0, PX__WANT_*, or -errno. */
    int (*shutdown)(px__transport_t *t, px_conn_t *c);
    /** Release this layer (the bottom layer closes the socket). */
    void (*close)(px__transport_t *t, px_conn_t *c);
    /** The connection's addresses as this layer knows them (NULL: ask the
     * layer below, and at the bottom the socket). The PROXY protocol layer
     * (sniff.c) answers with the client a trusted load balancer named. 0, or
     * -errno to fall back to the socket. */
    int (*addresses)(px__transport_t *t, px_conn_t *c, struct sockaddr_storage *peer,
                     struct sockaddr_storage *local);
};

/** What px_listen_opts_t.transport and px_connect_opts_t.transport point to: a
 * recipe for a layer, shared by every connection that uses it (a TLS factory
 * holds the SSL_CTX). Must outlive the server. Implementations embed it first
 * (or keep `ud`). */
struct px_transport_factory {
    const char *name;
    /** Build a layer for `c` on top of `lower` (the connection's current top)
     * into *out. 0 or -errno. Runs on the connection's worker. */
    int (*create)(const px_transport_factory_t *f, px_conn_t *c, px__transport_t *lower,
                  px__transport_t **out);
    void *ud;
};

/** The socket layer (transport_plain.c): recv, send/sendmsg, sendfile, SHUT_WR. */
extern px__transport_t px__transport_plain;

/** A layer that first returns a copy of `p` (bytes read before the layer above
 * existed), then reads from `lower`; everything else goes to `lower`.
 * (transport_plain.c) */
int px__transport_prefix_new(px__transport_t *lower, const void *p, size_t len,
                             px__transport_t **out);

/** Bytes `t` (and what is below it) can deliver without the socket. */
static inline size_t px__transport_pending(px__transport_t *t, px_conn_t *c)
{
    for (; t; t = t->lower)
        if (t->ops->pending)
            return t->ops->pending(t, c);
    return 0;
}

#endif
