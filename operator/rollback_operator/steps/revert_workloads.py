"""RevertWorkloads (runbook §2.2): every selected container back to `<repository>:<targetTag>`.

Selected: the listed containers (every one when none is listed), and the listed init
containers or, when a workload lists none, every init container whose image repository is one
the request reverts (`images.py`). The previous images are saved first. When a container
already runs the target image string, the pod template gets a restart annotation (as `kubectl
rollout restart` does) so the tag is pulled again; its value is the step's start time, so a
re-run after a crash writes the same value and does not roll out twice. The step then waits
for every rollout, up to rolloutTimeout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollback_operator.images import (
    CONTAINERS,
    INIT_CONTAINERS,
    SelectedImages,
    reverted_repositories,
    running_images,
    with_tag,
)
from rollback_operator.kube import STRATEGIC_MERGE_PATCH, deployment_path
from rollback_operator.model import StepName, Workload
from rollback_operator.rollout import rollout_state
from rollback_operator.steps.base import (
    BaseStep,
    Done,
    Fail,
    Outcome,
    StepContext,
    Wait,
    poll_interval,
)

RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


class RevertWorkloads(BaseStep):
    name = StepName.REVERT_WORKLOADS

    def plan(self, ctx: StepContext) -> str:
        found = [
            (w, ctx.kube.deployment(ctx.namespace, w.deployment) or {}) for w in ctx.spec.workloads
        ]
        repositories = reverted_repositories(found)
        changes = []
        for workload, deployment in found:
            for label, image in SelectedImages.of(deployment, workload, repositories).labelled():
                target = with_tag(image, ctx.spec.target_tag)
                verb = f"{image} -> {target}" if image != target else f"restart at {target}"
                changes.append(f"{workload.deployment}/{label}: {verb}")
        return "would set " + "; ".join(changes)

    def run(self, ctx: StepContext) -> Outcome:
        found: list[tuple[Workload, dict[str, Any]]] = []
        for workload in ctx.spec.workloads:
            deployment = ctx.kube.deployment(ctx.namespace, workload.deployment)
            if deployment is None:
                return Fail(f"Deployment {workload.deployment!r} disappeared during the rollback")
            found.append((workload, deployment))
        # Reverting keeps each repository, so this is the same on every run of the step.
        repositories = reverted_repositories(found)
        progress: list[str] = []
        for workload, deployment in found:
            state = rollout_state(self._revert(ctx, workload, deployment, repositories))
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
            f"{name}/{label}: {with_tag(image, ctx.spec.target_tag)}"
            for name, saved in sorted(ctx.ledger.originals("deployments").items())
            for label, image in SelectedImages.saved(saved).labelled()
        ]
        return Done("rolled out " + ", ".join(images))

    def _revert(
        self,
        ctx: StepContext,
        workload: Workload,
        deployment: dict[str, Any],
        repositories: frozenset[str],
    ) -> dict[str, Any]:
        """Patches the Deployment towards the target images, unless it is already there.

        Returns the Deployment as it now stands (the patch's answer, or the read).
        """
        selected = SelectedImages.of(deployment, workload, repositories)
        restarted_at = ctx.step_started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        ctx.ledger.save("deployments", workload.deployment, selected.record(restarted_at))
        saved = ctx.ledger.original("deployments", workload.deployment)
        before = SelectedImages.saved(saved)
        targets = before.retagged(ctx.spec.target_tag)
        pod: dict[str, Any] = {}
        for kind, wanted in ((CONTAINERS, targets.containers), (INIT_CONTAINERS, targets.init)):
            if wanted and running_images(deployment, kind, wanted) != wanted:
                pod[kind] = [{"name": c, "image": i} for c, i in wanted.items()]
        template: dict[str, Any] = {}
        if pod:
            template["spec"] = pod
        if before == targets:  # nothing to change: force a new rollout to re-pull the tag
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


def _timeout_message(ctx: StepContext, detail: str) -> str:
    frozen = " and autoscaling is still frozen" if ctx.targets.hpas else ""
    return (
        f"rollout did not complete within {ctx.spec.rollout_timeout_seconds:g}s: {detail}. "
        f"The maintenance page is still on{frozen}. Look at the pods "
        f"(kubectl -n {ctx.namespace} describe deployment), fix the image or the cluster, then "
        "create a new RollbackRequest, or restore traffic by hand from status.saved."
    )
