/* Unit tests for src/http/ws_deflate.c: negotiation table (RFC 7692 examples and
 * edge cases), RFC 7692 7.2.3 payload examples, round trips with and without
 * context takeover and for every window size, fragmentation at every split,
 * decompression bombs, the memory budget, and allocation-failure injection
 * through px_set_allocator with a leak check after every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "xorshift.h"
#include "ws/ws_deflate.h"
#include "plexus/buf.h"

/* ---- counting / failing allocator ------------------------------------------------- */

#define HDR 16
static size_t mem_cur, mem_peak, mem_count;
static long fail_at = -1; /* fail the allocation with this index (counting from 0) */
static long alloc_index;
static int fails_hit;

static int should_fail(void)
{
    long i = alloc_index++;
    if (fail_at >= 0 && i == fail_at) {
        fails_hit = 1;
        return 1;
    }
    return 0;
}

static void *t_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    unsigned char *p = malloc(n + HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    mem_cur += n;
    mem_count++;
    if (mem_cur > mem_peak)
        mem_peak = mem_cur;
    return p + HDR;
}

static void t_free(void *q)
{
    if (!q)
        return;
    unsigned char *p = (unsigned char *)q - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    mem_cur -= n;
    mem_count--;
    free(p);
}

static void *t_calloc(size_t a, size_t b)
{
    size_t n = a * b;
    void *p = t_malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

static void *t_realloc(void *q, size_t n)
{
    if (!q)
        return t_malloc(n);
    if (should_fail())
        return NULL;
    unsigned char *p = (unsigned char *)q - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *np = realloc(p, n + HDR);
    if (!np)
        return NULL;
    memcpy(np, &n, sizeof n);
    mem_cur = mem_cur - old + n;
    if (mem_cur > mem_peak)
        mem_peak = mem_cur;
    return np + HDR;
}

static int setup_alloc(void **state)
{
    (void)state;
    return px_set_allocator(t_malloc, t_realloc, t_calloc, t_free);
}

static void reset_counters(void)
{
    fail_at = -1;
    alloc_index = 0;
    fails_hit = 0;
    mem_peak = mem_cur;
}

/* ---- helpers --------------------------------------------------------------------- */

static px__ws_deflate_params_t params(int snct, int cnct, unsigned sbits, unsigned cbits)
{
    px__ws_deflate_params_t p = {0};
    p.server_no_context_takeover = snct ? 1u : 0u;
    p.client_no_context_takeover = cnct ? 1u : 0u;
    p.server_max_window_bits = (uint8_t)sbits;
    p.client_max_window_bits = (uint8_t)cbits;
    p.level = -1;
    p.mem_level = 8;
    return p;
}

/* The peer's view: its inflater uses our server_* parameters. */
static px__ws_deflate_params_t mirror(const px__ws_deflate_params_t *p)
{
    return params(p->client_no_context_takeover, p->server_no_context_takeover,
                  p->client_max_window_bits, p->server_max_window_bits);
}

static uint64_t rng = 0x13198A2E03707344ull;

/* Compressible text with repeats at assorted distances. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char *words[] = {"alpha ", "beta ",    "gamma ",  "delta ",        "websocket ",
                                  "frame ", "deflate ", "window ", "\xE2\x82\xAC ", "\n"};
    size_t i = 0;
    while (i < n) {
        uint64_t r = xorshift64(&rng);
        if (r % 7 == 0 && i > 300) {
            size_t dist = 1 + (size_t)((r >> 8) % (i < 40000 ? i : 40000));
            size_t len = 3 + (size_t)((r >> 24) % 40);
            for (size_t k = 0; k < len && i < n; k++, i++)
                p[i] = p[i - dist];
        } else if (r % 5 == 0) {
            p[i++] = (uint8_t)(r >> 32);
        } else {
            const char *w = words[(r >> 16) % 10];
            for (size_t k = 0; w[k] && i < n; k++)
                p[i++] = (uint8_t)w[k];
        }
    }
}

/* Inflate `in` as one message, split into frames at the given cut points. */
static int inflate_frames(px__ws_deflate_t *c, const uint8_t *in, size_t len, const size_t *cuts,
                          size_t ncuts, px_buf_t *out, size_t max_out)
{
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int r = px__ws_inflate(c, in + pos, end - pos, i == ncuts, out, max_out);
        if (r != 0)
            return r;
        pos = end;
    }
    return 0;
}

static int inflate_one(px__ws_deflate_t *c, const uint8_t *in, size_t len, px_buf_t *out,
                       size_t max_out)
{
    return inflate_frames(c, in, len, NULL, 0, out, max_out);
}

/* ---- negotiation ------------------------------------------------------------------ */

typedef struct neg_case {
    const char *hdr[3]; /* field values, NULL-terminated */
    int cfg;            /* index into cfgs[] */
    int ret;
    const char *resp;
    int snct, cnct;
    unsigned sbits, cbits;
} neg_case_t;

static px__ws_deflate_config_t cfgs[8];

static void init_cfgs(void)
{
    cfgs[0] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[1] = (px__ws_deflate_config_t){0}; /* disabled */
    cfgs[2] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[2].server_no_context_takeover = 1;
    cfgs[2].server_max_window_bits = 10;
    cfgs[3] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[3].client_max_window_bits = 9;
    cfgs[4] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[4].request_client_no_context_takeover = 1;
    cfgs[5] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[5].accept_client_no_context_takeover = 0;
    cfgs[6] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[6].server_max_window_bits = 12;
    cfgs[7] = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfgs[7].server_max_window_bits = 8;
    cfgs[7].client_max_window_bits = 8;
}

