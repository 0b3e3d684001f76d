"""What GitOps tools and `kubectl wait` read (the outcome conditions), a request that runs once
per name and spec (runonce.py, the Report step's record, the runner's early end), and the
shipped health checks kept in step with what proves them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from rollback_operator import engine, registry, runonce
from rollback_operator.engine import EarlierRun, Signals, decide, ran_before
from rollback_operator.kube import Kube
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import (
    RERUN_ANNOTATION,
    Phase,
    RollbackSpec,
    StepName,
    StepState,
    Targets,
)
from rollback_operator.outcomes import Done, Fail, NeedsApproval
from rollback_operator.status import Status
from rollback_operator.steps.base import StepContext
from rollback_operator.steps.report import Report
from tests.unit import test_runner
from tests.unit.test_runner import FakeApi, ScriptedStep, drive

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
RAW_SPEC = test_runner.SPEC  # the runner tests' request
SPEC = RollbackSpec.parse(RAW_SPEC)
OUTCOME = ("Reconciling", "Stalled", "Complete", "Failed")


def outcome(status: Status) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.conditions if c["type"] in OUTCOME}


def reasons(status: Status) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in status.conditions}


def no_skip(step: StepName, spec: RollbackSpec, targets: Targets | None) -> str | None:
    return None


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> dict[StepName, ScriptedStep]:
    """Scripted stand-ins for every step, as in test_runner."""
    scripted = {name: ScriptedStep(name) for name in registry.STEPS}
    for name, step in scripted.items():
        monkeypatch.setitem(registry.STEPS, name, step)  # type: ignore[arg-type]
    return scripted


# --- the outcome conditions


def test_every_phase_on_the_way_is_reconciling_and_nothing_else() -> None:
    """kstatus reads Reconciling=True as InProgress: while queued, running, awaiting approval
    and monitoring."""
    queued = engine.queued(Status(), "first", SPEC, T0)
    running = engine.started(Status(), StepName.PREFLIGHT, SPEC, T0)
    waiting = engine.stepped(running, StepName.PREFLIGHT, NeedsApproval("QA signs off"), SPEC, T0)
    watching = engine.started(running, StepName.MONITOR, SPEC, T0)
    for status, phase in (
        (queued, Phase.QUEUED),
        (running, Phase.RUNNING),
        (waiting, Phase.AWAITING_APPROVAL),
        (watching, Phase.MONITORING),
    ):
        assert status.phase == phase
        assert outcome(status) == {
            "Reconciling": "True",
            "Stalled": "False",
            "Complete": "False",
            "Failed": "False",
        }
        assert reasons(status)["Reconciling"] == str(phase)
    assert {c["type"]: c for c in waiting.conditions}["Reconciling"]["message"] == (waiting.message)


def test_success_is_complete_and_failure_or_abort_is_failed_and_stalled() -> None:
    running = engine.started(Status(), StepName.PREFLIGHT, SPEC, T0)
    succeeded = engine.completed(running, SPEC, T0)
    failed = engine.stepped(running, StepName.PREFLIGHT, Fail("no such Ingress"), SPEC, T0)
    aborted = engine.aborted(running, SPEC, T0)
    assert outcome(succeeded) == {
        "Reconciling": "False",
        "Stalled": "False",
        "Complete": "True",
        "Failed": "False",
    }
    for status, phase in ((failed, "Failed"), (aborted, "Aborted")):
        assert outcome(status) == {
            "Reconciling": "False",
            "Stalled": "True",
            "Complete": "False",
            "Failed": "True",
        }
        assert reasons(status)["Failed"] == reasons(status)["Stalled"] == phase
        assert {c["type"]: c for c in status.conditions}["Failed"]["message"] == status.message


def test_the_first_write_says_in_progress_with_the_generation(
    steps: dict[StepName, ScriptedStep],
) -> None:
    """A new request is InProgress for kstatus from the operator's first write on."""
    api = FakeApi()
    drive(api)
    first = api.writes[0]
    assert first["observedGeneration"] == 1
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["Reconciling"]["status"] == "True"
    assert conditions["Reconciling"]["observedGeneration"] == 1
    assert api.status["phase"] == "Succeeded"


