"""What the plugin prints, from the objects as the API server returns them: no I/O here.

Times and ages, the ledger table of `status`, the change-only view of `status -w` off a
terminal, the plan of `create --dry-run`, the table of `list`, and `-o json|yaml`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import yaml

from kubectl_rollback import EXIT_FAILED, EXIT_OK, EXIT_RUNNING, STEPS, PluginError
from rollback_operator.images import repository
from rollback_operator.model import DEFAULT_TARGET_TAG, Phase, StepState

COLUMNS = (("STEP", 20), ("STATE", 10), ("STARTED", 9), ("TOOK", 9))
_COLORS = {
    "Succeeded": "32",
    "Failed": "31",
    "Aborted": "35",
    "Running": "33",
    "Queued": "36",
    "AwaitingApproval": "36",
    "Monitoring": "33",
    "Skipped": "2",
    "Pending": "2",
}
OUTPUTS = ("json", "yaml")


def colors_allowed(tty: bool) -> bool:
    """Colours on a terminal, unless NO_COLOR is set to anything but "" (no-color.org)."""
    return tty and not os.environ.get("NO_COLOR")


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or Phase.PENDING)


def over(phase: str | None) -> bool:
    """The request is finished: Succeeded, Failed or Aborted."""
    try:
        return Phase(phase or Phase.PENDING).terminal
    except ValueError:  # a phase this version does not know is not an end
        return False


def done(state: str | None) -> bool:
    try:
        return StepState(state or StepState.PENDING).finished
    except ValueError:
        return False


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_seconds(seconds: float) -> str:
    """A step's duration: `0.17s`, `12.3s`, `2m05s`, `1h02m`."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_age(seconds: float) -> str:
    """How long ago, the way kubectl shows an AGE: `5s`, `3m`, `2h`, `4d`."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"


def age(obj: dict[str, Any], now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return format_age((now - created).total_seconds()) if created else "?"


def took(step: dict[str, Any], now: datetime) -> str:
    """From startedAt to finishedAt; for a step still running, the time elapsed so far."""
    started = parse_time(step.get("startedAt"))
    if started is None:
        return ""
    finished = parse_time(step.get("finishedAt"))
    if finished is None:
        if step.get("state") != StepState.RUNNING:
            return ""
        finished = now
    return format_seconds((finished - started).total_seconds())


def started(step: dict[str, Any], now: datetime) -> str:
    moment = parse_time(step.get("startedAt"))
    return "" if moment is None else f"{format_age((now - moment).total_seconds())} ago"


def ledger(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The twelve steps in runbook order; a step the status does not list yet is Pending."""
    by_name = {s.get("name"): s for s in (obj.get("status") or {}).get("steps") or []}
    return [by_name.get(name) or {"name": name, "state": "Pending"} for name in STEPS]


def progress(obj: dict[str, Any]) -> int:
    return sum(1 for s in ledger(obj) if done(s.get("state")))


