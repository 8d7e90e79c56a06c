#!/usr/bin/python3
"""pxtest: shared harness for the plexus integration tests.

Every tests/integration/NN-name.py is a plain unittest module that imports this
file and ends with ``pxtest.main()`` (lint checks it). ctest runs each one with
Debian's /usr/bin/python3 (stdlib + python3-websockets only) and sets:

  PLEXUS_BIN        the plexus binary under test
  PX_EXAMPLES_DIR   built examples (Server(example="name"))
  PX_BUILD_DIR      the build directory
  PX_SOURCE_DIR     the source tree
  PX_TEST_OUT       where server logs and scratch files go: PX_TEST_OUT/<module>/<test>/
  PX_TIMEOUT_MULT   every timeout and CPU budget is multiplied by this (4 under ASan)
  PX_TEST_WORKERS   (ThreadSanitizer tree: 3) servers started without a worker count
                    of their own (no --workers, no --config, no PLEXUS_WORKERS or
                    PLEXUS_CONFIG in the test's env) get --workers N

Optional:

  PX_TEST_EXTERNAL=host:port   run against a server you started yourself (Redis
                               --host/--port style). Tests that must control the
                               process (signals, flags, CPU) skip themselves.

Without ctest the defaults assume the source tree and build/release, so
``PX_BUILD_DIR=build/h-core /usr/bin/python3 tests/integration/11-lifecycle.py -v``
works from the repository root.

pxtest.main() exits 0 when every test passed, 1 on a failure (or when no test
ran), and SKIP_EXIT (77, ctest's SKIP_RETURN_CODE) when a test was skipped,
after one "px-skip: <test>: <reason>" line per skip: plain unittest exits 0 then
and the skip would read as a pass. tests/run.sh accepts a skip only for a reason
on the allowlist in tests/README.md; a test names it with
``self.skip_allowed("no-ipv6", "no IPv6 loopback on this host")``.

Sanitizer builds set ASAN_OPTIONS=...:exitcode=99: a server that exits non-zero
when stopped has reported a leak or an error, so every stop is checked for exit
code 0 (explicitly by the tests, and by tearDown for servers still running).
"""

import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("PX_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE)))
BUILD_DIR = os.path.abspath(os.environ.get("PX_BUILD_DIR") or os.path.join(SOURCE_DIR, "build", "release"))
PLEXUS_BIN = os.path.abspath(os.environ.get("PLEXUS_BIN") or os.path.join(BUILD_DIR, "plexus"))
EXAMPLES_DIR = os.path.abspath(os.environ.get("PX_EXAMPLES_DIR") or os.path.join(BUILD_DIR, "examples"))
TEST_OUT = os.path.abspath(os.environ.get("PX_TEST_OUT") or os.path.join(BUILD_DIR, "tests", "out"))
TIMEOUT_MULT = float(os.environ.get("PX_TIMEOUT_MULT") or 1)
EXTERNAL = os.environ.get("PX_TEST_EXTERNAL") or None
TEST_WORKERS = os.environ.get("PX_TEST_WORKERS") or None
SANITIZER_EXIT = 99  # ASAN_OPTIONS exitcode in sanitizer builds
SKIP_EXIT = 77  # a test was skipped (ctest SKIP_RETURN_CODE, tests/CMakeLists.txt)
# A sanitizer report in a server's log fails the test even when the exit code
# cannot tell (a server stopped with SIGKILL, or one allowed a non-zero exit).
SANITIZER_REPORT_RE = re.compile(r"WARNING: ThreadSanitizer:|ERROR: AddressSanitizer:|"
                                 r"ERROR: LeakSanitizer:|runtime error: ")

LISTEN_RE = re.compile(r'listening on ([^\s"]+)')
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _sanitizer_of(path):
    """"thread", "address" or None: the sanitizer runtime linked into `path`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"__tsan_init" in data:
        return "thread"
    if b"__asan_init" in data:
        return "address"
    return None


# The sanitizer of the binary under test (a memory bound means little under
# ThreadSanitizer's shadow memory, for one).
SANITIZER = _sanitizer_of(PLEXUS_BIN)


def scaled(seconds):
    """A timeout (or CPU budget) in seconds, scaled for slow builds."""
    return seconds * TIMEOUT_MULT


def wait_for(predicate, timeout, interval=0.02, what="condition"):
    """Poll `predicate` until it returns a true value (returned) or `timeout`
    (unscaled seconds; scaled here) passes (AssertionError)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (scaled(timeout), what))
        time.sleep(interval)


