"""What the three benchmarks share: the API client, the sample application, the operator process,
the API server's request counters, and watches that time-stamp changes as they arrive.

Why these choices:

- One thin JSON client (`Api`) over the official `kubernetes` client's transport, the same way
  the operator's `kube.py` calls the API, so the plain-script baselines pay the same per-call
  cost as the operator and the comparison measures orchestration, not serialization.
- Changes are observed by watches, never by polling: a poll would add up to its interval to
  every figure and its own requests to the counts.
- The operator and the plain script run as a dedicated ServiceAccount that a FlowSchema of its
  own matches (priority level `exempt`, as the admin is). The API server's
  `apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` then counts exactly that
  client's requests, which separates them from the controllers, from kwok and from whatever
  else uses the cluster meanwhile; `apiserver_request_total` gives the totals and the
  breakdown by resource.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.watch.watch import iter_resp_lines

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.kube import ApiError, Kube
from rollback_operator.model import DEFAULT_TARGET_TAG, Phase

JSON = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
ADMIN_KUBECONFIG = Path(os.environ.get("KUBECONFIG") or REPO_ROOT / ".cluster" / "kubeconfig")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
FIELD_MANAGER = "rollback-bench"

# Every object a benchmark creates carries this label, so leftovers of an interrupted run can
# be found and removed, and cluster-wide watches see only the benchmark's own objects.
BENCH_LABEL = f"{GROUP}/bench"
TERMINAL_PHASES = frozenset(phase for phase in Phase if phase.terminal)

# The identity the operator and the plain script use (see the module docstring).
IDENTITY_NAMESPACE = "rollback-bench-system"
IDENTITY_NAME = "rollback-bench"

MAINTENANCE_BACKEND: JSON = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
REGISTRY = "registry.lawyershub.example:5000/lawyershub"
GOLIVE_TAG = "2026.01.10-golive"


# --- the API


class Api(Kube):
    """The operator's own transport (`rollback_operator.kube`), plus what benchmarks need."""

    @classmethod
    def from_kubeconfig(cls, path: str | Path = ADMIN_KUBECONFIG, pool_size: int = 32) -> Api:
        kube = Kube.from_kubeconfig(str(path), pool_size)
        return cls(kube.api_client)

    def get_query(self, path: str, query: dict[str, str]) -> JSON | None:
        try:
            result: JSON = self.request("GET", path, query=query)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def create(self, path: str, body: JSON) -> JSON:
        result: JSON = self.request("POST", path, body)
        return result

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except ApiError as error:
            if error.status != 404:
                raise

    def text(self, path: str) -> str:
        """A non-JSON GET, such as /metrics."""
        response = self.send("GET", path, timeout=60)
        data: bytes = response.read()
        if response.status >= 400:
            raise ApiError(response.status, "Error", data.decode(errors="replace"))
        return data.decode()

    def stream(self, path: str, query: dict[str, str]) -> urllib3.HTTPResponse:
        """An open watch response, read line by line by the caller."""
        response = self.send("GET", path, query=query, timeout=(10, None))
        if response.status >= 400:
            raise ApiError(response.status, "Error", response.read().decode(errors="replace"))
        raw: urllib3.HTTPResponse = response.response
        return raw


def ingress_path(ns: str, name: str = "") -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}".rstrip("/")


def deployment_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}".rstrip("/")


def hpa_path(ns: str, name: str = "") -> str:
    return f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}".rstrip("/")


def service_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services/{name}".rstrip("/")


