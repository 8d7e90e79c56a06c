/* plexus — strict RFC 8259 JSON: a tokenizer, lookup helpers and a small writer.
 *
 * The tokenizer validates a complete document and fills a caller-provided token
 * array (no allocation, no I/O). Tokens point into the input by offset, so the
 * input must stay alive and unmodified for as long as the tokens are used; that
 * is what lets the hub pass `data` through byte for byte (px_json_raw).
 *
 * Token layout (pre-order, like the document text):
 *   - a container's children follow it directly; `next` is the index of the
 *     first token after the container and all its descendants, so skipping any
 *     value is O(1);
 *   - an object's children alternate key (a STRING token) and value; `size`
 *     counts members (key/value pairs), an array's `size` counts elements;
 *   - iterate an object: for (k = obj + 1, m = 0; m < size; m++, k = toks[k + 1].next)
 *     where toks[k] is the key and toks[k + 1] its value.
 */
#ifndef PLEXUS_JSON_H
#define PLEXUS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum px_json_type {
    PX_JSON_OBJECT = 1,
    PX_JSON_ARRAY,
    PX_JSON_STRING,
    PX_JSON_NUMBER,
    PX_JSON_TRUE,
    PX_JSON_FALSE,
    PX_JSON_NULL,
} px_json_type_t;

/* px_json_tok_t.flags */
#define PX_JSON_F_ESCAPED 0x01 /* STRING: contains at least one backslash escape */
#define PX_JSON_F_INT     0x02 /* NUMBER: no fraction and no exponent */
#define PX_JSON_F_NEG     0x04 /* NUMBER: starts with '-' */

typedef struct px_json_tok {
    /* Byte offsets into the input, start <= end <= input length. For STRING the span
     * is the content between the quotes, escapes not decoded (quotes are at start-1 and
     * end); for every other type it is the whole value text, brackets included. */
    uint32_t start;
    uint32_t end;
    /* Index of the token after this value and all its descendants (scalars: self+1).
     * Always > own index and <= px_json_doc_t.ntoks. */
    uint32_t next;
    /* OBJECT: number of members; ARRAY: number of elements; scalars: 0. */
    uint32_t size;
    uint8_t type;  /* px_json_type_t */
    uint8_t flags; /* PX_JSON_F_* */
} px_json_tok_t;

/* px_json_doc_t.err: what kind of failure (the message says exactly what). */
typedef enum px_json_err {
    PX_JSON_OK = 0,
    PX_JSON_E_SYNTAX,    /* not valid JSON */
    PX_JSON_E_DEPTH,     /* nesting deeper than max_depth ("message too complex") */
    PX_JSON_E_TOKENS,    /* token array too small ("message too complex") */
    PX_JSON_E_TOO_LARGE, /* input longer than PX_JSON_MAX_LEN */
} px_json_err_t;

#define PX_JSON_DEFAULT_DEPTH 64
#define PX_JSON_MAX_DEPTH     1024       /* larger max_depth arguments are clamped */
#define PX_JSON_MAX_LEN       0x7fffffff /* offsets are uint32 and the result is an int */

typedef struct px_json_doc {
    const char *src;     /* the input (borrowed) */
    px_json_tok_t *toks; /* caller's array; NULL in validate-only mode */
    uint32_t len;        /* input length */
    /* Tokens filled (toks[0] is the top-level value). In validate-only mode, the number
     * of tokens the document needs. After a failure the tokens are not usable (open
     * containers are half-built). */
    uint32_t ntoks;
    uint32_t cap;        /* capacity of toks */
    px_json_err_t err;   /* PX_JSON_OK after a successful parse */
    uint32_t err_off;    /* byte offset of the problem */
    const char *err_msg; /* static string naming the problem, NULL on success */
} px_json_doc_t;

/**
 * Validate `src[0..len)` as exactly one JSON value (surrounding whitespace allowed) and
 * tokenize it into `toks[0..cap)`. With toks == NULL only validates (and counts tokens).
 * max_depth bounds container nesting (0 = PX_JSON_DEFAULT_DEPTH).
 *
 * Strict RFC 8259: no comments, trailing commas, leading zeros, NaN/Infinity, BOM or
 * control characters in strings; raw bytes must be valid UTF-8 (no overlongs, no
 * surrogates); \u escapes must pair surrogates correctly.
 *
 * Returns the bytes consumed (always `len`: the input is a complete document) or
 * PX_PARSE_ERROR with doc->err, err_off and err_msg set. Never returns
 * PX_PARSE_INCOMPLETE: a truncated document is a syntax error. Tokens stay valid as long
 * as `src` and `toks` do.
 */
PX_EXTERN int px_json_parse(px_json_doc_t *doc, const char *src, size_t len, px_json_tok_t *toks,
                            uint32_t cap, uint32_t max_depth);