# ---- addresses and sockets ------------------------------------------------------


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (racy by nature: prefer port 0)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def parse_address(text):
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80);
    'unix:/p' -> '/p'; 'fd:3' -> None (the test knows where it points)."""
    if text.startswith("unix:"):
        return text[5:]
    if text.startswith("fd:"):
        return None
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return (host, int(port))
    host, _, port = text.rpartition(":")
    return (host, int(port))


def connect(addr, timeout=5.0):
    """Connected blocking socket to (host, port) or a unix socket path."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(scaled(timeout))
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


class Response:
    """A parsed HTTP/1.x response."""

    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order
        self.body = body
        self.raw = raw

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def json(self):
        import json

        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %s, %d body bytes>" % (self.status, self.reason, len(self.body))


class PeerClosed(Exception):
    """The server closed the connection before a full response arrived."""


def recv_some(sock, n=65536):
    """sock.recv(n), with a reset by the peer read as EOF (b"")."""
    try:
        return sock.recv(n)
    except ConnectionResetError:
        return b""


class SocketReader:
    """Base of the raw test clients (RawClient here, wsraw.WsClient,
    hubclient.SseReader): owns .sock, reads into .buf until .eof (a reset counts
    as EOF), closes the socket at the end of a with block. A client for a new
    protocol starts from this one."""

    sock = None
    recv_size = 65536

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _fill(self, deadline=None):
        """Read more bytes into .buf before `deadline` (time.monotonic(); None:
        the socket's own timeout); False on EOF or reset."""
        if self.eof:
            return False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out reading from the server")
            self.sock.settimeout(left)
        chunk = recv_some(self.sock, self.recv_size)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True


class RawClient(SocketReader):
    """A raw client connection: send bytes, read full HTTP responses (Content-Length,
    chunked, or until close), pipelining-safe (leftover bytes are kept)."""

    def __init__(self, addr, timeout=5.0):
        self.sock = connect(addr, timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _read_until(self, marker, deadline):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker) :]
                return out
            if not self._fill(deadline):
                raise PeerClosed("connection closed (%d unparsed bytes)" % len(self.buf))

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise PeerClosed("connection closed %d bytes short" % (n - len(self.buf)))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None, method="GET"):
        """Read one complete response. Raises PeerClosed if the server closes
        first, socket.timeout if nothing complete arrives in time."""
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        headers = []
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        hdr = {k.lower(): v for k, v in headers}
        raw = head
        if method == "HEAD" or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in hdr.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self._read_until(b"\r\n", deadline)
                        raw += t
                        if t == b"\r\n":
                            break
                    break
                chunk = self._read_exact(size + 2, deadline)
                raw += chunk
                body += chunk[:-2]
        elif "content-length" in hdr:
            body = self._read_exact(int(hdr["content-length"]), deadline)
            raw += body
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
            raw += body
        return Response(version, status, reason, headers, body, raw)

    def read_until_close(self, timeout=None):
        """Everything the server sends until it closes (or resets)."""
        deadline = time.monotonic() + scaled(timeout or self.timeout)
        while self._fill(deadline):
            pass
        out, self.buf = self.buf, b""
        return out

    def wait_closed(self, timeout):
        """True if the server closes (FIN or RST) within `timeout` (scaled);
        whatever it sent before stays in .buf."""
        deadline = time.monotonic() + scaled(timeout)
        try:
            while self._fill(deadline):
                pass
            return True
        except (socket.timeout, TimeoutError):
            return False

    def is_open(self):
        """Non-blocking check that the server has not closed the connection
        (bytes already sent by the server are moved into .buf)."""
        while not self.eof:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return True
            chunk = recv_some(self.sock)
            if not chunk:
                self.eof = True
            self.buf += chunk
        return False


