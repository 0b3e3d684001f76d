"""MigrateDatabaseDown (runbook §2.3): "if a database migration caused it, run the Prisma
migration's `down` script".

One Job, run once (see jobs.py): each listed migration's down.sql, newest first, and the
deletion of its `_prisma_migrations` row, in one transaction, so the database ends either as
before the step or with every listed migration rolled back, never in between. The script checks
first that every down.sql is there and that the migrations are the newest applied ones
(`database_scripts.migrate_down_script`); Preflight has run the same checks, read-only, before
the site was touched. A team that rolls back with its own migrator gives `command` instead:
its image then runs with DATABASE_URL and ROLLBACK_MIGRATIONS, under the same once-only rules.

Skipped when spec.database also asks for a restore: the pre-go-live snapshot already holds
the old schema and the old `_prisma_migrations` table, and the restore puts them back whole.
"""

from __future__ import annotations

from rollback_operator.database.jobs import (
    connection_parts,
    follow_job,
    migrations_parts,
    planned_job_name,
)
from rollback_operator.database.preflight import DATABASE_PREFLIGHT
from rollback_operator.database.scripts import migrate_down_script
from rollback_operator.database.spec import DatabaseSpec, MigrateDownSpec
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Outcome, StepContext

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
    return parts.template(
        PURPOSE,
        migrate.image,
        tuple(command),
        migrate.timeout_seconds,
        "the schema and _prisma_migrations (whether the rollback of "
        f"{', '.join(migrate.migrations)} committed)",
    )


class MigrateDatabaseDown:
    name = StepName.MIGRATE_DATABASE_DOWN
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
        return (
            f"would roll back {len(migrate.migrations)} migration(s), newest first "
            f"({', '.join(migrate.migrations)}), with {how}, in Job "
            f"{planned_job_name(ctx, PURPOSE)}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        database, migrate = _parts(ctx)
        return follow_job(
            ctx,
            self.name,
            migrate_down_template(database, migrate),
            f"rolling back {', '.join(migrate.migrations)}",
        )


def _parts(ctx: StepContext) -> tuple[DatabaseSpec, MigrateDownSpec]:
    database = DatabaseSpec.of(ctx.spec)
    if database is None or database.migrate_down is None:
        raise ValueError("MigrateDatabaseDown runs only with spec.database.migrateDown")
    return database, database.migrate_down
