/* Static files: resolve beneath the root with openat2(RESOLVE_BENEATH), so no
 * path, encoded or not, and no symlink can leave it; then sendfile with
 * validators (ETag, Last-Modified) and single ranges. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "http/http_int.h"

typedef struct static_root {
    int dirfd;
    size_t prefix_len; /* bytes of the route prefix to strip from the path */
} static_root_t;

static const struct {
    const char *ext;
    const char *type;
} mime[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"pdf", "application/pdf"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"d.ts", "application/typescript"},
    {"ts", "application/typescript"},
};

const char *px__mime_type(const char *path, size_t len)
{
    for (size_t i = 0; i < PX_ARRAY_SIZE(mime); i++) {
        size_t el = strlen(mime[i].ext);
        if (len > el + 1 && path[len - el - 1] == '.' &&
            strncasecmp(path + len - el, mime[i].ext, el) == 0)
            return mime[i].type;
    }
    return "application/octet-stream";
}

static int hexv(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Decode `raw` into out (NUL-terminated relative path). Returns 0, or the HTTP
 * status that refuses it. */
static int decode_path(px_str_t raw, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < raw.len; i++) {
        int ch = (unsigned char)raw.ptr[i];
        if (ch == '%') {
            int hi = i + 1 < raw.len ? hexv((unsigned char)raw.ptr[i + 1]) : -1;
            int lo = i + 2 < raw.len ? hexv((unsigned char)raw.ptr[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return 400;
            ch = hi * 16 + lo;
            i += 2;
            if (ch == 0)
                return 400; /* NUL would truncate the path */
            if (ch == '/' || ch == '\\')
                return 404; /* encoded slashes never name a file */
        }
        if (n + 1 >= cap)
            return 414;
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    /* No "." or ".." segments, however they were spelled. */
    const char *seg = out;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return 403;
        if (!slash)
            break;
        seg = slash + 1;
    }
    return 0;
}

static int openat2_beneath(int dirfd, const char *rel, uint64_t flags)
{
    struct open_how how = {.flags = flags, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, dirfd, rel[0] ? rel : ".", &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* Open `rel` (writable: it is cut in place and restored) beneath dirfd. A path
 * longer than the kernel's PATH_MAX (4096 with its NUL) is opened in steps of
 * whole segments, each step a directory opened beneath the previous one, so
 * the request-line limit alone bounds the path (RFC 9112 3 asks for 8000
 * octets) and no step can leave the root. */
static int open_beneath(int dirfd, char *rel)
{
    /* O_NONBLOCK: opening a FIFO (or a device) for reading must not block the
     * worker; such files are then refused as not regular. */
    const uint64_t file_flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    const size_t step = 4000; /* < PATH_MAX, whole segments */
    int dir = dirfd;
    while (strlen(rel) >= step) {
        char *cut = rel + step;
        while (cut > rel && *cut != '/')
            cut--;
        if (cut == rel) { /* one segment longer than a step: no such name */
            if (dir != dirfd)
                close(dir);
            return -ENAMETOOLONG;
        }
        *cut = '\0';
        int next = openat2_beneath(dir, rel, O_PATH | O_DIRECTORY | O_CLOEXEC);
        *cut = '/';
        if (dir != dirfd)
            close(dir);
        if (next < 0)
            return next;
        dir = next;
        rel = cut + 1;
    }
    int fd = openat2_beneath(dir, rel, file_flags);
    if (dir != dirfd)
        close(dir);
    return fd;
}

static void http_date(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static time_t parse_http_date(px_str_t s)
{
    char tmp[64];
    if (s.len == 0 || s.len >= sizeof tmp)
        return (time_t)-1;
    memcpy(tmp, s.ptr, s.len);
    tmp[s.len] = '\0';
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return (time_t)-1;
    return timegm(&tm);
}

/* Does If-None-Match list `etag` (or "*")? Weak comparison. */
static int etag_matches(px_str_t inm, const char *etag)
{
    size_t el = strlen(etag);
    size_t i = 0;
    while (i < inm.len) {
        while (i < inm.len && (inm.ptr[i] == ' ' || inm.ptr[i] == ','))
            i++;
        size_t start = i;
        while (i < inm.len && inm.ptr[i] != ',')
            i++;
        size_t end = i;
        while (end > start && inm.ptr[end - 1] == ' ')
            end--;
        const char *t = inm.ptr + start;
        size_t tl = end - start;
        if (tl == 1 && t[0] == '*')
            return 1;
        if (tl > 2 && t[0] == 'W' && t[1] == '/') {
            t += 2;
            tl -= 2;
        }
        if (tl == el && memcmp(t, etag, el) == 0)
            return 1;
    }
    return 0;
}

/* Parse a single "bytes=" range. 1: range set; 0: ignore the header (serve
 * everything); -1: unsatisfiable. */
static int parse_range(px_str_t r, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (r.len < 7 || strncmp(r.ptr, "bytes=", 6) != 0 || memchr(r.ptr, ',', r.len))
        return 0; /* other units and multiple ranges: a full 200 is allowed */
    const char *p = r.ptr + 6, *end = r.ptr + r.len;
    uint64_t a = 0, b = 0;
    int has_a = 0, has_b = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (a > (UINT64_MAX - 9) / 10)
            return 0;
        a = a * 10 + (uint64_t)(*p++ - '0');
        has_a = 1;
    }
    if (p >= end || *p++ != '-')
        return 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (b > (UINT64_MAX - 9) / 10)
            return 0;
        b = b * 10 + (uint64_t)(*p++ - '0');
        has_b = 1;
    }
    if (p != end || (!has_a && !has_b))
        return 0;
    if (!has_a) { /* suffix: the last b bytes */
        if (b == 0 || size == 0)
            return -1;
        if (b > size)
            b = size;
        *off = size - b;
        *len = b;
        return 1;
    }
    if (has_b && b < a)
        return 0;
    if (a >= size)
        return -1;
    uint64_t last = has_b && b < size - 1 ? b : size - 1;
    *off = a;
    *len = last - a + 1;
    return 1;
}

static void static_handler(px_req_t *req, void *ud)
{
    static_root_t *root = ud;
    px_str_t path = px_req_path(req);
    px_str_t raw = {path.ptr + root->prefix_len, path.len - root->prefix_len};
    /* Decoding never lengthens: the request line (--max-request-line) is the
     * only limit on the path. */
    char *rel = px_req_alloc(req, raw.len + 1);
    if (!rel) {
        px_respond_error(req, 503, NULL, "out of memory");
        return;
    }
    int st = decode_path(raw, rel, raw.len + 1);
    if (st) {
        px_respond_error(req, st, NULL,
                         st == 403   ? "path leaves the static root"
                         : st == 404 ? "no such file"
                         : st == 414 ? "path too long"
                                     : "badly encoded path");
        return;
    }
    int fd = open_beneath(root->dirfd, rel);
    if (fd == -EXDEV || fd == -ELOOP) {
        px_respond_error(req, 403, NULL, "path leaves the static root");
        return;
    }
    if (fd < 0) {
        if (fd == -EACCES || fd == -EPERM)
            px_respond_error(req, 403, NULL, "permission denied");
        else
            px_respond_error(req, 404, NULL, "no such file");
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        px_respond_error(req, 500, NULL, "cannot stat file");
        return;
    }
    const char *name = rel;
    size_t name_len = strlen(rel);
    if (S_ISDIR(sb.st_mode)) {
        if (path.len == 0 || path.ptr[path.len - 1] != '/') {
            close(fd);
            /* The same target with a slash added, query kept: /docs?x=1 -> /docs/?x=1 */
            px_str_t q = px_req_query(req);
            char *loc = px_req_alloc(req, path.len + q.len + 3);
            if (!loc) {
                px_respond_error(req, 500, NULL, "out of memory");
                return;
            }
            size_t n = path.len;
            memcpy(loc, path.ptr, n);
            loc[n++] = '/';
            if (q.len) {
                loc[n++] = '?';
                memcpy(loc + n, q.ptr, q.len);
                n += q.len;
            }
            loc[n] = '\0';
            px_res_header(req, "Location", loc);
            px_respond(req, 301, "text/plain; charset=utf-8", "moved\n", 6);
            return;
        }
        char index[] = "index.html";
        int ifd = open_beneath(fd, index);
        close(fd);
        if (ifd < 0 || fstat(ifd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            if (ifd >= 0)
                close(ifd);
            px_respond_error(req, 404, NULL, "no index.html in this directory");
            return;
        }
        fd = ifd;
        name = "index.html";
        name_len = 10;
    } else if (!S_ISREG(sb.st_mode)) {
        close(fd);
        px_respond_error(req, 404, NULL, "not a regular file");
        return;
    }

    char etag[80], lastmod[40];
    snprintf(etag, sizeof etag, "\"%llx-%llx-%llx\"", (unsigned long long)sb.st_ino,
             (unsigned long long)sb.st_size,
             (unsigned long long)sb.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)sb.st_mtim.tv_nsec);
    http_date(sb.st_mtim.tv_sec, lastmod, sizeof lastmod);
    px_res_header(req, "ETag", etag);
    px_res_header(req, "Last-Modified", lastmod);
    px_res_header(req, "Accept-Ranges", "bytes");

    px_str_t inm = px_req_header(req, "if-none-match");
    int not_modified = 0;
    if (inm.ptr) {
        not_modified = etag_matches(inm, etag);
    } else {
        px_str_t ims = px_req_header(req, "if-modified-since");
        time_t t = ims.ptr ? parse_http_date(ims) : (time_t)-1;
        not_modified = t != (time_t)-1 && sb.st_mtim.tv_sec <= t;
    }
    if (not_modified) {
        close(fd);
        px_respond(req, 304, NULL, NULL, 0);
        return;
    }

    const char *ctype = px__mime_type(name, name_len);
    uint64_t size = (uint64_t)sb.st_size, off = 0, len = size;
    px_str_t range = px_req_header(req, "range");
    px_str_t if_range = px_req_header(req, "if-range");
    if (range.ptr && (!if_range.ptr || (if_range.len == strlen(etag) &&
                                        memcmp(if_range.ptr, etag, if_range.len) == 0))) {
        int r = parse_range(range, size, &off, &len);
        if (r < 0) {
            close(fd);
            char cr[64];
            snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
            px_res_header(req, "Content-Range", cr);
            px_respond_error(req, 416, NULL, "range not satisfiable for a %llu-byte file",
                             (unsigned long long)size);
            return;
        }
        if (r > 0) {
            char cr[96];
            snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)off,
                     (unsigned long long)(off + len - 1), (unsigned long long)size);
            px_res_header(req, "Content-Range", cr);
            px_respond_file(req, 206, ctype, fd, off, len);
            return;
        }
    }
    px_respond_file(req, 200, ctype, fd, 0, size);
}

static void static_root_free(void *p)
{
    static_root_t *sr = p;
    close(sr->dirfd);
    px__free(sr);
}

int px_route_static(px_server_t *s, const char *prefix, const char *root)
{
    px__http_t *h = px__http_get(s);
    if (!h)
        return -ENOMEM;
    size_t pl = strlen(prefix);
    if (pl == 0 || prefix[0] != '/' || prefix[pl - 1] != '/')
        return -EINVAL;
    int dirfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    static_root_t *sr = px__malloc(sizeof *sr);
    if (!sr) {
        close(dirfd);
        return -ENOMEM;
    }
    sr->dirfd = dirfd;
    sr->prefix_len = pl;
    char *pattern = px__malloc(pl + 2);
    if (!pattern) {
        close(dirfd);
        px__free(sr);
        return -ENOMEM;
    }
    memcpy(pattern, prefix, pl);
    pattern[pl] = '*';
    pattern[pl + 1] = '\0';
    int r = px__router_add(h, "GET", pattern, static_handler, sr, static_root_free);
    px__free(pattern);
    if (r)
        static_root_free(sr);
    return r;
}
