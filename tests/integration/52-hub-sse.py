#!/usr/bin/python3
"""52-hub-sse: Server-Sent Events at GET /api/channels/{channel}/events.

  - the stream: 200 text/event-stream, "retry: 2000", then one event per
    message: "id: <offset>" and the data in "data:" lines (multi-line JSON split
    at its line breaks, so joining the lines gives the data back);
  - without Last-Event-ID or ?since= only new messages come;
  - Last-Event-ID resume delivers exactly the missed messages, then live ones,
    with no gap and no duplicate even while publishers keep going; ?since= does
    the same on a first connection; Last-Event-ID wins over ?since=; a bad
    value is 400;
  - closing the stream removes the subscription;
  - several SSE clients spread over two workers (--workers 2) and a WebSocket
    subscriber see the same sequence while 4 HTTP publishers run concurrently;
  - the ": keep-alive" comment: there is no flag for its interval (hub option
    sse_keepalive_ms, 15 s), so one stream is opened when the class starts and
    checked at the end, after 15 s have passed anyway.

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/52-hub-sse.py -v
"""

import json
import socket
import threading
import time

import pxtest
from hubclient import HubCase, SseReader, api, chan_path, metrics

KEEPALIVE_S = 15.0  # px_hub_opts_t.sse_keepalive_ms default; no flag sets it


