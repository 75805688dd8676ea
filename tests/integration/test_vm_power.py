"""VM lifecycle through the domain manager (src/api/vm_power.c), through
Debian's Python XenAPI module against the real daemon with the sim backend:
start, shutdown, reboot, pause, suspend/resume, devices while running, CDs,
what guests do by themselves (actions_after_*), guest metrics, errors, and
kill -9 of xapi with running VMs."""
import subprocess
import tempfile
import time

import pytest

from conftest import MIB, PASSWORD, Xapi, XsTools, fail, vm_record



def new_vm(s, name="vm", mem=256 * MIB, **kw):
    vm = s.xenapi.VM.create(vm_record(name, mem, **dict({"PV_bootloader": "pygrub"}, **kw)))
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    vdi = s.xenapi.VDI.create({"name_label": name + "-disk", "name_description": "", "SR": sr,
                               "virtual_size": str(64 * MIB), "type": "user", "sharable": False,
                               "read_only": False, "other_config": {}})
    s.xenapi.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                         "type": "Disk", "empty": False, "other_config": {},
                         "qos_algorithm_type": "", "qos_algorithm_params": {}})
    net = s.xenapi.network.get_all()[0]
    s.xenapi.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                         "other_config": {}, "qos_algorithm_type": "",
                         "qos_algorithm_params": {}})
    return vm