/** Format the parse error as "unterminated string at byte 17" into buf (always NUL-terminated
 *  when cap > 0). Returns what snprintf returns. */
PX_EXTERN int px_json_format_error(const px_json_doc_t *doc, char *buf, size_t cap);

/**
 * Value token of `key` in object token `obj`. Keys are compared after unescaping.
 * Returns the value's token index, -ENOENT if absent, -EEXIST if the key occurs more than
 * once (the hub rejects duplicated control fields), -EINVAL if obj is not an object.
 */
PX_EXTERN int px_json_get(const px_json_doc_t *doc, int obj, const char *key);

/**
 * One pass over object `obj` looking up `nkeys` keys at once: out[i] receives the value
 * token of keys[i] or -ENOENT. Other keys are ignored. Returns 0, -EEXIST if one of
 * `keys` occurs twice (*dup, if not NULL, receives its index into keys), or -EINVAL if
 * obj is not an object.
 */
PX_EXTERN int px_json_get_keys(const px_json_doc_t *doc, int obj, const char *const *keys,
                               size_t nkeys, int *out, size_t *dup);

/** 1 if string token `tok` decodes to exactly s[0..n), else 0 (also for non-strings). */
PX_EXTERN int px_json_streq(const px_json_doc_t *doc, int tok, const char *s, size_t n);

/**
 * Integer value of number token `tok`. Returns 0, -EINVAL if not a number or if it has a
 * fraction or an exponent (even "1.0" or "1e2"), -ERANGE if out of range.
 */
PX_EXTERN int px_json_get_i64(const px_json_doc_t *doc, int tok, int64_t *out);
PX_EXTERN int px_json_get_u64(const px_json_doc_t *doc, int tok,
                              uint64_t *out); /* also -ERANGE if < 0 */

/** Value of a true/false token. Returns 0 or -EINVAL. */
PX_EXTERN int px_json_get_bool(const px_json_doc_t *doc, int tok, bool *out);

/**
 * Decode string token `tok` (escapes resolved, UTF-8) into buf and NUL-terminate it.
 * Returns the decoded length (a "\u0000" escape yields an embedded NUL: compare the result
 * with strlen if that matters), -ENOSPC if buf cannot hold length + 1 bytes, -EINVAL if
 * tok is not a string.
 */
PX_EXTERN int px_json_unescape(const px_json_doc_t *doc, int tok, char *buf, size_t cap);

/** Exact input text of any value: strings include their quotes, containers their brackets. */
static inline px_str_t px_json_raw(const px_json_doc_t *doc, int tok)
{
    const px_json_tok_t *t = &doc->toks[tok];
    size_t q = t->type == PX_JSON_STRING;
    return (px_str_t){doc->src + t->start - q, t->end - t->start + 2 * q};
}

/* ---- writer ------------------------------------------------------------------ */

/**
 * Builds server frames. Either over a caller's fixed buffer, or growable (px__realloc,
 * doubling, never beyond `limit` bytes). Errors are sticky: after the first failure
 * every put is a no-op and `err` says why, so callers check once at the end.
 */
typedef struct px_json_writer {
    char *buf;    /* output; growable: owned by the writer, NULL until the first put */
    size_t len;   /* bytes written, <= cap; never NUL-terminated */
    size_t cap;   /* allocated size of buf */
    size_t limit; /* growable: maximum cap; 0 for a fixed buffer */
    int err;      /* 0, -ENOSPC (fixed buffer full / limit reached) or -ENOMEM */
} px_json_writer_t;

PX_EXTERN void px_json_writer_init(px_json_writer_t *w, char *buf, size_t cap);
PX_EXTERN void px_json_writer_init_growable(px_json_writer_t *w, size_t limit);
/** Frees a growable writer's buffer; accepts NULL and fixed writers. */
PX_EXTERN void px_json_writer_dispose(px_json_writer_t *w);
/** Forget the content, keep the buffer and clear the error. */
static inline void px_json_writer_reset(px_json_writer_t *w)
{
    w->len = 0;
    w->err = 0;
}

PX_EXTERN void px_json_put_raw(px_json_writer_t *w, const void *p, size_t n);
/** A quoted JSON string: escapes '"', '\\' and bytes < 0x20; valid UTF-8 is copied as is,
 *  each byte of an invalid sequence becomes U+FFFD so the output is always valid JSON. */
PX_EXTERN void px_json_put_str(px_json_writer_t *w, const char *s, size_t n);
PX_EXTERN void px_json_put_i64(px_json_writer_t *w, int64_t v);
PX_EXTERN void px_json_put_u64(px_json_writer_t *w, uint64_t v);
/** Append a string literal: PX_JSON_PUT_LIT(w, "{\"op\":\"ack\",\"id\":"). */
#define PX_JSON_PUT_LIT(w, lit) px_json_put_raw((w), "" lit, sizeof(lit) - 1)

#ifdef __cplusplus
}
#endif
#endif