def request_path(ns: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/{name}".rstrip("/")


# --- the sample application (the shape of examples/lawyershub.yaml)


def app_objects(ns: str) -> list[tuple[str, JSON]]:
    """(collection path, object) for the Lawyers Hub shape in `ns`.

    An Ingress with two paths, frontend and backend Deployments (the backend with a sidecar
    that the request leaves alone), their HPAs, and the maintenance Service. The maintenance
    page's own Deployment is left out: the operator only checks the Service, and leaving it
    out keeps the scale benchmark's pod count (and the fake node's load) lower.
    """
    labels = {BENCH_LABEL: "1"}

    def meta(name: str) -> JSON:
        return {"name": name, "namespace": ns, "labels": labels}

    def deployment(name: str, replicas: int, containers: list[JSON]) -> JSON:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(name),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": containers},
                },
            },
        }

    def service(name: str, port: int) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name),
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": port, "targetPort": "http"}],
            },
        }

    def hpa(name: str, low: int, high: int, behavior: JSON | None = None) -> JSON:
        spec: JSON = {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        }
        if behavior:
            spec["behavior"] = behavior
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(name),
            "spec": spec,
        }

    def path(prefix: str, backend: JSON) -> JSON:
        return {"path": prefix, "pathType": "Prefix", "backend": {"service": backend}}

    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta("lawyershub"),
        "spec": {
            "rules": [
                {
                    "host": "lawyershub.example",
                    "http": {
                        "paths": [
                            path("/api", {"name": "backend", "port": {"number": 8080}}),
                            path("/", {"name": "frontend", "port": {"name": "http"}}),
                        ]
                    },
                }
            ]
        },
    }
    frontend = deployment(
        "frontend",
        2,
        [
            {
                "name": "web",
                "image": f"{REGISTRY}/frontend:{GOLIVE_TAG}",
                "ports": [{"containerPort": 3000, "name": "http"}],
            }
        ],
    )
    backend = deployment(
        "backend",
        3,
        [
            {
                "name": "api",
                "image": f"{REGISTRY}/backend:{GOLIVE_TAG}",
                "ports": [{"containerPort": 8080, "name": "http"}],
            },
            {"name": "ai-gateway-sidecar", "image": f"{REGISTRY}/ai-gateway-proxy:1.4.2"},
        ],
    )
    return [
        (deployment_path(ns), frontend),
        (deployment_path(ns), backend),
        (service_path(ns), service("frontend", 80)),
        (service_path(ns), service("backend", 8080)),
        (service_path(ns), service("maintenance-page", 80)),
        (ingress_path(ns), ingress),
        (hpa_path(ns), hpa("frontend", 2, 10)),
        (
            hpa_path(ns),
            hpa("backend", 3, 12, {"scaleDown": {"stabilizationWindowSeconds": 600}}),
        ),
    ]


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


def request_state(obj: JSON) -> JSON:
    """What the benchmarks need of a RollbackRequest watch event (keeps the watch small)."""
    status = obj.get("status") or {}
    return {
        "phase": status.get("phase"),
        "steps": {s["name"]: s.get("state") for s in status.get("steps") or []},
    }


def step_timeline(events: list[Seen], start: float) -> dict[str, tuple[float, float | None]]:
    """For each step, ms from `start` to the first event showing it Running (or already
    finished, for a skip) and to the first showing it finished; in the order steps began."""
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    for seen in events:
        if seen.type != "MODIFIED":
            continue
        at = round((seen.at - start) * 1000, 1)
        for step, state in seen.object["steps"].items():
            if state == "Running":
                began.setdefault(step, at)
            elif state in ("Succeeded", "Skipped", "Failed") and step not in ended:
                ended[step] = at
                began.setdefault(step, at)
    return {step: (at, ended.get(step)) for step, at in sorted(began.items(), key=lambda i: i[1])}


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


# --- the benchmark's own identity and flow schemas

# Buckets of the bench identity's requests, each a FlowSchema: (bucket, verbs, group, resource).
# The API server evaluates FlowSchemas by precedence, so the first bucket that matches a request
# counts it; "watch" and "list" come first, "other" (discovery and the rest) last.
BUCKETS: tuple[tuple[str, str, str, str], ...] = (
    ("watch", "watch", "*", "*"),
    ("list", "list", "*", "*"),
    (f"get {PLURAL}", "get", GROUP, PLURAL),
    (f"patch {PLURAL}", "patch,update", GROUP, PLURAL),
    (f"patch {PLURAL}/status", "patch,update", GROUP, f"{PLURAL}/status"),
    ("create events", "create", "", "events"),
    ("create events", "create", "events.k8s.io", "events"),
    ("get ingresses", "get", "networking.k8s.io", "ingresses"),
    ("patch ingresses", "patch,update", "networking.k8s.io", "ingresses"),
    ("get services", "get", "", "services"),
    ("get deployments", "get", "apps", "deployments"),
    ("patch deployments", "patch,update", "apps", "deployments"),
    ("get horizontalpodautoscalers", "get", "autoscaling", "horizontalpodautoscalers"),
    ("patch horizontalpodautoscalers", "patch,update", "autoscaling", "horizontalpodautoscalers"),
    ("other", "*", "*", "*"),
)
FLOW_PREFIX = "rollback-bench-"


