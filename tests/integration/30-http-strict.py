#!/usr/bin/python3
"""30-http-strict: the HTTP/1.1 parser as seen from the wire (raw sockets).

Every malformed or over-limit request gets the right status with a JSON body
{"error": ..., "message": ...}, "Connection: close", and then the server
closes the connection (nothing after the error is ever interpreted as a
request: that is what request smuggling needs). Limits are enforced as soon as
they are crossed: 414 and 431 arrive before the client has finished the head,
413 before it has sent the body. Legitimate variations (lower-case field names,
X-Forwarded-For, obs-text, HTAB) are accepted.
"""

import json
import os
import time

import pxtest
from pxtest import PeerClosed, PxTestCase, scaled

H = b"Host: t\r\n"
OK_REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def get(extra=b"", target=b"/healthz", method=b"GET", version=b"HTTP/1.1", host=True):
    """A request head (bytes) with optional extra header lines (each ending in CRLF)."""
    return method + b" " + target + b" " + version + b"\r\n" + (H if host else b"") + extra + b"\r\n"


class StrictBase(PxTestCase):
    server_args = ("--workers", "1")

    def setUp(self):
        super().setUp()
        # The hub keeps its SQLite file in --data-dir: one per test, never ./var.
        self.srv = self.start_server(*self.server_args, "--data-dir",
                                     os.path.join(self.out_dir, "var"))

    def send_quietly(self, c, data):
        """Send, tolerating a server that has already answered and closed."""
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def tearDown(self):
        pxtest.quiesce(self.servers)
        super().tearDown()

    def assertErrorResponse(self, r, status, what=""):
        self.assertEqual(r.status, status, "%s: %r" % (what, r.raw[:300]))
        self.assertEqual(r.header("Content-Type"), "application/json", what)
        body = json.loads(r.body)
        self.assertIsInstance(body, dict, what)
        self.assertIsInstance(body.get("error"), str, what)
        self.assertIsInstance(body.get("message"), str, what)
        self.assertTrue(body["error"] and body["message"], what)
        self.assertEqual(r.header("Connection", "").lower(), "close", what)
        return body

    def assertRejected(self, data, status, what=None, chunks=None):
        """Send `data` (or the list `chunks`, one write each) on a fresh
        connection: one error response with `status`, then the server closes
        and sends nothing more."""
        what = what or repr(data[:80])
        with self.srv.client() as c:
            if chunks:
                for ch in chunks:
                    self.send_quietly(c, ch)
                    time.sleep(0.01)
            else:
                self.send_quietly(c, data)
            try:
                r = c.read_response()
            except PeerClosed as e:
                self.fail("%s: no response before close (%s)" % (what, e))
            body = self.assertErrorResponse(r, status, what)
            self.assertTrue(c.wait_closed(3), "%s: connection still open after %d" % (what, status))
            self.assertEqual(c.buf, b"", "%s: bytes after the error response" % what)
        return body

    def assertAccepted(self, data, status=200, n=1, what=None):
        """Send `data`; read `n` responses, the first with `status`; the
        connection stays open. Returns the responses."""
        what = what or repr(data[:80])
        with self.srv.client() as c:
            c.send(data)
            out = [c.read_response() for _ in range(n)]
            self.assertEqual(out[0].status, status, "%s: %r" % (what, out[0].raw[:300]))
            self.assertTrue(c.is_open(), "%s: connection closed" % what)
        return out

    def assertHealthy(self):
        self.assertEqual(self.srv.http("GET", "/healthz").status, 200)


