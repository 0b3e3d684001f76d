"""spec.database parsing, the Jobs' scripts' quoting and URL handling, the steps' Job specs.

The scripts run for real against PostgreSQL in tests/e2e/test_database_scripts.py; here `sh`
runs the parts that need no database: quoting, file resolution failures, Prisma URLs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollback_operator.admin_policy import DEFAULT_POLICY, AdminPolicy
from rollback_operator.database import inspection, scripts
from rollback_operator.database import spec as db
from rollback_operator.database.jobs import database_address
from rollback_operator.database.preflight import inspection_template
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, SecretKeyRef, StepName
from rollback_operator.status import Status
from rollback_operator.steps.base import Approval, Fail, NeedsApproval, StepContext
from rollback_operator.steps.gates import gates_record
from rollback_operator.steps.jobs import job_manifest, job_name
from rollback_operator.steps.migrate_database_down import (
    REPLACED_BY_RESTORE,
    MigrateDatabaseDown,
    migrate_down_template,
)
from rollback_operator.steps.restore_database import RestoreDatabase, restore_template
from tests.e2e.support import run_job_script

CONNECTION = {"secretRef": {"name": "lawyershub-db", "key": "DATABASE_URL"}}
MIGRATE = {
    "migrations": ["20260110094500_user_phone", "20260110093000_add_case_documents"],
    "source": {"configMap": "lawyershub-down-migrations"},
}
RESTORE = {
    "backup": {
        "claimName": "db-backups",
        "directory": "/backups",
        "file": "pre-golive-snapshot-YYYYMMDD.sql",
        "notAfter": "2026-01-10",
    }
}
SECRET = "postgresql://app:s3cret-Pa55@db.internal:5432/lawyershub"


def request_spec(**database: Any) -> RollbackSpec:
    return RollbackSpec.parse(
        {
            "reason": "data corrupt",
            "trigger": "Manual",
            "traffic": {"ingresses": ["site"], "maintenanceBackend": {"service": "m", "port": 80}},
            "workloads": [{"deployment": "backend"}],
            "database": {"connection": CONNECTION, **database},
        }
    )


def sh(script: str, tmp_path: Path, **env: str) -> tuple[int, str, str]:
    """Runs a script as a Job would, its termination message in a file; returns (rc, message,
    everything printed)."""
    result = run_job_script(script, tmp_path, tmp_path, env, timeout=30)
    return result.returncode, result.message, result.stdout + result.stderr


# --- parsing


def test_parse_applies_the_defaults() -> None:
    spec = db.DatabaseSpec.parse(
        {"connection": CONNECTION, "migrateDown": MIGRATE, "restore": RESTORE}
    )
    assert spec.connection == SecretKeyRef("lawyershub-db", "DATABASE_URL")
    assert spec.migrate_down == db.MigrateDownSpec(
        migrations=("20260110094500_user_phone", "20260110093000_add_case_documents"),
        configmap="lawyershub-down-migrations",
        source_image=None,
        source_path=None,
        image="postgres:16",
        command=None,
        timeout_seconds=1800,
    )
    assert spec.restore == db.RestoreSpec(
        backup=db.BackupSpec(
            "db-backups", "/backups", "pre-golive-snapshot-YYYYMMDD.sql", "2026-01-10"
        ),
        image="postgres:16",
        require_approval=True,
        schemas=("public",),
        timeout_seconds=1800,
    )
    assert spec.restore.backup.is_pattern


def test_parse_keeps_what_is_written() -> None:
    spec = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "migrateDown": {
                "migrations": ["20260110093000_a"],
                "source": {"image": "registry.example/backend:1", "path": "/app/prisma/migrations"},
                "image": "registry.example/psql:16",
                "command": ["node", "rollback.js"],
                "timeout": "90s",
            },
            "restore": {
                "backup": {"claimName": "b", "directory": "/srv/dumps/", "file": "x.sql"},
                "image": "postgres:17",
                "requireApproval": False,
                "schemas": ["public", "audit"],
                "timeout": "1h30m",
            },
        }
    )
    assert spec.migrate_down is not None and spec.restore is not None
    assert spec.migrate_down.source_image == "registry.example/backend:1"
    assert spec.migrate_down.command == ("node", "rollback.js")
    assert spec.migrate_down.timeout_seconds == 90
    assert spec.migrate_down.source == "/app/prisma/migrations in image registry.example/backend:1"
    assert spec.restore.backup.directory == "/srv/dumps"
    assert not spec.restore.backup.is_pattern
    assert (spec.restore.require_approval, spec.restore.schemas) == (False, ("public", "audit"))
    assert spec.restore.timeout_seconds == 5400


@pytest.mark.parametrize(
    ("section", "value"),
    [("migrateDown", {"migrations": ["../../etc/passwd"]}), ("restore", {"schemas": ['x"y']})],
)
def test_parse_refuses_names_that_could_escape(section: str, value: dict[str, Any]) -> None:
    """The CRD refuses these already; parsing never lets one reach a path or a statement."""
    raw = {"migrateDown": MIGRATE, "restore": RESTORE}[section]
    with pytest.raises(ValueError, match="not a"):
        db.DatabaseSpec.parse({"connection": CONNECTION, section: {**raw, **value}})


def test_migrate_down_is_replaced_by_a_restore() -> None:
    both = db.DatabaseSpec.parse(
        {"connection": CONNECTION, "migrateDown": MIGRATE, "restore": RESTORE}
    )
    assert not both.runs_migrate_down
    assert db.DatabaseSpec.parse(
        {"connection": CONNECTION, "migrateDown": MIGRATE}
    ).runs_migrate_down
    step = MigrateDatabaseDown()
    assert step.skip_reason(request_spec(migrateDown=MIGRATE, restore=RESTORE), None) == (
        REPLACED_BY_RESTORE
    )
    assert step.skip_reason(request_spec(migrateDown=MIGRATE), None) is None
    assert step.skip_reason(request_spec(restore=RESTORE), None) == "no spec.database.migrateDown"
    assert RestoreDatabase().skip_reason(request_spec(restore=RESTORE), None) is None
    assert RestoreDatabase().skip_reason(request_spec(migrateDown=MIGRATE), None) == (
        "no spec.database.restore"
    )


def test_configmap_keys_and_image_paths() -> None:
    spec = db.DatabaseSpec.parse({"connection": CONNECTION, "migrateDown": MIGRATE}).migrate_down
    assert spec is not None
    assert db.configmap_key("20260110093000_a") == "20260110093000_a.down.sql"
    assert spec.down_sql_path("20260110093000_a") == "/migrations/20260110093000_a.down.sql"
    image = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "migrateDown": {**MIGRATE, "source": {"image": "app:1", "path": "/app/migrations"}},
        }
    ).migrate_down
    assert image is not None
    assert image.down_sql_path("20260110093000_a") == "/migrations/20260110093000_a/down.sql"


def test_parse_inspection_reads_the_last_line() -> None:
    found = inspection.parse_inspection(
        'checking\n{"server":"16.4","backup":{"file":"a.sql","sizeBytes":12,'
        '"sha256":"ab","considered":3,"later":1}}\n'
    )
    assert found == inspection.Inspection(inspection.BackupFile("a.sql", 12, "ab", 3, 1), "16.4")
    assert inspection.parse_inspection('{"server":"15.1"}') == inspection.Inspection(None, "15.1")
    with pytest.raises(ValueError):
        inspection.parse_inspection("psql: error: connection refused")


# --- quoting


@pytest.mark.parametrize(
    "text", ["plain", "it's", 'say "hi"', "$(touch pwned)", "`touch pwned`", "a b\nc", "*"]
)
def test_shell_words_stay_one_literal_word(text: str, tmp_path: Path) -> None:
    rc, _, out = sh(f"printf '%s' {scripts.sh(text)}", tmp_path)
    assert (rc, out) == (0, text)
    assert not (tmp_path / "pwned").exists()


def test_sql_quoting() -> None:
    assert scripts.sql_identifier('we"ird') == '"we""ird"'
    assert scripts.sql_literal("it's") == "'it''s'"
    assert scripts.restore_prepare_sql(["public", "audit"]) == (
        "SET LOCAL client_min_messages = warning;\n"
        'DROP SCHEMA IF EXISTS "public" CASCADE;\n'
        'DROP SCHEMA IF EXISTS "audit" CASCADE;\n'
    )


def test_a_hostile_file_name_is_only_ever_a_name(tmp_path: Path) -> None:
    name = "it's $(touch pwned) `touch pwned2`; rm -rf x.sql"
    restore = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "restore": {"backup": {"claimName": "c", "directory": str(tmp_path), "file": name}},
        }
    ).restore
    assert restore is not None
    rc, message, _ = sh(scripts.restore_script(restore, name, "0" * 64), tmp_path)
    assert rc == 1
    assert message.startswith(f"backup file {name} is gone from {tmp_path}")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_a_glob_in_the_pattern_matches_only_itself(tmp_path: Path) -> None:
    (tmp_path / "snapshot-20260101.sql").write_text("x")
    spec = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "restore": {
                "backup": {"claimName": "c", "directory": str(tmp_path), "file": "*-YYYYMMDD.sql"}
            },
        }
    )
    rc, message, _ = sh(inspection.inspect_script(spec), tmp_path, DATABASE_URL=SECRET)
    assert rc == 1
    assert message.startswith("no backup matching *-YYYYMMDD.sql in")


# --- the connection URL


def url_of(raw: str, tmp_path: Path) -> tuple[int, str, str]:
    """What `database_url` makes of a DATABASE_URL: (rc, "url|schema|PGOPTIONS", message)."""
    script = scripts.COMMON + 'database_url\nprintf "%s|%s|%s" "$url" "$schema" "${PGOPTIONS:-}"'
    rc, message, out = sh(script, tmp_path, DATABASE_URL=raw)
    return rc, out, message


@pytest.mark.parametrize(
    ("raw", "url", "schema", "options"),
    [
        (SECRET, SECRET, "public", ""),
        (f"{SECRET}?schema=lawyershub", SECRET, "lawyershub", '-c search_path="lawyershub"'),
        (
            f"{SECRET}?connection_limit=5&schema=Legal_Docs&sslmode=require&pgbouncer=true"
            "&pool_timeout=10&application_name=api",
            f"{SECRET}?sslmode=require&application_name=api",
            "Legal_Docs",
            '-c search_path="Legal_Docs"',
        ),
        (
            "postgres://u:p@h/d?connect_timeout=5",
            "postgres://u:p@h/d?connect_timeout=5",
            "public",
            "",
        ),
    ],
)
def test_prisma_urls_become_urls_psql_accepts(
    raw: str, url: str, schema: str, options: str, tmp_path: Path
) -> None:
    rc, out, message = url_of(raw, tmp_path)
    assert rc == 0, message
    assert out == f"{url}|{schema}|{options}"


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("", "DATABASE_URL is empty"),
        ("mysql://u:s3cret-Pa55@h/d", "DATABASE_URL is not a postgresql:// URL"),
        (f"{SECRET}?schema=a;b", "the schema parameter of DATABASE_URL may hold only"),
    ],
)
def test_bad_urls_are_refused_without_showing_them(
    raw: str, complaint: str, tmp_path: Path
) -> None:
    rc, out, message = url_of(raw, tmp_path)
    assert rc == 1
    assert message.startswith(complaint)
    assert "s3cret" not in out + message


# --- the Jobs


def manifest(template: Any) -> dict[str, Any]:
    return job_manifest("lawyershub", "golive", "uid-1", StepName.RESTORE_DATABASE, template)


def test_the_restore_job_gets_the_url_only_through_a_secret_key_ref() -> None:
    spec = db.DatabaseSpec.parse({"connection": CONNECTION, "restore": RESTORE})
    assert spec.restore is not None
    backup = {"file": "pre-golive-snapshot-20260109.sql", "sha256": "ab" * 32}
    job = manifest(restore_template(spec, spec.restore, backup))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": CONNECTION["secretRef"]}} in (
        container["env"]
    )
    assert all("value" not in e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert container["image"] == "postgres:16"
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert "source=/backups/pre-golive-snapshot-20260109.sql\n" in container["command"][2]
    assert "ab" * 32 in container["command"][2]
    assert {"name": "backups", "mountPath": "/backups", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {
        "name": "backups",
        "persistentVolumeClaim": {"claimName": "db-backups", "readOnly": True},
    } in pod["volumes"]
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    assert job["spec"]["backoffLimit"] == 0
    assert "ownerReferences" not in job["metadata"]


def test_the_migrate_down_job_from_an_image_copies_the_migrations_first() -> None:
    spec = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "migrateDown": {**MIGRATE, "source": {"image": "app:1", "path": "/app/migrations/"}},
        }
    )
    assert spec.migrate_down is not None
    pod = manifest(migrate_down_template(spec, spec.migrate_down))["spec"]["template"]["spec"]
    (copy,) = pod["initContainers"]
    assert copy["image"] == "app:1"
    assert copy["command"] == ["cp", "-R", "/app/migrations/.", "/migrations/"]
    assert copy["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "migrations", "emptyDir": {}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ROLLBACK_MIGRATIONS"] == " ".join(MIGRATE["migrations"])


def test_a_team_migrator_runs_its_own_command() -> None:
    spec = db.DatabaseSpec.parse(
        {
            "connection": CONNECTION,
            "migrateDown": {
                "migrations": ["20260110093000_a"],
                "image": "registry.example/migrator:2",
                "command": ["node", "down.js"],
            },
        }
    )
    assert spec.migrate_down is not None
    container = manifest(migrate_down_template(spec, spec.migrate_down))["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert (container["image"], container["command"]) == (
        "registry.example/migrator:2",
        ["node", "down.js"],
    )
    # Nothing for Preflight's Job to check with psql in an image that may have none.
    assert inspection_template(spec) is None


def test_the_inspection_mounts_what_the_restore_and_the_migrate_down_need() -> None:
    spec = db.DatabaseSpec.parse({"connection": CONNECTION, "migrateDown": MIGRATE})
    template = inspection_template(spec)
    assert template is not None
    pod = manifest(template)["spec"]["template"]["spec"]
    assert {"name": "migrations", "configMap": {"name": "lawyershub-down-migrations"}} in pod[
        "volumes"
    ]
    restore = inspection_template(
        db.DatabaseSpec.parse({"connection": CONNECTION, "restore": RESTORE})
    )
    assert restore is not None
    assert restore.image == "postgres:16"
    assert [v["name"] for v in restore.volumes] == ["backups"]


def test_no_secret_value_is_in_any_script() -> None:
    """The scripts are in the Job spec for anyone to read: they take the URL from the env."""
    spec = db.DatabaseSpec.parse(
        {"connection": CONNECTION, "migrateDown": MIGRATE, "restore": RESTORE}
    )
    assert spec.restore is not None and spec.migrate_down is not None
    for script in (
        inspection.inspect_script(spec),
        scripts.restore_script(spec.restore, "a.sql", "0" * 64),
        scripts.migrate_down_script(spec.migrate_down),
    ):
        assert "DATABASE_URL" in script
        assert "lawyershub-db" not in script  # not even the Secret's name is needed
        assert "set -x" not in script


def test_the_example_request_is_consistent_with_its_configmap() -> None:
    """examples/rollback-database.yaml: both parts, and a down.sql key for every migration."""
    path = Path(__file__).resolve().parents[2] / "examples" / "rollback-database.yaml"
    request, configmap = yaml.safe_load_all(path.read_text())
    spec = db.DatabaseSpec.parse(request["spec"]["database"])
    assert spec.restore is not None and spec.migrate_down is not None
    assert spec.migrate_down.configmap == configmap["metadata"]["name"]
    assert sorted(configmap["data"]) == sorted(
        db.configmap_key(m) for m in spec.migrate_down.migrations
    )
    assert list(spec.migrate_down.migrations) == sorted(spec.migrate_down.migrations, reverse=True)


class SecretsOnly:
    """A Kubernetes client that only reads the connection Secret (for what a DBA approves)."""

    url = "postgresql://app:s3cr3t-pw@db.lawyershub.svc:5432/lawyershub?sslmode=require"

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return self.url if (name, key) == ("lawyershub-db", "DATABASE_URL") else None

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None


def step_context(
    spec: RollbackSpec, sections: dict[str, Any], approval: Approval | None = None
) -> StepContext:
    """A context whose Kubernetes client only reads the connection Secret: the cases below
    decide without anything else."""
    now = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)
    return StepContext(
        kube=SecretsOnly(),  # type: ignore[arg-type]
        approval=approval,
        namespace="lawyershub",
        request="golive",
        spec=spec,
        ledger=StatusLedger(Status(sections=sections)),
        step_started_at=now,
        now=lambda: now,
        request_uid="uid-1",
    )


BACKUP = {
    "claimName": "db-backups",
    "directory": "/backups",
    "file": "pre-golive-snapshot-20260109.sql",
    "sizeBytes": 4096,
    "sha256": "ab" * 32,
}


RESTORE_SUBJECT = (
    "database db.lawyershub.svc:5432/lawyershub; schemas public; file "
    f"/backups/pre-golive-snapshot-20260109.sql; sha256 {'ab' * 32}; image postgres:16"
)


def test_the_restore_waits_for_a_dba_before_starting_anything() -> None:
    ctx = step_context(request_spec(restore=RESTORE), {"backup": BACKUP})
    outcome = RestoreDatabase().run(ctx)
    assert isinstance(outcome, NeedsApproval)
    assert outcome.subject == RESTORE_SUBJECT
    assert len(outcome.digest) == 16 and f"RestoreDatabase@{outcome.digest}" in outcome.message
    assert outcome.message.startswith(
        "waiting for a member of group dba (asked by the built-in default) to approve the "
        f"restore: {RESTORE_SUBJECT}. They check it, then run `kubectl rollback approve golive "
        "RestoreDatabase -n lawyershub`"
    )
    assert "s3cr3t" not in outcome.message + outcome.subject  # the URL's password stays out
    assert ctx.ledger.section("jobs") is None
    assert RestoreDatabase().plan(ctx) == (
        f"would restore pre-golive-snapshot-20260109.sql (4096 bytes, sha256 {'ab' * 32}, claim "
        "db-backups) into schema(s) public, in one transaction, after a member of group dba "
        f"approves, with Job {job_name('golive', 'uid-1', 'db-restore')}"
    )


def test_require_approval_false_does_not_remove_the_admins_gate() -> None:
    restore = {**RESTORE, "requireApproval": False}
    gates = gates_record(DEFAULT_POLICY, {StepName.RESTORE_DATABASE: False})
    for sections in ({"backup": BACKUP}, {"backup": BACKUP, "gates": gates}):
        outcome = RestoreDatabase().run(step_context(request_spec(restore=restore), sections))
        assert isinstance(outcome, NeedsApproval), sections


def test_without_any_gate_the_restore_plans_no_wait() -> None:
    """An admin turned the gate off (RollbackPolicy approvals: []) and the request asks none."""
    restore = {**RESTORE, "requireApproval": False}
    gates = gates_record(AdminPolicy.parse({"approvals": []}), {StepName.RESTORE_DATABASE: False})
    assert gates == []
    ctx = step_context(request_spec(restore=restore), {"backup": BACKUP, "gates": gates})
    assert (
        RestoreDatabase()
        .plan(ctx)
        .endswith(f"in one transaction, with Job {job_name('golive', 'uid-1', 'db-restore')}")
    )


def test_an_approval_of_another_file_is_void() -> None:
    asked = RestoreDatabase().run(step_context(request_spec(restore=RESTORE), {"backup": BACKUP}))
    assert isinstance(asked, NeedsApproval)
    other = {**BACKUP, "sha256": "cd" * 32}
    approval = Approval(by="dba-alice", at="2026-01-10T03:00:00.000Z", digest=asked.digest)
    ctx = step_context(request_spec(restore=RESTORE), {"backup": other}, approval)
    outcome = RestoreDatabase().run(ctx)
    assert isinstance(outcome, NeedsApproval)
    assert outcome.voided.startswith("the approval by dba-alice of golive RestoreDatabase@")
    assert outcome.digest != asked.digest and "cd" * 32 in outcome.subject
    assert ctx.ledger.section("jobs") is None


def test_the_migrate_down_waits_for_a_dba_by_default() -> None:
    spec = request_spec(migrateDown=MIGRATE)
    outcome = MigrateDatabaseDown().run(step_context(spec, {}))
    assert isinstance(outcome, NeedsApproval)
    assert outcome.message.startswith(
        "waiting for a member of group dba (asked by the built-in default) to approve the "
        "migrate-down: database db.lawyershub.svc:5432/lawyershub; migrations "
    )


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://u:pw@db:5432/app", "db:5432/app"),
        ("postgres://db.internal/app?password=pw", "db.internal/app"),
        ("host=db port=5433 dbname=app password=pw", "db:5433/app"),
        ("not a url", "the database of Secret lawyershub-db key DATABASE_URL"),
    ],
)
def test_what_a_dba_approves_names_the_database_never_its_password(url: str, address: str) -> None:
    ctx = step_context(request_spec(restore=RESTORE), {})
    ctx.kube.url = url  # type: ignore[attr-defined]
    spec = db.DatabaseSpec.parse({"connection": CONNECTION, "restore": RESTORE})
    assert database_address(ctx, spec) == address


def test_without_a_recorded_backup_nothing_is_restored() -> None:
    outcome = RestoreDatabase().run(step_context(request_spec(restore=RESTORE), {}))
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith("status.backup names no file")
