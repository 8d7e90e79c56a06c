/* The hub's presence counted per user (issue 14): connections of one user are one member
 * (user_first / user_last on events, one entry per user in lists and counts), a bound on
 * members refuses new users only, observers see occupancy and users arriving and leaving,
 * a subscribe can carry the member list and the latest message, and messages keep their
 * publisher's user. A real hub thread and two workers; clients are driven by messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "hub/frontend.h"

#define MAXLOG 256
#define MAXCLI 16

typedef struct logent {
    char kind;  /* 'j' join, 'l' leave (deliveries), 'J'/'L' observer presence, 'o'/'v' occupancy */
    int client; /* deliveries: the receiving client */
    char user[32];
    int first, last;
    char channel[64];
} logent_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static logent_t logv[MAXLOG];
static int nlog;

typedef struct tcli {
    px__hclient_t hc;
    int idx;
    int answered, status, npres, users, nmsgs;
    char last_event[32], last_user[32];
    char pres_users[8][32];
    int released;
} tcli_t;

static tcli_t *clients[MAXCLI];
static px_hub_t *hub;
static px_workers_t *workers;
static int fmt;
static char dir[256];

static void log_add(logent_t e)
{
    pthread_mutex_lock(&mu);
    if (nlog < MAXLOG)
        logv[nlog++] = e;
    pthread_mutex_unlock(&mu);
}

static void copy(char *dst, size_t cap, px_str_t s)
{
    snprintf(dst, cap, "%.*s", (int)s.len, s.ptr ? s.ptr : "");
}

static size_t t_deliver(px__hsub_t *list, int kind, px_slice_t *frame, const void *item)
{
    (void)frame;
    size_t n = 0;
    for (px__hsub_t *s = list, *next; s; s = next) {
        next = s->next;
        tcli_t *c = PX_CONTAINER_OF(s->client, tcli_t, hc);
        if (kind == PX__DELIVER_PRESENCE && s->presence) {
            const px__presence_ev_t *e = item;
            logent_t l = {.kind = e->op == PX__JOIN ? 'j' : 'l',
                          .client = c->idx,
                          .first = e->user_first,
                          .last = e->user_last};
            copy(l.user, sizeof l.user, e->who->user);
            copy(l.channel, sizeof l.channel, e->channel);
            log_add(l);
        }
        n++;
    }
    return n;
}

static const px__hformat_t tformat = {.name = "test", .deliver = t_deliver};

static void obs_occupied(void *ctx, px_str_t ch, int occ)
{
    (void)ctx;
    logent_t l = {.kind = occ ? 'o' : 'v'};
    copy(l.channel, sizeof l.channel, ch);
    log_add(l);
}

static void obs_presence(void *ctx, px_str_t ch, int op, const px__presence_t *who)
{
    (void)ctx;
    logent_t l = {.kind = op == PX__JOIN ? 'J' : 'L'};
    copy(l.user, sizeof l.user, who->user);
    copy(l.channel, sizeof l.channel, ch);
    log_add(l);
}

static const px__hobserver_t tobserver = {.occupied = obs_occupied, .presence = obs_presence};

/* ---- clients -------------------------------------------------------------------------- */

static size_t c_output(px__hclient_t *c)
{
    (void)c;
    return 0;
}

static int c_write(px__hclient_t *c, px__hsub_t *s, px_slice_t *f)
{
    (void)c, (void)s, (void)f;
    return 0;
}

static void c_message(px__hclient_t *hc, px__hsub_t *s, const px_hub_msg_t *m)
{
    (void)s;
    tcli_t *c = PX_CONTAINER_OF(hc, tcli_t, hc);
    pthread_mutex_lock(&mu);
    copy(c->last_event, sizeof c->last_event, px_hub_msg_event(m));
    copy(c->last_user, sizeof c->last_user, (px_str_t){px__msg_user(m), m->user_len});
    c->nmsgs++;
    pthread_mutex_unlock(&mu);
}

static void c_subscribed(px__hclient_t *hc, px__hsub_t *s, px__hreq_t *r)
{
    (void)s;
    tcli_t *c = PX_CONTAINER_OF(hc, tcli_t, hc);
    pthread_mutex_lock(&mu);
    c->status = r->status;
    c->npres = (int)r->npres;
    c->users = (int)r->users;
    for (size_t i = 0; i < r->npres && i < 8; i++)
        copy(c->pres_users[i], sizeof c->pres_users[i], r->pres[i].user);
    c->answered = 1;
    pthread_mutex_unlock(&mu);
}

static void c_answer(px__hclient_t *c, px__hreq_t *r)
{
    (void)c, (void)r;
}

static void c_ended(px__hclient_t *c, px__hsub_t *s, px__hreq_t *r)
{
    (void)c, (void)s, (void)r;
}

static void c_release(px__hclient_t *hc)
{
    tcli_t *c = PX_CONTAINER_OF(hc, tcli_t, hc);
    pthread_mutex_lock(&mu);
    c->released = 1;
    pthread_mutex_unlock(&mu);
}

