/* The TLS transport (OpenSSL 3): contexts built from certificate files (one
 * SSL_CTX per certificate, chosen by SNI), reload without dropping
 * connections, session tickets with rotated keys, OCSP stapling, kernel TLS,
 * and the layer that maps OpenSSL's calls onto the transport contract of
 * transport.h. See tls.h and docs/tls.md. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"
#include "net/tls.h"
#include "net/transport.h"

/* Mozilla "intermediate": TLS 1.2 with ECDHE and AEAD ciphers only, the TLS
 * 1.3 suites, and the groups every current client has. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES   "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS     "X25519:P-256:P-384"
#define MAX_CERTS      1024  /* certificates in one context (flags + directory) */
#define MAX_NAMES      1000  /* names kept per certificate */
#define MAX_OCSP_BYTES 65536 /* an OCSP response file */
#define COALESCE       16384 /* small iovecs are copied into one record up to this */
#define SNI_MAX        253   /* longest DNS name */

/* ---- metrics ----------------------------------------------------------------------- */

enum {
    R_PROTOCOL_VERSION,
    R_NO_SHARED_CIPHER,
    R_BAD_SNI,
    R_TIMEOUT,
    R_HTTP_REQUEST,
    R_CLIENT_ALERT,
    R_CLOSED,
    R_OTHER,
    R_COUNT
};
static const char *const reason_names[R_COUNT] = {
    "protocol_version", "no_shared_cipher", "bad_sni", "timeout",
    "http_request",     "client_alert",     "closed",  "other",
};
static int m_fail[R_COUNT], m_full = -1, m_resumed = -1, m_ktls = -1;

static void register_metrics(void)
{
    for (int i = 0; i < R_COUNT; i++) {
        char name[96];
        snprintf(name, sizeof name, "plexus_tls_handshake_failures_total{reason=\"%s\"}",
                 reason_names[i]);
        m_fail[i] =
            px_metric_register(name, "TLS handshakes that failed, by reason", PX_METRIC_COUNTER);
    }
    m_full = px_metric_register("plexus_tls_handshakes_total{kind=\"full\"}",
                                "TLS handshakes completed (full, or resumed from a session)",
                                PX_METRIC_COUNTER);
    m_resumed = px_metric_register("plexus_tls_handshakes_total{kind=\"resumed\"}",
                                   "TLS handshakes completed (full, or resumed from a session)",
                                   PX_METRIC_COUNTER);
    m_ktls = px_metric_register("plexus_tls_ktls_connections_total",
                                "TLS connections whose records the kernel encrypts (kTLS send)",
                                PX_METRIC_COUNTER);
}

/* ---- contexts ------------------------------------------------------------------------ */

/* One certificate (with its chain and key) in its own SSL_CTX. */
typedef struct cert {
    SSL_CTX *ctx;
    X509 *leaf;   /* owned by ctx */
    char *file;   /* the certificate file, for logs */
    char **names; /* lower-case DNS names from subjectAltName (or the CN); "*.x" wildcards */
    unsigned nnames;
    unsigned char *ocsp; /* DER OCSP response to staple, or NULL */
    size_t ocsp_len;
    time_t ocsp_until; /* its nextUpdate (0: none given) */
} cert_t;

/* The certificates loaded by one load (start or reload). Referenced by the
 * px_tls_t while current and by each connection until its handshake ends (the
 * SNI and OCSP callbacks read it); the SSL objects reference the SSL_CTXs
 * themselves, so a connection outlives its conf. */
typedef struct conf {
    atomic_uint refs;
    cert_t *certs; /* certs[0] is the default */
    unsigned ncerts;
} conf_t;

typedef struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
} ticket_key_t;

struct px_tls {
    px_transport_factory_t factory; /* ud = this */
    /* The options, copied (a reload reads the same files again). */
    char **cert_files, **key_files, **ocsp_files;
    unsigned ncerts, nocsp;
    char *cert_dir;
    uint64_t ticket_rotation_ms;
    unsigned session_cache;
    int ktls;
    /* cur is swapped by a reload; a handshake takes a reference under the
     * lock, so the swap never frees a conf someone is about to use. */
    pthread_mutex_t lock;
    conf_t *cur;
    /* Session ticket keys: [0] encrypts, [0] and [1] decrypt. Kept across
     * reloads. Rotated lazily by the first handshake after the interval. */
    pthread_rwlock_t keys_lock;
    ticket_key_t keys[2];
    int have_prev;
    uint64_t keys_born_ms;
    EVP_CIPHER *aes; /* fetched once: an implicit fetch per ticket costs locks */
};

static void fmt(char *err, size_t errlen, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *err, size_t errlen, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    if (err && errlen)
        vsnprintf(err, errlen, f, ap);
    va_end(ap);
}

#define ENCRYPTED_KEY                                                                              \
    "the key is encrypted (plexus needs it unencrypted: it cannot ask for a passphrase)"

/* What OpenSSL said about the last failure, in words a user can act on (the
 * queue holds the whole story; the most telling entry wins). */
static const char *ssl_reason(char *buf, size_t len)
{
    const char *s = NULL, *first = NULL;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        int lib = ERR_GET_LIB(e), why = ERR_GET_REASON(e);
        if (lib == ERR_LIB_PEM && why == PEM_R_NO_START_LINE)
            s = "no PEM data of the expected kind found";
        else if ((lib == ERR_LIB_PEM &&
                  (why == PEM_R_BAD_PASSWORD_READ || why == PEM_R_PROBLEMS_GETTING_PASSWORD)) ||
                 (ERR_reason_error_string(e) &&
                  strcmp(ERR_reason_error_string(e), "bad decrypt") == 0)) /* EVP or provider */
            s = ENCRYPTED_KEY;
        else if (lib == ERR_LIB_SSL && why == SSL_R_EE_KEY_TOO_SMALL)
            s = "the key is too small (RSA needs at least 2048 bits)";
        else if (lib == ERR_LIB_SSL && why == SSL_R_CA_MD_TOO_WEAK)
            s = "the certificate is signed with a digest too weak (SHA-1 or MD5)";
        else if (!first && ERR_reason_error_string(e))
            first = ERR_reason_error_string(e);
    }
    snprintf(buf, len, "%s", s ? s : first ? first : "unknown error");
    return buf;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
    PX_UNUSED(buf);
    PX_UNUSED(size);
    PX_UNUSED(rwflag);
    PX_UNUSED(u);
    return 0; /* a passphrase prompt would block the server */
}

