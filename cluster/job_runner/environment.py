"""A container's environment, as the kubelet builds it: envFrom, then env, with $(VAR)
expansion, Secret and ConfigMap keys and the downward API's fieldRefs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cluster.job_runner.pod import NODE_IP, UNSUPPORTED, ObjectSource, PodConfigError, as_text


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expands $(NAME) from `env` as the kubelet does in env values, command and args.

    An unknown name stays as written, `$$` is a literal `$`, any other `$` is kept.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append(text[i : i + 2])
            i += 2
    return "".join(out)


def _referenced_data(
    kind: str, read: Callable[[str, str], dict[str, bytes] | None], namespace: str, ref: Any
) -> dict[str, bytes] | None:
    """The data of an envFrom source; None when it is missing and optional."""
    name = ref.get("name") or ""
    data = read(namespace, name)
    if data is None and not ref.get("optional"):
        raise PodConfigError(f'{kind.lower()} "{name}" not found')
    return data


def _key_value(
    kind: str, read: Callable[[str, str], dict[str, bytes] | None], namespace: str, ref: Any
) -> str | None:
    """One key of a Secret or ConfigMap; None when it is missing and the reference optional."""
    name, key, optional = ref.get("name") or "", ref["key"], bool(ref.get("optional"))
    data = read(namespace, name)
    if data is None:
        if optional:
            return None
        raise PodConfigError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise PodConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return as_text(data[key])


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward API's fieldRef values a Job's container can ask for."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": NODE_IP,
        "status.hostIPs": NODE_IP,
        "status.podIP": NODE_IP,
        "status.podIPs": NODE_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix in ("labels", "annotations"):
        opening = f"metadata.{prefix}['"
        if path.startswith(opening) and path.endswith("']"):
            return str((meta.get(prefix) or {}).get(path[len(opening) : -2], ""))
    raise PodConfigError(
        f"fieldRef {path} is not supported by the local job runner", reason=UNSUPPORTED
    )


def _value_from(pod: dict[str, Any], value_from: Any, source: ObjectSource) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if ref := value_from.get("secretKeyRef"):
        return _key_value("Secret", source.secret, namespace, ref)
    if ref := value_from.get("configMapKeyRef"):
        return _key_value("ConfigMap", source.config_map, namespace, ref)
    if ref := value_from.get("fieldRef"):
        return field_value(pod, ref["fieldPath"])
    kinds = ", ".join(sorted(value_from)) or "nothing"
    raise PodConfigError(
        f"env valueFrom {kinds} is not supported by the local job runner", reason=UNSUPPORTED
    )


def resolve_env(
    pod: dict[str, Any], container: dict[str, Any], source: ObjectSource
) -> dict[str, str]:
    """The container's environment from envFrom, then env, as the kubelet builds it.

    A missing Secret, ConfigMap or key fails the pod unless the reference is optional; an
    optional one that is missing leaves the variable out.
    """
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for env_from in container.get("envFrom") or []:
        if "configMapRef" in env_from:
            data = _referenced_data(
                "ConfigMap", source.config_map, namespace, env_from["configMapRef"]
            )
        elif "secretRef" in env_from:
            data = _referenced_data("Secret", source.secret, namespace, env_from["secretRef"])
        else:
            raise PodConfigError("envFrom names neither a configMapRef nor a secretRef")
        prefix = env_from.get("prefix") or ""
        for key, data_value in (data or {}).items():
            if key and "=" not in key:
                env[prefix + key] = as_text(data_value)
    for var in container.get("env") or []:
        value: str | None = None
        if "valueFrom" in var:
            value = _value_from(pod, var["valueFrom"], source)
        else:
            value = expand(var.get("value") or "", env)
        if value is not None:
            env[var["name"]] = value
    return env
