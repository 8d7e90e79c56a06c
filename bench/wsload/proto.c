/* Protocol vtables (see wl_proto_t in wsload.h and README.md). Each protocol is
 * a static const table; adding one is a table here plus an entry in protos[]. */
#include "wsload.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SC(x) (1u << (x))

/* Subject/channel a connection publishes to in the echo scenario: its own. */
static void append_echo_subject(wl_buf_t *out, const wl_pconn_t *pc)
{
    wl_buf_append_str(out, "wl.e.");
    wl_buf_append_u64(out, pc->id);
}

/* ---- ws-echo / ws-broadcast: one WebSocket message is one application message ---- */

static void ws_encode(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out)
{
    (void)pc;
    wl_buf_append(out, payload, len);
}

static ssize_t ws_parse(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev,
                        wl_buf_t *out)
{
    (void)pc;
    (void)out;
    ev->kind = WL_EV_DELIVERY;
    ev->payload = in;
    ev->len = len;
    return len == 0 ? -1 : (ssize_t)len;
}

static const wl_proto_t proto_ws_echo = {
    .name = "ws-echo",
    .flags = WL_PROTO_WS,
    .default_path = "/echo",
    .scenarios = SC(WL_SC_ECHO) | SC(WL_SC_IDLE),
    .encode = ws_encode,
    .parse = ws_parse,
};

static const wl_proto_t proto_ws_broadcast = {
    .name = "ws-broadcast",
    .flags = WL_PROTO_WS,
    .default_path = "/broadcast",
    .scenarios = SC(WL_SC_FANOUT) | SC(WL_SC_IDLE),
    .encode = ws_encode,
    .parse = ws_parse,
};

/* ---- nats-ws: NATS client protocol carried in binary WebSocket frames -------------
 * nats-server treats the frame payloads as one byte stream in both directions. */

static int nats_setup(wl_pconn_t *pc, wl_buf_t *out)
{
    wl_buf_append_str(out, "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"wsload\","
                           "\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n");
    if (pc->role == WL_ROLE_ECHO) {
        wl_buf_append_str(out, "SUB ");
        append_echo_subject(out, pc);
        wl_buf_append_str(out, " 1\r\n");
    } else if (pc->role == WL_ROLE_SUB || pc->role == WL_ROLE_IDLE) {
        wl_buf_append_str(out, "SUB ");
        wl_buf_append_str(out, pc->cfg->subject);
        wl_buf_append_str(out, " 1\r\n");
    }
    /* The PONG proves CONNECT and SUB were processed: ready after it. */
    wl_buf_append_str(out, "PING\r\n");
    return 1;
}

static void nats_encode(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out)
{
    wl_buf_reserve(out, len + 64 + strlen(pc->cfg->subject));
    wl_buf_append_str(out, "PUB ");
    if (pc->role == WL_ROLE_ECHO)
        append_echo_subject(out, pc);
    else
        wl_buf_append_str(out, pc->cfg->subject);
    wl_buf_append_str(out, " ");
    wl_buf_append_u64(out, len);
    wl_buf_append_str(out, "\r\n");
    wl_buf_append(out, payload, len);
    wl_buf_append_str(out, "\r\n");
}

static bool parse_dec(const char *s, size_t n, size_t *v)
{
    if (n == 0 || n > 12)
        return false;
    size_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (size_t)(s[i] - '0');
    }
    *v = x;
    return true;
}

