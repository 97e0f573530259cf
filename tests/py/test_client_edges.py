"""What browsers, ollama-js style management and model lookups need (issue 18): CORS,
compressed request bodies, `name` in management calls, 404s in Ollama's shape, and
`/v1/models/{id}` and the admin classifier resolving names and bodies as chat does."""

import gzip
import json
import zlib

import anthropic
import httpx
import openai
import pytest

ORIGIN = "https://chat.example.com"
ROUTING = '[routing]\naliases = { "claude-*" = "qwen3:8b", "smart" = "qwen3:8b" }\n'
CHAT = {"model": "qwen3:8b", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def gw(start_sim, start_gateway):
    sim = start_sim("gpu-a", vram="48GiB")
    return start_gateway([sim], extra_toml=ROUTING, server_toml=f'cors_origins = ["{ORIGIN}"]')


def preflight(gw, origin, path="/v1/chat/completions"):
    return httpx.options(f"{gw.url}{path}", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})


# ------------------------------------------------------------------ CORS (item 4)

def test_preflight_is_answered_without_a_token(gw):
    r = preflight(gw, ORIGIN)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_answers_to_the_allowed_origin_expose_the_sdk_headers(gw):
    r = httpx.post(f"{gw.url}/api/chat", headers={**gw.headers(), "Origin": ORIGIN}, json=CHAT, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-should-retry" in exposed
    # An error is readable by the page too.
    bad = httpx.post(f"{gw.url}/api/chat", headers={"Origin": ORIGIN}, json=CHAT)
    assert bad.status_code == 401 and bad.headers["access-control-allow-origin"] == ORIGIN


def test_other_origins_and_the_default_get_no_cors(gw, start_sim, start_gateway):
    assert "access-control-allow-origin" not in preflight(gw, "https://evil.example").headers
    plain = start_gateway([start_sim("gpu-b")], name="plain")
    r = preflight(plain, ORIGIN)
    assert "access-control-allow-origin" not in r.headers


def test_star_allows_any_origin_never_with_credentials(start_sim, start_gateway):
    gw = start_gateway([start_sim("gpu-a")], server_toml='cors_origins = ["*"]')
    r = preflight(gw, "https://anywhere.example")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    r = httpx.post(f"{gw.url}/api/chat", headers={**gw.headers(), "Origin": "https://x.example"}, json=CHAT, timeout=30)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers


# ------------------------------------------------------------------ compressed bodies (item 5)

@pytest.mark.parametrize("coding,pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_bodies_are_decoded(gw, coding, pack):
    h = {**gw.headers(), "Content-Encoding": coding, "Content-Type": "application/json"}
    r = httpx.post(f"{gw.url}/api/chat", headers=h, content=pack(json.dumps(CHAT).encode()), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"]
    body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=h, content=pack(json.dumps(body).encode()), timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


def test_a_zip_bomb_is_413_and_unknown_codings_415(start_sim, start_gateway):
    gw = start_gateway([start_sim("gpu-a")], server_toml='body_limit = "1MiB"')
    # 200 MiB of spaces inside a JSON string, about 200 KiB on the wire.
    bomb = gzip.compress(b'{"model":"qwen3:8b","messages":[{"role":"user","content":"' + b" " * (200 << 20) + b'"}]}')
    assert len(bomb) < 1 << 20
    h = {**gw.headers(), "Content-Encoding": "gzip"}
    r = httpx.post(f"{gw.url}/api/chat", headers=h, content=bomb, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert r.headers["x-should-retry"] == "false"
    r = httpx.post(f"{gw.url}/v1/messages", content=b"....", timeout=30,
                   headers={**gw.headers(), "Content-Encoding": "compress", "anthropic-version": "2023-06-01"})
    assert r.status_code == 415 and r.json()["type"] == "error"
    r = httpx.post(f"{gw.url}/api/chat", headers=h, content=b"not gzip at all", timeout=30)
    assert r.status_code == 400


# ------------------------------------------------------------------ management (item 6)

@pytest.fixture
def two(start_sim, start_gateway):
    return start_gateway([start_sim("gpu-a", vram="48GiB"), start_sim("gpu-b", vram="48GiB")])


def test_management_takes_name_as_ollama_js_sends_it(two):
    admin = two.headers(two.admin_token)
    r = httpx.post(f"{two.url}/api/pull", headers=admin, json={"name": "tinyllama:1b", "stream": False}, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(b["backend"] for b in r.json()["backends"]) == ["gpu-a", "gpu-b"]
    assert all(b["status"] == "success" for b in r.json()["backends"])
    r = httpx.post(f"{two.url}/api/show", headers=admin, json={"name": "qwen3:8b"})
    assert r.status_code == 200 and "model_info" in r.json()
    r = httpx.post(f"{two.url}/api/copy", headers=admin, json={"source": "tinyllama:1b", "destination": "tiny-copy"})
    assert r.status_code == 200
    r = httpx.request("DELETE", f"{two.url}/api/delete", headers=admin, json={"name": "tinyllama:1b"})
    assert r.status_code == 200, r.text


def test_a_model_no_backend_has_is_404_in_ollama_shape(two):
    admin = two.headers(two.admin_token)
    r = httpx.request("DELETE", f"{two.url}/api/delete", headers=admin, json={"name": "ghost:1b"})
    assert r.status_code == 404, r.text
    assert "not found" in r.json()["error"] and len(r.json()["backends"]) == 2
    r = httpx.post(f"{two.url}/api/copy", headers=admin, json={"source": "ghost:1b", "destination": "x"})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = httpx.request("DELETE", f"{two.url}/api/delete?backend=gpu-b", headers=admin, json={"model": "ghost:1b"})
    assert r.status_code == 404


def test_partial_outcomes_are_named_per_backend(two):
    admin = two.headers(two.admin_token)
    httpx.post(f"{two.url}/api/pull?backend=gpu-a", headers=admin, json={"model": "solo:1b", "stream": False}, timeout=30)
    r = httpx.request("DELETE", f"{two.url}/api/delete", headers=admin, json={"model": "solo:1b"})
    assert r.status_code == 200, r.text
    outcome = {b["backend"]: b for b in r.json()["backends"]}
    assert outcome["gpu-a"]["status"] == "success"
    assert outcome["gpu-b"]["status"] == "failed" and outcome["gpu-b"]["code"] == 404


# ------------------------------------------------------------------ model lookups (item 7)

def test_model_retrieve_resolves_like_chat(gw):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.user_token, max_retries=0)
    for name in ("claude-sonnet-4-6", "smart", "nomic-embed-text", "nomic-embed-text:latest", "qwen3:8b", "auto"):
        assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ghost:1b")
    claude = anthropic.Anthropic(base_url=gw.url, api_key=gw.user_token, max_retries=0)
    m = claude.models.retrieve("claude-sonnet-4-6")
    assert m.id == "claude-sonnet-4-6" and m.type == "model"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("ghost:1b")


def test_classify_reads_ollama_images_as_the_chat_route_does(gw):
    admin = gw.headers(gw.admin_token)
    body = {"model": "auto", "messages": [{"role": "user", "content": "what is in this picture?", "images": [PNG]}]}
    routed = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), json={**body, "stream": False}, timeout=30)
    classified = httpx.post(f"{gw.url}/admin/api/classify", headers=admin, json=body).json()
    assert classified["category"] == "vision" == routed.headers["x-corral-category"]
    by_path = httpx.post(f"{gw.url}/admin/api/classify?path=/api/chat", headers=admin, json=body).json()
    assert by_path["category"] == "vision"
