"""What GitOps tools and `kubectl wait` read of a RollbackRequest, from real status objects.

The verdicts are computed by the real libraries (cluster/health-check, built by
cluster/build.sh): kstatus from sigs.k8s.io/cli-utils, as Flux and kubectl-adjacent tools do;
the shipped Argo CD health check (manifests/gitops/argocd-health.lua) run by gopher-lua, the
interpreter Argo CD embeds; the shipped Flux healthCheckExprs evaluated with cel-go as Flux
does. `kubectl wait` is the real kubectl of the local control plane. And a request re-created
with the same name and spec (as a GitOps sync does) does not run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from rollback_operator import engine
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.status import Status
from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    REGISTRY,
    VERSION,
    Operator,
    create_request,
    deploy_app,
    dry_run,
    events_for,
    get_request,
    ledger,
    request_body,
    snapshot,
    wait_phase,
)
from tests.e2e.people import QA, approve, as_person, install_approval_policy
from tests.e2e.support import REPO_ROOT, healthy_endpoint

pytestmark = pytest.mark.e2e

GITOPS = REPO_ROOT / "manifests" / "gitops"
SOURCE = REPO_ROOT / "cluster" / "health-check"
KUBECTL_DIR = "kubernetes-{KUBERNETES_VERSION}"
NEXT = f"{REGISTRY}/backend:2026.02.01-next"  # a release made after the rollback

# What each tool must say of each phase (docs/gitops.md).
EXPECTED = {
    "Queued": ("InProgress", "Progressing", "InProgress"),
    "Running": ("InProgress", "Progressing", "InProgress"),
    "AwaitingApproval": ("InProgress", "Progressing", "InProgress"),
    "Monitoring": ("InProgress", "Progressing", "InProgress"),
    "Succeeded": ("Current", "Healthy", "Current"),
    "Failed": ("Failed", "Degraded", "Failed"),
    "Aborted": ("Failed", "Degraded", "Failed"),
}


def _versions() -> dict[str, str]:
    lines = (REPO_ROOT / "cluster" / "versions.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def _cache() -> Path:
    if "ROLLBACK_OPERATOR_CACHE" in os.environ:
        return Path(os.environ["ROLLBACK_OPERATOR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rollback-operator"


def health_check_binary() -> Path:
    """Where cluster/build.sh puts the program, as it names it (versions and sources' hash)."""
    v = _versions()
    digest = hashlib.sha256(
        b"".join((SOURCE / f).read_bytes() for f in ("go.mod", "go.sum", "main.go"))
    ).hexdigest()[:12]
    name = f"health-check-{v['CLI_UTILS_VERSION']}-{v['GOPHER_LUA_VERSION']}-{v['CEL_GO_VERSION']}"
    return _cache() / "bin" / f"{name}-{digest}" / "health-check"


def verdicts(objects: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kstatus, Argo CD, Flux) for each object, with the messages checked to be there."""
    binary = health_check_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no {binary}: run `cluster/build.sh health_check` (cluster/up.sh builds it)")
    flux = yaml.safe_load((GITOPS / "flux-health-check.yaml").read_text())
    exprs = flux["spec"]["healthCheckExprs"][0]
    given = {
        "lua": (GITOPS / "argocd-health.lua").read_text(),
        "flux": {k: exprs[k] for k in ("current", "inProgress", "failed")},
        "objects": objects,
    }
    done = subprocess.run(
        [str(binary)],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = []
    for obj, result in zip(objects, json.loads(done.stdout), strict=True):
        assert not result["kstatus"].get("error"), result
        assert not result["argocd"].get("error"), result
        message = (obj.get("status") or {}).get("message")
        if message:  # the Argo CD health shows the request's own message
            assert message in result["argocd"]["message"]
        flux_verdict = result["flux"].get("status") or "error: " + result["flux"]["error"]
        out.append((result["kstatus"]["status"], result["argocd"]["status"], flux_verdict))
    return out


def kubectl(kubeconfig: str, *args: str) -> subprocess.Popen[str]:
    binary = _cache() / "bin" / KUBECTL_DIR.format(**_versions()) / "kubectl"
    return subprocess.Popen(
        [str(binary), f"--kubeconfig={kubeconfig}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def waits_for(kubeconfig: str, namespace: str, name: str, condition: str) -> subprocess.Popen[str]:
    """`kubectl wait` started now, as a pipeline would, before the run ends."""
    return kubectl(
        kubeconfig, "-n", namespace, "wait", f"rbr/{name}", f"--for={condition}", "--timeout=90s"
    )


def returned(wait: subprocess.Popen[str]) -> str:
    out, _ = wait.communicate(timeout=100)
    assert wait.returncode == 0, out
    return out


def annotate(api: client.ApiClient, namespace: str, name: str, annotations: dict[str, str]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
    )


def seen(api: client.ApiClient, namespace: str, name: str, **fields: str) -> dict[str, Any]:
    """The request once its status has `fields` (phase, step...)."""

    def reached() -> dict[str, Any] | None:
        obj = get_request(api, namespace, name)
        status = obj.get("status") or {}
        return obj if all(status.get(k) == v for k, v in fields.items()) else None

    return wait_until(reached, timeout=60, what=f"{name} with {fields}")


@pytest.fixture
def smoke() -> Iterator[str]:
    """A local smoke endpoint for Verify's check, always healthy."""
    with healthy_endpoint() as url:
        yield url


def test_a_request_without_status_is_current_for_kstatus_and_in_progress_for_the_checks(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    """Before the operator writes (or while it is down), the request has no status: kstatus
    alone says Current, which no controller can change; the shipped checks do not."""
    stored = dry_run(api, namespace, "golive")
    assert "status" not in stored
    kstatus, argocd, flux = verdicts([stored])[0]
    assert kstatus == "Current"
    assert argocd == "Progressing"
    # Flux cannot evaluate an expression on a missing `status`; it keeps waiting (the error is
    # its message) until the operator has written, which is in progress, not Current.
    assert flux.startswith("error: ") and "status" in flux


def test_success_reads_complete_healthy_and_current_and_kubectl_wait_returns(
    api: client.ApiClient, app: str, operator: Operator, kubeconfig: str, smoke: str
) -> None:
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)  # QA signs off, as in production
    verification = {
        "timeout": "60s",
        "requireApproval": True,
        "checks": [{"name": "api", "http": {"url": smoke, "timeout": "2s"}}],
    }
    complete = waits_for(kubeconfig, namespace, "golive", "condition=Complete")
    ended = waits_for(kubeconfig, namespace, "golive", "jsonpath={.status.announced}=true")
    create_request(api, namespace, "golive", verification=verification)
    running = seen(api, namespace, "golive", phase="Running")
    waiting = seen(api, namespace, "golive", phase="AwaitingApproval")
    assert "waiting for a member of group qa" in waiting["status"]["message"]
    # The first write already said InProgress, with the generation it acted on.
    assert running["status"]["observedGeneration"] == running["metadata"]["generation"]
    reconciling = {c["type"]: c for c in running["status"]["conditions"]}["Reconciling"]
    assert reconciling["status"] == "True"
    assert reconciling["observedGeneration"] == running["metadata"]["generation"]
    approve(as_person(kubeconfig, QA), namespace, "golive", "Verify", QA[0])
    done = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    assert "condition met" in returned(complete)
    assert "condition met" in returned(ended)

    # The Monitoring phase is the same run with the watch's step: the operator's own transition
    # applied to the real Running status.
    spec = RollbackSpec.parse(running["spec"])
    monitoring = engine.started(
        Status.from_dict(running["status"]), StepName.MONITOR, spec, datetime.now(UTC)
    )
    monitoring_obj = {**running, "status": monitoring.to_dict()}
    objects = {"Running": running, "AwaitingApproval": waiting, "Monitoring": monitoring_obj}
    objects["Succeeded"] = done
    found = dict(zip(objects, verdicts(list(objects.values())), strict=True))
    assert found == {phase: EXPECTED[phase] for phase in objects}

    # Waiting for the other ending does not return on this one.
    failed = kubectl(
        kubeconfig, "-n", namespace, "wait", "rbr/golive", "--for=condition=Failed", "--timeout=2s"
    )
    out, _ = failed.communicate(timeout=30)
    assert failed.returncode != 0 and "timed out" in out


def test_failure_and_abort_read_failed_degraded_and_kubectl_wait_returns(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator, kubeconfig: str
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 600})  # never rolls out in time
    stop = waits_for(kubeconfig, namespace, "stuck", "condition=Failed")
    create_request(api, namespace, "stuck")
    running = seen(api, namespace, "stuck", phase="Running", step="RevertWorkloads")
    create_request(api, namespace, "next", rolloutTimeout="3s")  # the same objects: it queues
    queued = seen(api, namespace, "next", phase="Queued")
    annotate(api, namespace, "stuck", {f"{GROUP}/abort": "true"})
    aborted = wait_phase(api, namespace, "stuck", "Aborted", "Failed", "Succeeded")
    assert aborted["status"]["phase"] == "Aborted"
    assert "condition met" in returned(stop)
    fail = waits_for(kubeconfig, namespace, "next", "condition=Failed")
    failed = wait_phase(api, namespace, "next", "Failed", "Succeeded", timeout=60)
    assert failed["status"]["phase"] == "Failed", failed["status"]["message"]
    assert "condition met" in returned(fail)
    failed_conditions = {c["type"]: c for c in failed["status"]["conditions"]}
    assert failed_conditions["Failed"]["reason"] == "Failed"
    assert failed_conditions["Stalled"]["status"] == "True"
    assert failed_conditions["Complete"]["status"] == "False"

    objects = {"Running": running, "Queued": queued, "Aborted": aborted, "Failed": failed}
    found = dict(zip(objects, verdicts(list(objects.values())), strict=True))
    assert found == {phase: EXPECTED[phase] for phase in objects}


