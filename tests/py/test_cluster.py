"""Issue 6 "done when": three corral replicas behind nginx share one redis-server and one
Postgres (SQLite file when Postgres cannot start), in front of a `corral sim` that requires
keys and answers 429 past a per-key budget.

The tests share one cluster (module scope) and run in file order: spread first (no
penalties yet), then a penalty, the per-user limit, a revocation, and Redis killed last.
"""

import threading
import time

import httpx
import pytest

import harness
from harness import chat_body, figure, load, tally, wait_until

pytestmark = pytest.mark.cluster

KEYS = [f"sk-cluster-{i}-" + "x" * 24 for i in range(4)]
PENALTY_S = 60  # long enough to outlive the Redis restart at the end of the module


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    g = harness.Group(workdir)
    try:
        redis = g.redis()
        db_url, pg, why = g.database()
        figure("cluster-db", why or f"Postgres 15 on 127.0.0.1:{pg.port} shared by 3 replicas")
        (workdir / "keys.txt").write_text("\n".join(KEYS) + "\n")
        sim = g.sim("cloud", require_keys=KEYS, extra=["--tokens", "2"])
        cluster = g.cluster(
            [sim], replicas=3, redis=redis, db_url=db_url,
            backend_extra={"cloud": {"key_pool": "pool"}},
            key_pools=[{"name": "pool", "keys_file": str(workdir / "keys.txt"),
                        "penalty": f"{PENALTY_S}s", "penalty_max": f"{PENALTY_S}s",
                        "usage_limit_penalty": f"{PENALTY_S}s"}])
        lb = g.nginx([r.port for r in cluster.replicas])
        yield dict(g=g, redis=redis, pg=pg, sim=sim, cluster=cluster, lb=lb, workdir=workdir)
    finally:
        g.close()


def key_counts(sim):
    by_key = sim.stats()["requests_by_key"]
    return {k: by_key.get(k, 0) for k in KEYS}


def penalized(replica) -> float:
    return replica.metric("corral_key_state", {"pool": "pool", "state": "penalized"})


def test_usage_spreads_evenly_over_keys(env):
    sim, cluster, lb = env["sim"], env["cluster"], env["lb"]
    before = key_counts(sim)
    res = load(lb.url, 1000, concurrency=6, headers=cluster.headers(), max_seconds=120)
    after = key_counts(sim)
    used = {k[:12]: after[k] - before[k] for k in KEYS}
    ok = sum(1 for r in res if r.status == 200)
    ratio = max(used.values()) / max(min(used.values()), 1)
    figure("cluster-spread", f"{len(res)} requests via nginx over 3 replicas, {ok} ok, "
                             f"per key {sorted(used.values())}, max/min {ratio:.2f}")
    assert ok == len(res) == 1000, tally(res)
    assert ratio <= 1.5, used


def test_penalized_key_skipped_by_every_replica_within_1s(env):
    sim, cluster = env["sim"], env["cluster"]
    victim = KEYS[0]
    # The sim answers 429 past 200 requests per key per minute; spend the victim's budget
    # directly at the sim so that only that key is over it.
    sim.control(key_budget=200, budget_window="60s", reset_budgets=True)
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {victim}"}) as c:
        for _ in range(200):
            assert c.post(f"{sim.url}/api/chat", json=chat_body(tokens=1)).status_code == 200
    assert all(penalized(r) == 0 for r in cluster.replicas)
    r0 = cluster.replicas[0]
    hit = None
    with httpx.Client(timeout=10, headers=cluster.headers()) as c:
        for i in range(20):
            n = key_counts(sim)[victim]
            # Distinct prompts, so that every probe reaches the sim (no shared answer).
            resp = c.post(f"{r0.url}/api/chat", json=chat_body(f"probe {i}", tokens=1))
            t_hit = time.monotonic()
            assert resp.status_code == 200, resp.text  # the 429 is retried with another key
            if key_counts(sim)[victim] > n:
                hit = t_hit
                break
    assert hit, "replica 0 never picked the victim key"

    def all_see():
        return all(penalized(r) >= 1 for r in cluster.replicas)

    seen, _ = wait_until(all_see, timeout=5)
    lag = time.monotonic() - hit if seen else None
    # Let every replica send traffic: none may use the victim key again.
    v0 = key_counts(sim)[victim]
    res = []
    for r in cluster.replicas:
        res += load(r.url, 40, concurrency=2, headers=cluster.headers(), max_seconds=30)
    v1 = key_counts(sim)[victim]
    sim.control(key_budget=None, reset_budgets=True)
    figure("cluster-penalty", f"penalty seen by all 3 replicas "
                              f"{'%.3f s' % lag if lag is not None else 'NOT within 5 s'} "
                              f"after the 429 answer; victim key used {v1 - v0} times in "
                              f"{len(res)} later requests ({tally(res)})")
    assert seen and lag <= 1.5, f"penalty not on every replica within 1 s (+0.5 s margin): {lag}"
    assert v1 == v0
    assert all(r.status == 200 for r in res), tally(res)


