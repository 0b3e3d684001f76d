"""The benchmarks' own identity: a ServiceAccount that only the operator (or the plain script)
uses, matched by the FlowSchemas that count its requests (bench/measure.py). It runs at the
priority level `exempt`, as the admin does, so that no throttling differs.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bench.api import BENCH_LABEL, JSON, Api, service_path
from bench.app import delete_namespaces
from bench.measure import flow_schemas, scrape
from rollback_operator.kube import ApiError

IDENTITY_NAMESPACE = "rollback-bench-system"
IDENTITY_NAME = "rollback-bench"


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
