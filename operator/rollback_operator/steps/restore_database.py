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

This module also holds Preflight's database part (`preflight_problems`, `preflight_inspect`):
the references checked through the API, then a read-only Job that resolves the backup and asks
the database whether it answers and whether the migrations to roll back are applied.
"""

from __future__ import annotations

import json
from typing import Any

from rollback_operator import jobs
from rollback_operator.clock import stamp
from rollback_operator.database import (
    DEFAULT_IMAGE,
    DatabaseSpec,
    Inspection,
    JobParts,
    RestoreSpec,
    backup_parts,
    configmap_key,
    connection_parts,
    database_spec,
    inspect_script,
    migrations_parts,
    parse_inspection,
    restore_script,
)
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.steps.base import (
    Done,
    Fail,
    NeedsApproval,
    Outcome,
    StepContext,
    Wait,
    poll_interval,
)

PURPOSE = "db-restore"
INSPECT_PURPOSE = "db-inspect"
NOT_CONFIGURED = "no spec.database.restore"
# The group the installed admission policy lets approve RestoreDatabase
# (manifests/common/approvals.yaml, its `approvers` variable): named in the message asking for it.
DBA_GROUP = "dba"
INSPECT_DEADLINE_SECONDS = 1800
COMPONENT = {"app.kubernetes.io/component": "database"}


def restore_template(
    database: DatabaseSpec, restore: RestoreSpec, backup: dict[str, Any]
) -> jobs.JobTemplate:
    """The restore Job, for the file Preflight recorded and its sha256."""
    parts = connection_parts(database) + backup_parts(restore)
    script = restore_script(restore, str(backup["file"]), str(backup["sha256"]))
    return jobs.JobTemplate(
        purpose=PURPOSE,
        image=restore.image,
        command=("/bin/sh", "-c", script),
        env=parts.env,
        volumes=parts.volumes,
        volume_mounts=parts.volume_mounts,
        deadline_seconds=restore.timeout_seconds,
        labels=COMPONENT,
        check_by_hand=(
            f"the schema(s) {', '.join(restore.schemas)} (whether the restore of "
            f"{backup['file']} committed)"
        ),
    )


class RestoreDatabase:
    name = StepName.RESTORE_DATABASE

    def skip_reason(self, spec: RollbackSpec, targets: dict[str, list[str]] | None) -> str | None:
        database = database_spec(spec)
        return NOT_CONFIGURED if database is None or database.restore is None else None

    def plan(self, ctx: StepContext) -> str:
        _, restore = _parts(ctx)
        backup = ctx.section("backup") or {}
        approval = ", after a DBA approves" if restore.require_approval else ""
        return (
            f"would restore {_describe(backup)} into schema(s) {', '.join(restore.schemas)}, "
            f"in one transaction{approval}, with Job {planned_job_name(ctx, PURPOSE)}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        database, restore = _parts(ctx)
        backup = ctx.section("backup") or {}
        if not backup.get("file") or not backup.get("sha256"):
            return Fail(
                "status.backup names no file: Preflight did not resolve the backup, so there "
                "is nothing checked to restore. Nothing was restored; the maintenance page "
                "stays on. Create a new RollbackRequest"
            )
        if restore.require_approval and ctx.approval is None:
            return NeedsApproval(
                f"waiting for a DBA to approve the restore of {_describe(backup)} into "
                f"schema(s) {', '.join(restore.schemas)}: a member of group {DBA_GROUP} checks "
                f"the file, then runs `kubectl rollback approve {ctx.request} {self.name} -n "
                f"{ctx.namespace}`. The maintenance page stays on meanwhile"
            )
        result = follow_job(
            ctx,
            self.name,
            restore_template(database, restore, backup),
            f"restoring {backup['file']}",
        )
        if not isinstance(result, jobs.JobResult):
            return result
        by = f", approved by {ctx.approval.by}" if ctx.approval else ""
        return Done(f"{result.message} (Job {result.name}{by})")


# --- shared with MigrateDatabaseDown: a database step's one Job


def follow_job(
    ctx: StepContext, step: StepName, template: jobs.JobTemplate, doing: str
) -> Wait | Fail | jobs.JobResult:
    """Runs the step's Job once (`jobs.run_job_once`) and says where it stands: a Wait while it
    runs ("<doing>: Job <name> is running"), a Fail with `failure`'s message when it failed or
    was lost, else the succeeded Job's result, from which the step writes its own Done."""
    result = jobs.run_job_once(ctx, step, template)
    if result.state == jobs.JobState.RUNNING:
        return Wait(f"{doing}: Job {result.name} is running", retry_after=poll_interval(ctx))
    if result.state == jobs.JobState.FAILED:
        return Fail(failure(ctx, result))
    return result


