#!/usr/bin/python3
"""WebSocket conformance, raw sockets: the Autobahn|Testsuite case groups (1
framing, 2 ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8,
7 close, 9 limits, 12/13 permessage-deflate) plus the handshake, replayed
against examples/echo with our own masked-frame client (wsraw.py), which can
send what no library will: reserved bits and opcodes, bad close codes, invalid
UTF-8, frames chopped into 1-byte TCP writes, headers announcing payloads that
never come.

Every case ends with the right echo or the right close code from the server,
and, after the close handshake, with the server closing TCP by itself.
docs/websocket.md maps each Autobahn group to the classes here.

One echo server per class (cases are many and short); each test checks the
server is still alive, and the class checks that it exits with 0 (no leak or
sanitizer report) when stopped.

    PX_BUILD_DIR=build/h-ws /usr/bin/python3 tests/integration/40-ws-conformance.py -v
"""

import json
import os
import random
import sys
import threading
import time
import zlib

import pxtest
from pxtest import scaled
from wsraw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, RSV2, RSV3,
                   DEFLATE_TAIL, WsClient, close_payload, deflate_raw,
                   encode_frame, handshake_request, utf8_text)

MiB = 1 << 20
ECHO_MAX_MESSAGE = 64 * MiB  # examples/echo: wo.max_message
PMD = "permessage-deflate"


class EchoCase(pxtest.SharedServerCase):
    """Base: one examples/echo server shared by the tests of a class."""

    server_args = ("--workers", "2")
    server_kw = {"example": "echo"}

    def setUp(self):
        super().setUp()
        self.addr = self.srv.addr

    # -- helpers --

    def ws(self, path="/echo", **kw):
        c = WsClient(self.addr, path, **kw)
        self.addCleanup(c.close)
        return c

    def assertEcho(self, ws, opcode, payload, timeout=10.0, **send_kw):
        if isinstance(payload, str):
            payload = payload.encode()
        ws.send_message(opcode, payload, **send_kw)
        got = ws.recv_message(timeout)
        self.assertIsNotNone(got, "connection closed instead of an echo")
        if got[0] == OP_CLOSE:
            self.fail("server closed with %r instead of echoing %d bytes" % (got[1][:60], len(payload)))
        self.assertEqual(got[0], opcode, "echo opcode")
        if got[1] != payload:
            self.fail("echo differs: sent %d bytes, got %d (first difference at %s)"
                      % (len(payload), len(got[1]),
                         next((i for i, (a, b) in enumerate(zip(payload, got[1])) if a != b), "end")))

    def assertFails(self, code, data, before=(), chop=None, delay=0.0, extensions=None, ws=None,
                    timeout=5.0):
        """Send `before` (messages that must be echoed), then the raw bytes
        `data`, then a ping; the server must answer with exactly the echoes, a
        close with `code`, and EOF: nothing after the offending frame (so no
        pong)."""
        ws = ws or self.ws(extensions=extensions)
        for op, payload in before:
            self.assertEcho(ws, op, payload)
        n = len(ws.frames)
        ws.send_raw(data, chop, delay)
        try:
            ws.send_frame(OP_PING, b"after")
        except OSError:
            pass  # the server may already have closed
        ws.expect_close(code, timeout)
        self.assertEqual([f.opcode for f in ws.frames[n:]], [OP_CLOSE],
                         "the server must send nothing but the close after a bad frame")
        return ws

    def rss_hwm_kb(self):
        with open("/proc/%d/status" % self.srv.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0


def add_cases(cls, prefix, cases, fn):
    """Generate one test method per (name, args) so each case is reported on
    its own (Autobahn-style numbering: test_<group>_<n>_<name>)."""
    for i, (name, args) in enumerate(cases, 1):
        def t(self, args=args):
            fn(self, *args)
        t.__name__ = "test_%s_%02d_%s" % (prefix, i, name)
        t.__doc__ = "%s %d: %s" % (prefix, i, name)
        setattr(cls, t.__name__, t)


# ---- 0: handshake ------------------------------------------------------------------------


class Group00Handshake(EchoCase):
    def request(self, data):
        return pxtest.raw_request(self.addr, data)

    def assertJsonError(self, r, status):
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.header("content-type", "").split(";")[0], "application/json")
        body = json.loads(r.body)
        self.assertIsInstance(body.get("error"), str, body)
        self.assertIsInstance(body.get("message"), str, body)
        self.assertTrue(body["error"] and body["message"], body)
        return body

    def test_00_01_ok(self):
        ws = self.ws()
        self.assertIsNone(ws.extension)  # nothing offered: nothing answered
        self.assertEcho(ws, OP_TEXT, "hello")
        ws.close_handshake(1000)

    def test_00_02_missing_key(self):
        self.assertJsonError(self.request(handshake_request(self.addr, key=None)), 400)

    def test_00_03_invalid_keys(self):
        for key in ("", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=!",
                    "dGhlIHNhbXBsZSBub25jZR==",  # low bits of the last char not zero
                    "dGhlIHNhbXBsZSBub25j", "dGhlIHNhbXBsZSBub25jZQ==dGhl", "dGhl*HNhbXBsZSBub25jZQ=="):
            with self.subTest(key=key):
                self.assertJsonError(self.request(handshake_request(self.addr, key=key)), 400)

    def test_00_04_version_8(self):
        r = self.request(handshake_request(self.addr, ws_version="8"))
        self.assertJsonError(r, 426)
        self.assertEqual(r.header("sec-websocket-version"), "13")

    def test_00_05_version_missing(self):
        r = self.request(handshake_request(self.addr, ws_version=None))
        self.assertJsonError(r, 426)
        self.assertEqual(r.header("sec-websocket-version"), "13")

    def test_00_06_plain_get(self):
        r = self.srv.http("GET", "/echo")
        self.assertJsonError(r, 426)
        self.assertEqual(r.header("upgrade", "").lower(), "websocket")

    def test_00_07_post(self):
        r = self.request(handshake_request(self.addr, method="POST", extra=("Content-Length: 0",)))
        self.assertJsonError(r, 405)
        self.assertIn("GET", r.header("allow", ""))

    def test_00_08_http10(self):
        r = self.request(handshake_request(self.addr, version="HTTP/1.0"))
        self.assertJsonError(r, 400)

    def test_00_09_connection_without_upgrade(self):
        r = self.request(handshake_request(self.addr, connection="keep-alive"))
        self.assertJsonError(r, 400)
        r = self.request(handshake_request(self.addr, connection=None))
        self.assertJsonError(r, 400)

    def test_00_10_token_lists_and_case(self):
        data = handshake_request(self.addr, upgrade="WebSocket", connection="keep-alive, Upgrade")
        with pxtest.RawClient(self.addr) as c:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, 101, r.raw)

    def test_00_11_body_refused(self):
        data = handshake_request(self.addr, extra=("Content-Length: 5",)) + b"hello"
        self.assertJsonError(self.request(data), 400)

    def test_00_12_unknown_path(self):
        self.assertJsonError(self.request(handshake_request(self.addr, path="/nope")), 404)

    def test_00_13_frames_right_after_the_request(self):
        # A client may send its first frame in the same TCP segment as the request.
        c = WsClient(self.addr, handshake=False)
        self.addCleanup(c.close)
        c.sock.sendall(handshake_request(self.addr) + encode_frame(OP_TEXT, b"early"))
        while b"\r\n\r\n" not in c.buf:
            self.assertTrue(c._fill(time.monotonic() + scaled(5)))
        i = c.buf.index(b"\r\n\r\n")
        self.assertTrue(c.buf.startswith(b"HTTP/1.1 101 "), c.buf)
        del c.buf[:i + 4]
        self.assertEqual(c.recv_message(), (OP_TEXT, b"early"))


