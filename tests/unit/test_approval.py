"""Approval gates in the engine: a step that needs a person waits in AwaitingApproval, and the
approve annotations are recorded in the ledger once, for the step that is waiting only."""

from __future__ import annotations

from datetime import UTC, datetime

from rollback_operator import engine
from rollback_operator.engine import Approve, Decision, Run, Signals, approved, started, stepped
from rollback_operator.model import Phase, RollbackSpec, StepName, StepState
from rollback_operator.outcomes import Done, NeedsApproval
from rollback_operator.status import Status


def decide(spec: RollbackSpec, status: Status, signals: Signals) -> Decision:
    """The engine's decision for a request every step applies to."""
    return engine.decide(spec, status, signals, lambda *_: None)


T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
SPEC = RollbackSpec.parse(
    {
        "reason": "data corrupt",
        "trigger": "Manual",
        "traffic": {"ingresses": ["site"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
)


def _at(step: StepName) -> Status:
    """A run whose earlier steps are done and whose `step` has started."""
    status = Status()
    for record in status.steps:
        if record.name == step:
            break
        record.state = StepState.SUCCEEDED
    return started(status, step, SPEC, T0)


DIGEST = "0123456789abcdef"


def _awaiting(step: StepName, message: str, requested_by: str | None = "lead-larry") -> Status:
    """A run, created by `requested_by`, whose `step` has just asked for an approval of the
    subject DIGEST stands for."""
    status = _at(step)
    status.requested_by = requested_by
    return stepped(status, step, NeedsApproval(message, digest=DIGEST, subject="x"), SPEC, T0)


def test_needs_approval_moves_the_run_to_awaiting_approval_with_the_step_running() -> None:
    status = _awaiting(StepName.VERIFY, "waiting for qa")
    assert status.phase == Phase.AWAITING_APPROVAL
    assert status.record(StepName.VERIFY).state == StepState.RUNNING
    assert "waiting for qa" in status.message
    ready = {c["type"]: c for c in status.conditions}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "AwaitingApproval"


def test_an_approval_of_the_waiting_step_is_recorded_once_then_the_step_runs_again() -> None:
    waiting = _awaiting(StepName.RESTORE_DATABASE, "dba")
    signals = Signals(approval=("RestoreDatabase", "dba-alice", DIGEST))
    assert decide(SPEC, waiting, signals) == Approve(StepName.RESTORE_DATABASE, "dba-alice")
    after = approved(waiting, StepName.RESTORE_DATABASE, "dba-alice", SPEC, T0)
    record = after.record(StepName.RESTORE_DATABASE)
    assert (record.approved_by, record.approved_at) == ("dba-alice", "2026-01-10T03:00:00.000Z")
    assert after.phase == Phase.RUNNING
    assert decide(SPEC, after, signals) == Run(StepName.RESTORE_DATABASE)
    # Written to the ledger, and read back by a restarted operator.
    again = Status.from_dict(after.to_dict()).record(StepName.RESTORE_DATABASE)
    assert again.approved_by == "dba-alice"


def test_an_approval_naming_another_step_is_not_taken() -> None:
    waiting = _awaiting(StepName.RESTORE_DATABASE, "dba")
    signals = Signals(approval=("Verify", "qa-quinn", DIGEST))
    assert decide(SPEC, waiting, signals) == Run(StepName.RESTORE_DATABASE)


def test_the_requester_cannot_approve_their_own_request() -> None:
    """Four eyes, in the operator too: the admission policy refuses it first."""
    waiting = _awaiting(StepName.RESTORE_DATABASE, "dba", requested_by="dba-bob")
    signals = Signals(approval=("RestoreDatabase", "dba-bob", DIGEST))
    assert decide(SPEC, waiting, signals) == Run(StepName.RESTORE_DATABASE)
    other = Signals(approval=("RestoreDatabase", "dba-alice", DIGEST))
    assert decide(SPEC, waiting, other) == Approve(StepName.RESTORE_DATABASE, "dba-alice")


def test_an_approval_of_another_subject_is_not_taken() -> None:
    waiting = _awaiting(StepName.RESTORE_DATABASE, "dba")
    for digest in ("", "fedcba9876543210"):
        signals = Signals(approval=("RestoreDatabase", "dba-alice", digest))
        assert decide(SPEC, waiting, signals) == Run(StepName.RESTORE_DATABASE)


def test_an_approval_given_before_the_step_waits_does_not_count() -> None:
    """Given while the step runs (or before it started), the approval is not taken: the step
    has not yet said what it would do."""
    running = _at(StepName.RESTORE_DATABASE)
    running.record(StepName.RESTORE_DATABASE).approval_digest = DIGEST  # even with the digest
    signals = Signals(approval=("RestoreDatabase", "dba-alice", DIGEST))
    assert decide(SPEC, running, signals) == Run(StepName.RESTORE_DATABASE)


def test_a_voided_approval_is_dropped_and_the_step_waits_for_the_new_subject() -> None:
    waiting = _awaiting(StepName.RESTORE_DATABASE, "dba")
    after = approved(waiting, StepName.RESTORE_DATABASE, "dba-alice", SPEC, T0)
    voided = stepped(
        after,
        StepName.RESTORE_DATABASE,
        NeedsApproval("changed", digest="1111111111111111", subject="y", voided="file changed"),
        SPEC,
        T0,
    )
    record = voided.record(StepName.RESTORE_DATABASE)
    assert (record.approved_by, record.approved_at) == (None, None)
    assert (record.approval_digest, record.approval_subject) == ("1111111111111111", "y")
    assert voided.phase == Phase.AWAITING_APPROVAL
    stale = Signals(approval=("RestoreDatabase", "dba-alice", DIGEST))
    assert decide(SPEC, voided, stale) == Run(StepName.RESTORE_DATABASE)
    fresh = Signals(approval=("RestoreDatabase", "dba-alice", "1111111111111111"))
    assert decide(SPEC, voided, fresh) == Approve(StepName.RESTORE_DATABASE, "dba-alice")
    again = Status.from_dict(voided.to_dict())
    assert again.record(StepName.RESTORE_DATABASE).approval_digest == "1111111111111111"
    assert again.requested_by == "lead-larry"


def test_the_monitor_step_runs_in_phase_monitoring_and_the_next_step_in_running() -> None:
    status = _at(StepName.MONITOR)
    assert status.phase == Phase.MONITORING
    status = stepped(status, StepName.MONITOR, Done("healthy"), SPEC, T0)
    assert started(status, StepName.REPORT, SPEC, T0).phase == Phase.RUNNING


def test_maintenance_switched_back_on_by_the_watch_shows_in_the_conditions() -> None:
    status = _at(StepName.MONITOR)
    status.saved = {"ingresses": {"site": {"backends": []}}}
    status.record(StepName.DISABLE_MAINTENANCE).state = StepState.SUCCEEDED
    before = {
        c["type"]: c for c in stepped(status, StepName.MONITOR, Done("x"), SPEC, T0).conditions
    }
    assert before["MaintenanceActive"]["status"] == "False"
    status.sections["monitoring"] = {"maintenanceOn": True}
    after = {
        c["type"]: c for c in stepped(status, StepName.MONITOR, Done("x"), SPEC, T0).conditions
    }
    assert after["MaintenanceActive"]["status"] == "True"
