#!/usr/bin/env bash
# `make bench`: release build, then corral vs nginx vs direct in one run, then micro-benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null && command -v nginx >/dev/null && [ -x .venv/bin/python ] || bash scripts/setup.sh
cargo build --release --bin corral
# The venv has httpx, which the shared test harness (tests/harness) uses.
CORRAL_BIN="$PWD/target/release/corral" .venv/bin/python scripts/bench.py
for b in $(sed -n 's/^name = "\(.*\)"$/\1/p' <(awk '/^\[\[bench\]\]/{f=1;next} f&&/^name/{print; f=0}' Cargo.toml)); do
    echo; echo "== cargo bench --bench $b"
    cargo bench --bench "$b"
done
