#!/usr/bin/python3
"""44-ws-hostile: WebSocket input built to hurt the server (issue 10).

- Handshake: a long Sec-WebSocket-Protocol chosen by a select_subprotocol hook
  (examples/echo picks the first offer) comes back whole in a well-formed 101,
  never overruns the response buffer; offers over the caps (4096 bytes in all,
  32 subprotocols, 1024 bytes each, tokens only) get 400 + JSON.
- permessage-deflate amplification: one ~1 MB frame made of a block that
  fills the 32 KiB window and then ~505 000 empty final blocks (03 00) held
  the worker for over a second (each final block copied the window out and
  back); /healthz on the same worker must now answer promptly.
- After the server has sent its close (the hub's `unauthorized` + 1008), data
  frames are dropped unread: not inflated (invalid deflate data no longer
  fails the connection) and not delivered (the message counter stays put).

px-test: serial (timing and CPU bounds)
"""

import json
import random
import socket
import threading
import time
import zlib

import pxtest
from hubclient import hub_args, metric
from pxtest import PxTestCase, scaled
from wsraw import OP_CLOSE, OP_TEXT, RSV1, WsClient, encode_frame, handshake_request

PMD = "permessage-deflate; client_max_window_bits"


def window_then_final_blocks(reps):
    """A deflate payload: 32 KiB of text in one block (ends with a sync flush,
    so it fills the inflater's window), then `reps` empty final blocks."""
    rnd = random.Random(7)
    text = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(32768))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH) + b"\x03\x00" * reps


class Handshake(PxTestCase):
    def setUp(self):
        super().setUp()
        self.srv = self.start_server("--workers", "1", example="echo")

    def assertRefused(self, headers, why):
        r = pxtest.raw_request(self.srv.addr, handshake_request(self.srv.addr, extra=headers))
        self.assertEqual(r.status, 400, "%s: %r" % (why, r))
        self.assertEqual(r.header("content-type", "").split(";")[0], "application/json")
        body = json.loads(r.body)
        self.assertEqual(body["error"], "bad_subprotocol", body)
        self.assertTrue(body["message"], body)

    def assertAccepted(self, headers, want, extensions=None):
        with WsClient(self.srv.addr, headers=headers, extensions=extensions) as ws:
            self.assertEqual(ws.response_headers.get("sec-websocket-protocol"), want)
            # The 101 is exactly its head: the echo that follows parses.
            ws.send_message(OP_TEXT, b"still in sync")
            self.assertEqual(ws.recv_message(), (OP_TEXT, b"still in sync"))
            if extensions:
                self.assertTrue(ws.deflate, "permessage-deflate was not agreed")

    def test_long_subprotocol_is_answered_whole(self):
        """The 512-byte stack buffer of the 101 was overrun by a chosen 1000-byte
        subprotocol (ASan: stack-buffer-overflow; release: stack bytes sent)."""
        for n in (100, 600, 1000, 1024):
            with self.subTest(n=n):
                tok = ("p" * n)
                self.assertAccepted(["Sec-WebSocket-Protocol: " + tok], tok)

    def test_long_subprotocol_with_deflate(self):
        tok = "q" * 1024
        self.assertAccepted(["Sec-WebSocket-Protocol: " + tok], tok,
                            extensions="permessage-deflate; client_max_window_bits; "
                                       "server_max_window_bits=10; client_no_context_takeover")

    def test_echo_is_preferred(self):
        self.assertAccepted(["Sec-WebSocket-Protocol: chat, echo"], "echo")
        self.assertAccepted(["Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b, c"], "a")

    def test_caps(self):
        self.assertRefused(["Sec-WebSocket-Protocol: " + "x" * 1025], "token over 1024 bytes")
        self.assertRefused(["Sec-WebSocket-Protocol: " + ", ".join("p%d" % i for i in range(33))],
                           "33 tokens")
        self.assertRefused(["Sec-WebSocket-Protocol: " + ", ".join(["y" * 1000] * 5)],
                           "over 4096 bytes in one line")
        self.assertRefused(["Sec-WebSocket-Protocol: " + "z" * 900] * 5,
                           "over 4096 bytes over several lines")
        self.assertRefused(["Sec-WebSocket-Protocol: chat; v=1"], "not a token")
        self.assertRefused(["Sec-WebSocket-Protocol: chat superchat"], "space inside")
        # At the caps: accepted.
        self.assertAccepted(["Sec-WebSocket-Protocol: " + ", ".join("p%d" % i for i in range(32))],
                            "p0")
        self.assertAccepted(["Sec-WebSocket-Protocol: , chat ,, "], "chat")
        self.assertStopsCleanly(self.srv)


