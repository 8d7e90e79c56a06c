#!/usr/bin/python3
"""20-tls: the TLS transport with real clients (openssl s_client, curl,
python's ssl and python3-websockets), against a test CA and certificates made
at test time (ECDSA P-256 and RSA 2048, several names).

  - ALPN (h2 preferred, http/1.1; h2 not offered with --http2=false: no "h2"
    protocol is registered; HTTP/2 over TLS itself is 24-http2-tls), SNI
    picking the certificate (exact names, wildcards, the default for unknown
    names and for no name), TLS 1.0/1.1 and weak ciphers refused, TLS 1.2 and
    1.3 accepted, close_notify on close, renegotiation refused;
  - curl over HTTPS (a route, static files with Range, the hub's HTTP API),
    wss:// with permessage-deflate;
  - resumption: TLS 1.2 session ids (cache) and tickets, TLS 1.3 tickets, the
    ticket key rotated with the previous key still accepted, resumption off;
  - OCSP stapling when a staple is configured (and not otherwise);
  - handshake failures counted in /metrics by reason: protocol version, no
    shared cipher, bad SNI, timeout (silent client, half a ClientHello),
    (plain HTTP on the TLS port is served: the sniffer, class OnePort);
  - the command line: every bad certificate, key, directory and OCSP file
    exits 2 naming the option; --tls-dir layouts; listener objects in the
    config file; --help.

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/20-tls.py -v
"""

import asyncio
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time

import pxtest
from pxtest import scaled
from tlsutil import (Pki, TlsServerMixin, client_context, failures, https, metrics, s_client,
                     subject_cn, cert_cn, write_config)


class TlsCase(pxtest.PxTestCase, TlsServerMixin):
    """A PKI per class: ec (a.test, *.wild.test; ECDSA, the default) and rsa
    (b.test; RSA 2048)."""

    @classmethod
    def setUpClass(cls):
        pxtest.PxTestCase.require_local_class("TLS tests start their own servers")
        cls.pki = Pki(pxtest.class_out_dir(cls))
        cls.ec = cls.pki.leaf("ec", ["a.test", "*.wild.test", "localhost"], kind="ec")
        cls.rsa = cls.pki.leaf("rsa", ["b.test"], kind="rsa")

    def cert_args(self):
        return ["--tls-cert", self.ec[0], "--tls-key", self.ec[1],
                "--tls-cert", self.rsa[0], "--tls-key", self.rsa[1]]

    def start(self, *args, **kw):
        return self.start_tls(*(self.cert_args() + ["--allow-anonymous"] + list(args)), **kw)

    def curl(self, path, *args, sni="a.test"):
        port = self.tls_addr[1]
        cmd = ["curl", "-sS", "--max-time", str(scaled(20)), "--cacert", self.pki.ca_crt,
               "--resolve", "%s:%d:127.0.0.1" % (sni, port)] + list(args) + \
              ["https://%s:%d%s" % (sni, port, path)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 0, "curl %s: %s" % (path, p.stderr.decode()))
        return p.stdout