def flow_schemas(ns: str, name: str) -> list[JSON]:
    """One FlowSchema per bucket, all matching only the bench ServiceAccount."""
    subject = {"kind": "ServiceAccount", "serviceAccount": {"namespace": ns, "name": name}}
    schemas = []
    for index, (bucket, verbs, group, resource) in enumerate(BUCKETS):
        rule: JSON = {
            "subjects": [subject],
            "resourceRules": [
                {
                    "verbs": verbs.split(","),
                    "apiGroups": [group],
                    "resources": [resource],
                    "clusterScope": True,
                    "namespaces": ["*"],
                }
            ],
        }
        if bucket == "other":
            rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        schemas.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {
                    "name": f"{FLOW_PREFIX}{index:02d}",
                    "labels": {BENCH_LABEL: "1"},
                    "annotations": {BENCH_LABEL + "-bucket": bucket},
                },
                "spec": {
                    "priorityLevelConfiguration": {"name": "exempt"},
                    "matchingPrecedence": 100 + index,
                    "rules": [rule],
                },
            }
        )
    return schemas


def bucket_of(flow_schema: str) -> str | None:
    if not flow_schema.startswith(FLOW_PREFIX):
        return None
    return BUCKETS[int(flow_schema.removeprefix(FLOW_PREFIX))][0]


