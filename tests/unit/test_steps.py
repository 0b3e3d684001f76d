"""Each step's `run` against an in-memory Kubernetes: what it reads, saves, patches, and says.

The fake stands in for `kube.Kube` with the same methods. It applies patches the way the API
server does (JSON merge patch, or strategic merge for a Deployment's containers), checks the
resourceVersion a patch carries, and records every patch in one log shared with the ledger's
durable writes of status.saved, so a test can tell whether the prior state was saved before
the change (safety rule 2). The e2e tier runs the same steps against a real control plane.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rollback_operator.autoscaling import FREEZE_PATCH, is_frozen
from rollback_operator.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiError,
    Kube,
    deployment_path,
    hpa_path,
    http_route_path,
    ingress_path,
)
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, Targets
from rollback_operator.registry import STEPS
from rollback_operator.status import Status
from rollback_operator.steps.base import Done, Fail, Seen, StepContext, Wait, poll_interval
from rollback_operator.steps.disable_maintenance import DisableMaintenance
from rollback_operator.steps.enable_maintenance import EnableMaintenance
from rollback_operator.steps.pause_autoscaling import PauseAutoscaling
from rollback_operator.steps.preflight import Preflight
from rollback_operator.steps.resume_autoscaling import ResumeAutoscaling
from rollback_operator.steps.revert_workloads import RESTART_ANNOTATION, RevertWorkloads
from rollback_operator.steps.verify import Verify
from tests.unit.fake_watch import Watchable, called_until

NS = "lawyershub"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
REGISTRY = "registry.lawyershub.example:5000/lawyershub"
DIGEST = "sha256:" + "ab" * 32
MAINTENANCE = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
MAINTENANCE_BY_NAME = {"service": {"name": "maintenance-page", "port": {"name": "http"}}}
API = {"service": {"name": "backend", "port": {"number": 8080}}}
APP = {"service": {"name": "frontend", "port": {"name": "http"}}}
FALLBACK = {"service": {"name": "fallback", "port": {"number": 8080}}}

KINDS = {
    "ingresses": "Ingress",
    "services": "Service",
    "deployments": "Deployment",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "httproutes": "HTTPRoute",
}


# --- the fake API server


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except that lists of containers merge by container name."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif key in ("containers", "initContainers") and isinstance(value, list):
            merged = copy.deepcopy(result.get(key) or [])
            for item in value:
                existing = next((c for c in merged if c["name"] == item["name"]), None)
                if existing is None:
                    merged.append(copy.deepcopy(item))
                else:
                    existing.update(strategic_merge_patch(existing, item))
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


@dataclass
class Patch:
    path: str
    body: dict[str, Any]
    content_type: str


class FakeKube(Watchable):
    """Stores objects by (namespace, kind, name); applies and records patches."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.patches: list[Patch] = []
        self.log = log
        self.fail_next_patch: ApiError | None = None
        self.unreadable_namespaces: set[str] = set()  # where ReferenceGrants may not be listed

    def add(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", NS)
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("generation", 1)
        self.objects[(meta["namespace"], kind, meta["name"])] = obj
        return obj

    def stored(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[(NS, kind, name)]

    def changed(self, kind: str, name: str) -> dict[str, Any]:
        """The object itself, for a test to change in place: a write, with a new
        resourceVersion (the watches tell a change by it)."""
        obj = self.objects[(NS, kind, name)]
        self._bump(obj)
        return obj

    @staticmethod
    def _bump(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(int(meta.get("resourceVersion") or 0) + 1)

    def delete(self, kind: str, name: str) -> None:
        del self.objects[(NS, kind, name)]

    def _get(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((namespace, kind, name))
        return copy.deepcopy(obj)

    # the Kube interface the steps use

    def watched(self, collection: str, name: str) -> dict[str, Any] | None:
        parts = collection.strip("/").split("/")
        return self._get(parts[parts.index("namespaces") + 1], KINDS[parts[-1]], name)

    def names_in(self, collection: str) -> list[str]:
        parts = collection.strip("/").split("/")
        namespace, kind = parts[parts.index("namespaces") + 1], KINDS[parts[-1]]
        return [n for (ns, k, n) in self.objects if ns == namespace and k == kind]

    def get(self, path: str) -> dict[str, Any] | None:
        """Only the admins' RollbackPolicy objects are read by path (none here: the defaults)."""
        parts = path.strip("/").split("/")
        assert parts[-2] == "rollbackpolicies", path
        return self._get(parts[parts.index("namespaces") + 1], "RollbackPolicy", parts[-1])

    def ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(namespace, "Ingress", name)

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(namespace, "Service", name)

    def http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(namespace, "HTTPRoute", name)

    def rollback_requests(self, namespace: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (ns, kind, _), o in sorted(self.objects.items())
            if ns == namespace and kind == "RollbackRequest"
        ]

    def reference_grants(self, namespace: str) -> list[dict[str, Any]] | None:
        if namespace in self.unreadable_namespaces:
            return None
        return [
            copy.deepcopy(o)
            for (ns, kind, _), o in sorted(self.objects.items())
            if ns == namespace and kind == "ReferenceGrant"
        ]

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(namespace, "Deployment", name)

    def hpa(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(namespace, "HorizontalPodAutoscaler", name)

    def hpas(self, namespace: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (ns, kind, _), o in sorted(self.objects.items())
            if ns == namespace and kind == "HorizontalPodAutoscaler"
        ]

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        self.patches.append(Patch(path, copy.deepcopy(body), content_type))
        self.log.append(("patch", path))
        if self.fail_next_patch is not None:
            error, self.fail_next_patch = self.fail_next_patch, None
            raise error
        parts = path.strip("/").split("/")
        namespace, kind, name = parts[parts.index("namespaces") + 1], KINDS[parts[-2]], parts[-1]
        obj = self.objects.get((namespace, kind, name))
        if obj is None:
            raise ApiError(404, "NotFound", f"{kind} {name!r} not found")
        if content_type == JSON_PATCH:
            return self._store(namespace, kind, name, obj, json_patch(obj, body))
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "ConflictError", "the object has been modified")
        apply = strategic_merge_patch if content_type == STRATEGIC_MERGE_PATCH else merge_patch
        body = {k: v for k, v in body.items() if k != "metadata"} | {
            "metadata": {
                k: v for k, v in (body.get("metadata") or {}).items() if k != "resourceVersion"
            }
        }
        return self._store(namespace, kind, name, obj, apply(obj, body))

    def _store(
        self, namespace: str, kind: str, name: str, obj: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        if new.get("spec") != obj.get("spec"):
            new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.objects[(namespace, kind, name)] = new
        return copy.deepcopy(new)

    # what the Deployment controller and a person would do meanwhile

    def finish_rollouts(self) -> None:
        for (_, kind, _), obj in self.objects.items():
            if kind == "Deployment":
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = rolled_out_status(obj["metadata"]["generation"], replicas)
                self._bump(obj)

    def edit(self, kind: str, name: str, change: dict[str, Any]) -> None:
        """Someone else's merge patch (bumps the resourceVersion like any write)."""
        self.patch(_path(kind, name), change)
        self.patches.pop()
        self.log.pop()


def json_patch(obj: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 as the API server applies it (test, add, replace, remove on object keys): a
    failed test or a missing path is a 422, and nothing is changed."""
    new = copy.deepcopy(obj)
    for operation in operations:
        *parents, last = operation["path"].strip("/").split("/")
        target: Any = new
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
            if target is None:
                raise ApiError(422, "Invalid", f"{operation['path']}: missing")
        if operation["op"] == "test":
            if target.get(last) != operation["value"]:
                raise ApiError(422, "Invalid", f"testing value {operation['path']} failed")
        elif operation["op"] in ("add", "replace"):
            target[last] = copy.deepcopy(operation["value"])
        elif last not in target:
            raise ApiError(422, "Invalid", f"{operation['path']}: missing")
        else:
            del target[last]
    return new


def _path(kind: str, name: str) -> str:
    return {
        "HTTPRoute": http_route_path,
        "Ingress": ingress_path,
        "Deployment": deployment_path,
        "HorizontalPodAutoscaler": hpa_path,
    }[kind](NS, name)


def rolled_out_status(generation: int, replicas: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


# --- objects of the sample application


def site_ingress(*, default_backend: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressClassName": "nginx",
        "rules": [
            {
                "host": "lawyershub.example",
                "http": {
                    "paths": [
                        {"path": "/api", "pathType": "Prefix", "backend": copy.deepcopy(API)},
                        {"path": "/", "pathType": "Prefix", "backend": copy.deepcopy(APP)},
                    ]
                },
            }
        ],
    }
    if default_backend is not None:
        spec["defaultBackend"] = copy.deepcopy(default_backend)
    return {"metadata": {"name": "lawyershub"}, "spec": spec}


def admin_ingress() -> dict[str, Any]:
    return {
        "metadata": {"name": "admin"},
        "spec": {"defaultBackend": copy.deepcopy(FALLBACK)},
    }


def maintenance_service() -> dict[str, Any]:
    return {
        "metadata": {"name": "maintenance-page"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def deployment(
    name: str, containers: dict[str, str], *, replicas: int = 3, init: dict[str, str] | None = None
) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": c, "image": i} for c, i in containers.items()]}
    if init:
        pod["initContainers"] = [{"name": c, "image": i} for c, i in init.items()]
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
        "status": rolled_out_status(1, replicas),
    }


BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}


def hpa(
    name: str,
    target: str,
    *,
    kind: str = "Deployment",
    min_replicas: int = 2,
    max_replicas: int = 10,
    behavior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
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
    if behavior is not None:
        spec["behavior"] = copy.deepcopy(behavior)
    return {"metadata": {"name": name}, "spec": spec}


def make_spec(
    *,
    ingresses: Iterable[str] = ("lawyershub",),
    port: int | str = 80,
    workloads: list[dict[str, Any]] | None = None,
    hpas: list[str] | None = None,
    rollout_timeout: str = "10m",
) -> RollbackSpec:
    raw: dict[str, Any] = {
        "reason": "Error rate 7.2 % for 15 min after go-live",
        "trigger": "ErrorRate",
        "traffic": {
            "ingresses": list(ingresses),
            "maintenanceBackend": {"service": "maintenance-page", "port": port},
        },
        "workloads": workloads
        or [{"deployment": "backend", "containers": ["api"]}, {"deployment": "frontend"}],
        "rolloutTimeout": rollout_timeout,
    }
    if hpas is not None:
        raw["autoscaling"] = {"hpas": hpas}
    return RollbackSpec.parse(raw)


@dataclass
class World:
    """The fake cluster, plus what the runner keeps for a request: status.saved and targets."""

    log: list[tuple[str, Any]] = field(default_factory=list)
    status: Status = field(default_factory=Status)
    clock: datetime = T0
    kube: FakeKube = field(init=False)
    ledger: StatusLedger = field(init=False)
    seen: Seen | None = None  # the run's reads, shared between steps when a test gives one

    def __post_init__(self) -> None:
        self.kube = FakeKube(self.log)
        self.ledger = StatusLedger(self.status, write=self._write)

    @property
    def saved(self) -> dict[str, dict[str, Any]]:
        """status.saved as the ledger holds it (steps never replace it, only add to it)."""
        return self.status.saved

    @property
    def targets_written(self) -> list[dict[str, list[str]]]:
        """The targets Preflight recorded, if it did."""
        targets = self.status.targets
        return [] if targets is None else [targets.to_dict()]

    def ctx(
        self,
        spec: RollbackSpec,
        targets: Targets | None = None,
        *,
        started: datetime = T0,
    ) -> StepContext:
        return StepContext(
            kube=cast(Kube, self.kube),
            namespace=NS,
            request="golive-2026-01-10",
            spec=spec,
            ledger=self.ledger,
            targets=targets or Targets.of(spec),
            step_started_at=started,
            now=lambda: self.clock,
            seen=self.seen if self.seen is not None else Seen(),
        )

    def _write(self, patch: dict[str, Any], version: str | None) -> None:
        if "saved" in patch:
            self.log.append(("persist_saved", copy.deepcopy(patch["saved"])))

    def events(self) -> list[str]:
        return [kind for kind, _ in self.log]


def lawyershub(*, default_backend: dict[str, Any] | None = None) -> World:
    world = World()
    world.kube.add("Ingress", site_ingress(default_backend=default_backend))
    world.kube.add("Ingress", admin_ingress())
    world.kube.add("Service", maintenance_service())
    world.kube.add(
        "Deployment",
        deployment(
            "backend",
            {"api": f"{REGISTRY}/backend:v2.1.0@{DIGEST}", "envoy": "envoyproxy/envoy:v1.29"},
            init={"migrate": f"{REGISTRY}/backend:v2.1.0"},
        ),
    )
    world.kube.add(
        "Deployment",
        deployment(
            "frontend",
            {"web": f"{REGISTRY}/frontend:v2.1.0", "metrics": f"{REGISTRY}/exporter:v2.1.0"},
            replicas=2,
        ),
    )
    world.kube.add("HorizontalPodAutoscaler", hpa("backend", "backend", behavior=BEHAVIOR))
    world.kube.add("HorizontalPodAutoscaler", hpa("frontend", "frontend"))
    return world


def images(world: World, name: str) -> dict[str, str]:
    pod = world.kube.stored("Deployment", name)["spec"]["template"]["spec"]
    return {c["name"]: c["image"] for c in pod["containers"]}


def pod_patch(**pod: Any) -> dict[str, Any]:
    """The strategic merge patch RevertWorkloads sends: `pod` in the pod template's spec, at
    the version of the Deployment it was computed from (as the fake stores them: "1")."""
    return {"metadata": {"resourceVersion": "1"}, "spec": {"template": {"spec": pod}}}


def init_images(world: World, name: str) -> dict[str, str]:
    pod = world.kube.stored("Deployment", name)["spec"]["template"]["spec"]
    return {c["name"]: c["image"] for c in pod.get("initContainers") or []}


def test_every_implemented_step_is_registered_under_its_name() -> None:
    """The engine finds steps by name; one registered under the wrong name would be skipped."""
    for name, step in STEPS.items():
        assert step.name == name


# --- Preflight


def test_preflight_resolves_targets_and_changes_nothing() -> None:
    """Safety rule 1: Preflight only reads; it hands the run its targets, HPAs discovered."""
    world = lawyershub()
    before = copy.deepcopy(world.kube.objects)
    outcome = Preflight().run(world.ctx(make_spec(ingresses=["lawyershub", "admin"])))
    assert outcome == Done(
        "found 2 Ingress(es), the maintenance Service, 2 Deployment(s) and 2 HPA(s)"
    )
    assert world.targets_written == [
        {
            "ingresses": ["lawyershub", "admin"],
            "deployments": ["backend", "frontend"],
            "hpas": ["backend", "frontend"],
        }
    ]
    assert world.kube.patches == []
    assert world.kube.objects == before
    assert world.saved == {}


def test_preflight_names_every_missing_thing_at_once() -> None:
    """One message with every problem, so the SRE fixes them all in one go, and nothing is
    touched: a request that cannot finish must fail before the site is switched."""
    world = lawyershub()
    world.kube.delete("Service", "maintenance-page")
    spec = make_spec(
        ingresses=["lawyershub", "gone"],
        workloads=[
            {
                "deployment": "backend",
                "containers": ["api", "worker"],
                "initContainers": ["migrate", "seed"],
            },
            {"deployment": "missing"},
        ],
        hpas=["backend", "nope"],
    )
    outcome = Preflight().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert outcome.message == (
        "Preflight found 6 problem(s): Ingress 'gone' not found; "
        "maintenance Service 'maintenance-page' not found; "
        "Deployment 'backend' has no container 'worker'; "
        "Deployment 'backend' has no init container 'seed'; "
        "Deployment 'missing' not found; "
        "HorizontalPodAutoscaler 'nope' not found. "
        "Nothing was changed. Fix the references (or the objects) and create a new "
        "RollbackRequest."
    )
    assert world.kube.patches == []
    assert world.targets_written == []
    assert world.saved == {}


def test_preflight_names_a_missing_port_alongside_the_other_problems() -> None:
    """A Service that exists but lacks the port is one problem among the others, not a stop."""
    world = lawyershub()
    world.kube.delete("Deployment", "frontend")
    outcome = Preflight().run(world.ctx(make_spec(port="https")))
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith(
        "Preflight found 2 problem(s): maintenance Service 'maintenance-page' has no port "
        "'https'; Deployment 'frontend' not found. Nothing was changed."
    )
    assert world.kube.patches == [] and world.targets_written == []


@pytest.mark.parametrize(
    ("port", "ok"), [(80, True), ("http", True), (8080, False), ("web", False), ("80", False)]
)
def test_preflight_checks_the_maintenance_port_by_number_or_by_name(
    port: int | str, ok: bool
) -> None:
    """A number must be the Service's port (not its targetPort), a name one of its port names:
    an Ingress pointed at a port the Service lacks serves nothing at all."""
    world = lawyershub()
    outcome = Preflight().run(world.ctx(make_spec(port=port)))
    if ok:
        assert isinstance(outcome, Done)
    else:
        assert isinstance(outcome, Fail)
        assert f"maintenance Service 'maintenance-page' has no port {port!r}" in outcome.message
        assert "1 problem(s)" in outcome.message
    assert world.kube.patches == []


def test_preflight_refuses_an_ingress_without_backends() -> None:
    """An Ingress with no backend cannot be put on the maintenance page."""
    world = lawyershub()
    world.kube.add("Ingress", {"metadata": {"name": "empty"}, "spec": {"rules": [{"host": "x"}]}})
    outcome = Preflight().run(world.ctx(make_spec(ingresses=["empty"])))
    assert isinstance(outcome, Fail)
    assert "Ingress 'empty' has no backend to switch to maintenance" in outcome.message


def test_preflight_discovers_hpas_by_their_scale_target() -> None:
    """Without spec.autoscaling, the HPAs frozen are exactly those scaling a listed Deployment
    (not one of another Deployment, nor of a StatefulSet with the same name)."""
    world = lawyershub()
    world.kube.add("HorizontalPodAutoscaler", hpa("other", "search"))
    world.kube.add("HorizontalPodAutoscaler", hpa("sts", "backend", kind="StatefulSet"))
    world.kube.add("HorizontalPodAutoscaler", hpa("a-backend-too", "backend"))
    other_ns = hpa("elsewhere", "backend")
    other_ns["metadata"]["namespace"] = "staging"
    world.kube.add("HorizontalPodAutoscaler", other_ns)
    spec = make_spec(workloads=[{"deployment": "backend"}])
    assert isinstance(Preflight().run(world.ctx(spec)), Done)
    assert world.targets_written[0]["hpas"] == ["a-backend-too", "backend"]


def test_preflight_takes_listed_hpas_as_written() -> None:
    """spec.autoscaling.hpas is the SRE's choice: no discovery on top of it."""
    world = lawyershub()
    assert isinstance(Preflight().run(world.ctx(make_spec(hpas=["frontend"]))), Done)
    assert world.targets_written[0]["hpas"] == ["frontend"]


def test_preflight_with_no_hpa_resolves_an_empty_list() -> None:
    """No HPA: the autoscaling steps are then Skipped with a reason."""
    world = lawyershub()
    world.kube.delete("HorizontalPodAutoscaler", "backend")
    world.kube.delete("HorizontalPodAutoscaler", "frontend")
    outcome = Preflight().run(world.ctx(make_spec()))
    assert isinstance(outcome, Done)
    assert world.targets_written[0]["hpas"] == []
    targets = world.status.targets
    assert PauseAutoscaling().skip_reason(make_spec(), targets) is not None
    assert ResumeAutoscaling().skip_reason(make_spec(), targets) is not None
    assert PauseAutoscaling().skip_reason(make_spec(), None) is None


# --- EnableMaintenance


def test_enable_saves_the_original_backends_before_the_first_patch() -> None:
    """Safety rule 2: the original backends are durably recorded before the Ingress changes,
    exactly as written (a port name stays a name, a number a number)."""
    world = lawyershub()
    original = copy.deepcopy(world.kube.stored("Ingress", "lawyershub")["spec"])
    outcome = EnableMaintenance().run(world.ctx(make_spec()))
    assert outcome == Done("Ingress lawyershub (2 backend(s)) now served by maintenance-page:80")
    assert world.events() == ["persist_saved", "patch"]
    persisted = world.log[0][1]
    assert persisted["ingresses"]["lawyershub"] == {
        "backends": [
            {
                "location": {
                    "rule": 0,
                    "path": 0,
                    "host": "lawyershub.example",
                    "pathValue": "/api",
                },
                "backend": API,
            },
            {
                "location": {"rule": 0, "path": 1, "host": "lawyershub.example", "pathValue": "/"},
                "backend": APP,
            },
        ]
    }
    stored = world.kube.stored("Ingress", "lawyershub")["spec"]
    assert [p["backend"] for p in stored["rules"][0]["http"]["paths"]] == [MAINTENANCE] * 2
    assert stored["ingressClassName"] == original["ingressClassName"]
    assert [p["path"] for p in stored["rules"][0]["http"]["paths"]] == ["/api", "/"]


def test_enable_patch_carries_the_resource_version_it_read() -> None:
    """A concurrent edit between read and patch is refused (409, retried), never overwritten."""
    world = lawyershub()
    EnableMaintenance().run(world.ctx(make_spec()))
    (patch,) = world.kube.patches
    assert patch.path == ingress_path(NS, "lawyershub")
    assert patch.content_type == MERGE_PATCH
    assert patch.body["metadata"] == {"resourceVersion": "1"}
    assert set(patch.body["spec"]) == {"rules"}


def test_enable_uses_the_maintenance_port_name_as_written() -> None:
    """A port name must stay a name: `number: "http"` would be refused by the API server."""
    world = lawyershub()
    EnableMaintenance().run(world.ctx(make_spec(port="http")))
    stored = world.kube.stored("Ingress", "lawyershub")["spec"]
    assert [p["backend"] for p in stored["rules"][0]["http"]["paths"]] == [MAINTENANCE_BY_NAME] * 2


def test_enable_is_idempotent() -> None:
    """Run again (after a Wait or a restart), the step changes nothing and saves nothing new."""
    world = lawyershub()
    step, spec = EnableMaintenance(), make_spec(ingresses=["lawyershub", "admin"])
    first = step.run(world.ctx(spec))
    assert world.events() == ["persist_saved", "patch", "persist_saved", "patch"]
    saved = copy.deepcopy(world.saved)
    second = step.run(world.ctx(spec))
    assert second == first
    assert world.events() == ["persist_saved", "patch", "persist_saved", "patch"]
    assert world.saved == saved


def test_enable_after_a_crash_between_save_and_patch_keeps_the_first_record() -> None:
    """The run died after saving but before (or during) the patch: the re-run switches the
    Ingress and keeps the original record, not a fresh read."""
    world = lawyershub()
    world.kube.fail_next_patch = ApiError(503, "ServiceUnavailable", "etcd leader changed")
    with pytest.raises(ApiError):
        EnableMaintenance().run(world.ctx(make_spec()))
    saved = copy.deepcopy(world.saved)
    assert isinstance(EnableMaintenance().run(world.ctx(make_spec())), Done)
    assert world.saved == saved
    assert world.events() == ["persist_saved", "patch", "patch"]
    stored = world.kube.stored("Ingress", "lawyershub")["spec"]
    assert [p["backend"] for p in stored["rules"][0]["http"]["paths"]] == [MAINTENANCE] * 2


def test_enable_switches_a_default_backend_with_the_same_port_kind() -> None:
    """An Ingress made of a defaultBackend only is switched too."""
    world = lawyershub()
    EnableMaintenance().run(world.ctx(make_spec(ingresses=["admin"])))
    assert world.kube.stored("Ingress", "admin")["spec"]["defaultBackend"] == MAINTENANCE
    assert world.saved["ingresses"]["admin"]["backends"] == [
        {"location": {"default": True}, "backend": FALLBACK}
    ]


def test_enable_fails_when_an_ingress_is_gone() -> None:
    """Preflight saw it: if it vanished since, someone else is at work; stop and say so."""
    world = lawyershub()
    world.kube.delete("Ingress", "lawyershub")
    outcome = EnableMaintenance().run(world.ctx(make_spec()))
    assert outcome == Fail(
        "Ingress 'lawyershub' disappeared during the rollback; check who deleted it"
    )
    assert world.kube.patches == []


def test_enable_fails_when_a_rule_moved_after_the_save() -> None:
    """A re-run that finds a saved rule moved cannot tell where to switch: stop, patch nothing."""
    world = lawyershub()
    world.kube.fail_next_patch = ApiError(500, "InternalError", "boom")
    with pytest.raises(ApiError):
        EnableMaintenance().run(world.ctx(make_spec()))
    world.kube.edit(
        "Ingress",
        "lawyershub",
        {"spec": {"rules": [{"host": "www.lawyershub.example", "http": {"paths": []}}]}},
    )
    patches = len(world.kube.patches)
    outcome = EnableMaintenance().run(world.ctx(make_spec()))
    assert isinstance(outcome, Fail)
    assert "changed while it was being switched to maintenance" in outcome.message
    assert "status.saved.ingresses" in outcome.message
    assert len(world.kube.patches) == patches


def test_enable_plan_reads_only() -> None:
    """A dry run says what would change and changes nothing."""
    world = lawyershub()
    plan = EnableMaintenance().plan(world.ctx(make_spec(ingresses=["lawyershub", "admin"])))
    assert plan == (
        "would point Ingress lawyershub: 2 backend(s) to maintenance-page:80; "
        "Ingress admin: 1 backend(s) to maintenance-page:80"
    )
    assert world.kube.patches == [] and world.saved == {}


# --- DisableMaintenance


def switched(world: World, spec: RollbackSpec) -> None:
    assert isinstance(EnableMaintenance().run(world.ctx(spec)), Done)
    world.log.clear()


def test_disable_restores_every_ingress_exactly() -> None:
    """Traffic returns to exactly what served it before: same Services, same port names and
    numbers, nothing else touched."""
    world = lawyershub()
    spec = make_spec(ingresses=["lawyershub", "admin"])
    originals = {n: copy.deepcopy(world.kube.stored("Ingress", n)["spec"]) for n in spec.ingresses}
    switched(world, spec)
    outcome = DisableMaintenance().run(world.ctx(spec))
    assert outcome == Done("restored 3 backend(s) of Ingress lawyershub, admin")
    for name, original in originals.items():
        assert world.kube.stored("Ingress", name)["spec"] == original
    assert world.events() == ["patch", "patch"]
    assert all(p.body["metadata"]["resourceVersion"] == "2" for p in world.kube.patches[-2:])


def test_disable_is_idempotent() -> None:
    """A re-run after the restore finds nothing to do and patches nothing."""
    world = lawyershub()
    spec = make_spec()
    switched(world, spec)
    DisableMaintenance().run(world.ctx(spec))
    patches = len(world.kube.patches)
    outcome = DisableMaintenance().run(world.ctx(spec))
    assert outcome == Done("restored 0 backend(s) of Ingress lawyershub")
    assert len(world.kube.patches) == patches


def test_disable_leaves_and_reports_a_backend_someone_changed() -> None:
    """A backend changed during the rollback is newer than our record: it is kept, and the
    change is reported (a Warning Event per drift) instead of silently overwritten."""
    world = lawyershub()
    spec = make_spec()
    switched(world, spec)
    ingress = world.kube.stored("Ingress", "lawyershub")
    rules = copy.deepcopy(ingress["spec"]["rules"])
    hotfix = {"service": {"name": "backend-hotfix", "port": {"number": 9090}}}
    rules[0]["http"]["paths"][0]["backend"] = hotfix
    world.kube.edit("Ingress", "lawyershub", {"spec": {"rules": rules}})
    outcome = DisableMaintenance().run(world.ctx(spec))
    drift = (
        "Ingress lawyershub lawyershub.example/api now points to backend-hotfix:9090, "
        "left as is (was backend:8080)"
    )
    assert outcome == Done(
        f"restored 1 backend(s) of Ingress lawyershub; drift: {drift}", warnings=(drift,)
    )
    paths = world.kube.stored("Ingress", "lawyershub")["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"] for p in paths] == [hotfix, APP]


def test_disable_reports_a_removed_rule_as_drift() -> None:
    """A path removed meanwhile is not recreated: the SRE decides."""
    world = lawyershub()
    spec = make_spec()
    switched(world, spec)
    rules = copy.deepcopy(world.kube.stored("Ingress", "lawyershub")["spec"]["rules"])
    del rules[0]["http"]["paths"][1]
    world.kube.edit("Ingress", "lawyershub", {"spec": {"rules": rules}})
    outcome = DisableMaintenance().run(world.ctx(spec))
    assert isinstance(outcome, Done)
    assert outcome.warnings == (
        "Ingress lawyershub lawyershub.example/ now points to nothing, left as is "
        "(was frontend:http)",
    )
    paths = world.kube.stored("Ingress", "lawyershub")["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"] for p in paths] == [API]


def test_disable_restores_from_the_record_not_from_a_fresh_read() -> None:
    """Safety rule 2: what is put back is what was saved, whatever the Ingress says now."""
    world = lawyershub()
    spec = make_spec()
    switched(world, spec)
    world.saved["ingresses"]["lawyershub"]["backends"][1]["backend"] = {
        "service": {"name": "frontend-v1", "port": {"name": "web"}}
    }
    DisableMaintenance().run(world.ctx(spec))
    paths = world.kube.stored("Ingress", "lawyershub")["spec"]["rules"][0]["http"]["paths"]
    assert paths[1]["backend"] == {"service": {"name": "frontend-v1", "port": {"name": "web"}}}


def test_disable_skips_an_ingress_never_switched() -> None:
    """Nothing saved means nothing changed: nothing to restore, not even a read."""
    world = lawyershub()
    world.kube.delete("Ingress", "admin")
    outcome = DisableMaintenance().run(world.ctx(make_spec(ingresses=["admin"])))
    assert outcome == Done("restored 0 backend(s) of Ingress admin")
    assert world.kube.patches == []


def test_disable_fails_when_a_switched_ingress_is_gone() -> None:
    """The message says where the backends to recreate it with are."""
    world = lawyershub()
    spec = make_spec()
    switched(world, spec)
    world.kube.delete("Ingress", "lawyershub")
    outcome = DisableMaintenance().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert "status.saved.ingresses.lawyershub" in outcome.message


# --- PauseAutoscaling


def test_pause_saves_min_max_and_behavior_then_freezes_both_ways() -> None:
    """Safety rule 2, and the freeze itself: selectPolicy Disabled up and down, nothing else."""
    world = lawyershub()
    original = copy.deepcopy(world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"])
    spec = make_spec(hpas=["backend", "frontend"])
    outcome = PauseAutoscaling().run(world.ctx(spec))
    assert outcome == Done("froze HPA backend, frontend")
    # Both originals in one write, before the first freeze.
    assert world.events() == ["persist_saved", "patch", "patch"]
    assert world.log[0][1]["hpas"] == {
        "backend": {"minReplicas": 2, "maxReplicas": 10, "behavior": BEHAVIOR},
        "frontend": {"minReplicas": 2, "maxReplicas": 10, "behavior": None},
    }
    # Each freeze at the version it was decided on: a change made since is a conflict.
    assert [{k: v for k, v in p.body.items() if k != "metadata"} for p in world.kube.patches] == [
        FREEZE_PATCH,
        FREEZE_PATCH,
    ]
    assert all(p.body["metadata"]["resourceVersion"] for p in world.kube.patches)
    assert [p.path for p in world.kube.patches] == [
        hpa_path(NS, "backend"),
        hpa_path(NS, "frontend"),
    ]
    frozen = world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"]
    assert is_frozen({"spec": frozen})
    assert frozen["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert {k: v for k, v in frozen.items() if k != "behavior"} == {
        k: v for k, v in original.items() if k != "behavior"
    }
    assert is_frozen(world.kube.stored("HorizontalPodAutoscaler", "frontend"))


def test_pause_is_idempotent_and_never_saves_its_own_freeze() -> None:
    """A re-run must not patch again, nor replace the original with the frozen state."""
    world = lawyershub()
    spec = make_spec(hpas=["backend"])
    PauseAutoscaling().run(world.ctx(spec))
    saved = copy.deepcopy(world.saved)
    world.saved.clear()
    world.saved.update(copy.deepcopy(saved))
    assert PauseAutoscaling().run(world.ctx(spec)) == Done("froze HPA backend")
    assert world.events() == ["persist_saved", "patch"]
    assert world.saved == saved


def test_pause_does_not_patch_an_hpa_already_frozen() -> None:
    """An HPA frozen by hand is recorded as it is (so resuming leaves it frozen) and not patched."""
    world = lawyershub()
    frozen = merge_patch(BEHAVIOR, FREEZE_PATCH["spec"]["behavior"])
    world.kube.add("HorizontalPodAutoscaler", hpa("backend", "backend", behavior=frozen))
    PauseAutoscaling().run(world.ctx(make_spec(hpas=["backend"])))
    assert world.events() == ["persist_saved"]
    assert world.saved["hpas"]["backend"]["behavior"] == frozen


def test_pause_fails_when_an_hpa_is_gone() -> None:
    """Preflight found it; gone now means someone else is at work."""
    world = lawyershub()
    world.kube.delete("HorizontalPodAutoscaler", "frontend")
    outcome = PauseAutoscaling().run(world.ctx(make_spec(hpas=["frontend"])))
    assert outcome == Fail("HorizontalPodAutoscaler 'frontend' disappeared during the rollback")


# --- ResumeAutoscaling


def paused(world: World, spec: RollbackSpec) -> None:
    assert isinstance(PauseAutoscaling().run(world.ctx(spec)), Done)
    world.log.clear()


def test_resume_restores_the_behavior_exactly() -> None:
    """The HPA scales again exactly as the team configured it."""
    world = lawyershub()
    original = copy.deepcopy(world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"])
    spec = make_spec(hpas=["backend"])
    paused(world, spec)
    outcome = ResumeAutoscaling().run(world.ctx(spec))
    assert outcome == Done("resumed HPA backend")
    assert world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"] == original
    patch = world.kube.patches[-1]  # one call: put back only while still frozen, no read first
    assert patch.content_type == JSON_PATCH and world.log == [("patch", patch.path)]
    assert patch.body == [
        {"op": "test", "path": "/spec/behavior/scaleUp/selectPolicy", "value": "Disabled"},
        {"op": "test", "path": "/spec/behavior/scaleDown/selectPolicy", "value": "Disabled"},
        {"op": "replace", "path": "/spec/behavior", "value": BEHAVIOR},
    ]


@pytest.mark.parametrize("read_back_without_nulls", [False, True])
def test_resume_of_an_hpa_without_behavior_removes_it(read_back_without_nulls: bool) -> None:
    """No behavior before the freeze: the resume removes the behavior, which removes the
    freeze, also when the saved null was dropped by the API server."""
    world = lawyershub()
    original = copy.deepcopy(world.kube.stored("HorizontalPodAutoscaler", "frontend")["spec"])
    spec = make_spec(hpas=["frontend"])
    paused(world, spec)
    if read_back_without_nulls:
        del world.saved["hpas"]["frontend"]["behavior"]
    ResumeAutoscaling().run(world.ctx(spec))
    assert world.kube.patches[-1].body[-1] == {"op": "remove", "path": "/spec/behavior"}
    assert world.kube.stored("HorizontalPodAutoscaler", "frontend")["spec"] == original


def test_resume_reports_max_replicas_drift_and_keeps_it() -> None:
    """Someone raised maxReplicas during the incident: theirs is newer, it stays, and is reported;
    the behavior is still unfrozen."""
    world = lawyershub()
    spec = make_spec(hpas=["backend"])
    paused(world, spec)
    world.kube.edit("HorizontalPodAutoscaler", "backend", {"spec": {"maxReplicas": 20}})
    outcome = ResumeAutoscaling().run(world.ctx(spec))
    drift = "HPA backend maxReplicas is now 20 (was 10), left as is"
    assert outcome == Done(f"resumed HPA backend; drift: {drift}", warnings=(drift,))
    patch = world.kube.patches[-1]
    assert not [op for op in patch.body if "maxReplicas" in op["path"]]
    stored = world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"]
    assert stored["maxReplicas"] == 20
    assert stored["behavior"] == BEHAVIOR


def test_resume_leaves_a_behavior_someone_changed() -> None:
    """An HPA unfrozen by hand to a new behavior keeps it; the change is reported."""
    world = lawyershub()
    spec = make_spec(hpas=["backend"])
    paused(world, spec)
    world.kube.edit(
        "HorizontalPodAutoscaler",
        "backend",
        {"spec": {"behavior": {"scaleUp": {"selectPolicy": "Min"}}}},
    )
    patches = len(world.kube.patches)
    outcome = ResumeAutoscaling().run(world.ctx(spec))
    assert isinstance(outcome, Done)
    assert outcome.warnings == ("HPA backend behavior was changed during the rollback, left as is",)
    # Only the guarded patch, refused by its test: the behavior is theirs, untouched.
    assert [p.content_type for p in world.kube.patches[patches:]] == [JSON_PATCH]
    behavior = world.kube.stored("HorizontalPodAutoscaler", "backend")["spec"]["behavior"]
    assert behavior["scaleUp"]["selectPolicy"] == "Min"


def test_resume_is_idempotent_and_skips_what_was_never_frozen() -> None:
    """A re-run patches nothing; an HPA without a saved record was never frozen by this run."""
    world = lawyershub()
    spec = make_spec(hpas=["backend", "frontend"])
    PauseAutoscaling().run(world.ctx(make_spec(hpas=["backend"])))
    ResumeAutoscaling().run(world.ctx(spec))
    versions = [
        world.kube.stored("HorizontalPodAutoscaler", n)["metadata"]["resourceVersion"]
        for n in ("backend", "frontend")
    ]
    assert ResumeAutoscaling().run(world.ctx(spec)) == Done("resumed HPA backend, frontend")
    assert versions == [
        world.kube.stored("HorizontalPodAutoscaler", n)["metadata"]["resourceVersion"]
        for n in ("backend", "frontend")
    ]
    assert not is_frozen(world.kube.stored("HorizontalPodAutoscaler", "frontend"))


def test_resume_fails_when_a_frozen_hpa_is_gone() -> None:
    """The message says where its settings are saved."""
    world = lawyershub()
    spec = make_spec(hpas=["backend"])
    paused(world, spec)
    world.kube.delete("HorizontalPodAutoscaler", "backend")
    outcome = ResumeAutoscaling().run(world.ctx(spec))
    assert outcome == Fail(
        "HorizontalPodAutoscaler 'backend' disappeared; recreate it from status.saved.hpas.backend"
    )


# --- RevertWorkloads


def test_revert_changes_only_the_selected_containers() -> None:
    """`containers: [api]` reverts api only; no list reverts every container; an init container
    on a reverted repository (backend's `migrate`) is reverted with them. Registry port and
    path are kept, the digest dropped."""
    world = lawyershub()
    outcome = RevertWorkloads().run(world.ctx(make_spec()))
    assert isinstance(outcome, Wait)
    assert images(world, "backend") == {
        "api": f"{REGISTRY}/backend:stable-last-known",
        "envoy": "envoyproxy/envoy:v1.29",
    }
    assert images(world, "frontend") == {
        "web": f"{REGISTRY}/frontend:stable-last-known",
        "metrics": f"{REGISTRY}/exporter:stable-last-known",
    }
    assert init_images(world, "backend") == {"migrate": f"{REGISTRY}/backend:stable-last-known"}
    backend_patch = world.kube.patches[0]
    assert backend_patch.content_type == STRATEGIC_MERGE_PATCH
    assert backend_patch.body == pod_patch(
        containers=[{"name": "api", "image": f"{REGISTRY}/backend:stable-last-known"}],
        initContainers=[{"name": "migrate", "image": f"{REGISTRY}/backend:stable-last-known"}],
    )


def test_revert_leaves_an_init_container_of_another_repository_alone() -> None:
    """Unlisted init containers follow the reverted repositories: one waiting for the database
    on its own image keeps it, in the patch and in the record."""
    world = World()
    world.kube.add(
        "Deployment",
        deployment(
            "backend",
            {"api": f"{REGISTRY}/backend:v2.1.0"},
            init={"wait-for-db": "busybox:1.36", "migrate": f"{REGISTRY}/backend:v2.1.0"},
        ),
    )
    spec = make_spec(workloads=[{"deployment": "backend"}])
    RevertWorkloads().run(world.ctx(spec))
    assert init_images(world, "backend") == {
        "wait-for-db": "busybox:1.36",
        "migrate": f"{REGISTRY}/backend:stable-last-known",
    }
    assert world.saved["deployments"]["backend"]["initImages"] == {
        "migrate": f"{REGISTRY}/backend:v2.1.0"
    }


def test_revert_follows_the_repositories_of_every_workload() -> None:
    """A worker whose init container migrates with the backend's image: the backend's
    repository is reverted by the request, so that init container is too."""
    world = lawyershub()
    world.kube.add(
        "Deployment",
        deployment(
            "worker",
            {"work": f"{REGISTRY}/worker:v2.1.0"},
            init={"migrate": f"{REGISTRY}/backend:v2.1.0"},
        ),
    )
    spec = make_spec(workloads=[{"deployment": "backend"}, {"deployment": "worker"}])
    RevertWorkloads().run(world.ctx(spec))
    assert init_images(world, "worker") == {"migrate": f"{REGISTRY}/backend:stable-last-known"}


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        (["migrate"], f"{REGISTRY}/backend:stable-last-known"),
        ([], f"{REGISTRY}/backend:v2.1.0"),
    ],
    ids=["listed", "none"],
)
def test_revert_takes_listed_init_containers_as_written(listed: list[str], expected: str) -> None:
    """`initContainers` names exactly those reverted; an empty list reverts none."""
    world = lawyershub()
    spec = make_spec(
        workloads=[{"deployment": "backend", "containers": ["api"], "initContainers": listed}]
    )
    RevertWorkloads().run(world.ctx(spec))
    assert init_images(world, "backend") == {"migrate": expected}
    assert images(world, "backend")["api"] == f"{REGISTRY}/backend:stable-last-known"


def test_revert_restarts_when_containers_and_init_containers_are_at_the_target() -> None:
    """An init container still on the bad image is a change: no restart annotation then; once
    every selected image is at the target, the restart."""
    world = World()
    world.kube.add(
        "Deployment",
        deployment(
            "backend",
            {"api": f"{REGISTRY}/backend:stable-last-known"},
            init={"migrate": f"{REGISTRY}/backend:v2.1.0"},
        ),
    )
    spec = make_spec(workloads=[{"deployment": "backend"}])
    RevertWorkloads().run(world.ctx(spec))
    (patch,) = world.kube.patches
    assert patch.body == pod_patch(
        initContainers=[{"name": "migrate", "image": f"{REGISTRY}/backend:stable-last-known"}]
    )


def test_revert_saves_the_previous_images_before_patching() -> None:
    """Safety rule 2: the images before the rollback are recorded first, digest included."""
    world = lawyershub()
    RevertWorkloads().run(world.ctx(make_spec()))
    # Every original in one write, before the first patch.
    assert world.events() == ["persist_saved", "patch", "patch"]
    assert world.log[0][1]["deployments"]["backend"] == {
        "images": {"api": f"{REGISTRY}/backend:v2.1.0@{DIGEST}"},
        "initImages": {"migrate": f"{REGISTRY}/backend:v2.1.0"},
        "restartedAt": "2026-01-10T03:00:00Z",
    }
    assert set(world.log[0][1]["deployments"]) == {"backend", "frontend"}
    assert world.saved["deployments"]["frontend"]["images"] == {
        "web": f"{REGISTRY}/frontend:v2.1.0",
        "metrics": f"{REGISTRY}/exporter:v2.1.0",
    }


def test_revert_waits_for_the_rollouts_then_succeeds() -> None:
    """Wait while a Deployment rolls out; Done once every rollout is complete, no new patch."""
    world = lawyershub()
    step, spec = RevertWorkloads(), make_spec()
    outcome = step.run(world.ctx(spec))
    assert outcome == Wait(
        "rolling out: backend: waiting for the controller to see the new spec; "
        "frontend: waiting for the controller to see the new spec",
        retry_after=4.0,  # or sooner: the runner calls it again when the watches see a change
    )
    world.kube.finish_rollouts()
    patches = len(world.kube.patches)
    world.clock = T0 + timedelta(seconds=30)
    outcome = called_until(lambda: step.run(world.ctx(spec)), lambda o: isinstance(o, Done))
    assert outcome == Done(
        f"rolled out backend/api: {REGISTRY}/backend:stable-last-known, "
        f"backend/migrate (init): {REGISTRY}/backend:stable-last-known, "
        f"frontend/web: {REGISTRY}/frontend:stable-last-known, "
        f"frontend/metrics: {REGISTRY}/exporter:stable-last-known"
    )
    assert len(world.kube.patches) == patches, "a re-run must not patch again"


def test_revert_restarts_a_deployment_already_at_the_target_tag() -> None:
    """Same image string, new build behind the tag: only a restart makes the pods pull it. The
    annotation's value is saved with the images, so a re-run (even with another start time)
    writes the same value and does not roll out twice."""
    world = World()
    world.kube.add(
        "Deployment", deployment("backend", {"api": f"{REGISTRY}/backend:stable-last-known"})
    )
    spec = make_spec(workloads=[{"deployment": "backend"}])
    started = datetime(2026, 1, 10, 3, 4, 5, 678000, tzinfo=UTC)
    assert isinstance(RevertWorkloads().run(world.ctx(spec, started=started)), Wait)
    (patch,) = world.kube.patches
    assert patch.body == {
        "metadata": {"resourceVersion": "1"},
        "spec": {
            "template": {"metadata": {"annotations": {RESTART_ANNOTATION: "2026-01-10T03:04:05Z"}}}
        },
    }
    world.kube.finish_rollouts()
    later = started + timedelta(minutes=3)
    rerun = called_until(
        lambda: RevertWorkloads().run(world.ctx(spec, started=later)), lambda o: isinstance(o, Done)
    )
    assert isinstance(rerun, Done)
    assert len(world.kube.patches) == 1


def test_revert_adds_no_restart_when_the_image_changes() -> None:
    """A new image rolls the pods out by itself: a restart annotation would be noise."""
    world = lawyershub()
    RevertWorkloads().run(world.ctx(make_spec()))
    for patch in world.kube.patches:
        assert "metadata" not in patch.body["spec"]["template"]


def test_revert_fails_after_the_rollout_timeout_with_maintenance_still_on() -> None:
    """Safety rule 4: a rollout that does not finish in time stops the run, and the message
    says the site is still on the maintenance page and what to do next."""
    world = lawyershub()
    spec = make_spec(rollout_timeout="90s")
    assert isinstance(RevertWorkloads().run(world.ctx(spec)), Wait)
    world.clock = T0 + timedelta(seconds=89)
    assert isinstance(RevertWorkloads().run(world.ctx(spec)), Wait)
    world.clock = T0 + timedelta(seconds=90)
    outcome = RevertWorkloads().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith(
        "rollout did not complete within 90s: backend: waiting for the controller"
    )
    assert "The maintenance page is still on" in outcome.message
    assert f"kubectl -n {NS} describe deployment" in outcome.message


def test_revert_fails_at_once_on_a_progress_deadline() -> None:
    """A rollout the controller gave up on will not finish: fail now, not at the timeout."""
    world = lawyershub()
    spec = make_spec(workloads=[{"deployment": "frontend"}])
    RevertWorkloads().run(world.ctx(spec))
    stuck = world.kube.changed("Deployment", "frontend")
    stuck["status"] = {
        "observedGeneration": stuck["metadata"]["generation"],
        "replicas": 3,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "frontend-5c" has timed out progressing.',
            }
        ],
    }
    outcome = called_until(
        lambda: RevertWorkloads().run(world.ctx(spec)), lambda o: isinstance(o, Fail)
    )
    assert isinstance(outcome, Fail)
    assert "frontend: progress deadline exceeded" in outcome.message
    assert 'ReplicaSet "frontend-5c" has timed out progressing.' in outcome.message
    assert "The maintenance page is still on" in outcome.message


def test_revert_fails_when_a_deployment_is_gone() -> None:
    """Preflight saw it; gone now is a human's doing."""
    world = lawyershub()
    world.kube.delete("Deployment", "frontend")
    outcome = RevertWorkloads().run(world.ctx(make_spec()))
    assert outcome == Fail("Deployment 'frontend' disappeared during the rollback")


def test_revert_plan_reads_only() -> None:
    """A dry run lists each container's change, and a restart where the tag is the same."""
    world = lawyershub()
    world.kube.add("Deployment", deployment("search", {"es": "search:stable-last-known"}))
    spec = make_spec(
        workloads=[{"deployment": "backend", "containers": ["api"]}, {"deployment": "search"}]
    )
    plan = RevertWorkloads().plan(world.ctx(spec))
    assert plan == (
        f"would set backend/api: {REGISTRY}/backend:v2.1.0@{DIGEST} -> "
        f"{REGISTRY}/backend:stable-last-known; backend/migrate (init): "
        f"{REGISTRY}/backend:v2.1.0 -> {REGISTRY}/backend:stable-last-known; "
        "search/es: restart at search:stable-last-known"
    )
    assert world.kube.patches == [] and world.saved == {}


# --- Verify


def test_verify_passes_when_every_deployment_runs_the_target_and_is_available() -> None:
    """Traffic returns only to an application that runs the target images and serves."""
    world = lawyershub()
    spec = make_spec()
    RevertWorkloads().run(world.ctx(spec))
    world.kube.finish_rollouts()
    passed = Done("2 Deployment(s) Available at stable-last-known")
    assert called_until(lambda: Verify().run(world.ctx(spec)), lambda o: o == passed) == passed


def test_verify_waits_then_fails_with_the_maintenance_page_on() -> None:
    """An image changed back by someone, or pods not Available: wait, then fail at the timeout
    with the site still on the maintenance page (safety rule 4)."""
    world = lawyershub()
    spec = make_spec(rollout_timeout="60s")
    RevertWorkloads().run(world.ctx(spec))
    world.kube.finish_rollouts()
    world.kube.changed("Deployment", "frontend")["status"]["conditions"] = []
    world.kube.edit(
        "Deployment",
        "backend",
        {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:v2"}]}}}},
    )
    world.kube.finish_rollouts()
    world.kube.changed("Deployment", "frontend")["status"]["conditions"] = []
    problems = (
        f"backend/api runs api:v2, not {REGISTRY}/backend:stable-last-known; "
        "frontend: not Available"
    )
    waiting = Wait(f"waiting for: {problems}", retry_after=4.0)
    assert called_until(lambda: Verify().run(world.ctx(spec)), lambda o: o == waiting) == waiting
    world.clock = T0 + timedelta(seconds=60)
    outcome = Verify().run(world.ctx(spec))
    assert isinstance(outcome, Fail)
    assert outcome.message.startswith(f"verification failed: {problems}. ")
    assert "The maintenance page stays on" in outcome.message
    assert world.kube.patches[-1].path != ingress_path(NS, "lawyershub")


def test_verify_waits_for_an_init_container_put_back_on_the_bad_image() -> None:
    """The reverted init containers are checked as the containers are: one changed back since
    RevertWorkloads keeps traffic off."""
    world = lawyershub()
    spec = make_spec(workloads=[{"deployment": "backend", "containers": ["api"]}])
    RevertWorkloads().run(world.ctx(spec))
    world.kube.edit(
        "Deployment",
        "backend",
        {
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [
                            {"name": "migrate", "image": f"{REGISTRY}/backend:v2.1.0"}
                        ]
                    }
                }
            }
        },
    )
    world.kube.finish_rollouts()
    waiting = Wait(
        f"waiting for: backend/migrate (init) runs {REGISTRY}/backend:v2.1.0, not "
        f"{REGISTRY}/backend:stable-last-known",
        retry_after=4.0,
    )
    assert called_until(lambda: Verify().run(world.ctx(spec)), lambda o: o == waiting) == waiting


