"""The engine, transition by transition, and whole runs walked through it.

The engine is the only place where the run's state changes, and the status it returns is all
a restarted operator has to resume from: each transition is pinned down here, then whole runs
(happy, failing at each step, aborted, queued, resumed after a crash) are walked through
`decide` and the transitions exactly as the runner does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollback_operator import engine
from rollback_operator.clock import stamp
from rollback_operator.engine import (
    Abort,
    Complete,
    Decision,
    Idle,
    Queue,
    Run,
    Signals,
    Skip,
    aborted,
    completed,
    queued,
    skipped,
    started,
    stepped,
)
from rollback_operator.model import STEP_ORDER, Phase, RollbackSpec, StepName, StepState, Targets
from rollback_operator.outcomes import Done, Fail, Outcome, Wait
from rollback_operator.status import Status, StepRecord

T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)

TARGETS = Targets(("site",), ("backend", "frontend"), ("backend",))
NO_HPAS = Targets(("site",), ("backend", "frontend"), ())

# The steps every request runs, and those that run only when their spec section is present
# (the requests here have none of them).
IMPLEMENTED = [
    StepName.PREFLIGHT,
    StepName.ENABLE_MAINTENANCE,
    StepName.PAUSE_AUTOSCALING,
    StepName.REVERT_WORKLOADS,
    StepName.VERIFY,
    StepName.RESUME_AUTOSCALING,
    StepName.DISABLE_MAINTENANCE,
    StepName.REPORT,
]
OPTIONAL = [
    StepName.PURGE_CDN,
    StepName.MIGRATE_DATABASE_DOWN,
    StepName.RESTORE_DATABASE,
    StepName.MONITOR,
]


# What the steps answer, for the requests here, when asked whether they apply: the engine is
# handed these answers (tests/unit/test_registry.py holds the registry's real ones to them).
NOT_CONFIGURED = {
    StepName.PURGE_CDN: "no spec.cdn",
    StepName.MIGRATE_DATABASE_DOWN: "no spec.database.migrateDown",
    StepName.RESTORE_DATABASE: "no spec.database.restore",
    StepName.MONITOR: "no spec.monitoring",
}
NO_HPA = {
    StepName.PAUSE_AUTOSCALING: "no HorizontalPodAutoscaler scales the listed Deployments",
    StepName.RESUME_AUTOSCALING: "no HorizontalPodAutoscaler was paused",
}


def skips(step: StepName, spec: RollbackSpec, targets: Targets | None) -> str | None:
    """Whether a step applies to the requests here (none has an optional section)."""
    if step in NOT_CONFIGURED:
        return NOT_CONFIGURED[step]
    if targets is not None and not targets.hpas:
        return NO_HPA.get(step)
    return None


def decide(spec: RollbackSpec, status: Status, signals: Signals) -> Decision:
    """The engine's decision, given the steps' answers above."""
    return engine.decide(spec, status, signals, skips)


def skip_reason(step: StepName) -> str:
    """Why `step` is skipped for these requests, as the step says."""
    reason = skips(step, SPEC, TARGETS)
    assert reason is not None
    return reason


NON_TERMINAL = [p for p in Phase if not p.terminal]
TERMINAL = [p for p in Phase if p.terminal]


def make_spec(*, dry_run: bool = False, hpas: list[str] | None = None) -> RollbackSpec:
    raw: dict[str, Any] = {
        "reason": "Error rate 7.2 % for 15 min after go-live",
        "trigger": "ErrorRate",
        "dryRun": dry_run,
        "traffic": {
            "ingresses": ["site"],
            "maintenanceBackend": {"service": "maintenance-page", "port": 80},
        },
        "workloads": [{"deployment": "backend", "containers": ["api"]}, {"deployment": "frontend"}],
    }
    if hpas is not None:
        raw["autoscaling"] = {"hpas": hpas}
    return RollbackSpec.parse(raw)


SPEC = make_spec()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def condition(status: Status, kind: str) -> dict[str, Any]:
    return next(c for c in status.conditions if c["type"] == kind)


def flags(status: Status) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.conditions}


def states(status: Status) -> list[tuple[str, str]]:
    return [(str(r.name), str(r.state)) for r in status.steps]


def save_as_the_step_would(status: Status, step: StepName, targets: Targets) -> None:
    """What EnableMaintenance and PauseAutoscaling record in status.saved before they change
    anything: the conditions and the abort message read the site's state from it."""
    if step == StepName.ENABLE_MAINTENANCE:
        for name in targets.ingresses:
            status.saved.setdefault("ingresses", {})[name] = {"backends": []}
    elif step == StepName.PAUSE_AUTOSCALING:
        for name in targets.hpas:
            status.saved.setdefault("hpas", {})[name] = {"minReplicas": 1, "maxReplicas": 3}


def status_after(
    finished: list[StepName],
    *,
    running: StepName | None = None,
    targets: Targets | None = None,
) -> Status:
    """A Running status whose listed steps are Succeeded."""
    status = Status(phase=Phase.RUNNING, started_at=stamp(T0), targets=targets or TARGETS)
    for name in finished:
        record = status.record(name)
        record.state = StepState.SUCCEEDED
        record.started_at = record.finished_at = stamp(T0)
        status.step = name
        save_as_the_step_would(status, name, status.targets or TARGETS)
    if running is not None:
        record = status.record(running)
        record.state, record.started_at, record.attempts = StepState.RUNNING, stamp(T0), 1
        status.step = running
    return status


