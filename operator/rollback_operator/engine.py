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
from rollback_operator.model import (
    POSTMORTEM_KEY,
    RERUN_ANNOTATION,
    Phase,
    RollbackSpec,
    StepName,
    StepState,
    Targets,
)
from rollback_operator.outcomes import Done, Fail, NeedsApproval, Outcome, Wait
from rollback_operator.status import Status
from rollback_operator.suspension import gitops_advice, gitops_conditions


@dataclass(frozen=True)
class Signals:
    """What the runner observed besides the request itself."""

    abort: bool = False
    blocker: str | None = None  # an earlier request that touches the same objects, still running
    # (step, user, digest) from the approve annotations: `approve: <step>@<digest>`
    approval: tuple[str, str, str] | None = None
    earlier: EarlierRun | None = None  # a finished run of the same spec and name (runonce.py)


@dataclass(frozen=True)
class EarlierRun:
    """A finished run of this request's spec under its name, by a request since deleted: a
    GitOps sync that re-creates the request must not run the runbook again (runonce.py)."""

    uid: str
    phase: Phase
    finished_at: str
    configmap: str  # where that run's post-mortem is
    key: str  # the record's key: the spec's hash (and the rerun annotation's)

    def to_dict(self) -> dict[str, str]:
        return {
            "uid": self.uid,
            "phase": str(self.phase),
            "finishedAt": self.finished_at,
            "configMap": self.configmap,
            "key": self.key,
        }


@dataclass(frozen=True)
class Idle:
    """Terminal: nothing more to decide (the end may still have to be announced)."""


@dataclass(frozen=True)
class Queue:
    """Wait, changing nothing, until the earlier request named by `blocker` (one that holds
    the same objects) has ended; the runner records the phase Queued once."""

    blocker: str


@dataclass(frozen=True)
class Skip:
    """Record that `step` does not apply to this request, and why, without running it."""

    step: StepName
    reason: str  # for the ledger, e.g. "no spec.cdn"


@dataclass(frozen=True)
class Run:
    """Run (or, after a restart, resume) `step`: the one decision with side effects."""

    step: StepName


@dataclass(frozen=True)
class Approve:
    """Record an approval of the running step, given by the annotations."""

    step: StepName
    by: str  # the approved-by annotation, which admission holds to the approver's own name


@dataclass(frozen=True)
class RanBefore:
    """End at once: this spec already ran under this name (see EarlierRun)."""

    earlier: EarlierRun


@dataclass(frozen=True)
class Complete:
    """Every step has succeeded or been skipped: the run ends Succeeded."""


@dataclass(frozen=True)
class Abort:
    """The abort annotation is set: stop the run's Jobs and end Aborted, undoing nothing
    (the site stays as it stands, on the maintenance page if it was switched)."""


