"""hubclient: small clients for the hub's native protocol (docs/protocol.md), shared
by tests/integration/5x-hub-*.py.

    srv = self.start_server(*hub_args(self.out_dir, "--allow-anonymous"))
    with HubClient(srv.addr) as c:              # connects, reads the welcome
        rep = c.request("subscribe", channel="room")   # -> the reply (or error) object
        c.request("publish", channel="room", data={"a": 1})
        ev = c.next_event("message")            # events received meanwhile are buffered
        ev.raw                                  # the exact text the server sent

HubClient speaks raw RFC 6455 through wsraw.WsClient (synchronous, byte-exact,
able to send binary frames or a tiny SO_RCVBUF). The asyncio helpers at the end
use python3-websockets for tests that need many concurrent connections.

Also: jwt() mints HS256 tokens with hashlib/hmac; api() is a JSON HTTP call;
metrics() parses /metrics; SseReader reads a Server-Sent Events stream;
same_sequence_everywhere(), kill9_during_publishes(), presence_across_nodes() and
slow_store_does_not_stall() are the several-nodes checks of tests 70-72.
"""

import base64
import collections
import hashlib
import hmac
import json
import os
import random
import socket
import threading
import time
import urllib.parse

import pxtest
from pxtest import scaled
from wsraw import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsClient, encode_frame

__all__ = ["HubClient", "Msg", "hub_args", "jwt", "api", "metrics", "metric", "SseReader",
           "ws_url", "aconnect", "arequest"]


def hub_args(out_dir, *extra, data_dir=None):
    """Arguments for a hub server: its own --data-dir under the test's output
    directory, pings off (tests are short), plus `extra`."""
    d = data_dir or os.path.join(out_dir, "data")
    return ("--data-dir", d, "--ws-ping-interval", "0") + tuple(extra)


# ---- tokens -------------------------------------------------------------------------


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(secret, claims, header=None):
    """An HS256 JWT over `claims` (a dict, or a str used byte for byte)."""
    head = json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
    body = claims.encode() if isinstance(claims, str) else json.dumps(claims, separators=(",", ":")).encode()
    signing = _b64url(head) + "." + _b64url(body)
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64url(sig)


# ---- the native protocol, synchronous --------------------------------------------------


class Msg(dict):
    """A message from the server: the parsed object, plus .raw (the exact text)."""

    def __init__(self, raw):
        super().__init__(json.loads(raw))
        self.raw = raw


class ClosedError(AssertionError):
    pass


