"""event.from, event.inject, event.get_current_id and the legacy
event.register/unregister/next, as the original serves them: raw JSON-RPC,
raw XML-RPC and Debian's Python XenAPI module."""
import hashlib
import json
import re
import selectors
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import JsonError, Xapi, PASSWORD
from conftest import MIN_VM

TOKEN_RE = re.compile(r"^-?\d{20},-?\d{20}$")


def err(call):
    with pytest.raises(JsonError) as e:
        call()
    return e.value.details


def new_vm(x, s, label="ev-vm"):
    return x.json_call("VM.create", s, dict(MIN_VM, name_label=label))


@pytest.fixture(scope="module")
def fast(xapi_bin):
    """A daemon with no coalescing delay (fast tests)."""
    d = tempfile.mkdtemp(prefix="cxapi-ev-")
    x = Xapi(d, ["--event-delay-ms", "0"])
    yield x
    x.stop()
    subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="module")
def fs(fast):
    return fast.json_login()


def current_token(x, s, classes=("*",)):
    return x.json_call("event.from", s, list(classes), "", 0.0)["token"]


def from_bg(x, s, classes, token, timeout):
    """event.from in a thread; returns (thread, result holder)."""
    box = {}

    def run():
        t0 = time.time()
        try:
            box["r"] = x.json_call("event.from", s, classes, token, timeout)
        except JsonError as e:
            box["e"] = e.details
        box["t"] = time.time() - t0

    th = threading.Thread(target=run)
    th.start()
    return th, box


# ---- event.from basics ----

def test_empty_token_returns_every_object_as_add(fast, fs):
    r = fast.json_call("event.from", fs, ["VM", "host"], "", 0.0)
    assert list(r) == ["events", "valid_ref_counts", "token"]
    assert TOKEN_RE.match(r["token"])
    vms = fast.json_call("VM.get_all_records", fs)
    adds = {e["ref"]: e for e in r["events"] if e["class"] == "vm"}
    assert set(adds) == set(vms)
    for ref, e in adds.items():
        assert list(e) == ["id", "timestamp", "class", "operation", "ref", "snapshot"]
        assert e["operation"] == "add" and e["timestamp"] == "0.0"
        assert isinstance(e["id"], str) and int(e["id"]) > 0
        assert e["snapshot"] == vms[ref]
    assert {e["class"] for e in r["events"]} == {"vm", "host"}
    counts = r["valid_ref_counts"]
    assert counts["vm"] == len(vms) and counts["host"] == 1
    assert counts["session"] >= 1            # every database table, sessions too
    assert "message" not in counts and "event" not in counts
    assert all(k == k.lower() and isinstance(v, int) for k, v in counts.items())
    # the original's order: table names in reverse byte order
    assert list(counts)[0] == "user" and list(counts)[-1] == "bond"


def test_token_parse_failures(fast, fs):
    for bad in ["abc", "5", "1,2,3", ",", "x,1", "1,", "_1,0", " 1,0"]:
        assert err(lambda: fast.json_call("event.from", fs, ["vm"], bad, 0.0)) == \
            ["EVENT_FROM_TOKEN_PARSE_FAILURE", bad], bad
    # what OCaml's Int64.of_string takes is a token
    for ok in ["0,0", "-1,0", "0x10,0", "1_000,0"]:
        r = fast.json_call("event.from", fs, ["pool"], ok, 0.0)
        assert TOKEN_RE.match(r["token"])


def test_subscriptions_case_and_objects(fast, fs):
    a, b = new_vm(fast, fs, "sub-a"), new_vm(fast, fs, "sub-b")
    tok = current_token(fast, fs)
    fast.json_call("VM.set_name_label", fs, a, "sub-a2")
    fast.json_call("VM.set_name_label", fs, b, "sub-b2")
    for classes in (["VM"], ["vm"], ["Vm"], ["*"]):
        r = fast.json_call("event.from", fs, classes, tok, 0.0)
        refs = {e["ref"] for e in r["events"] if e["class"] == "vm"}
        assert {a, b} <= refs, classes
    r = fast.json_call("event.from", fs, ["vm/" + a], tok, 0.0)
    assert [(e["ref"], e["operation"]) for e in r["events"]] == [(a, "mod")]
    r = fast.json_call("event.from", fs, ["VM/" + b], tok, 0.0)
    assert [e["ref"] for e in r["events"]] == [b]
    assert r["events"][0]["snapshot"]["name_label"] == "sub-b2"
    # odd subscriptions parse (as the original's) and match nothing
    for classes in ([""], ["nosuchclass"], ["vm/"], ["a/b/c"], ["vm/OpaqueRef:nope"]):
        r = fast.json_call("event.from", fs, classes, tok, 0.0)
        assert r["events"] == [], classes


