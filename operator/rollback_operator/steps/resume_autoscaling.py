"""ResumeAutoscaling (runbook §2.5): give each HPA back the behavior it had before the freeze.

A field someone changed during the rollback (a new maxReplicas, a behavior that is no longer
our freeze) is theirs: it is kept, and reported as drift instead of being overwritten.
"""

from __future__ import annotations

from rollback_operator.autoscaling import is_frozen
from rollback_operator.gitops import keda_paused
from rollback_operator.kube import hpa_path
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
            for field in ("minReplicas", "maxReplicas"):
                if spec.get(field, 1) != saved[field]:
                    now = spec.get(field, 1)
                    drift.append(
                        f"HPA {name} {field} is now {now} (was {saved[field]}), left as is"
                    )
            if is_frozen(hpa):
                ctx.kube.patch(
                    hpa_path(ctx.namespace, name),
                    {
                        "metadata": {"resourceVersion": hpa["metadata"]["resourceVersion"]},
                        # No saved behavior (status drops nulls): None removes the freeze.
                        "spec": {"behavior": saved.get("behavior")},
                    },
                )
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
