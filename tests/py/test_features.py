"""Request features against model capabilities, thinking only when asked, and the hints the
official SDKs read (`x-should-retry`, `request-id`), with the official clients (issue 18)."""

import json

import anthropic
import httpx
import httpx2  # what the anthropic SDK is built on
import ollama
import openai
import pytest

TOOL = {"type": "function", "function": {"name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
ROUTING = """
[routing]
default_model = "qwen3:8b"
aliases = { "claude-haiku-*" = "llama3.1:8b", "claude-*" = "qwen3:8b", "pictures" = "llava:7b" }
"""
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def gw(start_sim, start_gateway):
    sim = start_sim("gpu-a", vram="48GiB")
    return start_gateway([sim], extra_toml=ROUTING)


def claude(gw, token=None):
    return anthropic.Anthropic(base_url=gw.url, api_key=token or gw.user_token, max_retries=0)


def oai(gw, token=None):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token or gw.user_token, max_retries=0)


def olla(gw):
    return ollama.Client(host=gw.url, headers=gw.headers())


# ------------------------------------------------------------------ capabilities (item 1)

def test_claude_code_haiku_thinking_on_a_model_that_cannot_think(gw):
    """Claude Code sends thinking to its small model; llama3.1 cannot think: an answer, no 400."""
    thinking = {"type": "enabled", "budget_tokens": 1024}
    m = claude(gw).messages.create(model="claude-haiku-4-5", max_tokens=2048, thinking=thinking,
                                   messages=[{"role": "user", "content": "say hello"}])
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    with claude(gw).messages.stream(model="claude-haiku-4-5-20251001", max_tokens=2048, thinking=thinking,
                                    messages=[{"role": "user", "content": "say hello"}]) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text"]


def test_native_think_to_a_model_that_cannot_think_is_answered(gw):
    r = olla(gw).chat(model="llama3.1:8b", think=True, messages=[{"role": "user", "content": "hi"}])
    assert r.message.content and not r.message.thinking
    r = olla(gw).generate(model="llama3.1:8b", think="high", prompt="hi")
    assert r.response and not r.thinking


def test_tools_to_a_model_without_tools_name_model_and_capability(gw):
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw).chat.completions.create(model="pictures", tools=[TOOL],
                                        messages=[{"role": "user", "content": "read main.rs"}])
    assert '"llava:7b" does not support tools' in e.value.message
    assert e.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(ollama.ResponseError) as e:
        olla(gw).chat(model="llama3.1:8b", messages=[{"role": "user", "content": "what is this", "images": [PNG]}])
    assert e.value.status_code == 400 and '"llama3.1:8b" does not support vision' in e.value.error


def test_tools_move_to_a_fallback_that_takes_them(start_sim, start_gateway):
    sim = start_sim("gpu-a", vram="48GiB")
    gw = start_gateway([sim], extra_toml='[routing]\nfallbacks = { "llava:7b" = ["qwen3:8b"] }\n')
    r = oai(gw).chat.completions.with_raw_response.create(
        model="llava:7b", tools=[TOOL], messages=[{"role": "user", "content": "read main.rs"}])
    assert r.headers["x-corral-model"] == "qwen3:8b"
    assert r.parse().choices[0].message.tool_calls[0].function.name == "read_file"


# ------------------------------------------------------------------ thinking when asked (item 2)

def test_anthropic_without_thinking_sees_no_thinking(gw):
    m = claude(gw).messages.create(model="claude-sonnet-4-6", max_tokens=256,
                                   messages=[{"role": "user", "content": "hello"}])
    assert m.content[0].type == "text" and m.content[0].text
    with claude(gw).messages.stream(model="claude-sonnet-4-6", max_tokens=256,
                                    messages=[{"role": "user", "content": "hello"}]) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text"]
    assert "thinking" not in json.dumps([str(e) for e in events])


def test_anthropic_with_thinking_sees_thinking_first(gw):
    m = claude(gw).messages.create(model="claude-sonnet-4-6", max_tokens=4096,
                                   thinking={"type": "enabled", "budget_tokens": 1024},
                                   messages=[{"role": "user", "content": "hello"}])
    assert [b.type for b in m.content] == ["thinking", "text"] and m.content[0].thinking


