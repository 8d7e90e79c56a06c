/* The sniffer: the pure decision (bytes -> what they are) with its probes and
 * the ClientHello parser, then the "sniff" chooser protocol that acts on it.
 * See sniff.h; docs/one-port.md for the behaviour seen from outside. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/net_int.h"
#include "net/proxy.h"
#include "net/proxy_protocol.h"
#include "net/sniff.h"
#include "net/tls.h"
#include "net/transport.h"
#include "plexus/sniff.h"

/* ================================================================================
 * The pure part: no I/O, no allocation (regexec allocates inside libc only).
 * ================================================================================ */

/* ---- probes: compile ------------------------------------------------------------- */

static int compile_host(px__probe_t *p, const char *h, char *err, size_t errlen)
{
    size_t n = strlen(h);
    if (n && h[n - 1] == '.')
        n--; /* "example.com." is "example.com" */
    p->wildcard = n > 2 && h[0] == '*' && h[1] == '.';
    const char *s = p->wildcard ? h + 1 : h; /* keep the dot: ".example.com" */
    size_t k = p->wildcard ? n - 1 : n;
    if (k == 0 || k > PX__SNI_MAX) {
        snprintf(err, errlen, "host name must be 1 to %d characters", PX__SNI_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_')) {
            snprintf(err, errlen,
                     "'%s' is not a host name (letters, digits, '-', '.', or *.suffix)", h);
            return -EINVAL;
        }
        p->host[i] = (char)tolower(ch);
    }
    p->host[k] = '\0';
    p->host_len = k;
    return 0;
}

int px__probe_compile(px__probe_t *p, const char *text, size_t window, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->window = window ? window : PX__REGEX_WINDOW;
    if (p->window > PX__REGEX_WINDOW_MAX)
        p->window = PX__REGEX_WINDOW_MAX;
    if (strcmp(text, "ssh") == 0) {
        p->kind = PX__PROBE_SSH;
    } else if (strcmp(text, "openvpn") == 0) {
        p->kind = PX__PROBE_OPENVPN;
    } else if (strcmp(text, "xmpp") == 0) {
        p->kind = PX__PROBE_XMPP;
    } else if (strcmp(text, "default") == 0) {
        p->kind = PX__PROBE_DEFAULT;
    } else if (strncmp(text, "tls-sni:", 8) == 0) {
        p->kind = PX__PROBE_TLS_SNI;
        return compile_host(p, text + 8, err, errlen);
    } else if (strncmp(text, "http-host:", 10) == 0) {
        p->kind = PX__PROBE_HTTP_HOST;
        return compile_host(p, text + 10, err, errlen);
    } else if (strncmp(text, "regex:", 6) == 0) {
        if (!text[6]) {
            snprintf(err, errlen, "empty regex");
            return -EINVAL;
        }
        int r = regcomp(&p->re, text + 6, REG_EXTENDED | REG_NOSUB);
        if (r) {
            char msg[128];
            regerror(r, &p->re, msg, sizeof msg);
            snprintf(err, errlen, "regex '%s': %s", text + 6, msg);
            return -EINVAL;
        }
        p->kind = PX__PROBE_REGEX;
    } else {
        snprintf(err, errlen,
                 "unknown probe '%s' (ssh, openvpn, xmpp, tls-sni:HOST, http-host:HOST, regex:ERE, "
                 "default)",
                 text);
        return -EINVAL;
    }
    return 0;
}

void px__probe_dispose(px__probe_t *p)
{
    if (p && p->kind == PX__PROBE_REGEX) {
        regfree(&p->re);
        p->kind = PX__PROBE_DEFAULT;
    }
}

int px__probe_host_match(const px__probe_t *p, const char *name, size_t len)
{
    if (len && name[len - 1] == '.')
        len--;
    if (p->wildcard) {
        if (len <= p->host_len)
            return 0; /* at least one character before ".suffix" */
        name += len - p->host_len;
        len = p->host_len;
    } else if (len != p->host_len) {
        return 0;
    }
    for (size_t i = 0; i < len; i++)
        if (tolower((unsigned char)name[i]) != p->host[i])
            return 0;
    return 1;
}

/* ---- the TLS ClientHello ----------------------------------------------------------- */

/* Reads the handshake bytes carried by consecutive TLS handshake records, as one
 * stream, wherever the record boundaries fall. */
typedef struct hs_reader {
    const unsigned char *p;
    size_t len, pos;
    size_t rec_left; /* payload bytes left in the current record */
    int status;      /* 0, PX_PARSE_INCOMPLETE or PX_PARSE_ERROR (sticky) */
} hs_reader_t;

#define TLS_RECORD_MAX (16384 + 256) /* plaintext limit, with slack for old stacks */

