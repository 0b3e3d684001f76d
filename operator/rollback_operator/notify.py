"""Notifications: tell the people on call where a rollback stands, in Slack or any JSON receiver.

`spec.notify` lists webhooks. Each is told of the run's start, of each wait for an approval, and
of its end (Failed, Aborted or Succeeded), with the state as it is at that moment: phase, step,
message, trigger, reason and the kubectl commands to follow the run from a terminal.

A notification is a courtesy, never a gate: a webhook that is down, slow or refusing costs the
run a few seconds at most (short timeouts, two quick retries on throttling and server errors:
`webhook_post.py`), and its failure is reported in `status.notifications` and a Warning
Event, never in the run's outcome.

`status.notifications[].lastEvent` also makes delivery once-only across operator restarts: an
event is sent to a webhook only if it comes later in the run than the last event that webhook
was sent (or attempted). Events only move forward (Started, then each approval wait in step
order, then the end), so "later" is a plain comparison; see `rank`.

The webhook URL may embed a credential (a Slack incoming-webhook URL does), so it never appears
in the status, an Event, a log line or an error message: errors are built from the status code
and the receiver's body (`webhook_post.py`), with any trace of the URL removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx

from rollback_operator import clock
from rollback_operator.model import STEP_ORDER, Phase, RollbackSpec, SecretKeyRef, SpecSection
from rollback_operator.redaction import scrub
from rollback_operator.status import Status
from rollback_operator.webhook_post import BUDGET, Attempted, post

SECTION = "notifications"  # status.notifications


class Event(StrEnum):
    STARTED = "Started"
    AWAITING_APPROVAL = "AwaitingApproval"
    FAILED = "Failed"
    ABORTED = "Aborted"
    SUCCEEDED = "Succeeded"

    @property
    def final(self) -> bool:
        """The run's end: the events named after the terminal phases."""
        return self.value in {phase.value for phase in Phase if phase.terminal}


class Format(StrEnum):
    SLACK = "slack"
    JSON = "json"


# --- the spec


@dataclass(frozen=True)
class Webhook:
    """One entry of spec.notify: where to POST, in which format, for which events."""

    name: str
    url: str | None
    url_secret: SecretKeyRef | None
    format: Format
    events: frozenset[Event]

    def wants(self, event: Event) -> bool:
        return event in self.events

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Webhook:
        events = raw.get("events")
        return cls(
            name=raw["name"],
            url=raw.get("url"),
            url_secret=SecretKeyRef.optional(raw.get("urlSecretRef")),
            format=Format(raw.get("format", Format.JSON)),
            events=frozenset(Event) if events is None else frozenset(Event(e) for e in events),
        )


@dataclass(frozen=True)
class NotifySpec(SpecSection):
    """spec.notify, typed. The API server has validated it (one of url and urlSecretRef,
    known formats and events), so parsing only gives it names."""

    SPEC_KEY = "notify"  # absent: nobody is notified

    webhooks: tuple[Webhook, ...] = ()

    @classmethod
    def parse(cls, raw: Sequence[dict[str, Any]] | None) -> NotifySpec:
        return cls(tuple(Webhook.parse(dict(w)) for w in raw or ()))


# --- what is sent


