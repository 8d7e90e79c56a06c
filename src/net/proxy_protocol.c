/* PROXY protocol v1/v2: pure parser and writers (see proxy_protocol.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "net/proxy_protocol.h"

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[6] = "PROXY ";

int px__proxy_detect(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t n1 = len < sizeof v1_sig ? len : sizeof v1_sig;
    size_t n2 = len < sizeof v2_sig ? len : sizeof v2_sig;
    int v1 = memcmp(p, v1_sig, n1) == 0, v2 = memcmp(p, v2_sig, n2) == 0;
    if ((v1 && n1 == sizeof v1_sig) || (v2 && n2 == sizeof v2_sig))
        return 1;
    return v1 || v2 ? PX_PARSE_INCOMPLETE : 0;
}

/* ---- v1: "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n" ---------------------------------- */

/* The next space-separated field of [*at, end) into `out` (NUL-terminated).
 * 0, or -1 if it is empty or does not fit. */
static int field(const char **at, const char *end, char *out, size_t cap)
{
    const char *s = *at, *e = s;
    while (e < end && *e != ' ')
        e++;
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    *at = e < end ? e + 1 : e; /* past the single separator */
    return 0;
}

static int parse_port(const char *s, in_port_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = htons((uint16_t)v);
    return 0;
}

static int set_addr(struct sockaddr_storage *ss, int fam, const char *host, const char *port)
{
    memset(ss, 0, sizeof *ss);
    if (fam == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1 || parse_port(port, &in->sin_port))
            return -1;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1 || parse_port(port, &in6->sin6_port))
            return -1;
    }
    return 0;
}

static int parse_v1(const char *p, size_t len, size_t max, px_proxy_hdr_t *out)
{
    size_t lim = max < PX_PROXY_V1_MAX ? max : PX_PROXY_V1_MAX;
    size_t scan = len < lim ? len : lim;
    const char *cr = NULL;
    for (size_t i = 0; i < scan; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r') {
            cr = p + i;
            break;
        }
        if (ch < 0x20 || ch > 0x7e) /* the whole line is printable US-ASCII */
            return PX_PARSE_ERROR;
    }
    if (!cr)
        return len >= lim ? PX_PARSE_ERROR : PX_PARSE_INCOMPLETE;
    size_t total = (size_t)(cr - p) + 2;
    if (total > lim)
        return PX_PARSE_ERROR;
    if (len < total)
        return PX_PARSE_INCOMPLETE;
    if (cr[1] != '\n')
        return PX_PARSE_ERROR;
    const char *at = p + sizeof v1_sig, *end = cr;
    char proto[8], src[46], dst[46], sport[8], dport[8];
    memset(out, 0, sizeof *out);
    out->version = 1;
    if (end - at >= 7 && memcmp(at, "UNKNOWN", 7) == 0 && (end - at == 7 || at[7] == ' ')) {
        out->local = 1; /* anything after UNKNOWN is ignored (2.1) */
        return (int)total;
    }
    if (field(&at, end, proto, sizeof proto) || field(&at, end, src, sizeof src) ||
        field(&at, end, dst, sizeof dst) || field(&at, end, sport, sizeof sport) ||
        field(&at, end, dport, sizeof dport) || at != end || end[-1] == ' ')
        return PX_PARSE_ERROR;
    int fam;
    if (strcmp(proto, "TCP4") == 0)
        fam = AF_INET;
    else if (strcmp(proto, "TCP6") == 0)
        fam = AF_INET6;
    else
        return PX_PARSE_ERROR;
    if (set_addr(&out->src, fam, src, sport) || set_addr(&out->dst, fam, dst, dport))
        return PX_PARSE_ERROR;
    return (int)total;
}

/* ---- v2: signature, ver/cmd, family, length, addresses, TLVs -------------------------- */