/* Does the PEM file hold an encrypted key? Read from the file itself: OpenSSL's
 * error queue keeps only its last 16 entries, and a failed decode fills it with
 * "unsupported" from every decoder it tried, which can push the telling one out. */
static int pem_encrypted(const char *path)
{
    char buf[16384];
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
           strstr(buf, "Proc-Type: 4,ENCRYPTED") != NULL;
}

/* Readable regular file? 0 or -errno, with a message. */
static int check_file(const char *role, const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        fmt(err, errlen, "%s %s: cannot read: %s", role, path, strerror(e));
        return -e;
    }
    close(fd);
    if (!S_ISREG(st.st_mode)) {
        fmt(err, errlen, "%s %s: not a regular file", role, path);
        return -EINVAL;
    }
    return 0;
}

static void cert_dispose(cert_t *ct)
{
    SSL_CTX_free(ct->ctx);
    px__free(ct->file);
    for (unsigned i = 0; i < ct->nnames; i++)
        px__free(ct->names[i]);
    px__free(ct->names);
    px__free(ct->ocsp);
}

static void conf_free(conf_t *cf)
{
    for (unsigned i = 0; i < cf->ncerts; i++)
        cert_dispose(&cf->certs[i]);
    px__free(cf->certs);
    px__free(cf);
}

static void conf_unref(conf_t *cf)
{
    if (cf && atomic_fetch_sub_explicit(&cf->refs, 1, memory_order_acq_rel) == 1)
        conf_free(cf);
}

static conf_t *conf_get(px_tls_t *tls)
{
    pthread_mutex_lock(&tls->lock);
    conf_t *cf = tls->cur;
    atomic_fetch_add_explicit(&cf->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&tls->lock);
    return cf;
}

/* ---- names and SNI ------------------------------------------------------------------ */

/* A DNS name as a client may send it in SNI: letters, digits, '-', '_' and
 * dots, not starting with a dot, at most 253 bytes. */
static int sni_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SNI_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return 0;
    }
    return 1;
}

