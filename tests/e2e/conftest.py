"""Fixtures for the e2e tier: a real API server, an API client and a fresh namespace per test.

By default the tests run against the local control plane that `make cluster` starts
(`.cluster/kubeconfig`). Setting ROLLBACK_E2E_EXISTING_CLUSTER=1 targets the cluster of the
current KUBECONFIG instead (kind, k3d, ...). There is no silent skip: without a reachable
cluster the tier fails.

scripts/test.sh runs the tier in two phases: every test not marked `serial` on several workers
at once (pytest-xdist; each test has its own namespace and its own operator process), then the
`serial` ones alone. A test is `serial` when it changes what every other test shares: the API
server itself, cluster-scoped objects by fixed name (the shipped admission policies and roles,
the cluster-wide RollbackPolicy, a Helm release), fixed local ports, the image; or when it
counts what every test does (the API server's own request counters). The phase is
chosen by ROLLBACK_E2E_PHASE (`parallel` or `serial`; unset: every test); whatever the phase,
a `serial` test never runs on a worker beside others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e.lawyershub import Operator, deploy_app, fresh_namespace, running_operator
from tests.e2e.support import REPO_ROOT, apply_crds

E2E_DIR = Path(__file__).resolve().parent


PHASES = ("parallel", "serial")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keeps the tests of the phase ROLLBACK_E2E_PHASE names; on xdist's workers, never a
    `serial` one."""
    phase = os.environ.get("ROLLBACK_E2E_PHASE", "")
    if phase and phase not in PHASES:
        raise pytest.UsageError(f"ROLLBACK_E2E_PHASE={phase!r}: expected one of {PHASES}")
    on_workers = bool(getattr(config.option, "numprocesses", None)) or bool(
        os.environ.get("PYTEST_XDIST_WORKER")
    )
    keep_serial = phase != "parallel" and not on_workers
    keep_others = phase != "serial"
    kept, dropped = [], []
    for item in items:
        if item.path.parent != E2E_DIR:
            kept.append(item)  # another tier's test in the same run: not this conftest's call
            continue
        serial = item.get_closest_marker("serial") is not None
        (kept if (keep_serial if serial else keep_others) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = _long_ones_first(kept, int(getattr(config, "workerinput", {}).get("workercount", 1)))


def _long_ones_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The `long` tests started at once, each on a worker of its own: xdist's worksteal hands
    each worker an equal run of the collection in order (and steals from their ends), so the
    k-th long test goes to the head of the k-th run. Otherwise the order is kept."""
    long = [item for item in items if item.get_closest_marker("long") is not None]
    order = [item for item in items if item.get_closest_marker("long") is None]
    share = -(-len(items) // workers)  # the size of one worker's run, rounded up
    for k, item in enumerate(long):
        order.insert(min((k % workers) * share + k // workers, len(order)), item)
    return order


def _kubeconfig_path() -> str:
    if os.environ.get("ROLLBACK_E2E_EXISTING_CLUSTER") == "1":
        return os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    return os.environ.get("KUBECONFIG", str(REPO_ROOT / ".cluster" / "kubeconfig"))


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = _kubeconfig_path()
    if not Path(path).exists():
        pytest.fail(f"no kubeconfig at {path}: run `make cluster` (or `make test`) first")
    return path


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> client.ApiClient:
    """An admin API client for the whole session."""
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def crds_installed(api: client.ApiClient) -> None:
    apply_crds(api)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its default ServiceAccount awaited)."""
    with fresh_namespace(api) as name:
        yield name


@pytest.fixture
def app(api: client.ApiClient, namespace: str, crds_installed: None) -> str:
    """The sample application, rolled out, in the test's namespace."""
    deploy_app(api, namespace)
    return namespace


@pytest.fixture
def operator(namespace: str, kubeconfig: str, tmp_path: Path) -> Iterator[Operator]:
    """The operator process, watching the test's namespace; its log is printed on failure."""
    with running_operator(namespace, kubeconfig, tmp_path) as running:
        yield running
        print(running.logs()[-20000:])