def test_blocks_until_change_then_returns(fast, fs):
    vm = new_vm(fast, fs, "block")
    tok = current_token(fast, fs, ["vm"])
    th, box = from_bg(fast, fs, ["vm"], tok, 10.0)
    time.sleep(0.3)
    assert th.is_alive()                 # nothing yet: it waits
    # other calls are served meanwhile
    assert fast.json_call("VM.get_name_label", fs, vm) == "block"
    fast.json_call("VM.set_name_label", fs, vm, "blocked")
    th.join(5)
    assert not th.is_alive()
    evs = box["r"]["events"]
    assert [(e["operation"], e["ref"]) for e in evs] == [("mod", vm)]
    assert evs[0]["snapshot"]["name_label"] == "blocked"
    assert box["r"]["token"] > tok
    assert box["t"] >= 0.25


def test_timeout_as_double_int_and_string(fast, fs):
    tok = current_token(fast, fs, ["vm"])
    for t in (0.4, 0, "0.3"):
        t0 = time.time()
        r = fast.json_call("event.from", fs, ["VM"], tok, t)
        took = time.time() - t0
        assert r["events"] == [] and r["token"] == tok.split(",")[0] + ",00000000000000000000"
        assert took >= float(t) - 0.05 and took < float(t) + 1.0
    # a negative timeout means 24 hours (the original): it waits for a change
    th, box = from_bg(fast, fs, ["vm"], tok, -1.0)
    time.sleep(0.3)
    assert th.is_alive()
    fast.json_call("event.inject", fs, "pool", fast.json_call("pool.get_all", fs)[0])
    new_vm(fast, fs, "wake-negative")
    th.join(5)
    assert box["r"]["events"]


def test_changes_to_other_classes_do_not_answer(fast, fs):
    tok = current_token(fast, fs, ["sr"])
    th, box = from_bg(fast, fs, ["SR"], tok, 0.8)
    time.sleep(0.1)
    new_vm(fast, fs, "not-an-sr")
    th.join(5)
    assert box["r"]["events"] == [] and box["t"] >= 0.7


def test_sessions_generate_no_events(fast, fs):
    tok = current_token(fast, fs, ["session"])
    other = fast.json_login()
    r = fast.json_call("event.from", fs, ["session", "*"], tok, 0.0)
    assert all(e["class"] != "session" for e in r["events"])
    fast.json_call("session.logout", other)


def test_inject(fast, fs):
    pool = fast.json_call("pool.get_all", fs)[0]
    tok = fast.json_call("event.inject", fs, "pool", pool)
    assert TOKEN_RE.match(tok) and tok.endswith(",00000000000000000000")
    r = fast.json_call("event.from", fs, ["pool"], tok, 0.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in r["events"]] == [("pool", "mod", pool)]
    assert r["events"][0]["snapshot"] == fast.json_call("pool.get_record", fs, pool)
    # the class is the exact table name
    assert err(lambda: fast.json_call("event.inject", fs, "Pool", pool)) == ["HANDLE_INVALID", "Pool", pool]
    assert err(lambda: fast.json_call("event.inject", fs, "VM", pool)) == ["HANDLE_INVALID", "VM", pool]
    assert err(lambda: fast.json_call("event.inject", fs, "pool", "OpaqueRef:x")) == \
        ["HANDLE_INVALID", "pool", "OpaqueRef:x"]


