"""The sample application the benchmarks roll back, examples/lawyershub.yaml, in namespaces of
their own; the RollbackRequest they create; and the cleanup after them."""

from __future__ import annotations

import copy
import functools
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import yaml

from bench.api import (
    BENCH_LABEL,
    GROUP,
    JSON,
    REPO_ROOT,
    VERSION,
    Api,
    deployment_path,
    hpa_path,
    ingress_path,
    request_path,
    service_path,
)
from bench.process import OperatorProcess
from rollback_operator.kube import ApiError
from rollback_operator.model import DEFAULT_TARGET_TAG, Phase

SAMPLE = REPO_ROOT / "examples" / "lawyershub.yaml"
# Left out of the sample: its namespace (each benchmark makes its own), and the maintenance
# page's Deployment: the operator only checks the Service, and leaving it out keeps the scale
# benchmark's pod count (and the fake node's load) lower.
LEFT_OUT = {("Namespace", "lawyershub"), ("Deployment", "maintenance-page")}
COLLECTIONS: dict[str, Callable[[str], str]] = {
    "Deployment": deployment_path,
    "Service": service_path,
    "Ingress": ingress_path,
    "HorizontalPodAutoscaler": hpa_path,
}
TERMINAL_PHASES = frozenset(phase for phase in Phase if phase.terminal)
MAINTENANCE_BACKEND: JSON = {"service": {"name": "maintenance-page", "port": {"number": 80}}}


@functools.cache
def _sample() -> tuple[JSON, ...]:
    docs = yaml.safe_load_all(SAMPLE.read_text())
    return tuple(d for d in docs if d and (d["kind"], d["metadata"]["name"]) not in LEFT_OUT)


def app_objects(ns: str) -> list[tuple[str, JSON]]:
    """(collection path, object) for the sample in `ns`, each labelled as the benchmark's: an
    Ingress with two paths, frontend and backend Deployments (the backend with a sidecar that
    the request leaves alone), their HPAs, and the maintenance Service."""
    objects = []
    for original in _sample():
        obj = copy.deepcopy(original)
        obj["metadata"]["namespace"] = ns
        obj["metadata"].setdefault("labels", {})[BENCH_LABEL] = "1"
        objects.append((COLLECTIONS[obj["kind"]](ns), obj))
    return objects


def rollback_request(ns: str, name: str = "golive-2026-01-10") -> JSON:
    """A request running the engine's steps only (no CDN, database, checks, watch or
    notifications, which reach outside the cluster), for namespace `ns`."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RollbackRequest",
        "metadata": {"name": name, "namespace": ns, "labels": {BENCH_LABEL: "1"}},
        "spec": {
            "reason": "Error rate 7.2 % for 15 min after the 2026-01-10 go-live",
            "trigger": "ErrorRate",
            "targetTag": DEFAULT_TARGET_TAG,
            "traffic": {
                "ingresses": ["lawyershub"],
                "maintenanceBackend": {"service": "maintenance-page", "port": 80},
            },
            "autoscaling": {"hpas": ["backend", "frontend"]},
            "workloads": [
                {"deployment": "backend", "containers": ["api"]},
                {"deployment": "frontend"},
            ],
            "rolloutTimeout": "10m",
        },
    }


def ingress_backends(ingress: JSON) -> list[JSON]:
    spec = ingress.get("spec", {})
    found = [spec["defaultBackend"]] if spec.get("defaultBackend") else []
    for rule in spec.get("rules") or []:
        found += [p["backend"] for p in (rule.get("http") or {}).get("paths") or []]
    return found


def in_maintenance(ingress: JSON) -> bool:
    """Every backend of the Ingress is the maintenance page: the moment the site is switched."""
    backends = ingress_backends(ingress)
    return bool(backends) and all(b == MAINTENANCE_BACKEND for b in backends)


def bench_namespaces(prefix: str, count: int) -> list[str]:
    """Fresh names, unique to this run, so no run ever meets another's leftovers."""
    token = uuid.uuid4().hex[:6]
    return [f"rbb-{prefix}-{token}-{i:03d}" for i in range(count)]


