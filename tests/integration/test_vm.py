"""VM, VBD and VIF messages that need no running domain (src/api/vm.c),
through Debian's Python XenAPI module: the operation machinery
(allowed_operations per the original's xapi_vm_lifecycle.ml), VM.create /
destroy, setters, VBD/VIF create/destroy, allowed devices."""
import pytest

TEMPLATE_OPS = {"clone", "copy", "export", "metadata_export", "provision",
                "changing_dynamic_range", "changing_static_range",
                "changing_shadow_memory", "changing_NVRAM"}
HALTED_OPS = {"snapshot", "clone", "copy", "start", "start_on", "migrate_send",
              "changing_dynamic_range", "changing_static_range",
              "changing_shadow_memory", "changing_NVRAM", "make_into_template",
              "export", "metadata_export", "destroy", "create_vtpm"}
DOM0_OPS = {"metadata_export", "changing_dynamic_range", "changing_static_range"}
MIB = 1024 * 1024


def fail(fn, *args):
    from os_xenapi.client.XenAPI import Failure
    with pytest.raises(Failure) as e:
        fn(*args)
    return e.value.details


def new_vm(s, name="vm", **kw):
    rec = {"name_label": name, "name_description": "", "user_version": "1",
           "is_a_template": False, "affinity": "OpaqueRef:NULL",
           "memory_static_max": str(256 * MIB), "memory_dynamic_max": str(256 * MIB),
           "memory_dynamic_min": str(256 * MIB), "memory_static_min": str(128 * MIB),
           "VCPUs_params": {}, "VCPUs_max": "2", "VCPUs_at_startup": "1",
           "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
           "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "",
           "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
           "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
           "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
           "recommendations": ""}
    rec.update(kw)
    return s.xenapi.VM.create(rec)


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
