"""Rollout completeness: RevertWorkloads waits on it and Verify checks it before traffic returns."""

from __future__ import annotations

from typing import Any

import pytest

from rollback_operator.rollout import is_available, rollout_state


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 2,
    observed: int = 2,
    updated: int = 3,
    total: int = 3,
    available: int = 3,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return {
        "metadata": {"name": "backend", "generation": generation},
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "replicas": total,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def test_a_finished_rollout_is_complete() -> None:
    """Every replica updated and available, no old one left: the new image serves."""
    state = rollout_state(deployment())
    assert state.complete
    assert state.stuck is None
    assert state.detail == "backend: 3/3 updated and available"


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        (
            {"generation": 3, "observed": 2},
            "backend: waiting for the controller to see the new spec",
        ),
        ({"updated": 1}, "backend: 1/3 replicas updated"),
        ({"total": 5}, "backend: 2 old replica(s) terminating"),
        ({"available": 2}, "backend: 2/3 updated replicas available"),
    ],
)
def test_an_unfinished_rollout_says_what_it_waits_for(fields: dict[str, Any], detail: str) -> None:
    """Each unfinished case is named, in the order `kubectl rollout status` checks them, so the
    Wait message tells the SRE what the rollout is waiting for."""
    state = rollout_state(deployment(**fields))
    assert not state.complete
    assert state.stuck is None
    assert state.detail == detail


def test_a_progress_deadline_exceeded_is_stuck() -> None:
    """A rollout past its progress deadline will not finish by itself: fail now, not later."""
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "backend-7d" has timed out progressing.',
    }
    state = rollout_state(deployment(updated=1, conditions=[condition]))
    assert not state.complete
    assert state.stuck == 'ReplicaSet "backend-7d" has timed out progressing.'
    assert state.detail == "backend: progress deadline exceeded"


def test_replicas_default_to_one_and_a_missing_status_is_not_complete() -> None:
    """The API server defaults replicas to 1; a Deployment never observed has no status yet."""
    assert rollout_state(deployment(replicas=None, updated=1, total=1, available=1)).complete
    fresh = {"metadata": {"name": "backend", "generation": 1}, "spec": {"replicas": 1}}
    assert not rollout_state(fresh).complete


def test_a_deployment_scaled_to_zero_is_complete() -> None:
    """Zero wanted replicas: nothing to wait for, so the step must not wait forever."""
    assert rollout_state(deployment(replicas=0, updated=0, total=0, available=0)).complete


def test_is_available_reads_the_available_condition() -> None:
    """Verify requires Available=True: an updated Deployment with no serving pods is not ready."""
    available = {"type": "Available", "status": "True"}
    assert is_available(deployment(conditions=[available]))
    assert not is_available(deployment(conditions=[{**available, "status": "False"}]))
    assert not is_available(deployment())
    assert not is_available({"metadata": {"name": "backend"}, "spec": {}})
