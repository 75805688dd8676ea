#!/usr/bin/python3
"""Storage benchmark (issue 5): VDI.snapshot of a 100 GiB VDI, export of a
sparse 10 GiB VDI (vhd and raw), export of a fully written 2 GiB VDI against
`cat` of its file, and import (raw and vhd), over loopback HTTP.

Starts its own xapi (sim backend) on a temporary state directory, makes the
VDIs in the host's local file SR, runs every figure a few times, prints a
Markdown table of medians with a verdict against each target, and removes
everything it made.  See bench/storage/README.md.

Usage: bench/storage/bench.py [--xapi BUILD/src/xapi/xapi] [--dir /tmp]
       [--rounds 5] [--snapshots 21] [--no-verify] [--no-probe]
"""
import argparse
import fcntl
import hashlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from os_xenapi.client import XenAPI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import Probes, cpu_s, free_port, loadavg, stop_xapi  # noqa: E402
PW = "bench-storage-pw"
MIB = 1 << 20
GIB = 1 << 30
MB = 1e6
# the functions whose calls VDI.snapshot's figure splits out (uprobes)
PROBED = [("snapshot_or_clone", "the API handler (snapshot_or_clone: marks, driver, commit, unmark)"),
          ("file_vdi_snapshot", "the file driver's vdi_snapshot")]



