#!/usr/bin/python3
# px-test: serial  (CPU-heavy: publishers at full speed against a server killed 20+ times)
"""55-hub-kill9: durability under kill -9 (--durability normal: "acknowledged
messages survive a crash").

Each round starts plexus on the same --data-dir (--history-size 0: nothing is
trimmed), runs WebSocket publishers (pipelined, several channels) and HTTP
publishers (keep-alive) as fast as they go, recording every acknowledged
(channel, offset, data id), and SIGKILLs the server at a random moment 50-400 ms
in. After the last round a clean start must show:

  - every acknowledged message in history exactly once, at its acked offset,
    with its data byte for byte;
  - offsets strictly increasing with no duplicates (and, since commits are
    sequential transactions, no holes either: 1..last);
  - nothing in history that was never sent; unacknowledged messages may or may
    not be there;
  - each channel's epoch unchanged across all the crashes (history never lost);
  - after each restart the latest offset is at least the highest acked one;
  - a clean SIGTERM exit (0), and `sqlite3 plexus.db 'PRAGMA integrity_check'`
    prints ok.

PX_KILL9_ROUNDS=N changes the number of rounds (default 20; e.g. 200 for a long
run); PX_KILL9_SEED=S replays a run (the seed is printed).

    PX_BUILD_DIR=build/h-hub /usr/bin/python3 tests/integration/55-hub-kill9.py -v
"""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pxtest
from hubclient import aconnect, api, chan_path, hub_args

ROUNDS = int(os.environ.get("PX_KILL9_ROUNDS") or 20)
SEED = int(os.environ.get("PX_KILL9_SEED") or random.SystemRandom().randrange(1 << 30))
CHANNELS = ["k9-a", "k9:b", "k9/c"]
WS_PUBLISHERS = 3
HTTP_PUBLISHERS = 2
WINDOW = 32  # publishes in flight per WebSocket connection


class Ledger:
    def __init__(self):
        self.sent = {}    # data id -> (channel, data text)
        self.acked = []   # (channel, offset, data id)


def data_text(did, rnd):
    # Varied, odd-looking JSON: it must come back byte for byte.
    pad = "x" * rnd.randrange(0, 300)
    return '{"id":"%s", "pad":"%s","u":"\\u00e9\u00fc"}' % (did, pad)


async def ws_publisher(srv, k, rnd_round, ledger, rnd):
    try:
        ws, _ = await aconnect(srv)
    except (OSError, Exception):  # noqa: BLE001 - the server may already be gone
        return
    inflight = {}
    rid = 0
    try:
        while True:
            while len(inflight) < WINDOW:
                rid += 1
                ch = CHANNELS[rnd.randrange(len(CHANNELS))]
                did = "r%d-w%d-%d" % (rnd_round, k, rid)
                text = data_text(did, rnd)
                ledger.sent[did] = (ch, text)
                inflight[rid] = did
                await ws.send('{"op":"publish","id":%d,"channel":"%s","data":%s}' % (rid, ch, text))
            m = json.loads(await ws.recv())
            if m.get("op") != "reply":
                raise AssertionError("publish failed: %r" % m)
            did = inflight.pop(m["id"])
            ledger.acked.append((ledger.sent[did][0], m["offset"], did))
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - connection lost: the server was killed
        return
    finally:
        try:
            await asyncio.wait_for(ws.close(), 1)
        except Exception:  # noqa: BLE001
            pass


