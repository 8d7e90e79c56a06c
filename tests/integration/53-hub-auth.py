#!/usr/bin/python3
"""53-hub-auth: tokens (HS256 JWT, minted here with hmac/hashlib) and API keys.

WebSocket (/ws), with --jwt-secret and without --allow-anonymous:
  - no token -> {"op":"error","code":"unauthorized"} then close 1008, and
    whatever the client sent meanwhile is ignored;
  - expired (exp), not yet valid (nbf), bad signature, tampered payload,
    alg none, garbage -> the same;
  - a token via ?token= and via "Authorization: Bearer";
  - the channels claim: {"subscribe":[...],"publish":[...]} glob patterns and
    the array form; outside them -> forbidden (with the request id);
  - sub and info from the token appear in presence and join events (a
    client's own "info" does not override them).
HTTP API:
  - --api-key: missing -> 401 (JSON, WWW-Authenticate), wrong -> 403, right ->
    201; a client JWT works too, with its channels claim applied; ?token=;
  - --allow-anonymous without --api-key: the API is open; with --api-key it is not;
  - SSE with ?token=.
Also: --allow-anonymous still verifies a token that is presented; a server
without --jwt-secret refuses tokens.

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/53-hub-auth.py -v
"""

import json
import time

import pxtest
from hubclient import HubCase, HubClient, SseReader, api, chan_path, jwt

SECRET = "a-test-secret-of-at-least-32-bytes!!"
KEY = "api-key-0123456789"


def tok(**claims):
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt(SECRET, claims)


class AuthCase(HubCase):
    def refused(self, token=None, headers=(), query=""):
        """Connect; expect an unauthorized error and close 1008. Returns the error."""
        c = HubClient(self.srv.addr, token=token, headers=headers, query=query, welcome=False)
        self.clients.append(c)
        code, msgs = c.wait_closed()
        self.assertEqual(code, 1008, msgs)
        self.assertEqual(len(msgs), 1, msgs)
        e = msgs[0]
        self.assertEqual((e["op"], e["code"]), ("error", "unauthorized"), e)
        self.assertNotIn("id", e)
        self.assertTrue(e["message"])
        return e

    def accepted(self, token=None, **kw):
        c = HubClient(self.srv.addr, token=token, **kw)
        self.clients.append(c)
        return c


