"""Sessions, PAM, RBAC with a read-only subject, the Unix socket."""
import http.client
import json
import os
import shutil
import socket
import subprocess

import pytest

from conftest import PASSWORD, ROOT, JsonError, Xapi


def test_xenapi_module_login_and_os_xenapi_probe(session):
    # os-xenapi's login calls pool.get_all, pool.get_master, host.get_API_version_*
    assert session.xenapi.pool.get_all()
    assert session.API_version is not None


def test_login_two_to_four_params(server):
    for params in (["root", PASSWORD], ["root", PASSWORD, "1.1"], ["root", PASSWORD, "2.21", "pytest"],
                   ["root", PASSWORD, "2.21", "pytest", "ignored"]):
        assert server.json_call("session.login_with_password", *params).startswith("OpaqueRef:")
    with pytest.raises(JsonError) as e:
        server.json_call("session.login_with_password", "root")
    assert e.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"]


def test_wrong_password(server, XenAPI):
    s = XenAPI.Session(server.url)
    with pytest.raises(XenAPI.Failure) as e:
        s.login_with_password("root", "nope")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"


def test_session_record_and_logout(server):
    s = server.json_login()
    rec = server.json_call("session.get_record", s, s)
    assert rec["is_local_superuser"] is True and rec["auth_user_name"] == "root"
    host = server.json_call("host.get_all", s)[0]
    assert rec["this_host"] == host
    server.json_call("session.logout", s)
    with pytest.raises(JsonError) as e:
        server.json_call("pool.get_all", s)
    assert e.value.details == ["SESSION_INVALID", s]


def test_bogus_session(server):
    with pytest.raises(JsonError) as e:
        server.json_call("VM.get_all", "OpaqueRef:00000000-0000-0000-0000-000000000000")
    assert e.value.details[0] == "SESSION_INVALID"


def test_unix_socket_is_root_without_password(server):
    class UConn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(server.sock)
    c = UConn("localhost")
    c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "session.login_with_password",
                                              "params": ["root", "anything"], "id": 1}),
              {"Content-Type": "application/json"})
    rep = json.loads(c.getresponse().read())
    assert rep["result"].startswith("OpaqueRef:")


def test_https(server):
    import ssl
    ctx = ssl._create_unverified_context()
    c = http.client.HTTPSConnection("127.0.0.1", server.https_port, context=ctx, timeout=10)
    c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "session.login_with_password",
                                              "params": ["root", PASSWORD], "id": 1}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["result"].startswith("OpaqueRef:")


def add_external_user(state, user, pw):
    h = subprocess.run(["openssl", "passwd", "-6", pw], capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(state, "external-passwd"), "a") as f:
        f.write("%s:%s\n" % (user, h))


def test_rbac_read_only_subject(fresh_server):
    x = fresh_server
    add_external_user(x.state, "alice", "alice-pw")
    add_external_user(x.state, "bob", "bob-pw")
    s = x.json_login()
    pool = x.json_call("pool.get_all", s)[0]
    # no external auth yet: non-root users cannot log in
    with pytest.raises(JsonError) as e:
        x.json_call("session.login_with_password", "alice", "alice-pw")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    x.json_call("pool.enable_external_auth", s, pool, {}, "", "PAM")
    assert x.json_call("host.get_external_auth_type", s, x.json_call("host.get_all", s)[0]) == "PAM"
    # a user who is not a subject is refused
    with pytest.raises(JsonError) as e:
        x.json_call("session.login_with_password", "alice", "alice-pw")
    assert e.value.details[0] == "SESSION_AUTHORIZATION_FAILED"
    ro = [r for r, rec in x.json_call("role.get_all_records", s).items() if rec["name_label"] == "read-only"][0]
    subj = x.json_call("subject.create", s, {"subject_identifier": "alice", "other_config": {"subject-name": "alice"}})
    x.json_call("subject.remove_from_roles", s, subj, x.json_call("subject.get_roles", s, subj)[0]) \
        if x.json_call("subject.get_roles", s, subj) else None
    x.json_call("subject.add_to_roles", s, subj, ro)
    a = x.json_call("session.login_with_password", "alice", "alice-pw")
    rec = x.json_call("session.get_record", a, a)
    assert rec["is_local_superuser"] is False and rec["auth_user_name"] == "alice"
    assert rec["subject"] == subj
    # reads work
    assert x.json_call("VM.get_all", a)
    # writes are denied before anything happens
    with pytest.raises(JsonError) as e:
        x.json_call("pool.set_name_label", a, pool, "hacked")
    assert e.value.details[0] == "RBAC_PERMISSION_DENIED"
    assert e.value.details[1] == "pool.set_name_label"
    assert "pool-admin" in e.value.details[2]
    assert x.json_call("pool.get_name_label", s, pool) != "hacked"
    # wrong password for an external user
    with pytest.raises(JsonError) as e:
        x.json_call("session.login_with_password", "alice", "wrong")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    # bob with pool-admin can write
    pa = [r for r, rec in x.json_call("role.get_all_records", s).items() if rec["name_label"] == "pool-admin"][0]
    sb = x.json_call("subject.create", s, {"subject_identifier": "bob", "other_config": {}, "roles": [pa]})
    b = x.json_call("session.login_with_password", "bob", "bob-pw")
    x.json_call("pool.set_name_description", b, pool, "by bob")
    assert x.json_call("pool.get_name_description", s, pool) == "by bob"
    # map keys with their own permission: a vm-operator may file a VM in a folder
    add_external_user(x.state, "carol", "carol-pw")
    op = [r for r, rec in x.json_call("role.get_all_records", s).items() if rec["name_label"] == "vm-operator"][0]
    sc = x.json_call("subject.create", s, {"subject_identifier": "carol", "other_config": {}})
    x.json_call("subject.remove_from_roles", s, sc, x.json_call("subject.get_roles", s, sc)[0])
    x.json_call("subject.add_to_roles", s, sc, op)
    cs = x.json_call("session.login_with_password", "carol", "carol-pw")
    vm = x.json_call("VM.get_all", s)[0]
    x.json_call("VM.add_to_other_config", cs, vm, "folder", "/mine")
    x.json_call("VM.add_to_other_config", cs, vm, "XenCenter.CustomFields.colour", "red")
    with pytest.raises(JsonError) as e:
        x.json_call("VM.add_to_other_config", cs, vm, "other", "x")
    assert e.value.details[:2] == ["RBAC_PERMISSION_DENIED", "vm.add_to_other_config"]
    with pytest.raises(JsonError) as e:
        x.json_call("VM.add_to_other_config", cs, vm, "pci", "x")
    assert e.value.details[:2] == ["RBAC_PERMISSION_DENIED", "vm.add_to_other_config/key:pci"]
    assert e.value.details[2].endswith("(Roles with this permission: pool-admin)")
    oc = x.json_call("VM.get_other_config", s, vm)
    assert oc["folder"] == "/mine" and "other" not in oc and "pci" not in oc
    # logging out every session of a subject
    x.json_call("session.logout_subject_identifier", s, "alice")
    with pytest.raises(JsonError):
        x.json_call("VM.get_all", a)
    x.json_call("subject.destroy", s, sb)


