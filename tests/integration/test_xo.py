"""Xen Orchestra's real connector, npm `xen-api` (pinned in tests/xo/package.json),
against a real daemon, over JSON-RPC and XML-RPC, HTTP and HTTPS.

Each test runs tests/xo/client.mjs with node for a list of steps (see that
file); the script prints one JSON line per step.  When a step needs another
client to act (create, rename or destroy a VM) it asks on stdout and this file
does it with raw JSON-RPC, then answers on stdin.  docs/clients.md describes
what is covered.
"""
import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading

import pytest

from conftest import MIN_VM, PASSWORD, ROOT, JsonError

XO_DIR = os.path.join(ROOT, "tests", "xo")
CLIENT = os.path.join(XO_DIR, "client.mjs")
TRANSPORTS = ["json-rpc", "xml-rpc"]



@pytest.fixture(scope="session")
def node():
    exe = shutil.which("node") or shutil.which("nodejs")
    if exe is None:
        pytest.fail("node is not installed (scripts/deps.sh installs Debian's nodejs and npm)")
    if not os.path.exists(os.path.join(XO_DIR, "node_modules", "xen-api", "package.json")):
        # scripts/test.sh runs this; do it here too for a bare pytest run
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", XO_DIR],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail("npm ci --prefix tests/xo failed:\n" + r.stdout + r.stderr)
    with open(os.path.join(XO_DIR, "node_modules", "xen-api", "package.json")) as f:
        assert json.load(f)["version"] == "4.7.6"
    return exe


@pytest.fixture(scope="module")
def other(server):
    """The other client: raw JSON-RPC with its own session."""
    return server.json_login()


class Run:
    def __init__(self, steps, lines, stderr, rc):
        self.steps = steps
        self.lines = lines
        self.stderr = stderr
        self.rc = rc

    def ok(self, *names):
        for n in names:
            s = self.steps.get(n)
            assert s is not None, "step %s did not run; output:\n%s\nstderr:\n%s" % (
                n, "\n".join(self.lines), self.stderr[-3000:])
            assert s["ok"], "step %s failed: %s\nstderr:\n%s" % (n, s.get("error"), self.stderr[-3000:])
        return [self.steps[n] for n in names]


def run_xo(node, server, other, steps, transport="auto", https=False, proxy=None,
           allow_unauthorized=True, timeout=180, extra=()):
    url = ("https://127.0.0.1:%d" % server.https_port) if https else server.url
    cmd = [node, CLIENT, "--url=" + url, "--user=root", "--password=" + PASSWORD,
           "--transport=" + transport, "--steps=" + ",".join(steps)] + list(extra)
    if allow_unauthorized:
        cmd.append("--allow-unauthorized")
    if proxy:
        cmd.append("--proxy=" + proxy)
    p = subprocess.Popen(cmd, cwd=XO_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1)
    err_chunks = []
    t_err = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()), daemon=True)
    t_err.start()
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    steps_out, lines = {}, []
    try:
        for line in p.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "ask" in msg:
                p.stdin.write(json.dumps(answer(server, other, msg)) + "\n")
                p.stdin.flush()
            elif "step" in msg:
                steps_out[msg["step"]] = msg
        rc = p.wait()
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    t_err.join(5)
    return Run(steps_out, lines, "".join(err_chunks), rc)


def answer(server, session, msg):
    """Do what the XO script asks another client to do."""
    try:
        a = msg["ask"]
        if a == "create_vm":
            ref = server.json_call("VM.create", session, dict(MIN_VM, name_label=msg["name_label"]))
            return {"ok": True, "ref": ref}
        if a == "rename_vm":
            server.json_call("VM.set_name_label", session, msg["ref"], msg["name_label"])
            return {"ok": True}
        if a == "destroy_vm":
            server.json_call("VM.destroy", session, msg["ref"])
            return {"ok": True}
        if a == "vdi_records":
            return {"ok": True, "records": {r: server.json_call("VDI.get_record", session, r)
                                            for r in msg["refs"]}}
        return {"ok": False, "error": "unknown ask " + a}
    except Exception as e:  # reported by the script as its step's failure
        return {"ok": False, "error": repr(e)}


