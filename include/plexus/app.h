/* plexus — the plexus server as a library: its option table and its wiring.
 *
 * The `plexus` binary is a few lines on top of this header, and so is anything else that
 * runs the same server with the same options: the Node.js addon (bindings/node) passes
 * its options object as JSON and a listening socket it took from Node as "fd:N".
 *
 *   px_config_t *cfg = px_config_new();
 *   if (px_config_load(cfg, argc, argv, NULL, err, sizeof err) < 0) ...   // exit 2
 *   px_app_t *app = px_app_new(cfg, &ao, err, sizeof err, &code);
 *   px_app_run(app);            // until SIGTERM/SIGINT
 *   px_app_free(app);
 *   px_config_free(cfg);
 *
 * Every option is defined once, in the table of src/cli/config.c: its flag, its
 * PLEXUS_<NAME> environment variable, its config-file key, its default, its range and its
 * help text. Precedence, lowest first: defaults, the config file (or the JSON text given
 * to px_config_load), the environment, flags (argv, then px_config_set). */
#ifndef PLEXUS_APP_H
#define PLEXUS_APP_H

#include <stdio.h>

#include "plexus/hub.h"
#include "plexus/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_config px_config_t;

/** px_config_load's positive results: argv asked for --help / --version (printed). */
#define PX_CONFIG_HELP    1
#define PX_CONFIG_VERSION 2

/** Options at their defaults. NULL on no memory. */
PX_EXTERN px_config_t *px_config_new(void);
/** Accepts NULL. */
PX_EXTERN void px_config_free(px_config_t *cfg);
/**
 * Load every source into `cfg`: `json` (a JSON object whose keys are the flag names, like
 * the --config file; NULL for none) or else the file named by --config / PLEXUS_CONFIG,
 * then PLEXUS_* environment variables (unless `env` is 0), then argv (argv[0] is skipped;
 * argc 0 for none). 0; PX_CONFIG_HELP / PX_CONFIG_VERSION after printing them to stdout;
 * or -EINVAL with `err` holding one line naming the option, the source and the problem
 * (the CLI prints it and exits 2).
 */
PX_EXTERN int px_config_load(px_config_t *cfg, int argc, char **argv, const char *json, int env,
                             char *err, size_t errlen);
/** Set option `name` (without dashes) as a flag would, after px_config_load: highest
 * precedence; a list option (listen) given once replaces the loaded values, given again
 * adds one. 0 or -EINVAL with `err` set (unknown option, bad value, out of range). */
PX_EXTERN int px_config_set(px_config_t *cfg, const char *name, const char *value, char *err,
                            size_t errlen);
/** The value of a string option ("data-dir", "static", ...), or NULL when unset. */
PX_EXTERN const char *px_config_get(const px_config_t *cfg, const char *name);
/** --help: every option with its default and range. */
PX_EXTERN void px_config_usage(FILE *out);

/* ---- the server assembled from options ------------------------------------------------- */

typedef struct px_app px_app_t;

typedef struct px_app_opts {
    /** --static when the options name none (the CLI: the bundled web/ directory). */
    const char *default_static;
    /** Called before the hub starts, to add routes of one's own (px_route...). 0 or a
     *  negative errno (px_app_new fails then). May be NULL. */
    int (*on_routes)(px_server_t *s, px_hub_t *hub, void *ud);
    void *ud;
} px_app_opts_t;

PX_EXTERN void px_app_opts_init(px_app_opts_t *o);
/**
 * Build the server, its listeners, routes, TLS and hub from `cfg` (which must outlive the
 * app): logs configured, sockets bound, the database opened. Nothing runs yet. NULL on
 * failure with `err` holding one line ("--listen X: address in use") and *code the exit
 * code the CLI uses (2: a bad option or value, 1: anything else).
 */
PX_EXTERN px_app_t *px_app_new(const px_config_t *cfg, const px_app_opts_t *o, char *err,
                               size_t errlen, int *code);
/** Start the hub and the worker threads (they begin accepting) and log the listeners.
 * The calling thread keeps its signal mask; the threads started block every signal. */
PX_EXTERN int px_app_start(px_app_t *app);
/** px_app_start, then serve until SIGTERM/SIGINT (SIGHUP re-opens logs and reloads TLS
 * certificates), as the CLI does. 0 or a negative errno. */
PX_EXTERN int px_app_run(px_app_t *app);
/** Begin a graceful shutdown (any thread, idempotent); px_app_wait waits for it. */
PX_EXTERN void px_app_shutdown(px_app_t *app);
PX_EXTERN int px_app_wait(px_app_t *app);
PX_EXTERN px_server_t *px_app_server(px_app_t *app);
PX_EXTERN px_hub_t *px_app_hub(px_app_t *app);
/** Free everything (after px_app_wait, or without starting). Accepts NULL. */
PX_EXTERN void px_app_free(px_app_t *app);

#ifdef __cplusplus
}
#endif
#endif
