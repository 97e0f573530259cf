"""Fixtures of the client suites: `corral sim` upstreams and `corral serve` gateways on free
loopback ports, from the shared harness (tests/harness). Every process started here is
stopped by its PID at teardown."""

import tempfile
from pathlib import Path

import pytest

from harness import FIGURES, Gateway, Sim


def pytest_terminal_summary(terminalreporter):
    """Repeats every FIGURE line of the run at the end."""
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="corral-py-") as d:
        yield Path(d)


@pytest.fixture
def started():
    """What the test started, stopped in reverse order at teardown."""
    items = []
    yield items
    for p in reversed(items):
        p.stop()


@pytest.fixture
def start_sim(started, workdir):
    def start(name="sim", models=None, vram="24GiB", extra=()):
        sim = Sim(workdir, name, vram=vram, models=models, extra=extra)
        started.append(sim)
        return sim

    return start


@pytest.fixture
def start_gateway(started, workdir):
    """One gateway over `sims` (priority 1, 2... in order), SQLite in the test's directory;
    with `users`, `admin_token` and `user_token` are set."""

    def start(sims, extra_toml="", backend_extra=None, users=True, env=None, name="gw", server_toml=""):
        extra = {s.name: {"priority": i + 1, **(backend_extra or {}).get(s.name, {})}
                 for i, s in enumerate(sims)}
        gw = Gateway(workdir, sims, name=name, backend_extra=extra, extra_toml=extra_toml,
                     env=env, users=users, shutdown_grace="5s", start=False, server_toml=server_toml)
        started.append(gw)
        gw.start()
        return gw

    return start


@pytest.fixture
def fleet(start_sim, start_gateway):
    """Two simulated backends behind one gateway."""
    a = start_sim("gpu-a", vram="48GiB")
    b = start_sim("gpu-b", vram="16GiB")
    gw = start_gateway([a, b])
    return gw, a, b
