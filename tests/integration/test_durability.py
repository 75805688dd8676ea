"""Acknowledged writes survive kill -9; the generation survives restarts; an
older database file is upgraded."""
import sqlite3
import threading

from conftest import Xapi
from conftest import MIN_VM


def test_kill9_loses_no_acknowledged_write(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path))
    s = x.json_login()
    pool = x.json_call("pool.get_all", s)[0]
    acked = []
    stop = threading.Event()

    def writer(n):
        i = 0
        while not stop.is_set():
            label = "w%d-%d" % (n, i)
            try:
                ref = x.json_call("VM.create", s, dict(MIN_VM, name_label=label))
            except Exception:
                return
            acked.append((ref, label))
            i += 1

    ts = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    import time
    time.sleep(1.5)
    x.json_call("pool.set_name_label", s, pool, "before-kill")
    time.sleep(0.5)
    x.kill9()
    stop.set()
    for t in ts:
        t.join()
    assert len(acked) > 20
    x.start()
    s = x.json_login()
    labels = {r["name_label"]: ref for ref, r in x.json_call("VM.get_all_records", s).items()}
    for ref, label in acked:
        assert labels.get(label) == ref, label
    assert x.json_call("pool.get_name_label", s, pool) == "before-kill"
    x.stop()


def test_generation_and_stamps_persist(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path))
    s = x.json_login()
    x.json_call("VM.create", s, dict(MIN_VM, name_label="g"))
    x.stop()
    db = sqlite3.connect(str(tmp_path / "xapi.db"))
    gen1 = int(db.execute("select value from _meta where key='generation'").fetchone()[0])
    maxmod = db.execute('select max(_modified) from "VM"').fetchone()[0]
    assert gen1 >= maxmod > 0
    db.close()
    x.start()
    s = x.json_login()
    x.json_call("VM.create", s, dict(MIN_VM, name_label="g2"))
    x.stop()
    db = sqlite3.connect(str(tmp_path / "xapi.db"))
    gen2 = int(db.execute("select value from _meta where key='generation'").fetchone()[0])
    row = db.execute('select _created from "VM" where name__label = ?', ("g2",)).fetchone()
    assert gen2 > gen1 and row[0] > gen1
    db.close()


def test_database_is_readable_and_sessions_not_persisted(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path))
    s = x.json_login()
    x.stop()
    db = sqlite3.connect(str(tmp_path / "xapi.db"))
    tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert "VM" in tables and "host" in tables and "session" not in tables and "task" not in tables
    names = [r[0] for r in db.execute('select name__label from "VM"')]
    assert any(n.startswith("Control domain on host") for n in names)
    db.close()
    x.start()
    from conftest import JsonError
    import pytest
    with pytest.raises(JsonError) as e:
        x.json_call("pool.get_all", s)
    assert e.value.details[0] == "SESSION_INVALID"
    x.stop()


def test_older_file_is_upgraded(xapi_bin, tmp_path):
    x = Xapi(str(tmp_path))
    s = x.json_login()
    v = x.json_call("VM.create", s, dict(MIN_VM, name_label="old"))
    x.stop()
    db = sqlite3.connect(str(tmp_path / "xapi.db"))
    db.execute('alter table "VM" drop column "tags"')
    db.execute("update _meta set value='5.700' where key='schema_version'")
    db.commit()
    db.close()
    x.start()
    s = x.json_login()
    assert x.json_call("VM.get_tags", s, v) == []
    assert x.json_call("VM.get_name_label", s, v) == "old"
    x.json_call("VM.add_tags", s, v, "kept")
    x.stop()
    x.start()
    s = x.json_login()
    assert x.json_call("VM.get_tags", s, v) == ["kept"]
    x.stop()
