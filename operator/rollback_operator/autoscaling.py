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


def resume_operations(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that gives a frozen HPA its saved behavior back: its `test`s check that
    the freeze is still there when the API server applies it (a 422 when it is not: the
    behavior is someone else's change then, and is left alone). No resourceVersion: the HPA
    controller's status writes keep moving it, and would make a guarded write conflict."""
    behavior = saved.get("behavior")
    restore = (
        {"op": "remove", "path": "/spec/behavior"}
        if behavior is None  # none saved (status drops nulls): the freeze is all there is
        else {"op": "replace", "path": "/spec/behavior", "value": behavior}
    )
    return [
        *(
            {"op": "test", "path": f"/spec/behavior/{direction}/selectPolicy", "value": "Disabled"}
            for direction in ("scaleUp", "scaleDown")
        ),
        restore,
    ]


def resume_patch(hpa: dict[str, Any], saved: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`resume_operations` for an HPA read frozen; None when it is no longer frozen."""
    return resume_operations(saved) if is_frozen(hpa) else None
