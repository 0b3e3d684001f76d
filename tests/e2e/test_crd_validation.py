"""The API server itself refuses a bad RollbackRequest, with a message that says what is wrong.

Every rule lives in the CRD schema (OpenAPI v3 plus CEL), so a typo in a request made at 3 a.m.
is rejected by `kubectl apply` before the operator ever sees it. These tests send each kind of
bad input to a real API server and check both the 422 and the text an SRE will read.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.model import ABORT_ANNOTATION, APPROVED_BY_ANNOTATION, MAX_REQUEST_NAME
from rollback_operator.steps.jobs import REQUEST_LABEL
from standins.local import wait_until
from tests.e2e.lawyershub import Operator, run_request
from tests.e2e.people import DBA, approve, as_person, install_approval_policy, waiting_for

pytestmark = pytest.mark.e2e


Body = dict[str, Any]

STEP_NAMES = [
    "Preflight",
    "EnableMaintenance",
    "PauseAutoscaling",
    "RevertWorkloads",
    "PurgeCDN",
    "MigrateDatabaseDown",
    "RestoreDatabase",
    "Verify",
    "ResumeAutoscaling",
    "DisableMaintenance",
    "Monitor",
    "Report",
]


def _minimal_spec() -> Body:
    """The smallest spec the API accepts: only the required fields."""
    return {
        "reason": "Error rate 7.2 % for 15 min after go-live",
        "trigger": "ErrorRate",
        "traffic": {
            "ingresses": ["lawyershub"],
            "maintenanceBackend": {"service": "maintenance-page", "port": 80},
        },
        "workloads": [{"deployment": "backend", "containers": ["api"]}, {"deployment": "frontend"}],
    }


def _request(name: str, spec: Body) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": spec,
    }


def _objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _create(api: client.ApiClient, namespace: str, body: Body, **kwargs: Any) -> Body:
    result: Body = _objects(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, **kwargs
    )
    return result


def _get(api: client.ApiClient, namespace: str, name: str) -> Body:
    result: Body = _objects(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return result


def _message(error: ApiException) -> str:
    """The API server's Status message, the text `kubectl` prints to the user."""
    return str(json.loads(error.body)["message"])


# --- invalid specs ---------------------------------------------------------------------------

Mutation = Callable[[Body], None]


def _set(path: str, value: Any) -> Mutation:
    """Sets a dotted path (list indexes as numbers) in the spec to `value`."""

    def mutate(spec: Body) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    """Removes a dotted path from the spec."""

    def mutate(spec: Body) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


