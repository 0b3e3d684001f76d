"""Where an HTTPRoute (Gateway API) sends traffic: the backendRefs of its rules.

Shared by EnableMaintenance (each selected rule's backendRefs replaced by the maintenance
Service, the originals saved first), DisableMaintenance (the saved backendRefs put back
exactly: weights, ports, filters, namespaces) and Preflight (what must hold before anything
changes). Only `backendRefs` is ever written: a rule's matches, filters and timeouts stay as
the route's owner wrote them, so the maintenance Service sees the requests the application
would have seen.

A rule is found again on a later read by its index, its name and its matches: a rule moved,
renamed or rematched since the record is someone's newer change, never overwritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rollback_operator.kube import GATEWAY_GROUP, Kube, http_route_path
from rollback_operator.model import RouteSelection

RuleLocation = dict[str, Any]  # {"index": i, "name": <rule name or "">, "matches": [...]}

# The conditions a Gateway controller reports per parent that say it does not serve the route
# as written (Gateway API: Accepted, and ResolvedRefs for its backendRefs).
REFUSING_CONDITIONS = ("Accepted", "ResolvedRefs")


def maintenance_ref(service: str, port: int) -> dict[str, Any]:
    """The one backendRef a switched rule has, written in full (as the API server defaults it),
    so that a later read compares equal to what was written."""
    return {"group": "", "kind": "Service", "name": service, "port": port, "weight": 1}


def service_port(service: dict[str, Any] | None, port: int | str) -> int | None:
    """The Service port number the maintenance backend means: a backendRef has no port names."""
    for entry in (service or {}).get("spec", {}).get("ports") or []:
        if (isinstance(port, int) and entry.get("port") == port) or entry.get("name") == port:
            return int(entry["port"])
    return None


def _normal(ref: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "group": ref.get("group") or "",
        "kind": ref.get("kind") or "Service",
        "namespace": ref.get("namespace") or namespace,
        "name": ref.get("name"),
        "port": ref.get("port"),
        "weight": ref.get("weight", 1),
        "filters": ref.get("filters") or [],
    }


def serves_maintenance(refs: list[dict[str, Any]] | None, maintenance: dict[str, Any]) -> bool:
    """Whether a rule's backendRefs are exactly the maintenance Service (defaults aside)."""
    return bool(refs) and all(_normal(r, "") == _normal(maintenance, "") for r in refs or ())


def selected_rules(
    route: dict[str, Any], selection: RouteSelection
) -> list[tuple[RuleLocation, dict[str, Any]]]:
    """The rules to switch, each with its location: the named ones, or every rule that sends
    traffic to a backend (a rule without backendRefs, such as a redirect, serves no backend)."""
    found = []
    for index, rule in enumerate(route.get("spec", {}).get("rules") or []):
        name = rule.get("name", "")
        if selection.rules is None and not rule.get("backendRefs"):
            continue
        if selection.rules is not None and name not in selection.rules:
            continue
        location = {"index": index, "name": name, "matches": copy.deepcopy(rule.get("matches"))}
        found.append((location, rule))
    return found


def rule_at(route: dict[str, Any], location: RuleLocation) -> dict[str, Any] | None:
    """The rule now at `location`, or None if the rule there is not the same one."""
    rules = route.get("spec", {}).get("rules") or []
    if location["index"] >= len(rules):
        return None
    rule: dict[str, Any] = rules[location["index"]]
    if rule.get("name", "") != location["name"] or rule.get("matches") != location["matches"]:
        return None
    return rule


def record(
    route: dict[str, Any], selection: RouteSelection, maintenance: dict[str, Any]
) -> dict[str, Any]:
    """What status.saved.httpRoutes.<name> keeps: each selected rule's backendRefs exactly as
    read, and the maintenance backendRef they are replaced with (compared on restore)."""
    return {
        "maintenance": maintenance,
        "rules": [
            {"location": location, "backendRefs": copy.deepcopy(rule.get("backendRefs") or [])}
            for location, rule in selected_rules(route, selection)
        ],
    }


@dataclass(frozen=True)
class Plan:
    """What one write of a route changes (`changes`: location, new backendRefs), and what it
    leaves alone and why (`theirs`: someone's newer change, or a rule that moved)."""

    changes: list[tuple[RuleLocation, list[dict[str, Any]]]]
    theirs: list[str]
    moved: list[str]


