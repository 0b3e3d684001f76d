"""The request's status as the operator keeps it: the ledger of steps, what was saved, the phase.

A plain, typed mirror of `.status` (see docs/api-reference.md). It is loaded from the object
when the operator (re)starts and written back whole after every transition, so the object is
always the single source of truth: an operator killed at any point resumes from it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rollback_operator.model import STEP_ORDER, Phase, StepName, StepState, Targets

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Status sections that belong to one capability each (see the CRD): the backup Preflight
# resolved, the Jobs started, the verification checks, the monitoring watch, the notifications.
# `gates`: the approvals this run waits for and why (Preflight, from the RollbackPolicy).
SECTIONS = ("backup", "jobs", "checks", "monitoring", "notifications", "gates")


def record_dict(record: DataclassInstance) -> dict[str, Any]:
    """A flat record of a status section as it is written: its fields under camelCase keys,
    those that are None left out."""
    out: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is not None:
            head, *rest = f.name.split("_")
            out[head + "".join(word.title() for word in rest)] = value
    return out


@dataclass
class StepRecord:
    name: StepName
    state: StepState = StepState.PENDING
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""
    attempts: int = 0
    approved_by: str | None = None
    approved_at: str | None = None
    # While the step waits for (or holds) an approval: the digest the approval must name, and
    # what it stands for (the database, the file and its sha256, the image ...).
    approval_digest: str | None = None
    approval_subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": str(self.name),
            "state": str(self.state),
            "attempts": self.attempts,
        }
        if self.started_at:
            out["startedAt"] = self.started_at
        if self.finished_at:
            out["finishedAt"] = self.finished_at
        if self.message:
            out["message"] = self.message
        if self.approved_by:
            out["approvedBy"] = self.approved_by
            out["approvedAt"] = self.approved_at
        if self.approval_digest:
            out["approvalDigest"] = self.approval_digest
            out["approvalSubject"] = self.approval_subject or ""
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepRecord:
        return cls(
            name=StepName(raw["name"]),
            state=StepState(raw.get("state", StepState.PENDING)),
            started_at=raw.get("startedAt"),
            finished_at=raw.get("finishedAt"),
            message=raw.get("message", ""),
            attempts=int(raw.get("attempts", 0)),
            approved_by=raw.get("approvedBy"),
            approved_at=raw.get("approvedAt"),
            approval_digest=raw.get("approvalDigest"),
            approval_subject=raw.get("approvalSubject"),
        )


@dataclass
class Status:
    phase: Phase = Phase.PENDING
    step: StepName | None = None
    steps: list[StepRecord] = field(default_factory=lambda: [StepRecord(n) for n in STEP_ORDER])
    saved: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: Targets | None = None  # what Preflight resolved; None before
    report: dict[str, str] | None = None
    queued_behind: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    observed_generation: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    message: str = ""
    sections: dict[str, Any] = field(default_factory=dict)
    # False from the terminal write until the end is announced (see the CRD); None before.
    announced: bool | None = None
    # Who created the request, as the API server recorded it (the requested-by annotation).
    requested_by: str | None = None

    def record(self, name: StepName) -> StepRecord:
        return next(r for r in self.steps if r.name == name)

    def restored(self) -> tuple[bool, bool]:
        """Whether the Ingresses serve the application again, and the HPAs scale again, as far
        as the ledger knows: their restoring step succeeded and, for the Ingresses, no breach
        during the watch switched the maintenance page back on."""
        done = {r.name for r in self.steps if r.state == StepState.SUCCEEDED}
        switched_back = bool((self.sections.get("monitoring") or {}).get("maintenanceOn"))
        ingresses = StepName.DISABLE_MAINTENANCE in done and not switched_back
        return ingresses, StepName.RESUME_AUTOSCALING in done

    def copy(self) -> Status:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": str(self.phase),
            "steps": [r.to_dict() for r in self.steps],
            "saved": copy.deepcopy(self.saved),
            "conditions": copy.deepcopy(self.conditions),
            "message": self.message,
            # Explicit nulls, so that a merge patch clears what no longer applies.
            "step": str(self.step) if self.step else None,
            "targets": None if self.targets is None else self.targets.to_dict(),
            "report": copy.deepcopy(self.report),
            "queuedBehind": self.queued_behind,
            "observedGeneration": self.observed_generation,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "announced": self.announced,
            "requestedBy": self.requested_by,
        }
        out.update(copy.deepcopy(self.sections))
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Status:
        """The stored status, or a fresh one (every step Pending) for a new request."""
        if not raw or "steps" not in raw:
            return cls()
        by_name = {r["name"]: StepRecord.from_dict(r) for r in raw.get("steps", [])}
        return cls(
            phase=Phase(raw.get("phase", Phase.PENDING)),
            step=StepName(raw["step"]) if raw.get("step") else None,
            steps=[by_name.get(str(n), StepRecord(n)) for n in STEP_ORDER],
            saved=copy.deepcopy(raw.get("saved") or {}),
            targets=Targets.from_dict(raw.get("targets")),
            report=copy.deepcopy(raw.get("report")),
            queued_behind=raw.get("queuedBehind"),
            conditions=copy.deepcopy(raw.get("conditions") or []),
            observed_generation=raw.get("observedGeneration"),
            started_at=raw.get("startedAt"),
            finished_at=raw.get("finishedAt"),
            message=raw.get("message", ""),
            announced=raw.get("announced"),
            requested_by=raw.get("requestedBy"),
            sections={k: copy.deepcopy(raw[k]) for k in SECTIONS if raw.get(k) is not None},
        )
