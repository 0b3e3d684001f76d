"""Follows a RollbackRequest until it ends, printing each step as it changes, then the story:
the ledger with durations and what was changed (images) and restored (Ingress, HPAs).

Used by `make demo`; reads only, through the current KUBECONFIG.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

from kubernetes import client, config

GROUP, VERSION, PLURAL = "rollback.lawyershub.io", "v1alpha1", "rollbackrequests"
TERMINAL = {"Succeeded", "Failed", "Aborted"}


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return f"{(parse(end) - parse(start)).total_seconds():.2f}s"


def follow(namespace: str, name: str, timeout: float) -> dict[str, Any]:
    custom = client.CustomObjectsApi()
    seen: dict[str, tuple[str, str]] = {}
    phase = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        if status.get("phase") != phase:
            phase = status.get("phase", "")
            print(f"  phase  {phase}")
        for step in status.get("steps", []):
            state = (step["state"], step.get("message", ""))
            if step["state"] != "Pending" and seen.get(step["name"]) != state:
                seen[step["name"]] = state
                print(f"  {step['state']:<10} {step['name']:<20} {step.get('message', '')}"[:160])
        if phase in TERMINAL:
            return obj
        time.sleep(0.2)
    sys.exit(f"{name} did not finish within {timeout:.0f}s")


def story(obj: dict[str, Any]) -> None:
    status = obj["status"]
    print(f"\n{obj['metadata']['name']}: {status['phase']}: {status.get('message', '')}\n")
    print(f"  {'STEP':<20} {'STATE':<10} {'TOOK':>8}")
    for step in status["steps"]:
        took = _seconds(step.get("startedAt"), step.get("finishedAt"))
        print(f"  {step['name']:<20} {step['state']:<10} {took:>8}")
    saved = status.get("saved") or {}
    if saved.get("deployments"):
        print("\n  images (before -> after):")
        apps = client.AppsV1Api()
        for name, record in saved["deployments"].items():
            now = {
                c.name: c.image
                for c in apps.read_namespaced_deployment(
                    name, obj["metadata"]["namespace"]
                ).spec.template.spec.containers
            }
            for container, image in record["images"].items():
                print(f"    {name}/{container}: {image} -> {now.get(container)}")
    if saved.get("ingresses"):
        print("\n  Ingress backends saved and restored:")
        for name, record in saved["ingresses"].items():
            for entry in record["backends"]:
                service = entry["backend"].get("service", {})
                port = service.get("port", {})
                where = entry["location"].get("pathValue") or "defaultBackend"
                target = f"{service.get('name')}:{port.get('number', port.get('name'))}"
                print(f"    {name} {where}: {target}")
    if saved.get("hpas"):
        print("\n  HPAs frozen and resumed:")
        for name, record in saved["hpas"].items():
            print(f"    {name}: min {record['minReplicas']} max {record['maxReplicas']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    config.load_kube_config()
    obj = follow(args.namespace, args.name, args.timeout)
    story(obj)
    sys.exit(0 if obj["status"]["phase"] == "Succeeded" else 1)


if __name__ == "__main__":
    main()
