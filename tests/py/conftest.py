"""Process fixtures: `corral sim` upstreams and `corral serve` gateways on free loopback ports.

Every process started here is stopped by its PID at teardown.
"""

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORRAL = os.environ.get("CORRAL_BIN", str(ROOT / "target" / "debug" / "corral"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code in ok:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up: {last}")


class Proc:
    """A child process with its log file; stopped by PID."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self):
        return self.popen.pid

    def stop(self, sig=None):
        if self.popen.poll() is None:
            if sig is None:
                self.popen.terminate()
            else:
                os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")


class Sim:
    def __init__(self, proc, port, name):
        self.proc, self.port, self.name = proc, port, name
        self.url = f"http://127.0.0.1:{port}"

    def stats(self):
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()

    def control(self, **knobs):
        r = httpx.post(f"{self.url}/_sim/control", json=knobs, timeout=5)
        r.raise_for_status()
        return r.json()


class Gateway:
    def __init__(self, proc, port, config_path, workdir):
        self.proc, self.port, self.config_path, self.workdir = proc, port, config_path, workdir
        self.url = f"http://127.0.0.1:{port}"
        self.admin_token = None
        self.user_token = None

    def cli(self, *args, check=True):
        return subprocess.run(
            [CORRAL, "--config", str(self.config_path), *args],
            cwd=self.workdir, capture_output=True, text=True, check=check, timeout=60,
        )

    def headers(self, token=None):
        token = token or self.user_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="corral-py-") as d:
        yield Path(d)


@pytest.fixture
def procs():
    started = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def start_sim(procs, workdir):
    def start(name="sim", models=None, vram="24GiB", extra=()):
        port = free_port()
        args = [CORRAL, "sim", "--port", str(port), "--name", name, "--vram", vram, *extra]
        if models:
            args += ["--models", ",".join(models)]
        p = Proc(args, workdir / f"{name}.log")
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/api/version")
        return Sim(p, port, name)

    return start


def toml_value(v):
    return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


@pytest.fixture
def start_gateway(procs, workdir):
    def start(sims, extra_toml="", backend_extra=None, users=True, env=None, name="gw"):
        port = free_port()
        lines = [
            "[server]",
            f'listen = "127.0.0.1:{port}"',
            'shutdown_grace = "5s"',
            "workers = 2",
            "[database]",
            f'url = "sqlite://{workdir}/{name}.db"',
        ]
        for i, s in enumerate(sims):
            lines += ["[[backends]]", f'name = "{s.name}"', f'url = "{s.url}"',
                      f"priority = {i + 1}", 'poll_interval = "500ms"']
            for k, v in (backend_extra or {}).get(s.name, {}).items():
                lines.append(f"{k} = {toml_value(v)}")
        cfg = workdir / f"{name}.toml"
        cfg.write_text("\n".join(lines) + "\n" + extra_toml)
        p = Proc([CORRAL, "--config", str(cfg), "serve"], workdir / f"{name}.log", env=env)
        procs.append(p)
        gw = Gateway(p, port, cfg, workdir)
        wait_http(f"{gw.url}/health")
        if users and supports_users():
            gw.admin_token = create_user(gw, f"admin-{name}", admin=True)
            gw.user_token = create_user(gw, f"user-{name}")
        wait_http(f"{gw.url}/ready", timeout=20)
        return gw

    return start


def supports_users() -> bool:
    r = subprocess.run([CORRAL, "users", "--help"], capture_output=True, text=True)
    return r.returncode == 0


def create_user(gw, name, admin=False, rpm=None, tpm=None) -> str:
    args = ["users", "create", name]
    if admin:
        args.append("--admin")
    if rpm:
        args += ["--rpm", str(rpm)]
    if tpm:
        args += ["--tpm", str(tpm)]
    out = gw.cli(*args).stdout
    tokens = [w for w in out.split() if w.startswith("crl_")]
    assert tokens, f"no token printed: {out!r}"
    return tokens[0]


@pytest.fixture
def fleet(start_sim, start_gateway):
    """Two simulated backends behind one gateway."""
    a = start_sim("gpu-a", vram="48GiB")
    b = start_sim("gpu-b", vram="16GiB")
    gw = start_gateway([a, b])
    return gw, a, b
