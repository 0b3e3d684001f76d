"""What every step is: an idempotent `run` (and a side-effect-free `plan` for dry runs).

A step may be run many times: after a `Wait`, and from the top after the operator restarts.
So `run` converges on the desired state instead of replaying actions, and saves the prior
state of whatever it changes (through `ctx.ledger.save`) before it changes it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rollback_operator.kube import Kube, lean
from rollback_operator.ledger import Ledger
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.outcomes import Approval, Done, Fail, NeedsApproval, Outcome, Wait
from rollback_operator.watches import Wakeups

__all__ = [
    "Approval",
    "AutoscalingStep",
    "BaseStep",
    "Done",
    "Fail",
    "NeedsApproval",
    "Outcome",
    "PreflightCheck",
    "References",
    "Seen",
    "Step",
    "StepContext",
    "Wait",
    "poll_interval",
]


class Seen:
    """Objects a step of this run read, for a later step to start from instead of reading them
    again: Preflight's reads of the Ingresses, HTTPRoutes, the maintenance Service, HPAs and
    Deployments feed EnableMaintenance (and its route checks), PauseAutoscaling and
    RevertWorkloads, a few milliseconds later.

    Each is taken once. Whatever a step writes from one carries its resourceVersion, so a
    change made since it was read is a conflict (409): the step runs again, from a fresh read.
    Memory only: a restarted operator reads again.
    """

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def keep(self, kind: str, name: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self._objects[(kind, name)] = lean(copy.deepcopy(obj)) or {}

    def take(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.pop((kind, name), None)

    def peek(self, kind: str, name: str) -> dict[str, Any] | None:
        """A copy, left for the step that changes the object (for a check that only looks)."""
        with self._lock:
            found = self._objects.get((kind, name))
            return copy.deepcopy(found) if found is not None else None


@dataclass
class StepContext:
    """What a step may see and do: read the cluster through `kube`, and record through `ledger`
    (save an original before changing it, put its capability's section, set the targets or the
    report). Nothing else of the runner's state reaches a step."""

    kube: Kube
    namespace: str
    request: str
    spec: RollbackSpec
    ledger: Ledger
    step_started_at: datetime
    now: Callable[[], datetime]
    targets: Targets = field(default_factory=Targets)  # as Preflight resolved them
    approval: Approval | None = None  # the recorded approval of this step, if any
    request_uid: str = ""  # names the step's Jobs, so a later request of the same name differs
    seen: Seen = field(default_factory=Seen)  # this run's reads, for a later step (see Seen)
    # What this call read from watches: a Wait is cut short when any of it changes.
    wakeups: Wakeups = field(default_factory=Wakeups)


def poll_interval(ctx: StepContext) -> float:
    """How long to wait before checking a rollout again: a quarter of the time waited so far,
    between 0.25 s and 5 s. Quick rollouts are seen quickly; slow ones (or a busy control
    plane) are not polled into the ground by every request in flight."""
    waited = (ctx.now() - ctx.step_started_at).total_seconds()
    return min(5.0, max(0.25, waited / 4))


class PreflightCheck(Protocol):
    """A capability's part of Preflight (safety rule 1), which the registry composes: Preflight
    imports no step."""

    def problems(self, ctx: StepContext) -> list[str]:
        """What is wrong with the references of the capability's spec, read through the API:
        reported together with every other problem, before anything changes."""

    def inspect(self, ctx: StepContext) -> Wait | Fail | str | None:
        """Slower read-only checks, once every reference is sound (a Job that looks at the
        database and the backup): Wait while they run, Fail, or what Preflight's message adds
        (None: nothing to add)."""


@dataclass(frozen=True)
class References:
    """A capability's part of Preflight that only checks references (no inspection)."""

    check: Callable[[StepContext], list[str]]

    def problems(self, ctx: StepContext) -> list[str]:
        return self.check(ctx)

    def inspect(self, ctx: StepContext) -> Wait | Fail | str | None:
        return None


class Step(Protocol):
    name: StepName
    # True when every side effect of `run` is preceded by a durable record through the ledger
    # (`save`, a durable section), or the step has none: its start is then written with that
    # record or its outcome, one write instead of two. False: the start is written before the
    # step runs (a step that puts things back, whose re-run after a crash must know it began).
    records_before_acting: bool

    @property
    def preflight(self) -> PreflightCheck | None:
        """The capability's part of Preflight, if any; steps of one capability share one."""

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        """Why the step does not apply to this request, or None when it does (`targets` is
        None before Preflight resolved them)."""

    def run(self, ctx: StepContext) -> Outcome:
        """Moves the site one step further; safe to call again with the same context."""

    def plan(self, ctx: StepContext) -> str:
        """What `run` would change, read-only, for dry runs."""


class BaseStep:
    """The defaults of a `Step`: no part of Preflight, and the step applies to every request.
    A step overrides what it needs; the `Step` protocol stays the type the runner sees."""

    name: StepName
    preflight: PreflightCheck | None = None
    records_before_acting = False

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        return None


class AutoscalingStep(BaseStep):
    """PauseAutoscaling and ResumeAutoscaling: skipped when Preflight found no HPA that scales
    the listed Deployments."""

    no_hpa: str  # the skip reason, in the step's words

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        if targets is not None and not targets.hpas:
            return self.no_hpa
        return None
