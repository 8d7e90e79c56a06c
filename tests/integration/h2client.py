"""HTTP/2 clients for the integration tests (python3-h2, over raw sockets).

* H2Client: one HTTP/2 connection (h2c with prior knowledge, or h2 over TLS
  with `tls=` an ssl.SSLContext offering ALPN h2): requests, many streams at
  once, SSE, and every event python3-h2 reports (resets, GOAWAY).
* h2_request(): one request on a new connection, answered with the same
  pxtest.Response an HTTP/1.1 request gets (version "HTTP/2").
* H2SseReader: hubclient.SseReader's interface over an h2 stream.
* RawH2: frames built by hand (hyperframe + hpack), for the conformance and
  abuse tests, which send what a well-behaved client library never would.

Not a test module (no NN- prefix).
"""

import shutil
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame as hf

import pxtest
from pxtest import scaled

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# What went over HTTP/2 through h2_request and H2SseReader (39-http2-rerun checks
# that the re-run really used HTTP/2).
STATS = {"requests": 0, "sse": 0}


def need(cmd):
    """The path of command `cmd` (a Debian package of deps/debian.txt), or fail."""
    path = shutil.which(cmd)
    if not path:
        raise AssertionError("%s is missing (deps/debian.txt)" % cmd)
    return path


def h2_connect(addr, timeout, tls=None, sni="localhost"):
    """A socket for HTTP/2: plain (h2c), or TLS from the ssl.SSLContext `tls`,
    which must have negotiated h2 by ALPN."""
    sock = pxtest.connect(addr, scaled(timeout))
    if tls is None:
        return sock
    try:
        sock = tls.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise
    if sock.selected_alpn_protocol() != "h2":
        sock.close()
        raise AssertionError("ALPN chose %r, not h2" % sock.selected_alpn_protocol())
    return sock


class H2Closed(Exception):
    """The server closed the connection (or sent GOAWAY) before the answer."""


class H2Client:
    """One h2c connection. `events` collects every python3-h2 event received."""

    def __init__(self, addr, timeout=5.0, settings=None, window=None, tls=None):
        self.timeout = timeout
        self.scheme = b"http" if tls is None else b"https"
        self.sock = h2_connect(addr, timeout, tls)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window:
            self.conn.increment_flow_control_window(window)
        self.sock.sendall(self.conn.data_to_send())
        self.events = []
        self.streams = {}  # id -> {"headers", "data", "ended", "reset"}
        self.goaway = None  # ConnectionTerminated event
        self.closed = False
        self.auto_ack = True  # give the window back as data arrives

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _flush(self):
        out = self.conn.data_to_send()
        if out and not self.closed:
            try:
                self.sock.sendall(out)
            except OSError:
                self.closed = True

    def _stream(self, sid):
        return self.streams.setdefault(
            sid, {"headers": None, "data": bytearray(), "ended": False, "reset": None,
                  "trailers": None})

    def pump(self, deadline):
        """Read once (until `deadline`) and process the events. False on EOF."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("h2: timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            if self.goaway is None:
                raise
            # python3-h2 refuses frames after a GOAWAY; RFC 9113 6.8 lets the
            # server finish (or reset) the streams it had accepted.
            self.closed = True
            return False
        for ev in events:
            self.events.append(ev)
            if isinstance(ev, h2.events.ResponseReceived):
                self._stream(ev.stream_id)["headers"] = ev.headers
            elif isinstance(ev, h2.events.TrailersReceived):
                self._stream(ev.stream_id)["trailers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                self._stream(ev.stream_id)["data"] += ev.data
                if self.auto_ack and ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self._stream(ev.stream_id)["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                self._stream(ev.stream_id)["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        self._flush()
        return True

    def wait(self, pred, timeout=None, what="the condition"):
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        while not pred():
            if self.closed:
                raise H2Closed("connection closed waiting for %s (GOAWAY: %r)" % (what, self.goaway))
            self.pump(deadline)

    def start(self, method, path, headers=(), body=None, authority="localhost", end_stream=None,
              extra_pseudo=()):
        """Open a stream; the body (if any) is sent as the windows allow."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(b":method", _b(method)), (b":path", _b(path)), (b":scheme", self.scheme),
                (b":authority", _b(authority))] + [(_b(k), _b(v)) for k, v in extra_pseudo]
        hdrs += [(_b(k).lower(), _b(v)) for k, v in (headers.items() if isinstance(headers, dict)
                                                       else headers)]
        if end_stream is None:
            end_stream = body is None
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self._stream(sid)
        self._flush()
        if body is not None:
            self.send_body(sid, _b(body), end_stream=True)
        return sid

    def send_body(self, sid, body, end_stream=True, timeout=None):
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        pos = 0
        while pos < len(body) or (end_stream and pos == 0 and not body):
            if not body:
                self.conn.send_data(sid, b"", end_stream=True)
                self._flush()
                return
            st = self.streams.get(sid)
            if st and (st["reset"] is not None or st["ended"]):
                return  # answered early (413) or reset: stop sending
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pump(deadline)
                continue
            n = min(room, len(body) - pos)
            last = pos + n == len(body)
            self.conn.send_data(sid, body[pos:pos + n], end_stream=end_stream and last)
            pos += n
            self._flush()

    def response(self, sid, timeout=None, method="GET"):
        st = self._stream(sid)
        self.wait(lambda: st["ended"] or st["reset"] is not None, timeout, "stream %d" % sid)
        if st["reset"] is not None and st["headers"] is None:
            raise H2Closed("stream %d reset with %r" % (sid, st["reset"]))
        return _response(st)

    def request(self, method="GET", path="/", headers=(), body=None, timeout=None, **kw):
        sid = self.start(method, path, headers, body, **kw)
        return self.response(sid, timeout, method)

    def ping(self, data=b"12345678"):
        self.conn.ping(data)
        self._flush()


