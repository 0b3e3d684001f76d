"""EnableMaintenance (runbook §2.1): point every backend of each Ingress, and every backendRef
of each selected HTTPRoute rule, at the maintenance page.

The originals are saved, exactly as written (an Ingress backend's Service name and port number
or name; a rule's backendRefs with their weights, ports, filters and namespaces), before the
first change; each patch carries the resourceVersion read, so a concurrent edit is retried
rather than overwritten. Then, for each HTTPRoute a Gateway controller reports on, its verdict
on the switched route is read back (for at most route_checks.READBACK_SECONDS): a route the
Gateway refuses fails the step.
"""

from __future__ import annotations

from typing import Any

from rollback_operator import route_checks
from rollback_operator.model import StepName
from rollback_operator.routes import describe_ref, patch_rules, record, to_maintenance
from rollback_operator.steps.base import (
    BaseStep,
    Done,
    Fail,
    Outcome,
    References,
    StepContext,
    Wait,
)
from rollback_operator.traffic import backend_at, backend_locations, describe, patch_backends


def _route_problems(ctx: StepContext) -> list[str]:
    routes = {s.name: _route(ctx, s.name) for s in ctx.spec.http_routes}
    return route_checks.problems(ctx.kube, ctx.namespace, ctx.spec, routes, _service(ctx))


def _route(ctx: StepContext, name: str, take: bool = False) -> dict[str, Any] | None:
    """Preflight's read of HTTPRoute `name`, when this process made it (a patch from it carries
    its version: a change made since is a conflict, and a fresh read), else a fresh read."""
    kept = ctx.seen.take if take else ctx.seen.peek
    return kept("httpRoutes", name) or ctx.kube.http_route(ctx.namespace, name)


def _service(ctx: StepContext) -> dict[str, Any] | None:
    """The maintenance Service as Preflight read it, when this process did, else as it is."""
    name = ctx.spec.maintenance_backend.service
    return ctx.seen.peek("services", name) or ctx.kube.service(ctx.namespace, name)


class EnableMaintenance(BaseStep):
    name = StepName.ENABLE_MAINTENANCE
    preflight = References(_route_problems)
    records_before_acting = True  # the original backends are saved before the switch

    def plan(self, ctx: StepContext) -> str:
        maintenance = describe(ctx.spec.maintenance_backend.as_ingress_backend())
        parts = []
        for name in ctx.spec.ingresses:
            ingress = ctx.kube.ingress(ctx.namespace, name) or {}
            parts.append(
                f"Ingress {name}: {len(backend_locations(ingress))} backend(s) to {maintenance}"
            )
        for selection in ctx.spec.http_routes:
            which = "every rule" if selection.rules is None else ", ".join(selection.rules)
            parts.append(f"HTTPRoute {selection.name} ({which}) to {maintenance}")
        return "would point " + "; ".join(parts)

    def run(self, ctx: StepContext) -> Outcome:
        maintenance = ctx.spec.maintenance_backend.as_ingress_backend()
        switched: list[str] = []
        for name in ctx.targets.ingresses:
            # Preflight's read, when this process made it (the patch carries its version).
            ingress = ctx.seen.take("ingresses", name) or ctx.kube.ingress(ctx.namespace, name)
            if ingress is None:
                return Fail(
                    f"Ingress {name!r} disappeared during the rollback; check who deleted it"
                )
            ctx.ledger.save(
                "ingresses",
                name,
                {
                    "backends": [
                        {"location": loc, "backend": b} for loc, b in backend_locations(ingress)
                    ]
                },
            )
            changes = []
            for entry in ctx.ledger.original("ingresses", name)["backends"]:
                current = backend_at(ingress, entry["location"])
                if current is None:
                    return Fail(
                        f"Ingress {name!r} changed while it was being switched to maintenance "
                        f"(a rule or path moved); check it by hand, the original backends are in "
                        f"status.saved.ingresses"
                    )
                if current != maintenance:
                    changes.append((entry["location"], maintenance))
            # Kept for DisableMaintenance: unchanged until then, it needs no read (its patch
            # carries this version; an edit made meanwhile is a conflict, and a fresh read).
            ctx.seen.keep(
                "ingresses", name, patch_backends(ctx.kube, ctx.namespace, name, ingress, changes)
            )
            switched.append(
                f"{name} ({len(ctx.ledger.original('ingresses', name)['backends'])} backend(s))"
            )
        what = [f"Ingress {', '.join(switched)}"] if switched else []
        if ctx.targets.http_routes:
            routes = _switch_routes(ctx)
            if not isinstance(routes, list):
                return routes
            what.append(f"HTTPRoute {', '.join(routes)}")
            verdict = _read_back(ctx)
            if not isinstance(verdict, list):
                return verdict
            if verdict:
                return Done(
                    f"{'; '.join(what)} now served by {describe(maintenance)}; "
                    + "; ".join(verdict),
                    warnings=tuple(verdict),
                    warning_reason="GatewayUnconfirmed",
                )
        return Done(f"{'; '.join(what)} now served by {describe(maintenance)}")


