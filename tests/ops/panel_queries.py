#!/usr/bin/env python3
"""Every PromQL query of corral's Grafana dashboard, ready to run against a real Prometheus.

    panel_queries.py [DASHBOARD.json]                 # JSON lines: panel, refId, expr (substituted)
    panel_queries.py --check [DASHBOARD.json]         # structure + metric names (+ promtool syntax)
    panel_queries.py --query http://127.0.0.1:9090 [--require-data]   # run each, report series

Grafana variables are substituted the way Grafana would with defaults: `$__rate_interval` ->
1m, `$__interval` -> 15s, `$__range` -> 1h, multi-value template variables ($model, $backend)
-> `.*`, `${datasource}` left alone (it is not part of the query).

`--check` also asserts that every metric a query reads is one of the names in the "Metrics"
section of docs/OPERATIONS.md (the contract), that this list is exactly the set of names
src/metrics.rs registers, and, when promtool is on PATH, that every query parses (by feeding
them to `promtool check rules` as recording rules). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "corral.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
METRICS_RS = ROOT / "src" / "metrics.rs"

SUBSTITUTIONS = [
    (r"\$__rate_interval\b|\$\{__rate_interval\}", "1m"),
    (r"\$__interval\b|\$\{__interval\}", "15s"),
    (r"\$__range\b|\$\{__range\}", "1h"),
]
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan"}
KNOWN_PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "state-timeline", "text",
                     "heatmap", "piechart"}


def documented_metrics() -> set[str]:
    """The metric names of the table in docs/OPERATIONS.md's "Metrics" section."""
    m = re.search(r"^## Metrics\n(.*?)(?=^## )", OPERATIONS.read_text(), re.S | re.M)
    return set(re.findall(r"^\| `(corral_[a-z_]+)`", m.group(1), re.M)) if m else set()


def registered_metrics() -> set[str]:
    """The metric names src/metrics.rs registers (its string literals)."""
    return set(re.findall(r'"(corral_[a-z_]+)"', METRICS_RS.read_text()))


