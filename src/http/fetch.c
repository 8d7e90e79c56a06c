/* Outbound HTTP on the event loop (plexus/fetch.h): libcurl's multi interface with its
 * sockets watched by px_io_t and its timeout as one px_timer_t per client.
 *
 * curl tells us what to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back with no
 * socket ready (CURLMOPT_TIMERFUNCTION); the loop calls curl_multi_socket_action for the
 * socket that became ready or when the timer fires, then finished transfers are collected
 * with curl_multi_info_read and their callbacks run. Callbacks never run inside curl: a
 * callback may start new requests. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/log.h"
#include "plexus/fetch.h"
#include "plexus/version.h"

#define HEAD_MAX      (16u << 10)
#define DEF_TIMEOUT   30000
#define DEF_CONNECT   10000
#define DEF_MAX_RESP  (1u << 20)
#define MAX_REDIRECTS 5

struct px_fetch_client {
    px_loop_t *loop;
    CURLM *multi;
    px_timer_t timer;
    px_fetch_t *head; /* transfers in flight */
    size_t n;
    struct fsock *socks; /* sockets curl asked us to watch */
};

typedef struct fsock {
    px_io_t io;
    px_fetch_client_t *c;
    curl_socket_t fd;
    struct fsock *prev, *next;
} fsock_t;

static void sock_free(px_fetch_client_t *c, fsock_t *fs)
{
    px_io_stop(&fs->io);
    if (fs->prev)
        fs->prev->next = fs->next;
    else
        c->socks = fs->next;
    if (fs->next)
        fs->next->prev = fs->prev;
    px__free(fs);
}

struct px_fetch {
    px_fetch_client_t *c;
    CURL *easy;
    px_fetch_t *prev, *next;
    px_fetch_cb cb;
    void *ud;
    struct curl_slist *headers;
    px_buf_t body, head;
    int too_big;
    uint64_t t0;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* ---- curl's callbacks ------------------------------------------------------------------- */

static void check_done(px_fetch_client_t *c);

static void on_io(px_io_t *io, unsigned events)
{
    fsock_t *fs = io->data;
    px_fetch_client_t *c = fs->c;
    curl_socket_t fd = fs->fd; /* fs may be freed inside socket_action */
    int mask = ((events & PX_READABLE) ? CURL_CSELECT_IN : 0) |
               ((events & PX_WRITABLE) ? CURL_CSELECT_OUT : 0) |
               ((events & PX_HUP) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(c->multi, fd, mask, &running);
    check_done(c);
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    PX_UNUSED(e);
    px_fetch_client_t *c = userp;
    fsock_t *fs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (fs) {
            curl_multi_assign(c->multi, s, NULL);
            sock_free(c, fs);
        }
        return 0;
    }
    if (!fs) {
        fs = px__calloc(1, sizeof *fs);
        if (!fs)
            return -1;
        fs->c = c;
        fs->fd = s;
        px_io_init(&fs->io, s, on_io, fs);
        fs->next = c->socks;
        if (c->socks)
            c->socks->prev = fs;
        c->socks = fs;
        curl_multi_assign(c->multi, s, fs);
    }
    unsigned ev =
        ((what & CURL_POLL_IN) ? PX_READABLE : 0u) | ((what & CURL_POLL_OUT) ? PX_WRITABLE : 0u);
    return px_io_start(c->loop, &fs->io, ev) == 0 ? 0 : -1;
}

static void on_timer(px_timer_t *t)
{
    px_fetch_client_t *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* curl asks to be called back in `ms` (0: as soon as possible, never from inside this
 * callback: the loop's timer fires on its next iteration), or never (-1). */
static int timer_cb(CURLM *m, long ms, void *userp)
{
    PX_UNUSED(m);
    px_fetch_client_t *c = userp;
    if (ms < 0)
        px_timer_stop(&c->timer);
    else
        px_timer_start(c->loop, &c->timer, (uint64_t)ms);
    return 0;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    px_fetch_t *f = ud;
    size_t len = size * n;
    if (px_buf_append(&f->body, p, len) != 0) {
        f->too_big = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    px_fetch_t *f = ud;
    size_t len = size * n;
    /* A new status line (a redirect, 100 Continue): keep the last response's headers. */
    if (len > 5 && memcmp(p, "HTTP/", 5) == 0)
        px_buf_reset(&f->head);
    if (px_buf_append(&f->head, p, len) != 0)
        return 0;
    return len;
}

/* ---- transfers ------------------------------------------------------------------------------ */

static void unlink_fetch(px_fetch_t *f)
{
    px_fetch_client_t *c = f->c;
    if (f->prev)
        f->prev->next = f->next;
    else
        c->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    c->n--;
}

static void fetch_free(px_fetch_t *f)
{
    curl_multi_remove_handle(f->c->multi, f->easy);
    curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->headers);
    px_buf_dispose(&f->body);
    px_buf_dispose(&f->head);
    px__free(f);
}

static int errno_of(CURLcode rc, const px_fetch_t *f)
{
    switch (rc) {
    case CURLE_OK: return 0;
    case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return -EHOSTUNREACH;
    case CURLE_WRITE_ERROR: return f->too_big ? -EMSGSIZE : -EIO;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_TOO_MANY_REDIRECTS: return -EPROTO;
    default: return -EIO;
    }
}

static void check_done(px_fetch_client_t *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        px_fetch_t *f = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&f);
        CURLcode rc = msg->data.result;
        long code = 0;
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
        unlink_fetch(f);
        px_fetch_res_t res = {.status = errno_of(rc, f),
                              .http_status = rc == CURLE_OK ? (int)code : 0,
                              .body = {px_buf_head(&f->body), px_buf_size(&f->body)},
                              .error = "",
                              .elapsed_ms = px_now_ms() - f->t0,
                              ._head = {px_buf_head(&f->head), px_buf_size(&f->head)}};
        if (rc != CURLE_OK)
            res.error = f->too_big     ? "response body over max_response"
                        : f->errbuf[0] ? f->errbuf
                                       : curl_easy_strerror(rc);
        if (f->cb)
            f->cb(&res, f->ud);
        fetch_free(f);
    }
}

px_str_t px_fetch_res_header(const px_fetch_res_t *res, const char *name)
{
    size_t nl = strlen(name);
    const char *p = res->_head.ptr, *end = p ? p + res->_head.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && (size_t)(colon - p) == nl && strncasecmp(p, name, nl) == 0) {
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return (px_str_t){v, (size_t)(ve - v)};
        }
        p = eol ? eol + 1 : end;
    }
    return (px_str_t){NULL, 0};
}

