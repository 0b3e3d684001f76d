"""One active instance (safety rule 11): leader election on a coordination.k8s.io Lease.

Every instance of the operator starts as a standby and tries to take the Lease; the one that
holds it drives the requests, renewing it every RENEW_SECONDS. A standby takes the Lease over
when it has not been renewed for LEASE_SECONDS (measured on the standby's own clock, from the
moment it last saw the Lease change, as client-go does: clocks of two nodes never need to
agree). A leader that cannot renew within RENEW_DEADLINE_SECONDS stops driving at once (the
process exits, and Kubernetes starts it again as a standby) rather than risk two drivers: every
step is idempotent and every record carries its resourceVersion, so the next leader resumes.

Its own module: the engine and the steps know nothing of it; `__main__` starts Kopf only once
this instance leads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollback_operator.kube import ApiError, Kube

LEASE_NAME = "rollback-operator-leader"
LEASE_SECONDS = 10
RENEW_SECONDS = 2
RENEW_DEADLINE_SECONDS = 8

logger = logging.getLogger("rollback_operator.leadership")

# The Lease's calls have a thread of their own: in the loop's default executor they would queue
# behind the steps' work (every worker thread busy with a hundred requests at once) and miss
# the renewal deadline, and the leader would exit for being busy.
_LEASE_THREAD = ThreadPoolExecutor(1, thread_name_prefix="leader-lease")


async def _in_lease_thread(call: Callable[[], bool]) -> bool:
    return await asyncio.get_running_loop().run_in_executor(_LEASE_THREAD, call)


def lease_path(namespace: str, name: str = LEASE_NAME) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"


def identity() -> str:
    """This instance, as the Lease names its holder: the pod's name ($POD_NAME), so that a
    container restarted in the same pod (its old process gone) leads again at once; outside
    a pod, the host's name and a unique suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """The Lease as last seen, and when (monotonic seconds) it last changed."""

    version: str
    holder: str | None
    since: float


class Leadership:
    """Takes and keeps the Lease for `me` (see the module's docstring)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        me: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube, self.namespace, self.me = kube, namespace, me
        self.clock, self.now = clock, now
        self.observed: Observed | None = None
        self._held: dict[str, Any] | None = None  # the Lease as this instance last wrote it

    def try_acquire(self) -> bool:
        """Takes the Lease if it is free, expired or already ours; True when we hold it."""
        lease = self.kube.get(lease_path(self.namespace))
        if lease is None:
            return self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        version = lease["metadata"]["resourceVersion"]
        if self.observed is None or self.observed.version != version:
            self.observed = Observed(version, holder, self.clock())
        duration = float(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        expired = self.clock() - self.observed.since >= duration
        if holder not in (None, "", self.me) and not expired:
            return False
        return self._update(lease, taking_over=holder != self.me)

    def renew(self) -> bool:
        """Renews the Lease this instance holds: one PUT at the version it last wrote, without
        reading it first; when another writer came between (409) or it is gone, decided again
        from a read (`try_acquire`). True while we hold it."""
        held, self._held = self._held, None
        if held is None:
            return self.try_acquire()
        spec = held.get("spec") or {}
        transitions = int(spec.get("leaseTransitions") or 0)
        body = {**held, "spec": self._body(transitions, spec.get("acquireTime"))}
        try:
            renewed = self.kube.request("PUT", lease_path(self.namespace), body)
        except ApiError as error:
            if error.status in (404, 409):
                return self.try_acquire()
            raise
        self._seen(renewed)
        return True

    def _body(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        stamp = _micro_time(self.now())
        return {
            "holderIdentity": self.me,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": acquired or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    def _create(self) -> bool:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
            "spec": self._body(0, None),
        }
        path = lease_path(self.namespace).rsplit("/", 1)[0]
        try:
            created = self.kube.request("POST", path, lease)
        except ApiError as error:
            if error.status == 409:  # another instance was quicker
                return False
            raise
        self._seen(created)
        return True

    def _update(self, lease: dict[str, Any], *, taking_over: bool) -> bool:
        spec = lease.get("spec") or {}
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if taking_over else 0)
        acquired = None if taking_over else spec.get("acquireTime")
        body = {**lease, "spec": self._body(transitions, acquired)}
        try:  # a PUT carries the version read: of two standbys, one wins
            updated = self.kube.request("PUT", lease_path(self.namespace), body)
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        self._seen(updated)
        return True

    def _seen(self, lease: dict[str, Any]) -> None:
        self.observed = Observed(lease["metadata"]["resourceVersion"], self.me, self.clock())
        self._held = lease

    def release(self) -> None:
        """Gives the Lease up on a clean shutdown, so a standby need not wait it out."""
        lease = self.kube.get(lease_path(self.namespace))
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
            return
        spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
        try:
            self.kube.request("PUT", lease_path(self.namespace), {**lease, "spec": spec})
        except ApiError as error:
            logger.warning("could not release the leader Lease: %s", error)


async def acquire(leadership: Leadership) -> None:
    """Waits, as a standby, until this instance holds the Lease."""
    logger.info(
        "waiting to lead: Lease %s/%s, as %s", leadership.namespace, LEASE_NAME, leadership.me
    )
    while True:
        try:
            if await _in_lease_thread(leadership.try_acquire):
                logger.info("leading: this instance drives the RollbackRequests")
                return
        except ApiError as error:
            logger.warning("could not read or take the leader Lease: %s", error)
        await asyncio.sleep(RENEW_SECONDS)


async def keep(leadership: Leadership, lost: Callable[[], None]) -> None:
    """Renews the Lease every RENEW_SECONDS; calls `lost` when it could not within
    RENEW_DEADLINE_SECONDS (or another instance took it)."""
    last = leadership.clock()
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        try:
            # Bounded: a renewal that hangs must not outlive the deadline unnoticed.
            took = _in_lease_thread(leadership.renew)
            if await asyncio.wait_for(took, RENEW_SECONDS + 2):
                last = leadership.clock()
                continue
            logger.error("another instance took the leader Lease")
        except (ApiError, TimeoutError) as error:
            if leadership.clock() - last < RENEW_DEADLINE_SECONDS:
                logger.warning("could not renew the leader Lease (retrying): %s", error)
                continue
            logger.error(
                "could not renew the leader Lease for %ss: %s", RENEW_DEADLINE_SECONDS, error
            )
        lost()
        return