INVALID_SPECS: list[tuple[str, Mutation, list[str]]] = [
    ("missing reason", _delete("reason"), ["spec.reason: Required value"]),
    (
        "blank reason",
        _set("reason", "   "),
        ["reason must say why the rollback is requested, not only blanks"],
    ),
    (
        "unknown trigger",
        _set("trigger", "Panic"),
        ['spec.trigger: Unsupported value: "Panic"', '"ErrorRate"', '"Manual"'],
    ),
    (
        "empty ingresses",
        _set("traffic.ingresses", []),
        ["spec.traffic.ingresses", "name at least one Ingress to put on the maintenance page"],
    ),
    (
        "duplicate ingress",
        _set("traffic.ingresses", ["lawyershub", "api", "lawyershub"]),
        ['Ingress "lawyershub" is listed more than once'],
    ),
    (
        "bad ingress name",
        _set("traffic.ingresses", ["Lawyers_Hub"]),
        ['"Lawyers_Hub" is not a valid Ingress name'],
    ),
    (
        "neither ingresses nor httpRoutes",
        _delete("traffic.ingresses"),
        [
            "spec.traffic.ingresses",
            "name at least one Ingress (ingresses) or HTTPRoute (httpRoutes) to put on the "
            "maintenance page",
        ],
    ),
    (
        "empty httpRoutes",
        _set("traffic.httpRoutes", []),
        ["spec.traffic.httpRoutes", "name at least one HTTPRoute, or omit httpRoutes"],
    ),
    (
        "httpRoute of another namespace",
        _set("traffic.httpRoutes", [{"name": "shop/site"}]),
        ['"shop/site" is not a valid HTTPRoute name', "without a namespace"],
    ),
    (
        "duplicate httpRoute",
        _set("traffic.httpRoutes", [{"name": "site"}, {"name": "api"}, {"name": "site"}]),
        ["spec.traffic.httpRoutes[2]: Duplicate value", '"name":"site"'],
    ),
    (
        "too many httpRoutes",
        _set("traffic.httpRoutes", [{"name": f"route-{i}"} for i in range(33)]),
        ["spec.traffic.httpRoutes: Too many: 33: must have at most 32 items"],
    ),
    (
        "empty rule selector",
        _set("traffic.httpRoutes", [{"name": "site", "rules": []}]),
        ["rules must not be empty: omit it to switch every rule of the route"],
    ),
    (
        "duplicate rule",
        _set("traffic.httpRoutes", [{"name": "site", "rules": ["api", "web", "api"]}]),
        ['rule "api" is listed more than once'],
    ),
    (
        "bad rule name",
        _set("traffic.httpRoutes", [{"name": "site", "rules": ["API_v2"]}]),
        ['"API_v2" is not a valid rule name'],
    ),
    (
        "missing maintenanceBackend",
        _delete("traffic.maintenanceBackend"),
        ["spec.traffic.maintenanceBackend: Required value"],
    ),
    (
        "bad maintenance service name",
        _set("traffic.maintenanceBackend.service", "Maintenance.Page"),
        ['"Maintenance.Page" is not a valid Service name'],
    ),
    (
        "port 0",
        _set("traffic.maintenanceBackend.port", 0),
        ["port 0 is out of range: a port number must be between 1 and 65535"],
    ),
    (
        "port 70000",
        _set("traffic.maintenanceBackend.port", 70000),
        ["port 70000 is out of range: a port number must be between 1 and 65535"],
    ),
    (
        "port name with bad characters",
        _set("traffic.maintenanceBackend.port", "HTTP_Web"),
        ['port "HTTP_Web" is not a valid port name'],
    ),
    (
        "port name longer than 15",
        _set("traffic.maintenanceBackend.port", "maintenance-http"),
        ['port "maintenance-http" is not a valid port name'],
    ),
    (
        "port number written as a string",
        _set("traffic.maintenanceBackend.port", "8080"),
        ['port "8080" is not a valid port name', "write a port number without quotes"],
    ),
    (
        "empty hpas",
        _set("autoscaling", {"hpas": []}),
        ["hpas must not be empty: omit it to freeze every HPA of the listed Deployments"],
    ),
    (
        "duplicate hpa",
        _set("autoscaling", {"hpas": ["backend", "backend"]}),
        ['HorizontalPodAutoscaler "backend" is listed more than once'],
    ),
    (
        "empty workloads",
        _set("workloads", []),
        ["spec.workloads", "name at least one Deployment to roll back"],
    ),
    (
        "duplicate deployment",
        _set(
            "workloads",
            [{"deployment": "frontend"}, {"deployment": "backend"}, {"deployment": "backend"}],
        ),
        ['Deployment "backend" is listed more than once: give each Deployment a single entry'],
    ),
    (
        "workload without deployment",
        _set("workloads", [{"containers": ["api"]}]),
        ["spec.workloads[0].deployment: Required value"],
    ),
    (
        "more than 50 workloads",
        _set("workloads", [{"deployment": f"app-{i}"} for i in range(51)]),
        ["spec.workloads: Too many: 51: must have at most 50 items"],
    ),
    (
        "empty containers",
        _set("workloads.0.containers", []),
        ["containers must not be empty: omit it to revert every container of the Deployment"],
    ),
    (
        "duplicate container",
        _set("workloads.0.containers", ["api", "worker", "api"]),
        ['container "api" is listed more than once'],
    ),
    (
        "duplicate init container",
        _set("workloads.0.initContainers", ["migrate", "migrate"]),
        ['init container "migrate" is listed more than once'],
    ),
    (
        "bad init container name",
        _set("workloads.0.initContainers", ["Migrate"]),
        ['"Migrate" is not a valid init container name'],
    ),
    (
        "bad targetTag",
        _set("targetTag", "bad tag!"),
        ['targetTag "bad tag!" is not a valid image tag'],
    ),
    (
        "targetTag starting with a dot",
        _set("targetTag", ".stable"),
        ['targetTag ".stable" is not a valid image tag'],
    ),
    (
        "rolloutTimeout not a duration",
        _set("rolloutTimeout", "ten minutes"),
        ['rolloutTimeout "ten minutes" is not a duration: write it like 90s, 10m or 1h30m'],
    ),
    (
        "rolloutTimeout over 24h",
        _set("rolloutTimeout", "24h0m1s"),
        ['rolloutTimeout "24h0m1s" is out of range: it must be more than 0 and at most 24h'],
    ),
    (
        "rolloutTimeout over 24h in milliseconds",
        _set("rolloutTimeout", "86400001ms"),
        ['rolloutTimeout "86400001ms" is out of range'],
    ),
    (
        "rolloutTimeout zero",
        _set("rolloutTimeout", "0s"),
        ['rolloutTimeout "0s" is out of range'],
    ),
    (
        "gitops policy unknown",
        _set("gitops", {"policy": "Pause"}),
        ['spec.gitops.policy: Unsupported value: "Pause"'],
    ),
    (
        "gitops argoCDNamespace not a namespace name",
        _set("gitops", {"argoCDNamespace": "Argo_CD"}),
        ['"Argo_CD" is not a valid namespace name'],
    ),
]


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(mutate, expected, id=case) for case, mutate, expected in INVALID_SPECS],
)
def test_invalid_spec_is_refused_with_a_readable_message(
    api: client.ApiClient, namespace: str, mutate: Mutation, expected: list[str]
) -> None:
    """Bad input must stop at `kubectl apply`, and the message must say what to fix."""
    spec = _minimal_spec()
    mutate(spec)
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, _request("bad", spec))
    assert raised.value.status == 422, raised.value.body
    message = _message(raised.value)
    for text in expected:
        assert text in message, message


