/* wsload: epoll WebSocket / pub-sub load client. Internal header shared by the
 * tool's files; standalone (libc, pthreads, libm only, no libplexus).
 *
 *   main.c    options, run orchestration (phases), server CPU/RSS sampling, report
 *   engine.c  per-thread epoll loop, connection state machine, scenario logic
 *   ws.c      upgrade request/response, client frame encoder, server frame parser
 *   proto.c   protocol vtables: ws-echo, ws-broadcast, nats-ws, redis, plexus-hub, pusher
 *   stats.c   buffers, histogram, /proc readers, clock
 *   sha1.c    SHA-1 + base64 for Sec-WebSocket-Accept, HMAC-SHA256 for Pusher signatures
 */
#ifndef WSLOAD_H
#define WSLOAD_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WL_MAX_SERVER_PIDS 16
#define WL_WS_KEY_LEN      24 /* base64 of 16 random bytes */
#define WL_WS_ACCEPT_LEN   28 /* base64 of a 20-byte SHA-1 */
/* Payload header: 12 hex digits send time (ns since start, 48 bits) + 12 hex
 * digits sequence number; padding 'x' up to --size. Printable so it is valid in
 * text frames, NATS, RESP and (later) JSON strings. */
#define WL_PAYLOAD_HDR 24

/* ---- clock, PRNG ------------------------------------------------------------ */

/** CLOCK_MONOTONIC in nanoseconds. */
uint64_t wl_now_ns(void);

/** xorshift64* state; never zero. */
typedef struct wl_rng {
    uint64_t s;
} wl_rng_t;

