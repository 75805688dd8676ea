"""The message class (alerts), as the original serves it."""
import subprocess
import tempfile
import time

import pytest

from conftest import JsonError, Xapi


def err(call):
    with pytest.raises(JsonError) as e:
        call()
    return e.value.details


@pytest.fixture(scope="module")
def host_uuid(server, jsess):
    return server.json_call("host.get_uuid", jsess, server.json_call("host.get_all", jsess)[0])


def test_create_and_read(server, jsess, host_uuid):
    t0 = time.time()
    a = server.json_call("message.create", jsess, "ALPHA", 5, "Host", host_uuid, "first")
    b = server.json_call("message.create", jsess, "BETA", 1, "host", host_uuid, "second")
    assert a.startswith("OpaqueRef:") and a != b
    rec = server.json_call("message.get_record", jsess, b)
    assert list(rec) == ["uuid", "name", "priority", "cls", "obj_uuid", "timestamp", "body"]
    assert rec["name"] == "BETA" and rec["priority"] == 1 and rec["cls"] == "Host"
    assert rec["obj_uuid"] == host_uuid and rec["body"] == "second"
    assert server.json_call("message.get_by_uuid", jsess, rec["uuid"]) == b
    allr = server.json_call("message.get_all_records", jsess)
    assert list(allr)[:2] == [b, a]        # newest first, as the original
    assert allr[b] == rec
    assert set(server.json_call("message.get_all", jsess)) >= {a, b}
    since = time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(t0 - 5))
    assert {a, b} <= set(server.json_call("message.get_since", jsess, since))
    assert server.json_call("message.get_since", jsess, "20991231T00:00:00Z") == {}
    got = server.json_call("message.get", jsess, "Host", host_uuid, since)
    assert {a, b} <= set(got)
    assert server.json_call("message.get_all_records_where", jsess, 'field "name" = "ALPHA"') == \
        {a: allr[a]}


def test_errors(server, jsess, host_uuid):
    assert err(lambda: server.json_call("message.create", jsess, "X", 1, "VM", host_uuid, "")) == \
        ["UUID_INVALID", "VM", host_uuid]
    assert err(lambda: server.json_call("message.create", jsess, "X", 1, "Nope", host_uuid, ""))[0] == \
        "INVALID_VALUE"
    assert err(lambda: server.json_call("message.get", jsess, "SR", "no-such", "20200101T00:00:00Z")) == \
        ["UUID_INVALID"]
    assert err(lambda: server.json_call("message.get_record", jsess, "OpaqueRef:x")) == \
        ["HANDLE_INVALID", "message", "OpaqueRef:x"]
    assert err(lambda: server.json_call("message.get_by_uuid", jsess, "nope")) == \
        ["UUID_INVALID", "message", "nope"]
    assert err(lambda: server.json_call("message.destroy", jsess, "OpaqueRef:x")) == \
        ["HANDLE_INVALID", "message", "OpaqueRef:x"]


def test_other_classes(server, jsess):
    pool = server.json_call("pool.get_all", jsess)[0]
    pu = server.json_call("pool.get_uuid", jsess, pool)
    m = server.json_call("message.create", jsess, "POOL_MSG", 3, "Pool", pu, "")
    assert server.json_call("message.get_record", jsess, m)["cls"] == "Pool"
    vm = server.json_call("VM.get_all", jsess)[0]
    vu = server.json_call("VM.get_uuid", jsess, vm)
    m2 = server.json_call("message.create", jsess, "VM_STARTED", 5, "VM", vu, "")
    assert list(server.json_call("message.get", jsess, "VM", vu, "19700101T00:00:00Z")) == [m2]


def test_destroy_and_destroy_many(server, jsess, host_uuid):
    ms = [server.json_call("message.create", jsess, "D%d" % i, 3, "Host", host_uuid, "") for i in range(4)]
    server.json_call("message.destroy", jsess, ms[0])
    assert ms[0] not in server.json_call("message.get_all", jsess)
    # one after the other: those before the bad one are gone
    assert err(lambda: server.json_call("message.destroy_many", jsess, [ms[1], "OpaqueRef:bad", ms[2]])) == \
        ["HANDLE_INVALID", "message", "OpaqueRef:bad"]
    left = set(server.json_call("message.get_all", jsess))
    assert ms[1] not in left and ms[2] in left
    server.json_call("message.destroy_many", jsess, [ms[2], ms[3]])
    assert not ({ms[2], ms[3]} & set(server.json_call("message.get_all", jsess)))


def test_limit_and_durability(xapi_bin):
    d = tempfile.mkdtemp(prefix="cxapi-msg-")
    x = Xapi(d, ["--message-limit", "5"])
    try:
        s = x.json_login()
        hu = x.json_call("host.get_uuid", s, x.json_call("host.get_all", s)[0])
        refs = [x.json_call("message.create", s, "M%d" % i, 3, "Host", hu, "") for i in range(8)]
        assert list(x.json_call("message.get_all_records", s)) == refs[::-1][:5]
        x.stop()
        x.start()
        s = x.json_login()
        assert list(x.json_call("message.get_all_records", s)) == refs[::-1][:5]
    finally:
        x.stop()
        subprocess.run(["rm", "-rf", d])
