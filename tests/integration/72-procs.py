#!/usr/bin/python3
# px-test: serial  (three plexus processes on one data directory)
"""72-procs: several plexus processes of one host sharing a data directory
(--data-dir-shared: the SQLite store shared by the processes and the local "proc:" broker,
a Unix datagram socket per process in <data-dir>/procs/; docs/internals/processes.md).

  - three processes, one data directory: native WebSocket, SSE and HTTP publishes through
    one reach the subscribers of the others in order, offsets are one sequence, history and
    recovery are the same from every process; a message larger than a datagram carries
    (64 KiB) is read from the database by offset; three publishers at once, one through each
    process: one sequence, every subscriber gets every message once, in order
  - presence merges across processes (members in a table of the database, join/leave by
    datagram), each join/leave seen once; a kill -9'ed process's members leave within the
    TTL, once
  - kill -9 of a process during publishes, several rounds: no acknowledged message lost,
    offsets strictly increasing, no duplicates, every process delivers them in order
  - the lock: a process without --data-dir-shared refuses a directory shared processes
    use, and without the option a second process still refuses (one process, as before);
    --data-dir-shared with a --store URL is a configuration error

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/72-procs.py -v
"""

import json
import os
import random
import subprocess
import threading
import time

import pxtest
from hubclient import (HubClient, SseReader, api, chan_path, full_history, hub_args, metric,
                       publish_http)
from pxtest import scaled