def wait_for(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in %.1fs" % timeout)


def devices(s, vm):
    return ([s.xenapi.VBD.get_record(b) for b in s.xenapi.VM.get_VBDs(vm)],
            [s.xenapi.VIF.get_record(f) for f in s.xenapi.VM.get_VIFs(vm)])


@pytest.fixture(scope="module")
def s(sim_session):
    return sim_session


def test_start_and_clean_shutdown(s):
    vm = new_vm(s, "life")
    s.xenapi.VM.start(vm, False, False)
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Running"
    assert int(r["domid"]) > 0
    assert r["resident_on"] == s.xenapi.host.get_all()[0]
    assert "clean_shutdown" in r["allowed_operations"]
    m = s.xenapi.VM_metrics.get_record(r["metrics"])
    assert int(m["VCPUs_number"]) == 1 and int(m["memory_actual"]) == 256 * MIB
    assert m["current_domain_type"] == "pv"
    vbds, vifs = devices(s, vm)
    assert all(b["currently_attached"] for b in vbds) and vbds[0]["device"] == "xvda"
    assert all(f["currently_attached"] for f in vifs)
    # the guest agent reports: VM_guest_metrics through event.from
    gm = wait_for(lambda: s.xenapi.VM.get_guest_metrics(vm) != "OpaqueRef:NULL"
                  and s.xenapi.VM.get_guest_metrics(vm))
    g = s.xenapi.VM_guest_metrics.get_record(gm)
    assert g["os_version"] and g["PV_drivers_version"] and g["can_use_hotplug_vbd"] == "yes"
    wait_for(lambda: s.xenapi.VM_guest_metrics.get_networks(gm).get("0/ip"))
    s.xenapi.VM.clean_shutdown(vm)
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Halted" and r["domid"] == "-1"
    assert r["guest_metrics"] == "OpaqueRef:NULL" and r["current_operations"] == {}
    vbds, vifs = devices(s, vm)
    assert not any(b["currently_attached"] for b in vbds + vifs)


def test_guest_metrics_event(s):
    vm = new_vm(s, "ev")
    token = s.xenapi.event_from(["VM_guest_metrics"], "", 0.0)["token"]
    s.xenapi.VM.start(vm, False, False)
    end = time.time() + 10
    seen = False
    while time.time() < end and not seen:
        rep = s.xenapi.event_from(["VM_guest_metrics"], token, 2.0)
        token = rep["token"]
        seen = any(e["class"] == "vm_guest_metrics" and e["operation"] == "add"
                   for e in rep["events"])
    assert seen
    s.xenapi.VM.hard_shutdown(vm)
    assert s.xenapi.VM.get_power_state(vm) == "Halted"


def test_reboot_pause_unpause(s):
    vm = new_vm(s, "reboot")
    s.xenapi.VM.start(vm, False, False)
    d1 = int(s.xenapi.VM.get_domid(vm))
    s.xenapi.VM.clean_reboot(vm)
    d2 = int(s.xenapi.VM.get_domid(vm))
    assert d2 != d1 and s.xenapi.VM.get_power_state(vm) == "Running"
    s.xenapi.VM.hard_reboot(vm)
    d3 = int(s.xenapi.VM.get_domid(vm))
    assert d3 not in (d1, d2)
    s.xenapi.VM.pause(vm)
    assert s.xenapi.VM.get_power_state(vm) == "Paused"
    assert int(s.xenapi.VM.get_domid(vm)) == d3
    assert fail(s.xenapi.VM.pause, vm)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.unpause(vm)
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    s.xenapi.VM.shutdown(vm)
    assert s.xenapi.VM.get_power_state(vm) == "Halted"


def test_start_paused_and_bad_power_state(s):
    vm = new_vm(s, "paused")
    assert fail(s.xenapi.VM.clean_shutdown, vm)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.start(vm, True, False)
    assert s.xenapi.VM.get_power_state(vm) == "Paused"
    assert fail(s.xenapi.VM.start, vm, False, False)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.hard_shutdown(vm)


def test_suspend_resume(s):
    vm = new_vm(s, "susp")
    s.xenapi.VM.start(vm, False, False)
    s.xenapi.VM.suspend(vm)
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Suspended" and r["domid"] == "-1"
    sv = r["suspend_VDI"]
    assert sv != "OpaqueRef:NULL" and s.xenapi.VDI.get_type(sv) == "suspend"
    s.xenapi.VM.resume(vm, False, False)
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Running" and int(r["domid"]) > 0
    assert r["suspend_VDI"] == "OpaqueRef:NULL"
    assert sv not in s.xenapi.VDI.get_all()
    s.xenapi.VM.hard_shutdown(vm)


def test_plug_unplug_while_running(s):
    vm = new_vm(s, "plug")
    s.xenapi.VM.start(vm, False, False)
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    vdi = s.xenapi.VDI.create({"name_label": "extra", "name_description": "", "SR": sr,
                               "virtual_size": str(16 * MIB), "type": "user", "sharable": False,
                               "read_only": False, "other_config": {}})
    vbd = s.xenapi.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "1", "bootable": False,
                               "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
                               "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert not s.xenapi.VBD.get_currently_attached(vbd)
    s.xenapi.VBD.plug(vbd)
    assert s.xenapi.VBD.get_currently_attached(vbd)
    assert s.xenapi.VBD.get_device(vbd) == "xvdb"
    assert fail(s.xenapi.VBD.plug, vbd) == ["DEVICE_ALREADY_ATTACHED", vbd]
    s.xenapi.VBD.unplug(vbd)
    assert not s.xenapi.VBD.get_currently_attached(vbd)
    s.xenapi.VBD.plug(vbd)
    s.xenapi.VBD.unplug_force(vbd)
    assert not s.xenapi.VBD.get_currently_attached(vbd)
    vif = s.xenapi.VM.get_VIFs(vm)[0]
    s.xenapi.VIF.unplug(vif)
    assert not s.xenapi.VIF.get_currently_attached(vif)
    s.xenapi.VIF.plug(vif)
    assert s.xenapi.VIF.get_currently_attached(vif)
    s.xenapi.VIF.unplug_force(vif)
    assert not s.xenapi.VIF.get_currently_attached(vif)
    assert s.xenapi.VBD.get_current_operations(vbd) == {}
    s.xenapi.VM.hard_shutdown(vm)
    assert fail(s.xenapi.VBD.plug, vbd)[0] == "VM_BAD_POWER_STATE"


def test_cd_insert_eject(s):
    vm = new_vm(s, "cd")
    cd = s.xenapi.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                              "bootable": False, "mode": "RO", "type": "CD", "empty": True,
                              "other_config": {}, "qos_algorithm_type": "",
                              "qos_algorithm_params": {}})
    s.xenapi.VM.start(vm, False, False)
    sr = s.xenapi.pool.get_default_SR(s.xenapi.pool.get_all()[0])
    iso = s.xenapi.VDI.create({"name_label": "iso", "name_description": "", "SR": sr,
                               "virtual_size": str(4 * MIB), "type": "user", "sharable": False,
                               "read_only": False, "other_config": {}})
    assert fail(s.xenapi.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    s.xenapi.VBD.insert(cd, iso)
    r = s.xenapi.VBD.get_record(cd)
    assert r["VDI"] == iso and not r["empty"]
    assert fail(s.xenapi.VBD.insert, cd, iso) == ["VBD_NOT_EMPTY", cd]
    s.xenapi.VBD.eject(cd)
    r = s.xenapi.VBD.get_record(cd)
    assert r["VDI"] == "OpaqueRef:NULL" and r["empty"]
    s.xenapi.VM.hard_shutdown(vm)


def test_vcpus_live_and_sysrq_crash(s):
    vm = new_vm(s, "crash", actions_after_crash="destroy")
    s.xenapi.VM.start(vm, False, False)
    s.xenapi.VM.set_VCPUs_number_live(vm, "2")
    m = s.xenapi.VM.get_metrics(vm)
    assert s.xenapi.VM_metrics.get_VCPUs_number(m) == "2"
    assert fail(s.xenapi.VM.set_VCPUs_number_live, vm, "3")[0] == "INVALID_VALUE"
    s.xenapi.VM.send_sysrq(vm, "c")  # the simulated guest crashes
    wait_for(lambda: s.xenapi.VM.get_power_state(vm) == "Halted")
    # the action runs as a hard_shutdown operation, which ends just after
    wait_for(lambda: s.xenapi.VM.get_current_operations(vm) == {})


def test_crash_restart(s):
    vm = new_vm(s, "crash-restart", actions_after_crash="restart")
    s.xenapi.VM.start(vm, False, False)
    d1 = int(s.xenapi.VM.get_domid(vm))
    wait_for(lambda: s.xenapi.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
    s.xenapi.VM.send_sysrq(vm, "c")
    wait_for(lambda: int(s.xenapi.VM.get_domid(vm)) not in (d1, -1))
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    wait_for(lambda: s.xenapi.VM.get_current_operations(vm) == {})
    s.xenapi.VM.hard_shutdown(vm)


def test_not_enough_memory(s):
    vm = new_vm(s, "huge", mem=128 * 1024 * MIB)
    assert fail(s.xenapi.VM.start, vm, False, False)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Halted" and r["current_operations"] == {}


def test_other_operation_in_progress(s):
    vm = new_vm(s, "busy")
    s.xenapi.VM.start(vm, False, False)
    s.xenapi.VM.pause(vm)
    # a clean shutdown of a paused VM: refused by the check
    assert fail(s.xenapi.VM.clean_shutdown, vm)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.unpause(vm)
    t = s.xenapi.Async.VM.clean_reboot(vm)
    t2 = s.xenapi.Async.VM.pause(vm)
    for task in (t, t2):
        wait_for(lambda: s.xenapi.task.get_status(task) != "pending", 40)
    st = [s.xenapi.task.get_status(t), s.xenapi.task.get_status(t2)]
    assert st[0] == "success"
    s.xenapi.VM.hard_shutdown(vm)


def test_guest_shuts_itself_down_ignored_request(XenAPI):
    """ignore-shutdown fault: clean shutdown times out (VM_SHUTDOWN_TIMEOUT),
    VM.shutdown falls back to hard; OTHER_OPERATION_IN_PROGRESS meanwhile;
    the task of a clean shutdown is cancellable."""
    d = tempfile.mkdtemp(prefix="cxapi-power-")
    x = Xapi(d, ["--sim-boot-ms", "50", "--clean-shutdown-timeout", "2"])
    try:
        s = XenAPI.Session(x.url)
        s.login_with_password("root", PASSWORD)
        vm = new_vm(s, "stubborn")
        uuid = s.xenapi.VM.get_uuid(vm)
        x.stop(host=False)
        x.extra += ["--sim-faults", "ignore-shutdown=" + uuid]
        x.start()
        s = XenAPI.Session(x.url)
        s.login_with_password("root", PASSWORD)
        s.xenapi.VM.start(vm, False, False)
        t = s.xenapi.Async.VM.clean_shutdown(vm)
        time.sleep(0.3)
        # (a second call would wait for it, as the original's retry does)
        assert fail(s.xenapi.VM.assert_operation_valid, vm, "clean_shutdown")[0] == \
            "OTHER_OPERATION_IN_PROGRESS"
        wait_for(lambda: s.xenapi.task.get_status(t) != "pending", 20)
        assert s.xenapi.task.get_error_info(t)[0] == "VM_SHUTDOWN_TIMEOUT"
        assert s.xenapi.VM.get_power_state(vm) == "Running"
        t = s.xenapi.Async.VM.clean_shutdown(vm)
        time.sleep(0.3)
        s.xenapi.task.cancel(t)
        wait_for(lambda: s.xenapi.task.get_status(t) != "pending", 20)
        assert s.xenapi.task.get_status(t) == "cancelled"
        s.xenapi.VM.shutdown(vm)
        assert s.xenapi.VM.get_power_state(vm) == "Halted"
    finally:
        x.stop()
        subprocess.run(["rm", "-rf", d])


def test_kill9_keeps_running_vms(xapi_bin, XenAPI):
    d = tempfile.mkdtemp(prefix="cxapi-power-")
    x = Xapi(d, ["--sim-boot-ms", "50"])
    try:
        s = XenAPI.Session(x.url)
        s.login_with_password("root", PASSWORD)
        vms = [new_vm(s, "k%d" % i) for i in range(3)]
        for v in vms:
            s.xenapi.VM.start(v, False, False)
        s.xenapi.VM.pause(vms[2])
        doms = {v: s.xenapi.VM.get_domid(v) for v in vms}
        t = s.xenapi.Async.VM.clean_reboot(vms[0])
        x.kill9()
        x.start()
        s = XenAPI.Session(x.url)
        s.login_with_password("root", PASSWORD)
        for v in vms[1:]:
            r = s.xenapi.VM.get_record(v)
            assert r["domid"] == doms[v]
            assert r["current_operations"] == {}
        assert s.xenapi.VM.get_power_state(vms[1]) == "Running"
        assert s.xenapi.VM.get_power_state(vms[2]) == "Paused"
        # the one killed mid-reboot is Running (new domain) or Halted, never stuck
        r = s.xenapi.VM.get_record(vms[0])
        assert r["current_operations"] == {}
        assert r["power_state"] in ("Running", "Halted")
        for v in vms:
            for b in s.xenapi.VM.get_VBDs(v):
                assert s.xenapi.VBD.get_current_operations(b) == {}
        del t
        s.xenapi.VM.hard_shutdown(vms[1])
        s.xenapi.VM.unpause(vms[2])
        s.xenapi.VM.clean_shutdown(vms[2])
    finally:
        x.stop()
        subprocess.run(["rm", "-rf", d])


def test_dynamic_range_live_sets_balloon(s):
    vm = new_vm(s, "balloon")
    s.xenapi.VM.start(vm, False, False)
    m = s.xenapi.VM.get_metrics(vm)
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 256 * MIB
    s.xenapi.VM.set_memory_dynamic_range(vm, str(128 * MIB), str(192 * MIB))
    # the target is dynamic_max (the host has room); the balloon follows
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 192 * MIB
    assert int(s.xenapi.VM.get_memory_target(vm)) == 128 * MIB
    s.xenapi.VM.set_memory_dynamic_max(vm, str(160 * MIB))
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 160 * MIB
    assert fail(s.xenapi.VM.set_memory_dynamic_range, vm, str(64 * MIB), str(192 * MIB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 160 * MIB
    # static limits stay Halted-only
    assert fail(s.xenapi.VM.set_memory_static_max, vm, str(512 * MIB))[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.hard_shutdown(vm)
    s.xenapi.VM.set_memory_dynamic_range(vm, str(128 * MIB), str(256 * MIB))
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 0
    s.xenapi.VM.start(vm, False, False)
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 256 * MIB
    s.xenapi.VM.hard_shutdown(vm)


def test_power_state_reset_with_domain(s):
    vm = new_vm(s, "reset")
    s.xenapi.VM.start(vm, False, False)
    assert fail(s.xenapi.VM.power_state_reset, vm) == ["DOMAIN_EXISTS", vm]
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    s.xenapi.VM.pause(vm)
    s.xenapi.VM.power_state_reset(vm)  # a paused domain is let go
    assert s.xenapi.VM.get_power_state(vm) == "Halted"
    assert s.xenapi.VM.get_domid(vm) == "-1"
    s.xenapi.VM.start(vm, False, False)  # and the VM starts again
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    s.xenapi.VM.hard_shutdown(vm)
    dom0 = [v for v in s.xenapi.VM.get_all() if s.xenapi.VM.get_is_control_domain(v)][0]
    assert fail(s.xenapi.VM.power_state_reset, dom0) == ["CANNOT_RESET_CONTROL_DOMAIN", dom0]


def test_checkpoint_running_and_revert(s):
    vm = new_vm(s, "ckpt")
    assert fail(s.xenapi.VM.checkpoint, vm, "c0") == \
        ["VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]
    s.xenapi.VM.start(vm, False, False)
    d1 = int(s.xenapi.VM.get_domid(vm))
    def managed():
        return [k for k, x in s.xenapi.VDI.get_all_records().items() if x["managed"]]
    nvdi = len(managed())
    cp = s.xenapi.VM.checkpoint(vm, "c1")
    r = s.xenapi.VM.get_record(cp)
    assert r["is_a_snapshot"] and r["snapshot_of"] == vm and r["power_state"] == "Suspended"
    assert r["snapshot_info"] == {"power-state-at-snapshot": "Running",
                                  "disk-snapshot-type": "crash_consistent"}
    sv = r["suspend_VDI"]
    assert s.xenapi.VDI.get_type(sv) == "suspend"
    assert r["domid"] == "-1" and r["resident_on"] == "OpaqueRef:NULL"
    assert "checkpoint" not in r["current_operations"].values()
    # the VM runs again: a new domain from the image; its own image is gone
    v = s.xenapi.VM.get_record(vm)
    assert v["power_state"] == "Running" and int(v["domid"]) != d1
    assert v["suspend_VDI"] == "OpaqueRef:NULL" and v["parent"] == cp
    assert v["current_operations"] == {}
    # the snapshot's disk and suspend image are new VDIs (VHD snapshots
    # leave unmanaged "base copy" parents, as SM's)
    assert len(managed()) == nvdi + 2
    disk = [b for b in r["VBDs"] if s.xenapi.VBD.get_type(b) == "Disk"][0]
    assert s.xenapi.VDI.get_is_a_snapshot(s.xenapi.VBD.get_VDI(disk))
    # revert while Running: hard shutdown first, then the VM is Suspended
    # with a copy of the image (as the original), and resumes from it
    s.xenapi.VM.revert(cp)
    v = s.xenapi.VM.get_record(vm)
    assert v["power_state"] == "Suspended" and v["domid"] == "-1"
    assert v["suspend_VDI"] not in ("OpaqueRef:NULL", sv)
    assert s.xenapi.VDI.get_type(v["suspend_VDI"]) == "suspend"
    s.xenapi.VM.resume(vm, False, False)
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    assert s.xenapi.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    wait_for(lambda: s.xenapi.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
    # a plain snapshot of the running VM: the revert ends Halted
    sn = s.xenapi.VM.snapshot(vm, "s1")
    s.xenapi.VM.revert(sn)
    assert s.xenapi.VM.get_power_state(vm) == "Halted"
    assert s.xenapi.VM.get_current_operations(vm) == {}
    for x in (cp, sn):
        vdis = [s.xenapi.VBD.get_VDI(b) for b in s.xenapi.VM.get_VBDs(x)
                if s.xenapi.VBD.get_type(b) == "Disk"]
        vdis += [v for v in [s.xenapi.VM.get_suspend_VDI(x)] if v != "OpaqueRef:NULL"]
        s.xenapi.VM.destroy(x)
        for v in vdis:
            s.xenapi.VDI.destroy(v)


def test_checkpoint_paused_and_suspended(s):
    vm = new_vm(s, "ckpt2")
    s.xenapi.VM.start(vm, True, False)
    d = s.xenapi.VM.get_domid(vm)
    cp = s.xenapi.VM.checkpoint(vm, "p")  # Paused: the disks only
    assert s.xenapi.VM.get_power_state(cp) == "Halted"
    assert s.xenapi.VM.get_suspend_VDI(cp) == "OpaqueRef:NULL"
    assert s.xenapi.VM.get_power_state(vm) == "Paused" and s.xenapi.VM.get_domid(vm) == d
    s.xenapi.VM.unpause(vm)
    s.xenapi.VM.suspend(vm)
    cs = s.xenapi.VM.checkpoint(vm, "s")  # Suspended: the image is snapshotted too
    assert s.xenapi.VM.get_power_state(cs) == "Suspended"
    assert s.xenapi.VM.get_suspend_VDI(cs) not in ("OpaqueRef:NULL", s.xenapi.VM.get_suspend_VDI(vm))
    assert s.xenapi.VM.get_power_state(vm) == "Suspended"
    s.xenapi.VM.resume(vm, False, False)
    assert s.xenapi.VM.get_power_state(vm) == "Running"
    s.xenapi.VM.hard_shutdown(vm)


def test_vdi_allowed_operations_follow_attachment(s):
    """A disk attached to a running VM is in use: VDI.destroy and resize
    answer VDI_IN_USE, and its allowed_operations say so (as the original,
    which recomputes them when VBDs attach and detach); after the shutdown
    they are back."""
    vm = new_vm(s, "in-use")
    [vbd] = s.xenapi.VM.get_VBDs(vm)
    vdi = s.xenapi.VBD.get_VDI(vbd)
    before = s.xenapi.VDI.get_allowed_operations(vdi)
    assert "destroy" in before and "resize" in before
    s.xenapi.VM.start(vm, False, False)
    ops = s.xenapi.VDI.get_allowed_operations(vdi)
    assert "destroy" not in ops and "resize" not in ops, ops
    assert fail(s.xenapi.VDI.destroy, vdi)[0] == "VDI_IN_USE"
    s.xenapi.VBD.unplug(vbd)
    assert "destroy" in s.xenapi.VDI.get_allowed_operations(vdi)
    s.xenapi.VBD.plug(vbd)
    assert "destroy" not in s.xenapi.VDI.get_allowed_operations(vdi)
    s.xenapi.VM.hard_shutdown(vm)
    assert sorted(s.xenapi.VDI.get_allowed_operations(vdi)) == sorted(before)


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_xenstored_restart(xapi_bin, XenAPI, how):
    """xenstored dies (kill -9: its store is lost) or stops cleanly (SIGTERM:
    it dumps its store): xapi reconnects, starting it again when nobody
    does, rewrites the lost trees of the running VMs; their guests connect
    again, their devices come back to Connected, and they still answer a
    clean shutdown."""
    import os
    import signal
    d = tempfile.mkdtemp(prefix="cxapi-xsr-")
    x = Xapi(d, ["--sim-boot-ms", "50", "--sim-shutdown-ms", "20"])
    rd = XsTools(os.path.join(d, "sim", "xs", "socket")).read

    try:
        s = XenAPI.Session(x.url)
        s.login_with_password("root", PASSWORD)
        vm = new_vm(s, "xsr")
        s.xenapi.VM.start(vm, False, False)
        dom = s.xenapi.VM.get_domid(vm)
        vif_fe = "/local/domain/%s/device/vif/0/state" % dom
        wait_for(lambda: rd("/local/domain/%s/data/updated" % dom) and rd(vif_fe) == "4")
        with open(os.path.join(d, "sim", "xs", "xenstored.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL if how == "kill9" else signal.SIGTERM)
        # back: the domain's tree, its devices connected again, the agent's report
        wait_for(lambda: rd("/local/domain/%s/name" % dom) == "xsr"
                 and rd(vif_fe) == "4"
                 and rd("/local/domain/0/backend/vbd/%s/51712/state" % dom) == "4"
                 and rd("/local/domain/%s/data/updated" % dom), timeout=20)
        with open(os.path.join(d, "sim", "xs", "xenstored.pid")) as f:
            assert int(f.read()) != pid
        r = s.xenapi.VM.get_record(vm)
        assert r["power_state"] == "Running" and r["domid"] == dom
        s.xenapi.VM.clean_shutdown(vm)
        assert s.xenapi.VM.get_power_state(vm) == "Halted"
        assert rd("/local/domain/%s/name" % dom) is None
    finally:
        x.stop()
        x.stop_host()
        subprocess.run(["rm", "-rf", d])


def test_send_trigger(s):
    """XEN_DOMCTL_sendtrigger in the sim: an NMI for any guest; the ACPI
    power button powers an HVM guest off, reset reboots it; PV guests have
    no ACPI (an error), and an unknown trigger is an error."""
    pv = new_vm(s, "trig-pv")
    s.xenapi.VM.start(pv, False, False)
    s.xenapi.VM.send_trigger(pv, "nmi")
    assert fail(s.xenapi.VM.send_trigger, pv, "power")[0] == "INTERNAL_ERROR"
    assert s.xenapi.VM.get_power_state(pv) == "Running"
    s.xenapi.VM.hard_shutdown(pv)
    hvm = new_vm(s, "trig-hvm", HVM_boot_policy="BIOS order", HVM_boot_params={"order": "dc"})
    s.xenapi.VM.start(hvm, False, False)
    dom = s.xenapi.VM.get_domid(hvm)
    assert fail(s.xenapi.VM.send_trigger, hvm, "no-such-trigger")[0] == "INTERNAL_ERROR"
    s.xenapi.VM.send_trigger(hvm, "sleep")
    s.xenapi.VM.send_trigger(hvm, "reset")  # actions_after_reboot: restart
    wait_for(lambda: s.xenapi.VM.get_domid(hvm) not in (dom, "-1")
             and s.xenapi.VM.get_power_state(hvm) == "Running")
    # the guest boots (50 ms), then the power button shuts it down
    time.sleep(0.3)
    s.xenapi.VM.send_trigger(hvm, "power")
    wait_for(lambda: s.xenapi.VM.get_power_state(hvm) == "Halted")


def test_live_memory_messages(s):
    """set_memory_target_live (deprecated: the original leaves the target
    alone), wait_memory_target_live (the balloon is at its target at once in
    the sim), set_shadow_multiplier_live (HVM only, at least 1.0, the
    overhead follows); all need a running VM."""
    pv = new_vm(s, "live-pv")
    assert fail(s.xenapi.VM.wait_memory_target_live, pv)[0] == "VM_BAD_POWER_STATE"
    s.xenapi.VM.start(pv, False, False)
    target = s.xenapi.VM.get_memory_target(pv)
    s.xenapi.VM.set_memory_target_live(pv, str(128 * MIB))
    assert s.xenapi.VM.get_memory_target(pv) == target
    s.xenapi.VM.wait_memory_target_live(pv)
    # a target that moves: the balloon follows, the wait returns
    s.xenapi.VM.set_memory_dynamic_range(pv, str(192 * MIB), str(192 * MIB))
    s.xenapi.VM.wait_memory_target_live(pv)
    m = s.xenapi.VM.get_metrics(pv)
    assert int(s.xenapi.VM_metrics.get_memory_actual(m)) == 192 * MIB
    assert fail(s.xenapi.VM.set_shadow_multiplier_live, pv, 2.0)[0] == "VM_HVM_REQUIRED"
    s.xenapi.VM.hard_shutdown(pv)
    hvm = new_vm(s, "live-hvm", HVM_boot_policy="BIOS order", HVM_boot_params={"order": "dc"})
    s.xenapi.VM.start(hvm, False, False)
    before = int(s.xenapi.VM.get_memory_overhead(hvm))
    assert fail(s.xenapi.VM.set_shadow_multiplier_live, hvm, 0.5)[:2] == ["INVALID_VALUE", "multiplier"]
    s.xenapi.VM.set_shadow_multiplier_live(hvm, 4.0)
    assert float(s.xenapi.VM.get_HVM_shadow_multiplier(hvm)) == 4.0
    assert int(s.xenapi.VM.get_memory_overhead(hvm)) > before
    assert s.xenapi.VM.get_current_operations(hvm) == {}
    s.xenapi.VM.hard_shutdown(hvm)
