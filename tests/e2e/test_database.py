"""The database steps end to end: the operator process, the local cluster's job runner (Job pods
really run psql on this machine), a real PostgreSQL and real pg_dump files on a hostPath
PersistentVolume.

The database is the sample application's: seeded as before go-live, dumped as the pre-go-live
snapshot, then migrated and corrupted as a bad release would. Each test compares table contents
and the whole schema (pg_dump --schema-only) before and after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.lawyershub_db import (
    MIGRATIONS,
    NEWEST_FIRST,
    PRE_GOLIVE_SQL,
    contents,
    corrupt,
    go_live,
)
from standins.local import wait_until
from standins.postgres import Database
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    conditions,
    create_request,
    events_for,
    get_request,
    ledger,
    on_maintenance,
    run_request,
    snapshot,
    wait_outcome,
)
from tests.e2e.people import (
    DBA,
    DEVELOPER,
    NO_GATES,
    QA,
    REQUESTING_DBA,
    admin_settings,
    approve,
    as_person,
    install_approval_policy,
    may_use,
)
from tests.e2e.postgres import database_fixture, postgres_server_fixture  # noqa: F401 (fixtures)
from tests.e2e.support import assert_admitted_as_restricted, bound_claim, needs_job_runner

pytestmark = [pytest.mark.e2e, needs_job_runner]

SECRET = "lawyershub-db"
CLAIM = "db-backups"
CONFIGMAP = "lawyershub-down-migrations"
SNAPSHOT = "pre-golive-snapshot-YYYYMMDD.sql"
CHOSEN = "pre-golive-snapshot-20260109.sql"
STEP_LABEL = f"{GROUP}/step"


@dataclass
class Backups:
    """The backups' directory on this machine, seen by the Jobs through claim db-backups."""

    path: Path

    def dump(self, db: Database, name: str = CHOSEN, *extra: str) -> Path:
        dump = db.dump(self.path / name, *extra)
        dump.chmod(0o644)
        return dump

    def sha256(self, name: str = CHOSEN) -> str:
        return hashlib.sha256((self.path / name).read_bytes()).hexdigest()


@pytest.fixture
def backups(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Backups]:
    """Claim db-backups, bound to a hostPath PersistentVolume on `tmp_path/backups` (created
    bound, as the local cluster runs no volume binder: see support.bound_claim)."""
    path = tmp_path / "backups"
    path.mkdir()
    path.chmod(0o755)
    with bound_claim(api, namespace, CLAIM, path, "ReadOnlyMany"):
        yield Backups(path)


@pytest.fixture
def db(api: client.ApiClient, app: str, database: Database) -> Database:
    """The application's database, seeded as before go-live, its URL in Secret lawyershub-db
    as Prisma writes it (with ?schema= and pool settings that psql does not know)."""
    database.psql(PRE_GOLIVE_SQL)
    url = f"{database.url}?schema=public&connection_limit=5&pool_timeout=10"
    client.CoreV1Api(api).create_namespaced_secret(
        app, {"metadata": {"name": SECRET}, "stringData": {"DATABASE_URL": url}}
    )
    return database


def restore_section(**restore: Any) -> dict[str, Any]:
    return {
        "connection": {"secretRef": {"name": SECRET, "key": "DATABASE_URL"}},
        "restore": {
            "backup": {"claimName": CLAIM, "file": SNAPSHOT, "notAfter": "2026-01-10"},
            **restore,
        },
    }


def migrate_section(**migrate: Any) -> dict[str, Any]:
    return {
        "connection": {"secretRef": {"name": SECRET, "key": "DATABASE_URL"}},
        "migrateDown": {"migrations": NEWEST_FIRST, "source": {"configMap": CONFIGMAP}, **migrate},
    }


def down_migrations(api: client.ApiClient, namespace: str, names: list[str]) -> None:
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": CONFIGMAP},
            "data": {f"{name}.down.sql": MIGRATIONS[name][1] for name in names},
        },
    )


