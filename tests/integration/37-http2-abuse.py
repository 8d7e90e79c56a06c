#!/usr/bin/python3
"""37-http2-abuse: HTTP/2 attacks are bounded in CPU and memory.

Each case is a known class of HTTP/2 denial of service, sent with frames built
by hand (h2client.RawH2):
  - rapid reset (CVE-2023-44487): streams opened and reset in a loop -> GOAWAY
    ENHANCE_YOUR_CALM after the reset budget
  - CONTINUATION flood (2024): endless CONTINUATION frames -> GOAWAY
    ENHANCE_YOUR_CALM after 8, nothing buffered
  - HPACK bomb: a big dynamic-table entry referenced thousands of times (a few
    bytes on the wire, megabytes of header list) -> 431 on that stream, the
    connection lives, the header list never held
  - SETTINGS flood, PING flood, empty DATA flood -> GOAWAY ENHANCE_YOUR_CALM
  - zero-window stall: a client that opens no window asks for far more than the
    output budget (files, big history answers, SSE fed by publishes) -> the
    server's memory stays within the budget plus one answer
  - streams over SETTINGS_MAX_CONCURRENT_STREAMS -> REFUSED_STREAM each, the
    connection lives
  - a stream whose request never completes -> 408 after --header-timeout
Every case bounds the server's CPU time (from /proc) and, where the attack is
about memory, its RSS. px-test: serial (CPU and RSS are measured).
"""

import json
import os
import struct
import time

import hyperframe.frame as hf

import pxtest
import hubclient
from pxtest import PxTestCase, scaled, wait_for
from h2client import H2Client, RawH2, ENHANCE_YOUR_CALM, REFUSED_STREAM, NO_ERROR

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


