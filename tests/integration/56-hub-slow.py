#!/usr/bin/python3
"""56-hub-slow: a slow consumer on /ws is cut off, the others are not hurt.

A subscriber with a tiny SO_RCVBUF stops reading while a publisher sends 32 KiB
messages at full speed (pipelined, --publish-rate 0). With --output-cap 1MiB:

  - the server closes the stalled subscriber once its output budget is full:
    plexus_ws_slow_consumer_closes_total goes up by exactly one, the log says
    "slow consumer ... closing with 1008", and when the client finally reads it
    finds the messages that were queued, then close 1008 (or the end of the
    connection), never more than the budget plus the kernel buffers;
  - a normal subscriber on the same channel receives every message, in order,
    byte for byte;
  - the server's RSS stays bounded (well under the volume published, which is
    what it would hold if the budget did not work).

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/56-hub-slow.py -v
"""

import json
import os
import threading
import time

import pxtest
from hubclient import HubClient, hub_args, metric
from wsraw import OP_CLOSE, OP_TEXT

MSG = 32 * 1024
COUNT = 2400          # 75 MiB in all
WINDOW = 64
AHEAD = 12           # 384 KiB: within the normal subscriber's budget
RSS_GROWTH_MAX_MB = 40


class SlowConsumer(pxtest.PxTestCase):
    def test_slow_subscriber_closed_others_served(self):
        self.require_local()
        env = {}
        if os.environ.get("ASAN_OPTIONS"):
            # A small quarantine, or freed buffers count as RSS for minutes.
            env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=8"
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous", "--output-cap", "1MiB",
                                          "--publish-rate", "0", "--workers", "2"), env=env)
        ch = "slow"
        slow = HubClient(srv.addr, rcvbuf=4096)
        self.addCleanup(slow.close)
        slow.ok("subscribe", channel=ch)
        normal = HubClient(srv.addr)
        self.addCleanup(normal.close)
        normal.ok("subscribe", channel=ch)
        pub = HubClient(srv.addr)
        self.addCleanup(pub.close)
        base_rss = srv.rss_kb()
        base_closes = metric(srv, "plexus_ws_slow_consumer_closes_total")

        # The normal subscriber reads in its own thread.
        received, errors = [], []

        def reader():
            try:
                while len(received) < COUNT:
                    m = normal.ws.recv_message(timeout=30)
                    if m is None:
                        raise AssertionError("the normal subscriber was closed (code %s)" % normal.close_code)
                    op, payload = m
                    normal.ws.frames.clear()
                    if op == OP_TEXT:
                        received.append(payload)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        # RSS sampler; it also drains the stalled client as soon as the server
        # counts it as a slow consumer (before the close timer aborts it).
        peak = [base_rss]
        stop = threading.Event()
        slow_result = {}

        def drain_slow():
            got, code = 0, None
            try:
                while True:
                    f = slow.ws.recv_message(timeout=10)
                    if f is None:
                        break
                    op, p = f
                    slow.ws.frames.clear()
                    if op == OP_CLOSE:
                        code = int.from_bytes(p[:2], "big")
                        slow_result["reason"] = p[2:]
                        break
                    if op == OP_TEXT:
                        got += 1
                        if json.loads(p)["offset"] != got:
                            slow_result["order"] = "offset %d at position %d" % (json.loads(p)["offset"], got)
            except (ConnectionResetError, OSError) as e:
                slow_result["error"] = repr(e)
            slow_result.update(got=got, code=code)

        # A sampler that stops early leaves the memory bound unchecked: any
        # error it meets fails the test, and it must have sampled throughout.
        sampler_errors, samples = [], [0]

        def sampler():
            try:
                while not stop.is_set():
                    rss = srv.rss_kb()
                    if rss <= 0:
                        raise AssertionError("no VmRSS for the server (pid %d)" % srv.pid)
                    peak[0] = max(peak[0], rss)
                    samples[0] += 1
                    if "got" not in slow_result and samples[0] % 5 == 0 and \
                            metric(srv, "plexus_ws_slow_consumer_closes_total") > base_closes:
                        drain_slow()
                    time.sleep(0.02)
            except Exception as e:  # noqa: BLE001 - reported below
                sampler_errors.append(repr(e))

        rt = threading.Thread(target=reader, daemon=True)
        st = threading.Thread(target=sampler, daemon=True)
        rt.start()
        st.start()

        def payload(i):
            return '"%06d%s"' % (i, "y" * (MSG - 8))

        t0 = time.monotonic()
        inflight, sent, acked = 0, 0, 0
        try:
            while acked < COUNT:
                # Full speed, as far as the normal subscriber keeps up: it
                # must never be more than AHEAD messages behind.
                while sent < COUNT and inflight < WINDOW and sent - len(received) < AHEAD:
                    pub.send('{"op":"publish","id":%d,"channel":"%s","data":%s}' % (sent + 1, ch, payload(sent)))
                    sent += 1
                    inflight += 1
                if inflight == 0:
                    time.sleep(0.001)
                    continue
                m = pub.recv(timeout=30)
                self.assertIsNotNone(m, "the publisher was closed")
                self.assertEqual(m["op"], "reply", m)
                acked += 1
                inflight -= 1
            rt.join(pxtest.scaled(60))
        finally:
            stop.set()
            st.join()
        elapsed = time.monotonic() - t0
        self.assertEqual(errors, [])
        self.assertEqual(sampler_errors, [], "the RSS sampler failed")
        # About one sample per 20 ms while publishing (less while it drains the
        # stalled client): a handful means the peak was not watched.
        self.assertGreaterEqual(samples[0], max(10, int(elapsed / 0.02 / 4)),
                                "the RSS sampler ran %d times in %.1f s" % (samples[0], elapsed))
        self.assertFalse(rt.is_alive(), "the normal subscriber got %d of %d" % (len(received), COUNT))

        # Every message to the normal subscriber, in order, byte for byte.
        self.assertEqual(len(received), COUNT)
        for i, raw in enumerate(received):
            want = '{"op":"message","channel":"%s","offset":%d,"data":%s}' % (ch, i + 1, payload(i))
            if raw.decode() != want:
                self.fail("message %d differs: %r..." % (i + 1, raw[:80]))

        # The stalled one was closed, once.
        pxtest.wait_for(lambda: metric(srv, "plexus_ws_slow_consumer_closes_total") >= base_closes + 1, 5,
                        what="plexus_ws_slow_consumer_closes_total to go up")
        self.assertEqual(metric(srv, "plexus_ws_slow_consumer_closes_total"), base_closes + 1)
        m = srv.wait_log(r"slow consumer, \d+ bytes queued: closing with 1008")
        self.assertTrue(m)
        # What the stalled client found when it read at last: the messages that
        # were queued, in order from the start, then close 1008.
        pxtest.wait_for(lambda: "got" in slow_result, 15, what="the stalled client to be drained")
        got, code = slow_result["got"], slow_result["code"]
        self.assertNotIn("order", slow_result)
        self.assertEqual(code, 1008, slow_result)
        self.assertEqual(slow_result["reason"], b"slow consumer")
        self.assertLess(got, COUNT, "the stalled client was not cut off")
        self.assertGreaterEqual(got * (MSG + 64), 1 << 20, "closed before its 1 MiB budget was full")
        sys_note = ("slow client read %d messages then %s; %.1f MiB in %.2f s; RSS %d -> peak %d KiB "
                    "(%d samples)" % (got, "close %s" % code if code else "EOF", COUNT * MSG / 1048576,
                                      elapsed, base_rss, peak[0], samples[0]))
        print("\n56-hub-slow: " + sys_note)
        # Bounded memory: nowhere near the 75 MiB that went through (what the
        # server would hold without the budget). Sanitizers add their own:
        # ASan's redzones and quarantine, ThreadSanitizer's shadow memory
        # (several times the application's).
        factor = {None: 1, "address": 2, "thread": 8}[pxtest.SANITIZER]
        self.assertLess((peak[0] - base_rss) / 1024, RSS_GROWTH_MAX_MB * factor, sys_note)
        # The others are still fine.
        self.assertEqual(pub.request("ping")["op"], "pong")
        self.assertEqual(normal.request("ping")["op"], "pong")
        rc = srv.stop()
        self.assertEqual(rc, 0, "exit code after SIGTERM (99: sanitizer report or leak)")


if __name__ == "__main__":
    pxtest.main()