#define PMD "permessage-deflate"
static const neg_case_t neg_cases[] = {
    /* Plain offers. */
    {{PMD}, 0, 1, PMD, 0, 0, 15, 15},
    {{PMD "; client_max_window_bits"}, 0, 1, PMD, 0, 0, 15, 15},
    {{PMD "; client_max_window_bits=10"}, 0, 1, PMD "; client_max_window_bits=10", 0, 0, 15, 10},
    {{PMD "; server_max_window_bits=10"}, 0, 1, PMD "; server_max_window_bits=10", 0, 0, 10, 15},
    {{PMD "; server_max_window_bits=8"}, 0, 1, PMD "; server_max_window_bits=8", 0, 0, 8, 15},
    {{PMD "; server_no_context_takeover"}, 0, 1, PMD "; server_no_context_takeover", 1, 0, 15, 15},
    {{PMD "; client_no_context_takeover"}, 0, 1, PMD "; client_no_context_takeover", 0, 1, 15, 15},
    {{PMD "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; "
          "client_max_window_bits=15"},
     0,
     1,
     PMD "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; "
         "client_max_window_bits=15",
     1,
     1,
     15,
     15},
    /* RFC 7692 5.1/7.1 style lists: the first acceptable offer wins. */
    {{PMD "; client_max_window_bits; server_max_window_bits=10, " PMD "; client_max_window_bits"},
     0,
     1,
     PMD "; server_max_window_bits=10",
     0,
     0,
     10,
     15},
    {{PMD "; server_max_window_bits=10, " PMD},
     0,
     1,
     PMD "; server_max_window_bits=10",
     0,
     0,
     10,
     15},
    {{PMD "; foo=1, " PMD "; client_max_window_bits=9"},
     0,
     1,
     PMD "; client_max_window_bits=9",
     0,
     0,
     15,
     9},
    /* Declined offers (RFC 7692 7): unknown, duplicate, missing or bad values. */
    {{PMD "; foo"}, 0, 0, NULL},
    {{PMD "; server_no_context_takeover; server_no_context_takeover"}, 0, 0, NULL},
    {{PMD "; client_no_context_takeover; client_no_context_takeover"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=10; server_max_window_bits=10"}, 0, 0, NULL},
    {{PMD "; client_max_window_bits; client_max_window_bits=10"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=7"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=16"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=08"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=010"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=+9"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=9.0"}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=\"\""}, 0, 0, NULL},
    {{PMD "; server_max_window_bits=\"1 0\""}, 0, 0, NULL},
    {{PMD "; client_max_window_bits=7"}, 0, 0, NULL},
    {{PMD "; client_max_window_bits=0"}, 0, 0, NULL},
    {{PMD "; client_max_window_bits=123456789012"}, 0, 0, NULL},
    {{PMD "; server_no_context_takeover=true"}, 0, 0, NULL},
    {{PMD "; client_no_context_takeover=\"\""}, 0, 0, NULL},
    {{PMD "; foo, " PMD "; bar"}, 0, 0, NULL},
    /* Quoted values are unquoted first (RFC 6455 9.1). */
    {{PMD "; client_max_window_bits=\"10\""},
     0,
     1,
     PMD "; client_max_window_bits=10",
     0,
     0,
     15,
     10},
    {{PMD "; server_max_window_bits=\"1\\2\""},
     0,
     1,
     PMD "; server_max_window_bits=12",
     0,
     0,
     12,
     15},
    /* Other extensions, several field lines, case, whitespace, empty elements. */
    {{"x-webkit-deflate-frame, foo; bar=\"a,b;c\"; baz, " PMD}, 0, 1, PMD, 0, 0, 15, 15},
    {{"foo", PMD "; client_max_window_bits=11"},
     0,
     1,
     PMD "; client_max_window_bits=11",
     0,
     0,
     15,
     11},
    {{PMD "; foo", PMD "; server_no_context_takeover"},
     0,
     1,
     PMD "; server_no_context_takeover",
     1,
     0,
     15,
     15},
    {{"PerMessage-Deflate; Client_Max_Window_Bits=12"},
     0,
     1,
     PMD "; client_max_window_bits=12",
     0,
     0,
     15,
     12},
    {{"  " PMD " ;\tclient_max_window_bits = 12 ,  "},
     0,
     1,
     PMD "; client_max_window_bits=12",
     0,
     0,
     15,
     12},
    {{", ,," PMD ",,"}, 0, 1, PMD, 0, 0, 15, 15},
    {{PMD "-x"}, 0, 0, NULL},
    {{"foo"}, 0, 0, NULL},
    {{""}, 0, 0, NULL},
    {{NULL}, 0, 0, NULL},
    /* Syntax errors: no extension at all. */
    {{PMD "; client_max_window_bits=\"10"}, 0, -EBADMSG, NULL},
    {{PMD ";"}, 0, -EBADMSG, NULL},
    {{PMD " client_max_window_bits"}, 0, -EBADMSG, NULL},
    {{";"}, 0, -EBADMSG, NULL},
    {{PMD "; =10"}, 0, -EBADMSG, NULL},
    {{PMD "; a="}, 0, -EBADMSG, NULL},
    {{PMD "@"}, 0, -EBADMSG, NULL},
    {{PMD "; a=\"\x01\""}, 0, -EBADMSG, NULL},
    {{PMD, "foo; x=\"unterminated"}, 0, -EBADMSG, NULL},
    /* Server preferences. */
    {{PMD}, 1, 0, NULL},
    {{PMD}, 2, 1, PMD "; server_no_context_takeover; server_max_window_bits=10", 1, 0, 10, 15},
    {{PMD "; server_max_window_bits=9"},
     2,
     1,
     PMD "; server_no_context_takeover; server_max_window_bits=9",
     1,
     0,
     9,
     15},
    {{PMD "; server_max_window_bits=13"}, 6, 1, PMD "; server_max_window_bits=12", 0, 0, 12, 15},
    {{PMD "; client_max_window_bits"}, 3, 1, PMD "; client_max_window_bits=9", 0, 0, 15, 9},
    {{PMD "; client_max_window_bits=12"}, 3, 1, PMD "; client_max_window_bits=9", 0, 0, 15, 9},
    {{PMD "; client_max_window_bits=8"}, 3, 1, PMD "; client_max_window_bits=8", 0, 0, 15, 8},
    /* client_max_window_bits not offered: must not be answered (7.1.2.2). */
    {{PMD}, 3, 1, PMD, 0, 0, 15, 15},
    {{PMD}, 4, 1, PMD "; client_no_context_takeover", 0, 1, 15, 15},
    {{PMD "; client_no_context_takeover"}, 5, 1, PMD, 0, 0, 15, 15},
    {{PMD "; client_max_window_bits"},
     7,
     1,
     PMD "; server_max_window_bits=8; client_max_window_bits=8",
     0,
     0,
     8,
     8},
};

static void test_negotiate_table(void **state)
{
    (void)state;
    init_cfgs();
    for (size_t i = 0; i < PX_ARRAY_SIZE(neg_cases); i++) {
        const neg_case_t *t = &neg_cases[i];
        px_str_t v[3];
        size_t n = 0;
        while (n < 3 && t->hdr[n]) {
            v[n].ptr = t->hdr[n];
            v[n].len = strlen(t->hdr[n]);
            n++;
        }
        print_message("  [%zu] %s%s%s\n", i, n ? t->hdr[0] : "(none)", n > 1 ? " | " : "",
                      n > 1 ? t->hdr[1] : "");
        char out[PX_WS_DEFLATE_RESPONSE_MAX];
        size_t out_len = 999;
        px__ws_deflate_params_t p;
        memset(&p, 0x5A, sizeof p);
        int r = px__ws_deflate_negotiate(&cfgs[t->cfg], v, n, out, sizeof out, &out_len, &p);
        assert_int_equal(r, t->ret);
        if (r != 1) {
            assert_int_equal(out_len, 999); /* untouched */
            continue;
        }
        assert_string_equal(out, t->resp);
        assert_int_equal(out_len, strlen(t->resp));
        assert_int_equal(p.server_no_context_takeover, t->snct);
        assert_int_equal(p.client_no_context_takeover, t->cnct);
        assert_int_equal(p.server_max_window_bits, t->sbits);
        assert_int_equal(p.client_max_window_bits, t->cbits);
        assert_int_equal(p.mem_level, 8);
        assert_int_equal(p.level, -1);
    }
}

static void test_negotiate_misc(void **state)
{
    (void)state;
    px__ws_deflate_config_t cfg = PX_WS_DEFLATE_CONFIG_DEFAULT;
    cfg.server_no_context_takeover = 1;
    cfg.request_client_no_context_takeover = 1;
    cfg.server_max_window_bits = 9;
    px_str_t v = PX_STR_LIT(PMD "; client_max_window_bits=10");
    const char *want = PMD "; server_no_context_takeover; client_no_context_takeover; "
                           "server_max_window_bits=9; client_max_window_bits=10";
    char out[PX_WS_DEFLATE_RESPONSE_MAX];
    size_t len;
    px__ws_deflate_params_t p;
    /* Exactly big enough, one byte short. */
    size_t need = strlen(want) + 1;
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, need, &len, &p), 1);
    assert_string_equal(out, want);
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, need - 1, &len, &p), -ENOBUFS);
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, 0, &len, &p), -ENOBUFS);
    /* Bad configuration. */
    cfg.server_max_window_bits = 7;
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, sizeof out, &len, &p), -EINVAL);
    cfg.server_max_window_bits = 16;
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, sizeof out, &len, &p), -EINVAL);
    cfg.server_max_window_bits = 0; /* = 15 */
    cfg.level = 10;
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, sizeof out, &len, &p), -EINVAL);
    cfg.level = 9;
    cfg.mem_level = 0; /* = 8 */
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &v, 1, out, sizeof out, &len, &p), 1);
    assert_int_equal(p.mem_level, 8);
    assert_int_equal(p.level, 9);
    assert_int_equal(p.server_max_window_bits, 15);
    /* The longest possible answer fits PX_WS_DEFLATE_RESPONSE_MAX. */
    px_str_t all = PX_STR_LIT(PMD "; server_no_context_takeover; client_no_context_takeover; "
                                  "server_max_window_bits=10; client_max_window_bits=10");
    assert_int_equal(px__ws_deflate_negotiate(&cfg, &all, 1, out, sizeof out, &len, &p), 1);
    assert_true(len < PX_WS_DEFLATE_RESPONSE_MAX);
}