static int hs_byte(hs_reader_t *r, unsigned *out)
{
    if (r->status)
        return -1;
    while (r->rec_left == 0) {
        if (r->len - r->pos < 5) {
            r->status = PX_PARSE_INCOMPLETE;
            return -1;
        }
        const unsigned char *h = r->p + r->pos;
        size_t n = (size_t)h[3] << 8 | h[4];
        if (h[0] != 0x16 || h[1] != 0x03 || n == 0 || n > TLS_RECORD_MAX) {
            r->status = PX_PARSE_ERROR;
            return -1;
        }
        r->rec_left = n;
        r->pos += 5;
    }
    if (r->pos >= r->len) {
        r->status = PX_PARSE_INCOMPLETE;
        return -1;
    }
    *out = r->p[r->pos++];
    r->rec_left--;
    return 0;
}

/* A big-endian number of `n` bytes (n <= 3). */
static size_t hs_num(hs_reader_t *r, int n)
{
    size_t v = 0;
    unsigned b = 0;
    for (int i = 0; i < n; i++) {
        if (hs_byte(r, &b))
            return 0;
        v = v << 8 | b;
    }
    return v;
}

static void hs_skip(hs_reader_t *r, size_t n)
{
    unsigned b;
    while (n-- && hs_byte(r, &b) == 0)
        ;
}

/* Bytes consumed from the handshake stream so far (record headers excluded)
 * are tracked by the caller through `left`: each field read is subtracted. */
#define TAKE(n)                                                                                    \
    do {                                                                                           \
        if ((size_t)(n) > left) {                                                                  \
            r.status = PX_PARSE_ERROR;                                                             \
            return r.status;                                                                       \
        }                                                                                          \
        left -= (size_t)(n);                                                                       \
    } while (0)
#define CHECK_READ()                                                                               \
    do {                                                                                           \
        if (r.status)                                                                              \
            return r.status;                                                                       \
    } while (0)

int px__sniff_hello_sni(const void *data, size_t len, char sni[PX__SNI_MAX + 1], size_t *sni_len)
{
    hs_reader_t r = {.p = data, .len = len};
    if (len >= 1 && r.p[0] != 0x16)
        return PX_PARSE_ERROR;
    if (len >= 2 && r.p[1] != 0x03)
        return PX_PARSE_ERROR;
    size_t type = hs_num(&r, 1), left = hs_num(&r, 3);
    CHECK_READ();
    if (type != 1 || left < 38) /* client_hello; version + random at least */
        return PX_PARSE_ERROR;
    size_t ver = hs_num(&r, 2);
    TAKE(2);
    CHECK_READ();
    if (ver >> 8 != 3)
        return PX_PARSE_ERROR;
    hs_skip(&r, 32); /* random */
    TAKE(32);
    size_t sid = hs_num(&r, 1);
    TAKE(1);
    CHECK_READ();
    if (sid > 32)
        return PX_PARSE_ERROR;
    hs_skip(&r, sid);
    TAKE(sid);
    size_t cs = hs_num(&r, 2);
    TAKE(2);
    CHECK_READ();
    if (cs < 2 || cs % 2)
        return PX_PARSE_ERROR;
    hs_skip(&r, cs);
    TAKE(cs);
    size_t comp = hs_num(&r, 1);
    TAKE(1);
    CHECK_READ();
    if (comp < 1)
        return PX_PARSE_ERROR;
    hs_skip(&r, comp);
    TAKE(comp);
    CHECK_READ();
    if (left == 0)
        return 0; /* no extensions at all (TLS 1.2 allows it): no SNI */
    size_t exts = hs_num(&r, 2);
    TAKE(2);
    CHECK_READ();
    if (exts != left)
        return PX_PARSE_ERROR;
    while (left) {
        size_t et = hs_num(&r, 2);
        TAKE(2);
        size_t el = hs_num(&r, 2);
        TAKE(2);
        CHECK_READ();
        TAKE(el);
        if (et != 0) { /* not server_name */
            hs_skip(&r, el);
            CHECK_READ();
            continue;
        }
        /* ServerNameList: length, then (name_type, length, name)... */
        size_t list = hs_num(&r, 2);
        CHECK_READ();
        if (list + 2 != el || list < 3)
            return PX_PARSE_ERROR;
        while (list) {
            if (list < 3)
                return PX_PARSE_ERROR;
            size_t nt = hs_num(&r, 1), nl = hs_num(&r, 2);
            CHECK_READ();
            list -= 3;
            if (nl > list)
                return PX_PARSE_ERROR;
            list -= nl;
            if (nt != 0) { /* only host_name (0) is defined */
                hs_skip(&r, nl);
                CHECK_READ();
                continue;
            }
            if (nl == 0 || nl > PX__SNI_MAX)
                return PX_PARSE_ERROR;
            for (size_t i = 0; i < nl; i++) {
                unsigned b = 0;
                if (hs_byte(&r, &b))
                    return r.status;
                if (b == 0)
                    return PX_PARSE_ERROR; /* a NUL would cut the name short */
                sni[i] = (char)b;
            }
            sni[nl] = '\0';
            *sni_len = nl;
            return 1;
        }
        return 0; /* server_name without a host_name */
    }
    return 0;
}

#undef TAKE
#undef CHECK_READ

/* ---- the decision ------------------------------------------------------------------- */

/* A probe's answer. */
enum { NO, MAYBE, YES };

