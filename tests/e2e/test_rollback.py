"""The rollback engine end to end: the operator process against the real control plane."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from rollback_operator import clock
from rollback_operator.announce import FOLD_SEPARATOR
from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    MAINTENANCE,
    PLURAL,
    REGISTRY,
    VERSION,
    Operator,
    create_request,
    deploy_app,
    events_for,
    get_request,
    ledger,
    on_maintenance,
    snapshot,
    wait_phase,
)

pytestmark = pytest.mark.e2e

STEPS = [
    "Preflight", "SuspendGitOps", "EnableMaintenance", "PauseAutoscaling", "RevertWorkloads",
    "PurgeCDN", "MigrateDatabaseDown", "RestoreDatabase", "Verify", "ResumeAutoscaling",
    "DisableMaintenance", "Monitor", "Report",
]  # fmt: skip
# The steps that run only when the request has their spec section (the one here has none).
SKIP_REASONS = {
    "PurgeCDN": "no spec.cdn",
    "MigrateDatabaseDown": "no spec.database.migrateDown",
    "RestoreDatabase": "no spec.database.restore",
    "Monitor": "no spec.monitoring",
}
NOT_CONFIGURED = set(SKIP_REASONS)


class Recorder:
    """Watches Ingresses and Deployments of a namespace and keeps every change, in etcd order."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.changes: list[tuple[int, str, dict[str, Any]]] = []
        self._watches: list[watch.Watch] = []
        net, apps = client.NetworkingV1Api(api), client.AppsV1Api(api)
        for kind, lister in (
            ("Ingress", net.list_namespaced_ingress),
            ("Deployment", apps.list_namespaced_deployment),
        ):
            since = lister(namespace).metadata.resource_version
            w = watch.Watch()
            self._watches.append(w)
            threading.Thread(
                target=self._follow, args=(w, lister, since, kind), daemon=True
            ).start()

    def _follow(self, w: watch.Watch, lister: Any, since: str, kind: str) -> None:
        try:
            for event in w.stream(
                lister, self.namespace, resource_version=since, timeout_seconds=120
            ):
                raw = self.api.sanitize_for_serialization(event["object"])
                self.changes.append((int(raw["metadata"]["resourceVersion"]), kind, raw))
        except ProtocolError:
            pass  # the stream is closed under it by stop()

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def _assert_one_event_per_outcome(
    api: client.ApiClient, namespace: str, done: dict[str, Any]
) -> None:
    """Each step's outcome told once (steps done within a second of each other share an
    Event: StepsSucceeded), a step's start in status.steps, not an Event, and the run's
    outcome."""
    reasons = [(e.reason, e.message) for e in events_for(api, namespace, "golive")]
    told = [
        part
        for r, m in reasons
        if r in ("StepSucceeded", "StepsSucceeded")
        for part in m.split(FOLD_SEPARATOR)
    ]
    for step in set(STEPS) - NOT_CONFIGURED:
        succeeded = [m for m in told if m.startswith(f"{step}:")]
        assert len(succeeded) == 1, (step, reasons)
        assert ledger(done)[step].get("startedAt"), step
    assert not [r for r, _ in reasons if r == "StepStarted"], reasons
    assert any(r == "Succeeded" for r, _ in reasons)