static void add_name(cert_t *ct, const unsigned char *p, int len)
{
    if (len <= 0 || len > SNI_MAX || ct->nnames >= MAX_NAMES)
        return;
    char name[SNI_MAX + 1];
    for (int i = 0; i < len; i++) {
        unsigned char ch = p[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.' && !(ch == '*' && i == 0))
            return; /* not a DNS name (an IP address entry, garbage) */
        name[i] = (char)tolower(ch);
    }
    name[len] = '\0';
    if (name[0] == '*' && (len < 3 || name[1] != '.'))
        return; /* only "*.rest" wildcards */
    if (len > 1 && name[len - 1] == '.')
        name[len - 1] = '\0';
    char **n = px__realloc(ct->names, (ct->nnames + 1) * sizeof *n);
    if (!n)
        return;
    ct->names = n;
    ct->names[ct->nnames++] = px__xstrdup(name);
}

static void collect_names(cert_t *ct)
{
    GENERAL_NAMES *san = X509_get_ext_d2i(ct->leaf, NID_subject_alt_name, NULL, NULL);
    if (san) {
        for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
            if (g->type == GEN_DNS)
                add_name(ct, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(san);
    }
    if (ct->nnames == 0) { /* no DNS name in the SAN: the subject's CN, as clients once did */
        X509_NAME *subj = X509_get_subject_name(ct->leaf);
        int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (i >= 0) {
            ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
            add_name(ct, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
        }
    }
}

/* The certificate for `name` (already lower-case): exact names first, then
 * wildcards ("*.example.com" matches one label). NULL: the default. */
static const cert_t *lookup(const conf_t *cf, const char *name)
{
    for (unsigned i = 0; i < cf->ncerts; i++)
        for (unsigned j = 0; j < cf->certs[i].nnames; j++)
            if (strcmp(cf->certs[i].names[j], name) == 0)
                return &cf->certs[i];
    const char *dot = strchr(name, '.');
    if (!dot || dot == name)
        return NULL;
    for (unsigned i = 0; i < cf->ncerts; i++)
        for (unsigned j = 0; j < cf->certs[i].nnames; j++) {
            const char *w = cf->certs[i].names[j];
            if (w[0] == '*' && strcmp(w + 1, dot) == 0)
                return &cf->certs[i];
        }
    return NULL;
}

/* ---- the layer's state (callbacks below need it) ----------------------------------- */

typedef struct tls_layer {
    px__transport_t base;
    SSL *ssl;
    px_conn_t *c;
    px_tls_t *tls;
    conf_t *conf;         /* held until the handshake ends (SNI and OCSP callbacks) */
    const char *fallback; /* protocol when ALPN does not choose h2; NULL: the listener's */
    int lower_err;        /* -errno the layer below reported during the last call */
    uint8_t done;         /* handshake complete */
    uint8_t fatal;        /* OpenSSL failed: no close_notify may be sent */
    uint8_t more;         /* records may sit in OpenSSL's read-ahead buffer */
    uint8_t shut_sent;    /* close_notify queued */
    uint8_t counted;      /* a handshake failure was counted */
    uint8_t bad_sni;      /* the client's server_name was refused */
} tls_layer_t;

static int sni_cb(SSL *ssl, int *al, void *arg)
{
    conf_t *cf = arg;
    tls_layer_t *t = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_OK; /* no SNI: the default certificate */
    if (!sni_valid(name)) {
        if (t)
            t->bad_sni = 1;
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    char low[SNI_MAX + 1];
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[n] = '\0';
    if (n > 1 && low[n - 1] == '.')
        low[n - 1] = '\0';
    const cert_t *ct = lookup(cf, low);
    if (ct && ct != &cf->certs[0] && !SSL_set_SSL_CTX(ssl, ct->ctx)) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    PX_UNUSED(arg);
    static const unsigned char with_h2[] = "\x02h2\x08http/1.1";
    static const unsigned char h1_only[] = "\x08http/1.1";
    tls_layer_t *t = SSL_get_app_data(ssl);
    int h2 = t && px__server_protocol(px_conn_server(t->c), "h2") != NULL;
    const unsigned char *srv = h2 ? with_h2 : h1_only;
    unsigned srvlen = h2 ? sizeof with_h2 - 1 : sizeof h1_only - 1;
    unsigned char *sel;
    unsigned char sellen;
    /* Our preference order; no overlap: no ALPN at all (HTTP/1.1 follows). */
    if (SSL_select_next_proto(&sel, &sellen, srv, srvlen, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sellen;
    return SSL_TLSEXT_ERR_OK;
}

static int status_cb(SSL *ssl, void *arg)
{
    const cert_t *ct = arg;
    if (!ct || !ct->ocsp || (ct->ocsp_until && time(NULL) >= ct->ocsp_until))
        return SSL_TLSEXT_ERR_NOACK; /* none, or expired: stapling it would break clients */
    unsigned char *copy = OPENSSL_memdup(ct->ocsp, ct->ocsp_len); /* OpenSSL frees it */
    if (!copy || !SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)ct->ocsp_len)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ---- session tickets ---------------------------------------------------------------- */

static void new_key(ticket_key_t *k)
{
    if (RAND_bytes((unsigned char *)k, sizeof *k) != 1)
        px_random(k, sizeof *k);
}

static void maybe_rotate(px_tls_t *tls)
{
    uint64_t now = px_now_ms();
    pthread_rwlock_rdlock(&tls->keys_lock);
    int due = now - tls->keys_born_ms >= tls->ticket_rotation_ms;
    pthread_rwlock_unlock(&tls->keys_lock);
    if (!due)
        return;
    pthread_rwlock_wrlock(&tls->keys_lock);
    if (now - tls->keys_born_ms >= tls->ticket_rotation_ms) {
        tls->keys[1] = tls->keys[0];
        tls->have_prev = 1;
        new_key(&tls->keys[0]);
        tls->keys_born_ms = now;
    }
    pthread_rwlock_unlock(&tls->keys_lock);
}

/* OpenSSL's ticket key callback: 1 = key set, 2 = key set and the ticket
 * should be renewed (made with the previous key), 0 = unknown key (full
 * handshake), -1 = error. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    px_tls_t *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    ticket_key_t k;
    int r = 1;
    if (enc) {
        maybe_rotate(tls);
        pthread_rwlock_rdlock(&tls->keys_lock);
        k = tls->keys[0];
        pthread_rwlock_unlock(&tls->keys_lock);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k.name, sizeof k.name);
        if (!EVP_EncryptInit_ex2(cctx, tls->aes, k.aes, iv, NULL))
            r = -1;
    } else {
        int found = -1;
        pthread_rwlock_rdlock(&tls->keys_lock);
        for (int i = 0; i < 1 + tls->have_prev; i++)
            if (memcmp(key_name, tls->keys[i].name, sizeof k.name) == 0) {
                k = tls->keys[i];
                found = i;
                break;
            }
        pthread_rwlock_unlock(&tls->keys_lock);
        if (found < 0)
            return 0;
        r = found == 1 ? 2 : 1;
        if (!EVP_DecryptInit_ex2(cctx, tls->aes, k.aes, iv, NULL))
            r = -1;
    }
    if (r > 0) {
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        if (!EVP_MAC_CTX_set_params(hctx, params))
            r = -1;
    }
    OPENSSL_cleanse(&k, sizeof k);
    return r;
}

/* ---- loading --------------------------------------------------------------------------- */

static SSL_CTX *new_ctx(px_tls_t *tls, conf_t *cf, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char why[200];
    if (!ctx) {
        fmt(err, errlen, "cannot create a TLS context: %s", ssl_reason(why, sizeof why));
        return NULL;
    }
    uint64_t ops = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (tls->ktls)
        ops |= SSL_OP_ENABLE_KTLS;
    if (!tls->ticket_rotation_ms)
        ops |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, ops);
    /* RELEASE_BUFFERS: an idle connection holds no record buffers. The write
     * modes are the transport contract (a retry may come at another address,
     * with more bytes; a write may be partial). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_ENABLE_PARTIAL_WRITE);
    /* One recv for a whole record (and whatever follows) instead of two. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
        !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
        !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) ||
        !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"plexus", 6)) {
        fmt(err, errlen, "cannot configure TLS: %s", ssl_reason(why, sizeof why));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (tls->session_cache) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, (long)tls->session_cache);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (tls->ticket_rotation_ms) {
        /* A ticket stays valid for one interval: its key is current, then previous. */
        long secs = (long)(tls->ticket_rotation_ms / 1000);
        SSL_CTX_set_timeout(ctx, secs > 0 ? secs : 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        SSL_CTX_set_timeout(ctx, 3600);
    }
    SSL_CTX_set_app_data(ctx, tls);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, cf);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return ctx;
}

static int add_cert(px_tls_t *tls, conf_t *cf, const char *certf, const char *keyf, char *err,
                    size_t errlen)
{
    char why[200];
    if (cf->ncerts >= MAX_CERTS) {
        fmt(err, errlen, "certificate file %s: more than %d certificates", certf, MAX_CERTS);
        return -EINVAL;
    }
    int r = check_file("certificate file", certf, err, errlen);
    if (r == 0)
        r = check_file("key file", keyf, err, errlen);
    if (r)
        return r;
    cert_t *grown = px__realloc(cf->certs, (cf->ncerts + 1) * sizeof *grown);
    if (!grown) {
        fmt(err, errlen, "out of memory");
        return -ENOMEM;
    }
    cf->certs = grown;
    cert_t *ct = &cf->certs[cf->ncerts];
    memset(ct, 0, sizeof *ct);
    if (!(ct->ctx = new_ctx(tls, cf, err, errlen)))
        return -EINVAL;
    ct->file = px__xstrdup(certf);
    cf->ncerts++; /* from here on conf_free disposes of it */
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ct->ctx, certf) != 1) {
        fmt(err, errlen, "certificate file %s: %s", certf, ssl_reason(why, sizeof why));
        return -EINVAL;
    }
    int loaded = SSL_CTX_use_PrivateKey_file(ct->ctx, keyf, SSL_FILETYPE_PEM) == 1;
    unsigned long e = loaded ? 0 : ERR_peek_last_error();
    int mismatch =
        ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                           ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
    if (!loaded && !mismatch && pem_encrypted(keyf)) {
        ERR_clear_error();
        fmt(err, errlen, "key file %s: %s", keyf, ENCRYPTED_KEY);
        return -EINVAL;
    }
    if (!loaded && !mismatch) {
        fmt(err, errlen, "key file %s: %s", keyf, ssl_reason(why, sizeof why));
        return -EINVAL;
    }
    if (mismatch || SSL_CTX_check_private_key(ct->ctx) != 1) {
        ERR_clear_error();
        fmt(err, errlen, "key file %s: does not match certificate file %s", keyf, certf);
        return -EINVAL;
    }
    ct->leaf = SSL_CTX_get0_certificate(ct->ctx);
    collect_names(ct);
    SSL_CTX_set_tlsext_status_cb(ct->ctx, status_cb);
    SSL_CTX_set_tlsext_status_arg(ct->ctx, ct);
    if (X509_cmp_current_time(X509_get0_notAfter(ct->leaf)) < 0)
        px_log(PX_LOG_WARN, "TLS: certificate %s has expired: clients will refuse it", certf);
    else if (X509_cmp_current_time(X509_get0_notBefore(ct->leaf)) > 0)
        px_log(PX_LOG_WARN, "TLS: certificate %s is not valid yet", certf);
    return 0;
}

/* cert_t pointers change while the array grows: status_cb's argument is set
 * once everything is loaded. */
static void fix_status_args(conf_t *cf)
{
    for (unsigned i = 0; i < cf->ncerts; i++)
        SSL_CTX_set_tlsext_status_arg(cf->certs[i].ctx, &cf->certs[i]);
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n > k && strcmp(s + n - k, suf) == 0;
}

static int path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* OCSP staple files found in the directory (NAME.ocsp beside NAME.crt/.pem). */
typedef struct strlist {
    char **v;
    unsigned n;
} strlist_t;

static void strlist_add(strlist_t *l, const char *s)
{
    char **v = px__realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return;
    l->v = v;
    l->v[l->n++] = px__xstrdup(s);
}

static void strlist_free(strlist_t *l)
{
    for (unsigned i = 0; i < l->n; i++)
        px__free(l->v[i]);
    px__free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* NAME.crt + NAME.key, NAME.pem (both), SUBDIR/fullchain.pem + privkey.pem;
 * in name order. */
static int load_dir(px_tls_t *tls, conf_t *cf, strlist_t *staples, char *err, size_t errlen)
{
    const char *dir = tls->cert_dir;
    DIR *d = opendir(dir);
    if (!d) {
        fmt(err, errlen, "directory %s: cannot open: %s", dir, strerror(errno));
        return -errno;
    }
    strlist_t names = {0};
    struct dirent *de;
    while ((de = readdir(d)) != NULL && names.n < 4 * MAX_CERTS)
        if (de->d_name[0] != '.')
            strlist_add(&names, de->d_name);
    closedir(d);
    if (names.n)
        qsort(names.v, names.n, sizeof names.v[0], cmp_str);
    unsigned before = cf->ncerts;
    int r = 0;
    char cert[4096], key[4096], ocsp[4096];
    for (unsigned i = 0; i < names.n && r == 0; i++) {
        const char *nm = names.v[i];
        size_t n = strlen(nm);
        struct stat st;
        snprintf(cert, sizeof cert, "%s/%s", dir, nm);
        if (stat(cert, &st) == 0 && S_ISDIR(st.st_mode)) {
            snprintf(cert, sizeof cert, "%s/%s/fullchain.pem", dir, nm);
            snprintf(key, sizeof key, "%s/%s/privkey.pem", dir, nm);
            if (path_exists(cert) && path_exists(key))
                r = add_cert(tls, cf, cert, key, err, errlen);
            continue;
        }
        if (has_suffix(nm, ".crt")) {
            snprintf(key, sizeof key, "%s/%.*s.key", dir, (int)(n - 4), nm);
            if (!path_exists(key)) {
                fmt(err, errlen, "directory %s: %s has no matching %.*s.key", dir, nm, (int)(n - 4),
                    nm);
                r = -EINVAL;
                break;
            }
        } else if (has_suffix(nm, ".pem")) {
            snprintf(key, sizeof key, "%s", cert);
        } else {
            continue; /* .key, .ocsp and anything else */
        }
        snprintf(ocsp, sizeof ocsp, "%s/%.*s.ocsp", dir, (int)(n - 4), nm);
        r = add_cert(tls, cf, cert, key, err, errlen);
        if (r == 0 && path_exists(ocsp))
            strlist_add(staples, ocsp);
    }
    strlist_free(&names);
    if (r == 0 && cf->ncerts == before) {
        fmt(err, errlen,
            "directory %s: no certificate found (NAME.crt with NAME.key, NAME.pem, or "
            "SUBDIR/fullchain.pem with SUBDIR/privkey.pem)",
            dir);
        r = -EINVAL;
    }
    return r;
}

static time_t asn1_to_time(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return timegm(&tm);
}

/* Does the CertID in an OCSP response name this certificate? (Serial number,
 * and the hash of the issuer's name.) */
static int certid_matches(OCSP_CERTID *id, X509 *leaf)
{
    ASN1_OCTET_STRING *name_hash = NULL;
    ASN1_OBJECT *md_obj = NULL;
    ASN1_INTEGER *serial = NULL;
    if (!OCSP_id_get0_info(&name_hash, &md_obj, NULL, &serial, id) || !serial || !name_hash)
        return 0;
    if (ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(leaf)) != 0)
        return 0;
    const EVP_MD *md = EVP_get_digestbyobj(md_obj);
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    if (!md || !X509_NAME_digest(X509_get_issuer_name(leaf), md, h, &hl))
        return 0;
    return (int)hl == ASN1_STRING_length(name_hash) &&
           memcmp(h, ASN1_STRING_get0_data(name_hash), hl) == 0;
}

static int load_ocsp(conf_t *cf, const char *file, char *err, size_t errlen)
{
    int r = check_file("OCSP file", file, err, errlen);
    if (r)
        return r;
    FILE *f = fopen(file, "rb");
    if (!f) {
        fmt(err, errlen, "OCSP file %s: cannot read: %s", file, strerror(errno));
        return -errno;
    }
    unsigned char *der = px__xmalloc(MAX_OCSP_BYTES);
    size_t len = fread(der, 1, MAX_OCSP_BYTES, f);
    int too_big = !feof(f);
    fclose(f);
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *br = NULL;
    r = -EINVAL;
    const unsigned char *p = der;
    if (too_big) {
        fmt(err, errlen, "OCSP file %s: larger than %d bytes", file, MAX_OCSP_BYTES);
    } else if (!(resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len))) {
        fmt(err, errlen, "OCSP file %s: not a DER OCSP response (openssl ocsp -respout writes one)",
            file);
    } else if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        fmt(err, errlen, "OCSP file %s: the responder answered \"%s\"", file,
            OCSP_response_status_str(OCSP_response_status(resp)));
    } else if (!(br = OCSP_response_get1_basic(resp))) {
        fmt(err, errlen, "OCSP file %s: not a basic OCSP response", file);
    } else {
        cert_t *match = NULL;
        int status = -1;
        time_t until = 0;
        for (int i = 0; i < OCSP_resp_count(br) && !match; i++) {
            OCSP_SINGLERESP *sr = OCSP_resp_get0(br, i);
            OCSP_CERTID *id = (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(sr);
            for (unsigned j = 0; j < cf->ncerts && !match; j++) {
                if (certid_matches(id, cf->certs[j].leaf)) {
                    match = &cf->certs[j];
                    int reason;
                    ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
                    status = OCSP_single_get0_status(sr, &reason, &rev, &thisupd, &nextupd);
                    until = asn1_to_time(nextupd);
                }
            }
        }
        if (!match) {
            fmt(err, errlen, "OCSP file %s: is about none of the certificates loaded", file);
        } else if (status != V_OCSP_CERTSTATUS_GOOD) {
            fmt(err, errlen, "OCSP file %s: certificate %s is %s", file, match->file,
                OCSP_cert_status_str(status));
        } else {
            px__free(match->ocsp);
            match->ocsp = px__xmemdup(der, len);
            match->ocsp_len = len;
            match->ocsp_until = until;
            if (until && time(NULL) >= until)
                px_log(PX_LOG_WARN, "TLS: OCSP response %s has expired: not stapled", file);
            r = 0;
        }
    }
    ERR_clear_error();
    OCSP_BASICRESP_free(br);
    OCSP_RESPONSE_free(resp);
    px__free(der);
    return r;
}

static conf_t *conf_load(px_tls_t *tls, char *err, size_t errlen)
{
    conf_t *cf = px__xcalloc(1, sizeof *cf);
    atomic_init(&cf->refs, 1);
    strlist_t staples = {0};
    int r = 0;
    for (unsigned i = 0; i < tls->ncerts && r == 0; i++)
        r = add_cert(tls, cf, tls->cert_files[i], tls->key_files[i], err, errlen);
    if (r == 0 && tls->cert_dir)
        r = load_dir(tls, cf, &staples, err, errlen);
    if (r == 0 && cf->ncerts == 0) {
        fmt(err, errlen, "no certificate: give a certificate file and its key, or a directory");
        r = -EINVAL;
    }
    if (r == 0)
        fix_status_args(cf);
    for (unsigned i = 0; i < tls->nocsp && r == 0; i++)
        r = load_ocsp(cf, tls->ocsp_files[i], err, errlen);
    for (unsigned i = 0; i < staples.n && r == 0; i++)
        r = load_ocsp(cf, staples.v[i], err, errlen);
    strlist_free(&staples);
    ERR_clear_error();
    if (r) {
        conf_free(cf);
        return NULL;
    }
    return cf;
}

/* ---- the layer ------------------------------------------------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* The BIO reads and writes through the layer below (the socket, or the
 * prefix layer replaying a sniffed ClientHello). */
static int bio_read(BIO *b, char *buf, int len)
{
    tls_layer_t *t = BIO_get_data(b);
    px__transport_t *lo = t->base.lower;
    BIO_clear_retry_flags(b);
    ssize_t n = lo->ops->read(lo, t->c, buf, (size_t)len);
    if (n >= 0)
        return (int)n;
    if (n == PX__WANT_READ || n == PX__WANT_WRITE) {
        BIO_set_retry_read(b);
        return -1;
    }
    t->lower_err = (int)n;
    return -1;
}

static int bio_write(BIO *b, const char *buf, int len)
{
    tls_layer_t *t = BIO_get_data(b);
    px__transport_t *lo = t->base.lower;
    BIO_clear_retry_flags(b);
    struct iovec iov = {(void *)buf, (size_t)len};
    ssize_t n = lo->ops->writev(lo, t->c, &iov, 1);
    if (n >= 0)
        return (int)n;
    if (n == PX__WANT_WRITE || n == PX__WANT_READ) {
        BIO_set_retry_write(b);
        return -1;
    }
    t->lower_err = (int)n;
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    PX_UNUSED(b);
    PX_UNUSED(num);
    PX_UNUSED(ptr);
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "plexus transport");
    if (m && BIO_meth_set_read(m, bio_read) && BIO_meth_set_write(m, bio_write) &&
        BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
        bio_method = m;
    else
        BIO_meth_free(m);
}

/* Do the layers below write straight to the socket? (Then, with kTLS, the
 * write side can be a socket BIO: OpenSSL programs the kernel through it.) */
static int writes_to_socket(const px__transport_t *t)
{
    for (; t; t = t->lower) {
        if (t == &px__transport_plain)
            return 1;
        if (strcmp(t->ops->name, "prefix") != 0)
            return 0; /* a layer that transforms bytes */
    }
    return 0;
}

static void count_failure(tls_layer_t *t, int reason, const char *detail)
{
    if (t->counted)
        return;
    t->counted = 1;
    px_metric_add(m_fail[reason], 1);
    if (px_log_enabled(PX_LOG_DEBUG)) {
        char peer[64] = "?";
        px_conn_peer_name(t->c, peer, sizeof peer);
        px_log(PX_LOG_DEBUG, "conn %llu: TLS handshake from %s failed (%s)%s%s",
               (unsigned long long)px_conn_id(t->c), peer, reason_names[reason], detail ? ": " : "",
               detail ? detail : "");
    }
}

/* A failed handshake step: the reason from OpenSSL's error queue. */
static int classify(tls_layer_t *t, int sslerr, char *detail, size_t len)
{
    detail[0] = '\0';
    if (t->bad_sni) {
        ERR_clear_error();
        snprintf(detail, len, "server name refused");
        return R_BAD_SNI;
    }
    if (sslerr == SSL_ERROR_ZERO_RETURN || sslerr == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        snprintf(detail, len, "%s", t->lower_err ? px_strerror(t->lower_err) : "peer closed");
        return R_CLOSED;
    }
    int reason = R_OTHER;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (!detail[0])
            ERR_error_string_n(e, detail, len);
        if (ERR_GET_LIB(e) != ERR_LIB_SSL || reason != R_OTHER)
            continue;
        int why = ERR_GET_REASON(e);
        switch (why) {
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION: reason = R_PROTOCOL_VERSION; break;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM: reason = R_NO_SHARED_CIPHER; break;
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST: reason = R_HTTP_REQUEST; break;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING: reason = R_CLOSED; break;
        default:
            if (why >= SSL_AD_REASON_OFFSET)
                reason = R_CLIENT_ALERT; /* the client sent a fatal alert */
        }
    }
    return reason;
}

