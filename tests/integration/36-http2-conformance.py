#!/usr/bin/python3
"""36-http2-conformance: HTTP/2 (RFC 9113) and HPACK (RFC 7541) conformance, case
by case, modelled on the sections of h2spec. Frames are built by hand (hyperframe,
hpack: python3-h2's own libraries) and sent over a raw socket to an h2c server;
every case expects the exact error the RFC asks for: a GOAWAY with its code
(connection error) or a RST_STREAM with its code on the stream (stream error),
or that the frame is ignored and the connection still answers (a PING, or a
request). The case list, with the expected outcome of each, is in
tests/README.md ("HTTP/2 conformance").

One server for the whole file (each case opens its own connection); it must
exit cleanly at the end.
"""

import os
import struct

import hyperframe.frame as hf

import pxtest
import h2client
from h2client import (RawH2, NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED,
                      FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR)

SRV = None


def setUpModule():
    global SRV
    if pxtest.EXTERNAL:
        SRV = pxtest.ExternalServer(pxtest.EXTERNAL)
        return
    out = os.path.join(pxtest.TEST_OUT, "36-http2-conformance", "server")
    os.makedirs(out, exist_ok=True)
    SRV = pxtest.Server("--data-dir", os.path.join(out, "var"), "--allow-anonymous",
                        "--http2-max-streams", "10", out_dir=out, cwd=out)


def tearDownModule():
    if SRV and not SRV.external:
        code = SRV.stop()
        if code != 0:
            raise AssertionError("server exited with %r:\n%s" % (code, SRV.log_text()[-4000:]))