@pytest.mark.parametrize(("waited", "interval"), [(0, 0.25), (1, 0.25), (8, 2.0), (60, 5.0)])
def test_rollouts_are_polled_less_often_the_longer_they_take(
    waited: float, interval: float
) -> None:
    """A quarter of the time waited, between 0.25 s and 5 s: quick rollouts are seen quickly,
    and a hundred slow ones do not poll a busy control plane into the ground."""
    world = lawyershub()
    ctx = world.ctx(make_spec())
    world.clock = ctx.step_started_at + timedelta(seconds=waited)
    assert poll_interval(ctx) == interval


# --- an HPA owned by a KEDA ScaledObject that SuspendGitOps paused: KEDA deletes it


def _keda_paused(world: World, hpa_name: str) -> None:
    world.ledger.save(
        "gitops",
        f"ScaledObject/{NS}/{hpa_name}",
        {
            "kind": "ScaledObject",
            "namespace": NS,
            "name": hpa_name,
            "manages": [f"HorizontalPodAutoscaler/{hpa_name}"],
        },
    )


def test_pause_and_resume_accept_an_hpa_keda_deleted_while_its_scaledobject_is_paused() -> None:
    world = lawyershub()
    _keda_paused(world, "backend")
    world.kube.delete("HorizontalPodAutoscaler", "backend")
    spec = make_spec(hpas=["backend", "frontend"])
    outcome = PauseAutoscaling().run(world.ctx(spec))
    assert isinstance(outcome, Done), outcome
    assert "ScaledObject lawyershub/backend is paused: KEDA holds it" in outcome.message
    assert "backend" not in world.saved["hpas"] and "frontend" in world.saved["hpas"]
    outcome = ResumeAutoscaling().run(world.ctx(spec))
    assert isinstance(outcome, Done), outcome
    assert "held by KEDA, paused: HPA backend (ScaledObject lawyershub/backend)" in outcome.message
    assert not outcome.warnings


