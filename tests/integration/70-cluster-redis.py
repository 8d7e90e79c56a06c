#!/usr/bin/python3
# px-test: serial  (a Redis server and two or three plexus nodes per test)
"""70-cluster-redis: several plexus nodes on one Redis (--store redis://..., whose
pub/sub is also the broker), docs/scaling.md.

  - native WebSocket, SSE and HTTP publishes on any node reach the subscribers of every
    node, in offset order; history and recovery with `since` are the same from every node
  - concurrent publishers on three nodes, one channel: every node delivers 1..N in order
  - kill -9 of a node during publishes, 20 rounds: no acknowledged message lost, offsets
    strictly increasing, no duplicates, every node's subscribers see 1..N in order
  - Redis killed and restarted mid-stream: publishes fail fast (503 storage_error,
    /healthz 503), then resume without restarting plexus; with the data kept (AOF)
    nobody gets recovery-failed; with the data lost the epoch changes and subscribers
    and recovering clients get recovery-failed / recovered:false
  - a message a dead node committed but never announced reaches the other nodes
  - a slow store (a delaying TCP proxy) does not stall another channel's deliveries
  - configuration errors: a bad --store URL, --broker with SQLite

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/70-cluster-redis.py -v
"""

import hashlib
import hmac
import json
import os
import threading
import time

import pxtest
from backends import RedisServer, TcpProxy
from hubclient import (HubClient, SseReader, api, chan_path, full_history, hub_args, jwt,
                       kill9_during_publishes, metric, presence_across_nodes,
                       publish_http, same_sequence_everywhere, slow_store_does_not_stall)
from pxtest import scaled


class ClusterCase(pxtest.PxTestCase):
    def setUp(self):
        super().setUp()
        self.require_local()
        self.backends = []

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for b in self.backends:
                b.stop()

    def redis(self, **kw):
        r = RedisServer(self.out_dir, **kw)
        self.backends.append(r)
        return r

    def node(self, store, *extra, name=None):
        i = sum(1 for s in self.servers if not s.external)
        d = os.path.join(self.out_dir, "node%d" % i)
        srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous", "--store", store,
                                           "--history-size", "0", *extra, data_dir=d),
                                 name=name or "node%d" % i)
        # Ready once its backends are connected (a load balancer checks /healthz too).
        self.wait_health(srv, 200)
        return srv

    def wait_health(self, node, status, timeout=10.0):
        def ok():
            st, body, _ = api(node, "GET", "/healthz")
            return st == status and body
        return pxtest.wait_for(ok, timeout, what="/healthz %d" % status)


