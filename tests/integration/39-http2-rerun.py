#!/usr/bin/python3
"""39-http2-rerun: the HTTP integration cases again, over HTTP/2 (h2c).

The machinery and the list of files (MODULES) and exceptions (NOT_H2) are in
h2rerun.py; 25-http2-tls-rerun runs the same cases over h2 with TLS.

Run one module only: PX_H2_RERUN=51-hub-http /usr/bin/python3 39-http2-rerun.py
"""

import pxtest
import h2rerun
from h2rerun import load_tests  # noqa: F401  (unittest's hook)

h2rerun.setup()

if __name__ == "__main__":
    pxtest.main()
