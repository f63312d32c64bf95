# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e bench bench-quick chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/reconciler daemon

# pytest-xdist: TEST_WORKERS processes (most tests wait on subprocesses, so more than the cores pay off);
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 4

# The seams first (types, lint), then every tier (tests/unit, tests/integration, tests/e2e); each tier
# alone below.
test: $(STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m ruff check reconciler bench chaos
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

# The measurements (bench/results.md), then the slow scale test: 100,000 resources end to end; then the
# chaos campaign's self-test (re-introduced defects must be found and shrunk), the rollouts' slower fault
# tests (attacks that held) and the long campaign.
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow --timeout=3600 tests/e2e/test_scale.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow --timeout=3600 tests/e2e/test_chaos.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow tests/e2e/test_rollout_faults.py
	$(MAKE) chaos

# The long chaos campaign (README: "Chaos"): many seeds, hundreds of steps, SQLite and PostgreSQL; a
# failing seed is replayed to confirm it and shrunk. Override: make chaos CHAOS_SEEDS=1-20 CHAOS_STEPS=300
CHAOS_SEEDS ?= 1-4
CHAOS_PG_SEEDS ?= 1-2
CHAOS_STEPS ?= 200
CHAOS_OPTIONS ?= --confirm 3 --shrink
chaos: $(STAMP)
	status=0; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m chaos --backend sqlite --seeds $(CHAOS_SEEDS) \
		--steps $(CHAOS_STEPS) $(CHAOS_OPTIONS) || status=1; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m chaos --backend postgres --seeds $(CHAOS_PG_SEEDS) \
		--steps $(CHAOS_STEPS) $(CHAOS_OPTIONS) || status=1; \
	exit $$status

bench-quick: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench --quick
	PATH="$(CURDIR)/$(BIN):$$PATH" RECONCILER_SCALE=2000 $(BIN)/python -m pytest -m slow tests/e2e/test_scale.py

clean:
	rm -rf $(VENV) reconciler.db reconciler.db-wal reconciler.db-shm .reconciler
