"""The runbook's steps, one module each, in the runbook's order."""

from __future__ import annotations

from rollback_operator.model import StepName
from rollback_operator.steps.base import Step
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
from rollback_operator.steps.verify import Verify

STEPS: dict[StepName, Step] = {
    step.name: step
    for step in (
        Preflight(),
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
}
