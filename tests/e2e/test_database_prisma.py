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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rollback_operator.database import scripts as database_scripts
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.database.sql_guard import check_down_sql
from standins.lawyershub_db import MIGRATIONS_TABLE
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

CHANGES = ("table", "column", "index", "enum-value")


def schema(*changes: str) -> str:
    """The application's Prisma schema, before go-live (no change) or with some of its
    changes: a table (CaseDocument), a column (User.phone), an index (Case.title), an enum
    value (Role.LAWYER)."""
    lawyer = "  LAWYER\n" if "enum-value" in changes else ""
    phone = "  phone String?\n" if "column" in changes else ""
    index = "\n  @@index([title])\n" if "index" in changes else ""
    documents, document_model = "", ""
    if "table" in changes:
        documents = "  documents CaseDocument[]\n"
        document_model = """
model CaseDocument {
  id     Int    @id @default(autoincrement())
  caseId Int
  case   Case   @relation(fields: [caseId], references: [id], onDelete: Cascade)
  path   String
}
"""
    return (
        DATASOURCE
        + f"""
enum Role {{
  CLIENT
{lawyer}  ADMIN
}}

model User {{
  id    Int    @id @default(autoincrement())
  email String @unique
  role  Role   @default(CLIENT)
{phone}  cases Case[]
}}

model Case {{
  id      Int    @id @default(autoincrement())
  title   String
  ownerId Int
  owner   User   @relation(fields: [ownerId], references: [id])
{documents}{index}}}
"""
        + document_model
    )


# What each change's down.sql must hold, as Prisma writes it.
UNDONE = {
    "table": 'DROP TABLE "CaseDocument";',
    "column": 'ALTER TABLE "User" DROP COLUMN "phone";',
    "index": 'DROP INDEX "Case_title_idx";',
    "enum-value": "-- AlterEnum\nBEGIN;\nCREATE TYPE \"Role_new\" AS ENUM ('CLIENT', 'ADMIN');",
}

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


@pytest.fixture(scope="module", name="initial")
def initial_fixture(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The SQL of the first migration, the schema before go-live (`--from-empty`), written by
    the CLI once for every test here."""
    db = postgres_server.create_database()
    try:
        yield prisma_cli.migrate_diff(
            db.url, source="", target=schema(), workdir=tmp_path_factory.mktemp("initial")
        )
    finally:
        postgres_server.drop_database(db)


def database_count(server: PostgresServer) -> str:
    return server.psql("postgres", "SELECT count(*) FROM pg_database").split()[2]


# The go-live with all four changes, and the enum alone (its down.sql is Prisma's block and
# nothing else); the other changes alone hold no transaction control and cost CLI time.
@pytest.mark.parametrize("changes", [CHANGES, ("enum-value",)], ids=["all-four", "enum-value"])
def test_prisma_down_sql_runs_and_leaves_the_schema_of_the_previous_migration(
    database: Database,
    postgres_server: PostgresServer,
    tmp_path: Path,
    initial: str,
    changes: tuple[str, ...],
) -> None:
    url = database.url
    databases = database_count(postgres_server)
    before, after = schema(), schema(*changes)
    with ThreadPoolExecutor(2) as pool:  # the CLI takes seconds to start: both at once
        up_run = pool.submit(
            prisma_cli.migrate_diff, url, source=before, target=after, workdir=tmp_path / "up"
        )
        down_run = pool.submit(
            prisma_cli.migrate_diff, url, source=after, target=before, workdir=tmp_path / "down"
        )
        up, down = up_run.result(), down_run.result()
    assert database_count(postgres_server) == databases, "migrate diff made a shadow database"
    for change in CHANGES:
        assert (UNDONE[change] in down) == (change in changes), down
    if "enum-value" in changes:  # Prisma's own transaction block around the rebuild
        assert "\nCOMMIT;\n" in down
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
