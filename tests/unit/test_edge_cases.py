"""Edge cases that once went wrong: a default backend switched by merge patch, a stale
progress deadline, aborting a dry run, discovered HPAs in the queue, partly switched sites."""

from __future__ import annotations

import copy
from datetime import timedelta

from rollback_operator.engine import aborted, queued, stepped
from rollback_operator.model import Phase, StepName, Targets
from rollback_operator.queue import claims
from rollback_operator.rollout import rollout_state
from rollback_operator.status import Status
from rollback_operator.steps.base import Fail
from rollback_operator.steps.disable_maintenance import DisableMaintenance
from rollback_operator.steps.enable_maintenance import EnableMaintenance
from rollback_operator.steps.revert_workloads import RevertWorkloads
from tests.unit.test_engine import (
    SPEC,
    T0,
    at,
    before,
    flags,
    status_after,
)
from tests.unit.test_engine import (
    make_spec as engine_spec,
)
from tests.unit.test_steps import (
    APP,
    MAINTENANCE,
    NS,
    lawyershub,
    make_spec,
)


# B1
def test_enable_switches_a_default_backend_whose_port_is_a_name() -> None:
    world = lawyershub(default_backend=APP)  # defaultBackend: frontend, port {name: http}
    EnableMaintenance().run(world.ctx(make_spec()))  # maintenance: port {number: 80}
    assert world.kube.stored("Ingress", "lawyershub")["spec"]["defaultBackend"] == MAINTENANCE


def test_disable_restores_a_default_backend_whose_port_is_a_name() -> None:
    world = lawyershub(default_backend=APP)
    original = copy.deepcopy(world.kube.stored("Ingress", "lawyershub")["spec"])
    spec = make_spec()
    EnableMaintenance().run(world.ctx(spec))
    # what the API server would have stored had it accepted the switch
    world.kube.stored("Ingress", "lawyershub")["spec"]["defaultBackend"] = copy.deepcopy(
        MAINTENANCE
    )
    DisableMaintenance().run(world.ctx(spec))
    assert world.kube.stored("Ingress", "lawyershub")["spec"] == original


# B2
def test_a_deadline_exceeded_before_the_new_spec_was_observed_is_not_stuck() -> None:
    d = {
        "metadata": {"name": "backend", "generation": 3},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 0,
            "availableReplicas": 0,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "backend-bad" has timed out progressing.',
                }
            ],
        },
    }
    state = rollout_state(d)
    assert state.stuck is None
    assert state.detail == "backend: waiting for the controller to see the new spec"


def test_revert_of_a_crashlooping_deployment_waits_for_the_new_rollout() -> None:
    world = lawyershub()
    stuck = world.kube.stored("Deployment", "frontend")
    stuck["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "frontend-bad" has timed out progressing.',
        }
    ]
    outcome = RevertWorkloads().run(world.ctx(make_spec(workloads=[{"deployment": "frontend"}])))
    assert not isinstance(outcome, Fail), outcome


# B3
def test_aborting_a_dry_run_does_not_say_the_maintenance_page_is_on() -> None:
    spec = engine_spec(dry_run=True)
    status = status_after(before(StepName.REVERT_WORKLOADS), running=StepName.REVERT_WORKLOADS)
    new = aborted(status, spec, at(5))
    assert "maintenance page is still on" not in new.message, new.message
    assert "HPAs are still frozen" not in new.message


# B4
def test_an_hpa_found_by_discovery_is_claimed() -> None:
    raw = {
        "reason": "r",
        "trigger": "ErrorRate",
        "traffic": {"ingresses": ["site"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
    status = {
        "phase": "Running",
        "targets": {"ingresses": ["site"], "deployments": ["backend"], "hpas": ["backend"]},
    }
    held = claims(NS, "a", raw, status, "2026-01-10T03:00:00Z")
    assert (NS, "HorizontalPodAutoscaler", "backend") in held


# B5
def test_aborting_a_queued_request_clears_queued_behind() -> None:
    new = aborted(queued(Status(), "first", SPEC, T0), SPEC, at(1))
    assert new.phase == Phase.ABORTED
    assert new.queued_behind is None


# B6
def test_rollout_timeout_message_does_not_claim_frozen_hpas_when_none_were() -> None:
    world = lawyershub()
    spec = make_spec(rollout_timeout="90s")
    targets = Targets(("lawyershub",), ("backend", "frontend"), ())
    RevertWorkloads().run(world.ctx(spec, targets))
    world.clock = T0 + timedelta(seconds=90)
    outcome = RevertWorkloads().run(world.ctx(spec, targets))
    assert isinstance(outcome, Fail)
    assert "autoscaling is still frozen" not in outcome.message, outcome.message


# B7
def test_a_partly_switched_site_is_reported_as_on_maintenance() -> None:
    world = lawyershub()
    spec = make_spec(ingresses=["lawyershub", "admin"])
    world.kube.delete("Ingress", "admin")
    outcome = EnableMaintenance().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert (
        world.kube.stored("Ingress", "lawyershub")["spec"]["rules"][0]["http"]["paths"][0][
            "backend"
        ]
        == MAINTENANCE
    )
    status = status_after(before(StepName.ENABLE_MAINTENANCE), running=StepName.ENABLE_MAINTENANCE)
    status.saved = copy.deepcopy(world.saved)
    failed = stepped(status, StepName.ENABLE_MAINTENANCE, outcome, SPEC, at(3))
    assert flags(failed)["MaintenanceActive"] == "True", failed.message
    aborted_ = aborted(status, SPEC, at(3))
    assert "Traffic was not switched" not in aborted_.message, aborted_.message