def before(step: StepName) -> list[StepName]:
    return list(STEP_ORDER[: STEP_ORDER.index(step)])


# --- decide


def test_a_fresh_request_runs_preflight() -> None:
    """Preflight is first, always: nothing may change before every reference is checked."""
    assert decide(SPEC, Status(), Signals()) == Run(StepName.PREFLIGHT)


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.QUEUED])
def test_a_request_not_started_waits_for_its_blocker(phase: Phase) -> None:
    """Safety rule 5: a second request touching the same objects waits in Queued."""
    assert decide(SPEC, Status(phase=phase), Signals(blocker="first")) == Queue("first")


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.AWAITING_APPROVAL, Phase.MONITORING])
def test_a_started_run_is_never_queued(phase: Phase) -> None:
    """Stopping a started run halfway (site on the maintenance page) to let another one in
    would leave two half-done runs on the same objects."""
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    status.phase = phase
    assert decide(SPEC, status, Signals(blocker="other")) == Run(StepName.REVERT_WORKLOADS)


@pytest.mark.parametrize("phase", NON_TERMINAL)
def test_abort_wins_in_every_non_terminal_phase(phase: Phase) -> None:
    """The abort annotation stops the run wherever it is, queued or not."""
    status = Status(phase=phase)
    assert decide(SPEC, status, Signals(abort=True)) == Abort()
    assert decide(SPEC, status, Signals(abort=True, blocker="other")) == Abort()


@pytest.mark.parametrize("phase", TERMINAL)
def test_a_terminal_request_is_idle_whatever_it_observes(phase: Phase) -> None:
    """A finished run never starts again: not on abort, not when a blocker shows up."""
    status = Status(phase=phase)
    assert decide(SPEC, status, Signals()) == Idle()
    assert decide(SPEC, status, Signals(abort=True, blocker="other")) == Idle()


@pytest.mark.parametrize("step", OPTIONAL)
def test_steps_whose_section_is_absent_are_skipped_with_their_reason(step: StepName) -> None:
    """A step that does not apply is Skipped with a reason, never absent from the ledger."""
    reason = skip_reason(step)
    assert reason.startswith("no spec.")
    assert decide(SPEC, status_after(before(step)), Signals()) == Skip(step, reason)


@pytest.mark.parametrize("step", IMPLEMENTED)
def test_implemented_steps_run_in_turn(step: StepName) -> None:
    """Each implemented step runs when the ones before it are finished."""
    assert decide(SPEC, status_after(before(step)), Signals()) == Run(step)


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (StepName.PAUSE_AUTOSCALING, "no HorizontalPodAutoscaler scales the listed Deployments"),
        (StepName.RESUME_AUTOSCALING, "no HorizontalPodAutoscaler was paused"),
    ],
)
def test_autoscaling_steps_are_skipped_when_no_hpa_was_found(step: StepName, reason: str) -> None:
    """No HPA scales the Deployments: there is nothing to freeze, and the ledger says so."""
    status = status_after(before(step), targets=NO_HPAS)
    assert decide(SPEC, status, Signals()) == Skip(step, reason)
    with_hpas = status_after(before(step), targets=TARGETS)
    assert decide(SPEC, with_hpas, Signals()) == Run(step)


def test_a_step_already_running_is_resumed_not_skipped() -> None:
    """After a restart the running step is run again to converge, even if it now looks skippable:
    it may have changed something already."""
    status = status_after(
        before(StepName.PAUSE_AUTOSCALING), running=StepName.PAUSE_AUTOSCALING, targets=NO_HPAS
    )
    assert decide(SPEC, status, Signals()) == Run(StepName.PAUSE_AUTOSCALING)


def test_when_every_step_is_finished_the_run_completes() -> None:
    """Succeeded and Skipped both count as finished."""
    status = status_after(list(STEP_ORDER))
    assert decide(SPEC, status, Signals()) == Complete()


# --- transitions


def test_queued_records_whom_it_waits_for() -> None:
    """`kubectl get rbr` must say why nothing happens: the phase, the blocker and a message."""
    fresh = Status(observed_generation=1)
    new = queued(fresh, "golive-first", SPEC, T0)
    assert new.phase == Phase.QUEUED
    assert new.queued_behind == "golive-first"
    assert new.message == (
        "waiting for RollbackRequest golive-first, which touches the same objects, to finish"
    )
    assert new.started_at is None
    assert states(new) == states(fresh)
    assert flags(new) == {
        "Ready": "False",
        "Progressing": "True",
        "Reconciling": "True",
        "Stalled": "False",
        "Complete": "False",
        "Failed": "False",
        "MaintenanceActive": "False",
        "AutoscalingPaused": "False",
    }
    assert condition(new, "Progressing")["reason"] == "Queued"
    assert condition(new, "Progressing")["message"] == "starting"
    assert fresh.phase == Phase.PENDING and fresh.conditions == [], "input must not change"


