"""Regression tests for the hub items of the hardening issue: answers bigger than the
output budget, catch-up of long backlogs, fairness between clients, the channel table,
offsets after a storage error, the token's channel claim on listings, HEAD on an event
stream, and token expiry. Each test failed before its fix."""

import json
import os
import resource
import signal
import time

import pxtest
from hubclient import HubCase, HubClient, SseReader, api, chan_path, hub_args, jwt, metric
from pxtest import PxTestCase, RawClient, scaled, wait_for

BIG = "x" * (60 * 1024 - 16)  # one message of ~60 KB (the default --max-payload is 64 KiB)


def publish_many(srv, ch, n, data=BIG):
    """n HTTP publishes of `data` on one keep-alive connection; returns the offsets."""
    offsets = []
    body = json.dumps(data).encode()
    with RawClient(srv.addr, timeout=30) as c:
        for _ in range(n):
            c.send(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % (chan_path(ch).encode(), len(body)) + body)
            r = c.read_response(timeout=30)
            assert r.status == 201, r
            offsets.append(r.json()["offset"])
    return offsets


class LargeAnswers(HubCase):
    """Item 4: a history answer larger than --output-cap is never cut."""

    server_args = ("--allow-anonymous", "--output-cap", "1MiB")

    def test_history_bigger_than_output_cap_is_whole_and_in_sync(self):
        ch = self.chan()
        offsets = publish_many(self.srv, ch, 30)
        with RawClient(self.srv.addr, timeout=30) as c:
            # Pipelined: the history answer, then another request on the same connection.
            c.send(b"GET %s?since=0&limit=100 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" % chan_path(ch).encode())
            r = c.read_response(timeout=30)
            self.assertEqual(r.status, 200)
            body = r.json()  # the whole body arrived and is valid JSON
            self.assertEqual([m["offset"] for m in body["messages"]], offsets)
            self.assertTrue(all(m["data"] == BIG for m in body["messages"]))
            self.assertNotIn("truncated", body)
            nxt = c.read_response(timeout=10)
            self.assertEqual((nxt.status, nxt.json()), (200, {"status": "ok"}))

    def test_history_limit_within_a_long_answer(self):
        ch = self.chan()
        offsets = publish_many(self.srv, ch, 30)
        st, j, _ = api(self.srv, "GET", chan_path(ch) + "?since=3&limit=25", timeout=30)
        self.assertEqual(st, 200)
        self.assertEqual([m["offset"] for m in j["messages"]], offsets[3:28])

    def test_websocket_history_is_bounded_and_says_more(self):
        ch = self.chan()
        offsets = publish_many(self.srv, ch, 30)
        c = self.client()
        got, since = [], 0
        for _ in range(30):
            h = c.ok("history", channel=ch, since=since, limit=100, timeout=30)
            got += [m["offset"] for m in h["messages"]]
            # One answer is bounded (a quarter of the output budget), not 30 x 60 KB.
            self.assertLess(len(json.dumps(h)), 300 * 1024)
            if not h.get("more"):
                break
            since = got[-1]
        self.assertEqual(got, offsets)