def to_maintenance(route: dict[str, Any], saved: dict[str, Any]) -> Plan:
    """Each recorded rule not yet on the maintenance Service gets it (idempotent)."""
    maintenance = saved["maintenance"]
    changes, moved = [], []
    for entry in saved["rules"]:
        rule = rule_at(route, entry["location"])
        if rule is None:
            moved.append(where(entry["location"]))
        elif not serves_maintenance(rule.get("backendRefs"), maintenance):
            changes.append((entry["location"], [copy.deepcopy(maintenance)]))
    return Plan(changes, [], moved)


def back_to_maintenance(route: dict[str, Any], saved: dict[str, Any]) -> Plan:
    """After traffic returned (Monitor's breach): each recorded rule still serving its saved
    backendRefs goes back to the maintenance Service; one someone changed since is left alone."""
    return _between(route, saved, to_maintenance=True, left="not switched")


def to_original(route: dict[str, Any], saved: dict[str, Any]) -> Plan:
    """Each recorded rule still on the maintenance Service gets its saved backendRefs back; one
    already back needs nothing; one serving anything else is drift, left alone."""
    return _between(route, saved, to_maintenance=False, left="left as is")


def _between(
    route: dict[str, Any], saved: dict[str, Any], *, to_maintenance: bool, left: str
) -> Plan:
    """Each recorded rule moved between its saved backendRefs and the maintenance Service, in
    either direction: a rule already at the destination needs nothing, one at the source is
    changed, one serving anything else (someone's edit) is reported and `left` alone."""
    maintenance = saved["maintenance"]
    changes, theirs, moved = [], [], []
    for entry in saved["rules"]:
        rule = rule_at(route, entry["location"])
        if rule is None:
            moved.append(where(entry["location"]))
            continue
        current = rule.get("backendRefs") or []
        on_maintenance = serves_maintenance(current, maintenance)
        on_original = current == entry["backendRefs"]
        if on_maintenance if to_maintenance else on_original:
            continue
        if on_original if to_maintenance else on_maintenance:
            refs = [maintenance] if to_maintenance else entry["backendRefs"]
            changes.append((entry["location"], copy.deepcopy(refs)))
        else:
            theirs.append(
                f"{where(entry['location'])} now sends traffic to {describe_refs(current)} "
                f"(was {describe_refs(entry['backendRefs'])}), {left}"
            )
    return Plan(changes, theirs, moved)


def patch_rules(
    kube: Kube,
    namespace: str,
    name: str,
    route: dict[str, Any],
    changes: list[tuple[RuleLocation, list[dict[str, Any]]]],
) -> dict[str, Any] | None:
    """Gives each located rule of HTTPRoute `name`, as read (`route`), its new backendRefs.

    `rules` is a list, which a merge patch replaces whole: every other field of every rule is
    sent back as read. The patch carries the resourceVersion of that read: an edit made since
    is refused (409, the step retried on a fresh read) rather than overwritten. Nothing is sent
    without changes; the route as written is returned (None when nothing was sent).
    """
    if not changes:
        return None
    rules = copy.deepcopy(route["spec"]["rules"])
    for location, refs in changes:
        rules[location["index"]]["backendRefs"] = copy.deepcopy(refs)
    return kube.patch(
        http_route_path(namespace, name),
        {
            "metadata": {"resourceVersion": route["metadata"]["resourceVersion"]},
            "spec": {"rules": rules},
        },
    )


def where(location: RuleLocation) -> str:
    """A rule's place in its route, for humans: its name, else its index."""
    if location.get("name"):
        return f"rule {location['name']!r}"
    return f"rules[{location['index']}]"


def describe_ref(ref: dict[str, Any]) -> str:
    kind = ref.get("kind") or "Service"
    group = ref.get("group") or ""
    what = kind if not group else f"{kind}.{group}"
    namespace = f"{ref['namespace']}/" if ref.get("namespace") else ""
    port = f":{ref['port']}" if ref.get("port") is not None else ""
    weight = f" weight {ref['weight']}" if ref.get("weight", 1) != 1 else ""
    return f"{what} {namespace}{ref.get('name')}{port}{weight}"


