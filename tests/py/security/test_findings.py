"""Each finding of the hostile-user review (issue 20), run against a real corral process."""

import asyncio
import concurrent.futures
import time

import secrets

import httpx
import pytest

import harness
from harness import figure

KEY = "sk-pool-" + secrets.token_hex(16)


@pytest.fixture
def group(tmp_path):
    g = harness.Group(tmp_path)
    yield g
    g.close()


@pytest.fixture
def gw(group):
    """One replica, a one-key pool, body_timeout 2 s (through the environment)."""
    sim = group.sim("cloud", require_keys=[KEY])
    (group.workdir / "keys.txt").write_text(KEY + "\n")
    c = group.cluster([sim], replicas=1, backend_extra={"cloud": {"key_pool": "pool"}},
                      key_pools=[{"name": "pool", "keys_file": str(group.workdir / "keys.txt")}],
                      env={"CORRAL__SERVER__BODY_TIMEOUT": "2s"})
    return c, c.replicas[0], sim


def chat(model="qwen3:8b", text="hi", **extra):
    return {"model": model, "stream": False, "messages": [{"role": "user", "content": text}], **extra}


async def stalled_upload(port, token=None, declared=261_000, sent=260_000, hold=30.0):
    """Declares `declared` bytes, sends `sent`, stalls; returns (status line, seconds to close)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write((f"POST /admin/api/users HTTP/1.1\r\nHost: x\r\n{auth}"
                  f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode())
    try:
        writer.write(b"{" + b" " * (sent - 1))
        await writer.drain()
    except OSError:
        pass
    try:
        data = await asyncio.wait_for(reader.read(), timeout=hold)
    except (asyncio.TimeoutError, OSError):
        data = b""
    writer.close()
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line, time.monotonic() - start


def test_1_stalled_unauthenticated_uploads_cost_little_and_close_at_once(gw):
    c, r, _ = gw
    rss0 = r.rss_kib()
    served = []

    def normal_user():
        with httpx.Client(timeout=30) as h:
            for _ in range(5):
                served.append(h.post(f"{r.url}/api/chat", headers=c.headers(), json=chat()).status_code)

    async def run():
        peak = 0

        async def sample():
            nonlocal peak
            while True:
                peak = max(peak, r.rss_kib())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            user = asyncio.get_running_loop().run_in_executor(pool, normal_user)
            results = await asyncio.gather(*(stalled_upload(r.port) for _ in range(2000)))
            await user
        sampler.cancel()
        return results, peak

    results, peak = asyncio.run(run())
    refused = sum(1 for line, _ in results if " 401 " in line + " ")
    slowest = max(t for _, t in results)
    figure("20.1 stalled uploads", f"2000 unauthenticated uploads of 260,000/261,000 bytes: "
           f"{refused} answered 401 unread, slowest closed after {slowest:.1f} s, "
           f"RSS {rss0 // 1024} -> peak {peak // 1024} MiB; normal user {served}")
    assert refused == 2000
    assert slowest < 30
    # Connections are read 4 KiB at a time (api::body::Paced), so what the clients sent waits
    # in the kernel: +32 to +71 MiB measured over twelve runs (mostly about +40; more when all
    # 2,000 are open at once, up to about 36 KiB each of actix's own state and buffers), where
    # actix alone read up to 128 KiB each (+114 to +250 MiB).
    assert (peak - rss0) < 96 * 1024, (rss0, peak)
    assert served == [200] * 5

    # With a token, a stalled body is answered 408 within body_timeout (2 s here).
    async def authed():
        return await asyncio.gather(*(stalled_upload(r.port, c.admin_token, hold=20) for _ in range(50)))

    results = asyncio.run(authed())
    assert all(" 408 " in line + " " for line, _ in results), results[:3]
    assert max(t for _, t in results) < 10


def test_2_pool_keys_never_reach_the_client(gw):
    c, r, _ = gw
    resp = httpx.post(f"{r.url}/v1/chat/completions", headers=c.headers(),
                      json=chat(text="[[error=401]] hi"), timeout=30)
    assert resp.status_code == 502
    assert "refused corral's credentials" in resp.text and KEY not in resp.text
    rows = r.admin("requests?limit=5")["requests"]
    assert all(KEY not in (row.get("error") or "") for row in rows)


def test_3_one_refused_request_does_not_disable_the_pool(gw):
    c, r, _ = gw
    httpx.post(f"{r.url}/api/chat", headers=c.headers(), json=chat(text="[[error=401]] hi"), timeout=30)
    for _ in range(3):
        httpx.post(f"{r.url}/api/chat", headers=c.headers(), json=chat(text="[[error=500]] hi"), timeout=30)
    keys = r.admin("keys")["pools"][0]["keys"]
    assert keys[0]["state"] == "active", keys


def test_4_every_request_has_its_own_row(gw):
    c, r, _ = gw
    ids = set()
    for _ in range(5):
        resp = httpx.post(f"{r.url}/api/chat", headers={**c.headers(), "x-request-id": "dup"},
                          json=chat(), timeout=30)
        assert resp.headers["x-client-request-id"] == "dup"
        ids.add(resp.headers["x-request-id"])
    assert len(ids) == 5

    def rows():
        got = r.admin("requests?limit=50")["requests"]
        return [x for x in got if x.get("client_request_id") == "dup"]

    deadline = time.monotonic() + 10
    while len(rows()) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows()) == 5


def test_5_and_7_malformed_input_gets_400_in_the_dialects_shape(gw):
    c, r, _ = gw
    long = "m" * 10_000
    for path, shape in [("/api/chat", "ollama"), ("/v1/chat/completions", "openai"),
                        ("/v1/messages", "anthropic")]:
        for body in (["claude-x"], "x", 3, None):
            resp = httpx.post(f"{r.url}{path}", headers=c.headers(), json=body, timeout=30)
            assert resp.status_code == 400, (path, body, resp.text)
            err = resp.json()
            assert {"ollama": lambda e: "error" in e, "openai": lambda e: "message" in e["error"],
                    "anthropic": lambda e: e["type"] == "error"}[shape](err)
        resp = httpx.post(f"{r.url}{path}", headers=c.headers(),
                          json=chat(model=long, max_tokens=5), timeout=30)
        assert resp.status_code == 400 and len(resp.content) < 1024, path


def test_6_tpm_holds_for_a_parallel_burst(group):
    sim = group.sim("gpu")
    c = group.cluster([sim], replicas=1)
    token = c.create_user("burst", tpm=1000)
    r = c.replicas[0]

    def one(i):
        # Slow answers: every request is in flight at once, none reconciled yet.
        return httpx.post(f"{r.url}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                          json=chat(text=f"[[latency_ms=1500]] hi {i}", max_tokens=100),
                          timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(one, range(10)))
    time.sleep(2)
    rows = [x for x in r.admin("requests?limit=50&user=burst")["requests"]]
    spent = sum(x["tokens_in"] + x["tokens_out"] for x in rows)
    figure("20.6 tpm", f"10 parallel requests of max_tokens=100 against tpm=1000: "
           f"{statuses.count(200)} admitted, {statuses.count(429)} refused, {spent} tokens spent")
    assert spent <= 1050, spent
    assert statuses.count(429) > 0
    big = httpx.post(f"{r.url}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                     json=chat(max_tokens=5000), timeout=30)
    assert big.status_code == 429 and "never" in big.text
