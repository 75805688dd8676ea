#!/usr/bin/python3
"""The floor of a raw export over loopback HTTP: a do-nothing server that
answers every GET with the whole of one file, sent with sendfile(2) in 2 MiB
pieces as xapi's export loop does, and nothing else (no VHD lookups, no
tasks, no credentials), on a loopback TCP port and, if UNIX_PATH is given,
on that Unix socket too.  Prints its port, then serves until killed.

Usage: bench/storage/floor.py FILE [UNIX_PATH]
"""
import os
import select
import socket
import sys

path = sys.argv[1]
size = os.path.getsize(path)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
listeners = [ls]
if len(sys.argv) > 2:
    us = socket.socket(socket.AF_UNIX)
    us.bind(sys.argv[2])
    us.listen(8)
    listeners.append(us)
print(ls.getsockname()[1], flush=True)
while True:
    ready, _, _ = select.select(listeners, [], [])
    c, _ = ready[0].accept()
    head = b""
    while b"\r\n\r\n" not in head:
        b = c.recv(4096)
        if not b:
            break
        head += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n" % size)
    fd = os.open(path, os.O_RDONLY)
    off = 0
    try:
        while off < size:
            off += os.sendfile(c.fileno(), fd, off, min(size - off, 2 << 20))
    except OSError:
        pass
    os.close(fd)
    c.close()