def _b(v):
    return v if isinstance(v, bytes) else str(v).encode()


def _response(st):
    headers = [(k.decode(), v.decode("latin-1")) for k, v in st["headers"] or []]
    status = 0
    out = []
    for k, v in headers:
        if k == ":status":
            status = int(v)
        else:
            out.append((k, v))
    return pxtest.Response("HTTP/2", status, "", out, bytes(st["data"]), b"")


def h2_request(addr, method, path, headers=None, body=None, timeout=5.0, tls=None):
    """One request on a new h2c (or h2 over `tls`) connection; returns a pxtest.Response."""
    if isinstance(addr, str):
        raise ValueError("h2_request: TCP addresses only")
    STATS["requests"] += 1
    with H2Client(addr, timeout, tls=tls) as c:
        hdrs = [(k, v) for k, v in (headers or {}).items() if k.lower() not in
                ("connection", "keep-alive", "transfer-encoding", "upgrade", "host")]
        return c.request(method, path, hdrs, body, timeout)


class H2SseReader:
    """hubclient.SseReader over an HTTP/2 stream (same attributes and methods)."""

    def __init__(self, addr, path, headers=(), timeout=10.0, tls=None):
        STATS["sse"] += 1
        self.client = H2Client(addr, timeout, tls=tls)
        hl = [("accept", "text/event-stream")]
        for line in headers:
            k, _, v = line.partition(":")
            hl.append((k.strip().lower(), v.strip()))
        self.sid = self.client.start("GET", path, hl)
        self.st = self.client.streams[self.sid]
        self.client.wait(lambda: self.st["headers"] is not None or self.st["reset"] is not None,
                         timeout, "the SSE head")
        r = _response(self.st)
        self.status = r.status
        self.headers = dict(r.headers)
        self.chunked = False
        self.comments = []
        self.retry = None
        self.text = ""
        self.pos = 0
        self.eof = False
        self.taken = 0

    def close(self):
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _take(self):
        data = bytes(self.st["data"][self.taken:])
        self.taken += len(data)
        self.text += data.decode("utf-8")
        if self.st["ended"] or self.st["reset"] is not None or self.client.closed:
            self.eof = True

    def event(self, timeout=10.0):
        deadline = time.monotonic() + scaled(timeout)
        while True:
            self._take()
            i = self.text.find("\n\n", self.pos)
            if i >= 0:
                block = self.text[self.pos:i]
                self.pos = i + 2
                ev = {"data_lines": []}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                        continue
                    k, _, v = line.partition(":")
                    if v.startswith(" "):
                        v = v[1:]
                    if k == "data":
                        ev["data_lines"].append(v)
                    elif k == "retry":
                        self.retry = v
                    else:
                        ev[k] = v
                if ev["data_lines"] or "id" in ev:
                    ev["data"] = "\n".join(ev["data_lines"])
                    return ev
                continue
            if self.eof:
                return None
            if not self.client.pump(deadline):
                self.eof = True

    def events(self, n, timeout=10.0):
        out = []
        for _ in range(n):
            e = self.event(timeout)
            if e is None:
                raise AssertionError("SSE stream ended after %d of %d events" % (len(out), n))
            out.append(e)
        return out


