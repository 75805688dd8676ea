"""VM, VBD and VIF messages that need no running domain (src/api/vm.c),
through Debian's Python XenAPI module: the operation machinery
(allowed_operations per the original's xapi_vm_lifecycle.ml), VM.create /
destroy, setters, VBD/VIF create/destroy, allowed devices."""
import pytest

from conftest import MIB, fail, vm_record

TEMPLATE_OPS = {"clone", "copy", "export", "metadata_export", "provision",
                "changing_dynamic_range", "changing_static_range",
                "changing_shadow_memory", "changing_NVRAM"}
HALTED_OPS = {"snapshot", "clone", "copy", "start", "start_on", "migrate_send",
              "changing_dynamic_range", "changing_static_range",
              "changing_shadow_memory", "changing_NVRAM", "make_into_template",
              "export", "metadata_export", "destroy", "create_vtpm"}
DOM0_OPS = {"metadata_export", "changing_dynamic_range", "changing_static_range"}


def new_vm(s, name="vm", **kw):
    return s.xenapi.VM.create(vm_record(name, **dict({"HVM_boot_policy": "BIOS order"}, **kw)))


def test_allowed_operations_at_start(session):
    s = session
    for ref, r in s.xenapi.VM.get_all_records().items():
        if r["is_control_domain"]:
            assert set(r["allowed_operations"]) == DOM0_OPS
        elif r["is_a_template"]:
            assert set(r["allowed_operations"]) == TEMPLATE_OPS, r["name_label"]
        before = set(r["allowed_operations"])
        s.xenapi.VM.update_allowed_operations(ref)
        assert set(s.xenapi.VM.get_allowed_operations(ref)) == before


def test_create_destroy_halted(session):
    s = session
    vm = new_vm(s)
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Halted"
    assert set(r["allowed_operations"]) == HALTED_OPS
    assert "mac_seed" in r["other_config"]
    assert r["domain_type"] == "hvm"
    assert int(r["memory_overhead"]) > 0
    s.xenapi.VM.destroy(vm)
    assert vm not in s.xenapi.VM.get_all()


def test_destroy_default_template_and_dom0(session):
    s = session
    t = s.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
    assert fail(s.xenapi.VM.destroy, t) == ["VM_CANNOT_DELETE_DEFAULT_TEMPLATE", t]
    dom0 = [v for v, r in s.xenapi.VM.get_all_records().items() if r["is_control_domain"]][0]
    assert fail(s.xenapi.VM.destroy, dom0)[0] == "VM_BAD_POWER_STATE"
    assert fail(s.xenapi.VM.assert_operation_valid, dom0, "changing_VCPUs") == \
        ["OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0"]
    assert fail(s.xenapi.VM.assert_operation_valid, dom0, "snapshot") == \
        ["OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"]


def test_assert_operation_valid(session):
    s = session
    vm = new_vm(s)
    s.xenapi.VM.assert_operation_valid(vm, "start")
    assert fail(s.xenapi.VM.assert_operation_valid, vm, "pause") == \
        ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert fail(s.xenapi.VM.assert_operation_valid, vm, "hard_reboot") == \
        ["VM_BAD_POWER_STATE", vm, "paused, running", "halted"]
    assert fail(s.xenapi.VM.assert_operation_valid, vm, "provision") == \
        ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    s.xenapi.VM.set_blocked_operations(vm, {"start": "no"})
    assert fail(s.xenapi.VM.assert_operation_valid, vm, "start") == \
        ["OPERATION_BLOCKED", vm, "no"]
    t = s.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
    assert fail(s.xenapi.VM.assert_operation_valid, t, "start") == \
        ["VM_IS_TEMPLATE", t, "start"]
    s.xenapi.VM.destroy(vm)


def test_memory_setters(session):
    s = session
    vm = new_vm(s)
    s.xenapi.VM.set_memory_limits(vm, str(64 * MIB), str(512 * MIB), str(256 * MIB),
                                  str(512 * MIB))
    r = s.xenapi.VM.get_record(vm)
    assert (r["memory_static_min"], r["memory_dynamic_min"], r["memory_dynamic_max"],
            r["memory_static_max"]) == (str(64 * MIB), str(256 * MIB), str(512 * MIB),
                                        str(512 * MIB))
    assert fail(s.xenapi.VM.set_memory_dynamic_range, vm, str(600 * MIB),
                str(700 * MIB)) == ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    s.xenapi.VM.set_memory_dynamic_range(vm, str(128 * MIB), str(256 * MIB))
    assert s.xenapi.VM.get_memory_dynamic_min(vm) == str(128 * MIB)
    s.xenapi.VM.set_memory(vm, str(300 * MIB))
    assert s.xenapi.VM.get_memory_static_max(vm) == str(300 * MIB)
    assert fail(s.xenapi.VM.set_memory_static_range, vm, str(400 * MIB),
                str(300 * MIB)) == ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    s.xenapi.VM.destroy(vm)


