#!/usr/bin/python3
"""54-hub-recovery: offsets, epochs and recovery (docs/protocol.md, "subscribe"
with since), across reconnects, restarts and concurrent publishers.

  - reconnect with since {epoch, offset}: the reply says recovered:true and the
    missed messages follow it in order, then live ones, with no gap and no
    duplicate, also while an HTTP publisher keeps publishing during the
    reconnect (from the in-memory ring and, for gaps over 256, from SQLite);
  - since without epoch, since == latest, since past history (--history-size 5)
    -> recovered:false and nothing replayed; a wrong epoch -> recovered:false;
  - --history-ttl: expired messages leave history and recovery, from memory
    as from SQLite;
  - SIGTERM and a start on the same --data-dir keep epochs, offsets and history
    (and recovery across the restart works);
  - ordering: --workers 2, 4 publishers on their own connections publishing
    concurrently to one channel, 3 subscribers: every subscriber sees the same
    sequence, offsets go up by exactly 1, each acked offset appears exactly once
    with the data that was acked for it.

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/54-hub-recovery.py -v
"""

import asyncio
import json
import os
import threading
import time

import pxtest
from hubclient import HubCase, HubClient, aconnect, api, chan_path, hub_args


class Publisher(threading.Thread):
    """Publishes {"p":i} over HTTP to `ch` until stopped (or `limit` messages);
    .acked maps offset -> i."""

    def __init__(self, srv, ch, limit=100000, pause=0.0):
        super().__init__(daemon=True)
        self.srv, self.ch, self.limit, self.pause = srv, ch, limit, pause
        self.stop = threading.Event()
        self.acked = {}
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.stop.is_set() and i < self.limit:
                st, j, r = api(self.srv, "POST", chan_path(self.ch), {"p": i})
                if st != 201:
                    raise AssertionError("publish: %d %r" % (st, r.body))
                self.acked[j["offset"]] = i
                i += 1
                if self.pause:
                    time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 - checked by finish()
            self.error = e

    def finish(self):
        self.stop.set()
        self.join()
        if self.error:
            raise self.error
        return self.acked


