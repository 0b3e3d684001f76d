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
REQUESTED_BY = f"{GROUP}/requested-by"

DBA = ("dba-alice", "dba")
QA = ("qa-quinn", "qa")
DEVELOPER = ("dev-dan", "developers")  # bound to the requester role only
# A DBA who also creates requests: four eyes means another DBA approves theirs.
REQUESTING_DBA = ("dba-bob", "dba")


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

    def recorded() -> bool:
        body = request_body("requester-probe")
        created = client.CustomObjectsApi(developer).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
        )
        return bool(created["metadata"].get("annotations", {}).get(REQUESTED_BY) == DEVELOPER[0])

    wait_until(recorded, timeout=30, what="the requested-by mutation in force")


def admission_settled(api: client.ApiClient) -> None:
    """After the shipped admission policies are deleted, the API server drops them one by one:
    for a moment the requested-by check can be in force without the mutation that satisfies
    it, and any request created then is refused. Waits until neither is in force: a request
    without the annotation is admitted (a server-side dry run, as the admin) and comes back
    without it (no mutation left either), so the next test starts after."""

    def admitted() -> bool:
        try:
            probe = client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, request_body("admission-probe"), dry_run="All"
            )
        except ApiException as error:
            if error.status == 403:
                return False
            raise
        return REQUESTED_BY not in (probe["metadata"].get("annotations") or {})

    wait_until(admitted, timeout=30, what="the deleted admission policies out of force")


def allow_people(api: client.ApiClient, namespace: str) -> None:
    """Binds the shipped user roles in `namespace`: every person may try to approve (the
    policy decides), and the requester role goes to the developers."""
    rbac = client.RbacAuthorizationV1Api(api)
    for name, role, groups in (
        ("approvers", "rollback-approver", [DBA[1], QA[1], DEVELOPER[1]]),
        ("requesters", "rollback-requester", [DEVELOPER[1], REQUESTING_DBA[1]]),
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
    api: client.ApiClient,
    namespace: str,
    name: str,
    step: str,
    approved_by: str,
    digest: str | None = None,
) -> dict[str, Any]:
    """Sets the approval annotations, as the client's user, as `kubectl rollback approve` does:
    naming the digest of what the step waits to have approved (read from its status, unless
    given); raises ApiException if refused."""
    if digest is None:
        digest = awaited_digest(api, namespace, name, step)
    value = f"{step}@{digest}" if digest else step
    patch = {"metadata": {"annotations": {APPROVE: value, APPROVED_BY: approved_by}}}
    result: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch
    )
    return result


# The admins' setting that turns every approval gate off in a namespace (a RollbackPolicy with
# no step to approve): for tests whose subject is not the approvals.
NO_GATES: dict[str, Any] = {"approvals": []}
OPERATOR_NAMESPACE = "rollback-operator"  # where the cluster-wide RollbackPolicy lives


def admin_settings(api: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    """Writes the RollbackPolicy `default` of `namespace`, as a cluster admin would."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RollbackPolicy",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": spec,
    }
    objects = client.CustomObjectsApi(api)
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "rollbackpolicies", body)
    except ApiException as error:
        if error.status != 409:
            raise
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "rollbackpolicies", "default", {"spec": spec}
        )


def remove_admin_settings(api: client.ApiClient, namespace: str) -> None:
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "rollbackpolicies", "default"
        )
    except ApiException as error:
        if error.status != 404:
            raise


def awaited_digest(api: client.ApiClient, namespace: str, name: str, step: str) -> str:
    """The digest `step` waits to have approved, from the request's status ('' if none)."""
    request = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    status = request.get("status") or {}
    record = next((s for s in status.get("steps") or [] if s.get("name") == step), {})
    return str(record.get("approvalDigest") or "")


def waiting_for(api: client.ApiClient, namespace: str, name: str, step: str, digest: str) -> None:
    """Writes, as an operator would (admin, status subresource), that the request waits for
    an approval of `step`@`digest`: for tests of the admission policy with no operator."""
    steps = [
        {
            "name": step,
            "state": "Running",
            "attempts": 1,
            "approvalDigest": digest,
            "approvalSubject": "the test's subject",
        }
    ]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": {"phase": "AwaitingApproval", "step": step, "steps": steps}},
    )


def _server_side_apply(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """As `kubectl apply --server-side` does (same field manager), so that installing
    manifests/ later, as test_install does, owns these fields without a conflict."""
    kind = obj["kind"]
    name = obj["metadata"]["name"]
    admission = "/apis/admissionregistration.k8s.io/v1"
    paths = {
        "ValidatingAdmissionPolicy": f"{admission}/validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": f"{admission}/validatingadmissionpolicybindings",
        "MutatingAdmissionPolicy": f"{admission}/mutatingadmissionpolicies",
        "MutatingAdmissionPolicyBinding": f"{admission}/mutatingadmissionpolicybindings",
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


def may_use(
    api: client.ApiClient, namespace: str, group: str, secrets: tuple[str, ...], jobs: bool
) -> None:
    """Lets `group` get these Secrets (by name) and, with `jobs`, create Jobs in `namespace`:
    what the rollback-requester-rights policy asks of whoever creates a request naming them
    (manifests/common/requester-rights.yaml). The rollback-requester role grants neither."""
    rules: list[dict[str, Any]] = []
    if secrets:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": list(secrets),
                "verbs": ["get"],
            }
        )
    if jobs:
        rules.append({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]})
    name = f"{group}-may-use-" + "-".join((*secrets, *(["jobs"] if jobs else [])))
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        },
    )