def test_full_run_reverts_images_and_restores_traffic_exactly(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    namespace = app
    before = snapshot(api, namespace)
    recorder = Recorder(api, namespace)
    create_request(api, namespace, "golive")
    done = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    recorder.stop()
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]

    # Images: selected containers at stable-last-known, registry and port kept; others untouched.
    # The migrate init container shares the api's repository: reverted with it, or every pod
    # started afterwards would re-apply the bad release's migrations.
    apps = client.AppsV1Api(api)
    pod = apps.read_namespaced_deployment("backend", namespace).spec.template.spec
    assert {c.name: c.image for c in pod.containers + pod.init_containers} == {
        "api": f"{REGISTRY}/backend:stable-last-known",
        "ai-gateway-sidecar": f"{REGISTRY}/ai-gateway-proxy:1.4.2",
        "migrate": f"{REGISTRY}/backend:stable-last-known",
    }
    frontend = apps.read_namespaced_deployment("frontend", namespace).spec.template.spec.containers
    assert [c.image for c in frontend] == [f"{REGISTRY}/frontend:stable-last-known"]

    # Traffic and autoscaling end exactly as they started.
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]

    # The ledger: every step, in order, finished.
    status = done["status"]
    assert [s["name"] for s in status["steps"]] == STEPS
    for step in status["steps"]:
        expected = "Skipped" if step["name"] in NOT_CONFIGURED else "Succeeded"
        assert step["state"] == expected, step
        assert step.get("finishedAt")
    for name, reason in SKIP_REASONS.items():  # skipped, each saying why
        assert ledger(done)[name]["message"] == reason, name
    assert status["finishedAt"] and status["startedAt"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Progressing": "False",
        "Reconciling": "False",
        "Stalled": "False",
        "Complete": "True",
        "Failed": "False",
        "MaintenanceActive": "False",
        "AutoscalingPaused": "False",
    }
    saved = status["saved"]
    assert saved["deployments"]["backend"] | {"restartedAt": None} == {
        "images": {"api": f"{REGISTRY}/backend:2026.01.10-golive"},
        "initImages": {"migrate": f"{REGISTRY}/backend:2026.01.10-golive"},
        "restartedAt": None,
    }
    assert saved["ingresses"]["lawyershub"]["backends"][0]["backend"] == {
        "service": {"name": "backend", "port": {"number": 8080}}
    }
    assert saved["ingresses"]["lawyershub"]["backends"][1]["backend"] == {
        "service": {"name": "frontend", "port": {"name": "http"}}
    }

    _assert_one_event_per_outcome(api, namespace, done)

    # The post-mortem: every step with its timing, what was changed and restored.
    assert status["report"] == {"configMap": "golive-postmortem", "key": "postmortem.md"}
    report = client.CoreV1Api(api).read_namespaced_config_map("golive-postmortem", namespace)
    document = report.data["postmortem.md"]
    for step in STEPS:
        assert f"| [{step}](#{step.lower()}) |" in document
    before_after = (
        f"`{REGISTRY}/backend:2026.01.10-golive` | `{REGISTRY}/backend:stable-last-known`"
    )
    assert f"| backend/api | {before_after} |" in document
    assert f"| backend/migrate (init) | {before_after} |" in document
    assert "| lawyershub | lawyershub.example/api | backend:8080 |" in document
    assert "| backend | 3 | 12 | custom |" in document
    for section in ("## Root cause", "## Findings", "## Follow-ups"):
        assert section in document

    # A finished request holds no finalizer: it can be deleted even with the operator down.
    wait_until(
        lambda: not get_request(api, namespace, "golive")["metadata"].get("finalizers"),
        timeout=30,
        what="the finalizer released",
    )

    # Order, from the watch: the Ingress was on the maintenance page before any image changed.
    def on_maintenance(obj: dict[str, Any]) -> bool:
        paths = obj["spec"]["rules"][0]["http"]["paths"]
        return all(p["backend"] == MAINTENANCE for p in paths)

    def reverted(obj: dict[str, Any]) -> bool:
        return any(
            c["image"].endswith(":stable-last-known")
            for c in obj["spec"]["template"]["spec"]["containers"]
        )

    changes = sorted(recorder.changes, key=lambda c: c[0])
    first_maintenance = next(
        rv for rv, kind, obj in changes if kind == "Ingress" and on_maintenance(obj)
    )
    first_revert = next(rv for rv, kind, obj in changes if kind == "Deployment" and reverted(obj))
    assert first_maintenance < first_revert


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"workloads": [{"deployment": "backend"}, {"deployment": "payments"}]},
            "Deployment 'payments' not found",
        ),
        (
            {"workloads": [{"deployment": "backend", "containers": ["api", "worker"]}]},
            "Deployment 'backend' has no container 'worker'",
        ),
        (
            {
                "traffic": {
                    "ingresses": ["lawyershub"],
                    "maintenanceBackend": {"service": "maintenance-page", "port": 8081},
                }
            },
            "maintenance Service 'maintenance-page' has no port 8081",
        ),
        (
            {
                "traffic": {
                    "ingresses": ["lawyershub"],
                    "maintenanceBackend": {"service": "maintenance-page", "port": "https"},
                }
            },
            "maintenance Service 'maintenance-page' has no port 'https'",
        ),
        (
            {"autoscaling": {"hpas": ["backend", "search"]}},
            "HorizontalPodAutoscaler 'search' not found",
        ),
    ],
    ids=[
        "missing-deployment",
        "missing-container",
        "missing-port-number",
        "missing-port-name",
        "missing-hpa",
    ],
)
def test_preflight_failure_changes_nothing(
    api: client.ApiClient, app: str, operator: Operator, patch: dict[str, Any], expected: str
) -> None:
    namespace = app
    before = snapshot(api, namespace)
    create_request(api, namespace, "bad", **patch)
    done = wait_phase(api, namespace, "bad", "Failed", "Succeeded")
    status = done["status"]
    assert status["phase"] == "Failed"
    assert expected in status["message"]
    assert "Nothing was changed" in status["message"]
    assert ledger(done)["Preflight"]["state"] == "Failed"
    assert all(s["state"] == "Pending" for s in status["steps"][1:])
    assert not status.get("saved")
    assert snapshot(api, namespace) == before
    assert any(
        e.type == "Warning" and e.reason == "StepFailed" for e in events_for(api, namespace, "bad")
    )