def frame(ftype, flags, sid, payload):
    """Any frame, bytes as given (no validation: for malformed ones)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
F_END_STREAM, F_ACK, F_END_HEADERS, F_PADDED, F_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20


class Base(pxtest.PxTestCase):
    def raw(self, **kw):
        c = RawH2(SRV.addr, **kw)
        self.addCleanup(c.close)
        return c

    def hblock(self, c, path="/healthz", method="GET", extra=()):
        return c.enc.encode([(k.encode(), v.encode())
                             for k, v in RawH2.req(path, method, list(extra))])

    def still_alive(self, c):
        """The connection still works: a PING is answered."""
        c.send(hf.PingFrame(0, opaque_data=b"alive!!!"))
        c.expect(lambda f: isinstance(f, hf.PingFrame) and "ACK" in f.flags, "PING ACK")

    def conn_error(self, c, code):
        c.expect_goaway(code)
        c.expect_closed()


class Preface(Base):
    """RFC 9113 3.4: the connection preface."""

    def test_valid_preface_gets_settings(self):
        c = self.raw()
        self.assertIn(hf.SettingsFrame.type, [f.type for f in c.frames])
        self.assertEqual(c.server_settings.get(hf.SettingsFrame.MAX_CONCURRENT_STREAMS), 10)
        self.assertEqual(c.server_settings.get(hf.SettingsFrame.ENABLE_PUSH), 0)

    def test_invalid_preface(self):
        # Starts like the preface, then differs: not HTTP/2, and not a valid
        # HTTP/1.1 request either (a connection error; 3.4 lets the GOAWAY be
        # omitted: the HTTP/1.1 side answers 505 and closes).
        c = self.raw(preface=False)
        c.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0, b""))
        c.expect_closed()
        self.assertFalse(any(isinstance(f, hf.SettingsFrame) for f in c.frames))

    def test_settings_first(self):
        # The preface must be followed by SETTINGS: a PING first is a protocol error.
        c = self.raw(preface=False)
        c.send_raw(h2client.PREFACE + frame(PING, 0, 0, b"12345678"))
        c.expect_goaway(PROTOCOL_ERROR)
        c.expect_closed()


class FrameFormat(Base):
    """4.1 frame format, 4.2 frame size."""

    def test_unknown_frame_type_ignored(self):
        c = self.raw()
        c.send_raw(frame(0x20, 0, 0, b"hello"))
        self.still_alive(c)

    def test_undefined_flags_ignored(self):
        c = self.raw()
        c.send_raw(frame(PING, 0x16, 0, b"12345678"))
        c.expect(lambda f: isinstance(f, hf.PingFrame) and f.opaque_data == b"12345678", "PING ACK")

    def test_reserved_bit_ignored(self):
        c = self.raw()
        c.send_raw(frame(PING, 0, 0x80000000, b"12345678"))
        c.expect(lambda f: isinstance(f, hf.PingFrame) and f.opaque_data == b"12345678", "PING ACK")

    def test_data_of_max_frame_size(self):
        c = self.raw()
        block = self.hblock(c, "/api/channels/c42/messages", "POST",
                            [("content-type", "application/json"), ("content-length", "16386")])
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, block))
        c.send_raw(frame(DATA, 0, 1, b'"' + b"a" * 16383) + frame(DATA, F_END_STREAM, 1, b'a"'))
        status, _, body = c.expect_response(1)
        self.assertEqual(status, 201, body)

    def test_data_over_max_frame_size(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, self.hblock(c, "/healthz", "POST")))
        c.send_raw(frame(DATA, F_END_STREAM, 1, b"a" * 16385))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_headers_over_max_frame_size(self):
        c = self.raw()
        block = c.enc.encode([(k.encode(), v.encode()) for k, v in
                              RawH2.req(extra=[("x-big", "b" * 17000)])], huffman=False)
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1, block))
        self.conn_error(c, FRAME_SIZE_ERROR)


class HeaderBlocks(Base):
    """4.3 header compression and decompression, header block continuity."""

    def test_invalid_header_block(self):
        c = self.raw()
        # An indexed field with index 0 does not exist (RFC 7541 6.1).
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1, b"\x80"))
        self.conn_error(c, COMPRESSION_ERROR)

    def test_priority_inside_header_block(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:3]))
        c.send_raw(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_headers_for_another_stream_inside_header_block(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:3]))
        c.send_raw(frame(HEADERS, F_END_STREAM | F_END_HEADERS, 3, block))
        self.conn_error(c, PROTOCOL_ERROR)


class StreamStates(Base):
    """5.1 stream states, 5.1.1 identifiers, 5.1.2 concurrency."""

    def test_idle_data(self):
        c = self.raw()
        c.send_raw(frame(DATA, F_END_STREAM, 1, b"x"))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_idle_rst_stream(self):
        c = self.raw()
        c.send_raw(frame(RST, 0, 1, struct.pack(">I", 8)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_idle_window_update(self):
        c = self.raw()
        c.send_raw(frame(WINDOW, 0, 1, struct.pack(">I", 100)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_idle_continuation(self):
        c = self.raw()
        c.send_raw(frame(CONT, F_END_HEADERS, 1, self.hblock(c)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_half_closed_remote_data(self):
        # /api/channels/x/events (SSE) keeps the stream open after the request ended.
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.expect(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 1, "the SSE head")
        c.send_raw(frame(DATA, 0, 1, b"x"))
        # A stream error by 5.1; nghttp2 makes it a connection error (5.4.1 allows).
        self.conn_error(c, STREAM_CLOSED)

    def test_half_closed_remote_headers(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.expect(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 1, "the SSE head")
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         c.enc.encode([(b"x-trailer", b"1")])))
        self.conn_error(c, STREAM_CLOSED)  # as above: a connection error

    def test_closed_after_end_stream_is_ignored(self):
        # RFC 9113 5.1 lets an endpoint that keeps no state for closed streams
        # ignore frames on them (the server keeps none: memory per stream ends
        # with the stream); the connection stays usable.
        c = self.raw()
        c.send(c.headers(1, RawH2.req()))
        c.expect_response(1)
        c.send_raw(frame(DATA, F_END_STREAM, 1, b"late"))
        c.send_raw(frame(WINDOW, 0, 1, struct.pack(">I", 10)))
        self.still_alive(c)
        c.send(c.headers(3, RawH2.req()))
        self.assertEqual(c.expect_response(3)[0], 200)

    def test_closed_after_rst_stream_is_ignored(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.expect(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 1, "the SSE head")
        c.send_raw(frame(RST, 0, 1, struct.pack(">I", 8)))
        c.send_raw(frame(RST, 0, 1, struct.pack(">I", 8)))
        self.still_alive(c)

    def test_even_stream_id(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 2, self.hblock(c)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_decreasing_stream_id_is_a_closed_stream(self):
        # A lower, unused id is implicitly closed (5.1.1); with no state kept for
        # closed streams its HEADERS are ignored like any frame on a closed stream
        # (5.1), unanswered, and the connection goes on.
        c = self.raw()
        c.send(c.headers(5, RawH2.req()))
        c.expect_response(5)
        c.send(c.headers(3, RawH2.req()))
        self.still_alive(c)
        self.assertFalse([f for f in c.frames if f.stream_id == 3])
        c.send(c.headers(7, RawH2.req()))
        self.assertEqual(c.expect_response(7)[0], 200)

    def test_over_max_concurrent_streams(self):
        # SETTINGS_MAX_CONCURRENT_STREAMS is 10 (--http2-max-streams): SSE streams
        # stay open; the 11th is refused, the connection lives on.
        c = self.raw()
        for i in range(10):
            c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1 + 2 * i,
                             self.hblock(c, "/api/channels/x/events")))
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 21, self.hblock(c)))
        c.expect_rst(21, REFUSED_STREAM)
        self.still_alive(c)

    def test_priority_on_itself(self):
        c = self.raw()
        c.send_raw(frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 16)))
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 3, self.hblock(c)))
        # With RFC 7540 priorities off (SETTINGS_NO_RFC7540_PRIORITIES), PRIORITY
        # frames are ignored, even this one (RFC 9113 5.3.2).
        self.assertEqual(c.expect_response(3)[0], 200)


class ErrorHandling(Base):
    """5.4 error handling, 5.5 extensions."""

    def test_connection_error_closes(self):
        c = self.raw()
        c.send_raw(frame(PING, 0, 0, b"1234567"))  # 7 bytes
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_unknown_extension_frame_ignored(self):
        c = self.raw()
        c.send_raw(frame(0xfe, 0xff, 1, b"\x00" * 32))
        self.still_alive(c)

    def test_unknown_frame_inside_header_block(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:3]))
        c.send_raw(frame(0x20, 0, 1, b"x"))
        self.conn_error(c, PROTOCOL_ERROR)


class Frames(Base):
    """6.x: each frame type's rules."""

    def test_data_stream_zero(self):
        c = self.raw()
        c.send_raw(frame(DATA, 0, 0, b"x"))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_data_invalid_padding(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, self.hblock(c, "/healthz", "POST")))
        c.send_raw(frame(DATA, F_PADDED | F_END_STREAM, 1, b"\x09abcd"))  # pad 9 > 4
        self.conn_error(c, PROTOCOL_ERROR)

    def test_headers_then_data_inside_block(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, 0, 1, block[:3]) + frame(DATA, 0, 1, b"x"))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_headers_stream_zero(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 0, self.hblock(c)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_headers_invalid_padding(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM | F_PADDED, 1,
                         bytes([len(block) + 5]) + block))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_priority_stream_zero(self):
        c = self.raw()
        c.send_raw(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 16)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_priority_bad_length(self):
        c = self.raw()
        c.send_raw(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x03"))
        self.conn_error(c, FRAME_SIZE_ERROR)  # a stream error made a connection error (5.4.1)

    def test_rst_stream_zero(self):
        c = self.raw()
        c.send_raw(frame(RST, 0, 0, struct.pack(">I", 8)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_rst_stream_bad_length(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.send_raw(frame(RST, 0, 1, b"\x00\x00\x00"))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_settings_ack_with_payload(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, F_ACK, 0, b"\x00\x01\x00\x00\x10\x00"))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_settings_on_a_stream(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 1, b""))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_settings_bad_length(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, b"\x00\x01\x00\x00\x10"))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_settings_enable_push_invalid(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 2, 2)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_settings_window_too_large(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 2 ** 31)))
        self.conn_error(c, FLOW_CONTROL_ERROR)

    def test_settings_frame_size_too_small(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 16383)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_settings_frame_size_too_large(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 2 ** 24)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_settings_unknown_ignored_and_acked(self):
        c = self.raw()
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 0xff, 1)))
        c.expect(lambda f: isinstance(f, hf.SettingsFrame) and "ACK" in f.flags, "SETTINGS ACK")
        self.still_alive(c)

    def test_push_promise_from_client(self):
        c = self.raw()
        c.send_raw(frame(PUSH, F_END_HEADERS, 1, b"\x00\x00\x00\x02" + self.hblock(c)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_ping_ack_echoes(self):
        c = self.raw()
        c.send_raw(frame(PING, 0, 0, b"h2specok"))
        f = c.expect(lambda f: isinstance(f, hf.PingFrame), "PING ACK")
        self.assertIn("ACK", f.flags)
        self.assertEqual(f.opaque_data, b"h2specok")

    def test_ping_ack_not_answered(self):
        c = self.raw()
        c.send_raw(frame(PING, F_ACK, 0, b"unsolic!"))
        c.send_raw(frame(PING, 0, 0, b"answered"))
        f = c.expect(lambda f: isinstance(f, hf.PingFrame), "PING ACK")
        self.assertEqual(f.opaque_data, b"answered")

    def test_ping_on_a_stream(self):
        c = self.raw()
        c.send_raw(frame(PING, 0, 1, b"12345678"))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_ping_bad_length(self):
        c = self.raw()
        c.send_raw(frame(PING, 0, 0, b"123456789"))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_goaway_on_a_stream(self):
        c = self.raw()
        c.send_raw(frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_window_update_zero_connection(self):
        c = self.raw()
        c.send_raw(frame(WINDOW, 0, 0, struct.pack(">I", 0)))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_window_update_zero_stream(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.send_raw(frame(WINDOW, 0, 1, struct.pack(">I", 0)))
        self.conn_error(c, PROTOCOL_ERROR)  # a stream error made a connection error (5.4.1)

    def test_window_update_bad_length(self):
        c = self.raw()
        c.send_raw(frame(WINDOW, 0, 0, b"\x00\x00\x01"))
        self.conn_error(c, FRAME_SIZE_ERROR)

    def test_window_overflow_connection(self):
        c = self.raw()
        c.send_raw(frame(WINDOW, 0, 0, struct.pack(">I", 2 ** 31 - 1)))
        self.conn_error(c, FLOW_CONTROL_ERROR)

    def test_window_overflow_stream(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.send_raw(frame(WINDOW, 0, 1, struct.pack(">I", 2 ** 31 - 1)))
        c.expect_rst(1, FLOW_CONTROL_ERROR)

    def test_initial_window_change_overflows(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         self.hblock(c, "/api/channels/x/events")))
        c.send_raw(frame(WINDOW, 0, 1, struct.pack(">I", 2 ** 31 - 1 - 65535)))
        c.send_raw(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535 + 1000)))
        # 6.9.2 asks for a connection error; nghttp2 resets the stream whose window
        # overflowed (FLOW_CONTROL_ERROR) and keeps the connection: documented.
        c.expect_rst(1, FLOW_CONTROL_ERROR)
        self.still_alive(c)

    def test_continuation_sequence(self):
        c = self.raw()
        block = self.hblock(c, extra=[("x-a", "1" * 100)])
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:10]) + frame(CONT, 0, 1, block[10:20]) +
                   frame(CONT, F_END_HEADERS, 1, block[20:]))
        self.assertEqual(c.expect_response(1)[0], 200)

    def test_continuation_after_end_headers(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, self.hblock(c, "/healthz", "POST")))
        c.send_raw(frame(CONT, F_END_HEADERS, 1, c.enc.encode([(b"x-b", b"1")])))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_continuation_other_stream(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:3]) +
                   frame(CONT, F_END_HEADERS, 3, block[3:]))
        self.conn_error(c, PROTOCOL_ERROR)

    def test_continuation_stream_zero(self):
        c = self.raw()
        block = self.hblock(c)
        c.send_raw(frame(HEADERS, F_END_STREAM, 1, block[:3]) +
                   frame(CONT, F_END_HEADERS, 0, block[3:]))
        self.conn_error(c, PROTOCOL_ERROR)


