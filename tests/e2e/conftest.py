"""Fixtures for the e2e tier: a real API server, an API client and a fresh namespace per test.

By default the tests run against the local control plane that `make cluster` starts
(`.cluster/kubeconfig`). Setting ROLLBACK_E2E_EXISTING_CLUSTER=1 targets the cluster of the
current KUBECONFIG instead (kind, k3d, ...). There is no silent skip: without a reachable
cluster the tier fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e.lawyershub import Operator, deploy_app, fresh_namespace, running_operator
from tests.e2e.support import REPO_ROOT, apply_crds


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