def test_started_on_a_fresh_request_starts_the_run_and_the_step() -> None:
    """Leaving Pending/Queued stamps the run's start and forgets whom it waited for."""
    waiting = queued(Status(), "first", SPEC, T0)
    new = started(waiting, StepName.PREFLIGHT, SPEC, at(5))
    assert new.phase == Phase.RUNNING
    assert new.started_at == stamp(at(5))
    assert new.queued_behind is None
    assert new.step == StepName.PREFLIGHT
    assert new.message == "Preflight: running"
    record = new.record(StepName.PREFLIGHT)
    assert (record.state, record.started_at, record.attempts) == (
        StepState.RUNNING,
        stamp(at(5)),
        1,
    )
    assert condition(new, "Progressing")["message"] == "step Preflight"
    assert waiting.phase == Phase.QUEUED, "input must not change"


def test_started_on_a_running_step_is_the_resume_point() -> None:
    """After a restart the step is tried again: one more attempt, but its start time (the base
    of rolloutTimeout and of the restart annotation) must not move."""
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    status.record(StepName.REVERT_WORKLOADS).started_at = stamp(at(10))
    new = started(status, StepName.REVERT_WORKLOADS, SPEC, at(100))
    record = new.record(StepName.REVERT_WORKLOADS)
    assert record.state == StepState.RUNNING
    assert record.started_at == stamp(at(10))
    assert record.attempts == 2
    assert new.started_at == status.started_at, "the run's start must not move either"
    assert status.record(StepName.REVERT_WORKLOADS).attempts == 1, "input must not change"


def test_skipped_marks_the_step_with_its_reason() -> None:
    """A Skipped step is finished and says why."""
    status = status_after(before(StepName.PURGE_CDN))
    new = skipped(status, StepName.PURGE_CDN, "no spec.cdn", SPEC, at(3))
    record = new.record(StepName.PURGE_CDN)
    assert (record.state, record.message, record.finished_at) == (
        StepState.SKIPPED,
        "no spec.cdn",
        stamp(at(3)),
    )
    assert record.attempts == 0
    assert new.step == StepName.PURGE_CDN
    assert status.record(StepName.PURGE_CDN).state == StepState.PENDING, "input must not change"


def test_stepped_done_finishes_the_step() -> None:
    """Done: Succeeded, with the step's own message in the ledger and in the summary."""
    status = started(Status(), StepName.PREFLIGHT, SPEC, T0)
    new = stepped(status, StepName.PREFLIGHT, Done("found everything"), SPEC, at(2))
    record = new.record(StepName.PREFLIGHT)
    assert (record.state, record.finished_at, record.message) == (
        StepState.SUCCEEDED,
        stamp(at(2)),
        "found everything",
    )
    assert new.phase == Phase.RUNNING
    assert new.message == "Preflight: found everything"
    assert new.finished_at is None


def test_stepped_wait_keeps_the_step_running() -> None:
    """Wait: still Running, no finish time, and the message tells what it waits for."""
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    new = stepped(status, StepName.REVERT_WORKLOADS, Wait("rolling out: 1/3"), SPEC, at(2))
    record = new.record(StepName.REVERT_WORKLOADS)
    assert (record.state, record.finished_at, record.message) == (
        StepState.RUNNING,
        None,
        "rolling out: 1/3",
    )
    assert new.phase == Phase.RUNNING
    assert new.message == "RevertWorkloads: rolling out: 1/3"


def test_stepped_fail_stops_the_run() -> None:
    """Safety rule 4: a failing step makes the run Failed, finished, with the step's reason."""
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    new = stepped(status, StepName.REVERT_WORKLOADS, Fail("rollout timed out"), SPEC, at(9))
    record = new.record(StepName.REVERT_WORKLOADS)
    assert (record.state, record.finished_at, record.message) == (
        StepState.FAILED,
        stamp(at(9)),
        "rollout timed out",
    )
    assert new.phase == Phase.FAILED
    assert new.finished_at == stamp(at(9))
    assert new.message == "RevertWorkloads failed: rollout timed out"
    assert decide(SPEC, new, Signals()) == Idle()
    assert flags(new) == {
        "Ready": "False",
        "Progressing": "False",
        "Reconciling": "False",
        "Stalled": "True",
        "Complete": "False",
        "Failed": "True",
        "MaintenanceActive": "True",
        "AutoscalingPaused": "True",
    }
    assert condition(new, "Ready")["reason"] == "Failed"
    assert condition(new, "Ready")["message"] == new.message


@dataclass
class AbortCase:
    finished: list[StepName]
    running: StepName | None
    still_on: bool
    frozen: bool


ABORT_CASES = {
    "before anything": AbortCase([], None, still_on=False, frozen=False),
    "during Preflight": AbortCase([], StepName.PREFLIGHT, still_on=False, frozen=False),
    "during EnableMaintenance": AbortCase(
        before(StepName.ENABLE_MAINTENANCE),
        StepName.ENABLE_MAINTENANCE,
        still_on=False,
        frozen=False,
    ),
    "during PauseAutoscaling": AbortCase(
        before(StepName.PAUSE_AUTOSCALING),
        StepName.PAUSE_AUTOSCALING,
        still_on=True,
        frozen=False,
    ),
    "during RevertWorkloads": AbortCase(
        before(StepName.REVERT_WORKLOADS), StepName.REVERT_WORKLOADS, still_on=True, frozen=True
    ),
    "during Verify": AbortCase(
        before(StepName.VERIFY), StepName.VERIFY, still_on=True, frozen=True
    ),
    "during ResumeAutoscaling": AbortCase(
        before(StepName.RESUME_AUTOSCALING),
        StepName.RESUME_AUTOSCALING,
        still_on=True,
        frozen=True,
    ),
    "during DisableMaintenance": AbortCase(
        before(StepName.DISABLE_MAINTENANCE),
        StepName.DISABLE_MAINTENANCE,
        still_on=True,
        frozen=False,
    ),
    "after DisableMaintenance": AbortCase(
        before(StepName.MONITOR), None, still_on=False, frozen=False
    ),
}