static inline uint64_t wl_rng_next(wl_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* ---- growable byte buffer (aborts on OOM: a bench tool, sizes are bounded) ---- */

typedef struct wl_buf {
    uint8_t *data;
    size_t len; /* bytes in use, from data[0] */
    size_t cap;
} wl_buf_t;

/** Make room for at least `extra` more bytes after len. */
void wl_buf_reserve(wl_buf_t *b, size_t extra);
void wl_buf_append(wl_buf_t *b, const void *p, size_t n);
void wl_buf_append_str(wl_buf_t *b, const char *s);
/** Append the decimal digits of v. */
void wl_buf_append_u64(wl_buf_t *b, uint64_t v);
/** Drop n bytes from the front. */
void wl_buf_consume(wl_buf_t *b, size_t n);
/** Release memory; the buffer is empty and reusable afterwards. */
void wl_buf_free(wl_buf_t *b);

/* ---- latency histogram: log-linear, 1/64 relative precision, values in ns ---- */

#define WL_HIST_MBITS   6
#define WL_HIST_BUCKETS ((2u << WL_HIST_MBITS) + (63u - WL_HIST_MBITS) * (1u << WL_HIST_MBITS))

typedef struct wl_hist {
    uint64_t count, sum, min, max;
    uint64_t b[WL_HIST_BUCKETS];
} wl_hist_t;

void wl_hist_init(wl_hist_t *h);
void wl_hist_add(wl_hist_t *h, uint64_t v);
void wl_hist_merge(wl_hist_t *dst, const wl_hist_t *src);
/** Value at percentile p (0..100]; 0 when empty. */
uint64_t wl_hist_pct(const wl_hist_t *h, double p);

/* ---- /proc sampling ---------------------------------------------------------- */

/** utime+stime of a process (all its threads) in clock ticks. 0 or -errno. */
int wl_proc_cpu_ticks(pid_t pid, uint64_t *ticks);
/** VmRSS of a process in KiB. 0 or -errno. */
int wl_proc_rss_kb(pid_t pid, uint64_t *kb);

/* ---- SHA-1 / base64 / handshake -------------------------------------------- */

void wl_sha1(const void *data, size_t len, uint8_t out[20]);
/** Writes 4*ceil(len/3) chars plus a NUL; returns the char count. */
size_t wl_base64(const uint8_t *in, size_t len, char *out);
/** hex(HMAC-SHA256(key, data)), NUL-terminated (Pusher channel signatures). */
void wl_hmac_sha256_hex(const char *key, const void *data, size_t len, char out[65]);
/** accept = base64(SHA1(key + RFC 6455 GUID)), NUL-terminated. */
void wl_ws_accept_for_key(const char key[WL_WS_KEY_LEN], char accept[WL_WS_ACCEPT_LEN + 1]);

/* ---- configuration ------------------------------------------------------------ */

typedef enum wl_scenario { WL_SC_ECHO, WL_SC_FANOUT, WL_SC_IDLE } wl_scenario_t;

struct wl_proto;

typedef struct wl_config {
    wl_scenario_t scenario;
    const struct wl_proto *proto;
    struct sockaddr_in dst; /* always inside 127.0.0.0/8 */
    char host[64];
    uint16_t port;
    const char *path;                       /* upgrade request target */
    const char *subject;                    /* fanout/idle subject or channel */
    const char *label;                      /* free text copied into RESULT */
    const char *pusher_key, *pusher_secret; /* --proto pusher: the app's key and secret */
    uint32_t conns; /* echo/idle: connections; fanout: subscribers (+1 publisher) */
    unsigned threads;
    uint32_t size;   /* payload bytes, >= WL_PAYLOAD_HDR */
    uint32_t window; /* echo: in flight per conn; fanout: published but not yet received
                        by the slowest subscriber */
    double rate;     /* fanout publish rate, msgs/s; 0 = as fast as the window allows */
    double duration, warmup, drain, connect_timeout, settle;
    uint32_t connect_burst; /* handshakes in progress at once, all threads together */
    unsigned src_addrs;     /* bind sources 127.0.0.1..127.0.0.<n>; 0 = no bind */
    /* fanout: subscribers spread round-robin over `port` and these (several nodes of one
     * cluster); the publisher uses `port` */
    uint16_t sub_ports[8];
    unsigned n_sub_ports;
    pid_t server_pids[WL_MAX_SERVER_PIDS];
    unsigned n_server_pids;
    bool text; /* send text frames instead of binary (WebSocket protocols) */
    bool quiet;
} wl_config_t;

/* ---- protocol vtable ------------------------------------------------------------
 *
 * A protocol turns application messages into bytes and back. The engine owns the
 * transport: TCP connect, for WL_PROTO_WS the HTTP upgrade and RFC 6455 framing
 * (each call's output becomes exactly one masked client frame; received frames
 * are unmasked, control frames answered, fragments reassembled). See README.md. */

typedef enum wl_role {
    WL_ROLE_ECHO, /* sends messages and expects each one back */
    WL_ROLE_SUB,  /* fanout subscriber: receives publications */
    WL_ROLE_PUB,  /* fanout publisher: sends; what it receives is ignored */
    WL_ROLE_IDLE, /* connected (and subscribed where the protocol needs it), silent */
} wl_role_t;

/** What the protocol knows about one connection. */
typedef struct wl_pconn {
    wl_role_t role;
    uint32_t id; /* global connection index, 0..total-1 (fanout: 0 is the publisher) */
    const wl_config_t *cfg;
    uint64_t user; /* free for the protocol: parser state, a handle, ... */
} wl_pconn_t;

typedef enum wl_ev_kind {
    WL_EV_NONE,     /* consumed protocol traffic without meaning to the engine */
    WL_EV_DELIVERY, /* an application payload arrived: echo reply or publication */
    WL_EV_READY,    /* one of the acknowledgements setup() asked to wait for */
} wl_ev_kind_t;

typedef struct wl_event {
    wl_ev_kind_t kind;
    const uint8_t *payload; /* WL_EV_DELIVERY: points into the parse input; valid
                               only until parse() is called again */
    size_t len;
} wl_event_t;

enum {
    WL_PROTO_WS = 1u << 0,     /* HTTP/1.1 upgrade, then WebSocket frames */
    WL_PROTO_STREAM = 1u << 1, /* parse() sees a byte stream (the concatenated frame
                                  payloads, or raw TCP) and may get partial units;
                                  otherwise it gets exactly one whole WS message */
    WL_PROTO_TEXT = 1u << 2,   /* send text frames (else binary unless --text) */
};

typedef struct wl_proto {
    const char *name;
    unsigned flags;
    const char *default_path; /* WL_PROTO_WS: request target when --path is absent */
    unsigned scenarios;       /* bit (1u << wl_scenario_t) for each supported scenario */
    /** Extra upgrade request header lines, each ending in CRLF, or NULL
     * (e.g. "Sec-WebSocket-Protocol: plexus.hub.v1\r\n"). */
    const char *upgrade_headers;
    /** Transport is open (after the 101 for WS). Append the protocol's opening
     * bytes (login, subscribe, ...) to out; return how many WL_EV_READY events to
     * wait for before the connection counts as established (0 = established now).
     * NULL = nothing to send, established at once. */
    int (*setup)(wl_pconn_t *pc, wl_buf_t *out);
    /** Append one application message carrying payload[0..len): an echo request
     * for WL_ROLE_ECHO, a publication for WL_ROLE_PUB. */
    void (*encode)(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out);
    /** Parse the next unit of in[0..len). Returns bytes consumed (> 0), 0 when
     * more input is needed (stream protocols only) or -1 on a protocol error.
     * Fills *ev (kind WL_EV_NONE by default). May append replies such as a PONG
     * to out. Message protocols must consume the whole message. On -1, ev->payload
     * and ev->len may point at the server's error text, quoted in the report. */
    ssize_t (*parse)(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev, wl_buf_t *out);
} wl_proto_t;

/** Look a protocol up by name; NULL if unknown. */
const wl_proto_t *wl_proto_find(const char *name);
/** Comma-separated list of protocol names, for --help. */
const char *wl_proto_names(void);

/* ---- WebSocket transport helpers (ws.c) ------------------------------------------ */

enum {
    WL_WS_CONT = 0x0,
    WL_WS_TEXT = 0x1,
    WL_WS_BIN = 0x2,
    WL_WS_CLOSE = 0x8,
    WL_WS_PING = 0x9,
    WL_WS_PONG = 0xa
};

typedef struct wl_ws_frame {
    uint8_t opcode;
    bool fin;
    uint8_t *payload; /* into the parse input, unmasked in place */
    size_t len;
} wl_ws_frame_t;

/** Append the upgrade request; writes the key's expected accept value. */
void wl_ws_build_request(wl_buf_t *out, const wl_config_t *cfg, wl_rng_t *rng,
                         char accept[WL_WS_ACCEPT_LEN + 1]);
/** Check the response head in[0..len). Returns the head length (through the empty
 * line), 0 if incomplete, -1 if it is not a valid 101 with the expected accept.
 * On -1, *why says what was wrong (static string). */
ssize_t wl_ws_check_response(const uint8_t *in, size_t len, const char *accept, const char **why);
/** Append one masked client frame. */
void wl_ws_frame_append(wl_buf_t *out, unsigned opcode, const uint8_t *payload, size_t len,
                        uint32_t mask);
/** Parse one server frame from in[0..len); returns its size, 0 if incomplete,
 * -1 on a protocol violation. Masked payloads are unmasked in place. */
ssize_t wl_ws_frame_parse(uint8_t *in, size_t len, wl_ws_frame_t *f);

/* ---- payload ------------------------------------------------------------------- */

/** Write the header (ts, seq) into p[0..WL_PAYLOAD_HDR). */
void wl_payload_put(uint8_t *p, uint64_t ts, uint64_t seq);
/** Read it back; false if the payload is short or not ours. */
bool wl_payload_get(const uint8_t *p, size_t len, uint64_t *ts, uint64_t *seq);

/* ---- engine (engine.c) ------------------------------------------------------------ */

enum { WL_PHASE_CONNECT, WL_PHASE_RUN, WL_PHASE_DRAIN, WL_PHASE_STOP };

typedef struct wl_conn wl_conn_t;

/** Per-thread counters, summed by main after join. */
typedef struct wl_counts {
    uint64_t msgs;        /* echo replies / deliveries received inside the measured window */
    uint64_t msgs_total;  /* ... over the whole run */
    uint64_t sent;        /* echo requests / publications sent, whole run */
    uint64_t sent_window; /* ... inside the measured window */
    uint64_t lost;        /* sequence gaps: a later message arrived, this one never did */
    uint64_t unanswered;  /* still missing when the drain period ended */
    uint64_t dup, bad_payload, proto_errors;
    uint64_t conn_failed, conn_timeout, handshake_failed, closed_early;
} wl_counts_t;

typedef struct wl_thread {
    struct wl_run *run;
    unsigned idx;
    pthread_t tid;
    int epfd;
    int evfd;         /* wakes the loop: phase changes, publisher window */
    wl_conn_t *conns; /* conns[i] is global connection idx + i * threads */
    uint32_t nconns;
    uint32_t next_open;    /* first local index not yet opened */
    uint32_t scan_lo;      /* below this, no local connection is still handshaking */
    uint32_t opening;      /* opened but neither established nor failed */
    uint32_t burst;        /* this thread's share of --connect-burst */
    int phase;             /* cached run->phase for this loop iteration */
    uint64_t now;          /* wl_now_ns() of the last read / loop turn */
    uint64_t mstart, mend; /* copy of the measured window, set when RUN is seen */
    wl_conn_t *pub;        /* the publisher if it lives on this thread (thread 0) */
    uint64_t pub_seq_local;
    uint64_t pub_t0; /* rate pacing origin */
    wl_rng_t rng;
    wl_counts_t c;
    wl_hist_t hist; /* RTT (echo) or publish-to-delivery (fanout) latencies, ns */
    uint8_t *rdbuf; /* read scratch */
    size_t rdcap;
    wl_buf_t fout;    /* protocol output before framing */
    uint8_t *payload; /* --size bytes, padding prefilled */
    /* fanout subscribers on this thread: waiting[s & ring_mask] = number of live
     * subscribers whose next expected sequence is s; all live values lie in
     * [sub_min, published] and published - sub_min <= window < ring size. */
    uint32_t *waiting;
    uint64_t ring_mask;
    uint64_t sub_min_local;
    uint32_t subs_live;
    uint64_t inflight_local;  /* echo: sent but not yet returned, live conns */
    _Atomic uint64_t sub_min; /* published sub_min_local; UINT64_MAX if no live subs */
    _Atomic uint64_t inflight;
    _Atomic uint64_t received; /* c.msgs_total, published for the drain's progress check */
    uint64_t pub_wakeups;
    char first_error[224];
} wl_thread_t;

typedef struct wl_run {
    const wl_config_t *cfg;
    uint32_t total; /* connections including the publisher */
    uint64_t t_base;
    _Atomic int phase;
    _Atomic uint64_t t_mstart, t_mend; /* measured window, wl_now_ns() */
    _Atomic uint32_t established, failed;
    _Atomic uint64_t pub_seq; /* publications sent so far (next sequence number) */
    _Atomic int pub_blocked;  /* publisher waits for a subscriber to advance */
    _Atomic int pub_state;    /* 0 connecting, 1 established, -1 failed/closed */
    wl_thread_t *threads;
    unsigned nthreads;
} wl_run_t;

/** Allocate per-thread state and start the worker threads (phase CONNECT). */
int wl_engine_start(wl_run_t *run);
/** Set the phase and wake every worker. */
void wl_engine_set_phase(wl_run_t *run, int phase);
/** Join workers (after WL_PHASE_STOP) and release their resources; counters and
 * histograms stay readable until wl_engine_free(). */
void wl_engine_join(wl_run_t *run);
void wl_engine_free(wl_run_t *run);
/** Echo: messages still in flight on live connections. */
uint64_t wl_engine_inflight(wl_run_t *run);
/** Fanout: smallest next-expected sequence over live subscribers (UINT64_MAX: none). */
uint64_t wl_engine_sub_min(wl_run_t *run);
/** Echo replies / deliveries received so far, all threads (approximate while running). */
uint64_t wl_engine_received(wl_run_t *run);

#endif
