"""The official `ollama` Python client against corral in front of `corral sim` (docs/PROTOCOLS.md §8.1)."""

import json
import socket
import time

import httpx
import ollama
import pytest


def client(gw, token=None):
    return ollama.Client(host=gw.url, headers=gw.headers(token))


def test_list_show_ps(fleet):
    gw, _, _ = fleet
    c = client(gw)
    names = [m.model for m in c.list().models]
    assert "qwen3:8b" in names and "nomic-embed-text:latest" in names
    assert len(names) == len(set(names)), "union must be deduplicated"
    for name in names:
        if name == "auto":
            continue
        shown = c.show(name)
        assert shown.capabilities, name
    c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    resident = [m.model for m in c.ps().models]
    assert "qwen3:8b" in resident


def test_chat_stream_ends_with_done(fleet):
    gw, _, _ = fleet
    frames = list(client(gw).chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(frames) > 2
    assert frames[-1].done and frames[-1].done_reason == "stop"
    assert frames[-1].eval_count > 0
    assert all(not f.done for f in frames[:-1])


def test_chat_and_generate_non_stream(fleet):
    gw, _, _ = fleet
    c = client(gw)
    r = c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hello"}])
    assert r.message.role == "assistant" and r.message.content
    g = c.generate(model="llama3.1:8b", prompt="say something")
    assert g.response and g.done
    gs = list(c.generate(model="llama3.1:8b", prompt="stream it", stream=True))
    assert gs[-1].done and "".join(x.response for x in gs)


def test_raw_stream_default_is_ndjson_without_blank_lines(fleet):
    gw, _, _ = fleet
    with httpx.stream("POST", f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                      json={"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["x-corral-backend"] in ("gpu-a", "gpu-b")
        assert r.headers["x-corral-model"] == "qwen3:8b"
        assert r.headers["x-request-id"]
        body = r.read().decode()
    lines = body.split("\n")
    assert lines[-1] == ""
    assert len(lines) > 3
    for line in lines[:-1]:
        assert line, "blank NDJSON line"
        json.loads(line)


def test_unicode_line_separators_round_trip(fleet):
    gw, _, _ = fleet
    frames = list(client(gw).chat(model="qwen3:8b", stream=True,
                                  messages=[{"role": "user", "content": "[[unicode]]"}]))
    text = "".join(f.message.content for f in frames)
    assert "\u2028" in text and "\u2029" in text
    assert frames[-1].done


def test_tool_calls(fleet):
    gw, _, _ = fleet
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
    c = client(gw)
    r = c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "open main.rs"}], tools=tools)
    call = r.message.tool_calls[0]
    assert call.function.name == "read_file"
    assert isinstance(call.function.arguments, dict) and "path" in call.function.arguments
    assert r.done_reason == "stop"
    frames = list(c.chat(model="qwen3:8b", stream=True, tools=tools,
                         messages=[{"role": "user", "content": "open main.rs [[tool_on_done]]"}]))
    calls = [tc for f in frames for tc in (f.message.tool_calls or [])]
    assert calls and calls[0].function.name == "read_file"


def test_mid_stream_failure_raises_and_never_says_done(fleet):
    gw, _, _ = fleet
    with pytest.raises(ollama.ResponseError):
        for _ in client(gw).chat(model="qwen3:8b", stream=True,
                                 messages=[{"role": "user", "content": "[[fail_mid]]"}]):
            pass
    body = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                      json={"model": "qwen3:8b", "messages": [{"role": "user", "content": "[[truncate]]"}]}).text
    last = json.loads(body.strip().split("\n")[-1])
    assert "error" in last
    assert '"done":true' not in body


def test_embeddings(fleet):
    gw, _, _ = fleet
    c = client(gw)
    e = c.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) > 10
    one = c.embeddings(model="nomic-embed-text", prompt="a")
    assert len(one.embedding) == len(e.embeddings[0])


def test_errors_in_ollama_shape(fleet):
    gw, _, _ = fleet
    h = gw.headers()
    r = httpx.post(f"{gw.url}/api/chat", headers=h, content=b"{not json", timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(f"{gw.url}/api/chat", headers=h, timeout=10,
                   json={"model": "no-such-model:1b", "messages": []})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    with pytest.raises(ollama.ResponseError) as e:
        client(gw).chat(model="no-such-model:1b", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    big = b'{"model":"qwen3:8b","prompt":"' + b"x" * (33 * 1024 * 1024) + b'"}'
    r = httpx.post(f"{gw.url}/api/generate", headers=h, content=big, timeout=30)
    assert r.status_code == 413 and "error" in r.json()
    assert httpx.get(f"{gw.url}/health").status_code == 200


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/api/delete"), ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"),
    ("POST", "/api/copy"), ("POST", "/api/blobs/sha256:abc"), ("POST", "/api/me"), ("POST", "/api/signout"),
])
def test_management_is_forbidden_for_users(fleet, method, path):
    gw, _, _ = fleet
    r = httpx.request(method, f"{gw.url}{path}", headers=gw.headers(), json={"model": "qwen3:8b"}, timeout=10)
    assert r.status_code == 403 and "error" in r.json()


