"""Preflight: check every referenced object before anything changes (safety rule 1).

A request that cannot finish must fail here, with the site untouched, and with one message
that names every problem at once so the SRE fixes them in one go.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rollback_operator import route_checks
from rollback_operator.admin_policy import AdminPolicy
from rollback_operator.admin_policy_reader import read_policy
from rollback_operator.autoscaling import is_frozen
from rollback_operator.images import CONTAINERS, INIT_CONTAINERS, pod_images
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.steps import limits
from rollback_operator.steps.base import (
    BaseStep,
    Done,
    Fail,
    Outcome,
    PreflightCheck,
    StepContext,
    Wait,
)
from rollback_operator.steps.gates import approvable_steps, gates_record
from rollback_operator.takeover import Leftover, leftovers
from rollback_operator.traffic import backend_locations, not_understood


class Preflight(BaseStep):
    """Checks the core objects itself, then each capability's part (`checks`, composed by the
    registry from the steps' `preflight`): every problem is reported at once."""

    name = StepName.PREFLIGHT
    records_before_acting = True  # reads only; the takeovers it adopts are saved

    def __init__(self, checks: Sequence[PreflightCheck] = ()) -> None:
        self.checks = tuple(checks)

    def plan(self, ctx: StepContext) -> str:
        return "checks every referenced object"

    def run(self, ctx: StepContext) -> Outcome:
        # First the admins' limits (no confused deputy): a request that would make the operator
        # reach a refused address or run a refused image stops here, before any check below
        # contacts what it names (Prometheus is queried, Jobs are started).
        read = _Reads.of(ctx)  # every read below at once, the admins' settings among them
        policy = read.policy
        refused = limits.refusals(ctx, policy)
        if refused:
            return Fail(
                f"Preflight refused {len(refused)} thing(s) this request would make the operator "
                f"use: {'; '.join(refused)}. Nothing was contacted, started or changed."
            )
        problems: list[str] = []
        spec = ctx.spec
        ingresses: dict[str, dict[str, Any]] = {}
        for name in spec.ingresses:
            ingress = read.ingresses[name]
            if ingress is None:
                problems.append(f"Ingress {name!r} not found")
            elif not backend_locations(ingress):
                problems.append(f"Ingress {name!r} has no backend to switch to maintenance")
            elif not_understood(ingress):
                problems.append(
                    f"Ingress {name!r} has backends the operator cannot switch and restore "
                    f"safely: {'; '.join(not_understood(ingress))}. Point them at Services "
                    "(or take the Ingress out of spec.traffic.ingresses and switch it by hand)"
                )
            else:
                ingresses[name] = ingress
        problems += _check_service(read.service, spec)
        for workload in spec.workloads:
            deployment = read.deployments[workload.deployment]
            if deployment is None:
                problems.append(f"Deployment {workload.deployment!r} not found")
                continue
            for kind, what, listed in (
                (CONTAINERS, "container", workload.containers),
                (INIT_CONTAINERS, "init container", workload.init_containers),
            ):
                present = pod_images(deployment, kind)
                problems += [
                    f"Deployment {workload.deployment!r} has no {what} {c!r}"
                    for c in listed or ()
                    if c not in present
                ]
        hpas = _resolve_hpas(ctx, read.hpas, problems)
        takeovers = _take_over(ctx, ingresses, hpas, read, problems)
        # The capabilities' parts see the objects the run will change, discovered HPAs included.
        ctx.targets = Targets(spec.ingresses, spec.deployments, tuple(hpas), spec.route_names)
        read.keep(ctx, hpas)  # for the checks below, and the steps that change these objects
        # The optional sections check what they depend on: the CDN token, Prometheus, the
        # Secret keys of smoke-test Jobs, the database's references.
        for check in self.checks:
            problems += check.problems(ctx)
        if problems:
            return Fail(
                f"Preflight found {len(problems)} problem(s): {'; '.join(problems)}. "
                "Nothing was changed. Fix the references (or the objects) and create a new "
                "RollbackRequest."
            )
        # Then the slower read-only inspections, such as the database's: a Job resolves the
        # backup (status.backup) and asks whether the restore or the migrate-down could run.
        found: list[str] = []
        for check in self.checks:
            result = check.inspect(ctx)
            if isinstance(result, Wait | Fail):
                return result
            if result:
                found.append(result)
        # The approvals this run waits for, from the admins' RollbackPolicy and the request:
        # read once, recorded, and named in the message with the reason for each.
        gates = gates_record(policy, approvable_steps(spec))
        ctx.ledger.put_section("gates", gates)
        ctx.ledger.set_targets(ctx.targets)
        for section, name, leftover in takeovers:
            ctx.ledger.save(section, name, leftover.saved)
        routes = f"{len(spec.http_routes)} HTTPRoute(s), " if spec.http_routes else ""
        message = (
            f"found {len(spec.ingresses)} Ingress(es), {routes}the maintenance Service, "
            f"{len(spec.workloads)} Deployment(s) and {len(hpas)} HPA(s)"
        )
        message += "".join(f"; {part}" for part in found)
        if gates:
            message += "; approvals: " + "; ".join(
                f"{g['step']} by {g['who']} ({g['requiredBy']})" for g in gates
            )
        if takeovers:
            taken = ", ".join(f"{_KIND[s]} {n} (from {lo.request})" for s, n, lo in takeovers)
            message += f"; takes over the original state recorded for {taken}"
        return Done(message)


