# The product's entry points. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KUBECONFIG_LOCAL := $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv cluster cluster-down lint test test-unit test-lowest test-packaging test-e2e image image-test demo demo-down bench clean

help:
	@echo "make demo          run the product on a local cluster, end to end"
	@echo "make test          lint, unit, packaging, the image and e2e tests (brings the local cluster up and down)"
	@echo "make test-lowest   the unit tests against the lowest dependency versions allowed"
	@echo "make test-packaging  the plugin installed alone from the wheel, in a fresh venv"
	@echo "make image         build the operator's image, rollback-operator:<version> (buildah)"
	@echo "make image-test    build it and run a rollback with it on the local cluster (podman)"
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
	$(BIN)/ruff check operator tests bench scripts cluster standins
	$(BIN)/ruff format --check operator tests bench scripts cluster standins
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	promtool check rules manifests/monitoring/alerts.yaml
	promtool test rules manifests/monitoring/alerts_test.yaml

# No `venv` prerequisite: scripts/test.sh makes it once the Go builds are under way.
test:
	scripts/test.sh

test-unit: venv
	$(BIN)/pytest -q tests/unit

test-lowest:
	scripts/test-lowest.sh

test-packaging: venv
	$(BIN)/pytest -q tests/packaging

image:
	scripts/image.sh

image-test: venv
	scripts/test.sh --e2e tests/e2e/test_image.py

demo: venv
	scripts/demo.sh

bench: venv
	scripts/bench.sh

clean: cluster-down
	rm -rf $(VENV) .venv-lowest .pytest_cache .mypy_cache .ruff_cache
