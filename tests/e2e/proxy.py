"""The local cluster's proxy for the e2e tests: each test's own host, its Ingress or
HTTPRoute given to the proxy, and the times at which an object switched (what the proxy served
is compared with them). The proxy's address, the client and the stand-ins behind the proxy are
in standins/data_plane.py (the demo and the benchmark use them too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from standins.data_plane import Proxy


def host_of(namespace: str) -> str:
    """Each test's own host name: the proxy serves every test's Ingress at once."""
    return f"{namespace}.lawyershub.example"


def serve_ingress(
    api: client.ApiClient, namespace: str, proxy: Proxy, name: str = "lawyershub"
) -> str:
    """Ingress `name` of the sample, given to the proxy (its IngressClass) under the test's own
    host; returns that host."""
    net = client.NetworkingV1Api(api)
    ingress = net.read_namespaced_ingress(name, namespace)
    ingress.spec.ingress_class_name = proxy.ingress_class
    for rule in ingress.spec.rules:
        rule.host = host_of(namespace)
    net.replace_namespaced_ingress(name, namespace, ingress)
    return host_of(namespace)


def http_route(namespace: str, proxy: Proxy, name: str = "lawyershub") -> dict[str, Any]:
    """An HTTPRoute sending the test's host to the frontend, through the proxy's Gateway."""
    gateway = proxy.gateway
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [
                {
                    "name": gateway["name"],
                    "namespace": gateway["namespace"],
                    "sectionName": gateway["listener"],
                }
            ],
            "hostnames": [host_of(namespace)],
            "rules": [{"backendRefs": [{"name": "frontend", "port": 80}]}],
        },
    }


def watch_backend(
    read: Callable[[], bool], stop: threading.Event, seen: list[float], state: bool
) -> None:
    """Polls `read` (is the object pointing at the maintenance page?) and appends the time of
    every change from `state` it sees to `seen`: when the switch and the switch back are
    observed on the object, to compare with what the proxy served."""
    while not stop.wait(0.02):
        now = read()
        if now != state:
            seen.append(time.monotonic())
            state = now


@contextmanager
def object_switches(read: Callable[[], bool]) -> Iterator[list[float]]:
    """The times at which `read` changed, recorded from a thread while the block runs."""
    seen: list[float] = []
    stop = threading.Event()
    # The state before the block, read here: read by the thread, it could already be the
    # block's change on a loaded machine, and that change would never be seen.
    state = read()
    thread = threading.Thread(target=watch_backend, args=(read, stop, seen, state), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)
