"""Drives one RollbackRequest to a terminal phase: ask the engine, act, record, repeat.

This is the only place where the engine's decisions meet the cluster. Steps run in worker
threads (the Kubernetes client is synchronous); the status is written back after every
transition, so the object always tells where the run is and a restarted operator resumes
from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rollback_operator import clock, engine, metrics, notify
from rollback_operator.kube import ApiError, Kube
from rollback_operator.model import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    Phase,
    RollbackSpec,
    StepName,
    StepState,
)
from rollback_operator.status import Status
from rollback_operator.steps import STEPS
from rollback_operator.steps.base import (
    Approval,
    Done,
    Fail,
    NeedsApproval,
    Outcome,
    StepContext,
    Wait,
)

QUEUE_POLL_SECONDS = 1.0
API_RETRY_SECONDS = 2.0


class Stopped(Protocol):
    """Kopf's DaemonStopped, as far as the runner uses it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Runner:
    def __init__(
        self,
        kube: Kube,
        body: Any,
        find_blocker: Callable[[], str | None],
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.kube = kube
        self.body = body  # Kopf's live view: annotations (abort, approve) update as they change
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.spec = RollbackSpec.parse(dict(body["spec"]))
        self.status = Status.from_dict(_plain(body.get("status")))
        self.find_blocker = find_blocker
        self.logger = logger
        self._resumed: set[StepName] = set()
        self._dirty = False
        self._pending: set[asyncio.Task[None]] = set()
        self.notify = notify.NotifySpec.parse(self.spec.sections.get("notify"))
        self._notified: set[str] = set()  # notification keys handed to `_notifying`
        self._notifying: asyncio.Task[None] | None = None  # the latest, chained after the others

    async def drive(self, stopped: Stopped) -> None:
        metrics.IN_PROGRESS.inc()
        try:
            await self._drive(stopped)
        finally:
            metrics.IN_PROGRESS.dec()

    async def _drive(self, stopped: Stopped) -> None:
        if self.status.observed_generation is None:
            self.status.observed_generation = self.body["metadata"].get("generation", 1)
            self._dirty = True
        while not stopped:
            decision = engine.decide(self.spec, self.status, self._signals())
            now = clock.now()
            match decision:
                case engine.Idle():
                    await self._flush()
                    return
                case engine.Queue(blocker=blocker):
                    if self.status.queued_behind != blocker:
                        self.status = engine.queued(self.status, blocker, self.spec, now)
                        self._dirty = True
                        await self._flush()
                        self._event_soon("Normal", "Queued", self.status.message)
                    await stopped.wait(QUEUE_POLL_SECONDS)
                case engine.Skip(step=step, reason=reason):
                    # Written with the next transition: a run of skips costs one write.
                    self.status = engine.skipped(self.status, step, reason, self.spec, now)
                    self._dirty = True
                case engine.Abort():
                    self.status = engine.aborted(self.status, self.spec, now)
                    await self._finish("Warning", "Aborted")
                    return
                case engine.Complete():
                    self.status = engine.completed(self.status, self.spec, now)
                    await self._finish("Normal", "Succeeded")
                    return
                case engine.Approve(step=step, by=by):
                    self.status = engine.approved(self.status, step, by, self.spec, now)
                    self._dirty = True
                    await self._flush()
                    self.logger.info("%s approved by %s", step, by)
                    self._event_soon("Normal", "Approved", f"{step} approved by {by}")
                case engine.Run(step=step):
                    outcome = await self._run(step)
                    if isinstance(outcome, Fail):
                        return
                    if isinstance(outcome, Wait | NeedsApproval):
                        await stopped.wait(outcome.retry_after)

    async def _run(self, step: StepName) -> Outcome:
        record = self.status.record(step)
        if record.state != StepState.RUNNING or step not in self._resumed:
            fresh = record.state != StepState.RUNNING
            self.status = engine.started(self.status, step, self.spec, clock.now())
            self._resumed.add(step)
            # Durable before any side effect: the step's start time seeds what it writes.
            self._dirty = True
            await self._flush()
            await self._notify(notify.Event.STARTED)  # once: on a resume, only if never sent
            if fresh:
                self.logger.info("%s started", step)
                self._event_soon("Normal", "StepStarted", f"{step} started")
        before = self.status.record(step).message, self.status.phase
        outcome = await asyncio.to_thread(self._execute, step)
        self.status = engine.stepped(self.status, step, outcome, self.spec, clock.now())
        if isinstance(outcome, Done | Fail):
            self._observe(step, outcome)
        if isinstance(outcome, Wait | NeedsApproval):
            after = self.status.record(step).message, self.status.phase
            if after != before:  # else spare the API server a write
                self._dirty = True
            await self._flush()
            if isinstance(outcome, NeedsApproval) and before[1] != Phase.AWAITING_APPROVAL:
                self.logger.info("%s awaits approval: %s", step, outcome.message)
                await self._notify(notify.Event.AWAITING_APPROVAL)
                self._event_soon("Normal", "AwaitingApproval", f"{step}: {outcome.message}")
        elif isinstance(outcome, Done):
            # Written with the next transition (the next step's start, or the outcome): were
            # the operator killed in between, the step would run again, and steps converge.
            self._dirty = True
            self.logger.info("%s succeeded: %s", step, outcome.message)
            self._event_soon("Normal", "StepSucceeded", f"{step}: {outcome.message}")
            for warning in outcome.warnings:
                self._event_soon("Warning", outcome.warning_reason, warning)
        else:
            await self._finish("Warning", "StepFailed")
        return outcome

    async def _finish(self, kind: str, reason: str) -> None:
        """Posts the outcome's Event, then writes the terminal status.

        In this order because the terminal phase ends the daemon (its filter stops matching),
        and with it anything still to be done.
        """
        metrics.REQUESTS.labels(result=str(self.status.phase)).inc()
        log = self.logger.info if kind == "Normal" else self.logger.warning
        log("%s: %s", self.status.phase, self.status.message)
        if self.status.phase != Phase.SUCCEEDED and not self.spec.dry_run:
            await self._report_anyway()
        await self._event(kind, reason, self.status.message)
        await self._notify(notify.Event(str(self.status.phase)), wait=True)
        self._dirty = True
        await self._flush()

    async def _notify(self, event: notify.Event, *, wait: bool = False) -> None:
        """Tells spec.notify's webhooks of `event`, with the state as it is now.

        Delivery runs in a task chained after the previous notification, so that they arrive
        in order and a slow webhook holds up no step. The start and approval waits write their
        result to status.notifications on their own; the end (`wait=True`) is awaited, its
        result going with the terminal status write, as the daemon ends with that write.
        Calling again for an event already handled sends nothing: `_notified` in this process,
        status.notifications' lastEvent across restarts (see notify.py).
        """
        if not self.notify.webhooks:  # most requests: nothing to build, at every step's start
            return
        note = notify.Notification.of(
            event,
            namespace=self.namespace,
            name=self.name,
            uid=self.body["metadata"].get("uid", ""),
            spec=self.spec,
            status=self.status,
            now=clock.now(),
        )
        sent = self.status.sections.get(notify.SECTION)
        if note.key not in self._notified and notify.due(self.notify, sent, note):
            self._notified.add(note.key)
            previous = self._notifying

            def url(webhook: notify.Webhook) -> str | None:
                ref = webhook.url_secret
                if ref is None:
                    return webhook.url
                return self.kube.secret_value(self.namespace, ref.name, ref.key)

            async def send() -> None:
                if previous is not None:
                    await previous
                try:
                    current = self.status.sections.get(notify.SECTION)
                    done = await asyncio.to_thread(notify.deliver, note, self.notify, current, url)
                    self.status.sections[notify.SECTION] = done.notifications
                    for webhook in done.sent_to:
                        self.logger.info("notified webhook %s of %s", webhook, note.key)
                    for failure in done.failures:
                        self.logger.warning("%s", failure)
                        await self._event("Warning", "NotificationFailed", failure)
                    if not wait:
                        patch = {notify.SECTION: done.notifications}
                        await asyncio.to_thread(
                            self.kube.patch_request_status, self.namespace, self.name, patch
                        )
                except Exception as error:  # a notification never fails the rollback
                    self.logger.warning("notifying of %s failed: %s", note.key, error)

            self._notifying = asyncio.create_task(send())
        if wait and self._notifying is not None:
            await self._notifying

    async def _report_anyway(self) -> None:
        """A run that failed or was aborted never reaches the Report step, yet it is the one
        the team most needs a post-mortem for: write it now, with the ledger as it stands."""
        try:
            await asyncio.to_thread(STEPS[StepName.REPORT].run, self._context(StepName.REPORT))
        except ApiError as error:  # the run's outcome matters more than its report
            self.logger.warning("could not write the post-mortem: %s", error)

    def _observe(self, step: StepName, outcome: Done | Fail) -> None:
        record = self.status.record(step)
        if record.started_at and record.finished_at:
            took = clock.parse(record.finished_at) - clock.parse(record.started_at)
            result = "Succeeded" if isinstance(outcome, Done) else "Failed"
            metrics.STEP_DURATION.labels(step=str(step), result=result).observe(
                took.total_seconds()
            )
        breached = (self.status.sections.get("monitoring") or {}).get("breach")
        if step == StepName.MONITOR and isinstance(outcome, Fail) and breached:
            metrics.MONITORING_BREACHES.inc()
        if (
            step == StepName.ENABLE_MAINTENANCE
            and isinstance(outcome, Done)
            and not self.spec.dry_run
        ):
            created = clock.parse(self.body["metadata"]["creationTimestamp"])
            metrics.TIME_TO_MAINTENANCE.observe((clock.now() - created).total_seconds())

    def _execute(self, step: StepName) -> Outcome:
        """Runs (or, for a dry run, plans) a step in a worker thread, mapping API trouble."""
        implementation = STEPS[step]
        ctx = self._context(step)
        try:
            if self.spec.dry_run and step != StepName.PREFLIGHT:
                return Done(f"dry run: {implementation.plan(ctx)}")
            return implementation.run(ctx)
        except ApiError as error:
            if error.transient:
                return Wait(f"retrying after an API error: {error}", API_RETRY_SECONDS)
            return Fail(
                f"the API server refused a call ({error}); check the operator's permissions "
                "and the objects named in the spec"
            )
        except Exception as error:
            self.logger.exception("step %s crashed", step)
            return Fail(f"internal error in {step}: {type(error).__name__}: {error}")

    def _context(self, step: StepName) -> StepContext:
        record = self.status.record(step)
        started = record.started_at
        approval = None
        if record.approved_by and record.approved_at:
            approval = Approval(by=record.approved_by, at=record.approved_at)
        return StepContext(
            kube=self.kube,
            namespace=self.namespace,
            request=self.name,
            request_uid=self.body["metadata"].get("uid", ""),
            spec=self.spec,
            saved=self.status.saved,
            targets=self.status.targets or {"ingresses": [], "deployments": [], "hpas": []},
            step_started_at=clock.parse(started) if started else clock.now(),
            now=clock.now,
            persist_saved=self._persist_saved,
            persist_targets=self._persist_targets,
            request_body=lambda: {**_plain(self.body), "status": self.status.to_dict()},
            persist_report=self._persist_report,
            approval=approval,
            sections=self.status.sections,
            persist_sections=self._persist_sections,
        )

    def _persist_saved(self) -> None:
        self.kube.patch_request_status(self.namespace, self.name, {"saved": self.status.saved})

    def _persist_targets(self, targets: dict[str, list[str]]) -> None:
        # Written with the next transition: Preflight changes nothing, so were the operator
        # killed before that write, Preflight would simply run again.
        self.status.targets = targets
        self._dirty = True

    def _persist_sections(self, durable: bool) -> None:
        if durable:
            self.kube.patch_request_status(self.namespace, self.name, dict(self.status.sections))
        else:
            self._dirty = True

    def _persist_report(self, reference: dict[str, str]) -> None:
        self.status.report = reference  # written with the step's outcome
        self._dirty = True

    def _signals(self) -> engine.Signals:
        annotations = self.body["metadata"].get("annotations") or {}
        step, by = annotations.get(APPROVE_ANNOTATION), annotations.get(APPROVED_BY_ANNOTATION)
        return engine.Signals(
            abort=annotations.get(ABORT_ANNOTATION) == "true",
            blocker=self.find_blocker(),
            approval=(step, by) if step and by else None,
        )

    async def _flush(self) -> None:
        """Writes the status if a transition changed it since the last write."""
        if self._dirty:
            await asyncio.to_thread(
                self.kube.patch_request_status, self.namespace, self.name, self.status.to_dict()
            )
            self._dirty = False

    def _event_soon(self, kind: str, reason: str, message: str) -> None:
        """Posts an Event without holding the run up: Events are for people, the run's
        state is in the status. The outcome's Event, which must not be lost when the daemon
        ends, is awaited instead (see `_finish`)."""
        task = asyncio.create_task(self._event(kind, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _event(self, kind: str, reason: str, message: str) -> None:
        try:
            meta = _plain(self.body["metadata"])
            await asyncio.to_thread(self.kube.post_event, meta, kind, reason, message)
        except ApiError as error:  # an Event is a courtesy: never fail the rollback for one
            self.logger.warning("could not post the %s Event: %s", reason, error)


def _plain(value: Any) -> Any:
    """A deep, plain copy of a Kopf body view (dicts and lists only)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
