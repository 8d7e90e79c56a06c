/* plexus — one port for many protocols: the sniffer, pass-through rules
 * (like sslh, inside the server) and the PROXY protocol.
 *
 * A listener whose first protocol is a sniffer (px_listen_opts_t.protocol =
 * the name given to px_sniff_register) looks at the first bytes of every
 * connection and picks: a pass-through rule (the bytes go, untouched, to
 * another server: SSH, OpenVPN, XMPP, TLS by SNI, HTTP by Host, a regex, or
 * the `default` rule for clients that stay silent), TLS (terminated here when
 * the sniffer has a TLS context), the HTTP/2 preface ("h2" when registered)
 * or HTTP/1.x ("http/1.1"). A PROXY protocol v1/v2 header is accepted first
 * from trusted addresses only. docs/one-port.md describes it all. */
#ifndef PLEXUS_SNIFF_H
#define PLEXUS_SNIFF_H

#include "plexus/net.h"

#ifdef __cplusplus
extern "C" {
#endif

struct px_tls; /* plexus/tls.h */

typedef struct px_sniff_opts {
    /** Pass-through rules, tried in this order, each
     * "NAME=TARGET[,OPTION=VALUE]..." (see px_forward_check). */
    const char *const *forward;
    unsigned nforward;
    /** Time a client may take to send enough bytes to decide (and the
     * silence after which the `default` rule applies). Default 3000. */
    uint64_t timeout_ms;
    /** Bytes looked at, at most; a decision is made when they are in
     * (a rule that needed more does not match). Default 16 KiB. */
    size_t max_bytes;
    /** Sources whose PROXY v1/v2 header is believed: "10.0.0.0/8",
     * "2001:db8::/32", "192.0.2.7" (a single address), or "unix" (peers on
     * unix sockets). A PROXY header from anyone else closes the connection. */
    const char *const *proxy_from;
    unsigned nproxy_from;
    /** TLS context to terminate TLS that no tls-sni rule claims (the TLS
     * module's px_tls_t); NULL: such connections are closed. */
    struct px_tls *tls;
    /** Plain HTTP is answered by the "tls-redirect" protocol (301 to https://
     * for GET/HEAD, 400 otherwise) instead of "http/1.1". */
    int tls_only;
} px_sniff_opts_t;

PX_EXTERN void px_sniff_opts_init(px_sniff_opts_t *o);

/**
 * Register a sniffer under `name` (a chooser protocol; name listeners after
 * it). Rules are parsed and compiled, and their metrics registered, now.
 * Several sniffers may be registered (e.g. one with TLS, one without); rules
 * with the same text share their connection limit and metrics. Before
 * px_server_start. 0, or -EINVAL (with the reason in err, naming the rule
 * or address), -ENOSPC, -ENOMEM.
 */
PX_EXTERN int px_sniff_register(px_server_t *s, const char *name, const px_sniff_opts_t *o,
                                char *err, size_t errlen);

/**
 * Check a pass-through rule without registering it: "NAME=TARGET[,OPT=VAL]...".
 *   NAME     a probe, which then also names the rule: ssh, openvpn, xmpp,
 *            tls-sni:HOST, http-host:HOST (HOST exact or *.suffix),
 *            regex:ERE (POSIX extended), default; or a label (letters,
 *            digits, '_', '-', '.') with a probe=... option
 *   TARGET   HOST:PORT (numeric address or localhost), [V6]:PORT, unix:PATH
 *   options  proxy=v1|v2|none   PROXY header sent to the backend (none)
 *            max-conns=N        open connections through the rule (0 = no limit)
 *            idle=DURATION      no byte either way this long closes both (10m; 0 = never)
 *            connect-timeout=DURATION   bound on reaching the backend (10s)
 *            window=BYTES       bytes a regex probe looks at (256; 1..4096)
 *            probe=PROBE        the probe, if NAME is a label; last option (a
 *                               regex may contain commas)
 * 0, or -EINVAL with the reason in err.
 */
PX_EXTERN int px_forward_check(const char *spec, char *err, size_t errlen);

/** Check a --proxy-protocol-from value (CIDR, address or "unix"). 0 or -EINVAL. */
PX_EXTERN int px_proxy_from_check(const char *cidr, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
