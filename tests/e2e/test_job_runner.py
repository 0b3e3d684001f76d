"""The local cluster's job runner: Job pods really run, as processes of this machine.

Each test reads what the process did from the host (a hostPath PersistentVolume, the process
table, the runner's log files), so a Job that kwok merely pretended to run fails it. The runner
is part of the local control plane only: against another cluster these tests are skipped.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from standins.local import wait_until
from tests.e2e.support import bound_claim, needs_job_runner

pytestmark = [pytest.mark.e2e, needs_job_runner]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CLAIM_ANNOTATION = "job-runner.local-cluster/claimed-by"
NODE_NAME = "kwok-node-0"


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory any uid may write to: what a test hands a Job as a hostPath PV."""
    path = tmp_path / "volume"
    path.mkdir()
    path.chmod(0o777)
    return path


@pytest.fixture
def claim(api: client.ApiClient, namespace: str, host_dir: Path) -> Iterator[str]:
    """A PersistentVolumeClaim named "data" backed by `host_dir` (created bound: see
    support.bound_claim)."""
    with bound_claim(api, namespace, "data", host_dir, "ReadWriteOnce") as name:
        yield name


@pytest.fixture
def runner_logs(kubeconfig: str) -> Path:
    """Where the runner keeps container output (<namespace>_<pod>_<container>.log)."""
    return Path(kubeconfig).parent / "job-runner" / "logs"


def _container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "postgres:15", "command": ["/bin/sh", "-c", script], **extra}


def _create_job(api: client.ApiClient, namespace: str, name: str, pod_spec: dict[str, Any]) -> None:
    client.BatchV1Api(api).create_namespaced_job(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", **pod_spec}},
            },
        },
    )


def _job_outcome(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> str:
    """Waits for the Job controller to mark the Job Complete or Failed, and says which."""

    def outcome() -> str | None:
        job = client.BatchV1Api(api).read_namespaced_job_status(name, namespace)
        for condition in job.status.conditions or []:
            if condition.type in ("Complete", "Failed") and condition.status == "True":
                return str(condition.type)
        return None

    result: str = wait_until(outcome, timeout=timeout, what=f"job {name} Complete or Failed")
    return result


def _job_pod(api: client.ApiClient, namespace: str, job: str) -> client.V1Pod:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"{JOB_NAME_LABEL}={job}"
    )
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    return pods.items[0]


def test_a_job_sees_its_secret_config_map_and_claim_and_reports_a_message(
    api: client.ApiClient, namespace: str, claim: str, host_dir: Path, runner_logs: Path
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "restore"}, "data": {"settings.conf": "mode=full\n"}}
    )
    (host_dir / "dump.sql").write_text("-- 3 tables\n")
    backups_on_host = Path("/backups").exists()
    script = (
        "{ echo password=$DB_PASSWORD; echo config=$(cat /etc/restore/settings.conf);"
        "  echo dump=$(cat /backups/dump.sql); echo pod=$POD_NAME; echo cwd=$(pwd); }"
        " > /backups/seen.txt; echo restoring; printf 'restored 3 tables' > /dev/termination-log"
    )
    _create_job(
        api,
        namespace,
        "restore",
        {
            "containers": [
                _container(
                    "restore",
                    script,
                    workingDir="/backups",
                    env=[
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                    ],
                    volumeMounts=[
                        {"name": "settings", "mountPath": "/etc/restore"},
                        {"name": "backups", "mountPath": "/backups"},
                    ],
                )
            ],
            "volumes": [
                {"name": "settings", "configMap": {"name": "restore"}},
                {"name": "backups", "persistentVolumeClaim": {"claimName": claim}},
            ],
        },
    )

    assert _job_outcome(api, namespace, "restore") == "Complete"
    pod = _job_pod(api, namespace, "restore")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert terminated.message == "restored 3 tables"
    assert (host_dir / "seen.txt").read_text().splitlines() == [
        "password=s3cret",
        "config=mode=full",
        "dump=-- 3 tables",
        f"pod={pod.metadata.name}",
        "cwd=/backups",
    ]
    # The volumes were seen at their mountPaths only: the host's / and /etc are untouched.
    assert Path("/backups").exists() == backups_on_host
    assert not Path("/etc/restore").exists()
    log = runner_logs / f"{namespace}_{pod.metadata.name}_restore.log"
    assert log.read_text() == "restoring\n"


