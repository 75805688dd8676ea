"""Storage through the Python XenAPI client: SR create/scan/probe/forget/
introduce/destroy with PBD plug/unplug, VDI create/snapshot/clone/copy/
resize/destroy with their records as the original writes them, background
garbage collection, error cases (SR_HAS_PBD, HANDLE_INVALID,
SR_UNKNOWN_DRIVER, shrinking, SR_FULL on a tiny file system), Async.VDI.copy
with progress and cancellation, and a kill -9 in the middle of a copy."""
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import Xapi

NULL = "OpaqueRef:NULL"
MiB = 1 << 20
GiB = 1 << 30
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def wait_for(pred, timeout=20, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in %ss" % timeout)


def failure(XenAPI, fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def host_of(x):
    return x.host.get_all()[0]


def make_sr(x, path, name="file SR", type="file", size=0):
    return x.SR.create(host_of(x), {"location": path}, str(size), name, "", type, "user", False, {})


def new_vdi(x, sr, size=64 * MiB, name="disk", **kw):
    rec = {"name_label": name, "name_description": "d", "SR": sr, "virtual_size": str(size),
           "type": "user", "sharable": False, "read_only": False, "other_config": {"k": "v"},
           "xenstore_data": {}, "sm_config": {}, "tags": ["t1"]}
    rec.update(kw)
    return x.VDI.create(rec)


def fill(x, vdi, mib, pattern=0xab):
    """Write data into a VDI's file with qemu-io (the SR must be a file SR);
    then VDI.update refreshes the row."""
    r = x.VDI.get_record(vdi)
    sr = x.SR.get_record(r["SR"])
    path = x.PBD.get_device_config(sr["PBDs"][0])["location"]
    f = os.path.join(path, r["location"] + ".vhd")
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P %d 0 %dM" % (pattern, mib), f],
                   check=True, capture_output=True)
    x.VDI.update(vdi)


@pytest.fixture
def srdir():
    d = tempfile.mkdtemp(prefix="cxapi-sr-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def x(session):
    return session.xenapi


@pytest.fixture(scope="module")
def sr(x):
    d = tempfile.mkdtemp(prefix="cxapi-sr-")
    ref = make_sr(x, os.path.join(d, "sr"))
    yield ref
    shutil.rmtree(d, ignore_errors=True)


def test_supported_types(x):
    types = x.SR.get_supported_types()
    assert "file" in types and "iso" in types


def test_sr_create_record(x, srdir):
    path = os.path.join(srdir, "a")
    ref = make_sr(x, path, "mine")
    r = x.SR.get_record(ref)
    assert r["type"] == "file" and r["content_type"] == "user" and r["name_label"] == "mine"
    assert r["shared"] is False and r["VDIs"] == [] and r["current_operations"] == {}
    assert int(r["physical_size"]) > 0 and int(r["virtual_allocation"]) == 0
    assert int(r["physical_utilisation"]) >= 0
    for op in ("scan", "vdi_create", "vdi_snapshot", "vdi_clone", "vdi_destroy", "vdi_resize",
               "unplug", "plug", "pbd_create", "update"):
        assert op in r["allowed_operations"], op
    # attached PBD: no destroy or forget
    assert "destroy" not in r["allowed_operations"] and "forget" not in r["allowed_operations"]
    assert "vdi_mirror" not in r["allowed_operations"]
    [pbd] = r["PBDs"]
    p = x.PBD.get_record(pbd)
    assert p["currently_attached"] is True and p["host"] == host_of(x)
    assert p["device_config"] == {"location": path} and p["SR"] == ref
    assert os.path.isdir(path)


def test_unknown_driver_and_bad_refs(x, XenAPI, srdir):
    assert failure(XenAPI, make_sr, x, srdir, "n", "nosuch") == ["SR_UNKNOWN_DRIVER", "nosuch"]
    bad = "OpaqueRef:00000000-0000-0000-0000-000000000000"
    assert failure(XenAPI, x.VDI.snapshot, bad, {}) == ["HANDLE_INVALID", "VDI", bad]
    assert failure(XenAPI, x.SR.scan, bad) == ["HANDLE_INVALID", "SR", bad]
    assert failure(XenAPI, x.PBD.plug, bad) == ["HANDLE_INVALID", "PBD", bad]
    assert failure(XenAPI, x.VDI.set_virtual_size, bad, "1")[0] == "PERMISSION_DENIED"


def test_vdi_create_record(x, sr):
    before = int(x.SR.get_virtual_allocation(sr))
    v = new_vdi(x, sr, 10 * MiB + 1)
    r = x.VDI.get_record(v)
    assert int(r["virtual_size"]) >= 10 * MiB + 1 and int(r["virtual_size"]) % 512 == 0
    assert r["SR"] == sr and v in x.SR.get_VDIs(sr)
    assert r["managed"] is True and r["missing"] is False and r["is_a_snapshot"] is False
    assert r["snapshot_of"] == NULL and r["snapshots"] == []
    assert r["other_config"] == {"k": "v"} and r["tags"] == ["t1"] and r["type"] == "user"
    assert r["read_only"] is False and r["sharable"] is False and r["on_boot"] == "persist"
    assert UUID.match(r["location"]) and r["uuid"] == r["location"]
    assert "vhd-parent" not in r["sm_config"]
    assert r["allowed_operations"] == ["clone", "copy", "resize", "snapshot", "destroy",
                                       "forget", "update"]
    assert r["current_operations"] == {}
    assert int(x.SR.get_virtual_allocation(sr)) == before + int(r["virtual_size"])


def test_vdi_create_errors(x, XenAPI, sr):
    d = failure(XenAPI, lambda: new_vdi(x, sr, MiB, type="cbt_metadata"))
    assert d == ["VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata"]


def test_snapshot_and_clone_records(x, sr):
    v = new_vdi(x, sr, 32 * MiB, name="orig")
    s = x.VDI.snapshot(v, {})
    rv, rs = x.VDI.get_record(v), x.VDI.get_record(s)
    assert rs["is_a_snapshot"] is True and rs["snapshot_of"] == v
    assert x.VDI.get_snapshots(v) == [s]
    assert rs["snapshot_time"].value != "19700101T00:00:00Z"
    assert rs["name_label"] == "orig" and rs["other_config"] == {"k": "v"} and rs["tags"] == ["t1"]
    assert rs["virtual_size"] == rv["virtual_size"] and rs["SR"] == sr and rs["managed"] is True
    base = rv["sm_config"]["vhd-parent"]
    assert rs["sm_config"]["vhd-parent"] == base
    b = x.VDI.get_by_uuid(base)
    rb = x.VDI.get_record(b)
    assert rb["managed"] is False and rb["name_label"] == "base copy" and rb["read_only"] is True
    assert rb["location"] == base and rb["is_a_snapshot"] is False
    # unmanaged: no operation but forget/copy-free checks
    assert "snapshot" in rs["allowed_operations"] and "destroy" in rs["allowed_operations"]
    c = x.VDI.clone(v, {})
    rc = x.VDI.get_record(c)
    assert rc["is_a_snapshot"] is False and rc["snapshot_of"] == NULL
    assert rc["snapshot_time"].value == "19700101T00:00:00Z"
    assert rc["sm_config"]["vhd-parent"] == x.VDI.get_sm_config(v)["vhd-parent"]
    assert x.VDI.get_current_operations(v) == {}
    # managed VDIs count once each in the SR's allocation; bases not
    vs = [x.VDI.get_record(r) for r in x.SR.get_VDIs(sr)]
    assert int(x.SR.get_virtual_allocation(sr)) == sum(int(r["virtual_size"]) for r in vs if r["managed"])


def test_snapshot_of_base_is_refused(x, XenAPI, sr):
    v = new_vdi(x, sr, MiB)
    x.VDI.snapshot(v, {})
    b = x.VDI.get_by_uuid(x.VDI.get_sm_config(v)["vhd-parent"])
    assert failure(XenAPI, x.VDI.snapshot, b, {}) == ["VDI_NOT_MANAGED", b]
    assert failure(XenAPI, x.VDI.destroy, b) == ["VDI_NOT_MANAGED", b]


def test_resize(x, XenAPI, sr):
    v = new_vdi(x, sr, 16 * MiB)
    x.VDI.resize(v, str(64 * MiB))
    assert int(x.VDI.get_virtual_size(v)) >= 64 * MiB
    d = failure(XenAPI, x.VDI.resize, v, str(8 * MiB))
    assert d[0] == "SR_BACKEND_FAILURE_79"
    assert int(x.VDI.get_virtual_size(v)) >= 64 * MiB


def test_destroy_and_gc(x, sr):
    v = new_vdi(x, sr, 8 * MiB, name="gc-me")
    s = x.VDI.snapshot(v, {})
    base = x.VDI.get_sm_config(v)["vhd-parent"]
    assert x.VDI.get_by_uuid(base)
    x.VDI.destroy(s)
    assert s not in x.SR.get_VDIs(sr)
    # one child left: the background GC coalesces the base into v and the
    # rows follow (the base row goes, v loses its vhd-parent)
    wait_for(lambda: base not in [r["uuid"] for r in x.VDI.get_all_records().values()
                                  if r["SR"] == sr])
    wait_for(lambda: "vhd-parent" not in x.VDI.get_sm_config(v))
    x.VDI.destroy(v)
    assert v not in x.SR.get_VDIs(sr)


def test_scan_reconciles(x, srdir):
    path = os.path.join(srdir, "scan")
    sr = make_sr(x, path)
    v = new_vdi(x, sr, 4 * MiB)
    loc = x.VDI.get_location(v)
    # a file that appeared behind our back, and one that went
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic",
                    os.path.join(path, "11111111-2222-4333-8444-555555555555.vhd"), "8M"], check=True)
    os.unlink(os.path.join(path, loc + ".vhd"))
    x.SR.scan(sr)
    vdis = {x.VDI.get_location(r): r for r in x.SR.get_VDIs(sr)}
    assert loc not in vdis
    n = vdis["11111111-2222-4333-8444-555555555555"]
    r = x.VDI.get_record(n)
    assert r["managed"] is True and int(r["virtual_size"]) >= 8 * MiB
    assert r["uuid"] == "11111111-2222-4333-8444-555555555555"
    assert "scan" in x.SR.get_allowed_operations(sr)