class HubClient:
    """One /ws connection. Requests get increasing ids; replies are matched by
    id; everything else (message/join/leave and unmatched frames) is kept in
    order in .events until a test takes it."""

    def __init__(self, addr, token=None, headers=(), query="", timeout=10.0, rcvbuf=None,
                 welcome=True, path="/ws"):
        if token is not None:
            query = (query + "&" if query else "") + "token=" + urllib.parse.quote(token, safe="")
        self.ws = WsClient(addr, path=path + ("?" + query if query else ""), headers=headers,
                           timeout=timeout, rcvbuf=rcvbuf)
        self.events = collections.deque()
        self.next_id = 1
        self.close_code = None
        self.close_reason = None
        self.welcome = self.recv() if welcome else None
        if welcome:
            if self.welcome is None or self.welcome.get("op") != "welcome":
                raise AssertionError("expected a welcome, got %r (close %s)"
                                     % (self.welcome, self.close_code))
            self.client_id = self.welcome["client"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.ws.close()

    # -- sending --

    def send(self, obj):
        """Send a JSON object (compact) or a str (as is) in one text frame."""
        text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        self.ws.send_message(OP_TEXT, text.encode())

    def send_binary(self, data):
        self.ws.send_message(OP_BINARY, data)

    # -- receiving --

    def recv(self, timeout=None):
        """The next text message as a Msg; None once the server closed (the close
        code is in .close_code). Pings are answered; a binary frame is an error."""
        while True:
            m = self.ws.recv_message(timeout)
            if m is None:
                return None
            op, payload = m
            self.ws.frames.clear()  # no unbounded history for long runs
            if op == OP_TEXT:
                return Msg(payload.decode())
            if op == OP_PING:
                self.ws.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.close_reason = payload[2:].decode("utf-8", "replace")
                try:
                    self.ws.send_close(self.close_code)
                except OSError:
                    pass
                return None
            raise AssertionError("unexpected opcode %#x from the hub" % op)

    def _take(self, pred, timeout, what):
        for i, m in enumerate(self.events):
            if pred(m):
                del self.events[i]
                return m
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %s; buffered: %r" % (what, list(self.events)[:5]))
            try:
                m = self.recv(timeout=left / pxtest.TIMEOUT_MULT)
            except (socket.timeout, TimeoutError):
                raise AssertionError("timed out waiting for %s; buffered: %r" % (what, list(self.events)[:5]))
            if m is None:
                raise ClosedError("connection closed (code %s %r) while waiting for %s"
                                  % (self.close_code, self.close_reason, what))
            if pred(m):
                return m
            self.events.append(m)

    def send_request(self, op, **fields):
        """Send {"op":op,"id":N,...fields}; returns N. fields with value None are left out;
        id=... overrides (id=None: no id)."""
        if "id" in fields:
            rid = fields.pop("id")
        else:
            rid = self.next_id
            self.next_id += 1
        obj = {"op": op}
        if rid is not None:
            obj["id"] = rid
        obj.update({k: v for k, v in fields.items() if v is not None})
        self.send(obj)
        return rid

    def send_requests(self, op, count, **fields):
        """`count` requests as send_request would send them, all in one write, so the
        server reads them together (a test of per-connection bounds must not depend on
        how fast the server answers between separate writes). Returns their ids."""
        ids, frames = [], []
        for _ in range(count):
            obj = {"op": op, "id": self.next_id}
            obj.update({k: v for k, v in fields.items() if v is not None})
            ids.append(self.next_id)
            self.next_id += 1
            frames.append(encode_frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode()))
        self.ws.send_raw(b"".join(frames))
        return ids

    def reply(self, rid, timeout=10.0):
        """The reply, error or pong carrying id `rid`."""
        return self._take(lambda m: m.get("id") == rid and m.get("op") in ("reply", "error", "pong"),
                          timeout, "the answer to id %r" % rid)

    def request(self, op, timeout=10.0, **fields):
        return self.reply(self.send_request(op, **fields), timeout)

    def ok(self, op, timeout=10.0, **fields):
        """request() that must succeed (op "reply")."""
        r = self.request(op, timeout, **fields)
        if r.get("op") != "reply":
            raise AssertionError("%s %r failed: %r" % (op, fields, r))
        return r

    def error(self, timeout=10.0):
        """The next error without an id (for malformed frames)."""
        return self._take(lambda m: m.get("op") == "error", timeout, "an error")

    def next_event(self, op=None, channel=None, timeout=10.0):
        """The next buffered or arriving message with this op (and channel)."""
        return self._take(lambda m: (op is None or m.get("op") == op)
                          and (channel is None or m.get("channel") == channel),
                          timeout, "an event op=%s channel=%s" % (op, channel))

    def messages(self, channel, n, timeout=10.0):
        """The next n "message" events of `channel`."""
        return [self.next_event("message", channel, timeout) for _ in range(n)]

    def until(self, pred, timeout=10.0, what="the marker"):
        """A positive marker for "nothing else arrives": wait for the first
        message matching `pred` and return (that message, every message that
        arrived before it, in order). The hub sends a connection's messages in
        the order it produced them, so a message produced before the marker
        (a publish acknowledged before the marker's publish was sent, a presence
        event another client saw before) is in that list if it was sent at all.
        Prefer it to quiet(): a short wait proves little on a slow machine."""
        m = self._take(pred, timeout, what)
        earlier = list(self.events)
        self.events.clear()
        return m, earlier

    def quiet(self, seconds=0.3):
        """Everything that arrives within `seconds` (scaled); [] if nothing.
        For "nothing arrives" checks use until() with a marker where possible."""
        out = list(self.events)
        self.events.clear()
        deadline = time.monotonic() + scaled(seconds)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                m = self.recv(timeout=left / pxtest.TIMEOUT_MULT)
            except (socket.timeout, TimeoutError):
                return out
            if m is None:
                return out
            out.append(m)

    def wait_closed(self, timeout=10.0):
        """Read until the server closes; returns (close code, the messages before it)."""
        got = list(self.events)
        self.events.clear()
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the server did not close the connection")
            m = self.recv(timeout=left / pxtest.TIMEOUT_MULT)
            if m is None:
                return self.close_code, got
            got.append(m)


