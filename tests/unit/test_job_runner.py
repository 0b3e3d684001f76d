"""The job runner's pure parts: environment, volumes, identity, termination messages, status,
and the sandbox script. The e2e tier (tests/e2e/test_job_runner.py) runs real pods through it."""

from __future__ import annotations

import base64
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from cluster.job_runner.api import ClusterObjects
from cluster.job_runner.claims import Claimant
from cluster.job_runner.environment import expand, resolve_env
from cluster.job_runner.plan import (
    DEFAULT_PATH,
    Identity,
    VolumeMount,
    container_identity,
    plan_container,
    plan_pod,
)
from cluster.job_runner.pod import PodConfigError
from cluster.job_runner.sandbox import Bind, HostLayout, Sandbox, tool
from cluster.job_runner.status import ContainerRecord, orphaned_status_patch, pod_conditions
from cluster.job_runner.termination import log_tail, termination_message
from cluster.job_runner.volumes import (
    EmptyDirVolume,
    FileVolume,
    HostPathVolume,
    VolumeFile,
    claim_host_path,
    materialize,
    plan_volume,
)
from cluster.job_runner.watch import is_runnable


class Objects:
    """An in-memory ObjectSource."""

    def __init__(
        self,
        secrets: dict[str, dict[str, bytes]] | None = None,
        config_maps: dict[str, dict[str, bytes]] | None = None,
        claims: dict[str, dict[str, Any]] | None = None,
        volumes: list[dict[str, Any]] | None = None,
    ) -> None:
        self._secrets = secrets or {}
        self._config_maps = config_maps or {}
        self._claims = claims or {}
        self._volumes = volumes or []

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self._secrets.get(name)

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self._config_maps.get(name)

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._claims.get(name)

    def volume(self, name: str) -> dict[str, Any] | None:
        return next((v for v in self._volumes if v["metadata"]["name"] == name), None)

    def volumes(self) -> list[dict[str, Any]]:
        return self._volumes


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "restore-x1", "uid": "u-1", "labels": {}},
        "spec": {"nodeName": "kwok-node-0", **spec},
    }


def _claim(name: str = "backups", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "uid": "c-1"}, "spec": spec}


def _volume(name: str, claim_ref: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"claimRef": claim_ref, **spec}}


# --- environment


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("postgres://$(USER)@db", "postgres://app@db"),
        ("$(MISSING) stays", "$(MISSING) stays"),
        ("$$(USER) is escaped", "$(USER) is escaped"),
        ("cost $5, $", "cost $5, $"),
        ("$(unclosed", "$(unclosed"),
        ("$$$$", "$$"),
    ],
)
def test_expand_follows_the_kubelet(text: str, expanded: str) -> None:
    assert expand(text, {"USER": "app"}) == expanded


def test_env_from_secrets_config_maps_and_fields_in_order() -> None:
    objects = Objects(
        secrets={"db": {"password": b"s3cret", "user": b"app"}},
        config_maps={"settings": {"HOST": b"127.0.0.1", "PORT": b"5432", "not=valid": b"x"}},
    )
    container = {
        "name": "restore",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "PG"}],
        "env": [
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
            {"name": "URL", "value": "postgres://$(USER)@$(PGHOST):$(PGPORT)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "OPTIONAL",
                "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}},
            },
        ],
    }
    assert resolve_env(_pod(), container, objects) == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "USER": "app",
        "URL": "postgres://app@127.0.0.1:5432",
        "POD": "restore-x1",
        "NS": "shop",
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            {"secretKeyRef": {"name": "db", "key": "user"}},
            "couldn't find key user in Secret shop/db",
        ),
        ({"secretKeyRef": {"name": "other", "key": "user"}}, 'secret "other" not found'),
        ({"configMapKeyRef": {"name": "cfg", "key": "k"}}, 'configmap "cfg" not found'),
    ],
)
def test_a_missing_required_key_is_a_config_error(ref: dict[str, Any], message: str) -> None:
    objects = Objects(secrets={"db": {"password": b"x"}})
    container = {"name": "c", "env": [{"name": "V", "valueFrom": ref}]}
    with pytest.raises(PodConfigError) as error:
        resolve_env(_pod(), container, objects)
    assert (error.value.reason, error.value.message) == ("CreateContainerConfigError", message)


