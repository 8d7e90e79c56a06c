/* SQLite storage backend: persistence, batching, retention, corruption and failure
 * injection (I/O errors, disk full, OOM, kill -9). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "xorshift.h"
#include "core/alloc.h"
#include "hub/store.h"
#include "plexus/loop.h"

#define EPOCH_A "0123456789abcdef"
#define EPOCH_B "fedcba9876543210"

static px_str_t S(const char *s)
{
    return (px_str_t){s, strlen(s)};
}

/* ---- fixtures --------------------------------------------------------------------- */

typedef struct fx {
    char dir[256]; /* fresh temp directory, removed afterwards */
    px__store_opts_t opts;
    px__store_t *s;
    char err[512];
} fx_t;

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    chmod(path, 0700);
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void rm_rf(const char *dir)
{
    chmod(dir, 0700);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/px-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    f->opts.data_dir = f->dir;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    px__store_close(f->s);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void fx_open(fx_t *f)
{
    int r = px__store_sqlite.open(&f->opts, &f->s, f->err, sizeof(f->err));
    if (r != 0)
        fail_msg("open: %d %s", r, f->err);
    assert_non_null(f->s);
}

static void fx_close(fx_t *f)
{
    px__store_close(f->s);
    f->s = NULL;
}

static void fx_reopen(fx_t *f)
{
    fx_close(f);
    fx_open(f);
}

static int fx_open_err(fx_t *f)
{
    f->err[0] = '\0';
    int r = px__store_sqlite.open(&f->opts, &f->s, f->err, sizeof(f->err));
    if (r == 0)
        fail_msg("open unexpectedly succeeded");
    assert_null(f->s);
    assert_true(f->err[0] != '\0');
    return r;
}

static px__store_msg_t M(const char *ch, const char *epoch, uint64_t off, int64_t t, const char *d)
{
    return (px__store_msg_t){.channel = S(ch),
                             .epoch = epoch ? S(epoch) : (px_str_t){NULL, 0},
                             .offset = off,
                             .time_ms = t,
                             .data = S(d)};
}

/* Append offsets [from, to] to one channel, `per` messages per call. */
static void append_range(px__store_t *s, const char *ch, uint64_t from, uint64_t to, size_t per,
                         int64_t t0)
{
    px__store_msg_t *b = calloc(per, sizeof(*b));
    static const char payload[] = "{\"v\":\"0123456789012345678901234567890123456789\"}";
    for (uint64_t o = from; o <= to;) {
        size_t n = 0;
        for (; n < per && o <= to; n++, o++)
            b[n] = M(ch, EPOCH_A, o, t0 + (int64_t)o, payload);
        int r = px__store_append(s, b, n);
        if (r != 0)
            fail_msg("append: %d %s", r, px__store_errmsg(s));
    }
    free(b);
}

typedef struct got {
    size_t n, cap;
    struct {
        uint64_t off;
        int64_t t;
        size_t len;
        char *data;
    } * m;
    int stop_after; /* > 0: return 1 after this many; < 0: return that errno */
} got_t;

static int collect(void *ud, const px__store_msg_t *m)
{
    got_t *g = ud;
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->m = realloc(g->m, g->cap * sizeof(*g->m));
    }
    g->m[g->n].off = m->offset;
    g->m[g->n].t = m->time_ms;
    g->m[g->n].len = m->data.len;
    g->m[g->n].data = malloc(m->data.len + 1);
    memcpy(g->m[g->n].data, m->data.ptr, m->data.len);
    g->n++;
    if (g->stop_after < 0)
        return g->stop_after;
    return g->stop_after > 0 && g->n >= (size_t)g->stop_after ? 1 : 0;
}

static void got_free(got_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->m[i].data);
    free(g->m);
    memset(g, 0, sizeof(*g));
}

static got_t read_all(px__store_t *s, const char *ch, uint64_t since, size_t limit)
{
    got_t g = {0};
    int r = px__store_read(s, S(ch), since, limit, collect, &g);
    if (r != 0)
        fail_msg("read %s: %d %s", ch, r, px__store_errmsg(s));
    return g;
}

typedef struct chans {
    size_t n;
    px__store_channel_t c[512];
} chans_t;

static int collect_chan(void *ud, const px__store_channel_t *c)
{
    chans_t *cs = ud;
    if (cs->n == PX_ARRAY_SIZE(cs->c))
        return -ENOSPC;
    cs->c[cs->n++] = *c;
    return 0;
}

static chans_t *load(px__store_t *s)
{
    static chans_t cs;
    cs.n = 0;
    assert_int_equal(px__store_load_channels(s, collect_chan, &cs), 0);
    return &cs;
}

static const px__store_channel_t *find_chan(chans_t *cs, const void *name, size_t len)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->c[i].name_len == len && memcmp(cs->c[i].name, name, len) == 0)
            return &cs->c[i];
    return NULL;
}

static uint64_t last_offset(px__store_t *s, const char *ch)
{
    const px__store_channel_t *c = find_chan(load(s), ch, strlen(ch));
    if (!c)
        fail_msg("channel %s not found", ch);
    return c->last_offset;
}

static uint64_t earliest(px__store_t *s, const char *ch)
{
    uint64_t first = 0;
    int r = px__store_earliest(s, S(ch), &first);
    if (r != 0)
        fail_msg("earliest %s: %d", ch, r);
    return first;
}

static int count_commits(void *ud)
{
    ++*(int *)ud;
    return 0;
}