/* Lazily computed facts about the bytes, shared by the probes of one call. */
typedef struct sniff_ctx {
    const unsigned char *p;
    size_t len;
    int final;
    int tls; /* -3: not parsed yet, else px__tls_sni's result */
    char sni[PX__SNI_MAX + 1];
    size_t sni_len;
    int http; /* -3: not computed; else the method test (NO, MAYBE, YES) */
    int head; /* -3: not looked for; 1: the head is complete; 0: not (yet) */
    size_t head_len;
} sniff_ctx_t;

/* `p[0..len)` against the literal `lit`: YES if it starts with it, MAYBE if it
 * is a proper prefix of it, NO otherwise. */
static int prefix(const unsigned char *p, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    size_t k = len < n ? len : n;
    if (memcmp(p, lit, k) != 0)
        return NO;
    return k == n ? YES : MAYBE;
}

static int best(int a, int b)
{
    return a > b ? a : b;
}

/* HTTP/1.x: a known method followed by a space (RFC 9110 9.3, PATCH, and the
 * WebDAV ones a file server sees). */
static int http_method(sniff_ctx_t *x)
{
    static const char *const methods[] = {
        "GET ",   "HEAD ",    "POST ",  "PUT ",      "DELETE ",    "OPTIONS ",
        "PATCH ", "CONNECT ", "TRACE ", "PROPFIND ", "PROPPATCH ", "MKCOL ",
        "COPY ",  "MOVE ",    "LOCK ",  "UNLOCK ",   "REPORT ",    "SEARCH "};
    if (x->http != -3)
        return x->http;
    int r = NO;
    for (size_t i = 0; i < PX_ARRAY_SIZE(methods) && r != YES; i++)
        r = best(r, prefix(x->p, x->len, methods[i]));
    return x->http = r;
}

/* The end of the request head ("\r\n\r\n") within the bytes. */
static int http_head(sniff_ctx_t *x)
{
    if (x->head != -3)
        return x->head;
    x->head = 0;
    for (size_t i = 3; i < x->len; i++) {
        if (x->p[i] == '\n' && x->p[i - 1] == '\r' && x->p[i - 2] == '\n' && x->p[i - 3] == '\r') {
            x->head = 1;
            x->head_len = i + 1;
            break;
        }
    }
    return x->head;
}

static int probe_http_host(const px__probe_t *pr, sniff_ctx_t *x)
{
    int m = http_method(x);
    if (m != YES)
        return m; /* not HTTP (NO), or not sure yet (MAYBE) */
    if (!http_head(x))
        return MAYBE;
    /* Field lines: after the request line, up to the empty line. */
    const char *p = (const char *)x->p, *end = p + x->head_len - 2;
    const char *line = memchr(p, '\n', (size_t)(end - p));
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t n = (size_t)(eol - line);
        if (n > 5 && strncasecmp(line, "host:", 5) == 0) {
            const char *v = line + 5, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            /* Without the port: "host:8080", "[::1]:8080". */
            const char *colon = NULL;
            if (v < ve && *v == '[') {
                const char *rb = memchr(v, ']', (size_t)(ve - v));
                if (rb && rb + 1 < ve && rb[1] == ':')
                    colon = rb + 1;
            } else {
                colon = memchr(v, ':', (size_t)(ve - v));
            }
            if (colon)
                ve = colon;
            return px__probe_host_match(pr, v, (size_t)(ve - v)) ? YES : NO;
        }
        line = eol;
    }
    return NO; /* no Host header: not for a by-host rule */
}

static int probe_tls_sni(const px__probe_t *pr, sniff_ctx_t *x)
{
    if (x->tls == -3)
        x->tls = px__sniff_hello_sni(x->p, x->len, x->sni, &x->sni_len);
    if (x->tls == PX_PARSE_INCOMPLETE)
        return MAYBE;
    if (x->tls != 1)
        return NO;
    return px__probe_host_match(pr, x->sni, x->sni_len) ? YES : NO;
}

static int probe_ssh(sniff_ctx_t *x)
{
    return best(prefix(x->p, x->len, "SSH-2.0-"), prefix(x->p, x->len, "SSH-1.99-"));
}

/* OpenVPN over TCP: each packet is preceded by its 16-bit length; the client
 * opens with P_CONTROL_HARD_RESET_CLIENT_V2 (7) or _V3 (10), key id 0, in the
 * high 5 / low 3 bits of the opcode byte. The smallest such packet (opcode,
 * session id, an empty ack array, a packet id) is 14 bytes; a large one with
 * tls-crypt-v2 stays well under 2 KiB. */
static int probe_openvpn(sniff_ctx_t *x)
{
    if (x->len < 3) {
        /* The length's high byte is 0..7 for 14..2047. */
        return x->p[0] <= 0x07 ? MAYBE : NO;
    }
    size_t plen = (size_t)x->p[0] << 8 | x->p[1];
    unsigned op = x->p[2] >> 3, key = x->p[2] & 7;
    return plen >= 14 && plen < 2048 && (op == 7 || op == 10) && key == 0 ? YES : NO;
}