def test_vcpu_setters(session):
    s = session
    vm = new_vm(s)
    s.xenapi.VM.set_VCPUs_max(vm, "4")
    s.xenapi.VM.set_VCPUs_at_startup(vm, "3")
    assert s.xenapi.VM.get_VCPUs_at_startup(vm) == "3"
    assert fail(s.xenapi.VM.set_VCPUs_at_startup, vm, "5")[0] == "INVALID_VALUE"
    assert fail(s.xenapi.VM.set_VCPUs_max, vm, "2")[0] == "INVALID_VALUE"
    assert fail(s.xenapi.VM.set_VCPUs_at_startup, vm, "0")[0] == "INVALID_VALUE"
    s.xenapi.VM.destroy(vm)


def test_set_is_a_template(session):
    s = session
    vm = new_vm(s)
    s.xenapi.VM.set_is_a_template(vm, True)
    assert s.xenapi.VM.get_is_a_template(vm)
    ops = set(s.xenapi.VM.get_allowed_operations(vm))
    assert ops == TEMPLATE_OPS | {"destroy", "migrate_send"}
    s.xenapi.VM.set_is_a_template(vm, False)
    assert set(s.xenapi.VM.get_allowed_operations(vm)) == HALTED_OPS
    s.xenapi.VM.destroy(vm)


def sr_and_vdi(s, size=MIB * 8):
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    vdi = s.xenapi.VDI.create({"name_label": "d", "name_description": "", "SR": sr,
                               "virtual_size": str(size), "type": "user",
                               "sharable": False, "read_only": False, "other_config": {}})
    return sr, vdi


def vbd_rec(vm, vdi, userdevice="autodetect", **kw):
    rec = {"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": False,
           "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
           "qos_algorithm_type": "", "qos_algorithm_params": {}}
    rec.update(kw)
    return rec


def test_vbd_create_rules(session):
    s = session
    vm = new_vm(s)
    sr, vdi = sr_and_vdi(s)
    b0 = s.xenapi.VBD.create(vbd_rec(vm, vdi))
    r = s.xenapi.VBD.get_record(b0)
    assert r["userdevice"] == "0" and r["device"] == "" and not r["currently_attached"]
    assert set(r["allowed_operations"]) == {"attach"}
    assert fail(s.xenapi.VBD.create, vbd_rec(vm, vdi, "0")) == ["DEVICE_ALREADY_EXISTS", "0"]
    assert fail(s.xenapi.VBD.create, vbd_rec(vm, vdi, "hda")) == ["DEVICE_ALREADY_EXISTS", "hda"]
    assert fail(s.xenapi.VBD.create, vbd_rec(vm, vdi, "bogus")) == ["INVALID_DEVICE", "bogus"]
    assert fail(s.xenapi.VBD.create, vbd_rec(vm, vdi, type="CD")) == ["VBD_CDS_MUST_BE_READONLY"]
    assert fail(s.xenapi.VBD.create, vbd_rec(vm, vdi, empty=True)) == \
        ["VBD_NOT_REMOVABLE_MEDIA", "in constructor"]
    cd = s.xenapi.VBD.create(vbd_rec(vm, "OpaqueRef:NULL", type="CD", mode="RO", empty=True))
    assert s.xenapi.VBD.get_userdevice(cd) == "1"
    assert set(s.xenapi.VBD.get_allowed_operations(cd)) == {"attach", "insert"}
    devs = s.xenapi.VM.get_allowed_VBD_devices(vm)
    assert devs[:2] == ["2", "3"] and "0" not in devs
    s.xenapi.VBD.destroy(cd)
    assert "1" in s.xenapi.VM.get_allowed_VBD_devices(vm)
    s.xenapi.VM.destroy(vm)
    assert b0 not in s.xenapi.VBD.get_all()
    assert vdi in s.xenapi.VDI.get_all()
    s.xenapi.VDI.destroy(vdi)


