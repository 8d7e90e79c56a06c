/* libFuzzer harness for the pure sniffer (src/net/sniff.c): px__sniff_decide
 * with three rule sets (none; every probe kind; order-stable probes only) and
 * the ClientHello parser px__sniff_hello_sni.
 *
 * Every input is decided whole (final and not), and at many prefix lengths,
 * each on a fresh heap buffer of exactly those bytes (ASan sees any read past
 * the end). Promises checked: a final decision is never "need more"; a rule
 * index is valid; for probes that cannot change their mind (no regex, no
 * xmpp), the first prefix that decides decides what the whole input decides;
 * the ClientHello parser, once it answers on a prefix, answers the same on
 * the whole, and a name it returns is 1..255 bytes without NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/sniff.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static px__probe_t probes[3][10];
static const px__probe_t *pp[3][10];
static unsigned np[3];

static void add(int set, const char *text)
{
    char err[256];
    CHECK(px__probe_compile(&probes[set][np[set]], text, 0, err, sizeof err) == 0);
    pp[set][np[set]] = &probes[set][np[set]];
    np[set]++;
}

static void init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *all[] = {"ssh",
                         "openvpn",
                         "xmpp",
                         "tls-sni:git.example.com",
                         "tls-sni:*.example.com",
                         "http-host:api.example.com",
                         "regex:^HELLO [0-9]+",
                         "default"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        add(1, all[i]);
    const char *stable[] = {"ssh", "openvpn", "tls-sni:*.example.net", "http-host:*.example.com"};
    for (size_t i = 0; i < sizeof stable / sizeof stable[0]; i++)
        add(2, stable[i]);
}

static int decide(int set, const uint8_t *data, size_t len, int final, int *rule)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    px__sniff_result_t r;
    int v = px__sniff_decide(pp[set], np[set], copy, len, final, &r);
    free(copy);
    CHECK(v == r.verdict);
    CHECK(v >= PX__SNIFF_MORE && v <= PX__SNIFF_UNKNOWN);
    if (final)
        CHECK(v != PX__SNIFF_MORE);
    if (v == PX__SNIFF_RULE)
        CHECK(r.rule >= 0 && (unsigned)r.rule < np[set] &&
              probes[set][r.rule].kind != PX__PROBE_DEFAULT);
    else
        CHECK(r.rule == -1);
    *rule = r.rule;
    return v;
}

static int hello(const uint8_t *data, size_t len, char *name, size_t *nlen)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int r = px__sniff_hello_sni(copy, len, name, nlen);
    free(copy);
    CHECK(r == 1 || r == 0 || r == PX_PARSE_INCOMPLETE || r == PX_PARSE_ERROR);
    if (r == 1) {
        CHECK(*nlen >= 1 && *nlen <= PX__SNI_MAX);
        CHECK(strlen(name) == *nlen);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size > 20000)
        return 0;
    int rule;
    for (int set = 0; set < 3; set++) {
        decide(set, data, size, 1, &rule);
        int whole = decide(set, data, size, 0, &rule), whole_rule = rule;
        if (set == 1)
            continue; /* regex and xmpp may change their mind as bytes come */
        /* The first prefix that decides, decides for good. */
        size_t step = size <= 300 ? 1 : size / 150;
        for (size_t n = 0; n <= size; n += step) {
            int v = decide(set, data, n, 0, &rule);
            if (v != PX__SNIFF_MORE) {
                CHECK(v == whole && rule == whole_rule);
                break;
            }
        }
    }
    char name[PX__SNI_MAX + 1], name2[PX__SNI_MAX + 1];
    size_t nl = 0, nl2 = 0;
    int whole = hello(data, size, name, &nl);
    size_t step = size <= 600 ? 1 : size / 300;
    for (size_t n = 0; n <= size; n += step) {
        int r = hello(data, n, name2, &nl2);
        if (r != PX_PARSE_INCOMPLETE) {
            CHECK(r == whole);
            if (r == 1)
                CHECK(nl == nl2 && memcmp(name, name2, nl) == 0);
            break;
        }
    }
    return 0;
}
