"""`kubectl rollback` as a user runs it: through kubectl's plugin lookup, against the cluster."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubectl_rollback import STEPS
from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    backends,
    events_for,
    get_request,
    on_maintenance,
    request_body,
    snapshot,
    wait_outcome,
    wait_phase,
)
from tests.e2e.people import QA, install_approval_policy, waiting_for

pytestmark = pytest.mark.e2e

VENV_BIN = str(Path(sys.executable).parent)


PATH = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def kubectl_rollback(
    kubeconfig: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`kubectl rollback ARGS`, with the venv's bin (where `kubectl-rollback` is) on PATH."""
    kubectl = shutil.which("kubectl", path=PATH)
    assert kubectl, "kubectl is not on PATH"
    return subprocess.run(
        [kubectl, "rollback", *args, "--kubeconfig", kubeconfig],
        env={**os.environ, "PATH": PATH, "KUBECONFIG": kubeconfig},
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


@pytest.mark.parametrize(
    "command",
    [
        "create",
        "list",
        "status",
        "approve",
        "abort",
        "restore-traffic",
        "retry",
        "resume-gitops",
        "report",
    ],
)
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

    # Nothing waits for an approval yet: the plugin says so, and sends nothing.
    install_approval_policy(api, kubeconfig, namespace)
    early = kubectl_rollback(kubeconfig, "approve", name, "Verify", "-n", namespace)
    assert early.returncode == 2
    assert "is not waiting for an approval of Verify (phase Pending, step -)" in early.stderr
    # Once Verify waits (written here as the operator would): the admin who created the request
    # is refused by the API server (four eyes), a QA member approves what it shows.
    waiting_for(api, namespace, name, "Verify", "0123456789abcdef")
    as_admin = kubectl_rollback(kubeconfig, "approve", name, "Verify", "-n", namespace)
    assert as_admin.returncode == 2
    assert "admin created this request (rollback.lawyershub.io/requested-by)" in as_admin.stderr
    approved = kubectl_rollback(
        kubeconfig, "approve", name, "Verify", "-n", namespace, "--as", QA[0], "--as-group", QA[1]
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(
        f"rollbackrequest/{name}: approving Verify@0123456789abcdef: the test's subject\n"
    )
    assert "step Verify approved by qa-quinn" in approved.stdout
    assert annotations(api, namespace, name) == {
        f"{GROUP}/requested-by": "admin",
        f"{GROUP}/approve": "Verify@0123456789abcdef",
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


def set_status(api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )


def test_list_this_namespace_or_all_with_who_approved_what(
    api, namespace, crds_installed, kubeconfig, tmp_path
):
    for name in ("first", "second"):
        path = request_file(tmp_path, namespace, name)
        assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0
    approved = {
        "name": "RestoreDatabase",
        "state": "Succeeded",
        "approvedBy": "dba-alice",
        "approvedAt": "2026-01-10T12:00:00Z",
    }
    set_status(
        api,
        namespace,
        "second",
        {"phase": "AwaitingApproval", "step": "Verify", "steps": [approved]},
    )
    wait_until(
        lambda: get_request(api, namespace, "second").get("status", {}).get("step"),
        timeout=10,
        what="the status stored",
    )

    listed = kubectl_rollback(kubeconfig, "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "PHASE", "STEP", "AGE", "APPROVED"]
    assert rows[1][:3] == ["first", "Pending", "-"]
    assert rows[2][:3] == ["second", "AwaitingApproval", "Verify"]
    assert listed.stdout.splitlines()[2].endswith("RestoreDatabase by dba-alice")

    everywhere = kubectl_rollback(kubeconfig, "list", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert [namespace, "first", "Pending"] in [
        r.split()[:3] for r in everywhere.stdout.splitlines()
    ]

    as_json = kubectl_rollback(kubeconfig, "list", "-n", namespace, "-o", "json")
    assert [i["metadata"]["name"] for i in json.loads(as_json.stdout)["items"]] == [
        "first",
        "second",
    ]
    as_yaml = kubectl_rollback(kubeconfig, "status", "second", "-n", namespace, "-o", "yaml")
    assert as_yaml.returncode == 3  # still running: the exit code does not depend on -o
    assert yaml.safe_load(as_yaml.stdout)["status"]["phase"] == "AwaitingApproval"

    empty = kubectl_rollback(kubeconfig, "list", "-n", f"{namespace}-none")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "No RollbackRequests found" in empty.stderr


def test_status_watch_times_out_with_exit_3(namespace, crds_installed, kubeconfig, tmp_path):
    path = request_file(tmp_path, namespace, "stuck")  # no operator: it stays Pending
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0
    began = time.monotonic()
    result = kubectl_rollback(
        kubeconfig, "status", "stuck", "-n", namespace, "-w", "--timeout", "2s"
    )
    took = time.monotonic() - began
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr == "timed out after 2.00s: rollbackrequest/stuck is Pending\n"
    # The wall time includes starting kubectl and the plugin, seconds each on a loaded machine
    # (a watch that ignored --timeout would run into kubectl_rollback's own 30 s instead).
    assert 2 <= took < 25


def test_colours_on_a_terminal_unless_no_color(namespace, crds_installed, kubeconfig, tmp_path):
    path = request_file(tmp_path, namespace, "painted")
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0

    def on_a_terminal(**env: str) -> str:
        main, child = pty.openpty()
        process = subprocess.Popen(
            [f"{VENV_BIN}/kubectl-rollback", "status", "painted", "-n", namespace],
            env={**os.environ, "KUBECONFIG": kubeconfig, **env},
            stdout=child,
            stderr=subprocess.DEVNULL,
        )
        os.close(child)
        output = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=30)
        os.close(main)
        return output.decode()

    coloured = on_a_terminal()
    assert "\x1b[2mPending\x1b[0m" in coloured
    assert "[.............] 0/13 steps done" in coloured
    plain = on_a_terminal(NO_COLOR="1")
    assert "\x1b[" not in plain
    assert "0/13 steps done" in plain  # still a terminal's view, without colours


def test_completion_through_kubectl_and_bash(namespace, crds_installed, kubeconfig, tmp_path):
    path = request_file(tmp_path, namespace, "to-complete")
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0
    env = {**os.environ, "PATH": PATH, "KUBECONFIG": kubeconfig}

    # kubectl completes its plugins through kubectl_complete-rollback on PATH.
    kubectl = shutil.which("kubectl", path=PATH)
    assert kubectl
    through_kubectl = subprocess.run(
        [kubectl, "__complete", "rollback", "re"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert through_kubectl.stdout.splitlines()[:4] == [
        "restore-traffic",
        "retry",
        "resume-gitops",
        "report",
    ]

    # bash, with the script the plugin prints; request names come from the API server.
    script = subprocess.run(
        [f"{VENV_BIN}/kubectl-rollback", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bash = subprocess.run(
        [
            "bash",
            "-c",
            script + "\nCOMP_WORDS=(kubectl-rollback status -n " + namespace + " to-)\n"
            "COMP_CWORD=4\n_kubectl_rollback\nprintf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bash.stdout == "to-complete\n", bash.stderr


def aborted_with_traffic_on_maintenance(
    api: client.ApiClient, namespace: str, kubeconfig: str, tmp_path: Path, name: str
) -> dict[str, Any]:
    """A run stopped where the runbook leaves the site down: the checks passed, QA's sign-off
    awaited, then aborted, with the maintenance page on and the HPAs frozen."""
    path = request_file(tmp_path, namespace, name, verification={"requireApproval": True})
    assert kubectl_rollback(kubeconfig, "create", "-f", str(path)).returncode == 0
    wait_outcome(api, namespace, name, "AwaitingApproval")
    assert kubectl_rollback(kubeconfig, "abort", name, "-n", namespace).returncode == 0
    done = wait_phase(api, namespace, name, "Aborted", "Failed", "Succeeded")
    assert done["status"]["phase"] == "Aborted", done["status"].get("message")
    assert on_maintenance(api, namespace)
    return done


def test_restore_traffic_puts_back_what_an_aborted_run_left(
    api, app, operator, kubeconfig, tmp_path
):
    namespace, name = app, "left-down"
    before = snapshot(api, namespace)
    aborted_with_traffic_on_maintenance(api, namespace, kubeconfig, tmp_path, name)
    frozen = snapshot(api, namespace)["hpas"]
    assert frozen["backend"]["spec"]["behavior"]["scaleUp"]["selectPolicy"] == "Disabled"

    planned = kubectl_rollback(kubeconfig, "restore-traffic", name, "-n", namespace, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith(
        f"rollbackrequest/{name}: would put back Ingress lawyershub (2 backend(s)), "
        "HPA backend (behavior), HPA frontend (behavior)"
    )
    assert on_maintenance(api, namespace)  # a dry run changes nothing

    restored = kubectl_rollback(kubeconfig, "restore-traffic", name, "-n", namespace)
    assert restored.returncode == 0, restored.stderr
    assert "put back Ingress lawyershub (2 backend(s))" in restored.stdout
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]
    record = annotations(api, namespace, name)[f"{GROUP}/traffic-restored"]
    assert record.endswith(
        "by admin: Ingress lawyershub (2 backend(s)), HPA backend (behavior), "
        "HPA frontend (behavior)"
    )
    assert any(e.reason == "TrafficRestored" for e in events_for(api, namespace, name))

    again = kubectl_rollback(kubeconfig, "restore-traffic", name, "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"rollbackrequest/{name}: nothing to put back")
    assert "Ingress lawyershub: already back" in again.stdout


def test_restore_traffic_leaves_what_someone_changed_since(
    api, app, operator, kubeconfig, tmp_path
):
    namespace, name = app, "hand-fixed"
    aborted_with_traffic_on_maintenance(api, namespace, kubeconfig, tmp_path, name)
    # Someone points the API path at a hotfix by hand: that is theirs now.
    net = client.NetworkingV1Api(api)
    ingress = api.sanitize_for_serialization(net.read_namespaced_ingress("lawyershub", namespace))
    hotfix = {"service": {"name": "hotfix", "port": {"number": 8080}}}
    ingress["spec"]["rules"][0]["http"]["paths"][1]["backend"] = hotfix
    net.replace_namespaced_ingress("lawyershub", namespace, ingress)

    restored = kubectl_rollback(kubeconfig, "restore-traffic", name, "-n", namespace)
    assert restored.returncode == 0, restored.stderr
    assert "now points to hotfix:8080" in restored.stdout and "left as is" in restored.stdout
    now = backends(api, namespace)
    assert now[1] == hotfix
    assert now[0]["service"]["name"] != "maintenance-page"


def test_retry_takes_over_the_failed_runs_record_and_restores_the_originals(
    api, app, operator, kubeconfig, tmp_path
):
    namespace, name = app, "to-retry"
    before = snapshot(api, namespace)
    aborted_with_traffic_on_maintenance(api, namespace, kubeconfig, tmp_path, name)

    refused = kubectl_rollback(kubeconfig, "retry", f"{name}-nope", "-n", namespace)
    assert refused.returncode == 2

    retried = kubectl_rollback(kubeconfig, "retry", name, "-n", namespace)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"rollbackrequest/{name}-retry-1 created: a retry of {name}")
    assert (
        f"takes over the record of the originals: Ingress lawyershub (from {name}), "
        f"HPA backend (from {name}), HPA frontend (from {name})"
    ) in retried.stdout
    new = get_request(api, namespace, f"{name}-retry-1")
    assert new["metadata"]["annotations"][f"{GROUP}/retry-of"] == name
    old_spec = get_request(api, namespace, name)["spec"]
    assert new["spec"] == old_spec

    # The retry still asks QA; once signed off it ends with the site as it was before.
    wait_outcome(api, namespace, f"{name}-retry-1", "AwaitingApproval")
    install_approval_policy(api, kubeconfig, namespace)  # QA's role, and the policy
    signed = kubectl_rollback(
        kubeconfig,
        "approve",
        f"{name}-retry-1",
        "Verify",
        "-n",
        namespace,
        "--as",
        QA[0],
        "--as-group",
        QA[1],
    )
    assert signed.returncode == 0, signed.stderr
    done = wait_outcome(api, namespace, f"{name}-retry-1", "Succeeded")
    preflight = done["status"]["steps"][0]
    assert (
        f"takes over the original state recorded for Ingress lawyershub (from {name})"
        in (preflight["message"])
    )
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]

    again = kubectl_rollback(kubeconfig, "retry", f"{name}-retry-1", "-n", namespace)
    assert again.returncode == 2
    assert "is Succeeded: retry is for a Failed or Aborted run" in again.stderr
