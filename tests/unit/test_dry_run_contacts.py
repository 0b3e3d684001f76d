"""A dry run is a plan: Preflight contacts no address the request names and gives no Job a
Secret (safety rule 9)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rollback_operator.database.preflight import inspection_template
from rollback_operator.database.scripts import COMMON
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.model import RollbackSpec
from rollback_operator.steps import monitor
from rollback_operator.steps.base import StepContext

NOW = datetime(2026, 1, 10, tzinfo=UTC)
DATABASE = {
    "connection": {"secretRef": {"name": "db", "key": "url"}},
    "restore": {"backup": {"claimName": "backups", "file": "snapshot-YYYYMMDD.sql"}},
}


def _ctx(**spec: Any) -> StepContext:
    base = {
        "reason": "r",
        "trigger": "Manual",
        "traffic": {"ingresses": ["web"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
    return StepContext(
        kube=None,  # type: ignore[arg-type]
        namespace="app",
        request="r",
        spec=RollbackSpec.parse({**base, **spec}),
        ledger=None,  # type: ignore[arg-type]
        step_started_at=NOW,
        now=lambda: NOW,
    )


class Untouchable:
    """A Prometheus that fails the test when asked anything."""

    def __init__(self, url: str, *_: Any, **__: Any) -> None:
        self.url = url

    def query(self, expression: str) -> Any:
        raise AssertionError(f"Prometheus at {self.url} was queried on a dry run")


def test_a_dry_run_queries_no_prometheus_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "Prometheus", Untouchable)
    watch = {"prometheus": {"url": "https://user:pw@prometheus.example.com"}}
    ctx = _ctx(dryRun=True, monitoring=watch)
    assert monitor.Monitor.preflight.problems(ctx) == []
    note = monitor.Monitor.preflight.inspect(ctx)
    assert note == (
        "monitoring: Prometheus at https://prometheus.example.com was not queried (a dry run "
        "contacts nothing): whether it answers and accepts the queries is checked when the "
        "request runs"
    )
    with pytest.raises(AssertionError, match="was queried"):
        monitor.Monitor.preflight.problems(_ctx(monitoring=watch))
    assert monitor.Monitor.preflight.inspect(_ctx(monitoring=watch)) is None


def test_a_dry_runs_database_job_gets_no_secret_and_runs_no_psql() -> None:
    database = DatabaseSpec.parse(DATABASE)
    real = inspection_template(database)
    planned = inspection_template(database, connect=False)
    assert real is not None and planned is not None
    assert any("valueFrom" in e for e in real.env)
    assert not any("valueFrom" in e for e in planned.env)
    script = planned.command[-1]
    assert script.count("run_psql") == COMMON.count("run_psql")  # defined, never called
    assert "\ndatabase_url\n" not in script and "\ndatabase_url\n" in real.command[-1]
    assert "sha256sum" in script  # the backup is still resolved and measured
