/* plexus — TLS (OpenSSL 3) for listeners.
 *
 *   px_tls_opts_t to;
 *   px_tls_opts_init(&to);
 *   const char *certs[] = {"fullchain.pem"}, *keys[] = {"privkey.pem"};
 *   to.cert_files = certs; to.key_files = keys; to.ncerts = 1;
 *   char err[256];
 *   px_tls_t *tls = px_tls_new(&to, err, sizeof err);      // NULL: err says why
 *   px_listen_opts_t lo;
 *   px_listen_opts_init(&lo);
 *   lo.addr = "0.0.0.0:443";
 *   px_server_listen_tls(s, &lo, tls);
 *   ... px_server_run(s); px_server_free(s); px_tls_free(tls);
 *
 * What every TLS connection gets: TLS 1.2 and 1.3 only, the Mozilla
 * "intermediate" cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305 for
 * TLS 1.2, the TLS 1.3 defaults), groups X25519, P-256, P-384; no compression,
 * no renegotiation; ALPN ("h2" is offered only while a protocol named "h2" is
 * registered on the server, then "http/1.1"); the certificate chosen by SNI
 * (exact names and wildcards from each certificate's subjectAltName; the first
 * certificate for clients that send no name or an unknown one); session
 * resumption by tickets (keys rotated) and by a server session cache; OCSP
 * stapling for certificates given a staple file; kernel TLS when the kernel
 * and OpenSSL offer it (static files then keep sendfile). docs/tls.md has the
 * set-up and every option of the plexus binary. */
#ifndef PLEXUS_TLS_H
#define PLEXUS_TLS_H

#include "plexus/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_tls px_tls_t;

typedef struct px_tls_opts {
    /** Certificate chains (PEM, the leaf first, then intermediates) and their
     * private keys (PEM, unencrypted), in pairs: cert_files[i] goes with
     * key_files[i]. The first pair is the default certificate. */
    const char *const *cert_files;
    const char *const *key_files;
    unsigned ncerts;
    /** A directory of more certificates, taken after cert_files in name order:
     * NAME.crt with NAME.key, NAME.pem holding both, or a subdirectory with
     * fullchain.pem and privkey.pem (certbot's live/ layout); NAME.ocsp next to
     * a NAME.crt or NAME.pem is its OCSP staple. NULL = none. */
    const char *cert_dir;
    /** OCSP responses (DER, as `openssl ocsp -respout` writes them) to staple.
     * Each is matched to the certificate it is about (issuer and serial in the
     * response); one that matches no certificate is an error. */
    const char *const *ocsp_files;
    unsigned nocsp;
    /** Session ticket keys are replaced this often; a ticket stays valid for
     * one interval (the previous key still decrypts). 0 = no tickets (TLS 1.3
     * then resumes from the session cache). Default 1 h. */
    uint64_t ticket_rotation_ms;
    /** Server session cache entries (TLS 1.2 session ids; TLS 1.3 without
     * tickets). 0 = off. Default 20480. */
    unsigned session_cache;
    /** Use kernel TLS when the kernel and OpenSSL offer it (default 1). */
    int ktls;
} px_tls_opts_t;

PX_EXTERN void px_tls_opts_init(px_tls_opts_t *o);
/** Load the certificates and keys (and staples) now. NULL on failure, with a
 * message in err naming the file and the problem ("certificate file X:
 * cannot read: No such file or directory", "key file Y: does not match
 * certificate file X"). Call before px_server_start; the object must outlive
 * every server that uses it. */
PX_EXTERN px_tls_t *px_tls_new(const px_tls_opts_t *o, char *err, size_t errlen);
/** Free (after px_server_free of every server using it). Accepts NULL. */
PX_EXTERN void px_tls_free(px_tls_t *t);
/** Load every file of the options again (SIGHUP after a renewal). New
 * connections use the new certificates; open connections keep theirs. On
 * failure (-EINVAL, -ENOMEM, ...) nothing changes and err says why. Any
 * thread. Ticket keys are kept, so tickets issued before stay valid. */
PX_EXTERN int px_tls_reload(px_tls_t *t, char *err, size_t errlen);
/** Number of certificates loaded, and the names certificate i answers for
 * (comma-separated, "" if none), for logs. */
PX_EXTERN unsigned px_tls_cert_count(px_tls_t *t);
PX_EXTERN int px_tls_cert_names(px_tls_t *t, unsigned i, char *buf, size_t len);
/** The transport factory (px_listen_opts_t.transport) of `t`. */
PX_EXTERN const px_transport_factory_t *px_tls_transport(px_tls_t *t);
/**
 * Add a listener whose connections speak TLS from the first byte: `o` with
 * the TLS transport. Once the handshake is done, ALPN chooses the protocol:
 * "h2" when negotiated, else o->protocol (NULL = the server's default). The
 * handshake is bounded by o->handshake_timeout_ms. Returns as
 * px_server_listen_opts.
 */
PX_EXTERN int px_server_listen_tls(px_server_t *s, const px_listen_opts_t *o, px_tls_t *t);

/**
 * Register the protocol "tls-redirect" on `s` (implemented by the HTTP layer):
 * the answer to plain HTTP on a port that requires TLS. GET and HEAD get a
 * 301 to https:// with the same Host and target; other methods a 400 with a
 * JSON body {"error":"tls_required",...}; then the connection closes. The
 * sniffer starts it on plain HTTP when a listener is TLS-only. 0 or -errno.
 */
PX_EXTERN int px_tls_redirect_register(px_server_t *s);

#ifdef __cplusplus
}
#endif
#endif
