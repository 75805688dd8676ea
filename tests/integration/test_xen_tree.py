"""The tree the domain manager and the simulated guests write, compared key
for key with what a real Xen 4.17 host wrote for the same PV guest
(tests/fixtures/xen-4.17/, recorded with tests/xen/record-tree.sh; see its
README).  The guest of tests/fixtures/xen-4.17/pv-guest.cfg is started
through tests/xenops/xenops_cli (xenops_init keeps the xenstored this test
starts with -T, so every request is traced), the trees are dumped with
Debian's `xenstore-ls -fp` and both sides go through tests/xen/normalise.py.
The order of the device state writes and of the teardown's removals is
compared with logs/xenstore-writes.txt.
"""
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
CLI = os.path.join(BUILD, "src", "simguest", "xenops_cli")
XENSTORED = os.path.join(BUILD, "src", "xs", "xenstored")
FIX = os.path.join(ROOT, "tests", "fixtures", "xen-4.17")
sys.path.insert(0, os.path.join(ROOT, "tests", "xen"))
import normalise  # noqa: E402
from conftest import XsTools  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CLI) and shutil.which("xenstore-ls")),
    reason="needs %s and xenstore-utils" % CLI)

# pv-guest.cfg, as a xenops_cli VM spec (values %-encoded)
UUID = "799be3d4-0000-4000-8000-0000c0ffee01"
MAC = "00:16:3e:5a:c0:01"
FIX_DISK = "/var/lib/xen/images/cxapi-pv.img"


def spec(disk):
    return ("uuid=%s name=cxapi-pv mib=128 target-mib=96 vcpus=2 kernel=/guest/vmlinux.gz "
            "ramdisk=/guest/initrd.gz cmdline=console=hvc0%%20rdinit=/init%%20quiet "
            "disk=xvda,%s,rw nic=0,%s,xenbr0" % (UUID, disk, MAC))


# ---- what is compared ------------------------------------------------------

# The guest agent's keys (xe-guest-utilities: data/os_*, data/meminfo_*,
# data/updated, attr/PVAddons/*, attr/vif/*): the recorded guest ran no
# agent, so the fixture has only the empty data/ and attr/ directories
# libxl makes.  The sim's guests keep writing them (xapi reads them); they
# are left out of the comparison here, the directories themselves are not.
AGENT = re.compile(r"^/local/domain/\{DOMID\}/(data|attr)/")


def norm(text, disk=None):
    """normalise.py's lines for a dump (a fixture: its disk path made ours:
    the path is the config's choice, ours lives in the test's tmp dir)."""
    if disk is not None:
        text = text.replace(FIX_DISK, disk)
    return [l for l in normalise.normalise(text.splitlines(True)) if not AGENT.match(l)]


def diff(ours, real):
    o, r = set(ours), set(real)
    return "only ours:\n  %s\nonly the real host's:\n  %s" % (
        "\n  ".join(sorted(o - r)), "\n  ".join(sorted(r - o)))


# ---- the two write logs as one kind of event list --------------------------

Ev = collections.namedtuple("Ev", "who op path value enoent")


def fixture_events():
    """logs/xenstore-writes.txt: who is "guest" for the guest kernel's
    connection, "dom0" for every other (xl, the xl daemon, dom0's kernel,
    hotplug scripts, xenconsoled); relative paths made absolute."""
    evs = []
    for line in open(os.path.join(FIX, "logs", "xenstore-writes.txt")):
        line = line.rstrip("\n")
        if "-> ERROR ENOENT" in line:
            evs[-1] = evs[-1]._replace(enoent=True)
            continue
        f = line.split(" ", 2)
        if len(f) < 2 or f[0] == "----":
            continue
        who = "guest" if f[0] == "domU" else "dom0"
        args = f[2] if len(f) > 2 else ""
        evs.append(ev(who, f[1], args, 1 if who == "guest" else 0))
    return evs


def ev(who, op, args, domid):
    path, _, value = args.partition(" ")
    if op in ("WRITE", "RM", "MKDIR", "SET_PERMS") and not path.startswith("/"):
        path = "/local/domain/%d/%s" % (domid, path)
    return Ev(who, op, path, value, False)


TRACE = re.compile(r"^(IN|OUT) (\d+) \d{8} \d\d:\d\d:\d\d (\S+) \((.*)\)\s*$")


