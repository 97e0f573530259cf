"""The official `openai` Python SDK against corral (docs/PROTOCOLS.md §8.2)."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def sdk(gw, token=None, retries=0):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token or gw.user_token or "none", max_retries=retries)


def test_chat_non_stream(fleet):
    gw, _, _ = fleet
    r = sdk(gw).chat.completions.create(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "qwen3:8b"


def test_chat_stream_with_usage(fleet):
    gw, _, _ = fleet
    chunks = list(sdk(gw).chat.completions.create(
        model="qwen3:8b", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]


def test_raw_sse_has_no_event_lines_and_ends_with_done(fleet):
    gw, _, _ = fleet
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), timeout=30,
                   json={"model": "qwen3:8b", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "\nevent:" not in r.text and not r.text.startswith("event:")
    assert r.text.rstrip().endswith("data: [DONE]")


def test_tool_calls_stream_and_round_trip(fleet):
    gw, _, _ = fleet
    client = sdk(gw)
    with client.chat.completions.stream(model="qwen3:8b", tools=TOOLS,
                                        messages=[{"role": "user", "content": "open it [[two_tools]]"}]) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.index for c in calls] == [0, 1] if hasattr(calls[0], "index") else len(calls) == 2
    for c in calls:
        assert c.id and c.function.name == "read_file"
        assert isinstance(json.loads(c.function.arguments), dict)
    assert final.choices[0].finish_reason == "tool_calls"
    # Send the result back: the model answers in text.
    msgs = [{"role": "user", "content": "open it"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": calls[0].id, "type": "function",
                 "function": {"name": "read_file", "arguments": calls[0].function.arguments}}]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "fn main() {}"}]
    r = client.chat.completions.create(model="qwen3:8b", tools=TOOLS, messages=msgs)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content


def test_length_finish_reason(fleet):
    gw, _, _ = fleet
    r = sdk(gw).chat.completions.create(model="qwen3:8b", max_tokens=5,
                                        messages=[{"role": "user", "content": "[[tokens=50]] long"}])
    assert r.choices[0].finish_reason == "length"


def test_mid_stream_failure_raises(fleet):
    gw, _, _ = fleet
    with pytest.raises(openai.APIError):
        for _ in sdk(gw).chat.completions.create(model="qwen3:8b", stream=True,
                                                 messages=[{"role": "user", "content": "[[fail_mid]]"}]):
            pass
    raw = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), timeout=30,
                     json={"model": "qwen3:8b", "stream": True,
                           "messages": [{"role": "user", "content": "[[fail_mid]]"}]}).text
    assert "[DONE]" not in raw


def test_unknown_model_is_not_found(fleet):
    gw, _, _ = fleet
    with pytest.raises(openai.NotFoundError) as e:
        sdk(gw).chat.completions.create(model="no-such:1b", messages=[{"role": "user", "content": "x"}])
    body = e.value.body
    assert body["message"] and body["type"]


def test_embeddings_default_base64(fleet):
    gw, _, _ = fleet
    r = sdk(gw).embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 768
    assert all(isinstance(x, float) for x in r.data[0].embedding[:5])


def test_models_list(fleet):
    gw, _, _ = fleet
    ids = [m.id for m in sdk(gw).models.list()]
    assert "qwen3:8b" in ids and "auto" in ids
    r = httpx.get(f"{gw.url}/v1/models", headers=gw.headers())
    assert r.json()["object"] == "list"


def test_bad_input_names_the_field(fleet):
    gw, _, _ = fleet
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), timeout=10,
                   json={"model": "qwen3:8b", "messages": "not a list"})
    assert r.status_code == 400
    assert "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), content=b"{oops", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_auto_model_stream_and_not(fleet):
    gw, _, _ = fleet
    client = sdk(gw)
    ask = [{"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ask)
    assert raw.headers["x-corral-category"] == "reasoning"
    assert raw.headers["x-corral-model"] != "auto"
    assert raw.parse().model == "auto"
    chunks = list(client.chat.completions.create(model="auto", messages=ask, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_identical_concurrent_calls_share_one_upstream_call(start_sim, start_gateway):
    sim = start_sim("gpu")
    # A window no test outlives, so that sharing does not depend on timing.
    gw = start_gateway([sim], extra_toml='[routing]\ndedup_window = "60s"\n')
    ask = [{"role": "user", "content": "[[latency_ms=800]] one answer for two askers"}]
    before = sim.stats()["requests_by_path"].get("/api/chat", 0)
    call = lambda _: sdk(gw).chat.completions.with_raw_response.create(model="qwen3:8b", messages=ask)
    with ThreadPoolExecutor(2) as pool:
        raws = list(pool.map(call, range(2)))
    first, second = (r.parse() for r in raws)
    assert first.choices[0].message.content
    assert first.model_dump() == second.model_dump()
    assert sorted(r.headers.get("x-corral-shared", "-") for r in raws) == ["-", "1"]
    assert sim.stats()["requests_by_path"].get("/api/chat", 0) - before == 1
    # Streams are never shared.
    for _ in range(2):
        assert list(sdk(gw).chat.completions.create(model="qwen3:8b", messages=ask, stream=True))
    assert sim.stats()["requests_by_path"].get("/api/chat", 0) - before == 3
