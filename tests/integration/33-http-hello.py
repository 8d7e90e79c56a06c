#!/usr/bin/python3
"""33-http-hello: examples/hello, the TechEmpower-style example written only
against the public API: exact bodies and types for GET /plaintext and /json,
404 elsewhere, 405 (with Allow) for other methods, HEAD, keep-alive and
pipelining, with 1 and 2 workers, on TCP and on a Unix socket; it stops
cleanly on SIGTERM (exit 0, so no sanitizer report either).
"""

import os
import threading

import pxtest
from pxtest import PxTestCase

PLAIN = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'


class Hello(PxTestCase):
    def tearDown(self):
        pxtest.quiesce(self.servers)
        super().tearDown()

    def stop_cleanly(self, srv):
        pxtest.quiesce([srv])
        self.assertStopsCleanly(srv)

    def start_hello(self, *args, **kw):
        # A missing build product is a failure, never a skip.
        self.assertTrue(os.path.exists(os.path.join(pxtest.EXAMPLES_DIR, "hello")),
                        "examples/hello is not built (in %s)" % pxtest.EXAMPLES_DIR)
        return self.start_server(*args, example="hello", **kw)

    def check_endpoints(self, srv):
        r = srv.http("GET", "/plaintext")
        self.assertEqual((r.status, r.body), (200, PLAIN))
        self.assertEqual(r.header("Content-Type"), "text/plain")
        self.assertEqual(r.header("Content-Length"), "13")
        self.assertEqual(r.header("Server"), "plexus")
        self.assertIsNotNone(r.header("Date"))

        r = srv.http("GET", "/json")
        self.assertEqual((r.status, r.body), (200, JSON))
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(r.header("Content-Length"), str(len(JSON)))

        for path in ("/", "/plaintext/", "/plaintext/x", "/jsonx", "/PLAINTEXT", "/favicon.ico"):
            with self.subTest(path=path):
                r = srv.http("GET", path)
                self.assertEqual(r.status, 404)
                self.assertEqual(r.header("Content-Type"), "application/json")
                self.assertEqual(set(r.json()), {"error", "message"})

        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                r = srv.http(method, "/plaintext", body=b"x")
                self.assertEqual(r.status, 405)
                self.assertEqual(sorted(m.strip() for m in r.header("Allow").split(",")), ["GET", "HEAD"])
                self.assertEqual(r.json()["error"], "method_not_allowed")

        with srv.client() as c:
            c.send(b"HEAD /json HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            h = c.read_response(method="HEAD")
            self.assertEqual((h.status, h.header("Content-Length"), h.body), (200, str(len(JSON)), b""))
            self.assertEqual(c.read_response().body, PLAIN)

    def check_pipelined(self, srv, n=500):
        reqs = [b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n"]
        with srv.client(timeout=20) as c:
            c.send(b"".join(reqs[i % 2] for i in range(n)))
            for i in range(n):
                r = c.read_response(timeout=20)
                self.assertEqual((i, r.status, r.body), (i, 200, PLAIN if i % 2 == 0 else JSON))
            self.assertTrue(c.is_open())

    def check_concurrent(self, srv, conns=16, per_conn=50):
        errors = []

        def client():
            try:
                with srv.client(timeout=20) as c:
                    for _ in range(per_conn):
                        c.send(b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
                        r = c.read_response(timeout=20)
                        if (r.status, r.body) != (200, JSON):
                            errors.append(r)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(pxtest.scaled(60))
        self.assertEqual(errors, [])

    def test_one_worker(self):
        srv = self.start_hello("--workers", "1")
        self.check_endpoints(srv)
        self.check_pipelined(srv)
        self.stop_cleanly(srv)

    def test_two_workers(self):
        srv = self.start_hello("--workers", "2")
        self.check_endpoints(srv)
        self.check_pipelined(srv)
        self.check_concurrent(srv)
        self.stop_cleanly(srv)

    def test_unix_socket(self):
        path = os.path.join(self.short_dir(), "hello.sock")
        srv = self.start_hello("--workers", "2", listen=("unix:" + path,))
        self.assertEqual(srv.addr, path)
        self.check_endpoints(srv)
        self.check_pipelined(srv, 200)
        self.check_concurrent(srv, conns=8, per_conn=20)
        self.stop_cleanly(srv)

    def test_tcp_and_unix_together(self):
        path = os.path.join(self.short_dir(), "hello2.sock")
        srv = self.start_hello("--workers", "1", listen=("127.0.0.1:0", "unix:" + path))
        self.assertIsNotNone(srv.port)
        r = pxtest.http_request(path, "GET", "/plaintext")
        self.assertEqual(r.body, PLAIN)
        r = pxtest.http_request((srv.host, srv.port), "GET", "/json")
        self.assertEqual(r.body, JSON)
        self.stop_cleanly(srv)

    def test_bad_arguments(self):
        binary = os.path.join(pxtest.EXAMPLES_DIR, "hello")
        self.assertTrue(os.path.exists(binary), "examples/hello is not built (%s)" % binary)
        for args in (["--workers", "x"], ["--bogus"], ["--listen", "nonsense"]):
            with self.subTest(args=args):
                p = pxtest.run_plexus(args, binary=binary)
                # 99 under ASan: a leak (px_server_new without px_server_free).
                self.assertEqual(p.returncode, 2, p.stderr)


if __name__ == "__main__":
    pxtest.main()
