"""`kubectl rollback`: create, follow, approve, abort and read RollbackRequests.

A kubectl plugin (the `kubectl-rollback` executable that `pip install` puts on PATH). It talks
to the API server as the kubeconfig's user, through the same JSON transport as the operator;
it never needs the operator's permissions. See docs/kubectl-rollback.md.

Exit codes: 0 done (for `status`, the request Succeeded); 1 the request Failed or was Aborted,
or `report` found no report yet; 2 a usage error, a request not found or any error from the API
server; 3 `status` without `-w` on a request that is still running; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from kubernetes import client, config

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.kube import MERGE_PATCH, ApiError, Kube
from rollback_operator.model import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    STEP_ORDER,
)

STEPS: tuple[str, ...] = tuple(str(step) for step in STEP_ORDER)
TERMINAL = ("Succeeded", "Failed", "Aborted")
DONE_STATES = ("Succeeded", "Skipped")

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

FIELD_MANAGER = "kubectl-rollback"
DEFAULT_TARGET_TAG = "stable-last-known"

COLUMNS = (("STEP", 20), ("STATE", 10), ("STARTED", 9), ("TOOK", 9))
_COLORS = {
    "Succeeded": "32",
    "Failed": "31",
    "Aborted": "35",
    "Running": "33",
    "Queued": "36",
    "Skipped": "2",
    "Pending": "2",
}
POLL_SECONDS = 1.0


class PluginError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# --- pure parts: times, the ledger table, the dry-run plan, exit codes


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


def took(step: dict[str, Any], now: datetime) -> str:
    """From startedAt to finishedAt; for a step still running, the time elapsed so far."""
    started = parse_time(step.get("startedAt"))
    if started is None:
        return ""
    finished = parse_time(step.get("finishedAt"))
    if finished is None:
        if step.get("state") != "Running":
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
    return sum(1 for s in ledger(obj) if s.get("state") in DONE_STATES)


def paint(text: str, word: str, tty: bool) -> str:
    color = _COLORS.get(word)
    return f"\x1b[{color}m{text}\x1b[0m" if tty and color else text


def truncate(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    if width <= 1:
        return text[: max(width, 0)]
    return text[: width - 1] + "…"


def header_line(obj: dict[str, Any], now: datetime, tty: bool) -> str:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    created = parse_time(meta.get("creationTimestamp"))
    age = format_age((now - created).total_seconds()) if created else "?"
    parts = [
        f"rollbackrequest/{meta.get('name', '?')}",
        f"phase {paint(phase, phase, tty)}",
        f"trigger {spec.get('trigger', '?')}",
        f"age {age}",
    ]
    if spec.get("dryRun"):
        parts.append("dry run")
    if phase == "Queued" and status.get("queuedBehind"):
        parts.append(f"behind {status['queuedBehind']}")
    return "  ".join(parts)


def progress_line(obj: dict[str, Any]) -> str:
    done = progress(obj)
    return f"[{'#' * done}{'.' * (len(STEPS) - done)}] {done}/{len(STEPS)} steps done"


def column_header(width: int | None) -> str:
    head = "".join(title.ljust(size) for title, size in COLUMNS) + "MESSAGE"
    return truncate(head, width)


def step_row(step: dict[str, Any], now: datetime, tty: bool, width: int | None) -> str:
    state = str(step.get("state") or "Pending")
    cells = [str(step.get("name", "")), state, started(step, now), took(step, now)]
    fixed = sum(size for _, size in COLUMNS)
    room = None if width is None else max(width - fixed, 0)
    message = truncate(" ".join(str(step.get("message") or "").split()), room)
    out = ""
    for index, ((_, size), cell) in enumerate(zip(COLUMNS, cells, strict=True)):
        padded = cell.ljust(size - 1) + " " if len(cell) < size else cell + " "
        out += paint(padded, state, tty) if index == 1 else padded
    return (out + message).rstrip()


def render_status(obj: dict[str, Any], now: datetime, *, tty: bool, width: int | None) -> list[str]:
    """The whole view of `kubectl rollback status`: header, progress bar (TTY), the ledger."""
    lines = [header_line(obj, now, tty)]
    if tty:
        lines.append(progress_line(obj))
    lines.append(column_header(width))
    lines.extend(step_row(step, now, tty, width) for step in ledger(obj))
    return lines


def outcome(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    name = (obj.get("metadata") or {}).get("name", "?")
    message = status.get("message") or ""
    return f"{name}: {status.get('phase') or 'Pending'}" + (f": {message}" if message else "")


def exit_code(phase: str | None, *, watching: bool = False) -> int:
    """0 Succeeded; 1 Failed or Aborted; 3 still running (only reachable without -w)."""
    if phase == "Succeeded":
        return EXIT_OK
    if phase in ("Failed", "Aborted"):
        return EXIT_FAILED
    return EXIT_ERROR if watching else EXIT_RUNNING


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
            out.append(header_line(obj, now, tty=False))
        if first:
            out.append(column_header(self.width))
        for step in ledger(obj):
            key = (step.get("state"), step.get("message"), step.get("finishedAt"))
            if self.rows.get(step["name"]) != key:
                self.rows[step["name"]] = key
                out.append(step_row(step, now, False, self.width))
        return out


def repository(image: str) -> str:
    """`registry:5000/team/app:1.2@sha256:...` -> `registry:5000/team/app`."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


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