class CatchUp(HubCase):
    """Item 5: replaying a backlog bigger than the output budget."""

    server_args = ("--allow-anonymous", "--output-cap", "1MiB", "--history-size", "1000")

    def test_sse_resume_over_a_long_backlog_skips_nothing(self):
        ch = self.chan()
        offsets = publish_many(self.srv, ch, 40)
        with SseReader(self.srv.addr, chan_path(ch, "events"),
                       headers=("Last-Event-ID: 0",), timeout=30) as sse:
            ids = [int(e["id"]) for e in sse.events(40, timeout=30)]
        self.assertEqual(ids, offsets)

    def test_websocket_since_over_a_long_backlog(self):
        ch = self.chan()
        epoch = self.client().ok("subscribe", channel=ch)["epoch"]
        offsets = publish_many(self.srv, ch, 40)
        # A client reading slowly (small receive buffer) still gets everything in order.
        c = self.client(rcvbuf=16384, timeout=60)
        r = c.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 0}, timeout=30)
        self.assertIs(r["recovered"], True)
        got = []
        for m in c.messages(ch, 40, timeout=60):
            got.append(m["offset"])
            time.sleep(0.002)
        self.assertEqual(got, offsets)
        # Live messages follow the replay with no gap.
        api(self.srv, "POST", chan_path(ch), {"live": 1})
        self.assertEqual(c.next_event("message", ch)["offset"], offsets[-1] + 1)

    def test_two_catch_ups_on_one_connection(self):
        a, b = self.chan("-a"), self.chan("-b")
        ea = self.client().ok("subscribe", channel=a)["epoch"]
        eb = self.client().ok("subscribe", channel=b)["epoch"]
        oa, ob = publish_many(self.srv, a, 25), publish_many(self.srv, b, 25)
        c = self.client(timeout=60)
        c.send_request("subscribe", channel=a, since={"epoch": ea, "offset": 0})
        c.send_request("subscribe", channel=b, since={"epoch": eb, "offset": 0})
        got = {a: [], b: []}
        while len(got[a]) < 25 or len(got[b]) < 25:
            m = c.next_event("message", timeout=60)
            got[m["channel"]].append(m["offset"])
        self.assertEqual((got[a], got[b]), (oa, ob))

    def test_unsubscribe_during_catch_up(self):
        ch = self.chan()
        epoch = self.client().ok("subscribe", channel=ch)["epoch"]
        publish_many(self.srv, ch, 30)
        c = self.client(rcvbuf=8192, timeout=60)
        c.send_request("subscribe", channel=ch, since={"epoch": epoch, "offset": 0})
        c.ok("unsubscribe", channel=ch, timeout=60)
        c.events.clear()  # replayed before the unsubscribe reply: allowed
        api(self.srv, "POST", chan_path(ch), {"after": 1})
        # Nothing of the channel after the unsubscribe reply; the connection still works.
        self.assertEqual(c.request("ping")["op"], "pong")
        self.assertEqual([m for m in c.quiet(0.5) if m["op"] == "message"], [])
        self.assertEqual(c.ok("presence", channel=ch)["subscribers"], 1)


class Fairness(HubCase):
    """Item 6: one client cannot stall the hub thread for the others."""

    server_args = ("--allow-anonymous", "--output-cap", "1MiB", "--history-size", "1000")
    bulk = "bulk"  # 300 x 60 KB: more than the in-memory ring, so reads go to the store

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        publish_many(cls.srv, cls.bulk, 300)

    def test_bulk_reads_do_not_delay_publishes(self):
        ch = self.bulk
        hog = self.client(rcvbuf=4096, timeout=60)
        for _ in range(100):
            hog.send_request("history", channel=ch, since=0, limit=1000)
        time.sleep(0.05)
        t0 = time.monotonic()
        api(self.srv, "POST", chan_path(self.chan("-other")), {"x": 1})
        took = time.monotonic() - t0
        self.assertLess(took, scaled(0.5), "a publish waited %.2fs behind bulk reads" % took)
        # The hog was told which requests were over its in-flight bound.
        codes = [m.get("code") for m in hog.quiet(1.0) if m["op"] == "error"]
        self.assertIn("too_many_requests", codes)

    def test_in_flight_bound(self):
        ch = self.chan()
        publish_many(self.srv, ch, 5, data="small")
        c = self.client()
        ids = c.send_requests("history", 100, channel=ch)
        answers = [c.reply(i, timeout=30) for i in ids]
        ok = sum(1 for a in answers if a["op"] == "reply")
        over = sum(1 for a in answers if a.get("code") == "too_many_requests")
        self.assertEqual(ok + over, 100)
        self.assertGreaterEqual(ok, 32)
        self.assertGreater(over, 0)

    def test_closed_client_costs_nothing_more(self):
        ch = self.bulk
        before = self.srv.cpu_seconds()
        for _ in range(5):
            c = HubClient(self.srv.addr, rcvbuf=4096)
            for _ in range(32):
                c.send_request("history", channel=ch, since=0, limit=1000)
            c.close()
        # A marker: reads are answered in order, so this one comes after theirs.
        self.client().ok("history", channel=ch, limit=1, timeout=60)
        # 5 x 32 full reads of 18 MB would cost seconds; one page each costs little.
        self.assertLess(self.srv.cpu_seconds() - before, scaled(0.5))