def planned_job_name(ctx: StepContext, purpose: str) -> str:
    """The name of the step's Job, for a plan: the one `jobs.run_job_once` gives it."""
    uid = str((ctx.request_body().get("metadata") or {}).get("uid", ""))
    return jobs.job_name(ctx.request, uid, purpose)


def failure(ctx: StepContext, result: jobs.JobResult) -> str:
    """Why a database Job's step stopped, and where the DBA looks next."""
    log = ""
    if ctx.kube.job(ctx.namespace, result.name) is not None:
        log = (
            f" Job {result.name} is kept for its log (kubectl -n {ctx.namespace} logs "
            f"job/{result.name})."
        )
    return (
        f"{result.message.rstrip('.')}. The maintenance page stays on.{log} See "
        "docs/database.md for what to do next"
    )


def _parts(ctx: StepContext) -> tuple[DatabaseSpec, RestoreSpec]:
    database = database_spec(ctx.spec)
    if database is None or database.restore is None:
        raise ValueError("RestoreDatabase runs only with spec.database.restore")
    return database, database.restore


def _describe(backup: dict[str, Any]) -> str:
    return (
        f"{backup.get('file')} ({backup.get('sizeBytes')} bytes, sha256 {backup.get('sha256')}, "
        f"claim {backup.get('claimName')})"
    )


# --- Preflight's database part


def preflight_problems(ctx: StepContext) -> list[str]:
    """The references of spec.database, through the API: the connection Secret and its key
    (whose value is not read), the migrations' ConfigMap and its keys, the backups' claim."""
    database = database_spec(ctx.spec)
    if database is None:
        return []
    problems: list[str] = []
    ns = ctx.namespace
    ref = database.connection
    secret = ctx.kube.get(f"/api/v1/namespaces/{ns}/secrets/{ref.name}")
    if secret is None:
        problems.append(f"database connection Secret {ref.name!r} not found")
    elif ref.key not in (secret.get("data") or {}) and ref.key not in (
        secret.get("stringData") or {}
    ):
        problems.append(f"database connection Secret {ref.name!r} has no key {ref.key!r}")
    migrate = database.migrate_down
    if database.runs_migrate_down and migrate is not None and migrate.configmap is not None:
        configmap = ctx.kube.configmap(ns, migrate.configmap)
        if configmap is None:
            problems.append(f"down-migrations ConfigMap {migrate.configmap!r} not found")
        else:
            keys = set(configmap.get("data") or {}) | set(configmap.get("binaryData") or {})
            missing = [m for m in migrate.migrations if configmap_key(m) not in keys]
            if missing:
                problems.append(
                    f"down-migrations ConfigMap {migrate.configmap!r} has no "
                    + ", ".join(repr(configmap_key(m)) for m in missing)
                    + " (one key <migration>.down.sql per migration)"
                )
    if database.restore is not None:
        claim = database.restore.backup.claim_name
        if ctx.kube.pvc(ns, claim) is None:
            problems.append(f"backups PersistentVolumeClaim {claim!r} not found")
    return problems