def describe_refs(refs: list[dict[str, Any]] | None) -> str:
    return ", ".join(describe_ref(r) for r in refs or ()) or "no backend"


# --- what the Gateway controller says of the route (status.parents)


def has_controller(route: dict[str, Any]) -> bool:
    """Whether any Gateway controller ever reported on the route."""
    return bool((route.get("status") or {}).get("parents"))


def describe_parent(parent: dict[str, Any]) -> str:
    ref = parent.get("parentRef") or {}
    namespace = f"{ref['namespace']}/" if ref.get("namespace") else ""
    section = f" listener {ref['sectionName']}" if ref.get("sectionName") else ""
    return f"{ref.get('kind') or 'Gateway'} {namespace}{ref.get('name')}{section}"


def refusals(route: dict[str, Any], generation: int | None = None) -> list[str]:
    """Each parent's Accepted=False or ResolvedRefs=False, with its reason and message; only
    those observed at `generation` when given (a report on an older spec says nothing of the
    route as it is now)."""
    name = route.get("metadata", {}).get("name")
    found = []
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") not in REFUSING_CONDITIONS:
                continue
            if condition.get("status") != "False":
                continue
            if generation is not None and condition.get("observedGeneration") != generation:
                continue
            found.append(
                f"HTTPRoute {name!r}: {describe_parent(parent)} reports "
                f"{condition['type']}=False ({condition.get('reason', 'no reason')}: "
                f"{condition.get('message', '')})"
            )
    return found


def observed(route: dict[str, Any], generation: int) -> bool:
    """Whether every parent's Accepted and ResolvedRefs conditions speak of `generation` (or a
    later one): the Gateway controller has seen the route as written."""
    for parent in (route.get("status") or {}).get("parents") or []:
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in REFUSING_CONDITIONS:
            if (conditions.get(kind) or {}).get("observedGeneration", -1) < generation:
                return False
    return True


# --- cross-namespace references (ReferenceGrant)


def cross_namespace_refs(saved: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The references the restore writes back to another namespace than the route's (saved
    backendRefs, and the backends their RequestMirror filters copy traffic to): each needs a
    ReferenceGrant in its namespace, or the Gateway refuses the route restored."""
    found = []
    for entry in saved["rules"]:
        for ref in entry["backendRefs"]:
            found.append(ref)
            found += [
                f["requestMirror"]["backendRef"]
                for f in ref.get("filters") or []
                if (f.get("requestMirror") or {}).get("backendRef")
            ]
    return [r for r in found if r.get("namespace") and r["namespace"] != namespace]


def granted(grants: list[dict[str, Any]], from_namespace: str, ref: dict[str, Any]) -> bool:
    """Whether a ReferenceGrant (of the ref's namespace) lets HTTPRoutes of `from_namespace`
    refer to the object `ref` names."""
    group, kind = ref.get("group") or "", ref.get("kind") or "Service"
    for grant in grants:
        spec = grant.get("spec") or {}
        sources = any(
            f.get("group") == GATEWAY_GROUP
            and f.get("kind") == "HTTPRoute"
            and f.get("namespace") == from_namespace
            for f in spec.get("from") or []
        )
        targets = any(
            (t.get("group") or "") == group
            and t.get("kind") == kind
            and (not t.get("name") or t.get("name") == ref.get("name"))
            for t in spec.get("to") or []
        )
        if sources and targets:
            return True
    return False


def missing_grant(route: str, ref: dict[str, Any], from_namespace: str) -> str:
    """The refusal for a cross-namespace ref without a ReferenceGrant, saying what to create."""
    group, kind = ref.get("group") or "", ref.get("kind") or "Service"
    return (
        f"HTTPRoute {route!r} refers to {describe_ref(ref)} in another namespace, and no "
        f"ReferenceGrant in namespace {ref['namespace']!r} lets HTTPRoutes of namespace "
        f"{from_namespace!r} refer to it, so the Gateway would refuse the route restored: create "
        f"one there with from [{{group: {GATEWAY_GROUP}, kind: HTTPRoute, namespace: "
        f"{from_namespace}}}] and to [{{group: {group!r}, kind: {kind}, name: {ref.get('name')}}}]"
    )
