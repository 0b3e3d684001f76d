"""EnableMaintenance (runbook §2.1): point every backend of each Ingress at the maintenance page.

The original backends are saved, exactly as written (Service name, port number or name), before
the first change; the patch carries the resourceVersion read, so a concurrent edit is retried
rather than overwritten.
"""

from __future__ import annotations

from rollback_operator.model import StepName
from rollback_operator.steps.base import BaseStep, Done, Fail, Outcome, StepContext
from rollback_operator.traffic import backend_at, backend_locations, describe, patch_backends


class EnableMaintenance(BaseStep):
    name = StepName.ENABLE_MAINTENANCE
    records_before_acting = True  # the original backends are saved before the switch

    def plan(self, ctx: StepContext) -> str:
        maintenance = describe(ctx.spec.maintenance_backend.as_ingress_backend())
        parts = []
        for name in ctx.spec.ingresses:
            ingress = ctx.kube.ingress(ctx.namespace, name) or {}
            parts.append(
                f"Ingress {name}: {len(backend_locations(ingress))} backend(s) to {maintenance}"
            )
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
            patch_backends(ctx.kube, ctx.namespace, name, ingress, changes)
            switched.append(
                f"{name} ({len(ctx.ledger.original('ingresses', name)['backends'])} backend(s))"
            )
        return Done(f"Ingress {', '.join(switched)} now served by {describe(maintenance)}")
