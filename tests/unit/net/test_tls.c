/* Unit tests for the TLS layer's hand-over points that the sniffer (issue 12)
 * uses, driven on one worker's loop by hand (like test_conn.c), with a real
 * OpenSSL client in a thread on the other end of a socketpair:
 * - a chooser that reads the first bytes and calls px__tls_push (the
 *   ClientHello replayed beneath the TLS layer), then the protocol chosen by
 *   ALPN: "http/1.1", or "h2" when the client offers it and a protocol of that
 *   name is registered (and only then is h2 offered); px__tls_sni and
 *   px__tls_alpn after the handshake;
 * - a chooser that sees plain HTTP and starts "tls-redirect": 301 to https://
 *   for GET and HEAD (no body for HEAD), 400 with a JSON body otherwise;
 * - a handshake that fails (a client speaking garbage) is counted and the
 *   connection closed; px__tls_ctx_new errors name the file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/metrics.h"
#include "net/net_int.h"
#include "net/tls.h"
#include "net/transport.h"

static px_server_t *srv;
static px__netw_t *nw;
static px_loop_t *loop;
static px_tls_t *tls;
static char cert_path[64], key_path[64];

#define RUN_UNTIL(cond, ms)                                                                        \
    do {                                                                                           \
        uint64_t end_ = px_now_ms() + (ms);                                                        \
        while (!(cond) && px_now_ms() < end_)                                                      \
            px_loop_run_once(loop, 5);                                                             \
    } while (0)

/* ---- a self-signed certificate for "a.test", made here ------------------------------------ */

static void make_cert(void)
{
    snprintf(cert_path, sizeof cert_path, "/tmp/px-test-tls-%d.crt", (int)getpid());
    snprintf(key_path, sizeof key_path, "/tmp/px-test-tls-%d.key", (int)getpid());
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    assert_non_null(pk);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"a.test", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:a.test");
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* ---- protocols ------------------------------------------------------------------------ */

static struct {
    int pushed, redirected, started_h1, started_h2;
    char sni[64], alpn[16];
} T;

/* The sniffer's decision in miniature: 0x16 -> TLS, else tls-redirect. */
static ssize_t sniff_read(px_conn_t *c, char *data, size_t len)
{
    if (len < 1)
        return 0;
    if ((unsigned char)data[0] == 0x16) {
        assert_int_equal(px__tls_push(c, tls), 0);
        T.pushed++;
    } else {
        assert_int_equal(px_conn_start_protocol(c, "tls-redirect"), 0);
        T.redirected++;
    }
    return 0; /* the chosen protocol gets the same bytes */
}

static const px_protocol_t sniff_proto = {.name = "sniff", .on_read = sniff_read};

/* Echo lines back, prefixed with the protocol's name. */
static ssize_t echo_read(px_conn_t *c, char *data, size_t len, const char *tag)
{
    char *nl = memchr(data, '\n', len);
    if (!nl)
        return 0;
    size_t n = (size_t)(nl - data) + 1;
    px_conn_write(c, tag, strlen(tag));
    px_conn_write(c, data, n);
    return (ssize_t)n;
}

static ssize_t h1_read(px_conn_t *c, char *data, size_t len)
{
    return echo_read(c, data, len, "h1:");
}

static ssize_t h2_read(px_conn_t *c, char *data, size_t len)
{
    return echo_read(c, data, len, "h2:");
}

static void note_tls(px_conn_t *c)
{
    const char *s = px__tls_sni(c), *a = px__tls_alpn(c);
    snprintf(T.sni, sizeof T.sni, "%s", s ? s : "");
    snprintf(T.alpn, sizeof T.alpn, "%s", a ? a : "");
}

static void *h1_accept(px_conn_t *c, void *ud)
{
    (void)ud;
    T.started_h1++;
    note_tls(c);
    return NULL;
}

static void *h2_accept(px_conn_t *c, void *ud)
{
    (void)ud;
    T.started_h2++;
    note_tls(c);
    return NULL;
}

static const px_protocol_t h1_proto = {.name = "http/1.1", .on_read = h1_read};
static const px_protocol_t h2_proto = {.name = "h2", .on_read = h2_read};

/* ---- set-up ------------------------------------------------------------------------------- */

static int setup_with(int with_h2)
{
    memset(&T, 0, sizeof T);
    px_server_opts_t o;
    px_server_opts_init(&o);
    o.workers = 1;
    o.idle_timeout_ms = 0;
    srv = px_server_new(&o);
    if (!srv)
        return -1;
    if (px_server_add_protocol(srv, NULL, &sniff_proto, NULL, NULL) != 0 ||
        px_server_add_protocol(srv, NULL, &h1_proto, h1_accept, NULL) != 0 ||
        px_tls_redirect_register(srv) != 0)
        return -1;
    if (with_h2 && px_server_add_protocol(srv, NULL, &h2_proto, h2_accept, NULL) != 0)
        return -1;
    px_tls_opts_t to;
    px_tls_opts_init(&to);
    const char *certs[] = {cert_path}, *keys[] = {key_path};
    to.cert_files = certs;
    to.key_files = keys;
    to.ncerts = 1;
    char err[256];
    tls = px_tls_new(&to, err, sizeof err);
    if (!tls) {
        fprintf(stderr, "px_tls_new: %s\n", err);
        return -1;
    }
    nw = &srv->nw[0];
    loop = nw->loop;
    px__netw_start(nw);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return setup_with(0);
}

static int setup_h2(void **state)
{
    (void)state;
    return setup_with(1);
}

static int teardown(void **state)
{
    (void)state;
    for (px_conn_t *c = nw->conns; c; c = c->next)
        px_conn_abort(c);
    RUN_UNTIL(nw->nconns == 0, 1000);
    px_loop_run_once(loop, 0);
    assert_int_equal(nw->nconns, 0);
    px_server_free(srv);
    px_tls_free(tls);
    srv = NULL;
    tls = NULL;
    return 0;
}

static px_conn_t *pair(int *peer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK), 0);
    *peer = sv[1];
    px_conn_t *c = px__conn_adopt(nw, sv[0]);
    assert_non_null(c);
    return c;
}

