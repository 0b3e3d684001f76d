"""Verify (runbook §2.4): nothing goes back to the users until the rolled-back site is proven.

Two parts, both required before traffic returns (safety rule 4):

1. Always: every reverted Deployment is Available, fully updated, and runs the target images.
   Awaited up to `rolloutTimeout`, on the watches that follow the rollouts (steps/rollouts.py).
2. The checks of `spec.verification` ("make sure DB, Redis and the AI Gateway connections are
   healthy again"): http, tcp and job checks (see `checks.py`), retried until
   `verification.timeout`. Each check's last result is kept in `status.checks`.

Then, optionally, QA's sign-off (runbook §3: "QA Lead verifies"): once everything passes, the
run waits in AwaitingApproval for the approve annotation naming this step.

How the checks are run, and why:
- They start once the Deployments are Available: a smoke test of pods still rolling out proves
  nothing. (RevertWorkloads has already awaited the rollouts, so this is normally at once.)
- A failing http/tcp check is retried on every poll; one that passed is not re-run on every
  poll, but every http/tcp check is run again in one last round just before the step succeeds
  (or asks for the sign-off, and again once signed off): traffic never returns on a result
  older than that round.
- A job check runs its Job once (`jobs.run_job_once`): it starts only when the Deployments are
  Available and every http/tcp check passes, so that the one run a smoke test gets is against
  an application whose dependencies answer. A failed Job fails the step at once; it is never
  retried.
- A call of the step waits for its probes `CALL_SECONDS` (4 s) at most, so an abort is seen
  within seconds: a probe with a longer timeout goes on in the background and its result is
  collected by the next call (`verification.Probing`). Each probe is one total deadline, its
  `timeout`, connection to the last byte read.
- Deadlines: the Deployments get `rolloutTimeout` and the checks `verification.timeout`, both
  counted from the step's start, or from the sign-off once given (the checks are re-run then,
  and a dependency that blinks in that round gets its full window again). A Job still running
  at the checks' deadline is awaited to its own deadline (its `timeout`): its verdict cannot
  be had again by retrying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from rollback_operator import watches
from rollback_operator.admin_policy import Gate
from rollback_operator.clock import parse, stamp
from rollback_operator.deadlines import Deadline
from rollback_operator.images import SelectedImages, pod_images, with_tag
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.rollout import is_available, rollout_state
from rollback_operator.status import record_dict
from rollback_operator.steps import jobs, rollouts
from rollback_operator.steps.base import (
    Done,
    Fail,
    NeedsApproval,
    Outcome,
    References,
    StepContext,
    Wait,
    poll_interval,
)
from rollback_operator.steps.gates import await_approval, digest, required_gate
from rollback_operator.verification import (
    CALL_SECONDS,
    ONLY_DEPLOYMENTS,
    Check,
    HttpProbe,
    JobProbe,
    ProbeResult,
    Probing,
    TcpProbe,
    VerificationSpec,
    probe_http,
    probe_tcp,
    secret_refs,
)
from rollback_operator.watches import Objects

# A dependency that is down is rarely back within a quarter of a second: retry failing checks
# at most once a second, not at the rollout poll's fastest pace.
CHECK_RETRY_SECONDS = 1.0
PENDING_RETRY_SECONDS = 0.25  # a probe still running is looked at again this soon
NOT_RUN = "not run yet"

Prober = Callable[[Check], ProbeResult]
JobRunner = Callable[[StepContext, Check], "jobs.JobResult"]


def probe(check: Check) -> ProbeResult:
    """One attempt of an http or tcp check."""
    if isinstance(check.probe, HttpProbe):
        return probe_http(check.probe)
    if isinstance(check.probe, TcpProbe):
        return probe_tcp(check.probe)
    raise TypeError(f"check {check.name} is a job check: it runs as a Job, not a probe")


def job_template(check: Check) -> jobs.JobTemplate:
    """The Job a job check runs: the team's image, command and environment; the pod's security
    context and account are `jobs.py`'s, the same as for every Job the operator starts."""
    spec = check.probe
    if not isinstance(spec, JobProbe):
        raise TypeError(f"check {check.name} is a {check.type} check, not a job")
    return jobs.JobTemplate(
        purpose=check.purpose,
        image=spec.image,
        command=spec.command,
        args=spec.args,
        env=spec.env,
        deadline_seconds=max(1, round(spec.timeout_seconds)),
        labels={"app.kubernetes.io/component": "verification"},
    )


