"""The operator's own metrics, in the Prometheus conventions (`rollback_operator_` prefix, base
units, `_total` counters), served on /metrics by `python -m rollback_operator --metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "rollback_operator_requests_total",
    "RollbackRequests that reached a terminal phase, by result (Succeeded, Failed, Aborted).",
    ["result"],
)
IN_PROGRESS = Gauge(
    "rollback_operator_requests_in_progress",
    "RollbackRequests being driven by this operator now (queued ones included).",
)
STEP_DURATION = Histogram(
    "rollback_operator_step_duration_seconds",
    "How long each step took, from its start to its end (skipped steps are not observed).",
    ["step", "result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TIME_TO_MAINTENANCE = Histogram(
    "rollback_operator_time_to_maintenance_seconds",
    "From a request's creation to the site served by the maintenance page.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
MONITORING_BREACHES = Counter(
    "rollback_operator_monitoring_breaches_total",
    "Thresholds breached during the Monitor step.",
)
API_ERRORS = Counter(
    "rollback_operator_api_errors_total",
    "Kubernetes API calls that failed, by HTTP status (0: the API server was unreachable).",
    ["status"],
)
