"""RestoreDatabase (runbook §2.3, §3): "if data is corrupt, restore the last backup taken
before go-live"; "the DBA owns data integrity and the restore".

The one step that cannot be undone, so:
- the file was chosen, measured and checked by Preflight, before anything changed, and is in
  status.backup (file, size, sha256) for the DBA to read before approving;
- with `requireApproval` (the default) the run waits in AwaitingApproval, maintenance on and
  nothing else running, until a DBA approves with the annotations (which the admission policy
  holds to the dba group and the approver's own name);
- one Job, run once (jobs.py): it checks the sha256 again, refuses a dump that could not run in
  one transaction, then drops and recreates the application's schemas and loads the dump in a
  single transaction, so a failure leaves the database exactly as it was;
- a Job that fails, or disappears, stops the run with the maintenance page on and a message
  for the DBA; it is never started a second time.
"""

from __future__ import annotations

from typing import Any

from rollback_operator.database.jobs import (
    backup_parts,
    connection_parts,
    describe_backup,
    follow_job,
    planned_job_name,
)
from rollback_operator.database.preflight import DATABASE_PREFLIGHT
from rollback_operator.database.scripts import restore_script
from rollback_operator.database.spec import DatabaseSpec, RestoreSpec
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Fail, NeedsApproval, Outcome, StepContext

PURPOSE = "db-restore"
NOT_CONFIGURED = "no spec.database.restore"
# The group the installed admission policy lets approve RestoreDatabase
# (manifests/common/approvals.yaml, its `approvers` variable): named in the message asking for it.
DBA_GROUP = "dba"


def restore_template(
    database: DatabaseSpec, restore: RestoreSpec, backup: dict[str, Any]
) -> jobs.JobTemplate:
    """The restore Job, for the file Preflight recorded and its sha256."""
    parts = connection_parts(database) + backup_parts(restore)
    script = restore_script(restore, str(backup["file"]), str(backup["sha256"]))
    return parts.template(
        PURPOSE,
        restore.image,
        ("/bin/sh", "-c", script),
        restore.timeout_seconds,
        f"the schema(s) {', '.join(restore.schemas)} (whether the restore of "
        f"{backup['file']} committed)",
    )


class RestoreDatabase:
    name = StepName.RESTORE_DATABASE
    preflight = DATABASE_PREFLIGHT

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        database = DatabaseSpec.of(spec)
        return NOT_CONFIGURED if database is None or database.restore is None else None

    def plan(self, ctx: StepContext) -> str:
        _, restore = _parts(ctx)
        backup = ctx.ledger.section("backup") or {}
        approval = ", after a DBA approves" if restore.require_approval else ""
        return (
            f"would restore {describe_backup(backup)} into schema(s) {', '.join(restore.schemas)}, "
            f"in one transaction{approval}, with Job {planned_job_name(ctx, PURPOSE)}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        database, restore = _parts(ctx)
        backup = ctx.ledger.section("backup") or {}
        if not backup.get("file") or not backup.get("sha256"):
            return Fail(
                "status.backup names no file: Preflight did not resolve the backup, so there "
                "is nothing checked to restore. Nothing was restored; the maintenance page "
                "stays on. Create a new RollbackRequest"
            )
        if restore.require_approval and ctx.approval is None:
            return NeedsApproval(
                f"waiting for a DBA to approve the restore of {describe_backup(backup)} into "
                f"schema(s) {', '.join(restore.schemas)}: a member of group {DBA_GROUP} checks "
                f"the file, then runs `kubectl rollback approve {ctx.request} {self.name} -n "
                f"{ctx.namespace}`. The maintenance page stays on meanwhile"
            )
        return follow_job(
            ctx,
            self.name,
            restore_template(database, restore, backup),
            f"restoring {backup['file']}",
            note=f", approved by {ctx.approval.by}" if ctx.approval else "",
        )


def _parts(ctx: StepContext) -> tuple[DatabaseSpec, RestoreSpec]:
    database = DatabaseSpec.of(ctx.spec)
    if database is None or database.restore is None:
        raise ValueError("RestoreDatabase runs only with spec.database.restore")
    return database, database.restore
