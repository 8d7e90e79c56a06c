#!/usr/bin/python3
"""bench/cluster.py: plexus on several nodes (docs/scaling.md), what `make bench-cluster` runs.

Side by side in one run, every server started fresh for each measurement:

  fanout  one plexus node on SQLite, then two plexus nodes on one Redis (--store
          redis://, 1 worker each): bench/wsload fanout, SUBS subscribers (split
          over the two nodes), one publisher on the first node. Figure: deliveries per
          CPU-second of every server process (plexus nodes + redis-server).
          Target: cluster >= 0.8 x single node.
  http    durable HTTP publishes (wrk + bench/peers/hub-publish.lua, CONNS connections
          in all): one node on SQLite; two nodes on Redis; two nodes on PostgreSQL (its
          LISTEN/NOTIFY as broker), one wrk per node. Figure: publishes/s (201s) and per
          CPU-second of the servers (plexus + redis-server + every postgres process).
          The stored count must equal the 201s (the channel's last offset in the store).
          Targets: Redis >= 40 000/s, PostgreSQL >= 20 000/s.
Setups: single (SQLite), redis (2 nodes, Redis store + pub/sub), pg (2 nodes, PostgreSQL
store + NOTIFY); the PostgreSQL cluster is made by tests/integration/backends.py (initdb
in a temporary directory; as `nobody` when run as root).

Knobs (environment): DURATION [10] s, WARMUP [2] s, SUBS [1000], CONNS [64], ROUNDS [1],
SETUPS ["single redis"], PARTS ["fanout http"], OUT [build/bench-cluster],
FANOUT_SIZE [32], FANOUT_WINDOW [256] (messages in flight between the publisher and the
slowest subscriber: large enough that the servers, not the round trip, set the pace; with
16 both setups idle most of the time and the figure measures wake-ups, not capacity).

Everything listens on 127.0.0.1; processes started here are stopped by PID.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "release"))
PLEXUS = os.path.join(BUILD, "plexus")
WSLOAD = os.path.join(BUILD, "bench", "wsload")
LUA = os.path.join(ROOT, "bench", "peers", "hub-publish.lua")
DURATION = float(os.environ.get("DURATION", 10))
WARMUP = float(os.environ.get("WARMUP", 2))
SUBS = int(os.environ.get("SUBS", 1000))
CONNS = int(os.environ.get("CONNS", 64))
ROUNDS = int(os.environ.get("ROUNDS", 1))
SETUPS = os.environ.get("SETUPS", "single redis pg").split()
PARTS = os.environ.get("PARTS", "fanout http").split()
OUT = os.path.abspath(os.environ.get("OUT", os.path.join(ROOT, "build", "bench-cluster")))
FANOUT_SIZE = os.environ.get("FANOUT_SIZE", "32")
FANOUT_WINDOW = os.environ.get("FANOUT_WINDOW", "256")
CLK = os.sysconf("SC_CLK_TCK")

started = []


def log(*a):
    print("bench-cluster:", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return 0.0


def wait_port(port, proc, what):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited (%d)" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("%s did not listen on %d" % (what, port))


def spawn(args, logname, port, what):
    f = open(os.path.join(OUT, logname), "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    started.append(p)
    wait_port(port, p, what)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in started:
        started.remove(p)


def redis_start(tmp):
    port = free_port()
    p = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", tmp, "--protected-mode", "no"],
              "redis.log", port, "redis-server")
    return p, port


def plexus_start(tmp, name, store=None):
    port = free_port()
    args = [PLEXUS, "--listen", "127.0.0.1:%d" % port, "--workers", "1", "--allow-anonymous",
            "--data-dir", os.path.join(tmp, name), "--ws-ping-interval", "0",
            "--publish-rate", "0", "--history-size", "1000000000", "--max-connections", "100000",
            "--max-inflight", "1024"]
    if store:
        args += ["--store", store]
    return spawn(args, name + ".log", port, name), port


PG = None


def pg_pids():
    """Every process of the PostgreSQL cluster (postmaster and backends)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(PG.proc.pid)], capture_output=True,
                         text=True).stdout.split()
    return [PG.proc.pid] + [int(x) for x in out]