def _recreate(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    """As a GitOps sync that replaces the object: deleted, then created anew (a new uid)."""
    objects = client.CustomObjectsApi(api)
    name = body["metadata"]["name"]
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def gone() -> bool:
        try:
            get_request(api, namespace, name)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, timeout=30, what=f"{name} deleted")
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def test_a_re_applied_finished_request_does_not_run_again_unless_asked(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    namespace = app
    body = request_body("golive")
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    first = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    assert first["status"]["phase"] == "Succeeded", first["status"]["message"]
    report = client.CoreV1Api(api).read_namespaced_config_map("golive-postmortem", namespace)
    post_mortem = report.data["postmortem.md"]
    # Someone moves on after the rollback: a new release; a rerun would revert it again.
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment(
        "backend",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": NEXT}]}}}},
    )

    def settled() -> bool:  # the Deployment controller has recorded its new revision
        deployment = apps.read_namespaced_deployment("backend", namespace)
        return (deployment.status.observed_generation or 0) >= deployment.metadata.generation

    wait_until(settled, timeout=60, what="the new release's Deployment observed")
    before = snapshot(api, namespace)

    _recreate(api, namespace, body)
    again = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    status = again["status"]
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert status["phase"] == "Succeeded"
    assert status["message"].startswith("Not run again: ")
    assert first["metadata"]["uid"] in status["message"]
    assert "ConfigMap golive-postmortem" in status["message"]
    assert f"{GROUP}/rerun" in status["message"]
    assert status["earlierRun"]["uid"] == first["metadata"]["uid"]
    assert status["report"] == {"configMap": "golive-postmortem", "key": "postmortem.md"}
    assert all(s["state"] == "Skipped" for s in ledger(again).values())
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Complete"] == "RanBefore"
    assert snapshot(api, namespace) == before, "nothing may change on the workloads or ingress"
    report = client.CoreV1Api(api).read_namespaced_config_map("golive-postmortem", namespace)
    assert report.data["postmortem.md"] == post_mortem, "the earlier run's post-mortem stays"
    assert any(e.reason == "NotRunAgain" for e in events_for(api, namespace, "golive"))
    assert verdicts([again])[0] == EXPECTED["Succeeded"]

    # Asked explicitly, with a reason: it runs again, once.
    rerun = {**body, "metadata": {"name": "golive", "annotations": {f"{GROUP}/rerun": "v2 broke"}}}
    _recreate(api, namespace, rerun)
    third = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    assert third["status"]["phase"] == "Succeeded", third["status"]["message"]
    assert "earlierRun" not in third["status"]
    assert ledger(third)["RevertWorkloads"]["state"] == "Succeeded"
    image = apps.read_namespaced_deployment("backend", namespace).spec.template.spec.containers
    assert {c.name: c.image for c in image}["api"] == f"{REGISTRY}/backend:stable-last-known"
    # The same manifest, rerun reason included, re-applied once more: it ran, it does not again.
    _recreate(api, namespace, rerun)
    fourth = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    assert fourth["status"]["earlierRun"]["uid"] == third["metadata"]["uid"]