static const px__hclient_ops_t cops = {.output = c_output,
                                       .write = c_write,
                                       .message = c_message,
                                       .subscribed = c_subscribed,
                                       .answer = c_answer,
                                       .ended = c_ended,
                                       .release = c_release};

/* An operation run on a worker. */
typedef struct op {
    px_msg_t msg;
    int kind; /* 's' subscribe, 'u' unsubscribe, 'c' close */
    int idx;
    char channel[64], user[32];
    int listed, events, want_list, want_last;
    unsigned max;
} op_t;

static void run_op(px_worker_t *w, px_msg_t *m)
{
    op_t *o = (op_t *)m;
    tcli_t *c = clients[o->idx];
    if (o->kind == 's') {
        if (!c) {
            c = calloc(1, sizeof *c);
            c->idx = o->idx;
            px__hclient_init(&c->hc, hub, px_worker_id(w), &cops);
            clients[o->idx] = c;
        }
        px__presence_t who = {.user = {o->user, strlen(o->user)}};
        snprintf(who.client, sizeof who.client, "%016x", (unsigned)o->idx + 1);
        px__subopts_t so = {.presence = o->events,
                            .who = o->listed ? &who : NULL,
                            .want_list = o->want_list,
                            .want_last = o->want_last,
                            .presence_max = o->max};
        px__hclient_subscribe(&c->hc, o->channel, strlen(o->channel), fmt, &so, 0);
    } else if (o->kind == 'u') {
        px__hsub_t *s = px__hclient_find(&c->hc, o->channel, strlen(o->channel));
        if (s)
            px__hclient_unsubscribe(&c->hc, s);
    } else {
        px__hclient_close(&c->hc);
    }
    free(o);
}

static void on(unsigned worker, op_t o)
{
    op_t *p = malloc(sizeof *p);
    *p = o;
    p->msg.cb = run_op;
    px_worker_post(px_workers_get(workers, worker), &p->msg);
}

static void sub(unsigned worker, int idx, const char *ch, const char *user, int listed, int events)
{
    op_t o = {.kind = 's', .idx = idx, .listed = listed, .events = events};
    snprintf(o.channel, sizeof o.channel, "%s", ch);
    snprintf(o.user, sizeof o.user, "%s", user);
    on(worker, o);
}

static void unsub(unsigned worker, int idx, const char *ch)
{
    op_t o = {.kind = 'u', .idx = idx};
    snprintf(o.channel, sizeof o.channel, "%s", ch);
    on(worker, o);
}

/* Wait (5 s at most) until `pred` holds. */
static int wait_until(int (*pred)(void *), void *arg)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&mu);
        int ok = pred(arg);
        pthread_mutex_unlock(&mu);
        if (ok)
            return 1;
        usleep(10000);
    }
    return 0;
}

static int answered(void *arg)
{
    int idx = *(int *)arg;
    return clients[idx] && clients[idx]->answered;
}

static void wait_answered(int idx)
{
    assert_true(wait_until(answered, &idx));
}

static int log_has_n(void *arg)
{
    return nlog >= *(int *)arg;
}

static void wait_log(int n)
{
    assert_true(wait_until(log_has_n, &n));
}

/* Count log entries of `kind` for `user` with the given flags (-1: any). */
static int count(char kind, const char *user, int first, int last)
{
    int n = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nlog; i++) {
        logent_t *l = &logv[i];
        if (l->kind == kind && (!user || strcmp(l->user, user) == 0) &&
            (first < 0 || l->first == first) && (last < 0 || l->last == last))
            n++;
    }
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- fixture ---------------------------------------------------------------------------- */

static void on_start(px_worker_t *w, void *ud)
{
    (void)w, (void)ud;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/px-test-presence-XXXXXX");
    assert_non_null(mkdtemp(dir));
    nlog = 0;
    memset(clients, 0, sizeof clients);
    workers = px_workers_new(2);
    px_hub_opts_t o;
    px_hub_opts_init(&o);
    o.data_dir = dir;
    char err[256];
    hub = px_hub_new(workers, &o, err, sizeof err);
    assert_non_null(hub);
    fmt = px__hub_add_format(hub, &tformat);
    assert_true(fmt >= 0);
    assert_int_equal(px__hub_add_observer(hub, &tobserver), 0);
    assert_int_equal(px_hub_start(hub), 0);
    assert_int_equal(px_workers_start(workers, on_start, NULL), 0);
    return 0;
}

static int released(void *arg)
{
    (void)arg;
    for (int i = 0; i < MAXCLI; i++)
        if (clients[i] && !clients[i]->released)
            return 0;
    return 1;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAXCLI; i++)
        if (clients[i])
            on(clients[i]->hc.worker, (op_t){.kind = 'c', .idx = i});
    assert_true(wait_until(released, NULL));
    px_workers_stop(workers);
    px_workers_join(workers);
    px_hub_free(hub);
    px_workers_free(workers);
    for (int i = 0; i < MAXCLI; i++)
        free(clients[i]);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Two connections of user a (on two workers) are one member: the watcher sees a arrive once
 * and leave once; the observer too; occupancy goes 1 then 0. */
