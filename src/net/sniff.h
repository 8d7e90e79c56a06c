/* The sniffer (internal to src/net): what the first bytes of a connection are.
 *
 * Two parts. The pure part (no I/O, no allocation) decides from bytes:
 * px__sniff_decide() and the TLS ClientHello parser px__sniff_hello_sni(). The
 * "sniff" chooser protocol (sniff.c, registered by px_sniff_register in
 * plexus/sniff.h) reads the first bytes of each connection, accepts a PROXY
 * header from trusted sources, asks px__sniff_decide, and acts: start
 * "http/1.1" (or "tls-redirect", or "h2"), push TLS (px__tls_push), or hand
 * the connection to the pass-through proxy (proxy.c). docs/one-port.md
 * describes the behaviour; docs/internals/connections.md the chooser pattern.
 */
#ifndef PX_NET_SNIFF_H
#define PX_NET_SNIFF_H

#include <regex.h>
#include <sys/types.h>

#include "plexus/common.h"

/* What a pass-through rule looks for in the first bytes. */
enum px__probe_kind {
    PX__PROBE_SSH,       /* "SSH-2.0-" or "SSH-1.99-" */
    PX__PROBE_OPENVPN,   /* TCP: 2-byte length, then P_CONTROL_HARD_RESET_CLIENT_V2/V3 */
    PX__PROBE_XMPP,      /* "<?xml" or "<stream:stream" with a jabber namespace */
    PX__PROBE_TLS_SNI,   /* a TLS ClientHello whose server_name matches host */
    PX__PROBE_HTTP_HOST, /* an HTTP/1.x request whose Host header matches host */
    PX__PROBE_REGEX,     /* POSIX extended regex over the first `window` bytes */
    PX__PROBE_DEFAULT,   /* never matches bytes: the rule for clients silent past the timeout */
};

#define PX__SNI_MAX 255 /* longest host name a probe compares (DNS: 253) */

typedef struct px__probe {
    int kind;
    /* TLS_SNI, HTTP_HOST: the name, lower case. With `wildcard` ("*.example.com"),
     * host is the suffix ".example.com": any name ending with it (one or more
     * labels before) matches. */
    int wildcard;
    size_t host_len;
    char host[PX__SNI_MAX + 1];
    /* REGEX: compiled once (REG_EXTENDED | REG_NOSUB); applied to the first
     * `window` bytes only (or all bytes so far, if fewer). */
    regex_t re;
    size_t window;
} px__probe_t;

/** Compile probe text into *p: "ssh", "openvpn", "xmpp", "default",
 * "tls-sni:HOST", "http-host:HOST" (HOST exact or "*.suffix"), "regex:ERE".
 * `window` is for regex (0 = PX__REGEX_WINDOW). 0, or -EINVAL with a reason
 * in err. A regex probe must be freed with px__probe_dispose. */
int px__probe_compile(px__probe_t *p, const char *text, size_t window, char *err, size_t errlen);
void px__probe_dispose(px__probe_t *p);

#define PX__REGEX_WINDOW     256  /* default bytes a regex probe looks at */
#define PX__REGEX_WINDOW_MAX 4096 /* at most */

/* What px__sniff_decide says. */
enum px__sniff_verdict {
    PX__SNIFF_MORE,    /* need more bytes (never when `final`) */
    PX__SNIFF_RULE,    /* pass-through rule `rule` matched */
    PX__SNIFF_HTTP,    /* an HTTP/1.x request (by its method) */
    PX__SNIFF_H2,      /* the HTTP/2 connection preface */
    PX__SNIFF_TLS,     /* a TLS record (0x16 0x03) that no tls-sni rule claimed */
    PX__SNIFF_UNKNOWN, /* nothing recognises these bytes */
};

typedef struct px__sniff_result {
    int verdict;
    int rule; /* PX__SNIFF_RULE: index into the probes */
} px__sniff_result_t;

/**
 * Decide what `data` (the first `len` bytes of a connection) is. Probes are
 * tried in order (DEFAULT ones are skipped), then the built-in protocols: a
 * TLS record, the HTTP/2 preface, an HTTP/1.x method. A probe that could
 * still match with more bytes (a ClientHello or a request head cut short)
 * stops the walk with PX__SNIFF_MORE, so configuration order is respected.
 * Bytes nothing recognises wait for more while a regex probe exists (it may
 * match a longer prefix). `final` (the byte limit or the timeout was
 * reached): no more bytes will come, so "could match later" counts as no.
 * Pure; returns out->verdict.
 */
int px__sniff_decide(const px__probe_t *const *probes, unsigned n, const void *data, size_t len,
                     int final, px__sniff_result_t *out);

/**
 * The server_name of a TLS ClientHello at the start of `data` (TLS records:
 * the hello may span several records, and `data` may end anywhere). Returns 1
 * with the host name copied to `sni` (NUL-terminated, *sni_len set; names
 * longer than PX__SNI_MAX are an error), 0 if the hello has no server_name
 * (or no host_name entry in it), PX_PARSE_INCOMPLETE, or PX_PARSE_ERROR (not
 * a well-formed ClientHello). Pure.
 */
int px__sniff_hello_sni(const void *data, size_t len, char sni[PX__SNI_MAX + 1], size_t *sni_len);

/** Does `name` (any case) match the probe's host pattern? */
int px__probe_host_match(const px__probe_t *p, const char *name, size_t len);

#endif