static int64_t pragma_int(px__store_t *s, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(px__store_sqlite_handle(s), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void db_path(const fx_t *f, char *out, size_t n)
{
    snprintf(out, n, "%s/plexus.db", f->dir);
}

/* Run raw SQL on the closed store's file (tests that tamper with it). */
static void raw_exec(const fx_t *f, const char *sql)
{
    char path[300];
    sqlite3 *db;
    db_path(f, path, sizeof(path));
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- open / reopen ------------------------------------------------------------------ */

static void test_reopen_keeps_channels(void **state)
{
    fx_t *f = *state;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/a/b/c/", f->dir);
    f->opts.data_dir = sub;
    fx_open(f);
    struct stat sb;
    snprintf(sub, sizeof(sub), "%s/a/b/c", f->dir);
    assert_int_equal(stat(sub, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);

    assert_int_equal(px__store_create_channel(f->s, S("empty"), S(EPOCH_A)), 0);
    append_range(f->s, "news", 1, 3, 2, 1000);
    px__store_msg_t m = M("other", EPOCH_B, 41, 5, "x");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    fx_reopen(f);

    chans_t *cs = load(f->s);
    assert_int_equal(cs->n, 3);
    const px__store_channel_t *c = find_chan(cs, "empty", 5);
    assert_non_null(c);
    assert_string_equal(c->epoch, EPOCH_A);
    assert_int_equal(c->last_offset, 0);
    c = find_chan(cs, "news", 4);
    assert_non_null(c);
    assert_string_equal(c->epoch, EPOCH_A);
    assert_int_equal(c->last_offset, 3);
    assert_string_equal(c->name, "news");
    c = find_chan(cs, "other", 5);
    assert_string_equal(c->epoch, EPOCH_B);
    assert_int_equal(c->last_offset, 41);

    got_t g = read_all(f->s, "news", 0, 0);
    assert_int_equal(g.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(g.m[i].off, i + 1);
        assert_int_equal(g.m[i].t, 1000 + (int64_t)i + 1);
    }
    got_free(&g);
    /* Appends continue from the restored offsets; an empty epoch means "the stored one". */
    m = M("news", NULL, 4, 6, "y");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    m = M("news", NULL, 4, 6, "again");
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    assert_non_null(strstr(px__store_errmsg(f->s), "not after"));
}

static void test_second_open_is_busy(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    px__store_t *s2 = (px__store_t *)1;
    char err[256];
    assert_int_equal(px__store_sqlite.open(&f->opts, &s2, err, sizeof(err)), -EBUSY);
    assert_null(s2);
    assert_non_null(strstr(err, "in use by another plexus process"));
}

static void test_bad_options(void **state)
{
    fx_t *f = *state;
    px__store_opts_t o = {0};
    px__store_t *s = NULL;
    char err[128];
    assert_int_equal(px__store_sqlite.open(&o, &s, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "data_dir"));
    o.data_dir = f->dir;
    o.durability = 7;
    assert_int_equal(px__store_sqlite.open(&o, &s, err, sizeof(err)), -EINVAL);
    o.durability = PX_DURABILITY_NORMAL;
    o.check = 9;
    assert_int_equal(px__store_sqlite.open(&o, &s, err, sizeof(err)), -EINVAL);
    /* A regular file where the directory should be. */
    char path[300];
    snprintf(path, sizeof(path), "%s/file", f->dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    o.check = 0;
    o.data_dir = path;
    assert_int_equal(px__store_sqlite.open(&o, &s, err, sizeof(err)), -ENOTDIR);
    assert_non_null(strstr(err, path));
}

static void test_registry(void **state)
{
    fx_t *f = *state;
    assert_ptr_equal(px__store_backend(NULL), &px__store_sqlite);
    assert_ptr_equal(px__store_backend(""), &px__store_sqlite);
    assert_ptr_equal(px__store_backend("sqlite"), &px__store_sqlite);
    assert_null(px__store_backend("postgres-not-built"));
    char err[128];
    assert_int_equal(px__store_open("nope", &f->opts, &f->s, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "nope"));
    assert_int_equal(px__store_open("sqlite", &f->opts, &f->s, err, sizeof(err)), 0);
    assert_string_equal(f->s->ops->name, "sqlite");

    char e1[PX__EPOCH_MAX + 1], e2[PX__EPOCH_MAX + 1];
    assert_int_equal(px__store_epoch_new(e1), 0);
    assert_int_equal(px__store_epoch_new(e2), 0);
    assert_int_equal(strlen(e1), 16);
    assert_true(px__store_epoch_ok(S(e1)));
    assert_string_not_equal(e1, e2);
    assert_false(px__store_epoch_ok(S("")));
    assert_false(px__store_epoch_ok(S("has space")));
    assert_false(px__store_epoch_ok(S("quote\"")));
    assert_false(px__store_epoch_ok(S("012345678901234567890123456789012")));
    assert_true(px__store_epoch_ok(S("01234567890123456789012345678901")));
}

/* ---- append ------------------------------------------------------------------------- */

static void test_append_batches_one_transaction(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    int commits = 0;
    sqlite3_commit_hook(px__store_sqlite_handle(f->s), count_commits, &commits);
    static const size_t sizes[] = {1, 100, 10000};
    uint64_t next = 1;
    for (size_t k = 0; k < PX_ARRAY_SIZE(sizes); k++) {
        commits = 0;
        append_range(f->s, "batch", next, next + sizes[k] - 1, sizes[k], 0);
        assert_int_equal(commits, 1);
        next += sizes[k];
    }
    /* A batch spanning channels is one transaction too. */
    px__store_msg_t b[300];
    char names[3][8] = {"c0", "c1", "c2"};
    for (size_t i = 0; i < 300; i++)
        b[i] = M(names[i % 3], EPOCH_A, i / 3 + 1, 7, "{}");
    commits = 0;
    assert_int_equal(px__store_append(f->s, b, 300), 0);
    assert_int_equal(commits, 1);
    assert_int_equal(px__store_append(f->s, b, 0), 0);
    assert_int_equal(commits, 1);
    sqlite3_commit_hook(px__store_sqlite_handle(f->s), NULL, NULL);

    fx_reopen(f);
    assert_int_equal(last_offset(f->s, "batch"), 10101);
    assert_int_equal(last_offset(f->s, "c2"), 100);
    got_t g = read_all(f->s, "batch", 0, 0);
    assert_int_equal(g.n, 10101);
    for (size_t i = 0; i < g.n; i++)
        assert_int_equal(g.m[i].off, i + 1);
    got_free(&g);
}

static void test_append_rejects_and_commits_nothing(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "a", 1, 5, 5, 0);
    int commits = 0;
    sqlite3_commit_hook(px__store_sqlite_handle(f->s), count_commits, &commits);

    /* Valid messages (incl. a new channel) followed by a stale offset: all or nothing. */
    px__store_msg_t b[4] = {M("a", EPOCH_A, 6, 0, "ok"), M("new", EPOCH_A, 1, 0, "ok"),
                            M("a", EPOCH_A, 7, 0, "ok"), M("a", EPOCH_A, 7, 0, "dup")};
    assert_int_equal(px__store_append(f->s, b, 4), -EINVAL);
    assert_non_null(strstr(px__store_errmsg(f->s), "message 3"));
    assert_int_equal(commits, 0);
    assert_int_equal(last_offset(f->s, "a"), 5);
    assert_int_equal(load(f->s)->n, 1);
    uint64_t first;
    assert_int_equal(px__store_earliest(f->s, S("new"), &first), -ENOENT);
    /* The cache was rolled back with the file: the same valid messages now go in. */
    assert_int_equal(px__store_append(f->s, b, 3), 0);
    assert_int_equal(last_offset(f->s, "a"), 7);
    assert_int_equal(last_offset(f->s, "new"), 1);

    /* Gaps are fine, going back is not. */
    px__store_msg_t m = M("a", NULL, 100, 0, "gap");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    m.offset = 99;
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);

    /* Argument errors are caught before any transaction. */
    commits = 0;
    m = M("a", "bad epoch", 101, 0, "x");
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    m = M("a", NULL, 101, 0, "x");
    m.offset = (uint64_t)INT64_MAX + 1;
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    m = M("", EPOCH_A, 1, 0, "x");
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    m = M("a", NULL, 101, 0, "");
    m.data = (px_str_t){NULL, 3};
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    assert_int_equal(commits, 0);
    sqlite3_commit_hook(px__store_sqlite_handle(f->s), NULL, NULL);
    /* The largest offset is accepted. */
    m = M("a", NULL, PX__OFFSET_MAX, 0, "max");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    got_t g = read_all(f->s, "a", PX__OFFSET_MAX - 1, 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.m[0].off, PX__OFFSET_MAX);
    got_free(&g);
}

static void test_epoch_change_resets_history(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "ch", 1, 5, 5, 0);
    assert_int_equal(px__store_create_channel(f->s, S("ch"), S(EPOCH_A)), 0); /* no-op */
    assert_int_equal(last_offset(f->s, "ch"), 5);

    /* A message in a new epoch starts a new history in the same transaction. */
    px__store_msg_t b[2] = {M("ch", EPOCH_B, 1, 0, "n1"), M("ch", NULL, 2, 0, "n2")};
    assert_int_equal(px__store_append(f->s, b, 2), 0);
    got_t g = read_all(f->s, "ch", 0, 0);
    assert_int_equal(g.n, 2);
    assert_memory_equal(g.m[0].data, "n1", 2);
    got_free(&g);
    fx_reopen(f);
    const px__store_channel_t *c = find_chan(load(f->s), "ch", 2);
    assert_string_equal(c->epoch, EPOCH_B);
    assert_int_equal(c->last_offset, 2);

    /* create_channel with another epoch does the same without a message. */
    assert_int_equal(px__store_create_channel(f->s, S("ch"), S(EPOCH_A)), 0);
    assert_int_equal(earliest(f->s, "ch"), 1);
    fx_reopen(f);
    c = find_chan(load(f->s), "ch", 2);
    assert_string_equal(c->epoch, EPOCH_A);
    assert_int_equal(c->last_offset, 0);
    g = read_all(f->s, "ch", 0, 0);
    assert_int_equal(g.n, 0);
    got_free(&g);
    assert_int_equal(px__store_create_channel(f->s, S("ch"), S("bad\\")), -EINVAL);
    assert_int_equal(px__store_create_channel(f->s, S(""), S(EPOCH_A)), -EINVAL);
}

/* ---- read / earliest ---------------------------------------------------------------- */

static void test_read_since_limit(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "r", 1, 50, 7, 100);
    append_range(f->s, "other", 1, 50, 50, 0);

    got_t g = read_all(f->s, "r", 0, 10);
    assert_int_equal(g.n, 10);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(g.m[i].off, i + 1);
    got_free(&g);
    g = read_all(f->s, "r", 45, 0);
    assert_int_equal(g.n, 5);
    assert_int_equal(g.m[0].off, 46);
    assert_int_equal(g.m[0].t, 146);
    assert_int_equal(g.m[4].off, 50);
    got_free(&g);
    g = read_all(f->s, "r", 20, 3);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.m[0].off, 21);
    assert_int_equal(g.m[2].off, 23);
    got_free(&g);
    g = read_all(f->s, "r", 50, 0);
    assert_int_equal(g.n, 0);
    got_free(&g);
    g = read_all(f->s, "r", UINT64_MAX, 0);
    assert_int_equal(g.n, 0);
    got_free(&g);
    g = read_all(f->s, "r", 0, SIZE_MAX);
    assert_int_equal(g.n, 50);
    got_free(&g);

    /* Callbacks stop the read early: > 0 quietly, < 0 as the result. */
    g = (got_t){.stop_after = 4};
    assert_int_equal(px__store_read(f->s, S("r"), 0, 0, collect, &g), 0);
    assert_int_equal(g.n, 4);
    got_free(&g);
    g = (got_t){.stop_after = -ECANCELED};
    assert_int_equal(px__store_read(f->s, S("r"), 0, 0, collect, &g), -ECANCELED);
    assert_int_equal(g.n, 1);
    got_free(&g);
    assert_int_equal(px__store_read(f->s, S("nope"), 0, 0, collect, &g), -ENOENT);

    assert_int_equal(earliest(f->s, "r"), 1);
    uint64_t first;
    assert_int_equal(px__store_earliest(f->s, S("nope"), &first), -ENOENT);
    assert_int_equal(px__store_create_channel(f->s, S("fresh"), S(EPOCH_A)), 0);
    assert_int_equal(earliest(f->s, "fresh"), 1);
}

