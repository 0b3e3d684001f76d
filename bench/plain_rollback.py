"""The floor: the runbook's API calls made by a plain sequential script, with no bookkeeping.

No status, no Events, no saved state beyond local variables, no crash safety: the fewest
requests and the least time in which the same rollback can be done through the API. The
operator's figures are read against these. The calls and their bodies are the operator's own
(merge patches carrying the resourceVersion read for the Ingress, the HPA freeze, a strategic
merge patch of the selected containers' images), so only the orchestration differs.

Run on its own: `.venv/bin/python -m bench.plain_rollback NAMESPACE`.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field

from bench.api import (
    JSON,
    STRATEGIC_MERGE_PATCH,
    Api,
    deployment_path,
    hpa_path,
    ingress_path,
    service_path,
)
from bench.app import MAINTENANCE_BACKEND, deployment_rolled_out
from rollback_operator.model import DEFAULT_TARGET_TAG

INGRESS = "lawyershub"
MAINTENANCE_SERVICE = "maintenance-page"
HPAS = ("backend", "frontend")
WORKLOADS: dict[str, tuple[str, ...] | None] = {"backend": ("api",), "frontend": None}
FREEZE = {
    "spec": {
        "behavior": {
            "scaleUp": {"selectPolicy": "Disabled"},
            "scaleDown": {"selectPolicy": "Disabled"},
        }
    }
}
# As often as the operator checks a rollout at its quickest (its steps poll every 0.25 s at
# first, backing off to 5 s): the floor must not lose time to a slower poll.
POLL_SECONDS = 0.25


@dataclass
class PlainRun:
    """What the script did: its requests by kind, and the time each phase took."""

    requests: int = 0
    polls: int = 0
    marks: dict[str, float] = field(default_factory=dict)


def maintenance_patch(ingress: JSON) -> JSON:
    """The merge patch that points every path of the Ingress at the maintenance page."""
    spec = copy.deepcopy(ingress["spec"])
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            path["backend"] = copy.deepcopy(MAINTENANCE_BACKEND)
    return {
        "metadata": {"resourceVersion": ingress["metadata"]["resourceVersion"]},
        "spec": {"rules": spec["rules"]},
    }


def restore_patch(original: JSON) -> JSON:
    return {"spec": {"rules": copy.deepcopy(original["spec"]["rules"])}}


def with_tag(image: str, tag: str) -> str:
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repository}:{tag}"


def image_patch(deployment: JSON, containers: tuple[str, ...] | None) -> JSON:
    selected = [
        {"name": c["name"], "image": with_tag(c["image"], DEFAULT_TARGET_TAG)}
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if containers is None or c["name"] in containers
    ]
    return {"spec": {"template": {"spec": {"containers": selected}}}}


def run(api: Api, ns: str, timeout: float = 600) -> PlainRun:
    """The whole rollback, in sequence: read, switch, freeze, revert, wait, unfreeze, restore."""
    done = PlainRun()
    start = time.monotonic()

    def call(method: str, path: str, body: JSON | None = None, kind: str | None = None) -> JSON:
        done.requests += 1
        if method == "GET":
            found = api.get(path)
            if found is None:
                raise LookupError(f"{path} not found")
            return found
        return api.patch(path, body or {}, kind or "application/merge-patch+json")

    ingress = call("GET", ingress_path(ns, INGRESS))
    call("GET", service_path(ns, MAINTENANCE_SERVICE))
    deployments = {name: call("GET", deployment_path(ns, name)) for name in WORKLOADS}
    hpas = {name: call("GET", hpa_path(ns, name)) for name in HPAS}
    done.marks["read"] = time.monotonic() - start

    call("PATCH", ingress_path(ns, INGRESS), maintenance_patch(ingress))
    done.marks["maintenance"] = time.monotonic() - start
    for name in HPAS:
        call("PATCH", hpa_path(ns, name), FREEZE)
    for name, containers in WORKLOADS.items():
        call(
            "PATCH",
            deployment_path(ns, name),
            image_patch(deployments[name], containers),
            STRATEGIC_MERGE_PATCH,
        )
    pending = set(WORKLOADS)
    while pending:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"rollout of {sorted(pending)} not complete in {timeout:g}s")
        time.sleep(POLL_SECONDS)
        done.polls += 1
        pending = {
            name
            for name in pending
            if not deployment_rolled_out(call("GET", deployment_path(ns, name)))
        }
    done.marks["rolled_out"] = time.monotonic() - start
    for name in HPAS:
        call(
            "PATCH", hpa_path(ns, name), {"spec": {"behavior": hpas[name]["spec"].get("behavior")}}
        )
    call("PATCH", ingress_path(ns, INGRESS), restore_patch(ingress))
    done.marks["restored"] = time.monotonic() - start
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("namespace")
    args = parser.parse_args()
    result = run(Api.from_kubeconfig(), args.namespace)
    marks = ", ".join(f"{k} at {v * 1000:.0f} ms" for k, v in result.marks.items())
    print(f"{result.requests} requests ({result.polls} poll rounds); {marks}")


if __name__ == "__main__":
    main()
