#!/usr/bin/python3
"""soak: mixed load against the real plexus binary for a long time, then check
that the server's memory and file descriptors come back to where they were.

    /usr/bin/python3 bench/soak.py [PLEXUS_BINARY]      (make soak: 10 minutes)
    SOAK_SECONDS=60 /usr/bin/python3 bench/soak.py      a short run

What runs at once, in one asyncio process (127.0.0.1 only):
  - WebSocket subscribers (python3-websockets) on /ws: subscribe to a few
    channels (some with `since`, i.e. recovery), read, publish now and then,
    disconnect after a few seconds and come back;
  - HTTP publishers on keep-alive raw sockets: the request head in one send,
    the body in a later send (so bodies arrive in a later read than heads),
    some bodies in several pieces; reconnecting every so often;
  - SSE readers that resume with Last-Event-ID a little behind the channel's
    offset, read for a while and go;
  - history readers (GET /api/channels/{ch}/messages?since=&limit=);
  - connect/disconnect churn: connections closed at once, half a request
    head then gone, a WebSocket upgrade dropped right after the 101, one
    /healthz per connection.

Method: a warm-up phase (SOAK_WARMUP, default 10 % of the run, at least 20 s)
with the same load brings caches, SQLite's page cache and malloc arenas to
their working size; once the load stops and the server is idle again, its RSS
and open fds are the baseline. Then the soak proper (SOAK_SECONDS), the load
stops, and within SOAK_SETTLE seconds (default 30) RSS must be at most the
baseline + SOAK_TOLERANCE (10 %) and the fd count within ±10 % of it (at
least ±1). Also: the server must still answer /healthz, fewer than 1 % of the
operations may fail, and SIGTERM must stop it with exit code 0. Exit status 0
when all of that holds, 1 otherwise. A progress line every 10 s.

Knobs (environment): SOAK_SECONDS [600] SOAK_WARMUP [max(20, 10 %)]
SOAK_SETTLE [30] SOAK_TOLERANCE [0.10] SOAK_WORKERS [2] SOAK_WS [40]
SOAK_PUBLISHERS [4] SOAK_SSE [6] SOAK_HISTORY [2] SOAK_CHURN [3]
SOAK_CHANNELS [16] SOAK_SPLIT [1] (0: publish head and body in one send, to
tell a leak tied to split bodies from others) SOAK_OUT [build/soak] (server log
and data directory)
PLEXUS [build/release/plexus] SOAK_ARGS [] extra plexus flags.

Not a test (`make test` does not run it); docs/benchmarks.md records runs.
"""

import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_num(name, default, cast=float):
    v = os.environ.get(name)
    return cast(v) if v not in (None, "") else default


SECONDS = env_num("SOAK_SECONDS", 600.0)
WARMUP = env_num("SOAK_WARMUP", max(20.0, SECONDS * 0.1))
SETTLE = env_num("SOAK_SETTLE", 30.0)
TOLERANCE = env_num("SOAK_TOLERANCE", 0.10)
WORKERS = env_num("SOAK_WORKERS", 2, int)
N_WS = env_num("SOAK_WS", 40, int)
N_PUB = env_num("SOAK_PUBLISHERS", 4, int)
N_SSE = env_num("SOAK_SSE", 6, int)
N_HIST = env_num("SOAK_HISTORY", 2, int)
N_CHURN = env_num("SOAK_CHURN", 3, int)
N_CHANNELS = env_num("SOAK_CHANNELS", 16, int)
SPLIT = env_num("SOAK_SPLIT", 1, int)
OUT = os.environ.get("SOAK_OUT") or os.path.join(ROOT, "build", "soak")
CHANNELS = ["soak-%d" % i for i in range(N_CHANNELS)]
IO_TIMEOUT = 15.0

stats = collections.Counter()
errors = collections.Counter()
latest = {}  # channel -> highest offset seen in a publish reply


def fail_op(kind, why):
    errors[kind] += 1
    if errors[kind] <= 3:
        print("  error (%s): %s" % (kind, why), flush=True)


# ---- the server ----------------------------------------------------------------------------