class Framing(StrictBase):
    """Content-Length / Transfer-Encoding: the smuggling-relevant cases."""

    def test_cl_and_te(self):
        for extra in (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                      b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                      b"content-length: 5\r\ntransfer-encoding: chunked\r\n"):
            with self.subTest(extra=extra):
                self.assertRejected(get(extra, method=b"POST") + b"0\r\n\r\n", 400)
        self.assertHealthy()

    def test_two_content_lengths(self):
        for extra in (b"Content-Length: 5\r\nContent-Length: 6\r\n",
                      b"Content-Length: 5\r\nContent-Length: 5\r\n",
                      b"Content-Length: 5\r\ncontent-length: 5\r\n",
                      b"Content-Length: 5, 5\r\n"):
            with self.subTest(extra=extra):
                self.assertRejected(get(extra, method=b"POST") + b"hello", 400)

    def test_bad_content_length(self):
        for v in (b"abc", b"5a", b"+5", b"-1", b"0x5", b"5 5", b"5.0", b"", b"99999999999999999999999"):
            with self.subTest(value=v):
                self.assertRejected(get(b"Content-Length: " + v + b"\r\n", method=b"POST") + b"hello",
                                    400)

    def test_te_not_final_chunked(self):
        # A coding we do not implement, chunked last: 501. chunked not last
        # (the body length is unknowable): 400.
        self.assertRejected(get(b"Transfer-Encoding: gzip, chunked\r\n", method=b"POST")
                            + b"0\r\n\r\n", 501)
        self.assertRejected(get(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                                method=b"POST") + b"0\r\n\r\n", 501)
        for te in (b"chunked, gzip", b"chunked, chunked", b"gzip", b"chunked;q=1", b"chunked, ,gzip"):
            with self.subTest(te=te):
                status = 501 if te == b"gzip" else 400
                self.assertRejected(get(b"Transfer-Encoding: " + te + b"\r\n", method=b"POST")
                                    + b"0\r\n\r\n", status)
        # Transfer-Encoding is not HTTP/1.0.
        self.assertRejected(get(b"Transfer-Encoding: chunked\r\n", method=b"POST",
                                version=b"HTTP/1.0") + b"0\r\n\r\n", 400)

    def test_bad_chunk_size(self):
        te = get(b"Transfer-Encoding: chunked\r\n", method=b"POST")
        bodies = {
            "not hex": b"zz\r\nhello\r\n0\r\n\r\n",
            "negative": b"-5\r\nhello\r\n0\r\n\r\n",
            "0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
            "overflow": b"1" + b"0" * 17 + b"\r\nhello\r\n0\r\n\r\n",
            "empty size": b"\r\nhello\r\n0\r\n\r\n",
            "bare LF": b"5\nhello\r\n0\r\n\r\n",
            "no CRLF after data": b"5\r\nhelloXX0\r\n\r\n",
        }
        for name, body in bodies.items():
            with self.subTest(name):
                self.assertRejected(te + body, 400, name)
        # The same, with the head and the body in separate writes (the body
        # decoder, not the fast path, sees it).
        self.assertRejected(None, 400, "split", chunks=[te, b"zz\r\nhello\r\n0\r\n\r\n"])
        self.assertHealthy()

    def test_chunked_body_over_max_body(self):
        # --max-body is 1 MiB here: 1 MiB + 1 bytes in 64 KiB chunks.
        te = get(b"Transfer-Encoding: chunked\r\n", method=b"POST")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        with self.srv.client() as c:
            c.send(te)
            got = None
            for _ in range(17):
                try:
                    c.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
            self.send_quietly(c, b"1\r\nx\r\n0\r\n\r\n")
            got = c.read_response()
            self.assertErrorResponse(got, 413, "chunked over max-body")
            self.assertTrue(c.wait_closed(3))


class Syntax(StrictBase):
    def test_obs_fold(self):
        self.assertRejected(get(b"X-A: one\r\n two\r\n"), 400)
        self.assertRejected(get(b"X-A: one\r\n\ttwo\r\n"), 400)

    def test_bare_cr(self):
        for data in (get(b"X-A: a\rb\r\n"),
                     b"GET /healthz HTTP/1.1\rHost: t\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\r\n"):
            with self.subTest(data=data):
                self.assertRejected(data, 400)

    def test_bare_lf(self):
        for data in (b"GET /healthz HTTP/1.1\nHost: t\n\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: b\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\n\n"):
            with self.subTest(data=data):
                self.assertRejected(data, 400)

    def test_whitespace_before_colon(self):
        self.assertRejected(b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400)
        self.assertRejected(get(b"X-A\t: b\r\n"), 400)
        self.assertRejected(get(b" X-A: b\r\n"), 400)

    def test_invalid_token_chars(self):
        for method in (b"G(T", b"GE@T", b"GE\x01T", b"G\x7fT", b"GET\xe9", b"GE,T"):
            with self.subTest(method=method):
                self.assertRejected(get(method=method), 400)
        for name in (b"X(A", b"X@A", b"X\x01A", b"X\x7fA", b"X\"A", b"X\xe9A", b"X/A", b"X{A}", b"X A"):
            with self.subTest(name=name):
                self.assertRejected(get(name + b": v\r\n"), 400)
        self.assertRejected(get(b": empty-name\r\n"), 400)
        self.assertRejected(get(b"NoColon\r\n"), 400)

    def test_control_char_in_value(self):
        for v in (b"a\x01b", b"a\x00b", b"a\x7fb", b"\x1b[31m", b"a\x0bb", b"a\x0cb"):
            with self.subTest(value=v):
                self.assertRejected(get(b"X-A: " + v + b"\r\n"), 400)
        # HTAB and obs-text (0x80-0xFF) are allowed in values.
        self.assertAccepted(get(b"X-A: a\tb\r\n"))
        self.assertAccepted(get(b"X-A: caf\xc3\xa9 \xff\r\n"))

    def test_request_line_syntax(self):
        for data in (b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz  HTTP/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz\r\nHost: t\r\n\r\n",
                     b"GET /hea lthz HTTP/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz#frag HTTP/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz http/1.1\r\nHost: t\r\n\r\n",
                     b"GET /healthz HTTP/1.1 \r\nHost: t\r\n\r\n",
                     b"GET\t/healthz HTTP/1.1\r\nHost: t\r\n\r\n"):
            with self.subTest(data=data):
                self.assertRejected(data, 400)


