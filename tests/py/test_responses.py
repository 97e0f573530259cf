"""The OpenAI Responses API (`POST /v1/responses`) through the official openai client, over
every upstream kind (the simulator's Ollama, OpenAI and Anthropic layers)."""

import json

import httpx
import openai
import pytest

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]


@pytest.fixture(params=["ollama", "openai", "anthropic"])
def client(request, start_sim, start_gateway):
    sim = start_sim("up", vram="48GiB")
    extra = {"up": {"kind": request.param, "models": ["qwen3:8b", "llama3.1:8b"]}}
    gw = start_gateway([sim], backend_extra=extra)
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.user_token, max_retries=0)


def test_text_whole_and_streamed(client):
    r = client.responses.create(model="llama3.1:8b", input="hi", instructions="Be brief.")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.model == "llama3.1:8b" and r.instructions == "Be brief."
    assert r.output[0].type == "message" and r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0

    seen, deltas = [], []
    with client.responses.stream(model="llama3.1:8b", input="hi") as s:
        for ev in s:
            seen.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = s.get_final_response()
    assert seen[:2] == ["response.created", "response.in_progress"]
    assert seen[-1] == "response.completed"
    assert final.status == "completed" and final.output_text == "".join(deltas) != ""
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens

    # The raw iterator gives the same sequence with increasing sequence numbers.
    numbers = [ev.sequence_number for ev in client.responses.create(
        model="llama3.1:8b", input="hi", stream=True)]
    assert numbers == list(range(len(numbers)))


def test_function_call_and_its_output(client):
    first = client.responses.create(model="llama3.1:8b", input="weather in Paris?", tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict) and calls[0].call_id

    # The conversation goes back whole, the call's output included: the model now answers.
    items = [{"role": "user", "content": "weather in Paris?"}]
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"})
    with client.responses.stream(model="llama3.1:8b", input=items, tools=TOOLS) as s:
        second = s.get_final_response()
    assert [o.type for o in second.output] == ["message"] and second.output_text

    # Streamed calls arrive whole in the final response, arguments matching the deltas.
    with client.responses.stream(model="llama3.1:8b", input="weather?", tools=TOOLS) as s:
        args = "".join(ev.delta for ev in s if ev.type == "response.function_call_arguments.delta")
        final = s.get_final_response()
    call = [o for o in final.output if o.type == "function_call"][0]
    assert call.arguments == args and json.loads(args)


def test_reasoning_summaries_only_when_asked(client):
    r = client.responses.create(model="qwen3:8b", input="hi",
                                reasoning={"effort": "low", "summary": "auto"})
    kinds = [o.type for o in r.output]
    assert kinds == ["reasoning", "message"], kinds
    assert r.output[0].summary[0].text and r.output_text
    with client.responses.stream(model="qwen3:8b", input="hi",
                                 reasoning={"effort": "low", "summary": "auto"}) as s:
        summary = "".join(ev.delta for ev in s
                          if ev.type == "response.reasoning_summary_text.delta")
        final = s.get_final_response()
    assert summary and final.output[0].summary[0].text == summary
    plain = client.responses.create(model="qwen3:8b", input="hi")
    assert [o.type for o in plain.output] == ["message"]


def test_stored_state_and_bad_requests_are_clear_400s(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.1:8b", input="more", previous_response_id="resp_x")
    assert "does not store responses" in str(e.value)
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="llama3.1:8b", input=[
            {"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")


def test_wrong_token_is_an_authentication_error(client):
    bad = client.with_options(api_key="crl_wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="llama3.1:8b", input="hi")


def test_failure_mid_stream_raises_and_never_completes(client):
    with pytest.raises(openai.APIError):
        for _ in client.responses.create(model="llama3.1:8b", input="go [[fail_mid]]", stream=True):
            pass
    # On the wire: an `error` event, then `response.failed`, and no `response.completed`.
    raw = httpx.post(f"{client.base_url}responses", timeout=30,
                     headers={"Authorization": f"Bearer {client.api_key}"},
                     json={"model": "llama3.1:8b", "input": "go [[fail_mid]]", "stream": True}).text
    events = [line[len("event: "):] for line in raw.splitlines() if line.startswith("event: ")]
    assert events[-2:] == ["error", "response.failed"] and "response.completed" not in events
