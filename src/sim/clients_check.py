"""Wire check of `corral sim` with the official ollama, openai and anthropic Python clients.

Start a sim:  SIM_PORT=11577 cargo test --lib sim::tests::serve_for_python -- --ignored --nocapture
Then:         python3 -m venv .venv && .venv/bin/pip install ollama openai anthropic
              .venv/bin/python src/sim/clients_check.py http://127.0.0.1:11577
Prints what each client parsed; exits non-zero on the first mismatch.
"""
import ollama, sys
H = sys.argv[1]
c = ollama.Client(host=H)
lst = c.list()
print("list", [m.model for m in lst.models])
for m in lst.models:
    s = c.show(m.model)
    assert s.modelinfo is not None and s.capabilities, m.model
print("show ok for all; caps qwen3:", c.show("qwen3:8b").capabilities)
print("ps empty:", c.ps().models)
r = c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
print("chat nostream:", r.message.content[:40], r.done_reason, r.eval_count)
frames = list(c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi [[tokens=4]]"}], stream=True))
print("chat stream frames", len(frames), "last", frames[-1].done, frames[-1].done_reason, frames[-1].eval_count, "thinking", repr(frames[0].message.thinking))
assert frames[-1].done and frames[-1].done_reason == "stop" and frames[-1].eval_count > 0
print("ps:", [(m.model, m.size_vram, m.context_length, m.expires_at) for m in c.ps().models])
# unicode
txt = "".join(f.message.content for f in c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "[[unicode]] [[tokens=3]]"}], stream=True))
assert "\u2028" in txt and "\u2029" in txt, repr(txt)
print("unicode ok", repr(txt))
# tools
def read_file(path: str) -> str:
    """Read a file.

    Args:
      path: the path
    """
    return ""
r = c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "read main"}], tools=[read_file], think=False)
tc = r.message.tool_calls[0]
print("tool call", tc.function.name, tc.function.arguments, type(tc.function.arguments), r.done_reason)
assert isinstance(tc.function.arguments, dict) and r.done_reason == "stop"
fr = list(c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "read main [[tool_on_done]]"}], tools=[read_file], stream=True))
assert fr[-1].done and fr[-1].message.tool_calls[0].function.name == "read_file"
print("tool on done ok")
# mid-stream failure
try:
    got = []
    for f in c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "[[fail_mid]]"}], stream=True):
        got.append(f)
    print("NO ERROR?!"); sys.exit(1)
except ollama.ResponseError as e:
    print("fail_mid ->", type(e).__name__, e.error, "after", len(got), "frames; done seen:", any(f.done for f in got))
# generate
g = c.generate(model="llama3.1:8b", prompt="hello [[tokens=5]]")
print("generate:", repr(g.response), g.done_reason, g.context)
gs = list(c.generate(model="qwen3:8b", prompt="hello [[tokens=2]]", stream=True))
print("generate stream", len(gs), gs[0].thinking, gs[-1].done)
e = c.embed(model="nomic-embed-text", input=["a", "b"])
print("embed", len(e.embeddings), len(e.embeddings[0]))
e1 = c.embeddings(model="nomic-embed-text", prompt="a")
print("embeddings", len(e1.embedding))
# errors
for model, content in [("nope", "hi"), ("llama3.1:70b", "hi"), ("llama3.1:8b", "[[error=busy]]"), ("llama3.1:8b", "[[error=429]]")]:
    try:
        c.chat(model=model, messages=[{"role": "user", "content": content}])
        print("no error?!"); sys.exit(1)
    except ollama.ResponseError as ex:
        print("error", ex.status_code, ex.error)
try:
    c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}], think=True)
except ollama.ResponseError as ex:
    print("think error", ex.status_code, ex.error)
# pull / copy / delete
p = list(c.pull("phi3:mini", stream=True))
print("pull", p[-1].status, len(p))
print("copy", c.copy("phi3:mini", "phi3:copy").status, "delete", c.delete("phi3:copy").status)
print("version", c._request_raw("GET", "/api/version").json())
# big line & garbage
big = list(c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "[[big_line]] [[tokens=2]]"}], stream=True))
print("big line frames", len(big), max(len(f.message.content) for f in big))
try:
    list(c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "[[garbage]]"}], stream=True))
    print("garbage no error?")
except Exception as ex:
    print("garbage ->", type(ex).__name__, str(ex)[:80])
try:
    list(c.chat(model="llama3.1:8b", messages=[{"role": "user", "content": "[[truncate]]"}], stream=True))
    print("truncate no error?")
except Exception as ex:
    print("truncate ->", type(ex).__name__, str(ex)[:80])