def test_ollama_thinking_only_when_asked(gw):
    plain = olla(gw).chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    assert plain.message.content and not plain.message.thinking
    frames = list(olla(gw).chat(model="qwen3:8b", stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert not any(f.message.thinking for f in frames)
    asked = olla(gw).chat(model="qwen3:8b", think=True, messages=[{"role": "user", "content": "hi"}])
    assert asked.message.thinking and asked.message.content


def test_gpt_oss_reasoning_is_hidden_unless_asked(gw):
    """gpt-oss reasons even with think:false; the client still sees none it did not ask for."""
    frames = list(olla(gw).chat(model="gpt-oss:20b", stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert frames[-1].done and not any(f.message.thinking for f in frames)
    assert "".join(f.message.content or "" for f in frames)
    whole = olla(gw).generate(model="gpt-oss:20b", prompt="hi")
    assert whole.response and not whole.thinking


def test_openai_reasoning_when_asked_and_not_otherwise(gw):
    plain = oai(gw).chat.completions.create(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}])
    assert getattr(plain.choices[0].message, "reasoning", None) is None
    asked = oai(gw).chat.completions.create(model="qwen3:8b", reasoning_effort="low",
                                            messages=[{"role": "user", "content": "hi"}])
    assert asked.choices[0].message.reasoning and asked.choices[0].message.content
    chunks = list(oai(gw).chat.completions.create(model="qwen3:8b", reasoning_effort="low", stream=True,
                                                  messages=[{"role": "user", "content": "hi"}]))
    assert "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    chunks = list(oai(gw).chat.completions.create(model="qwen3:8b", stream=True,
                                                  messages=[{"role": "user", "content": "hi"}]))
    assert not any(getattr(c.choices[0].delta, "reasoning", None) for c in chunks if c.choices)


# ------------------------------------------------------------------ retry hints (item 3)

def test_wrong_token_is_not_worth_retrying(gw):
    for sdk, err in ((claude, anthropic.AuthenticationError), (oai, openai.AuthenticationError)):
        with pytest.raises(err) as e:
            sdk(gw, token="crl_wrong").models.list()
        assert e.value.response.headers["x-should-retry"] == "false"
    # With the SDK's default retries, one request and no more: the header overrides its rules.
    seen = []
    hooks = {"request": [seen.append]}
    client = anthropic.Anthropic(base_url=gw.url, api_key="crl_wrong", max_retries=2,
                                 http_client=httpx2.Client(event_hooks=hooks))
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                               messages=[{"role": "user", "content": "hi"}])
    assert len(seen) == 1


def test_error_hints_by_status(gw):
    h = gw.headers()
    cases = [
        (httpx.post(f"{gw.url}/v1/chat/completions", headers=h, content=b"{"), 400, "false"),
        (httpx.post(f"{gw.url}/api/chat", headers=h, json={"model": "nope:1b", "messages": []}), 404, "false"),
        (httpx.get(f"{gw.url}/nowhere", headers=h), 404, "false"),
        (httpx.post(f"{gw.url}/api/pull", headers=h, json={"model": "x"}), 403, "false"),
    ]
    for r, status, hint in cases:
        assert r.status_code == status, r.text
        assert r.headers["x-should-retry"] == hint, r.url
    ok = httpx.get(f"{gw.url}/api/tags", headers=h)
    assert ok.status_code == 200 and "x-should-retry" not in ok.headers


def test_rate_limited_is_worth_retrying(start_sim, start_gateway):
    gw = start_gateway([start_sim("gpu-a")])
    token = gw.create_user("slow", rpm=1)
    body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    headers = {"Authorization": f"Bearer {token}"}
    statuses = [httpx.post(f"{gw.url}/api/chat", headers=headers, json=body, timeout=30) for _ in range(2)]
    assert [r.status_code for r in statuses] == [200, 429]
    assert statuses[1].headers["x-should-retry"] == "true"


def test_every_answer_carries_request_id(gw):
    m = claude(gw).messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=64,
                                                     messages=[{"role": "user", "content": "hi"}])
    assert m.headers["request-id"] == m.headers["x-request-id"]
    assert m.parse()._request_id == m.headers["request-id"]
    with pytest.raises(anthropic.NotFoundError) as e:
        claude(gw).messages.create(model="nope:1b", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert e.value.request_id and e.value.request_id == e.value.response.headers["x-request-id"]
    r = httpx.get(f"{gw.url}/health")
    assert r.headers["request-id"] == r.headers["x-request-id"]


# ------------------------------------------------------------------ smaller fixes (item 8)

def test_count_tokens_for_an_unknown_model_is_not_found(gw):
    msgs = [{"role": "user", "content": "hello there"}]
    with pytest.raises(anthropic.NotFoundError):
        claude(gw).messages.count_tokens(model="nope:1b", messages=msgs)
    assert claude(gw).messages.count_tokens(model="claude-sonnet-4-6", messages=msgs).input_tokens > 0


def test_stream_start_and_delta_agree_on_input_tokens(gw):
    r = httpx.post(f"{gw.url}/v1/messages", timeout=30,
                   headers={**gw.headers(), "anthropic-version": "2023-06-01"},
                   json={"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                         "messages": [{"role": "user", "content": "hello " * 50}]})
    frames = [json.loads(f.split("\ndata: ", 1)[1]) for f in r.text.split("\n\n") if f.strip()]
    start = next(f for f in frames if f["type"] == "message_start")["message"]["usage"]["input_tokens"]
    delta = next(f for f in frames if f["type"] == "message_delta")["usage"]["input_tokens"]
    assert start == delta > 0
