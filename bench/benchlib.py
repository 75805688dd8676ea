"""Helpers the benchmarks share (bench/bench.py, bench/storage, bench/vm)."""
import os
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
