"""HTTPRoutes (Gateway API) end to end: the operator process against the real API server with
the Gateway API's standard-channel CRDs (cluster/up.sh installs them in every local cluster).

No Gateway controller runs here: where a test needs one, it writes the route's status.parents
through the status subresource, as a controller would. The routes work with any
implementation: only their spec is asserted.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ProtocolError

from standins.local import wait_until
from tests.e2e.lawyershub import (
    Operator,
    conditions,
    create_request,
    deploy_app,
    fresh_namespace,
    ledger,
    refusal,
    run_request,
    snapshot,
    wait_phase,
)
from tests.e2e.people import DEVELOPER, as_person, install_approval_policy
from tests.e2e.test_plugin import kubectl_rollback

pytestmark = pytest.mark.e2e

GATEWAY = "gateway.networking.k8s.io"
# The maintenance Service of the sample (examples/lawyershub.yaml), as a switched rule has it:
# the request names its port `http`, a backendRef has a number.
MAINTENANCE_REF = {
    "group": "",
    "kind": "Service",
    "name": "maintenance-page",
    "port": 80,
    "weight": 1,
}
HTTP_ROUTES = [{"name": "site"}]
ROUTES_ONLY = {
    "httpRoutes": HTTP_ROUTES,
    "maintenanceBackend": {"service": "maintenance-page", "port": "http"},
}


def site_route(shared: str) -> dict[str, Any]:
    """The sample served through a Gateway: a weighted canary with filters on a rule and on a
    backendRef, a search backend in another namespace, a redirect, and a catch-all rule."""
    header = {"type": "RequestHeaderModifier", "requestHeaderModifier": {}}
    return {
        "apiVersion": f"{GATEWAY}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "site"},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
            "hostnames": ["lawyershub.example"],
            "rules": [
                {
                    "name": "api",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [
                        header
                        | {"requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}
                    ],
                    "backendRefs": [
                        {"name": "backend", "port": 8080, "weight": 90},
                        {
                            "name": "frontend",
                            "port": 80,
                            "weight": 10,
                            "filters": [
                                header
                                | {
                                    "requestHeaderModifier": {
                                        "set": [{"name": "x-canary", "value": "1"}]
                                    }
                                }
                            ],
                        },
                    ],
                },
                {
                    "name": "search",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/search"}}],
                    "backendRefs": [{"name": "search", "namespace": shared, "port": 9200}],
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
                    "backendRefs": [{"name": "frontend", "port": 80}],
                },
            ],
        },
    }


def reference_grant(route_namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "routes-of-lawyershub"},
        "spec": {
            "from": [{"group": GATEWAY, "kind": "HTTPRoute", "namespace": route_namespace}],
            "to": [{"group": "", "kind": "Service", "name": "search"}],
        },
    }


def routes_api(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api: client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plural = {"HTTPRoute": "httproutes", "ReferenceGrant": "referencegrants"}[obj["kind"]]
    version = obj["apiVersion"].split("/")[1]
    created: dict[str, Any] = routes_api(api).create_namespaced_custom_object(
        GATEWAY, version, namespace, plural, obj
    )
    return created


def read_route(api: client.ApiClient, namespace: str, name: str = "site") -> dict[str, Any]:
    route: dict[str, Any] = routes_api(api).get_namespaced_custom_object(
        GATEWAY, "v1", namespace, "httproutes", name
    )
    return route


def report_status(
    api: client.ApiClient, namespace: str, generation: int, refused: tuple[str, str] | None
) -> None:
    """What a Gateway controller writes for its parent: Accepted and ResolvedRefs at
    `generation`, one of them False with a reason when `refused` = (type, reason)."""
    conditions = []
    for kind in ("Accepted", "ResolvedRefs"):
        bad = refused is not None and refused[0] == kind
        conditions.append(
            {
                "type": kind,
                "status": "False" if bad else "True",
                "reason": refused[1] if bad and refused else kind,
                "message": f"{refused[1]} for a backendRef" if bad and refused else "",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-10T03:00:00Z",
            }
        )
    status = {
        "parents": [
            {
                "parentRef": {"name": "public", "namespace": "gateways", "sectionName": "https"},
                "controllerName": "example.com/gateway-controller",
                "conditions": conditions,
            }
        ]
    }
    routes_api(api).patch_namespaced_custom_object_status(
        GATEWAY, "v1", namespace, "httproutes", "site", {"status": status}
    )


@pytest.fixture
def shared(api: client.ApiClient) -> Iterator[str]:
    """Another team's namespace, holding the search Service the route sends /search to."""
    with fresh_namespace(api) as name:
        client.CoreV1Api(api).create_namespaced_service(
            name,
            {
                "metadata": {"name": "search"},
                "spec": {"ports": [{"name": "http", "port": 9200}], "selector": {"app": "search"}},
            },
        )
        yield name