def jobs_of(api: client.ApiClient, namespace: str, step: str) -> list[Any]:
    return list(
        client.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector=f"{STEP_LABEL}={step}")
        .items
    )


def slow_down(dump: Path, seconds: int) -> None:
    """Makes a restore of `dump` take `seconds` longer, half-way through loading it."""
    text = dump.read_text()
    marker = "-- Data for Name:"
    assert marker in text
    dump.write_text(text.replace(marker, f"SELECT pg_sleep({seconds});\n{marker}", 1))


def wait_job_running(api: client.ApiClient, namespace: str, step: str) -> Any:
    def running() -> Any:
        found = jobs_of(api, namespace, step)
        return found[0] if found and (found[0].status.active or 0) >= 1 else None

    return wait_until(running, timeout=60, what=f"the {step} Job running")


def start_slow_restore(
    api: client.ApiClient, namespace: str, db: Database, backups: Backups, seconds: int
) -> tuple[Any, Any]:
    """A restore, without approval, of a dump of `db` that takes `seconds` longer to load,
    after `db` was corrupted. Returns its Job once running, and the corrupted contents the
    restore started from (read before it began: its transaction would block the read)."""
    slow_down(backups.dump(db), seconds)
    corrupt(db)
    corrupted = contents(db)
    admin_settings(api, namespace, NO_GATES)
    create_request(api, namespace, "golive", database=restore_section(requireApproval=False))
    return wait_job_running(api, namespace, "RestoreDatabase"), corrupted


# --- restore


def assert_restricted_restore_job(
    api: client.ApiClient, namespace: str, done: dict[str, Any]
) -> None:
    """One restore Job, recorded in the ledger, as Pod Security "restricted" wants it, with the
    URL only by reference, and nothing that would delete it with the request."""
    (job,) = jobs_of(api, namespace, "RestoreDatabase")
    raw = api.sanitize_for_serialization(job)
    assert [j["uid"] for j in done["status"]["jobs"] if j["step"] == "RestoreDatabase"] == [
        raw["metadata"]["uid"]
    ]
    pod = raw["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    account = client.CoreV1Api(api).read_namespaced_service_account(
        pod["serviceAccountName"], namespace
    )
    assert account.automount_service_account_token is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "DATABASE_URL"}},
    } in container["env"]
    assert raw["spec"]["backoffLimit"] == 0 and raw["spec"]["activeDeadlineSeconds"] == 1800
    assert not raw["metadata"].get("ownerReferences")
    # The API server's own Pod Security admission, enforcing "restricted", admits the pod.
    assert_admitted_as_restricted(api, raw["spec"]["template"])


def assert_refused_approvals(kubeconfig: str, namespace: str, requester: client.ApiClient) -> None:
    """The API server refuses the approvals of the waiting restore that are not a DBA's own,
    by another DBA than the requester."""
    # Who may approve: the API server refuses a developer, and a DBA writing another's name.
    with pytest.raises(ApiException) as refused:
        approve(as_person(kubeconfig, DEVELOPER), namespace, "golive", "RestoreDatabase", "dev-dan")
    assert refused.value.status == 403
    assert "only members of group dba may approve RestoreDatabase" in refused.value.body
    with pytest.raises(ApiException) as refused:
        approve(as_person(kubeconfig, DBA), namespace, "golive", "RestoreDatabase", QA[0])
    assert refused.value.status == 403
    assert "approved-by must be your own username, dba-alice" in refused.value.body
    # Four eyes: the requester, a DBA too, cannot approve their own request.
    with pytest.raises(ApiException) as refused:
        approve(requester, namespace, "golive", "RestoreDatabase", REQUESTING_DBA[0])
    assert refused.value.status == 403
    assert (
        "dba-bob created this request (rollback.lawyershub.io/requested-by), so cannot approve "
        "any of its steps" in json.loads(refused.value.body)["message"]
    )
    # Nor can they rewrite who created it.
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(requester).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "golive",
            {"metadata": {"annotations": {f"{GROUP}/requested-by": "someone-else"}}},
        )
    assert "records who created the request" in refused.value.body


