"""Reusable process helpers for multi-process tests: redis-server, Postgres, nginx, corral.

Everything binds 127.0.0.1 on a free port and is stopped by its PID (never by name). A
`Group` remembers what it started and stops it in reverse order; tests get one through the
`group` fixture in `chaos/conftest.py` or build their own.

    g = Group(workdir)
    redis = g.redis()
    pg = g.postgres()                 # None-safe: g.database() falls back to SQLite
    sims = [g.sim("up-a", require_keys=["k1", "k2"])]
    cluster = g.cluster(sims, replicas=3, redis=redis, db_url=pg.url)
    lb = g.nginx([r.port for r in cluster.replicas])
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CORRAL = os.environ.get("CORRAL_BIN", str(ROOT / "target" / "debug" / "corral"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = os.environ.get("PG_OS_USER", "postgres")


# ---------------------------------------------------------------- basics


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


def figure(scenario: str, text: str) -> None:
    """The one line per scenario that the issue asks for; run pytest with -s to see it live."""
    line = f"FIGURE {scenario}: {text}"
    FIGURES.append(line)
    print("\n" + line, flush=True)


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
                                      env=self.env, cwd=self.cwd, **self.popen_kw)
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


# ---------------------------------------------------------------- redis


class Redis:
    """redis-server on a fixed free port, no persistence; restartable on the same port."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = workdir, port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.starts = 0
        self.start()

    def start(self):
        self.starts += 1
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--protected-mode", "no", "--maxclients", "2000"]
        self.proc = Proc("redis", args, self.workdir / "redis.log")
        wait_port(self.port)
        deadline = time.monotonic() + 10
        while self.cmd("PING") != "PONG" and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def cmd(self, *args, timeout: float = 2.0):
        """One RESP command over a fresh socket; returns the decoded reply (or None on error)."""
        payload = f"*{len(args)}\r\n".encode()
        for a in args:
            b = str(a).encode()
            payload += b"$%d\r\n%s\r\n" % (len(b), b)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(payload)
                return _resp_read(s.makefile("rb"))
        except OSError:
            return None

    def kill(self):
        self.proc.stop(signal.SIGKILL)

    def stop(self):
        if self.proc:
            self.proc.stop(signal.SIGTERM)

    def restart(self):
        self.stop()
        return self.start()


def _resp_read(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    return None


# ---------------------------------------------------------------- postgres


class Postgres:
    """A throwaway Postgres cluster owned by a non-root OS user, on a free loopback port.

    initdb and pg_ctl run through `runuser`; the postmaster is then stopped, paused (SIGSTOP)
    and resumed by the PID in its `postmaster.pid`.
    """

    def __init__(self, workdir: Path, port: int | None = None, db: str = "corral",
                 max_connections: int = 200):
        self.port = port or free_port()
        # Its own world-traversable directory: pytest's tmp dirs are 0700 root.
        self.base = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        os.chmod(self.base, 0o755)
        self.workdir = workdir
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log_path = self.base / "pg.log"
        self.db, self.user = db, "corral"
        self.url = f"postgres://corral:corral@127.0.0.1:{self.port}/{db}"
        self.max_connections = max_connections
        self.pid = None
        self.base.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        shutil.chown(self.base, PG_OS_USER, PG_OS_USER)
        shutil.chown(self.sock, PG_OS_USER, PG_OS_USER)
        self._as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
                     "--auth=trust", "-E", "UTF8", "--no-sync"], timeout=120)
        self.start()
        self._as_pg([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", self.user, db])

    def _as_pg(self, args, timeout=60, check=True):
        r = subprocess.run(["runuser", "-u", PG_OS_USER, "--", *args], capture_output=True,
                           text=True, timeout=timeout, cwd=str(self.base))
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def start(self):
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                f"-c max_connections={self.max_connections} -c shared_buffers=32MB")
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                     "-o", opts, "-w", "-t", "60", "start"], timeout=90)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self, mode=signal.SIGINT, timeout: float = 30.0):
        """SIGINT = fast shutdown (rolls back and disconnects clients). Waits for exit."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGCONT)  # a paused postmaster cannot shut down
        os.kill(self.pid, mode)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGQUIT)
            while self.alive():
                time.sleep(0.05)

    def close(self):
        """Stops the server and removes its data directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def pause(self):
        """Accepting but not answering: the postmaster and every backend are stopped."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self):
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self):
        pids = [self.pid]
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.pid:
                    pids.append(int(d.name))
        return pids

    def sql(self, query: str, timeout: float = 30, db: str | None = None) -> str:
        r = self._as_pg([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p",
                         str(self.port), "-U", self.user, "-d", db or self.db, "-At", "-c", query],
                        timeout=timeout, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return r.stdout.strip()

    def reset_db(self, db: str):
        """Creates an empty database `db` (dropping it first) and returns its URL."""
        self.sql(f'DROP DATABASE IF EXISTS "{db}"')
        self.sql(f'CREATE DATABASE "{db}"')
        return f"postgres://corral:corral@127.0.0.1:{self.port}/{db}"


def psql_available() -> bool:
    return (PG_BIN / "initdb").exists() and shutil.which("runuser") is not None


# ---------------------------------------------------------------- nginx


NGINX_PROLOGUE = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
"""