@pytest.fixture
def site(api: client.ApiClient, app: str, shared: str) -> dict[str, Any]:
    """The route and the grant that lets it reach the search Service, as the API server
    stores them (defaults applied)."""
    create(api, shared, reference_grant(app))
    create(api, app, site_route(shared))
    return read_route(api, app)


class RouteRecorder:
    """Every version of the namespace's HTTPRoutes the API server stores, in order."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.versions: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        objects = routes_api(api)
        since = objects.list_namespaced_custom_object(GATEWAY, "v1", namespace, "httproutes")[
            "metadata"
        ]["resourceVersion"]
        args = (objects.list_namespaced_custom_object, GATEWAY, "v1", namespace, "httproutes")
        threading.Thread(target=self._follow, args=(args, since), daemon=True).start()

    def _follow(self, args: tuple[Any, ...], since: str) -> None:
        try:
            for event in self._watch.stream(*args, resource_version=since, timeout_seconds=120):
                self.versions.append(event["object"])
        except ProtocolError:
            pass

    def specs(self) -> list[dict[str, Any]]:
        """The distinct specs, in order (a status write stores the same spec again)."""
        found: list[dict[str, Any]] = []
        for version in self.versions:
            if not found or version["spec"] != found[-1]:
                found.append(version["spec"])
        return found

    def stop(self) -> None:
        self._watch.stop()


def switched(spec: dict[str, Any], rules: tuple[int, ...]) -> dict[str, Any]:
    """`spec` with the backendRefs of `rules` replaced by the maintenance Service."""
    out = copy.deepcopy(spec)
    for index in rules:
        out["rules"][index]["backendRefs"] = [MAINTENANCE_REF]
    return out


def test_a_rollback_switches_the_route_and_restores_it_exactly(
    api: client.ApiClient, app: str, site: dict[str, Any], operator: Operator
) -> None:
    recorder = RouteRecorder(api, app)
    try:
        done = run_request(api, app, "routes", "Succeeded", timeout=120, traffic=ROUTES_ONLY)
        wait_until(lambda: len(recorder.specs()) >= 2, timeout=10, what="both writes watched")
    finally:
        recorder.stop()
    # During maintenance every rule with backends, the cross-namespace one included, was the
    # maintenance Service; the redirect rule and every matches and rule filter untouched.
    assert recorder.specs() == [switched(site["spec"], (0, 1, 3)), site["spec"]]
    after = read_route(api, app)
    assert after["spec"] == site["spec"]
    assert after["metadata"]["generation"] == site["metadata"]["generation"] + 2
    status = done["status"]
    assert status["targets"]["httpRoutes"] == ["site"]
    saved = status["saved"]["httpRoutes"]["site"]
    assert saved["maintenance"] == MAINTENANCE_REF
    assert [r["backendRefs"] for r in saved["rules"]] == [
        site["spec"]["rules"][i]["backendRefs"] for i in (0, 1, 3)
    ]
    steps = ledger(done)
    assert "HTTPRoute site (3 rule(s)) now served by" in steps["EnableMaintenance"]["message"]
    assert (
        "the backendRefs of 3 rule(s) of HTTPRoute site" in (steps["DisableMaintenance"]["message"])
    )


def test_a_rule_selector_switches_only_the_named_rules(
    api: client.ApiClient, app: str, site: dict[str, Any], operator: Operator
) -> None:
    recorder = RouteRecorder(api, app)
    try:
        traffic = ROUTES_ONLY | {"httpRoutes": [{"name": "site", "rules": ["api"]}]}
        run_request(api, app, "api-only", "Succeeded", timeout=120, traffic=traffic)
        wait_until(lambda: len(recorder.specs()) >= 2, timeout=10, what="both writes watched")
    finally:
        recorder.stop()
    assert recorder.specs() == [switched(site["spec"], (0,)), site["spec"]]


def _refused_in_preflight(
    api: client.ApiClient, namespace: str, name: str, **spec: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The request's Preflight message, and the site (and its route) before and after."""
    before, route_before = snapshot(api, namespace), read_route(api, namespace)
    failed = run_request(api, namespace, name, "Failed", **spec)
    steps = ledger(failed)
    assert steps["Preflight"]["state"] == "Failed"
    assert steps["EnableMaintenance"]["state"] == "Pending"
    after, route_after = snapshot(api, namespace), read_route(api, namespace)
    assert after == before
    assert route_after["spec"] == route_before["spec"]
    assert route_after["metadata"]["generation"] == route_before["metadata"]["generation"]
    assert "httpRoutes" not in (failed["status"].get("saved") or {})
    return steps["Preflight"]["message"], route_before, route_after