@pytest.mark.parametrize("case", list(ABORT_CASES))
def test_aborted_says_what_is_left_as_it_is(case: str) -> None:
    """Aborting undoes nothing, so the message must tell the SRE whether the site is still on
    the maintenance page (EnableMaintenance done, DisableMaintenance not) and the HPAs frozen."""
    spec = ABORT_CASES[case]
    status = status_after(spec.finished, running=spec.running)
    new = aborted(status, SPEC, at(7))
    assert new.phase == Phase.ABORTED
    assert new.finished_at == stamp(at(7))
    assert decide(SPEC, new, Signals(abort=True)) == Idle()
    current = spec.running or STEP_ORDER[len(spec.finished)]
    assert new.message.startswith("Aborted")
    if spec.running is not None:
        assert new.message.startswith(f"Aborted during {spec.running}. ")
    assert ("The maintenance page is still on (Ingress site)." in new.message) is spec.still_on
    assert ("The HPAs backend are still frozen." in new.message) is spec.frozen
    if not spec.still_on and StepName.DISABLE_MAINTENANCE in spec.finished:
        assert new.message.endswith("Traffic is back on the application: nothing to restore.")
    elif not spec.still_on:
        assert new.message.endswith("Traffic was not switched: nothing to restore.")
    else:
        assert "status.saved" in new.message
    if spec.running is not None:
        record = new.record(spec.running)
        assert (record.state, record.finished_at) == (StepState.ABORTED, stamp(at(7)))
        assert record.message == "aborted at the request of the abort annotation"
    else:
        assert new.record(current).state == StepState.PENDING, "a step not begun is not Aborted"
    later = STEP_ORDER[STEP_ORDER.index(current) + 1 :]
    assert all(new.record(n).state == StepState.PENDING for n in later)
    assert flags(new)["MaintenanceActive"] == ("True" if spec.still_on else "False")
    assert flags(new)["AutoscalingPaused"] == ("True" if spec.frozen else "False")
    assert flags(new)["Ready"] == flags(new)["Progressing"] == "False"
    assert condition(new, "Ready")["reason"] == "Aborted"


def test_completed_summarises_the_run() -> None:
    """The summary names what was rolled back, to which tag, and how long it took."""
    status = status_after(list(STEP_ORDER))
    new = completed(status, SPEC, at(42))
    assert new.phase == Phase.SUCCEEDED
    assert new.finished_at == stamp(at(42))
    assert new.step == StepName.REPORT
    assert new.message == (
        "Rolled back backend, frontend to stable-last-known in 42.0s; traffic restored"
    )
    assert flags(new) == {
        "Ready": "True",
        "Progressing": "False",
        "Reconciling": "False",
        "Stalled": "False",
        "Complete": "True",
        "Failed": "False",
        "MaintenanceActive": "False",
        "AutoscalingPaused": "False",
    }
    assert condition(new, "Ready")["reason"] == "Succeeded"


def test_completed_dry_run_says_nothing_was_changed() -> None:
    """A dry run must never read like a rollback that happened."""
    spec = make_spec(dry_run=True)
    new = completed(status_after(list(STEP_ORDER)), spec, at(3))
    assert new.phase == Phase.SUCCEEDED
    assert new.message == (
        "Dry run completed in 3.0s: each step's message says what it would change; "
        "nothing was changed"
    )
    assert flags(new) == {
        "Ready": "True",
        "Progressing": "False",
        "Reconciling": "False",
        "Stalled": "False",
        "Complete": "True",
        "Failed": "False",
        "MaintenanceActive": "False",
        "AutoscalingPaused": "False",
        "DryRun": "True",
    }


def test_conditions_have_the_metav1_shape() -> None:
    """`kubectl wait --for=condition=Ready` and the CRD schema need every field, at second
    precision, and the generation the operator acted on."""
    status = Status(observed_generation=3)
    new = started(status, StepName.PREFLIGHT, SPEC, datetime(2026, 1, 10, 3, 0, 1, 250000, UTC))
    for c in new.conditions:
        assert set(c) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        assert c["status"] in ("True", "False")
        assert c["lastTransitionTime"] == "2026-01-10T03:00:01Z"
        assert c["observedGeneration"] == 3
        assert len(c["message"]) <= 1024
    assert [c["type"] for c in new.conditions] == [
        "Ready",
        "Progressing",
        "Reconciling",
        "Stalled",
        "Complete",
        "Failed",
        "MaintenanceActive",
        "AutoscalingPaused",
    ]


