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

from rollback_operator.model import Phase
from rollback_operator.status import Status


@dataclass(frozen=True)
class Leftover:
    request: str  # the request whose record this is
    saved: dict[str, Any]  # its status.saved entry for the object


def leftovers(requests: list[dict[str, Any]], me: str) -> dict[str, dict[str, Leftover]]:
    """For `ingresses`, `httpRoutes` and `hpas`: each object changed and not restored by a
    finished request,
    with the record of the most recent such request (a later restore clears it)."""
    finished = [
        r
        for r in requests
        if r["metadata"]["name"] != me
        and not r["spec"].get("dryRun")
        and Phase(r.get("status", {}).get("phase", Phase.PENDING)).terminal
    ]
    finished.sort(key=lambda r: (r["status"].get("finishedAt") or "", r["metadata"]["name"]))
    found: dict[str, dict[str, Leftover]] = {"ingresses": {}, "httpRoutes": {}, "hpas": {}}
    for request in finished:
        status = request["status"]
        ingresses_back, hpas_back = Status.from_dict(status).restored()
        restored = {"ingresses": ingresses_back, "httpRoutes": ingresses_back, "hpas": hpas_back}
        for section, records in found.items():
            for name, record in (status.get("saved") or {}).get(section, {}).items():
                if restored[section]:
                    records.pop(name, None)
                else:
                    records[name] = Leftover(request["metadata"]["name"], record)
    return found
