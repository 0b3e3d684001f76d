"""The one-transaction guard where it runs in the Job (database/sql_guard_job.py): the real
migrate-down and restore scripts, with real sh, awk and psql, against a real PostgreSQL.

Each hostile down.sql or dump is refused, its line named, before psql connects, and the
database is exactly as it was; what the Job's scan leaves to PostgreSQL (COMMIT inside a DO
block or a procedure) is refused by PostgreSQL inside the run's transaction block, and rolled
back. The Job's scan and the operator's parser (tests/unit/test_sql_guard.py) refuse the same
inputs on the same lines.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rollback_operator.database.sql_guard import check_down_sql, check_dump
from rollback_operator.database.sql_guard_job import GUARD_AWK
from standins.lawyershub_db import NEWEST_FIRST, PRE_GOLIVE_SQL, contents, corrupt, go_live
from standins.postgres import Database
from tests.e2e.postgres import database_fixture, postgres_server_fixture  # noqa: F401 (fixtures)
from tests.e2e.test_database_scripts import (
    inspect,
    migrate_down,
    migrate_spec,
    migrations_source,
    restore,
    restore_spec,
)
from tests.unit.test_sql_guard import (
    ACCEPTED_DOWN_SQL,
    HOSTILE_DOWN_SQL,
    PG_DUMP,
    PRISMA_ENUM_DOWN,
)

pytestmark = pytest.mark.e2e

# What the Job's scan leaves to PostgreSQL, which refuses it inside the transaction block.
LEFT_TO_POSTGRESQL = {
    "commit-in-do-block": "invalid transaction termination",
    "not-sql": "syntax error",
}


def awk_guard(tmp_path: Path, text: str, mode: str) -> tuple[int, str, str]:
    """The Job's scan alone: its exit status, what it said, and the copy it wrote for psql."""
    program = tmp_path / "guard.awk"
    program.write_text(GUARD_AWK)
    source, copy = tmp_path / "input.sql", tmp_path / "checked.sql"
    source.write_text(text)
    copy.unlink(missing_ok=True)
    result = subprocess.run(
        ["awk", "-f", str(program), "--", str(source)],
        env={
            "PATH": os.environ["PATH"],
            "GUARD_MODE": mode,
            "GUARD_WHAT": "X",
            "GUARD_OUT": str(copy) if mode == "down" else "",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout.strip(), copy.read_text() if copy.exists() else ""


@pytest.mark.parametrize("name", sorted(HOSTILE_DOWN_SQL))
def test_the_jobs_scan_refuses_what_the_operator_refuses_on_the_same_line(
    tmp_path: Path, name: str
) -> None:
    text, line, _ = HOSTILE_DOWN_SQL[name]
    status, said, _ = awk_guard(tmp_path, text, "down")
    if name in LEFT_TO_POSTGRESQL:
        assert status == 0
        return
    assert status == 1, f"{name} got through the Job's scan"
    assert said.startswith(f"X cannot run in one transaction: line {line} (")
    refusal = check_down_sql(text)
    assert refusal is not None
    assert said.split(") ", 1)[0] == refusal.message("X").split(") ", 1)[0]


@pytest.mark.parametrize("name", sorted(ACCEPTED_DOWN_SQL))
def test_the_jobs_scan_accepts_what_the_operator_accepts(tmp_path: Path, name: str) -> None:
    status, said, copy = awk_guard(tmp_path, ACCEPTED_DOWN_SQL[name], "down")
    assert (status, said) == (0, "")
    assert len(copy.splitlines()) == len(ACCEPTED_DOWN_SQL[name].splitlines())


def test_the_jobs_scan_accepts_pg_dump_and_folds_prismas_enum_block(tmp_path: Path) -> None:
    assert awk_guard(tmp_path, PG_DUMP, "dump")[0] == 0
    assert check_dump(PG_DUMP) is None
    status, _, copy = awk_guard(tmp_path, PRISMA_ENUM_DOWN, "down")
    assert status == 0
    lines = copy.splitlines()
    assert len(lines) == len(PRISMA_ENUM_DOWN.splitlines()), "psql's line numbers are the file's"
    assert lines[1].startswith("-- BEGIN;") and lines[9].startswith("-- COMMIT;")
    assert [
        a for a, b in zip(lines, PRISMA_ENUM_DOWN.splitlines(), strict=True) if a != b
    ] == lines[1:10:8]


def _hostile(text: str) -> str:
    """The unit tests' hostile down.sql, made to change the Lawyers Hub database for real."""
    return text.replace("DROP TABLE a", 'DROP TABLE "CaseDocument"').replace(
        "DROP TABLE b", 'DELETE FROM "User"'
    )


@pytest.mark.parametrize(
    "name",
    [
        "indented-commit",
        "commit-after-statement",
        "set-on-error-stop-off",
        "meta-after-statement",
        "shell-escape",
        "prepare-transaction",
        "string-end-depends-on-settings",
        "commit-in-do-block",
    ],
)
def test_a_hostile_down_sql_changes_nothing(database: Database, tmp_path: Path, name: str) -> None:
    database.psql(PRE_GOLIVE_SQL)
    go_live(database)
    after_go_live = contents(database)
    root = migrations_source(tmp_path, "configMap")
    text, line, _ = HOSTILE_DOWN_SQL[name]
    (root / f"{NEWEST_FIRST[0]}.down.sql").write_text(_hostile(text))
    database_spec = migrate_spec("configMap")

    checked = inspect(database, tmp_path, database_spec, migrations_root=str(root))
    result = migrate_down(database, tmp_path, database_spec, root)

    for run in () if name in LEFT_TO_POSTGRESQL else (checked, result):
        assert run.returncode == 1
        assert run.message.startswith(
            f"the down.sql of {NEWEST_FIRST[0]} cannot run in one transaction: line {line} ("
        ), run.message
    if name in LEFT_TO_POSTGRESQL:
        assert result.returncode == 1
        assert result.message.startswith("migrate down failed and its transaction was rolled back")
        assert LEFT_TO_POSTGRESQL[name] in result.message
    assert contents(database) == after_go_live


def test_a_procedure_that_commits_is_stopped_by_postgresql(
    database: Database, tmp_path: Path
) -> None:
    """CALL of a procedure that commits: not visible to any scan of the file, refused by
    PostgreSQL inside the run's transaction block, and everything before it rolled back."""
    database.psql(PRE_GOLIVE_SQL)
    go_live(database)
    after_go_live = contents(database)
    root = migrations_source(tmp_path, "configMap")
    (root / f"{NEWEST_FIRST[0]}.down.sql").write_text(
        'DROP TABLE "CaseDocument";\n'
        "CREATE PROCEDURE keep() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;\n"
        "CALL keep();\n"
    )
    result = migrate_down(database, tmp_path, migrate_spec("configMap"), root)
    assert result.returncode == 1
    assert "invalid transaction termination" in result.message
    assert contents(database) == after_go_live


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (lambda d: d.replace("\nSET ", "\n  SELECT 1; COMMIT;\nSET ", 1), "(COMMIT)"),
        (lambda d: d.replace("\nSET ", "\n\\set ON_ERROR_STOP off\nSET ", 1), "(\\set)"),
        (lambda d: d.replace("\nSET ", "\nSELECT 1; \\! touch /tmp/x\nSET ", 1), "(\\!)"),
        (lambda d: d + "DROP SCHEMA public CASCADE;\n", "after pg_dump's closing \\unrestrict"),
        (lambda d: d.replace("\\unrestrict ", "\\unrestrict x"), "(\\unrestrict)"),
        (lambda d: d.replace("\nSET ", "\nSAVEPOINT s;\nSET ", 1), "(SAVEPOINT)"),
    ],
    ids=["commit", "on-error-stop-off", "shell", "after-unrestrict", "wrong-key", "savepoint"],
)
def test_a_hostile_dump_is_refused_before_anything_changes(
    database: Database, tmp_path: Path, edit: object, refusal: str
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    backups = tmp_path / "backups"
    backups.mkdir()
    dump = database.dump(backups / "snapshot.sql")
    assert callable(edit)
    dump.write_text(edit(dump.read_text()))
    corrupt(database)
    before = contents(database)
    database_spec = restore_spec(backups, "snapshot.sql")

    operator_side = check_dump(dump.read_text())
    assert operator_side is not None and refusal in operator_side.message("x")
    for result in (
        inspect(database, tmp_path, database_spec),
        restore(database, tmp_path, database_spec, "snapshot.sql"),
    ):
        assert result.returncode == 1
        assert result.message.startswith("backup snapshot.sql cannot run in one transaction: line")
        assert refusal in result.message
        assert f"line {operator_side.line} (" in result.message
    assert contents(database) == before
