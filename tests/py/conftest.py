"""Process fixtures: `corral sim` upstreams and `corral serve` gateways on free loopback ports.

Every process started here is stopped by its PID at teardown.
"""

import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from procs import CORRAL, Proc, Sim, free_port, toml_value, wait_http


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
        sim = Sim(workdir, name, vram=vram, models=models, extra=extra)
        procs.append(sim)
        return sim

    return start


@pytest.fixture
def start_gateway(procs, workdir):
    def start(sims, extra_toml="", backend_extra=None, users=True, env=None, name="gw", server_toml=""):
        port = free_port()
        lines = [
            "[server]",
            f'listen = "127.0.0.1:{port}"',
            'shutdown_grace = "5s"',
            "workers = 2",
            server_toml,
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
        p = Proc(name, [CORRAL, "--config", str(cfg), "serve"], workdir / f"{name}.log", env=env)
        procs.append(p)
        gw = Gateway(p, port, cfg, workdir)
        wait_http(f"{gw.url}/health")
        if users:
            gw.admin_token = create_user(gw, f"admin-{name}", admin=True)
            gw.user_token = create_user(gw, f"user-{name}")
        wait_http(f"{gw.url}/ready", timeout=20)
        return gw

    return start


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