class Deflate(PxTestCase):
    def healthz_ms(self, srv):
        t = time.monotonic()
        r = pxtest.http_request(srv.addr, "GET", "/healthz", timeout=scaled(10))
        self.assertEqual(r.status, 200)
        return (time.monotonic() - t) * 1000

    def assertWorkerResponsive(self, max_message, reps):
        """Send one compressed frame of `reps` empty final blocks after a full
        window on a one-worker server; /healthz must keep answering meanwhile."""
        srv = self.start_server(*hub_args(self.out_dir, "--workers", "1", "--ws-deflate",
                                          "--allow-anonymous", "--ws-max-message", max_message))
        payload = window_then_final_blocks(reps)
        frame = encode_frame(OP_TEXT, payload, rsv=RSV1)
        base = max(self.healthz_ms(srv) for _ in range(3))
        with WsClient(srv.addr, "/ws", extensions=PMD) as ws:
            self.assertTrue(ws.deflate)
            ws.recv_message()  # welcome
            sender = threading.Thread(target=ws.send_raw, args=(frame,))
            sender.start()
            worst = 0.0
            deadline = time.monotonic() + scaled(1.5)
            while time.monotonic() < deadline:
                worst = max(worst, self.healthz_ms(srv))
            sender.join()
            # The message was processed: the hub answers it (it is not JSON).
            reply = ws.recv_message(timeout=30)
            self.assertIsNotNone(reply)
            self.assertEqual(reply[0], OP_TEXT, reply)
        print("\n  %d-byte frame: /healthz %.1f ms idle, worst %.1f ms during the frame"
              % (len(payload), base, worst))
        self.assertLess(worst, scaled(0.25) * 1000,
                        "/healthz waited %.0f ms behind one compressed frame" % worst)
        self.assertStopsCleanly(srv)

    def test_final_blocks_cost_linear_time(self):
        """1 MB of empty final blocks: 0.65-1.4 s of one worker before (each
        final block copied the 32 KiB window out and back), ~20 ms now."""
        payload_reps = 505000
        self.assertLess(len(window_then_final_blocks(payload_reps)), 1 << 20)
        self.assertWorkerResponsive("1MiB", payload_reps)

    def test_huge_message_is_inflated_in_slices(self):
        """60 MiB of them (linear, but ~1 s of inflating): sliced by the
        per-read inflate budget, the worker keeps serving others."""
        self.assertWorkerResponsive("64MiB", 30 << 20)

    def unauthorized(self, srv):
        """A connection without a token: the hub sends an error, then close 1008."""
        ws = WsClient(srv.addr, "/ws", extensions=PMD)
        self.addCleanup(ws.close)
        self.assertTrue(ws.deflate)
        got = ws.recv_message()
        self.assertEqual(json.loads(got[1])["code"], "unauthorized", got)
        got = ws.recv_message()
        self.assertEqual(got[0], OP_CLOSE)
        self.assertEqual(int.from_bytes(got[1][:2], "big"), 1008)
        return ws

    def test_frames_after_server_close_are_not_inflated(self):
        srv = self.start_server(*hub_args(self.out_dir, "--workers", "1", "--ws-deflate",
                                          "--jwt-secret", "s3cret"))
        ws = self.unauthorized(srv)
        # Not deflate data at all: inflating it would fail the connection (1007)
        # and close it at once. Dropped unread, the server keeps waiting for our
        # close instead.
        ws.send_raw(encode_frame(OP_TEXT, b"\xff\xff\xff\xff not deflate", rsv=RSV1))
        ws.sock.settimeout(scaled(0.5))
        try:
            data = ws.sock.recv(100)
            self.fail("the server reacted to a frame sent after its close: %r" % data)
        except socket.timeout:
            pass
        ws.sock.settimeout(scaled(10))
        ws.send_raw(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        ws.expect_eof(timeout=10)
        self.assertStopsCleanly(srv)

    def test_messages_after_server_close_are_not_delivered(self):
        srv = self.start_server(*hub_args(self.out_dir, "--workers", "1", "--ws-deflate",
                                          "--jwt-secret", "s3cret"))
        before = metric(srv, "plexus_ws_messages_received_total")
        ws = self.unauthorized(srv)
        for i in range(20):
            ws.send_message(OP_TEXT, json.dumps({"op": "publish", "id": i, "channel": "c",
                                                 "data": "x" * 300}).encode(), compress=True)
            ws.send_message(OP_TEXT, b'{"op":"ping"}')
        # One hostile frame too: dropped without costing the worker anything.
        cpu0 = srv.cpu_seconds()
        ws.send_raw(encode_frame(OP_TEXT, window_then_final_blocks(505000), rsv=RSV1))
        ws.send_raw(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        ws.expect_eof(timeout=10)
        cpu = srv.cpu_seconds() - cpu0
        after = metric(srv, "plexus_ws_messages_received_total")
        self.assertEqual(after, before, "messages sent after the server's close were delivered")
        self.assertLess(cpu, scaled(0.3), "frames after the close cost %.2f s of CPU" % cpu)
        self.assertStopsCleanly(srv)


if __name__ == "__main__":
    pxtest.main()
