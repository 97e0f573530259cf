#!/usr/bin/env python3
"""A stand-in corral for the dashboard test: the page files from disk plus the admin JSON API
of docs/ADMIN_API.md, and just enough of the OpenAI dialect to make traffic.

Standard library only. State lives in memory; history for the graphs is synthesized
deterministically so screenshots look like a fleet that has been running for a day.

    python3 tests/ops/mock_admin.py --port 8099 --token crl_xxx [--no-keys]

Prints `mock_admin listening on http://127.0.0.1:PORT` once ready.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import secrets
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "api" / "dashboard"
# Same policy the Rust handler sends, so a CSP violation shows up here first.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
FILES = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
}
WINDOWS = {"60m": 60, "2h": 120, "4h": 240, "6h": 360, "12h": 720, "24h": 1440}
MODELS = ["gpt-oss:120b-cloud", "llama3.1:70b", "qwen2.5-coder:32b", "llama3.1:8b"]
GiB = 1024**3


def now() -> float:
    return time.time()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def new_token() -> str:
    return "crl_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class State:
    """Everything the mock knows, behind one lock."""

    def __init__(self, admin_token: str, keys: bool):
        self.lock = threading.Lock()
        self.started = now()
        self.keys_enabled = keys
        self.users: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}  # sha256(token) -> user name
        self.minutes: dict[int, dict[str, list[int]]] = {}  # minute -> model -> [requests, tokens, errors, in, out]
        self.requests: list[dict] = []
        self.inflight: dict[str, int] = {"gpu-big": 0, "gpu-small": 0, "ollama-cloud": 0}
        self._add_user("admin", admin_token, admin=True)
        self._seed_history()
        self._seed_requests()
        self.keys = [
            {"id": 1, "prefix": "a1b2c3", "state": "active", "category": "pro"},
            {"id": 2, "prefix": "d4e5f6", "state": "active", "category": "pro"},
            {"id": 3, "prefix": "0a9b8c", "state": "penalized", "category": "free"},
            {"id": 4, "prefix": "77ee12", "state": "disabled", "category": "free"},
        ]
        self.penalty_until = now() + 95

    # -- users --------------------------------------------------------------------------
    def _add_user(self, name, token, admin=False, rpm=None, tpm=None):
        self.users[name] = {
            "id": len(self.users) + 1, "name": name, "admin": admin, "active": True,
            "rpm": rpm, "tpm": tpm, "created_at": iso(now() - (86400 * 3 if name == "admin" else 0)),
        }
        self.tokens[hashlib.sha256(token.encode()).hexdigest()] = name

    def user_for(self, token: str | None) -> dict | None:
        if not token:
            return None
        name = self.tokens.get(hashlib.sha256(token.encode()).hexdigest())
        user = self.users.get(name) if name else None
        return user if user and user["active"] else None

    def rotate(self, name: str) -> str:
        for h, n in list(self.tokens.items()):
            if n == name:
                del self.tokens[h]
        token = new_token()
        self.tokens[hashlib.sha256(token.encode()).hexdigest()] = name
        return token

    # -- traffic ------------------------------------------------------------------------
    def _seed_history(self):
        rnd = random.Random(7)
        this_minute = int(now() // 60)
        # The oldest hour stays empty: a synthesized minute leaving the sliding 24 h window
        # would make the counters drop while a test waits for them to rise.
        for m in range(this_minute - 1380, this_minute):
            hour = (m // 60) % 24
            load = 0.3 + 0.7 * abs(((hour + 6) % 24) - 12) / 12  # a day/night curve
            row = {}
            for i, model in enumerate(MODELS):
                if rnd.random() < 0.25 * (i + 1) / 2:
                    continue
                req = rnd.randint(0, int(6 * load / (i + 1)) + 1)
                toks = req * rnd.randint(300, 1600)
                row[model] = [req, toks, 1 if rnd.random() < 0.03 else 0, toks // 3, toks - toks // 3]
            self.minutes[m] = row

    def _seed_requests(self):
        rnd = random.Random(11)
        t = now() - 600
        for i in range(8):
            status = [200, 200, 200, 429, 200, 502, 200, 200][i]
            model = MODELS[i % len(MODELS)]
            self.requests.insert(0, self._row(
                user="alice" if i % 2 else "bob", model=model, backend=["gpu-big", "ollama-cloud"][i % 2],
                status=status, tokens_in=rnd.randint(20, 900), tokens_out=0 if status != 200 else rnd.randint(10, 700),
                ttfb=rnd.randint(80, 900), duration=rnd.randint(900, 9000), at=t + i * 70,
                body=json.dumps({"model": model, "messages": [{"role": "user", "content": f"seed question {i}"}]}),
                error=None if status == 200 else ("upstream rate limited" if status == 429 else "backend gpu-big: connection refused"),
            ))

    def _row(self, *, user, model, backend, status, tokens_in, tokens_out, ttfb, duration, at, body, error=None):
        return {
            "request_id": str(uuid.uuid4()), "time": iso(at), "user": user, "client_ip": "127.0.0.1",
            "dialect": "openai", "model_requested": model, "model_served": model, "backend": backend,
            "key_id": 1 if backend == "ollama-cloud" else None, "status": status,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_estimated": False,
            "ttfb_ms": ttfb, "duration_ms": duration, "error": error, "category": None,
            "has_body": body is not None, "shared": False, "_body": body,
        }

    def record(self, user: str, model: str, body: str) -> dict:
        tokens_in = max(1, len(body) // 4)
        tokens_out = 42
        backend = "gpu-big" if model != "gpt-oss:120b-cloud" else "ollama-cloud"
        row = self._row(user=user, model=model, backend=backend, status=200, tokens_in=tokens_in,
                        tokens_out=tokens_out, ttfb=35, duration=120, at=now(), body=body)
        self.requests.insert(0, row)
        del self.requests[500:]
        bucket = self.minutes.setdefault(int(now() // 60), {})
        agg = bucket.setdefault(model, [0, 0, 0, 0, 0])
        agg[0] += 1
        agg[1] += tokens_in + tokens_out
        agg[3] += tokens_in
        agg[4] += tokens_out
        return row

    # -- views ----------------------------------------------------------------------------
    def backends(self) -> dict:
        t = now()
        wobble = int(t) % 7
        return {"backends": [
            {
                "name": "gpu-big", "url": "http://10.0.0.11:11434", "kind": "ollama", "priority": 1, "up": True,
                "circuit": "closed", "models": [{"name": m, "size": 40 * GiB} for m in MODELS[1:]],
                "resident": [
                    {"name": "llama3.1:70b", "size": 40 * GiB, "size_vram": 40 * GiB, "expires_at": iso(t + 240)},
                    {"name": "qwen2.5-coder:32b", "size": 19 * GiB, "size_vram": 19 * GiB, "expires_at": iso(t + 1200)},
                ],
                "memory_used": 59 * GiB, "memory_max": 80 * GiB, "reserved_memory": (4 + wobble) * GiB,
                "inflight": self.inflight["gpu-big"] + wobble, "ewma_latency_ms": 812.4 + wobble * 10,
                "ewma_ttfb_ms": 143.2 + wobble, "consecutive_failures": 0, "last_error": None,
            },
            {
                "name": "gpu-small", "url": "http://10.0.0.12:11434", "kind": "ollama", "priority": 2, "up": False,
                "circuit": "open", "models": [{"name": "llama3.1:8b", "size": 5 * GiB}], "resident": [],
                "memory_used": 0, "memory_max": 24 * GiB, "reserved_memory": 0, "inflight": 0,
                "ewma_latency_ms": None, "ewma_ttfb_ms": None, "consecutive_failures": 7,
                "last_error": "connect: connection refused (10.0.0.12:11434)",
            },
            {
                "name": "ollama-cloud", "url": "https://ollama.example", "kind": "ollama", "priority": 1, "up": True,
                "circuit": "half_open", "models": [{"name": "gpt-oss:120b-cloud", "size": 0}], "resident": [],
                "memory_used": 0, "memory_max": None, "reserved_memory": 0,
                "inflight": self.inflight["ollama-cloud"] + (wobble % 3), "ewma_latency_ms": 2400.0,
                "ewma_ttfb_ms": 610.0, "consecutive_failures": 1, "last_error": "429 usage limit reached",
            },
        ]}

    def key_pools(self) -> dict:
        if self.penalty_until < now():
            self.penalty_until = now() + 95
        keys = []
        for k in self.keys:
            keys.append({**k, "penalty_until": iso(self.penalty_until) if k["state"] == "penalized" else None,
                         "requests_2h": 40 * k["id"], "tokens_2h": 31000 * k["id"],
                         "last_used": iso(now() - 30 * k["id"])})
        count = lambda s: sum(1 for k in keys if k["state"] == s)  # noqa: E731
        return {"pools": [{"name": "cloud", "active": count("active"), "penalized": count("penalized"),
                           "disabled": count("disabled"), "keys": keys}]}

    def stats(self, window: str) -> dict | None:
        n = WINDOWS.get(window)
        if n is None:
            return None
        last = int(now() // 60)
        minutes = list(range(last - n + 1, last + 1))
        models: dict[str, dict] = {}
        total = {"tokens": [0] * n, "requests": [0] * n}
        for i, m in enumerate(minutes):
            for model, agg in self.minutes.get(m, {}).items():
                entry = models.setdefault(model, {"tokens": [0] * n, "requests": [0] * n})
                entry["tokens"][i] += agg[1]
                entry["requests"][i] += agg[0]
                total["tokens"][i] += agg[1]
                total["requests"][i] += agg[0]
        return {"window": window, "step_seconds": 60, "buckets": [iso(m * 60) for m in minutes],
                "models": models, "total": total}

    def stats_24h(self) -> dict:
        last = int(now() // 60)
        hourly = []
        totals = [0, 0, 0, 0, 0]
        by_model: dict[str, list[int]] = {}
        for h in range(24):
            start = last - 1440 + 1 + h * 60
            req = toks = 0
            for m in range(start, start + 60):
                for model, agg in self.minutes.get(m, {}).items():
                    req += agg[0]
                    toks += agg[1]
                    for j in range(5):
                        totals[j] += agg[j]
                    bm = by_model.setdefault(model, [0, 0, 0, 0, 0])
                    for j in range(5):
                        bm[j] += agg[j]
            hourly.append({"t": iso(start * 60), "requests": req, "tokens": toks})
        return {
            "requests": totals[0], "errors": totals[2], "tokens_in": totals[3], "tokens_out": totals[4],
            "hourly": hourly,
            "by_model": [{"model": k, "requests": v[0], "errors": v[2], "tokens_in": v[3], "tokens_out": v[4]}
                         for k, v in sorted(by_model.items())],
            "by_user": [], "by_backend": [], "by_key": [], "by_client_ip": [],
        }


    def stats_models(self) -> dict:
        """Per-model latency from the request rows, shaped like /admin/api/stats/models."""
        def pct(values, p):
            if not values:
                return None
            values = sorted(values)
            return values[max(0, -(-p * len(values) // 100) - 1)]

        groups: dict[str, list[dict]] = {}
        for r in self.requests:
            groups.setdefault(r.get("model_served") or "-", []).append(r)
        by_model = []
        for model, rows in sorted(groups.items()):
            durations = [r["duration_ms"] for r in rows]
            ttfbs = [r["ttfb_ms"] for r in rows if r.get("ttfb_ms") is not None]
            by_model.append({
                "model": model, "requests": len(rows),
                "errors": sum(1 for r in rows if r["status"] >= 400),
                "tokens_in": sum(r["tokens_in"] for r in rows), "tokens_out": sum(r["tokens_out"] for r in rows),
                "duration_ms": {"p50": pct(durations, 50), "p95": pct(durations, 95)},
                "ttfb_ms": {"p50": pct(ttfbs, 50), "p95": pct(ttfbs, 95)},
            })
        return {"window_minutes": 1440, "sampled": False, "by_model": by_model, "by_category": []}


def public_row(row: dict, body: bool = False) -> dict:
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    if body:
        out["body"] = row["_body"]
    return out


class Handler(BaseHTTPRequestHandler):
    state: State
    server_version = "corral-mock/0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if os.environ.get("MOCK_VERBOSE"):
            super().log_message(fmt, *args)

    # -- plumbing -------------------------------------------------------------------------
    def send_json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str, kind: str) -> None:
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": kind}})

    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:].strip()
        return self.headers.get("x-api-key")

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def admin(self) -> dict | None:
        user = self.state.user_for(self.bearer())
        if user is None:
            self.error(401, "missing or invalid token", "authentication_error")
            return None
        if not user["admin"]:
            self.error(403, "admin token required", "permission_error")
            return None
        return user

    # -- verbs ----------------------------------------------------------------------------
    def do_GET(self):
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        if path in FILES:
            name, ctype = FILES[path]
            data = (ASSETS / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)
            return
        if path in ("/health", "/ready"):
            self.send_json(200, {"status": "ok"})
            return
        if path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
            return
        if not path.startswith("/admin/api/"):
            self.error(404, f"no route for {path}", "not_found")
            return
        if self.admin() is None:
            return
        s = self.state
        with s.lock:
            if path == "/admin/api/backends":
                self.send_json(200, s.backends())
            elif path == "/admin/api/keys":
                if s.keys_enabled:
                    self.send_json(200, s.key_pools())
                else:
                    self.error(404, "no key pools API", "not_found")
            elif path == "/admin/api/stats":
                out = s.stats(query.get("window", ["60m"])[0])
                if out is None:
                    self.error(400, "window must be one of 60m, 2h, 4h, 6h, 12h, 24h", "invalid_request_error")
                else:
                    self.send_json(200, out)
            elif path == "/admin/api/stats/24h":
                self.send_json(200, s.stats_24h())
            elif path == "/admin/api/stats/models":
                self.send_json(200, s.stats_models())
            elif path == "/admin/api/requests":
                limit = int(query.get("limit", ["50"])[0])
                rows = [r for r in s.requests
                        if all(r.get(f) == query[f][0] for f in ("user",) if f in query)
                        and ("model" not in query or query["model"][0] in (r["model_requested"], r["model_served"]))]
                self.send_json(200, {"requests": [public_row(r) for r in rows[:limit]]})
            elif m := re.fullmatch(r"/admin/api/requests/([^/]+)", path):
                row = next((r for r in s.requests if r["request_id"] == unquote(m[1])), None)
                if row is None:
                    self.error(404, "no such request", "not_found")
                else:
                    self.send_json(200, public_row(row, body=True))
            elif path == "/admin/api/users":
                self.send_json(200, {"users": list(s.users.values())})
            else:
                self.error(404, f"no route for {path}", "not_found")

    def do_POST(self):
        path = urlparse(self.path).path
        raw = self.body()
        if path in ("/v1/chat/completions", "/api/chat"):
            self.chat(path, raw)
            return
        if not path.startswith("/admin/api/"):
            self.error(404, f"no route for {path}", "not_found")
            return
        if self.admin() is None:
            return
        s = self.state
        with s.lock:
            if path == "/admin/api/users":
                try:
                    req = json.loads(raw or b"{}")
                except ValueError:
                    self.error(400, "body is not JSON", "invalid_request_error")
                    return
                name = str(req.get("name") or "")
                if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name):
                    self.error(400, "name must be 1-64 of A-Z a-z 0-9 . _ @ -", "invalid_request_error")
                elif name in s.users:
                    self.error(400, f"user {name} exists", "invalid_request_error")
                else:
                    token = new_token()
                    s._add_user(name, token, admin=bool(req.get("admin")), rpm=req.get("rpm"), tpm=req.get("tpm"))
                    self.send_json(200, {"user": s.users[name], "token": token})
            elif m := re.fullmatch(r"/admin/api/users/([^/]+)/(deactivate|activate|rotate)", path):
                user = s.users.get(unquote(m[1]))
                if user is None:
                    self.error(404, "no such user", "not_found")
                elif m[2] == "rotate":
                    self.send_json(200, {"user": user, "token": s.rotate(user["name"])})
                else:
                    user["active"] = m[2] == "activate"
                    self.send_json(200, {"user": user})
            elif (m := re.fullmatch(r"/admin/api/keys/(\d+)/(enable|disable)", path)) and s.keys_enabled:
                key = next((k for k in s.keys if k["id"] == int(m[1])), None)
                if key is None:
                    self.error(404, "no such key", "not_found")
                else:
                    key["state"] = "active" if m[2] == "enable" else "disabled"
                    self.send_json(200, next(k for k in s.key_pools()["pools"][0]["keys"] if k["id"] == key["id"]))
            else:
                self.error(404, f"no route for {path}", "not_found")

    def chat(self, path: str, raw: bytes) -> None:
        s = self.state
        with s.lock:
            user = s.user_for(self.bearer())
            if user is None:
                self.error(401, "missing or invalid token", "authentication_error")
                return
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                self.error(400, "body is not JSON", "invalid_request_error")
                return
            model = req.get("model") or MODELS[0]
            if model not in MODELS:
                self.error(404, f"model {model} not found", "not_found")
                return
            row = s.record(user["name"], model, raw.decode("utf-8", "replace"))
        text = "Hello from the corral mock."
        if path == "/api/chat":
            self.send_json(200, {"model": model, "created_at": row["time"], "done": True,
                                 "message": {"role": "assistant", "content": text},
                                 "prompt_eval_count": row["tokens_in"], "eval_count": row["tokens_out"]})
        else:
            self.send_json(200, {"id": "chatcmpl-" + row["request_id"], "object": "chat.completion",
                                 "created": int(now()), "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": row["tokens_in"], "completion_tokens": row["tokens_out"],
                                           "total_tokens": row["tokens_in"] + row["tokens_out"]}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--token", default=os.environ.get("CORRAL_ADMIN_TOKEN") or new_token())
    ap.add_argument("--no-keys", action="store_true", help="answer 404 on /admin/api/keys")
    args = ap.parse_args()
    Handler.state = State(args.token, keys=not args.no_keys)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"mock_admin listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
