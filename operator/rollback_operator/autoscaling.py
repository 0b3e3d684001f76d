"""How an HPA is frozen, and how to tell a frozen HPA from one someone has changed since.

Freezing sets `behavior.scaleUp.selectPolicy` and `behavior.scaleDown.selectPolicy` to
`Disabled`: the HPA controller then keeps the current replica count in both directions, while
the HPA object, its metrics and its status stay intact (unlike deleting it or pinning min=max,
which would lose or fake the team's configuration). The fields saved are those an SRE would
look at to judge drift: minReplicas, maxReplicas and the whole behavior.
"""

from __future__ import annotations

import copy
from typing import Any

FREEZE_PATCH = {
    "spec": {
        "behavior": {
            "scaleUp": {"selectPolicy": "Disabled"},
            "scaleDown": {"selectPolicy": "Disabled"},
        }
    }
}


def saved_fields(hpa: dict[str, Any]) -> dict[str, Any]:
    spec = hpa["spec"]
    return {
        "minReplicas": spec.get("minReplicas", 1),
        "maxReplicas": spec["maxReplicas"],
        "behavior": copy.deepcopy(spec.get("behavior")),
    }


def is_frozen(hpa: dict[str, Any]) -> bool:
    behavior = hpa["spec"].get("behavior") or {}
    return all(
        (behavior.get(direction) or {}).get("selectPolicy") == "Disabled"
        for direction in ("scaleUp", "scaleDown")
    )


def resume_patch(hpa: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that gives a frozen HPA its saved behavior back, guarded by the
    resourceVersion read; None when the HPA is no longer frozen: then its behavior is someone
    else's change, not the freeze, and is left alone."""
    if not is_frozen(hpa):
        return None
    return {
        "metadata": {"resourceVersion": hpa["metadata"]["resourceVersion"]},
        # No saved behavior (status drops nulls): None removes the freeze.
        "spec": {"behavior": saved.get("behavior")},
    }
