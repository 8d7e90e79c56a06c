/* libFuzzer harness for src/front/pusher_proto.c px__pusher_parse: one Pusher client message
 * (a WebSocket text frame or an xhr_send element). A parse either fails with a message, or
 * yields a known type whose strings lie inside the input or the scratch buffer, with the
 * fields each type promises (a channel for subscribe, unsubscribe and client events; user_data
 * and auth for sign-in; a JSON value as a client event's data). Parsing is pure: the same input
 * gives the same result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "front/pusher_proto.h"
#include "plexus/json.h"

static int inside(px_str_t s, const char *a, size_t an, const char *b, size_t bn)
{
    if (!s.ptr)
        return s.len == 0;
    if (s.ptr >= a && s.ptr + s.len <= a + an)
        return 1;
    return s.ptr >= b && s.ptr + s.len <= b + bn;
}

static int same(px_str_t a, px_str_t b)
{
    return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *in = (const char *)data;
    size_t sl = 2 * size + 16;
    char *s1 = malloc(sl), *s2 = malloc(sl);
    px__pmsg_t a, b;
    int r = px__pusher_parse(in, size, &a, s1, sl);
    int r2 = px__pusher_parse(in, size, &b, s2, sl);
    CHECK(r == r2 && a.type == b.type);
    if (r != 0) {
        CHECK(r == -1);
        CHECK(a.err[0] != '\0');
        CHECK(strcmp(a.err, b.err) == 0);
        /* Too small a scratch buffer is an error, never an overflow. */
        CHECK(px__pusher_parse(in, size, &b, s2, size) == -1 || size == 0);
        free(s1);
        free(s2);
        return 0;
    }
    CHECK(a.type >= PX__PM_PING && a.type <= PX__PM_OTHER);
    CHECK(a.event.len >= 1 && a.event.len <= PX__PUSHER_NAME_MAX);
    px_str_t fa[] = {a.event, a.channel, a.auth, a.channel_data, a.user_data, a.data};
    px_str_t fb[] = {b.event, b.channel, b.auth, b.channel_data, b.user_data, b.data};
    for (size_t i = 0; i < sizeof fa / sizeof fa[0]; i++) {
        CHECK(inside(fa[i], in, size, s1, sl) ||
              (i == 5 && fa[i].len == 4 && memcmp(fa[i].ptr, "null", 4) == 0));
        CHECK(same(fa[i], fb[i]));
    }
    switch (a.type) {
    case PX__PM_SUBSCRIBE:
    case PX__PM_UNSUBSCRIBE:
        CHECK(a.channel.len >= 1 && a.channel.len <= PX__PUSHER_NAME_MAX);
        CHECK(a.auth.len <= PX__PUSHER_AUTH_MAX);
        break;
    case PX__PM_CLIENT: {
        CHECK(a.channel.len >= 1 && a.event.len > 7 && memcmp(a.event.ptr, "client-", 7) == 0);
        px_json_doc_t doc;
        CHECK(px_json_parse(&doc, a.data.ptr, a.data.len, NULL, 0, 0) >= 0);
        break;
    }
    case PX__PM_SIGNIN: CHECK(a.user_data.len >= 1 && a.auth.len >= 1); break;
    default: CHECK(!a.channel.ptr && !a.user_data.ptr); break;
    }
    free(s1);
    free(s2);
    return 0;
}
