"""The container's filesystem view: a private mount namespace and chroot showing the host's
/usr and /etc read-only, the pod's volumes at their mountPaths, and the container's identity."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cluster.job_runner.plan import Identity

# Host directories every container sees read-only; the top-level ones that are symlinks on the
# host (bin -> usr/bin) are recreated as the same symlinks.
HOST_DIRECTORIES = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Where the sandbox's tools are looked up; the ones run after chroot live under /usr.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_TOOLS = ("unshare", "sh", "mount", "mkdir", "touch", "ln", "chroot", "setpriv", "env")


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


def sandbox_problem(scratch: Path) -> str | None:
    """Why a private mount namespace cannot be made here, if it cannot: found at start rather
    than by every pod failing."""
    probe = [tool("unshare"), "--mount", "--propagation", "private", "--"]
    probe += [tool("mount"), "-t", "tmpfs", "tmpfs", str(scratch)]
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return done.stderr.strip() or f"exit {done.returncode}"