def test_a_dba_approved_restore_brings_the_data_back_exactly(
    api: client.ApiClient,
    kubeconfig: str,
    app: str,
    db: Database,
    backups: Backups,
    operator: Operator,
) -> None:
    """Created by a DBA who asks for no approval: the admins' default still has the restore
    wait for a DBA, and another one than the requester."""
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)
    requester = as_person(kubeconfig, REQUESTING_DBA)
    may_use(api, namespace, REQUESTING_DBA[1], (SECRET,), jobs=True)  # as requester-rights asks
    before = contents(db)
    # Several dated snapshots: the newest on or before notAfter (2026-01-10) is the one.
    backups.dump(db, "pre-golive-snapshot-20260105.sql")
    backups.dump(db, CHOSEN)
    (backups.path / "pre-golive-snapshot-20260111.sql").write_text("-- after go-live\n")
    go_live(db)
    corrupt(db)
    corrupted = contents(db)

    create_request(requester, namespace, "golive", database=restore_section(requireApproval=False))
    waiting = wait_outcome(api, namespace, "golive", "AwaitingApproval")

    # Before anything ran: the file was chosen, measured and recorded; the site waits.
    status = waiting["status"]
    size = (backups.path / CHOSEN).stat().st_size
    assert {k: v for k, v in status["backup"].items() if k != "resolvedAt"} == {
        "claimName": CLAIM,
        "directory": "/backups",
        "file": CHOSEN,
        "sizeBytes": size,
        "sha256": backups.sha256(),
    }
    assert (
        "the newest of 2 dated on or before 2026-01-10 (1 later left alone)"
        in (ledger(waiting)["Preflight"]["message"])
    )
    restore = ledger(waiting)["RestoreDatabase"]
    assert restore["state"] == "Running"
    subject = (
        f"database {db.server.host}:{db.server.port}/{db.name}; schemas public; file "
        f"/backups/{CHOSEN}; sha256 {backups.sha256()}; image postgres:16"
    )
    assert restore["approvalSubject"] == subject
    assert restore["message"].startswith(
        "waiting for a member of group dba (asked by the built-in default) to approve the "
        f"restore: {subject}. They check it, then run `kubectl rollback approve golive "
        f"RestoreDatabase -n {namespace}`, which approves RestoreDatabase@"
        f"{restore['approvalDigest']}; the person who created the request cannot"
    )
    assert status["requestedBy"] == REQUESTING_DBA[0]
    assert (
        "approvals: RestoreDatabase by a member of group dba (the built-in default)"
        in (ledger(waiting)["Preflight"]["message"])
    )
    assert ledger(waiting)["MigrateDatabaseDown"]["state"] == "Skipped"
    assert conditions(waiting)["MaintenanceActive"] == "True" and on_maintenance(api, namespace)
    assert jobs_of(api, namespace, "RestoreDatabase") == []
    assert contents(db) == corrupted

    assert_refused_approvals(kubeconfig, namespace, requester)
    assert get_request(api, namespace, "golive")["status"]["phase"] == "AwaitingApproval"
    assert jobs_of(api, namespace, "RestoreDatabase") == []

    approve(as_person(kubeconfig, DBA), namespace, "golive", "RestoreDatabase", DBA[0])
    done = wait_outcome(api, namespace, "golive", "Succeeded", timeout=120)

    assert contents(db) == before
    restored = ledger(done)["RestoreDatabase"]
    assert restored["approvedBy"] == "dba-alice" and restored["approvedAt"]
    assert restored["message"].startswith(
        f"restored {CHOSEN} (sha256 {backups.sha256()}) into schema(s) public, in one transaction"
    )
    assert restored["message"].endswith(", approved by dba-alice)")
    assert not on_maintenance(api, namespace)
    report = client.CoreV1Api(api).read_namespaced_config_map(
        done["status"]["report"]["configMap"], namespace
    )
    text = "".join(report.data.values())
    assert "- **Requested by:** dba-bob (recorded by the API server)" in text
    assert f"RestoreDatabase@{restore['approvalDigest']}, {subject}" in text

    assert_restricted_restore_job(api, namespace, done)

    # The password is nowhere: not in status, Events, the Jobs or the operator's log.
    events = [e.message for e in events_for(api, namespace, "golive")]
    every_job = [
        api.sanitize_for_serialization(j)
        for j in client.BatchV1Api(api).list_namespaced_job(namespace).items
    ]
    for text in (json.dumps(done), json.dumps(events), json.dumps(every_job), operator.logs()):
        assert db.password not in text