class Host(StrictBase):
    def test_missing_host(self):
        self.assertRejected(get(host=False), 400)
        # HTTP/1.0 does not need one.
        with self.srv.client() as c:
            c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)

    def test_two_hosts(self):
        self.assertRejected(get(b"Host: t\r\n"), 400)
        self.assertRejected(get(b"host: other\r\n"), 400)
        self.assertRejected(get(b"HOST: t\r\n"), 400)

    def test_bad_host(self):
        for v in (b"a b", b"t/x", b"t@evil", b"t\\x", b":80", b"t:8x", b"t:1:2", b"[::1",
                  b"[]:80", b"t]"):
            with self.subTest(host=v):
                self.assertRejected(b"GET /healthz HTTP/1.1\r\nHost: " + v + b"\r\n\r\n", 400)
        for v in (b"t:", b"t:8080", b"[::1]:8080", b"127.0.0.1"):
            with self.subTest(host=v):
                self.assertAccepted(b"GET /healthz HTTP/1.1\r\nHost: " + v + b"\r\n\r\n")

    def test_empty_host(self):
        """RFC 9112 3.2 / RFC 9110 4.2.1: an http URI has a non-empty host, so an
        empty Host is invalid: 400 (it used to be answered 200)."""
        for data in (b"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost:   \r\n\r\n",
                     b"GET /healthz HTTP/1.0\r\nHost:\r\n\r\n",
                     b"GET http://t/healthz HTTP/1.1\r\nHost:\r\n\r\n"):
            with self.subTest(data=data):
                self.assertRejected(data, 400)


class Versions(StrictBase):
    def test_higher_minor_versions_are_1_1(self):
        """RFC 9110 2.5: HTTP/1.2 ... 1.9 are processed as 1.1 (and answered
        with HTTP/1.1): keep-alive by default, Host required."""
        for minor in range(2, 10):
            v = b"HTTP/1.%d" % minor
            with self.subTest(version=v):
                rs = self.assertAccepted(get(version=v) + get(version=v), n=2)
                for r in rs:
                    self.assertTrue(r.raw.startswith(b"HTTP/1.1 200 "), r.raw[:40])
                self.assertRejected(get(version=v, host=False), 400)

    def test_unsupported_versions(self):
        for v in (b"HTTP/2.0", b"HTTP/3.0", b"HTTP/2.1", b"HTTP/9.9", b"HTTP/0.9"):
            with self.subTest(version=v):
                self.assertRejected(get(version=v), 505)
        for v in (b"HTTP/1", b"HTTP/1.10", b"HTTP/x.1", b"HTTPS/1.1", b"HTTP/11"):
            with self.subTest(version=v):
                self.assertRejected(get(version=v), 400)

    def test_expect_other(self):
        body = self.assertRejected(get(b"Expect: something-else\r\n"), 417)
        self.assertEqual(body["error"], "expectation_failed")
        # Mixed with 100-continue, and with a body the client holds back: the
        # server must answer 417 at once and must not invite the body with a
        # "100 Continue" first.
        with self.srv.client() as c:
            c.send(get(b"Expect: 100-continue, something-else\r\nContent-Length: 10\r\n",
                       method=b"POST"))
            r = c.read_response(timeout=3)
            self.assertNotEqual(r.status, 100, "100 Continue sent for a request that fails with 417")
            self.assertErrorResponse(r, 417)
            self.assertTrue(c.wait_closed(3))

    def test_expect_100_continue_is_not_417(self):
        self.assertAccepted(get(b"Expect: 100-continue\r\n"))
        self.assertAccepted(get(b"expect: 100-Continue\r\n"))


