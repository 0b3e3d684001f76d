"""`resume-gitops`: once the revert is in Git, give Argo CD, Flux and KEDA back exactly the sync
settings the run saved before it suspended them (status.saved.gitops).

The run leaves them suspended on purpose: their source still held the bad release, which they
would put back. So resume-gitops first asks each one's status whether its source still renders
the bad release (an Argo CD Application lists the images it renders; a Flux Kustomization records
the source revision it last applied, which the source must have moved past) and refuses, naming
it, unless --force. Then it puts back only what is still the run's change: a setting someone
changed since is theirs, and is left as is.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any, TextIO

from kubectl_rollback import EXIT_OK, PluginError
from kubectl_rollback.api import annotate, connect, fetch, whoami
from kubectl_rollback.render import over, phase_of
from rollback_operator import GROUP
from rollback_operator.gitops import (
    JSON_PATCH,
    Manager,
    path,
    read,
    resume_patch,
    source_unchanged,
)
from rollback_operator.images import SelectedImages

GITOPS_RESUMED_ANNOTATION = f"{GROUP}/gitops-resumed"


def bad_images(status: dict[str, Any]) -> set[str]:
    """The images the run reverted from (status.saved.deployments): the bad release."""
    saved = (status.get("saved") or {}).get("deployments") or {}
    return {
        image for record in saved.values() for _, image in SelectedImages.saved(record).labelled()
    }


def cmd_resume_gitops(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace = connect(args)
    obj = fetch(kube, namespace, args.name)
    status = obj.get("status") or {}
    if not over(phase_of(obj)):
        raise PluginError(
            f"rollbackrequest/{args.name} is still running: resume-gitops is for a finished run"
        )
    saved: dict[str, dict[str, Any]] = (status.get("saved") or {}).get("gitops") or {}
    if not saved:
        print(f"rollbackrequest/{args.name}: the run suspended nothing", file=out)
        return EXIT_OK
    managers = [(Manager.from_dict(record), record) for _, record in sorted(saved.items())]
    if not args.force:
        bad = bad_images(status)
        stale = [
            f"{m.kind} {m.namespace}/{m.name}: {why}"
            for m, record in managers
            if (why := source_unchanged(kube, m, record, bad))
        ]
        if stale:
            raise PluginError(
                "not resumed, the source still holds the bad release: "
                + "; ".join(stale)
                + ". Revert the go-live commit in Git (and retag, if the images are pinned by "
                "tag), wait for the source to pick it up, then run resume-gitops again "
                "(--force resumes anyway)"
            )
    done, left = [], []
    for manager, record in managers:
        what = f"{manager.kind} {manager.namespace}/{manager.name}"
        current = read(kube, manager.kind, manager.namespace, manager.name)
        if current is None:
            left.append(f"{what}: not found")
            continue
        patch, effect = resume_patch(manager.kind, current, record)
        if patch is None:
            left.append(f"{what}: {effect}")
            continue
        if not args.dry_run:
            kube.patch(path(manager.kind, manager.namespace, manager.name), patch, JSON_PATCH)
        done.append(f"{what} ({effect})")
    summary = ", ".join(done)
    if args.dry_run:
        print(f"rollbackrequest/{args.name}: would resume {summary or 'nothing'}", file=out)
    elif done:
        user = whoami(kube)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        annotate(
            kube, namespace, args.name, {GITOPS_RESUMED_ANNOTATION: f"{stamp} by {user}: {summary}"}
        )
        kube.post_event(obj["metadata"], "Normal", "GitOpsResumed", f"resumed by {user}: {summary}")
        print(f"rollbackrequest/{args.name}: resumed {summary}", file=out)
        print(f"  recorded in annotation {GITOPS_RESUMED_ANNOTATION} and an Event", file=out)
    else:
        print(f"rollbackrequest/{args.name}: nothing to resume", file=out)
    for line in left:
        print(f"  {line}", file=out)
    return EXIT_OK
