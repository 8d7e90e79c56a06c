#!/usr/bin/python3
# px-test: serial  (a PostgreSQL cluster, a Redis server and several plexus nodes)
"""71-cluster-pg: several plexus nodes on PostgreSQL (--store postgres://...), with
LISTEN/NOTIFY as the broker, or with Redis pub/sub as the broker (docs/scaling.md).

The harness runs initdb into a temporary directory and postgres on a free loopback
port, as the unprivileged user `nobody` when the suite runs as root (PostgreSQL refuses
root), as the current user otherwise (tests/integration/backends.py).

  - PostgreSQL only: native WebSocket, SSE and HTTP publishes on one node reach the other
    nodes' subscribers in order; history and recovery are the same from every node; a
    message larger than NOTIFY's 8000-byte payload is read from the store by offset
  - presence merges across nodes (members in a table, join/leave by NOTIFY); a killed
    node's members leave within the TTL, once for every watcher
  - the schema is created with a version table and a second start keeps it; history_size
    retention deletes old messages in the database, and group commits from concurrent
    publishers never scan the whole history (pg_stat_user_tables)
  - PostgreSQL history + Redis fan-out: the same ordering, and presence merged across nodes;
    a slow PostgreSQL (a delaying TCP proxy) does not stall another channel's deliveries
  - kill -9 of a node during publishes, 20 rounds: no acknowledged message lost, offsets
    strictly increasing, no duplicates
  - PostgreSQL stopped for 5 s: publishes fail fast (503 storage_error, /healthz 503),
    then resume without restarting plexus; nobody gets recovery-failed (no data lost)

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/71-cluster-pg.py -v
"""

import os
import threading
import time

import pxtest
from backends import PgServer, RedisServer, TcpProxy
from hubclient import (HubClient, SseReader, api, chan_path, full_history, hub_args,
                       kill9_during_publishes, metric, presence_across_nodes,
                       publish_http, same_sequence_everywhere, slow_store_does_not_stall)
from pxtest import scaled


class PgCase(pxtest.PxTestCase):
    pg = None

    @classmethod
    def setUpClass(cls):
        if pxtest.EXTERNAL:
            return
        cls.pg = PgServer(pxtest.class_out_dir(cls), name="pg")

    @classmethod
    def tearDownClass(cls):
        if cls.pg:
            cls.pg.destroy()

    def setUp(self):
        super().setUp()
        self.require_local()
        self.backends = []
        if self.pg.proc.poll() is not None:
            self.pg.start()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for b in self.backends:
                b.stop()

    def node(self, *extra, store=None, name=None):
        i = sum(1 for s in self.servers if not s.external)
        d = os.path.join(self.out_dir, "node%d" % i)
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous", "--store",
                                           store or self.pg.url, "--history-size", "0", *extra,
                                           data_dir=d),
                                 name=name or "node%d" % i)
        # Ready once its backends are connected (a load balancer checks /healthz too).
        self.wait_health(srv, 200)
        return srv

    def chan(self, suffix=""):
        return "%s-%s%s" % (self._testMethodName[5:25], os.urandom(3).hex(), suffix)

    def wait_health(self, node, status, timeout=15.0):
        def ok():
            st, body, _ = api(node, "GET", "/healthz")
            return st == status and body
        return pxtest.wait_for(ok, timeout, what="/healthz %d" % status)

    def fanout_in_order(self, nodes, ch):
        subs = [HubClient(n.addr) for n in nodes]
        for s in subs:
            s.ok("subscribe", channel=ch)
        sse = SseReader(nodes[-1].addr, chan_path(ch, "events"))
        pub_ws = HubClient(nodes[1].addr)
        sent = []
        for i in range(12):
            data = {"i": i}
            if i % 2:
                off = pub_ws.ok("publish", channel=ch, data=data)["offset"]
            else:
                st, body = publish_http(nodes[0], ch, data)
                self.assertEqual(st, 200, body)
                off = body["offset"]
            sent.append((off, data))
        same_sequence_everywhere(self, nodes, subs, sse, ch, sent, 3, 8)
        sse.close()
        return subs + [pub_ws]