print("ALL OLLAMA OK")
import openai, anthropic, json
c = openai.OpenAI(base_url=H + "/v1", api_key="x", max_retries=0)
r = c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
assert r.object == "chat.completion" and r.choices[0].message.role == "assistant" and r.usage
print("oa nonstream:", r.choices[0].message.content[:30], r.choices[0].finish_reason, r.usage)
chunks = list(c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "hi [[tokens=3]]"}], stream=True, stream_options={"include_usage": True}))
assert len({ch.id for ch in chunks}) == 1 and len({ch.created for ch in chunks}) == 1
assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
print("oa stream chunks", len(chunks), "usage", chunks[-1].usage)
tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
         {"type": "function", "function": {"name": "list_dir", "parameters": {"type": "object", "properties": {"dir": {"type": "string"}}, "required": ["dir"]}}}]
r = c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "x"}], tools=tools)
print("oa tool:", r.choices[0].finish_reason, r.choices[0].message.tool_calls[0].function)
assert r.choices[0].finish_reason == "tool_calls"
with c.chat.completions.stream(model="llama3.1:8b", messages=[{"role": "user", "content": "x [[two_tools]]"}], tools=tools) as s:
    for _ in s: pass
    final = s.get_final_completion()
calls = final.choices[0].message.tool_calls
print("oa stream() two tools:", [(t.id, t.function.name, json.loads(t.function.arguments)) for t in calls], final.choices[0].finish_reason)
assert [t.function.name for t in calls] == ["read_file", "list_dir"]
r = c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "x"}], max_tokens=5)
assert r.choices[0].finish_reason == "length"
try:
    list(c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "[[fail_mid]]"}], stream=True))
    print("no error?!"); sys.exit(1)
except openai.APIError as e:
    print("oa fail_mid ->", type(e).__name__, e.message[:60])
try:
    c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    print("oa 404 ->", e.body)
e = c.embeddings.create(model="nomic-embed-text", input=["a", "b"])
print("oa embeddings", len(e.data), len(e.data[0].embedding))
ef = c.embeddings.create(model="nomic-embed-text", input="a", encoding_format="float")
assert abs(ef.data[0].embedding[0] - e.data[0].embedding[0]) < 1e-6
print("oa models", [m.id for m in c.models.list()][:3])
print("oa completions", c.completions.create(model="llama3.1:8b", prompt="hi [[tokens=3]]").choices[0].text)
r = c.chat.completions.create(model="qwen3:8b", messages=[{"role": "user", "content": "hi [[tokens=2]]"}])
print("oa reasoning extra:", getattr(r.choices[0].message, "reasoning", None))

a = anthropic.Anthropic(base_url=H, api_key="x", max_retries=0)
m = a.messages.create(model="llama3.1:8b", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
assert m.id.startswith("msg_") and m.type == "message" and m.stop_reason == "end_turn"
print("an create:", m.content[0].text[:30], m.usage)
with a.messages.stream(model="qwen3:8b", max_tokens=100, thinking={"type": "enabled", "budget_tokens": 1024},
                       messages=[{"role": "user", "content": "hi [[tokens=4]]"}]) as s:
    text = "".join(s.text_stream)
    fm = s.get_final_message()
print("an stream:", [b.type for b in fm.content], repr(text), fm.stop_reason, fm.usage)
assert fm.content[-1].text == text
with a.messages.stream(model="llama3.1:8b", max_tokens=100, tools=[{"name": "read_file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}],
                       messages=[{"role": "user", "content": "go"}]) as s:
    fm = s.get_final_message()
print("an tool:", fm.content[0].type, fm.content[0].input, fm.stop_reason)
assert isinstance(fm.content[0].input, dict) and fm.stop_reason == "tool_use"
try:
    with a.messages.stream(model="llama3.1:8b", max_tokens=100, messages=[{"role": "user", "content": "[[fail_mid]]"}]) as s:
        for _ in s: pass
    print("no error?!"); sys.exit(1)
except anthropic.APIError as e:
    print("an fail_mid ->", type(e).__name__)
import httpx
nm = httpx.post(H + "/v1/messages", json={"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]})
assert nm.status_code == 400 and nm.json()["error"]["type"] == "invalid_request_error", nm.text
print("an no max_tokens ->", nm.status_code, nm.json()["error"])
try:
    a.messages.create(model="llama3.1:8b", max_tokens=10, messages=[{"role": "user", "content": "[[error=busy]]"}])
except anthropic.APIStatusError as e:
    print("an 503 ->", type(e).__name__, e.status_code)
print("ALL OPENAI/ANTHROPIC OK")
