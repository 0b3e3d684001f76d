#!/usr/bin/env python3
"""The local cluster's job runner: the containers of Job pods run as real processes here.

kwok, the local cluster's kubelet, only pretends to run pods. That is all the application's
Deployments need, but the Jobs the operator creates (a database restore, a migrate-down, smoke
tests) must really run, against a real PostgreSQL, for the tests to prove anything. This runner
is the kubelet of one kind of pod: it watches the pods labelled `batch.kubernetes.io/job-name`
that the scheduler has bound to a node, runs their containers as processes of this machine and
reports their status through pods/status as a kubelet does, so that the Job controller completes
or fails the Job on its own. kwok's pod stages leave these pods alone (cluster/kwok-stages/).

There are no images: a container's command runs from the host's binaries, in a private mount
namespace and chroot that shows the host's /usr and /etc read-only, the pod's volumes at their
mountPaths and nothing else of the host's filesystem. The network is the host's (127.0.0.1).
Container output goes to <state-dir>/logs/<namespace>_<pod>_<container>.log, since there is no
kubelet for `kubectl logs` to ask. It needs root: mount namespaces, chroot, setpriv.

    python cluster/job_runner.py --kubeconfig .cluster/kubeconfig --state-dir .cluster/job-runner

cluster/README.md lists what the runner supports and what a test must create for a claim.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import enum
import functools
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeAlias

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("job-runner")

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# The runner that runs a pod, as "<host>/<pid>/<process start time>": set, with a
# resourceVersion precondition, before anything runs, so that no pod ever runs twice.
CLAIM_ANNOTATION = "job-runner.local-cluster/claimed-by"
NODE_IP = "127.0.0.1"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_GRACE_SECONDS = 30
# The kubelet's limits on a termination message (pkg/kubelet/container/runtime.go).
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
# Host directories every container sees read-only; the top-level ones that are symlinks on the
# host (bin -> usr/bin) are recreated as the same symlinks.
HOST_DIRECTORIES = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Where the sandbox's tools are looked up; the ones run after chroot live under /usr.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_TOOLS = ("unshare", "sh", "mount", "mkdir", "touch", "ln", "chroot", "setpriv", "env")
POLL_SECONDS = 0.1
# Each watch ends after this long and the runner lists again: a pod whose runner died after
# the last list is found within that time, even if nothing else happens to it.
WATCH_SECONDS = 60
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Why a pod could not start, as pod status reasons.
CONFIG_ERROR = "CreateContainerConfigError"
MOUNT_ERROR = "FailedMount"
UNSUPPORTED = "UnsupportedByJobRunner"


def now() -> str:
    """The API's timestamp format: RFC 3339 in UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodConfigError(Exception):
    """A pod that cannot start as written: it fails with this reason and message.

    A kubelet would keep such a pod Pending and retry; the runner fails it at once, so that a
    test sees the mistake in the pod's status instead of waiting for a deadline.
    """

    def __init__(
        self, message: str, *, reason: str = CONFIG_ERROR, container: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.container = container


# --- the API objects a pod refers to


class ObjectSource(Protocol):
    """Reads the objects a pod refers to; None when one does not exist."""

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def volume(self, name: str) -> dict[str, Any] | None: ...

    def volumes(self) -> list[dict[str, Any]]: ...


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


# --- environment


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expands $(NAME) from `env` as the kubelet does in env values, command and args.

    An unknown name stays as written, `$$` is a literal `$`, any other `$` is kept.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append(text[i : i + 2])
            i += 2
    return "".join(out)


def _referenced_data(
    kind: str, read: Callable[[str, str], dict[str, bytes] | None], namespace: str, ref: Any
) -> dict[str, bytes] | None:
    """The data of an envFrom source; None when it is missing and optional."""
    name = ref.get("name") or ""
    data = read(namespace, name)
    if data is None and not ref.get("optional"):
        raise PodConfigError(f'{kind.lower()} "{name}" not found')
    return data


def _key_value(
    kind: str, read: Callable[[str, str], dict[str, bytes] | None], namespace: str, ref: Any
) -> str | None:
    """One key of a Secret or ConfigMap; None when it is missing and the reference optional."""
    name, key, optional = ref.get("name") or "", ref["key"], bool(ref.get("optional"))
    data = read(namespace, name)
    if data is None:
        if optional:
            return None
        raise PodConfigError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise PodConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return _text(data[key])


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward API's fieldRef values a Job's container can ask for."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": NODE_IP,
        "status.hostIPs": NODE_IP,
        "status.podIP": NODE_IP,
        "status.podIPs": NODE_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix in ("labels", "annotations"):
        opening = f"metadata.{prefix}['"
        if path.startswith(opening) and path.endswith("']"):
            return str((meta.get(prefix) or {}).get(path[len(opening) : -2], ""))
    raise PodConfigError(
        f"fieldRef {path} is not supported by the local job runner", reason=UNSUPPORTED
    )


def _value_from(pod: dict[str, Any], value_from: Any, source: ObjectSource) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if ref := value_from.get("secretKeyRef"):
        return _key_value("Secret", source.secret, namespace, ref)
    if ref := value_from.get("configMapKeyRef"):
        return _key_value("ConfigMap", source.config_map, namespace, ref)
    if ref := value_from.get("fieldRef"):
        return field_value(pod, ref["fieldPath"])
    kinds = ", ".join(sorted(value_from)) or "nothing"
    raise PodConfigError(
        f"env valueFrom {kinds} is not supported by the local job runner", reason=UNSUPPORTED
    )


def resolve_env(
    pod: dict[str, Any], container: dict[str, Any], source: ObjectSource
) -> dict[str, str]:
    """The container's environment from envFrom, then env, as the kubelet builds it.

    A missing Secret, ConfigMap or key fails the pod unless the reference is optional; an
    optional one that is missing leaves the variable out.
    """
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for env_from in container.get("envFrom") or []:
        if "configMapRef" in env_from:
            data = _referenced_data(
                "ConfigMap", source.config_map, namespace, env_from["configMapRef"]
            )
        elif "secretRef" in env_from:
            data = _referenced_data("Secret", source.secret, namespace, env_from["secretRef"])
        else:
            raise PodConfigError("envFrom names neither a configMapRef nor a secretRef")
        prefix = env_from.get("prefix") or ""
        for key, data_value in (data or {}).items():
            if key and "=" not in key:
                env[prefix + key] = _text(data_value)
    for var in container.get("env") or []:
        value: str | None = None
        if "valueFrom" in var:
            value = _value_from(pod, var["valueFrom"], source)
        else:
            value = expand(var.get("value") or "", env)
        if value is not None:
            env[var["name"]] = value
    return env


# --- volumes


@dataclass(frozen=True)
class VolumeFile:
    """One file of a configMap or secret volume: its path in the volume, content and mode."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True)
class FileVolume:
    """A configMap or secret volume: files written for the pod, mounted read-only (as the
    kubelet does)."""

    files: tuple[VolumeFile, ...]


@dataclass(frozen=True)
class EmptyDirVolume:
    """An emptyDir: a fresh directory, shared by the pod's containers for the pod's life."""


@dataclass(frozen=True)
class HostPathVolume:
    """A directory of this machine used in place: a hostPath volume, or a claim's hostPath PV."""

    path: str
    read_only: bool = False
    create: bool = False


Volume: TypeAlias = FileVolume | EmptyDirVolume | HostPathVolume


def relative_path(path: str, what: str) -> str:
    """A path inside a volume (an item's path, a subPath): relative, and never climbing out."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise PodConfigError(f"{what}: invalid path {path!r}", reason=MOUNT_ERROR)
    return str(PurePosixPath(*parts))


def _volume_files(
    kind: str, data: dict[str, bytes] | None, spec: Any, volume: str
) -> tuple[VolumeFile, ...]:
    """The files of a configMap or secret volume, honouring items, defaultMode and optional."""
    name = spec.get("name") or spec.get("secretName") or ""
    optional = bool(spec.get("optional"))
    if data is None:
        if optional:
            return ()
        raise PodConfigError(
            f'MountVolume.SetUp failed for volume "{volume}" : {kind.lower()} "{name}" not found',
            reason=MOUNT_ERROR,
        )
    default_mode = spec.get("defaultMode", 0o644)
    items = spec.get("items") or [{"key": key, "path": key} for key in sorted(data)]
    files = []
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise PodConfigError(
                f'MountVolume.SetUp failed for volume "{volume}" : '
                f"{kind.lower()} {name} has no key {key}",
                reason=MOUNT_ERROR,
            )
        path = relative_path(item.get("path") or key, f"volume {volume}")
        files.append(VolumeFile(path, data[key], item.get("mode", default_mode)))
    return tuple(files)


def _refers_to(ref: Any, claim: dict[str, Any]) -> bool:
    meta = claim["metadata"]
    return bool(
        ref
        and ref.get("namespace") == meta["namespace"]
        and ref.get("name") == meta["name"]
        and (not ref.get("uid") or ref["uid"] == meta.get("uid"))
    )


def bound_volume(claim: dict[str, Any], source: ObjectSource) -> dict[str, Any]:
    """The PersistentVolume a claim uses: the one named by spec.volumeName or, as the local
    cluster runs no volume binder, a PV whose claimRef names this claim, in its storage class."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    claim_name = f"{meta['namespace']}/{meta['name']}"
    if name := spec.get("volumeName"):
        volume = source.volume(name)
        if volume is None:
            raise PodConfigError(
                f'persistentvolume "{name}" of claim {claim_name} not found', reason=MOUNT_ERROR
            )
        ref = (volume.get("spec") or {}).get("claimRef")
        if ref and not _refers_to(ref, claim):
            raise PodConfigError(
                f"persistentvolume {name} is bound to {ref.get('namespace')}/{ref.get('name')}, "
                f"not to {claim_name}",
                reason=MOUNT_ERROR,
            )
        return volume
    storage_class = spec.get("storageClassName") or ""
    candidates = sorted(
        (
            volume
            for volume in source.volumes()
            if _refers_to((volume.get("spec") or {}).get("claimRef"), claim)
            and ((volume.get("spec") or {}).get("storageClassName") or "") == storage_class
        ),
        key=lambda volume: str(volume["metadata"]["name"]),
    )
    if not candidates:
        raise PodConfigError(
            f"persistentvolumeclaim {claim_name} is not bound: give it spec.volumeName, or "
            f"create a hostPath PersistentVolume whose claimRef names it",
            reason=MOUNT_ERROR,
        )
    return candidates[0]


def claim_host_path(namespace: str, name: str, source: ObjectSource) -> str:
    """Where a claim's data lives on this machine: its PersistentVolume's hostPath."""
    claim = source.claim(namespace, name)
    if claim is None:
        raise PodConfigError(f'persistentvolumeclaim "{name}" not found', reason=MOUNT_ERROR)
    volume = bound_volume(claim, source)
    path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path")
    if not path:
        raise PodConfigError(
            f"persistentvolume {volume['metadata']['name']} of claim {namespace}/{name} is "
            f"not a hostPath volume: the local job runner mounts hostPath volumes only",
            reason=UNSUPPORTED,
        )
    return str(path)


def plan_volume(namespace: str, spec: dict[str, Any], source: ObjectSource) -> Volume:
    """What one pod volume is made of on this machine."""
    name = spec["name"]
    if (config_map := spec.get("configMap")) is not None:
        data = source.config_map(namespace, config_map.get("name") or "")
        return FileVolume(_volume_files("ConfigMap", data, config_map, name))
    if (secret := spec.get("secret")) is not None:
        data = source.secret(namespace, secret.get("secretName") or "")
        return FileVolume(_volume_files("Secret", data, secret, name))
    if "emptyDir" in spec:
        return EmptyDirVolume()
    if (claim := spec.get("persistentVolumeClaim")) is not None:
        path = claim_host_path(namespace, claim["claimName"], source)
        return HostPathVolume(path, read_only=bool(claim.get("readOnly")))
    if (host := spec.get("hostPath")) is not None:
        return HostPathVolume(host["path"], create=host.get("type") == "DirectoryOrCreate")
    kinds = ", ".join(sorted(set(spec) - {"name"})) or "empty"
    raise PodConfigError(
        f"volume {name}: {kinds} volumes are not supported by the local job runner",
        reason=UNSUPPORTED,
    )


def volume_is_read_only(volume: Volume) -> bool:
    return isinstance(volume, FileVolume) or (
        isinstance(volume, HostPathVolume) and volume.read_only
    )


def _grant_group(path: Path, gid: int, mask: int) -> None:
    """fsGroup, as the kubelet applies it: group ownership and group access on every entry."""
    for entry in [path, *path.rglob("*")]:
        os.chown(entry, -1, gid, follow_symlinks=False)
        if entry.is_dir():
            os.chmod(entry, entry.stat().st_mode | 0o2000 | mask | 0o110)
        else:
            os.chmod(entry, entry.stat().st_mode | mask)


def materialize(volume: Volume, directory: Path, fs_group: int | None) -> Path:
    """Makes a volume exist on this machine and returns the directory to mount.

    configMap and secret files are written with their modes (0644 by default, so a non-root
    process can read them); an emptyDir is world-writable, as the kubelet makes it. With an
    fsGroup, both belong to that group. A hostPath is used as it is: the host owns it.
    """
    if isinstance(volume, HostPathVolume):
        path = Path(volume.path)
        if volume.create:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not path.exists():
            raise PodConfigError(
                f"hostPath {volume.path} does not exist on this machine", reason=MOUNT_ERROR
            )
        return path
    directory.mkdir(parents=True)
    if isinstance(volume, EmptyDirVolume):
        os.chmod(directory, 0o777)
        if fs_group is not None:
            _grant_group(directory, fs_group, 0o660)
        return directory
    os.chmod(directory, 0o755)
    for file in volume.files:
        target = directory / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
        os.chmod(target, file.mode & 0o7777)
    if fs_group is not None:
        _grant_group(directory, fs_group, 0o440)
    return directory


# --- containers


@dataclass(frozen=True)
class VolumeMount:
    """A volume, or a subPath of it, as a container sees it at `path`."""

    volume: str
    path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Identity:
    """The uid, gid and supplementary groups of a container's process; None keeps root's."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid in (None, 0)


def _primary_gid(uid: int) -> int:
    """The gid a runtime gives a uid without runAsGroup: its passwd entry's, else 0."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def container_identity(pod_spec: dict[str, Any], container: dict[str, Any]) -> Identity:
    """runAsUser, runAsGroup, supplementalGroups and fsGroup, the container's over the pod's.

    runAsNonRoot is enforced as the kubelet does; with no image to read a user from, a
    non-root container must say which uid it runs as.
    """
    pod_context = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return own[key] if own.get(key) is not None else pod_context.get(key)

    uid, gid = setting("runAsUser"), setting("runAsGroup")
    if setting("runAsNonRoot"):
        if uid is None:
            raise PodConfigError(
                "container has runAsNonRoot and image will run as root "
                "(the local job runner has no image user: set runAsUser)"
            )
        if uid == 0:
            raise PodConfigError("container's runAsUser breaks non-root policy")
    if uid is not None and gid is None:
        gid = _primary_gid(uid)
    groups = set(pod_context.get("supplementalGroups") or [])
    if pod_context.get("fsGroup") is not None:
        groups.add(pod_context["fsGroup"])
    return Identity(uid, gid, tuple(sorted(groups)))


@dataclass(frozen=True)
class ContainerPlan:
    """Everything needed to start one container, resolved from the pod and what it refers to."""

    name: str
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    working_dir: str
    mounts: tuple[VolumeMount, ...]
    termination_path: str
    fallback_to_logs: bool
    identity: Identity


def _check_supported(container: dict[str, Any], *, init: bool) -> None:
    if init and container.get("restartPolicy") == "Always":
        raise PodConfigError(
            "sidecar init containers are not supported by the local job runner",
            reason=UNSUPPORTED,
        )
    if container.get("volumeDevices"):
        raise PodConfigError(
            "volumeDevices are not supported by the local job runner", reason=UNSUPPORTED
        )
    if not container.get("command"):
        raise PodConfigError(
            "no command: the local job runner runs the host's binaries and has no image "
            "entrypoint to fall back on",
            reason=UNSUPPORTED,
        )
    for mount in container.get("volumeMounts") or []:
        if mount.get("subPathExpr"):
            raise PodConfigError(
                "subPathExpr is not supported by the local job runner", reason=UNSUPPORTED
            )
    for path in (container.get("workingDir"), container.get("terminationMessagePath")):
        if path and not path.startswith("/"):
            raise PodConfigError(f"{path!r} is not an absolute path", reason=CONFIG_ERROR)


def plan_container(
    pod: dict[str, Any], container: dict[str, Any], source: ObjectSource, *, init: bool = False
) -> ContainerPlan:
    """A container's command, environment, mounts and identity, or the PodConfigError that a
    kubelet would report for it."""
    try:
        _check_supported(container, init=init)
        env = resolve_env(pod, container, source)
        identity = container_identity(pod["spec"], container)
    except PodConfigError as error:
        error.container = container["name"]
        raise
    argv = tuple(
        expand(arg, env) for arg in [*container["command"], *(container.get("args") or [])]
    )
    defaults = {
        "PATH": DEFAULT_PATH,
        "HOSTNAME": pod["metadata"]["name"],
        "HOME": "/root" if identity.is_root else "/",
    }
    mounts = tuple(
        VolumeMount(
            volume=mount["name"],
            path=mount["mountPath"],
            sub_path=mount.get("subPath") or "",
            read_only=bool(mount.get("readOnly")),
        )
        for mount in container.get("volumeMounts") or []
    )
    return ContainerPlan(
        name=container["name"],
        image=container.get("image") or "",
        argv=argv,
        env={**defaults, **env},
        working_dir=container.get("workingDir") or "/",
        mounts=mounts,
        termination_path=container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH,
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        identity=identity,
    )


@dataclass(frozen=True)
class PodPlan:
    """A pod, ready to run: its volumes and its containers, init containers first."""

    volumes: Mapping[str, Volume]
    init_containers: tuple[ContainerPlan, ...]
    containers: tuple[ContainerPlan, ...]
    fs_group: int | None
    active_deadline: int | None
    grace_seconds: int


def plan_pod(pod: dict[str, Any], source: ObjectSource) -> PodPlan:
    """Resolves everything the pod refers to before anything runs: a restore must not run its
    init containers and only then find that its Secret is missing."""
    spec, namespace = pod["spec"], pod["metadata"]["namespace"]
    volumes = {
        volume["name"]: plan_volume(namespace, volume, source)
        for volume in spec.get("volumes") or []
    }
    init = tuple(
        plan_container(pod, c, source, init=True) for c in spec.get("initContainers") or []
    )
    main = tuple(plan_container(pod, c, source) for c in spec["containers"])
    for container in (*init, *main):
        for mount in container.mounts:
            if mount.volume not in volumes:
                raise PodConfigError(
                    f"volumeMount {mount.volume}: no such volume", container=container.name
                )
    grace = spec.get("terminationGracePeriodSeconds")
    return PodPlan(
        volumes=volumes,
        init_containers=init,
        containers=main,
        fs_group=(spec.get("securityContext") or {}).get("fsGroup"),
        active_deadline=spec.get("activeDeadlineSeconds"),
        grace_seconds=DEFAULT_GRACE_SECONDS if grace is None else int(grace),
    )


# --- termination messages


def read_tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of a file; nothing when it does not exist."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - limit))
            return file.read(limit)
    except FileNotFoundError:
        return b""


def log_tail(data: bytes) -> str:
    """The kubelet's fallback message: the last 80 lines of the output, at most 2048 bytes."""
    data = data[-FALLBACK_LOG_BYTES:]
    lines = data.split(b"\n")
    keep = FALLBACK_LOG_LINES + (1 if data.endswith(b"\n") else 0)
    return _text(b"\n".join(lines[-keep:]))


def termination_message(
    message_file: Path, log_file: Path, exit_code: int, fallback_to_logs: bool
) -> str:
    """What the container wrote to its terminationMessagePath (its last 4096 bytes) or, with
    FallbackToLogsOnError, a failure and nothing written, the tail of its output."""
    message = read_tail(message_file, MAX_MESSAGE_BYTES)
    if not message and fallback_to_logs and exit_code != 0:
        return log_tail(read_tail(log_file, FALLBACK_LOG_BYTES))
    return _text(message)


# --- status, as a kubelet reports it


@dataclass
class ContainerRecord:
    """One container's state, as the pod's status reports it, kept current while it runs."""

    name: str
    image: str
    waiting_reason: str
    waiting_message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.exit_code is None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def finish(self, exit_code: int, message: str, reason: str = "") -> None:
        self.exit_code = exit_code
        self.finished_at = now()
        self.started_at = self.started_at or self.finished_at
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.message = message

    def status(self, *, init: bool) -> dict[str, Any]:
        """A containerStatuses entry; the states not in effect are nulled so that a strategic
        merge patch replaces the previous one."""
        state: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
        if self.exit_code is not None:
            terminated: dict[str, Any] = {
                "exitCode": self.exit_code,
                "reason": self.reason,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
            }
            if self.message:
                terminated["message"] = self.message
            state["terminated"] = terminated
        elif self.running:
            state["running"] = {"startedAt": self.started_at}
        else:
            state["waiting"] = {"reason": self.waiting_reason}
            if self.waiting_message:
                state["waiting"]["message"] = self.waiting_message
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.succeeded if init else self.running,
            "started": self.running,
            "restartCount": 0,
            "state": state,
        }
        if self.pid is not None:
            status["containerID"] = f"jobrunner://{self.pid}"
        return status


