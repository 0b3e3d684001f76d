"""The plugin's calls to the API server, as the kubeconfig's user (or the one of --as).

Everything goes through `rollback_operator.kube.Kube`, the operator's JSON transport, and its
request paths; the watch of `status -w` runs in a thread that hands each new version of the
request to the command through a queue.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from typing import Any

from kubernetes import client, config

from kubectl_rollback import FIELD_MANAGER, PluginError
from rollback_operator.kube import (
    MERGE_PATCH,
    ApiError,
    Kube,
    deployment_path,
    request_path,
    requests_path,
)
from rollback_operator.model import ended

# How long one watch call lasts before it is renewed from the last version seen.
WATCH_SECONDS = 300


def connection_flags() -> argparse.ArgumentParser:
    """The flags every subcommand takes to reach the API server (kubectl's own)."""
    common = argparse.ArgumentParser(add_help=False)
    flags = common.add_argument_group("connection")
    flags.add_argument("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG)")
    flags.add_argument("--context", help="the kubeconfig context to use (default: current)")
    flags.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="act as this user, as kubectl --as does (needs the impersonate permission)",
    )
    flags.add_argument(
        "--as-group", metavar="GROUP", help="with --as: the group to act as (one group)"
    )
    flags.add_argument(
        "-n",
        "--namespace",
        help="the request's namespace (default: the context's namespace, else default)",
    )
    return common


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    # The kubernetes client's configuration loaders carry no annotations.
    contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    chosen = (
        next((c for c in contexts or [] if c.get("name") == context), None) if context else active
    )
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def connect(args: argparse.Namespace) -> tuple[Kube, str]:
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context, client_configuration=configuration
        )
        namespace = args.namespace or context_namespace(args.kubeconfig, args.context)
    except (config.ConfigException, OSError) as error:
        raise PluginError(f"kubeconfig: {error}") from None
    api = client.ApiClient(configuration)
    if args.as_group and not args.as_user:
        raise PluginError("--as-group needs --as")
    if args.as_user:  # the API server then sees that user: RBAC and admission judge it
        api.set_default_header("Impersonate-User", args.as_user)  # type: ignore[no-untyped-call]
        if args.as_group:
            api.set_default_header("Impersonate-Group", args.as_group)  # type: ignore[no-untyped-call]
    kube = Kube(api)
    kube.field_manager = FIELD_MANAGER  # its patches and Events say they are the plugin's
    return kube, namespace


def fetch(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.request("GET", request_path(namespace, name))
    return result


def list_requests(kube: Kube, namespace: str | None) -> dict[str, Any]:
    """The RollbackRequestList of a namespace, or of every namespace (None)."""
    result: dict[str, Any] = kube.request("GET", requests_path(namespace))
    return result


def annotate(kube: Kube, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = kube.request(
        "PATCH",
        request_path(namespace, name),
        {"metadata": {"annotations": annotations}},
        MERGE_PATCH,
        query={"fieldManager": FIELD_MANAGER},
    )
    return result


def whoami(kube: Kube) -> str:
    """The user name the API server knows the caller by (a SelfSubjectReview)."""
    review = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    username = ((review or {}).get("status") or {}).get("userInfo", {}).get("username")
    if not username:
        raise PluginError("the API server did not say who you are (SelfSubjectReview)")
    return str(username)


def current_images(kube: Kube, namespace: str, obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each listed Deployment's container -> image, for the plan; what is unreadable is left out."""
    out: dict[str, dict[str, str]] = {}
    for workload in (obj.get("spec") or {}).get("workloads") or []:
        name = workload.get("deployment")
        try:
            deployment = kube.get(deployment_path(namespace, str(name)))
        except ApiError:
            continue
        containers = ((deployment or {}).get("spec") or {}).get("template", {}).get("spec", {})
        images = {c["name"]: c.get("image", "") for c in containers.get("containers") or []}
        if images:
            out[str(name)] = images
    return out


class RequestWatch:
    """Each new version of one request, as the API server's watch sends it.

    A thread keeps a watch open on the namespace's requests narrowed to this name, renews it
    from the last resourceVersion seen, and after `410 Gone` (the version fell out of the
    server's window) reads the request again and watches on from there. What it receives goes
    to `versions`: the request as a dict, or the error that ended the watch.
    """

    def __init__(self, kube: Kube, namespace: str, name: str, resource_version: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.versions: queue.Queue[dict[str, Any] | Exception] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(resource_version,), daemon=True)
        self._thread.start()

    def _run(self, resource_version: str) -> None:
        try:
            while resource_version:  # "" once the request is over: nothing more will come
                resource_version = self._watch_once(resource_version)
        except (ApiError, PluginError, OSError, ValueError) as error:
            self.versions.put(error)

    def _watch_once(self, resource_version: str) -> str:
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={self.name}",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        stream = self.kube.stream(requests_path(self.namespace), query)
        try:
            for line in stream:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: start again from a fresh read
                        fresh = fetch(self.kube, self.namespace, self.name)
                        self.versions.put(fresh)
                        return str(fresh["metadata"]["resourceVersion"])
                    raise ApiError(
                        int(obj.get("code") or 0), obj.get("reason", ""), obj.get("message", "")
                    )
                if kind == "DELETED":
                    raise PluginError(f"rollbackrequest/{self.name} was deleted")
                resource_version = obj["metadata"]["resourceVersion"]
                if kind in ("ADDED", "MODIFIED"):
                    self.versions.put(obj)
                    if ended(obj.get("status", {})):  # over, and its end announced
                        return ""
        finally:
            stream.release_conn()
        return resource_version
