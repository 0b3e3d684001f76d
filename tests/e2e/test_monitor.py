"""The Monitor step (runbook §2.5) end to end: the operator process watches a real Prometheus
that scrapes synthetic traffic whose error ratio and latency the test sets."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rollback_operator.model import Phase
from standins.local import wait_until
from standins.prometheus import PrometheusServer, Traffic, TrafficTarget
from tests.e2e.lawyershub import (
    MAINTENANCE,
    Operator,
    backends,
    conditions,
    create_request,
    dry_run,
    events_for,
    get_request,
    ledger,
    refusal,
    wait_outcome,
)
from tests.e2e.prometheus import prometheus_server, traffic_target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

APP_BACKENDS = [
    {"service": {"name": "backend", "port": {"number": 8080}}},
    {"service": {"name": "frontend", "port": {"name": "http"}}},
]


@dataclass
class Watched:
    """The sample application with the operator watching its namespace, and Prometheus
    scraping the synthetic traffic target: what most tests here start from."""

    namespace: str
    prometheus: PrometheusServer
    target: TrafficTarget
    operator: Operator

    def play(self, *, error_ratio: float, latency: float) -> Traffic:
        """Synthetic traffic for the namespace, once Prometheus has enough of it to measure."""
        traffic = self.target.traffic(self.namespace, error_ratio=error_ratio, latency=latency)
        self.prometheus.wait_for_data(self.namespace)
        return traffic


@pytest.fixture
def watched(
    app: str,
    prometheus_server: PrometheusServer,  # noqa: F811
    traffic_target: TrafficTarget,  # noqa: F811
    operator: Operator,
) -> Watched:
    return Watched(app, prometheus_server, traffic_target, operator)


def request_watch(
    api: client.ApiClient,
    namespace: str,
    name: str,
    prometheus_url: str,
    *,
    duration: str,
    for_count: int,
    **monitoring: Any,
) -> None:
    """A request whose Monitor step evaluates every second, against the runbook's default
    queries and thresholds unless `monitoring` says otherwise."""
    create_request(
        api,
        namespace,
        name,
        monitoring={
            "prometheus": {"url": prometheus_url},
            "duration": duration,
            "interval": "1s",
            "for": for_count,
            **monitoring,
        },
    )


def watch_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status", {}).get("monitoring") or {}


def rules_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in watch_of(obj).get("rules", [])}


def monitoring_after(
    api: client.ApiClient, namespace: str, name: str, evaluations: int, healthy: int = 0
) -> dict[str, Any]:
    """The request once its watch made `evaluations` (with `healthy` healthy ones), seen while
    it runs: phase Monitoring, step Monitor."""

    def reached() -> dict[str, Any] | None:
        obj = get_request(api, namespace, name)
        status, watch = obj.get("status", {}), watch_of(obj)
        if Phase(status.get("phase", Phase.PENDING)).terminal:
            raise AssertionError(f"{name} ended before the watch got far: {status.get('message')}")
        if (
            status.get("phase") == "Monitoring"
            and watch.get("evaluations", 0) >= evaluations
            and watch.get("healthy", 0) >= healthy
        ):
            return obj
        return None

    return wait_until(reached, timeout=90, what=f"{name} monitoring, {evaluations} evaluations")


def test_a_healthy_application_ends_succeeded_with_the_figures(
    api: client.ApiClient, watched: Watched
) -> None:
    namespace = watched.namespace
    watched.play(error_ratio=0.01, latency=0.3)
    # The runbook's default queries and thresholds, only the timing shortened: a 12 s watch
    # every second, long enough for five evaluations even when a loaded machine makes each
    # one (two queries and a status write) take two seconds.
    request_watch(api, namespace, "healthy", watched.prometheus.url, duration="12s", for_count=2)

    # Progress while it runs: phase Monitoring, the elapsed time and the last values.
    running = monitoring_after(api, namespace, "healthy", evaluations=2)
    assert running["status"]["step"] == "Monitor"
    assert ledger(running)["Monitor"]["state"] == "Running"
    assert ledger(running)["DisableMaintenance"]["state"] == "Succeeded"
    assert backends(api, namespace) == APP_BACKENDS  # watched with traffic back on the app
    watch = watch_of(running)
    assert watch["durationSeconds"] == 12
    assert 1 <= watch["elapsedSeconds"] <= 12
    assert watch["lastEvaluatedAt"]
    assert 0.005 < rules_of(running)["errorRate"]["value"] < 0.02
    assert ledger(running)["Monitor"]["message"].startswith("watching, ")

    done = wait_outcome(api, namespace, "healthy", "Succeeded", timeout=60)
    watch = watch_of(done)
    assert watch["evaluations"] >= 5
    assert watch["healthy"] == watch["evaluations"]
    assert (watch["noData"], watch["errors"], watch["unmeasuredStreak"]) == (0, 0, 0)
    assert watch["elapsedSeconds"] >= 12
    assert "breach" not in watch
    assert watch["maintenanceOn"] is False
    rules = rules_of(done)
    assert rules["errorRate"]["threshold"] == 0.05
    assert rules["latency"]["threshold"] == 5
    assert 'http_requests_total{namespace="' + namespace + '"' in rules["errorRate"]["query"]
    assert 0.005 < rules["errorRate"]["peak"] < 0.02
    assert 0.25 < rules["latency"]["peak"] <= 0.5  # the p95 of 0.3 s requests (bucket 0.25-0.5)
    assert {r["result"] for r in rules.values()} == {"Healthy"}
    message = ledger(done)["Monitor"]["message"]
    # The time watched, rounded: the duration, or a little more when the last evaluation
    # came late on a loaded machine.
    assert 12 <= watch["watchedSeconds"] <= 15
    took = f"{watch['watchedSeconds']}s"
    assert message.startswith(f"healthy for {took} ({watch['evaluations']} evaluations: ")
    assert f"error rate peak {rules['errorRate']['peak'] * 100:.2f} % (threshold 5.00 %)" in message
    assert backends(api, namespace) == APP_BACKENDS
    assert conditions(done)["MaintenanceActive"] == "False"


def test_an_error_rate_above_5_percent_fails_with_the_measured_value(
    api: client.ApiClient, watched: Watched
) -> None:
    namespace = watched.namespace
    traffic = watched.play(error_ratio=0.0, latency=0.1)
    request_watch(api, namespace, "rising", watched.prometheus.url, duration="2m", for_count=3)
    monitoring_after(api, namespace, "rising", evaluations=2, healthy=2)
    traffic.set(error_ratio=0.5)

    done = wait_outcome(api, namespace, "rising", "Failed", timeout=60)
    status = done["status"]
    assert ledger(done)["Monitor"]["state"] == "Failed"
    error_rate = rules_of(done)["errorRate"]
    assert error_rate["value"] > 0.05
    assert error_rate["consecutive"] == 3
    assert error_rate["result"] == "Over"
    measured = f"{error_rate['value'] * 100:.2f} %"
    assert status["message"].startswith(
        f"Monitor failed: error rate {measured} is above the 5.00 % threshold for 3 "
        "consecutive evaluations"
    )
    assert "Traffic stays on the application (onBreach: Fail)" in status["message"]
    watch = watch_of(done)
    assert watch["breach"].startswith(f"error rate {measured}")
    assert watch["healthy"] >= 2
    assert watch["maintenanceOn"] is False
    # The Warning Event says it too; traffic stays on the application.
    warnings = [e for e in events_for(api, namespace, "rising") if e.type == "Warning"]
    assert any(measured in e.message for e in warnings), [e.message for e in warnings]
    assert backends(api, namespace) == APP_BACKENDS


def test_a_breach_with_onbreach_maintenance_puts_the_maintenance_page_back(
    api: client.ApiClient, watched: Watched
) -> None:
    namespace = watched.namespace
    watched.play(error_ratio=0.2, latency=0.1)
    # The request's own queries (a 10 s window), shared across namespaces through $namespace,
    # and a latency threshold of its own.
    request_watch(
        api,
        namespace,
        "breach",
        watched.prometheus.url,
        duration="1m",
        for_count=2,
        onBreach="Maintenance",
        errorRate={
            "query": 'sum(rate(http_requests_total{namespace="$namespace",status="500"}[10s]))'
            ' / sum(rate(http_requests_total{namespace="$namespace"}[10s]))'
        },
        latency={
            "query": "histogram_quantile(0.5, sum by (le) (rate("
            'http_request_duration_seconds_bucket{namespace="${namespace}"}[10s])))',
            "threshold": 1.5,
        },
    )
    done = wait_outcome(api, namespace, "breach", "Failed", timeout=90)
    status = done["status"]
    rules = rules_of(done)
    assert 0.1 < rules["errorRate"]["value"] < 0.3
    assert rules["latency"]["threshold"] == 1.5
    assert f'namespace="{namespace}"' in rules["latency"]["query"]
    assert "$namespace" not in rules["errorRate"]["query"]
    measured = f"{rules['errorRate']['value'] * 100:.2f} %"
    assert f"error rate {measured} is above the 5.00 % threshold" in status["message"]
    assert "The maintenance page is back on (Ingress lawyershub)" in status["message"]

    # The site is on the maintenance page again, and the request says so.
    assert backends(api, namespace) == [MAINTENANCE, MAINTENANCE]
    assert watch_of(done)["maintenanceOn"] is True
    assert conditions(done)["MaintenanceActive"] == "True"
    # The originals are still on record, for the hand restore the message asks for.
    saved = status["saved"]["ingresses"]["lawyershub"]["backends"]
    assert [entry["backend"] for entry in saved] == APP_BACKENDS


def test_prometheus_going_down_is_reported_as_such(
    api: client.ApiClient,
    app: str,
    traffic_target: TrafficTarget,  # noqa: F811
    operator: Operator,
) -> None:
    namespace = app
    traffic_target.traffic(namespace, error_ratio=0.0, latency=0.1)
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        prometheus = PrometheusServer([traffic_target.address], Path(directory))
        prometheus.start()
        try:
            prometheus.wait_for_data(namespace)
            request_watch(
                api,
                namespace,
                "blind",
                prometheus.url,
                duration="2m",
                for_count=3,
                onBreach="Maintenance",
            )
            monitoring_after(api, namespace, "blind", evaluations=1, healthy=1)
        finally:
            prometheus.stop()

    done = wait_outcome(api, namespace, "blind", "Failed", timeout=60)
    status = done["status"]
    assert status["message"].startswith("Monitor failed: could not measure for 3 consecutive")
    assert f"Prometheus at {prometheus.url} could not be reached" in status["message"]
    watch = watch_of(done)
    assert watch["errors"] >= 3
    assert watch["unmeasuredStreak"] == 3
    assert watch["healthy"] >= 1
    assert "could not be reached" in watch["lastError"]
    assert {r["result"] for r in rules_of(done).values()} == {"Error"}
    # Not measuring is no breach: the maintenance page stays off.
    assert "breach" not in watch
    assert watch["maintenanceOn"] is False
    assert backends(api, namespace) == APP_BACKENDS


def test_sigkill_during_monitor_continues_the_watch_where_it_was(
    api: client.ApiClient, watched: Watched
) -> None:
    namespace = watched.namespace
    watched.play(error_ratio=0.01, latency=0.1)
    # Killed after eight evaluations (eight seconds at least) of a 30 s watch: a watch restarted
    # from zero would end 38 s or more after the step's start, well past the end it must keep.
    duration = 30
    request_watch(
        api, namespace, "crash", watched.prometheus.url, duration=f"{duration}s", for_count=3
    )
    before = monitoring_after(api, namespace, "crash", evaluations=8)
    watched.operator.kill()
    # What the status held when the operator died (the kill may land after a later write).
    before = get_request(api, namespace, "crash")
    seen = watch_of(before)
    started = ledger(before)["Monitor"]["startedAt"]
    watched.operator.start()

    # The first evaluation of the new process carries on the counts and the elapsed time.
    def resumed() -> dict[str, Any] | None:
        obj = get_request(api, namespace, "crash")
        watch = watch_of(obj)
        return obj if watch.get("evaluations", 0) > seen["evaluations"] else None

    after = wait_until(resumed, timeout=60, what="an evaluation by the restarted operator")
    assert watch_of(after)["evaluations"] == seen["evaluations"] + 1  # not reset to 1
    assert watch_of(after)["elapsedSeconds"] > seen["elapsedSeconds"]  # not reset to 0
    assert watch_of(after)["healthy"] > seen["healthy"]

    done = wait_outcome(api, namespace, "crash", "Succeeded", timeout=90)
    record = ledger(done)["Monitor"]
    assert record["startedAt"] == started
    assert record["attempts"] == 2
    took = _seconds(record["finishedAt"]) - _seconds(record["startedAt"])
    watch = watch_of(done)
    # Counted from the step's recorded start, extended by the time it recorded as not watched
    # (a restart slow enough to leave several intervals without an evaluation), and a few
    # seconds more when a loaded machine makes the last evaluation late.
    gap = watch.get("unwatchedSeconds", 0)
    assert duration <= took < duration + gap + 5, (took, gap)
    assert watch["evaluations"] <= duration + 1  # at most one per interval, no catching up
    assert watch["healthy"] == watch["evaluations"]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_no_data_is_counted_and_not_taken_for_health(
    api: client.ApiClient,
    app: str,
    prometheus_server: PrometheusServer,  # noqa: F811
    operator: Operator,
) -> None:
    namespace = app  # no traffic is played for this namespace: its series do not exist
    request_watch(api, namespace, "silent", prometheus_server.url, duration="1m", for_count=3)
    done = wait_outcome(api, namespace, "silent", "Failed", timeout=60)
    status = done["status"]
    assert status["message"].startswith(
        "Monitor failed: could not measure for 3 consecutive evaluations (0 Prometheus error(s), "
        "3 without data, of 3): errorRate: the query returned no data"
    )
    watch = watch_of(done)
    assert (watch["noData"], watch["errors"], watch["healthy"]) == (3, 0, 0)
    assert {r["result"] for r in rules_of(done).values()} == {"NoData"}
    assert all("value" not in r for r in rules_of(done).values())
    assert backends(api, namespace) == APP_BACKENDS


PROMETHEUS = {"url": "http://prometheus.monitoring:9090"}


@pytest.mark.parametrize(
    ("monitoring", "expected"),
    [
        ({"prometheus": {"url": "prometheus:9090"}}, "must be an http:// or https:// URL"),
        ({"prometheus": PROMETHEUS, "interval": "0s"}, 'monitoring.interval "0s" is out of range'),
        ({"prometheus": PROMETHEUS, "interval": "2h"}, "at least 1s and at most 1h"),
        ({"prometheus": PROMETHEUS, "duration": "25h"}, 'monitoring.duration "25h" is out of'),
        ({"prometheus": PROMETHEUS, "duration": "half an hour"}, "is not a duration"),
        (
            {"prometheus": PROMETHEUS, "duration": "1m", "interval": "30s"},
            "monitoring.for evaluations every monitoring.interval do not fit in "
            "monitoring.duration: a breach could never be seen",
        ),
        ({"prometheus": PROMETHEUS, "onBreach": "Rollback"}, "supported values"),
        ({"prometheus": PROMETHEUS, "for": 0}, "should be greater than or equal to 1"),
        ({"duration": "30m"}, "spec.monitoring.prometheus: Required value"),
    ],
    ids=str,
)
def test_the_api_server_refuses_a_watch_that_cannot_work(
    api: client.ApiClient, namespace: str, crds_installed: None, monitoring: Any, expected: str
) -> None:
    assert expected in refusal(api, namespace, monitoring=monitoring)


def test_a_watch_is_defaulted_to_the_runbook(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    created = dry_run(api, namespace, "ok", monitoring={"prometheus": PROMETHEUS})
    assert created["spec"]["monitoring"] == {
        "prometheus": PROMETHEUS,
        "duration": "30m",
        "interval": "30s",
        "for": 3,
        "onBreach": "Fail",
    }
