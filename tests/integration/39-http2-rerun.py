#!/usr/bin/python3
"""39-http2-rerun: the HTTP integration cases again, over HTTP/2 (h2c).

The files listed in MODULES run unchanged, with their HTTP clients switched to
HTTP/2: pxtest.http_request (hence Server.http and hubclient.api) becomes
h2client.h2_request, and hubclient.SseReader becomes h2client.H2SseReader. Their
raw-socket cases (RawClient: HTTP/1.1 bytes on purpose) and WebSocket cases run
as they are. Cases whose subject is HTTP/1.1 itself are listed in NOT_H2 with
the reason; every other case must pass over h2 as it does over HTTP/1.1.

Run one module only: PX_H2_RERUN=51-hub-http /usr/bin/python3 39-http2-rerun.py
"""

import importlib.util
import os
import sys
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


def _h2_request(addr, method, path, headers=None, body=None, timeout=5.0):
    if isinstance(addr, str):  # a unix socket listener: HTTP/1.1 as before
        return _http1_request(addr, method, path, headers, body, timeout)
    return h2client.h2_request(addr, method, path, headers, body, timeout)


_http1_request = pxtest.http_request
pxtest.http_request = _h2_request
hubclient.SseReader = h2client.H2SseReader


def _static_get(self, target, headers=b"", method=b"GET"):
    """32-http-static's raw GET, as one HTTP/2 request: the target goes out as
    :path exactly as given, the header lines as fields."""
    fields = []
    for line in headers.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b":")
            fields.append((k.strip().lower().decode(), v.strip().decode("latin-1")))
    with h2client.H2Client(self.srv.addr, timeout=10) as c:
        return c.request(method.decode(), target, fields, timeout=10)


ADAPT = {"32-http-static": lambda m: setattr(m.StaticBase, "get", _static_get)}


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
    """Runs last (load_tests puts it there): the cases really went over HTTP/2."""

    def test_the_cases_used_http2(self):
        print("over HTTP/2: %(requests)d requests, %(sse)d SSE streams" % h2client.STATS)
        if os.environ.get("PX_H2_RERUN"):
            return
        self.assertGreaterEqual(h2client.STATS["requests"], 100, h2client.STATS)
        self.assertGreaterEqual(h2client.STATS["sse"], 10, h2client.STATS)


def load_tests(loader, tests, pattern):
    s = suite()
    s.addTest(OverHttp2("test_the_cases_used_http2"))
    return s


if __name__ == "__main__":
    pxtest.main()