class JwtOnly(AuthCase):
    server_args = ("--jwt-secret", SECRET)

    def test_no_token(self):
        self.refused()
        self.refused(headers=["Authorization: Basic dXNlcjpwYXNz"])
        self.refused(query="token=")

    def test_bad_tokens(self):
        now = int(time.time())
        good = tok(sub="u")
        h, p, s = good.split(".")
        other = jwt("another-secret-another-secret-xxxx", {"sub": "u", "exp": now + 60})
        tampered_payload = jwt(SECRET, {"sub": "u", "exp": now + 60}).split(".")
        tampered = ".".join([tampered_payload[0],
                             jwt(SECRET, {"sub": "admin", "exp": now + 60}).split(".")[1],
                             tampered_payload[2]])
        none = jwt(SECRET, {"sub": "u"}, header={"alg": "none"}).rsplit(".", 1)[0] + "."
        hs512 = jwt(SECRET, {"sub": "u"}, header={"alg": "HS512", "typ": "JWT"})
        cases = {
            "expired": tok(sub="u", exp=now - 10),
            "not yet valid": tok(sub="u", nbf=now + 600),
            "wrong secret": other,
            "tampered payload": tampered,
            "bad signature bytes": h + "." + p + "." + ("A" if s[0] != "A" else "B") + s[1:],
            "alg none": none,
            "alg HS512": hs512,
            "garbage": "not-a-jwt",
            "two parts": h + "." + p,
            "fractional exp": jwt(SECRET, '{"sub":"u","exp":%d.5}' % (now + 60)),
        }
        for what, t in cases.items():
            with self.subTest(what=what):
                self.refused(token=t)
                self.refused(headers=["Authorization: Bearer " + t])

    def test_ignores_requests_after_refusal(self):
        ch = self.chan()
        c = HubClient(self.srv.addr, welcome=False)
        self.clients.append(c)
        # Pipelined right behind the handshake: must not be executed.
        c.send({"op": "publish", "id": 1, "channel": ch, "data": "sneaky"})
        c.send({"op": "subscribe", "id": 2, "channel": ch})
        code, msgs = c.wait_closed()
        self.assertEqual(code, 1008)
        self.assertEqual([m["code"] for m in msgs], ["unauthorized"], msgs)
        st, j, _ = api(self.srv, "GET", chan_path(ch), token=tok())
        self.assertEqual((st, j["offset"], j["messages"]), (200, 0, []))

    def test_token_in_query_and_header(self):
        ch = self.chan()
        a = self.accepted(tok(sub="alice"))
        b = self.accepted(headers=["Authorization: Bearer " + tok(sub="bob")])
        c = self.accepted(headers=["authorization: bearer " + tok(sub="carol")])
        for x in (a, b, c):
            x.ok("subscribe", channel=ch)
        a.ok("publish", channel=ch, data=1)
        for x in (a, b, c):
            self.assertEqual(x.next_event("message", ch)["data"], 1)

    def test_channels_claim(self):
        t = tok(sub="u", channels={"subscribe": ["room:*", "news"], "publish": ["room:lobby"]})
        c = self.accepted(t)
        c.ok("subscribe", channel="room:lobby")
        c.ok("subscribe", channel="room:a.b/c")   # '*' spans any bytes
        c.ok("subscribe", channel="news")
        c.ok("history", channel="room:x")
        c.ok("presence", channel="room:x")
        for op, ch in (("subscribe", "room"), ("subscribe", "news2"), ("subscribe", "xroom:a"),
                       ("history", "other"), ("presence", "other"),
                       ("publish", "room:a"), ("publish", "news"), ("publish", "room:lobby2")):
            with self.subTest(op=op, ch=ch):
                e = c.request(op, id=33, channel=ch, data=1)
                self.assertEqual((e["op"], e["id"], e["code"]), ("error", 33, "forbidden"), e)
        self.assertEqual(c.ok("publish", channel="room:lobby", data="hi")["offset"], 1)
        self.assertEqual(c.next_event("message", "room:lobby")["data"], "hi")
        # The array form: the patterns allow both.
        d = self.accepted(tok(channels=["chat:?"]))
        d.ok("subscribe", channel="chat:1")
        d.ok("publish", channel="chat:1", data=1)
        self.assertEqual(d.request("publish", channel="chat:12", data=1)["code"], "forbidden")
        self.assertEqual(d.request("subscribe", channel="chat:", data=1)["code"], "forbidden")
        # No channels claim: everything.
        e = self.accepted(tok(sub="free"))
        e.ok("publish", channel="anything-at-all", data=1)
        # An empty list: nothing.
        f = self.accepted(tok(channels=[]))
        self.assertEqual(f.request("subscribe", channel="a")["code"], "forbidden")

    def test_presence_from_token(self):
        ch = self.chan()
        watcher = self.accepted(tok(sub="watcher"))
        watcher.ok("subscribe", channel=ch, presence=True)
        self.assertEqual(dict(watcher.next_event("join", ch)),
                         {"op": "join", "channel": ch, "client": watcher.client_id, "user": "watcher"})
        alice = self.accepted(tok(sub="alice", info={"name": "Alice", "color": "#f00"}))
        alice.ok("subscribe", channel=ch, info={"name": "Mallory"})  # ignored: the token's info wins
        self.assertEqual(dict(watcher.next_event("join", ch)),
                         {"op": "join", "channel": ch, "client": alice.client_id, "user": "alice",
                          "info": {"name": "Alice", "color": "#f00"}})
        nobody = self.accepted(tok())  # neither sub nor info
        nobody.ok("subscribe", channel=ch, info="ignored too")
        self.assertEqual(dict(watcher.next_event("join", ch)),
                         {"op": "join", "channel": ch, "client": nobody.client_id})
        p = watcher.ok("presence", channel=ch)
        self.assertEqual(p["count"], 3)
        by = {x["client"]: x for x in p["clients"]}
        self.assertEqual(by[alice.client_id], {"client": alice.client_id, "user": "alice",
                                               "info": {"name": "Alice", "color": "#f00"}})
        self.assertEqual(by[watcher.client_id], {"client": watcher.client_id, "user": "watcher"})
        self.assertEqual(by[nobody.client_id], {"client": nobody.client_id})
        st, j, _ = api(self.srv, "GET", chan_path(ch, "presence"), token=tok())
        self.assertEqual(sorted(map(json.dumps, j["clients"])), sorted(map(json.dumps, p["clients"])))
        alice.close()
        self.assertEqual(dict(watcher.next_event("leave", ch)),
                         {"op": "leave", "channel": ch, "client": alice.client_id, "user": "alice",
                          "info": {"name": "Alice", "color": "#f00"}})

    def test_http_with_jwt(self):
        ch = "room:" + self.chan()
        t = tok(channels={"subscribe": ["room:*"], "publish": ["room:*"]})
        ro = tok(channels={"subscribe": ["room:*"], "publish": []})
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1})
        self.assertEqual((st, j["error"]), (401, "unauthorized"), r.body)
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1}, token=t)
        self.assertEqual((st, j["channel"], j["offset"]), (201, ch, 1), r.body)
        st, j, r = api(self.srv, "POST", chan_path(ch) + "?token=" + t, {"a": 2})
        self.assertEqual((st, j["offset"]), (201, 2), r.body)
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 3}, token=ro)
        self.assertEqual((st, j["error"]), (403, "forbidden"), r.body)
        st, j, r = api(self.srv, "POST", chan_path("other"), 1, token=t)
        self.assertEqual((st, j["error"]), (403, "forbidden"), r.body)
        st, j, _ = api(self.srv, "GET", chan_path(ch), token=ro)
        self.assertEqual((st, [m["data"] for m in j["messages"]]), (200, [{"a": 1}, {"a": 2}]))
        st, j, _ = api(self.srv, "GET", chan_path("other"), token=ro)
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        st, j, _ = api(self.srv, "GET", chan_path("other", "presence"), token=ro)
        self.assertEqual(st, 403)
        for bad in (tok(exp=int(time.time()) - 5), "garbage", jwt("wrong-secret-wrong-secret-wrong!", {})):
            st, j, r = api(self.srv, "POST", chan_path(ch), 1, token=bad)
            self.assertEqual((st, j["error"]), (403, "forbidden"), r.body)
        st, _, _ = api(self.srv, "GET", "/api/channels")
        self.assertEqual(st, 401)
        self.assertEqual(api(self.srv, "GET", "/api/channels", token=ro)[0], 200)

    def test_sse_with_token(self):
        ch = "room:" + self.chan()
        t = tok(channels={"subscribe": ["room:*"], "publish": ["room:*"]})
        st, j, _ = api(self.srv, "GET", chan_path(ch, "events"))
        self.assertEqual((st, j["error"]), (401, "unauthorized"))
        st, j, _ = api(self.srv, "GET", chan_path("x", "events") + "?token=" + t)
        self.assertEqual((st, j["error"]), (403, "forbidden"))
        s = SseReader(self.srv.addr, chan_path(ch, "events") + "?since=0&token=" + t)
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 5, token=t)[0], 201)
        self.assertEqual((s.event()["data"]), "5")


