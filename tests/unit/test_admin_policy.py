"""The admins' settings (RollbackPolicy): parsing, the two levels combined, the gates a request
gets from them and from its own spec."""

from __future__ import annotations

import pytest

from rollback_operator.admin_policy import (
    DEFAULT_POLICY,
    FROM_CLUSTER,
    FROM_DEFAULT,
    FROM_NAMESPACE,
    FROM_REQUEST,
    AdminPolicy,
    effective,
    gate,
)
from rollback_operator.model import StepName

RESTORE, MIGRATE, VERIFY = (
    StepName.RESTORE_DATABASE,
    StepName.MIGRATE_DATABASE_DOWN,
    StepName.VERIFY,
)


def test_parse_reads_the_spec_as_the_crd_admits_it() -> None:
    policy = AdminPolicy.parse(
        {
            "approvals": [
                {"step": "RestoreDatabase", "groups": ["dba", "db-admins"]},
                {"step": "Verify", "groups": ["qa"]},
            ],
            "allowedImages": ["registry.example.com/*"],
            "allowedHosts": ["*.example.com"],
        },
        FROM_CLUSTER,
    )
    assert policy.approvals == {RESTORE: ("dba", "db-admins"), VERIFY: ("qa",)}
    assert policy.allowed_images == ("registry.example.com/*",)
    assert policy.allowed_hosts == ("*.example.com",)
    assert policy.origins == {RESTORE: FROM_CLUSTER, VERIFY: FROM_CLUSTER}


def test_parse_ignores_a_step_it_does_not_know_and_one_that_takes_no_approval() -> None:
    policy = AdminPolicy.parse(
        {"approvals": [{"step": "Teleport", "groups": ["x"]}, {"step": "Deploy", "groups": ["x"]}]}
    )
    assert policy.approvals == {}
    assert policy.sets_approvals


def test_nothing_configured_is_the_default_a_dba_for_the_restore_and_the_migrate_down() -> None:
    assert effective(None, None) is DEFAULT_POLICY
    assert DEFAULT_POLICY.approvals == {RESTORE: ("dba",), MIGRATE: ("dba",)}
    assert DEFAULT_POLICY.allows_image("anything:latest")
    assert DEFAULT_POLICY.allows_host("anywhere.example")


def test_an_object_without_approvals_drops_no_default_gate() -> None:
    """An object written only for its allowlists leaves the approvals to the default."""
    images_only = AdminPolicy.parse({"allowedImages": ["postgres:*"]}, FROM_CLUSTER)
    policy = effective(images_only, None)
    assert policy.approvals == DEFAULT_POLICY.approvals
    assert not policy.allows_image("evil/image:1")


def test_an_admin_may_turn_the_gates_off_explicitly() -> None:
    policy = effective(AdminPolicy.parse({"approvals": []}, FROM_CLUSTER), None)
    assert policy.approvals == {}


def test_a_step_needs_approval_if_either_level_names_it() -> None:
    cluster = AdminPolicy.parse(
        {"approvals": [{"step": "RestoreDatabase", "groups": ["dba"]}]}, FROM_CLUSTER
    )
    namespace = AdminPolicy.parse({"approvals": [{"step": "Verify", "groups": ["qa"]}]})
    policy = effective(cluster, namespace)
    assert policy.approvals == {RESTORE: ("dba",), VERIFY: ("qa",)}
    assert policy.origins == {RESTORE: FROM_CLUSTER, VERIFY: FROM_NAMESPACE}


def test_the_namespace_names_the_groups_for_the_steps_it_names() -> None:
    cluster = AdminPolicy.parse(
        {
            "approvals": [
                {"step": "RestoreDatabase", "groups": ["dba"]},
                {"step": "MigrateDatabaseDown", "groups": ["dba"]},
            ]
        },
        FROM_CLUSTER,
    )
    namespace = AdminPolicy.parse(
        {"approvals": [{"step": "RestoreDatabase", "groups": ["payments-dba"]}]}
    )
    policy = effective(cluster, namespace)
    assert policy.groups(RESTORE) == ("payments-dba",)
    assert policy.groups(MIGRATE) == ("dba",)
    assert policy.origins[RESTORE] == FROM_NAMESPACE