def paint(text: str, word: str, color: bool) -> str:
    code = _COLORS.get(word)
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def truncate(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    if width <= 1:
        return text[: max(width, 0)]
    return text[: width - 1] + "…"


def header_line(obj: dict[str, Any], now: datetime, color: bool) -> str:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = phase_of(obj)
    parts = [
        f"rollbackrequest/{meta.get('name', '?')}",
        f"phase {paint(phase, phase, color)}",
        f"trigger {spec.get('trigger', '?')}",
        f"age {age(obj, now)}",
    ]
    if spec.get("dryRun"):
        parts.append("dry run")
    if status.get("requestedBy"):
        parts.append(f"requested by {status['requestedBy']}")
    if phase == Phase.QUEUED and status.get("queuedBehind"):
        parts.append(f"behind {status['queuedBehind']}")
    return "  ".join(parts)


def progress_line(obj: dict[str, Any]) -> str:
    count = progress(obj)
    return f"[{'#' * count}{'.' * (len(STEPS) - count)}] {count}/{len(STEPS)} steps done"


def column_header(width: int | None) -> str:
    head = "".join(title.ljust(size) for title, size in COLUMNS) + "MESSAGE"
    return truncate(head, width)


def step_row(step: dict[str, Any], now: datetime, color: bool, width: int | None) -> str:
    state = str(step.get("state") or "Pending")
    cells = [str(step.get("name", "")), state, started(step, now), took(step, now)]
    fixed = sum(size for _, size in COLUMNS)
    room = None if width is None else max(width - fixed, 0)
    message = truncate(" ".join(str(step.get("message") or "").split()), room)
    out = ""
    for index, ((_, size), cell) in enumerate(zip(COLUMNS, cells, strict=True)):
        padded = cell.ljust(size - 1) + " " if len(cell) < size else cell + " "
        out += paint(padded, state, color) if index == 1 else padded
    return (out + message).rstrip()


def render_status(
    obj: dict[str, Any], now: datetime, *, tty: bool, width: int | None, color: bool = False
) -> list[str]:
    """The whole view of `kubectl rollback status`: header, progress bar (TTY), the ledger."""
    lines = [header_line(obj, now, color)]
    if tty:
        lines.append(progress_line(obj))
    lines.append(column_header(width))
    lines.extend(step_row(step, now, color, width) for step in ledger(obj))
    return lines


def outcome(obj: dict[str, Any]) -> str:
    message = (obj.get("status") or {}).get("message") or ""
    name = (obj.get("metadata") or {}).get("name", "?")
    return f"{name}: {phase_of(obj)}" + (f": {message}" if message else "")


def exit_code(phase: str | None) -> int:
    """0 Succeeded; 1 Failed or Aborted; 3 not over yet."""
    if phase == Phase.SUCCEEDED:
        return EXIT_OK
    return EXIT_FAILED if over(phase) else EXIT_RUNNING


class ChangeFollower:
    """For `status -w` without a TTY: the first view whole, then only the lines that changed.

    A step's row is printed again when its state, message or end changes (not every second
    for the elapsed time); the header when the phase or current step changes.
    """

    def __init__(self, width: int | None) -> None:
        self.width = width
        self.header_key: tuple[Any, ...] | None = None
        self.rows: dict[str, tuple[Any, ...]] = {}

    def lines(self, obj: dict[str, Any], now: datetime) -> list[str]:
        out: list[str] = []
        status = obj.get("status") or {}
        header_key = (status.get("phase"), status.get("step"), status.get("queuedBehind"))
        first = self.header_key is None
        if header_key != self.header_key:
            self.header_key = header_key
            out.append(header_line(obj, now, color=False))
        if first:
            out.append(column_header(self.width))
        for step in ledger(obj):
            key = (step.get("state"), step.get("message"), step.get("finishedAt"))
            if self.rows.get(step["name"]) != key:
                self.rows[step["name"]] = key
                out.append(step_row(step, now, False, self.width))
        return out


def plan_text(obj: dict[str, Any], images: dict[str, dict[str, str]] | None = None) -> str:
    """What a request would do, from its spec as the API server returned it (defaults applied).

    `images`, when known, maps each Deployment to its current container -> image.
    """
    images = images or {}
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    name, namespace = meta.get("name", "?"), meta.get("namespace", "?")
    traffic = spec.get("traffic") or {}
    backend = traffic.get("maintenanceBackend") or {}
    tag = spec.get("targetTag") or DEFAULT_TARGET_TAG
    workloads = spec.get("workloads") or []
    deployments = [w.get("deployment", "?") for w in workloads]
    lines = [
        f"rollbackrequest/{name} in namespace {namespace} (server dry run)",
        f"  trigger {spec.get('trigger', '?')}: {spec.get('reason', '')}",
        "",
        f"Maintenance page: Ingresses switch to {backend.get('service')}:{backend.get('port')}",
    ]
    lines += [f"  Ingress {ingress}" for ingress in traffic.get("ingresses") or []]
    lines += [
        f"  HTTPRoute {route.get('name')}"
        + (f" (rules {', '.join(route['rules'])})" if route.get("rules") else " (every rule)")
        for route in traffic.get("httpRoutes") or []
    ]
    hpas = (spec.get("autoscaling") or {}).get("hpas")
    lines.append("Autoscaling: HPAs frozen (selectPolicy Disabled, both ways)")
    if hpas is None:
        lines.append(f"  every HPA scaling {', '.join(deployments)} (found by Preflight)")
    else:
        lines += [f"  HPA {hpa}" for hpa in hpas]
    lines.append(
        f"Workloads: containers revert to tag {tag} "
        f"(rollouts within {spec.get('rolloutTimeout', '10m')})"
    )
    for workload in workloads:
        deployment = workload.get("deployment", "?")
        current = images.get(deployment) or {}
        containers = workload.get("containers")
        if containers is None and not current:
            lines.append(f"  Deployment {deployment}: every container -> :{tag}")
            continue
        for container in containers if containers is not None else list(current):
            image = current.get(container)
            target = f"{repository(image)}:{tag}" if image else f":{tag}"
            was = f"{image} -> " if image else ""
            lines.append(f"  Deployment {deployment}, container {container}: {was}{target}")
    lines.append(
        "Then Verify, ResumeAutoscaling and DisableMaintenance put back what was saved; "
        "PurgeCDN, MigrateDatabaseDown, RestoreDatabase and Monitor run only when configured."
    )
    if spec.get("dryRun"):
        lines.append("spec.dryRun is true: once created, the operator only plans these changes.")
    lines += ["", "Dry run: the API server accepted the request; nothing was created."]
    return "\n".join(lines)


def canonical_step(text: str) -> str:
    """The step name as the runbook spells it (any case), or a PluginError naming the twelve."""
    for step in STEPS:
        if step.lower() == text.lower():
            return step
    raise PluginError(f'unknown step "{text}": use one of {", ".join(STEPS)}')


def awaited(obj: dict[str, Any], step: str) -> tuple[str, str]:
    """What `step` waits to have approved, (digest, subject), from the ledger; a PluginError
    when the request is not waiting for that step's approval (an approval counts only then)."""
    status = obj.get("status") or {}
    name = (obj.get("metadata") or {}).get("name", "?")
    if status.get("phase") != Phase.AWAITING_APPROVAL or status.get("step") != step:
        raise PluginError(
            f"rollbackrequest/{name} is not waiting for an approval of {step} (phase "
            f"{status.get('phase') or 'Pending'}, step {status.get('step') or '-'}): an approval "
            "counts only while its step waits for it"
        )
    record: dict[str, Any] = next(
        (s for s in status.get("steps") or [] if s.get("name") == step), {}
    )
    if not record.get("approvalDigest"):
        raise PluginError(f"{step} of rollbackrequest/{name} names nothing to approve yet")
    return str(record["approvalDigest"]), str(record.get("approvalSubject") or "")


def approvals(obj: dict[str, Any]) -> str:
    """Who approved what, from the ledger: `RestoreDatabase by dba-alice, Verify by qa-quinn`."""
    given = [
        f"{s['name']} by {s['approvedBy']}"
        for s in (obj.get("status") or {}).get("steps") or []
        if s.get("approvedBy")
    ]
    return ", ".join(given) or "-"


def list_lines(
    items: list[dict[str, Any]], now: datetime, *, all_namespaces: bool, color: bool
) -> list[str]:
    """The table of `kubectl rollback list`, oldest first, columns padded as kubectl pads."""
    head = ["NAME", "PHASE", "STEP", "AGE", "APPROVED"]
    rows = []
    ordered = sorted(
        items,
        key=lambda r: (
            r["metadata"].get("namespace", ""),
            r["metadata"].get("creationTimestamp", ""),
            r["metadata"]["name"],
        ),
    )
    for item in ordered:
        status = item.get("status") or {}
        row = [
            item["metadata"]["name"],
            phase_of(item),
            str(status.get("step") or "-"),
            age(item, now),
            approvals(item),
        ]
        rows.append(([item["metadata"].get("namespace", "")] if all_namespaces else []) + row)
    if all_namespaces:
        head.insert(0, "NAMESPACE")
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]
    phase_at = head.index("PHASE")
    lines = []
    for number, row in enumerate([head, *rows]):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if number:
            cells[phase_at] = paint(cells[phase_at], row[phase_at], color)
        lines.append("   ".join(cells).rstrip())
    return lines


def dump(obj: Any, output: str) -> str:
    """An object as `-o json` or `-o yaml` prints it (a YAML stream's documents start `---`)."""
    if output == "json":
        return json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return "---\n" + yaml.safe_dump(obj, sort_keys=False)
