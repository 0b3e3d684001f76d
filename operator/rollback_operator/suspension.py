"""What the record says about the GitOps objects SuspendGitOps suspended: they stay suspended
after the run (their source still holds the bad release), so the final message says what to do
and a GitOpsSuspended condition says so. Pure: read from status.saved.gitops.
"""

from __future__ import annotations

from rollback_operator.model import RollbackSpec
from rollback_operator.status import Status


def suspended_gitops(status: Status) -> list[str]:
    """The Argo CD, Flux and KEDA objects the run suspended, as recorded before the change."""
    saved = status.saved.get("gitops") or {}
    return [f"{r['kind']} {r['namespace']}/{r['name']}" for _, r in sorted(saved.items())]


def gitops_advice(status: Status, message: str) -> str:
    """`message`, then what to do about them once the run is over (also on Failed and Aborted:
    resuming them would put the bad release back while the site is on its way out of it)."""
    suspended = suspended_gitops(status)
    if not suspended:
        return message
    return (
        message.rstrip(".")
        + f". GitOps stays suspended ({', '.join(suspended)}): its source still holds the bad "
        "release. Revert the go-live commit in Git (and retag, if the images are pinned by tag "
        "there), then run `kubectl rollback resume-gitops` on this request."
    )


def gitops_conditions(status: Status, spec: RollbackSpec) -> list[tuple[str, bool, str, str]]:
    """GitOpsSuspended, True from SuspendGitOps' first change on and after the run; absent
    from a request that suspended nothing."""
    suspended = suspended_gitops(status)
    if not suspended:
        return []
    return [
        (
            "GitOpsSuspended",
            True,
            "Suspended",
            f"suspended: {', '.join(suspended)}; revert the go-live commit in Git, then "
            "`kubectl rollback resume-gitops`",
        )
    ]
