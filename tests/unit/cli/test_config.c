/* The option table as a library API (plexus/app.h): what the CLI and the Node addon share.
 * Errors come back as text (never exit), sources keep their precedence, and a failed load
 * leaks nothing (the ASan tree checks). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/config_int.h"
#include "plexus/app.h"

static px_config_t *load(const char *json, int argc, char **argv, int *rc, char *err, size_t n)
{
    px_config_t *cfg = px_config_new();
    assert_non_null(cfg);
    *rc = px_config_load(cfg, argc, argv, json, 1, err, n);
    return cfg;
}

static void test_defaults(void **state)
{
    (void)state;
    px_config_t *cfg = px_config_new();
    assert_non_null(cfg);
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0], "127.0.0.1:8080");
    assert_string_equal(px_config_get(cfg, "data-dir"), "./var");
    assert_null(px_config_get(cfg, "static"));
    assert_null(px_config_get(cfg, "no-such-option"));
    assert_null(px_config_get(cfg, "workers")); /* not a string option */
    px_config_free(cfg);
    px_config_free(NULL);
}

/* The options the addon passes as JSON: like a --config file. */
static void test_json_options(void **state)
{
    (void)state;
    char err[256];
    int rc;
    px_config_t *cfg =
        load("{\"workers\": 3, \"allow-anonymous\": true, \"data-dir\": \"d\", \"max-payload\": "
             "\"1KiB\", \"listen\": [\"127.0.0.1:1\", \"unix:/tmp/x\"]}",
             0, NULL, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->allow_anonymous, 1);
    assert_int_equal(cfg->max_payload, 1024);
    assert_string_equal(px_config_get(cfg, "data-dir"), "d");
    assert_int_equal(cfg->nlisten, 2);
    /* A flag set afterwards wins; the first one given replaces a list. */
    assert_int_equal(px_config_set(cfg, "listen", "fd:3", err, sizeof err), 0);
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0], "fd:3");
    assert_int_equal(px_config_set(cfg, "workers", "1", err, sizeof err), 0);
    assert_int_equal(cfg->workers, 1);
    px_config_free(cfg);
}

/* Bad input: an error that names the option and the source; nothing exits, nothing leaks. */
static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"workers\": 999}", "options: key workers: '999' is out of range (0..256)"},
        {"{\"nope\": 1}", "options: unknown key \"nope\""},
        {"{\"workers\": ", "options: invalid JSON"},
        {"[1]", "options: the top level must be a JSON object"},
        {"{\"durability\": \"maybe\"}", "is not one of normal|full"},
        {"{\"listen\": [\"a\", 5]}", "expected an array of strings"},
        {"{\"max-payload\": \"2MiB\"}", "above --ws-max-message"},
        {"{\"tls\": true}", "a TLS listener needs a certificate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        int rc;
        px_config_t *cfg = load(cases[i].json, 0, NULL, &rc, err, sizeof err);
        assert_int_equal(rc, -EINVAL);
        if (!strstr(err, cases[i].want))
            fail_msg("%s: got '%s', want '%s'", cases[i].json, err, cases[i].want);
        px_config_free(cfg);
    }
    char err[256];
    px_config_t *cfg = px_config_new();
    assert_int_equal(px_config_set(cfg, "workers", "x", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "'x' is not a non-negative integer"));
    assert_int_equal(px_config_set(cfg, "config", "f", err, sizeof err), -EINVAL);
    assert_int_equal(px_config_set(cfg, "bogus", "1", err, sizeof err), -EINVAL);
    assert_string_equal(err, "unknown option bogus");
    px_config_free(cfg);
}

/* Precedence: defaults < options (JSON) < PLEXUS_* < argv; env lists split on commas. */
static void test_precedence(void **state)
{
    (void)state;
    setenv("PLEXUS_WORKERS", "5", 1);
    setenv("PLEXUS_LISTEN", "127.0.0.1:2, 127.0.0.1:3", 1);
    char err[256];
    int rc;
    px_config_t *cfg =
        load("{\"workers\": 3, \"idle-timeout\": \"5s\"}", 0, NULL, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->workers, 5);
    assert_int_equal(cfg->idle_timeout_ms, 5000);
    assert_int_equal(cfg->nlisten, 2);
    px_config_free(cfg);
    char *argv[] = {"plexus", "--workers", "7", NULL};
    cfg = load(NULL, 3, argv, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->workers, 7);
    px_config_free(cfg);
    /* A bad environment value fails a load that splits a list first (nothing leaks). */
    setenv("PLEXUS_LISTEN", "127.0.0.1:2,", 1);
    setenv("PLEXUS_WORKERS", "lots", 1);
    cfg = load(NULL, 0, NULL, &rc, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err, "environment variable PLEXUS_WORKERS"));
    px_config_free(cfg);
    unsetenv("PLEXUS_WORKERS");
    /* A list that fails half-way through its split: the copy being split is freed too. */
    char many[PX_CONFIG_MAX_LISTEN * 16 + 32] = "";
    for (int i = 0; i <= PX_CONFIG_MAX_LISTEN; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "127.0.0.1:%d,", 1000 + i);
    setenv("PLEXUS_LISTEN", many, 1);
    cfg = load(NULL, 0, NULL, &rc, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err, "PLEXUS_LISTEN, option listen: at most"));
    px_config_free(cfg);
    unsetenv("PLEXUS_WORKERS");
    unsetenv("PLEXUS_LISTEN");
    /* env 0: the environment is not read (the CLI always reads it). */
    setenv("PLEXUS_WORKERS", "lots", 1);
    cfg = px_config_new();
    assert_int_equal(px_config_load(cfg, 0, NULL, NULL, 0, err, sizeof err), 0);
    px_config_free(cfg);
    unsetenv("PLEXUS_WORKERS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_json_options),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_precedence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