class Handshake(TlsCase):
    def test_alpn(self):
        self.start()
        port = self.tls_addr[1]
        _, out = s_client(port, "-servername", "a.test", "-alpn", "http/1.1,h2")
        self.assertIn("ALPN protocol: h2", out, "h2 is preferred while HTTP/2 is on")
        _, out = s_client(port, "-servername", "a.test", "-alpn", "http/1.1")
        self.assertIn("ALPN protocol: http/1.1", out)
        _, out = s_client(port, "-servername", "a.test")
        self.assertIn("No ALPN negotiated", out)
        # After ALPN http/1.1 (or none), HTTP/1.1 runs over it (the first protocol
        # of the listener).
        st, _, body, _ = https(self.tls_addr, "GET", "/healthz", ca=self.pki.ca_crt)
        self.assertEqual((st, json.loads(body)), (200, {"status": "ok"}))

    def test_alpn_without_h2(self):
        self.start("--http2=false")
        port = self.tls_addr[1]
        _, out = s_client(port, "-servername", "a.test", "-alpn", "h2,http/1.1")
        self.assertIn("ALPN protocol: http/1.1", out, "h2 is not offered without an h2 protocol")
        _, out = s_client(port, "-servername", "a.test", "-alpn", "h2")
        self.assertIn("No ALPN negotiated", out)

    def test_sni_picks_the_certificate(self):
        self.start()
        port = self.tls_addr[1]
        cases = [("a.test", "a.test"), ("b.test", "b.test"), ("B.Test", "b.test"),
                 ("x.wild.test", "a.test"), ("unknown.test", "a.test"), (None, "a.test"),
                 ("deep.x.wild.test", "a.test")]
        for sni, cn in cases:
            with self.subTest(sni=sni):
                args = ["-servername", sni] if sni else ["-noservername"]
                _, out = s_client(port, *args)
                self.assertEqual(subject_cn(out), cn, out)
        # A verifying client accepts each certificate for its names (and the
        # chain as served).
        for sni, cn in (("a.test", "a.test"), ("b.test", "b.test"), ("w.wild.test", "a.test")):
            st, _, _, der = https(self.tls_addr, "GET", "/healthz", sni=sni, ca=self.pki.ca_crt)
            self.assertEqual((st, cert_cn(der)), (200, cn))
        # The RSA certificate is really RSA, the default really ECDSA.
        _, out = s_client(port, "-servername", "b.test", "-tls1_2")
        self.assertRegex(out, r"Cipher is ECDHE-RSA-")
        _, out = s_client(port, "-servername", "a.test", "-tls1_2")
        self.assertRegex(out, r"Cipher is ECDHE-ECDSA-")

    def test_versions_and_ciphers(self):
        self.start()
        port = self.tls_addr[1]
        for flag, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            _, out = s_client(port, flag, "-servername", "a.test")
            self.assertIn("New, %s" % name, out)
        before = failures(self.plain, "protocol_version")
        for flag in ("-tls1", "-tls1_1"):
            with self.subTest(flag=flag):
                _, out = s_client(port, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "a.test")
                self.assertNotRegex(out, r"New, TLSv1(\.1)?,", out)
                self.assertRegex(out, r"alert protocol version|Cipher is \(NONE\)|no protocols available",
                                 out)
        pxtest.wait_for(lambda: failures(self.plain, "protocol_version") >= before + 2, 5)
        # Ciphers outside the intermediate list: CBC, RSA key exchange, 3DES.
        before = failures(self.plain, "no_shared_cipher")
        for cipher in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES256-GCM-SHA384", "DES-CBC3-SHA"):
            with self.subTest(cipher=cipher):
                _, out = s_client(port, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0",
                                  "-servername", "b.test")
                self.assertNotIn("New, TLSv1.2", out)
        pxtest.wait_for(lambda: failures(self.plain, "no_shared_cipher") >= before + 3, 5)
        # TLS 1.3 suites outside the list.
        _, out = s_client(port, "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256")
        self.assertNotIn("New, TLSv1.3", out)

    def test_renegotiation_refused(self):
        self.start()
        # s_client renegotiates when it reads "R" on a line; the server refuses.
        _, out = s_client(self.tls_addr[1], "-tls1_2", "-servername", "a.test", input=b"R\n",
                          sleep_before_eof=1.0)
        self.assertIn("RENEGOTIATING", out)
        self.assertIn(":no renegotiation:", out)  # the server's no_renegotiation alert
        _, out2 = s_client(self.tls_addr[1], "-tls1_2", "-servername", "a.test")
        self.assertIn("Secure Renegotiation IS supported", out2)  # RFC 5746 extension only
        # The connection did not renegotiate: one handshake per client.
        m = metrics(self.plain)
        self.assertEqual(m['plexus_tls_handshakes_total{kind="full"}'], 2)

    def test_close_notify(self):
        self.start()
        ctx = client_context(self.pki.ca_crt)
        with socket.create_connection(self.tls_addr, timeout=scaled(10)) as raw:
            s = ctx.wrap_socket(raw, server_hostname="a.test")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)  # SSLEOFError if the server closed without close_notify
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)

    def test_bad_sni(self):
        self.start()
        _, out = s_client(self.tls_addr[1], "-servername", "bad name!")
        self.assertNotRegex(out, r"New, TLSv1\.[23]")
        pxtest.wait_for(lambda: failures(self.plain, "bad_sni") == 1, 5)