@dataclass(frozen=True)
class Notification:
    """One event of one run, with the state it is sent with."""

    event: Event
    namespace: str
    name: str
    uid: str
    phase: str
    step: str | None
    message: str
    trigger: str
    reason: str
    dry_run: bool
    time: str

    @classmethod
    def of(
        cls,
        event: Event,
        *,
        namespace: str,
        name: str,
        uid: str,
        spec: RollbackSpec,
        status: Status,
        now: datetime,
    ) -> Notification:
        return cls(
            event=event,
            namespace=namespace,
            name=name,
            uid=uid,
            phase=str(status.phase),
            step=str(status.step) if status.step else None,
            message=status.message,
            trigger=spec.trigger,
            reason=spec.reason,
            dry_run=spec.dry_run,
            time=clock.stamp(now),
        )

    @property
    def key(self) -> str:
        """What `lastEvent` records: the event, and for an approval wait, whose step it is
        (a run may wait for more than one approval, each notified once)."""
        if self.event == Event.AWAITING_APPROVAL and self.step:
            return f"{self.event}/{self.step}"
        return str(self.event)

    @property
    def commands(self) -> list[str]:
        """Commands to paste into a terminal: where the run stands, and what to do next."""
        where = f"{self.name} -n {self.namespace}"
        commands = [f"kubectl get rbr {where}", f"kubectl rollback status {where}"]
        if self.event == Event.AWAITING_APPROVAL and self.step:
            commands.append(f"kubectl rollback approve {self.name} {self.step} -n {self.namespace}")
        if self.event.final and not self.dry_run:
            commands.append(f"kubectl rollback report {where}")
        return commands


def rank(key: str | None) -> int:
    """The place of an event (a `Notification.key`) in a run; -1 for none or unknown.

    A run starts, may wait for approvals (in step order, since steps run in order), then ends:
    an event is new to a webhook exactly when it ranks above the last one it was sent.
    """
    if not key:
        return -1
    event, _, step = key.partition("/")
    if event == Event.STARTED:
        return 0
    if event == Event.AWAITING_APPROVAL:
        names = [str(s) for s in STEP_ORDER]
        return 1 + (names.index(step) if step in names else 0)
    if event in (Event.FAILED, Event.ABORTED, Event.SUCCEEDED):
        return 1 + len(STEP_ORDER)
    return -1


_TITLES = {
    Event.STARTED: ("Rollback started", ":rotating_light:"),
    Event.AWAITING_APPROVAL: ("Rollback awaits approval", ":raised_hand:"),
    Event.FAILED: ("Rollback failed", ":x:"),
    Event.ABORTED: ("Rollback aborted", ":octagonal_sign:"),
    Event.SUCCEEDED: ("Rollback succeeded", ":white_check_mark:"),
}


def json_payload(note: Notification) -> dict[str, Any]:
    """The generic format: the run's state as one flat object, for any JSON receiver."""
    return {
        "event": str(note.event),
        "id": f"{note.uid or f'{note.namespace}/{note.name}'}/{note.key}",
        "namespace": note.namespace,
        "name": note.name,
        "phase": note.phase,
        "step": note.step,
        "message": note.message,
        "trigger": note.trigger,
        "reason": note.reason,
        "dryRun": note.dry_run,
        "time": note.time,
        "commands": note.commands,
    }


def slack_payload(note: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the notification and the fallback where
    blocks are not shown) and Block Kit `blocks`, within Slack's documented size limits."""
    title, emoji = _TITLES[note.event]
    dry = " (dry run)" if note.dry_run else ""
    headline = f"{title}{dry}: {note.name} in {note.namespace}"
    text = f"{emoji} {_escape(headline)}: {_escape(note.message)}"
    commands = "\n".join(note.commands)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, 150)}},
        {
            "type": "section",
            "fields": [
                _field("Phase", note.phase),
                _field("Step", note.step or "-"),
                _field("Trigger", note.trigger),
                _field("Namespace", note.namespace),
            ],
        },
        {"type": "section", "text": _mrkdwn(f"*Reason:* {_escape(note.reason)}")},
        {"type": "section", "text": _mrkdwn(f"*Message:* {_escape(note.message)}")},
        {"type": "section", "text": _mrkdwn(f"```{_escape(commands)}```")},
        {"type": "context", "elements": [_mrkdwn(f"{note.event} at {note.time}")]},
    ]
    return {"text": _cut(text, 3000), "blocks": blocks}


def payload(webhook: Webhook, note: Notification) -> dict[str, Any]:
    """What `webhook` is sent. The free texts are scrubbed before they are escaped and cut to
    Slack's limits, which could leave half a token no rule recognises (webhook_post scrubs the
    whole body again on its way out)."""
    note = replace(note, message=scrub(note.message), reason=scrub(note.reason))
    return slack_payload(note) if webhook.format == Format.SLACK else json_payload(note)


