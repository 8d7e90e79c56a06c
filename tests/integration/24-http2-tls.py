#!/usr/bin/python3
"""24-http2-tls: HTTP/2 over TLS (ALPN h2) and h2c on the same port as
HTTP/1.1, against a test CA made at test time (tlsutil.Pki).

  - ALPN: h2 is preferred over http/1.1 whatever the client's order, http/1.1
    alone is still chosen, --http2=false offers h2 no more;
  - curl --http2 over https: a route, a multi-megabyte static file byte for
    byte, a Range, the hub's HTTP API; nghttp over TLS (many streams at once);
  - python3-h2 over TLS: many streams on one connection, SSE streams
    multiplexed with requests, WebSocket over HTTP/2 (RFC 8441) to the hub,
    graceful shutdown (GOAWAY NO_ERROR), rapid reset bounded (ENHANCE_YOUR_CALM);
  - one port: the TLS listener's sniffer also serves HTTP/1.1 and h2c (prior
    knowledge) in clear text, and the plain listener h2c; with --tls-only, h2c
    in clear text gets GOAWAY INADEQUATE_SECURITY (what the 301 is to HTTP/1.1).

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/24-http2-tls.py -v
"""

import hashlib
import json
import os
import re
import signal
import subprocess

import hyperframe.frame as hf

import hubclient
import pxtest
from h2client import (H2Client, H2SseReader, H2WsClient, RawH2, ENHANCE_YOUR_CALM,
                      INADEQUATE_SECURITY, NO_ERROR, need)
from pxtest import scaled, wait_for
from tlsutil import Pki, TlsServerMixin, client_context, metrics, s_client
from wsraw import OP_TEXT


class H2TlsCase(pxtest.PxTestCase, TlsServerMixin):
    @classmethod
    def setUpClass(cls):
        pxtest.PxTestCase.require_local_class("TLS tests start their own servers")
        cls.pki = Pki(pxtest.class_out_dir(cls))
        cls.cert = cls.pki.leaf("h2", ["localhost"], kind="ec")

    def start(self, *args, static=None, **kw):
        extra = ["--static", static] if static else []
        return self.start_tls("--tls-cert", self.cert[0], "--tls-key", self.cert[1],
                              *hubclient.hub_args(self.out_dir), "--allow-anonymous", *extra,
                              *args, **kw)

    def ctx(self, alpn=("h2", "http/1.1")):
        return client_context(self.pki.ca_crt, alpn=alpn)

    def curl(self, *args, url=None, path="/healthz", check=True):
        url = url or "https://localhost:%d%s" % (self.tls_addr[1], path)
        cmd = [need("curl"), "-sS", "--max-time", str(scaled(20)), "--cacert", self.pki.ca_crt,
               "--resolve", "localhost:%d:127.0.0.1" % self.tls_addr[1], *args, url]
        p = subprocess.run(cmd, capture_output=True, timeout=scaled(30))
        if check:
            self.assertEqual(p.returncode, 0, "curl %s: %s" % (url, p.stderr.decode()))
        return p

    def www(self, files):
        d = os.path.join(self.out_dir, "www")
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        return d


class Alpn(H2TlsCase):
    def test_h2_preferred(self):
        self.start()
        port = self.tls_addr[1]
        for offer, chosen in (("http/1.1,h2", "h2"), ("h2,http/1.1", "h2"), ("h2", "h2"),
                              ("http/1.1", "http/1.1")):
            with self.subTest(offer=offer):
                _, out = s_client(port, "-servername", "localhost", "-alpn", offer)
                self.assertIn("ALPN protocol: %s" % chosen, out)
        # What ALPN chose is what runs: the same route answered over both.
        with H2Client(self.tls_addr, tls=self.ctx()) as c:
            r = c.request("GET", "/healthz")
            self.assertEqual((r.version, r.status, r.json()), ("HTTP/2", 200, {"status": "ok"}))
        p = self.curl("--http1.1", "-w", "\n%{http_version}")
        self.assertEqual(p.stdout.decode().rpartition("\n")[2], "1.1")

    def test_http2_off(self):
        self.start("--http2=false")
        _, out = s_client(self.tls_addr[1], "-servername", "localhost", "-alpn", "h2,http/1.1")
        self.assertIn("ALPN protocol: http/1.1", out)
        _, out = s_client(self.tls_addr[1], "-servername", "localhost", "-alpn", "h2")
        self.assertIn("No ALPN negotiated", out)
        p = self.curl("--http2", "-w", "\n%{http_version} %{response_code}")
        self.assertEqual(p.stdout.decode().rpartition("\n")[2], "1.1 200")