class Timeout(TlsCase):
    def test_silent_and_half_hello(self):
        # A --tls listener sniffs first (docs/one-port.md): a silent client is
        # the sniffer's to close (--sniff-timeout); half a ClientHello is
        # TLS's (--tls-handshake-timeout).
        self.start("--tls-handshake-timeout", "500ms", "--sniff-timeout", "500ms",
                   "--log-level", "debug")
        hello_start = bytes.fromhex("160301020001000200fc0303") + b"\x00" * 20  # 32 of 517 bytes
        socks = []
        t0 = time.monotonic()
        for first in (b"", hello_start):
            s = socket.create_connection(self.tls_addr, timeout=scaled(10))
            if first:
                s.sendall(first)
            socks.append(s)
        for s in socks:
            s.settimeout(scaled(10))
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            self.assertEqual(data, b"", "closed without an answer")
            s.close()
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 5)
        sniff_timeouts = lambda: metrics(self.plain).get(
            'plexus_sniff_closed_total{reason="timeout"}', 0)
        pxtest.wait_for(lambda: failures(self.plain, "timeout") == 1, 5)
        pxtest.wait_for(lambda: sniff_timeouts() == 1, 5)
        self.assertIn("handshake from 127.0.0.1", self.servers[0].log_since_start())
        # A client that connects and leaves is not a timeout of either.
        socket.create_connection(self.tls_addr).close()
        time.sleep(scaled(0.8))
        self.assertEqual(failures(self.plain, "timeout"), 1)
        self.assertEqual(sniff_timeouts(), 1)


class OnePort(TlsCase):
    """TLS and plain HTTP on one --tls listener (the sniffer, docs/one-port.md);
    the tls-redirect protocol itself is unit-tested (tests/unit/net/test_tls.c)."""

    def test_plain_http_and_tls_share_the_port(self):
        self.start()
        st, _, body, _ = https(self.tls_addr, "GET", "/healthz", ca=self.pki.ca_crt)
        self.assertEqual(st, 200)
        r = pxtest.http_request(self.tls_addr, "GET", "/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(failures(self.plain, "http_request"), 0)

    def test_tls_only_redirects(self):
        self.start("--tls-only")
        port = self.tls_addr[1]
        r = pxtest.http_request(self.tls_addr, "GET", "/a?b=1", headers={"Host": "a.test:%d" % port})
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("location"), "https://a.test:%d/a?b=1" % port)
        r = pxtest.http_request(self.tls_addr, "POST", "/api", headers={"Host": "a.test"}, body=b"{}")
        self.assertEqual(r.status, 400)
        self.assertEqual(json.loads(r.body)["error"], "tls_required")
        st, _, _, _ = https(self.tls_addr, "GET", "/healthz", ca=self.pki.ca_crt)
        self.assertEqual(st, 200)


