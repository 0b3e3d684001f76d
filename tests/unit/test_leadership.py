"""Leader election on a Lease, against an in-memory API that checks resourceVersions as the
API server does (the e2e tier runs two real instances: tests/e2e/test_leadership.py)."""

from __future__ import annotations

import copy
from typing import Any, cast

from rollback_operator.kube import ApiError, Kube
from rollback_operator.leadership import LEASE_SECONDS, Leadership, lease_path

NS = "rollback-operator"


class FakeLeases:
    """One namespace's Leases: create refuses a name taken, PUT refuses a stale version."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0

    def get(self, path: str) -> dict[str, Any] | None:
        lease = self.leases.get(path)
        return copy.deepcopy(lease) if lease else None

    def request(self, method: str, path: str, body: Any = None, *_: Any, **__: Any) -> Any:
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.leases:
                raise ApiError(409, "AlreadyExists", "taken")
        elif method == "PUT":
            current = self.leases[path]
            if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[path] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str | None:
        lease = self.leases.get(lease_path(NS)) or {}
        return cast(str | None, (lease.get("spec") or {}).get("holderIdentity"))


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def instance(api: FakeLeases, me: str, clock: Clock) -> Leadership:
    return Leadership(cast(Kube, api), NS, me, clock=clock)


def test_the_first_instance_leads_and_the_second_stands_by() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = instance(api, "pod-a", clock), instance(api, "pod-b", clock)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert api.holder() == "pod-a"
    clock.seconds += 2
    assert a.try_acquire() is True  # a renewal
    assert b.try_acquire() is False


def test_a_standby_takes_over_a_lease_not_renewed_for_its_duration() -> None:
    """Measured on the standby's own clock from when it last saw the Lease change: the two
    instances' clocks never need to agree."""
    api, clock = FakeLeases(), Clock()
    a, b = instance(api, "pod-a", clock), instance(api, "pod-b", clock)
    assert a.try_acquire()
    assert not b.try_acquire()
    clock.seconds += LEASE_SECONDS - 1
    assert not b.try_acquire()  # not yet: renewed less than a lease ago, as far as b knows
    clock.seconds += 1
    assert b.try_acquire()
    assert api.holder() == "pod-b"
    transitions = api.leases[lease_path(NS)]["spec"]["leaseTransitions"]
    assert transitions == 1
    assert not a.try_acquire()  # the old leader sees it lost the Lease


def test_renewals_keep_a_standby_waiting_however_long() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = instance(api, "pod-a", clock), instance(api, "pod-b", clock)
    a.try_acquire()
    for _ in range(20):
        clock.seconds += 2
        assert a.try_acquire()
        assert not b.try_acquire()


def test_of_two_standbys_taking_over_at_once_one_wins() -> None:
    api, clock = FakeLeases(), Clock()
    a = instance(api, "pod-a", clock)
    b, c = instance(api, "pod-b", clock), instance(api, "pod-c", clock)
    a.try_acquire()
    b.try_acquire(), c.try_acquire()
    clock.seconds += LEASE_SECONDS
    lease = api.get(lease_path(NS))
    assert lease is not None
    assert b.try_acquire()
    # c read the Lease before b took it: its PUT carries the old version and is refused.
    assert c._update(lease, taking_over=True) is False
    assert api.holder() == "pod-b"


def test_a_restarted_instance_of_the_same_pod_leads_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    assert instance(api, "pod-a", clock).try_acquire()
    assert instance(api, "pod-a", clock).try_acquire()  # same pod, new process


def test_a_released_lease_is_taken_without_waiting() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = instance(api, "pod-a", clock), instance(api, "pod-b", clock)
    a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()


def test_a_renewal_is_one_write_and_a_lost_lease_is_seen_by_the_next() -> None:
    """The leader renews at the version it wrote, without reading the Lease; once a standby
    took it over (the leader stalled past the duration), the renewal's conflict is read and
    the old leader knows it lost."""
    api, clock = FakeLeases(), Clock()
    a, b = instance(api, "pod-a", clock), instance(api, "pod-b", clock)
    assert a.try_acquire() and not b.try_acquire()
    reads: list[str] = []
    read = api.get
    api.get = lambda path: reads.append(path) or read(path)  # type: ignore[method-assign]
    for _ in range(3):
        clock.seconds += 2
        assert a.renew()
    assert reads == [] and api.holder() == "pod-a"
    api.get = read  # type: ignore[method-assign]
    clock.seconds += LEASE_SECONDS
    assert not b.try_acquire()  # b saw the last renewal only now: its clock starts here
    clock.seconds += LEASE_SECONDS
    assert b.try_acquire()
    assert not a.renew() and api.holder() == "pod-b"
