#!/usr/bin/env python3
"""Check the iotwatch Grafana dashboard against a list of metric names.

Usage: check_dashboard.py METRIC_NAMES_FILE [DASHBOARD_JSON]

METRIC_NAMES_FILE has one metric name per line (blank lines and lines starting with
'#' are ignored; only the first word of a line counts). DASHBOARD_JSON defaults to
iotwatch.json next to this script. A histogram or summary listed by its base name
also allows its _bucket, _sum and _count series.

Checks:
  - every panel (rows excluded) has a datasource, and so has every target;
  - panel ids (rows included) are unique;
  - every PromQL expression (panel targets, template variable queries) uses only
    metric names from the list;
  - time series, stat and table panels set a unit.
Exit status 0 when all checks pass, 1 otherwise. Standard library only.
"""
import json
import os
import re
import sys

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
            "bool", "and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
IDENT = re.compile(r"(?<![A-Za-z0-9_:$.])[A-Za-z_:][A-Za-z0-9_:]*")
MODIFIER = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
LABEL_VALUES = re.compile(r"label_values\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*[{,]")


def metric_names(expr):
    """Metric names referenced by a PromQL expression (best effort, no full parser)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = MODIFIER.sub(" ", e)  # by (...), on (...), group_left (...)
    names = set()
    for m in IDENT.finditer(e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue  # keyword, function or aggregation
        names.add(word)
    return names


def template_query_names(var):
    q = var.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    if not isinstance(q, str) or var.get("type") != "query":
        return set()
    m = LABEL_VALUES.search(q)
    if m:
        return {m.group(1)}
    if q.startswith("label_values(") or q.startswith("label_names("):
        return set()
    inner = re.match(r"\s*query_result\s*\((.*)\)\s*$", q, re.S)
    return metric_names(inner.group(1) if inner else q)


def load_names(path):
    allowed = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if name:
                allowed.add(name.group(0))
    for n in list(allowed):
        allowed.update({n + "_bucket", n + "_sum", n + "_count"})
    return allowed


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def check(dash, allowed):
    errors = []
    ids = {}
    for p in all_panels(dash.get("panels", [])):
        title = p.get("title", "?")
        pid = p.get("id")
        if pid is None:
            errors.append(f"panel {title!r}: no id")
        elif pid in ids:
            errors.append(f"panel {title!r}: id {pid} already used by {ids[pid]!r}")
        else:
            ids[pid] = title
        if p.get("type") == "row":
            continue
        if not p.get("datasource"):
            errors.append(f"panel {title!r}: no datasource")
        if p.get("type") in ("timeseries", "stat", "table", "gauge", "bargauge"):
            if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                errors.append(f"panel {title!r}: no unit")
        targets = p.get("targets", [])
        if not targets:
            errors.append(f"panel {title!r}: no targets")
        for t in targets:
            ref = t.get("refId", "?")
            if not t.get("datasource"):
                errors.append(f"panel {title!r} target {ref}: no datasource")
            expr = t.get("expr", "")
            if not expr:
                errors.append(f"panel {title!r} target {ref}: no expr")
            for name in sorted(metric_names(expr) - allowed):
                errors.append(f"panel {title!r} target {ref}: unknown metric {name}")
    for var in dash.get("templating", {}).get("list", []):
        for name in sorted(template_query_names(var) - allowed):
            errors.append(f"variable {var.get('name')!r}: unknown metric {name}")
    return errors, len(ids)


def main(argv):
    if len(argv) not in (2, 3) or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    dash_path = argv[2] if len(argv) == 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "iotwatch.json")
    allowed = load_names(argv[1])
    if not allowed:
        print(f"{argv[1]}: no metric names", file=sys.stderr)
        return 2
    with open(dash_path, encoding="utf-8") as f:
        dash = json.load(f)
    errors, n = check(dash, allowed)
    for e in errors:
        print(f"{dash_path}: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{dash_path}: OK ({n} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
