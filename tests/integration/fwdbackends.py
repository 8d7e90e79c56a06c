#!/usr/bin/python3
"""Backends for the pass-through tests (15-sniff.py, 16-forward-real.py): small
threaded TCP or unix servers on 127.0.0.1 with a handler per connection, and
a PROXY protocol v1/v2 reader. Not a test (no number)."""

import socket
import struct
import threading
import time

import pxtest


class Backend:
    """Accepts connections on 127.0.0.1:0 (or a unix path) and runs
    handler(conn, backend) for each in a thread. `events` collects what
    handlers report (backend.note(...)); close() stops accepting and closes
    every connection."""

    def __init__(self, handler, unix_path=None):
        self.handler = handler
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.target = "unix:" + unix_path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.target = "127.0.0.1:%d" % self.port
        self.sock.listen(64)
        self.accepted = 0
        self.events = []
        self.conns = []
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.accepted += 1
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c, self)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def note(self, ev):
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait_event(self, pred, timeout=5.0):
        deadline = time.monotonic() + pxtest.scaled(timeout)
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("backend event not seen; events: %r" % (self.events,))
                self.cond.wait(left)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.cond:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def recv_exact(c, n, timeout=5.0):
    c.settimeout(pxtest.scaled(timeout))
    buf = b""
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def recv_until(c, marker, timeout=5.0, limit=1 << 20):
    c.settimeout(pxtest.scaled(timeout))
    buf = b""
    while marker not in buf:
        d = c.recv(65536)
        if not d:
            raise AssertionError("EOF before %r; got %r" % (marker, buf[:200]))
        buf += d
        if len(buf) > limit:
            raise AssertionError("no %r in %d bytes" % (marker, len(buf)))
    return buf


def recv_all(c, timeout=5.0):
    """Everything until EOF."""
    c.settimeout(pxtest.scaled(timeout))
    parts = []
    while True:
        d = c.recv(1 << 16)
        if not d:
            return b"".join(parts)
        parts.append(d)


# ---- PROXY protocol, as a backend reads it ------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_proxy_header(c):
    """Read one PROXY header from c; returns (version, src, sport, dst, dport)
    with src/dst None for LOCAL/UNKNOWN."""
    first = recv_exact(c, 6)
    if first == b"PROXY ":
        line = first
        while not line.endswith(b"\r\n"):
            line += recv_exact(c, 1)
            if len(line) > 107:
                raise AssertionError("v1 line too long")
        parts = line[:-2].decode().split(" ")
        if parts[1] == "UNKNOWN":
            return (1, None, None, None, None)
        return (1, parts[2], int(parts[4]), parts[3], int(parts[5]))
    head = first + recv_exact(c, 10)
    if head[:12] != V2_SIG:
        raise AssertionError("no PROXY header: %r" % head)
    ver_cmd, fam, ln = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    body = recv_exact(c, ln) if ln else b""
    if ver_cmd == 0x20:
        return (2, None, None, None, None)
    if fam == 0x11:
        return (2, socket.inet_ntop(socket.AF_INET, body[0:4]), struct.unpack("!H", body[8:10])[0],
                socket.inet_ntop(socket.AF_INET, body[4:8]), struct.unpack("!H", body[10:12])[0])
    if fam == 0x21:
        return (2, socket.inet_ntop(socket.AF_INET6, body[0:16]),
                struct.unpack("!H", body[32:34])[0],
                socket.inet_ntop(socket.AF_INET6, body[16:32]), struct.unpack("!H", body[34:36])[0])
    raise AssertionError("unexpected family %#x" % fam)


def proxy_v1_line(src, sport, dst, dport):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def proxy_v2_header(src, sport, dst, dport):
    if ":" in src:
        fam, af = 0x21, socket.AF_INET6
    else:
        fam, af = 0x11, socket.AF_INET
    body = (socket.inet_pton(af, src) + socket.inet_pton(af, dst) + struct.pack("!HH", sport, dport))
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


# ---- handlers --------------------------------------------------------------------------


def banner_echo(banner):
    """Send `banner` at once, then echo every byte until EOF, then close."""
    def handler(c, b):
        c.sendall(banner)
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            c.sendall(d)
        b.note(("eof",))
        c.shutdown(socket.SHUT_WR)
    return handler


def echo(c, b):
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)


def proxy_echo(c, b):
    """Read the PROXY header, say what it named, then echo."""
    h = read_proxy_header(c)
    b.note(("proxy",) + h)
    c.sendall(("SEEN %r\n" % (h,)).encode())
    echo(c, b)