def test_a_route_its_gateway_does_not_serve_is_refused(
    api: client.ApiClient, app: str, site: dict[str, Any], operator: Operator
) -> None:
    report_status(api, app, site["metadata"]["generation"], ("ResolvedRefs", "BackendNotFound"))
    message, _, _ = _refused_in_preflight(api, app, "unresolved", traffic=ROUTES_ONLY)
    assert (
        "HTTPRoute 'site': Gateway gateways/public listener https reports ResolvedRefs=False "
        "(BackendNotFound: BackendNotFound for a backendRef)" in message
    )
    assert "Nothing was changed" in message


def test_a_cross_namespace_ref_without_its_reference_grant_is_refused(
    api: client.ApiClient, app: str, site: dict[str, Any], shared: str, operator: Operator
) -> None:
    routes_api(api).delete_namespaced_custom_object(
        GATEWAY, "v1beta1", shared, "referencegrants", "routes-of-lawyershub"
    )
    message, _, _ = _refused_in_preflight(api, app, "no-grant", traffic=ROUTES_ONLY)
    assert (
        f"HTTPRoute 'site' refers to Service {shared}/search:9200 in another namespace, and no "
        f"ReferenceGrant in namespace '{shared}' lets HTTPRoutes of namespace '{app}'" in message
    )
    assert f"create one there with from [{{group: {GATEWAY}, kind: HTTPRoute" in message