def inspection_template(database: DatabaseSpec) -> jobs.JobTemplate | None:
    """Preflight's read-only Job, or None when there is nothing it could check (a migrate-down
    by the team's own command, whose image may have no psql)."""
    parts = connection_parts(database)
    image = None
    deadline = INSPECT_DEADLINE_SECONDS
    if database.restore is not None:
        parts = parts + backup_parts(database.restore)
        image = database.restore.image
        deadline = database.restore.timeout_seconds
    migrate = database.migrate_down
    if database.runs_migrate_down and migrate is not None and not migrate.command:
        parts = parts + _without_env(migrations_parts(migrate))
        image = migrate.image
        deadline = migrate.timeout_seconds
    if image is None:
        return None
    return jobs.JobTemplate(
        purpose=INSPECT_PURPOSE,
        image=image or DEFAULT_IMAGE,
        command=("/bin/sh", "-c", inspect_script(database)),
        env=parts.env,
        volumes=parts.volumes,
        volume_mounts=parts.volume_mounts,
        init_containers=parts.init_containers,
        deadline_seconds=deadline,
        labels=COMPONENT,
        check_by_hand="nothing (it only reads)",
    )


def _without_env(parts: JobParts) -> JobParts:
    return JobParts((), parts.volumes, parts.volume_mounts, parts.init_containers)


def preflight_inspect(ctx: StepContext) -> Wait | Fail | str | None:
    """Runs Preflight's inspection Job (once) and records the backup it chose in status.backup.

    None when spec.database asks for nothing to inspect; Wait while the Job runs; Fail with
    the Job's own words; else what Preflight adds to its message. The Job only reads (the
    database check runs in a read-only transaction), so it runs on a dry run too: a dry run
    is where a team wants to learn which backup a restore would take.
    """
    database = database_spec(ctx.spec)
    template = None if database is None else inspection_template(database)
    if database is None or template is None:
        return None
    result = jobs.run_job_once(ctx, StepName.PREFLIGHT, template)
    if result.state == jobs.JobState.RUNNING:
        return Wait(
            f"checking the database and the backup: Job {result.name} is running",
            retry_after=poll_interval(ctx),
        )
    if result.state == jobs.JobState.FAILED:
        return Fail(f"database check (Job {result.name}): {result.message}")
    try:
        found = parse_inspection(result.message)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return Fail(
            f"database check (Job {result.name}) ended without a readable result "
            f"({result.message[:200]!r}); see kubectl -n {ctx.namespace} logs job/{result.name}"
        )
    return _record(ctx, database, found)


def _record(ctx: StepContext, database: DatabaseSpec, found: Inspection) -> str:
    said = [f"PostgreSQL {found.server} answers" if found.server else "the database answers"]
    migrate = database.migrate_down
    if database.runs_migrate_down and migrate is not None and not migrate.command:
        said.append(
            f"{len(migrate.migrations)} migration(s) to roll back are applied and have their "
            "down.sql"
        )
    restore = database.restore
    if restore is not None and found.backup is not None:
        backup = restore.backup
        chosen = {
            "claimName": backup.claim_name,
            "directory": backup.directory,
            "file": found.backup.file,
            "sizeBytes": found.backup.size_bytes,
            "sha256": found.backup.sha256,
            "resolvedAt": stamp(ctx.now()),
        }
        previous = ctx.section("backup") or {}
        if previous.get("sha256") != chosen["sha256"] or previous.get("file") != chosen["file"]:
            ctx.put_section("backup", chosen)  # written with Preflight's outcome
        how = ""
        if backup.is_pattern:
            bound = f" dated on or before {backup.not_after}" if backup.not_after else ""
            how = f", the newest of {found.backup.considered}{bound}"
            if found.backup.later:
                how += f" ({found.backup.later} later left alone)"
        said.append(f"backup {_describe(ctx.section('backup'))} chosen{how}")
    return "; ".join(said)
