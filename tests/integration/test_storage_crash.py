"""Crash safety of storage under kill -9 of xapi, through the Python XenAPI
client: kills in the middle of VDI.snapshot, of the background coalesce (the
garbage collection that merges a base into its only child after a snapshot is
destroyed) and of PUT /import_raw_vdi.  After each kill the daemon is started
again on the same state directory and the test checks that

- no operation stays stuck: no SR or VDI keeps a current_operations entry,
  no task stays pending, and a new operation works;
- the garbage collection finishes (no base row or file with fewer than two
  children is left, the chains shrink as expected) within a bounded wait;
- no crash leftover (.tmp.*, .snap.*, .coalesced.*) remains, and every image
  of the SR passes `vhd-check -p` (env VHD_CHECK_BIN);
- the rows and the files agree, before and after SR.scan (no row without a
  file, no file without a row, sm_config:vhd-parent = the file's parent);
- every VDI whose data was acknowledged (an import whose task succeeded, a
  snapshot of acknowledged data) reads back exactly (GET /export_raw_vdi), and
  a VDI an import was cut in reads, sector by sector, as before or as sent.

To kill at chosen points, the daemon runs with --debug-sm-step-delay-ms: the
file SR logs "sm step: <where>" after each step of its multi-step changes
(src/sm/sm_file.c, STEP) and pauses there; the test waits for the line in
the daemon's log and kills it during the pause, i.e. right after that step.
Crash points that have no step (inside the merge's copy, inside an import)
are hit by timing."""
import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import PASSWORD, XAPI_BIN, Xapi

MiB = 1 << 20
SECTOR = 512
STEP_MS = int(os.environ.get("CRASH_STEP_MS", "60"))
VHD_CHECK = os.environ.get("VHD_CHECK_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(XAPI_BIN))), "src", "vhd", "vhd-check")
LEFTOVER = (".tmp.", ".snap.", ".coalesced.")


def pattern(n, seed):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + str(i).encode()).digest() * 128
        i += 1
    return bytes(out[:n])


def overlay(base, data):
    return data + base[len(data):]