def test_ready_message_is_cut_to_the_condition_limit() -> None:
    """A long failure message must not make the status write fail validation."""
    status = started(Status(), StepName.PREFLIGHT, SPEC, T0)
    new = stepped(status, StepName.PREFLIGHT, Fail("x" * 5000), SPEC, at(1))
    assert len(condition(new, "Ready")["message"]) == 1024


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    """A condition's lastTransitionTime is when its status last changed, not the last write:
    `kubectl describe` shows how long the site has been on the maintenance page."""
    s1 = started(Status(), StepName.PREFLIGHT, SPEC, at(0))
    s2 = stepped(s1, StepName.PREFLIGHT, Done("ok"), SPEC, at(10))
    s3 = started(s2, StepName.ENABLE_MAINTENANCE, SPEC, at(20))
    save_as_the_step_would(s3, StepName.ENABLE_MAINTENANCE, TARGETS)
    s4 = stepped(s3, StepName.ENABLE_MAINTENANCE, Done("switched"), SPEC, at(30))
    s5 = started(s4, StepName.PAUSE_AUTOSCALING, SPEC, at(40))
    assert condition(s5, "Ready")["lastTransitionTime"] == "2026-01-10T03:00:00Z"
    assert condition(s5, "Progressing")["lastTransitionTime"] == "2026-01-10T03:00:00Z"
    assert condition(s5, "MaintenanceActive")["lastTransitionTime"] == "2026-01-10T03:00:30Z"
    assert condition(s5, "MaintenanceActive")["status"] == "True"
    assert condition(s5, "Progressing")["message"] == "step PauseAutoscaling"
    s6 = stepped(s5, StepName.PAUSE_AUTOSCALING, Fail("gone"), SPEC, at(50))
    assert condition(s6, "Progressing")["lastTransitionTime"] == "2026-01-10T03:00:50Z"
    assert condition(s6, "Ready")["lastTransitionTime"] == "2026-01-10T03:00:00Z"
    assert condition(s6, "Ready")["reason"] == "Failed"


def test_dry_run_condition_is_true_from_the_first_transition() -> None:
    """A dry run is visible as such from the start, and never reports the site as switched."""
    spec = make_spec(dry_run=True)
    new = queued(Status(), "other", spec, T0)
    assert condition(new, "DryRun") == {
        "type": "DryRun",
        "status": "True",
        "reason": "DryRun",
        "message": "dry run: nothing is changed",
        "lastTransitionTime": "2026-01-10T03:00:00Z",
        "observedGeneration": 0,
    }
    planned = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    new = started(planned, StepName.REVERT_WORKLOADS, spec, T0)
    assert flags(new)["MaintenanceActive"] == flags(new)["AutoscalingPaused"] == "False"


def test_a_live_run_has_no_dry_run_condition() -> None:
    """Only requests with spec.dryRun carry the DryRun condition."""
    new = started(Status(), StepName.PREFLIGHT, SPEC, T0)
    assert "DryRun" not in flags(new)


# --- Status to and from the object


def mid_run_status() -> Status:
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    status.observed_generation = 1
    status.message = "RevertWorkloads: rolling out"
    status.record(StepName.REVERT_WORKLOADS).message = "rolling out: backend 1/3"
    status.record(StepName.PURGE_CDN).message = "not configured"
    status.saved = {
        "ingresses": {
            "site": {
                "backends": [
                    {
                        "location": {"rule": 0, "path": 0, "host": "", "pathValue": "/"},
                        "backend": {"service": {"name": "frontend", "port": {"name": "http"}}},
                    }
                ]
            }
        },
        "hpas": {"backend": {"minReplicas": 3, "maxReplicas": 12, "behavior": None}},
    }
    return started(status, StepName.REVERT_WORKLOADS, SPEC, at(5))


