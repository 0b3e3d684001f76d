"""The ledger: what a request's status records, and the one way anything writes it.

Steps record the originals they are about to change (the first record wins, durable before the
change: safety rule 2), the sections of their capability (status.backup, .jobs, .checks,
.monitoring, .notifications; durable when a side effect depends on them), the targets
Preflight resolved and where the post-mortem went. The runner records the engine's
transitions. `StatusLedger` keeps all of it in one `Status`, behind one lock (steps run in
worker threads, notifications in tasks of their own), and is the only code that writes
`.status`: durable records at once through `write`, everything else with the next `flush`.

Tests use the same class with a `write` that records the patches instead of sending them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, Protocol

from rollback_operator.model import Targets
from rollback_operator.status import Status

Writer = Callable[[dict[str, Any]], None]  # sends a merge patch of .status


class Ledger(Protocol):
    """What a step may read and write of the request's record."""

    def original(self, section: str, key: str) -> Any:
        """The state of `key` before the run changed it (status.saved.<section>.<key>)."""

    def originals(self, section: str) -> dict[str, Any]:
        """Every original recorded in status.saved.<section>."""

    def save(self, section: str, key: str, value: Any) -> None:
        """Records the state of `key` before a change, durably, unless already recorded: a step
        re-run after a crash must never overwrite the true original with a fresh read of an
        object it had already changed."""

    def section(self, name: str) -> Any:
        """status.<name>, one of status.SECTIONS (a copy: change it through `put_section`)."""

    def put_section(self, name: str, value: Any, *, durable: bool = False) -> None:
        """Sets status.<name>; `durable` writes it at once, before a side effect that depends
        on it, else it goes with the step's outcome."""

    def set_targets(self, targets: Targets) -> None:
        """The objects the run works on, as Preflight resolved them."""

    def set_report(self, reference: dict[str, str]) -> None:
        """Where the post-mortem is (status.report)."""

    def request(self) -> dict[str, Any]:
        """The request as it stands, status included: what the post-mortem is written from."""


class StatusLedger:
    """The request's record in memory, and its single writer (see the module's docstring)."""

    def __init__(
        self,
        status: Status,
        write: Writer | None = None,
        body: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self._status = status
        self._write: Writer = write or (lambda _: None)
        self._body = body
        self._lock = threading.RLock()
        self._dirty = False

    @property
    def status(self) -> Status:
        """A copy of the record as it stands."""
        with self._lock:
            return self._status.copy()

    def update(
        self,
        transition: Callable[..., Status],
        *args: Any,
        changed: bool | None = True,
    ) -> Status:
        """Records `transition(status, *args)` (one of the engine's) and returns it, to be
        written with the next flush when `changed` (None: when it changed anything a reader
        sees)."""
        with self._lock:
            before = self._status.to_dict() if changed is None else None
            self._status = transition(self._status, *args)
            if changed is None:
                changed = self._status.to_dict() != before
            self._dirty = self._dirty or changed
            return self._status.copy()

    def flush(self) -> None:
        """Writes the whole status if anything changed since the last write."""
        with self._lock:
            if self._dirty:
                self._write(self._status.to_dict())
                self._dirty = False

    # --- the Ledger protocol, for steps

    def original(self, section: str, key: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._status.saved.get(section, {}).get(key))

    def originals(self, section: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._status.saved.get(section, {}))

    def save(self, section: str, key: str, value: Any) -> None:
        with self._lock:
            if self._status.saved.get(section, {}).get(key) is not None:
                return
            self._status.saved.setdefault(section, {})[key] = copy.deepcopy(value)
            self._write({"saved": copy.deepcopy(self._status.saved)})

    def section(self, name: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._status.sections.get(name))

    def put_section(self, name: str, value: Any, *, durable: bool = False) -> None:
        with self._lock:
            self._status.sections[name] = copy.deepcopy(value)
            if durable:
                self._write({name: copy.deepcopy(value)})
            else:
                self._dirty = True

    def set_targets(self, targets: Targets) -> None:
        # Written with Preflight's outcome: Preflight changes nothing, so were the operator
        # killed before that write, Preflight would simply run again.
        self.update(_with, "targets", targets)

    def set_report(self, reference: dict[str, str]) -> None:
        self.update(_with, "report", dict(reference))

    def request(self) -> dict[str, Any]:
        with self._lock:
            return {**self._body(), "status": self._status.to_dict()}


def _with(status: Status, field: str, value: Any) -> Status:
    setattr(status, field, value)
    return status
