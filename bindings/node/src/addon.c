/* plexus as a Node.js addon (N-API 8): the plexus server, built from the same option table
 * as the CLI (plexus/app.h), runs on C threads over a listening socket Node handed over.
 * Node's main thread only starts and stops it; logs, publish acknowledgements and the end
 * of a stop come back to it through thread-safe functions. index.js is the JavaScript side.
 *
 * One server per process (Passenger gives an app process one socket). */
#define NAPI_VERSION 8
#include <node_api.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plexus/app.h"
#include "plexus/hub.h"
#include "plexus/log.h"

/* A user's own routes (examples/passenger-api): a C file built into the addon defines
 * this; the plain addon has none. Called before the hub starts. */
__attribute__((weak)) int plexus_routes(px_server_t *s, px_hub_t *hub);

enum { ST_IDLE, ST_RUNNING, ST_STOPPING, ST_STOPPED };

static struct {
    _Atomic int state;
    px_config_t *cfg;
    px_app_t *app;
    napi_threadsafe_function log_fn; /* JS: (line) => process.stdout.write(line) */
    napi_threadsafe_function ack_fn; /* resolves publish promises */
    napi_async_work stop_work;
    napi_deferred stop_deferred;
} g;

#define CHECK(env, call)                                                                           \
    do {                                                                                           \
        if ((call) != napi_ok) {                                                                   \
            const napi_extended_error_info *info_;                                                 \
            napi_get_last_error_info((env), &info_);                                               \
            napi_throw_error((env), NULL,                                                          \
                             info_ && info_->error_message ? info_->error_message : #call);        \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

static napi_value throw_msg(napi_env env, const char *code, const char *msg)
{
    napi_throw_error(env, code, msg);
    return NULL;
}

/* ---- logs ---------------------------------------------------------------------------- */

static void log_to_js(napi_env env, napi_value fn, void *ctx, void *data)
{
    PX_UNUSED(ctx);
    char *line = data;
    if (env && fn) {
        napi_value undefined, s;
        napi_get_undefined(env, &undefined);
        if (napi_create_string_utf8(env, line, NAPI_AUTO_LENGTH, &s) == napi_ok)
            napi_call_function(env, undefined, fn, 1, &s, NULL);
    }
    free(line);
}

/* px_log's sink, on any thread: a copy of the line goes to Node's stdout. */
static void log_sink(int level, const char *line, size_t len, void *ud)
{
    PX_UNUSED(level);
    PX_UNUSED(ud);
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, line, len);
    copy[len] = '\0';
    if (napi_call_threadsafe_function(g.log_fn, copy, napi_tsfn_nonblocking) != napi_ok) {
        ssize_t r = write(1, line, len); /* Node is going away: straight to stdout */
        (void)r;
        free(copy);
    }
}

/* Once JavaScript gets no more turns (process.exit): lines go straight to stdout. */
static void log_direct(int level, const char *line, size_t len, void *ud)
{
    PX_UNUSED(level);
    PX_UNUSED(ud);
    ssize_t r = write(1, line, len);
    (void)r;
}

/* ---- publish --------------------------------------------------------------------------- */

typedef struct pub {
    napi_deferred deferred;
    int status;
    char error[64];
    char epoch[40];
    uint64_t offset;
} pub_t;

/* On the hub thread: hand the outcome to the JS thread. */
static void on_ack(const px_hub_ack_t *ack, void *ud)
{
    pub_t *p = ud;
    p->status = ack->status;
    p->offset = ack->offset;
    snprintf(p->error, sizeof p->error, "%s", ack->error ? ack->error : "");
    snprintf(p->epoch, sizeof p->epoch, "%s", ack->epoch ? ack->epoch : "");
    napi_call_threadsafe_function(g.ack_fn, p, napi_tsfn_blocking);
}

static void ack_to_js(napi_env env, napi_value fn, void *ctx, void *data)
{
    PX_UNUSED(fn);
    PX_UNUSED(ctx);
    pub_t *p = data;
    if (env) {
        if (p->status == 0) {
            napi_value obj, v;
            napi_create_object(env, &obj);
            napi_create_int64(env, (int64_t)p->offset, &v);
            napi_set_named_property(env, obj, "offset", v);
            napi_create_string_utf8(env, p->epoch, NAPI_AUTO_LENGTH, &v);
            napi_set_named_property(env, obj, "epoch", v);
            napi_resolve_deferred(env, p->deferred, obj);
        } else {
            napi_value msg, code, err;
            char text[160];
            snprintf(text, sizeof text, "publish failed: %s (%s)", p->error,
                     px_strerror(p->status));
            napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
            napi_create_string_utf8(env, p->error[0] ? p->error : "error", NAPI_AUTO_LENGTH, &code);
            napi_create_error(env, code, msg, &err);
            napi_reject_deferred(env, p->deferred, err);
        }
    }
    free(p);
}

/* publish(channel: string, data: string /o JSON text o/) -> Promise<{offset, epoch}> */
static napi_value js_publish(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2];
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (atomic_load(&g.state) != ST_RUNNING)
        return throw_msg(env, "ERR_PLEXUS_NOT_RUNNING",
                         "plexus is not running (call listen first)");
    char channel[256];
    size_t clen, dlen;
    if (argc < 2 ||
        napi_get_value_string_utf8(env, argv[0], channel, sizeof channel, &clen) != napi_ok ||
        napi_get_value_string_utf8(env, argv[1], NULL, 0, &dlen) != napi_ok)
        return throw_msg(env, "ERR_INVALID_ARG_TYPE", "publish(channel, data): two strings");
    char *data = malloc(dlen + 1);
    pub_t *p = calloc(1, sizeof *p);
    napi_value promise;
    if (!data || !p || napi_create_promise(env, &p->deferred, &promise) != napi_ok) {
        free(data);
        free(p);
        return throw_msg(env, NULL, "out of memory");
    }
    napi_get_value_string_utf8(env, argv[1], data, dlen + 1, &dlen);
    int r = px_hub_publish(px_app_hub(g.app), (px_str_t){channel, clen}, (px_str_t){"", 0},
                           (px_str_t){data, dlen}, 0, on_ack, p);
    free(data);
    if (r != 0) {
        napi_value msg, code, err;
        const char *c = r == -EINVAL     ? "invalid_channel"
                        : r == -EMSGSIZE ? "payload_too_large"
                                         : "error";
        char text[200];
        snprintf(text, sizeof text, "publish failed: %s (%s)", c, px_strerror(r));
        napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
        napi_create_string_utf8(env, c, NAPI_AUTO_LENGTH, &code);
        napi_create_error(env, code, msg, &err);
        napi_reject_deferred(env, p->deferred, err);
        free(p);
    }
    return promise;
}

/* ---- start ------------------------------------------------------------------------------- */

static int user_routes(px_server_t *s, px_hub_t *hub, void *ud)
{
    PX_UNUSED(ud);
    return plexus_routes ? plexus_routes(s, hub) : 0;
}

static napi_value get_string(napi_env env, napi_value v, char *buf, size_t len)
{
    napi_valuetype t;
    if (napi_typeof(env, v, &t) != napi_ok || t != napi_string)
        return NULL;
    size_t n;
    if (napi_get_value_string_utf8(env, v, buf, len, &n) != napi_ok || n + 1 >= len)
        return NULL;
    return v;
}

static void release_fns(void)
{
    if (g.log_fn)
        napi_release_threadsafe_function(g.log_fn, napi_tsfn_release);
    if (g.ack_fn)
        napi_release_threadsafe_function(g.ack_fn, napi_tsfn_release);
    g.log_fn = g.ack_fn = NULL;
}

/* start(fd: number (-1: none), options: string (JSON), staticDir: string|null,
 *       log: (line) => void) -> { listeners: string[], workers: number } */
static napi_value js_start(napi_env env, napi_callback_info info)
{
    size_t argc = 4;
    napi_value argv[4];
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 4)
        return throw_msg(env, "ERR_INVALID_ARG_TYPE", "start(fd, options, staticDir, log)");
    if (atomic_load(&g.state) != ST_IDLE)
        return throw_msg(env, "ERR_PLEXUS_RUNNING", "plexus runs once per process");
    int32_t fd;
    CHECK(env, napi_get_value_int32(env, argv[0], &fd));
    size_t jlen;
    CHECK(env, napi_get_value_string_utf8(env, argv[1], NULL, 0, &jlen));
    char *json = malloc(jlen + 1);
    if (!json)
        return throw_msg(env, NULL, "out of memory");
    napi_get_value_string_utf8(env, argv[1], json, jlen + 1, &jlen);
    char static_dir[4096];
    int has_static = get_string(env, argv[2], static_dir, sizeof static_dir) != NULL;

    napi_value name;
    napi_create_string_utf8(env, "plexus", NAPI_AUTO_LENGTH, &name);
    if (napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, NULL, NULL, NULL, log_to_js,
                                        &g.log_fn) != napi_ok ||
        napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, ack_to_js,
                                        &g.ack_fn) != napi_ok) {
        free(json);
        release_fns();
        return throw_msg(env, NULL, "cannot create thread-safe functions");
    }
    /* The acknowledgements never keep Node alive; the log function does while plexus runs
     * (Node's own server is closed: without it the process would just exit). */
    napi_unref_threadsafe_function(env, g.ack_fn);

    char err[1024];
    int code = 2;
    g.cfg = px_config_new();
    int r = g.cfg ? px_config_load(g.cfg, 0, NULL, json, 1, err, sizeof err) : -ENOMEM;
    free(json);
    if (r == 0 && fd >= 0) {
        char addr[32];
        snprintf(addr, sizeof addr, "fd:%d", fd);
        r = px_config_set(g.cfg, "listen", addr, err, sizeof err);
    }
    if (r == 0) {
        if (!px_config_get(g.cfg, "log-file")) /* else --log-file it is */
            px_log_set_sink(log_sink, NULL);
        px_app_opts_t ao;
        px_app_opts_init(&ao);
        ao.default_static = has_static ? static_dir : NULL;
        ao.on_routes = user_routes;
        g.app = px_app_new(g.cfg, &ao, err, sizeof err, &code);
        r = g.app ? px_app_start(g.app) : -EINVAL;
        if (g.app && r) {
            snprintf(err, sizeof err, "cannot start: %s", px_strerror(r));
            code = 1;
        }
    } else if (r == -ENOMEM) {
        snprintf(err, sizeof err, "out of memory");
    }
    if (r != 0) {
        px_log_set_sink(NULL, NULL);
        px_app_free(g.app);
        px_config_free(g.cfg);
        g.app = NULL;
        g.cfg = NULL;
        release_fns();
        napi_value msg, ecode, e, num;
        char text[1100];
        snprintf(text, sizeof text, "plexus: %s", err);
        napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
        napi_create_string_utf8(env, "ERR_PLEXUS_CONFIG", NAPI_AUTO_LENGTH, &ecode);
        napi_create_error(env, ecode, msg, &e);
        napi_create_int32(env, code, &num);
        napi_set_named_property(env, e, "exitCode", num);
        napi_throw(env, e);
        return NULL;
    }
    atomic_store(&g.state, ST_RUNNING);

    napi_value res, list, v;
    px_server_t *s = px_app_server(g.app);
    napi_create_object(env, &res);
    napi_create_array(env, &list);
    for (unsigned i = 0; i < px_server_listener_count(s); i++) {
        napi_create_string_utf8(env, px_server_listener_name(s, i), NAPI_AUTO_LENGTH, &v);
        napi_set_element(env, list, i, v);
    }
    napi_set_named_property(env, res, "listeners", list);
    napi_create_uint32(env, px_workers_count(px_server_workers(s)), &v);
    napi_set_named_property(env, res, "workers", v);
    return res;
}