def raw_request(addr, data, timeout=5.0, until="response"):
    """Send `data` on a new connection; return a Response (until="response")
    or every byte until the server closes (until="close")."""
    with RawClient(addr, timeout) as c:
        c.send(data)
        if until == "close":
            return c.read_until_close()
        return c.read_response()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def http_request(addr, method, path, headers=None, body=None, timeout=5.0):
    """One request through http.client; returns a Response (raw is None)."""
    if isinstance(addr, str):
        conn = _UnixHTTPConnection(addr, scaled(timeout))
    else:
        conn = http.client.HTTPConnection(addr[0], addr[1], timeout=scaled(timeout))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        ver = "HTTP/1.1" if r.version == 11 else "HTTP/1.0"
        return Response(ver, r.status, r.reason, list(r.getheaders()), data, None)
    finally:
        conn.close()


# ---- the server process --------------------------------------------------------------


class ServerError(AssertionError):
    pass


def _proc_stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    # The command name is in parentheses and may contain spaces.
    return data[data.rindex(")") + 2 :].split()


class Server:
    """A plexus (or example) process started with `--listen 127.0.0.1:0` plus
    extra args, ready once its log names every listener.

    Attributes after start: pid, listeners (["127.0.0.1:40123", "unix:/p"]),
    addr (first TCP (host, port) or unix path), host, port, url, log_path.
    """

    def __init__(self, *args, binary=None, example=None, listen=("127.0.0.1:0",), env=None,
                 out_dir=None, name=None, log_file=None, pass_fds=(), preexec_fn=None,
                 expect_listeners=None, ready_timeout=10.0, cwd=None, start=True):
        if example:
            binary = os.path.join(EXAMPLES_DIR, example)
        self.binary = binary or PLEXUS_BIN
        self.name = name or example or "plexus"
        self.args = [str(a) for a in args]
        self.listen = list(listen or ())
        self.env_extra = dict(env or {})
        self.out_dir = out_dir or os.path.join(TEST_OUT, "adhoc")
        self.log_file = log_file
        self.pass_fds = tuple(pass_fds)
        self.preexec_fn = preexec_fn
        self.expect_listeners = expect_listeners
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self.proc = None
        self.starts = 0
        self.listeners = []
        self.returncode = None
        self.allow_nonzero_exit = False
        self.external = False
        self._out = None
        if start:
            self.start()

    # -- process control --

    def command(self):
        cmd = [self.binary]
        for a in self.listen:
            cmd += ["--listen", a]
        if self.log_file:
            cmd += ["--log-file", self.log_file]
        if TEST_WORKERS and not self._chooses_workers():
            cmd += ["--workers", TEST_WORKERS]
        return cmd + self.args

    def _chooses_workers(self):
        """Does the test set the worker count (or a config that may) itself?"""
        if any(a.startswith(("--workers", "--config")) for a in self.args):
            return True
        return any(k in self.env_extra for k in ("PLEXUS_WORKERS", "PLEXUS_CONFIG"))

    def start(self):
        os.makedirs(self.out_dir, exist_ok=True)
        self.starts += 1
        suffix = "" if self.starts == 1 else ".%d" % self.starts
        self.stderr_path = os.path.join(self.out_dir, self.name + suffix + ".log")
        self.log_path = self.log_file or self.stderr_path
        # Only this run's lines count (a --log-file is appended to across restarts).
        self._log_offset = 0
        if self.log_file and os.path.exists(self.log_file):
            self._log_offset = os.path.getsize(self.log_file)
        env = dict(os.environ)
        for k, v in self.env_extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        self._out = open(self.stderr_path, "wb")
        self.cmdline = self.command()
        self._out.write(("# %s\n" % " ".join(self.cmdline)).encode())
        self._out.flush()
        if self.log_file == self.stderr_path:
            raise ValueError("log_file must differ from the captured stderr")
        self.proc = subprocess.Popen(self.cmdline, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env=env, pass_fds=self.pass_fds,
                                     preexec_fn=self.preexec_fn, cwd=self.cwd)
        self.pid = self.proc.pid
        self.returncode = None
        self._wait_ready()
        return self

    def _wait_ready(self):
        want = self.expect_listeners
        if want is None:
            want = max(1, len(self.listen))
        deadline = time.monotonic() + scaled(self.ready_timeout)
        while True:
            found = LISTEN_RE.findall(self.log_since_start())
            if len(found) >= want:
                break
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self._close_out()
                raise ServerError("%s exited with %d before it was ready:\n%s"
                                  % (self.name, self.returncode, self.log_text()))
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError("%s not ready after %.1fs:\n%s"
                                  % (self.name, scaled(self.ready_timeout), self.log_text()))
            time.sleep(0.01)
        time.sleep(0.01)  # let the remaining listen lines land
        self.listeners = LISTEN_RE.findall(self.log_since_start())
        self.addr = None
        self.host = self.port = None
        self.unix_path = None
        for text in self.listeners:
            a = parse_address(text)
            if isinstance(a, tuple) and self.port is None:
                self.host, self.port = a
            elif isinstance(a, str) and self.unix_path is None:
                self.unix_path = a
        self.addr = (self.host, self.port) if self.port is not None else self.unix_path

    @property
    def url(self):
        host = "[%s]" % self.host if self.host and ":" in self.host else self.host
        return "http://%s:%d" % (host, self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send `sig`, wait up to `timeout` (scaled) seconds; return the exit
        code (negative: killed by that signal). ServerError if it hangs."""
        if self.proc is None:
            return None
        self.stop_seconds = 0.0
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                self._close_out()
                raise ServerError("%s did not exit within %.1fs of %s"
                                  % (self.name, scaled(timeout), signal.Signals(sig).name))
            self.stop_seconds = time.monotonic() - t0
        self.returncode = self.proc.returncode
        self._close_out()
        return self.returncode

    def kill(self):
        """SIGKILL (no clean-up, no leak report); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.returncode = self.proc.returncode
        self._close_out()
        return self.returncode

    def restart(self, same_port=True, sig=signal.SIGTERM):
        """Stop (must exit 0), start again with the same arguments. With
        same_port, port-0 TCP listeners are pinned to the port they got."""
        rc = self.stop(sig)
        if rc != 0:
            raise ServerError("%s exited with %d on restart:\n%s" % (self.name, rc, self.log_text()))
        if same_port:
            pinned = []
            for spec, actual in zip(self.listen, self.listeners):
                pinned.append(actual if spec.endswith(":0") and not spec.startswith(("unix:", "fd:"))
                              else spec)
            self.listen = pinned + self.listen[len(pinned):]
        return self.start()

    def _close_out(self):
        if self._out:
            self._out.close()
            self._out = None

    # -- observation --

    def cpu_seconds(self):
        """utime + stime of the whole process (all threads), in seconds."""
        f = _proc_stat(self.pid)
        return (int(f[11]) + int(f[12])) / CLK_TCK

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def thread_count(self):
        return len(os.listdir("/proc/%d/task" % self.pid))

    def open_connections(self):
        """Connections (not listeners) the process still holds: TCP sockets not
        in LISTEN state, and connected sockets on its Unix listener."""
        owned = set()
        try:
            for fd in os.listdir("/proc/%d/fd" % self.pid):
                try:
                    link = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
                except OSError:
                    continue
                if link.startswith("socket:["):
                    owned.add(link[8:-1])
        except OSError:
            return set()
        conns = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    for line in list(f)[1:]:
                        p = line.split()
                        if p[9] in owned and p[3] != "0A":
                            conns.add(p[9])
            except OSError:
                pass
        if getattr(self, "unix_path", None):
            with open("/proc/net/unix") as f:
                for line in list(f)[1:]:
                    p = line.split()
                    if len(p) >= 8 and p[6] in owned and p[5] == "03" and p[7] == self.unix_path:
                        conns.add(p[6])
        return conns

    def log_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self):
        """Captured stdout+stderr of this run (plus the --log-file if any)."""
        parts = []
        for p in dict.fromkeys([self.stderr_path, self.log_path]):
            try:
                with open(p, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
            except FileNotFoundError:
                pass
        return "".join(parts)

    def wait_log(self, pattern, timeout=5.0):
        """Wait until the log (this run) matches `pattern`; returns the match."""
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log_since_start()), timeout,
                        what="log line /%s/ from %s" % (pattern, self.name))

    # -- clients --

    def http(self, method="GET", path="/", headers=None, body=None, timeout=5.0):
        return http_request(self.addr, method, path, headers, body, timeout)

    def raw(self, data, timeout=5.0, until="response"):
        return raw_request(self.addr, data, timeout, until)

    def client(self, timeout=5.0):
        return RawClient(self.addr, timeout)