def test_probe(x, XenAPI, srdir):
    path = os.path.join(srdir, "p")
    sr = make_sr(x, path)
    xml = x.SR.probe(host_of(x), {"location": path}, "file", {})
    assert x.SR.get_uuid(sr) in xml and "<SRlist>" in xml.replace(" ", "").replace("\n", "")
    assert failure(XenAPI, x.SR.probe, host_of(x), {"location": path}, "bogus", {}) == \
        ["SR_UNKNOWN_DRIVER", "bogus"]
    assert failure(XenAPI, x.SR.probe_ext, host_of(x), {"location": path}, "file", {})[0] == \
        "SR_OPERATION_NOT_SUPPORTED"


def test_unplug_forget_introduce_destroy(x, XenAPI, srdir):
    path = os.path.join(srdir, "life")
    sr = make_sr(x, path)
    uuid = x.SR.get_uuid(sr)
    v = new_vdi(x, sr, 4 * MiB, name="survivor")
    vuuid = x.VDI.get_uuid(v)
    [pbd] = x.SR.get_PBDs(sr)
    assert failure(XenAPI, x.SR.destroy, sr) == ["SR_HAS_PBD", sr]
    assert failure(XenAPI, x.SR.forget, sr) == ["SR_HAS_PBD", sr]
    assert failure(XenAPI, x.PBD.destroy, pbd) == ["OPERATION_NOT_ALLOWED", "PBD is currently attached"]
    x.PBD.unplug(pbd)
    assert x.PBD.get_currently_attached(pbd) is False
    ops = x.SR.get_allowed_operations(sr)
    assert "forget" in ops and "destroy" not in ops  # SR_NOT_EMPTY: a managed VDI
    assert failure(XenAPI, new_vdi, x, sr, MiB) == ["SR_HAS_NO_PBDS", sr]
    assert failure(XenAPI, x.VDI.resize, v, str(8 * MiB)) == ["SR_HAS_NO_PBDS", sr]
    x.SR.forget(sr)
    assert failure(XenAPI, x.SR.get_record, sr) == ["HANDLE_INVALID", "SR", sr]
    assert failure(XenAPI, x.PBD.get_record, pbd)[0] == "HANDLE_INVALID"
    assert failure(XenAPI, x.VDI.get_record, v)[0] == "HANDLE_INVALID"
    # bring it back: introduce, a PBD, plug, scan finds the VDI again
    sr2 = x.SR.introduce(uuid, "back", "", "file", "user", False, {})
    assert x.SR.get_uuid(sr2) == uuid and x.SR.get_PBDs(sr2) == []
    assert failure(XenAPI, x.SR.introduce, uuid, "again", "", "file", "user", False, {}) == \
        ["SR_UUID_EXISTS", uuid]
    pbd2 = x.PBD.create({"host": host_of(x), "SR": sr2, "device_config": {"location": path},
                         "other_config": {}})
    assert failure(XenAPI, x.PBD.create, {"host": host_of(x), "SR": sr2,
                                          "device_config": {"location": path}, "other_config": {}}) == \
        ["PBD_EXISTS", sr2, host_of(x), pbd2]
    assert x.PBD.get_currently_attached(pbd2) is False
    x.PBD.plug(pbd2)
    assert x.PBD.get_currently_attached(pbd2) is True
    x.SR.scan(sr2)
    [v2] = x.SR.get_VDIs(sr2)
    assert x.VDI.get_uuid(v2) == vuuid and x.VDI.get_managed(v2) is True
    # destroy: unplugged and empty
    x.PBD.unplug(pbd2)
    assert failure(XenAPI, x.SR.destroy, sr2) == ["SR_NOT_EMPTY"]
    x.PBD.plug(pbd2)
    x.VDI.destroy(v2)
    x.PBD.unplug(pbd2)
    x.SR.destroy(sr2)
    assert uuid not in [x.SR.get_uuid(r) for r in x.SR.get_all()]
    assert not os.path.exists(path) or not any(f.endswith(".vhd") for f in os.listdir(path))