# Every temp path inside the test's directory (nginx's defaults are not writable there).
NGINX_TEMP_PATHS = "".join(f"    {kind}_temp_path {{dir}}/tmp/{kind};\n"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))

NGINX_CONF = NGINX_PROLOGUE + """\
http {{
    log_format lb '$status $upstream_addr $upstream_status $request_time';
    access_log {dir}/nginx-access.log lb;
""" + NGINX_TEMP_PATHS + """\
    upstream corral {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 128m;
        location / {{
            proxy_pass http://corral;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_connect_timeout 2s;
            proxy_read_timeout 300s;
            proxy_next_upstream error timeout http_502 http_503{extra_next};
            proxy_next_upstream_tries {tries};
        }}
    }}
}}
"""


class Nginx:
    """nginx as the load balancer over corral replicas (round robin, keepalive, retries)."""

    def __init__(self, workdir: Path, upstream_ports, port: int | None = None,
                 non_idempotent: bool = False, max_fails: int = 1, fail_timeout: str = "2s"):
        self.dir = workdir / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails={max_fails} fail_timeout={fail_timeout};"
            for p in upstream_ports)
        conf = NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers,
                                 extra_next=" non_idempotent" if non_idempotent else "",
                                 tries=max(len(upstream_ports), 1))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = Proc("nginx", ["nginx", "-p", str(self.dir), "-c", str(self.conf),
                                   "-e", str(self.dir / "nginx-error.log")],
                         self.dir / "nginx.out")
        wait_port(self.port)

    def access_log(self) -> list[str]:
        p = self.dir / "nginx-access.log"
        return p.read_text().splitlines() if p.exists() else []

    def stop(self):
        self.proc.stop(signal.SIGTERM)


TLS_FRONT_CONF = NGINX_PROLOGUE + """\
http {{
    access_log off;
""" + NGINX_TEMP_PATHS + """\
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


class PrivateCA:
    """A private CA (openssl CLI) and server certificates it signs, as files in `dir`."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "ca"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", self.dir / "ca.key", "-out", self.cert, "-days", "2",
                      "-subj", "/CN=corral test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _openssl(self, *args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    def issue(self, name: str, dns: str) -> tuple[Path, Path]:
        """(certificate, key) for the host name `dns`."""
        key, csr, cert = (self.dir / f"{name}.{x}" for x in ("key", "csr", "pem"))
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{dns}\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", f"/CN={dns}")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.dir / "ca.key",
                      "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key


class TlsFront:
    """nginx terminating TLS on a loopback port in front of one plain upstream."""

    def __init__(self, workdir: Path, upstream_port: int, cert: Path, key: Path):
        self.port = free_port()
        self.dir = workdir / f"tls-{self.port}"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(TLS_FRONT_CONF.format(dir=self.dir, port=self.port, cert=cert, key=key,
                                                   upstream=upstream_port))
        self.proc = Proc("nginx-tls", ["nginx", "-p", str(self.dir), "-c", str(self.conf),
                                       "-e", str(self.dir / "nginx-error.log")],
                         self.dir / "nginx.out")
        wait_port(self.port)

    def stop(self):
        self.proc.stop(signal.SIGTERM)


