# corral: `make run` starts a gateway with a simulated fleet; `make test` runs every test.
CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python

.PHONY: run test setup lint unit pytests jstests ops bench schema-check test-chaos clean-venv

run:
	$(CARGO) run --release -- demo

test: setup lint unit pytests jstests ops

setup:
	bash scripts/setup.sh

lint:
	python3 scripts/check-self-contained.py
	python3 scripts/check-layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Unit tests beside the code plus the one integration-test binary (SQLite and Postgres).
unit:
	$(CARGO) test --lib --test it

# The official ollama / openai / anthropic Python clients against corral and `corral sim`.
pytests:
	$(CARGO) build --bin corral
	CORRAL_BIN=$(CURDIR)/target/debug/corral $(PY) -m pytest -q -p no:cacheprovider tests/py

# The official JavaScript SDKs, Claude Code and the Codex CLI (tests/js, pinned by its lockfile).
jstests:
	$(CARGO) build --bin corral
	cd tests/js && CORRAL_BIN=$(CURDIR)/target/debug/corral node --test --test-concurrency=1

ops:
	SCREENSHOT_DIR=$(CURDIR)/target/screenshots bash tests/ops/run.sh

bench:
	bash scripts/bench.sh

schema-check:
	bash scripts/schema-check.sh

test-chaos:
	$(CARGO) build --bin corral
	CORRAL_BIN=$(CURDIR)/target/debug/corral CORRAL_CHAOS_LONG=1 $(PY) -m pytest -q -p no:cacheprovider tests/py -m chaos