class HttpMessages(Base):
    """8.1, 8.2, 8.3: HTTP semantics over HTTP/2."""

    def req_error(self, fields, code=PROTOCOL_ERROR, end_stream=True):
        c = self.raw()
        block = c.enc.encode([(k.encode(), v.encode()) for k, v in fields])
        c.send_raw(frame(HEADERS, F_END_HEADERS | (F_END_STREAM if end_stream else 0), 1, block))
        c.expect_rst(1, code)
        self.still_alive(c)
        return c

    def test_uppercase_field_name(self):
        self.req_error(RawH2.req(extra=[("X-Upper", "1")]))

    def test_unknown_pseudo_header(self):
        self.req_error(RawH2.req(extra=[(":foo", "1")]))

    def test_pseudo_after_regular(self):
        self.req_error([(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/")])

    def test_duplicate_pseudo_header(self):
        self.req_error(RawH2.req() + [(":path", "/other")])

    def test_response_pseudo_in_request(self):
        self.req_error(RawH2.req(extra=[(":status", "200")]))

    def test_connection_specific_field(self):
        self.req_error(RawH2.req(extra=[("connection", "keep-alive")]))

    def test_te_other_than_trailers(self):
        self.req_error(RawH2.req(extra=[("te", "gzip")]))

    def test_te_trailers_allowed(self):
        c = self.raw()
        c.send(c.headers(1, RawH2.req(extra=[("te", "trailers")])))
        self.assertEqual(c.expect_response(1)[0], 200)

    def test_missing_method(self):
        self.req_error([(":scheme", "http"), (":path", "/"), (":authority", "x")])

    def test_missing_scheme(self):
        self.req_error([(":method", "GET"), (":path", "/"), (":authority", "x")])

    def test_missing_path(self):
        self.req_error([(":method", "GET"), (":scheme", "http"), (":authority", "x")])

    def test_empty_path(self):
        self.req_error([(":method", "GET"), (":scheme", "http"), (":path", ""),
                        (":authority", "x")])

    def test_pseudo_header_in_trailers(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, self.hblock(c, "/healthz", "POST")))
        c.send_raw(frame(DATA, 0, 1, b"x"))
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         c.enc.encode([(b":method", b"GET")])))
        c.expect_rst(1, PROTOCOL_ERROR)

    def test_trailers_without_end_stream(self):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, self.hblock(c, "/healthz", "POST")))
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, c.enc.encode([(b"x-t", b"1")])))
        c.expect_rst(1, PROTOCOL_ERROR)

    def test_content_length_mismatch(self):
        c = self.raw()
        block = self.hblock(c, "/healthz", "POST", [("content-length", "5")])
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, block) + frame(DATA, F_END_STREAM, 1, b"abc"))
        c.expect_rst(1, PROTOCOL_ERROR)

    def test_content_length_exceeded(self):
        c = self.raw()
        block = self.hblock(c, "/healthz", "POST", [("content-length", "2")])
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, block) + frame(DATA, F_END_STREAM, 1, b"abc"))
        c.expect_rst(1, PROTOCOL_ERROR)

    def test_trailers_accepted(self):
        c = self.raw()
        block = self.hblock(c, "/api/channels/tr/messages", "POST",
                            [("content-type", "application/json")])
        c.send_raw(frame(HEADERS, F_END_HEADERS, 1, block) + frame(DATA, 0, 1, b'{"a":1}'))
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1,
                         c.enc.encode([(b"x-checksum", b"1")])))
        self.assertEqual(c.expect_response(1)[0], 201)

    def test_head_has_no_body(self):
        c = self.raw()
        c.send(c.headers(1, RawH2.req("/healthz", "HEAD")))
        status, hdrs, body = c.expect_response(1)
        self.assertEqual((status, body, hdrs.get("content-length")), (200, b"", "15"))

    def test_plain_connect_not_implemented(self):
        # CONNECT (8.5) carries :authority only; no route takes it: 501.
        c = self.raw()
        c.send(c.headers(1, [(":method", "CONNECT"), (":authority", "example.com:443")],
                         end_stream=False))
        self.assertEqual(c.expect_response(1)[0], 501)