# --- the command line


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    flags = common.add_argument_group("connection")
    flags.add_argument("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG)")
    flags.add_argument("--context", help="the kubeconfig context to use (default: current)")
    flags.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="act as this user, as kubectl --as does (needs the impersonate permission)",
    )
    flags.add_argument(
        "--as-group", metavar="GROUP", help="with --as: the group to act as (one group)"
    )
    flags.add_argument(
        "-n",
        "--namespace",
        help="the request's namespace (default: the context's namespace, else default)",
    )
    return common


_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "create": (
        "Create the RollbackRequest(s) of a YAML file, or print their plan with --dry-run.",
        "kubectl rollback create -f rollback.yaml --dry-run",
    ),
    "status": (
        "Show a request's ledger: phase, trigger, age and every step; -w follows it to its end.",
        "kubectl rollback status golive-2026-01-10 -w",
    ),
    "approve": (
        "Approve a step of a request as the current user (annotations approve, approved-by).",
        "kubectl rollback approve golive-2026-01-10 Verify",
    ),
    "abort": (
        "Stop a request at the next step boundary; nothing is undone.",
        "kubectl rollback abort golive-2026-01-10",
    ),
    "report": (
        "Print a finished request's post-mortem from the ConfigMap named in status.report.",
        "kubectl rollback report golive-2026-01-10",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl rollback",
        description="Create, follow, approve, abort and read RollbackRequests.",
        epilog="example:\n  kubectl rollback status golive-2026-01-10 -n lawyershub -w",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    subs: dict[str, argparse.ArgumentParser] = {}
    for name, (description, example) in _SUBCOMMANDS.items():
        subs[name] = commands.add_parser(
            name,
            parents=[common],
            help=description,
            description=description,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    subs["create"].add_argument(
        "-f", "--filename", required=True, help="YAML file of RollbackRequests ('-': stdin)"
    )
    subs["create"].add_argument(
        "--dry-run",
        action="store_true",
        help="server-side dry run: print the plan, create nothing",
    )
    subs["status"].add_argument("name", help="the RollbackRequest")
    subs["status"].add_argument(
        "-w", "--watch", action="store_true", help="follow the request until it is over"
    )
    subs["approve"].add_argument("name", help="the RollbackRequest")
    subs["approve"].add_argument("step", help=f"the step to approve: {', '.join(STEPS)}")
    subs["abort"].add_argument("name", help="the RollbackRequest")
    subs["report"].add_argument("name", help="the RollbackRequest")
    return parser


# --- talking to the API server


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    # The kubernetes client's configuration loaders carry no annotations.
    contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    chosen = (
        next((c for c in contexts or [] if c.get("name") == context), None) if context else active
    )
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def connect(args: argparse.Namespace) -> tuple[Kube, str]:
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context, client_configuration=configuration
        )
        namespace = args.namespace or context_namespace(args.kubeconfig, args.context)
    except (config.ConfigException, OSError) as error:
        raise PluginError(f"kubeconfig: {error}") from None
    api = client.ApiClient(configuration)
    if args.as_group and not args.as_user:
        raise PluginError("--as-group needs --as")
    if args.as_user:  # the API server then sees that user: RBAC and admission judge it
        api.set_default_header("Impersonate-User", args.as_user)  # type: ignore[no-untyped-call]
        if args.as_group:
            api.set_default_header("Impersonate-Group", args.as_group)  # type: ignore[no-untyped-call]
    return Kube(api), namespace


def request_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def fetch(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.request("GET", request_path(namespace, name))
    return result


def annotate(kube: Kube, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = kube.request(
        "PATCH",
        request_path(namespace, name),
        {"metadata": {"annotations": annotations}},
        MERGE_PATCH,
        query={"fieldManager": FIELD_MANAGER},
    )
    return result


def current_images(kube: Kube, namespace: str, obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each listed Deployment's container -> image, for the plan; what is unreadable is left out."""
    out: dict[str, dict[str, str]] = {}
    for workload in (obj.get("spec") or {}).get("workloads") or []:
        name = workload.get("deployment")
        try:
            deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        except ApiError:
            continue
        containers = ((deployment or {}).get("spec") or {}).get("template", {}).get("spec", {})
        images = {c["name"]: c.get("image", "") for c in containers.get("containers") or []}
        if images:
            out[str(name)] = images
    return out


# --- the subcommands


def _terminal_width() -> int | None:
    if sys.stdout.isatty():
        return shutil.get_terminal_size((120, 24)).columns
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else None


def _now() -> datetime:
    return datetime.now(UTC)


def _load_documents(filename: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise PluginError(f"{filename}: {error}") from None
    if not docs:
        raise PluginError(f"{filename}: no RollbackRequest in the file")
    for index, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or doc.get("kind") != "RollbackRequest":
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise PluginError(f"{filename}: document {index} is a {kind}, not a RollbackRequest")
        if str(doc.get("apiVersion", "")).split("/")[0] != GROUP:
            raise PluginError(
                f"{filename}: document {index} has apiVersion {doc.get('apiVersion')!r}: "
                f"use {GROUP}/{VERSION}"
            )
    return docs


def cmd_create(args: argparse.Namespace, out: TextIO) -> int:
    docs = _load_documents(args.filename)
    kube, default_namespace = connect(args)
    query = {"fieldValidation": "Strict", "fieldManager": FIELD_MANAGER}
    if args.dry_run:
        query["dryRun"] = "All"
    for doc in docs:
        namespace = (doc.get("metadata") or {}).get("namespace") or default_namespace
        if args.namespace and namespace != args.namespace:
            raise PluginError(
                f"the namespace of the file ({namespace}) does not match "
                f"--namespace {args.namespace}"
            )
        created: dict[str, Any] = kube.request("POST", request_path(namespace), doc, query=query)
        name = created["metadata"]["name"]
        if args.dry_run:
            print(plan_text(created, current_images(kube, namespace, created)), file=out)
        else:
            print(f"rollbackrequest/{name} created", file=out)
            print(f"  follow it with: kubectl rollback status {name} -n {namespace} -w", file=out)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    tty = out.isatty()
    obj = fetch(kube, namespace, args.name)
    if not args.watch:
        for line in render_status(obj, _now(), tty=tty, width=_terminal_width()):
            print(line, file=out)
        return exit_code((obj.get("status") or {}).get("phase"))
    follower = ChangeFollower(_terminal_width())
    drawn = 0
    while True:
        phase = (obj.get("status") or {}).get("phase")
        if tty:
            lines = render_status(obj, _now(), tty=True, width=_terminal_width())
            if drawn:
                out.write(f"\x1b[{drawn}F\x1b[J")
            out.write("".join(f"{line}\n" for line in lines))
            drawn = len(lines)
        else:
            out.write("".join(f"{line}\n" for line in follower.lines(obj, _now())))
        out.flush()
        if phase in TERMINAL:
            print(paint(outcome(obj), str(phase), tty), file=out)
            return exit_code(phase)
        time.sleep(POLL_SECONDS)
        obj = fetch(kube, namespace, args.name)


def cmd_approve(args: argparse.Namespace, out: TextIO) -> int:
    step = canonical_step(args.step)
    kube, namespace = connect(args)
    review = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    username = ((review or {}).get("status") or {}).get("userInfo", {}).get("username")
    if not username:
        raise PluginError("the API server did not say who you are (SelfSubjectReview)")
    annotate(
        kube, namespace, args.name, {APPROVE_ANNOTATION: step, APPROVED_BY_ANNOTATION: username}
    )
    print(f"rollbackrequest/{args.name}: step {step} approved by {username}", file=out)
    return EXIT_OK


def cmd_abort(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = annotate(kube, namespace, args.name, {ABORT_ANNOTATION: "true"})
    phase = (obj.get("status") or {}).get("phase")
    print(f"rollbackrequest/{args.name}: abort requested", file=out)
    if phase in TERMINAL:
        print(f"  it is already {phase}: abort does nothing.", file=out)
        return EXIT_OK
    print(
        "  The run stops at the next step boundary (a change in progress completes first).\n"
        "  Abort undoes nothing: the maintenance page stays on and frozen HPAs stay frozen;\n"
        f"  the request's message will say what is left. Follow it with:\n"
        f"  kubectl rollback status {args.name} -n {namespace} -w",
        file=out,
    )
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = fetch(kube, namespace, args.name)
    report = (obj.get("status") or {}).get("report") or {}
    if not report.get("configMap") or not report.get("key"):
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        raise PluginError(f"no report yet for rollbackrequest/{args.name} ({phase})", EXIT_FAILED)
    configmap: dict[str, Any] = kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/{report['configMap']}"
    )
    text = (configmap.get("data") or {}).get(report["key"])
    if text is None:
        raise PluginError(f"ConfigMap {report['configMap']} has no key {report['key']}")
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


_COMMANDS = {
    "create": cmd_create,
    "status": cmd_status,
    "approve": cmd_approve,
    "abort": cmd_abort,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    out = out or sys.stdout
    try:
        return _COMMANDS[args.command](args, out)
    except PluginError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.code
    except ApiError as error:
        detail = f"Error from server ({error.reason})" if error.status else "error"
        print(f"{detail}: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
