"""Preflight's database Job, read-only: the inspection script and the report it writes.

It resolves the backup file a restore would use (an exact name, or the newest dated file on or
before `notAfter`), measures it (size, sha256) and refuses a dump that cannot run in one
transaction or creates a schema the restore would not drop; it checks that the database answers,
that nothing outside the listed schemas depends on them (the restore's `DROP SCHEMA ... CASCADE`
would drop it) and, for a migrate-down, that every `down.sql` is there and every migration is
applied. Its last
line of output is a JSON report, which Preflight records in status.backup before anything
changes, so that the restore later loads exactly the file measured here.

Apart from the scripts that change the database (`scripts.py`), whose shell helpers and checks it
shares, because it is the one Job whose output the operator reads back as data: the script and
the parser of its report are kept side by side. Tested for real against PostgreSQL in
tests/e2e/test_database_scripts.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rollback_operator.database.scripts import (
    COMMON,
    MIGRATIONS_CHECK_SQL,
    check_down_files_sh,
    migration_variables,
    schemas_check_sh,
    sh,
    write_sh,
)
from rollback_operator.database.spec import (
    DATE_PLACEHOLDER,
    MIGRATIONS_DIR,
    BackupSpec,
    DatabaseSpec,
)


@dataclass(frozen=True)
class BackupFile:
    """The backup Preflight chose: recorded in status.backup before anything changes."""

    file: str
    size_bytes: int
    sha256: str
    considered: int  # dated files on or before notAfter (1 for an exact name)
    later: int  # dated files after notAfter, left alone


@dataclass(frozen=True)
class Inspection:
    backup: BackupFile | None
    server: str  # the server's version, as the database answered


def parse_inspection(message: str) -> Inspection:
    """The inspection Job's result: one line of JSON, the last of its termination message."""
    line = message.strip().splitlines()[-1] if message.strip() else ""
    raw = json.loads(line)
    backup = raw.get("backup")
    return Inspection(
        backup=None
        if backup is None
        else BackupFile(
            file=str(backup["file"]),
            size_bytes=int(backup["sizeBytes"]),
            sha256=str(backup["sha256"]),
            considered=int(backup.get("considered", 1)),
            later=int(backup.get("later", 0)),
        ),
        server=str(raw.get("server", "")),
    )


# --- the script

# The objects outside the listed schemas that depend on objects inside them: `DROP SCHEMA ...
# CASCADE` would drop them too (a view in `reporting` selecting from `public.users`, a foreign
# key from `audit.log` to it, a column of another schema typed with one of its enums, a trigger
# calling one of its functions, an index using one of its operator classes), as PostgreSQL
# describes them, on one line: at most 20 and a count of the rest; an empty line when there are
# none. Read-only; the schemas arrive through a psql variable (names separated by spaces, as the
# CRD's schema names cannot hold one).
# What a schema holds (each catalog with the column naming the object's schema), and what hangs
# off a table (the column naming the table, whose schema is the object's).
_HELD_IN_SCHEMA = {
    "pg_class": "relnamespace",
    "pg_type": "typnamespace",
    "pg_proc": "pronamespace",
    "pg_operator": "oprnamespace",
    "pg_opclass": "opcnamespace",
    "pg_collation": "collnamespace",
    "pg_constraint": "connamespace",
}
_ON_A_TABLE = {"pg_trigger": "tgrelid", "pg_attrdef": "adrelid", "pg_policy": "polrelid"}


def _catalog(name: str) -> str:
    return f"'pg_catalog.{name}'::pg_catalog.regclass"