def trace_events(path):
    """Our xenstored's -T trace: requests of the guest's connection (its
    domain socket, domid != 0) are "guest", all others "dom0"; an ERROR
    answer marks the request it answers (answers come in order per
    connection)."""
    domid_of, pending, evs = {}, collections.defaultdict(collections.deque), []
    for line in open(path, errors="replace"):
        m = re.match(r"^CREATE connection (\d+) domid (\d+)", line)
        if m:
            domid_of[m.group(1)] = int(m.group(2))
            continue
        m = TRACE.match(line.rstrip("\n"))
        if not m:
            continue
        d, conn, op, args = m.groups()
        if d == "IN":
            dom = domid_of.get(conn, 0)
            # NULs are shown as spaces: a WRITE is "path value" (no NUL
            # after the value), other requests end with one
            evs.append(ev("guest" if dom else "dom0", op,
                          args if op == "WRITE" else args.rstrip(" "), dom))
            pending[conn].append(len(evs) - 1)
        elif op != "WATCH_EVENT" and pending[conn]:
            i = pending[conn].popleft()
            if op == "ERROR" and "ENOENT" in args:
                evs[i] = evs[i]._replace(enoent=True)
    return evs


DEV = re.compile(r"^/local/domain/(\d+)/(?:device/(vbd|vif)/(\d+)|backend/(vbd|vif|console)/\d+/(\d+))/([^/]+)$")
# the keys whose order is compared, besides state: the hotplug script's
# verdict, the frontend's ring (it connects), blkback's disk size (it connects)
MILESTONES = {"state", "hotplug-status", "ring-ref", "tx-ring-ref", "sectors"}


def device_sequences(evs):
    """Per device (vbd/51712, vif/0, console/0): its state writes and
    milestones in the order xenstored saw them, as (writer, side, key, value)
    (values of ring refs and sizes vary and are left out)."""
    seqs = collections.defaultdict(list)
    for e in evs:
        if e.op != "WRITE":
            continue
        m = DEV.match(e.path)
        if not m or m.group(6) not in MILESTONES:
            continue
        side = "front" if m.group(2) else "back"
        kind = m.group(2) or m.group(4)
        devid = m.group(3) or m.group(5)
        key = m.group(6)
        val = e.value if key in ("state", "hotplug-status") else "*"
        seqs["%s/%s" % (kind, devid)].append("%s %s %s=%s" % (e.who, side, key, val))
    return dict(seqs)


def after_ack(evs):
    """The events from the guest's acknowledgement of the shutdown request
    (its write of "" to control/shutdown) on."""
    for i, e in enumerate(evs):
        if e.who == "guest" and e.op == "WRITE" and e.path.endswith("/control/shutdown") \
                and e.value == "":
            return evs[i:]
    raise AssertionError("no acknowledgement of the shutdown request")


def removals(evs, domid, uuid):
    n = normalise.Normaliser([], domids=[domid])
    n.uuids = {uuid: "{UUID}"}
    return ["%s %s%s" % (e.who, n.path(e.path), " ENOENT" if e.enoent else "")
            for e in after_ack(evs) if e.op == "RM"]


def shutdown_handshake(evs):
    """The guest's requests between the toolstack's shutdown request and its
    first device state change: Linux's shutdown_handler acknowledges in a
    transaction and, woken by its own write, reads "" and aborts."""
    out, on = [], False
    for e in evs:
        if e.who == "dom0" and e.op == "WRITE" and e.path.endswith("/control/shutdown") \
                and e.value == "poweroff":
            on = True
            continue
        if not on or e.who != "guest":
            continue
        if e.op == "WRITE" and e.path.endswith("/state"):
            break
        if e.op == "WRITE":
            out.append(["WRITE", "/".join(e.path.split("/")[-2:])] + ([e.value] if e.value else []))
        elif e.op == "TRANSACTION_END":
            out.append(["TRANSACTION_END", e.path])
        elif e.op == "TRANSACTION_START":
            out.append(["TRANSACTION_START"])
    return out


# ---- running it ------------------------------------------------------------