def test_an_approval_is_void_when_the_backup_changes_before_the_restore_reads_it(
    api: client.ApiClient,
    kubeconfig: str,
    app: str,
    db: Database,
    backups: Backups,
    operator: Operator,
) -> None:
    """A DBA approves the file they checked; before the restore Job starts, the file is
    replaced (here by a dump of the corrupted data). The Job reads the file once, finds other
    bytes than those approved and restores nothing; the approval is void and the step waits
    for an approval of the new file."""
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)
    backups.dump(db)
    approved_sha = backups.sha256()
    go_live(db)
    corrupt(db)
    corrupted = contents(db)
    waiting = run_request(api, namespace, "golive", "AwaitingApproval", database=restore_section())
    first = ledger(waiting)["RestoreDatabase"]["approvalDigest"]

    operator.kill()  # so that nothing runs between the approval and the swap
    approve(as_person(kubeconfig, DBA), namespace, "golive", "RestoreDatabase", DBA[0])
    backups.dump(db)  # the corrupted data, under the approved file's name
    swapped_sha = backups.sha256()
    assert swapped_sha != approved_sha
    operator.start()

    def waits_again() -> dict[str, Any] | None:
        obj = get_request(api, namespace, "golive")
        record = ledger(obj)["RestoreDatabase"]
        return obj if record.get("approvalDigest") not in (None, first) else None

    again = wait_until(waits_again, timeout=120, what="the restore to wait for a new approval")
    record = ledger(again)["RestoreDatabase"]
    assert again["status"]["phase"] == "AwaitingApproval"
    assert "approvedBy" not in record
    assert record["message"].startswith(
        f"the approval by dba-alice is void: backup file {CHOSEN} changed before the restore "
        f"read it (sha256 now {swapped_sha}, not {approved_sha}); nothing was restored; waiting "
        "for a member of group dba"
    )
    assert f"sha256 {swapped_sha}" in record["approvalSubject"]
    assert again["status"]["backup"]["sha256"] == swapped_sha
    (job,) = jobs_of(api, namespace, "RestoreDatabase")
    assert job.status.failed
    assert contents(db) == corrupted  # nothing restored
    assert on_maintenance(api, namespace)
    # The old approval, still in the annotations, does not count for the new file.
    assert (
        get_request(api, namespace, "golive")["metadata"]["annotations"][f"{GROUP}/approve"]
        == f"RestoreDatabase@{first}"
    )


