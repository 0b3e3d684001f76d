"""Watches for the unit tests' fake clusters: what `watches.Follower` asks of the Kube client
(`stream` a watch narrowed to one name or of a collection, `request` a list), answered from a
fake's objects.

Each watch sends the object as it is now (or its deletion) after a hundredth of a second, then
ends, as a server's watch ends at its timeout: the follower opens it again. Enough for the steps
to see the changes a test makes to the fake, without a thread of the test's own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

Lookup = Callable[[str, str], "dict[str, Any] | None"]  # (collection path, name) -> object


class FakeStream:
    """One watch request's answer: each object as it is now (or its deletion), then the end."""

    def __init__(self, objects: dict[str, dict[str, Any] | None], version: str) -> None:
        self.objects, self.version = objects, version
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        time.sleep(0.01)
        for name, obj in self.objects.items():
            if self.closed:
                return
            if obj is None:
                gone = {"metadata": {"name": name, "resourceVersion": self.version}}
                yield json.dumps({"type": "DELETED", "object": gone}).encode()
            else:
                yield json.dumps({"type": "MODIFIED", "object": obj}).encode()

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass

    def shutdown(self) -> None:
        self.closed = True


class Watchable:
    """Mixed into a fake Kube client; `watched` answers for the objects it holds, `names_in`
    for a collection's names (a watch of several objects is of their collection)."""

    watches = 0  # watch requests opened

    def watched(self, collection: str, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def names_in(self, collection: str) -> list[str]:
        raise NotImplementedError

    def _objects(self, path: str, query: dict[str, str]) -> dict[str, dict[str, Any] | None]:
        if "fieldSelector" in query:
            names = [query["fieldSelector"].split("=", 1)[1]]
        else:  # the collection: what it holds, and what it held and no longer does (deleted)
            served = self.__dict__.setdefault("_served", {}).setdefault(path, set())
            served.update(self.names_in(path))
            names = sorted(served)
        return {name: self.watched(path, name) for name in names}

    def stream(self, path: str, query: dict[str, str]) -> FakeStream:
        self.watches += 1
        return FakeStream(self._objects(path, query), query.get("resourceVersion", ""))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        assert method == "GET" and query is not None, (method, path)
        found = [obj for obj in self._objects(path, query).values() if obj]
        return {"metadata": {"resourceVersion": "1"}, "items": found}


def called_until(call: Callable[[], T], done: Callable[[T], bool], seconds: float = 5.0) -> T:
    """`call`'s result once `done` holds of it, else its last result after `seconds`: a step
    reads what its watches hold now, and the runner calls it again when they see a change;
    here it is called again until the fake's watches have delivered the test's change."""
    deadline = time.monotonic() + seconds
    while True:
        result = call()
        if done(result) or time.monotonic() >= deadline:
            return result
        threading.Event().wait(0.01)
