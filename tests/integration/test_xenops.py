"""The domain manager (src/xenops) with the sim backend, driven for real:
tests/xenops/xenops_cli (built as build/src/simguest/xenops_cli) stands in
for xapi — it calls xenops_init, which starts our xenstored and
cxapi-simguest — and the trees, states and guest data are checked with
Debian's xenstore-* tools through XENSTORED_PATH.  See docs/vm.md.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import XsTools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
CLI = os.path.join(BUILD, "src", "simguest", "xenops_cli")
XENSTORED = os.path.join(BUILD, "src", "xs", "xenstored")

UUID = "11111111-2222-3333-4444-%012d"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CLI) and shutil.which("xenstore-read")),
    reason="needs %s and xenstore-utils" % CLI)


class Cli:
    def __init__(self, state, **opts):
        self.state = state
        args = [CLI, "--state", state, "--xenstored", XENSTORED]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        first = self.p.stdout.readline().strip()
        assert first == "ready", first

    def __call__(self, *cmd):
        self.p.stdin.write(" ".join(str(c) for c in cmd) + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def ok(self, *cmd):
        r = self(*cmd)
        assert r.startswith("ok"), "%s -> %s" % (cmd, r)
        return r[3:]

    def kill(self):
        self.p.kill()
        self.p.wait()

    def quit(self):
        if self.p.poll() is None:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=10)


class Host(XsTools):
    """A state directory: xenstored and cxapi-simguest live on across Cli
    restarts (as across xapi restarts) and are stopped at the end."""

    def __init__(self, tmp):
        self.dir = str(tmp)
        super().__init__(os.path.join(self.dir, "xs", "socket"))
        self.clis = []

    def cli(self, **opts):
        opts.setdefault("boot_ms", 0)
        opts.setdefault("shutdown_ms", 0)
        c = Cli(self.dir, **opts)
        self.clis.append(c)
        return c

    def ls(self, path):
        return self.xs("xenstore-ls", "-p", path).stdout

    def pids(self):
        out = []
        for f in ("xs/xenstored.pid", "simguest.pid"):
            try:
                out.append(int(open(os.path.join(self.dir, f)).read()))
            except (OSError, ValueError):
                pass
        return out

    def stop(self):
        for c in self.clis:
            if c.p.poll() is None:
                c.kill()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    yield h
    h.stop()


def spec(n, mib=256, vcpus=2, extra=""):
    return "uuid=%s name=vm%d mib=%d vcpus=%d %s" % (UUID % n, n, mib, vcpus, extra)


def info(cli, domid):
    f = cli.ok("info", domid).split()
    return {"domid": int(f[0]), "uuid": f[1], "state": f[2], "reason": f[3],
            "memory": int(f[4]), "vcpus": int(f[5]), "cpu": float(f[6])}


def wait_state(cli, domid, state, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        i = info(cli, domid)
        if i["state"] == state:
            return i
        time.sleep(0.02)
    raise AssertionError("domain %s is %s" % (domid, info(cli, domid)))


def test_start_writes_the_tree_and_the_guest_connects(host, tmp_path):
    disk = tmp_path / "disk.vhd"
    disk.write_bytes(b"\0" * (1 << 20))
    c = host.cli()
    d = int(c.ok("start", spec(1, extra="disk=xvda,%s,rw nic=0,aa:00:00:00:00:01,xenbr0" % disk)))
    assert d == 1
    dom = "/local/domain/%d" % d
    assert host.read(dom + "/name") == "vm1"
    assert host.read(dom + "/domid") == "1"
    assert host.read(dom + "/vm") == "/vm/" + UUID % 1
    assert host.read("/vm/%s/uuid" % (UUID % 1)) == UUID % 1
    assert host.read(dom + "/memory/static-max") == str(256 * 1024)
    assert host.read(dom + "/memory/target") == str(256 * 1024)
    assert host.read(dom + "/cpu/1/availability") == "online"
    assert host.read("/libxl/%d/type" % d) == "pv"
    # permissions as libxl sets them: dom0 owns the domain's dir, which the
    # domain may read; the guest owns what it writes (control/shutdown, data)
    top = [l for l in host.ls("/local/domain").splitlines() if l.startswith("1 =")]
    assert top and top[0].endswith("(n0,r1)")
    ctl = [l for l in host.ls(dom + "/control").splitlines() if l.startswith("shutdown")]
    assert ctl and ctl[0].endswith("(n1)")
    # frontends and backends reach Connected (the guest's frontends, our backends)
    be = "/local/domain/0/backend/vbd/%d/51712" % d
    host.wait_key(dom + "/device/vbd/51712/state", "4")
    host.wait_key(be + "/state", "4")
    assert host.read(be + "/sectors") == str((1 << 20) // 512)
    assert host.read(be + "/hotplug-status") == "connected"
    host.wait_key(dom + "/device/vif/0/state", "4")
    host.wait_key("/local/domain/0/backend/vif/%d/0/state" % d, "4")
    # the guest agent
    host.wait_key(dom + "/data/updated", "1")
    host.wait_key(dom + "/attr/vif/0/ipv4/0", "10.0.0.1")
    g = c.ok("guest", d)
    assert "present=1" in g and "distro=debian" in g and "major=7" in g
    assert "0/ip=10.0.0.1" in g and "total=%d" % (256 << 20) in g and "shutdown=1" in g
    i = info(c, d)
    assert i["state"] == "running" and i["vcpus"] == 2 and i["memory"] == 256 << 20
    # the domain owns its frontend dirs; dom0 may read them
    perms = [l for l in host.ls(dom + "/device/vbd").splitlines() if l.startswith("51712")]
    assert perms and perms[0].endswith("(n1,r0)")


def test_clean_shutdown_fires_release_domain_and_destroy_cleans_up(host):
    c = host.cli()
    d = int(c.ok("start", spec(1)))
    host.wait_key("/local/domain/%d/data/updated" % d, "1")
    assert c.ok("shutdown", d, "poweroff", 5) == ""
    i = info(c, d)
    assert (i["state"], i["reason"]) == ("shutdown", "poweroff")
    assert host.read("/local/domain/%d/control/shutdown" % d) == ""  # acknowledged
    assert c("wait-event", "domain", d, 5) == "ok"
    c.ok("destroy", d)
    assert host.read("/local/domain/%d/name" % d) is None
    assert host.read("/vm/%s/uuid" % (UUID % 1)) is None
    assert host.read("/libxl/%d/type" % d) is None
    assert c.ok("list") == ""
    # domids keep increasing, as Xen's
    assert int(c.ok("start", spec(2))) == d + 1


def sim_request(host, line):
    """One request to cxapi-simguest on sim.sock; its answer's lines."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(host.dir, "sim.sock"))
        f = s.makefile("r")
        s.sendall((line + "\n").encode())
        first = f.readline().rstrip("\n")
        n = int(first.split()[1]) if line.startswith("LIST") else 0
        return [first] + [f.readline().rstrip("\n") for _ in range(n)]


