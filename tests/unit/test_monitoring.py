"""The Monitor step's judgement, without a network: spec.monitoring parsed, Prometheus answers
interpreted, the tally kept in status.monitoring, and the step's timing, breach and resume.

Prometheus is replaced here by httpx's MockTransport (for the client) or by a scripted fake
(for the step); the e2e tier (tests/e2e/test_monitor.py) runs the same code against a real
Prometheus scraping a target the test controls.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from rollback_operator import monitoring_watch
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, Targets
from rollback_operator.monitoring import (
    DEFAULT_ERROR_RATE_QUERY,
    ERROR_RATE,
    LATENCY,
    MonitoringSpec,
    Rule,
)
from rollback_operator.monitoring_watch import Watch
from rollback_operator.prometheus import (
    Measured,
    NoData,
    Prometheus,
    QueryFailed,
    Result,
    interpret,
    query_all,
)
from rollback_operator.redaction import without_credentials
from rollback_operator.registry import STEPS
from rollback_operator.status import Status
from rollback_operator.steps import monitor
from rollback_operator.steps.base import Done, Fail, StepContext, Wait
from rollback_operator.steps.monitor import Monitor
from tests.slow_servers import SlowServer, silent, trickle

NS = "lawyershub"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
URL = "http://prometheus.monitoring:9090"
MAINTENANCE = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
API = {"service": {"name": "backend", "port": {"number": 8080}}}
APP = {"service": {"name": "frontend", "port": {"name": "http"}}}


# --- spec.monitoring


def test_defaults_are_the_runbook_thresholds_and_queries_of_the_namespace() -> None:
    spec = MonitoringSpec.parse({"prometheus": {"url": URL}})
    assert (spec.duration_seconds, spec.interval_seconds, spec.for_count) == (1800, 30, 3)
    assert spec.on_breach == "Fail"
    assert not spec.switches_maintenance_on
    error_rate, latency = spec.rules(NS)
    assert (error_rate.name, error_rate.threshold) == (ERROR_RATE, 0.05)
    assert (latency.name, latency.threshold) == (LATENCY, 5.0)
    assert error_rate.query == (
        '(sum(rate(http_requests_total{namespace="lawyershub",status=~"5.."}[2m]))'
        ' or vector(0)) / sum(rate(http_requests_total{namespace="lawyershub"}[2m]))'
    )
    assert latency.query == (
        "histogram_quantile(0.95, sum by (le) ("
        'rate(http_request_duration_seconds_bucket{namespace="lawyershub"}[2m])))'
    )
    assert "$namespace" in DEFAULT_ERROR_RATE_QUERY


def test_queries_and_thresholds_are_overridable_with_the_namespace_substituted() -> None:
    spec = MonitoringSpec.parse(
        {
            "prometheus": {"url": URL},
            "duration": "1h30m",
            "interval": "15s",
            "for": 5,
            "onBreach": "Maintenance",
            "errorRate": {"query": 'job:errors:ratio{ns="${namespace}"}', "threshold": 0.01},
            "latency": {"query": 'max(p99{namespace="$namespace", x="$namespaces"})'},
        }
    )
    assert (spec.duration_seconds, spec.interval_seconds, spec.for_count) == (5400, 15, 5)
    assert spec.switches_maintenance_on
    error_rate, latency = spec.rules("shop")
    assert error_rate == Rule(ERROR_RATE, 'job:errors:ratio{ns="shop"}', 0.01)
    # Only the exact placeholder is replaced; the default threshold stays.
    assert latency == Rule(LATENCY, 'max(p99{namespace="shop", x="$namespaces"})', 5.0)


# --- Prometheus' answers


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"service": f"s{i}"}, "value": [1767999600.0, v]}
                for i, v in enumerate(values)
            ],
        },
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (vector("0.0123"), Measured(0.0123)),
        (vector("0.01", "0.2", "0.03"), Measured(0.2, series=3)),  # the worst series counts
        (vector("NaN", "0.5"), Measured(0.5, series=2)),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "4.5"]}},
            Measured(4.5),
        ),
    ],
)
def test_a_number_is_measured(payload: dict[str, Any], expected: Measured) -> None:
    assert interpret(200, payload) == expected


def test_no_series_and_nan_are_no_data_not_healthy() -> None:
    empty = interpret(200, vector())
    assert isinstance(empty, NoData)
    assert "no data" in empty.detail
    nan = interpret(200, vector("NaN"))
    assert isinstance(nan, NoData)
    assert "NaN" in nan.detail
    inf = interpret(200, vector("+Inf"))
    assert isinstance(inf, NoData)
    assert "+Inf" in inf.detail


def test_refusals_say_what_prometheus_said_and_whether_the_query_is_wrong() -> None:
    bad = interpret(
        400,
        {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected"},
        "Prometheus at http://p",
    )
    assert bad == QueryFailed(
        "Prometheus at http://p refused the query (HTTP 400, bad_data): "
        "1:5: parse error: unexpected",
        invalid_query=True,
    )
    busy = interpret(503, {"status": "error", "errorType": "timeout", "error": "query timed out"})
    assert isinstance(busy, QueryFailed)
    assert not busy.invalid_query
    proxy = interpret(502, None, "Prometheus at http://p")
    assert proxy == QueryFailed(
        "Prometheus at http://p answered HTTP 502 without a Prometheus API reply"
    )
    matrix = interpret(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert isinstance(matrix, QueryFailed)
    assert matrix.invalid_query
    assert "range selector" in matrix.detail


def test_the_client_posts_the_query_form_encoded() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector("0.02"))

    result = Prometheus(URL + "/", transport=httpx.MockTransport(answer)).query('up{a="b"}')
    assert result == Measured(0.02)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{URL}/api/v1/query"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form == {"query": 'up{a="b"}', "timeout": "4s"}


@pytest.mark.parametrize("server", [trickle, silent], ids=["trickling", "silent"])
def test_a_slow_prometheus_costs_a_query_its_total_deadline(
    server: Callable[[], SlowServer],
) -> None:
    with server() as slow:
        prometheus = Prometheus(slow.url, timeout=2)
        started = time.monotonic()
        results = query_all(prometheus, {ERROR_RATE: "a", LATENCY: "b"})
        took = time.monotonic() - started
    assert took < 2 + 2.0  # both queries at once, each within its deadline
    for result in results.values():
        assert result == QueryFailed(f"Prometheus at {slow.url} did not answer within 2s")


def test_unreachable_and_slow_prometheus_are_failures_without_credentials() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    url = "http://watcher:s3cret@prometheus:9090"
    down = Prometheus(url, transport=httpx.MockTransport(refuse)).query("up")
    assert down == QueryFailed(
        "Prometheus at http://prometheus:9090 could not be reached "
        "(ConnectError: [Errno 111] Connection refused)"
    )
    slow = Prometheus(url, timeout=2, transport=httpx.MockTransport(hang)).query("up")
    assert slow == QueryFailed("Prometheus at http://prometheus:9090 did not answer within 2s")
    assert without_credentials(url) == "http://prometheus:9090"
    assert without_credentials(URL) == URL


# --- the tally


RULES = (Rule(ERROR_RATE, "e", 0.05), Rule(LATENCY, "l", 5.0))


def fresh() -> Watch:
    return Watch.load(None, RULES, 60)


def step(watch: Watch, error_rate: Result, latency: Result, at: float = 10) -> Watch:
    return monitoring_watch.record(
        watch, {ERROR_RATE: error_rate, LATENCY: latency}, T0 + timedelta(seconds=at), at
    )


def test_each_evaluation_is_counted_once_with_each_rule_s_figures() -> None:
    watch = step(fresh(), Measured(0.01), Measured(0.4))
    watch = step(watch, Measured(0.09), Measured(0.3), at=20)
    watch = step(watch, NoData("none"), Measured(0.2), at=30)
    watch = step(watch, QueryFailed("down"), NoData("none"), at=40)
    assert (watch.evaluations, watch.healthy, watch.no_data, watch.errors) == (4, 1, 1, 1)
    assert watch.measured == 2
    assert watch.unmeasured_streak == 2
    assert watch.last_error == "errorRate: down; latency: none"
    assert watch.last_evaluated_at == "2026-01-10T03:00:40.000Z"
    assert watch.elapsed_seconds == 40
    error_rate = watch.rule(ERROR_RATE)
    assert (error_rate.value, error_rate.peak, error_rate.result) == (0.09, 0.09, "Error")
    # The breach count survives evaluations that measured nothing: neither advanced nor reset.
    assert error_rate.consecutive == 1
    latency = watch.rule(LATENCY)
    assert (latency.value, latency.peak, latency.result, latency.consecutive) == (
        0.2,
        0.4,
        "NoData",
        0,
    )
    watch = step(watch, Measured(0.01), Measured(0.2), at=50)
    assert watch.unmeasured_streak == 0
    assert watch.rule(ERROR_RATE).consecutive == 0


def test_the_tally_round_trips_through_the_status() -> None:
    watch = step(fresh(), Measured(0.07), NoData("none"))
    watch.breach, watch.maintenance_on = "error rate over", True
    raw = json.loads(json.dumps(watch.to_dict()))
    assert raw["rules"][0] == {
        "name": ERROR_RATE,
        "query": "e",
        "threshold": 0.05,
        "value": 0.07,
        "peak": 0.07,
        "consecutive": 1,
        "result": "Over",
    }
    assert raw["rules"][1] == {"name": LATENCY, "query": "l", "threshold": 5.0, "consecutive": 0,
                               "result": "NoData"}  # fmt: skip
    raw["futureField"] = 1
    again = Watch.load(raw, RULES, 60)
    assert again.to_dict() == raw


def test_a_breach_is_for_consecutive_measured_evaluations_over_the_threshold() -> None:
    watch = fresh()
    for at, value in enumerate([0.06, 0.07], start=1):
        watch = step(watch, Measured(value), Measured(1), at=at)
        assert monitoring_watch.verdict(watch, 3) is None
    watch = step(watch, NoData("gap"), Measured(1), at=3)
    assert monitoring_watch.verdict(watch, 3) is None
    watch = step(watch, Measured(0.08), Measured(1), at=4)
    found = monitoring_watch.verdict(watch, 3)
    assert found is not None
    assert found[0] == "breach"
    assert found[1] is watch.rule(ERROR_RATE)
    assert monitoring_watch.breach_message(watch.rule(ERROR_RATE), watch) == (
        "error rate 8.00 % is above the 5.00 % threshold for 3 consecutive evaluations "
        "(peak 8.00 %), 4s after traffic returned"
    )


def test_the_threshold_itself_is_acceptable() -> None:
    watch = fresh()
    for at in range(5):
        watch = step(watch, Measured(0.05), Measured(5.0), at=at)
    assert monitoring_watch.verdict(watch, 1) is None
    assert watch.healthy == 5


def test_for_evaluations_in_a_row_without_a_measure_are_blind() -> None:
    watch = fresh()
    watch = step(watch, QueryFailed("Prometheus at http://p could not be reached"), Measured(1))
    watch = step(watch, NoData("none"), Measured(1))
    assert monitoring_watch.verdict(watch, 3) is None
    watch = step(watch, QueryFailed("Prometheus at http://p could not be reached"), Measured(1))
    assert monitoring_watch.verdict(watch, 3) == ("blind", None)
    message = monitoring_watch.blind_message(watch, "http://u:p@p")
    assert message.startswith(
        "could not measure for 3 consecutive evaluations (2 Prometheus error(s), 1 without data, "
        "of 3): errorRate: Prometheus at http://p could not be reached."
    )
    assert "u:p" not in message


def test_the_end_of_a_healthy_watch_gives_the_figures() -> None:
    watch = fresh()
    for at in range(1, 5):
        watch = step(watch, Measured(0.001 * at), Measured(0.1 * at), at=at * 15)
    succeeded, message, warnings = monitoring_watch.conclusion(watch)
    assert succeeded
    assert message == (
        "healthy for 1m (4 evaluations: 4 healthy, 0 without data, 0 Prometheus error(s)); "
        "error rate peak 0.40 % (threshold 5.00 %); latency peak 400 ms (threshold 5.00 s)"
    )
    assert warnings == ()


def test_gaps_and_a_rule_still_over_at_the_end_are_warned_about() -> None:
    watch = fresh()
    watch = step(watch, Measured(0.01), Measured(0.1))
    watch = step(watch, NoData("no traffic"), Measured(0.1))
    watch = step(watch, Measured(0.01), Measured(6.5))
    succeeded, _, warnings = monitoring_watch.conclusion(watch)
    assert succeeded
    assert warnings == (
        "Monitor could not measure 1 of 3 evaluations (1 without data, 0 Prometheus error(s)); "
        "last: errorRate: no traffic",
        "Monitor ended with latency 6.50 s above the 5.00 s threshold on the last 1 "
        "evaluation(s): keep watching it",
    )


def test_a_watch_that_measured_less_than_half_the_time_is_not_a_success() -> None:
    watch = fresh()
    for at in range(1, 4):
        watch = step(watch, Measured(0.01), Measured(0.1), at=at)
        watch = step(watch, QueryFailed("flaky"), Measured(0.1), at=at)
        watch = step(watch, NoData("none"), Measured(0.1), at=at)
    succeeded, message, _ = monitoring_watch.conclusion(watch)
    assert not succeeded
    assert message.startswith("could measure only 3 of 9 evaluations in 3s")


def test_progress_reads_well() -> None:
    assert monitoring_watch.progress_message(fresh()) == (
        "watching for 1m: first evaluation pending"
    )
    watch = step(fresh(), Measured(0.0123), NoData("none"), at=95)
    assert monitoring_watch.progress_message(watch) == (
        "watching, 1m35s of 1m: error rate 1.23 % (threshold 5.00 %), latency no data "
        "(threshold 5.00 s); 1 evaluations; 1 could not measure"
    )


# --- the step


@dataclass
class Scripted:
    """Prometheus as the step sees it: one scripted answer per query, in order."""

    answers: dict[str, list[Result]]
    asked: list[str] = field(default_factory=list)

    def factory(self, url: str, timeout: float = 10.0) -> Scripted:
        return self

    def query(self, expression: str) -> Result:
        name = ERROR_RATE if "http_requests_total" in expression else LATENCY
        self.asked.append(name)
        return self.answers[name].pop(0)


@dataclass
class FakeKube:
    ingresses: dict[str, dict[str, Any]]
    log: list[tuple[str, Any]]

    def ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.ingresses.get(name)
        return copy.deepcopy(found) if found else None

    def patch(self, path: str, body: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        current = self.ingresses[name]
        assert body["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
        current["spec"].update(copy.deepcopy(body["spec"]))
        current["metadata"]["resourceVersion"] = str(
            int(current["metadata"]["resourceVersion"]) + 1
        )
        self.log.append(("patch", name))
        return current


def ingress(backends: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "lawyershub", "resourceVersion": "7"},
        "spec": {
            "rules": [
                {
                    "host": "lawyershub.example",
                    "http": {
                        "paths": [
                            {"path": "/api", "pathType": "Prefix", "backend": backends[0]},
                            {"path": "/", "pathType": "Prefix", "backend": backends[1]},
                        ]
                    },
                }
            ]
        },
    }


SAVED_INGRESS = {
    "backends": [
        {
            "location": {"rule": 0, "path": 0, "host": "lawyershub.example", "pathValue": "/api"},
            "backend": API,
        },
        {
            "location": {"rule": 0, "path": 1, "host": "lawyershub.example", "pathValue": "/"},
            "backend": APP,
        },
    ]
}


@dataclass
class Harness:
    """A StepContext whose clock the test moves, with the status sections and their writes
    kept, and a log shared by durable writes and Ingress patches (to check their order)."""

    monitoring_spec: dict[str, Any]
    clock: datetime = T0
    sections: dict[str, Any] = field(default_factory=dict)
    log: list[tuple[str, Any]] = field(default_factory=list)
    kube: FakeKube = field(init=False)

    def __post_init__(self) -> None:
        self.kube = FakeKube({"lawyershub": ingress((API, APP))}, self.log)

    def ctx(self) -> StepContext:
        spec = RollbackSpec.parse(
            {
                "reason": "r",
                "trigger": "ErrorRate",
                "traffic": {
                    "ingresses": ["lawyershub"],
                    "maintenanceBackend": {"service": "maintenance-page", "port": 80},
                },
                "workloads": [{"deployment": "backend"}],
                "monitoring": self.monitoring_spec,
            }
        )

        def write(patch: dict[str, Any], version: str | None) -> None:
            if "monitoring" in patch:
                self.log.append(("durable", copy.deepcopy(patch["monitoring"])))

        status = Status(
            saved={"ingresses": {"lawyershub": copy.deepcopy(SAVED_INGRESS)}},
            sections=self.sections,
        )
        return StepContext(
            kube=self.kube,  # type: ignore[arg-type]
            namespace=NS,
            request="golive",
            spec=spec,
            ledger=StatusLedger(status, write=write),
            targets=Targets(("lawyershub",), ("backend",), ()),
            step_started_at=T0,
            now=lambda: self.clock,
        )

    def run(self) -> Done | Wait | Fail:
        outcome = Monitor().run(self.ctx())
        assert isinstance(outcome, Done | Wait | Fail)
        return outcome

    def at(self, seconds: float) -> Harness:
        self.clock = T0 + timedelta(seconds=seconds)
        return self


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Scripted]]:
    def script(error_rates: list[Result], latencies: list[Result] | None = None) -> Scripted:
        fake = Scripted(
            {ERROR_RATE: list(error_rates), LATENCY: latencies or [Measured(0.2)] * 100}
        )
        monkeypatch.setattr(monitor, "Prometheus", fake.factory)
        return fake

    yield script


SHORT = {"prometheus": {"url": URL}, "duration": "60s", "interval": "10s", "for": 2}


def test_the_step_is_registered_and_skipped_without_spec_monitoring() -> None:
    step = STEPS[Monitor.name]
    assert isinstance(step, Monitor)
    assert step.skip_reason(Harness(SHORT).ctx().spec, None) is None
    spec = RollbackSpec.parse(
        {
            "reason": "r",
            "trigger": "Manual",
            "traffic": {"ingresses": ["a"], "maintenanceBackend": {"service": "m", "port": 80}},
            "workloads": [{"deployment": "b"}],
        }
    )
    assert step.skip_reason(spec, None) == "no spec.monitoring"


def test_the_watch_evaluates_once_per_interval_and_ends_with_the_figures(
    prometheus: Callable[..., Scripted],
) -> None:
    fake = prometheus([Measured(0.01)] * 6)
    harness = Harness(SHORT)
    first = harness.run()
    assert first == Wait("watching for 1m: first evaluation pending", retry_after=5.0)
    assert harness.sections["monitoring"]["durationSeconds"] == 60  # visible from the start
    assert fake.asked == []
    assert harness.at(9).run() == Wait(first.message, retry_after=1.0)  # nothing new: no write
    for second in (10, 20, 30, 40, 50):
        outcome = harness.at(second + 0.5).run()
        assert isinstance(outcome, Wait)
        assert harness.at(second + 1).run() == Wait(outcome.message, retry_after=5.0)
    assert len(fake.asked) == 10  # two queries per evaluation, five evaluations so far
    status = harness.sections["monitoring"]
    assert status["evaluations"] == 5
    assert status["elapsedSeconds"] == 50
    assert status["lastEvaluatedAt"] == "2026-01-10T03:00:50.500Z"
    assert outcome.message.startswith("watching, 50s of 1m: error rate 1.00 %")
    # The last evaluation is at the end of the watch, then Done with the figures.
    assert harness.at(59).run() == Wait(outcome.message, retry_after=1.0)
    done = harness.at(60.2).run()
    assert isinstance(done, Done)
    assert done.message.startswith("healthy for 1m (6 evaluations: 6 healthy")
    assert harness.sections["monitoring"]["evaluations"] == 6


def test_a_restarted_operator_continues_the_watch_where_it_was(
    prometheus: Callable[..., Scripted],
) -> None:
    fake = prometheus([Measured(0.01)] * 10)
    harness = Harness(SHORT)
    harness.at(10).run()
    harness.at(20).run()
    stored = copy.deepcopy(harness.sections)
    # A new operator: the same status and the step's recorded start; nothing in memory.
    restarted = Harness(SHORT, sections=stored)
    waiting = restarted.at(25).run()
    assert isinstance(waiting, Wait)
    assert waiting.retry_after == 5.0  # due at lastEvaluatedAt + interval, not now
    assert len(fake.asked) == 4
    assert isinstance(restarted.at(30).run(), Wait)
    status = restarted.sections["monitoring"]
    assert (status["evaluations"], status["elapsedSeconds"]) == (3, 30)
    # Down past the end of the watch: one evaluation at once, and the time not watched is not
    # counted as watched: 4m30s without an evaluation is more than a 1m watch can make up.
    late = Harness(SHORT, sections=copy.deepcopy(restarted.sections))
    outcome = late.at(300).run()
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith(
        "not watched: 03:00:30Z-03:05:00Z (minutes 0-5 of the watch, 4m30s); no evaluation was "
        "made in that time"
    )
    status = late.sections["monitoring"]
    assert (status["elapsedSeconds"], status["watchedSeconds"]) == (300, 30)
    assert status["gaps"] == [
        {"from": "2026-01-10T03:00:30.000Z", "to": "2026-01-10T03:05:00.000Z", "seconds": 270}
    ]


HALF_HOUR = {"prometheus": {"url": URL}, "duration": "30m", "interval": "30s", "for": 3}


def test_a_31_minute_gap_on_a_30_minute_watch_does_not_succeed(
    prometheus: Callable[..., Scripted],
) -> None:
    """The operator down from minute 0 to minute 31: one evaluation is not 30 minutes watched."""
    prometheus([Measured(0.01)] * 10)
    harness = Harness(HALF_HOUR)
    outcome = harness.at(31 * 60).run()
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith(
        "not watched: 03:00:00Z-03:31:00Z (minutes 0-31 of the watch, 31m); no evaluation was "
        "made in that time: the operator was not running, not leading, or could not act on the "
        "request. 31m not watched in all, more than the watch of 30m can be extended by"
    )
    status = harness.sections["monitoring"]
    assert (status["watchedSeconds"], status["unwatchedSeconds"], status["evaluations"]) == (
        0,
        1860,
        1,
    )


def test_a_gap_extends_the_watch_and_a_breach_after_it_is_still_seen(
    prometheus: Callable[..., Scripted],
) -> None:
    """Down from minute 20 to minute 35 of a 30-minute watch with `for: 3`: the watch goes on
    past its 30 minutes, and three evaluations over the threshold after the gap fail it."""
    prometheus([Measured(0.01)] * 40 + [Measured(0.09)] * 3)
    harness = Harness(HALF_HOUR)
    for second in range(30, 20 * 60 + 1, 30):
        assert isinstance(harness.at(second).run(), Wait)
    after = harness.at(35 * 60).run()
    assert isinstance(after, Wait)  # not the end: 15 minutes were not watched
    assert "20m of 30m (15m not watched, made up)" in after.message
    assert isinstance(harness.at(35 * 60 + 30).run(), Wait)
    breach = harness.at(36 * 60).run()
    assert isinstance(breach, Fail)
    assert breach.message.startswith("error rate 9.00 % is above the 5.00 % threshold for 3")
    status = harness.sections["monitoring"]
    assert status["gaps"] == [
        {"from": "2026-01-10T03:20:00.000Z", "to": "2026-01-10T03:35:00.000Z", "seconds": 900}
    ]


def test_a_watch_extended_by_its_gap_ends_once_its_duration_was_watched(
    prometheus: Callable[..., Scripted],
) -> None:
    prometheus([Measured(0.01)] * 100)
    harness = Harness(HALF_HOUR)
    for second in range(30, 10 * 60 + 1, 30):
        harness.at(second).run()
    seconds = list(range(20 * 60, 40 * 60 + 1, 30))  # down from minute 10 to 20
    outcomes = [harness.at(second).run() for second in seconds]
    assert all(isinstance(o, Wait) for o in outcomes[:-1])
    done = outcomes[-1]
    assert isinstance(done, Done)
    assert done.message.startswith(
        "healthy for 30m watched, over 40m (10m not watched, made up) (61 evaluations"
    )
    assert done.warnings[0] == (
        "Monitor did not watch 03:10:00Z-03:20:00Z (minutes 10-20 of the watch, 10m): no "
        "evaluation was made in that time: the operator was not running, not leading, or could "
        "not act on the request; the watch was extended by it"
    )
    status = harness.sections["monitoring"]
    assert (status["watchedSeconds"], status["unwatchedSeconds"]) == (1800, 600)


def test_evaluations_a_little_late_are_still_watched() -> None:
    watch = fresh()
    for at in (10, 25, 44, 70):  # up to 26 s apart with a 10 s interval: not gaps (30 s)
        watch = monitoring_watch.record(
            watch, {ERROR_RATE: Measured(0.01), LATENCY: Measured(0.1)},
            T0 + timedelta(seconds=at), at, interval=10,
        )  # fmt: skip
    assert (watch.watched_seconds, watch.unwatched_seconds, watch.gaps) == (70, 0, [])


def test_a_breach_with_onbreach_fail_leaves_traffic_alone(
    prometheus: Callable[..., Scripted],
) -> None:
    prometheus([Measured(0.02), Measured(0.072), Measured(0.081)])
    harness = Harness(SHORT)
    assert isinstance(harness.at(10).run(), Wait)
    assert isinstance(harness.at(20).run(), Wait)
    failed = harness.at(30).run()
    assert failed == Fail(
        "error rate 8.10 % is above the 5.00 % threshold for 2 consecutive evaluations "
        "(peak 8.10 %), 30s after traffic returned. Traffic stays on the application "
        "(onBreach: Fail): decide whether to take it off (maintenance page) and roll back further"
    )
    status = harness.sections["monitoring"]
    assert status["breach"].startswith("error rate 8.10 %")
    assert status["maintenanceOn"] is False
    assert harness.kube.log == []


def test_a_breach_with_onbreach_maintenance_records_it_durably_then_switches(
    prometheus: Callable[..., Scripted],
) -> None:
    fake = prometheus([Measured(0.01)] * 3, [Measured(6.0), Measured(7.25)])
    harness = Harness({**SHORT, "onBreach": "Maintenance"})
    harness.at(10).run()
    failed = harness.at(20).run()
    assert isinstance(failed, Fail)
    assert failed.message == (
        "latency 7.25 s is above the 5.00 s threshold for 2 consecutive evaluations "
        "(peak 7.25 s), 20s after traffic returned. The maintenance page is back on "
        "(Ingress lawyershub). Fix the application, then restore traffic from "
        "status.saved.ingresses (or with a new RollbackRequest)"
    )
    (durable, durable_value), patch = harness.log
    assert durable == "durable"
    assert durable_value["maintenanceOn"] is True
    assert durable_value["breach"].startswith("latency 7.25 s")
    assert patch == ("patch", "lawyershub")
    paths = harness.kube.ingresses["lawyershub"]["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"] for p in paths] == [MAINTENANCE, MAINTENANCE]

    # Killed after the durable write: the restarted step switches (again, idempotently) and
    # fails with the same breach, without asking Prometheus anything more.
    asked = len(fake.asked)
    again = Harness({**SHORT, "onBreach": "Maintenance"}, sections=copy.deepcopy(harness.sections))
    again.kube = harness.kube
    again.log = harness.log
    assert again.at(21).run() == failed
    assert len(fake.asked) == asked
    assert harness.log[-1] == ("patch", "lawyershub")
    assert len(harness.log) == 2  # already on the maintenance page: not patched again


def test_a_backend_changed_after_traffic_returned_is_left_alone(
    prometheus: Callable[..., Scripted],
) -> None:
    prometheus([Measured(0.5)] * 2)
    harness = Harness({**SHORT, "onBreach": "Maintenance"})
    other = {"service": {"name": "canary", "port": {"number": 8080}}}
    harness.kube.ingresses["lawyershub"] = ingress((other, APP))
    harness.at(10).run()
    failed = harness.at(20).run()
    assert isinstance(failed, Fail)
    assert (
        "left as is: Ingress lawyershub now points to canary:8080 (was backend:8080), "
        "not switched" in failed.message
    )
    paths = harness.kube.ingresses["lawyershub"]["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"] for p in paths] == [other, MAINTENANCE]


def test_prometheus_down_fails_as_could_not_measure_without_touching_traffic(
    prometheus: Callable[..., Scripted],
) -> None:
    down = QueryFailed("Prometheus at http://p could not be reached (ConnectError: refused)")
    prometheus([down] * 3, [down] * 3)
    harness = Harness({**SHORT, "onBreach": "Maintenance"})
    assert isinstance(harness.at(10).run(), Wait)
    assert isinstance(harness.at(20).run(), Fail)
    status = harness.sections["monitoring"]
    assert (status["errors"], status["noData"], status["healthy"]) == (2, 0, 0)
    assert status["maintenanceOn"] is False
    assert [r["result"] for r in status["rules"]] == ["Error", "Error"]
    assert harness.kube.log == []


def test_plan_says_what_would_be_watched() -> None:
    plan = Monitor().plan(Harness({**SHORT, "onBreach": "Maintenance"}).ctx())
    assert plan.startswith(
        f"would watch Prometheus at {URL} for 1m, every 10s: error rate above 5.00 % ("
    )
    assert plan.endswith(
        "on a breach (2 consecutive evaluations over a threshold) switch the maintenance page "
        "back on and fail"
    )


def test_preflight_reports_a_refused_query_and_an_unreachable_prometheus(
    prometheus: Callable[..., Scripted],
) -> None:
    prometheus(
        [QueryFailed("Prometheus at http://p refused the query: parse error", invalid_query=True)],
        [Measured(0.1)],
    )
    assert monitor.preflight_problems(Harness(SHORT).ctx()) == [
        "monitoring.errorRate.query is refused: Prometheus at http://p refused the query: "
        "parse error"
    ]
    prometheus([QueryFailed("Prometheus at http://p could not be reached")] * 2)
    assert monitor.preflight_problems(Harness(SHORT).ctx()) == [
        "monitoring: Prometheus at http://p could not be reached; fix monitoring.prometheus.url, "
        "or leave spec.monitoring out to roll back without the watch"
    ]
    prometheus([Measured(0.3)] * 2)
    assert monitor.preflight_problems(Harness(SHORT).ctx()) == []
    tight = {**SHORT, "duration": "15s"}
    assert monitor.preflight_problems(Harness(tight).ctx()) == [
        "monitoring.for (2) evaluations every 10s do not fit in monitoring.duration (15s): a "
        "breach could never be seen; lower for or interval, or watch longer"
    ]
