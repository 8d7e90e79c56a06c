#!/usr/bin/python3
"""50-hub-ws: the native WebSocket protocol at /ws, op by op and error code by
error code, against docs/protocol.md.

  - welcome on open; subscribe/reply; publish -> reply with the offset, then
    {"op":"message",...} to every subscriber (the publisher too) with `data`
    passed through byte for byte (odd spacing, unicode, escapes, scalars);
  - unsubscribe stops deliveries; history (since as N or {"offset":N}, limit,
    bounds, truncated); presence (with and without info; join/leave only to
    presence:true subscribers; SSE subscribers counted but not listed);
    ping/pong;
  - every error code the server can produce without a token or a failing disk:
    invalid_json, too_complex, bad_request (non-object, binary frame, duplicate
    key, bad id, bad since/limit/presence/info, missing data), unknown_op,
    invalid_channel (bad byte, 201 bytes, empty, missing), already_subscribed,
    not_subscribed, too_many_channels, payload_too_large, rate_limited; every
    error answering a request with a readable id carries that id;
  - the same flow through python3-websockets (a standard client).

  - storage_error: another process holds SQLite's write lock past the busy
    timeout; refused offsets are not reused and recovery spans the gap.

unauthorized/forbidden: 53-hub-auth.py.

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/50-hub-ws.py -v
"""

import asyncio
import json
import os
import time

import pxtest
from hubclient import HubCase, SseReader, aconnect, arequest, chan_path

# Payloads sent as raw JSON text: what arrives must be the very same bytes.
ODD_DATA = [
    '{ "b" :[1 , 2.50e+3,"\\u00e9\\n\\"q\\"\\t\\/" ,null ] ,  "\u00fc":"\u65e5\u672c\U0001F600" }',
    '"a string with \\\\ backslash and \\ud83d\\ude00"',
    "-0.0e-7",
    "true",
    "null",
    "[ ]",
    '{"nested":{"deep":[[[{"x":[]}]]]},"k":""}',
    "12345678901234567890123456789",
]


