"""The one-transaction guard where the operator reads the SQL (database/sql_guard.py): each
hostile down.sql or dump is refused with its line named, and what Prisma and pg_dump write
passes. The same inputs go through the Job's check, with real psql, in
tests/e2e/test_database_scripts.py."""

from __future__ import annotations

import base64

import pytest

from rollback_operator.database.preflight import down_sql_problems
from rollback_operator.database.sql_guard import check_down_sql, check_dump

PRISMA_ENUM_DOWN = """-- AlterEnum
BEGIN;
CREATE TYPE "Role_new" AS ENUM ('CLIENT', 'ADMIN');
ALTER TABLE "User" ALTER COLUMN "role" DROP DEFAULT;
ALTER TABLE "User" ALTER COLUMN "role" TYPE "Role_new" USING ("role"::text::"Role_new");
ALTER TYPE "Role" RENAME TO "Role_old";
ALTER TYPE "Role_new" RENAME TO "Role";
DROP TYPE "Role_old";
ALTER TABLE "User" ALTER COLUMN "role" SET DEFAULT 'CLIENT';
COMMIT;

-- DropTable
DROP TABLE "CaseDocument";
"""

# (down.sql, the line refused, words of the reason)
HOSTILE_DOWN_SQL = {
    "indented-commit": ("DROP TABLE a;\n    COMMIT;\nDROP TABLE b;\n", 2, "(COMMIT)"),
    "commit-after-statement": ("DROP TABLE a; COMMIT;\n", 1, "(COMMIT)"),
    "lowercase-end": ("DROP TABLE a;\nend;\n", 2, "(COMMIT)"),
    "abort": ("DROP TABLE a;\n/* x */ ABORT;\n", 2, "(ROLLBACK)"),
    "rollback-to-savepoint": ("SAVEPOINT s;\nDROP TABLE a;\n", 1, "(SAVEPOINT)"),
    "release": ("DROP TABLE a;\nRELEASE SAVEPOINT s;\n", 2, "(RELEASE SAVEPOINT)"),
    "start-transaction": ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE;\n", 1, "(START"),
    "prepare-transaction": ("DROP TABLE a;\nPREPARE TRANSACTION 'keep';\n", 2, "(PREPARE"),
    "commit-prepared": ("COMMIT PREPARED 'keep';\n", 1, "(COMMIT PREPARED)"),
    "set-on-error-stop-off": ("\\set ON_ERROR_STOP off\nDROP TABLE a;\n", 1, "(\\set)"),
    "meta-after-statement": ("DROP TABLE a; \\set ON_ERROR_STOP 0\n", 1, "(\\set)"),
    "gexec": ("SELECT 'COMMIT' \\gexec\n", 1, "(\\gexec)"),
    "shell-escape": ("SELECT 1;\n  \\! rm -rf /\n", 2, "(\\!)"),
    "include": ("\\i /etc/passwd\n", 1, "(\\i)"),
    "connect": ("\\connect other\nDROP TABLE a;\n", 1, "switches database (\\connect)"),
    "psql-variable": ("SELECT :'ON_ERROR_STOP';\n", 1, "psql variable"),
    "commit-in-do-block": ("DO $$\nBEGIN\n  COMMIT;\nEND\n$$;\n", 1, "inside a DO block"),
    "drop-database": ("DROP DATABASE app;\n", 1, "(CREATE/DROP DATABASE)"),
    "string-end-depends-on-settings": (
        "SET standard_conforming_strings = off;\nSELECT 'a\\'; \\set ON_ERROR_STOP off --';\n",
        2,
        "standard_conforming_strings",
    ),
    "unclosed-dollar-quote": ("SELECT $x$ never closed;\nCOMMIT;\n", 1, "never closes"),
    "bare-begin-commit": ("BEGIN;\nDROP TABLE a;\nCOMMIT;\n", 1, "(BEGIN)"),
    "prisma-marker-wrong-block": (
        "-- AlterEnum\nBEGIN;\nDROP TABLE a;\nCOMMIT;\n",
        3,
        "not Prisma's enum block",
    ),
    "prisma-block-not-closed": (
        "-- AlterEnum\nBEGIN;\nCREATE TYPE \"R_new\" AS ENUM ('A');\nDROP TABLE a;\n",
        2,
        "never closed",
    ),
    "prisma-block-extra-commit": (PRISMA_ENUM_DOWN + "COMMIT;\n", 14, "(COMMIT)"),
    "prisma-block-nested-begin": (
        PRISMA_ENUM_DOWN.replace("DROP TYPE", "BEGIN;\nDROP TYPE"),
        8,
        "(BEGIN)",
    ),
    "prisma-block-indented": (PRISMA_ENUM_DOWN.replace("BEGIN;", "  BEGIN;"), 2, "(BEGIN)"),
    "not-sql": ("DROP TABLE a\nCOMMIT\n", 1, "not SQL PostgreSQL parses"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_DOWN_SQL))
def test_hostile_down_sql_is_refused_with_its_line(name: str) -> None:
    text, line, reason = HOSTILE_DOWN_SQL[name]
    refusal = check_down_sql(text)
    assert refusal is not None, f"{name} got through"
    assert refusal.line == line
    message = refusal.message("the down.sql of m")
    assert message.startswith(f"the down.sql of m cannot run in one transaction: line {line} (")
    assert text.splitlines()[line - 1].strip()[:40] in message
    assert reason in message
    assert "; " in message.split(reason, 1)[1], "the message says what to do"


ACCEPTED_DOWN_SQL = {
    "prisma-enum": PRISMA_ENUM_DOWN,
    "two-prisma-enums": PRISMA_ENUM_DOWN + "\n" + PRISMA_ENUM_DOWN.replace("Role", "Status"),
    "comments": "-- a comment with COMMIT; and \\set in it\nDROP TABLE a;\n/* ROLLBACK; \\q */\n",
    "quotes": "SELECT 'COMMIT; \\set x', \"end\", $body$ \\connect x; COMMIT; $body$;\n",
    "do-block": "DO $$ BEGIN PERFORM 1; END $$;\nSELECT E'it\\'s';\n",
    "atomic": "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\n",
    "misc": "UPDATE a SET b = c[1:2]::text[];\nPREPARE q AS SELECT 1;\n",
    "non-ascii": "CREATE TABLE café (naïve int);\nSELECT $é$ COMMIT; $é$, 'ünï';\n",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED_DOWN_SQL))
