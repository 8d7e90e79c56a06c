#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "plexus/worker.h"

static int log_level = PX_LOG_INFO;
static int log_json;
static int log_fd = 2;
static char *log_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER; /* guards log_fd/log_path swaps only */

/* px_log_set_sink: the function, then its argument (set while no thread logs). */
static void (*_Atomic log_sink)(int, const char *, size_t, void *);
static void *log_sink_ud;

void px_log_set_sink(void (*fn)(int level, const char *line, size_t len, void *ud), void *ud)
{
    log_sink_ud = ud;
    log_sink = fn;
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int px_log_level_parse(const char *s)
{
    for (int i = 0; i < (int)PX_ARRAY_SIZE(level_names); i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void px_log_set_level(int level)
{
    log_level = level;
}

int px_log_get_level(void)
{
    return log_level;
}

int px_log_set_format(const char *format)
{
    if (strcmp(format, "text") == 0)
        log_json = 0;
    else if (strcmp(format, "json") == 0)
        log_json = 1;
    else
        return -EINVAL;
    return 0;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int px_log_set_file(const char *path)
{
    int fd = 2;
    if (path) {
        fd = open_log(path);
        if (fd < 0)
            return fd;
    }
    pthread_mutex_lock(&log_lock);
    int old = log_fd;
    px__free(log_path);
    log_path = path ? px__xstrdup(path) : NULL;
    log_fd = fd;
    pthread_mutex_unlock(&log_lock);
    if (old != 2)
        close(old);
    return 0;
}

int px_log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    int r = 0;
    if (log_path) {
        int fd = open_log(log_path);
        if (fd < 0) {
            r = fd;
        } else {
            /* dup2 swaps atomically: concurrent writers never see a closed fd. */
            dup2(fd, log_fd);
            close(fd);
        }
    }
    pthread_mutex_unlock(&log_lock);
    return r;
}

/* Append `s` to out[*n..cap) JSON-escaped. */
static void json_escape(char *out, size_t *n, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c == '\n') {
            out[(*n)++] = '\\';
            out[(*n)++] = 'n';
        } else if (c < 0x20) {
            memcpy(out + *n, "\\u00", 4);
            *n += 4;
            out[(*n)++] = hex[c >> 4];
            out[(*n)++] = hex[c & 15];
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

void px_log(int level, const char *fmt, ...)
{
    if (level < log_level || level >= PX_LOG_OFF)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof when - wl, ".%03ldZ", ts.tv_nsec / 1000000);

    px_worker_t *w = px_worker_self();
    char who[16];
    if (w)
        snprintf(who, sizeof who, "%u", px_worker_id(w));
    else
        snprintf(who, sizeof who, "main");

    char line[4096];
    size_t n;
    if (log_json) {
        int k = snprintf(line, sizeof line,
                         "{\"ts\":\"%s\",\"level\":\"%s\",\"worker\":\"%s\",\"msg\":\"", when,
                         level_names[level], who);
        n = (size_t)k;
        json_escape(line, &n, sizeof line - 3, msg);
        line[n++] = '"';
        line[n++] = '}';
        line[n++] = '\n';
    } else {
        int k =
            snprintf(line, sizeof line, "%s %-5s [%s] %s\n", when, level_names[level], who, msg);
        n = k < 0 ? 0 : (size_t)k >= sizeof line ? sizeof line - 1 : (size_t)k;
        if (n == sizeof line - 1)
            line[n - 1] = '\n';
    }
    void (*sink)(int, const char *, size_t, void *) = log_sink;
    if (sink) {
        sink(level, line, n, log_sink_ud);
        return;
    }
    /* One write per line: lines from several threads never interleave. */
    ssize_t r = write(log_fd, line, n);
    (void)r;
}
