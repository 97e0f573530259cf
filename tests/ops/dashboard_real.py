#!/usr/bin/env python3
"""The dashboard test (tests/ops/dashboard_test.mjs, headless Chromium) against a REAL corral.

Starts three `corral sim` backends (two GPU servers and a key-protected "cloud" server behind a
key pool), one `corral serve` with request bodies stored, an admin (CLI) and three users (admin
API), then sends bounded mixed client traffic (Ollama /api/chat streamed, /api/generate, OpenAI
/v1/chat/completions with `model: "auto"` and a cloud model, Anthropic /v1/messages through an
alias, and a few unknown-model 404s) before and while the browser test runs, so the screenshots
show live numbers. Before the browser starts, cloud requests spend a key's budget until the pool
shows a penalized key (penalty 10 minutes), so the key pools section has a countdown to check.
This is the only dashboard test: it runs against the real gateway, never a stand-in.

    CORRAL_BIN=target/debug/corral SCREENSHOT_DIR=docs/screenshots OPS_WARMUP_SECONDS=120 \
        .venv/bin/python tests/ops/dashboard_real.py

OPS_WARMUP_SECONDS (default 8): traffic before the browser starts (longer fills more of the
usage graph). OPS_KEEP=1 keeps the stack up after the test until Ctrl-C (for a look by hand).
Exit code: the browser test's (1 when any check failed), 2 when the stack could not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (PROMPTS, ROOT, Group, Sim, Traffic, anthropic_messages, corral_bin, ollama_chat,  # noqa: E402
                     ollama_generate, openai_chat)

OPS = Path(__file__).resolve().parent
CLOUD_KEYS = ["sk-ops-cloud-0001-alpha", "sk-ops-cloud-0002-bravo", "sk-ops-cloud-0003-charlie"]
# Long enough that a key penalized before the browser starts is still in the penalty box when
# the browser test looks at the key pools (their countdown must tick).
PENALTY = "10m"


def build(g: Group):
    big = g.sim("gpu-big", vram="48GiB", extra=["--latency-ms", "120", "--token-ms", "35", "--load-ms", "900"])
    small = g.sim("gpu-small", vram="16GiB", models=["llama3.1:8b", "qwen3:8b", "qwen2.5-coder:7b"],
                  extra=["--latency-ms", "80", "--token-ms", "50", "--load-ms", "600"])
    cloud = g.sim("cloud", vram="512GiB", models=["gpt-oss:120b-cloud=65GiB"], require_keys=CLOUD_KEYS,
                  key_budget=8, budget_window="45s", extra=["--latency-ms", "150", "--token-ms", "20"])
    keys = g.workdir / "apikeys.txt"
    keys.write_text("\n".join(CLOUD_KEYS) + "\n")
    gw = g.gateway(
        [big, small, ("ollama-cloud", cloud.url)], name="corral", env={"RUST_LOG": "warn"},
        backend_extra={
            "gpu-big": {"priority": 1, "max_memory": "48GiB", "poll_interval": "1s"},
            "gpu-small": {"priority": 1, "max_memory": "16GiB", "poll_interval": "1s"},
            "ollama-cloud": {"priority": 2, "key_pool": "cloud", "poll_interval": "1s"},
        },
        key_pools=[{"name": "cloud", "keys_file": str(keys), "penalty": PENALTY, "usage_limit_penalty": PENALTY}],
        extra_toml="""
[logging]
store_bodies = true

[routing]
default_model = "llama3.1:8b"
aliases = { "claude-*" = "qwen3:8b", "gpt-4o" = "llama3.1:70b" }
fallbacks = { "llama3.1:70b" = ["llama3.1:8b"] }
""")
    admin = gw.admin_token
    users = {}
    for name in ("alice", "bob", "ci-bot"):
        r = httpx.post(f"{gw.url}/admin/api/users", json={"name": name}, headers={"Authorization": f"Bearer {admin}"},
                       timeout=10)
        r.raise_for_status()
        users[name] = r.json()["token"]
    # A token is refused until the gateway's user cache reloads (at most 1 s after the last
    # reload, see the note printed by main): wait until all three work.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {t}"}, timeout=5).status_code == 200
               for t in users.values()):
            break
        time.sleep(0.2)
    return gw, admin, users


def penalize_a_key(gw, admin: str, token: str) -> str:
    """Sends cloud requests (at most 40) until the key pool shows a penalized key, so the
    browser test always sees a penalty countdown. Returns the pool's counts."""
    h = {"Authorization": f"Bearer {admin}"}
    counts = {}
    with httpx.Client(timeout=30) as c:
        for i in range(40):
            pools = c.get(f"{gw.url}/admin/api/keys", headers=h).json().get("pools", [])
            counts = {k: p.get(k) for p in pools for k in ("active", "penalized", "disabled")}
            if counts.get("penalized"):
                break
            openai_chat(c, gw.url, token, "gpt-oss:120b-cloud", f"spend the cloud budget {i}")
    return str(counts)


