"""The approval gates (runbook §3), as the steps that wait for a person use them.

Which steps wait, and for whom, is decided once, in Preflight, from the admins' RollbackPolicy
and the request (`admin_policy.gate`: a request may add a gate, never remove one), and
recorded in status.gates. A step that waits names what it waits to have approved, its
*subject* (for the restore: the database, the file and its sha256, the image), and a short
digest of it: the approval must name that digest (`approve: <step>@<digest>`), and counts only
while the subject is still the same. If the subject has changed by the time the step would
act, the approval is void and the step waits again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rollback_operator.admin_policy import DEFAULT_POLICY, FROM_REQUEST, AdminPolicy, Gate, gate
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.steps.base import NeedsApproval, StepContext
from rollback_operator.verification import VerificationSpec

DIGEST_LENGTH = 16  # hex characters: 64 bits, enough to tell two subjects apart by accident


def approvable_steps(spec: RollbackSpec) -> dict[StepName, bool]:
    """The steps of this request that could wait for an approval, each with whether the
    request itself asks for it (requireApproval)."""
    steps: dict[StepName, bool] = {}
    database = DatabaseSpec.of(spec)
    if database is not None and database.runs_migrate_down:
        steps[StepName.MIGRATE_DATABASE_DOWN] = False
    if database is not None and database.restore is not None:
        steps[StepName.RESTORE_DATABASE] = database.restore.require_approval
    verification = VerificationSpec.of(spec)
    steps[StepName.VERIFY] = verification is not None and verification.require_approval
    return steps


def gates_record(policy: AdminPolicy, requested: Mapping[StepName, bool]) -> list[dict[str, Any]]:
    """status.gates: every step of this run that waits for an approval, who gives it and why.
    `requested`: the steps that run, each with whether the request itself asks to approve it."""
    out: list[dict[str, Any]] = []
    for step, asked in requested.items():
        found = gate(policy, step, asked)
        if found is not None:
            out.append(
                {
                    "step": str(step),
                    "groups": [list(layer) for layer in found.layers],
                    "who": found.who(),
                    "requiredBy": found.reason,
                }
            )
    return out


def required_gate(ctx: StepContext, step: StepName, requested: bool) -> Gate | None:
    """The gate `step` waits at in this run, as Preflight recorded it. A request that passed
    Preflight before gates were recorded gets the defaults (and its own requireApproval)."""
    recorded = ctx.ledger.section("gates")
    if recorded is None:
        return gate(DEFAULT_POLICY, step, requested)
    for entry in recorded:
        if entry.get("step") == step:
            layers = tuple(tuple(str(g) for g in layer) for layer in entry.get("groups") or ())
            return Gate(step, layers or ((),), str(entry.get("requiredBy") or FROM_REQUEST))
    return None


def digest(subject: Mapping[str, Any]) -> str:
    """A short, stable digest of what an approval approves."""
    canonical = json.dumps(subject, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_LENGTH]


def describe(subject: Mapping[str, Any]) -> str:
    """The subject as a person reads it: "database db.example:5432/app; file ...; ..."."""
    parts = []
    for key, value in subject.items():
        text = str(value)
        if isinstance(value, Mapping):
            text = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            text = ", ".join(str(v) for v in value)
        parts.append(f"{key} {text}")
    return "; ".join(parts)


def await_approval(
    ctx: StepContext, found: Gate, subject: Mapping[str, Any], what: str, voided: str = ""
) -> NeedsApproval | None:
    """None when the step holds an approval of exactly `subject`; else the NeedsApproval that
    asks for one (and, when an approval of something else was recorded, voids it).
    `voided`: why an approval given is void even if its digest still matches (the step found
    the subject changed while acting on it)."""
    wanted = digest(subject)
    held = ctx.approval
    if held is not None and held.digest == wanted and not voided:
        return None
    text = describe(subject)
    if held is not None and not voided:
        voided = (
            f"the approval by {held.by} of {ctx.request} {found.step}@{held.digest or '?'} is "
            "void: what it approved has changed"
        )
    ask = (
        f"waiting for {found.who()} (asked by {found.reason}) to approve {what}: {text}. "
        f"They check it, then run `kubectl rollback approve {ctx.request} {found.step} -n "
        f"{ctx.namespace}`, which approves {found.step}@{wanted}; the person who created the "
        "request cannot. The maintenance page stays on meanwhile"
    )
    message = f"{voided}; {ask}" if voided else ask
    return NeedsApproval(message, digest=wanted, subject=text, voided=voided)