class Abuse(PxTestCase):
    def start(self, *args):
        return self.start_server(*hubclient.hub_args(self.out_dir), "--allow-anonymous", *args)

    def cpu_bound(self, srv, before, limit):
        used = srv.cpu_seconds() - before
        self.assertLess(used, scaled(limit), "server CPU %.2fs for the attack" % used)

    def calm(self, srv):
        calm = 'plexus_http2_goaway_sent_total{reason="enhance_your_calm"}'
        wait_for(lambda: hubclient.metric(srv, calm) >= 1,
                 5, what="the ENHANCE_YOUR_CALM counter")

    def test_rapid_reset(self):
        srv = self.start()
        cpu = srv.cpu_seconds()
        with RawH2(srv.addr) as c:
            block = c.enc.encode([(k.encode(), v.encode()) for k, v in RawH2.req()])
            burst = b""
            for i in range(5000):
                sid = 1 + 2 * i
                # The first block indexes its fields; later ones are a few bytes each.
                burst += frame(HEADERS, 0x5, sid, block if i == 0 else
                               c.enc.encode([(k.encode(), v.encode()) for k, v in RawH2.req()]))
                burst += frame(RST, 0, sid, struct.pack(">I", 8))
                if len(burst) > 60000:
                    c.send_raw(burst)
                    burst = b""
                    if c.closed:
                        break
            c.send_raw(burst)
            g = c.expect_goaway(ENHANCE_YOUR_CALM, timeout=10)
            # Work stopped well before the 5000 streams: at most the reset budget.
            self.assertLess(g.last_stream_id, 2 * 1000)
            c.expect_closed()
        self.calm(srv)
        self.cpu_bound(srv, cpu, 2.0)
        self.assertEqual(srv.http("GET", "/healthz").status, 200)

    def test_continuation_flood(self):
        srv = self.start()
        cpu, rss = srv.cpu_seconds(), srv.rss_kb()
        with RawH2(srv.addr) as c:
            block = c.enc.encode([(k.encode(), v.encode()) for k, v in RawH2.req()])
            c.send_raw(frame(HEADERS, 0x1, 1, block))
            junk = b"\x00" * 16000  # would be literal fields: nothing ever ends the block
            for _ in range(2000):
                c.send_raw(frame(CONT, 0, 1, junk))
                if c.closed:
                    break
            c.expect_goaway(ENHANCE_YOUR_CALM, timeout=10)
            c.expect_closed()
        self.calm(srv)
        self.cpu_bound(srv, cpu, 2.0)
        self.assertLess(srv.rss_kb() - rss, 16 * 1024, "RSS grew during a CONTINUATION flood")

    def test_hpack_bomb(self):
        srv = self.start()
        cpu, rss = srv.cpu_seconds(), srv.rss_kb()
        with RawH2(srv.addr) as c:
            # 1st request: a 4000-byte value enters the dynamic table (index 62).
            big = [("x-bomb", "b" * 3900)]
            c.send(c.headers(1, RawH2.req(extra=big)))
            self.assertEqual(c.expect_response(1)[0], 200)  # 4 KB: within --max-header-size
            # 2nd request: 15 000 one-byte references to it, i.e. 60 MB of header
            # list in 15 KB on the wire.
            head = c.enc.encode([(k.encode(), v.encode()) for k, v in RawH2.req()])
            names = [n for n, _ in c.enc.header_table.dynamic_entries]
            ref = 0x80 | (62 + names.index(b"x-bomb"))  # an indexed field (RFC 7541 6.1)
            c.send_raw(frame(HEADERS, 0x5, 3, head + bytes([ref]) * 15000))
            status, _, body = c.expect_response(3, timeout=10)
            self.assertEqual(status, 431, body)
            # 60 references (fewer than --max-headers): 234 KB of header list from
            # 60 bytes, refused by its size alone.
            head = c.enc.encode([(k.encode(), v.encode()) for k, v in RawH2.req()])
            c.send_raw(frame(HEADERS, 0x5, 5, head + bytes([ref]) * 60))
            status, _, body = c.expect_response(5, timeout=10)
            self.assertEqual(status, 431, body)
            self.assertIn(b"header list", body)
            c.send(c.headers(7, RawH2.req()))
            self.assertEqual(c.expect_response(7)[0], 200)
        self.cpu_bound(srv, cpu, 2.0)
        self.assertLess(srv.rss_kb() - rss, 16 * 1024, "RSS grew during an HPACK bomb")

    def flood(self, make, setup=None):
        srv = self.start()
        cpu = srv.cpu_seconds()
        with RawH2(srv.addr) as c:
            if setup:
                setup(c)
            # 50 frames at a time, reading what comes back in between: a client
            # that reads its ACKs, so only the rate limit can stop it (nghttp2's
            # own guard stops clients that leave 1000 ACKs unread).
            for batch in range(60):
                c.send_raw(b"".join(make(batch * 50 + i) for i in range(50)))
                try:
                    while not c.closed:
                        f = c.read_frame(timeout=0.02)
                        if f is None or isinstance(f, hf.GoAwayFrame):
                            break
                except OSError:
                    pass
                if c.closed or any(isinstance(f, hf.GoAwayFrame) for f in c.frames):
                    break
            g = [f for f in c.frames if isinstance(f, hf.GoAwayFrame)]
            if not g:
                c.expect_goaway(ENHANCE_YOUR_CALM, timeout=10)
            else:
                self.assertEqual(g[0].error_code, ENHANCE_YOUR_CALM)
            c.expect_closed()
        self.calm(srv)
        self.cpu_bound(srv, cpu, 2.0)

    def test_settings_flood(self):
        self.flood(lambda i: frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535 + i)))

    def test_ping_flood(self):
        self.flood(lambda i: frame(PING, 0, 0, struct.pack(">Q", i)))

    def test_empty_data_flood(self):
        def setup(c):
            c.send_raw(frame(HEADERS, 0x4, 1, c.enc.encode(
                [(k.encode(), v.encode()) for k, v in RawH2.req("/healthz", "POST")])))
        self.flood(lambda i: frame(DATA, 0, 1, b""), setup)

    def test_zero_window_stall(self):
        # Budget 1 MiB. The stalled client asks for 5 x 5 MiB files, 20 history
        # answers of ~1 MB, 55 of ~200 KB and 15 SSE streams fed 20 MB of
        # publishes: ~350 MB that a server queueing without bounds would hold.
        d = os.path.join(self.out_dir, "www")
        os.makedirs(d)
        with open(os.path.join(d, "big.bin"), "wb") as f:
            f.write(os.urandom(5 << 20))
        srv = self.start("--output-cap", "1MiB", "--static", d, "--history-limit-max", "1000",
                         "--max-payload", "1MiB", "--publish-rate", "0")
        with H2Client(srv.addr, timeout=30) as w:
            pad = "p" * 1000
            for i in range(0, 1000, 100):
                sids = [w.start("POST", hubclient.chan_path("hist"), [("content-type", "application/json")],
                                json.dumps({"i": j, "pad": pad}).encode()) for j in range(i, i + 100)]
                for s in sids:
                    self.assertEqual(w.response(s).status, 201)
            # The same publishes as below, once before measuring: the hub's and
            # SQLite's caches hold them whatever the clients do.
            # The history reads too (SQLite's cache, the hub's buffers).
            for lim in (1000, 200):
                r = w.request("GET", hubclient.chan_path("hist") + "?since=0&limit=%d" % lim)
                self.assertEqual(r.status, 200)
            blob = json.dumps({"pad": "q" * 100000})
            for i in range(0, 200, 20):
                sids = [w.start("POST", hubclient.chan_path("live"), [("content-type", "application/json")],
                                blob.encode()) for _ in range(20)]
                for s in sids:
                    self.assertEqual(w.response(s).status, 201)
        rss0 = srv.rss_kb()
        cpu = srv.cpu_seconds()
        c = RawH2(srv.addr, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        self.addCleanup(c.close)
        sid = 1
        for _ in range(5):
            c.send(c.headers(sid, RawH2.req("/big.bin")))
            sid += 2
        for _ in range(20):  # streamed in pages (paced by the budget)
            c.send(c.headers(sid, RawH2.req(hubclient.chan_path("hist") + "?since=0&limit=1000")))
            sid += 2
        whole = []
        for _ in range(55):  # ~200 KB answers from memory, each queued whole
            c.send(c.headers(sid, RawH2.req(hubclient.chan_path("hist") + "?since=0&limit=200")))
            whole.append(sid)
            sid += 2
        for _ in range(15):
            c.send(c.headers(sid, RawH2.req(hubclient.chan_path("live", "events"))))
            sid += 2
        time.sleep(0.5)
        with H2Client(srv.addr, timeout=30) as w:
            blob = json.dumps({"pad": "q" * 100000})
            for i in range(0, 200, 20):
                sids = [w.start("POST", hubclient.chan_path("live"), [("content-type", "application/json")],
                                blob.encode()) for _ in range(20)]
                for s in sids:
                    self.assertEqual(w.response(s).status, 201)
        time.sleep(0.5)
        grown = srv.rss_kb() - rss0
        # Far below what was asked (~350 MB); the growth is the hub's transient
        # buffers (answers built, then refused), which the allocator keeps.
        # (Not under ASan: its quarantine keeps up to 256 MiB of freed memory in
        # RSS, here the hub's transient answers; the reset check below holds.)
        if pxtest.SANITIZER != "address":
            factor = 8 if pxtest.SANITIZER == "thread" else 1
            self.assertLess(grown, 48 * 1024 * factor,
                            "RSS grew by %d KiB for a client that reads nothing" % grown)
        # What bounds it: once the client holds the budget unread, the answers
        # from memory are not queued but their streams reset (RST_STREAM is not
        # flow-controlled, so the stalled client sees them now).
        deadline = time.monotonic() + scaled(5)
        reset = set()
        while len(reset) < 40 and time.monotonic() < deadline:
            try:
                f = c.read_frame(timeout=0.5)
            except OSError:
                continue
            if isinstance(f, hf.RstStreamFrame) and f.stream_id in whole:
                reset.add(f.stream_id)
        reset |= {f.stream_id for f in c.frames if isinstance(f, hf.RstStreamFrame) and
                  f.stream_id in whole}
        self.assertGreaterEqual(len(reset), 40, "answers queued instead of refused: %d reset" % len(reset))
        self.cpu_bound(srv, cpu, 5.0)
        # The server is fine, and the stalled client gets its data once it opens windows.
        self.assertEqual(srv.http("GET", "/healthz").status, 200)
        c.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20}),
               hf.WindowUpdateFrame(0, window_increment=1 << 30))
        c.expect(lambda f: isinstance(f, hf.DataFrame) and f.stream_id == 1 and len(f.data) > 0,
                 "DATA once the window opens", timeout=10)

    def test_streams_over_the_limit_refused(self):
        srv = self.start("--http2-max-streams", "100")
        cpu = srv.cpu_seconds()
        with RawH2(srv.addr) as c:
            head = []
            for i in range(1000):
                head.append(frame(HEADERS, 0x5, 1 + 2 * i, c.enc.encode(
                    [(k.encode(), v.encode()) for k, v in RawH2.req(hubclient.chan_path("x", "events"))])))
            c.send_raw(b"".join(head))
            refused = set()
            while len(refused) < 900:
                f = c.expect(lambda f: isinstance(f, (hf.RstStreamFrame, hf.GoAwayFrame)), "RST_STREAM")
                self.assertIsInstance(f, hf.RstStreamFrame)
                self.assertEqual(f.error_code, REFUSED_STREAM)
                refused.add(f.stream_id)
            self.assertEqual(min(refused), 201)
            c.send(hf.PingFrame(0, opaque_data=b"stillok!"))
            c.expect(lambda f: isinstance(f, hf.PingFrame) and "ACK" in f.flags, "PING ACK")
            # The 100 accepted streams are SSE subscribers of x.
            self.wait_subscribers(srv, "x", 100)
        self.cpu_bound(srv, cpu, 2.0)
        # Closed with the connection. (Waited for so that tearDown's SIGTERM does not
        # race the unsubscribes still on their way to the hub: stopping the hub at that
        # moment leaks them, a hub shutdown race of its own that this test is not about.)
        self.wait_subscribers(srv, "x", 0)

    def wait_subscribers(self, srv, ch, n):
        def count():
            st, body, _ = hubclient.api(srv, "GET", hubclient.chan_path(ch, "presence"))
            return st == 200 and body["subscribers"] == n
        wait_for(count, 10, what="%d subscribers of %s" % (n, ch))

    def test_incomplete_request_times_out(self):
        srv = self.start("--header-timeout", "500ms")
        with RawH2(srv.addr) as c:
            c.send_raw(frame(HEADERS, 0x4, 1, c.enc.encode(
                [(k.encode(), v.encode()) for k, v in RawH2.req("/healthz", "POST")])))
            t0 = time.monotonic()
            status, _, body = c.expect_response(1, timeout=5)
            self.assertEqual(status, 408, body)
            self.assertGreater(time.monotonic() - t0, 0.3)
            c.expect_rst(1, NO_ERROR)


if __name__ == "__main__":
    pxtest.main()