def test_creation_relation_and_deletion(fast, fs):
    tok = current_token(fast, fs)
    vm = new_vm(fast, fs, "doomed")
    r = fast.json_call("event.from", fs, ["vm"], tok, 0.0)
    assert [(e["operation"], e["ref"]) for e in r["events"]] == [("add", vm)]
    tok2 = r["token"]
    fast.json_call("VM.destroy", fs, vm)
    r = fast.json_call("event.from", fs, ["vm"], tok2, 0.0)
    assert [(e["operation"], e["ref"]) for e in r["events"]] == [("del", vm)]
    assert "snapshot" not in r["events"][0]
    assert r["token"] > tok2
    # created and deleted within the window: nothing at all (as the original)
    r = fast.json_call("event.from", fs, ["vm"], tok, 0.0)
    assert all(e["ref"] != vm for e in r["events"])
    # a deletion reaches every waiter
    vm2 = new_vm(fast, fs, "doomed2")
    tok3 = current_token(fast, fs)
    waiters = [from_bg(fast, fs, ["vm"], tok3, 10.0) for _ in range(5)]
    time.sleep(0.2)
    fast.json_call("VM.destroy", fs, vm2)
    for th, box in waiters:
        th.join(5)
        # VM.destroy first marks current_operations (destroy), as the
        # original's with_vm_operation does, so a waiter may be woken by that
        # mod; the deletion follows
        ops = [(e["operation"], e["ref"]) for e in box["r"]["events"]]
        if ops == [("mod", vm2)]:
            r = fast.json_call("event.from", fs, ["vm"], box["r"]["token"], 5.0)
            ops += [(e["operation"], e["ref"]) for e in r["events"]]
        assert ops in ([("del", vm2)], [("mod", vm2), ("del", vm2)]), ops


def test_waiters_answered_by_logout(fast):
    s = fast.json_login()
    tok = current_token(fast, s, ["vm"])
    waiters = [from_bg(fast, s, ["vm"], tok, 30.0) for _ in range(3)]
    time.sleep(0.3)
    fast.json_call("session.logout", s)
    for th, box in waiters:
        th.join(5)
        assert not th.is_alive()
        assert box["e"] == ["SESSION_INVALID", s]


def test_messages_in_events(fast, fs):
    host = fast.json_call("host.get_all", fs)[0]
    hu = fast.json_call("host.get_uuid", fs, host)
    tok = current_token(fast, fs, ["message"])
    g, m = tok.split(",")
    th, box = from_bg(fast, fs, ["message"], tok, 10.0)
    time.sleep(0.2)
    msg = fast.json_call("message.create", fs, "EV_TEST", 3, "Host", hu, "hello")
    th.join(5)
    r = box["r"]
    assert [(e["class"], e["operation"], e["ref"], e["id"]) for e in r["events"]] == \
        [("message", "add", msg, "0")]
    assert r["events"][0]["snapshot"] == fast.json_call("message.get_record", fs, msg)
    g2, m2 = r["token"].split(",")
    assert int(m2) > int(m)
    fast.json_call("message.destroy", fs, msg)
    r = fast.json_call("event.from", fs, ["message"], r["token"], 0.0)
    assert [(e["operation"], e["ref"], e["id"]) for e in r["events"]] == [("del", msg, "0")]
    # without "message" subscribed, the second part is 0
    r = fast.json_call("event.from", fs, ["vm"], tok, 0.0)
    assert r["token"].endswith(",00000000000000000000")


# ---- coalescing (the default 50 ms delay) ----

def test_burst_coalesces_with_default_delay(server, jsess):
    vm = new_vm(server, jsess, "burst")
    tok = current_token(server, jsess, ["vm"])
    seen = []
    stop = threading.Event()

    def watch():
        t = tok
        while not stop.is_set():
            r = server.json_call("event.from", jsess, ["vm/" + vm], t, 2.0)
            t = r["token"]
            for e in r["events"]:
                seen.append(e["snapshot"]["name_label"])
            if seen and seen[-1] == "burst-19":
                return

    th = threading.Thread(target=watch)
    th.start()
    time.sleep(0.2)
    for i in range(20):
        server.json_call("VM.set_name_label", jsess, vm, "burst-%d" % i)
    th.join(10)
    stop.set()
    assert seen[-1] == "burst-19"
    assert len(seen) <= 2, seen


def test_delay_before_first_look(server, jsess):
    # with a delay, even a ready answer waits for it (the original's batching)
    t0 = time.time()
    r = server.json_call("event.from", jsess, ["vm"], "", 0.0)
    assert r["events"] and time.time() - t0 >= 0.045
    # task-only subscriptions are answered without it
    t0 = time.time()
    server.json_call("event.from", jsess, ["task"], "", 0.0)
    assert time.time() - t0 < 0.045


# ---- deletions beyond the retention horizon ----

