"""Follows a RollbackRequest until it ends, printing each step as it changes, then the story:
the ledger with durations and approvals, what was changed (images) and restored (Ingress,
HPAs), the backup restored, the checks, the watch, the notifications and the post-mortem.

With `--approve STEP=USER:GROUP`, it plays that person when the run waits for them: once the
request is AwaitingApproval at STEP, it prints and runs `kubectl rollback approve` as USER
(impersonated, in GROUP), which the API server's approval policy then judges as it would judge
USER's own approval. With `--site URL --host HOST`, it shows what a customer gets through the
local proxy while the site is on maintenance.

Used by `make demo`, through the current KUBECONFIG.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.images import SelectedImages, pod_images
from rollback_operator.model import ended


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return f"{(parse(end) - parse(start)).total_seconds():.2f}s"


def _cut(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def _millis(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def approve_command(namespace: str, name: str, step: str, user: str, group: str) -> list[str]:
    """`kubectl rollback approve` (the plugin installed beside this interpreter), as `user` in
    `group`."""
    plugin = str(Path(sys.executable).parent / "kubectl-rollback")
    return [plugin, "approve", name, step, "-n", namespace, "--as", user, "--as-group", group]


def show_site(site: tuple[str, str]) -> None:
    """What a customer gets now: the `curl` through the local proxy, and its answer."""
    url, host = site
    print(f"\n  the site now, through the proxy:\n  $ curl -s -H 'Host: {host}' {url}", flush=True)
    try:
        answer = httpx.get(url, headers={"Host": host}, timeout=5)
        print(f"  {answer.text.strip()}\n", flush=True)
    except httpx.HTTPError as error:
        print(f"  {type(error).__name__}: {error}\n", flush=True)


def follow(
    namespace: str,
    name: str,
    timeout: float,
    approvers: dict[str, tuple[str, str]],
    site: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """With `site` (URL, Host), shows it once while on maintenance: at the first wait for an
    approval, or when DisableMaintenance starts."""
    custom = client.CustomObjectsApi()
    seen: dict[str, tuple[str, str]] = {}
    approved: set[str] = set()
    phase = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        if status.get("phase") != phase:
            phase = status.get("phase", "")
            print(f"  phase  {phase}", flush=True)
        for step in status.get("steps", []):
            state = (step["state"], step.get("message", ""))
            if step["state"] != "Pending" and seen.get(step["name"]) != state:
                seen[step["name"]] = state
                print(_cut(f"  {step['state']:<10} {step['name']:<20} {state[1]}"), flush=True)
        if ended(status):
            return obj
        waiting = status.get("step", "")
        states = {step["name"]: step["state"] for step in status.get("steps", [])}
        if (
            site
            and states.get("EnableMaintenance") == "Succeeded"
            and (phase == "AwaitingApproval" or states.get("DisableMaintenance") == "Running")
        ):
            show_site(site)
            site = None
        if phase == "AwaitingApproval" and waiting in approvers and waiting not in approved:
            approved.add(waiting)
            user, group = approvers[waiting]
            command = approve_command(namespace, name, waiting, user, group)
            print(f"\n  {user} (group {group}) approves {waiting}:")
            shown = ["kubectl", "rollback", *command[1:]]
            print(f"  $ {shlex.join(shown)}", flush=True)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            print(f"  {(done.stdout + done.stderr).strip()}\n", flush=True)
            if done.returncode != 0:
                sys.exit(f"the approval of {waiting} by {user} was refused")
        time.sleep(0.2)
    sys.exit(f"{name} did not finish within {timeout:.0f}s")


def story(obj: dict[str, Any]) -> None:
    status = obj["status"]
    namespace = obj["metadata"]["namespace"]
    print(f"\n{obj['metadata']['name']}: {status['phase']}: {status.get('message', '')}\n")
    print(f"  {'STEP':<20} {'STATE':<10} {'TOOK':>8}  APPROVED BY")
    for step in status["steps"]:
        took = _seconds(step.get("startedAt"), step.get("finishedAt"))
        by = step.get("approvedBy", "")
        print(f"  {step['name']:<20} {step['state']:<10} {took:>8}  {by}".rstrip())
    saved = status.get("saved") or {}
    if saved.get("deployments"):
        print("\n  images (before -> after):")
        apps = client.AppsV1Api()
        for name, record in saved["deployments"].items():
            deployment = apps.api_client.sanitize_for_serialization(
                apps.read_namespaced_deployment(name, namespace)
            )
            for kind, container, label, image in SelectedImages.saved(record).by_kind():
                now = pod_images(deployment, kind).get(container)
                print(f"    {name}/{label}: {image} -> {now}")
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
    backup = status.get("backup")
    if backup:
        print("\n  backup chosen by Preflight (and checked again by the restore Job):")
        print(
            f"    {backup['directory']}/{backup['file']} on claim {backup['claimName']}: "
            f"{backup['sizeBytes']} bytes, sha256 {backup['sha256'][:16]}…"
        )
    if status.get("jobs"):
        print("\n  Jobs (each run once):")
        for job in status["jobs"]:
            print(f"    {job['name']} ({job.get('step', '')})")
    if status.get("checks"):
        print("\n  checks before traffic returned:")
        for check in status["checks"]:
            verdict = "passed" if check.get("passed") else "FAILED"
            line = f"    {check['name']:<14} {check.get('type', ''):<5} {verdict:<7}"
            print(_cut(f"{line} {check.get('message', '')}"))
    watch = status.get("monitoring")
    if watch:
        print(
            f"\n  the watch: {watch.get('evaluations', 0)} evaluation(s) in "
            f"{watch.get('elapsedSeconds', 0)}s, {watch.get('healthy', 0)} healthy"
        )
        for rule in watch.get("rules", []):
            show = _percent if rule["name"] == "errorRate" else _millis
            print(
                f"    {rule['name']:<10} last {show(rule.get('value'))}, peak "
                f"{show(rule.get('peak'))} (threshold {show(rule.get('threshold'))})"
            )
    if status.get("notifications"):
        print("\n  notifications:")
        for note in status["notifications"]:
            print(
                f"    {note['name']:<10} {note.get('sent', 0)} sent, {note.get('failed', 0)} "
                f"failed, last {note.get('lastEvent', '')}"
            )
    report = status.get("report")
    if report:
        print(
            f"\n  post-mortem: ConfigMap {report['configMap']}, key {report['key']} "
            f"(kubectl rollback report {obj['metadata']['name']} -n {namespace})"
        )


def _approver(text: str) -> tuple[str, tuple[str, str]]:
    step, _, person = text.partition("=")
    user, _, group = person.partition(":")
    if not (step and user and group):
        raise argparse.ArgumentTypeError(f"{text!r}: write STEP=USER:GROUP")
    return step, (user, group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--approve",
        type=_approver,
        action="append",
        default=[],
        metavar="STEP=USER:GROUP",
        help="approve STEP as USER (in GROUP) when the run waits for it",
    )
    parser.add_argument("--site", metavar="URL", help="the site through the local proxy")
    parser.add_argument("--host", default="", help="the site's host name (with --site)")
    args = parser.parse_args()
    config.load_kube_config()
    site = (args.site, args.host) if args.site else None
    obj = follow(args.namespace, args.name, args.timeout, dict(args.approve), site)
    story(obj)
    sys.exit(0 if obj["status"]["phase"] == "Succeeded" else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
