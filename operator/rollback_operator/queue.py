"""One run per target (safety rule 5): which earlier request, if any, a request must wait for.

Each live request claims its Ingresses, HTTPRoutes, Deployments, listed HPAs and database (HPAs
found by discovery belong to a listed Deployment, so the Deployment's claim covers them; the
database is named by its connection Secret key). Requests are ordered by
(creationTimestamp, name), the same total order everywhere, so two requests never wait for
each other. A request that has started is never overtaken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.model import Phase, RollbackSpec, Targets

STARTED = (Phase.RUNNING, Phase.AWAITING_APPROVAL, Phase.MONITORING)

ClaimKey = tuple[str, str, str]  # (namespace, kind, name)


@dataclass(frozen=True)
class Claim:
    name: str
    order: tuple[str, str]
    started: bool


# The parsed spec of each live request, by uid. The spec is immutable (CEL), so it is parsed
# once, not at every event the queue's index sees; a finished request's entry is dropped.
_PARSED: dict[str, RollbackSpec] = {}


def parsed_spec(uid: str, spec: Mapping[str, Any]) -> RollbackSpec:
    """The request's spec, parsed once (see _PARSED; without a uid, parsed every time)."""
    parsed = _PARSED.get(uid) if uid else None
    if parsed is None:
        parsed = RollbackSpec.parse(dict(spec))
        if uid:
            _PARSED[uid] = parsed
    return parsed


def claims(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    created: str,
    *,
    uid: str = "",
) -> dict[ClaimKey, Claim]:
    """What a request holds. Dry runs and finished requests hold nothing."""
    phase = Phase(status.get("phase", Phase.PENDING))
    if phase.terminal or spec.get("dryRun"):
        _PARSED.pop(uid, None)
        return {}
    claim = Claim(name=name, order=(created, name), started=phase in STARTED)
    keys = target_keys(parsed_spec(uid, spec))
    # HPAs found by discovery are known once Preflight has run: claim them too.
    discovered = (status.get("targets") or {}).get("hpas") or []
    keys += [("HorizontalPodAutoscaler", hpa) for hpa in discovered]
    return {(namespace, kind, target): claim for kind, target in keys}


def target_keys(spec: RollbackSpec) -> list[tuple[str, str]]:
    """(kind, name) of every object the request's run changes."""
    keys = Targets.of(spec).claim_keys()
    database = DatabaseSpec.of(spec)
    if database is not None:
        keys.append(("Database", f"{database.connection.name}/{database.connection.key}"))
    return keys


def blocker(
    me: Claim, keys: Iterable[ClaimKey], holders: Mapping[ClaimKey, Iterable[Claim]]
) -> str | None:
    """The name of a request holding one of `keys` that `me` must wait for, if any."""
    for key in keys:
        for other in holders.get(key, ()):
            if other.name != me.name and (other.started or other.order < me.order):
                return other.name
    return None