class Protocol(HubCase):
    server_args = ("--allow-anonymous", "--workers", "2")

    def test_welcome(self):
        c = self.client()
        w = c.welcome
        self.assertEqual(set(w), {"op", "client", "version"})
        self.assertRegex(w["client"], r"^[0-9a-f]{16}$")
        self.assertRegex(w["version"], r"^\d+\.\d+\.\d+")
        self.assertNotEqual(self.client().client_id, c.client_id, "client ids are per connection")

    def test_subscribe_publish_passthrough(self):
        ch = self.chan()
        pub, sub = self.client(), self.client()
        r = sub.ok("subscribe", id=17, channel=ch)
        self.assertEqual(r["id"], 17)
        self.assertEqual(r["channel"], ch)
        self.assertRegex(r["epoch"], r"^[0-9a-f]{16}$")
        self.assertEqual(r["offset"], 0)
        self.assertNotIn("recovered", r, "recovered only with since")
        self.assertEqual(set(r), {"op", "id", "channel", "epoch", "offset"})
        pub.ok("subscribe", channel=ch)
        for i, data in enumerate(ODD_DATA, 1):
            with self.subTest(data=data):
                pub.send('{"op":"publish","id":%d,"channel":"%s","data":%s}' % (1000 + i, ch, data))
                rep = pub.reply(1000 + i)
                self.assertEqual(dict(rep), {"op": "reply", "id": 1000 + i, "offset": i})
                want = '{"op":"message","channel":"%s","offset":%d,"data":%s}' % (ch, i, data)
                self.assertEqual(sub.next_event("message", ch).raw, want)
                # The publisher is subscribed too: it gets the message as well.
                self.assertEqual(pub.next_event("message", ch).raw, want)
        # History hands the same bytes back.
        h = sub.ok("history", channel=ch)
        for i, data in enumerate(ODD_DATA, 1):
            self.assertIn('"offset":%d,"time":' % i, h.raw)
            self.assertIn(',"data":%s}' % data, h.raw)
        self.assertEqual([m["offset"] for m in h["messages"]], list(range(1, len(ODD_DATA) + 1)))
        # A publisher that is not subscribed gets only the reply: nothing
        # before the message of a channel it is subscribed to, published next.
        other = self.client()
        mark = self.chan("-mark")
        other.ok("subscribe", channel=mark)
        rep = other.ok("publish", channel=ch, data={"from": "other"})
        self.assertEqual(rep["offset"], len(ODD_DATA) + 1)
        self.assertEqual(sub.next_event("message", ch)["data"], {"from": "other"})
        other.ok("publish", channel=mark, data="mark")
        self.assertEqual(other.until(lambda m: m.get("channel") == mark)[1], [])

    def test_publish_without_id(self):
        ch = self.chan()
        c = self.client()
        c.ok("subscribe", channel=ch)
        c.send({"op": "publish", "channel": ch, "data": 1})
        got = [c.next_event(None), c.next_event(None)]
        reply = [m for m in got if m["op"] == "reply"]
        self.assertEqual(len(reply), 1, got)
        self.assertEqual(dict(reply[0]), {"op": "reply", "offset": 1})

    def test_offsets_per_channel(self):
        a, b = self.chan("-a"), self.chan("-b")
        c = self.client()
        self.assertEqual([c.ok("publish", channel=a, data=i)["offset"] for i in range(3)], [1, 2, 3])
        self.assertEqual(c.ok("publish", channel=b, data=0)["offset"], 1)
        self.assertEqual(c.ok("publish", channel=a, data=3)["offset"], 4)

    def test_unsubscribe(self):
        ch = self.chan()
        pub, sub = self.client(), self.client()
        sub.ok("subscribe", channel=ch)
        pub.ok("publish", channel=ch, data="one")
        self.assertEqual(sub.next_event("message", ch)["data"], "one")
        r = sub.request("unsubscribe", id=9, channel=ch)
        self.assertEqual(dict(r), {"op": "reply", "id": 9, "channel": ch})
        # No delivery after unsubscribe: "two" would arrive before "mark".
        mark = self.chan("-mark")
        sub.ok("subscribe", channel=mark)
        pub.ok("publish", channel=ch, data="two")
        pub.ok("publish", channel=mark, data="mark")
        self.assertEqual(sub.until(lambda m: m.get("channel") == mark)[1], [],
                         "no delivery after unsubscribe")
        e = sub.request("unsubscribe", id=10, channel=ch)
        self.assertEqual((e["op"], e["id"], e["code"]), ("error", 10, "not_subscribed"))
        # Subscribe again: deliveries resume.
        self.assertEqual(sub.ok("subscribe", channel=ch)["offset"], 2)
        pub.ok("publish", channel=ch, data="three")
        self.assertEqual(sub.next_event("message", ch)["data"], "three")

    def test_pipelined_subscribe_unsubscribe(self):
        """subscribe and unsubscribe in one TCP segment: the connection must end
        up unsubscribed (requests of one connection take effect in order)."""
        from wsraw import OP_TEXT, encode_frame

        ch = self.chan()
        c = self.client()
        c.ws.send_raw(encode_frame(OP_TEXT, ('{"op":"subscribe","id":1,"channel":"%s"}' % ch).encode())
                      + encode_frame(OP_TEXT, ('{"op":"unsubscribe","id":2,"channel":"%s"}' % ch).encode()))
        answers = {m["id"]: m for m in (c.reply(1), c.reply(2))}
        self.assertEqual(answers[1]["op"], "reply")
        mark = self.chan("-mark")
        c.ok("subscribe", channel=mark)
        pub = self.client()
        pub.ok("publish", channel=ch, data=1)
        pub.ok("publish", channel=mark, data="mark")
        leaked = [m for m in c.until(lambda m: m.get("channel") == mark)[1] if m["op"] == "message"]
        self.assertEqual(answers[2]["op"], "reply")
        self.assertEqual(leaked, [])

    def test_pipelined_subscribe_unsubscribe_subscribe(self):
        """subscribe, unsubscribe, subscribe in one segment: three replies, in
        order, and the connection ends up subscribed exactly once."""
        from wsraw import OP_TEXT, encode_frame

        ch = self.chan()
        c = self.client()
        frames = b"".join(encode_frame(OP_TEXT, ('{"op":"%s","id":%d,"channel":"%s","presence":true}'
                                                 % (op, i, ch)).encode())
                          for i, op in enumerate(("subscribe", "unsubscribe", "subscribe"), 1))
        c.ws.send_raw(frames)
        for i in (1, 2, 3):
            self.assertEqual(c.reply(i)["op"], "reply", "answer %d" % i)
        pub = self.client()
        pub.ok("publish", channel=ch, data="once")
        pub.ok("publish", channel=ch, data="end")  # a second subscription would repeat "once" first
        end, earlier = c.until(lambda m: m.get("op") == "message" and m.get("data") == "end")
        got = [m for m in earlier if m["op"] == "message"]
        self.assertEqual([m["data"] for m in got], ["once"])
        self.assertEqual(len(c.ok("presence", channel=ch)["clients"]), 1)

    def test_history(self):
        ch = self.chan()
        c = self.client()
        t0 = int(time.time() * 1000)
        for i in range(1, 11):
            c.ok("publish", channel=ch, data={"n": i})
        t1 = int(time.time() * 1000)

        def offsets(**kw):
            r = c.ok("history", channel=ch, **kw)
            self.assertEqual(r["channel"], ch)
            self.assertEqual(r["offset"], 10)
            self.assertNotIn("truncated", r)
            for m in r["messages"]:
                self.assertEqual(m["data"], {"n": m["offset"]})
                self.assertTrue(t0 - 1000 <= m["time"] <= t1 + 1000, m)
            return [m["offset"] for m in r["messages"]]

        self.assertEqual(offsets(), list(range(1, 11)))
        self.assertEqual(offsets(since=0), list(range(1, 11)))
        self.assertEqual(offsets(since=3, limit=4), [4, 5, 6, 7])
        self.assertEqual(offsets(since={"offset": 8}), [9, 10])
        self.assertEqual(offsets(since=9, limit=1000), [10])
        self.assertEqual(offsets(since=10), [])
        self.assertEqual(offsets(since=500), [])
        self.assertEqual(offsets(limit=1), [1])
        times = [m["time"] for m in c.ok("history", channel=ch)["messages"]]
        self.assertEqual(times, sorted(times), "commit times never go back")
        r = c.ok("history", channel=self.chan("-never-used"))
        self.assertEqual((r["offset"], r["messages"]), (0, []))
        # Bounds: limit 1..--history-limit-max (default 1000), since a non-negative offset.
        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": -1}, {"limit": "5"}, {"limit": 2.5},
                    {"since": -1}, {"since": "3"}, {"since": {"epoch": "x"}}, {"since": [1]},
                    {"since": 1.5}):
            with self.subTest(bad=bad):
                e = c.request("history", channel=ch, **bad)
                self.assertEqual((e["op"], e["code"]), ("error", "bad_request"), e)

    def test_history_ring_and_store_agree(self):
        # More than the in-memory ring (256): old ones come from SQLite, new ones
        # from memory; both read the same.
        ch = self.chan()
        for i in range(300):
            st, j, _ = self._post(ch, {"i": i})
            self.assertEqual(st, 201)
        c = self.client()
        seen = []
        since = 0
        while True:
            r = c.ok("history", channel=ch, since=since, limit=70)
            if not r["messages"]:
                break
            seen += r["messages"]
            since = r["messages"][-1]["offset"]
        self.assertEqual([m["offset"] for m in seen], list(range(1, 301)))
        self.assertEqual([m["data"]["i"] for m in seen], list(range(300)))
        # Without "limit": 100 messages.
        r = c.ok("history", channel=ch, since=150)
        self.assertEqual([m["offset"] for m in r["messages"]], list(range(151, 251)))

    def _post(self, ch, data):
        from hubclient import api

        return api(self.srv, "POST", chan_path(ch), data)

    def test_presence(self):
        ch = self.chan()
        ann = self.client()
        r = ann.ok("subscribe", channel=ch, presence=True, info={"name": "Ann", "n": [1, 2]})
        # Its own join follows its reply.
        j = ann.next_event("join", ch)
        self.assertEqual(dict(j), {"op": "join", "channel": ch, "client": ann.client_id,
                                   "info": {"name": "Ann", "n": [1, 2]}})
        bob = self.client()
        bob.ok("subscribe", channel=ch, info="Bob")  # no presence events wanted
        j = ann.next_event("join", ch)
        self.assertEqual(dict(j), {"op": "join", "channel": ch, "client": bob.client_id, "info": "Bob"})
        cid = self.client()
        cid.ok("subscribe", channel=ch, presence=False)  # no info at all
        j = ann.next_event("join", ch)
        self.assertEqual(dict(j), {"op": "join", "channel": ch, "client": cid.client_id})
        # An SSE subscriber counts in subscribers, not in presence.
        sse = SseReader(self.srv.addr, chan_path(ch, "events"))
        self.addCleanup(sse.close)

        def pres():
            return ann.ok("presence", id=77, channel=ch)

        p = pxtest.wait_for(lambda: (lambda p: p if p["subscribers"] == 4 else None)(pres()), 5,
                            what="the SSE subscriber counted")
        self.assertEqual(p["id"], 77)
        self.assertEqual((p["channel"], p["count"], p["subscribers"]), (ch, 3, 4))
        clients = {x["client"]: x for x in p["clients"]}
        self.assertEqual(clients, {
            ann.client_id: {"client": ann.client_id, "info": {"name": "Ann", "n": [1, 2]}},
            bob.client_id: {"client": bob.client_id, "info": "Bob"},
            cid.client_id: {"client": cid.client_id},
        })
        # Presence of a channel nobody uses; presence without being subscribed.
        p = self.client().ok("presence", channel=self.chan("-empty"))
        self.assertEqual((p["count"], p["subscribers"], p["clients"]), (0, 0, []))
        # Leave: by unsubscribe and by disconnecting; only Ann hears them.
        bob.ok("unsubscribe", channel=ch)
        lv = ann.next_event("leave", ch)
        self.assertEqual(dict(lv), {"op": "leave", "channel": ch, "client": bob.client_id, "info": "Bob"})
        cid.close()
        lv = ann.next_event("leave", ch)
        self.assertEqual(dict(lv), {"op": "leave", "channel": ch, "client": cid.client_id})
        # Bob (no presence:true) got none of these joins and leaves: nothing
        # before a message the hub sends him after them.
        mark = self.chan("-mark")
        bob.ok("subscribe", channel=mark)
        bob.ok("publish", channel=mark, data="mark")
        earlier = bob.until(lambda m: m.get("channel") == mark)[1]
        self.assertEqual([m for m in earlier if m["op"] in ("join", "leave")], [],
                         "no presence events without presence:true")
        p = ann.ok("presence", channel=ch)
        self.assertEqual((p["count"], p["subscribers"]), (1, 2))
        # info over 1 KiB is refused.
        e = self.client().request("subscribe", id=5, channel=ch, info="x" * 1100)
        self.assertEqual((e["op"], e["id"], e["code"]), ("error", 5, "bad_request"))

    def test_presence_events_only_for_presence_subscribers(self):
        ch = self.chan()
        quiet, loud = self.client(), self.client()
        quiet.ok("subscribe", channel=ch)
        loud.ok("subscribe", channel=ch, presence=True)
        self.assertEqual(loud.next_event("join", ch)["client"], loud.client_id)
        x = self.client()
        x.ok("subscribe", channel=ch)
        self.assertEqual(loud.next_event("join", ch)["client"], x.client_id)
        x.close()
        self.assertEqual(loud.next_event("leave", ch)["client"], x.client_id)
        # Messages still reach both, and the quiet one got nothing else (no
        # join or leave before the second message).
        loud.ok("publish", channel=ch, data=1)
        loud.ok("publish", channel=ch, data=2)
        two, earlier = quiet.until(lambda m: m.get("op") == "message" and m.get("data") == 2)
        self.assertEqual([(m["op"], m.get("data")) for m in earlier], [("message", 1)])

    def test_ping(self):
        c = self.client()
        self.assertEqual(c.request("ping", id=6).raw, '{"op":"pong","id":6}')
        self.assertEqual(c.request("ping", id=-9007199254740993).raw, '{"op":"pong","id":-9007199254740993}')
        c.send('{"op":"ping"}')
        self.assertEqual(c.next_event("pong").raw, '{"op":"pong"}')

    # -- errors --

    def assertError(self, msg, code, rid=None):
        self.assertEqual(msg["op"], "error", msg)
        self.assertEqual(msg["code"], code, msg)
        self.assertIsInstance(msg["message"], str)
        self.assertTrue(msg["message"])
        if rid is None:
            self.assertNotIn("id", msg)
        else:
            self.assertEqual(msg["id"], rid, msg)

    def test_malformed_frames(self):
        c = self.client()
        cases = [
            ("{", "invalid_json"),
            ('{"op":"ping"', "invalid_json"),
            ('{"op":"ping"} x', "invalid_json"),
            ("", "invalid_json"),
            ("nul", "invalid_json"),
            ('{"op":"ping",}', "invalid_json"),
            ('{"op":"ping","id":1,"x":"\x01"}', "invalid_json"),
            ("[" * 40 + "]" * 40, "too_complex"),
            ('{"op":"publish","id":3,"channel":"x","data":' + "[" * 40 + "]" * 40 + "}", "too_complex"),
            ('{"op":"publish","id":3,"channel":"x","data":[' + ",".join(["1"] * 600) + "]}", "too_complex"),
            ("[1]", "bad_request"),
            ('"op"', "bad_request"),
            ("42", "bad_request"),
            ("null", "bad_request"),
            ('{"op":"ping","id":"7"}', "bad_request"),
            ('{"op":"ping","id":1.5}', "bad_request"),
            ('{"op":"ping","id":1e3}', "bad_request"),
            ('{"op":"ping","id":99999999999999999999}', "bad_request"),
            ('{"op":"ping","id":7,"id":7}', "bad_request"),
        ]
        for text, code in cases:
            with self.subTest(text=text[:60]):
                c.send(text)
                self.assertError(c.error(), code)
        c.send_binary(b'{"op":"ping","id":1}')
        self.assertError(c.error(), "bad_request")
        # Still usable after all that.
        self.assertEqual(c.request("ping", id=8)["op"], "pong")

    def test_errors_echo_id(self):
        ch = self.chan()
        c = self.client()
        c.send('{"op":"ping","id":41,"op":"ping"}')
        self.assertError(c.error(), "bad_request", 41)  # duplicate "op"
        c.send('{"id":42}')
        self.assertError(c.error(), "bad_request", 42)  # no op
        c.send('{"op":7,"id":43}')
        self.assertError(c.error(), "bad_request", 43)  # op not a string
        self.assertError(c.request("shout", id=44, channel=ch), "unknown_op", 44)
        self.assertError(c.request("Subscribe", id=45, channel=ch), "unknown_op", 45)
        self.assertError(c.request("subscribe", id=46), "invalid_channel", 46)
        self.assertError(c.request("subscribe", id=47, channel=5), "invalid_channel", 47)
        self.assertError(c.request("subscribe", id=48, channel=ch, since=5), "bad_request", 48)
        self.assertError(c.request("subscribe", id=49, channel=ch, since={"epoch": "x"}), "bad_request", 49)
        self.assertError(c.request("subscribe", id=50, channel=ch, since={"offset": -1}), "bad_request", 50)
        self.assertError(c.request("subscribe", id=51, channel=ch, since={"offset": 1, "epoch": 5}),
                         "bad_request", 51)
        self.assertError(c.request("subscribe", id=52, channel=ch, presence="yes"), "bad_request", 52)
        self.assertError(c.request("publish", id=53, channel=ch), "bad_request", 53)  # no data
        c.send('{"op":"publish","id":54,"channel":"%s","data":1,"data":2}' % ch)
        self.assertError(c.error(), "bad_request", 54)
        c.send('{"op":"subscribe","id":55,"channel":"%s","channel":"other"}' % ch)
        self.assertError(c.error(), "bad_request", 55)
        c.ok("subscribe", id=56, channel=ch)
        self.assertError(c.request("subscribe", id=57, channel=ch), "already_subscribed", 57)
        self.assertError(c.request("unsubscribe", id=58, channel=ch + "-x"), "not_subscribed", 58)
        self.assertEqual(c.request("ping", id=0)["op"], "pong")
        # One answer per request: nothing extra before the answer to a request
        # that goes through the hub too.
        self.assertEqual(c.request("presence", id=999, channel=ch)["op"], "reply")
        self.assertEqual(list(c.events), [], "one answer per request")

    def test_invalid_channel(self):
        c = self.client()
        ok = "AZaz09_-=@,.;:/" + "x" * 185
        self.assertEqual(len(ok), 200)
        for op in ("subscribe", "publish", "history", "presence", "unsubscribe"):
            for bad in ("a b", "a\u00e9", "a*", "a\"b", "a\\b", "a\u0000b", "a#b", "x" * 201, ""):
                with self.subTest(op=op, bad=bad[:20]):
                    self.assertError(c.request(op, id=3, channel=bad, data=1), "invalid_channel", 3)
        self.assertEqual(c.ok("subscribe", channel=ok)["channel"], ok)
        self.assertEqual(c.ok("publish", channel=ok, data=1)["offset"], 1)
        self.assertEqual(c.next_event("message", ok)["channel"], ok)
        # Escapes in the name decode to the name.
        c.send('{"op":"history","id":90,"channel":"\\u0041%s"}' % ok[1:])
        r = c.reply(90)
        self.assertEqual((r["op"], r["channel"]), ("reply", "A" + ok[1:]))
        # A NUL byte (escaped) is outside the alphabet like any other.
        c.send('{"op":"subscribe","id":91,"channel":"a\\u0000b"}')
        self.assertError(c.reply(91), "invalid_channel", 91)

    def test_through_websockets_library(self):
        ch = self.chan()

        async def run():

            sub, w1 = await aconnect(self.srv)
            pub, w2 = await aconnect(self.srv)
            try:
                self.assertNotEqual(w1["client"], w2["client"])
                r = await arequest(sub, {"op": "subscribe", "id": 1, "channel": ch})
                self.assertEqual(r["op"], "reply")
                r = await arequest(pub, {"op": "publish", "id": 2, "channel": ch, "data": "\u00e9\U0001F600"})
                self.assertEqual(r, {"op": "reply", "id": 2, "offset": 1})
                raw = await asyncio.wait_for(sub.recv(), pxtest.scaled(10))
                self.assertIsInstance(raw, str)
                self.assertEqual(json.loads(raw), {"op": "message", "channel": ch, "offset": 1,
                                                   "data": "\u00e9\U0001F600"})
                await pub.send(b'{"op":"ping","id":3}')  # a binary frame
                e = json.loads(await asyncio.wait_for(pub.recv(), pxtest.scaled(10)))
                self.assertEqual((e["op"], e["code"]), ("error", "bad_request"))
                await pub.close()
                self.assertEqual(pub.close_code, 1000)
            finally:
                await sub.close()
                await pub.close()

        asyncio.run(run())