_KIND = {"ingresses": "Ingress", "httpRoutes": "HTTPRoute", "hpas": "HPA"}


def _take_over(
    ctx: StepContext,
    ingresses: dict[str, dict[str, Any]],
    hpas: dict[str, dict[str, Any]],
    read: _Reads,
    problems: list[str],
) -> list[tuple[str, str, Leftover]]:
    """The records to adopt for objects still as an earlier request left them (see takeover).

    An object already on the maintenance page, or frozen, with no such record is a problem:
    its original state is unknown, and restoring "what was there" would keep the site down.
    """
    maintenance = ctx.spec.maintenance_backend.as_ingress_backend()
    switched = [
        n for n, i in ingresses.items() if any(b == maintenance for _, b in backend_locations(i))
    ]
    routes = route_checks.on_maintenance(ctx.spec, read.routes, read.service)
    frozen = [name for name, hpa in hpas.items() if is_frozen(hpa)]
    if not switched and not routes and not frozen:
        return []
    found = leftovers(ctx.kube.rollback_requests(ctx.namespace), ctx.request)
    adopted: list[tuple[str, str, Leftover]] = []
    for section, names in (("ingresses", switched), ("httpRoutes", routes), ("hpas", frozen)):
        for name in names:
            if name in found[section]:
                adopted.append((section, name, found[section][name]))
                continue
            state = "is frozen" if section == "hpas" else "sends traffic to the maintenance page"
            problems.append(
                f"{_KIND[section]} {name!r} already {state} and no earlier RollbackRequest "
                "recorded its original state: restore it by hand first"
            )
    return adopted


def _check_service(service: dict[str, Any] | None, spec: RollbackSpec) -> list[str]:
    backend = spec.maintenance_backend
    if service is None:
        return [f"maintenance Service {backend.service!r} not found"]
    ports = service.get("spec", {}).get("ports", [])
    key = "port" if isinstance(backend.port, int) else "name"
    if not any(p.get(key) == backend.port for p in ports):
        return [f"maintenance Service {backend.service!r} has no port {backend.port!r}"]
    return []


@dataclass(frozen=True)
class _Reads:
    """What Preflight reads of the cluster, read in parallel: each is a round trip, and the
    site is still erroring while Preflight runs."""

    policy: AdminPolicy
    ingresses: dict[str, dict[str, Any] | None]
    service: dict[str, Any] | None
    routes: dict[str, dict[str, Any] | None]
    deployments: dict[str, dict[str, Any] | None]
    # The listed HPAs by name (None: not found), or every HPA of the namespace.
    hpas: dict[str, dict[str, Any] | None] | list[dict[str, Any]]

    @classmethod
    def of(cls, ctx: StepContext) -> _Reads:
        kube, ns, spec = ctx.kube, ctx.namespace, ctx.spec
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="preflight") as pool:
            policy = pool.submit(read_policy, kube, ns)
            ingresses = {n: pool.submit(kube.ingress, ns, n) for n in spec.ingresses}
            service = pool.submit(kube.service, ns, spec.maintenance_backend.service)
            routes = {r.name: pool.submit(kube.http_route, ns, r.name) for r in spec.http_routes}
            deployments = {n: pool.submit(kube.deployment, ns, n) for n in spec.deployments}
            if spec.hpas is not None:
                listed = {h: pool.submit(kube.hpa, ns, h) for h in spec.hpas}
            else:
                every = pool.submit(kube.hpas, ns)
            return cls(
                policy=policy.result(),
                ingresses={n: f.result() for n, f in ingresses.items()},
                service=service.result(),
                routes={n: f.result() for n, f in routes.items()},
                deployments={n: f.result() for n, f in deployments.items()},
                hpas=(
                    {h: f.result() for h, f in listed.items()}
                    if spec.hpas is not None
                    else every.result()
                ),
            )

    def keep(self, ctx: StepContext, hpas: dict[str, dict[str, Any]]) -> None:
        """Hands the objects the run changes to the steps that change them (`Seen`)."""
        for kind, found in (
            ("ingresses", self.ingresses),
            ("httpRoutes", self.routes),
            ("services", {ctx.spec.maintenance_backend.service: self.service}),
            ("deployments", self.deployments),
            ("hpas", hpas),
        ):
            for name, obj in found.items():
                if obj is not None:
                    ctx.seen.keep(kind, name, obj)


READERS = 8  # Preflight's reads in flight at once


def _resolve_hpas(
    ctx: StepContext,
    read: dict[str, dict[str, Any] | None] | list[dict[str, Any]],
    problems: list[str],
) -> dict[str, dict[str, Any]]:
    """The listed HPAs (each must exist), or those whose scaleTargetRef is a listed Deployment,
    by name, as read (the takeover check looks at them again without another call)."""
    if isinstance(read, dict):
        problems += [
            f"HorizontalPodAutoscaler {h!r} not found" for h, o in read.items() if o is None
        ]
        return {h: o for h, o in read.items() if o is not None}
    deployments = set(ctx.spec.deployments)
    return {
        h["metadata"]["name"]: h
        for h in sorted(read, key=lambda h: h["metadata"]["name"])
        if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
        and h["spec"]["scaleTargetRef"].get("name") in deployments
    }
