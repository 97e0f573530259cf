"""The one test harness of corral's Python tests (tests/py), ops checks (tests/ops) and
`make bench` (scripts/bench.py): real processes on free loopback ports, each stopped by its
PID, and bounded client traffic.

    from harness import Group
    with Group(workdir) as g:
        redis = g.redis()
        sims = [g.sim("up-a", require_keys=["k1", "k2"])]
        cluster = g.cluster(sims, replicas=3, redis=redis)   # or g.gateway(sims): one replica
        lb = g.nginx([r.port for r in cluster.replicas])

tests/py/pytest.ini and the scripts put `tests/` on the import path; the corral binary is
CORRAL_BIN, else target/debug/corral.
"""

from .corral import CORRAL, Cluster, Gateway, Replica, Sim, corral_bin, metric_value, render_config, toml_value
from .group import Group
from .procs import ROOT, Proc, free_port, port_open, rss_kib, wait_http, wait_port, wait_until
from .report import FIGURES, Checks, figure
from .services import (ForwardProxy, Nginx, Postgres, PrivateCA, Prometheus, Redis, StallProxy, TlsFront,
                       psql_available)
from .traffic import (PROMPTS, Result, Traffic, anthropic_messages, chat_body, load, ollama_chat, ollama_generate,
                      openai_chat, tally)

__all__ = [
    "CORRAL", "Checks", "Cluster", "FIGURES", "ForwardProxy", "Gateway", "Group", "Nginx", "PROMPTS", "Postgres",
    "PrivateCA", "Proc", "Prometheus", "ROOT", "Redis", "Replica", "Result", "Sim", "StallProxy", "TlsFront",
    "Traffic", "anthropic_messages", "chat_body", "corral_bin", "figure", "free_port", "load", "metric_value",
    "ollama_chat", "ollama_generate", "openai_chat", "port_open", "psql_available", "render_config", "rss_kib",
    "tally", "toml_value", "wait_http", "wait_port", "wait_until",
]
