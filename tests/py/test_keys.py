"""Upstream key pools: rotation by least use, a 429 retried at once with another key,
429 with Retry-After to the client only when every key is cooling down."""

import httpx
import pytest


@pytest.fixture
def keyed(start_sim, start_gateway, workdir):
    keys = ["ck-alpha-0001", "ck-bravo-0002", "ck-charl-0003"]
    (workdir / "keys.txt").write_text("# cloud keys\n" + "\r\n".join(keys) + "\n\nnot a key line with spaces\n")
    extra = []
    for k in keys:
        extra += ["--require-key", k]
    sim = start_sim("cloud", extra=[*extra, "--key-budget", "4", "--budget-window", "60s"])
    toml = f'[[key_pools]]\nname = "cloud"\nkeys_file = "{workdir}/keys.txt"\npenalty = "30s"\n'
    gw = start_gateway([sim], backend_extra={"cloud": {"key_pool": "cloud"}}, extra_toml=toml)
    return gw, sim, keys


def chat(gw, n):
    # Distinct prompts: identical ones within seconds would share one upstream call.
    return httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                      json={"model": "qwen3:8b", "stream": False,
                            "messages": [{"role": "user", "content": f"hi {n}"}]})


def test_keys_rotate_and_429_is_invisible_until_all_cool_down(keyed):
    gw, sim, keys = keyed
    codes = [chat(gw, i).status_code for i in range(12)]
    assert codes == [200] * 12, codes
    per_key = sim.stats()["requests_by_key"]
    assert sorted(per_key.get(k, 0) for k in keys) == [4, 4, 4], per_key
    r = chat(gw, 12)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "error" in r.json()
    listing = httpx.get(f"{gw.url}/admin/api/keys", headers=gw.headers(gw.admin_token)).json()
    pool = listing["pools"][0]
    assert pool["penalized"] == 3
    assert all(k["prefix"] not in keys and "…" in k["prefix"] for k in pool["keys"])
    metrics = gw.metrics()
    assert 'corral_key_state{pool="cloud",state="penalized"} 3' in metrics
    assert all(k not in metrics for k in keys)
    assert all(k not in gw.proc.output() for k in keys)
