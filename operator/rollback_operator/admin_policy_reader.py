"""Reads the admins' settings in force for a request: the RollbackPolicy `default` of the
request's namespace and the cluster-wide one in the operator's namespace, combined by
`admin_policy.effective`.

The cluster-wide object lives in the operator's own namespace: $ROLLBACK_POLICY_NAMESPACE,
else $POD_NAMESPACE (the Deployment sets it), else `rollback-operator`, as the admission
policy's binding names it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from rollback_operator.admin_policy import (
    FROM_CLUSTER,
    FROM_NAMESPACE,
    POLICY_NAME,
    AdminPolicy,
    effective,
)
from rollback_operator.kube import Kube, policy_path

DEFAULT_OPERATOR_NAMESPACE = "rollback-operator"


def operator_namespace() -> str:
    """Where the cluster-wide RollbackPolicy is."""
    return (
        os.environ.get("ROLLBACK_POLICY_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or DEFAULT_OPERATOR_NAMESPACE
    )


def read_level(kube: Kube, namespace: str, origin: str) -> AdminPolicy | None:
    """One level's settings; None when its object does not exist. An API error is raised:
    a run must not go on as if nothing were configured because the object could not be read."""
    found = kube.get(policy_path(namespace, POLICY_NAME))
    return None if found is None else AdminPolicy.parse(found.get("spec"), origin)


def read_policy(kube: Kube, namespace: str) -> AdminPolicy:
    """The effective settings for a request in `namespace`."""
    home = operator_namespace()
    if namespace == home:
        return effective(read_level(kube, home, FROM_CLUSTER), None)
    # Both levels at once: Preflight waits for them before anything else can be decided.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy") as pool:
        own = pool.submit(read_level, kube, namespace, FROM_NAMESPACE)
        cluster = read_level(kube, home, FROM_CLUSTER)
        return effective(cluster, own.result())
