"""Termination messages, as the kubelet reads them: the container's terminationMessagePath or,
with FallbackToLogsOnError, the tail of its output."""

from __future__ import annotations

import os
from pathlib import Path

from cluster.job_runner.pod import as_text

# The kubelet's limits on a termination message (pkg/kubelet/container/runtime.go).
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80


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
    return as_text(b"\n".join(lines[-keep:]))


def termination_message(
    message_file: Path, log_file: Path, exit_code: int, fallback_to_logs: bool
) -> str:
    """What the container wrote to its terminationMessagePath (its last 4096 bytes) or, with
    FallbackToLogsOnError, a failure and nothing written, the tail of its output."""
    message = read_tail(message_file, MAX_MESSAGE_BYTES)
    if not message and fallback_to_logs and exit_code != 0:
        return log_tail(read_tail(log_file, FALLBACK_LOG_BYTES))
    return as_text(message)
