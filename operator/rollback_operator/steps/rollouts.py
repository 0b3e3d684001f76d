"""The run's Deployments as their rollouts go, followed by watches (`watches.py`):
RevertWorkloads starts following them from its patches' answers, and Verify goes on from what
the same watches hold, without reading them again. A restarted operator reads them once and
follows them from there."""

from __future__ import annotations

from typing import Any

from rollback_operator import watches
from rollback_operator.steps.base import StepContext
from rollback_operator.watches import Objects


def _key(ctx: StepContext) -> tuple[str, ...]:
    return ("deployments", ctx.namespace, ctx.request, ctx.request_uid)


def _collection(namespace: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments"


def held(ctx: StepContext) -> Objects | None:
    """The Deployments as this process's watches hold them now, if it follows them."""
    follower = watches.following(_key(ctx))
    return follower.current() if follower is not None else None


def follow_rollouts(
    ctx: StepContext,
    names: list[str],
    seconds: float,
    start: dict[str, dict[str, Any]] | None = None,
) -> tuple[Objects, str | None]:
    """The Deployments `names` as the watches hold them now (followed for `seconds` more,
    what is left of the step's deadline), and the watches' trouble, if any (to say in the
    step's message). Read through `ctx.wakeups`: a step that finds them not yet settled
    returns a Wait, and the runner calls it again as soon as the watches see a change.

    `start`: the Deployments as the step holds them (read or written at a resourceVersion),
    to follow from; else those the watches already follow, else they are read once here."""
    follower = watches.following(_key(ctx))
    if follower is None or start is not None:
        if start is None:
            start = {}
            for name in names:
                found = ctx.kube.deployment(ctx.namespace, name)
                if found is None:
                    return {**start, name: None}, None
                start[name] = found
        if follower is not None:
            watches.stop(_key(ctx))
        follower = watches.follow(ctx.kube, _key(ctx), _collection(ctx.namespace), start, seconds)
    else:
        follower.extend(seconds)
    return ctx.wakeups.read(follower), follower.problem


def done_with(ctx: StepContext) -> None:
    """The run needs the Deployments' watches no more."""
    watches.stop(_key(ctx))