static ssize_t nats_parse(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev,
                          wl_buf_t *out)
{
    (void)pc;
    const char *s = (const char *)in;
    const char *nl = memchr(s, '\n', len);
    if (nl == NULL)
        return len > 65536 ? -1 : 0;
    size_t line = (size_t)(nl - s) + 1; /* including CRLF */
    size_t body = line >= 2 && s[line - 2] == '\r' ? line - 2 : line - 1;
    if (body >= 4 && strncasecmp(s, "MSG ", 4) == 0) {
        /* MSG <subject> <sid> [reply-to] <#bytes> */
        size_t i = body;
        while (i > 4 && s[i - 1] != ' ')
            i--;
        size_t n;
        if (!parse_dec(s + i, body - i, &n))
            return -1;
        if (len - line < n + 2)
            return 0;
        ev->kind = WL_EV_DELIVERY;
        ev->payload = in + line;
        ev->len = n;
        return (ssize_t)(line + n + 2);
    }
    if (body >= 4 && strncasecmp(s, "PING", 4) == 0) {
        wl_buf_append_str(out, "PONG\r\n");
        return (ssize_t)line;
    }
    if (body >= 4 && strncasecmp(s, "PONG", 4) == 0) {
        ev->kind = WL_EV_READY;
        return (ssize_t)line;
    }
    if ((body >= 4 && strncasecmp(s, "INFO", 4) == 0) || (body >= 3 && memcmp(s, "+OK", 3) == 0))
        return (ssize_t)line;
    /* -ERR or anything unknown: hand the line to the engine for the report. */
    ev->payload = in;
    ev->len = body;
    return -1;
}

static const wl_proto_t proto_nats_ws = {
    .name = "nats-ws",
    .flags = WL_PROTO_WS | WL_PROTO_STREAM,
    .default_path = "/",
    .scenarios = SC(WL_SC_ECHO) | SC(WL_SC_FANOUT) | SC(WL_SC_IDLE),
    .setup = nats_setup,
    .encode = nats_encode,
    .parse = nats_parse,
};

/* ---- redis: RESP2 over plain TCP -------------------------------------------------- */

static void resp_bulk(wl_buf_t *out, const void *p, size_t n)
{
    wl_buf_append_str(out, "$");
    wl_buf_append_u64(out, n);
    wl_buf_append_str(out, "\r\n");
    wl_buf_append(out, p, n);
    wl_buf_append_str(out, "\r\n");
}

static int redis_setup(wl_pconn_t *pc, wl_buf_t *out)
{
    if (pc->role != WL_ROLE_SUB && pc->role != WL_ROLE_IDLE)
        return 0;
    wl_buf_append_str(out, "*2\r\n");
    resp_bulk(out, "SUBSCRIBE", 9);
    resp_bulk(out, pc->cfg->subject, strlen(pc->cfg->subject));
    return 1; /* the subscribe confirmation */
}

static void redis_encode(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out)
{
    wl_buf_reserve(out, len + 64 + strlen(pc->cfg->subject));
    if (pc->role == WL_ROLE_PUB) {
        wl_buf_append_str(out, "*3\r\n");
        resp_bulk(out, "PUBLISH", 7);
        resp_bulk(out, pc->cfg->subject, strlen(pc->cfg->subject));
    } else {
        wl_buf_append_str(out, "*2\r\n");
        resp_bulk(out, "ECHO", 4);
    }
    resp_bulk(out, payload, len);
}

typedef struct resp_item {
    char type;
    const uint8_t *p; /* bulk data or the line after the type byte */
    size_t len;
} resp_item_t;

/* One scalar RESP value at in[0..len): bytes consumed, 0 incomplete, -1 error. */
static ssize_t resp_scalar(const uint8_t *in, size_t len, resp_item_t *it)
{
    const uint8_t *nl = memchr(in, '\n', len);
    if (nl == NULL)
        return len > 65536 ? -1 : 0;
    size_t line = (size_t)(nl - in) + 1;
    if (line < 3 || in[line - 2] != '\r')
        return -1;
    it->type = (char)in[0];
    it->p = in + 1;
    it->len = line - 3;
    if (it->type != '$')
        return (ssize_t)line;
    if (it->len == 2 && memcmp(it->p, "-1", 2) == 0) {
        it->type = '_'; /* null bulk */
        return (ssize_t)line;
    }
    size_t n;
    if (!parse_dec((const char *)it->p, it->len, &n))
        return -1;
    if (len - line < n + 2)
        return 0;
    it->p = in + line;
    it->len = n;
    return (ssize_t)(line + n + 2);
}

