"""The scripts the database Jobs that change the database run (migrate down, restore), their
quoting, and the shell helpers and checks every database Job shares, Preflight's read-only
inspection (inspection.py) included.

A program of its own, in other languages (POSIX sh and SQL), kept apart from the spec (spec.py)
and from the Jobs that carry it (jobs.py): it is tested for real against PostgreSQL, with no
operator and no cluster (tests/e2e/test_database_scripts.py).

The scripts are POSIX sh with psql and coreutils (sha256sum, wc, sed, grep), which both the
`postgres` images and a Debian host with `postgresql-client` have. Every value that comes from
the spec reaches them quoted (shell words with `shlex.quote`, SQL through psql variables or
quoted identifiers), and the only secret, the connection URL, comes from the environment
(`DATABASE_URL`, a secretKeyRef): it is never written into a script, a message or a log.
Each script writes its outcome, or why it stopped, to the termination-message file, where the
operator reads it (the pod's log tail stands in if a script dies before writing it).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from rollback_operator.database.spec import (
    CONFIGMAP_KEY_SUFFIX,
    MIGRATIONS_DIR,
    PUBLIC,
    MigrateDownSpec,
    RestoreSpec,
)

# --- quoting


def sh(word: str) -> str:
    """One shell word, whatever `word` holds."""
    return shlex.quote(word)


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- the scripts


# Shared by every script. `result` is the termination-message file: the one place a script
# says what it did or why it stopped, for the operator to put in the ledger.
COMMON = r"""set -eu
umask 077
result=${TERMINATION_LOG:-/dev/termination-log}
work=$(mktemp -d "${TMPDIR:-/tmp}/rollback.XXXXXX")
trap 'rm -rf "$work"' EXIT

say() {
  printf '%s\n' "$1"
  printf '%s\n' "$1" >"$result" 2>/dev/null || true
}

fail() {
  printf '%s\n' "$1" >&2
  printf '%s\n' "$1" >"$result" 2>/dev/null || true
  exit 1
}

# The first line of file $2 matching the extended regular expression $1 (case-insensitive),
# as "NUMBER:TEXT", or nothing.
first_match() {
  set +e
  found=$(grep -n -i -E -m 1 -e "$1" -- "$2")
  rc=$?
  set -e
  case $rc in
    0) printf '%s' "$found" ;;
    1) ;;
    *) fail "could not read $2" ;;
  esac
}

# Refuses SQL that cannot run inside the one transaction that makes the change all or
# nothing: psql's \connect, CREATE/DROP DATABASE, and transaction control, whose COMMIT would
# make everything before it permanent (pg_dump writes BEGIN/COMMIT around large objects).
one_transaction_only() {
  switch='^\\(connect|c)([[:space:]]|$)'
  database='^(create|drop)[[:space:]]+database([[:space:]]|;|$)'
  control='^(begin|commit|rollback|end|abort|start[[:space:]]+transaction)[[:space:]]*(;|$)'
  hit=$(first_match "$switch|$database|$control" "$1")
  [ -n "$hit" ] || return 0
  line=${hit%%:*}
  hit=${hit#*:}
  if printf '%s\n' "$hit" | grep -q -i -E -e "$switch"; then
    fail "$2 cannot run in one transaction: line $line switches database (\\connect); \
restore it by hand, or use a dump of the one database (pg_dump without --create)"
  fi
  if printf '%s\n' "$hit" | grep -q -i -E -e "$database"; then
    fail "$2 cannot run in one transaction: line $line creates or drops a database \
(CREATE/DROP DATABASE); restore it by hand, or use a dump of the one database \
(pg_dump without --create)"
  fi
  fail "$2 cannot run in one transaction: line $line starts or ends a transaction \
(BEGIN/COMMIT; pg_dump writes these around large objects), which would make part of it \
permanent on an error; restore it by hand"
}

# DATABASE_URL as psql takes it. Prisma's URL may carry parameters libpq does not know, and
# psql refuses those (invalid URI query parameter): libpq's own are kept, Prisma's dropped,
# and Prisma's ?schema= becomes the session's search_path, as Prisma itself uses it. Sets
# $url and $schema (public when the URL names none). The URL is never printed.
database_url() {
  raw=${DATABASE_URL:-}
  [ -n "$raw" ] || fail "DATABASE_URL is empty: the connection Secret's key holds no value"
  case $raw in
    postgres://* | postgresql://*) ;;
    *) fail "DATABASE_URL is not a postgresql:// URL" ;;
  esac
  base=${raw%%\?*}
  query=
  case $raw in *\?*) query=${raw#*\?} ;; esac
  kept=
  schema=
  set -f
  saved_ifs=$IFS
  IFS='&'
  for pair in $query; do
    case ${pair%%=*} in
      schema) schema=${pair#*=} ;;
      host | hostaddr | port | dbname | user | password | passfile | channel_binding | \
      connect_timeout | client_encoding | options | application_name | \
      fallback_application_name | keepalives | keepalives_idle | keepalives_interval | \
      keepalives_count | tcp_user_timeout | sslmode | sslnegotiation | sslcompression | \
      sslcert | sslkey | sslpassword | sslcertmode | sslrootcert | sslcrl | sslcrldir | \
      sslsni | requirepeer | require_auth | ssl_min_protocol_version | \
      ssl_max_protocol_version | gssencmode | krbsrvname | gsslib | gssdelegation | \
      service | target_session_attrs | load_balance_hosts)
        kept=${kept:+$kept&}$pair ;;
      *) ;;
    esac
  done
  IFS=$saved_ifs
  set +f
  url=$base${kept:+?$kept}
  if [ -n "$schema" ]; then
    case $schema in
      *[!A-Za-z0-9_-]*)
        fail "the schema parameter of DATABASE_URL may hold only letters, digits, _ and - here"
        ;;
    esac
    PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c search_path=\"$schema\""
    export PGOPTIONS
  else
    schema=public
  fi
  export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-30}"
}

