#!/usr/bin/env python3
"""Writes grafana/dashboards/corral.json. Edit the panels here, run it, commit both.

    python3 grafana/generate_dashboard.py

The JSON is plain Grafana dashboard JSON (schemaVersion 39, Grafana 10/11), provisioned by
grafana/provisioning/dashboards/corral.yaml. tests/ops/panel_queries.py --check validates it.
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "corral.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
SEL = 'model=~"$model", backend=~"$backend"'

panels = []
_y = 0


def row(title):
    global _y
    panels.append({"type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": _y, "w": 24, "h": 1}, "panels": []})
    _y += 1


def place(specs, h=8):
    """Lays out one line of panels; specs are (width, panel) pairs summing to 24."""
    global _y
    x = 0
    for w, p in specs:
        p["gridPos"] = {"x": x, "y": _y, "w": w, "h": h}
        panels.append(p)
        x += w
    _y += h


def targets(*pairs):
    return [{"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "range": True, "instant": False}
            for i, (expr, legend) in enumerate(pairs)]


def ts(title, unit, *pairs, desc="", stack=False, minimum=0):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 8,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "fieldConfig": {"defaults": {"unit": unit, "min": minimum, "custom": custom}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"],
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": targets(*pairs)}


def stat(title, unit, expr, legend="", desc="", steps=None, mappings=None):
    steps = steps or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                         "mappings": mappings or []}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto",
                        "justifyMode": "auto", "orientation": "auto"},
            "targets": targets((expr, legend))}


def quantiles(metric, by=""):
    group = f"le{', ' + by if by else ''}"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{model=~\"$model\"}}[{RI}])))",
             f"p{int(q * 100)}{' {{' + by + '}}' if by else ''}") for q in (0.5, 0.95, 0.99)]


UP_MAP = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}]
RED_GREEN = [{"color": "red", "value": None}, {"color": "green", "value": 1}]

# A healthy fleet must read 0, not "No data": a counter series is born with its first
# increment, so until the first 5xx (or the first request) the sums below have no series.
# `or vector(0)` is only right on label-less results: next to a `sum by (...)` it would add a
# stray series whenever the left side is not empty (use `or on() vector(0)` there).
REQ_RATE = f"sum(rate(corral_requests_total{{{SEL}}}[{RI}]))"
ERR_RATE = f'sum(rate(corral_requests_total{{{SEL}, status=~"5.."}}[{RI}]))'

row("Overview")
place([
    (4, stat("Requests / s", "reqps", f"{REQ_RATE} or vector(0)")),
    # 5xx / all, 0 without any 5xx series, and 0 (not NaN) while nothing is requested.
    (4, stat("Error ratio (5xx)", "percentunit", f"({ERR_RATE} or vector(0)) / ({REQ_RATE} > 0) or vector(0)",
             steps=[{"color": "green", "value": None}, {"color": "orange", "value": 0.02}, {"color": "red", "value": 0.05}])),
    (4, stat("TTFB p95", "s", f'histogram_quantile(0.95, sum by (le) (rate(corral_time_to_first_byte_seconds_bucket{{model=~"$model"}}[{RI}])))',
             steps=[{"color": "green", "value": None}, {"color": "orange", "value": 2}, {"color": "red", "value": 5}])),
    (4, stat("Backends up", "none", 'sum(max by (backend) (corral_backend_up{backend=~"$backend"}))',
             desc="Backends healthy as seen by any replica.")),
    (4, stat("Redis up (worst replica)", "none", "min(corral_redis_up)", mappings=UP_MAP, steps=RED_GREEN)),
    (4, stat("Log rows dropped (range)", "none", "sum(increase(corral_log_dropped_total[$__range]))",
             steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}])),
], h=4)

row("Traffic")
place([
    (8, ts("Requests / s by dialect", "reqps", (f"sum by (dialect) (rate(corral_requests_total{{{SEL}}}[{RI}]))", "{{dialect}}"), stack=True)),
    (8, ts("Requests / s by model", "reqps", (f"sum by (model) (rate(corral_requests_total{{{SEL}}}[{RI}]))", "{{model}}"), stack=True)),
    (8, ts("Requests / s by status", "reqps", (f"sum by (status) (rate(corral_requests_total{{{SEL}}}[{RI}]))", "{{status}}"), stack=True)),
])

row("Latency")
place([
    (8, ts("Request duration p50 / p95 / p99", "s", *quantiles("corral_request_duration_seconds"),
           desc="Request to last byte, all dialects.")),
    (8, ts("Time to first byte p50 / p95 / p99", "s", *quantiles("corral_time_to_first_byte_seconds"),
           desc="Request to first byte sent to the client; includes model load time.")),
    (8, ts("TTFB p95 by model", "s",
           (f'histogram_quantile(0.95, sum by (le, model) (rate(corral_time_to_first_byte_seconds_bucket{{model=~"$model"}}[{RI}])))', "{{model}}"))),
])

row("Tokens")
place([
    (12, ts("Tokens in / s by model", "short",
            (f'sum by (model) (rate(corral_tokens_total{{direction="in", {SEL}}}[{RI}]))', "{{model}}"), stack=True)),
    (12, ts("Tokens out / s by model", "short",
            (f'sum by (model) (rate(corral_tokens_total{{direction="out", {SEL}}}[{RI}]))', "{{model}}"), stack=True)),
])

row("Backends")
place([
    (6, ts("Backend up", "none", ('max by (backend) (corral_backend_up{backend=~"$backend"})', "{{backend}}"),
           desc="1 = healthy. max over replicas: each replica polls every backend.")),
    (6, ts("Backend memory used / max", "bytes",
           ('max by (backend) (corral_backend_memory_bytes{kind="used", backend=~"$backend"})', "{{backend}} used"),
           ('max by (backend) (corral_backend_memory_bytes{kind="max", backend=~"$backend"})', "{{backend}} max"))),
    (6, ts("In-flight requests by backend", "none",
           ('sum by (backend) (corral_inflight_requests{backend=~"$backend"})', "{{backend}}"), stack=True,
           desc="Summed over replicas.")),
    (6, ts("Upstream errors / s", "reqps",
           (f'sum by (backend, reason) (rate(corral_upstream_errors_total{{backend=~"$backend"}}[{RI}]))', "{{backend}} {{reason}}"))),
])

row("Keys, failover and limits")
place([
    (8, ts("Upstream keys by pool and state", "none", ("max by (pool, state) (corral_key_state)", "{{pool}} {{state}}"),
           desc="Counts shared through Redis, so max over replicas.")),
    (8, ts("Failovers / s by reason", "reqps", (f"sum by (reason) (rate(corral_failovers_total[{RI}]))", "{{reason}}"), stack=True)),
    (8, ts("Rate limited / s by scope", "reqps", (f"sum by (scope) (rate(corral_rate_limited_total[{RI}]))", "{{scope}}"), stack=True)),
])

row("Platform")
place([
    (8, ts("Redis up by replica", "none", ("corral_redis_up", "{{instance}}"))),
    (8, ts("Log queue depth by replica", "none", ("corral_log_queue_depth", "{{instance}}"))),
    (8, ts("Log rows dropped / s", "short", (f"sum by (instance) (rate(corral_log_dropped_total[{RI}]))", "{{instance}}"))),
])

for i, p in enumerate(panels, start=1):
    p["id"] = i


def var(name, label, query):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-var"},
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


dashboard = {
    "uid": "corral-overview",
    "title": "corral",
    "description": "corral LLM gateway: traffic, latency, tokens, backends, keys, failover, platform.",
    "tags": ["corral", "llm", "gateway"],
    "timezone": "browser",
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-6h", "to": "now"},
    "timepicker": {},
    "annotations": {"list": []},
    "links": [],
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        var("model", "Model", "label_values(corral_requests_total, model)"),
        var("backend", "Backend", "label_values(corral_backend_up, backend)"),
    ]},
    "panels": panels,
}

OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"wrote {OUT} ({len(panels)} panels)")
