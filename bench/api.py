"""The benchmarks' API client, the paths of what they touch, and the label on everything they
create.

One thin JSON client (`Api`) over the official `kubernetes` client's transport, the same way
the operator's `kube.py` calls the API (it is that class, extended), so the plain-script
baselines pay the same per-call cost as the operator and the comparison measures
orchestration, not serialization.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import urllib3

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.kube import ApiError, Kube

JSON = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_KUBECONFIG = Path(os.environ.get("KUBECONFIG") or REPO_ROOT / ".cluster" / "kubeconfig")

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Every object a benchmark creates carries this label, so leftovers of an interrupted run can
# be found and removed, and cluster-wide watches see only the benchmark's own objects.
BENCH_LABEL = f"{GROUP}/bench"


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