def test_ingress_backends_the_operator_cannot_restore_are_refused(
    api: client.ApiClient, app: str, site: dict[str, Any], operator: Operator
) -> None:
    net = client.NetworkingV1Api(api)
    net.create_namespaced_ingress(
        app,
        {
            "metadata": {"name": "static"},
            "spec": {
                "defaultBackend": {
                    "resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "assets"}
                }
            },
        },
    )
    action = {"service": {"name": "ssl-redirect", "port": {"name": "use-annotation"}}}
    net.create_namespaced_ingress(
        app,
        {
            "metadata": {"name": "legacy"},
            "spec": {
                "rules": [
                    {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": action}]}}
                ]
            },
        },
    )
    traffic = {
        "ingresses": ["lawyershub", "static", "legacy"],
        "maintenanceBackend": {"service": "maintenance-page", "port": 80},
    }
    message, _, _ = _refused_in_preflight(api, app, "not-understood", traffic=traffic)
    assert (
        "Ingress 'static' has backends the operator cannot switch and restore safely: "
        "defaultBackend is served by resource Bucket/assets" in message
    )
    assert (
        "Ingress 'legacy' has backends the operator cannot switch and restore safely: */ is the "
        "action 'ssl-redirect' (port name use-annotation" in message
    )


def test_a_sigkill_on_maintenance_then_a_restart_restores_the_route_exactly(
    api: client.ApiClient, namespace: str, crds_installed: None, shared: str, operator: Operator
) -> None:
    # Slow rollouts: the run stays on the maintenance page long enough to be killed there.
    deploy_app(api, namespace, min_ready_seconds={"backend": 2, "frontend": 2})
    create(api, shared, reference_grant(namespace))
    create(api, namespace, site_route(shared))
    before = read_route(api, namespace)
    create_request(api, namespace, "crash", traffic=ROUTES_ONLY)

    def on_maintenance() -> bool:
        rules = read_route(api, namespace)["spec"]["rules"]
        return rules[0]["backendRefs"] == [MAINTENANCE_REF]

    wait_until(on_maintenance, timeout=60, interval=0.05, what="the route on maintenance")
    operator.kill()
    assert on_maintenance()
    operator.start()
    done = wait_phase(api, namespace, "crash", "Succeeded", "Failed", timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    after = read_route(api, namespace)
    assert after["spec"] == before["spec"]
    # One write to switch, one to restore: the restarted run wrote nothing twice.
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 2
    saved = done["status"]["saved"]["httpRoutes"]["site"]["rules"]
    assert saved[0]["backendRefs"] == before["spec"]["rules"][0]["backendRefs"]


def _refused_by_the_gateway_once_switched(
    api: client.ApiClient, namespace: str, site: dict[str, Any], name: str
) -> dict[str, Any]:
    """A request run while a Gateway controller, which accepted the route as it was, refuses it
    once switched (ResolvedRefs=False at the new generation); the request as it ended."""
    report_status(api, namespace, site["metadata"]["generation"], None)
    stop = threading.Event()

    def controller() -> None:  # refuses the maintenance backend once it sees the switch
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            generation = read_route(api, namespace)["metadata"]["generation"]
            if generation > site["metadata"]["generation"]:
                report_status(api, namespace, generation, ("ResolvedRefs", "RefNotPermitted"))
                return
            stop.wait(0.05)

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    try:
        return run_request(api, namespace, name, "Failed", timeout=60, traffic=ROUTES_ONLY)
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_gateways_refusal_of_the_switched_route_fails_the_step(
    api: client.ApiClient, kubeconfig: str, app: str, site: dict[str, Any], operator: Operator
) -> None:
    """A controller reported on the route: once switched, its verdict is read back, and a
    refusal at the new generation fails EnableMaintenance with the site left off the app."""
    failed = _refused_by_the_gateway_once_switched(api, app, site, "refused")
    steps = ledger(failed)
    assert steps["EnableMaintenance"]["state"] == "Failed"
    message = steps["EnableMaintenance"]["message"]
    assert (
        "the Gateway does not serve HTTPRoute 'site' switched to Service maintenance-page:80"
        in (message)
    )
    assert "reports ResolvedRefs=False (RefNotPermitted" in message
    assert steps["RevertWorkloads"]["state"] == "Pending"
    # Safe: the route stays off the application, its originals in status.saved.
    assert read_route(api, app)["spec"] == switched(site["spec"], (0, 1, 3))
    assert conditions(failed)["MaintenanceActive"] == "True"
    # Once the Gateway is fixed, `kubectl rollback restore-traffic` puts the saved rules back.
    restored = kubectl_rollback(kubeconfig, "restore-traffic", "refused", "-n", app)
    assert restored.returncode == 0, restored.stderr
    assert "put back HTTPRoute site (3 rule(s))" in restored.stdout
    assert read_route(api, app)["spec"] == site["spec"]


def test_a_requester_cannot_reach_a_route_of_another_namespace(
    api: client.ApiClient, kubeconfig: str, app: str, site: dict[str, Any], operator: Operator
) -> None:
    """httpRoutes names routes of the request's own namespace: a namespaced name is refused by
    the API server, and a route that exists only elsewhere is "not found", untouched."""
    install_approval_policy(api, kubeconfig, app)  # the requester role, bound to developers
    developer = as_person(kubeconfig, DEVELOPER)
    other_namespace = site["spec"]["rules"][1]["backendRefs"][0]["namespace"]
    create(api, other_namespace, site_route(other_namespace) | {"metadata": {"name": "shop"}})
    theirs = read_route(api, other_namespace, "shop")
    message = refusal(
        developer,
        app,
        traffic=ROUTES_ONLY | {"httpRoutes": [{"name": f"{other_namespace}/shop"}]},
    )
    assert f'"{other_namespace}/shop" is not a valid HTTPRoute name' in message
    with pytest.raises(ApiException):  # nor can the developer write the route themselves
        routes_api(developer).patch_namespaced_custom_object(
            GATEWAY, "v1", other_namespace, "httproutes", "shop", {"spec": {"hostnames": []}}
        )

    create_request(
        developer, app, "elsewhere", traffic=ROUTES_ONLY | {"httpRoutes": [{"name": "shop"}]}
    )
    failed = wait_phase(api, app, "elsewhere", "Failed", "Succeeded", timeout=60)
    assert failed["status"]["phase"] == "Failed"
    assert "HTTPRoute 'shop' not found" in ledger(failed)["Preflight"]["message"]
    assert read_route(api, other_namespace, "shop") == theirs


def test_the_next_request_takes_over_the_record_the_failed_run_left(
    api: client.ApiClient, app: str, site: dict[str, Any], operator: Operator
) -> None:
    """The failed run left the route on the maintenance page: once the Gateway accepts it, a new
    request restores the true originals from that run's record, not the switched route."""
    _refused_by_the_gateway_once_switched(api, app, site, "refused")
    report_status(api, app, read_route(api, app)["metadata"]["generation"], None)  # fixed
    done = run_request(api, app, "again", "Succeeded", timeout=120, traffic=ROUTES_ONLY)
    assert (
        "takes over the original state recorded for HTTPRoute site (from refused)"
        in ledger(done)["Preflight"]["message"]
    )
    assert read_route(api, app)["spec"] == site["spec"]