# ---- raw frames --------------------------------------------------------------------------

# RFC 9113 7: error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 0x8, 0x9, 0xA, 0xB
INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = 0xC, 0xD


class RawH2:
    """Frames by hand: send anything, read frames back, expect exact errors."""

    def __init__(self, addr, timeout=5.0, preface=True, settings=None, tls=None):
        self.timeout = timeout
        self.sock = h2_connect(addr, timeout, tls)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        self.frames = []  # every frame received, in order
        self.closed = False
        self.server_settings = {}
        if preface:
            self.sock.sendall(PREFACE)
            self.send(hf.SettingsFrame(0, settings=settings or {}))
            self.handshake()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *frames):
        self.send_raw(b"".join(f.serialize() for f in frames))

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def read_frame(self, timeout=None):
        """The next frame, or None once the server has closed."""
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        while True:
            if len(self.buf) >= 9:
                f, length = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    self.frames.append(f)
                    if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                        self.server_settings.update(f.settings)
                    return f
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("h2 raw: no frame in time")
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                b = b""
            if not b:
                self.closed = True
                continue
            self.buf += b

    def handshake(self):
        """The server's SETTINGS (acknowledged) and its ACK of ours."""
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            f = self.read_frame()
            if f is None:
                raise H2Closed("closed during the handshake")
            if isinstance(f, hf.SettingsFrame):
                if "ACK" in f.flags:
                    got_ack = True
                else:
                    got_settings = True
                    self.send(hf.SettingsFrame(0, flags=["ACK"]))

    def headers(self, sid, fields, end_stream=True, end_headers=True, priority=None):
        block = self.enc.encode([(_b(k), _b(v)) for k, v in fields])
        f = hf.HeadersFrame(sid, block)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    @staticmethod
    def req(path="/healthz", method="GET", extra=()):
        return [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", "localhost")] + list(extra)

    def expect(self, pred, what, timeout=None):
        """Read frames until pred(frame) is true; that frame, or fail."""
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s in time; frames: %s" % (what, self._summary()))
            f = self.read_frame(left)
            if f is None:
                raise AssertionError("closed before %s; frames: %s" % (what, self._summary()))
            if pred(f):
                return f

    def expect_goaway(self, code, timeout=None):
        f = self.expect(lambda f: isinstance(f, hf.GoAwayFrame), "GOAWAY", timeout)
        if f.error_code != code:
            raise AssertionError("GOAWAY error %#x, expected %#x (%s)" %
                                 (f.error_code, code, f.additional_data))
        return f

    def expect_rst(self, sid, code, timeout=None):
        f = self.expect(lambda f: (isinstance(f, hf.RstStreamFrame) and f.stream_id == sid) or
                        isinstance(f, hf.GoAwayFrame), "RST_STREAM on %d" % sid, timeout)
        if isinstance(f, hf.GoAwayFrame):
            raise AssertionError("GOAWAY %#x instead of RST_STREAM %#x on stream %d" %
                                 (f.error_code, code, sid))
        if f.error_code != code:
            raise AssertionError("RST_STREAM %d error %#x, expected %#x" % (sid, f.error_code, code))
        return f

    def expect_response(self, sid, timeout=None):
        """(status, {headers}, body) of stream sid."""
        status, hdrs, body = None, {}, b""
        while True:
            f = self.expect(lambda f: f.stream_id in (sid, 0) and
                            isinstance(f, (hf.HeadersFrame, hf.DataFrame, hf.RstStreamFrame,
                                           hf.GoAwayFrame, hf.ContinuationFrame)),
                            "the response on %d" % sid, timeout)
            if isinstance(f, (hf.RstStreamFrame, hf.GoAwayFrame)):
                raise AssertionError("%s (error %#x) instead of a response on %d" % (type(f).__name__, f.error_code, sid))
            if isinstance(f, (hf.HeadersFrame, hf.ContinuationFrame)):
                for k, v in self.dec.decode(f.data, raw=True):
                    if k == b":status":
                        status = int(v)
                    else:
                        hdrs[k.decode()] = v.decode("latin-1")
            elif isinstance(f, hf.DataFrame):
                body += f.data
                if f.flow_controlled_length:
                    self.send(hf.WindowUpdateFrame(0, window_increment=f.flow_controlled_length),
                              hf.WindowUpdateFrame(sid, window_increment=f.flow_controlled_length))
            if "END_STREAM" in f.flags:
                return status, hdrs, body

    def expect_closed(self, timeout=None):
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the connection is still open; frames: %s" % self._summary())
            if self.read_frame(left) is None:
                return

    def _summary(self):
        out = []
        for f in self.frames[-12:]:
            s = "%s(%d" % (type(f).__name__, f.stream_id)
            if isinstance(f, (hf.GoAwayFrame, hf.RstStreamFrame)):
                s += ", err=%#x" % f.error_code
            out.append(s + ")")
        return ", ".join(out)


# ---- WebSocket over HTTP/2 (RFC 8441) ------------------------------------------------------

import wsraw  # noqa: E402  (after the HTTP/2 helpers it builds on)


class H2WsClient(wsraw.WsClient):
    """wsraw.WsClient on an HTTP/2 stream opened by an extended CONNECT
    (:protocol websocket): the same frames and checks; "EOF" is the end of the
    stream (END_STREAM or RST_STREAM), and the connection stays for other streams.
    `client` shares an existing H2Client (several WebSockets on one connection)."""

    def __init__(self, addr, path="/echo", extensions=None, headers=(), timeout=10.0,
                 client=None, handshake=True, tls=None):
        self.h2 = client or H2Client(addr, timeout, tls=tls)
        self.own = client is None
        # wsraw.WsClient's state, without its socket (kept in step with its __init__).
        self.addr, self.path, self.timeout, self.sock = addr, path, scaled(timeout), None
        self.buf, self.eof, self.frames = bytearray(), False, []
        self.deflate, self.response_headers, self.extension = False, {}, None
        self._inflater = self._compressor = None
        self.client_context_takeover = True
        self.rnd = __import__("random").Random(0x5EED)
        if handshake:
            self.handshake(extensions, headers)

    def close(self):
        if self.own and self.h2:
            self.h2.close()
        self.h2 = None

    def handshake(self, extensions=None, headers=()):
        hl = [("sec-websocket-version", "13")]
        if extensions is not None:
            hl.append(("sec-websocket-extensions", extensions))
        for line in headers:
            k, _, v = line.partition(":") if isinstance(line, str) else line
            hl.append((k.strip().lower(), v.strip()))
        self.sid = self.h2.start("CONNECT", self.path, hl, end_stream=False,
                                 extra_pseudo=[(":protocol", "websocket")])
        self.st = self.h2.streams[self.sid]
        self.taken = 0
        self.h2.wait(lambda: self.st["headers"] is not None or self.st["reset"] is not None,
                     self.timeout, "the extended CONNECT's answer")
        if self.st["headers"] is None:
            raise wsraw.HandshakeFailed(0, {}, b"reset %r" % self.st["reset"])
        r = _response(self.st)
        self.response_headers = dict(r.headers)
        if r.status != 200:
            self.h2.wait(lambda: self.st["ended"] or self.st["reset"] is not None, self.timeout)
            raise wsraw.HandshakeFailed(r.status, self.response_headers, bytes(self.st["data"]))
        ext = self.response_headers.get("sec-websocket-extensions")
        self.extension = ext
        if ext is not None:  # as wsraw.WsClient.handshake reads it
            params = [p.strip() for p in ext.split(";")]
            if params[0] != "permessage-deflate" or "," in ext:
                raise wsraw.ProtocolViolation("unexpected extension response %r" % ext)
            self.deflate = True
            self.ext_params = {}
            for p in params[1:]:
                k, _, v = p.partition("=")
                self.ext_params[k.strip()] = v.strip().strip('"') or None
            self.server_window_bits = int(self.ext_params.get("server_max_window_bits") or 15)
            self.client_context_takeover = "client_no_context_takeover" not in self.ext_params
            cbits = self.ext_params.get("client_max_window_bits")
            self.client_window_bits = int(cbits) if cbits else 15
            self._inflater = __import__("zlib").decompressobj(-15)
        return self

    def send_raw(self, data, chop=None, delay=0.0):
        if chop is None:
            chop = len(data) or 1
        mv = memoryview(data)
        for i in range(0, len(mv), chop):
            self.h2.send_body(self.sid, bytes(mv[i:i + chop]), end_stream=False)

    def end_stream(self):
        self.h2.conn.end_stream(self.sid)
        self.h2._flush()

    def _fill(self, deadline=None):
        while True:
            if self.taken < len(self.st["data"]):
                chunk = bytes(self.st["data"][self.taken:])
                self.taken += len(chunk)
                self.buf += chunk
                return True
            if self.eof or self.st["ended"] or self.st["reset"] is not None or self.h2.closed:
                self.eof = True
                return False
            d = deadline if deadline is not None else time.monotonic() + self.timeout
            if not self.h2.pump(d):
                self.eof = True
                return False
