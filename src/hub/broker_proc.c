/* The local broker of several processes sharing one data directory ("proc:", the broker of
 * the SQLite store in shared mode; docs/internals/processes.md).
 *
 * Each process binds a Unix datagram socket <data-dir>/procs/<pid>.sock (a path, not the
 * abstract namespace: the directory scopes the group and its permissions guard it). After
 * a commit the hub publishes the message: one datagram to every other socket in procs/
 * (the list is read again when the directory changes; a socket nobody is bound to any
 * more, ECONNREFUSED, is a process that died and is removed). A datagram carries the
 * channel, epoch, offset, time, publisher, event and data, or only the position when the
 * event and data are larger than DATA_MAX (the receivers read it from the store). The hub
 * delivers in offset order and reads any gap from the store, so a datagram lost to a full
 * receive queue costs a read, nothing else. Which channels a process follows is its own
 * business (the hub drops messages of channels without local subscribers): subscribe is a
 * no-op and confirms nothing.
 *
 * Presence: the members of every process are rows of the `presence` table in the same
 * database (this broker's own connection), with an expiry the process keeps refreshing;
 * join and leave travel as datagrams. A list deletes the expired rows in the transaction
 * that reads them and announces their leave, once (a crashed process's members). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "hub/broker.h"
#include "hub/frontend.h"

#define DATA_MAX     (64 * 1024) /* event + data carried in a datagram; larger: position only */
#define DGRAM_MAX    (DATA_MAX + PX__CHANNEL_MAX + PX__EPOCH_MAX + 256)
#define RECV_BURST   256 /* datagrams read per wake-up (the loop's other work goes on) */
#define SNDBUF_BYTES (4 << 20)
#define BUSY_MS      5000

enum { T_MSG = 'M', T_POS = 'P', T_JOIN = 'J', T_LEAVE = 'L' };

/* Datagram head (host byte order: every process is on this host). */
typedef struct dhead {
    char magic[4]; /* "PXD1" */
    uint8_t type;
    uint8_t epoch_len;  /* M/P; J/L: client length */
    uint16_t chan_len;  /* channel bytes follow the head */
    uint32_t event_len; /* M; J/L: user length */
    uint32_t data_len;  /* M; J/L: info length */
    uint64_t offset;
    int64_t time_ms;
    uint64_t publisher;
} dhead_t;

typedef struct peer {
    struct sockaddr_un addr;
    socklen_t len;
} peer_t;

typedef struct plist_job {
    struct plist_job *next;
    px__broker_members_cb cb;
    void *ud;
    int status;
    px__broker_member_t *ms;
    size_t n;
    char *bytes; /* the members' spans point here */
} plist_job_t;

typedef struct prbroker {
    px__broker_t base;
    px_loop_t *loop;
    px__broker_sink_t sink;
    int fd;
    px_io_t io;
    char dir[PATH_MAX]; /* <data-dir>/procs */
    int dirfd;          /* open on dir: sockets are named through it when dir is long */
    char self_name[32]; /* <pid>.sock */
    struct timespec dir_mtime;
    int dir_known;
    int64_t scanned_ms;
    peer_t *peers;
    size_t npeers;
    char *rbuf;
    uint64_t sent, dropped, received;
    sqlite3 *db;
    px_defer_t list_defer;
    plist_job_t *jobs, *jobs_tail;
} prbroker_t;

static prbroker_t *PR(px__broker_t *b)
{
    return PX_CONTAINER_OF(b, prbroker_t, base);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The address of procs/<name>: the path itself, or when it is longer than sun_path holds
 * (a deep data directory), the same file through /proc/self/fd/<dirfd>/. */
static int sock_addr(const prbroker_t *b, const char *name, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    int w = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", b->dir, name);
    if (w < 0 || (size_t)w >= sizeof sa->sun_path)
        w = snprintf(sa->sun_path, sizeof sa->sun_path, "/proc/self/fd/%d/%s", b->dirfd, name);
    if (w < 0 || (size_t)w >= sizeof sa->sun_path)
        return -ENAMETOOLONG;
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)w + 1);
    return 0;
}

/* ---- the peers: every other socket in procs/ ------------------------------------------------- */

