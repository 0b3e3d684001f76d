"""The approval policies shipped in manifests/, on the real API server, with no operator: the
API server itself records who created a request, and holds each approval to the step that is
waiting, to the digest of what it waits to have approved, to the approver's own username, to
another person than the requester, and to the groups the step's base group and the admins'
RollbackPolicy objects name (runbook §3). The operator's part is tested in test_database.py
and test_verify.py; here a test writes the waiting status as the operator would."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    create_request,
    get_request,
    request_body,
)
from tests.e2e.people import (
    APPROVE,
    APPROVED_BY,
    DBA,
    DEVELOPER,
    OPERATOR_NAMESPACE,
    QA,
    REQUESTED_BY,
    REQUESTING_DBA,
    admin_settings,
    approve,
    as_person,
    install_approval_policy,
    remove_admin_settings,
    waiting_for,
)

pytestmark = pytest.mark.e2e

DIGEST = "0123456789abcdef"


@pytest.fixture
def request_name(
    api: client.ApiClient, kubeconfig: str, namespace: str, crds_installed: None
) -> str:
    """A request created by an admin, waiting (as an operator would have written) for the
    approval of RestoreDatabase@DIGEST; nobody runs it."""
    install_approval_policy(api, kubeconfig, namespace)
    create_request(api, namespace, "golive")
    waiting_for(api, namespace, "golive", "RestoreDatabase", DIGEST)
    return "golive"


@pytest.fixture
def cluster_settings(api: client.ApiClient) -> Iterator[Callable[[dict[str, object]], None]]:
    """Writes the cluster-wide RollbackPolicy; removed after the test."""
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise
    yield lambda spec: admin_settings(api, OPERATOR_NAMESPACE, spec)
    remove_admin_settings(api, OPERATOR_NAMESPACE)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def _refusal(call: Callable[[], object]) -> Refusal:
    with pytest.raises(ApiException) as refused:
        call()
    return Refusal(refused.value.status, json.loads(refused.value.body)["message"])


def _annotations(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return dict(get_request(api, namespace, name)["metadata"].get("annotations") or {})


def _approve_as_member_of(
    kubeconfig: str, user: str, groups: list[str], namespace: str, name: str, step: str
) -> urllib3.BaseHTTPResponse:
    """Approves as `user`, member of several `groups` (impersonated with one header per group,
    which the Python client cannot send)."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    headers = urllib3.HTTPHeaderDict(
        {
            "Authorization": cfg.get_api_key_with_prefix("BearerToken"),
            "Content-Type": "application/merge-patch+json",
            "Impersonate-User": user,
        }
    )
    for group in groups:
        headers.add("Impersonate-Group", group)
    patch = {"metadata": {"annotations": {APPROVE: f"{step}@{DIGEST}", APPROVED_BY: user}}}
    http = urllib3.PoolManager(ca_certs=cfg.ssl_ca_cert, cert_reqs="CERT_REQUIRED")
    return http.request(
        "PATCH",
        f"{cfg.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
        body=json.dumps(patch),
        headers=headers,
    )


def _in_force(person: client.ApiClient, namespace: str, name: str, user: str) -> Refusal:
    """Once the API server's policy sees a RollbackPolicy just written (its parameters are
    read from a cache), `person`'s approval, tried as a dry run, is refused: the refusal."""

    def refused() -> Refusal | None:
        patch = {
            "metadata": {"annotations": {APPROVE: f"RestoreDatabase@{DIGEST}", APPROVED_BY: user}}
        }
        try:
            client.CustomObjectsApi(person).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, dry_run="All"
            )
        except ApiException as error:
            return Refusal(error.status, json.loads(error.body)["message"])
        return None

    found: Refusal = wait_until(refused, timeout=30, what="the RollbackPolicy in force")
    return found


# --- who created the request: recorded by the API server