/* ---- retention --------------------------------------------------------------------- */

static void test_trim_by_size(void **state)
{
    fx_t *f = *state;
    f->opts.history_size = 10;
    fx_open(f);
    append_range(f->s, "s", 1, 25, 4, 0);
    append_range(f->s, "t", 1, 5, 5, 0);
    got_t g = read_all(f->s, "s", 0, 0);
    assert_int_equal(g.n, 10);
    assert_int_equal(g.m[0].off, 16);
    assert_int_equal(g.m[9].off, 25);
    got_free(&g);
    assert_int_equal(earliest(f->s, "s"), 16);
    assert_int_equal(earliest(f->s, "t"), 1);
    assert_int_equal(px__store_trim(f->s, 0), 0);
    fx_reopen(f);
    assert_int_equal(px__store_trim(f->s, 0), 0); /* everyone re-checked once after open */
    assert_int_equal(earliest(f->s, "s"), 16);
    assert_int_equal(last_offset(f->s, "s"), 25);
    /* With gaps, everything at or below last_offset - history_size goes. */
    px__store_msg_t m = M("s", NULL, 1000, 0, "far");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    g = read_all(f->s, "s", 0, 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.m[0].off, 1000);
    got_free(&g);
}

static void test_trim_size_backlog_is_bounded(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "big", 1, 15000, 5000, 0);
    append_range(f->s, "mid", 1, 8000, 8000, 0);
    append_range(f->s, "small", 1, 5, 5, 0);
    /* Restart with a much smaller history: an append deletes a bounded amount... */
    f->opts.history_size = 10;
    fx_reopen(f);
    px__store_msg_t m = M("big", NULL, 15001, 0, "x");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    uint64_t first = earliest(f->s, "big");
    assert_true(first > 1 && first < 14992);
    /* ...and trim() finishes the job over several bounded calls. */
    int calls = 0, r;
    while ((r = px__store_trim(f->s, 0)) == 1)
        calls++;
    assert_int_equal(r, 0);
    assert_true(calls >= 1);
    assert_int_equal(earliest(f->s, "big"), 14992);
    assert_int_equal(earliest(f->s, "mid"), 7991);
    assert_int_equal(earliest(f->s, "small"), 1);
    got_t g = read_all(f->s, "mid", 0, 0);
    assert_int_equal(g.n, 10);
    got_free(&g);
}

