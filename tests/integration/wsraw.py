"""wsraw: a tiny RFC 6455 client over plain sockets, for the WebSocket
conformance tests (tests/integration/40-ws-conformance.py and friends).

Unlike a real client library it lets a test send anything: reserved opcodes and
RSV bits, bad close codes, invalid UTF-8, frames chopped into single-byte TCP
writes, a header announcing a payload that never comes. Frames from the server
are parsed strictly (they must be unmasked, control frames short and final) so
every test also checks the server's own framing.

    with WsClient(server.addr) as ws:
        ws.send_message(OP_TEXT, b"hello", chop=1)
        assert ws.recv_message() == (OP_TEXT, b"hello")
        ws.send_close(1000)
        ws.expect_close(1000)          # close frame, then the server's FIN

Only the standard library is used.
"""

import base64
import hashlib
import os
import random
import socket
import struct
import time
import zlib

from pxtest import SocketReader, scaled

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFLATE_TAIL = b"\x00\x00\xff\xff"


class ProtocolViolation(AssertionError):
    """The server sent something RFC 6455 forbids."""


def mask(data, key):
    """XOR `data` with the 4-byte `key` (its own inverse). A key of four equal
    bytes takes the fast path (bytes.translate); others XOR one big integer."""
    n = len(data)
    if n == 0:
        return b""
    if key[0] == key[1] == key[2] == key[3]:
        return bytes(data).translate(_XOR_TABLES[key[0]])
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]
BIG = 1 << 20  # payloads from this size get a uniform key (see encode_frame)


