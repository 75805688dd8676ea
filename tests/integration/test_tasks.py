"""Tasks: the life cycle of Async.X.y tasks (JSON-RPC and the Python XenAPI
module over XML-RPC), result text, error_info (including an RBAC denial
inside the task), the task messages and their ownership rule, the task a
synchronous call runs in, cancellation, the task-id / subtask-of headers, and
the garbage collection of old tasks."""
import json
import re
import threading
import time

import pytest

from conftest import PASSWORD, JsonError, Xapi
from test_session import add_external_user

VM = {"name_label": "task-test", "name_description": "", "user_version": 1, "is_a_template": False,
      "affinity": "OpaqueRef:NULL", "memory_static_max": 1 << 30, "memory_dynamic_max": 1 << 30,
      "memory_dynamic_min": 1 << 29, "memory_static_min": 1 << 28, "VCPUs_params": {}, "VCPUs_max": 1,
      "VCPUs_at_startup": 1, "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
      "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
      "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
      "HVM_boot_params": {"order": "cdn"}, "platform": {}, "PCI_bus": "", "other_config": {},
      "recommendations": ""}

REF = re.compile(r"^OpaqueRef:[0-9a-f-]{36}$")
NULL = "OpaqueRef:NULL"


def wait_done(x, s, task, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = x.json_call("task.get_record", s, task)
        if rec["status"] not in ("pending", "cancelling"):
            return rec
        time.sleep(0.02)
    raise AssertionError("task %s still pending" % task)


def wait_for(pred, timeout=10, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in %ss" % timeout)


def json_call_headers(x, headers, method, *params):
    r, data = x.post("/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                                             "id": 1}), "application/json", headers)
    rep = json.loads(data)
    if "error" in rep:
        raise JsonError([rep["error"]["message"]] + list(rep["error"].get("data", [])))
    return rep["result"]


def tasks_named(x, s, name):
    return {r: t for r, t in x.json_call("task.get_all_records", s).items() if t["name_label"] == name}


# ---- Async life cycle ----

def test_async_success_json(server, jsess):
    x, s = server, jsess
    host = x.json_call("host.get_all", s)[0]
    t = x.json_call("Async.VM.create", s, dict(VM, name_label="async-json"))
    assert REF.match(t)
    rec = wait_done(x, s, t)
    assert rec["status"] == "success"
    assert rec["name_label"] == "Async.VM.create" and rec["name_description"] == ""
    assert rec["progress"] == 1
    assert rec["error_info"] == [] and rec["allowed_operations"] == [] and rec["current_operations"] == {}
    assert rec["resident_on"] == host and rec["subtask_of"] == NULL and rec["subtasks"] == []
    assert rec["type"] == "<none/>" and rec["backtrace"] == "()"
    assert rec["created"] <= rec["finished"] and rec["finished"] != "19700101T00:00:00Z"
    # the result is XML-RPC value text, for JSON-RPC clients too
    m = re.match(r"^<value>(OpaqueRef:[0-9a-f-]{36})</value>$", rec["result"])
    assert m, rec["result"]
    assert x.json_call("VM.get_name_label", s, m.group(1)) == "async-json"
    assert x.json_call("task.get_result", s, t) == rec["result"]
    # the caller destroys it after reading the result
    x.json_call("task.destroy", s, t)
    with pytest.raises(JsonError) as e:
        x.json_call("task.get_record", s, t)
    assert e.value.details == ["HANDLE_INVALID", "task", t]
    x.json_call("VM.destroy", s, m.group(1))


def test_async_xenapi_module(server, session):
    x = session.xenapi
    t = x.Async.VM.create(dict(VM, name_label="async-xml"))
    deadline = time.time() + 10
    while x.task.get_status(t) == "pending" and time.time() < deadline:
        time.sleep(0.02)
    rec = x.task.get_record(t)
    assert rec["status"] == "success" and rec["name_label"] == "Async.VM.create"
    vm = re.match(r"^<value>(OpaqueRef:[0-9a-f-]{36})</value>$", rec["result"]).group(1)
    assert x.VM.get_name_label(vm) == "async-xml"
    # a void result is an empty value
    t2 = x.Async.VM.destroy(vm)
    while x.task.get_status(t2) == "pending" and time.time() < deadline:
        time.sleep(0.02)
    assert x.task.get_status(t2) == "success"
    assert x.task.get_result(t2) == "<value></value>"
    assert float(x.task.get_progress(t2)) == 1.0
    x.task.destroy(t)
    x.task.destroy(t2)


def test_async_failure(server, jsess):
    x, s = server, jsess
    bogus = "OpaqueRef:00000000-0000-0000-0000-000000000001"
    t = x.json_call("Async.VM.destroy", s, bogus)
    rec = wait_done(x, s, t)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["HANDLE_INVALID", "VM", bogus]
    assert rec["result"] == "" and rec["progress"] == 1 and rec["allowed_operations"] == []
    assert rec["finished"] != "19700101T00:00:00Z"
    # errors found before the task exists are answered at once
    with pytest.raises(JsonError) as e:
        x.json_call("Async.VM.destroy", s)
    assert e.value.details[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"
    with pytest.raises(JsonError) as e:
        x.json_call("Async.VM.destroy", "OpaqueRef:nope", bogus)
    assert e.value.details[0] == "SESSION_INVALID"
    # not async-capable
    with pytest.raises(JsonError) as e:
        x.json_call("Async.VM.get_record", s, bogus)
    assert "No async mode" in " ".join(e.value.details)
    x.json_call("task.destroy", s, t)


# ---- the task messages ----

def test_task_create_and_client_updates(server, jsess):
    x, s = server, jsess
    t = x.json_call("task.create", s, "my job", "something long")
    rec = x.json_call("task.get_record", s, t)
    assert rec["name_label"] == "my job" and rec["name_description"] == "something long"
    assert rec["status"] == "pending" and rec["progress"] == 0
    assert rec["finished"] == "19700101T00:00:00Z" and rec["result"] == "" and rec["error_info"] == []
    assert rec["allowed_operations"] == [] and rec["current_operations"] == {}
    assert rec["subtask_of"] == NULL and rec["type"] == "<none/>"
    x.json_call("task.set_progress", s, t, 0.25)
    assert x.json_call("task.get_progress", s, t) == 0.25
    x.json_call("task.set_result", s, t, "<value>42</value>")
    x.json_call("task.set_error_info", s, t, ["SOME_ERROR", "p1"])
    x.json_call("task.add_to_other_config", s, t, "k", "v")
    x.json_call("task.set_status", s, t, "success")
    rec = x.json_call("task.get_record", s, t)
    assert rec["result"] == "<value>42</value>" and rec["error_info"] == ["SOME_ERROR", "p1"]
    assert rec["status"] == "success" and rec["other_config"] == {"k": "v"}
    with pytest.raises(JsonError) as e:
        x.json_call("task.set_status", s, t, "finished")
    assert e.value.details[0] == "INVALID_VALUE"
    assert t in x.json_call("task.get_by_name_label", s, "my job")
    x.json_call("task.destroy", s, t)
    assert t not in x.json_call("task.get_all", s)
    for m in ("task.destroy", "task.cancel"):
        with pytest.raises(JsonError) as e:
            x.json_call(m, s, t)
        assert e.value.details == ["HANDLE_INVALID", "task", t]


def test_task_cancel_and_destroy_pending(server, jsess):
    x, s = server, jsess
    t = x.json_call("task.create", s, "cancel me", "")
    x.json_call("task.cancel", s, t)
    ops = x.json_call("task.get_current_operations", s, t)
    # as the original: {<the calling (dummy) task>: cancel}; the status is the
    # business of whoever runs the task (a client's task: the client)
    assert list(ops.values()) == ["cancel"]
    assert re.match(r"^DummyRef:\|[0-9a-f-]{36}\|task\.cancel$", list(ops)[0])
    assert x.json_call("task.get_status", s, t) == "pending"
    x.json_call("task.set_status", s, t, "cancelled")
    # destroying a pending task marks it; the GC removes it once it completes
    t2 = x.json_call("task.create", s, "destroy me later", "")
    x.json_call("task.destroy", s, t2)
    assert x.json_call("task.get_current_operations", s, t2) == {"task": "destroy"}
    assert t2 in x.json_call("task.get_all", s)
    x.json_call("task.destroy", s, t)


def test_client_task_runs_calls_with_task_id_header(server, jsess):
    x, s = server, jsess
    t = x.json_call("task.create", s, "client task", "")
    before = set(x.json_call("task.get_all", s))
    vm = json_call_headers(x, {"task-id": t}, "VM.create", s, dict(VM, name_label="in-client-task"))
    assert x.json_call("VM.get_name_label", s, vm) == "in-client-task"
    # the call ran in the client's task: no task of its own, and the
    # client's task is the client's to complete (as the original)
    assert set(x.json_call("task.get_all", s)) == before
    assert x.json_call("task.get_status", s, t) == "pending"
    # a cancelled client task makes the call fail with TASK_CANCELLED
    x.json_call("task.cancel", s, t)
    n = len(x.json_call("VM.get_all", s))
    with pytest.raises(JsonError) as e:
        json_call_headers(x, {"task-id": t}, "VM.create", s, dict(VM, name_label="never"))
    assert e.value.details == ["TASK_CANCELLED", t]
    assert len(x.json_call("VM.get_all", s)) == n
    # Async with task-id answers with that task
    # (the Async form with task-id answers with that task; the task is
    # cancelled, so the destroy fails: the VM stays, the task stays pending)
    assert json_call_headers(x, {"task-id": t}, "Async.VM.destroy", s, vm) == t
    time.sleep(0.3)
    assert vm in x.json_call("VM.get_all", s)
    assert x.json_call("task.get_status", s, t) == "pending"
    # an unknown task
    with pytest.raises(JsonError) as e:
        json_call_headers(x, {"task-id": "OpaqueRef:bogus"}, "VM.get_all", s)
    assert e.value.details == ["HANDLE_INVALID", "task", "OpaqueRef:bogus"]
    x.json_call("task.set_status", s, t, "success")
    x.json_call("task.destroy", s, t)
    x.json_call("VM.destroy", s, vm)


def test_subtask_of_header(server, jsess):
    x, s = server, jsess
    parent = x.json_call("task.create", s, "parent", "")
    t = json_call_headers(x, {"subtask-of": parent}, "Async.VM.create", s, dict(VM, name_label="child"))
    rec = wait_done(x, s, t)
    assert rec["subtask_of"] == parent
    assert t in x.json_call("task.get_subtasks", s, parent)
    vm = re.match(r"^<value>(.*)</value>$", rec["result"]).group(1)
    x.json_call("VM.destroy", s, vm)
    # task.create in a call running in a task makes a subtask of it
    sub = json_call_headers(x, {"task-id": parent}, "task.create", s, "sub", "")
    assert x.json_call("task.get_subtask_of", s, sub) == parent
    for r in (t, sub, parent):
        x.json_call("task.set_status", s, r, "success")
        x.json_call("task.destroy", s, r)


def test_sync_call_runs_in_a_task(server, jsess):
    x, s = server, jsess
    before = x.json_call("task.get_all", s)
    vm = x.json_call("VM.create", s, dict(VM, name_label="sync"))
    # the call's task came and went
    assert x.json_call("task.get_all", s) == before
    x.json_call("VM.destroy", s, vm)
    assert x.json_call("task.get_all", s) == before
    # getters are not async-capable: no task
    x.json_call("VM.get_all_records", s)
    assert x.json_call("task.get_all", s) == before


# ---- ownership: RBAC on other users' tasks, and inside Async calls ----

def test_rbac_inside_async_and_task_ownership(fresh_server):
    x = fresh_server
    s = x.json_login()
    pool = x.json_call("pool.get_all", s)[0]
    roles = {rec["name_label"]: r for r, rec in x.json_call("role.get_all_records", s).items()}
    x.json_call("pool.enable_external_auth", s, pool, {}, "", "PAM")
    sess = {}
    for user, role in (("alice", "read-only"), ("bob", "vm-admin"), ("carol", "pool-operator")):
        add_external_user(x.state, user, user + "-pw")
        subj = x.json_call("subject.create", s, {"subject_identifier": user, "other_config": {}})
        for r in x.json_call("subject.get_roles", s, subj):
            x.json_call("subject.remove_from_roles", s, subj, r)
        x.json_call("subject.add_to_roles", s, subj, roles[role])
        sess[user] = x.json_call("session.login_with_password", user, user + "-pw")
    a, b, c = sess["alice"], sess["bob"], sess["carol"]
    # a read-only subject's Async write gets a task; the denial is its error_info
    n = len(x.json_call("VM.get_all", s))
    t = x.json_call("Async.VM.create", a, dict(VM, name_label="denied"))
    rec = wait_done(x, a, t)
    assert rec["status"] == "failure"
    assert rec["error_info"][:2] == ["RBAC_PERMISSION_DENIED", "vm.create"]
    assert "read-only" not in rec["error_info"][2] and "vm-admin" in rec["error_info"][2]
    assert len(x.json_call("VM.get_all", s)) == n
    # the synchronous form is denied directly
    with pytest.raises(JsonError) as e:
        x.json_call("VM.create", a, dict(VM, name_label="denied"))
    assert e.value.details[:2] == ["RBAC_PERMISSION_DENIED", "vm.create"]
    # alice owns her tasks, in any of her sessions
    ta = x.json_call("task.create", a, "alice's", "")
    a2 = x.json_call("session.login_with_password", "alice", "alice-pw")
    x.json_call("task.set_progress", a2, ta, 0.5)
    x.json_call("task.add_to_other_config", s, ta, "by", "root")
    # bob (vm-admin) may not touch alice's tasks
    for m, args in (("task.destroy", ()), ("task.cancel", ()), ("task.set_status", ("success",)),
                    ("task.set_progress", (0.9,)), ("task.set_result", ("x",)),
                    ("task.set_error_info", (["E"],))):
        with pytest.raises(JsonError) as e:
            x.json_call(m, b, ta, *args)
        assert e.value.details == ["RBAC_PERMISSION_DENIED", "task.destroy/any",
                                   "No permission in user session. (Roles with this permission: "
                                   "pool-admin, pool-operator)"], m
    # nor alice root's
    tr = x.json_call("task.create", s, "root's", "")
    with pytest.raises(JsonError) as e:
        x.json_call("task.destroy", a, tr)
    assert e.value.details[:2] == ["RBAC_PERMISSION_DENIED", "task.destroy/any"]
    assert x.json_call("task.get_progress", s, ta) == 0.5
    # a pool-operator may (task.destroy/any)
    x.json_call("task.cancel", c, ta)
    x.json_call("task.set_status", c, ta, "cancelled")
    x.json_call("task.destroy", c, ta)
    # alice destroys her Async task, root his own
    x.json_call("task.destroy", a2, t)
    x.json_call("task.set_status", s, tr, "success")
    x.json_call("task.destroy", s, tr)
    assert x.json_call("task.get_all", s) == []


# ---- cancellation and the slow-call testing delay ----

@pytest.fixture(scope="module")
def slow(xapi_bin, tmp_path_factory):
    x = Xapi(str(tmp_path_factory.mktemp("slow")), ["--debug-call-delay-ms", "1500"])
    yield x
    x.stop()


def test_sync_task_visible_during_call(slow):
    x = slow
    s = x.json_login()
    res = {}

    def call():
        res["vm"] = x.json_call("VM.create", s, dict(VM, name_label="slow-sync"))

    th = threading.Thread(target=call)
    th.start()
    # the task row is added first, then marked cancellable when the work
    # starts (a second commit): wait for the second state, then check it
    found = wait_for(lambda: {r: t for r, t in tasks_named(x, s, "VM.create").items()
                              if t["allowed_operations"] == ["cancel"]}, timeout=5)
    (ref, rec), = found.items()
    assert rec["status"] == "pending" and rec["name_label"] == "VM.create"
    assert rec["allowed_operations"] == ["cancel"]
    wait_for(lambda: x.json_call("task.get_progress", s, ref) > 0, timeout=5)
    th.join(10)
    assert REF.match(res["vm"])
    assert not tasks_named(x, s, "VM.create")


def test_sync_task_events(slow):
    # event.from watchers of the task class see a synchronous call's task
    # come (add) and go (del)
    x = slow
    s = x.json_login()
    tok = x.json_call("event.from", s, ["task"], "", 0.1)["token"]
    res = {}
    th = threading.Thread(target=lambda: res.update(vm=x.json_call("VM.create", s, dict(VM, name_label="ev"))))
    th.start()
    seen = []
    ref = None
    deadline = time.time() + 10
    while time.time() < deadline and not any(op == "del" and r == ref for op, r, _ in seen):
        rep = x.json_call("event.from", s, ["task"], tok, 2.0)
        tok = rep["token"]
        for e in rep["events"]:
            snap = e.get("snapshot") or {}
            seen.append((e["operation"], e["ref"], snap.get("name_label")))
            if e["operation"] == "add" and snap.get("name_label") == "VM.create":
                ref = e["ref"]
                assert snap["status"] == "pending"
    th.join(10)
    assert ref and ("del", ref) in [(op, r) for op, r, _ in seen], seen
    assert REF.match(res["vm"])


def test_cancel_async_task(slow):
    x = slow
    s = x.json_login()
    n = len(x.json_call("VM.get_all", s))
    t = x.json_call("Async.VM.create", s, dict(VM, name_label="cancelled"))
    wait_for(lambda: x.json_call("task.get_allowed_operations", s, t) == ["cancel"], timeout=5)
    x.json_call("task.cancel", s, t)
    rec = wait_done(x, s, t)
    assert rec["status"] == "cancelled"
    assert rec["error_info"] == ["TASK_CANCELLED", t]
    assert rec["allowed_operations"] == [] and rec["progress"] == 1
    assert len(x.json_call("VM.get_all", s)) == n
    x.json_call("task.destroy", s, t)


def test_cancel_sync_call(slow):
    x = slow
    s = x.json_login()
    res = {}

    def call():
        try:
            x.json_call("VM.create", s, dict(VM, name_label="cancel-sync"))
        except JsonError as e:
            res["err"] = e.details

    th = threading.Thread(target=call)
    th.start()
    (ref, rec), = wait_for(lambda: tasks_named(x, s, "VM.create"), timeout=5).items()
    x.json_call("task.cancel", s, ref)
    th.join(10)
    assert res["err"] == ["TASK_CANCELLED", ref]
    assert not tasks_named(x, s, "VM.create")


def test_cancel_with_xenapi_module(slow, XenAPI):
    sx = XenAPI.Session(slow.url)
    sx.login_with_password("root", PASSWORD)
    try:
        t = sx.xenapi.Async.VM.create(dict(VM, name_label="xml-cancel"))
        wait_for(lambda: sx.xenapi.task.get_allowed_operations(t) == ["cancel"], timeout=5)
        sx.xenapi.task.cancel(t)
        wait_for(lambda: sx.xenapi.task.get_status(t) == "cancelled", timeout=5)
        assert sx.xenapi.task.get_error_info(t) == ["TASK_CANCELLED", t]
        sx.xenapi.task.destroy(t)
    finally:
        sx.xenapi.session.logout()


# ---- garbage collection ----

def test_gc_completed_and_max(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path), ["--gc-interval", "1", "--completed-task-timeout", "3", "--max-tasks", "4"])
    try:
        s = x.json_login()
        pending = [x.json_call("task.create", s, "pending-%d" % i, "") for i in range(2)]
        done = []
        for i in range(5):
            t = x.json_call("Async.VM.create", s, dict(VM, name_label="gc-%d" % i))
            wait_done(x, s, t)
            done.append(t)
            time.sleep(1.1 if i == 0 else 0.05)
        # too many: the oldest completed go first, pending ones stay (4 in all)
        wait_for(lambda: len(x.json_call("task.get_all", s)) == 4, timeout=5)
        left = set(x.json_call("task.get_all", s))
        assert set(pending) <= left and done[0] not in left
        # and completed tasks go once older than the timeout
        wait_for(lambda: set(x.json_call("task.get_all", s)) == set(pending), timeout=8)
        # a pending task marked for destruction goes once it completes
        x.json_call("task.destroy", s, pending[0])
        time.sleep(1.5)
        assert pending[0] in x.json_call("task.get_all", s)
        x.json_call("task.set_status", s, pending[0], "failure")
        wait_for(lambda: pending[0] not in x.json_call("task.get_all", s), timeout=5)
    finally:
        x.stop()


def test_gc_stuck_pending(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path), ["--gc-interval", "1", "--pending-task-timeout", "1"])
    try:
        s = x.json_login()
        stuck = x.json_call("task.create", s, "stuck", "")
        moving = x.json_call("task.create", s, "moving", "")
        # an old pending task survives one pass on probation, and every pass
        # while it makes progress; without progress it goes
        p = 0.0
        deadline = time.time() + 8
        while stuck in x.json_call("task.get_all", s) and time.time() < deadline:
            p += 0.01
            x.json_call("task.set_progress", s, moving, p)
            time.sleep(0.2)
        assert stuck not in x.json_call("task.get_all", s)
        assert moving in x.json_call("task.get_all", s)
    finally:
        x.stop()
