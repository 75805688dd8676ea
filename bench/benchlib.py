"""Helpers the benchmarks share (bench/bench.py, bench/storage, bench/vm)."""
import os
import re
import signal
import socket
import subprocess
import time


def free_port():
    """A free TCP port on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_s(pid):
    """utime+stime of a process, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    """VmRSS of a process, MB (1e6 bytes)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def loadavg():
    """The 1, 5 and 15 minute load averages, as text."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _pid_of(path, comm):
    """The pid in path if that process still runs as comm, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
        with open("/proc/%d/comm" % pid) as f:
            return pid if f.read().strip() == comm[:15] else None
    except (OSError, ValueError, IndexError):
        return None


def sim_host_pids(state):
    """(xenstored, cxapi-simguest): the simulated host's daemons that a
    xapi with state directory `state` started (None where not running)."""
    return (_pid_of(os.path.join(state, "sim/xs/xenstored.pid"), "xenstored"),
            _pid_of(os.path.join(state, "sim/simguest.pid"), "cxapi-simguest"))


def stop_xapi(proc, state):
    """SIGTERM xapi (SIGKILL after 30 s), then the simulated host's
    xenstored and guests, which outlive xapi by design; wait for them to go
    so that the state directory can be removed."""
    side = set(sim_host_pids(state))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    side = [p for p in side | set(sim_host_pids(state)) if p]
    for pid in side:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists("/proc/%d" % p) for p in side):
        time.sleep(0.05)


class Probes:
    """perf uprobes on entry and return of functions of a binary, to time
    each call (root and perf only): `ok` lists the functions probed; stop()
    gives {function: [ms of each call]}.  The group (cxbench<pid>) is
    removed by delete()."""

    def __init__(self, binary, work, funcs):
        self.binary = os.path.realpath(binary)
        self.group = "cxbench%d" % os.getpid()
        self.out = os.path.join(work, "probe.data")
        self.ok = []
        for fn in funcs:
            a = subprocess.run(["perf", "probe", "-q", "-x", self.binary, "-a", "%s:%s=%s" % (self.group, fn, fn)],
                               capture_output=True, text=True)
            b = subprocess.run(["perf", "probe", "-q", "-x", self.binary, "-a",
                                "%s:%s=%s%%return" % (self.group, fn, fn)], capture_output=True, text=True)
            if a.returncode == 0 and b.returncode == 0:
                self.ok.append(fn)
        self.proc = None

    def start(self, pid):
        if not self.ok:
            return
        ev = []
        for fn in self.ok:
            ev += ["-e", "%s:%s" % (self.group, fn), "-e", "%s:%s__return" % (self.group, fn)]
        self.proc = subprocess.Popen(["perf", "record", "-q", "-o", self.out, "-p", str(pid)] + ev,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # perf attaches

    def stop(self):
        if not self.proc:
            return {}
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()
        self.proc = None
        if not os.path.exists(self.out):
            return {}
        out = subprocess.run(["perf", "script", "-i", self.out, "-F", "tid,time,event"],
                             capture_output=True, text=True).stdout
        os.unlink(self.out)
        start, ms = {}, {fn: [] for fn in self.ok}
        for line in out.splitlines():
            m = re.match(r"\s*(\d+)\s+([\d.]+):\s+\S+?:(\w+?)(__return)?:", line)
            if not m:
                continue
            tid, t, fn, ret = m.group(1), float(m.group(2)), m.group(3), m.group(4)
            if fn not in ms:
                continue
            if ret:
                if (tid, fn) in start:
                    ms[fn].append((t - start.pop((tid, fn))) * 1e3)
            else:
                start[(tid, fn)] = t
        return ms

    def delete(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["perf", "probe", "-q", "-d", "%s:*" % self.group], capture_output=True)