static void test_user_first_last(void **state)
{
    (void)state;
    sub(0, 0, "room", "w", 0, 1); /* a watcher: events, not listed */
    wait_answered(0);
    sub(0, 1, "room", "a", 1, 0);
    wait_answered(1);
    sub(1, 2, "room", "a", 1, 0); /* the same user on the other worker */
    wait_answered(2);
    wait_log(4); /* o, J a, j first, j not first */
    assert_int_equal(count('o', NULL, -1, -1), 1);
    assert_int_equal(count('j', "a", 1, -1), 1);
    assert_int_equal(count('j', "a", 0, -1), 1);
    assert_int_equal(count('J', "a", -1, -1), 1);

    unsub(0, 1, "room");
    wait_log(5);
    assert_int_equal(count('l', "a", -1, 0), 1); /* a still has a connection */
    assert_int_equal(count('L', "a", -1, -1), 0);
    unsub(1, 2, "room");
    wait_log(7);
    assert_int_equal(count('l', "a", -1, 1), 1);
    assert_int_equal(count('L', "a", -1, -1), 1);

    unsub(0, 0, "room");
    wait_log(8);
    assert_int_equal(count('v', NULL, -1, -1), 1);
}

/* The member list of a subscribe is one entry per user, in arrival order. */
static void test_list_by_user(void **state)
{
    (void)state;
    sub(0, 0, "p", "a", 1, 0);
    wait_answered(0);
    sub(1, 1, "p", "a", 1, 0);
    wait_answered(1);
    sub(0, 2, "p", "b", 1, 0);
    wait_answered(2);
    op_t o = {.kind = 's', .idx = 3, .listed = 1, .events = 1, .want_list = 1};
    snprintf(o.channel, sizeof o.channel, "p");
    snprintf(o.user, sizeof o.user, "c");
    on(1, o);
    wait_answered(3);
    pthread_mutex_lock(&mu);
    tcli_t *c = clients[3];
    assert_int_equal(c->status, 0);
    assert_int_equal(c->npres, 3); /* a, b and the subscriber itself */
    assert_int_equal(c->users, 3);
    assert_string_equal(c->pres_users[0], "a");
    assert_string_equal(c->pres_users[1], "b");
    assert_string_equal(c->pres_users[2], "c");
    pthread_mutex_unlock(&mu);
}

/* A bound of two members refuses a third user, not another connection of a member. */
static void test_presence_max(void **state)
{
    (void)state;
    const char *users[] = {"a", "b", "c", "a"};
    for (int i = 0; i < 4; i++) {
        op_t o = {.kind = 's', .idx = i, .listed = 1, .max = 2};
        snprintf(o.channel, sizeof o.channel, "capped");
        snprintf(o.user, sizeof o.user, "%s", users[i]);
        on((unsigned)i % 2, o);
        wait_answered(i);
    }
    assert_int_equal(clients[0]->status, 0);
    assert_int_equal(clients[1]->status, 0);
    assert_int_equal(clients[2]->status, 403);
    assert_int_equal(clients[3]->status, 0);
    assert_int_equal(clients[3]->users, 2);
}

static void publish_done(const px_hub_ack_t *a, void *ud)
{
    (void)a;
    *(volatile int *)ud = 1;
}

static int is_set(void *arg)
{
    return *(volatile int *)arg;
}

/* want_last: the answer carries the latest message, with its event and its user. */
static void test_want_last(void **state)
{
    (void)state;
    volatile int done = 0;
    px_hub_msg_t *m = px__hub_msg_new_user((px_str_t){"cache-x", 7}, (px_str_t){"ev", 2},
                                           (px_str_t){"\"d\"", 3}, 0, (px_str_t){"u9", 2});
    assert_non_null(m);
    px__hreq_t *r = px__hreq_new(hub, PX__HREQ_PUBLISH, "cache-x", 7);
    r->m = m;
    r->worker = PX__NO_WORKER;
    r->done = NULL;
    px__hub_post(hub, r);
    assert_int_equal(px_hub_publish(hub, (px_str_t){"other", 5}, (px_str_t){"", 0},
                                    (px_str_t){"1", 1}, 0, publish_done, (void *)&done),
                     0);
    assert_true(wait_until(is_set, (void *)&done));
    op_t o = {.kind = 's', .idx = 0, .want_last = 1};
    snprintf(o.channel, sizeof o.channel, "cache-x");
    on(0, o);
    wait_answered(0);
    pthread_mutex_lock(&mu);
    assert_int_equal(clients[0]->nmsgs, 1);
    assert_string_equal(clients[0]->last_event, "ev");
    assert_string_equal(clients[0]->last_user, "u9");
    pthread_mutex_unlock(&mu);
    /* A channel without messages: nothing. */
    o.idx = 1;
    snprintf(o.channel, sizeof o.channel, "cache-empty");
    on(1, o);
    wait_answered(1);
    assert_int_equal(clients[1]->nmsgs, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_user_first_last),
        T(test_list_by_user),
        T(test_presence_max),
        T(test_want_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
