"""A raw client of the xenstore wire protocol (Xen 4.17 xs_wire.h) over a Unix
socket, for tests that need exact packets: error names, malformed input,
watch events, transactions by id.  Used by tests/integration/test_xenstored.py."""
import socket
import struct

TYPES = dict(CONTROL=0, DIRECTORY=1, READ=2, GET_PERMS=3, WATCH=4, UNWATCH=5,
             TRANSACTION_START=6, TRANSACTION_END=7, INTRODUCE=8, RELEASE=9,
             GET_DOMAIN_PATH=10, WRITE=11, MKDIR=12, RM=13, SET_PERMS=14,
             WATCH_EVENT=15, ERROR=16, IS_DOMAIN_INTRODUCED=17, RESUME=18,
             SET_TARGET=19, RESET_WATCHES=21, DIRECTORY_PART=22)
NAMES = {v: k for k, v in TYPES.items()}
HDR = struct.Struct("<IIII")
PAYLOAD_MAX = 4096


class XsError(Exception):
    def __init__(self, name):
        super().__init__(name)
        self.name = name


class Closed(Exception):
    pass


def payload(*args):
    """Arguments as the wire wants them: each followed by a NUL."""
    out = b""
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out += a + b"\0"
    return out


class Raw:
    def __init__(self, path, timeout=5.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)          # blocking: waits while the listen backlog is full
        self.s.settimeout(timeout)
        self.req = 0
        self.events = []  # (path, token) received while waiting for replies
        self.buf = b""

    def close(self):
        self.s.close()

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, type_, data=b"", tx=0, req_id=None, length=None):
        if isinstance(type_, str):
            type_ = TYPES[type_]
        if req_id is None:
            self.req += 1
            req_id = self.req
        self.s.sendall(HDR.pack(type_, req_id, tx, len(data) if length is None else length) + data)
        return req_id

    def _read(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("connection closed by the daemon")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next packet: (type, req_id, tx_id, payload)."""
        t, r, tx, n = HDR.unpack(self._read(HDR.size))
        return t, r, tx, self._read(n)

    def reply(self, req_id=None):
        """The next reply, queueing watch events that come first."""
        while True:
            t, r, tx, data = self.recv()
            if t == TYPES["WATCH_EVENT"]:
                parts = data.split(b"\0")
                self.events.append((parts[0].decode(), parts[1].decode()))
                continue
            return t, r, tx, data

    def call(self, type_, *args, tx=0, data=None):
        """A request; returns the reply payload, raises XsError on an error reply."""
        rid = self.send(type_, payload(*args) if data is None else data, tx=tx)
        t, r, rtx, out = self.reply()
        assert r == rid, "reply req_id %d != %d" % (r, rid)
        if t == TYPES["ERROR"]:
            raise XsError(out.rstrip(b"\0").decode())
        want = TYPES[type_] if isinstance(type_, str) else type_
        assert t == want, "reply type %s to %s" % (NAMES.get(t, t), NAMES.get(want, want))
        return out

    def error(self, type_, *args, tx=0, data=None):
        """A request that must fail: returns the error name."""
        try:
            out = self.call(type_, *args, tx=tx, data=data)
        except XsError as e:
            return e.name
        raise AssertionError("%s %r succeeded: %r" % (type_, args, out))

    # conveniences
    def read(self, path, tx=0):
        return self.call("READ", path, tx=tx)

    def write(self, path, value, tx=0):
        if isinstance(value, str):
            value = value.encode()
        return self.call("WRITE", tx=tx, data=path.encode() + b"\0" + value)

    def mkdir(self, path, tx=0):
        return self.call("MKDIR", path, tx=tx)

    def rm(self, path, tx=0):
        return self.call("RM", path, tx=tx)

    def ls(self, path, tx=0):
        out = self.call("DIRECTORY", path, tx=tx)
        return [x.decode() for x in out.split(b"\0")[:-1]]

    def getperms(self, path, tx=0):
        return [x.decode() for x in self.call("GET_PERMS", path, tx=tx).split(b"\0")[:-1]]

    def setperms(self, path, perms, tx=0):
        return self.call("SET_PERMS", path, *perms, tx=tx)

    def watch(self, path, token):
        return self.call("WATCH", path, token)

    def unwatch(self, path, token):
        return self.call("UNWATCH", path, token)

    def tstart(self):
        return int(self.call("TRANSACTION_START", "").rstrip(b"\0"))

    def tend(self, tx, commit=True):
        return self.call("TRANSACTION_END", "T" if commit else "F", tx=tx)

    def events_within(self, wait=0.3):
        """Every watch event that arrives until none has come for wait seconds."""
        out = []
        while not self.no_event(wait):
            out.append(self.event())
        return out

    def event(self):
        """The next watch event (path, token)."""
        if self.events:
            return self.events.pop(0)
        t, r, tx, data = self.recv()
        assert t == TYPES["WATCH_EVENT"], "expected a watch event, got %s %r" % (NAMES.get(t, t), data)
        parts = data.split(b"\0")
        return parts[0].decode(), parts[1].decode()

    def no_event(self, wait=0.3):
        """True if no watch event arrives within wait seconds."""
        if self.events:
            return False
        if len(self.buf) >= HDR.size:
            return False
        old = self.s.gettimeout()
        self.s.settimeout(wait)
        try:
            self.buf += self.s.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.s.settimeout(old)
        return False
