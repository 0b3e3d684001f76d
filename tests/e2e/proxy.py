"""The local cluster's proxy (cluster/proxy.sh) for the tests and the benchmark: where it is,
the sample application served through it by stand-ins (standins/data_plane.py), and a client
that sends requests through it for as long as a rollback lasts and records every answer."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from standins.local import wait_until

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

    def phases(self) -> list[str]:
        """The labels seen, each run of equal labels once: [bad tag, MAINTENANCE, tag, ...]."""
        out: list[str] = []
        for answer in list(self.answers):
            if not out or out[-1] != answer.label:
                out.append(answer.label)
        return out

    def failures(self) -> list[Answer]:
        return [a for a in list(self.answers) if a.failed]


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


def watch_backend(read: Callable[[], bool], stop: threading.Event, seen: list[float]) -> None:
    """Polls `read` (is the object pointing at the maintenance page?) and appends the time of
    every change it sees to `seen`: when the switch and the switch back are observed on the
    object, to compare with what the proxy served."""
    state = read()
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
    thread = threading.Thread(target=watch_backend, args=(read, stop, seen), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)
