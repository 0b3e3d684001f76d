"""The alert rules and the dashboard use only metrics the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import rollback_operator.metrics  # noqa: F401  (registers the metrics)

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
MONITORING = MANIFESTS / "monitoring"
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


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((MONITORING / name).read_text())
    return loaded


def test_prometheus_rule_holds_the_alert_rules() -> None:
    """The PrometheusRule is the rule file promtool tests, as it is."""
    rule = _load("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == _load("alerts.yaml"), (
        "manifests/monitoring/prometheusrule.yaml's spec differs from alerts.yaml: copy the "
        "groups of alerts.yaml under spec:"
    )


def test_operator_down_alert_reads_the_job_the_service_monitor_makes() -> None:
    """Under the Prometheus Operator the job label is the value of the Service's label named by
    the ServiceMonitor's jobLabel, or else the Service's name (the CRD's own description says
    so): the alert must read that job, or it would fire forever."""
    monitor = _load("servicemonitor.yaml")
    service = yaml.safe_load((MANIFESTS / "common" / "service.yaml").read_text())
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    labels = dict(service["metadata"].get("labels", {}))
    for entry in kustomization["labels"]:
        labels.update(entry["pairs"])
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in ports
    job_label = monitor["spec"].get("jobLabel")
    job = labels[job_label] if job_label in labels else service["metadata"]["name"]

    rules = [r for g in _load("alerts.yaml")["groups"] for r in g["rules"]]
    (down,) = [r for r in rules if r["alert"] == "RollbackOperatorDown"]
    assert re.findall(r'up\{job="([^"]+)"\}', down["expr"]) == [job]
