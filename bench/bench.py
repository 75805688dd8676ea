#!/usr/bin/python3
"""cxapi benchmarks: the figures of issue 2, printed as a Markdown table.

Starts its own xapi (sim backend) on a temporary state directory, seeds it,
drives it with wrk (Lua scripts for JSON-RPC and XML-RPC) and with raw
sockets, and stops it.  Usage: bench/bench.py [--xapi build/src/xapi/xapi]
[--vms 10000] [--duration 10]
"""
import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchlib import free_port, stop_xapi  # noqa: E402

PW = "bench-pw"


class Daemon:
    def __init__(self, xapi, state):
        self.xapi, self.state = xapi, state

    def start(self):
        self.port = free_port()
        t0 = time.time()
        self.proc = subprocess.Popen([self.xapi, "--config=", "--state-dir", self.state, "--bind", "127.0.0.1",
                                      "--http-port", str(self.port), "--https-port", "0", "--unix-socket", "none",
                                      "--root-password", PW, "--log-level", "warn"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.state, "log"), "ab"))
        while True:
            try:
                self.call("session.login_with_password", "root", PW)
                break
            except OSError:
                if self.proc.poll() is not None:
                    sys.exit("xapi exited")
                time.sleep(0.002)
        return time.time() - t0

    def stop(self):
        stop_xapi(self.proc, self.state)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def call(self, method, *params):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                                                  "id": 1}), {"Content-Type": "application/json"})
        rep = json.loads(c.getresponse().read())
        c.close()
        if "error" in rep:
            raise RuntimeError(rep["error"])
        return rep["result"]


VM = {"name_label": "bench", "name_description": "", "user_version": 1, "is_a_template": False,
      "affinity": "OpaqueRef:NULL", "memory_static_max": 1 << 30, "memory_dynamic_max": 1 << 30,
      "memory_dynamic_min": 1 << 29, "memory_static_min": 1 << 28, "VCPUs_params": {}, "VCPUs_max": 1,
      "VCPUs_at_startup": 1, "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
      "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
      "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
      "HVM_boot_params": {"order": "cdn"}, "platform": {"acpi": "1", "apic": "true", "pae": "true"},
      "PCI_bus": "", "other_config": {"bench": "yes"}, "recommendations": ""}


def seed(d, s, n):
    """Create n VMs with 16 concurrent clients; returns the refs."""
    refs = []
    lock = threading.Lock()

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        mine = []
        for i in range(k, n, 16):
            c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "VM.create",
                                                      "params": [s, dict(VM, name_label="bench-%d" % i)],
                                                      "id": i}), {"Content-Type": "application/json"})
            mine.append(json.loads(c.getresponse().read())["result"])
        with lock:
            refs.extend(mine)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return refs


def wrk(port, conns, duration, path, body=None, bodies_file=None):
    env = dict(os.environ, BENCH_PATH=path, BENCH_BODY=body or "", BENCH_BODIES_FILE=bodies_file or "")
    out = subprocess.run(["wrk", "-t", "2" if conns > 1 else "1", "-c", str(conns), "-d", "%ds" % duration,
                          "-s", os.path.join(HERE, "rpc.lua"), "http://127.0.0.1:%d" % port],
                         env=env, capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit("wrk saw errors:\n" + out)
    return float(m.group(1)) if m else 0.0


def xml_body(method, *params):
    return ("<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>%s</params></methodCall>"
            % (method, "".join("<param><value>%s</value></param>" % p for p in params)))


def json_body(method, *params):
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})


def time_get_all_records(port, s, runs=7):
    body = json_body("VM.get_all_records", s).encode()
    req = (b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(body)) + body
    times, size = [], 0
    for _ in range(runs):
        sock = socket.create_connection(("127.0.0.1", port))
        t0 = time.perf_counter()
        sock.sendall(req)
        buf = bytearray(64 << 20)
        view = memoryview(buf)
        got = 0
        need = None
        while True:
            n = sock.recv_into(view[got:])
            if not n:
                break
            got += n
            if need is None:
                end = buf.find(b"\r\n\r\n", 0, got)
                if end >= 0:
                    head = bytes(buf[:end])
                    need = end + 4 + int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            if need is not None and got >= need:
                break
        times.append(time.perf_counter() - t0)
        size = got
        sock.close()
    return statistics.median(times) * 1000, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xapi", default=os.path.join(ROOT, "build", "src", "xapi", "xapi"))
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--duration", type=int, default=10)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxapi-bench-") as st:
        d = Daemon(a.xapi, st)
        d.start()
        time.sleep(1)
        rows.append(("idle RSS, fresh host", "%.1f MB" % (d.rss_kib() / 1024), "<= 20 MB"))
        s = d.call("session.login_with_password", "root", PW)
        t0 = time.time()
        refs = seed(d, s, a.vms)
        dt = time.time() - t0
        rows.append(("seed: durable VM.create, 16 clients", "%.0f /s" % (a.vms / dt), ""))
        vm = refs[0]
        for proto, path, body in (("JSON-RPC", "/jsonrpc", json_body("VM.get_record", s, vm)),
                                  ("XML-RPC", "/", xml_body("VM.get_record", s, vm))):
            for conns in (1, 16):
                r = wrk(d.port, conns, a.duration, path, body)
                goal = {("JSON-RPC", 16): ">= 30000 /s", ("XML-RPC", 16): ">= 20000 /s"}.get((proto, conns), "")
                rows.append(("VM.get_record, %s, %d conn" % (proto, conns), "%.0f /s" % r, goal))
        ms, size = time_get_all_records(d.port, s)
        rows.append(("VM.get_all_records, %d VMs, JSON-RPC (%.1f MB)" % (len(refs) + 1, size / 1e6),
                     "%.0f ms" % ms, "<= 100 ms"))
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            for i, r in enumerate(refs[:1000]):
                f.write(json_body("VM.set_name_label", s, r, "renamed-%d" % i) + "\n")
            bodies = f.name
        r = wrk(d.port, 16, a.duration, "/jsonrpc", bodies_file=bodies)
        os.unlink(bodies)
        rows.append(("durable VM.set_name_label, 16 writers", "%.0f /s" % r, ">= 10000 /s"))
        rows.append(("RSS with %d VMs" % len(refs), "%.1f MB" % (d.rss_kib() / 1024), ""))
        d.stop()
        starts = []
        for _ in range(3):
            starts.append(d.start())
            d.stop()
        rows.append(("start with a %d-VM database (to first answered call)" % len(refs),
                     "%.0f ms" % (min(starts) * 1000), "<= 1000 ms"))
    print("| measure | result | goal |")
    print("|---|---|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)


if __name__ == "__main__":
    main()
