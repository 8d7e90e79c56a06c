/* libFuzzer harness for src/front/native_proto.c: one WebSocket text frame of the native
 * protocol. Checks that a parse either fails with a known error code and a message, or
 * yields a request whose fields keep their documented invariants: a known op, a valid
 * channel name for the ops that have one, spans inside the input, bounded info and token,
 * and an epoch that fits. Parsing is pure: the same input gives the same result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "front/native_proto.h"

static int inside(px_str_t s, const char *base, size_t n)
{
    return !s.ptr || (s.ptr >= base && s.ptr + s.len <= base + n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const codes[] = {"invalid_json", "too_complex", "bad_request", "unknown_op",
                                        "invalid_channel"};
    const char *in = (const char *)data;
    static char scratch[8193], scratch2[8193];
    px__nop_t a, b;
    int r = px__native_parse(in, size, &a, scratch, sizeof scratch);
    int r2 = px__native_parse(in, size, &b, scratch2, sizeof scratch2);
    CHECK(r == r2 && a.op == b.op && a.has_id == b.has_id && a.id == b.id);
    if (r != 0) {
        CHECK(r == -1);
        int known = 0;
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
            known |= a.err_code && strcmp(a.err_code, codes[i]) == 0;
        CHECK(known);
        CHECK(a.err_msg[0] != '\0');
        CHECK(strcmp(a.err_msg, b.err_msg) == 0);
        return 0;
    }
    CHECK(a.op >= PX__NOP_PING && a.op <= PX__NOP_AUTH);
    CHECK(a.err_code == NULL);
    if (a.op == PX__NOP_PING)
        return 0;
    if (a.op == PX__NOP_AUTH) {
        CHECK(a.token.ptr == scratch && a.token.len > 0 && a.token.len < sizeof scratch);
        CHECK(b.token.len == a.token.len && memcmp(a.token.ptr, b.token.ptr, a.token.len) == 0);
        return 0;
    }
    CHECK(px__channel_name_ok(a.channel, a.channel_len));
    CHECK(a.channel_len == b.channel_len && memcmp(a.channel, b.channel, a.channel_len) == 0);
    CHECK(strlen(a.since_epoch) <= PX__EPOCH_MAX);
    CHECK(inside(a.data, in, size) && inside(a.info, in, size));
    CHECK(a.info.len <= PX__NATIVE_INFO_MAX);
    if (a.op == PX__NOP_PUBLISH)
        CHECK(a.data.ptr && a.data.len > 0);
    else
        CHECK(a.data.ptr == NULL);
    if (a.op != PX__NOP_SUBSCRIBE)
        CHECK(a.info.ptr == NULL && !a.presence);
    if (a.op != PX__NOP_HISTORY)
        CHECK(!a.has_limit);
    return 0;
}
