"""Disk transfer over HTTP: PUT /import_raw_vdi and GET /export_raw_vdi,
through real HTTP clients (Python's http.client, curl), with the contents
judged by qemu-img; Xen Orchestra's habits (the empty probe PUT, a 1 PiB
Content-Length followed by a close); credentials, tasks, errors."""
import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import PASSWORD

MIB = 1 << 20


def new_vdi(session, size, name="xfer"):
    sr = [r for r, v in session.xenapi.SR.get_all_records().items() if v["type"] == "file"][0]
    return session.xenapi.VDI.create({
        "SR": sr, "virtual_size": str(size), "type": "user", "sharable": False, "read_only": False,
        "other_config": {}, "name_label": name, "name_description": ""})


def put(server, path, body, headers=None, https=False):
    if https:
        c = http.client.HTTPSConnection("127.0.0.1", server.https_port, timeout=60,
                                        context=ssl._create_unverified_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    c.request("PUT", path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def get(server, path, https=False):
    if https:
        c = http.client.HTTPSConnection("127.0.0.1", server.https_port, timeout=60,
                                        context=ssl._create_unverified_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    c.request("GET", path)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def wait_task(session, task, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        st = session.xenapi.task.get_status(task)
        if st != "pending":
            return st
        time.sleep(0.05)
    raise AssertionError("task still pending")


def pattern(n, seed=b"cxapi"):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + str(i).encode()).digest() * 128
        i += 1
    return bytes(out[:n])


def test_raw_round_trip_sparse(server, session):
    sid = session._session
    vdi = new_vdi(session, 64 * MIB)
    data = pattern(5 * MIB) + b"\0" * (4 * MIB) + pattern(MIB + 1234, b"tail")
    r, _ = put(server, "/import_raw_vdi?session_id=%s&vdi=%s&format=raw" % (sid, vdi), data)
    assert r.status == 200
    assert r.getheader("task-id", "").startswith("OpaqueRef:")
    r, out = get(server, "/export_raw_vdi/?session_id=%s&vdi=%s&format=raw" % (sid, vdi))
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/octet-stream"
    assert 'filename="%s.raw"' % session.xenapi.VDI.get_uuid(vdi) in r.getheader("Content-Disposition")
    assert len(out) == 64 * MIB
    assert out[:len(data)] == data and out[len(data):] == b"\0" * (64 * MIB - len(data))
    # the all-zero block in the middle was not allocated: less than the data + metadata
    rec = session.xenapi.VDI.get_record(vdi)
    assert int(rec["physical_utilisation"]) < 10 * MIB


def test_vhd_export_read_by_qemu_and_vhd_import_of_qemu_image(server, session, tmp_path):
    sid = session._session
    vdi = new_vdi(session, 32 * MIB)
    data = pattern(3 * MIB + 512)
    r, _ = put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), data)
    assert r.status == 200
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s&format=vhd" % (sid, vdi))
    assert r.status == 200 and r.getheader("Content-Type") == "application/vhd"
    assert int(r.getheader("Content-Length")) == len(out)
    (tmp_path / "e.vhd").write_bytes(out)
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(tmp_path / "e.vhd"),
                    str(tmp_path / "e.raw")], check=True)
    raw = (tmp_path / "e.raw").read_bytes()
    assert raw[:len(data)] == data and raw[len(data):].count(0) == len(raw) - len(data)
    # a VHD made by qemu-img, imported with format=vhd, reads back identical
    src = pattern(7 * MIB, b"qemu")
    (tmp_path / "q.raw").write_bytes(src + b"\0" * (25 * MIB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
                    str(tmp_path / "q.raw"), str(tmp_path / "q.vhd")], check=True)
    vdi2 = new_vdi(session, 64 * MIB)
    r, _ = put(server, "/import_raw_vdi/?session_id=%s&vdi=%s&format=vhd" % (sid, vdi2),
               (tmp_path / "q.vhd").read_bytes())
    assert r.status == 200
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi2))
    assert out[:len(src)] == src and out[len(src):].count(0) == len(out) - len(src)


