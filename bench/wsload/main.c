/* wsload: epoll WebSocket / pub-sub load client for side-by-side benchmarks.
 *
 *   wsload --scenario echo|fanout|idle --proto ws-echo|ws-broadcast|nats-ws|redis|plexus-hub
 *          --port P [--host 127.0.0.1] [--conns N] [--duration S] ...
 *
 * Run phases (main thread; workers in engine.c):
 *   CONNECT  open every connection (at most --connect-burst handshakes at once)
 *   RUN      warm-up, then the measured window [mstart, mend): server CPU and
 *            client CPU are sampled at both ends; idle samples RSS instead
 *   DRAIN    no new messages; wait for the ones in flight while they keep coming
 *            (--drain seconds without progress, DRAIN_CAP_S at most)
 *   STOP     workers close everything and exit; the report is printed
 * Exit status: 0 valid run, 1 invalid run (see "status"), 2 usage/setup error. */
#include "wsload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_CAP_S 60.0

static const char *scenario_name(wl_scenario_t s)
{
    switch (s) {
    case WL_SC_ECHO: return "echo";
    case WL_SC_FANOUT: return "fanout";
    case WL_SC_IDLE: return "idle";
    }
    return "?";
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: wsload --scenario echo|fanout|idle --proto NAME --port PORT [options]\n"
        "\n"
        "target (loopback only):\n"
        "  -H, --host ADDR          server address in 127.0.0.0/8 (127.0.0.1)\n"
        "  -P, --port PORT          server port (required)\n"
        "      --path PATH          WebSocket request target (per protocol: /echo,\n"
        "                           /broadcast, /, /ws)\n"
        "  -p, --proto NAME         %s\n"
        "      --subject NAME       fanout/idle subject or channel (wl.fanout)\n"
        "      --pusher-key K, --pusher-secret S  pusher: the app's key and secret, to sign\n"
        "                           private- and presence- subscriptions (app-key, app-secret;\n"
        "                           the path is /app/<key>?protocol=7)\n"
        "load:\n"
        "  -s, --scenario NAME      echo | fanout | idle\n"
        "  -c, --conns N            connections; fanout: subscribers, plus 1 publisher (100)\n"
        "  -t, --threads N          worker threads, one epoll each (1)\n"
        "      --size BYTES         payload size, >= %d (32)\n"
        "  -w, --window K           echo: messages in flight per connection; fanout:\n"
        "                           publications not yet received by the slowest\n"
        "                           subscriber (16)\n"
        "      --rate R             fanout: publish R msgs/s (default: as fast as the\n"
        "                           window allows)\n"
        "      --text               send text frames instead of binary\n"
        "timing (seconds):\n"
        "  -d, --duration S         measured interval / idle hold (10)\n"
        "      --warmup S           echo/fanout warm-up before measuring (2)\n"
        "      --settle S           idle: wait after the last connect before sampling RSS (1)\n"
        "      --drain S            after the run, wait for in-flight messages until none\n"
        "                           arrived for S seconds (5; at most 60 s in all)\n"
        "      --connect-timeout S  per-connection TCP + upgrade + setup deadline (10)\n"
        "      --connect-burst N    handshakes in progress at once (256)\n"
        "      --src-addrs N        spread sources over 127.0.0.1..127.0.0.N (254; 0 = no bind)\n"
        "measurement:\n"
        "      --sub-port PORT      fanout: also spread subscribers over PORT (repeatable,\n"
        "                           8 at most: nodes of a cluster); the publisher uses --port\n"
        "      --server-pid PID[,PID]  server processes to sample CPU (utime+stime, all\n"
        "                           threads) and RSS from; repeatable\n"
        "      --label TEXT         copied into the RESULT line\n"
        "  -q, --quiet              only the RESULT line\n"
        "  -h, --help\n"
        "\n"
        "The last output line is RESULT {json}. Exit status 0 = valid run, 1 = invalid\n"
        "(< 95%% connected, lost/duplicated/corrupt messages, dropped connections),\n"
        "2 = usage or setup error.\n",
        wl_proto_names(), WL_PAYLOAD_HDR);
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (try --help)\n", stderr);
    va_end(ap);
    exit(2);
}

