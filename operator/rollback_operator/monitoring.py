"""The watch after traffic is back (runbook §2.5, with the §1 thresholds): what to query, how to
ask Prometheus, and what the answers mean.

Three parts, kept apart so that the judgement is unit-tested without a network:

- `MonitoringSpec`: `spec.monitoring`, typed, with the default queries an SRE already has
  (`http_requests_total` and `http_request_duration_seconds` of the request's namespace).
- `Prometheus`: one instant query through the HTTP API, its answer reduced to a number,
  "no data", or a failure that says whose fault it is (unreachable, refused query, ...).
- `Watch` and `record`/`verdict`/`conclusion`: the running tally kept in `status.monitoring`.
  Everything the watch knows lives there, so a restarted operator carries on counting where
  the last one stopped.

"No data" and Prometheus errors are never counted as healthy: an evaluation that could not
measure every rule neither advances nor resets a rule's count of consecutive breaches, and
`for` such evaluations in a row end the watch as "could not measure".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import httpx

from rollback_operator.clock import stamp
from rollback_operator.model import RollbackSpec, parse_duration
from rollback_operator.redaction import without_credentials

ERROR_RATE = "errorRate"
LATENCY = "latency"
ON_BREACH_FAIL = "Fail"
ON_BREACH_MAINTENANCE = "Maintenance"

# The rate window of the default queries: four scrapes at a 30 s scrape interval, and still two
# at Prometheus' default of 1 m; short enough that, a couple of minutes after traffic is back,
# what the bad version did before the rollback no longer counts.
DEFAULT_WINDOW = "2m"

# `or vector(0)`: without it, a healthy application that served no 5xx at all in the window
# (so no 5xx series) would read as "no data". No requests at all is still no data (0/0).
DEFAULT_ERROR_RATE_QUERY = (
    f'(sum(rate(http_requests_total{{namespace="$namespace",status=~"5.."}}[{DEFAULT_WINDOW}]))'
    " or vector(0))"
    f' / sum(rate(http_requests_total{{namespace="$namespace"}}[{DEFAULT_WINDOW}]))'
)
DEFAULT_LATENCY_QUERY = (
    "histogram_quantile(0.95, sum by (le) ("
    f'rate(http_request_duration_seconds_bucket{{namespace="$namespace"}}[{DEFAULT_WINDOW}])))'
)
DEFAULT_THRESHOLDS = {ERROR_RATE: 0.05, LATENCY: 5.0}  # runbook §1: > 5 %, > 5 s
DEFAULT_QUERIES = {ERROR_RATE: DEFAULT_ERROR_RATE_QUERY, LATENCY: DEFAULT_LATENCY_QUERY}
RULE_NAMES = (ERROR_RATE, LATENCY)

QUERY_TIMEOUT_SECONDS = 10.0

_NAMESPACE_PLACEHOLDER = re.compile(r"\$\{namespace\}|\$namespace\b")


def with_namespace(query: str, namespace: str) -> str:
    """`query` with `$namespace` (or `${namespace}`) replaced by the request's namespace, so
    one query can be shared by the requests of every namespace. Namespace names are DNS labels:
    nothing in them needs quoting inside a PromQL string."""
    return _NAMESPACE_PLACEHOLDER.sub(namespace, query)


# --- spec.monitoring


@dataclass(frozen=True)
class Rule:
    """One threshold to watch: the query's value must stay at or below `threshold`."""

    name: str
    query: str
    threshold: float