# ---- 1: framing --------------------------------------------------------------------------


class Group01Framing(EchoCase):
    def test_01_99_pipelined_frames(self):
        """Ten frames in one TCP write are echoed in order."""
        ws = self.ws()
        ws.send_raw(b"".join(encode_frame(OP_TEXT, "msg %d" % i) for i in range(10)))
        for i in range(10):
            self.assertEqual(ws.recv_message(), (OP_TEXT, b"msg %d" % i))
        ws.close_handshake()


def _framing(self, opcode, n, chop):
    ws = self.ws()
    payload = utf8_text(n, seed=n) if opcode == OP_TEXT else os.urandom(n)
    self.assertEcho(ws, opcode, payload, chop=chop)
    ws.close_handshake()


_sizes = [0, 125, 126, 127, 128, 65535, 65536, 3 * MiB]
add_cases(Group01Framing, "01", [
    ("%s_%d_%s" % ("text" if op == OP_TEXT else "binary", n, chop_name), (op, n, chop))
    for op in (OP_TEXT, OP_BINARY)
    for n in _sizes
    for chop_name, chop in (("whole", None), ("chopped", 1 if n <= 128 else "random"))
], _framing)


# ---- 2: ping/pong ------------------------------------------------------------------------


class Group02PingPong(EchoCase):
    def ping(self, payload, chop=None):
        ws = self.ws()
        ws.send_frame(OP_PING, payload, chop=chop)
        self.assertEqual(ws.recv_message(), (OP_PONG, payload))
        ws.close_handshake()

    def test_02_01_empty(self):
        self.ping(b"")

    def test_02_02_text_payload(self):
        self.ping("Hello, world!".encode())

    def test_02_03_binary_payload(self):
        self.ping(bytes(range(0, 256, 3))[:60])

    def test_02_04_125_bytes(self):
        self.ping(os.urandom(125))

    def test_02_05_126_bytes(self):
        self.assertFails(1002, encode_frame(OP_PING, os.urandom(126)))

    def test_02_06_chopped(self):
        self.ping(os.urandom(125), chop=1)

    def test_02_07_unsolicited_pong_ignored(self):
        ws = self.ws()
        ws.send_frame(OP_PONG, b"")
        ws.send_frame(OP_PONG, b"unsolicited")
        ws.send_frame(OP_PONG, os.urandom(125))
        self.assertEcho(ws, OP_TEXT, "still here")
        self.assertEqual([f.opcode for f in ws.frames], [OP_TEXT])
        ws.close_handshake()

    def test_02_08_pong_126_bytes(self):
        self.assertFails(1002, encode_frame(OP_PONG, os.urandom(126)))

    def test_02_09_ten_pings_in_one_write(self):
        ws = self.ws()
        ws.send_raw(b"".join(encode_frame(OP_PING, b"ping %d" % i) for i in range(10)))
        for i in range(10):
            self.assertEqual(ws.recv_message(), (OP_PONG, b"ping %d" % i))
        ws.close_handshake()

    def test_02_10_ping_inside_fragmented_message(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"frag1 ", fin=False)
        ws.send_frame(OP_PING, b"in between")
        self.assertEqual(ws.recv_message(), (OP_PONG, b"in between"))  # answered at once
        ws.send_frame(OP_CONT, b"frag2 ", fin=False)
        ws.send_frame(OP_PING, b"again", chop=1)
        self.assertEqual(ws.recv_message(), (OP_PONG, b"again"))
        ws.send_frame(OP_CONT, b"frag3", fin=True)
        self.assertEqual(ws.recv_message(), (OP_TEXT, b"frag1 frag2 frag3"))
        ws.close_handshake()

    def test_02_11_ping_after_close_not_answered(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_PING, b"late"))
        ws.expect_close(1000)


# ---- 3: reserved bits ------------------------------------------------------------------------


class Group03ReservedBits(EchoCase):
    pass


def _rsv(self, rsv, opcode, payload, before, chop):
    self.assertFails(1002, encode_frame(opcode, payload, rsv=rsv), before=before, chop=chop)


