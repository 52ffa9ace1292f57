# Two commands matter: `make run` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Demo secrets for `make run` only, so the README's curl works; set your own in production.
OKTA_HOOK_SECRET   ?= sandbox-okta-secret
BRIDGE_ADMIN_TOKEN ?= sandbox-admin-token
SCIM_TOKEN         ?= sandbox-scim-token
# The demo reads the Okta stand-in's System Log every 5 s (production default: 60), and does
# not sync memberships at start, so the recorded hook fixtures replay as they happened.
OKTA_LOG_POLL_SECONDS ?= 5
OKTA_SYNC_SECONDS     ?= 0
# ... and runs the Graph delta query against the Graph stand-in every 10 s (default: 900).
GRAPH_DELTA_SECONDS   ?= 10

run: $(STAMP)  ## the bridge on its embedded defaults: SQLite, mapping.yaml, COR and Okta stand-ins
	OKTA_HOOK_SECRET='$(OKTA_HOOK_SECRET)' BRIDGE_ADMIN_TOKEN='$(BRIDGE_ADMIN_TOKEN)' \
	SCIM_TOKEN='$(SCIM_TOKEN)' OKTA_LOG_POLL_SECONDS='$(OKTA_LOG_POLL_SECONDS)' \
	OKTA_SYNC_SECONDS='$(OKTA_SYNC_SECONDS)' GRAPH_DELTA_SECONDS='$(GRAPH_DELTA_SECONDS)' \
	$(BIN)/cor-bridge serve --sandbox --host 127.0.0.1 --port 8080

test: $(STAMP)  ## the whole suite
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/mypy app
	$(BIN)/pytest -q -n auto

# The unit tier, for the edit-test loop: lint and the unit tests on SQLite, in process (no
# PostgreSQL, no processes), the property tests with a tenth of their examples. Under a
# minute on 2 cores; `make test` remains the gate.
test-fast: $(STAMP)  ## lint and the unit tests on SQLite, in process
	$(BIN)/ruff check app tests benchmarks
	COR_BRIDGE_EXAMPLES_SCALE=0.1 COR_BRIDGE_FUZZ_EXAMPLES=10 \
	$(BIN)/pytest -q -n auto tests/unit -m 'not postgres and not processes'

# Benchmarks (not part of `make test`): needs wrk (installed with apt-get when run as root)
# and Debian's postgresql for the PostgreSQL half. BENCH_QUICK=1: a smoke run of a minute or two.
bench: $(STAMP)  ## throughput, latency and memory on SQLite and PostgreSQL; docs/performance.md
	$(BIN)/python -m benchmarks.run $(if $(BENCH_QUICK),--quick) $(BENCH_ARGS)

check: $(STAMP)
	$(BIN)/cor-bridge check

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
