/* RFC 6455 client side: upgrade request, 101 check, masked frame encoder and
 * server frame parser. No I/O here. */
#include "wsload.h"

#include <ctype.h>
#include <string.h>

void wl_ws_build_request(wl_buf_t *out, const wl_config_t *cfg, wl_rng_t *rng,
                         char accept[WL_WS_ACCEPT_LEN + 1])
{
    uint8_t nonce[16];
    uint64_t a = wl_rng_next(rng), b = wl_rng_next(rng);
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    char key[WL_WS_KEY_LEN + 1];
    wl_base64(nonce, sizeof(nonce), key);
    wl_ws_accept_for_key(key, accept);

    wl_buf_append_str(out, "GET ");
    wl_buf_append_str(out, cfg->path);
    wl_buf_append_str(out, " HTTP/1.1\r\nHost: ");
    wl_buf_append_str(out, cfg->host);
    wl_buf_append_str(out, ":");
    wl_buf_append_u64(out, cfg->port);
    wl_buf_append_str(out, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
    wl_buf_append(out, key, WL_WS_KEY_LEN);
    wl_buf_append_str(out, "\r\n");
    if (cfg->proto->upgrade_headers != NULL)
        wl_buf_append_str(out, cfg->proto->upgrade_headers);
    wl_buf_append_str(out, "\r\n");
}

static bool line_has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0)
            return true;
    return false;
}

ssize_t wl_ws_check_response(const uint8_t *in, size_t len, const char *accept, const char **why)
{
    const char *s = (const char *)in;
    const char *end = memmem(s, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > 16384) {
            *why = "response head over 16 KiB";
            return -1;
        }
        return 0;
    }
    size_t head = (size_t)(end - s) + 4;
    if (head < 12 || memcmp(s, "HTTP/1.1 101", 12) != 0) {
        *why = "status is not 101 Switching Protocols";
        return -1;
    }
    bool upgrade = false, connection = false, accepted = false;
    const char *line = memchr(s, '\n', head);
    while (line != NULL && (size_t)(line + 1 - s) < head) {
        line++;
        const char *eol = memchr(line, '\r', (size_t)(s + head - line));
        if (eol == NULL || eol == line)
            break;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(eol - v);
            while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
                vlen--;
            if (nlen == 7 && strncasecmp(line, "upgrade", 7) == 0)
                upgrade = line_has_token(v, vlen, "websocket");
            else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0)
                connection = line_has_token(v, vlen, "upgrade");
            else if (nlen == 20 && strncasecmp(line, "sec-websocket-accept", 20) == 0)
                accepted = vlen == WL_WS_ACCEPT_LEN && memcmp(v, accept, vlen) == 0;
            else if (nlen == 24 && strncasecmp(line, "sec-websocket-extensions", 24) == 0 &&
                     vlen > 0) {
                *why = "server negotiated an extension we did not offer";
                return -1;
            }
        }
        line = memchr(line, '\n', (size_t)(s + head - line));
    }
    if (!accepted) {
        *why = "missing or wrong Sec-WebSocket-Accept";
        return -1;
    }
    if (!upgrade || !connection) {
        *why = "missing Upgrade: websocket / Connection: Upgrade";
        return -1;
    }
    return (ssize_t)head;
}

static void mask_bytes(uint8_t *p, size_t len, uint32_t mask)
{
    uint8_t mk[4];
    memcpy(mk, &mask, 4);
    uint64_t m8;
    memcpy(&m8, mk, 4);
    memcpy((uint8_t *)&m8 + 4, mk, 4);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m8;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] ^= mk[i & 3];
}

void wl_ws_frame_append(wl_buf_t *out, unsigned opcode, const uint8_t *payload, size_t len,
                        uint32_t mask)
{
    wl_buf_reserve(out, len + 14);
    uint8_t *h = out->data + out->len;
    size_t n = 0;
    h[n++] = (uint8_t)(0x80u | (opcode & 0x0fu));
    if (len < 126) {
        h[n++] = (uint8_t)(0x80u | len);
    } else if (len <= 0xffff) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(h + n, &mask, 4);
    n += 4;
    memcpy(h + n, payload, len);
    mask_bytes(h + n, len, mask);
    out->len += n + len;
}

ssize_t wl_ws_frame_parse(uint8_t *in, size_t len, wl_ws_frame_t *f)
{
    if (len < 2)
        return 0;
    uint8_t b0 = in[0], b1 = in[1];
    if (b0 & 0x70)
        return -1; /* RSV bits: no extension was negotiated */
    f->fin = (b0 & 0x80) != 0;
    f->opcode = b0 & 0x0f;
    bool masked = (b1 & 0x80) != 0;
    uint64_t plen = b1 & 0x7f;
    size_t hl = 2;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = (uint64_t)in[2] << 8 | in[3];
        hl = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | in[2 + i];
        hl = 10;
    }
    if (f->opcode >= 0x8) {
        if (!f->fin || plen > 125 || f->opcode > WL_WS_PONG)
            return -1;
    } else if (f->opcode > WL_WS_BIN) {
        return -1;
    }
    if (plen > (64u << 20))
        return -1; /* nothing in these scenarios is this big */
    uint32_t mask = 0;
    if (masked) {
        if (len < hl + 4)
            return 0;
        memcpy(&mask, in + hl, 4);
        hl += 4;
    }
    if (len - hl < plen)
        return 0;
    f->payload = in + hl;
    f->len = (size_t)plen;
    if (masked)
        mask_bytes(f->payload, f->len, mask);
    return (ssize_t)(hl + plen);
}
