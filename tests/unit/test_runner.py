"""The runner's loop: decide, act, record, announce, against a fake API and scripted steps.

The steps are stand-ins (the real ones are tested in test_steps.py and the e2e tier); what is
tested here is the loop itself: what it writes to the request's status and when, what it
announces, how it waits, and how a new runner resumes from what the last one wrote.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from rollback_operator import registry, runner
from rollback_operator.announce import FOLD_SEPARATOR, fold_messages
from rollback_operator.kube import ApiError, Kube
from rollback_operator.ledger import ConflictError, StatusLedger, SupersededError
from rollback_operator.model import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    RollbackSpec,
    StepName,
)
from rollback_operator.outcomes import Done, Fail, NeedsApproval, Outcome, Wait
from rollback_operator.runner import Runner
from rollback_operator.status import Status
from rollback_operator.steps.base import StepContext

NS, NAME = "lawyershub", "golive"
SPEC = {
    "reason": "Error rate 7.2 % for 15 min after go-live",
    "trigger": "ErrorRate",
    "traffic": {
        "ingresses": ["site"],
        "maintenanceBackend": {"service": "maintenance-page", "port": 80},
    },
    "workloads": [{"deployment": "backend"}],
}


class Crash(BaseException):
    """The operator dies here: nothing after it runs (a BaseException, so no handler maps it
    to a failed step)."""


def merged(target: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386) applied, as the API server applies status patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


@dataclass
class FakeApi:
    """The request as the API server holds it, and every write the runner sends."""

    status: dict[str, Any] = field(default_factory=dict)
    version: int = 1  # the request's resourceVersion
    writes: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.configmaps.get(name))

    def patch_request_status(
        self, namespace: str, name: str, patch: dict[str, Any], version: str | None = None
    ) -> str:
        if version is not None and version != str(self.version):
            raise ApiError(409, "Conflict", "the object has been modified")
        self.writes.append(copy.deepcopy(patch))
        self.status = merged(self.status, patch)
        self.version += 1
        return str(self.version)

    def request_status(self, namespace: str, name: str) -> tuple[dict[str, Any], str]:
        return copy.deepcopy(self.status), str(self.version)

    def post_event(self, meta: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason))
        self.messages.append(message)

    def outcomes_told(self) -> list[str]:
        """The step outcomes the success Events tell, in order (folded ones one by one)."""
        told: list[str] = []
        for (_, reason), message in zip(self.events, self.messages, strict=True):
            if reason in ("StepSucceeded", "StepsSucceeded"):
                told += [part.split(":")[0] for part in message.split(FOLD_SEPARATOR)]
        return told

    def body(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "metadata": {
                "namespace": NS,
                "name": NAME,
                "uid": "uid-1",
                "generation": 1,
                "resourceVersion": str(self.version),
                "creationTimestamp": "2026-01-10T03:00:00Z",
                "annotations": annotations or {},
            },
            "spec": copy.deepcopy(SPEC),
            "status": copy.deepcopy(self.status),
        }

    def phases(self) -> list[str]:
        return [w["phase"] for w in self.writes if "phase" in w]


@dataclass
class ScriptedStep:
    """A step whose outcomes are given in advance; `act` runs before each outcome."""

    name: StepName
    outcomes: list[Outcome] = field(default_factory=list)
    act: Callable[[StepContext, int], None] = lambda ctx, call: None
    skip: str | None = None
    calls: int = 0
    records_before_acting: bool = False
    preflight = None

    def skip_reason(self, spec: Any, targets: Any) -> str | None:
        return self.skip

    def plan(self, ctx: StepContext) -> str:
        return "would do it"

    def run(self, ctx: StepContext) -> Outcome:
        self.calls += 1
        self.act(ctx, self.calls)
        if self.outcomes:
            return self.outcomes.pop(0)
        return Done(f"{self.name} done")


class FreeGate:
    """No other request holds the targets."""

    released = 0

    def blocker(self) -> str | None:
        return None

    def release(self) -> None:
        FreeGate.released += 1


class Stopped:
    """Kopf's DaemonStopped: never set here; `wait` returns at once (no test sleeps)."""

    def __init__(self) -> None:
        self.waits: list[float | None] = []

    def __bool__(self) -> bool:
        return False

    async def wait(self, timeout: float | None = None) -> None:
        self.waits.append(timeout)
        await asyncio.sleep(0)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[StepName, ScriptedStep]]:
    scripted = {name: ScriptedStep(name) for name in registry.STEPS}
    for name, step in scripted.items():
        monkeypatch.setitem(registry.STEPS, name, step)  # type: ignore[arg-type]
    yield scripted


