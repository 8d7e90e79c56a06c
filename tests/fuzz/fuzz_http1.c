/* libFuzzer harness for px__http1_parse_request.
 *
 * Each input is parsed whole, split in two at a position derived from the
 * input, and (when short) one byte more per call, every call on a fresh heap
 * buffer of exactly the bytes given (ASan sees any read past the end, and the
 * data moves between calls). All feedings, and every implementation the CPU
 * has, must agree exactly; results must satisfy the header's promises. A hash
 * of the input also picks tight limits now and then, to reach 414/431 paths. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http/http1_parse.h"

#define NHDR 32

enum { SPAN_NULL = -1, SPAN_ROOT = -2 }; /* {NULL, 0} / the static "/" */

/* A result with pointers turned into offsets, comparable across buffers. */
typedef struct result {
    int rc, status;
    const char *error;
    long span[6][2]; /* method, target, path, query, host, upgrade_proto */
    long hdr[NHDR][4];
    size_t num_headers;
    int minor;
    int64_t content_length;
    unsigned bits;
} result_t;

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && memchr("!#$%&'*+-.^_`|~", c, 15));
}

static long off(const char *p, const char *buf, size_t len, size_t n)
{
    CHECK(p >= buf && p + n <= buf + len);
    return (long)(p - buf);
}

static void record_span(long out[2], px_str_t s, const char *buf, size_t head)
{
    out[1] = (long)s.len;
    if (!s.ptr) {
        CHECK(s.len == 0);
        out[0] = SPAN_NULL;
    } else if (s.len == 1 && s.ptr[0] == '/' && (s.ptr < buf || s.ptr >= buf + head)) {
        out[0] = SPAN_ROOT;
    } else {
        out[0] = off(s.ptr, buf, head, s.len);
    }
}

/* Check what the header promises about a successful result, then record it. */
static void record(result_t *r, int rc, const px__http1_request_t *req, const char *buf, size_t len)
{
    memset(r, 0, sizeof *r);
    r->rc = rc;
    if (rc == PX_PARSE_INCOMPLETE)
        return;
    if (rc == PX_PARSE_ERROR) {
        CHECK(req->status == 400 || req->status == 414 || req->status == 431 ||
              req->status == 501 || req->status == 505);
        CHECK(req->error && req->error[0]);
        r->status = req->status;
        r->error = req->error;
        return;
    }
    size_t head = (size_t)rc;
    CHECK(rc >= 0 && head <= len && head >= 4);
    CHECK(memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
    px_str_t spans[6] = {req->method, req->target, req->path,
                         req->query,  req->host,   req->upgrade_proto};
    for (int i = 0; i < 6; i++)
        record_span(r->span[i], spans[i], buf, head);
    CHECK(req->method.len > 0 && req->target.len > 0);
    for (size_t i = 0; i < req->method.len; i++)
        CHECK(is_tchar((unsigned char)req->method.ptr[i]));
    for (size_t i = 0; i < req->target.len; i++)
        CHECK(req->target.ptr[i] > 0x20 && req->target.ptr[i] < 0x7f);
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    CHECK(req->num_headers <= NHDR);
    for (size_t i = 0; i < req->num_headers; i++) {
        px_str_t n = req->headers[i].name, v = req->headers[i].value;
        r->hdr[i][0] = off(n.ptr, buf, head, n.len);
        r->hdr[i][1] = (long)n.len;
        r->hdr[i][2] = off(v.ptr, buf, head, v.len);
        r->hdr[i][3] = (long)v.len;
        CHECK(n.len > 0 && n.ptr[n.len] == ':');
        for (size_t j = 0; j < n.len; j++)
            CHECK(is_tchar((unsigned char)n.ptr[j]));
        for (size_t j = 0; j < v.len; j++) {
            unsigned char c = (unsigned char)v.ptr[j];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (v.len)
            CHECK(v.ptr[0] != ' ' && v.ptr[0] != '\t' && v.ptr[v.len - 1] != ' ' &&
                  v.ptr[v.len - 1] != '\t');
    }
    if (req->minor_version == 1)
        CHECK(px__http1_find_header(req, "host") != NULL);
    CHECK(req->content_length >= -1);
    CHECK(!(req->chunked && req->content_length != -1));
    CHECK(!req->upgrade || (req->minor_version == 1 && req->upgrade_proto.len > 0));
    r->num_headers = req->num_headers;
    r->minor = req->minor_version;
    r->content_length = req->content_length;
    r->bits = req->chunked | req->keep_alive << 1 | req->expect_continue << 2 |
              req->expect_other << 3 | req->upgrade << 4 | req->is_head << 5;
}

/* Feed data[0..ends[i]) on successive calls, each in a new exact-size buffer
 * allocated before the previous one is freed (so it moves). Between calls the
 * finished header entries move to the other array, as the server does. */
static void feed(const uint8_t *data, const size_t *ends, size_t nends,
                 const px__http1_limits_t *lim, result_t *out)
{
    px__http1_parser_t p;
    static px__http_header_t hdrs[2][NHDR];
    px__http1_request_t req;
    char *prev = NULL;
    int rc = PX_PARSE_INCOMPLETE;
    px__http1_parser_init(&p);
    req.headers = hdrs[0];
    for (size_t i = 0; i < nends && rc == PX_PARSE_INCOMPLETE; i++) {
        if (i) {
            px__http_header_t *next = hdrs[i & 1];
            memset(next, 0xa5, sizeof hdrs[0]);
            memcpy(next, req.headers, req.num_headers * sizeof *next);
            req.headers = next;
        }
        char *b = malloc(ends[i] ? ends[i] : 1);
        CHECK(b);
        memcpy(b, data, ends[i]);
        free(prev);
        prev = b;
        rc = px__http1_parse_request(&p, b, ends[i], &req, NHDR, lim);
        record(out, rc, &req, b, ends[i]);
    }
    free(prev);
}

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211u;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static result_t whole, other; /* large: keep them off the stack */
    uint64_t h = hash(data, size);
    px__http1_limits_t lim = PX_HTTP1_LIMITS_DEFAULT;
    if ((h & 7) == 0) { /* tight limits, one time in eight */
        lim.max_request_line = 16 + (h >> 8) % 64;
        lim.max_header_bytes = 32 + (h >> 16) % 256;
        lim.max_headers = (h >> 24) % 8;
    }

    size_t end = size;
    feed(data, &end, 1, &lim, &whole);

    size_t ends[2] = {size ? (size_t)((h >> 32) % size) : 0, size};
    feed(data, ends, 2, &lim, &other);
    CHECK(memcmp(&whole, &other, sizeof whole) == 0);

    if (size <= 512) {
        static size_t each[513];
        for (size_t i = 0; i <= size; i++)
            each[i] = i;
        feed(data, each, size + 1, &lim, &other);
        CHECK(memcmp(&whole, &other, sizeof whole) == 0);
    }

    /* every implementation gives the same answer */
    int dflt = px__http1_impl();
    for (int impl = PX__HTTP1_IMPL_SCALAR; impl <= PX__HTTP1_IMPL_AVX2; impl++) {
        if (impl == dflt || px__http1_force_impl(impl) != 0)
            continue;
        feed(data, &end, 1, &lim, &other);
        CHECK(memcmp(&whole, &other, sizeof whole) == 0);
    }
    px__http1_force_impl(dflt);
    return 0;
}
