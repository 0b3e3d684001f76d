"""The database Jobs' scripts, run with `sh -c` against a real PostgreSQL and real dump files.

These are the scripts the inspect, restore and migrate-down Jobs run, exactly as
`rollback_operator.database.scripts` writes them; here the host's psql, pg_dump and coreutils
stand in for the image's. Every run also checks that the database password appears nowhere in
what the script printed or reported.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rollback_operator.database import inspection
from rollback_operator.database import scripts as database_scripts
from rollback_operator.database.spec import DatabaseSpec
from standins.lawyershub_db import (
    MIGRATIONS,
    NEWEST_FIRST,
    PRE_GOLIVE_SQL,
    contents,
    corrupt,
    go_live,
    schema_of,
)
from standins.postgres import Database
from tests.e2e.postgres import database_fixture, postgres_server_fixture  # noqa: F401 (fixtures)
from tests.e2e.support import ScriptRun, run_job_script

pytestmark = pytest.mark.e2e

SNAPSHOT = "pre-golive-snapshot-YYYYMMDD.sql"


def run(script: str, db: Database, tmp_path: Path, *, url: str | None = None) -> ScriptRun:
    """Runs a Job's script as its pod would, DATABASE_URL from the environment; nothing of the
    password in what it said, nothing left behind in its TMPDIR."""
    work = tmp_path / "tmp"
    work.mkdir(exist_ok=True)
    result = run_job_script(script, tmp_path, work, {"DATABASE_URL": url or db.url}, timeout=120)
    for said in (result.stdout, result.stderr, result.message):
        assert db.password not in said, "the database password leaked into the output"
    assert not list(work.iterdir()), "the script left files behind"
    return result


def spec(**database: Any) -> DatabaseSpec:
    return DatabaseSpec.parse(
        {"connection": {"secretRef": {"name": "db", "key": "url"}}, **database}
    )


def restore_spec(directory: Path, file: str = SNAPSHOT, **extra: Any) -> DatabaseSpec:
    backup = {"claimName": "db-backups", "directory": str(directory), "file": file}
    if "YYYYMMDD" in file:
        backup["notAfter"] = "2026-01-10"
    return spec(restore={"backup": backup, **extra})


def inspect(db: Database, tmp_path: Path, database_spec: DatabaseSpec, **kw: Any) -> ScriptRun:
    return run(inspection.inspect_script(database_spec, **kw), db, tmp_path)


def restore(
    db: Database,
    tmp_path: Path,
    database_spec: DatabaseSpec,
    file: str,
    sha256: str | None = None,
) -> ScriptRun:
    """The restore script of `file`, told the sha256 Preflight recorded: by default the file's
    own, as sha256sum computes it."""
    assert database_spec.restore is not None
    if sha256 is None:
        path = Path(database_spec.restore.backup.directory) / file
        sha256 = subprocess.run(
            ["sha256sum", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    return run(database_scripts.restore_script(database_spec.restore, file, sha256), db, tmp_path)


# --- restore


@pytest.mark.parametrize("clean", [False, True], ids=["plain-dump", "clean-dump"])
def test_restore_brings_the_data_back_exactly(
    database: Database, tmp_path: Path, clean: bool
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    before = contents(database)
    backups = tmp_path / "backups"
    backups.mkdir()
    database.dump(backups / "pre-golive-snapshot-20260109.sql", *(["--clean"] if clean else []))
    go_live(database)
    corrupt(database)
    assert contents(database) != before

    database_spec = restore_spec(backups)
    inspected = inspect(database, tmp_path, database_spec)
    assert inspected.returncode == 0, inspected.message
    found = json.loads(inspected.message)["backup"]
    assert found["file"] == "pre-golive-snapshot-20260109.sql"
    restored = restore(database, tmp_path, database_spec, found["file"])

    assert restored.returncode == 0, restored.message + restored.stderr
    assert restored.message.startswith("restored pre-golive-snapshot-20260109.sql (sha256 ")
    assert found["sha256"] in restored.message
    assert contents(database) == before
    assert "Leftover" not in database.tables() and "CaseDocument" not in database.tables()


def test_restore_of_several_schemas_recreates_each_from_the_dump(
    database: Database, tmp_path: Path
) -> None:
    database.psql(PRE_GOLIVE_SQL + "CREATE SCHEMA audit; CREATE TABLE audit.log (msg text);")
    database.psql("INSERT INTO audit.log VALUES ('created'), (E'two\\nlines')")
    before = contents(database), database.table("audit.log")
    backups = tmp_path / "backups"
    backups.mkdir()
    database.dump(backups / "snapshot.sql")
    database.psql("DELETE FROM audit.log; CREATE TABLE audit.extra (x int)")
    corrupt(database)

    only_public = restore_spec(backups, "snapshot.sql")
    refused = inspect(database, tmp_path, only_public)
    assert refused.returncode == 1
    assert refused.message.startswith(
        "backup snapshot.sql creates schema(s) audit that database.restore.schemas (public)"
    )

    both = restore_spec(backups, "snapshot.sql", schemas=["public", "audit"])
    restored = restore(database, tmp_path, both, "snapshot.sql")
    assert restored.returncode == 0, restored.message
    assert (contents(database), database.table("audit.log")) == before
    assert database.tables("audit") == ["log"]


# Objects of other schemas that depend on the application's: DROP SCHEMA public CASCADE would
# drop them with it, so the inspection refuses the restore and names them.
OUTSIDE_DEPENDENTS = """
CREATE SCHEMA reporting;
CREATE VIEW reporting.active_users AS SELECT "id", "email" FROM public."User";
CREATE SCHEMA audit;
CREATE TABLE audit.log (
    "id" SERIAL PRIMARY KEY,
    "userId" INTEGER NOT NULL CONSTRAINT log_user_fkey REFERENCES public."User"("id"),
    "message" TEXT
);
CREATE TABLE audit.case_history ("status" public."CaseStatus");
"""


def test_objects_outside_the_listed_schemas_depending_on_them_are_refused_by_name(
    database: Database, tmp_path: Path
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    database.dump(tmp_path / "snapshot.sql")
    database.psql(OUTSIDE_DEPENDENTS + 'INSERT INTO audit.log ("userId") VALUES (1);')
    before = contents(database), database.table("audit.log")

    refused = inspect(database, tmp_path, restore_spec(tmp_path, "snapshot.sql"))

    assert refused.returncode == 1
    assert refused.message == (
        "objects outside database.restore.schemas (public) depend on objects inside them, and "
        "the restore's DROP SCHEMA ... CASCADE would drop them too: "
        'column status of table audit.case_history depends on type public."CaseStatus"; '
        'constraint log_user_fkey on table audit.log depends on index public."User_pkey", '
        'table public."User"; '
        'view reporting.active_users depends on table public."User". Drop or move them first '
        "(and recreate them after the restore), or list their schemas in "
        "database.restore.schemas if the backup holds them; nothing was changed"
    )
    assert (contents(database), database.table("audit.log")) == before


def test_dependents_inside_the_listed_schemas_or_on_other_schemas_are_accepted(
    database: Database, tmp_path: Path
) -> None:
    """Only what the drop would reach outside the listed schemas counts: the same objects with
    their schemas listed, and a view of the application's on another schema, are fine."""
    database.psql(PRE_GOLIVE_SQL)
    database.dump(tmp_path / "snapshot.sql")
    database.psql(OUTSIDE_DEPENDENTS)
    database.psql('CREATE VIEW public."LogCount" AS SELECT count(*) AS n FROM audit.log')

    listed = restore_spec(tmp_path, "snapshot.sql", schemas=["public", "reporting", "audit"])
    accepted = inspect(database, tmp_path, listed)
    assert accepted.returncode == 0, accepted.message

    database.psql(
        "DROP SCHEMA reporting CASCADE; DROP TABLE audit.case_history; "
        "ALTER TABLE audit.log DROP CONSTRAINT log_user_fkey"
    )
    without = inspect(database, tmp_path, restore_spec(tmp_path, "snapshot.sql"))
    assert without.returncode == 0, without.message