class Clients(H2TlsCase):
    def test_curl_http2(self):
        big = os.urandom(3 * 1024 * 1024 + 17)
        srv = self.start(static=self.www({"big.bin": big, "a.txt": b"hello h2\n"}))
        p = self.curl("--http2", "-w", "\n%{http_version} %{response_code}")
        body, _, meta = p.stdout.decode().rpartition("\n")
        self.assertEqual((body, meta), ('{"status":"ok"}', "2 200"))
        out = os.path.join(self.out_dir, "big.out")
        p = self.curl("--http2", "-o", out, "-w", "%{http_version} %{response_code}",
                      path="/big.bin")
        self.assertEqual(p.stdout.decode(), "2 200")
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(big).hexdigest())
        p = self.curl("--http2", "-r", "100-199", path="/big.bin")
        self.assertEqual(p.stdout, big[100:200])
        p = self.curl("--http2", "-H", "content-type: application/json", "--data",
                      '{"via":"curl h2"}', path="/api/channels/tls/messages")
        self.assertEqual(json.loads(p.stdout)["offset"], 1, p.stdout)
        m = hubclient.metrics(srv)
        self.assertGreaterEqual(m["plexus_http2_streams_total"], 4)

    def test_nghttp(self):
        srv = self.start(static=self.www({"a.txt": b"A" * 100, "b.bin": os.urandom(300000)}))
        base = "https://localhost:%d" % self.tls_addr[1]
        # nghttp verifies nothing; it must still negotiate h2 by ALPN.
        out = subprocess.run([need("nghttp"), "-nv", base + "/a.txt", base + "/b.bin",
                              base + "/healthz", base + "/nope"],
                             capture_output=True, timeout=scaled(20))
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout.decode()
        self.assertIn("The negotiated protocol: h2", text)
        statuses = sorted(l.split()[-1] for l in text.splitlines() if "recv (stream_id" in l
                          and ":status:" in l)
        self.assertEqual(statuses, ["200", "200", "200", "404"], text)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)


class Streams(H2TlsCase):
    def test_many_streams_sse_and_requests(self):
        srv = self.start()
        with H2Client(self.tls_addr, tls=self.ctx()) as c:
            sse = [c.start("GET", "/api/channels/s%d/events" % i, [("accept", "text/event-stream")])
                   for i in range(5)]
            c.wait(lambda: all(c.streams[s]["headers"] for s in sse), what="the SSE heads")
            sids = [c.start("POST", hubclient.chan_path("s%d" % (i % 5)),
                            [("content-type", "application/json")],
                            json.dumps({"n": i}).encode()) for i in range(50)]
            for sid in sids:
                self.assertEqual(c.response(sid).status, 201)
            # Every SSE stream got its ten messages, on the same connection.
            for i, s in enumerate(sse):
                c.wait(lambda: len(re.findall(rb"(?m)^data:", c.streams[s]["data"])) >= 10,
                       what="ten events on s%d" % i)
        self.assertEqual(metrics(self.plain).get('plexus_http2_goaway_sent_total'
                                                 '{reason="protocol_error"}', 0), 0)
        self.assertTrue(srv.running())

    def test_sse_reader(self):
        self.start()
        with H2SseReader(self.tls_addr, "/api/channels/r/events", tls=self.ctx()) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(pxtest.http_request(self.plain, "POST", hubclient.chan_path("r"),
                                                 {"content-type": "application/json"},
                                                 b'{"x":1}').status, 201)
            ev = r.event()
            self.assertEqual((ev.get("id"), json.loads(ev["data"])), ("1", {"x": 1}), ev)

    def test_websocket_over_h2(self):
        self.start()
        with H2Client(self.tls_addr, tls=self.ctx()) as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
            self.assertEqual(c.conn.remote_settings.get(8), 1)  # ENABLE_CONNECT_PROTOCOL
            ws = H2WsClient(self.tls_addr, "/ws", client=c)
            self.assertEqual(json.loads(ws.recv_message()[1])["op"], "welcome")
            ws.send_message(OP_TEXT, json.dumps({"op": "subscribe", "id": 1, "channel": "w"}))
            self.assertEqual(json.loads(ws.recv_message()[1])["op"], "reply")
            r = c.request("POST", hubclient.chan_path("w"), [("content-type", "application/json")],
                          b'{"via":"h2 tls"}')
            self.assertEqual(r.status, 201, r.body)
            while True:
                m = json.loads(ws.recv_message()[1])
                if m["op"] == "message":
                    break
            self.assertEqual((m["channel"], m["data"]), ("w", {"via": "h2 tls"}))

    def test_graceful_shutdown(self):
        srv = self.start()
        c = H2Client(self.tls_addr, tls=self.ctx())
        self.addCleanup(c.close)
        self.assertEqual(c.request("GET", "/healthz").status, 200)
        srv.proc.send_signal(signal.SIGTERM)
        c.wait(lambda: c.goaway is not None, 10, "GOAWAY")
        self.assertEqual(c.goaway.error_code, NO_ERROR)
        self.assertEqual(srv.proc.wait(timeout=scaled(15)), 0)
        srv.returncode = 0

    def test_rapid_reset_over_tls(self):
        srv = self.start()
        with RawH2(self.tls_addr, tls=self.ctx()) as c:
            fields = [(":method", "GET"), (":scheme", "https"), (":path", "/healthz"),
                      (":authority", "localhost")]
            frames = []
            for i in range(400):  # twice the reset budget (2 x 100 streams), at once
                sid = 1 + 2 * i
                frames.append(hf.HeadersFrame(sid, c.enc.encode(fields),
                                              flags=["END_HEADERS", "END_STREAM"]))
                frames.append(hf.RstStreamFrame(sid, error_code=8))
            c.send(*frames)
            c.expect_goaway(ENHANCE_YOUR_CALM, timeout=10)
        self.assertTrue(srv.running())
        self.assertGreaterEqual(metrics(self.plain).get(
            'plexus_http2_goaway_sent_total{reason="enhance_your_calm"}', 0), 1)