static int parse_v2(const unsigned char *p, size_t len, size_t max, px_proxy_hdr_t *out)
{
    if (len < PX_PROXY_V2_FIXED)
        return max < PX_PROXY_V2_FIXED ? PX_PARSE_ERROR : PX_PARSE_INCOMPLETE;
    unsigned ver = p[12] >> 4, cmd = p[12] & 0xf, fam = p[13];
    size_t body = (size_t)p[14] << 8 | p[15], total = PX_PROXY_V2_FIXED + body;
    if (ver != 2 || cmd > 1 || total > max)
        return PX_PARSE_ERROR;
    size_t need; /* the address block of each family */
    switch (fam) {
    case 0x00: need = 0; break; /* UNSPEC */
    case 0x11:
    case 0x12: need = 12; break; /* TCP4, UDP4 */
    case 0x21:
    case 0x22: need = 36; break; /* TCP6, UDP6 */
    case 0x31:
    case 0x32: need = 216; break; /* UNIX stream, dgram */
    default: return PX_PARSE_ERROR;
    }
    if (body < need)
        return PX_PARSE_ERROR;
    if (len < total)
        return PX_PARSE_INCOMPLETE;
    /* TLVs (type, 16-bit length, value) must tile the rest exactly. */
    size_t at = PX_PROXY_V2_FIXED + need;
    while (at < total) {
        if (total - at < 3)
            return PX_PARSE_ERROR;
        size_t tl = (size_t)p[at + 1] << 8 | p[at + 2];
        if (tl > total - at - 3)
            return PX_PARSE_ERROR;
        at += 3 + tl;
    }
    memset(out, 0, sizeof *out);
    out->version = 2;
    const unsigned char *a = p + PX_PROXY_V2_FIXED;
    if (cmd == 0 || (fam != 0x11 && fam != 0x21)) {
        out->local = 1; /* LOCAL, or a family we do not use: keep the socket's */
    } else if (fam == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src,
                           *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src,
                            *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
    }
    return (int)total;
}

int px__proxy_parse(const void *data, size_t len, size_t max, px_proxy_hdr_t *out)
{
    int d = px__proxy_detect(data, len);
    if (d != 1)
        return d;
    const unsigned char *p = data;
    if (p[0] == 'P')
        return parse_v1(data, len, max, out);
    return parse_v2(p, len, max, out);
}

/* ---- writers ----------------------------------------------------------------------- */

static int same_inet_family(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return a->ss_family == b->ss_family && (a->ss_family == AF_INET || a->ss_family == AF_INET6);
}

ssize_t px__proxy_write_v1(char *buf, size_t cap, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst)
{
    char line[PX_PROXY_V1_MAX + 1];
    int n;
    if (!same_inet_family(src, dst)) {
        n = snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
    } else if (src->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
        char sa[INET_ADDRSTRLEN], da[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &s->sin_addr, sa, sizeof sa);
        inet_ntop(AF_INET, &d->sin_addr, da, sizeof da);
        n = snprintf(line, sizeof line, "PROXY TCP4 %s %s %u %u\r\n", sa, da, ntohs(s->sin_port),
                     ntohs(d->sin_port));
    } else {
        const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
        char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &s->sin6_addr, sa, sizeof sa);
        inet_ntop(AF_INET6, &d->sin6_addr, da, sizeof da);
        n = snprintf(line, sizeof line, "PROXY TCP6 %s %s %u %u\r\n", sa, da, ntohs(s->sin6_port),
                     ntohs(d->sin6_port));
    }
    if (n < 0 || (size_t)n >= sizeof line || (size_t)n > cap)
        return -ENOSPC;
    memcpy(buf, line, (size_t)n);
    return n;
}

ssize_t px__proxy_write_v2(char *buf, size_t cap, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst)
{
    unsigned char h[PX_PROXY_V2_FIXED + 36];
    size_t body = 0;
    memcpy(h, v2_sig, sizeof v2_sig);
    if (!same_inet_family(src, dst)) {
        h[12] = 0x20; /* LOCAL: the backend keeps the socket's addresses */
        h[13] = 0x00;
    } else if (src->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
        h[12] = 0x21;
        h[13] = 0x11;
        memcpy(h + 16, &s->sin_addr, 4);
        memcpy(h + 20, &d->sin_addr, 4);
        memcpy(h + 24, &s->sin_port, 2);
        memcpy(h + 26, &d->sin_port, 2);
        body = 12;
    } else {
        const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
        h[12] = 0x21;
        h[13] = 0x21;
        memcpy(h + 16, &s->sin6_addr, 16);
        memcpy(h + 32, &d->sin6_addr, 16);
        memcpy(h + 48, &s->sin6_port, 2);
        memcpy(h + 50, &d->sin6_port, 2);
        body = 36;
    }
    h[14] = (unsigned char)(body >> 8);
    h[15] = (unsigned char)body;
    size_t n = PX_PROXY_V2_FIXED + body;
    if (n > cap)
        return -ENOSPC;
    memcpy(buf, h, n);
    return (ssize_t)n;
}