static void test_trim_by_ttl(void **state)
{
    fx_t *f = *state;
    f->opts.history_ttl_ms = 1000;
    fx_open(f);
    /* Interleave two channels; time_ms = 1000 + offset. */
    for (uint64_t o = 1; o <= 100; o++) {
        px__store_msg_t b[2] = {M("x", EPOCH_A, o, 1000 + (int64_t)o, "x"),
                                M("y", EPOCH_B, o, 1000 + (int64_t)o, "y")};
        assert_int_equal(px__store_append(f->s, b, 2), 0);
    }
    assert_int_equal(px__store_trim(f->s, 1500), 0); /* nothing older than 500 */
    assert_int_equal(earliest(f->s, "x"), 1);
    assert_int_equal(px__store_trim(f->s, 2050), 0); /* drops time < 1050: offsets 1..49 */
    assert_int_equal(earliest(f->s, "x"), 50);
    assert_int_equal(earliest(f->s, "y"), 50);
    got_t g = read_all(f->s, "y", 0, 0);
    assert_int_equal(g.n, 51);
    got_free(&g);

    /* x and y expire entirely, z (newer) only partly: last offsets and epochs stay,
     * across a restart too (x/y from their rows, z from its newest message). */
    for (uint64_t o = 1; o <= 20; o++) {
        px__store_msg_t m = M("z", EPOCH_A, o, o <= 5 ? 5000000 : 10, "z");
        assert_int_equal(px__store_append(f->s, &m, 1), 0);
    }
    assert_int_equal(px__store_trim(f->s, 1000000), 0);
    assert_int_equal(earliest(f->s, "x"), 101);
    /* z6..20 claim an older time (clock stepped back) but TTL deletes a prefix of arrival
     * order, so they stay behind the fresh z1..5: histories never get holes. */
    assert_int_equal(earliest(f->s, "z"), 1);
    assert_int_equal(px__store_trim(f->s, 1000000), 0);
    fx_reopen(f);
    assert_int_equal(last_offset(f->s, "z"), 20);
    assert_int_equal(earliest(f->s, "z"), 1);
    g = read_all(f->s, "x", 0, 0);
    assert_int_equal(g.n, 0);
    got_free(&g);
    assert_int_equal(last_offset(f->s, "x"), 100);
    assert_string_equal(find_chan(load(f->s), "y", 1)->epoch, EPOCH_B);
    assert_int_equal(earliest(f->s, "x"), 101);
    px__store_msg_t m = M("x", NULL, 100, 2000000, "old");
    assert_int_equal(px__store_append(f->s, &m, 1), -EINVAL);
    m.offset = 101;
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    assert_int_equal(earliest(f->s, "x"), 101);
    /* now_ms near INT64_MIN must not overflow. */
    assert_int_equal(px__store_trim(f->s, INT64_MIN), 0);
}

static void test_trim_ttl_is_bounded(void **state)
{
    fx_t *f = *state;
    f->opts.history_ttl_ms = 10;
    fx_open(f);
    append_range(f->s, "t", 1, 25000, 5000, 0);
    int calls = 0, r;
    while ((r = px__store_trim(f->s, 1000000)) == 1)
        calls++;
    assert_int_equal(r, 0);
    assert_int_equal(calls, 2); /* 10000 per call */
    assert_int_equal(earliest(f->s, "t"), 25001);
}

/* ---- bytes round-trip --------------------------------------------------------------- */

static void test_binary_roundtrip(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    /* Every byte value as a one-byte channel name, plus a maximal name with all bytes. */
    char one[256][1], big[PX__CHANNEL_MAX], data[1024];
    for (int i = 0; i < 256; i++)
        one[i][0] = (char)i;
    for (int i = 0; i < PX__CHANNEL_MAX; i++)
        big[i] = (char)(255 - i);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7);
    px__store_msg_t b[258];
    for (int i = 0; i < 256; i++)
        b[i] = (px__store_msg_t){.channel = {one[i], 1},
                                 .epoch = S(EPOCH_A),
                                 .offset = 1,
                                 .data = {data, (size_t)i * 4}};
    b[256] = (px__store_msg_t){.channel = {big, sizeof(big)},
                               .epoch = S("~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
                               .offset = 1,
                               .data = {data, sizeof(data)}};
    b[257] = (px__store_msg_t){.channel = {big, sizeof(big)}, .offset = 2, .data = {NULL, 0}};
    assert_int_equal(px__store_append(f->s, b, 258), 0);
    char toolong[PX__CHANNEL_MAX + 1] = {0};
    px__store_msg_t bad = {.channel = {toolong, sizeof(toolong)}, .epoch = S(EPOCH_A), .offset = 1};
    assert_int_equal(px__store_append(f->s, &bad, 1), -EINVAL);
    fx_reopen(f);

    chans_t *cs = load(f->s);
    assert_int_equal(cs->n, 257);
    for (int i = 0; i < 256; i++) {
        const px__store_channel_t *c = find_chan(cs, one[i], 1);
        assert_non_null(c);
        assert_int_equal(c->name[1], '\0');
        got_t g = {0};
        assert_int_equal(px__store_read(f->s, (px_str_t){one[i], 1}, 0, 0, collect, &g), 0);
        assert_int_equal(g.n, 1);
        assert_int_equal(g.m[0].len, (size_t)i * 4);
        if (i)
            assert_memory_equal(g.m[0].data, data, (size_t)i * 4);
        got_free(&g);
    }
    const px__store_channel_t *c = find_chan(cs, big, sizeof(big));
    assert_non_null(c);
    assert_string_equal(c->epoch, "~!#$%&'()*+,-./:;<=>?@[]^_`{|}");
    got_t g = {0};
    assert_int_equal(px__store_read(f->s, (px_str_t){big, sizeof(big)}, 0, 0, collect, &g), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.m[0].len, sizeof(data));
    assert_memory_equal(g.m[0].data, data, sizeof(data));
    assert_int_equal(g.m[1].len, 0);
    got_free(&g);
}

/* ---- durability pragmas ------------------------------------------------------------- */