/* XMPP: a client opens with an XML declaration or the stream header itself,
 * and the stream header names a jabber namespace (jabber:client,
 * jabber:server, jabber:component:accept). */
static int probe_xmpp(sniff_ctx_t *x)
{
    int s = best(prefix(x->p, x->len, "<?xml"), prefix(x->p, x->len, "<stream:stream"));
    if (s != YES)
        return s;
    if (memmem(x->p, x->len, "jabber", 6))
        return YES;
    /* The stream header is complete and names no jabber namespace: not XMPP. */
    const unsigned char *st = memmem(x->p, x->len, "<stream:stream", 14);
    if (st && memchr(st, '>', x->len - (size_t)(st - x->p)))
        return NO;
    return MAYBE;
}

static int probe_regex(const px__probe_t *pr, sniff_ctx_t *x)
{
    /* The bytes are not NUL-terminated: regexec gets a terminated copy (a
     * libc without REG_STARTEND, or a sanitizer's interceptor, reads up to a
     * NUL), and REG_STARTEND so that NULs inside do not end the subject
     * where it is supported (glibc). The copy is per thread, of a bounded
     * size: nothing is allocated. */
    static __thread char buf[PX__REGEX_WINDOW_MAX + 1];
    size_t n = x->len < pr->window ? x->len : pr->window;
    memcpy(buf, x->p, n);
    buf[n] = '\0';
    regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)n}};
    if (regexec(&pr->re, buf, 1, m, REG_STARTEND) == 0)
        return YES;
    return NO; /* unrecognised bytes wait for more anyway while a regex probe exists */
}

static int run_probe(const px__probe_t *pr, sniff_ctx_t *x)
{
    switch (pr->kind) {
    case PX__PROBE_SSH: return probe_ssh(x);
    case PX__PROBE_OPENVPN: return probe_openvpn(x);
    case PX__PROBE_XMPP: return probe_xmpp(x);
    case PX__PROBE_TLS_SNI: return probe_tls_sni(pr, x);
    case PX__PROBE_HTTP_HOST: return probe_http_host(pr, x);
    case PX__PROBE_REGEX: return probe_regex(pr, x);
    default: return NO; /* DEFAULT: only for silence */
    }
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int px__sniff_decide(const px__probe_t *const *probes, unsigned n, const void *data, size_t len,
                     int final, px__sniff_result_t *out)
{
    sniff_ctx_t x = {.p = data, .len = len, .final = final, .tls = -3, .http = -3, .head = -3};
    out->rule = -1;
    if (len == 0) {
        out->verdict = final ? PX__SNIFF_UNKNOWN : PX__SNIFF_MORE;
        return out->verdict;
    }
    int regex = 0;
    for (unsigned i = 0; i < n; i++) {
        int r = run_probe(probes[i], &x);
        regex |= probes[i]->kind == PX__PROBE_REGEX;
        if (r == YES) {
            out->verdict = PX__SNIFF_RULE;
            out->rule = (int)i;
            return out->verdict;
        }
        if (r == MAYBE && !final) {
            out->verdict = PX__SNIFF_MORE; /* a rule before the others may still claim it */
            return out->verdict;
        }
    }
    const unsigned char *p = data;
    if (p[0] == 0x16) {
        if (len < 2)
            out->verdict = final ? PX__SNIFF_UNKNOWN : PX__SNIFF_MORE;
        else
            out->verdict = p[1] == 0x03 ? PX__SNIFF_TLS : PX__SNIFF_UNKNOWN;
        return out->verdict;
    }
    int h2 = prefix(p, len, h2_preface);
    int h1 = http_method(&x);
    if (h2 == YES)
        out->verdict = PX__SNIFF_H2;
    else if (h1 == YES)
        out->verdict = PX__SNIFF_HTTP;
    else if ((h1 == MAYBE || h2 == MAYBE || regex) && !final)
        out->verdict = PX__SNIFF_MORE;
    else
        out->verdict = PX__SNIFF_UNKNOWN;
    return out->verdict;
}

/* ================================================================================
 * The "sniff" chooser protocol.
 * ================================================================================ */

/* A source allowed to send a PROXY header (--proxy-protocol-from). */
typedef struct cidr {
    int family; /* AF_INET, AF_INET6, or AF_UNIX for "unix" */
    unsigned bits;
    unsigned char addr[16];
} cidr_t;

/* One registered sniffer: its rules, limits and trust list. Immutable once
 * the server starts; shared by every worker. */
typedef struct sniff_cfg {
    const px__probe_t **probes; /* the rules' probes, `default` excluded, in order */
    px__fwd_rule_t **rules;     /* rules[i] owns probes[i] */
    unsigned n;
    px__fwd_rule_t *deflt; /* the `default` rule, or NULL */
    uint64_t timeout_ms;
    size_t max_bytes;
    cidr_t *trusted;
    unsigned ntrusted;
    struct px_tls *tls;
    int tls_only;
} sniff_cfg_t;

/* Everything the sniffers of one server own (module state). */
typedef struct sniff_mod {
    px__fwd_rule_t **rules; /* every rule, shared between sniffers by spec */
    unsigned nrules;
    sniff_cfg_t **cfgs;
    unsigned ncfgs;
} sniff_mod_t;

static char sniff_key; /* px_server_module key */

/* Why the sniffer closed connections (plexus_sniff_closed_total{reason}). */
enum { R_UNKNOWN, R_TIMEOUT, R_UNTRUSTED, R_BAD_PROXY, R_NO_TLS, R_NO_H2, R_H2_TLS_ONLY, R_COUNT };
static const char *const reason_names[R_COUNT] = {
    "unknown", "timeout", "untrusted_proxy", "bad_proxy", "no_tls", "no_h2", "h2c_tls_only"};
static int m_closed[R_COUNT] = {-1, -1, -1, -1, -1, -1, -1};
static int m_proxied = -1; /* plexus_proxy_protocol_accepted_total */

static void register_metrics(void)
{
    char name[96];
    for (int i = 0; i < R_COUNT; i++) {
        snprintf(name, sizeof name, "plexus_sniff_closed_total{reason=\"%s\"}", reason_names[i]);
        m_closed[i] = px_metric_register(
            name,
            "Connections the sniffer closed: unrecognised bytes, silent past --sniff-timeout, a "
            "PROXY "
            "header from an untrusted or malformed source, TLS or h2 not available, h2c on a "
            "TLS-only listener",
            PX_METRIC_COUNTER);
    }
    m_proxied = px_metric_register("plexus_proxy_protocol_accepted_total",
                                   "PROXY protocol headers accepted from trusted sources",
                                   PX_METRIC_COUNTER);
}

/* ---- trusted sources ------------------------------------------------------------- */

static int cidr_parse(const char *s, cidr_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strcmp(s, "unix") == 0) {
        out->family = AF_UNIX;
        return 0;
    }
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof host)
        goto bad;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->addr) == 1)
        out->family = AF_INET6;
    else
        goto bad;
    unsigned maxbits = out->family == AF_INET ? 32 : 128;
    out->bits = maxbits;
    if (slash) {
        const char *b = slash + 1;
        unsigned v = 0;
        size_t nd = 0;
        for (; b[nd] >= '0' && b[nd] <= '9' && nd < 4; nd++)
            v = v * 10 + (unsigned)(b[nd] - '0');
        if (nd == 0 || b[nd] || v > maxbits)
            goto bad;
        out->bits = v;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "'%s' is not an address, a CIDR block (10.0.0.0/8, 2001:db8::/32) or \"unix\"", s);
    return -EINVAL;
}