def run_job_check(ctx: StepContext, check: Check) -> jobs.JobResult:
    return jobs.run_job_once(ctx, StepName.VERIFY, job_template(check))


@dataclass(frozen=True)
class CheckRecord:
    """One entry of status.checks: a check's last result."""

    name: str
    type: str
    passed: bool = False
    message: str = NOT_RUN
    attempts: int = 0
    checked_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckRecord:
        return cls(
            name=raw["name"],
            type=raw.get("type", ""),
            passed=bool(raw.get("passed", False)),
            message=raw.get("message", NOT_RUN),
            attempts=int(raw.get("attempts", 0)),
            checked_at=raw.get("checkedAt"),
        )

    def summary(self) -> str:
        return f"{self.name} ({self.message})"


def preflight_problems(ctx: StepContext) -> list[str]:
    """What Preflight must refuse before the site is touched: a job check whose environment
    names a Secret key that does not exist would only fail after the maintenance page is on.
    (The value is read to know it exists, and goes nowhere.)"""
    problems = []
    for check, secret, key in secret_refs(VerificationSpec.of(ctx.spec) or ONLY_DEPLOYMENTS):
        if ctx.kube.secret_value(ctx.namespace, secret, key) is None:
            problems.append(
                f"verification check {check!r}: Secret {secret!r} has no key {key!r} "
                "(or does not exist)"
            )
    return problems


class Verify:
    name = StepName.VERIFY
    records_before_acting = False  # its start is written first: the status says it verifies
    preflight = References(preflight_problems)

    def __init__(self, prober: Prober = probe, job_runner: JobRunner = run_job_check) -> None:
        self.prober = prober
        self.job_runner = job_runner
        self.probing = Probing()

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        return None

    def plan(self, ctx: StepContext) -> str:
        names = ", ".join(ctx.spec.deployments)
        text = f"would check that {names} are Available at {ctx.spec.target_tag}"
        verification = VerificationSpec.of(ctx.spec) or ONLY_DEPLOYMENTS
        if verification.checks:
            text += (
                f", then run {len(verification.checks)} check(s) for up to "
                f"{verification.timeout_seconds:g}s: "
                + "; ".join(c.describe() for c in verification.checks)
            )
        found = required_gate(ctx, self.name, verification.require_approval)
        if found is not None:
            text += f", then wait for the sign-off of {found.who()}"
        return text

    def run(self, ctx: StepContext) -> Outcome:
        outcome = self._verify(ctx)
        if not isinstance(outcome, Wait):  # kept for the checks' rounds, not for a sign-off
            rollouts.done_with(ctx)
        return outcome

    def _verify(self, ctx: StepContext) -> Outcome:
        verification = VerificationSpec.of(ctx.spec) or ONLY_DEPLOYMENTS
        records = _load(ctx.ledger.section("checks"), verification.checks)
        found = required_gate(ctx, self.name, verification.require_approval)
        awaiting = found is not None and (
            ctx.approval is None or ctx.approval.digest != digest(_subject(ctx, verification))
        )
        if awaiting and verification.checks and all(r.passed for r in records.values()):
            # Asked in the round that saw everything pass; nothing is re-run until the sign-off,
            # so that the results QA reads are the ones that asked, and a wait of an hour costs
            # the API server nothing. Everything is run again once signed off.
            return _sign_off(ctx, found, verification, records)
        since = _window_start(ctx)
        problems = _deployment_problems(ctx, since)
        if problems:
            if ctx.now() >= since + timedelta(seconds=ctx.spec.rollout_timeout_seconds):
                return Fail("verification failed: " + "; ".join(problems) + ". " + _what_next())
            waiting = "waiting for: " + "; ".join(problems)
            if verification.checks:
                waiting += "; the checks run once the Deployments are Available"
            return Wait(waiting, retry_after=watches.CALL_SECONDS)  # or sooner: steps/rollouts.py

        deployments = (
            f"{len(ctx.ledger.originals('deployments'))} Deployment(s) Available at "
            f"{ctx.spec.target_tag}"
        )
        if not verification.checks:
            if awaiting:
                return _sign_off(ctx, found, verification, records)
            return Done(deployments + _signed(ctx))

        round_ = _Round(ctx, self.prober, self.probing, records)
        probes = [c for c in verification.checks if not isinstance(c.probe, JobProbe)]
        round_.probe([c for c in probes if not records[c.name].passed])
        if round_.pending:
            return round_.awaiting(deployments)
        failed_jobs: list[CheckRecord] = []
        running_jobs: list[CheckRecord] = []
        if all(round_.records[c.name].passed for c in probes):
            for check in verification.checks:
                if isinstance(check.probe, JobProbe) and not round_.records[check.name].passed:
                    state = round_.job(self.job_runner, check)
                    if state == jobs.JobState.FAILED:
                        failed_jobs.append(round_.records[check.name])
                    elif state == jobs.JobState.RUNNING:
                        running_jobs.append(round_.records[check.name])
        if not failed_jobs and all(r.passed for r in round_.records.values()):
            # The last round: every http/tcp check not run just now is run again, so the
            # verdict is never older than this call.
            round_.probe([c for c in probes if c.name not in round_.probed])
            if round_.pending:
                return round_.awaiting(deployments)
        round_.save()
        current = [round_.records[c.name] for c in verification.checks]
        running = {r.name for r in running_jobs}
        failing = [r for r in current if not r.passed and r.name not in running]

        if failed_jobs:
            return Fail(_failure(ctx, current, running_jobs, "a smoke-test Job failed"))
        if not failing and not running_jobs:
            passed = f"; {len(current)} check(s) pass: {', '.join(r.name for r in current)}"
            if awaiting:
                return _sign_off(ctx, found, verification, round_.records)
            return Done(deployments + passed + _signed(ctx))
        limit = since + timedelta(seconds=verification.timeout_seconds)
        if failing and ctx.now() >= limit:
            took = f"{verification.timeout_seconds:g}s"
            return Fail(_failure(ctx, current, running_jobs, f"not all passed within {took}"))
        passing = sum(r.passed for r in current)
        parts = [f"{passing}/{len(current)} check(s) pass"]
        tried = [r for r in failing if r.attempts]
        if tried:
            parts.append("failing: " + "; ".join(r.summary() for r in tried))
        if running_jobs:
            parts.append("running: " + ", ".join(r.name for r in running_jobs))
        return Wait(
            f"{deployments}; " + "; ".join(parts),
            retry_after=max(CHECK_RETRY_SECONDS, poll_interval(ctx)),
        )


