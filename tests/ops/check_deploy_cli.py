#!/usr/bin/env python3
"""The deploy files against the REAL corral binary: every configuration they ship passes
`corral check-config`, and every corral command line they run actually works.

Configurations: corral.example.toml, deploy/compose/corral.toml, the `corral.toml` of the
ConfigMap in k8s/base and in k8s/overlays/example (rendered with tests/ops/kustomize_lite.py),
each checked with the environment overrides the deployment sets (CORRAL__DATABASE__URL,
CORRAL__REDIS__URL).

Command lines (everything after the `corral` entrypoint): the Dockerfile's CMD, every
compose service built from the corral image, every k8s container and Job whose image is
`corral` (base and example overlay), and the systemd unit's ExecStartPre/ExecStart. Each is
run for real on loopback with its paths mapped into a temp dir:
- `sim ...`: started with its own flags (only --port and --host changed, to a free loopback
  port); must answer /api/version and list the models its --models flag names. In a container
  it must also pass `--host 0.0.0.0`, or nothing outside the container can reach it.
- `migrate`: run against a temp SQLite database (the deployment's URL is replaced).
- `serve`: started with the deployment's configuration (database → temp SQLite, Redis off,
  key files → a temp file, listen → a free loopback port) until /health answers 200.
- `check-config`: run.

    CORRAL_BIN=target/debug/corral .venv/bin/python tests/ops/check_deploy_cli.py

Prints one line per check; exits 1 when any failed, 2 without a corral binary.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import kustomize_lite  # noqa: E402
from harness import ROOT, Checks, corral_bin, free_port, wait_http  # noqa: E402

CONTAINER_CONFIG = "/etc/corral/corral.toml"


def k8s_objects(target: str) -> list[dict]:
    return kustomize_lite.build(ROOT / "k8s" / target)


def k8s_config(objs: list[dict]) -> str:
    for o in objs:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == "corral-config":
            return o["data"]["corral.toml"]
    raise RuntimeError("no ConfigMap corral-config")


def k8s_commands(objs: list[dict], where: str):
    for o in objs:
        spec = (o.get("spec") or {}).get("template", {}).get("spec") or {}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            if re.fullmatch(r"corral(:.*)?", c.get("image", "")):
                yield f"{where} {o['kind']}/{o['metadata']['name']} container {c['name']}", (c.get("args") or DOCKER_CMD), True


def dockerfile_cmd() -> list[str]:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    m = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    return yaml.safe_load(m.group(1)) if m else []


DOCKER_CMD = dockerfile_cmd()


def compose_commands():
    doc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    for name, svc in doc["services"].items():
        if str(svc.get("image", "")).startswith("corral"):
            cmd = svc.get("command") or DOCKER_CMD
            yield f"compose service {name}", (shlex.split(cmd) if isinstance(cmd, str) else cmd), True


def systemd_commands():
    unit = (ROOT / "deploy" / "systemd" / "corral.service").read_text()
    for key, line in re.findall(r"^(ExecStartPre|ExecStart)=(.*)$", unit, re.M):
        argv = shlex.split(line.lstrip("-@+!"))
        if argv and argv[0].endswith("/corral"):
            yield f"systemd {key}", argv[1:], False


def subcommand(argv: list[str]) -> str | None:
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            i += 2
            continue
        if argv[i].startswith("--config="):
            i += 1
            continue
        return argv[i]
    return None


def flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def replace_flag(argv: list[str], name: str, value: str) -> list[str]:
    out, i, seen = [], 0, False
    while i < len(argv):
        if argv[i] == name:
            out += [name, value]
            i += 2
            seen = True
            continue
        if argv[i].startswith(name + "="):
            out.append(f"{name}={value}")
            seen = True
        else:
            out.append(argv[i])
        i += 1
    return out if seen else out + [name, value]


def local_config(text: str, tmp: Path, tag: str) -> Path:
    """The deployment's TOML with the paths it reads mapped into tmp."""
    keys = tmp / f"{tag}-apikeys.txt"
    keys.write_text("sk-deploy-check-0001\n")
    text = re.sub(r'keys_file\s*=\s*"[^"]*"', f'keys_file = "{keys}"', text)
    path = tmp / f"{tag}.toml"
    path.write_text(text)
    return path