class Plexus:
    def __init__(self, binary):
        shutil.rmtree(OUT, ignore_errors=True)
        os.makedirs(OUT)
        self.log_path = os.path.join(OUT, "plexus.log")
        self.log = open(self.log_path, "wb")
        args = [binary, "--listen", "127.0.0.1:0", "--workers", str(WORKERS),
                "--data-dir", os.path.join(OUT, "data"), "--allow-anonymous",
                "--publish-rate", "0"] + os.environ.get("SOAK_ARGS", "").split()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 15
        while True:
            with open(self.log_path, "rb") as f:
                m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: plexus did not start; log: %s" % self.log_path)
            time.sleep(0.05)

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


# ---- raw HTTP --------------------------------------------------------------------------------


async def read_response(reader):
    """One HTTP/1.1 response with Content-Length or chunked: (status, headers, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        body = await asyncio.wait_for(reader.readexactly(int(hdrs["content-length"])), IO_TIMEOUT)
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT)).split(b";")[0], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), IO_TIMEOUT)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, hdrs, body


async def open_conn(port):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)


async def connect_or_back_off(port, kind):
    """(reader, writer), or None after counting a `kind`-connect error and
    waiting half a second (the caller's loop tries again)."""
    try:
        return await open_conn(port)
    except Exception as e:
        fail_op(kind + "-connect", e)
        await asyncio.sleep(0.5)
        return None


def close_writer(w):
    try:
        w.close()
    except Exception:
        pass


# ---- load ------------------------------------------------------------------------------------


def payload(rnd, n):
    """A JSON body of about n bytes."""
    return json.dumps({"t": time.time(), "pad": "x" * max(0, n - 40)}).encode()


async def http_publisher(port, stop, rnd):
    while not stop.is_set():
        conn = await connect_or_back_off(port, "publish")
        if conn is None:
            continue
        r, w = conn
        try:
            for _ in range(rnd.randint(10, 80)):
                if stop.is_set():
                    break
                ch = rnd.choice(CHANNELS)
                body = payload(rnd, rnd.choice((60, 300, 2000, 8000, 16000)))
                head = ("POST /api/channels/%s/messages HTTP/1.1\r\nHost: soak\r\n"
                        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                        % (ch, len(body))).encode()
                if not SPLIT:
                    body, head = head + body, b""
                w.write(head)
                await w.drain()
                if SPLIT:
                    await asyncio.sleep(rnd.uniform(0.002, 0.02))  # the body comes later
                pieces = rnd.choice((1, 1, 2, 3)) if SPLIT else 1
                step = len(body) // pieces + 1
                for i in range(0, len(body), step):
                    w.write(body[i:i + step])
                    await w.drain()
                    if i + step < len(body):
                        await asyncio.sleep(0.003)
                status, _, resp = await read_response(r)
                if status == 201:
                    stats["publish"] += 1
                    off = json.loads(resp).get("offset", 0)
                    latest[ch] = max(latest.get(ch, 0), off)
                else:
                    fail_op("publish", "%d %r" % (status, resp[:120]))
                await asyncio.sleep(rnd.uniform(0, 0.02))
        except Exception as e:
            if not stop.is_set():
                fail_op("publish", repr(e))
        finally:
            close_writer(w)


async def ws_subscriber(port, stop, rnd):
    url = "ws://127.0.0.1:%d/ws" % port
    while not stop.is_set():
        try:
            async with websockets.connect(url, max_size=1 << 22, ping_interval=None,
                                          open_timeout=IO_TIMEOUT, close_timeout=5) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
                if welcome.get("op") != "welcome":
                    fail_op("ws", "no welcome: %r" % welcome)
                    continue
                n = 0
                for i, ch in enumerate(rnd.sample(CHANNELS, 3)):
                    req = {"op": "subscribe", "id": i + 1, "channel": ch}
                    if rnd.random() < 0.3 and latest.get(ch):
                        req["since"] = {"offset": max(0, latest[ch] - rnd.randint(0, 30))}
                    await ws.send(json.dumps(req))
                stats["ws-connect"] += 1
                until = time.monotonic() + rnd.uniform(2, 8)
                while time.monotonic() < until and not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    msg = json.loads(raw)
                    op = msg.get("op")
                    if op == "message":
                        n += 1
                    elif op == "error":
                        fail_op("ws", raw[:200])
                    if rnd.random() < 0.02:
                        await ws.send(json.dumps({"op": "publish", "channel": rnd.choice(CHANNELS),
                                                  "data": {"from": "ws", "n": n}}))
                        stats["ws-publish"] += 1
                stats["ws-messages"] += n
        except Exception as e:
            if not stop.is_set():
                fail_op("ws", repr(e))
                await asyncio.sleep(0.2)


async def sse_resumer(port, stop, rnd):
    while not stop.is_set():
        ch = rnd.choice(CHANNELS)
        last = max(0, latest.get(ch, 0) - rnd.randint(0, 40))
        conn = await connect_or_back_off(port, "sse")
        if conn is None:
            continue
        r, w = conn
        try:
            w.write(("GET /api/channels/%s/events HTTP/1.1\r\nHost: soak\r\n"
                     "Accept: text/event-stream\r\nLast-Event-ID: %d\r\n\r\n" % (ch, last)).encode())
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
            if b" 200 " not in head.split(b"\r\n")[0]:
                fail_op("sse", head[:120])
            else:
                stats["sse"] += 1
                until = time.monotonic() + rnd.uniform(1, 4)
                while time.monotonic() < until and not stop.is_set():
                    try:
                        data = await asyncio.wait_for(r.read(65536), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if not data:
                        fail_op("sse", "stream closed by the server")
                        break
                    stats["sse-events"] += data.count(b"\nid: ") + data.startswith(b"id: ")
        except Exception as e:
            if not stop.is_set():
                fail_op("sse", repr(e))
        finally:
            close_writer(w)
        await asyncio.sleep(rnd.uniform(0, 0.3))


async def history_reader(port, stop, rnd):
    while not stop.is_set():
        conn = await connect_or_back_off(port, "history")
        if conn is None:
            continue
        r, w = conn
        try:
            for _ in range(rnd.randint(5, 50)):
                if stop.is_set():
                    break
                ch = rnd.choice(CHANNELS)
                since = max(0, latest.get(ch, 0) - rnd.randint(0, 200))
                w.write(("GET /api/channels/%s/messages?since=%d&limit=%d HTTP/1.1\r\n"
                         "Host: soak\r\n\r\n" % (ch, since, rnd.randint(1, 100))).encode())
                await w.drain()
                status, _, body = await read_response(r)
                if status == 200:
                    stats["history"] += 1
                    stats["history-messages"] += len(json.loads(body).get("messages", []))
                else:
                    fail_op("history", "%d %r" % (status, body[:120]))
                await asyncio.sleep(rnd.uniform(0, 0.05))
        except Exception as e:
            if not stop.is_set():
                fail_op("history", repr(e))
        finally:
            close_writer(w)


async def churn(port, stop, rnd):
    while not stop.is_set():
        kind = rnd.choice(("close", "half-head", "healthz", "upgrade-drop"))
        try:
            r, w = await open_conn(port)
            if kind == "half-head":
                w.write(b"GET /healthz HTTP/1.1\r\nHost: so")
                await w.drain()
            elif kind == "healthz":
                w.write(b"GET /healthz HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                await w.drain()
                status, _, _ = await read_response(r)
                if status != 200:
                    fail_op("churn", "healthz %d" % status)
            elif kind == "upgrade-drop":
                w.write(b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n")
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
                if b" 101 " not in head.split(b"\r\n")[0]:
                    fail_op("churn", head[:120])
            stats["churn"] += 1
            close_writer(w)
        except Exception as e:
            if not stop.is_set():
                fail_op("churn", repr(e))
        await asyncio.sleep(rnd.uniform(0, 0.05))


async def run_load(srv, seconds, label):
    stop = asyncio.Event()
    rnd = random.Random(label)
    tasks = []
    for fn, n in ((ws_subscriber, N_WS), (http_publisher, N_PUB), (sse_resumer, N_SSE),
                  (history_reader, N_HIST), (churn, N_CHURN)):
        for _ in range(n):
            tasks.append(asyncio.ensure_future(fn(srv.port, stop, random.Random(rnd.random()))))
    start = time.monotonic()
    next_report = start + 10
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.5)
        if not srv.alive():
            stop.set()
            break
        if time.monotonic() >= next_report:
            next_report += 10
            print("  %s %4.0fs  rss %6.1f MB  fds %4d  %s  errors %d" % (
                label, time.monotonic() - start, srv.rss_kb() / 1024, srv.fds(),
                " ".join("%s %d" % kv for kv in sorted(stats.items())), sum(errors.values())),
                flush=True)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=IO_TIMEOUT + 5)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def settle(srv, seconds, ok=None):
    """Wait until the server is idle: fds and RSS stable for 3 s (or `ok`
    holds). Returns (rss_kb, fds)."""
    deadline = time.monotonic() + seconds
    history = []
    while True:
        time.sleep(1)
        if not srv.alive():
            return None, None
        cur = (srv.rss_kb(), srv.fds())
        history.append(cur)
        if ok and ok(*cur):
            return cur
        if not ok and len(history) >= 4 and len(set(f for _, f in history[-4:])) == 1 and \
                max(r for r, _ in history[-4:]) - min(r for r, _ in history[-4:]) < 256:
            return cur
        if time.monotonic() > deadline:
            return cur


def main():
    binary = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("PLEXUS") or \
        os.path.join(ROOT, "build", "release", "plexus")
    if os.path.isdir(binary):
        binary = os.path.join(binary, "plexus")
    srv = Plexus(binary)
    print("soak: %s (pid %d, port %d, %d workers): warm-up %.0f s, soak %.0f s; %d ws, %d "
          "publishers, %d sse, %d history, %d churn on %d channels"
          % (binary, srv.pid, srv.port, WORKERS, WARMUP, SECONDS, N_WS, N_PUB, N_SSE, N_HIST,
             N_CHURN, N_CHANNELS), flush=True)
    problems = []
    try:
        print("soak: start  rss %.1f MB  fds %d" % (srv.rss_kb() / 1024, srv.fds()), flush=True)
        asyncio.run(run_load(srv, WARMUP, "warm-up"))
        base_rss, base_fds = settle(srv, SETTLE)
        if base_rss is None:
            raise SystemExit("soak: plexus died during the warm-up; log: %s" % srv.log_path)
        print("soak: baseline  rss %.1f MB  fds %d" % (base_rss / 1024, base_fds), flush=True)
        stats.clear()
        errors.clear()
        t0 = time.monotonic()
        asyncio.run(run_load(srv, SECONDS, "soak"))
        elapsed = time.monotonic() - t0
        ops = sum(stats[k] for k in ("publish", "ws-connect", "ws-publish", "sse", "history",
                                     "churn"))
        max_rss = base_rss * (1 + TOLERANCE)
        fd_slack = max(1, int(base_fds * TOLERANCE))

        def back(rss, fds):
            return rss <= max_rss and abs(fds - base_fds) <= fd_slack
        rss, fds = settle(srv, SETTLE, back)
        if rss is None:
            problems.append("plexus died during the soak (log: %s)" % srv.log_path)
        else:
            print("soak: after %.0f s of load and the settle: rss %.1f MB (baseline %.1f, limit "
                  "%.1f), fds %d (baseline %d ± %d)" % (elapsed, rss / 1024, base_rss / 1024,
                                                        max_rss / 1024, fds, base_fds, fd_slack))
            if rss > max_rss:
                problems.append("RSS %.1f MB is over the baseline %.1f MB + %d %%"
                                % (rss / 1024, base_rss / 1024, TOLERANCE * 100))
            if abs(fds - base_fds) > fd_slack:
                problems.append("%d open fds, baseline %d" % (fds, base_fds))
            try:
                async def healthz():
                    r, w = await open_conn(srv.port)
                    w.write(b"GET /healthz HTTP/1.1\r\nHost: soak\r\n\r\n")
                    status, _, _ = await read_response(r)
                    close_writer(w)
                    return status
                if asyncio.run(healthz()) != 200:
                    problems.append("/healthz does not answer 200 after the soak")
            except Exception as e:
                problems.append("/healthz failed after the soak: %r" % e)
        print("soak: operations %s" % " ".join("%s %d" % kv for kv in sorted(stats.items())))
        nerr = sum(errors.values())
        print("soak: errors %d%s" % (nerr, (" (" + " ".join("%s %d" % kv for kv in
                                                            sorted(errors.items())) + ")")
                                     if nerr else ""))
        if ops == 0:
            problems.append("no operation completed")
        elif nerr > 0.01 * ops:
            problems.append("%d errors for %d operations (over 1 %%)" % (nerr, ops))
    finally:
        rc = srv.stop()
    if rc != 0:
        problems.append("plexus exited with %d on SIGTERM (log: %s)" % (rc, srv.log_path))
    if problems:
        print("soak: FAILED: " + "; ".join(problems))
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