Decision = Idle | Queue | Skip | Run | Approve | Complete | Abort | RanBefore

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
    if status.phase == Phase.PENDING and signals.earlier is not None:
        return RanBefore(signals.earlier)
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
        new.message = gitops_advice(new, f"{step} failed: {outcome.message}")
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
    new.message = gitops_advice(
        new, " ".join([f"Aborted{where}.", *(f"{fate}." for fate in jobs), _left_as(new, spec)])
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
        new.message = gitops_advice(new, new.message)
    return _with_conditions(new, spec, now)


def ran_before(status: Status, earlier: EarlierRun, spec: RollbackSpec, now: datetime) -> Status:
    """The request ends at once with the earlier run's ending: nothing runs, every step is
    Skipped, status.report points at that run's post-mortem."""
    new = status.copy()
    why = f"not run again: this spec already ran (request uid {earlier.uid})"
    for record in new.steps:
        record.state, record.message, record.finished_at = StepState.SKIPPED, why, stamp(now)
    new.phase, new.step, new.queued_behind = earlier.phase, None, None
    new.started_at = new.finished_at = stamp(now)
    new.announced = False
    new.earlier_run = earlier.to_dict()
    new.report = {"configMap": earlier.configmap, "key": POSTMORTEM_KEY}
    new.message = (
        f"Not run again: a request of this name with this spec already ran (uid {earlier.uid}) "
        f"and ended {earlier.phase} at {earlier.finished_at}; its post-mortem is in ConfigMap "
        f"{earlier.configmap}. Nothing was changed. To run it again, create the request with the "
        f'annotation {RERUN_ANNOTATION}: "<reason>" (a reason not used before).'
    )
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
        if any(status.saved.get(k) for k in _SWITCHED):
            return "Traffic is back on the application: nothing to restore."
        return "Traffic was not switched: nothing to restore."
    parts = []
    if maintenance:
        parts.append(f"The maintenance page is still on ({'; '.join(maintenance)}).")
    if frozen:
        parts.append(f"The HPAs {', '.join(frozen)} are still frozen.")
    parts.append(
        "To finish by hand: check the workloads, then restore the HPAs' behavior and the "
        "Ingress backends recorded in status.saved (or create a new RollbackRequest)."
    )
    return " ".join(parts)


# --- conditions, derived from the ledger after every transition
_SWITCHED = {"ingresses": "Ingress", "httpRoutes": "HTTPRoute"}  # status.saved's, by kind


def _site_changes(status: Status, spec: RollbackSpec) -> tuple[list[str], list[str]]:
    """The Ingresses, HTTPRoutes ("HTTPRoute a, b") on maintenance, the HPAs frozen, now.

    `status.saved` is written before each change, so it also covers a step that failed or was
    aborted half-way (one Ingress switched, the next not).
    """
    if spec.dry_run:
        return [], []
    ingresses_back, hpas_back = status.restored()
    on = [] if ingresses_back else [k for k in _SWITCHED if status.saved.get(k)]
    maintenance = [f"{_SWITCHED[k]} {', '.join(sorted(status.saved[k]))}" for k in on]
    frozen = [] if hpas_back else sorted(status.saved.get("hpas", {}))
    return maintenance, frozen


def _with_conditions(status: Status, spec: RollbackSpec, now: datetime) -> Status:
    """The conditions, derived again from the ledger: each source below contributes its own
    (type, True?, reason, message), in this order."""
    wanted = [row for source in CONDITION_SOURCES for row in source(status, spec)]
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


ConditionRow = tuple[str, bool, str, str]


def _run_conditions(status: Status, spec: RollbackSpec) -> list[ConditionRow]:
    """Where the run stands: Ready and Progressing, as before."""
    terminal = status.phase.terminal
    return [
        ("Ready", status.phase == Phase.SUCCEEDED, str(status.phase), status.message),
        (
            "Progressing",
            not terminal,
            str(status.phase),
            f"step {status.step}" if status.step else "starting",
        ),
    ]


def _outcome_conditions(status: Status, spec: RollbackSpec) -> list[ConditionRow]:
    """The ending, for `kubectl wait` and GitOps tools (docs/gitops.md).

    Reconciling and Stalled follow kstatus (sigs.k8s.io/cli-utils): Reconciling=True reads as
    InProgress, Stalled=True as Failed, and with both False the Ready condition decides
    (True: Current). Complete and Failed are terminal, as a Job's: each turns True once and
    stays, so `kubectl wait --for=condition=Complete` (or `=Failed`) returns on that ending.
    A request that ended at once because its spec already ran says `RanBefore` (see runonce.py).
    """
    phase, terminal = status.phase, status.phase.terminal
    failed = phase in (Phase.FAILED, Phase.ABORTED)
    ending = "RanBefore" if status.earlier_run else str(phase)
    return [
        ("Reconciling", not terminal, str(phase), status.message),
        ("Stalled", failed, ending if failed else str(phase), status.message),
        ("Complete", phase == Phase.SUCCEEDED, ending if terminal else str(phase), status.message),
        ("Failed", failed, ending if terminal else str(phase), status.message),
    ]


def _site_conditions(status: Status, spec: RollbackSpec) -> list[ConditionRow]:
    """The state the site is left in, as far as the ledger knows."""
    on_maintenance, frozen = _site_changes(status, spec)
    maintenance, paused = bool(on_maintenance), bool(frozen)
    wanted = [
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
    return wanted


# Every condition, in the order `kubectl describe` shows them: a new concern adds its source.
CONDITION_SOURCES: tuple[Callable[[Status, RollbackSpec], list[ConditionRow]], ...] = (
    _run_conditions,
    _outcome_conditions,
    _site_conditions,
    gitops_conditions,
)