def test_user_rpm_limit_holds_across_replicas(env):
    cluster, lb = env["cluster"], env["lb"]
    token = cluster.create_user("limited", rpm=60)
    # A sliding log allows at most 60 in ANY 60 s window, so hammering for a few seconds
    # from the start of the window is a full-window check: exactly 60 may succeed.
    t0 = time.monotonic()
    res = load(lb.url, 400, concurrency=6, headers={"Authorization": f"Bearer {token}"},
               max_seconds=8)
    took = time.monotonic() - t0
    t = tally(res)
    ok = t.get(200, 0)
    limited = [r for r in res if r.status == 429]
    backends = {}
    for line in lb.access_log()[-len(res):]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "200":
            backends[parts[1]] = backends.get(parts[1], 0) + 1
    figure("cluster-rpm", f"user rpm=60: {ok} successes of {len(res)} requests over {took:.1f} s "
                          f"via nginx (window 60 s, sliding log), statuses {t}, "
                          f"successes per replica {sorted(backends.values())}")
    assert 57 <= ok <= 63, t
    assert len(limited) == len(res) - ok, t
    assert len(backends) == 3, backends


def test_revoked_token_stops_everywhere_within_1s(env):
    cluster = env["cluster"]
    token = cluster.create_user("leaving")
    h = {"Authorization": f"Bearer {token}"}
    # Warm every replica's token cache. A token created by the CLI is unknown to a replica
    # until its next user-table reload, which unknown tokens trigger at most once a second.
    for r in cluster.replicas:
        ok, _ = wait_until(lambda: httpx.post(f"{r.url}/api/chat", json=chat_body(tokens=1),
                                              headers=h, timeout=10).status_code == 200,
                           timeout=3, step=0.1)
        assert ok, f"new token never accepted by replica {r.index}"
    t_cli = time.monotonic()
    cluster.cli("users", "deactivate", "leaving")
    t_done = time.monotonic()
    lags = {}
    with httpx.Client(timeout=5, headers=h) as c:
        while len(lags) < 3 and time.monotonic() - t_done < 5:
            for r in cluster.replicas:
                if r.index not in lags and c.get(f"{r.url}/api/tags").status_code == 401:
                    lags[r.index] = time.monotonic() - t_done
            time.sleep(0.01)
    worst = max(lags.values()) if len(lags) == 3 else None
    figure("cluster-revoke", f"revoked token refused by {len(lags)}/3 replicas, slowest "
                             f"{worst if worst is None else round(worst, 3)} s after "
                             f"`users deactivate` returned (the CLI itself took "
                             f"{t_done - t_cli:.2f} s)")
    assert len(lags) == 3 and worst <= 1.5, lags


def test_redis_killed_mid_run_then_restored(env):
    redis, cluster, lb, sim = env["redis"], env["cluster"], env["lb"], env["sim"]
    stop = threading.Event()
    out = {}
    bg = threading.Thread(target=lambda: out.setdefault("res", load(
        lb.url, 3000, concurrency=3, headers=cluster.headers(), max_seconds=25, stop=stop,
        pause=0.01)))
    bg.start()
    time.sleep(1.0)
    redis.kill()
    t_kill = time.monotonic()
    down, down_s = wait_until(
        lambda: all(r.metric("corral_redis_up") == 0 for r in cluster.replicas), timeout=10,
        step=0.1)
    time.sleep(2.0)
    redis.start()
    t_up = time.monotonic()
    up, up_s = wait_until(
        lambda: all(r.metric("corral_redis_up") == 1 for r in cluster.replicas), timeout=15,
        step=0.1)
    time.sleep(1.0)
    stop.set()
    bg.join(60)
    res = out.get("res", [])
    t = tally(res)
    # Shared state is back: the running penalty was replayed into the new Redis, and a
    # fresh penalty published now reaches every replica again.
    pen_hash = redis.cmd("HLEN", "corral:keys:penalty")
    deactivate_lag = None
    token = cluster.create_user("after-restart")
    h = {"Authorization": f"Bearer {token}"}
    for r in cluster.replicas:
        wait_until(lambda: httpx.post(f"{r.url}/api/chat", json=chat_body(tokens=1), headers=h,
                                      timeout=10).status_code == 200, timeout=3, step=0.1)
    cluster.cli("users", "deactivate", "after-restart")
    t0 = time.monotonic()
    refused, deactivate_lag = wait_until(
        lambda: all(httpx.get(f"{r.url}/api/tags", headers=h, timeout=5).status_code == 401
                    for r in cluster.replicas), timeout=5)
    figure("cluster-redis-kill",
           f"{len(res)} requests during kill+restart: {t}; redis_up=0 on all replicas "
           f"{down_s:.2f} s after SIGKILL, back to 1 {up_s:.2f} s after restart; penalty hash "
           f"entries after restart {pen_hash}; revocation after restart reached all in "
           f"{deactivate_lag:.3f} s")
    assert down and up
    assert t.get(200, 0) == len(res) > 50, t
    assert isinstance(pen_hash, int) and pen_hash >= 1, pen_hash
    assert refused and deactivate_lag <= 1.5
    _ = sim, t_kill, t_up
