"""What every stand-in needs of this machine and of the local cluster: a free loopback port,
a child process stopped in order, a condition waited on with a deadline, a claim bound to a
host directory, and an error for a tool that is not installed."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[1]
# The storage class of the local cluster's hostPath volumes (cluster/README.md).
STORAGE_CLASS = "local-hostpath"

T = TypeVar("T")


class UnavailableError(RuntimeError):
    """A program a stand-in runs (PostgreSQL, Prometheus, setpriv) is not installed here."""


def wait_until(
    probe: Callable[[], T | bool | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Polls `probe` until it returns something truthy; AssertionError at the deadline (a
    test fails with it)."""
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


def free_port() -> int:
    """A loopback port nothing listens on at the moment: for a server to bind, or for a
    connection that must be refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`: a test's child process
    (the operator, Prometheus) gets the chance to shut down cleanly, but never hangs the run."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bound_claim_objects(
    namespace: str, name: str, volume: str, host_path: Path, access_mode: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hostPath PersistentVolume `volume` and the PersistentVolumeClaim `name` bound to it.

    The local cluster runs no volume binder, so the claim is created bound: spec.volumeName,
    the bind-completed annotation the scheduler looks for, and a PV whose claimRef names it.
    """
    persistent_volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": [access_mode],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": str(host_path), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": name},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
        },
        "spec": {
            "accessModes": [access_mode],
            "storageClassName": STORAGE_CLASS,
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    return persistent_volume, claim
