#!/usr/bin/python3
"""Fixed workloads for instruction-count A/Bs (bench/callgrind.sh runs them).

Every workload is deterministic in what the server reads per system call: each
batch goes out in one write and the client waits for every answer before the
next batch, so the server sees the same batches whatever the machine's load.

  cgload.py --port P --n M ws-fanout --subs N [--batch W] [--size 32] [--path /broadcast]
      N subscribers on PATH (examples/echo /broadcast: every message goes to
      every connection, sender included); one of them publishes M messages, W
      per write; the unit is one delivery (M * N).
  cgload.py --port P --n M ws-echo --conns C [--batch W] [--size 32] [--path /echo]
      C connections each send W messages per write and wait for the W echoes;
      M messages in all; the unit is one message.
  cgload.py --port P --n M http [--pipeline 16] [--path /plaintext]
      one keep-alive connection, PIPELINE requests per write; unit: a request.

Prints "units N" on success; exits 1 on any protocol error. With --server-pid,
also the server's CPU time over the measured part (every batch after the
first; connection set-up excluded), from /proc/PID/task/*/schedstat (ns):
"cpu_ns X units_measured N ns_per_unit Y" (bench/cpucost.sh).
"""
import argparse
import base64
import os
import selectors
import socket
import struct
import sys


class Meter:
    """Server CPU time (all threads, ns) between start() and stop()."""

    def __init__(self, pid, mark=None):
        self.pid = pid
        self.mark = mark
        self.t0 = None
        self.units0 = 0

    def cpu(self):
        total = 0
        for t in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
        return total

    def start(self, units):
        if self.pid and self.t0 is None:
            self.t0 = self.cpu()
            self.units0 = units
            if self.mark:  # tell a profiler that the measured part starts
                open(self.mark, "w").close()

    def report(self, units):
        if self.pid and self.t0 is not None:
            ns = self.cpu() - self.t0
            n = units - self.units0
            print(f"cpu_ns {ns} units_measured {n} ns_per_unit {ns / n if n else 0:.1f}")


def ws_connect(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            sys.exit("connection closed during the upgrade")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit("upgrade refused: " + head.split(b"\r\n")[0].decode())
    return s, rest


def frame(payload):
    # masked text frame, payload < 126 bytes; a zero mask keeps it cheap to build
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Reader:
    """Counts complete server frames (unmasked, short or 16-bit length)."""

    def __init__(self, sock, rest=b""):
        self.s = sock
        self.buf = rest
        self.frames = 0

    def feed(self):
        d = self.s.recv(1 << 20)
        if not d:
            sys.exit("server closed a connection")
        self.buf += d
        b = self.buf
        i = 0
        while len(b) - i >= 2:
            n = b[i + 1] & 0x7F
            h = 2
            if n == 126:
                if len(b) - i < 4:
                    break
                n = struct.unpack_from(">H", b, i + 2)[0]
                h = 4
            elif n == 127:
                sys.exit("unexpected 64-bit frame")
            if len(b) - i < h + n:
                break
            if b[i] & 0x0F == 0x8:
                sys.exit("server sent a close frame")
            i += h + n
            self.frames += 1
        self.buf = b[i:]


def wait_all(readers, target):
    sel = selectors.DefaultSelector()
    pending = 0
    for r in readers:
        if r.frames < target:
            r.s.setblocking(False)
            sel.register(r.s, selectors.EVENT_READ, r)
            pending += 1
    while pending:
        events = sel.select(60)
        if not events:
            sys.exit("no answer from the server for 60 s")
        for key, _ in events:
            r = key.data
            try:
                r.feed()
            except BlockingIOError:
                continue
            if r.frames >= target:
                sel.unregister(r.s)
                pending -= 1
    sel.close()
    for r in readers:
        r.s.setblocking(True)


def ws_fanout(a):
    readers = []
    for _ in range(a.subs):
        s, rest = ws_connect(a.port, a.path)
        readers.append(Reader(s, rest))
    pub = readers[0]
    body = b"x" * a.size
    sent = 0
    m = Meter(a.server_pid, a.mark)
    while sent < a.n:
        if sent:
            m.start(sent * len(readers))
        k = min(a.batch, a.n - sent)
        pub.s.sendall(frame(body) * k)
        sent += k
        wait_all(readers, sent)
    print(f"units {a.n * len(readers)}")
    m.report(a.n * len(readers))


def ws_echo(a):
    readers = []
    for _ in range(a.conns):
        s, rest = ws_connect(a.port, a.path)
        readers.append(Reader(s, rest))
    body = b"x" * a.size
    sent = 0
    per = 0
    m = Meter(a.server_pid, a.mark)
    while sent < a.n:
        if sent:
            m.start(sent)
        for r in readers:
            r.s.sendall(frame(body) * a.batch)
        sent += a.batch * len(readers)
        per += a.batch
        wait_all(readers, per)
    print(f"units {sent}")
    m.report(sent)


def http(a):
    s = socket.create_connection(("127.0.0.1", a.port))
    req = f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = 0
    buf = b""
    m = Meter(a.server_pid, a.mark)
    while done < a.n:
        if done:
            m.start(done)
        k = min(a.pipeline, a.n - done)
        s.sendall(req * k)
        got = 0
        while got < k:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                d = s.recv(1 << 20)
                if not d:
                    sys.exit("server closed the connection")
                buf += d
                continue
            head = buf[:i].decode("latin-1")
            if not head.startswith("HTTP/1.1 200"):
                sys.exit("unexpected answer: " + head.split("\r\n")[0])
            clen = 0
            for line in head.split("\r\n")[1:]:
                n, _, v = line.partition(":")
                if n.strip().lower() == "content-length":
                    clen = int(v)
            while len(buf) < i + 4 + clen:
                d = s.recv(1 << 20)
                if not d:
                    sys.exit("server closed the connection")
                buf += d
            buf = buf[i + 4 + clen:]
            got += 1
        done += k
    print(f"units {done}")
    m.report(done)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, default=1600, help="messages published / sent, or requests")
    p.add_argument("--server-pid", type=int, default=0, help="report this process's CPU time")
    p.add_argument("--mark", help="create this file when the measured part starts")
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("ws-fanout")
    f.add_argument("--subs", type=int, default=100)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--size", type=int, default=32)
    f.add_argument("--path", default="/broadcast")
    e = sub.add_parser("ws-echo")
    e.add_argument("--conns", type=int, default=10)
    e.add_argument("--batch", type=int, default=16)
    e.add_argument("--size", type=int, default=32)
    e.add_argument("--path", default="/echo")
    h = sub.add_parser("http")
    h.add_argument("--pipeline", type=int, default=16)
    h.add_argument("--path", default="/plaintext")
    a = p.parse_args()
    {"ws-fanout": ws_fanout, "ws-echo": ws_echo, "http": http}[a.mode](a)


if __name__ == "__main__":
    main()
