"""The approval policy shipped in manifests/: the API server itself holds each approval to
the group named for its step and to the approver's own username (runbook §3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

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
    QA,
    approve,
    as_person,
    install_approval_policy,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def request_name(
    api: client.ApiClient, kubeconfig: str, namespace: str, crds_installed: None
) -> str:
    """A request nobody runs (no operator here): the policy alone is under test."""
    install_approval_policy(api, kubeconfig, namespace)
    create_request(api, namespace, "golive")
    return "golive"


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def _refusal(call: Callable[[], object]) -> Refusal:
    with pytest.raises(ApiException) as refused:
        call()
    return Refusal(refused.value.status, json.loads(refused.value.body)["message"])


def test_a_non_dba_user_cannot_approve_the_restore(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    developer = as_person(kubeconfig, DEVELOPER)
    error = _refusal(
        lambda: approve(developer, namespace, request_name, "RestoreDatabase", "dev-dan")
    )
    assert error.status == 403
    assert "only members of group dba may approve RestoreDatabase" in error.message
    assert APPROVE not in (
        get_request(api, namespace, request_name)["metadata"].get("annotations") or {}
    )


def test_a_dba_cannot_approve_in_someone_elses_name(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "RestoreDatabase", "lead-larry"))
    assert error.status == 403
    assert 'approved-by must be your own username, dba-alice, not "lead-larry"' in error.message


def test_each_step_has_its_own_group(kubeconfig: str, namespace: str, request_name: str) -> None:
    dba, qa = as_person(kubeconfig, DBA), as_person(kubeconfig, QA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "Verify", "dba-alice"))
    assert error.status == 403 and "only members of group qa may approve Verify" in error.message
    annotations = approve(qa, namespace, request_name, "Verify", "qa-quinn")["metadata"][
        "annotations"
    ]
    assert annotations[APPROVE] == "Verify" and annotations[APPROVED_BY] == "qa-quinn"


def test_a_step_without_an_approval_gate_cannot_be_approved(
    kubeconfig: str, namespace: str, request_name: str
) -> None:
    dba = as_person(kubeconfig, DBA)
    error = _refusal(lambda: approve(dba, namespace, request_name, "RevertWorkloads", "dba-alice"))
    assert error.status == 422
    assert "the steps that do are: RestoreDatabase, Verify" in error.message


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
    annotations = get_request(api, namespace, request_name)["metadata"]["annotations"]
    assert annotations[APPROVED_BY] == "dba-alice" and annotations["team/ticket"] == "INC-4711"
    # ...but changing the approver is an approval, and is judged.
    error = _refusal(
        lambda: approve(developer, namespace, request_name, "RestoreDatabase", "dev-dan")
    )
    assert error.status == 403


def test_an_approval_written_at_creation_is_judged_too(
    api: client.ApiClient, kubeconfig: str, namespace: str, request_name: str
) -> None:
    body = request_body("pre-approved")
    body["metadata"]["annotations"] = {APPROVE: "RestoreDatabase", APPROVED_BY: "dev-dan"}
    developer = as_person(kubeconfig, DEVELOPER)
    error = _refusal(
        lambda: client.CustomObjectsApi(developer).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
    )
    assert error.status == 403