def quiesce(servers, timeout=3.0):
    """Wait (bounded) until each running server has closed every connection
    whose client went away, so that a SIGTERM right after (tearDown's) does not
    race the clients' FINs: stopping a server at that very moment leaked a
    px_conn_t under ASan (31-http-server ShutdownRace covers that case on its
    own; the other tests are not about it). A connection left open on purpose
    only costs the timeout."""
    for s in servers:
        if s.external or not s.running():
            continue
        try:
            wait_for(lambda: not s.open_connections(), timeout, interval=0.01,
                     what="%s to close its connections" % s.name)
        except AssertionError:
            pass  # a test that leaves a connection open on purpose


class ExternalServer(Server):
    """PX_TEST_EXTERNAL=host:port: a server somebody else runs. Only client-side
    tests make sense; process control skips the test."""

    def __init__(self, spec):
        host, _, port = spec.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.addr = (self.host, self.port)
        self.listeners = [spec]
        self.unix_path = None
        self.name = "external"
        self.external = True
        self.proc = None
        self.allow_nonzero_exit = False

    def _unsupported(self, *a, **kw):
        raise unittest.SkipTest("[external] not possible against an external server")

    start = stop = kill = restart = cpu_seconds = rss_kb = fd_count = thread_count = _unsupported
    wait_log = _unsupported

    def running(self):
        return False

    def log_text(self):
        return ""


