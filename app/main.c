/* plexus: the server binary. It is a user of the public API like any other: the options
 * and the wiring are the library's (plexus/app.h), shared with the Node.js addon. */
#include <stdio.h>
#include <sys/stat.h>

#include "plexus/app.h"

/* The bundled web/ directory: next to the source tree in a build, or installed. */
static const char *default_static_dir(void)
{
    struct stat st;
    if (stat(PX_WEB_DIR, &st) == 0 && S_ISDIR(st.st_mode))
        return PX_WEB_DIR;
    return PX_INSTALL_WEB_DIR;
}

int main(int argc, char **argv)
{
    px_config_t *cfg = px_config_new();
    if (!cfg) {
        fprintf(stderr, "plexus: out of memory\n");
        return 1;
    }
    char err[1024];
    int r = px_config_load(cfg, argc, argv, NULL, 1, err, sizeof err);
    if (r != 0) {
        if (r < 0)
            fprintf(stderr, "plexus: %s (see plexus --help)\n", err);
        px_config_free(cfg);
        return r < 0 ? 2 : 0;
    }
    px_app_opts_t ao;
    px_app_opts_init(&ao);
    ao.default_static = default_static_dir();
    int code = 0;
    px_app_t *app = px_app_new(cfg, &ao, err, sizeof err, &code);
    if (!app)
        fprintf(stderr, "plexus: %s\n", err);
    else
        code = px_app_run(app) == 0 ? 0 : 1;
    px_app_free(app);
    px_config_free(cfg);
    return code;
}
