/* TLS transport layer (internal to src/net; the public side is plexus/tls.h).
 *
 * A px__tls_ctx_t (= px_tls_t) holds the loaded certificates as one SSL_CTX per
 * certificate, swapped as a whole by a reload (open connections keep the
 * contexts they started with: OpenSSL reference-counts them), the session
 * ticket keys (kept across reloads) and the transport factory. Its layer owns
 * one SSL per connection; its BIO reads and writes through the layer below
 * (the socket, or the prefix layer replaying bytes a sniffer read), except
 * that with kernel TLS the write side is the socket itself (OpenSSL programs
 * the kernel through it, and SSL_sendfile then sends files).
 *
 * After the handshake the protocol is chosen by ALPN: "h2" when negotiated
 * (offered only while a protocol of that name is registered), else the
 * listener's first protocol (a listener built with px_server_listen_tls), or
 * "http/1.1" (a layer pushed by px__tls_push). */
#ifndef PX_NET_TLS_H
#define PX_NET_TLS_H

#include "plexus/tls.h"

typedef struct px_tls px__tls_ctx_t;

px__tls_ctx_t *px__tls_ctx_new(const px_tls_opts_t *o, char *err, size_t errlen);
void px__tls_ctx_free(px__tls_ctx_t *ctx);
/* SIGHUP: load every file again; a failure keeps the current certificates,
 * and err says why. 0 or -errno. */
int px__tls_ctx_reload(px__tls_ctx_t *ctx, char *err, size_t errlen);

/**
 * Terminate TLS on an open connection whose first bytes (a ClientHello) a
 * chooser has read: call from the chooser's on_read and return 0, like after
 * px_conn_start_protocol. The bytes presented to that on_read are then
 * replayed beneath a new TLS layer (prefix layer), the handshake runs (bounded
 * by the listener's handshake timeout; failures are counted and logged), and
 * afterwards the protocol chosen by ALPN starts ("h2" or "http/1.1"). The
 * chooser hands the connection over: it frees its own state first, and gets
 * no further callback. 0, -EINVAL (closing, or not open), -ENOMEM.
 */
int px__tls_push(px_conn_t *c, px__tls_ctx_t *ctx);

/* After the handshake: the server name the client asked for (NULL if none)
 * and the protocol ALPN chose (NULL if none). NULL too on a connection
 * without TLS. Valid while the connection is. */
const char *px__tls_sni(const px_conn_t *c);
const char *px__tls_alpn(const px_conn_t *c);

#endif