class _Round:
    """One call's work on the checks: probes run in parallel, for `CALL_SECONDS` at most (one
    still running is collected by a later call: see `verification.Probing`), results recorded
    as they come."""

    def __init__(
        self,
        ctx: StepContext,
        prober: Prober,
        probing: Probing,
        records: dict[str, CheckRecord],
    ) -> None:
        self.ctx, self.prober, self.probing = ctx, prober, probing
        self.key = (ctx.namespace, ctx.request, stamp(ctx.step_started_at))
        self.budget = Deadline(CALL_SECONDS)
        self.records = dict(records)
        self.probed: set[str] = set()
        self.pending: list[str] = []
        self.changed = False

    def probe(self, checks: list[Check]) -> None:
        if not checks:
            return
        results, self.pending = self.probing.run(self.key, checks, self.prober, self.budget)
        now = stamp(self.ctx.now())
        for check in checks:
            result = results.get(check.name)
            if result is None:
                continue
            before = self.records[check.name]
            self.records[check.name] = replace(
                before,
                passed=result.passed,
                message=result.message,
                attempts=before.attempts + 1,
                checked_at=now,
            )
            self.probed.add(check.name)
            self.changed = True

    def awaiting(self, deployments: str) -> Wait:
        """The Wait while probes are still running: their results are collected next call."""
        self.save()
        return Wait(
            f"{deployments}; awaiting the answer of {', '.join(self.pending)}",
            retry_after=PENDING_RETRY_SECONDS,
        )

    def job(self, runner: JobRunner, check: Check) -> jobs.JobState:
        result = runner(self.ctx, check)
        before = self.records[check.name]
        passed = result.state == jobs.JobState.SUCCEEDED
        message = result.message
        if result.state == jobs.JobState.SUCCEEDED and message != f"Job {result.name} completed":
            message = f"Job {result.name} completed: {message}"
        elif result.state == jobs.JobState.FAILED and not message.startswith(f"Job {result.name}"):
            message = f"Job {result.name} failed: {message}"
        if (passed, message) != (before.passed, before.message) or before.attempts == 0:
            # The Job's one attempt; the time is that of its last change of state.
            self.records[check.name] = replace(
                before,
                passed=passed,
                message=message,
                attempts=1,
                checked_at=stamp(self.ctx.now()),
            )
            self.changed = True
        return result.state

    def save(self) -> None:
        if self.changed:
            self.ctx.ledger.put_section("checks", [r.to_dict() for r in self.records.values()])


