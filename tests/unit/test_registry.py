"""The registry: every step once, in the runbook's order; Preflight composed from the steps'
parts; and the answers the engine's tests stand in for (tests/unit/test_engine.py)."""

from __future__ import annotations

import pytest

from rollback_operator import registry
from rollback_operator.database.preflight import DATABASE_PREFLIGHT
from rollback_operator.model import STEP_ORDER, StepName
from rollback_operator.steps.preflight import Preflight
from tests.unit.test_engine import NO_HPAS, SPEC, TARGETS, skips


def test_every_step_once_in_the_runbooks_order() -> None:
    assert list(registry.STEPS) == list(STEP_ORDER)
    assert all(step.name == name for name, step in registry.STEPS.items())


def test_preflight_runs_each_capabilitys_part_once() -> None:
    preflight = registry.STEPS[StepName.PREFLIGHT]
    assert isinstance(preflight, Preflight)
    parts = [registry.STEPS[s].preflight for s in STEP_ORDER if registry.STEPS[s].preflight]
    # SuspendGitOps, EnableMaintenance (HTTPRoutes), PurgeCDN, the database steps (one), Verify,
    # Monitor
    assert len(parts) == 7
    assert list(preflight.checks) == [
        registry.STEPS[StepName.SUSPEND_GITOPS].preflight,
        registry.STEPS[StepName.ENABLE_MAINTENANCE].preflight,
        registry.STEPS[StepName.PURGE_CDN].preflight,
        DATABASE_PREFLIGHT,
        registry.STEPS[StepName.VERIFY].preflight,
        registry.STEPS[StepName.MONITOR].preflight,
    ]


@pytest.mark.parametrize("targets", [None, TARGETS, NO_HPAS])
@pytest.mark.parametrize("step", STEP_ORDER)
def test_the_engine_tests_answers_are_the_steps_own(step: StepName, targets: object) -> None:
    assert registry.skip_reason(step, SPEC, targets) == skips(step, SPEC, targets)  # type: ignore[arg-type]