def paths(run):
    (wire,) = run.ok("wire")
    return [s["path"] for s in wire["seen"]]


def methods(run):
    (wire,) = run.ok("wire")
    return [s["method"] for s in wire["seen"]]


# ------------------------------------------------------------------ no events needed

@pytest.mark.parametrize("transport", TRANSPORTS + ["auto"])
def test_connect_and_call(node, server, other, transport):
    """Login, pool.get_all_records, system.listMethods; calls, errors, map entries."""
    r = run_xo(node, server, other, ["connect", "calls"], transport=transport)
    connect, calls = r.ok("connect", "calls")
    assert connect["pool"] == server.json_call("pool.get_all", other)[0]
    methods = server.json_call("system.listMethods")
    assert sorted(connect["types"]) == sorted(
        {m.split(".")[0] for m in methods if m.endswith(".get_all_records")})
    assert calls["vms"] == len(server.json_call("VM.get_all", other))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transport_on_the_wire(node, server, other, transport):
    """Through a recording proxy: a forced transport uses only its own path."""
    r = run_xo(node, server, other, ["connect", "calls", "wire"], transport=transport, proxy="record")
    path = {"json-rpc": "POST /jsonrpc", "xml-rpc": "POST /xmlrpc"}[transport]
    seen = paths(r)
    assert len(seen) > 10 and set(seen) == {path}, seen


def test_auto_prefers_jsonrpc(node, server, other):
    r = run_xo(node, server, other, ["connect", "calls", "wire"], transport="auto", proxy="record")
    assert set(paths(r)) == {"POST /jsonrpc"}, paths(r)


def test_auto_falls_back_to_xmlrpc_on_an_old_host(node, server, other):
    """A proxy answers /jsonrpc with 200 text/xml like a host without JSON-RPC:
    XO switches to XML-RPC on /xmlrpc for good, and everything works there."""
    r = run_xo(node, server, other, ["connect", "calls", "wire"], transport="auto", proxy="old-host")
    seen = paths(r)
    assert seen[0] == "POST /jsonrpc"
    assert set(seen[1:]) == {"POST /xmlrpc"} and len(seen) > 10, seen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_https_allow_unauthorized(node, server, other, transport):
    r = run_xo(node, server, other, ["connect", "calls"], transport=transport, https=True)
    r.ok("connect", "calls")


def test_https_self_signed_rejected_without_allow_unauthorized(node, server, other):
    r = run_xo(node, server, other, ["connect"], https=True, allow_unauthorized=False)
    s = r.steps["connect"]
    assert not s["ok"] and "self-signed certificate" in s["error"], s


def test_bad_password(node, server, other):
    r = run_xo(node, server, other, ["connect"], extra=["--password=wrong"])
    # the later --password wins in client.mjs's argument parsing
    s = r.steps["connect"]
    assert not s["ok"] and s["code"] == "SESSION_AUTHENTICATION_FAILED", s


# ------------------------------------------------------------------ event.from and tasks

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cache_fill(node, server, other, transport):
    """event.inject, every <T>.get_all_records, then event.from: the cache equals
    get_all_records, and adds and deletes made by another client reach it."""
    r = run_xo(node, server, other, ["connect", "cache", "events"], transport=transport)
    cache, _ = r.ok("cache", "events")
    assert cache["counts"]["VM"] == len(server.json_call("VM.get_all", other))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_barrier(node, server, other, transport):
    r = run_xo(node, server, other, ["connect", "barrier"], transport=transport)
    r.ok("barrier")
    oc = server.json_call("pool.get_other_config", other, server.json_call("pool.get_all", other)[0])
    assert not [k for k in oc if k.startswith("xo:barrier:")], oc


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sees_set_name_label_by_another_client(node, server, other, transport):
    r = run_xo(node, server, other, ["connect", "watch"], transport=transport)
    r.ok("watch")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_async(node, server, other, transport):
    """callAsync: Async.VM.create / set_order / destroy, the task watched through
    events, its XML-RPC result decoded, error_info as XapiError, task.destroy."""
    r = run_xo(node, server, other, ["connect", "async"], transport=transport)
    r.ok("async")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_everything_over_https(node, server, other, transport):
    r = run_xo(node, server, other, ["connect", "calls", "cache", "events", "barrier", "watch", "async"],
               transport=transport, https=True)
    r.ok("connect", "calls", "cache", "events", "barrier", "watch", "async")