add_cases(Group03ReservedBits, "03", [
    ("rsv1_text", (RSV1, OP_TEXT, b"Hello", (), None)),
    ("rsv2_text_after_valid", (RSV2, OP_TEXT, b"Hello", [(OP_TEXT, b"valid")], None)),
    ("rsv3_text_chopped", (RSV3, OP_TEXT, b"Hello", [(OP_TEXT, b"valid")], 1)),
    ("rsv1_rsv2_binary", (RSV1 | RSV2, OP_BINARY, b"\x00\xff\xfe", [(OP_TEXT, b"valid")], None)),
    ("rsv1_rsv3_ping", (RSV1 | RSV3, OP_PING, b"ping", (), None)),
    ("rsv2_rsv3_close", (RSV2 | RSV3, OP_CLOSE, close_payload(1000), (), None)),
    ("all_rsv_binary", (RSV1 | RSV2 | RSV3, OP_BINARY, os.urandom(200), [(OP_BINARY, b"ok")], None)),
    ("rsv1_empty_text", (RSV1, OP_TEXT, b"", (), None)),
], _rsv)


# ---- 4: opcodes ---------------------------------------------------------------------------------


class Group04Opcodes(EchoCase):
    pass


def _opcode(self, opcode, payload, chop):
    self.assertFails(1002, encode_frame(opcode, payload), before=[(OP_TEXT, b"before")], chop=chop)


add_cases(Group04Opcodes, "04", [
    ("opcode_%X%s" % (op, "_payload" if op % 2 else ""),
     (op, b"reserved" if op % 2 else b"", 1 if op in (5, 0xD) else None))  # two sent 1 byte per write
    for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
], _opcode)


# ---- 5: fragmentation --------------------------------------------------------------------------


class Group05Fragmentation(EchoCase):
    def test_05_01_fragmented_ping(self):
        self.assertFails(1002, encode_frame(OP_PING, b"frag", fin=False) + encode_frame(OP_CONT, b"ment"))

    def test_05_02_fragmented_pong(self):
        self.assertFails(1002, encode_frame(OP_PONG, b"frag", fin=False) + encode_frame(OP_CONT, b"ment"))

    def test_05_03_fragmented_close(self):
        self.assertFails(1002, encode_frame(OP_CLOSE, close_payload(1000), fin=False))

    def test_05_04_text_2_fragments(self):
        self.assertEcho(self.ws(), OP_TEXT, "fragment1fragment2", fragments=[9])

    def test_05_05_text_2_fragments_chopped(self):
        self.assertEcho(self.ws(), OP_TEXT, "fragment1fragment2", fragments=[9], chop=1)

    def test_05_06_binary_2_fragments(self):
        self.assertEcho(self.ws(), OP_BINARY, os.urandom(300), fragments=[150])

    def test_05_07_text_n_fragments(self):
        for n in (3, 10, 100):
            with self.subTest(fragments=n):
                payload = utf8_text(n * 37, seed=n)
                self.assertEcho(self.ws(), OP_TEXT, payload, fragments=37)

    def test_05_08_binary_1000_fragments_chopped(self):
        self.assertEcho(self.ws(), OP_BINARY, os.urandom(8000), fragments=8, chop="random")

    def test_05_09_empty_fragments(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"", fin=False)
        ws.send_frame(OP_CONT, b"", fin=False)
        ws.send_frame(OP_CONT, b"abc", fin=False)
        ws.send_frame(OP_CONT, b"", fin=True)
        self.assertEqual(ws.recv_message(), (OP_TEXT, b"abc"))
        ws.send_frame(OP_BINARY, b"", fin=False)
        ws.send_frame(OP_CONT, b"", fin=True)
        self.assertEqual(ws.recv_message(), (OP_BINARY, b""))
        ws.close_handshake()

    def test_05_10_control_frames_interleaved(self):
        ws = self.ws()
        parts = [b"one ", b"two ", b"three ", b"four"]
        out = b""
        for i, p in enumerate(parts):
            out += encode_frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
            if i < len(parts) - 1:
                out += encode_frame(OP_PING, b"p%d" % i) + encode_frame(OP_PONG, b"unsolicited")
        ws.send_raw(out, chop=1)
        for i in range(3):
            self.assertEqual(ws.recv_message(), (OP_PONG, b"p%d" % i))
        self.assertEqual(ws.recv_message(), (OP_TEXT, b"one two three four"))
        ws.close_handshake()

    def test_05_11_continuation_without_start(self):
        self.assertFails(1002, encode_frame(OP_CONT, b"orphan", fin=True), before=[(OP_TEXT, b"ok")])

    def test_05_12_continuation_without_start_not_final(self):
        self.assertFails(1002, encode_frame(OP_CONT, b"orphan", fin=False) + encode_frame(OP_CONT, b"x"))

    def test_05_13_continuation_after_complete_message(self):
        self.assertFails(1002, encode_frame(OP_CONT, b"more"), before=[(OP_TEXT, b"done")], chop=1)

    def test_05_14_new_text_inside_fragmented(self):
        self.assertFails(1002, encode_frame(OP_TEXT, b"first", fin=False) + encode_frame(OP_TEXT, b"second"))

    def test_05_15_new_binary_inside_fragmented(self):
        self.assertFails(1002, encode_frame(OP_BINARY, b"first", fin=False)
                         + encode_frame(OP_BINARY, b"second", fin=False), chop=1)

    def test_05_16_new_message_inside_fragmented_fail_fast(self):
        """The second data frame's header alone proves the error: the server
        must not wait for its (never sent) payload."""
        self.assertFails(1002, encode_frame(OP_BINARY, b"first", fin=False)
                         + encode_frame(OP_TEXT, b"abc", length=100000))

    def test_05_16b_new_text_with_bad_utf8_inside_fragmented(self):
        """The header of the second data frame proves a protocol error before
        its (invalid UTF-8) payload is looked at: 1002, not 1007, however the
        bytes are split into reads."""
        for chop in (None, 1):
            with self.subTest(chop=chop):
                self.assertFails(1002, encode_frame(OP_BINARY, b"first", fin=False)
                                 + encode_frame(OP_TEXT, b"\xff\xfe bad"), chop=chop)
                self.assertFails(1002, encode_frame(OP_BINARY, b"first", fin=False)
                                 + encode_frame(OP_TEXT, b"\xff\xfe bad", length=5000), chop=chop)

    def test_05_16c_continuation_without_start_fail_fast(self):
        self.assertFails(1002, encode_frame(OP_CONT, b"orphan", length=100000))

    def test_05_17_close_inside_fragmented(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"never ", fin=False)
        ws.send_frame(OP_CONT, b"finished", fin=False)
        ws.send_close(1000)
        ws.expect_close(1000)
        self.assertEqual([f.opcode for f in ws.frames], [OP_CLOSE])

    def test_05_18_fragments_chopped_randomly(self):
        ws = self.ws()
        payload = utf8_text(200000, seed=7)
        self.assertEcho(ws, OP_TEXT, payload, fragments=[1, 2, 3, 1000, 65536, 3], chop="random")
        self.assertEcho(ws, OP_BINARY, os.urandom(100000), fragments=997, chop="random")
        ws.close_handshake()


