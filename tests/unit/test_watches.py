"""Following objects by watch (watches.py): what an event does to the object held, each watch
request's timeout (the deadline's), resuming from the last version after the server ends a
watch, listing again after 410 Gone, backing off while the API server does not answer, and
stopping at the deadline. The watch streams are scripted here; the real ones are the e2e tier's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rollback_operator import watches
from rollback_operator.kube import ApiError
from rollback_operator.watches import Follower, apply_event, retry_delay, watch_seconds

COLLECTION = "/apis/apps/v1/namespaces/shop/deployments"


def deployment(version: str, ready: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "backend", "resourceVersion": version},
        "status": {"readyReplicas": ready},
    }


# --- pure: events, timeouts, backoff


def test_an_event_gives_the_object_and_the_version_to_resume_from() -> None:
    held = deployment("4")
    modified = apply_event(held, "4", {"type": "MODIFIED", "object": deployment("7", 1)})
    assert modified.obj == deployment("7", 1) and modified.version == "7" and modified.changed
    bookmark = apply_event(held, "4", {"type": "BOOKMARK", "object": deployment("9")})
    assert bookmark.obj is held and bookmark.version == "9" and not bookmark.changed
    deleted = apply_event(held, "4", {"type": "DELETED", "object": deployment("10")})
    assert deleted.obj is None and deleted.version == "10" and deleted.changed


def test_410_gone_means_list_again_and_other_errors_are_raised() -> None:
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}
    assert apply_event(deployment("4"), "4", gone).version is None
    denied = {"type": "ERROR", "object": {"code": 403, "reason": "Forbidden", "message": "no"}}
    with pytest.raises(ApiError) as raised:
        apply_event(deployment("4"), "4", denied)
    assert raised.value.status == 403


def test_a_watch_lasts_what_is_left_of_the_deadline_within_the_slice() -> None:
    assert watch_seconds(600.0) == watches.WATCH_SLICE_SECONDS
    assert watch_seconds(12.2) == 13
    assert watch_seconds(0.1) == 1  # never 0: the server would read it as its own default
    assert watch_seconds(-5.0) == 1


def test_a_failed_watch_is_opened_again_with_backoff_never_past_the_deadline() -> None:
    assert [retry_delay(n, 60.0) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry_delay(6, 1.5) == 1.5
    assert retry_delay(6, -1.0) == 0.0


# --- a follower against scripted streams


class Stream:
    """One watch request's answer: its lines, then the end (the server's timeout)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(e).encode() for e in events]
        self.closed_before_release: bool | None = None
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines

    def close(self) -> None:
        self._closed = True

    def release_conn(self) -> None:
        self.closed_before_release = self._closed


class ScriptedKube:
    """Answers each watch request with the next script entry (a Stream or an error to raise),
    then, once the script is over, with streams that end at once; records every query."""

    def __init__(self, script: list[Stream | ApiError], listed: dict[str, Any] | None = None):
        self.script = script
        self.listed = listed
        self.queries: list[dict[str, str]] = []
        self.lists = 0
        self.done = threading.Event()

    def stream(self, path: str, query: dict[str, str]) -> Stream:
        assert path == COLLECTION and query["fieldSelector"] == "metadata.name=backend"
        self.queries.append(dict(query))
        if not self.script:
            self.done.set()
            threading.Event().wait(0.01)
            return Stream([])
        answer = self.script.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def request(self, method: str, path: str, **kw: Any) -> Any:
        assert method == "GET" and kw["query"] == {"fieldSelector": "metadata.name=backend"}
        self.lists += 1
        return self.listed


def ready(objects: watches.Objects) -> bool:
    found = objects.get("backend")
    return found is not None and found["status"]["readyReplicas"] == 2


def test_a_follower_resumes_from_the_last_version_and_lists_again_after_410() -> None:
    kube = ScriptedKube(
        [
            Stream([{"type": "MODIFIED", "object": deployment("5", 1)}]),  # then the timeout
            Stream([{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}]),
            Stream([{"type": "MODIFIED", "object": deployment("12", 2)}]),
        ],
        listed={"metadata": {"resourceVersion": "11"}, "items": [deployment("11", 1)]},
    )
    follower = Follower(kube, COLLECTION, {"backend": deployment("3")}, 30.0)  # type: ignore[arg-type]
    try:
        objects = follower.wait(ready, 5.0)
        assert objects["backend"] == deployment("12", 2)
        versions = [q["resourceVersion"] for q in kube.queries[:3]]
        assert versions == ["3", "5", "11"]  # from the read, the last event, the new list
        assert kube.lists == 1
        assert all(
            q["watch"] == "true" and q["allowWatchBookmarks"] == "true" for q in kube.queries
        )
        assert all(int(q["timeoutSeconds"]) <= 30 for q in kube.queries)
    finally:
        follower.stop()


def test_an_api_server_that_does_not_answer_is_tried_again_and_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watches, "RETRY_SECONDS", 0.01)
    down = ApiError(0, "Unreachable", "connection refused")
    kube = ScriptedKube([down, down, Stream([{"type": "MODIFIED", "object": deployment("8", 2)}])])
    follower = Follower(kube, COLLECTION, {"backend": deployment("3")}, 30.0)  # type: ignore[arg-type]
    try:
        assert ready(follower.wait(ready, 5.0))
        assert [q["resourceVersion"] for q in kube.queries[:3]] == ["3", "3", "3"]
        assert follower.problem is None  # the watch that answered cleared it
    finally:
        follower.stop()


