"""What must hold of each HTTPRoute a request names before anything changes (Preflight's
part for the Gateway API), and what the Gateway controller says once the route is switched.

Refused, with the site untouched: a route or a named rule that does not exist; a route whose
Gateway does not serve it as written (a parent reports Accepted=False or ResolvedRefs=False);
a cross-namespace reference the restore would write back without the ReferenceGrant that lets
the Gateway follow it. A route that already sends traffic to the maintenance page is
Preflight's own concern (`on_maintenance`): it takes over an earlier request's record, or
refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollback_operator.kube import Kube
from rollback_operator.model import RollbackSpec, RouteSelection
from rollback_operator.routes import (
    cross_namespace_refs,
    describe_ref,
    granted,
    has_controller,
    maintenance_ref,
    missing_grant,
    observed,
    record,
    refusals,
    selected_rules,
    serves_maintenance,
    service_port,
)

# How long EnableMaintenance waits for a Gateway controller to report on a switched route. Only
# a route some controller ever reported on is waited for, and never longer than this: the
# maintenance page must not hang on a controller that is slow or gone.
READBACK_SECONDS = 10.0


def maintenance_of(service: dict[str, Any] | None, spec: RollbackSpec) -> dict[str, Any] | None:
    """The backendRef of the maintenance Service as read (`service`), its port resolved to a
    number (None when the Service or its port is missing: Preflight reports that)."""
    backend = spec.maintenance_backend
    port = service_port(service, backend.port)
    return None if port is None else maintenance_ref(backend.service, port)


def problems(
    kube: Kube,
    namespace: str,
    spec: RollbackSpec,
    routes: Mapping[str, dict[str, Any] | None],
    service: dict[str, Any] | None,
) -> list[str]:
    """Every problem of the request's HTTPRoutes, at once, from the routes and the maintenance
    Service as read (None: not found); `kube` lists the ReferenceGrants the routes need."""
    if not spec.http_routes:
        return []
    maintenance = maintenance_of(service, spec)
    found: list[str] = []
    for selection in spec.http_routes:
        route = routes.get(selection.name)
        if route is None:
            found.append(f"HTTPRoute {selection.name!r} not found")
            continue
        found += _rules(route, selection)
        found += refusals(route)
        if maintenance is not None:
            refs = cross_namespace_refs(
                record(route, selection, maintenance), route["metadata"]["namespace"]
            )
            grants: dict[str, list[dict[str, Any]] | None] = {}
            for ref in refs:
                if ref["namespace"] not in grants:
                    grants[ref["namespace"]] = kube.reference_grants(ref["namespace"])
                readable = grants[ref["namespace"]]
                if readable is None:
                    found.append(
                        f"HTTPRoute {selection.name!r} refers to {describe_ref(ref)}, and the "
                        f"operator may not list the ReferenceGrants of namespace "
                        f"{ref['namespace']!r} to check that the Gateway would accept the route "
                        "restored: let it (list referencegrants there), or switch that rule by "
                        "hand"
                    )
                elif not granted(readable, namespace, ref):
                    found.append(missing_grant(selection.name, ref, namespace))
    return found


def on_maintenance(
    spec: RollbackSpec,
    routes: Mapping[str, dict[str, Any] | None],
    service: dict[str, Any] | None,
) -> list[str]:
    """The request's HTTPRoutes, as read, with a selected rule already on the maintenance
    Service: their original backendRefs are not what a fresh read shows (Preflight takes over
    an earlier request's record of them, or refuses)."""
    maintenance = maintenance_of(service, spec) if spec.http_routes else None
    if maintenance is None:
        return []
    found = []
    for selection in spec.http_routes:
        route = routes.get(selection.name) or {}
        if any(
            serves_maintenance(rule.get("backendRefs"), maintenance)
            for _, rule in selected_rules(route, selection)
        ):
            found.append(selection.name)
    return found


def _rules(route: dict[str, Any], selection: RouteSelection) -> list[str]:
    name = selection.name
    rules = route.get("spec", {}).get("rules") or []
    if selection.rules is None:
        if not any(rule.get("backendRefs") for rule in rules):
            return [f"HTTPRoute {name!r} has no rule with backendRefs to switch to maintenance"]
        return []
    named = {rule.get("name", ""): rule for rule in rules if rule.get("name")}
    found = []
    for wanted in selection.rules:
        if wanted not in named:
            found.append(
                f"HTTPRoute {name!r} has no rule named {wanted!r} "
                f"(its named rules: {', '.join(sorted(named)) or 'none'})"
            )
        elif not named[wanted].get("backendRefs"):
            found.append(f"HTTPRoute {name!r} rule {wanted!r} has no backendRefs to switch")
    return found


def readback(route: dict[str, Any], waited: float) -> tuple[str, str | None]:
    """What the Gateway controller says of a switched route: ("refused", message) when a parent
    reports Accepted=False or ResolvedRefs=False at the route's generation; ("wait", None)
    while it has not reported on that generation (within READBACK_SECONDS); ("unconfirmed",
    note) after that; ("ok", None) when it accepts the route, or when no controller ever
    reported on it (there is nothing to wait for)."""
    if not has_controller(route):
        return "ok", None
    generation = int(route["metadata"].get("generation", 0))
    if not observed(route, generation):
        if waited < READBACK_SECONDS:
            return "wait", None
        return "unconfirmed", (
            f"HTTPRoute {route['metadata']['name']}: no Gateway controller reported on "
            f"generation {generation} within {READBACK_SECONDS:g}s"
        )
    refused = refusals(route, generation)
    if refused:
        return "refused", "; ".join(refused)
    return "ok", None
