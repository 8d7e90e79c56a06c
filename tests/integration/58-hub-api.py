"""The hub's public C API through examples/clock: a thread that is not a worker publishes
(px_hub_publish, acknowledged on the hub thread), a C subscriber on a worker receives
(px_hub_subscribe), and native clients see the same channel."""

import os

import pxtest
from hubclient import HubClient, SseReader, chan_path
from pxtest import PxTestCase


class Clock(PxTestCase):
    def test_ticks_reach_native_clients_in_order(self):
        srv = self.start_server("--data-dir", os.path.join(self.out_dir, "data"),
                                "--interval", "50", example="clock")
        with SseReader(srv.addr, chan_path("clock", "events") + "?since=0") as sse:
            ids = [int(e["id"]) for e in sse.events(5, timeout=10)]
        self.assertEqual(ids, list(range(ids[0], ids[0] + 5)))
        c = HubClient(srv.addr)
        h = c.ok("history", channel="clock", since=0, limit=3)
        self.assertEqual(len(h["messages"]), 3)
        self.assertIn("unix_ms", h["messages"][0]["data"])
        rep = c.ok("subscribe", channel="clock")
        self.assertGreaterEqual(c.next_event("message", "clock")["offset"], rep["offset"] + 1)
        c.close()
        self.assertStopsCleanly(srv)
        self.assertRegex(srv.log_text(), r"clock: [1-9][0-9]* tick\(s\) stored")

    def test_bad_arguments(self):
        r = pxtest.run_plexus(["--interval", "5"], binary=os.path.join(pxtest.EXAMPLES_DIR, "clock"))
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    pxtest.main()
