"""The Lawyers Hub database of the e2e tests and the demo: its schema before go-live (two Prisma
migrations applied), the go-live's migrations with their down.sql, what a bad release does to
the data, and what "exactly as it was" means when comparing.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

from standins.postgres import Database, client_tool

# Prisma's own record of the migrations applied, as `prisma migrate deploy` creates it.
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

# The application before go-live, as Prisma would have made it (two migrations applied).
PRE_GOLIVE_SQL = (
    "\n"
    + MIGRATIONS_TABLE
    + """CREATE TYPE "CaseStatus" AS ENUM ('OPEN', 'CLOSED');
CREATE TABLE "User" (
    "id" SERIAL PRIMARY KEY,
    "email" TEXT NOT NULL UNIQUE,
    "name" TEXT
);
CREATE TABLE "Case" (
    "id" SERIAL PRIMARY KEY,
    "title" TEXT NOT NULL,
    "status" "CaseStatus" NOT NULL DEFAULT 'OPEN',
    "ownerId" INTEGER NOT NULL REFERENCES "User"("id"),
    "notes" TEXT
);
CREATE INDEX "Case_ownerId_idx" ON "Case"("ownerId");
INSERT INTO "User" ("email", "name") VALUES
    ('ayu@lawyershub.example', 'Ayu'), ('budi@lawyershub.example', 'Budi'),
    ('citra@lawyershub.example', NULL);
INSERT INTO "Case" ("title", "status", "ownerId", "notes") VALUES
    ('Sengketa tanah', 'OPEN', 1, E'line one\\nline two'),
    ('Kontrak kerja', 'CLOSED', 2, 'tab\\there; quote '' and backslash \\\\'),
    ('Hak cipta', 'OPEN', 1, NULL);
INSERT INTO "_prisma_migrations" VALUES
    ('0b1c', 'c1', '2025-11-02 10:00:01+00', '20251102100000_init', NULL, NULL,
     '2025-11-02 10:00:00+00', 1),
    ('0b1d', 'c2', '2025-12-01 09:00:01+00', '20251201090000_add_case_status', NULL, NULL,
     '2025-12-01 09:00:00+00', 1);
"""
)

# The two migrations of go-live, and the down.sql of each (as `prisma migrate diff` writes).
MIGRATIONS = {
    "20260110093000_add_case_documents": (
        """
CREATE TABLE "CaseDocument" (
    "id" SERIAL PRIMARY KEY,
    "caseId" INTEGER NOT NULL REFERENCES "Case"("id") ON DELETE CASCADE,
    "path" TEXT NOT NULL
);
CREATE INDEX "CaseDocument_caseId_idx" ON "CaseDocument"("caseId");
INSERT INTO "CaseDocument" ("caseId", "path") VALUES (1, '/docs/1.pdf');
""",
        """-- DropForeignKey
ALTER TABLE "CaseDocument" DROP CONSTRAINT "CaseDocument_caseId_fkey";

-- DropTable
DROP TABLE "CaseDocument";
""",
    ),
    "20260110094500_user_phone_required": (
        """
ALTER TABLE "User" ADD COLUMN "phone" TEXT NOT NULL DEFAULT '';
ALTER TABLE "Case" ALTER COLUMN "notes" SET DEFAULT '';
""",
        """-- AlterTable
ALTER TABLE "Case" ALTER COLUMN "notes" DROP DEFAULT;

-- AlterTable
ALTER TABLE "User" DROP COLUMN "phone";
""",
    ),
}
NEWEST_FIRST = sorted(MIGRATIONS, reverse=True)
APP_TABLES = ('"User"', '"Case"', "_prisma_migrations")


def schema_of(db: Database) -> str:
    """The whole schema as pg_dump writes it, without the per-run \\restrict key."""
    out = subprocess.run(
        [client_tool("pg_dump"), "--schema-only", "--no-password", db.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)


def contents(db: Database) -> dict[str, Any]:
    """Every table's rows and the schema: what "exactly as it was" means here."""
    tables = {t: db.table(t) for t in APP_TABLES}
    return {"tables": tables, "schema": schema_of(db)}


def go_live(db: Database, *, names: list[str] | None = None) -> None:
    """Applies the go-live migrations as `prisma migrate deploy` would, with their rows."""
    for name in sorted(names or MIGRATIONS):
        up, _ = MIGRATIONS[name]
        db.psql(
            up + "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, "
            f"applied_steps_count) VALUES ('{name[:14]}', 'x', now(), '{name}', 1);"
        )


def corrupt(db: Database) -> None:
    """What a bad release does to the data: rows changed, rows lost, a table added."""
    db.psql(
        """UPDATE "User" SET "email" = 'corrupt-' || "id", "name" = NULL;
        DELETE FROM "Case" WHERE "id" = 2;
        CREATE TABLE "Leftover" ("id" int);"""
    )
