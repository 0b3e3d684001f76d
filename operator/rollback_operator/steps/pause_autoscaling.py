"""PauseAutoscaling (runbook §2.1): stop the HPAs from starting instances of the bad version.

See `rollback_operator.autoscaling` for how and why an HPA is frozen this way.
"""

from __future__ import annotations

from rollback_operator.autoscaling import FREEZE_PATCH, is_frozen, saved_fields
from rollback_operator.gitops import keda_paused
from rollback_operator.kube import ApiError, hpa_path
from rollback_operator.model import StepName
from rollback_operator.steps.base import AutoscalingStep, Done, Fail, Outcome, StepContext


class PauseAutoscaling(AutoscalingStep):
    """Freezes each HPA where it stands, its fields saved first for ResumeAutoscaling."""

    name = StepName.PAUSE_AUTOSCALING
    no_hpa = "no HorizontalPodAutoscaler scales the listed Deployments"

    def plan(self, ctx: StepContext) -> str:
        return f"would freeze HPA {', '.join(ctx.targets.hpas)} (selectPolicy: Disabled both ways)"

    def run(self, ctx: StepContext) -> Outcome:
        held: list[str] = []  # deleted by KEDA: their ScaledObject is paused (SuspendGitOps)
        for name in ctx.targets.hpas:
            scaled = keda_paused(ctx.ledger.originals("gitops"), name)
            hpa = ctx.kube.hpa(ctx.namespace, name)
            if hpa is None:
                if scaled:
                    held.append(f"{name} (ScaledObject {scaled} is paused: KEDA holds it)")
                    continue
                return Fail(f"HorizontalPodAutoscaler {name!r} disappeared during the rollback")
            ctx.ledger.save("hpas", name, saved_fields(hpa))
            if not is_frozen(hpa):
                try:
                    ctx.kube.patch(hpa_path(ctx.namespace, name), FREEZE_PATCH)
                except ApiError as error:
                    if not (error.status == 404 and scaled):
                        raise
                    held.append(f"{name} (ScaledObject {scaled} is paused: KEDA holds it)")
        message = f"froze HPA {', '.join(ctx.targets.hpas)}"
        if held:
            message += "; deleted by KEDA meanwhile: " + ", ".join(held)
        return Done(message)
