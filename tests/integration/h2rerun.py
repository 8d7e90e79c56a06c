"""The HTTP integration cases again, over HTTP/2: the machinery of
39-http2-rerun (h2c) and 25-http2-tls-rerun (h2 over TLS). Not a test module.

The files listed in MODULES run unchanged, with their HTTP clients switched to
HTTP/2: pxtest.http_request (hence Server.http and hubclient.api) becomes
h2client.h2_request, and hubclient.SseReader becomes h2client.H2SseReader. Their
raw-socket cases (RawClient: HTTP/1.1 bytes on purpose) and WebSocket cases run
as they are. Cases whose subject is HTTP/1.1 itself are listed in NOT_H2 with
the reason; every other case must pass over h2 as it does over HTTP/1.1.

With tls (setup(tls=Pki)), every plexus the cases start gets a TLS listener
(`--tls`, a certificate from the test CA): its requests and SSE streams go over
TLS with ALPN h2, while the cases' raw HTTP/1.1 bytes and WebSockets reach the
same port in clear text through the sniffer. Examples (no TLS in them) stay h2c.

Run one module only: PX_H2_RERUN=51-hub-http /usr/bin/python3 39-http2-rerun.py
"""

import importlib.util
import os
import unittest

import pxtest
import hubclient
import h2client

HERE = os.path.dirname(os.path.abspath(__file__))

# Files whose cases speak HTTP through pxtest/hubclient.
MODULES = ["32-http-static", "33-http-hello", "51-hub-http", "52-hub-sse", "53-hub-auth",
           "57-hub-hardening", "58-hub-api"]

# "module.Class.test": why it does not apply to HTTP/2.
NOT_H2 = {
    "32-http-static.Traversal.test_absolute_form_targets":
        "HTTP/2 has no absolute-form target: such a :path is a malformed request, reset "
        "(PROTOCOL_ERROR) by nghttp2 before any handler (36-http2-conformance has the :path cases)",
}

# TCP addresses of servers started with TLS (h2 over TLS there), and the client context;
# STATS["tls"] counts the HTTP/2 connections made over TLS.
TLS_ADDRS = set()
TLS = {"ctx": None}
STATS = h2client.STATS
STATS.setdefault("tls", 0)

_http1_request = pxtest.http_request


def _tls_for(addr):
    if isinstance(addr, tuple) and addr in TLS_ADDRS:
        STATS["tls"] += 1
        return TLS["ctx"]
    return None


def _h2_request(addr, method, path, headers=None, body=None, timeout=5.0):
    if isinstance(addr, str):  # a unix socket listener: HTTP/1.1 as before
        return _http1_request(addr, method, path, headers, body, timeout)
    return h2client.h2_request(addr, method, path, headers, body, timeout, tls=_tls_for(addr))


class _SseReader(h2client.H2SseReader):
    def __init__(self, addr, path, headers=(), timeout=10.0):
        super().__init__(addr, path, headers, timeout, tls=_tls_for(addr))


def _static_get(self, target, headers=b"", method=b"GET"):
    """32-http-static's raw GET, as one HTTP/2 request: the target goes out as
    :path exactly as given, the header lines as fields."""
    fields = []
    for line in headers.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b":")
            fields.append((k.strip().lower().decode(), v.strip().decode("latin-1")))
    with h2client.H2Client(self.srv.addr, timeout=10, tls=_tls_for(self.srv.addr)) as c:
        return c.request(method.decode(), target, fields, timeout=10)


ADAPT = {"32-http-static": lambda m: setattr(m.StaticBase, "get", _static_get)}


def setup(pki=None):
    """Switch the clients to HTTP/2; with `pki` (tlsutil.Pki), plexus servers to TLS."""
    pxtest.http_request = _h2_request
    hubclient.SseReader = _SseReader
    if pki is None:
        return
    import atexit
    import shutil
    import tempfile
    import tlsutil
    crt0, key0 = pki.leaf("rerun", ["localhost"], kind="ec")
    # Copies any user can read: some cases start plexus as nobody (32-http-static).
    d = tempfile.mkdtemp(prefix="px-h2tls-")
    atexit.register(shutil.rmtree, d, True)
    os.chmod(d, 0o755)
    crt, key = os.path.join(d, "rerun.crt"), os.path.join(d, "rerun.key")
    for src, dst in ((crt0, crt), (key0, key)):
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
    TLS["ctx"] = tlsutil.client_context(pki.ca_crt, alpn=("h2",))
    command, wait_ready = pxtest.Server.command, pxtest.Server._wait_ready

    def uses_tls(srv):
        return srv.binary == pxtest.PLEXUS_BIN and "--config" not in srv.args

    def tls_command(srv):
        cmd = command(srv)
        if uses_tls(srv) and "--tls" not in srv.args:
            cmd += ["--tls", "--tls-cert", crt, "--tls-key", key]
        return cmd

    def tls_wait_ready(srv):
        wait_ready(srv)
        if uses_tls(srv) and isinstance(srv.addr, tuple):
            for text in srv.listeners:
                a = pxtest.parse_address(text)
                if isinstance(a, tuple):
                    TLS_ADDRS.add(a)

    pxtest.Server.command = tls_command
    pxtest.Server._wait_ready = tls_wait_ready


def load(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"),
                                                  os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if name in ADAPT:
        ADAPT[name](mod)
    return mod


def suite():
    only = os.environ.get("PX_H2_RERUN")
    s = unittest.TestSuite()
    for name in MODULES:
        if only and name != only:
            continue
        mod = load(name)
        for t in _flatten(unittest.defaultTestLoader.loadTestsFromModule(mod)):
            key = "%s.%s.%s" % (name, type(t).__name__, t._testMethodName)
            if key in NOT_H2:
                continue
            s.addTest(t)
    return s


def _flatten(s):
    for t in s:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


class OverHttp2(unittest.TestCase):
    """Runs last (load_tests puts it there): the cases really went over HTTP/2
    (and, with TLS, over TLS)."""

    def test_the_cases_used_http2(self):
        print("over HTTP/2: %(requests)d requests, %(sse)d SSE streams, "
              "%(tls)d connections over TLS" % STATS)
        if os.environ.get("PX_H2_RERUN"):
            return
        self.assertGreaterEqual(STATS["requests"], 100, STATS)
        self.assertGreaterEqual(STATS["sse"], 10, STATS)
        if TLS["ctx"] is not None:
            self.assertGreaterEqual(STATS["tls"], 100, STATS)


def load_tests(loader, tests, pattern):
    s = suite()
    s.addTest(OverHttp2("test_the_cases_used_http2"))
    return s