def test_unsupported_value_sources_are_named() -> None:
    container = {"name": "c", "env": [{"name": "V", "valueFrom": {"resourceFieldRef": {}}}]}
    with pytest.raises(PodConfigError, match="resourceFieldRef is not supported"):
        resolve_env(_pod(), container, Objects())


# --- containers


def test_a_container_plan_expands_its_command_and_gets_default_env() -> None:
    container = {
        "name": "migrate",
        "image": "registry.local/migrations:v41",
        "command": ["psql", "-d", "$(DB)"],
        "args": ["-f", "/migrations/down.sql"],
        "env": [{"name": "DB", "value": "shop"}, {"name": "HOME", "value": "/work"}],
        "workingDir": "/migrations",
        "volumeMounts": [{"name": "m", "mountPath": "/migrations", "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    plan = plan_container(_pod(), container, Objects())
    assert plan.argv == ("psql", "-d", "shop", "-f", "/migrations/down.sql")
    assert plan.env == {
        "PATH": DEFAULT_PATH,
        "HOSTNAME": "restore-x1",
        "HOME": "/work",
        "DB": "shop",
    }
    assert plan.mounts == (VolumeMount("m", "/migrations", "", True),)
    assert (plan.working_dir, plan.termination_path) == ("/migrations", "/dev/termination-log")
    assert plan.fallback_to_logs


def test_a_container_without_command_cannot_run_here() -> None:
    with pytest.raises(PodConfigError) as error:
        plan_container(_pod(), {"name": "app", "args": ["serve"]}, Objects())
    assert (error.value.reason, error.value.container) == ("UnsupportedByJobRunner", "app")


def test_identity_prefers_the_container_and_enforces_non_root() -> None:
    pod_spec = {
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 2000,
            "supplementalGroups": [3000],
        }
    }
    own = {"securityContext": {"runAsUser": 1234}}
    assert container_identity(pod_spec, own) == Identity(1234, 1000, (2000, 3000))
    assert container_identity({}, {}) == Identity(None, None, ())
    with pytest.raises(PodConfigError, match="runAsNonRoot and image will run as root"):
        container_identity({"securityContext": {"runAsNonRoot": True}}, {})
    with pytest.raises(PodConfigError, match="breaks non-root policy"):
        container_identity({}, {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}})


def test_a_pod_plan_resolves_everything_before_anything_runs() -> None:
    pod = _pod(
        activeDeadlineSeconds=600,
        volumes=[{"name": "work", "emptyDir": {}}],
        initContainers=[{"name": "fetch", "command": ["true"]}],
        containers=[
            {
                "name": "restore",
                "command": ["true"],
                "volumeMounts": [{"name": "nope", "mountPath": "/x"}],
            }
        ],
    )
    with pytest.raises(PodConfigError) as error:
        plan_pod(pod, Objects())
    assert (error.value.container, error.value.message) == (
        "restore",
        "volumeMount nope: no such volume",
    )

    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    plan = plan_pod(pod, Objects())
    assert [c.name for c in plan.init_containers] == ["fetch"]
    assert (plan.active_deadline, plan.grace_seconds) == (600, 30)


# --- volumes


def test_config_map_and_secret_volumes_honour_items_and_modes() -> None:
    objects = Objects(
        secrets={"db": {"password": b"s3cret", "user": b"app"}},
        config_maps={"cfg": {"a.conf": b"a", "b.conf": b"b"}},
    )
    config_map = plan_volume("shop", {"name": "c", "configMap": {"name": "cfg"}}, objects)
    assert config_map == FileVolume(
        (VolumeFile("a.conf", b"a", 0o644), VolumeFile("b.conf", b"b", 0o644))
    )
    secret = plan_volume(
        "shop",
        {
            "name": "s",
            "secret": {
                "secretName": "db",
                "defaultMode": 0o400,
                "items": [{"key": "password", "path": "pg/pass"}, {"key": "user", "mode": 0o440}],
            },
        },
        objects,
    )
    assert secret == FileVolume(
        (VolumeFile("pg/pass", b"s3cret", 0o400), VolumeFile("user", b"app", 0o440))
    )


def test_missing_volume_sources_fail_unless_optional() -> None:
    optional = {"name": "c", "configMap": {"name": "absent", "optional": True}}
    assert plan_volume("shop", optional, Objects()) == FileVolume(())
    with pytest.raises(PodConfigError) as error:
        plan_volume("shop", {"name": "s", "secret": {"secretName": "absent"}}, Objects())
    assert error.value.reason == "FailedMount"
    assert (
        error.value.message == 'MountVolume.SetUp failed for volume "s" : secret "absent" not found'
    )
    escaping = {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "k", "path": "../x"}]}}
    with pytest.raises(PodConfigError, match="invalid path"):
        plan_volume("shop", escaping, Objects(config_maps={"cfg": {"k": b""}}))