/* Map a failed OpenSSL call. `eof` is what a clean end of stream returns. */
static ssize_t map_error(tls_layer_t *t, int sslerr, ssize_t eof)
{
    switch (sslerr) {
    case SSL_ERROR_WANT_READ: t->more = 0; return PX__WANT_READ;
    case SSL_ERROR_WANT_WRITE: return PX__WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return eof;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        t->fatal = 1;
        return t->lower_err ? t->lower_err : eof;
    default:
        if (px_log_enabled(PX_LOG_DEBUG)) {
            char buf[256];
            ERR_error_string_n(ERR_peek_last_error(), buf, sizeof buf);
            px_log(PX_LOG_DEBUG, "conn %llu: TLS: %s", (unsigned long long)px_conn_id(t->c), buf);
        }
        ERR_clear_error();
        t->fatal = 1;
        return -EPROTO;
    }
}

static const px__transport_ops_t tls_ops, tls_ops_ktls;

static void handshake_done(tls_layer_t *t)
{
    t->done = 1;
    px_metric_add(SSL_session_reused(t->ssl) ? m_resumed : m_full, 1);
    conf_unref(t->conf);
    t->conf = NULL;
    if (t->tls->ktls && BIO_get_ktls_send(SSL_get_wbio(t->ssl))) {
        t->base.ops = &tls_ops_ktls; /* sendfile through the kernel's TLS */
        px_metric_add(m_ktls, 1);
    }
}

