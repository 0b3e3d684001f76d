"""HTTPRoutes (Gateway API): the rules switched to the maintenance Service, saved first and put
back exactly; drift left alone; what Preflight refuses; the Gateway's verdict read back.

The steps run against the in-memory API of test_steps (merge patches, resourceVersions, one
log of patches and durable status writes); the e2e tier runs them against a real API server
with the Gateway API CRDs (tests/e2e/test_httproutes.py).
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from kubectl_rollback import recover
from rollback_operator import route_checks
from rollback_operator.engine import _left_as
from rollback_operator.kube import ApiError
from rollback_operator.model import RollbackSpec, RouteSelection, Targets
from rollback_operator.routes import (
    granted,
    maintenance_ref,
    record,
    refusals,
    selected_rules,
    serves_maintenance,
    to_maintenance,
    to_original,
)
from rollback_operator.status import Status
from rollback_operator.steps.base import Done, Fail, Seen, Wait
from rollback_operator.steps.disable_maintenance import DisableMaintenance
from rollback_operator.steps.enable_maintenance import EnableMaintenance
from rollback_operator.steps.monitor import switch_to_maintenance
from rollback_operator.steps.preflight import Preflight
from rollback_operator.traffic import not_understood
from tests.unit.test_steps import NS, T0, World, lawyershub, make_spec

MAINTENANCE = maintenance_ref("maintenance-page", 80)
GATEWAY = "gateway.networking.k8s.io"

# Rule-level filters, backendRef-level filters, weights, a named port-less kind, and a
# cross-namespace ref: everything a restore must put back as it was.
API_REFS = [
    {"group": "", "kind": "Service", "name": "backend", "port": 8080, "weight": 90},
    {
        "group": "",
        "kind": "Service",
        "name": "backend-canary",
        "port": 8080,
        "weight": 10,
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-canary", "value": "1"}]},
            }
        ],
    },
]
SHARED_REFS = [
    {"group": "", "kind": "Service", "name": "search", "namespace": "shared", "port": 9200}
]
WEB_REFS = [{"group": "", "kind": "Service", "name": "frontend", "port": 3000, "weight": 1}]


def route() -> dict[str, Any]:
    return {
        "metadata": {"name": "site", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["lawyershub.example"],
            "rules": [
                {
                    "name": "api",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]},
                        }
                    ],
                    "backendRefs": copy.deepcopy(API_REFS),
                },
                {
                    "name": "search",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/search"}}],
                    "backendRefs": copy.deepcopy(SHARED_REFS),
                },
                {
                    "name": "old-docs",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                    "filters": [
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {"hostname": "docs.example", "statusCode": 301},
                        }
                    ],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": copy.deepcopy(WEB_REFS),
                },
            ],
        },
    }


def grant(*, name: str | None = "search", from_namespace: str = NS) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": "Service"}
    if name:
        to["name"] = name
    return {
        "metadata": {"name": "from-lawyershub", "namespace": "shared"},
        "spec": {
            "from": [{"group": GATEWAY, "kind": "HTTPRoute", "namespace": from_namespace}],
            "to": [to],
        },
    }


def routes_spec(*routes: dict[str, Any], ingresses: tuple[str, ...] = ()) -> RollbackSpec:
    spec = make_spec(ingresses=ingresses)
    raw = {
        "reason": spec.reason,
        "trigger": spec.trigger,
        "traffic": {
            "ingresses": list(ingresses),
            "httpRoutes": list(routes) or [{"name": "site"}],
            "maintenanceBackend": {"service": "maintenance-page", "port": "http"},
        },
        "workloads": [{"deployment": "backend"}, {"deployment": "frontend"}],
    }
    return RollbackSpec.parse(raw)


def world_with_route(**grant_args: Any) -> World:
    world = lawyershub()
    world.kube.add("HTTPRoute", route())
    world.kube.add("ReferenceGrant", grant(**grant_args))
    return world


def rules_of(world: World) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = world.kube.stored("HTTPRoute", "site")["spec"]["rules"]
    return rules


def report(world: World, generation: int, condition: str, status: str, reason: str) -> None:
    """What a Gateway controller writes in status.parents."""
    world.kube.objects[(NS, "HTTPRoute", "site")]["status"] = {
        "parents": [
            {
                "parentRef": {"name": "public", "namespace": "gateways"},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True",
                        "reason": "Accepted",
                        "observedGeneration": generation,
                    },
                    {
                        "type": "ResolvedRefs",
                        "status": "True",
                        "reason": "ResolvedRefs",
                        "observedGeneration": generation,
                    },
                ]
                if condition == "none"
                else [
                    {
                        "type": condition,
                        "status": status,
                        "reason": reason,
                        "message": f"{reason} says the controller",
                        "observedGeneration": generation,
                    },
                    {
                        "type": "Accepted" if condition != "Accepted" else "ResolvedRefs",
                        "status": "True",
                        "reason": "Fine",
                        "observedGeneration": generation,
                    },
                ],
            }
        ]
    }


# --- the pure logic


def test_every_rule_with_backends_is_selected_without_a_selector() -> None:
    """A redirect rule has no backend: it sends no traffic to the application."""
    found = selected_rules(route(), RouteSelection("site"))
    assert [(loc["index"], loc["name"]) for loc, _ in found] == [(0, "api"), (1, "search"), (3, "")]


def test_a_selector_picks_rules_by_name() -> None:
    found = selected_rules(route(), RouteSelection("site", ("search",)))
    assert [loc["name"] for loc, _ in found] == ["search"]


def test_switch_then_restore_gives_back_exactly_what_was_there() -> None:
    """Weights, backendRef filters, namespaces: all put back; rule filters never touched."""
    before = route()
    saved = record(before, RouteSelection("site"), MAINTENANCE)
    switched = copy.deepcopy(before)
    for location, refs in to_maintenance(switched, saved).changes:
        switched["spec"]["rules"][location["index"]]["backendRefs"] = refs
    rules = switched["spec"]["rules"]
    assert [r.get("backendRefs") for r in rules] == [
        [MAINTENANCE],
        [MAINTENANCE],
        None,
        [MAINTENANCE],
    ]
    assert rules[0]["filters"] == before["spec"]["rules"][0]["filters"]
    assert to_maintenance(switched, saved).changes == []  # idempotent
    plan = to_original(switched, saved)
    for location, refs in plan.changes:
        switched["spec"]["rules"][location["index"]]["backendRefs"] = refs
    assert switched == before
    assert plan.theirs == [] and plan.moved == []


def test_maintenance_is_recognised_with_or_without_the_api_servers_defaults() -> None:
    assert serves_maintenance([{"name": "maintenance-page", "port": 80}], MAINTENANCE)
    assert not serves_maintenance([{"name": "maintenance-page", "port": 81}], MAINTENANCE)
    assert not serves_maintenance([MAINTENANCE, WEB_REFS[0]], MAINTENANCE)
    assert not serves_maintenance([], MAINTENANCE)


def test_a_rule_changed_during_maintenance_is_drift_left_alone() -> None:
    before = route()
    saved = record(before, RouteSelection("site"), MAINTENANCE)
    now = copy.deepcopy(before)
    now["spec"]["rules"][0]["backendRefs"] = [{"name": "hotfix", "port": 8080}]
    now["spec"]["rules"][1]["backendRefs"] = [copy.deepcopy(MAINTENANCE)]
    now["spec"]["rules"][3]["matches"] = [{"path": {"type": "Exact", "value": "/"}}]
    plan = to_original(now, saved)
    assert [loc["name"] for loc, _ in plan.changes] == ["search"]
    assert plan.theirs == [
        "rule 'api' now sends traffic to Service hotfix:8080 (was Service backend:8080 weight "
        "90, Service backend-canary:8080 weight 10), left as is"
    ]
    assert plan.moved == ["rules[3]"]


def test_refusals_name_the_parent_and_the_reason_at_the_generation_asked() -> None:
    world = world_with_route()
    report(world, 1, "ResolvedRefs", "False", "BackendNotFound")
    stored = world.kube.stored("HTTPRoute", "site")
    assert refusals(stored) == [
        "HTTPRoute 'site': Gateway gateways/public reports ResolvedRefs=False "
        "(BackendNotFound: BackendNotFound says the controller)"
    ]
    assert refusals(stored, generation=2) == []


@pytest.mark.parametrize(
    ("grant_args", "allowed"),
    [
        ({}, True),
        ({"name": None}, True),  # every Service of the namespace
        ({"name": "other"}, False),
        ({"from_namespace": "elsewhere"}, False),
    ],
)
def test_a_reference_grant_must_name_the_routes_namespace_and_the_service(
    grant_args: dict[str, Any], allowed: bool
) -> None:
    assert granted([grant(**grant_args)], NS, SHARED_REFS[0]) is allowed


def test_ingress_backends_the_operator_cannot_restore_are_named() -> None:
    ingress = {
        "spec": {
            "defaultBackend": {
                "resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "static"}
            },
            "rules": [
                {
                    "host": "a.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/old",
                                "backend": {
                                    "service": {
                                        "name": "ssl-redirect",
                                        "port": {"name": "use-annotation"},
                                    }
                                },
                            },
                            {
                                "path": "/",
                                "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                            },
                        ]
                    },
                }
            ],
        }
    }
    assert not_understood(ingress) == [
        "defaultBackend is served by resource Bucket/static",
        "a.example/old is the action 'ssl-redirect' (port name use-annotation, read from the "
        "Ingress's annotations)",
    ]


# --- the steps


def test_enable_saves_every_rule_before_the_patch_and_disable_restores_the_whole_spec() -> None:
    world = world_with_route()
    spec = routes_spec()
    before = copy.deepcopy(world.kube.stored("HTTPRoute", "site")["spec"])
    outcome = EnableMaintenance().run(world.ctx(spec))
    assert isinstance(outcome, Done), outcome
    assert "HTTPRoute site (3 rule(s)) now served by maintenance-page:http" in outcome.message
    assert world.events() == ["persist_saved", "patch"]
    assert world.saved["httpRoutes"]["site"]["maintenance"] == MAINTENANCE  # the port by number
    assert [r.get("backendRefs") for r in rules_of(world)] == [
        [MAINTENANCE],
        [MAINTENANCE],
        None,
        [MAINTENANCE],
    ]
    patch = world.kube.patches[-1]
    assert patch.body["metadata"] == {"resourceVersion": "1"}
    assert EnableMaintenance().run(world.ctx(spec)) == outcome  # idempotent: no new patch
    assert world.events() == ["persist_saved", "patch"]
    done = DisableMaintenance().run(world.ctx(spec))
    assert isinstance(done, Done) and not done.warnings, done
    assert world.kube.stored("HTTPRoute", "site")["spec"] == before


def test_a_crash_between_save_and_patch_keeps_the_first_record() -> None:
    world = world_with_route()
    spec = routes_spec()
    world.kube.fail_next_patch = ApiError(503, "ServiceUnavailable", "etcd leader changed")
    with pytest.raises(ApiError):
        EnableMaintenance().run(world.ctx(spec))
    saved = copy.deepcopy(world.saved)
    EnableMaintenance().run(world.ctx(spec))
    assert world.saved == saved
    assert saved["httpRoutes"]["site"]["rules"][0]["backendRefs"] == API_REFS


def test_only_the_selected_rules_are_switched() -> None:
    world = world_with_route()
    spec = routes_spec({"name": "site", "rules": ["api"]})
    EnableMaintenance().run(world.ctx(spec))
    assert [r.get("backendRefs") for r in rules_of(world)] == [
        [MAINTENANCE],
        SHARED_REFS,
        None,
        WEB_REFS,
    ]


def test_disable_leaves_drift_alone_and_reports_it() -> None:
    world = world_with_route()
    spec = routes_spec()
    EnableMaintenance().run(world.ctx(spec))
    route_now = world.kube.stored("HTTPRoute", "site")
    route_now["spec"]["rules"][3]["backendRefs"] = [{"name": "frontend-hotfix", "port": 3000}]
    done = DisableMaintenance().run(world.ctx(spec))
    assert isinstance(done, Done)
    assert done.warnings == (
        "HTTPRoute site rules[3] now sends traffic to Service frontend-hotfix:3000 (was Service "
        "frontend:3000), left as is",
    )
    assert rules_of(world)[3]["backendRefs"] == [{"name": "frontend-hotfix", "port": 3000}]
    assert rules_of(world)[0]["backendRefs"] == API_REFS


def test_enable_fails_when_a_rule_moved_since_the_record() -> None:
    world = world_with_route()
    spec = routes_spec()
    world.ledger.save("httpRoutes", "site", record(route(), RouteSelection("site"), MAINTENANCE))
    world.kube.stored("HTTPRoute", "site")["spec"]["rules"].pop(0)
    outcome = EnableMaintenance().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert "HTTPRoute 'site' changed while it was being switched" in outcome.message
    assert "rule 'api'" in outcome.message


def test_no_controller_means_no_wait() -> None:
    world = world_with_route()
    assert isinstance(EnableMaintenance().run(world.ctx(routes_spec())), Done)


def test_enable_waits_for_the_controller_then_fails_on_its_refusal() -> None:
    """A controller reported on the route: its verdict on the switched one is awaited."""
    world = world_with_route()
    report(world, 1, "none", "True", "")
    spec = routes_spec()
    waiting = EnableMaintenance().run(world.ctx(spec))
    assert isinstance(waiting, Wait), waiting
    report(world, 2, "ResolvedRefs", "False", "RefNotPermitted")
    failed = EnableMaintenance().run(world.ctx(spec))
    assert isinstance(failed, Fail), failed
    assert (
        "the Gateway does not serve HTTPRoute 'site' switched to Service maintenance-page:80"
        in (failed.message)
    )
    assert "Gateway gateways/public reports ResolvedRefs=False (RefNotPermitted" in failed.message
    assert "status.saved.httpRoutes.site" in failed.message
    assert rules_of(world)[0]["backendRefs"] == [MAINTENANCE]  # stays switched


def test_enable_goes_on_when_the_controller_accepts_or_is_silent_too_long() -> None:
    world = world_with_route()
    report(world, 1, "none", "True", "")
    spec = routes_spec()
    assert isinstance(EnableMaintenance().run(world.ctx(spec)), Wait)
    late = world.ctx(spec, started=T0 - timedelta(seconds=route_checks.READBACK_SECONDS + 1))
    unconfirmed = EnableMaintenance().run(late)
    assert isinstance(unconfirmed, Done)
    assert unconfirmed.warnings == (
        "HTTPRoute site: no Gateway controller reported on generation 2 within 10s",
    )
    report(world, 2, "none", "True", "")
    assert EnableMaintenance().run(world.ctx(spec)).warnings == ()  # type: ignore[union-attr]


def test_monitor_breach_puts_the_route_back_on_maintenance() -> None:
    world = world_with_route()
    spec = routes_spec()
    EnableMaintenance().run(world.ctx(spec))
    DisableMaintenance().run(world.ctx(spec))
    switched, notes = switch_to_maintenance(world.ctx(spec))
    assert switched == ["HTTPRoute site"] and notes == []
    assert rules_of(world)[0]["backendRefs"] == [MAINTENANCE]


# --- Preflight


def preflight(world: World, spec: RollbackSpec) -> Fail | Done:
    outcome = Preflight([EnableMaintenance.preflight]).run(world.ctx(spec, Targets()))
    assert isinstance(outcome, Fail | Done)
    return outcome


def test_preflight_accepts_a_sound_route_and_records_it_as_a_target() -> None:
    world = world_with_route()
    outcome = preflight(world, routes_spec())
    assert isinstance(outcome, Done), outcome
    assert world.targets_written[0]["httpRoutes"] == ["site"]


def test_preflight_reads_each_route_and_the_service_once_for_the_switch() -> None:
    """Preflight's parallel reads serve its route checks and takeover check, and
    EnableMaintenance switches from them (the patch carries the version read): the next read
    of the route is the Gateway's verdict, after the switch."""
    world = world_with_route()
    world.seen = Seen()
    reads: list[str] = []
    for kind in ("http_route", "service"):
        original = getattr(world.kube, kind)
        setattr(
            world.kube,
            kind,
            lambda ns, name, kind=kind, original=original: reads.append(kind) or original(ns, name),
        )
    spec = routes_spec()
    assert isinstance(preflight(world, spec), Done)
    assert sorted(reads) == ["http_route", "service"]
    reads.clear()
    assert isinstance(EnableMaintenance().run(world.ctx(spec)), Done)
    assert reads == ["http_route"]  # the read-back
    (switch,) = [p for p in world.kube.patches if "/httproutes/" in p.path]
    assert switch.body["metadata"]["resourceVersion"] == "1"

    # Changed since Preflight read it: the switch is refused, and the next run reads again.
    world = world_with_route()
    world.seen = Seen()
    assert isinstance(preflight(world, spec), Done)
    world.kube.changed("HTTPRoute", "site")
    with pytest.raises(ApiError) as conflict:
        EnableMaintenance().run(world.ctx(spec))
    assert conflict.value.status == 409
    assert isinstance(EnableMaintenance().run(world.ctx(spec)), Done)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda w: w.kube.delete("HTTPRoute", "site"),
            "HTTPRoute 'site' not found",
        ),
        (
            lambda w: w.kube.objects.pop(("shared", "ReferenceGrant", "from-lawyershub")),
            "HTTPRoute 'site' refers to Service shared/search:9200 in another namespace, and no "
            "ReferenceGrant in namespace 'shared' lets HTTPRoutes of namespace 'lawyershub' refer "
            "to it, so the Gateway would refuse the route restored: create one there with from "
            "[{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: lawyershub}] and to "
            "[{group: '', kind: Service, name: search}]",
        ),
        (
            lambda w: w.kube.unreadable_namespaces.add("shared"),
            "the operator may not list the ReferenceGrants of namespace 'shared'",
        ),
        (
            lambda w: report(w, 1, "Accepted", "False", "NotAllowedByListeners"),
            "HTTPRoute 'site': Gateway gateways/public reports Accepted=False "
            "(NotAllowedByListeners",
        ),
        (
            lambda w: rules_of(w)[3].update(backendRefs=[copy.deepcopy(MAINTENANCE)]),
            "HTTPRoute 'site' already sends traffic to the maintenance page and no earlier "
            "RollbackRequest recorded its original state: restore it by hand first",
        ),
    ],
)
def test_preflight_refuses_and_changes_nothing(change: Any, expected: str) -> None:
    world = world_with_route()
    change(world)
    outcome = preflight(world, routes_spec())
    assert isinstance(outcome, Fail)
    assert expected in outcome.message
    assert world.kube.patches == [] and "httpRoutes" not in world.saved