def test_a_dump_with_an_sql_error_fails_and_changes_nothing(
    database: Database, tmp_path: Path
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    backups = tmp_path / "backups"
    backups.mkdir()
    dump = database.dump(backups / "broken.sql")
    # An error after the schemas were dropped and most data loaded: all must come back.
    text = dump.read_text()
    marker = "-- PostgreSQL database dump complete"
    assert marker in text
    dump.write_text(
        text.replace(marker, 'INSERT INTO public."User" ("id", "email") VALUES (\'x\', \'y\');\n')
    )
    corrupt(database)
    before = contents(database)

    result = restore(database, tmp_path, restore_spec(backups, "broken.sql"), "broken.sql")

    assert result.returncode == 1
    assert result.message.startswith(
        "the restore failed and its transaction was rolled back: the database is as it was"
    )
    assert 'invalid input syntax for type integer: "x"' in result.message  # psql's own words
    assert contents(database) == before


def test_the_public_schema_is_made_again_as_postgresql_makes_it(
    database: Database, tmp_path: Path
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    acl_before = database.rows(
        "SELECT nspowner::regrole, nspacl::text, obj_description(oid, 'pg_namespace') "
        "FROM pg_namespace WHERE nspname = 'public'"
    )
    backups = tmp_path / "backups"
    backups.mkdir()
    database.dump(backups / "snapshot.sql")
    result = restore(database, tmp_path, restore_spec(backups, "snapshot.sql"), "snapshot.sql")
    assert result.returncode == 0, result.message
    default_acl = "{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}"
    assert acl_before == [("pg_database_owner", default_acl, "standard public schema")]
    assert (
        database.rows(
            "SELECT nspowner::regrole, nspacl::text, obj_description(oid, 'pg_namespace') "
            "FROM pg_namespace WHERE nspname = 'public'"
        )
        == acl_before
    )


@pytest.mark.parametrize(
    ("kind", "refusal"),
    [
        ("connect", "switches database (\\connect)"),
        ("create", "creates or drops a database (CREATE/DROP DATABASE)"),
        ("large-object", "controls the transaction (BEGIN)"),
    ],
    ids=str,
)
def test_a_dump_that_cannot_run_in_one_transaction_is_refused(
    database: Database, tmp_path: Path, kind: str, refusal: str
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    if kind == "large-object":  # pg_dump writes BEGIN/COMMIT around large objects
        database.psql("SELECT lo_from_bytea(0, 'a scanned contract')")
    backups = tmp_path / "backups"
    backups.mkdir()
    dump = database.dump(backups / "snapshot.sql", *(["--create"] if kind == "create" else []))
    if kind == "connect":  # as pg_dumpall writes between databases
        text = dump.read_text()
        dump.write_text(text.replace("SET statement_timeout", "\\connect other\nSET statement", 1))
    corrupt(database)
    before = contents(database)
    database_spec = restore_spec(backups, "snapshot.sql")

    for result in (
        inspect(database, tmp_path, database_spec),
        restore(database, tmp_path, database_spec, "snapshot.sql"),
    ):
        assert result.returncode == 1
        assert result.message.startswith("backup snapshot.sql cannot run in one transaction: line")
        assert refusal in result.message
    assert contents(database) == before


def test_a_backup_changed_since_preflight_is_refused(database: Database, tmp_path: Path) -> None:
    database.psql(PRE_GOLIVE_SQL)
    backups = tmp_path / "backups"
    backups.mkdir()
    database.dump(backups / "snapshot.sql")
    corrupt(database)
    before = contents(database)

    result = restore(
        database, tmp_path, restore_spec(backups, "snapshot.sql"), "snapshot.sql", "0" * 64
    )

    assert result.returncode == 1
    assert "backup file snapshot.sql has changed since Preflight: its sha256 is now" in (
        result.message
    )
    assert "nothing was restored" in result.message
    assert contents(database) == before


def test_a_backup_gone_since_preflight_is_refused(database: Database, tmp_path: Path) -> None:
    database.psql(PRE_GOLIVE_SQL)
    result = restore(
        database, tmp_path, restore_spec(tmp_path, "snapshot.sql"), "snapshot.sql", "0" * 64
    )
    assert result.returncode == 1
    assert result.message.startswith("backup file snapshot.sql is gone from")


# --- resolving the backup file


def test_the_newest_file_dated_on_or_before_not_after_is_chosen(
    database: Database, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    for day in ("20251231", "20260105", "20260110", "20260111", "20260201"):
        (backups / f"pre-golive-snapshot-{day}.sql").write_text(f"-- taken {day}\n")
    # Neither dates nor this pattern: never chosen, even though they sort later.
    for other in (
        "pre-golive-snapshot-20261399.sql",
        "pre-golive-snapshot-2026011.sql",
        "pre-golive-snapshot-20260109.sql.gz",
        "xpre-golive-snapshot-20260109.sql",
    ):
        (backups / other).write_text("not a candidate\n")
    (backups / "pre-golive-snapshot-20260108.sql").mkdir()  # a directory is no backup

    result = inspect(database, tmp_path, restore_spec(backups))

    assert result.returncode == 0, result.message
    report = json.loads(result.message)
    content = b"-- taken 20260110\n"
    assert report["backup"] == {
        "file": "pre-golive-snapshot-20260110.sql",
        "sizeBytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "considered": 3,
        "later": 2,
    }
    assert report["server"].split(".")[0].isdigit()


def test_an_exact_file_name_is_taken_as_it_is(database: Database, tmp_path: Path) -> None:
    (tmp_path / "2026-01-09 before go-live.sql").write_text("SELECT 1;\n")
    result = inspect(database, tmp_path, restore_spec(tmp_path, "2026-01-09 before go-live.sql"))
    assert result.returncode == 0, result.message
    assert json.loads(result.message)["backup"]["file"] == "2026-01-09 before go-live.sql"


@pytest.mark.parametrize("file", [SNAPSHOT, "pre-golive-snapshot-20260109.sql"])
def test_no_matching_backup_fails_with_the_reason(
    database: Database, tmp_path: Path, file: str
) -> None:
    (tmp_path / "pre-golive-snapshot-20260111.sql").write_text("-- too late\n")
    result = inspect(database, tmp_path, restore_spec(tmp_path, file))
    assert result.returncode == 1
    if file == SNAPSHOT:
        assert result.message == (
            f"no backup matching {SNAPSHOT} dated on or before 2026-01-10 in {tmp_path} "
            "(claim db-backups; 1 later file(s) left alone); nothing was changed"
        )
    else:
        assert result.message == (
            f"backup file {file} not found in {tmp_path} (claim db-backups); nothing was changed"
        )


def test_a_missing_backup_directory_names_the_claim(database: Database, tmp_path: Path) -> None:
    result = inspect(database, tmp_path, restore_spec(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "is not there: is PersistentVolumeClaim db-backups the one" in result.message


def test_an_unreachable_database_fails_the_inspection(database: Database, tmp_path: Path) -> None:
    (tmp_path / "snapshot.sql").write_text("SELECT 1;\n")
    bad = database.url.replace(database.password, "wrong-password")
    result = run(
        inspection.inspect_script(restore_spec(tmp_path, "snapshot.sql")),
        database,
        tmp_path,
        url=bad,
    )
    assert result.returncode == 1
    assert result.message.startswith("the database check failed: psql said:")
    assert "password authentication failed" in result.message
    assert "wrong-password" not in result.message


# --- migrate down


def migrations_source(tmp_path: Path, layout: str, names: list[str] | None = None) -> Path:
    """The down.sql files as a Job sees them: ConfigMap keys, or Prisma's own directories."""
    root = tmp_path / "migrations"
    root.mkdir()
    for name in names if names is not None else list(MIGRATIONS):
        down = MIGRATIONS[name][1]
        if layout == "configMap":
            (root / f"{name}.down.sql").write_text(down)
        else:
            (root / name).mkdir()
            (root / name / "migration.sql").write_text(MIGRATIONS[name][0])
            (root / name / "down.sql").write_text(down)
    return root


def migrate_spec(layout: str, migrations: list[str] | None = None) -> DatabaseSpec:
    source = (
        {"configMap": "down-migrations"}
        if layout == "configMap"
        else {"image": "registry.example/backend:1", "path": "/app/prisma/migrations"}
    )
    return spec(migrateDown={"migrations": migrations or NEWEST_FIRST, "source": source})


def migrate_down(
    db: Database, tmp_path: Path, database_spec: DatabaseSpec, root: Path, **kw: Any
) -> ScriptRun:
    assert database_spec.migrate_down is not None
    script = database_scripts.migrate_down_script(database_spec.migrate_down, str(root))
    return run(script, db, tmp_path, **kw)


@pytest.mark.parametrize("layout", ["configMap", "image"])
def test_migrate_down_returns_schema_and_history_to_before_go_live(
    database: Database, tmp_path: Path, layout: str
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    before = contents(database)
    go_live(database)
    assert "CaseDocument" in database.tables()
    root = migrations_source(tmp_path, layout)
    database_spec = migrate_spec(layout)

    checked = inspect(database, tmp_path, database_spec, migrations_root=str(root))
    assert checked.returncode == 0, checked.message
    result = migrate_down(database, tmp_path, database_spec, root)

    assert result.returncode == 0, result.message + result.stderr
    assert result.message == (
        f"rolled back 2 migration(s), newest first: {', '.join(NEWEST_FIRST)} (down.sql run and "
        "_prisma_migrations rows deleted in schema public, in one transaction)"
    )
    assert contents(database) == before


def test_migrate_down_honours_prisma_schema_parameter(database: Database, tmp_path: Path) -> None:
    """Prisma's `?schema=` (and its other parameters) would make psql refuse the URL."""
    database.psql(
        "CREATE SCHEMA lawyershub; SET search_path TO lawyershub;"
        + PRE_GOLIVE_SQL
        + "RESET search_path;"
    )
    before = schema_of(database)
    url = f"{database.url}?schema=lawyershub&connection_limit=5&pool_timeout=10&sslmode=disable"
    for name in sorted(MIGRATIONS):
        up = MIGRATIONS[name][0]
        database.psql(
            "SET search_path TO lawyershub;" + up + "INSERT INTO _prisma_migrations (id, "
            f"checksum, finished_at, migration_name) VALUES ('{name[:14]}', 'x', now(), '{name}')"
        )
    root = migrations_source(tmp_path, "configMap")

    result = migrate_down(database, tmp_path, migrate_spec("configMap"), root, url=url)

    assert result.returncode == 0, result.message + result.stderr
    assert "in schema lawyershub" in result.message
    assert schema_of(database) == before
    assert database.rows("SELECT count(*) FROM lawyershub._prisma_migrations") == [("2",)]


@pytest.mark.parametrize("layout", ["configMap", "image"])
def test_a_missing_down_sql_fails_before_anything_changes(
    database: Database, tmp_path: Path, layout: str
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    go_live(database)
    after_go_live = contents(database)
    root = migrations_source(tmp_path, layout, names=[NEWEST_FIRST[1]])
    database_spec = migrate_spec(layout)
    expected = (
        "a key <migration>.down.sql for each"
        if layout == "configMap"
        else "<path>/<migration>/down.sql for each"
    )

    for result in (
        inspect(database, tmp_path, database_spec, migrations_root=str(root)),
        migrate_down(database, tmp_path, database_spec, root),
    ):
        assert result.returncode == 1
        assert NEWEST_FIRST[0] in result.message
        assert NEWEST_FIRST[1] not in result.message
        assert f"(expected {expected}); nothing was changed" in result.message
    assert contents(database) == after_go_live


def test_a_failing_down_sql_rolls_every_migration_back_in(
    database: Database, tmp_path: Path
) -> None:
    """The first down.sql succeeds, the second fails: the first's changes are undone too."""
    database.psql(PRE_GOLIVE_SQL)
    go_live(database)
    after_go_live = contents(database)
    root = migrations_source(tmp_path, "configMap")
    (root / f"{NEWEST_FIRST[1]}.down.sql").write_text('DROP TABLE "NoSuchTable";\n')

    result = migrate_down(database, tmp_path, migrate_spec("configMap"), root)

    assert result.returncode == 1
    assert result.message.startswith(
        "migrate down failed and its transaction was rolled back: the schema and "
        "_prisma_migrations are as they were. psql said:"
    )
    assert 'table "NoSuchTable" does not exist' in result.message
    assert contents(database) == after_go_live


@pytest.mark.parametrize(
    ("applied", "listed", "complaint"),
    [
        ([NEWEST_FIRST[1]], NEWEST_FIRST, f"not applied, so not rolled back: {NEWEST_FIRST[0]}"),
        (
            NEWEST_FIRST,
            [NEWEST_FIRST[1]],
            f"applied after the oldest migration to roll back, but not listed: {NEWEST_FIRST[0]}",
        ),
        (NEWEST_FIRST, list(reversed(NEWEST_FIRST)), "must be listed newest first"),
    ],
    ids=["not-applied", "newer-not-listed", "wrong-order"],
)
def test_migrations_must_be_the_newest_applied_ones(
    database: Database, tmp_path: Path, applied: list[str], listed: list[str], complaint: str
) -> None:
    database.psql(PRE_GOLIVE_SQL)
    go_live(database, names=applied)
    state = contents(database)
    root = migrations_source(tmp_path, "configMap")
    database_spec = migrate_spec("configMap", listed)

    for result in (
        inspect(database, tmp_path, database_spec, migrations_root=str(root)),
        migrate_down(database, tmp_path, database_spec, root),
    ):
        assert result.returncode == 1, result.message
        assert complaint in result.message
    assert contents(database) == state


def test_the_inspection_changes_nothing_even_if_asked(database: Database, tmp_path: Path) -> None:
    """Preflight's Job runs read-only: a check that tried to write would fail."""
    database.psql(PRE_GOLIVE_SQL)
    go_live(database)
    root = migrations_source(tmp_path, "configMap")
    script = inspection.inspect_script(migrate_spec("configMap"), migrations_root=str(root))
    sneaky = script.replace('-c "SHOW server_version"', '-c "DELETE FROM _prisma_migrations"')
    assert sneaky != script
    result = run(sneaky, database, tmp_path)
    assert result.returncode == 1
    assert "read-only transaction" in result.message
    assert database.rows("SELECT count(*) FROM _prisma_migrations") == [("4",)]
