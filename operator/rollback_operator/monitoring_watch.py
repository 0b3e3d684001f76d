"""The watch, as kept in `status.monitoring` (runbook §2.5): each evaluation's results counted
into a running tally, whether the watch must stop (`verdict`), and what it concluded.

Everything the watch knows lives in that tally, so a restarted operator carries on counting where
the last one stopped. "No data" and Prometheus errors are never counted as healthy: an
evaluation that could not measure every rule neither advances nor resets a rule's count of
consecutive breaches, and `for` such evaluations in a row end the watch as "could not measure".

Time is watched only where evaluations were made: the time between two evaluations (or between
traffic's return and the first one) counts as watched when they are at most a few intervals
apart (`gap_after`), else it is a gap, recorded with its times. The step extends the watch by
its gaps, up to `MAX_STRETCH` times the duration, and fails it as "not watched" beyond that.

Pure arithmetic on the results `prometheus.py` returns, unit-tested without a network; the step
that evaluates and records is `steps/monitor.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rollback_operator.clock import parse, stamp
from rollback_operator.monitoring import (
    Rule,
    describe_rule,
    show_duration,
    show_value,
)
from rollback_operator.prometheus import Measured, NoData, Result
from rollback_operator.redaction import without_credentials
from rollback_operator.status import record_dict

HEALTHY, OVER, NO_DATA, ERROR = "Healthy", "Over", "NoData", "Error"

# An honest watch: time without an evaluation is not watched. Two evaluations (or the step's
# start and the first one) further apart than this many intervals, and at least GAP_MIN_SECONDS,
# leave a gap: the operator was not running, not leading, or could not act on the request.
GAP_INTERVALS = 3
GAP_MIN_SECONDS = 30.0
# The watch is extended by its gaps, so that `duration` is really watched, until it has lasted
# this many times its duration since traffic returned; a gap that would need more fails it.
MAX_STRETCH = 2
GAPS_KEPT = 20  # in status.monitoring.gaps; unwatchedSeconds counts them all


@dataclass
class RuleState:
    name: str
    query: str
    threshold: float
    value: float | None = None  # the last value measured
    consecutive: int = 0  # consecutive measured evaluations over the threshold
    peak: float | None = None
    result: str | None = None  # the last evaluation's: Healthy, Over, NoData or Error

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)


@dataclass
class Watch:
    """status.monitoring: the tally of the watch so far."""

    rules: list[RuleState]
    elapsed_seconds: int = 0
    duration_seconds: int = 0
    evaluations: int = 0
    healthy: int = 0
    no_data: int = 0
    errors: int = 0
    unmeasured_streak: int = 0
    last_evaluated_at: str | None = None
    last_error: str | None = None
    breach: str | None = None
    maintenance_on: bool = False
    watched_seconds: int = 0  # time between evaluations that were not a gap apart
    unwatched_seconds: int = 0  # the gaps', all together
    gaps: list[dict[str, Any]] = field(default_factory=list)  # {from, to, seconds}
    extra: dict[str, Any] = field(default_factory=dict)  # fields a newer version wrote

    @classmethod
    def load(cls, raw: dict[str, Any] | None, rules: tuple[Rule, ...], duration: float) -> Watch:
        """The stored tally, or a fresh one; each rule's figures found by name."""
        raw = dict(raw or {})
        stored = {r.get("name"): r for r in raw.pop("rules", None) or []}
        states = []
        for rule in rules:
            old = stored.get(rule.name) or {}
            states.append(
                RuleState(
                    name=rule.name,
                    query=rule.query,
                    threshold=rule.threshold,
                    value=old.get("value"),
                    consecutive=int(old.get("consecutive", 0)),
                    peak=old.get("peak"),
                    result=old.get("result"),
                )
            )
        known = {
            "elapsedSeconds",
            "durationSeconds",
            "evaluations",
            "healthy",
            "noData",
            "errors",
            "unmeasuredStreak",
            "lastEvaluatedAt",
            "lastError",
            "breach",
            "maintenanceOn",
            "watchedSeconds",
            "unwatchedSeconds",
            "gaps",
        }
        return cls(
            rules=states,
            elapsed_seconds=int(raw.get("elapsedSeconds", 0)),
            duration_seconds=int(raw.get("durationSeconds", round(duration))),
            evaluations=int(raw.get("evaluations", 0)),
            healthy=int(raw.get("healthy", 0)),
            no_data=int(raw.get("noData", 0)),
            errors=int(raw.get("errors", 0)),
            unmeasured_streak=int(raw.get("unmeasuredStreak", 0)),
            last_evaluated_at=raw.get("lastEvaluatedAt"),
            last_error=raw.get("lastError"),
            breach=raw.get("breach"),
            maintenance_on=bool(raw.get("maintenanceOn", False)),
            # A tally from before gaps were counted: what it called elapsed was watched.
            watched_seconds=int(raw.get("watchedSeconds", raw.get("elapsedSeconds", 0))),
            unwatched_seconds=int(raw.get("unwatchedSeconds", 0)),
            gaps=[dict(g) for g in raw.get("gaps") or []],
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "elapsedSeconds": self.elapsed_seconds,
                "durationSeconds": self.duration_seconds,
                "evaluations": self.evaluations,
                "healthy": self.healthy,
                "noData": self.no_data,
                "errors": self.errors,
                "unmeasuredStreak": self.unmeasured_streak,
                "maintenanceOn": self.maintenance_on,
                "watchedSeconds": self.watched_seconds,
                "unwatchedSeconds": self.unwatched_seconds,
                "rules": [r.to_dict() for r in self.rules],
            }
        )
        if self.gaps:
            out["gaps"] = [dict(g) for g in self.gaps]
        for key, value in (
            ("lastEvaluatedAt", self.last_evaluated_at),
            ("lastError", self.last_error),
            ("breach", self.breach),
        ):
            if value is not None:
                out[key] = value
        return out

    @property
    def measured(self) -> int:
        """Evaluations that measured every rule (each other one is counted once, in errors or
        in noData)."""
        return self.evaluations - self.no_data - self.errors

    def rule(self, name: str) -> RuleState:
        return next(r for r in self.rules if r.name == name)