# ---- HTTP ----------------------------------------------------------------------------------


def api(srv, method, path, body=None, token=None, headers=None, timeout=10.0):
    """An HTTP call; body: bytes/str sent as is, anything else as JSON. Returns
    (status, parsed JSON body or None, Response)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode()
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    r = srv.http(method, path, headers=h, body=body, timeout=timeout)
    try:
        j = json.loads(r.body) if r.body else None
    except ValueError:
        j = None
    return r.status, j, r


def chan_path(channel, suffix="messages"):
    return "/api/channels/%s/%s" % (urllib.parse.quote(channel, safe=""), suffix)


def publish_http(srv, channel, data, timeout=10.0):
    """POST a message through the HTTP API: (200, ack) once committed (the API answers
    201 Created), else (status, error body)."""
    st, body, _ = api(srv, "POST", chan_path(channel), body=data, timeout=timeout)
    return (200 if st == 201 else st), body


def full_history(srv, channel):
    """Every stored message of `channel` (pages of 1000 through the HTTP API), and the
    last (empty) page's body."""
    out, since = [], 0
    while True:
        st, body, _ = api(srv, "GET", chan_path(channel) + "?since=%d&limit=1000" % since)
        assert st == 200, body
        if not body["messages"]:
            return out, body
        out += body["messages"]
        since = body["messages"][-1]["offset"]


def same_sequence_everywhere(case, nodes, subs, sse, channel, sent, since_history, since_recover):
    """After publishes through several nodes: `sent`, the [(offset, data)] acknowledged,
    is one sequence 1..N; every subscriber in `subs` (one per node) and the SSE reader
    `sse` got it in order; history since `since_history` and a recovering subscribe
    since `since_recover` give the same messages and epoch from every node of `nodes`.
    Returns that epoch."""
    n = len(sent)
    case.assertEqual([o for o, _ in sent], list(range(1, n + 1)), "one sequence")
    for s in subs:
        case.assertEqual([(m["offset"], m["data"]) for m in s.messages(channel, n)], sent)
    case.assertEqual([(int(e["id"]), json.loads(e["data"])) for e in sse.events(n)], sent)
    hist = [s.ok("history", channel=channel, since={"offset": since_history}) for s in subs]
    for h in hist:
        case.assertEqual([(m["offset"], m["data"]) for m in h["messages"]], sent[since_history:])
        case.assertEqual((h["epoch"], h["offset"]), (hist[0]["epoch"], n))
    epoch = hist[0]["epoch"]
    for node in nodes:
        with HubClient(node.addr) as r:
            rep = r.ok("subscribe", channel=channel,
                       since={"epoch": epoch, "offset": since_recover})
            case.assertEqual((rep["recovered"], rep["offset"]), (True, n))
            got = r.messages(channel, n - since_recover)
            case.assertEqual([(m["offset"], m["data"]) for m in got], sent[since_recover:])
    return epoch