@dataclass(frozen=True)
class MonitoringSpec:
    prometheus_url: str
    duration_seconds: float
    interval_seconds: float
    for_count: int
    on_breach: str
    queries: dict[str, str | None]  # by rule name; None: the default query
    thresholds: dict[str, float]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> MonitoringSpec:
        """`spec.monitoring` as the API server stored it (schema and CEL already checked; the
        defaults filled in, but filled in again here for objects written before they were)."""
        queries: dict[str, str | None] = {}
        thresholds: dict[str, float] = {}
        for name in RULE_NAMES:
            section = raw.get(name) or {}
            queries[name] = section.get("query") or None
            thresholds[name] = float(section.get("threshold", DEFAULT_THRESHOLDS[name]))
        return cls(
            prometheus_url=str(raw["prometheus"]["url"]),
            duration_seconds=parse_duration(raw.get("duration", "30m")),
            interval_seconds=parse_duration(raw.get("interval", "30s")),
            for_count=int(raw.get("for", 3)),
            on_breach=str(raw.get("onBreach", ON_BREACH_FAIL)),
            queries=queries,
            thresholds=thresholds,
        )

    @classmethod
    def of(cls, spec: RollbackSpec) -> MonitoringSpec | None:
        """The request's `spec.monitoring`, or None when it has none (Monitor is Skipped)."""
        raw = spec.sections.get("monitoring")
        return None if raw is None else cls.parse(raw)

    def rules(self, namespace: str) -> tuple[Rule, ...]:
        """The rules with their queries as evaluated: the default ones, or the request's own,
        with `$namespace` substituted."""
        return tuple(
            Rule(
                name=name,
                query=with_namespace(self.queries[name] or DEFAULT_QUERIES[name], namespace),
                threshold=self.thresholds[name],
            )
            for name in RULE_NAMES
        )

    @property
    def switches_maintenance_on(self) -> bool:
        return self.on_breach == ON_BREACH_MAINTENANCE


# --- Prometheus


@dataclass(frozen=True)
class Measured:
    value: float
    series: int = 1  # how many series the query returned; the highest value counts


@dataclass(frozen=True)
class NoData:
    detail: str


@dataclass(frozen=True)
class QueryFailed:
    detail: str
    invalid_query: bool = False  # Prometheus refused the expression itself (HTTP 400 bad_data)


Result = Measured | NoData | QueryFailed


class Prometheus:
    """Instant queries through Prometheus' HTTP API (`POST /api/v1/query`, form-encoded, so
    that a long query never meets a URL length limit)."""

    def __init__(
        self,
        url: str,
        timeout: float = QUERY_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.transport = transport

    def query(self, expression: str) -> Result:
        where = f"Prometheus at {without_credentials(self.url)}"
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.post(
                    f"{self.url}/api/v1/query",
                    data={"query": expression, "timeout": f"{self.timeout:g}s"},
                    headers={"Accept": "application/json"},
                )
        except httpx.TimeoutException:
            return QueryFailed(f"{where} did not answer within {self.timeout:g}s")
        except httpx.HTTPError as error:
            return QueryFailed(
                f"{where} could not be reached ({type(error).__name__}: {error or 'no detail'})"
            )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return interpret(response.status_code, payload, where)


def interpret(status_code: int, payload: Any, where: str = "Prometheus") -> Result:
    """What an answer of `/api/v1/query` means for a rule that needs one number.

    Several series: the highest value counts (a per-service ratio over the threshold is a
    breach). An empty vector, or NaN (a ratio of no requests, a quantile of no observations),
    is "no data": nothing was measured. Infinities, which JSON cannot carry into the status,
    are "no data" too, with the reason.
    """
    if not isinstance(payload, dict) or "status" not in payload:
        return QueryFailed(f"{where} answered HTTP {status_code} without a Prometheus API reply")
    if payload["status"] != "success":
        kind = payload.get("errorType", "error")
        error = str(payload.get("error", "no detail"))[:300]
        return QueryFailed(
            f"{where} refused the query (HTTP {status_code}, {kind}): {error}",
            invalid_query=kind == "bad_data",
        )
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        values = [_number(result)]
    elif kind == "vector":
        values = [_number(sample.get("value")) for sample in result or []]
    else:
        return QueryFailed(
            f"the query returned a {kind}, not one number: use an instant vector or scalar "
            "expression (no range selector at the end)",
            invalid_query=True,
        )
    if not values:
        return NoData(
            "the query returned no data (no matching series: no traffic, or wrong labels)"
        )
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        shown = ", ".join(sorted({_show(v) for v in values}))
        return NoData(f"the query returned {shown}, not a number (no requests in the window?)")
    return Measured(max(finite), series=len(values))


def _number(sample: Any) -> float | None:
    """The value of a `[timestamp, "value"]` pair (Prometheus sends numbers as strings)."""
    try:
        return float(sample[1])
    except (TypeError, ValueError, IndexError):
        return None


def _show(value: float | None) -> str:
    if value is None:
        return "an unreadable value"
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


# --- the watch, as kept in status.monitoring

HEALTHY, OVER, NO_DATA, ERROR = "Healthy", "Over", "NoData", "Error"


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
        out: dict[str, Any] = {
            "name": self.name,
            "query": self.query,
            "threshold": self.threshold,
            "consecutive": self.consecutive,
        }
        for key, value in (("value", self.value), ("peak", self.peak), ("result", self.result)):
            if value is not None:
                out[key] = value
        return out


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
                "rules": [r.to_dict() for r in self.rules],
            }
        )
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


