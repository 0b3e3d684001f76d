"""Prometheus, as the Monitor step asks it: one instant query through the HTTP API, its answer
reduced to what a rule needs (a number, "no data", or a failure that says whose fault it is:
unreachable, a refused query, an answer that is not one number).

Kept apart from the watch's arithmetic (`monitoring_watch.py`), which only sees these results,
so that the judgement is unit-tested without a network, and from the spec (`monitoring.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from rollback_operator.deadlines import Deadline, request
from rollback_operator.redaction import without_credentials

# One query, connection to the last byte of the answer. Short, because the Monitor step waits for
# it (and the runner sees an abort only once the step returns): an instant query of the watch's
# rules takes milliseconds; one that takes seconds is an evaluation that could not measure.
QUERY_TIMEOUT_SECONDS = 4.0


@dataclass(frozen=True)
class Measured:
    value: float
    series: int = 1  # how many series the query returned; the highest value counts


@dataclass(frozen=True)
class NoData:
    detail: str  # why no number came back: no matching series, or none of them finite


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
        """One instant query, connection to the last byte of the answer within `timeout`
        (Prometheus is asked to give up by then too)."""
        where = f"Prometheus at {without_credentials(self.url)}"
        deadline = Deadline(self.timeout)
        try:
            response = request(
                "POST",
                f"{self.url}/api/v1/query",
                deadline=deadline,
                transport=self.transport,
                data={"query": expression, "timeout": f"{self.timeout:g}s"},
                headers={"Accept": "application/json"},
            )
        except httpx.TimeoutException:
            return QueryFailed(f"{where} did not answer within {deadline.shown}")
        except httpx.HTTPError as error:
            return QueryFailed(
                f"{where} could not be reached ({type(error).__name__}: {error or 'no detail'})"
            )
        try:
            payload = json.loads(response.content)
        except ValueError:
            payload = None
        return interpret(response.status_code, payload, where)


class Queries(Protocol):
    def query(self, expression: str) -> Result: ...


def query_all(prometheus: Queries, expressions: Mapping[str, str]) -> dict[str, Result]:
    """Every expression at once, each in a thread of its own: an evaluation takes as long as
    its slowest query (at most one query's timeout), not their sum."""
    with ThreadPoolExecutor(max_workers=max(1, len(expressions))) as pool:
        futures = {name: pool.submit(prometheus.query, e) for name, e in expressions.items()}
        return {name: future.result() for name, future in futures.items()}


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
