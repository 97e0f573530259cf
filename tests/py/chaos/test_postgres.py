"""Scenarios 8 and 9: Postgres stopped or hung under load; three replicas migrating at once."""

import os
import threading
import time

import httpx
import pytest

import harness
from harness import chat_body, figure, load, tally, wait_until

pytestmark = pytest.mark.chaos


def rows_for(pg, user):
    return int(pg.sql(f"SELECT count(*) FROM request_logs WHERE user_name = '{user}'"))


def outage(group, kind, seconds, scenario):
    pg = group.postgres()
    sim = group.sim("gpu")
    c = group.cluster([sim], replicas=2, db_url=pg.url, redis=group.redis())
    token = c.create_user("logged")
    h = {"Authorization": f"Bearer {token}"}
    for r in c.replicas:
        ok, _ = wait_until(lambda: httpx.get(f"{r.url}/api/tags", headers=h).status_code == 200, 3)
        assert ok
    stop = threading.Event()
    res_all = {}

    def run(r):
        res_all[r.index] = load(r.url, 100000, concurrency=2, headers=h, max_seconds=seconds + 6,
                                stop=stop, pause=0.02)

    ths = [threading.Thread(target=run, args=(r,)) for r in c.replicas]
    for t in ths:
        t.start()
    time.sleep(2.0)
    t0 = time.monotonic()
    if kind == "stop":
        pg.stop()
        time.sleep(seconds)
        pg.start()
    else:
        pg.pause()
        time.sleep(seconds)
        pg.resume()
    t_back = time.monotonic()
    time.sleep(2.0)
    stop.set()
    for t in ths:
        t.join(seconds + 60)
    res = [x for v in res_all.values() for x in v]
    sent_ok = sum(1 for x in res if x.status == 200)
    # Wait for the writers to catch up, then compare rows + dropped with what was sent.
    settled, took = wait_until(lambda: rows_for(pg, "logged") + sum(
        r.metric("corral_log_dropped_total") for r in c.replicas) >= len(res), timeout=30,
        step=0.5)
    rows = rows_for(pg, "logged")
    dropped = sum(r.metric("corral_log_dropped_total") for r in c.replicas)
    slow = max((x.elapsed for x in res), default=0)
    figure(scenario, f"Postgres {kind} for {seconds} s under load on 2 replicas: {len(res)} "
                     f"requests {tally(res)}, slowest {slow:.2f} s; log rows {rows} + dropped "
                     f"{dropped:.0f} = {rows + dropped:.0f} of {len(res)} sent; caught up "
                     f"{took:.1f} s after traffic ended")
    _ = t0, t_back, sent_ok
    return res, rows, dropped


def test_postgres_stopped_briefly(group):
    res, rows, dropped = outage(group, "stop", 5, "8-postgres-stop-5s")
    assert res and all(x.status == 200 for x in res), tally(res)
    assert rows + dropped >= len(res)


def test_postgres_hung_briefly(group):
    res, rows, dropped = outage(group, "hang", 5, "8-postgres-hang-5s")
    assert res and all(x.status == 200 for x in res), tally(res)
    assert rows + dropped >= len(res)


@pytest.mark.chaos_long
def test_postgres_stopped_30s(group):
    res, rows, dropped = outage(group, "stop", 30, "8-postgres-stop-30s")
    assert res and all(x.status == 200 for x in res), tally(res)
    assert rows + dropped >= len(res)


@pytest.mark.chaos_long
def test_postgres_hung_30s(group):
    res, rows, dropped = outage(group, "hang", 30, "8-postgres-hang-30s")
    assert res and all(x.status == 200 for x in res), tally(res)
    assert rows + dropped >= len(res)


def test_three_replicas_migrate_empty_postgres_at_once(group):
    pg = group.postgres()
    sim = group.sim("gpu")
    url = pg.reset_db("fresh")
    c = group.cluster([sim], replicas=3, db_url=url, start=False)
    for r in c.replicas:
        r.start(wait_ready=False)
    started = []
    for r in c.replicas:
        try:
            r.wait_ready(timeout=60)
            started.append(r.index)
        except RuntimeError as e:
            print(e)
    versions = pg.sql("SELECT count(*) FROM __diesel_schema_migrations", db="fresh") if started else "?"
    logs = "\n".join(r.proc.output() for r in c.replicas)
    applied_msgs = sum(1 for ln in logs.splitlines() if "migration" in ln.lower())
    figure("9-concurrent-migrations", f"3 replicas on an empty Postgres: {len(started)}/3 ready; "
                                      f"{versions} migrations recorded once each; "
                                      f"{applied_msgs} log lines mention migrations")
    assert len(started) == 3, [r.proc.tail() for r in c.replicas]
    dup = pg.sql("SELECT count(*) - count(DISTINCT version) FROM __diesel_schema_migrations",
                 db="fresh")
    assert dup == "0"
    _ = os
