"""MigrateDatabaseDown (runbook §2.3): "if a database migration caused it, run the Prisma
migration's `down` script".

Destructive, and able to run the team's own command, so it waits for a DBA's approval where
the admins' RollbackPolicy says so (by default: always) of exactly what would run: the
database, the migrations and their down.sql digests (or the image or command), the image
(steps/gates.py). Then one Job, run once (see jobs.py): each listed migration's down.sql,
newest first, and the deletion of its `_prisma_migrations` row, in one transaction, so the
database ends either as before the step or with every listed migration rolled back, never in
between. The script checks
first that every down.sql is there and that the migrations are the newest applied ones
(`database_scripts.migrate_down_script`); Preflight has run the same checks, read-only, before
the site was touched. A team that rolls back with its own migrator gives `command` instead:
its image then runs with DATABASE_URL and ROLLBACK_MIGRATIONS, under the same once-only rules.

Skipped when spec.database also asks for a restore: the pre-go-live snapshot already holds
the old schema and the old `_prisma_migrations` table, and the restore puts them back whole.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rollback_operator.database.jobs import (
    connection_parts,
    database_address,
    follow_job,
    job_started,
    migrations_parts,
    planned_job_name,
)
from rollback_operator.database.preflight import DATABASE_PREFLIGHT
from rollback_operator.database.scripts import migrate_down_script
from rollback_operator.database.spec import DatabaseSpec, MigrateDownSpec, configmap_key
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Outcome, StepContext
from rollback_operator.steps.gates import await_approval, required_gate

PURPOSE = "db-migrate-down"
NOT_CONFIGURED = "no spec.database.migrateDown"
REPLACED_BY_RESTORE = (
    "RestoreDatabase restores the pre-go-live snapshot, which already holds the schema and "
    "the _prisma_migrations table from before go-live"
)


def migrate_down_template(database: DatabaseSpec, migrate: MigrateDownSpec) -> jobs.JobTemplate:
    """The Job: the built-in psql script, or the team's own command, in `migrate.image`."""
    parts = connection_parts(database) + migrations_parts(migrate)
    command = migrate.command or ("/bin/sh", "-c", migrate_down_script(migrate))
    # What an SRE checks by hand when the Job's fate is unknown (it disappeared, say).
    check_by_hand = (
        "the schema and _prisma_migrations (whether the rollback of "
        f"{', '.join(migrate.migrations)} committed)"
    )
    return parts.template(
        PURPOSE, migrate.image, tuple(command), migrate.timeout_seconds, check_by_hand
    )


class MigrateDatabaseDown:
    name = StepName.MIGRATE_DATABASE_DOWN
    records_before_acting = False
    preflight = DATABASE_PREFLIGHT

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        database = DatabaseSpec.of(spec)
        if database is None or database.migrate_down is None:
            return NOT_CONFIGURED
        if not database.runs_migrate_down:
            return REPLACED_BY_RESTORE
        return None

    def plan(self, ctx: StepContext) -> str:
        _, migrate = _parts(ctx)
        how = (
            f"the command {' '.join(migrate.command)} in {migrate.image}"
            if migrate.command
            else f"their down.sql from {migrate.source}, in one transaction"
        )
        found = required_gate(ctx, self.name, requested=False)
        approval = f", after {found.who()} approves" if found else ""
        return (
            f"would roll back {len(migrate.migrations)} migration(s), newest first "
            f"({', '.join(migrate.migrations)}), with {how}{approval}, in Job "
            f"{planned_job_name(ctx, PURPOSE)}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        database, migrate = _parts(ctx)
        found = required_gate(ctx, self.name, requested=False)
        if found is not None and not job_started(ctx, PURPOSE):
            # Judged again each time, up to the Job's start: a down.sql changed after the
            # approval voids it.
            subject = migrate_down_subject(ctx, database, migrate)
            waiting = await_approval(ctx, found, subject, "the migrate-down")
            if waiting is not None:
                return waiting
        return follow_job(
            ctx,
            self.name,
            migrate_down_template(database, migrate),
            f"rolling back {', '.join(migrate.migrations)}",
            note=f", approved by {ctx.approval.by}" if ctx.approval else "",
        )


def migrate_down_subject(
    ctx: StepContext, database: DatabaseSpec, migrate: MigrateDownSpec
) -> dict[str, Any]:
    """What a DBA approves: the database, the migrations, newest first, and what rolls them
    back: each down.sql's sha256 (from the ConfigMap the Job mounts), or the image that holds
    them, or the team's own command; and the image that runs it."""
    subject: dict[str, Any] = {
        "database": database_address(ctx, database),
        "migrations": list(migrate.migrations),
    }
    if migrate.command:
        subject["command"] = " ".join(migrate.command)
    elif migrate.configmap is not None:
        configmap = ctx.kube.configmap(ctx.namespace, migrate.configmap) or {}
        data = configmap.get("data") or {}
        subject["down.sql sha256"] = {
            m: hashlib.sha256(str(data.get(configmap_key(m), "")).encode()).hexdigest()[:16]
            for m in migrate.migrations
        }
    else:
        subject["down.sql from"] = f"{migrate.source_image}:{migrate.source_path}"
    subject["image"] = migrate.image
    return subject


def _parts(ctx: StepContext) -> tuple[DatabaseSpec, MigrateDownSpec]:
    database = DatabaseSpec.of(ctx.spec)
    if database is None or database.migrate_down is None:
        raise ValueError("MigrateDatabaseDown runs only with spec.database.migrateDown")
    return database, database.migrate_down
