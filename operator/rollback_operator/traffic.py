"""Where an Ingress sends traffic: every backend location (rules' paths and defaultBackend).

Shared by EnableMaintenance (switch each location to the maintenance Service, saving what was
there), DisableMaintenance (put back exactly what was saved) and Monitor (switch back to the
maintenance page on a breach).
"""

from __future__ import annotations

import copy
from typing import Any

from rollback_operator.kube import Kube, ingress_path

Location = dict[
    str, Any
]  # {"rule": i, "path": j, "host": ..., "pathValue": ...} or {"default": True}


def backend_locations(ingress: dict[str, Any]) -> list[tuple[Location, dict[str, Any]]]:
    """Each backend of the Ingress with a location that identifies it on a later read."""
    spec = ingress.get("spec", {})
    found: list[tuple[Location, dict[str, Any]]] = []
    if spec.get("defaultBackend"):
        found.append(({"default": True}, spec["defaultBackend"]))
    for i, rule in enumerate(spec.get("rules") or []):
        for j, path in enumerate((rule.get("http") or {}).get("paths") or []):
            location = {
                "rule": i,
                "path": j,
                "host": rule.get("host", ""),
                "pathValue": path.get("path", ""),
            }
            found.append((location, path["backend"]))
    return found


# The AWS Load Balancer Controller's convention: a service backend on this port name is an
# action (a redirect, a fixed response, a weighted forward) read from an annotation of the
# Ingress, not a Service port.
ACTION_PORT_NAME = "use-annotation"


def not_understood(ingress: dict[str, Any]) -> list[str]:
    """The backends whose switch and restore the operator cannot vouch for, described: a
    `resource` backend (served by a controller-specific object, not a Service) and an action
    backend (port name `use-annotation`). Switched blindly, the first would lose what only its
    controller knows, and the second would leave the action in the annotation live."""
    found = []
    for location, backend in backend_locations(ingress):
        if backend.get("resource"):
            found.append(f"{where(location)} is served by resource {describe(backend)}")
        elif (backend.get("service") or {}).get("port", {}).get("name") == ACTION_PORT_NAME:
            found.append(
                f"{where(location)} is the action {backend['service']['name']!r} "
                f"(port name {ACTION_PORT_NAME}, read from the Ingress's annotations)"
            )
    return found


def backend_at(ingress: dict[str, Any], location: Location) -> dict[str, Any] | None:
    """The backend now at `location`, or None if the rule or path there is not the same one."""
    spec = ingress.get("spec", {})
    if location.get("default"):
        backend: dict[str, Any] | None = spec.get("defaultBackend")
        return backend
    rules = spec.get("rules") or []
    if (
        location["rule"] >= len(rules)
        or rules[location["rule"]].get("host", "") != location["host"]
    ):
        return None
    paths = (rules[location["rule"]].get("http") or {}).get("paths") or []
    if (
        location["path"] >= len(paths)
        or paths[location["path"]].get("path", "") != location["pathValue"]
    ):
        return None
    backend = paths[location["path"]]["backend"]
    return backend


def with_backends(
    ingress: dict[str, Any], replacements: list[tuple[Location, dict[str, Any]]]
) -> dict[str, Any]:
    """The merge patch of the Ingress spec that gives each location its new backend.

    `rules` is a list, which a merge patch replaces whole. `defaultBackend` is an object, which
    a merge patch would merge into the old one (a port name beside a port number): every key
    of the old backend that the new one lacks is written as null, so it is replaced instead.
    """
    spec = copy.deepcopy(ingress.get("spec", {}))
    patch: dict[str, Any] = {}
    for location, backend in replacements:
        if location.get("default"):
            patch["defaultBackend"] = _replacing(spec.get("defaultBackend"), backend)
        else:
            paths = spec["rules"][location["rule"]]["http"]["paths"]
            paths[location["path"]]["backend"] = copy.deepcopy(backend)
            patch["rules"] = spec["rules"]
    return patch


def patch_backends(
    kube: Kube,
    namespace: str,
    name: str,
    ingress: dict[str, Any],
    changes: list[tuple[Location, dict[str, Any]]],
) -> dict[str, Any]:
    """Gives each location of Ingress `name`, as it was read (`ingress`), its new backend; the
    Ingress as it now stands (the patch's answer, or `ingress` when nothing changed).

    The patch carries the resourceVersion of that read: an edit made since is refused (409, and
    the step is retried on a fresh read) rather than overwritten. Nothing is sent without
    changes.
    """
    if not changes:
        return ingress
    return kube.patch(
        ingress_path(namespace, name),
        {
            "metadata": {"resourceVersion": ingress["metadata"]["resourceVersion"]},
            "spec": with_backends(ingress, changes),
        },
    )


def _replacing(old: Any, new: Any) -> Any:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    merged: dict[str, Any] = {key: None for key in old if key not in new}
    merged.update({key: _replacing(old.get(key), value) for key, value in new.items()})
    return merged


def describe(backend: dict[str, Any] | None) -> str:
    if not backend:
        return "nothing"
    service = backend.get("service")
    if service:
        port = service.get("port", {})
        return f"{service['name']}:{port.get('number', port.get('name'))}"
    resource = backend.get("resource", {})
    return f"{resource.get('kind', '?')}/{resource.get('name', '?')}"


def still_ours(
    ingress: dict[str, Any], saved_backends: list[dict[str, Any]], maintenance: dict[str, Any]
) -> tuple[list[tuple[Location, dict[str, Any]]], list[str]]:
    """What putting an Ingress back from its record (`status.saved.ingresses.<name>.backends`)
    changes: each location still served by the maintenance backend gets its saved backend back.

    A location already back needs nothing; one serving anything else is someone's newer change,
    described in the second list and left alone.
    """
    changes: list[tuple[Location, dict[str, Any]]] = []
    theirs: list[str] = []
    for entry in saved_backends:
        location, original = entry["location"], entry["backend"]
        current = backend_at(ingress, location)
        if current == maintenance:
            changes.append((location, original))
        elif current != original:
            theirs.append(
                f"{where(location)} now points to {describe(current)} "
                f"(was {describe(original)}), left as is"
            )
    return changes, theirs


def where(location: Location) -> str:
    """A backend's place in its Ingress: `defaultBackend`, or `host/path` (`*` for any host)."""
    if location.get("default"):
        return "defaultBackend"
    return f"{location['host'] or '*'}{location['pathValue'] or '/'}"


def serves_maintenance(ingress: dict[str, Any], maintenance: dict[str, Any]) -> bool:
    """Whether any backend of the Ingress is the maintenance page."""
    return any(backend == maintenance for _, backend in backend_locations(ingress))