class Clients(TlsCase):
    def test_curl_routes_static_and_api(self):
        static = os.path.join(self.out_dir, "www")
        os.makedirs(static)
        blob = os.urandom(3 << 20) + b"end"
        with open(os.path.join(static, "big.bin"), "wb") as f:
            f.write(blob)
        with open(os.path.join(static, "index.html"), "w") as f:
            f.write("<h1>hi</h1>")
        self.start("--static", static)
        self.assertEqual(json.loads(self.curl("/healthz")), {"status": "ok"})
        self.assertEqual(self.curl("/", sni="b.test"), b"<h1>hi</h1>")
        got = self.curl("/big.bin")
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(blob).hexdigest())
        self.assertEqual(self.curl("/big.bin", "-r", "1000-1999"), blob[1000:2000])
        # Many files over one keep-alive connection (curl reuses it).
        out = self.curl("/big.bin", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ",
                        "https://a.test:%d/index.html" % self.tls_addr[1])
        self.assertEqual(out.split(), [b"1", b"0"])
        # The hub's HTTP API.
        body = self.curl("/api/channels/tls-chan/messages", "-X", "POST", "-H",
                         "Content-Type: application/json", "--data", '{"hello":"tls"}')
        self.assertEqual(json.loads(body)["offset"], 1, body)
        hist = json.loads(self.curl("/api/channels/tls-chan/messages"))
        self.assertEqual([m["data"] for m in hist["messages"]], [{"hello": "tls"}], hist)

    def test_wss_with_deflate(self):
        import websockets

        self.start("--ws-deflate")
        port = self.tls_addr[1]
        ctx = client_context(self.pki.ca_crt, alpn=None)

        async def run():
            kw = dict(ssl=ctx, server_hostname="a.test", ping_interval=None,
                      compression="deflate", max_size=1 << 24)
            uri = "wss://127.0.0.1:%d/ws" % port
            sub = await websockets.connect(uri, **kw)
            pub = await websockets.connect(uri, **kw)
            try:
                ext = sub.response_headers.get("Sec-WebSocket-Extensions", "")
                self.assertIn("permessage-deflate", ext)
                for ws in (sub, pub):
                    self.assertEqual(json.loads(await ws.recv())["op"], "welcome")
                await sub.send(json.dumps({"op": "subscribe", "id": 1, "channel": "w"}))
                self.assertEqual(json.loads(await sub.recv())["op"], "reply")
                data = "x" * 5000 + "".join(chr(0x41 + i % 26) for i in range(3000))
                await pub.send(json.dumps({"op": "publish", "id": 2, "channel": "w", "data": data}))
                self.assertEqual(json.loads(await pub.recv())["op"], "reply")
                m = json.loads(await asyncio.wait_for(sub.recv(), scaled(10)))
                self.assertEqual((m["op"], m["data"]), ("message", data))
                big = "".join(chr(0x61 + (i * 7919) % 26) for i in range(60000))  # < --max-payload
                await pub.send(json.dumps({"op": "publish", "id": 3, "channel": "w", "data": big}))
                m = json.loads(await asyncio.wait_for(sub.recv(), scaled(10)))
                self.assertEqual(m["data"], big)
            finally:
                await sub.close()
                await pub.close()

        asyncio.run(asyncio.wait_for(run(), scaled(60)))


class Resumption(TlsCase):
    def resume(self, port, *args):
        """A full handshake saving the session, then one offering it: (first, second)
        output. Without a session to save, the second offers none."""
        sess = os.path.join(self.out_dir, "sess-%d" % time.monotonic_ns())
        _, first = s_client(port, "-servername", "a.test", "-sess_out", sess, *args,
                            sleep_before_eof=0.5)
        offer = ["-sess_in", sess] if os.path.exists(sess) else []
        _, second = s_client(port, "-servername", "a.test", *offer, *args, sleep_before_eof=0.5)
        return first, second

    def test_tickets_and_cache(self):
        self.start()
        port = self.tls_addr[1]
        for args in (("-tls1_3",), ("-tls1_2",), ("-tls1_2", "-no_ticket")):
            with self.subTest(args=args):
                first, second = self.resume(port, *args)
                self.assertRegex(first, r"New, TLSv1\.[23]")
                self.assertRegex(second, r"Reused, TLSv1\.[23]", second)
        m = metrics(self.plain)
        self.assertEqual(m['plexus_tls_handshakes_total{kind="resumed"}'], 3)
        self.assertEqual(m['plexus_tls_handshakes_total{kind="full"}'], 3)

    def test_resumption_off(self):
        self.start("--tls-ticket-rotation", "0", "--tls-session-cache", "0")
        port = self.tls_addr[1]
        for args in (("-tls1_3",), ("-tls1_2",)):
            first, second = self.resume(port, *args)
            self.assertRegex(second, r"New, TLSv1\.[23]", second)
        self.assertEqual(metrics(self.plain)['plexus_tls_handshakes_total{kind="resumed"}'], 0)

    def ticket_name(self, out):
        """The first 16 bytes of a TLS 1.2 ticket as s_client prints it: our key name."""
        m = re.search(r"TLS session ticket:\s*\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16})", out)
        self.assertIsNotNone(m, out)
        return m.group(1).replace(" ", "").replace("-", "")

    def test_ticket_key_rotation(self):
        self.start("--tls-ticket-rotation", "2s", "--tls-session-cache", "0")
        port = self.tls_addr[1]

        def full():
            _, out = s_client(port, "-tls1_2", "-servername", "a.test")
            return self.ticket_name(out)

        def wait_rotation(name):
            deadline = time.monotonic() + scaled(10)
            while time.monotonic() < deadline:
                n = full()
                if n != name:
                    return n
                time.sleep(0.1)
            self.fail("the ticket key was not rotated")

        k1 = wait_rotation(full())
        time.sleep(1.0)  # half an interval into the new key's life
        sess = os.path.join(self.out_dir, "sess")
        _, out = s_client(port, "-tls1_2", "-servername", "a.test", "-sess_out", sess)
        self.assertEqual(self.ticket_name(out), k1)
        wait_rotation(k1)
        # The previous key still opens the ticket (about 1 s old, lifetime 2 s);
        # the server renews it with the current key.
        _, out = s_client(port, "-tls1_2", "-servername", "a.test", "-sess_in", sess)
        self.assertIn("Reused, TLSv1.2", out)