static void test_durability_pragmas(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(px__store_sqlite_handle(f->s), "PRAGMA journal_mode", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(pragma_int(f->s, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(pragma_int(f->s, "PRAGMA wal_autocheckpoint"), 4000);
    assert_int_equal(pragma_int(f->s, "PRAGMA journal_size_limit"), 64 << 20);
    assert_int_equal(pragma_int(f->s, "PRAGMA busy_timeout"), 5000);
    assert_int_equal(pragma_int(f->s, "PRAGMA user_version"), 3);
    assert_int_equal(pragma_int(f->s, "PRAGMA application_id"), 0x706c7873);

    f->opts.durability = PX_DURABILITY_FULL;
    fx_reopen(f);
    assert_int_equal(pragma_int(f->s, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(pragma_int(f->s, "PRAGMA fullfsync"), 0);
}

/* ---- event names (schema 3) ----------------------------------------------------------- */

typedef struct evgot {
    int n;
    char event[4][32];
} evgot_t;

static int collect_event(void *ud, const px__store_msg_t *m)
{
    evgot_t *g = ud;
    if (g->n < 4)
        snprintf(g->event[g->n++], sizeof g->event[0], "%.*s", (int)m->event.len, m->event.ptr);
    return 0;
}

/* Messages keep their event name across a reopen; a database of schema 2 (no event column)
 * is upgraded and its old messages read back with "". */
static void test_event_names(void **state)
{
    fx_t *f = *state;
    /* A schema-2 database with one message, made by hand. */
    char path[300];
    snprintf(path, sizeof path, "%s/plexus.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "PRAGMA application_id = 1886156915;"
                     "CREATE TABLE channels(id INTEGER PRIMARY KEY, name BLOB NOT NULL UNIQUE,"
                     " epoch TEXT NOT NULL, last_offset INTEGER NOT NULL);"
                     "CREATE TABLE messages(seq INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL,"
                     " offset INTEGER NOT NULL, time_ms INTEGER NOT NULL, data BLOB NOT NULL);"
                     "CREATE UNIQUE INDEX messages_by_channel ON messages(channel_id, offset);"
                     "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
                     "INSERT INTO meta VALUES('instance', '00112233445566778899aabbccddeeff');"
                     "INSERT INTO channels VALUES(1, CAST('c' AS BLOB), '" EPOCH_A "', 0);"
                     "INSERT INTO messages VALUES(1, 1, 1, 5, CAST('1' AS BLOB));"
                     "PRAGMA user_version = 2;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    fx_open(f);
    assert_int_equal(pragma_int(f->s, "PRAGMA user_version"), 3);
    px__store_msg_t m[2] = {M("c", EPOCH_A, 2, 6, "2"), M("c", EPOCH_A, 3, 7, "3")};
    m[0].event = S("client-typing");
    assert_int_equal(px__store_append(f->s, m, 2), 0);
    fx_reopen(f);
    evgot_t g = {0};
    assert_int_equal(px__store_read(f->s, S("c"), 0, 0, collect_event, &g), 0);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.event[0], "");
    assert_string_equal(g.event[1], "client-typing");
    assert_string_equal(g.event[2], "");
}

/* fork() with a pipe from the child to the parent: *fd is the write end in the
 * child (where it returns 0), the read end in the parent (the child's pid). */
static pid_t fork_piped(int *fd)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    close(fds[pid == 0 ? 0 : 1]);
    *fd = fds[pid == 0 ? 1 : 0];
    return pid;
}

/* ---- kill -9 ------------------------------------------------------------------------ */

static void test_kill9_keeps_acknowledged(void **state)
{
    fx_t *f = *state;
    int fd;
    pid_t pid = fork_piped(&fd);
    if (pid == 0) {
        px__store_t *s;
        char err[256];
        if (px__store_sqlite.open(&f->opts, &s, err, sizeof(err)) != 0)
            _exit(2);
        for (uint64_t o = 1; o <= 2000; o += 100) {
            px__store_msg_t b[100];
            for (int i = 0; i < 100; i++)
                b[i] = M("k", EPOCH_A, o + (uint64_t)i, 1, "{\"acked\":true}");
            if (px__store_append(s, b, 100) != 0)
                _exit(3);
            uint64_t acked = o + 99; /* acknowledged only after append() returned */
            if (write(fd, &acked, sizeof(acked)) != sizeof(acked))
                _exit(4);
        }
        raise(SIGKILL); /* no close, no checkpoint */
        _exit(5);
    }
    uint64_t acked = 0, v;
    while (read(fd, &v, sizeof(v)) == sizeof(v))
        acked = v;
    close(fd);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(acked, 2000);

    fx_open(f); /* the lock died with the child; the WAL is recovered */
    assert_int_equal(last_offset(f->s, "k"), 2000);
    got_t g = read_all(f->s, "k", 0, 0);
    assert_int_equal(g.n, 2000);
    got_free(&g);
}

/* ---- corruption, versions, permissions ---------------------------------------------- */

static void xorshift_fill(unsigned char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)xorshift64(&seed);
}

static void scribble(const fx_t *f, off_t at, size_t n)
{
    char path[300];
    unsigned char junk[16384];
    assert_true(n <= sizeof(junk));
    xorshift_fill(junk, n, 0x9e3779b97f4a7c15ull + (uint64_t)at);
    db_path(f, path, sizeof(path));
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, n, at), (ssize_t)n);
    close(fd);
}

static off_t db_size(const fx_t *f)
{
    char path[300];
    struct stat sb;
    db_path(f, path, sizeof(path));
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

static void test_corrupt_pages_fail_integrity(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    for (int c = 0; c < 8; c++) {
        char name[16];
        snprintf(name, sizeof(name), "c%d", c);
        append_range(f->s, name, 1, 300, 300, 0);
    }
    fx_close(f);
    off_t size = db_size(f);
    assert_true(size > 20 * 4096);
    scribble(f, 3 * 4096, 3 * 4096); /* garbage over pages 4..6 */

    static const int checks[] = {PX_STORE_CHECK_AUTO, PX_STORE_CHECK_FULL, PX_STORE_CHECK_QUICK};
    for (size_t i = 0; i < PX_ARRAY_SIZE(checks); i++) {
        f->opts.check = checks[i];
        assert_int_equal(fx_open_err(f), -EUCLEAN);
        assert_non_null(strstr(f->err, "integrity check failed"));
        assert_non_null(strstr(f->err, f->dir));
    }
    /* Never silently recreated. */
    assert_int_equal(db_size(f), size);
}

static void test_corrupt_header_fails_integrity(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "h", 1, 10, 10, 0);
    fx_close(f);
    scribble(f, 0, 100);
    assert_int_equal(fx_open_err(f), -EUCLEAN);
    assert_non_null(strstr(f->err, "integrity check failed"));
}

/* A channel's fresh epoch is stable for one database (across reopen), differs per name
 * and differs in a new database; a version-1 database gains an instance id. */
static void test_fresh_epoch(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    char a[PX__EPOCH_MAX + 1], b[PX__EPOCH_MAX + 1], c[PX__EPOCH_MAX + 1];
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"room", 4}, a), 0);
    assert_int_equal(strlen(a), 16);
    assert_true(px__store_epoch_ok((px_str_t){a, strlen(a)}));
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"room2", 5}, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"", 0}, c), -EINVAL);
    fx_reopen(f);
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"room", 4}, c), 0);
    assert_string_equal(a, c);
    /* A new database: new instance, new epochs. */
    fx_close(f);
    char path[300];
    db_path(f, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    fx_open(f);
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"room", 4}, c), 0);
    assert_string_not_equal(a, c);
    /* Migration from version 1: the instance appears, stored channels are kept. */
    px__store_msg_t m = M("old", "0123456789abcdef", 1, 1, "1");
    assert_int_equal(px__store_append(f->s, &m, 1), 0);
    fx_close(f);
    raw_exec(f, "DROP TABLE meta; ALTER TABLE messages DROP COLUMN event; PRAGMA user_version = 1");
    fx_open(f);
    assert_int_equal(pragma_int(f->s, "PRAGMA user_version"), 3);
    assert_int_equal(px__store_fresh_epoch(f->s, (px_str_t){"room", 4}, b), 0);
    assert_string_not_equal(b, c);
    uint64_t first = 0;
    assert_int_equal(px__store_earliest(f->s, (px_str_t){"old", 3}, &first), 0);
    assert_int_equal(first, 1);
}

/* Store v2: offsets and epochs chosen by the store. */
static void test_store_assigns(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    char fresh[PX__EPOCH_MAX + 1];
    assert_int_equal(px__store_fresh_epoch(f->s, S("n"), fresh), 0);
    px__store_msg_t b[3] = {M("n", NULL, 0, 1, "1"), M("n", NULL, 0, 1, "2"),
                            M("m", NULL, 7, 1, "3")};
    px__store_assigned_t got[3];
    assert_int_equal(px__store_append_assigned(f->s, b, 3, got), 0);
    assert_int_equal(got[0].offset, 1);
    assert_int_equal(got[1].offset, 2);
    assert_int_equal(got[2].offset, 7);
    assert_int_equal(b[0].offset, 0); /* the input is left alone */
    assert_int_equal(got[0].epoch.len, strlen(fresh));
    assert_memory_equal(got[0].epoch.ptr, fresh, got[0].epoch.len);
    /* A batch that fails validation assigns nothing: the next one continues. */
    px__store_msg_t c[2] = {M("n", NULL, 0, 1, "x"), M("n", NULL, 1, 1, "going back")};
    assert_int_equal(px__store_append_assigned(f->s, c, 2, got), -EINVAL);
    assert_int_equal(px__store_append_assigned(f->s, c, 1, got), 0);
    assert_int_equal(got[0].offset, 3);
    assert_int_equal(last_offset(f->s, "n"), 3);
}

