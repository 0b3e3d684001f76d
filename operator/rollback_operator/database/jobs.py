"""What the database Jobs share: MigrateDatabaseDown's, RestoreDatabase's and Preflight's
read-only inspection (steps/database_preflight.py).

Each is one Job, run once (jobs.py), with the connection URL only ever as a secretKeyRef, the
mounts the spec asks for (the backups' claim, the down.sql files), the same component label,
and the same words for where it stands and, when it failed, where the DBA looks next. Kept in
one module so that the three Jobs cannot drift apart, and so that no step imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rollback_operator import watches
from rollback_operator.database.spec import (
    MIGRATIONS_DIR,
    DatabaseSpec,
    MigrateDownSpec,
    RestoreSpec,
)
from rollback_operator.model import StepName
from rollback_operator.steps import jobs
from rollback_operator.steps.base import Done, Fail, StepContext, Wait

COMPONENT = {"app.kubernetes.io/component": "database"}

# --- what the Jobs mount and get in their environment (plain core/v1 objects)

BACKUP_VOLUME = "backups"
MIGRATIONS_VOLUME = "migrations"
APPLICATION_NAME = "rollback-operator"  # the Jobs' sessions in pg_stat_activity


@dataclass(frozen=True)
class JobParts:
    """The parts of a database Job that depend on the spec: env, volumes, init containers."""

    env: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()

    def __add__(self, other: JobParts) -> JobParts:
        return JobParts(
            self.env + other.env,
            self.volumes + other.volumes,
            self.volume_mounts + other.volume_mounts,
            self.init_containers + other.init_containers,
        )

    def template(
        self, purpose: str, image: str, command: tuple[str, ...], deadline: int, check_by_hand: str
    ) -> jobs.JobTemplate:
        """The database Job with these parts, under the database component label."""
        return jobs.JobTemplate(
            purpose=purpose,
            image=image,
            command=command,
            env=self.env,
            volumes=self.volumes,
            volume_mounts=self.volume_mounts,
            init_containers=self.init_containers,
            deadline_seconds=deadline,
            labels=COMPONENT,
            check_by_hand=check_by_hand,
        )


def connection_parts(database: DatabaseSpec) -> JobParts:
    """The connection URL, only ever as a secretKeyRef: never in the Job's spec itself."""
    return JobParts(
        env=(
            database.connection.env("DATABASE_URL"),
            {"name": "PGAPPNAME", "value": APPLICATION_NAME},
            {"name": "HOME", "value": "/tmp"},
        )
    )


def backup_parts(restore: RestoreSpec) -> JobParts:
    """The backups' claim, read-only, at the directory the spec names."""
    return JobParts(
        volumes=(
            {
                "name": BACKUP_VOLUME,
                "persistentVolumeClaim": {
                    "claimName": restore.backup.claim_name,
                    "readOnly": True,
                },
            },
        ),
        volume_mounts=(
            {"name": BACKUP_VOLUME, "mountPath": restore.backup.directory, "readOnly": True},
        ),
    )


def migrations_parts(migrate: MigrateDownSpec) -> JobParts:
    """The down.sql files at MIGRATIONS_DIR: the ConfigMap's keys as files, or the image's
    migrations directory copied there by an init container running that image (which needs
    only `cp`, no shell)."""
    mount = {"name": MIGRATIONS_VOLUME, "mountPath": MIGRATIONS_DIR, "readOnly": True}
    parts = JobParts(env=({"name": "ROLLBACK_MIGRATIONS", "value": " ".join(migrate.migrations)},))
    if migrate.configmap is not None:
        volume = {"name": MIGRATIONS_VOLUME, "configMap": {"name": migrate.configmap}}
        return parts + JobParts(volumes=(volume,), volume_mounts=(mount,))
    if migrate.source_image is not None and migrate.source_path is not None:
        copy = {
            "name": "copy-migrations",
            "image": migrate.source_image,
            "command": ["cp", "-R", f"{migrate.source_path.rstrip('/')}/.", f"{MIGRATIONS_DIR}/"],
            "volumeMounts": [{"name": MIGRATIONS_VOLUME, "mountPath": MIGRATIONS_DIR}],
        }
        volume = {"name": MIGRATIONS_VOLUME, "emptyDir": {}}
        return parts + JobParts(volumes=(volume,), volume_mounts=(mount,), init_containers=(copy,))
    return parts


# --- following a Job


def follow_job(
    ctx: StepContext, step: StepName, template: jobs.JobTemplate, doing: str, note: str = ""
) -> Wait | Fail | Done:
    """Runs the step's Job once (`jobs.run_job_once`) and says where it stands: a Wait while it
    runs ("<doing>: Job <name> is running"), a Fail with `failure`'s message when it failed or
    was lost, else Done with the Job's own message ("<message> (Job <name><note>)")."""
    result = jobs.run_job_once(ctx, step, template)
    if result.state == jobs.JobState.RUNNING:
        # Called again as soon as its watch sees the Job change (steps/jobs.py).
        return Wait(f"{doing}: Job {result.name} is running", retry_after=watches.CALL_SECONDS)
    if result.state == jobs.JobState.FAILED:
        return Fail(failure(ctx, result))
    return Done(f"{result.message} (Job {result.name}{note})")


def planned_job_name(ctx: StepContext, purpose: str) -> str:
    """The name of the step's Job, for a plan: the one `jobs.run_job_once` gives it."""
    return jobs.job_name(ctx.request, ctx.request_uid, purpose)


def job_started(ctx: StepContext, purpose: str) -> bool:
    """Whether this run already started the Job of `purpose`. Once it has, the step follows
    it whatever changed since: a Job is never judged (or approved) again once it runs."""
    name = planned_job_name(ctx, purpose)
    return any(r.get("name") == name for r in ctx.ledger.section("jobs") or [])


def failure(ctx: StepContext, result: jobs.JobResult) -> str:
    """Why a database Job's step stopped, and where the DBA looks next."""
    log = ""
    if ctx.kube.job(ctx.namespace, result.name) is not None:
        log = (
            f" Job {result.name} is kept for its log (kubectl -n {ctx.namespace} logs "
            f"job/{result.name})."
        )
    return (
        f"{result.message.rstrip('.')}. The maintenance page stays on.{log} See "
        "docs/database.md for what to do next"
    )


def database_address(ctx: StepContext, database: DatabaseSpec) -> str:
    """Where the connection Secret points, as "host:port/dbname", for what a DBA approves:
    read from the URL, never with its user or password (which go no further than here)."""
    ref = database.connection
    url = ctx.kube.secret_value(ctx.namespace, ref.name, ref.key)
    fallback = f"the database of {ref}"
    if not url:
        return fallback
    if "://" in url:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "", str(parts.port or "")
        except ValueError:
            return fallback
        name = parts.path.lstrip("/")
    else:  # libpq's key=value form
        fields = dict(
            item.split("=", 1) for item in url.split() if "=" in item and not item.startswith("=")
        )
        host, port = fields.get("host", ""), fields.get("port", "")
        name = fields.get("dbname", "")
    if not host and not name:
        return fallback
    return f"{host or 'localhost'}{f':{port}' if port else ''}/{name}"


def describe_backup(backup: dict[str, Any]) -> str:
    """The backup recorded in status.backup, as Preflight's and RestoreDatabase's messages
    name it (file, size, sha256, claim): what the DBA checks before approving the restore."""
    return (
        f"{backup.get('file')} ({backup.get('sizeBytes')} bytes, sha256 {backup.get('sha256')}, "
        f"claim {backup.get('claimName')})"
    )
