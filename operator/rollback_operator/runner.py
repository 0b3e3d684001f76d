"""Drives one RollbackRequest to a terminal phase: ask the engine, act, record, repeat.

This is the only place where the engine's decisions meet the cluster. Steps run in worker
threads (the Kubernetes client is synchronous) and record what they must through the ledger,
which is the only writer of `.status`; the runner writes each transition back before the next
side effect that depends on it, so the object always tells where the run is and a restarted
operator resumes from it. What the world hears of the run is the announcer's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from rollback_operator import announce, clock, engine, metrics, model, postmortem, registry, runonce
from rollback_operator.announce import Announcer
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.kube import ApiError, Kube
from rollback_operator.ledger import ConflictError, StatusLedger, SupersededError
from rollback_operator.locks import Gate
from rollback_operator.model import Phase, RollbackSpec, StepName, StepState, Targets
from rollback_operator.outcomes import Approval, Done, Fail, NeedsApproval, Outcome, Wait
from rollback_operator.status import Status
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Seen, StepContext
from rollback_operator.watches import Wakeups

QUEUE_POLL_SECONDS = 1.0
ABORT_SLICE_SECONDS = 0.5  # how often a waiting run looks for the abort annotation
# A waiting step's progress (its message) is first written this long after its start, then
# after half the time it has waited (at least PROGRESS_INTERVAL_SECONDS, at most the maximum):
# woken by each change its watches see, a rollout would otherwise cost a status write per
# ReplicaSet update, and a step done within seconds writes no progress at all (its start and
# outcome tell it all). A 30 s rollout writes its progress at 2, 7, 12, 18 and 27 s.
PROGRESS_WRITE_SECONDS = 2.0
PROGRESS_INTERVAL_SECONDS = 5.0
PROGRESS_WRITE_MAX_SECONDS = 30.0
# Transient API errors (5xx, 429, 409, unreachable) are retried, waiting 2 s, then twice as
# long each time up to 30 s, until the step's deadline: spec.rolloutTimeout from the step's
# start. Then the step fails, the site left as it is (maintenance on).
API_RETRY_SECONDS = 2.0
API_RETRY_MAX_SECONDS = 30.0


class Stopped(Protocol):
    """Kopf's DaemonStopped, as far as the runner uses it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Runner:
    def __init__(
        self,
        kube: Kube,
        body: Any,
        spec: RollbackSpec,
        gate: Gate,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.kube = kube
        self.body = body  # Kopf's live view: annotations (abort, approve) update as they change
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.spec = spec
        self.gate = gate  # whether the run may start (the queue), and its targets' claims
        self.logger = logger
        self.ledger = StatusLedger(
            Status.from_dict(_plain(body.get("status"))),
            write=self._write_status,
            body=lambda: _plain(self.body),
            read=lambda: kube.request_status(self.namespace, self.name),
            version=body["metadata"].get("resourceVersion"),
            seen=self._watched,
        )
        self.announcer = Announcer(kube, _plain(body["metadata"]), spec, self.ledger, logger)
        self._resumed: set[StepName] = set()
        self._seen = Seen()  # what a step read, for the next (Preflight's reads, chiefly)
        self._api_errors = 0  # transient API errors in a row, for the retries' backoff
        self._wakeups = Wakeups()  # what the last call of a step read from watches
        # When the waiting step's progress is next written (monotonic seconds): progress is
        # kept unwritten until then, and written then even if the step is not called again.
        self._progress_due = 0.0

    async def drive(self, stopped: Stopped) -> None:
        metrics.IN_PROGRESS.inc()
        try:
            await self._drive(stopped)
        finally:
            metrics.IN_PROGRESS.dec()

    async def _drive(self, stopped: Stopped) -> None:
        if self.ledger.status.observed_generation is None:
            generation = self.body["metadata"].get("generation", 1)
            annotations = self.body["metadata"].get("annotations") or {}
            self.ledger.update(
                _observed, generation, annotations.get(model.REQUESTED_BY_ANNOTATION)
            )
        while not stopped:
            try:
                if await self._step(stopped):
                    return
            except SupersededError as why:
                # Another writer changed the record (see ledger.py): decide again from it.
                self.logger.warning("%s", why)

    async def _step(self, stopped: Stopped) -> bool:
        """One decision, acted on; True when the run is over (for this process)."""
        status = self.ledger.status
        signals = await self._signals(status)
        decision = engine.decide(self.spec, status, signals, registry.skip_reason)
        now = clock.now()
        match decision:
            case engine.Idle():
                if status.announced is False:  # decided, not yet announced: a crash between
                    await self._announce_end()
                await self._flush()
                return True
            case engine.Queue(blocker=blocker):
                if status.queued_behind != blocker:
                    status = self.ledger.update(engine.queued, blocker, self.spec, now)
                    await self._flush()
                    await self.announcer.announce(announce.Queued(), status)
                await stopped.wait(QUEUE_POLL_SECONDS)
            case engine.Skip(step=step, reason=reason):
                # Written with the next transition: a run of skips costs one write.
                self.ledger.update(engine.skipped, step, reason, self.spec, now)
            case engine.Abort():
                jobs = await asyncio.to_thread(self._stop_jobs, status)
                self.ledger.update(engine.aborted, self.spec, now, jobs)
                await self._finish()
                return True
            case engine.Complete():
                self.ledger.update(engine.completed, self.spec, now)
                await self._finish()
                return True
            case engine.RanBefore(earlier=earlier):
                self.ledger.update(engine.ran_before, earlier, self.spec, now)
                await self._finish()
                return True
            case engine.Approve(step=step, by=by):
                status = self.ledger.update(engine.approved, step, by, self.spec, now)
                await self._flush()
                await self.announcer.announce(announce.Approved(step, by), status)
            case engine.Run(step=step):
                outcome = await self._run(step)
                if isinstance(outcome, Fail):
                    return True
                if isinstance(outcome, Wait | NeedsApproval):
                    await self._pause(stopped, outcome.retry_after, self._wakeups)
        return False

    async def _pause(self, stopped: Stopped, seconds: float, wakeups: Wakeups) -> None:
        """Waits `seconds` before a step runs again, but ends early when the daemon stops or
        someone asks to abort: the annotation is read from Kopf's live view of the request, so
        an abort is seen within ABORT_SLICE_SECONDS without a call to the API server. Ends
        early too as soon as an object the step read from a watch changes (`watches.Wakeups`):
        the wait is on the event loop, no worker thread is held."""
        changed = asyncio.ensure_future(wakeups.changed()) if wakeups else None
        try:
            left = seconds
            while left > 0 and not stopped and not self._abort_asked():
                if self.ledger.pending and time.monotonic() >= self._progress_due:
                    await self._flush()  # progress held back, and no call since to write it
                    self._progress_due = time.monotonic() + PROGRESS_INTERVAL_SECONDS
                slice_seconds = min(left, ABORT_SLICE_SECONDS)
                if changed is None:
                    await stopped.wait(slice_seconds)
                else:
                    await asyncio.wait({changed}, timeout=slice_seconds)
                    if changed.done():
                        return
                left -= slice_seconds
        finally:
            if changed is not None:
                changed.cancel()

    def _abort_asked(self) -> bool:
        annotations = self.body["metadata"].get("annotations") or {}
        return bool(annotations.get(model.ABORT_ANNOTATION) == "true")

    async def _run(self, step: StepName) -> Outcome:
        record = self.ledger.status.record(step)
        if record.state != StepState.RUNNING or step not in self._resumed:
            fresh = record.state != StepState.RUNNING
            status = self.ledger.update(engine.started, step, self.spec, clock.now())
            self._resumed.add(step)
            # From its start; a step resumed by this process (after a restart, a takeover)
            # writes its first Wait at once: the status shows the run is driven again.
            self._progress_due = time.monotonic() + (PROGRESS_WRITE_SECONDS if fresh else 0.0)
            # Durable before any side effect: the step's start time seeds what it writes. A
            # step that records before acting carries it in its first record (see ledger.py).
            if not getattr(registry.STEPS[step], "records_before_acting", False):
                await self._flush()
            await self.announcer.announce(announce.StepStarted(step, fresh), status)
        before = self.ledger.status
        self._wakeups = Wakeups()
        outcome = await asyncio.to_thread(self._execute, step, self._wakeups)
        now = clock.now()
        if isinstance(outcome, Wait | NeedsApproval):
            # A wait that changes nothing a reader sees spares the API server a write, and
            # progress is written at most every `progress_interval` (a step's durable records
            # are written by the step, and the next transition carries the rest).
            status = self.ledger.update(engine.stepped, step, outcome, self.spec, now, changed=None)
            started = status.record(step).started_at
            waited = (now - clock.parse(started)).total_seconds() if started else 0.0
            # Only a step woken by its watches is held back: it is called at every change they
            # see. A step that waits on its own clock (Monitor's evaluations, a CDN's
            # Retry-After) writes each Wait that changes something, as it happens.
            held_back = bool(self._wakeups) and time.monotonic() < self._progress_due
            if isinstance(outcome, NeedsApproval) or not held_back:
                await self._flush()
                self._progress_due = time.monotonic() + progress_interval(waited)
            if isinstance(outcome, NeedsApproval) and before.phase != Phase.AWAITING_APPROVAL:
                await self.announcer.announce(
                    announce.AwaitingApproval(step, outcome.message), status
                )
            return outcome
        status = self.ledger.update(engine.stepped, step, outcome, self.spec, now)
        assert isinstance(outcome, Done | Fail)
        await self.announcer.announce(announce.StepEnded(step, outcome), status)
        if isinstance(outcome, Fail):
            await self._finish()
        # A success is written with the next transition (the next step's start, or the
        # outcome): were the operator killed in between, the step would run again, and steps
        # converge.
        return outcome

    async def _finish(self) -> None:
        """Writes the terminal decision, then announces it.

        In this order so that no crash can undo the decision (a watch that breached, resumed
        after a crash in the slow work, must not go on and succeed). `status.announced` stays
        False until the announcing is done; the daemon runs while it is False, so a crash in
        between has a restarted operator announce the end (notifications are sent once: see
        notify.py). It is written last, on its own: once Kopf sees it, it stops the daemon.
        """
        await self._flush()
        await self._announce_end()

    async def _announce_end(self) -> None:
        status = self.ledger.status
        if status.earlier_run is not None:
            # Nothing ran: the earlier run's post-mortem stays as it is, and only an Event
            # tells why (no notification: the team heard of that run when it ended).
            await self.announcer.announce(announce.NotRunAgain(), status)
        else:
            if status.phase != Phase.SUCCEEDED and not self.spec.dry_run:
                await self._report_anyway()
            reason = _END_REASONS[status.phase]
            await self.announcer.announce(announce.Finished(reason), self.ledger.status)
        try:
            await asyncio.to_thread(self.gate.release)  # the targets are free for the next run
        except ApiError as error:  # a later request takes over the claims of a finished one
            self.logger.warning("could not give back the targets' claims: %s", error)
        self.ledger.update(engine.announced)
        await self._flush()

    async def _report_anyway(self) -> None:
        """A run that failed or was aborted never reaches the Report step, yet it is the one
        the team most needs a post-mortem for: write it now, with the ledger as it stands."""
        report = registry.STEPS[StepName.REPORT]
        try:
            await asyncio.to_thread(report.run, self._context(StepName.REPORT))
        except ApiError as error:  # the run's outcome matters more than its report
            self.logger.warning("could not write the post-mortem: %s", error)

    def _execute(self, step: StepName, wakeups: Wakeups) -> Outcome:
        """Runs (or, for a dry run, plans) a step in a worker thread, mapping API trouble."""
        implementation = registry.STEPS[step]
        ctx = self._context(step, wakeups)
        try:
            if self.spec.dry_run and step != StepName.PREFLIGHT:
                return Done(f"dry run: {implementation.plan(ctx)}")
            outcome = implementation.run(ctx)
            self._api_errors = 0
            return outcome
        except SupersededError:
            raise
        except ApiError as error:
            if error.transient:
                return self._api_trouble(ctx, error)
            return Fail(
                f"the API server refused a call ({error}); check the operator's permissions "
                "and the objects named in the spec"
            )
        except Exception as error:
            self.logger.exception("step %s crashed", step)
            return Fail(f"internal error in {step}: {type(error).__name__}: {error}")

    def _stop_jobs(self, status: Status) -> tuple[str, ...]:
        """On abort: the running step's Jobs still running, stopped where that is safe (see
        steps/jobs.py), each fate a sentence for the abort message and the post-mortem."""
        step = status.step
        if step is None or status.record(step).state != StepState.RUNNING:
            return ()
        database = DatabaseSpec.of(self.spec)
        migrate = database.migrate_down if database else None
        custom = step == StepName.MIGRATE_DATABASE_DOWN and migrate is not None and migrate.command
        records = list(status.sections.get("jobs") or [])
        try:
            fates = jobs.stop_on_abort(self.kube, self.namespace, records, str(step), not custom)
        except ApiError as error:
            return (f"the step's Jobs could not be checked or stopped ({error}): check them",)
        return tuple(fates)

    def _api_trouble(self, ctx: StepContext, error: ApiError) -> Wait | Fail:
        """A transient API error: retried with backoff within the step's deadline, then the
        step fails (see API_RETRY_SECONDS)."""
        waited = (ctx.now() - ctx.step_started_at).total_seconds()
        if waited >= self.spec.rollout_timeout_seconds:
            return Fail(
                f"the API server kept failing ({error}) for {waited:.0f}s, past the step's "
                "deadline (spec.rolloutTimeout); nothing more was changed and the site is left "
                "as the ledger shows. Check the API server and its admission webhooks, then "
                "create a new RollbackRequest"
            )
        self._api_errors += 1
        if error.status == 409 and self._api_errors == 1:
            # An object changed since the step read it (Preflight's read, kept for it): the
            # step runs again at once, from a fresh read. A second conflict in a row backs off.
            return Wait(f"retrying after an API error: {error}", 0.0)
        doublings = min(self._api_errors - 1, 8)  # 2 s * 2**8 is already past the cap
        delay = min(API_RETRY_MAX_SECONDS, API_RETRY_SECONDS * 2**doublings)
        return Wait(f"retrying after an API error: {error}", delay)

    def _context(self, step: StepName, wakeups: Wakeups | None = None) -> StepContext:
        status = self.ledger.status
        record = status.record(step)
        approval = None
        if record.approved_by and record.approved_at:
            approval = Approval(
                by=record.approved_by, at=record.approved_at, digest=record.approval_digest or ""
            )
        return StepContext(
            kube=self.kube,
            namespace=self.namespace,
            request=self.name,
            request_uid=self.body["metadata"].get("uid", ""),
            spec=self.spec,
            ledger=self.ledger,
            targets=status.targets or Targets(),
            step_started_at=clock.parse(record.started_at) if record.started_at else clock.now(),
            now=clock.now,
            approval=approval,
            seen=self._seen,
            wakeups=wakeups if wakeups is not None else Wakeups(),
        )

    async def _signals(self, status: Status) -> engine.Signals:
        annotations = self.body["metadata"].get("annotations") or {}
        approve, by = (
            annotations.get(model.APPROVE_ANNOTATION),
            annotations.get(model.APPROVED_BY_ANNOTATION),
        )
        step, _, digest = (approve or "").partition("@")
        abort = self._abort_asked()
        blocker = earlier = None
        look_back = status.phase == Phase.PENDING and not abort and not self.spec.dry_run
        if status.phase in (Phase.PENDING, Phase.QUEUED) and not abort:
            # Both at once, only before the start: an earlier run found ends this one at once
            # (RanBefore), which gives back the claims the gate may have taken meanwhile.
            earlier, blocker = await asyncio.gather(
                asyncio.to_thread(self._earlier_run) if look_back else _none(),
                asyncio.to_thread(self.gate.blocker),
            )
        return engine.Signals(
            abort=abort,
            blocker=blocker,
            approval=(step, by, digest) if step and by else None,
            earlier=earlier,
        )

    def _earlier_run(self) -> engine.EarlierRun | None:
        """A finished run of this name and spec by a request since deleted (runonce.py)."""
        meta = self.body["metadata"]
        rerun = (meta.get("annotations") or {}).get(model.RERUN_ANNOTATION)
        key = runonce.key(_plain(self.body["spec"]), rerun)
        name = postmortem.configmap_name(self.name)
        configmap = self.kube.configmap(self.namespace, name)
        # Report adds this run's record to those read here ({}: none yet), without a read:
        # only a run of this request's name writes that ConfigMap, and one runs at a time.
        self._seen.keep("configmaps", name, configmap or {})
        return runonce.earlier(configmap, key, meta.get("uid", ""))

    async def _flush(self) -> None:
        """Writes the status if a transition changed it since the last write."""
        await asyncio.to_thread(self.ledger.flush)

    def _watched(self) -> tuple[dict[str, Any], str]:
        """The request's status and version as Kopf's watch last delivered them."""
        meta = self.body["metadata"]
        return _plain(self.body.get("status")) or {}, str(meta.get("resourceVersion") or "")

    def _write_status(self, patch: dict[str, Any], version: str | None) -> str | None:
        try:
            return self.kube.patch_request_status(self.namespace, self.name, patch, version)
        except ApiError as error:
            if error.status == 409:
                raise ConflictError(str(error)) from None
            raise


# The reason of the Event that tells how a run ended.
_END_REASONS = {Phase.SUCCEEDED: "Succeeded", Phase.ABORTED: "Aborted", Phase.FAILED: "StepFailed"}


def progress_interval(waited: float) -> float:
    """How long a step that has waited `waited` seconds leaves its progress unwritten."""
    return min(PROGRESS_WRITE_MAX_SECONDS, max(PROGRESS_INTERVAL_SECONDS, waited / 2))


async def _none() -> None:
    return None


def _observed(status: Status, generation: int, requested_by: str | None) -> Status:
    """The first write of a run: the generation it runs, and who asked for it (recorded by
    the API server at admission, so the ledger and the post-mortem name them)."""
    status.observed_generation = generation
    status.requested_by = requested_by
    return status


def _plain(value: Any) -> Any:
    """A deep, plain copy of a Kopf body view (dicts and lists only)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