# ---- 6: UTF-8 --------------------------------------------------------------------------------------

VALID_UTF8 = [
    ("kosme", "κόσμε".encode()),
    ("u007f", b"\x7f"),
    ("u0080", "\u0080".encode()),
    ("u07ff", "\u07ff".encode()),
    ("u0800", "\u0800".encode()),
    ("ud7ff_ue000", "\ud7ff\ue000".encode()),
    ("ufffd_ufffe_uffff", "\ufffd\ufffe\uffff".encode()),
    ("u10000", "\U00010000".encode()),
    ("u10ffff", "\U0010ffff".encode()),
    ("mixed", "a\u00e9\u20ac\U0001F600z".encode() * 20),
    ("all_boundaries", b"".join(chr(c).encode() for c in
                                (0, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF))),
]

INVALID_UTF8 = [
    ("overlong_2", b"\xc0\x80"),
    ("overlong_2_c1", b"ab\xc1\xbf"),
    ("overlong_3", b"\xe0\x80\x80"),
    ("overlong_3_max", b"\xe0\x9f\xbf"),
    ("overlong_4", b"\xf0\x80\x80\x80"),
    ("overlong_4_max", b"\xf0\x8f\xbf\xbf"),
    ("overlong_slash", b"\xc0\xaf"),
    ("surrogate_high", b"\xed\xa0\x80"),
    ("surrogate_low", b"\xed\xbf\xbf"),
    ("surrogate_pair", b"\xed\xa0\x80\xed\xb0\x80"),
    ("above_10ffff", b"\xf4\x90\x80\x80"),
    ("f7_max", b"\xf7\xbf\xbf\xbf"),
    ("byte_c0", b"x\xc0"),
    ("byte_c1", b"x\xc1x"),
    ("byte_f5", b"\xf5\x80\x80\x80"),
    ("byte_f8", b"\xf8\x88\x80\x80\x80"),
    ("byte_fe", b"\xfe"),
    ("byte_ff", b"abc\xff"),
    ("lone_continuation", b"\x80"),
    ("continuations", b"a\x80\xbf"),
    ("truncated_2_at_end", b"caf\xc3"),
    ("truncated_3_at_end", b"\xe2\x82"),
    ("truncated_4_at_end", b"\xf0\x9f\x98"),
    ("truncated_then_ascii", b"\xe2\x82A"),
    ("kosme_then_invalid", "κόσμε".encode() + b"\xed\xa0\x80edited"),
]


class Group06Utf8(EchoCase):
    def test_06_90_valid_split_at_every_byte(self):
        """A multi-byte text split into 1-byte fragments (sequences cut across
        frames) and sent 1 byte per TCP write is valid."""
        payload = b"".join(v for _, v in VALID_UTF8)
        ws = self.ws()
        self.assertEcho(ws, OP_TEXT, payload, fragments=1)
        self.assertEcho(ws, OP_TEXT, payload, chop=1)
        ws.close_handshake()

    def test_06_91_invalid_in_middle_fragment(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"valid start ", fin=False)
        ws.send_frame(OP_CONT, b"bad \xff here", fin=False)
        # No third fragment: the error is already known.
        ws.expect_close(1007)

    def test_06_92_truncated_at_end_of_fragmented(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"euro \xe2", fin=False)
        ws.send_frame(OP_CONT, b"\x82", fin=False)
        ws.send_frame(OP_CONT, b"", fin=True)
        ws.expect_close(1007)

    def test_06_93_sequence_across_fragments_ok(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"euro \xe2", fin=False)
        ws.send_frame(OP_PING, b"between")
        ws.send_frame(OP_CONT, b"\x82", fin=False)
        ws.send_frame(OP_CONT, b"\xac!", fin=True)
        self.assertEqual(ws.recv_message(), (OP_PONG, b"between"))
        self.assertEqual(ws.recv_message(), (OP_TEXT, "euro €!".encode()))
        ws.close_handshake()

    def test_06_94_fail_fast_in_first_bytes(self):
        """A header announcing a 1 MiB text payload, then only its first bytes,
        which hold an invalid sequence: 1007 must come without the rest."""
        ws = self.ws()
        ws.send_raw(encode_frame(OP_TEXT, b"Hello \xc0\xafworld", length=1 * MiB,
                                 key=b"\x00\x00\x00\x00"))
        ws.expect_close(1007)

    def test_06_95_fail_fast_after_valid_prefix(self):
        """Valid bytes first (processed), then, in a later TCP write, the invalid
        byte: still fail-fast, mid-frame."""
        ws = self.ws()
        key = b"\x12\x34\x56\x78"
        prefix = utf8_text(5000, seed=3)
        frame = encode_frame(OP_TEXT, prefix + b"\xed\xa0\x80" + b"x" * 1000, length=4 * MiB, key=key)
        hl = 2 + 8 + 4
        ws.send_raw(frame[:hl + 5000])
        time.sleep(0.05)
        ws.send_raw(frame[hl + 5000:])
        ws.expect_close(1007)

    def test_06_96_fail_fast_in_continuation(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"valid ", fin=False)
        ws.send_raw(encode_frame(OP_CONT, b"\xf4\x90\x80\x80 and more", length=1 * MiB))
        ws.expect_close(1007)

    def test_06_97_fail_fast_chopped(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_TEXT, b"ab\xfe", length=100000), chop=1)
        ws.expect_close(1007)

    def test_06_98_binary_is_not_checked(self):
        ws = self.ws()
        payload = b"".join(v for _, v in INVALID_UTF8)
        self.assertEcho(ws, OP_BINARY, payload)
        self.assertEcho(ws, OP_BINARY, payload, fragments=1)
        ws.close_handshake()


