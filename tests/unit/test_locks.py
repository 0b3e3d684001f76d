"""One run per target, decided by the API server: the namespace's claim table, against an
in-memory API that refuses a second create and a stale update as the API server does."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

from rollback_operator.kube import ApiError, Kube, request_path
from rollback_operator.locks import TABLE, Gate, TargetLocks, claim_key
from rollback_operator.queue import Claim

NS = "lawyershub"
KEYS = [(NS, "Ingress", "site"), (NS, "Deployment", "backend"), (NS, "Database", "db/url")]


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0

    def add_request(self, name: str, uid: str, phase: str = "Running") -> None:
        self.objects[request_path(NS, name)] = {
            "metadata": {"name": name, "uid": uid},
            "status": {"phase": phase},
        }

    def get(self, path: str) -> dict[str, Any] | None:
        found = self.objects.get(path)
        return copy.deepcopy(found) if found else None

    def request(self, method: str, path: str, body: Any = None, *_: Any, **__: Any) -> Any:
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.objects:
                raise ApiError(409, "AlreadyExists", "exists")
        elif method in ("PUT", "DELETE"):
            current = self.objects.get(path)
            if current is None:
                raise ApiError(404, "NotFound", "gone")
            wanted = (
                body["metadata"]["resourceVersion"]
                if method == "PUT"
                else body["preconditions"]["resourceVersion"]
            )
            if wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "modified")
            if method == "DELETE":
                del self.objects[path]
                return None
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def writes(self) -> int:
        return self.version

    def holder(self, kind: str, name: str) -> str | None:
        table = self.objects.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{TABLE}")
        claim = (
            None if table is None else table["metadata"]["annotations"].get(claim_key(kind, name))
        )
        return None if claim is None else cast(str, json.loads(claim)["uid"])


def locks(api: FakeApi, name: str, uid: str) -> TargetLocks:
    return TargetLocks(cast(Kube, api), NS, name, uid)


def test_of_two_requests_whose_index_shows_neither_started_one_runs() -> None:
    """The queue's race: created in the same second, each seen Pending by the other."""
    api = FakeApi()
    api.add_request("a", "uid-a", "Pending")
    api.add_request("b", "uid-b", "Pending")
    assert locks(api, "a", "uid-a").acquire(KEYS) is None
    assert locks(api, "b", "uid-b").acquire(KEYS) == "a"
    assert {api.holder(kind, name) for _, kind, name in KEYS} == {"uid-a"}
    assert locks(api, "a", "uid-a").acquire(KEYS) is None  # again, after a restart


def test_a_request_that_cannot_claim_every_target_claims_none() -> None:
    api = FakeApi()
    api.add_request("a", "uid-a")
    assert locks(api, "a", "uid-a").acquire([(NS, "Deployment", "backend")]) is None
    assert locks(api, "b", "uid-b").acquire(KEYS) == "a"
    assert api.holder("Ingress", "site") is None
    assert api.holder("Database", "db/url") is None


def test_requests_on_other_targets_share_the_table() -> None:
    api = FakeApi()
    api.add_request("a", "uid-a")
    api.add_request("b", "uid-b")
    first, second = locks(api, "a", "uid-a"), locks(api, "b", "uid-b")
    assert first.acquire([KEYS[0]]) is None
    assert second.acquire(KEYS[1:]) is None
    assert [api.holder(kind, name) for _, kind, name in KEYS] == ["uid-a", "uid-b", "uid-b"]
    first.release([KEYS[0]])  # its version is stale (b wrote since): read again, b's kept
    assert [api.holder(kind, name) for _, kind, name in KEYS] == [None, "uid-b", "uid-b"]
    second.release(KEYS[1:])
    assert api.objects.keys() == {request_path(NS, "a"), request_path(NS, "b")}


