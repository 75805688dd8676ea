#!/usr/bin/env python3
"""Normalise a `xenstore-ls -fp` dump so that two trees can be compared key
for key (e.g. one recorded on a real Xen host, tests/fixtures/xen-4.17/, and
one written by cxapi's simulated backend).

Usage: normalise.py [--domid N]... [--keep-mac] [--keep-loop] [DUMP]  (stdin if no DUMP)

Output: one line per node, sorted by path,
    path = "value" (perms)
with the values that differ from run to run replaced by placeholders:
  {DOMID}, {DOMID2}, ...  guest domain ids (every /local/domain/<N> with
                          N != 0, in numeric order, unless --domid is given),
                          in path segments, in path-valued values, in
                          frontend-id/domid values and in permissions (n1 -> n{DOMID})
  {UUID}                  the guest's /vm/<uuid> (also inside values)
  {EVTCHN}                event channel ports (*event-channel*, store/port,
                          console/port)
  {GREF}                  grant references of shared rings (*ring-ref under
                          device/, and console/ring-ref (a gfn for PV))
  {MFN}                   store/ring-ref (the xenstore ring's frame number)
  {TTY}                   console/tty (/dev/pts/N)
  {TIME}                  /vm/<uuid>/start_time
  {MAC}                   mac values (only if --keep-mac is not given)
  {LOOPDEV} {MAJMIN}      the loop device blkback got (node,
                          physical-device-path, physical-device: 7:<minor>
                          in hex, as the block script writes it), unless
                          --keep-loop
Lines that do not look like xenstore-ls -fp output (e.g. '#' comments) are
ignored. Values stay in xenstore-ls's escaped form.
"""
import argparse
import re
import sys

LINE = re.compile(r'^(/\S*) = "(.*)"\s+\(([^()]*)\)\s*$')
UUID = re.compile(r'^/vm/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$')
DOMDIR = re.compile(r'^/local/domain/(\d+)$')


def parse(lines):
    nodes = []
    for line in lines:
        m = LINE.match(line.rstrip('\n'))
        if m:
            nodes.append(m.groups())
    return nodes


class Normaliser:
    def __init__(self, nodes, domids=None, keep_mac=False, keep_loop=False):
        if domids is None:
            domids = sorted({int(m.group(1)) for p, _, _ in nodes
                             for m in [DOMDIR.match(p)] if m and m.group(1) != '0'})
        self.dom = {str(d): '{DOMID}' if i == 0 else '{DOMID%d}' % (i + 1)
                    for i, d in enumerate(domids)}
        self.uuids = {m.group(1): '{UUID}' if i == 0 else '{UUID%d}' % (i + 1)
                      for i, m in enumerate(m for p, _, _ in nodes
                                            for m in [UUID.match(p)] if m)}
        self.keep_mac = keep_mac
        self.keep_loop = keep_loop

    def path(self, p):
        for u, ph in self.uuids.items():
            p = p.replace(u, ph)
        segs = p.split('/')
        for i, s in enumerate(segs):
            if s not in self.dom or i == 0:
                continue
            prev = segs[i - 1]
            prev2 = segs[i - 2] if i >= 2 else ''
            # /local/domain/N, /libxl/N, .../backend/<type>/N
            if (prev == 'domain' and prev2 == 'local') or \
               (prev == 'libxl' and prev2 == '') or prev2 == 'backend':
                segs[i] = self.dom[s]
        return '/'.join(segs)

    def perms(self, perms):
        out = []
        for tok in perms.split(','):
            tok = tok.strip()
            if tok[1:] in self.dom:
                tok = tok[0] + self.dom[tok[1:]]
            out.append(tok)
        return ','.join(out)

    def value(self, p, v):
        key = p.rsplit('/', 1)[-1]
        parent = p.rsplit('/', 2)[-2] if p.count('/') >= 2 else ''
        if 'event-channel' in key or (key == 'port' and parent in ('store', 'console')):
            return '{EVTCHN}' if v else v
        if key == 'ring-ref' and parent == 'store':
            return '{MFN}'
        if key.endswith('ring-ref'):
            return '{GREF}'
        if key == 'tty' and parent == 'console':
            return '{TTY}'
        if key == 'start_time' and p.startswith('/vm/'):
            return '{TIME}'
        if key == 'mac' and not self.keep_mac:
            return '{MAC}'
        if not self.keep_loop and re.fullmatch(r'/dev/loop\d+', v):
            return '{LOOPDEV}'
        if not self.keep_loop and key == 'physical-device' and re.fullmatch(r'7:[0-9a-f]+', v):
            return '{MAJMIN}'
        if key in ('frontend-id', 'domid') and v in self.dom:
            return self.dom[v]
        if v.startswith('/'):
            return self.path(v)
        for u, ph in self.uuids.items():
            v = v.replace(u, ph)
        return v

    def line(self, node):
        p, v, perms = node
        return '%s = "%s" (%s)' % (self.path(p), self.value(p, v), self.perms(perms))


def normalise(lines, **kw):
    nodes = parse(lines)
    n = Normaliser(nodes, **kw)
    return sorted(n.line(node) for node in nodes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('dump', nargs='?', help='xenstore-ls -fp output (default stdin)')
    ap.add_argument('--domid', type=int, action='append',
                    help='guest domid to replace (repeat for more; default: all non-zero)')
    ap.add_argument('--keep-mac', action='store_true', help='do not replace mac values')
    ap.add_argument('--keep-loop', action='store_true', help='do not replace loop device names')
    a = ap.parse_args()
    src = open(a.dump) if a.dump else sys.stdin
    for line in normalise(src, domids=a.domid, keep_mac=a.keep_mac, keep_loop=a.keep_loop):
        print(line)


if __name__ == '__main__':
    main()