def drop_nulls(value: Any) -> Any:
    """What the API server stores from a merge patch: a null means "remove the field"."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(
    "status",
    [Status(), mid_run_status(), completed(status_after(list(STEP_ORDER)), SPEC, at(60))],
    ids=["fresh", "mid-run", "succeeded"],
)
def test_status_round_trips_through_the_object(status: Status) -> None:
    """A restarted operator knows only what it wrote: reading it back must give the same run."""
    assert Status.from_dict(status.to_dict()) == status


def test_status_round_trips_when_read_back_without_nulls() -> None:
    """The API server drops the explicit nulls; the status read back must still be the same,
    except for the HPA behavior saved as null, which is read back as absent."""
    status = mid_run_status()
    raw = status.to_dict()
    stored = drop_nulls(raw)
    assert "finishedAt" not in stored and "queuedBehind" not in stored
    back = Status.from_dict(stored)
    expected = status.copy()
    expected.saved["hpas"]["backend"] = {"minReplicas": 3, "maxReplicas": 12}
    assert back == expected
    assert back.saved["hpas"]["backend"].get("behavior") is None


def test_to_dict_writes_explicit_nulls_so_a_merge_patch_clears_them() -> None:
    """A queuedBehind left over from the queue, or a step from a previous write, must be
    cleared on the object, and a merge patch clears only what it sends as null."""
    raw = Status().to_dict()
    for key in ("step", "targets", "queuedBehind", "observedGeneration", "startedAt"):
        assert key in raw and raw[key] is None
    assert raw["finishedAt"] is None
    assert raw["phase"] == "Pending"
    assert [s["name"] for s in raw["steps"]] == [str(n) for n in STEP_ORDER]
    assert raw["steps"][0] == {"name": "Preflight", "state": "Pending", "attempts": 0}


def test_to_dict_does_not_alias_the_status() -> None:
    """The dict is sent while the runner keeps changing its Status."""
    status = mid_run_status()
    raw = status.to_dict()
    raw["saved"]["hpas"]["backend"]["maxReplicas"] = 99
    raw["conditions"][0]["status"] = "Unknown"
    assert status.saved["hpas"]["backend"]["maxReplicas"] == 12
    assert status.conditions[0]["status"] == "False"


@pytest.mark.parametrize("raw", [None, {}, {"observedGeneration": 1}, {"saved": {}}])
def test_a_request_without_a_ledger_starts_fresh(raw: dict[str, Any] | None) -> None:
    """A brand-new request has no status, or only what was written before the first ledger."""
    assert Status.from_dict(raw) == Status()


def test_from_dict_puts_the_ledger_in_runbook_order() -> None:
    """The ledger is keyed by name: entries stored out of order or missing still give the
    steps in runbook order, missing ones Pending."""
    raw = {
        "phase": "Running",
        "steps": [
            {"name": "EnableMaintenance", "state": "Running", "attempts": 2},
            {"name": "Preflight", "state": "Succeeded", "attempts": 1, "message": "ok"},
        ],
    }
    status = Status.from_dict(raw)
    assert [r.name for r in status.steps] == list(STEP_ORDER)
    assert status.steps[0] == StepRecord(
        StepName.PREFLIGHT, StepState.SUCCEEDED, None, None, "ok", 1
    )
    assert status.record(StepName.ENABLE_MAINTENANCE).attempts == 2
    assert all(r.state == StepState.PENDING for r in status.steps[1:] if r.attempts == 0)
    assert decide(SPEC, status, Signals()) == Run(StepName.SUSPEND_GITOPS)


def test_from_dict_does_not_alias_the_raw_object() -> None:
    """Kopf's body must not change when the runner updates what it saved."""
    raw = mid_run_status().to_dict()
    status = Status.from_dict(raw)
    status.saved["hpas"]["backend"]["maxReplicas"] = 99
    assert raw["saved"]["hpas"]["backend"]["maxReplicas"] == 12


# --- whole runs


@dataclass
class Walk:
    """Drives a request as the runner does: decide, act, record, until nothing is left to do."""

    spec: RollbackSpec = SPEC
    targets: Targets = TARGETS
    outcome: Callable[[StepName, int], Outcome] = lambda step, n: Done(f"{step} done")
    signals: Callable[[Status], Signals] = lambda status: Signals()
    seconds: int = 0
    decisions: list[Decision] = field(default_factory=list)
    snapshots: list[Status] = field(default_factory=list)

    def now(self) -> datetime:
        self.seconds += 1
        return at(self.seconds)

    def run(self, status: Status, limit: int = 100) -> Status:
        for _ in range(limit):
            decision = decide(self.spec, status, self.signals(status))
            self.decisions.append(decision)
            if isinstance(decision, Idle | Queue):
                if isinstance(decision, Queue):
                    status = queued(status, decision.blocker, self.spec, self.now())
                    self.snapshots.append(status)
                return status
            if isinstance(decision, Skip):
                status = skipped(status, decision.step, decision.reason, self.spec, self.now())
            elif isinstance(decision, Run):
                status = self.step(status, decision.step)
            elif isinstance(decision, Complete):
                status = completed(status, self.spec, self.now())
            elif isinstance(decision, Abort):
                status = aborted(status, self.spec, self.now())
            self.snapshots.append(status)
        raise AssertionError(f"no terminal phase after {limit} decisions: {self.decisions}")

    def step(self, status: Status, step: StepName) -> Status:
        if status.record(step).state != StepState.RUNNING:
            status = started(status, step, self.spec, self.now())
            self.snapshots.append(status)
        attempt = sum(1 for d in self.decisions if d == Run(step))
        outcome = self.outcome(step, attempt)
        if step == StepName.PREFLIGHT and isinstance(outcome, Done):
            status.targets = self.targets  # what Preflight records through the ledger
        if not self.spec.dry_run and status.targets:
            save_as_the_step_would(status, step, status.targets)
        return stepped(status, step, outcome, self.spec, self.now())


EXPECTED_HAPPY_LEDGER = [
    ("Preflight", "Succeeded"),
    ("SuspendGitOps", "Succeeded"),
    ("EnableMaintenance", "Succeeded"),
    ("PauseAutoscaling", "Succeeded"),
    ("RevertWorkloads", "Succeeded"),
    ("PurgeCDN", "Skipped"),
    ("MigrateDatabaseDown", "Skipped"),
    ("RestoreDatabase", "Skipped"),
    ("Verify", "Succeeded"),
    ("ResumeAutoscaling", "Succeeded"),
    ("DisableMaintenance", "Succeeded"),
    ("Monitor", "Skipped"),
    ("Report", "Succeeded"),
]