def substitute(expr: str, variables: list[str]) -> str:
    for pattern, value in SUBSTITUTIONS:
        expr = re.sub(pattern, value, expr)
    for name in variables:
        expr = re.sub(r"\$\{" + re.escape(name) + r"(:[a-z]+)?\}|\$" + re.escape(name) + r"\b", ".*", expr)
    return expr


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a small lexer, good for dashboard queries)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def base_metric(name: str, known: set[str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(dash: dict):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", []) or []


def template_vars(dash: dict) -> list[str]:
    return [v["name"] for v in dash.get("templating", {}).get("list", [])]


def queries(dash: dict) -> list[dict]:
    names = [v for v in template_vars(dash) if v != "datasource"]
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                out.append({"panel_id": p.get("id"), "panel": p.get("title"), "refId": t.get("refId"),
                            "expr": substitute(t["expr"], names), "raw": t["expr"]})
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append({"panel_id": None, "panel": f"variable {v['name']}", "refId": v["name"], "expr": q, "raw": q})
    return out


def overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def check(dash: dict, use_promtool: bool = True) -> list[str]:
    problems: list[str] = []
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        if key not in dash:
            problems.append(f"dashboard: missing top-level key {key!r}")
    if not isinstance(dash.get("schemaVersion"), int) or dash.get("schemaVersion", 0) < 36:
        problems.append("dashboard: schemaVersion must be an integer >= 36 (Grafana 9+)")
    variables = set(template_vars(dash)) | {"__rate_interval", "__interval", "__range"}
    ids, boxes = set(), []
    panels = list(all_panels(dash))
    if not panels:
        problems.append("dashboard: no panels")
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            problems.append(f"{where}: id missing or duplicated")
        ids.add(p.get("id"))
        if p.get("type") not in KNOWN_PANEL_TYPES:
            problems.append(f"{where}: unknown type {p.get('type')!r}")
        if not p.get("title"):
            problems.append(f"{where}: no title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g.get("x", 0) + g.get("w", 0) > 24 or g.get("w", 0) < 1 or g.get("h", 0) < 1:
            problems.append(f"{where}: bad gridPos {g}")
        else:
            for other_where, og in boxes:
                if overlaps(g, og):
                    problems.append(f"{where}: overlaps {other_where}")
            boxes.append((where, g))
        if p.get("type") in ("row", "text"):
            continue
        ds = p.get("datasource") or {}
        if ds.get("uid") not in ("${datasource}", "$datasource") or ds.get("type") != "prometheus":
            problems.append(f"{where}: datasource must be the $datasource Prometheus variable")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{where}: refIds missing or duplicated")
        for t in targets:
            if not (t.get("expr") or "").strip():
                problems.append(f"{where} {t.get('refId')}: empty expr")
            for used in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", t.get("expr", "")):
                if used not in variables:
                    problems.append(f"{where} {t.get('refId')}: unknown variable ${used}")
    known = documented_metrics()
    if not known:
        problems.append(f"{OPERATIONS.relative_to(ROOT)}: no metric table in a '## Metrics' section")
    registered = registered_metrics()
    for name in sorted(known - registered):
        problems.append(f"metric {name!r} is documented but src/metrics.rs does not register it")
    for name in sorted(registered - known):
        problems.append(f"metric {name!r} is registered in src/metrics.rs but not documented")
    for q in queries(dash):
        expr = re.sub(r"^label_values\((.*?)(,[^,()]*)?\)$", r"\1", q["expr"].strip())
        for name in metrics_in(expr):
            if base_metric(name, known) not in known:
                problems.append(f"{q['panel']} {q['refId']}: metric {name!r} is not one of the documented metrics")
    if use_promtool and shutil.which("promtool"):
        problems += promtool_syntax([q for q in queries(dash) if not q["expr"].startswith("label_values")])
    return problems


def promtool_syntax(qs: list[dict]) -> list[str]:
    """Parses every query with Prometheus' own parser, as recording rules."""
    rules = {"groups": [{"name": "panel_queries", "rules": [
        {"record": f"panel:q{i}", "expr": q["expr"]} for i, q in enumerate(qs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
        name = f.name
    try:
        res = subprocess.run(["promtool", "check", "rules", name], capture_output=True, text=True)
    finally:
        os.unlink(name)
    if res.returncode == 0:
        return []
    return [f"promtool: {line}" for line in (res.stdout + res.stderr).splitlines() if line.strip()]


def run_queries(dash: dict, prom: str, require_data: bool) -> int:
    failures = 0
    for q in queries(dash):
        if q["expr"].startswith("label_values"):
            continue
        url = f"{prom.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": q["expr"]})
        try:
            with urllib.request.urlopen(url, timeout=10) as res:
                body = json.load(res)
            n = len(body.get("data", {}).get("result", []))
            ok = body.get("status") == "success" and (n > 0 or not require_data)
            msg = f"{n} series"
        except Exception as e:  # noqa: BLE001 - report any failure per query
            ok, msg = False, str(e)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {q['panel']} [{q['refId']}]: {msg}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description="Extract and check the PromQL of corral's Grafana dashboard.")
    ap.add_argument("dashboard", nargs="?", default=str(DASHBOARD))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate structure, metric names and syntax")
    mode.add_argument("--query", metavar="PROMETHEUS_URL", help="run every query against a Prometheus")
    ap.add_argument("--require-data", action="store_true", help="with --query: fail on empty results")
    ap.add_argument("--no-promtool", action="store_true", help="with --check: skip the promtool syntax pass")
    args = ap.parse_args()
    dash = load(Path(args.dashboard))
    if args.check:
        problems = check(dash, use_promtool=not args.no_promtool)
        for p in problems:
            print(f"FAIL {p}")
        n_panels = sum(1 for p in all_panels(dash) if p.get("type") != "row")
        print(f"grafana: {n_panels} panels, {len(queries(dash))} queries, {len(problems)} problem(s)")
        return 1 if problems else 0
    if args.query:
        return 1 if run_queries(dash, args.query, args.require_data) else 0
    for q in queries(dash):
        print(json.dumps({k: q[k] for k in ("panel_id", "panel", "refId", "expr")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