class ApiKey(AuthCase):
    server_args = ("--jwt-secret", SECRET, "--api-key", KEY)

    def test_api_key(self):
        ch = self.chan()
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1})
        self.assertEqual((st, j["error"]), (401, "unauthorized"), r.body)
        self.assertTrue(j["message"])
        self.assertTrue(r.header("Content-Type").startswith("application/json"))
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1}, token=KEY + "x")
        self.assertEqual((st, j["error"]), (403, "forbidden"), r.body)
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1}, token=KEY[:-1])
        self.assertEqual(st, 403)
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1}, headers={"Authorization": "Basic " + KEY})
        self.assertEqual(st, 401)
        st, j, r = api(self.srv, "POST", chan_path(ch), {"a": 1}, token=KEY)
        self.assertEqual((st, j["offset"]), (201, 1), r.body)
        for path in (chan_path(ch), chan_path(ch, "presence"), "/api/channels"):
            with self.subTest(path=path):
                self.assertEqual(api(self.srv, "GET", path)[0], 401)
                self.assertEqual(api(self.srv, "GET", path, token="nope")[0], 403)
                self.assertEqual(api(self.srv, "GET", path, token=KEY)[0], 200)
        # A client JWT works on the API too.
        st, j, _ = api(self.srv, "POST", chan_path(ch), 2, token=tok())
        self.assertEqual((st, j["offset"]), (201, 2))
        # The API key is not a WebSocket credential.
        self.refused(token=KEY)
        # /metrics and /healthz need no credentials (docs/protocol.md).
        self.assertEqual(api(self.srv, "GET", "/healthz")[0], 200)
        self.assertEqual(self.srv.http("GET", "/metrics").status, 200)


class AnonymousOpen(AuthCase):
    server_args = ("--allow-anonymous", "--jwt-secret", SECRET)

    def test_api_open(self):
        ch = self.chan()
        st, j, r = api(self.srv, "POST", chan_path(ch), 1)
        self.assertEqual((st, j["offset"]), (201, 1), r.body)
        self.assertEqual(api(self.srv, "GET", chan_path(ch))[0], 200)
        self.assertEqual(api(self.srv, "GET", "/api/channels")[0], 200)
        # A presented credential is still checked.
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 1, token="garbage")[0], 403)
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 1, token=tok())[0], 201)

    def test_ws_anonymous_and_tokens(self):
        ch = self.chan()
        a = self.accepted()
        a.ok("subscribe", channel=ch, presence=True, info={"name": "Anon"})
        self.assertEqual(a.next_event("join", ch)["info"], {"name": "Anon"})
        b = self.accepted(tok(sub="bob", channels={"subscribe": ["x"], "publish": []}))
        self.assertEqual(b.request("subscribe", channel=ch)["code"], "forbidden")
        self.refused(token=tok(exp=int(time.time()) - 1))
        self.refused(token="garbage")


class AnonymousWithKey(AuthCase):
    server_args = ("--allow-anonymous", "--api-key", KEY)

    def test_api_needs_key(self):
        ch = self.chan()
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 1)[0], 401)
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 1, token="wrong")[0], 403)
        self.assertEqual(api(self.srv, "POST", chan_path(ch), 1, token=KEY)[0], 201)
        self.accepted().ok("publish", channel=ch, data=2)  # WebSocket stays anonymous

    def test_no_secret_refuses_tokens(self):
        self.refused(token=tok())


class Closed(AuthCase):
    server_args = ()  # neither --jwt-secret nor --allow-anonymous

    def test_nobody_gets_in(self):
        self.refused()
        self.refused(token=tok())
        self.assertEqual(api(self.srv, "POST", chan_path("x"), 1)[0], 401)
        self.assertRegex(self.srv.log_text(), "no --jwt-secret and no --allow-anonymous")


if __name__ == "__main__":
    pxtest.main()