def test_a_namespace_cannot_remove_a_cluster_gate() -> None:
    cluster = AdminPolicy.parse(
        {"approvals": [{"step": "RestoreDatabase", "groups": ["dba"]}]}, FROM_CLUSTER
    )
    namespace = AdminPolicy.parse({"approvals": []})
    assert effective(cluster, namespace).requires(RESTORE)


def test_allowlists_must_allow_at_both_levels() -> None:
    cluster = AdminPolicy.parse(
        {"allowedImages": ["registry.example.com/*"], "allowedHosts": ["*.example.com"]},
        FROM_CLUSTER,
    )
    namespace = AdminPolicy.parse(
        {
            "allowedImages": ["registry.example.com/payments/*", "docker.io/*"],
            "allowedHosts": ["cdn.example.com"],
        }
    )
    policy = effective(cluster, namespace)
    assert policy.allows_image("registry.example.com/payments/db:16")
    assert not policy.allows_image("registry.example.com/other/db:16")  # the namespace narrows
    assert not policy.allows_image("docker.io/postgres:16")  # and cannot widen
    assert policy.allows_host("CDN.example.com.")
    assert not policy.allows_host("api.example.com")
    assert policy.allowed_images_layers == (cluster.allowed_images, namespace.allowed_images)


def test_one_level_with_an_allowlist_is_enough_to_restrict() -> None:
    namespace = AdminPolicy.parse({"allowedHosts": ["hooks.example.com"]})
    policy = effective(None, namespace)
    assert policy.allows_host("hooks.example.com")
    assert not policy.allows_host("169.254.169.254")
    assert policy.approvals == DEFAULT_POLICY.approvals


@pytest.mark.parametrize("requested", [True, False])
def test_a_request_cannot_remove_an_admin_gate(requested: bool) -> None:
    found = gate(DEFAULT_POLICY, RESTORE, requested)
    assert found is not None
    assert (found.groups, found.reason) == (("dba",), FROM_DEFAULT)


def test_a_request_may_add_a_gate_with_the_default_groups() -> None:
    found = gate(DEFAULT_POLICY, VERIFY, requested=True)
    assert found is not None
    assert (found.groups, found.reason) == (("qa",), FROM_REQUEST)
    assert gate(DEFAULT_POLICY, VERIFY, requested=False) is None


def test_describe_says_which_level_asks_for_each_gate() -> None:
    assert DEFAULT_POLICY.describe() == (
        "MigrateDatabaseDown by a member of dba (the built-in default); "
        "RestoreDatabase by a member of dba (the built-in default)"
    )


def test_every_level_that_names_a_step_must_be_satisfied_by_the_approver() -> None:
    """As the API server judges each level with its own binding: a namespace narrows who
    approves (its groups are named first), never widens it."""
    cluster = AdminPolicy.parse(
        {"approvals": [{"step": "RestoreDatabase", "groups": ["db-oncall"]}]}, FROM_CLUSTER
    )
    namespace = AdminPolicy.parse(
        {"approvals": [{"step": "RestoreDatabase", "groups": ["payments-dba"]}]}
    )
    found = gate(effective(cluster, namespace), RESTORE, requested=False)
    assert found is not None
    assert found.layers == (("dba",), ("db-oncall",), ("payments-dba",))
    assert found.groups == ("payments-dba",)
    assert found.who() == (
        "a member of group payments-dba, also of group db-oncall, also of group dba"
    )
    assert found.reason == FROM_NAMESPACE


def test_the_base_group_is_not_repeated() -> None:
    found = gate(DEFAULT_POLICY, RESTORE, requested=False)
    assert found is not None and found.layers == (("dba",),)
    assert found.who() == "a member of group dba"
