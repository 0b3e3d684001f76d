"""The watch after traffic is back (runbook §2.5, with the §1 thresholds): what to query and
against which thresholds, as `spec.monitoring` says, and how its figures are shown.

The watch has three parts, kept apart so that its judgement is unit-tested without a network:

- this module: `MonitoringSpec`, `spec.monitoring` typed, with the default queries an SRE
  already has (`http_requests_total` and `http_request_duration_seconds` of the request's
  namespace), its rules, and the words and units every message about them uses;
- `prometheus.py`: one instant query, its answer reduced to a number, "no data", or a failure
  that says whose fault it is;
- `monitoring_watch.py`: the running tally kept in `status.monitoring`, and what it means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollback_operator.model import SpecSection, parse_duration

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

    name: str  # one of RULE_NAMES: how messages and the ledger name the rule
    query: str
    threshold: float


@dataclass(frozen=True)
class MonitoringSpec(SpecSection):
    SPEC_KEY = "monitoring"  # absent: Monitor is Skipped

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
