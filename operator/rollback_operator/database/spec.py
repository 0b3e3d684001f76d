"""`spec.database`, typed: what a request asks of the database (runbook §2.3, §3).

Two things can be asked of the database, each by a Job that runs once:
- migrate down: each listed Prisma migration's `down.sql` (plain SQL, generated beforehand
  with `prisma migrate diff`, so no Prisma engine is needed at rollback time) is applied and
  its `_prisma_migrations` row deleted, all in one transaction;
- restore: the last backup taken before go-live replaces the application's schemas, in one
  transaction, after its sha256 is checked against what Preflight recorded.

Preflight runs a third, read-only Job first ("inspect"): it resolves the backup file, measures
it and refuses a dump that cannot run in one transaction, checks that the database answers and
that the migrations to roll back are applied and have their `down.sql`. So a request that
cannot finish fails before the site is touched.

This module is only what the request says: every step reads it (if only to know whether it
runs), so it holds no script and no Job. The scripts are in scripts.py and inspection.py, what
the Jobs share in jobs.py, Preflight's part in preflight.py, and each step in its own module
(steps/migrate_database_down.py, steps/restore_database.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollback_operator.model import SecretKeyRef, SpecSection, parse_duration

DATE_PLACEHOLDER = "YYYYMMDD"
DEFAULT_IMAGE = "postgres:16"
DEFAULT_TIMEOUT = "30m"
MIGRATIONS_DIR = "/migrations"  # where the Jobs see the down.sql files
# The ConfigMap source has one key per migration, `<migration>.down.sql`; an image holds
# Prisma's own layout, `<path>/<migration>/down.sql` beside `migration.sql`.
CONFIGMAP_KEY_SUFFIX = ".down.sql"
PUBLIC = "public"

_SCHEMA = re.compile(r"[a-z_][a-z0-9_$]*")
_MIGRATION = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class MigrateDownSpec:
    migrations: tuple[str, ...]  # newest first
    configmap: str | None  # source: a ConfigMap with `<migration>.down.sql` keys
    source_image: str | None  # or an image holding prisma/migrations at `source_path`
    source_path: str | None
    image: str  # the image that runs psql (or `command`)
    command: tuple[str, ...] | None  # the team's own migrator, instead of the built-in script
    timeout_seconds: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> MigrateDownSpec:
        migrations = tuple(raw["migrations"])
        for migration in migrations:
            if not _MIGRATION.fullmatch(migration):  # the CRD refuses these; never trust a path
                raise ValueError(f"not a migration directory name: {migration!r}")
        source = raw.get("source") or {}
        command = raw.get("command")
        return cls(
            migrations=migrations,
            configmap=source.get("configMap"),
            source_image=source.get("image"),
            source_path=source.get("path"),
            image=raw.get("image") or DEFAULT_IMAGE,
            command=None if command is None else tuple(command),
            timeout_seconds=_seconds(raw.get("timeout") or DEFAULT_TIMEOUT),
        )

    def down_sql_path(self, migration: str, root: str = MIGRATIONS_DIR) -> str:
        """Where the Job finds a migration's down.sql, the source being mounted at `root`."""
        if self.configmap is not None:
            return f"{root}/{configmap_key(migration)}"
        return f"{root}/{migration}/down.sql"

    @property
    def source(self) -> str:
        """The source, as a person would name it in a message."""
        if self.configmap is not None:
            return f"ConfigMap {self.configmap}"
        if self.source_image is not None:
            return f"{self.source_path} in image {self.source_image}"
        return "the migrator's own image"


@dataclass(frozen=True)
class BackupSpec:
    claim_name: str
    directory: str
    file: str  # an exact name, or a pattern with YYYYMMDD
    not_after: str | None  # YYYY-MM-DD, with a pattern

    @property
    def is_pattern(self) -> bool:
        return DATE_PLACEHOLDER in self.file


@dataclass(frozen=True)
class RestoreSpec:
    backup: BackupSpec
    image: str
    require_approval: bool
    schemas: tuple[str, ...]
    timeout_seconds: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> RestoreSpec:
        backup = raw["backup"]
        schemas = tuple(raw.get("schemas") or (PUBLIC,))
        for schema in schemas:
            if not _SCHEMA.fullmatch(schema):
                raise ValueError(f"not a plain schema name: {schema!r}")
        return cls(
            backup=BackupSpec(
                claim_name=backup["claimName"],
                directory=(backup.get("directory") or "/backups").rstrip("/") or "/",
                file=backup["file"],
                not_after=backup.get("notAfter"),
            ),
            image=raw.get("image") or DEFAULT_IMAGE,
            require_approval=bool(raw.get("requireApproval", True)),
            schemas=schemas,
            timeout_seconds=_seconds(raw.get("timeout") or DEFAULT_TIMEOUT),
        )


@dataclass(frozen=True)
class DatabaseSpec(SpecSection):
    SPEC_KEY = "database"  # absent: no database step runs

    connection: SecretKeyRef
    migrate_down: MigrateDownSpec | None
    restore: RestoreSpec | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> DatabaseSpec:
        """`spec.database` as typed values. The API server validated it (CRD schema and CEL)
        and applied the defaults; the defaults are repeated here for objects built by hand."""
        migrate = raw.get("migrateDown")
        restore = raw.get("restore")
        return cls(
            connection=SecretKeyRef.parse(raw["connection"]["secretRef"]),
            migrate_down=None if migrate is None else MigrateDownSpec.parse(migrate),
            restore=None if restore is None else RestoreSpec.parse(restore),
        )

    @property
    def runs_migrate_down(self) -> bool:
        """Whether MigrateDatabaseDown runs: not when a restore is asked for too, because the
        pre-go-live snapshot already holds the old schema and the old `_prisma_migrations`
        table, which the restore puts back whole (see docs/database.md)."""
        return self.migrate_down is not None and self.restore is None


def _seconds(duration: str) -> int:
    """A Job deadline in whole seconds (activeDeadlineSeconds), at least one."""
    return max(1, round(parse_duration(duration)))


def configmap_key(migration: str) -> str:
    """The ConfigMap key holding a migration's down.sql: `<migration>.down.sql`."""
    return f"{migration}{CONFIGMAP_KEY_SUFFIX}"
