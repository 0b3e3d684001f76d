"""Helpers for e2e tests: waiting on conditions with a deadline, applying the CRDs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | bool | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Polls `probe` until it returns something truthy, or fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result  # type: ignore[return-value]
        except ApiException as error:
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def apply_crds(api: client.ApiClient) -> None:
    """Installs (or updates) every CRD in crds/ and waits until each is Established."""
    ext = client.ApiextensionsV1Api(api)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        try:
            current = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        except ApiException as error:
            if error.status != 404:
                raise
            ext.create_custom_resource_definition(body)

        def established(crd_name: str = name) -> bool:
            crd = ext.read_custom_resource_definition(crd_name)
            return any(
                c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
            )

        wait_until(established, timeout=30, what=f"CRD {name} Established")