_INSIDE_SQL = "\n  UNION ALL\n".join(
    f"  SELECT {_catalog(name)} AS classid, x.oid AS objid FROM pg_catalog.{name} x\n"
    f"    WHERE x.{column} IN (SELECT oid FROM listed)"
    for name, column in _HELD_IN_SCHEMA.items()
)
_SCHEMA_OF_SQL = "".join(
    [
        f"\n      WHEN classid = {_catalog(name)} THEN\n"
        f"        (SELECT x.{column} FROM pg_catalog.{name} x WHERE x.oid = objid)"
        for name, column in _HELD_IN_SCHEMA.items()
    ]
    + [
        f"\n      WHEN classid = {_catalog(name)} THEN\n"
        f"        (SELECT t.relnamespace FROM pg_catalog.{name} x\n"
        f"          JOIN pg_catalog.pg_class t ON t.oid = x.{column} WHERE x.oid = objid)"
        for name, column in _ON_A_TABLE.items()
    ]
)
DEPENDENTS_SQL = (
    """SET LOCAL search_path = '';
WITH listed AS (
  SELECT n.oid FROM pg_catalog.pg_namespace n
  WHERE n.nspname = ANY (pg_catalog.string_to_array(:'rollback_schemas', ' '))
), inside AS (
"""
    + _INSIDE_SQL
    + """
), dependent AS (
  SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid,
    CASE d.classid
      WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
        (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid)
    END AS view_oid
  FROM pg_catalog.pg_depend d
  JOIN inside i ON i.classid = d.refclassid AND i.objid = d.refobjid
  WHERE d.deptype IN ('n', 'a')
), placed AS (
  SELECT dependent.*,
    CASE
      WHEN view_oid IS NOT NULL THEN
        (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = view_oid)"""
    + _SCHEMA_OF_SQL
    + """
      ELSE (SELECT n.oid FROM pg_catalog.pg_namespace n
        WHERE n.nspname = (pg_catalog.pg_identify_object(classid, objid, objsubid)).schema)
    END AS namespace
  FROM dependent
), described AS (
  SELECT
    CASE WHEN view_oid IS NOT NULL
      THEN pg_catalog.pg_describe_object('pg_catalog.pg_class'::pg_catalog.regclass, view_oid, 0)
      ELSE pg_catalog.pg_describe_object(classid, objid, objsubid)
    END AS object,
    pg_catalog.pg_describe_object(refclassid, refobjid, 0) AS target
  FROM placed
  WHERE namespace IS NOT NULL AND namespace NOT IN (SELECT oid FROM listed)
    AND namespace <> 'pg_catalog'::pg_catalog.regnamespace
), found AS (
  SELECT object || ' depends on '
    || pg_catalog.string_agg(DISTINCT target, ', ' ORDER BY target) AS line
  FROM described GROUP BY object
), numbered AS (
  SELECT line, pg_catalog.row_number() OVER (ORDER BY line) AS n,
    pg_catalog.count(*) OVER () AS total
  FROM found
)
SELECT pg_catalog.string_agg(
  CASE WHEN n <= 20 THEN line ELSE 'and ' || (total - 20) || ' more' END, '; ' ORDER BY n)
FROM numbered WHERE n <= 21;
"""
)


def _dependents_sh(schemas: tuple[str, ...]) -> str:
    """Fails, naming them, when objects outside `schemas` depend on objects inside them."""
    listed = ", ".join(schemas)
    return "\n".join(
        [
            write_sh("dependents.sql", DEPENDENTS_SQL),
            "set +e",
            "dependents=$(run_psql --single-transaction -At -v "
            + sh("rollback_schemas=" + " ".join(schemas))
            + ' -f "$work/dependents.sql")',
            "rc=$?",
            "set -e",
            '[ "$rc" -eq 0 ] || fail "the database check failed: psql said: $(psql_said)"',
            '[ -z "$dependents" ] || fail '
            + sh(
                f"objects outside database.restore.schemas ({listed}) depend on objects inside "
                "them, and the restore's DROP SCHEMA ... CASCADE would drop them too: "
            )
            + '"$dependents"'
            + sh(
                ". Drop or move them first (and recreate them after the restore), or list "
                "their schemas in database.restore.schemas if the backup holds them; nothing "
                "was changed"
            ),
        ]
    )