# Runs psql with $@ after the connection, its errors kept in $work/errors (and the log).
# Returns psql's exit status.
run_psql() {
  set +e
  psql -X -q -v ON_ERROR_STOP=1 --no-password -d "$url" "$@" 2>"$work/errors"
  rc=$?
  set -e
  cat "$work/errors" >&2
  return $rc
}

# The tail of what psql said on stderr, on one line, short enough for a termination message.
psql_said() {
  tail -c 1500 "$work/errors" | tr '\n' ' ' | sed 's/  */ /g'
}
"""


# Every migration listed must be applied (a finished row in _prisma_migrations, not rolled
# back), listed newest first, and no applied migration may be newer than the oldest listed one
# without being listed too: rolling back underneath a later migration would leave the schema
# in a state no migration describes. Read-only; the values arrive through psql variables.
MIGRATIONS_CHECK_SQL = r"""SELECT
  pg_catalog.set_config('rollback.migrations', :'rollback_migrations', true),
  pg_catalog.set_config('rollback.schema', :'rollback_schema', true) \gset rollback_ignored_
DO $rollback$
DECLARE
  wanted text[] := pg_catalog.string_to_array(
    pg_catalog.current_setting('rollback.migrations'), ' ');
  tbl text := pg_catalog.format(
    '%I._prisma_migrations', pg_catalog.current_setting('rollback.schema'));
  missing text;
  newer text;
BEGIN
  IF pg_catalog.to_regclass(tbl) IS NULL THEN
    RAISE EXCEPTION 'no table % in this database: is this the Prisma database (and schema)?',
      tbl;
  END IF;
  IF wanted IS DISTINCT FROM (
    SELECT pg_catalog.array_agg(w ORDER BY w DESC) FROM pg_catalog.unnest(wanted) AS w
  ) THEN
    RAISE EXCEPTION 'database.migrateDown.migrations must be listed newest first: %',
      pg_catalog.array_to_string(wanted, ', ');
  END IF;
  EXECUTE pg_catalog.format(
    'SELECT pg_catalog.string_agg(w, '', '') FROM pg_catalog.unnest($1) AS w WHERE NOT EXISTS '
    '(SELECT 1 FROM %s p WHERE p.migration_name = w AND p.finished_at IS NOT NULL '
    'AND p.rolled_back_at IS NULL)', tbl) INTO missing USING wanted;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'not applied, so not rolled back: % (no finished row in %)', missing, tbl;
  END IF;
  EXECUTE pg_catalog.format(
    'SELECT pg_catalog.string_agg(p.migration_name, '', '' ORDER BY p.migration_name) FROM %s p '
    'WHERE p.finished_at IS NOT NULL AND p.rolled_back_at IS NULL '
    'AND p.migration_name <> ALL ($1) AND p.migration_name > $2', tbl)
    INTO newer USING wanted, wanted[pg_catalog.array_length(wanted, 1)];
  IF newer IS NOT NULL THEN
    RAISE EXCEPTION 'applied after the oldest migration to roll back, but not listed: % '
      '(list every migration to roll back, newest first)', newer;
  END IF;
END
$rollback$;
"""

_FORGET_MIGRATION_SQL = """DELETE FROM :"rollback_schema"._prisma_migrations
 WHERE migration_name = :'rollback_migration_{index}';