def _valid_utf8(self, payload, fragments):
    ws = self.ws()
    self.assertEcho(ws, OP_TEXT, payload, fragments=fragments)
    ws.close_handshake()


def _invalid_utf8(self, payload, fragments, chop):
    ws = self.ws()
    ws.send_message(OP_TEXT, payload, fragments=fragments, chop=chop)
    ws.expect_close(1007)
    self.assertEqual([f.opcode for f in ws.frames], [OP_CLOSE])


add_cases(Group06Utf8, "06", [("valid_%s" % n, (v, None)) for n, v in VALID_UTF8]
          + [("valid_%s_1byte_fragments" % n, (v, 1)) for n, v in VALID_UTF8[:9]], _valid_utf8)
add_cases(Group06Utf8, "06_invalid", [("%s" % n, (v, None, None)) for n, v in INVALID_UTF8]
          + [("%s_1byte_fragments" % n, (v, 1, None)) for n, v in INVALID_UTF8[::3]]
          + [("%s_chopped" % n, (v, None, 1)) for n, v in INVALID_UTF8[1::4]], _invalid_utf8)


# ---- 7: close ----------------------------------------------------------------------------------------

VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


class Group07Close(EchoCase):
    def test_07_01_normal(self):
        ws = self.ws()
        self.assertEcho(ws, OP_TEXT, "before close")
        self.assertEqual(ws.close_handshake(1000), b"")

    def test_07_02_empty_payload(self):
        """No code: RFC 6455 5.5.1 lets the reply carry no code either; the
        server answers with an empty close (it never sends 1005 on the wire)."""
        ws = self.ws()
        ws.send_close(None)
        ws.expect_close(None)

    def test_07_03_one_byte_payload(self):
        self.assertFails(1002, encode_frame(OP_CLOSE, b"\x03"))

    def test_07_04_reason_123_bytes(self):
        ws = self.ws()
        ws.send_close(1000, b"r" * 123)
        ws.expect_close(1000)

    def test_07_05_reason_utf8(self):
        ws = self.ws()
        ws.send_close(1000, "κόσμε 😀".encode())
        ws.expect_close(1000)

    def test_07_06_reason_invalid_utf8(self):
        self.assertFails(1007, encode_frame(OP_CLOSE, close_payload(1000, b"bad \xce\xba\xe1\xbd")))

    def test_07_07_reason_surrogate(self):
        self.assertFails(1007, encode_frame(OP_CLOSE, close_payload(1000, b"\xed\xa0\x80")))

    def test_07_08_payload_126_bytes(self):
        self.assertFails(1002, encode_frame(OP_CLOSE, close_payload(1000, b"r" * 124)))

    def test_07_09_data_after_close_ignored(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_TEXT, b"ignored")
                    + encode_frame(OP_PING, b"ignored") + encode_frame(OP_CLOSE, close_payload(1001)))
        ws.expect_close(1000)
        self.assertEqual(len(ws.frames), 1)

    def test_07_10_garbage_after_close_ignored(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) + b"\xff" * 64)
        ws.expect_close(1000)

    def test_07_11_close_chopped(self):
        ws = self.ws()
        ws.send_close(4321, b"chopped close", chop=1)
        ws.expect_close(4321)

    def test_07_12_close_after_fragment_and_ping(self):
        ws = self.ws()
        ws.send_frame(OP_BINARY, b"part", fin=False)
        ws.send_frame(OP_PING, b"p")
        self.assertEqual(ws.recv_message(), (OP_PONG, b"p"))
        ws.close_handshake(1001)


    def test_07_13_message_then_close_in_one_write(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_TEXT, b"last words") + encode_frame(OP_CLOSE, close_payload(1000)))
        self.assertEqual(ws.recv_message(), (OP_TEXT, b"last words"))
        ws.expect_close(1000)

    def test_07_14_close_survives_a_client_still_sending(self):
        """The server fails the connection (1007) while the client is still
        streaming megabytes: it must linger (read and discard) rather than
        reset, so the close frame is not destroyed by an RST."""
        ws = self.ws()
        frame = encode_frame(OP_TEXT, b"\xff" + bytes(8 * MiB), key=b"\x00\x00\x00\x00")

        def stream():
            try:
                ws.sock.sendall(frame)
            except OSError:
                pass  # the server closed: expected

        t = threading.Thread(target=stream, daemon=True)
        t.start()
        ws.expect_close(1007, timeout=10)
        t.join(scaled(10))


class Group07ShutdownClose(EchoCase):
    """The server starts the close handshake itself when it shuts down."""

    def test_07_20_sigterm_closes_with_1001(self):
        if self.srv.external:
            self.skip_allowed("external", "stops the server")
        clients = [self.ws(), self.ws(extensions=PMD), self.ws("/broadcast")]
        for c in clients[:2]:
            self.assertEcho(c, OP_TEXT, "hello")
        self.stopped_on_purpose = True
        self.srv.proc.send_signal(15)
        for c in clients:
            self.assertEqual(c.expect_close(1001, timeout=10), b"server shutting down")
        self.assertEqual(self.srv.proc.wait(scaled(15)), 0)


def _close_valid(self, code):
    ws = self.ws()
    ws.send_close(code, b"reason %d" % code)
    ws.expect_close(code)


