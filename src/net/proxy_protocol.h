/* PROXY protocol v1 (text) and v2 (binary), as specified by HAProxy's
 * proxy-protocol.txt: a pure parser and two writers (internal to src/net).
 *
 * A load balancer in front of plexus prepends one header to a connection to
 * say who the client really is; plexus accepts it only from trusted sources
 * (--proxy-protocol-from, src/net/sniff.c). Towards a pass-through backend
 * plexus writes one itself (src/net/proxy.c), so the backend sees the client.
 *
 * Neither function allocates or does I/O. The parser follows the contract of
 * plexus/common.h: bytes consumed, PX_PARSE_INCOMPLETE or PX_PARSE_ERROR. */
#ifndef PX_NET_PROXY_PROTOCOL_H
#define PX_NET_PROXY_PROTOCOL_H

#include <sys/socket.h>
#include <sys/types.h>

#include "plexus/common.h"

/** The longest v1 header, CRLF included (proxy-protocol.txt 2.1). */
#define PX_PROXY_V1_MAX 107
/** The fixed part of a v2 header: signature, version/command, family, length. */
#define PX_PROXY_V2_FIXED 16
/** What the writers may produce at most (v2 with IPv6 addresses: 16 + 36). */
#define PX_PROXY_WRITE_MAX PX_PROXY_V1_MAX

/** What a header says. */
typedef struct px_proxy_hdr {
    int version; /* 1 or 2 */
    /** No addresses to use: a v2 LOCAL command (health check from the balancer
     * itself), v1 "UNKNOWN", or a v2 family other than TCP over IPv4/IPv6
     * (UNIX, UDP, UNSPEC). The connection keeps its socket's addresses. */
    int local;
    /** Unless `local`: the client (src) and the address it connected to (dst),
     * AF_INET or AF_INET6, ports in network order as in a sockaddr. */
    struct sockaddr_storage src, dst;
} px_proxy_hdr_t;

/** Could `data` start a PROXY header? 1: yes, it does (the v1 "PROXY "
 * prefix or the whole v2 signature is there); 0: no (the first bytes differ
 * from both); PX_PARSE_INCOMPLETE: the bytes so far are a prefix of either. */
int px__proxy_detect(const void *data, size_t len);

/**
 * Parse one header at the start of `data`. Returns its length (> 0), with
 * *out filled; 0 if `data` does not start a PROXY header at all (see
 * px__proxy_detect); PX_PARSE_INCOMPLETE if more bytes are needed (never
 * beyond `max` bytes, nor PX_PROXY_V1_MAX for v1); PX_PARSE_ERROR if it is
 * malformed or longer than `max`. Strict: v1 addresses must parse as the
 * family says, ports 0..65535 in decimal, single spaces, CRLF; v2 needs
 * version 2, command LOCAL or PROXY, an address block as long as its family
 * requires, and well-formed TLVs after it (which are skipped).
 */
int px__proxy_parse(const void *data, size_t len, size_t max, px_proxy_hdr_t *out);

/**
 * Write a header for a connection from `src` to `dst` (both AF_INET, or both
 * AF_INET6; anything else, such as a unix socket client, gives "PROXY
 * UNKNOWN" / a v2 LOCAL header). Returns the length written (at most
 * PX_PROXY_WRITE_MAX), or -ENOSPC if `cap` is too small.
 */
ssize_t px__proxy_write_v1(char *buf, size_t cap, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst);
ssize_t px__proxy_write_v2(char *buf, size_t cap, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst);

#endif