def gap_after(interval: float) -> float:
    """How far apart two evaluations may be and the time between them still count as watched."""
    return max(GAP_INTERVALS * interval, GAP_MIN_SECONDS)


def record(
    watch: Watch,
    results: dict[str, Result],
    now: datetime,
    elapsed: float,
    *,
    interval: float = 0.0,
) -> Watch:
    """The tally after one evaluation: each rule's result, and the evaluation counted once, as
    healthy (every rule measured and within its threshold), over, no data or error; and the
    time since the last evaluation (or since the watch began, `elapsed` ago) counted as watched,
    or as a gap when longer than `gap_after(interval)`."""
    new = replace(
        watch,
        rules=[replace(r) for r in watch.rules],
        gaps=[dict(g) for g in watch.gaps],
        extra=dict(watch.extra),
    )
    since = (
        parse(watch.last_evaluated_at)
        if watch.last_evaluated_at
        else now - timedelta(seconds=elapsed)
    )
    span = max(0.0, (now - since).total_seconds())
    if interval and span > gap_after(interval):
        new.unwatched_seconds += round(span)
        new.gaps = [*new.gaps, {"from": stamp(since), "to": stamp(now), "seconds": round(span)}]
        new.gaps = new.gaps[-GAPS_KEPT:]
    # What was not a gap was watched (from the elapsed time, so roundings do not add up).
    new.watched_seconds = max(new.watched_seconds, int(elapsed) - new.unwatched_seconds)
    new.evaluations += 1
    new.last_evaluated_at = stamp(now)
    new.elapsed_seconds = max(new.elapsed_seconds, int(elapsed))
    errors: list[str] = []
    missing: list[str] = []
    for state in new.rules:
        result = results[state.name]
        if isinstance(result, Measured):
            state.value = result.value
            state.peak = result.value if state.peak is None else max(state.peak, result.value)
            if result.value > state.threshold:
                state.consecutive += 1
                state.result = OVER
            else:
                state.consecutive = 0
                state.result = HEALTHY
        elif isinstance(result, NoData):
            state.result = NO_DATA  # the count of breaches neither advances nor resets
            missing.append(f"{state.name}: {result.detail}")
        else:
            state.result = ERROR
            errors.append(f"{state.name}: {result.detail}")
    if errors or missing:
        new.unmeasured_streak += 1
        if errors:
            new.errors += 1
        else:
            new.no_data += 1
        new.last_error = "; ".join(errors + missing)[:1024]
    else:
        new.unmeasured_streak = 0
        if all(r.result == HEALTHY for r in new.rules):
            new.healthy += 1
    return new