static int prefix_eq(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static int trusted(const sniff_cfg_t *cfg, const struct sockaddr_storage *ss)
{
    const unsigned char *v4 = NULL, *v6 = NULL;
    if (ss->ss_family == AF_INET) {
        v4 = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
    } else if (ss->ss_family == AF_INET6) {
        v6 = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(v6, mapped, 12) == 0) /* ::ffff:a.b.c.d on a dual-stack listener */
            v4 = v6 + 12;
    }
    for (unsigned i = 0; i < cfg->ntrusted; i++) {
        const cidr_t *t = &cfg->trusted[i];
        if (t->family == AF_UNIX
                ? ss->ss_family == AF_UNIX
                : (t->family == AF_INET && v4 && prefix_eq(v4, t->addr, t->bits)) ||
                      (t->family == AF_INET6 && v6 && prefix_eq(v6, t->addr, t->bits)))
            return 1;
    }
    return 0;
}

/* ---- the PROXY layer: remembers the addresses a trusted header gave ----------------- */

typedef struct proxied {
    px__transport_t base;
    px_proxy_hdr_t hdr;
} proxied_t;

static ssize_t proxied_read(px__transport_t *t, px_conn_t *c, void *buf, size_t len)
{
    return t->lower->ops->read(t->lower, c, buf, len);
}

static ssize_t proxied_writev(px__transport_t *t, px_conn_t *c, const struct iovec *iov, int n)
{
    return t->lower->ops->writev(t->lower, c, iov, n);
}

static ssize_t proxied_sendfile(px__transport_t *t, px_conn_t *c, int fd, off_t *off, size_t len)
{
    return t->lower->ops->sendfile(t->lower, c, fd, off, len);
}

static int proxied_shutdown(px__transport_t *t, px_conn_t *c)
{
    return t->lower->ops->shutdown(t->lower, c);
}

static void proxied_close(px__transport_t *t, px_conn_t *c)
{
    PX_UNUSED(c);
    px__free(t);
}

static int proxied_addresses(px__transport_t *t, px_conn_t *c, struct sockaddr_storage *peer,
                             struct sockaddr_storage *local)
{
    PX_UNUSED(c);
    const proxied_t *p = (const proxied_t *)t;
    if (p->hdr.local)
        return -ENOENT; /* a LOCAL header: the socket's own addresses */
    if (peer)
        *peer = p->hdr.src;
    if (local)
        *local = p->hdr.dst;
    return 0;
}

