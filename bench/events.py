#!/usr/bin/python3
"""event.from benchmarks (issue 3, item 9).

1. Latency from a write's acknowledgement to the waiting event.from calls
   returning, with 1, 10 and 100 watchers (coalescing delay 0): median, p99.
   Negative values mean the event reached the watcher before the writer had
   its acknowledgement (both leave the daemon at about the same time).
2. 100 watchers while writers keep up 1,000 writes/s on 20 VMs for a while:
   every watcher must converge on the final state of every VM; the daemon's
   CPU time (utime+stime from /proc/<pid>/stat) per delivered event.

Usage: bench/events.py [--bin build/src/xapi/xapi] [--seconds 10] [--delay 0]
"""
import argparse
import http.client
import json
import multiprocessing
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from conftest import MIN_VM  # noqa: E402


def req_bytes(method, params):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    return (b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


class Client:
    """A blocking keep-alive JSON-RPC client."""

    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, method, *params):
        self.c.request("POST", "/jsonrpc", json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}),
            {"Content-Type": "application/json"})
        r = json.loads(self.c.getresponse().read())
        if "error" in r:
            raise RuntimeError(r["error"])
        return r["result"]


class Watcher:
    """One non-blocking event.from loop on its own connection."""

    def __init__(self, port, session, classes, token):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session, self.classes, self.token = session, classes, token
        self.buf = b""
        self.state = {}
        self.events = 0

    def send(self):
        self.s.setblocking(True)
        self.s.sendall(req_bytes("event.from", [self.session, self.classes, self.token, 60.0]))
        self.s.setblocking(False)

    def feed(self):
        """Read what is there; the reply's body once complete, else None."""
        try:
            data = self.s.recv(1 << 20)
        except BlockingIOError:
            return None
        if not data:
            raise RuntimeError("connection closed")
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return None
        m = re.search(rb"content-length: *(\d+)", head, re.I)
        n = int(m.group(1))
        if len(body) < n:
            return None
        self.buf = body[n:]
        return body[:n]

    def apply(self, body):
        r = json.loads(body)["result"]
        self.token = r["token"]
        for e in r["events"]:
            self.events += 1
            if e["operation"] != "del":
                self.state[e["ref"]] = e["snapshot"]["name_label"]
        return r


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        p = f.read().rsplit(")", 1)[1].split()
    return (int(p[11]) + int(p[12])) / os.sysconf("SC_CLK_TCK")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def latency(x, nwatch, writes):
    cl = Client(x.http_port)
    s = cl.call("session.login_with_password", "root", x.password)
    vm = cl.call("VM.create", s, dict(MIN_VM, name_label="lat"))
    tok = cl.call("event.from", s, ["vm"], "", 0.0)["token"]
    ws = [Watcher(x.http_port, s, ["vm/" + vm], tok) for _ in range(nwatch)]
    sel = selectors.DefaultSelector()
    for w in ws:
        w.send()
        sel.register(w.s, selectors.EVENT_READ, w)
    time.sleep(0.2)
    lat = []
    for i in range(writes):
        t_ack = None
        arrived = {}
        cl.call("VM.set_name_label", s, vm, "lat-%d" % i)
        t_ack = time.perf_counter()
        while len(arrived) < nwatch:
            for key, _ in sel.select(5):
                w = key.data
                body = w.feed()
                if body is not None:
                    arrived[w] = (time.perf_counter(), body)
        for w, (t, body) in arrived.items():
            r = w.apply(body)
            assert w.state.get(vm) == "lat-%d" % i, (w.state.get(vm), i)
            lat.append((t - t_ack) * 1000.0)
        for w in ws:
            w.send()
    for w in ws:
        w.s.close()
    return statistics.median(lat), pct(lat, 0.99)


