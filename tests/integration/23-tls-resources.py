#!/usr/bin/python3
"""23-tls-resources: what TLS connections cost, and zero-copy files.

  - 400 idle TLS connections (TLS 1.3 and 1.2, each after one request) cost
    at most 40 KiB of server RSS each (OpenSSL's record buffers are released
    while idle: SSL_MODE_RELEASE_BUFFERS); not measured under ASan.
  - Static files over TLS arrive intact whether the kernel encrypts
    (kTLS: SSL_sendfile) or not (pread + SSL_write). With the kernel's tls
    module (tcp_available_ulp lists "tls"), --tls-ktls on must use it and off
    must not; without it, the kTLS half is skipped and says so.

px-test: serial (measures RSS)

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/23-tls-resources.py -v
"""

import hashlib
import os
import socket
import ssl
import subprocess
import time

import pxtest
from pxtest import scaled
from tlsutil import Pki, TlsServerMixin, client_context, metrics

ASAN = "ASAN_OPTIONS" in os.environ
TSAN = "TSAN_OPTIONS" in os.environ


def kernel_tls():
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


class Resources(pxtest.PxTestCase, TlsServerMixin):
    @classmethod
    def setUpClass(cls):
        pxtest.PxTestCase.require_local_class("starts its own server")
        cls.pki = Pki(pxtest.class_out_dir(cls))
        cls.ec = cls.pki.leaf("ec", ["a.test"], kind="ec")

    def test_idle_connection_memory(self):
        # Under ASan freed memory waits in a 256 MiB quarantine and would count: a small one.
        env = {"ASAN_OPTIONS": os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=1"} if ASAN else {}
        srv = self.start_tls("--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--workers", "1",
                             "--allow-anonymous", env=env)
        n = 400
        ctxs = [client_context(self.pki.ca_crt)]
        c12 = client_context(self.pki.ca_crt)
        c12.maximum_version = ssl.TLSVersion.TLSv1_2
        ctxs.append(c12)

        def open_some(k):
            out = []
            for i in range(k):
                s = ctxs[i % 2].wrap_socket(socket.create_connection(self.tls_addr, timeout=scaled(10)),
                                            server_hostname="a.test")
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a.test\r\n\r\n")
                got = b""
                while b'"ok"}' not in got:
                    chunk = s.recv(4096)
                    self.assertTrue(chunk)
                    got += chunk
                out.append(s)
            return out

        warm = open_some(50)  # allocator pools, scratch buffers, first-use costs
        time.sleep(0.3)
        rss0 = srv.rss_kb()
        socks = open_some(n)
        time.sleep(0.5)
        rss1 = srv.rss_kb()
        per_conn = (rss1 - rss0) / n
        print("\nRSS per idle TLS connection: %.1f KiB (%d connections: %d kB -> %d kB)"
              % (per_conn, n, rss0, rss1))
        with open(os.path.join(self.out_dir, "rss.txt"), "w") as f:
            f.write("%.1f KiB per idle TLS connection\n" % per_conn)
        # All still usable.
        for s in socks[::37]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a.test\r\n\r\n")
            self.assertIn(b"200 OK", s.recv(4096))
        for s in socks + warm:
            s.close()
        # Under a sanitizer every allocation carries redzones and shadow memory (TSan's
        # shadow is several times the memory it covers): looser bounds, which still catch
        # record buffers kept while idle (32 KiB and more each, times the shadow).
        self.assertLessEqual(per_conn, 200.0 if TSAN else 120.0 if ASAN else 40.0)

    def static_over_tls(self, ktls):
        www = os.path.join(self.out_dir, "www-" + ktls)
        os.makedirs(www)
        blob = os.urandom((8 << 20) + 12345)
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.write(blob)
        srv = self.start_tls("--tls-cert", self.ec[0], "--tls-key", self.ec[1], "--static", www,
                             "--tls-ktls", ktls, "--allow-anonymous")
        port = self.tls_addr[1]
        for tls in ("1.2", "1.3"):
            p = subprocess.run(["curl", "-sS", "--max-time", str(scaled(60)), "--cacert",
                                self.pki.ca_crt, "--resolve", "a.test:%d:127.0.0.1" % port,
                                "--tlsv" + tls, "--tls-max", tls,
                                "https://a.test:%d/big.bin" % port], stdout=subprocess.PIPE)
            self.assertEqual(p.returncode, 0)
            self.assertEqual(hashlib.sha256(p.stdout).digest(), hashlib.sha256(blob).digest())
        used = metrics(self.plain)["plexus_tls_ktls_connections_total"]
        self.assertStopsCleanly(srv)
        return used

    def test_static_files_ktls_off(self):
        self.assertEqual(self.static_over_tls("off"), 0)

    def test_static_files_ktls_on(self):
        used = self.static_over_tls("on")
        if not kernel_tls():
            self.assertEqual(used, 0, "no kernel TLS here, so nothing may claim to use it")
            self.skip_allowed("no-ktls", "the kernel offers no TLS ULP (/proc/sys/net/ipv4/"
                              "tcp_available_ulp has no \"tls\"): files went through pread + SSL_write")
        self.assertGreaterEqual(used, 2, "both connections sent with kTLS")


if __name__ == "__main__":
    pxtest.main()
