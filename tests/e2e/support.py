"""Helpers for e2e tests: waiting on conditions with a deadline, applying the CRDs, and the
local processes and loopback servers that tests start and stop."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
# The storage class of the local cluster's hostPath volumes (cluster/README.md).
STORAGE_CLASS = "local-hostpath"

T = TypeVar("T")

# Job pods run for real (as local processes) only on the local cluster's job runner: against
# another cluster (ROLLBACK_E2E_EXISTING_CLUSTER=1) a test that needs them is skipped.
needs_job_runner = pytest.mark.skipif(
    os.environ.get("ROLLBACK_E2E_EXISTING_CLUSTER") == "1",
    reason="Job pods run for real only on the local cluster's job runner (make cluster)",
)


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


@contextmanager
def bound_claim(
    api: client.ApiClient, namespace: str, name: str, host_path: Path, access_mode: str
) -> Iterator[str]:
    """A PersistentVolumeClaim `name` backed by the host directory `host_path` (see
    `bound_claim_objects`), its PersistentVolume deleted on exit (the claim goes with the
    namespace)."""
    core = client.CoreV1Api(api)
    volume = f"{namespace}-{name}"
    persistent_volume, claim = bound_claim_objects(namespace, name, volume, host_path, access_mode)
    core.create_persistent_volume(persistent_volume)
    try:
        core.create_namespaced_persistent_volume_claim(namespace, claim)
        yield name
    finally:
        core.delete_persistent_volume(volume)


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


TcpHandler = Callable[[socket.socket], None]


@contextmanager
def tcp_listeners() -> Iterator[Callable[[TcpHandler], int]]:
    """Yields a function that starts a TCP server on loopback, each connection served by the
    given handler in a thread, and returns its port; every server is shut down on exit."""
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(handle: TcpHandler) -> int:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                handle(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def redis_like(reply: bytes) -> TcpHandler:
    """A handler that reads one line and answers PING with `reply`, as a Redis does with +PONG
    (or with -NOAUTH when it wants a password), and anything else with an error."""

    def handle(conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = conn.recv(64)
            if not chunk:
                return
            data += chunk
        conn.sendall(reply if data == b"PING\r\n" else b"-ERR unknown command\r\n")

    return handle


@dataclass(frozen=True)
class ScriptRun:
    returncode: int
    message: str  # what the script wrote to its termination-message file, stripped
    stdout: str
    stderr: str


def run_job_script(
    script: str, directory: Path, tmpdir: Path, env: Mapping[str, str], *, timeout: float
) -> ScriptRun:
    """Runs a Job's script as its pod would: `sh -c`, with PATH, `env` and nothing else of
    this process's environment, TMPDIR at `tmpdir`, and TERMINATION_LOG naming a file in
    `directory` whose text is read back as the termination message."""
    result_file = directory / "termination-log"
    result_file.unlink(missing_ok=True)
    process = subprocess.run(
        ["/bin/sh", "-c", script],
        env={
            "PATH": os.environ["PATH"],
            "TERMINATION_LOG": str(result_file),
            "TMPDIR": str(tmpdir),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    message = result_file.read_text() if result_file.exists() else ""
    return ScriptRun(process.returncode, message.strip(), process.stdout, process.stderr)


def assert_admitted_as_restricted(api: client.ApiClient, pod_template: dict[str, Any]) -> None:
    """Asks the API server whether a pod made from `pod_template` may run where Pod Security
    "restricted" is enforced: a server-side dry-run create in a namespace labelled so (a
    violation is refused with 403 and the rules it breaks)."""
    core = client.CoreV1Api(api)
    namespace = f"psa-{uuid.uuid4().hex[:10]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    try:
        pod = {"metadata": {"name": "probe", "labels": pod_template["metadata"].get("labels")}}
        # Pod Security judges the pod's own settings; its ServiceAccount does not exist here.
        pod["spec"] = {**pod_template["spec"], "serviceAccountName": "default"}
        wait_until(
            lambda: any(
                a.metadata.name == "default"
                for a in core.list_namespaced_service_account(namespace).items
            ),
            timeout=30,
            what=f"default ServiceAccount in {namespace}",
        )
        try:
            core.create_namespaced_pod(namespace, pod, dry_run="All")
        except ApiException as error:
            raise AssertionError(f"Pod Security restricted refuses the pod: {error.body}") from None
    finally:
        core.delete_namespace(namespace)
