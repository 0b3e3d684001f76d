"""The rollback engine: from spec, status and signals, the next thing to do; and what it does
to the status. Pure: no I/O, no clock (time is passed in), so every transition is unit-tested.

The runner (`runner.py`) asks `decide` for a decision (handing it the registry's answer to
whether a step applies), performs it (running a step, or just
recording a skip), and records the result with the transition functions below. Because the
whole state lives in the status, deciding again after a crash picks up where the run stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rollback_operator.clock import parse, stamp
from rollback_operator.model import Phase, RollbackSpec, StepName, StepState, Targets
from rollback_operator.outcomes import Done, Fail, NeedsApproval, Outcome, Wait
from rollback_operator.status import Status


@dataclass(frozen=True)
class Signals:
    """What the runner observed besides the request itself."""

    abort: bool = False
    blocker: str | None = None  # an earlier request that touches the same objects, still running
    # (step, user, digest) from the approve annotations: `approve: <step>@<digest>`
    approval: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Idle:
    """Terminal: nothing more to decide (the end may still have to be announced)."""


@dataclass(frozen=True)
class Queue:
    blocker: str


@dataclass(frozen=True)
class Skip:
    step: StepName
    reason: str


@dataclass(frozen=True)
class Run:
    step: StepName


@dataclass(frozen=True)
class Approve:
    """Record an approval of the running step, given by the annotations."""

    step: StepName
    by: str


@dataclass(frozen=True)
class Complete:
    pass


@dataclass(frozen=True)
class Abort:
    pass


Decision = Idle | Queue | Skip | Run | Approve | Complete | Abort

# Why a step does not apply to a request (None: it does). The registry answers it; the engine
# is handed the answer so that it needs nothing of the steps themselves.
SkipReason = Callable[[StepName, RollbackSpec, Targets | None], str | None]


def decide(
    spec: RollbackSpec, status: Status, signals: Signals, skip_reason: SkipReason
) -> Decision:
    if status.phase.terminal:
        return Idle()
    if signals.abort:
        return Abort()
    if status.phase in (Phase.PENDING, Phase.QUEUED) and signals.blocker:
        return Queue(signals.blocker)
    record = next((r for r in status.steps if not r.state.finished), None)
    if record is None:
        return Complete()
    reason = skip_reason(record.name, spec, status.targets)
    if reason is not None and record.state == StepState.PENDING:
        return Skip(record.name, reason)
    if signals.approval is not None and signals.approval[0] == record.name:
        _, by, digest = signals.approval
        if accepts(status, record.name, by, digest):
            return Approve(record.name, by)
    return Run(record.name)


def accepts(status: Status, step: StepName, by: str, digest: str) -> bool:
    """Whether an approval of `step` by `by`, naming `digest`, counts (the admission policy
    checks the same; this is the second line): only while the step waits for it, only for
    what it waits for now, and never from the person who created the request (four eyes)."""
    record = status.record(step)
    return (
        status.phase == Phase.AWAITING_APPROVAL
        and status.step == step
        and record.state == StepState.RUNNING
        and record.approved_by is None
        and bool(record.approval_digest)
        and digest == record.approval_digest
        and bool(by)
        and by != status.requested_by
    )


# --- transitions: each returns a new Status


def queued(status: Status, blocker: str, spec: RollbackSpec, now: datetime) -> Status:
    new = status.copy()
    new.phase = Phase.QUEUED
    new.queued_behind = blocker
    new.message = (
        f"waiting for RollbackRequest {blocker}, which touches the same objects, to finish"
    )
    return _with_conditions(new, spec, now)


def skipped(
    status: Status, step: StepName, reason: str, spec: RollbackSpec, now: datetime
) -> Status:
    new = _running(status, now)
    record = new.record(step)
    record.state, record.message, record.finished_at = StepState.SKIPPED, reason, stamp(now)
    new.step = step
    return _with_conditions(new, spec, now)


def started(status: Status, step: StepName, spec: RollbackSpec, now: datetime) -> Status:
    """The step begins, or (already Running, after a restart) resumes: one more attempt."""
    new = _running(status, now)
    record = new.record(step)
    if record.state != StepState.RUNNING:
        record.state, record.started_at = StepState.RUNNING, stamp(now)
    record.attempts += 1
    new.phase = _active_phase(step)
    new.step = step
    new.message = f"{step}: running"
    return _with_conditions(new, spec, now)


def approved(status: Status, step: StepName, by: str, spec: RollbackSpec, now: datetime) -> Status:
    """The approval is in the ledger; the step runs on."""
    new = status.copy()
    record = new.record(step)
    record.approved_by, record.approved_at = by, stamp(now)
    new.phase = _active_phase(step)
    new.message = f"{step}: approved by {by}"
    return _with_conditions(new, spec, now)


def stepped(
    status: Status, step: StepName, outcome: Outcome, spec: RollbackSpec, now: datetime
) -> Status:
    new = status.copy()
    record = new.record(step)
    record.message = outcome.message
    if isinstance(outcome, Done):
        record.state, record.finished_at = StepState.SUCCEEDED, stamp(now)
        new.message = f"{step}: {outcome.message}"
    elif isinstance(outcome, Wait):
        new.message = f"{step}: {outcome.message}"
    elif isinstance(outcome, NeedsApproval):
        new.phase = Phase.AWAITING_APPROVAL
        new.message = f"{step} awaits approval: {outcome.message}"
        record.approval_digest = outcome.digest or None
        record.approval_subject = outcome.subject or None
        if outcome.voided:
            record.approved_by = record.approved_at = None
    elif isinstance(outcome, Fail):
        record.state, record.finished_at = StepState.FAILED, stamp(now)
        new.phase, new.finished_at, new.announced = Phase.FAILED, stamp(now), False
        new.message = f"{step} failed: {outcome.message}"
    return _with_conditions(new, spec, now)


def aborted(
    status: Status, spec: RollbackSpec, now: datetime, jobs: tuple[str, ...] = ()
) -> Status:
    """`jobs`: what became of the step's Jobs still running (stopped, or left running)."""
    new = status.copy()
    current = next((r for r in new.steps if not r.state.finished), None)
    if current is not None and current.state == StepState.RUNNING:
        current.state, current.finished_at = StepState.ABORTED, stamp(now)
        current.message = "aborted at the request of the abort annotation"
    new.phase, new.finished_at, new.queued_behind = Phase.ABORTED, stamp(now), None
    new.announced = False
    where = ""
    if current is not None:
        started = current.state == StepState.ABORTED
        where = f" during {current.name}" if started else f" before {current.name}"
    new.message = " ".join(
        [f"Aborted{where}.", *(f"{fate}." for fate in jobs), _left_as(new, spec)]
    )
    return _with_conditions(new, spec, now)


