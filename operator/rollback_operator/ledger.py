"""The ledger: what a request's status records, and the one way anything writes it.

Steps record the originals they are about to change (the first record wins, durable before the
change: safety rule 2), the sections of their capability (status.backup, .jobs, .checks,
.monitoring, .notifications; durable when a side effect depends on them), the targets
Preflight resolved and where the post-mortem went. The runner records the engine's
transitions. `StatusLedger` keeps all of it in one `Status`, behind one lock (steps run in
worker threads, notifications in tasks of their own), and is the only code that writes
`.status`: durable records at once through `write`, everything else with the next `flush`.
A durable record carries whatever transition is still unwritten (a step's start, the previous
step's outcome) in the same write: each write is a round trip the run waits for, and before
the maintenance page is on, every one of them is time the users see errors.

Every write carries the resourceVersion the ledger last saw (safety rule 11): were a second
instance of the operator writing the same request, one of them gets a conflict. On a
conflict the ledger reads the request again. When the server's status is still what this
ledger last wrote (a person annotated the request, Kopf set its finalizer), it writes again at
the new version. When someone else wrote the status, the ledger takes the server's record and
raises `SupersededError`: the runner decides again from it, and the first record of an original,
as the server holds it, is the one that stays.

Whoever may `get` the request reads its status, so the ledger scrubs what it records
(`redaction.scrub`): the run's and each step's message, the conditions, and the capabilities'
sections, which quote Job output, psql's errors and servers' answers. Not the saved originals:
they are put back exactly as they were.

Tests use the same class with a `write` that records the patches instead of sending them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, Protocol

from rollback_operator.model import Targets
from rollback_operator.redaction import scrub, scrub_tree
from rollback_operator.status import Status

# Sends a merge patch of .status, at a resourceVersion (None: unconditionally); returns the
# new version, or raises ConflictError.
Writer = Callable[[dict[str, Any], "str | None"], "str | None"]
# Reads the status as the API server holds it, and its resourceVersion.
Reader = Callable[[], tuple[dict[str, Any], str]]

ATTEMPTS = 5  # writes at a fresh version before giving up (each conflict is another writer)


class ConflictError(Exception):
    """The request changed since the version a write carried (HTTP 409)."""


class SupersededError(Exception):
    """Someone else wrote the request's status: the ledger now holds the server's record, and
    what the caller was about to do must be decided again from it."""


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

    def save_all(self, section: str, values: dict[str, Any]) -> None:
        """`save` of several objects at once, in one write: a step that changes several
        objects records every original before the first change."""

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
        *,
        read: Reader | None = None,
        version: str | None = None,
        seen: Reader | None = None,
    ) -> None:
        self._status = status
        self._send: Writer = write or (lambda patch, version: None)
        self._read = read
        self._body = body
        self._lock = threading.RLock()
        self._dirty = False
        self._version = version  # of the request, as this ledger last read or wrote it
        self._seen = seen  # the request as this process's watch last delivered it, no call
        self._written = status.to_dict()  # the status the server holds, to our knowledge

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
            self._status = _scrubbed(transition(self._status, *args))
            if changed is None:
                changed = self._status.to_dict() != before
            self._dirty = self._dirty or changed
            return self._status.copy()

    @property
    def pending(self) -> bool:
        """Whether a transition is recorded that is not written yet."""
        with self._lock:
            return self._dirty

    def flush(self) -> None:
        """Writes the whole status if anything changed since the last write."""
        with self._lock:
            if self._dirty:
                self._write(self._status.to_dict())
                self._dirty = False

    def _write_durably(self, patch: dict[str, Any]) -> None:
        """A record that must be durable now: with the transitions recorded since the last
        write, when there are any (a step's start goes with its first record: one write)."""
        if self._dirty:
            self._write(self._status.to_dict())
            self._dirty = False
        else:
            self._write(patch)

    def _write(self, patch: dict[str, Any]) -> None:
        """Sends `patch` at the version last seen (see the module's docstring for conflicts)."""
        self._catch_up()
        for _ in range(ATTEMPTS):
            try:
                self._version = self._send(patch, self._version)
            except ConflictError:
                self._reread()
                continue
            self._written = _merged(self._written, patch)
            return
        raise SupersededError(f"the status kept changing under {ATTEMPTS} writes in a row")

    def _catch_up(self) -> None:
        """The version the watch delivered since, when the status there is still what this
        ledger wrote (Kopf set its finalizer, a person annotated the request): the write then
        carries it instead of meeting a conflict, a read and a second write. A status anyone
        else wrote, or one the watch has not delivered yet, changes nothing here: the write
        goes at the version this ledger knows, and a conflict is handled as ever."""
        if self._seen is None:
            return
        server, version = self._seen()
        if version and version != self._version and _typed(server) == _typed(self._written):
            self._version = version

    def _reread(self) -> None:
        """After a conflict: the request's new version, and whether anyone else wrote."""
        if self._read is None:
            raise SupersededError("the request changed, and this ledger cannot read it again")
        server, self._version = self._read()
        if _typed(server) == _typed(self._written):
            return  # only the request's metadata changed: write again at the new version
        self._status, self._written, self._dirty = Status.from_dict(server), server, False
        raise SupersededError("another writer changed the request's status; deciding again from it")

    # --- the Ledger protocol, for steps

    def original(self, section: str, key: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._status.saved.get(section, {}).get(key))

    def originals(self, section: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._status.saved.get(section, {}))

    def save(self, section: str, key: str, value: Any) -> None:
        self.save_all(section, {key: value})

    def save_all(self, section: str, values: dict[str, Any]) -> None:
        with self._lock:
            recorded = self._status.saved.get(section, {})
            new = {k: v for k, v in values.items() if recorded.get(k) is None}
            if not new:
                return
            for key, value in new.items():
                self._status.saved.setdefault(section, {})[key] = copy.deepcopy(value)
            self._write_durably({"saved": copy.deepcopy(self._status.saved)})

    def section(self, name: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._status.sections.get(name))

    def put_section(self, name: str, value: Any, *, durable: bool = False) -> None:
        with self._lock:
            value = scrub_tree(value)
            self._status.sections[name] = copy.deepcopy(value)
            if durable:
                self._write_durably({name: copy.deepcopy(value)})
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


def _scrubbed(status: Status) -> Status:
    """`status` with nothing secret in what people read of it (see the module's docstring)."""
    status.message = scrub(status.message)
    for record in status.steps:
        record.message = scrub(record.message)
    status.conditions = scrub_tree(status.conditions)
    status.sections = scrub_tree(status.sections)
    return status


def _typed(raw: dict[str, Any]) -> dict[str, Any]:
    """A status as the operator reads it, for comparing what two writers recorded."""
    return Status.from_dict(raw).to_dict()


def _merged(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as a JSON merge patch (RFC 7386), as the API server does."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


def _with(status: Status, field: str, value: Any) -> Status:
    setattr(status, field, value)
    return status