def test_a_happy_run_succeeds_with_every_step_in_order() -> None:
    """The whole runbook: each implemented step once, the others Skipped, then Succeeded."""
    walk = Walk()
    final = walk.run(Status(observed_generation=1))
    assert final.phase == Phase.SUCCEEDED
    assert states(final) == EXPECTED_HAPPY_LEDGER
    assert walk.decisions == [
        Run(StepName.PREFLIGHT),
        Run(StepName.SUSPEND_GITOPS),
        Run(StepName.ENABLE_MAINTENANCE),
        Run(StepName.PAUSE_AUTOSCALING),
        Run(StepName.REVERT_WORKLOADS),
        Skip(StepName.PURGE_CDN, skip_reason(StepName.PURGE_CDN)),
        Skip(StepName.MIGRATE_DATABASE_DOWN, skip_reason(StepName.MIGRATE_DATABASE_DOWN)),
        Skip(StepName.RESTORE_DATABASE, skip_reason(StepName.RESTORE_DATABASE)),
        Run(StepName.VERIFY),
        Run(StepName.RESUME_AUTOSCALING),
        Run(StepName.DISABLE_MAINTENANCE),
        Skip(StepName.MONITOR, skip_reason(StepName.MONITOR)),
        Run(StepName.REPORT),
        Complete(),
        Idle(),
    ]
    finished = [r.finished_at or "" for r in final.steps]
    assert all(finished) and finished == sorted(finished), "steps finish in runbook order"
    assert all(r.attempts == (0 if r.name in OPTIONAL else 1) for r in final.steps)
    assert final.started_at == stamp(at(1))
    assert final.finished_at is not None and final.finished_at > final.started_at
    assert final.message.startswith("Rolled back backend, frontend to stable-last-known in ")
    assert flags(final)["Ready"] == "True"


def test_conditions_follow_the_site_through_a_happy_run() -> None:
    """MaintenanceActive and AutoscalingPaused are True exactly while the site is switched and
    the HPAs frozen; Progressing until the end; Ready only at the end."""
    walk = Walk()
    walk.run(Status())
    kinds = ("Ready", "Progressing", "MaintenanceActive", "AutoscalingPaused")
    # The conditions after the last transition made while each step was the current one.
    expected_by_step = {
        status.step: tuple(flags(status)[k] for k in kinds) for status in walk.snapshots
    }
    assert expected_by_step[StepName.PREFLIGHT] == ("False", "True", "False", "False")
    assert expected_by_step[StepName.ENABLE_MAINTENANCE] == ("False", "True", "True", "False")
    assert expected_by_step[StepName.PAUSE_AUTOSCALING] == ("False", "True", "True", "True")
    assert expected_by_step[StepName.VERIFY] == ("False", "True", "True", "True")
    assert expected_by_step[StepName.RESUME_AUTOSCALING] == ("False", "True", "True", "False")
    assert expected_by_step[StepName.DISABLE_MAINTENANCE] == ("False", "True", "False", "False")
    assert expected_by_step[StepName.REPORT] == ("True", "False", "False", "False")
    started_enable = next(
        s
        for s in walk.snapshots
        if s.record(StepName.ENABLE_MAINTENANCE).state == StepState.RUNNING
    )
    assert flags(started_enable)["MaintenanceActive"] == "False", "not before the step is done"


def test_a_run_without_hpas_skips_both_autoscaling_steps() -> None:
    """No HPA found by Preflight: nothing is frozen, and the ledger says why."""
    walk = Walk(targets=NO_HPAS)
    final = walk.run(Status())
    assert final.phase == Phase.SUCCEEDED
    assert final.record(StepName.PAUSE_AUTOSCALING).state == StepState.SKIPPED
    assert final.record(StepName.RESUME_AUTOSCALING).state == StepState.SKIPPED
    assert final.record(StepName.PAUSE_AUTOSCALING).message == (
        "no HorizontalPodAutoscaler scales the listed Deployments"
    )
    assert all(flags(s)["AutoscalingPaused"] == "False" for s in walk.snapshots)


def test_waits_keep_the_step_running_without_new_attempts() -> None:
    """A rollout that takes a while is one attempt that waits, not many restarts."""

    def outcome(step: StepName, attempt: int) -> Outcome:
        if step == StepName.REVERT_WORKLOADS and attempt < 3:
            return Wait(f"rolling out ({attempt})")
        return Done("ok")

    walk = Walk(outcome=outcome)
    final = walk.run(Status())
    assert final.phase == Phase.SUCCEEDED
    assert walk.decisions.count(Run(StepName.REVERT_WORKLOADS)) == 3
    record = final.record(StepName.REVERT_WORKLOADS)
    assert (record.attempts, record.message) == (1, "ok")