static uint64_t parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
        die_usage("%s: expected an integer in [%llu, %llu], got '%s'", opt, (unsigned long long)min,
                  (unsigned long long)max, s);
    return v;
}

static double parse_secs(const char *opt, const char *s, double min)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < min || v > 86400)
        die_usage("%s: expected a number >= %g, got '%s'", opt, min, s);
    return v;
}

static void add_server_pids(wl_config_t *cfg, const char *arg)
{
    const char *p = arg;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char tmp[24];
        if (n == 0 || n >= sizeof(tmp))
            die_usage("--server-pid: bad list '%s'", arg);
        memcpy(tmp, p, n);
        tmp[n] = '\0';
        if (cfg->n_server_pids == WL_MAX_SERVER_PIDS)
            die_usage("--server-pid: at most %d processes", WL_MAX_SERVER_PIDS);
        cfg->server_pids[cfg->n_server_pids++] =
            (pid_t)parse_uint("--server-pid", tmp, 1, 1u << 30);
        p += n;
        if (*p == ',')
            p++;
    }
}

/* ---- sampling ------------------------------------------------------------------ */

typedef struct sample {
    uint64_t t;           /* wl_now_ns() */
    double server_cpu_s;  /* sum over --server-pid, NAN if any could not be read */
    double client_cpu_s;  /* getrusage(RUSAGE_SELF), all threads */
    double server_rss_kb; /* sum, NAN if unknown */
} sample_t;