def record(watch: Watch, results: dict[str, Result], now: datetime, elapsed: float) -> Watch:
    """The tally after one evaluation: each rule's result, and the evaluation counted once, as
    healthy (every rule measured and within its threshold), over, no data or error."""
    new = replace(watch, rules=[replace(r) for r in watch.rules], extra=dict(watch.extra))
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


def breach_message(state: RuleState, watch: Watch) -> str:
    return (
        f"{describe_rule(state.name)} {show_value(state.name, state.value)} is above the "
        f"{show_value(state.name, state.threshold)} threshold for {state.consecutive} "
        f"consecutive evaluations (peak {show_value(state.name, state.peak)}), "
        f"{show_duration(watch.elapsed_seconds)} after traffic returned"
    )


def blind_message(watch: Watch, prometheus_url: str) -> str:
    return (
        f"could not measure for {watch.unmeasured_streak} consecutive evaluations "
        f"({watch.errors} Prometheus error(s), {watch.no_data} without data, of "
        f"{watch.evaluations}): {watch.last_error}. Traffic stays on the application; check "
        f"Prometheus at {without_credentials(prometheus_url)} and the queries in "
        "status.monitoring.rules, and watch the error rate and latency by hand (runbook §2.5)"
    )


def conclusion(watch: Watch) -> tuple[bool, str, tuple[str, ...]]:
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
    took = show_duration(watch.elapsed_seconds)
    if measured * 2 < watch.evaluations or measured == 0:
        return (
            False,
            f"could measure only {measured} of {watch.evaluations} evaluations in {took} "
            f"({counts}; last: {watch.last_error}). Traffic stays on the application; "
            "check Prometheus and the queries, and watch the application by hand (runbook §2.5)",
            (),
        )
    warnings = []
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
    of = f"{show_duration(watch.elapsed_seconds)} of {show_duration(watch.duration_seconds)}"
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


def describe_rule(name: str) -> str:
    return {ERROR_RATE: "error rate", LATENCY: "latency"}.get(name, name)


def show_value(name: str, value: float | None) -> str:
    """An error rate as a percentage, a latency in seconds (or milliseconds)."""
    if value is None:
        return "-"
    if name == ERROR_RATE:
        return f"{value * 100:.2f} %"
    if name == LATENCY and value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s" if name == LATENCY else f"{value:g}"


def show_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def configuration_problems(spec: MonitoringSpec) -> list[str]:
    """Settings the schema cannot compare with each other: a watch that could never see a
    breach, because `for` evaluations do not fit in its duration."""
    problems = []
    if spec.interval_seconds > spec.duration_seconds:
        problems.append(
            f"monitoring.interval ({show_duration(spec.interval_seconds)}) is longer than "
            f"monitoring.duration ({show_duration(spec.duration_seconds)})"
        )
    elif spec.for_count * spec.interval_seconds > spec.duration_seconds:
        problems.append(
            f"monitoring.for ({spec.for_count}) evaluations every "
            f"{show_duration(spec.interval_seconds)} do not fit in monitoring.duration "
            f"({show_duration(spec.duration_seconds)}): a breach could never be seen; lower "
            "for or interval, or watch longer"
        )
    return problems
