#!/usr/bin/python3
"""13-listen: every kind of --listen address end to end: unix:PATH (served over
AF_UNIX, stale socket file replaced, removed on exit, a non-socket refused),
fd:N (a listening socket created here and inherited), TCP and unix at once,
several TCP listeners, and IPv6 [::1]:0 when the host has IPv6 loopback."""

import os
import socket
import subprocess

import pxtest
from pxtest import PxTestCase, run_plexus, scaled

REQ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Listen(PxTestCase):
    def setUp(self):
        super().setUp()
        self.require_local()

    def assertServes(self, addr, n=3):
        """`n` requests on separate connections to `addr` ((host, port) or a path),
        plus one through http.client."""
        for _ in range(n):
            r = pxtest.raw_request(addr, REQ)
            self.assertEqual(r.status, 200)
        self.assertEqual(pxtest.http_request(addr, "GET", "/healthz").status, 200)

    def sock_path(self, name="plexus.sock"):
        path = os.path.join(self.short_dir(), name)
        self.assertLess(len(path.encode()), 108)
        return path

    # ---- unix ------------------------------------------------------------------

    def test_unix(self):
        path = self.sock_path()
        srv = self.start_server("--workers", "2", listen=["unix:" + path])
        self.assertEqual(srv.listeners, ["unix:" + path])
        self.assertEqual(srv.addr, path)
        self.assertServes(path, 10)
        # Keep-alive over AF_UNIX too.
        with srv.client() as c:
            for _ in range(3):
                c.send(REQ)
                self.assertEqual(c.read_response().status, 200)
        self.assertStopsCleanly(srv)
        self.assertFalse(os.path.exists(path), "socket file left behind")

    def test_unix_stale_socket_replaced(self):
        path = self.sock_path()
        # What a crashed previous run leaves: a socket file nobody listens on.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        self.assertTrue(os.path.exists(path))
        with self.assertRaises(ConnectionRefusedError):
            pxtest.connect(path).close()
        srv = self.start_server("--workers", "1", listen=["unix:" + path])
        self.assertServes(path)
        # And after a kill -9 (no clean-up at all), a restart takes over again.
        srv.kill()
        self.assertTrue(os.path.exists(path))
        srv.start()
        self.assertServes(path)
        self.assertStopsCleanly(srv)

    def test_unix_path_not_a_socket(self):
        path = self.sock_path("regular-file")
        with open(path, "w") as f:
            f.write("precious")
        p = run_plexus(["--listen", "unix:" + path, "--workers", "1"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("unix:" + path, p.stderr)
        with open(path) as f:
            self.assertEqual(f.read(), "precious")

    def test_unix_path_in_use(self):
        path = self.sock_path()
        first = self.start_server("--workers", "1", listen=["unix:" + path])
        rc, text = self.run_until_exit("--listen", "unix:" + path, "--workers", "1")
        if rc is None:
            self.assertStopsCleanly(first)
            # A live server's socket file is never unlinked and taken over (the
            # listener probes it with connect(): only ECONNREFUSED means stale).
            self.assertNotIn("listening on unix:" + path, text,
                             "a second server took over a live server's socket")
            self.fail("second server neither failed nor listened:\n" + text)
        self.assertEqual(rc, 2, text)
        self.assertIn(path, text)
        self.assertServes(path)
        self.assertStopsCleanly(first)

    # ---- fd:N ------------------------------------------------------------------------

    def test_fd_tcp(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        port = ls.getsockname()[1]
        fd = ls.fileno()
        srv = self.start_server("--workers", "2", listen=["fd:%d" % fd], pass_fds=(fd,))
        ls.close()  # the server's copy is the only one now
        self.assertEqual(srv.listeners, ["fd:%d" % fd])
        self.assertServes(("127.0.0.1", port), 10)
        self.assertStopsCleanly(srv)
        with self.assertRaises(ConnectionRefusedError):
            pxtest.connect(("127.0.0.1", port)).close()

    def test_fd_unix(self):
        path = self.sock_path()
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        ls.listen(16)
        fd = ls.fileno()
        srv = self.start_server("--workers", "2", listen=["fd:%d" % fd], pass_fds=(fd,))
        ls.close()
        self.assertServes(path)
        self.assertStopsCleanly(srv)
        os.unlink(path)  # ours, not the server's: it did not create it

    def test_fd_not_listening(self):
        cases = []
        bound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        bound.bind(("127.0.0.1", 0))  # never listen()ed
        cases.append(bound)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cases.append(udp)
        r, w = os.pipe()
        try:
            for fd in [s.fileno() for s in cases] + [r]:
                with self.subTest(fd=fd):
                    p = subprocess.run([pxtest.PLEXUS_BIN, "--listen", "fd:%d" % fd, "--workers", "1"],
                                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                       pass_fds=(fd,), timeout=scaled(10), cwd=self.out_dir)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("--listen fd:%d" % fd, p.stderr)
            # A descriptor that is not open in the server at all.
            p = run_plexus(["--listen", "fd:1000", "--workers", "1"])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("fd:1000", p.stderr)
        finally:
            for s in cases:
                s.close()
            os.close(r)
            os.close(w)

    # ---- several listeners -----------------------------------------------------------

    def test_tcp_and_unix(self):
        path = self.sock_path()
        srv = self.start_server("--workers", "2", listen=["127.0.0.1:0", "unix:" + path])
        self.assertEqual(len(srv.listeners), 2)
        self.assertTrue(srv.listeners[0].startswith("127.0.0.1:"))
        self.assertEqual(srv.listeners[1], "unix:" + path)
        self.assertServes((srv.host, srv.port))
        self.assertServes(path)
        self.assertStopsCleanly(srv)
        self.assertFalse(os.path.exists(path))

    def test_several_tcp(self):
        srv = self.start_server("--workers", "2", listen=["127.0.0.1:0", "127.0.0.1:0", "localhost:0"])
        self.assertEqual(len(srv.listeners), 3)
        addrs = [pxtest.parse_address(a) for a in srv.listeners]
        self.assertEqual(len({a[1] for a in addrs}), 3, "ports should differ: %s" % srv.listeners)
        for a in addrs:
            self.assertServes(a, 2)
        self.assertStopsCleanly(srv)

    def test_ipv6_loopback(self):
        if not pxtest.has_ipv6_loopback():
            self.skip_allowed("no-ipv6", "no IPv6 loopback on this host")
        srv = self.start_server("--workers", "2", listen=["[::1]:0"])
        self.assertTrue(srv.listeners[0].startswith("[::1]:"), srv.listeners)
        self.assertEqual(srv.host, "::1")
        self.assertServes(("::1", srv.port))
        self.assertTrue(srv.url.startswith("http://[::1]:"))
        # IPv6 only: the IPv4 loopback on that port is not this server.
        with self.assertRaises(OSError):
            pxtest.connect(("127.0.0.1", srv.port), timeout=1).close()
        self.assertStopsCleanly(srv)


if __name__ == "__main__":
    pxtest.main()
