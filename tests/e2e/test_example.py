"""examples/rollback.yaml, as shipped, end to end: the operator process runs it against the
stand-ins `make demo` uses (standins/example.py: a real PostgreSQL and Prometheus, the
Cloudflare and webhook fakes, Redis and the application's endpoints), through the same
transform of its production addresses, with the DBA and the QA Lead approving as themselves
(impersonated, under the shipped admission policy).

Every step must succeed, except MigrateDatabaseDown, Skipped for the documented reason (the
restore supersedes it, docs/database.md); the data must be the pre-go-live snapshot's again, the
CDN purged once, and every notification delivered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rollback_operator.model import STEP_ORDER, ended
from rollback_operator.steps.migrate_database_down import REPLACED_BY_RESTORE
from standins.example import CHOSEN_DUMP, StandIns
from standins.lawyershub_db import contents
from standins.local import wait_until
from standins.transform import Local, load_example, transform
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    get_request,
    ledger,
    on_maintenance,
)
from tests.e2e.people import DBA, QA, approve, as_person, install_approval_policy
from tests.e2e.support import needs_job_runner

pytestmark = [pytest.mark.e2e, needs_job_runner]

NAME = "golive-2026-01-10"
STEPS = [str(step) for step in STEP_ORDER]
# The only step the example does not run, and why (docs/database.md).
DOCUMENTED_SKIPS = {"MigrateDatabaseDown": REPLACED_BY_RESTORE}
CHECKS = ["backend", "frontend", "postgres", "redis", "ai-gateway", "save-document"]
EVENTS = [
    ("Started", "Preflight"),
    ("AwaitingApproval", "RestoreDatabase"),
    ("AwaitingApproval", "Verify"),
    ("Succeeded", "Report"),
]


@pytest.fixture
def stand_ins(api: client.ApiClient, app: str, tmp_path: Path) -> Iterator[StandIns]:
    """The demo's stand-ins for the test's namespace, with the Secrets, volume and claim the
    example refers to."""
    with StandIns(tmp_path / "stand-ins", app) as running:
        running.install(api)
        yield running
        running.uninstall(api)


def wait_for(
    api: client.ApiClient,
    namespace: str,
    what: str,
    wanted: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    """The request once `wanted` holds, or once its run ended (so a failure shows at once)."""

    def probe() -> dict[str, Any] | None:
        obj = get_request(api, namespace, NAME)
        return obj if wanted(obj) or ended(obj.get("status", {})) else None

    return wait_until(probe, timeout=timeout, what=what)


def awaiting(step: str) -> Callable[[dict[str, Any]], bool]:
    def at(obj: dict[str, Any]) -> bool:
        status = obj.get("status", {})
        return bool(status.get("phase") == "AwaitingApproval" and status.get("step") == step)

    return at


def test_the_example_runs_every_step_against_the_stand_ins(
    api: client.ApiClient, kubeconfig: str, app: str, stand_ins: StandIns, operator: Operator
) -> None:
    namespace = app
    assert stand_ins.db is not None and stand_ins.cdn is not None
    install_approval_policy(api, kubeconfig, namespace)
    body, swaps = transform(load_example(), stand_ins.local(), namespace=namespace)
    assert swaps
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )

    # The DBA's turn: the backup is chosen and recorded, nothing is restored yet.
    waiting = wait_for(api, namespace, "the DBA's turn", awaiting("RestoreDatabase"), 120)
    assert awaiting("RestoreDatabase")(waiting), waiting["status"].get("message")
    assert waiting["status"]["backup"]["file"] == CHOSEN_DUMP
    assert on_maintenance(api, namespace)
    assert contents(stand_ins.db) == stand_ins.seeded.bad_release
    approve(as_person(kubeconfig, DBA), namespace, NAME, "RestoreDatabase", DBA[0])

    # QA's turn: every check passed, traffic still off the application.
    waiting = wait_for(api, namespace, "QA's turn", awaiting("Verify"), 120)
    assert awaiting("Verify")(waiting), waiting["status"].get("message")
    assert on_maintenance(api, namespace)
    approve(as_person(kubeconfig, QA), namespace, NAME, "Verify", QA[0])

    done = wait_for(api, namespace, "the end of the run", lambda _: False, 150)
    status = done["status"]
    assert status["phase"] == "Succeeded", status.get("message")

    # Every step ran, in the runbook's order, but the one the documentation says it skips.
    steps = ledger(done)
    assert [s["name"] for s in status["steps"]] == STEPS
    for name, step in steps.items():
        if name in DOCUMENTED_SKIPS:
            assert (step["state"], step.get("message")) == ("Skipped", DOCUMENTED_SKIPS[name])
        else:
            assert step["state"] == "Succeeded", (name, step.get("message"))
    assert steps["RestoreDatabase"]["approvedBy"] == DBA[0]
    assert steps["Verify"]["approvedBy"] == QA[0]
    assert not on_maintenance(api, namespace)

    # The data is the pre-go-live snapshot's again: every row and the whole schema.
    assert contents(stand_ins.db) == stand_ins.seeded.pre_golive

    # The CDN was purged once, as the example says, in the form Cloudflare documents.
    purges = stand_ins.cdn.received()
    assert [(p.method, p.json, p.status) for p in purges] == [
        ("POST", {"purge_everything": True}, 200)
    ]
    assert stand_ins.cdn.violations == []

    # Every check passed, the smoke test saved its document through the backend.
    assert [(c["name"], c["passed"]) for c in status["checks"]] == [(c, True) for c in CHECKS]
    assert [(h.path, h.status) for h in stand_ins.smoke_calls()] == [("/api/smoke/documents", 201)]

    # The watch measured healthy traffic from the real Prometheus.
    watch = status["monitoring"]
    assert watch["evaluations"] >= 3 and watch["healthy"] == watch["evaluations"]
    assert "breach" not in watch

    # Slack and the on-call webhook heard of the start, both waits and the end.
    assert stand_ins.webhooks is not None and stand_ins.webhooks.rejected == []
    on_call = stand_ins.hooks["on-call"].messages
    assert [(m["event"], m["step"]) for m in on_call] == EVENTS
    slack = [m["blocks"][0]["text"]["text"] for m in stand_ins.hooks["ops-slack"].messages]
    assert slack == [
        f"Rollback started: {NAME} in {namespace}",
        f"Rollback awaits approval: {NAME} in {namespace}",
        f"Rollback awaits approval: {NAME} in {namespace}",
        f"Rollback succeeded: {NAME} in {namespace}",
    ]
    assert {n["name"]: (n["sent"], n["failed"]) for n in status["notifications"]} == {
        "ops-slack": (4, 0),
        "on-call": (4, 0),
    }

    # The post-mortem is where the status says.
    report = client.CoreV1Api(api).read_namespaced_config_map(
        status["report"]["configMap"], namespace
    )
    assert "RestoreDatabase: approved by dba-alice" in report.data[status["report"]["key"]]

    # No secret the stand-ins handed out shows anywhere the operator writes.
    written = json.dumps(done) + operator.logs()
    for value in (
        stand_ins.cdn_token,
        stand_ins.smoke_token,
        stand_ins.db.password,
        stand_ins.hooks["ops-slack"].path,
    ):
        assert value not in written


def test_the_transform_swaps_only_addresses_and_refuses_unknown_ones() -> None:
    example = load_example()
    local = Local(
        addresses={
            "backend.lawyershub.svc:8080": "127.0.0.1:1001",
            "frontend.lawyershub.svc:80": "127.0.0.1:1002",
            "ai-gateway.lawyershub.svc:8080": "127.0.0.1:1003",
            "postgres.lawyershub.svc:5432": "127.0.0.1:1004",
            "redis.lawyershub.svc:6379": "127.0.0.1:1005",
            "prometheus.monitoring.svc:9090": "127.0.0.1:1006",
            "oncall.lawyershub.example:443": "127.0.0.1:1007",
        },
        cdn_api_base="http://127.0.0.1:1008/client/v4",
    )
    body, swaps = transform(example, local, namespace="t-1")
    spec = body["spec"]

    # No production address is left; the sections without any are untouched.
    text = json.dumps(spec)
    for production in local.addresses:
        assert production.split(":")[0] not in text
    for section in ("traffic", "workloads", "autoscaling", "database", "reason", "trigger"):
        assert spec[section] == example["spec"][section]
    assert spec["cdn"] == {**example["spec"]["cdn"], "apiBase": local.cdn_api_base}
    assert spec["monitoring"]["duration"] == "30s" and spec["monitoring"]["interval"] == "5s"
    redis = next(c for c in spec["verification"]["checks"] if c["name"] == "redis")
    assert redis["tcp"] == {**_check(example, "redis")["tcp"], "host": "127.0.0.1", "port": 1005}
    assert body["metadata"]["namespace"] == "t-1"
    assert {s.field for s in swaps} >= {
        "spec.cdn.apiBase",
        "spec.verification.checks[backend].http.url",
        "spec.verification.checks[save-document].job.env[BACKEND_URL]",
        "spec.monitoring.prometheus.url",
        "spec.notify[on-call].url",
    }

    # An address the stand-ins do not serve is refused, not passed through.
    _check(example, "frontend")["http"]["url"] = "http://search.lawyershub.svc:9200/"
    with pytest.raises(ValueError, match=r"no local stand-in for search\.lawyershub\.svc:9200"):
        transform(example, local)


def _check(request: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in request["spec"]["verification"]["checks"] if c["name"] == name
    )
    return found
