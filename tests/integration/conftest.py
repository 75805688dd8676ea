"""Start a real xapi daemon (sim backend) on free loopback ports with a
temporary state directory, and give tests clients for it."""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XAPI_BIN = os.environ.get("XAPI_BIN", os.path.join(ROOT, "build", "src", "xapi", "xapi"))
PASSWORD = "test-Secret-1"


# The fields VM.create requires, with plain values.
MIN_VM = {"name_label": "t", "name_description": "", "user_version": 1, "is_a_template": False,
          "affinity": "OpaqueRef:NULL", "memory_static_max": 1 << 30, "memory_dynamic_max": 1 << 30,
          "memory_dynamic_min": 1 << 29, "memory_static_min": 1 << 28, "VCPUs_params": {},
          "VCPUs_max": 1, "VCPUs_at_startup": 1, "actions_after_shutdown": "destroy",
          "actions_after_reboot": "restart", "actions_after_crash": "restart", "PV_bootloader": "",
          "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
          "PV_legacy_args": "", "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
          "PCI_bus": "", "other_config": {}, "recommendations": ""}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Xapi:
    """One running daemon."""

    def __init__(self, state_dir, extra_args=()):
        self.state = state_dir
        self.extra = list(extra_args)
        self.proc = None
        self.start()

    def start(self):
        self.http_port = free_port()
        self.https_port = free_port()
        self.sock = os.path.join(self.state, "xapi.sock")
        self.log = open(os.path.join(self.state, "xapi.log"), "ab")
        self.proc = subprocess.Popen(
            [XAPI_BIN, "--config=", "--state-dir", self.state, "--bind", "127.0.0.1",
             "--http-port", str(self.http_port), "--https-port", str(self.https_port),
             "--unix-socket", self.sock, "--root-password", PASSWORD] + self.extra,
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("xapi exited with %s; log:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("xapi did not start; log:\n" + self.read_log())

    def read_log(self):
        with open(os.path.join(self.state, "xapi.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self, sig=signal.SIGTERM, host=None):
        """Stop xapi; with host (default: unless sig is SIGKILL) also what
        it leaves running (stop_host)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()
        if host if host is not None else sig != signal.SIGKILL:
            self.stop_host()

    def stop_host(self):
        """What stays behind xapi by design (xenstored, cxapi-simguest and
        the simulated domains, docs/vm.md): SIGTERM to their pids, and wait
        (at most 5 s) until they are gone, so that nothing writes into the
        state directory after the test removes it (xenstored dumps its store
        at SIGTERM)."""
        pids = []
        for pidfile, comm in (("sim/xs/xenstored.pid", "xenstored"),
                              ("sim/simguest.pid", "cxapi-simguest")):
            try:
                with open(os.path.join(self.state, pidfile)) as f:
                    pid = int(f.read().split()[0])
                with open("/proc/%d/comm" % pid) as f:  # not a reused pid
                    if f.read().strip() != comm[:15]:
                        continue
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (OSError, ValueError, IndexError):
                pass
        end = time.time() + 5
        while pids and time.time() < end:
            pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
            time.sleep(0.02)

    def kill9(self):
        self.stop(signal.SIGKILL)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    # -- raw clients --
    def post(self, path, body, content_type="text/xml", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        h = {"Content-Type": content_type}
        h.update(headers or {})
        c.request("POST", path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data

    def jsonrpc(self, method, params, version="2.0", id=1):
        req = {"method": method, "params": params, "id": id}
        if version:
            req["jsonrpc"] = version
        r, data = self.post("/jsonrpc", json.dumps(req), "application/json")
        assert r.status == 200, (r.status, data)
        assert r.getheader("Content-Type") == "application/json"
        return json.loads(data)

    def json_call(self, method, *params):
        """JSON-RPC 2.0 call; returns the result or raises JsonError."""
        rep = self.jsonrpc(method, list(params))
        if "error" in rep:
            e = rep["error"]
            raise JsonError([e["message"]] + list(e.get("data", [])))
        return rep["result"]

    def json_login(self, user="root", pw=PASSWORD):
        return self.json_call("session.login_with_password", user, pw)


class JsonError(Exception):
    def __init__(self, details):
        super().__init__(details)
        self.details = details


@pytest.fixture(scope="session")
def xapi_bin():
    if not os.path.exists(XAPI_BIN):
        pytest.fail("xapi binary not built: " + XAPI_BIN)
    return XAPI_BIN


def xapi_daemon(prefix, args=()):
    """A daemon on a new state directory; afterwards stopped with what it
    leaves running (also after a test's kill9), the directory removed."""
    d = tempfile.mkdtemp(prefix=prefix)
    x = Xapi(d, args)
    yield x
    x.stop()
    x.stop_host()
    subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="module")
def server(xapi_bin):
    yield from xapi_daemon("cxapi-it-")


@pytest.fixture
def fresh_server(xapi_bin):
    yield from xapi_daemon("cxapi-it-")


# VMs that boot in 50 ms and stop in 20 ms (test_vm_power, test_vm_flow)
SIM_FAST = ["--sim-boot-ms", "50", "--sim-shutdown-ms", "20"]


@pytest.fixture(scope="module")
def sim_server(xapi_bin):
    yield from xapi_daemon("cxapi-sim-", SIM_FAST)


@pytest.fixture(scope="module")
def XenAPI():
    from os_xenapi.client import XenAPI as mod
    return mod


def root_session(x, XenAPI):
    """A root session on daemon x; logged out afterwards."""
    s = XenAPI.Session(x.url)
    s.login_with_password("root", PASSWORD)
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


@pytest.fixture(scope="module")
def session(server, XenAPI):
    yield from root_session(server, XenAPI)


@pytest.fixture(scope="module")
def sim_session(sim_server, XenAPI):
    yield from root_session(sim_server, XenAPI)


def fail(fn, *args):
    """The XenAPI failure's details of fn(*args), which must fail."""
    from os_xenapi.client.XenAPI import Failure
    with pytest.raises(Failure) as e:
        fn(*args)
    return e.value.details


MIB = 1024 * 1024


def vm_record(name, mem=256 * MIB, **kw):
    """A VM.create record: mem static/dynamic max and dynamic min (half of it
    static min), 2 vCPUs (1 at start), the rest empty; kw overrides."""
    rec = {"name_label": name, "name_description": "", "user_version": "1",
           "is_a_template": False, "affinity": "OpaqueRef:NULL",
           "memory_static_max": str(mem), "memory_dynamic_max": str(mem),
           "memory_dynamic_min": str(mem), "memory_static_min": str(mem // 2),
           "VCPUs_params": {}, "VCPUs_max": "2", "VCPUs_at_startup": "1",
           "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
           "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "",
           "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
           "PV_legacy_args": "", "HVM_boot_policy": "",
           "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
           "recommendations": ""}
    rec.update(kw)
    return rec


class XsTools:
    """Debian's xenstore-* tools against one of our xenstoreds, through its
    socket (XENSTORED_PATH).  WAIT: wait_key's default timeout, seconds."""
    WAIT = 5

    def __init__(self, sock):
        self.sock = sock

    def env(self):
        return dict(os.environ, XENSTORED_PATH=self.sock)

    def xs(self, tool, *args, check=True):
        r = subprocess.run([tool] + list(args), capture_output=True, text=True, env=self.env())
        if check:
            assert r.returncode == 0, "%s %s: %s" % (tool, args, r.stderr)
        return r

    def read(self, path):
        """The value at path, None if it is absent."""
        r = self.xs("xenstore-read", path, check=False)
        return r.stdout.rstrip("\n") if r.returncode == 0 else None

    def wait_key(self, path, value, timeout=None):
        end = time.time() + (timeout or self.WAIT)
        while time.time() < end:
            if self.read(path) == value:
                return
            time.sleep(0.02)
        raise AssertionError("%s is %r, not %r" % (path, self.read(path), value))


@pytest.fixture(scope="module")
def jsess(server):
    return server.json_login()