class Pids:
    """Server processes whose CPU counts; PostgreSQL backends come and go with connections,
    so they are listed again when sampled."""

    def __init__(self, procs, pg=False):
        self.procs, self.pg = procs, pg

    def pids(self):
        return [p.pid for p in self.procs] + (pg_pids() if self.pg else [])


def setup(kind, tmp):
    """[(proc, port)] plexus nodes, [procs] to stop, Pids, store probe."""
    global PG
    if kind == "single":
        p, port = plexus_start(tmp, "single")
        return [(p, port)], [p], Pids([p]), None
    if kind == "pg":
        if PG is None:
            sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
            from backends import PgServer
            PG = PgServer(OUT, name="bench-pg")
        PG.psql("DROP TABLE IF EXISTS plexus_messages, plexus_channels, plexus_instance, "
                "plexus_schema")
        nodes = [plexus_start(tmp, "node%d" % i, PG.url) for i in range(2)]
        procs = [p for p, _ in nodes]
        return nodes, procs, Pids(procs, pg=True), ("pg", None)
    r, rport = redis_start(tmp)
    url = "redis://127.0.0.1:%d" % rport
    nodes = [plexus_start(tmp, "node%d" % i, url) for i in range(2)]
    procs = [r] + [p for p, _ in nodes]
    return nodes, procs, Pids(procs), ("redis", rport)