def _resolve_backup_sh(backup: BackupSpec) -> str:
    """Sets $chosen, $considered and $later: the exact file, or the newest file whose
    YYYYMMDD is a date on or before notAfter."""
    directory = sh(backup.directory)
    lines = [
        f"[ -d {directory} ] || fail "
        + sh(
            f"backup directory {backup.directory} is not there: is PersistentVolumeClaim "
            f"{backup.claim_name} the one holding the backups?"
        ),
    ]
    if not backup.is_pattern:
        lines += [
            f"chosen={sh(backup.file)}",
            f'[ -f {directory}/"$chosen" ] || fail '
            + sh(
                f"backup file {backup.file} not found in {backup.directory} (claim "
                f"{backup.claim_name}); nothing was changed"
            ),
            "considered=1",
            "later=0",
        ]
        return "\n".join(lines)
    prefix, _, suffix = backup.file.partition(DATE_PLACEHOLDER)
    limit = (backup.not_after or "").replace("-", "")
    bound = f" dated on or before {backup.not_after}" if backup.not_after else ""
    lines += [
        f"prefix={sh(prefix)}",
        f"suffix={sh(suffix)}",
        f"limit={sh(limit)}",
        "chosen=",
        "chosen_date=",
        "considered=0",
        "later=0",
        f"for path in {directory}/*; do",
        '  [ -f "$path" ] || continue',
        "  name=${path##*/}",
        "  case $name in",
        '    "$prefix"[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]"$suffix") ;;',
        "    *) continue ;;",
        "  esac",
        '  day=${name#"$prefix"}',
        '  day=${day%"$suffix"}',
        "  case $day in ????0[1-9]?? | ????1[0-2]??) ;; *) continue ;; esac",
        "  case $day in ??????0[1-9] | ??????[12][0-9] | ??????3[01]) ;; *) continue ;; esac",
        '  if [ -n "$limit" ] && [ "$day" -gt "$limit" ]; then',
        "    later=$((later + 1))",
        "    continue",
        "  fi",
        "  considered=$((considered + 1))",
        '  if [ -z "$chosen" ] || [ "$day" -gt "$chosen_date" ]; then',
        "    chosen=$name",
        "    chosen_date=$day",
        "  fi",
        "done",
        '[ -n "$chosen" ] || fail '
        + sh(
            f"no backup matching {backup.file}{bound} in {backup.directory} (claim "
            f"{backup.claim_name}; "
        )
        + '"$later"'
        + sh(" later file(s) left alone); nothing was changed"),
    ]
    return "\n".join(lines)


def inspect_script(
    database: DatabaseSpec, migrations_root: str = MIGRATIONS_DIR, *, connect: bool = True
) -> str:
    """Preflight's Job: read-only. Resolves and measures the backup (for a restore), checks
    that the database answers (in a read-only transaction) and, for a migrate-down, that
    every down.sql is there and every migration is applied. Its last line of output is JSON:
    `{"server": ..., "backup": {"file", "sizeBytes", "sha256", "considered", "later"}}`.

    Without `connect` (a dry run, whose Job gets no Secret) the database is left alone: only
    the files are checked, and "server" is empty."""
    parts = [COMMON, "backup_json="]
    restore = database.restore
    if restore is not None:
        backup = restore.backup
        parts += [
            _resolve_backup_sh(backup),
            f'dump={sh(backup.directory)}/"$chosen"',
            '[ -r "$dump" ] || fail "backup file $chosen cannot be read by the Job\'s user"',
            'size=$(wc -c <"$dump" | tr -d " ")',
            'sum=$(sha256sum <"$dump")',
            "sum=${sum%% *}",
            'sql_guard dump "$dump" "backup $chosen"',
            schemas_check_sh('"$dump"', '"backup $chosen"', restore.schemas),
            "file_json=$(printf '%s' \"$chosen\" | sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g')",
            'backup_json=$(printf \',"backup":{"file":"%s","sizeBytes":%s,"sha256":"%s",'
            '"considered":%s,"later":%s}\' "$file_json" "$size" "$sum" "$considered" "$later")',
        ]
    migrate = database.migrate_down
    check_migrations = database.runs_migrate_down and migrate is not None and not migrate.command
    if check_migrations and migrate is not None:
        parts += [check_down_files_sh(migrate, migrations_root)]
    if not connect:
        return "\n".join([*parts, 'say "$(printf \'{"server":""%s}\' "$backup_json")"', ""])
    parts += [
        "database_url",
        'PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c default_transaction_read_only=on"',
        "export PGOPTIONS",
    ]
    check = ""
    if check_migrations and migrate is not None:
        parts.append(write_sh("check.sql", MIGRATIONS_CHECK_SQL))
        check = (
            ' -v rollback_schema="$schema" '
            + migration_variables(migrate)
            + ' -f "$work/check.sql"'
        )
    parts += [
        "set +e",
        'server=$(run_psql --single-transaction -At -c "SHOW server_version"' + check + ")",
        "rc=$?",
        "set -e",
        '[ "$rc" -eq 0 ] || fail "the database check failed: psql said: $(psql_said)"',
    ]
    if restore is not None:
        parts.append(_dependents_sh(tuple(restore.schemas)))
    parts += [
        "server=$(printf '%s' \"$server\" | head -n 1 | tr -cd 'A-Za-z0-9 .()_+~-')",
        'say "$(printf \'{"server":"%s"%s}\' "$server" "$backup_json")"',
        "",
    ]
    return "\n".join(parts)