class Xapi:
    def __init__(self, binary, state):
        self.state = state
        self.port = free_port()
        self.log = open(os.path.join(state, "xapi.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "--config=", "--state-dir", state, "--bind", "127.0.0.1", "--http-port", str(self.port),
             "--https-port", "0", "--unix-socket", os.path.join(state, "xapi.sock"), "--root-password", PW, "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                sys.exit("xapi exited (%s); log in %s" % (self.proc.returncode, state))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("xapi did not start")
                time.sleep(0.02)
        self.url = "http://127.0.0.1:%d" % self.port
        self.unix = os.path.join(state, "xapi.sock")

    def stop(self):
        stop_xapi(self.proc, self.state)
        self.log.close()


class Bench:
    def __init__(self, a, xapi, workdir):
        self.a, self.x, self.work = a, xapi, workdir
        self.s = XenAPI.Session(xapi.url)
        self.s.login_with_password("root", PW)
        self.api = self.s.xenapi
        self.sid = self.s._session
        self.sr = [r for r, v in self.api.SR.get_all_records().items() if v["type"] == "file"][0]
        pbd = self.api.SR.get_PBDs(self.sr)[0]
        self.srdir = self.api.PBD.get_device_config(pbd)["location"]
        self.rows = []      # (figure, median text, target text, verdict)
        self.notes = []

    # ---- helpers -----------------------------------------------------------
    def vdi_create(self, size, name):
        return self.api.VDI.create({"SR": self.sr, "virtual_size": str(size), "type": "user", "sharable": False,
                                    "read_only": False, "other_config": {}, "name_label": name,
                                    "name_description": ""})

    def vdi_file(self, vdi):
        return os.path.join(self.srdir, self.api.VDI.get_location(vdi) + ".vhd")

    def put(self, vdi, path, fmt):
        """PUT /import_raw_vdi with the file's bytes (sendfile from a raw
        socket: the client costs next to nothing).  Returns (seconds to the
        end of the server's reply, seconds to the last byte handed to the
        kernel, status line)."""
        size = os.path.getsize(path)
        sock = socket.create_connection(("127.0.0.1", self.x.port))
        t0 = time.perf_counter()
        sock.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s&format=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n" % (self.sid, vdi, fmt, size)).encode())
        with open(path, "rb") as f:
            sock.sendfile(f)
        t_sent = time.perf_counter() - t0
        resp = b""
        while True:
            b = sock.recv(65536)
            if not b:
                break
            resp += b
        t = time.perf_counter() - t0
        sock.close()
        status = resp.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 200 " not in status + " ":
            sys.exit("import failed: %s" % resp[:300])
        return t, t_sent

    def url(self, vdi, fmt):
        return "%s/export_raw_vdi?session_id=%s&vdi=%s&format=%s" % (self.x.url, self.sid, vdi, fmt)

    def curl_get(self, url, out="/dev/null", unix=None):
        """GET with curl to out, over the Unix socket unix if given.
        Returns (seconds, bytes, curl CPU seconds)."""
        r0 = os.times()
        p = subprocess.run(["curl", "-s", "-S", "-f", "-o", out, "-w", "%{http_code} %{size_download} %{time_total}"]
                           + (["--unix-socket", unix] if unix else []) + [url], capture_output=True, text=True)
        r1 = os.times()
        if p.returncode != 0:
            sys.exit("curl failed: %s %s" % (p.stdout, p.stderr))
        code, size, t = p.stdout.split()
        return float(t), int(size), (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)

    def py_get(self, url, splice=False, unix=None):
        """GET with a plain socket that reads the body into one 128 KiB buffer
        and drops it, as cat does with its 128 KiB reads; or, with splice,
        moves it to /dev/null through a pipe with splice(2), never copying
        it into user memory (what the server can send when the client costs
        nothing).  Over the Unix socket unix if given.  Returns (seconds,
        bytes, client CPU seconds)."""
        u = urllib.parse.urlsplit(url)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if unix:
            s = socket.socket(socket.AF_UNIX)
            s.connect(unix)
        else:
            s = socket.create_connection((u.hostname, u.port))
        s.sendall(("GET %s?%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % (u.path, u.query)).encode())
        buf = bytearray(128 << 10)
        mv = memoryview(buf)
        head = b""
        while b"\r\n\r\n" not in head:
            k = s.recv_into(mv)
            if not k:
                sys.exit("export: connection closed before the head")
            head += bytes(mv[:k])
        head, body = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit("export failed: %r" % head[:200])
        got = len(body)
        if splice:
            pr, pw = os.pipe()
            try:
                fcntl.fcntl(pw, fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
            null = os.open("/dev/null", os.O_WRONLY)
            while True:
                k = os.splice(s.fileno(), pw, 1 << 20)
                if not k:
                    break
                got += k
                while k:
                    k -= os.splice(pr, null, k)
            for fd in (pr, pw, null):
                os.close(fd)
        else:
            while True:
                k = s.recv_into(mv)
                if not k:
                    break
                got += k
        t = time.perf_counter() - t0
        s.close()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return t, got, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    def get(self, url, client, unix=None):
        """client: py, curl or splice, each over TCP; unix-py, unix-curl or
        unix-splice over the Unix socket unix."""
        if not client.startswith("unix-"):
            unix = None
        client = client.split("-")[-1]
        if client == "curl":
            return self.curl_get(url, unix=unix)
        return self.py_get(url, client == "splice", unix)

    def timed_export(self, vdi, fmt, expect=None, client="py"):
        """(seconds, bytes, xapi CPU seconds, client CPU seconds)"""
        c0 = cpu_s(self.x.proc.pid)
        t, n, ccpu = self.get(self.url(vdi, fmt), client, self.x.unix)
        scpu = cpu_s(self.x.proc.pid) - c0
        if expect is not None and n != expect:
            sys.exit("export %s: %d bytes, expected %d" % (fmt, n, expect))
        return t, n, scpu, ccpu

    def cat(self, path):
        t0 = time.perf_counter()
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0

    def wait_idle(self, vdi, timeout=60):
        """After a snapshot's destroy: wait for gc to merge the base back (the
        VDI loses sm_config:vhd-parent) and to let go of the SR (its scan
        mark), so every timed snapshot starts alike, on an idle SR."""
        end = time.time() + timeout
        while time.time() < end:
            if "vhd-parent" not in self.api.VDI.get_sm_config(vdi) and \
               not self.api.SR.get_current_operations(self.sr):
                return True
            time.sleep(0.05)
        return False

    def row(self, figure, value, target, ok):
        verdict = "" if ok is None else ("met" if ok else "**missed**")
        self.rows.append((figure, value, target, verdict))

    # ---- figures -----------------------------------------------------------
    def snapshot(self):
        n = self.a.snapshots
        vdi = self.vdi_create(100 * GIB, "bench-100G")
        # some data, as a disk in use has: 64 MiB at the start
        src = os.path.join(self.work, "64M")
        with open(src, "wb") as f:
            f.write(os.urandom(MIB) * 64)
        self.put(vdi, src, "raw")
        os.unlink(src)
        probes = Probes(self.a.xapi, self.work, [fn for fn, _ in PROBED]) if self.a.probe else None
        if probes:
            if len(probes.ok) < len(PROBED):
                self.notes.append("snapshot shares: perf probe failed for %s"
                                  % ", ".join(fn for fn, _ in PROBED if fn not in probes.ok))
            self.probes = probes
            probes.start(self.x.proc.pid)
        times, busy = [], []
        for _ in range(n):
            if not self.wait_idle(vdi):
                self.notes.append("snapshot: gc did not merge the base back within 60 s")
            t0 = time.perf_counter()
            snap = self.api.VDI.snapshot(vdi, {})
            times.append(time.perf_counter() - t0)
            self.api.VDI.destroy(snap)
        drv = probes.stop() if probes else {}
        if probes:
            probes.delete()
            self.probes = None
            if not any(drv.values()):
                self.notes.append("snapshot shares: the uprobes recorded nothing")
        # the same, issued right after the previous snapshot's destroy, while
        # the SR's garbage collection merges the base back
        self.wait_idle(vdi)
        for _ in range(n):
            t0 = time.perf_counter()
            snap = self.api.VDI.snapshot(vdi, {})
            busy.append(time.perf_counter() - t0)
            self.api.VDI.destroy(snap)
        self.wait_idle(vdi)
        self.api.VDI.destroy(vdi)
        med = statistics.median(times) * 1e3
        self.row("VDI.snapshot of a 100 GiB VDI (64 MiB allocated), idle SR, XenAPI client, median of %d" % n,
                 "%.1f ms (min %.1f, max %.1f)" % (med, min(times) * 1e3, max(times) * 1e3), "<= 10 ms",
                 med <= 10)
        for fn, label in PROBED:
            v = drv.get(fn)
            if v:
                self.row("  of which %s, uprobe, median of %d" % (label, len(v)),
                         "%.1f ms (min %.1f, max %.1f)" % (statistics.median(v), min(v), max(v)), "", None)
        self.row("VDI.snapshot, each right after the previous snapshot's VDI.destroy (gc busy), median of %d" % n,
                 "%.1f ms (min %.1f, max %.1f)" % (statistics.median(busy) * 1e3, min(busy) * 1e3, max(busy) * 1e3),
                 "", None)

    def sparse(self):
        r = self.a.rounds
        vdi = self.vdi_create(10 * GIB, "bench-10G-sparse")
        src = os.path.join(self.work, "8M")
        with open(src, "wb") as f:
            f.write(os.urandom(MIB) * 8)
        self.put(vdi, src, "raw")
        os.unlink(src)
        vt, vs = [], 0
        for _ in range(r):
            t, vs, _, _ = self.timed_export(vdi, "vhd")
            vt.append(t)
        med = statistics.median(vt)
        self.row("export, sparse 10 GiB VDI (8 MiB allocated), format=vhd (%.1f MiB sent), median of %d"
                 % (vs / MIB, r), "%.3f s" % med, "<= 1 s", med <= 1.0)
        res = {"py": ([], [], []), "curl": ([], [], [])}
        for _ in range(r):
            for client in ("py", "curl"):
                t, _, scpu, ccpu = self.timed_export(vdi, "raw", 10 * GIB, client)
                for lst, v in zip(res[client], (t, scpu, ccpu)):
                    lst.append(v)
        for client, label in (("py", "128 KiB-buffer client"), ("curl", "curl")):
            t, scpu, ccpu = (statistics.median(x) for x in res[client])
            rate = 10 * GIB / t / MB
            self.row("export, sparse 10 GiB VDI, format=raw (10 GiB sent), %s, median of %d" % (label, r),
                     "%.2f s = %s MB/s (xapi CPU %.1f s, client CPU %.1f s)" % (t, fmt_int(rate), scpu, ccpu),
                     ">= 1,000 MB/s", rate >= 1000)
        self.api.VDI.destroy(vdi)

    def full(self):
        r = self.a.rounds
        size = 2 * GIB
        src = os.path.join(self.work, "2G.raw")
        # non-zero data: 64 MiB of random bytes, each copy with its own first bytes
        chunk = bytearray(os.urandom(64 * MIB))
        with open(src, "wb") as f:
            for i in range(size // len(chunk)):
                chunk[:8] = (i + 1).to_bytes(8, "little")
                f.write(chunk)
        self.cat(src)  # warm
        # -- import raw: into a fresh VDI each round; the first one is kept
        full, it, st = None, [], []
        for i in range(r):
            vdi = self.vdi_create(size, "bench-2G-%d" % i)
            t, t_sent = self.put(vdi, src, "raw")
            it.append(t)
            st.append(t_sent)
            if full is None:
                full = vdi
            else:
                self.api.VDI.destroy(vdi)
        med = statistics.median(it)
        self.row("import, 2 GiB of non-zero data, format=raw, until the reply (durable), median of %d" % r,
                 "%.2f s = %s MB/s (runs %s–%s MB/s; body sent after %.2f s)"
                 % (med, fmt_int(size / med / MB), fmt_int(size / max(it) / MB), fmt_int(size / min(it) / MB),
                    statistics.median(st)),
                 ">= 300 MB/s", size / med / MB >= 300)
        if self.a.verify:
            want = sha256_file(src)
            got = subprocess.run("curl -s -f '%s' | sha256sum" % self.url(full, "raw"), shell=True,
                                 capture_output=True, text=True).stdout.split()[0]
            if got != want:
                sys.exit("the 2 GiB VDI does not export what was imported")
        os.unlink(src)
        # -- export raw against cat of the VDI's own file and against the
        # floor server sending that file, alternating, warm cache
        path = self.vdi_file(full)
        fsize = os.path.getsize(path)
        funix = os.path.join(self.work, "floor.sock")
        floor = subprocess.Popen([sys.executable, os.path.join(HERE, "floor.py"), path, funix],
                                 stdout=subprocess.PIPE, text=True)
        try:
            furl = "http://127.0.0.1:%s/" % floor.stdout.readline().strip()
            self.cat(path)
            self.cat(path)
            rr = max(r, 7)
            clients = ("py", "curl", "splice", "unix-py", "unix-curl", "unix-splice")
            ct, x = [], {k: ([], [], []) for c in clients for k in (c, "floor-" + c)}
            for _ in range(rr):
                ct.append(self.cat(path))
                for client in clients:
                    t, _, scpu, ccpu = self.timed_export(full, "raw", size, client)
                    for lst, v in zip(x[client], (t, scpu, ccpu)):
                        lst.append(v)
                    c0 = cpu_s(floor.pid)
                    t, n, ccpu = self.get(furl, client, funix)
                    if n != fsize:
                        sys.exit("floor server sent %d bytes" % n)
                    for lst, v in zip(x["floor-" + client], (t, cpu_s(floor.pid) - c0, ccpu)):
                        lst.append(v)
        finally:
            floor.kill()
            floor.wait()
        cat_t = statistics.median(ct)
        cat_rate = fsize / cat_t / MB
        self.row("cat of the VDI's file (%s MiB) to /dev/null, warm cache, median of %d"
                 % (fmt_int(fsize / MIB), rr), "%.3f s = %s MB/s" % (cat_t, fmt_int(cat_rate)), "", None)
        names = {"py": "128 KiB-buffer client (as cat's reads)", "curl": "curl",
                 "splice": "splice client (no copy to user memory)"}
        for client in clients:
            over = "Unix socket" if client.startswith("unix-") else "loopback TCP"
            label = "%s, %s" % (over, names[client.split("-")[-1]])
            for k, who, n in ((client, "xapi", size), ("floor-" + client, "floor (do-nothing sendfile server)", fsize)):
                t, scpu, ccpu = (statistics.median(v) for v in x[k])
                rate = n / t / MB
                xapi = who == "xapi"
                self.row("export, fully written 2 GiB VDI, format=raw, warm cache: %s, %s, median of %d"
                         % (who, label, rr),
                         "%.3f s = %s MB/s = %.0f %% of cat (server CPU %.2f s, client CPU %.2f s)"
                         % (t, fmt_int(rate), 100 * rate / cat_rate, scpu, ccpu),
                         ">= 90 % of cat" if xapi else "", (rate >= 0.9 * cat_rate) if xapi else None)
        # -- the same from a cold page cache, as an export of a disk that is
        # not in memory runs: before each read, the caches are dropped, so
        # cat and the export both read the file from the disk
        cc, xc = [], []
        for _ in range(max(r, 5)):
            drop_caches()
            cc.append(self.cat(path))
            drop_caches()
            t, _, _, _ = self.timed_export(full, "raw", size, "curl")
            xc.append(t)
        cold_cat = fsize / statistics.median(cc) / MB
        cold_x = size / statistics.median(xc) / MB
        self.row("cat of the VDI's file to /dev/null, cold cache, median of %d" % len(cc),
                 "%.3f s = %s MB/s" % (statistics.median(cc), fmt_int(cold_cat)), "", None)
        self.row("export, fully written 2 GiB VDI, format=raw, cold cache: xapi, curl, median of %d" % len(xc),
                 "%.3f s = %s MB/s = %.0f %% of cat" % (statistics.median(xc), fmt_int(cold_x),
                                                       100 * cold_x / cold_cat),
                 ">= 90 % of cat", cold_x >= 0.9 * cold_cat)
        # -- export vhd (to a file: the source of the vhd import)
        vhd = os.path.join(self.work, "2G.vhd")
        vt = []
        for _ in range(r):
            t, n, _, _ = self.timed_export(full, "vhd")
            vt.append(t)
        self.curl_get(self.url(full, "vhd"), vhd)
        med = statistics.median(vt)
        self.row("export, fully written 2 GiB VDI, format=vhd (%s MiB), 128 KiB-buffer client, median of %d"
                 % (fmt_int(n / MIB), r), "%.3f s = %s MB/s" % (med, fmt_int(n / med / MB)), "", None)
        # -- import vhd
        self.cat(vhd)
        it, st = [], []
        for i in range(r):
            vdi = self.vdi_create(size, "bench-2G-vhd-%d" % i)
            t, t_sent = self.put(vdi, vhd, "vhd")
            it.append(t)
            st.append(t_sent)
            self.api.VDI.destroy(vdi)
        vsize = os.path.getsize(vhd)
        med = statistics.median(it)
        self.row("import, the 2 GiB VDI's vhd export (%s MiB), format=vhd, until the reply (durable), median of %d"
                 % (fmt_int(vsize / MIB), r),
                 "%.2f s = %s MB/s (runs %s–%s MB/s; body sent after %.2f s)"
                 % (med, fmt_int(vsize / med / MB), fmt_int(vsize / max(it) / MB), fmt_int(vsize / min(it) / MB),
                    statistics.median(st)),
                 ">= 300 MB/s", vsize / med / MB >= 300)
        os.unlink(vhd)
        self.api.VDI.destroy(full)


def drop_caches():
    """Write back and drop the page cache (root), so the next read of a
    file comes from the disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def fmt_int(x):
    return "{:,}".format(int(round(x)))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MIB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def main():
    build = os.environ.get("BUILD", "build")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--xapi", default=os.environ.get("XAPI_BIN", os.path.join(ROOT, build, "src/xapi/xapi")))
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp"),
                    help="where the temporary state (SR) goes; needs 8 GiB free")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each transfer figure")
    ap.add_argument("--snapshots", type=int, default=21, help="snapshots timed")
    ap.add_argument("--only", default="snapshot,sparse,full", help="figures to run (comma-separated)")
    ap.add_argument("--no-verify", dest="verify", action="store_false", help="skip the checksum of the 2 GiB VDI")
    ap.add_argument("--no-probe", dest="probe", action="store_false", help="skip the uprobe timings of the snapshot handler and driver")
    a = ap.parse_args()
    if not os.access(a.xapi, os.X_OK):
        sys.exit("no xapi binary at %s (set XAPI_BIN or BUILD)" % a.xapi)
    st = os.statvfs(a.dir)
    if st.f_bavail * st.f_frsize < 8 * GIB:
        sys.exit("%s has less than 8 GiB free" % a.dir)
    if shutil.which("perf") is None or os.geteuid() != 0:
        a.probe = False
    work = tempfile.mkdtemp(prefix="cxapi-storage-bench.", dir=a.dir)
    state = os.path.join(work, "state")
    os.mkdir(state)
    load0 = loadavg()
    x = Xapi(a.xapi, state)
    b = None
    try:
        b = Bench(a, x, work)
        for f in a.only.split(","):
            getattr(b, f)()
    finally:
        x.stop()
        if b is not None and getattr(b, "probes", None):
            b.probes.delete()
        shutil.rmtree(work, ignore_errors=True)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    print("xapi: %s (tree at %s); state under %s; %s; load average before %s, after %s; %d CPUs\n"
          % (os.path.relpath(os.path.realpath(a.xapi), ROOT), head, a.dir,
             time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load0, loadavg(), os.cpu_count()))
    print("| figure | median | target | verdict |")
    print("|---|---|---|---|")
    for r in b.rows:
        print("| %s | %s | %s | %s |" % r)
    print("| for scale: the original exports a 10 GiB disk | ~60 s = ~170 MB/s | | |")
    for n in b.notes:
        print("\nnote: " + n)


if __name__ == "__main__":
    main()