static void take_sample(const wl_config_t *cfg, sample_t *s)
{
    static long hz;
    if (hz == 0)
        hz = sysconf(_SC_CLK_TCK);
    s->t = wl_now_ns();
    s->server_cpu_s = cfg->n_server_pids ? 0 : NAN;
    s->server_rss_kb = cfg->n_server_pids ? 0 : NAN;
    for (unsigned i = 0; i < cfg->n_server_pids; i++) {
        uint64_t ticks, kb;
        if (wl_proc_cpu_ticks(cfg->server_pids[i], &ticks) == 0)
            s->server_cpu_s += (double)ticks / (double)hz;
        else
            s->server_cpu_s = NAN;
        if (wl_proc_rss_kb(cfg->server_pids[i], &kb) == 0)
            s->server_rss_kb += (double)kb;
        else
            s->server_rss_kb = NAN;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->client_cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void sleep_secs(double s)
{
    sleep_until(wl_now_ns() + (uint64_t)(s * 1e9));
}

/* ---- JSON line ------------------------------------------------------------------ */

typedef struct jbuf {
    char s[4096];
    size_t n;
} jbuf_t;

static void jraw(jbuf_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jraw(jbuf_t *j, const char *fmt, ...)
{
    if (j->n >= sizeof(j->s))
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(j->s + j->n, sizeof(j->s) - j->n, fmt, ap);
    va_end(ap);
    if (r > 0)
        j->n += (size_t)r;
    if (j->n > sizeof(j->s) - 1)
        j->n = sizeof(j->s) - 1;
}

static void jkey(jbuf_t *j, const char *k)
{
    jraw(j, "%s\"%s\":", j->n > 1 ? "," : "", k);
}

static void jstr(jbuf_t *j, const char *k, const char *v)
{
    jkey(j, k);
    if (v == NULL) {
        jraw(j, "null");
        return;
    }
    jraw(j, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            jraw(j, "\\%c", *p);
        else if (*p < 0x20)
            jraw(j, "\\u%04x", *p);
        else
            jraw(j, "%c", *p);
    }
    jraw(j, "\"");
}

static void jnum(jbuf_t *j, const char *k, double v, int prec)
{
    jkey(j, k);
    if (isnan(v) || isinf(v))
        jraw(j, "null");
    else
        jraw(j, "%.*f", prec, v);
}

static void ju64(jbuf_t *j, const char *k, uint64_t v)
{
    jkey(j, k);
    jraw(j, "%llu", (unsigned long long)v);
}

static void jbool(jbuf_t *j, const char *k, bool v)
{
    jkey(j, k);
    jraw(j, "%s", v ? "true" : "false");
}

/* ---- main -------------------------------------------------------------------------- */

static void raise_nofile(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need)
        fprintf(stderr, "wsload: warning: fd limit %llu < %u needed; connections will fail\n",
                (unsigned long long)rl.rlim_cur, need);
}

enum {
    OPT_PATH = 256,
    OPT_SUBJECT,
    OPT_SIZE,
    OPT_RATE,
    OPT_TEXT,
    OPT_WARMUP,
    OPT_SETTLE,
    OPT_DRAIN,
    OPT_CTIMEOUT,
    OPT_CBURST,
    OPT_SRC,
    OPT_PID,
    OPT_SUBPORT,
    OPT_LABEL,
    OPT_PKEY,
    OPT_PSECRET,
};

/* idle: one connection opened, upgraded and closed before the baseline sample, so the
 * server's one-time costs (its first handshake initialising a library, per-worker caches)
 * are not charged to the connections measured. Every server gets the same warm-up. */
static void warm_up(const wl_config_t *cfg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg->port)};
    wl_buf_t req = {0};
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) == 1 &&
        connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        if (cfg->proto->flags & WL_PROTO_WS) {
            wl_rng_t rng = {.s = 0x9e3779b97f4a7c15ull};
            char accept[WL_WS_ACCEPT_LEN + 1];
            wl_ws_build_request(&req, cfg, &rng, accept);
            if (write(fd, req.data, req.len) == (ssize_t)req.len) {
                char in[4096];
                size_t got = 0;
                ssize_t r;
                while (got < sizeof in - 1 && (r = read(fd, in + got, sizeof in - 1 - got)) > 0) {
                    got += (size_t)r;
                    in[got] = '\0';
                    if (strstr(in, "\r\n\r\n"))
                        break;
                }
            }
        }
    }
    wl_buf_free(&req);
    close(fd);
    struct timespec pause = {.tv_nsec = 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

int main(int argc, char **argv)
{
    wl_config_t cfg = {
        .scenario = WL_SC_ECHO,
        .conns = 100,
        .threads = 1,
        .size = 32,
        .window = 16,
        .duration = 10,
        .warmup = 2,
        .drain = 5,
        .connect_timeout = 10,
        .settle = 1,
        .connect_burst = 256,
        .src_addrs = 254,
        .subject = "wl.fanout",
        .label = "",
        .pusher_key = "app-key",
        .pusher_secret = "app-secret",
    };
    const char *host = "127.0.0.1";
    const char *proto_name = NULL;
    bool have_scenario = false;
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, 's'},
        {"proto", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'P'},
        {"path", required_argument, NULL, OPT_PATH},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"conns", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"window", required_argument, NULL, 'w'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"text", no_argument, NULL, OPT_TEXT},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"settle", required_argument, NULL, OPT_SETTLE},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"connect-timeout", required_argument, NULL, OPT_CTIMEOUT},
        {"connect-burst", required_argument, NULL, OPT_CBURST},
        {"src-addrs", required_argument, NULL, OPT_SRC},
        {"server-pid", required_argument, NULL, OPT_PID},
        {"sub-port", required_argument, NULL, OPT_SUBPORT},
        {"label", required_argument, NULL, OPT_LABEL},
        {"pusher-key", required_argument, NULL, OPT_PKEY},
        {"pusher-secret", required_argument, NULL, OPT_PSECRET},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "s:p:H:P:c:t:w:d:qh", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            have_scenario = true;
            if (strcmp(optarg, "echo") == 0)
                cfg.scenario = WL_SC_ECHO;
            else if (strcmp(optarg, "fanout") == 0)
                cfg.scenario = WL_SC_FANOUT;
            else if (strcmp(optarg, "idle") == 0)
                cfg.scenario = WL_SC_IDLE;
            else
                die_usage("unknown scenario '%s'", optarg);
            break;
        case 'p': proto_name = optarg; break;
        case 'H': host = optarg; break;
        case 'P': cfg.port = (uint16_t)parse_uint("--port", optarg, 1, 65535); break;
        case OPT_PATH: cfg.path = optarg; break;
        case OPT_SUBJECT: cfg.subject = optarg; break;
        case 'c': cfg.conns = (uint32_t)parse_uint("--conns", optarg, 1, 10000000); break;
        case 't': cfg.threads = (unsigned)parse_uint("--threads", optarg, 1, 256); break;
        case OPT_SIZE:
            cfg.size = (uint32_t)parse_uint("--size", optarg, WL_PAYLOAD_HDR, 16u << 20);
            break;
        case 'w': cfg.window = (uint32_t)parse_uint("--window", optarg, 1, 1u << 20); break;
        case OPT_RATE: cfg.rate = parse_secs("--rate", optarg, 0); break;
        case OPT_TEXT: cfg.text = true; break;
        case 'd': cfg.duration = parse_secs("--duration", optarg, 0.1); break;
        case OPT_WARMUP: cfg.warmup = parse_secs("--warmup", optarg, 0); break;
        case OPT_SETTLE: cfg.settle = parse_secs("--settle", optarg, 0); break;
        case OPT_DRAIN: cfg.drain = parse_secs("--drain", optarg, 0); break;
        case OPT_CTIMEOUT:
            cfg.connect_timeout = parse_secs("--connect-timeout", optarg, 0.01);
            break;
        case OPT_CBURST:
            cfg.connect_burst = (uint32_t)parse_uint("--connect-burst", optarg, 1, 1000000);
            break;
        case OPT_SRC: cfg.src_addrs = (unsigned)parse_uint("--src-addrs", optarg, 0, 254); break;
        case OPT_PID: add_server_pids(&cfg, optarg); break;
        case OPT_SUBPORT:
            if (cfg.n_sub_ports == sizeof cfg.sub_ports / sizeof cfg.sub_ports[0])
                die_usage("--sub-port: at most 8");
            cfg.sub_ports[cfg.n_sub_ports++] = (uint16_t)parse_uint("--sub-port", optarg, 1, 65535);
            break;
        case OPT_LABEL: cfg.label = optarg; break;
        case OPT_PKEY: cfg.pusher_key = optarg; break;
        case OPT_PSECRET: cfg.pusher_secret = optarg; break;
        case 'q': cfg.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (!have_scenario)
        die_usage("--scenario is required");
    if (proto_name == NULL)
        die_usage("--proto is required");
    cfg.proto = wl_proto_find(proto_name);
    if (cfg.proto == NULL)
        die_usage("unknown protocol '%s' (have: %s)", proto_name, wl_proto_names());
    if (!(cfg.proto->scenarios & (1u << cfg.scenario)))
        die_usage("protocol %s does not support the %s scenario", cfg.proto->name,
                  scenario_name(cfg.scenario));
    if (cfg.port == 0)
        die_usage("--port is required");
    static char pusher_path[300];
    if (cfg.path == NULL && strcmp(cfg.proto->name, "pusher") == 0) {
        snprintf(pusher_path, sizeof pusher_path, "/app/%s?protocol=7&client=wsload&version=1",
                 cfg.pusher_key);
        cfg.path = pusher_path;
    }
    if (cfg.path == NULL)
        cfg.path = cfg.proto->default_path ? cfg.proto->default_path : "/";
    if (cfg.path[0] != '/' || strpbrk(cfg.path, " \r\n") != NULL)
        die_usage("--path must start with / and contain no spaces");
    if (cfg.subject[0] == '\0' || strpbrk(cfg.subject, " \t\r\n") != NULL)
        die_usage("--subject must be non-empty without whitespace");
    if (cfg.threads > cfg.conns + 1)
        cfg.threads = cfg.conns + 1;

    /* Loopback only: this tool must never load anything but this machine. */
    cfg.dst.sin_family = AF_INET;
    cfg.dst.sin_port = htons(cfg.port);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &cfg.dst.sin_addr) != 1 ||
        (ntohl(cfg.dst.sin_addr.s_addr) >> 24) != 127)
        die_usage("--host must be an IPv4 address in 127.0.0.0/8, got '%s'", host);
    snprintf(cfg.host, sizeof(cfg.host), "%s", host);

    for (unsigned i = 0; i < cfg.n_server_pids; i++) {
        uint64_t ticks;
        if (wl_proc_cpu_ticks(cfg.server_pids[i], &ticks) != 0) {
            fprintf(stderr, "wsload: --server-pid %d: no such process\n", (int)cfg.server_pids[i]);
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    wl_run_t run = {.cfg = &cfg};
    run.total = cfg.conns + (cfg.scenario == WL_SC_FANOUT ? 1 : 0);
    raise_nofile(run.total + 32 + 2 * cfg.threads);
    run.t_base = wl_now_ns();
    atomic_init(&run.phase, WL_PHASE_CONNECT);

    if (!cfg.quiet) {
        printf("wsload: %s over %s, %u connection(s)%s to %s:%u%s, %u thread(s)\n",
               scenario_name(cfg.scenario), cfg.proto->name, cfg.conns,
               cfg.scenario == WL_SC_FANOUT ? " + 1 publisher" : "", cfg.host, cfg.port,
               (cfg.proto->flags & WL_PROTO_WS) ? cfg.path : "", cfg.threads);
        fflush(stdout);
    }

    sample_t s0, s1, s2;
    if (cfg.scenario == WL_SC_IDLE)
        warm_up(&cfg);
    take_sample(&cfg, &s0); /* RSS before the measured connections */
    int err = wl_engine_start(&run);
    if (err != 0) {
        fprintf(stderr, "wsload: cannot start workers: %s\n", strerror(-err));
        return 2;
    }

    /* ---- CONNECT: wait until every connection is established or failed. A stall
     * (no progress for connect_timeout + 2 s) ends the wait; stragglers fail. */
    uint64_t t_conn0 = wl_now_ns(), last_change = t_conn0, next_note = t_conn0 + 1000000000ull;
    uint32_t last_done = 0;
    for (;;) {
        uint32_t est = atomic_load(&run.established), fail = atomic_load(&run.failed);
        uint64_t now = wl_now_ns();
        if (est + fail >= run.total)
            break;
        if (est + fail != last_done) {
            last_done = est + fail;
            last_change = now;
        } else if (now - last_change > (uint64_t)((cfg.connect_timeout + 2) * 1e9)) {
            fprintf(stderr, "wsload: connecting stalled at %u/%u\n", est + fail, run.total);
            break;
        }
        if (!cfg.quiet && now >= next_note) {
            printf("  connecting: %u established, %u failed of %u\n", est, fail, run.total);
            fflush(stdout);
            next_note = now + 1000000000ull;
        }
        sleep_secs(0.01);
    }
    double connect_s = (double)(wl_now_ns() - t_conn0) / 1e9;
    bool pub_ok = cfg.scenario != WL_SC_FANOUT || atomic_load(&run.pub_state) == 1;
    /* Too few participants: the run is invalid whatever happens next; stop now. */
    uint32_t participants =
        atomic_load(&run.established) - (cfg.scenario == WL_SC_FANOUT && pub_ok ? 1 : 0);
    bool enough = (double)participants >= 0.95 * cfg.conns;

    bool ran = pub_ok && enough;
    double window_s = 0;
    uint64_t pub_total = 0;
    if (!pub_ok || !enough) {
        if (!cfg.quiet)
            printf("  connect phase failed: not running the scenario\n");
        wl_engine_set_phase(&run, WL_PHASE_STOP);
        take_sample(&cfg, &s1);
        s2 = s1;
    } else if (cfg.scenario == WL_SC_IDLE) {
        wl_engine_set_phase(&run, WL_PHASE_RUN);
        sleep_secs(cfg.settle);
        take_sample(&cfg, &s1);
        sleep_secs(cfg.duration);
        take_sample(&cfg, &s2);
        window_s = (double)(s2.t - s1.t) / 1e9;
        wl_engine_set_phase(&run, WL_PHASE_STOP);
    } else {
        uint64_t mstart = wl_now_ns() + (uint64_t)(cfg.warmup * 1e9);
        uint64_t mend = mstart + (uint64_t)(cfg.duration * 1e9);
        atomic_store(&run.t_mstart, mstart);
        atomic_store(&run.t_mend, mend);
        wl_engine_set_phase(&run, WL_PHASE_RUN);
        sleep_until(mstart);
        take_sample(&cfg, &s1);
        sleep_until(mend);
        take_sample(&cfg, &s2);
        window_s = (double)(mend - mstart) / 1e9;
        wl_engine_set_phase(&run, WL_PHASE_DRAIN);
        /* Wait while messages keep arriving: give up after --drain seconds without
         * progress, or after DRAIN_CAP_S in all (slow servers can be seconds behind). */
        uint64_t t_drain = wl_now_ns(), last_progress = t_drain;
        uint64_t received = wl_engine_received(&run);
        for (;;) {
            bool done = cfg.scenario == WL_SC_ECHO
                            ? wl_engine_inflight(&run) == 0
                            : wl_engine_sub_min(&run) >= atomic_load(&run.pub_seq);
            if (done)
                break;
            uint64_t now = wl_now_ns(), r = wl_engine_received(&run);
            if (r != received) {
                received = r;
                last_progress = now;
            }
            if (now - last_progress > (uint64_t)(cfg.drain * 1e9) ||
                now - t_drain > (uint64_t)(DRAIN_CAP_S * 1e9))
                break;
            sleep_secs(0.005);
        }
        wl_engine_set_phase(&run, WL_PHASE_STOP);
    }
    wl_engine_join(&run);
    pub_total = atomic_load(&run.pub_seq);

    /* ---- aggregate ---- */
    wl_counts_t sum = {0};
    static wl_hist_t hist;
    wl_hist_init(&hist);
    const char *first_error = NULL;
    uint64_t pub_wakeups = 0;
    for (unsigned k = 0; k < run.nthreads; k++) {
        wl_thread_t *t = &run.threads[k];
        const wl_counts_t *c = &t->c;
        sum.msgs += c->msgs;
        sum.msgs_total += c->msgs_total;
        sum.sent += c->sent;
        sum.sent_window += c->sent_window;
        sum.lost += c->lost;
        sum.unanswered += c->unanswered;
        sum.dup += c->dup;
        sum.bad_payload += c->bad_payload;
        sum.proto_errors += c->proto_errors;
        sum.conn_failed += c->conn_failed;
        sum.conn_timeout += c->conn_timeout;
        sum.handshake_failed += c->handshake_failed;
        sum.closed_early += c->closed_early;
        pub_wakeups += t->pub_wakeups;
        wl_hist_merge(&hist, &t->hist);
        if (first_error == NULL && t->first_error[0] != '\0')
            first_error = t->first_error;
    }
    uint32_t established = atomic_load(&run.established);
    uint32_t failed = atomic_load(&run.failed);
    /* Participants excluding the fanout publisher. */
    uint32_t est_conns = established - (cfg.scenario == WL_SC_FANOUT && pub_ok ? 1 : 0);

    double server_cpu = s2.server_cpu_s - s1.server_cpu_s;
    double client_cpu = s2.client_cpu_s - s1.client_cpu_s;
    double rate = window_s > 0 ? (double)sum.msgs / window_s : 0;
    double per_cpu = server_cpu > 0 ? (double)sum.msgs / server_cpu : NAN;
    double pub_rate = window_s > 0 ? (double)sum.sent_window / window_s : 0;
    double rss_per_conn = NAN, rss_per_conn_end = NAN;
    if (cfg.scenario == WL_SC_IDLE && est_conns > 0) {
        rss_per_conn = (s1.server_rss_kb - s0.server_rss_kb) * 1024.0 / est_conns;
        rss_per_conn_end = (s2.server_rss_kb - s0.server_rss_kb) * 1024.0 / est_conns;
    }
    bool measures_msgs = cfg.scenario != WL_SC_IDLE;
    double p50 = (double)wl_hist_pct(&hist, 50) / 1e3, p90 = (double)wl_hist_pct(&hist, 90) / 1e3,
           p99 = (double)wl_hist_pct(&hist, 99) / 1e3,
           p999 = (double)wl_hist_pct(&hist, 99.9) / 1e3;
    double mean = hist.count ? (double)hist.sum / (double)hist.count / 1e3 : NAN;
    double maxv = hist.count ? (double)hist.max / 1e3 : NAN;
    if (!measures_msgs || hist.count == 0)
        p50 = p90 = p99 = p999 = NAN;
    uint64_t errors =
        sum.lost + sum.unanswered + sum.dup + sum.bad_payload + sum.proto_errors + sum.closed_early;

    char reason[256] = "";
    size_t rn = 0;
#define REASON(...)                                                                                \
    do {                                                                                           \
        if (rn < sizeof(reason))                                                                   \
            rn += (size_t)snprintf(reason + rn, sizeof(reason) - rn, "%s", rn ? "; " : "");        \
        if (rn < sizeof(reason))                                                                   \
            rn += (size_t)snprintf(reason + rn, sizeof(reason) - rn, __VA_ARGS__);                 \
    } while (0)
    if (!pub_ok)
        REASON("publisher not connected");
    if ((double)est_conns < 0.95 * cfg.conns)
        REASON("only %u of %u connections established", est_conns, cfg.conns);
    if (sum.lost)
        REASON("%llu messages lost", (unsigned long long)sum.lost);
    if (sum.unanswered)
        REASON("%llu messages still missing after the drain", (unsigned long long)sum.unanswered);
    if (sum.dup)
        REASON("%llu duplicated", (unsigned long long)sum.dup);
    if (sum.bad_payload || sum.proto_errors)
        REASON("protocol errors");
    if (sum.closed_early)
        REASON("%llu connections dropped", (unsigned long long)sum.closed_early);
    if (measures_msgs && ran && sum.msgs == 0)
        REASON("no message measured");
    if (cfg.n_server_pids && isnan(server_cpu))
        REASON("server process vanished");
#undef REASON
    bool valid = rn == 0;

    if (!cfg.quiet) {
        printf("  connections  %u established, %u failed (%llu connect, %llu timeout, %llu "
               "handshake) in %.2f s\n",
               established, failed, (unsigned long long)sum.conn_failed,
               (unsigned long long)sum.conn_timeout, (unsigned long long)sum.handshake_failed,
               connect_s);
        if (first_error != NULL)
            printf("  first error  %s\n", first_error);
        if (measures_msgs && ran) {
            printf("  measured     %.2f s after %.2f s warm-up\n", window_s, cfg.warmup);
            if (cfg.scenario == WL_SC_ECHO)
                printf("  echo         %llu replies, %.0f msg/s (%u B, window %u)\n",
                       (unsigned long long)sum.msgs, rate, cfg.size, cfg.window);
            else
                printf("  fanout       %llu published (%.0f/s), %llu deliveries, %.0f "
                       "deliveries/s to %u subscribers\n",
                       (unsigned long long)pub_total, pub_rate, (unsigned long long)sum.msgs, rate,
                       est_conns);
            if (hist.count)
                printf("  latency us   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  "
                       "mean %.1f\n",
                       p50, p90, p99, p999, maxv, mean);
        }
        if (cfg.scenario == WL_SC_IDLE && ran) {
            printf("  server RSS   %.0f KiB before, %.0f KiB after connecting, %.0f KiB after "
                   "%.1f s hold\n",
                   s0.server_rss_kb, s1.server_rss_kb, s2.server_rss_kb, window_s);
            printf("  per conn     %.0f bytes (%.0f at end of hold)\n", rss_per_conn,
                   rss_per_conn_end);
        }
        if (cfg.n_server_pids)
            printf("  server CPU   %.2f s (%.0f%% of one core)\n", server_cpu,
                   window_s > 0 ? 100 * server_cpu / window_s : 0.0);
        if (measures_msgs && !isnan(per_cpu))
            printf("  per server-CPU-s  %.0f %s\n", per_cpu,
                   cfg.scenario == WL_SC_ECHO ? "echoes" : "deliveries");
        double util = window_s > 0 ? client_cpu / window_s : 0;
        printf("  client CPU   %.2f s (%.0f%% of %u thread(s))%s\n", client_cpu, 100 * util,
               cfg.threads,
               measures_msgs && util > 0.9 * cfg.threads
                   ? "  <- client-bound: add --threads or cores"
                   : "");
        printf("  errors       lost %llu, unanswered %llu, dup %llu, bad payload %llu, protocol "
               "%llu, dropped %llu\n",
               (unsigned long long)sum.lost, (unsigned long long)sum.unanswered,
               (unsigned long long)sum.dup, (unsigned long long)sum.bad_payload,
               (unsigned long long)sum.proto_errors, (unsigned long long)sum.closed_early);
        printf("  status       %s%s%s\n", valid ? "valid" : "INVALID", valid ? "" : ": ", reason);
    }

    jbuf_t j = {.n = 0};
    jraw(&j, "{");
    jstr(&j, "tool", "wsload");
    jstr(&j, "scenario", scenario_name(cfg.scenario));
    jstr(&j, "proto", cfg.proto->name);
    jstr(&j, "label", cfg.label);
    jstr(&j, "host", cfg.host);
    ju64(&j, "port", cfg.port);
    jstr(&j, "path", (cfg.proto->flags & WL_PROTO_WS) ? cfg.path : NULL);
    ju64(&j, "conns", cfg.conns);
    ju64(&j, "established", est_conns);
    ju64(&j, "failed", failed);
    ju64(&j, "threads", cfg.threads);
    ju64(&j, "size", cfg.size);
    ju64(&j, "window", cfg.window);
    jnum(&j, "rate_target", cfg.rate > 0 ? cfg.rate : NAN, 1);
    jnum(&j, "duration_s", window_s, 3);
    jnum(&j, "connect_s", connect_s, 3);
    ju64(&j, "msgs", sum.msgs);
    jnum(&j, "msgs_per_s", measures_msgs ? rate : NAN, 1);
    if (cfg.scenario == WL_SC_FANOUT) {
        ju64(&j, "published", pub_total);
        jnum(&j, "publish_per_s", pub_rate, 1);
    }
    jnum(&j, "server_cpu_s", server_cpu, 3);
    jnum(&j, "per_server_cpu_s", measures_msgs ? per_cpu : NAN, 1);
    jnum(&j, "client_cpu_s", client_cpu, 3);
    jnum(&j, "p50_us", p50, 1);
    jnum(&j, "p90_us", p90, 1);
    jnum(&j, "p99_us", p99, 1);
    jnum(&j, "p999_us", p999, 1);
    jnum(&j, "max_us", measures_msgs ? maxv : NAN, 1);
    jnum(&j, "mean_us", measures_msgs ? mean : NAN, 1);
    jnum(&j, "rss_before_kb", s0.server_rss_kb, 0);
    jnum(&j, "rss_after_kb", cfg.scenario == WL_SC_IDLE ? s1.server_rss_kb : s2.server_rss_kb, 0);
    jnum(&j, "rss_per_conn_bytes", rss_per_conn, 0);
    jnum(&j, "rss_per_conn_end_bytes", rss_per_conn_end, 0);
    ju64(&j, "lost", sum.lost);
    ju64(&j, "unanswered", sum.unanswered);
    ju64(&j, "dup", sum.dup);
    ju64(&j, "bad_payload", sum.bad_payload);
    ju64(&j, "proto_errors", sum.proto_errors);
    ju64(&j, "conn_failed", sum.conn_failed);
    ju64(&j, "conn_timeouts", sum.conn_timeout);
    ju64(&j, "handshake_failed", sum.handshake_failed);
    ju64(&j, "dropped", sum.closed_early);
    ju64(&j, "errors", errors);
    jbool(&j, "valid", valid);
    jstr(&j, "invalid_reason", valid ? NULL : reason);
    jraw(&j, "}");
    printf("RESULT %s\n", j.s);
    fflush(stdout);
    (void)pub_wakeups;

    wl_engine_free(&run);
    return valid ? 0 : 1;
}