static void peers_scan(prbroker_t *b)
{
    struct stat sb;
    if (fstat(b->dirfd, &sb) < 0)
        return;
    /* The directory's mtime comes from a coarse clock: a socket bound in the same tick as
     * the last scan leaves it unchanged. So a recent mtime is checked again (every few
     * milliseconds, for a second); an old one is trusted. */
    int64_t now = wall_ms();
    int64_t mt = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    if (b->dir_known && sb.st_mtim.tv_sec == b->dir_mtime.tv_sec &&
        sb.st_mtim.tv_nsec == b->dir_mtime.tv_nsec && (now - mt > 1000 || now - b->scanned_ms < 5))
        return;
    DIR *d = opendir(b->dir);
    if (!d)
        return;
    b->dir_mtime = sb.st_mtim;
    b->dir_known = 1;
    b->scanned_ms = now;
    size_t n = 0, cap = 0;
    peer_t *list = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".sock") != 0)
            continue;
        peer_t p;
        if (strcmp(de->d_name, b->self_name) == 0 || sock_addr(b, de->d_name, &p.addr, &p.len))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            peer_t *nl = px__realloc(list, cap * sizeof *nl);
            if (!nl)
                break;
            list = nl;
        }
        list[n++] = p;
    }
    closedir(d);
    px__free(b->peers);
    b->peers = list;
    b->npeers = n;
}

