"""A pod's volumes on this machine: configMap and secret files, emptyDir, hostPath, and a
claim's hostPath PersistentVolume (the local cluster runs no volume binder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeAlias

from cluster.job_runner.pod import MOUNT_ERROR, UNSUPPORTED, ObjectSource, PodConfigError


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
