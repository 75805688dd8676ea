#!/usr/bin/env python3
"""idl_import.py - regenerate idl/*.json from the reference datamodel.

A developer tool, run by hand (python3 standard library only):

    python3 tools/idl_import.py --json /path/to/xenapi.json \
        --ocaml /path/to/xen-api/ocaml [--out idl]

Inputs:
  * xenapi.json - the machine-readable XenAPI datamodel of the original xapi
    (API 2.21 snapshot).  Gives classes, fields, visible messages, enums,
    roles, lifecycles.
  * the original's OCaml source tree (ocaml/idl/datamodel*.ml and
    ocaml/xapi-consts/api_errors.ml) at the commit matching the JSON.  Only
    FACTS are read from it (names, numbers, flags): optional parameters and
    their defaults, async flags, hidden messages, internal-only fields,
    relations, the error catalogue, schema version.

Output: idl/classes.json, idl/errors.json, idl/extras.json, idl/meta.json.
No description/doc sentence is ever written.  See docs/idl.md.
"""
import argparse
import json
import os
import re
import sys

# ---------------------------------------------------------------------------
# Facts read by hand from the datamodel (see docs/idl.md).

# Namespaced fields: class -> namespace -> member names.  The wire name
# flattens with "_", the database column with "__".
NAMESPACES = {
    "*": {"name": ["label", "description"]},
    "VM": {
        "memory": ["overhead", "target", "static_max", "dynamic_max",
                   "dynamic_min", "static_min"],
        "VCPUs": ["params", "max", "at_startup"],
        "actions": ["after_softreboot", "after_shutdown", "after_reboot",
                    "after_crash"],
        "PV": ["bootloader", "kernel", "ramdisk", "args", "bootloader_args",
               "legacy_args"],
        "HVM": ["boot_policy", "boot_params", "shadow_multiplier"],
    },
    "VM_metrics": {
        "memory": ["actual"],
        "VCPUs": ["number", "utilisation", "CPU", "params", "flags"],
    },
    "host": {
        "memory": ["overhead"],
        "API_version": ["major", "minor", "vendor", "vendor_implementation"],
    },
    "host_metrics": {"memory": ["total", "free"]},
    "PIF_metrics": {"io": ["read_kbs", "write_kbs"]},
    "VIF_metrics": {"io": ["read_kbs", "write_kbs"]},
    "VBD_metrics": {"io": ["read_kbs", "write_kbs"]},
    "VIF": {"qos": ["algorithm_type", "algorithm_params",
                    "supported_algorithms"]},
    "VBD": {"qos": ["algorithm_type", "algorithm_params",
                    "supported_algorithms"]},
}

# Map keys that carry their own RBAC permission ("<perm>/key:<key>"), with the
# lowest role allowed (that role and every role above it); a trailing "*"
# matches any key with that prefix.  From the map_keys_roles of the
# original's datamodel (task, network, SR, VDI, pool, host and VM other_config).
MAP_KEYS_ROLES = {
    "task.other_config": {"applies_to": "vm-operator", "XenCenterUUID": "vm-operator",
                          "XenCenterMeddlingActionTitle": "vm-operator"},
    "network.other_config": {"folder": "vm-operator", "XenCenter.CustomFields.*": "vm-operator",
                             "XenCenterCreateInProgress": "vm-operator"},
    "SR.other_config": {"folder": "vm-operator", "XenCenter.CustomFields.*": "vm-operator"},
    "VDI.other_config": {"folder": "vm-operator", "XenCenter.CustomFields.*": "vm-operator"},
    "host.other_config": {"folder": "vm-operator", "XenCenter.CustomFields.*": "vm-operator"},
    "pool.other_config": {"folder": "vm-operator", "XenCenter.CustomFields.*": "vm-operator",
                          "EMPTY_FOLDERS": "vm-operator"},
    "VM.other_config": {"pci": "pool-admin", "folder": "vm-operator",
                        "XenCenter.CustomFields.*": "vm-operator"},
}

ROLES = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
         "vm-operator", "client-cert", "read-only"]
ROLE_SETS = {
    "_R_LOCAL_ROOT_ONLY": [],
    "_R_POOL_ADMIN": ROLES[:1],
    "_R_POOL_OP": ROLES[:2],
    "_R_VM_POWER_ADMIN": ROLES[:3],
    "_R_VM_ADMIN": ROLES[:4],
    "_R_VM_OP": ROLES[:5],
    "_R_READ_ONLY": ROLES,
    "_R_ALL": ROLES,
    "_R_CLIENT_CERT": ["client-cert"],
}

NO_ASYNC_CLASSES = {"session", "event", "task", "data_source", "blob"}
# Classes kept in memory only (plus the DynamicRO metrics classes that the
# original marks PersistNothing).  "message" is PersistNothing upstream only
# because messages live in their own store there; we persist them.
NOT_PERSISTED = {"session", "task", "VIF_metrics", "VBD_metrics"}
NOT_IN_DB = {"auth", "event", "sr_stat", "probe_result", "data_source",
             "vdi_nbd_server_info"}

LC_STATES = {"Published_s": "published", "Prototyped_s": "prototyped",
             "Deprecated_s": "deprecated", "Removed_s": "removed"}


