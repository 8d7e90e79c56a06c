/* HTTP/1.1 request-head parser and chunked body decoder (internal, pure).
 *
 * Neither function allocates or does I/O. Both follow the parser contract of
 * plexus/common.h: bytes consumed (>= 0), PX_PARSE_INCOMPLETE or PX_PARSE_ERROR.
 *
 * Strictness follows RFC 9112 for a server facing the internet: anything a
 * proxy or a back end might read differently (request smuggling, header
 * injection) is rejected with a status and a reason, never "repaired".
 *
 * Speed: bytes are classified 32 (AVX2) or 16 (SSE4.2) at a time; field
 * lines go through a 64-byte window classified once, so each colon and CR is
 * found with a shift and a bit count. The implementation is chosen once from
 * the CPU (px__http1_force_impl overrides it for tests and benchmarks). Loads
 * never leave [buf, buf + len): near the end, the block that ends at buf + len
 * is loaded instead, and a buffer shorter than a block is read byte by byte,
 * so a buffer may sit right against an unmapped page on either side.
 */
#ifndef PX_HTTP_HTTP1_PARSE_H
#define PX_HTTP_HTTP1_PARSE_H

#include <stdint.h>
#include <sys/types.h>
#include "plexus/common.h"

/** One header field line. Both spans point into the parsed buffer. `name` is a
 * non-empty token as sent (any case); `value` has leading and trailing SP/HTAB
 * removed, contains no CR, LF or other CTL except HTAB, and may be empty. */
typedef struct px_http_header {
    px_str_t name, value;
} px__http_header_t;

/** Size limits for one request head. A zero field means "no bytes allowed"
 * (use PX_HTTP1_LIMITS_DEFAULT, or pass NULL for it). */
typedef struct px__http1_limits {
    size_t max_request_line; /* request line without its CRLF; longer -> 414 */
    size_t max_header_bytes; /* whole head: leading empty lines, request line, fields and the
                                final CRLF; longer -> 431 */
    size_t max_headers;      /* field lines; more -> 431 (also capped by headers_cap) */
} px__http1_limits_t;

#define PX_HTTP1_LIMITS_DEFAULT ((px__http1_limits_t){8192, 16384, 100})

/** Empty lines (CRLF) tolerated before the request line (RFC 9112 2.2 asks for
 * at least one; a client that ends a body with a stray CRLF sends one). */
#define PX_HTTP1_MAX_EMPTY_LINES 4

/**
 * A parsed request head. Every px_str_t points into the buffer given to
 * px__http1_parse_request, except `path` for an absolute-form target without a
 * path ("GET http://h HTTP/1.1"), which points to a static "/". The pointers
 * are valid only after the call that returned the head length, and only while
 * that buffer is neither moved, modified nor freed.
 *
 * While the parser returns PX_PARSE_INCOMPLETE the struct belongs to the
 * parser: it keeps offsets in it, not pointers, and the caller must neither
 * read nor change it, with one exception: it may point `headers` at another
 * array after copying the first `num_headers` entries into it (entries past
 * those are never kept between calls). After PX_PARSE_ERROR only `status` and
 * `error` are meaningful.
 */
typedef struct px__http1_request {
    px_str_t method; /* a token, case-sensitive ("GET"); unknown methods are accepted */
    px_str_t target; /* request-target exactly as sent: 0x21-0x7E bytes only */
    /* `path` and `query` split the target at its first '?'; `query` excludes the
     * '?' and is {NULL, 0} when there is none. origin-form: path starts with '/'.
     * absolute-form: path is the part after the authority ("/" if empty).
     * asterisk-form (OPTIONS only): path is "*". authority-form (CONNECT only):
     * path is {NULL, 0}. */
    px_str_t path, query;
    int minor_version; /* 0 for HTTP/1.0; 1 for HTTP/1.1 and the higher minor versions 1.2-1.9,
                          which are processed as 1.1 (RFC 9110 2.5); another major version is
                          rejected with 505 */

    px__http_header_t *headers; /* caller's array of headers_cap entries (the parser never
                                  changes this pointer) */
    size_t num_headers;         /* out: entries filled, in the order received */

    /* Derived while parsing, so the server never rescans the headers. Field
     * names match case-insensitively ("host" == "Host"). */
    px_str_t host;           /* Host value, or the authority of an absolute-form target (which
                                wins over the Host field, RFC 9112 3.2.2); {NULL, 0} if neither.
                                A Host field must be uri-host[":"port] with a non-empty host
                                (RFC 9112 3.2, RFC 9110 4.2.1): empty or malformed is 400, as
                                are two Host fields, or none in an HTTP/1.1 request */
    int64_t content_length;  /* -1 if absent; otherwise 0..INT64_MAX */
    unsigned chunked : 1;    /* Transfer-Encoding is exactly "chunked" (content_length is -1) */
    unsigned keep_alive : 1; /* 1.1: no "close" token; 1.0: "keep-alive" and no "close" */
    unsigned expect_continue : 1; /* Expect has a 100-continue element (HTTP/1.1 only) */
    unsigned expect_other : 1;    /* Expect has another element: the server answers 417 */
    unsigned upgrade : 1;         /* 1.1, Connection has "upgrade", Upgrade is non-empty */
    unsigned is_head : 1;         /* method is HEAD: the response has no body */
    px_str_t upgrade_proto;       /* Upgrade value ({NULL, 0} if absent) */

    int status;        /* on PX_PARSE_ERROR: 400, 414, 431, 501 or 505 (500: API misuse) */
    const char *error; /* on PX_PARSE_ERROR: static text naming the problem (for logs) */
} px__http1_request_t;