static ssize_t redis_parse(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev,
                           wl_buf_t *out)
{
    (void)pc;
    (void)out;
    resp_item_t it;
    ssize_t r = resp_scalar(in, len, &it);
    if (r <= 0)
        return r;
    switch (it.type) {
    case '+':
    case ':':
    case '_': return r;
    case '-':
        ev->payload = it.p; /* the error text, for the report */
        ev->len = it.len;
        return -1;
    case '$':
        ev->kind = WL_EV_DELIVERY; /* ECHO reply */
        ev->payload = it.p;
        ev->len = it.len;
        return r;
    case '*': break;
    default: return -1;
    }
    /* Push messages: [message, channel, payload], [subscribe, channel, count], ... */
    size_t n;
    if (!parse_dec((const char *)it.p, it.len, &n) || n > 16)
        return -1;
    size_t off = (size_t)r;
    resp_item_t el[16];
    for (size_t i = 0; i < n; i++) {
        r = resp_scalar(in + off, len - off, &el[i]);
        if (r <= 0)
            return r;
        if (el[i].type == '*')
            return -1; /* no nested arrays in the replies we provoke */
        off += (size_t)r;
    }
    if (n == 3 && el[0].type == '$') {
        if (el[0].len == 7 && memcmp(el[0].p, "message", 7) == 0) {
            ev->kind = WL_EV_DELIVERY;
            ev->payload = el[2].p;
            ev->len = el[2].len;
        } else if (el[0].len == 9 && memcmp(el[0].p, "subscribe", 9) == 0) {
            ev->kind = WL_EV_READY;
        }
    }
    return (ssize_t)off;
}

static const wl_proto_t proto_redis = {
    .name = "redis",
    .flags = WL_PROTO_STREAM,
    .scenarios = SC(WL_SC_ECHO) | SC(WL_SC_FANOUT) | SC(WL_SC_IDLE),
    .setup = redis_setup,
    .encode = redis_encode,
    .parse = redis_parse,
};

/* ---- plexus-hub: the plexus hub's JSON protocol on /ws (docs/protocol.md) --------
 * One JSON object per text frame. The server speaks first ({"op":"welcome"}); only
 * then does a connection subscribe (id 1) and it counts as established on the
 * reply to that subscribe. The publisher just waits for the welcome. Deliveries
 * are {"op":"message",...,"data":"<payload>"}: the payload is printable with no
 * quote or backslash, so it travels as a JSON string and comes back verbatim.
 * Replies to publishes ({"op":"reply","offset":N}, no id) are ignored.
 *
 * pc->user holds the connection's stage: */
enum { HUB_WELCOME, HUB_SUBSCRIBING, HUB_LIVE };

#define HUB_SUB_ID "1"

static void hub_append_channel(wl_buf_t *out, const wl_pconn_t *pc)
{
    if (pc->role == WL_ROLE_ECHO)
        append_echo_subject(out, pc); /* echo: a private channel per connection */
    else
        wl_buf_append_str(out, pc->cfg->subject);
}

static int hub_setup(wl_pconn_t *pc, wl_buf_t *out)
{
    (void)out; /* nothing to send before the welcome */
    pc->user = HUB_WELCOME;
    return pc->role == WL_ROLE_PUB ? 1 : 2; /* welcome (+ subscribe reply) */
}

static void hub_encode(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out)
{
    wl_buf_reserve(out, len + 64 + strlen(pc->cfg->subject));
    wl_buf_append_str(out, "{\"op\":\"publish\",\"channel\":\"");
    hub_append_channel(out, pc);
    wl_buf_append_str(out, "\",\"data\":\"");
    wl_buf_append(out, payload, len);
    wl_buf_append_str(out, "\"}");
}