def test_list_down_names_only_the_domains_shut_down(host):
    # @releaseDomain asks for these only: its cost follows them, not all
    c = host.cli()
    d1 = int(c.ok("start", spec(1)))
    d2 = int(c.ok("start", spec(2)))
    host.wait_key("/local/domain/%d/data/updated" % d2, "1")
    assert sim_request(host, "LIST down") == ["OK 0"]
    free = int(c.ok("free"))
    c.ok("shutdown", d1, "poweroff", 5)
    assert c("wait-event", "domain", d1, 5) == "ok"
    down = sim_request(host, "LIST down")
    assert down[0] == "OK 1" and down[1].split()[:4] == [str(d1), UUID % 1, "2", "0"]
    assert sim_request(host, "LIST")[0] == "OK 2"
    c.ok("destroy", d1)
    assert sim_request(host, "LIST down") == ["OK 0"]
    assert int(c.ok("free")) == free + (256 << 20) + (2 << 20)
    assert [l.split()[0] for l in sim_request(host, "LIST")] == ["OK", str(d2)]


def test_reboot_halt_and_pause(host):
    c = host.cli()
    d = int(c.ok("start", spec(1)))
    host.wait_key("/local/domain/%d/data/updated" % d, "1")
    c.ok("pause", d)
    assert info(c, d)["state"] == "paused"
    # a paused guest cannot answer
    assert c("shutdown", d, "reboot", 1) == "error VM_SHUTDOWN_TIMEOUT %s 1" % (UUID % 1)
    c.ok("unpause", d)
    # ... and answers once it runs again
    i = wait_state(c, d, "shutdown")
    assert i["reason"] == "reboot"
    c.ok("destroy", d)
    d = int(c.ok("start", spec(1, extra="paused=1")))
    assert info(c, d)["state"] == "paused"
    c.ok("unpause", d)
    host.wait_key("/local/domain/%d/data/updated" % d, "1")
    c.ok("shutdown", d, "halt", 5)
    assert info(c, d)["reason"] == "halt"