def test_task_of_the_client_gets_progress_and_result(server, session):
    sid = session._session
    vdi = new_vdi(session, 16 * MIB)
    task = session.xenapi.task.create("import", "")
    r, _ = put(server, "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s" % (sid, task, vdi),
               pattern(2 * MIB))
    assert r.status == 200 and r.getheader("task-id") == task
    assert wait_task(session, task) == "success"
    assert session.xenapi.task.get_result(task) == "<value>%s</value>" % vdi
    assert session.xenapi.task.get_progress(task) == 1.0
    session.xenapi.task.destroy(task)


def test_xo_probe_put_is_harmless(server, session):
    sid = session._session
    vdi = new_vdi(session, 8 * MIB)
    put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), pattern(MIB))
    before = session.xenapi.task.get_all()
    t0 = time.time()
    r, _ = put(server, "/import_raw_vdi/?session_id=%s&vdi=%s&format=raw" % (sid, vdi), b"")
    assert r.status == 200 and time.time() - t0 < 2
    assert session.xenapi.task.get_all() == before
    # for a stream of unknown length XO's probe carries the 1 PiB length too;
    # it waits for the answer and closes later: the VDI must stay free
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    s.sendall(("PUT /import_raw_vdi/?session_id=%s&vdi=%s&format=raw HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 1125899906842624\r\n\r\n" % (sid, vdi)).encode())
    assert s.recv(12) == b"HTTP/1.1 200"
    task = session.xenapi.task.create("after the probe", "")
    r, _ = put(server, "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s" % (sid, task, vdi), pattern(MIB, b"2"))
    assert r.status == 200 and wait_task(session, task) == "success"
    s.close()
    assert session.xenapi.task.get_all() == before + [task]
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi))
    assert out[:MIB] == pattern(MIB, b"2")


def raw_put(server, path, head_extra, body, close_after=True):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, head_extra)).encode())
    s.sendall(body)
    if close_after:
        s.shutdown(socket.SHUT_WR)
    resp = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    s.close()
    return resp


def test_unknown_length_stream_ends_at_close(server, session):
    """Xen Orchestra: Content-Length 1 PiB, the data, then the connection
    closes; the import ends cleanly with what arrived."""
    sid = session._session
    vdi = new_vdi(session, 16 * MIB)
    task = session.xenapi.task.create("xo", "")
    data = pattern(3 * MIB, b"xo")
    resp = raw_put(server, "/import_raw_vdi/?session_id=%s&task_id=%s&vdi=%s&format=raw" % (sid, task, vdi),
                   "Content-Length: 1125899906842624\r\n", data)
    assert resp.startswith(b"HTTP/1.1 200")
    assert wait_task(session, task) == "success"
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi))
    assert out[:len(data)] == data


def test_cut_short_upload_fails_the_task(server, session):
    sid = session._session
    vdi = new_vdi(session, 16 * MIB)
    task = session.xenapi.task.create("short", "")
    raw_put(server, "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s" % (sid, task, vdi),
            "Content-Length: %d\r\n" % (4 * MIB), pattern(MIB))
    assert wait_task(session, task) == "failure"
    assert session.xenapi.task.get_error_info(task)[0] == "VDI_IO_ERROR"


def test_data_larger_than_the_vdi(server, session):
    sid = session._session
    vdi = new_vdi(session, 2 * MIB)
    task = session.xenapi.task.create("big", "")
    put(server, "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s" % (sid, task, vdi), pattern(3 * MIB))
    assert wait_task(session, task) == "failure"
    assert session.xenapi.task.get_error_info(task)[0] == "VDI_IO_ERROR"