class Limits(StrictBase):
    def test_request_line_limit(self):
        # The request line (without CRLF) may be 8192 bytes; 8193 is 414.
        prefix, suffix = b"GET /healthz?", b" HTTP/1.1"
        n = 8192 - len(prefix) - len(suffix)
        self.assertAccepted(prefix + b"a" * n + suffix + b"\r\nHost: t\r\n\r\n")
        self.assertRejected(prefix + b"a" * (n + 1) + suffix + b"\r\nHost: t\r\n\r\n", 414)

    def test_414_before_line_ends(self):
        with self.srv.client() as c:
            c.send(b"GET /healthz?" + b"a" * 9000)  # no SP, no version, no CRLF
            r = c.read_response(timeout=3)
            self.assertErrorResponse(r, 414, "unfinished long line")
            self.assertTrue(c.wait_closed(3))
        # A long method is a long request line too.
        self.assertRejected(b"G" * 9000 + b" / HTTP/1.1\r\nHost: t\r\n\r\n", 414)

    def head_of_size(self, size):
        """A GET /healthz head of exactly `size` bytes."""
        base = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n"
        return base[:-4] + b"p" * (size - len(base)) + b"\r\n\r\n"

    def test_header_block_limit(self):
        # The whole head (request line, fields, final CRLF) may be 16 KiB.
        h = self.head_of_size(16384)
        self.assertEqual(len(h), 16384)
        self.assertAccepted(h)
        self.assertRejected(self.head_of_size(16385), 431)
        # Many ordinary fields adding up past 16 KiB.
        many = b"".join(b"X-F%02d: %s\r\n" % (i, b"v" * 990) for i in range(20))
        self.assertRejected(get(many), 431)

    def test_431_before_head_ends(self):
        with self.srv.client() as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            for i in range(20):
                try:
                    c.send(b"X-F%02d: %s\r\n" % (i, b"v" * 990))
                except (BrokenPipeError, ConnectionResetError):
                    break
            r = c.read_response(timeout=3)
            self.assertErrorResponse(r, 431, "unfinished big head")
            self.assertTrue(c.wait_closed(3))

    def test_header_count_limit(self):
        fields = lambda n: b"".join(b"X-F%d: v\r\n" % i for i in range(n))
        self.assertAccepted(get(fields(99)))        # Host + 99 = 100 fields
        self.assertRejected(get(fields(100)), 431)  # Host + 100 = 101 fields

    def test_body_over_max_body_before_body(self):
        with self.srv.client() as c:
            c.send(get(b"Content-Length: 10000000\r\n", method=b"POST"))
            t0 = time.monotonic()
            r = c.read_response(timeout=3)  # the body is never sent
            self.assertErrorResponse(r, 413, "CL 10 MB")
            self.assertLess(time.monotonic() - t0, scaled(3))
            self.assertTrue(c.wait_closed(3))
        # The same on a route that does not exist and with the body underway.
        with self.srv.client() as c:
            c.send(get(b"Content-Length: 10000000\r\n", target=b"/nope", method=b"PUT") + b"x" * 1000)
            self.assertErrorResponse(c.read_response(timeout=3), 413, "CL 10 MB, some body")
            self.assertTrue(c.wait_closed(3))
        self.assertHealthy()


class SmallBody(StrictBase):
    server_args = ("--workers", "1", "--max-body", "1000")

    def test_max_body_boundary(self):
        # Exactly --max-body is accepted (405: /healthz is GET only), one more is 413.
        self.assertAccepted(get(b"Content-Length: 1000\r\n", method=b"POST") + b"b" * 1000, 405)
        self.assertRejected(get(b"Content-Length: 1001\r\n", method=b"POST"), 413)
        te = get(b"Transfer-Encoding: chunked\r\n", method=b"POST")
        self.assertAccepted(te + b"3e8\r\n" + b"b" * 1000 + b"\r\n0\r\n\r\n", 405)
        self.assertRejected(te + b"3e9\r\n" + b"b" * 1001 + b"\r\n0\r\n\r\n", 413)