def _close_invalid(self, code):
    self.assertFails(1002, encode_frame(OP_CLOSE, close_payload(code, b"x")))


add_cases(Group07Close, "07_valid", [("code_%d" % c, (c,)) for c in VALID_CLOSE_CODES], _close_valid)
add_cases(Group07Close, "07_invalid", [("code_%d" % c, (c,)) for c in INVALID_CLOSE_CODES], _close_invalid)


# ---- 9: limits ----------------------------------------------------------------------------------------


class Group09Limits(EchoCase):
    def test_09_90_header_over_limit_fails_fast(self):
        """A header announcing more than max_message (64 MiB in examples/echo):
        1009 at once, no payload needed."""
        ws = self.ws()
        ws.send_raw(encode_frame(OP_BINARY, b"", length=ECHO_MAX_MESSAGE + 1))
        ws.expect_close(1009)

    def test_09_91_header_over_limit_text(self):
        ws = self.ws()
        ws.send_raw(encode_frame(OP_TEXT, b"abc", length=1 << 40))
        ws.expect_close(1009)

    def test_09_92_64bit_length_top_bit(self):
        ws = self.ws()
        ws.send_raw(b"\x82\xff" + (1 << 63).to_bytes(8, "big") + b"\x00" * 4)
        ws.expect_close(1002)

    def test_09_93_non_minimal_lengths(self):
        # 126 announcing 100 bytes, 127 announcing 1000: RFC 6455 5.2 "minimal number of bytes".
        self.assertFails(1002, b"\x82\xfe\x00\x64" + b"\x00" * 4 + b"x" * 100)
        self.assertFails(1002, b"\x82\xff" + (1000).to_bytes(8, "big") + b"\x00" * 4 + b"x" * 1000)

    def test_09_94_unmasked_frame(self):
        self.assertFails(1002, encode_frame(OP_TEXT, b"not masked", masked=False))


def _limit(self, opcode, size, fragments, chop):
    ws = self.ws(timeout=30.0)
    payload = utf8_text(size, seed=size) if opcode == OP_TEXT else os.urandom(size)
    self.assertEcho(ws, opcode, payload, fragments=fragments, chop=chop, timeout=60.0)
    ws.close_handshake()


add_cases(Group09Limits, "09", [
    ("text_1MiB", (OP_TEXT, 1 * MiB, None, None)),
    ("binary_1MiB_random_chops", (OP_BINARY, 1 * MiB, None, "random")),
    ("text_4MiB", (OP_TEXT, 4 * MiB, None, None)),
    ("binary_8MiB", (OP_BINARY, 8 * MiB, None, None)),
    ("binary_16MiB", (OP_BINARY, 16 * MiB, None, None)),
    ("text_16MiB_1MiB_fragments", (OP_TEXT, 16 * MiB, 1 * MiB, None)),
    ("binary_1MiB_64B_fragments", (OP_BINARY, 1 * MiB, 64, None)),
    ("text_1MiB_64B_fragments", (OP_TEXT, 1 * MiB, 64, None)),
    ("binary_2MiB_4KiB_fragments", (OP_BINARY, 2 * MiB, 4096, None)),
    ("text_4MiB_64KiB_fragments_chopped", (OP_TEXT, 4 * MiB, 65536, "random")),
    ("binary_4MiB_1MiB_fragments", (OP_BINARY, 4 * MiB, 1 * MiB, None)),
], _limit)


# ---- 12/13: permessage-deflate --------------------------------------------------------------------



class Group12Deflate(EchoCase):
    """Compressed messages both ways (Autobahn 12.x) and compressed-stream errors."""

    def test_12_01_threshold(self):
        """Messages under 256 bytes go out uncompressed; compressible ones from
        256 bytes compressed; incompressible ones uncompressed."""
        ws = self.ws(extensions=PMD)
        for n, data, want in [(1, b"a", False), (255, b"a" * 255, False), (256, b"a" * 256, True),
                              (5000, b"ab" * 2500, True), (4096, os.urandom(4096), False)]:
            with self.subTest(size=n):
                self.assertEcho(ws, OP_BINARY, data)
                self.assertEqual(ws.last_compressed, want)
        ws.close_handshake()

    def test_12_02_compressed_sizes(self):
        ws = self.ws(extensions=PMD)
        rnd = random.Random(12)
        for n in (0, 1, 100, 255, 256, 257, 1000, 65535, 65536, 200000, 1 * MiB):
            with self.subTest(size=n):
                text = utf8_text(n, seed=n)
                self.assertEcho(ws, OP_TEXT, text, compress=True)
                data = bytes(rnd.getrandbits(8) for _ in range(min(n, 70000)))
                self.assertEcho(ws, OP_BINARY, data, compress=True)
        ws.close_handshake()

    def test_12_03_uncompressed_messages_on_deflate_connection(self):
        ws = self.ws(extensions=PMD)
        self.assertEcho(ws, OP_TEXT, "plain " * 100)
        self.assertEcho(ws, OP_TEXT, "compressed " * 100, compress=True)
        self.assertEcho(ws, OP_BINARY, b"\x00" * 3000, fragments=1000)
        ws.close_handshake()

    def test_12_04_fragmented_compressed(self):
        ws = self.ws(extensions=PMD)
        self.assertEcho(ws, OP_TEXT, utf8_text(100000, seed=8), compress=True, fragments=777)
        self.assertEcho(ws, OP_BINARY, b"0123456789" * 1000, compress=True, fragments=[1, 1, 5], chop=1)
        ws.close_handshake()

    def test_12_05_client_context_takeover(self):
        """Without client_no_context_takeover the client's second message may
        refer back into the first: the server's inflater keeps the window."""
        ws = self.ws(extensions=PMD)
        self.assertTrue(ws.client_context_takeover)
        msg = utf8_text(3000, seed=9)
        for _ in range(4):
            self.assertEcho(ws, OP_TEXT, msg, compress=True)
        ws.close_handshake()

    def test_12_06_client_no_context_takeover(self):
        ws = self.ws(extensions=PMD + "; client_no_context_takeover")
        self.assertFalse(ws.client_context_takeover)
        for i in range(4):
            self.assertEcho(ws, OP_BINARY, b"%d" % i * 2000, compress=True)
        ws.close_handshake()

    def test_12_07_final_block(self):
        """RFC 7692 7.2.3.3: a message may end with a BFINAL=1 block instead of
        a sync flush."""
        ws = self.ws(extensions=PMD + "; client_no_context_takeover")
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = b"final block " * 100
        ws.send_frame(OP_BINARY, c.compress(data) + c.flush(zlib.Z_FINISH), rsv=RSV1)
        self.assertEqual(ws.recv_message(), (OP_BINARY, data))
        ws.close_handshake()

    def test_12_08_rsv1_on_continuation(self):
        data = deflate_raw(b"hello " * 100)
        self.assertFails(1002, encode_frame(OP_TEXT, data[:10], fin=False, rsv=RSV1)
                         + encode_frame(OP_CONT, data[10:], rsv=RSV1), extensions=PMD)

    def test_12_09_rsv1_on_control(self):
        self.assertFails(1002, encode_frame(OP_PING, b"", rsv=RSV1), extensions=PMD)

    def test_12_10_rsv2_with_deflate(self):
        self.assertFails(1002, encode_frame(OP_TEXT, b"hi", rsv=RSV2), extensions=PMD)

    def test_12_11_invalid_deflate_data(self):
        # BTYPE=11 (reserved) in the first block header.
        self.assertFails(1007, encode_frame(OP_BINARY, b"\xff\xff\xff\xff", rsv=RSV1), extensions=PMD,
                         before=[(OP_TEXT, b"ok")])

    def test_12_12_compressed_invalid_utf8(self):
        self.assertFails(1007, encode_frame(OP_TEXT, deflate_raw(b"abc \xed\xa0\x80 def" * 50), rsv=RSV1),
                         extensions=PMD)

    def test_12_13_compressed_truncated_utf8(self):
        self.assertFails(1007, encode_frame(OP_TEXT, deflate_raw(b"x" * 300 + b"\xf0\x9f\x98"), rsv=RSV1),
                         extensions=PMD)


