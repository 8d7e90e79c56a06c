/* Storage backend micro-benchmark: group-commit appends per second by batch size and
 * durability mode, plus history reads. Usage:
 *
 *   bench_store [-d dir] [-t seconds] [-c channels] [-s payload_bytes]
 *
 * -d picks the parent directory for the temporary store (default $TMPDIR or /tmp): point
 * it at the disk the server will use, FULL durability measures that disk's fsync. */
#include <ftw.h>
#include <sqlite3.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "hub/store.h"

static double seconds = 1.0;
static unsigned channels = 100;
static size_t payload = 200;
static char parent[200];

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static double now_s(void)
{
    return (double)px_now_ns() / 1e9;
}

/* CPU seconds of this process (user + system): unlike wall time it barely moves when
 * other work shares the machine, so it is the number to compare between runs. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Bytes this process handed to write()/pwrite() so far (/proc/self/io wchar): WAL and
 * checkpoint traffic, i.e. the write amplification per message. 0 if unavailable. */
static uint64_t wchar(void)
{
    FILE *fp = fopen("/proc/self/io", "r");
    char line[128];
    unsigned long long v = 0;
    while (fp && fgets(line, sizeof(line), fp))
        if (sscanf(line, "wchar: %llu", &v) == 1)
            break;
    if (fp)
        fclose(fp);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct bench {
    char dir[256];
    px__store_t *s;
    char (*names)[16];
    uint64_t *next; /* next offset per channel */
    char *data;
} bench_t;

static void bench_open(bench_t *b, int durability, uint64_t history_size)
{
    snprintf(b->dir, sizeof(b->dir), "%s/px-bench-store-XXXXXX", parent);
    if (!mkdtemp(b->dir)) {
        perror("mkdtemp");
        exit(1);
    }
    px__store_opts_t o = {
        .data_dir = b->dir, .durability = durability, .history_size = history_size};
    char err[512];
    if (px__store_open("sqlite", &o, &b->s, err, sizeof(err)) != 0) {
        fprintf(stderr, "open: %s\n", err);
        exit(1);
    }
    b->names = calloc(channels, sizeof(*b->names));
    b->next = calloc(channels, sizeof(*b->next));
    b->data = malloc(payload);
    for (unsigned i = 0; i < channels; i++) {
        snprintf(b->names[i], sizeof(b->names[i]), "chan-%u", i);
        b->next[i] = 1;
    }
    /* A JSON-looking payload: {"text":"xxxx..."}, `payload` bytes in all. */
    memset(b->data, 'x', payload);
    if (payload >= 16) {
        memcpy(b->data, "{\"text\":\"", 9);
        memcpy(b->data + payload - 2, "\"}", 2);
    }
    /* Create the channels up front, in name order and in one transaction (one message
     * each), so their ids (and index entries) are not laid out in publishing order. */
    px__store_msg_t *first = calloc(channels, sizeof(*first));
    for (unsigned i = 0; i < channels; i++)
        first[i] = (px__store_msg_t){.channel = {b->names[i], strlen(b->names[i])},
                                     .epoch = PX_STR_LIT("00112233aabbccdd"),
                                     .offset = b->next[i]++,
                                     .data = {b->data, payload}};
    if (px__store_append(b->s, first, channels) != 0) {
        fprintf(stderr, "create: %s\n", px__store_errmsg(b->s));
        exit(1);
    }
    free(first);
}

static void bench_close(bench_t *b)
{
    px__store_close(b->s);
    nftw(b->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(b->names);
    free(b->next);
    free(b->data);
}

/* Round-robin over the channels, `batch` messages per append, for `seconds`. */
static void run_append(const char *label, int durability, size_t batch, uint64_t history_size)
{
    bench_t b;
    bench_open(&b, durability, history_size);
    px__store_msg_t *msgs = calloc(batch, sizeof(*msgs));
    size_t cap = 1 << 16, nlat = 0;
    double *lat = malloc(cap * sizeof(*lat));
    uint64_t total = 0;
    /* Round-robin in a shuffled order: every batch touches min(batch, channels) distinct
     * channels whose index entries are not neighbours (the worst case for write
     * amplification: one index page per channel per commit). */
    unsigned *order = malloc(channels * sizeof(*order)), pos = 0;
    uint64_t seed = 0x2545f4914f6cdd1dull;
    for (unsigned i = 0; i < channels; i++)
        order[i] = i;
    for (unsigned i = channels; i > 1; i--) {
        unsigned j = (unsigned)(bench_xorshift(&seed) % i), tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
    double t0 = now_s(), t = t0, c0 = cpu_s();
    uint64_t w0 = wchar();
    while (t - t0 < seconds) {
        for (size_t i = 0; i < batch; i++) {
            unsigned ch = order[pos];
            msgs[i] = (px__store_msg_t){.channel = {b.names[ch], strlen(b.names[ch])},
                                        .epoch = PX_STR_LIT("00112233aabbccdd"),
                                        .offset = b.next[ch]++,
                                        .time_ms = (int64_t)total,
                                        .data = {b.data, payload}};
            pos = (pos + 1) % channels;
        }
        double a = now_s();
        int r = px__store_append(b.s, msgs, batch);
        t = now_s();
        if (r != 0) {
            fprintf(stderr, "append: %s\n", px__store_errmsg(b.s));
            exit(1);
        }
        if (nlat == cap)
            lat = realloc(lat, (cap *= 2) * sizeof(*lat));
        lat[nlat++] = t - a;
        total += batch;
    }
    double el = t - t0, cpu = cpu_s() - c0;
    qsort(lat, nlat, sizeof(*lat), cmp_double);
    double wkb = (double)(wchar() - w0) / 1024 / (double)total;
    printf("%-26s %6s %6zu %10.0f %12.0f %10.0f %8.2f %8.3f %8.3f %8.3f\n", label,
           durability == PX_DURABILITY_FULL ? "full" : "normal", batch, (double)total / el,
           (double)total / cpu, (double)nlat / el, wkb, lat[nlat / 2] * 1e3,
           lat[nlat * 99 / 100] * 1e3, lat[nlat - 1] * 1e3);
    free(lat);
    free(order);
    free(msgs);
    bench_close(&b);
}

static int count_cb(void *ud, const px__store_msg_t *m)
{
    *(uint64_t *)ud += m->data.len ? 1 : 0;
    return 0;
}

/* Fill history, then read `limit` messages after a random offset of a random channel. */
static void run_read(size_t limit, uint64_t per_channel)
{
    bench_t b;
    bench_open(&b, PX_DURABILITY_NORMAL, 0);
    px__store_msg_t *msgs = calloc(1000, sizeof(*msgs));
    for (unsigned c = 0; c < channels; c++) {
        for (uint64_t o = b.next[c]; o <= per_channel;) {
            size_t n = 0;
            for (; n < 1000 && o <= per_channel; n++, o++)
                msgs[n] = (px__store_msg_t){.channel = {b.names[c], strlen(b.names[c])},
                                            .epoch = PX_STR_LIT("00112233aabbccdd"),
                                            .offset = o,
                                            .data = {b.data, payload}};
            if (px__store_append(b.s, msgs, n) != 0) {
                fprintf(stderr, "fill: %s\n", px__store_errmsg(b.s));
                exit(1);
            }
        }
    }
    uint64_t seed = 88172645463325252ull, got = 0, calls = 0;
    double t0 = now_s(), t = t0, c0 = cpu_s();
    while (t - t0 < seconds) {
        for (int i = 0; i < 64; i++) {
            unsigned c = (unsigned)(bench_xorshift(&seed) % channels);
            uint64_t since = bench_xorshift(&seed) % (per_channel - limit);
            px_str_t name = {b.names[c], strlen(b.names[c])};
            if (px__store_read(b.s, name, since, limit, count_cb, &got) != 0) {
                fprintf(stderr, "read: %s\n", px__store_errmsg(b.s));
                exit(1);
            }
            calls++;
        }
        t = now_s();
    }
    double el = t - t0, cpu = cpu_s() - c0;
    printf("read %4zu after a random offset (%llu x %u ch): %9.0f reads/s %10.0f msgs/s "
           "%10.0f msgs/cpu-s\n",
           limit, (unsigned long long)per_channel, channels, (double)calls / el, (double)got / el,
           (double)got / cpu);
    free(msgs);
    bench_close(&b);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-d dir] [-t seconds] [-c channels] [-s payload] [-b batch] "
            "[-m normal|full]\n"
            "  -b/-m run just that append row (e.g. under perf)\n",
            argv0);
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(parent, sizeof(parent), "%s", tmp && *tmp ? tmp : "/tmp");
    size_t only_batch = 0;
    int only_mode = -1, opt;
    while ((opt = getopt(argc, argv, "d:t:c:s:b:m:")) != -1) {
        switch (opt) {
        case 'd': snprintf(parent, sizeof(parent), "%s", optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'c': channels = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': payload = strtoul(optarg, NULL, 10); break;
        case 'b': only_batch = strtoul(optarg, NULL, 10); break;
        case 'm':
            only_mode = strcmp(optarg, "full") == 0 ? PX_DURABILITY_FULL : PX_DURABILITY_NORMAL;
            break;
        default: usage(argv[0]); return 2;
        }
    }
    if (channels < 1 || payload < 1 || seconds <= 0) {
        usage(argv[0]);
        return 2;
    }
    printf(
        "sqlite %s, %u channels (shuffled round-robin), %zu-byte payloads, %.1f s per row, in %s\n",
        sqlite3_libversion(), channels, payload, seconds, parent);
    printf("%-26s %6s %6s %10s %12s %10s %8s %8s %8s %8s\n", "append", "mode", "batch", "msgs/s",
           "msgs/cpu-s", "commits/s", "KiB/msg", "p50 ms", "p99 ms", "max ms");
    if (only_batch || only_mode >= 0) {
        run_append("round-robin", only_mode < 0 ? PX_DURABILITY_NORMAL : only_mode,
                   only_batch ? only_batch : 100, 0);
        return 0;
    }
    static const size_t batches[] = {1, 10, 100, 1000};
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < PX_ARRAY_SIZE(batches); i++)
            run_append("round-robin", d ? PX_DURABILITY_FULL : PX_DURABILITY_NORMAL, batches[i], 0);
    run_append("round-robin, history 1000", PX_DURABILITY_NORMAL, 100, 1000);
    run_append("round-robin, history 1000", PX_DURABILITY_NORMAL, 1000, 1000);
    /* About a million stored messages, whatever the channel count. */
    uint64_t per = channels < 100 ? 10000 : 1000000 / channels;
    per = per < 1000 ? 1000 : per;
    run_read(1, per);
    run_read(100, per);
    return 0;
}