@pytest.mark.usefixtures("crds_installed")
def test_request_without_spec_is_refused(api: client.ApiClient, namespace: str) -> None:
    """A RollbackRequest with no spec says nothing to do; it must not sit in Pending forever."""
    body = _request("empty", {})
    del body["spec"]
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, body)
    assert raised.value.status == 422
    assert "spec: Required value" in _message(raised.value)


# --- valid specs and defaults ----------------------------------------------------------------


@pytest.mark.usefixtures("crds_installed")
def test_minimal_spec_is_accepted_and_defaulted(api: client.ApiClient, namespace: str) -> None:
    """The operator relies on the server's defaults instead of repeating them in code."""
    created = _create(api, namespace, _request("minimal", _minimal_spec()))
    spec = created["spec"]
    assert spec["dryRun"] is False
    assert spec["targetTag"] == "stable-last-known"
    assert spec["rolloutTimeout"] == "10m"
    assert "autoscaling" not in spec, "absent autoscaling means 'discover the HPAs'"
    assert _get(api, namespace, "minimal")["spec"] == spec


@pytest.mark.usefixtures("crds_installed")
def test_full_spec_is_accepted_as_written(api: client.ApiClient, namespace: str) -> None:
    """Every optional field in its valid forms (named port, compound duration) is kept as is."""
    spec = _minimal_spec()
    spec.update(
        dryRun=True,
        targetTag="v2026.01.09_rc-1",
        rolloutTimeout="1h30m",
        autoscaling={"hpas": ["backend", "frontend"]},
        gitops={"policy": "Refuse", "argoCDNamespace": "gitops-system"},
    )
    spec["traffic"]["ingresses"] = ["lawyershub", "lawyershub-api.v2"]
    spec["traffic"]["maintenanceBackend"]["port"] = "http"
    created = _create(api, namespace, _request("full", spec))
    assert created["spec"] == spec