def test_preflight_refuses_unknown_and_backendless_rules() -> None:
    world = world_with_route()
    outcome = preflight(
        world, routes_spec({"name": "site", "rules": ["api", "checkout", "old-docs"]})
    )
    assert isinstance(outcome, Fail)
    assert (
        "HTTPRoute 'site' has no rule named 'checkout' (its named rules: api, old-docs, search)"
        in outcome.message
    )
    assert "HTTPRoute 'site' rule 'old-docs' has no backendRefs to switch" in outcome.message


def test_preflight_refuses_ingress_backends_it_cannot_restore() -> None:
    world = lawyershub(
        default_backend={"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "s"}}
    )
    outcome = preflight(world, make_spec())
    assert isinstance(outcome, Fail)
    assert (
        "Ingress 'lawyershub' has backends the operator cannot switch and restore safely: "
        "defaultBackend is served by resource Bucket/s" in outcome.message
    )
    assert world.kube.patches == []


def test_a_failed_run_names_the_routes_left_on_maintenance() -> None:
    status = Status(saved={"httpRoutes": {"site": {}}, "ingresses": {"lawyershub": {}}})
    assert _left_as(status, routes_spec()).startswith(
        "The maintenance page is still on (Ingress lawyershub; HTTPRoute site)."
    )


def test_restore_traffic_puts_back_the_rules_still_on_maintenance_and_leaves_drift() -> None:
    """`kubectl rollback restore-traffic` after a failed run, as DisableMaintenance would."""
    world = world_with_route()
    spec = routes_spec()
    EnableMaintenance().run(world.ctx(spec))
    now = world.kube.stored("HTTPRoute", "site")
    now["spec"]["rules"][3]["backendRefs"] = [{"name": "frontend-hotfix", "port": 3000}]
    request = {
        "metadata": {"name": "golive", "namespace": NS},
        "spec": {
            "reason": "r",
            "trigger": "Manual",
            "traffic": {
                "httpRoutes": [{"name": "site"}],
                "maintenanceBackend": {"service": "maintenance-page", "port": "http"},
            },
            "workloads": [{"deployment": "backend"}],
        },
        "status": {"phase": "Failed", "saved": copy.deepcopy(world.saved)},
    }
    assert ("httpRoutes", "site") in recover.touched(request)
    plan = recover.plan_traffic(request, [request], {}, {}, {"site": copy.deepcopy(now)})
    route_read, changes = plan.routes["site"]
    assert [loc["name"] for loc, _ in changes] == ["api", "search"]
    assert route_read["metadata"]["resourceVersion"] == now["metadata"]["resourceVersion"]
    assert plan.summary() == "HTTPRoute site (2 rule(s))"
    assert plan.left == [
        "HTTPRoute site rules[3] now sends traffic to Service frontend-hotfix:3000 (was Service "
        "frontend:3000), left as is"
    ]


def test_a_new_request_takes_over_the_record_a_failed_one_left_and_restores_exactly() -> None:
    """The failed run left the route on the maintenance page: the next request must restore the
    true originals from that run's record, not "originals" read from the switched route."""
    first = world_with_route()
    before = copy.deepcopy(first.kube.stored("HTTPRoute", "site")["spec"])
    EnableMaintenance().run(first.ctx(routes_spec()))
    first.kube.add(
        "RollbackRequest",
        {
            "metadata": {"name": "golive"},
            "spec": {"dryRun": False},
            "status": {
                "phase": "Failed",
                "finishedAt": "2026-01-10T03:10:00Z",
                "saved": copy.deepcopy(first.saved),
                "steps": [{"name": "DisableMaintenance", "state": "Pending"}],
            },
        },
    )
    second = World()
    second.kube = first.kube
    outcome = preflight(second, routes_spec())
    assert isinstance(outcome, Done), outcome
    assert "takes over the original state recorded for HTTPRoute site (from golive)" in (
        outcome.message
    )
    assert second.saved["httpRoutes"] == first.saved["httpRoutes"]
    assert isinstance(EnableMaintenance().run(second.ctx(routes_spec())), Done)
    assert isinstance(DisableMaintenance().run(second.ctx(routes_spec())), Done)
    assert second.kube.stored("HTTPRoute", "site")["spec"] == before
