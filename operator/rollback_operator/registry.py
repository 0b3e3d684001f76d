"""The step registry: the one place that knows every step of the runbook, in its order.

It also composes Preflight from each step's part of it (`Step.preflight`), so that no step
imports another, and answers the engine's one question about steps: does this one apply?
"""

from __future__ import annotations

from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps.base import PreflightCheck, Step
from rollback_operator.steps.disable_maintenance import DisableMaintenance
from rollback_operator.steps.enable_maintenance import EnableMaintenance
from rollback_operator.steps.migrate_database_down import MigrateDatabaseDown
from rollback_operator.steps.monitor import Monitor
from rollback_operator.steps.pause_autoscaling import PauseAutoscaling
from rollback_operator.steps.preflight import Preflight
from rollback_operator.steps.purge_cdn import PurgeCDN
from rollback_operator.steps.report import Report
from rollback_operator.steps.restore_database import RestoreDatabase
from rollback_operator.steps.resume_autoscaling import ResumeAutoscaling
from rollback_operator.steps.revert_workloads import RevertWorkloads
from rollback_operator.steps.suspend_gitops import SuspendGitOps
from rollback_operator.steps.verify import Verify

_AFTER_PREFLIGHT: tuple[Step, ...] = (
    SuspendGitOps(),
    EnableMaintenance(),
    PauseAutoscaling(),
    RevertWorkloads(),
    PurgeCDN(),
    MigrateDatabaseDown(),
    RestoreDatabase(),
    Verify(),
    ResumeAutoscaling(),
    DisableMaintenance(),
    Monitor(),
    Report(),
)


def _preflight_checks(steps: tuple[Step, ...]) -> list[PreflightCheck]:
    """Each step's part of Preflight, once (the database steps share one)."""
    checks: list[PreflightCheck] = []
    for step in steps:
        if step.preflight is not None and all(step.preflight is not c for c in checks):
            checks.append(step.preflight)
    return checks


STEPS: dict[StepName, Step] = {
    step.name: step for step in (Preflight(_preflight_checks(_AFTER_PREFLIGHT)), *_AFTER_PREFLIGHT)
}


def skip_reason(step: StepName, spec: RollbackSpec, targets: Targets | None) -> str | None:
    """Why `step` does not apply to this request, or None: what the engine asks of steps."""
    return STEPS[step].skip_reason(spec, targets)
