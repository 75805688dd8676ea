"""Bad input gets a XenAPI error or an HTTP 4xx, and the daemon keeps serving."""
import json
import socket
import threading
import time

import pytest

from conftest import PASSWORD


def raw(server, data, read=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            if len(body) >= int(line.split(b":")[1]):
                                s.close()
                                return out
        except socket.timeout:
            pass
    s.close()
    return out


def status(resp):
    return int(resp.split(b" ", 2)[1]) if resp else None


def alive(server):
    assert server.json_login().startswith("OpaqueRef:")


BAD_BODIES = [
    b"<methodCall><methodName>x</methodName><params><param><value>",
    b"<?xml version='1.0'?><notACall/>",
    b"\x00\x01\x02 garbage",
    b"<methodCall><params></params></methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    b"<methodCall><methodName>&lol2;</methodName></methodCall>",
    b"<methodCall>" + b"<a>" * 5000 + b"</methodCall>",
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_malformed_xml(server, body):
    r, data = server.post("/", body)
    assert 400 <= r.status < 500
    alive(server)


BAD_JSON = [b"{", b"[]", b'{"method":"session.login_with_password"}', b'{"id":1}',
            b'{"jsonrpc":"3.0","method":"x","params":[],"id":1}', b'{"method":1,"params":[],"id":1}',
            b'{"method":"x","params":{},"id":1}', b"\xff\xfe", b'{"method":"x","params":[' + b"[" * 5000 + b"]}"]


@pytest.mark.parametrize("body", BAD_JSON)
def test_malformed_json(server, body):
    r, data = server.post("/jsonrpc", body, "application/json")
    assert 400 <= r.status < 500, (r.status, data)
    alive(server)


def test_invalid_utf8_param(server):
    body = b"<methodCall><methodName>session.login_with_password</methodName><params>" \
           b"<param><value>r\xc3oot</value></param><param><value>x</value></param></params></methodCall>"
    r, data = server.post("/", body)
    assert (r.status == 200 and b"INVALID_VALUE" in data) or 400 <= r.status < 500
    alive(server)


def test_huge_body(server):
    resp = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000\r\n\r\n<methodCall>")
    assert status(resp) == 413
    alive(server)


def test_huge_head(server):
    resp = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    assert status(resp) in (431, 400, 413)
    alive(server)


def test_no_content_length(server):
    resp = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(resp) in (411, 400)
    alive(server)


def test_garbage_request_line(server):
    resp = raw(server, b"HELLO\r\n\r\n")
    assert status(resp) == 400
    alive(server)


def test_truncated_body_then_vanish(server):
    s = socket.create_connection(("127.0.0.1", server.http_port))
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n<methodCall>")
    s.close()
    alive(server)


def test_slow_clients_do_not_block_others(server):
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", server.http_port))
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<me")
        socks.append(s)
    t0 = time.time()
    alive(server)
    assert time.time() - t0 < 2
    for s in socks:
        s.close()


def test_many_concurrent_keepalive_clients(server):
    errors = []

    def worker():
        import http.client
        try:
            c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
            for _ in range(20):
                c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "session.login_with_password",
                                                          "params": ["root", PASSWORD], "id": 1}),
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                assert json.loads(r.read())["result"].startswith("OpaqueRef:")
            c.close()
        except Exception as e:  # noqa
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def test_wrong_param_types_everywhere(server):
    s = server.json_login()
    for params in ([1, 2], [None], [[]], [{}], [s, {"a": [1]}], [s, True, 1.5]):
        rep = server.jsonrpc("VM.get_record", params)
        assert "error" in rep
    alive(server)
