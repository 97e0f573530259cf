"""A real corral stack on loopback for the ops tests: `corral sim` backends, `corral serve`
replicas, an optional redis-server and Prometheus, and bounded client traffic.

Used by tests/ops/dashboard_real.py and tests/ops/prom_test.py. Every process is started here,
remembered by its Popen handle and stopped by PID (SIGTERM, then SIGKILL after a grace), in
reverse order, when the Stack is closed. Only httpx beyond the standard library.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def corral_bin() -> str | None:
    """CORRAL_BIN, else target/debug/corral, if it exists."""
    for cand in (os.environ.get("CORRAL_BIN"), str(ROOT / "target" / "debug" / "corral")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok=(200,), proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before {url} answered:\n{proc.tail()}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code in ok:
                return
            last = f"HTTP {r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout:.0f}s: {last}")


def toml_str(v: str) -> str:
    return json.dumps(v)


class Checks:
    """Counts named checks and prints one `ok`/`FAIL` line for each."""

    def __init__(self):
        self.passed, self.failed = 0, []

    def __call__(self, ok: bool, name: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{f': {detail}' if detail else ''}")
        return ok


class Proc:
    """A child process writing to a log file; stopped by its PID."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.args, self.log_path = name, args, log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **(env or {})}, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Sim:
    proc: Proc
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, **knobs) -> dict:
        r = httpx.post(f"{self.url}/_sim/control", json=knobs, timeout=5)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()


@dataclass
class Gateway:
    proc: Proc
    name: str
    port: int
    config: Path
    stack: "Stack"
    tokens: dict = field(default_factory=dict)  # user name -> token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.stack.bin, "--config", str(self.config), *args], cwd=self.stack.dir,
                              capture_output=True, text=True, timeout=60)

    def create_user(self, name: str, admin: bool = False, rpm: int | None = None, tpm: int | None = None) -> str:
        """`corral users create` (the CLI, so it works before any admin exists); returns the token."""
        args = ["users", "create", name] + (["--admin"] if admin else [])
        args += ["--rpm", str(rpm)] if rpm else []
        args += ["--tpm", str(tpm)] if tpm else []
        res = self.cli(*args)
        tokens = [w for w in (res.stdout + res.stderr).split() if w.startswith("crl_")]
        if res.returncode != 0 or not tokens:
            raise RuntimeError(f"users create {name}: rc={res.returncode} {res.stderr.strip()[:300]}")
        self.tokens[name] = tokens[0]
        return tokens[0]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


class Stack:
    """Owns every process of one test run, in a temp dir."""

    def __init__(self, workdir: Path, binary: str):
        self.dir, self.bin = Path(workdir), binary
        self.procs: list[Proc] = []
        self.sims: dict[str, Sim] = {}
        self.gateways: list[Gateway] = []

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_failed(self, who: str, e: Exception) -> int:
        """Says why the stack did not start, with each process's last lines; returns exit code 2."""
        print(f"{who}: the stack did not start: {e}")
        for p in self.procs:
            print(f"--- {p.name} (pid {p.pid})\n{p.tail(15)}")
        return 2

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"stack: stopping {p.name} (pid {p.pid}): {e}")
        self.procs.clear()

    def _start(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        p = Proc(name, args, self.dir / f"{name}.log", env=env, cwd=self.dir)
        self.procs.append(p)
        return p

    def sim(self, name: str, vram: str = "24GiB", models: list[str] | None = None, *extra: str) -> Sim:
        port = free_port()
        args = [self.bin, "sim", "--port", str(port), "--name", name, "--vram", vram, *extra]
        if models:
            args += ["--models", ",".join(models)]
        p = self._start(f"sim-{name}", args)
        sim = Sim(p, name, port)
        wait_http(f"{sim.url}/api/version", proc=p)
        self.sims[name] = sim
        return sim

    def redis(self) -> str:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        p = self._start("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", str(self.dir), "--daemonize", "no"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if p.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{p.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("redis-server did not answer PING")

    def gateway(self, name: str, body: str, port: int | None = None, wait_ready: bool = True) -> Gateway:
        """Writes `[server]` + body as NAME.toml, runs migrations, starts `corral serve`."""
        port = port or free_port()
        cfg = self.dir / f"{name}.toml"
        cfg.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = 2\nshutdown_grace = "3s"\n{body}')
        check = subprocess.run([self.bin, "--config", str(cfg), "check-config"], capture_output=True, text=True,
                               cwd=self.dir, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"check-config {cfg.name}: {check.stderr.strip()}")
        mig = subprocess.run([self.bin, "--config", str(cfg), "migrate"], capture_output=True, text=True,
                             cwd=self.dir, timeout=60)
        if mig.returncode != 0:
            raise RuntimeError(f"migrate {cfg.name}: {mig.stderr.strip()}")
        p = self._start(f"gw-{name}", [self.bin, "--config", str(cfg), "serve"], env={"RUST_LOG": "warn"})
        gw = Gateway(p, name, port, cfg, self)
        wait_http(f"{gw.url}/health", proc=p)
        if wait_ready:
            wait_http(f"{gw.url}/ready", timeout=30, proc=p)
        self.gateways.append(gw)
        return gw

    def prometheus(self, targets: list[str], rule_files: list[Path] = ()) -> str:
        exe = shutil.which("prometheus")
        if not exe:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        port = free_port()
        data = self.dir / "prometheus-data"
        data.mkdir(exist_ok=True)
        conf = self.dir / "prometheus.yml"
        conf.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [{"job_name": "corral", "static_configs": [{"targets": targets}]}],
        }, indent=2))
        p = self._start("prometheus", [exe, f"--config.file={conf}", f"--storage.tsdb.path={data}",
                                       f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
                                       "--log.level=warn"])
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", timeout=30, proc=p)
        return url


# ------------------------------------------------------------------------------ traffic

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