def test_copy_sync(x, XenAPI, sr, srdir):
    v = new_vdi(x, sr, 8 * MiB, name="src")
    fill(x, v, 3)
    sr2 = make_sr(x, os.path.join(srdir, "dst"))
    c = x.VDI.copy(v, sr2, NULL, NULL)
    r = x.VDI.get_record(c)
    assert r["SR"] == sr2 and r["name_label"] == "src" and r["is_a_snapshot"] is False
    assert r["sm_config"] == {} and r["read_only"] is False and r["other_config"] == {"k": "v"}
    assert int(r["virtual_size"]) == int(x.VDI.get_virtual_size(v))
    # sparse: 3 MiB of data take two 2 MiB blocks, not the whole 8 MiB
    assert 3 * MiB <= int(r["physical_utilisation"]) < 8 * MiB
    assert x.VDI.get_current_operations(v) == {}
    # into an existing VDI, and its errors
    small = new_vdi(x, sr2, 4 * MiB)
    d = failure(XenAPI, x.VDI.copy, v, NULL, NULL, small)
    assert d == ["VDI_TOO_SMALL", small, x.VDI.get_virtual_size(v)]
    into = new_vdi(x, sr2, 8 * MiB)
    assert x.VDI.copy(v, NULL, NULL, into) == into
    assert int(x.VDI.get_physical_utilisation(into)) >= 3 * MiB
    ro = new_vdi(x, sr2, 8 * MiB, read_only=True)
    assert failure(XenAPI, x.VDI.copy, v, NULL, NULL, ro) == ["VDI_READONLY", ro]
    # with a base: only the differences
    s = x.VDI.snapshot(v, {})
    delta = x.VDI.copy(v, sr2, s, NULL)
    assert int(x.VDI.get_physical_utilisation(delta)) < 2 * MiB