def test_pause_still_fails_when_an_hpa_no_paused_scaledobject_owns_is_gone() -> None:
    world = lawyershub()
    _keda_paused(world, "backend")
    world.kube.delete("HorizontalPodAutoscaler", "frontend")
    outcome = PauseAutoscaling().run(world.ctx(make_spec(hpas=["frontend"])))
    assert outcome == Fail("HorizontalPodAutoscaler 'frontend' disappeared during the rollback")


def test_preflight_records_the_gates_the_admins_settings_set_and_why() -> None:
    """The namespace's RollbackPolicy adds QA's sign-off the request did not ask for; the
    cluster-wide one (in the operator's namespace) is read too."""
    world = lawyershub()
    world.kube.add(
        "RollbackPolicy",
        {
            "metadata": {"name": "default"},
            "spec": {"approvals": [{"step": "Verify", "groups": ["qa-leads"]}]},
        },
    )
    world.kube.add(
        "RollbackPolicy",
        {"metadata": {"name": "default", "namespace": "rollback-operator"}, "spec": {}},
    )
    outcome = Preflight().run(world.ctx(make_spec()))
    assert isinstance(outcome, Done)
    assert outcome.message.endswith(
        "; approvals: Verify by a member of group qa-leads, also of group qa (the namespace's "
        "RollbackPolicy)"
    )
    assert world.ledger.section("gates") == [
        {
            "step": "Verify",
            "groups": [["qa"], ["qa-leads"]],
            "who": "a member of group qa-leads, also of group qa",
            "requiredBy": "the namespace's RollbackPolicy",
        }
    ]


