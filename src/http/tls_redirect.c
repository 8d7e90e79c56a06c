/* "tls-redirect": the protocol for plain HTTP on a port that requires TLS
 * (--tls-only). The sniffer starts it when the first bytes of a connection on
 * such a listener are an HTTP/1.x request. It reads one request head, answers
 * GET and HEAD with a 301 to the same Host and target over https://, anything
 * else with a 400 (like nginx's "The plain HTTP request was sent to HTTPS
 * port"), and closes. Declared in plexus/tls.h (px_tls_redirect_register);
 * register it after the HTTP layer, so that "http/1.1" stays the default. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "http/http1_parse.h"
#include "plexus/http.h"
#include "plexus/tls.h"

#define MAX_HEAD     16384 /* request head bytes (the default --max-header-size) */
#define MAX_HEADERS  100
#define HEAD_TIMEOUT 10000 /* ms, like --header-timeout */

typedef struct redirect {
    px__http1_parser_t parser;
    px__http1_request_t req;
    px__http_header_t headers[MAX_HEADERS];
} redirect_t;

static void answer(px_conn_t *c, int status, const char *location, const char *body, int head)
{
    char hdr[MAX_HEAD + 512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\n%s%s%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, px_http_reason(status), location ? "Location: " : "",
                     location ? location : "", location ? "\r\n" : "", strlen(body));
    if (n > 0 && (size_t)n < sizeof hdr) {
        px_conn_write(c, hdr, (size_t)n);
        if (!head)
            px_conn_write(c, body, strlen(body));
    }
    px_conn_close(c);
}

static ssize_t on_read(px_conn_t *c, char *data, size_t len)
{
    redirect_t *r = px_conn_state(c);
    px__http1_limits_t lim = {8192, MAX_HEAD, MAX_HEADERS};
    int n = px__http1_parse_request(&r->parser, data, len, &r->req, MAX_HEADERS, &lim);
    if (n == PX_PARSE_INCOMPLETE)
        return 0; /* kept (bounded by the read limit) and presented again with more */
    char body[512];
    if (n == PX_PARSE_ERROR) {
        snprintf(body, sizeof body,
                 "{\"error\":\"tls_required\",\"message\":\"this port requires TLS (use "
                 "https://); the plain HTTP request was also malformed: %s\"}",
                 r->req.error ? r->req.error : "bad request");
        answer(c, 400, NULL, body, 0);
        return -1;
    }
    px__http1_request_t *q = &r->req;
    int get = q->method.len == 3 && memcmp(q->method.ptr, "GET", 3) == 0;
    int head = q->is_head;
    if ((!get && !head) || !q->host.len || !q->path.len || q->path.ptr[0] != '/') {
        snprintf(body, sizeof body,
                 "{\"error\":\"tls_required\",\"message\":\"the plain HTTP request was sent to "
                 "a port that requires TLS: use https://\"}");
        answer(c, 400, NULL, body, head);
        return -1;
    }
    /* The same port serves TLS: the Host as sent (with its port, if any). The
     * parser has checked both: no CR, LF or space can get into the header. */
    char location[MAX_HEAD + 16];
    snprintf(location, sizeof location, "https://%.*s%.*s", (int)q->host.len, q->host.ptr,
             (int)q->target.len, q->target.ptr);
    if (q->target.len && q->target.ptr[0] != '/') /* absolute-form: keep only the path */
        snprintf(location, sizeof location, "https://%.*s%.*s%s%.*s", (int)q->host.len, q->host.ptr,
                 (int)q->path.len, q->path.ptr, q->query.ptr ? "?" : "", (int)q->query.len,
                 q->query.ptr ? q->query.ptr : "");
    snprintf(body, sizeof body,
             "{\"error\":\"tls_required\",\"message\":\"this port requires TLS\"}");
    answer(c, 301, location, body, head);
    return -1;
}

static void on_close(px_conn_t *c)
{
    px__free(px_conn_state(c));
}

static void on_timeout(px_conn_t *c)
{
    px_conn_abort(c);
}

static const px_protocol_t redirect_proto = {
    .name = "tls-redirect",
    .on_read = on_read,
    .on_timeout = on_timeout,
    .on_close = on_close,
};

static void *on_accept(px_conn_t *c, void *ud)
{
    PX_UNUSED(ud);
    redirect_t *r = px__calloc(1, sizeof *r);
    if (!r) {
        px_conn_abort(c);
        return NULL;
    }
    px__http1_parser_init(&r->parser);
    r->req.headers = r->headers;
    px_conn_set_read_limit(c, MAX_HEAD + 1);
    px_conn_set_timeout(c, HEAD_TIMEOUT);
    return r;
}

int px_tls_redirect_register(px_server_t *s)
{
    return px_server_add_protocol(s, "tls-redirect", &redirect_proto, on_accept, NULL);
}
