# edgemeta development commands; CI runs `make test` (see .ci/run).

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
CONFIG ?= conf/edge.yaml
PYTEST_ARGS ?=
TESTS ?= tests/

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes.
$(VENV_STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## create .venv with edgemeta (editable) and the dev tools

.PHONY: deps-system
deps-system: ## check for mosquitto and its clients; install them as root on Debian
	bash scripts/ensure-mosquitto.sh

.PHONY: install
install: deps-system venv ## everything needed to run and test edgemeta

.PHONY: run
run: deps-system venv ## run edgemeta with CONFIG, starting the dev broker if none is up
	bash scripts/run-dev.sh $(CONFIG)

.PHONY: test
test: deps-system venv ## run the tests (TESTS=path..., extra pytest arguments: PYTEST_ARGS=...)
	$(VENV_PY) -m pytest -W error -p no:cacheprovider $(PYTEST_ARGS) $(TESTS)

.PHONY: lint
lint: venv ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: venv ## format and fix what ruff can
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: clean
clean: ## remove the venv, caches, build output and data/
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info data
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------
# Further targets (bench, secrets, certs, run-secure, demo) go below this line.
# Give each a `## description` so `make help` lists it, and declare it .PHONY.
# ---------------------------------------------------------------------------
