/* hiredis async on px_loop: the adapter (ev hooks -> px_io_t) and a reconnecting
 * connection with deadlines. See redis_conn.h. */
#include "hub/redis_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/alloc.h"
#include "core/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define WATCHDOG_MS    100

/* ---- URL --------------------------------------------------------------------------------------
 */

static int url_err(char *err, size_t errlen, const char *url, const char *why)
{
    if (errlen)
        snprintf(err, errlen, "%s: %s", url, why);
    return -EINVAL;
}

/* Copy [s, s+n) into dst (cap bytes with the NUL); -1 if it does not fit. */
static int copy_part(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* key=value&... after '?' */
static int parse_query(const char *url, const char *q, px__rurl_t *u, char *err, size_t errlen)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        if (!eq)
            return url_err(err, errlen, url, "query parameters are key=value");
        size_t kl = (size_t)(eq - q), vl = len - kl - 1;
        const char *v = eq + 1;
        uint64_t n;
        if (kl == 2 && memcmp(q, "db", 2) == 0) {
            if (parse_uint(v, vl, 1 << 20, &n))
                return url_err(err, errlen, url, "db must be a number");
            u->db = (int)n;
        } else if (kl == 8 && memcmp(q, "password", 8) == 0) {
            if (copy_part(u->password, sizeof u->password, v, vl))
                return url_err(err, errlen, url, "password too long");
        } else if (kl == 4 && memcmp(q, "user", 4) == 0) {
            if (copy_part(u->user, sizeof u->user, v, vl))
                return url_err(err, errlen, url, "user too long");
        } else if (kl == 6 && memcmp(q, "prefix", 6) == 0) {
            if (vl == 0 || copy_part(u->prefix, sizeof u->prefix, v, vl))
                return url_err(err, errlen, url, "prefix must be 1..63 bytes");
        } else if (kl == 7 && memcmp(q, "timeout", 7) == 0) {
            if (parse_uint(v, vl, 3600000, &n) || n < 10)
                return url_err(err, errlen, url, "timeout is milliseconds, 10..3600000");
            u->timeout_ms = n;
        } else {
            return url_err(err, errlen, url,
                           "unknown parameter (db, password, user, prefix, timeout)");
        }
        q += len + (amp != NULL);
    }
    return 0;
}

int px__rurl_parse(const char *url, px__rurl_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    u->timeout_ms = 2000;
    snprintf(u->prefix, sizeof u->prefix, "plexus");
    if (!url)
        return url_err(err, errlen, "(null)", "no URL");
    const char *p;
    if (strncmp(url, "rediss://", 9) == 0)
        return url_err(err, errlen, url,
                       "TLS to Redis needs hiredis >= 1.0 with hiredis_ssl; this build has hiredis "
                       "0.14 (Debian 12): use a unix socket or a TLS tunnel (stunnel)");
    int is_unix = 0;
    if (strncmp(url, "redis://", 8) == 0)
        p = url + 8;
    else if (strncmp(url, "redis+unix://", 13) == 0)
        p = url + 13, is_unix = 1;
    else if (strncmp(url, "unix://", 7) == 0)
        p = url + 7, is_unix = 1;
    else if (strncmp(url, "unix:", 5) == 0)
        p = url + 5, is_unix = 1;
    else
        return url_err(err, errlen, url, "expected redis://HOST:PORT[/DB] or unix:PATH");

    const char *q = strchr(p, '?');
    size_t rest = q ? (size_t)(q - p) : strlen(p);
    if (is_unix) {
        if (rest == 0 || p[0] != '/' || copy_part(u->path, sizeof u->path, p, rest))
            return url_err(err, errlen, url, "unix: needs an absolute socket path");
    } else {
        /* [user[:password]@]host[:port][/db] */
        const char *at = memchr(p, '@', rest);
        if (at) {
            const char *colon = memchr(p, ':', (size_t)(at - p));
            if (colon) {
                if (copy_part(u->user, sizeof u->user, p, (size_t)(colon - p)) ||
                    copy_part(u->password, sizeof u->password, colon + 1, (size_t)(at - colon - 1)))
                    return url_err(err, errlen, url, "user or password too long");
            } else if (copy_part(u->password, sizeof u->password, p, (size_t)(at - p))) {
                return url_err(err, errlen, url, "password too long");
            }
            rest -= (size_t)(at + 1 - p);
            p = at + 1;
        }
        const char *slash = memchr(p, '/', rest);
        size_t hp = slash ? (size_t)(slash - p) : rest;
        const char *hend = p + hp;
        const char *colon = NULL;
        if (hp && p[0] == '[') { /* [v6]:port */
            const char *rb = memchr(p, ']', hp);
            if (!rb)
                return url_err(err, errlen, url, "unterminated [IPv6] host");
            if (copy_part(u->host, sizeof u->host, p + 1, (size_t)(rb - p - 1)))
                return url_err(err, errlen, url, "host too long");
            colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
        } else {
            colon = memchr(p, ':', hp);
            if (copy_part(u->host, sizeof u->host, p, colon ? (size_t)(colon - p) : hp))
                return url_err(err, errlen, url, "host too long");
        }
        if (!u->host[0])
            return url_err(err, errlen, url, "no host");
        if (colon) {
            uint64_t port;
            if (parse_uint(colon + 1, (size_t)(hend - colon - 1), 65535, &port) || port == 0)
                return url_err(err, errlen, url, "port must be 1..65535");
            u->port = (int)port;
        }
        if (slash && (size_t)(slash - p) + 1 < rest) {
            uint64_t db;
            if (parse_uint(slash + 1, rest - hp - 1, 1 << 20, &db))
                return url_err(err, errlen, url, "the path is a database number (/0)");
            u->db = (int)db;
        }
    }
    return q ? parse_query(url, q + 1, u, err, errlen) : 0;
}