class Recovery(HubCase):
    server_args = ("--allow-anonymous", "--workers", "2", "--publish-rate", "0")

    def post(self, ch, data):
        st, j, r = api(self.srv, "POST", chan_path(ch), data)
        self.assertEqual(st, 201, r.body)
        return j

    def test_recover_missed(self):
        ch = self.chan()
        c = self.client()
        first = c.ok("subscribe", channel=ch)
        for i in range(1, 4):
            self.post(ch, {"n": i})
        got = c.messages(ch, 3)
        epoch, last = first["epoch"], got[-1]["offset"]
        self.assertEqual(last, 3)
        c.close()
        for i in range(4, 14):
            self.post(ch, {"n": i})
        c2 = self.client()
        r = c2.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": last})
        self.assertEqual((r["epoch"], r["offset"], r["recovered"]), (epoch, 13, True))
        # Nothing but the missed messages between the reply and the live ones.
        missed = [c2.next_event(None) for _ in range(10)]
        self.assertEqual([(m["op"], m["offset"], m["data"]["n"]) for m in missed],
                         [("message", i, i) for i in range(4, 14)])
        self.post(ch, {"n": 14})
        self.assertEqual(c2.next_event(None)["offset"], 14)
        # The missed messages are the very frames live subscribers got.
        self.assertEqual(missed[0].raw, '{"op":"message","channel":"%s","offset":4,"data":{"n":4}}' % ch)

    def test_since_variants(self):
        ch = self.chan()
        for i in range(1, 6):
            self.post(ch, i)
        epoch = self.client().ok("history", channel=ch)["epoch"]
        c = self.client()
        # Without an epoch: offsets are taken as this epoch's.
        r = c.ok("subscribe", channel=ch, since={"offset": 3})
        self.assertEqual((r["recovered"], r["offset"]), (True, 5))
        self.assertEqual([m["offset"] for m in c.messages(ch, 2)], [4, 5])
        # since == latest: recovered, nothing to replay.
        d = self.client()
        r = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 5})
        self.assertIs(r["recovered"], True)
        # since 0: everything (history still reaches back to 1).
        e = self.client()
        r = e.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 0})
        self.assertIs(r["recovered"], True)
        self.assertEqual([m["offset"] for m in e.messages(ch, 5)], [1, 2, 3, 4, 5])
        # A wrong epoch: history was lost as far as the client can tell.
        f = self.client()
        r = f.ok("subscribe", channel=ch, since={"epoch": "0123456789abcdef", "offset": 2})
        self.assertEqual((r["recovered"], r["epoch"], r["offset"]), (False, epoch, 5))
        self.post(ch, 6)
        for x in (c, d, e, f):
            nxt = x.next_event("message", ch)
            self.assertEqual(nxt["offset"], 6, "nothing replayed before the live message")
        # A new channel with since: recovered (nothing was missed).
        g = self.client()
        r = g.ok("subscribe", channel=self.chan("-new"), since={"offset": 0})
        self.assertEqual((r["offset"], r["recovered"]), (0, True))

    def reconnect_during_publishing(self, ch, gap_messages, rounds):
        pub = Publisher(self.srv, ch)
        c = self.client()
        r = c.ok("subscribe", channel=ch)
        epoch, seen = r["epoch"], []
        pub.start()
        try:
            for _ in range(rounds):
                # Read a little live, then drop the connection.
                for _ in range(5):
                    seen.append(c.next_event("message", ch)["offset"])
                c.close()
                # Miss `gap_messages` while away.
                target = seen[-1] + gap_messages
                pxtest.wait_for(lambda: pub.acked and max(pub.acked) >= target, 20,
                                what="the publisher to get %d ahead" % gap_messages)
                c = self.client()
                r = c.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": seen[-1]})
                self.assertIs(r["recovered"], True, r)
                self.assertGreaterEqual(r["offset"], target)
        finally:
            acked = pub.finish()
        # Everything up to the last acked, nothing twice, nothing missing.
        last = max(acked)
        while seen[-1] < last:
            seen.append(c.next_event("message", ch)["offset"])
        self.assertEqual(seen, list(range(1, last + 1)))
        # Nothing more (no repeat) before the next message published.
        marker = api(self.srv, "POST", chan_path(ch), {"marker": True})[1]["offset"]
        got, earlier = c.until(lambda m: m.get("op") == "message")
        self.assertEqual((got["offset"], earlier), (marker, []))

    def test_recover_while_publishing(self):
        self.reconnect_during_publishing(self.chan(), gap_messages=20, rounds=6)

    def test_recover_from_store(self):
        # A gap wider than the in-memory ring (256): replayed from SQLite.
        self.reconnect_during_publishing(self.chan(), gap_messages=300, rounds=2)

    def test_ordering_across_workers(self):
        ch = self.chan()
        P, S, N, WINDOW = 4, 3, 150, 16

        async def publisher(k):
            ws, _ = await aconnect(self.srv)
            acked = {}
            try:
                inflight = {}
                i = 0
                while i < N or inflight:
                    while i < N and len(inflight) < WINDOW:
                        rid = i + 1
                        inflight[rid] = '{"k":%d,"i":%d}' % (k, i)
                        await ws.send('{"op":"publish","id":%d,"channel":"%s","data":%s}'
                                      % (rid, ch, inflight[rid]))
                        i += 1
                    m = json.loads(await asyncio.wait_for(ws.recv(), pxtest.scaled(20)))
                    self.assertEqual(m["op"], "reply", m)
                    acked[m["offset"]] = inflight.pop(m["id"])
            finally:
                await ws.close()
            return acked

        async def subscriber(ready):
            ws, _ = await aconnect(self.srv)
            try:
                await ws.send(json.dumps({"op": "subscribe", "id": 1, "channel": ch}))
                r = json.loads(await asyncio.wait_for(ws.recv(), pxtest.scaled(10)))
                self.assertEqual((r["op"], r["offset"]), ("reply", 0), r)
                ready.set_result(True) if not ready.done() else None
                out = []
                while len(out) < P * N:
                    raw = await asyncio.wait_for(ws.recv(), pxtest.scaled(20))
                    m = json.loads(raw)
                    self.assertEqual(m["op"], "message", m)
                    out.append((m["offset"], json.dumps(m["data"], separators=(",", ":"))))
                return out
            finally:
                await ws.close()

        async def main():
            loop = asyncio.get_running_loop()
            readies = [loop.create_future() for _ in range(S)]
            subs = [asyncio.create_task(subscriber(r)) for r in readies]
            await asyncio.wait_for(asyncio.gather(*readies), pxtest.scaled(10))
            acks = await asyncio.gather(*[publisher(k) for k in range(P)])
            return acks, await asyncio.gather(*subs)

        acks, seqs = asyncio.run(main())
        acked = {}
        for a in acks:
            for off, data in a.items():
                self.assertNotIn(off, acked, "offset %d acked twice" % off)
                acked[off] = data
        self.assertEqual(sorted(acked), list(range(1, P * N + 1)))
        for s in seqs:
            self.assertEqual([o for o, _ in s], list(range(1, P * N + 1)), "offsets up by exactly 1")
            self.assertEqual(s, seqs[0], "every subscriber sees the same sequence")
            self.assertEqual(dict(s), acked, "each acked offset carries the acked data")
        for k in range(P):
            mine = [d for _, d in seqs[0] if d.startswith('{"k":%d,' % k)]
            self.assertEqual(mine, ['{"k":%d,"i":%d}' % (k, i) for i in range(N)],
                             "one connection's publishes keep their order")
        st, j, _ = api(self.srv, "GET", chan_path(ch) + "?since=%d&limit=100" % (P * N - 100))
        self.assertEqual([(m["offset"], json.dumps(m["data"], separators=(",", ":"))) for m in j["messages"]],
                         seqs[0][-100:])