def _switch_routes(ctx: StepContext) -> list[str] | Fail:
    """Each selected rule of each HTTPRoute to the maintenance Service, its backendRefs saved
    first (durably, before the patch: a crash between the two finds the record on restart)."""
    maintenance = route_checks.maintenance_of(_service(ctx), ctx.spec)
    if maintenance is None:
        backend = ctx.spec.maintenance_backend
        return Fail(
            f"maintenance Service {backend.service!r} or its port {backend.port!r} disappeared "
            "during the rollback; no HTTPRoute was switched, check who changed it"
        )
    switched = []
    for name in ctx.targets.http_routes:
        route = _route(ctx, name, take=True)
        if route is None:
            return Fail(f"HTTPRoute {name!r} disappeared during the rollback; check who deleted it")
        ctx.ledger.save("httpRoutes", name, record(route, ctx.spec.route(name), maintenance))
        saved = ctx.ledger.original("httpRoutes", name)
        plan = to_maintenance(route, saved)
        if plan.moved:
            return Fail(
                f"HTTPRoute {name!r} changed while it was being switched to maintenance "
                f"({', '.join(plan.moved)} moved, renamed or matches other requests); check it "
                "by hand, the original backendRefs are in status.saved.httpRoutes"
            )
        patch_rules(ctx.kube, ctx.namespace, name, route, plan.changes)
        switched.append(f"{name} ({len(saved['rules'])} rule(s))")
    return switched


def _read_back(ctx: StepContext) -> list[str] | Wait | Fail:
    """The Gateway controllers' verdicts on the switched routes: Fail when one refuses a route,
    Wait while one has not reported on it yet, else the notes of those that did not in time."""
    waited = (ctx.now() - ctx.step_started_at).total_seconds()
    notes = []
    for name in ctx.targets.http_routes:
        route = ctx.kube.http_route(ctx.namespace, name)
        if route is None:
            return Fail(f"HTTPRoute {name!r} disappeared during the rollback; check who deleted it")
        verdict, message = route_checks.readback(route, waited)
        if verdict == "wait":
            return Wait(
                f"waiting for the Gateway controller to report on HTTPRoute {name} switched to "
                "the maintenance page",
                retry_after=0.5,
            )
        if verdict == "refused":
            maintenance = ctx.ledger.original("httpRoutes", name)["maintenance"]
            return Fail(
                f"the Gateway does not serve HTTPRoute {name!r} switched to "
                f"{describe_ref(maintenance)}: {message}. The route stays switched, so the "
                "application gets no traffic through it, and nothing else was changed: fix the "
                "maintenance Service or the Gateway, then put the original backendRefs back "
                f"from status.saved.httpRoutes.{name} (or create a new RollbackRequest)"
            )
        if message:
            notes.append(message)
    return notes
