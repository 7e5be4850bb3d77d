# The platform's commands. `make demo` and `make test` work on a fresh clone with only
# Python 3.11+ and make: both create the virtualenv and install on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Dagster builds the dbt assets from the parsed project; a fresh clone has no manifest yet.
MANIFEST := dbt_project/target/manifest.json
DBT_FILES := $(shell find dbt_project/dbt_project.yml dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null)
# `make docs` serves on loopback only; ATLASMESH_DOCS_PORT moves it.
DOCS_PORT ?= $(or $(ATLASMESH_DOCS_PORT),8580)
export ATLASMESH_HOME ?= $(CURDIR)/.atlasmesh
export DAGSTER_HOME ?= $(ATLASMESH_HOME)/dagster
# Offline by design: no tool may phone home.
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_ENABLE_TELEMETRY := false
export FEAST_USAGE := False
export GX_ANALYTICS_ENABLED := false
PYTEST_ARGS ?=

.PHONY: setup demo test bench lint format ui docs stop clean

setup: $(STAMP) $(MANIFEST)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

$(MANIFEST): $(STAMP) $(DBT_FILES)
	$(BIN)/atlasmesh dbt -- parse --quiet
	@touch $(MANIFEST)

demo: setup
	$(BIN)/python -m orchestration.demo

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: setup
	$(BIN)/atlasmesh warehouse serve
	$(BIN)/python -m orchestration.instance $(DAGSTER_HOME)
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

docs: setup
	$(BIN)/atlasmesh docs --port $(DOCS_PORT)

stop: setup
	-$(BIN)/atlasmesh warehouse stop

clean: stop
	rm -rf $(ATLASMESH_HOME)