def kill9_during_publishes(case, steady, start_victim, channel, rounds, one_sequence):
    """kill -9 a node (or process) during publishes, `rounds` times (PX_KILL9_ROUNDS
    overrides; PX_KILL9_SEED replays a run), and check, with `case`'s assertions: no
    acknowledged message lost, no offset acknowledged twice, stored offsets strictly
    increasing (with `one_sequence`, exactly 1..N: no hole either), and a subscriber on
    `steady` got every stored message once, in order. `start_victim()` starts the victim
    the first time (later rounds restart it); it publishes through the HTTP API until
    killed."""
    watcher = HubClient(steady.addr)
    watcher.ok("subscribe", channel=channel)
    rounds = int(os.environ.get("PX_KILL9_ROUNDS") or rounds)
    seed = int(os.environ.get("PX_KILL9_SEED") or random.randrange(1 << 30))
    print("seed", seed)
    rnd = random.Random(seed)
    acked, twice = {}, []
    victim = None
    for rno in range(rounds):
        if victim is None:
            victim = start_victim()
        else:
            victim.start()
        stop = threading.Event()

        def run(rno=rno):
            i = 0
            while not stop.is_set():
                data = {"r": rno, "i": i}
                i += 1
                try:
                    st, body = publish_http(victim, channel, data, timeout=5)
                except OSError:
                    return
                if st == 200:
                    if body["offset"] in acked:
                        twice.append(body["offset"])
                    acked[body["offset"]] = data

        t = threading.Thread(target=run)
        t.start()
        time.sleep(rnd.uniform(0.05, 0.3))
        victim.kill()
        stop.set()
        t.join()
    case.assertGreater(len(acked), rounds)
    case.assertEqual(twice, [], "offsets acknowledged twice")
    # A last message through the steady node shows any gap a dead node left.
    st, body = publish_http(steady, channel, {"last": 1})
    case.assertEqual(st, 200, body)
    last = body["offset"]
    acked[last] = {"last": 1}
    msgs, _ = full_history(steady, channel)
    offs = [m["offset"] for m in msgs]
    if one_sequence:
        case.assertEqual(offs, list(range(1, len(offs) + 1)), "one sequence, no hole")
    else:
        case.assertEqual(offs, sorted(set(offs)), "offsets strictly increasing, no duplicates")
    stored = {m["offset"]: m["data"] for m in msgs}
    for off, data in acked.items():
        case.assertEqual(stored.get(off), data, "acknowledged message %d lost" % off)
    # The steady node's subscriber saw every committed message once, in order.
    got = []
    # (A commit the victim sent before it died may land after `last`: unacknowledged,
    # it may or may not be stored, but if it is, every node delivers it in order.)
    while not got or got[-1] < max(last, offs[-1]):
        got.append(watcher.next_event("message", channel, timeout=10)["offset"])
    case.assertEqual(got, offs)
    watcher.close()


def presence_across_nodes(case, nodes, channel, ttl, cid_node, cid_unsubscribes, then=None):
    """Presence on three nodes (or processes) `nodes` = (a, b, c), each started with
    --presence-ttl `ttl`: members merge across nodes, watchers on a and b see every
    join/leave once, members stay past the TTL while their node lives, a member that
    leaves from `cid_node` (by unsubscribing, or by closing its connection) leaves
    once, and node c's member leaves within the TTL of `c.kill()`, once though both
    remaining nodes sweep. `then()`, if given, runs before the clients close."""
    a, b, c = nodes
    # Presence watchers on two nodes: each must see every join/leave once.
    ann = HubClient(a.addr)
    ann.ok("subscribe", channel=channel, presence=True, info="Ann")
    case.assertEqual(ann.next_event("join", channel)["client"], ann.client_id)

    def listed(node):
        with HubClient(node.addr) as q:
            return {x["client"] for x in q.ok("presence", channel=channel)["clients"]}

    # Ann's join reaches node b through the broker: a watcher that subscribes before it
    # lands is told of Ann by that join rather than by the list. Wait for it to land.
    pxtest.wait_for(lambda: ann.client_id in listed(b), 10, what="Ann listed on node b")
    dee = HubClient(b.addr)
    dee.ok("subscribe", channel=channel, presence=True, info="Dee")
    watchers = (ann, dee)
    for w in watchers:
        case.assertEqual(w.next_event("join", channel)["client"], dee.client_id)

    def seen(op, who, info):
        for w in watchers:
            e = w.next_event(op, channel, timeout=10)
            case.assertEqual(dict(e), {"op": op, "channel": channel, "client": who.client_id,
                                       "info": info})

    def members(nodes, want):
        for n in nodes:
            with HubClient(n.addr) as q:
                p = q.ok("presence", channel=channel)
                case.assertEqual({x["client"]: x.get("info") for x in p["clients"]}, want)
                case.assertEqual(p["count"], len(want))

    bob = HubClient(c.addr)
    bob.ok("subscribe", channel=channel, info="Bob")
    seen("join", bob, "Bob")
    # Every node lists every node's members.
    want = {ann.client_id: "Ann", dee.client_id: "Dee", bob.client_id: "Bob"}
    members((a, b, c), want)
    # Each node refreshes its own members: past the TTL everybody is still there (and
    # nobody left: a leave would be taken by the next_event("leave") below).
    time.sleep(ttl * 1.5)
    members((a, b, c), want)
    # A clean leave reaches every watcher once.
    cid = HubClient(cid_node.addr)
    cid.ok("subscribe", channel=channel, info="Cid")
    seen("join", cid, "Cid")
    if cid_unsubscribes:
        cid.ok("unsubscribe", channel=channel)
        seen("leave", cid, "Cid")
        cid.close()
    else:
        cid.close()
        seen("leave", cid, "Cid")
    # A killed node's members leave within the TTL (plus a refresh period), once,
    # though both remaining nodes sweep the channel.
    t0 = time.monotonic()
    c.kill()
    seen("leave", bob, "Bob")
    case.assertLess(time.monotonic() - t0, scaled(ttl + ttl / 3 + 1.5))
    time.sleep(ttl)  # several more sweeps by both nodes
    st, body = publish_http(b, channel, {"mark": 1})
    case.assertEqual(st, 200, body)
    for w in watchers:
        m, earlier = w.until(lambda m: m.get("op") == "message" and m.get("channel") == channel)
        case.assertEqual(m["data"], {"mark": 1})
        case.assertEqual([x for x in earlier if x.get("op") in ("join", "leave")], [])
    members((a, b), {ann.client_id: "Ann", dee.client_id: "Dee"})
    if then:
        then()
    bob.close()
    dee.close()
    ann.close()