def redis_get(port, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(out)
        data = s.recv(65536)
    return data


def fanout(kind):
    tmp = tempfile.mkdtemp(prefix="pxbc-")
    nodes, procs, pids, _ = setup(kind, tmp)
    try:
        args = [WSLOAD, "--scenario", "fanout", "--proto", "plexus-hub", "--port",
                str(nodes[0][1]), "--conns", str(SUBS), "--subject", "bench", "--size",
                FANOUT_SIZE, "--window", FANOUT_WINDOW, "--duration", str(DURATION),
                "--warmup", str(WARMUP), "--label", kind,
                "--server-pid", ",".join(str(p) for p in pids.pids()[:16])]
        for _, port in nodes[1:]:
            args += ["--sub-port", str(port)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=DURATION + WARMUP + 180)
        line = [l for l in r.stdout.splitlines() + r.stderr.splitlines() if l.startswith("RESULT ")]
        if not line:
            log("fanout %s: no RESULT:\n%s%s" % (kind, r.stdout[-2000:], r.stderr[-2000:]))
            return None
        res = json.loads(line[-1][7:])
        res["valid"] = res.get("valid", True) and r.returncode == 0
        return res
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def http(kind):
    tmp = tempfile.mkdtemp(prefix="pxbc-")
    nodes, procs, pids, probe = setup(kind, tmp)
    try:
        ch = "bench"
        per = max(1, CONNS // len(nodes))
        secs = DURATION + WARMUP
        c0 = {p: cpu_s(p) for p in pids.pids()}
        t0 = time.monotonic()
        ws = []
        for i, (_, port) in enumerate(nodes):
            ws.append(subprocess.Popen(
                ["wrk", "-t1", "-c%d" % per, "-d%ds" % int(secs + 1), "--timeout", "10s",
                 "-s", LUA, "http://127.0.0.1:%d" % port, "--", ch, "tail%d" % i, str(secs)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [w.communicate(timeout=secs + 120)[0] for w in ws]
        wall = time.monotonic() - t0
        cpu = sum(cpu_s(p) - c0.get(p, 0.0) for p in pids.pids())
        total, non201, p99 = 0, 0, []
        for o in outs:
            m = re.search(r"HUBWRK .*?main201=(\d+) tail201=(\d+).*?non201=(\d+).*?p99_us=(\d+)", o)
            if not m:
                log("http %s: no HUBWRK line:\n%s" % (kind, o[-2000:]))
                return None
            total += int(m.group(1))
            non201 += int(m.group(3))
            p99.append(int(m.group(4)))
        stored = None
        if probe and probe[0] == "redis":
            time.sleep(0.5)
            raw = redis_get(probe[1], "HGET", "plexus:m:" + ch, "o")
            mm = re.search(rb"\$\d+\r\n(\d+)", raw)
            stored = int(mm.group(1)) if mm else 0
        elif probe:
            time.sleep(0.5)
            out = PG.psql("SELECT last_offset FROM plexus_channels WHERE name = '%s'" % ch)
            stored = int(out.strip() or 0)
        return {"publishes": total, "per_s": total / secs, "cpu_s": cpu, "wall_s": wall,
                "per_cpu_s": total / cpu if cpu else None, "non201": non201,
                "p99_ms": max(p99) / 1000.0, "stored": stored,
                "valid": non201 == 0 and (stored is None or stored == total)}
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main():
    os.makedirs(OUT, exist_ok=True)
    for b in (PLEXUS, WSLOAD):
        if not os.access(b, os.X_OK):
            raise SystemExit("missing %s (make build)" % b)
    results = {"fanout": {}, "http": {}}
    for rnd in range(ROUNDS):
        for part in PARTS:
            for kind in SETUPS:
                log("round %d: %s on %s" % (rnd + 1, part, kind))
                r = fanout(kind) if part == "fanout" else http(kind)
                if r:
                    log("  %s" % json.dumps({k: r.get(k) for k in (
                        "msgs_per_s", "server_cpu_s", "per_server_cpu_s", "p99_us", "lost",
                        "dup", "valid", "publishes", "per_s", "cpu_s", "per_cpu_s", "stored",
                        "non201", "p99_ms") if k in r}))
                results[part].setdefault(kind, []).append(r)
    with open(os.path.join(OUT, "results-%d.json" % int(time.time())), "w") as f:
        json.dump(results, f, indent=1)
    print("\nplexus on several nodes, %s (rounds %d, %gs measured, %d subscribers, %d HTTP conns)"
          % (time.strftime("%Y-%m-%d"), ROUNDS, DURATION, SUBS, CONNS))
    if "fanout" in PARTS:
        print("\nfanout: deliveries/s, per CPU-s of all servers (plexus nodes + redis)")
        base = None
        for kind in SETUPS:
            rs = [r for r in results["fanout"].get(kind, []) if r and r.get("valid")]
            rate = median([r["msgs_per_s"] for r in rs])
            per = median([r["per_server_cpu_s"] for r in rs])
            cpu = median([r["server_cpu_s"] for r in rs])
            p99 = median([r["p99_us"] for r in rs])
            if kind == "single":
                base = per
            ratio = "%.2fx" % (per / base) if per and base else "-"
            print("  %-8s %12s/s  %12s/CPU-s  CPU %6ss  p99 %8s us  vs single %s  valid %d/%d"
                  % (kind, "%.0f" % rate if rate else "-", "%.0f" % per if per else "-",
                     "%.2f" % cpu if cpu else "-", "%.0f" % p99 if p99 else "-", ratio,
                     len(rs), len(results["fanout"].get(kind, []))))
        print("  target: redis >= 0.80x single")
    if "http" in PARTS:
        print("\ndurable HTTP publishes (201 after commit): publishes/s, per CPU-s of all servers")
        for kind in SETUPS:
            rs = [r for r in results["http"].get(kind, []) if r and r.get("valid")]
            print("  %-8s %10s/s  %10s/CPU-s  p99 %6s ms  valid %d/%d (stored == 201s)"
                  % (kind, "%.0f" % median([r["per_s"] for r in rs]) if rs else "-",
                     "%.0f" % median([r["per_cpu_s"] for r in rs]) if rs else "-",
                     "%.1f" % median([r["p99_ms"] for r in rs]) if rs else "-",
                     len(rs), len(results["http"].get(kind, []))))
        print("  targets: redis >= 40000/s, pg >= 20000/s")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(started):
            stop(p)
        if PG is not None:
            PG.destroy()
