"""The post-mortem document (runbook §4): what happened, step by step, and what was changed and
restored, with the sections the team fills in before go-live is scheduled again. Pure: from the
request as it stands (spec, metadata, status) to Markdown, readable in a terminal or a browser.
The document is scrubbed whole (`redaction.scrub`): it quotes the steps' messages, the spec's
reason and what the checks and Jobs said, and it is kept in a ConfigMap and pasted into tickets.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rollback_operator.clock import parse
from rollback_operator.images import SelectedImages, with_tag
from rollback_operator.model import DEFAULT_TARGET_TAG, POSTMORTEM_KEY
from rollback_operator.monitoring import describe_rule, show_duration, show_value
from rollback_operator.redaction import scrub, scrub_tree
from rollback_operator.routes import describe_refs, where
from rollback_operator.traffic import describe

KEY = POSTMORTEM_KEY


def configmap_name(request: str) -> str:
    return f"{request}-postmortem"


def render(request: dict[str, Any], now: datetime) -> str:
    request = scrub_tree(request)  # each text scrubbed alone first, as it was written
    meta, spec, status = request["metadata"], request["spec"], request.get("status") or {}
    saved = status.get("saved") or {}
    lines = [
        f"# Post-mortem: rollback {meta['name']}",
        "",
        f"- **Namespace:** {meta['namespace']}",
        f"- **Trigger:** {spec['trigger']}",
        f"- **Reason:** {spec['reason']}",
        f"- **Requested:** {meta.get('creationTimestamp', '')}",
        f"- **Requested by:** {status.get('requestedBy') or '-'} (recorded by the API server)",
        f"- **Started:** {status.get('startedAt') or '-'}",
        f"- **Report written:** {now.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"- **Target tag:** {spec.get('targetTag', DEFAULT_TARGET_TAG)}",
        f"- **Dry run:** {'yes' if spec.get('dryRun') else 'no'}",
        "",
        "## Approvals",
        "",
        _approvals(status.get("steps", []), status.get("gates")),
        "",
        "## Timeline",
        "",
        "| # | step | state | started | finished | took | message |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, step in enumerate(status.get("steps", []), start=1):
        lines.append(
            f"| {number} | [{step['name']}](#{step['name'].lower()}) | {step['state']} | "
            f"{step.get('startedAt', '')} | {step.get('finishedAt', '')} | "
            f"{_took(step.get('startedAt'), step.get('finishedAt'))} | "
            f"{_cell(step.get('message', ''))} |"
        )
    lines += ["", "## What was changed and restored", ""]
    lines += _images(saved.get("deployments") or {}, spec)
    lines += _ingresses(saved.get("ingresses") or {}, spec)
    lines += _routes(saved.get("httpRoutes") or {})
    lines += _hpas(saved.get("hpas") or {})
    lines += _gitops(saved.get("gitops") or {}, meta)
    lines += _database(status)
    steps = {s["name"]: s for s in status.get("steps", [])}
    lines += ["## Verification", "", _step_line(steps.get("Verify")), ""]
    lines += _checks(status.get("checks") or [])
    lines += ["## Monitoring", "", _step_line(steps.get("Monitor")), ""]
    lines += _monitoring(status.get("monitoring") or {})
    lines += _notifications(status.get("notifications") or [])
    lines += ["## Step details", ""]
    for step in status.get("steps", []):
        lines += [f"### {step['name']}", "", f"{step['state']}: {step.get('message') or '-'}", ""]
    lines += [
        "## Root cause",
        "",
        "_To fill in: what failed, and why._",
        "",
        "## Findings",
        "",
        "_To fill in: what was learned from the incident and from this rollback._",
        "",
        "## Follow-ups",
        "",
        "_To fill in: the fixes to make, with owners, before go-live is scheduled again._",
        "",
    ]
    return scrub("\n".join(lines))


def _approvals(steps: list[dict[str, Any]], gates: list[dict[str, Any]] | None) -> str:
    """Which steps waited for whom and why (status.gates), and who approved what, naming the
    digest of what they approved."""
    lines = [
        f"- {g.get('step')} waited for {g.get('who')} (asked by {g.get('requiredBy')})"
        for g in gates or []
    ]
    lines += [
        f"- {s['name']}: approved by {s['approvedBy']} at {s.get('approvedAt', '?')}"
        + (
            f": {s['name']}@{s['approvalDigest']}, {s.get('approvalSubject')}"
            if s.get("approvalDigest")
            else ""
        )
        for s in steps
        if s.get("approvedBy")
    ]
    if not any(s.get("approvedBy") for s in steps):
        lines.append("No approval gate was passed in this run.")
    return "\n".join(lines)


def _gitops(saved: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The GitOps objects SuspendGitOps suspended, which the run leaves suspended, and what the
    team does next."""
    if not saved:
        return []
    lines = ["### GitOps (left suspended)", ""]
    for record in (saved[key] for key in sorted(saved)):
        was = {k: v for k, v in record.items() if k not in ("kind", "namespace", "name", "manages")}
        lines.append(
            f"- {record['kind']} {record['namespace']}/{record['name']} (manages "
            f"{', '.join(record.get('manages') or [])}): suspended; saved setting "
            f"`{json.dumps(was, sort_keys=True)}`"
        )
    lines += [
        "",
        "Its source still holds the bad release. Revert the go-live commit in Git (and retag, "
        "if the images are pinned by tag there), then run "
        f"`kubectl rollback resume-gitops {meta['name']} -n {meta['namespace']}`.",
        "",
    ]
    return lines