class PgOnly(PgCase):
    def test_cross_node_notify(self):
        nodes = [self.node() for _ in range(3)]
        ch = self.chan()
        clients = self.fanout_in_order(nodes, ch)
        # Over NOTIFY's payload limit: the other nodes read it from the store by offset.
        big = {"big": "x" * 9000}
        st, body = publish_http(nodes[0], ch, big)
        self.assertEqual((st, body["offset"]), (200, 13))
        for c in clients[:3]:
            m = c.next_event("message", ch)
            self.assertEqual((m["offset"], m["data"]), (13, big))
        for c in clients:
            c.close()
        self.assertGreater(metric(nodes[1], "plexus_broker_messages_total"), 0)
        self.assertGreater(metric(nodes[1], "plexus_hub_gap_reads_total"), 0)

    def test_presence_merges_and_a_killed_nodes_members_leave(self):
        nodes = [self.node("--presence-ttl", "2s") for _ in range(3)]
        ch = self.chan()

        def two_rows_left():
            self.assertEqual(self.pg.psql("SELECT count(*) FROM plexus_presence WHERE "
                                          "channel = '%s'" % ch).strip(), "2")

        # Cid leaves by closing its connection, on node a.
        presence_across_nodes(self, nodes, ch, 2.0, cid_node=nodes[0], cid_unsubscribes=False,
                              then=two_rows_left)

    def test_schema_and_retention(self):
        a = self.node("--history-size", "5")
        ch = self.chan()
        for i in range(12):
            self.assertEqual(publish_http(a, ch, {"i": i})[0], 200)
        self.assertEqual(self.pg.psql("SELECT version FROM plexus_schema").strip(), "2")
        self.assertEqual(self.pg.psql("SELECT count(*) FROM plexus_messages WHERE channel = '%s'"
                                      % ch).strip(), "5")
        self.assertEqual(self.pg.psql("SELECT last_offset FROM plexus_channels WHERE name = '%s'"
                                      % ch).strip(), "12")
        msgs, body = full_history(a, ch)
        self.assertEqual([m["offset"] for m in msgs], [8, 9, 10, 11, 12])
        with HubClient(a.addr) as c:
            rep = c.ok("subscribe", channel=ch, since={"epoch": body["epoch"], "offset": 3})
            self.assertIs(rep["recovered"], False)
        # A second node (a second start) finds the schema and the channel as they are.
        b = self.node("--history-size", "5")
        self.assertEqual(publish_http(b, ch, {"i": 12})[1]["offset"], 13)
        self.assertEqual(self.pg.psql("SELECT count(*) FROM plexus_schema").strip(), "1")

    def test_commits_do_not_scan_the_history(self):
        # Each group commit deletes what history_size pushed out: by the primary key, from
        # the channel's first offset. A sequential scan of plexus_messages per commit (the
        # plan it had, made while the table was small and then kept) reads the whole
        # history every time: 3 200 publishes/s on two nodes in bench/cluster.py.
        def counters():
            out = self.pg.psql("SELECT seq_scan, n_tup_ins FROM pg_stat_user_tables"
                               " WHERE relname = 'plexus_messages'").split("|")
            return (int(out[0]), int(out[1])) if len(out) == 2 else (0, 0)
        scans, ins = counters()
        a = self.node("--history-size", "100000")
        ch = self.chan()
        # Concurrent publishers: group commits of several messages (the plan PostgreSQL
        # keeps for the prepared append depends on the batches it saw).
        threads, each, codes = 16, 25, []

        def publisher(t):
            for i in range(each):
                codes.append(publish_http(a, ch, {"t": t, "i": i})[0])
        ts = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(codes, [200] * (threads * each))
        commits = int(metric(a, "plexus_store_commits_total") or 0)
        a.stop()  # its backends exit and report their counters
        pxtest.wait_for(lambda: counters()[1] >= ins + threads * each, scaled(20), interval=0.2,
                        what="statistics of the inserts")
        self.assertLess(counters()[0] - scans, 5,
                        "sequential scans of plexus_messages (%d commits)" % commits)

    def test_kill9_node_during_publishes(self):
        steady = self.node(name="steady")
        kill9_during_publishes(self, steady, lambda: self.node(name="victim"), self.chan(),
                               rounds=20, one_sequence=False)

    def test_postgres_stopped_for_5s(self):
        a, b = self.node(), self.node()
        ch = self.chan()
        sub = HubClient(b.addr)
        sub.ok("subscribe", channel=ch)
        for i in range(5):
            self.assertEqual(publish_http(a, ch, {"i": i})[0], 200)
        epoch = publish_http(a, ch, {"i": 5})[1]["epoch"]
        self.pg.stop()
        t0 = time.monotonic()
        st, body = publish_http(a, ch, {"i": "down"})
        self.assertEqual((st, body["error"]), (503, "storage_error"))
        self.assertLess(time.monotonic() - t0, scaled(1.0), "a publish fails fast")
        self.assertIn("store", self.wait_health(a, 503)["reason"])
        time.sleep(5)
        st, body = publish_http(a, ch, {"i": "still down"})
        self.assertEqual(st, 503)
        self.pg.start()
        self.wait_health(a, 200)
        self.wait_health(b, 200)
        for i in range(6, 10):
            st, body = pxtest.wait_for(
                lambda i=i: (lambda r: r if r[0] == 200 else None)(publish_http(a, ch, {"i": i})),
                10, what="a publish after PostgreSQL came back")
        self.assertEqual((body["epoch"], body["offset"]), (epoch, 10))
        m, before = sub.until(lambda m: m.get("op") == "message" and m["offset"] == 10)
        self.assertEqual([x["offset"] for x in before if x.get("op") == "message"],
                         list(range(1, 10)))
        self.assertFalse([x for x in before if x.get("op") == "recovery-failed"])
        self.assertGreaterEqual(metric(a, "plexus_store_reconnects_total"), 1)
        sub.close()


