"""Watches for the unit tests' fake clusters: what `watches.Follower` asks of the Kube client
(`stream` a watch narrowed to one name, `request` a list), answered from a fake's objects.

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
    def __init__(self, obj: dict[str, Any] | None, name: str, version: str) -> None:
        self.obj, self.name, self.version = obj, name, version
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        time.sleep(0.01)
        if self.closed:
            return
        if self.obj is None:
            gone = {"metadata": {"name": self.name, "resourceVersion": self.version}}
            yield json.dumps({"type": "DELETED", "object": gone}).encode()
        else:
            yield json.dumps({"type": "MODIFIED", "object": self.obj}).encode()

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass

    def shutdown(self) -> None:
        self.closed = True


class Watchable:
    """Mixed into a fake Kube client; `watched` answers for the objects it holds."""

    watches = 0  # watch requests opened

    def watched(self, collection: str, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def stream(self, path: str, query: dict[str, str]) -> FakeStream:
        self.watches += 1
        name = query["fieldSelector"].split("=", 1)[1]
        return FakeStream(self.watched(path, name), name, query.get("resourceVersion", ""))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        assert method == "GET" and query is not None, (method, path)
        name = query["fieldSelector"].split("=", 1)[1]
        obj = self.watched(path, name)
        return {"metadata": {"resourceVersion": "1"}, "items": [obj] if obj else []}


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