def _database(status: dict[str, Any]) -> list[str]:
    backup, jobs = status.get("backup"), status.get("jobs") or []
    if not backup and not jobs:
        return []
    lines = ["## Database", ""]
    if backup:
        lines += [
            f"- **Backup restored:** `{backup.get('directory', '')}/{backup.get('file', '')}` "
            f"on claim {backup.get('claimName', '-')}, {backup.get('sizeBytes', '?')} bytes, "
            f"sha256 `{backup.get('sha256', '?')}`",
        ]
    for job in jobs:
        lines.append(
            f"- **Job {job['name']}** ({job.get('step', '?')}), created {job.get('createdAt', '?')}"
        )
    return [*lines, ""]


def _checks(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return []
    lines = ["| check | type | result | attempts | last seen |", "|---|---|---|---|---|"]
    for check in checks:
        result = "passed" if check.get("passed") else "failed"
        lines.append(
            f"| {check['name']} | {check.get('type', '')} | {result} | "
            f"{check.get('attempts', '')} | {_cell(check.get('message', ''))} |"
        )
    return [*lines, ""]


def _monitoring(watch: dict[str, Any]) -> list[str]:
    if not watch:
        return []
    elapsed = show_duration(watch.get("elapsedSeconds", 0))
    planned = show_duration(watch.get("durationSeconds", 0))
    lines = [
        f"Watched for {elapsed} of {planned}: {watch.get('evaluations', 0)} evaluation(s), "
        f"{watch.get('healthy', 0)} healthy, {watch.get('noData', 0)} without data, "
        f"{watch.get('errors', 0)} failed queries.",
        "",
    ]
    rules = watch.get("rules") or []
    if rules:
        lines += [
            "| rule | query | threshold | last value | peak | last result |",
            "|---|---|---|---|---|---|",
        ]
        for rule in rules:
            name = rule["name"]
            figures = " | ".join(
                show_value(name, rule.get(k)) for k in ("threshold", "value", "peak")
            )
            lines.append(
                f"| {describe_rule(name)} | `{_cell(rule.get('query', ''))}` | {figures} | "
                f"{rule.get('result', '-')} |"
            )
        lines.append("")
    if watch.get("breach"):
        lines += [f"**Breach:** {watch['breach']}", ""]
    if watch.get("maintenanceOn"):
        lines += ["The breach switched the maintenance page back on.", ""]
    if watch.get("lastError"):
        lines += [f"Last Prometheus problem: {watch['lastError']}", ""]
    return lines


def _notifications(notifications: list[dict[str, Any]]) -> list[str]:
    if not notifications:
        return []
    lines = [
        "## Notifications",
        "",
        "| webhook | sent | failed | last error |",
        "|---|---|---|---|",
    ]
    for entry in notifications:
        lines.append(
            f"| {entry['name']} | {entry.get('sent', 0)} | {entry.get('failed', 0)} | "
            f"{_cell(entry.get('lastError', '') or '-')} |"
        )
    return [*lines, ""]


def _images(deployments: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    if not deployments:
        return []
    tag = spec.get("targetTag", DEFAULT_TARGET_TAG)
    lines = ["### Images", "", "| Deployment/container | before | after |", "|---|---|---|"]
    for name, record in sorted(deployments.items()):
        for container, image in sorted(SelectedImages.saved(record).labelled()):
            lines.append(f"| {name}/{container} | `{image}` | `{with_tag(image, tag)}` |")
    return [*lines, ""]


def _ingresses(ingresses: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    if not ingresses:
        return []
    backend = spec["traffic"]["maintenanceBackend"]
    maintenance = f"{backend['service']}:{backend['port']}"
    lines = [
        "### Traffic",
        "",
        f"Every backend below pointed to the maintenance page ({maintenance}) during the "
        "rollback, then back to its original:",
        "",
        "| Ingress | where | original backend |",
        "|---|---|---|",
    ]
    for name, record in sorted(ingresses.items()):
        for entry in record["backends"]:
            where = entry["location"].get("pathValue") or "defaultBackend"
            host = entry["location"].get("host") or ""
            lines.append(f"| {name} | {host}{where} | {describe(entry['backend'])} |")
    return [*lines, ""]


def _routes(routes: dict[str, Any]) -> list[str]:
    if not routes:
        return []
    lines = [
        "### HTTPRoutes",
        "",
        "Every rule below sent its traffic to the maintenance page during the rollback, then its "
        "original backendRefs were written back:",
        "",
        "| HTTPRoute | rule | original backendRefs |",
        "|---|---|---|",
    ]
    for name, record in sorted(routes.items()):
        for entry in record["rules"]:
            lines.append(
                f"| {name} | {where(entry['location'])} | "
                f"{_cell(describe_refs(entry['backendRefs']))} |"
            )
    return [*lines, ""]


def _hpas(hpas: dict[str, Any]) -> list[str]:
    if not hpas:
        return []
    lines = [
        "### Autoscaling",
        "",
        "Frozen (scale up and down disabled) during the rollback, then given back:",
        "",
        "| HPA | minReplicas | maxReplicas | behavior before |",
        "|---|---|---|---|",
    ]
    for name, record in sorted(hpas.items()):
        behavior = "custom" if record.get("behavior") else "default"
        lines.append(f"| {name} | {record['minReplicas']} | {record['maxReplicas']} | {behavior} |")
    return [*lines, ""]


def _step_line(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    return (
        f"[{step['name']}](#{step['name'].lower()}): {step['state']}: {step.get('message') or '-'}"
    )


def _took(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    return f"{(parse(end) - parse(start)).total_seconds():.2f}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