/* Random headers built from the grammar's pieces: never a crash, and an accepted
 * answer, offered back, is accepted again with the same parameters (the answer is
 * itself valid extension-list syntax with valid values). */
static void test_negotiate_random(void **state)
{
    (void)state;
    init_cfgs();
    static const char *pieces[] = {PMD,
                                   PMD,
                                   "foo",
                                   ";",
                                   ";",
                                   ",",
                                   " ",
                                   "\t",
                                   "=",
                                   "server_no_context_takeover",
                                   "client_no_context_takeover",
                                   "server_max_window_bits",
                                   "client_max_window_bits",
                                   "=8",
                                   "=10",
                                   "=15",
                                   "=16",
                                   "=\"9\"",
                                   "\"",
                                   "\\",
                                   "x"};
    size_t accepted = 0, declined = 0, bad = 0;
    for (int iter = 0; iter < 50000; iter++) {
        char hdr[256];
        size_t n = 0;
        if (iter % 2) {
            /* Pieces in any order: mostly malformed. */
            size_t k = (size_t)(xorshift64(&rng) % 12);
            for (size_t i = 0; i < k; i++) {
                const char *piece = pieces[xorshift64(&rng) % PX_ARRAY_SIZE(pieces)];
                size_t pl = strlen(piece);
                if (n + pl >= sizeof hdr)
                    break;
                memcpy(hdr + n, piece, pl);
                n += pl;
            }
        } else {
            /* Well-formed lists of offers with random parameters. */
            static const char *names[] = {"server_no_context_takeover",
                                          "client_no_context_takeover", "server_max_window_bits",
                                          "client_max_window_bits", "foo"};
            static const char *values[] = {"", "", "=9", "=12", "=15", "=8", "=\"10\"", "=7", "=x"};
            size_t offers = 1 + (size_t)(xorshift64(&rng) % 3);
            for (size_t o = 0; o < offers; o++) {
                int w = snprintf(hdr + n, sizeof hdr - n, "%s%s", o ? ", " : "",
                                 xorshift64(&rng) % 4 ? PMD : "foo");
                n += (size_t)w;
                size_t np = (size_t)(xorshift64(&rng) % 4);
                for (size_t i = 0; i < np && n < sizeof hdr - 64; i++) {
                    w = snprintf(hdr + n, sizeof hdr - n, "; %s%s",
                                 names[xorshift64(&rng) % PX_ARRAY_SIZE(names)],
                                 values[xorshift64(&rng) % PX_ARRAY_SIZE(values)]);
                    n += (size_t)w;
                }
            }
            if (xorshift64(&rng) % 8 == 0) /* and sometimes one byte changed */
                hdr[xorshift64(&rng) % n] = (char)(xorshift64(&rng) % 128);
        }
        px_str_t v = {hdr, n};
        const px__ws_deflate_config_t *cfg = &cfgs[xorshift64(&rng) % PX_ARRAY_SIZE(cfgs)];
        char out[PX_WS_DEFLATE_RESPONSE_MAX];
        size_t len = 0;
        px__ws_deflate_params_t p;
        int r = px__ws_deflate_negotiate(cfg, &v, 1, out, sizeof out, &len, &p);
        assert_true(r == 1 || r == 0 || r == -EBADMSG);
        if (r == 0) {
            declined++;
            continue;
        }
        if (r < 0) {
            bad++;
            continue;
        }
        accepted++;
        assert_int_equal(strlen(out), len);
        assert_true(p.server_max_window_bits >= 8 && p.server_max_window_bits <= 15);
        assert_true(p.client_max_window_bits >= 8 && p.client_max_window_bits <= 15);
        px_str_t again = {out, len};
        char out2[PX_WS_DEFLATE_RESPONSE_MAX];
        size_t len2;
        px__ws_deflate_params_t p2;
        assert_int_equal(px__ws_deflate_negotiate(cfg, &again, 1, out2, sizeof out2, &len2, &p2),
                         1);
        assert_string_equal(out, out2);
        assert_memory_equal(&p, &p2, sizeof p);
    }
    print_message("  accepted %zu, declined %zu, malformed %zu\n", accepted, declined, bad);
    assert_true(accepted > 1000 && declined > 1000 && bad > 1000);
}

