# The product's entry points. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KUBECONFIG_LOCAL := $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv cluster cluster-down lint test test-unit test-e2e demo demo-down bench clean

help:
	@echo "make demo          run the product on a local cluster, end to end"
	@echo "make test          lint, unit and e2e tests (brings the local cluster up and back down)"
	@echo "make cluster       start the local control plane (.cluster/kubeconfig)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make bench         run the benchmarks, results in BENCHMARKS.md"

$(BIN)/.installed: requirements.lock requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed

cluster: venv
	cluster/up.sh

cluster-down:
	cluster/down.sh

lint: venv
	$(BIN)/ruff check operator tests bench scripts cluster
	$(BIN)/ruff format --check operator tests bench scripts cluster
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	promtool check rules manifests/monitoring/alerts.yaml
	promtool test rules manifests/monitoring/alerts_test.yaml

test: venv
	scripts/test.sh

test-unit: venv
	$(BIN)/pytest -q tests/unit

demo: venv
	scripts/demo.sh

bench: venv
	scripts/bench.sh

clean: cluster-down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
