#!/usr/bin/env python3
"""Checks deploy/compose.yaml beyond its JSON schema: what `docker compose config` would
catch (references between services, volumes, files that must exist) plus what this stack
promises (two hardened corral replicas behind nginx, stop grace above shutdown_grace).

    check_compose.py [deploy/compose.yaml]      # needs PyYAML; prints problems, exits 1 on any
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)))


def check(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    base = path.parent
    problems: list[str] = []
    services = doc.get("services") or {}
    named_volumes = set((doc.get("volumes") or {}).keys())

    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{name}: bind mount source {source} does not exist")
            elif source and source not in named_volumes:
                problems.append(f"{name}: volume {source} is not declared")
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = base / build.get("context", ".")
            if not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{name}: Dockerfile {build.get('dockerfile')} not found in {ctx}")

    replicas = [n for n, s in services.items() if re.fullmatch(r"corral-\d+", n)]
    if len(replicas) < 2:
        problems.append(f"expected at least two corral replicas, found {replicas}")
    config = (base / "compose" / "corral.toml").read_text() if (base / "compose" / "corral.toml").exists() else ""
    grace = seconds(re.search(r'shutdown_grace\s*=\s*"([^"]+)"', config).group(1)) if "shutdown_grace" in config else 30
    for n in replicas:
        s = services[n]
        if not s.get("read_only"):
            problems.append(f"{n}: root filesystem is not read_only")
        if "ALL" not in (s.get("cap_drop") or []):
            problems.append(f"{n}: capabilities not dropped")
        if str(s.get("user", "0")).split(":")[0] in ("0", "root"):
            problems.append(f"{n}: runs as root")
        if "no-new-privileges:true" not in (s.get("security_opt") or []):
            problems.append(f"{n}: no-new-privileges not set")
        if seconds(s.get("stop_grace_period", "10s")) <= grace:
            problems.append(f"{n}: stop_grace_period must exceed server.shutdown_grace ({grace:.0f}s)")
        env = s.get("environment") or {}
        if not {"CORRAL__DATABASE__URL", "CORRAL__REDIS__URL"} <= set(env):
            problems.append(f"{n}: database and redis URLs must come from the environment")

    nginx_conf = (ROOT / "deploy" / "nginx" / "corral.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):\d+", nginx_conf, re.M))
    if upstreams != set(replicas):
        problems.append(f"nginx upstream servers {sorted(upstreams)} differ from compose replicas {sorted(replicas)}")
    for needed in ("proxy_buffering off", "keepalive ", 'proxy_set_header Connection ""', "proxy_http_version 1.1"):
        if needed not in nginx_conf:
            problems.append(f"nginx: missing `{needed}`")
    for svc in ("postgres", "redis", "nginx", "prometheus", "grafana"):
        if svc not in services:
            problems.append(f"missing service {svc}")
    return problems


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else COMPOSE
    problems = check(path)
    for p in problems:
        print(f"FAIL {p}")
    print(f"compose: {len(problems)} problem(s) in {path.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
