"""One run per target (safety rule 5), decided by the API server: a claim table per namespace.

The queue (queue.py) orders requests by what the operator's index has seen, which can be a
moment behind: two requests created in the same second, each seen before the other's status,
could both find the way free. So before its first step a request also claims every object it
will change in its namespace's claim table: one Lease, `rollback-targets`, whose annotations
name each claimed target's holder (`target.rollback.lawyershub.io/<hash>`: the request's uid
and name, and the target). Every change of the table carries the version read (or creates it,
which is atomic), so whatever the number of operator instances or their views, two requests
never both hold a target; and a request claims all its targets in one write or none.

A claim is taken over when its holder is finished or gone (a run that ended or was deleted
before it could give its claims back), and given back when the run ends; the table is deleted
with its last claim. A run costs two writes, whatever its number of targets: the table's
creation and its deletion (each at the version this process wrote, without reading it first).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from rollback_operator import GROUP
from rollback_operator.kube import ApiError, Kube, request_path
from rollback_operator.model import Phase
from rollback_operator.queue import Claim, ClaimKey, blocker

TABLE = "rollback-targets"
CLAIM_PREFIX = f"target.{GROUP}/"
ATTEMPTS = 5  # writes that lost to another writer in a row, before waiting the next turn
CONTENDED = "another request (the claim table is busy)"


def claim_key(kind: str, name: str) -> str:
    """An annotation key for any target (database keys may hold characters a key can't)."""
    return CLAIM_PREFIX + hashlib.sha256(f"{kind}/{name}".encode()).hexdigest()[:20]


def _claims(table: dict[str, Any]) -> dict[str, str]:
    return dict(table["metadata"].get("annotations") or {})


def _holder(claim: str | None) -> tuple[str, str]:
    """(uid, request name) of a claim's value; empty for none or one that can't be read."""
    try:
        value = json.loads(claim or "{}")
        return str(value.get("uid", "")), str(value.get("request", ""))
    except (ValueError, AttributeError):
        return "", ""


class TargetLocks:
    """The claims of one request (see the module's docstring)."""

    def __init__(self, kube: Kube, namespace: str, request: str, uid: str) -> None:
        self.kube, self.namespace, self.request, self.uid = kube, namespace, request, uid
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{TABLE}"
        # The table as this process last wrote it: the claims are given back at that version
        # without reading it first (a table changed since is read, and only ours removed).
        self._written: dict[str, Any] | None = None

    def acquire(self, keys: Sequence[ClaimKey]) -> str | None:
        """Claims every target; None when all are held, else the name of the request holding
        one (and nothing is claimed)."""
        wanted = self._wanted(keys)
        if not wanted:
            return None
        for _ in range(ATTEMPTS):
            if self._create(wanted):
                return None
            table = self.kube.get(self._path)
            if table is None:  # deleted in between: the next attempt creates it
                continue
            claims = _claims(table)
            held = self._blocker(claims, wanted)
            if held is not None:
                return held
            if all(_holder(claims.get(key))[0] == self.uid for key in wanted):
                self._written = table  # claimed before a restart
                return None
            if self._write(table, {**claims, **wanted}):
                return None
        return CONTENDED

    def release(self, keys: Sequence[ClaimKey]) -> None:
        """Gives back the claims this request holds; the table goes with its last claim."""
        wanted = self._wanted(keys)
        for _ in range(ATTEMPTS):
            table, self._written = self._written, None
            if table is None:
                table = self.kube.get(self._path)
                if table is None:
                    return
            claims = _claims(table)
            rest = {
                key: value
                for key, value in claims.items()
                if key not in wanted or _holder(value)[0] != self.uid
            }
            if rest == claims:  # none of ours (taken over, or never held)
                return
            if any(key.startswith(CLAIM_PREFIX) for key in rest):
                if self._write(table, rest):
                    return
                continue
            version = table["metadata"]["resourceVersion"]
            try:
                self.kube.request(
                    "DELETE", self._path, {"preconditions": {"resourceVersion": version}}
                )
                return
            except ApiError as error:
                if error.status not in (404, 409):
                    raise
        raise ApiError(409, "Conflict", f"the claim table {TABLE} kept changing; try again")

    # --- the table

    def _wanted(self, keys: Sequence[ClaimKey]) -> dict[str, str]:
        """Each target's annotation key, and this request's claim of it as its value."""
        return {
            claim_key(kind, name): json.dumps(
                {"uid": self.uid, "request": self.request, "target": f"{kind}/{name}"},
                separators=(",", ":"),
            )
            for _, kind, name in sorted(set(keys))
        }

    def _create(self, wanted: dict[str, str]) -> bool:
        """Creates the table with this request's claims; False when it exists. Tried first:
        with no run in the namespace there is no table, and one call does."""
        table = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": TABLE,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "rollback-operator"},
                "annotations": wanted,
            },
            "spec": {},
        }
        try:
            self._written = self.kube.request("POST", self._path.rsplit("/", 1)[0], table)
            return True
        except ApiError as error:
            if error.status != 409:
                raise
        return False

    def _write(self, table: dict[str, Any], claims: dict[str, str]) -> bool:
        """Writes the claims at the version read; False when another writer came first."""
        updated = {**table, "metadata": {**table["metadata"], "annotations": claims}}
        try:
            self._written = self.kube.request("PUT", self._path, updated)
            return True
        except ApiError as error:
            if error.status in (404, 409):
                return False
            raise

    def _blocker(self, claims: dict[str, str], wanted: dict[str, str]) -> str | None:
        """The request holding one of `wanted` that still runs, if any."""
        for key in wanted:
            uid, request = _holder(claims.get(key))
            if uid and uid != self.uid and self._live(request, uid):
                return request or "another request"
        return None

    def _live(self, request: str, uid: Any) -> bool:
        """Whether the holder is a request that still runs (it exists, has that uid, and is
        not finished)."""
        if not request:
            return False
        found = self.kube.get(request_path(self.namespace, request))
        if found is None or found["metadata"].get("uid") != uid:
            return False
        return not Phase((found.get("status") or {}).get("phase", Phase.PENDING)).terminal


class Gate:
    """Whether a request may start: no earlier request holds one of its targets, as the index
    sees them (queue.py), and the API server agrees (the claim table). Dry runs pass freely."""

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
