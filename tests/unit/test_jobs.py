"""Jobs that run once: the manifest Pod Security "restricted" admits, names that stay the same
for a request, adoption after a crash, and never a second Job."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from rollback_operator.kube import ApiError
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.status import Status
from rollback_operator.steps.base import StepContext
from rollback_operator.steps.jobs import (
    REQUEST_UID_LABEL,
    SERVICE_ACCOUNT,
    JobState,
    JobTemplate,
    job_manifest,
    job_name,
    run_job_once,
    stop_on_abort,
)
from tests.unit.fake_watch import Watchable, called_until

NS, REQUEST, UID = "lawyershub", "golive-2026-01-10", "0b6f7a52-6a0e-4c5e-9a43-51f1f7b0c001"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
TEMPLATE = JobTemplate(
    purpose="restore",
    image="postgres:16",
    command=("sh", "-c", "psql ..."),
    env=({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},),
    deadline_seconds=600,
    run_as_user=999,
)
SPEC = RollbackSpec.parse(
    {
        "reason": "r",
        "trigger": "Manual",
        "traffic": {"ingresses": ["site"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
)


class FakeJobs(Watchable):
    """The Job calls of Kube: creates count, 409 on an existing name, uids handed out."""

    def watched(self, collection: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.accounts: list[str] = []

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def get(self, path: str) -> dict[str, Any] | None:
        return None  # no RollbackPolicy: no allowlist

    def create_job(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        if name in self.jobs:
            raise ApiError(409, "AlreadyExists", f"jobs.batch {name!r} already exists")
        self.created += 1
        stored = copy.deepcopy(job)
        stored["metadata"]["uid"] = f"job-uid-{self.created}"
        stored["metadata"]["creationTimestamp"] = "2026-01-10T03:00:01Z"
        self.jobs[name] = stored
        return copy.deepcopy(stored)

    def ensure_service_account(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self.accounts.append(name)

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def request(self, method: str, path: str, body: Any = None, *rest: Any, **kw: Any) -> Any:
        if method == "GET":  # a watch's list
            return super().request(method, path, body, *rest, **kw)
        assert method == "DELETE"
        name = path.rsplit("/", 1)[1]
        assert body["preconditions"]["uid"] == self.jobs[name]["metadata"]["uid"]
        assert body["propagationPolicy"] == "Foreground"  # its pod goes with it
        del self.jobs[name]

    def finish(self, name: str, condition: str, message: str = "") -> None:
        self.jobs[name]["status"] = {
            "conditions": [{"type": condition, "status": "True", "message": message}]
        }


def _context(kube: FakeJobs, sections: dict[str, Any]) -> StepContext:
    return StepContext(
        kube=kube,
        namespace=NS,
        request=REQUEST,
        spec=SPEC,
        ledger=StatusLedger(Status(sections=sections)),
        step_started_at=T0,
        now=lambda: T0,
        request_uid=UID,
    )


def test_the_name_is_stable_per_request_and_differs_for_a_later_request_of_the_same_name() -> None:
    assert job_name(REQUEST, UID, "restore") == job_name(REQUEST, UID, "restore")
    assert job_name(REQUEST, UID, "restore") != job_name(REQUEST, "another-uid", "restore")
    long = job_name("x" * 80, UID, "migrate-down")
    assert len(long) <= 63 and long.endswith(job_name("x", UID, "migrate-down")[1:])


def test_the_manifest_is_pod_security_restricted_runs_once_and_has_no_token_or_owner() -> None:
    job = job_manifest(NS, REQUEST, UID, StepName.RESTORE_DATABASE, TEMPLATE)
    assert "ownerReferences" not in job["metadata"]  # deleting the request keeps the Job
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert all("value" not in e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert job["metadata"]["labels"][REQUEST_UID_LABEL] == UID


def test_started_once_recorded_at_once_and_followed_to_its_end() -> None:
    kube, sections = FakeJobs(), {}
    ctx = _context(kube, sections)
    first = run_job_once(ctx, StepName.RESTORE_DATABASE, TEMPLATE)
    assert first.state == JobState.RUNNING and kube.created == 1
    assert sections["jobs"] == [
        {
            "name": first.name,
            "step": "RestoreDatabase",
            "uid": "job-uid-1",
            "createdAt": "2026-01-10T03:00:01Z",
        }
    ]
    assert run_job_once(ctx, StepName.RESTORE_DATABASE, TEMPLATE).state == JobState.RUNNING
    kube.finish(first.name, "Failed", "BackoffLimitExceeded")
    failed = called_until(
        lambda: run_job_once(ctx, StepName.RESTORE_DATABASE, TEMPLATE),
        lambda result: result.state != JobState.RUNNING,
    )
    assert failed.state == JobState.FAILED and "BackoffLimitExceeded" in failed.message
    assert kube.created == 1


def test_a_job_created_before_a_crash_but_not_recorded_is_adopted() -> None:
    kube = FakeJobs()
    run_job_once(_context(kube, {}), StepName.RESTORE_DATABASE, TEMPLATE)  # record lost
    sections: dict[str, Any] = {}
    adopted = run_job_once(_context(kube, sections), StepName.RESTORE_DATABASE, TEMPLATE)
    assert adopted.state == JobState.RUNNING and kube.created == 1
    assert sections["jobs"][0]["uid"] == "job-uid-1"


def test_a_recorded_job_that_is_gone_stops_the_run_and_is_never_recreated() -> None:
    kube, sections = FakeJobs(), {}
    ctx = _context(kube, sections)
    name = run_job_once(ctx, StepName.RESTORE_DATABASE, TEMPLATE).name
    del kube.jobs[name]
    lost = called_until(
        lambda: run_job_once(ctx, StepName.RESTORE_DATABASE, TEMPLATE),
        lambda result: result.state != JobState.RUNNING,
    )
    assert lost.state == JobState.FAILED and "is gone" in lost.message
    assert kube.created == 1


def test_a_job_of_the_same_name_not_started_by_this_request_is_not_adopted() -> None:
    kube = FakeJobs()
    name = job_name(REQUEST, UID, "restore")
    kube.jobs[name] = {"metadata": {"name": name, "uid": "foreign", "labels": {}}}
    sections: dict[str, Any] = {}
    result = run_job_once(_context(kube, sections), StepName.RESTORE_DATABASE, TEMPLATE)
    assert result.state == JobState.FAILED and "not started by this request" in result.message
    assert "jobs" not in sections and kube.created == 0


def test_an_abort_stops_the_steps_running_job_when_that_is_safe_and_says_so() -> None:
    kube = FakeJobs()
    sections: dict[str, Any] = {}
    run_job_once(_context(kube, sections), StepName.RESTORE_DATABASE, TEMPLATE)
    name = job_name(REQUEST, UID, "restore")
    fates = stop_on_abort(kube, NS, sections["jobs"], "RestoreDatabase", stop=True)
    assert name not in kube.jobs
    assert fates == [
        f"Job {name} was stopped: its work is one transaction, which PostgreSQL rolls back when "
        "the session ends, unless it had already committed; check the database before "
        "anything else"
    ]


def test_an_abort_leaves_a_job_it_cannot_stop_safely_running_and_names_it() -> None:
    kube = FakeJobs()
    sections: dict[str, Any] = {}
    run_job_once(_context(kube, sections), StepName.MIGRATE_DATABASE_DOWN, TEMPLATE)
    name = job_name(REQUEST, UID, "restore")
    fates = stop_on_abort(kube, NS, sections["jobs"], "MigrateDatabaseDown", stop=False)
    assert name in kube.jobs
    assert fates[0].startswith(f"Job {name} is left running")


def test_an_abort_leaves_finished_jobs_and_other_steps_jobs_alone() -> None:
    kube = FakeJobs()
    sections: dict[str, Any] = {}
    run_job_once(_context(kube, sections), StepName.PREFLIGHT, TEMPLATE)
    name = job_name(REQUEST, UID, "restore")
    assert stop_on_abort(kube, NS, sections["jobs"], "RestoreDatabase", stop=True) == []
    kube.finish(name, "Complete")
    assert stop_on_abort(kube, NS, sections["jobs"], "Preflight", stop=True) == []
    assert name in kube.jobs