def test_faults(host):
    c = host.cli(faults="start-fails=%s,ignore-shutdown=%s,crash=%s" % (UUID % 1, UUID % 2, UUID % 3),
                 boot_ms=50)
    r = c("start", spec(1))
    assert r.startswith("error INTERNAL_ERROR"), r
    assert c.ok("list") == ""
    d2 = int(c.ok("start", spec(2)))
    host.wait_key("/local/domain/%d/data/updated" % d2, "1")
    assert c("shutdown", d2, "poweroff", 1) == "error VM_SHUTDOWN_TIMEOUT %s 1" % (UUID % 2)
    assert info(c, d2)["state"] == "running"
    assert host.read("/local/domain/%d/control/shutdown" % d2) == "poweroff"  # not acknowledged
    d3 = int(c.ok("start", spec(3)))
    assert c("wait-event", "domain", d3, 5) == "ok"
    i = info(c, d3)
    assert (i["state"], i["reason"]) == ("shutdown", "crash")


def test_not_enough_free_memory(host):
    c = host.cli(host_mib=2048, dom0_mib=1024)
    free = int(c.ok("free"))
    assert free == 1024 << 20
    d = int(c.ok("start", spec(1, mib=512, vcpus=1)))
    assert int(c.ok("free")) == free - (512 << 20) - (1 << 20)
    r = c("start", spec(2, mib=1024, vcpus=1)).split()
    assert r[:2] == ["error", "HOST_NOT_ENOUGH_FREE_MEMORY"]
    assert int(r[2]) == (1024 << 20) + (1 << 20) and int(r[3]) == free - (512 << 20) - (1 << 20)
    c.ok("destroy", d)
    assert int(c.ok("free")) == free


def test_suspend_and_resume(host, tmp_path):
    c = host.cli()
    d = int(c.ok("start", spec(1, extra="nic=0,aa:00:00:00:00:01,xenbr0")))
    host.wait_key("/local/domain/%d/data/updated" % d, "1")
    img = str(tmp_path / "suspend.img")
    c.ok("suspend", d, img)
    assert c.ok("list") == ""
    assert host.read("/local/domain/%d/name" % d) is None
    assert os.path.getsize(img) > 0
    d2 = int(c.ok("resume", img, spec(1, extra="nic=0,aa:00:00:00:00:01,xenbr0")))
    assert d2 != d
    assert info(c, d2)["state"] == "running"
    host.wait_key("/local/domain/%d/device/vif/0/state" % d2, "4")
    host.wait_key("/local/domain/%d/data/updated" % d2, "1")
    bad = tmp_path / "bad.img"
    bad.write_text("nonsense")
    assert c("resume", bad, spec(5)).startswith("error INTERNAL_ERROR")


