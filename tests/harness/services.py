"""The real services tests start beside corral, each on a free loopback port and stopped by
its PID: redis-server, Postgres, nginx (load balancer or TLS front), tinyproxy, Prometheus,
a private CA (openssl), and `StallProxy`, a TCP proxy that slows or holds every chunk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import Proc, free_port, wait_http, wait_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = os.environ.get("PG_OS_USER", "postgres")


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
worker_processes {workers};
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
    access_log {access_log};
""" + NGINX_TEMP_PATHS + """\
    upstream corral {{
{servers}
        keepalive {keepalive};
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
    """nginx as a load balancer over loopback upstreams (round robin, keepalive, retries).

    The cluster tests put it in front of corral replicas; `make bench` puts it in front of
    one `corral sim` as the baseline hop (`workers=2, access_log=False, keepalive=256`)."""

    def __init__(self, workdir: Path, upstream_ports, port: int | None = None,
                 non_idempotent: bool = False, max_fails: int = 1, fail_timeout: str = "2s",
                 workers: int = 1, access_log: bool = True, keepalive: int = 64):
        self.dir = workdir / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails={max_fails} fail_timeout={fail_timeout};"
            for p in upstream_ports)
        conf = NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers,
                                 extra_next=" non_idempotent" if non_idempotent else "",
                                 tries=max(len(upstream_ports), 1), workers=workers,
                                 keepalive=keepalive,
                                 access_log=f"{self.dir}/nginx-access.log lb" if access_log else "off")
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
                                                   upstream=upstream_port, workers=1))
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


# ---------------------------------------------------------------- prometheus


class Prometheus:
    """Debian's Prometheus scraping `targets` (host:port) every second, TSDB in `workdir`."""

    def __init__(self, workdir: Path, targets: list[str], rule_files=()):
        exe = shutil.which("prometheus")
        if not exe:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = workdir / "prometheus-data"
        data.mkdir(exist_ok=True)
        conf = workdir / "prometheus.yml"
        conf.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [{"job_name": "corral", "static_configs": [{"targets": targets}]}],
        }, indent=2))
        self.proc = Proc("prometheus", [exe, f"--config.file={conf}", f"--storage.tsdb.path={data}",
                                        f"--web.listen-address=127.0.0.1:{self.port}",
                                        "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                         workdir / "prometheus.log")
        wait_http(f"{self.url}/-/ready", timeout=30, proc=self.proc)

    def stop(self):
        self.proc.stop(signal.SIGTERM)


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