static int tls_handshake(px__transport_t *tp, px_conn_t *c)
{
    PX_UNUSED(c);
    tls_layer_t *t = (tls_layer_t *)tp;
    t->lower_err = 0;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        handshake_done(t);
        return 0;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        t->more = 0;
        return PX__WANT_READ;
    }
    if (e == SSL_ERROR_WANT_WRITE)
        return PX__WANT_WRITE;
    char detail[256];
    count_failure(t, classify(t, e, detail, sizeof detail), detail);
    t->fatal = 1;
    return t->lower_err && e == SSL_ERROR_SYSCALL ? t->lower_err : -EPROTO;
}

static ssize_t tls_read(px__transport_t *tp, px_conn_t *c, void *buf, size_t len)
{
    PX_UNUSED(c);
    tls_layer_t *t = (tls_layer_t *)tp;
    size_t got = 0;
    t->lower_err = 0;
    ERR_clear_error();
    for (;;) {
        size_t n = 0;
        int r = SSL_read_ex(t->ssl, (char *)buf + got, len - got, &n);
        if (r == 1) {
            got += n;
            t->more = 1;
            /* More whole records may wait in the read-ahead buffer: take them
             * now rather than from another loop iteration. */
            if (got < len && SSL_has_pending(t->ssl))
                continue;
            return (ssize_t)got;
        }
        int e = SSL_get_error(t->ssl, r);
        if (got) {
            /* Deliver what we have; the condition shows again on the next call. */
            if (e == SSL_ERROR_WANT_READ)
                t->more = 0;
            ERR_clear_error();
            return (ssize_t)got;
        }
        return map_error(t, e, 0);
    }
}