/** Resumable state of px__http1_parse_request. All positions are offsets from
 * the start of the request, never pointers, because the caller may move its
 * buffer between calls. Invariant: _line, _mark and _aux are <= _pos. */
typedef struct px__http1_parser {
    size_t _pos;     /* every byte before this offset is validated and recorded; resume here */
    size_t _line;    /* start of the current line (request line or field line) */
    size_t _mark;    /* start of the element being scanned (target, version, field value) */
    size_t _aux;     /* request target: 1 + offset of its first '?' (0: none yet);
                        field line: offset of the colon that ends the name */
    uint16_t _flags; /* facts gathered from the fields so far (F_* in http1_parse.c) */
    uint8_t _state;  /* where parsing resumes (ST_* in http1_parse.c); 0 = not started */
    uint8_t _nempty; /* empty lines skipped before the request line */
} px__http1_parser_t;

/** Prepare `p` for a new request head (also after a complete or failed one). */
void px__http1_parser_init(px__http1_parser_t *p);

/**
 * Parse one request head from buf[0..len).
 *
 * Before the first call set req->headers (an array of headers_cap entries);
 * the parser fills the rest of *req. Returns:
 *  - the head length (through the final CRLFCRLF, including skipped leading
 *    empty lines): the request is in *req; bytes after it (a body, a pipelined
 *    request) are not examined.
 *  - PX_PARSE_INCOMPLETE: call again with the same parser, the same req and
 *    headers array, and a buffer holding the same request from its first byte
 *    plus more bytes (it may live at another address now). Parsing resumes at
 *    the first unexamined byte, so n calls over an m-byte head cost O(n + m).
 *  - PX_PARSE_ERROR: req->status and req->error say why. Limits are enforced
 *    as soon as they are exceeded, without waiting for the end of the line.
 * `lim` may be NULL for PX_HTTP1_LIMITS_DEFAULT.
 */
int px__http1_parse_request(px__http1_parser_t *p, const char *buf, size_t len,
                            px__http1_request_t *req, size_t headers_cap,
                            const px__http1_limits_t *lim);

/** 1 if `name` equals `lower_name` (lower case, `len` bytes) ignoring ASCII case. */
int px__http1_header_eq(px_str_t name, const char *lower_name, size_t len);

/** First header named `lower_name` (lower case, NUL-terminated), or NULL. */
const px__http_header_t *px__http1_find_header(const px__http1_request_t *req,
                                               const char *lower_name);
/** Next header named `lower_name` after `prev` (a result of find_header/find_next), or NULL. */
const px__http_header_t *px__http1_find_next(const px__http1_request_t *req, const char *lower_name,
                                             const px__http_header_t *prev);

/* ---- chunked transfer coding ----------------------------------------------- */

#define PX_HTTP1_CHUNK_LINE_MAX    4096 /* default chunk-size line limit, extensions included */
#define PX_HTTP1_CHUNK_TRAILER_MAX 8192 /* default limit for the whole trailer section */

/** State of one chunked body. Trailer fields are validated, then dropped. */
typedef struct px__http1_chunked {
    size_t max_line;    /* chunk-size line limit in bytes (CRLF excluded); may be set after init */
    size_t max_trailer; /* trailer section limit in bytes (final CRLF included) */
    const char *error;  /* after PX_PARSE_ERROR: static text naming the problem */
    uint64_t _size;     /* chunk-size being read, then data bytes still to copy; <= INT64_MAX */
    size_t _count;      /* bytes of the current size line, or of the trailer section so far */
    uint8_t _state;     /* CS_* in http1_parse.c */
} px__http1_chunked_t;

void px__http1_chunked_init(px__http1_chunked_t *d);

/**
 * Decode chunked data in place. buf[0..*len) holds bytes received since the
 * previous call (not the ones already given). The chunk data found in them is
 * moved to buf[0..k) and *len is set to k. Returns:
 *  - n >= 0: the body ended (last chunk and trailer section complete). The n
 *    bytes that followed it (a pipelined request) are moved to buf[k..k+n).
 *  - PX_PARSE_INCOMPLETE: all input was consumed; call again with more.
 *  - PX_PARSE_ERROR: bad framing; d->error says why. *len holds the data
 *    decoded before the error, which the caller should discard.
 * After a return other than PX_PARSE_INCOMPLETE, call px__http1_chunked_init
 * before decoding another body.
 */
ssize_t px__http1_decode_chunked(px__http1_chunked_t *d, char *buf, size_t *len);

/* ---- implementation selection (tests and benchmarks) ----------------------- */

enum {
    PX__HTTP1_IMPL_AUTO = -1, /* the best one this CPU supports */
    PX__HTTP1_IMPL_SCALAR = 0,
    PX__HTTP1_IMPL_SSE42 = 1,
    PX__HTTP1_IMPL_AVX2 = 2,
};
/** Use `impl` from now on (process-wide; not thread-safe: call it before any
 * parsing starts). Returns 0, or -ENOTSUP if the CPU or the build lacks it. */
int px__http1_force_impl(int impl);
/** The implementation in use (PX__HTTP1_IMPL_*). */
int px__http1_impl(void);
const char *px__http1_impl_name(int impl);

#endif