def test_the_api_server_records_who_created_the_request_and_nobody_rewrites_it(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    developer = as_person(kubeconfig, DEVELOPER)
    assert _annotations(api, namespace, request_name)[REQUESTED_BY] == "admin"
    create_request(developer, namespace, "by-dan")
    assert _annotations(api, namespace, "by-dan")[REQUESTED_BY] == "dev-dan"
    # A create that names someone else is recorded under the creator's own name anyway.
    body = request_body("forged")
    body["metadata"]["annotations"] = {REQUESTED_BY: "lead-larry"}
    created = client.CustomObjectsApi(developer).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    assert created["metadata"]["annotations"][REQUESTED_BY] == "dev-dan"
    for who in (developer, api):  # not even an admin rewrites it
        error = _refusal(
            lambda who=who: client.CustomObjectsApi(who).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                "by-dan",
                {"metadata": {"annotations": {REQUESTED_BY: "someone-else"}}},
            )
        )
        assert error.status == 403
        assert 'records who created the request ("dev-dan") and cannot change' in error.message


# --- who may approve


def test_a_non_dba_user_cannot_approve_the_restore(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    developer = as_person(kubeconfig, DEVELOPER)
    error = _refusal(
        lambda: approve(developer, namespace, request_name, "RestoreDatabase", "dev-dan")
    )
    assert error.status == 403
    assert "only members of group dba may approve RestoreDatabase" in error.message
    assert APPROVE not in _annotations(api, namespace, request_name)


def test_a_dba_cannot_approve_in_someone_elses_name(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "RestoreDatabase", "lead-larry"))
    assert error.status == 403
    assert 'approved-by must be your own username, dba-alice, not "lead-larry"' in error.message


def test_the_requester_cannot_approve_their_own_request_another_dba_can(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    requester = as_person(kubeconfig, REQUESTING_DBA)
    create_request(requester, namespace, "own")
    waiting_for(api, namespace, "own", "RestoreDatabase", DIGEST)
    error = _refusal(lambda: approve(requester, namespace, "own", "RestoreDatabase", "dba-bob"))
    assert error.status == 403
    assert error.message.endswith(
        "dba-bob created this request (rollback.lawyershub.io/requested-by), so cannot approve "
        "any of its steps: four eyes, another person approves RestoreDatabase"
    )
    approve(as_person(kubeconfig, DBA), namespace, "own", "RestoreDatabase", DBA[0])
    assert _annotations(api, namespace, "own")[APPROVE] == f"RestoreDatabase@{DIGEST}"


def test_each_step_has_its_own_group(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    waiting_for(api, namespace, request_name, "Verify", DIGEST)
    dba, qa = as_person(kubeconfig, DBA), as_person(kubeconfig, QA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "Verify", "dba-alice"))
    assert error.status == 403 and "only members of group qa may approve Verify" in error.message
    annotations = approve(qa, namespace, request_name, "Verify", "qa-quinn")["metadata"][
        "annotations"
    ]
    assert annotations[APPROVE] == f"Verify@{DIGEST}" and annotations[APPROVED_BY] == "qa-quinn"


def test_a_step_without_an_approval_gate_cannot_be_approved(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "RevertWorkloads", "dba-alice"))
    assert error.status == 422
    assert "the steps that do are: MigrateDatabaseDown, RestoreDatabase, Verify" in error.message


# --- an approval is bound to what it approves, and to the moment it is asked for


