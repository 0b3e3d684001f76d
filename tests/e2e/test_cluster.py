"""The local control plane is a real Kubernetes: workloads run, RBAC holds, the CRD installs."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rollback_operator import GROUP, PLURAL, VERSION
from standins.local import wait_until
from tests.e2e.support import REPO_ROOT

pytestmark = pytest.mark.e2e


def _deployment(name: str, image: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )


def _rolled_out(apps: client.AppsV1Api, namespace: str, name: str, replicas: int) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    s = d.status
    return bool(
        s.observed_generation
        and s.observed_generation >= d.metadata.generation
        and (s.updated_replicas or 0) == replicas
        and (s.ready_replicas or 0) == replicas
        and (s.available_replicas or 0) == replicas
        and (s.replicas or 0) == replicas
    )


def test_deployment_becomes_available_and_rolls_out_a_new_image(
    api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, _deployment("web", "registry.local/web:v1", 2))
    wait_until(lambda: _rolled_out(apps, namespace, "web", 2), timeout=60, what="web Available")
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    ready = [
        p
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert len(ready) == 2

    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": "registry.local/web:v2"}]}
                }
            }
        },
    )
    wait_until(
        lambda: _rolled_out(apps, namespace, "web", 2), timeout=60, what="web rolled out to v2"
    )
    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 2
    current = [rs for rs in replica_sets if (rs.status.replicas or 0) == 2]
    assert [rs.spec.template.spec.containers[0].image for rs in current] == [
        "registry.local/web:v2"
    ]
    images = {
        p.spec.containers[0].image
        for p in core.list_namespaced_pod(namespace, label_selector="app=web").items
        if not p.metadata.deletion_timestamp
    }
    assert images == {"registry.local/web:v2"}


def test_job_succeeds(api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="once"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="busybox", command=["true"])],
                )
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)
    status = wait_until(
        lambda: (batch.read_namespaced_job_status("once", namespace).status.succeeded or 0) >= 1,
        timeout=60,
        what="job once Succeeded",
    )
    assert status
    conditions = batch.read_namespaced_job_status("once", namespace).status.conditions or []
    assert any(c.type == "Complete" and c.status == "True" for c in conditions)


def test_ingress_and_hpa_are_accepted_and_read_back(api: client.ApiClient, namespace: str) -> None:
    net, autoscaling = client.NetworkingV1Api(api), client.AutoscalingV2Api(api)
    net.create_namespaced_ingress(
        namespace,
        {
            "metadata": {"name": "site"},
            "spec": {
                "rules": [
                    {
                        "host": "site.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "frontend", "port": {"number": 80}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )
    ingress = net.read_namespaced_ingress("site", namespace)
    assert ingress.spec.rules[0].http.paths[0].backend.service.name == "frontend"
    assert ingress.spec.rules[0].http.paths[0].backend.service.port.number == 80

    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "metadata": {"name": "frontend"},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "frontend",
                },
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
            },
        },
    )
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("frontend", namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    assert hpa.spec.scale_target_ref.name == "frontend"


def _create_request(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RollbackRequest",
            "metadata": {"name": name},
            "spec": {
                "reason": "error rate 7.2 % for 15 min",
                "trigger": "ErrorRate",
                "traffic": {
                    "ingresses": ["site"],
                    "maintenanceBackend": {"service": "maintenance", "port": 80},
                },
                "workloads": [{"deployment": "backend"}],
            },
        },
    )


def test_crd_installs_and_status_is_a_subresource(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    custom = client.CustomObjectsApi(api)
    _create_request(api, namespace, "golive")
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["golive"]

    # The table view the API server renders carries the printer columns.
    request = api.param_serialize(
        "GET",
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    response.read()
    table = json.loads(response.data)
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:5] == ["Name", "Phase", "Step", "Trigger", "Age"]

    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "golive",
        {"status": {"phase": "Running", "step": "Preflight"}},
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "golive")
    assert got["status"]["phase"] == "Running"
    # Status written through the main resource is ignored: the subresource owns it.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "golive", {"status": {"phase": "Succeeded"}}
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "golive")
    assert got["status"]["phase"] == "Running"


def test_built_kubectl_lists_requests_with_printer_columns(
    api: client.ApiClient, namespace: str, kubeconfig: str, crds_installed: None
) -> None:
    _create_request(api, namespace, "golive")
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "golive",
        {"status": {"phase": "Running", "step": "EnableMaintenance"}},
    )
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "-n", namespace, "get", "rbr"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "STEP", "TRIGGER", "AGE"]
    assert row.split()[:4] == ["golive", "Running", "EnableMaintenance", "ErrorRate"]


def test_rbac_refuses_a_service_account_with_no_role(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    config = client.Configuration()
    config.host = api.configuration.host
    config.ssl_ca_cert = api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(config))
    with pytest.raises(ApiException) as refused:
        as_nobody.list_namespaced_pod(namespace)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in refused.value.body
    # The same request as admin is allowed: it is the grant that is missing, not the call.
    assert core.list_namespaced_pod(namespace).items == []


def test_the_gateway_api_crds_are_established_at_the_pinned_version(api: client.ApiClient) -> None:
    """cluster/up.sh installs the Gateway API's standard channel at GATEWAY_API_VERSION in every
    local cluster: the HTTPRoutes and ReferenceGrants the operator switches and checks."""
    pinned = next(
        line.split("=", 1)[1]
        for line in (REPO_ROOT / "cluster" / "versions.env").read_text().splitlines()
        if line.startswith("GATEWAY_API_VERSION=")
    )
    extensions = client.ApiextensionsV1Api(api)
    for kind in ("httproutes", "referencegrants", "gateways", "gatewayclasses", "grpcroutes"):
        crd = extensions.read_custom_resource_definition(f"{kind}.gateway.networking.k8s.io")
        annotations = crd.metadata.annotations
        assert annotations["gateway.networking.k8s.io/bundle-version"] == pinned
        assert annotations["gateway.networking.k8s.io/channel"] == "standard"
        established = {c.type: c.status for c in crd.status.conditions}["Established"]
        assert established == "True", kind
