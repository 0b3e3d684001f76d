"""One writer (safety rule 11): two instances of the operator, one Lease; the standby drives
nothing until the leader dies, then takes over and finishes the run from its record."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from standins.local import wait_until
from tests.e2e.lawyershub import (
    Operator,
    create_request,
    deploy_app,
    get_request,
    snapshot,
    wait_phase,
)

pytestmark = pytest.mark.e2e

LEASE = "rollback-operator-leader"


def _holder(api: client.ApiClient, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    return str(lease.spec.holder_identity) if lease.spec.holder_identity else None


def _step(api: client.ApiClient, namespace: str, name: str, step: str) -> dict[str, Any]:
    status = get_request(api, namespace, name).get("status", {})
    return {s["name"]: s for s in status.get("steps", [])}.get(step, {})


def _lead_and_stand_by(
    api: client.ApiClient, lease_namespace: str, leader: Operator, standby: Operator
) -> None:
    """Starts `leader` and waits until it holds the Lease, then `standby` until it waits."""
    leader.start()
    wait_until(
        lambda: _try_holder(api, lease_namespace) == leader.env["POD_NAME"],
        timeout=30,
        what=f"{leader.env['POD_NAME']} leading",
    )
    standby.start()
    wait_until(
        lambda: "waiting to lead" in standby.logs(),
        timeout=30,
        what=f"{standby.env['POD_NAME']} standing by",
    )


def test_the_standby_takes_over_when_the_leader_dies(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    tmp_path: Path,
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 3, "frontend": 3})
    before = snapshot(api, namespace)
    first = Operator(namespace, kubeconfig, tmp_path, identity="operator-a")
    second = Operator(namespace, kubeconfig, tmp_path, identity="operator-b")
    try:
        _lead_and_stand_by(api, namespace, first, second)

        create_request(api, namespace, "failover")
        wait_until(
            lambda: (
                "rolling out"
                in _step(api, namespace, "failover", "RevertWorkloads").get("message", "")
            ),
            timeout=60,
            what="RevertWorkloads waiting on the rollout",
        )
        assert "started" not in second.logs()  # the standby drove nothing
        first.kill()

        wait_until(
            lambda: _try_holder(api, namespace) == "operator-b",
            timeout=60,
            what="operator-b taking the Lease over",
        )
        done = wait_phase(api, namespace, "failover", "Succeeded", "Failed", timeout=120)
    finally:
        second.stop()
        first.stop()
        print(first.logs()[-10000:], second.logs()[-10000:])
    status = done["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert "RevertWorkloads started" not in second.logs()  # resumed, not started again
    assert "leading" in second.logs()
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]
    ingress_before = before["ingresses"]["lawyershub"]["spec"]["rules"][0]["http"]["paths"]
    assert [b["backend"] for b in status["saved"]["ingresses"]["lawyershub"]["backends"]] == [
        p["backend"] for p in ingress_before
    ]


def test_a_stopped_leader_hands_the_lease_over_at_once(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    tmp_path: Path,
) -> None:
    """A clean stop (an upgrade's SIGTERM) releases the Lease: the standby need not wait for
    it to expire."""
    first = Operator(namespace, kubeconfig, tmp_path, identity="operator-a")
    second = Operator(namespace, kubeconfig, tmp_path, identity="operator-b")
    try:
        _lead_and_stand_by(api, namespace, first, second)
        first.stop()
        assert _try_holder(api, namespace) in (None, "operator-b")
        wait_until(
            lambda: _try_holder(api, namespace) == "operator-b",
            timeout=10,
            what="operator-b leading after the release",
        )
    finally:
        second.stop()
        first.stop()


def _try_holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        return _holder(api, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


@pytest.mark.long  # minutes: started first in the e2e tier's parallel phase
def test_two_instances_on_twenty_requests_with_the_leader_killed_midway(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    tmp_path: Path,
) -> None:
    """Four namespaces with the sample, five requests in each created at once (in the same
    second, all touching the same objects), two instances watching all four; the leader is
    SIGKILLed midway. Every request ends Succeeded, no two runs on the same objects overlapped,
    and every Ingress and HPA ends exactly as it began."""
    core = client.CoreV1Api(api)
    others = tuple(f"{namespace}-{i}" for i in range(1, 4))
    for other in others:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    namespaces = (namespace, *others)
    first = Operator(namespace, kubeconfig, tmp_path, identity="operator-a", also_watch=others)
    second = Operator(namespace, kubeconfig, tmp_path, identity="operator-b", also_watch=others)
    try:
        for ns in namespaces:
            deploy_app(api, ns, min_ready_seconds={"backend": 1, "frontend": 1})
        before = {ns: snapshot(api, ns) for ns in namespaces}
        _lead_and_stand_by(api, namespace, first, second)
        names = [f"r{i}" for i in range(5)]
        for ns in namespaces:
            for name in names:
                create_request(api, ns, name)

        def finished() -> int:
            return sum(
                1
                for ns in namespaces
                for name in names
                if get_request(api, ns, name).get("status", {}).get("announced") is True
            )

        wait_until(lambda: finished() >= 6, timeout=180, what="a third of the runs done")
        first.kill()
        wait_until(lambda: finished() == 20, timeout=400, what="every run done", interval=1)
    finally:
        second.stop()
        first.stop()
        print(first.logs()[-5000:], second.logs()[-5000:])
    for ns in namespaces:
        runs = sorted(
            (get_request(api, ns, name)["status"] for name in names),
            key=lambda s: (s["startedAt"], s["finishedAt"]),
        )
        assert [s["phase"] for s in runs] == ["Succeeded"] * 5, [s["message"] for s in runs]
        for earlier, later in itertools.pairwise(runs):
            assert later["startedAt"] >= earlier["finishedAt"], (ns, earlier, later)
        after = snapshot(api, ns)
        assert after["ingresses"] == before[ns]["ingresses"] or (
            after["ingresses"]["lawyershub"]["spec"]
            == before[ns]["ingresses"]["lawyershub"]["spec"]
        )
        for hpa in ("backend", "frontend"):
            assert after["hpas"][hpa]["spec"] == before[ns]["hpas"][hpa]["spec"]
    for other in others:
        core.delete_namespace(other)
