"""Which earlier request's record a new request takes over, for objects left changed."""

from __future__ import annotations

from typing import Any

from rollback_operator.takeover import leftovers

ORIGINAL = {"backends": [{"location": {"default": True}, "backend": {"service": {"name": "app"}}}]}
HPA = {"minReplicas": 2, "maxReplicas": 5}


def request(
    name: str,
    phase: str,
    finished: str,
    *,
    restored: bool = False,
    dry_run: bool = False,
    saved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state = "Succeeded" if restored else "Pending"
    return {
        "metadata": {"name": name},
        "spec": {"dryRun": dry_run},
        "status": {
            "phase": phase,
            "finishedAt": finished,
            "saved": saved
            if saved is not None
            else {"ingresses": {"site": ORIGINAL}, "hpas": {"web": HPA}},
            "steps": [
                {"name": "ResumeAutoscaling", "state": state},
                {"name": "DisableMaintenance", "state": state},
            ],
        },
    }


def test_a_failed_request_leaves_its_records_to_take_over() -> None:
    found = leftovers([request("first", "Failed", "2026-01-10T03:00:00Z")], me="second")
    assert found["ingresses"]["site"].request == "first"
    assert found["ingresses"]["site"].saved == ORIGINAL
    assert found["hpas"]["web"].saved == HPA


def test_a_restore_by_a_later_request_clears_the_record() -> None:
    found = leftovers(
        [
            request("second", "Succeeded", "2026-01-10T04:00:00Z", restored=True),
            request("first", "Aborted", "2026-01-10T03:00:00Z"),
        ],
        me="third",
    )
    assert found == {"ingresses": {}, "httpRoutes": {}, "hpas": {}}


def test_the_most_recent_unfinished_record_wins() -> None:
    newer = {"ingresses": {"site": {"backends": []}}}
    found = leftovers(
        [
            request("second", "Failed", "2026-01-10T04:00:00Z", saved=newer),
            request("first", "Failed", "2026-01-10T03:00:00Z"),
        ],
        me="third",
    )
    assert found["ingresses"]["site"].request == "second"
    assert found["hpas"]["web"].request == "first"


def test_running_requests_dry_runs_and_the_request_itself_leave_nothing() -> None:
    found = leftovers(
        [
            request("running", "Running", ""),
            request("plan", "Succeeded", "2026-01-10T03:00:00Z", dry_run=True),
            request("me", "Failed", "2026-01-10T03:00:00Z"),
        ],
        me="me",
    )
    assert found == {"ingresses": {}, "httpRoutes": {}, "hpas": {}}


def test_a_watch_that_switched_the_maintenance_page_back_on_leaves_the_ingress_to_take_over() -> (
    None
):
    breached = request("first", "Failed", "2026-01-10T03:40:00Z", restored=True)
    breached["status"]["monitoring"] = {"maintenanceOn": True}
    found = leftovers([breached], me="second")
    assert found["ingresses"]["site"].saved == ORIGINAL
    assert found["hpas"] == {}  # the HPAs were given back and stay so
