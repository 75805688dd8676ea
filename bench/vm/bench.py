#!/usr/bin/python3
"""VM lifecycle benchmark (issue 6): 100 VMs started in parallel and shut
down again, the toolstack time of one VM.start, and 1,000 running VMs on one
simulated host (RSS of xapi, xenstored, cxapi-simguest; per-operation
medians at 1,000 running VMs against those at 10).

Starts its own xapi (sim backend, sim_boot_ms = sim_shutdown_ms = 0) on a
temporary state directory, measures through Debian's XenAPI module
(XML-RPC, keep-alive, one session and connection per client thread), prints
a Markdown table with a verdict against each target, then stops xapi, the
xenstored and cxapi-simguest it started, and removes the directory.  See
bench/vm/README.md.

Usage: bench/vm/bench.py [--xapi BUILD/src/xapi/xapi] [--dir /tmp]
       [--parallel 100] [--rounds 3] [--samples 31] [--many 1000] [--no-probe]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from os_xenapi.client import XenAPI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import Probes, cpu_s, free_port, loadavg, rss_mb, sim_host_pids, stop_xapi  # noqa: E402
PW = "bench-vm-pw"
MIB = 1 << 20
VM_MIB = 32          # memory_static_max of each VM (dynamic min = max)
DOM0_MIB = 4096


def med(xs):
    return statistics.median(xs) if xs else float("nan")


class Xapi:
    """Our xapi, and what it leaves behind by design: xenstored and
    cxapi-simguest (docs/vm.md), stopped by their pid files."""

    def __init__(self, binary, state, sim_mib, threads):
        self.state = state
        self.port = free_port()
        self.log = open(os.path.join(state, "xapi.log"), "ab")
        self.cmd = [binary, "--config=", "--state-dir", state, "--bind", "127.0.0.1",
                    "--http-port", str(self.port), "--https-port", "0", "--unix-socket", "none",
                    "--root-password", PW, "--log-level", "warn", "--sim-boot-ms", "0",
                    "--sim-shutdown-ms", "0", "--sim-memory-mib", str(sim_mib),
                    "--sim-dom0-memory-mib", str(DOM0_MIB), "--threads", str(threads)]
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                self.stop()
                sys.exit("xapi exited (%s); log in %s" % (self.proc.returncode, state))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    sys.exit("xapi did not start")
                time.sleep(0.02)
        self.url = "http://127.0.0.1:%d" % self.port

    def xenstored(self):
        return sim_host_pids(self.state)[0]

    def simguest(self):
        return sim_host_pids(self.state)[1]

    def stop(self):
        stop_xapi(self.proc, self.state)
        self.log.close()


def session(url):
    s = XenAPI.Session(url)
    s.login_with_password("root", PW)
    return s


class Pool:
    """n client threads, each with its own session (own keep-alive
    connection).  run(fn, items) hands item i to thread i % n and returns
    (wall seconds from the release of all threads to the last return,
    per-call seconds)."""

    def __init__(self, url, n):
        self.sessions = [session(url) for _ in range(n)]

    def run(self, fn, items, failed=None):
        n = len(self.sessions)
        parts = [items[i::n] for i in range(n)]
        lat = []
        errors = []
        go = threading.Barrier(n + 1)

        def worker(k):
            api = self.sessions[k].xenapi
            go.wait()
            mine = []
            try:
                for it in parts[k]:
                    t0 = time.perf_counter()
                    fn(api, it)
                    mine.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
                if failed is not None:
                    failed.append((it, repr(e)))
                    mine.append(time.perf_counter() - t0)
                    k2 = parts[k].index(it) + 1
                    for it2 in parts[k][k2:]:
                        try:
                            fn(api, it2)
                        except Exception as e2:  # noqa: BLE001
                            failed.append((it2, repr(e2)))
            lat.extend(mine)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
        for t in ts:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        if errors and failed is None:
            raise RuntimeError("%d calls failed, first: %s" % (len(errors), errors[0]))
        return wall, lat

    def close(self):
        for s in self.sessions:
            try:
                s.xenapi.session.logout()
            except Exception:  # noqa: BLE001
                pass


# the functions timed by uprobes within one VM.start, and what they are
PROBED = [("work_cb", "the worker's whole call (task row, op marks, domain, commits)"),
          ("vm_op_begin", "vm_op_begin (check + mark current_operations, durable commit)"),
          ("xenops_start", "xenops_start (domain build: sim hypervisor + xenstore tree)"),
          ("vm_set_power_state_with", "vm_set_power_state_with (power state, metrics, guest report: one durable commit)"),
          ("vm_op_end", "vm_op_end (unmark, durable commit)")]


class Bench:
    def __init__(self, a, x, work):
        self.a, self.x, self.work = a, x, work
        self.s = session(x.url)
        self.api = self.s.xenapi
        self.net = self.api.network.get_all()[0]
        self.rows = []      # (figure, median, target, verdict)
        self.notes = []
        self.probes = None
        self.pool = Pool(x.url, a.parallel)

    def row(self, fig, val, target="", verdict=""):
        self.rows.append((fig, val, target, verdict))
        print("  %s: %s %s %s" % (fig, val, target, verdict), file=sys.stderr, flush=True)

    def create_vms(self, n, prefix):
        mem = str(VM_MIB * MIB)

        def make(api, i):
            vm = api.VM.create({
                "name_label": "%s%d" % (prefix, i), "name_description": "", "user_version": "1",
                "is_a_template": False, "affinity": "OpaqueRef:NULL",
                "memory_static_max": mem, "memory_dynamic_max": mem, "memory_dynamic_min": mem,
                "memory_static_min": str(VM_MIB * MIB // 2), "VCPUs_params": {}, "VCPUs_max": "1",
                "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
                "actions_after_reboot": "restart", "actions_after_crash": "restart",
                "PV_bootloader": "pygrub", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
                "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "",
                "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
                "recommendations": ""})
            if self.a.nic:
                api.VIF.create({"device": "0", "network": self.net, "VM": vm, "MAC": "", "MTU": "1500",
                                "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
            out[i] = vm

        out = [None] * n
        self.pool.run(make, list(range(n)))
        return out

    # ---- figure 1: 100 VMs in parallel --------------------------------------
    def parallel(self):
        n = self.a.parallel
        vms = self.create_vms(n, "par")
        res = {"clean_shutdown": [], "hard_shutdown": []}
        for r in range(self.a.rounds):
            for how in ("clean_shutdown", "hard_shutdown"):
                ts, _ = self.pool.run(lambda api, vm: api.VM.start(vm, False, False), vms)
                td, _ = self.pool.run(lambda api, vm: getattr(api.VM, how)(vm), vms)
                res[how].append((ts, td))
                print("  round %d, %s: start %.3f s, shutdown %.3f s" % (r, how, ts, td), file=sys.stderr, flush=True)
        for how, xs in res.items():
            tot = [a + b for a, b in xs]
            m = med(tot)
            self.row("%d VMs: VM.start in parallel, then VM.%s in parallel (%d client threads), %d rounds"
                     % (n, how, n, len(xs)),
                     "%.3f s (start %.3f + shutdown %.3f; totals %s)"
                     % (m, med([a for a, _ in xs]), med([b for _, b in xs]), ", ".join("%.3f" % t for t in tot)),
                     "≤ 1 s", "met" if m <= 1.0 else "**missed**")
        self.par_vms = vms

    # ---- figure 2: one VM.start ---------------------------------------------
    def single(self):
        vm = self.create_vms(1, "single")[0]
        api = self.api
        api.VM.start(vm, False, False)     # warm-up
        api.VM.hard_shutdown(vm)
        if self.probes:
            self.probes.start(self.x.proc.pid)
        lat = []
        for _ in range(self.a.samples):
            t0 = time.perf_counter()
            api.VM.start(vm, False, False)
            lat.append((time.perf_counter() - t0) * 1e3)
            api.VM.hard_shutdown(vm)
        ms = self.probes.stop() if self.probes else {}
        m = med(lat)
        self.row("one VM.start (halted → running), XenAPI client, idle host, %d runs" % len(lat),
                 "%.2f ms (min %.2f, max %.2f)" % (m, min(lat), max(lat)), "≤ 5 ms", "met" if m <= 5 else "**missed**")
        for fn, what in PROBED:
            xs = ms.get(fn, [])
            if len(xs) == 2 * len(lat):
                # the hard_shutdowns between the starts ran it too: every other call is a start's
                xs = xs[0::2]
            if xs:
                self.row("— of which %s (uprobes, %d calls)" % (what, len(xs)), "%.2f ms" % med(xs))

    # ---- figure 3: 1,000 running VMs ----------------------------------------
    def ops(self, running, spares, label):
        """Per-operation times (ms, lists) with `running` VMs running."""
        api = self.api
        k = self.a.samples
        st, cs, gr, se = [], [], [], []
        for i in range(k):
            vm = spares[i % len(spares)]
            t0 = time.perf_counter()
            api.VM.start(vm, False, False)
            t1 = time.perf_counter()
            api.VM.clean_shutdown(vm)
            t2 = time.perf_counter()
            st.append((t1 - t0) * 1e3)
            cs.append((t2 - t1) * 1e3)
        for i in range(k):
            vm = running[(i * 7919) % len(running)]
            t0 = time.perf_counter()
            api.VM.get_record(vm)
            t1 = time.perf_counter()
            api.VM.set_name_description(vm, "bench %s %d" % (label, i))
            t2 = time.perf_counter()
            gr.append((t1 - t0) * 1e3)
            se.append((t2 - t1) * 1e3)
        return {"VM.start": st, "VM.clean_shutdown": cs, "VM.get_record (running VM)": gr,
                "VM.set_name_description (running VM)": se}

    def many(self):
        n = self.a.many
        small = 10
        vms = self.create_vms(n, "many")
        spares = self.create_vms(5, "spare")
        for vm in spares:   # warm-up
            self.api.VM.start(vm, False, False)
            self.api.VM.clean_shutdown(vm)
        self.pool.run(lambda api, vm: api.VM.start(vm, False, False), vms[:small])
        # --phases rounds of: the operations with 10 running, the other
        # VMs started, the operations with all running, those VMs stopped;
        # the figures are medians over all rounds' samples, so that a burst
        # of other load on this shared machine does not decide one side
        at_small, at_big = {}, {}
        for rnd in range(self.a.phases):
            self.settle()
            for op, xs in self.ops(vms[:small], spares, "small").items():
                at_small.setdefault(op, []).extend(xs)
            if rnd == 0:
                rss_small = self.rss()
            failed = []
            t, _ = self.pool.run(lambda api, vm: api.VM.start(vm, False, False), vms[small:], failed)
            if failed:
                self.notes.append("%d of the %d parallel VM.starts failed, first: %s; retried one by one"
                                  % (len(failed), n - small, failed[0][1]))
                for vm, _ in failed:
                    self.api.VM.start(vm, False, False)
            if rnd == 0:
                running = len([1 for v in self.api.VM.get_all_records().values()
                               if v["power_state"] == "Running" and not v["is_control_domain"]])
                self.notes.append("started %d more VMs in %.2f s (%d client threads); %d VMs running"
                                  % (n - small, t, self.a.parallel, running))
            self.settle()
            if rnd == 0:
                rss_big = self.rss()
            for op, xs in self.ops(vms, spares, "big").items():
                at_big.setdefault(op, []).extend(xs)
            if rnd == 0:
                cpu = self.cpu_idle()
            if rnd + 1 < self.a.phases:
                self.pool.run(lambda api, vm: api.VM.hard_shutdown(vm), vms[small:])
        at_small = {op: med(xs) for op, xs in at_small.items()}
        at_big = {op: med(xs) for op, xs in at_big.items()}
        names = ("xapi", "xenstored", "cxapi-simguest")
        self.row("xapi VmRSS, %d running VMs (%d with a NIC each)" % (running, running if self.a.nic else 0),
                 "%.1f MB (%.1f MB with %d running)" % (rss_big[0], rss_small[0], small),
                 "≤ 100 MB", "met" if rss_big[0] <= 100 else "**missed**")
        for i in (1, 2):
            self.row("%s VmRSS, %d running VMs" % (names[i], running),
                     "%.1f MB (%.1f MB with %d running)" % (rss_big[i], rss_small[i], small))
        for op in at_small:
            r = at_big[op] / at_small[op]
            self.row("%s median, %d running / %d running (%d runs each, in %d rounds)"
                     % (op, running, small, self.a.samples * self.a.phases, self.a.phases),
                     "%.2f / %.2f ms = %.2f" % (at_big[op], at_small[op], r), "≤ 1.2",
                     "met" if r <= 1.2 else "**missed**")
        self.notes.append("idle CPU with %d running VMs, over 5 s: %s" % (running, cpu))

    def settle(self):
        """Wait until the daemons are idle (the guest reports and device
        events of VMs just started are handled): each under 2 % of a CPU
        over 1 s, after at least --settle s, for at most 60 s more."""
        time.sleep(self.a.settle)
        pids = [p for p in (self.x.proc.pid, self.x.xenstored(), self.x.simguest()) if p]
        end = time.time() + 60
        while time.time() < end:
            c0 = [cpu_s(p) for p in pids]
            time.sleep(1)
            if all(cpu_s(p) - c < 0.02 for p, c in zip(pids, c0)):
                return
        self.notes.append("the daemons did not become idle within 60 s")

    def rss(self):
        return tuple(rss_mb(p) if p else float("nan")
                     for p in (self.x.proc.pid, self.x.xenstored(), self.x.simguest()))

    def cpu_idle(self):
        pids = (self.x.proc.pid, self.x.xenstored(), self.x.simguest())
        c0 = [cpu_s(p) for p in pids]
        time.sleep(5)
        c1 = [cpu_s(p) for p in pids]
        return ", ".join("%s %.0f %%" % (nm, (b - a) / 5 * 100)
                         for nm, a, b in zip(("xapi", "xenstored", "cxapi-simguest"), c0, c1))


def main():
    build = os.environ.get("BUILD", "build-benchvm")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--xapi", default=os.environ.get("XAPI_BIN", os.path.join(ROOT, build, "src/xapi/xapi")))
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/tmp"), help="where the temporary state goes")
    ap.add_argument("--parallel", type=int, default=100, help="VMs started in parallel (= client threads)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the parallel figure, per shutdown kind")
    ap.add_argument("--samples", type=int, default=31, help="runs of each per-operation figure")
    ap.add_argument("--many", type=int, default=1000, help="running VMs for the RSS / scaling figures")
    ap.add_argument("--phases", type=int, default=3,
                    help="rounds of the scaling figures (10 running, then --many, each round)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after starting VMs before measuring")
    ap.add_argument("--threads", type=int, default=32, help="xapi worker threads (its `threads` key)")
    ap.add_argument("--no-nic", dest="nic", action="store_false", help="VMs without a VIF")
    ap.add_argument("--only", default="parallel,single,many", help="figures to run (comma-separated)")
    ap.add_argument("--no-probe", dest="probe", action="store_false", help="skip the uprobe split of VM.start")
    ap.add_argument("--keep", action="store_true", help="leave everything running (for perf); Enter stops")
    a = ap.parse_args()
    if not os.access(a.xapi, os.X_OK):
        sys.exit("no xapi binary at %s (set XAPI_BIN or BUILD)" % a.xapi)
    if shutil.which("perf") is None or os.geteuid() != 0:
        a.probe = False
    total = a.many + a.parallel + 16
    sim_mib = DOM0_MIB + total * (VM_MIB + 1) + 1024
    work = tempfile.mkdtemp(prefix="cxapi-vm-bench.", dir=a.dir)
    state = os.path.join(work, "state")
    os.mkdir(state)
    load0 = loadavg()
    x = Xapi(a.xapi, state, sim_mib, a.threads)
    b = None
    try:
        b = Bench(a, x, work)
        if a.probe:
            b.probes = Probes(a.xapi, work, [fn for fn, _ in PROBED])
        for f in a.only.split(","):
            getattr(b, f)()
        if a.keep:
            input("xapi pid %d running; Enter stops it " % x.proc.pid)
    finally:
        if b is not None:
            if b.probes:
                b.probes.delete()
            b.pool.close()
        x.stop()
        shutil.rmtree(work, ignore_errors=True)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    print("xapi: %s (tree at %s); %s; load average before %s, after %s; %d CPUs"
          % (os.path.relpath(os.path.realpath(a.xapi), ROOT), head,
             time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load0, loadavg(), os.cpu_count()))
    print("xapi flags: --sim-boot-ms 0 --sim-shutdown-ms 0 --sim-memory-mib %d --sim-dom0-memory-mib %d "
          "--threads %d; VMs: %d MiB, 1 vCPU, %s\n" % (sim_mib, DOM0_MIB, a.threads, VM_MIB,
                                                        "one VIF" if a.nic else "no devices"))
    print("| figure | median | target | verdict |")
    print("|---|---|---|---|")
    for r in b.rows:
        print("| %s | %s | %s | %s |" % r)
    for n in b.notes:
        print("\nnote: " + n)


if __name__ == "__main__":
    main()
