/* Pass-through rules and the splice proxy (internal to src/net).
 *
 * A rule ("--forward ssh=127.0.0.1:22,proxy=v2") names a probe (sniff.h) and a
 * backend. When the sniffer picks a rule, px__proxy_start pairs the accepted
 * connection (the front) with an outbound one to the backend (the back, made
 * by px_conn_connect on the same worker), sends the backend an optional PROXY
 * header and the bytes the sniffer read, then moves bytes both ways with
 * splice(2) through one pipe per direction: zero copy, half-close forwarded
 * (a FIN one way becomes shutdown(SHUT_WR) on the other socket while the
 * other direction keeps flowing), backpressure both ways (a side is not read
 * while the pipe towards its peer is full and the peer's socket is too), an
 * idle timeout, a per-rule connection limit, and metrics per rule.
 * docs/one-port.md describes the options and metrics. */
#ifndef PX_NET_PROXY_H
#define PX_NET_PROXY_H

#include <stdatomic.h>

#include "net/sniff.h"
#include "plexus/net.h"

#define PX__FWD_NAME_MAX 64

typedef struct px__fwd_rule {
    char name[PX__FWD_NAME_MAX + 1]; /* metrics label and logs */
    char *spec;                      /* as configured (owned) */
    char *target;                    /* "127.0.0.1:22", "unix:/path" (owned) */
    px__probe_t probe;
    int proxy;              /* PROXY header to the backend: 0 none, 1 or 2 */
    unsigned max_conns;     /* open connections through the rule (all workers); 0 = no limit */
    uint64_t idle_ms;       /* no byte either way this long: close both; 0 = never */
    uint64_t connect_ms;    /* bound on connecting to the backend */
    atomic_uint open;       /* connections open through the rule, all workers */
    int m_in, m_out;        /* plexus_forward_bytes_total{rule,direction="in"|"out"} */
    int m_conns, m_open;    /* plexus_forward_connections_total, _open */
    int m_fail, m_rejected; /* plexus_forward_failures_total, _rejected_total */
} px__fwd_rule_t;

/** Defaults of a rule's options. */
#define PX__FWD_IDLE_MS    600000 /* 10 min, like nginx's stream proxy_timeout */
#define PX__FWD_CONNECT_MS 10000

/**
 * Parse and compile a rule: "NAME=TARGET[,OPTION=VALUE]...". NAME is a label
 * (letters, digits, '_', '-', '.') or itself a probe ("ssh", "tls-sni:HOST",
 * ...), TARGET "HOST:PORT" (numeric or localhost), "[V6]:PORT" or
 * "unix:PATH". Options: probe=PROBE (the rest of the text: a regex may hold
 * commas), proxy=v1|v2|none, max-conns=N, idle=DURATION, connect-timeout=
 * DURATION, window=BYTES (regex). Metrics are not registered yet. 0, or
 * -EINVAL with the reason in err; the rule needs px__fwd_rule_dispose either
 * way.
 */
int px__fwd_rule_parse(px__fwd_rule_t *r, const char *spec, char *err, size_t errlen);
/** Register the rule's metrics (at start-up). 0 or -ENOSPC. */
int px__fwd_rule_metrics(px__fwd_rule_t *r);
void px__fwd_rule_dispose(px__fwd_rule_t *r);

/**
 * Hand the accepted connection `c` to rule `r`: connect to its backend, send
 * the PROXY header (if the rule asks) and `first` (the sniffed bytes), then
 * proxy. Call from the chooser's on_read (which then returns every byte as
 * consumed: `first` was copied) or from its on_timeout (first = NULL). The
 * connection's protocol changes; the chooser must not touch it afterwards.
 * Over the rule's connection limit, or if the connect cannot even start, the
 * connection is closed (and counted). 0 if proxying began, else -errno.
 */
int px__proxy_start(px_conn_t *c, px__fwd_rule_t *r, const void *first, size_t len);

#endif