async def http_publisher(srv, k, rnd_round, ledger, rnd):
    try:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
    except OSError:
        return
    i = 0
    try:
        while True:
            i += 1
            ch = CHANNELS[rnd.randrange(len(CHANNELS))]
            did = "r%d-h%d-%d" % (rnd_round, k, i)
            text = data_text(did, rnd)
            ledger.sent[did] = (ch, text)
            body = text.encode()
            writer.write(("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n" % (chan_path(ch), len(body))).encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k_, _, v = line.partition(b":")
                if k_.strip().lower() == b"content-length":
                    length = int(v)
            reply = json.loads(await reader.readexactly(length))
            if status != 201:
                raise AssertionError("HTTP publish: %d %r" % (status, reply))
            ledger.acked.append((ch, reply["offset"], did))
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - connection lost: the server was killed
        return
    finally:
        writer.close()


async def one_round(srv, rnd_round, ledger, rnd):
    acked_before = len(ledger.acked)
    tasks = [asyncio.create_task(ws_publisher(srv, k, rnd_round, ledger, random.Random(rnd.random())))
             for k in range(WS_PUBLISHERS)]
    tasks += [asyncio.create_task(http_publisher(srv, k, rnd_round, ledger, random.Random(rnd.random())))
              for k in range(HTTP_PUBLISHERS)]
    # The moment: 50-400 ms after the first acknowledgement (scaled in slow
    # builds), so that every round kills the server in the middle of the stream.
    start = time.monotonic()
    while len(ledger.acked) == acked_before and time.monotonic() - start < pxtest.scaled(5):
        await asyncio.sleep(0.002)
    await asyncio.sleep(pxtest.scaled(rnd.uniform(0.05, 0.4)))
    srv.kill()
    done, pending = await asyncio.wait(tasks, timeout=pxtest.scaled(10))
    for t in pending:
        t.cancel()
    if pending:
        raise AssertionError("%d publisher(s) still running 10 s after the kill" % len(pending))
    for t in done:
        if t.exception():
            raise t.exception()


def read_history(srv, ch):
    out = []
    since = 0
    while True:
        st, j, r = api(srv, "GET", chan_path(ch) + "?since=%d&limit=1000" % since, timeout=30)
        if st != 200:
            raise AssertionError("history of %s: %d %r" % (ch, st, r.body))
        if not j["messages"]:
            return j["epoch"], j["offset"], out, r
        # The raw data of each message, as the server wrote it.
        out += j["messages"]
        since = j["messages"][-1]["offset"]


def raw_datas(body):
    """The raw text of every "data" in a history reply (the server writes
    ,"data":<raw>} per message; our data is a flat object without braces inside)."""
    text = body.decode()
    out = []
    pos = 0
    while True:
        i = text.find(',"data":{', pos)
        if i < 0:
            return out
        j = text.index("}", i)
        out.append(text[i + 8:j + 1])
        pos = j


class Kill9(pxtest.PxTestCase):
    def test_kill9_durability(self):
        self.require_local()
        sys.stderr.write("\n55-hub-kill9: %d rounds, PX_KILL9_SEED=%d\n" % (ROUNDS, SEED))
        rnd = random.Random(SEED)
        data = os.path.join(self.out_dir, "data")
        args = hub_args(self.out_dir, "--allow-anonymous", "--durability", "normal", "--history-size", "0",
                        "--publish-rate", "0", "--workers", "2", data_dir=data)
        ledger = Ledger()
        srv = self.start_server(*args)
        epochs = {}
        t0 = time.monotonic()
        for rnd_round in range(ROUNDS):
            if rnd_round:
                srv.start()  # on the data a kill -9 left behind
            # What was acked before this start must be there.
            for ch in CHANNELS:
                st, j, _ = api(srv, "GET", chan_path(ch) + "?since=0&limit=1")
                self.assertEqual(st, 200)
                top = max([o for c, o, _ in ledger.acked if c == ch], default=0)
                self.assertGreaterEqual(j["offset"], top, "round %d: %s lost acked offsets" % (rnd_round, ch))
                if j["epoch"] is not None:
                    self.assertEqual(epochs.setdefault(ch, j["epoch"]), j["epoch"],
                                     "round %d: the epoch of %s changed" % (rnd_round, ch))
            before = len(ledger.acked)
            asyncio.run(one_round(srv, rnd_round, ledger, rnd))
            self.assertEqual(srv.returncode, -9)
            if len(ledger.acked) == before:
                self.fail("round %d: nothing was acknowledged: the publishers never got going" % rnd_round)
        elapsed = time.monotonic() - t0
        sys.stderr.write("55-hub-kill9: %d acked of %d sent in %.1f s\n"
                         % (len(ledger.acked), len(ledger.sent), elapsed))
        self.assertGreater(len(ledger.acked), ROUNDS * 10, "too few publishes to mean anything")

        srv.start()
        acked_by = {}
        for ch, off, did in ledger.acked:
            self.assertNotIn((ch, off), acked_by, "offset %d of %s acked twice" % (off, ch))
            acked_by[(ch, off)] = did
        for ch in CHANNELS:
            epoch, last, msgs, _ = read_history(srv, ch)
            if ch in epochs:
                self.assertEqual(epoch, epochs[ch], "epoch of %s changed" % ch)
            offsets = [m["offset"] for m in msgs]
            self.assertEqual(offsets, sorted(set(offsets)), "%s: offsets not strictly increasing" % ch)
            self.assertEqual(offsets, list(range(1, len(offsets) + 1)), "%s: holes in the offsets" % ch)
            self.assertEqual(last, offsets[-1] if offsets else 0)
            ids = [m["data"]["id"] for m in msgs]
            self.assertEqual(len(ids), len(set(ids)), "%s: a message is stored twice" % ch)
            for m in msgs:
                did = m["data"]["id"]
                self.assertIn(did, ledger.sent, "%s: stored data nobody sent: %r" % (ch, m))
                self.assertEqual(ledger.sent[did][0], ch, "%s: message %s is on the wrong channel" % (ch, did))
                want = acked_by.get((ch, m["offset"]))
                if want is not None:
                    self.assertEqual(did, want, "%s offset %d: acked %s, stored %s" % (ch, m["offset"], want, did))
            by_offset = {m["offset"]: m["data"]["id"] for m in msgs}
            missing = [(c, o, d) for (c, o), d in acked_by.items() if c == ch and by_offset.get(o) != d]
            self.assertEqual(missing, [], "%s: acknowledged messages lost by kill -9" % ch)
        # Byte for byte, on one page of each channel.
        for ch in CHANNELS:
            st, j, r = api(srv, "GET", chan_path(ch) + "?since=0&limit=200")
            for m, raw in zip(j["messages"], raw_datas(r.body)):
                self.assertEqual(raw, ledger.sent[m["data"]["id"]][1])

        rc = srv.stop()
        self.assertEqual(rc, 0, "exit code after SIGTERM (99: sanitizer report or leak)")
        sqlite3 = shutil.which("sqlite3")
        if not sqlite3:
            self.fail("the sqlite3 CLI is missing (deps/debian.txt lists it)")
        out = subprocess.run([sqlite3, os.path.join(data, "plexus.db"), "PRAGMA integrity_check"],
                             capture_output=True, text=True, timeout=pxtest.scaled(60))
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "ok"), out.stderr)


if __name__ == "__main__":
    pxtest.main()
