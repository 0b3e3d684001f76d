"""The sample application of examples/, deployed into a test's namespace, and helpers to drive
RollbackRequests and the operator process against it."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from rollback_operator import GROUP, PLURAL, VERSION
from standins.local import stop_process, wait_until
from tests.e2e.support import REPO_ROOT

MAINTENANCE = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
REGISTRY = "registry.lawyershub.example:5000/lawyershub"


def sample_objects() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((REPO_ROOT / "examples" / "lawyershub.yaml").read_text())
    return [d for d in docs if d and d["kind"] != "Namespace"]


def deploy_app(
    api: client.ApiClient, namespace: str, *, min_ready_seconds: dict[str, int] | None = None
) -> None:
    """Creates the sample in `namespace` and waits until every Deployment is rolled out.

    `min_ready_seconds` slows a Deployment's rollouts down (pods count as available only after
    that long), so a test can act while the operator waits on it.
    """
    for original in sample_objects():
        obj = copy.deepcopy(original)
        obj["metadata"]["namespace"] = namespace
        _create(api, namespace, obj)
    apps = client.AppsV1Api(api)
    for name in ("frontend", "backend", "maintenance-page"):
        wait_until(
            lambda n=name: rolled_out(apps.read_namespaced_deployment(n, namespace)),
            timeout=90,
            what=f"{name} rolled out",
        )
    # Slowed down only once rolled out: this affects the next rollout, not the first.
    for name, seconds in (min_ready_seconds or {}).items():
        apps.patch_namespaced_deployment(
            name,
            namespace,
            {"spec": {"minReadySeconds": seconds, "progressDeadlineSeconds": seconds + 600}},
            _content_type="application/merge-patch+json",
        )


@contextmanager
def fresh_namespace(api: client.ApiClient) -> Iterator[str]:
    """A new namespace, its default ServiceAccount awaited; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _create(api: client.ApiClient, namespace: str, obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    if kind == "Deployment":
        client.AppsV1Api(api).create_namespaced_deployment(namespace, obj)
    elif kind == "Service":
        client.CoreV1Api(api).create_namespaced_service(namespace, obj)
    elif kind == "Ingress":
        client.NetworkingV1Api(api).create_namespaced_ingress(namespace, obj)
    elif kind == "HorizontalPodAutoscaler":
        client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(namespace, obj)
    else:
        raise ValueError(kind)


def rolled_out(d: Any) -> bool:
    s = d.status
    wanted = d.spec.replicas
    return bool(
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == wanted
        and (s.replicas or 0) == wanted
        and (s.available_replicas or 0) == wanted
    )


def request_body(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reason": "Error rate 7.2 % for 15 min after go-live",
        "trigger": "ErrorRate",
        "traffic": {
            "ingresses": ["lawyershub"],
            "maintenanceBackend": {"service": "maintenance-page", "port": 80},
        },
        "autoscaling": {"hpas": ["backend", "frontend"]},
        "workloads": [{"deployment": "backend", "containers": ["api"]}, {"deployment": "frontend"}],
        "rolloutTimeout": "2m",
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": body,
    }


def create_request(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, request_body(name, **spec)
    )


def dry_run(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """The request as the API server would store it, its defaults applied, created as a
    server-side dry run: nothing is stored."""
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, request_body(name, **spec), dry_run="All"
    )
    return created


def refusal(api: client.ApiClient, namespace: str, **spec: Any) -> str:
    """The message with which the API server refuses (422) a request with `spec`, tried as a
    dry run; the test fails if it is accepted."""
    with pytest.raises(ApiException) as refused:
        dry_run(api, namespace, "bad", **spec)
    assert refused.value.status == 422
    return str(json.loads(refused.value.body)["message"])


def get_request(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return result


def wait_phase(
    api: client.ApiClient, namespace: str, name: str, *phases: str, timeout: float = 90
) -> dict[str, Any]:
    """The request once in one of `phases`; for a terminal phase, once its end is announced
    too (status.announced: the post-mortem, the outcome Event and the notifications are in)."""

    def reached() -> dict[str, Any] | None:
        obj = get_request(api, namespace, name)
        status = obj.get("status", {})
        if status.get("phase") not in phases or status.get("announced") is False:
            return None
        return obj

    return wait_until(reached, timeout=timeout, what=f"{name} to reach {'/'.join(phases)}")


def wait_outcome(
    api: client.ApiClient, namespace: str, name: str, phase: str, *, timeout: float = 90
) -> dict[str, Any]:
    """The request once it is in `phase` (Succeeded, Failed, AwaitingApproval...) or has ended
    otherwise; anything but `phase` fails the test with the request's own message, which says
    why the run went elsewhere."""
    obj = wait_phase(
        api, namespace, name, *dict.fromkeys((phase, "Succeeded", "Failed")), timeout=timeout
    )
    status = obj["status"]
    assert status["phase"] == phase, status.get("message")
    return obj


def run_request(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phase: str,
    *,
    timeout: float = 90,
    **spec: Any,
) -> dict[str, Any]:
    """Creates the request (the sample's spec with `spec` on top) and waits for `phase`, as
    `wait_outcome` does."""
    create_request(api, namespace, name, **spec)
    return wait_outcome(api, namespace, name, phase, timeout=timeout)


def ledger(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in obj["status"]["steps"]}


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    """The request's conditions, type to status."""
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def backends(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """Where the sample's Ingress sends each of its paths now, as the API server has it."""
    ingress = client.NetworkingV1Api(api).read_namespaced_ingress("lawyershub", namespace)
    raw = api.sanitize_for_serialization(ingress)
    return [p["backend"] for r in raw["spec"]["rules"] for p in r["http"]["paths"]]


def on_maintenance(api: client.ApiClient, namespace: str) -> bool:
    """Whether every path of the sample's Ingress is on the maintenance page."""
    return all(b == MAINTENANCE for b in backends(api, namespace))


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return [e for e in events if e.involved_object.kind == "RollbackRequest"]


def snapshot(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """What the operator may change, as the API server has it: specs, generations, annotations."""
    apps, net, hpa, core = (
        client.AppsV1Api(api),
        client.NetworkingV1Api(api),
        client.AutoscalingV2Api(api),
        client.CoreV1Api(api),
    )

    def strip(items: list[Any]) -> dict[str, Any]:
        out = {}
        for item in items:
            raw = api.sanitize_for_serialization(item)
            out[raw["metadata"]["name"]] = {
                "spec": raw.get("spec"),
                "generation": raw["metadata"].get("generation"),
                "annotations": raw["metadata"].get("annotations"),
                "labels": raw["metadata"].get("labels"),
            }
        return out

    return {
        "ingresses": strip(net.list_namespaced_ingress(namespace).items),
        "deployments": strip(apps.list_namespaced_deployment(namespace).items),
        "hpas": strip(hpa.list_namespaced_horizontal_pod_autoscaler(namespace).items),
        "services": strip(core.list_namespaced_service(namespace).items),
    }


class Operator:
    """The operator as a real process, watching one namespace; it can be SIGKILLed and restarted."""

    def __init__(
        self,
        namespace: str,
        kubeconfig: str,
        log_dir: Path,
        metrics_port: int | None = None,
        *,
        identity: str | None = None,
        lease_namespace: str | None = None,
        also_watch: tuple[str, ...] = (),
    ) -> None:
        self.namespace, self.kubeconfig, self.log_dir = namespace, kubeconfig, log_dir
        self.also_watch = also_watch  # more namespaces to watch
        self.metrics = f"127.0.0.1:{metrics_port}" if metrics_port else ""
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # As a pod's: a restart is the same holder of the leader Lease, and leads at once.
        self.env = {"POD_NAME": identity or f"operator-{namespace}"}
        if lease_namespace:
            self.env["POD_NAMESPACE"] = lease_namespace

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.env['POD_NAME']}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rollback_operator",
                *(f"--namespace={ns}" for ns in (self.namespace, *self.also_watch)),
                "--liveness=",
                f"--metrics={self.metrics}",
            ],
            env={**os.environ, "KUBECONFIG": self.kubeconfig, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write, as a node failure would do."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.log_dir.glob(f"{self.env['POD_NAME']}-*.log"))
        )


@contextmanager
def running_operator(
    namespace: str, kubeconfig: str, log_dir: Path, metrics_port: int | None = None
) -> Iterator[Operator]:
    operator = Operator(namespace, kubeconfig, log_dir, metrics_port)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