/* ---- stop ------------------------------------------------------------------------------- */

/* Everything after the workers stopped (the JS thread). */
static void finish(void)
{
    px_app_free(g.app);
    px_log_set_sink(NULL, NULL);
    px_config_free(g.cfg);
    g.app = NULL;
    g.cfg = NULL;
    release_fns();
    atomic_store(&g.state, ST_STOPPED);
}

static void stop_execute(napi_env env, void *data)
{
    PX_UNUSED(env);
    PX_UNUSED(data);
    /* The lines of the stop go straight to stdout: whoever awaits stop() may exit the
     * process at once, before queued calls of the log function would run. */
    if (!px_config_get(g.cfg, "log-file"))
        px_log_set_sink(log_direct, NULL);
    px_app_shutdown(g.app);
    px_app_wait(g.app);
}

static void stop_complete(napi_env env, napi_status status, void *data)
{
    PX_UNUSED(status);
    PX_UNUSED(data);
    finish();
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, g.stop_deferred, undefined);
    napi_delete_async_work(env, g.stop_work);
    g.stop_work = NULL;
}

/* stop() -> Promise: graceful (in-flight work gets --shutdown-timeout), off Node's thread. */
static napi_value js_stop(napi_env env, napi_callback_info info)
{
    PX_UNUSED(info);
    napi_value promise, name;
    int expect = ST_RUNNING;
    if (!atomic_compare_exchange_strong(&g.state, &expect, ST_STOPPING))
        return throw_msg(env, "ERR_PLEXUS_NOT_RUNNING", "plexus is not running");
    CHECK(env, napi_create_promise(env, &g.stop_deferred, &promise));
    napi_create_string_utf8(env, "plexus-stop", NAPI_AUTO_LENGTH, &name);
    CHECK(env,
          napi_create_async_work(env, NULL, name, stop_execute, stop_complete, NULL, &g.stop_work));
    CHECK(env, napi_queue_async_work(env, g.stop_work));
    return promise;
}

