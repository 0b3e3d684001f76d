"""PauseAutoscaling (runbook §2.1): stop the HPAs from starting instances of the bad version.

See `rollback_operator.autoscaling` for how and why an HPA is frozen this way.
"""

from __future__ import annotations

from rollback_operator.autoscaling import FREEZE_PATCH, is_frozen, saved_fields
from rollback_operator.kube import hpa_path
from rollback_operator.model import StepName
from rollback_operator.steps.base import AutoscalingStep, Done, Fail, Outcome, StepContext


class PauseAutoscaling(AutoscalingStep):
    """Freezes each HPA where it stands, its fields saved first for ResumeAutoscaling."""

    name = StepName.PAUSE_AUTOSCALING
    no_hpa = "no HorizontalPodAutoscaler scales the listed Deployments"

    def plan(self, ctx: StepContext) -> str:
        return f"would freeze HPA {', '.join(ctx.targets.hpas)} (selectPolicy: Disabled both ways)"

    def run(self, ctx: StepContext) -> Outcome:
        for name in ctx.targets.hpas:
            hpa = ctx.kube.hpa(ctx.namespace, name)
            if hpa is None:
                return Fail(f"HorizontalPodAutoscaler {name!r} disappeared during the rollback")
            ctx.ledger.save("hpas", name, saved_fields(hpa))
            if not is_frozen(hpa):
                ctx.kube.patch(hpa_path(ctx.namespace, name), FREEZE_PATCH)
        return Done(f"froze HPA {', '.join(ctx.targets.hpas)}")
