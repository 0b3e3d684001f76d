"""The one module that talks to the Kubernetes API.

Every call goes through the official `kubernetes` client's transport (its configuration, auth
and connection pool), as plain JSON: the steps work on objects exactly as the API server
stores them, which is what `status.saved` must record. Calls are synchronous; the runner makes
them from worker threads, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rollback_operator import GROUP, KIND, PLURAL, VERSION
from rollback_operator.redaction import remember, scrub

try:
    from rollback_operator.metrics import API_ERRORS
except ModuleNotFoundError as missing:
    # kubectl-rollback installed alone, without the operator's extra: nothing to count for.
    if missing.name != "prometheus_client":
        raise

    class _Uncounted:
        def labels(self, **_: str) -> _Uncounted:
            return self

        def inc(self) -> None:
            pass

    API_ERRORS = _Uncounted()  # type: ignore[assignment]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
FIELD_MANAGER = "rollback-operator"


@dataclass(eq=False)  # not frozen: Python sets an exception's __traceback__ as it passes
class ApiError(Exception):  # through a context manager (contextlib assigns it)
    """A refused or failed API call, with what an SRE needs to read it."""

    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def transient(self) -> bool:
        """Worth retrying: conflicts, throttling, server-side and connection trouble."""
        return self.status in (0, 409, 429) or self.status >= 500


def _api_error(error: ApiException) -> ApiError:
    API_ERRORS.labels(status=str(error.status or 0)).inc()
    message = error.reason or ""
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message", message)
    except (TypeError, ValueError):
        pass
    return ApiError(status=int(error.status or 0), reason=str(error.reason or ""), message=message)


# What a connection that fails before any answer raises: refused, reset, DNS, TLS, a read cut off.
_CONNECTION_ERRORS = (OSError, urllib3.exceptions.HTTPError)


def _unreachable(error: Exception) -> ApiError:
    API_ERRORS.labels(status="0").inc()
    return ApiError(status=0, reason="Unreachable", message=str(error))


def lean(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """`obj` without its managedFields, for an object held in memory while a run goes on
    (a step's read kept for the next, a watch's latest state): nothing here reads them, and
    they are often the larger part of a Deployment."""
    if obj is not None:
        (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


class Kube:
    """A thin JSON client: paths in, dicts out. `None` for an object that does not exist."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.configuration: client.Configuration = api_client.configuration
        self._lock = threading.Lock()
        self.requests = 0  # calls made, for the operator's own metrics
        # Who the patches and Events are from: the operator, or kubectl-rollback.
        self.field_manager = FIELD_MANAGER

    @classmethod
    def from_environment(cls, pool_size: int = 32) -> Kube:
        """In-cluster credentials when running in a pod, else the current kubeconfig."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    @classmethod
    def from_kubeconfig(cls, path: str, pool_size: int = 32) -> Kube:
        configuration = client.Configuration()
        config.load_kube_config(config_file=path, client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    # --- transport

    def send(
        self,
        method: str,
        path: str,
        *,
        timeout: float | tuple[float, float | None] = 30,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """The raw response, not yet read (a watch is read as it streams)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self.api_client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        with self._lock:
            self.requests += 1
        try:
            return self.api_client.call_api(*params, _request_timeout=timeout)
        except ApiException as error:
            raise _api_error(error) from None
        except _CONNECTION_ERRORS as error:
            raise _unreachable(error) from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        response = self.send(method, path, body=body, content_type=content_type, query=query)
        try:
            response.read()
        except _CONNECTION_ERRORS as error:
            raise _unreachable(error) from None
        if response.status >= 400:
            raise _api_error(ApiException(http_resp=response))
        return json.loads(response.data) if response.data else None

    def stream(self, path: str, query: dict[str, str]) -> Any:
        """An open watch (`query` has watch=true): the urllib3 response, read line by line by
        the caller, one JSON event a line."""
        response = self.send("GET", path, query=query, timeout=(10, None))
        if response.status >= 400:
            raise _api_error(ApiException(http_resp=response))
        return response.response

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", path, body, content_type, query={"fieldManager": self.field_manager}
        )
        return result

    # --- the objects the runbook touches

    def ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(ingress_path(namespace, name))

    def http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(http_route_path(namespace, name))

    def reference_grants(self, namespace: str) -> list[dict[str, Any]] | None:
        """The Gateway API ReferenceGrants of `namespace` (who may refer to its objects); None
        when the operator may not list them there (a namespace it does not watch)."""
        try:
            found = self.get(
                f"/apis/{GATEWAY_GROUP}/v1beta1/namespaces/{namespace}/referencegrants"
            )
        except ApiError as error:
            if error.status == 403:
                return None
            raise
        return list((found or {}).get("items") or [])

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/services/{name}")

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(deployment_path(namespace, name))

    def hpa(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(hpa_path(namespace, name))

    def hpas(self, namespace: str) -> list[dict[str, Any]]:
        listed = self.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
        return list((listed or {}).get("items", []))

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret, decoded; None when the Secret or the key is missing.

        The value is a credential: callers pass it on to where it is used and never log,
        record or echo it. Should it come back anyway (a server echoing the token, a Job
        printing its environment), `redaction.scrub` replaces it: every value read here is
        remembered, in this process's memory only.
        """
        secret = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        encoded = ((secret or {}).get("data") or {}).get(key)
        if encoded is None:
            return None
        try:
            value = base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        remember(value)
        return value

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(job_path(namespace, name))

    def create_job(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        """Creates a Job; a Job of that name already there is an ApiError 409."""
        created: dict[str, Any] = self.request(
            "POST",
            f"/apis/batch/v1/namespaces/{namespace}/jobs",
            job,
            query={"fieldManager": FIELD_MANAGER},
        )
        return created

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        listed = self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": label_selector}
        )
        return list((listed or {}).get("items", []))

    def ensure_service_account(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """Creates the ServiceAccount unless it exists (then it is left as it is)."""
        account = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": False,
        }
        try:
            self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                account,
                query={"fieldManager": FIELD_MANAGER},
            )
        except ApiError as error:
            if error.status != 409:
                raise

    def rollback_requests(self, namespace: str) -> list[dict[str, Any]]:
        listed = self.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
        return list((listed or {}).get("items", []))

    def apply_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> None:
        """Creates or updates a ConfigMap with server-side apply: one idempotent call."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            body,
            "application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    def patch_request_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str:
        """Merges `status` into the request's status; with `resource_version`, only if the
        request is still at that version (else an ApiError 409). Returns the new version."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        written = self.patch(f"{request_path(namespace, name)}/status", body)
        return str(written["metadata"]["resourceVersion"])

    def request_status(self, namespace: str, name: str) -> tuple[dict[str, Any], str]:
        """The request's status as the API server holds it, and its resourceVersion."""
        request = self.get(request_path(namespace, name))
        if request is None:
            raise ApiError(404, "NotFound", f"RollbackRequest {namespace}/{name} is gone")
        return request.get("status") or {}, str(request["metadata"]["resourceVersion"])

    def post_event(self, meta: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the RollbackRequest (given its metadata), as `kubectl describe`
        shows them. Every Event goes through here, so every Event's message is scrubbed here:
        anyone who may list Events in the namespace reads it."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": event_type,
            "reason": reason,
            "message": scrub(message)[:1024],
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "reportingInstance": self.field_manager,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)


def ingress_path(namespace: str, name: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}"


GATEWAY_GROUP = "gateway.networking.k8s.io"


def http_route_path(namespace: str, name: str) -> str:
    return f"/apis/{GATEWAY_GROUP}/v1/namespaces/{namespace}/httproutes/{name}"


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def hpa_path(namespace: str, name: str) -> str:
    return f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"


def job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"


def requests_path(namespace: str | None) -> str:
    """The RollbackRequests of a namespace, or of every namespace (None)."""
    where = f"namespaces/{namespace}/" if namespace is not None else ""
    return f"/apis/{GROUP}/{VERSION}/{where}{PLURAL}"


def policy_path(namespace: str, name: str) -> str:
    """A RollbackPolicy (the admins' settings, admin_policy.py)."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/rollbackpolicies/{name}"


def request_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