class Limits(HubCase):
    server_args = ("--allow-anonymous", "--max-channels", "3", "--max-payload", "100",
                   "--publish-rate", "5", "--history-size", "5", "--history-limit-max", "50")

    def test_too_many_channels(self):
        c = self.client()
        for i in range(3):
            c.ok("subscribe", channel=self.chan(str(i)))
        e = c.request("subscribe", id=4, channel=self.chan("3"))
        self.assertEqual((e["op"], e["id"], e["code"]), ("error", 4, "too_many_channels"))
        c.ok("unsubscribe", channel=self.chan("0"))
        c.ok("subscribe", channel=self.chan("3"))
        e = c.request("subscribe", id=5, channel=self.chan("4"))
        self.assertEqual(e["code"], "too_many_channels")
        # The limit is per connection.
        self.client().ok("subscribe", channel=self.chan("4"))

    def test_payload_too_large(self):
        ch = self.chan()
        c = self.client()
        exact = '"' + "x" * 98 + '"'  # 100 bytes of data
        c.send('{"op":"publish","id":1,"channel":"%s","data":%s}' % (ch, exact))
        self.assertEqual(c.reply(1)["op"], "reply")
        c.send('{"op":"publish","id":2,"channel":"%s","data":%s}' % (ch, '"' + "x" * 99 + '"'))
        e = c.reply(2)
        self.assertEqual((e["op"], e["code"]), ("error", "payload_too_large"))
        # Whitespace inside data counts (it is passed through).
        c.send('{"op":"publish","id":3,"channel":"%s","data":[%s1]}' % (ch, " " * 99))
        self.assertEqual(c.reply(3)["code"], "payload_too_large")
        self.assertEqual([m["offset"] for m in c.ok("history", channel=ch)["messages"]], [1])

    def test_rate_limited(self):
        ch = self.chan()
        c = self.client()
        time.sleep(1.1)  # a full bucket
        ids = [c.send_request("publish", channel=ch, data=i) for i in range(8)]
        answers = [c.reply(i) for i in ids]
        codes = [a.get("code", a["op"]) for a in answers]
        # 5 per second: the burst is 5, the rest is refused (sent within ms).
        self.assertEqual(codes[:5], ["reply"] * 5, codes)
        self.assertIn("rate_limited", codes[5:])
        for a, i in zip(answers, ids):
            self.assertEqual(a["id"], i)
        refused = [a for a in answers if a["op"] == "error"]
        self.assertTrue(all(a["code"] == "rate_limited" for a in refused))
        stored = [m["data"] for m in c.ok("history", channel=ch)["messages"]]
        self.assertEqual(len(stored), 8 - len(refused), "refused publishes are not stored")
        # Tokens come back.
        time.sleep(0.5)
        self.assertEqual(c.request("publish", channel=ch, data="later")["op"], "reply")
        # Other connections have their own budget; history/ping are not limited.
        d = self.client()
        self.assertEqual([d.request("publish", channel=ch, data=i)["op"] for i in range(5)], ["reply"] * 5)
        self.assertEqual([d.request("ping")["op"] for _ in range(20)], ["pong"] * 20)

    def test_history_truncated(self):
        from hubclient import api

        ch = self.chan()
        for i in range(1, 11):  # over HTTP: not rate-limited
            st, j, _ = api(self.srv, "POST", chan_path(ch), {"n": i})
            self.assertEqual((st, j["offset"]), (201, i))
        c = self.client()
        r = c.ok("history", channel=ch)  # since 0: history starts at 6
        self.assertEqual([m["offset"] for m in r["messages"]], [6, 7, 8, 9, 10])
        self.assertIs(r.get("truncated"), True)
        r = c.ok("history", channel=ch, since=5)
        self.assertEqual([m["offset"] for m in r["messages"]], [6, 7, 8, 9, 10])
        self.assertNotIn("truncated", r)
        r = c.ok("history", channel=ch, since=3, limit=2)
        self.assertEqual([m["offset"] for m in r["messages"]], [6, 7])
        self.assertIs(r.get("truncated"), True)
        self.assertEqual(c.request("history", channel=ch, limit=51)["code"], "bad_request")
        self.assertEqual(len(c.ok("history", channel=ch, limit=50)["messages"]), 5)
        # Without "limit": min(100, --history-limit-max) is a valid request.
        self.assertEqual(len(c.ok("history", channel=ch, since=5)["messages"]), 5)