def slow_store_does_not_stall(case, a, b, proxy, delay, fast, slow):
    """Node `a`'s store goes through `proxy` (backends.TcpProxy), its broker not: while
    the proxy delays each way by `delay`, a publish on channel `slow` through `a` waits
    for the store, and a publish on `fast` through node `b` still reaches `a`'s
    subscriber in less than `delay`; /healthz stays 200 and the slow publish succeeds."""
    sub = HubClient(a.addr)
    sub.ok("subscribe", channel=fast)
    proxy.delay = delay
    res = {}
    t = threading.Thread(target=lambda: res.update(r=publish_http(a, slow, {"s": 1})))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.1)
    st, body = publish_http(b, fast, {"f": 1})
    case.assertEqual(st, 200, body)
    m = sub.next_event("message", fast, timeout=5)
    took = time.monotonic() - t0
    case.assertEqual(m["data"], {"f": 1})
    case.assertTrue(t.is_alive(), "the slow publish is still waiting for the store")
    case.assertLess(took, delay - 0.1, "the other channel was delivered while the store was slow")
    st, _, _ = api(a, "GET", "/healthz")
    case.assertEqual(st, 200)
    t.join()
    case.assertEqual(res["r"][0], 200, res)
    proxy.delay = 0
    sub.close()


def metrics(srv):
    """/metrics as {'name{labels}': value} plus the raw text under None."""
    r = srv.http("GET", "/metrics")
    assert r.status == 200, r
    out = {None: r.body.decode()}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        k, _, v = line.rpartition(" ")
        out[k] = float(v)
    return out


def metric(srv, name, default=0.0):
    """The sum over label sets of metric `name`."""
    m = metrics(srv)
    vals = [v for k, v in m.items() if k is not None and (k == name or k.startswith(name + "{"))]
    return sum(vals) if vals else default


# ---- Server-Sent Events -------------------------------------------------------------------