def _escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters; they must be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, 3000)}


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_escape(value)}", 2000)}


# --- what the runner calls


URLResolver = Callable[[Webhook], str | None]
"""The webhook's URL: `url`, or the value of `urlSecretRef` (read at each delivery, so a
rotated Secret is picked up); None when the Secret or key is missing. May raise; `RefusedError`
when the URL is one the operator must not contact."""


class RefusedError(Exception):
    """The webhook's URL is one the operator must not contact; the message says why and never
    quotes a URL kept in a Secret."""


@dataclass(frozen=True)
class Delivered:
    """The outcome of one event: the new status.notifications, and a line per failure."""

    notifications: list[dict[str, Any]]
    failures: list[str]
    sent_to: list[str]


def due(
    spec: NotifySpec, current: list[dict[str, Any]] | None, note: Notification
) -> list[Webhook]:
    """The webhooks that want this event and were not yet sent (or attempted) it."""
    last = {e.get("name"): e.get("lastEvent") for e in current or []}
    return [
        w for w in spec.webhooks if w.wants(note.event) and rank(last.get(w.name)) < rank(note.key)
    ]


def deliver(
    note: Notification,
    spec: NotifySpec,
    current: list[dict[str, Any]] | None,
    resolve: URLResolver,
    *,
    budget: float = BUDGET,
    transport: httpx.BaseTransport | None = None,
) -> Delivered:
    """Sends `note` to every webhook it is due to, all at once (so that a dead webhook delays
    the others by nothing), and returns status.notifications updated. Never raises for a
    webhook's trouble: that is what the returned failures are for."""
    targets = due(spec, current, note)
    if not targets:
        return Delivered(list(current or []), [], [])

    def one(webhook: Webhook) -> Attempted:
        try:
            url = resolve(webhook)
        except RefusedError as error:  # an address the operator must not contact (egress.py)
            return Attempted(ok=False, attempts=0, error=f"not sent: {error}")
        except Exception as error:  # e.g. the Secret may not be read: reported, not raised
            return Attempted(ok=False, attempts=0, error=f"could not read its URL: {error}")
        if url is None:
            ref = webhook.url_secret
            where = f"Secret {ref.name} has no key {ref.key}" if ref else "no URL"
            return Attempted(ok=False, attempts=0, error=f"{where} (or the Secret is missing)")
        url = url.strip()
        if not url.startswith(("https://", "http://")):
            return Attempted(ok=False, attempts=0, error="its URL is not an http(s) URL")
        try:
            return post(url, payload(webhook, note), budget=budget, transport=transport)
        except Exception as error:  # a malformed URL, say: named by its kind, never echoed
            return Attempted(ok=False, attempts=1, error=f"could not send: {type(error).__name__}")

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = dict(zip(targets, pool.map(one, targets), strict=True))
    entries = {e["name"]: dict(e) for e in current or [] if e.get("name")}
    failures, sent_to = [], []
    for webhook, result in results.items():
        entry = entries.setdefault(webhook.name, {"name": webhook.name, "sent": 0, "failed": 0})
        entry["lastEvent"] = note.key
        entry["lastAttemptAt"] = clock.stamp(clock.now())
        if result.ok:
            entry["sent"] = int(entry.get("sent", 0)) + 1
            sent_to.append(webhook.name)
        else:
            entry["failed"] = int(entry.get("failed", 0)) + 1
            entry["lastError"] = f"{note.key}: {result.error}"[:1024]
            failures.append(f"webhook {webhook.name}: {note.key} not delivered: {result.error}")
    order = [w.name for w in spec.webhooks]
    ordered = sorted(
        entries.values(), key=lambda e: order.index(e["name"]) if e["name"] in order else len(order)
    )
    return Delivered(ordered, failures, sent_to)