def test_a_claim_mounts_its_bound_hostpath_volume() -> None:
    ref = {"namespace": "shop", "name": "backups"}
    objects = Objects(
        claims={"backups": _claim(volumeName="pv-1")},
        volumes=[_volume("pv-1", ref, hostPath={"path": "/srv/backups"})],
    )
    spec = {"name": "b", "persistentVolumeClaim": {"claimName": "backups", "readOnly": True}}
    assert plan_volume("shop", spec, objects) == HostPathVolume("/srv/backups", True)


def test_an_unbound_claim_uses_the_volume_whose_claim_ref_names_it() -> None:
    ref = {"namespace": "shop", "name": "backups"}
    objects = Objects(
        claims={"backups": _claim(storageClassName="local")},
        volumes=[
            _volume("other-class", ref, storageClassName="fast", hostPath={"path": "/a"}),
            _volume("other-claim", {**ref, "name": "x"}, storageClassName="local"),
            _volume("right", ref, storageClassName="local", hostPath={"path": "/srv/b"}),
        ],
    )
    assert claim_host_path("shop", "backups", objects) == "/srv/b"
    with pytest.raises(PodConfigError, match="is not bound"):
        claim_host_path("shop", "backups", Objects(claims={"backups": _claim()}))


def test_a_claim_must_be_backed_by_a_hostpath_volume_that_is_its_own() -> None:
    elsewhere = {"namespace": "shop", "name": "someone-else"}
    objects = Objects(
        claims={"backups": _claim(volumeName="pv-1"), "nfs": _claim("nfs", volumeName="pv-2")},
        volumes=[
            _volume("pv-1", elsewhere, hostPath={"path": "/x"}),
            _volume("pv-2", {"namespace": "shop", "name": "nfs"}, nfs={"server": "n"}),
        ],
    )
    with pytest.raises(PodConfigError, match="bound to shop/someone-else"):
        claim_host_path("shop", "backups", objects)
    with pytest.raises(PodConfigError, match="not a hostPath volume"):
        claim_host_path("shop", "nfs", objects)
    with pytest.raises(PodConfigError, match='persistentvolumeclaim "gone" not found'):
        claim_host_path("shop", "gone", objects)


@pytest.mark.skipif(os.geteuid() != 0, reason="fsGroup ownership needs root")
def test_materialized_volumes_are_readable_by_the_pods_group(tmp_path: Path) -> None:
    files = FileVolume((VolumeFile("pg/pass", b"s3cret", 0o400),))
    directory = materialize(files, tmp_path / "secret", 4321)
    written = directory / "pg" / "pass"
    assert written.read_bytes() == b"s3cret"
    assert (written.stat().st_gid, stat.S_IMODE(written.stat().st_mode)) == (4321, 0o440)

    empty = materialize(EmptyDirVolume(), tmp_path / "work", None)
    assert stat.S_IMODE(empty.stat().st_mode) == 0o777


def test_a_missing_host_path_fails_the_mount(tmp_path: Path) -> None:
    with pytest.raises(PodConfigError, match="does not exist on this machine"):
        materialize(HostPathVolume(str(tmp_path / "absent")), tmp_path / "v", None)
    created = materialize(HostPathVolume(str(tmp_path / "made"), create=True), tmp_path / "v", None)
    assert created.is_dir()


# --- termination messages