def test_preflight_names_every_problem_at_once(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    traffic = {
        "ingresses": ["lawyershub", "admin"],
        "maintenanceBackend": {"service": "sorry", "port": 80},
    }
    workloads = [{"deployment": "backend", "containers": ["worker"]}, {"deployment": "payments"}]
    create_request(api, app, "bad", traffic=traffic, workloads=workloads)
    message = wait_phase(api, app, "bad", "Failed")["status"]["message"]
    for problem in (
        "Ingress 'admin' not found",
        "maintenance Service 'sorry' not found",
        "Deployment 'backend' has no container 'worker'",
        "Deployment 'payments' not found",
    ):
        assert problem in message


def _hpa_frozen(api: client.ApiClient, namespace: str, name: str) -> bool:
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    return (
        hpa.spec.behavior.scale_up.select_policy == "Disabled"
        and hpa.spec.behavior.scale_down.select_policy == "Disabled"
    )


def test_rollout_timeout_fails_with_maintenance_on(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 600})
    create_request(api, namespace, "slow", rolloutTimeout="3s")
    done = wait_phase(api, namespace, "slow", "Failed", "Succeeded")
    status = done["status"]
    assert status["phase"] == "Failed"
    assert ledger(done)["RevertWorkloads"]["state"] == "Failed"
    assert "did not complete within 3s" in status["message"]
    assert "maintenance page is still on" in status["message"]
    assert on_maintenance(api, namespace)
    assert _hpa_frozen(api, namespace, "backend") and _hpa_frozen(api, namespace, "frontend")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["MaintenanceActive"] == "True" and conditions["Ready"] == "False"
    # A failed run still leaves its post-mortem, with the ledger as it stopped.
    assert status["report"] == {"configMap": "slow-postmortem", "key": "postmortem.md"}
    report = client.CoreV1Api(api).read_namespaced_config_map("slow-postmortem", namespace)
    assert "| [RevertWorkloads](#revertworkloads) | Failed |" in report.data["postmortem.md"]