def test_vif_create_rules(session):
    s = session
    vm = new_vm(s)
    net = s.xenapi.network.get_all()[0]
    rec = {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
           "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}
    v0 = s.xenapi.VIF.create(rec)
    r = s.xenapi.VIF.get_record(v0)
    assert r["MAC_autogenerated"] and len(r["MAC"]) == 17
    assert int(r["MAC"][:2], 16) & 3 == 2
    assert r["MTU"] == s.xenapi.network.get_MTU(net)
    assert set(r["allowed_operations"]) == {"attach"}
    assert fail(s.xenapi.VIF.create, rec) == ["DEVICE_ALREADY_EXISTS", "0"]
    assert fail(s.xenapi.VIF.create, dict(rec, device="x")) == ["INVALID_DEVICE", "x"]
    assert fail(s.xenapi.VIF.create, dict(rec, device="1", MAC="zz")) == ["MAC_INVALID", "zz"]
    assert "0" not in s.xenapi.VM.get_allowed_VIF_devices(vm)
    s.xenapi.VIF.destroy(v0)
    assert s.xenapi.VM.get_allowed_VIF_devices(vm) == [str(i) for i in range(16)]
    s.xenapi.VM.destroy(vm)


def test_power_state_reset(session):
    s = session
    vm = new_vm(s)
    s.xenapi.VM.power_state_reset(vm)
    assert s.xenapi.VM.get_power_state(vm) == "Halted"
    s.xenapi.VM.destroy(vm)


# ---- clone, copy, snapshot, revert, provision (src/api/vm.c) ----

import http.client  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from conftest import Xapi  # noqa: E402


def xfer(server, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    c.request(method, path, body=body,
              headers={"Content-Length": str(len(body))} if body is not None else {})
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200, (r.status, data)
    return data


def put_vdi(server, s, vdi, data):
    xfer(server, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=raw"
         % (s._session, vdi), data)


def get_vdi(server, s, vdi):
    return xfer(server, "GET", "/export_raw_vdi?session_id=%s&vdi=%s&format=raw"
                % (s._session, vdi))


def installed(s, name="inst", small=True):
    """A VM installed from the seeded template as xe vm-install does it:
    clone, the provision XML's sr set to the default SR, provision."""
    t = s.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = s.xenapi.VM.clone(t, name)
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    oc = s.xenapi.VM.get_other_config(vm)
    disks = re.sub(r'sr=""', 'sr="%s"' % s.xenapi.SR.get_uuid(sr), oc["disks"])
    if small:  # exports read the whole disk
        disks = re.sub(r'size="\d+"', 'size="%d"' % (8 * MIB), disks)
    s.xenapi.VM.remove_from_other_config(vm, "disks")
    s.xenapi.VM.add_to_other_config(vm, "disks", disks)
    s.xenapi.VM.provision(vm)
    return vm, sr


def disk_vdis(s, vm):
    out = []
    for b in s.xenapi.VM.get_VBDs(vm):
        r = s.xenapi.VBD.get_record(b)
        if r["type"] == "Disk":
            out.append((r["userdevice"], r["VDI"]))
    return [v for _, v in sorted(out)]


def destroy_with_disks(s, vm):
    vdis = disk_vdis(s, vm)
    s.xenapi.VM.destroy(vm)
    for v in vdis:
        s.xenapi.VDI.destroy(v)


def test_clone_template_and_provision(session):
    s = session
    t = s.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
    trec = s.xenapi.VM.get_record(t)
    vm = s.xenapi.VM.clone(t, "from-template")
    r = s.xenapi.VM.get_record(vm)
    assert r["uuid"] != trec["uuid"] and r["name_label"] == "from-template"
    assert r["is_a_template"] and not r["is_default_template"] and not r["is_a_snapshot"]
    assert r["other_config"]["base_template_name"] == "Debian Bookworm 12"
    assert "default_template" not in r["other_config"]
    assert r["other_config"]["mac_seed"] != trec["other_config"].get("mac_seed")
    assert r["parent"] == "OpaqueRef:NULL" and r["snapshot_of"] == "OpaqueRef:NULL"
    assert r["power_state"] == "Halted" and r["current_operations"] == {}
    assert set(r["allowed_operations"]) == TEMPLATE_OPS | {"destroy", "migrate_send"}
    assert r["memory_static_max"] == trec["memory_static_max"]
    assert r["metrics"] != trec["metrics"]
    # the API call does not fill in sr="" (xe vm-install does): UUID_INVALID
    assert 'sr=""' in r["other_config"]["disks"]
    assert fail(s.xenapi.VM.provision, vm) == ["UUID_INVALID", "sr", ""]
    assert not s.xenapi.VM.get_is_a_template(vm)
    assert s.xenapi.VM.get_VBDs(vm) == []
    s.xenapi.VM.destroy(vm)
    vm, sr = installed(s, small=False)
    r = s.xenapi.VM.get_record(vm)
    assert not r["is_a_template"] and "disks" not in r["other_config"]
    assert "start" in r["allowed_operations"]
    want = re.findall(r'<disk device="(\d+)" size="(\d+)"[^>]*bootable="(\w+)"[^>]*type="(\w+)"',
                      trec["other_config"]["disks"])
    assert want
    vbds = sorted((s.xenapi.VBD.get_record(b) for b in r["VBDs"]), key=lambda b: b["userdevice"])
    assert len(vbds) == len(want)
    for b, (dev, size, boot, typ) in zip(vbds, want):
        assert b["userdevice"] == dev and b["mode"] == "RW" and b["type"] == "Disk"
        assert b["bootable"] == (boot == "true") and b["unpluggable"] == (typ != "system")
        assert b["other_config"].get("owner") == "" and not b["empty"]
        d = s.xenapi.VDI.get_record(b["VDI"])
        assert d["name_label"] == dev
        assert d["name_description"] == "Created by template provisioner"
        assert d["sm_config"]["vmhint"] == r["uuid"]
        assert int(d["virtual_size"]) >= int(size) and d["SR"] == sr and d["type"] == typ
    assert fail(s.xenapi.VM.provision, vm) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    destroy_with_disks(s, vm)


def test_provision_bad_xml_and_cleanup(session):
    s = session
    vm = new_vm(s, "prov", is_a_template=True)
    s.xenapi.VM.add_to_other_config(vm, "disks", "<provision><bogus/></provision>")
    assert fail(s.xenapi.VM.provision, vm)[0] == "INTERNAL_ERROR"
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    vdis = set(s.xenapi.VDI.get_all())
    s.xenapi.VM.set_is_a_template(vm, True)
    s.xenapi.VM.remove_from_other_config(vm, "disks")
    s.xenapi.VM.add_to_other_config(
        vm, "disks", '<provision><disk device="0" size="%d" sr="%s" bootable="true" type="system"/>'
        '<disk device="1" size="%d" sr="nope" bootable="false" type="user"/></provision>'
        % (4 * MIB, s.xenapi.SR.get_uuid(sr), 4 * MIB))
    assert fail(s.xenapi.VM.provision, vm) == ["UUID_INVALID", "sr", "nope"]
    assert s.xenapi.VM.get_VBDs(vm) == [] and set(s.xenapi.VDI.get_all()) == vdis
    s.xenapi.VM.destroy(vm)


def test_clone_copy_snapshot_records_and_disks(server, session):
    s = session
    vm, sr = installed(s, "src")
    net = s.xenapi.network.get_all()[0]
    vif = s.xenapi.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
                               "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}})
    mac = s.xenapi.VIF.get_MAC(vif)
    v0 = disk_vdis(s, vm)[0]
    put_vdi(server, s, v0, b"one" * 1000)
    src = s.xenapi.VM.get_record(vm)

    c = s.xenapi.VM.clone(vm, "c")
    cr = s.xenapi.VM.get_record(c)
    assert not cr["is_a_template"] and cr["other_config"]["mac_seed"] != src["other_config"]["mac_seed"]
    assert set(cr["allowed_operations"]) == HALTED_OPS
    cvdis = disk_vdis(s, c)
    assert len(cvdis) == len(disk_vdis(s, vm)) and not set(cvdis) & set(disk_vdis(s, vm))
    assert get_vdi(server, s, cvdis[0])[:3000] == b"one" * 1000
    cvif = s.xenapi.VIF.get_record(s.xenapi.VM.get_VIFs(c)[0])
    assert cvif["MAC"] != mac and cvif["MAC_autogenerated"] and cvif["device"] == "0"
    for b in s.xenapi.VM.get_VBDs(c):
        assert s.xenapi.VBD.get_other_config(b).get("owner") == ""

    cp = s.xenapi.VM.copy(vm, "cp", "OpaqueRef:NULL")
    cpvdis = disk_vdis(s, cp)
    assert all(s.xenapi.VDI.get_SR(v) == sr for v in cpvdis)
    assert all(s.xenapi.VDI.get_sm_config(v).get("vhd-parent") is None for v in cpvdis)
    assert get_vdi(server, s, cpvdis[0])[:3000] == b"one" * 1000
    iso = [x for x in s.xenapi.SR.get_all() if s.xenapi.SR.get_content_type(x) == "iso"]
    if iso:
        assert fail(s.xenapi.VM.copy, vm, "x", iso[0]) == \
            ["OPERATION_NOT_ALLOWED", "Cannot copy a VM's disks to an ISO SR"]

    snap = s.xenapi.VM.snapshot(vm, "snap")
    sn = s.xenapi.VM.get_record(snap)
    assert sn["is_a_snapshot"] and sn["is_a_template"] and sn["snapshot_of"] == vm
    assert sn["snapshot_info"] == {"power-state-at-snapshot": "Halted",
                                   "disk-snapshot-type": "crash_consistent"}
    assert sn["other_config"]["mac_seed"] == src["other_config"]["mac_seed"]
    assert not str(sn["snapshot_time"]).startswith("1970")
    assert s.xenapi.VM.get_parent(vm) == snap
    assert snap in s.xenapi.VM.get_snapshots(vm) and vm in s.xenapi.VM.get_children(snap)
    assert set(sn["allowed_operations"]) == {"clone", "copy", "export", "destroy",
                                             "metadata_export", "revert"}
    svif = s.xenapi.VIF.get_record(sn["VIFs"][0])
    assert svif["MAC"] == mac
    svdis = disk_vdis(s, snap)
    assert all(s.xenapi.VDI.get_is_a_snapshot(v) for v in svdis)
    assert [s.xenapi.VDI.get_snapshot_of(v) for v in svdis] == disk_vdis(s, vm)

    # ignore_vdis
    snap2 = s.xenapi.VM.snapshot(vm, "snap2", [v0])
    assert len(disk_vdis(s, snap2)) == len(disk_vdis(s, vm)) - 1

    # a clone of a snapshot is an ordinary VM
    fs = s.xenapi.VM.clone(snap, "from-snap")
    assert not s.xenapi.VM.get_is_a_snapshot(fs) and s.xenapi.VM.get_is_a_template(fs)

    # revert: write, revert, the old data is back
    put_vdi(server, s, v0, b"two" * 1000)
    s.xenapi.VM.set_name_description(vm, "changed")
    s.xenapi.VM.set_memory_static_max(vm, str(int(src["memory_static_max"]) * 2))
    old_vifs = s.xenapi.VM.get_VIFs(vm)
    s.xenapi.VM.revert(snap)
    r = s.xenapi.VM.get_record(vm)
    assert r["memory_static_max"] == src["memory_static_max"]
    assert r["name_description"] == src["name_description"]
    assert r["power_state"] == "Halted" and r["parent"] == snap
    assert set(r["allowed_operations"]) == HALTED_OPS
    nvdis = disk_vdis(s, vm)
    assert v0 not in s.xenapi.VDI.get_all() and v0 not in nvdis
    assert get_vdi(server, s, nvdis[0])[:3000] == b"one" * 1000
    assert [s.xenapi.VDI.get_snapshot_of(v) for v in svdis] == nvdis
    assert not set(r["VIFs"]) & set(old_vifs)
    assert s.xenapi.VIF.get_MAC(r["VIFs"][0]) == mac
    assert fail(s.xenapi.VM.revert, vm) == ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]

    for x in (fs, snap2, snap, cp, c, vm):
        destroy_with_disks(s, x)


def test_boot_here_possible_hosts_bios_memory(session):
    s = session
    host = s.xenapi.host.get_all()[0]
    vm = new_vm(s, "small")
    s.xenapi.VM.assert_can_boot_here(vm, host)
    assert s.xenapi.VM.get_possible_hosts(vm) == [host]
    huge = 1 << 44  # bigger than the host (host_metrics.memory_free)
    big = new_vm(s, "big", memory_static_max=str(huge), memory_dynamic_max=str(huge),
                 memory_dynamic_min=str(huge))
    e = fail(s.xenapi.VM.assert_can_boot_here, big, host)
    assert e[0] == "HOST_NOT_ENOUGH_FREE_MEMORY" and int(e[1]) > huge and 0 < int(e[2]) < huge
    assert s.xenapi.VM.get_possible_hosts(big) == []
    m = int(s.xenapi.VM.maximise_memory(vm, str(1024 * MIB), False))
    assert m % MIB == 0 and 900 * MIB < m < 1024 * MIB
    assert int(s.xenapi.VM.maximise_memory(vm, str(1024 * MIB), True)) <= m
    s.xenapi.VM.copy_bios_strings(vm, host)
    assert s.xenapi.VM.get_bios_strings(vm) == s.xenapi.host.get_bios_strings(host)
    assert s.xenapi.VM.get_affinity(vm) == host
    if s.xenapi.VM.get_bios_strings(vm):
        assert fail(s.xenapi.VM.copy_bios_strings, vm, host) == ["VM_BIOS_STRINGS_ALREADY_SET"]
    assert fail(s.xenapi.VM.get_boot_record, vm)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.destroy(vm)
    s.xenapi.VM.destroy(big)


def test_vbd_insert_eject(session):
    s = session
    vm = new_vm(s)
    sr, vdi = sr_and_vdi(s)
    disk = s.xenapi.VBD.create(vbd_rec(vm, vdi))
    cd = s.xenapi.VBD.create(vbd_rec(vm, "OpaqueRef:NULL", type="CD", mode="RO", empty=True))
    assert fail(s.xenapi.VBD.insert, disk, vdi) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    assert fail(s.xenapi.VBD.eject, disk) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    assert fail(s.xenapi.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    s.xenapi.VBD.insert(cd, vdi)
    r = s.xenapi.VBD.get_record(cd)
    assert r["VDI"] == vdi and not r["empty"] and set(r["allowed_operations"]) == {"attach", "eject"}
    assert fail(s.xenapi.VBD.insert, cd, vdi) == ["VBD_NOT_EMPTY", cd]
    s.xenapi.VBD.eject(cd)
    r = s.xenapi.VBD.get_record(cd)
    assert r["VDI"] == "OpaqueRef:NULL" and r["empty"]
    s.xenapi.VM.destroy(vm)
    s.xenapi.VDI.destroy(vdi)


@pytest.fixture(scope="module")
def slow_server(xapi_bin):
    d = tempfile.mkdtemp(prefix="cxapi-it-")
    x = Xapi(d, ["--debug-sm-step-delay-ms", "400"])
    yield x
    x.stop()
    subprocess.run(["rm", "-rf", d])


def test_copy_is_long_marked_and_cancellable(slow_server, XenAPI):
    s = XenAPI.Session(slow_server.url)
    s.login_with_password("root", "test-Secret-1")
    try:
        vm = new_vm(s, "slow")
        sr, vdi = sr_and_vdi(s, 4 * MIB)
        s.xenapi.VBD.create(vbd_rec(vm, vdi))
        task = s.xenapi.Async.VM.copy(vm, "slow-copy", "OpaqueRef:NULL")
        deadline = time.time() + 10
        while time.time() < deadline and not s.xenapi.VM.get_current_operations(vm):
            time.sleep(0.02)
        assert s.xenapi.VM.get_current_operations(vm) == {task: "copy"}
        # an incompatible operation waits, then fails, while the copy runs
        assert fail(s.xenapi.VM.assert_operation_valid, vm, "start") == \
            ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "copy", task]
        assert "start" not in s.xenapi.VM.get_allowed_operations(vm)
        while s.xenapi.task.get_status(task) == "pending":
            time.sleep(0.05)
        assert s.xenapi.task.get_status(task) == "success", s.xenapi.task.get_error_info(task)
        new = re.sub(r"</?value>", "", s.xenapi.task.get_result(task))
        assert s.xenapi.VM.get_name_label(new) == "slow-copy"
        assert s.xenapi.VM.get_current_operations(vm) == {}
        assert "start" in s.xenapi.VM.get_allowed_operations(vm)
        # cancelled: nothing is left behind
        vms, vdis = set(s.xenapi.VM.get_all()), set(s.xenapi.VDI.get_all())
        task = s.xenapi.Async.VM.copy(vm, "cancelled", "OpaqueRef:NULL")
        time.sleep(0.3)
        s.xenapi.task.cancel(task)
        while s.xenapi.task.get_status(task) == "pending":
            time.sleep(0.05)
        assert s.xenapi.task.get_status(task) == "cancelled"
        deadline = time.time() + 10
        while time.time() < deadline and set(s.xenapi.VDI.get_all()) != vdis:
            time.sleep(0.1)
        assert set(s.xenapi.VM.get_all()) == vms and set(s.xenapi.VDI.get_all()) == vdis
        assert s.xenapi.VM.get_current_operations(vm) == {}
    finally:
        s.xenapi.session.logout()