def test_old_token_beyond_horizon(xapi_bin):
    d = tempfile.mkdtemp(prefix="cxapi-ev-")
    x = Xapi(d, ["--event-delay-ms", "0", "--event-deletions-kept", "256"])
    try:
        s = x.json_login()
        keep = new_vm(x, s, "keep")
        victim = new_vm(x, s, "victim")
        tok = current_token(x, s)
        x.json_call("VM.destroy", s, victim)
        # churn: 300 deletions push the victim's tombstone out
        for i in range(300):
            x.json_call("VM.destroy", s, new_vm(x, s, "churn"))
        x.json_call("VM.set_name_label", s, keep, "kept")
        r = x.json_call("event.from", s, ["vm"], tok, 0.0)
        # the original's behaviour: what is remembered, no error...
        assert [(e["operation"], e["ref"]) for e in r["events"]] == [("mod", keep)]
        # ...and valid_ref_counts lets the client see that it missed one
        known = set(x.json_call("VM.get_all", s)) | {victim}
        assert r["valid_ref_counts"]["vm"] == len(known) - 1
        # a recent token still sees recent deletions
        vm3 = new_vm(x, s, "recent")
        tok2 = current_token(x, s)
        x.json_call("VM.destroy", s, vm3)
        r = x.json_call("event.from", s, ["vm"], tok2, 0.0)
        assert [(e["operation"], e["ref"]) for e in r["events"]] == [("del", vm3)]
    finally:
        x.stop()
        subprocess.run(["rm", "-rf", d])


# ---- legacy API ----

def test_legacy_register_next(fast):
    s = fast.json_login()
    trackid = "trackid=" + hashlib.md5(s.encode()).hexdigest()
    assert err(lambda: fast.json_call("event.next", s)) == ["SESSION_NOT_REGISTERED", trackid]
    id0 = fast.json_call("event.get_current_id", s)
    assert isinstance(id0, int)
    fast.json_call("event.register", s, ["VM"])
    vm = new_vm(fast, s, "legacy")
    fast.json_call("VM.set_name_label", s, vm, "legacy2")
    evs = fast.json_call("event.next", s)
    ops = [(e["class"], e["operation"], e["ref"]) for e in evs]
    # one event per change the loop saw: both, or one add if they came together
    assert ops in ([("vm", "add", vm), ("vm", "mod", vm)], [("vm", "add", vm)]), ops
    assert list(evs[0]) == ["id", "timestamp", "class", "operation", "ref", "snapshot"]
    assert [int(e["id"]) for e in evs] == list(range(int(evs[0]["id"]), int(evs[0]["id"]) + len(evs)))
    assert re.match(r"^\d+\.$", evs[0]["timestamp"])
    assert evs[-1]["snapshot"]["name_label"] == "legacy2"
    assert fast.json_call("event.get_current_id", s) > id0
    # next blocks until something happens
    box = {}
    th = threading.Thread(target=lambda: box.update(r=fast.json_call("event.next", s)))
    th.start()
    time.sleep(0.3)
    assert th.is_alive()
    fast.json_call("VM.destroy", s, vm)
    th.join(5)
    # the destroy operation's mark (current_operations) may come first
    ops = [(e["operation"], e["ref"]) for e in box["r"]]
    if ops == [("mod", vm)]:
        ops += [(e["operation"], e["ref"]) for e in fast.json_call("event.next", s)]
    assert ops in ([("del", vm)], [("mod", vm), ("del", vm)]), ops
    # unregister: VM events no longer come; other classes do
    fast.json_call("event.unregister", s, ["vm"])
    fast.json_call("event.register", s, ["pool"])
    new_vm(fast, s, "legacy-unseen")
    pool = fast.json_call("pool.get_all", s)[0]
    fast.json_call("event.inject", s, "pool", pool)
    evs = fast.json_call("event.next", s)
    assert [(e["class"], e["ref"]) for e in evs] == [("pool", pool)]
    # logout answers a waiting next
    box = {}

    def nxt():
        try:
            fast.json_call("event.next", s)
        except JsonError as e:
            box["e"] = e.details

    th = threading.Thread(target=nxt)
    th.start()
    time.sleep(0.3)
    fast.json_call("session.logout", s)
    th.join(5)
    assert box["e"] == ["SESSION_INVALID", s]