@pytest.mark.usefixtures("crds_installed")
def test_http_routes_alone_are_enough(api: client.ApiClient, namespace: str) -> None:
    """A site served through a Gateway has no Ingress: its HTTPRoutes are the traffic."""
    spec = _minimal_spec()
    spec["traffic"] = {
        "httpRoutes": [{"name": "site", "rules": ["api", "web.v2"]}, {"name": "admin"}],
        "maintenanceBackend": {"service": "maintenance-page", "port": 80},
    }
    created = _create(api, namespace, _request("routes", spec))
    assert created["spec"]["traffic"] == spec["traffic"]


@pytest.mark.usefixtures("crds_installed")
def test_an_http_route_has_no_namespace_to_give(api: client.ApiClient, namespace: str) -> None:
    """A route is named, never placed: a `namespace` beside its name is an error to a strict
    client and dropped otherwise, so a request only ever reaches routes of its own namespace."""
    spec = _minimal_spec()
    spec["traffic"]["httpRoutes"] = [{"name": "site", "namespace": "shop"}]
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, _request("strict", spec), field_validation="Strict")
    assert raised.value.status == 400
    assert 'unknown field "spec.traffic.httpRoutes[0].namespace"' in _message(raised.value)
    created = _create(api, namespace, _request("lenient", spec))
    assert created["spec"]["traffic"]["httpRoutes"] == [{"name": "site"}]


@pytest.mark.usefixtures("crds_installed")
def test_unknown_spec_fields_are_not_kept(api: client.ApiClient, namespace: str) -> None:
    """A misspelt field must not be silently honoured; strict clients get an error instead."""
    spec = _minimal_spec()
    spec["dryrun"] = True
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, _request("strict", spec), field_validation="Strict")
    assert raised.value.status == 400
    assert 'unknown field "spec.dryrun"' in _message(raised.value)

    created = _create(api, namespace, _request("lenient", spec))
    assert "dryrun" not in created["spec"]
    assert created["spec"]["dryRun"] is False


VALID_VALUES: list[tuple[str, Any]] = [
    ("traffic.maintenanceBackend.port", 1),
    ("traffic.maintenanceBackend.port", 65535),
    ("traffic.maintenanceBackend.port", "http"),
    ("traffic.maintenanceBackend.port", "maintenance-web"),
    ("rolloutTimeout", "90s"),
    ("rolloutTimeout", "1.5h"),
    ("rolloutTimeout", "24h"),
    ("rolloutTimeout", "86400000ms"),
    ("targetTag", "_pinned"),
    ("targetTag", "v1.2.3-rc_1"),
    ("targetTag", "x" * 128),
]


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(("path", "value"), VALID_VALUES)
def test_boundary_values_are_accepted(
    api: client.ApiClient, namespace: str, path: str, value: Any
) -> None:
    """The rules must not refuse what an SRE may legitimately write (limits included)."""
    spec = _minimal_spec()
    _set(path, value)(spec)
    created = _create(api, namespace, _request("edge", spec), dry_run="All")
    node: Any = created["spec"]
    for key in path.split("."):
        node = node[key]
    assert node == value


# --- the request's name ----------------------------------------------------------------------


@pytest.mark.usefixtures("crds_installed")
def test_a_name_too_long_for_its_label_is_refused(api: client.ApiClient, namespace: str) -> None:
    """The name is a label value (at most 63) on the run's Jobs and post-mortem: a longer one
    used to fail Report after traffic was back, so the API server refuses it up front."""
    name = "golive-2026-01-10-error-rate-after-the-release-of-the-new-case-u"
    assert len(name) == MAX_REQUEST_NAME + 1
    with pytest.raises(ApiException) as raised:
        _create(api, namespace, _request(name, _minimal_spec()))
    assert raised.value.status == 422, raised.value.body
    message = _message(raised.value)
    assert (
        "metadata: Invalid value: name too long: a RollbackRequest's name may have at most "
        f"{MAX_REQUEST_NAME} characters, because it is the value of the label {REQUEST_LABEL}"
    ) in message, message