# ---- the test case base ---------------------------------------------------------------


def _module_name():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or sys.argv[0]
    return os.path.splitext(os.path.basename(path))[0]


def class_out_dir(cls):
    """The output directory of a test class that shares one server between its
    tests (setUpClass): PX_TEST_OUT/<module>/<Class>/, emptied."""
    out = os.path.join(TEST_OUT, _module_name(), cls.__name__)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    return out


def stop_class_server(srv):
    """Stop the server a test class shared (tearDownClass). Exit code 0 is
    required: otherwise AssertionError with the tail of its log (where a
    sanitizer or leak report is)."""
    if srv is None or srv.external:
        return
    rc = srv.stop()
    if rc != 0:
        raise AssertionError("%s exited with %d when stopped%s; log (tail):\n%s" % (
            srv.name, rc, " (sanitizer report or leak)" if rc == SANITIZER_EXIT else "",
            "\n".join(srv.log_text().splitlines()[-200:])))


class PxTestCase(unittest.TestCase):
    """Base class: per-test output directory, server tracking, logs printed
    when a test fails, and a clean exit (code 0) required of every server."""

    maxDiff = None

    def setUp(self):
        cls = type(self).__name__
        self.out_dir = os.path.join(TEST_OUT, _module_name(), "%s.%s" % (cls, self._testMethodName))
        shutil.rmtree(self.out_dir, ignore_errors=True)
        os.makedirs(self.out_dir, exist_ok=True)
        self.servers = []
        self._tmpdirs = []

    def start_server(self, *args, external_ok=False, **kw):
        """Start a server for this test (stopped in tearDown if still running).
        In external mode returns the external server if external_ok, else skips."""
        if EXTERNAL:
            if not external_ok:
                self.skip_allowed("external", "needs its own server process")
            srv = ExternalServer(EXTERNAL)
            self.servers.append(srv)
            return srv
        kw.setdefault("out_dir", self.out_dir)
        # Relative paths the server uses (the hub's ./var data directory...) land
        # in this test's own directory: parallel tests never share state.
        kw.setdefault("cwd", self.out_dir)
        if "name" not in kw:
            n = sum(1 for s in self.servers if not s.external)
            kw["name"] = (kw.get("example") or "plexus") + ("" if n == 0 else "-%d" % (n + 1))
        srv = Server(*args, start=False, **kw)
        self.servers.append(srv)
        srv.start()
        return srv

    @staticmethod
    def require_local_class(what="needs its own server process"):
        """In setUpClass: skip the class in external-server mode (the allowed
        [external] reason)."""
        if EXTERNAL:
            raise unittest.SkipTest("[external] %s (PX_TEST_EXTERNAL is set)" % what)

    def require_local(self):
        if EXTERNAL:
            self.skip_allowed("external", "needs its own server process")

    def skip_allowed(self, reason_id, detail):
        """Skip this test for a reason on the allowlist of tests/README.md
        ("Allowed skips"), e.g. skip_allowed("no-ipv6", "no IPv6 loopback").
        Any other skip fails make test (tests/run.sh checks the id)."""
        self.skipTest("[%s] %s" % (reason_id, detail))

    def short_dir(self):
        """A directory whose paths fit in sun_path (108 bytes): under the test's
        output directory when short enough, else a fresh one under /tmp."""
        if len(self.out_dir) < 80:
            return self.out_dir
        d = tempfile.mkdtemp(prefix="pxt-", dir="/tmp")
        self._tmpdirs.append(d)
        return d

    def run_until_exit(self, *args, name="second", timeout=5.0):
        """Run the binary with `args` in a directory of its own under the test's
        (only an address may conflict with the test's servers) and wait up to
        `timeout` (scaled) seconds for it to exit, for a start that must fail.
        Returns (exit code, output), or (None, output) if it was still running:
        then it has been stopped (SIGTERM)."""
        cwd = os.path.join(self.out_dir, name)
        os.makedirs(cwd)
        errpath = os.path.join(self.out_dir, name + ".log")
        with open(errpath, "wb") as err:
            proc = subprocess.Popen([PLEXUS_BIN] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, cwd=cwd)
            try:
                rc = proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                rc = None
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=scaled(15))
        with open(errpath) as f:
            return rc, f.read()

    def assertStopsCleanly(self, server, sig=signal.SIGTERM, timeout=15.0):
        """Stop `server` with `sig` and require exit code 0; returns seconds taken."""
        rc = server.stop(sig, timeout)
        if rc == SANITIZER_EXIT:
            self.fail("%s exited with %d: sanitizer report or leak (see its log)" % (server.name, rc))
        self.assertEqual(rc, 0, "%s exit code after %s" % (server.name, signal.Signals(sig).name))
        return server.stop_seconds

    def _failed(self):
        """Did the test body (or a subtest) fail? (tearDown runs in its own
        outcome part, so _outcome.success does not tell; the result lists do.)"""
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        for entries in (getattr(result, "errors", ()), getattr(result, "failures", ())):
            for test, _ in entries:
                if test is self or getattr(test, "test_case", None) is self:
                    return True
        return False

    def tearDown(self):
        problems = []
        for s in self.servers:
            if s.running():
                try:
                    rc = s.stop()
                except ServerError as e:
                    problems.append(str(e))
                    continue
                if rc != 0 and not s.allow_nonzero_exit:
                    problems.append("%s exited with %d at tearDown%s"
                                    % (s.name, rc, " (sanitizer report?)" if rc == SANITIZER_EXIT else ""))
        for s in self.servers:
            if not s.external and SANITIZER_REPORT_RE.search(s.log_text()):
                problems.append("%s: sanitizer report in its log (%s)"
                                % (s.name, getattr(s, "stderr_path", "?")))
        if problems or self._failed():
            for s in self.servers:
                if s.external:
                    continue
                text = s.log_text()
                lines = text.splitlines()
                if len(lines) > 300:
                    lines = ["... (%d lines cut)" % (len(lines) - 300)] + lines[-300:]
                sys.stderr.write("\n----- %s log (%s) -----\n%s\n----- end of %s log -----\n"
                                 % (s.name, getattr(s, "stderr_path", "?"), "\n".join(lines), s.name))
        for d in self._tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        if problems:
            self.fail("; ".join(problems))