class Group12DeflateLimit(EchoCase):
    """The decompression bomb, on a fresh server so that the RSS peak (VmHWM
    is per process) is not hidden by earlier big messages."""

    def test_12_90_compressed_over_limit_rss_bounded(self):
        """A 70 KiB frame that inflates to 70 MiB (over examples/echo's 64 MiB
        limit): 1009, and the server never holds much more than the limit."""
        if self.srv.external:
            self.skip_allowed("external", "measures the server's memory")
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = c.compress(b"\x00" * (70 * MiB)) + c.flush(zlib.Z_SYNC_FLUSH)
        self.assertTrue(bomb.endswith(DEFLATE_TAIL))
        bomb = bomb[:-4]
        self.assertLess(len(bomb), 200000)
        ws = self.ws(extensions=PMD, timeout=30.0)
        rss0 = self.srv.rss_kb()
        ws.send_frame(OP_BINARY, bomb, rsv=RSV1)
        ws.expect_close(1009, timeout=30.0)
        peak = (self.rss_hwm_kb() - rss0) / 1024
        # The inflate buffer is capped at the limit (64 MiB); zlib and slack on
        # top. Under ASan freed blocks stay in its quarantine, so the buffer's
        # realloc steps (32 + 64 MiB) all count: allow twice as much there.
        budget = 200 if "ASAN_OPTIONS" in os.environ or pxtest.TIMEOUT_MULT > 1 else 100
        sys.stderr.write("[bomb: RSS peak +%.0f MiB, budget %d MiB] " % (peak, budget))
        self.assertLess(peak, budget, "server RSS peaked %.0f MiB above its start" % peak)
        # The server is fine afterwards.
        ws2 = self.ws(extensions=PMD)
        self.assertEcho(ws2, OP_TEXT, "still alive " * 50, compress=True)
        ws2.close_handshake()



class Group13DeflateParams(EchoCase):
    """permessage-deflate negotiation (Autobahn 13.x offers parameter combinations)."""

    def test_13_01_negotiated_minimal_offer(self):
        ws = self.ws(extensions=PMD)
        self.assertEqual(ws.extension, "permessage-deflate; server_no_context_takeover")
        ws.close_handshake()

    def test_13_02_negotiated_parameters(self):
        for offer, must in [
            ("permessage-deflate; client_max_window_bits", []),
            ("permessage-deflate; client_max_window_bits=10", ["client_max_window_bits=10"]),
            ("permessage-deflate; server_max_window_bits=9", ["server_max_window_bits=9"]),
            ('permessage-deflate; server_max_window_bits="12"', ["server_max_window_bits=12"]),
            ("permessage-deflate; client_no_context_takeover", ["client_no_context_takeover"]),
            ("permessage-deflate; server_no_context_takeover", []),
            ("Permessage-Deflate; Client_Max_Window_Bits=15", []),
            ("permessage-deflate;server_max_window_bits=8;client_max_window_bits=8",
             ["server_max_window_bits=8", "client_max_window_bits=8"]),
        ]:
            with self.subTest(offer=offer):
                ws = self.ws(extensions=offer)
                self.assertIsNotNone(ws.extension, offer)
                params = [p.strip() for p in ws.extension.split(";")]
                self.assertEqual(params[0], "permessage-deflate")
                self.assertIn("server_no_context_takeover", params)
                for m in must:
                    self.assertIn(m, params)
                self.assertEqual(len(params), len(set(params)), "duplicate parameters")
                self.assertEcho(ws, OP_TEXT, "a" * 1000, compress=True)
                self.assertTrue(ws.last_compressed)
                ws.close_handshake()

    def test_13_03_invalid_offers_declined(self):
        for offer in [
            "permessage-deflate; foo=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
            "x-webkit-deflate-frame",
            "deflate-frame; no_context_takeover",
        ]:
            with self.subTest(offer=offer):
                ws = self.ws(extensions=offer)
                self.assertIsNone(ws.extension, "offer %r should be declined" % offer)
                self.assertEcho(ws, OP_TEXT, "x" * 1000)
                # Without the extension RSV1 is a protocol error.
                self.assertFails(1002, encode_frame(OP_TEXT, deflate_raw(b"x" * 1000), rsv=RSV1), ws=ws)

    def test_13_04_first_valid_offer_wins(self):
        ws = self.ws(extensions="permessage-deflate; foo, permessage-deflate; client_max_window_bits=11")
        self.assertIn("client_max_window_bits=11", ws.extension)
        self.assertEcho(ws, OP_TEXT, "z" * 5000, compress=True)
        ws.close_handshake()


