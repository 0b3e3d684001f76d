"""How an HPA is frozen and what is saved of it, so that ResumeAutoscaling can tell drift apart."""

from __future__ import annotations

import copy
from typing import Any

from rollback_operator.autoscaling import FREEZE_PATCH, is_frozen, saved_fields
from tests.unit.test_steps import BEHAVIOR  # the API server's defaults, as the steps see them


def hpa(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
        "maxReplicas": 12,
    }
    base.update(spec)
    return {"metadata": {"name": "backend"}, "spec": base}


def test_freeze_patch_disables_scaling_both_ways_and_touches_nothing_else() -> None:
    """Only selectPolicy changes: min/max, metrics and policies stay the team's own."""
    assert FREEZE_PATCH == {
        "spec": {
            "behavior": {
                "scaleUp": {"selectPolicy": "Disabled"},
                "scaleDown": {"selectPolicy": "Disabled"},
            }
        }
    }


def test_saved_fields_keep_min_max_and_the_whole_behavior() -> None:
    """What ResumeAutoscaling restores and compares: the exact behavior, not a summary."""
    obj = hpa(minReplicas=3, behavior=copy.deepcopy(BEHAVIOR))
    saved = saved_fields(obj)
    assert saved == {"minReplicas": 3, "maxReplicas": 12, "behavior": BEHAVIOR}
    obj["spec"]["behavior"]["scaleUp"]["selectPolicy"] = "Disabled"
    assert saved["behavior"] == BEHAVIOR, "the record must be a copy, not a view of the object"


def test_saved_fields_default_min_replicas_and_record_no_behavior_as_none() -> None:
    """minReplicas defaults to 1; no behavior is saved as None, so the resume removes the freeze."""
    assert saved_fields(hpa()) == {"minReplicas": 1, "maxReplicas": 12, "behavior": None}


def test_is_frozen_only_when_both_directions_are_disabled() -> None:
    """Half a freeze still lets the bad version scale up: it is not frozen."""
    frozen = copy.deepcopy(BEHAVIOR)
    frozen["scaleUp"]["selectPolicy"] = "Disabled"
    frozen["scaleDown"]["selectPolicy"] = "Disabled"
    assert is_frozen(hpa(behavior=frozen))
    half = copy.deepcopy(frozen)
    half["scaleDown"]["selectPolicy"] = "Min"
    assert not is_frozen(hpa(behavior=half))
    assert not is_frozen(hpa(behavior={"scaleUp": {"selectPolicy": "Disabled"}}))
    assert not is_frozen(hpa(behavior=BEHAVIOR))
    assert not is_frozen(hpa())
    assert not is_frozen(hpa(behavior=None))