class CrossNode(ClusterCase):
    def test_ws_sse_http_reach_every_node_in_order(self):
        redis = self.redis()
        a, b, c = (self.node(redis.url) for _ in range(3))
        subs = [HubClient(n.addr) for n in (a, b, c)]
        for s in subs:
            s.ok("subscribe", channel="room")
        sse = SseReader(c.addr, chan_path("room", "events"))
        pub_ws = HubClient(b.addr)
        sent = []
        for i in range(15):
            data = {"i": i, "via": "abc"[i % 3]}
            if i % 3 == 0:
                st, body = publish_http(a, "room", data)
                self.assertEqual(st, 200, body)
                off = body["offset"]
            elif i % 3 == 1:
                off = pub_ws.ok("publish", channel="room", data=data)["offset"]
            else:
                st, body = publish_http(c, "room", data)
                self.assertEqual(st, 200, body)
                off = body["offset"]
            sent.append((off, data))
        # History and recovery are one sequence, the same from every node.
        epoch = same_sequence_everywhere(self, (a, b, c), subs, sse, "room", sent, 4, 9)
        sse.close()
        # A node that never followed the channel answers history from the store.
        d = self.node(redis.url)
        st, body, _ = api(d, "GET", chan_path("room") + "?since=10")
        self.assertEqual(st, 200, body)
        self.assertEqual([(m["offset"], m["data"]) for m in body["messages"]], sent[10:])
        self.assertEqual(body["epoch"], epoch)
        for s in subs + [pub_ws]:
            s.close()

    def test_concurrent_publishers_every_node_in_order(self):
        redis = self.redis()
        nodes = [self.node(redis.url) for _ in range(3)]
        subs = [HubClient(n.addr) for n in nodes]
        for s in subs:
            s.ok("subscribe", channel="ord")
        per, acked, errors = 60, [], []

        def publisher(node, k):
            for i in range(per):
                st, body = publish_http(node, "ord", {"p": k, "i": i})
                if st != 200:
                    errors.append((st, body))
                    return
                acked.append(body["offset"])

        ts = [threading.Thread(target=publisher, args=(n, k)) for k, n in enumerate(nodes)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        total = per * len(nodes)
        self.assertEqual(sorted(acked), list(range(1, total + 1)))
        for s in subs:
            got = s.messages("ord", total, timeout=20)
            self.assertEqual([m["offset"] for m in got], list(range(1, total + 1)))
            # Each publisher's messages keep their order.
            for k in range(len(nodes)):
                self.assertEqual([m["data"]["i"] for m in got if m["data"]["p"] == k],
                                 list(range(per)))
            s.close()
        self.assertGreater(metric(nodes[0], "plexus_broker_messages_total"), 0)


    def test_concurrent_publishes_on_a_channel_nobody_follows(self):
        # One group commit holds the channel several times and nobody subscribes: the
        # channel leaves memory after the commit, once (a use after free under ASan before).
        redis = self.redis()
        a = self.node(redis.url, "--publish-rate", "0")
        acked, errors = [], []

        def run():
            for i in range(25):
                st, body = publish_http(a, "cold", {"i": i})
                (acked if st == 200 else errors).append(body.get("offset") if st == 200 else body)

        ts = [threading.Thread(target=run) for _ in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(acked), list(range(1, 301)))
        msgs, _ = full_history(a, "cold")
        self.assertEqual([m["offset"] for m in msgs], list(range(1, 301)))


class Faults(ClusterCase):
    def test_kill9_node_during_publishes(self):
        redis = self.redis()
        b = self.node(redis.url, name="steady")
        kill9_during_publishes(self, b, lambda: self.node(redis.url, name="victim"), "k9",
                               rounds=20, one_sequence=True)

    def test_commit_of_a_node_that_died_before_its_publish(self):
        # A node that crashed between its store commit and its broker PUBLISH leaves a
        # stored message nobody announces. With no later message to show the gap, the
        # other nodes still deliver it: they read the store's tail after a burst.
        redis = self.redis()
        a, b = self.node(redis.url), self.node(redis.url)
        subs = [HubClient(n.addr) for n in (a, b)]
        for s in subs:
            s.ok("subscribe", channel="tail")
        st, body = publish_http(a, "tail", {"i": 1})
        self.assertEqual((st, body["offset"]), (200, 1))
        for s in subs:
            self.assertEqual(s.next_event("message", "tail")["data"], {"i": 1})
        # What the append script does for a node that then died (no PUBLISH follows).
        off = redis.cmd("HINCRBY", "plexus:m:tail", "o", 1)
        self.assertEqual(off, 2)
        redis.cmd("XADD", "plexus:s:tail", "2-0", "d", json.dumps({"i": 2}),
                  "t", str(int(time.time() * 1000)))
        for s in subs:
            m = s.next_event("message", "tail", timeout=5)
            self.assertEqual((m["offset"], m["data"]), (2, {"i": 2}))
            s.close()

    def _redis_restart(self, persist):
        redis = self.redis(persist=persist)
        a, b = self.node(redis.url), self.node(redis.url)
        sub = HubClient(b.addr)
        first = sub.ok("subscribe", channel="rr")
        for i in range(5):
            st, body = publish_http(a, "rr", {"i": i})
            self.assertEqual(st, 200)
        epoch = body["epoch"]
        self.assertEqual([m["offset"] for m in sub.messages("rr", 5)], [1, 2, 3, 4, 5])
        self.assertEqual(first["epoch"], epoch)

        redis.kill()
        t0 = time.monotonic()
        st, body = publish_http(a, "rr", {"i": "down"})
        self.assertEqual((st, body["error"]), (503, "storage_error"))
        self.assertLess(time.monotonic() - t0, scaled(1.0), "a publish fails fast")
        down = self.wait_health(a, 503)
        self.assertIn("store", down["reason"])
        self.assertEqual(metric(a, "plexus_store_up"), 0)

        redis.start()
        self.wait_health(a, 200)
        self.wait_health(b, 200)
        for i in range(5, 10):
            st, body = pxtest.wait_for(
                lambda i=i: (lambda r: r if r[0] == 200 else None)(publish_http(a, "rr", {"i": i})),
                10, what="a publish after Redis came back")
        self.assertGreaterEqual(metric(a, "plexus_store_reconnects_total"), 1)
        return a, b, sub, epoch, body

    def test_redis_restart_kept_data(self):
        a, b, sub, epoch, last = self._redis_restart(persist=True)
        self.assertEqual((last["epoch"], last["offset"]), (epoch, 10))
        # No recovery-failed: the live subscriber sees 6..10 after 1..5.
        m, before = sub.until(lambda m: m.get("op") == "message" and m["offset"] == 10)
        self.assertEqual([x["offset"] for x in before if x.get("op") == "message"],
                         [6, 7, 8, 9])
        self.assertFalse([x for x in before if x.get("op") == "recovery-failed"])
        with HubClient(a.addr) as r:
            rep = r.ok("subscribe", channel="rr", since={"epoch": epoch, "offset": 3})
            self.assertEqual((rep["recovered"], rep["epoch"], rep["offset"]), (True, epoch, 10))
            self.assertEqual([x["offset"] for x in r.messages("rr", 7)], list(range(4, 11)))
        sub.close()

    def test_redis_restart_lost_data(self):
        a, b, sub, epoch, last = self._redis_restart(persist=False)
        # Redis came back empty: a new epoch, offsets from 1, and recovery-failed for
        # whoever held the old position.
        self.assertNotEqual(last["epoch"], epoch)
        self.assertEqual(last["offset"], 5)
        gap = sub.next_event("recovery-failed", "rr")
        self.assertEqual(gap["epoch"], last["epoch"])
        m, before = sub.until(lambda m: m.get("op") == "message" and m["offset"] == 5
                              and m["data"] == {"i": 9})
        with HubClient(a.addr) as r:
            rep = r.ok("subscribe", channel="rr", since={"epoch": epoch, "offset": 3})
            self.assertEqual((rep["recovered"], rep["epoch"]), (False, last["epoch"]))
        sub.close()

    def test_slow_store_does_not_stall_other_channels(self):
        redis = self.redis()
        proxy = TcpProxy(redis.port)
        try:
            # Node a's store goes through the proxy; its broker talks to Redis directly.
            # (A command deadline above the delay: slow, not down.)
            a = self.node("redis://127.0.0.1:%d?timeout=30000" % proxy.port, "--broker", redis.url)
            b = self.node(redis.url)
            slow_store_does_not_stall(self, a, b, proxy, scaled(1.0), "fast", "slow")
        finally:
            proxy.close()


class Presence(ClusterCase):
    def test_presence_merges_and_a_killed_nodes_members_leave(self):
        redis = self.redis()
        nodes = [self.node(redis.url, "--presence-ttl", "2s") for _ in range(3)]
        # Cid leaves by unsubscribing, on the node that is killed next.
        presence_across_nodes(self, nodes, "pr", 2.0, cid_node=nodes[2], cid_unsubscribes=True)


    def test_pusher_api_counts_users_across_nodes(self):
        """The Pusher HTTP API on a cluster (docs/pusher.md): a presence channel's user_count
        and users list count each user once, whichever nodes its connections are on."""
        redis = self.redis()
        extra = ("--jwt-secret", "s3cret", "--pusher-app", "1:app-key:app-secret")
        a, b = self.node(redis.url, *extra), self.node(redis.url, *extra)
        conns = [HubClient(n.addr, token=jwt("s3cret", {"sub": user}))
                 for n, user in ((a, "amy"), (b, "amy"), (b, "bob"))]
        for c in conns:
            c.ok("subscribe", channel="presence-room", presence=True)

        def signed(node, path, params):
            q = dict(params, auth_key="app-key", auth_timestamp=str(int(time.time())),
                     auth_version="1.0")
            query = "&".join("%s=%s" % (k, q[k]) for k in sorted(q))
            sig = hmac.new(b"app-secret", ("GET\n/apps/1%s\n%s" % (path, query)).encode(),
                           hashlib.sha256).hexdigest()
            st, body, _ = api(node, "GET", "/apps/1%s?%s&auth_signature=%s" % (path, query, sig))
            self.assertEqual(st, 200, body)
            return body

        for n in (a, b):
            pxtest.wait_for(lambda n=n: signed(n, "/channels/presence-room",
                                               {"info": "user_count"}).get("user_count") == 2,
                            10, what="user_count 2")
            users = signed(n, "/channels/presence-room/users", {})["users"]
            self.assertEqual(sorted(u["id"] for u in users), ["amy", "bob"])
        for c in conns:
            c.close()

class Config(ClusterCase):
    def test_bad_store_and_broker(self):
        r = pxtest.run_plexus(["--store", "redis://127.0.0.1:notaport"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--store redis://127.0.0.1:notaport", r.stderr)
        self.assertIn("port", r.stderr)
        r = pxtest.run_plexus(["--store", "rediss://127.0.0.1:6380"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("TLS", r.stderr)
        r = pxtest.run_plexus(["--store", "mysql://x"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown storage backend", r.stderr)
        r = pxtest.run_plexus(["--broker", "redis://127.0.0.1:6379",
                               "--data-dir", os.path.join(self.out_dir, "d")])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--broker needs a store shared", r.stderr)


if __name__ == "__main__":
    pxtest.main()
