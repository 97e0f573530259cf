"""Scenario 1: replicas killed or restarted under load behind nginx."""

import signal
import threading
import time

import pytest

from harness import chat_body, figure, load, tally

pytestmark = pytest.mark.chaos

CLIENT_TIMEOUT = 10.0  # a client still waiting this long counts as hung


def body(i):
    # ~0.3 s per answer, half of them streamed, so a kill always catches some in flight
    return chat_body(f"req {i}", stream=i % 2 == 0, tokens=15) | {
        "messages": [{"role": "user", "content": f"req {i} [[tokens=15]] [[token_ms=20]]"}]}


def start(group, replicas=3, non_idempotent=False):
    sim = group.sim("gpu")
    c = group.cluster([sim], replicas=replicas, redis=group.redis(), shutdown_grace="10s")
    lb = group.nginx([r.port for r in c.replicas], non_idempotent=non_idempotent)
    return sim, c, lb


def background(lb, c, n, seconds, concurrency=6):
    out, stop = {}, threading.Event()
    th = threading.Thread(target=lambda: out.setdefault("res", load(
        lb.url, n, concurrency=concurrency, headers=c.headers(), body=body,
        max_seconds=seconds, timeout=CLIENT_TIMEOUT, stop=stop)))
    th.start()
    return th, stop, out


def test_replica_sigkill_under_load_no_hung_clients(group):
    sim, c, lb = start(group)
    th, stop, out = background(lb, c, 2000, 12)
    time.sleep(2.0)
    victim = c.replicas[1]
    victim.stop(signal.SIGKILL)
    t_kill = time.monotonic()
    time.sleep(4.0)
    stop.set()
    th.join(CLIENT_TIMEOUT + 30)
    res = out["res"]
    hung = [r for r in res if r.error == "ReadTimeout" or r.elapsed >= CLIENT_TIMEOUT]
    failed = [r for r in res if r.status != 200]
    slowest_failure = max((r.elapsed for r in failed), default=0.0)
    figure("1-replica-sigkill", f"{len(res)} requests, statuses {tally(res)}, {len(failed)} "
                                f"failed (in flight on the killed replica), slowest failure "
                                f"{slowest_failure:.2f} s, hung clients {len(hung)}")
    assert not hung
    # Only requests already sent to the killed replica may fail; everything else is retried.
    assert len(failed) <= 6 * 2, tally(res)
    _ = t_kill


def test_rolling_sigterm_restart_loses_nothing(group):
    sim, c, lb = start(group)
    th, stop, out = background(lb, c, 3000, 40, concurrency=4)
    time.sleep(1.0)
    restarts = []
    for r in c.replicas:
        t0 = time.monotonic()
        rc = r.stop(signal.SIGTERM, timeout=20)
        t_stopped = time.monotonic()
        r.start()
        restarts.append((rc, round(t_stopped - t0, 2), round(time.monotonic() - t_stopped, 2)))
        time.sleep(1.0)
    stop.set()
    th.join(CLIENT_TIMEOUT + 60)
    res = out["res"]
    t = tally(res)
    lost = [r for r in res if r.status != 200]
    figure("1-rolling-restart", f"{len(res)} requests across a rolling SIGTERM restart of 3 "
                                f"replicas: statuses {t}, lost {len(lost)}; (exit code, "
                                f"drain s, start s) per replica {restarts}")
    assert not lost, [(r.status, r.error, r.body[:120]) for r in lost[:5]]
    assert all(rc == 0 for rc, _, _ in restarts), restarts
