"""What a fresh host contains."""
from conftest import JsonError


def test_pool_and_host(server, jsess):
    pools = server.json_call("pool.get_all_records", jsess)
    assert len(pools) == 1
    pool = list(pools.values())[0]
    hosts = server.json_call("host.get_all_records", jsess)
    assert len(hosts) == 1
    href, host = list(hosts.items())[0]
    assert pool["master"] == href
    assert host["API_version_major"] == 2 and host["API_version_minor"] >= 21
    sv = host["software_version"]
    for k in ("product_version", "product_brand", "xapi", "db_schema", "xen"):
        assert k in sv
    assert int(host["cpu_info"]["cpu_count"]) == len(host["host_CPUs"]) > 0
    assert host["address"] and host["enabled"] is True
    m = server.json_call("host_metrics.get_record", jsess, host["metrics"])
    assert m["memory_total"] > m["memory_free"] > 0 and m["live"] is True


def test_control_domain(server, jsess):
    dom0 = server.json_call("VM.get_all_records_where", jsess, 'field "is_control_domain" = "true"')
    assert len(dom0) == 1
    ref, vm = list(dom0.items())[0]
    assert vm["power_state"] == "Running" and vm["domid"] == 0
    host = server.json_call("host.get_all", jsess)[0]
    assert vm["resident_on"] == host
    assert ref in server.json_call("host.get_resident_VMs", jsess, host)
    assert server.json_call("host.get_control_domain", jsess, host) == ref
    protos = sorted(server.json_call("console.get_protocol", jsess, c) for c in vm["consoles"])
    assert protos == ["rfb", "vt100"]


def test_storage_and_network(server, jsess):
    srs = server.json_call("SR.get_all_records", jsess)
    types = {r["type"] for r in srs.values()}
    assert "file" in types and "iso" in types
    for ref, sr in srs.items():
        if sr["type"] in ("file", "iso"):
            assert len(sr["PBDs"]) == 1
            pbd = server.json_call("PBD.get_record", jsess, sr["PBDs"][0])
            assert pbd["currently_attached"] is True and pbd["SR"] == ref
    sms = {r["type"] for r in server.json_call("SM.get_all_records", jsess).values()}
    assert {"file", "iso"} <= sms
    pool = server.json_call("pool.get_all", jsess)[0]
    dsr = server.json_call("pool.get_default_SR", jsess, pool)
    assert srs[dsr]["type"] == "file"
    nets = server.json_call("network.get_all_records", jsess)
    assert any(n["PIFs"] for n in nets.values())
    pifs = server.json_call("PIF.get_all_records", jsess)
    assert any(p["management"] for p in pifs.values())


def test_templates(server, jsess):
    t = server.json_call("VM.get_all_records_where", jsess, 'field "is_a_template" = "true"')
    names = {r["name_label"] for r in t.values()}
    assert len(t) >= 12
    assert "Other install media" in names
    assert any(n.startswith("Debian") for n in names)
    for r in t.values():
        assert r["power_state"] == "Halted"
        assert "install-methods" in r["other_config"] or r["name_label"] == "Other install media"
    assert any("disks" in r["other_config"] for r in t.values())


def test_default_template_cannot_be_destroyed(server, jsess):
    t = server.json_call("VM.get_all_records_where", jsess, 'field "is_a_template" = "true"')
    ref = list(t)[0]
    try:
        server.json_call("VM.destroy", jsess, ref)
        assert False, "destroyed a default template"
    except JsonError as e:
        assert e.details[0] == "VM_CANNOT_DELETE_DEFAULT_TEMPLATE"