def test_the_termination_file_wins_and_keeps_its_last_4096_bytes(tmp_path: Path) -> None:
    message, output = tmp_path / "message", tmp_path / "log"
    output.write_text("some output\n")
    message.write_bytes(b"x" * 5000 + b"restored 3 tables")
    written = termination_message(message, output, 1, True)
    assert len(written) == 4096
    assert written.endswith("restored 3 tables")


def test_fallback_to_logs_only_on_failure_with_nothing_written(tmp_path: Path) -> None:
    message, output = tmp_path / "message", tmp_path / "log"
    output.write_text("".join(f"line {i}\n" for i in range(1, 201)))
    assert termination_message(message, output, 0, True) == ""
    assert termination_message(message, output, 2, False) == ""
    tail = termination_message(message, output, 2, True)
    assert tail.splitlines() == [f"line {i}" for i in range(121, 201)]
    assert tail.endswith("line 200\n")


def test_the_log_tail_is_at_most_2048_bytes() -> None:
    long_lines = b"".join(b"%03d " % i + b"y" * 95 + b"\n" for i in range(60))
    tail = log_tail(long_lines)
    assert len(tail.encode()) == 2048
    assert tail.endswith("y\n")
    assert log_tail(b"no newline at the end") == "no newline at the end"


# --- status


def test_container_status_nulls_the_states_not_in_effect() -> None:
    record = ContainerRecord("restore", "postgres:15", "ContainerCreating")
    assert record.status(init=False)["state"] == {
        "waiting": {"reason": "ContainerCreating"},
        "running": None,
        "terminated": None,
    }
    record.started_at, record.pid = "2026-01-01T00:00:00Z", 42
    running = record.status(init=False)
    assert running["state"]["running"] == {"startedAt": "2026-01-01T00:00:00Z"}
    assert (running["ready"], running["started"], running["containerID"]) == (
        True,
        True,
        "jobrunner://42",
    )
    record.finish(3, "psql: error")
    terminated = record.status(init=False)["state"]
    assert terminated["running"] is None
    assert terminated["terminated"]["exitCode"] == 3
    assert (terminated["terminated"]["reason"], terminated["terminated"]["message"]) == (
        "Error",
        "psql: error",
    )


def test_pod_conditions_follow_the_phase() -> None:
    init = ContainerRecord("fetch", "i", "PodInitializing")
    main = ContainerRecord("restore", "i", "PodInitializing")
    pending = pod_conditions("Pending", [init], [main])
    assert pending["Initialized"] == ("False", "ContainersNotInitialized")
    assert pending["Ready"] == ("False", "ContainersNotReady")
    init.started_at = main.started_at = "t"
    init.finish(0, "")
    running = pod_conditions("Running", [init], [main])
    assert running["Initialized"] == running["Ready"] == ("True", "")
    main.finish(0, "")
    done = pod_conditions("Succeeded", [init], [main])
    assert done["Ready"] == ("False", "PodCompleted")
    assert done["PodReadyToStartContainers"] == ("False", "")


def test_an_orphaned_pod_is_failed_with_its_unfinished_containers_unknown() -> None:
    pod = _pod()
    pod["status"] = {
        "phase": "Running",
        "initContainerStatuses": [
            {"name": "fetch", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ],
        "containerStatuses": [
            {"name": "restore", "ready": True, "state": {"running": {"startedAt": "t0"}}}
        ],
    }
    status = orphaned_status_patch(pod, "runner gone")["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "JobRunnerLost",
        "runner gone",
    )
    assert status["initContainerStatuses"] == pod["status"]["initContainerStatuses"]
    restore = status["containerStatuses"][0]
    assert restore["ready"] is False
    assert restore["state"]["running"] is None
    assert restore["state"]["terminated"]["exitCode"] == 137
    assert restore["state"]["terminated"]["startedAt"] == "t0"


def test_only_bound_unstarted_pods_are_runnable() -> None:
    pod = _pod()
    assert is_runnable(pod)
    assert not is_runnable({**pod, "spec": {}})
    assert not is_runnable({**pod, "status": {"phase": "Pending", "startTime": "t"}})
    assert not is_runnable({**pod, "status": {"phase": "Running"}})
    deleted = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "t"}}
    assert not is_runnable(deleted)


# --- the sandbox


