#!/usr/bin/python3
"""Open N TLS connections to 127.0.0.1:PORT, one HTTP/1.1 request each (kept
alive), print "ready" and hold them until stdin closes (bench/tls.sh measures
the server's RSS meanwhile). Usage: tls_idle.py PORT N [PATH]"""
import socket
import ssl
import sys

port, n = int(sys.argv[1]), int(sys.argv[2])
path = sys.argv[3] if len(sys.argv) > 3 else "/plaintext"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
socks = []
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="localhost")
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
    got = b""
    while b"Hello, World!" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection %d closed early" % i)
        got += chunk
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
