#!/usr/bin/python3
"""Pass-through to real servers on plexus's shared port (issue 12):

- a real OpenSSH sshd (Debian openssh-server) on a loopback port, with its own
  host key, client key and config in the test's output directory (it never
  touches the system's sshd): `ssh -p PORT` runs a command through plexus, and
  `scp` copies 50 MB up and back (checksums equal) while the same port keeps
  answering HTTP requests;
- TLS passed through by SNI, without terminating it, to `openssl s_server`
  with a test certificate: the client's handshake completes with that
  server's certificate (verified against it), and a name no rule claims is
  closed (no TLS on this listener).

HTTPS and WSS on the same port come with the TLS merge (the lead's
integration of branches i12tls and i12sniff).
"""

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pxtest
from pxtest import PxTestCase, scaled, wait_for

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=scaled(timeout), **kw)


class Sshd:
    """sshd -D on 127.0.0.1:PORT with everything under `d`; stopped by PID."""

    def __init__(self, d):
        self.d = d
        self.host_key = os.path.join(d, "ssh_host_ed25519_key")
        self.client_key = os.path.join(d, "client_key")
        for k in (self.host_key, self.client_key):
            if not os.path.exists(k):
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k]).check_returncode()
        shutil.copy(self.client_key + ".pub", os.path.join(d, "authorized_keys"))
        if os.geteuid() == 0:
            # sshd started as root needs its privilege separation directory (the
            # Debian service creates it at boot; an empty root-owned directory).
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc = None
        for _ in range(5):
            self.port = pxtest.free_port()
            cfg = os.path.join(d, "sshd_config")
            with open(cfg, "w") as f:
                f.write("\n".join([
                    "Port %d" % self.port, "ListenAddress 127.0.0.1",
                    "HostKey " + self.host_key, "PidFile " + os.path.join(d, "sshd.pid"),
                    "AuthorizedKeysFile " + os.path.join(d, "authorized_keys"),
                    "StrictModes no", "UsePAM no", "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password", "Subsystem sftp " + SFTP_SERVER,
                    "LogLevel VERBOSE", ""]))
            self.log_path = os.path.join(d, "sshd.log")
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", cfg], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = time.monotonic() + scaled(10)
            while time.monotonic() < deadline and self.proc.poll() is None:
                if b"Server listening" in read_bytes(self.log_path):
                    return
                time.sleep(0.02)
            self.stop()
            if b"Address already in use" not in read_bytes(self.log_path):
                break
        raise AssertionError("sshd did not start:\n" + read_bytes(self.log_path).decode())

    def ssh_opts(self):
        return ["-i", self.client_key, "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=%d" % int(scaled(10))]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # by PID: only the sshd this test started
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RealSsh(PxTestCase):
    def test_ssh_command_and_scp_50mb_while_serving_http(self):
        d = self.short_dir()
        sshd = Sshd(d)
        self.addCleanup(sshd.stop)
        srv = self.start_server("--workers", "2", "--data-dir", "var",
                                "--forward", "ssh=127.0.0.1:%d" % sshd.port)
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        dest = "%s@127.0.0.1" % user
        r = run(["ssh"] + sshd.ssh_opts() + ["-p", str(srv.port), dest, "echo through-$((6*7))"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "through-42")

        src = os.path.join(d, "big.bin")
        with open(src, "wb") as f:
            for _ in range(50):
                f.write(os.urandom(1 << 20))
        up = os.path.join(d, "uploaded.bin")
        back = os.path.join(d, "downloaded.bin")

        # HTTP on the same port, all the while.
        stop = threading.Event()
        answers = []

        def http_loop():
            while not stop.is_set():
                answers.append(pxtest.http_request(srv.addr, "GET", "/healthz").status)
                time.sleep(0.02)

        t = threading.Thread(target=http_loop)
        t.start()
        try:
            scp = ["scp", "-q", "-P", str(srv.port)] + sshd.ssh_opts()
            r = run(scp + [src, "%s:%s" % (dest, up)], timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = run(scp + ["%s:%s" % (dest, up), back], timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            stop.set()
            t.join()
        want = sha256_file(src)
        self.assertEqual(sha256_file(up), want)
        self.assertEqual(sha256_file(back), want)
        self.assertTrue(answers)
        self.assertEqual(set(answers), {200})
        r = srv.http("GET", "/metrics").body.decode()
        sent = [l for l in r.splitlines()
                if l.startswith('plexus_forward_bytes_total{rule="ssh",direction="in"}')]
        self.assertEqual(len(sent), 1)
        self.assertGreater(int(sent[0].split()[-1]), 50 << 20)
        wait_for(lambda: 'plexus_forward_connections_open{rule="ssh"} 0' in
                 srv.http("GET", "/metrics").body.decode(), 10,
                 what="every ssh connection to be closed")
        self.assertStopsCleanly(srv)


class TlsBySni(PxTestCase):
    def test_tls_passed_through_by_sni(self):
        d = self.short_dir()
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", "/CN=git.example.com", "-addext",
             "subjectAltName=DNS:git.example.com"]).check_returncode()
        port = pxtest.free_port()
        log = open(os.path.join(d, "s_server.log"), "wb")
        server = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert",
                                   cert, "-key", key, "-www", "-quiet"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)
        wait_for(lambda: self._listening(port), 10, what="openssl s_server")

        srv = self.start_server("--workers", "1", "--data-dir", "var",
                                "--forward", "tls-sni:git.example.com=127.0.0.1:%d" % port)
        ctx = ssl.create_default_context(cafile=cert)
        with socket.create_connection(srv.addr, timeout=scaled(10)) as raw:
            with ctx.wrap_socket(raw, server_hostname="git.example.com") as s:
                # Verified against s_server's own certificate: plexus did not terminate.
                subject = dict(x[0] for x in s.getpeercert()["subject"])
                self.assertEqual(subject["commonName"], "git.example.com")
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                body = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.assertTrue(body.startswith(b"HTTP/1.0 200 ok"), body[:100])
        r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, "-servername",
                 "git.example.com", "-CAfile", cert, "-verify_return_error", "-brief"],
                timeout=20, input=None)
        self.assertIn("Verification: OK", r.stdout + r.stderr)
        # A name no rule claims, and no TLS on this listener: closed.
        ctx2 = ssl.create_default_context(cafile=cert)
        ctx2.check_hostname = False
        with socket.create_connection(srv.addr, timeout=scaled(10)) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
                ctx2.wrap_socket(raw, server_hostname="other.example.com")
        m = srv.http("GET", "/metrics").body.decode()
        self.assertIn('plexus_forward_connections_total{rule="tls-sni:git.example.com"} 2', m)
        self.assertIn('plexus_sniff_closed_total{reason="no_tls"} 1', m)

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False


if __name__ == "__main__":
    pxtest.main()