class SharedServerCase(PxTestCase):
    """Base for a class whose tests share one server: started by setUpClass
    with `server_args` and `server_kw` (Server's keywords, e.g. example="echo"),
    stopped by tearDownClass with exit code 0 required; in external mode the
    tests run against the external server. self.srv is the server; a test
    after which it is no longer running fails (unless it set
    self.stopped_on_purpose), and a failed test prints what the server logged
    during it."""

    server_args = ()
    server_kw = {}
    server = None

    @classmethod
    def setUpClass(cls):
        if EXTERNAL:
            cls.server = ExternalServer(EXTERNAL)
            return
        cls.server = Server(*cls.server_args, out_dir=class_out_dir(cls), **cls.server_kw)

    @classmethod
    def tearDownClass(cls):
        stop_class_server(cls.server)

    def setUp(self):
        super().setUp()
        self.srv = type(self).server
        self.log_mark = len(self.srv.log_text()) if not self.srv.external else 0

    def tearDown(self):
        alive = self.srv.external or self.srv.running() or getattr(self, "stopped_on_purpose", False)
        super().tearDown()
        if self._failed() or not alive:
            text = self.srv.log_text()[self.log_mark:]
            sys.stderr.write("\n----- %s log during %s -----\n%s\n-----\n"
                             % (self.srv.name, self._testMethodName, text[-8000:]))
        if not alive:
            self.fail("the %s server died (exit %s)" % (self.srv.name, self.srv.proc.poll()))


