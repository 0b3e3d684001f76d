"""PurgeCDN (runbook §2.2): once the workloads are reverted, purge the CDN in front of the
frontend, so that visitors stop getting the bad version's cached pages and assets when traffic
comes back.

A purge is idempotent, so it is retried freely: on 429 after the Retry-After the provider
asks for, on 5xx and network trouble with a backoff (1, 2, 4 ... 30 s), until `cdn.timeout`
counted from the step's start in the ledger (so a restart does not grant a new timeout). A
refusal that a retry would not change (a bad token, an unknown zone) fails the run at once,
with the maintenance page still on.

The step never sleeps in its thread: it returns `Wait` and is called again, in slices of at
most a few seconds, so an abort or a shutdown is never held up by a long Retry-After. What it
must remember between those calls (which request of a batched purge is next, how many retries,
when the next one is due) lives in this process only. That is deliberate: every piece of it is
safe to lose. After a restart the step starts over from its first request, at most repeating
purges that already succeeded, which a purge allows; the deadline still counts from the
ledger. Once the step is Done the ledger records it, and a finished step is never run again;
only a crash in the short window between the provider's answer and that ledger write can
repeat the purge, once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from rollback_operator.cdn import CdnSpec, PurgeRequest, clean_token, purge_requests, token_problem
from rollback_operator.cdn_http import Purged, Refused, Retry, backoff, describe_wait, send
from rollback_operator.clock import stamp
from rollback_operator.deadlines import Deadline
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.redaction import display_url
from rollback_operator.steps.base import Done, Fail, Outcome, References, StepContext, Wait

logger = logging.getLogger(__name__)

WAIT_SLICE = 5.0  # the longest single Wait: abort and shutdown are seen at least this often
MIN_RETRY = 0.5  # even "Retry-After: 0" does not turn the loop into a busy one
# One call of the step sends purge requests for at most this long (each request gets what is
# left of it, and never more than the step's deadline), so that the runner, which sees an abort
# between calls, is never held up longer; a provider slower than this is retried with backoff.
CALL_SECONDS = 4.0
MIN_REQUEST_SECONDS = 2.0  # the least a further request of a batch starts with in one call
FORGET_AFTER = timedelta(hours=1)  # progress of a run that went away (aborted, deleted)

_Key = tuple[str, str, str]


@dataclass
class _Progress:
    """Where one run's purge stands, between calls of `run` (see the module's docstring)."""

    deadline: datetime
    done: int = 0  # requests answered with success
    details: list[str] = field(default_factory=list)
    failures: int = 0  # retryable answers to the current request, for the backoff
    retries: int = 0  # all retries, for the summary
    not_before: datetime | None = None
    waiting: str = ""  # the ledger message while waiting for `not_before`
    last_problem: str = ""  # the last retryable answer, for the message if time runs out


def preflight_problems(ctx: StepContext) -> list[str]:
    """What Preflight must refuse before the site is touched: a token Secret or key that is
    missing, empty, or unusable in a header. Reads the Secret; never quotes its value."""
    spec = CdnSpec.of(ctx.spec)
    if spec is None or spec.credentials is None:
        return []
    ref = spec.credentials
    token = clean_token(ctx.kube.secret_value(ctx.namespace, ref.name, ref.key))
    problem = token_problem(token, ref)
    return [] if problem is None else [f"cdn: {problem}"]


class PurgeCDN:
    name = StepName.PURGE_CDN
    records_before_acting = False
    preflight = References(preflight_problems)

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._transport = transport  # tests hand in a fake; None: the network
        self._lock = threading.Lock()
        self._runs: dict[_Key, _Progress] = {}

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        return None if CdnSpec.of(spec) is not None else "no spec.cdn"

    def plan(self, ctx: StepContext) -> str:
        spec = _spec(ctx)
        calls = _calls(ctx, spec)
        urls = sorted({display_url(c.url) for c in calls})
        auth = f", with the token in {spec.credentials}" if spec.credentials else ""
        return (
            f"would purge {spec.purge.describe()} of {spec.where}: {len(calls)} POST "
            f"request(s) to {', '.join(urls)}{auth}, retried until cdn.timeout "
            f"{describe_wait(spec.timeout_seconds)}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        spec = _spec(ctx)
        now = ctx.now()
        key = (ctx.namespace, ctx.request, stamp(ctx.step_started_at))
        deadline = ctx.step_started_at + timedelta(seconds=spec.timeout_seconds)
        progress = self._progress(key, deadline, now)
        if progress.not_before is not None and now < progress.not_before:
            left = (progress.not_before - now).total_seconds()
            return Wait(progress.waiting, retry_after=min(WAIT_SLICE, left))

        token: str | None = None
        if spec.credentials is not None:
            ref = spec.credentials
            token = clean_token(ctx.kube.secret_value(ctx.namespace, ref.name, ref.key))
            problem = token_problem(token, ref)
            if problem is not None:
                self._forget(key)
                return Fail(
                    f"cannot purge {spec.where}: {problem}. Fix the Secret, then purge the CDN "
                    "by hand or create a new RollbackRequest; the maintenance page is still on."
                )

        calls = _calls(ctx, spec)
        call_budget = Deadline(CALL_SECONDS)  # this call of the step, not the whole purge
        sent = 0
        while progress.done < len(calls):
            call = calls[progress.done]
            now = ctx.now()
            left = (deadline - now).total_seconds()
            if left <= 0:
                self._forget(key)
                return Fail(_gave_up(spec, progress.last_problem or "no answer in time"))
            if sent and call_budget.left() < MIN_REQUEST_SECONDS:
                # The rest of a batch in the next call: the runner sees an abort in between.
                return Wait(
                    f"purged {progress.done} of {len(calls)} requests of {spec.where}",
                    retry_after=0.0,
                )
            answer = send(
                spec,
                call,
                token,
                deadline=call_budget.within(left),
                now=now,
                transport=self._transport,
            )
            sent += 1
            if isinstance(answer, Purged):
                progress.done += 1
                progress.failures = 0
                progress.not_before = None
                if answer.detail:
                    progress.details.append(answer.detail)
            elif isinstance(answer, Refused):
                self._forget(key)
                return Fail(f"could not purge {spec.where}: {answer.message}")
            elif isinstance(answer, Retry):
                return self._retry(
                    key,
                    spec=spec,
                    call=call,
                    answer=answer,
                    progress=progress,
                    now=ctx.now(),
                    total=len(calls),
                )
        self._forget(key)
        return Done(_summary(spec, len(calls), progress))

    def _retry(
        self,
        key: _Key,
        *,
        spec: CdnSpec,
        call: PurgeRequest,
        answer: Retry,
        progress: _Progress,
        now: datetime,
        total: int,
    ) -> Outcome:
        progress.failures += 1
        progress.retries += 1
        progress.last_problem = answer.reason
        asked = answer.after is not None
        delay = (
            max(MIN_RETRY, answer.after) if answer.after is not None else backoff(progress.failures)
        )
        if now + timedelta(seconds=delay) >= progress.deadline:
            self._forget(key)
            why = (
                f"{answer.reason}, and the wait it asks for ({describe_wait(delay)}) ends after"
                if asked
                else f"{answer.reason}, and no retry fits before"
            )
            return Fail(_gave_up(spec, why + f" the step's deadline {_clock(progress.deadline)}"))
        progress.not_before = now + timedelta(seconds=delay)
        which = f" ({call.what})" if total > 1 else ""
        how = f"as {answer.asked_by} asks" if asked else "backing off"
        progress.waiting = (
            f"{answer.reason}; retrying{which} in {describe_wait(delay)}, {how} "
            f"(attempt {progress.failures + 1}, giving up at {_clock(progress.deadline)})"
        )
        logger.info("PurgeCDN %s/%s: %s", key[0], key[1], progress.waiting)
        return Wait(progress.waiting, retry_after=min(WAIT_SLICE, delay))

    def _progress(self, key: _Key, deadline: datetime, now: datetime) -> _Progress:
        with self._lock:
            for stale in [k for k, p in self._runs.items() if p.deadline + FORGET_AFTER < now]:
                del self._runs[stale]
            return self._runs.setdefault(key, _Progress(deadline=deadline))

    def _forget(self, key: _Key) -> None:
        with self._lock:
            self._runs.pop(key, None)


def _spec(ctx: StepContext) -> CdnSpec:
    spec = CdnSpec.of(ctx.spec)
    if spec is None:  # the engine skips the step without spec.cdn
        raise ValueError("PurgeCDN run without spec.cdn")
    return spec


def _calls(ctx: StepContext, spec: CdnSpec) -> list[PurgeRequest]:
    return purge_requests(
        spec,
        namespace=ctx.namespace,
        request=ctx.request,
        step_started=stamp(ctx.step_started_at),
    )


def _summary(spec: CdnSpec, requests: int, progress: _Progress) -> str:
    parts = [f"purged {spec.purge.describe()} of {spec.where}"]
    if requests > 1:
        parts.append(f"in {requests} requests")
    if progress.details:
        shown = ", ".join(progress.details[:3])
        more = f" and {len(progress.details) - 3} more" if len(progress.details) > 3 else ""
        parts.append(f"({shown}{more})")
    if progress.retries:
        parts.append(f"after {progress.retries} retr{'y' if progress.retries == 1 else 'ies'}")
    return " ".join(parts)


def _gave_up(spec: CdnSpec, why: str) -> str:
    return (
        f"gave up purging {spec.where} within cdn.timeout {describe_wait(spec.timeout_seconds)}: "
        f"{why}. The maintenance page is still on: purge the CDN by hand (or wait for the "
        "provider), then create a new RollbackRequest or restore traffic from status.saved."
    )


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")
