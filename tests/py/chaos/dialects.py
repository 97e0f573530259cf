"""Requests and stream verdicts in the three dialects, over raw HTTP (no SDK retries)."""

import json
import time

import httpx

PATHS = {"ollama": "/api/chat", "openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def body(dialect, text, stream=True, model="qwen3:8b"):
    msgs = [{"role": "user", "content": text}]
    if dialect == "anthropic":
        return {"model": model, "max_tokens": 256, "stream": stream, "messages": msgs}
    return {"model": model, "stream": stream, "messages": msgs}


def headers(token, dialect):
    h = {"Authorization": f"Bearer {token}"}
    if dialect == "anthropic":
        h["anthropic-version"] = "2023-06-01"
    return h


def is_error_body(dialect, text):
    try:
        v = json.loads(text)
    except ValueError:
        return False
    if dialect == "ollama":
        return isinstance(v.get("error"), str) and v["error"] != ""
    if dialect == "openai":
        return isinstance(v.get("error"), dict) and "message" in v["error"]
    return v.get("type") == "error" and "message" in v.get("error", {})


def verdict(dialect, lines):
    """(clean_end, error_seen) for a streamed answer given as its raw lines."""
    clean = error = False
    for ln in lines:
        if dialect == "ollama":
            if not ln.strip():
                continue
            try:
                v = json.loads(ln)
            except ValueError:
                error = True  # not JSON on the client's wire is a failure too, never clean
                continue
            clean |= v.get("done") is True
            error |= "error" in v
        elif ln.startswith("data:"):
            data = ln[5:].strip()
            if dialect == "openai":
                if data == "[DONE]":
                    clean = True
                    continue
            try:
                v = json.loads(data)
            except ValueError:
                error = True
                continue
            if dialect == "openai":
                error |= "error" in v
            else:
                clean |= v.get("type") == "message_stop"
                error |= v.get("type") == "error"
        elif ln.startswith("event:") and dialect == "anthropic":
            error |= ln.split(":", 1)[1].strip() == "error"
    return clean, error


def stream(base, token, dialect, text, timeout=30.0, read_lines=None):
    """POSTs a streaming request and reads it to the end (or `read_lines` lines, then closes).
    Returns dict(status, lines, elapsed, clean, error, body, headers)."""
    t0 = time.monotonic()
    lines = []
    with httpx.Client(timeout=timeout) as c:
        with c.stream("POST", base + PATHS[dialect], json=body(dialect, text),
                      headers=headers(token, dialect)) as r:
            status, hdrs = r.status_code, dict(r.headers)
            if status != 200:
                r.read()
                return dict(status=status, lines=[], elapsed=time.monotonic() - t0, clean=False,
                            error=is_error_body(dialect, r.text), body=r.text, headers=hdrs)
            try:
                for ln in r.iter_lines():
                    lines.append(ln)
                    if read_lines and len(lines) >= read_lines:
                        break
            except httpx.HTTPError as e:
                lines.append(f"<transport error {type(e).__name__}>")
    clean, error = verdict(dialect, lines)
    return dict(status=status, lines=lines, elapsed=time.monotonic() - t0, clean=clean,
                error=error, body="\n".join(lines)[-400:], headers=hdrs)


def call(base, token, dialect, text, timeout=30.0):
    """Non-streaming request; returns the httpx.Response."""
    return httpx.post(base + PATHS[dialect], json=body(dialect, text, stream=False),
                      headers=headers(token, dialect), timeout=timeout)
