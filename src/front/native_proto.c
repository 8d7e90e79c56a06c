/* Parsing the native protocol's client messages (see native_proto.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "front/native_proto.h"

__attribute__((format(printf, 3, 4))) static int fail(px__nop_t *o, const char *code,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->err_msg, sizeof o->err_msg, fmt, ap);
    va_end(ap);
    o->err_code = code;
    return -1;
}

static const struct {
    const char *name;
    int op;
} ops[] = {{"ping", PX__NOP_PING},
           {"subscribe", PX__NOP_SUBSCRIBE},
           {"unsubscribe", PX__NOP_UNSUBSCRIBE},
           {"publish", PX__NOP_PUBLISH},
           {"history", PX__NOP_HISTORY},
           {"presence", PX__NOP_PRESENCE},
           {"auth", PX__NOP_AUTH}};

int px__native_parse(const char *data, size_t len, px__nop_t *o, char *scratch, size_t scratch_len)
{
    memset(o, 0, sizeof *o);
    px_json_tok_t toks[PX__NATIVE_MAX_TOKENS];
    px_json_doc_t doc;
    if (px_json_parse(&doc, data, len, toks, PX__NATIVE_MAX_TOKENS, PX__NATIVE_MAX_DEPTH) < 0) {
        char why[128];
        px_json_format_error(&doc, why, sizeof why);
        if (doc.err == PX_JSON_E_TOKENS || doc.err == PX_JSON_E_DEPTH)
            return fail(o, "too_complex", "message too complex: %s", why);
        return fail(o, "invalid_json", "%s", why);
    }
    if (toks[0].type != PX_JSON_OBJECT)
        return fail(o, "bad_request", "a message is a JSON object");
    static const char *const keys[] = {"op",       "id",    "channel", "data", "since",
                                       "presence", "limit", "info",    "token"};
    enum { K_OP, K_ID, K_CHANNEL, K_DATA, K_SINCE, K_PRESENCE, K_LIMIT, K_INFO, K_TOKEN, K_COUNT };
    int v[K_COUNT];
    size_t dup;
    if (px_json_get_keys(&doc, 0, keys, K_COUNT, v, &dup) != 0) {
        /* The answer still carries the id when "id" itself is unambiguous. */
        int it = dup != K_ID ? px_json_get(&doc, 0, "id") : -1;
        o->has_id = it >= 0 && px_json_get_i64(&doc, it, &o->id) == 0;
        return fail(o, "bad_request", "duplicate \"%s\"", keys[dup]);
    }
    o->has_id = v[K_ID] >= 0;
    if (o->has_id && px_json_get_i64(&doc, v[K_ID], &o->id) != 0) {
        o->has_id = 0;
        return fail(o, "bad_request", "\"id\" must be an integer");
    }
    char op[16];
    if (v[K_OP] < 0 || toks[v[K_OP]].type != PX_JSON_STRING ||
        px_json_unescape(&doc, v[K_OP], op, sizeof op) < 0)
        return fail(o, "bad_request", "missing or invalid \"op\"");
    for (size_t i = 0; i < PX_ARRAY_SIZE(ops); i++)
        if (strcmp(op, ops[i].name) == 0)
            o->op = ops[i].op;
    if (!o->op)
        return fail(o, "unknown_op", "unknown op \"%s\"", op);
    if (o->op == PX__NOP_PING)
        return 0;
    if (o->op == PX__NOP_AUTH) {
        int n = v[K_TOKEN] >= 0 && toks[v[K_TOKEN]].type == PX_JSON_STRING
                    ? px_json_unescape(&doc, v[K_TOKEN], scratch, scratch_len)
                    : -1;
        if (n <= 0)
            return fail(o, "bad_request", "auth needs \"token\": a JWT of at most %zu bytes",
                        scratch_len - 1);
        o->token = (px_str_t){scratch, (size_t)n};
        return 0;
    }

    int cl = v[K_CHANNEL] >= 0 && toks[v[K_CHANNEL]].type == PX_JSON_STRING
                 ? px_json_unescape(&doc, v[K_CHANNEL], o->channel, sizeof o->channel)
                 : -1;
    if (cl < 0 || !px__channel_name_ok(o->channel, (size_t)cl))
        return fail(o, "invalid_channel",
                    "\"channel\" must be 1-200 bytes of A-Z a-z 0-9 _ - = @ , . ; : /");
    o->channel_len = (size_t)cl;

    switch (o->op) {
    case PX__NOP_SUBSCRIBE:
        if (v[K_SINCE] >= 0) {
            int st = v[K_SINCE], eo = -1, oo = -1;
            if (toks[st].type == PX_JSON_OBJECT) {
                eo = px_json_get(&doc, st, "epoch");
                oo = px_json_get(&doc, st, "offset");
            }
            if (oo < 0 || px_json_get_u64(&doc, oo, &o->since_offset) != 0 ||
                (eo >= 0 &&
                 (toks[eo].type != PX_JSON_STRING ||
                  px_json_unescape(&doc, eo, o->since_epoch, sizeof o->since_epoch) < 0)))
                return fail(o, "bad_request", "\"since\" must be {\"epoch\":\"...\",\"offset\":N}");
            o->has_since = 1;
        }
        if (v[K_PRESENCE] >= 0) {
            bool p = false;
            if (px_json_get_bool(&doc, v[K_PRESENCE], &p) != 0)
                return fail(o, "bad_request", "\"presence\" must be true or false");
            o->presence = p;
        }
        if (v[K_INFO] >= 0) {
            o->info = px_json_raw(&doc, v[K_INFO]);
            if (o->info.len > PX__NATIVE_INFO_MAX)
                return fail(o, "bad_request", "\"info\" is limited to %d bytes",
                            PX__NATIVE_INFO_MAX);
        }
        return 0;
    case PX__NOP_PUBLISH:
        if (v[K_DATA] < 0)
            return fail(o, "bad_request", "publish needs \"data\"");
        o->data = px_json_raw(&doc, v[K_DATA]);
        return 0;
    case PX__NOP_HISTORY:
        if (v[K_SINCE] >= 0) {
            int st = v[K_SINCE];
            int oo = toks[st].type == PX_JSON_OBJECT ? px_json_get(&doc, st, "offset") : st;
            if (oo < 0 || px_json_get_u64(&doc, oo, &o->since_offset) != 0)
                return fail(o, "bad_request", "\"since\" must be an offset or {\"offset\":N}");
            o->has_since = 1;
        }
        if (v[K_LIMIT] >= 0) {
            if (px_json_get_u64(&doc, v[K_LIMIT], &o->limit) != 0)
                o->limit = 0; /* out of range either way: the executor says 1..N */
            o->has_limit = 1;
        }
        return 0;
    default: return 0;
    }
}
