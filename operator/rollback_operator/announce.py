"""Telling the world where a run stands: log lines, Events for `kubectl describe`, the
notifications of spec.notify, and the operator's metrics.

The runner says what happened, with the status as it stands (`Announcer.announce(happening,
status)`); this module decides who hears of it and how. Nothing here holds a run up: Events
are posted, and notifications delivered (in order, one chained after the other), in tasks of
their own, except for the run's end, whose Event and notification are awaited because the
daemon ends with the terminal write that follows.

Steps that succeed within FOLD_SECONDS of each other share one Event (`StepsSucceeded`, each
step's outcome in turn, "Preflight: ... | EnableMaintenance: ..."): the steps before the
maintenance page, done in a fraction of a second, cost the API server one Event, not one each,
and `kubectl describe` still tells every outcome once, in order. Any other Event posts the
successes waiting before it, so the story keeps its order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from rollback_operator import clock, metrics, notify
from rollback_operator.kube import ApiError, Kube
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import Phase, RollbackSpec, StepName
from rollback_operator.outcomes import Done, Fail
from rollback_operator.status import Status
from rollback_operator.steps import limits


@dataclass(frozen=True)
class Queued:
    """The request waits for an earlier one that touches the same objects."""


@dataclass(frozen=True)
class StepStarted:
    step: StepName
    fresh: bool  # False when the operator resumes a step it had started before a restart


@dataclass(frozen=True)
class StepEnded:
    """A step succeeded or failed: a Normal or Warning Event, and the step's metrics."""

    step: StepName
    outcome: Done | Fail  # its message becomes the Event's


@dataclass(frozen=True)
class AwaitingApproval:
    """The run waits for a person (runbook §3): an Event and a notification that say who
    must approve and how, so that the approver hears of it without watching the request."""

    step: StepName
    message: str  # who must approve, and how


@dataclass(frozen=True)
class Approved:
    """An approval was recorded in the ledger, under the approver's name."""

    step: StepName
    by: str  # as recorded in the step's ledger entry (approvedBy)


@dataclass(frozen=True)
class Finished:
    """The run reached its terminal phase (the status's)."""

    reason: str  # the Event's reason: Succeeded, Aborted, StepFailed


@dataclass(frozen=True)
class NotRunAgain:
    """The request ended at once: its spec already ran under its name (runonce.py)."""


Happening = Queued | StepStarted | StepEnded | AwaitingApproval | Approved | Finished | NotRunAgain

Logger = logging.Logger | logging.LoggerAdapter[Any]

FOLD_SECONDS = 1.0  # successes this close share one Event
EVENT_MESSAGE_LIMIT = 1024  # what an Event's message holds (kube.post_event cuts the rest)
FOLD_SEPARATOR = " | "


