/* Micro-benchmark for the hub's JSON hot path (src/hub/json.c) and JWT verification.
 * Cases: tokenizing a typical ~150-byte publish frame and a 4 KiB data payload, the same
 * in validate-only mode, the full control-field dispatch the hub does per frame, and
 * building an outgoing message frame with the writer. Prints CPU ns/op, ops/s and MB/s.
 * Usage: bench_json [seconds per case, default 0.5] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "plexus/json.h"
#include "util/jwt.h"

static const char frame[] =
    "{\"op\":\"publish\",\"id\":12345,\"channel\":\"room:lobby\",\"data\":{\"user\":\"alice\","
    "\"text\":\"hello world, this is a chat "
    "message\",\"ts\":1718000000123,\"tags\":[\"a\",\"b\"]}}";

static char payload[4096];
static size_t payload_len;
static volatile uint64_t sink;

/* A realistic 4 KiB object: ASCII text, some UTF-8 and escapes, numbers, nesting. */
static void build_payload(void)
{
    px_json_writer_t w;
    px_json_writer_init(&w, payload, sizeof payload);
    PX_JSON_PUT_LIT(&w, "{\"items\":[");
    for (int i = 0; w.len < sizeof payload - 200; i++) {
        if (i)
            PX_JSON_PUT_LIT(&w, ",");
        PX_JSON_PUT_LIT(&w, "{\"id\":");
        px_json_put_i64(&w, 100000 + i * 7919);
        PX_JSON_PUT_LIT(&w, ",\"name\":\"item number ");
        px_json_put_i64(&w, i);
        PX_JSON_PUT_LIT(&w, " caf\xc3\xa9 \\\"quoted\\\"\",\"price\":12.5e-1,\"ok\":true,"
                            "\"tags\":[\"x\",\"y\"],\"note\":null,\"desc\":\"The quick brown fox "
                            "jumps over the lazy dog\"}");
    }
    PX_JSON_PUT_LIT(&w, "]}");
    if (w.err) {
        fprintf(stderr, "payload build failed\n");
        exit(1);
    }
    payload_len = w.len;
}

typedef uint64_t (*case_fn)(const char *s, size_t n);

static px_json_tok_t toks[1024];

static uint64_t tokenize(const char *s, size_t n)
{
    px_json_doc_t d;
    if (px_json_parse(&d, s, n, toks, 1024, 64) < 0)
        abort();
    return d.ntoks;
}

static uint64_t validate(const char *s, size_t n)
{
    px_json_doc_t d;
    if (px_json_parse(&d, s, n, NULL, 0, 64) < 0)
        abort();
    return d.ntoks;
}

/* What the hub does per inbound frame: tokenize, pick control fields (rejecting
 * duplicates), check op, read id, take the raw data span. */
static uint64_t dispatch(const char *s, size_t n)
{
    static const char *const keys[] = {"op", "id", "channel", "data"};
    px_json_doc_t d;
    int at[4];
    int64_t id;
    if (px_json_parse(&d, s, n, toks, 1024, 64) < 0 || toks[0].type != PX_JSON_OBJECT ||
        px_json_get_keys(&d, 0, keys, 4, at, NULL) < 0 || !px_json_streq(&d, at[0], "publish", 7) ||
        px_json_get_i64(&d, at[1], &id) < 0)
        abort();
    px_str_t data = px_json_raw(&d, at[3]);
    return (uint64_t)id + data.len + toks[at[2]].end;
}

/* Outgoing message frame: literal pieces, escaped channel, counters, raw data. */
static uint64_t write_frame(const char *s, size_t n)
{
    static char out[8192];
    px_json_writer_t w;
    px_json_writer_init(&w, out, sizeof out);
    PX_JSON_PUT_LIT(&w, "{\"op\":\"message\",\"channel\":");
    px_json_put_str(&w, "room:lobby", 10);
    PX_JSON_PUT_LIT(&w, ",\"epoch\":\"ab12\",\"offset\":");
    px_json_put_u64(&w, 123456789);
    PX_JSON_PUT_LIT(&w, ",\"data\":");
    px_json_put_raw(&w, s, n);
    PX_JSON_PUT_LIT(&w, "}");
    return w.len;
}

static char jwt[1024];
static size_t jwt_len;
static uint64_t jwt_verify(const char *s, size_t n)
{
    (void)s;
    (void)n;
    static px__jwt_claims_t c;
    if (px__jwt_verify_hs256(jwt, jwt_len, (const uint8_t *)"bench-secret-0123456789abcdef", 29,
                             1750000000, &c, NULL) < 0)
        abort();
    return c.npatterns;
}

static void run(const char *name, case_fn fn, const char *s, size_t n, double secs)
{
    uint64_t iters = 0, acc = 0;
    size_t batch = 1000;
    /* warm up */
    for (size_t i = 0; i < batch; i++)
        acc += fn(s, n);
    double t0 = bench_cpu_s(), t;
    do {
        for (size_t i = 0; i < batch; i++)
            acc += fn(s, n);
        iters += batch;
        t = bench_cpu_s() - t0;
    } while (t < secs);
    sink += acc;
    double ns = t * 1e9 / (double)iters;
    printf("%-28s %6zu B  %9.1f ns/op  %12.0f ops/s  %8.1f MB/s\n", name, n, ns, (double)iters / t,
           (double)n * (double)iters / t / 1e6);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    if (secs <= 0)
        secs = 0.5;
    build_payload();
    const char claims[] = "{\"sub\":\"alice\",\"exp\":4102444800,\"channels\":{\"subscribe\":"
                          "[\"room:*\",\"news\"],\"publish\":[\"room:*\"]},\"info\":{\"n\":1}}";
    int r =
        px__jwt_sign_hs256(claims, sizeof claims - 1,
                           (const uint8_t *)"bench-secret-0123456789abcdef", 29, jwt, sizeof jwt);
    if (r < 0)
        return 1;
    jwt_len = (size_t)r;

    size_t fn = sizeof frame - 1;
    run("tokenize publish frame", tokenize, frame, fn, secs);
    run("validate publish frame", validate, frame, fn, secs);
    run("dispatch publish frame", dispatch, frame, fn, secs);
    run("tokenize 4k payload", tokenize, payload, payload_len, secs);
    run("validate 4k payload", validate, payload, payload_len, secs);
    run("write message frame (4k)", write_frame, payload, payload_len, secs);
    run("jwt verify hs256", jwt_verify, jwt, jwt_len, secs);
    return (int)(sink & 0);
}
