"""down.sql files written by the real Prisma CLI (`prisma migrate diff`) run through the
product's migrate-down script against a real PostgreSQL, and leave the database exactly as
Prisma's previous migration left it.

The go-live adds a table, a column, an index and an enum value; its down.sql therefore holds
Prisma's enum rebuild in its own `BEGIN; ... COMMIT;` block, which the guard folds into the
run's one transaction (and refuses in any other shape: tests/unit/test_sql_guard.py,
tests/e2e/test_database_scripts.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from rollback_operator.database import scripts as database_scripts
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.database.sql_guard import check_down_sql
from standins.postgres import Database, PostgresServer, client_tool
from tests.e2e import prisma_cli
from tests.e2e.postgres import database_fixture, postgres_server_fixture  # noqa: F401 (fixtures)
from tests.e2e.support import run_job_script

pytestmark = pytest.mark.e2e

DATASOURCE = """datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}
"""

BEFORE = (
    DATASOURCE
    + """
enum Role {
  CLIENT
  ADMIN
}

model User {
  id    Int    @id @default(autoincrement())
  email String @unique
  role  Role   @default(CLIENT)
  cases Case[]
}

model Case {
  id      Int    @id @default(autoincrement())
  title   String
  ownerId Int
  owner   User   @relation(fields: [ownerId], references: [id])
}
"""
)

# Go-live: a table (CaseDocument), a column (User.phone), an index (Case.title) and an enum
# value (Role.LAWYER).
AFTER = (
    DATASOURCE
    + """
enum Role {
  CLIENT
  LAWYER
  ADMIN
}

model User {
  id    Int     @id @default(autoincrement())
  email String  @unique
  role  Role    @default(CLIENT)
  phone String?
  cases Case[]
}

model Case {
  id        Int            @id @default(autoincrement())
  title     String
  ownerId   Int
  owner     User           @relation(fields: [ownerId], references: [id])
  documents CaseDocument[]

  @@index([title])
}

model CaseDocument {
  id     Int    @id @default(autoincrement())
  caseId Int
  case   Case   @relation(fields: [caseId], references: [id], onDelete: Cascade)
  path   String
}
"""
)

MIGRATIONS_TABLE = """CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
"""
INIT = "20260101000000_init"
GO_LIVE = "20260110093000_golive"


def applied(db: Database, name: str, sql: str) -> None:
    """A migration applied as `prisma migrate deploy` would: its SQL and its row."""
    db.psql(
        sql + "\nINSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, "
        f"applied_steps_count) VALUES ('{name[:14]}', 'x', now(), '{name}', 1);"
    )


def schema_dump(db: Database) -> str:
    """The schema as pg_dump writes it, without owners (each test database has its own) and
    without the per-run \\restrict key."""
    out = subprocess.run(
        [client_tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", db.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)


def test_prisma_down_sql_runs_and_leaves_the_schema_of_the_previous_migration(
    database: Database, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = database.url
    initial = prisma_cli.migrate_diff(url, source="", target=BEFORE, workdir=tmp_path)
    up = prisma_cli.migrate_diff(url, source=BEFORE, target=AFTER, workdir=tmp_path)
    down = prisma_cli.migrate_diff(url, source=AFTER, target=BEFORE, workdir=tmp_path)
    # What Prisma writes for the enum: its own transaction block around the rebuild.
    assert '-- AlterEnum\nBEGIN;\nCREATE TYPE "Role_new" AS ENUM' in down
    assert "\nCOMMIT;\n" in down
    for change in (
        'DROP TABLE "CaseDocument"',
        'DROP COLUMN "phone"',
        'DROP INDEX "Case_title_idx"',
    ):
        assert change in down
    assert check_down_sql(down) is None, "the operator's guard refuses Prisma's own down.sql"

    # The database as Prisma's previous migration left it, made on its own.
    reference = postgres_server.create_database()
    try:
        reference.psql(MIGRATIONS_TABLE)
        applied(reference, INIT, initial)
        expected = schema_dump(reference)
    finally:
        postgres_server.drop_database(reference)

    database.psql(MIGRATIONS_TABLE)
    applied(database, INIT, initial)
    database.psql("""INSERT INTO "User" (email, role) VALUES ('ayu@example.com', 'ADMIN');""")
    applied(database, GO_LIVE, up)
    assert schema_dump(database) != expected

    root = tmp_path / "migrations"
    root.mkdir()
    (root / f"{GO_LIVE}.down.sql").write_text(down)
    spec = DatabaseSpec.parse(
        {
            "connection": {"secretRef": {"name": "db", "key": "url"}},
            "migrateDown": {"migrations": [GO_LIVE], "source": {"configMap": "down"}},
        }
    )
    assert spec.migrate_down is not None
    work = tmp_path / "tmp"
    work.mkdir()
    result = run_job_script(
        database_scripts.migrate_down_script(spec.migrate_down, str(root)),
        tmp_path,
        work,
        {"DATABASE_URL": url},
        timeout=120,
    )

    assert result.returncode == 0, result.message + result.stderr
    assert "there is already a transaction in progress" not in result.stderr
    assert schema_dump(database) == expected
    assert database.rows("SELECT migration_name FROM _prisma_migrations") == [(INIT,)]
    assert database.rows('SELECT email, role FROM "User"') == [("ayu@example.com", "ADMIN")]
