"""The alert rules and the dashboard use only metrics the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import rollback_operator.metrics  # noqa: F401  (registers the metrics)

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _families() -> list[Metric]:
    return [f for f in REGISTRY.collect() if f.name.startswith("rollback_operator_")]


def _exported() -> set[str]:
    """Every series name the operator can export (labelled metrics have no sample until used)."""
    return {f.name + suffix for f in _families() for suffix in SERIES[f.type]}


def _referenced(expressions: list[str]) -> set[str]:
    return {m for e in expressions for m in re.findall(r"rollback_operator_[a-z_]+", e)}


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    expressions = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert {"RollbackFailed", "RollbackStuck"} <= set(alerts)
    missing = _referenced(expressions) - _exported()
    assert not missing, f"alerts use metrics the operator does not export: {missing}"


def test_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    referenced = _referenced(expressions)
    assert {
        "rollback_operator_requests_total",
        "rollback_operator_step_duration_seconds_bucket",
    } <= referenced
    missing = referenced - _exported()
    assert not missing, f"the dashboard uses metrics the operator does not export: {missing}"


def test_metric_names_follow_the_conventions() -> None:
    """Prefix, base units, `_total` counters: what dashboards and alerts elsewhere expect."""
    families = {f.name: f.type for f in _families()}
    assert len(families) == 6
    for name, kind in families.items():
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        assert not name.endswith(("_ms", "_milliseconds", "_minutes")), name
