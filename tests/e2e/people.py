"""The runbook's people (§3) in e2e tests: the approval policy installed as manifests/ ships it,
the user roles bound in a test's namespace, and API clients acting as a DBA, a QA Lead or a
developer.

The users are impersonated by the admin client (Impersonate-User / Impersonate-Group), so the
API server sees exactly their name and groups, on the local control plane or any other.
"""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import GROUP, PLURAL, VERSION, request_body
from tests.e2e.support import REPO_ROOT

APPROVALS = REPO_ROOT / "manifests" / "common" / "approvals.yaml"
USER_ROLES = REPO_ROOT / "manifests" / "common" / "user-roles.yaml"
APPROVE = f"{GROUP}/approve"
APPROVED_BY = f"{GROUP}/approved-by"

DBA = ("dba-alice", "dba")
QA = ("qa-quinn", "qa")
DEVELOPER = ("dev-dan", "developers")


def install_approval_policy(api: client.ApiClient, kubeconfig: str, namespace: str) -> None:
    """Applies the shipped policy, binding and user roles (idempotent), binds the roles in
    `namespace`, and waits until the policy is in force there: a developer's approval, tried
    as a server-side dry run, is refused."""
    for path in (APPROVALS, USER_ROLES):
        for obj in yaml.safe_load_all(path.read_text()):
            _server_side_apply(api, obj)
    allow_people(api, namespace)
    developer = as_person(kubeconfig, DEVELOPER)

    def refused() -> bool:
        body = request_body("policy-probe")
        body["metadata"]["annotations"] = {APPROVE: "RestoreDatabase", APPROVED_BY: DEVELOPER[0]}
        try:
            client.CustomObjectsApi(developer).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
            )
        except ApiException as error:
            return error.status == 403
        return False

    wait_until(refused, timeout=30, what="the rollback-approvals policy in force")


def allow_people(api: client.ApiClient, namespace: str) -> None:
    """Binds the shipped user roles in `namespace`: every person may try to approve (the
    policy decides), and the requester role goes to the developers."""
    rbac = client.RbacAuthorizationV1Api(api)
    for name, role, groups in (
        ("approvers", "rollback-approver", [DBA[1], QA[1], DEVELOPER[1]]),
        ("requesters", "rollback-requester", [DEVELOPER[1]]),
    ):
        binding = {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}
                for g in groups
            ],
        }
        try:
            rbac.create_namespaced_role_binding(namespace, binding)
        except ApiException as error:
            if error.status != 409:
                raise


def as_person(kubeconfig: str, person: tuple[str, str]) -> client.ApiClient:
    """An API client that the API server sees as `person` (user name, group)."""
    user, group = person
    api = config.new_client_from_config(config_file=kubeconfig)
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", group)
    return api


def approve(
    api: client.ApiClient, namespace: str, name: str, step: str, approved_by: str
) -> dict[str, Any]:
    """Sets the approval annotations, as the client's user; raises ApiException if refused."""
    patch = {"metadata": {"annotations": {APPROVE: step, APPROVED_BY: approved_by}}}
    result: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch
    )
    return result


def _server_side_apply(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """As `kubectl apply --server-side` does (same field manager), so that installing
    manifests/ later, as test_install does, owns these fields without a conflict."""
    kind = obj["kind"]
    name = obj["metadata"]["name"]
    admission = "/apis/admissionregistration.k8s.io/v1"
    paths = {
        "ValidatingAdmissionPolicy": f"{admission}/validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": f"{admission}/validatingadmissionpolicybindings",
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    }
    api.call_api(
        *api.param_serialize(
            "PATCH",
            f"{paths[kind]}/{name}",
            query_params=[("fieldManager", "kubectl"), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml"},
            body=obj,
            auth_settings=["BearerToken"],
        )
    ).read()