def verdict(watch: Watch, for_count: int) -> tuple[str, RuleState | None] | None:
    """Whether the watch must stop now: ("breach", rule) when a rule was over its threshold on
    `for` consecutive measured evaluations, ("blind", None) when `for` evaluations in a row
    could not measure every rule; None to go on."""
    for state in watch.rules:
        if state.consecutive >= for_count:
            return "breach", state
    if watch.unmeasured_streak >= for_count:
        return "blind", None
    return None


def unwatched_over_cap(watch: Watch) -> bool:
    """Whether the gaps are more than the watch may be extended by (see MAX_STRETCH)."""
    return watch.unwatched_seconds > watch.duration_seconds * (MAX_STRETCH - 1)


def describe_gaps(watch: Watch, started: datetime) -> str:
    """Which minutes of the watch were not watched: '03:00:00Z-03:31:00Z (minutes 0-31)'."""
    parts = []
    for gap in watch.gaps:
        begin, end = parse(gap["from"]), parse(gap["to"])
        first = int((begin - started).total_seconds() // 60)
        last = math.ceil((end - started).total_seconds() / 60)
        parts.append(
            f"{_clock(begin)}-{_clock(end)} (minutes {first}-{last} of the watch, "
            f"{show_duration(gap['seconds'])})"
        )
    return ", ".join(parts)


NOT_WATCHED_WHY = (
    "no evaluation was made in that time: the operator was not running, not leading, or could "
    "not act on the request"
)


def not_watched_message(watch: Watch, started: datetime) -> str:
    """Monitor's failure when the gaps outgrow what the watch may be extended by: which
    minutes went unwatched, why that happens, and what the SRE does now."""
    return (
        f"not watched: {describe_gaps(watch, started)}; {NOT_WATCHED_WHY}. "
        f"{show_duration(watch.unwatched_seconds)} not watched in all, more than the watch of "
        f"{show_duration(watch.duration_seconds)} can be extended by (to {MAX_STRETCH}x its "
        f"duration); {show_duration(watch.watched_seconds)} watched. Traffic stays on the "
        "application; watch the error rate and latency by hand (runbook §2.5), and find out "
        "why the operator stopped (its logs, and its Lease's holder)"
    )


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")


def breach_message(state: RuleState, watch: Watch) -> str:
    """A rule above its threshold `for` evaluations in a row, with its peak."""
    return (
        f"{describe_rule(state.name)} {show_value(state.name, state.value)} is above the "
        f"{show_value(state.name, state.threshold)} threshold for {state.consecutive} "
        f"consecutive evaluations (peak {show_value(state.name, state.peak)}), "
        f"{show_duration(watch.elapsed_seconds)} after traffic returned"
    )


def blind_message(watch: Watch, prometheus_url: str) -> str:
    """Evaluations that could not measure, `for` in a row: a watch that sees nothing must not
    pass, so the SRE is told where to look and to watch by hand."""
    return (
        f"could not measure for {watch.unmeasured_streak} consecutive evaluations "
        f"({watch.errors} Prometheus error(s), {watch.no_data} without data, of "
        f"{watch.evaluations}): {watch.last_error}. Traffic stays on the application; check "
        f"Prometheus at {without_credentials(prometheus_url)} and the queries in "
        "status.monitoring.rules, and watch the error rate and latency by hand (runbook §2.5)"
    )


def conclusion(watch: Watch, started: datetime | None = None) -> tuple[bool, str, tuple[str, ...]]:
    """At the end of the watch: (succeeded, message, warnings). It succeeds when no breach
    stopped it and at least half the evaluations measured every rule; evaluations that could
    not, and a rule over its threshold (not yet `for` times) at the end, are warned about."""
    measured = watch.measured
    figures = "; ".join(
        f"{describe_rule(r.name)} peak {show_value(r.name, r.peak)} "
        f"(threshold {show_value(r.name, r.threshold)})"
        for r in watch.rules
    )
    counts = (
        f"{watch.evaluations} evaluations: {watch.healthy} healthy, "
        f"{watch.no_data} without data, {watch.errors} Prometheus error(s)"
    )
    took = show_duration(watch.watched_seconds)
    if watch.unwatched_seconds:
        took += (
            f" watched, over {show_duration(watch.elapsed_seconds)} "
            f"({show_duration(watch.unwatched_seconds)} not watched, made up)"
        )
    if measured * 2 < watch.evaluations or measured == 0:
        return (
            False,
            f"could measure only {measured} of {watch.evaluations} evaluations in {took} "
            f"({counts}; last: {watch.last_error}). Traffic stays on the application; "
            "check Prometheus and the queries, and watch the application by hand (runbook §2.5)",
            (),
        )
    warnings = []
    if watch.gaps and started is not None:
        warnings.append(
            f"Monitor did not watch {describe_gaps(watch, started)}: {NOT_WATCHED_WHY}; the "
            "watch was extended by it"
        )
    unmeasured = watch.evaluations - measured
    if unmeasured:
        warnings.append(
            f"Monitor could not measure {unmeasured} of {watch.evaluations} evaluations "
            f"({watch.no_data} without data, {watch.errors} Prometheus error(s)); "
            f"last: {watch.last_error}"
        )
    for state in watch.rules:
        if state.consecutive:
            warnings.append(
                f"Monitor ended with {describe_rule(state.name)} "
                f"{show_value(state.name, state.value)} above the "
                f"{show_value(state.name, state.threshold)} threshold on the last "
                f"{state.consecutive} evaluation(s): keep watching it"
            )
    return True, f"healthy for {took} ({counts}); {figures}", tuple(warnings)


def progress_message(watch: Watch) -> str:
    """The Wait message while watching: the same until the next evaluation, so that a wake-up
    that evaluates nothing writes nothing."""
    of = f"{show_duration(watch.watched_seconds)} of {show_duration(watch.duration_seconds)}"
    if watch.unwatched_seconds:
        of += f" ({show_duration(watch.unwatched_seconds)} not watched, made up)"
    if watch.evaluations == 0:
        return f"watching for {show_duration(watch.duration_seconds)}: first evaluation pending"
    figures = ", ".join(
        f"{describe_rule(r.name)} {_latest(r)} (threshold {show_value(r.name, r.threshold)})"
        for r in watch.rules
    )
    unmeasured = watch.evaluations - watch.measured
    tail = f"; {unmeasured} could not measure" if unmeasured else ""
    return f"watching, {of}: {figures}; {watch.evaluations} evaluations{tail}"


def _latest(state: RuleState) -> str:
    if state.result == NO_DATA:
        return "no data"
    if state.result == ERROR:
        return "not measured (Prometheus error)"
    return show_value(state.name, state.value)
