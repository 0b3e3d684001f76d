"""What a step's run comes to, and the approvals it may wait for: plain values that the engine
records in the ledger (pure, so the engine needs nothing of the steps themselves)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    message: str
    warnings: tuple[str, ...] = ()  # e.g. drift found while restoring; each becomes a Warning Event
    warning_reason: str = "Drift"  # the reason of those Events


@dataclass(frozen=True)
class Wait:
    message: str
    retry_after: float = 1.0


@dataclass(frozen=True)
class Fail:
    message: str


@dataclass(frozen=True)
class NeedsApproval:
    """The step may not go on until a person approves it (runbook §3: the DBA owns the
    restore, QA signs the verification off). The run waits in phase AwaitingApproval; the
    message says who must approve and how."""

    message: str
    retry_after: float = 1.0
    # What the approval must name (approve: <step>@<digest>) and what that digest stands for,
    # so that an approval is bound to what it approves; `voided`: why an approval already
    # recorded no longer counts (what it approved changed), which drops it from the ledger.
    digest: str = ""
    subject: str = ""
    voided: str = ""


Outcome = Done | Wait | Fail | NeedsApproval


@dataclass(frozen=True)
class Approval:
    """An approval recorded in the ledger: who (from the approved-by annotation, which the
    admission policy holds to the approver's own username) and when."""

    by: str
    at: str
    digest: str = ""  # of what was approved (NeedsApproval.digest when it was given)
