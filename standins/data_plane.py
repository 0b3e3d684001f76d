"""The application and its maintenance page as real HTTP servers on loopback, reached through
the local cluster's proxy (cluster/proxy.sh) by way of their Services, so that a rollback is
seen where customers see it: the bad release, then the maintenance page, then the release
restored (`make demo`, tests/e2e/test_data_plane.py, bench/data_plane.py), and a client that
sends requests through the proxy and records every answer (`Visitor`).

kwok's pods run nothing and their IPs route nowhere, so each Service the proxy reaches is made
selector-less and given one EndpointSlice of ours, naming the stand-in's loopback address
(`serve_service`). The API server refuses loopback addresses in IPv4 EndpointSlices, so ours
are of the (deprecated, still served) FQDN address type, holding "127.0.0.1": Traefik dials the
address as written whatever the type, and no traffic leaves the machine.

The application's stand-in answers with the image its Deployment's pods run, read from the API
server on every request: the pod template of the newest ReplicaSet with Ready pods, as a load
balancer sends traffic to Ready pods only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from standins.sites import SiteServer

MAINTENANCE_PAGE = (
    "<!doctype html><title>Lawyers Hub: maintenance</title>"
    "<h1>Lawyers Hub is down for maintenance</h1><p>We will be back shortly.</p>\n"
)
MANAGED_BY = "standins.rollback.lawyershub.io"  # the EndpointSlices written here


def running_image(
    apps: client.AppsV1Api, namespace: str, deployment: Any, container: str | None = None
) -> str | None:
    """The image (of `container`, else the first) that `deployment`'s Ready pods run: the
    newest of its ReplicaSets with Ready replicas, by the revision the Deployment controller
    numbers them with. None when no pod is Ready."""
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    ready = [
        rs
        for rs in apps.list_namespaced_replica_set(namespace, label_selector=selector).items
        if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])
        and (rs.status.ready_replicas or 0) > 0
    ]
    if not ready:
        return None
    revision = "deployment.kubernetes.io/revision"
    newest = max(ready, key=lambda rs: int((rs.metadata.annotations or {}).get(revision, 0)))
    containers = newest.spec.template.spec.containers
    image: str = next((c for c in containers if c.name == container), containers[0]).image
    return image


class ReleaseServer(SiteServer):
    """Deployment `name`'s stand-in: every request is answered with the image its Ready pods
    run, as JSON {"deployment", "image"}; 503 while none is Ready."""

    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, container: str | None = None
    ) -> None:
        apps = client.AppsV1Api(api)
        deployment = apps.read_namespaced_deployment(name, namespace)

        def answer(_headers: dict[str, str], _body: bytes) -> tuple[int, str]:
            image = running_image(apps, namespace, deployment, container)
            if image is None:
                return 503, json.dumps({"deployment": name, "error": "no Ready pod"})
            return 200, json.dumps({"deployment": name, "image": image})

        super().__init__(name, {}, default=answer)


class MaintenancePage(SiteServer):
    """The static maintenance page, answered to every request (200, as nginx serves a file)."""

    def __init__(self) -> None:
        super().__init__("maintenance-page", {}, default=lambda *_: (200, MAINTENANCE_PAGE))


def serve_service(
    api: client.ApiClient, namespace: str, service: str, address: str, *, timeout: float = 30
) -> None:
    """Service `service`'s traffic goes to `address` (host:port of a stand-in) and nowhere
    else: its selector is removed, the Endpoints and EndpointSlices Kubernetes wrote for it are
    deleted (no kwok pod IP is ever a backend), and one EndpointSlice names `address` for each
    of its ports. Idempotent."""
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    svc = core.read_namespaced_service(service, namespace)
    if svc.spec.selector:
        core.patch_namespaced_service(
            service,
            namespace,
            {"spec": {"selector": None}},
            _content_type="application/merge-patch+json",
        )
    of_service = f"kubernetes.io/service-name={service}"

    def not_ours() -> list[Any]:
        return [
            s
            for s in discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=of_service
            ).items
            if (s.metadata.labels or {}).get("endpointslice.kubernetes.io/managed-by") != MANAGED_BY
        ]

    def none_left() -> bool:
        # The Endpoints the selector had: mirrored into slices as long as it exists.
        for remove, name in [(core.delete_namespaced_endpoints, service)] + [
            (discovery.delete_namespaced_endpoint_slice, s.metadata.name) for s in not_ours()
        ]:
            try:
                remove(name, namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
        return not not_ours()

    wait_until(none_left, timeout=timeout, what=f"no EndpointSlice of Service {service}'s pods")
    host, port = address.rsplit(":", 1)
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-standin",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "FQDN",  # IPv4 may not be loopback; Traefik dials it as it is
        "endpoints": [{"addresses": [host], "conditions": {"ready": True, "serving": True}}],
        "ports": [
            {"name": p.name or "", "port": int(port), "protocol": "TCP"} for p in svc.spec.ports
        ],
    }
    try:
        discovery.create_namespaced_endpoint_slice(namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
        discovery.patch_namespaced_endpoint_slice(f"{service}-standin", namespace, body)


@contextmanager
def data_plane(api: client.ApiClient, namespace: str) -> Iterator[list[SiteServer]]:
    """The sample application's Services in `namespace` (examples/lawyershub.yaml) served by
    stand-ins: frontend and backend by a ReleaseServer each, maintenance-page by the
    MaintenancePage. The servers stop on exit; the Services keep our EndpointSlices (they go
    with the namespace)."""
    servers: list[SiteServer] = []
    try:
        servers += [ReleaseServer(api, namespace, name) for name in ("frontend", "backend")]
        servers.append(MaintenancePage())
        for server in servers:
            serve_service(api, namespace, server.name, server.address)
        yield servers
    finally:
        for server in servers:
            server.close()


# --- what a client of the proxy sees

MAINTENANCE = "maintenance"  # the label of a maintenance page answer; an app's is its image tag


@dataclass(frozen=True)
class Proxy:
    url: str
    ingress_class: str
    gateway: dict[str, str]  # namespace, name, listener

    @classmethod
    def of_cluster(cls, kubeconfig: str) -> Proxy:
        """The proxy `cluster/up.sh --proxy` started, from the proxy.json beside the
        kubeconfig (or the file ROLLBACK_E2E_PROXY names, for another cluster's proxy)."""
        path = Path(os.environ.get("ROLLBACK_E2E_PROXY") or Path(kubeconfig).parent / "proxy.json")
        if not path.exists():
            raise AssertionError(
                f"no proxy: {path} is missing; start the cluster with `cluster/up.sh --proxy`"
            )
        data = json.loads(path.read_text())
        return cls(data["url"], data["ingressClass"], data["gateway"])


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    status: int  # 0: no answer (connection error, timeout)
    label: str  # MAINTENANCE, an image tag, or what went wrong

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


def label_of(response: httpx.Response) -> str:
    if "down for maintenance" in response.text:
        return MAINTENANCE
    try:
        image = response.json().get("image")
    except ValueError:
        image = None
    return str(image).rsplit(":", 1)[-1] if image else f"HTTP {response.status_code}"


@dataclass
class Visitor:
    """A client sending GET / through the proxy for `host`, one request after another (every
    `interval` seconds), from a thread, recording every answer until stopped."""

    proxy: Proxy
    host: str
    interval: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Visitor:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.proxy.url, headers={"Host": self.host}, timeout=10) as c:
            while not self._stop.is_set():
                try:
                    response = c.get("/")
                    answer = Answer(time.monotonic(), response.status_code, label_of(response))
                except httpx.HTTPError as error:
                    answer = Answer(time.monotonic(), 0, f"{type(error).__name__}: {error}")
                self.answers.append(answer)
                self._stop.wait(self.interval)

    def first(self, label: str, *, after: float = 0.0, timeout: float = 60) -> Answer:
        """The first answer labelled `label` that arrived after `after`, waited for."""

        def found() -> Answer | None:
            return next((a for a in list(self.answers) if a.at > after and a.label == label), None)

        return wait_until(found, timeout=timeout, what=f"{label!r} through the proxy")

    def phases(self, since: float = 0.0) -> list[str]:
        """The labels seen from `since` on (the proxy answers 404 until it serves the host),
        each run of equal labels once: [bad tag, MAINTENANCE, tag, ...]."""
        out: list[str] = []
        for answer in list(self.answers):
            if answer.at >= since and (not out or out[-1] != answer.label):
                out.append(answer.label)
        return out

    def failures(self, since: float = 0.0) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= since and a.failed]