def test_a_dump_with_an_sql_error_fails_and_leaves_the_database_as_it_was(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    namespace = app
    dump = backups.dump(db)
    text = dump.read_text()
    dump.write_text(
        text.replace(
            "-- PostgreSQL database dump complete",
            'INSERT INTO public."User" ("id", "email") VALUES (\'x\', \'y\');\n',
        )
    )
    go_live(db)
    corrupt(db)
    corrupted = contents(db)
    admin_settings(api, namespace, NO_GATES)

    done = run_request(
        api,
        namespace,
        "golive",
        "Failed",
        timeout=120,
        database=restore_section(requireApproval=False),
    )

    status = done["status"]
    restore = ledger(done)["RestoreDatabase"]
    assert restore["state"] == "Failed"
    assert restore["message"].startswith(
        "the restore failed and its transaction was rolled back: the database is as it was "
        "before the restore. psql said"
    )
    # The error and its type are quoted, the value of the row is not (redaction.scrub).
    assert 'invalid input syntax for type integer: "<redacted>"' in restore["message"]
    assert "The maintenance page stays on" in restore["message"]
    assert status["message"].startswith("RestoreDatabase failed: the restore failed")
    assert conditions(done)["MaintenanceActive"] == "True" and on_maintenance(api, namespace)
    assert ledger(done)["Verify"]["state"] == "Pending"
    assert contents(db) == corrupted
    warnings = [e for e in events_for(api, namespace, "golive") if e.type == "Warning"]
    assert any("invalid input syntax for type integer" in e.message for e in warnings)


def test_a_missing_backup_fails_in_preflight_with_the_site_untouched(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    namespace = app
    (backups.path / "pre-golive-snapshot-20260111.sql").write_text("-- after go-live\n")
    before = snapshot(api, namespace)
    go_live(db)
    state = contents(db)

    done = run_request(api, namespace, "golive", "Failed", database=restore_section())

    preflight = ledger(done)["Preflight"]
    assert preflight["state"] == "Failed"
    assert preflight["message"] == (
        f"database check (Job {done['status']['jobs'][0]['name']}): no backup matching "
        f"{SNAPSHOT} dated on or before 2026-01-10 in /backups (claim {CLAIM}; 1 later file(s) "
        "left alone); nothing was changed"
    )
    assert ledger(done)["EnableMaintenance"]["state"] == "Pending"
    assert "backup" not in done["status"]
    assert snapshot(api, namespace) == before
    assert conditions(done)["MaintenanceActive"] == "False"
    assert jobs_of(api, namespace, "RestoreDatabase") == []
    assert contents(db) == state


def test_a_restore_that_would_drop_objects_of_other_schemas_fails_in_preflight(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    """DROP SCHEMA public CASCADE would take a reporting view and an audit foreign key with it:
    Preflight names them and nothing changes, in the cluster or in the database."""
    namespace = app
    backups.dump(db)
    db.psql(
        "CREATE SCHEMA reporting; "
        'CREATE VIEW reporting.active_users AS SELECT "id", "email" FROM public."User"; '
        "CREATE SCHEMA audit; CREATE TABLE audit.log "
        '("userId" INTEGER CONSTRAINT log_user_fkey REFERENCES public."User"("id"))'
    )
    before = snapshot(api, namespace)
    state = contents(db)

    done = run_request(api, namespace, "golive", "Failed", database=restore_section())

    preflight = ledger(done)["Preflight"]
    assert preflight["message"].startswith(
        f"database check (Job {done['status']['jobs'][0]['name']}): objects outside "
        "database.restore.schemas (public) depend on objects inside them"
    ), preflight["message"]
    for named in ("constraint log_user_fkey on table audit.log", "view reporting.active_users"):
        assert named in preflight["message"]
    assert ledger(done)["EnableMaintenance"]["state"] == "Pending"
    assert snapshot(api, namespace) == before
    assert jobs_of(api, namespace, "RestoreDatabase") == []
    assert contents(db) == state
    assert db.rows("SELECT count(*) FROM reporting.active_users") == [("3",)]


def test_preflight_names_every_missing_reference_at_once(
    api: client.ApiClient, app: str, db: Database, operator: Operator
) -> None:
    namespace = app
    before = snapshot(api, namespace)
    section = restore_section()
    section["connection"]["secretRef"]["key"] = "NO_SUCH_KEY"
    done = run_request(api, namespace, "golive", "Failed", timeout=60, database=section)
    message = ledger(done)["Preflight"]["message"]
    assert f"database connection Secret '{SECRET}' has no key 'NO_SUCH_KEY'" in message
    assert f"backups PersistentVolumeClaim '{CLAIM}' not found" in message
    assert "jobs" not in done["status"]  # nothing was started, not even the inspection
    assert snapshot(api, namespace) == before


# --- exactly once


def test_a_killed_operator_follows_the_same_restore_job_after_restart(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    namespace = app
    before = contents(db)
    job, _ = start_slow_restore(api, namespace, db, backups, 6)
    operator.kill()
    operator.start()
    done = wait_outcome(api, namespace, "golive", "Succeeded", timeout=120)

    (after,) = jobs_of(api, namespace, "RestoreDatabase")
    assert after.metadata.uid == job.metadata.uid
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}"
    )
    assert len(pods.items) == 1
    assert ledger(done)["RestoreDatabase"]["attempts"] >= 2
    assert contents(db) == before


def test_a_deleted_restore_job_stops_the_run_for_a_human(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    namespace = app
    job, corrupted = start_slow_restore(api, namespace, db, backups, 15)
    client.BatchV1Api(api).delete_namespaced_job(
        job.metadata.name, namespace, propagation_policy="Foreground"
    )
    done = wait_outcome(api, namespace, "golive", "Failed")

    restore = ledger(done)["RestoreDatabase"]
    assert restore["state"] == "Failed"
    assert restore["message"].startswith(
        f"Job {job.metadata.name}, started by RestoreDatabase, is gone (deleted by someone or "
        "something else). It is not started again, because nobody knows how far it got: check "
        f"the schema(s) public (whether the restore of {CHOSEN} committed) by hand"
    )
    assert on_maintenance(api, namespace)
    wait_until(
        lambda: not jobs_of(api, namespace, "RestoreDatabase"), timeout=30, what="the Job gone"
    )
    # The killed psql never committed: the database is as the restore found it. (Its server
    # session notices the client is gone only once the statement running ends.)
    wait_until(
        lambda: (
            not db.rows(
                f"SELECT pid FROM pg_stat_activity WHERE datname = '{db.name}' "
                "AND application_name = 'rollback-operator'"
            )
        ),
        timeout=60,
        what="the restore's session to end",
    )
    assert contents(db) == corrupted


def test_deleting_the_request_leaves_a_running_restore_job_alone(
    api: client.ApiClient, app: str, db: Database, backups: Backups, operator: Operator
) -> None:
    namespace = app
    before = contents(db)
    job, _ = start_slow_restore(api, namespace, db, backups, 5)

    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "golive"
    )

    def request_gone() -> bool:
        try:
            get_request(api, namespace, "golive")
        except ApiException as error:
            return error.status == 404
        return False

    wait_until(request_gone, timeout=30, what="the RollbackRequest deleted")

    def completed() -> bool:
        current = client.BatchV1Api(api).read_namespaced_job(job.metadata.name, namespace)
        assert current.metadata.uid == job.metadata.uid
        return bool(current.status.succeeded)

    wait_until(completed, timeout=60, what="the restore Job to complete on its own")
    assert contents(db) == before


# --- migrate down


def test_migrate_down_waits_for_a_dba_then_returns_the_schema_and_history_to_before_go_live(
    api: client.ApiClient, kubeconfig: str, app: str, db: Database, operator: Operator
) -> None:
    """No RollbackPolicy anywhere: by default a DBA approves the migrate-down, which names the
    migrations and the digest of each down.sql."""
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)
    before = contents(db)
    go_live(db)
    down_migrations(api, namespace, list(MIGRATIONS))

    waiting = run_request(
        api, namespace, "golive", "AwaitingApproval", timeout=120, database=migrate_section()
    )
    migrate = ledger(waiting)["MigrateDatabaseDown"]
    assert migrate["message"].startswith(
        "waiting for a member of group dba (asked by the built-in default) to approve the "
        f"migrate-down: database {db.server.host}:{db.server.port}/{db.name}; migrations "
        f"{', '.join(NEWEST_FIRST)}; "
        "down.sql sha256 "
    )
    for name in NEWEST_FIRST:
        sha = hashlib.sha256(MIGRATIONS[name][1].encode()).hexdigest()[:16]
        assert f"{name} {sha}" in migrate["approvalSubject"]
    assert waiting["status"]["gates"] == [
        {
            "step": "MigrateDatabaseDown",
            "groups": [["dba"]],
            "who": "a member of group dba",
            "requiredBy": "the built-in default",
        }
    ]
    assert jobs_of(api, namespace, "MigrateDatabaseDown") == []
    approve(as_person(kubeconfig, DBA), namespace, "golive", "MigrateDatabaseDown", DBA[0])
    done = wait_outcome(api, namespace, "golive", "Succeeded", timeout=120)

    assert contents(db) == before
    assert (
        "2 migration(s) to roll back are applied and have their down.sql"
        in (ledger(done)["Preflight"]["message"])
    )
    migrate = ledger(done)["MigrateDatabaseDown"]
    assert migrate["message"].startswith(
        f"rolled back 2 migration(s), newest first: {', '.join(NEWEST_FIRST)} (down.sql run "
        "and _prisma_migrations rows deleted in schema public, in one transaction) (Job "
    )
    assert ledger(done)["RestoreDatabase"] == {
        **ledger(done)["RestoreDatabase"],
        "state": "Skipped",
        "message": "no spec.database.restore",
    }
    assert len(jobs_of(api, namespace, "MigrateDatabaseDown")) == 1


def test_a_missing_down_sql_fails_in_preflight_before_anything_changes(
    api: client.ApiClient, app: str, db: Database, operator: Operator
) -> None:
    namespace = app
    go_live(db)
    state = contents(db)
    before = snapshot(api, namespace)
    down_migrations(api, namespace, [NEWEST_FIRST[1]])

    done = run_request(api, namespace, "golive", "Failed", timeout=60, database=migrate_section())

    assert ledger(done)["Preflight"]["message"].startswith(
        f"Preflight found 1 problem(s): down-migrations ConfigMap '{CONFIGMAP}' has no "
        f"'{NEWEST_FIRST[0]}.down.sql' (one key <migration>.down.sql per migration). Nothing "
        "was changed."
    )
    assert snapshot(api, namespace) == before
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []
    assert contents(db) == state


def test_a_down_sql_that_would_commit_part_of_the_run_fails_in_preflight(
    api: client.ApiClient, app: str, db: Database, operator: Operator
) -> None:
    """The operator reads the ConfigMap's down.sql with PostgreSQL's parser: an indented
    COMMIT and a psql meta-command are named, line and text, before any Job starts."""
    namespace = app
    go_live(db)
    state = contents(db)
    down_migrations(api, namespace, list(MIGRATIONS))
    hostile = {
        f"{NEWEST_FIRST[0]}.down.sql": 'DROP TABLE "CaseDocument";\n    COMMIT;\n',
        f"{NEWEST_FIRST[1]}.down.sql": "SELECT 1; \\set ON_ERROR_STOP off\n",
    }
    client.CoreV1Api(api).patch_namespaced_config_map(CONFIGMAP, namespace, {"data": hostile})
    before = snapshot(api, namespace)

    done = run_request(api, namespace, "golive", "Failed", timeout=60, database=migrate_section())

    message = ledger(done)["Preflight"]["message"]
    assert message.startswith("Preflight found 2 problem(s): ")
    assert (
        f"the down.sql of {NEWEST_FIRST[0]} ({NEWEST_FIRST[0]}.down.sql) cannot run in one "
        "transaction: line 2 (COMMIT;) controls the transaction (COMMIT)"
    ) in message
    assert (
        f"the down.sql of {NEWEST_FIRST[1]} ({NEWEST_FIRST[1]}.down.sql) cannot run in one "
        "transaction: line 1 (SELECT 1; \\set ON_ERROR_STOP off) is a psql meta-command (\\set)"
    ) in message
    assert snapshot(api, namespace) == before
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []
    assert contents(db) == state
