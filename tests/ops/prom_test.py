#!/usr/bin/env python3
"""Every Grafana panel query against a real Prometheus scraping two real corral replicas.

Starts redis-server, three `corral sim` backends (gpu-a and gpu-b serving the same models, and a
key-protected "cloud" server with a small per-key budget behind a key pool), two `corral serve`
replicas sharing one SQLite file and the Redis, and Debian's Prometheus (scrape interval 1 s,
config generated, TSDB in a temp dir, the shipped alert rules loaded). Then drives bounded mixed
traffic through both replicas, in three steps:

1. idle (no request yet): the Requests / s and Error ratio stats read 0, not "No data";
2. healthy (a few successful requests in each dialect, no error): the error ratio, upstream
   errors, failovers, rate limiting and dropped log rows panels read 0 (each at least one
   series, every value 0; the stats exactly one series);
3. mixed, with errors:

- Ollama /api/chat streamed and not, /api/generate; OpenAI /v1/chat/completions streamed and
  not, with `model: "auto"` too; Anthropic /v1/messages streamed and not (through an alias);
- errors: unknown models (404) and upstream 500s on every backend (`[[error=500]]`, so 5xx);
- a failover: `POST /_sim/control {"fail_rate": 1.0}` on gpu-a while requests keep coming;
- the key pool running into the cloud sim's per-key budget (429s: penalized keys,
  corral_rate_limited_total{scope="key"});
- a user with rpm = 2 going over it (corral_rate_limited_total{scope="user"});
  afterwards the error ratio must read above 0.

After a few more scrapes it runs every panel query of grafana/dashboards/corral.json (through
tests/ops/panel_queries.py, Grafana's variables substituted) with /api/v1/query, the template
variables' label_values() with /api/v1/label/.../values, and checks that each returns at least
one series with a finite value; then a few facts (both replicas scraped, Redis up on both, the
three dialects, 404 and 5xx statuses, failovers, penalized keys, user rate limiting) and that
every alert rule evaluates without error. Prints a table panel -> series.

    CORRAL_BIN=target/debug/corral .venv/bin/python tests/ops/prom_test.py

Exit code 0 when everything holds, 1 when a check failed, 2 when the stack could not start.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import panel_queries  # noqa: E402
from harness import (PROMPTS, ROOT, Checks, Group, Traffic, anthropic_messages, corral_bin, ollama_chat,  # noqa: E402
                     ollama_generate, openai_chat)

DASHBOARD = ROOT / "grafana" / "dashboards" / "corral.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CLOUD_KEYS = ["sk-prom-cloud-0001-alpha", "sk-prom-cloud-0002-bravo"]
TRAFFIC_SECONDS = 14.0   # the mixed background traffic runs this long (bounded in count too)
# Scripted phases are paced over several 1 s scrapes: a counter series is born with its first
# increment, so increments that all land before its first scrape never show in rate().
PACE = 0.35
# Panels that must read 0, not "No data", before any request, and while the fleet is healthy.
ZERO_WHEN_IDLE = ("Requests / s", "Error ratio (5xx)")
ZERO_WHEN_HEALTHY = ("Error ratio (5xx)", "Upstream errors / s", "Failovers / s by reason",
                     "Rate limited / s by scope", "Log rows dropped (range)", "Log rows dropped / s")
SINGLE_SERIES = ("Requests / s", "Error ratio (5xx)")  # stats: one number, no stray `{}` series


def start_stack(g: Group):
    """Redis, the three sims, two replicas sharing one SQLite file and the Redis, Prometheus."""
    redis = g.redis()
    fast = ["--token-ms", "5", "--latency-ms", "20"]
    sims = {
        "gpu-a": g.sim("gpu-a", vram="24GiB", extra=fast),
        "gpu-b": g.sim("gpu-b", vram="24GiB", extra=fast),
        "cloud": g.sim("cloud", vram="512GiB", models=["gpt-oss:120b-cloud=65GiB"], require_keys=CLOUD_KEYS,
                       key_budget=3, budget_window="120s"),
    }
    keys = g.workdir / "apikeys.txt"
    keys.write_text("\n".join(CLOUD_KEYS) + "\n")
    cluster = g.cluster(
        [sims["gpu-a"], sims["gpu-b"], ("ollama-cloud", sims["cloud"].url)], replicas=2, redis=redis,
        name="replica", env={"RUST_LOG": "warn"}, shutdown_grace="3s",
        backend_extra={
            "gpu-a": {"max_memory": "24GiB"},
            "gpu-b": {"max_memory": "24GiB"},
            "ollama-cloud": {"priority": 2, "key_pool": "cloud"},
        },
        key_pools=[{"name": "cloud", "keys_file": str(keys), "penalty": "30s"}],
        extra_toml="""