def _load(raw: Any, checks: tuple[Check, ...]) -> dict[str, CheckRecord]:
    """The recorded results, one per check of the spec, in the spec's order."""
    stored = {r["name"]: CheckRecord.from_dict(r) for r in raw or [] if r.get("name")}
    return {c.name: stored.get(c.name) or CheckRecord(c.name, c.type) for c in checks}


def _window_start(ctx: StepContext) -> datetime:
    """Deadlines count from the step's start, or from the sign-off once it is given."""
    if ctx.approval is not None:
        return max(ctx.step_started_at, parse(ctx.approval.at))
    return ctx.step_started_at


def _deployment_problems(ctx: StepContext, since: datetime) -> list[str]:
    """What keeps the Deployments from being verified, as their watches see it (rollouts.py)."""
    names = sorted(ctx.ledger.originals("deployments"))
    left = (since + timedelta(seconds=ctx.spec.rollout_timeout_seconds) - ctx.now()).total_seconds()
    objects, trouble = rollouts.follow_rollouts(ctx, names, max(left, 0))
    problems = _problems(ctx, objects)
    return [*problems, trouble] if problems and trouble else problems


def _problems(ctx: StepContext, objects: Objects) -> list[str]:
    problems: list[str] = []
    for name, saved in sorted(ctx.ledger.originals("deployments").items()):
        deployment = objects.get(name)
        if deployment is None:
            problems.append(f"Deployment {name} not found")
            continue
        for kind, container, label, image in SelectedImages.saved(saved).by_kind():
            wanted = with_tag(image, ctx.spec.target_tag)
            running = pod_images(deployment, kind).get(container)
            if running != wanted:
                problems.append(f"{name}/{label} runs {running}, not {wanted}")
        state = rollout_state(deployment)
        if not state.complete:
            problems.append(state.detail)
        elif not is_available(deployment):
            problems.append(f"{name}: not Available")
    return problems


def _subject(ctx: StepContext, verification: VerificationSpec) -> dict[str, Any]:
    """What QA signs off: the Deployments at the target tag, and the checks that passed."""
    return {
        "deployments": sorted(ctx.ledger.originals("deployments")),
        "tag": ctx.spec.target_tag,
        "checks": [c.name for c in verification.checks],
    }


def _sign_off(
    ctx: StepContext,
    found: Gate | None,
    verification: VerificationSpec,
    records: dict[str, CheckRecord],
) -> NeedsApproval:
    count = len(ctx.ledger.originals("deployments"))
    seen = f"{count} Deployment(s) Available at {ctx.spec.target_tag}"
    if verification.checks:
        seen = f"all {len(records)} check(s) pass ({', '.join(records)}) and " + seen
    assert found is not None  # asked only at a gate
    asked = await_approval(ctx, found, _subject(ctx, verification), "the verification")
    assert asked is not None  # asked only when no approval of this subject is held
    return replace(
        asked,
        message=f"{seen}; {asked.message}. Every check is run again once signed off, before "
        "traffic returns",
    )


def _signed(ctx: StepContext) -> str:
    return f"; signed off by {ctx.approval.by}" if ctx.approval is not None else ""


def _failure(
    ctx: StepContext, current: list[CheckRecord], running: list[CheckRecord], why: str
) -> str:
    names = {r.name for r in running}
    failing = [r for r in current if not r.passed and r.attempts and r.name not in names]
    never = [r for r in current if not r.attempts]
    text = f"verification failed, {why}: {len(failing)} check(s) failing: " + "; ".join(
        r.summary() for r in failing
    )
    if never:
        text += f"; not run: {', '.join(r.name for r in never)}"
    if running:
        text += f"; still running: {', '.join(r.name for r in running)}"
    return (
        f"{text}. The maintenance page stays on; fix what the failing checks name, then restore "
        "traffic by hand from status.saved or create a new RollbackRequest."
    )


def _what_next() -> str:
    return (
        "The maintenance page stays on; fix the application, then restore traffic by hand from "
        "status.saved or create a new RollbackRequest."
    )