class Sse(HubCase):
    server_args = ("--allow-anonymous", "--workers", "2")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ka_opened = time.monotonic()
        cls.ka_stream = SseReader(cls.srv.addr, chan_path("keepalive-watch", "events"))

    @classmethod
    def tearDownClass(cls):
        cls.ka_stream.close()
        super().tearDownClass()

    def sse(self, ch, query="", headers=()):
        r = SseReader(self.srv.addr, chan_path(ch, "events") + query, headers=headers)
        self.addCleanup(r.close)
        return r

    def post(self, ch, body):
        st, j, r = api(self.srv, "POST", chan_path(ch), body)
        self.assertEqual(st, 201, r.body)
        return j["offset"]

    def subscribers(self, ch):
        return api(self.srv, "GET", chan_path(ch, "presence"))[1]["subscribers"]

    def wait_subscribers(self, ch, n):
        pxtest.wait_for(lambda: self.subscribers(ch) == n, 5, what="%d subscriber(s) on %s" % (n, ch))

    def test_stream_format(self):
        ch = self.chan()
        s = self.sse(ch)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"), s.headers)
        self.wait_subscribers(ch, 1)
        datas = ['{"text":"hello"}',
                 '{\n  "a": 1,\n  "b": [\n    2\n  ]\n}',
                 '"\u00e9\U0001F600 \\n not a line break"',
                 "[1,\n\n2]",
                 "17"]
        for d in datas:
            self.post(ch, d)
        evs = s.events(len(datas))
        self.assertEqual(s.retry, "2000")
        self.assertTrue(s.text.startswith("retry: 2000\n\n"), s.text[:40])
        for i, (e, d) in enumerate(zip(evs, datas), 1):
            self.assertEqual(e["id"], str(i))
            self.assertEqual(e["data"], d)
            self.assertEqual(len(e["data_lines"]), d.count("\n") + 1)
        self.assertIn("id: 2\ndata: {\ndata:   \"a\": 1,\ndata:   \"b\": [\n", s.text)
        # CR LF line breaks: the CR is dropped, the lines stay lines.
        self.post(ch, '{"x":\r\n1}')
        e = s.event()
        self.assertEqual((e["id"], e["data_lines"]), ("6", ['{"x":', "1}"]))

    def test_only_new_without_since(self):
        ch = self.chan()
        for i in range(3):
            self.post(ch, i)
        s = self.sse(ch)
        self.wait_subscribers(ch, 1)
        self.post(ch, "\"new\"")
        e = s.event()
        self.assertEqual((e["id"], e["data"]), ("4", '"new"'))

    def test_last_event_id_resume(self):
        ch = self.chan()
        s = self.sse(ch, "?since=0")
        for i in range(1, 4):
            self.post(ch, {"n": i})
        self.assertEqual([e["id"] for e in s.events(3)], ["1", "2", "3"])
        s.close()
        self.wait_subscribers(ch, 0)
        for i in range(4, 8):
            self.post(ch, {"n": i})
        # Reconnect like EventSource: Last-Event-ID is the last id seen. A
        # publisher keeps going meanwhile: replayed + live must be contiguous.
        stop = threading.Event()
        live = []

        def publisher():
            i = 8
            while not stop.is_set() and i < 60:
                live.append(self.post(ch, {"n": i}))
                i += 1

        t = threading.Thread(target=publisher)
        t.start()
        try:
            s2 = self.sse(ch, headers=["Last-Event-ID: 3"])
            got = s2.events(20)
        finally:
            stop.set()
            t.join()
        ids = [int(e["id"]) for e in got]
        self.assertEqual(ids, list(range(4, 24)), "missed ones first, then live, no gap or duplicate")
        for e in got:
            self.assertEqual(e["data"], '{"n":%s}' % e["id"])
        # Then everything else that was published, still in order.
        last = max(live)
        rest = s2.events(last - 23)
        self.assertEqual([int(e["id"]) for e in rest], list(range(24, last + 1)))

    def test_since_query(self):
        ch = self.chan()
        for i in range(1, 6):
            self.post(ch, i)
        s = self.sse(ch, "?since=2")
        self.assertEqual([(e["id"], e["data"]) for e in s.events(3)], [("3", "3"), ("4", "4"), ("5", "5")])
        self.post(ch, 6)
        self.assertEqual(s.event()["id"], "6")
        # Last-Event-ID wins over ?since=.
        s2 = self.sse(ch, "?since=0", headers=["Last-Event-ID: 4"])
        self.assertEqual([e["id"] for e in s2.events(2)], ["5", "6"])
        # since = the last offset: nothing old.
        s3 = self.sse(ch, "?since=6")
        self.wait_subscribers(ch, 3)
        self.post(ch, 7)
        for r in (s, s2, s3):
            self.assertEqual(r.event()["id"], "7")

    def test_bad_since(self):
        ch = self.chan()
        for q, hdrs in (("?since=-1", ()), ("?since=x", ()), ("?since=", ()),
                        ("", ["Last-Event-ID: abc"]), ("", ["Last-Event-ID: -1"]),
                        ("", ["Last-Event-ID: 99999999999999999999"])):
            with self.subTest(q=q, hdrs=hdrs):
                h = dict(x.split(": ", 1) for x in hdrs)
                st, j, r = api(self.srv, "GET", chan_path(ch, "events") + q, headers=h)
                self.assertEqual(st, 400, r.body)
                self.assertEqual(j["error"], "bad_request")
        st, j, _ = api(self.srv, "GET", "/api/channels/a%20b/events")
        self.assertEqual((st, j["error"]), (400, "invalid_channel"))
        self.assertEqual(self.subscribers(ch), 0)

    def test_close_unsubscribes(self):
        ch = self.chan()
        streams = [self.sse(ch) for _ in range(3)]
        self.wait_subscribers(ch, 3)
        streams[0].close()
        self.wait_subscribers(ch, 2)
        self.post(ch, 1)
        for s in streams[1:]:
            self.assertEqual(s.event()["id"], "1")
        for s in streams[1:]:
            s.close()
        self.wait_subscribers(ch, 0)

    def test_same_order_across_workers(self):
        ch = self.chan()
        readers = [self.sse(ch, "?since=0") for _ in range(6)]
        ws = self.client()
        ws.ok("subscribe", channel=ch, since={"offset": 0})
        self.wait_subscribers(ch, 7)
        m = metrics(self.srv)
        per_worker = [m.get('plexus_connections{worker="%d"}' % w, 0) for w in (0, 1)]
        self.assertTrue(all(n >= 1 for n in per_worker), "connections on both workers: %r" % per_worker)
        N, P = 40, 4
        errors = []

        def publisher(k):
            try:
                for i in range(N):
                    self.post(ch, '{"k":%d,"i":%d}' % (k, i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ts = [threading.Thread(target=publisher, args=(k,)) for k in range(P)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        seqs = []
        for r in readers:
            evs = r.events(N * P)
            self.assertEqual([int(e["id"]) for e in evs], list(range(1, N * P + 1)))
            seqs.append([e["data"] for e in evs])
        wsseq = ['{"k":%d,"i":%d}' % (x["data"]["k"], x["data"]["i"]) for x in ws.messages(ch, N * P)]
        for s in seqs[1:] + [wsseq]:
            self.assertEqual(s, seqs[0])
        # Each publisher's own messages in the order it sent them.
        for k in range(P):
            mine = [d for d in seqs[0] if d.startswith('{"k":%d,' % k)]
            self.assertEqual(mine, ['{"k":%d,"i":%d}' % (k, i) for i in range(N)])

    def test_zz_keepalive(self):
        """Runs last (alphabetical order): by now the class's stream has been
        open for a while; wait until a keep-alive comment must have arrived."""
        s = self.ka_stream
        left = KEEPALIVE_S + 1.5 - (time.monotonic() - self.ka_opened)
        deadline = time.monotonic() + max(0.0, left) + pxtest.scaled(3)
        while not s.comments and time.monotonic() < deadline and not s.eof:
            try:
                s.event(timeout=0.25)  # no events come: this collects comments
            except (socket.timeout, TimeoutError):
                pass
        self.assertIn(": keep-alive", s.comments, "no keep-alive comment within %.0f s: %r"
                      % (KEEPALIVE_S + 1.5, s.text[-200:]))


class SseShortHistory(HubCase):
    server_args = ("--allow-anonymous", "--history-size", "3")

    def test_resume_past_history_says_so(self):
        """A resume that history no longer covers starts with a
        `recovery-failed` event (id = the channel's offset, so the next
        reconnect resumes from there), then live messages; one it covers
        does not get it."""
        ch = self.chan()
        for i in range(1, 11):
            self.assertEqual(api(self.srv, "POST", chan_path(ch), i)[0], 201)
        epoch = api(self.srv, "GET", chan_path(ch))[1]["epoch"]
        for query, headers in (("?since=2", ()), ("", ["Last-Event-ID: 6"])):
            with self.subTest(query=query, headers=headers):
                s = SseReader(self.srv.addr, chan_path(ch, "events") + query, headers=headers)
                self.addCleanup(s.close)
                e = s.event()
                self.assertEqual((e.get("event"), e["id"]), ("recovery-failed", "10"), e)
                self.assertEqual(json.loads(e["data"]), {"channel": ch, "epoch": epoch, "offset": 10})
        s = SseReader(self.srv.addr, chan_path(ch, "events") + "?since=7")
        self.addCleanup(s.close)
        self.assertEqual([(e.get("event"), e["id"]) for e in s.events(3)],
                         [(None, "8"), (None, "9"), (None, "10")])
        pxtest.wait_for(lambda: api(self.srv, "GET", chan_path(ch, "presence"))[1]["subscribers"] == 3, 5,
                        what="3 SSE subscribers")
        api(self.srv, "POST", chan_path(ch), 11)
        self.assertEqual((s.event()["id"]), "11")


if __name__ == "__main__":
    pxtest.main()
