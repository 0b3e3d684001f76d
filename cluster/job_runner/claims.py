"""Which runner runs a pod: a claim names one runner process (host, pid, start time), so that
a pod never runs twice, and a pod whose runner died is found and its processes killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

# The runner that runs a pod, as "<host>/<pid>/<process start time>": set, with a
# resourceVersion precondition, before anything runs, so that no pod ever runs twice.
CLAIM_ANNOTATION = "job-runner.local-cluster/claimed-by"


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
