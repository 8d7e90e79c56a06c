#!/usr/bin/python3
"""35-http2: the plexus routes over HTTP/2 (h2c with prior knowledge).

Clients: curl --http2-prior-knowledge, nghttp (nghttp2-client), and python3-h2
(h2client.py) for what the command-line clients cannot show: many streams on
one connection, flow control, resets, GOAWAY. (Node's http2 client is
38-http2-node.mjs; the RFC cases are 36-http2-conformance.py; abuse is
37-http2-abuse.py.)

Covered: the switch from the HTTP/1.1 listener on the preface and --http2=false;
static files (a multi-megabyte file byte for byte, Range, HEAD, 304); request
bodies (Content-Length and streamed, 413 over --max-body with the connection
kept); async answers (publishes, many at once on one connection); SSE streams
multiplexed on one connection, a cancelled stream unsubscribed; history paced by
a small client window; graceful shutdown (GOAWAY NO_ERROR, in-flight answers
finish, streams reset); idle timeout (GOAWAY NO_ERROR); the access log
(HTTP/2.0); the /metrics counters.
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import hyperframe.frame as hf

import pxtest
import hubclient
from pxtest import PxTestCase, scaled, wait_for
from h2client import H2Client, H2SseReader, H2WsClient, RawH2, h2_request, NO_ERROR, need
import wsraw
from wsraw import OP_BINARY, OP_PING, OP_PONG, OP_TEXT


class Base(PxTestCase):
    def start(self, *args, static=None):
        extra = ["--static", static] if static else []
        return self.start_server(*hubclient.hub_args(self.out_dir), "--allow-anonymous", *extra,
                                 *args)

    def www(self, files):
        d = os.path.join(self.out_dir, "www")
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        return d

    def publish(self, c, ch, data):
        r = c.request("POST", hubclient.chan_path(ch), [("content-type", "application/json")],
                      json.dumps(data, separators=(",", ":")).encode())
        self.assertEqual(r.status, 201, r.body)
        return r.json()


class Clients(Base):
    def test_curl_prior_knowledge(self):
        srv = self.start()
        out = subprocess.run([need("curl"), "-sS", "--http2-prior-knowledge", "-w",
                              "\\n%{http_version} %{response_code}", srv.url + "/healthz"],
                             capture_output=True, timeout=scaled(10))
        self.assertEqual(out.returncode, 0, out.stderr)
        body, _, meta = out.stdout.decode().rpartition("\n")
        self.assertEqual((body, meta), ('{"status":"ok"}', "2 200"))
        out = subprocess.run([need("curl"), "-sS", "--http2-prior-knowledge", "-H",
                              "content-type: application/json", "--data", '{"via":"curl"}',
                              srv.url + "/api/channels/curl/messages"],
                             capture_output=True, timeout=scaled(10))
        self.assertEqual(json.loads(out.stdout)["offset"], 1, out)

    def test_nghttp_concurrent(self):
        d = self.www({"a.txt": b"A" * 100, "b.bin": os.urandom(300000)})
        srv = self.start(static=d)
        out = subprocess.run([need("nghttp"), "-n", "-s", srv.url + "/a.txt", srv.url + "/b.bin",
                              srv.url + "/healthz", srv.url + "/nope"],
                             capture_output=True, timeout=scaled(10))
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = {l.split()[-1]: l.split()[-3:-1] for l in out.stdout.decode().splitlines()
                if l.strip().startswith(("1", "2", "3", "4", "5", "6", "7", "8", "9"))}
        self.assertEqual(rows, {"/a.txt": ["200", "100"], "/b.bin": ["200", "292K"],
                                "/healthz": ["200", "15"], "/nope": ["404", "46"]}, out.stdout)
        up = os.path.join(self.out_dir, "up.json")
        with open(up, "w") as f:
            f.write('{"via":"nghttp"}')
        out = subprocess.run([need("nghttp"), "-d", up, "-H", "content-type: application/json",
                              srv.url + "/api/channels/ng/messages"],
                             capture_output=True, timeout=scaled(10))
        self.assertEqual(json.loads(out.stdout)["channel"], "ng", out)

    def test_http2_off(self):
        srv = self.start("--http2=false")
        with RawH2(srv.addr, preface=False) as c:
            c.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize())
            c.expect_closed()
            self.assertFalse(c.frames and isinstance(c.frames[0], hf.SettingsFrame))
        self.assertEqual(srv.http("GET", "/healthz").status, 200)


class Static(Base):
    def test_file_range_head_304(self):
        blob = os.urandom(5 * 1024 * 1024 + 3)
        srv = self.start(static=self.www({"blob.bin": blob}))
        with H2Client(srv.addr, timeout=30) as c:
            r = c.request("GET", "/blob.bin")
            self.assertEqual(r.status, 200)
            self.assertEqual(int(r.header("content-length")), len(blob))
            self.assertEqual(hashlib.sha256(r.body).digest(), hashlib.sha256(blob).digest())
            r = c.request("GET", "/blob.bin", [("range", "bytes=100-199")])
            self.assertEqual((r.status, r.body), (206, blob[100:200]))
            r = c.request("HEAD", "/blob.bin")
            self.assertEqual((r.status, r.body, int(r.header("content-length"))),
                             (200, b"", len(blob)))
            etag = r.header("etag")
            r = c.request("GET", "/blob.bin", [("if-none-match", etag)])
            self.assertEqual((r.status, r.body), (304, b""))

    def test_concurrent_files_share_the_connection(self):
        files = {"f%d.bin" % i: os.urandom(200000 + i) for i in range(8)}
        srv = self.start(static=self.www(files))
        with H2Client(srv.addr, timeout=30) as c:
            sids = {c.start("GET", "/" + name): name for name in files}
            for sid, name in sids.items():
                r = c.response(sid)
                self.assertEqual(r.body, files[name], name)


class Bodies(Base):
    def test_body_sizes(self):
        srv = self.start("--max-body", "300KiB", "--max-payload", "300KiB")
        with H2Client(srv.addr, timeout=20) as c:
            for n in (1, 16384, 70000, 290000):  # more than one window
                data = {"s": "x" * n}
                r = c.request("POST", hubclient.chan_path("b"), [("content-type", "application/json")],
                              json.dumps(data).encode())
                self.assertEqual(r.status, 201, (n, r.body[:200]))
            r = c.request("GET", hubclient.chan_path("b") + "?since=0&limit=10")
            self.assertEqual([len(m["data"]["s"]) for m in r.json()["messages"]],
                             [1, 16384, 70000, 290000])

    def test_body_over_max_body(self):
        srv = self.start("--max-body", "1KiB")
        with H2Client(srv.addr) as c:
            # Declared length: 413 before the body is read.
            r = c.request("POST", hubclient.chan_path("big"),
                          [("content-type", "application/json"), ("content-length", "5000")],
                          b'"' + b"x" * 4998 + b'"')
            self.assertEqual(r.status, 413)
            self.assertEqual(r.json()["error"], "payload_too_large")
            # No length: 413 once the limit is passed.
            sid = c.start("POST", hubclient.chan_path("big"), [("content-type", "application/json")],
                          end_stream=False)
            c.send_body(sid, b"y" * 3000, end_stream=False)
            r = c.response(sid)
            self.assertEqual(r.status, 413)
            # The connection goes on.
            self.assertEqual(c.request("GET", "/healthz").status, 200)


class Async(Base):
    def test_many_publishes_on_one_connection(self):
        srv = self.start()
        with H2Client(srv.addr, timeout=30) as c:
            sids = [c.start("POST", hubclient.chan_path("many"), [("content-type", "application/json")],
                            json.dumps({"i": i}).encode()) for i in range(60)]
            offsets = sorted(c.response(s).json()["offset"] for s in sids)
            self.assertEqual(offsets, list(range(1, 61)))


class Sse(Base):
    def test_streams_multiplexed_on_one_connection(self):
        srv = self.start()
        with H2Client(srv.addr, timeout=20) as c:
            sids = [c.start("GET", hubclient.chan_path("m%d" % (i % 3), "events"),
                            [("accept", "text/event-stream")]) for i in range(9)]
            c.wait(lambda: all(c.streams[s]["headers"] for s in sids), what="the SSE heads")
            for i in range(3):
                self.publish(c, "m%d" % i, {"to": i})
            for n, s in enumerate(sids):
                c.wait(lambda: b'"to":' in c.streams[s]["data"], what="an event on stream %d" % s)
                self.assertIn(b'data: {"to":%d}' % (n % 3), bytes(c.streams[s]["data"]))
                hdrs = dict((k.decode(), v.decode()) for k, v in c.streams[s]["headers"])
                self.assertEqual(hdrs["cache-control"], "no-cache")

    def test_sse_reader_resume(self):
        srv = self.start()
        with H2Client(srv.addr) as c:
            for i in range(3):
                self.publish(c, "r", {"i": i})
        with H2SseReader(srv.addr, hubclient.chan_path("r", "events"),
                         headers=["Last-Event-ID: 1"]) as s:
            self.assertEqual(s.status, 200)
            self.assertEqual([e["id"] for e in s.events(2)], ["2", "3"])

    def test_cancelled_stream_is_unsubscribed(self):
        srv = self.start()
        with H2Client(srv.addr) as c:
            a = c.start("GET", hubclient.chan_path("cx", "events"))
            b = c.start("GET", hubclient.chan_path("cx", "events"))
            c.wait(lambda: c.streams[a]["headers"] and c.streams[b]["headers"], what="heads")
            self.publish(c, "cx", {"n": 1})
            c.wait(lambda: b"n" in c.streams[a]["data"] and b"n" in c.streams[b]["data"])
            before = hubclient.metric(srv, "plexus_hub_deliveries_total")
            c.conn.reset_stream(a, 8)  # CANCEL
            c._flush()
            wait_for(lambda: hubclient.metric(srv, "plexus_http2_resets_received_total") >= 1, 5)
            self.publish(c, "cx", {"n": 2})
            c.wait(lambda: b'"n":2' in c.streams[b]["data"], what="the second event")
            wait_for(lambda: hubclient.metric(srv, "plexus_hub_deliveries_total") >= before + 1, 5)
            time.sleep(0.2)
            self.assertEqual(hubclient.metric(srv, "plexus_hub_deliveries_total"), before + 1)
            self.assertNotIn(b'"n":2', c.streams[a]["data"])

    def test_history_paced_by_a_small_window(self):
        srv = self.start("--history-limit-max", "2000")
        with H2Client(srv.addr, timeout=30) as c:
            for i in range(0, 400, 50):
                sids = [c.start("POST", hubclient.chan_path("h"), [("content-type", "application/json")],
                                json.dumps({"i": j, "pad": "p" * 900}).encode())
                        for j in range(i, i + 50)]
                for s in sids:
                    self.assertEqual(c.response(s).status, 201)
        # A client whose stream window is 4 KiB: the answer (~400 KB) comes in
        # window-sized steps and is complete, valid JSON at the end.
        with H2Client(srv.addr, timeout=60, settings={h2_settings().INITIAL_WINDOW_SIZE: 4096}) as c:
            r = c.request("GET", hubclient.chan_path("h") + "?since=0&limit=2000")
            self.assertEqual(r.status, 200)
            msgs = r.json()["messages"]
            self.assertEqual([m["data"]["i"] for m in msgs], list(range(400)))


def h2_settings():
    import h2.settings
    return h2.settings.SettingCodes


class Lifecycle(Base):
    def test_graceful_shutdown(self):
        srv = self.start()
        c = H2Client(srv.addr, timeout=20)
        self.addCleanup(c.close)
        sse = c.start("GET", hubclient.chan_path("sd", "events"))
        c.wait(lambda: c.streams[sse]["headers"], what="the SSE head")
        self.assertEqual(c.request("GET", "/healthz").status, 200)
        srv.proc.send_signal(signal.SIGTERM)
        c.wait(lambda: c.goaway is not None, what="GOAWAY")
        self.assertEqual(c.goaway.error_code, NO_ERROR)
        self.assertEqual(c.goaway.last_stream_id, 3)
        c.wait(lambda: c.streams[sse]["reset"] is not None or c.closed, what="the SSE stream's end")
        self.assertEqual(srv.proc.wait(timeout=scaled(15)), 0)
        srv.returncode = 0

    def test_idle_timeout(self):
        srv = self.start("--idle-timeout", "1s")
        with RawH2(srv.addr) as c:
            c.send(c.headers(1, RawH2.req()))
            c.expect_response(1)
            t0 = time.monotonic()
            c.expect_goaway(NO_ERROR, timeout=5)
            c.expect_closed(timeout=5)
            self.assertGreater(time.monotonic() - t0, 0.7)

    def test_ping_keeps_an_idle_stream_connection(self):
        # A connection with an open SSE stream is not idle: the server pings it
        # instead of closing it; the client's answers keep it.
        srv = self.start("--idle-timeout", "1s")
        with H2Client(srv.addr) as c:
            s = c.start("GET", hubclient.chan_path("p", "events"))
            c.wait(lambda: c.streams[s]["headers"], what="head")
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                try:
                    c.pump(deadline)
                except OSError:
                    break
            self.assertTrue(any(type(e).__name__ == "PingAckReceived" or
                                type(e).__name__ == "PingReceived" for e in c.events), c.events)
            self.assertIsNone(c.goaway)
            self.assertFalse(c.closed)


class Observability(Base):
    def test_access_log_and_metrics(self):
        srv = self.start("--access-log", "text")
        with H2Client(srv.addr) as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
            self.assertEqual(c.request("GET", "/nope").status, 404)
        srv.wait_log(r'"GET /healthz HTTP/2\.0" 200 \d+ ')
        srv.wait_log(r'"GET /nope HTTP/2\.0" 404 ')
        m = hubclient.metrics(srv)
        self.assertGreaterEqual(m["plexus_http2_streams_total"], 2)
        self.assertIn('plexus_http2_goaway_sent_total{reason="enhance_your_calm"}', m)
        self.assertIn("plexus_http2_resets_received_total", m)

    def test_host_from_authority(self):
        # Handlers read Host as on HTTP/1.1: :authority stands in for it. The
        # static handler does not care; the redirect-free check is the request log.
        srv = self.start("--access-log", "json")
        r = h2_request(srv.addr, "GET", "/healthz")
        self.assertEqual((r.status, r.version), (200, "HTTP/2"))


class WebSocketOverH2(Base):
    """RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL, extended CONNECT, and the same
    WebSocket code on an HTTP/2 stream as on an upgraded HTTP/1.1 connection."""

    def echo(self, *args):
        return self.start_server("--workers", "1", *args, example="echo")

    def test_setting_advertised(self):
        srv = self.echo()
        with RawH2(srv.addr) as c:
            self.assertEqual(c.server_settings.get(8), 1)  # SETTINGS_ENABLE_CONNECT_PROTOCOL

    def test_echo_messages(self):
        srv = self.echo()
        with H2WsClient(srv.addr, "/echo") as ws:
            for n in (0, 1, 125, 126, 65535, 65536, 300000):
                payload = os.urandom(n)
                ws.send_message(OP_BINARY, payload)
                self.assertEqual(ws.recv_message(), (OP_BINARY, payload), n)
            ws.send_message(OP_TEXT, "héllo", fragments=2)
            self.assertEqual(ws.recv_message(), (OP_TEXT, "héllo".encode()))
            ws.send_frame(OP_PING, b"p1")
            self.assertEqual(ws.recv_message(), (OP_PONG, b"p1"))
            ws.send_close(1000, b"done")
            ws.expect_close(1000)

    def test_deflate(self):
        srv = self.start_server("--workers", "1", "--ws-deflate", *hubclient.hub_args(self.out_dir),
                                "--allow-anonymous")
        with H2WsClient(srv.addr, "/ws", extensions="permessage-deflate") as ws:
            self.assertTrue(ws.deflate, ws.response_headers)

    def test_many_websockets_on_one_connection(self):
        srv = self.echo()
        with H2Client(srv.addr) as c:
            socks = [H2WsClient(srv.addr, "/echo", client=c) for _ in range(20)]
            for i, ws in enumerate(socks):
                ws.send_message(OP_TEXT, "n%d" % i)
            for i, ws in enumerate(socks):
                self.assertEqual(ws.recv_message(), (OP_TEXT, b"n%d" % i))
            socks[3].send_close(1000)
            socks[3].expect_close(1000)
            # The others, and plain requests, go on on the same connection.
            socks[4].send_message(OP_TEXT, "still")
            self.assertEqual(socks[4].recv_message(), (OP_TEXT, b"still"))
            self.assertEqual(c.request("GET", "/echo").status, 426)

    def test_protocol_errors_close_the_websocket_only(self):
        srv = self.echo()
        with H2Client(srv.addr) as c:
            bad = H2WsClient(srv.addr, "/echo", client=c)
            bad.send_raw(wsraw.encode_frame(OP_TEXT, b"\xff\xfe"))  # invalid UTF-8
            bad.expect_close(1007)
            good = H2WsClient(srv.addr, "/echo", client=c)
            good.send_message(OP_TEXT, "ok")
            self.assertEqual(good.recv_message(), (OP_TEXT, b"ok"))

    def test_not_a_websocket_endpoint(self):
        srv = self.echo()
        with self.assertRaises(wsraw.HandshakeFailed) as cm:
            H2WsClient(srv.addr, "/nothing-here")
        self.assertEqual(cm.exception.status, 404)
        with H2Client(srv.addr) as c:
            sid = c.start("CONNECT", "/echo", [("sec-websocket-version", "13")], end_stream=False,
                          extra_pseudo=[(":protocol", "webtransport")])
            self.assertEqual(c.response(sid).status, 501)
            sid = c.start("CONNECT", "/echo", [("sec-websocket-version", "8")], end_stream=False,
                          extra_pseudo=[(":protocol", "websocket")])
            self.assertEqual(c.response(sid).status, 426)

    def test_hub_over_h2(self):
        srv = self.start()
        with H2Client(srv.addr) as c:
            ws = H2WsClient(srv.addr, "/ws", client=c)
            self.assertEqual(json.loads(ws.recv_message()[1])["op"], "welcome")
            ws.send_message(OP_TEXT, json.dumps({"op": "subscribe", "id": 1, "channel": "w"}))
            op, data = ws.recv_message()
            self.assertEqual(json.loads(data)["op"], "reply", data)
            self.publish(c, "w", {"via": "h2"})
            while True:
                op, data = ws.recv_message()
                m = json.loads(data)
                if m["op"] == "message":
                    break
            self.assertEqual((m["channel"], m["data"]), ("w", {"via": "h2"}))

    def test_shutdown_closes_with_1001(self):
        srv = self.echo()
        ws = H2WsClient(srv.addr, "/echo")
        self.addCleanup(ws.close)
        ws.send_message(OP_TEXT, "x")
        ws.recv_message()
        srv.proc.send_signal(signal.SIGTERM)
        ws.expect_close(1001, allow_messages=True)
        self.assertEqual(srv.proc.wait(timeout=scaled(15)), 0)
        srv.returncode = 0


if __name__ == "__main__":
    pxtest.main()