def test_failover_before_first_byte(fleet):
    gw, a, b = fleet
    a.control(fail_rate=1.0)
    b.control(fail_rate=1.0)
    r = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                   json={"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert r.status_code in (502, 503) and "error" in r.json()
    b.control(fail_rate=0.0)
    for i in range(6):
        # Distinct prompts: each must be placed, not served from the previous answer.
        r = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                       json={"model": "qwen3:8b", "messages": [{"role": "user", "content": f"hi {i}"}],
                             "stream": False})
        assert r.status_code == 200, r.text
        assert r.headers["x-corral-backend"] == "gpu-b"
    a.control(fail_rate=0.0)


def test_client_disconnect_cancels_upstream(fleet):
    gw, a, b = fleet
    sock = socket.create_connection(("127.0.0.1", gw.port))
    body = json.dumps({"model": "qwen3:8b", "messages": [{"role": "user", "content": "[[tokens=400]] [[token_ms=50]]"}]})
    auth = "".join(f"{k}: {v}\r\n" for k, v in gw.headers().items())
    sock.sendall(f"POST /api/chat HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    assert b"200 OK" in sock.recv(4096)
    open_streams = lambda: a.stats()["open_streams"] + b.stats()["open_streams"]
    assert open_streams() == 1
    sock.close()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and open_streams() > 0:
        time.sleep(0.05)
    assert open_streams() == 0, "upstream stream still open 1.5 s after the client left"


def test_metrics_and_health(fleet):
    gw, _, _ = fleet
    client(gw).chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    text = gw.metrics()
    assert 'corral_requests_total{backend=' in text
    assert "corral_time_to_first_byte_seconds_bucket" in text
    assert gw.user_token is None or gw.user_token not in text
    assert httpx.get(f"{gw.url}/ready").status_code == 200


@pytest.mark.parametrize("prompt,category", [
    ("Fix this Rust function:\n```rust\nfn main() { let x: i32 = \"a\"; }\n```", "code"),
    ("Write a short poem about the sea at night", "creative"),
])
def test_auto_model_classifies_and_explains(fleet, prompt, category):
    gw, _, _ = fleet
    r = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                   json={"model": "auto", "stream": False, "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-corral-category"] == category
    assert r.headers["x-corral-model"] not in ("auto", "nomic-embed-text:latest")
    assert r.json()["model"] == "auto"


def test_admin_management_fans_out(fleet):
    gw, a, b = fleet
    admin = client(gw, gw.admin_token)
    frames = list(admin.pull("tinyllama:1b", stream=True))
    assert frames[-1].status == "success"
    r = httpx.post(f"{gw.url}/api/pull", headers=gw.headers(gw.admin_token), timeout=30,
                   json={"model": "tinyllama:1b"})
    lines = [json.loads(x) for x in r.text.strip().split("\n")]
    assert {x.get("backend") for x in lines if x.get("backend")} == {"gpu-a", "gpu-b"}
    r = httpx.post(f"{gw.url}/api/pull?backend=gpu-b", headers=gw.headers(gw.admin_token), timeout=30,
                   json={"model": "tinyllama:1b", "stream": False})
    assert r.status_code == 200 and r.json()["status"] == "success"
    assert admin.delete("tinyllama:1b").status == "success"


def test_request_log_and_per_model_stats(fleet):
    gw, _, _ = fleet
    c = client(gw)
    for _ in range(3):
        c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
               json={"model": "auto", "stream": False, "messages": [{"role": "user", "content": "Write a poem"}]})
    admin = gw.headers(gw.admin_token)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = httpx.get(f"{gw.url}/admin/api/requests?limit=10", headers=admin).json()["requests"]
        if len(rows) >= 4:
            break
        time.sleep(0.1)
    assert len(rows) >= 4
    assert {r["model_served"] for r in rows} >= {"qwen3:8b"}
    assert any(r["category"] == "creative" for r in rows)
    assert all(r["tokens_out"] > 0 for r in rows if r["status"] == 200)
    stats = httpx.get(f"{gw.url}/admin/api/stats/models?window=60m", headers=admin).json()
    qwen = [m for m in stats["by_model"] if m["model"] == "qwen3:8b"][0]
    assert qwen["requests"] >= 3 and qwen["duration_ms"]["p95"] >= qwen["duration_ms"]["p50"]
    assert any(c["category"] == "creative" for c in stats["by_category"])
    r = httpx.get(f"{gw.url}/admin/api/stats/models?window=5d", headers=admin)
    assert r.status_code == 400 and "window" in r.json()["error"]["message"]
    assert httpx.get(f"{gw.url}/admin/api/stats/models", headers=gw.headers()).status_code == 403
