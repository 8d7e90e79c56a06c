/* Router: patterns are split into segments once at registration; a request's
 * path is matched segment by segment against each route in order. Literal
 * segments compare raw (percent-encoded) bytes; parameters are decoded. */
#include <string.h>

#include "core/alloc.h"
#include "http/http_int.h"

enum { SEG_LIT, SEG_PARAM, SEG_WILD };

typedef struct seg {
    int kind;
    char *text; /* literal bytes, or the parameter name ("*" for the wildcard) */
    size_t len;
} seg_t;

struct px__route {
    char method[16]; /* "*" = any */
    seg_t *segs;
    unsigned nseg;
    px_handler_fn fn;
    void *ud;
    void (*ud_free)(void *);
};

static void route_free(px__route_t *r)
{
    if (r->ud_free)
        r->ud_free(r->ud);
    for (unsigned i = 0; i < r->nseg; i++)
        px__free(r->segs[i].text);
    px__free(r->segs);
}

int px__router_add(px__http_t *h, const char *method, const char *pattern, px_handler_fn fn,
                   void *ud, void (*ud_free)(void *))
{
    if (!method || !pattern || pattern[0] != '/' || !fn || strlen(method) >= 16 || !*method)
        return -EINVAL;
    /* ud is released only once the route exists; on failure the caller keeps it. */
    px__route_t r = {.fn = fn, .ud = ud};
    memcpy(r.method, method, strlen(method) + 1);
    const char *p = pattern + 1;
    unsigned cap = 1;
    for (const char *q = p; *q; q++)
        cap += *q == '/';
    r.segs = px__calloc(cap, sizeof *r.segs);
    if (!r.segs)
        return -ENOMEM;
    unsigned nparams = 0;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        seg_t *s = &r.segs[r.nseg++];
        if (len == 1 && p[0] == '*') {
            if (end) { /* the wildcard must be last */
                route_free(&r);
                return -EINVAL;
            }
            s->kind = SEG_WILD;
            nparams++;
        } else if (len > 0 && p[0] == ':') {
            if (len == 1) {
                route_free(&r);
                return -EINVAL;
            }
            s->kind = SEG_PARAM;
            p++;
            len--;
            nparams++;
        } else {
            s->kind = SEG_LIT;
        }
        s->text = px__malloc(len + 1);
        if (!s->text) {
            route_free(&r);
            return -ENOMEM;
        }
        memcpy(s->text, s->kind == SEG_WILD ? "*" : p, len);
        s->text[len] = '\0';
        s->len = len;
        if (!end)
            break;
        p = end + 1;
    }
    if (nparams > PX__HTTP_MAX_PARAMS) {
        route_free(&r);
        return -EINVAL;
    }
    if (h->nroutes == h->routes_cap) {
        size_t cap2 = h->routes_cap ? h->routes_cap * 2 : 8;
        px__route_t *n = px__realloc(h->routes, cap2 * sizeof *n);
        if (!n) {
            route_free(&r);
            return -ENOMEM;
        }
        h->routes = n;
        h->routes_cap = cap2;
    }
    r.ud_free = ud_free;
    h->routes[h->nroutes++] = r;
    return 0;
}

void px__router_free(px__http_t *h)
{
    for (size_t i = 0; i < h->nroutes; i++)
        route_free(&h->routes[i]);
    px__free(h->routes);
    h->routes = NULL;
    h->nroutes = h->routes_cap = 0;
}

/* Match `path` (starts with '/') against r; fills raw params. */
static int match(const px__route_t *r, px_str_t path, px_str_t *vals)
{
    const char *p = path.ptr + 1, *end = path.ptr + path.len;
    unsigned np = 0;
    for (unsigned i = 0; i < r->nseg; i++) {
        const seg_t *s = &r->segs[i];
        if (p > end)
            return 0; /* path has fewer segments (also "/static" for "/static/" + wildcard) */
        if (s->kind == SEG_WILD) {
            vals[np++] = (px_str_t){p, (size_t)(end - p)};
            return 1;
        }
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *send = slash ? slash : end;
        size_t len = (size_t)(send - p);
        if (s->kind == SEG_LIT) {
            if (len != s->len || memcmp(p, s->text, len) != 0)
                return 0;
        } else {
            if (len == 0)
                return 0; /* a parameter is never empty */
            vals[np++] = (px_str_t){p, len};
        }
        p = send + 1; /* past the slash, or end + 1 when there was none */
    }
    return p == end + 1; /* every path segment consumed */
}

