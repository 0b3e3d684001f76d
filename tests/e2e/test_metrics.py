"""The operator's /metrics, scraped after a real run, say what happened."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from standins.local import free_port, wait_until
from tests.e2e.lawyershub import create_request, running_operator, wait_phase

pytestmark = pytest.mark.e2e

IMPLEMENTED = [
    "Preflight", "EnableMaintenance", "PauseAutoscaling", "RevertWorkloads", "Verify",
    "ResumeAutoscaling", "DisableMaintenance",
]  # fmt: skip


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # not serving yet
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_a_run(
    api: client.ApiClient, app: str, kubeconfig: str, tmp_path: Path
) -> None:
    port = free_port()
    with running_operator(app, kubeconfig, tmp_path, metrics_port=port):
        wait_until(lambda: _scrape(port), timeout=30, what="/metrics served")
        create_request(api, app, "golive")
        assert (
            wait_phase(api, app, "golive", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
        )
        # The outcome is counted when it is announced, the run leaves the in-progress gauge
        # a moment later, when its drive returns: both are waited for.
        samples = wait_until(
            lambda: (
                (s := _scrape(port)).get(
                    ("rollback_operator_requests_total", (("result", "Succeeded"),))
                )
                and s.get(("rollback_operator_requests_in_progress", ())) == 0
                and s
            ),
            timeout=10,
            what="the outcome counted and the run no longer in progress",
        )
    assert samples[("rollback_operator_requests_total", (("result", "Succeeded"),))] == 1
    assert samples[("rollback_operator_requests_in_progress", ())] == 0
    for step in IMPLEMENTED:
        key = (
            "rollback_operator_step_duration_seconds_count",
            (("result", "Succeeded"), ("step", step)),
        )
        assert samples[key] == 1, step
    assert (
        "rollback_operator_step_duration_seconds_count",
        (("result", "Succeeded"), ("step", "PurgeCDN")),
    ) not in samples
    assert samples[("rollback_operator_time_to_maintenance_seconds_count", ())] == 1
    assert 0 < samples[("rollback_operator_time_to_maintenance_seconds_sum", ())] < 30
    assert samples[("rollback_operator_monitoring_breaches_total", ())] == 0
