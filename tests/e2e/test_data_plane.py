"""Runbook §2.1 where customers see it: a client sending requests through the local cluster's
proxy (Traefik, cluster/up.sh --proxy) for as long as a rollback lasts sees the bad release,
then only the maintenance page, then only the restored release, and never a connection error
or a 5xx, even when the operator is SIGKILLed while the site is on maintenance.

The proxy applies a change of an Ingress or an HTTPRoute a moment after the API server has it
(its watch, then its configuration reload): the switch is "observed" with the first
maintenance page the client gets; from then on no answer of the application may come until
the switch back, which is observed the same way. How far behind the object the proxy was is
measured and bounded too.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from standins.data_plane import MAINTENANCE, Proxy, Visitor, data_plane
from tests.e2e.lawyershub import (
    Operator,
    create_request,
    deploy_app,
    get_request,
    ledger,
    on_maintenance,
    wait_phase,
)
from tests.e2e.proxy import (
    host_of,
    http_route,
    object_switches,
    serve_ingress,
)

pytestmark = pytest.mark.e2e

BAD, RESTORED = "2026.01.10-golive", "stable-last-known"
# How far behind the object the proxy may serve (its watch and reload take a fraction of a
# second here; this bounds it without making the test a benchmark), and the poll's own lag.
PROPAGATION, POLL = 5.0, 0.25


@pytest.fixture(scope="session")
def proxy(kubeconfig: str) -> Proxy:
    return Proxy.of_cluster(kubeconfig)


def assert_seen_through_the_proxy(visitor: Visitor, switches: list[float]) -> None:
    """From the first answer of the bad release: only the bad release, then only the
    maintenance page, then only the restored release; no error; each switch served after the
    object changed and within PROPAGATION of it."""
    served = visitor.first(BAD, timeout=0).at
    assert visitor.failures(since=served) == [], visitor.failures(since=served)[:5]
    assert visitor.phases(since=served) == [BAD, MAINTENANCE, RESTORED]
    assert len(switches) == 2, f"the object changed {len(switches)} times, not 2"
    to_maintenance = visitor.first(MAINTENANCE, timeout=0)
    back = visitor.first(RESTORED, timeout=0)
    for label, served, changed in (
        ("maintenance", to_maintenance.at, switches[0]),
        ("restored", back.at, switches[1]),
    ):
        lag = served - changed
        print(f"{label}: served {lag * 1000:.0f} ms after the object changed")
        assert -POLL < lag < PROPAGATION, f"{label} served {lag:.2f}s after the object changed"


def rollback_through_the_proxy(
    api: client.ApiClient,
    namespace: str,
    visitor: Visitor,
    on_maintenance_now: object,
    *,
    operator: Operator | None = None,
    name: str = "rollback",
    **spec: object,
) -> dict[str, object]:
    """Creates the request while `visitor` sends requests; with `operator`, SIGKILLs it as soon
    as the maintenance page is served, and starts it again. Returns the finished request."""
    visitor.first(BAD)
    with object_switches(on_maintenance_now) as switches:  # type: ignore[arg-type]
        create_request(api, namespace, name, **spec)
        if operator is not None:
            visitor.first(MAINTENANCE)
            operator.kill()
            killed_at = ledger(get_request(api, namespace, name))
            assert killed_at.get("DisableMaintenance", {}).get("state") != "Succeeded"
            operator.start()
        done = wait_phase(api, namespace, name, "Succeeded", "Failed", timeout=180)
        assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
        back = visitor.first(RESTORED, timeout=30)
        visitor.first(RESTORED, after=back.at + 0.5)  # and it stays
    assert_seen_through_the_proxy(visitor, switches)
    return done


@pytest.mark.parametrize("sigkill_on_maintenance", [False, True], ids=["plain", "sigkill"])
def test_ingress_rollback_seen_through_the_proxy(
    api: client.ApiClient,
    namespace: str,
    crds_installed: None,
    operator: Operator,
    proxy: Proxy,
    sigkill_on_maintenance: bool,
) -> None:
    # Slow rollouts keep the site on maintenance for seconds: the kill lands there. The Services
    # are served by the stand-ins before the proxy is given the Ingress: it never has a kwok
    # pod's address to send a request to.
    deploy_app(api, namespace, min_ready_seconds={"backend": 2, "frontend": 2})
    with (
        data_plane(api, namespace),
        Visitor(proxy, serve_ingress(api, namespace, proxy)) as visitor,
    ):
        rollback_through_the_proxy(
            api,
            namespace,
            visitor,
            lambda: on_maintenance(api, namespace),
            operator=operator if sigkill_on_maintenance else None,
        )
    assert operator.starts == (2 if sigkill_on_maintenance else 1)


def _route_on_maintenance(api: client.ApiClient, namespace: str) -> bool:
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "lawyershub"
    )
    refs = [ref for rule in route["spec"]["rules"] for ref in rule.get("backendRefs", [])]
    return all(ref["name"] == "maintenance-page" for ref in refs)


def _create_route(api: client.ApiClient, namespace: str, proxy: Proxy) -> str:
    """The HTTPRoute for the test's host, through the proxy's Gateway; returns that host."""
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", http_route(namespace, proxy)
    )
    return host_of(namespace)


def test_http_route_switched_by_hand_is_served_through_the_gateway(
    api: client.ApiClient, namespace: str, proxy: Proxy
) -> None:
    """The proxy's Gateway serves HTTPRoutes, and follows a change of their backendRefs with no
    failed request: what a rollback of an HTTPRoute relies on, without the operator."""
    deploy_app(api, namespace)
    routes = client.CustomObjectsApi(api)
    with (
        data_plane(api, namespace),
        Visitor(proxy, _create_route(api, namespace, proxy)) as visitor,
    ):
        served = visitor.first(BAD)
        with object_switches(lambda: _route_on_maintenance(api, namespace)) as switches:
            routes.patch_namespaced_custom_object(
                "gateway.networking.k8s.io",
                "v1",
                namespace,
                "httproutes",
                "lawyershub",
                {"spec": {"rules": [{"backendRefs": [{"name": "maintenance-page", "port": 80}]}]}},
            )
            first = visitor.first(MAINTENANCE)
            visitor.first(MAINTENANCE, after=first.at + 0.5)
    assert visitor.failures(since=served.at) == [], visitor.failures(since=served.at)[:5]
    assert visitor.phases(since=served.at) == [BAD, MAINTENANCE]
    assert len(switches) == 1
    assert -POLL < first.at - switches[0] < PROPAGATION


@pytest.mark.parametrize("sigkill_on_maintenance", [False, True], ids=["plain", "sigkill"])
def test_http_route_rollback_seen_through_the_proxy(
    api: client.ApiClient,
    namespace: str,
    crds_installed: None,
    operator: Operator,
    proxy: Proxy,
    sigkill_on_maintenance: bool,
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 2, "frontend": 2})
    with (
        data_plane(api, namespace),
        Visitor(proxy, _create_route(api, namespace, proxy)) as visitor,
    ):
        rollback_through_the_proxy(
            api,
            namespace,
            visitor,
            lambda: _route_on_maintenance(api, namespace),
            operator=operator if sigkill_on_maintenance else None,
            traffic={
                "httpRoutes": [{"name": "lawyershub"}],
                "maintenanceBackend": {"service": "maintenance-page", "port": 80},
            },
        )
