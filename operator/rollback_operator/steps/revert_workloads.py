"""RevertWorkloads (runbook §2.2): every selected container back to `<repository>:<targetTag>`.

Selected: the listed containers (every one when none is listed), and the listed init
containers or, when a workload lists none, every init container whose image repository is one
the request reverts (`images.py`). The previous images are saved first. When a container
already runs the target image string, the pod template gets a restart annotation (as `kubectl
rollout restart` does) so the tag is pulled again; its value is the step's start time, so a
re-run after a crash writes the same value and does not roll out twice. The step then waits
for every rollout, up to rolloutTimeout, following the Deployments with watches started from
its patches' answers (`steps/rollouts.py`), never reading them again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollback_operator import watches
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
from rollback_operator.steps import rollouts
from rollback_operator.steps.base import BaseStep, Done, Fail, Outcome, StepContext, Wait

RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


class RevertWorkloads(BaseStep):
    name = StepName.REVERT_WORKLOADS
    records_before_acting = True  # the images (and restartedAt) are saved before the patch

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
        # As the watches of an earlier call hold them, else as Preflight read them, else read.
        held = rollouts.held(ctx)
        found: list[tuple[Workload, dict[str, Any]]] = []
        for workload in ctx.spec.workloads:
            name = workload.deployment
            if held is not None:
                deployment = held.get(name)
            else:
                deployment = ctx.seen.take("deployments", name) or ctx.kube.deployment(
                    ctx.namespace, name
                )
            if deployment is None:
                rollouts.done_with(ctx)
                return Fail(f"Deployment {name!r} disappeared during the rollback")
            found.append((workload, deployment))
        # Reverting keeps each repository, so this is the same on every run of the step.
        repositories = reverted_repositories(found)
        ctx.ledger.save_all(
            "deployments",
            {
                w.deployment: SelectedImages.of(d, w, repositories).record(self._restart_at(ctx))
                for w, d in found
            },
        )
        current = {w.deployment: self._revert(ctx, w, d, repositories) for w, d in found}
        limit = ctx.step_started_at + timedelta(seconds=ctx.spec.rollout_timeout_seconds)
        objects, trouble = rollouts.follow_rollouts(
            ctx,
            list(current),
            (limit - ctx.now()).total_seconds(),
            start=current if held is None else None,
        )
        progress: list[str] = []
        for name in current:
            deployment = objects.get(name)
            if deployment is None:
                rollouts.done_with(ctx)
                return Fail(f"Deployment {name!r} disappeared during the rollback")
            state = rollout_state(deployment)
            if state.stuck:
                rollouts.done_with(ctx)
                return Fail(_timeout_message(ctx, f"{state.detail} ({state.stuck})"))
            if not state.complete:
                progress.append(state.detail)
        if progress:
            if ctx.now() >= limit:
                rollouts.done_with(ctx)
                return Fail(_timeout_message(ctx, "; ".join(progress)))
            if trouble:
                progress.append(trouble)
            # The watches carry on between calls: the next call asks them, not the API server,
            # as soon as they see a change (steps/rollouts.py).
            return Wait("rolling out: " + "; ".join(progress), retry_after=watches.CALL_SECONDS)
        images = [
            f"{name}/{label}: {with_tag(image, ctx.spec.target_tag)}"
            for name, saved in sorted(ctx.ledger.originals("deployments").items())
            for label, image in SelectedImages.saved(saved).labelled()
        ]
        return Done("rolled out " + ", ".join(images))

    @staticmethod
    def _restart_at(ctx: StepContext) -> str:
        return ctx.step_started_at.strftime("%Y-%m-%dT%H:%M:%SZ")

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
        saved = ctx.ledger.original("deployments", workload.deployment)  # saved before any patch
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
        # At the version the patch was computed from: a change made since is a conflict, and
        # the step runs again from a fresh read.
        return ctx.kube.patch(
            deployment_path(ctx.namespace, workload.deployment),
            {
                "metadata": {"resourceVersion": deployment["metadata"]["resourceVersion"]},
                "spec": {"template": template},
            },
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