def test_a_failing_job_fails_with_the_tail_of_its_output(
    api: client.ApiClient, namespace: str, runner_logs: Path
) -> None:
    script = (
        "echo connecting; for i in $(seq 1 200); do echo row $i; done;"
        " echo 'psql: error: connection to server failed' >&2; exit 3"
    )
    _create_job(
        api,
        namespace,
        "migrate-down",
        {
            "containers": [
                _container("migrate", script, terminationMessagePolicy="FallbackToLogsOnError")
            ]
        },
    )

    assert _job_outcome(api, namespace, "migrate-down") == "Failed"
    pod = _job_pod(api, namespace, "migrate-down")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    # The kubelet's fallback: the last 80 lines of the output, stderr included.
    lines = terminated.message.splitlines()
    assert len(lines) == 80
    assert lines[0] == "row 122"
    assert lines[-1] == "psql: error: connection to server failed"
    log = (runner_logs / f"{namespace}_{pod.metadata.name}_migrate.log").read_text()
    assert log.startswith("connecting\nrow 1\n")


def test_the_process_runs_as_the_pods_user(
    api: client.ApiClient, namespace: str, claim: str, host_dir: Path
) -> None:
    # The Secret first: a pod whose Secret is missing fails at once (the runner does not wait
    # for it to appear), and the Job's pod may be claimed within milliseconds.
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": "key"}, "stringData": {"key": "readable"}}
    )
    _create_job(
        api,
        namespace,
        "whoami",
        {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1234, "runAsGroup": 2345},
            "containers": [
                _container(
                    "whoami",
                    "echo $(id -u) $(id -g) > /out/id; cat /etc/config/key >> /out/id",
                    volumeMounts=[
                        {"name": "out", "mountPath": "/out"},
                        {"name": "config", "mountPath": "/etc/config"},
                    ],
                )
            ],
            "volumes": [
                {"name": "out", "persistentVolumeClaim": {"claimName": claim}},
                {"name": "config", "secret": {"secretName": "key"}},
            ],
        },
    )
    assert _job_outcome(api, namespace, "whoami") == "Complete"
    assert (host_dir / "id").read_text() == "1234 2345\nreadable"
    assert (host_dir / "id").stat().st_uid == 1234


def test_init_containers_run_first_and_share_an_empty_dir(
    api: client.ApiClient, namespace: str, claim: str, host_dir: Path
) -> None:
    work = {"name": "work", "mountPath": "/work"}
    reports = {"name": "out", "mountPath": "/out", "subPath": "reports/ordered"}
    _create_job(
        api,
        namespace,
        "ordered",
        {
            "initContainers": [
                _container("fetch", "echo fetch > /work/order", volumeMounts=[work]),
                _container("check", "echo check >> /work/order", volumeMounts=[work]),
            ],
            "containers": [
                _container(
                    "apply",
                    "echo apply >> /work/order; cp /work/order /out/",
                    volumeMounts=[work, reports],
                )
            ],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "out", "persistentVolumeClaim": {"claimName": claim}},
            ],
        },
    )

    assert _job_outcome(api, namespace, "ordered") == "Complete"
    assert (host_dir / "reports" / "ordered" / "order").read_text() == "fetch\ncheck\napply\n"
    pod = _job_pod(api, namespace, "ordered")
    init = {s.name: s.state.terminated for s in pod.status.init_container_statuses}
    assert {name: t.reason for name, t in init.items()} == {
        "fetch": "Completed",
        "check": "Completed",
    }
    assert init["check"].finished_at <= pod.status.container_statuses[0].state.terminated.started_at


