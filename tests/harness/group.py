"""`Group`: what one test or script started, stopped in reverse order by `close()` (also as
a context manager), so no process outlives its test."""

from __future__ import annotations

from pathlib import Path

from .corral import Cluster, Gateway, Sim
from .services import ForwardProxy, Nginx, Postgres, Prometheus, Redis, TlsFront


class Group:
    """Starts processes in `workdir` and stops them all (reverse order) on `close()`."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.items = []

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def gateway(self, sims, **kw) -> Gateway:
        return self._add(Gateway(self.workdir, sims, **kw))

    def nginx(self, upstream_ports, **kw) -> Nginx:
        return self._add(Nginx(self.workdir, upstream_ports, **kw))

    def forward_proxy(self, user, password) -> ForwardProxy:
        return self._add(ForwardProxy(self.workdir, user, password))

    def tls_front(self, upstream_port, cert, key) -> TlsFront:
        return self._add(TlsFront(self.workdir, upstream_port, cert, key))

    def prometheus(self, targets, rule_files=()) -> Prometheus:
        return self._add(Prometheus(self.workdir, targets, rule_files))

    def start_failed(self, who: str, e: Exception) -> int:
        """For scripts: says why the processes did not start, with each one's last log lines;
        returns exit code 2."""
        print(f"{who}: the stack did not start: {e}")
        for item in self.items:
            for proc in _procs_of(item):
                print(f"--- {proc.name} (pid {proc.pid})\n{proc.tail(15)}")
        return 2

    def close(self):
        for item in reversed(self.items):
            try:
                (getattr(item, "close", None) or item.stop)()
            except Exception as e:  # noqa: BLE001 - teardown must reach every process
                print(f"teardown of {type(item).__name__} failed: {e}")
        self.items.clear()


def _procs_of(item):
    if isinstance(item, Cluster):
        return [r.proc for r in item.replicas if r.proc is not None]
    proc = getattr(item, "proc", None)
    return [proc] if proc is not None else []