def test_async_copy_progress_and_cancel(x, XenAPI, sr, srdir):
    v = new_vdi(x, sr, 256 * MiB, name="big")
    fill(x, v, 200)
    sr2 = make_sr(x, os.path.join(srdir, "dst2"))
    t = x.Async.VDI.copy(v, sr2, NULL, NULL)
    wait_for(lambda: x.task.get_status(t) != "pending", timeout=60)
    assert x.task.get_status(t) == "success"
    assert float(x.task.get_progress(t)) == 1.0
    c = re.search(r"OpaqueRef:[0-9a-f-]+", x.task.get_result(t)).group(0)
    assert int(x.VDI.get_physical_utilisation(c)) >= 200 * MiB
    x.task.destroy(t)
    # cancel while copying: the copy shows in current_operations, the task
    # ends cancelled and the half-made VDI is gone
    n_before = len(x.SR.get_VDIs(sr2))
    t = x.Async.VDI.copy(v, sr2, NULL, NULL)
    seen = wait_for(lambda: t in x.VDI.get_current_operations(v) or x.task.get_status(t) != "pending")
    assert seen
    x.task.cancel(t)
    wait_for(lambda: x.task.get_status(t) not in ("pending", "cancelling"), timeout=60)
    if x.task.get_status(t) == "cancelled":
        assert x.task.get_error_info(t) == ["TASK_CANCELLED", t]
        wait_for(lambda: len(x.SR.get_VDIs(sr2)) == n_before)
    assert x.VDI.get_current_operations(v) == {}
    assert "copy" in x.VDI.get_allowed_operations(v)


@pytest.fixture
def tiny_fs():
    d = tempfile.mkdtemp(prefix="cxapi-tiny-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d], capture_output=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a tmpfs: " + r.stderr.decode())
    yield d
    subprocess.run(["umount", d])
    os.rmdir(d)