def test_import_into_an_sr_makes_a_vdi(server, session):
    sid = session._session
    sr = [r for r, v in session.xenapi.SR.get_all_records().items() if v["type"] == "file"][0]
    task = session.xenapi.task.create("sr import", "")
    data = pattern(MIB + 4096, b"sr")
    r, _ = put(server, "/import_raw_vdi?session_id=%s&task_id=%s&sr_id=%s&format=raw" % (sid, task, sr), data)
    assert r.status == 200
    assert wait_task(session, task) == "success"
    res = session.xenapi.task.get_result(task)
    vdi = res.replace("<value>", "").replace("</value>", "")
    rec = session.xenapi.VDI.get_record(vdi)
    assert rec["name_label"] == "Imported VDI" and int(rec["virtual_size"]) >= len(data)
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi))
    assert out[:len(data)] == data


def test_snapshot_keeps_old_contents(server, session):
    sid = session._session
    vdi = new_vdi(session, 8 * MIB)
    old = pattern(4 * MIB, b"old")
    put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), old)
    snap = session.xenapi.VDI.snapshot(vdi, {})
    new = pattern(2 * MIB, b"new")
    put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), new)
    _, s_out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, snap))
    _, v_out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi))
    assert s_out[:len(old)] == old
    assert v_out[:len(new)] == new and v_out[len(new):len(old)] == old[len(new):]


def test_delta_export_against_a_base(server, session, tmp_path):
    """base= as backups use it: snapshot, write, snapshot again; the delta
    between the two snapshots is a differencing VHD holding the changed
    blocks, which libvhdi reads over the full export of the base."""
    pyvhdi = pytest.importorskip("pyvhdi")
    sid = session._session
    vdi = new_vdi(session, 16 * MIB)
    put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), pattern(8 * MIB, b"v1"))
    s1 = session.xenapi.VDI.snapshot(vdi, {})
    put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), pattern(2 * MIB, b"v2"))
    s2 = session.xenapi.VDI.snapshot(vdi, {})
    r, full = get(server, "/export_raw_vdi?session_id=%s&vdi=%s&format=vhd" % (sid, s1))
    r2, delta = get(server, "/export_raw_vdi?session_id=%s&vdi=%s&format=vhd&base=%s" % (sid, s2, s1))
    assert r.status == 200 and r2.status == 200
    assert len(delta) < len(full)
    (tmp_path / "base.vhd").write_bytes(full)
    (tmp_path / "delta.vhd").write_bytes(delta)
    base = pyvhdi.file()
    base.open(str(tmp_path / "base.vhd"))
    d = pyvhdi.file()
    d.open(str(tmp_path / "delta.vhd"))
    d.set_parent(base)
    got = d.read_buffer(8 * MIB)
    want = pattern(2 * MIB, b"v2") + pattern(8 * MIB, b"v1")[2 * MIB:]
    assert got == want


def test_credentials_and_bad_requests(server, session, tmp_path):
    sid = session._session
    vdi = new_vdi(session, 2 * MIB)
    r, _ = get(server, "/export_raw_vdi?vdi=%s" % vdi)
    assert r.status == 401 and "Basic" in r.getheader("WWW-Authenticate")
    r, _ = get(server, "/export_raw_vdi?session_id=OpaqueRef:nope&vdi=%s" % vdi)
    assert r.status == 403
    # HTTP Basic as root works
    out = subprocess.run(["curl", "-sS", "-u", "root:" + PASSWORD, "-o", str(tmp_path / "o"), "-w", "%{http_code}",
                          "%s/export_raw_vdi?vdi=%s" % (server.url, vdi)], capture_output=True, text=True).stdout
    assert out == "200" and (tmp_path / "o").stat().st_size == 2 * MIB
    out = subprocess.run(["curl", "-sS", "-u", "root:wrong", "-o", "/dev/null", "-w", "%{http_code}",
                          "%s/export_raw_vdi?vdi=%s" % (server.url, vdi)], capture_output=True, text=True).stdout
    assert out == "401"
    r, _ = get(server, "/export_raw_vdi?session_id=%s&vdi=OpaqueRef:missing" % sid)
    assert r.status == 400
    r, _ = get(server, "/export_raw_vdi?session_id=%s&vdi=%s&format=bogus" % (sid, vdi))
    assert r.status == 404
    r, _ = get(server, "/export_raw_vdi?session_id=%s&vdi=%s&format=qcow2" % (sid, vdi))
    assert r.status == 501
    # chunked uploads are refused, as the original ("we require a content-length")
    resp = raw_put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi),
                   "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")
    assert resp.split(b" ")[1] in (b"411", b"400")
    # the daemon still serves
    assert session.xenapi.VDI.get_uuid(vdi)