/* Synchronous stop, for process.on('exit') and the environment's cleanup: JavaScript gets
 * no more turns, so logs go straight to stdout. A stop() in progress is waited for. */
static void stop_now(void)
{
    int st = atomic_load(&g.state);
    if (st != ST_RUNNING && st != ST_STOPPING)
        return;
    if (!px_config_get(g.cfg, "log-file"))
        px_log_set_sink(log_direct, NULL);
    if (st == ST_STOPPING)
        return; /* stop() is waiting on another thread; its completion frees */
    atomic_store(&g.state, ST_STOPPING);
    px_app_shutdown(g.app);
    px_app_wait(g.app);
    px_app_free(g.app);
    g.app = NULL;
    px_log_set_sink(NULL, NULL);
    px_config_free(g.cfg);
    g.cfg = NULL;
    atomic_store(&g.state, ST_STOPPED);
}

static napi_value js_stop_sync(napi_env env, napi_callback_info info)
{
    PX_UNUSED(info);
    stop_now();
    if (g.log_fn || g.ack_fn) {
        if (atomic_load(&g.state) == ST_STOPPED)
            release_fns();
    }
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
}

static void cleanup_hook(void *arg)
{
    PX_UNUSED(arg);
    stop_now();
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* dup(fd) -> fd: a copy of Node's listening socket that survives closing Node's server. */
static napi_value js_dup(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1], res;
    int32_t fd;
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
        return throw_msg(env, "ERR_INVALID_ARG_TYPE", "dup(fd): a file descriptor");
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) {
        char text[100];
        snprintf(text, sizeof text, "dup(%d): %s", fd, strerror(errno));
        return throw_msg(env, "ERR_PLEXUS_DUP", text);
    }
    CHECK(env, napi_create_int32(env, d, &res));
    return res;
}

static napi_value js_close(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    int32_t fd;
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc >= 1 && napi_get_value_int32(env, argv[0], &fd) == napi_ok && fd >= 0)
        close(fd);
    return NULL;
}

static napi_value js_state(napi_env env, napi_callback_info info)
{
    PX_UNUSED(info);
    static const char *const names[] = {"idle", "running", "stopping", "stopped"};
    napi_value v;
    CHECK(env, napi_create_string_utf8(env, names[atomic_load(&g.state)], NAPI_AUTO_LENGTH, &v));
    return v;
}

NAPI_MODULE_INIT()
{
    napi_property_descriptor props[] = {
        {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
        {"publish", NULL, js_publish, NULL, NULL, NULL, napi_default, NULL},
        {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
        {"stopSync", NULL, js_stop_sync, NULL, NULL, NULL, napi_default, NULL},
        {"dup", NULL, js_dup, NULL, NULL, NULL, napi_default, NULL},
        {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
        {"state", NULL, js_state, NULL, NULL, NULL, napi_default, NULL},
    };
    if (napi_define_properties(env, exports, PX_ARRAY_SIZE(props), props) != napi_ok)
        return NULL;
    napi_add_env_cleanup_hook(env, cleanup_hook, NULL);
    return exports;
}
