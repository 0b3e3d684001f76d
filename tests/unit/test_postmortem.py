"""The post-mortem renders every step, the changes and the sections to fill in."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from rollback_operator.postmortem import configmap_name, render

REQUEST = {
    "metadata": {
        "name": "golive",
        "namespace": "lawyershub",
        "creationTimestamp": "2026-01-10T03:00:00Z",
    },
    "spec": {
        "reason": "Error rate | 7.2 %",
        "trigger": "ErrorRate",
        "traffic": {"maintenanceBackend": {"service": "maintenance-page", "port": 80}},
    },
    "status": {
        "startedAt": "2026-01-10T03:00:01.000Z",
        "steps": [
            {
                "name": "Preflight",
                "state": "Succeeded",
                "startedAt": "2026-01-10T03:00:01.000Z",
                "finishedAt": "2026-01-10T03:00:01.250Z",
                "message": "found | everything",
            },
            {
                "name": "RestoreDatabase",
                "state": "Succeeded",
                "approvedBy": "dba-alice",
                "approvedAt": "2026-01-10T03:04:00.000Z",
            },
            {"name": "Monitor", "state": "Skipped", "message": "not configured"},
        ],
        "backup": {
            "claimName": "db-backups",
            "directory": "/backups",
            "file": "pre-golive-snapshot-20260109.sql",
            "sizeBytes": 1024,
            "sha256": "9f86d08",
        },
        "jobs": [{"name": "golive-restore-1a2b3", "step": "RestoreDatabase"}],
        "checks": [
            {"name": "redis", "type": "tcp", "passed": True, "attempts": 2, "message": "+PONG"}
        ],
        "monitoring": {
            "elapsedSeconds": 1800,
            "durationSeconds": 1800,
            "evaluations": 60,
            "healthy": 59,
            "noData": 1,
            "errors": 0,
            "rules": [
                {
                    "name": "errorRate",
                    "query": "sum(rate(x[2m]))",
                    "threshold": 0.05,
                    "value": 0.01,
                    "peak": 0.02,
                    "result": "Healthy",
                }
            ],
        },
        "notifications": [{"name": "slack", "sent": 3, "failed": 1, "lastError": "HTTP 500"}],
        "saved": {
            "deployments": {
                "backend": {
                    "images": {"api": "reg:5000/app/backend:bad@sha256:ab"},
                    "initImages": {"migrate": "reg:5000/app/backend:bad"},
                }
            },
            "ingresses": {
                "site": {
                    "backends": [
                        {
                            "location": {"rule": 0, "path": 0, "host": "h", "pathValue": "/api"},
                            "backend": {"service": {"name": "backend", "port": {"name": "http"}}},
                        }
                    ]
                }
            },
            "hpas": {"backend": {"minReplicas": 3, "maxReplicas": 12}},
        },
    },
}


def test_the_report_has_the_timeline_the_changes_and_the_sections_to_fill() -> None:
    document = render(REQUEST, datetime(2026, 1, 10, 4, 0, tzinfo=UTC))
    assert document.startswith("# Post-mortem: rollback golive")
    assert "- **Trigger:** ErrorRate" in document
    assert "- RestoreDatabase: approved by dba-alice at 2026-01-10T03:04:00.000Z" in document
    assert "`/backups/pre-golive-snapshot-20260109.sql` on claim db-backups, 1024 bytes" in document
    assert (
        "sha256 `9f86d08`" in document
        and "**Job golive-restore-1a2b3** (RestoreDatabase)" in document
    )
    assert "| redis | tcp | passed | 2 | +PONG |" in document
    assert "Watched for 30m of 30m: 60 evaluation(s), 59 healthy, 1 without data" in document
    assert "| error rate | `sum(rate(x[2m]))` | 5.00 % | 1.00 % | 2.00 % | Healthy |" in document
    assert "| slack | 3 | 1 | HTTP 500 |" in document
    assert "| 1 | [Preflight](#preflight) | Succeeded |" in document
    assert "| 0.25s | found \\| everything |" in document  # a pipe cannot break the table
    before_after = "`reg:5000/app/backend:bad@sha256:ab` | `reg:5000/app/backend:stable-last-known`"
    assert f"| backend/api | {before_after} |" in document
    migrate = "`reg:5000/app/backend:bad` | `reg:5000/app/backend:stable-last-known`"
    assert f"| backend/migrate (init) | {migrate} |" in document
    assert "| site | h/api | backend:http |" in document
    assert "| backend | 3 | 12 | default |" in document
    assert "[Monitor](#monitor): Skipped: not configured" in document
    for section in ("## Root cause", "## Findings", "## Follow-ups", "### Preflight"):
        assert section in document


def test_the_configmap_is_named_after_the_request() -> None:
    assert configmap_name("golive-2026-01-10") == "golive-2026-01-10-postmortem"


def test_the_post_mortem_names_the_requester_the_gates_and_what_was_approved() -> None:
    request = copy.deepcopy(REQUEST)
    status = request["status"]
    status["requestedBy"] = "lead-larry"
    status["gates"] = [
        {
            "step": "RestoreDatabase",
            "groups": [["dba"]],
            "who": "a member of group dba",
            "requiredBy": "the built-in default",
        }
    ]
    status["steps"][1]["approvalDigest"] = "0123456789abcdef"
    status["steps"][1]["approvalSubject"] = "database db:5432/app; file /backups/x.sql"
    text = render(request, datetime(2026, 1, 10, 4, 0, tzinfo=UTC))
    assert "- **Requested by:** lead-larry (recorded by the API server)" in text
    assert (
        "- RestoreDatabase waited for a member of group dba (asked by the built-in default)" in text
    )
    assert (
        "- RestoreDatabase: approved by dba-alice at 2026-01-10T03:04:00.000Z: "
        "RestoreDatabase@0123456789abcdef, database db:5432/app; file /backups/x.sql" in text
    )


def test_the_report_lists_the_http_route_rules_switched_with_their_original_backend_refs() -> None:
    request = copy.deepcopy(REQUEST)
    request["status"]["saved"]["httpRoutes"] = {
        "site": {
            "maintenance": {"name": "maintenance-page", "port": 80},
            "rules": [
                {
                    "location": {"index": 0, "name": "api", "matches": None},
                    "backendRefs": [
                        {"name": "backend", "port": 8080, "weight": 90},
                        {"name": "search", "namespace": "shared", "port": 9200, "weight": 10},
                    ],
                },
                {"location": {"index": 2, "name": "", "matches": None}, "backendRefs": []},
            ],
        }
    }
    document = render(request, datetime(2026, 1, 10, 4, 0, tzinfo=UTC))
    assert (
        "| site | rule 'api' | Service backend:8080 weight 90, Service shared/search:9200 "
        "weight 10 |" in document
    )
    assert "| site | rules[2] | no backend |" in document