def test_tls_and_unix_socket(server, session):
    sid = session._session
    vdi = new_vdi(session, 8 * MIB)
    data = pattern(3 * MIB, b"tls")
    r, _ = put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), data, https=True)
    assert r.status == 200
    r, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), https=True)
    assert out[:len(data)] == data
    # the Unix socket is root without credentials
    out = subprocess.run(["curl", "-sS", "--unix-socket", server.sock, "http://localhost/export_raw_vdi?vdi=%s" % vdi],
                         capture_output=True).stdout
    assert out[:len(data)] == data and len(out) == 8 * MIB


def test_import_into_a_full_sr(server, session):
    """An import the SR's file system cannot hold fails its task with SR_FULL;
    what was written before stays readable, and the daemon goes on."""
    import tempfile
    d = tempfile.mkdtemp(prefix="cxapi-tiny-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", d], capture_output=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a tmpfs: " + r.stderr.decode())
    x = session.xenapi
    try:
        host = x.host.get_all()[0]
        sr = x.SR.create(host, {"location": os.path.join(d, "sr")}, "0", "tiny", "", "file", "user", False, {})
        vdi = x.VDI.create({"SR": sr, "virtual_size": str(64 * MIB), "type": "user", "sharable": False,
                            "read_only": False, "other_config": {}, "name_label": "full",
                            "name_description": ""})
        task = x.task.create("full", "")
        put(server, "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s" % (session._session, task, vdi),
            pattern(16 * MIB, b"full"))
        assert wait_task(session, task) == "failure"
        err = x.task.get_error_info(task)
        assert err[0] == "SR_FULL" and len(err) == 3, err
        _, out = get(server, "/export_raw_vdi?session_id=%s&vdi=%s" % (session._session, vdi))
        assert len(out) == 64 * MIB and out[:MIB] == pattern(16 * MIB, b"full")[:MIB]
        x.VDI.destroy(vdi)
        x.PBD.unplug(x.SR.get_PBDs(sr)[0])
        x.SR.destroy(sr)
    finally:
        subprocess.run(["umount", d])
        os.rmdir(d)


def test_cancel_an_import(server, session):
    sid = session._session
    x = session.xenapi
    vdi = new_vdi(session, 64 * MIB)
    task = x.task.create("cancel me", "")
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    s.sendall(("PUT /import_raw_vdi?session_id=%s&task_id=%s&vdi=%s HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: %d\r\n\r\n" % (sid, task, vdi, 64 * MIB)).encode())
    s.sendall(pattern(MIB))
    assert s.recv(12) == b"HTTP/1.1 200"
    x.task.cancel(task)
    end = time.time() + 10
    try:
        while time.time() < end and x.task.get_status(task) == "pending":
            s.sendall(b"\1" * 65536)
            time.sleep(0.05)
    except OSError:
        pass  # the daemon closed the connection
    s.close()
    assert wait_task(session, task) == "cancelled"
    # the VDI is usable again
    r, _ = put(server, "/import_raw_vdi?session_id=%s&vdi=%s" % (sid, vdi), pattern(MIB))
    assert r.status == 200