def run_plexus(args, env=None, timeout=10.0, binary=None):
    """Run the binary to completion (for CLI checks); returns CompletedProcess
    with text stdout/stderr. A process still running after `timeout` (scaled)
    is killed and reported as a failure: a bad flag must not start a server."""
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    cmd = [binary or PLEXUS_BIN] + [str(a) for a in args]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=full_env, timeout=scaled(timeout))
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s still running after %.1fs (it should have exited):\n%s"
                             % (" ".join(cmd), scaled(timeout),
                                (e.stderr or b"").decode("utf-8", "replace")
                                if isinstance(e.stderr, bytes) else e.stderr))


def main():
    """unittest.main, with an exit code that tells a skip from a pass: 0 all
    passed, 1 a failure or no test ran, SKIP_EXIT something was skipped (one
    "px-skip: <test>: <reason>" line each, for tests/run.sh to check)."""
    prog = unittest.main(verbosity=2, exit=False)
    result = prog.result
    sys.stdout.flush()
    sys.stderr.flush()
    for test, reason in result.skipped:
        print("px-skip: %s: %s" % (test.id(), reason), flush=True)
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun == 0:
        print("pxtest: no test ran", flush=True)
        sys.exit(1)
    sys.exit(SKIP_EXIT if result.skipped else 0)
