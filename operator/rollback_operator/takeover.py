"""What an earlier request left changed: the state a new request must take over, not save anew.

A run that failed or was aborted leaves the maintenance page on and the HPAs frozen, on
purpose. The SRE fixes the cause and creates a new request. That request must not record the
maintenance backends and the frozen behavior as "the originals", or it would restore them and
report traffic restored while the site stays down: it takes over the earlier request's record
instead. Pure: works on the request objects as listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollback_operator.model import Phase, StepName, StepState


@dataclass(frozen=True)
class Leftover:
    request: str  # the request whose record this is
    saved: dict[str, Any]  # its status.saved entry for the object


def leftovers(requests: list[dict[str, Any]], me: str) -> dict[str, dict[str, Leftover]]:
    """For `ingresses` and `hpas`: each object changed and not restored by a finished request,
    with the record of the most recent such request (a later restore clears it)."""
    finished = [
        r
        for r in requests
        if r["metadata"]["name"] != me
        and not r["spec"].get("dryRun")
        and Phase(r.get("status", {}).get("phase", Phase.PENDING)).terminal
    ]
    finished.sort(key=lambda r: (r["status"].get("finishedAt") or "", r["metadata"]["name"]))
    found: dict[str, dict[str, Leftover]] = {"ingresses": {}, "hpas": {}}
    restoring = {"ingresses": StepName.DISABLE_MAINTENANCE, "hpas": StepName.RESUME_AUTOSCALING}
    for request in finished:
        status = request["status"]
        states = {s["name"]: s.get("state") for s in status.get("steps", [])}
        # A breach during the watch can switch the maintenance page back on after the restore.
        switched_back = bool((status.get("monitoring") or {}).get("maintenanceOn"))
        for section, step in restoring.items():
            for name, record in (status.get("saved") or {}).get(section, {}).items():
                restored = states.get(str(step)) == StepState.SUCCEEDED
                if section == "ingresses" and switched_back:
                    restored = False
                if restored:
                    found[section].pop(name, None)
                else:
                    found[section][name] = Leftover(request["metadata"]["name"], record)
    return found
