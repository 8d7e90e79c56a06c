/* Micro-benchmark: px_http1_parse_request on a typical browser request and on
 * a TechEmpower-style short request, for each implementation the CPU has, and
 * px_http1_decode_chunked on a chunked body.
 *
 *   bench_http1_parse [seconds per measurement, default 0.5] [rounds, default 3]
 *
 * Prints the best round: requests (or bodies) per second and MB/s. Time is
 * this thread's CPU time, so other load on the machine distorts it less. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/http1_parse.h"

static const char browser[] =
    "GET /static/js/app.3f2a9c.js?v=20240115 HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/products/index.html\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; "
    "_ga=GA1.2.1234567890.1700000000\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "\r\n";

/* what wrk sends in the TechEmpower plaintext test */
static const char techempower[] =
    "GET /plaintext HTTP/1.1\r\n"
    "Host: tfb-server\r\n"
    "Accept: "
    "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile size_t sink;

/* Parses per second over about `secs` seconds. */
static double bench_parse(const char *req, size_t len, double secs)
{
    px_http_header_t hdrs[64];
    px_http1_request_t r;
    px_http1_parser_t p;
    size_t iters = 0, batch = 4096, acc = 0;
    double t0 = now_s(), t;
    do {
        for (size_t i = 0; i < batch; i++) {
            px_http1_parser_init(&p);
            r.headers = hdrs;
            int rc = px_http1_parse_request(&p, req, len, &r, 64, NULL);
            if (rc != (int)len) {
                fprintf(stderr, "parse failed: %d %s\n", rc, rc == -1 ? r.error : "");
                exit(1);
            }
            acc += r.num_headers;
        }
        iters += batch;
        t = now_s() - t0;
    } while (t < secs);
    sink = acc;
    return (double)iters / t;
}

/* A 64 KiB body in 4 KiB chunks, decoded in place: bodies per second. */
static double bench_chunked(double secs, size_t *body_len)
{
    enum { CHUNK = 4096, NCHUNK = 16 };
    static char src[NCHUNK * (CHUNK + 16) + 16], work[sizeof src];
    size_t n = 0;
    for (int i = 0; i < NCHUNK; i++) {
        n += (size_t)snprintf(src + n, 16, "%x\r\n", CHUNK);
        memset(src + n, 'a' + i, CHUNK);
        n += CHUNK;
        memcpy(src + n, "\r\n", 2);
        n += 2;
    }
    memcpy(src + n, "0\r\n\r\n", 5);
    n += 5;
    *body_len = n;
    size_t iters = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < 256; i++) {
            px_http1_chunked_t d;
            px_http1_chunked_init(&d);
            memcpy(work, src, n);
            size_t len = n;
            if (px_http1_decode_chunked(&d, work, &len) != 0 || len != NCHUNK * CHUNK) {
                fprintf(stderr, "chunked decode failed\n");
                exit(1);
            }
            sink = len;
        }
        iters += 256;
        t = now_s() - t0;
    } while (t < secs);
    return (double)iters / t;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    static const struct {
        const char *name, *req;
        size_t len;
    } cases[] = {
        {"browser", browser, sizeof browser - 1},
        {"techempower", techempower, sizeof techempower - 1},
    };
    int dflt = px__http1_impl();
    printf("bench_http1_parse: best of %d x %.2f s; default implementation: %s\n", rounds, secs,
           px__http1_impl_name(dflt));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int impl = PX__HTTP1_IMPL_SCALAR; impl <= PX__HTTP1_IMPL_AVX2; impl++) {
            if (px__http1_force_impl(impl) != 0) {
                printf("%-12s %-7s (not supported on this CPU)\n", cases[c].name,
                       px__http1_impl_name(impl));
                continue;
            }
            double best = 0;
            for (int r = 0; r < rounds; r++) {
                double rate = bench_parse(cases[c].req, cases[c].len, secs);
                if (rate > best)
                    best = rate;
            }
            printf("%-12s %-7s %4zu bytes  %12.0f req/s  %8.1f MB/s  %6.1f ns/req\n", cases[c].name,
                   px__http1_impl_name(impl), cases[c].len, best, best * (double)cases[c].len / 1e6,
                   1e9 / best);
        }
    }
    px__http1_force_impl(dflt);
    size_t blen = 0;
    double best = 0;
    for (int r = 0; r < rounds; r++) {
        double rate = bench_chunked(secs, &blen);
        if (rate > best)
            best = rate;
    }
    printf("%-12s %-7s %4zu bytes  %12.0f body/s %8.1f MB/s (includes a memcpy of the input)\n",
           "chunked", "-", blen, best, best * (double)blen / 1e6);
    return 0;
}