def test_the_longest_name_runs_to_the_end_with_a_job_check_and_its_report(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    """The longest accepted name: its smoke-test Job and its post-mortem ConfigMap carry it as
    their request label, and the run ends Succeeded, Report included."""
    name = "golive-2026-01-10.error-rate-after-the-release-of-the-new-case1"
    assert len(name) == MAX_REQUEST_NAME
    check = {"name": "save-document", "job": {"image": "busybox:1.36", "command": ["true"]}}
    done = run_request(
        api,
        app,
        name,
        "Succeeded",
        timeout=120,
        verification={"timeout": "60s", "checks": [check]},
    )
    steps = {s["name"]: s["state"] for s in done["status"]["steps"]}
    assert steps["Verify"] == steps["Report"] == "Succeeded", done["status"]["steps"]
    report = client.CoreV1Api(api).read_namespaced_config_map(f"{name}-postmortem", app)
    assert report.metadata.labels[REQUEST_LABEL] == name
    (job,) = client.BatchV1Api(api).list_namespaced_job(app).items
    assert job.metadata.labels[REQUEST_LABEL] == name
    assert len(job.metadata.name) <= MAX_REQUEST_NAME


# --- immutability ----------------------------------------------------------------------------


@pytest.mark.usefixtures("crds_installed")
def test_spec_is_immutable_but_annotations_are_not(
    api: client.ApiClient, kubeconfig: str, namespace: str
) -> None:
    """A running rollback must not change under the operator; abort and approve stay possible."""
    _create(api, namespace, _request("golive", _minimal_spec()))
    objects = _objects(api)

    for patch in (
        {"spec": {"reason": "something else"}},
        {"spec": {"dryRun": True}},
        {"spec": {"workloads": [{"deployment": "backend"}]}},
    ):
        with pytest.raises(ApiException) as raised:
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "golive", patch
            )
        assert raised.value.status == 422, patch
        assert (
            "spec is immutable: create a new RollbackRequest instead of editing this one"
            in _message(raised.value)
        )

    # Approving is for the step's group while the step waits (the shipped admission policy),
    # aborting for anyone who may patch the request.
    install_approval_policy(api, kubeconfig, namespace)
    waiting_for(api, namespace, "golive", "RestoreDatabase", "0123456789abcdef")
    approved = approve(as_person(kubeconfig, DBA), namespace, "golive", "RestoreDatabase", DBA[0])
    assert approved["metadata"]["annotations"][APPROVED_BY_ANNOTATION] == DBA[0]
    abort = {ABORT_ANNOTATION: "true"}
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "golive", {"metadata": {"annotations": abort}}
    )
    assert abort.items() <= patched["metadata"]["annotations"].items()
    assert patched["spec"]["reason"] == _minimal_spec()["reason"]


# --- status ----------------------------------------------------------------------------------


def _full_status() -> Body:
    """A status as the operator writes it mid-run, touching every field of the schema."""
    at = "2026-01-10T03:0{}:00Z".format
    steps: list[Body] = []
    for index, name in enumerate(STEP_NAMES):
        if index < 3:
            steps.append(
                {
                    "name": name,
                    "state": "Succeeded",
                    "startedAt": at(index),
                    "finishedAt": at(index + 1),
                    "message": f"{name} done",
                    "attempts": 1,
                }
            )
        elif index == 3:
            steps.append({"name": name, "state": "Running", "startedAt": at(index), "attempts": 2})
        elif name == "PurgeCDN":
            steps.append({"name": name, "state": "Skipped", "message": "no spec.cdn"})
        elif name == "RestoreDatabase":
            steps.append(
                {
                    "name": name,
                    "state": "Pending",
                    "approvedBy": "dba-alice",
                    "approvedAt": at(5),
                    "approvalDigest": "0123456789abcdef",
                    "approvalSubject": "database db:5432/app; file /backups/x.sql",
                }
            )
        else:
            steps.append({"name": name, "state": "Pending"})
    condition = {
        "lastTransitionTime": at(1),
        "observedGeneration": 1,
    }
    return {
        "phase": "Running",
        "step": "RevertWorkloads",
        "steps": steps,
        "saved": {
            "ingresses": {
                "lawyershub": {
                    "rules": [
                        {
                            "host": "lawyershub.id",
                            "paths": [
                                {
                                    "path": "/",
                                    "backend": {
                                        "service": {"name": "frontend", "port": {"number": 80}}
                                    },
                                }
                            ],
                        }
                    ],
                }
            },
            "hpas": {"backend": {"minReplicas": 2, "maxReplicas": 10, "behavior": {}}},
            "deployments": {"backend": {"containers": {"api": "registry.local/backend:v2.0.0"}}},
        },
        "targets": {
            "ingresses": ["lawyershub"],
            "deployments": ["backend", "frontend"],
            "hpas": ["backend"],
        },
        "conditions": [
            {**condition, "type": "Ready", "status": "False", "reason": "Running", "message": "-"},
            {
                **condition,
                "type": "Progressing",
                "status": "True",
                "reason": "RevertWorkloads",
                "message": "rolling backend back to stable-last-known",
            },
            {
                **condition,
                "type": "MaintenanceActive",
                "status": "True",
                "reason": "IngressesSwitched",
                "message": "lawyershub serves maintenance-page:80",
            },
            {
                **condition,
                "type": "AutoscalingPaused",
                "status": "True",
                "reason": "HPAsFrozen",
                "message": "backend frozen at 4 replicas",
            },
            {
                **condition,
                "type": "DryRun",
                "status": "False",
                "reason": "LiveRun",
                "message": "changes are applied",
            },
        ],
        "observedGeneration": 1,
        "startedAt": at(0),
        "message": "reverting backend (attempt 2)",
        "requestedBy": "lead-larry",
        "gates": [
            {
                "step": "RestoreDatabase",
                "groups": [["dba"], ["payments-dba"]],
                "who": "a member of group payments-dba, also of group dba",
                "requiredBy": "the namespace's RollbackPolicy",
            }
        ],
    }