/* ---- a blocking TLS client in a thread ----------------------------------------------------- */

typedef struct client {
    int fd;
    const char *alpn; /* wire format */
    size_t alpn_len;
    char got[256];
    char alpn_got[16];
    int ok;
    int done;
} client_t;

static void *client_main(void *arg)
{
    client_t *cl = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, cl->fd);
    SSL_set_tlsext_host_name(ssl, "a.test");
    if (cl->alpn)
        SSL_set_alpn_protos(ssl, (const unsigned char *)cl->alpn, (unsigned)cl->alpn_len);
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping\n", 5) == 5) {
        const unsigned char *p;
        unsigned n;
        SSL_get0_alpn_selected(ssl, &p, &n);
        snprintf(cl->alpn_got, sizeof cl->alpn_got, "%.*s", (int)n, (const char *)p);
        size_t at = 0;
        while (at < sizeof cl->got - 1 && !memchr(cl->got, '\n', at)) {
            int r = SSL_read(ssl, cl->got + at, (int)(sizeof cl->got - 1 - at));
            if (r <= 0)
                break;
            at += (size_t)r;
        }
        cl->got[at] = '\0';
        cl->ok = 1;
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    __atomic_store_n(&cl->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void run_client(client_t *cl)
{
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, cl), 0);
    RUN_UNTIL(__atomic_load_n(&cl->done, __ATOMIC_ACQUIRE), 10000);
    pthread_join(th, NULL);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void push_then_http11(void **state)
{
    (void)state;
    int peer;
    pair(&peer);
    client_t cl = {.fd = peer, .alpn = "\x02h2\x08http/1.1", .alpn_len = 12};
    run_client(&cl);
    assert_true(cl.ok);
    assert_int_equal(T.pushed, 1);
    assert_int_equal(T.started_h1, 1);
    assert_string_equal(cl.alpn_got, "http/1.1"); /* h2 is not registered: not offered */
    assert_string_equal(cl.got, "h1:ping\n");
    assert_string_equal(T.sni, "a.test");
    assert_string_equal(T.alpn, "http/1.1");
    close(peer);
}

static void push_without_alpn(void **state)
{
    (void)state;
    int peer;
    pair(&peer);
    client_t cl = {.fd = peer};
    run_client(&cl);
    assert_true(cl.ok);
    assert_string_equal(cl.got, "h1:ping\n");
    assert_string_equal(T.alpn, "");
    close(peer);
}

static void push_then_h2(void **state)
{
    (void)state;
    int peer;
    pair(&peer);
    client_t cl = {.fd = peer, .alpn = "\x02h2\x08http/1.1", .alpn_len = 12};
    run_client(&cl);
    assert_true(cl.ok);
    assert_string_equal(cl.alpn_got, "h2");
    assert_int_equal(T.started_h2, 1);
    assert_int_equal(T.started_h1, 0);
    assert_string_equal(cl.got, "h2:ping\n");
    close(peer);
}

