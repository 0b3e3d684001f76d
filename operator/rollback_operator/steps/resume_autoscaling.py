"""ResumeAutoscaling (runbook §2.5): give each HPA back the behavior it had before the freeze.

A field someone changed during the rollback (a new maxReplicas, a behavior that is no longer
our freeze) is theirs: it is kept, and reported as drift instead of being overwritten.

One call per HPA: a JSON patch whose `test`s check that the freeze is still there, then puts
the saved behavior back (no read first, and no resourceVersion, which the HPA controller's
status writes keep moving). When a test fails (the behavior is someone else's now) the HPA is
read, and the step decides from what it finds.
"""

from __future__ import annotations

from typing import Any

from rollback_operator.autoscaling import is_frozen, resume_operations
from rollback_operator.gitops import keda_paused
from rollback_operator.kube import JSON_PATCH, ApiError, hpa_path
from rollback_operator.model import StepName
from rollback_operator.steps.base import AutoscalingStep, Done, Fail, Outcome, StepContext


class ResumeAutoscaling(AutoscalingStep):
    name = StepName.RESUME_AUTOSCALING
    no_hpa = "no HorizontalPodAutoscaler was paused"  # PauseAutoscaling was skipped too

    def plan(self, ctx: StepContext) -> str:
        return f"would restore the behavior of HPA {', '.join(ctx.targets.hpas)}"

    def run(self, ctx: StepContext) -> Outcome:
        drift: list[str] = []
        held: list[str] = []  # deleted by KEDA while their ScaledObject is paused
        for name in ctx.targets.hpas:
            saved = ctx.ledger.original("hpas", name)
            scaled = keda_paused(ctx.ledger.originals("gitops"), name)
            if saved is not None and not scaled:
                resumed = _resume_frozen(ctx, name, saved)
                if resumed is not None:
                    drift += _bounds_drift(name, resumed, saved)
                    continue
            hpa = ctx.kube.hpa(ctx.namespace, name) if saved or scaled else None
            if hpa is None and scaled:
                held.append(f"HPA {name} (ScaledObject {scaled})")
                continue
            if saved is None:
                continue  # never frozen
            if hpa is None:
                return Fail(
                    f"HorizontalPodAutoscaler {name!r} disappeared; recreate it from "
                    f"status.saved.hpas.{name}"
                )
            spec = hpa["spec"]
            drift += _bounds_drift(name, hpa, saved)
            if is_frozen(hpa):  # frozen again since the patch's tests ran: once more
                if _resume_frozen(ctx, name, saved) is None:
                    drift.append(f"HPA {name} behavior was changed during the rollback, left as is")
            elif spec.get("behavior") != saved.get("behavior"):
                drift.append(f"HPA {name} behavior was changed during the rollback, left as is")
        message = f"resumed HPA {', '.join(ctx.targets.hpas)}"
        if held:
            message += (
                f"; held by KEDA, paused: {', '.join(held)}; KEDA recreates them once "
                "`kubectl rollback resume-gitops` unpauses their ScaledObject"
            )
        if drift:
            message += "; drift: " + "; ".join(drift)
        return Done(message, warnings=tuple(drift))


def _resume_frozen(ctx: StepContext, name: str, saved: dict[str, Any]) -> dict[str, Any] | None:
    """The saved behavior put back in one call if the HPA is still frozen: the HPA as patched,
    or None when it is not frozen any more or is gone (the caller reads it and decides)."""
    try:
        return ctx.kube.patch(hpa_path(ctx.namespace, name), resume_operations(saved), JSON_PATCH)
    except ApiError as error:
        if error.status in (404, 422):  # gone, or a test failed: not our freeze any more
            return None
        raise


def _bounds_drift(name: str, hpa: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    spec = hpa["spec"]
    return [
        f"HPA {name} {field} is now {spec.get(field, 1)} (was {saved[field]}), left as is"
        for field in ("minReplicas", "maxReplicas")
        if spec.get(field, 1) != saved[field]
    ]
