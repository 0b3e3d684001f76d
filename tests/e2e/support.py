"""Helpers for e2e tests: applying the CRDs, claims bound to a host directory, a Job's script
run as its pod would run it, and Pod Security's verdict on a pod. What the demo shares with
the tests (waiting, ports, processes, loopback servers) is in standins/."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.local import bound_claim_objects, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"

# Job pods run for real (as local processes) only on the local cluster's job runner: against
# another cluster (ROLLBACK_E2E_EXISTING_CLUSTER=1) a test that needs them is skipped.
needs_job_runner = pytest.mark.skipif(
    os.environ.get("ROLLBACK_E2E_EXISTING_CLUSTER") == "1",
    reason="Job pods run for real only on the local cluster's job runner (make cluster)",
)


def apply_crds(api: client.ApiClient) -> None:
    """Installs (or updates) every CRD in crds/ and waits until each is Established.

    Safe when several test processes do it at once (the e2e tier's parallel phase): a create
    that finds the CRD already made, or a replace that finds it changed since it was read, is
    a 409 Conflict, and is tried again from a fresh read."""
    ext = client.ApiextensionsV1Api(api)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]

        def applied(crd: dict[str, Any] = body, crd_name: str = name) -> bool:
            try:
                try:
                    current = ext.read_custom_resource_definition(crd_name)
                except ApiException as error:
                    if error.status != 404:
                        raise
                    ext.create_custom_resource_definition(crd)
                    return True
                crd["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(crd_name, crd)
                return True
            except ApiException as error:
                if error.status == 409:
                    return False  # another process got there first: read again
                raise

        wait_until(applied, timeout=30, what=f"CRD {name} created or replaced")

        def established(crd_name: str = name) -> bool:
            crd = ext.read_custom_resource_definition(crd_name)
            return any(
                c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
            )

        wait_until(established, timeout=30, what=f"CRD {name} Established")


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


@contextmanager
def healthy_endpoint() -> Iterator[str]:
    """A local HTTP endpoint that always answers 200 "ok": the application's health URL that
    Verify's http check reads, where the test is not about the check."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz"
    finally:
        server.shutdown()
        server.server_close()
