"""A pod, planned before anything runs: each container's command, environment, mounts and
identity, resolved from the pod and what it refers to, or the error a kubelet would report."""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.job_runner.environment import expand, resolve_env
from cluster.job_runner.pod import CONFIG_ERROR, UNSUPPORTED, ObjectSource, PodConfigError
from cluster.job_runner.volumes import Volume, plan_volume

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_GRACE_SECONDS = 30


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
