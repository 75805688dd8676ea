"""The wire format, byte for byte where the original is exact."""
import json
import re

from conftest import PASSWORD


def xml_call(server, method, *params):
    body = "<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>%s</params></methodCall>" % (
        method, "".join("<param><value>%s</value></param>" % p for p in params))
    r, data = server.post("/", body)
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/xml"
    return data.decode()


def test_xml_success_envelope_is_compact_and_untyped(server):
    out = xml_call(server, "session.login_with_password", "root", PASSWORD)
    m = re.fullmatch(r'<\?xml version="1.0"\?><methodResponse><params><param><value><struct>'
                     r'<member><name>Status</name><value>Success</value></member>'
                     r'<member><name>Value</name><value>(OpaqueRef:[0-9a-f-]{36})</value></member>'
                     r'</struct></value></param></params></methodResponse>', out)
    assert m, out


def test_xml_failure_envelope(server):
    out = xml_call(server, "session.login_with_password", "root", "wrong")
    assert out == ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
                   '<member><name>Status</name><value>Failure</value></member>'
                   '<member><name>ErrorDescription</name><value><array><data>'
                   '<value>SESSION_AUTHENTICATION_FAILED</value><value>root</value>'
                   '<value>Authentication failure</value></data></array></value></member>'
                   '</struct></value></param></params></methodResponse>'), out


def test_xml_int_is_bare_text_and_empty_array(server):
    s = server.json_login()
    host = server.json_call("host.get_all", s)[0]
    out = xml_call(server, "host.get_API_version_major", s, host)
    assert "<value>Success</value></member><member><name>Value</name><value>2</value>" in out
    vm = server.json_call("VM.get_all_records_where", s, 'field "is_control_domain" = "true"')
    dom0 = list(vm)[0]
    out = xml_call(server, "VM.get_tags", s, dom0)
    assert "<name>Value</name><value><array><data></data></array></value>" in out


def test_xml_void_is_empty_value(server):
    s = server.json_login()
    pool = server.json_call("pool.get_all", s)[0]
    out = xml_call(server, "pool.set_name_description", s, pool, "a")
    assert "<name>Value</name><value></value></member>" in out


def test_xml_double_and_bool_and_datetime(server):
    s = server.json_login()
    vm = list(server.json_call("VM.get_all_records_where", s, 'field "is_control_domain" = "true"'))[0]
    out = xml_call(server, "VM.get_HVM_shadow_multiplier", s, vm)
    assert "<value><double>1</double></value>" in out
    out = xml_call(server, "VM.get_is_control_domain", s, vm)
    assert "<value><boolean>1</boolean></value>" in out
    metrics = server.json_call("VM.get_metrics", s, vm)
    out = xml_call(server, "VM_metrics.get_last_updated", s, metrics)
    assert re.search(r"<value><dateTime.iso8601>\d{8}T\d\d:\d\d:\d\dZ</dateTime.iso8601></value>", out), out


def test_list_methods_is_unwrapped_in_xml(server):
    out = xml_call(server, "system.listMethods")
    assert out.startswith('<?xml version="1.0"?><methodResponse><params><param><value><array><data>')
    assert "<value>VM.get_all_records</value>" in out
    assert "Status" not in out


def test_list_methods_in_json(server):
    rep = server.jsonrpc("system.listMethods", [])
    assert "VM.get_all_records_where" in rep["result"]
    assert "session.login_with_password" in rep["result"]


def test_json_v2_success_and_failure_shapes(server):
    rep = server.jsonrpc("session.login_with_password", ["root", PASSWORD], id="abc")
    assert list(rep) == ["jsonrpc", "result", "id"] and rep["id"] == "abc"
    rep = server.jsonrpc("session.login_with_password", ["root", "bad"], id=7)
    assert rep == {"jsonrpc": "2.0", "error": {"code": 1, "message": "SESSION_AUTHENTICATION_FAILED",
                                               "data": ["root", "Authentication failure"]}, "id": 7}


