"""What every part of the job runner says of a pod: the node's address, the reasons a pod fails
before it runs (PodConfigError), and the objects it refers to (ObjectSource)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

NODE_IP = "127.0.0.1"

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


class ObjectSource(Protocol):
    """Reads the objects a pod refers to; None when one does not exist."""

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def volume(self, name: str) -> dict[str, Any] | None: ...

    def volumes(self) -> list[dict[str, Any]]: ...


def as_text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")