def test_dry_run_changes_nothing(api: client.ApiClient, app: str, operator: Operator) -> None:
    before = snapshot(api, app)
    create_request(api, app, "plan", dryRun=True)
    done = wait_phase(api, app, "plan", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    assert snapshot(api, app) == before
    steps = ledger(done)
    assert steps["EnableMaintenance"]["message"].startswith(
        "dry run: would point Ingress lawyershub: 2 backend(s)"
    )
    assert (
        f"backend/api: {REGISTRY}/backend:2026.01.10-golive -> {REGISTRY}/backend:stable-last-known"
        in steps["RevertWorkloads"]["message"]
    )
    assert (
        f"backend/migrate (init): {REGISTRY}/backend:2026.01.10-golive -> "
        f"{REGISTRY}/backend:stable-last-known" in steps["RevertWorkloads"]["message"]
    )
    assert "ai-gateway" not in steps["RevertWorkloads"]["message"]
    assert {c["type"]: c["status"] for c in done["status"]["conditions"]}["DryRun"] == "True"
    assert not done["status"].get("saved")


def test_overlapping_requests_run_one_after_the_other(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"frontend": 4})
    create_request(api, namespace, "first")
    wait_until(
        lambda: get_request(api, namespace, "first").get("status", {}).get("phase") == "Running",
        timeout=30,
        what="first Running",
    )
    create_request(
        api,
        namespace,
        "second",
        workloads=[{"deployment": "frontend"}],
        autoscaling={"hpas": ["frontend"]},
    )
    queued = wait_phase(api, namespace, "second", "Queued", "Running", "Succeeded")
    assert queued["status"]["phase"] == "Queued"
    assert queued["status"]["queuedBehind"] == "first"
    assert "waiting for RollbackRequest first" in queued["status"]["message"]
    first = wait_phase(api, namespace, "first", "Succeeded", "Failed")
    second = wait_phase(api, namespace, "second", "Succeeded", "Failed")
    assert first["status"]["phase"] == "Succeeded" and second["status"]["phase"] == "Succeeded"
    assert second["status"]["startedAt"] >= first["status"]["finishedAt"]
    assert "queuedBehind" not in second["status"]


def test_abort_stops_at_the_next_step_boundary(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 600})
    create_request(api, namespace, "stop-me")
    wait_until(
        lambda: (
            get_request(api, namespace, "stop-me").get("status", {}).get("step")
            == "RevertWorkloads"
        ),
        timeout=30,
        what="RevertWorkloads",
    )
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "stop-me",
        {"metadata": {"annotations": {f"{GROUP}/abort": "true"}}},
    )
    done = wait_phase(api, namespace, "stop-me", "Aborted", "Failed", "Succeeded")
    status = done["status"]
    assert status["phase"] == "Aborted"
    assert ledger(done)["RevertWorkloads"]["state"] == "Aborted"
    assert all(
        ledger(done)[s]["state"] == "Pending"
        for s in ("Verify", "ResumeAutoscaling", "DisableMaintenance")
    )
    assert (
        "maintenance page is still on" in status["message"]
        and "To finish by hand" in status["message"]
    )
    assert on_maintenance(api, namespace)
    assert any(
        e.reason == "Aborted" and e.type == "Warning" for e in events_for(api, namespace, "stop-me")
    )