class Sim(XsTools):
    WAIT = 10

    def __init__(self, d):
        self.dir = d
        os.makedirs(os.path.join(d, "xs"))
        super().__init__(os.path.join(d, "xs", "socket"))
        self.trace = os.path.join(d, "trace")
        self.xsd = subprocess.Popen([XENSTORED, "--socket", self.sock, "--rundir",
                                     os.path.join(d, "xs"), "-T", self.trace],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.time() + 5
        while not os.path.exists(self.sock) and time.time() < end:
            time.sleep(0.01)
        self.cli = subprocess.Popen([CLI, "--state", d, "--xenstored", XENSTORED,
                                     "--boot-ms", "0", "--shutdown-ms", "3000"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    bufsize=1)
        assert self.cli.stdout.readline().strip() == "ready"

    def send(self, *cmd):
        self.cli.stdin.write(" ".join(str(c) for c in cmd) + "\n")
        self.cli.stdin.flush()

    def answer(self):
        r = self.cli.stdout.readline().strip()
        assert r.startswith("ok"), r
        return r[3:]

    def ok(self, *cmd):
        self.send(*cmd)
        return self.answer()

    def dump(self):
        return self.xs("xenstore-ls", "-fp", "/").stdout

    def stop(self):
        if self.cli.poll() is None:
            self.cli.kill()
            self.cli.wait()
        try:
            os.kill(int(open(os.path.join(self.dir, "simguest.pid")).read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        if self.xsd.poll() is None:
            self.xsd.terminate()
            self.xsd.wait(timeout=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One guest's life, as recorded: dumps before, running, after the
    shutdown request was acknowledged, after destroy; then the trace."""
    d = str(tmp_path_factory.mktemp("xentree"))
    disk = os.path.join(d, "cxapi-pv.img")
    with open(disk, "wb") as f:
        f.truncate(16 << 20)  # 16 MiB, as the recording's: 32768 sectors
    sim = Sim(d)
    out = {"disk": disk}
    try:
        out["before"] = sim.dump()
        domid = int(sim.ok("start", spec(disk)))
        out["domid"] = domid
        dom = "/local/domain/%d" % domid
        for fe, be in (("device/vbd/51712", "vbd/%d/51712"), ("device/vif/0", "vif/%d/0")):
            sim.wait_key("%s/%s/state" % (dom, fe), "4")
            sim.wait_key("/local/domain/0/backend/%s/state" % (be % domid), "4")
        sim.wait_key(dom + "/data/updated", "1")  # the agent is done too
        out["running"] = sim.dump()
        # the guest acknowledges at once and powers off 3 s later
        sim.send("shutdown", domid, "poweroff", 20)
        end = time.time() + 2
        while sim.read(dom + "/control/shutdown") != "" and time.time() < end:
            time.sleep(0.01)
        time.sleep(0.3)
        out["acked"] = sim.dump()
        assert sim.answer() == ""
        for be in ("vbd/%d/51712", "vif/%d/0"):
            sim.wait_key("/local/domain/0/backend/%s/state" % (be % domid), "6")
        sim.ok("destroy", domid)
        out["after"] = sim.dump()
        sim.send("quit")
        sim.cli.wait(timeout=10)
    finally:
        sim.stop()
    out["events"] = trace_events(sim.trace)
    return out


def fixture(name):
    return open(os.path.join(FIX, name)).read()


def test_dom0_before_any_guest(run):
    # dom0's own keys: xenstored's (/tool/xenstored, domid, name), dom0's
    # kernel's control/feature-* and xen-init-dom0's /local/pool/0/name
    # (written by xenops_init when absent): all of them, no exclusion
    ours, real = norm(run["before"]), norm(fixture("dom0-before.txt"))
    assert ours == real, diff(ours, real)


def test_running_guest_tree(run):
    ours = norm(run["running"])
    real = norm(fixture("pv-guest-running.txt"), run["disk"])
    assert ours == real, diff(ours, real)


def test_tree_after_the_shutdown_request_is_acknowledged(run):
    # as on the real host, the request and its acknowledgement leave no
    # trace in a snapshot: the running tree again
    ours = norm(run["acked"])
    real = norm(fixture("pv-guest-shutdown-acked.txt"), run["disk"])
    assert ours == real, diff(ours, real)


def test_tree_after_destroy(run):
    # dom0's keys, and the empty /vm and /libxl that stay
    ours, real = norm(run["after"]), norm(fixture("after-destroy.txt"))
    assert ours == real, diff(ours, real)


def test_device_state_sequences(run):
    ours = device_sequences(run["events"])
    real = device_sequences(fixture_events())
    assert sorted(ours) == sorted(real) == ["console/0", "vbd/51712", "vif/0"]
    for dev in real:
        assert ours[dev] == real[dev], "%s:\nours %s\nreal %s" % (dev, ours[dev], real[dev])
    # spelled out, what the recording shows
    vbd = [s for s in real["vbd/51712"] if "state=" in s]
    assert vbd == ["dom0 front state=1", "dom0 back state=1", "dom0 back state=2",
                   "guest front state=3", "dom0 back state=4", "guest front state=4",
                   "guest front state=5", "dom0 back state=5", "guest front state=6",
                   "dom0 back state=6"]
    vif = [s for s in real["vif/0"] if "state=" in s]
    assert "guest front state=3" not in vif and "guest front state=4" in vif


def test_shutdown_acknowledged_in_a_transaction(run):
    ours = shutdown_handshake(run["events"])
    real = shutdown_handshake(fixture_events())
    assert ours == real
    assert real[:3] == [["TRANSACTION_START"], ["WRITE", "control/shutdown"],
                        ["TRANSACTION_END", "T"]]


def test_teardown_removals_in_xl_order(run):
    real_uuid = open(os.path.join(FIX, "logs", "meta.txt")).read().split("uuid ")[1].split()[0]
    ours = removals(run["events"], run["domid"], UUID)
    real = removals(fixture_events(), 1, real_uuid)
    assert ours == real, "\n".join("%-60s %s" % (a, b) for a, b in
                                   __import__("itertools").zip_longest(ours, real, fillvalue=""))