class ChannelTable(HubCase):
    """Item 7: channels nobody uses and with nothing stored leave memory."""

    server_args = ("--allow-anonymous", "--subscribe-rate", "0")

    @classmethod
    def setUpClass(cls):
        a = os.environ.get("ASAN_OPTIONS")  # RSS is measured: a small ASan quarantine
        if a:
            os.environ["ASAN_OPTIONS"] = a + ":quarantine_size_mb=1"
        try:
            super().setUpClass()
        finally:
            if a:
                os.environ["ASAN_OPTIONS"] = a

    def test_subscribe_unsubscribe_churn_leaves_no_channels(self):
        base = metric(self.srv, "plexus_hub_channels")
        rss0 = self.srv.rss_kb()
        c = self.client(timeout=60)
        for i in range(3000):
            c.send_request("subscribe", channel="churn-%d" % i)
            c.send_request("unsubscribe", channel="churn-%d" % i)
        self.assertEqual(c.request("ping", timeout=60)["op"], "pong")
        wait_for(lambda: metric(self.srv, "plexus_hub_channels") <= base, scaled(10),
                 what="channels to leave memory")
        self.assertLess(self.srv.rss_kb() - rss0, 20 * 1024)

    def test_empty_channel_keeps_its_epoch(self):
        ch = self.chan()
        c = self.client()
        epoch = c.ok("subscribe", channel=ch)["epoch"]
        c.close()
        api(self.srv, "POST", chan_path(ch), {"n": 1})
        d = self.client()
        r = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 0})
        self.assertEqual((r["epoch"], r["recovered"]), (epoch, True))
        self.assertEqual(d.next_event("message", ch)["offset"], 1)


class SubscribeRate(HubCase):
    server_args = ("--allow-anonymous", "--subscribe-rate", "10")

    def test_subscribes_are_rate_limited(self):
        c = self.client()
        ids = [c.send_request("subscribe", channel=self.chan("-%d" % i)) for i in range(30)]
        codes = [c.reply(i).get("code") for i in ids]
        self.assertIn("rate_limited", codes)
        self.assertGreaterEqual(codes.count(None), 10)


def disk_limit(nbytes):
    """preexec_fn: files the server writes may not grow past nbytes (EFBIG, as a full
    disk would refuse them); SIGXFSZ ignored so the write fails instead of killing."""
    def f():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return f


class Offsets(PxTestCase):
    """Item 10: an (epoch, offset) pair is never reused, `since` ahead is not recovered."""

    def test_failed_commits_do_not_advance_or_reuse_offsets(self):
        data = os.path.join(self.out_dir, "data")
        args = hub_args(self.out_dir, "--allow-anonymous", data_dir=data)
        srv = self.start_server(*args, preexec_fn=disk_limit(600 * 1024))
        ch = "full"
        acked, failed = [], 0
        body = json.dumps("y" * 20000)
        for _ in range(200):
            st, j, _ = api(srv, "POST", chan_path(ch), body)
            if st == 201:
                acked.append(j["offset"])
            else:
                self.assertEqual((st, j["error"]), (503, "storage_error"))
                failed += 1
                if failed >= 5:
                    break
        self.assertGreaterEqual(failed, 5, "the size limit never made a commit fail")
        self.assertTrue(acked)
        c = HubClient(srv.addr)
        rep = c.ok("subscribe", channel=ch)
        self.assertEqual(rep["offset"], acked[-1], "failed commits must not advance the offset")
        epoch = rep["epoch"]
        c.close()
        srv.stop()
        srv2 = self.start_server(*args)
        st, j, _ = api(srv2, "POST", chan_path(ch), {"after": "restart"})
        self.assertEqual(st, 201)
        new = j["offset"]
        self.assertGreater(new, acked[-1])
        d = HubClient(srv2.addr)
        rep = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": acked[-1]})
        self.assertEqual((rep["epoch"], rep["recovered"]), (epoch, True))
        self.assertEqual(d.next_event("message", ch)["offset"], new)
        d.close()

    def test_since_ahead_of_the_channel_is_not_recovered(self):
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous"))
        ch = "ahead"
        api(srv, "POST", chan_path(ch), 1)
        c = HubClient(srv.addr)
        epoch = c.ok("subscribe", channel=ch)["epoch"]
        d = HubClient(srv.addr)
        rep = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 60})
        self.assertEqual((rep["offset"], rep["recovered"]), (1, False))
        with SseReader(srv.addr, chan_path(ch, "events"), headers=("Last-Event-ID: 60",)) as sse:
            ev = sse.event()
            self.assertEqual((ev.get("event"), ev["id"]), ("recovery-failed", "1"))
        c.close()
        d.close()