static bool json_ws(uint8_t ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static size_t json_skip_ws(const uint8_t *s, size_t len, size_t i)
{
    while (i < len && json_ws(s[i]))
        i++;
    return i;
}

/* s[i] is the opening quote: index just past the closing one, 0 if unterminated. */
static size_t json_skip_string(const uint8_t *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* One value starting at s[i] (not whitespace): index just past it, 0 if malformed.
 * Not a validator: it only finds where the value ends. */
static size_t json_skip_value(const uint8_t *s, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    if (s[i] == '"')
        return json_skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        unsigned depth = 0;
        while (i < len) {
            uint8_t ch = s[i];
            if (ch == '"') {
                i = json_skip_string(s, len, i);
                if (i == 0)
                    return 0;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else if ((ch == '}' || ch == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return 0;
    }
    size_t start = i;
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && !json_ws(s[i]))
        i++;
    return i > start ? i : 0;
}

typedef struct hub_span {
    const uint8_t *p; /* NULL: key absent */
    size_t n;
} hub_span_t;

typedef struct hub_msg {
    hub_span_t op, id, data; /* op: the string's contents; id, data: raw JSON values */
} hub_msg_t;

static bool span_is(hub_span_t v, const char *lit)
{
    size_t n = strlen(lit);
    return v.p != NULL && v.n == n && memcmp(v.p, lit, n) == 0;
}

/* Walk the top-level keys of one JSON object and pick out op, id and data. Nested
 * values are skipped whole, so a key inside "data" is never mistaken for ours. */
static bool hub_scan(const uint8_t *s, size_t len, hub_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    size_t i = json_skip_ws(s, len, 0);
    if (i >= len || s[i] != '{')
        return false;
    i = json_skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}')
        return true;
    while (i < len) {
        if (s[i] != '"')
            return false;
        size_t kend = json_skip_string(s, len, i);
        if (kend == 0)
            return false;
        hub_span_t key = {s + i + 1, kend - i - 2};
        i = json_skip_ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return false;
        i = json_skip_ws(s, len, i + 1);
        size_t vend = json_skip_value(s, len, i);
        if (vend == 0)
            return false;
        hub_span_t val = {s + i, vend - i};
        if (span_is(key, "op") && val.n >= 2 && val.p[0] == '"')
            m->op = (hub_span_t){val.p + 1, val.n - 2};
        else if (span_is(key, "id"))
            m->id = val;
        else if (span_is(key, "data"))
            m->data = val;
        i = json_skip_ws(s, len, vend);
        if (i < len && s[i] == '}')
            return true;
        if (i >= len || s[i] != ',')
            return false;
        i = json_skip_ws(s, len, i + 1);
    }
    return false;
}

static ssize_t hub_parse(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev,
                         wl_buf_t *out)
{
    hub_msg_t m;
    if (!hub_scan(in, len, &m) || m.op.p == NULL) {
        ev->payload = in;
        ev->len = len;
        return -1;
    }
    if (span_is(m.op, "message")) {
        /* A string is delivered without its quotes; anything else is handed over
         * raw and fails the payload check, as a corrupt message should. */
        if (m.data.p == NULL) {
            ev->payload = in;
            ev->len = len;
            return -1;
        }
        ev->kind = WL_EV_DELIVERY;
        ev->payload = m.data.p;
        ev->len = m.data.n;
        if (m.data.n >= 2 && m.data.p[0] == '"') {
            ev->payload++;
            ev->len -= 2;
        }
        return (ssize_t)len;
    }
    if (span_is(m.op, "welcome")) {
        if (pc->user != HUB_WELCOME)
            return (ssize_t)len;
        ev->kind = WL_EV_READY;
        if (pc->role == WL_ROLE_PUB) {
            pc->user = HUB_LIVE;
        } else {
            wl_buf_append_str(out, "{\"op\":\"subscribe\",\"id\":" HUB_SUB_ID ",\"channel\":\"");
            hub_append_channel(out, pc);
            wl_buf_append_str(out, "\"}");
            pc->user = HUB_SUBSCRIBING;
        }
        return (ssize_t)len;
    }
    if (span_is(m.op, "reply")) {
        if (pc->user == HUB_SUBSCRIBING && span_is(m.id, HUB_SUB_ID)) {
            ev->kind = WL_EV_READY;
            pc->user = HUB_LIVE;
        }
        return (ssize_t)len; /* publish replies */
    }
    if (span_is(m.op, "error")) {
        ev->payload = in; /* e.g. rate_limited: quoted in the report */
        ev->len = len;
        return -1;
    }
    return (ssize_t)len; /* pong, join, leave: nothing to count */
}

static const wl_proto_t proto_plexus_hub = {
    .name = "plexus-hub",
    .flags = WL_PROTO_WS | WL_PROTO_TEXT,
    .default_path = "/ws",
    .scenarios = SC(WL_SC_ECHO) | SC(WL_SC_FANOUT) | SC(WL_SC_IDLE),
    .setup = hub_setup,
    .encode = hub_encode,
    .parse = hub_parse,
};

/* ---- pusher: the Pusher Channels protocol v7 on /app/<key> (docs/pusher.md) ---------
 * One JSON event per text frame; the server speaks first (pusher:connection_established
 * with the socket id, which private and presence subscriptions sign). Every role then
 * subscribes to --subject (signed with --pusher-secret for private-/presence- names;
 * presence members are user "wl<id>") and counts as established on
 * pusher_internal:subscription_succeeded. The publisher sends client events
 * {"event":"client-wl","channel":..,"data":"<payload>"} (the app must allow client events
 * without a rate: max-client-events-per-second 0, and the channel be private- or
 * presence-). A delivery is any event on the channel that is not pusher*: its data string
 * is the payload. pusher:ping is answered; pusher:error is a protocol error.
 *
 * pc->user: 0 before the handshake; then the socket id (A << 32 | B, never 0), with bit 63
 * set once subscribed. */
#define PUSHER_LIVE (1ull << 63)

static int pusher_setup(wl_pconn_t *pc, wl_buf_t *out)
{
    (void)out;
    pc->user = 0;
    return 2; /* connection_established, subscription_succeeded */
}

static void pusher_encode(wl_pconn_t *pc, const uint8_t *payload, size_t len, wl_buf_t *out)
{
    wl_buf_reserve(out, len + 64 + strlen(pc->cfg->subject));
    wl_buf_append_str(out, "{\"event\":\"client-wl\",\"channel\":\"");
    wl_buf_append_str(out, pc->cfg->subject);
    wl_buf_append_str(out, "\",\"data\":\"");
    wl_buf_append(out, payload, len);
    wl_buf_append_str(out, "\"}");
}

/* The value of top-level string key `key` (without quotes, escapes left as they are). */
static bool pusher_str(const uint8_t *s, size_t len, const char *key, hub_span_t *out)
{
    size_t i = json_skip_ws(s, len, 0);
    if (i >= len || s[i] != '{')
        return false;
    i = json_skip_ws(s, len, i + 1);
    while (i < len && s[i] == '"') {
        size_t kend = json_skip_string(s, len, i);
        if (kend == 0)
            return false;
        hub_span_t k = {s + i + 1, kend - i - 2};
        i = json_skip_ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return false;
        i = json_skip_ws(s, len, i + 1);
        size_t vend = json_skip_value(s, len, i);
        if (vend == 0)
            return false;
        if (span_is(k, key)) {
            *out = (hub_span_t){s + i, vend - i};
            if (out->n >= 2 && out->p[0] == '"') {
                out->p++;
                out->n -= 2;
            }
            return true;
        }
        i = json_skip_ws(s, len, vend);
        if (i < len && s[i] == ',')
            i = json_skip_ws(s, len, i + 1);
    }
    return false;
}

static void pusher_subscribe(wl_pconn_t *pc, wl_buf_t *out)
{
    const char *ch = pc->cfg->subject;
    char sid[32], user[40], cd[96] = "", sig[65];
    snprintf(sid, sizeof sid, "%u.%u", (unsigned)(pc->user >> 32),
             (unsigned)(pc->user & 0xffffffffu));
    int presence = strncmp(ch, "presence-", 9) == 0, priv = strncmp(ch, "private-", 8) == 0;
    if (presence) {
        snprintf(user, sizeof user, "wl%u", (unsigned)pc->id);
        snprintf(cd, sizeof cd, "{\"user_id\":\"%s\"}", user);
    }
    wl_buf_append_str(out, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"");
    wl_buf_append_str(out, ch);
    wl_buf_append_str(out, "\",\"auth\":\"");
    if (presence || priv) {
        char tosign[512];
        int n = snprintf(tosign, sizeof tosign, "%s:%s%s%s", sid, ch, presence ? ":" : "", cd);
        wl_hmac_sha256_hex(pc->cfg->pusher_secret, tosign, (size_t)n, sig);
        wl_buf_append_str(out, pc->cfg->pusher_key);
        wl_buf_append_str(out, ":");
        wl_buf_append_str(out, sig);
    }
    wl_buf_append_str(out, "\"");
    if (presence) {
        wl_buf_append_str(out, ",\"channel_data\":\"{\\\"user_id\\\":\\\"");
        wl_buf_append_str(out, user);
        wl_buf_append_str(out, "\\\"}\"");
    }
    wl_buf_append_str(out, "}}");
}

static ssize_t pusher_parse(wl_pconn_t *pc, const uint8_t *in, size_t len, wl_event_t *ev,
                            wl_buf_t *out)
{
    hub_span_t event, data;
    if (!pusher_str(in, len, "event", &event)) {
        ev->payload = in;
        ev->len = len;
        return -1;
    }
    if (span_is(event, "pusher:connection_established")) {
        /* data is a JSON string: {\"socket_id\":\"A.B\",...} */
        if (pc->user != 0 || !pusher_str(in, len, "data", &data))
            return (ssize_t)len;
        uint64_t a = 0, b = 0;
        size_t i = 0;
        for (; i + 9 < data.n && memcmp(data.p + i, "socket_id", 9) != 0; i++)
            ;
        for (i += 9; i < data.n && (data.p[i] < '0' || data.p[i] > '9'); i++)
            ;
        for (; i < data.n && data.p[i] >= '0' && data.p[i] <= '9'; i++)
            a = a * 10 + (uint64_t)(data.p[i] - '0');
        for (i++; i < data.n && data.p[i] >= '0' && data.p[i] <= '9'; i++)
            b = b * 10 + (uint64_t)(data.p[i] - '0');
        pc->user = (a << 32 | b) & ~PUSHER_LIVE;
        if (pc->user == 0)
            pc->user = 1;
        ev->kind = WL_EV_READY;
        pusher_subscribe(pc, out);
        return (ssize_t)len;
    }
    if (span_is(event, "pusher_internal:subscription_succeeded")) {
        if (!(pc->user & PUSHER_LIVE)) {
            pc->user |= PUSHER_LIVE;
            ev->kind = WL_EV_READY;
        }
        return (ssize_t)len;
    }
    if (span_is(event, "pusher:ping")) {
        wl_buf_append_str(out, "{\"event\":\"pusher:pong\",\"data\":{}}");
        return (ssize_t)len;
    }
    if (span_is(event, "pusher:error") || span_is(event, "pusher:subscription_error")) {
        ev->payload = in;
        ev->len = len;
        return -1;
    }
    if (event.n >= 6 && memcmp(event.p, "pusher", 6) == 0)
        return (ssize_t)len; /* pong, member events, cache_miss */
    if (!pusher_str(in, len, "data", &data)) {
        ev->payload = in;
        ev->len = len;
        return -1;
    }
    ev->kind = WL_EV_DELIVERY;
    ev->payload = data.p;
    ev->len = data.n;
    return (ssize_t)len;
}

static const wl_proto_t proto_pusher = {
    .name = "pusher",
    .flags = WL_PROTO_WS | WL_PROTO_TEXT,
    .default_path = "/app/app-key?protocol=7",
    .scenarios = SC(WL_SC_FANOUT) | SC(WL_SC_IDLE),
    .setup = pusher_setup,
    .encode = pusher_encode,
    .parse = pusher_parse,
};

/* ---- registry ---------------------------------------------------------------------- */

static const wl_proto_t *const protos[] = {
    &proto_ws_echo, &proto_ws_broadcast, &proto_nats_ws,
    &proto_redis,   &proto_plexus_hub,   &proto_pusher,
};

const wl_proto_t *wl_proto_find(const char *name)
{
    for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++)
        if (strcmp(protos[i]->name, name) == 0)
            return protos[i];
    return NULL;
}

const char *wl_proto_names(void)
{
    return "ws-echo, ws-broadcast, nats-ws, redis, plexus-hub, pusher";
}