# --- Preflight's reads, handed to the steps that change the objects


def test_preflight_reads_feed_the_steps_that_change_them_at_the_version_read() -> None:
    """EnableMaintenance, PauseAutoscaling and RevertWorkloads start from Preflight's reads
    (no read of their own), and each write carries the version read: a change made since is a
    conflict, and the step, run again, reads afresh."""
    world = lawyershub()
    world.seen = Seen()
    spec = make_spec(hpas=["backend", "frontend"])
    assert isinstance(Preflight().run(world.ctx(spec)), Done)
    reads: list[str] = []
    for kind in ("ingress", "hpa", "deployment"):
        original = getattr(world.kube, kind)
        setattr(
            world.kube,
            kind,
            lambda ns, name, kind=kind, original=original: reads.append(kind) or original(ns, name),
        )
    assert isinstance(EnableMaintenance().run(world.ctx(spec)), Done)
    assert isinstance(PauseAutoscaling().run(world.ctx(spec)), Done)
    RevertWorkloads().run(world.ctx(spec))
    assert reads == []
    assert all(p.body["metadata"]["resourceVersion"] for p in world.kube.patches)

    # Changed since Preflight read it: the freeze is refused, and the next run reads again.
    world = lawyershub()
    world.seen = Seen()
    assert isinstance(Preflight().run(world.ctx(spec)), Done)
    world.kube.edit("HorizontalPodAutoscaler", "backend", {"spec": {"maxReplicas": 12}})
    with pytest.raises(ApiError) as conflict:
        PauseAutoscaling().run(world.ctx(spec))
    assert conflict.value.status == 409
    assert isinstance(PauseAutoscaling().run(world.ctx(spec)), Done)
