"""Safety rule 6: SIGKILL the operator anywhere, start it again, and the run ends the same,
with the true originals saved and no side effect done twice."""

from __future__ import annotations

import pytest
from kubernetes import client, watch

from rollback_operator import GROUP, PLURAL, VERSION
from tests.e2e.lawyershub import (
    Operator,
    create_request,
    deploy_app,
    ledger,
    snapshot,
    wait_phase,
)

pytestmark = pytest.mark.e2e


def _kill_when(
    api: client.ApiClient, namespace: str, operator: Operator, step: str, waiting: bool, since: str
) -> None:
    """SIGKILLs the operator as soon as the ledger shows `step` running (and, with `waiting`,
    once it reports it is waiting on the rollout).

    Every version of the request from `since` (before its creation) is looked at, from a watch:
    a step whose work is done in a few milliseconds (Verify, when its checks pass at once) is
    shown running for one write only, which polling can miss on a busy machine.

    Preflight's start is written with EnableMaintenance's first record (docs/architecture.md,
    the write budget), so no status shows it running: it is killed once the operator has taken
    the request (Kopf's finalizer is on) and before anything is recorded, which is Preflight
    (or the checks just before it)."""
    requests = client.CustomObjectsApi(api).list_namespaced_custom_object
    stream = watch.Watch()
    try:
        for event in stream.stream(
            requests,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector="metadata.name=crash",
            resource_version=since,
            timeout_seconds=60,
        ):
            request = event["object"]
            status = request.get("status", {})
            if step == "Preflight" and request["metadata"].get("finalizers"):
                if status.get("saved"):
                    break  # too late: EnableMaintenance has recorded
                operator.kill()
                return
            record = {s["name"]: s for s in status.get("steps", [])}.get(step, {})
            if record.get("state") == "Running" and (
                not waiting or "rolling out" in record.get("message", "")
            ):
                operator.kill()
                return
            if record.get("state") in ("Succeeded", "Failed"):
                break
    finally:
        stream.stop()
    raise AssertionError(f"never saw {step} running{' and waiting' if waiting else ''}")


@pytest.mark.parametrize(
    ("step", "waiting"),
    [
        ("Preflight", False),
        ("EnableMaintenance", False),
        ("PauseAutoscaling", False),
        ("RevertWorkloads", False),
        ("RevertWorkloads", True),
        ("Verify", False),
        ("ResumeAutoscaling", False),
        ("DisableMaintenance", False),
    ],
    ids=str,
)
def test_sigkill_and_restart_ends_the_same(
    api: client.ApiClient,
    namespace: str,
    crds_installed: None,
    operator: Operator,
    step: str,
    waiting: bool,
) -> None:
    # Slow rollouts stretch every step after RevertWorkloads' patch, so the kill lands in time.
    deploy_app(api, namespace, min_ready_seconds={"backend": 2, "frontend": 2})
    before = snapshot(api, namespace)
    apps = client.AppsV1Api(api)
    replica_sets_before = len(apps.list_namespaced_replica_set(namespace).items)

    since = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["metadata"]["resourceVersion"]
    create_request(api, namespace, "crash")
    _kill_when(api, namespace, operator, step, waiting, since)
    operator.start()
    done = wait_phase(api, namespace, "crash", "Succeeded", "Failed", timeout=120)
    status = done["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert operator.starts == 2

    # The saved originals are the true originals, not a read of an object already changed.
    ingress_before = before["ingresses"]["lawyershub"]["spec"]["rules"][0]["http"]["paths"]
    assert [b["backend"] for b in status["saved"]["ingresses"]["lawyershub"]["backends"]] == [
        p["backend"] for p in ingress_before
    ]
    for hpa in ("backend", "frontend"):
        saved = status["saved"]["hpas"][hpa]
        assert saved["maxReplicas"] == before["hpas"][hpa]["spec"]["maxReplicas"]
        assert saved.get("behavior") == before["hpas"][hpa]["spec"].get("behavior")
    assert status["saved"]["deployments"]["backend"]["images"] == {
        "api": "registry.lawyershub.example:5000/lawyershub/backend:2026.01.10-golive"
    }

    # Every side effect happened exactly once: each write bumps `generation` by one.
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    assert (
        after["ingresses"]["lawyershub"]["generation"]
        == before["ingresses"]["lawyershub"]["generation"] + 2
    )
    for hpa in ("backend", "frontend"):  # HPAs keep no generation: their spec must match
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]
    for deployment in ("backend", "frontend"):
        assert (
            after["deployments"][deployment]["generation"]
            == before["deployments"][deployment]["generation"] + 1
        )
    assert len(apps.list_namespaced_replica_set(namespace).items) == replica_sets_before + 2

    # The resumed step says so in the ledger.
    assert ledger(done)[step]["attempts"] >= 1
    assert any(s["attempts"] >= 2 for s in status["steps"]) or step == "Preflight"