/* ---- the loop adapter -------------------------------------------------------------------------
 */

static void on_io(px_io_t *io, unsigned events)
{
    px__rconn_t *c = io->data;
    /* hiredis may free the context inside either call (an error drops it): look again. */
    if (c->ac && (events & (PX_READABLE | PX_HUP)))
        redisAsyncHandleRead(c->ac);
    if (c->ac && (events & PX_WRITABLE))
        redisAsyncHandleWrite(c->ac);
}

static void update_io(px__rconn_t *c)
{
    px_io_start(c->loop, &c->io, c->want);
}

static void ev_add_read(void *d)
{
    px__rconn_t *c = d;
    c->want |= PX_READABLE;
    update_io(c);
}

static void ev_del_read(void *d)
{
    px__rconn_t *c = d;
    c->want &= ~(unsigned)PX_READABLE;
    update_io(c);
}

static void ev_add_write(void *d)
{
    px__rconn_t *c = d;
    c->want |= PX_WRITABLE;
    update_io(c);
}

static void ev_del_write(void *d)
{
    px__rconn_t *c = d;
    c->want &= ~(unsigned)PX_WRITABLE;
    update_io(c);
}

static void ev_cleanup(void *d)
{
    px__rconn_t *c = d;
    c->want = 0;
    px_io_stop(&c->io);
}

/* ---- connection life cycle --------------------------------------------------------------------
 */

static void schedule_retry(px__rconn_t *c)
{
    if (c->closing)
        return;
    c->state = PX__RCONN_DOWN;
    px_timer_start(c->loop, &c->retry, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void went_down(px__rconn_t *c, const char *why)
{
    int was_ready = c->state == PX__RCONN_READY;
    c->ac = NULL;
    c->pending = 0;
    c->handshake = 0;
    snprintf(c->last_error, sizeof c->last_error, "%s", why ? why : "connection lost");
    if (was_ready)
        px_log(PX_LOG_WARN, "redis %s: connection lost: %s", c->what, c->last_error);
    schedule_retry(c);
    if (was_ready && c->on_down && !c->closing)
        c->on_down(c, c->ud);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    px__rconn_t *c = ac->data;
    PX_UNUSED(status);
    went_down(c, ac->errstr[0] ? ac->errstr : "disconnected");
}

static void became_ready(px__rconn_t *c)
{
    c->state = PX__RCONN_READY;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->progress_ms = px_loop_now(c->loop);
    if (c->reconnects++)
        px_log(PX_LOG_INFO, "redis %s: connected again", c->what);
    if (c->on_ready)
        c->on_ready(c, c->ud);
}

static void on_handshake(redisAsyncContext *ac, void *r, void *priv)
{
    PX_UNUSED(priv);
    px__rconn_t *c = ac->data;
    redisReply *reply = r;
    if (!reply)
        return; /* dropped: on_disconnect handles it */
    c->progress_ms = px_loop_now(c->loop);
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(c->last_error, sizeof c->last_error, "%.*s", (int)reply->len, reply->str);
        px_log(PX_LOG_ERROR, "redis %s: %s", c->what, c->last_error);
        redisAsyncDisconnect(ac);
        return;
    }
    if (--c->handshake == 0)
        became_ready(c);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    px__rconn_t *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback; on_disconnect does not run. */
        if (c->state == PX__RCONN_CONNECTING && c->reconnects == 0 && !c->last_error[0])
            px_log(PX_LOG_WARN, "redis %s: cannot connect: %s (retrying)", c->what, ac->errstr);
        snprintf(c->last_error, sizeof c->last_error, "%s", ac->errstr);
        c->ac = NULL;
        schedule_retry(c);
        return;
    }
    c->progress_ms = px_loop_now(c->loop);
    c->handshake = 0;
    if (c->url.password[0]) {
        if (c->url.user[0])
            redisAsyncCommand(ac, on_handshake, NULL, "AUTH %s %s", c->url.user, c->url.password);
        else
            redisAsyncCommand(ac, on_handshake, NULL, "AUTH %s", c->url.password);
        c->handshake++;
    }
    if (c->url.db) {
        redisAsyncCommand(ac, on_handshake, NULL, "SELECT %d", c->url.db);
        c->handshake++;
    }
    if (!c->handshake)
        became_ready(c);
}

