"""DisableMaintenance (runbook §2.5): put every Ingress backend, and every switched HTTPRoute
rule's backendRefs, back exactly as they were saved.

Only a backend (or rule) still pointing at the maintenance page is restored. One that someone
changed meanwhile is left alone and reported as drift: their change is newer than our record.
"""

from __future__ import annotations

from typing import Any

from rollback_operator.model import StepName
from rollback_operator.routes import patch_rules, to_original
from rollback_operator.steps.base import BaseStep, Done, Fail, Outcome, StepContext
from rollback_operator.traffic import Location, backend_at, describe, patch_backends


class DisableMaintenance(BaseStep):
    name = StepName.DISABLE_MAINTENANCE

    def plan(self, ctx: StepContext) -> str:
        objects = [f"Ingress {n}" for n in ctx.spec.ingresses]
        objects += [f"HTTPRoute {n}" for n in ctx.spec.route_names]
        return f"would restore the original backends of {', '.join(objects)}"

    def run(self, ctx: StepContext) -> Outcome:
        maintenance = ctx.spec.maintenance_backend.as_ingress_backend()
        drift: list[str] = []
        restored = 0
        for name in ctx.targets.ingresses:
            saved = ctx.ledger.original("ingresses", name)
            if saved is None:
                continue  # never switched: nothing to restore
            # As EnableMaintenance's patch left it, when this process made it (see Seen).
            ingress = ctx.seen.take("ingresses", name) or ctx.kube.ingress(ctx.namespace, name)
            if ingress is None:
                return Fail(
                    f"Ingress {name!r} disappeared before traffic could return; recreate it with "
                    f"the backends in status.saved.ingresses.{name}"
                )
            changes: list[tuple[Location, dict[str, Any]]] = []
            for entry in saved["backends"]:
                current = backend_at(ingress, entry["location"])
                if current == entry["backend"]:
                    continue
                if current == maintenance:
                    changes.append((entry["location"], entry["backend"]))
                else:
                    drift.append(
                        f"Ingress {name} {_where(entry['location'])} now points to "
                        f"{describe(current)}, left as is (was {describe(entry['backend'])})"
                    )
            patch_backends(ctx.kube, ctx.namespace, name, ingress, changes)
            restored += len(changes)
        message = f"restored {restored} backend(s) of Ingress {', '.join(ctx.targets.ingresses)}"
        if ctx.targets.http_routes:
            rules = 0
            for name in ctx.targets.http_routes:
                saved = ctx.ledger.original("httpRoutes", name)
                if saved is None:
                    continue  # never switched: nothing to restore
                route = ctx.kube.http_route(ctx.namespace, name)
                if route is None:
                    return Fail(
                        f"HTTPRoute {name!r} disappeared before traffic could return; recreate "
                        f"it with the backendRefs in status.saved.httpRoutes.{name}"
                    )
                plan = to_original(route, saved)
                drift += [f"HTTPRoute {name} {note}" for note in plan.theirs]
                drift += [
                    f"HTTPRoute {name} {moved} moved, renamed or matches other requests, left as is"
                    for moved in plan.moved
                ]
                patch_rules(ctx.kube, ctx.namespace, name, route, plan.changes)
                rules += len(plan.changes)
            message = (
                f"restored {restored} backend(s) of Ingress "
                f"{', '.join(ctx.targets.ingresses) or '(none)'} and the backendRefs of {rules} "
                f"rule(s) of HTTPRoute {', '.join(ctx.targets.http_routes)}"
            )
        if drift:
            message += "; drift: " + "; ".join(drift)
        return Done(message, warnings=tuple(drift))


def _where(location: Location) -> str:
    if location.get("default"):
        return "defaultBackend"
    host = location["host"] or "*"
    return f"{host}{location['pathValue'] or '/'}"