# ---- backpressure: a broadcast receiver that never reads ---------------------------------------------


class Group90Backpressure(EchoCase):
    def test_90_01_slow_broadcast_consumer_closed_1008(self):
        """/broadcast with three clients: a sender (also a member, so it reads
        its own messages), a fast reader, and a member that never reads.
        Pushing 64 KiB messages, the slow one is closed with 1008 once its
        4 MiB output budget is full; the others get every message in order."""
        if self.srv.external:
            self.skip_allowed("external", "reads the server log")
        nmsg, size = 300, 65536  # 19 MiB: past 4 MiB budget + kernel buffers
        slow = self.ws("/broadcast", rcvbuf=16384, timeout=30.0)
        fast = self.ws("/broadcast", timeout=30.0)
        sender = self.ws("/broadcast", timeout=30.0)
        got = {"fast": [], "sender": []}
        errors = []
        progress = threading.Condition()

        def reader(name, ws):
            try:
                while len(got[name]) < nmsg:
                    m = ws.recv_message(30.0)
                    if m is None or m[0] != OP_BINARY:
                        errors.append("%s got %r" % (name, m and (m[0], m[1][:40])))
                        break
                    with progress:
                        got[name].append(int.from_bytes(m[1][:4], "big"))
                        if m[1][4:] != bytes([got[name][-1] & 0xFF]) * (size - 4):
                            errors.append("%s: message %d corrupted" % (name, got[name][-1]))
                        progress.notify_all()
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append("%s: %r" % (name, e))
                with progress:
                    progress.notify_all()

        slow_result = {}

        def drain_slow():
            """Once the server has given up on it, the slow member reads: a
            prefix of the messages, in order, then 1008, then EOF. (Read at
            once: the server only waits its shutdown timeout for the flush.)"""
            seen = []
            try:
                while True:
                    m = slow.recv_message(30.0)
                    if m is None:
                        slow_result["error"] = "EOF before the close frame"
                        break
                    if m[0] == OP_CLOSE:
                        slow_result["code"] = int.from_bytes(m[1][:2], "big")
                        slow.expect_eof()
                        break
                    seen.append(int.from_bytes(m[1][:4], "big"))
            except Exception as e:  # noqa: BLE001 -- reported below
                slow_result["error"] = repr(e)
            slow_result["seen"] = seen

        slow_thread = threading.Thread(target=drain_slow, daemon=True)
        threads = [threading.Thread(target=reader, args=(n, w), daemon=True)
                   for n, w in (("fast", fast), ("sender", sender))]
        for t in threads:
            t.start()
        for i in range(nmsg):
            # Keep at most 8 messages (512 KiB) in flight so the readers never
            # fall 4 MiB behind themselves.
            with progress:
                progress.wait_for(lambda: errors or min(len(got["fast"]), len(got["sender"])) >= i - 8,
                                  timeout=scaled(30))
            if errors:
                break
            sender.send_message(OP_BINARY, i.to_bytes(4, "big") + bytes([i & 0xFF]) * (size - 4))
            if i % 8 == 0 and slow_thread.ident is None \
                    and "slow consumer" in self.srv.log_text()[self.log_mark:]:
                slow_thread.start()
        for t in threads:
            t.join(scaled(60))
        self.assertEqual(errors, [])
        self.assertEqual(got["fast"], list(range(nmsg)))
        self.assertEqual(got["sender"], list(range(nmsg)))
        self.srv.wait_log(r"slow consumer.*1008", timeout=10)
        if slow_thread.ident is None:
            slow_thread.start()
        slow_thread.join(scaled(60))
        self.assertNotIn("error", slow_result)
        self.assertEqual(slow_result.get("code"), 1008)
        seen = slow_result["seen"]
        self.assertEqual(seen, list(range(len(seen))))
        self.assertLess(len(seen), nmsg)
        # The others are still fine.
        sender.send_message(OP_TEXT, b"after")
        self.assertEqual(fast.recv_message(), (OP_TEXT, b"after"))
        self.assertEqual(sender.recv_message(), (OP_TEXT, b"after"))
        fast.close_handshake()
        sender.close_handshake()

    def test_90_02_broadcast_three_senders(self):
        """Three members publish 50 messages each without waiting: every member
        receives all 150, each sender's messages in the order sent."""
        clients = [self.ws("/broadcast") for _ in range(3)]
        self.assertEcho(clients[0], OP_TEXT, "joined")  # everyone has joined by now
        for c in clients[1:]:
            self.assertEqual(c.recv_message(), (OP_TEXT, b"joined"))
        for i in range(50):
            for k, c in enumerate(clients):
                c.send_message(OP_TEXT, "%d:%d" % (k, i))
        for c in clients:
            per_sender = {0: [], 1: [], 2: []}
            for _ in range(150):
                op, data = c.recv_message()
                self.assertEqual(op, OP_TEXT)
                k, i = map(int, data.split(b":"))
                per_sender[k].append(i)
            for k in range(3):
                self.assertEqual(per_sender[k], list(range(50)), "order of sender %d" % k)
        for c in clients:
            c.close_handshake()


if __name__ == "__main__":
    pxtest.main()