TERMINAL_PHASES = ("Succeeded", "Failed")


def pod_conditions(
    phase: str, init: Sequence[ContainerRecord], main: Sequence[ContainerRecord]
) -> dict[str, tuple[str, str]]:
    """The kubelet's pod conditions, as type -> (status, reason)."""
    terminal = phase in TERMINAL_PHASES
    ready = phase == "Running" and all(record.running for record in main)
    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    initialized = all(record.succeeded for record in init)
    return {
        "PodReadyToStartContainers": ("False", "") if terminal else ("True", ""),
        "Initialized": ("True", "") if initialized else ("False", "ContainersNotInitialized"),
        "ContainersReady": ("True", "") if ready else ("False", not_ready),
        "Ready": ("True", "") if ready else ("False", not_ready),
    }


def pod_status_patch(
    phase: str,
    start_time: str,
    conditions: list[dict[str, Any]],
    *,
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The body of a strategic merge patch of pods/status."""
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": start_time,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": NODE_IP,
        "podIPs": [{"ip": NODE_IP}],
        "conditions": conditions,
        "initContainerStatuses": [record.status(init=True) for record in init],
        "containerStatuses": [record.status(init=False) for record in main],
    }
    if reason:
        status["reason"] = reason
        status["message"] = message or ""
    return {"status": status}


def orphaned_status_patch(pod: dict[str, Any], message: str) -> dict[str, Any]:
    """Fails a pod whose runner died while running it: whatever had not finished is reported
    terminated with an unknown status, as the kubelet does for a container it lost."""
    status = pod.get("status") or {}
    finished_at = now()

    def finished(statuses: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        result = []
        for entry in statuses or []:
            state = entry.get("state") or {}
            if not state.get("terminated"):
                started_at = (state.get("running") or {}).get("startedAt")
                terminated = {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": message,
                    "startedAt": started_at,
                    "finishedAt": finished_at,
                }
                state = {"terminated": terminated, "running": None, "waiting": None}
                result.append({**entry, "ready": False, "started": False, "state": state})
            else:
                result.append(entry)
        return result

    not_ready = {"status": "False", "reason": "PodCompleted", "lastTransitionTime": finished_at}
    return {
        "status": {
            "phase": "Failed",
            "reason": "JobRunnerLost",
            "message": message,
            "initContainerStatuses": finished(status.get("initContainerStatuses")),
            "containerStatuses": finished(status.get("containerStatuses")),
            "conditions": [
                {"type": "Ready", **not_ready},
                {"type": "ContainersReady", **not_ready},
            ],
        }
    }


# --- the container's filesystem view


@functools.cache
def tool(name: str) -> str:
    """The absolute path of a system tool; the sandbox script never relies on the pod's PATH."""
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        raise RuntimeError(f"{name} not found in {SYSTEM_PATH}: the job runner needs it")
    return path


@dataclass(frozen=True)
class HostLayout:
    """What of the host's root every container sees: directories bound read-only, top-level
    symlinks (bin -> usr/bin) recreated, and the usual devices."""

    directories: tuple[str, ...]
    symlinks: Mapping[str, str]
    devices: tuple[str, ...]

    @classmethod
    def of_host(cls, root: Path = Path("/")) -> HostLayout:
        directories: list[str] = []
        symlinks: dict[str, str] = {}
        for name in HOST_DIRECTORIES:
            path = root / name
            if path.is_symlink():
                target = os.readlink(path)
                symlinks[name] = os.path.relpath(target, "/") if target.startswith("/") else target
            elif path.is_dir():
                directories.append(name)
        devices = tuple(name for name in HOST_DEVICES if (root / "dev" / name).exists())
        return cls(tuple(directories), symlinks, devices)

    def host_directory(self, path: str) -> tuple[str, str] | None:
        """The host directory a container path lies in (through a top-level symlink), and the
        host path it stands for; None when it lies outside them."""
        parts = PurePosixPath(path).parts[1:]
        if not parts:
            return None
        top, rest = parts[0], parts[1:]
        if top in self.symlinks:
            link = PurePosixPath(self.symlinks[top]).parts
            top, rest = link[0], (*link[1:], *rest)
        if top not in self.directories:
            return None
        return top, str(PurePosixPath("/", top, *rest))


@dataclass(frozen=True)
class Bind:
    """A host file or directory, seen by the container at `target`."""

    source: str
    target: str
    read_only: bool
    directory: bool


@dataclass(frozen=True)
class Sandbox:
    """A container's filesystem view and identity, set up by a shell script in a private mount
    namespace: nothing it mounts is visible to the host, and it all goes when the process does.

    The root is a tmpfs on `root` (an empty host directory). A host directory is bound
    read-only, unless a mount point must be made inside it that the host lacks (a volume at
    /etc/app): then it is an overlay whose writable layer is a tmpfs on `layers`, and the host
    is never written.
    """

    layout: HostLayout
    root: str
    layers: str
    binds: tuple[Bind, ...]
    working_dir: str
    identity: Identity

    def overlays(self, exists: Callable[[str], bool] = os.path.lexists) -> set[str]:
        """The host directories that need a mount point the host does not have."""
        needed = {bind.target for bind in self.binds} | {self.working_dir}
        result = set()
        for path in needed:
            found = self.layout.host_directory(path)
            if found and found[1] != f"/{found[0]}" and not exists(found[1]):
                result.add(found[0])
        return result

    def setpriv_args(self) -> list[str]:
        identity = self.identity
        if identity.uid is None and identity.gid is None and not identity.groups:
            return []
        args = [tool("setpriv")]
        if identity.uid is not None:
            args.append(f"--reuid={identity.uid}")
        if identity.gid is not None:
            args.append(f"--regid={identity.gid}")
        if identity.groups:
            args.append(f"--groups={','.join(str(group) for group in identity.groups)}")
        else:
            args.append("--clear-groups")
        return [*args, "--"]

    def script(self, overlays: set[str]) -> str:
        """The shell script that builds the view, then execs the container's argv ("$@")."""
        q = shlex.quote
        mount, mkdir, touch, ln = tool("mount"), tool("mkdir"), tool("touch"), tool("ln")

        def at(path: str) -> str:
            return q(self.root + str(PurePosixPath("/", path)))

        lines = ["set -eu", f"{mount} -t tmpfs -o mode=0755 tmpfs {q(self.root)}"]
        if overlays:
            lines.append(f"{mount} -t tmpfs -o mode=0700 tmpfs {q(self.layers)}")
        for name in self.layout.directories:
            lines.append(f"{mkdir} {at(name)}")
            if name in overlays:
                upper, work = f"{self.layers}/{name}/upper", f"{self.layers}/{name}/work"
                options = f"lowerdir=/{name},upperdir={upper},workdir={work}"
                lines.append(f"{mkdir} -p {q(upper)} {q(work)}")
                lines.append(f"{mount} -t overlay overlay -o {q(options)} {at(name)}")
            else:
                lines.append(f"{mount} --bind -o ro /{name} {at(name)}")
        for name, target in sorted(self.layout.symlinks.items()):
            lines.append(f"{ln} -s {q(target)} {at(name)}")
        lines += [
            f"{mkdir} -m 0755 {at('proc')} {at('sys')} {at('dev')} {at('run')} {at('var')}",
            f"{mkdir} -m 0700 {at('root')}",
            f"{mkdir} -m 1777 {at('tmp')} {at('var/tmp')}",
            f"{mount} --rbind /proc {at('proc')}",
            f"{mount} --bind -o ro /sys {at('sys')}",
            f"{mount} -t tmpfs -o mode=0755,nosuid tmpfs {at('dev')}",
            f"{mkdir} -m 1777 {at('dev/shm')}",
        ]
        for device in self.layout.devices:
            lines.append(f"{touch} {at('dev/' + device)}")
            lines.append(f"{mount} --bind /dev/{device} {at('dev/' + device)}")
        for link, target in (("fd", ""), ("stdin", "/0"), ("stdout", "/1"), ("stderr", "/2")):
            lines.append(f"{ln} -s /proc/self/fd{target} {at('dev/' + link)}")
        # Parents first: a volume inside another volume is mounted after it.
        for bind in sorted(
            self.binds, key=lambda b: (len(PurePosixPath(b.target).parts), b.target)
        ):
            target = at(bind.target)
            if bind.directory:
                lines.append(f"{mkdir} -p {target}")
            else:
                lines.append(f"{mkdir} -p {at(str(PurePosixPath(bind.target).parent))}")
                lines.append(f"[ -e {target} ] || {touch} {target}")
            read_only = " -o ro" if bind.read_only else ""
            lines.append(f"{mount} --bind{read_only} {q(bind.source)} {target}")
        lines.append(f"{mkdir} -p {at(self.working_dir)}")
        chrooted = [tool("chroot"), self.root, *self.setpriv_args(), tool("env")]
        chrooted += ["-C", self.working_dir, "--"]
        lines.append(f'exec {shlex.join(chrooted)} "$@"')
        return "\n".join(lines) + "\n"

    def command(self, argv: Sequence[str]) -> list[str]:
        """The host command line that runs `argv` in this view, in a new mount namespace."""
        script = self.script(self.overlays())
        unshare = [tool("unshare"), "--mount", "--propagation", "private", "--"]
        return [*unshare, tool("sh"), "-c", script, "sandbox", *argv]


# --- which runner runs a pod


def process_start_time(pid: int) -> str | None:
    """A live process's start time in clock ticks since boot: with the pid, it names one
    process. None when there is no such process, or only its zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


@dataclass(frozen=True)
class Claimant:
    """A runner process, as written in a pod's claim annotation: host, pid and start time."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def this_process(cls) -> Claimant:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_time(pid) or "0")

    @classmethod
    def parse(cls, text: str) -> Claimant | None:
        host, _, rest = text.partition("/")
        pid, _, started = rest.partition("/")
        if not (host and pid.isdigit() and started):
            return None
        return cls(host, int(pid), started)

    def is_alive(self) -> bool | None:
        """Whether this runner still runs; None when it ran on another machine (unknowable)."""
        if self.host != socket.gethostname():
            return None
        return process_start_time(self.pid) == self.started


def kill_leftovers(pod_dir: Path) -> None:
    """Kills the process groups a dead runner left behind for a pod, from its pid files."""
    for pid_file in sorted((pod_dir / "pids").glob("*")):
        pid_text, _, started = pid_file.read_text().partition(" ")
        if pid_text.isdigit() and process_start_time(int(pid_text)) == started.strip():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid_text), signal.SIGKILL)