static void do_connect(px__rconn_t *c)
{
    redisAsyncContext *ac = c->url.path[0] ? redisAsyncConnectUnix(c->url.path)
                                           : redisAsyncConnect(c->url.host, c->url.port);
    if (!ac) {
        schedule_retry(c);
        return;
    }
    if (ac->err) {
        snprintf(c->last_error, sizeof c->last_error, "%s", ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->state = PX__RCONN_CONNECTING;
    c->progress_ms = px_loop_now(c->loop);
    c->want = 0;
    px_io_init(&c->io, ac->c.fd, on_io, c);
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* hiredis 0.14 waits for writability to finish the non-blocking connect. */
    ev_add_write(c);
    redisEnableKeepAlive(&ac->c);
}

static void retry_cb(px_timer_t *t)
{
    px__rconn_t *c = t->data;
    if (!c->closing && !c->ac)
        do_connect(c);
}

/* A connect or a command past its deadline drops the connection: callers fail fast. */
static void watchdog_cb(px_timer_t *t)
{
    px__rconn_t *c = t->data;
    uint64_t now = px_loop_now(c->loop);
    if (c->ac && (c->state == PX__RCONN_CONNECTING || c->handshake || c->pending) &&
        now - c->progress_ms > c->url.timeout_ms) {
        redisAsyncContext *ac = c->ac;
        int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
        px_log(PX_LOG_WARN, "redis %s: no answer for %llu ms, reconnecting", c->what,
               (unsigned long long)(now - c->progress_ms));
        snprintf(c->last_error, sizeof c->last_error, "timed out");
        /* Pending callbacks get NULL replies; a connected context reports on_disconnect. */
        redisAsyncFree(ac);
        if (!connected && c->ac == ac) {
            c->ac = NULL;
            schedule_retry(c);
        }
    }
    if (!c->closing)
        px_timer_start(c->loop, &c->watchdog, WATCHDOG_MS);
}

void px__rconn_start(px__rconn_t *c, px_loop_t *loop, const px__rurl_t *u, const char *what)
{
    c->url = *u;
    c->what = what;
    c->loop = loop;
    c->backoff_ms = BACKOFF_MIN_MS;
    px_timer_init(&c->retry, retry_cb, c);
    px_timer_init(&c->watchdog, watchdog_cb, c);
    px_timer_start(loop, &c->watchdog, WATCHDOG_MS);
    do_connect(c);
}

void px__rconn_stop(px__rconn_t *c)
{
    c->closing = 1;
    px_timer_stop(&c->retry);
    px_timer_stop(&c->watchdog);
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        redisAsyncFree(ac);
        c->ac = NULL;
    }
    c->state = PX__RCONN_DOWN;
}

/* ---- commands ---------------------------------------------------------------------------------
 */

typedef struct pending_cmd {
    px__rconn_t *c;
    px__rconn_cb cb;
    void *ud;
} pending_cmd_t;

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    pending_cmd_t *p = priv;
    px__rconn_t *c = p->c;
    PX_UNUSED(ac);
    if (r && c->pending) {
        c->pending--;
        c->progress_ms = px_loop_now(c->loop);
    }
    if (p->cb)
        p->cb(c, r, p->ud);
    px__free(p);
}

static void on_push(redisAsyncContext *ac, void *r, void *priv)
{
    px__rconn_t *c = priv;
    PX_UNUSED(ac);
    if (c->on_push)
        c->on_push(c, r, c->ud);
}

int px__rconn_command(px__rconn_t *c, px__rconn_cb cb, void *ud, int argc, const char **argv,
                      const size_t *argvlen)
{
    if (c->state != PX__RCONN_READY || !c->ac)
        return -ENOTCONN;
    if (c->subscriber)
        return redisAsyncCommandArgv(c->ac, on_push, c, argc, argv, argvlen) == REDIS_OK
                   ? 0
                   : -ENOTCONN;
    pending_cmd_t *p = px__malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    *p = (pending_cmd_t){c, cb, ud};
    if (c->pending++ == 0)
        c->progress_ms = px_loop_now(c->loop);
    if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        c->pending--;
        px__free(p);
        return -ENOTCONN;
    }
    return 0;
}
