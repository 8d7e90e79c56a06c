"""backends: real Redis and PostgreSQL servers for the cluster tests (7x-cluster-*.py).

    with RedisServer(self.out_dir) as redis:          # redis-server on a free loopback port
        node = self.start_server(*hub_args(self.out_dir, "--store", redis.url, ...))
        redis.kill(); redis.start()                    # same port, same data dir

    pg = PgServer(self.out_dir)                        # initdb into a temp dir, then postgres
    pg.url                                             # postgres://plexus@127.0.0.1:PORT/plexus

Each server binds 127.0.0.1 on a port picked free, keeps its data and log under the
test's output directory, and is stopped by its own PID (never by name). PostgreSQL
refuses to run as root: when the suite runs as root (CI), initdb and postgres run as
the unprivileged user `nobody` through setpriv, on a directory handed to that user; as
a normal user they run as that user.

TcpProxy is a loopback TCP relay whose delay can be set while it runs (a slow backend).
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time

import pxtest
from pxtest import scaled

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def _wait_port(port, proc, what, timeout=10.0):
    def up():
        if proc.poll() is not None:
            raise AssertionError("%s exited with %d before it listened" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    pxtest.wait_for(up, timeout, what="%s listening on %d" % (what, port))


def redis_cmd(port, *args, timeout=5.0):
    """One command over RESP on a plain socket (no client library); returns the reply
    as bytes, int, list or None (nil); raises on an error reply."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as s:
        s.sendall(out)
        f = s.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp(f) for _ in range(n)]
    raise RuntimeError("bad RESP line %r" % line)


class RedisServer:
    """redis-server on 127.0.0.1:<free port>. persist: AOF with appendfsync always
    (what survives a kill -9 of Redis), else nothing is kept across a restart."""

    def __init__(self, out_dir, persist=False, name="redis"):
        self.dir = os.path.join(out_dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.persist = persist
        self.port = pxtest.free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--logfile", self.log_path, "--daemonize", "no",
                "--protected-mode", "no"]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def cmd(self, *args):
        return redis_cmd(self.port, *args)

    def kill(self):
        """SIGKILL, wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class TcpProxy:
    """127.0.0.1:<port> -> target port, forwarding both ways; `delay` seconds (settable)
    are added before each chunk goes either way, so replies come late but in order."""

    def __init__(self, target_port):
        self.target = target_port
        self.delay = 0.0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


# ---- PostgreSQL --------------------------------------------------------------------------------


def _pg_bindir():
    for v in ("17", "16", "15", "14"):
        d = "/usr/lib/postgresql/%s/bin" % v
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    p = shutil.which("postgres")
    return os.path.dirname(p) if p else None


PG_BINDIR = _pg_bindir()


class PgServer:
    """A throw-away PostgreSQL cluster: initdb in a temporary directory, postgres on
    127.0.0.1:<free port> with trust authentication, database `plexus`."""

    def __init__(self, out_dir, name="pg"):
        if not PG_BINDIR:
            raise AssertionError("PostgreSQL binaries not found (deps/debian.txt: postgresql)")
        # A short path of its own (the Unix socket lives there too), owned by the user
        # that runs the server.
        self.dir = os.path.join("/tmp", "pxpg-%d-%s" % (os.getpid(), os.urandom(4).hex()))
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(out_dir, name + ".log")
        self.port = pxtest.free_port()
        self.proc = None
        self.prefix = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                           "--clear-groups", "--"]
        r = subprocess.run(self.prefix + [os.path.join(PG_BINDIR, "initdb"), "-D", self.data,
                                          "-U", "plexus", "--auth=trust", "-E", "UTF8",
                                          "--no-sync", "--no-instructions"],
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("initdb failed:\n%s%s" % (r.stdout, r.stderr))
        self.start()
        r = subprocess.run(self.prefix + [os.path.join(PG_BINDIR, "createdb"), "-h", "127.0.0.1",
                                          "-p", str(self.port), "-U", "plexus", "plexus"],
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("createdb failed:\n%s%s" % (r.stdout, r.stderr))

    @property
    def url(self):
        return "postgres://plexus@127.0.0.1:%d/plexus" % self.port

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.prefix + [os.path.join(PG_BINDIR, "postgres"), "-D", self.data, "-h", "127.0.0.1",
                           "-p", str(self.port), "-k", self.dir, "-c", "fsync=off",
                           "-c", "max_connections=50", "-c", "shared_buffers=32MB"],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf, cwd=self.dir)
        _wait_port(self.port, self.proc, "postgres", timeout=30)
        # Listening is not accepting: wait until it takes connections (not "starting up").
        deadline = time.monotonic() + scaled(30)
        while True:
            r = subprocess.run([os.path.join(PG_BINDIR, "pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(self.port), "-U", "plexus", "-d", "postgres"],
                               cwd=self.dir)
            if r.returncode == 0:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("postgres not ready (pg_isready %d)" % r.returncode)
            time.sleep(0.05)

    def psql(self, sql):
        r = subprocess.run(self.prefix + [os.path.join(PG_BINDIR, "psql"), "-h", "127.0.0.1", "-p",
                                          str(self.port), "-U", "plexus", "-d", "plexus", "-At",
                                          "-c", sql],
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("psql failed: %s" % r.stderr)
        return r.stdout

    def stop(self, sig=signal.SIGINT):
        """Fast shutdown (SIGINT) by default; SIGKILL for a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