static ssize_t tls_writev(px__transport_t *tp, px_conn_t *c, const struct iovec *iov, int iovcnt)
{
    PX_UNUSED(c);
    tls_layer_t *t = (tls_layer_t *)tp;
    const void *p = iov[0].iov_base;
    size_t len = iov[0].iov_len;
    char joined[COALESCE];
    if (iovcnt > 1 && len < sizeof joined) {
        /* One record for several small pieces rather than one each. A retry
         * after PX__WANT_* gets the same pieces (or more): the same leading
         * bytes again, as OpenSSL requires. */
        len = 0;
        for (int i = 0; i < iovcnt && len < sizeof joined; i++) {
            size_t k = iov[i].iov_len < sizeof joined - len ? iov[i].iov_len : sizeof joined - len;
            memcpy(joined + len, iov[i].iov_base, k);
            len += k;
        }
        p = joined;
    }
    t->lower_err = 0;
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_write_ex(t->ssl, p, len, &n);
    if (r == 1)
        return (ssize_t)n;
    return map_error(t, SSL_get_error(t->ssl, r), -EPIPE);
}

static ssize_t tls_sendfile(px__transport_t *tp, px_conn_t *c, int fd, off_t *off, size_t len)
{
    PX_UNUSED(c);
    tls_layer_t *t = (tls_layer_t *)tp;
    t->lower_err = 0;
    ERR_clear_error();
    /* EAGAIN from the kernel sets the BIO's retry flag: SSL_ERROR_WANT_WRITE. */
    ossl_ssize_t n = SSL_sendfile(t->ssl, fd, *off, len, 0);
    if (n >= 0) {
        *off += n;
        return n;
    }
    return map_error(t, SSL_get_error(t->ssl, (int)n), -EPIPE);
}