class SseReader(pxtest.SocketReader):
    """GET an SSE stream over a raw socket and parse events (id, data lines,
    comments). Chunked transfer encoding is decoded when the server uses it."""

    def __init__(self, addr, path, headers=(), timeout=10.0):
        self.sock = pxtest.connect(addr, timeout)
        lines = ["GET %s HTTP/1.1" % path, "Host: test", "Accept: text/event-stream"] + list(headers)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""      # undecoded bytes
        self.text = ""      # decoded body so far (de-chunked)
        self.pos = 0        # parse position in text
        self.eof = False
        self.comments = []
        self.retry = None
        self.status = None
        self.headers = {}
        self.chunked = False
        deadline = time.monotonic() + scaled(timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
            if self.eof:
                break
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status_line, *hl = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        for line in hl:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.buf = rest
        self._decode()

    def _decode(self):
        if not self.chunked:
            self.text += self.buf.decode("utf-8")
            self.buf = b""
            return
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            size = int(self.buf[:i].split(b";")[0], 16)
            if size == 0:
                self.eof = True
                return
            if len(self.buf) < i + 2 + size + 2:
                return
            self.text += self.buf[i + 2:i + 2 + size].decode("utf-8")
            self.buf = self.buf[i + 2 + size + 2:]

    def event(self, timeout=10.0):
        """The next event as {"id":..., "data": "joined data lines"}, or None on
        EOF. Comments are collected in .comments."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            i = self.text.find("\n\n", self.pos)
            if i >= 0:
                block = self.text[self.pos:i]
                self.pos = i + 2
                ev = {"data_lines": []}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                        continue
                    k, _, v = line.partition(":")
                    if v.startswith(" "):
                        v = v[1:]
                    if k == "data":
                        ev["data_lines"].append(v)
                    elif k == "retry":
                        self.retry = v
                    else:
                        ev[k] = v
                if ev["data_lines"] or "id" in ev:
                    ev["data"] = "\n".join(ev["data_lines"])
                    return ev
                continue
            if self.eof:
                return None
            self._fill(deadline)
            self._decode()

    def events(self, n, timeout=10.0):
        out = []
        for _ in range(n):
            e = self.event(timeout)
            if e is None:
                raise AssertionError("SSE stream ended after %d of %d events" % (len(out), n))
            out.append(e)
        return out


# ---- asyncio (python3-websockets) ---------------------------------------------------------


def ws_url(srv, token=None, query=""):
    q = query
    if token is not None:
        q = (q + "&" if q else "") + "token=" + urllib.parse.quote(token, safe="")
    return "ws://%s:%d/ws%s" % (srv.host, srv.port, "?" + q if q else "")


async def aconnect(srv, token=None, **kw):
    """A websockets connection to /ws that has read its welcome; returns (ws, welcome)."""
    import websockets

    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 16 << 20)
    kw.setdefault("compression", None)
    ws = await websockets.connect(ws_url(srv, token), **kw)
    welcome = json.loads(await ws.recv())
    assert welcome.get("op") == "welcome", welcome
    return ws, welcome


async def arequest(ws, obj, timeout=10.0):
    """Send `obj` (with its "id") and return the answer with the same id, parsed.
    Use only on connections where nothing else arrives concurrently."""
    import asyncio

    await ws.send(json.dumps(obj, separators=(",", ":")))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), scaled(timeout)))
        if m.get("id") == obj.get("id") and m.get("op") in ("reply", "error", "pong"):
            return m


# ---- a test case base with one hub server per class -----------------------------------------

import sys
import unittest


class HubCase(pxtest.PxTestCase):
    """One hub server per class (flags in `server_args`, its own --data-dir),
    stopped at the end of the class with exit code 0 required (a sanitizer or
    leak report fails the class). Tests use their own channel names (chan())."""

    server_args = ("--allow-anonymous",)
    srv = None

    @classmethod
    def setUpClass(cls):
        if pxtest.EXTERNAL:
            raise unittest.SkipTest("[external] hub tests start their own servers with specific flags")
        cls.class_out = pxtest.class_out_dir(cls)
        cls.srv = pxtest.Server(*hub_args(cls.class_out, *cls.server_args), out_dir=cls.class_out,
                                cwd=cls.class_out, name="plexus-" + cls.__name__)

    @classmethod
    def tearDownClass(cls):
        srv, cls.srv = cls.srv, None
        pxtest.stop_class_server(srv)

    def setUp(self):
        super().setUp()
        self.assertTrue(self.srv.running(), "the class's server died earlier")
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.close()
            except OSError:
                pass
        if self._failed():
            sys.stderr.write("\n----- %s log (tail) -----\n%s\n" % (
                self.srv.name, "\n".join(self.srv.log_text().splitlines()[-100:])))
        super().tearDown()

    def chan(self, suffix=""):
        """A channel name of this test's own."""
        return (self._testMethodName + suffix)[:200]

    def client(self, **kw):
        c = HubClient(self.srv.addr, **kw)
        self.clients.append(c)
        return c