def run_command(binary: str, label: str, argv: list[str], in_container: bool, configs: dict, tmp: Path, check: Checks):
    sub = subcommand(argv)
    cfg_arg = flag(argv, "--config")
    cfg_text = configs.get(cfg_arg) if cfg_arg else None
    env = {**os.environ, "RUST_LOG": "warn"}
    if sub == "sim":
        if in_container:
            check(flag(argv, "--host") in ("0.0.0.0", "::"), f"{label}: sim listens beyond the container (--host 0.0.0.0)",
                  "" if flag(argv, "--host") in ("0.0.0.0", "::") else "sim binds 127.0.0.1 by default: nothing else can reach it")
        port = free_port()
        run_argv = replace_flag(replace_flag(argv, "--port", str(port)), "--host", "127.0.0.1")
        p = subprocess.Popen([binary, *run_argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/version", timeout=15)
            names = sorted(m["name"] for m in httpx.get(f"http://127.0.0.1:{port}/api/tags", timeout=5).json()["models"])
            want = [m.split("=")[0] for m in (flag(argv, "--models") or "").split(",") if m]
            missing = [m for m in want if m not in names and f"{m}:latest" not in names]
            check(not missing, f"{label}: `corral {' '.join(argv)}` serves {', '.join(want) or 'the catalogue'}",
                  f"missing {missing}, got {names}" if missing else "")
        except Exception as e:  # noqa: BLE001
            check(False, f"{label}: `corral {' '.join(argv)}` did not start", f"{e} {p.stderr.read() if p.poll() is not None else ''}")
        finally:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        return
    if cfg_arg and cfg_text is None:
        check(False, f"{label}: --config {cfg_arg} is not a file this deployment provides")
        return
    local = local_config(cfg_text, tmp, re.sub(r"\W+", "-", label)) if cfg_text else None
    run_argv = replace_flag(argv, "--config", str(local)) if local else argv
    db = tmp / f"{re.sub(r'[^A-Za-z0-9]+', '-', label)}.db"
    env.update({"CORRAL__DATABASE__URL": f"sqlite://{db}", "CORRAL__REDIS__URL": ""})
    if sub in ("migrate", "check-config"):
        res = subprocess.run([binary, *run_argv], capture_output=True, text=True, env=env, timeout=60, cwd=tmp)
        check(res.returncode == 0, f"{label}: `corral {' '.join(argv)}` exits 0",
              res.stderr.strip().splitlines()[-1] if res.returncode else "")
    elif sub == "serve":
        port = free_port()
        p = subprocess.Popen([binary, *run_argv, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env, text=True, cwd=tmp)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
            check(True, f"{label}: `corral {' '.join(argv)}` serves /health")
        except Exception as e:  # noqa: BLE001
            err = p.stderr.read() if p.poll() is not None else ""
            check(False, f"{label}: `corral {' '.join(argv)}` did not come up", f"{e} {err.strip()[-300:]}")
        finally:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    else:
        check(False, f"{label}: unknown corral subcommand in `{' '.join(argv)}`")


def main() -> int:
    binary = corral_bin()
    if not binary:
        print("check_deploy_cli: no corral binary (set CORRAL_BIN or cargo build --bin corral)")
        return 2
    check = Checks()
    base, example = k8s_objects("base"), k8s_objects("overlays/example")
    compose_env = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["x-corral"]["environment"]
    tomls = {
        "corral.example.toml": ((ROOT / "corral.example.toml").read_text(), {}),
        "deploy/compose/corral.toml": ((ROOT / "deploy" / "compose" / "corral.toml").read_text(),
                                       {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in compose_env.items()
                                        if k.startswith("CORRAL__")}),
        "k8s/base ConfigMap corral.toml": (k8s_config(base), {"CORRAL__DATABASE__URL": "postgres://corral:x@postgres:5432/corral",
                                                               "CORRAL__REDIS__URL": "redis://redis:6379/0"}),
        "k8s/overlays/example ConfigMap corral.toml": (k8s_config(example), {}),
    }
    with tempfile.TemporaryDirectory(prefix="corral-deploy-") as d:
        tmp = Path(d)
        for name, (text, env) in tomls.items():
            path = tmp / (re.sub(r"\W+", "-", name) + ".toml")
            path.write_text(text)
            res = subprocess.run([binary, "--config", str(path), "check-config"], capture_output=True, text=True,
                                 env={**os.environ, **env, "RUST_LOG": "warn"}, timeout=30)
            check(res.returncode == 0, f"check-config {name}" + (f" (with {', '.join(env)})" if env else ""),
                  res.stderr.strip() if res.returncode else "")

        # Key files: where the TOML reads them is where the Deployment mounts the Secret.
        for where, objs in (("k8s/base", base), ("k8s/overlays/example", example)):
            mounts = {m["mountPath"] for o in objs if o.get("kind") == "Deployment" and o["metadata"]["name"] == "corral"
                      for c in o["spec"]["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
            for kf in re.findall(r'keys_file\s*=\s*"([^"]+)"', k8s_config(objs)):
                check(os.path.dirname(kf) in mounts, f"{where}: keys_file {kf} lies in a mounted volume", str(sorted(mounts)))

        commands = [("Dockerfile CMD", DOCKER_CMD, True), *compose_commands(), *systemd_commands(),
                    *k8s_commands(base, "k8s/base"), *k8s_commands(example, "k8s/overlays/example")]
        configs_by_context = {
            "compose": {CONTAINER_CONFIG: tomls["deploy/compose/corral.toml"][0]},
            "k8s/base": {CONTAINER_CONFIG: tomls["k8s/base ConfigMap corral.toml"][0]},
            "k8s/overlays/example": {CONTAINER_CONFIG: tomls["k8s/overlays/example ConfigMap corral.toml"][0]},
            "systemd": {CONTAINER_CONFIG: tomls["corral.example.toml"][0]},
            "Dockerfile": {CONTAINER_CONFIG: tomls["deploy/compose/corral.toml"][0]},
        }
        seen = set()
        for label, argv, in_container in commands:
            ctx = next(k for k in configs_by_context if label.startswith(k))
            key = (ctx, tuple(argv))
            if key in seen:
                continue
            seen.add(key)
            run_command(binary, label, list(argv), in_container, configs_by_context[ctx], tmp, check)
    print(f"deploy cli: {check.passed} passed, {len(check.failed)} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print(f"deploy cli: {time.monotonic() - t0:.1f} s")
    sys.exit(rc)
