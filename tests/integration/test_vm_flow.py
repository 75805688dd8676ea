"""A VM's whole life the way a user drives it with Debian's Python XenAPI
module (os_xenapi.client.XenAPI), against the real daemon with the sim
backend: clone a seeded template, fill in its provisioning SR as `xe
vm-install` does, provision, add a VIF, start, follow event.from until the
VM is Running with guest metrics, snapshot, shut down, revert, start again,
shut down, and uninstall (VM.destroy plus its disks, as `xe vm-uninstall`).
The records are checked at every step."""
import re
import time

import pytest

from conftest import fail


NULL = "OpaqueRef:NULL"
TEMPLATE = "Debian Bookworm 12"


@pytest.fixture(scope="module")
def s(sim_session):
    return sim_session


def template(s):
    refs = s.xenapi.VM.get_by_name_label(TEMPLATE)
    assert len(refs) == 1, refs
    return refs[0]


def install(s, name):
    """What `xe vm-install template=... new-name-label=...` does: clone the
    template, rewrite the provisioning XML's empty sr="" to the default SR's
    uuid, VM.provision; then a VIF on the pool's network (`xe vif-create`)."""
    pool = s.xenapi.pool.get_all()[0]
    sr = s.xenapi.pool.get_default_SR(pool)
    vm = s.xenapi.VM.clone(template(s), name)
    oc = s.xenapi.VM.get_other_config(vm)
    assert 'sr=""' in oc["disks"], oc
    disks = oc["disks"].replace('sr=""', 'sr="%s"' % s.xenapi.SR.get_uuid(sr))
    s.xenapi.VM.remove_from_other_config(vm, "disks")
    s.xenapi.VM.add_to_other_config(vm, "disks", disks)
    s.xenapi.VM.provision(vm)
    net = s.xenapi.network.get_all()[0]
    vif = s.xenapi.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "",
                               "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}})
    return vm, sr, net, vif


def uninstall(s, vm):
    """`xe vm-uninstall`: the VM's disks (not CDs), then the VM."""
    vdis = [s.xenapi.VBD.get_VDI(b) for b in s.xenapi.VM.get_VBDs(vm)
            if s.xenapi.VBD.get_type(b) == "Disk" and not s.xenapi.VBD.get_empty(b)]
    s.xenapi.VM.destroy(vm)
    for v in vdis:
        s.xenapi.VDI.destroy(v)
    return vdis


CLASSES = ["VM", "VM_guest_metrics", "VM_metrics"]


def events_token(s):
    """A token for event.from from now on (the first call, token "", is a
    snapshot of every object)."""
    return s.xenapi.event_from(CLASSES, "", 0.0)["token"]


def wait_running_with_guest(s, vm, token, timeout=20.0):
    """Follow event.from on VM, VM_guest_metrics and VM_metrics from token
    (taken before the start), as a client watching a boot does, until the VM
    is Running and its guest metrics carry os_version and a NIC address.
    Returns (vm record, guest metrics record, {class: operations seen})."""
    vm_rec, gms, seen = None, {}, {}
    end = time.time() + timeout
    while time.time() < end:
        rep = s.xenapi.event_from(CLASSES, token, 2.0)
        token = rep["token"]
        for ev in rep["events"]:
            if ev["class"] == "vm" and ev["ref"] == vm and ev["operation"] != "del":
                vm_rec = ev["snapshot"]
            elif ev["class"] == "vm_guest_metrics" and ev["operation"] != "del":
                gms[ev["ref"]] = ev["snapshot"]  # (the VM's pointer may come after)
            elif ev["class"] == "vm_metrics" and vm_rec is not None and ev["ref"] == vm_rec["metrics"]:
                pass
            else:
                continue
            seen.setdefault(ev["class"], set()).add(ev["operation"])
        if vm_rec is None:
            continue
        gm_rec = gms.get(vm_rec["guest_metrics"])
        if (vm_rec["power_state"] == "Running" and gm_rec is not None
                and gm_rec["os_version"] and gm_rec["networks"].get("0/ip")):
            return vm_rec, gm_rec, seen
    raise AssertionError("not Running with guest metrics in %.0fs: %r / %r" % (timeout, vm_rec, gms))


def check_running(s, vm, rec, gm, host_ref):
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0
    assert rec["resident_on"] == host_ref
    assert rec["current_operations"] == {}
    ops = set(rec["allowed_operations"])
    # (clean_shutdown, clean_reboot, suspend of this HVM guest depend on its
    # reported features: test_allowed_operations_follow_guest_features)
    assert {"hard_shutdown", "hard_reboot", "pause", "snapshot"} <= ops, ops
    assert not ops & {"start", "destroy", "provision", "revert"}, ops
    m = s.xenapi.VM_metrics.get_record(rec["metrics"])
    assert int(m["VCPUs_number"]) == int(rec["VCPUs_at_startup"])
    assert int(m["memory_actual"]) > 0 and m["current_domain_type"] == rec["domain_type"]
    assert str(m["start_time"])[:4] >= "2024", m["start_time"]
    for b in rec["VBDs"]:
        r = s.xenapi.VBD.get_record(b)
        if not r["empty"]:
            assert r["currently_attached"], r
            assert r["device"], r
    for f in rec["VIFs"]:
        assert s.xenapi.VIF.get_currently_attached(f)
    assert gm["os_version"].get("name") or gm["os_version"].get("distro"), gm["os_version"]
    assert re.match(r"^10\.0\.\d+\.\d+$", gm["networks"]["0/ip"]), gm["networks"]
    assert gm["PV_drivers_version"], gm