def test_sr_full(x, XenAPI, tiny_fs):
    sr = make_sr(x, os.path.join(tiny_fs, "sr"))
    v = new_vdi(x, sr, 64 * MiB)   # thin: the virtual size may exceed the space
    # data that does not fit the file system: SR_FULL from a copy into it
    src_sr = x.VDI.get_SR(new_vdi(x, sr, MiB))
    assert src_sr == sr
    big = None
    for r in x.SR.get_all():
        if r != sr and x.SR.get_type(r) == "file" and x.PBD.get_currently_attached(x.SR.get_PBDs(r)[0]):
            big = r
            break
    assert big
    src = new_vdi(x, big, 16 * MiB)
    fill(x, src, 12)
    d = failure(XenAPI, x.VDI.copy, src, sr, NULL, NULL)
    assert d[0] == "SR_FULL" and len(d) == 3, d
    assert len(x.SR.get_VDIs(sr)) == 2  # the half-made copy is gone
    # a VDI whose metadata alone cannot fit
    d = failure(XenAPI, lambda: new_vdi(x, sr, 2000 * GiB))
    assert d[0] == "SR_FULL" and len(d) == 3
    for r in x.SR.get_VDIs(sr):
        x.VDI.destroy(r)
    [pbd] = x.SR.get_PBDs(sr)
    x.PBD.unplug(pbd)
    x.SR.destroy(sr)
    assert v


def test_restart_and_kill9_mid_copy(xapi_bin, XenAPI):
    d = tempfile.mkdtemp(prefix="cxapi-it-")
    srd = tempfile.mkdtemp(prefix="cxapi-sr-")
    srv = Xapi(d)
    try:
        s = XenAPI.Session(srv.url)
        s.login_with_password("root", "test-Secret-1")
        x = s.xenapi
        sr = make_sr(x, os.path.join(srd, "sr"))
        v = new_vdi(x, sr, 512 * MiB)
        fill(x, v, 400)
        t = x.Async.VDI.copy(v, sr, NULL, NULL)
        wait_for(lambda: x.VDI.get_current_operations(v) or x.task.get_status(t) != "pending")
        srv.kill9()
        srv.start()
        s = XenAPI.Session(srv.url)
        s.login_with_password("root", "test-Secret-1")
        x = s.xenapi
        # the rows come back, the SR still works, a scan reconciles; the
        # copy's mark is gone (cleared at start: storage_start, called by
        # main or else by the first storage call)
        assert x.VDI.get_virtual_size(v)
        x.SR.scan(sr)
        assert v in x.SR.get_VDIs(sr)
        assert x.VDI.get_current_operations(v) == {}
        # the start-up garbage collection pass rescans each SR (a "scan"
        # operation for a moment)
        wait_for(lambda: x.SR.get_current_operations(sr) == {})
        wait_for(lambda: "snapshot" in x.VDI.get_allowed_operations(v))
        s2 = x.VDI.snapshot(v, {})
        assert x.VDI.get_is_a_snapshot(s2) is True
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(srd, ignore_errors=True)


def test_iso_sr(x, XenAPI, srdir):
    sr = x.SR.create(host_of(x), {"location": srdir}, "0", "isos", "", "iso", "iso", False, {})
    with open(os.path.join(srdir, "tools.iso"), "wb") as f:
        f.write(b"\1" * (3 * 2048))
    x.SR.scan(sr)
    [v] = x.SR.get_VDIs(sr)
    r = x.VDI.get_record(v)
    assert r["name_label"] == "tools.iso" and r["location"] == "tools.iso"
    assert r["read_only"] is True and int(r["virtual_size"]) == 3 * 2048 and r["managed"] is True
    ops = x.SR.get_allowed_operations(sr)
    assert "scan" in ops and "vdi_create" not in ops and "vdi_snapshot" not in ops
    assert "snapshot" not in r["allowed_operations"] and "clone" not in r["allowed_operations"]
    assert failure(XenAPI, new_vdi, x, sr, MiB) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    assert failure(XenAPI, x.VDI.snapshot, v, {}) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    # a VDI copied out of the ISO SR into a file SR
    fsr = make_sr(x, os.path.join(srdir, "f"))
    c = x.VDI.copy(v, fsr, NULL, NULL)
    assert int(x.VDI.get_virtual_size(c)) >= 3 * 2048 and x.VDI.get_read_only(c) is False
    os.unlink(os.path.join(srdir, "tools.iso"))
    x.SR.scan(sr)
    assert x.SR.get_VDIs(sr) == []
