"""Watches that time-stamp changes as they arrive, and what the benchmarks keep of a
RollbackRequest's events.

Changes are observed by watches, never by polling: a poll would add up to its interval to
every figure and its own requests to the counts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.watch.watch import iter_resp_lines

from bench.api import JSON, Api
from rollback_operator.kube import ApiError


def request_state(obj: JSON) -> JSON:
    """What the benchmarks need of a RollbackRequest watch event (keeps the watch small)."""
    status = obj.get("status") or {}
    return {
        "phase": status.get("phase"),
        "steps": {s["name"]: s.get("state") for s in status.get("steps") or []},
    }


def step_timeline(events: list[Seen], start: float) -> dict[str, tuple[float, float | None]]:
    """For each step, ms from `start` to the first event showing it Running (or already
    finished, for a skip) and to the first showing it finished; in the order steps began."""
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    for seen in events:
        if seen.type != "MODIFIED":
            continue
        at = round((seen.at - start) * 1000, 1)
        for step, state in seen.object["steps"].items():
            if state == "Running":
                began.setdefault(step, at)
            elif state in ("Succeeded", "Skipped", "Failed") and step not in ended:
                ended[step] = at
                began.setdefault(step, at)
    return {step: (at, ended.get(step)) for step, at in sorted(began.items(), key=lambda i: i[1])}


@dataclass
class Seen:
    at: float  # time.monotonic() when the event arrived
    type: str
    object: Any


class Watcher:
    """A watch read in a thread; each event is stamped with time.monotonic() on arrival.

    It starts from the resourceVersion of a list taken first, so nothing between the list and
    the watch is missed and no synthetic ADDED events are replayed. `keep` reduces each object
    to what the benchmark needs, which keeps memory flat when many objects change often.
    """

    def __init__(
        self,
        api: Api,
        path: str,
        query: dict[str, str] | None = None,
        keep: Callable[[JSON], Any] = lambda obj: obj,
    ) -> None:
        self.api, self.path, self.query, self.keep = api, path, dict(query or {}), keep
        self.events: list[Seen] = []
        self._changed = threading.Condition()
        self._response: urllib3.HTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._version = ""
        self.reconnects = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        listed = self.api.get_query(self.path, {**self.query, "limit": "1"}) or {}
        self._version = listed.get("metadata", {}).get("resourceVersion", "")
        self._response = self._open()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _open(self) -> urllib3.HTTPResponse:
        query = {**self.query, "watch": "1", "resourceVersion": self._version}
        return self.api.stream(self.path, {**query, "timeoutSeconds": "3600"})

    def _read(self) -> None:
        """Reads until stopped. The API server may end a watch early (a CRD being applied
        again restarts its storage): the watch is resumed from the last version seen."""
        try:
            while not self._stopping:
                assert self._response is not None
                for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                    at = time.monotonic()
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        raise ApiError(
                            event["object"].get("code", 0), "WatchError", str(event["object"])
                        )
                    self._version = event["object"]["metadata"]["resourceVersion"]
                    seen = Seen(at, event["type"], self.keep(event["object"]))
                    with self._changed:
                        self.events.append(seen)
                        self._changed.notify_all()
                if not self._stopping:
                    self.reconnects += 1
                    self._response = self._open()
        except Exception as error:  # a closed stream on stop() is expected
            if not self._stopping:
                self.error = error
        with self._changed:
            self._changed.notify_all()

    def first(self, predicate: Callable[[Seen], bool], timeout: float) -> Seen:
        """The first event (already seen or still to come) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        index = 0
        with self._changed:
            while True:
                for seen in self.events[index:]:
                    if predicate(seen):
                        return seen
                index = len(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"nothing matched on {self.path} within {timeout:g}s")
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError(f"the watch on {self.path} ended: {self.error}")
                self._changed.wait(remaining)

    def wait(self, predicate: Callable[[list[Seen]], bool], timeout: float) -> None:
        """Until `predicate` holds for everything seen so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition on {self.path} not met within {timeout:g}s")
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError(f"the watch on {self.path} ended: {self.error}")
                self._changed.wait(min(remaining, 1.0))

    def stop(self) -> None:
        self._stopping = True
        if self._response is not None:
            with suppress(Exception):
                self._response.shutdown()
            with suppress(Exception):
                self._response.release_conn()
        if self._thread is not None:
            self._thread.join(timeout=5)