LAYOUT = HostLayout(
    directories=("usr", "etc"),
    symlinks={"bin": "usr/bin", "lib": "usr/lib"},
    devices=("null", "urandom"),
)


def test_host_directories_are_found_through_top_level_symlinks() -> None:
    assert LAYOUT.host_directory("/bin/psql") == ("usr", "/usr/bin/psql")
    assert LAYOUT.host_directory("/etc/app") == ("etc", "/etc/app")
    assert LAYOUT.host_directory("/backups") is None
    assert LAYOUT.host_directory("/") is None


def test_a_mount_point_the_host_lacks_turns_its_directory_into_an_overlay() -> None:
    binds = (
        Bind("/state/cfg", "/etc/app", True, True),
        Bind("/state/pv", "/backups", False, True),
        Bind("/state/msg", "/dev/termination-log", False, False),
    )
    sandbox = Sandbox(LAYOUT, "/state/root", "/state/layers", binds, "/", Identity())
    assert sandbox.overlays(exists=lambda path: path != "/etc/app") == {"etc"}
    assert sandbox.overlays(exists=lambda path: True) == set()


def test_the_sandbox_script_mounts_parents_first_and_honours_read_only() -> None:
    binds = (
        Bind("/state/sub", "/backups/sub", False, True),
        Bind("/state/pv", "/backups", True, True),
        Bind("/state/msg", "/dev/termination-log", False, False),
    )
    identity = Identity(1234, 2345, ())
    sandbox = Sandbox(LAYOUT, "/state/root", "/state/layers", binds, "/backups", identity)
    script = sandbox.script(set()).splitlines()
    mounts = [line for line in script if "--bind" in line and "/state/" in line.split()[-2]]
    assert [line.split()[-1] for line in mounts] == [
        "/state/root/backups",
        "/state/root/backups/sub",
        "/state/root/dev/termination-log",
    ]
    assert " -o ro /state/pv " in mounts[0]
    assert "-o ro" not in mounts[1]
    assert f"{tool('mount')} --bind -o ro /usr /state/root/usr" in script
    assert f"{tool('ln')} -s usr/bin /state/root/bin" in script
    assert script[-1] == (
        f"exec {tool('chroot')} /state/root {tool('setpriv')} --reuid=1234 --regid=2345 "
        f'--clear-groups -- {tool("env")} -C /backups -- "$@"'
    )


def test_a_root_container_runs_without_setpriv() -> None:
    sandbox = Sandbox(LAYOUT, "/r", "/l", (), "/", Identity())
    assert sandbox.setpriv_args() == []
    grouped = Sandbox(LAYOUT, "/r", "/l", (), "/", Identity(None, None, (2000,)))
    assert grouped.setpriv_args() == [tool("setpriv"), "--groups=2000", "--"]
    command = sandbox.command(["psql", "-c", "select 1"])
    assert command[:5] == [tool("unshare"), "--mount", "--propagation", "private", "--"]
    assert command[-4:] == ["sandbox", "psql", "-c", "select 1"]


# --- claims


def test_a_claim_names_a_live_runner_of_this_machine() -> None:
    me = Claimant.this_process()
    assert Claimant.parse(str(me)) == me
    assert me.is_alive() is True
    assert Claimant(me.host, me.pid, "1").is_alive() is False  # the pid, reused
    assert Claimant(me.host, 999_999_999, "1").is_alive() is False
    assert Claimant(f"not-{socket.gethostname()}", me.pid, me.started).is_alive() is None
    assert Claimant.parse("garbage") is None


def test_secret_data_is_decoded_from_the_api() -> None:
    class Api:
        def get(self, path: str) -> dict[str, Any] | None:
            if path.endswith("/secrets/db"):
                return {"data": {"password": base64.b64encode(b"s3cret").decode()}}
            if path.endswith("/configmaps/cfg"):
                binary = {"blob": base64.b64encode(b"\x00\x01").decode()}
                return {"data": {"a": "text"}, "binaryData": binary}
            return None

    objects = ClusterObjects(Api())
    assert objects.secret("shop", "db") == {"password": b"s3cret"}
    assert objects.config_map("shop", "cfg") == {"a": b"text", "blob": b"\x00\x01"}
    assert objects.secret("shop", "absent") is None
    assert objects.secret("shop", "") is None
