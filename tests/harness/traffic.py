"""Client traffic, always bounded in count and time: `load` (many distinct chat requests
from a few threads, results tallied by status), the three dialects as plain HTTP calls, and
`Traffic`, a weighted background mix for the ops tests."""

from __future__ import annotations

import itertools
import random
import threading
import time

import httpx


def chat_body(text="hi", model="qwen3:8b", stream=False, tokens=None):
    if tokens is not None:
        text = f"{text} [[tokens={tokens}]]"
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


class Result:
    __slots__ = ("status", "backend", "elapsed", "error", "body", "started", "replica")

    def __init__(self, status, backend, elapsed, error=None, body="", started=None, replica=None):
        self.status, self.backend, self.elapsed, self.error, self.body = (
            status, backend, elapsed, error, body)
        self.started = started if started is not None else time.monotonic() - elapsed
        self.replica = replica

    def __repr__(self):
        return f"Result({self.status}, {self.backend}, {self.elapsed:.3f}s, {self.error!r})"


_LOAD_RUNS = itertools.count()


def load(url, n, *, concurrency=4, headers=None, body=None, path="/api/chat",
         max_seconds=60.0, timeout=30.0, stop=None, pause=0.0):
    """Sends up to `n` requests (bounded by `max_seconds` and the `stop` event) from
    `concurrency` threads, each with its own keep-alive client. Returns the Results."""
    results, lock = [], threading.Lock()
    counter = iter(range(n))
    deadline = time.monotonic() + max_seconds
    # By default every request is distinct: identical ones from one user within a few
    # seconds would share one upstream call (duplicate suppression) and measure nothing.
    run = next(_LOAD_RUNS)
    make_body = body if callable(body) else (
        lambda i: body or chat_body(f"hi {run}.{i}", tokens=1))

    def worker():
        with httpx.Client(timeout=timeout, headers=headers or {}) as c:
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.monotonic()
                try:
                    r = c.post(url + path, json=make_body(i))
                    res = Result(r.status_code, r.headers.get("x-corral-backend"),
                                 time.monotonic() - t0, body=r.text[:300])
                except httpx.HTTPError as e:
                    res = Result(None, None, time.monotonic() - t0, error=type(e).__name__)
                with lock:
                    results.append(res)
                if pause:
                    time.sleep(pause)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + timeout + 5)
    return results


def tally(results):
    out = {}
    for r in results:
        k = r.status if r.status is not None else r.error
        out[k] = out.get(k, 0) + 1
    return out


# ---------------------------------------------------------------- the three dialects


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def ollama_chat(client: httpx.Client, base: str, token: str, model: str, text: str, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    with client.stream("POST", f"{base}/api/chat", json=body, headers=_auth(token)) as r:
        for _ in r.iter_lines():
            pass
        return r.status_code


def ollama_generate(client: httpx.Client, base: str, token: str, model: str, text: str) -> int:
    r = client.post(f"{base}/api/generate", json={"model": model, "prompt": text, "stream": False}, headers=_auth(token))
    return r.status_code


def openai_chat(client: httpx.Client, base: str, token: str, model: str, text: str, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=_auth(token)) as r:
        for _ in r.iter_lines():
            pass
        return r.status_code


def anthropic_messages(client: httpx.Client, base: str, token: str, model: str, text: str, stream: bool = False) -> int:
    body = {"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": text}]}
    headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}
    with client.stream("POST", f"{base}/v1/messages", json=body, headers=headers) as r:
        for _ in r.iter_lines():
            pass
        return r.status_code


PROMPTS = [
    "Write a Python function that merges two sorted lists and explain its complexity.",
    "Summarize the plot of Hamlet in three sentences.",
    "What is the capital of Australia?",
    "Translate 'good morning, how are you?' into French and German.",
    "Refactor this Rust loop into an iterator chain: for x in v { if x > 2 { out.push(x * 2) } }",
    "Prove that the square root of 2 is irrational, step by step.",
    "Give me three name ideas for a coffee shop.",
    "Explain the difference between TCP and UDP to a new engineer.",
]


class Traffic:
    """Background client traffic, bounded in count and time; `stop()` ends it early.

    `mix` is a list of (weight, fn(client, rng) -> status).
    """

    def __init__(self, mix, threads: int = 3, max_requests: int = 2000, max_seconds: float = 300.0, seed: int = 7):
        self.mix, self.threads = mix, threads
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent = 0
        self.statuses: dict[int | str, int] = {}
        self._workers = [threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(threads)]
        self._deadline = 0.0

    def start(self) -> "Traffic":
        self._deadline = time.monotonic() + self.max_seconds
        for w in self._workers:
            w.start()
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self.sent >= self.max_requests or time.monotonic() > self._deadline:
                return False
            self.sent += 1
            return True

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        total = sum(w for w, _ in self.mix)
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
            while self._take():
                pick = rng.uniform(0, total)
                for w, fn in self.mix:
                    pick -= w
                    if pick <= 0:
                        break
                try:
                    status = fn(client, rng)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                if not (isinstance(status, int) and status < 400):
                    time.sleep(0.05)  # errors come back fast: do not spin on them

    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout)