class HeaderTimeout(StrictBase):
    server_args = ("--workers", "1", "--header-timeout", "1s")

    def test_half_a_head_gets_408(self):
        with self.srv.client(timeout=10) as c:
            t0 = time.monotonic()
            c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow")
            r = c.read_response(timeout=10)
            took = time.monotonic() - t0
            self.assertErrorResponse(r, 408)
            self.assertGreater(took, 0.8)
            self.assertLess(took, scaled(4))
            self.assertTrue(c.wait_closed(3))

    def test_trickle_does_not_extend_the_deadline(self):
        # Slowloris: one byte every 200 ms never completes a head; the timeout
        # counts from the first byte, not from the last.
        with self.srv.client(timeout=10) as c:
            t0 = time.monotonic()
            got = None
            for ch in b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow-Header: " + b"z" * 200:
                try:
                    c.send(bytes([ch]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                if not c.is_open():
                    break
                time.sleep(0.2)
                if time.monotonic() - t0 > scaled(6):
                    break
            got = c.read_response(timeout=5)
            self.assertErrorResponse(got, 408)
            self.assertLess(time.monotonic() - t0, scaled(4))

    def test_complete_requests_are_not_timed_out(self):
        with self.srv.client() as c:
            for _ in range(3):
                c.send(OK_REQ)
                self.assertEqual(c.read_response().status, 200)
                time.sleep(0.5)  # idle between requests: keep-alive, not the header timeout
            self.assertTrue(c.is_open())


class Methods(StrictBase):
    def test_connect_is_not_implemented(self):
        """CONNECT (authority-form) with no CONNECT route: 501, not 404; the
        connection stays usable (the request itself is well-formed)."""
        for target in (b"t:443", b"example.com:80", b"[::1]:8080"):
            with self.subTest(target=target):
                with self.srv.client() as c:
                    c.send(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"
                           + OK_REQ)
                    r = c.read_response()
                    self.assertEqual(r.status, 501, r.raw[:300])
                    self.assertEqual(r.header("Content-Type"), "application/json")
                    self.assertEqual(json.loads(r.body)["error"], "not_implemented")
                    self.assertEqual(c.read_response().status, 200)
        # A malformed CONNECT target is still the parser's 400.
        self.assertRejected(b"CONNECT /x HTTP/1.1\r\nHost: t\r\n\r\n", 400)


class Accepted(StrictBase):
    def test_lower_case_names(self):
        self.assertAccepted(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        self.assertAccepted(b"GET /healthz HTTP/1.1\r\nhOsT: t\r\n\r\n")
        # content-length is honoured: the 5 body bytes are not a request.
        rs = self.assertAccepted(b"POST /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
                                 + OK_REQ, 405, n=2)
        self.assertEqual(rs[1].status, 200)
        # transfer-encoding is honoured: the chunked body is consumed exactly.
        rs = self.assertAccepted(b"POST /healthz HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\n\r\n" + OK_REQ, 405, n=2)
        self.assertEqual(rs[1].status, 200)
        rs = self.assertAccepted(b"POST /healthz HTTP/1.1\r\nHOST: t\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\n\r\n" + OK_REQ, 405, n=2)
        self.assertEqual(rs[1].status, 200)
        # connection: close in lower case.
        with self.srv.client() as c:
            c.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.wait_closed(3))

    def test_x_forwarded_for(self):
        self.assertAccepted(get(b"X-Forwarded-For: 203.0.113.7\r\n"))
        self.assertAccepted(get(b"X-Forwarded-For: 203.0.113.7, 198.51.100.1, 2001:db8::1\r\n"
                                b"X-Forwarded-Proto: https\r\nForwarded: for=192.0.2.60;proto=http\r\n"))
        self.assertAccepted(get(b"x-forwarded-for: 203.0.113.7\r\nx-forwarded-for: 10.0.0.1\r\n"))

    def test_leading_empty_line(self):
        # RFC 9112 2.2: at least one empty line before the request line is ignored.
        self.assertAccepted(b"\r\n" + OK_REQ)

    def test_rejections_do_not_hurt_others(self):
        # A rejected connection while another one is mid-request.
        with self.srv.client() as ok:
            ok.send(b"GET /healthz HTTP/1.1\r\n")
            self.assertRejected(b"GET /healthz HTTP/1.1\nHost: t\n\n", 400)
            ok.send(b"Host: t\r\n\r\n")
            self.assertEqual(ok.read_response().status, 200)


if __name__ == "__main__":
    pxtest.main()