def writer_proc(port, password, vms, rate, seconds, nthreads, out):
    cls = [Client(port) for _ in range(nthreads)]
    s = cls[0].call("session.login_with_password", "root", password)
    final = {}
    lock = threading.Lock()
    count = [0]

    def run(k):
        c = cls[k]
        per = rate / nthreads
        t0 = time.perf_counter()
        i = 0
        while True:
            due = t0 + i / per
            now = time.perf_counter()
            if now - t0 > seconds:
                break
            if due > now:
                time.sleep(due - now)
            vm = vms[(i * nthreads + k) % len(vms)]
            name = "w%d-%d" % (k, i)
            c.call("VM.set_name_label", s, vm, name)
            with lock:
                final[vm] = name   # the last acknowledged write per VM wins below
                count[0] += 1
            i += 1

    # each VM is written by one thread only, so "last ack" is the final state
    ths = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    out.put((count[0], final))


def churn(x, nwatch, rate, seconds, nvms=20, procs=4, threads=5):
    cl = Client(x.http_port)
    s = cl.call("session.login_with_password", "root", x.password)
    vms = [cl.call("VM.create", s, dict(MIN_VM, name_label="c%d" % i)) for i in range(nvms)]
    r = cl.call("event.from", s, ["vm"], "", 0.0)
    ws = [Watcher(x.http_port, s, ["vm"], "") for _ in range(nwatch)]
    sel = selectors.DefaultSelector()
    for w in ws:
        w.send()
        sel.register(w.s, selectors.EVENT_READ, w)
    # partition the VMs between writer threads (each VM has one writer)
    total_threads = procs * threads
    q = multiprocessing.Queue()
    ps = []
    per = max(1, nvms // total_threads)
    for p in range(procs):
        mine = vms[p * (nvms // procs):(p + 1) * (nvms // procs)]
        ps.append(multiprocessing.Process(target=writer_proc, args=(
            x.http_port, x.password, mine, rate / procs, seconds, threads, q)))
    cpu0 = cpu_s(x.proc.pid)
    t0 = time.time()
    for p in ps:
        p.start()
    done = 0
    results = []
    final = {}
    converged_at = None
    while True:
        for key, _ in sel.select(0.2):
            w = key.data
            body = w.feed()
            if body is not None:
                w.apply(body)
                w.send()
        while not q.empty():
            n, f = q.get()
            results.append(n)
            final.update(f)
        if len(results) == procs:
            if all(all(w.state.get(v) == final[v] for v in final) for w in ws):
                converged_at = time.time()
                break
            if time.time() - t0 > seconds + 30:
                break
    for p in ps:
        p.join()
    cpu = cpu_s(x.proc.pid) - cpu0
    delivered = sum(w.events for w in ws)
    writes = sum(results)
    ok = converged_at is not None
    for w in ws:
        w.s.close()
    return {"writes": writes, "writes_per_s": writes / seconds, "delivered_events": delivered,
            "converged": ok, "converge_after_writers_s": (converged_at - t0 - seconds) if ok else None,
            "daemon_cpu_s": cpu, "cpu_us_per_event": cpu / max(1, delivered) * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "src", "xapi", "xapi"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--writes", type=int, default=200)
    args = ap.parse_args()
    os.environ["XAPI_BIN"] = args.bin
    import conftest
    conftest.XAPI_BIN = args.bin
    from conftest import Xapi, PASSWORD

    def daemon(delay):
        d = tempfile.mkdtemp(prefix="cxapi-bench-")
        x = Xapi(d, ["--event-delay-ms", str(delay), "--log-level", "warn"])
        x.password = PASSWORD
        x.dir = d
        return x

    def done(x):
        x.stop()
        subprocess.run(["rm", "-rf", x.dir])

    x = daemon(0)
    try:
        print("write-ack -> event.from return, delay 0 (ms):")
        for n in (1, 10, 100):
            med, p99 = latency(x, n, args.writes if n < 100 else max(50, args.writes // 4))
            print("  %3d watchers: median %.3f  p99 %.3f" % (n, med, p99))
    finally:
        done(x)
    for delay in (0, 50):
        x = daemon(delay)
        try:
            r = churn(x, 100, args.rate, args.seconds)
            print("100 watchers, %.0f writes/s target for %.0f s, delay %d ms:" % (args.rate, args.seconds, delay))
            print("  " + json.dumps(r))
        finally:
            done(x)


if __name__ == "__main__":
    main()