def wait_for(pred, timeout=20, step=0.03, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("%s not met in %ss" % (what, timeout))
        time.sleep(step)


def sectors_from(got, old, new):
    """Offsets of the sectors of got that are neither old's nor new's."""
    assert len(got) == len(old) == len(new)
    bad = []
    C = 64 * 1024
    for o in range(0, len(got), C):
        g = got[o:o + C]
        if g == old[o:o + C] or g == new[o:o + C]:
            continue
        for s in range(o, min(o + C, len(got)), SECTOR):
            g = got[s:s + SECTOR]
            if g != old[s:s + SECTOR] and g != new[s:s + SECTOR]:
                bad.append(s)
    return bad


class Rig:
    """One daemon (step delay on) with a file SR of its own, killed and
    started again on the same state directory."""

    def __init__(self, XenAPI):
        self.XenAPI = XenAPI
        self.state = tempfile.mkdtemp(prefix="cxapi-crash-")
        self.srdir = os.path.join(self.state, "crash-sr")
        self.logpath = os.path.join(self.state, "xapi.log")
        self.step_ms = 0
        self.xapi = Xapi(self.state, ["--debug-sm-step-delay-ms", "0"])
        self.login()
        host = self.x.host.get_all()[0]
        self.sr = self.x.SR.create(host, {"location": self.srdir}, "0", "crash SR", "", "file",
                                   "user", False, {})
        self.expect = {}     # VDI ref -> the bytes it must read as
        self.landed = []     # (wanted point, last step logged before the kill)

    def login(self):
        s = self.XenAPI.Session(self.xapi.url)
        s.login_with_password("root", PASSWORD)
        self.session, self.x, self.sid = s, s.xenapi, s._session

    def close(self):
        """Stops the daemon; fails if a sanitizer build reported an error in
        any of its runs (the state directory goes either way)."""
        self.xapi.stop()
        try:
            text = self.log_since(0)
            for m in ("ERROR: AddressSanitizer", "runtime error:"):
                assert m not in text, text[text.index(m) - 200:][:3000]
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    # -- the log --
    def log_pos(self):
        return os.path.getsize(self.logpath)

    def log_since(self, pos):
        with open(self.logpath, "rb") as f:
            f.seek(pos)
            return f.read().decode(errors="replace")

    def wait_log(self, regex, pos, n=1, timeout=30):
        rx = re.compile(regex)
        deadline = time.time() + timeout
        while True:
            text = self.log_since(pos)
            if len(rx.findall(text)) >= n:
                return
            p = self.xapi.proc
            if (p is not None and p.poll() is not None) or time.time() > deadline:
                raise AssertionError("no %r (x%d) in the log:\n%s" % (regex, n, text[-3000:]))
            time.sleep(0.003)

    def set_step_ms(self, ms):
        self.step_ms = ms
        self.xapi.extra = ["--debug-sm-step-delay-ms", str(ms)]

    def step_delay(self, ms):
        """Restart (gracefully) with another step delay: setups run without
        pauses, the operation to be killed with them."""
        if ms != self.step_ms:
            self.xapi.stop()
            self.set_step_ms(ms)
            self.xapi.start()
            self.login()

    def kill_restart(self, point, pos, step_ms=0):
        """kill -9, note the last step logged, start again (by default
        without pauses: what the restart finishes runs at full speed)."""
        self.xapi.kill9()
        steps = re.findall(r"sm step: ([^(]*?) \(pausing", self.log_since(pos))
        self.landed.append((point, steps[-1] if steps else None))
        self.set_step_ms(step_ms)
        self.xapi.start()
        self.login()

    def restart_killing_at(self, regex):
        """Start again (with pauses), and kill -9 once regex shows in the
        new log (e.g. a step of the recovery that attach runs before the
        daemon serves); then start for good, without pauses."""
        self.set_step_ms(STEP_MS)
        pos = self.log_pos()
        failed = []

        def run():
            try:
                self.xapi.start()
            except RuntimeError as e:  # killed before it served
                failed.append(e)
        th = threading.Thread(target=run)
        th.start()
        try:
            self.wait_log(regex, pos)
        finally:
            while self.xapi.proc is None:
                time.sleep(0.001)
            self.xapi.proc.kill()
            self.xapi.proc.wait()
            th.join()
            self.xapi.log.close()
            self.xapi.proc = None
        steps = re.findall(r"sm step: ([^(]*?) \(pausing", self.log_since(pos))
        self.landed.append(("again, at " + regex, steps[-1] if steps else None))
        self.set_step_ms(0)
        self.xapi.start()
        self.login()

    # -- VDIs and data --
    def new_vdi(self, size, name="crash"):
        return self.x.VDI.create({"SR": self.sr, "virtual_size": str(size), "type": "user",
                                  "sharable": False, "read_only": False, "other_config": {},
                                  "name_label": name, "name_description": ""})

    def sr_vdis(self):
        return {r: v for r, v in self.x.VDI.get_all_records().items() if v["SR"] == self.sr}

    def put(self, vdi, data):
        """An import that must succeed: the data is acknowledged once the
        task says success."""
        task = self.x.task.create("crash import", "")
        c = http.client.HTTPConnection("127.0.0.1", self.xapi.http_port, timeout=60)
        c.request("PUT", "/import_raw_vdi?session_id=%s&task_id=%s&vdi=%s&format=raw"
                  % (self.sid, task, vdi), body=data)
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200
        st = self.wait_task(task)
        assert st == "success", self.x.task.get_error_info(task)
        return task

    def wait_task(self, task, timeout=30):
        return wait_for(lambda: (lambda s: s if s != "pending" else None)(
            self.x.task.get_status(task)), timeout, what="task end")

    def stream_put(self, query, length, data):
        """Starts an import of length bytes and sends data (a prefix of them);
        the socket stays open (the caller kills the daemon)."""
        s = socket.create_connection(("127.0.0.1", self.xapi.http_port), timeout=30)
        s.sendall(("PUT /import_raw_vdi?session_id=%s&%s HTTP/1.1\r\nHost: x\r\n"
                   "Content-Length: %d\r\n\r\n" % (self.sid, query, length)).encode())
        if data:
            s.sendall(data)
        return s

    def export(self, vdi):
        c = http.client.HTTPConnection("127.0.0.1", self.xapi.http_port, timeout=60)
        c.request("GET", "/export_raw_vdi?session_id=%s&vdi=%s&format=raw" % (self.sid, vdi))
        r = c.getresponse()
        out = r.read()
        c.close()
        assert r.status == 200, (vdi, r.status, out[:200])
        return out

    # -- the checks after a restart --
    def images(self):
        """{location: parent location or ""} of every image file, each
        checked (with its chain) by vhd-check; no crash leftovers."""
        names = sorted(os.listdir(self.srdir))
        left = [n for n in names if n.startswith(LEFTOVER)]
        assert not left, "crash leftovers after restart: %s" % left
        files = [n for n in names if n.endswith(".vhd")]
        if not files:
            return {}
        p = subprocess.run([VHD_CHECK, "-p"] + files, cwd=self.srdir, capture_output=True,
                           text=True)
        assert p.returncode == 0, "vhd-check -p failed:\n" + p.stdout + p.stderr
        parents = {}
        self.vsize = {}
        for line in p.stdout.splitlines():
            m = re.match(r"^([^./][^:]*)\.vhd: ok \(\w+, (\d+) bytes, .*, "
                         r"(no parent|parent \./(.*)\.vhd)\)$", line)
            if m and m.group(1) + ".vhd" in files:
                parents[m.group(1)] = m.group(4) or ""
                self.vsize[m.group(1)] = int(m.group(2))
        assert sorted(parents) == sorted(f[:-4] for f in files), p.stdout
        return parents

    def rows_match_files(self, sizes=False):
        """Rows and files agree: the same locations, parents, managed
        flags; with sizes (after a scan, which refreshes them) also
        virtual_size and physical_utilisation (the file's allocated bytes)."""
        files = self.images()
        rows = self.sr_vdis()
        by_loc = {v["location"]: v for v in rows.values()}
        assert len(by_loc) == len(rows), "two rows share a location"
        assert sorted(by_loc) == sorted(files), (
            "rows without a file: %s; files without a row: %s"
            % (sorted(set(by_loc) - set(files)), sorted(set(files) - set(by_loc))))
        for loc, rec in by_loc.items():
            assert rec["sm_config"].get("vhd-parent", "") == files[loc], (loc, rec["sm_config"])
            # hidden bases are the unmanaged rows: exactly the files that are parents
            is_parent = loc in files.values()
            assert rec["managed"] is (not is_parent), (loc, rec["managed"])
            if sizes:
                assert int(rec["virtual_size"]) == self.vsize[loc], (loc, rec["virtual_size"])
                st = os.stat(os.path.join(self.srdir, loc + ".vhd"))
                assert int(rec["physical_utilisation"]) == st.st_blocks * 512, (
                    loc, rec["physical_utilisation"], st.st_blocks * 512)
        return rows, files

    def collectable(self):
        """Bases the garbage collection still has to remove or merge (rows
        with fewer than two children), or an SR operation in progress."""
        if self.x.SR.get_current_operations(self.sr):
            return ["SR busy"]
        rows = self.sr_vdis()
        kids = {}
        for v in rows.values():
            p = v["sm_config"].get("vhd-parent")
            if p:
                kids[p] = kids.get(p, 0) + 1
        return [v["location"] for v in rows.values()
                if not v["managed"] and kids.get(v["location"], 0) < 2]

    def check(self):
        x = self.x
        # nothing stuck from before the kill: cleared at start
        for ref, v in x.VDI.get_all_records().items():
            assert v["current_operations"] == {}, (ref, v["current_operations"])
        # no task stays pending (an export's own task ends a moment after its
        # last byte: wait a little)
        def pending():
            return [r for r in x.task.get_all_records().values() if r["status"] == "pending"]
        try:
            wait_for(lambda: not pending(), 10)
        except AssertionError:
            raise AssertionError("tasks still pending after the restart: %s" % pending())
        # the garbage collection at start runs to its end (with its rescan)
        wait_for(lambda: not self.collectable(), 30, what="garbage collection done")
        rows, files = self.rows_match_files()
        # a file holding a chain of one child would be merged: none is left
        kids = {}
        for p in files.values():
            if p:
                kids[p] = kids.get(p, 0) + 1
        assert all(n >= 2 for n in kids.values()), files
        x.SR.scan(self.sr)
        rows, files = self.rows_match_files(sizes=True)
        assert x.SR.get_current_operations(self.sr) == {}
        for ref, v in rows.items():
            assert v["current_operations"] == {}, (ref, v)
            if v["managed"]:  # not held by an operation or an open image from before
                for op in ("snapshot", "destroy", "resize"):
                    assert op in v["allowed_operations"], (ref, v["allowed_operations"])
        for ref, want in self.expect.items():
            assert ref in rows, "acknowledged VDI %s lost" % ref
            got = self.export(ref)
            assert got == want, "VDI %s (%s) reads other data than acknowledged" % (
                ref, rows[ref]["location"])
        return rows


@pytest.fixture
def rig(xapi_bin, XenAPI):
    if not os.path.exists(VHD_CHECK):
        pytest.fail("vhd-check not built: " + VHD_CHECK)
    r = Rig(XenAPI)
    yield r
    print("kill points (wanted, last step logged):", r.landed)
    r.close()


SNAP_STEPS = ["snapshot: marker", "snapshot: renamed", "snapshot: leaf made",
              "snapshot: new VDI made", "snapshot: base hidden", "snapshot: done"]


def test_kill_during_snapshot(rig):
    """Kill after each step of the file SR's snapshot (and once after the
    call returned); v's data changes between the kills, so every snapshot
    that survives must hold the data v had when it was taken."""
    size = 4 * MiB
    v = rig.new_vdi(size, "snap-me")
    rig.put(v, pattern(3 * MiB, b"A"))
    rig.expect[v] = overlay(b"\0" * size, pattern(3 * MiB, b"A"))
    rig.step_delay(STEP_MS)
    # after each step; then by timing, just after the last step's pause,
    # where the driver has returned and the rows are being written; then
    # after the call returned
    after_done = [0, 2]
    points = SNAP_STEPS + ["+%d ms" % d for d in after_done] + ["snapshot returned"]
    for k, point in enumerate(points):
        known = set(rig.sr_vdis())
        pos = rig.log_pos()
        task = rig.x.Async.VDI.snapshot(v, {})
        if k < len(SNAP_STEPS):
            rig.wait_log(r"sm step: %s \(" % point, pos)
        elif k < len(SNAP_STEPS) + len(after_done):
            rig.wait_log(r"sm step: snapshot: done \(", pos)
            time.sleep((STEP_MS + after_done[k - len(SNAP_STEPS)]) / 1000)
            point = "snapshot: done " + point
        else:
            assert rig.wait_task(task) == "success"
            snap = re.sub(r"</?value>", "", rig.x.task.get_result(task))
        rig.kill_restart(point, pos, step_ms=STEP_MS)
        new = {r: rec for r, rec in rig.sr_vdis().items() if r not in known and rec["managed"]}
        assert len(new) <= 1, new  # all or nothing
        rig.landed[-1] += ("snapshot kept" if new else "snapshot undone",)
        if point == "snapshot returned":
            assert snap in new and new[snap]["is_a_snapshot"] and new[snap]["snapshot_of"] == v
        for r in new:
            rig.expect[r] = rig.expect[v]  # a snapshot (a row of its own, or found by a scan)
        rig.check()
        # the next snapshot sees other data
        d = pattern((k % 3 + 1) * MiB - 4096 * k, b"v%d" % k)
        rig.put(v, d)
        rig.expect[v] = overlay(rig.expect[v], d)
    rig.check()


def coalesce_setup(rig, hidden):
    """v with data A; s1 = snapshot; B into v; with hidden also s2 = snapshot
    and C into v.  Returns (v, s1, s2, the base of s1, v's base)."""
    size = 4 * MiB
    v = rig.new_vdi(size, "coalesce")
    a = pattern(size, b"A%d" % len(rig.landed))
    rig.put(v, a)
    s1 = rig.x.VDI.snapshot(v, {})
    b = pattern(MiB + 512, b"B")
    rig.put(v, b)
    rig.expect[v] = overlay(a, b)
    rig.expect[s1] = a
    s2 = None
    if hidden:
        s2 = rig.x.VDI.snapshot(v, {})
        rig.expect[s2] = rig.expect[v]
        c = pattern(3 * MiB - 1024, b"C")
        rig.put(v, c)
        rig.expect[v] = overlay(rig.expect[v], c)
    bases = rig.x.VDI.get_sm_config(s1)["vhd-parent"], rig.x.VDI.get_sm_config(v)["vhd-parent"]
    rig.step_delay(STEP_MS)  # the setup ran without pauses; what follows has them
    return (v, s1, s2) + bases


def uuids(rig):
    return {rec["location"] for rec in rig.sr_vdis().values()}


@pytest.mark.parametrize("point", ["merging", "gc: copied", "gc: base unhidden",
                                   "gc: base renamed", "finished"])
def test_kill_during_leaf_coalesce(rig, point):
    """v over a base with one other child s1; destroying s1 makes the gc
    merge v into the base (copy, unhide, rename over v).  Kill at each point."""
    v, s1, _, base, _ = coalesce_setup(rig, hidden=False)
    vloc = rig.x.VDI.get_location(v)
    pos = rig.log_pos()
    rig.x.VDI.destroy(s1)
    del rig.expect[s1]
    if point == "merging":
        rig.wait_log(r"merging %s into %s" % (vloc, base), pos)
    elif point == "finished":
        wait_for(lambda: not rig.collectable() and base not in uuids(rig), 30)
    else:
        rig.wait_log(r"sm step: %s \(" % point, pos)
    rig.kill_restart(point, pos)
    rig.check()
    # the chain shrank: v stands alone, the base (row and file) is gone
    assert base not in uuids(rig)
    assert "vhd-parent" not in rig.x.VDI.get_sm_config(v)
    assert rig.x.VDI.get_location(v) == vloc
    # and v still works
    s = rig.x.VDI.snapshot(v, {})
    assert rig.export(s) == rig.expect[v]


@pytest.mark.parametrize("point", ["merging", "gc: copied", "gc: child set aside",
                                   "gc: relinked", "gc: relinked#2", "gc: merged child removed"])
def test_kill_during_hidden_coalesce(rig, point):
    """base1 <- {s1, base2 <- {v, s2}}: destroying s1 makes the gc merge the
    hidden base2 into base1 (copy, set base2 aside, relink v and s2 to base1,
    remove base2).  Kill at each point."""
    v, s1, s2, base1, base2 = coalesce_setup(rig, hidden=True)
    assert base1 != base2 and rig.x.VDI.get_sm_config(s2)["vhd-parent"] == base2
    pos = rig.log_pos()
    rig.x.VDI.destroy(s1)
    del rig.expect[s1]
    if point == "merging":
        rig.wait_log(r"merging %s into %s" % (base2, base1), pos)
    else:
        name, _, n = point.partition("#")
        rig.wait_log(r"sm step: %s \(" % name, pos, n=int(n or 1))
    rig.kill_restart(point, pos)
    rig.check()
    # base2 is gone; v and s2 are children of base1
    assert base2 not in uuids(rig) and base1 in uuids(rig)
    assert rig.x.VDI.get_sm_config(v)["vhd-parent"] == base1
    assert rig.x.VDI.get_sm_config(s2)["vhd-parent"] == base1


@pytest.mark.parametrize("delay", [0, 20])
def test_kill_inside_merge_copy(rig, delay):
    """The merge's copy runs without a step to stop at: with 48 MiB in the
    child to copy, kill 0-40 ms after the gc logged that it starts."""
    size = 64 * MiB
    v = rig.new_vdi(size, "big-coalesce")
    a = pattern(8 * MiB, b"A")
    rig.put(v, a)
    s1 = rig.x.VDI.snapshot(v, {})
    base = rig.x.VDI.get_sm_config(v)["vhd-parent"]
    b = pattern(48 * MiB, b"B")
    rig.put(v, b)
    rig.expect[v] = overlay(overlay(b"\0" * size, a), b)
    vloc = rig.x.VDI.get_location(v)
    rig.step_delay(STEP_MS)  # to see in the log whether the copy had ended
    pos = rig.log_pos()
    rig.x.VDI.destroy(s1)
    rig.wait_log(r"merging %s into %s" % (vloc, base), pos)
    time.sleep(delay / 1000)
    rig.kill_restart("inside the copy, +%d ms" % delay, pos)
    rig.check()
    assert base not in uuids(rig) and "vhd-parent" not in rig.x.VDI.get_sm_config(v)


@pytest.mark.parametrize("first,again", [("gc: child set aside", "gc: relinked"),
                                         ("gc: relinked", "gc: merged child removed"),
                                         ("gc: copied", "gc: copied")])
def test_kill_again_during_recovery(rig, first, again):
    """A hidden-child merge killed at one step, then killed again while the
    restarted daemon finishes it (attach's recovery relinks the children of
    a merged base before the daemon serves; an unfinished copy is done again
    by the gc thread), then started for good."""
    v, s1, s2, base1, base2 = coalesce_setup(rig, hidden=True)
    pos = rig.log_pos()
    rig.x.VDI.destroy(s1)
    del rig.expect[s1]
    rig.wait_log(r"sm step: %s \(" % first, pos)
    rig.xapi.kill9()
    rig.landed.append((first, first))
    rig.restart_killing_at(r"sm step: %s \(" % again)
    rig.check()
    assert base2 not in uuids(rig) and base1 in uuids(rig)
    assert rig.x.VDI.get_sm_config(v)["vhd-parent"] == base1
    assert rig.x.VDI.get_sm_config(s2)["vhd-parent"] == base1


def test_kill_during_unused_base_removal(rig):
    """While the gc merges v into its base (after s1 was destroyed), v is
    destroyed too: the merge is given up and the base, now without children,
    is removed.  Kill right after the unlink."""
    v, s1, _, base, _ = coalesce_setup(rig, hidden=False)
    pos = rig.log_pos()
    rig.x.VDI.destroy(s1)
    del rig.expect[s1]
    rig.wait_log(r"sm step: gc: copied \(", pos)
    rig.x.VDI.destroy(v)  # during the pause after the copy, without the SR lock
    del rig.expect[v]
    rig.wait_log(r"sm step: gc: base removed \(", pos)
    rig.kill_restart("gc: base removed", pos)
    rig.check()
    assert rig.sr_vdis() == {} and rig.images() == {}


def import_kills(rig, v, size, points, seed):
    """Imports of size bytes into v, each killed after sending sent MiB of
    the body and waiting delay ms: v reads, sector by sector, as before or
    as sent (as sent if the task said success before the kill)."""
    for i, (sent, delay) in enumerate(points):
        new = pattern(size, b"%s%d" % (seed, i))
        task = rig.x.task.create("crash import", "")
        pos = rig.log_pos()
        s = rig.stream_put("task_id=%s&vdi=%s&format=raw" % (task, v), size, new[:sent * MiB])
        time.sleep(delay / 1000)
        acked = rig.x.task.get_status(task) == "success"
        rig.kill_restart("import, %d of %d MiB sent, +%d ms" % (sent, size // MiB, delay), pos)
        s.close()
        got = rig.export(v)
        bad = sectors_from(got, rig.expect[v], new)
        assert not bad, "sectors that are neither the old nor the new data: %s" % bad[:10]
        if acked:
            assert got == new
        rig.landed[-1] += ("%d of %d sectors new" % (
            sum(got[o:o + SECTOR] == new[o:o + SECTOR] for o in range(0, size, SECTOR)),
            size // SECTOR),)
        rig.expect[v] = got  # what v holds now, and must keep holding
        rig.check()


def test_kill_during_import(rig):
    """PUT /import_raw_vdi of 24 MiB into a VDI, killed after more and more
    of the body was sent (the daemon reads 4 MiB at a time and writes each as
    it comes; task progress comes once a second, so the moments are set by
    timing): into an empty dynamic image (new blocks), into the same image
    (blocks written in place), into it after a snapshot (new blocks of a
    differencing image over the data, which the snapshot must keep); then an
    import whose task succeeded, and the kill at once."""
    size = 24 * MiB
    v = rig.new_vdi(size, "import-me")
    rig.expect[v] = b"\0" * size
    bystander = rig.new_vdi(4 * MiB, "bystander")
    rig.put(bystander, pattern(4 * MiB, b"by"))
    rig.expect[bystander] = pattern(4 * MiB, b"by")
    import_kills(rig, v, size, [(1, 20), (6, 20), (11, 30), (24, 0)], b"fresh")
    rig.put(v, pattern(size, b"full"))  # every block allocated: the next ones write in place
    rig.expect[v] = pattern(size, b"full")
    import_kills(rig, v, size, [(9, 15), (17, 5), (24, 10)], b"inplace")
    snap = rig.x.VDI.snapshot(v, {})
    rig.expect[snap] = rig.expect[v]
    import_kills(rig, v, size, [(5, 20), (13, 30), (21, 5), (24, 25)], b"child")
    new = pattern(size, b"final")
    rig.put(v, new)
    pos = rig.log_pos()
    rig.kill_restart("import acknowledged", pos)
    rig.expect[v] = new
    rig.check()


def test_kill_during_large_import(rig):
    """An import of more than 128 MiB into an empty VDI: the VHD library
    commits new blocks 64 at a time (2 MiB each) while the body streams in,
    so a kill in the middle leaves a part of the data in place; then an
    acknowledged one."""
    size = 192 * MiB
    v = rig.new_vdi(size, "large")
    rig.expect[v] = b"\0" * size
    import_kills(rig, v, size, [(150, 150), (192, 0)], b"large")
    new = pattern(size, b"large-final")
    rig.put(v, new)
    rig.kill_restart("large import acknowledged", rig.log_pos())
    rig.expect[v] = new
    rig.check()


@pytest.mark.parametrize("point", ["create: made", "create: renamed", "data", "acknowledged"])
def test_kill_during_import_into_sr(rig, point):
    """PUT /import_raw_vdi?sr_id=...: a new VDI is created, then filled.
    Kill while it is created, while it is filled, and after the task
    succeeded: no half-made image, no row without a file; what exists reads
    as zeros or as sent; an acknowledged import reads exactly."""
    size = 6 * MiB
    data = pattern(size, b"into-sr")
    rig.step_delay(STEP_MS)
    known = set(rig.sr_vdis())
    task = rig.x.task.create("crash import into SR", "")
    pos = rig.log_pos()
    q = "task_id=%s&sr_id=%s&format=raw" % (task, rig.sr)
    if point.startswith("create"):
        s = rig.stream_put(q, size, b"")
        rig.wait_log(r"sm step: %s \(" % point, pos)
    elif point == "data":
        s = rig.stream_put(q, size, data[:5 * MiB])  # the first 4 MiB get written
        rig.wait_log(r"sm step: create: renamed \(", pos)
        time.sleep((STEP_MS + 30) / 1000)
    else:
        s = rig.stream_put(q, size, data)
        assert rig.wait_task(task) == "success"
        made = re.sub(r"</?value>", "", rig.x.task.get_result(task))
    rig.kill_restart(point, pos)
    s.close()
    new = {r: rec for r, rec in rig.sr_vdis().items() if r not in known}
    if point == "acknowledged":
        assert list(new) == [made]
    for r in new:
        got = rig.export(r)
        if point == "acknowledged":
            assert got == data
        else:
            bad = sectors_from(got, b"\0" * size, data)
            assert not bad, bad[:10]
        rig.expect[r] = got
    rig.check()