static size_t tls_pending(px__transport_t *tp, px_conn_t *c)
{
    tls_layer_t *t = (tls_layer_t *)tp;
    /* SSL_pending: decrypted bytes of the current record. SSL_has_pending also
     * counts raw bytes read ahead, which may be half a record: only trusted
     * until a call has seen OpenSSL wait for the socket (then what is left is
     * incomplete, and the socket will announce the rest). */
    if (SSL_pending(t->ssl) > 0 || (t->more && SSL_has_pending(t->ssl)))
        return 1;
    return px__transport_pending(t->base.lower, c);
}

static int tls_shutdown(px__transport_t *tp, px_conn_t *c)
{
    tls_layer_t *t = (tls_layer_t *)tp;
    if (t->done && !t->fatal && !t->shut_sent) {
        t->lower_err = 0;
        ERR_clear_error();
        int r = SSL_shutdown(t->ssl); /* close_notify */
        if (r < 0) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE)
                return PX__WANT_WRITE;
            if (e == SSL_ERROR_WANT_READ)
                return PX__WANT_READ;
            ERR_clear_error(); /* the peer is gone: shut the socket anyway */
        }
        t->shut_sent = 1;
    }
    return t->base.lower->ops->shutdown(t->base.lower, c);
}

static void tls_close(px__transport_t *tp, px_conn_t *c)
{
    tls_layer_t *t = (tls_layer_t *)tp;
    if (!t->done && !t->counted && c->err == -ETIMEDOUT)
        count_failure(t, R_TIMEOUT, "no complete handshake in time");
    else if (!t->done && !t->counted && c->err)
        count_failure(t, R_CLOSED, px_strerror(c->err));
    if (t->done && !t->fatal)
        /* Closed without close_notify (the peer left, or we abort): the
         * session stays resumable. */
        SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(t->ssl); /* frees the BIOs; drops its SSL_CTX references */
    conf_unref(t->conf);
    px__free(t);
}