[routing]
default_model = "llama3.1:8b"
aliases = { "claude-*" = "qwen3:8b" }
max_attempts = 3
""")
    users = {"alice": cluster.create_user("alice"), "limited": cluster.create_user("limited", rpm=2)}
    prom = g.prometheus([f"127.0.0.1:{r.port}" for r in cluster.replicas], rule_files=[ALERTS])
    return redis, sims, cluster, users, prom.url


def prom_get(prom: str, path: str, **params) -> dict:
    r = httpx.get(f"{prom}{path}", params=params, timeout=15)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def instant(prom: str, expr: str) -> list[dict]:
    return prom_get(prom, "/api/v1/query", query=expr)["result"]


def scalar_sum(prom: str, expr: str) -> float:
    res = instant(prom, expr)
    return sum(float(s["value"][1]) for s in res if math.isfinite(float(s["value"][1])))


def finite(series: list[dict]) -> list[float]:
    vals = [float(s["value"][1]) for s in series]
    return [v for v in vals if math.isfinite(v)]


def panel_exprs(dash: dict, title: str) -> list[dict]:
    return [q for q in panel_queries.queries(dash) if q["panel"] == title]


def check_zero(prom: str, dash: dict, titles, when: str, check: Checks) -> None:
    """Each panel in `titles` has at least one series and every value is 0."""
    for title in titles:
        qs = panel_exprs(dash, title)
        check(bool(qs), f"{when}: the dashboard has a panel {title!r}")
        for q in qs:
            vals = [float(s["value"][1]) for s in instant(prom, q["expr"])]
            ok = bool(vals) and all(v == 0 for v in vals)
            if title in SINGLE_SERIES:
                ok = ok and len(vals) == 1
            check(ok, f"{when}: panel {title} [{q['refId']}] reads 0",
                  f"{len(vals)} series {vals[:6]}" + ("" if vals else ' ("No data" in Grafana)'))


def healthy_traffic(gws, token: str) -> dict:
    """12 successful requests, the three dialects over both replicas, paced over a few scrapes."""
    statuses: dict = {}
    calls = [ollama_chat, openai_chat, anthropic_messages]
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as c:
        for i in range(12):
            status = calls[i % 3](c, gws[i % 2].url, token, "llama3.1:8b", f"healthy {i}")
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(PACE)
    return statuses


def drive_traffic(gws, users, sims) -> dict:
    """Bounded: a mixed background stream for TRAFFIC_SECONDS (at most 600 requests) plus the
    scripted error, failover, key pool and rate limit phases (about 60 requests)."""
    alice = users["alice"]

    def prompt(rng):
        return f"{rng.choice(PROMPTS)} (prom {rng.randrange(10_000)})"

    def on(rng):
        return gws[rng.randrange(len(gws))].url

    mix = [
        (3, lambda c, r: ollama_chat(c, on(r), alice, "llama3.1:8b", prompt(r), stream=True)),
        (2, lambda c, r: ollama_chat(c, on(r), alice, "qwen3:8b", prompt(r), stream=False)),
        (1, lambda c, r: ollama_generate(c, on(r), alice, "qwen2.5-coder:7b", prompt(r))),
        (2, lambda c, r: openai_chat(c, on(r), alice, "llama3.1:8b", prompt(r), stream=r.random() < 0.5)),
        (2, lambda c, r: openai_chat(c, on(r), alice, "auto", prompt(r), stream=r.random() < 0.5)),
        (2, lambda c, r: anthropic_messages(c, on(r), alice, "claude-sonnet-4-5", prompt(r), stream=r.random() < 0.5)),
    ]
    traffic = Traffic(mix, threads=2, max_requests=600, max_seconds=TRAFFIC_SECONDS).start()
    phases: dict[str, dict] = {}

    def record(phase: str, status) -> None:
        phases.setdefault(phase, {})
        phases[phase][status] = phases[phase].get(status, 0) + 1

    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as c:
        time.sleep(2.0)
        for i in range(6):  # unknown models: 404 in every dialect
            gw = gws[i % 2].url
            record("unknown model", [openai_chat, ollama_chat, anthropic_messages][i % 3](c, gw, alice, f"no-such-model-{i}:1b", "hi"))
        for i in range(3):  # every backend answers 500: the client gets a 5xx
            record("upstream 500", ollama_chat(c, gws[i % 2].url, alice, "llama3.1:8b", "[[error=500]] fail please"))
            time.sleep(1.2)
        sims["gpu-a"].control(fail_rate=1.0)
        for i in range(12):  # gpu-a fails before the first byte: corral fails over to gpu-b
            record("failover (gpu-a fail_rate=1)", ollama_chat(c, gws[i % 2].url, alice, "llama3.1:8b", f"failover {i}"))
            time.sleep(PACE)
        sims["gpu-a"].control(fail_rate=0.0)
        for i in range(10):  # 2 keys x budget 3: the cloud sim answers 429, keys go to the penalty box
            record("key pool over budget", openai_chat(c, gws[i % 2].url, alice, "gpt-oss:120b-cloud", f"cloud {i}"))
            time.sleep(PACE)
        for i in range(5):  # rpm = 2
            record("user over rpm", openai_chat(c, gws[i % 2].url, users["limited"], "llama3.1:8b", f"limited {i}"))
            time.sleep(PACE)
    deadline = time.monotonic() + TRAFFIC_SECONDS + 30
    while traffic.sent < traffic.max_requests and time.monotonic() < deadline and traffic.running():
        time.sleep(0.2)
    traffic.stop()
    phases["mixed background"] = traffic.statuses
    return phases


def run() -> int:
    binary = corral_bin()
    if not binary:
        print("prom_test: no corral binary (set CORRAL_BIN or cargo build --bin corral)")
        return 2
    check = Checks()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="corral-prom-") as d, Group(Path(d)) as g:
        try:
            redis, sims, cluster, users, prom = start_stack(g)
        except Exception as e:  # noqa: BLE001
            return g.start_failed("prom_test", e)
        gws, redis_url = cluster.replicas, redis.url
        print(f"prom_test: prometheus {prom}, replicas {', '.join(r.url for r in gws)}, redis {redis_url}, "
              f"sims {', '.join(f'{s.name}:{s.port}' for s in sims.values())} [{time.monotonic() - t_start:.1f} s]")

        # Both targets up before traffic, so every counter has samples from before it changed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([s for s in instant(prom, 'up{job="corral"} == 1')]) < 2:
            time.sleep(0.5)
        dash = json.loads(DASHBOARD.read_text())
        check_zero(prom, dash, ZERO_WHEN_IDLE, "idle fleet", check)
        healthy = healthy_traffic(gws, users["alice"])
        check(set(healthy) == {200}, "healthy phase: every request answered 200", str(healthy))
        time.sleep(3)  # a few scrapes after the last request
        check_zero(prom, dash, ZERO_WHEN_HEALTHY, "healthy fleet", check)

        phases = drive_traffic(gws, users, sims)
        for phase, statuses in phases.items():
            print(f"traffic: {phase}: {dict(sorted(statuses.items(), key=str))}")
        time.sleep(4)  # a few more scrapes: every series has samples after its last change

        rows = []
        for q in panel_queries.queries(dash):
            expr = q["expr"]
            try:
                if expr.startswith("label_values"):
                    metric, label = re.match(r"label_values\((\w+),\s*(\w+)\)", expr).groups()
                    values = prom_get(prom, f"/api/v1/label/{label}/values", **{"match[]": metric})
                    n, sample, ok = len(values), ", ".join(values[:4]), len(values) > 0
                else:
                    res = instant(prom, expr)
                    vals = finite(res)
                    n, ok = len(res), len(vals) > 0
                    sample = f"{max(vals):.4g}" if vals else "no finite value"
            except Exception as e:  # noqa: BLE001
                n, sample, ok = 0, f"error: {e}", False
            rows.append((q["panel"], q["refId"], n, sample, ok))
            check(ok, f"panel {q['panel']} [{q['refId']}]", f"{n} series, max {sample}" if ok else f"{n} series, {sample}: {expr}")

        # Facts behind the panels.
        up = instant(prom, 'up{job="corral"}')
        check(len(up) == 2 and all(s["value"][1] == "1" for s in up), "both replicas scraped", f"{len(up)} targets")
        redis = instant(prom, "corral_redis_up")
        check(len(redis) == 2 and all(s["value"][1] == "1" for s in redis), "corral_redis_up is 1 on both replicas",
              ", ".join(f"{s['metric'].get('instance')}={s['value'][1]}" for s in redis))
        per_instance = instant(prom, "sum by (instance) (corral_requests_total)")
        check(len(per_instance) == 2 and all(float(s["value"][1]) > 0 for s in per_instance),
              "both replicas served requests", ", ".join(f"{s['metric']['instance']}={s['value'][1]}" for s in per_instance))
        dialects = {s["metric"].get("dialect") for s in instant(prom, "sum by (dialect) (corral_requests_total)")}
        check({"ollama", "openai", "anthropic"} <= dialects, "requests in all three dialects", str(sorted(dialects)))
        statuses = {s["metric"].get("status") for s in instant(prom, "sum by (status) (corral_requests_total)")}
        check("404" in statuses and any(s.startswith("5") for s in statuses), "404 and 5xx statuses counted", str(sorted(statuses)))
        ratio = [float(v) for q in panel_exprs(dash, "Error ratio (5xx)") for v in finite(instant(prom, q["expr"]))]
        check(len(ratio) == 1 and ratio[0] > 0, "the error ratio panel reads above 0 after the 5xx phase", str(ratio))
        fo_rate = scalar_sum(prom, "sum(rate(corral_failovers_total[1m]))")
        check(fo_rate > 0, "failovers show in rate() (the Failovers panel is not flat)", f"{fo_rate:.3g}/s")
        check(scalar_sum(prom, "sum(corral_failovers_total)") > 0, "failovers counted",
              str({s["metric"].get("reason"): s["value"][1] for s in instant(prom, "sum by (reason) (corral_failovers_total)")}))
        check(scalar_sum(prom, 'sum(corral_upstream_errors_total{backend="gpu-a"})') > 0, "upstream errors of gpu-a counted",
              str({s["metric"].get("reason"): s["value"][1] for s in instant(prom, "sum by (reason) (corral_upstream_errors_total)")}))
        keystate = {s["metric"]["state"]: s["value"][1] for s in instant(prom, 'max by (state) (corral_key_state{pool="cloud"})')}
        check(float(keystate.get("penalized", 0)) > 0, "key pool shows penalized keys", str(keystate))
        limited = {s["metric"]["scope"]: s["value"][1] for s in instant(prom, "sum by (scope) (corral_rate_limited_total)")}
        check(float(limited.get("user", 0)) > 0 and float(limited.get("key", 0)) > 0,
              "rate limiting counted for scope user and key", str(limited))
        memory = instant(prom, 'max by (backend) (corral_backend_memory_bytes{kind="used"})')
        check(any(float(s["value"][1]) > 0 for s in memory), "resident models show as used memory",
              ", ".join(f"{s['metric']['backend']}={float(s['value'][1]) / 2**30:.1f}GiB" for s in memory))

        rules = prom_get(prom, "/api/v1/rules")
        all_rules = [r for g in rules["groups"] for r in g["rules"]]
        bad = [f"{r['name']}: {r.get('lastError')}" for r in all_rules if r.get("health") not in ("ok",)]
        check(bool(all_rules) and not bad, f"alert rules evaluate against live data ({len(all_rules)} rules)", "; ".join(bad))
        firing = [a["labels"]["alertname"] for a in prom_get(prom, "/api/v1/alerts")["alerts"]]
        print(f"info: alerts pending or firing now: {sorted(set(firing)) or 'none'}")

        for r in gws:
            if not r.alive():
                check(False, f"{r.proc.name} still running", r.proc.tail())

        print()
        w = max(len(f"{p} [{r}]") for p, r, *_ in rows)
        print(f"{'panel [refId]':<{w}}  series  max value / values")
        print(f"{'-' * w}  ------  ------------------")
        for panel, ref, n, sample, ok in rows:
            print(f"{f'{panel} [{ref}]':<{w}}  {n:>6}  {sample}{'' if ok else '   <-- FAIL'}")
    print()
    print(f"prom_test: {check.passed} passed, {len(check.failed)} failed [{time.monotonic() - t_start:.0f} s]")
    if check.failed:
        print("failed: " + "; ".join(check.failed))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(run())
