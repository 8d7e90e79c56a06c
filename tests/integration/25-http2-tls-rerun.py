#!/usr/bin/python3
"""25-http2-tls-rerun: the HTTP integration cases again, over HTTP/2 with TLS
(ALPN h2): every plexus they start gets `--tls` and a certificate from a test CA
made at test time; their HTTP requests and SSE streams go over TLS as h2, their
raw HTTP/1.1 bytes and WebSockets reach the same port through the sniffer. The
machinery, MODULES and NOT_H2 are in h2rerun.py (39-http2-rerun is the h2c run).

Run one module only: PX_H2_RERUN=51-hub-http /usr/bin/python3 25-http2-tls-rerun.py
"""

import os

import pxtest
import h2rerun
from h2rerun import load_tests  # noqa: F401  (unittest's hook)
from tlsutil import Pki

h2rerun.setup(Pki(os.path.join(pxtest.TEST_OUT, "25-http2-tls-rerun")))

if __name__ == "__main__":
    pxtest.main()
