"""After a Failed or Aborted run: `restore-traffic` puts back what it left changed, `retry`
starts it again.

A failed or aborted run leaves the maintenance page on and the HPAs frozen, on purpose (see
rollback_operator.takeover). `restore-traffic` puts back, from the request's `status.saved`,
only what is still the operator's change (a backend or an HTTPRoute rule still on the
maintenance page, an HPA still frozen), exactly as DisableMaintenance and ResumeAutoscaling
would, and records what it did on the request (an annotation and an Event). `retry` creates a
new request from the failed one's spec; the operator's Preflight then takes over the failed
one's record of the originals.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from kubectl_rollback import EXIT_OK, FIELD_MANAGER, PluginError
from kubectl_rollback.api import annotate, connect, fetch, list_requests, whoami
from kubectl_rollback.render import over, phase_of
from rollback_operator import GROUP, VERSION
from rollback_operator.autoscaling import is_frozen, resume_patch
from rollback_operator.kube import JSON_PATCH, ApiError, Kube, hpa_path, requests_path
from rollback_operator.model import (
    FINISHED_LABEL,
    REQUESTED_BY_ANNOTATION,
    RETRY_OF_ANNOTATION,
    TRAFFIC_RESTORED_ANNOTATION,
    Phase,
    RollbackSpec,
)
from rollback_operator.routes import RuleLocation, patch_rules, to_original
from rollback_operator.status import Status
from rollback_operator.takeover import leftovers
from rollback_operator.traffic import Location, patch_backends, serves_maintenance, still_ours

_KIND = {"ingresses": "Ingress", "httpRoutes": "HTTPRoute", "hpas": "HPA"}
CONFLICT_ATTEMPTS = 5  # reads and plans again when a saved object changed under the write


@dataclass
class TrafficPlan:
    """What `restore-traffic` changes, and what it leaves and why."""

    ingresses: dict[str, tuple[dict[str, Any], list[tuple[Location, dict[str, Any]]]]] = field(
        default_factory=dict
    )  # name -> (the Ingress as read, its changes)
    hpas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> JSON patch
    left: list[str] = field(default_factory=list)
    routes: dict[str, tuple[dict[str, Any], list[tuple[RuleLocation, list[Any]]]]] = field(
        default_factory=dict
    )  # name -> (the HTTPRoute as read, its rules' changes)

    def summary(self) -> str:
        parts = [f"Ingress {n} ({len(c)} backend(s))" for n, (_, c) in self.ingresses.items()]
        parts += [f"HTTPRoute {n} ({len(c)} rule(s))" for n, (_, c) in self.routes.items()]
        parts += [f"HPA {name} (behavior)" for name in self.hpas]
        return ", ".join(parts)

    def settled(self) -> set[str]:
        """What a fresh plan says of the objects this one put back (once put back, they read
        as already back, or as HPAs no longer frozen)."""
        lines = {f"Ingress {name}: already back" for name in self.ingresses}
        lines |= {f"HTTPRoute {name}: already back" for name in self.routes}
        return lines | {f"HPA {name}: no longer frozen, left as is" for name in self.hpas}


def refusal(obj: dict[str, Any], requests: list[dict[str, Any]], verb: str) -> str | None:
    """Why `verb` does not apply to this request now, or None when it does."""
    name, phase = obj["metadata"]["name"], phase_of(obj)
    if phase not in (Phase.FAILED, Phase.ABORTED):
        state = "still running" if not over(phase) else phase
        return f"rollbackrequest/{name} is {state}: {verb} is for a Failed or Aborted run"
    if verb == "restore-traffic" and (obj.get("spec") or {}).get("dryRun"):
        return f"rollbackrequest/{name} was a dry run: it changed nothing"
    mine = touched(obj)
    for other in requests:
        if other["metadata"]["name"] == name or over(phase_of(other)):
            continue
        if not (other.get("spec") or {}).get("dryRun") and touched(other) & mine:
            return (
                f"rollbackrequest/{other['metadata']['name']} ({phase_of(other)}) is working on "
                f"the same objects: let it finish, or abort it, first"
            )
    return None


def touched(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """The Ingresses, HTTPRoutes and HPAs a request names, or found (status.targets), or saved."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    traffic = spec.get("traffic") or {}
    out = {("ingresses", n) for n in traffic.get("ingresses") or []}
    out |= {("httpRoutes", r["name"]) for r in traffic.get("httpRoutes") or []}
    out |= {("hpas", n) for n in (spec.get("autoscaling") or {}).get("hpas") or []}
    for section in ("ingresses", "httpRoutes", "hpas"):
        out |= {(section, n) for n in (status.get("targets") or {}).get(section) or []}
        out |= {(section, n) for n in (status.get("saved") or {}).get(section) or {}}
    return out