class OnePort(H2TlsCase):
    def test_every_protocol_on_the_tls_port(self):
        self.start()
        # h2 over TLS, HTTP/1.1 over TLS, h2c and HTTP/1.1 in clear text: one port.
        with H2Client(self.tls_addr, tls=self.ctx()) as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
        p = self.curl("--http1.1", "-w", "\n%{http_version}")
        self.assertEqual(p.stdout.decode().rpartition("\n")[2], "1.1")
        for addr in (self.tls_addr, self.plain):
            with self.subTest(addr=addr):
                with H2Client(addr) as c:
                    r = c.request("GET", "/healthz")
                    self.assertEqual((r.version, r.status), ("HTTP/2", 200))
                p = self.curl("--http2-prior-knowledge", "-w", "\n%{http_version}",
                              url="http://127.0.0.1:%d/healthz" % addr[1])
                self.assertEqual(p.stdout.decode().rpartition("\n")[2], "2")
                self.assertEqual(pxtest.http_request(addr, "GET", "/healthz").status, 200)

    def test_tls_only_refuses_h2c(self):
        self.start(listeners=[{"addr": "127.0.0.1:0", "tls": True, "tls-only": True},
                              "127.0.0.1:0"])
        with RawH2(self.tls_addr, preface=False) as c:
            c.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize())
            f = c.expect_goaway(INADEQUATE_SECURITY)
            self.assertEqual(f.last_stream_id, 0)
            c.expect_closed()
        p = self.curl("--http2-prior-knowledge", url="http://127.0.0.1:%d/" % self.tls_addr[1],
                      check=False)
        self.assertNotEqual(p.returncode, 0)
        # Over TLS, h2 is served; HTTP/1.1 in clear text is redirected as before.
        with H2Client(self.tls_addr, tls=self.ctx()) as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
        self.assertEqual(pxtest.http_request(self.tls_addr, "GET", "/x").status, 301)
        # The plain listener next to it is plain HTTP, not sniffed nor redirected.
        self.assertEqual(pxtest.http_request(self.plain, "GET", "/healthz").status, 200)
        with H2Client(self.plain) as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
        wait_for(lambda: metrics(self.plain).get(
            'plexus_sniff_closed_total{reason="h2c_tls_only"}', 0) >= 2, 5,
            what="the sniffer's h2c_tls_only counter")


if __name__ == "__main__":
    pxtest.main()