/* One datagram to every peer (best effort). */
static void send_all(prbroker_t *b, const struct iovec *iov, int iovcnt)
{
    peers_scan(b);
    int rescan = 0;
    for (size_t i = 0; i < b->npeers; i++) {
        struct msghdr mh = {.msg_name = &b->peers[i].addr,
                            .msg_namelen = b->peers[i].len,
                            .msg_iov = (struct iovec *)iov,
                            .msg_iovlen = (size_t)iovcnt};
        if (sendmsg(b->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
            b->sent++;
            continue;
        }
        if (errno == ECONNREFUSED) { /* nobody bound: its process died */
            const char *slash = strrchr(b->peers[i].addr.sun_path, '/');
            unlinkat(b->dirfd, slash ? slash + 1 : b->peers[i].addr.sun_path, 0);
            rescan = 1;
        } else if (errno == ENOENT) {
            rescan = 1;
        } else {
            b->dropped++; /* EAGAIN: its queue is full; the hub reads the gap later */
        }
    }
    if (rescan)
        b->dir_known = 0;
}

/* ---- receiving --------------------------------------------------------------------------------
 */

static void on_datagram(prbroker_t *b, const char *p, size_t len)
{
    dhead_t h;
    if (len < sizeof h)
        return;
    memcpy(&h, p, sizeof h);
    if (memcmp(h.magic, "PXD1", 4) != 0)
        return;
    const char *q = p + sizeof h, *end = p + len;
    if ((size_t)(end - q) < h.chan_len || h.chan_len == 0 || h.chan_len > PX__CHANNEL_MAX)
        return;
    px_str_t ch = {q, h.chan_len};
    q += h.chan_len;
    if (h.type == T_MSG || h.type == T_POS) {
        if (h.epoch_len == 0 || h.epoch_len > PX__EPOCH_MAX || (size_t)(end - q) < h.epoch_len)
            return;
        const char *epoch = q;
        q += h.epoch_len;
        if (h.type == T_POS) {
            b->sink.poke(b->sink.ud, ch);
            return;
        }
        if ((size_t)(end - q) != (size_t)h.event_len + h.data_len || h.event_len > UINT16_MAX)
            return;
        px_hub_msg_t *m = px__hub_msg_new(ch, (px_str_t){q, h.event_len},
                                          (px_str_t){q + h.event_len, h.data_len}, h.publisher);
        if (!m) {
            px_log(PX_LOG_ERROR, "proc broker: out of memory for a message");
            return;
        }
        m->offset = h.offset;
        m->time_ms = h.time_ms;
        memcpy(m->epoch, epoch, h.epoch_len);
        m->epoch[h.epoch_len] = '\0';
        b->received++;
        b->sink.message(b->sink.ud, m);
        px_hub_msg_unref(m);
    } else if (h.type == T_JOIN || h.type == T_LEAVE) {
        if ((size_t)(end - q) != (size_t)h.epoch_len + h.event_len + h.data_len)
            return;
        px__broker_member_t m = {{q, h.epoch_len},
                                 {q + h.epoch_len, h.event_len},
                                 {q + h.epoch_len + h.event_len, h.data_len}};
        b->sink.presence(b->sink.ud, ch, h.type == T_JOIN ? PX__JOIN : PX__LEAVE, &m);
    }
}

static void on_readable(px_io_t *io, unsigned events)
{
    PX_UNUSED(events);
    prbroker_t *b = io->data;
    for (int i = 0; i < RECV_BURST; i++) {
        ssize_t n = recv(b->fd, b->rbuf, DGRAM_MAX, MSG_DONTWAIT);
        if (n < 0)
            return; /* EAGAIN: drained */
        on_datagram(b, b->rbuf, (size_t)n);
    }
}

/* ---- presence: the shared table ---------------------------------------------------------------
 */

static const char sql_schema[] =
    "CREATE TABLE IF NOT EXISTS presence("
    " channel BLOB NOT NULL, client TEXT NOT NULL, usr BLOB NOT NULL, info BLOB NOT NULL,"
    " pid INTEGER NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (channel, client))"
    " WITHOUT ROWID";

static void bind_str(sqlite3_stmt *st, int i, px_str_t v)
{
    sqlite3_bind_blob(st, i, v.len ? v.ptr : "", (int)v.len, SQLITE_STATIC);
}

static px_str_t col_str(sqlite3_stmt *st, int i)
{
    const char *p = sqlite3_column_blob(st, i);
    return (px_str_t){p ? p : "", (size_t)sqlite3_column_bytes(st, i)};
}

static int db_exec(prbroker_t *b, const char *sql)
{
    char *e = NULL;
    int rc = sqlite3_exec(b->db, sql, NULL, NULL, &e);
    if (rc != SQLITE_OK)
        px_log(PX_LOG_ERROR, "proc broker: presence: %s", e ? e : sqlite3_errstr(rc));
    sqlite3_free(e);
    return rc == SQLITE_OK ? 0 : -EIO;
}

static void announce(prbroker_t *b, px_str_t ch, int op, const px__broker_member_t *m)
{
    if (m->client.len > 255 || m->user.len > DATA_MAX || m->info.len > DATA_MAX)
        return;
    dhead_t h = {.magic = "PXD1",
                 .type = op == PX__JOIN ? T_JOIN : T_LEAVE,
                 .epoch_len = (uint8_t)m->client.len,
                 .chan_len = (uint16_t)ch.len,
                 .event_len = (uint32_t)m->user.len,
                 .data_len = (uint32_t)m->info.len};
    struct iovec iov[5] = {{&h, sizeof h},
                           {(void *)ch.ptr, ch.len},
                           {(void *)m->client.ptr, m->client.len},
                           {(void *)m->user.ptr, m->user.len},
                           {(void *)m->info.ptr, m->info.len}};
    send_all(b, iov, 5);
}

static int upsert(prbroker_t *b, px_str_t ch, const px__broker_member_t *m, uint64_t ttl_ms)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(
        b->db,
        "INSERT INTO presence (channel, client, usr, info, pid, expires) VALUES (?,?,?,?,?,?)"
        " ON CONFLICT (channel, client) DO UPDATE SET usr = excluded.usr, info = excluded.info,"
        " pid = excluded.pid, expires = excluded.expires",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return -EIO;
    bind_str(st, 1, ch);
    sqlite3_bind_text(st, 2, m->client.ptr, (int)m->client.len, SQLITE_STATIC);
    bind_str(st, 3, m->user);
    bind_str(st, 4, m->info);
    sqlite3_bind_int64(st, 5, getpid());
    sqlite3_bind_int64(st, 6, wall_ms() + (int64_t)ttl_ms);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int pr_presence_add(px__broker_t *base, px_str_t ch, const px__broker_member_t *who,
                           uint64_t ttl_ms)
{
    prbroker_t *b = PR(base);
    /* The row first: whoever sees the join finds the member in a list. */
    int r = upsert(b, ch, who, ttl_ms);
    if (r)
        px_log(PX_LOG_ERROR, "proc broker: presence: %s", sqlite3_errmsg(b->db));
    announce(b, ch, PX__JOIN, who);
    return r;
}

static int pr_presence_remove(px__broker_t *base, px_str_t ch, const px__broker_member_t *who)
{
    prbroker_t *b = PR(base);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(b->db, "DELETE FROM presence WHERE channel = ? AND client = ?", -1,
                                &st, NULL);
    if (rc == SQLITE_OK) {
        bind_str(st, 1, ch);
        sqlite3_bind_text(st, 2, who->client.ptr, (int)who->client.len, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    announce(b, ch, PX__LEAVE, who);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int pr_presence_refresh(px__broker_t *base, px_str_t ch, const px__broker_member_t *m,
                               size_t n, uint64_t ttl_ms)
{
    prbroker_t *b = PR(base);
    if (db_exec(b, "BEGIN IMMEDIATE") != 0)
        return -EIO;
    int r = 0;
    for (size_t i = 0; i < n && !r; i++)
        r = upsert(b, ch, &m[i], ttl_ms);
    if (r || db_exec(b, "COMMIT") != 0) {
        db_exec(b, "ROLLBACK");
        return -EIO;
    }
    return 0;
}

static void list_jobs_run(px_defer_t *d)
{
    prbroker_t *b = d->data;
    plist_job_t *j = b->jobs;
    b->jobs = b->jobs_tail = NULL;
    while (j) {
        plist_job_t *next = j->next;
        j->cb(j->ud, j->status, j->ms, j->n);
        px__free(j->ms);
        px__free(j->bytes);
        px__free(j);
        j = next;
    }
}

typedef struct row {
    px_str_t client, user, info;
    int gone;
} row_t;

/* Read the channel's rows and delete the expired ones, in one write transaction (of two
 * processes sweeping at once, one deletes each row and announces it). */
static int list_rows(prbroker_t *b, px_str_t ch, char **bytes, row_t **rows, size_t *nrows)
{
    *bytes = NULL;
    *rows = NULL;
    *nrows = 0;
    if (db_exec(b, "BEGIN IMMEDIATE") != 0)
        return -EIO;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(b->db,
                                "SELECT client, usr, info, expires < ? FROM presence"
                                " WHERE channel = ?",
                                -1, &st, NULL);
    int r = rc == SQLITE_OK ? 0 : -EIO;
    size_t cap = 0, blen = 0, bcap = 0, n = 0;
    row_t *rs = NULL;
    char *buf = NULL;
    int any_gone = 0;
    int64_t now = wall_ms(); /* one instant: a row is listed or deleted and announced */
    if (!r) {
        sqlite3_bind_int64(st, 1, now);
        bind_str(st, 2, ch);
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            px_str_t f[3] = {col_str(st, 0), col_str(st, 1), col_str(st, 2)};
            size_t need = f[0].len + f[1].len + f[2].len;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                row_t *nr = px__realloc(rs, cap * sizeof *nr);
                if (!nr) {
                    r = -ENOMEM;
                    break;
                }
                rs = nr;
            }
            if (blen + need + 1 > bcap) {
                size_t nc = bcap ? bcap : 1024;
                while (nc < blen + need + 1)
                    nc *= 2;
                char *nb = px__realloc(buf, nc);
                if (!nb) {
                    r = -ENOMEM;
                    break;
                }
                buf = nb;
                bcap = nc;
            }
            row_t *o = &rs[n++];
            px_str_t *dst[3] = {&o->client, &o->user, &o->info};
            for (int k = 0; k < 3; k++) { /* offsets into buf for now (it may move) */
                if (f[k].len)
                    memcpy(buf + blen, f[k].ptr, f[k].len);
                *dst[k] = (px_str_t){(const char *)(uintptr_t)blen, f[k].len};
                blen += f[k].len;
            }
            o->gone = sqlite3_column_int(st, 3);
            any_gone |= o->gone;
        }
        if (!r && rc != SQLITE_DONE)
            r = -EIO;
        sqlite3_finalize(st);
    }
    if (!r && any_gone) {
        rc = sqlite3_prepare_v2(b->db, "DELETE FROM presence WHERE channel = ? AND expires < ?", -1,
                                &st, NULL);
        if (rc == SQLITE_OK) {
            bind_str(st, 1, ch);
            sqlite3_bind_int64(st, 2, now);
            rc = sqlite3_step(st);
            sqlite3_finalize(st);
        }
        r = rc == SQLITE_DONE ? 0 : -EIO;
    }
    if (r || db_exec(b, "COMMIT") != 0) {
        db_exec(b, "ROLLBACK");
        px__free(rs);
        px__free(buf);
        return r ? r : -EIO;
    }
    for (size_t i = 0; i < n; i++) {
        rs[i].client.ptr = buf + (uintptr_t)rs[i].client.ptr;
        rs[i].user.ptr = buf + (uintptr_t)rs[i].user.ptr;
        rs[i].info.ptr = buf + (uintptr_t)rs[i].info.ptr;
    }
    *bytes = buf;
    *rows = rs;
    *nrows = n;
    return 0;
}

static int pr_presence_list(px__broker_t *base, px_str_t ch, px__broker_members_cb cb, void *ud)
{
    prbroker_t *b = PR(base);
    char *bytes;
    row_t *rows;
    size_t n;
    int r = list_rows(b, ch, &bytes, &rows, &n);
    plist_job_t *j = cb ? px__calloc(1, sizeof *j) : NULL;
    if (cb && !j)
        r = r ? r : -ENOMEM;
    if (j && !r && n && !(j->ms = px__calloc(n, sizeof *j->ms)))
        r = -ENOMEM;
    for (size_t i = 0; !r && i < n; i++) {
        px__broker_member_t m = {rows[i].client, rows[i].user, rows[i].info};
        if (rows[i].gone) {
            /* Its process stopped refreshing it (crashed): its leave, once (this
             * transaction deleted the row, so no other process reports it). */
            b->sink.presence(b->sink.ud, ch, PX__LEAVE, &m);
            announce(b, ch, PX__LEAVE, &m);
        } else if (j) {
            j->ms[j->n++] = m;
        }
    }
    px__free(rows);
    if (!j) {
        px__free(bytes);
        return r;
    }
    if (r) {
        px__free(bytes);
        px__free(j->ms);
        px__free(j);
        return r;
    }
    j->cb = cb;
    j->ud = ud;
    j->bytes = bytes;
    if (b->jobs_tail)
        b->jobs_tail->next = j;
    else
        b->jobs = j;
    b->jobs_tail = j;
    px_defer(b->loop, &b->list_defer);
    return 0;
}

/* A clean stop: this process's members leave now rather than after the TTL. */
static void presence_leave_all(prbroker_t *b)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            b->db, "DELETE FROM presence WHERE pid = ? RETURNING channel, client, usr, info", -1,
            &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, getpid());
    while (sqlite3_step(st) == SQLITE_ROW) {
        px_str_t ch = col_str(st, 0);
        px__broker_member_t m = {col_str(st, 1), col_str(st, 2), col_str(st, 3)};
        if (ch.len && ch.len <= PX__CHANNEL_MAX)
            announce(b, ch, PX__LEAVE, &m);
    }
    sqlite3_finalize(st);
}

/* ---- the broker -------------------------------------------------------------------------------
 */

static void pr_close(px__broker_t *base)
{
    prbroker_t *b = PR(base);
    px_io_stop(&b->io);
    while (b->jobs) { /* lists whose answers did not run: they fail now, once */
        plist_job_t *j = b->jobs;
        b->jobs = j->next;
        j->cb(j->ud, -ESHUTDOWN, NULL, 0);
        px__free(j->ms);
        px__free(j->bytes);
        px__free(j);
    }
    if (b->db && b->fd >= 0)
        presence_leave_all(b);
    if (b->db)
        sqlite3_close(b->db);
    if (b->fd >= 0) {
        close(b->fd);
        unlinkat(b->dirfd, b->self_name, 0);
    }
    if (b->dirfd >= 0)
        close(b->dirfd);
    px__free(b->peers);
    px__free(b->rbuf);
    px__free(b);
}

static int pr_open(const char *url, px_loop_t *loop, const px__broker_sink_t *sink,
                   px__broker_t **out, char *err, size_t errlen)
{
    /* url: the data directory */
    prbroker_t *b = px__calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->base.ops = &px__broker_proc;
    b->loop = loop;
    b->sink = *sink;
    b->fd = -1;
    px_defer_init(&b->list_defer, list_jobs_run, b);
    b->dirfd = -1;
    int r = 0;
    struct sockaddr_un sa;
    socklen_t salen;
    int w = snprintf(b->dir, sizeof b->dir, "%s/procs", url);
    snprintf(b->self_name, sizeof b->self_name, "%ld.sock", (long)getpid());
    if (w < 0 || (size_t)w >= sizeof b->dir) {
        snprintf(err, errlen, "%s: path too long", url);
        r = -ENAMETOOLONG;
        goto fail;
    }
    if ((mkdir(b->dir, 0700) < 0 && errno != EEXIST) ||
        (b->dirfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", b->dir, strerror(errno));
        goto fail;
    }
    if ((r = sock_addr(b, b->self_name, &sa, &salen)) < 0) {
        snprintf(err, errlen, "%s: too long for a Unix socket", b->dir);
        goto fail;
    }
    if (!(b->rbuf = px__malloc(DGRAM_MAX))) {
        r = -ENOMEM;
        goto fail;
    }
    b->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (b->fd < 0) {
        r = -errno;
        snprintf(err, errlen, "proc broker: socket: %s", strerror(errno));
        goto fail;
    }
    int sz = SNDBUF_BYTES;
    setsockopt(b->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(b->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    /* A dead process with our pid left it (two live ones cannot share a pid). */
    unlinkat(b->dirfd, b->self_name, 0);
    if (bind(b->fd, (struct sockaddr *)&sa, salen) < 0) {
        r = -errno;
        snprintf(err, errlen, "%s/%s: bind: %s", b->dir, b->self_name, strerror(errno));
        close(b->fd);
        b->fd = -1;
        goto fail;
    }
    char db[PATH_MAX + 16];
    snprintf(db, sizeof db, "%s/plexus.db", url);
    int rc = sqlite3_open_v2(db, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(b->db, BUSY_MS);
        /* Presence is not history: no fsync per write (the store set WAL mode). */
        rc = sqlite3_exec(b->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(b->db, sql_schema, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: presence table: %s", db,
                 b->db ? sqlite3_errmsg(b->db) : sqlite3_errstr(rc));
        r = -EIO;
        goto fail;
    }
    px_io_init(&b->io, b->fd, on_readable, b);
    *out = &b->base;
    return 0;
fail:
    pr_close(&b->base);
    return r;
}

static int pr_start(px__broker_t *base)
{
    prbroker_t *b = PR(base);
    return px_io_start(b->loop, &b->io, PX_READABLE);
}

static void pr_stat(px__broker_t *base, px__backend_stat_t *st)
{
    prbroker_t *b = PR(base);
    st->up = b->fd >= 0;
    st->queue = 0;
    st->reconnects = 0;
    st->error = st->up ? "" : "no socket";
}

static int pr_publish(px__broker_t *base, const px_hub_msg_t *m)
{
    prbroker_t *b = PR(base);
    px_str_t ch = px_hub_msg_channel(m), ev = px_hub_msg_event(m), data = px_hub_msg_data(m);
    size_t elen = strlen(m->epoch);
    if (ch.len == 0 || ch.len > PX__CHANNEL_MAX || elen == 0 || elen > PX__EPOCH_MAX)
        return -EINVAL;
    int full = ev.len + data.len <= DATA_MAX;
    dhead_t h = {.magic = "PXD1",
                 .type = full ? T_MSG : T_POS,
                 .epoch_len = (uint8_t)elen,
                 .chan_len = (uint16_t)ch.len,
                 .event_len = full ? (uint32_t)ev.len : 0,
                 .data_len = full ? (uint32_t)data.len : 0,
                 .offset = m->offset,
                 .time_ms = m->time_ms,
                 .publisher = m->publisher};
    struct iovec iov[5] = {{&h, sizeof h},
                           {(void *)ch.ptr, ch.len},
                           {(void *)m->epoch, elen},
                           {(void *)ev.ptr, full ? ev.len : 0},
                           {(void *)data.ptr, full ? data.len : 0}};
    send_all(b, iov, 5);
    return 0;
}

static int pr_interest(px__broker_t *b, px_str_t channel)
{
    PX_UNUSED(b);
    PX_UNUSED(channel);
    return 0; /* the receiver drops what it does not follow */
}

const px__broker_ops_t px__broker_proc = {
    .name = "proc",
    .open = pr_open,
    .start = pr_start,
    .close = pr_close,
    .stat = pr_stat,
    .publish = pr_publish,
    .subscribe = pr_interest,
    .unsubscribe = pr_interest,
    .confirms = 0,
    .presence_add = pr_presence_add,
    .presence_remove = pr_presence_remove,
    .presence_refresh = pr_presence_refresh,
    .presence_list = pr_presence_list,
};