static void read_all(int fd, char *buf, size_t cap)
{
    size_t at = 0;
    for (;;) {
        RUN_UNTIL(0, 20);
        ssize_t n = recv(fd, buf + at, cap - 1 - at, MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n > 0)
            at += (size_t)n;
        if (at >= cap - 1)
            break;
        if (n < 0 && nw->nconns == 0)
            break;
    }
    buf[at] = '\0';
}

static void redirect_get_head_post(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        const char *status;
        const char *location; /* NULL: none */
        int body;
    } cases[] = {
        {"GET /a/b?x=1 HTTP/1.1\r\nHost: a.test:8443\r\n\r\n", "HTTP/1.1 301 ",
         "Location: https://a.test:8443/a/b?x=1\r\n", 1},
        {"HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n", "HTTP/1.1 301 ",
         "Location: https://a.test/\r\n", 0},
        {"GET http://b.test/p?q HTTP/1.1\r\nHost: b.test\r\n\r\n", "HTTP/1.1 301 ",
         "Location: https://b.test/p?q\r\n", 1},
        {"POST /api HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\n{}", "HTTP/1.1 400 ", NULL,
         1},
        {"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 400 ", NULL, 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", "HTTP/1.1 400 ", NULL, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int peer;
        pair(&peer);
        /* In two pieces: the head is collected across reads. */
        size_t n = strlen(cases[i].req);
        assert_int_equal(send(peer, cases[i].req, 5, 0), 5);
        RUN_UNTIL(0, 30);
        assert_int_equal(send(peer, cases[i].req + 5, n - 5, 0), (ssize_t)(n - 5));
        char buf[4096];
        read_all(peer, buf, sizeof buf);
        assert_true(strncmp(buf, cases[i].status, strlen(cases[i].status)) == 0);
        if (cases[i].location)
            assert_non_null(strstr(buf, cases[i].location));
        else
            assert_null(strstr(buf, "Location:"));
        assert_non_null(strstr(buf, "Connection: close\r\n"));
        char *body = strstr(buf, "\r\n\r\n");
        assert_non_null(body);
        if (cases[i].body)
            assert_non_null(strstr(body, "\"error\":\"tls_required\""));
        else
            assert_string_equal(body, "\r\n\r\n");
        close(peer);
        RUN_UNTIL(nw->nconns == 0, 2000);
    }
    assert_int_equal(T.redirected, (int)(sizeof cases / sizeof cases[0]));
}

static void failed_handshake_counted(void **state)
{
    (void)state;
    int peer;
    pair(&peer);
    /* A TLS record header, then a handshake message that is not a ClientHello. */
    static const unsigned char junk[] = {0x16, 0x03, 0x01, 0x00, 0x04, 0x0f, 0x00, 0x00, 0x00};
    int64_t before = px_metric_value(
        px_metric_register("plexus_tls_handshake_failures_total{reason=\"other\"}", NULL, 0));
    assert_int_equal(send(peer, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    RUN_UNTIL(nw->nconns == 0, 3000);
    assert_int_equal(nw->nconns, 0);
    int64_t after = px_metric_value(
        px_metric_register("plexus_tls_handshake_failures_total{reason=\"other\"}", NULL, 0));
    assert_int_equal(after, before + 1);
    close(peer);
}

static void ctx_errors(void **state)
{
    (void)state;
    px_tls_opts_t to;
    px_tls_opts_init(&to);
    const char *certs[] = {"/nonexistent/x.crt"}, *keys[] = {key_path};
    to.cert_files = certs;
    to.key_files = keys;
    to.ncerts = 1;
    char err[256];
    assert_null(px_tls_new(&to, err, sizeof err));
    assert_non_null(strstr(err, "certificate file /nonexistent/x.crt: cannot read"));
    to.ncerts = 0;
    assert_null(px_tls_new(&to, err, sizeof err));
    assert_non_null(strstr(err, "no certificate"));
    /* Reload keeps the current set when the new one is bad. */
    certs[0] = cert_path;
    to.ncerts = 1;
    px_tls_t *t = px_tls_new(&to, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(px_tls_cert_count(t), 1);
    char names[64];
    assert_int_equal(px_tls_cert_names(t, 0, names, sizeof names), 0);
    assert_string_equal(names, "a.test");
    assert_int_equal(px_tls_reload(t, err, sizeof err), 0);
    px_tls_free(t);
}

int main(void)
{
    make_cert();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(push_then_http11, setup, teardown),
        cmocka_unit_test_setup_teardown(push_without_alpn, setup, teardown),
        cmocka_unit_test_setup_teardown(push_then_h2, setup_h2, teardown),
        cmocka_unit_test_setup_teardown(redirect_get_head_post, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_handshake_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(ctx_errors, setup, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(cert_path);
    unlink(key_path);
    return r;
}