/* ---- RFC 7692 7.2.3 examples ------------------------------------------------------------ */

static void test_rfc_examples(void **state)
{
    (void)state;
    px__ws_deflate_params_t p = params(0, 0, 15, 15);
    px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
    assert_non_null(c);
    px_buf_t out;
    px_buf_init(&out, 0);

    /* 7.2.3.1: one frame, then the same split over two frames. */
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    assert_int_equal(inflate_one(c, hello, sizeof hello, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 5);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    /* 7.2.3.2: with context takeover the second "Hello" refers back. */
    static const uint8_t hello2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    assert_int_equal(inflate_one(c, hello2, sizeof hello2, &out, 100), 0);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    px__ws_deflate_free(c);

    c = px__ws_deflate_new(&p, 0);
    size_t cut[] = {3};
    assert_int_equal(inflate_frames(c, hello, sizeof hello, cut, 1, &out, 100), 0);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    /* 7.2.3.3: a stored block. */
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
    assert_int_equal(inflate_one(c, stored, sizeof stored, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 5);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    /* 7.2.3.5: two blocks in one message. */
    static const uint8_t two[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                  0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    assert_int_equal(inflate_one(c, two, sizeof two, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 5);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    /* 7.2.3.6: empty messages, an empty frame in the middle of a message. */
    static const uint8_t empty1[] = {0x00};
    static const uint8_t empty2[] = {0x02, 0x00};
    assert_int_equal(inflate_one(c, empty1, 1, &out, 100), 0);
    assert_int_equal(inflate_one(c, empty2, 2, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 0);
    assert_int_equal(px__ws_inflate(c, hello, 4, 0, &out, 100), 0);
    assert_int_equal(px__ws_inflate(c, hello, 0, 0, &out, 100), 0);
    assert_int_equal(px__ws_inflate(c, hello + 4, 3, 1, &out, 100), 0);
    assert_memory_equal(px_buf_head(&out), "Hello", 5);
    px_buf_reset(&out);
    px__ws_deflate_free(c);

    /* 7.2.3.4: BFINAL set. The context continues: a next message compressed
     * against "Hello" as its dictionary must decode. */
    c = px__ws_deflate_new(&p, 0);
    static const uint8_t final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    assert_int_equal(inflate_one(c, final, sizeof final, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 5);
    px_buf_reset(&out);
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    assert_int_equal(deflateSetDictionary(&z, (const Bytef *)"Hello", 5), Z_OK);
    uint8_t comp[64];
    z.next_in = (Bytef *)"Hello, Hello";
    z.avail_in = 12;
    z.next_out = comp;
    z.avail_out = sizeof comp;
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    size_t clen = sizeof comp - z.avail_out - 4;
    deflateEnd(&z);
    assert_int_equal(inflate_one(c, comp, clen, &out, 100), 0);
    assert_int_equal(px_buf_size(&out), 12);
    assert_memory_equal(px_buf_head(&out), "Hello, Hello", 12);
    px_buf_reset(&out);

    /* Our deflater reproduces 7.2.3.1 and 7.2.3.2 byte for byte. */
    assert_int_equal(px__ws_deflate_message(c, (const uint8_t *)"Hello", 5, &out, SIZE_MAX), 0);
    assert_int_equal(px_buf_size(&out), sizeof hello);
    assert_memory_equal(px_buf_head(&out), hello, sizeof hello);
    px_buf_reset(&out);
    assert_int_equal(px__ws_deflate_message(c, (const uint8_t *)"Hello", 5, &out, SIZE_MAX), 0);
    assert_int_equal(px_buf_size(&out), sizeof hello2);
    assert_memory_equal(px_buf_head(&out), hello2, sizeof hello2);
    px_buf_reset(&out);
    /* An empty message compresses to a single 0x00 (7.2.3.6). */
    assert_int_equal(px__ws_deflate_message(c, NULL, 0, &out, SIZE_MAX), 0);
    assert_int_equal(px_buf_size(&out), 1);
    assert_int_equal((uint8_t)px_buf_head(&out)[0], 0x00);
    px_buf_dispose(&out);
    px__ws_deflate_free(c);
    assert_int_equal(mem_cur, 0);
}

/* ---- round trips ------------------------------------------------------------------------ */

static void roundtrip(int snct, unsigned bits, size_t msgs, size_t maxlen)
{
    px__ws_deflate_params_t sp = params(snct, 0, bits, 15);
    px__ws_deflate_params_t cp = mirror(&sp); /* the peer inflates with our server params */
    px__ws_deflate_t *srv = px__ws_deflate_new(&sp, 0), *peer = px__ws_deflate_new(&cp, 0);
    assert_non_null(srv);
    assert_non_null(peer);
    uint8_t *msg = malloc(maxlen + 1);
    assert_non_null(msg);
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    size_t total_in = 0, total_z = 0;
    for (size_t m = 0; m < msgs; m++) {
        size_t len = (size_t)(xorshift64(&rng) % (maxlen + 1));
        fill_text(msg, len);
        px_buf_reset(&z);
        assert_int_equal(px__ws_deflate_message(srv, msg, len, &z, SIZE_MAX), 0);
        total_in += len;
        total_z += px_buf_size(&z);
        /* Random frame split. */
        size_t cuts[8], nc = 0, zl = px_buf_size(&z);
        size_t at = 0;
        while (nc < 8 && zl > 0 && xorshift64(&rng) % 3) {
            at += (size_t)(xorshift64(&rng) % (zl / 4 + 1));
            if (at > zl)
                break;
            cuts[nc++] = at;
        }
        px_buf_reset(&out);
        assert_int_equal(
            inflate_frames(peer, (const uint8_t *)px_buf_head(&z), zl, cuts, nc, &out, maxlen), 0);
        assert_int_equal(px_buf_size(&out), len);
        if (len)
            assert_memory_equal(px_buf_head(&out), msg, len);
    }
    print_message("  snct=%d bits=%u: %zu -> %zu bytes\n", snct, bits, total_in, total_z);
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(srv);
    px__ws_deflate_free(peer);
    free(msg);
}

static void test_roundtrip_context(void **state)
{
    (void)state;
    for (int snct = 0; snct <= 1; snct++) {
        roundtrip(snct, 15, 60, 5000);
        roundtrip(snct, 15, 4, 300000);
    }
    /* Context takeover pays: a repeated message shrinks; without it, it does not. */
    for (int snct = 0; snct <= 1; snct++) {
        px__ws_deflate_params_t p = params(snct, 0, 15, 15);
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        uint8_t msg[2000];
        fill_text(msg, sizeof msg);
        px_buf_t a, b;
        px_buf_init(&a, 0);
        px_buf_init(&b, 0);
        assert_int_equal(px__ws_deflate_message(c, msg, sizeof msg, &a, SIZE_MAX), 0);
        assert_int_equal(px__ws_deflate_message(c, msg, sizeof msg, &b, SIZE_MAX), 0);
        if (snct) {
            assert_int_equal(px_buf_size(&a), px_buf_size(&b));
            assert_memory_equal(px_buf_head(&a), px_buf_head(&b), px_buf_size(&a));
        } else {
            assert_true(px_buf_size(&b) < 60 && px_buf_size(&b) < px_buf_size(&a) / 10);
        }
        px_buf_dispose(&a);
        px_buf_dispose(&b);
        px__ws_deflate_free(c);
    }
    assert_int_equal(mem_cur, 0);
}

static void test_window_bits(void **state)
{
    (void)state;
    for (unsigned bits = 8; bits <= 15; bits++) {
        roundtrip(0, bits, 20, 70000);
        roundtrip(1, bits, 5, 70000);
    }
    /* The limit is real: data compressed with a 32 KiB window does not inflate
     * with a 512-byte one. */
    px__ws_deflate_params_t big = params(0, 0, 15, 15), small = params(0, 0, 15, 9);
    px__ws_deflate_t *d = px__ws_deflate_new(&big, 0), *i = px__ws_deflate_new(&small, 0);
    uint8_t msg[20000];
    fill_text(msg, 10000);
    memcpy(msg + 10000, msg, 10000); /* a 10000-byte-back repeat */
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    assert_int_equal(px__ws_deflate_message(d, msg, sizeof msg, &z, SIZE_MAX), 0);
    int r = inflate_one(i, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, SIZE_MAX);
    assert_int_equal(r, -EBADMSG);
    assert_int_equal(px__ws_deflate_close_code(r), 1007);
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(d);
    px__ws_deflate_free(i);
    assert_int_equal(mem_cur, 0);
}

static void test_split_every_position(void **state)
{
    (void)state;
    px__ws_deflate_params_t p = params(1, 1, 15, 15);
    px__ws_deflate_t *d = px__ws_deflate_new(&p, 0);
    uint8_t msg[3000];
    fill_text(msg, sizeof msg);
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    assert_int_equal(px__ws_deflate_message(d, msg, sizeof msg, &z, SIZE_MAX), 0);
    size_t zl = px_buf_size(&z);
    const uint8_t *zp = (const uint8_t *)px_buf_head(&z);
    px__ws_deflate_t *in = px__ws_deflate_new(&p, 0); /* client_no_context_takeover: resets */
    for (size_t a = 0; a <= zl; a++) {
        size_t cuts[2] = {a, a + (zl - a) / 2};
        for (size_t nc = 1; nc <= 2; nc++) {
            px_buf_reset(&out);
            assert_int_equal(inflate_frames(in, zp, zl, cuts, nc, &out, sizeof msg), 0);
            assert_int_equal(px_buf_size(&out), sizeof msg);
            assert_memory_equal(px_buf_head(&out), msg, sizeof msg);
        }
    }
    /* Byte-sized frames, as a hostile client might send. */
    px_buf_reset(&out);
    for (size_t k = 0; k < zl; k++)
        assert_int_equal(px__ws_inflate(in, zp + k, 1, 0, &out, sizeof msg), 0);
    assert_int_equal(px__ws_inflate(in, NULL, 0, 1, &out, sizeof msg), 0);
    assert_memory_equal(px_buf_head(&out), msg, sizeof msg);
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(d);
    px__ws_deflate_free(in);
    assert_int_equal(mem_cur, 0);
}

/* ---- limits -------------------------------------------------------------------------------- */

static void test_max_out_exact(void **state)
{
    (void)state;
    px__ws_deflate_params_t p = params(1, 1, 15, 15);
    px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
    uint8_t msg[5000];
    fill_text(msg, sizeof msg);
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    assert_int_equal(px__ws_deflate_message(c, msg, sizeof msg, &z, SIZE_MAX), 0);
    /* Exactly max_out is fine, one less is too big. */
    assert_int_equal(
        inflate_one(c, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, sizeof msg), 0);
    px__ws_deflate_free(c);
    c = px__ws_deflate_new(&p, 0);
    px_buf_reset(&out);
    int r = inflate_one(c, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, sizeof msg - 1);
    assert_int_equal(r, -EMSGSIZE);
    assert_int_equal(px__ws_deflate_close_code(r), 1009);
    /* Sticky. */
    assert_int_equal(px__ws_inflate(c, (const uint8_t *)"\x00", 1, 1, &out, 100), -EMSGSIZE);
    px__ws_deflate_free(c);

    /* Deflate side: a payload that does not fit max_out leaves `out` alone, and
     * the stream stays consistent with a peer that never saw that message. */
    px__ws_deflate_params_t sp = params(0, 0, 15, 15), cp = mirror(&sp);
    px__ws_deflate_t *srv = px__ws_deflate_new(&sp, 0), *peer = px__ws_deflate_new(&cp, 0);
    for (int m = 0; m < 6; m++) {
        px_buf_reset(&z);
        px_buf_reset(&out);
        assert_int_equal(px_buf_append(&z, "HDR", 3), 0);
        if (m % 2) {
            assert_int_equal(px__ws_deflate_message(srv, msg, sizeof msg, &z, 10), -EMSGSIZE);
            assert_int_equal(px_buf_size(&z), 3);
            continue;
        }
        assert_int_equal(px__ws_deflate_message(srv, msg, sizeof msg, &z, sizeof msg), 0);
        size_t zl = px_buf_size(&z) - 3;
        /* max_out equal to the compressed size is accepted. */
        px__ws_deflate_t *probe = px__ws_deflate_new(&sp, 0);
        px_buf_t z2;
        px_buf_init(&z2, 0);
        assert_int_equal(px__ws_deflate_message(probe, msg, sizeof msg, &z2, zl), 0);
        px_buf_reset(&z2);
        px__ws_deflate_reset_context(probe);
        assert_int_equal(px__ws_deflate_message(probe, msg, sizeof msg, &z2, zl - 1), -EMSGSIZE);
        px_buf_dispose(&z2);
        px__ws_deflate_free(probe);
        assert_int_equal(inflate_one(peer, (const uint8_t *)px_buf_head(&z) + 3, zl, &out, 1 << 20),
                         0);
        assert_memory_equal(px_buf_head(&out), msg, sizeof msg);
    }
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(srv);
    px__ws_deflate_free(peer);
    assert_int_equal(mem_cur, 0);
}

static void test_bomb(void **state)
{
    (void)state;
    /* 256 MiB of zeros is about 256 KiB deflated. */
    size_t raw = 256u << 20;
    size_t cap = raw / 512;
    uint8_t *comp = malloc(cap), *zeros = calloc(1, 1 << 20);
    assert_non_null(comp);
    assert_non_null(zeros);
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_out = comp;
    zs.avail_out = (uInt)cap;
    for (size_t done = 0; done < raw; done += 1 << 20) {
        zs.next_in = zeros;
        zs.avail_in = 1 << 20;
        assert_int_equal(deflate(&zs, done + (1 << 20) < raw ? Z_NO_FLUSH : Z_SYNC_FLUSH), Z_OK);
        assert_int_equal(zs.avail_in, 0);
    }
    size_t clen = cap - zs.avail_out - 4;
    deflateEnd(&zs);
    print_message("  bomb: %zu MiB -> %zu bytes\n", raw >> 20, clen);

    size_t max_out = 1 << 20;
    for (int exact = 0; exact <= 1; exact++) {
        reset_counters();
        px__ws_deflate_params_t p = params(0, 0, 15, 15);
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        px_buf_t out;
        px_buf_init(&out, exact ? max_out : 0);
        /* In 4 KiB frames; the error must come long before the input ends. */
        size_t pos = 0;
        int r = 0;
        while (pos < clen && r == 0) {
            size_t n = clen - pos < 4096 ? clen - pos : 4096;
            r = px__ws_inflate(c, comp + pos, n, pos + n == clen, &out, max_out);
            pos += n;
        }
        assert_int_equal(r, -EMSGSIZE);
        assert_true(pos <= 2 * 4096); /* 1 MiB out needs ~1 KiB in */
        assert_true(px_buf_size(&out) <= max_out);
        size_t zmem = px__ws_deflate_mem_used(c);
        print_message("  stopped after %zu input bytes, out %zu, peak heap %zu (zlib %zu)%s\n", pos,
                      px_buf_size(&out), mem_peak, zmem, exact ? ", out.max set" : "");
        if (exact)
            assert_true(mem_peak <= max_out + zmem + 1024);
        else
            assert_true(mem_peak <= 2 * max_out + zmem + 1024);
        px_buf_dispose(&out);
        px__ws_deflate_free(c);
    }
    free(comp);
    free(zeros);
    assert_int_equal(mem_cur, 0);
}

static void test_budget(void **state)
{
    (void)state;
    uint8_t msg[4000];
    fill_text(msg, sizeof msg);
    for (unsigned bits = 8; bits <= 15; bits++) {
        px__ws_deflate_params_t p = params(0, 0, bits, bits), peer_p = mirror(&p);
        size_t est = px__ws_deflate_mem_estimate(&p);
        /* Exactly the estimate: both directions work and stay within it. */
        px__ws_deflate_t *c = px__ws_deflate_new(&p, est);
        px__ws_deflate_t *peer = px__ws_deflate_new(&peer_p, 0);
        px_buf_t z, out;
        px_buf_init(&z, 0);
        px_buf_init(&out, 0);
        assert_int_equal(px__ws_deflate_message(c, msg, sizeof msg, &z, SIZE_MAX), 0);
        assert_int_equal(px__ws_deflate_message(peer, msg, sizeof msg, &out, SIZE_MAX), 0);
        px_buf_t back;
        px_buf_init(&back, 0);
        assert_int_equal(
            inflate_one(c, (const uint8_t *)px_buf_head(&out), px_buf_size(&out), &back, 1 << 20),
            0);
        assert_int_equal(px_buf_size(&back), sizeof msg);
        size_t used = px__ws_deflate_mem_used(c);
        print_message("  bits %2u: estimate %zu, used %zu\n", bits, est, used);
        assert_true(used <= est && used > est / 2);
        px_buf_dispose(&back);
        px__ws_deflate_free(c);
        px__ws_deflate_free(peer);

        /* Budget for the inflater only: sending compressed fails cleanly (send
         * uncompressed instead), receiving still works. */
        size_t inf_only = ((size_t)1 << bits) + 9000;
        c = px__ws_deflate_new(&p, inf_only);
        px_buf_reset(&z);
        assert_int_equal(px_buf_append(&z, "x", 1), 0);
        int r = px__ws_deflate_message(c, msg, sizeof msg, &z, SIZE_MAX);
        assert_int_equal(r, -ENOMEM);
        assert_int_equal(px__ws_deflate_close_code(r), 1011);
        assert_int_equal(px_buf_size(&z), 1);
        assert_true(px__ws_deflate_mem_used(c) <= inf_only);
        px_buf_init(&back, 0);
        assert_int_equal(
            inflate_one(c, (const uint8_t *)px_buf_head(&out), px_buf_size(&out), &back, 1 << 20),
            0);
        assert_int_equal(px_buf_size(&back), sizeof msg);
        px_buf_dispose(&back);
        px__ws_deflate_free(c);

        /* Too small for anything: inflate fails with -ENOMEM, then stays failed. */
        c = px__ws_deflate_new(&p, 3000);
        px_buf_init(&back, 0);
        r = inflate_one(c, (const uint8_t *)px_buf_head(&out), px_buf_size(&out), &back, 1 << 20);
        assert_int_equal(r, -ENOMEM);
        assert_int_equal(px__ws_inflate(c, (const uint8_t *)"\x00", 1, 1, &back, 10), -ENOMEM);
        assert_true(px__ws_deflate_mem_used(c) <= 3000);
        px_buf_dispose(&back);
        px__ws_deflate_free(c);
        px_buf_dispose(&z);
        px_buf_dispose(&out);
    }
    assert_int_equal(mem_cur, 0);
}

/* Many final blocks in one message (issue 10, item 8): each one starts a new
 * deflate stream that keeps the window, so a back-reference 32 KiB back into
 * the first block still resolves after 300 000 of them, and the whole costs
 * time linear in the input (the window is never copied). */
static void test_final_blocks_keep_window(void **state)
{
    (void)state;
    enum { WIN = 32768, REPS = 300000 };
    uint8_t *text = malloc(WIN);
    assert_non_null(text);
    fill_text(text, WIN);
    /* A block with the text (sync flush: the window is full), REPS empty final
     * blocks (03 00), then the same text compressed against itself as the
     * dictionary: all back-references, the farthest 32 KiB back. */
    size_t cap = WIN * 2 + 2 * REPS + 1024, n = 0;
    uint8_t *msg = malloc(cap);
    assert_non_null(msg);
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = text;
    z.avail_in = WIN;
    z.next_out = msg;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    n = cap - z.avail_out;
    deflateEnd(&z);
    for (int i = 0; i < REPS; i++) {
        msg[n++] = 0x03;
        msg[n++] = 0x00;
    }
    z_stream z2 = {0};
    assert_int_equal(deflateInit2(&z2, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    assert_int_equal(deflateSetDictionary(&z2, text, WIN), Z_OK);
    z2.next_in = text;
    z2.avail_in = WIN;
    z2.next_out = msg + n;
    z2.avail_out = (uInt)(cap - n);
    assert_int_equal(deflate(&z2, Z_SYNC_FLUSH), Z_OK);
    n = cap - z2.avail_out - 4; /* without the 00 00 ff ff tail */
    deflateEnd(&z2);

    px__ws_deflate_params_t p = params(0, 0, 15, 15);
    px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
    px_buf_t out;
    px_buf_init(&out, 0);
    uint64_t t0 = px_now_ns();
    assert_int_equal(inflate_one(c, msg, n, &out, 2 * WIN), 0);
    uint64_t ns = px_now_ns() - t0;
    assert_int_equal(px_buf_size(&out), 2 * WIN);
    assert_memory_equal(px_buf_head(&out), text, WIN);
    assert_memory_equal(px_buf_head(&out) + WIN, text, WIN);
    print_message("  %d final blocks: %.1f ms\n", REPS, (double)ns / 1e6);
    /* ~15 ms (~430 ms when every final block copied the window out and back);
     * loose enough for a busy machine, and four times that under ASan. */
    uint64_t limit_ms = 250;
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
    limit_ms *= 4;
#endif
#endif
#ifdef __SANITIZE_ADDRESS__
    limit_ms *= 4;
#endif
    assert_true(ns < limit_ms * 1000 * 1000);
    px_buf_dispose(&out);
    px__ws_deflate_free(c);
    free(msg);
    free(text);
    assert_int_equal(mem_cur, 0);
}

static void test_corrupt(void **state)
{
    (void)state;
    px__ws_deflate_params_t p = params(0, 0, 15, 15);
    px_buf_t out;
    px_buf_init(&out, 0);
    static const struct {
        const char *name;
        const char *data;
        size_t len;
        size_t split; /* 0: one frame */
    } bad[] = {
        {"reserved block type", "\x07\x00", 2, 0},
        {"bad stored length", "\x00\x05\x00\x00\x00Hello", 10, 0},
        {"cut inside a stored block", "\x00\x06\x00\xf9\xff\x48", 6, 0},
        {"cut inside a Huffman block", "\xf2\x48\xcd", 3, 0},
        {"garbage after the final block", "\xf3\x48\xcd\xc9\xc9\x07\x00\x00\x41", 9, 0},
        {"bad frame after the final block", "\xf3\x48\xcd\xc9\xc9\x07\x00\x00\x00", 9, 8},
    };
    for (size_t i = 0; i < PX_ARRAY_SIZE(bad); i++) {
        print_message("  %s\n", bad[i].name);
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        px_buf_reset(&out);
        size_t cut = bad[i].split;
        int r = inflate_frames(c, (const uint8_t *)bad[i].data, bad[i].len, &cut, cut ? 1 : 0, &out,
                               1000);
        assert_int_equal(r, -EBADMSG);
        assert_int_equal(px__ws_inflate(c, (const uint8_t *)"\x00", 1, 1, &out, 1000), -EBADMSG);
        px__ws_deflate_free(c);
    }
    /* A back-reference into a dictionary the inflater never saw. */
    {
        z_stream zs = {0};
        assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
        assert_int_equal(deflateSetDictionary(&zs, (const Bytef *)"Hello, world", 12), Z_OK);
        uint8_t comp[64];
        zs.next_in = (Bytef *)"Hello, world";
        zs.avail_in = 12;
        zs.next_out = comp;
        zs.avail_out = sizeof comp;
        assert_int_equal(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
        size_t clen = sizeof comp - zs.avail_out - 4;
        deflateEnd(&zs);
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        px_buf_reset(&out);
        assert_int_equal(inflate_one(c, comp, clen, &out, 1000), -EBADMSG);
        px__ws_deflate_free(c);
    }
    /* Random garbage never crashes and never returns more than max_out. */
    for (int i = 0; i < 2000; i++) {
        uint8_t junk[64];
        for (size_t k = 0; k < sizeof junk; k++)
            junk[k] = (uint8_t)xorshift64(&rng);
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        px_buf_reset(&out);
        int r = inflate_one(c, junk, 1 + (size_t)(xorshift64(&rng) % 64), &out, 500);
        assert_true(r == 0 || r == -EBADMSG || r == -EMSGSIZE);
        assert_true(px_buf_size(&out) <= 500);
        px__ws_deflate_free(c);
    }
    px_buf_dispose(&out);
    assert_int_equal(mem_cur, 0);
}

static void test_trim_and_reset_context(void **state)
{
    (void)state;
    uint8_t msg[3000];
    fill_text(msg, sizeof msg);
    px__ws_deflate_params_t p = params(1, 1, 15, 15), peer_p = mirror(&p);
    px__ws_deflate_t *c = px__ws_deflate_new(&p, 0), *peer = px__ws_deflate_new(&peer_p, 0);
    px_buf_t z, out;
    px_buf_init(&z, 0);
    px_buf_init(&out, 0);
    for (int round = 0; round < 3; round++) {
        px_buf_reset(&z);
        px_buf_reset(&out);
        assert_int_equal(px__ws_deflate_message(c, msg, sizeof msg, &z, SIZE_MAX), 0);
        assert_int_equal(px__ws_deflate_message(peer, msg, sizeof msg, &out, SIZE_MAX), 0);
        px_buf_t back;
        px_buf_init(&back, 0);
        /* Mid-message the inflater holds state that trim must keep. */
        size_t half = px_buf_size(&out) / 2;
        assert_int_equal(
            px__ws_inflate(c, (const uint8_t *)px_buf_head(&out), half, 0, &back, 1 << 20), 0);
        px__ws_deflate_trim(c);
        assert_int_equal(px__ws_inflate(c, (const uint8_t *)px_buf_head(&out) + half,
                                        px_buf_size(&out) - half, 1, &back, 1 << 20),
                         0);
        assert_int_equal(px_buf_size(&back), sizeof msg);
        assert_true(px__ws_deflate_mem_used(c) >
                    30000); /* the inflater; trim dropped the deflater */
        px__ws_deflate_trim(c);
        assert_int_equal(px__ws_deflate_mem_used(c), 0);
        px_buf_dispose(&back);
    }
    /* With context takeover trim keeps everything. */
    px__ws_deflate_params_t q = params(0, 0, 15, 15), peer_q = mirror(&q);
    px__ws_deflate_t *d = px__ws_deflate_new(&q, 0), *e = px__ws_deflate_new(&peer_q, 0);
    px_buf_reset(&z);
    assert_int_equal(px__ws_deflate_message(d, msg, sizeof msg, &z, SIZE_MAX), 0);
    size_t used = px__ws_deflate_mem_used(d);
    px__ws_deflate_trim(d);
    assert_int_equal(px__ws_deflate_mem_used(d), used);
    px_buf_reset(&out);
    assert_int_equal(
        inflate_one(e, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, 1 << 20), 0);
    /* A broadcast compressed by a no-context deflater (c) goes to e's peer; d
     * forgets its history and its next message still decodes there. */
    px_buf_reset(&z);
    assert_int_equal(px__ws_deflate_message(c, msg + 100, 2000, &z, SIZE_MAX), 0);
    px_buf_reset(&out);
    assert_int_equal(
        inflate_one(e, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, 1 << 20), 0);
    assert_memory_equal(px_buf_head(&out), msg + 100, 2000);
    px__ws_deflate_reset_context(d);
    px_buf_reset(&z);
    assert_int_equal(px__ws_deflate_message(d, msg, sizeof msg, &z, SIZE_MAX), 0);
    px_buf_reset(&out);
    assert_int_equal(
        inflate_one(e, (const uint8_t *)px_buf_head(&z), px_buf_size(&z), &out, 1 << 20), 0);
    assert_memory_equal(px_buf_head(&out), msg, sizeof msg);
    px_buf_dispose(&z);
    px_buf_dispose(&out);
    px__ws_deflate_free(c);
    px__ws_deflate_free(peer);
    px__ws_deflate_free(d);
    px__ws_deflate_free(e);
    px__ws_deflate_free(NULL);
    assert_int_equal(mem_cur, 0);
}

/* Fail allocation N for N = 0, 1, 2, ... until a whole scenario runs without
 * hitting the failure; every run must fail cleanly and leak nothing. */
static void test_alloc_failures(void **state)
{
    (void)state;
    uint8_t msg[6000];
    fill_text(msg, sizeof msg);
    /* Precompute a client message with plain zlib. */
    px__ws_deflate_params_t p = params(0, 0, 12, 12), peer_p = mirror(&p);
    px__ws_deflate_t *peer = px__ws_deflate_new(&peer_p, 0);
    px_buf_t cm;
    px_buf_init(&cm, 0);
    assert_int_equal(px__ws_deflate_message(peer, msg, sizeof msg, &cm, SIZE_MAX), 0);
    px__ws_deflate_free(peer);
    size_t base = mem_cur; /* cm's buffer */

    long n;
    for (n = 0; n < 1000; n++) {
        reset_counters();
        fail_at = n;
        int r1 = 1, r2 = 1, r3 = 1;
        px__ws_deflate_t *c = px__ws_deflate_new(&p, 0);
        if (c) {
            px_buf_t z, out;
            px_buf_init(&z, 0);
            px_buf_init(&out, 0);
            r1 = px__ws_deflate_message(c, msg, sizeof msg, &z, SIZE_MAX);
            assert_true(r1 == 0 || r1 == -ENOMEM);
            if (r1 != 0)
                assert_int_equal(px_buf_size(&z), 0);
            r2 = inflate_one(c, (const uint8_t *)px_buf_head(&cm), px_buf_size(&cm), &out,
                             sizeof msg);
            assert_true(r2 == 0 || r2 == -ENOMEM);
            if (r2 == 0) {
                assert_int_equal(px_buf_size(&out), sizeof msg);
                assert_memory_equal(px_buf_head(&out), msg, sizeof msg);
            }
            /* A second message on the same context (deflate retries after -ENOMEM). */
            px_buf_reset(&z);
            r3 = px__ws_deflate_message(c, msg, 1000, &z, SIZE_MAX);
            assert_true(r3 == 0 || r3 == -ENOMEM);
            px_buf_dispose(&z);
            px_buf_dispose(&out);
            px__ws_deflate_free(c);
        }
        fail_at = -1;
        assert_int_equal(mem_cur, base); /* nothing leaked */
        if (!fails_hit) {
            assert_int_equal(r1, 0);
            assert_int_equal(r2, 0);
            assert_int_equal(r3, 0);
            break;
        }
    }
    print_message("  %ld allocation points failed in turn\n", n);
    assert_true(n > 4 && n < 1000);
    px_buf_dispose(&cm);
    assert_int_equal(mem_cur, 0);
}

static void test_close_codes(void **state)
{
    (void)state;
    assert_int_equal(px__ws_deflate_close_code(-EMSGSIZE), 1009);
    assert_int_equal(px__ws_deflate_close_code(-EBADMSG), 1007);
    assert_int_equal(px__ws_deflate_close_code(-ENOMEM), 1011);
    assert_int_equal(px__ws_deflate_close_code(-EINVAL), 1011);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiate_table),
        cmocka_unit_test(test_negotiate_misc),
        cmocka_unit_test(test_negotiate_random),
        cmocka_unit_test(test_rfc_examples),
        cmocka_unit_test(test_roundtrip_context),
        cmocka_unit_test(test_window_bits),
        cmocka_unit_test(test_split_every_position),
        cmocka_unit_test(test_max_out_exact),
        cmocka_unit_test(test_final_blocks_keep_window),
        cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_trim_and_reset_context),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_close_codes),
    };
    return cmocka_run_group_tests(tests, setup_alloc, NULL);
}
