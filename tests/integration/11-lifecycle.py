#!/usr/bin/python3
"""11-lifecycle: start, serve /healthz, stop on SIGTERM and SIGINT with exit 0
(leak-free under ASan), bounded graceful shutdown with a slow client in
flight, SIGHUP re-opening a rotated --log-file, and a second server on a port
that is taken failing with exit 2."""

import os
import signal
import time

import pxtest
from pxtest import PxTestCase, scaled

REQ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Lifecycle(PxTestCase):
    def check_healthz(self, r):
        self.assertEqual(r.status, 200)
        ctype = (r.header("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json":  # the HTTP layer's /healthz
            self.assertEqual(r.json(), {"status": "ok"})

    def test_healthz(self):
        srv = self.start_server("--workers", "2", external_ok=True)
        self.check_healthz(srv.http("GET", "/healthz"))
        # Keep-alive: several requests on one connection, pipelined too.
        with srv.client() as c:
            c.send(REQ)
            self.check_healthz(c.read_response())
            c.send(REQ + REQ)
            self.check_healthz(c.read_response())
            self.check_healthz(c.read_response())

    def _stop_with(self, sig):
        srv = self.start_server("--workers", "2")
        self.check_healthz(srv.http("GET", "/healthz"))
        # Nothing in flight: no reason to wait for the 10 s default grace period.
        took = self.assertStopsCleanly(srv, sig, timeout=10)
        self.assertLess(took, scaled(3), "an idle server took %.2fs to stop" % took)
        log = srv.log_text()
        self.assertIn("%s: shutting down" % signal.Signals(sig).name, log)
        self.assertIn("stopped", log)

    def test_sigterm(self):
        self._stop_with(signal.SIGTERM)

    def test_sigint(self):
        self._stop_with(signal.SIGINT)

    def test_sigterm_with_idle_keepalive_connections(self):
        srv = self.start_server("--workers", "2")
        clients = []
        for _ in range(10):
            c = srv.client()
            c.send(REQ)
            self.check_healthz(c.read_response())
            clients.append(c)
        took = self.assertStopsCleanly(srv, signal.SIGTERM, timeout=10)
        self.assertLess(took, scaled(3), "idle keep-alive connections delayed the stop")
        for c in clients:
            self.assertTrue(c.wait_closed(1), "connection left open by a stopped server")
            c.close()

    def test_sigterm_waits_at_most_shutdown_timeout(self):
        srv = self.start_server("--workers", "1", "--shutdown-timeout", "1s")
        with srv.client() as slow:
            slow.send(REQ[: len(REQ) // 2])  # half a request head, then silence
            time.sleep(0.2)
            self.assertTrue(slow.is_open())
            took = self.assertStopsCleanly(srv, signal.SIGTERM, timeout=10)
            self.assertLess(took, 1.0 + scaled(1.5),
                            "shutdown took %.2fs with --shutdown-timeout 1s" % took)
            self.assertTrue(slow.wait_closed(1), "the slow client was not disconnected")

    def test_sighup_reopens_log_file(self):
        log = os.path.join(self.out_dir, "server.log")
        rotated = log + ".1"
        srv = self.start_server("--workers", "1", log_file=log)
        self.check_healthz(srv.http("GET", "/healthz"))
        os.rename(log, rotated)
        srv.proc.send_signal(signal.SIGHUP)

        def reopened():
            try:
                with open(log) as f:
                    return "re-opened" in f.read()
            except FileNotFoundError:
                return False

        pxtest.wait_for(reopened, 5, what="a new %s after SIGHUP" % log)
        self.assertTrue(srv.running(), "SIGHUP stopped the server")
        self.check_healthz(srv.http("GET", "/healthz"))
        self.assertStopsCleanly(srv)
        with open(rotated) as f:
            old = f.read()
        with open(log) as f:
            new = f.read()
        self.assertIn("listening on", old)
        self.assertNotIn("stopped", old)
        self.assertIn("SIGTERM: shutting down", new)
        self.assertIn("stopped", new)
        self.assertNotIn("listening on", new)

    def test_second_server_same_port(self):
        first = self.start_server("--workers", "2")
        addr = "%s:%d" % (first.host, first.port)
        rc, text = self.run_until_exit("--listen", addr, "--workers", "1")
        if rc is None:
            # SO_REUSEPORT must not let the kernel add a second server to the first one's group.
            self.assertNotIn("listening on " + addr, text, "a second server bound the same port")
            self.fail("second server neither failed nor listened:\n" + text)
        self.assertEqual(rc, 2, text)
        lines = text.strip().splitlines()
        self.assertIn(addr, lines[-1])
        self.assertIn("--listen", lines[-1])
        # The first one is unaffected.
        self.check_healthz(first.http("GET", "/healthz"))
        self.assertStopsCleanly(first)


if __name__ == "__main__":
    pxtest.main()