class Ocsp(TlsCase):
    def test_staple(self):
        resp = self.pki.ocsp(self.ec[0])
        self.start("--tls-ocsp", resp)
        port = self.tls_addr[1]
        _, out = s_client(port, "-servername", "a.test", "-status")
        self.assertIn("OCSP Response Status: successful", out)
        self.assertIn("Cert Status: good", out)
        # The RSA certificate has no staple.
        _, out = s_client(port, "-servername", "b.test", "-status")
        self.assertIn("OCSP response: no response sent", out)
        # Verified by the client against the CA.
        p = subprocess.run(["openssl", "ocsp", "-respin", resp, "-CAfile", self.pki.ca_crt,
                            "-issuer", self.pki.ca_crt, "-cert", self.ec[0]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertIn(b"good", p.stdout)

    def test_no_staple_configured(self):
        self.start()
        _, out = s_client(self.tls_addr[1], "-servername", "a.test", "-status")
        self.assertIn("OCSP response: no response sent", out)


class Cli(TlsCase):
    def fails(self, *args, expect):
        p = pxtest.run_plexus(list(args) + ["--listen", "127.0.0.1:0"])
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        text = (p.stdout or "") + (p.stderr or "")
        for e in expect:
            self.assertRegex(text, e)
        return text

    def test_bad_files(self):
        d = self.out_dir
        garbage = os.path.join(d, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        enc = os.path.join(d, "enc.key")
        subprocess.run(["openssl", "pkey", "-in", self.ec[1], "-aes256", "-passout", "pass:x",
                        "-out", enc], check=True)
        missing = os.path.join(d, "missing.crt")
        self.fails("--tls", "--tls-cert", missing, "--tls-key", self.ec[1],
                   expect=[r"--tls-cert", re.escape(missing), "No such file"])
        self.fails("--tls", "--tls-cert", self.ec[0], "--tls-key", missing,
                   expect=[r"--tls-key", re.escape(missing)])
        self.fails("--tls", "--tls-cert", self.ec[0], "--tls-key", self.rsa[1],
                   expect=[r"--tls-key", "does not match"])
        self.fails("--tls", "--tls-cert", garbage, "--tls-key", self.ec[1],
                   expect=[r"--tls-cert", "garbage.pem", "no PEM"])
        self.fails("--tls", "--tls-cert", self.ec[0], "--tls-key", enc,
                   expect=[r"--tls-key", "encrypted"])
        self.fails("--tls", expect=[r"--tls", "needs a certificate"])
        self.fails("--tls", "--tls-cert", self.ec[0], expect=[r"--tls-cert and --tls-key", "pairs"])
        self.fails("--tls-only", expect=[r"--tls-only", "no listener uses TLS"])
        empty = os.path.join(d, "empty")
        os.makedirs(empty)
        self.fails("--tls", "--tls-dir", empty, expect=[r"--tls-dir", "no certificate found"])
        self.fails("--tls", "--tls-dir", missing, expect=[r"--tls-dir", "cannot open"])
        # A bad file in the directory is named, under --tls-dir.
        self.fails("--tls", "--tls-dir", d, expect=[r"--tls-dir", "garbage.pem", "no PEM"])
        other = self.pki.leaf("other", ["other.test"])
        resp = self.pki.ocsp(other[0])
        self.fails("--tls", "--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--tls-ocsp", resp,
                   expect=[r"--tls-ocsp", "none of the certificates"])
        self.fails("--tls", "--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--tls-ocsp",
                   garbage, expect=[r"--tls-ocsp", "not a DER OCSP response"])
        self.fails("--tls-ktls", "maybe", expect=[r"tls-ktls", "on\\|off"])

    def test_config_listener_objects(self):
        for listeners, expect in (
                ([{"addr": "127.0.0.1:0", "tls": True, "port": 1}], r"listen\[0\]: unknown key \"port\""),
                ([{"tls": True}], r"listen\[0\]: \"addr\" is missing"),
                (["127.0.0.1:0", {"addr": "127.0.0.1:0", "tls": "yes"}], r"listen\[1\]\.tls: expected true or false"),
                ([{"addr": "127.0.0.1:0", "tls-only": True}], r"tls-only.*does not use TLS"),
                ([{"addr": "127.0.0.1:0", "tls": True}], r"needs a certificate")):
            with self.subTest(listeners=listeners):
                cfg = write_config(self.out_dir, listeners)
                p = pxtest.run_plexus(["--config", cfg])
                self.assertEqual(p.returncode, 2)
                self.assertRegex(p.stdout + p.stderr, expect)

    def test_help(self):
        p = pxtest.run_plexus(["--help"])
        self.assertEqual(p.returncode, 0)
        for flag in ("--tls ", "--tls-cert FILE", "--tls-key FILE", "--tls-dir DIR", "--tls-ocsp FILE",
                     "--tls-only", "--tls-ticket-rotation", "--tls-session-cache", "--tls-ktls",
                     "--tls-handshake-timeout"):
            self.assertIn(flag, p.stdout)

    def test_directory_layouts(self):
        d = os.path.join(self.out_dir, "certs")
        os.makedirs(os.path.join(d, "live", "c.test"))
        os.makedirs(os.path.join(d, "flat"))
        crt, key = self.pki.leaf("d", ["d.test"], kind="ec")
        shutil.copy(crt, os.path.join(d, "flat", "d.crt"))
        shutil.copy(key, os.path.join(d, "flat", "d.key"))
        crt, key = self.pki.leaf("e", ["e.test"], kind="rsa")
        with open(os.path.join(d, "flat", "e.pem"), "w") as f:
            f.write(pathlib.Path(crt).read_text() + pathlib.Path(key).read_text())
        shutil.copy(self.pki.ocsp(crt), os.path.join(d, "flat", "e.ocsp"))
        crt, key = self.pki.leaf("c", ["c.test"], kind="ec")
        shutil.copy(crt, os.path.join(d, "live", "c.test", "fullchain.pem"))
        shutil.copy(key, os.path.join(d, "live", "c.test", "privkey.pem"))
        with open(os.path.join(d, "live", "README"), "w") as f:
            f.write("certbot leaves a README here\n")
        # Certificates from flags first (the default), then the directory.
        self.start_tls("--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--tls-dir",
                       os.path.join(d, "flat"), "--allow-anonymous")
        port = self.tls_addr[1]
        for sni, cn in (("d.test", "d.test"), ("e.test", "e.test"), ("zzz.test", "a.test")):
            _, out = s_client(port, "-servername", sni, "-status")
            self.assertEqual(subject_cn(out), cn, out)
        self.assertIn("Cert Status: good", s_client(port, "-servername", "e.test", "-status")[1])
        self.servers[0].stop()
        # certbot's live/ layout; the first directory entry is the default.
        self.start_tls("--tls-dir", os.path.join(d, "live"), "--allow-anonymous")
        _, out = s_client(self.tls_addr[1], "-servername", "c.test")
        self.assertEqual(subject_cn(out), "c.test")
        _, out = s_client(self.tls_addr[1], "-noservername")
        self.assertEqual(subject_cn(out), "c.test")
        # A NAME.crt without its NAME.key is an error naming both.
        pathlib.Path(d, "flat", "f.crt").write_text(pathlib.Path(crt).read_text())
        p = pxtest.run_plexus(["--tls", "--tls-dir", os.path.join(d, "flat"), "--listen",
                               "127.0.0.1:0"])
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr, r"--tls-dir.*f\.crt has no matching f\.key")


if __name__ == "__main__":
    pxtest.main()