def test_event_from_blocks_while_other_calls_go_on(node, server, other):
    """XO keeps one event.from open for up to 60 s and makes its other calls
    meanwhile: an idle watcher must neither spin nor block them."""
    r = run_xo(node, server, other, ["connect", "cache", "idle", "calls", "barrier"], transport="json-rpc")
    _, idle, _, _ = r.ok("cache", "idle", "calls", "barrier")
    assert idle["event_from_calls"] <= 5, idle


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_sequence_on_the_wire(node, server, other, transport):
    """The calls XO makes, in order, as captured against the original; and
    valid_ref_counts.task matches XO's count of tasks, so it never refetches
    task.get_all_records (it does after any event.from where they differ)."""
    r = run_xo(node, server, other, ["connect", "idle", "barrier", "async", "wire"],
               transport=transport, proxy="record")
    m = methods(r)
    assert m[:4] == ["session.login_with_password", "pool.get_all_records", "system.listMethods",
                     "event.inject"], m[:6]
    first_from = m.index("event.from")
    types = r.steps["connect"]["types"]
    assert sorted(m[4:first_from]) == sorted(t + ".get_all_records" for t in types), m[4:first_from]
    assert m.count("task.get_all_records") == 1, [x for x in m if x.startswith(("event.", "task."))]
    assert "task.destroy" in m and "Async.VM.create" in m, m[-5:]


# ------------------------------------------------------------------ storage

MIB = 1 << 20
PIB = "1125899906842624"  # XO's Content-Length for a stream of unknown length


def pattern(n, seed):
    """The bytes client.mjs's pattern() makes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256((seed + str(i)).encode()).digest() * 128
        i += 1
    return bytes(out[:n])


def xo_data():
    """What the vdi-transfer step imports first (see client.mjs)."""
    return pattern(6 * MIB, "xo") + b"\0" * (4 * MIB) + pattern(2 * MIB + 1234, "xo-tail")


def export_raw(server, session, vdi):
    """The daemon's raw export of a VDI, read with http.client."""
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    c.request("GET", "/export_raw_vdi/?session_id=%s&vdi=%s&format=raw" % (session, vdi))
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200, (r.status, data[:200])
    return data


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vdi_create_snapshot_clone_resize_destroy(node, server, other, transport):
    """xo-server's VDI_create, snapshotVdi, VDI_clone, _resizeVdi and
    VDI_destroy through callAsync; the cache follows every change (SR.VDIs,
    snapshot_of and snapshots, the hidden bases, virtual_size) and agrees with
    another client's VDI.get_record."""
    r = run_xo(node, server, other, ["connect", "vdi"], transport=transport)
    (vdi,) = r.ok("vdi")
    assert vdi["shrink_error"] == ["SR_BACKEND_FAILURE_79", "",
                                   "VDI Invalid size [opterr=shrinking not allowed]", ""], vdi
    for ref in (vdi["ref"], vdi["snapshot"], vdi["clone"]):
        with pytest.raises(JsonError) as e:
            server.json_call("VDI.get_record", other, ref)
        assert e.value.details == ["HANDLE_INVALID", "VDI", ref]
    tasks = server.json_call("task.get_all_records", other)
    assert not [t for t in tasks.values() if t["name_label"].startswith("Async.VDI.")], tasks


def check_vdi(server, session, ref, want):
    """Another client's raw export of a VDI holds want, then zeros."""
    got = export_raw(server, session, ref)
    assert len(got) == 16 * MIB and got[:len(want)] == want
    assert got[len(want):].count(0) == len(got) - len(want)
    assert server.json_call("VDI.get_other_config", session, ref) == {}


def no_xo_tasks(server, session):
    tasks = server.json_call("task.get_all_records", session)
    assert not [t for t in tasks.values() if t["name_label"].startswith("[XO] ")], tasks


