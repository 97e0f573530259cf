"""The official `anthropic` Python SDK against corral, as Claude Code uses it (docs/PROTOCOLS.md §8.3)."""

import json

import anthropic
import httpx
import pytest

TOOLS = [{"name": "read_file", "description": "Read a file",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]

CLAUDE_ALIAS = '[routing]\ndefault_model = "qwen3:8b"\naliases = { "claude-*" = "qwen3:8b" }\n'


@pytest.fixture
def claude(start_sim, start_gateway):
    a = start_sim("gpu-a", vram="48GiB")
    gw = start_gateway([a], extra_toml=CLAUDE_ALIAS)
    return gw, a


def sdk(gw, **kw):
    if not kw:
        kw = {"api_key": gw.user_token or "none"}
    return anthropic.Anthropic(base_url=gw.url, max_retries=0, **kw)


def test_messages_create(claude):
    gw, _ = claude
    m = sdk(gw).messages.create(model="claude-sonnet-4-6", max_tokens=256,
                                messages=[{"role": "user", "content": "hello"}])
    assert m.id.startswith("msg_") and m.type == "message"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert m.model == "claude-sonnet-4-6"


def test_missing_max_tokens_is_invalid_request(claude):
    gw, _ = claude
    r = httpx.post(f"{gw.url}/v1/messages", headers={**gw.headers(), "anthropic-version": "2023-06-01"},
                   json={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_stream_final_message_equals_deltas(claude):
    gw, _ = claude
    with sdk(gw).messages.stream(model="claude-sonnet-4-6", max_tokens=256,
                                 messages=[{"role": "user", "content": "tell me"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    texts = [b.text for b in final.content if b.type == "text"]
    assert text and texts == [text]


def test_raw_sse_shape(claude):
    gw, _ = claude
    r = httpx.post(f"{gw.url}/v1/messages?beta=true",
                   headers={**gw.headers(), "anthropic-version": "2023-06-01"}, timeout=30,
                   json={"model": "claude-sonnet-4-6", "max_tokens": 256, "stream": True, "tools": TOOLS,
                         "messages": [{"role": "user", "content": "open main.rs"}]})
    assert r.status_code == 200
    frames = [f for f in r.text.split("\n\n") if f.strip()]
    open_block, next_index = None, 0
    types = []
    for f in frames:
        lines = f.split("\n")
        assert lines[0].startswith("event: ")
        event = lines[0][7:]
        data = json.loads(lines[1][6:])
        assert data["type"] == event
        types.append(event)
        if event == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block, next_index = data["index"], next_index + 1
        elif event == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
    assert types[0] == "message_start" and types[-1] == "message_stop" and types[-2] == "message_delta"


def test_tool_use_round_trip(claude):
    gw, sim = claude
    client = sdk(gw)
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=256, tools=TOOLS,
                                messages=[{"role": "user", "content": "open main.rs"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    use = [b for b in final.content if b.type == "tool_use"][0]
    assert isinstance(use.input, dict) and "path" in use.input
    follow = client.messages.create(model="claude-sonnet-4-6", max_tokens=256, tools=TOOLS, messages=[
        {"role": "user", "content": "open main.rs"},
        {"role": "assistant", "content": [b.model_dump() for b in final.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "fn main() {}"}]},
    ])
    assert follow.stop_reason == "end_turn" and [b for b in follow.content if b.type == "text"][0].text


def test_mid_stream_failure_raises(claude):
    gw, _ = claude
    with pytest.raises(anthropic.APIError):
        with sdk(gw).messages.stream(model="claude-sonnet-4-6", max_tokens=64,
                                     messages=[{"role": "user", "content": "[[fail_mid]]"}]) as s:
            for _ in s:
                pass
    raw = httpx.post(f"{gw.url}/v1/messages", headers={**gw.headers(), "anthropic-version": "2023-06-01"},
                     timeout=30, json={"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                                       "messages": [{"role": "user", "content": "[[fail_mid]]"}]}).text
    assert "event: error" in raw and "message_stop" not in raw


def test_count_tokens(claude):
    gw, _ = claude
    c = sdk(gw)
    r = c.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello there"}])
    assert r.input_tokens > 0
    r = c.beta.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert r.input_tokens > 0


def test_models_list_and_shapes(claude):
    gw, _ = claude
    ids = [m.id for m in sdk(gw).models.list()]
    assert ids
    a = httpx.get(f"{gw.url}/v1/models", headers={**gw.headers(), "anthropic-version": "2023-06-01"}).json()
    assert a["has_more"] is False and a["data"][0]["type"] == "model"
    o = httpx.get(f"{gw.url}/v1/models", headers=gw.headers()).json()
    assert o["object"] == "list"


def test_auth_variants(claude):
    gw, _ = claude
    if not gw.user_token:
        pytest.skip("auth not enabled")
    ask = dict(model="claude-sonnet-4-6", max_tokens=32, messages=[{"role": "user", "content": "x"}])
    sdk(gw, api_key=gw.user_token).messages.create(**ask)
    sdk(gw, auth_token=gw.user_token).messages.create(**ask)
    # Some Claude Code versions send both: a gateway Bearer token and an unrelated x-api-key.
    sdk(gw, api_key="sk-ant-unrelated",
        default_headers={"Authorization": f"Bearer {gw.user_token}"}).messages.create(**ask)
    with pytest.raises(anthropic.AuthenticationError):
        sdk(gw, api_key="crl_wrong").messages.create(**ask)


def test_mid_conversation_system_and_cache_control(claude):
    gw, _ = claude
    m = sdk(gw).messages.create(
        model="claude-sonnet-4-6", max_tokens=64,
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=ab;"},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
                  {"role": "assistant", "content": "hello"},
                  {"role": "system", "content": "Now answer in French."},
                  {"role": "user", "content": "again"}],
        metadata={"user_id": "session-1"})
    assert m.stop_reason == "end_turn"


def test_auto_model_stream_and_not(claude):
    gw, _ = claude
    client = sdk(gw)
    ask = [{"role": "user", "content": "Write a haiku about autumn rain."}]
    raw = client.messages.with_raw_response.create(model="auto", max_tokens=128, messages=ask)
    assert raw.headers["x-corral-category"] == "creative"
    assert raw.parse().model == "auto"
    with client.messages.stream(model="auto", max_tokens=128, messages=ask) as s:
        assert "".join(s.text_stream)


def test_tool_result_reaches_ollama_as_tool_message_and_token_stays_home(claude):
    gw, sim = claude
    client = sdk(gw)
    first = client.messages.create(model="claude-sonnet-4-6", max_tokens=256, tools=TOOLS,
                                   messages=[{"role": "user", "content": "open main.rs"}])
    use = [b for b in first.content if b.type == "tool_use"][0]
    client.messages.create(model="claude-sonnet-4-6", max_tokens=256, tools=TOOLS, messages=[
        {"role": "user", "content": "open main.rs"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "fn main() {}"}]},
    ])
    last = sim.stats()["last_requests"]["/api/chat"]
    tool_msgs = [m for m in last["body"]["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["tool_name"] == "read_file"
    assert tool_msgs[0]["content"] == "fn main() {}"
    for seen in sim.stats()["last_requests"].values():
        assert gw.user_token not in json.dumps(seen.get("headers", {}))
        assert gw.user_token not in json.dumps(seen.get("body", {}))


def test_betas_reach_an_anthropic_upstream_byte_for_byte(start_sim, start_gateway):
    sim = start_sim("anthropic-up")
    gw = start_gateway([sim], backend_extra={"anthropic-up": {"kind": "anthropic", "models": ["qwen3:8b"]}},
                       extra_toml=CLAUDE_ALIAS)
    beta = "claude-code-20250219,interleaved-thinking-2025-05-14"
    r = httpx.post(f"{gw.url}/v1/messages?beta=true", timeout=30,
                   headers={**gw.headers(), "anthropic-version": "2023-06-01", "anthropic-beta": beta},
                   json={"model": "claude-sonnet-4-6", "max_tokens": 64, "cache_control": {"type": "ephemeral"},
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "claude-sonnet-4-6"
    last = sim.stats()["last_requests"]["/v1/messages"]
    assert last["headers"]["anthropic-beta"] == beta
    assert last["headers"]["anthropic-version"] == "2023-06-01"
    # Same dialect: the client's body passes through, only the model name changes.
    assert last["body"]["cache_control"] == {"type": "ephemeral"}
    assert last["body"]["model"] == "qwen3:8b"
    assert gw.user_token not in json.dumps(last)