class ShortHistory(HubCase):
    server_args = ("--allow-anonymous", "--history-size", "5")

    def test_since_older_than_history(self):
        ch = self.chan()
        c = self.client()
        epoch = c.ok("subscribe", channel=ch)["epoch"]
        c.close()
        for i in range(1, 11):
            api(self.srv, "POST", chan_path(ch), i)
        for since, recovered, replay in ((2, False, []), (4, False, []), (5, True, [6, 7, 8, 9, 10]),
                                         (8, True, [9, 10]), (10, True, [])):
            with self.subTest(since=since):
                d = self.client()
                r = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": since})
                self.assertEqual((r["offset"], r["recovered"]), (10, recovered))
                self.assertEqual([m["offset"] for m in d.quiet(0.3) if m["op"] == "message"], replay)
        h = self.client().ok("history", channel=ch)
        self.assertEqual([m["offset"] for m in h["messages"]], [6, 7, 8, 9, 10])
        self.assertIs(h["truncated"], True)


class HistoryTtl(HubCase):
    server_args = ("--allow-anonymous", "--history-ttl", "1s")

    def test_ttl_applies_to_memory_and_store(self):
        ch = self.chan()
        c = self.client()
        epoch = c.ok("subscribe", channel=ch)["epoch"]
        for i in range(1, 4):
            api(self.srv, "POST", chan_path(ch), i)
        self.assertEqual([m["offset"] for m in c.messages(ch, 3)], [1, 2, 3])
        h = c.ok("history", channel=ch)
        self.assertEqual([m["offset"] for m in h["messages"]], [1, 2, 3], "young messages are kept")
        # Once they are older than 1 s (the store trims every second), neither
        # the in-memory ring nor SQLite may hand them out: history, HTTP and
        # recovery agree with what a restarted server would say.
        pxtest.wait_for(lambda: not c.ok("history", channel=ch)["messages"], 6,
                        what="expired messages to leave history")
        h = c.ok("history", channel=ch)
        self.assertEqual((h["offset"], h["messages"], h.get("truncated")), (3, [], True))
        st, j, _ = api(self.srv, "GET", chan_path(ch))
        self.assertEqual((st, j["messages"]), (200, []))
        d = self.client()
        r = d.ok("subscribe", channel=ch, since={"epoch": epoch, "offset": 1})
        self.assertEqual((r["offset"], r["recovered"]), (3, False))
        # Nothing replayed: the next message published is the first to arrive.
        api(self.srv, "POST", chan_path(ch), 4)
        got, earlier = d.until(lambda m: m.get("op") == "message")
        self.assertEqual((got["offset"], earlier), (4, []))
        self.assertEqual([m["offset"] for m in c.ok("history", channel=ch, since=3)["messages"]], [4])


class Restart(pxtest.PxTestCase):
    def test_restart_keeps_epoch_offsets_history(self):
        self.require_local()
        data = os.path.join(self.out_dir, "data")
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous", data_dir=data))
        chans = ["a", "b/c", "d"]
        epochs = {}
        with HubClient(srv.addr) as c:
            for n, ch in enumerate(chans):
                for i in range(n * 3 + 2):
                    r = c.ok("publish", channel=ch, data={"ch": ch, "i": i})
                epochs[ch] = c.ok("history", channel=ch)["epoch"]
            watch = c.ok("subscribe", channel="a")
        self.assertEqual(watch["offset"], 2)
        for round_ in range(2):
            srv.restart()  # SIGTERM; raises unless the exit code is 0 (no leak report)
            with HubClient(srv.addr) as c:
                for n, ch in enumerate(chans):
                    h = c.ok("history", channel=ch)
                    want = n * 3 + 2 + round_
                    self.assertEqual((h["epoch"], h["offset"]), (epochs[ch], want), ch)
                    self.assertEqual([m["data"] for m in h["messages"]][: n * 3 + 2],
                                     [{"ch": ch, "i": i} for i in range(n * 3 + 2)])
                    self.assertEqual([m["offset"] for m in h["messages"]], list(range(1, want + 1)))
                    self.assertEqual(c.ok("publish", channel=ch, data="after-%d" % round_)["offset"], want + 1)
                # Recovery across the restart (the in-memory ring is empty: SQLite).
                r = c.ok("subscribe", channel="a", since={"epoch": epochs["a"], "offset": 1})
                self.assertEqual((r["recovered"], r["offset"]), (True, 3 + round_))
                got = c.messages("a", 2 + round_)
                self.assertEqual([m["offset"] for m in got], list(range(2, 4 + round_)))
        st, j, _ = api(srv, "GET", "/api/channels/b%2Fc/messages")
        self.assertEqual((j["epoch"], j["offset"]), (epochs["b/c"], 7))
        rc = srv.stop()
        self.assertEqual(rc, 0, "exit code after SIGTERM (99: sanitizer report or leak)")


if __name__ == "__main__":
    pxtest.main()