def transfers(wire):
    """The HTTP transfers the proxy saw: (path, format, vdi, Content-Length,
    whether task_id was given); every one with XO's session and no chunking."""
    seen = [s for s in wire["seen"] if not s["path"].startswith("POST ")]
    sid = seen[0]["query"]["session_id"]
    assert sid.startswith("OpaqueRef:")
    for s in seen:
        assert s["query"]["session_id"] == sid and s.get("transfer_encoding") is None, s
        assert set(s["query"]) <= {"session_id", "task_id", "format", "vdi"}, s
        assert s["query"].get("task_id", "OpaqueRef:").startswith("OpaqueRef:"), s
    return [(s["path"], s["query"].get("format"), s["query"].get("vdi"), s.get("content_length"),
             "task_id" in s["query"]) for s in seen]


def check_transfer(server, other, x, tmp_path):
    """What the vdi-transfer step imported, read by another client; XO's vhd
    export read by qemu-img."""
    data = xo_data()
    assert x["data_len"] == len(data) and x["data_sha256"] == hashlib.sha256(data).hexdigest()
    a = x["vdis"]["a"]
    assert x["raw_export"] == {"result": a, "status": "success"}, x
    check_vdi(server, other, a, data)
    assert os.path.getsize(x["vhd_file"]) == x["vhd_len"]
    conv = str(tmp_path / "xo-export.raw")
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", x["vhd_file"], conv], check=True)
    with open(conv, "rb") as f:
        got = f.read()
    assert len(got) >= 16 * MIB and got[:len(data)] == data and got[len(data):].count(0) == len(got) - len(data)
    no_xo_tasks(server, other)
    server.json_call("VDI.destroy", other, a)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vdi_import_export(node, server, other, transport, tmp_path):
    """VDI_importContent / VDI_exportContent as xo-server does them, through
    a recording proxy: putResource of a stream with its length is an empty
    probe PUT without task_id, then the PUT with XO's task and the exact
    length; the exports (raw, vhd: read back by qemu-img) carry XO's task;
    every task settles in events with the VDI as result and is destroyed."""
    r = run_xo(node, server, other, ["connect", "vdi-transfer", "wire"], transport=transport,
               proxy="record", extra=["--tmpdir=" + str(tmp_path)])
    x, wire = r.ok("vdi-transfer", "wire")
    a = x["vdis"]["a"]
    assert transfers(wire) == [
        ("PUT /import_raw_vdi/", "raw", a, "0", False),   # the probe
        ("PUT /import_raw_vdi/", "raw", a, str(x["data_len"]), True),
        ("GET /export_raw_vdi/", "raw", a, None, True),
        ("GET /export_raw_vdi/", "vhd", a, None, True),
    ], transfers(wire)
    check_transfer(server, other, x, tmp_path)


