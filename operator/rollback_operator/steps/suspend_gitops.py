"""SuspendGitOps: stop Argo CD, Flux and KEDA undoing the rollback, before its first change.

Its part of Preflight finds who manages the objects the run changes (`gitops.detect`), names
them in Preflight's message and in status.gitops, and, under `spec.gitops.policy: Refuse`,
fails with the commands to run by hand. The step itself (policy Suspend, the default) records
each manager's sync setting in status.saved.gitops, then suspends it. Nothing resumes them at
the end of the run: their source still holds the bad release, which they would put back, so
they stay suspended until `kubectl rollback resume-gitops` (after the revert is committed).
"""

from __future__ import annotations

from typing import Any

from rollback_operator.gitops import (
    JSON_PATCH,
    GitOpsSpec,
    Manager,
    detect,
    hand_commands,
    read,
    saved_state,
    suspend_patch,
)
from rollback_operator.gitops import path as manager_path
from rollback_operator.kube import ApiError
from rollback_operator.model import StepName
from rollback_operator.steps.base import BaseStep, Done, Fail, Outcome, StepContext, Wait

SECTION = "gitops"


def _targets_read(ctx: StepContext) -> list[tuple[str, dict[str, Any]]]:
    """The objects the run will change, as Preflight just read them (else read now; those
    not found are Preflight's own problems)."""
    ns, found = ctx.namespace, []
    for kind, seen, names, get in (
        ("Deployment", "deployments", ctx.targets.deployments, ctx.kube.deployment),
        ("Ingress", "ingresses", ctx.targets.ingresses, ctx.kube.ingress),
        ("HTTPRoute", "http_routes", ctx.targets.http_routes, ctx.kube.http_route),
        ("HorizontalPodAutoscaler", "hpas", ctx.targets.hpas, ctx.kube.hpa),
    ):
        for name in names:
            obj = ctx.seen.peek(seen, name) or get(ns, name)
            if obj is not None:
                found.append((kind, obj))
    return found


class GitOpsCheck:
    """SuspendGitOps' part of Preflight."""

    def problems(self, ctx: StepContext) -> list[str]:
        settings = GitOpsSpec.of(ctx.spec.sections)
        managers, problems, unconfirmed = detect(
            ctx.kube, ctx.namespace, _targets_read(ctx), settings.argocd_namespace
        )
        record: dict[str, Any] = {
            "policy": settings.policy,
            "managers": [m.to_dict() for m in managers],
        }
        if unconfirmed:
            record["unconfirmed"] = unconfirmed
        ctx.ledger.put_section(SECTION, record)
        if settings.policy == "Ignore":
            return []
        if managers and settings.policy == "Refuse" and not ctx.spec.dry_run:
            problems.append(
                "spec.gitops.policy is Refuse and these would undo the rollback: "
                + "; ".join(str(m) for m in managers)
                + ". Suspend them by hand first ("
                + "; ".join(hand_commands(m) for m in managers)
                + "), or set spec.gitops.policy to Suspend"
            )
        return problems

    def inspect(self, ctx: StepContext) -> Wait | Fail | str | None:
        record = ctx.ledger.section(SECTION) or {}
        managers = [Manager.from_dict(m) for m in record.get("managers") or []]
        parts = []
        named = "; ".join(str(m) for m in managers)
        if managers and record.get("policy") == "Ignore":
            parts.append(
                f"managed by GitOps (policy Ignore: not suspended, they may undo it): {named}"
            )
        elif managers:
            parts.append(f"managed by GitOps, suspended next: {named}")
        if record.get("unconfirmed"):
            parts.append(
                "marked for GitOps objects that do not list them, left alone: "
                + ", ".join(record["unconfirmed"])
            )
        return "; ".join(parts) or None


def managers_of(ctx: StepContext) -> list[Manager]:
    record = ctx.ledger.section(SECTION) or {}
    return [Manager.from_dict(m) for m in record.get("managers") or []]


class SuspendGitOps(BaseStep):
    name = StepName.SUSPEND_GITOPS
    preflight = GitOpsCheck()
    records_before_acting = True  # each setting is saved before its suspension

    def plan(self, ctx: StepContext) -> str:
        managers = managers_of(ctx)
        if not managers:
            return "no GitOps tool manages the objects: nothing to suspend"
        return "would suspend " + "; ".join(str(m) for m in managers)

    def run(self, ctx: StepContext) -> Outcome:
        managers = managers_of(ctx)
        if not managers:
            return Done("no Argo CD, Flux or KEDA object manages what the run changes")
        if GitOpsSpec.of(ctx.spec.sections).policy == "Ignore":
            warning = (
                "spec.gitops.policy is Ignore: not suspended, so they may put back what the "
                "rollback changes (the bad image, the Ingress backends, the HPA): "
                + "; ".join(str(m) for m in managers)
            )
            return Done(warning, warnings=(warning,), warning_reason="GitOpsNotSuspended")
        done = []
        for manager in managers:
            obj = read(ctx.kube, manager.kind, manager.namespace, manager.name)
            if obj is None:
                return Fail(
                    f"{manager.kind} {manager.namespace}/{manager.name} disappeared before it "
                    "could be suspended; nothing was changed yet on the site"
                )
            record = {**manager.to_dict(), **saved_state(manager.kind, obj)}
            ctx.ledger.save(SECTION, manager.key, record)
            patch = suspend_patch(manager.kind, obj)
            if patch is not None:
                try:
                    ctx.kube.patch(
                        manager_path(manager.kind, manager.namespace, manager.name),
                        patch,
                        JSON_PATCH,
                    )
                except ApiError as error:
                    if error.status in (409, 422):  # changed since it was read: read again
                        return Wait(f"{manager.kind} {manager.name} changed since read; retrying")
                    raise
            done.append(f"{manager.kind} {manager.namespace}/{manager.name}")
        return Done(
            f"suspended {', '.join(done)}; they stay suspended after the run, until the revert "
            "is in Git and `kubectl rollback resume-gitops` runs"
        )
