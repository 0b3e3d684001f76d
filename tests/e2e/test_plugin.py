"""`kubectl rollback` as a user runs it: through kubectl's plugin lookup, against the cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from rollback_operator.plugin import STEPS
from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    get_request,
    request_body,
    wait_phase,
)
from tests.e2e.people import QA, install_approval_policy

pytestmark = pytest.mark.e2e

VENV_BIN = str(Path(sys.executable).parent)


def kubectl_rollback(
    kubeconfig: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`kubectl rollback ARGS`, with the venv's bin (where `kubectl-rollback` is) on PATH."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    kubectl = shutil.which("kubectl", path=path)
    assert kubectl, "kubectl is not on PATH"
    return subprocess.run(
        [kubectl, "rollback", *args, "--kubeconfig", kubeconfig],
        env={**os.environ, "PATH": path, "KUBECONFIG": kubeconfig},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def request_file(tmp_path: Path, namespace: str, name: str, **spec: Any) -> Path:
    body = request_body(name, **spec)
    body["metadata"]["namespace"] = namespace
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def exists(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        get_request(api, namespace, name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def annotations(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return dict(get_request(api, namespace, name)["metadata"].get("annotations") or {})


@pytest.mark.parametrize("command", ["create", "status", "approve", "abort", "report"])
def test_help_for_each_subcommand(kubeconfig, command):
    result = kubectl_rollback(kubeconfig, command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: kubectl rollback {command}" in result.stdout
    assert f"example:\n  kubectl rollback {command}" in result.stdout
    assert "--namespace" in result.stdout


def test_dry_run_plans_then_create_and_follow_to_success(api, app, operator, kubeconfig, tmp_path):
    namespace, name = app, "golive-plugin"
    path = request_file(tmp_path, namespace, name)

    planned = kubectl_rollback(kubeconfig, "create", "-f", str(path), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    plan = planned.stdout
    assert "Ingresses switch to maintenance-page:80\n  Ingress lawyershub" in plan
    assert "  HPA backend\n  HPA frontend" in plan
    # The default targetTag comes from the API server, the images from the Deployments.
    assert "containers revert to tag stable-last-known (rollouts within 2m)" in plan
    assert (
        "Deployment backend, container api: "
        "registry.lawyershub.example:5000/lawyershub/backend:2026.01.10-golive -> "
        "registry.lawyershub.example:5000/lawyershub/backend:stable-last-known"
    ) in plan
    assert "ai-gateway-proxy" not in plan  # backend lists only `api`
    assert "Deployment frontend, container web: " in plan  # no list: every container
    assert "nothing was created" in plan
    assert not exists(api, namespace, name)

    created = kubectl_rollback(kubeconfig, "create", "-f", str(path))
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"rollbackrequest/{name} created\n")
    assert f"kubectl rollback status {name} -n {namespace} -w" in created.stdout

    followed = kubectl_rollback(kubeconfig, "status", name, "-n", namespace, "-w", timeout=120)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "\x1b" not in followed.stdout  # not a terminal: plain text
    for step in STEPS:
        assert step in followed.stdout
    last = followed.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"{name}: Succeeded")

    again = kubectl_rollback(kubeconfig, "status", name, "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"rollbackrequest/{name}  phase Succeeded  trigger ErrorRate")


def test_a_failed_request_exits_1(api, app, operator, kubeconfig, tmp_path):
    namespace, name = app, "names-a-missing-deployment"
    path = request_file(tmp_path, namespace, name, workloads=[{"deployment": "missing"}])
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0
    wait_phase(api, namespace, name, "Failed")

    shown = kubectl_rollback(kubeconfig, "status", name, "-n", namespace)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "phase Failed" in shown.stdout
    assert "Preflight" in shown.stdout and "missing" in shown.stdout

    followed = kubectl_rollback(kubeconfig, "status", name, "-n", namespace, "-w")
    assert followed.returncode == 1
    assert followed.stdout.rstrip().splitlines()[-1].startswith(f"{name}: Failed")


def test_abort_approve_report_and_status_of_a_request_no_operator_runs(
    api, namespace, crds_installed, kubeconfig, tmp_path
):
    name = "waiting"
    path = request_file(tmp_path, namespace, name)
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0

    pending = kubectl_rollback(kubeconfig, "status", name, "-n", namespace)
    assert pending.returncode == 3  # not over yet
    assert "phase Pending" in pending.stdout

    no_report = kubectl_rollback(kubeconfig, "report", name, "-n", namespace)
    assert no_report.returncode == 1
    assert "no report yet" in no_report.stderr

    # The shipped admission policy holds approvals to the step's group: the admin is refused,
    # with the API server's reason, and a QA member approves in their own name.
    install_approval_policy(api, kubeconfig, namespace)
    as_admin = kubectl_rollback(kubeconfig, "approve", name, "Verify", "-n", namespace)
    assert as_admin.returncode == 2
    assert "only members of group qa may approve Verify, and admin is not one" in as_admin.stderr
    approved = kubectl_rollback(
        kubeconfig, "approve", name, "Verify", "-n", namespace, "--as", QA[0], "--as-group", QA[1]
    )
    assert approved.returncode == 0, approved.stderr
    assert "step Verify approved by qa-quinn" in approved.stdout
    assert annotations(api, namespace, name) == {
        f"{GROUP}/approve": "Verify",
        f"{GROUP}/approved-by": "qa-quinn",
    }

    refused = kubectl_rollback(kubeconfig, "approve", name, "Verfy", "-n", namespace)
    assert refused.returncode == 2
    assert 'unknown step "Verfy"' in refused.stderr

    aborted = kubectl_rollback(kubeconfig, "abort", name, "-n", namespace)
    assert aborted.returncode == 0, aborted.stderr
    assert "undoes nothing" in aborted.stdout and "maintenance page stays on" in aborted.stdout
    assert annotations(api, namespace, name)[f"{GROUP}/abort"] == "true"


def test_report_prints_the_post_mortem_from_its_configmap(
    api, namespace, crds_installed, kubeconfig, tmp_path
):
    name = "reported"
    assert (
        kubectl_rollback(
            kubeconfig, "create", "-f", str(request_file(tmp_path, namespace, name))
        ).returncode
        == 0
    )
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": f"{name}-report"},
            "data": {"postmortem.md": "# Post-mortem: reported\n\nAll good.\n"},
        },
    )
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": {"report": {"configMap": f"{name}-report", "key": "postmortem.md"}}},
    )
    wait_until(
        lambda: get_request(api, namespace, name).get("status", {}).get("report"),
        timeout=10,
        what="status.report stored",
    )
    shown = kubectl_rollback(kubeconfig, "report", name, "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "# Post-mortem: reported\n\nAll good.\n"


def test_an_unknown_request_exits_2_with_the_servers_message(namespace, crds_installed, kubeconfig):
    for command in (["status", "nope"], ["abort", "nope"], ["report", "nope"]):
        result = kubectl_rollback(kubeconfig, *command, "-n", namespace)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert 'rollbackrequests.rollback.lawyershub.io "nope" not found' in result.stderr
        assert "Traceback" not in result.stderr


def test_the_api_servers_refusal_is_printed(namespace, crds_installed, kubeconfig, tmp_path):
    path = request_file(tmp_path, namespace, "bad", trigger="Panic")
    result = kubectl_rollback(kubeconfig, "create", "-f", str(path), "--dry-run")
    assert result.returncode == 2
    assert 'Unsupported value: "Panic"' in result.stderr
    assert "Traceback" not in result.stderr