def fresh_token_delay(gw, admin: str) -> float:
    """Seconds a token fresh from POST /admin/api/users is refused with 401 (0 when never)."""
    h = {"Authorization": f"Bearer {admin}"}
    httpx.post(f"{gw.url}/admin/api/users", json={"name": "ops-probe-a"}, headers=h, timeout=10)
    httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer crl_" + "Z" * 43}, timeout=5)  # forces a reload
    token = httpx.post(f"{gw.url}/admin/api/users", json={"name": "ops-probe-b"}, headers=h, timeout=10).json()["token"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        if httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200:
            break
        time.sleep(0.05)
    for name in ("ops-probe-a", "ops-probe-b"):
        httpx.post(f"{gw.url}/admin/api/users/{name}/deactivate", headers=h, timeout=10)
    return time.monotonic() - t0


def traffic_mix(base: str, users: dict):
    def prompt(rng):
        return f"{rng.choice(PROMPTS)} (ops dashboard {rng.randrange(10_000)})"

    a, b, c = users["alice"], users["bob"], users["ci-bot"]
    return [
        (4, lambda cl, rng: ollama_chat(cl, base, a, "llama3.1:8b", prompt(rng), stream=True)),
        (3, lambda cl, rng: openai_chat(cl, base, b, "auto", prompt(rng), stream=rng.random() < 0.5)),
        (2, lambda cl, rng: anthropic_messages(cl, base, c, "claude-sonnet-4-5", prompt(rng), stream=True)),
        (2, lambda cl, rng: ollama_generate(cl, base, c, "qwen2.5-coder:7b", prompt(rng))),
        (1, lambda cl, rng: openai_chat(cl, base, a, "gpt-oss:120b-cloud", prompt(rng))),
        (1, lambda cl, rng: openai_chat(cl, base, b, "gpt-4o", prompt(rng))),
        (0.3, lambda cl, rng: openai_chat(cl, base, b, "no-such-model:1b", prompt(rng))),
    ]


def main() -> int:
    binary = corral_bin()
    if not binary:
        print("dashboard_real: no corral binary (set CORRAL_BIN or cargo build --bin corral)")
        return 2
    warmup = float(os.environ.get("OPS_WARMUP_SECONDS", "8"))
    with tempfile.TemporaryDirectory(prefix="corral-dash-real-") as d, Group(Path(d)) as g:
        try:
            gw, admin, users = build(g)
        except Exception as e:  # noqa: BLE001
            return g.start_failed("dashboard_real", e)
        print(f"dashboard_real: corral at {gw.url} (pid {gw.proc.pid}), sims "
              + ", ".join(f"{s.name}:{s.port}" for s in g.items if isinstance(s, Sim)))
        print(f"dashboard_real: key pool after spending the cloud budget: {penalize_a_key(gw, admin, users['alice'])}")
        delay = fresh_token_delay(gw, admin)
        if delay > 0.1:
            print(f"dashboard_real: NOTE a token fresh from POST /admin/api/users was refused (401) for {delay:.2f} s")
        # Bounded: at most 3000 requests and 10 minutes whatever happens below.
        traffic = Traffic(traffic_mix(gw.url, users), threads=3, max_requests=3000,
                          max_seconds=warmup + 600).start()
        time.sleep(warmup)
        print(f"dashboard_real: {traffic.sent} requests of warm-up traffic, statuses {traffic.statuses}")
        env = {**os.environ, "CORRAL_URL": gw.url, "CORRAL_ADMIN_TOKEN": admin, "DASHBOARD_EXPECT_PENALTY": "1"}
        env.setdefault("SCREENSHOT_DIR", str(ROOT / "target" / "screenshots" / "real"))
        try:
            rc = subprocess.run(["node", str(OPS / "dashboard_test.mjs")], env=env, timeout=420).returncode
        except subprocess.TimeoutExpired:
            print("dashboard_real: the browser test took longer than 420 s")
            rc = 1
        if os.environ.get("OPS_KEEP") == "1":
            print(f"dashboard_real: OPS_KEEP=1, stack stays up: {gw.url}/dashboard admin token {admin}; Ctrl-C ends")
            try:
                while traffic.sent < traffic.max_requests:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        traffic.stop()
        print(f"dashboard_real: {traffic.sent} requests sent in all, statuses {traffic.statuses}")
        if not gw.replica.alive():
            print(f"dashboard_real: corral exited during the test:\n{gw.proc.tail()}")
            rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