def test_an_approval_of_another_subject_is_refused(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(
        lambda: approve(dba, namespace, request_name, "RestoreDatabase", "dba-alice", "f" * 16)
    )
    assert error.status == 403
    assert (
        f"the approval names RestoreDatabase@{'f' * 16}, but RestoreDatabase waits for the "
        f"approval of RestoreDatabase@{DIGEST}" in error.message
    )


def test_an_approval_before_the_step_waits_is_refused(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(
        lambda: approve(dba, namespace, request_name, "MigrateDatabaseDown", "dba-alice", DIGEST)
    )
    assert error.status == 403
    assert (
        "the request is not waiting for an approval of MigrateDatabaseDown (phase "
        '"AwaitingApproval", step "RestoreDatabase")' in error.message
    )
    # Nor at creation, as in a commit that holds the request and its approval together.
    body = request_body("pre-approved")
    body["metadata"]["annotations"] = {
        APPROVE: f"RestoreDatabase@{DIGEST}",
        APPROVED_BY: "dba-alice",
    }
    error = _refusal(
        lambda: client.CustomObjectsApi(dba).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
    )
    assert error.status == 403 and "an approval counts only while its step waits" in error.message


def test_a_dba_approves_as_themselves_and_other_edits_are_not_judged(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba, developer = as_person(kubeconfig, DBA), as_person(kubeconfig, DEVELOPER)
    approve(dba, namespace, request_name, "RestoreDatabase", "dba-alice")
    # Another annotation by someone outside the group leaves the approval alone: allowed.
    client.CustomObjectsApi(developer).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        request_name,
        {"metadata": {"annotations": {"team/ticket": "INC-4711"}}},
    )
    annotations = _annotations(api, namespace, request_name)
    assert annotations[APPROVED_BY] == "dba-alice" and annotations["team/ticket"] == "INC-4711"
    # ...but changing the approver is an approval, and is judged.
    error = _refusal(
        lambda: approve(developer, namespace, request_name, "RestoreDatabase", "dev-dan")
    )
    assert error.status == 403


# --- the admins' RollbackPolicy objects


def test_a_namespace_policy_narrows_who_approves(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    admin_settings(
        api, namespace, {"approvals": [{"step": "RestoreDatabase", "groups": ["payments-dba"]}]}
    )

    error = _in_force(as_person(kubeconfig, DBA), namespace, request_name, "dba-alice")
    assert error.status == 403
    assert (
        f"the RollbackPolicy {namespace}/default lets only members of payments-dba approve "
        "RestoreDatabase, and dba-alice is not one" in error.message
    )
    # A member of the namespace's group but not a DBA (with the approver role): the base
    # group still holds.
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "payments-approvers"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "rollback-approver",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "payments-dba"}
            ],
        },
    )
    answer = wait_until(
        lambda: (
            found
            if b"cannot patch"
            not in (
                found := _approve_as_member_of(
                    kubeconfig,
                    "pay-pam",
                    ["payments-dba"],
                    namespace,
                    request_name,
                    "RestoreDatabase",
                )
            ).data
            else None
        ),
        timeout=30,
        what="the payments-dba group's approver role in force",
    )
    assert answer.status == 403
    assert "only members of group dba may approve RestoreDatabase" in answer.data.decode(), (
        json.loads(answer.data)["message"]
    )
    # A DBA of the payments team approves.
    answer = _approve_as_member_of(
        kubeconfig, "dba-pat", ["dba", "payments-dba"], namespace, request_name, "RestoreDatabase"
    )
    assert answer.status == 200, answer.data.decode()
    assert _annotations(api, namespace, request_name)[APPROVED_BY] == "dba-pat"


@pytest.mark.serial  # the cluster-wide RollbackPolicy holds in every other test's namespace too
def test_the_cluster_wide_policy_holds_in_every_namespace(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    request_name: str,
    cluster_settings: Callable[[dict[str, object]], None],
) -> None:
    cluster_settings({"approvals": [{"step": "RestoreDatabase", "groups": ["db-oncall"]}]})
    _in_force(as_person(kubeconfig, DBA), namespace, request_name, "dba-alice")
    answer = _approve_as_member_of(
        kubeconfig, "dba-pat", ["dba"], namespace, request_name, "RestoreDatabase"
    )
    assert answer.status == 403
    assert (
        f"the RollbackPolicy {OPERATOR_NAMESPACE}/default lets only members of db-oncall approve "
        "RestoreDatabase" in answer.data.decode()
    )
    answer = _approve_as_member_of(
        kubeconfig, "dba-pat", ["dba", "db-oncall"], namespace, request_name, "RestoreDatabase"
    )
    assert answer.status == 200, answer.data.decode()


def test_requesters_cannot_write_the_admins_settings(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    for person in (DEVELOPER, DBA):
        error = _refusal(
            lambda person=person: client.CustomObjectsApi(
                as_person(kubeconfig, person)
            ).create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "rollbackpolicies",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "RollbackPolicy",
                    "metadata": {"name": "default"},
                    "spec": {"approvals": []},
                },
            )
        )
        assert error.status == 403 and "cannot create resource" in error.message