/* Several processes of one host share a data directory (opts.shared): offsets the store
 * assigns stay one sequence per channel whoever appends, a channel another process made
 * is found, and a store that does not share refuses the directory (and the reverse). */
static void test_shared_two_handles(void **state)
{
    fx_t *f = *state;
    f->opts.shared = true;
    fx_open(f);
    px__store_t *b = NULL;
    char err[256];
    assert_int_equal(px__store_sqlite.open(&f->opts, &b, err, sizeof(err)), 0);
    px__store_assigned_t got[2];
    px__store_msg_t m1[2] = {M("ch", NULL, 0, 1, "a1"), M("ch", NULL, 0, 1, "a2")};
    assert_int_equal(px__store_append_assigned(f->s, m1, 2, got), 0);
    assert_int_equal(got[1].offset, 2);
    char epoch[PX__EPOCH_MAX + 1] = "";
    memcpy(epoch, got[1].epoch.ptr, got[1].epoch.len);
    /* b cached nothing of "ch": it continues a's sequence, in a's epoch. */
    px__store_msg_t m2 = M("ch", NULL, 0, 1, "b3");
    assert_int_equal(px__store_append_assigned(b, &m2, 1, got), 0);
    assert_int_equal(got[0].offset, 3);
    assert_int_equal(got[0].epoch.len, strlen(epoch));
    assert_memory_equal(got[0].epoch.ptr, epoch, strlen(epoch));
    /* a's cache is behind now: it reads b's append before assigning. */
    assert_int_equal(px__store_append_assigned(f->s, &m1[0], 1, got), 0);
    assert_int_equal(got[0].offset, 4);
    got_t g = read_all(b, "ch", 0, 0);
    assert_int_equal(g.n, 4);
    for (size_t i = 0; i < g.n; i++)
        assert_int_equal(g.m[i].off, i + 1);
    got_free(&g);
    /* A channel only b made: a reads it and knows where it starts. */
    px__store_msg_t m3 = M("only-b", NULL, 0, 1, "x");
    assert_int_equal(px__store_append(b, &m3, 1), 0);
    g = read_all(f->s, "only-b", 0, 0);
    assert_int_equal(g.n, 1);
    got_free(&g);
    assert_int_equal(earliest(f->s, "only-b"), 1);
    /* A new epoch set by b: a's next append follows it (offsets restart). */
    assert_int_equal(px__store_create_channel(b, S("ch"), S(EPOCH_B)), 0);
    assert_int_equal(px__store_append_assigned(f->s, &m1[0], 1, got), 0);
    assert_int_equal(got[0].offset, 1);
    assert_memory_equal(got[0].epoch.ptr, EPOCH_B, 16);
    px__store_close(b);

    /* Sharing and not sharing never mix. */
    f->opts.shared = false;
    assert_int_equal(px__store_sqlite.open(&f->opts, &b, err, sizeof(err)), -EBUSY);
    assert_non_null(strstr(err, "in use by another plexus process"));
    px__store_close(f->s);
    f->s = NULL;
    fx_open(f); /* not shared */
    f->opts.shared = true;
    assert_int_equal(px__store_sqlite.open(&f->opts, &b, err, sizeof(err)), -EBUSY);
    assert_non_null(strstr(err, "does not share it"));
}

/* Shared, the asynchronous interface the hub drives (processes of one host are nodes):
 * only a store opened shared offers it; callbacks run on the loop's next turn, never inside
 * the call; a read returns the channel's view, also for a channel not stored yet; what one
 * handle commits the other's read sees. */
typedef struct acb {
    int calls, status;
    uint64_t offsets[4];
    char epoch[PX__EPOCH_MAX + 1];
    uint64_t last, first;
    size_t n;
    char data[4][16];
} acb_t;

static void on_appended(void *ud, int status, const px__store_assigned_t *out)
{
    acb_t *a = ud;
    a->calls++;
    a->status = status;
    for (size_t i = 0; !status && i < 2; i++)
        a->offsets[i] = out[i].offset;
    if (!status)
        snprintf(a->epoch, sizeof a->epoch, "%.*s", (int)out[0].epoch.len, out[0].epoch.ptr);
}

static void on_read(void *ud, const px__store_view_t *v)
{
    acb_t *a = ud;
    a->calls++;
    a->status = v->status;
    if (v->status)
        return;
    snprintf(a->epoch, sizeof a->epoch, "%.*s", (int)v->epoch.len, v->epoch.ptr);
    a->last = v->last_offset;
    a->first = v->first_offset;
    a->n = v->n;
    for (size_t i = 0; i < v->n && i < 4; i++) {
        a->offsets[i] = v->msgs[i].offset;
        snprintf(a->data[i], sizeof a->data[i], "%.*s", (int)v->msgs[i].data.len,
                 v->msgs[i].data.ptr);
    }
}

static void test_shared_async(void **state)
{
    fx_t *f = *state;
    fx_open(f); /* one process: no asynchronous interface, the storage thread calls it */
    assert_int_equal(f->s->ops->flags, 0);
    assert_null(f->s->ops->append_async);
    px__store_close(f->s);
    f->s = NULL;
    f->opts.shared = true;
    fx_open(f);
    assert_int_equal(f->s->ops->flags, PX_STORE_ASYNC | PX_STORE_SHARED);
    px__store_t *b = NULL;
    char err[256];
    assert_int_equal(px__store_sqlite.open(&f->opts, &b, err, sizeof(err)), 0);
    px_loop_t *loop = px_loop_new();
    assert_non_null(loop);
    assert_int_equal(f->s->ops->attach(f->s, loop), 0);
    assert_int_equal(b->ops->attach(b, loop), 0);

    /* A channel nobody stored: its fresh epoch, nothing before offset 1. */
    acb_t r0 = {0};
    assert_int_equal(b->ops->read_async(b, S("ch"), 0, 10, on_read, &r0), 0);
    assert_int_equal(r0.calls, 0); /* never inside the call */
    px_loop_run_once(loop, 0);
    assert_int_equal(r0.calls, 1);
    assert_int_equal(r0.status, 0);
    char fresh[PX__EPOCH_MAX + 1];
    assert_int_equal(px__store_fresh_epoch(f->s, S("ch"), fresh), 0);
    assert_string_equal(r0.epoch, fresh);
    assert_int_equal(r0.last, 0);
    assert_int_equal(r0.first, 1);
    assert_int_equal(r0.n, 0);

    px__store_msg_t m[2] = {M("ch", NULL, 0, 1, "a1"), M("ch", NULL, 0, 2, "a2")};
    acb_t a = {0};
    assert_int_equal(f->s->ops->append_async(f->s, m, 2, on_appended, &a), 0);
    assert_int_equal(a.calls, 0);
    px_loop_run_once(loop, 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.offsets[0], 1);
    assert_int_equal(a.offsets[1], 2);
    assert_string_equal(a.epoch, fresh); /* the epoch every process computes */

    /* The other handle (process) appends after a's messages, and reads them all. */
    acb_t a2 = {0};
    assert_int_equal(b->ops->append_async(b, m, 2, on_appended, &a2), 0);
    acb_t r1 = {0};
    assert_int_equal(b->ops->read_async(b, S("ch"), 1, 2, on_read, &r1), 0);
    px_loop_run_once(loop, 0);
    assert_int_equal(a2.calls, 1);
    assert_int_equal(a2.offsets[0], 3);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.last, 4);
    assert_int_equal(r1.first, 1);
    assert_int_equal(r1.n, 2);
    assert_int_equal(r1.offsets[0], 2);
    assert_int_equal(r1.offsets[1], 3);
    assert_string_equal(r1.data[0], "a2");
    assert_string_equal(r1.data[1], "a1");

    /* Closed with a callback pending (the hub closes its store once its loop ended): it
     * runs once, with an error. */
    acb_t r2 = {0};
    assert_int_equal(b->ops->read_async(b, S("ch"), 0, 0, on_read, &r2), 0);
    px__store_close(b);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, -ESHUTDOWN);
    px__store_close(f->s);
    f->s = NULL;
    px_loop_free(loop);
}