def announced(status: Status) -> Status:
    """The end of the run was announced (Event, notifications, post-mortem)."""
    new = status.copy()
    new.announced = True
    return new


def completed(status: Status, spec: RollbackSpec, now: datetime) -> Status:
    new = status.copy()
    new.phase, new.finished_at, new.step = Phase.SUCCEEDED, stamp(now), StepName.REPORT
    new.announced = False
    took = ""
    if new.started_at:
        took = f" in {(now - parse(new.started_at)).total_seconds():.1f}s"
    deployments = ", ".join(spec.deployments)
    if spec.dry_run:
        new.message = (
            f"Dry run completed{took}: each step's message says what it would change; "
            "nothing was changed"
        )
    else:
        new.message = f"Rolled back {deployments} to {spec.target_tag}{took}; traffic restored"
    return _with_conditions(new, spec, now)


def _running(status: Status, now: datetime) -> Status:
    new = status.copy()
    if new.phase in (Phase.PENDING, Phase.QUEUED):
        new.started_at, new.queued_behind = stamp(now), None
    if not new.phase.terminal:
        new.phase = Phase.RUNNING
    return new


def _active_phase(step: StepName) -> Phase:
    """The phase while `step` runs: the watch after traffic is back has its own."""
    return Phase.MONITORING if step == StepName.MONITOR else Phase.RUNNING


def _left_as(status: Status, spec: RollbackSpec) -> str:
    """How to finish by hand, given how far the run went."""
    if spec.dry_run:
        return "Dry run: nothing was changed."
    maintenance, frozen = _site_changes(status, spec)
    if not maintenance and not frozen:
        if status.saved.get("ingresses"):
            return "Traffic is back on the application: nothing to restore."
        return "Traffic was not switched: nothing to restore."
    parts = []
    if maintenance:
        parts.append(f"The maintenance page is still on (Ingress {', '.join(maintenance)}).")
    if frozen:
        parts.append(f"The HPAs {', '.join(frozen)} are still frozen.")
    parts.append(
        "To finish by hand: check the workloads, then restore the HPAs' behavior and the "
        "Ingress backends recorded in status.saved (or create a new RollbackRequest)."
    )
    return " ".join(parts)


# --- conditions, derived from the ledger after every transition


def _site_changes(status: Status, spec: RollbackSpec) -> tuple[list[str], list[str]]:
    """The Ingresses on maintenance and the HPAs frozen now, as far as the ledger knows.

    `status.saved` is written before each change, so it also covers a step that failed or was
    aborted half-way (one Ingress switched, the next not).
    """
    if spec.dry_run:
        return [], []
    ingresses_back, hpas_back = status.restored()
    maintenance = [] if ingresses_back else sorted(status.saved.get("ingresses", {}))
    frozen = [] if hpas_back else sorted(status.saved.get("hpas", {}))
    return maintenance, frozen


def _with_conditions(status: Status, spec: RollbackSpec, now: datetime) -> Status:
    on_maintenance, frozen = _site_changes(status, spec)
    maintenance, paused = bool(on_maintenance), bool(frozen)
    terminal = status.phase.terminal
    wanted = [
        ("Ready", status.phase == Phase.SUCCEEDED, str(status.phase), status.message),
        (
            "Progressing",
            not terminal,
            str(status.phase),
            f"step {status.step}" if status.step else "starting",
        ),
        (
            "MaintenanceActive",
            maintenance,
            "MaintenancePage" if maintenance else "AppServing",
            "the Ingresses point to the maintenance page"
            if maintenance
            else "the Ingresses point to the application",
        ),
        (
            "AutoscalingPaused",
            paused,
            "Frozen" if paused else "Active",
            "the HPAs are frozen" if paused else "the HPAs scale as configured",
        ),
    ]
    if spec.dry_run:
        wanted.append(("DryRun", True, "DryRun", "dry run: nothing is changed"))
    previous = {c["type"]: c for c in status.conditions}
    conditions = []
    for kind, value, reason, message in wanted:
        flag = "True" if value else "False"
        before = previous.get(kind)
        since = before["lastTransitionTime"] if before and before["status"] == flag else stamp(now)
        conditions.append(
            {
                "type": kind,
                "status": flag,
                "reason": reason,
                "message": message[:1024],
                "lastTransitionTime": since[:19] + "Z",
                "observedGeneration": status.observed_generation or 0,
            }
        )
    status.conditions = conditions
    return status
