#!/usr/bin/env python3
"""Reduce a C xenstored trace (xenstored -T FILE) to the requests that change
the store, in the order xenstored handled them.

Usage: trace-writes.py TRACE > writes.txt

Kept: WRITE, MKDIR, RM, SET_PERMS, TRANSACTION_START/END, INTRODUCE, RELEASE
(the IN lines), errors returned for them (a client may pipeline requests,
so an error is only attributed to the connection), and reads of /cxrec-phase/<name>
(record-in-dom0.sh's phase markers). Each line is
    <connection> <OP> <arguments>
where <connection> is "dom0-kernel" (the first connection: dom0's xenbus
driver, i.e. blkback/netback and dom0's own keys), "domU" (the connection
created by INTRODUCE: the guest kernel, whose paths are relative to
/local/domain/<domid>) or "cN" (N-th other dom0 client: xl, the xl
daemon, xenconsoled, hotplug scripts, xenstore-* commands). Timestamps
(1 s resolution) are dropped. Arguments are as xenstored prints them, with
NULs shown as spaces.
"""
import re
import sys

KEEP = {'WRITE', 'MKDIR', 'RM', 'SET_PERMS', 'TRANSACTION_START',
        'TRANSACTION_END', 'INTRODUCE', 'RELEASE'}
IO = re.compile(r'^(IN|OUT) (0x[0-9a-f]+) \d{8} \d\d:\d\d:\d\d (\S+) \((.*)\)\s*$')


def main():
    names = {}          # live connection pointer -> label
    count = 0
    after_introduce = False
    pending = {}        # connection -> op of its last kept IN request
    for raw in open(sys.argv[1], errors='replace'):
        line = raw.rstrip('\n')
        if line.startswith('CREATE connection '):
            ptr = line.split()[2]
            if not names:
                names[ptr] = 'dom0-kernel'
            elif after_introduce:
                names[ptr] = 'domU'
                after_introduce = False
            else:
                count += 1
                names[ptr] = 'c%d' % count
            continue
        if line.startswith('DESTROY connection '):
            names.pop(line.split()[2], None)
            continue
        m = IO.match(line)
        if not m:
            continue
        d, ptr, op, args = m.groups()
        who = names.get(ptr, ptr)
        args = args.strip()
        if d == 'IN':
            if op in KEEP:
                print('%s %s %s' % (who, op, args))
                pending[ptr] = op
                if op == 'INTRODUCE':
                    after_introduce = True
            elif op == 'READ' and args.startswith('/cxrec-phase/'):
                print('---- phase %s' % args[len('/cxrec-phase/'):])
                pending.pop(ptr, None)
            else:
                pending.pop(ptr, None)
        elif ptr in pending:
            if op == 'ERROR':
                print('%s   -> ERROR %s (to one of its requests above)' % (who, args))
            pending.pop(ptr)


if __name__ == '__main__':
    main()