static int method_ok(const px__route_t *r, px_str_t m)
{
    if (r->method[0] == '*' && r->method[1] == '\0')
        return 1;
    size_t n = strlen(r->method);
    if (m.len == n && memcmp(m.ptr, r->method, n) == 0)
        return 1;
    /* HEAD is GET without a body. */
    return m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0 && strcmp(r->method, "GET") == 0;
}

void px__router_dispatch(px__http_t *h, px_req_t *req)
{
    px_str_t path = req->h.path;
    px_str_t m = req->h.method;
    if (m.len == 7 && memcmp(m.ptr, "CONNECT", 7) == 0) {
        /* An authority-form target has no path to match: CONNECT goes to the
         * first route registered for the method CONNECT itself (not "*"),
         * whatever its pattern; without one the method is not implemented
         * here (RFC 9110 15.6.2), rather than "no resource" (404). */
        for (size_t i = 0; i < h->nroutes; i++) {
            const px__route_t *r = &h->routes[i];
            if (strcmp(r->method, "CONNECT") == 0) {
                req->nparams = 0;
                r->fn(req, r->ud);
                return;
            }
        }
        px_respond_error(req, 501, NULL, "CONNECT is not implemented by this server");
        return;
    }
    if (!path.ptr || path.len == 0 || path.ptr[0] != '/') {
        px_respond_error(req, 404, NULL, "no resource at this request target");
        return;
    }
    char allow[160] = "";
    size_t alen = 0;
    for (size_t i = 0; i < h->nroutes; i++) {
        const px__route_t *r = &h->routes[i];
        px_str_t vals[PX__HTTP_MAX_PARAMS];
        if (!match(r, path, vals))
            continue;
        if (!method_ok(r, req->h.method)) {
            size_t n = strlen(r->method);
            if (!strstr(allow, r->method) && alen + n + 3 < sizeof allow) {
                if (alen) {
                    memcpy(allow + alen, ", ", 2);
                    alen += 2;
                }
                memcpy(allow + alen, r->method, n);
                alen += n;
                allow[alen] = '\0';
                if (strcmp(r->method, "GET") == 0 && alen + 6 < sizeof allow) {
                    memcpy(allow + alen, ", HEAD", 7);
                    alen += 6;
                }
            }
            continue;
        }
        req->nparams = 0;
        unsigned np = 0;
        for (unsigned k = 0; k < r->nseg; k++) {
            const seg_t *s = &r->segs[k];
            if (s->kind == SEG_LIT)
                continue;
            px_str_t v;
            if (px__http_decode(&req->arena, vals[np], &v, 0) != 0) {
                px_respond_error(req, 400, NULL, "badly percent-encoded path");
                return;
            }
            req->param_names[np] = (px_str_t){s->text, s->len};
            req->param_values[np] = v;
            np++;
        }
        req->nparams = np;
        r->fn(req, r->ud);
        return;
    }
    if (alen) {
        px_res_header(req, "Allow", allow);
        px_respond_error(req, 405, NULL, "method %.*s is not allowed here (allowed: %s)",
                         (int)req->h.method.len, req->h.method.ptr, allow);
        return;
    }
    px_respond_error(req, 404, NULL, "nothing at %.*s", (int)path.len, path.ptr);
}

int px_route(px_server_t *s, const char *method, const char *pattern, px_handler_fn fn, void *ud)
{
    px__http_t *h = px__http_get(s);
    if (!h)
        return -ENOMEM;
    return px__router_add(h, method, pattern, fn, ud, NULL);
}