"""


def write_sh(path: str, text: str) -> str:
    """A shell command that writes `text` to `path` (under $work) exactly."""
    return f'printf %s {sh(text)} >"$work/{path}"'


def check_down_files_sh(spec: MigrateDownSpec, root: str) -> str:
    """Every listed migration has its down.sql, and each can run in one transaction: checked
    for all of them before anything is sent to the database."""
    lines = ["missing="]
    for migration in spec.migrations:
        path = sh(spec.down_sql_path(migration, root))
        lines.append(f"[ -f {path} ] || missing=${{missing:+$missing, }}{sh(migration)}")
    lines.append(
        '[ -z "$missing" ] || fail '
        + sh(f"no down.sql in {spec.source} for: ")
        + '"$missing"'
        + sh(f" (expected {_expected_layout(spec)}); nothing was changed")
    )
    for migration in spec.migrations:
        path = sh(spec.down_sql_path(migration, root))
        lines.append(f"one_transaction_only {path} {sh(f'the down.sql of {migration}')}")
    return "\n".join(lines)


def _expected_layout(spec: MigrateDownSpec) -> str:
    if spec.configmap is not None:
        return f"a key <migration>{CONFIGMAP_KEY_SUFFIX} for each"
    return "<path>/<migration>/down.sql for each"


def migration_variables(spec: MigrateDownSpec) -> str:
    """psql -v options naming the migrations: psql quotes them into the SQL."""
    words = ["-v", sh("rollback_migrations=" + " ".join(spec.migrations))]
    for index, migration in enumerate(spec.migrations, 1):
        words += ["-v", sh(f"rollback_migration_{index}={migration}")]
    return " ".join(words)


def migrate_down_script(spec: MigrateDownSpec, root: str = MIGRATIONS_DIR) -> str:
    """The MigrateDatabaseDown Job: each down.sql, newest first, and the deletion of its
    `_prisma_migrations` row, in one transaction (psql --single-transaction, ON_ERROR_STOP):
    either every listed migration is rolled back, or none is."""
    files = []
    for index, migration in enumerate(spec.migrations, 1):
        down = sh(spec.down_sql_path(migration, root))
        files.append(f'-f {down} -f "$work/forget-{index}.sql"')
    names = ", ".join(spec.migrations)
    return "\n".join(
        [
            COMMON,
            check_down_files_sh(spec, root),
            "database_url",
            write_sh("check.sql", MIGRATIONS_CHECK_SQL),
            *(
                write_sh(f"forget-{index}.sql", _FORGET_MIGRATION_SQL.format(index=index))
                for index in range(1, len(spec.migrations) + 1)
            ),
            f"echo {sh(f'rolling back {len(spec.migrations)} migration(s): {names}')}",
            'if run_psql --single-transaction -o /dev/null -v rollback_schema="$schema" '
            + migration_variables(spec)
            + ' -f "$work/check.sql" '
            + " ".join(files)
            + "; then",
            "  say "
            + sh(f"rolled back {len(spec.migrations)} migration(s), newest first: {names}")
            + '" (down.sql run and _prisma_migrations rows deleted in schema $schema, in one '
            'transaction)"',
            "else",
            "  rc=$?",
            '  [ "$rc" -ne 2 ] || fail "the connection to the database failed or was lost: '
            "the transaction was not committed unless the log says otherwise; check "
            '_prisma_migrations before anything else. psql said: $(psql_said)"',
            '  fail "migrate down failed and its transaction was rolled back: the schema and '
            '_prisma_migrations are as they were. psql said: $(psql_said)"',
            "fi",
            "",
        ]
    )


def schemas_check_sh(dump: str, label: str, schemas: Sequence[str]) -> str:
    """The schemas a dump creates must be among those the restore drops first: any other
    one would still exist, and `CREATE SCHEMA` would fail half-way through the restore.
    `label` names the dump in messages: one shell word, as the script should expand it
    (`sh("backup x.sql")`, or `'"backup $chosen"'` for the file the script chose)."""
    allowed = " ".join(schemas)
    return "\n".join(
        [
            "set +e",
            f"created=$(sed -n 's/^CREATE SCHEMA \\(IF NOT EXISTS \\)\\{{0,1\\}}"
            f"\\([^ ;]*\\).*/\\2/p' {dump})",
            "rc=$?",
            "set -e",
            f'[ "$rc" -eq 0 ] || fail {sh("could not read ")}{label}',
            "extra=",
            "set -f",
            "for created_schema in $created; do",
            f'  case " {allowed} " in',
            '    *" $created_schema "*) ;;',
            "    *) extra=${extra:+$extra, }$created_schema ;;",
            "  esac",
            "done",
            "set +f",
            '[ -z "$extra" ] || fail '
            + label
            + sh(" creates schema(s) ")
            + '"$extra"'
            + sh(
                f" that database.restore.schemas ({', '.join(schemas)}) does not list: the "
                "restore drops and recreates only the listed schemas, so list every schema "
                "the dump creates"
            ),
        ]
    )


_DUMP_READ_SQL = "SELECT pg_catalog.set_config('rollback.dump_read', 'complete', true);\n"
_DUMP_READ_CHECK_SQL = """DO $rollback$
BEGIN
  IF pg_catalog.current_setting('rollback.dump_read', true) IS DISTINCT FROM 'complete' THEN
    RAISE EXCEPTION 'the dump was not read to its end; nothing is committed';
  END IF;