static const px__transport_ops_t tls_ops = {
    .name = "tls",
    .handshake = tls_handshake,
    .read = tls_read,
    .writev = tls_writev,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

/* With kTLS sending: files go out with SSL_sendfile (zero copy). */
static const px__transport_ops_t tls_ops_ktls = {
    .name = "tls",
    .handshake = tls_handshake,
    .read = tls_read,
    .writev = tls_writev,
    .sendfile = tls_sendfile,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

static tls_layer_t *find_layer(const px_conn_t *c)
{
    for (px__transport_t *t = c->tp; t; t = t->lower)
        if (t->ops == &tls_ops || t->ops == &tls_ops_ktls)
            return (tls_layer_t *)t;
    return NULL;
}

const char *px__tls_sni(const px_conn_t *c)
{
    tls_layer_t *t = find_layer(c);
    return t ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

const char *px__tls_alpn(const px_conn_t *c)
{
    tls_layer_t *t = find_layer(c);
    if (!t)
        return NULL;
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0)
        return "h2";
    if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
        return "http/1.1";
    return NULL; /* alpn_cb selects nothing else */
}

/* ---- after the handshake: ALPN chooses the protocol ------------------------------------ */

/* The connection's protocol while its TLS handshake runs: on_connect(c, 0)
 * comes when it is done (from conn.c's transport_ready), and starts the
 * protocol ALPN chose. */
static void alpn_on_connect(px_conn_t *c, int status)
{
    if (status)
        return; /* failed: counted by the layer; the connection is closing */
    tls_layer_t *t = find_layer(c);
    px_server_t *s = c->nw->server;
    const char *alpn = px__tls_alpn(c), *name = NULL;
    if (alpn && strcmp(alpn, "h2") == 0 && px__server_protocol(s, "h2"))
        name = "h2";
    else if (t && t->fallback)
        name = t->fallback;
    else {
        const px__proto_entry_t *e =
            c->listener != PX__NO_LISTENER && s->listeners[c->listener].entry
                ? s->listeners[c->listener].entry
                : px__server_protocol(s, NULL);
        name = e ? e->name : NULL;
    }
    int r = name ? px_conn_start_protocol(c, name) : -ENOENT;
    if (r) {
        px_log(PX_LOG_WARN, "conn %llu: after the TLS handshake: cannot start protocol %s: %s",
               (unsigned long long)c->id, name ? name : "(none)", px_strerror(r));
        px_conn_abort(c);
    }
}

static ssize_t alpn_on_read(px_conn_t *c, char *data, size_t len)
{
    PX_UNUSED(data);
    PX_UNUSED(len);
    px_conn_abort(c); /* never reached: no bytes are read during a handshake */
    return -1;
}

static void abort_conn(px_conn_t *c)
{
    px_conn_abort(c);
}

static const px_protocol_t alpn_chooser = {
    .name = "tls-alpn",
    .on_read = alpn_on_read,
    .on_shutdown = abort_conn, /* nothing in flight yet */
    .on_connect = alpn_on_connect,
};

static int tls_create(const px_transport_factory_t *f, px_conn_t *c, px__transport_t *lower,
                      px__transport_t **out)
{
    px_tls_t *tls = f->ud;
    if (c->outbound)
        return -EINVAL; /* server side only */
    pthread_once(&bio_once, make_bio_method);
    if (!bio_method)
        return -ENOMEM;
    tls_layer_t *t = px__calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->base.ops = &tls_ops;
    t->base.lower = lower;
    t->c = c;
    t->tls = tls;
    t->conf = conf_get(tls);
    t->ssl = SSL_new(t->conf->certs[0].ctx);
    BIO *rb = t->ssl ? BIO_new(bio_method) : NULL;
    BIO *wb = rb;
    if (rb && tls->ktls && writes_to_socket(lower))
        wb = BIO_new_socket(c->io.fd, BIO_NOCLOSE);
    if (!t->ssl || !rb || !wb) {
        ERR_clear_error();
        BIO_free(rb);
        SSL_free(t->ssl);
        conf_unref(t->conf);
        px__free(t);
        return -ENOMEM;
    }
    BIO_set_data(rb, t);
    SSL_set_bio(t->ssl, rb, wb);
    SSL_set_app_data(t->ssl, t);
    SSL_set_accept_state(t->ssl);
    /* Accepted through a TLS listener: no protocol yet, the listener's first
     * one follows. Pushed by a chooser: HTTP/1.1 unless ALPN says h2. */
    t->fallback = c->proto ? "http/1.1" : NULL;
    px_conn_set_protocol(c, &alpn_chooser, NULL);
    *out = &t->base;
    return 0;
}

/* ---- px__tls_push: a chooser hands over a connection whose first bytes it read ---------- */

static ssize_t start_on_read(px_conn_t *c, char *data, size_t len)
{
    px_tls_t *tls = px_conn_state(c);
    int r = px__conn_push_transport(c, &tls->factory, data, len);
    if (r) {
        px_log(PX_LOG_WARN, "conn %llu: cannot start TLS: %s", (unsigned long long)c->id,
               px_strerror(r));
        px_conn_abort(c);
        return -1;
    }
    return (ssize_t)len; /* replayed beneath the TLS layer */
}

static const px_protocol_t start_proto = {
    .name = "tls-start",
    .on_read = start_on_read,
    .on_shutdown = abort_conn,
};

int px__tls_push(px_conn_t *c, px__tls_ctx_t *ctx)
{
    if (!ctx || c->closing || c->phase != PX__OPEN)
        return -EINVAL;
    /* The chooser returns 0: dispatch presents the same bytes to start_proto
     * at once, which replays them under the new layer. */
    px_conn_set_protocol(c, &start_proto, ctx);
    return 0;
}

/* ---- the context ---------------------------------------------------------------------- */

static char **copy_list(const char *const *v, unsigned n)
{
    if (!n)
        return NULL;
    char **out = px__xcalloc(n, sizeof *out);
    for (unsigned i = 0; i < n; i++)
        out[i] = px__xstrdup(v[i]);
    return out;
}

static void free_list(char **v, unsigned n)
{
    for (unsigned i = 0; v && i < n; i++)
        px__free(v[i]);
    px__free(v);
}

void px_tls_opts_init(px_tls_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->ticket_rotation_ms = 3600 * 1000;
    o->session_cache = 20480;
    o->ktls = 1;
}

px__tls_ctx_t *px__tls_ctx_new(const px_tls_opts_t *o, char *err, size_t errlen)
{
    if (!o || (o->ncerts && (!o->cert_files || !o->key_files)) || (o->nocsp && !o->ocsp_files)) {
        fmt(err, errlen, "invalid TLS options");
        return NULL;
    }
    register_metrics();
    px_tls_t *tls = px__xcalloc(1, sizeof *tls);
    tls->factory.name = "tls";
    tls->factory.create = tls_create;
    tls->factory.ud = tls;
    tls->cert_files = copy_list(o->cert_files, o->ncerts);
    tls->key_files = copy_list(o->key_files, o->ncerts);
    tls->ncerts = o->ncerts;
    tls->ocsp_files = copy_list(o->ocsp_files, o->nocsp);
    tls->nocsp = o->nocsp;
    tls->cert_dir = o->cert_dir ? px__xstrdup(o->cert_dir) : NULL;
    tls->ticket_rotation_ms = o->ticket_rotation_ms;
    tls->session_cache = o->session_cache;
    tls->ktls = o->ktls;
    pthread_mutex_init(&tls->lock, NULL);
    pthread_rwlock_init(&tls->keys_lock, NULL);
    new_key(&tls->keys[0]);
    tls->keys_born_ms = px_now_ms();
    tls->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (!tls->aes) {
        fmt(err, errlen, "OpenSSL has no AES-256-CBC (session tickets)");
        px__tls_ctx_free(tls);
        return NULL;
    }
    tls->cur = conf_load(tls, err, errlen);
    if (!tls->cur) {
        px__tls_ctx_free(tls);
        return NULL;
    }
    return tls;
}

void px__tls_ctx_free(px__tls_ctx_t *tls)
{
    if (!tls)
        return;
    conf_unref(tls->cur);
    free_list(tls->cert_files, tls->ncerts);
    free_list(tls->key_files, tls->ncerts);
    free_list(tls->ocsp_files, tls->nocsp);
    px__free(tls->cert_dir);
    EVP_CIPHER_free(tls->aes);
    OPENSSL_cleanse(tls->keys, sizeof tls->keys);
    pthread_mutex_destroy(&tls->lock);
    pthread_rwlock_destroy(&tls->keys_lock);
    px__free(tls);
}

int px__tls_ctx_reload(px__tls_ctx_t *tls, char *err, size_t errlen)
{
    conf_t *cf = conf_load(tls, err, errlen);
    if (!cf)
        return -EINVAL;
    pthread_mutex_lock(&tls->lock);
    conf_t *old = tls->cur;
    tls->cur = cf;
    pthread_mutex_unlock(&tls->lock);
    conf_unref(old); /* freed once the last handshake using it ends */
    return 0;
}

/* ---- public API --------------------------------------------------------------------------- */

px_tls_t *px_tls_new(const px_tls_opts_t *o, char *err, size_t errlen)
{
    return px__tls_ctx_new(o, err, errlen);
}

void px_tls_free(px_tls_t *t)
{
    px__tls_ctx_free(t);
}

int px_tls_reload(px_tls_t *t, char *err, size_t errlen)
{
    return px__tls_ctx_reload(t, err, errlen);
}

unsigned px_tls_cert_count(px_tls_t *t)
{
    conf_t *cf = conf_get(t);
    unsigned n = cf->ncerts;
    conf_unref(cf);
    return n;
}

int px_tls_cert_names(px_tls_t *t, unsigned i, char *buf, size_t len)
{
    conf_t *cf = conf_get(t);
    int r = -ENOENT;
    if (len)
        buf[0] = '\0';
    if (i < cf->ncerts) {
        size_t at = 0;
        for (unsigned j = 0; j < cf->certs[i].nnames && at + 1 < len; j++) {
            int n = snprintf(buf + at, len - at, "%s%s", j ? "," : "", cf->certs[i].names[j]);
            if (n < 0)
                break;
            at += (size_t)n;
        }
        r = 0;
    }
    conf_unref(cf);
    return r;
}

const px_transport_factory_t *px_tls_transport(px_tls_t *t)
{
    return &t->factory;
}

int px_server_listen_tls(px_server_t *s, const px_listen_opts_t *o, px_tls_t *t)
{
    if (!o || !t)
        return -EINVAL;
    px_listen_opts_t lo = *o;
    lo.transport = &t->factory;
    return px_server_listen_opts(s, &lo);
}