def create_apps(api: Api, namespaces: Iterable[str], workers: int = 16) -> None:
    """Creates each namespace with the sample application, then waits until it is rolled out."""

    def one(ns: str) -> None:
        api.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {BENCH_LABEL: "1"}},
            },
        )
        for collection, body in app_objects(ns):
            api.create(collection, body)

    names = list(namespaces)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, names))
    deadline = time.monotonic() + 300
    pending = names
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not rolled out in {pending[:5]}...")
        with ThreadPoolExecutor(workers) as pool:
            ready = list(pool.map(lambda n: rolled_out(api, n), pending))
        pending = [ns for ns, ok in zip(pending, ready, strict=True) if not ok]
        if pending:
            time.sleep(1)


def rolled_out(api: Api, ns: str, names: Iterable[str] = ("frontend", "backend")) -> bool:
    """Whether each Deployment's rollout is complete, as `kubectl rollout status` judges it."""
    return all(deployment_rolled_out(api.get(deployment_path(ns, name))) for name in names)


def deployment_rolled_out(deployment: JSON | None) -> bool:
    if deployment is None:
        return False
    status, wanted = deployment.get("status", {}), deployment["spec"].get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) >= wanted
        and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
        and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0)
    )


def delete_namespaces(api: Api, namespaces: Iterable[str], timeout: float = 300) -> list[str]:
    """Deletes the namespaces and waits until they are gone; returns those still there."""
    names = list(namespaces)
    for ns in names:
        try:
            api.delete(f"/api/v1/namespaces/{ns}")
        except ApiError as error:
            if error.status != 409:  # 409: already terminating
                raise
    deadline = time.monotonic() + timeout
    remaining = names
    while remaining and time.monotonic() < deadline:
        time.sleep(1)
        remaining = [ns for ns in remaining if api.get(f"/api/v1/namespaces/{ns}") is not None]
    return remaining


def strip_finalizers(api: Api, namespaces: Iterable[str]) -> int:
    """Releases requests whose operator is gone, so their namespaces can finish deleting."""
    released = 0
    for ns in namespaces:
        listed = api.get(request_path(ns)) or {}
        for item in listed.get("items", []):
            if item["metadata"].get("finalizers"):
                api.patch(
                    request_path(ns, item["metadata"]["name"]),
                    {"metadata": {"finalizers": None}},
                )
                released += 1
    return released


def cleanup(api: Api, namespaces: Iterable[str], operator: OperatorProcess | None) -> None:
    """Deletes the benchmark's requests, then its namespaces, then stops the operator.

    The requests go first and on their own, while the operator runs to release its finalizer
    on each: Kopf stops watching a namespace as soon as that namespace is terminating, so a
    request deleted along with its namespace may never be seen deleted, and its finalizer would
    hold the namespace forever. Whatever the operator has not released within a minute (or
    everything, without a live operator) is released here. Waiting for the namespaces to be
    gone keeps one benchmark's teardown out of the next one's figures.
    """
    names = [ns for ns in namespaces if api.get(f"/api/v1/namespaces/{ns}") is not None]
    for ns in names:
        api.delete(request_path(ns))
    deadline = time.monotonic() + 60
    held = names
    while held and operator is not None and operator.alive() and time.monotonic() < deadline:
        time.sleep(1)
        held = [ns for ns in held if (api.get(request_path(ns)) or {}).get("items")]
    released = strip_finalizers(api, held)
    if released and operator is not None:
        print(f"  cleanup: {released} request(s) kept the operator's finalizer; released")
    remaining = delete_namespaces(api, names, timeout=180)
    if operator is not None:
        operator.stop()
    if remaining:
        print(f"  cleanup: {len(remaining)} namespace(s) still terminating after 180 s")


def remove_leftovers(api: Api) -> list[str]:
    """Namespaces of an earlier, interrupted benchmark run (found by label), removed."""
    listed = api.get_query("/api/v1/namespaces", {"labelSelector": BENCH_LABEL}) or {}
    names = [item["metadata"]["name"] for item in listed.get("items", [])]
    if names:
        strip_finalizers(api, names)
        delete_namespaces(api, names)
    return names
