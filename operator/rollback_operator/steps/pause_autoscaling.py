"""PauseAutoscaling (runbook §2.1): stop the HPAs from starting instances of the bad version.

See `rollback_operator.autoscaling` for how and why an HPA is frozen this way.
"""

from __future__ import annotations

from typing import Any

from rollback_operator.autoscaling import FREEZE_PATCH, is_frozen, saved_fields
from rollback_operator.gitops import keda_paused
from rollback_operator.kube import ApiError, hpa_path
from rollback_operator.model import StepName
from rollback_operator.steps.base import AutoscalingStep, Done, Fail, Outcome, StepContext


class PauseAutoscaling(AutoscalingStep):
    """Freezes each HPA where it stands, its fields saved first for ResumeAutoscaling."""

    name = StepName.PAUSE_AUTOSCALING
    records_before_acting = True  # the HPAs' fields are saved before the freeze
    no_hpa = "no HorizontalPodAutoscaler scales the listed Deployments"

    def plan(self, ctx: StepContext) -> str:
        return f"would freeze HPA {', '.join(ctx.targets.hpas)} (selectPolicy: Disabled both ways)"

    def run(self, ctx: StepContext) -> Outcome:
        held: list[str] = []  # deleted by KEDA: their ScaledObject is paused (SuspendGitOps)
        found: dict[str, dict[str, Any]] = {}
        for name in ctx.targets.hpas:
            scaled = keda_paused(ctx.ledger.originals("gitops"), name)
            # Preflight's read, when this process made it (the freeze carries its version).
            hpa = ctx.seen.take("hpas", name) or ctx.kube.hpa(ctx.namespace, name)
            if hpa is None:
                if scaled:
                    held.append(f"{name} (ScaledObject {scaled} is paused: KEDA holds it)")
                    continue
                return Fail(f"HorizontalPodAutoscaler {name!r} disappeared during the rollback")
            found[name] = hpa
        # Every original in one write, before the first freeze.
        ctx.ledger.save_all("hpas", {name: saved_fields(hpa) for name, hpa in found.items()})
        for name, hpa in found.items():
            scaled = keda_paused(ctx.ledger.originals("gitops"), name)
            if not is_frozen(hpa):
                freeze = {
                    "metadata": {"resourceVersion": hpa["metadata"]["resourceVersion"]},
                    **FREEZE_PATCH,
                }
                try:
                    ctx.kube.patch(hpa_path(ctx.namespace, name), freeze)
                except ApiError as error:
                    if not (error.status == 404 and scaled):
                        raise
                    held.append(f"{name} (ScaledObject {scaled} is paused: KEDA holds it)")
        message = f"froze HPA {', '.join(ctx.targets.hpas)}"
        if held:
            message += "; deleted by KEDA meanwhile: " + ", ".join(held)
        return Done(message)