/* Two tables: sendfile is offered exactly when the layer below offers it. */
static const px__transport_ops_t proxied_ops = {
    .name = "proxy-protocol",
    .read = proxied_read,
    .writev = proxied_writev,
    .sendfile = proxied_sendfile,
    .shutdown = proxied_shutdown,
    .close = proxied_close,
    .addresses = proxied_addresses,
};

static const px__transport_ops_t proxied_ops_nosendfile = {
    .name = "proxy-protocol",
    .read = proxied_read,
    .writev = proxied_writev,
    .shutdown = proxied_shutdown,
    .close = proxied_close,
    .addresses = proxied_addresses,
};

static int has_proxied(const px_conn_t *c)
{
    for (const px__transport_t *t = c->tp; t; t = t->lower)
        if (t->ops == &proxied_ops || t->ops == &proxied_ops_nosendfile)
            return 1;
    return 0;
}

/* The header at the start of data: from a trusted source, parse it and put a
 * layer with its addresses on the stack. Bytes consumed (> 0), 0 to wait for
 * more, -1 after closing. */
static ssize_t take_proxy_header(px_conn_t *c, const sniff_cfg_t *cfg, const char *data, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->io.fd, (struct sockaddr *)&ss, &sl) != 0 || !trusted(cfg, &ss)) {
        static __thread uint64_t logged_ms;
        uint64_t now = px_loop_now(px_conn_loop(c));
        if (now - logged_ms >= 1000 || !logged_ms) { /* at most one line a second */
            logged_ms = now;
            char peer[64] = "?";
            px_conn_peer_name(c, peer, sizeof peer);
            px_log(PX_LOG_WARN,
                   "conn %llu: PROXY protocol header from %s, which --proxy-protocol-from does "
                   "not trust: closing",
                   (unsigned long long)c->id, peer);
        }
        px_metric_add(m_closed[R_UNTRUSTED], 1);
        px_conn_abort(c);
        return -1;
    }
    px_proxy_hdr_t h;
    int r = px__proxy_parse(data, len, cfg->max_bytes, &h);
    if (r == PX_PARSE_INCOMPLETE && len < cfg->max_bytes)
        return 0;
    if (r <= 0) {
        px_log(PX_LOG_DEBUG, "conn %llu: malformed PROXY protocol header: closing",
               (unsigned long long)c->id);
        px_metric_add(m_closed[R_BAD_PROXY], 1);
        px_conn_abort(c);
        return -1;
    }
    proxied_t *p = px__malloc(sizeof *p);
    if (!p) {
        px_conn_abort(c);
        return -1;
    }
    p->base.ops = c->tp->ops->sendfile ? &proxied_ops : &proxied_ops_nosendfile;
    p->base.lower = c->tp;
    p->hdr = h;
    c->tp = &p->base; /* delegates everything: no handshake, nothing buffered */
    px_metric_add(m_proxied, 1);
    return r;
}

/* ---- deciding and acting ---------------------------------------------------------- */

static ssize_t close_for(px_conn_t *c, int reason)
{
    px_metric_add(m_closed[reason], 1);
    px_conn_abort(c);
    return -1;
}

/* h2c (the HTTP/2 preface in clear text) on a --tls-only listener: what
 * "tls-redirect" is to HTTP/1.1. HTTP/2 has no redirect before a request, so
 * the answer is the server preface (an empty SETTINGS) and GOAWAY
 * INADEQUATE_SECURITY (RFC 9113 7: "the underlying transport has properties
 * that do not meet minimum security requirements"), then the close. */
static ssize_t refuse_h2c(px_conn_t *c)
{
    static const char frames[] = {
        0,   0,   0,   0x4, 0,   0,   0,   0,   0, /* SETTINGS, empty */
        0,   0,   20,  0x7, 0,   0,   0,   0,   0, /* GOAWAY, 20 bytes, stream 0 */
        0,   0,   0,   0,                          /* last stream id 0: none processed */
        0,   0,   0,   0xc,                        /* INADEQUATE_SECURITY */
        't', 'l', 's', ' ', 'r', 'e', 'q', 'u', 'i', 'r', 'e', 'd', /* debug data */
    };
    px_log(PX_LOG_DEBUG, "conn %llu: h2c on a TLS-only listener: GOAWAY INADEQUATE_SECURITY",
           (unsigned long long)c->id);
    px_metric_add(m_closed[R_H2_TLS_ONLY], 1);
    if (px_conn_write(c, frames, sizeof frames) != 0) {
        px_conn_abort(c);
        return -1;
    }
    px_conn_close(c);
    return -1;
}

/* Decide on data[0..len) (the bytes after any PROXY header) and act. Returns
 * the bytes consumed (the proxy copied them: len) or 0 (kept: either not
 * decided yet, or handed to a protocol that sees them next), or -1 after
 * closing. */
