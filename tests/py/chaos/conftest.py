"""Fixtures of the fault, load and abuse suite (issue 10).

`group` starts processes for one scenario and, at teardown, checks scenario 10 on every
corral replica still running: `/admin/api/backends` must show in-flight 0 and reserved
memory 0 once the scenario's traffic is over. Scenarios marked `chaos_long` run only with
CORRAL_CHAOS_LONG=1 (`make test-chaos`).
"""

import os
import time

import pytest

import harness


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CORRAL_CHAOS_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long scenario: set CORRAL_CHAOS_LONG=1 (make test-chaos)")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)


def leases_zero(cluster, timeout=5.0):
    """Polls every live replica until all backends show inflight 0 and reserved_memory 0.
    Returns (ok, last snapshot {replica: [(backend, inflight, reserved)]}, seconds)."""
    def snap():
        out = {}
        for r in cluster.live():
            try:
                out[r.index] = [(b["name"], b["inflight"], b["reserved_memory"])
                                for b in r.backends()]
            except Exception as e:  # noqa: BLE001 - a replica that cannot answer is not zero
                out[r.index] = [("error", str(e), None)]
        return out

    t0 = time.monotonic()
    last = {}
    while True:
        last = snap()
        if all(inf == 0 and res == 0 for rows in last.values() for _, inf, res in rows):
            return True, last, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return False, last, time.monotonic() - t0
        time.sleep(0.1)


@pytest.fixture
def group(tmp_path, request):
    g = harness.Group(tmp_path)
    yield g
    try:
        clusters = [i for i in g.items if isinstance(i, harness.Cluster)]
        problems = []
        for c in clusters:
            if not c.live() or c.admin_token is None:
                continue
            ok, last, took = leases_zero(c)
            n = sum(len(rows) for rows in last.values())
            harness.figure(f"leases[{request.node.name}]",
                           f"{'zero' if ok else 'NOT zero'} on {len(last)} replicas x backends "
                           f"({n} rows) after {took:.2f} s")
            if not ok:
                problems.append(last)
        assert not problems, f"leases not released after the scenario: {problems}"
    finally:
        g.close()