def test_vdi_import_export_over_https(node, server, other, tmp_path):
    """The same straight to the daemon's TLS port: putResource goes through
    Node's https, getResource through undici, both with allowUnauthorized."""
    r = run_xo(node, server, other, ["connect", "vdi-transfer"], transport="json-rpc", https=True,
               extra=["--tmpdir=" + str(tmp_path)])
    (x,) = r.ok("vdi-transfer")
    check_transfer(server, other, x, tmp_path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vdi_import_stream_of_unknown_length(node, server, other, transport):
    """putResource of streams without a length: a vhd export's body piped
    into a vhd import (how xo-server copies a VDI), then a raw stream.  XO
    sends the probe (with the 1 PiB Content-Length too, and no task_id), then
    the data with Content-Length 1 PiB and XO's task, and closes after it.
    The proxy holds back the close of the probe for 500 ms, as a slow network
    may: XO does not wait for it before the real PUT, so the probe must not
    hold the VDI (it is answered at once and does nothing until data comes)."""
    r = run_xo(node, server, other, ["connect", "vdi-stream", "wire"], transport=transport,
               proxy="record", extra=["--probe-close-delay=500"])
    step = r.steps.get("vdi-stream")
    assert step is not None, r.lines
    (wire,) = r.ok("wire")
    seen = transfers(wire)
    a, b = seen[0][2], seen[3][2]
    assert seen[:5] == [
        ("PUT /import_raw_vdi/", "raw", a, "0", False),
        ("PUT /import_raw_vdi/", "raw", a, str(len(xo_data())), True),
        ("GET /export_raw_vdi/", "vhd", a, None, True),   # piped into b:
        ("PUT /import_raw_vdi/", "vhd", b, PIB, False),   # the probe: 1 PiB too
        ("PUT /import_raw_vdi/", "vhd", b, PIB, True),
    ], seen
    (x,) = r.ok("vdi-stream")
    v = x["vdis"]
    c = v["c"]
    assert seen[5:] == [
        ("GET /export_raw_vdi/", "raw", b, None, True),
        ("PUT /import_raw_vdi/", "raw", c, PIB, False),
        ("PUT /import_raw_vdi/", "raw", c, PIB, True),
        ("GET /export_raw_vdi/", "raw", c, None, True),
    ], seen
    # the outcome XO read from the tasks: the VDI, for both kinds of stream
    assert x["vhd_stream_import"] == {"result": v["b"], "task": {
        "status": "success", "result": "<value>%s</value>" % v["b"], "error_info": []}}, x
    assert x["raw_stream_import"] == {"result": v["c"], "task": {
        "status": "success", "result": "<value>%s</value>" % v["c"], "error_info": []}}, x
    raw_data = pattern(5 * MIB + 17, "xo-raw-stream")
    assert x["raw_stream_sha256"] == hashlib.sha256(raw_data).hexdigest()
    check_vdi(server, other, v["a"], xo_data())
    check_vdi(server, other, v["b"], xo_data())
    check_vdi(server, other, v["c"], raw_data)
    no_xo_tasks(server, other)
    for ref in v.values():
        server.json_call("VDI.destroy", other, ref)


# ------------------------------------------------------------------ VMs

def vm_flow(node, server, other, transport):
    """Run the vm-flow step; check with another client that the VM and its
    disks are gone and the template is as it was; remove what XO left."""
    r = run_xo(node, server, other, ["connect", "vm-flow"], transport=transport)
    step = r.steps.get("vm-flow")
    try:
        (f,) = r.ok("vm-flow")
        for ref in (f["ref"],) + tuple(f["vdis"]):
            cls = "VM" if ref == f["ref"] else "VDI"
            with pytest.raises(JsonError) as e:
                server.json_call(cls + ".get_record", other, ref)
            assert e.value.details[0] == "HANDLE_INVALID", e.value.details
        t = server.json_call("VM.get_record", other, f["template"])
        assert t["is_a_template"] and t["current_operations"] == {} and 'sr=""' in t["other_config"]["disks"]
        assert f["os_version"]["distro"] == "debian", f
        tasks = server.json_call("task.get_all_records", other)
        assert not [x for x in tasks.values() if x["name_label"].startswith("Async.")], tasks
        return f
    finally:
        # what a failing run (or XO's warnings) left behind
        if step is not None and step.get("snapshot"):
            for ref in [step["snapshot"]]:
                try:
                    vbds = server.json_call("VM.get_VBDs", other, ref)
                    vdis = [server.json_call("VBD.get_VDI", other, b) for b in vbds]
                    server.json_call("VM.destroy", other, ref)
                    for v in vdis:
                        server.json_call("VDI.destroy", other, v)
                except JsonError:
                    pass


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vm_flow(node, server, other, transport):
    """xo-server's createVm from the Debian 12 template (callAsync VM.clone,
    the provisioning XML with the default SR's uuid, VM.provision, VIF_create),
    startVm (callAsync VM.start) with the cache followed until the VM is
    Running with guest metrics (os_version, the NIC's address), VBDs/VIFs
    attached, VM_metrics; VM_snapshot; revertVm of the running VM (callAsync
    VM.revert, then a start as the snapshot was of a Running VM); clean
    shutdown; VM_destroy (the VM, its snapshots, its disks)."""
    f = vm_flow(node, server, other, transport)
    assert f["ip"].startswith("10.0."), f


def test_vm_flow_snapshot_as_xo_does_it(node, server, other):
    f = vm_flow(node, server, other, "json-rpc")
    assert f["quirks"]["snapshot_set_is_a_template"] is None, f["quirks"]
    assert f["quirks"]["destroy_warnings"] == [], f["quirks"]
    assert not f["snapshot_left"], f