def check_halted(s, vm, guest_metrics=False):
    r = s.xenapi.VM.get_record(vm)
    assert r["power_state"] == "Halted" and r["domid"] == "-1", r
    assert r["resident_on"] == NULL
    assert (r["guest_metrics"] != NULL) == guest_metrics, r["guest_metrics"]
    assert r["current_operations"] == {}, r["current_operations"]
    ops = set(r["allowed_operations"])
    assert {"start", "clone", "copy", "snapshot", "destroy", "export"} <= ops, ops
    assert not ops & {"clean_shutdown", "hard_shutdown", "pause", "provision"}, ops
    for b in r["VBDs"]:
        vb = s.xenapi.VBD.get_record(b)
        assert not vb["currently_attached"] and vb["current_operations"] == {}, vb
    for f in r["VIFs"]:
        vf = s.xenapi.VIF.get_record(f)
        assert not vf["currently_attached"] and vf["current_operations"] == {}, vf
    return r


def test_template_to_uninstall(s):
    host_ref = s.xenapi.host.get_all()[0]
    tmpl = template(s)
    trec = s.xenapi.VM.get_record(tmpl)
    assert trec["is_a_template"] and trec["is_default_template"]
    assert "clone" in trec["allowed_operations"] and "start" not in trec["allowed_operations"]

    # -- install: clone + provision + VIF
    vm, sr, net, vif = install(s, "flow-vm")
    r = s.xenapi.VM.get_record(vm)
    assert r["name_label"] == "flow-vm" and not r["is_a_template"] and not r["is_a_snapshot"]
    assert r["other_config"]["base_template_name"] == TEMPLATE
    assert "disks" not in r["other_config"] and "default_template" not in r["other_config"]
    assert r["other_config"]["mac_seed"] != trec["other_config"].get("mac_seed")
    assert r["power_state"] == "Halted" and r["current_operations"] == {}
    assert "start" in r["allowed_operations"] and "provision" not in r["allowed_operations"]
    disks = [s.xenapi.VBD.get_record(b) for b in r["VBDs"]]
    disks = [b for b in disks if b["type"] == "Disk"]
    assert len(disks) == 1, disks
    d = disks[0]
    assert d["userdevice"] == "0" and d["bootable"] and d["mode"] == "RW"
    assert d["allowed_operations"] == ["attach"] or set(d["allowed_operations"]) == {"attach"}
    vdi = s.xenapi.VDI.get_record(d["VDI"])
    assert vdi["SR"] == sr and int(vdi["virtual_size"]) == 10 << 30
    assert vdi["name_description"] == "Created by template provisioner"
    assert vdi["sm_config"]["vmhint"] == r["uuid"]
    vifr = s.xenapi.VIF.get_record(vif)
    assert vifr["VM"] == vm and vifr["network"] == net and vifr["MAC_autogenerated"]
    assert not vifr["currently_attached"]
    m0 = s.xenapi.VM_metrics.get_record(r["metrics"])
    assert m0 is not None

    # -- start; watch it boot through event.from
    token = events_token(s)
    s.xenapi.VM.start(vm, False, False)
    rec, gm, seen = wait_running_with_guest(s, vm, token)
    check_running(s, vm, rec, gm, host_ref)
    assert "mod" in seen["vm"] and "add" in seen["vm_guest_metrics"], seen
    d1 = rec["domid"]

    # -- snapshot while Running (disk-only: no memory image)
    snap = s.xenapi.VM.snapshot(vm, "flow-snap")
    sr_ = s.xenapi.VM.get_record(snap)
    assert sr_["is_a_snapshot"] and sr_["is_a_template"] and sr_["snapshot_of"] == vm
    assert sr_["snapshot_info"]["power-state-at-snapshot"] == "Running"
    assert sr_["power_state"] == "Halted" and sr_["current_operations"] == {}
    assert "revert" in sr_["allowed_operations"]
    assert snap in s.xenapi.VM.get_snapshots(vm)
    snap_vdis = [s.xenapi.VBD.get_VDI(b) for b in sr_["VBDs"]
                 if s.xenapi.VBD.get_type(b) == "Disk"]
    assert len(snap_vdis) == 1 and s.xenapi.VDI.get_snapshot_of(snap_vdis[0]) == d["VDI"]
    snap_vifs = [s.xenapi.VIF.get_record(f) for f in sr_["VIFs"]]
    assert [f["MAC"] for f in snap_vifs] == [vifr["MAC"]]
    # the VM is untouched by its snapshot
    rec2 = s.xenapi.VM.get_record(vm)
    assert rec2["power_state"] == "Running" and rec2["domid"] == d1
    assert rec2["current_operations"] == {}

    # -- revert: a user shuts the VM down cleanly first (a running VM would be
    # hard shut down by the revert: test_revert_while_running)
    s.xenapi.VM.clean_shutdown(vm)
    check_halted(s, vm)
    s.xenapi.VM.revert(snap)
    # power-state-at-snapshot Running, but no memory image: Halted; the
    # snapshot's guest metrics come back as a copy (the original's
    # update_guest_metrics in xapi_vm_snapshot.ml)
    r = check_halted(s, vm, guest_metrics=True)
    assert r["parent"] == snap
    assert r["guest_metrics"] not in (sr_["guest_metrics"], NULL)
    assert s.xenapi.VM_guest_metrics.get_os_version(r["guest_metrics"]) == gm["os_version"]
    disks = [s.xenapi.VBD.get_record(b) for b in r["VBDs"]]
    disks = [b for b in disks if b["type"] == "Disk"]
    assert len(disks) == 1
    new_vdi = disks[0]["VDI"]
    assert new_vdi != d["VDI"]
    assert d["VDI"] not in s.xenapi.VDI.get_all()  # the old disk went
    assert [s.xenapi.VIF.get_MAC(f) for f in r["VIFs"]] == [vifr["MAC"]]
    assert s.xenapi.VM.get_current_operations(snap) == {}

    # -- start again, shut down
    token = events_token(s)
    s.xenapi.VM.start(vm, False, False)
    rec, gm, _ = wait_running_with_guest(s, vm, token)
    check_running(s, vm, rec, gm, host_ref)
    s.xenapi.VM.clean_shutdown(vm)
    check_halted(s, vm)

    # -- uninstall: the snapshot first (as xe vm-uninstall / XO do), then the VM
    uninstall(s, snap)
    gone = uninstall(s, vm)
    assert gone == [new_vdi]
    vdis = s.xenapi.VDI.get_all()
    assert new_vdi not in vdis and snap_vdis[0] not in vdis
    assert fail(s.xenapi.VM.get_record, vm)[0] == "HANDLE_INVALID"
    assert fail(s.xenapi.VM.get_record, snap)[0] == "HANDLE_INVALID"
    for cls in ("VBD", "VIF"):
        for ref, rr in getattr(s.xenapi, cls).get_all_records().items():
            assert rr["VM"] not in (vm, snap), (cls, ref)
    # the template is as it was
    t2 = s.xenapi.VM.get_record(tmpl)
    assert t2["current_operations"] == {} and t2["is_a_template"]
    assert "disks" in t2["other_config"] and 'sr=""' in t2["other_config"]["disks"]