def encode_frame(opcode, payload=b"", fin=True, rsv=0, masked=True, key=None, length=None):
    """One frame as bytes. `rsv` is the OR of RSV1/RSV2/RSV3; `length` overrides
    the announced payload length (to announce more than is sent)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | (opcode & 0x0F)
    mbit = 0x80 if masked else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n <= 0xFFFF:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return hdr + payload
    if key is None:
        # Random keys for everything the per-offset unmasking can get wrong; a
        # uniform key for big payloads keeps Python fast (16 MiB in ~20 ms).
        key = os.urandom(4) if n < BIG else os.urandom(1) * 4
    return hdr + key + mask(payload, key)


def close_payload(code=None, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


def deflate_raw(data, compressor=None, wbits=15):
    """permessage-deflate payload of one message (RFC 7692 7.2.1): raw deflate,
    sync flush, trailing 00 00 FF FF removed. With `compressor` (a
    zlib.compressobj(wbits=-N)) the context is kept across messages."""
    c = compressor or zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(DEFLATE_TAIL)
    return out[:-4]


def utf8_text(n, seed=0):
    """A valid UTF-8 byte string of exactly n bytes mixing 1- to 4-byte sequences."""
    pieces = ["a", "Z", " ", "é", "ß", "€", "字", "😀", "\U0010fffd", "\u07ff", "\u0800"]
    rnd = random.Random(seed)
    unit = "".join(rnd.choice(pieces) for _ in range(4096)).encode()
    out = (unit * (n // len(unit) + 1))[:n]
    out = out.decode("utf-8", "ignore").encode()  # only the tail can be cut
    return out + b"x" * (n - len(out))


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "payload")

    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return "<Frame op=%#x fin=%d rsv=%#x len=%d %r>" % (self.opcode, self.fin, self.rsv,
                                                             len(self.payload), p)


class HandshakeFailed(AssertionError):
    def __init__(self, status, headers, body):
        super().__init__("handshake refused: %d %r" % (status, body[:200]))
        self.status, self.headers, self.body = status, headers, body


class WsClient(SocketReader):
    """A raw WebSocket client connection.

    extensions: the Sec-WebSocket-Extensions offer (str) or None. When the server
    accepts permessage-deflate, `self.deflate` is True and recv_message()
    inflates compressed messages; send_message(compress=True) compresses.
    rcvbuf: SO_RCVBUF set before connecting (a small window for slow-reader tests).
    """

    recv_size = 1 << 20

    def __init__(self, addr, path="/echo", extensions=None, headers=(), timeout=10.0,
                 rcvbuf=None, handshake=True):
        self.addr = addr
        self.path = path
        self.timeout = scaled(timeout)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.timeout)
        self.sock.connect(addr)
        self.buf = bytearray()
        self.eof = False
        self.frames = []  # every frame received, in order (for "nothing else came" checks)
        self.deflate = False
        self.response_headers = {}
        self.extension = None
        self._inflater = None
        self._compressor = None
        self.client_context_takeover = True
        self.rnd = random.Random(0x5EED)
        if handshake:
            self.handshake(extensions, headers)

    # -- handshake --

    def handshake(self, extensions=None, headers=()):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % self.path, "Host: %s:%d" % self.addr[:2],
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if extensions is not None:
            lines.append("Sec-WebSocket-Extensions: " + extensions)
        lines += list(headers)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("server closed during the handshake: %r" % bytes(self.buf))
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = bytes(self.buf[:i]).decode("latin-1"), self.buf[i + 4:]
        status_line, *hlines = head.split("\r\n")
        status = int(status_line.split(" ")[1])
        hdrs = {}
        for line in hlines:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            hdrs[k] = (hdrs[k] + ", " + v.strip()) if k in hdrs else v.strip()
        self.response_headers = hdrs
        if status != 101:
            raise HandshakeFailed(status, hdrs, bytes(self.buf))
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise ProtocolViolation("bad Sec-WebSocket-Accept %r" % hdrs.get("sec-websocket-accept"))
        if (hdrs.get("upgrade", "").lower() != "websocket"
                or "upgrade" not in hdrs.get("connection", "").lower()):
            raise ProtocolViolation("bad Upgrade/Connection in 101: %r" % hdrs)
        ext = hdrs.get("sec-websocket-extensions")
        self.extension = ext
        if ext is not None:
            params = [p.strip() for p in ext.split(";")]
            if params[0] != "permessage-deflate" or "," in ext:
                raise ProtocolViolation("unexpected extension response %r" % ext)
            self.deflate = True
            self.ext_params = {}
            for p in params[1:]:
                k, _, v = p.partition("=")
                self.ext_params[k.strip()] = v.strip().strip('"') or None
            sbits = int(self.ext_params.get("server_max_window_bits") or 15)
            self.server_window_bits = sbits
            self.client_context_takeover = "client_no_context_takeover" not in self.ext_params
            cbits = self.ext_params.get("client_max_window_bits")
            self.client_window_bits = int(cbits) if cbits else 15
            self._inflater = zlib.decompressobj(-15)  # a bigger window decodes smaller ones
        return self

    # -- sending --

    def send_raw(self, data, chop=None, delay=0.0):
        """Send bytes: all at once (chop=None), `chop` bytes per write (chop=1 is one
        byte per TCP segment, TCP_NODELAY is on), or chop="random" for random
        sizes between 1 byte and 16 KiB. `delay` sleeps between writes."""
        if chop is None:
            self.sock.sendall(data)
            return
        mv = memoryview(data)
        i = 0
        while i < len(mv):
            if chop == "random":
                n = self.rnd.choice((1, 2, 3, 7, 13, 100, 1000, 4096, 16384))
                n = self.rnd.randint(1, n)
            else:
                n = chop
            self.sock.sendall(mv[i:i + n])
            i += n
            if delay:
                time.sleep(delay)
            elif chop == 1 or (chop == "random" and self.rnd.random() < 0.01):
                time.sleep(0)  # give the server a chance to see the partial frame

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, chop=None, delay=0.0, **kw):
        self.send_raw(encode_frame(opcode, payload, fin, rsv, **kw), chop, delay)

    def compress(self, data):
        """permessage-deflate payload for `data` with this connection's context."""
        if self.client_context_takeover:
            if self._compressor is None:
                self._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                                                    -max(9, self.client_window_bits))
            return deflate_raw(data, self._compressor)
        return deflate_raw(data, wbits=max(9, self.client_window_bits))

    def send_message(self, opcode, payload, fragments=None, chop=None, compress=False, delay=0.0):
        """Send one data message, optionally split into fragments: an int
        (fragment size in bytes) or a list of sizes (the rest goes in the last
        one). compress=True sets RSV1 on the first frame."""
        if isinstance(payload, str):
            payload = payload.encode()
        data = self.compress(payload) if compress else payload
        parts = split(data, fragments)
        out = []
        for i, part in enumerate(parts):
            op = opcode if i == 0 else OP_CONT
            rsv = RSV1 if compress and i == 0 else 0
            out.append(encode_frame(op, part, fin=(i == len(parts) - 1), rsv=rsv))
        self.send_raw(b"".join(out), chop, delay)

    def send_close(self, code=None, reason=b"", chop=None):
        self.send_frame(OP_CLOSE, close_payload(code, reason), chop=chop)

    # -- receiving --

    def recv_frame(self, timeout=None):
        """The next frame from the server, or None if it closed the connection.
        Raises socket.timeout if nothing complete arrives within `timeout`
        (scaled; default: the connection's timeout)."""
        deadline = time.monotonic() + (scaled(timeout) if timeout is not None else self.timeout)
        while True:
            f = self._parse()
            if f is not None:
                self.frames.append(f)
                return f
            if not self._fill(deadline):
                if self.buf:
                    raise ProtocolViolation("connection closed inside a frame (%d bytes)" % len(self.buf))
                return None

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin, rsv, opcode = b[0] >> 7, b[0] & 0x70, b[0] & 0x0F
        if b[1] & 0x80:
            raise ProtocolViolation("server sent a masked frame")
        n, pos = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack_from("!H", b, 2)[0], 4
            if n < 126:
                raise ProtocolViolation("non-minimal 16-bit length")
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack_from("!Q", b, 2)[0], 10
            if n <= 0xFFFF or n >> 63:
                raise ProtocolViolation("non-minimal or huge 64-bit length")
        if len(b) < pos + n:
            return None
        if opcode in (3, 4, 5, 6, 7) or opcode > 0xA:
            raise ProtocolViolation("server sent reserved opcode %#x" % opcode)
        if opcode >= 8 and (not fin or n > 125):
            raise ProtocolViolation("bad control frame from the server (fin=%d len=%d)" % (fin, n))
        if rsv & (RSV2 | RSV3) or (rsv & RSV1 and (not self.deflate or opcode not in (OP_TEXT, OP_BINARY))):
            raise ProtocolViolation("server set RSV bits %#x on opcode %#x" % (rsv, opcode))
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        return Frame(fin, rsv, opcode, payload)

    def recv_message(self, timeout=None):
        """The next message: (opcode, payload). Data messages are reassembled
        (and inflated); control frames are returned as they come. None on EOF."""
        opcode, parts, compressed = None, [], False
        while True:
            f = self.recv_frame(timeout)
            if f is None:
                if opcode is not None:
                    raise ProtocolViolation("connection closed inside a fragmented message")
                return None
            if f.opcode >= 8:
                if opcode is None:
                    return f.opcode, f.payload
                if f.opcode == OP_CLOSE:
                    raise ProtocolViolation("close frame inside a fragmented message: %r" % f)
                continue  # a control frame between fragments: the tests do not expect any
            if opcode is None:
                if f.opcode == OP_CONT:
                    raise ProtocolViolation("server sent a continuation without a message")
                opcode, compressed = f.opcode, bool(f.rsv & RSV1)
            elif f.opcode != OP_CONT:
                raise ProtocolViolation("server started a message inside another")
            parts.append(f.payload)
            if f.fin:
                data = b"".join(parts)
                if compressed:
                    # One inflater for the connection: keeping the window is right
                    # with or without server_no_context_takeover.
                    data = self._inflater.decompress(data + DEFLATE_TAIL)
                self.last_compressed = compressed
                if opcode == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ProtocolViolation("server sent invalid UTF-8 text: %s" % e)
                return opcode, data

    def expect_close(self, code, timeout=5.0, allow_messages=False):
        """The next frame must be a close with `code` (None: empty payload), and
        the server must then close TCP by itself. Returns the reason bytes.
        With allow_messages, data messages before the close are skipped (counted
        in self.skipped)."""
        self.skipped = 0
        while True:
            f = self.recv_frame(timeout)
            if f is None:
                raise AssertionError("expected a close frame (%s), got EOF" % code)
            if allow_messages and f.opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                self.skipped += 1
                continue
            break
        if f.opcode != OP_CLOSE:
            raise AssertionError("expected a close frame (%s), got %r" % (code, f))
        if f.close_code != code:
            raise AssertionError("expected close code %s, got %s (reason %r)"
                                 % (code, f.close_code, f.close_reason))
        if len(f.payload) == 1:
            raise ProtocolViolation("close frame with a 1-byte payload")
        try:
            f.close_reason.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("close reason is not UTF-8: %r" % f.close_reason)
        self.expect_eof(timeout)
        return f.close_reason

    def expect_eof(self, timeout=5.0):
        """The server must close the TCP connection (FIN or RST) within `timeout`
        and send nothing more."""
        deadline = time.monotonic() + scaled(timeout)
        before = len(self.buf)
        try:
            while self._fill(deadline):
                pass
        except (socket.timeout, TimeoutError):
            raise AssertionError("server did not close the TCP connection within %.1fs" % scaled(timeout))
        if len(self.buf) != before or self.buf:
            raise AssertionError("server sent %d more bytes after the close frame: %r"
                                 % (len(self.buf), bytes(self.buf[:64])))

    def close_handshake(self, code=1000, timeout=5.0):
        """Client-initiated close: send `code`, expect it echoed, then EOF."""
        self.send_close(code)
        return self.expect_close(code, timeout)


def split(data, fragments):
    """Cut `data` into fragments: None (one piece), an int size, or a list of sizes."""
    if fragments is None:
        return [data]
    if isinstance(fragments, int):
        if not data:
            return [data]
        return [data[i:i + fragments] for i in range(0, len(data), fragments)]
    parts, pos = [], 0
    for n in fragments:
        parts.append(data[pos:pos + n])
        pos += n
    parts.append(data[pos:])
    return parts


def handshake_request(addr, path="/echo", method="GET", version="HTTP/1.1", key=True,
                      ws_version="13", upgrade="websocket", connection="Upgrade", extra=()):
    """The bytes of an upgrade request with any part wrong or missing (None)."""
    lines = ["%s %s %s" % (method, path, version), "Host: %s:%d" % addr[:2]]
    if upgrade is not None:
        lines.append("Upgrade: " + upgrade)
    if connection is not None:
        lines.append("Connection: " + connection)
    if key is True:
        lines.append("Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode())
    elif key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if ws_version is not None:
        lines.append("Sec-WebSocket-Version: " + ws_version)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
