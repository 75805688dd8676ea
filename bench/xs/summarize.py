#!/usr/bin/env python3
"""Summarise bench/xs/run.sh's raw.txt as a Markdown table.

Cells are medians over the rounds.  "ours / best" compares our daemon with
the better of Debian's daemons for that figure (the lower for costs, the
higher for rates); the verdict column checks the targets of issue 4.
"""
import statistics
import sys

PEERS_ORDER = ["c", "ocaml", "ocaml-nolog"]
NAMES = {"c": "C xenstored", "ocaml": "oxenstored", "ocaml-nolog": "oxenstored --no-access-log",
         "ours": "ours"}


def parse(path):
    data = {}   # (daemon, test) -> list of dicts
    notes, header, fails = [], "", []
    for line in open(path):
        line = line.strip()
        if line.startswith("#"):
            header = line[1:].strip()
            continue
        if line.startswith("note:"):
            notes.append(line[5:].strip())
            continue
        kv = {}
        for tok in line.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                kv.setdefault(k, v)
        if "daemon" not in kv or "test" not in kv:
            continue
        if "FAILED" in line or "DIED" in line:
            fails.append(line)
            continue
        data.setdefault((kv["daemon"], kv["test"]), []).append(kv)
    return data, notes, header, fails


def med(data, d, test, key):
    vals = []
    for kv in data.get((d, test), []):
        try:
            vals.append(float(kv[key]))
        except (KeyError, ValueError):
            pass
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def main():
    data, notes, header, fails = parse(sys.argv[1])
    daemons = []
    for d, _ in data:
        if d not in daemons:
            daemons.append(d)
    peers = [d for d in PEERS_ORDER if d in daemons]
    cols = peers + (["ours"] if "ours" in daemons else [])
    have_ours = "ours" in cols
    ndoms = next((kv.get("domains") for (d, t), l in data.items() if t.startswith("vmtxn-")
                  and t != "vmtxn-0" for kv in l), "1000")

    out = []
    out.append("| figure | " + " | ".join(NAMES[d] for d in cols) +
               " | ours / best Debian | target | verdict |")
    out.append("|---|" + "---|" * len(cols) + "---|---|---|")
    failing = []

    def row(label, test, key, lower_better=True, target=None, digits=1, values=None):
        vals = values if values is not None else {d: med(data, d, test, key)[0] for d in cols}
        pv = [vals[d] for d in peers if vals.get(d) is not None]
        best = (min(pv) if lower_better else max(pv)) if pv else None
        ratio = vals.get("ours") / best if have_ours and vals.get("ours") is not None and best else None
        tgt, verdict = "", ""
        if target:
            kind, limit = target
            tgt = {"rel": f"≤ {limit}× best", "abs": f"≤ {limit}", "self": f"≤ {limit}×"}[kind]
            x = {"rel": ratio, "abs": vals.get("ours"), "self": vals.get("ours")}[kind]
            if x is not None:
                ok = x <= limit
                verdict = "pass" if ok else f"**FAIL** ({x / limit:.2f}× the target)"
                if not ok:
                    failing.append(f"{label}: {x:.2f} vs target {limit} ({x / limit:.2f}×)")
        out.append(f"| {label} | " + " | ".join(fmt(vals.get(d), digits) for d in cols) +
                   f" | {'' if ratio is None else f'{ratio:.2f}'} | {tgt} | {verdict} |")

    labels = {"read": "read", "write": "write", "dir1000": "directory, 1,000 entries",
              "txn": "transaction (start, write, commit)", "watch": "watch firing (B writes, A gets the event)"}
    for t in ["read", "write", "dir1000", "txn", "watch"]:
        if not any((d, t) in data for d in cols):
            continue
        row(f"{labels[t]}: daemon CPU µs/op", t, "cpu_us_op", True, ("rel", 0.5), 1)
        row(f"{labels[t]}: ops/s", t, "ops_s", False)
        if t == "watch":
            row("watch firing: p50 latency µs", t, "p50_us", True)

    nodes = next((kv.get("nodes") for (d, t), l in data.items() if t == "load" for kv in l), "?")
    nodes = f"{int(nodes) // 1000}k" if nodes.isdigit() and int(nodes) % 1000 == 0 else nodes
    if any((d, "load") in data for d in cols):
        row(f"load {nodes} nodes: RSS bytes/node", "load", "bytes_per_node", True, ("abs", 60), 0)
        row(f"load {nodes} nodes: RSS after, KiB", "load", "rss_after_kb", True, None, 0)
        row(f"load {nodes} nodes: daemon CPU µs/node", "load", "cpu_us_op", True, None, 1)
        row(f"load {nodes} nodes: nodes/s", "load", "ops_s", False)

    tn = f"vmtxn-{ndoms}"
    if any((d, "vmtxn-0") in data for d in cols):
        row("VM-creation txn, no domains: µs (p50)", "vmtxn-0", "p50_us", True)
        row(f"VM-creation txn, {ndoms} domains: µs (p50)", tn, "p50_us", True)
        # paired ratios: each round alternates transactions between a daemon
        # with the domains and its twin without; median over rounds
        row(f"VM-creation txn, {ndoms} domains / none: wall time (p50)", tn, "ratio_p50", True,
            ("self", 1.2), 2)
        row(f"VM-creation txn, {ndoms} domains / none: daemon CPU", tn, "ratio_cpu", True, None, 2)
        row("VM-creation txn, no domains: daemon CPU µs", "vmtxn-0", "cpu_us_op", True)
        row(f"VM-creation txn, {ndoms} domains: daemon CPU µs", tn, "cpu_us_op", True)
        intro = {d: med(data, d, tn, "introduced")[0] for d in cols}
        row(f"VM-creation txn: domains introduced", None, None, True, None, 0, values=intro)

    print(f"Run: {header}\n")
    print("\n".join(out))
    fl = med(data, "floor", "floor", "cpu_us_op")[0]
    if fl is not None:
        cr = med(data, "c", "read", "cpu_us_op")[0]
        extra = ""
        if cr:
            extra = (f"; half of C xenstored's read is {cr / 2:.1f} µs, "
                     f"{cr / 2 / fl:.2f}× that floor")
        print(f"\nKernel floor: a do-nothing server (blocking read + write) answering the same "
              f"synchronous request over a Unix socket costs {fl:.1f} µs of CPU per op{extra}.")
    counts = {d: max((len(v) for (dd, t), v in data.items() if dd == d), default=0) for d in cols}
    print("\nMedians; samples per figure: " + ", ".join(f"{NAMES[d]} {counts[d]}" for d in cols) + ".")
    if failing:
        print("\nTargets missed: " + "; ".join(failing) + ".")
    elif have_ours:
        print("\nEvery target measured is met.")
    for n in notes:
        print(f"\nNote: {n}")
    for f in fails:
        print(f"\nFailure: {f}")


if __name__ == "__main__":
    main()
