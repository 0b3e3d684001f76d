"""Verify (runbook §2.4), basic form: every reverted Deployment is Available, fully updated,
and runs the target images. Traffic never returns to an application that fails this.
"""

from __future__ import annotations

from datetime import timedelta

from rollback_operator.images import with_tag
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.rollout import is_available, rollout_state
from rollback_operator.steps.base import Done, Fail, Outcome, StepContext, Wait, poll_interval


class Verify:
    name = StepName.VERIFY

    def skip_reason(self, spec: RollbackSpec, targets: dict[str, list[str]] | None) -> str | None:
        return None

    def plan(self, ctx: StepContext) -> str:
        names = ", ".join(ctx.spec.deployments)
        return f"would check that {names} are Available at {ctx.spec.target_tag}"

    def run(self, ctx: StepContext) -> Outcome:
        problems: list[str] = []
        for name, saved in sorted(ctx.saved.get("deployments", {}).items()):
            deployment = ctx.kube.deployment(ctx.namespace, name)
            if deployment is None:
                problems.append(f"Deployment {name} not found")
                continue
            running = {
                c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]
            }
            for container, image in saved["images"].items():
                wanted = with_tag(image, ctx.spec.target_tag)
                if running.get(container) != wanted:
                    problems.append(
                        f"{name}/{container} runs {running.get(container)}, not {wanted}"
                    )
            state = rollout_state(deployment)
            if not state.complete:
                problems.append(state.detail)
            elif not is_available(deployment):
                problems.append(f"{name}: not Available")
        if not problems:
            count = len(ctx.saved.get("deployments", {}))
            return Done(f"{count} Deployment(s) Available at {ctx.spec.target_tag}")
        limit = ctx.step_started_at + timedelta(seconds=ctx.spec.rollout_timeout_seconds)
        if ctx.now() >= limit:
            return Fail(
                "verification failed: " + "; ".join(problems) + ". The maintenance page stays on; "
                "fix the application, then restore traffic by hand from status.saved or create a "
                "new RollbackRequest."
            )
        return Wait("waiting for: " + "; ".join(problems), retry_after=poll_interval(ctx))
