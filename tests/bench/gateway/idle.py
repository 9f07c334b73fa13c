#!/usr/bin/env python3
"""Holds N keep-alive connections to host:port open and nearly idle (one GET /health each every
15 s, under the gateway's idle timeout), so a benchmark runs with many idle clients besides the
active ones. Usage: idle.py host port n. Runs until killed."""
import selectors
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
req = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
socks = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
print(f"idle.py: {len(socks)} connections open", flush=True)
last = 0.0
while True:
    now = time.monotonic()
    if now - last >= 15:
        for s in socks:
            try:
                s.send(req)
            except OSError:
                pass
        last = now
    for key, _ in sel.select(timeout=1):
        try:
            if not key.fileobj.recv(65536):
                sel.unregister(key.fileobj)
        except OSError:
            sel.unregister(key.fileobj)