class StorageError(HubCase):
    """storage_error: another process holds SQLite's write lock (the sqlite3 CLI
    in a write transaction) for longer than the store's busy timeout (5 s)."""

    server_args = ("--allow-anonymous", "--publish-rate", "0")

    def test_storage_error(self):
        import shutil
        import subprocess

        from hubclient import api

        sqlite3 = shutil.which("sqlite3")
        if not sqlite3:
            self.fail("the sqlite3 CLI is missing (deps/debian.txt lists it)")
        ch = self.chan()
        sub, c = self.client(), self.client()
        sub.ok("subscribe", channel=ch)
        self.assertEqual(c.ok("publish", channel=ch, data="before")["offset"], 1)
        self.assertEqual(sub.next_event("message", ch)["offset"], 1)
        db = os.path.join(self.class_out, "data", "plexus.db")
        lock = subprocess.Popen([sqlite3, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            lock.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n")
            lock.stdin.flush()
            self.assertEqual(lock.stdout.readline().strip(), "locked")
            # Several publishes together (one group commit, most likely), all refused.
            c.send('{"op":"publish","id":11,"channel":"%s","data":"a"}' % ch)
            c.send('{"op":"publish","id":12,"channel":"%s","data":"b"}' % ch)
            c.send('{"op":"publish","id":13,"channel":"%s","data":"c"}' % ch)
            for rid in (11, 12, 13):
                e = c.reply(rid, timeout=40)
                self.assertEqual((e["op"], e["id"], e["code"]), ("error", rid, "storage_error"), e)
            st, j, r = api(self.srv, "POST", chan_path(ch), '"d"', timeout=40)
            self.assertEqual((st, j["error"]), (503, "storage_error"), r.body)
        finally:
            lock.stdin.write("ROLLBACK;\n")
            lock.stdin.close()
            lock.wait(10)
            lock.stdout.close()
        # Nothing of it was stored or delivered. The refused messages' offsets
        # (2..5) are never given to other messages: after a failed commit the
        # batch may still be on disk and come back after a crash (hub.c
        # commit_batch), so offsets go on after them, with a gap.
        after = c.ok("publish", channel=ch, data="after")["offset"]
        self.assertGreaterEqual(after, 6)
        # Nothing refused reached the subscriber before the next message.
        got, earlier = sub.until(lambda m: m.get("op") == "message")
        self.assertEqual((got["offset"], [m["op"] for m in earlier]), (after, []))
        h = c.ok("history", channel=ch)
        self.assertEqual([(m["offset"], m["data"]) for m in h["messages"]], [(1, "before"), (after, "after")])
        self.assertNotIn("truncated", h, "a gap is not lost history")
        # Recovery across the gap is complete.
        d = self.client()
        r = d.ok("subscribe", channel=ch, since={"offset": 1})
        self.assertEqual((r["offset"], r["recovered"]), (after, True))
        self.assertEqual(d.next_event("message", ch)["offset"], after)


if __name__ == "__main__":
    pxtest.main()