def test_legacy_events_lost(xapi_bin):
    d = tempfile.mkdtemp(prefix="cxapi-ev-")
    x = Xapi(d, ["--event-delay-ms", "0", "--event-queue-bytes", "20000"])
    try:
        s = x.json_login()
        x.json_call("event.register", s, ["vm"])
        vm = new_vm(x, s, "lost")
        for i in range(40):
            x.json_call("VM.set_name_label", s, vm, "lost-%d" % i)
        assert err(lambda: x.json_call("event.next", s)) == ["EVENTS_LOST"]
        # after that, the client resynchronises and goes on
        x.json_call("VM.set_name_label", s, vm, "found")
        evs = x.json_call("event.next", s)
        assert evs[-1]["snapshot"]["name_label"] == "found"
    finally:
        x.stop()
        subprocess.run(["rm", "-rf", d])


# ---- wire: XML-RPC and the Python XenAPI module ----

def test_xmlrpc_reply_shape(fast, fs):
    body = ("<?xml version='1.0'?><methodCall><methodName>event.from</methodName><params>"
            "<param><value>%s</value></param><param><value><array><data><value>pool</value>"
            "</data></array></value></param><param><value></value></param>"
            "<param><value><double>0</double></value></param></params></methodCall>" % fs)
    r, data = fast.post("/", body)
    text = data.decode()
    assert "<member><name>valid_ref_counts</name><value><struct><member><name>user</name>" \
           "<value><i4>0</i4></value></member>" in text
    i_ev, i_cnt, i_tok = (text.index("<name>%s</name>" % k) for k in ("events", "valid_ref_counts", "token"))
    assert i_ev < i_cnt < i_tok
    assert "\n" not in text


def test_python_xenapi_event_loop(fast, XenAPI):
    sess = XenAPI.Session(fast.url)
    sess.login_with_password("root", PASSWORD)
    try:
        x = sess.xenapi
        vm = x.VM.create(dict(MIN_VM, name_label="py"))
        r = getattr(x.event, "from")(["vm"], "", 0.0)
        assert isinstance(r["valid_ref_counts"]["vm"], int)
        token = r["token"]
        seen = {}
        done = threading.Event()

        def loop():
            t = token
            s2 = XenAPI.Session(fast.url)
            s2.login_with_password("root", PASSWORD)
            while not done.is_set():
                res = getattr(s2.xenapi.event, "from")(["VM"], t, 5.0)
                t = res["token"]
                for e in res["events"]:
                    if e["operation"] != "del":
                        seen[e["ref"]] = e["snapshot"]["name_label"]
                if seen.get(vm) == "py-renamed":
                    done.set()
            s2.xenapi.session.logout()

        th = threading.Thread(target=loop)
        th.start()
        time.sleep(0.2)
        x.VM.set_name_label(vm, "py-renamed")
        th.join(10)
        assert seen.get(vm) == "py-renamed"
    finally:
        sess.xenapi.session.logout()


# ---- many waiters ----

def _jsonrpc_bytes(method, params):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    return (b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def test_thousand_waiters(fast, fs):
    vm = new_vm(fast, fs, "thousand")
    tok = current_token(fast, fs, ["vm"])
    sel = selectors.DefaultSelector()
    socks = []
    req = _jsonrpc_bytes("event.from", [fs, ["vm"], tok, 60.0])
    for _ in range(1000):
        c = socket.create_connection(("127.0.0.1", fast.http_port))
        c.sendall(req)
        socks.append(c)
    time.sleep(0.5)
    # the daemon keeps serving other clients quickly
    t0 = time.time()
    for i in range(50):
        assert fast.json_call("VM.get_name_label", fs, vm).startswith("thousand")
    assert time.time() - t0 < 5
    cpu0 = _cpu(fast)
    time.sleep(1.0)
    assert _cpu(fast) - cpu0 < 0.2       # waiting costs (next to) nothing
    fast.json_call("VM.set_name_label", fs, vm, "thousand-done")
    bufs = {}
    for c in socks:
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
        bufs[c] = b""
    done = set()
    deadline = time.time() + 20
    while len(done) < len(socks) and time.time() < deadline:
        for key, _ in sel.select(1):
            c = key.fileobj
            data = c.recv(65536)
            bufs[c] += data
            head, _, body = bufs[c].partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head, re.I)
            if m and len(body) >= int(m.group(1)):
                done.add(c)
                sel.unregister(c)
    assert len(done) == 1000
    for c in socks:
        body = bufs[c].partition(b"\r\n\r\n")[2]
        r = json.loads(body)["result"]
        assert [e["snapshot"]["name_label"] for e in r["events"]] == ["thousand-done"]
        c.close()


def _cpu(x):
    with open("/proc/%d/stat" % x.proc.pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / 100.0