class Announcer:
    """Announces the happenings of one request's run (see the module's docstring)."""

    def __init__(
        self,
        kube: Kube,
        meta: dict[str, Any],
        spec: RollbackSpec,
        ledger: StatusLedger,
        logger: Logger,
    ) -> None:
        self.kube, self.meta, self.spec, self.ledger, self.logger = kube, meta, spec, ledger, logger
        self.namespace: str = meta["namespace"]
        self.notify = notify.NotifySpec.of(spec) or notify.NotifySpec()
        self._events: set[asyncio.Task[None]] = set()
        self._successes: list[str] = []  # step outcomes waiting to share an Event
        self._folding: asyncio.TimerHandle | None = None
        self._notified: set[str] = set()  # notification keys handed to `_notifying`
        self._notifying: asyncio.Task[None] | None = None  # the latest, chained after the others

    async def announce(self, happening: Happening, status: Status) -> None:
        match happening:
            case Queued():
                self._event_soon("Normal", "Queued", status.message)
            case StepStarted(step=step, fresh=fresh):
                self._notify(notify.Event.STARTED, status)  # once: on a resume, only if never sent
                if fresh:
                    # No Event: status.steps has the start time, and the step's outcome (or
                    # its wait for an approval) is the Event `kubectl describe` shows for it.
                    self.logger.info("%s started", step)
            case StepEnded(step=step, outcome=outcome):
                self._observe(step, outcome, status)
                if isinstance(outcome, Done):
                    self.logger.info("%s succeeded: %s", step, outcome.message)
                    self._succeeded_soon(f"{step}: {outcome.message}")
                    for warning in outcome.warnings:
                        self._event_soon("Warning", outcome.warning_reason, warning)
            case AwaitingApproval(step=step, message=message):
                self.logger.info("%s awaits approval: %s", step, message)
                self._notify(notify.Event.AWAITING_APPROVAL, status)
                self._event_soon("Normal", "AwaitingApproval", f"{step}: {message}")
            case Approved(step=step, by=by):
                self.logger.info("%s approved by %s", step, by)
                self._event_soon("Normal", "Approved", f"{step} approved by {by}")
            case Finished(reason=reason):
                await self._finished(reason, status)
            case NotRunAgain():
                self.logger.info("%s", status.message)
                await self._event("Normal", "NotRunAgain", status.message)

    async def _finished(self, reason: str, status: Status) -> None:
        metrics.REQUESTS.labels(result=str(status.phase)).inc()
        succeeded = status.phase == Phase.SUCCEEDED
        (self.logger.info if succeeded else self.logger.warning)(
            "%s: %s", status.phase, status.message
        )
        await self._event("Normal" if succeeded else "Warning", reason, status.message)
        self._notify(notify.Event(str(status.phase)), status, final=True)
        if self._notifying is not None:
            await self._notifying

    def _observe(self, step: StepName, outcome: Done | Fail, status: Status) -> None:
        record = status.record(step)
        if record.started_at and record.finished_at:
            took = clock.parse(record.finished_at) - clock.parse(record.started_at)
            result = "Succeeded" if isinstance(outcome, Done) else "Failed"
            metrics.STEP_DURATION.labels(step=str(step), result=result).observe(
                took.total_seconds()
            )
        breached = (status.sections.get("monitoring") or {}).get("breach")
        if step == StepName.MONITOR and isinstance(outcome, Fail) and breached:
            metrics.MONITORING_BREACHES.inc()
        if (
            step == StepName.ENABLE_MAINTENANCE
            and isinstance(outcome, Done)
            and not self.spec.dry_run
        ):
            created = clock.parse(self.meta["creationTimestamp"])
            metrics.TIME_TO_MAINTENANCE.observe((clock.now() - created).total_seconds())

    # --- notifications

    def _notify(self, event: notify.Event, status: Status, *, final: bool = False) -> None:
        """Tells spec.notify's webhooks of `event`, with the state as it is now.

        Delivery runs in a task chained after the previous notification, so that they arrive
        in order and a slow webhook holds up no step. Each result is recorded in
        status.notifications: at once, except the end's, which goes with the terminal write.
        An event already handled sends nothing: `_notified` in this process,
        status.notifications' lastEvent across restarts (see notify.py).
        """
        if not self.notify.webhooks:  # most requests: nothing to build, at every step's start
            return
        note = notify.Notification.of(
            event,
            namespace=self.namespace,
            name=self.meta["name"],
            uid=self.meta.get("uid", ""),
            spec=self.spec,
            status=status,
            now=clock.now(),
        )
        sent = self.ledger.section(notify.SECTION)
        if note.key in self._notified or not notify.due(self.notify, sent, note):
            return
        self._notified.add(note.key)
        self._notifying = asyncio.create_task(self._deliver(note, self._notifying, final))

    async def _deliver(
        self, note: notify.Notification, previous: asyncio.Task[None] | None, final: bool
    ) -> None:
        if previous is not None:
            await previous
        try:
            current = self.ledger.section(notify.SECTION)
            done = await asyncio.to_thread(notify.deliver, note, self.notify, current, self._url)
            await asyncio.to_thread(
                self.ledger.put_section, notify.SECTION, done.notifications, durable=not final
            )
            for webhook in done.sent_to:
                self.logger.info("notified webhook %s of %s", webhook, note.key)
            for failure in done.failures:
                self.logger.warning("%s", failure)
                await self._event("Warning", "NotificationFailed", failure)
        except Exception as error:  # a notification never fails the rollback
            self.logger.warning("notifying of %s failed: %s", note.key, error)

    def _url(self, webhook: notify.Webhook) -> str | None:
        ref = webhook.url_secret
        if ref is None:
            url = webhook.url
        else:
            url = self.kube.secret_value(self.namespace, ref.name, ref.key)
        if url is not None:
            refused = limits.webhook_refusal(self.kube, self.namespace, webhook, url.strip())
            if refused is not None:
                raise notify.RefusedError(refused)
        return url

    # --- Events

    def _succeeded_soon(self, message: str) -> None:
        """A step's success, posted with those that follow within FOLD_SECONDS."""
        self._successes.append(message)
        if self._folding is None:
            self._folding = asyncio.get_running_loop().call_later(
                FOLD_SECONDS, self._post_successes
            )

    def _post_successes(self) -> None:
        if self._folding is not None:
            self._folding.cancel()
            self._folding = None
        folded, self._successes = self._successes, []
        if len(folded) == 1:
            self._event_soon("Normal", "StepSucceeded", folded[0], fold=False)
        elif folded:
            self._event_soon("Normal", "StepsSucceeded", fold_messages(folded), fold=False)

    def _event_soon(self, kind: str, reason: str, message: str, fold: bool = True) -> None:
        """Posts an Event without holding the run up: Events are for people, the run's state
        is in the status. The successes waiting to be folded go first."""
        if fold:
            self._post_successes()
        task = asyncio.create_task(self._event(kind, reason, message))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _event(self, kind: str, reason: str, message: str) -> None:
        self._post_successes()
        try:
            await asyncio.to_thread(self.kube.post_event, self.meta, kind, reason, message)
        except ApiError as error:  # an Event is a courtesy: never fail the rollback for one
            self.logger.warning("could not post the %s Event: %s", reason, error)


def fold_messages(messages: list[str]) -> str:
    """Several steps' outcomes as one Event message: each cut to an equal share of what an
    Event holds, so that every step is named (its whole message is in status.steps)."""
    share = EVENT_MESSAGE_LIMIT // len(messages) - len(FOLD_SEPARATOR)
    return FOLD_SEPARATOR.join(m if len(m) <= share else m[: share - 1] + "…" for m in messages)