def test_deleting_a_job_kills_its_process(
    api: client.ApiClient, namespace: str, claim: str, host_dir: Path
) -> None:
    _create_job(
        api,
        namespace,
        "stuck",
        {
            "containers": [
                _container(
                    "stuck",
                    # $$ is how a command says $ (the kubelet expands $(VAR) in it)
                    "echo $$$$ > /out/pid; exec sleep 600",
                    volumeMounts=[{"name": "out", "mountPath": "/out"}],
                )
            ],
            "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": claim}}],
        },
    )
    pid_file = host_dir / "pid"
    wait_until(
        lambda: pid_file.exists() and pid_file.read_text().strip(),
        timeout=60,
        what="the process's pid",
    )
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"600"]
    pod = _job_pod(api, namespace, "stuck")
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].state.running is not None

    client.BatchV1Api(api).delete_namespaced_job(
        "stuck", namespace, propagation_policy="Background"
    )
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what=f"process {pid} gone")


def test_a_pod_past_its_active_deadline_is_killed(api: client.ApiClient, namespace: str) -> None:
    _create_job(
        api,
        namespace,
        "slow",
        {"activeDeadlineSeconds": 2, "containers": [_container("slow", "exec sleep 600")]},
    )

    assert _job_outcome(api, namespace, "slow") == "Failed"
    pod = wait_until(
        lambda: (p := _job_pod(api, namespace, "slow")).status.phase == "Failed" and p,
        timeout=30,
        what="the pod Failed",
    )
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM


def test_a_missing_secret_key_fails_the_pod_as_a_kubelet_reports_it(
    api: client.ApiClient, namespace: str
) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}
    )
    _create_job(
        api,
        namespace,
        "misconfigured",
        {
            "containers": [
                _container(
                    "restore",
                    "true",
                    env=[
                        {
                            "name": "DB_USER",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}},
                        },
                        {
                            "name": "DB_HOST",
                            "valueFrom": {
                                "configMapKeyRef": {"name": "absent", "key": "h", "optional": True}
                            },
                        },
                    ],
                )
            ]
        },
    )

    assert _job_outcome(api, namespace, "misconfigured") == "Failed"
    pod = _job_pod(api, namespace, "misconfigured")
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason == "CreateContainerConfigError"
    assert waiting.message == f"couldn't find key user in Secret {namespace}/db"
    assert pod.status.message == f"container restore: {waiting.message}"


def test_a_pod_claimed_by_a_dead_runner_fails_and_never_runs(
    api: client.ApiClient, namespace: str, host_dir: Path
) -> None:
    dead_runner = f"{socket.gethostname()}/999999999/1"  # above any pid_max: never alive
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": "orphan",
                "labels": {JOB_NAME_LABEL: "orphan"},
                "annotations": {CLAIM_ANNOTATION: dead_runner},
            },
            "spec": {
                "nodeName": NODE_NAME,
                "restartPolicy": "Never",
                "containers": [
                    _container(
                        "main",
                        "touch /out/ran",
                        volumeMounts=[{"name": "out", "mountPath": "/out"}],
                    )
                ],
                "volumes": [{"name": "out", "hostPath": {"path": str(host_dir)}}],
            },
        },
    )

    pod = wait_until(
        lambda: (p := core.read_namespaced_pod("orphan", namespace)).status.phase == "Failed" and p,
        timeout=30,
        what="the orphan Failed",
    )
    assert pod.status.reason == "JobRunnerLost"
    assert dead_runner in pod.status.message
    assert not (host_dir / "ran").exists()


def test_a_pod_outside_jobs_is_left_to_kwok(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    name = f"web-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"containers": [_container("web", "exit 1")]},
        },
    )

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        conditions = pod.status.conditions or []
        return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None

    pod = wait_until(ready, timeout=60, what=f"pod {name} Ready")
    # kwok's doing: Running for good (the command would have failed) and never claimed.
    assert pod.status.phase == "Running"
    assert CLAIM_ANNOTATION not in (pod.metadata.annotations or {})
