"""corral itself: `corral sim` upstreams, and `corral serve` as one gateway or as N replicas
sharing one config file (one database, one Redis). The CLI (`users create`, `migrate`...)
runs against the same config as the servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx

from .procs import ROOT, Proc, free_port, wait_http

CORRAL = os.environ.get("CORRAL_BIN", str(ROOT / "target" / "debug" / "corral"))


def corral_bin() -> str | None:
    """The corral binary (CORRAL_BIN, else target/debug/corral) when it exists, else None."""
    if Path(CORRAL).is_file() and os.access(CORRAL, os.X_OK):
        return CORRAL
    return None


class Sim:
    """`corral sim`: a simulated Ollama upstream. `extra` is passed on as flags."""

    def __init__(self, workdir: Path, name: str, port: int | None = None, vram="24GiB",
                 models=None, require_keys=(), key_budget=None, budget_window="60s", extra=()):
        self.name, self.port = name, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [CORRAL, "sim", "--port", str(self.port), "--name", name, "--vram", vram, *extra]
        if models:
            args += ["--models", ",".join(models)]
        for k in require_keys:
            args += ["--require-key", k]
        if key_budget is not None:
            args += ["--key-budget", str(key_budget), "--budget-window", budget_window]
        self.args, self.log_path = args, workdir / f"sim-{name}.log"
        self.start()

    def start(self):
        self.proc = Proc(f"sim-{self.name}", self.args, self.log_path)
        wait_http(f"{self.url}/api/version", proc=self.proc)
        return self

    def stop(self):
        self.proc.stop(signal.SIGKILL)

    def stats(self):
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()

    def control(self, **knobs):
        r = httpx.post(f"{self.url}/_sim/control", json=knobs, timeout=5)
        r.raise_for_status()
        return r.json()


def toml_value(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return json.dumps(str(v))


def render_config(*, listen_port: int, db_url: str, redis_url: str = "", sims=(),
                  backend_extra=None, key_pools=(), extra_toml: str = "", workers: int = 2,
                  shutdown_grace: str = "10s", server_toml: str = "") -> str:
    """One corral TOML; `sims` are Sim objects or (name, url) pairs. `backend_extra` maps a
    backend name to more keys of its `[[backends]]` table (priority 1 and a 500 ms poll
    unless given); `server_toml` holds more `[server]` lines."""
    lines = ["[server]", f'listen = "127.0.0.1:{listen_port}"', f'shutdown_grace = "{shutdown_grace}"',
             f"workers = {workers}", server_toml, "[database]", f"url = {toml_value(db_url)}",
             "[redis]", f"url = {toml_value(redis_url)}"]
    for s in sims:
        name, url = (s.name, s.url) if isinstance(s, Sim) else s
        extra = dict((backend_extra or {}).get(name, {}))
        lines += ["[[backends]]", f"name = {toml_value(name)}", f"url = {toml_value(url)}"]
        extra.setdefault("priority", 1)
        extra.setdefault("poll_interval", "500ms")
        for k, v in extra.items():
            lines.append(f"{k} = {toml_value(v)}")
    for pool in key_pools:
        lines.append("[[key_pools]]")
        for k, v in pool.items():
            lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n" + extra_toml + "\n"


def metric_value(text: str, name: str, labels: dict | None = None) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        if labels:
            got = dict(p.split("=", 1) for p in _split_labels(lab.rstrip("}")))
            if any(got.get(k) != json.dumps(v) for k, v in labels.items()):
                continue
        total += float(value)
        found = True
    return total if found else 0.0


def _split_labels(s: str):
    out, cur, q = [], "", False
    for ch in s:
        if ch == '"':
            q = not q
        if ch == "," and not q:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


class Replica:
    """One `corral serve` of a Cluster, on its own port (`serve --listen`)."""

    def __init__(self, cluster: "Cluster", index: int, port: int | None = None):
        self.cluster, self.index = cluster, index
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, wait_ready: bool = True, env=None):
        c = self.cluster
        name = f"{c.name}-{self.index}"
        self.proc = Proc(name,
                         [CORRAL, "--config", str(c.config_path), "serve", "--listen",
                          f"127.0.0.1:{self.port}"],
                         c.workdir / f"{name}.log",
                         env={"RUST_LOG": "info", "NO_COLOR": "1", **c.env, **(env or {})}, cwd=str(c.workdir))
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 40.0):
        wait_http(f"{self.url}/health", timeout=timeout, proc=self.proc)
        wait_http(f"{self.url}/ready", timeout=timeout, proc=self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0):
        if self.proc:
            return self.proc.stop(sig, timeout)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, labels: dict | None = None) -> float:
        return metric_value(self.metrics(), name, labels)

    def admin(self, path: str, method="GET", **kw):
        r = httpx.request(method, f"{self.url}/admin/api/{path}",
                          headers={"Authorization": f"Bearer {self.cluster.admin_token}"},
                          timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def backends(self):
        return self.admin("backends")["backends"]

    def rss_kib(self) -> int:
        return self.proc.rss_kib()


class Cluster:
    """N corral replicas sharing one config file `NAME.toml` (one DB, one Redis), each on its
    own port. Started, it has run `migrate` and created an admin and a user (`admin_token`,
    `user_token`) with the CLI, unless `users=False`."""

    def __init__(self, workdir: Path, sims, replicas: int = 3, redis=None,
                 db_url: str | None = None, backend_extra=None, key_pools=(),
                 extra_toml: str = "", env=None, workers: int = 2, start: bool = True,
                 shutdown_grace: str = "10s", name: str = "cluster", wait_ready: bool = True,
                 users: bool = True, server_toml: str = ""):
        self.workdir, self.env, self.name = Path(workdir), dict(env or {}), name
        self.db_url = db_url or f"sqlite://{workdir}/{name}.db"
        self.redis = redis
        self.config_path = self.workdir / f"{name}.toml"
        self.config_path.write_text(render_config(
            listen_port=free_port(), db_url=self.db_url, redis_url=redis.url if redis else "",
            sims=sims, backend_extra=backend_extra, key_pools=key_pools,
            extra_toml=extra_toml, workers=workers, shutdown_grace=shutdown_grace,
            server_toml=server_toml))
        self.replicas = [Replica(self, i) for i in range(replicas)]
        self.admin_token = None
        self.user_token = None
        self.users, self.wait_ready = users, wait_ready
        if start:
            self.start()

    def start(self):
        """Migrates, creates the users, starts every replica and waits for it."""
        self.migrate()
        if self.users:
            self.admin_token = self.create_user(f"admin-{self.name}", admin=True)
            self.user_token = self.create_user(f"user-{self.name}")
        for r in self.replicas:
            r.start(wait_ready=False)
        for r in self.replicas:
            if self.wait_ready:
                r.wait_ready()
            else:  # no healthy backend yet: /ready stays 503, /health is enough
                wait_http(f"{r.url}/health", timeout=40, proc=r.proc)
        return self

    def cli(self, *args, check=True, timeout=60):
        r = subprocess.run([CORRAL, "--config", str(self.config_path), *args],
                           cwd=str(self.workdir), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env})
        if check and r.returncode != 0:
            raise RuntimeError(f"corral {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def migrate(self):
        return self.cli("migrate")

    def create_user(self, name, admin=False, rpm=None, tpm=None) -> str:
        """`corral users create` (works before any admin exists); returns the token."""
        args = ["users", "create", name]
        if admin:
            args.append("--admin")
        if rpm:
            args += ["--rpm", str(rpm)]
        if tpm:
            args += ["--tpm", str(tpm)]
        out = self.cli(*args).stdout
        tokens = [w for w in out.split() if w.startswith("crl_")]
        assert tokens, f"no token printed: {out!r}"
        return tokens[0]

    def headers(self, token=None):
        token = token or self.user_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def live(self):
        return [r for r in self.replicas if r.alive()]

    def stop(self):
        for r in self.replicas:
            r.stop()


class Gateway(Cluster):
    """One `corral serve`: a Cluster of one replica, with that replica's `url`, `port`,
    `proc` and `metrics()` at hand."""

    def __init__(self, workdir: Path, sims, name: str = "gw", **kw):
        super().__init__(workdir, sims, replicas=1, name=name, **kw)

    @property
    def replica(self) -> Replica:
        return self.replicas[0]

    @property
    def url(self) -> str:
        return self.replica.url

    @property
    def port(self) -> int:
        return self.replica.port

    @property
    def proc(self) -> Proc:
        return self.replica.proc

    def metrics(self) -> str:
        return self.replica.metrics()

    def metric(self, name: str, labels: dict | None = None) -> float:
        return self.replica.metric(name, labels)