@pytest.mark.usefixtures("crds_installed")
def test_status_round_trips_unpruned(api: client.ApiClient, namespace: str) -> None:
    """Fields missing from the schema are pruned silently, so every status field must be in it."""
    _create(api, namespace, _request("golive", _minimal_spec()))
    status = _full_status()
    _objects(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "golive", {"status": copy.deepcopy(status)}
    )
    read = _get(api, namespace, "golive")
    assert read["status"] == status
    assert [step["name"] for step in read["status"]["steps"]] == STEP_NAMES


@pytest.mark.usefixtures("crds_installed")
def test_status_refuses_unknown_phase(api: client.ApiClient, namespace: str) -> None:
    """A typo in the operator's phase must fail loudly in tests, not show up in `kubectl get`."""
    _create(api, namespace, _request("golive", _minimal_spec()))
    with pytest.raises(ApiException) as raised:
        _objects(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "golive", {"status": {"phase": "Done"}}
        )
    assert raised.value.status == 422
    assert 'status.phase: Unsupported value: "Done"' in _message(raised.value)


# --- kubectl explain -------------------------------------------------------------------------


@pytest.mark.usefixtures("crds_installed")
def test_kubectl_explain_reads_well(kubeconfig: str) -> None:
    """Cluster admins learn the API from `kubectl explain`; every field must be described."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"

    def explain(field: str) -> str | None:
        run = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "explain", field],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # The published OpenAPI lags a CRD update by a moment: retry until it is there.
        return " ".join(run.stdout.split()) if run.returncode == 0 else None

    traffic = wait_until(
        lambda: explain(f"{PLURAL}.spec.traffic"),
        timeout=30,
        interval=1,
        what=f"kubectl explain {PLURAL}.spec.traffic",
    )
    for text in (
        "How traffic is taken off the application",
        "ingresses <[]string>",
        "httpRoutes <[]Object>",
        "Names of the Ingresses that serve the application",
        "maintenanceBackend <Object> -required-",
        "The Service, in the request's namespace, that serves the static maintenance page",
    ):
        assert text in traffic, traffic
    assert "ingresses <[]string> -required-" not in traffic  # HTTPRoutes may replace them

    port = explain("rbr.spec.traffic.maintenanceBackend.port")
    assert port and "a number (1 to 65535) or the name of one of the Service's ports" in port
    init = explain("rbr.spec.workloads.initContainers")
    assert init and "every init container whose image repository is that of a container" in init
    trigger = explain("rbr.spec.trigger")
    assert trigger and "stayed above 5 % for 15 consecutive minutes" in trigger