END
$rollback$;
"""


def restore_prepare_sql(schemas: Sequence[str]) -> str:
    """Empties the application: every listed schema dropped with all it holds, inside the
    restore's transaction, so that the dump loads as into a new database and an error puts
    everything back."""
    drops = "".join(f"DROP SCHEMA IF EXISTS {sql_identifier(s)} CASCADE;\n" for s in schemas)
    return "SET LOCAL client_min_messages = warning;\n" + drops


# pg_dump leaves out the public schema, which every new database has: the restore makes it
# again as PostgreSQL 15 and later create it. A dump that creates it itself is left to do so.
RECREATE_PUBLIC_SQL = """CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""

# A dump made with --clean starts with DROP statements for what it holds (before its first
# object, whose "-- Name:" header ends them). The schemas are already empty, so they could
# only fail: each is turned into a comment, which keeps psql's line numbers the file's own.
_SKIP_CLEAN_SECTION_SED = (
    "sed -e '/^-- Name: /,$b' -e '/^-- Data for Name: /,$b' "
    "-e 's/^DROP /-- dropped with its schema: &/' "
    "-e 's/^ALTER .* DROP /-- dropped with its schema: &/'"
)


def restore_script(restore: RestoreSpec, file: str, sha256: str) -> str:
    """The RestoreDatabase Job. The file is read once, into the Job's own copy, which every
    check and the load read: it must be the file Preflight measured and the DBA approved
    (sha256), run in one transaction, and create no schema outside `schemas`. Then one psql
    --single-transaction, ON_ERROR_STOP: drop the schemas, load the dump, and check the dump
    was read to its end; any error rolls everything back."""
    schemas = restore.schemas
    directory = restore.backup.directory
    recreate_public = PUBLIC in schemas
    lines = [
        COMMON,
        f"source={sh(directory)}/{sh(file)}",
        f"expected={sh(sha256)}",
        '[ -f "$source" ] || fail '
        + sh(
            f"backup file {file} is gone from {directory} (claim {restore.backup.claim_name}) "
            "since Preflight found it; nothing was restored"
        ),
        'echo "reading $source once into the Job\'s own copy, and checking its sha256"',
        'dump="$work/backup"',
        'cp -- "$source" "$dump" || fail '
        + sh(f"could not read backup {file}; nothing was restored"),
        'sum=$(sha256sum <"$dump")',
        "sum=${sum%% *}",
        '[ "$sum" = "$expected" ] || fail '
        + sh(f"backup file {file} has changed since Preflight: its sha256 is now ")
        + '"$sum"'
        + sh(f", not {sha256} as recorded in status.backup; nothing was restored"),
        f'one_transaction_only "$dump" {sh(f"backup {file}")}',
        schemas_check_sh('"$dump"', sh(f"backup {file}"), schemas),
        "database_url",
        write_sh("prepare.sql", restore_prepare_sql(schemas)),
        write_sh("public.sql", RECREATE_PUBLIC_SQL),
        write_sh("finish.sql", _DUMP_READ_CHECK_SQL),
        'set -- -f "$work/prepare.sql"',
    ]
    if recreate_public:
        lines += [
            "set +e",
            'grep -q -i -E \'^CREATE SCHEMA (IF NOT EXISTS )?"?public"?;\' "$dump"',
            "rc=$?",
            "set -e",
            'case $rc in 0) ;; 1) set -- "$@" -f "$work/public.sql" ;; '
            + "*) fail "
            + sh(f"could not read backup {file}")
            + " ;; esac",
        ]
    summary = f"restored {file} (sha256 {sha256}) into schema(s) {', '.join(schemas)}"
    lines += [
        "echo " + sh(f"restoring {file} into schema(s) {', '.join(schemas)}, in one transaction"),
        "if { "
        + _SKIP_CLEAN_SECTION_SED
        + ' "$dump" && printf %s '
        + sh(_DUMP_READ_SQL)
        + '; } | run_psql --single-transaction -o /dev/null "$@" -f - -f "$work/finish.sql"; then',
        f"  say {sh(summary + ', in one transaction')}",
        "else",
        "  rc=$?",
        '  [ "$rc" -ne 2 ] || fail "the connection to the database failed or was lost during '
        "the restore: the transaction was not committed unless the log says otherwise; check "
        'the data before anything else. psql said: $(psql_said)"',
        '  fail "the restore failed and its transaction was rolled back: the database is as '
        "it was before the restore. psql said (line numbers are the dump file's): "
        '$(psql_said)"',
        "fi",
        "",
    ]
    return "\n".join(lines)
