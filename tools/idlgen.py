#!/usr/bin/env python3
"""idlgen.py - turn idl/*.json into the C tables declared in src/api/idl.h.

    python3 tools/idlgen.py --idl idl --out build/idl_gen.c

Python 3 standard library only.  Run by meson at build time; the output is
never committed.  See docs/idl.md for the input format.
"""
import argparse
import json
import os
import sys

KINDS = {
    "explicit": "MK_EXPLICIT", "get_field": "MK_GET_FIELD",
    "set_field": "MK_SET_FIELD", "map_add": "MK_MAP_ADD",
    "map_remove": "MK_MAP_REMOVE", "set_add": "MK_SET_ADD",
    "set_remove": "MK_SET_REMOVE", "get_by_uuid": "MK_GET_BY_UUID",
    "get_by_name_label": "MK_GET_BY_NAME_LABEL",
    "get_record": "MK_GET_RECORD", "get_all": "MK_GET_ALL",
    "get_all_records": "MK_GET_ALL_RECORDS",
    "get_all_where": "MK_GET_ALL_WHERE",
    "get_all_records_where": "MK_GET_ALL_RECORDS_WHERE",
    "create": "MK_CREATE", "destroy": "MK_DESTROY",
}
LC = {"published": "LC_PUBLISHED", "prototyped": "LC_PROTOTYPED",
      "deprecated": "LC_DEPRECATED", "removed": "LC_REMOVED"}
QUAL = {"rw": "Q_RW", "ro_constructor": "Q_RO_CONSTRUCTOR",
        "ro_runtime": "Q_RO_RUNTIME"}
BASE = {"void": "TY_VOID", "string": "TY_STRING", "int": "TY_INT",
        "float": "TY_FLOAT", "bool": "TY_BOOL", "datetime": "TY_DATETIME",
        "event_batch": "TY_EVENT_BATCH"}
ROLE_ENUM = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
             "vm-operator", "client-cert", "read-only"]


def fail(msg):
    sys.stderr.write("idlgen: %s\n" % msg)
    sys.exit(1)


def cstr(s):
    if s is None:
        return "NULL"
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif o < 0x20 or o == 0x7f:
            out.append("\\%03o" % o)
        elif o > 0x7f:
            out.append("".join("\\%03o" % b for b in ch.encode("utf-8")))
        elif ch == "?":
            out.append("\\?")  # no trigraphs
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def jtext(v):
    return json.dumps(v, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False)


