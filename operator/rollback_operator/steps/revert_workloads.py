"""RevertWorkloads (runbook §2.2): every selected container back to `<repository>:<targetTag>`.

The previous images are saved first. When a container already runs the target image string,
the pod template gets a restart annotation (as `kubectl rollout restart` does) so the tag is
pulled again; its value is the step's start time, so a re-run after a crash writes the same
value and does not roll out twice. The step then waits for every rollout, up to rolloutTimeout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollback_operator.images import with_tag
from rollback_operator.kube import STRATEGIC_MERGE_PATCH, deployment_path
from rollback_operator.model import RollbackSpec, StepName, Targets, Workload
from rollback_operator.rollout import rollout_state
from rollback_operator.steps.base import Done, Fail, Outcome, StepContext, Wait, poll_interval

RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


class RevertWorkloads:
    name = StepName.REVERT_WORKLOADS
    preflight = None

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        return None

    def plan(self, ctx: StepContext) -> str:
        changes = []
        for workload in ctx.spec.workloads:
            deployment = ctx.kube.deployment(ctx.namespace, workload.deployment) or {}
            for container, image in _selected_images(deployment, workload).items():
                target = with_tag(image, ctx.spec.target_tag)
                verb = f"{image} -> {target}" if image != target else f"restart at {target}"
                changes.append(f"{workload.deployment}/{container}: {verb}")
        return "would set " + "; ".join(changes)

    def run(self, ctx: StepContext) -> Outcome:
        progress: list[str] = []
        for workload in ctx.spec.workloads:
            deployment = ctx.kube.deployment(ctx.namespace, workload.deployment)
            if deployment is None:
                return Fail(f"Deployment {workload.deployment!r} disappeared during the rollback")
            state = rollout_state(self._revert(ctx, workload, deployment))
            if state.stuck:
                return Fail(_timeout_message(ctx, f"{state.detail} ({state.stuck})"))
            if not state.complete:
                progress.append(state.detail)
        if progress:
            limit = ctx.step_started_at + timedelta(seconds=ctx.spec.rollout_timeout_seconds)
            if ctx.now() >= limit:
                return Fail(_timeout_message(ctx, "; ".join(progress)))
            return Wait("rolling out: " + "; ".join(progress), retry_after=poll_interval(ctx))
        images = [
            f"{name}/{c}: {with_tag(i, ctx.spec.target_tag)}"
            for name, saved in sorted(ctx.ledger.originals("deployments").items())
            for c, i in saved["images"].items()
        ]
        return Done("rolled out " + ", ".join(images))

    def _revert(
        self, ctx: StepContext, workload: Workload, deployment: dict[str, Any]
    ) -> dict[str, Any]:
        """Patches the Deployment towards the target images, unless it is already there.

        Returns the Deployment as it now stands (the patch's answer, or the read).
        """
        ctx.ledger.save(
            "deployments",
            workload.deployment,
            {
                "images": _selected_images(deployment, workload),
                "restartedAt": ctx.step_started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        saved = ctx.ledger.original("deployments", workload.deployment)
        targets = {c: with_tag(i, ctx.spec.target_tag) for c, i in saved["images"].items()}
        current = _selected_images(deployment, workload)
        template: dict[str, Any] = {}
        if current != targets:
            template["spec"] = {"containers": [{"name": c, "image": i} for c, i in targets.items()]}
        if saved["images"] == targets:  # nothing to change: force a new rollout to re-pull the tag
            annotations = (
                deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
            )
            if annotations.get(RESTART_ANNOTATION) != saved["restartedAt"]:
                template["metadata"] = {"annotations": {RESTART_ANNOTATION: saved["restartedAt"]}}
        if not template:
            return deployment
        return ctx.kube.patch(
            deployment_path(ctx.namespace, workload.deployment),
            {"spec": {"template": template}},
            STRATEGIC_MERGE_PATCH,
        )


def _selected_images(deployment: dict[str, Any], workload: Workload) -> dict[str, str]:
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    return {
        c["name"]: c["image"]
        for c in containers
        if workload.containers is None or c["name"] in workload.containers
    }


def _timeout_message(ctx: StepContext, detail: str) -> str:
    frozen = " and autoscaling is still frozen" if ctx.targets.hpas else ""
    return (
        f"rollout did not complete within {ctx.spec.rollout_timeout_seconds:g}s: {detail}. "
        f"The maintenance page is still on{frozen}. Look at the pods "
        f"(kubectl -n {ctx.namespace} describe deployment), fix the image or the cluster, then "
        "create a new RollbackRequest, or restore traffic by hand from status.saved."
    )