def test_the_targets_are_free_once_the_run_ends_and_a_run_costs_two_writes() -> None:
    """Claimed by creating the table, given back by deleting it at the version written: no
    read, whatever the number of targets."""
    api = FakeApi()
    api.add_request("a", "uid-a")
    first = locks(api, "a", "uid-a")
    reads: list[str] = []
    read = api.get
    api.get = lambda path: reads.append(path) or read(path)  # type: ignore[method-assign]
    first.acquire(KEYS)
    first.release(KEYS)
    assert reads == [] and api.writes() == 1  # the create (a delete leaves no version)
    assert all(api.holder(kind, name) is None for _, kind, name in KEYS)
    assert locks(api, "b", "uid-b").acquire(KEYS) is None


def test_claims_taken_over_meanwhile_are_left_alone() -> None:
    """A run that ended gives back only its own claims: another request that took them over
    (the first had ended, not yet given them back) keeps them."""
    api = FakeApi()
    api.add_request("a", "uid-a")
    first = locks(api, "a", "uid-a")
    first.acquire(KEYS)
    api.add_request("a", "uid-a", "Failed")  # ended, not yet given back: b takes over
    assert locks(api, "b", "uid-b").acquire(KEYS) is None
    first.release(KEYS)
    assert {api.holder(kind, name) for _, kind, name in KEYS} == {"uid-b"}


def test_the_claims_of_a_finished_or_deleted_request_are_taken_over() -> None:
    """A run that ended (or was deleted) before giving its claims back blocks nobody."""
    api = FakeApi()
    api.add_request("a", "uid-a")
    locks(api, "a", "uid-a").acquire(KEYS)
    api.add_request("a", "uid-a", "Failed")
    assert locks(api, "b", "uid-b").acquire(KEYS) is None
    assert {api.holder(kind, name) for _, kind, name in KEYS} == {"uid-b"}
    assert locks(api, "c", "uid-c").acquire(KEYS) is None  # b was never a request here


def test_a_request_of_the_same_name_but_a_new_uid_does_not_inherit_the_old_claims() -> None:
    api = FakeApi()
    api.add_request("a", "uid-old")
    locks(api, "a", "uid-old").acquire(KEYS)
    api.add_request("a", "uid-new", "Pending")  # deleted and created again
    assert locks(api, "a", "uid-new").acquire(KEYS) is None
    assert api.holder("Ingress", "site") == "uid-new"


def test_the_gate_asks_the_index_first_and_the_table_only_when_it_is_free() -> None:
    api = FakeApi()
    api.add_request("a", "uid-a", "Running")
    me = Claim(name="b", order=("2026-01-10T03:00:01Z", "b"), started=False)
    earlier = Claim(name="a", order=("2026-01-10T03:00:00Z", "a"), started=True)
    holders = {KEYS[0]: [earlier]}
    assert Gate(me, KEYS, holders, locks(api, "b", "uid-b")).blocker() == "a"
    assert api.objects == {request_path(NS, "a"): api.objects[request_path(NS, "a")]}
    assert Gate(me, KEYS, {}, locks(api, "b", "uid-b")).blocker() is None
    assert Gate(me, KEYS, holders, None).blocker() is None  # a dry run waits for nobody


def test_a_claim_that_loses_a_race_for_the_table_reads_it_again_and_decides_again() -> None:
    """Between b's read and its write, c claims one of b's targets: b's write is refused (the
    version it read is gone), b reads again and now waits for c."""
    api = FakeApi()
    for name in ("a", "b", "c"):
        api.add_request(name, f"uid-{name}")
    locks(api, "a", "uid-a").acquire([(NS, "Ingress", "other")])  # the table exists
    read, raced = api.get, []

    def racing_read(path: str) -> dict[str, Any] | None:
        found = read(path)
        if path.endswith(f"/leases/{TABLE}") and not raced:
            raced.append(path)
            assert locks(api, "c", "uid-c").acquire([KEYS[0]]) is None
        return found

    api.get = racing_read  # type: ignore[method-assign]
    assert locks(api, "b", "uid-b").acquire(KEYS) == "c"
    assert api.holder("Deployment", "backend") is None
