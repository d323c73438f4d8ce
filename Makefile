# The two front-door commands are `make demo` and `make test`; each installs what it needs.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: demo test unit deps system-deps lint typecheck layers sandbox-down clean ui ui-down

deps: system-deps $(STAMP)

system-deps:
	@bash scripts/install_system_deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: deps
	@$(BIN)/promote sandbox up
	@$(BIN)/promote sandbox remember
	@$(BIN)/promote run --project proj_demo --staging env_demo_staging --prod env_demo_prod \
		--user demo_admin --stability-seconds 10
	@$(BIN)/promote sandbox status
	@$(BIN)/promote sandbox verify
	@echo "Evidence: $$(ls -dt docs/evidence/*/promote/* | head -1)"

lint: deps
	$(BIN)/ruff check .

typecheck: deps
	$(BIN)/mypy promote_pipeline resources odoo_standin bench

# The import contracts of pyproject.toml ([tool.importlinter]): the layers, one way.
layers: deps
	$(BIN)/lint-imports

test: lint typecheck layers
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25

# Only the pure-logic tests (marker `unit`: no PostgreSQL, no process; tests/conftest.py refuses both), in
# seconds. pytest exits 5 when the marker selects nothing, so a `make unit` that ran no test fails.
unit: $(STAMP)
	$(BIN)/pytest -q -m unit

sandbox-down: deps
	$(BIN)/promote sandbox down

# The Dagster UI (webserver + daemon) on the instance of dagster.yaml, at http://127.0.0.1:3000.
ui: deps
	@bash scripts/ui.sh up

ui-down:
	@bash scripts/ui.sh down

clean: sandbox-down
	rm -rf $(VENV)

# Promotion vs hand-run pg_dump/pg_restore/tar and Odoo's database manager, on the `small` dataset
# (bench/promote_vs_raw --size 1g for the figures in bench/RESULTS.md).
.PHONY: bench
bench: deps
	bench/promote_vs_raw --size small

# N = 1, 4 and 8 promotions of as many environments launched together through the Dagster instance of
# dagster.yaml (webserver + daemon, queued runs) vs the same promotions one after the other, on `small`.
.PHONY: bench-many
bench-many: deps
	$(BIN)/python bench/many_environments.py --size small
