#!/usr/bin/python3
"""One port, many protocols (issue 12, the sniffer and pass-through): the real
plexus binary with --forward rules in front of small Python backends
(fwdbackends.py), all on 127.0.0.1.

Covered: the ssh probe next to HTTP on one port; http-host routing to a
second HTTP server; regex, xmpp and openvpn probes with synthetic first bytes;
the default rule for silent clients (and the timeout without one); unknown
bytes; PROXY v1/v2 sent to a backend; PROXY v1/v2 accepted from a trusted
CIDR (the access log shows the client from the header, also through a
forward rule) and refused from an untrusted one; half-close both ways;
backpressure both ways with 50 MB (RSS bounded); a 20 MB echo both ways
(checksums); the idle timeout; the per-rule connection limit; an unreachable
backend; a unix socket backend; metrics per rule; bad flags and config keys
(exit 2 naming the key). The real sshd and TLS-by-SNI tests are in
16-forward-real.py.
"""

import hashlib
import http.server
import json
import os
import socket
import threading
import time

import pxtest
from pxtest import PxTestCase, scaled, wait_for
import fwdbackends as fb

COMMON = ("--workers", "2", "--data-dir", "var")


def metrics(srv):
    r = srv.http("GET", "/metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        out[k] = int(v)
    return out


def metric(srv, name):
    return metrics(srv).get(name, 0)


def closed_without_data(s, timeout=5.0):
    """The server closed s (EOF or reset) without sending anything."""
    s.settimeout(scaled(timeout))
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True


class Sniff(PxTestCase):
    def backend(self, handler, **kw):
        b = fb.Backend(handler, **kw)
        self.addCleanup(b.close)
        return b

    def client(self, srv, timeout=5.0):
        s = pxtest.connect(srv.addr, timeout)
        self.addCleanup(s.close)
        return s

    # ---- probes ------------------------------------------------------------------

    def test_ssh_and_http_share_the_port(self):
        b = self.backend(fb.banner_echo(b"SSH-2.0-Backend\r\n"))
        srv = self.start_server(*COMMON, "--forward", "ssh=" + b.target)
        s = self.client(srv)
        s.sendall(b"SSH-2.0-Client\r\n")
        self.assertEqual(fb.recv_exact(s, 17 + 16), b"SSH-2.0-Backend\r\nSSH-2.0-Client\r\n")
        s.sendall(b"more bytes")
        self.assertEqual(fb.recv_exact(s, 10), b"more bytes")
        # The same port still serves HTTP, meanwhile.
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(fb.recv_all(s), b"")
        m = metrics(srv)
        self.assertEqual(m['plexus_forward_connections_total{rule="ssh"}'], 1)
        self.assertEqual(m['plexus_forward_bytes_total{rule="ssh",direction="in"}'], 26)
        self.assertEqual(m['plexus_forward_bytes_total{rule="ssh",direction="out"}'], 17 + 26)
        wait_for(lambda: metric(srv, 'plexus_forward_connections_open{rule="ssh"}') == 0, 5,
                 what="the proxied connection to be closed")
        self.assertStopsCleanly(srv)

    def test_probes_regex_xmpp_openvpn(self):
        backends = {n: self.backend(fb.banner_echo(n.encode() + b"\n"))
                    for n in ("hello", "xmpp", "openvpn")}
        srv = self.start_server(*COMMON,
                                "--forward", "hello=%s,probe=regex:^HELLO [0-9]{2},x" % backends["hello"].target,
                                "--forward", "xmpp=" + backends["xmpp"].target,
                                "--forward", "openvpn=" + backends["openvpn"].target)
        first = {
            "hello": b"HELLO 42,x\n",
            "xmpp": (b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' "
                     b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"),
            # 2-byte length 14, P_CONTROL_HARD_RESET_CLIENT_V2 (7 << 3), session id, ack 0, packet id 0
            "openvpn": b"\x00\x0e\x38" + bytes(range(1, 9)) + b"\x00" + b"\x00\x00\x00\x00",
        }
        for name, data in first.items():
            with self.subTest(probe=name):
                s = self.client(srv)
                # Cut in two: the sniffer waits for the rest of a regex / stream header.
                s.sendall(data[:5])
                time.sleep(0.05)
                s.sendall(data[5:])
                banner = name.encode() + b"\n"
                self.assertEqual(fb.recv_exact(s, len(banner) + len(data)), banner + data)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        # "HELLO" and a wrong number of digits is not the regex: nothing matches.
        s = self.client(srv)
        s.sendall(b"HELLO 4x\n")
        self.assertTrue(closed_without_data(s))
        self.assertEqual(metric(srv, 'plexus_sniff_closed_total{reason="unknown"}'), 1)
        for b in backends.values():
            self.assertEqual(b.accepted, 1)

    def test_http_host_routes_to_another_server(self):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("backend2 host=%s path=%s" % (self.headers["Host"], self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        srv = self.start_server(*COMMON, "--forward",
                                "http-host:*.api.example.com=127.0.0.1:%d" % httpd.server_address[1])
        r = pxtest.http_request(srv.addr, "GET", "/v1/x", {"Host": "eu.api.example.com:8443"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"backend2 host=eu.api.example.com:8443 path=/v1/x")
        r = pxtest.http_request(srv.addr, "GET", "/healthz", {"Host": "www.example.com"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'{"status":"ok"}')
        # The head arrives in pieces: the sniffer waits for the Host line.
        s = self.client(srv)
        for piece in (b"GET /p HTTP/1.1\r\n", b"Ho", b"st: a.api.example.com\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.03)
        self.assertIn(b"backend2 host=a.api.example.com path=/p", fb.recv_until(s, b"path=/p"))

    # ---- silence, unknown bytes -----------------------------------------------------

    def test_default_rule_for_a_silent_client(self):
        b = self.backend(fb.banner_echo(b"220 server speaks first\r\n"))
        srv = self.start_server(*COMMON, "--sniff-timeout", "300ms", "--forward",
                                "default=" + b.target)
        s = self.client(srv)
        t0 = time.monotonic()
        self.assertEqual(fb.recv_exact(s, 25), b"220 server speaks first\r\n")
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        s.sendall(b"QUIT\r\n")
        self.assertEqual(fb.recv_exact(s, 6), b"QUIT\r\n")
        # Clients that speak are not sent there.
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertEqual(b.accepted, 1)

    def test_silent_client_without_default_is_closed(self):
        b = self.backend(fb.echo)
        srv = self.start_server(*COMMON, "--sniff-timeout", "300ms", "--forward", "ssh=" + b.target)
        s = self.client(srv)
        t0 = time.monotonic()
        self.assertTrue(closed_without_data(s))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(metric(srv, 'plexus_sniff_closed_total{reason="timeout"}'), 1)
        # Unknown bytes are closed at once; so are TLS records with no TLS here.
        s = self.client(srv)
        s.sendall(b"\x01\x02\x03 junk")
        self.assertTrue(closed_without_data(s, 2))
        s = self.client(srv)
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        self.assertTrue(closed_without_data(s, 2))
        m = metrics(srv)
        self.assertEqual(m['plexus_sniff_closed_total{reason="unknown"}'], 1)
        self.assertEqual(m['plexus_sniff_closed_total{reason="no_tls"}'], 1)
        self.assertEqual(b.accepted, 0)

    # ---- PROXY protocol ---------------------------------------------------------------

    def test_proxy_protocol_to_the_backend(self):
        b = self.backend(fb.proxy_echo)
        srv = self.start_server(*COMMON, "--forward", "ssh=%s,proxy=v1" % b.target,
                                "--forward", "vpn=%s,proxy=v2,probe=openvpn" % b.target)
        for first, ver in ((b"SSH-2.0-x\r\n", 1), (b"\x00\x0e\x38" + bytes(12), 2)):
            s = self.client(srv)
            s.sendall(first)
            cport = s.getsockname()[1]
            seen = ("SEEN %r\n" % ((ver, "127.0.0.1", cport, "127.0.0.1", srv.port),)).encode()
            self.assertEqual(fb.recv_exact(s, len(seen) + len(first)), seen + first)

    def test_proxy_protocol_from_a_trusted_source(self):
        b = self.backend(fb.proxy_echo)
        srv = self.start_server(*COMMON, "--access-log", "text", "--proxy-protocol-from",
                                "10.0.0.0/8", "--proxy-protocol-from", "127.0.0.1",
                                "--forward", "ssh=%s,proxy=v2" % b.target)
        # v1, then HTTP: the access log names the client from the header.
        s = self.client(srv)
        s.sendall(fb.proxy_v1_line("203.0.113.9", 4242, "198.51.100.1", 443) +
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(b"200 OK", fb.recv_all(s))
        srv.wait_log(r"203\.0\.113\.9:4242 \"GET /healthz")
        # v2 with IPv6, header and request in separate segments.
        s = self.client(srv)
        s.sendall(fb.proxy_v2_header("2001:db8::9", 5353, "2001:db8::1", 443))
        time.sleep(0.05)
        s.sendall(b"GET /healthz?v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(b"200 OK", fb.recv_all(s))
        srv.wait_log(r"\[2001:db8::9\]:5353 \"GET /healthz\?v2")
        # Through a forward rule: the backend's PROXY header carries the real client.
        s = self.client(srv)
        s.sendall(fb.proxy_v1_line("192.0.2.55", 60000, "198.51.100.1", 443) + b"SSH-2.0-x\r\n")
        seen = ("SEEN %r\n" % ((2, "192.0.2.55", 60000, "198.51.100.1", 443),)).encode()
        self.assertEqual(fb.recv_exact(s, len(seen) + 11), seen + b"SSH-2.0-x\r\n")
        # No header from a trusted source is fine too.
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        self.assertEqual(metric(srv, "plexus_proxy_protocol_accepted_total"), 3)

    def test_proxy_protocol_from_an_untrusted_source_is_refused(self):
        b = self.backend(fb.banner_echo(b"x"))
        # Trust only 10/8 and an IPv6 range: 127.0.0.1 is not in them.
        srv = self.start_server(*COMMON, "--proxy-protocol-from", "10.0.0.0/8",
                                "--proxy-protocol-from", "2001:db8::/32",
                                "--forward", "ssh=" + b.target)
        for hdr in (fb.proxy_v1_line("203.0.113.9", 4242, "198.51.100.1", 443),
                    fb.proxy_v2_header("203.0.113.9", 4242, "198.51.100.1", 443)):
            s = self.client(srv)
            s.sendall(hdr + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(closed_without_data(s))
        self.assertEqual(metric(srv, 'plexus_sniff_closed_total{reason="untrusted_proxy"}'), 2)
        srv.wait_log(r"PROXY protocol header from 127\.0\.0\.1:\d+, which --proxy-protocol-from "
                     r"does not trust")
        # A malformed header from a trusted source is refused too.
        srv2 = self.start_server("--data-dir", "var2", "--proxy-protocol-from", "127.0.0.0/8")
        s = self.client(srv2)
        s.sendall(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        self.assertTrue(closed_without_data(s))
        self.assertEqual(metric(srv2, 'plexus_sniff_closed_total{reason="bad_proxy"}'), 1)
        self.assertEqual(b.accepted, 0)

    # ---- half-close -----------------------------------------------------------------

    def test_half_close_client_to_backend(self):
        def reply_after_eof(c, b):
            got = fb.recv_all(c, 10)
            b.note(("got", got))
            c.sendall(b"you sent %d bytes" % len(got))
            c.shutdown(socket.SHUT_WR)

        b = self.backend(reply_after_eof)
        srv = self.start_server(*COMMON, "--forward", "ssh=" + b.target)
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n" + b"a" * 100000)
        s.shutdown(socket.SHUT_WR)  # the backend sees EOF; its reply still comes back
        self.assertEqual(fb.recv_all(s), b"you sent 100011 bytes")
        b.wait_event(lambda e: e[0] == "got" and len(e[1]) == 100011)

    def test_half_close_backend_to_client(self):
        def speak_then_listen(c, b):
            c.sendall(b"hello, then my FIN\n")
            c.shutdown(socket.SHUT_WR)
            b.note(("late", fb.recv_all(c, 10)))

        b = self.backend(speak_then_listen)
        srv = self.start_server(*COMMON, "--sniff-timeout", "200ms", "--forward",
                                "default=" + b.target)
        s = self.client(srv)
        self.assertEqual(fb.recv_all(s), b"hello, then my FIN\n")  # EOF from the backend
        # Our direction still flows after the backend's FIN.
        for i in range(3):
            s.sendall(b"late %d;" % i)
            time.sleep(0.02)
        s.shutdown(socket.SHUT_WR)
        b.wait_event(lambda e: e == ("late", b"late 0;late 1;late 2;"))

    # ---- volume, backpressure -----------------------------------------------------------

    def test_20mb_both_ways_intact(self):
        b = self.backend(fb.banner_echo(b""))
        srv = self.start_server(*COMMON, "--forward", "ssh=" + b.target)
        s = self.client(srv, timeout=30)
        payload = b"SSH-2.0-x\r\n" + os.urandom(20 << 20)
        sent = hashlib.sha256(payload).hexdigest()

        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        got = fb.recv_all(s, 60)
        t.join()
        self.assertEqual(len(got), len(payload))
        self.assertEqual(hashlib.sha256(got).hexdigest(), sent)
        self.assertEqual(metric(srv, 'plexus_forward_bytes_total{rule="ssh",direction="out"}'),
                         len(payload))

    def test_backpressure_both_ways_bounds_memory(self):
        size = 50 << 20
        chunk = os.urandom(1 << 20)

        def blast(c, b):  # the backend sends 50 MB as fast as the client takes it
            fb.recv_exact(c, 11)
            for _ in range(size // len(chunk)):
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            b.note(("sent",))
            fb.recv_all(c, 60)

        b = self.backend(blast)
        srv = self.start_server(*COMMON, "--forward", "ssh=" + b.target)
        rss0 = srv.rss_kb()
        s = self.client(srv, timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.sendall(b"SSH-2.0-x\r\n")
        time.sleep(scaled(1.5))  # not reading: the backend must be stopped by the pipe + sockets
        grown = srv.rss_kb() - rss0
        self.assertLess(grown, 16 * 1024, "server RSS grew by %d KiB while the client did not read"
                        % grown)
        self.assertFalse(any(e == ("sent",) for e in b.events))
        n = 0
        h = hashlib.sha256()
        s.settimeout(scaled(60))
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            n += len(d)
            h.update(d)
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), hashlib.sha256(chunk * (size // len(chunk))).hexdigest())

        # The other way: a backend that does not read while the client sends 50 MB.
        gate = threading.Event()

        def slow_reader(c, b):
            gate.wait(scaled(30))
            b.note(("got", len(fb.recv_all(c, 60))))

        b2 = self.backend(slow_reader)
        srv2 = self.start_server("--data-dir", "var2", "--forward", "ssh=" + b2.target)
        rss0 = srv2.rss_kb()
        s2 = self.client(srv2, timeout=60)
        s2.setblocking(False)
        data = memoryview(b"SSH-2.0-x\r\n" + bytes(size))
        off = 0
        deadline = time.monotonic() + scaled(1.5)
        while time.monotonic() < deadline:
            try:
                off += s2.send(data[off:off + (1 << 20)])
            except BlockingIOError:
                time.sleep(0.01)
        grown = srv2.rss_kb() - rss0
        self.assertLess(off, len(data))  # the sender is stopped, not buffered without bound
        self.assertLess(grown, 16 * 1024, "server RSS grew by %d KiB" % grown)
        gate.set()
        s2.setblocking(True)
        s2.settimeout(scaled(60))
        s2.sendall(data[off:])
        s2.shutdown(socket.SHUT_WR)
        b2.wait_event(lambda e: e == ("got", len(data)), 60)

    # ---- limits --------------------------------------------------------------------------

    def test_idle_timeout(self):
        b = self.backend(fb.banner_echo(b""))
        idle_ms = int(scaled(0.6) * 1000)  # slower builds get more slack between the pings
        srv = self.start_server(*COMMON, "--forward", "ssh=%s,idle=%dms" % (b.target, idle_ms))
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n")
        fb.recv_exact(s, 11)
        # Traffic keeps it open past the timeout...
        for i in range(8):
            time.sleep(idle_ms / 4000)
            s.sendall(b"%d" % i)
            self.assertEqual(fb.recv_exact(s, 1), b"%d" % i)
        # ...silence closes it.
        t0 = time.monotonic()
        self.assertEqual(fb.recv_all(s, 10), b"")
        self.assertLess(time.monotonic() - t0, scaled(3))
        b.wait_event(lambda e: e == ("eof",))

    def test_connection_limit_per_rule(self):
        b = self.backend(fb.banner_echo(b"hi\n"))
        srv = self.start_server(*COMMON, "--forward", "ssh=%s,max-conns=2" % b.target)
        open_ = []
        for _ in range(2):
            s = self.client(srv)
            s.sendall(b"SSH-2.0-x\r\n")
            self.assertEqual(fb.recv_exact(s, 14), b"hi\nSSH-2.0-x\r\n")
            open_.append(s)
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertTrue(closed_without_data(s))
        self.assertEqual(metric(srv, 'plexus_forward_rejected_total{rule="ssh"}'), 1)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)  # HTTP is not limited by it
        open_[0].close()
        wait_for(lambda: metric(srv, 'plexus_forward_connections_open{rule="ssh"}') == 1, 5,
                 what="the closed connection to be released")
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertEqual(fb.recv_exact(s, 14), b"hi\nSSH-2.0-x\r\n")

    def test_unreachable_backend(self):
        port = pxtest.free_port()
        srv = self.start_server(*COMMON, "--forward", "ssh=127.0.0.1:%d" % port)
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertTrue(closed_without_data(s))
        self.assertEqual(metric(srv, 'plexus_forward_failures_total{rule="ssh"}'), 1)
        srv.wait_log(r"forward ssh: cannot reach 127\.0\.0\.1:%d" % port)

    def test_unix_socket_backend(self):
        path = os.path.join(self.short_dir(), "b.sock")
        b = self.backend(fb.banner_echo(b"unix!\n"), unix_path=path)
        srv = self.start_server(*COMMON, "--forward", "ssh=unix:" + path)
        s = self.client(srv)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertEqual(fb.recv_exact(s, 17), b"unix!\nSSH-2.0-x\r\n")


class SniffConfig(PxTestCase):
    def bad(self, args, key, env=None):
        r = pxtest.run_plexus(list(args), env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(key, r.stderr)
        return r.stderr

    def test_bad_values_exit_2_naming_the_key(self):
        cases = [
            (["--forward", "ssh"], "NAME=TARGET"),
            (["--forward", "ssh=nohost"], "not HOST:PORT"),
            (["--forward", "ssh=example.com:22"], "numeric, or localhost"),
            (["--forward", "ftp=127.0.0.1:21"], "'ftp' is not a probe"),
            (["--forward", "ssh=127.0.0.1:22,proxy=v3"], "proxy=v3"),
            (["--forward", "ssh=127.0.0.1:22,max-conns=x"], "max-conns=x"),
            (["--forward", "ssh=127.0.0.1:22,idle=5 parsecs"], "idle="),
            (["--forward", "ssh=127.0.0.1:22,speed=9"], "unknown option 'speed'"),
            (["--forward", "x=127.0.0.1:22,probe=regex:("], "regex '('"),
            (["--forward", "x=127.0.0.1:22,probe=tls-sni:bad host"], "not a host name"),
            (["--proxy-protocol-from", "10.0.0.0/33"], "10.0.0.0/33"),
            (["--proxy-protocol-from", "example.com"], "example.com"),
            (["--sniff-timeout", "0"], "sniff-timeout"),
            (["--sniff-max", "1"], "sniff-max"),
        ]
        for args, why in cases:
            with self.subTest(args=args):
                err = self.bad(args, args[0])
                self.assertIn(why, err)
        # Whole-set checks: one default, names unique.
        err = self.bad(["--forward", "a=127.0.0.1:1,probe=default", "--forward",
                        "b=127.0.0.1:2,probe=default", "--listen", "127.0.0.1:0"], "--forward")
        self.assertIn("only one default rule", err)
        err = self.bad(["--forward", "a=127.0.0.1:1,probe=ssh", "--forward",
                        "a=127.0.0.1:2,probe=xmpp", "--listen", "127.0.0.1:0"], "--forward")
        self.assertIn("another rule is named 'a'", err)

    def test_config_file_and_environment(self):
        b = fb.Backend(fb.banner_echo(b"cfg\n"))
        self.addCleanup(b.close)
        cfg = os.path.join(self.out_dir, "plexus.json")
        with open(cfg, "w") as f:
            json.dump({"forward": ["ssh=" + b.target, "xmpp=127.0.0.1:9"],
                       "sniff-timeout": "2s", "sniff-max": "4KiB",
                       "proxy-protocol-from": ["10.0.0.0/8"]}, f)
        srv = self.start_server("--config", cfg, *COMMON)
        s = pxtest.connect(srv.addr)
        self.addCleanup(s.close)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertEqual(fb.recv_exact(s, 15), b"cfg\nSSH-2.0-x\r\n")
        self.assertStopsCleanly(srv)
        with open(cfg, "w") as f:
            json.dump({"forward": ["ssh=nowhere"]}, f)
        err = self.bad(["--config", cfg], "key forward")
        self.assertIn("not HOST:PORT", err)
        # Environment: rules separated by ';'.
        srv = self.start_server(*COMMON, env={"PLEXUS_FORWARD": "xmpp=127.0.0.1:9;ssh=" + b.target})
        s = pxtest.connect(srv.addr)
        self.addCleanup(s.close)
        s.sendall(b"SSH-2.0-x\r\n")
        self.assertEqual(fb.recv_exact(s, 15), b"cfg\nSSH-2.0-x\r\n")
        self.bad([], "PLEXUS_FORWARD", env={"PLEXUS_FORWARD": "ssh=127.0.0.1:1;bogus"})


if __name__ == "__main__":
    pxtest.main()