class Hpack(Base):
    """RFC 7541: the decoder's errors are connection errors (COMPRESSION_ERROR)."""

    def hp_error(self, block):
        c = self.raw()
        c.send_raw(frame(HEADERS, F_END_HEADERS | F_END_STREAM, 1, block))
        self.conn_error(c, COMPRESSION_ERROR)

    def static_req(self):
        # :method GET (2), :scheme http (6), :path / (4), :authority literal
        return b"\x82\x86\x84\x41\x01x"

    def test_index_zero(self):
        self.hp_error(self.static_req() + b"\x80")

    def test_index_past_the_tables(self):
        self.hp_error(self.static_req() + b"\xff\x00")  # index 127 + 0: beyond 61 + empty table

    def test_table_size_update_over_the_limit(self):
        # Dynamic table size update to 2^21 > SETTINGS_HEADER_TABLE_SIZE (4096).
        self.hp_error(b"\x3f\xe1\xff\x7f" + self.static_req())

    def test_table_size_update_after_a_field(self):
        self.hp_error(self.static_req() + b"\x20")

    def test_huffman_with_eos(self):
        # A Huffman string holding the EOS symbol (30 one-bits) is a decoding error.
        self.hp_error(self.static_req()[:-3] + b"\x41\x84\xff\xff\xff\xff")

    def test_huffman_bad_padding(self):
        # Padding longer than 7 bits (a whole byte of ones).
        self.hp_error(self.static_req()[:-3] + b"\x41\x82\x0f\xff")

    def test_integer_overflow(self):
        self.hp_error(self.static_req() + b"\x7f\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f")

    def test_dynamic_table_reused_across_requests(self):
        c = self.raw()
        for sid in (1, 3, 5):  # the same fields, indexed the 2nd and 3rd time
            c.send(c.headers(sid, RawH2.req(extra=[("x-same", "value")])))
            self.assertEqual(c.expect_response(sid)[0], 200)


if __name__ == "__main__":
    pxtest.main()