# --- a request runs once


def test_the_key_changes_with_the_spec_and_the_rerun_reason_only() -> None:
    key = runonce.key(RAW_SPEC, None)
    assert key == runonce.key(json.loads(json.dumps(RAW_SPEC)), "")
    assert key != runonce.key({**RAW_SPEC, "targetTag": "v1"}, None)
    assert key != runonce.key(RAW_SPEC, "verify was flaky")
    assert runonce.key(RAW_SPEC, "a") != runonce.key(RAW_SPEC, "b")
    # An annotation's name part: at most 63 characters.
    assert re.fullmatch(r"[0-9a-f]{40}", key)


def _configmap(records: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "golive-postmortem", "annotations": records}}


def test_an_earlier_run_is_found_only_for_another_uid_and_a_finished_record() -> None:
    key = runonce.key(RAW_SPEC, None)
    stamped = runonce.stamped(None, key, "uid-1", Phase.FAILED, T0)
    earlier = runonce.earlier(_configmap(stamped), key, "uid-2")
    assert earlier == EarlierRun(
        uid="uid-1",
        phase=Phase.FAILED,
        finished_at="2026-01-10T03:00:00.000Z",
        configmap="golive-postmortem",
        key=key,
    )
    assert runonce.earlier(_configmap(stamped), key, "uid-1") is None, "its own record"
    assert runonce.earlier(_configmap(stamped), runonce.key(RAW_SPEC, "again"), "u2") is None
    assert runonce.earlier(None, key, "uid-2") is None
    for forged in ("not json", json.dumps({"uid": "x", "phase": "Running"}), "[]"):
        assert runonce.earlier(_configmap({runonce.PREFIX + key: forged}), key, "u2") is None


def test_a_record_keeps_the_others() -> None:
    first = runonce.stamped(None, "a" * 40, "uid-1", Phase.SUCCEEDED, T0)
    both = runonce.stamped(
        _configmap({**first, "unrelated": "x"}), "b" * 40, "uid-2", Phase.FAILED, T0
    )
    assert set(both) == {runonce.PREFIX + "a" * 40, runonce.PREFIX + "b" * 40}


def test_ran_before_only_for_a_new_request() -> None:
    earlier = EarlierRun("uid-1", Phase.SUCCEEDED, "2026-01-09T03:00:00Z", "g-postmortem", "k")
    fresh = Signals(earlier=earlier)
    assert decide(SPEC, Status(), fresh, no_skip) == engine.RanBefore(earlier)
    running = engine.started(Status(), StepName.PREFLIGHT, SPEC, T0)
    assert decide(SPEC, running, fresh, no_skip) == engine.Run(StepName.PREFLIGHT)
    assert decide(SPEC, Status(), Signals(abort=True, earlier=earlier), no_skip) == engine.Abort()


def test_ran_before_ends_with_the_earlier_ending_and_points_at_its_post_mortem() -> None:
    earlier = EarlierRun("uid-1", Phase.FAILED, "2026-01-09T03:00:00Z", "golive-postmortem", "k")
    new = ran_before(Status(observed_generation=1), earlier, SPEC, T0)
    assert new.phase == Phase.FAILED
    assert new.announced is False
    assert all(r.state == StepState.SKIPPED for r in new.steps)
    assert new.report == {"configMap": "golive-postmortem", "key": "postmortem.md"}
    assert new.earlier_run == earlier.to_dict()
    assert "uid-1" in new.message and "ConfigMap golive-postmortem" in new.message
    assert RERUN_ANNOTATION in new.message
    assert reasons(new)["Failed"] == "RanBefore"
    assert outcome(new)["Failed"] == "True"
    assert Status.from_dict(new.to_dict()).earlier_run == earlier.to_dict()


