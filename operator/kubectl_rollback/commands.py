"""The subcommands that create, follow, approve, abort, list and read requests."""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from kubectl_rollback import EXIT_FAILED, EXIT_OK, EXIT_RUNNING, FIELD_MANAGER, PluginError
from kubectl_rollback.api import (
    RequestWatch,
    annotate,
    connect,
    current_images,
    fetch,
    list_requests,
    whoami,
)
from kubectl_rollback.render import (
    ChangeFollower,
    awaited,
    canonical_step,
    colors_allowed,
    dump,
    exit_code,
    format_seconds,
    list_lines,
    outcome,
    over,
    paint,
    phase_of,
    plan_text,
    render_status,
)
from rollback_operator import GROUP, VERSION
from rollback_operator.kube import requests_path
from rollback_operator.model import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
)

# How often a terminal's view is redrawn while nothing arrives: the elapsed time counts up.
REDRAW_SECONDS = 1.0


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
    # Who creates the request, as the API server knows them: its admission policy records it
    # itself where MutatingAdmissionPolicy is served, and requires it to be this elsewhere.
    requester = whoami(kube)
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            REQUESTED_BY_ANNOTATION: requester,
        }
        namespace = (doc.get("metadata") or {}).get("namespace") or default_namespace
        if args.namespace and namespace != args.namespace:
            raise PluginError(
                f"the namespace of the file ({namespace}) does not match "
                f"--namespace {args.namespace}"
            )
        created: dict[str, Any] = kube.request("POST", requests_path(namespace), doc, query=query)
        name = created["metadata"]["name"]
        if args.dry_run:
            print(plan_text(created, current_images(kube, namespace, created)), file=out)
        else:
            print(f"rollbackrequest/{name} created", file=out)
            print(f"  follow it with: kubectl rollback status {name} -n {namespace} -w", file=out)
    return EXIT_OK


class _View:
    """Draws one version of the request: `-o` documents, a redrawn terminal, or the changes."""

    def __init__(self, out: TextIO, output: str | None) -> None:
        self.out, self.output = out, output
        self.tty = out.isatty() and not output
        self.color = colors_allowed(self.tty)
        self.follower = ChangeFollower(_terminal_width())
        self.drawn = 0

    def draw(self, obj: dict[str, Any], *, changed: bool) -> None:
        if self.output:
            if changed:
                self.out.write(dump(obj, self.output))
        elif self.tty:
            lines = render_status(obj, _now(), tty=True, width=_terminal_width(), color=self.color)
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.write("".join(f"{line}\n" for line in lines))
            self.drawn = len(lines)
        else:
            self.out.write("".join(f"{line}\n" for line in self.follower.lines(obj, _now())))
        self.out.flush()


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = fetch(kube, namespace, args.name)
    if not args.watch:
        if args.output:
            out.write(dump(obj, args.output))
        else:
            tty = out.isatty()
            color = colors_allowed(tty)
            for line in render_status(obj, _now(), tty=tty, width=_terminal_width(), color=color):
                print(line, file=out)
        return exit_code(phase_of(obj))
    view = _View(out, args.output)
    watch = (
        None
        if over(phase_of(obj))
        else RequestWatch(kube, namespace, args.name, obj["metadata"]["resourceVersion"])
    )
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    changed = True
    while True:
        view.draw(obj, changed=changed)
        if over(phase_of(obj)) or watch is None:
            if not args.output:
                print(paint(outcome(obj), phase_of(obj), view.color), file=out)
            return exit_code(phase_of(obj))
        wait = REDRAW_SECONDS if view.tty else 3600.0
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                waited = format_seconds(args.timeout)
                print(
                    f"timed out after {waited}: rollbackrequest/{args.name} is {phase_of(obj)}",
                    file=sys.stderr,
                )
                return EXIT_RUNNING
            wait = min(wait, left)
        try:
            item = watch.versions.get(timeout=wait)
        except queue.Empty:
            changed = False
            continue
        if isinstance(item, Exception):
            raise item
        obj, changed = item, True


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    listed = list_requests(kube, None if args.all_namespaces else namespace)
    if args.output:
        out.write(dump(listed, args.output))
        return EXIT_OK
    items = listed.get("items") or []
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
        print(f"No RollbackRequests found in {where}.", file=sys.stderr)
        return EXIT_OK
    color = colors_allowed(out.isatty())
    for line in list_lines(items, _now(), all_namespaces=args.all_namespaces, color=color):
        print(line, file=out)
    return EXIT_OK


def cmd_approve(args: argparse.Namespace, out: TextIO) -> int:
    step = canonical_step(args.step)
    kube, namespace = connect(args)
    username = whoami(kube)
    # The approval names what the step waits to have approved, as it stands now: if that
    # changes before the step acts, the approval is void.
    digest, subject = awaited(fetch(kube, namespace, args.name), step)
    print(f"rollbackrequest/{args.name}: approving {step}@{digest}: {subject}", file=out)
    annotate(
        kube,
        namespace,
        args.name,
        {APPROVE_ANNOTATION: f"{step}@{digest}", APPROVED_BY_ANNOTATION: username},
    )
    print(f"rollbackrequest/{args.name}: step {step} approved by {username}", file=out)
    return EXIT_OK


def cmd_abort(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = annotate(kube, namespace, args.name, {ABORT_ANNOTATION: "true"})
    phase = phase_of(obj)
    print(f"rollbackrequest/{args.name}: abort requested", file=out)
    if over(phase):
        print(f"  it is already {phase}: abort does nothing.", file=out)
        return EXIT_OK
    print(
        "  The run stops at the next step boundary (a change in progress completes first).\n"
        "  Abort undoes nothing: the maintenance page stays on and frozen HPAs stay frozen;\n"
        f"  the request's message will say what is left. Follow it with:\n"
        f"  kubectl rollback status {args.name} -n {namespace} -w\n"
        f"  and put traffic back with: kubectl rollback restore-traffic {args.name} -n {namespace}",
        file=out,
    )
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = fetch(kube, namespace, args.name)
    report = (obj.get("status") or {}).get("report") or {}
    if not report.get("configMap") or not report.get("key"):
        raise PluginError(
            f"no report yet for rollbackrequest/{args.name} ({phase_of(obj)})", EXIT_FAILED
        )
    configmap = kube.configmap(namespace, report["configMap"])
    if configmap is None:
        raise PluginError(f"ConfigMap {report['configMap']} of the report not found")
    text = (configmap.get("data") or {}).get(report["key"])
    if text is None:
        raise PluginError(f"ConfigMap {report['configMap']} has no key {report['key']}")
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK
