#!/usr/bin/python3
"""21-tls-reload: certificates reloaded on SIGHUP under load, without dropping
anything.

A thread issues HTTPS requests in a loop (a new verified connection each, so
each request also shows which certificate new connections get) while the test
replaces the certificate files and sends SIGHUP: no request fails, new
connections see the new certificate, and a keep-alive connection opened
before the reload goes on working with the certificate it started with. Then
a broken certificate, and a key that does not match: the reload fails with a
log line saying why, and the server keeps serving the previous certificate.
Tickets issued before a reload still resume after it (the ticket keys are
kept).

    PX_BUILD_DIR=build/release /usr/bin/python3 tests/integration/21-tls-reload.py -v
"""

import http.client
import os
import shutil
import signal
import socket
import threading

import pxtest
from pxtest import scaled
from tlsutil import Pki, TlsServerMixin, cert_serial, client_context, https, metrics, s_client


class Reload(pxtest.PxTestCase, TlsServerMixin):
    @classmethod
    def setUpClass(cls):
        pxtest.PxTestCase.require_local_class("needs its own server (signals)")
        cls.pki = Pki(pxtest.class_out_dir(cls))
        cls.old = cls.pki.leaf("old", ["a.test"], kind="ec")
        cls.new = cls.pki.leaf("new", ["a.test"], kind="ec")
        cls.other = cls.pki.leaf("other", ["a.test"], kind="ec")

    def install(self, pair):
        """Replace the served files (each by a rename, as certbot's symlinks change)."""
        for src, dst in zip(pair, (self.crt, self.key)):
            shutil.copy(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)

    def serial_of(self, pair):
        with open(pair[0], "rb"):
            pass
        return self.pki.serial(pair[0])

    def new_conn_serial(self):
        st, _, _, der = https(self.tls_addr, "GET", "/healthz", ca=self.pki.ca_crt)
        self.assertEqual(st, 200)
        return cert_serial(der)

    def test_sighup_under_load(self):
        self.crt = os.path.join(self.out_dir, "served.crt")
        self.key = os.path.join(self.out_dir, "served.key")
        self.install(self.old)
        srv = self.start_tls("--tls-cert", self.crt, "--tls-key", self.key, "--workers", "2",
                             "--allow-anonymous")
        s_old, s_new = self.serial_of(self.old), self.serial_of(self.new)
        self.assertEqual(self.new_conn_serial(), s_old)

        # A keep-alive connection from before the reload, and a TLS 1.2 ticket.
        ctx = client_context(self.pki.ca_crt)
        keep = ctx.wrap_socket(socket.create_connection(self.tls_addr, timeout=scaled(10)),
                               server_hostname="a.test")
        kconn = http.client.HTTPConnection("a.test", self.tls_addr[1], timeout=scaled(10))
        kconn.sock = keep

        def keep_alive_request():
            kconn.request("GET", "/healthz")
            r = kconn.getresponse()
            r.read()
            return r.status

        self.assertEqual(keep_alive_request(), 200)
        sess = os.path.join(self.out_dir, "sess")
        s_client(self.tls_addr[1], "-tls1_2", "-servername", "a.test", "-sess_out", sess)

        seen, errors, stop = [], [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    seen.append(self.new_conn_serial())
                except Exception as e:  # every failure is a test failure
                    errors.append(repr(e))

        t = threading.Thread(target=load)
        t.start()
        try:
            pxtest.wait_for(lambda: len(seen) >= 20, 20)
            self.install(self.new)
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log(r"TLS: 1 certificate\(s\) reloaded", timeout=10)
            n = len(seen)
            pxtest.wait_for(lambda: len(seen) >= n + 20, 20)
            self.assertEqual(seen[-1], s_new, "new connections get the new certificate")
            self.assertEqual(keep_alive_request(), 200, "an open connection survives the reload")
            self.assertEqual(cert_serial(keep.getpeercert(binary_form=True)), s_old)

            # A broken certificate: the reload fails and says why; nothing changes.
            with open(self.crt + ".tmp", "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
            os.replace(self.crt + ".tmp", self.crt)
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log(r"TLS: reload failed, keeping the current certificates: certificate file "
                         r".*served\.crt", timeout=10)
            # A valid certificate with the wrong key.
            self.install((self.other[0], self.new[1]))
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log(r"reload failed.*does not match", timeout=10)
            n = len(seen)
            pxtest.wait_for(lambda: len(seen) >= n + 20, 20)
        finally:
            stop.set()
            t.join(scaled(30))
        self.assertEqual(errors, [], "no request failed across the reloads")
        self.assertEqual(seen[-1], s_new, "a failed reload keeps the last good certificate")
        self.assertEqual(set(seen), {s_old, s_new})
        i = seen.index(s_new)
        self.assertNotIn(s_old, seen[i:], "once switched, new connections stay on the new one")
        self.assertEqual(keep_alive_request(), 200)
        keep.close()
        # The ticket from before the reloads still resumes.
        _, out = s_client(self.tls_addr[1], "-tls1_2", "-servername", "a.test", "-sess_in", sess)
        self.assertIn("Reused, TLSv1.2", out)
        self.assertGreater(metrics(self.plain)['plexus_tls_handshakes_total{kind="full"}'], 40)
        self.assertStopsCleanly(srv)


if __name__ == "__main__":
    pxtest.main()
