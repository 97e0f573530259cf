"""Processes on loopback: free ports, waiting for a port or a URL, and `Proc`, a child
process with its log file that is stopped by its PID (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def wait_http(url: str, timeout: float = 20.0, ok=(200,), proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before {url} was up:\n"
                               f"{proc.tail()}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code in ok:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up after {timeout}s: {last}")


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_until(pred, timeout: float, step: float = 0.02):
    """Polls `pred` until it returns a truthy value; returns (value, seconds) or (None, timeout)."""
    t0 = time.monotonic()
    while True:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None, time.monotonic() - t0
        time.sleep(step)


class Proc:
    """A child process with its log file; stopped by its PID."""

    def __init__(self, name, args, log_path, env=None, cwd=None, **popen):
        self.name, self.args, self.log_path = name, list(args), Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.cwd, self.popen_kw = cwd, popen
        self.popen = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                      **self.popen_kw)
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.alive():
            os.kill(self.popen.pid, sig)
            if self.wait(timeout) is None:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if not self.log.closed:
            self.log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-n:])

