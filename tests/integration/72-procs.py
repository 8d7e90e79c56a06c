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

import os
import subprocess
import threading

import pxtest
from hubclient import (HubClient, SseReader, api, chan_path, full_history, hub_args,
                       kill9_during_publishes, metric, presence_across_nodes,
                       publish_http, same_sequence_everywhere)
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
        same_sequence_everywhere(self, procs, subs, sse, ch, sent, 3, 8)
        for p in procs:
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
        procs = [self.proc("--presence-ttl", "2s") for _ in range(3)]

        def socket_gone():
            # The killed process's socket is gone once someone found it dead.
            self.assertNotIn("%d.sock" % procs[2].proc.pid,
                             os.listdir(os.path.join(self.data, "procs")))

        # Cid leaves by closing its connection, on process a.
        presence_across_nodes(self, procs, self.chan(), 2.0, cid_node=procs[0],
                              cid_unsubscribes=False, then=socket_gone)

    def test_kill9_process_during_publishes(self):
        steady = self.proc(name="steady")
        kill9_during_publishes(self, steady, lambda: self.proc(name="victim"), self.chan(),
                               rounds=10, one_sequence=True)

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