def plan_traffic(
    obj: dict[str, Any],
    requests: list[dict[str, Any]],
    ingresses: dict[str, dict[str, Any] | None],
    hpas: dict[str, dict[str, Any] | None],
    routes: dict[str, dict[str, Any] | None] | None = None,
) -> TrafficPlan:
    """From the request, every request of its namespace and the objects as read now (None: gone).

    Left alone: what the run itself restored, what a later request's record now covers (its
    restore-traffic applies), what is gone, and what someone has changed since.
    """
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    saved = status.get("saved") or {}
    maintenance = RollbackSpec.parse(obj["spec"]).maintenance_backend.as_ingress_backend()
    back = dict(zip(("ingresses", "hpas"), Status.from_dict(status).restored(), strict=True))
    back["httpRoutes"] = back["ingresses"]
    latest = leftovers(requests, me="")
    objects = {"ingresses": ingresses, "httpRoutes": routes or {}, "hpas": hpas}
    plan = TrafficPlan()
    for section in ("ingresses", "httpRoutes", "hpas"):
        for target, record in (saved.get(section) or {}).items():
            what = f"{_KIND[section]} {target}"
            newer = latest.get(section, {}).get(target)
            current = objects[section].get(target)
            if back[section]:
                plan.left.append(f"{what}: already put back by the run")
            elif newer is not None and newer.request != name:
                plan.left.append(
                    f"{what}: rollbackrequest/{newer.request} took over its record; "
                    f"restore-traffic that one"
                )
            elif current is None:
                plan.left.append(f"{what}: not found; recreate it from status.saved.{section}")
            elif section == "ingresses":
                changes, theirs = still_ours(current, record["backends"], maintenance)
                plan.left += [f"{what} {text}" for text in theirs]
                if changes:
                    plan.ingresses[target] = (current, changes)
                elif not theirs:
                    plan.left.append(f"{what}: already back")
            elif section == "httpRoutes":
                rules = to_original(current, record)
                plan.left += [f"{what} {text}" for text in rules.theirs]
                plan.left += [f"{what} {moved} moved, left as is" for moved in rules.moved]
                if rules.changes:
                    plan.routes[target] = (current, rules.changes)
                elif not rules.theirs and not rules.moved:
                    plan.left.append(f"{what}: already back")
            else:
                patch = resume_patch(current, record)
                if patch is None:
                    plan.left.append(f"{what}: no longer frozen, left as is")
                else:
                    plan.hpas[target] = patch
    return plan


def _finished_run(
    args: argparse.Namespace, verb: str
) -> tuple[Kube, str, dict[str, Any], list[dict[str, Any]]]:
    """The request NAME and every request of its namespace, once `verb` applies to it."""
    kube, namespace = connect(args)
    obj = fetch(kube, namespace, args.name)
    requests = list_requests(kube, namespace).get("items") or []
    why = refusal(obj, requests, verb)
    if why:
        raise PluginError(why)
    return kube, namespace, obj, requests


def _read_plan(
    kube: Kube, namespace: str, obj: dict[str, Any], requests: list[dict[str, Any]]
) -> TrafficPlan:
    """What `restore-traffic` would change now, from a fresh read of every saved object."""
    saved = (obj.get("status") or {}).get("saved") or {}
    ingresses = {n: kube.ingress(namespace, n) for n in saved.get("ingresses") or {}}
    hpas = {n: kube.hpa(namespace, n) for n in saved.get("hpas") or {}}
    routes = {n: kube.http_route(namespace, n) for n in saved.get("httpRoutes") or {}}
    return plan_traffic(obj, requests, ingresses, hpas, routes)


def put_back(
    kube: Kube, namespace: str, obj: dict[str, Any], requests: list[dict[str, Any]]
) -> tuple[TrafficPlan, list[str]]:
    """Puts back what the plan finds: what was put back, and what was left and why.

    Ingress and HTTPRoute writes are guarded by the version read, so a status write by a
    controller between the read and the write is a 409: then everything is read and planned
    again (what was already put back now reads as back, and is not reported twice), at most
    CONFLICT_ATTEMPTS times. An HPA's patch tests the freeze instead (no version to race).
    """
    done = TrafficPlan()
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        plan = _read_plan(kube, namespace, obj, requests)
        try:
            for target, (ingress, changes) in plan.ingresses.items():
                patch_backends(kube, namespace, target, ingress, changes)
                done.ingresses[target] = (ingress, changes)
            for target, (route, rules) in plan.routes.items():
                patch_rules(kube, namespace, target, route, rules)
                done.routes[target] = (route, rules)
            for target, operations in plan.hpas.items():
                try:
                    kube.patch(hpa_path(namespace, target), operations, JSON_PATCH)
                except ApiError as error:
                    if error.status not in (404, 422):  # gone, or no longer frozen
                        raise
                    plan.left.append(f"HPA {target}: changed since it was read, left as is")
                    continue
                done.hpas[target] = operations
        except ApiError as error:
            if error.status != 409 or attempt == CONFLICT_ATTEMPTS:
                raise
            continue
        break
    settled = done.settled()
    return done, [line for line in plan.left if line not in settled]


