"""Preflight's database part (safety rule 1): a request whose database step could not finish
fails here, before the site is touched.

Two stages, as Preflight calls them: `preflight_problems`, the references of spec.database
checked through the API and reported with the rest of Preflight's problems; then
`preflight_inspect`, a read-only Job that resolves and measures the backup (recorded in
status.backup, which RestoreDatabase restores and the DBA reads before approving) and asks the
database whether it answers and whether the migrations to roll back are applied. Its own
module because it belongs to Preflight, not to either database step.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from rollback_operator import watches
from rollback_operator.clock import stamp
from rollback_operator.database.inspection import Inspection, inspect_script, parse_inspection
from rollback_operator.database.jobs import (
    JobParts,
    backup_parts,
    connection_parts,
    describe_backup,
    migrations_parts,
)
from rollback_operator.database.spec import (
    DEFAULT_IMAGE,
    DatabaseSpec,
    configmap_key,
)
from rollback_operator.database.sql_guard import check_down_sql
from rollback_operator.model import StepName
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Fail, StepContext, Wait

INSPECT_PURPOSE = "db-inspect"
INSPECT_DEADLINE_SECONDS = 1800


def preflight_problems(ctx: StepContext) -> list[str]:
    """The references of spec.database, through the API: the connection Secret and its key
    (whose value is not read), the migrations' ConfigMap and its keys, the backups' claim."""
    database = DatabaseSpec.of(ctx.spec)
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
            problems += down_sql_problems(configmap, migrate.migrations)
    if database.restore is not None:
        claim = database.restore.backup.claim_name
        if ctx.kube.pvc(ns, claim) is None:
            problems.append(f"backups PersistentVolumeClaim {claim!r} not found")
    return problems


def down_sql_problems(configmap: dict[str, Any], migrations: tuple[str, ...]) -> list[str]:
    """Each listed down.sql in the ConfigMap, read as psql reads it and parsed by PostgreSQL's
    parser (sql_guard.py): whatever could end or split the one transaction is refused here,
    before the site is touched. The Job checks the same again on what it mounts."""
    problems = []
    for migration in migrations:
        key = configmap_key(migration)
        text = (configmap.get("data") or {}).get(key)
        if text is None and key in (configmap.get("binaryData") or {}):
            raw = base64.b64decode(configmap["binaryData"][key])
            text = raw.decode("utf-8", errors="replace")
        if text is None:
            continue
        refusal = check_down_sql(text)
        if refusal is not None:
            problems.append(refusal.message(f"the down.sql of {migration} ({key})"))
    return problems


def inspection_template(database: DatabaseSpec, *, connect: bool = True) -> jobs.JobTemplate | None:
    """Preflight's read-only Job, or None when there is nothing it could check (a migrate-down
    by the team's own command, whose image may have no psql). Without `connect` (a dry run)
    the Job gets no Secret at all: it checks the files only."""
    parts = connection_parts(database)
    if not connect:
        parts = JobParts(tuple(e for e in parts.env if "valueFrom" not in e))
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
    return parts.template(
        INSPECT_PURPOSE,
        image or DEFAULT_IMAGE,
        ("/bin/sh", "-c", inspect_script(database, connect=connect)),
        deadline,
        "nothing (it only reads)",
    )


def _without_env(parts: JobParts) -> JobParts:
    return JobParts((), parts.volumes, parts.volume_mounts, parts.init_containers)


def preflight_inspect(ctx: StepContext) -> Wait | Fail | str | None:
    """Runs Preflight's inspection Job (once) and records the backup it chose in status.backup.

    None when spec.database asks for nothing to inspect; Wait while the Job runs; Fail with
    the Job's own words; else what Preflight adds to its message. The Job only reads (the
    database check runs in a read-only transaction), so it runs on a dry run too: a dry run
    is where a team wants to learn which backup a restore would take. But a dry run's Job
    gets no Secret (safety rule 9: a plan starts no Job that sees a credential), so it checks
    the backup and the down.sql files, not the database, and the ledger says so.
    """
    database = DatabaseSpec.of(ctx.spec)
    connect = not ctx.spec.dry_run
    template = None if database is None else inspection_template(database, connect=connect)
    if database is None or template is None:
        return None
    result = jobs.run_job_once(ctx, StepName.PREFLIGHT, template)
    if result.state == jobs.JobState.RUNNING:
        return Wait(
            f"checking the database and the backup: Job {result.name} is running",
            retry_after=watches.CALL_SECONDS,  # or sooner, when its watch sees it change
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
    dry = ctx.spec.dry_run
    if dry:
        said = [
            "the database was not contacted (a dry run's Job gets no Secret): whether it "
            "answers, whether the migrations are applied and whether objects in other schemas "
            "depend on the restored ones are checked when the request runs"
        ]
    else:
        said = [f"PostgreSQL {found.server} answers" if found.server else "the database answers"]
    migrate = database.migrate_down
    if database.runs_migrate_down and migrate is not None and not migrate.command:
        said.append(
            f"{len(migrate.migrations)} migration(s) to roll back have their down.sql"
            if dry
            else f"{len(migrate.migrations)} migration(s) to roll back are applied and have "
            "their down.sql"
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
        previous = ctx.ledger.section("backup") or {}
        if previous.get("sha256") != chosen["sha256"] or previous.get("file") != chosen["file"]:
            ctx.ledger.put_section("backup", chosen)  # written with Preflight's outcome
        how = ""
        if backup.is_pattern:
            bound = f" dated on or before {backup.not_after}" if backup.not_after else ""
            how = f", the newest of {found.backup.considered}{bound}"
            if found.backup.later:
                how += f" ({found.backup.later} later left alone)"
        said.append(f"backup {describe_backup(ctx.ledger.section('backup'))} chosen{how}")
    return "; ".join(said)


class DatabasePreflight:
    """Preflight's database part, shared by MigrateDatabaseDown and RestoreDatabase."""

    def problems(self, ctx: StepContext) -> list[str]:
        return preflight_problems(ctx)

    def inspect(self, ctx: StepContext) -> Wait | Fail | str | None:
        found = preflight_inspect(ctx)
        return f"database: {found}" if isinstance(found, str) else found


DATABASE_PREFLIGHT = DatabasePreflight()