static ssize_t act(px_conn_t *c, const sniff_cfg_t *cfg, const char *data, size_t len, int final)
{
    px__sniff_result_t res;
    size_t look = len < cfg->max_bytes ? len : cfg->max_bytes;
    if (len >= cfg->max_bytes)
        final = 1;
    px__sniff_decide(cfg->probes, cfg->n, data, look, final, &res);
    int r;
    switch (res.verdict) {
    case PX__SNIFF_MORE: return 0;
    case PX__SNIFF_RULE:
        px_log(PX_LOG_DEBUG, "conn %llu: sniffed %s", (unsigned long long)c->id,
               cfg->rules[res.rule]->name);
        return px__proxy_start(c, cfg->rules[res.rule], data, len) == 0 ? (ssize_t)len : -1;
    case PX__SNIFF_HTTP: {
        const char *name = cfg->tls_only ? "tls-redirect" : "http/1.1";
        if ((r = px_conn_start_protocol(c, name)) != 0) {
            px_log(PX_LOG_ERROR, "conn %llu: cannot start \"%s\": %s", (unsigned long long)c->id,
                   name, px_strerror(r));
            px_conn_abort(c);
            return -1;
        }
        return 0;
    }
    case PX__SNIFF_H2:
        if (cfg->tls_only)
            return refuse_h2c(c);
        if (px__server_protocol(c->nw->server, "h2") && px_conn_start_protocol(c, "h2") == 0)
            return 0;
        px_log(PX_LOG_INFO,
               "conn %llu: HTTP/2 connection preface, but no \"h2\" protocol is registered: "
               "closing",
               (unsigned long long)c->id);
        return close_for(c, R_NO_H2);
    case PX__SNIFF_TLS:
        if (cfg->tls && (r = px__tls_push(c, cfg->tls)) == 0)
            return 0;
        px_log(PX_LOG_DEBUG, "conn %llu: TLS ClientHello%s: closing", (unsigned long long)c->id,
               cfg->tls ? ", but TLS could not start"
                        : " matching no tls-sni rule, and no TLS here");
        return close_for(c, R_NO_TLS);
    default:
        px_log(PX_LOG_DEBUG, "conn %llu: unrecognised first bytes (%zu): closing",
               (unsigned long long)c->id, len);
        return close_for(c, R_UNKNOWN);
    }
}

static ssize_t sniff_read(px_conn_t *c, char *data, size_t len)
{
    const sniff_cfg_t *cfg = px_conn_state(c);
    size_t used = 0;
    /* A PROXY header comes first, once: from a trusted source it is taken,
     * from anyone else it closes the connection. "PROXY " and the v2
     * signature begin like nothing else the sniffer knows. */
    if (!has_proxied(c)) {
        int d = px__proxy_detect(data, len);
        if (d == PX_PARSE_INCOMPLETE && len < cfg->max_bytes)
            return 0;
        if (d == 1) {
            ssize_t r = take_proxy_header(c, cfg, data, len);
            if (r <= 0)
                return r;
            used = (size_t)r;
        }
    }
    ssize_t r = act(c, cfg, data + used, len - used, 0);
    return r < 0 ? -1 : (ssize_t)used + r;
}

static void sniff_timeout(px_conn_t *c)
{
    const sniff_cfg_t *cfg = px_conn_state(c);
    size_t n = px_buf_size(&c->in);
    if (n == 0 && cfg->deflt) { /* silent: a server-speaks-first protocol */
        px_log(PX_LOG_DEBUG, "conn %llu: silent for %llu ms: %s", (unsigned long long)c->id,
               (unsigned long long)cfg->timeout_ms, cfg->deflt->name);
        px__proxy_start(c, cfg->deflt, NULL, 0);
        return;
    }
    if (n == 0 || (!has_proxied(c) && px__proxy_detect(px_buf_head(&c->in), n) != 0)) {
        px_log(PX_LOG_DEBUG, "conn %llu: nothing recognisable within %llu ms: closing",
               (unsigned long long)c->id, (unsigned long long)cfg->timeout_ms);
        close_for(c, R_TIMEOUT);
        return;
    }
    /* Some bytes, undecided: decide with what there is. A protocol started
     * now gets the kept bytes from the loop (px_conn_set_protocol); the proxy
     * copied them, so they are dropped here. */
    ssize_t r = act(c, cfg, px_buf_head(&c->in), n, 1);
    if (r > 0)
        px_buf_consume(&c->in, (size_t)r);
}

static void *sniff_accept(px_conn_t *c, void *ud)
{
    sniff_cfg_t *cfg = ud;
    px_conn_set_read_limit(c, cfg->max_bytes);
    px_conn_set_timeout(c, cfg->timeout_ms);
    return cfg; /* no per-connection state: nothing to free on hand-over */
}

static const px_protocol_t sniff_proto = {
    .name = "sniff",
    .on_read = sniff_read,
    .on_timeout = sniff_timeout,
};

/* ---- registration ----------------------------------------------------------------- */

void px_sniff_opts_init(px_sniff_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = 3000;
    o->max_bytes = 16 * 1024;
}

static void cfg_free(sniff_cfg_t *cfg)
{
    if (!cfg)
        return;
    px__free(cfg->probes);
    px__free(cfg->rules);
    px__free(cfg->trusted);
    px__free(cfg);
}