def test_drift_in_an_hpa_is_kept_and_reported(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 3})
    before = snapshot(api, namespace)
    create_request(api, namespace, "drift")
    wait_until(
        lambda: _hpa_frozen(api, namespace, "backend"), timeout=30, what="backend HPA frozen"
    )
    client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
        "backend", namespace, {"spec": {"maxReplicas": 20}}
    )
    done = wait_phase(api, namespace, "drift", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    hpa = snapshot(api, namespace)["hpas"]["backend"]["spec"]
    assert hpa["maxReplicas"] == 20
    assert hpa["behavior"] == before["hpas"]["backend"]["spec"]["behavior"]
    message = ledger(done)["ResumeAutoscaling"]["message"]
    assert "HPA backend maxReplicas is now 20 (was 12), left as is" in message
    assert any(
        e.type == "Warning" and e.reason == "Drift" and "maxReplicas" in e.message
        for e in events_for(api, namespace, "drift")
    )


def test_a_new_request_takes_over_what_a_failed_one_left(
    api: client.ApiClient, namespace: str, crds_installed: None, operator: Operator
) -> None:
    """After a failed run the site stays on maintenance with the HPAs frozen; the next request
    must restore the true originals, not the maintenance state it finds."""
    deploy_app(api, namespace, min_ready_seconds={"backend": 600})
    before = snapshot(api, namespace)
    create_request(api, namespace, "first", rolloutTimeout="3s")
    assert wait_phase(api, namespace, "first", "Failed", "Succeeded")["status"]["phase"] == "Failed"
    assert on_maintenance(api, namespace) and _hpa_frozen(api, namespace, "backend")

    # The SRE fixes the cause (here: pods that take ten minutes to count as available).
    client.AppsV1Api(api).patch_namespaced_deployment(
        "backend",
        namespace,
        {"spec": {"minReadySeconds": 0}},
        _content_type="application/merge-patch+json",
    )
    create_request(api, namespace, "second")
    done = wait_phase(api, namespace, "second", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    assert (
        "takes over the original state recorded for Ingress lawyershub (from first)"
        in ledger(done)["Preflight"]["message"]
    )
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]


def test_a_site_already_on_maintenance_without_a_record_is_refused(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    before_patch = snapshot(api, app)
    rules = before_patch["ingresses"]["lawyershub"]["spec"]["rules"]
    rules[0]["http"]["paths"][1]["backend"] = MAINTENANCE
    client.NetworkingV1Api(api).patch_namespaced_ingress(
        "lawyershub", app, {"spec": {"rules": rules}}
    )
    before = snapshot(api, app)
    create_request(api, app, "unknown-originals")
    done = wait_phase(api, app, "unknown-originals", "Failed", "Succeeded")
    assert done["status"]["phase"] == "Failed"
    assert (
        "Ingress 'lawyershub' already sends traffic to the maintenance page"
        in done["status"]["message"]
    )
    assert snapshot(api, app) == before


def _deployment_gets(api: client.ApiClient) -> tuple[int, int]:
    """GETs of Deployment objects and watches opened on Deployments, from the API server's
    own counters (every client: the controllers watch through informers and read only the
    scale subresource, so a GET of a Deployment here is the operator's or this test's)."""
    params = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*params)
    response.read()
    gets = watches = 0
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{") or 'resource="deployments"' not in line:
            continue
        if 'subresource=""' not in line and "subresource=" in line:
            continue
        count = int(float(line.rsplit(" ", 1)[1]))
        if 'verb="GET"' in line:
            gets += count
        elif 'verb="WATCH"' in line:
            watches += count
    return gets, watches


@pytest.mark.serial  # counts every client's Deployment reads: other tests' would be in them
def test_a_rollout_is_watched_not_polled(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    """A rollout that takes seconds (minReadySeconds) is awaited on watches: the Deployments
    are read by Preflight and followed from there; polling would read each every quarter
    second to a few seconds meanwhile."""
    namespace = app
    apps = client.AppsV1Api(api)
    for name in ("backend", "frontend"):
        apps.patch_namespaced_deployment(name, namespace, {"spec": {"minReadySeconds": 4}})
    gets_before, _ = _deployment_gets(api)
    create_request(api, namespace, "golive")
    done = wait_phase(api, namespace, "golive", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    steps = ledger(done)
    took = _seconds_between(steps["RevertWorkloads"]["startedAt"], steps["Verify"]["finishedAt"])
    assert took >= 3, took  # the rollouts did take seconds
    gets, _ = _deployment_gets(api)
    # Preflight's two reads (kept for RevertWorkloads); a conflict's re-read at most on top.
    assert gets - gets_before <= 4, gets - gets_before


def _seconds_between(start: str, end: str) -> float:
    return (clock.parse(end) - clock.parse(start)).total_seconds()