def cmd_restore_traffic(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace, obj, requests = _finished_run(args, "restore-traffic")
    if args.dry_run:
        plan = _read_plan(kube, namespace, obj, requests)
        done, left = plan.summary(), plan.left
        print(f"rollbackrequest/{args.name}: would put back {done or 'nothing'}", file=out)
    else:
        user = whoami(kube)
        put, left = put_back(kube, namespace, obj, requests)
        done = put.summary()
        if done:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = f"{stamp} by {user}: {done}"
            annotate(kube, namespace, args.name, {TRAFFIC_RESTORED_ANNOTATION: record})
            kube.post_event(
                obj["metadata"],
                "Normal",
                "TrafficRestored",
                f"put back by {user}: {done}",
            )
            print(f"rollbackrequest/{args.name}: put back {done}", file=out)
            print(f"  recorded in annotation {TRAFFIC_RESTORED_ANNOTATION} and an Event", file=out)
        else:
            print(f"rollbackrequest/{args.name}: nothing to put back", file=out)
    for line in left:
        print(f"  {line}", file=out)
    return EXIT_OK


def retry_name(name: str, existing: set[str]) -> str:
    """`NAME-retry-1`, or the next number free; a retry of a retry counts on from its own."""
    base, _, number = name.rpartition("-retry-")
    if not (base and number.isdigit()):
        base = name
    count = 1
    while f"{base}-retry-{count}" in existing:
        count += 1
    return f"{base}-retry-{count}"


def retry_body(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A new request with the failed one's spec and labels, annotated with where it came from
    (no approvals, no abort: those were given to the old run)."""
    meta = obj["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RollbackRequest",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            # Without the finished label, which would hide the new request from the operator.
            "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k != FINISHED_LABEL},
            "annotations": {RETRY_OF_ANNOTATION: meta["name"]},
        },
        "spec": copy.deepcopy(obj["spec"]),
    }


def adopted(kube: Kube, obj: dict[str, Any], requests: list[dict[str, Any]], new: str) -> list[str]:
    """What the new request's Preflight will take over (as it decides it): each object still
    on the maintenance page or frozen, with the record of the latest request that left it so."""
    spec = RollbackSpec.parse(obj["spec"])
    maintenance = spec.maintenance_backend.as_ingress_backend()
    found = leftovers(requests, new)
    hpas = spec.hpas or tuple((obj.get("status") or {}).get("targets", {}).get("hpas") or ())
    out = []
    for name in spec.ingresses:
        ingress = kube.ingress(obj["metadata"]["namespace"], name)
        if ingress and serves_maintenance(ingress, maintenance) and name in found["ingresses"]:
            out.append(f"Ingress {name} (from {found['ingresses'][name].request})")
    for name in hpas:
        hpa = kube.hpa(obj["metadata"]["namespace"], name)
        if hpa and is_frozen(hpa) and name in found["hpas"]:
            out.append(f"HPA {name} (from {found['hpas'][name].request})")
    return out


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    kube, namespace, obj, requests = _finished_run(args, "retry")
    name = args.new_name or retry_name(args.name, {r["metadata"]["name"] for r in requests})
    takes = adopted(kube, obj, requests, name)
    query = {"fieldValidation": "Strict", "fieldManager": FIELD_MANAGER}
    if args.dry_run:
        query["dryRun"] = "All"
    body = retry_body(obj, name)
    body["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] = whoami(kube)  # see cmd_create
    kube.request("POST", requests_path(namespace), body, query=query)
    verb = "would be created (server dry run)" if args.dry_run else "created"
    print(f"rollbackrequest/{name} {verb}: a retry of {args.name}, same spec", file=out)
    if takes:
        print(f"  it takes over the record of the originals: {', '.join(takes)}", file=out)
    else:
        print("  nothing is left changed: it records the originals afresh", file=out)
    if not args.dry_run:
        print(f"  follow it with: kubectl rollback status {name} -n {namespace} -w", file=out)
    return EXIT_OK
