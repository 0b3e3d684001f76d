"""A request runs once: the record of finished runs that outlives the request.

A GitOps tool that deletes and re-creates a RollbackRequest (a sync with replace, an Application
re-created, a namespace restored from Git) makes a new object with the same name and spec, and a
new uid. Run again, it would redo the whole runbook, database restore included. What survives
the deletion is the post-mortem ConfigMap (`<name>-postmortem`: the operator gives it no owner,
so the garbage collector leaves it): the Report step stamps it with one annotation per finished
run, keyed by a hash of the spec and of the rerun annotation's reason
(`run.rollback.lawyershub.io/<hash>: {"uid", "phase", "finishedAt"}`). A new request whose key
is there, from another uid, ends at once with that run's ending (engine.ran_before).

The rerun annotation is part of the key, not a bypass: a reason not used before runs the
request once more, and the same manifest re-applied with that reason still runs only once.
A dry run never writes a record (it changes nothing), so it can always run again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rollback_operator import GROUP
from rollback_operator.clock import stamp
from rollback_operator.engine import EarlierRun
from rollback_operator.model import Phase

PREFIX = f"run.{GROUP}/"


def key(spec: Mapping[str, Any], rerun: str | None) -> str:
    """The record's key: what makes two requests of one name the same run."""
    canonical = json.dumps({"spec": spec, "rerun": rerun or ""}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def records(configmap: Mapping[str, Any] | None) -> dict[str, str]:
    """Every run record of a post-mortem ConfigMap, as its annotations hold them."""
    annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(PREFIX)}


def stamped(
    configmap: Mapping[str, Any] | None, record_key: str, uid: str, phase: Phase, now: Any
) -> dict[str, str]:
    """The ConfigMap's run records with this run's added (or replaced, if it ran before)."""
    entry = {"uid": uid, "phase": str(phase), "finishedAt": stamp(now)}
    return {**records(configmap), PREFIX + record_key: json.dumps(entry, sort_keys=True)}


def earlier(configmap: Mapping[str, Any] | None, record_key: str, uid: str) -> EarlierRun | None:
    """The finished run of the same key by another request, if the ConfigMap records one."""
    raw = records(configmap).get(PREFIX + record_key)
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        phase = Phase(entry["phase"])
    except (ValueError, KeyError, TypeError):
        return None  # not a record this operator wrote: do not trust it to skip a rollback
    if entry.get("uid") == uid or not phase.terminal:
        return None
    return EarlierRun(
        uid=str(entry["uid"]),
        phase=phase,
        finished_at=str(entry.get("finishedAt", "")),
        configmap=str(configmap["metadata"]["name"]) if configmap else "",
        key=record_key,
    )
