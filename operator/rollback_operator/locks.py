"""One run per target (safety rule 5), decided by the API server: a Lease per target object.

The queue (queue.py) orders requests by what the operator's index has seen, which can be a
moment behind: two requests created in the same second, each seen before the other's status,
could both find the way free. So before its first step a request also takes a Lease for each
object it will change (`rollback-target-<hash>` in its namespace, holder: the request's uid).
Creating a Lease is atomic, whatever the number of operator instances or their views; the
first request to create it runs, the other waits, naming the holder.

A Lease is taken over when its holder is finished or gone (a run that ended or was deleted
before it could hand its Leases back), and given back when the run ends. Leases are asked for
all at once, and a request that cannot take them all gives back those it took, so two requests
never hold part each and wait for each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rollback_operator import GROUP
from rollback_operator.kube import ApiError, Kube, request_path
from rollback_operator.model import Phase
from rollback_operator.queue import Claim, ClaimKey, blocker

TARGET_LABEL = f"{GROUP}/target"
HOLDER_ANNOTATION = f"{GROUP}/request"


def lease_name(kind: str, name: str) -> str:
    """A DNS-safe name for any target (database keys may hold characters a name can't)."""
    return f"rollback-target-{hashlib.sha256(f'{kind}/{name}'.encode()).hexdigest()[:20]}"


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class TargetLocks:
    """The Leases of one request (see the module's docstring)."""

    def __init__(self, kube: Kube, namespace: str, request: str, uid: str) -> None:
        self.kube, self.namespace, self.request, self.uid = kube, namespace, request, uid
        # The version of each Lease as this process took it: given back at that version
        # without reading it first (a Lease taken over since has another, and is left alone).
        self._taken: dict[str, str] = {}

    def acquire(self, keys: Sequence[ClaimKey]) -> str | None:
        """Takes every target's Lease; None when all are held, else the name of the request
        holding one (and none is kept).

        The Leases are asked for at once (each creation is atomic on its own, and only a
        request holding them all runs): a round trip each, one after the other, would hold up
        the maintenance page. Two requests racing for the same targets may each get some; both
        give them back, and the queue's order (queue.py), which sees both by then, decides."""
        wanted = sorted(set(keys))
        if len(wanted) <= 1:
            holders = [self._take(kind, name) for _, kind, name in wanted]
        else:
            with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="lease") as pool:
                holders = list(pool.map(lambda key: self._take(key[1], key[2]), wanted))
        blocking = [h for h in holders if h is not None]
        if not blocking:
            return None
        for (_, kind, name), holder in zip(wanted, holders, strict=True):
            if holder is None:
                self._give_back(lease_name(kind, name))
        return blocking[0]

    def release(self, keys: Sequence[ClaimKey]) -> None:
        """Gives back the Leases this request holds."""
        for _, kind, name in sorted(set(keys)):
            self._give_back(lease_name(kind, name))

    def _take(self, kind: str, name: str) -> str | None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(kind, name),
                "namespace": self.namespace,
                "labels": {TARGET_LABEL: "true"},
                "annotations": {
                    HOLDER_ANNOTATION: self.request,
                    f"{GROUP}/target": f"{kind}/{name}",
                },
            },
            "spec": {"holderIdentity": self.uid},
        }
        try:
            created = self.kube.request("POST", _leases(self.namespace), lease)
            self._remember(created)
            return None
        except ApiError as error:
            if error.status != 409:
                raise
        path = f"{_leases(self.namespace)}/{lease_name(kind, name)}"
        current = self.kube.get(path)
        if current is None:  # given back in between: take it on the next try
            return "a request that just finished"
        holder = (current.get("spec") or {}).get("holderIdentity")
        if holder == self.uid:
            return None
        holder_name = (current["metadata"].get("annotations") or {}).get(HOLDER_ANNOTATION, "")
        if self._live(holder_name, holder):
            return holder_name or "another request"
        current["spec"] = {"holderIdentity": self.uid}  # the PUT carries the version read
        current["metadata"].setdefault("annotations", {})[HOLDER_ANNOTATION] = self.request
        try:
            self._remember(self.kube.request("PUT", path, current))
        except ApiError as error:
            if error.status == 409:  # another request took it over first
                return holder_name or "another request"
            raise
        return None

    def _remember(self, lease: Any) -> None:
        meta = (lease or {}).get("metadata") or {}
        if meta.get("name") and meta.get("resourceVersion"):
            self._taken[meta["name"]] = str(meta["resourceVersion"])

    def _live(self, request: str, uid: Any) -> bool:
        """Whether the holder is a request that still runs (it exists, has that uid, and is
        not finished)."""
        if not request:
            return False
        found = self.kube.get(request_path(self.namespace, request))
        if found is None or found["metadata"].get("uid") != uid:
            return False
        return not Phase((found.get("status") or {}).get("phase", Phase.PENDING)).terminal

    def _give_back(self, lease: str) -> None:
        path = f"{_leases(self.namespace)}/{lease}"
        version = self._taken.pop(lease, None)
        if version is None:  # taken by an earlier process: read whether it is still ours
            current = self.kube.get(path)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.uid:
                return
            version = current["metadata"]["resourceVersion"]
        try:
            self.kube.request("DELETE", path, {"preconditions": {"resourceVersion": version}})
        except ApiError as error:
            if error.status not in (404, 409):  # gone, or taken over: not ours to give back
                raise


class Gate:
    """Whether a request may start: no earlier request holds one of its targets, as the index
    sees them (queue.py), and the API server agrees (the Leases). Dry runs pass freely."""

    def __init__(
        self,
        me: Claim,
        keys: Sequence[ClaimKey],
        holders: Any,
        locks: TargetLocks | None,
    ) -> None:
        self.me, self.keys, self.holders, self.locks = me, list(keys), holders, locks

    def blocker(self) -> str | None:
        """The request to wait for, if any (calls the API: run it in a worker thread)."""
        if self.locks is None:
            return None
        return blocker(self.me, self.keys, self.holders) or self.locks.acquire(self.keys)

    def release(self) -> None:
        if self.locks is not None:
            self.locks.release(self.keys)
