#!/usr/bin/python3
"""22-tls-scan: the security summary of a TLS listener, by sslscan (Debian's
sslscan, deps/debian.txt) for both certificate kinds, plus what sslscan cannot
test here (its OpenSSL has no compression): a hand-made TLS 1.2 ClientHello
offering DEFLATE must get a ServerHello with the null method.

Requirements (docs/tls.md records the summary): SSLv2, SSLv3, TLS 1.0 and 1.1
disabled; TLS 1.2 and 1.3 enabled; only the Mozilla "intermediate" suites
(ECDHE + AES-GCM or ChaCha20-Poly1305, and the TLS 1.3 suites); no insecure
renegotiation; not vulnerable to Heartbleed; TLS_FALLBACK_SCSV honoured; no
compression.

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/22-tls-scan.py -v
"""

import os
import re
import shutil
import socket
import struct
import subprocess

import pxtest
from pxtest import scaled
from tlsutil import Pki, TlsServerMixin

ALLOWED = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}


def client_hello(sni, compression=(1, 0)):
    """A TLS 1.2 ClientHello (ECDHE-ECDSA/RSA AES-GCM) offering `compression` methods."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    name = sni.encode()
    exts = ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)  # server_name
    exts += ext(10, struct.pack("!H", 4) + struct.pack("!HH", 0x001d, 0x0017))  # groups
    exts += ext(11, b"\x01\x00")  # ec_point_formats: uncompressed
    sigs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501]
    exts += ext(13, struct.pack("!H", 2 * len(sigs)) + b"".join(struct.pack("!H", s) for s in sigs))
    suites = [0xc02b, 0xc02f, 0xc02c, 0xc030]
    body = b"\x03\x03" + os.urandom(32) + b"\x00"
    body += struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
    body += bytes([len(compression)]) + bytes(compression)
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello_compression(data):
    """The compression method of the ServerHello at the start of `data`."""
    assert data[0] == 0x16, "not a handshake record: %r" % data[:16]
    hs = data[5:]
    assert hs[0] == 2, "not a ServerHello"
    body = hs[4:]
    sid_len = body[34]
    at = 35 + sid_len + 2  # version, random, session id, cipher suite
    return body[at]


class Scan(pxtest.PxTestCase, TlsServerMixin):
    @classmethod
    def setUpClass(cls):
        pxtest.PxTestCase.require_local_class("starts its own server")
        if not shutil.which("sslscan"):
            raise AssertionError("sslscan is not installed (deps/debian.txt lists it)")
        cls.pki = Pki(pxtest.class_out_dir(cls))
        cls.ec = cls.pki.leaf("ec", ["a.test"], kind="ec")
        cls.rsa = cls.pki.leaf("rsa", ["b.test"], kind="rsa")

    def scan(self, sni):
        p = subprocess.run(["sslscan", "--no-colour", "--sni-name=" + sni,
                            "127.0.0.1:%d" % self.tls_addr[1]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=scaled(120))
        out = p.stdout.decode(errors="replace")
        with open(os.path.join(self.out_dir, "sslscan-%s.txt" % sni), "w") as f:
            f.write(out)
        return out

    def test_scan(self):
        self.start_tls("--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--tls-cert", self.rsa[0],
                       "--tls-key", self.rsa[1], "--allow-anonymous")
        for sni, kx in (("a.test", "ECDSA"), ("b.test", "RSA")):
            with self.subTest(sni=sni):
                out = self.scan(sni)
                for proto in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
                    self.assertRegex(out, r"(?m)^%s\s+disabled" % re.escape(proto), out)
                for proto in ("TLSv1.2", "TLSv1.3"):
                    self.assertRegex(out, r"(?m)^%s\s+enabled" % re.escape(proto), out)
                self.assertIn("Server supports TLS Fallback SCSV", out)
                self.assertNotIn("Insecure session renegotiation supported", out)
                self.assertRegex(out, r"Session renegotiation not supported|Secure session renegotiation")
                self.assertNotRegex(out, r"(?<!not )vulnerable to heartbleed")
                ciphers = re.findall(r"(?m)^(?:Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)", out)
                self.assertTrue(ciphers, out)
                for proto, name in ciphers:
                    self.assertIn(proto, ("TLSv1.2", "TLSv1.3"))
                    self.assertIn(name, ALLOWED, "%s %s is not in the intermediate list" % (proto, name))
                    if proto == "TLSv1.2":
                        self.assertIn("ECDHE-%s-" % kx, name)
                self.assertEqual(len([c for c in ciphers if c[0] == "TLSv1.2"]), 3, ciphers)
                self.assertEqual(len([c for c in ciphers if c[0] == "TLSv1.3"]), 3, ciphers)
                # Groups: X25519, P-256, P-384 only.
                groups = set(re.findall(r"(?m)^TLSv1\.[23]\s+\d+ bits\s+(\S+)", out))
                self.assertTrue(groups <= {"x25519", "secp256r1", "secp384r1"}, groups)

    def test_no_compression(self):
        self.start_tls("--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--allow-anonymous")
        with socket.create_connection(self.tls_addr, timeout=scaled(10)) as s:
            s.sendall(client_hello("a.test", compression=(1, 0)))  # DEFLATE preferred
            data = b""
            while len(data) < 5 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed before a ServerHello: %r" % data)
                data += chunk
        self.assertEqual(server_hello_compression(data), 0, "the null compression method")
        # Offering only DEFLATE: refused.
        with socket.create_connection(self.tls_addr, timeout=scaled(10)) as s:
            s.sendall(client_hello("a.test", compression=(1,)))
            data = s.recv(100)
        self.assertTrue(data == b"" or data[0] == 0x15, "an alert or a close: %r" % data)


if __name__ == "__main__":
    pxtest.main()