# --- the API


class ApiError(Exception):
    """A refused or failed API call; status 0 when the server could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old: list again."""


class Api:
    """Plain JSON over the kubernetes client's transport (kubeconfig auth, TLS, connection
    pool): objects are read and patched exactly as the API server stores them."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = 32
        self._client = client.ApiClient(configuration)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*params, _request_timeout=timeout)
        except ApiException as error:
            raise ApiError(int(error.status or 0), str(error.reason)) from None
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        if response.status >= 400:
            data = response.read()
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = _text(data or b"")
            raise ApiError(response.status, message)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        response = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=30
        )
        try:
            data = response.read()
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        return json.loads(data) if data else None

    def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            result: dict[str, Any] = self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def stream(self, path: str, query: Mapping[str, str], timeout: float) -> Iterator[Any]:
        """The events of a watch, one JSON object per line, until the server ends it."""
        response = self._send(
            "GET", path, query=query, body=None, content_type=None, timeout=(10, timeout)
        )
        buffer = b""
        try:
            for chunk in response.response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        finally:
            response.response.release_conn()


class ClusterObjects:
    """The ObjectSource of the live cluster."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}") if name else None
        if found is None:
            return None
        return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        found = self.api.get(path) if name else None
        if found is None:
            return None
        data = {key: value.encode() for key, value in (found.get("data") or {}).items()}
        binary = found.get("binaryData") or {}
        return data | {key: base64.b64decode(value) for key, value in binary.items()}

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        return self.api.get(path) if name else None

    def volume(self, name: str) -> dict[str, Any] | None:
        return self.api.get(f"/api/v1/persistentvolumes/{name}")

    def volumes(self) -> list[dict[str, Any]]:
        listed = self.api.request("GET", "/api/v1/persistentvolumes")
        return list((listed or {}).get("items") or [])


