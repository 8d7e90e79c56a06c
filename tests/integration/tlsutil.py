"""Helpers for the TLS tests (not a test itself): a test PKI made with the
openssl command at test time, HTTPS and s_client clients, and a server case
whose plexus has a TLS listener and a plain one (for /metrics).

    pki = Pki(out_dir)                       # CA + leaf certificates, on demand
    crt, key = pki.leaf("ec", ["a.test", "*.wild.test"], kind="ec")
    resp = pki.ocsp(crt)                     # a DER OCSP response ("good")
    spki = pki.spki_sha256(crt)              # base64, for Chromium's SPKI list
"""

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import time

import pxtest
from pxtest import scaled

OPENSSL = "openssl"


def run(args, cwd=None, input=None, timeout=60):
    p = subprocess.run(args, cwd=cwd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=scaled(timeout))
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                       p.stdout.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


class Pki:
    """A certificate authority and leaf certificates in `out_dir`."""

    def __init__(self, out_dir):
        self.dir = os.path.join(out_dir, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.ca_key = self.path("ca.key")
        self.ca_crt = self.path("ca.crt")
        self.index = self.path("index.txt")
        if not os.path.exists(self.ca_crt):
            run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key,
                 "-out", self.ca_crt, "-days", "30", "-subj", "/CN=plexus test CA",
                 "-addext", "basicConstraints=critical,CA:true",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            open(self.index, "w").close()

    def path(self, name):
        return os.path.join(self.dir, name)

    def key(self, name, kind):
        """A new private key: kind "ec" (P-256) or "rsa" (2048 bits)."""
        k = self.path(name + ".key")
        if kind == "ec":
            run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", k])
        else:
            run([OPENSSL, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", k])
        return k

    def leaf(self, name, dns, kind="ec", key=None, days=30):
        """A certificate for `dns` names (CN = the first) signed by the CA;
        returns (cert path, key path). A fresh random serial each time."""
        key = key or self.key(name, kind)
        csr, crt, ext = self.path(name + ".csr"), self.path(name + ".crt"), self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % ",".join("DNS:" + d for d in dns))
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
            f.write("extendedKeyUsage=serverAuth\n")
        run([OPENSSL, "req", "-new", "-key", key, "-subj", "/CN=" + dns[0], "-out", csr])
        serial = "0x" + secrets.token_hex(8)
        run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca_crt, "-CAkey", self.ca_key,
             "-set_serial", serial, "-days", str(days), "-extfile", ext, "-out", crt])
        return crt, key

    def serial(self, crt):
        out = run([OPENSSL, "x509", "-in", crt, "-noout", "-serial"])
        return out.strip().split("=", 1)[1]

    def ocsp(self, crt, status="V"):
        """A DER OCSP response about `crt` from the CA (status V good, R revoked)."""
        serial = self.serial(crt)
        subject = run([OPENSSL, "x509", "-in", crt, "-noout", "-subject", "-nameopt",
                       "compat"]).strip().split("=", 1)[1].strip()
        with open(self.index, "a") as f:
            revoked = "250101000000Z" if status == "R" else ""
            f.write("%s\t301231235959Z\t%s\t%s\tunknown\t%s\n" % (status, revoked, serial, subject))
        base = os.path.splitext(crt)[0]
        req, resp = base + ".ocspreq", base + ".ocsp.der"
        run([OPENSSL, "ocsp", "-issuer", self.ca_crt, "-cert", crt, "-no_nonce", "-reqout", req])
        run([OPENSSL, "ocsp", "-index", self.index, "-rsigner", self.ca_crt, "-rkey", self.ca_key,
             "-CA", self.ca_crt, "-reqin", req, "-respout", resp, "-ndays", "1"])
        return resp

    def spki_sha256(self, crt):
        """base64(SHA-256(SubjectPublicKeyInfo)): Chromium's
        --ignore-certificate-errors-spki-list takes it."""
        pub = subprocess.run([OPENSSL, "x509", "-in", crt, "-noout", "-pubkey"],
                             stdout=subprocess.PIPE, check=True).stdout
        der = subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"], input=pub,
                             stdout=subprocess.PIPE, check=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


# ---- clients ----------------------------------------------------------------------------


def client_context(ca=None, alpn=("http/1.1",)):
    """A TLS client context trusting `ca` (None: no verification)."""
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def https(addr, method="GET", path="/", sni="a.test", ca=None, body=None, headers=None,
          timeout=10.0, ctx=None):
    """One HTTPS request on a new connection to `addr`, with `sni` as server
    name and Host; returns (status, headers dict, body, the server's DER cert)."""
    ctx = ctx or client_context(ca)
    sock = socket.create_connection(addr, timeout=scaled(timeout))
    tls = ctx.wrap_socket(sock, server_hostname=sni)
    conn = http.client.HTTPConnection(sni, addr[1], timeout=scaled(timeout))
    conn.sock = tls
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        der = tls.getpeercert(binary_form=True)
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, der
    finally:
        conn.close()


def s_client(port, *args, input=b"", timeout=20.0, sleep_before_eof=0.0):
    """openssl s_client to 127.0.0.1:port with `args`; returns (exit code, output).
    `sleep_before_eof` keeps stdin open that long (TLS 1.3 tickets arrive after
    the handshake)."""
    cmd = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        if input:
            p.stdin.write(input)
            p.stdin.flush()
        if sleep_before_eof:
            time.sleep(sleep_before_eof)
        out, _ = p.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("s_client %s timed out:\n%s" % (args, out.decode(errors="replace")))
    return p.returncode, out.decode(errors="replace")


def subject_cn(s_client_output):
    m = re.search(r"^subject=.*?CN ?= ?([^,\n/]+)", s_client_output, re.M)
    return m.group(1).strip() if m else None


def cert_cn(der):
    """The CN of a DER certificate (through the openssl command)."""
    out = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-subject", "-nameopt",
                          "compat"], input=der, stdout=subprocess.PIPE, check=True).stdout.decode()
    m = re.search(r"CN ?= ?([^,/\n]+)", out)
    return m.group(1).strip() if m else None


def cert_serial(der):
    out = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return out.strip().split("=", 1)[1]


def metrics(plain_addr):
    """/metrics over the plain listener: {'name{labels}': value}."""
    r = pxtest.http_request(plain_addr, "GET", "/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def failures(plain_addr, reason):
    return metrics(plain_addr).get('plexus_tls_handshake_failures_total{reason="%s"}' % reason, 0)


def write_config(out_dir, listeners, **extra):
    """A --config file whose "listen" array is `listeners` (strings or objects)."""
    path = os.path.join(out_dir, "plexus.json")
    cfg = dict(extra)
    cfg["listen"] = listeners
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


class TlsServerMixin:
    """start_tls(*args): plexus with a TLS listener (first) and a plain one
    (second, for /metrics) from a config file; sets self.tls_addr, self.plain."""

    def start_tls(self, *args, listeners=None, **kw):
        listeners = listeners or [{"addr": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"]
        cfg = write_config(self.out_dir, listeners)
        srv = self.start_server("--config", cfg, *args, listen=(),
                                expect_listeners=len(listeners), **kw)
        addrs = [pxtest.parse_address(a) for a in srv.listeners]
        self.tls_addr = addrs[0]
        self.plain = addrs[1] if len(addrs) > 1 else None
        return srv