def test_json_v1_shapes(server):
    rep = server.jsonrpc("session.login_with_password", ["root", PASSWORD], version=None, id=3)
    assert rep["error"] is None and rep["id"] == 3 and rep["result"].startswith("OpaqueRef:")
    rep = server.jsonrpc("session.login_with_password", ["root", "x"], version=None, id=4)
    assert rep["result"] is None and rep["error"][0] == "SESSION_AUTHENTICATION_FAILED"


def test_json_types(server):
    s = server.json_login()
    host = server.json_call("host.get_all", s)[0]
    rec = server.json_call("host.get_record", s, host)
    assert rec["API_version_major"] == 2 and isinstance(rec["API_version_major"], int)
    assert isinstance(rec["enabled"], bool)
    m = server.json_call("host.get_metrics", s, host)
    mrec = server.json_call("host_metrics.get_record", s, m)
    assert isinstance(mrec["memory_total"], int) and mrec["memory_total"] > 0
    assert "memory_free" in mrec  # removed in the datamodel, still sent
    assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", mrec["last_updated"])
    pool = server.json_call("pool.get_all", s)[0]
    assert server.json_call("pool.set_name_description", s, pool, "x") == ""


def test_rpc2_and_other_xml_paths(server):
    for path in ("/RPC2", "/", "/anything"):
        body = ("<?xml version='1.0'?><methodCall><methodName>session.login_with_password</methodName>"
                "<params><param><value><string>root</string></value></param>"
                "<param><value><string>%s</string></value></param></params></methodCall>" % PASSWORD)
        r, data = server.post(path, body)
        assert r.status == 200 and b"<value>Success</value>" in data


def test_lenient_input_python_pretty_xml_and_int_as_string(server):
    s = server.json_login()
    vm = server.json_call("VM.create", s, {"name_label": "lenient", "memory_static_max": "1073741824",
                                           "memory_dynamic_max": 1073741824, "memory_dynamic_min": "536870912",
                                           "memory_static_min": 268435456, "VCPUs_max": "1",
                                           "VCPUs_at_startup": 1, "VCPUs_params": {}, "actions_after_shutdown": "DESTROY",
                                           "actions_after_reboot": "restart", "actions_after_crash": "Restart",
                                           "user_version": 1, "is_a_template": False,
                                           "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
                                           "PV_bootloader_args": "", "PV_legacy_args": "",
                                           "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
                                           "PCI_bus": "", "other_config": {}, "recommendations": "",
                                           "name_description": "", "affinity": "OpaqueRef:NULL"})
    assert server.json_call("VM.get_memory_static_max", s, vm) == 1073741824
    assert server.json_call("VM.get_actions_after_shutdown", s, vm) == "destroy"
    body = """<?xml version='1.0'?>
<methodCall>
<methodName>VM.set_user_version</methodName>
<params>
<param>
<value><string>%s</string></value>
</param>
<param>
<value><string>%s</string></value>
</param>
<param>
<value><string>5</string></value>
</param>
</params>
</methodCall>
""" % (s, vm)
    r, data = server.post("/", body)
    assert b"<value>Success</value>" in data, data
    assert server.json_call("VM.get_user_version", s, vm) == 5


def test_escaping(server):
    s = server.json_login()
    pool = server.json_call("pool.get_all", s)[0]
    server.json_call("pool.set_name_description", s, pool, 'a<b>&"c\u00e9')
    out = xml_call(server, "pool.get_name_description", s, pool)
    assert '<value>a&lt;b&gt;&amp;&quot;c\u00e9</value>' in out
    assert server.json_call("pool.get_name_description", s, pool) == 'a<b>&"c\u00e9'


def test_cors_and_cache_headers(server):
    r, _ = server.post("/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "system.listMethods",
                                                "params": [], "id": 1}), "application/json")
    assert r.getheader("Access-Control-Allow-Origin") == "*"
    assert "no-cache" in r.getheader("Cache-Control")


def test_underscore_alias(server):
    s = server.json_login()
    assert server.json_call("pool_get_all", s) == server.json_call("pool.get_all", s)
