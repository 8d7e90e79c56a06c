/* clock — the hub's public C API: a thread of its own publishes the time every second on
 * the channel "clock", and one C subscriber on a worker logs what it receives. Clients
 * watch it with the native protocol, e.g.
 *   curl -N http://127.0.0.1:8080/api/channels/clock/events
 * Usage: clock [--listen ADDR] [--workers N] [--data-dir DIR] [--interval MS]
 *   (default 127.0.0.1:8080, one worker per CPU, ./var, 1000) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexus/hub.h>
#include <plexus/log.h>
#include <plexus/native.h>

typedef struct ticker {
    px_hub_t *hub;
    long interval_ms;
    atomic_int stop;
    atomic_ulong acked;
} ticker_t;

/* Runs on the hub thread (this publisher is not a worker): short and thread-safe. */
static void on_ack(const px_hub_ack_t *ack, void *ud)
{
    ticker_t *t = ud;
    if (ack->status == 0)
        atomic_fetch_add(&t->acked, 1);
    else
        px_log(PX_LOG_WARN, "clock: tick not stored: %s", ack->error);
}

static void *tick_thread(void *arg)
{
    ticker_t *t = arg;
    while (!atomic_load(&t->stop)) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        char data[64];
        int n = snprintf(data, sizeof data, "{\"unix_ms\":%lld}",
                         (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        int r = px_hub_publish(t->hub, PX_STR_LIT("clock"), PX_STR_LIT("tick"),
                               (px_str_t){data, (size_t)n}, 0, on_ack, t);
        if (r != 0)
            px_log(PX_LOG_WARN, "clock: publish: %s", px_strerror(r));
        struct timespec d = {t->interval_ms / 1000, (t->interval_ms % 1000) * 1000000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

/* A C subscriber: runs on worker 0 (subscribed from a message posted there). */
static void on_message(px_hub_sub_t *s, const px_hub_msg_t *m, void *ud)
{
    (void)s;
    (void)ud;
    px_str_t d = px_hub_msg_data(m);
    px_log(PX_LOG_DEBUG, "clock: tick %llu %.*s", (unsigned long long)px_hub_msg_offset(m),
           (int)d.len, d.ptr);
}

static const px_hub_sub_cbs_t sub_cbs = {.on_message = on_message};

typedef struct sub_msg {
    px_msg_t msg;
    px_hub_t *hub;
} sub_msg_t;

static void subscribe_here(px_worker_t *w, px_msg_t *m)
{
    (void)w;
    sub_msg_t *sm = (sub_msg_t *)m;
    if (!px_hub_subscribe(sm->hub, PX_STR_LIT("clock"), &sub_cbs, NULL))
        px_log(PX_LOG_ERROR, "clock: cannot subscribe");
    /* Unsubscribed when the hub goes away with the server. */
}

static int usage(const char *why)
{
    fprintf(stderr,
            "clock: %s\nusage: clock [--listen ADDR] [--workers N] [--data-dir DIR] "
            "[--interval MS]\n",
            why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080", *data_dir = "./var";
    long interval = 1000;
    px_server_opts_t so;
    px_server_opts_init(&so);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 0 || n > 256)
                return usage("--workers: a number from 0 to 256");
            so.workers = (unsigned)n;
        } else if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            data_dir = argv[++i];
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            char *end;
            interval = strtol(argv[++i], &end, 10);
            if (*end || interval < 10 || interval > 3600000)
                return usage("--interval: milliseconds from 10 to 3600000");
        } else {
            return usage("unknown argument");
        }
    }
    px_server_t *s = px_server_new(&so);
    if (!s)
        return 1;
    int r = px_server_listen(s, listen);
    if (r) {
        fprintf(stderr, "clock: --listen %s: %s\n", listen, px_strerror(r));
        px_server_free(s);
        return 2;
    }
    px_hub_opts_t ho;
    px_hub_opts_init(&ho);
    ho.data_dir = data_dir;
    char err[256];
    px_hub_t *hub = px_hub_new(px_server_workers(s), &ho, err, sizeof err);
    if (!hub) {
        fprintf(stderr, "clock: --data-dir %s: %s\n", data_dir, err);
        px_server_free(s);
        return 2;
    }
    px_native_opts_t no;
    px_native_opts_init(&no);
    no.allow_anonymous = 1; /* a demo: anyone may read the clock */
    if (px_native_routes(s, hub, &no) != 0 || px_hub_start(hub) != 0) {
        px_hub_free(hub);
        px_server_free(s);
        return 1;
    }
    static sub_msg_t sm;
    sm.hub = hub;
    sm.msg.cb = subscribe_here;
    px_worker_post(px_workers_get(px_server_workers(s), 0), &sm.msg);

    ticker_t t = {.hub = hub, .interval_ms = interval};
    pthread_t th;
    if (pthread_create(&th, NULL, tick_thread, &t) != 0) {
        px_hub_free(hub);
        px_server_free(s);
        return 1;
    }
    r = px_server_run(s); /* until SIGINT/SIGTERM */
    atomic_store(&t.stop, 1);
    pthread_join(th, NULL);
    px_log(PX_LOG_INFO, "clock: %lu tick(s) stored", (unsigned long)atomic_load(&t.acked));
    px_hub_free(hub);
    px_server_free(s);
    return r == 0 ? 0 : 1;
}
