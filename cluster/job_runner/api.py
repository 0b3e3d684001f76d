"""The job runner's own API transport: plain JSON over the kubernetes client's transport. It runs
as root and keeps apart from the operator's code (rollback_operator.kube)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from cluster.job_runner.pod import as_text

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A refused or failed API call; status 0 when the server could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old: list again."""


class Api:
    """Plain JSON over the kubernetes client's transport (kubeconfig auth, TLS, connection
    pool): objects are read and patched exactly as the API server stores them."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = 32
        self._client = client.ApiClient(configuration)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*params, _request_timeout=timeout)
        except ApiException as error:
            raise ApiError(int(error.status or 0), str(error.reason)) from None
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        if response.status >= 400:
            data = response.read()
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = as_text(data or b"")
            raise ApiError(response.status, message)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        response = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=30
        )
        try:
            data = response.read()
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        return json.loads(data) if data else None

    def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            result: dict[str, Any] = self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def stream(self, path: str, query: Mapping[str, str], timeout: float) -> Iterator[Any]:
        """The events of a watch, one JSON object per line, until the server ends it."""
        response = self._send(
            "GET", path, query=query, body=None, content_type=None, timeout=(10, timeout)
        )
        buffer = b""
        try:
            for chunk in response.response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(0, str(error)) from None
        finally:
            response.response.release_conn()


class ClusterObjects:
    """The ObjectSource of the live cluster."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}") if name else None
        if found is None:
            return None
        return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        found = self.api.get(path) if name else None
        if found is None:
            return None
        data = {key: value.encode() for key, value in (found.get("data") or {}).items()}
        binary = found.get("binaryData") or {}
        return data | {key: base64.b64decode(value) for key, value in binary.items()}

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        return self.api.get(path) if name else None

    def volume(self, name: str) -> dict[str, Any] | None:
        return self.api.get(f"/api/v1/persistentvolumes/{name}")

    def volumes(self) -> list[dict[str, Any]]:
        listed = self.api.request("GET", "/api/v1/persistentvolumes")
        return list((listed or {}).get("items") or [])