class PgWithRedis(PgCase):
    def test_pg_history_redis_fanout_and_presence(self):
        redis = RedisServer(self.out_dir)
        self.backends.append(redis)
        nodes = [self.node("--broker", redis.url, "--presence-ttl", "2s") for _ in range(3)]
        ch = self.chan()
        for c in self.fanout_in_order(nodes, ch):
            c.close()
        self.assertGreater(metric(nodes[2], "plexus_broker_messages_total"), 0)
        self.assertEqual(redis.cmd("EXISTS", "plexus:s:" + ch), 0, "history is in PostgreSQL")
        ann = HubClient(nodes[0].addr)
        ann.ok("subscribe", channel=ch + "p", presence=True, info="Ann")
        bob = HubClient(nodes[1].addr)
        bob.ok("subscribe", channel=ch + "p", info="Bob")
        self.assertEqual(ann.next_event("join", ch + "p")["client"], ann.client_id)
        self.assertEqual(ann.next_event("join", ch + "p")["client"], bob.client_id)
        with HubClient(nodes[2].addr) as q:
            p = q.ok("presence", channel=ch + "p")
            self.assertEqual(sorted(x["client"] for x in p["clients"]),
                             sorted([ann.client_id, bob.client_id]))
        ann.close()
        bob.close()

    def test_slow_postgres_does_not_stall_other_channels(self):
        redis = RedisServer(self.out_dir)
        self.backends.append(redis)
        proxy = TcpProxy(self.pg.port)
        try:
            # Node a's store goes through the proxy; its broker talks to Redis directly.
            a = self.node("--broker", redis.url,
                          store="postgres://plexus@127.0.0.1:%d/plexus" % proxy.port)
            b = self.node("--broker", redis.url)
            fast, slow_ch = self.chan("f"), self.chan("s")
            # A round trip costs two delays; under the store's 5 s command deadline.
            slow_store_does_not_stall(self, a, b, proxy, min(scaled(1.0), 2.0), fast, slow_ch)
        finally:
            proxy.close()


if __name__ == "__main__":
    pxtest.main()
