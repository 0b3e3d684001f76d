"""RestoreDatabase (runbook §2.3, §3): "if data is corrupt, restore the last backup taken
before go-live"; "the DBA owns data integrity and the restore".

The one step that cannot be undone, so:
- the file was chosen, measured and checked by Preflight, before anything changed, and is in
  status.backup (file, size, sha256) for the DBA to read before approving;
- where the admins' RollbackPolicy says so (by default: always), or the request asks for it,
  the run waits in AwaitingApproval, maintenance on and nothing else running, until a DBA
  approves exactly what would be restored: the database, the file and its sha256, the image
  (steps/gates.py); the requester cannot approve, and `requireApproval: false` removes no gate
  an admin set;
- one Job per approval (jobs.py): it reads the file once into its own copy and checks that
  copy's sha256; a file changed since the approval voids it, restores nothing, and the step
  waits for an approval of the new file. Then it refuses a dump that could not run in one
  transaction, drops and recreates the application's schemas and loads the dump in a single
  transaction, so a failure leaves the database exactly as it was;
- a Job that fails, or disappears, stops the run with the maintenance page on and a message
  for the DBA; it is never started a second time.
"""

from __future__ import annotations

import re
from typing import Any

from rollback_operator.database.jobs import (
    backup_parts,
    connection_parts,
    database_address,
    describe_backup,
    follow_job,
    job_started,
    planned_job_name,
)
from rollback_operator.database.preflight import DATABASE_PREFLIGHT
from rollback_operator.database.scripts import restore_script
from rollback_operator.database.spec import DatabaseSpec, RestoreSpec
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Fail, Outcome, StepContext
from rollback_operator.steps.gates import await_approval, required_gate

PURPOSE = "db-restore"
NOT_CONFIGURED = "no spec.database.restore"
# What the restore script says when the file it read is not the one approved (scripts.py).
CHANGED = re.compile(r"has changed since Preflight: its sha256 is now ([0-9a-f]{64})")


def restore_template(
    database: DatabaseSpec, restore: RestoreSpec, backup: dict[str, Any], purpose: str = PURPOSE
) -> jobs.JobTemplate:
    """The restore Job, for the file Preflight recorded and its sha256."""
    parts = connection_parts(database) + backup_parts(restore)
    script = restore_script(restore, str(backup["file"]), str(backup["sha256"]))
    return parts.template(
        purpose,
        restore.image,
        ("/bin/sh", "-c", script),
        restore.timeout_seconds,
        f"the schema(s) {', '.join(restore.schemas)} (whether the restore of "
        f"{backup['file']} committed)",
    )


class RestoreDatabase:
    name = StepName.RESTORE_DATABASE
    records_before_acting = False
    preflight = DATABASE_PREFLIGHT

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        database = DatabaseSpec.of(spec)
        return NOT_CONFIGURED if database is None or database.restore is None else None

    def plan(self, ctx: StepContext) -> str:
        _, restore = _parts(ctx)
        backup = ctx.ledger.section("backup") or {}
        found = required_gate(ctx, self.name, restore.require_approval)
        approval = f", after {found.who()} approves" if found else ""
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
        found = required_gate(ctx, self.name, restore.require_approval)
        purpose = PURPOSE
        if found is not None:
            # One Job per approved subject: an approval voided by a changed file is followed
            # by a new approval, and a new Job, never by the failed one again.
            purpose = f"{PURPOSE}-{ctx.approval.digest[:8]}" if ctx.approval else PURPOSE
            if not job_started(ctx, purpose):
                subject = restore_subject(ctx, database, restore, backup)
                waiting = await_approval(ctx, found, subject, "the restore")
                if waiting is not None:
                    return waiting
        outcome = follow_job(
            ctx,
            self.name,
            restore_template(database, restore, backup, purpose),
            f"restoring {backup['file']}",
            note=f", approved by {ctx.approval.by}" if ctx.approval else "",
        )
        changed = CHANGED.search(outcome.message) if isinstance(outcome, Fail) else None
        if found is not None and changed is not None:
            # The Job read the file once and found other bytes than those approved: it
            # restored nothing. The new file is what a DBA must now approve, or not.
            ctx.ledger.put_section("backup", {**backup, "sha256": changed.group(1)})
            subject = restore_subject(ctx, database, restore, ctx.ledger.section("backup"))
            return await_approval(
                ctx,
                found,
                subject,
                "the restore",
                voided=(
                    f"the approval by {ctx.approval.by if ctx.approval else '?'} is void: backup "
                    f"file {backup['file']} changed before the restore read it (sha256 now "
                    f"{changed.group(1)}, not {backup['sha256']}); nothing was restored"
                ),
            ) or Fail("internal error: a changed backup asked for no approval")
        return outcome


def restore_subject(
    ctx: StepContext, database: DatabaseSpec, restore: RestoreSpec, backup: dict[str, Any]
) -> dict[str, Any]:
    """What a DBA approves: where the restore writes (never the password), the file and its
    sha256, and the image that runs it."""
    return {
        "database": database_address(ctx, database),
        "schemas": list(restore.schemas),
        "file": f"{backup.get('directory', restore.backup.directory)}/{backup['file']}",
        "sha256": backup["sha256"],
        "image": restore.image,
    }


def _parts(ctx: StepContext) -> tuple[DatabaseSpec, RestoreSpec]:
    database = DatabaseSpec.of(ctx.spec)
    if database is None or database.restore is None:
        raise ValueError("RestoreDatabase runs only with spec.database.restore")
    return database, database.restore
