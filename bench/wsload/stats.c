/* Buffers, clock, latency histogram, payload header and /proc readers. */
#include "wsload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t wl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- buffers ------------------------------------------------------------------ */

void wl_buf_reserve(wl_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        fprintf(stderr, "wsload: out of memory (%zu bytes)\n", cap);
        abort();
    }
    b->data = p;
    b->cap = cap;
}

void wl_buf_append(wl_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    wl_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void wl_buf_append_str(wl_buf_t *b, const char *s)
{
    wl_buf_append(b, s, strlen(s));
}

void wl_buf_append_u64(wl_buf_t *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    wl_buf_append(b, tmp + sizeof(tmp) - n, n);
}

void wl_buf_consume(wl_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void wl_buf_free(wl_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- histogram ------------------------------------------------------------------
 * Values below 2^(M+1) have their own bucket. Above, a value with its top bit at
 * position e is stored by its next M bits: 2^M buckets per power of two. */

static unsigned hist_index(uint64_t v)
{
    if (v < (2u << WL_HIST_MBITS))
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned m = (unsigned)(v >> (e - WL_HIST_MBITS)) & ((1u << WL_HIST_MBITS) - 1);
    return (2u << WL_HIST_MBITS) + (e - WL_HIST_MBITS - 1) * (1u << WL_HIST_MBITS) + m;
}

/* Midpoint of a bucket. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < (2u << WL_HIST_MBITS))
        return idx;
    unsigned k = idx - (2u << WL_HIST_MBITS);
    unsigned e = k / (1u << WL_HIST_MBITS) + WL_HIST_MBITS + 1;
    uint64_t m = k % (1u << WL_HIST_MBITS);
    uint64_t low = ((1ull << WL_HIST_MBITS) + m) << (e - WL_HIST_MBITS);
    return low + (1ull << (e - WL_HIST_MBITS)) / 2;
}

void wl_hist_init(wl_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void wl_hist_add(wl_hist_t *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void wl_hist_merge(wl_hist_t *dst, const wl_hist_t *src)
{
    for (unsigned i = 0; i < WL_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t wl_hist_pct(const wl_hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    double r = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < WL_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

/* ---- payload header -------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

void wl_payload_put(uint8_t *p, uint64_t ts, uint64_t seq)
{
    for (int i = 11; i >= 0; i--) {
        p[i] = (uint8_t)hexdig[ts & 15];
        ts >>= 4;
        p[12 + i] = (uint8_t)hexdig[seq & 15];
        seq >>= 4;
    }
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool wl_payload_get(const uint8_t *p, size_t len, uint64_t *ts, uint64_t *seq)
{
    if (len < WL_PAYLOAD_HDR)
        return false;
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 12; i++) {
        int x = hexval(p[i]), y = hexval(p[12 + i]);
        if (x < 0 || y < 0)
            return false;
        a = a << 4 | (uint64_t)x;
        b = b << 4 | (uint64_t)y;
    }
    *ts = a;
    *seq = b;
    return true;
}

/* ---- /proc ------------------------------------------------------------------------ */

static ssize_t read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            close(fd);
            return -err;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

int wl_proc_cpu_ticks(pid_t pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    ssize_t n = read_small_file(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    /* comm may contain spaces and parentheses: fields restart after the last ')'.
     * Then: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15). */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -EINVAL;
    p++;
    unsigned long long v[2] = {0, 0};
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return -EINVAL;
        char *end = p;
        unsigned long long x = strtoull(p, &end, 10);
        if (field >= 14)
            v[field - 14] = x;
        p = end;
        while (*p != ' ' && *p != '\0')
            p++;
    }
    unsigned long long ut = v[0], st = v[1];
    *ticks = ut + st;
    return 0;
}

int wl_proc_rss_kb(pid_t pid, uint64_t *kb)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    ssize_t n = read_small_file(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    const char *p = strstr(buf, "\nVmRSS:");
    if (p == NULL)
        return -ENOENT; /* zombie or kernel thread */
    *kb = strtoull(p + 7, NULL, 10);
    return 0;
}