def test_a_re_created_request_ends_at_once_without_running_or_reporting(
    steps: dict[StepName, ScriptedStep],
) -> None:
    key = runonce.key(test_runner.SPEC, None)
    api = FakeApi()
    api.configmaps["golive-postmortem"] = _configmap(
        runonce.stamped(None, key, "uid-0", Phase.SUCCEEDED, T0)
    )
    drive(api)
    assert all(step.calls == 0 for step in steps.values()), "no step, not even the report"
    assert api.status["phase"] == "Succeeded"
    assert api.status["earlierRun"]["uid"] == "uid-0"
    assert api.status["announced"] is True
    assert ("Normal", "NotRunAgain") in api.events
    assert not any(reason == "Succeeded" for _, reason in api.events)

    rerun = FakeApi()
    rerun.configmaps = api.configmaps
    drive(rerun, {RERUN_ANNOTATION: "verify was flaky"})
    assert steps[StepName.PREFLIGHT].calls == 1 and "earlierRun" not in rerun.status


class ConfigMaps:
    """The two calls the Report step makes, on one stored ConfigMap."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.stored

    def apply_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> None:
        meta = {"name": name, "labels": labels, "annotations": annotations or {}}
        self.stored = {"metadata": meta, "data": data}


@pytest.mark.parametrize(("phase", "recorded"), [("Running", "Succeeded"), ("Failed", "Failed")])
def test_the_report_records_the_run_under_its_key(phase: str, recorded: str) -> None:
    kube = ConfigMaps()
    kube.stored = _configmap(runonce.stamped(None, "0" * 40, "uid-0", Phase.SUCCEEDED, T0))
    body = {
        "metadata": {"name": "golive", "namespace": "ns", "annotations": {RERUN_ANNOTATION: "r"}},
        "spec": RAW_SPEC,
    }
    status = Status(phase=Phase(phase))
    ledger = StatusLedger(status, body=lambda: body)
    ctx = StepContext(
        kube=cast(Kube, kube),
        namespace="ns",
        request="golive",
        request_uid="uid-1",
        spec=SPEC,
        ledger=ledger,
        targets=Targets.of(SPEC),
        step_started_at=T0,
        now=lambda: T0,
    )
    assert isinstance(Report().run(ctx), Done)
    assert kube.stored is not None
    found = runonce.earlier(kube.stored, runonce.key(RAW_SPEC, "r"), "uid-2")
    assert found is not None and (found.uid, str(found.phase)) == ("uid-1", recorded)
    assert runonce.earlier(kube.stored, "0" * 40, "uid-2") is not None, "older records stay"


# --- the shipped health checks


def test_the_argocd_cm_snippet_installs_the_shipped_lua_verbatim() -> None:
    gitops = REPO_ROOT / "manifests" / "gitops"
    snippet = yaml.safe_load((gitops / "argocd-cm.yaml").read_text())
    key = "resource.customizations.health.rollback.lawyershub.io_RollbackRequest"
    assert snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"][key] == (gitops / "argocd-health.lua").read_text()


def test_the_flux_snippet_names_the_kind_and_every_expression() -> None:
    flux = yaml.safe_load((REPO_ROOT / "manifests/gitops/flux-health-check.yaml").read_text())
    (entry,) = flux["spec"]["healthCheckExprs"]
    assert (entry["apiVersion"], entry["kind"]) == (
        "rollback.lawyershub.io/v1alpha1",
        "RollbackRequest",
    )
    assert {"current", "inProgress", "failed"} <= set(entry)


def test_the_health_check_program_pins_the_versions_of_versions_env() -> None:
    env = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / "cluster/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    gomod = (REPO_ROOT / "cluster/health-check/go.mod").read_text()
    for module, variable in (
        ("sigs.k8s.io/cli-utils", "CLI_UTILS_VERSION"),
        ("github.com/yuin/gopher-lua", "GOPHER_LUA_VERSION"),
        ("github.com/google/cel-go", "CEL_GO_VERSION"),
    ):
        assert f"\t{module} {env[variable]}\n" in gomod