def test_a_follower_ends_at_its_deadline_and_a_wait_returns_what_it_holds() -> None:
    kube = ScriptedKube([])
    follower = Follower(kube, COLLECTION, {"backend": deployment("3")}, 0.2)  # type: ignore[arg-type]
    objects = follower.wait(ready, 5.0)  # not ready, ever: returns at the deadline, not in 5 s
    assert objects["backend"] == deployment("3")
    assert not follower.alive
    opened = len(kube.queries)
    threading.Event().wait(0.1)
    assert len(kube.queries) <= opened + 1  # at most the watch in flight: no new ones


def test_the_registry_keeps_one_follower_per_key_until_stopped() -> None:
    kube = ScriptedKube([])
    key = ("deployments", "shop", "golive", "uid-1")
    first = watches.follow(kube, key, COLLECTION, {"backend": deployment("3")}, 30.0)  # type: ignore[arg-type]
    again = watches.follow(kube, key, COLLECTION, {"backend": deployment("9")}, 30.0)  # type: ignore[arg-type]
    assert again is first and watches.following(key) is first
    watches.stop(key)
    assert watches.following(key) is None and not first.alive


def test_a_watch_left_mid_stream_never_returns_its_connection_open() -> None:
    """A 410 ends the watch with the server still streaming: its connection, back in the
    client's pool as it was, would hand the rest of the watch to the next request."""
    left = Stream([{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}])
    ended = Stream([{"type": "MODIFIED", "object": deployment("12", 2)}])
    kube = ScriptedKube([left, ended], listed={"metadata": {"resourceVersion": "11"}, "items": []})
    follower = Follower(kube, COLLECTION, {"backend": deployment("3")}, 30.0)  # type: ignore[arg-type]
    try:
        assert ready(follower.wait(ready, 5.0))
    finally:
        follower.stop()
    assert left.closed_before_release is True
    assert ended.closed_before_release in (True, None)  # None: still open when stopped


class Closed(Stream):
    """A stream whose socket its watch thread has already closed."""

    def __iter__(self) -> Iterator[bytes]:
        threading.Event().wait(5.0)
        yield from ()

    def shutdown(self) -> None:
        raise OSError(9, "Bad file descriptor")


def test_stopping_a_watch_whose_socket_is_gone_is_not_an_error() -> None:
    """`stop` runs in the step's thread: a stream the watch thread closed meanwhile must not
    fail the step (EBADF from shutting down a closed socket)."""
    kube = ScriptedKube([Closed([])])
    follower = Follower(kube, COLLECTION, {"backend": deployment("3")}, 30.0)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while not kube.queries and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    follower.stop()  # raises nothing
    assert not follower.alive


# --- several objects: one watch of their collection


def named(name: str, version: str, ready: int = 0, generation: int = 2) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "generation": generation,
        },
        "status": {"readyReplicas": ready},
    }


class CollectionKube:
    """Answers one watch of the collection with `events`, then streams that end at once."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.queries: list[dict[str, str]] = []
        self.lists: list[dict[str, str]] = []

    def stream(self, path: str, query: dict[str, str]) -> Stream:
        assert path == COLLECTION
        self.queries.append(dict(query))
        events, self.events = self.events, []
        if not events:
            threading.Event().wait(0.01)
        return Stream(events)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        self.lists.append(kw["query"])
        return {
            "metadata": {"resourceVersion": "30"},
            "items": [named("backend", "21", 1), named("frontend", "22", 1), named("db", "9")],
        }


def test_several_objects_are_followed_by_one_watch_from_the_earliest_version_held() -> None:
    """Backend held at 10 (read), frontend at 14 (patched: generation 3). The watch of the
    collection starts at 10: frontend's states up to 14 come again, and are passed over."""
    events = [
        {"type": "MODIFIED", "object": named("frontend", "12", 1, generation=2)},  # before
        {"type": "MODIFIED", "object": named("db", "13", 1)},  # not followed
        {"type": "MODIFIED", "object": named("backend", "15", 2)},
        {"type": "MODIFIED", "object": named("frontend", "16", 2, generation=3)},
    ]
    kube = CollectionKube(events)
    held = {"backend": named("backend", "10"), "frontend": named("frontend", "14", generation=3)}
    follower = Follower(kube, COLLECTION, held, 30.0)  # type: ignore[arg-type]
    try:

        def both_ready(objects: watches.Objects) -> bool:
            return all(
                (o or {}).get("status", {}).get("readyReplicas") == 2 for o in objects.values()
            )

        objects = follower.wait(both_ready, 5.0)
        assert objects == {
            "backend": named("backend", "15", 2),
            "frontend": named("frontend", "16", 2, generation=3),
        }
        assert follower.snapshot()[1] == 2  # frontend's state from before 14 never taken
        first = kube.queries[0]
        assert first["resourceVersion"] == "10" and "fieldSelector" not in first
        assert kube.lists == []
        assert {t.name for t in threading.enumerate()}.issuperset({f"watch {COLLECTION}"})
    finally:
        follower.stop()


def test_versions_that_are_not_numbers_are_never_ordered_the_collection_is_listed_first() -> None:
    kube = CollectionKube([])
    held = {"backend": named("backend", "a10"), "frontend": named("frontend", "14")}
    follower = Follower(kube, COLLECTION, held, 30.0)  # type: ignore[arg-type]
    try:
        objects = follower.wait(lambda o: o["backend"]["metadata"]["resourceVersion"] == "21", 5.0)
        assert objects["backend"] == named("backend", "21", 1)
        assert kube.lists == [{}] and kube.queries[0]["resourceVersion"] == "30"
    finally:
        follower.stop()
