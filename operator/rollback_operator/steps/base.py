"""What every step is: an idempotent `run` (and a side-effect-free `plan` for dry runs).

A step may be run many times: after a `Wait`, and from the top after the operator restarts.
So `run` converges on the desired state instead of replaying actions, and saves the prior
state of whatever it changes (through `StepContext.save`) before it changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rollback_operator.kube import Kube
from rollback_operator.model import RollbackSpec, StepName


@dataclass(frozen=True)
class Done:
    message: str
    warnings: tuple[str, ...] = ()  # e.g. drift found while restoring; each becomes a Warning Event
    warning_reason: str = "Drift"  # the reason of those Events


@dataclass(frozen=True)
class Wait:
    message: str
    retry_after: float = 1.0


@dataclass(frozen=True)
class Fail:
    message: str


@dataclass(frozen=True)
class NeedsApproval:
    """The step may not go on until a person approves it (runbook §3: the DBA owns the
    restore, QA signs the verification off). The run waits in phase AwaitingApproval; the
    message says who must approve and how."""

    message: str
    retry_after: float = 1.0


Outcome = Done | Wait | Fail | NeedsApproval


@dataclass(frozen=True)
class Approval:
    """An approval recorded in the ledger: who (from the approved-by annotation, which the
    admission policy holds to the approver's own username) and when."""

    by: str
    at: str


@dataclass
class StepContext:
    """What a step may see and do. `save` persists before returning: save, then change."""

    kube: Kube
    namespace: str
    request: str
    spec: RollbackSpec
    saved: dict[str, dict[str, Any]]
    targets: dict[str, list[str]]
    step_started_at: datetime
    now: Callable[[], datetime]
    persist_saved: Callable[[], None] = field(repr=False)
    persist_targets: Callable[[dict[str, list[str]]], None] = field(repr=False)
    # For the Report step: the request as it stands (built only when asked: a copy of the
    # whole object is no work for every rollout poll), and where the report went.
    request_body: Callable[[], dict[str, Any]] = field(default=dict, repr=False)
    persist_report: Callable[[dict[str, str]], None] = field(default=lambda _: None, repr=False)
    approval: Approval | None = None  # the recorded approval of this step, if any
    request_uid: str = ""  # names the step's Jobs, so a later request of the same name differs
    # status.<name> for the sections of status.SECTIONS: read, and set (durable=True writes it
    # at once, before a side effect that depends on it; else it goes with the next outcome).
    sections: dict[str, Any] = field(default_factory=dict, repr=False)
    persist_sections: Callable[[bool], None] = field(default=lambda _: None, repr=False)

    def saved_for(self, section: str, key: str) -> Any:
        return self.saved.get(section, {}).get(key)

    def save(self, section: str, key: str, value: Any) -> None:
        """Records the prior state of `key` in status.saved, durably, unless already recorded.

        The first record wins: a step re-run after a crash must never overwrite the true
        original with a fresh read of an object it had already changed.
        """
        if self.saved_for(section, key) is not None:
            return
        self.saved.setdefault(section, {})[key] = value
        self.persist_saved()

    def section(self, name: str) -> Any:
        return self.sections.get(name)

    def put_section(self, name: str, value: Any, durable: bool = False) -> None:
        self.sections[name] = value
        self.persist_sections(durable)


def poll_interval(ctx: StepContext) -> float:
    """How long to wait before checking a rollout again: a quarter of the time waited so far,
    between 0.25 s and 5 s. Quick rollouts are seen quickly; slow ones (or a busy control
    plane) are not polled into the ground by every request in flight."""
    waited = (ctx.now() - ctx.step_started_at).total_seconds()
    return min(5.0, max(0.25, waited / 4))


class Step(Protocol):
    name: StepName

    def skip_reason(self, spec: RollbackSpec, targets: dict[str, list[str]] | None) -> str | None:
        """Why the step does not apply to this request, or None when it does."""

    def run(self, ctx: StepContext) -> Outcome:
        """Moves the site one step further; safe to call again with the same context."""

    def plan(self, ctx: StepContext) -> str:
        """What `run` would change, read-only, for dry runs."""
