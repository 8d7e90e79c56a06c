/* Micro-benchmark for the HTTP/1.1 request parser and the chunked decoder.
 *
 *   bench_http1_parse [seconds per measurement, default 0.5] [rounds, default 3]
 *
 * For each implementation the CPU has (scalar, sse4.2, avx2), parses
 *  - browser:     a typical browser request (~500 bytes, 10 fields), over and over;
 *  - techempower: the short request wrk sends in the TechEmpower plaintext test;
 *  - browser-mix: 256 generated browser-like requests of varying lengths,
 *                 round-robin. Parsing one request over and over lets the branch
 *                 predictor learn where every line ends, which flatters the
 *                 scalar loop; the mix is closer to real traffic.
 * Then decodes a 64 KiB chunked body in place.
 *
 * Prints the best round: requests (or bodies) per second and MB/s. Time is
 * this thread's CPU time, so other load on the machine distorts it less. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
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

static volatile size_t sink;

#define NMIX 256
static char mix[NMIX][1024];
static const char *mix_ptr[NMIX];
static size_t mix_len[NMIX];

static void append(char *b, size_t *n, const char *s)
{
    size_t l = strlen(s);
    memcpy(b + *n, s, l);
    *n += l;
}

/* min .. min + spread - 1 characters from a URL-safe alphabet */
static void word(char *b, size_t *n, uint64_t *rng, unsigned min, unsigned spread)
{
    static const char abc[] = "abcdefghijklmnopqrstuvwxyz0123456789-_.ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    unsigned len = min + (unsigned)(bench_xorshift(rng) % spread);
    for (unsigned i = 0; i < len; i++)
        b[(*n)++] = abc[bench_xorshift(rng) % (sizeof abc - 1)];
}

/* The fields of `browser`, with paths, hosts, agents, cookies and referers of
 * random length (fixed seed). Returns the average request size. */
static size_t make_mix(void)
{
    uint64_t rng = 0x9e3779b97f4a7c15u;
    size_t total = 0;
    for (int i = 0; i < NMIX; i++) {
        char *b = mix[i];
        size_t n = 0;
        append(b, &n, "GET /");
        word(b, &n, &rng, 3, 40);
        append(b, &n, " HTTP/1.1\r\nHost: www.");
        word(b, &n, &rng, 3, 12);
        append(b, &n, ".com\r\nUser-Agent: Mozilla/5.0 (");
        word(b, &n, &rng, 30, 90);
        append(b, &n, ")\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.");
        word(b, &n, &rng, 1, 8);
        append(b, &n, "\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://");
        word(b, &n, &rng, 10, 50);
        append(b, &n, "\r\nConnection: keep-alive\r\nCookie: session=");
        word(b, &n, &rng, 8, 120);
        append(b, &n, "\r\nSec-Fetch-Dest: ");
        word(b, &n, &rng, 4, 6);
        append(b, &n, "\r\nSec-Fetch-Mode: ");
        word(b, &n, &rng, 4, 6);
        append(b, &n, "\r\n\r\n");
        mix_ptr[i] = b;
        mix_len[i] = n;
        total += n;
    }
    return total / NMIX;
}

/* Parses per second over about `secs` seconds, cycling through reqs[0..n). */
static double bench_parse(const char *const *reqs, const size_t *lens, size_t n, double secs)
{
    px__http_header_t hdrs[64];
    px__http1_request_t r;
    px__http1_parser_t p;
    size_t iters = 0, batch = 4096, acc = 0;
    double t0 = bench_cpu_s(), t;
    do {
        for (size_t i = 0; i < batch; i++) {
            size_t k = i % n;
            px__http1_parser_init(&p);
            r.headers = hdrs;
            int rc = px__http1_parse_request(&p, reqs[k], lens[k], &r, 64, NULL);
            if (rc != (int)lens[k]) {
                fprintf(stderr, "parse failed: %d %s\n", rc, rc == -1 ? r.error : "");
                exit(1);
            }
            acc += r.num_headers;
        }
        iters += batch;
        t = bench_cpu_s() - t0;
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
    double t0 = bench_cpu_s(), t;
    do {
        for (int i = 0; i < 256; i++) {
            px__http1_chunked_t d;
            px__http1_chunked_init(&d);
            memcpy(work, src, n);
            size_t len = n;
            if (px__http1_decode_chunked(&d, work, &len) != 0 || len != NCHUNK * CHUNK) {
                fprintf(stderr, "chunked decode failed\n");
                exit(1);
            }
            sink = len;
        }
        iters += 256;
        t = bench_cpu_s() - t0;
    } while (t < secs);
    return (double)iters / t;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    static const char *const one_browser[] = {browser}, *const one_tfb[] = {techempower};
    static const size_t browser_len[] = {sizeof browser - 1}, tfb_len[] = {sizeof techempower - 1};
    size_t mix_avg = make_mix();
    const struct {
        const char *name;
        const char *const *reqs;
        const size_t *lens;
        size_t n, avg;
    } cases[] = {
        {"browser", one_browser, browser_len, 1, sizeof browser - 1},
        {"techempower", one_tfb, tfb_len, 1, sizeof techempower - 1},
        {"browser-mix", mix_ptr, mix_len, NMIX, mix_avg},
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
                double rate = bench_parse(cases[c].reqs, cases[c].lens, cases[c].n, secs);
                if (rate > best)
                    best = rate;
            }
            printf("%-12s %-7s %4zu bytes  %12.0f req/s  %8.1f MB/s  %6.1f ns/req\n", cases[c].name,
                   px__http1_impl_name(impl), cases[c].avg, best, best * (double)cases[c].avg / 1e6,
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