def drive(api: FakeApi, annotations: dict[str, str] | None = None) -> Stopped:
    """One runner, from the request as the API holds it, until its loop ends."""
    stopped = Stopped()

    async def go() -> None:
        body = api.body(annotations)
        runner = Runner(api, body, _spec(body), FreeGate(), _logger())  # type: ignore[arg-type]
        await runner.drive(stopped)
        await asyncio.sleep(0.05)  # let the Events posted on the side land

    asyncio.run(go())
    return stopped


async def _drive_until(api: FakeApi, annotations: dict[str, str], stopped: Stopped) -> None:
    body = api.body(annotations)
    runner = Runner(api, body, _spec(body), FreeGate(), _logger())  # type: ignore[arg-type]
    await runner.drive(stopped)


def _spec(body: dict[str, Any]) -> RollbackSpec:
    return RollbackSpec.parse(body["spec"])


def _logger() -> logging.Logger:
    return logging.getLogger("test-runner")


def ledger(api: FakeApi) -> list[tuple[str, str]]:
    return [(s["name"], s["state"]) for s in api.status["steps"]]


def test_a_run_goes_through_every_step_and_ends_succeeded(
    steps: dict[StepName, ScriptedStep],
) -> None:
    steps[StepName.PURGE_CDN].skip = "no spec.cdn"
    api = FakeApi()
    drive(api)
    assert api.status["phase"] == "Succeeded"
    assert ("PurgeCDN", "Skipped") in ledger(api)
    assert all(state in ("Succeeded", "Skipped") for _, state in ledger(api))
    assert all(s.calls == (0 if s.skip else 1) for s in steps.values())
    assert api.phases()[-1] == "Succeeded"
    assert ("Normal", "Succeeded") in api.events
    assert len(api.outcomes_told()) == 12