# Named constants used as defaults (ocaml/xapi-consts/constants.ml).
CONSTANTS = {"Constants.pgpu_default_size": 1048576,
             "Constants.default_token_timeout_s": 20.0,
             "Constants.default_token_timeout_coefficient_s": 1.0}

CTX = []


def die(msg):
    sys.stderr.write("idl_import: %s %s\n" % (CTX, msg))
    sys.exit(1)


# ---------------------------------------------------------------------------
# A small OCaml tokenizer, enough to read the datamodel's applications.

TOK_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<label>[~?][a-z_][A-Za-z0-9_']*:?)
  | (?P<poly>`[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>-?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?L?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_']*(?:\.[A-Za-z_][A-Za-z0-9_']*)*)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<punct>->|::|\+\+|;;|[()\[\]{};,=@|:.^*+<>!&-])
""", re.X | re.S)


def ocaml_unescape(s):
    s = s[1:-1]
    s = re.sub(r"\\\n\s*", "", s)
    return (s.replace('\\"', '"').replace("\\n", "\n")
             .replace("\\t", "\t").replace("\\\\", "\\"))


def tokenize(text):
    toks = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("(*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("(*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*)", i):
                    depth, i = depth - 1, i + 2
                elif text[i] == '"':
                    m = re.compile(r'"(?:[^"\\]|\\.)*"', re.S).match(text, i)
                    i = m.end() if m else i + 1
                else:
                    i += 1
            continue
        m = TOK_RE.match(text, i)
        if not m:
            i += 1  # skip stray characters (e.g. a lone quote of 'a)
            continue
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group(kind)))
        i = m.end()
    return toks


OPEN = {"(": ")", "[": "]", "{": "}"}


def group_end(toks, i):
    """toks[i] is an opening bracket; return index just past its match."""
    depth = 0
    while i < len(toks):
        k, v = toks[i]
        if k == "punct" and v in OPEN:
            depth += 1
        elif k == "punct" and v in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def atom_end(toks, i):
    if toks[i][0] == "punct" and toks[i][1] in OPEN:
        return group_end(toks, i)
    return i + 1


def parse_app(toks, i, stop_unit=True):
    """Parse the labelled arguments of an application starting after
    toks[i] (the function name).  Returns (labels, positionals, end)."""
    labels, pos = {}, []
    j = i + 1
    while j < len(toks):
        k, v = toks[j]
        if stop_unit and k == "punct" and v == "(" and j + 1 < len(toks) \
                and toks[j + 1] == ("punct", ")"):
            return labels, pos, j + 2
        if k == "label":
            if v.endswith(":"):
                e = atom_end(toks, j + 1)
                labels[v[1:-1]] = toks[j + 1:e]
                j = e
            else:
                labels[v[1:]] = [("ident", v[1:])]
                j += 1
            continue
        if k == "punct" and v in (";", "]", ")", "}", "@", ",", "|", "->",
                                  ";;"):
            return labels, pos, j
        if k == "ident" and v in ("in", "let", "and", "then", "else"):
            return labels, pos, j
        e = atom_end(toks, j)
        pos.append(toks[j:e])
        j = e
    return labels, pos, j


def strip_parens(ts):
    while len(ts) >= 2 and ts[0] == ("punct", "(") \
            and group_end(ts, 0) == len(ts):
        ts = ts[1:-1]
    return ts


def split_top(ts, sep):
    """Split a token list on separator sep at bracket depth 0."""
    out, cur, depth = [], [], 0
    for k, v in ts:
        if k == "punct" and v in OPEN:
            depth += 1
        elif k == "punct" and v in (")", "]", "}"):
            depth -= 1
        if depth == 0 and k == "punct" and v == sep:
            out.append(cur)
            cur = []
        else:
            cur.append((k, v))
    if cur:
        out.append(cur)
    return out


def list_items(ts):
    ts = strip_parens(ts)
    if ts and ts[0] == ("punct", "[") and group_end(ts, 0) == len(ts):
        return [x for x in split_top(ts[1:-1], ";") if x]
    return None


class OCamlSource:
    def __init__(self, idldir):
        self.files = {}
        for fn in sorted(os.listdir(idldir)):
            if fn.startswith("datamodel") and fn.endswith(".ml"):
                with open(os.path.join(idldir, fn)) as f:
                    self.files[fn] = tokenize(f.read())
        self.consts = {}  # _vm -> "VM"
        toks = self.files["datamodel_common.ml"]
        for i in range(len(toks) - 3):
            if toks[i] == ("ident", "let") and toks[i + 2] == ("punct", "=") \
                    and toks[i + 3][0] == "str" and toks[i + 1][1].startswith("_"):
                self.consts[toks[i + 1][1]] = ocaml_unescape(toks[i + 3][1])
        self.lets = {}  # file -> [(name, index)]
        for fn, toks in self.files.items():
            ls = []
            for i in range(len(toks) - 1):
                if toks[i] == ("ident", "let") and toks[i + 1][0] == "ident":
                    name = toks[i + 1][1]
                    if name == "rec":
                        name = toks[i + 2][1]
                    ls.append((name, i))
            self.lets[fn] = ls

    def cls_name(self, v):
        v = v.split(".")[-1]
        return self.consts.get(v, v)

    def resolve(self, fn, pos, ident):
        """Find the let-binding of ident visible from (fn, pos)."""
        parts = ident.split(".")
        name = parts[-1]
        cands = []
        if len(parts) > 1:
            mod = parts[-2]
            mfile = mod.lower() + ".ml"
            if mfile in self.files:
                cands = [(mfile, i) for (n, i) in self.lets[mfile] if n == name]
            else:
                # module Mod = struct ... in the same or another file
                for f2, toks in self.files.items():
                    for j in range(len(toks) - 2):
                        if toks[j] == ("ident", "module") and toks[j + 1] == ("ident", mod):
                            cands += [(f2, i) for (n, i) in self.lets[f2]
                                      if n == name and i > j]
                            break
                cands = cands[:1]
            return cands[0] if cands else None
        before = [i for (n, i) in self.lets[fn] if n == name and i < pos]
        if before:
            return (fn, before[-1])
        for f2 in self.files:
            c = [i for (n, i) in self.lets[f2] if n == name]
            if c and f2 != fn:
                return (f2, c[-1])
        return None

    def body(self, fn, i):
        """Tokens after 'let name args ='."""
        toks = self.files[fn]
        j = i + 2
        while j < len(toks) and toks[j] != ("punct", "="):
            j += 1
        return j + 1

    # -- types -------------------------------------------------------------
    def ty(self, fn, pos, ts, depth=0):
        ts = strip_parens(ts)
        if not ts:
            return None
        if depth > 20:
            die("type recursion")
        k, v = ts[0]
        base = {"String": "string", "SecretString": "string", "Int": "int",
                "Float": "float", "Bool": "bool", "DateTime": "datetime"}
        if len(ts) == 1 and k == "ident":
            if v in base:
                return base[v]
            r = self.resolve(fn, pos, v)
            if not r:
                die("unknown type %s" % v)
            f2, i2 = r
            b = self.body(f2, i2)
            toks = self.files[f2]
            if toks[b] == ("ident", "Enum"):
                e = atom_end(toks, b + 1)
                inner = strip_parens(toks[b + 1:e])
                return "enum " + ocaml_unescape(inner[0][1])
            e = b
            # type alias: take the application up to the next top-level let
            _, pos2, e = parse_app(toks, b - 1, stop_unit=False)
            return self.ty(f2, i2, toks[b:e], depth + 1)
        if v == "Ref":
            return self.cls_name(ts[1][1]) + " ref"
        if v == "Record":
            return self.cls_name(ts[1][1]) + " record"
        if v == "Set":
            return self.ty(fn, pos, ts[1:], depth + 1) + " set"
        if v == "Option":
            return self.ty(fn, pos, ts[1:], depth + 1) + " option"
        if v == "Map":
            inner = strip_parens(ts[1:])
            a, b = split_top(inner, ",")
            return "(%s -> %s) map" % (self.ty(fn, pos, a, depth + 1),
                                       self.ty(fn, pos, b, depth + 1))
        if v == "Enum":
            inner = strip_parens(ts[1:])
            return "enum " + ocaml_unescape(inner[0][1])
        die("cannot read type %r" % (ts[:6],))

    # -- values ------------------------------------------------------------
    def value(self, ts):
        """An api_value (VString "x", VBool b, ...) -> JSON value."""
        ts = strip_parens(ts)
        if ts and ts[0] == ("ident", "Some"):
            ts = strip_parens(ts[1:])
        if not ts or ts == [("ident", "None")]:
            return None
        k, v = ts[0]
        arg = strip_parens(ts[1:])
        if v == "VString":
            if arg[0][0] == "str":
                return ocaml_unescape(arg[0][1])
            if arg[0][1] == "null_ref":
                return "OpaqueRef:NULL"
        if v == "VRef":
            if arg[0][0] == "str":
                s = ocaml_unescape(arg[0][1])
                return s if s else "OpaqueRef:NULL"
            return "OpaqueRef:NULL"
        if v == "VBool":
            return arg[0][1] == "true"
        if v == "VInt":
            t = arg[0][1]
            if t.endswith("L"):
                return int(t[:-1].replace("_", ""))
            if t in ("Int64.zero",):
                return 0
            if t in CONSTANTS:
                return CONSTANTS[t]
            die("unknown int constant %s" % t)
        if v == "VFloat":
            t = arg[0][1]
            try:
                return float(t.rstrip("."))
            except ValueError:
                if t in CONSTANTS:
                    return CONSTANTS[t]
                die("unknown float constant %s" % t)
        if v == "VEnum":
            return ocaml_unescape(arg[0][1])
        if v == "VMap" or v == "VSet":
            items = list_items(arg) or []
            if v == "VSet":
                return [self.value(x) for x in items]
            out = {}
            for x in items:
                kk, vv = split_top(strip_parens(x), ",")
                out[str(self.value(kk))] = self.value(vv)
            return out
        if v == "VDateTime":
            t = arg[0][1]
            if t.endswith("epoch") or t.endswith("never"):
                return "19700101T00:00:00Z"
        die("cannot read value %r" % (ts[:6],))

    # -- calls -------------------------------------------------------------
    def find_call(self, fn, i):
        """From a let-binding index, find the 'call' application."""
        toks = self.files[fn]
        b = self.body(fn, i)
        j = b
        limit = min(len(toks), b + 4000)
        while j < limit:
            if toks[j] == ("ident", "call"):
                return j
            j += 1
        return None

    def read_call(self, fn, ci):
        toks = self.files[fn]
        labels, _, _ = parse_app(toks, ci)
        c = {}
        c["name"] = ocaml_unescape(labels["name"][0][1])
        flags = ["Session", "Async"]
        if "flags" in labels:
            flags = [v[1:] for k, v in labels["flags"] if k == "poly"]
        c["flags"] = flags
        c["hidden"] = "hide_from_docs" in labels and \
            labels["hide_from_docs"] == [("ident", "true")]
        c["pool_internal"] = "pool_internal" in labels and \
            labels["pool_internal"] == [("ident", "true")]
        c["db_only"] = "db_only" in labels and \
            labels["db_only"] == [("ident", "true")]
        params = []
        if "versioned_params" in labels:
            params = self.read_vparams(fn, ci, labels["versioned_params"])
        elif "params" in labels:
            items = self.list_of(fn, ci, labels["params"])
            for it in items:
                it = strip_parens(it)
                if len(it) == 1 and it[0][0] == "ident":
                    r = self.resolve(fn, ci, it[0][1])
                    if r:
                        toks2 = self.files[r[0]]
                        b = self.body(*r)
                        it = toks2[b:atom_end(toks2, b)]
                parts = split_top(strip_parens(it), ",")
                if len(parts) < 2:
                    die("%s: cannot read param %r" % (c["name"], it[:10]))
                pn = parts[1][0]
                params.append({"name": ocaml_unescape(pn[1]) if pn[0] == "str"
                               else self.cls_name(pn[1]),
                               "type": self.ty(fn, ci, parts[0])})
        c["params"] = params
        if "result" in labels:
            parts = split_top(strip_parens(labels["result"]), ",")
            c["result"] = self.ty(fn, ci, parts[0])
        else:
            c["result"] = "void"
        errs = []
        if "errs" in labels:
            for k, v in labels["errs"]:
                if k == "ident" and v not in ("Api_errors",):
                    errs.append(v.split(".")[-1])
        c["errs"] = errs
        c["roles"] = self.roles(fn, ci, labels.get("allowed_roles"))
        c["lifecycle"] = self.lifecycle(labels)
        return c

    def list_of(self, fn, pos, ts):
        items = list_items(ts)
        if items is not None:
            return items
        ts = strip_parens(ts)
        # x :: rest
        parts = split_top(ts, "::")
        if len(parts) > 1:
            return parts[:-1] + self.list_of(fn, pos, parts[-1])
        # a @ b concatenation or a named list
        parts = split_top(ts, "@")
        if len(parts) > 1:
            out = []
            for p in parts:
                out += self.list_of(fn, pos, p)
            return out
        if ts[0][0] == "ident":
            r = self.resolve(fn, pos, ts[0][1])
            if r:
                f2, i2 = r
                toks = self.files[f2]
                b = self.body(f2, i2)
                e = atom_end(toks, b)
                return self.list_of(f2, i2, toks[b:e])
        die("cannot read list %r" % (ts[:8],))

    def read_vparams(self, fn, pos, ts):
        out = []
        for it in self.list_of(fn, pos, ts):
            it = strip_parens(it)
            fn2, pos2 = fn, pos
            if len(it) == 1 and it[0][0] == "ident":
                r = self.resolve(fn, pos, it[0][1])
                if r:
                    fn2, pos2 = r
                    toks = self.files[fn2]
                    b = self.body(fn2, pos2)
                    it = strip_parens(toks[b:atom_end(toks, b)])
            if it[0] == ("punct", "{"):
                fields = {}
                inner = it[1:-1]
                if len(inner) > 2 and inner[1] == ("ident", "with"):
                    r = self.resolve(fn2, pos2, inner[0][1])
                    toks = self.files[r[0]]
                    b = self.body(*r)
                    base = strip_parens(toks[b:atom_end(toks, b)])
                    for fld in split_top(base[1:-1], ";"):
                        if len(fld) >= 2 and fld[1] == ("punct", "="):
                            fields[fld[0][1]] = fld[2:]
                    fn2, pos2 = r
                    inner = inner[2:]
                for fld in split_top(inner, ";"):
                    if len(fld) >= 2 and fld[1] == ("punct", "="):
                        fields[fld[0][1]] = fld[2:]
                p = {"name": ocaml_unescape(fields["param_name"][0][1]),
                     "type": self.ty(fn2, pos2, fields["param_type"])}
                if "param_name" not in fields:
                    die("bad param record %r" % (it[:12],))
                d = fields.get("param_default")
                if d and strip_parens(d) != [("ident", "None")]:
                    p["default"] = self.value(d)
                out.append(p)
            else:
                die("cannot read versioned param %r" % (it[:8],))
        return out

    def roles(self, fn, pos, ts):
        if ts is None:
            return None
        ts = strip_parens(ts)
        out = []
        for part in split_top(ts, "++"):
            part = strip_parens(part)
            name = part[0][1].split(".")[-1]
            if name in ROLE_SETS:
                out += ROLE_SETS[name]
            else:
                return None
        return [r for r in ROLES if r in out]

    @staticmethod
    def lifecycle(labels):
        state = "published"
        if labels.get("lifecycle") == [("punct", "["), ("punct", "]")]:
            return None  # not released
        if "lifecycle" in labels:
            for k, v in labels["lifecycle"]:
                if k == "ident" and v.split(".")[-1] in (
                        "Published", "Prototyped", "Deprecated", "Removed"):
                    state = v.split(".")[-1].lower()
        if "internal_deprecated_since" in labels and \
                strip_parens(labels["internal_deprecated_since"]) != [("ident", "None")] \
                and state == "published":
            state = "deprecated"
        return state

    def enum_values(self, name):
        for fn, toks in self.files.items():
            for i, t in enumerate(toks):
                if t == ("ident", "Enum") and i + 2 < len(toks) and \
                        toks[i + 1] == ("punct", "(") and toks[i + 2] == ("str", '"%s"' % name):
                    e = atom_end(toks, i + 1)
                    inner = split_top(toks[i + 2:e - 1], ",")
                    return [ocaml_unescape(strip_parens(x)[0][1])
                            for x in list_items(inner[1])]
        return None

    # -- objects -----------------------------------------------------------
    def objects(self):
        """class name -> dict(labels, calls...)"""
        objs = {}
        for fn, toks in self.files.items():
            for i, t in enumerate(toks):
                if t != ("ident", "create_obj") or toks[i - 1] == ("ident", "let"):
                    continue
                labels, _, _ = parse_app(toks, i)
                if "name" not in labels:
                    continue
                name = self.cls_name(labels["name"][0][1])
                o = {"file": fn, "pos": i}
                o["gen_cd"] = labels.get("gen_constructor_destructor") == [("ident", "true")]
                fc = labels.get("force_custom_actions")
                o["force_custom"] = None
                if fc and strip_parens(fc) != [("ident", "None")]:
                    o["force_custom"] = strip_parens(fc)[-1][1]
                o["persist"] = labels.get("persist", [("", "")])[0][1]
                o["in_db"] = labels.get("in_db") == [("ident", "true")]
                msgs = []
                for it in self.list_of(fn, i, labels["messages"]):
                    it = strip_parens(it)
                    if len(it) != 1 or it[0][0] != "ident":
                        die("%s: message item %r" % (name, it))
                    r = self.resolve(fn, i, it[0][1])
                    if not r:
                        die("%s: cannot resolve %s" % (name, it[0][1]))
                    ci = self.find_call(*r)
                    if ci is None:
                        die("%s: no call for %s" % (name, it[0][1]))
                    CTX[:] = ["%s.%s (%s:%d)" % (name, it[0][1], r[0], r[1])]
                    msgs.append(self.read_call(r[0], ci))
                o["messages"] = msgs
                objs[name] = o
            # objects written as a record literal { ...; name= _event; ... }
            for i, t in enumerate(toks):
                if t == ("ident", "name") and toks[i + 1] == ("punct", "=") \
                        and toks[i + 2][0] == "ident" and toks[i + 2][1].startswith("_") \
                        and toks[i - 1] in (("punct", ";"), ("punct", "{")):
                    name = self.cls_name(toks[i + 2][1])
                    if name in objs:
                        continue
                    j = i
                    while toks[j] != ("ident", "messages"):
                        j += 1
                    e = atom_end(toks, j + 2)
                    msgs = []
                    for it in self.list_of(fn, j, toks[j + 2:e]):
                        r = self.resolve(fn, j, it[0][1])
                        msgs.append(self.read_call(r[0], self.find_call(*r)))
                    objs[name] = {"file": fn, "pos": i, "gen_cd": False,
                                  "force_custom": None, "persist": "PersistNothing",
                                  "in_db": False, "messages": msgs}
        return objs

    def internal_fields(self, objs):
        """Fields marked ~internal_only:true, attributed to the nearest
        preceding create_obj in the same file (or the class that lists the
        helper)."""
        out = []
        starts = sorted((o["file"], o["pos"], n) for n, o in objs.items())
        for fn, toks in self.files.items():
            for i, t in enumerate(toks):
                if t != ("label", "~internal_only:") or toks[i + 1] != ("ident", "true"):
                    continue
                j = i
                while j > 0 and toks[j][1] not in ("field", "field'"):
                    j -= 1
                labels, pos, _ = parse_app(toks, j, stop_unit=False)
                strs = [p[0][1] for p in pos if p and p[0][0] == "str"]
                fname = ocaml_unescape(strs[0])
                cls = None
                for f2, p2, n in starts:
                    if f2 == fn and p2 < i:
                        cls = n
                ty = self.ty(fn, j, labels["ty"]) if "ty" in labels else "string"
                qual = strip_parens(labels.get("qualifier", [("ident", "RW")]))[0][1]
                d = self.value(labels["default_value"]) if "default_value" in labels else None
                out.append({"class": cls, "name": fname, "type": ty,
                            "qualifier": qual, "default": d,
                            "lifecycle": self.lifecycle(labels)})
        return out


# ---------------------------------------------------------------------------

def parse_default(text, ty):
    """A JSON 'default' text -> JSON value, given the field type."""
    t = text.strip()
    if ty == "string" or ty.endswith(" ref") and t.startswith('"'):
        if t.startswith('"') and t.endswith('"'):
            return json.loads(t)
    if ty.endswith(" ref"):
        if t in ("OpaqueRef:NULL", "Null", '""', ""):
            return "OpaqueRef:NULL"
        return t
    if ty == "int":
        return int(t)
    if ty == "float":
        return float(t)
    if ty == "bool":
        return t == "true"
    if ty == "datetime":
        return t
    if ty.startswith("enum "):
        return t.strip('"')
    if ty.endswith(" set"):
        if t == "{}":
            return []
        inner = t[1:-1].strip()
        return [parse_default(x.strip(), ty[:-4]) for x in split_default(inner)]
    if ty.endswith(" map"):
        if t == "{}":
            return {}
        inner = t[1:-1]
        out = {}
        for kv in split_default(inner):
            k, v = kv.split("->", 1)
            out[json.loads(k.strip())] = json.loads(v.strip())
        return out
    if ty.endswith(" option"):
        return None
    die("cannot convert default %r of type %s" % (text, ty))


def split_default(s):
    out, cur, q = [], "", False
    for ch in s:
        if ch == '"':
            q = not q
        if ch == "," and not q:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def column_of(cls, fname):
    for scope in (cls, "*"):
        for ns, members in NAMESPACES.get(scope, {}).items():
            for m in members:
                if fname == ns + "_" + m:
                    return ns + "__" + m
    return fname


def lc_of(j):
    st = LC_STATES[j["state"]]
    return st


def transitions_of(j):
    return [[t["transition"], t["release"]] for t in j.get("transitions", [])]


IMPLICIT_KINDS = [
    ("get_all_records_where", "get_all_records_where"),
    ("get_all_records", "get_all_records"),
    ("get_all_where", "get_all_where"),
    ("get_all", "get_all"),
    ("get_by_uuid", "get_by_uuid"),
    ("get_by_name_label", "get_by_name_label"),
    ("get_record", "get_record"),
    ("create", "create"),
    ("destroy", "destroy"),
]


def implicit_kind(msg, fields):
    n = msg["name"]
    for name, kind in IMPLICIT_KINDS:
        if n == name:
            return kind, None
    fnames = {f["name"] for f in fields}
    for prefix, kind in (("add_to_", "map_add"), ("remove_from_", "map_remove"),
                         ("get_", "get_field"), ("set_", "set_field"),
                         ("add_", "set_add"), ("remove_", "set_remove")):
        if n.startswith(prefix) and n[len(prefix):] in fnames:
            return kind, n[len(prefix):]
    die("cannot classify implicit message %s" % n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--ocaml", required=True, help="the original's ocaml/ dir")
    ap.add_argument("--out", default="idl")
    ap.add_argument("--source-commit", default="")
    a = ap.parse_args()

    with open(a.json) as f:
        jclasses = json.load(f)
    src = OCamlSource(os.path.join(a.ocaml, "idl"))
    objs = src.objects()

    # error wire strings
    api_errors = {}
    with open(os.path.join(a.ocaml, "xapi-consts", "api_errors.ml")) as f:
        etext = f.read()
    for m in re.finditer(r'\nlet\s+([A-Za-z_0-9]+)\s*=\s*(.*?)(?=\n\S)', etext, re.S):
        parts = [x.strip() for x in m.group(2).split("^")]
        val = ""
        for x in parts:
            x = re.sub(r"^add_error\s*", "", x)
            if x.startswith('"') and x.endswith('"'):
                val += x[1:-1]
            elif x in api_errors:
                val += api_errors[x]
            else:
                val = None
                break
        if val and re.fullmatch(r"[A-Z_0-9]+", val):
            api_errors[m.group(1)] = val

    warnings = []
    classes = []
    enums = {}
    internal = src.internal_fields(objs)

    for jc in jclasses:
        cname = jc["name"]
        o = objs.get(cname)
        if o is None:
            die("class %s not in the OCaml datamodel" % cname)
        fields = []
        for jf in jc["fields"]:
            if cname == "event" and jf["name"] == "snapshot":
                continue  # synthetic, not a field
            f = {"name": jf["name"], "column": column_of(cname, jf["name"]),
                 "type": jf["type"],
                 "qualifier": {"RW": "rw", "RO/runtime": "ro_runtime",
                               "RO/constructor": "ro_constructor"}[jf["qualifier"]],
                 "lifecycle": lc_of(jf["lifecycle"])}
            if "default" in jf:
                f["default"] = parse_default(jf["default"], jf["type"])
            fields.append(f)
        for inf in internal:
            if inf["class"] != cname:
                continue
            if any(f["name"] == inf["name"] for f in fields):
                continue
            d = inf["default"]
            if d is None:
                ty = inf["type"]
                d = {"string": "", "int": 0, "bool": False, "float": 0.0}.get(ty)
                if d is None and ty.endswith(" ref"):
                    d = "OpaqueRef:NULL"
                if d is None and ty.endswith(" set"):
                    d = []
                if d is None and ty.endswith(" map"):
                    d = {}
            fields.append({"name": inf["name"], "column": inf["name"],
                           "type": inf["type"], "internal": True,
                           "qualifier": {"RW": "rw", "StaticRO": "ro_constructor",
                                         "DynamicRO": "ro_runtime"}[inf["qualifier"]],
                           "lifecycle": inf["lifecycle"] or lc_of(jc["lifecycle"]),
                           "default": d})
        for e in jc.get("enums", []):
            enums[e["name"]] = [v["name"] for v in e["values"]]

        ocalls = {}
        for c in o["messages"]:
            ocalls.setdefault(c["name"], c)
        msgs = []
        required = None
        for jm in jc["messages"]:
            m = {"name": jm["name"], "lifecycle": lc_of(jm["lifecycle"]),
                 "roles": jm["roles"],
                 "result": jm["result"][0] if jm["result"][0] != "an event batch"
                 else "event_batch",
                 "errors": [e["name"] for e in jm["errors"]]}
            params = [{"name": p["name"], "type": p["type"]} for p in jm["params"]]
            session = bool(params) and params[0]["name"] == "session_id" \
                and params[0]["type"] == "session ref"
            if jm["implicit"]:
                kind, fld = implicit_kind(jm, fields)
                m["kind"] = kind
                if fld:
                    m["field"] = fld
                m["async"] = kind in ("create", "destroy") and \
                    cname not in NO_ASYNC_CLASSES
                # operation_requires_side_effect in the original's generator
                ov = kind in ("create", "destroy")
                fc = o["force_custom"]
                if fc == "RW":
                    ov = True
                elif fc and kind not in ("set_field", "map_add", "map_remove",
                                         "set_add", "set_remove", "create",
                                         "destroy"):
                    ov = True
                if cname == "role":
                    # cxapi keeps the static roles as database rows, so the
                    # generic engine serves their getters and queries.
                    ov = False
                if kind == "set_field" and (cname, fld) in (
                        ("VM", "is_a_template"), ("VM", "xenstore_data")):
                    ov = True  # ~effect:true fields
                m["overridden"] = ov
                if kind == "create":
                    mm = re.search(r"The constructor args are: (.*) \(\* = non-optional\)",
                                   jm["description"])
                    if mm:
                        required = [x.strip()[:-1] for x in mm.group(1).split(",")
                                    if x.strip().endswith("*")]
            else:
                m["kind"] = "explicit"
                c = ocalls.get(jm["name"])
                if c is None:
                    die("%s.%s not found in OCaml" % (cname, jm["name"]))
                m["async"] = "Async" in c["flags"] and cname not in NO_ASYNC_CLASSES
                # defaults: match by position and name
                op = c["params"]
                offs = 1 if session else 0
                for i, p in enumerate(params[offs:]):
                    if i < len(op) and op[i]["name"] == p["name"]:
                        if "default" in op[i]:
                            p["default"] = op[i]["default"]
                    else:
                        warnings.append("param mismatch %s.%s %s" % (cname, jm["name"], p["name"]))
                if c["pool_internal"]:
                    m["pool_internal"] = True
            m["session"] = session
            m["params"] = params
            msgs.append(m)

        # hidden messages (not in the JSON)
        jnames = {jm["name"] for jm in jc["messages"]}
        for c in o["messages"]:
            if c["name"] in jnames or c["db_only"] or c["lifecycle"] is None:
                continue
            jnames.add(c["name"])
            if not c["hidden"]:
                warnings.append("%s.%s: not hidden but missing from JSON" % (cname, c["name"]))
            session = "Session" in c["flags"]
            params = ([{"name": "session_id", "type": "session ref"}] if session else []) + c["params"]
            roles = c["roles"]
            if roles is None:
                warnings.append("%s.%s: roles unknown, using pool-admin" % (cname, c["name"]))
                roles = ["pool-admin"]
            errs = [api_errors[e] for e in c["errs"] if e in api_errors]
            m = {"name": c["name"], "kind": "explicit", "doc_hidden": True,
                 "lifecycle": c["lifecycle"], "roles": roles,
                 "result": c["result"], "errors": errs, "session": session,
                 "async": "Async" in c["flags"] and cname not in NO_ASYNC_CLASSES,
                 "params": params}
            if c["pool_internal"]:
                m["pool_internal"] = True
            msgs.append(m)
        # hidden implicit where-queries for classes with get_all
        ga = [m for m in msgs if m["name"] == "get_all_records"]
        if ga and not any(m["name"] == "get_all_records_where" for m in msgs):
            base = ga[0]
            for nm, res, hid in (("get_all_records_where", "(%s ref -> %s record) map" % (cname, cname), False),
                                 ("get_all_where", "%s ref set" % cname, True)):
                m = {"name": nm, "kind": nm, "doc_hidden": True,
                     "lifecycle": base["lifecycle"], "roles": base["roles"],
                     "result": res, "errors": [], "session": True, "async": False,
                     "overridden": bool(o["force_custom"]) and cname != "role",
                     "params": [{"name": "session_id", "type": "session ref"},
                                {"name": "expr", "type": "string"}]}
                if hid:
                    m["extension"] = True  # not in the original; ours
                msgs.append(m)

        if required is not None:
            fn = {f["name"] for f in fields}
            for r in required:
                if r not in fn:
                    die("%s: required %s not a field" % (cname, r))
            for f in fields:
                if f["name"] in required:
                    f["required"] = True

        cl = {"name": cname, "lifecycle": lc_of(jc["lifecycle"]),
              "in_db": cname not in NOT_IN_DB,
              "persist": cname not in NOT_IN_DB and cname not in NOT_PERSISTED,
              "fields": fields, "messages": msgs}
        classes.append(cl)

    # enums used only by messages/fields taken from the OCaml source
    used = set()
    for cl in classes:
        for f in cl["fields"]:
            used |= set(re.findall(r"enum (\w+)", f["type"]))
        for m in cl["messages"]:
            used |= set(re.findall(r"enum (\w+)", m["result"]))
            for p in m["params"]:
                used |= set(re.findall(r"enum (\w+)", p["type"]))
    for en in sorted(used - set(enums)):
        vals = src.enum_values(en)
        if vals is None:
            die("enum %s not found" % en)
        enums[en] = vals

    # relations
    relations = []
    dm = open(os.path.join(a.ocaml, "idl", "datamodel.ml")).read()
    body = dm[dm.index("let all_relations"):]
    body = body[:body.index("\nlet ")]
    body = re.sub(r"\(\*.*?\*\)", "", body, flags=re.S)
    for m in re.finditer(r'\(\(\s*(_\w+)\s*,\s*"(\w+)"\s*\)\s*,\s*\(\s*(_\w+)\s*,\s*"(\w+)"\s*\)\s*\)', body):
        a1, f1, a2, f2 = src.cls_name(m.group(1)), m.group(2), src.cls_name(m.group(3)), m.group(4)
        relations.append([a1, f1, a2, f2])

    # errors
    errors = []
    etoks = tokenize(open(os.path.join(a.ocaml, "idl", "datamodel_errors.ml")).read())
    for i, t in enumerate(etoks):
        if t == ("ident", "error") and etoks[i + 1][0] == "ident" and \
                etoks[i + 1][1].startswith("Api_errors."):
            name = etoks[i + 1][1].split(".")[-1]
            code = api_errors.get(name)
            if code is None:
                die("error constant %s unknown" % name)
            e = atom_end(etoks, i + 2)
            params = [ocaml_unescape(v) for k, v in etoks[i + 2:e] if k == "str"]
            errors.append({"code": code, "params": params})
    seen = set()
    errors = [e for e in errors if not (e["code"] in seen or seen.add(e["code"]))]
    ecodes = {e["code"] for e in errors}
    for cl in classes:
        for m in cl["messages"]:
            for e in m["errors"]:
                if e not in ecodes:
                    warnings.append("error %s used by %s.%s not in catalogue" % (e, cl["name"], m["name"]))
                    errors.append({"code": e, "params": []})
                    ecodes.add(e)

    common = open(os.path.join(a.ocaml, "idl", "datamodel_common.ml")).read()
    smaj = re.search(r"let schema_major_vsn = (\d+)", common).group(1)
    smin = re.search(r"let schema_minor_vsn = (\d+)", common).group(1)
    amaj = re.search(r"let api_version_major = (\d+)L", common).group(1)
    amin = re.search(r"let api_version_minor = (\d+)L", common).group(1)

    os.makedirs(a.out, exist_ok=True)
    write_classes(os.path.join(a.out, "classes.json"), classes)
    with open(os.path.join(a.out, "errors.json"), "w") as f:
        f.write('{"errors": [\n')
        f.write(",\n".join(json.dumps(e, sort_keys=True) for e in errors))
        f.write("\n]}\n")
    with open(os.path.join(a.out, "extras.json"), "w") as f:
        f.write('{"roles": %s,\n' % json.dumps(ROLES))
        f.write('"enums": {\n')
        f.write(",\n".join("%s: %s" % (json.dumps(k), json.dumps(v))
                           for k, v in sorted(enums.items())))
        f.write("\n},\n")
        f.write('"relations": [\n')
        f.write(",\n".join(json.dumps(r) for r in relations))
        f.write("\n],\n")
        f.write('"map_keys_roles": %s}\n' % json.dumps(MAP_KEYS_ROLES, sort_keys=True))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump({"api_version": [int(amaj), int(amin)],
                   "schema_version": "%s.%s" % (smaj, smin),
                   "source": {"xenapi.json": "doc/data/xenapi.json (API 2.21 snapshot)",
                              "ocaml_commit": a.source_commit}},
                  f, sort_keys=True, indent=1)
        f.write("\n")
    for w in warnings:
        sys.stderr.write("warning: %s\n" % w)


def write_classes(path, classes):
    with open(path, "w") as f:
        f.write('{"classes": [\n')
        for ci, c in enumerate(classes):
            head = {k: v for k, v in c.items() if k not in ("fields", "messages")}
            f.write("{%s,\n" % json.dumps(head, sort_keys=True)[1:-1])
            f.write(' "fields": [\n')
            f.write(",\n".join("  " + json.dumps(x, sort_keys=True) for x in c["fields"]))
            f.write('\n ],\n "messages": [\n')
            f.write(",\n".join("  " + json.dumps(x, sort_keys=True) for x in c["messages"]))
            f.write("\n ]}%s\n" % ("," if ci + 1 < len(classes) else ""))
        f.write("]}\n")


if __name__ == "__main__":
    main()