def test_plug_unplug_and_cds(host, tmp_path):
    c = host.cli()
    d = int(c.ok("start", spec(1, extra="disk=hdd,-,cd,empty")))
    dom = "/local/domain/%d" % d
    cd = "/local/domain/0/backend/vbd/%d/5696" % d
    assert host.read(cd + "/device-type") == "cdrom"
    assert host.read(cd + "/params") == ""
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 4096)
    c.ok("cd-insert", d, "hdd", iso)
    assert host.read(cd + "/params") == str(iso)
    c.ok("cd-eject", d, "hdd")
    assert host.read(cd + "/params") == ""
    disk = tmp_path / "d.vhd"
    disk.write_bytes(b"\0" * 8192)
    c.ok("plug-disk", d, "xvdb", disk, "rw")
    host.wait_key(dom + "/device/vbd/51728/state", "4")
    host.wait_key("/local/domain/0/backend/vbd/%d/51728/state" % d, "4")
    assert c("plug-disk", d, "xvdb", disk, "rw") == "error DEVICE_ALREADY_EXISTS xvdb"
    c.ok("unplug-disk", d, "xvdb")
    assert host.read(dom + "/device/vbd/51728/state") is None
    assert host.read("/local/domain/0/backend/vbd/%d/51728/state" % d) is None
    assert c("unplug-disk", d, "xvdb") == "error DEVICE_ALREADY_DETACHED xvdb"
    c.ok("plug-nic", d, 1, "aa:00:00:00:00:02", "xenbr0")
    host.wait_key(dom + "/device/vif/1/state", "4")
    host.wait_key(dom + "/attr/vif/1/ipv4/0", "10.1.0.1")
    c.ok("unplug-nic", d, 1)
    assert host.read(dom + "/device/vif/1/state") is None
    # a paused guest does not let go of its device: the unplug times out,
    # a forced one does not wait
    c.ok("plug-nic", d, 2, "aa:00:00:00:00:03", "xenbr0")
    host.wait_key(dom + "/device/vif/2/state", "4")
    c.ok("pause", d)
    c.ok("unplug-nic", d, 2, "force")
    assert host.read("/local/domain/0/backend/vif/%d/2/state" % d) is None


def test_memory_target_vcpus_sysrq(host):
    c = host.cli()
    d = int(c.ok("start", spec(1, mib=512, vcpus=4, extra="at-start=2")))
    dom = "/local/domain/%d" % d
    assert host.read(dom + "/cpu/2/availability") == "offline"
    host.wait_key(dom + "/data/updated", "1")
    c.ok("memory", d, 256)
    assert host.read(dom + "/memory/target") == str(256 * 1024)
    end = time.time() + 5
    while info(c, d)["memory"] != 256 << 20 and time.time() < end:
        time.sleep(0.02)
    assert info(c, d)["memory"] == 256 << 20  # the balloon followed
    c.ok("vcpus", d, 3)
    assert host.read(dom + "/cpu/2/availability") == "online"
    assert info(c, d)["vcpus"] == 3
    assert c("vcpus", d, 5).startswith("error INVALID_VALUE")
    assert c("trigger", d, "reset").startswith("error INTERNAL_ERROR")
    c.ok("sysrq", d, "c")  # sysrq-c: the guest crashes
    assert c("wait-event", "domain", d, 5) == "ok"
    assert info(c, d)["reason"] == "crash"


def test_restart_keeps_running_domains(host):
    c = host.cli()
    d1 = int(c.ok("start", spec(1)))
    d2 = int(c.ok("start", spec(2)))
    host.wait_key("/local/domain/%d/data/updated" % d2, "1")
    pids = host.pids()
    c.kill()  # xapi dies (kill -9)
    c2 = host.cli()
    assert host.pids() == pids  # the same xenstored and simulator
    listed = c2.ok("list").split()
    assert sorted(listed) == sorted(["%d:%s:running" % (d1, UUID % 1),
                                     "%d:%s:running" % (d2, UUID % 2)])
    assert host.read("/local/domain/%d/name" % d1) == "vm1"
    # the restarted manager still hears about the guests
    c2.ok("shutdown", d1, "poweroff", 5)
    assert c2("wait-event", "domain", d1, 5) == "ok"
    c2.ok("destroy", d1)
    c2.ok("destroy", d2)
    assert c2.ok("list") == ""


def test_hundred_vms_start_and_stop(host):
    c = host.cli(host_mib=1 << 20)
    n = 100
    t0 = time.time()
    domids = [int(c.ok("start", spec(i, mib=128, vcpus=1))) for i in range(n)]
    t1 = time.time()
    for d in domids:
        host_ok = c.ok("shutdown", d, "poweroff", 10)
        assert host_ok == ""
    for d in domids:
        c.ok("destroy", d)
    t2 = time.time()
    print("100 VMs: start %.3f s, clean shutdown + destroy %.3f s" % (t1 - t0, t2 - t1))
    assert c.ok("list") == ""
    assert t2 - t0 < 10
