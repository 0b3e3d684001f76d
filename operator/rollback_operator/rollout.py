"""Whether a Deployment's rollout is complete, judged as `kubectl rollout status` judges it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolloutState:
    complete: bool
    detail: str
    stuck: str | None = None  # why it will not complete by itself (ProgressDeadlineExceeded)


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    name = deployment["metadata"]["name"]
    status = deployment.get("status", {})
    wanted = deployment["spec"].get("replicas", 1)
    # A deadline exceeded by the previous (bad) rollout means nothing until the controller has
    # seen our spec: judged in this order, as `kubectl rollout status` does.
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return RolloutState(False, f"{name}: waiting for the controller to see the new spec")
    for condition in status.get("conditions", []):
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutState(
                False, f"{name}: progress deadline exceeded", condition.get("message")
            )
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return RolloutState(False, f"{name}: {updated}/{wanted} replicas updated")
    if total > updated:
        return RolloutState(False, f"{name}: {total - updated} old replica(s) terminating")
    if available < updated:
        return RolloutState(False, f"{name}: {available}/{updated} updated replicas available")
    return RolloutState(True, f"{name}: {updated}/{wanted} updated and available")


def is_available(deployment: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in deployment.get("status", {}).get("conditions", [])
    )