class ForwardProxy:
    """tinyproxy: an outbound HTTP proxy (CONNECT and absolute-form) wanting Basic auth."""

    def __init__(self, workdir: Path, user: str, password: str):
        self.port = free_port()
        self.dir = workdir / f"proxy-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "tinyproxy.log"
        conf = self.dir / "tinyproxy.conf"
        conf.write_text(f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\n"
                        f'LogFile "{self.log}"\nLogLevel Connect\n'
                        f'PidFile "{self.dir}/tinyproxy.pid"\nMaxClients 64\n'
                        f"Allow 127.0.0.1\nBasicAuth {user} {password}\nDisableViaHeader Yes\n")
        self.proc = Proc("tinyproxy", ["tinyproxy", "-d", "-c", str(conf)], self.dir / "out.log")
        wait_port(self.port)

    def url(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """What clients asked for: `CONNECT host:port` or `POST http://...`."""
        if not self.log.exists():
            return []
        return [line.split("): ", 1)[1] for line in self.log.read_text().splitlines()
                if "Request (file descriptor" in line]

    def stop(self):
        self.proc.stop(signal.SIGTERM)


# ---------------------------------------------------------------- corral


class Sim:
    """`corral sim`: a simulated Ollama upstream."""

    def __init__(self, workdir: Path, name: str, port: int | None = None, vram="24GiB",
                 models=None, require_keys=(), key_budget=None, budget_window="60s", extra=()):
        self.name, self.port = name, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [CORRAL, "sim", "--port", str(self.port), "--name", name, "--vram", vram, *extra]
        if models:
            args += ["--models", ",".join(models)]
        for k in require_keys:
            args += ["--require-key", k]
        if key_budget is not None:
            args += ["--key-budget", str(key_budget), "--budget-window", budget_window]
        self.args, self.log_path = args, workdir / f"sim-{name}.log"
        self.start()

    def start(self):
        self.proc = Proc(f"sim-{self.name}", self.args, self.log_path)
        wait_http(f"{self.url}/api/version", proc=self.proc)
        return self

    def stop(self):
        self.proc.stop(signal.SIGKILL)

    def stats(self):
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()

    def control(self, **knobs):
        r = httpx.post(f"{self.url}/_sim/control", json=knobs, timeout=5)
        r.raise_for_status()
        return r.json()


def toml_value(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return json.dumps(str(v))


def render_config(*, listen_port: int, db_url: str, redis_url: str = "", sims=(),
                  backend_extra=None, key_pools=(), extra_toml: str = "", workers: int = 2,
                  shutdown_grace: str = "10s") -> str:
    """One corral TOML; `sims` are Sim objects or (name, url) pairs."""
    lines = ["[server]", f'listen = "127.0.0.1:{listen_port}"', f'shutdown_grace = "{shutdown_grace}"',
             f"workers = {workers}", "[database]", f"url = {toml_value(db_url)}",
             "[redis]", f"url = {toml_value(redis_url)}"]
    for i, s in enumerate(sims):
        name, url = (s.name, s.url) if isinstance(s, Sim) else s
        extra = dict((backend_extra or {}).get(name, {}))
        lines += ["[[backends]]", f"name = {toml_value(name)}", f"url = {toml_value(url)}"]
        extra.setdefault("priority", 1)
        extra.setdefault("poll_interval", "500ms")
        for k, v in extra.items():
            lines.append(f"{k} = {toml_value(v)}")
    for pool in key_pools:
        lines.append("[[key_pools]]")
        for k, v in pool.items():
            lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n" + extra_toml + "\n"


class Replica:
    def __init__(self, cluster: "Cluster", index: int, port: int | None = None):
        self.cluster, self.index = cluster, index
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, wait_ready: bool = True, env=None):
        c = self.cluster
        self.proc = Proc(f"corral-{self.index}",
                         [CORRAL, "--config", str(c.config_path), "serve", "--listen",
                          f"127.0.0.1:{self.port}"],
                         c.workdir / f"corral-{self.index}.log",
                         env={"RUST_LOG": "info", "NO_COLOR": "1", **c.env, **(env or {})}, cwd=str(c.workdir))
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 40.0):
        wait_http(f"{self.url}/health", timeout=timeout, proc=self.proc)
        wait_http(f"{self.url}/ready", timeout=timeout, proc=self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0):
        if self.proc:
            return self.proc.stop(sig, timeout)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, labels: dict | None = None) -> float:
        return metric_value(self.metrics(), name, labels)

    def admin(self, path: str, method="GET", **kw):
        r = httpx.request(method, f"{self.url}/admin/api/{path}",
                          headers={"Authorization": f"Bearer {self.cluster.admin_token}"},
                          timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def backends(self):
        return self.admin("backends")["backends"]

    def rss_kib(self) -> int:
        return self.proc.rss_kib()


class Cluster:
    """N corral replicas sharing one config file (one DB, one Redis), each on its own port."""

    def __init__(self, workdir: Path, sims, replicas: int = 3, redis: Redis | None = None,
                 db_url: str | None = None, backend_extra=None, key_pools=(),
                 extra_toml: str = "", env=None, workers: int = 2, start: bool = True,
                 shutdown_grace: str = "10s", name: str = "cluster", wait_ready: bool = True):
        self.workdir, self.env = workdir, dict(env or {})
        self.db_url = db_url or f"sqlite://{workdir}/{name}.db"
        self.redis = redis
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(render_config(
            listen_port=free_port(), db_url=self.db_url, redis_url=redis.url if redis else "",
            sims=sims, backend_extra=backend_extra, key_pools=key_pools,
            extra_toml=extra_toml, workers=workers, shutdown_grace=shutdown_grace))
        self.replicas = [Replica(self, i) for i in range(replicas)]
        self.admin_token = None
        self.user_token = None
        if start:
            self.migrate()
            self.admin_token = self.create_user("admin", admin=True)
            self.user_token = self.create_user("user")
            for r in self.replicas:
                r.start(wait_ready=False)
            for r in self.replicas:
                if wait_ready:
                    r.wait_ready()
                else:  # no healthy backend yet: /ready stays 503, /health is enough
                    wait_http(f"{r.url}/health", timeout=40, proc=r.proc)

    def cli(self, *args, check=True, timeout=60):
        r = subprocess.run([CORRAL, "--config", str(self.config_path), *args],
                           cwd=str(self.workdir), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env})
        if check and r.returncode != 0:
            raise RuntimeError(f"corral {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def migrate(self):
        return self.cli("migrate")

    def create_user(self, name, admin=False, rpm=None, tpm=None) -> str:
        args = ["users", "create", name]
        if admin:
            args.append("--admin")
        if rpm:
            args += ["--rpm", str(rpm)]
        if tpm:
            args += ["--tpm", str(tpm)]
        out = self.cli(*args).stdout
        tokens = [w for w in out.split() if w.startswith("crl_")]
        assert tokens, f"no token printed: {out!r}"
        return tokens[0]

    def headers(self, token=None):
        return {"Authorization": f"Bearer {token or self.user_token}"}

    def live(self):
        return [r for r in self.replicas if r.alive()]

    def stop(self):
        for r in self.replicas:
            r.stop()


def metric_value(text: str, name: str, labels: dict | None = None) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        if labels:
            got = dict(p.split("=", 1) for p in _split_labels(lab.rstrip("}")))
            if any(got.get(k) != json.dumps(v) for k, v in labels.items()):
                continue
        total += float(value)
        found = True
    return total if found else 0.0


def _split_labels(s: str):
    out, cur, q = [], "", False
    for ch in s:
        if ch == '"':
            q = not q
        if ch == "," and not q:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


# ---------------------------------------------------------------- group


class Group:
    """Starts processes in `workdir` and stops them all (reverse order) on `close()`."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.items = []

    def _add(self, item):
        self.items.append(item)
        return item

    def redis(self, **kw) -> Redis:
        return self._add(Redis(self.workdir, **kw))

    def postgres(self, **kw) -> Postgres:
        return self._add(Postgres(self.workdir, **kw))

    def database(self):
        """(url, Postgres or None, why-not): Postgres when it starts, else a SQLite file."""
        try:
            pg = self.postgres()
            return pg.url, pg, ""
        except Exception as e:  # noqa: BLE001 - any failure means "fall back", said loudly
            why = f"Postgres did not start ({e}); using SQLite"
            print(f"\nNOTE {why}", flush=True)
            return f"sqlite://{self.workdir}/shared.db", None, why

    def sim(self, name, **kw) -> Sim:
        return self._add(Sim(self.workdir, name, **kw))

    def cluster(self, sims, **kw) -> Cluster:
        return self._add(Cluster(self.workdir, sims, **kw))

    def nginx(self, upstream_ports, **kw) -> Nginx:
        return self._add(Nginx(self.workdir, upstream_ports, **kw))

    def forward_proxy(self, user, password) -> ForwardProxy:
        return self._add(ForwardProxy(self.workdir, user, password))

    def tls_front(self, upstream_port, cert, key) -> TlsFront:
        return self._add(TlsFront(self.workdir, upstream_port, cert, key))

    def close(self):
        for item in reversed(self.items):
            try:
                (getattr(item, "close", None) or item.stop)()
            except Exception as e:  # noqa: BLE001 - teardown must reach every process
                print(f"teardown of {type(item).__name__} failed: {e}")
        self.items.clear()


# ---------------------------------------------------------------- load


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
    import threading

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


FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    """procs is loaded as a plugin (`-p procs` in pytest.ini): repeat every FIGURE line."""
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


# ---------------------------------------------------------------- stall proxy


class StallProxy:
    """A TCP proxy on loopback in a thread: `delay` seconds are added before every chunk
    forwarded in either direction (a slow or stalled link); `delay = None` holds every
    chunk until it is set back to a number. Stopped with `stop()`."""

    def __init__(self, target_port: int, port: int | None = None):
        import asyncio
        import threading

        self.target_port, self.port = target_port, port or free_port()
        self.delay = 0.0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _run(self):
        import asyncio

        async def pipe(reader, writer):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    while self.delay is None:
                        await asyncio.sleep(0.02)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(cr, cw):
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                cw.close()
                return
            await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

        async def main():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            async with self.server:
                await self.server.serve_forever()

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(main())
        except BaseException:  # noqa: BLE001 - stopping cancels serve_forever
            pass

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        def shut():
            self.server.close()
            for t in __import__("asyncio").all_tasks(self.loop):
                t.cancel()
        self.loop.call_soon_threadsafe(shut)
        self.thread.join(5)