SECRET = "hardening-secret-0123456789abcdef"


class Tokens(HubCase):
    server_args = ("--jwt-secret", SECRET, "--api-key", "the-api-key", "--allow-anonymous")

    def test_channel_listing_follows_the_channels_claim(self):
        lobby, payroll = "room:lobby", "secret:payroll-2027"
        a, b = self.client(), self.client()
        a.ok("subscribe", channel=lobby)
        b.ok("subscribe", channel=payroll)
        tok = jwt(SECRET, {"sub": "u1", "channels": ["room:lobby"]})
        names = [c["channel"] for c in api(self.srv, "GET", "/api/channels", token=tok)[1]["channels"]]
        self.assertIn(lobby, names)
        self.assertNotIn(payroll, names)
        names = [c["channel"] for c in
                 api(self.srv, "GET", "/api/channels", token="the-api-key")[1]["channels"]]
        self.assertIn(payroll, names)

    def test_expired_token_closes_the_websocket(self):
        tok = jwt(SECRET, {"sub": "u2", "exp": int(time.time()) + 2})
        c = self.client(token=tok)
        ch = self.chan()
        c.ok("subscribe", channel=ch)
        code, got = c.wait_closed(timeout=10)
        self.assertEqual(code, 1008)
        self.assertIn("token_expired", [m.get("code") for m in got])

    def test_auth_renews_the_token(self):
        now = int(time.time())
        c = self.client(token=jwt(SECRET, {"sub": "u3", "exp": now + 2}))
        r = c.ok("auth", token=jwt(SECRET, {"sub": "u3", "exp": now + 60}))
        self.assertEqual(r["exp"], now + 60)
        time.sleep(3)
        c.ok("publish", channel=self.chan(), data=1)  # still open, still allowed
        e = c.request("auth", token=jwt(SECRET, {"sub": "someone-else", "exp": now + 60}))
        self.assertEqual(e.get("code"), "forbidden")

    def test_expired_token_ends_the_event_stream(self):
        tok = jwt(SECRET, {"sub": "u4", "exp": int(time.time()) + 2})
        with SseReader(self.srv.addr, chan_path(self.chan(), "events") + "?token=" + tok,
                       timeout=10) as sse:
            self.assertEqual(sse.status, 200)
            ev = sse.event(timeout=10)
            self.assertEqual(ev.get("event"), "token-expired")
            self.assertIsNone(sse.event(timeout=10))  # the stream ended


class HeadOnStream(HubCase):
    """Item 12: HEAD on an event stream answers the head and ends."""

    def test_head_on_events(self):
        with RawClient(self.srv.addr) as c:
            c.send(b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n" % chan_path(self.chan(), "events").encode())
            r = c.read_response(method="HEAD")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("content-type"), "text/event-stream")
            time.sleep(0.3)
            self.assertTrue(c.is_open())
            self.assertEqual(c.buf, b"", "no body bytes after a HEAD answer")
            c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)


if __name__ == "__main__":
    pxtest.main()