def test_plain_sql_and_prismas_enum_block_pass(name: str) -> None:
    assert check_down_sql(ACCEPTED_DOWN_SQL[name]) is None


PG_DUMP = """--
-- PostgreSQL database dump
--

\\restrict AbC123

SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE TABLE public.t (a text);
COPY public.t (a) FROM stdin;
COMMIT;
\\\\set ON_ERROR_STOP off
\\.

--
-- PostgreSQL database dump complete
--

\\unrestrict AbC123

"""


def test_a_pg_dump_with_its_restrict_lines_and_copy_data_passes() -> None:
    assert check_dump(PG_DUMP) is None


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (PG_DUMP.replace("\\unrestrict AbC123", "\\unrestrict AbC123\nCOMMIT;"), 20, "after"),
        (PG_DUMP.replace("\\unrestrict AbC123", "\\unrestrict Other"), 19, "(\\unrestrict)"),
        (PG_DUMP.replace("SET standard", "\\restrict X\nSET standard"), 7, "(\\restrict)"),
        (PG_DUMP.replace("\\.\n", "\\.\nSELECT 1; \\set ON_ERROR_STOP off\n"), 14, "(\\set)"),
        (PG_DUMP.replace("FROM stdin;", "FROM stdin; COMMIT;"), 10, "COPY ... FROM stdin"),
        (PG_DUMP.replace("CREATE TABLE", "BEGIN;\nCREATE TABLE"), 9, "large objects"),
        (PG_DUMP + PRISMA_ENUM_DOWN, 22, "after pg_dump"),
    ],
    ids=[
        "after-unrestrict",
        "wrong-key",
        "second-restrict",
        "meta-after-copy",
        "copy-line",
        "large-object-begin",
        "prisma-block-in-dump",
    ],
)
def test_hostile_dumps_are_refused_with_their_line(text: str, line: int, reason: str) -> None:
    refusal = check_dump(text)
    assert refusal is not None
    assert refusal.line == line, refusal
    assert reason in refusal.message("backup x.sql")


def test_preflight_names_each_down_sql_the_guard_refuses() -> None:
    configmap = {
        "data": {"b.down.sql": "DROP TABLE a;\n  COMMIT;\n", "c.down.sql": PRISMA_ENUM_DOWN},
        "binaryData": {"a.down.sql": base64.b64encode(b"\\set ON_ERROR_STOP off\n").decode()},
    }
    problems = down_sql_problems(configmap, ("c", "b", "a"))
    assert len(problems) == 2
    assert problems[0].startswith(
        "the down.sql of b (b.down.sql) cannot run in one transaction: line 2 (COMMIT;)"
    )
    assert problems[1].startswith(
        "the down.sql of a (a.down.sql) cannot run in one transaction: line 1 "
        "(\\set ON_ERROR_STOP off) is a psql meta-command"
    )