def test_allowed_operations_follow_guest_features(s):
    vm, _, _, _ = install(s, "flow-features")
    try:
        token = events_token(s)
        s.xenapi.VM.start(vm, False, False)
        rec, gm, _ = wait_running_with_guest(s, vm, token)
        assert gm["other"].get("feature-shutdown") == "1", gm["other"]
        token = s.xenapi.event_from(["VM"], "", 0.0)["token"]
        ops = set(s.xenapi.VM.get_allowed_operations(vm))
        end = time.time() + 5
        while not {"clean_shutdown", "clean_reboot", "suspend"} <= ops and time.time() < end:
            rep = s.xenapi.event_from(["VM"], token, 1.0)
            token = rep["token"]
            for ev in rep["events"]:
                if ev["ref"] == vm and ev["operation"] == "mod":
                    ops = set(ev["snapshot"]["allowed_operations"])
        assert {"clean_shutdown", "clean_reboot", "suspend"} <= ops, ops
    finally:
        s.xenapi.VM.hard_shutdown(vm)
        uninstall(s, vm)


def test_revert_while_running(s):
    """VM.revert of a Running VM hard-shuts it down first (the original's
    xapi_vm_snapshot.ml; how XO's revertVm calls it)."""
    vm, _, _, _ = install(s, "flow-revert-running")
    try:
        s.xenapi.VM.start(vm, False, False)
        snap = s.xenapi.VM.snapshot(vm, "flow-revert-running-snap")
        s.xenapi.VM.revert(snap)
        r = s.xenapi.VM.get_record(vm)
        assert r["power_state"] == "Halted" and r["parent"] == snap
        assert r["current_operations"] == {}
    finally:
        if s.xenapi.VM.get_power_state(vm) != "Halted":
            s.xenapi.VM.hard_shutdown(vm)
        for v in [x for x in s.xenapi.VM.get_snapshots(vm)] + [vm]:
            uninstall(s, v)
