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
test: deps-system deps-nats venv ## run the tests (TESTS=path..., extra pytest arguments: PYTEST_ARGS=...)
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

.PHONY: demo
demo: deps-system venv ## broker + edgemeta + simulated cloud, edged and devices, shown by `edgemeta watch` (Ctrl-C stops)
	bash scripts/demo.sh $(CONFIG)

.PHONY: dist
dist: venv ## build the wheel and the sdist into dist/
	$(VENV_PY) -m build --outdir dist .

BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(VENV_STAMP)
	$(VENV_PY) -m pip install -e '.[dev,bench]'
	touch $@

.PHONY: bench
bench: deps-system venv $(BENCH_STAMP) ## edgemeta vs a bare forwarder, store costs; bench/results/ (BENCH_ARGS=--quick|--runs N)
	$(VENV_PY) -m bench.run $(BENCH_ARGS)

CHAOS_ARGS ?=

.PHONY: chaos
chaos: deps-system venv ## kill -9 and broker restarts during 1,000 msgs/s for ~3 min; fails on lost/applied twice/stale (CHAOS_ARGS=--seconds N --rate R)
	$(VENV_PY) -m bench.chaos $(CHAOS_ARGS)

# As root, the broker's files go to the `mosquitto` user, which Mosquitto
# switches to before it reads them.
MOSQUITTO_OWNER = $(if $(filter 0,$(shell id -u)),--owner mosquitto)
CERT_ARGS ?=
SECURE_CONFIG ?= conf/edge-secure.yaml

.PHONY: secrets
secrets: deps-system ## broker users and passwords in mosquitto/secrets/ (keeps what exists)
	scripts/make-secrets.sh $(MOSQUITTO_OWNER)

.PHONY: certs
certs: deps-system ## local CA and TLS certificates in mosquitto/certs/ (CERT_ARGS=--san DNS:name ...)
	scripts/make-certs.sh $(MOSQUITTO_OWNER) $(CERT_ARGS)

.PHONY: run-secure
run-secure: deps-system venv ## secure broker (production.conf) + edgemeta over TLS with SECURE_CONFIG (Ctrl-C stops)
	bash scripts/run-secure.sh $(SECURE_CONFIG)

.PHONY: deps-nats
deps-nats: ## check for nats-server; install it as root on Debian
	bash scripts/ensure-nats.sh

.PHONY: cluster
cluster: deps-system deps-nats venv ## 3 NATS servers + 2 bridged edge nodes with edgemeta + cloud simulators, on loopback (Ctrl-C stops)
	bash scripts/cluster.sh