px_fetch_client_t *px_fetch_client_new(px_loop_t *loop)
{
    pthread_once(&curl_once, curl_init);
    if (!curl_ok)
        return NULL;
    px_fetch_client_t *c = px__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        px__free(c);
        return NULL;
    }
    px_timer_init(&c->timer, on_timer, c);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

void px_fetch_client_free(px_fetch_client_t *c)
{
    if (!c)
        return;
    while (c->head) {
        px_fetch_t *f = c->head;
        unlink_fetch(f);
        fetch_free(f); /* removing the handle closes its sockets (CURL_POLL_REMOVE) */
    }
    curl_multi_cleanup(c->multi);
    while (c->socks) /* cached connections curl closed without telling */
        sock_free(c, c->socks);
    px_timer_stop(&c->timer);
    px__free(c);
}

size_t px_fetch_client_pending(const px_fetch_client_t *c)
{
    return c->n;
}

void px_fetch_cancel(px_fetch_t *f)
{
    if (!f)
        return;
    unlink_fetch(f);
    fetch_free(f);
}

int px_fetch_client_start(px_fetch_client_t *c, const px_fetch_req_t *req, px_fetch_cb cb, void *ud,
                          px_fetch_t **out)
{
    if (!req->url || !*req->url)
        return -EINVAL;
    px_fetch_t *f = px__calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->c = c;
    f->cb = cb;
    f->ud = ud;
    f->t0 = px_now_ms();
    px_buf_init(&f->body, req->max_response ? req->max_response : DEF_MAX_RESP);
    px_buf_init(&f->head, HEAD_MAX);
    f->easy = curl_easy_init();
    if (!f->easy) {
        px__free(f);
        return -ENOMEM;
    }
    CURL *e = f->easy;
    const char *method = req->method && *req->method ? req->method : "GET";
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
    curl_easy_setopt(e, CURLOPT_PRIVATE, f);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     (long)(req->timeout_ms ? req->timeout_ms : DEF_TIMEOUT));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms ? req->connect_timeout_ms : DEF_CONNECT));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "plexus/" PX_VERSION_STRING);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0 || req->body) {
        if (req->body || strcmp(method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            bad |=
                curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "") != CURLE_OK;
        }
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    /* No "Expect: 100-continue" round trip before a body. */
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    bad |= !h;
    for (const char *const *p = req->headers; p && *p && h; p++) {
        struct curl_slist *n = curl_slist_append(h, *p);
        if (!n)
            bad = 1;
        else
            h = n;
    }
    f->headers = h;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (bad || curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        curl_slist_free_all(f->headers);
        px_buf_dispose(&f->body);
        px_buf_dispose(&f->head);
        px__free(f);
        return -ENOMEM;
    }
    f->next = c->head;
    if (c->head)
        c->head->prev = f;
    c->head = f;
    c->n++;
    if (out)
        *out = f;
    return 0;
}

/* ---- per-worker clients of a server ---------------------------------------------------------- */

typedef struct fetch_module {
    unsigned n;
    px_fetch_client_t *clients[];
} fetch_module_t;

static char fetch_key;

static void module_free(void *p)
{
    fetch_module_t *m = p;
    for (unsigned i = 0; i < m->n; i++)
        px_fetch_client_free(m->clients[i]);
    px__free(m);
}

int px_fetch_enable(px_server_t *s)
{
    if (px_server_module(s, &fetch_key))
        return 0;
    pthread_once(&curl_once, curl_init); /* on this (main) thread, before the workers */
    if (!curl_ok)
        return -EIO;
    unsigned n = px_workers_count(px_server_workers(s));
    fetch_module_t *m = px__calloc(1, sizeof *m + n * sizeof m->clients[0]);
    if (!m)
        return -ENOMEM;
    m->n = n;
    int r = px_server_module_set(s, &fetch_key, m, module_free);
    if (r)
        px__free(m);
    return r;
}

int px_fetch(px_server_t *s, const px_fetch_req_t *req, px_fetch_cb cb, void *ud, px_fetch_t **out)
{
    fetch_module_t *m = px_server_module(s, &fetch_key);
    if (!m)
        return -EINVAL;
    px_worker_t *w = px_worker_self();
    if (!w || px_worker_group(w) != px_server_workers(s))
        return -EPERM;
    unsigned id = px_worker_id(w);
    if (!m->clients[id]) {
        m->clients[id] = px_fetch_client_new(px_worker_loop(w));
        if (!m->clients[id])
            return -ENOMEM;
    }
    return px_fetch_client_start(m->clients[id], req, cb, ud, out);
}