def test_a_run_resumed_from_the_object_after_a_crash_ends_the_same() -> None:
    """Safety rule 6: the status read back is enough to finish the run; the interrupted step is
    attempted once more, keeping its start time, and no finished step runs again."""

    def outcome(step: StepName, attempt: int) -> Outcome:
        return Wait("rolling out") if step == StepName.REVERT_WORKLOADS else Done("ok")

    first = Walk(outcome=outcome)
    with pytest.raises(AssertionError, match="no terminal phase"):
        first.run(Status(), limit=10)
    interrupted = first.snapshots[-1]
    assert interrupted.record(StepName.REVERT_WORKLOADS).state == StepState.RUNNING
    began = interrupted.record(StepName.REVERT_WORKLOADS).started_at

    stored = drop_nulls(interrupted.to_dict())
    second = Walk()
    final = second.run(Status.from_dict(stored))
    # The runner marks the resume with `started` once before running the step again.
    resumed = started(Status.from_dict(stored), StepName.REVERT_WORKLOADS, SPEC, at(99)).record(
        StepName.REVERT_WORKLOADS
    )
    assert (resumed.started_at, resumed.attempts) == (began, 2)

    assert final.phase == Phase.SUCCEEDED
    assert states(final) == EXPECTED_HAPPY_LEDGER
    assert StepName.PREFLIGHT not in [d.step for d in second.decisions if isinstance(d, Run)]
    assert second.decisions[0] == Run(StepName.REVERT_WORKLOADS)
    assert final.record(StepName.REVERT_WORKLOADS).started_at == began


@pytest.mark.parametrize("failing", IMPLEMENTED)
def test_a_failure_at_each_step_leaves_the_right_ledger(failing: StepName) -> None:
    """Whichever step fails, the ledger shows what was done, the failed step, and that nothing
    after it ran; the conditions say whether the site is still on the maintenance page."""

    def outcome(step: StepName, attempt: int) -> Outcome:
        return Fail("boom") if step == failing else Done("ok")

    walk = Walk(outcome=outcome)
    final = walk.run(Status())
    assert final.phase == Phase.FAILED
    assert final.message == f"{failing} failed: boom"
    assert final.finished_at is not None
    assert walk.decisions[-1] == Idle()
    index = STEP_ORDER.index(failing)
    expected = list(EXPECTED_HAPPY_LEDGER[:index])
    expected.append((str(failing), "Failed"))
    expected += [(str(n), "Pending") for n in STEP_ORDER[index + 1 :]]
    assert states(final) == expected
    assert all(final.record(n).started_at is None for n in STEP_ORDER[index + 1 :])
    # A step that failed may have changed part of the site (it saves before each change), so
    # the conditions count it as changed: the safe side for an SRE reading them.
    reached = {n for n, s in states(final) if s in ("Succeeded", "Failed")}
    done = {n for n, s in states(final) if s == "Succeeded"}
    on = "EnableMaintenance" in reached and "DisableMaintenance" not in done
    frozen = "PauseAutoscaling" in reached and "ResumeAutoscaling" not in done
    assert flags(final) == {
        "Ready": "False",
        "Progressing": "False",
        "Reconciling": "False",
        "Stalled": "True",
        "Complete": "False",
        "Failed": "True",
        "MaintenanceActive": "True" if on else "False",
        "AutoscalingPaused": "True" if frozen else "False",
    }


def test_a_dry_run_walks_every_step_and_changes_nothing_visible() -> None:
    """A dry run goes through the same ledger, and never reports the site as switched."""
    spec = make_spec(dry_run=True)
    walk = Walk(spec=spec, outcome=lambda step, n: Done(f"dry run: would {step}"))
    final = walk.run(Status())
    assert final.phase == Phase.SUCCEEDED
    assert states(final) == EXPECTED_HAPPY_LEDGER
    assert final.message.startswith("Dry run completed in ")
    for status in walk.snapshots:
        f = flags(status)
        assert f["DryRun"] == "True"
        assert f["MaintenanceActive"] == f["AutoscalingPaused"] == "False"


def test_a_queued_request_starts_once_its_blocker_is_gone() -> None:
    """Queued until the blocker is terminal, then a normal run from Preflight."""
    blocked = {"yes": True}
    walk = Walk(signals=lambda status: Signals(blocker="first" if blocked["yes"] else None))
    waiting = walk.run(Status())
    assert waiting.phase == Phase.QUEUED and waiting.queued_behind == "first"
    again = walk.run(waiting)
    assert again.phase == Phase.QUEUED, "still blocked: still queued"
    blocked["yes"] = False
    final = walk.run(again)
    assert final.phase == Phase.SUCCEEDED
    assert final.queued_behind is None
    first_running = next(s for s in walk.snapshots if s.phase == Phase.RUNNING)
    assert first_running.queued_behind is None


def test_an_abort_mid_run_stops_at_the_next_decision() -> None:
    """No step starts after the abort annotation is seen; the interrupted step is Aborted."""

    def signals(status: Status) -> Signals:
        reverting = status.record(StepName.REVERT_WORKLOADS).state == StepState.RUNNING
        return Signals(abort=reverting)

    def outcome(step: StepName, attempt: int) -> Outcome:
        return Wait("rolling out") if step == StepName.REVERT_WORKLOADS else Done("ok")

    walk = Walk(signals=signals, outcome=outcome)
    final = walk.run(Status())
    assert final.phase == Phase.ABORTED
    assert walk.decisions[-2:] == [Abort(), Idle()]
    assert final.record(StepName.REVERT_WORKLOADS).state == StepState.ABORTED
    assert final.message.startswith("Aborted during RevertWorkloads. The maintenance page is")
    assert all(
        final.record(n).state == StepState.PENDING
        for n in STEP_ORDER[STEP_ORDER.index(StepName.REVERT_WORKLOADS) + 1 :]
    )