def split_map(inner):
    """'A -> B' at paren depth 0."""
    depth = 0
    for i in range(len(inner)):
        c = inner[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and inner.startswith(" -> ", i):
            return inner[:i], inner[i + 4:]
    fail("bad map type (%s)" % inner)


class Types:
    def __init__(self, cls_index, enum_index):
        self.cls_index = cls_index
        self.enum_index = enum_index
        self.names = {}   # text -> C name
        self.defs = []    # C lines, dependencies first

    def get(self, text):
        text = text.strip()
        if text in self.names:
            return self.names[text]
        kind, cls, enm, a, b = None, -1, -1, None, None
        if text in BASE:
            kind = BASE[text]
        elif text.endswith(" set"):
            kind, a = "TY_SET", self.get(text[:-4])
        elif text.endswith(" option"):
            kind, a = "TY_OPTION", self.get(text[:-7])
        elif text.endswith(" map"):
            inner = text[:-4].strip()
            if not (inner.startswith("(") and inner.endswith(")")):
                fail("bad map type %s" % text)
            ka, kb = split_map(inner[1:-1])
            kind, a, b = "TY_MAP", self.get(ka), self.get(kb)
        elif text.endswith(" ref"):
            kind, cls = "TY_REF", self.cls_index.get(text[:-4], -1)
        elif text.endswith(" record"):
            kind = "TY_RECORD"
            cls = self.cls_index.get(text[:-7], -1)
            if cls < 0:
                fail("record of unknown class: %s" % text)
        elif text.startswith("enum "):
            kind = "TY_ENUM"
            enm = self.enum_index.get(text[5:], -1)
            if enm < 0:
                fail("unknown enum: %s" % text)
        else:
            fail("unknown type: %s" % text)
        name = "ty_%d" % len(self.names)
        self.defs.append(
            "static const struct idl_type %s = { .kind = %s, .cls = %d, "
            ".enm = %d, .a = %s, .b = %s, .text = %s };"
            % (name, kind, cls, enm, "&" + a if a else "NULL",
               "&" + b if b else "NULL", cstr(text)))
        self.names[text] = name
        return name


def load(idldir):
    def rd(n):
        with open(os.path.join(idldir, n)) as f:
            return json.load(f)
    return rd("classes.json")["classes"], rd("errors.json")["errors"], \
        rd("extras.json"), rd("meta.json")


def generate(idldir):
    classes, errors, extras, meta = load(idldir)
    if extras["roles"] != ROLE_ENUM:
        fail("roles in extras.json differ from enum idl_role in idl.h")
    cls_index = {c["name"]: i for i, c in enumerate(classes)}
    enum_names = sorted(extras["enums"])
    enum_index = {n: i for i, n in enumerate(enum_names)}
    T = Types(cls_index, enum_index)
    fidx = [{f["name"]: j for j, f in enumerate(c["fields"])} for c in classes]

    # relations: [A, ref field, B, set field]
    rel_many = {}  # (cls, field) -> (cls, field) of the ref side
    rel_one = {}   # (cls, field) -> (cls, field) of the set side
    for a, fa, b, fb in extras["relations"]:
        if a not in cls_index or b not in cls_index:
            continue
        ia, ib = cls_index[a], cls_index[b]
        if fa not in fidx[ia] or fb not in fidx[ib]:
            fail("relation field missing: %s.%s %s.%s" % (a, fa, b, fb))
        ta = classes[ia]["fields"][fidx[ia][fa]]["type"]
        tb = classes[ib]["fields"][fidx[ib][fb]]["type"]
        if ta.endswith(" ref") and tb.endswith(" ref set"):
            rel_one[(ia, fidx[ia][fa])] = (ib, fidx[ib][fb])
            rel_many[(ib, fidx[ib][fb])] = (ia, fidx[ia][fa])
        elif tb.endswith(" ref") and ta.endswith(" ref set"):
            rel_one[(ib, fidx[ib][fb])] = (ia, fidx[ia][fa])
            rel_many[(ia, fidx[ia][fa])] = (ib, fidx[ib][fb])
        # set <-> set relations (many-to-many) are stored on both sides

    out = []
    w = out.append
    w("/* Generated by tools/idlgen.py from the idl directory.  Do not edit. */")
    w('#include "api/idl.h"')
    w("#include <stddef.h>")
    w("")

    body = []
    b = body.append

    # enums
    for i, n in enumerate(enum_names):
        vals = extras["enums"][n]
        b("static const char *const enum_%d_values[] = { %s };"
          % (i, ", ".join(cstr(v) for v in vals)))
    b("const int idl_nenums = %d;" % len(enum_names))
    b("const struct idl_enum idl_enums[] = {")
    for i, n in enumerate(enum_names):
        b("\t{ %s, %d, enum_%d_values }," % (cstr(n), len(extras["enums"][n]), i))
    b("};")
    b("")

    # fields
    for ci, c in enumerate(classes):
        if not c["fields"]:
            continue
        for fj, f in enumerate(c["fields"]):
            kr = extras.get("map_keys_roles", {}).get("%s.%s" % (c["name"], f["name"]))
            if kr:
                b("static const struct idl_keyrole keyroles_%d_%d[] = {" % (ci, fj))
                for k in sorted(kr):
                    lowest = extras["roles"].index(kr[k])
                    # the role and every role above it, plus nothing internal
                    mask = sum(1 << i for i in range(lowest + 1)
                               if extras["roles"][i] != "client-cert" or kr[k] == "client-cert")
                    b("\t{ %s, 0x%02x }," % (cstr(k), mask))
                b("};")
        b("static const struct idl_field fields_%d[] = {" % ci)
        for fj, f in enumerate(c["fields"]):
            ty = T.get(f["type"])
            has_def = "default" in f
            rc, rf = rel_many.get((ci, fj), (-1, -1))
            mc, mf = rel_one.get((ci, fj), (-1, -1))
            b("\t{ .name = %s, .name_len = %d, .column = %s, .ty = &%s, .qual = %s, "
              ".lifecycle = %s, .internal = %s, .has_default = %s, "
              ".required = %s, .deflt = %s, .rel_cls = %d, .rel_field = %d, "
              ".many_cls = %d, .many_field = %d, .keyroles = %s, .nkeyroles = %d },"
              % (cstr(f["name"]), len(f["name"].encode()), cstr(f["column"]), ty, QUAL[f["qualifier"]],
                 LC[f["lifecycle"]], bool_c(f.get("internal")), bool_c(has_def),
                 bool_c(f.get("required")),
                 cstr(jtext(f["default"])) if has_def else "NULL",
                 rc, rf, mc, mf,
                 ("keyroles_%d_%d" % (ci, fj)) if extras.get("map_keys_roles", {}).get("%s.%s" % (c["name"], f["name"])) else "NULL",
                 len(extras.get("map_keys_roles", {}).get("%s.%s" % (c["name"], f["name"]), {}))))
        b("};")
    b("")
    b("const int idl_nclasses = %d;" % len(classes))
    b("const struct idl_class idl_classes[] = {")
    for ci, c in enumerate(classes):
        b("\t{ .name = %s, .lname = %s, .lifecycle = %s, .in_db = %s, "
          ".persist = %s, .nfields = %d, .fields = %s, .uuid_field = %d, "
          ".name_label_field = %d },"
          % (cstr(c["name"]), cstr(c["name"].lower()), LC[c["lifecycle"]],
             bool_c(c["in_db"]), bool_c(c["persist"]), len(c["fields"]),
             "fields_%d" % ci if c["fields"] else "NULL",
             fidx[ci].get("uuid", -1), fidx[ci].get("name_label", -1)))
    b("};")
    b("")

    # messages: params and error lists are shared when identical
    param_arrays, err_arrays = {}, {}
    msgs = []
    for ci, c in enumerate(classes):
        for m in c["messages"]:
            plist = []
            for p in m["params"]:
                plist.append((p["name"], T.get(p["type"]),
                              jtext(p["default"]) if "default" in p else None))
            key = tuple(plist)
            if key not in param_arrays and plist:
                param_arrays[key] = "params_%d" % len(param_arrays)
            ekey = tuple(m["errors"])
            if ekey not in err_arrays and ekey:
                err_arrays[ekey] = "errs_%d" % len(err_arrays)
            msgs.append((ci, c, m, key, ekey))
    for key, name in param_arrays.items():
        b("static const struct idl_param %s[] = {" % name)
        for pn, ty, d in key:
            b("\t{ %s, &%s, %s }," % (cstr(pn), ty, cstr(d)))
        b("};")
    for key, name in err_arrays.items():
        b("static const char *const %s[] = { %s };"
          % (name, ", ".join(cstr(e) for e in key)))
    b("")
    b("const int idl_nmsgs = %d;" % len(msgs))
    b("const struct idl_msg idl_msgs[] = {")
    seen = set()
    for ci, c, m, key, ekey in msgs:
        wire = "%s.%s" % (c["name"], m["name"])
        if wire in seen:
            fail("duplicate message %s" % wire)
        seen.add(wire)
        kind = KINDS[m["kind"]]
        field = -1
        if "field" in m:
            field = fidx[ci].get(m["field"], -1)
            if field < 0:
                fail("%s: unknown field %s" % (wire, m["field"]))
        roles = 0
        for r in m["roles"]:
            roles |= 1 << ROLE_ENUM.index(r)
        nreq = sum(1 for p in key if p[2] is None)
        # defaults only trail
        seen_def = False
        for p in key:
            if p[2] is not None:
                seen_def = True
            elif seen_def:
                fail("%s: required parameter after a default" % wire)
        b("\t{ .wire = %s, .perm = %s, .cls = %d, .field = %d, .kind = %s, "
          ".lifecycle = %s, .session = %s, .async = %s, .hidden = %s, "
          ".overridden = %s, .roles = 0x%02x, .nparams = %d, .nrequired = %d, "
          ".params = %s, .result = &%s, .nerrors = %d, .errors = %s },"
          % (cstr(wire), cstr(wire.lower()), ci, field, kind, LC[m["lifecycle"]],
             bool_c(m["session"]), bool_c(m["async"]),
             bool_c(m.get("extension")), bool_c(m.get("overridden")), roles,
             len(key), nreq, param_arrays.get(key, "NULL"),
             T.get(m["result"]), len(ekey), err_arrays.get(ekey, "NULL")))
    b("};")
    b("")

    # errors
    for i, e in enumerate(errors):
        if e["params"]:
            b("static const char *const error_%d_params[] = { %s };"
              % (i, ", ".join(cstr(p) for p in e["params"])))
    b("const int idl_nerrors = %d;" % len(errors))
    b("const struct idl_error idl_errors[] = {")
    for i, e in enumerate(errors):
        b("\t{ %s, %d, %s }," % (cstr(e["code"]), len(e["params"]),
                                 "error_%d_params" % i if e["params"] else "NULL"))
    b("};")
    b("")
    b("const char *const idl_role_names[ROLE_COUNT] = { %s };"
      % ", ".join(cstr(r) for r in ROLE_ENUM))
    b("const int idl_api_version_major = %d, idl_api_version_minor = %d;"
      % tuple(meta["api_version"]))
    b("const char *const idl_schema_version = %s;" % cstr(meta["schema_version"]))

    out += T.defs
    out.append("")
    out += body
    return "\n".join(out) + "\n"


def bool_c(v):
    return "true" if v else "false"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idl", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    text = generate(a.idl)
    d = os.path.dirname(a.out)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
