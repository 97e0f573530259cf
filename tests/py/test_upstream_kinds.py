"""Every client dialect served by upstreams of kind `openai` and `anthropic` (the simulator's
OpenAI and Anthropic layers), through the official clients."""

import json

import anthropic
import httpx
import ollama
import openai
import pytest

TOOLS_OAI = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


@pytest.fixture(params=["openai", "anthropic"])
def kind_gateway(request, start_sim, start_gateway):
    sim = start_sim("up", vram="48GiB")
    extra = {"up": {"kind": request.param, "models": ["qwen3:8b", "llama3.1:8b"]}}
    gw = start_gateway([sim], backend_extra=extra,
                       extra_toml='[routing]\naliases = { "claude-*" = "llama3.1:8b" }\n')
    return gw, request.param


def test_ollama_client_over_other_kinds(kind_gateway):
    gw, _ = kind_gateway
    c = ollama.Client(host=gw.url, headers=gw.headers())
    r = c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
    assert r.message.content and r.done
    frames = list(c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert frames[-1].done and "".join(f.message.content for f in frames)
    r = c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "open it"}], tools=TOOLS_OAI)
    assert r.message.tool_calls and isinstance(r.message.tool_calls[0].function.arguments, dict)


def test_openai_client_over_other_kinds(kind_gateway):
    gw, kind = kind_gateway
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.user_token, max_retries=0)
    r = client.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content and r.usage.total_tokens > 0
    with client.chat.completions.stream(model="llama3.1:8b", tools=TOOLS_OAI,
                                        messages=[{"role": "user", "content": "open it"}]) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "read_file" and isinstance(json.loads(call.function.arguments), dict)
    assert final.choices[0].finish_reason == "tool_calls"
    if kind == "openai":
        e = client.embeddings.create(model="llama3.1:8b", input=["a"])
        assert len(e.data[0].embedding) > 0


def test_anthropic_client_over_other_kinds(kind_gateway):
    gw, _ = kind_gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.user_token, max_retries=0)
    m = client.messages.create(model="claude-sonnet-4-6", max_tokens=256,
                               messages=[{"role": "user", "content": "hi"}])
    assert m.stop_reason == "end_turn" and m.usage.output_tokens > 0
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=256, tools=[{
            "name": "read_file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                                                  "required": ["path"]}}],
            messages=[{"role": "user", "content": "open it"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b for b in final.content if b.type == "tool_use"][0].input


def test_mid_stream_failure_from_other_kinds(kind_gateway):
    gw, _ = kind_gateway
    raw = httpx.post(f"{gw.url}/api/chat", headers=gw.headers(), timeout=30,
                     json={"model": "llama3.1:8b", "messages": [{"role": "user", "content": "[[fail_mid]]"}]}).text
    last = json.loads(raw.strip().split("\n")[-1])
    assert "error" in last and '"done":true' not in raw