/* Processes appending at the same time, one message per transaction: every offset of
 * 1..N once, no append refused (the write lock is waited for, not failed). */
static void test_shared_processes(void **state)
{
    fx_t *f = *state;
    f->opts.shared = true;
    enum { PROCS = 3, EACH = 150 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            px__store_t *s = NULL;
            char err[256];
            if (px__store_sqlite.open(&f->opts, &s, err, sizeof(err)) != 0) {
                fprintf(stderr, "process %d: open: %s\n", p, err);
                _exit(2);
            }
            for (int i = 0; i < EACH; i++) {
                char d[32];
                snprintf(d, sizeof d, "%d.%d", p, i);
                px__store_msg_t m = M(i % 2 ? "odd" : "even", NULL, 0, 1, d);
                if (px__store_append(s, &m, 1) != 0)
                    _exit(3);
            }
            px__store_close(s);
            _exit(0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    fx_open(f);
    for (int k = 0; k < 2; k++) {
        got_t g = read_all(f->s, k ? "odd" : "even", 0, 0);
        assert_int_equal(g.n, PROCS * EACH / 2);
        for (size_t i = 0; i < g.n; i++)
            assert_int_equal(g.m[i].off, i + 1);
        got_free(&g);
    }
}

static void test_newer_schema_version(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    fx_close(f);
    raw_exec(f, "PRAGMA user_version = 4");
    assert_int_equal(fx_open_err(f), -ENOTSUP);
    assert_non_null(strstr(f->err, "schema version 4"));
    assert_non_null(strstr(f->err, "newer"));
}

static void test_foreign_database(void **state)
{
    fx_t *f = *state;
    raw_exec(f, "CREATE TABLE notes(x)");
    assert_int_equal(fx_open_err(f), -EINVAL);
    assert_non_null(strstr(f->err, "not a plexus database"));
}

/* Run `fn` as an unprivileged user when we are root (permissions do not bind root),
 * in a child; return its result and copy its error text. */
static int as_nobody(fx_t *f, int (*fn)(fx_t *))
{
    if (geteuid() != 0)
        return fn(f);
    int fd;
    pid_t pid = fork_piped(&fd);
    if (pid == 0) {
        if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
            _exit(100);
        int r = fn(f);
        ssize_t ignored = write(fd, f->err, strlen(f->err));
        (void)ignored;
        _exit(-r);
    }
    ssize_t n = read(fd, f->err, sizeof(f->err) - 1);
    f->err[n > 0 ? n : 0] = '\0';
    close(fd);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 100);
    return -WEXITSTATUS(status);
}

static int try_open(fx_t *f)
{
    px__store_t *s = NULL;
    f->err[0] = '\0';
    int r = px__store_sqlite.open(&f->opts, &s, f->err, sizeof(f->err));
    px__store_close(s);
    return r;
}

static void give_to_nobody(const char *path)
{
    if (geteuid() == 0)
        assert_int_equal(chown(path, 65534, 65534), 0);
}

static void test_readonly_dir(void **state)
{
    fx_t *f = *state;
    give_to_nobody(f->dir);
    assert_int_equal(chmod(f->dir, 0500), 0);
    assert_int_equal(as_nobody(f, try_open), -EACCES);
    assert_non_null(strstr(f->err, f->dir));
    assert_non_null(strstr(f->err, "Permission denied"));

    /* A data_dir that would have to be created inside it. */
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/sub", f->dir);
    f->opts.data_dir = sub;
    assert_int_equal(as_nobody(f, try_open), -EACCES);
    assert_non_null(strstr(f->err, "cannot create data directory"));
    f->opts.data_dir = f->dir;
    assert_int_equal(chmod(f->dir, 0700), 0);
}

static void test_readonly_db_file(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    append_range(f->s, "ro", 1, 3, 3, 0);
    fx_close(f);
    char path[300];
    give_to_nobody(f->dir);
    snprintf(path, sizeof(path), "%s/plexus.lock", f->dir);
    give_to_nobody(path);
    db_path(f, path, sizeof(path));
    assert_int_equal(chmod(path, 0444), 0);
    assert_int_equal(as_nobody(f, try_open), -EROFS);
    assert_non_null(strstr(f->err, "read-only"));
}

/* ---- I/O failure injection ---------------------------------------------------------- */

static void check_state(px__store_t *s, uint64_t a_last, uint64_t b_last, bool have_new)
{
    assert_int_equal(last_offset(s, "fa"), a_last);
    assert_int_equal(last_offset(s, "fb"), b_last);
    chans_t *cs = load(s);
    assert_int_equal(cs->n, have_new ? 3 : 2);
    got_t g = read_all(s, "fa", 0, 0);
    assert_int_equal(g.n, a_last);
    for (size_t i = 0; i < g.n; i++)
        assert_int_equal(g.m[i].off, i + 1);
    got_free(&g);
    g = read_all(s, "fb", 0, 0);
    assert_int_equal(g.n, b_last);
    got_free(&g);
}

/* SQLite ioerr style: fail the Nth write/sync (then all after it, or just that one),
 * N = 0, 1, 2... until the append goes through without a fault. Every failed append
 * must leave no trace, in the open store and after a reopen, and the store must stay
 * usable. */
static void fault_loop(fx_t *f, unsigned kinds, long fail_n)
{
    px__store_sqlite_fault(0, 0, 0); /* route the store through the shim */
    fx_open(f);
    append_range(f->s, "fa", 1, 10, 10, 0);
    append_range(f->s, "fb", 1, 10, 10, 0);
    char big[3000];
    memset(big, 'z', sizeof(big));
    px__store_msg_t b[60];
    for (int i = 0; i < 60; i++) {
        const char *ch = i % 3 == 0 ? "fa" : i % 3 == 1 ? "fb" : "fnew";
        b[i] = (px__store_msg_t){.channel = S(ch),
                                 .epoch = S(EPOCH_A),
                                 .offset = 11 + (uint64_t)i / 3,
                                 .data = {big, sizeof(big)}};
    }
    int failures = 0;
    for (long skip = 0;; skip++) {
        px__store_sqlite_fault(kinds, skip, fail_n);
        int r = px__store_append(f->s, b, 60);
        long hits = px__store_sqlite_fault_hits();
        px__store_sqlite_fault(0, 0, 0);
        if (r == 0) {
            if (hits == 0)
                break;
            /* A transient fault SQLite retried or that hit a checkpoint after COMMIT:
             * then the batch must be entirely there. Undo it for the next round. */
            check_state(f->s, 30, 30, true);
            fx_reopen(f);
            check_state(f->s, 30, 30, true);
            fx_close(f);
            rm_rf(f->dir);
            assert_int_equal(mkdir(f->dir, 0700), 0);
            fx_open(f);
            append_range(f->s, "fa", 1, 10, 10, 0);
            append_range(f->s, "fb", 1, 10, 10, 0);
            continue;
        }
        failures++;
        assert_true(hits > 0);
        assert_true(r == -EIO || r == -ENOSPC);
        if (kinds & PX_STORE_FAULT_FULL)
            assert_int_equal(r, -ENOSPC);
        assert_true(px__store_errmsg(f->s)[0] != '\0');
        check_state(f->s, 10, 10, false);
        if (skip % 4 == 0) {
            fx_reopen(f);
            check_state(f->s, 10, 10, false);
        }
        assert_true(skip < 10000);
    }
    assert_true(failures > 0);
    check_state(f->s, 30, 30, true);
    fx_reopen(f);
    check_state(f->s, 30, 30, true);
}

static void test_fault_write_persistent(void **state)
{
    fault_loop(*state, PX_STORE_FAULT_WRITE, -1);
}

static void test_fault_write_transient(void **state)
{
    fault_loop(*state, PX_STORE_FAULT_WRITE, 1);
}

static void test_fault_disk_full(void **state)
{
    fault_loop(*state, PX_STORE_FAULT_WRITE | PX_STORE_FAULT_FULL, -1);
}

static void test_fault_sync_full_durability(void **state)
{
    fx_t *f = *state;
    f->opts.durability = PX_DURABILITY_FULL;
    fault_loop(f, PX_STORE_FAULT_SYNC, -1);
}

static void test_fault_read(void **state)
{
    fx_t *f = *state;
    px__store_sqlite_fault(0, 0, 0);
    fx_open(f);
    append_range(f->s, "fr", 1, 2000, 2000, 0);
    /* Cold page cache (the open's integrity check warmed it): reads hit the file. */
    assert_int_equal(sqlite3_db_release_memory(px__store_sqlite_handle(f->s)), SQLITE_OK);
    px__store_sqlite_fault(PX_STORE_FAULT_READ, 0, -1);
    got_t g = {0};
    int r = px__store_read(f->s, S("fr"), 0, 0, collect, &g);
    px__store_sqlite_fault(0, 0, 0);
    got_free(&g);
    assert_int_equal(r, -EIO);
    assert_non_null(strstr(px__store_errmsg(f->s), "read messages"));
    g = read_all(f->s, "fr", 0, 0);
    assert_int_equal(g.n, 2000);
    got_free(&g);
}

static void test_fault_open(void **state)
{
    fx_t *f = *state;
    px__store_sqlite_fault(PX_STORE_FAULT_OPEN, 0, -1);
    int r = fx_open_err(f);
    px__store_sqlite_fault(0, 0, 0);
    assert_true(r < 0);
    assert_non_null(strstr(f->err, "plexus.db"));
    fx_open(f);
}

/* ---- OOM ---------------------------------------------------------------------------- */

static struct {
    long countdown; /* allocations left before failing; < 0: never fail */
    long live;      /* allocated minus freed */
    bool failed;    /* the countdown fired */
} oom;

static bool oom_fail(void)
{
    if (oom.countdown < 0 || oom.countdown-- != 0)
        return false;
    oom.failed = true;
    return true;
}

static void *oom_malloc(size_t n)
{
    if (oom_fail())
        return NULL;
    void *p = malloc(n);
    oom.live += p != NULL;
    return p;
}

static void *oom_calloc(size_t a, size_t b)
{
    if (oom_fail())
        return NULL;
    void *p = calloc(a, b);
    oom.live += p != NULL;
    return p;
}

static void *oom_realloc(void *p, size_t n)
{
    if (oom_fail())
        return NULL;
    void *q = realloc(p, n);
    oom.live += !p && q;
    return q;
}

static void oom_free(void *p)
{
    oom.live -= p != NULL;
    free(p);
}

static void test_oom_loop(void **state)
{
    fx_t *f = *state;
    assert_int_equal(px_set_allocator(oom_malloc, oom_realloc, oom_calloc, oom_free), 0);
    /* open: fail the Nth allocation until it succeeds; never leak. */
    for (long n = 0;; n++) {
        oom.countdown = n;
        oom.live = 0;
        px__store_t *s = NULL;
        char err[256];
        int r = px__store_sqlite.open(&f->opts, &s, err, sizeof(err));
        oom.countdown = -1;
        px__store_close(s);
        assert_int_equal(oom.live, 0);
        if (r == 0)
            break;
        assert_int_equal(r, -ENOMEM);
        assert_true(n < 100);
    }
    /* append creating many channels (cache growth, undo log growth). */
    px__store_msg_t b[200];
    char names[200][16];
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof(names[i]), "m%d", i);
        b[i] = M(names[i], EPOCH_A, 1, 0, "{}");
    }
    for (long n = 0;; n++) {
        oom.countdown = -1;
        oom.live = 0;
        fx_open(f);
        oom.countdown = n;
        oom.failed = false;
        int r = px__store_append(f->s, b, 200);
        oom.countdown = -1;
        if (r == 0) {
            /* Either no failure was injected (done) or it hit the hash table's growth,
             * which is allowed to fail (longer chains). */
            assert_int_equal(load(f->s)->n, 200);
            fx_close(f);
            assert_int_equal(oom.live, 0);
            rm_rf(f->dir);
            assert_int_equal(mkdir(f->dir, 0700), 0);
            if (!oom.failed)
                break;
            continue;
        }
        assert_int_equal(r, -ENOMEM);
        assert_int_equal(load(f->s)->n, 0);
        fx_close(f);
        assert_int_equal(oom.live, 0);
        assert_true(n < 1000);
    }
    assert_int_equal(px_set_allocator(malloc, realloc, calloc, free), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reopen_keeps_channels),
        T(test_second_open_is_busy),
        T(test_bad_options),
        T(test_registry),
        T(test_append_batches_one_transaction),
        T(test_append_rejects_and_commits_nothing),
        T(test_epoch_change_resets_history),
        T(test_read_since_limit),
        T(test_trim_by_size),
        T(test_trim_size_backlog_is_bounded),
        T(test_trim_by_ttl),
        T(test_trim_ttl_is_bounded),
        T(test_binary_roundtrip),
        T(test_durability_pragmas),
        T(test_event_names),
        T(test_kill9_keeps_acknowledged),
        T(test_corrupt_pages_fail_integrity),
        T(test_corrupt_header_fails_integrity),
        T(test_newer_schema_version),
        T(test_fresh_epoch),
        T(test_store_assigns),
        T(test_shared_two_handles),
        T(test_shared_processes),
        T(test_shared_async),
        T(test_foreign_database),
        T(test_readonly_dir),
        T(test_readonly_db_file),
        T(test_fault_write_persistent),
        T(test_fault_write_transient),
        T(test_fault_disk_full),
        T(test_fault_sync_full_durability),
        T(test_fault_read),
        T(test_fault_open),
        T(test_oom_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