def test_session_expiry(xapi_bin, tmp_path):
    import time
    x = Xapi(str(tmp_path), ["--session-timeout", "1"])
    try:
        s = x.json_login()
        x.json_call("pool.get_all", s)
        time.sleep(2.2)
        with pytest.raises(JsonError) as e:
            x.json_call("pool.get_all", s)
        assert e.value.details[0] == "SESSION_INVALID"
    finally:
        x.stop()


def test_roles(server):
    s = server.json_login()
    roles = server.json_call("role.get_all_records_where", s, "true")
    names = {r["name_label"] for r in roles.values()}
    for n in ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only"):
        assert n in names
    pa = server.json_call("role.get_by_uuid", s, "0165f154-ba3e-034e-6b27-5d271af109ba")
    assert server.json_call("role.get_name_label", s, pa) == "pool-admin"
    perms = server.json_call("role.get_permissions_name_label", s, pa)
    assert "vm.start" in perms and "pool.set_name_label" in perms
    ro = [r for r, rec in roles.items() if rec["name_label"] == "read-only"][0]
    ro_perms = server.json_call("role.get_permissions_name_label", s, ro)
    assert "vm.get_record" in ro_perms and "vm.start" not in ro_perms


def test_change_password(fresh_server, XenAPI):
    x = fresh_server
    s = x.json_login()
    with pytest.raises(JsonError) as e:
        x.json_call("session.change_password", s, "wrong-old", "new-pw-1")
    assert e.value.details[0] == "CHANGE_PASSWORD_REJECTED"
    x.json_call("session.change_password", s, PASSWORD, "new-pw-1")
    with pytest.raises(JsonError) as e:
        x.json_login("root", PASSWORD)
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    # the Python module with the new password; the change survives a restart
    xs = XenAPI.Session(x.url)
    xs.login_with_password("root", "new-pw-1")
    xs.xenapi.session.logout()
    x.stop()
    x.start()
    assert x.json_login("root", "new-pw-1").startswith("OpaqueRef:")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root and useradd")
def test_system_pam_service(xapi_bin, tmp_path):
    """The PAM service shipped for installed hosts (etc/pam.d/cxapi) checks
    system accounts through Debian's common-auth stack."""
    user, pw = "cxapi-pamtest", "Sys-Pw-42"
    subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", user], check=True)
    try:
        subprocess.run(["chpasswd"], input="%s:%s\n" % (user, pw), text=True, check=True)
        conf = tmp_path / "pam.d"
        conf.mkdir()
        for f in ("cxapi", "cxapi-external"):
            shutil.copy(os.path.join(ROOT, "etc", "pam.d", f), conf / f)
        for f in ("common-auth", "common-account"):
            shutil.copy(os.path.join("/etc/pam.d", f), conf / f)
        state = tmp_path / "state"
        state.mkdir()
        x = Xapi(str(state), ["--pam-confdir", str(conf)])
        try:
            s = x.json_login(user, pw)
            assert x.json_call("session.get_is_local_superuser", s, s) is True
            with pytest.raises(JsonError) as e:
                x.json_login(user, "wrong")
            assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
            assert not os.path.exists(state / "passwd")  # no embedded stack
        finally:
            x.stop()
    finally:
        subprocess.run(["userdel", user], capture_output=True)