# --- running one pod


class StopReason(enum.Enum):
    """Why a pod's processes are killed before they end on their own."""

    DELETED = "deleted"
    DEADLINE = "deadline"
    SHUTDOWN = "shutdown"


def _exit_code(returncode: int) -> int:
    """A runtime's exit code: a process killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _abridged(command: str, limit: int = 120) -> str:
    """A command line for the runner's log: one line, so that a script does not flood it."""
    line = command.replace("\n", " ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class PodRun:
    """One claimed pod, run to its end in its own thread: volumes, init containers one by one,
    then the containers together, reporting status at each step as a kubelet does."""

    def __init__(
        self,
        pod: dict[str, Any],
        *,
        api: Api,
        source: ObjectSource,
        layout: HostLayout,
        state_dir: Path,
        on_done: Callable[[PodRun], None],
    ) -> None:
        meta = pod["metadata"]
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.api, self.source, self.layout = api, source, layout
        self.pod_dir = state_dir / "pods" / self.uid
        self.logs_dir = state_dir / "logs"
        self._on_done = on_done
        self.start_time = now()
        self._started = time.monotonic()
        self._deadline: float | None = None
        self._grace: float = DEFAULT_GRACE_SECONDS
        self._stop = threading.Event()
        self._stop_reason: StopReason | None = None
        self._stop_grace: float | None = None
        self._gone = False
        self._conditions: dict[str, dict[str, Any]] = {}
        self._binds: dict[str, tuple[Bind, ...]] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        spec = pod.get("spec") or {}
        self.init_records = [
            ContainerRecord(c.get("name", ""), c.get("image", ""), "PodInitializing")
            for c in spec.get("initContainers") or []
        ]
        waiting = "PodInitializing" if self.init_records else "ContainerCreating"
        self.records = [
            ContainerRecord(c.get("name", ""), c.get("image", ""), waiting)
            for c in spec.get("containers") or []
        ]
        self.thread = threading.Thread(
            target=self._main, name=f"{self.namespace}/{self.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, reason: StopReason, grace: float | None = None) -> None:
        """Asks the run to kill its processes (SIGTERM, SIGKILL after the grace period)."""
        if self._stop_reason is None:
            self._stop_reason, self._stop_grace = reason, grace
        self._stop.set()

    # -- the run

    def _main(self) -> None:
        try:
            self._run()
        except Exception as error:  # a malformed pod or a bug: this pod fails, not the runner
            log.exception("%s/%s: the run failed", self.namespace, self.name)
            message = f"the local job runner could not run this pod: {error!r}"
            self._finish("Failed", "JobRunnerError", message)
        finally:
            for process in self._processes:  # nothing outlives its run, whatever happened
                if process.poll() is None:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            self._on_done(self)

    def _run(self) -> None:
        try:
            plan = plan_pod(self.pod, self.source)
            self._prepare(plan)
        except PodConfigError as error:
            self._fail_to_start(error)
            return
        if plan.active_deadline is not None:
            self._deadline = self._started + plan.active_deadline
        self._grace = plan.grace_seconds
        for index, container in enumerate(plan.init_containers):
            records = self.init_records[index : index + 1]
            if not self._run_together([container], records, "Pending"):
                self._end_stopped()
                return
            if not self.init_records[index].succeeded:
                self._finish("Failed")
                return
        if not self._run_together(plan.containers, self.records, "Running"):
            self._end_stopped()
            return
        succeeded = all(record.succeeded for record in self.records)
        self._finish("Succeeded" if succeeded else "Failed")

    def _prepare(self, plan: PodPlan) -> None:
        """Materializes the volumes and works out every container's binds, before anything
        runs."""
        for directory in ("volumes", "termination", "pids", "rootfs", "layers"):
            (self.pod_dir / directory).mkdir(parents=True, exist_ok=True)
        os.chmod(self.pod_dir, 0o700)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        on_host = {
            name: materialize(volume, self.pod_dir / "volumes" / name, plan.fs_group)
            for name, volume in plan.volumes.items()
        }
        for container in (*plan.init_containers, *plan.containers):
            try:
                self._binds[container.name] = self._container_binds(container, plan, on_host)
            except PodConfigError as error:
                error.container = container.name
                raise

    def _container_binds(
        self, container: ContainerPlan, plan: PodPlan, on_host: Mapping[str, Path]
    ) -> tuple[Bind, ...]:
        binds = []
        for mount in container.mounts:
            read_only = mount.read_only or volume_is_read_only(plan.volumes[mount.volume])
            source = on_host[mount.volume]
            if mount.sub_path:
                source = source / relative_path(mount.sub_path, f"subPath of {mount.volume}")
                if not source.exists():
                    if read_only:
                        raise PodConfigError(
                            f"subPath {mount.sub_path} does not exist in volume {mount.volume}",
                            reason=MOUNT_ERROR,
                        )
                    source.mkdir(mode=0o755, parents=True)
            binds.append(Bind(str(source), mount.path, read_only, source.is_dir()))
        message_file = self.pod_dir / "termination" / container.name
        message_file.touch()
        os.chmod(message_file, 0o666)  # whichever uid the process runs as may write it
        binds.append(Bind(str(message_file), container.termination_path, False, False))
        return tuple(binds)

    def _log_file(self, container: str) -> Path:
        return self.logs_dir / f"{self.namespace}_{self.name}_{container}.log"

    def _start(
        self, container: ContainerPlan, record: ContainerRecord
    ) -> subprocess.Popen[bytes] | None:
        sandbox = Sandbox(
            layout=self.layout,
            root=str(self.pod_dir / "rootfs" / container.name),
            layers=str(self.pod_dir / "layers" / container.name),
            binds=self._binds[container.name],
            working_dir=container.working_dir,
            identity=container.identity,
        )
        Path(sandbox.root).mkdir(exist_ok=True)
        Path(sandbox.layers).mkdir(exist_ok=True)
        record.started_at = now()
        try:
            with self._log_file(container.name).open("wb") as output:
                process = subprocess.Popen(
                    sandbox.command(container.argv),
                    env=dict(container.env),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed as one
                )
        except OSError as error:
            record.finish(128, f"failed to start: {error}", reason="StartError")
            return None
        record.pid = process.pid
        started = process_start_time(process.pid) or ""
        (self.pod_dir / "pids" / container.name).write_text(f"{process.pid} {started}\n")
        log.info(
            "%s/%s: container %s started (pid %d): %s",
            self.namespace,
            self.name,
            container.name,
            process.pid,
            _abridged(shlex.join(container.argv)),
        )
        return process

    def _collect(
        self, container: ContainerPlan, record: ContainerRecord, process: subprocess.Popen[bytes]
    ) -> None:
        """Records a container's exit: what is left of its process group is killed, as a
        runtime stops the whole container when its main process ends."""
        _signal_group(process.pid, signal.SIGKILL)
        exit_code = _exit_code(process.wait())
        message = termination_message(
            self.pod_dir / "termination" / container.name,
            self._log_file(container.name),
            exit_code,
            container.fallback_to_logs,
        )
        record.finish(exit_code, message)
        log.info(
            "%s/%s: container %s exited %d", self.namespace, self.name, container.name, exit_code
        )

    def _run_together(
        self, containers: Sequence[ContainerPlan], records: Sequence[ContainerRecord], phase: str
    ) -> bool:
        """Runs containers side by side until all have exited; False when stopped first.

        `phase` is the pod's while they run: Pending for an init container, else Running.
        """
        if self._stop.is_set():  # deleted, say, while the previous container ran
            return False
        running: dict[int, subprocess.Popen[bytes]] = {}
        for index, container in enumerate(containers):
            process = self._start(container, records[index])
            if process is not None:
                running[index] = process
                self._processes.append(process)
        self._report(phase)
        while running:
            exited = [index for index, process in running.items() if process.poll() is not None]
            for index in exited:
                self._collect(containers[index], records[index], running.pop(index))
            if exited and running:
                self._report(phase)
            if not running:
                break
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self.stop(StopReason.DEADLINE)
            if self._stop.wait(POLL_SECONDS):
                self._terminate(running, containers, records)
                return False
        return True

    def _terminate(
        self,
        running: dict[int, subprocess.Popen[bytes]],
        containers: Sequence[ContainerPlan],
        records: Sequence[ContainerRecord],
    ) -> None:
        """SIGTERM to every process group, SIGKILL to what outlives the grace period."""
        grace = self._grace if self._stop_grace is None else self._stop_grace
        for process in running.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in running.values()):
            time.sleep(POLL_SECONDS / 2)
        for index, process in running.items():
            self._collect(containers[index], records[index], process)

    # -- status

    def _end_stopped(self) -> None:
        if self._stop_reason is StopReason.DEADLINE:
            message = "Pod was active on the node longer than the specified deadline"
            self._finish("Failed", "DeadlineExceeded", message)
        elif self._stop_reason is StopReason.SHUTDOWN:
            message = "the local job runner stopped while this pod ran; it is not run again"
            self._finish("Failed", "JobRunnerStopped", message)
        else:  # deleted: reported for whoever still watches it, if it still exists
            self._finish("Failed")

    def _fail_to_start(self, error: PodConfigError) -> None:
        for record in (*self.init_records, *self.records):
            if record.name == error.container:
                record.waiting_reason, record.waiting_message = error.reason, error.message
        where = f"container {error.container}: " if error.container else ""
        log.info("%s/%s: cannot start: %s%s", self.namespace, self.name, where, error.message)
        self._finish("Failed", error.reason, where + error.message)

    def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        self._report(phase, reason, message, attempts=20)
        log.info("%s/%s: %s", self.namespace, self.name, phase)

    def _stamped_conditions(self, phase: str) -> list[dict[str, Any]]:
        """The conditions, each keeping its lastTransitionTime while its status holds."""
        for kind, (status, reason) in pod_conditions(
            phase, self.init_records, self.records
        ).items():
            previous = self._conditions.get(kind)
            if previous is None or previous["status"] != status:
                since = now()
            else:
                since = previous["lastTransitionTime"]
            condition = {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": since,
            }
            if reason:
                condition["reason"] = reason
            self._conditions[kind] = condition
        return list(self._conditions.values())

    def _report(
        self, phase: str, reason: str | None = None, message: str | None = None, attempts: int = 3
    ) -> None:
        """Patches pods/status; a pod that is gone ends the reporting, errors are retried."""
        if self._gone:
            return
        body = pod_status_patch(
            phase,
            self.start_time,
            self._stamped_conditions(phase),
            init=self.init_records,
            main=self.records,
            reason=reason,
            message=message,
        )
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        for attempt in range(attempts):
            try:
                self.api.request("PATCH", path, body=body, content_type=STRATEGIC_MERGE_PATCH)
                return
            except ApiError as error:
                if error.status == 404:
                    self._gone = True
                    return
                if error.status in (400, 422):
                    log.error("%s/%s: status refused: %s", self.namespace, self.name, error)
                    return
                log.warning("%s/%s: status not reported: %s", self.namespace, self.name, error)
                time.sleep(min(0.2 * 2**attempt, 2.0))


# --- the watch


def _is_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def is_runnable(pod: dict[str, Any]) -> bool:
    """Bound to a node, not being deleted, and never started by anyone."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    return bool(
        spec.get("nodeName")
        and not meta.get("deletionTimestamp")
        and status.get("phase") in (None, "", "Pending")
        and not status.get("startTime")
    )


class Runner:
    """Watches Job pods; claims each that is bound and not started, and runs it in a PodRun.

    Only one runner is meant to serve a cluster, but a pod is claimed (an annotation patched
    with a resourceVersion precondition) before it runs, so that it never runs twice; a pod
    claimed by a runner of this machine that is no longer alive is failed, never re-run.
    """

    def __init__(
        self, api: Api, state_dir: Path, layout: HostLayout, shutdown_grace: float
    ) -> None:
        self.api = api
        self.source = ClusterObjects(api)
        self.state_dir = state_dir
        self.layout = layout
        self.shutdown_grace = shutdown_grace
        self.me = Claimant.this_process()
        self.runs: dict[str, PodRun] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._resource_version: str | None = None

    @property
    def ready_file(self) -> Path:
        """Exists once the first list went through: up.sh waits for it."""
        return self.state_dir / "ready"

    # -- watching

    def serve(self, stopping: threading.Event) -> None:
        """Lists, then watches, listing again after each watch, until stopped. A watch that
        breaks is resumed from where it was, unless its resourceVersion has expired."""
        delay = 0.5
        while not stopping.is_set():
            try:
                if self._resource_version is None:
                    self._resource_version = self._relist()
                self._watch()
                self._resource_version = None
                delay = 0.5
            except WatchExpiredError:
                self._resource_version = None
            except Exception as error:  # the API server restarting, or anything else: retry
                log.warning("watch: %s; again in %.1fs", error, delay)
                stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def _selectors(self) -> dict[str, str]:
        return {"labelSelector": JOB_NAME_LABEL, "fieldSelector": "spec.nodeName!="}

    def _relist(self) -> str:
        listed = self.api.request("GET", "/api/v1/pods", query=self._selectors())
        present = set()
        for pod in listed.get("items") or []:
            present.add((pod.get("metadata") or {}).get("uid"))
            self.handle("ADDED", pod)
        with self._lock:
            vanished = [run for uid, run in self.runs.items() if uid not in present]
        for run in vanished:
            run.stop(StopReason.DELETED)
        self.ready_file.touch()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self) -> None:
        """Handles events until the server ends the watch, keeping the resourceVersion to
        resume from."""
        query = {
            **self._selectors(),
            "watch": "true",
            "resourceVersion": str(self._resource_version),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            for event in self.api.stream("/api/v1/pods", query, WATCH_SECONDS + 30):
                kind, pod = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        raise WatchExpiredError
                    raise ApiError(int(pod.get("code") or 0), str(pod.get("message")))
                metadata = pod.get("metadata") or {}
                self._resource_version = metadata.get("resourceVersion", self._resource_version)
                if kind != "BOOKMARK":
                    self.handle(str(kind), pod)
        except ApiError as error:
            if error.status == 410:
                raise WatchExpiredError from None
            raise

    # -- one event

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """Never raises: a pod the runner cannot make sense of is logged and skipped."""
        try:
            self._handle(kind, pod)
        except Exception:
            meta = pod.get("metadata") or {}
            log.exception("pod %s/%s: event %s", meta.get("namespace"), meta.get("name"), kind)

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            run = self.runs.get(meta["uid"])
        if run is not None:
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                run.stop(StopReason.DELETED, meta.get("deletionGracePeriodSeconds"))
            return
        if kind == "DELETED" or _is_terminal(pod):
            return
        claim = (meta.get("annotations") or {}).get(CLAIM_ANNOTATION)
        if claim is None:
            if is_runnable(pod):
                self._claim_and_run(pod)
        elif claim != str(self.me) and not meta.get("deletionTimestamp"):
            self._fail_if_orphaned(pod, claim)

    def _pod_path(self, pod: dict[str, Any]) -> str:
        meta = pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def _claim_and_run(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            if self._closing:
                return
        body = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {CLAIM_ANNOTATION: str(self.me)},
            }
        }
        try:
            claimed = self.api.request(
                "PATCH", self._pod_path(pod), body=body, content_type=MERGE_PATCH
            )
        except ApiError as error:
            if error.status in (404, 409):  # changed or gone meanwhile: the next event decides
                return
            raise
        run = PodRun(
            claimed,
            api=self.api,
            source=self.source,
            layout=self.layout,
            state_dir=self.state_dir,
            on_done=self._done,
        )
        with self._lock:
            self.runs[meta["uid"]] = run
        log.info("%s/%s: claimed", meta["namespace"], meta["name"])
        run.start()

    def _done(self, run: PodRun) -> None:
        with self._lock:
            self.runs.pop(run.uid, None)

    def _fail_if_orphaned(self, pod: dict[str, Any], claim: str) -> None:
        owner = Claimant.parse(claim)
        if owner is None or owner.is_alive() is not False:
            return  # another live runner's, or one of another machine: not this runner's call
        meta = pod["metadata"]
        kill_leftovers(self.state_dir / "pods" / meta["uid"])
        message = (
            f"the job runner that ran this pod ({claim}) stopped while it was running; "
            f"the pod is not run again"
        )
        self.api.request(
            "PATCH",
            self._pod_path(pod) + "/status",
            body=orphaned_status_patch(pod, message),
            content_type=STRATEGIC_MERGE_PATCH,
        )
        shutil.rmtree(self.state_dir / "pods" / meta["uid"], ignore_errors=True)
        log.info("%s/%s: failed, its runner is gone", meta["namespace"], meta["name"])

    def shutdown(self) -> None:
        """Kills every running pod's processes and reports those pods Failed."""
        with self._lock:
            self._closing = True
            runs = list(self.runs.values())
        for run in runs:
            run.stop(StopReason.SHUTDOWN, self.shutdown_grace)
        for run in runs:
            run.thread.join(timeout=self.shutdown_grace + 2)


def sandbox_problem(scratch: Path) -> str | None:
    """Why a private mount namespace cannot be made here, if it cannot: found at start rather
    than by every pod failing."""
    probe = [tool("unshare"), "--mount", "--propagation", "private", "--"]
    probe += [tool("mount"), "-t", "tmpfs", "tmpfs", str(scratch)]
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return done.stderr.strip() or f"exit {done.returncode}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path, help="pod files and logs")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=2.0,
        help="seconds a process gets between SIGTERM and SIGKILL when the runner stops",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if os.geteuid() != 0:
        log.error("the job runner needs root: it uses mount namespaces, chroot and setpriv")
        return 1
    try:
        for name in SANDBOX_TOOLS:
            tool(name)
    except RuntimeError as error:
        log.error("%s", error)
        return 1
    os.umask(0o022)
    state_dir: Path = args.state_dir.resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "pods").mkdir(mode=0o700, exist_ok=True)
    if problem := sandbox_problem(state_dir / "pods"):
        log.error("containers cannot be given their own filesystem view here: %s", problem)
        return 1
    runner = Runner(Api(args.kubeconfig), state_dir, HostLayout.of_host(), args.shutdown_grace)
    runner.ready_file.unlink(missing_ok=True)

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=runner.serve, args=(stopping,), name="watch", daemon=True).start()
    log.info("watching pods labelled %s as %s", JOB_NAME_LABEL, runner.me)
    while not stopping.wait(1):
        pass
    log.info("stopping")
    runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