def test_a_step_posts_one_event_for_its_outcome_and_none_at_its_start(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """`kubectl describe` tells each step's outcome once, in order; its start is in
    status.steps. Steps done within a second of each other share an Event."""
    steps[StepName.PURGE_CDN].skip = "no spec.cdn"
    api = FakeApi()
    drive(api)
    reasons = [reason for _, reason in api.events]
    assert "StepStarted" not in reasons
    ran = [str(step) for step in StepName if not steps[step].skip]
    assert api.outcomes_told() == ran  # one per step that ran, none for the skip
    assert sorted(reasons) == ["StepsSucceeded", "Succeeded"]  # quick steps: one Event
    assert all(s.get("startedAt") for s in api.status["steps"] if s["state"] == "Succeeded")


def test_a_step_that_records_before_acting_writes_its_start_with_its_first_record(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """One write, not two: the start (and the previous step's success) go with the original
    the step saves before its change, and that write is made before the change."""
    api = FakeApi()
    written_before_change: list[dict[str, Any]] = []

    def change(ctx: StepContext, call: int) -> None:
        ctx.ledger.save("ingresses", "site", {"backends": []})
        written_before_change.append(copy.deepcopy(api.status))

    enable = steps[StepName.ENABLE_MAINTENANCE]
    enable.records_before_acting, enable.act = True, change
    steps[StepName.PREFLIGHT].records_before_acting = True
    steps[StepName.SUSPEND_GITOPS].skip = "no spec.gitops"  # written with the next write too
    drive(api)
    (status,) = written_before_change
    states = {s["name"]: s["state"] for s in status["steps"]}
    assert states["Preflight"] == "Succeeded" and states["EnableMaintenance"] == "Running"
    assert status["saved"] == {"ingresses": {"site": {"backends": []}}}
    # Nothing was written before that one write: Preflight's start went with it too.
    first = api.writes[0]
    assert first["saved"] and first["observedGeneration"] == 1
    assert {s["name"]: s["state"] for s in first["steps"]}["EnableMaintenance"] == "Running"


def test_a_step_that_does_not_record_first_has_its_start_written_before_it_runs(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """DisableMaintenance puts things back without a record first: its start is durable before
    it acts, so a restart knows it began."""
    api = FakeApi()
    seen: list[str | None] = []

    def look(ctx: StepContext, call: int) -> None:
        record = next(s for s in api.status["steps"] if s["name"] == "DisableMaintenance")
        seen.append(record.get("state"))

    steps[StepName.DISABLE_MAINTENANCE].act = look
    drive(api)
    assert seen == ["Running"]


def test_each_step_start_is_written_before_the_step_acts(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """The start time seeds what the step writes (a deadline, a Job's name): durable first."""
    api = FakeApi()
    seen: list[str | None] = []

    def look(ctx: StepContext, call: int) -> None:
        record = next(s for s in api.status["steps"] if s["name"] == "RevertWorkloads")
        seen.append(record.get("state"))

    steps[StepName.REVERT_WORKLOADS].act = look
    drive(api)
    assert seen == ["Running"]


def test_a_waiting_step_runs_again_and_a_wait_that_changes_nothing_is_not_written(
    steps: dict[StepName, ScriptedStep], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "progress_interval", lambda waited: 0.0)  # every change is due
    monkeypatch.setattr(runner, "PROGRESS_WRITE_SECONDS", 0.0)
    api = FakeApi()
    steps[StepName.REVERT_WORKLOADS].outcomes = [
        Wait("rolling out", 0.5),
        Wait("rolling out", 0.5),
        Wait("rolling out: 1 of 2", 0.5),
    ]
    stopped = drive(api)
    assert steps[StepName.REVERT_WORKLOADS].calls == 4
    assert stopped.waits == [0.5, 0.5, 0.5]
    messages = [
        next(s.get("message") for s in w["steps"] if s["name"] == "RevertWorkloads")
        for w in api.writes
        if "steps" in w and w.get("step") == "RevertWorkloads"
    ]
    # Started, the first wait, the changed wait: the repeated one is not written again.
    assert messages.count("rolling out") == 1
    assert "rolling out: 1 of 2" in messages
    assert api.status["phase"] == "Succeeded"


class QuietFollower:
    """A watch that sees no change while the test runs."""

    def snapshot(self) -> tuple[dict[str, Any], int]:
        return {}, 0

    async def changed_since(self, seen: int) -> None:
        await asyncio.Event().wait()


def test_quick_progress_is_not_written_and_held_back_progress_is_written_in_the_pause(
    steps: dict[StepName, ScriptedStep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken by every change its watches see, a rollout's progress would cost a write per
    ReplicaSet update: a step done within PROGRESS_WRITE_SECONDS of its start writes none.
    Progress held back is written once due, by the pause, when no call comes to write it.
    The runner's clock runs ten times as fast here: the pause's half a second is 5 s."""
    started = time.monotonic()
    fast = SimpleNamespace(monotonic=lambda: started + (time.monotonic() - started) * 10)
    monkeypatch.setattr(runner, "time", fast)
    api = FakeApi()
    revert, verify = steps[StepName.REVERT_WORKLOADS], steps[StepName.VERIFY]
    revert.outcomes = [Wait(f"rolling out: {n} of 3", 0.0) for n in range(3)]
    verify.outcomes = [Wait("checking", 1.0)]
    for step in (revert, verify):
        step.act = lambda ctx, call: ctx.wakeups.read(QuietFollower())  # type: ignore[arg-type]
    drive(api)

    def progress(step: str) -> list[str]:
        return [
            m
            for w in api.writes
            for m in [next(s.get("message") for s in w.get("steps", []) if s["name"] == step)]
            if m and m != "running" and not m.endswith("done")
        ]

    assert progress("RevertWorkloads") == []  # quick: no progress written
    assert "checking" in progress("Verify")  # written by the pause, 2 s into it
    assert api.status["phase"] == "Succeeded"


def test_a_wait_on_the_steps_own_clock_is_written_at_once(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Monitor's evaluations, a CDN's Retry-After: not woken by watches, not held back."""
    api = FakeApi()
    steps[StepName.PURGE_CDN].outcomes = [Wait("Cloudflare answered 429: again in 2s", 0.0)]
    drive(api)
    assert any(
        s.get("message") == "Cloudflare answered 429: again in 2s"
        for w in api.writes
        for s in w.get("steps", [])
    )


def test_a_failing_step_ends_the_run_failed_with_a_post_mortem(
    steps: dict[StepName, ScriptedStep],
) -> None:
    api = FakeApi()
    steps[StepName.VERIFY].outcomes = [Fail("backend is not Available")]
    drive(api)
    assert api.status["phase"] == "Failed"
    assert api.status["message"] == "Verify failed: backend is not Available"
    assert ("Verify", "Failed") in ledger(api)
    assert steps[StepName.RESUME_AUTOSCALING].calls == 0
    assert steps[StepName.REPORT].calls == 1  # the post-mortem, written anyway
    assert ("Warning", "StepFailed") in api.events
    assert api.phases()[-1] == "Failed"


def test_a_step_needing_approval_waits_then_runs_on_once_approved(
    steps: dict[StepName, ScriptedStep],
) -> None:
    api = FakeApi()
    approvals: list[str | None] = []

    def note(ctx: StepContext, call: int) -> None:
        approvals.append(ctx.approval.by if ctx.approval else None)

    restore = steps[StepName.RESTORE_DATABASE]
    restore.act = note
    restore.outcomes = [NeedsApproval("waiting for a DBA", 1.0, digest="d1gest")] * 3

    class StopAfter(Stopped):
        def __bool__(self) -> bool:
            return len(self.waits) >= 3

    stopped = StopAfter()

    async def go() -> None:
        body = api.body()
        runner = Runner(api, body, _spec(body), FreeGate(), _logger())  # type: ignore[arg-type]
        await runner.drive(stopped)

    asyncio.run(go())
    assert api.status["phase"] == "AwaitingApproval"
    assert ("Normal", "AwaitingApproval") in api.events
    assert steps[StepName.VERIFY].calls == 0  # nothing else runs while it waits

    restore.outcomes = []
    # An approval of something else is not taken: the step still waits.
    wrong = {APPROVE_ANNOTATION: "RestoreDatabase@other", APPROVED_BY_ANNOTATION: "dba-alice"}
    restore.outcomes = [NeedsApproval("waiting for a DBA", 1.0, digest="d1gest")] * 3
    asyncio.run(_drive_until(api, wrong, StopAfter()))
    record = next(s for s in api.status["steps"] if s["name"] == "RestoreDatabase")
    assert "approvedBy" not in record and record["approvalDigest"] == "d1gest"
    restore.outcomes = []
    drive(api, {APPROVE_ANNOTATION: "RestoreDatabase@d1gest", APPROVED_BY_ANNOTATION: "dba-alice"})
    record = next(s for s in api.status["steps"] if s["name"] == "RestoreDatabase")
    assert record["approvedBy"] == "dba-alice"
    assert approvals[-1] == "dba-alice" and None in approvals
    assert api.status["phase"] == "Succeeded"
    assert ("Normal", "Approved") in api.events


def test_a_crash_between_a_side_effect_and_its_record_resumes_with_the_first_record(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Safety rules 2 and 6: the original is durable before the change; a step killed after
    changing the site runs again on restart, and its second read (the changed object) never
    replaces the first record."""
    api = FakeApi()
    site = {"backend": "app:80"}

    def switch(ctx: StepContext, call: int) -> None:
        ctx.ledger.save("ingresses", "site", {"backend": site["backend"]})
        site["backend"] = "maintenance-page:80"  # the side effect
        if call == 1:
            raise Crash

    steps[StepName.ENABLE_MAINTENANCE].act = switch
    with pytest.raises(Crash):
        drive(api)
    assert api.status["saved"] == {"ingresses": {"site": {"backend": "app:80"}}}
    assert api.status["phase"] == "Running"

    drive(api)  # the operator again, from what the API server holds
    assert steps[StepName.ENABLE_MAINTENANCE].calls == 2
    assert api.status["saved"]["ingresses"]["site"] == {"backend": "app:80"}
    assert api.status["phase"] == "Succeeded"
    record = next(s for s in api.status["steps"] if s["name"] == "EnableMaintenance")
    assert record["attempts"] == 2
    assert steps[StepName.PREFLIGHT].calls == 1  # a finished step is not run again


def test_an_abort_stops_before_the_next_step_and_says_what_is_left(
    steps: dict[StepName, ScriptedStep],
) -> None:
    api = FakeApi()
    drive(api, {ABORT_ANNOTATION: "true"})
    assert api.status["phase"] == "Aborted"
    assert all(s.calls == 0 for name, s in steps.items() if name != StepName.REPORT)
    assert ("Warning", "Aborted") in api.events


def test_two_runners_on_one_request_keep_the_true_original(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Safety rule 11: a second instance, working from a stale copy of the request, reads the
    Ingress after the first switched it. Its writes carry the version it read, so the server
    refuses them; it takes the server's record, and the original stays the application."""
    api = FakeApi()
    stale = api.body()  # what the second instance saw when it started
    site = {"backend": "app:80"}

    def switch(ctx: StepContext, call: int) -> None:
        ctx.ledger.save("ingresses", "site", {"backend": site["backend"]})
        site["backend"] = "maintenance-page:80"
        if call == 1:
            raise Crash  # the first instance stops here, its record written

    def restore(ctx: StepContext, call: int) -> None:
        site["backend"] = ctx.ledger.original("ingresses", "site")["backend"]

    steps[StepName.ENABLE_MAINTENANCE].act = switch
    steps[StepName.DISABLE_MAINTENANCE].act = restore
    with pytest.raises(Crash):
        drive(api)

    async def second() -> None:
        runner = Runner(api, stale, _spec(stale), FreeGate(), _logger())  # type: ignore[arg-type]
        await runner.drive(Stopped())

    asyncio.run(second())
    assert api.status["saved"]["ingresses"]["site"] == {"backend": "app:80"}
    assert site["backend"] == "app:80"
    assert api.status["phase"] == "Succeeded"
    assert steps[StepName.PREFLIGHT].calls == 1  # the second decided again from the record


def test_a_change_of_the_requests_metadata_alone_is_written_through(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """An approval or abort annotation, or Kopf's finalizer, changes the request's version
    but not its status: the next write goes through at the new version."""
    api = FakeApi()

    def annotate(ctx: StepContext, call: int) -> None:
        api.version += 1  # someone annotated the request

    steps[StepName.PAUSE_AUTOSCALING].act = annotate
    drive(api)
    assert api.status["phase"] == "Succeeded"
    assert all(s.calls == 1 for s in steps.values())


def test_the_end_is_written_before_it_is_announced_and_announced_after_a_crash(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Safety rule 12: a terminal decision is durable before the slow work (the post-mortem,
    the outcome's Event, the notifications); a crash in that work leaves it to be announced
    by the next operator, never to be decided again."""
    api = FakeApi()
    steps[StepName.MONITOR].outcomes = [Fail("error rate 7.1 % > 5 % on 3 evaluations")]
    post = api.post_event

    def crash_on_the_outcome(meta: dict[str, Any], kind: str, reason: str, message: str) -> None:
        if reason == "StepFailed":
            raise Crash
        post(meta, kind, reason, message)

    api.post_event = crash_on_the_outcome  # type: ignore[method-assign]
    with pytest.raises(Crash):
        drive(api)
    assert api.status["phase"] == "Failed"
    assert api.status["announced"] is False
    assert ("Warning", "StepFailed") not in api.events

    api.post_event = post  # type: ignore[method-assign]
    drive(api)
    assert api.status["phase"] == "Failed"  # not decided again: the watch does not go on
    assert steps[StepName.MONITOR].calls == 1
    assert api.status["announced"] is True
    assert ("Warning", "StepFailed") in api.events
    assert steps[StepName.REPORT].calls == 2  # the post-mortem, written again after the crash


def test_api_errors_are_retried_with_backoff_until_the_steps_deadline(
    steps: dict[StepName, ScriptedStep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue: a 500 from a down admission webhook retried every 2 s forever, maintenance on."""
    monkeypatch.setitem(SPEC, "rolloutTimeout", "2s")  # stamps have 1 s resolution
    monkeypatch.setattr(runner, "ABORT_SLICE_SECONDS", 60.0)  # each wait in one piece
    api = FakeApi()

    def webhook_down(ctx: StepContext, call: int) -> None:
        raise ApiError(500, "InternalError", 'failed calling webhook "policy.example": timeout')

    steps[StepName.REVERT_WORKLOADS].act = webhook_down
    stopped = drive(api)
    assert api.status["phase"] == "Failed"
    assert "kept failing (500 InternalError" in api.status["message"]
    assert "spec.rolloutTimeout" in api.status["message"]
    assert stopped.waits[:6] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert steps[StepName.VERIFY].calls == 0


def test_a_conflict_is_retried_at_once_then_with_backoff(
    steps: dict[StepName, ScriptedStep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write from a kept read (Preflight's) whose object changed since: the step runs again
    at once, from a fresh read; conflicts in a row back off as any API error does."""
    monkeypatch.setattr(runner, "ABORT_SLICE_SECONDS", 60.0)  # each wait in one piece
    api = FakeApi()

    def changed_meanwhile(ctx: StepContext, call: int) -> None:
        if call <= 3:
            raise ApiError(409, "Conflict", "the object has been modified")

    steps[StepName.PAUSE_AUTOSCALING].act = changed_meanwhile
    stopped = drive(api)
    assert api.status["phase"] == "Succeeded"
    assert steps[StepName.PAUSE_AUTOSCALING].calls == 4
    assert stopped.waits == [4.0, 8.0]  # the first retry did not wait at all


def test_an_unreachable_api_server_is_an_api_error_the_steps_retry() -> None:
    """urllib3's connection errors are not OSErrors: they must still read as unreachable."""
    configuration = client.Configuration()
    configuration.host, configuration.retries = "https://127.0.0.1:1", 0
    kube = Kube(client.ApiClient(configuration))
    with pytest.raises(ApiError) as raised:
        kube.get("/api/v1/namespaces")
    assert raised.value.status == 0 and raised.value.transient


def test_a_wait_is_cut_short_by_an_abort(steps: dict[StepName, ScriptedStep]) -> None:
    """A step that waits 5 s between checks: the abort is seen within a slice of that."""
    api = FakeApi()
    steps[StepName.REVERT_WORKLOADS].outcomes = [Wait("rolling out", 5.0)] * 100
    body = api.body()

    class AbortAfter(Stopped):
        async def wait(self, timeout: float | None = None) -> None:
            await super().wait(timeout)
            if len(self.waits) == 2:  # someone annotates the request, half-way through a wait
                body["metadata"]["annotations"][ABORT_ANNOTATION] = "true"

    stopped = AbortAfter()

    async def go() -> None:
        await Runner(api, body, _spec(body), FreeGate(), _logger()).drive(stopped)  # type: ignore[arg-type]

    asyncio.run(go())
    assert stopped.waits == [0.5, 0.5]
    assert api.status["phase"] == "Aborted"
    assert steps[StepName.REVERT_WORKLOADS].calls == 1


def test_a_version_the_watch_delivered_is_written_at_when_the_status_there_is_ours() -> None:
    """Kopf's finalizer moves the request on before the first status write: the ledger writes
    at the version the watch delivered (its status still the ledger's), not into a conflict."""
    api = FakeApi()
    reads: list[int] = []

    def read() -> tuple[dict[str, Any], str]:
        reads.append(1)
        return api.request_status(NS, NAME)

    def write(patch: dict[str, Any], version: str | None) -> str:
        try:
            return api.patch_request_status(NS, NAME, patch, version)
        except ApiError as error:
            raise ConflictError(str(error)) from None

    watched: dict[str, Any] = {"status": {}, "version": "1"}
    ledger = StatusLedger(
        Status.from_dict({}),
        write=write,
        read=read,
        version="1",
        seen=lambda: (watched["status"], watched["version"]),
    )
    api.version, watched["version"] = 2, "2"  # the finalizer's patch, delivered
    ledger.put_section("gates", [], durable=True)
    assert len(api.writes) == 1 and reads == []

    # Someone else's status at the watch's version is not taken for ours: the write goes at
    # the version known, meets the conflict, and the ledger reads and decides again.
    api.status = {"phase": "Failed"}
    api.version += 1
    watched["status"], watched["version"] = {"phase": "Failed"}, str(api.version)
    with pytest.raises(SupersededError):
        ledger.put_section("gates", [{"step": "Verify"}], durable=True)
    assert reads == [1] and len(api.writes) == 1


def test_folded_outcomes_fit_one_event_and_name_every_step() -> None:
    long = [f"Step{n}: " + "x" * 400 for n in range(5)]
    folded = fold_messages(long)
    assert len(folded) <= 1024
    assert [part.split(":")[0] for part in folded.split(FOLD_SEPARATOR)] == [
        f"Step{n}" for n in range(5)
    ]
    assert fold_messages(["Preflight: ok", "EnableMaintenance: on"]) == (
        "Preflight: ok | EnableMaintenance: on"
    )


class ChangedFollower:
    """A watch that has seen a change since the step read it."""

    def snapshot(self) -> tuple[dict[str, Any], int]:
        return {}, 0

    async def changed_since(self, seen: int) -> None:
        return None


def test_a_step_waiting_on_its_watches_is_called_again_as_soon_as_they_see_a_change(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Not after the Wait's delay: the pause ends with the change, in no slice at all."""
    revert = steps[StepName.REVERT_WORKLOADS]
    revert.outcomes = [Wait("rolling out", retry_after=30.0)]

    def read_watch(ctx: StepContext, call: int) -> None:
        if call == 1:
            ctx.wakeups.read(ChangedFollower())  # type: ignore[arg-type]

    revert.act = read_watch
    api = FakeApi()
    stopped = drive(api)
    assert revert.calls == 2 and api.status["phase"] == "Succeeded"
    assert stopped.waits == []  # the 30 s were never waited, not even one slice


def test_progress_is_written_often_at_first_and_every_30_s_at_most_later() -> None:
    assert runner.progress_interval(2.0) == 5.0
    assert runner.progress_interval(24.0) == 12.0
    assert runner.progress_interval(600.0) == 30.0


def test_a_step_resumed_after_a_restart_writes_its_first_wait_at_once(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Held back for a step just started, its progress is written at once when a restarted
    operator takes the run up again: the status shows the run is driven again."""
    api = FakeApi()
    revert = steps[StepName.REVERT_WORKLOADS]

    def crash_first(ctx: StepContext, call: int) -> None:
        ctx.wakeups.read(QuietFollower())  # type: ignore[arg-type]
        if call == 1:
            raise Crash

    revert.act = crash_first
    revert.outcomes = [Wait("rolling out: 1 of 2", 0.0)]
    with pytest.raises(Crash):
        drive(api)
    revert.outcomes = [Wait("rolling out: 1 of 2", 0.0)]
    drive(api)
    messages = [s.get("message") for w in api.writes for s in w.get("steps", [])]
    assert "rolling out: 1 of 2" in messages