@contextmanager
def bench_identity(api: Api) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount that only the operator (or the plain script) uses.

    It is bound to cluster-admin (the operator's own RBAC is not what is measured) and matched
    by FlowSchemas at the `exempt` priority level, like the admin, so no throttling differs; the
    FlowSchemas' dispatch counters attribute requests to this client alone, bucket by bucket.
    """
    ns, name = IDENTITY_NAMESPACE, IDENTITY_NAME
    if api.get(f"/api/v1/namespaces/{ns}") is None:
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
    _create_or_keep(
        api,
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    _create_or_keep(
        api,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "1"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    )
    schemas = flow_schemas(ns, name)
    for schema in schemas:
        _create_or_keep(api, "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", schema)
    token = api.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )["status"]["token"]
    workdir = Path(tempfile.mkdtemp(prefix="rollback-bench-"))
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": api.configuration.host,
                            "certificate-authority": api.configuration.ssl_ca_cert,
                        },
                    }
                ],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": "bench", "context": {"cluster": "local", "user": name}}],
                "current-context": "bench",
            }
        )
    )
    try:
        # The schemas count once the API server's flow-control controller has digested them:
        # probe with one request of a known bucket until it lands there.
        probe = Api.from_kubeconfig(kubeconfig)
        deadline = time.monotonic() + 60
        while not scrape(api).flows.get("get services"):
            if time.monotonic() > deadline:
                raise TimeoutError("the bench FlowSchemas never matched the bench identity")
            probe.get(service_path("default", "kubernetes"))
            time.sleep(0.5)
        yield kubeconfig
    finally:
        kubeconfig.unlink(missing_ok=True)
        with suppress(OSError):
            workdir.rmdir()
        for schema in schemas:
            name_ = schema["metadata"]["name"]
            api.delete(f"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{name_}")
        api.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
        delete_namespaces(api, [ns], timeout=120)


def _create_or_keep(api: Api, collection: str, body: JSON) -> None:
    try:
        api.create(collection, body)
    except ApiError as error:
        if error.status != 409:
            raise


# --- the API server's counters

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    keys = set(after) | set(before)
    out = {k: int(after.get(k, 0) - before.get(k, 0)) for k in keys}
    return {k: v for k, v in sorted(out.items()) if v}


@dataclass
class Snapshot:
    """`apiserver_request_total` by "VERB resource[/subresource]", and the bench identity's
    requests by bucket (from `apiserver_flowcontrol_dispatched_requests_total`)."""

    at: float
    requests: dict[str, float]
    flows: dict[str, float]

    def since(self, before: Snapshot) -> Usage:
        return Usage(
            seconds=self.at - before.at,
            requests=_diff(self.requests, before.requests),
            client=_diff(self.flows, before.flows),
        )


@dataclass
class Usage:
    """What the API server served between two snapshots: all of it, and the bench client's."""

    seconds: float
    requests: dict[str, int]  # everything, by "VERB resource"
    client: dict[str, int]  # the bench identity (operator or plain script), by bucket

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def client_total(self) -> int:
        return sum(self.client.values())

    def by_resource(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for key, count in self.requests.items():
            out[key.split(" ", 1)[1]] += count
        return dict(out)

    def to_dict(self) -> JSON:
        return {
            "seconds": round(self.seconds, 3),
            "total": self.total,
            "client_total": self.client_total,
            "client": self.client,
            "requests": self.requests,
            "by_resource": dict(sorted(self.by_resource().items())),
        }


def scrape(api: Api) -> Snapshot:
    """One GET /metrics through the API server (what `kubectl get --raw /metrics` does).

    The scrapes themselves are left out: they are counted under GET /metrics, dropped here.
    """
    text = api.text("/metrics")
    at = time.monotonic()
    requests: Counter[str] = Counter()
    flows: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith(
            ("apiserver_request_total{", "apiserver_flowcontrol_dispatched_requests_total{")
        ):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        value = float(match["value"])
        if match["name"] == "apiserver_request_total":
            if labels.get("subresource") == "/metrics":
                continue
            resource = labels.get("resource") or labels.get("subresource") or "?"
            if labels.get("resource") and labels.get("subresource"):
                resource = f"{labels['resource']}/{labels['subresource']}"
            requests[f"{labels.get('verb', '?')} {resource}"] += int(value)
        else:
            bucket = bucket_of(labels.get("flow_schema", ""))
            if bucket is not None:
                flows[bucket] += int(value)
    return Snapshot(at=at, requests=dict(requests), flows=dict(flows))


# --- watches


@dataclass
class Seen:
    at: float  # time.monotonic() when the event arrived
    type: str
    object: Any


class Watcher:
    """A watch read in a thread; each event is stamped with time.monotonic() on arrival.

    It starts from the resourceVersion of a list taken first, so nothing between the list and
    the watch is missed and no synthetic ADDED events are replayed. `keep` reduces each object
    to what the benchmark needs, which keeps memory flat when many objects change often.
    """

    def __init__(
        self,
        api: Api,
        path: str,
        query: dict[str, str] | None = None,
        keep: Callable[[JSON], Any] = lambda obj: obj,
    ) -> None:
        self.api, self.path, self.query, self.keep = api, path, dict(query or {}), keep
        self.events: list[Seen] = []
        self._changed = threading.Condition()
        self._response: urllib3.HTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._version = ""
        self.reconnects = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        listed = self.api.get_query(self.path, {**self.query, "limit": "1"}) or {}
        self._version = listed.get("metadata", {}).get("resourceVersion", "")
        self._response = self._open()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _open(self) -> urllib3.HTTPResponse:
        query = {**self.query, "watch": "1", "resourceVersion": self._version}
        return self.api.stream(self.path, {**query, "timeoutSeconds": "3600"})

    def _read(self) -> None:
        """Reads until stopped. The API server may end a watch early (a CRD being applied
        again restarts its storage): the watch is resumed from the last version seen."""
        try:
            while not self._stopping:
                assert self._response is not None
                for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                    at = time.monotonic()
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        raise ApiError(
                            event["object"].get("code", 0), "WatchError", str(event["object"])
                        )
                    self._version = event["object"]["metadata"]["resourceVersion"]
                    seen = Seen(at, event["type"], self.keep(event["object"]))
                    with self._changed:
                        self.events.append(seen)
                        self._changed.notify_all()
                if not self._stopping:
                    self.reconnects += 1
                    self._response = self._open()
        except Exception as error:  # a closed stream on stop() is expected
            if not self._stopping:
                self.error = error
        with self._changed:
            self._changed.notify_all()

    def first(self, predicate: Callable[[Seen], bool], timeout: float) -> Seen:
        """The first event (already seen or still to come) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        index = 0
        with self._changed:
            while True:
                for seen in self.events[index:]:
                    if predicate(seen):
                        return seen
                index = len(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"nothing matched on {self.path} within {timeout:g}s")
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError(f"the watch on {self.path} ended: {self.error}")
                self._changed.wait(remaining)

    def wait(self, predicate: Callable[[list[Seen]], bool], timeout: float) -> None:
        """Until `predicate` holds for everything seen so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition on {self.path} not met within {timeout:g}s")
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError(f"the watch on {self.path} ended: {self.error}")
                self._changed.wait(min(remaining, 1.0))

    def stop(self) -> None:
        self._stopping = True
        if self._response is not None:
            with suppress(Exception):
                self._response.shutdown()
            with suppress(Exception):
                self._response.release_conn()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --- the operator process


class OperatorProcess:
    """`python -m rollback_operator` for the given namespaces, as the bench identity.

    Each benchmark starts its own, so memory and request counts are not inherited from an
    earlier benchmark. It watches only the benchmark's namespaces (`-n`, repeated), never the
    whole cluster, so it cannot pick up requests that others create on a shared cluster.
    """

    def __init__(self, kubeconfig: Path, namespaces: list[str], log: Path) -> None:
        self.kubeconfig, self.namespaces, self.log = kubeconfig, namespaces, log
        self.process: subprocess.Popen[bytes] | None = None
        self.code: JSON = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.code = operator_code()
        args = [str(PYTHON), "-m", "rollback_operator", "--liveness=", "--metrics="]
        for ns in self.namespaces:
            args += ["-n", ns]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_kib(self, field_name: str) -> int:
        """A VmRSS / VmHWM line of /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def wait_idle(self, api: Api, quiet: float = 2.0, timeout: float = 120) -> float:
        """Until the operator has sent no request for `quiet` seconds; returns the time taken."""
        started = time.monotonic()
        last = sum(scrape(api).flows.values())
        last_change = time.monotonic()
        while time.monotonic() - last_change < quiet:
            if not self.alive():
                raise RuntimeError(f"the operator exited; see {self.log}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the operator did not go idle in {timeout:g}s")
            time.sleep(0.5)
            now = sum(scrape(api).flows.values())
            if now != last:
                last, last_change = now, time.monotonic()
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM (Kopf stops gracefully), then SIGKILL if it lingers: this process only."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_pids() -> dict[str, int]:
    """The local control plane's processes, as its scripts recorded them (read only)."""
    found: dict[str, int] = {}
    for pidfile in sorted((REPO_ROOT / ".cluster" / "pids").glob("*")):
        with suppress(OSError, ValueError):
            found[pidfile.name] = int(pidfile.read_text().strip())
    return found


def cpu_usage(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        with suppress(OSError, IndexError, ValueError):
            out[name] = cpu_seconds(pid)
    return out


class MemorySampler:
    """Samples the operator's VmRSS in a thread: the peak, and when it happened."""

    def __init__(self, operator: OperatorProcess, interval: float = 0.05) -> None:
        self.operator, self.interval = operator, interval
        self.peak_kib = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(OSError, KeyError):
                rss = self.operator.memory_kib("VmRSS")
                self.peak_kib = max(self.peak_kib, rss)
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)


# --- figures


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: p95 of 20 values is the 19th smallest, an observed value."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> JSON:
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "max": max(values),
    }


def machine() -> JSON:
    """What the figures were measured on."""
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])  # type: ignore[index]
    model = ""
    with suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found[1].strip() if found else ""
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def operator_code() -> JSON:
    """Which operator code a benchmark ran: the commit, the files changed since, and a hash
    of the package's sources as they were when its operator process started (the tree may be
    edited while the benchmarks run; differing hashes show it)."""
    package = REPO_ROOT / "operator" / "rollback_operator"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed": [
            line[3:] for line in git("status", "--porcelain", "--", "operator").splitlines()
        ],
        "sources_sha256": digest.hexdigest()[:12],
    }


def write_result(path: Path, result: JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


@dataclass
class Stopwatch:
    """Monotonic marks, relative to a start."""

    start: float = field(default_factory=time.monotonic)

    def ms(self, at: float | None = None) -> float:
        return ((at if at is not None else time.monotonic()) - self.start) * 1000