class Procs(pxtest.PxTestCase):
    def setUp(self):
        super().setUp()
        self.require_local()
        self.data = os.path.join(self.out_dir, "shared")

    def proc(self, *extra, name=None):
        i = sum(1 for s in self.servers if not s.external)
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous", "--data-dir-shared",
                                           "--history-size", "0", *extra, data_dir=self.data),
                                name=name or "proc%d" % i)
        pxtest.wait_for(lambda: api(srv, "GET", "/healthz")[0] == 200, 15, what="/healthz 200")
        return srv

    def chan(self, suffix=""):
        return "%s-%s%s" % (self._testMethodName[5:25], os.urandom(3).hex(), suffix)

    def test_fanout_offsets_history(self):
        procs = [self.proc("--max-payload", "256KiB") for _ in range(3)]
        ch = self.chan()
        subs = [HubClient(p.addr) for p in procs]
        for s in subs:
            s.ok("subscribe", channel=ch)
        sse = SseReader(procs[2].addr, chan_path(ch, "events"))
        pub_ws = HubClient(procs[1].addr)
        sent = []
        for i in range(12):
            data = {"i": i}
            if i % 3 == 1:
                off = pub_ws.ok("publish", channel=ch, data=data)["offset"]
            else:
                st, body = publish_http(procs[i % 3], ch, data)
                self.assertEqual(st, 200, body)
                off = body["offset"]
            sent.append((off, data))
        self.assertEqual([o for o, _ in sent], list(range(1, 13)), "one sequence")
        for s in subs:
            self.assertEqual([(m["offset"], m["data"]) for m in s.messages(ch, 12)], sent)
        self.assertEqual([(int(e["id"]), json.loads(e["data"])) for e in sse.events(12)], sent)
        hist = [s.ok("history", channel=ch, since={"offset": 3}) for s in subs]
        for h in hist:
            self.assertEqual([(m["offset"], m["data"]) for m in h["messages"]], sent[3:])
            self.assertEqual((h["epoch"], h["offset"]), (hist[0]["epoch"], 12))
        for p in procs:
            with HubClient(p.addr) as r:
                rep = r.ok("subscribe", channel=ch, since={"epoch": hist[0]["epoch"], "offset": 8})
                self.assertEqual((rep["recovered"], rep["offset"]), (True, 12))
                self.assertEqual([(m["offset"], m["data"]) for m in r.messages(ch, 4)], sent[8:])
            msgs, body = full_history(p, ch)
            self.assertEqual([(m["offset"], m["data"]) for m in msgs], sent)
        # Larger than a datagram carries: the others read it from the database by offset.
        big = {"big": "x" * (100 * 1024)}
        st, body = publish_http(procs[0], ch, big)
        self.assertEqual((st, body["offset"]), (200, 13))
        for s in subs:
            m = s.next_event("message", ch)
            self.assertEqual((m["offset"], m["data"]), (13, big))
        sse.close()
        for c in subs + [pub_ws]:
            c.close()
        self.assertGreater(metric(procs[1], "plexus_broker_messages_total"), 0)
        self.assertGreater(metric(procs[1], "plexus_hub_gap_reads_total"), 0)
        self.assertEqual(sorted(os.listdir(os.path.join(self.data, "procs"))),
                         sorted("%d.sock" % p.proc.pid for p in procs))

    def test_concurrent_publishers(self):
        procs = [self.proc() for _ in range(3)]
        ch = self.chan()
        subs = [HubClient(p.addr) for p in procs]
        for s in subs:
            s.ok("subscribe", channel=ch)
        each = 150
        acked = {}
        errors = []

        def run(k):
            for i in range(each):
                st, body = publish_http(procs[k], ch, {"p": k, "i": i})
                if st != 200:
                    errors.append((st, body))
                    return
                acked[body["offset"]] = {"p": k, "i": i}

        threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(acked), list(range(1, 3 * each + 1)), "one sequence")
        for s in subs:
            got = s.messages(ch, 3 * each, timeout=scaled(20))
            self.assertEqual([(m["offset"], m["data"]) for m in got], sorted(acked.items()))
            s.close()
        for p in procs:
            msgs, _ = full_history(p, ch)
            self.assertEqual([(m["offset"], m["data"]) for m in msgs], sorted(acked.items()))

    def test_presence_merges_and_a_killed_process_members_leave(self):
        ttl = 2.0
        a, b, c = (self.proc("--presence-ttl", "2s") for _ in range(3))
        ch = self.chan()
        ann = HubClient(a.addr)
        ann.ok("subscribe", channel=ch, presence=True, info="Ann")
        self.assertEqual(ann.next_event("join", ch)["client"], ann.client_id)
        dee = HubClient(b.addr)
        dee.ok("subscribe", channel=ch, presence=True, info="Dee")
        watchers = (ann, dee)
        for w in watchers:
            self.assertEqual(w.next_event("join", ch)["client"], dee.client_id)

        def seen(op, who, info):
            for w in watchers:
                e = w.next_event(op, ch, timeout=10)
                self.assertEqual(dict(e), {"op": op, "channel": ch, "client": who.client_id,
                                           "info": info})

        def members(nodes, want):
            for n in nodes:
                with HubClient(n.addr) as q:
                    p = q.ok("presence", channel=ch)
                    self.assertEqual({x["client"]: x.get("info") for x in p["clients"]}, want)

        bob = HubClient(c.addr)
        bob.ok("subscribe", channel=ch, info="Bob")
        seen("join", bob, "Bob")
        want = {ann.client_id: "Ann", dee.client_id: "Dee", bob.client_id: "Bob"}
        members((a, b, c), want)
        time.sleep(ttl * 1.5)  # refreshed by their processes: still there
        members((a, b, c), want)
        cid = HubClient(a.addr)
        cid.ok("subscribe", channel=ch, info="Cid")
        seen("join", cid, "Cid")
        cid.close()
        seen("leave", cid, "Cid")
        t0 = time.monotonic()
        c.kill()
        seen("leave", bob, "Bob")
        self.assertLess(time.monotonic() - t0, scaled(ttl + ttl / 3 + 1.5))
        time.sleep(ttl)  # more sweeps by both processes: no second leave
        self.assertEqual(publish_http(b, ch, {"mark": 1})[0], 200)
        for w in watchers:
            m, earlier = w.until(lambda m: m.get("op") == "message" and m.get("channel") == ch)
            self.assertEqual([x for x in earlier if x.get("op") in ("join", "leave")], [])
        members((a, b), {ann.client_id: "Ann", dee.client_id: "Dee"})
        # The killed process's socket is gone once someone found it dead.
        self.assertNotIn("%d.sock" % c.proc.pid, os.listdir(os.path.join(self.data, "procs")))
        bob.close()
        dee.close()
        ann.close()

    def test_kill9_process_during_publishes(self):
        steady = self.proc(name="steady")
        ch = self.chan()
        watcher = HubClient(steady.addr)
        watcher.ok("subscribe", channel=ch)
        rounds = int(os.environ.get("PX_KILL9_ROUNDS") or 10)
        seed = int(os.environ.get("PX_KILL9_SEED") or random.randrange(1 << 30))
        print("seed", seed)
        rnd = random.Random(seed)
        acked = {}
        victim = None
        for rno in range(rounds):
            if victim is None:
                victim = self.proc(name="victim")
            else:
                victim.start()
            stop = threading.Event()

            def run(rno=rno):
                i = 0
                while not stop.is_set():
                    data = {"r": rno, "i": i}
                    i += 1
                    try:
                        st, body = publish_http(victim, ch, data, timeout=5)
                    except OSError:
                        return
                    if st == 200:
                        acked[body["offset"]] = data

            t = threading.Thread(target=run)
            t.start()
            time.sleep(rnd.uniform(0.05, 0.3))
            victim.kill()
            stop.set()
            t.join()
        self.assertGreater(len(acked), rounds)
        st, body = publish_http(steady, ch, {"last": 1})
        self.assertEqual(st, 200, body)
        last = body["offset"]
        acked[last] = {"last": 1}
        msgs, _ = full_history(steady, ch)
        offs = [m["offset"] for m in msgs]
        self.assertEqual(offs, list(range(1, len(offs) + 1)), "one sequence, no hole")
        stored = {m["offset"]: m["data"] for m in msgs}
        for off, data in acked.items():
            self.assertEqual(stored.get(off), data, "acknowledged message %d lost" % off)
        got = []
        while not got or got[-1] < max(last, offs[-1]):
            got.append(watcher.next_event("message", ch, timeout=10)["offset"])
        self.assertEqual(got, offs)
        watcher.close()

    def refused(self, *extra):
        """A plexus on the shared directory that must refuse to start: its stderr."""
        out = subprocess.run([pxtest.PLEXUS_BIN, "--listen", "127.0.0.1:0",
                              *hub_args(self.out_dir, "--allow-anonymous", *extra,
                                        data_dir=self.data)],
                             capture_output=True, text=True, timeout=scaled(20))
        self.assertEqual(out.returncode, 2, out.stderr)
        return out.stderr

    def test_lock_modes(self):
        a = self.proc()
        # Not shared on a shared directory: refused (its cache would be wrong).
        self.assertIn("in use by another plexus process", self.refused())
        self.assertIn("--data-dir-shared: only with the SQLite store",
                      self.refused("--data-dir-shared", "--store", "redis://127.0.0.1:1"))
        a.stop()
        # Without the option, one process per directory, as before.
        one = self.start_server(*hub_args(self.out_dir, "--allow-anonymous",
                                          data_dir=self.data), name="one")
        self.assertIn("does not share", self.refused("--data-dir-shared"))
        self.assertIn("in use by another plexus process", self.refused())
        st, body = publish_http(one, self.chan(), {"x": 1})
        self.assertEqual((st, body["offset"]), (200, 1))
        self.assertFalse(os.path.exists(os.path.join(self.data, "procs", "%d.sock" % one.pid)))

if __name__ == "__main__":
    pxtest.main()