static void mod_free(void *data)
{
    sniff_mod_t *m = data;
    for (unsigned i = 0; i < m->nrules; i++) {
        px__fwd_rule_dispose(m->rules[i]);
        px__free(m->rules[i]);
    }
    for (unsigned i = 0; i < m->ncfgs; i++)
        cfg_free(m->cfgs[i]);
    px__free(m->rules);
    px__free(m->cfgs);
    px__free(m);
}

static sniff_mod_t *mod_get(px_server_t *s)
{
    sniff_mod_t *m = px_server_module(s, &sniff_key);
    if (m)
        return m;
    m = px__calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (px_server_module_set(s, &sniff_key, m, mod_free) != 0) {
        px__free(m);
        return NULL;
    }
    register_metrics();
    return m;
}

/* The rule with this text, shared with earlier sniffers (one limit, one set
 * of metrics), or a new one. */
static px__fwd_rule_t *rule_get(sniff_mod_t *m, const char *spec, char *err, size_t errlen)
{
    for (unsigned i = 0; i < m->nrules; i++)
        if (strcmp(m->rules[i]->spec, spec) == 0)
            return m->rules[i];
    px__fwd_rule_t *r = px__calloc(1, sizeof *r);
    px__fwd_rule_t **grown = px__realloc(m->rules, (m->nrules + 1) * sizeof *grown);
    if (!r || !grown) {
        px__free(r);
        if (grown)
            m->rules = grown;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->rules = grown;
    if (px__fwd_rule_parse(r, spec, err, errlen) != 0) {
        px__fwd_rule_dispose(r);
        px__free(r);
        return NULL;
    }
    for (unsigned i = 0; i < m->nrules; i++) {
        if (strcmp(m->rules[i]->name, r->name) == 0) {
            snprintf(err, errlen, "'%s': another rule is named '%s' (names label the metrics)",
                     spec, r->name);
            px__fwd_rule_dispose(r);
            px__free(r);
            return NULL;
        }
    }
    if (px__fwd_rule_metrics(r) != 0) {
        snprintf(err, errlen, "'%s': too many metrics (fewer rules, please)", spec);
        px__fwd_rule_dispose(r);
        px__free(r);
        return NULL;
    }
    m->rules[m->nrules++] = r;
    return r;
}

int px_sniff_register(px_server_t *s, const char *name, const px_sniff_opts_t *o, char *err,
                      size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!s || !name || !o || o->max_bytes < 16 || o->timeout_ms == 0) {
        snprintf(err, errlen, "a name, a timeout above 0 and at least 16 bytes are needed");
        return -EINVAL;
    }
    sniff_mod_t *m = mod_get(s);
    sniff_cfg_t *cfg = px__calloc(1, sizeof *cfg);
    sniff_cfg_t **cfgs = m ? px__realloc(m->cfgs, (m->ncfgs + 1) * sizeof *cfgs) : NULL;
    if (cfgs)
        m->cfgs = cfgs;
    if (!cfg || !cfgs) {
        px__free(cfg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    m->cfgs[m->ncfgs++] = cfg; /* freed with the module, whatever happens next */
    cfg->timeout_ms = o->timeout_ms;
    cfg->max_bytes = o->max_bytes;
    cfg->tls = o->tls;
    cfg->tls_only = o->tls_only;
    cfg->probes = px__calloc(o->nforward + 1, sizeof *cfg->probes);
    cfg->rules = px__calloc(o->nforward + 1, sizeof *cfg->rules);
    cfg->trusted = px__calloc(o->nproxy_from + 1, sizeof *cfg->trusted);
    if (!cfg->probes || !cfg->rules || !cfg->trusted) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (unsigned i = 0; i < o->nforward; i++) {
        px__fwd_rule_t *r = rule_get(m, o->forward[i], err, errlen);
        if (!r)
            return -EINVAL;
        if (r->probe.kind == PX__PROBE_DEFAULT) {
            if (cfg->deflt) {
                snprintf(err, errlen, "'%s': only one default rule", o->forward[i]);
                return -EINVAL;
            }
            cfg->deflt = r;
            continue;
        }
        cfg->rules[cfg->n] = r;
        cfg->probes[cfg->n++] = &r->probe;
    }
    for (unsigned i = 0; i < o->nproxy_from; i++)
        if (cidr_parse(o->proxy_from[i], &cfg->trusted[cfg->ntrusted++], err, errlen) != 0)
            return -EINVAL;
    int r = px_server_add_protocol(s, name, &sniff_proto, sniff_accept, cfg);
    if (r)
        snprintf(err, errlen, "cannot register protocol \"%s\": %s", name, px_strerror(r));
    return r;
}

int px_forward_check(const char *spec, char *err, size_t errlen)
{
    px__fwd_rule_t r;
    int rc = px__fwd_rule_parse(&r, spec, err, errlen);
    px__fwd_rule_dispose(&r);
    return rc;
}

int px_proxy_from_check(const char *s, char *err, size_t errlen)
{
    cidr_t c;
    return cidr_parse(s, &c, err, errlen);
}
