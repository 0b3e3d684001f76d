"""Jobs that must run exactly once: the database restore and migrate-down, smoke-test checks.

What a Job does to a database cannot be undone, and cannot be repeated safely either (safety
rule 3). So a Job here:
- has a name derived from the request (its name and uid) and its purpose, so that every
  attempt of the step, in any operator process, refers to the same Job;
- is recorded in `status.jobs` as soon as it exists, and a Job found under that name but not
  yet recorded (the operator died between creating and recording it) is adopted, provided it
  carries this request's uid;
- is never created twice: a recorded Job that has disappeared stops the run for a human,
  because nobody knows how far it got;
- runs one pod (`backoffLimit: 0`) under a deadline, as Pod Security "restricted" asks, with
  a ServiceAccount that has no token and credentials only through `secretKeyRef`;
- has no owner reference: deleting the RollbackRequest never deletes a running restore;
- is quoted scrubbed (`redaction.scrub`): what its pod said may hold a header `curl -v` printed,
  the value of a Secret it was given, or rows psql quoted; the values of the Secrets its
  containers reference are read first, so that they are replaced whatever shape they are in;
- is stopped when the run is aborted, if that is safe (`stop_on_abort`): a Job whose work is
  one PostgreSQL transaction (the restore, the migrate-down by psql, the read-only inspection)
  or a smoke test. Killing its pod ends its session, and PostgreSQL rolls an uncommitted
  transaction back. The team's own migrator is left running: nobody here knows what stopping
  it half-way would leave. Either way the abort message names the Job and its fate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rollback_operator import GROUP, watches
from rollback_operator.admin_policy_reader import read_policy
from rollback_operator.clock import stamp
from rollback_operator.egress import image_refusal
from rollback_operator.kube import ApiError, Kube, job_path
from rollback_operator.model import StepName
from rollback_operator.redaction import scrub
from rollback_operator.steps.base import StepContext

SERVICE_ACCOUNT = "rollback-operator-jobs"
MANAGED_BY = {"app.kubernetes.io/managed-by": "rollback-operator"}
REQUEST_LABEL = f"{GROUP}/request"
REQUEST_UID_LABEL = f"{GROUP}/request-uid"
STEP_LABEL = f"{GROUP}/step"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
NONROOT_UID = 65532  # a conventional non-root uid; images with a user of their own override it
MAX_NAME = 63  # a Job's name becomes a label value on its pods


class JobState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobResult:
    """Where a Job of the run stands, as the ledger records it."""

    name: str
    state: JobState
    message: str  # how the Job ended, or what it is waiting for


@dataclass(frozen=True)
class JobTemplate:
    """What a step wants run: the parts of a Job that differ between steps."""

    purpose: str  # short, DNS-safe: restore, migrate-down, check-smoke, ...
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[dict[str, Any], ...] = ()  # core/v1 EnvVar; secrets only via valueFrom
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()  # name, image, command, volumeMounts...
    deadline_seconds: int = 1800
    run_as_user: int = NONROOT_UID
    labels: dict[str, str] = field(default_factory=dict)
    # What a person must look at when the Job is lost: what it may have done partly.
    check_by_hand: str = "what the Job may have done"


def job_name(request: str, request_uid: str, purpose: str) -> str:
    """`<request>-<purpose>-<5 hex of the uid>`, cut to fit: the same for every attempt of this
    request, and different for a later request of the same name (whose Job must not be
    mistaken for the old one's)."""
    suffix = f"-{purpose}-{hashlib.sha256(request_uid.encode()).hexdigest()[:5]}"
    return f"{request[: MAX_NAME - len(suffix)].rstrip('-.')}{suffix}"


def run_job_once(ctx: StepContext, step: StepName, template: JobTemplate) -> JobResult:
    """Starts the Job unless this run already did, and tells where it stands, as a watch
    follows it: RUNNING is read through `ctx.wakeups`, so that the runner calls the step again
    as soon as the Job changes."""
    uid = ctx.request_uid
    name = job_name(ctx.request, uid, template.purpose)
    records: list[dict[str, Any]] = list(ctx.ledger.section("jobs") or [])
    record = next((r for r in records if r.get("name") == name), None)
    key = ("job", ctx.namespace, name, uid)
    follower = watches.following(key)
    # As the watch of an earlier call holds it (no request), else read.
    job = follower.current().get(name) if follower else ctx.kube.job(ctx.namespace, name)
    if record is not None:
        if job is None:
            watches.stop(key)
            return JobResult(name, JobState.FAILED, _lost(name, step, template.check_by_hand))
        if job["metadata"]["uid"] != record.get("uid"):
            watches.stop(key)
            return JobResult(name, JobState.FAILED, _replaced(name, step, template.check_by_hand))
        return _followed(ctx, step, key, job, template)
    if job is None:
        refused = _image_refusals(ctx, template)
        if refused:
            return JobResult(name, JobState.FAILED, f"Job {name} was not started: {refused}")
        ctx.kube.ensure_service_account(ctx.namespace, SERVICE_ACCOUNT, MANAGED_BY)
        manifest = job_manifest(ctx.namespace, ctx.request, uid, step, template)
        try:
            job = ctx.kube.create_job(ctx.namespace, manifest)
        except ApiError as error:
            if error.status != 409:
                raise
            job = ctx.kube.job(ctx.namespace, name)
            if job is None:  # created and deleted in between: try again on the next poll
                raise
    if (job["metadata"].get("labels") or {}).get(REQUEST_UID_LABEL) != uid:
        return JobResult(
            name,
            JobState.FAILED,
            f"a Job named {name} already exists and was not started by this request; nothing "
            "was run. Find out what it is before deleting it, then create a new RollbackRequest",
        )
    records.append(
        {
            "name": name,
            "step": str(step),
            "uid": job["metadata"]["uid"],
            "createdAt": job["metadata"].get("creationTimestamp") or stamp(ctx.now()),
        }
    )
    ctx.ledger.put_section("jobs", records, durable=True)
    return _followed(ctx, step, key, job, template)


def _followed(
    ctx: StepContext,
    step: StepName,
    key: tuple[str, ...],
    job: dict[str, Any],
    template: JobTemplate,
) -> JobResult:
    """Where the Job stands, followed by a watch from the version held (`watches.py`) for as
    long as the Job may run: no read while it runs."""
    name = job["metadata"]["name"]
    if not _ended(job):
        follower = watches.follow(
            ctx.kube, key, job_collection(ctx.namespace), {name: job}, template.deadline_seconds
        )
        current = ctx.wakeups.read(follower).get(name)
        if current is None:  # deleted while recorded: nobody knows how far it got
            watches.stop(key)
            return JobResult(name, JobState.FAILED, _lost(name, step, template.check_by_hand))
        job = current
    result = read_result(ctx, job)
    if result.state != JobState.RUNNING:
        watches.stop(key)
    return result


def job_collection(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def _image_refusals(ctx: StepContext, template: JobTemplate) -> str:
    """The images of the Job the admins' allowedImages refuse, checked again as the Job is
    created (Preflight checked the spec; the settings may have changed since)."""
    policy = read_policy(ctx.kube, ctx.namespace)
    images = [template.image, *(c.get("image", "") for c in template.init_containers)]
    return "; ".join(why for image in images if (why := image_refusal("the Job", image, policy)))


def stop_on_abort(
    kube: Kube, namespace: str, records: list[dict[str, Any]], step: str, stop: bool
) -> list[str]:
    """The fate of `step`'s Jobs still running when the run is aborted, one sentence each:
    stopped (deleted with their pods) when `stop`, else left running."""
    fates = []
    for record in records:
        if record.get("step") != step:
            continue
        name = record["name"]
        job = kube.job(namespace, name)
        if job is None or job["metadata"]["uid"] != record.get("uid") or _ended(job):
            continue
        if not stop:
            fates.append(
                f"Job {name} is left running (the team's own command: stopping it half-way "
                f"could leave the database anywhere); follow it with kubectl -n {namespace} "
                f"logs -f job/{name}"
            )
            continue
        kube.request(
            "DELETE",
            job_path(namespace, name),
            {"propagationPolicy": "Foreground", "preconditions": {"uid": record["uid"]}},
        )
        fates.append(
            f"Job {name} was stopped: its work is one transaction, which PostgreSQL rolls back "
            "when the session ends, unless it had already committed; check the database "
            "before anything else"
        )
    return fates


def _ended(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def read_result(ctx: StepContext, job: dict[str, Any]) -> JobResult:
    """Running until the Job controller says Complete or Failed; the message is what the
    pod's container said (its termination message, or its log tail on error)."""
    name = job["metadata"]["name"]
    conditions = {
        c["type"]: c
        for c in (job.get("status") or {}).get("conditions") or []
        if c["status"] == "True"
    }
    if "Complete" in conditions:
        said = _termination_message(ctx, name)
        return JobResult(name, JobState.SUCCEEDED, said or f"Job {name} completed")
    if "Failed" in conditions:
        said = _termination_message(ctx, name)
        condition = conditions["Failed"]
        why = condition.get("message") or condition.get("reason") or "failed"
        return JobResult(name, JobState.FAILED, said or f"Job {name} failed: {why}")
    return JobResult(name, JobState.RUNNING, f"Job {name} is running")


def _termination_message(ctx: StepContext, name: str) -> str:
    pods = ctx.kube.pods(ctx.namespace, f"{JOB_NAME_LABEL}={name}")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        status_of = pod.get("status") or {}
        # An init container that failed (copying the migrations) said why; the main one never ran.
        statuses = (status_of.get("initContainerStatuses") or []) + (
            status_of.get("containerStatuses") or []
        )
        for status in statuses:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                _learn_secrets(ctx, pod)
                return scrub(str(terminated["message"]).strip())
    return ""


def _learn_secrets(ctx: StepContext, pod: dict[str, Any]) -> None:
    """Reads the Secret values the pod's containers were given (`kube.secret_value` remembers
    each for `redaction.scrub`), so that a Job printing one is never quoted, even by an operator
    that restarted since it read them. A Secret it may not read is left to the shape rules."""
    spec = pod.get("spec") or {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") and ref.get("key"):
                try:
                    ctx.kube.secret_value(ctx.namespace, ref["name"], ref["key"])
                except ApiError:
                    continue


def job_manifest(
    namespace: str, request: str, request_uid: str, step: StepName, template: JobTemplate
) -> dict[str, Any]:
    labels = {
        **MANAGED_BY,
        **template.labels,
        REQUEST_LABEL: request,
        REQUEST_UID_LABEL: request_uid,
        STEP_LABEL: str(step),
    }
    main = {
        "name": template.purpose,
        "image": template.image,
        "command": list(template.command),
        "env": [dict(e) for e in template.env],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
        + [dict(m) for m in template.volume_mounts],
    }
    if template.args:
        main["args"] = list(template.args)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(request, request_uid, template.purpose),
            "namespace": namespace,
            "labels": labels,
            "annotations": {f"{GROUP}/purpose": template.purpose},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": template.deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": template.run_as_user,
                        "runAsGroup": template.run_as_user,
                        "fsGroup": template.run_as_user,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [_restricted(c) for c in template.init_containers],
                    "containers": [_restricted(main)],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]
                    + [dict(v) for v in template.volumes],
                },
            },
        },
    }


def _restricted(container: dict[str, Any]) -> dict[str, Any]:
    """A container as Pod Security "restricted" wants it, its log tail kept as the message."""
    return {
        **container,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _lost(name: str, step: StepName, check: str) -> str:
    return (
        f"Job {name}, started by {step}, is gone (deleted by someone or something else). It is "
        f"not started again, because nobody knows how far it got: check {check} by hand (its "
        "work may be partly or wholly done), then finish the rollback by hand or create a new "
        "RollbackRequest"
    )


def _replaced(name: str, step: StepName, check: str) -> str:
    return (
        f"Job {name}, started by {step}, was replaced by another Job of the same name. That Job "
        f"is not followed: check {check} by hand, then finish the rollback by hand or create a "
        "new RollbackRequest"
    )
