"""Following objects with watches instead of reading them again and again: a rollout's Deployments
(RevertWorkloads, Verify), a step's Job (the database steps, the smoke tests).

A step waiting for objects to reach a state used to read them again with backoff, each read a
request, most of them answering "not yet". Now the step hands the objects it holds (each read
or written at a resourceVersion) to a `Follower`: one watch, in a thread of its own, narrowed
to the object's name when it follows one (a Job), else of the namespace's collection, filtered
to the names it follows (a run's Deployments). It starts from the earliest version the step
holds, so that every change after any of them arrives as it happens and none is missed; an
object's state from before the one held (delivered because the watch started at an earlier
object's version) is passed over, never taken for the newer. The watch's timeout is the
step's deadline (at most `WATCH_SLICE_SECONDS` a request); when the server ends it (its
timeout, a restart) it is opened again from the last version seen; after `410 Gone` (that
version left the server's window) the objects are listed again and followed from there; while
the API server does not answer, it is tried again with backoff until the deadline, and the last
error is there for the step to say.

A step's call never blocks a worker thread waiting: it takes what the follower holds now and,
when that is not yet what it waits for, notes the follower in its `Wakeups` and returns a Wait.
The runner then waits on the event loop (`Wakeups.changed`) until a followed object changes,
the Wait's delay passes or an abort is asked, and calls the step again. A hundred runs waiting
for their rollouts hold no thread, so the run that has just been created is served at once. The
follower lives on between calls (this process's memory, keyed by request and purpose), so the
next call costs the API server nothing. It ends when the step is done with it (`stop`), at its
deadline, or when nobody has asked for it for `IDLE_SECONDS` (the run was aborted, or another
instance leads now). A restarted operator has none: its step reads the objects once and follows
them from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import urllib3

from rollback_operator.kube import ApiError, Kube, lean

CALL_SECONDS = 4.0  # the longest a run waiting on its watches goes without calling its step again
WATCH_SLICE_SECONDS = 60  # the longest one watch request is left open
IDLE_SECONDS = 30.0  # a follower nobody asked for this long stops
RETRY_SECONDS = 0.5  # after a failed watch, then twice as long each time, up to:
RETRY_MAX_SECONDS = 5.0

Objects = dict[str, dict[str, Any] | None]  # by name; None: the object does not exist (now)


@dataclass(frozen=True)
class Event:
    """One watch event, as it bears on the followed object (pure: see `apply_event`)."""

    obj: dict[str, Any] | None  # the object after the event (None: deleted)
    version: str | None  # where to resume from; None: list again first (410 Gone)
    changed: bool  # whether `obj` is news (a bookmark only moves the version)


def apply_event(current: dict[str, Any] | None, version: str, raw: dict[str, Any]) -> Event:
    """What a watch event makes of the object held at `version`. An ERROR other than 410 is
    raised as the ApiError it carries (the watch is then opened again, with backoff)."""
    kind, obj = raw.get("type"), raw.get("object") or {}
    if kind == "ERROR":
        if obj.get("code") == 410:
            return Event(current, None, False)
        raise ApiError(int(obj.get("code") or 0), obj.get("reason", ""), obj.get("message", ""))
    seen = str((obj.get("metadata") or {}).get("resourceVersion") or version)
    if kind == "BOOKMARK":
        return Event(current, seen, False)
    if kind == "DELETED":
        return Event(None, seen, True)
    return Event(obj, seen, True)


def watch_seconds(deadline_left: float, cap: float = WATCH_SLICE_SECONDS) -> int:
    """A watch request's timeoutSeconds: what is left of the deadline, at most `cap`, at
    least 1 (the server reads 0 as its own default)."""
    return max(1, min(int(deadline_left + 0.999), int(cap)))


def retry_delay(failures: int, deadline_left: float) -> float:
    """How long to wait before opening a failed watch again: RETRY_SECONDS, doubled by each
    failure in a row, at most RETRY_MAX_SECONDS, never past the deadline."""
    doubled: float = RETRY_SECONDS * 2.0 ** min(max(failures - 1, 0), 8)
    return max(0.0, min(doubled, RETRY_MAX_SECONDS, deadline_left))


class Follower:
    """The latest state of some objects of one collection, kept by watches (see the module's
    docstring). `objects` start as held by the step, each at its resourceVersion."""

    def __init__(
        self,
        kube: Kube,
        collection: str,
        objects: dict[str, dict[str, Any]],
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube, self.collection, self._clock = kube, collection, clock
        self._cond = threading.Condition()
        self._objects: Objects = {name: lean(obj) for name, obj in objects.items()}
        self._names = frozenset(objects)
        self._deadline = clock() + seconds
        self._asked = clock()
        self._stop = threading.Event()
        self._stream: Any = None  # the watch's response, while one is open
        self._changes = 0  # how many changes the watches have delivered
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.problem: str | None = None  # the last watch error, while there is one
        version = _earliest([o["metadata"].get("resourceVersion") for o in objects.values()])
        threading.Thread(
            target=self._follow, args=(version,), daemon=True, name=f"watch {collection}"
        ).start()

    @property
    def alive(self) -> bool:
        return not self._stop.is_set() and self._clock() < self._deadline

    def extend(self, seconds: float) -> None:
        """Follows on until `seconds` from now, if that is later (the next step's deadline)."""
        with self._cond:
            self._deadline = max(self._deadline, self._clock() + seconds)

    def current(self) -> Objects:
        with self._cond:
            self._asked = self._clock()
            return dict(self._objects)

    def snapshot(self) -> tuple[Objects, int]:
        """The objects as held now, and how many changes they include (for `changed_since`)."""
        with self._cond:
            self._asked = self._clock()
            return dict(self._objects), self._changes

    async def changed_since(self, seen: int) -> None:
        """Returns once the objects have changed since the snapshot that counted `seen`
        changes, or the follower has ended: on the event loop, holding no thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._changes != seen or not self.alive:
                return
            self._waiters.append((loop, future))
        try:
            await future
        finally:
            with self._cond, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))

    def wait(self, until: Callable[[Objects], bool], seconds: float) -> Objects:
        """The objects once `until` holds of them, or as they are after `seconds`."""
        end = self._clock() + seconds
        with self._cond:
            while not until(self._objects) and self.alive:
                left = min(end, self._deadline) - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._asked = self._clock()
            return dict(self._objects)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            stream = self._stream
            self._cond.notify_all()
            self._wake()
        if stream is not None:  # ends a watch blocked in a read at once
            shutdown = getattr(stream, "shutdown", None)
            # The watch thread may have closed it meanwhile (its socket gone: EBADF): ended too.
            with contextlib.suppress(OSError):
                if shutdown is not None:
                    shutdown()

    # --- the watch threads

    def _wanted(self) -> bool:
        with self._cond:
            idle = self._clock() - self._asked > IDLE_SECONDS
        if idle:
            self._stop.set()
        return self.alive

    def _follow(self, version: str | None) -> None:
        failures = 0
        while self._wanted():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version)
                failures = 0
                self._noted(None)
            except ApiError as error:
                if error.status == 410:
                    version = None
                failures += 1
                self._noted(f"watching {self._what()}: {error}")
                self._stop.wait(retry_delay(failures, self._deadline - self._clock()))
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as error:
                # a connection cut mid-stream (or by `stop`), a torn line
                failures += 1
                self._noted(f"watching {self._what()}: {error}")
                self._stop.wait(retry_delay(failures, self._deadline - self._clock()))

    def _what(self) -> str:
        return ", ".join(sorted(self._names))

    def _selector(self) -> dict[str, str]:
        """Narrowed to the one object followed; for several, the collection (filtered here)."""
        if len(self._names) == 1:
            return {"fieldSelector": f"metadata.name={next(iter(self._names))}"}
        return {}

    def _relist(self) -> str:
        listed = self.kube.request("GET", self.collection, query=self._selector())
        found = {item["metadata"]["name"]: item for item in (listed or {}).get("items") or []}
        for name in self._names:
            self._changed(name, found.get(name))
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str | None:
        """One watch request, from `version`; the version to go on from (None: list first)."""
        query = {
            "watch": "true",
            **self._selector(),
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(watch_seconds(self._deadline - self._clock())),
        }
        stream = self.kube.stream(self.collection, query)
        with self._cond:
            self._stream = stream
        try:
            for line in _lines(stream):
                if not self.alive:
                    break
                raw = json.loads(line)
                name = ((raw.get("object") or {}).get("metadata") or {}).get("name")
                with self._cond:
                    current = self._objects.get(name) if name in self._names else None
                event = apply_event(current, version, raw)
                if event.version is None:
                    return None
                version = event.version
                if event.changed and name in self._names and not _older(event.obj, current):
                    self._changed(name, event.obj)
        finally:
            with self._cond:
                self._stream = None
            # Closed before it goes back to the pool: a watch left mid-stream (stopped, 410,
            # a torn line) must not hand its connection, still streaming, to the next request.
            stream.close()
            stream.release_conn()
        return version

    def _changed(self, name: str, obj: dict[str, Any] | None) -> None:
        lean(obj)
        with self._cond:
            self._objects[name] = obj
            self._changes += 1
            self._cond.notify_all()
            self._wake()

    def _wake(self) -> None:
        """Wakes the runs waiting on their event loops (called holding the condition)."""
        for loop, future in self._waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)
        self._waiters.clear()

    def _noted(self, problem: str | None) -> None:
        with self._cond:
            self.problem = problem


def _version(obj: dict[str, Any] | None) -> int | None:
    """The object's resourceVersion as a number, or None when it is not one."""
    raw = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdecimal() else None


def _earliest(versions: list[str | None]) -> str | None:
    """Where a watch of several objects starts: the earliest of the versions held, so that no
    change after any of them is missed. The API server's versions are etcd revisions, one
    counter for every object; were one not a number, None: the collection is listed first."""
    numbers = [int(v) for v in versions if v and str(v).isdecimal()]
    if not versions or len(numbers) != len(versions):
        return None
    return str(min(numbers))


def _older(new: dict[str, Any] | None, held: dict[str, Any] | None) -> bool:
    """Whether `new` is a state of the held object from before the one held, or that one again:
    a watch of several objects starts at the earliest version held, so it also delivers the
    later ones' earlier states. Told by the versions when both are numbers, else by the same
    object's (uid) generation, which only grows."""
    if new is None or held is None:
        return False
    new_version, held_version = _version(new), _version(held)
    if new_version is not None and held_version is not None:
        return new_version <= held_version
    new_meta, held_meta = new.get("metadata") or {}, held.get("metadata") or {}
    if new_meta.get("uid") != held_meta.get("uid"):
        return False
    return int(new_meta.get("generation") or 0) < int(held_meta.get("generation") or 0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups:
    """What one call of a step waits on when it returns a Wait: the followers it read, each
    with the number of changes its snapshot included. The runner awaits `changed` instead of
    a fixed delay, so the step is called again as soon as anything it follows changes."""

    def __init__(self) -> None:
        self._seen: list[tuple[Follower, int]] = []

    def __bool__(self) -> bool:
        return bool(self._seen)

    def read(self, follower: Follower) -> Objects:
        """The follower's objects now, noting them as read by this call."""
        objects, changes = follower.snapshot()
        self._seen.append((follower, changes))
        return objects

    async def changed(self) -> None:
        """Returns once any follower read in this call has changed since (or has ended)."""
        waits = [asyncio.ensure_future(f.changed_since(seen)) for f, seen in self._seen]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


def _lines(stream: Any) -> Iterable[bytes]:
    for line in stream:
        if line.strip():
            yield line


# --- the followers of this process, by request and purpose

_FOLLOWERS: dict[tuple[str, ...], Follower] = {}
_LOCK = threading.Lock()


def following(key: tuple[str, ...]) -> Follower | None:
    """The live follower for `key`, if this process has one."""
    with _LOCK:
        found = _FOLLOWERS.get(key)
        if found is not None and not found.alive:
            del _FOLLOWERS[key]
            return None
        return found


def follow(
    kube: Kube,
    key: tuple[str, ...],
    collection: str,
    objects: dict[str, dict[str, Any]],
    seconds: float,
) -> Follower:
    """Starts following `objects` (as held, each at its resourceVersion) for `seconds`, under
    `key`; a live follower already there is kept (and follows on for `seconds` at least)."""
    with _LOCK:
        found = _FOLLOWERS.get(key)
        if found is not None and found.alive:
            found.extend(seconds)
            return found
        follower = Follower(kube, collection, objects, seconds)
        _FOLLOWERS[key] = follower
        return follower


def stop(key: tuple[str, ...]) -> None:
    """The step is done with what it followed under `key`."""
    with _LOCK:
        found = _FOLLOWERS.pop(key, None)
    if found is not None:
        found.stop()


def stop_all() -> None:
    """Every follower of this process stops (the operator shuts down)."""
    with _LOCK:
        found = list(_FOLLOWERS.values())
        _FOLLOWERS.clear()
    for follower in found:
        follower.stop()
