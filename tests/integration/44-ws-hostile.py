#!/usr/bin/python3
"""44-ws-hostile: WebSocket input built to hurt the server (issue 10).

- Handshake: a long Sec-WebSocket-Protocol chosen by a select_subprotocol hook
  (examples/echo picks the first offer) comes back whole in a well-formed 101,
  never overruns the response buffer; offers over the caps (4096 bytes in all,
  32 subprotocols, 1024 bytes each, tokens only) get 400 + JSON.
"""

import json
import unittest

import pxtest
from pxtest import PxTestCase
from wsraw import OP_TEXT, WsClient, handshake_request


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


if __name__ == "__main__":
    unittest.main(verbosity=2)
