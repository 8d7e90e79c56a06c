/* Storage backend registry and helpers shared by backends (see store.h). */
#include "hub/store.h"

#include <stdio.h>
#include <string.h>

/* First entry is the default. A backend behind a build option adds itself here under
 * its #ifdef; nothing else in the hub needs to know it exists. */
static const px__store_ops_t *const backends[] = {
    &px__store_sqlite,
    &px__store_redis,
    &px__store_pg,
};

const px__store_ops_t *px__store_backend(const char *name)
{
    if (!name || !*name)
        return backends[0];
    for (size_t i = 0; i < PX_ARRAY_SIZE(backends); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

int px__store_open(const char *backend, const px__store_opts_t *o, px__store_t **out, char *err,
                   size_t errlen)
{
    const px__store_ops_t *ops = px__store_backend(backend);
    *out = NULL;
    if (!ops) {
        if (errlen)
            snprintf(err, errlen, "unknown storage backend \"%s\" (not compiled in?)", backend);
        return -ENOENT;
    }
    return ops->open(o, out, err, errlen);
}

int px__store_epoch_new(char out[PX__EPOCH_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[8];
    int r = px_random(raw, sizeof(raw));
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * sizeof(raw)] = '\0';
    return 0;
}

bool px__store_channel_ok(px_str_t channel)
{
    return channel.len >= 1 && channel.len <= PX__CHANNEL_MAX && channel.ptr;
}

bool px__store_epoch_ok(px_str_t epoch)
{
    if (epoch.len < 1 || epoch.len > PX__EPOCH_MAX || !epoch.ptr)
        return false;
    for (size_t i = 0; i < epoch.len; i++) {
        unsigned char c = (unsigned char)epoch.ptr[i];
        /* Printable, no space: safe in logs, headers and JSON without escaping. */
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
            return false;
    }
    return true;
}
