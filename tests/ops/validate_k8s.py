#!/usr/bin/env python3
"""Checks rendered corral manifests for what kubernetes-validate cannot know: custom
resources against bundled schemas (tests/ops/schemas/), and the promises corral makes to
operators (docs/OPERATIONS.md, "Kubernetes"): >= 3 replicas, /ready and /health probes, non-root,
read-only root fs, no capabilities, seccomp RuntimeDefault, preStop sleep within
server.shutdown_grace and terminationGracePeriodSeconds above both, HPA/PDB/Service/
ServiceMonitor/migration Job present and pointing at the gateway.

    validate_k8s.py RENDERED.yaml [--require-demo]     # needs PyYAML and jsonschema
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): Path(__file__).parent / "schemas" / "servicemonitor-v1.json"}


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


def find(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_checks(where: str, spec: dict, problems: list[str]) -> None:
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot"):
        problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for c in spec.get("containers", []):
        sc = c.get("securityContext", {})
        cw = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{cw}: capabilities must drop ALL")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            problems.append(f"{cw}: resources.requests and limits must be set")


def check(objs: list[dict], require_demo: bool) -> list[str]:
    problems: list[str] = []
    for o in objs:
        schema = SCHEMAS.get((o.get("apiVersion"), o.get("kind")))
        if schema:
            try:
                jsonschema.validate(o, json.loads(schema.read_text()))
            except jsonschema.ValidationError as e:
                problems.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.absolute_path)}")

    deps = find(objs, "Deployment", "corral")
    if not deps:
        return problems + ["no Deployment named corral"]
    dep = deps[0]
    spec = dep["spec"]["template"]["spec"]
    if dep["spec"].get("replicas", 1) < 3:
        problems.append("Deployment corral: fewer than 3 replicas")
    c = next((c for c in spec["containers"] if c["name"] == "corral"), None)
    if c is None:
        return problems + ["Deployment corral: no container named corral"]
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
        problems.append("corral: readinessProbe must GET /ready")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
        problems.append("corral: livenessProbe must GET /health")
    sc = c.get("securityContext", {})
    if not sc.get("readOnlyRootFilesystem"):
        problems.append("corral: readOnlyRootFilesystem must be true")
    pod_checks("Deployment corral", spec, problems)

    cms = find(objs, "ConfigMap", "corral-config")
    toml = cms[0]["data"]["corral.toml"] if cms else ""
    m = re.search(r'shutdown_grace\s*=\s*"([^"]+)"', toml)
    grace = seconds(m.group(1)) if m else 30.0
    if not re.search(r'listen\s*=\s*"0\.0\.0\.0:8080"', toml):
        problems.append('ConfigMap corral-config: [server] listen must be "0.0.0.0:8080"')
    if not re.search(r"\[database\][^\[]*url\s*=\s*\"postgres://", toml) or "[redis]" not in toml:
        problems.append("ConfigMap corral-config: needs a postgres [database] and a [redis] section")
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if sleep is None and len(cmd) == 2 and cmd[0] == "sleep":
        sleep = float(cmd[1])
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if sleep is None:
        problems.append("corral: no preStop sleep (endpoints need time to stop routing to a draining pod)")
    else:
        if not 0 < sleep < grace:
            problems.append(f"corral: preStop sleep {sleep}s must be within shutdown_grace {grace}s")
        if tgps <= sleep + grace:
            problems.append(f"corral: terminationGracePeriodSeconds {tgps} must exceed preStop {sleep}s + shutdown_grace {grace}s")

    env = {e["name"]: e for e in c.get("env", [])}
    for name in ("CORRAL__DATABASE__URL", "CORRAL__REDIS__URL"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            problems.append(f"corral: {name} must come from a Secret")

    selector = dep["spec"]["selector"]["matchLabels"]
    svc = find(objs, "Service", "corral")
    if not svc or svc[0]["spec"].get("selector") != selector:
        problems.append("Service corral missing or not selecting the gateway pods")
    hpa = find(objs, "HorizontalPodAutoscaler")
    if not hpa or hpa[0]["spec"]["scaleTargetRef"]["name"] != "corral" or hpa[0]["spec"].get("minReplicas", 1) < 3:
        problems.append("HPA missing, not targeting corral, or minReplicas < 3")
    pdb = find(objs, "PodDisruptionBudget")
    if not pdb or pdb[0]["spec"]["selector"].get("matchLabels") != selector:
        problems.append("PodDisruptionBudget missing or not selecting the gateway pods")
    sm = find(objs, "ServiceMonitor")
    if not sm or not any(e.get("path") == "/metrics" for e in sm[0]["spec"]["endpoints"]):
        problems.append("ServiceMonitor missing or not scraping /metrics")
    jobs = find(objs, "Job")
    if not jobs or "migrate" not in jobs[0]["spec"]["template"]["spec"]["containers"][0].get("args", []):
        problems.append("no migration Job running `corral migrate`")
    else:
        pod_checks(f"Job {jobs[0]['metadata']['name']}", jobs[0]["spec"]["template"]["spec"], problems)
    if require_demo:
        for kind, name in (("Namespace", None), ("StatefulSet", "postgres"), ("Deployment", "redis"),
                           ("Service", "postgres"), ("Service", "redis")):
            if not find(objs, kind, name):
                problems.append(f"demo overlay: missing {kind} {name or ''}".rstrip())
        ns = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
        if len(ns) != 1 or None in ns:
            problems.append(f"demo overlay: every object should be in one namespace, got {ns}")
    return problems


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    objs = [o for o in yaml.safe_load_all(Path(args[0]).read_text()) if o]
    problems = check(objs, "--require-demo" in sys.argv)
    for p in problems:
        print(f"FAIL {p}")
    print(f"k8s policy: {len(objs)} objects, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
