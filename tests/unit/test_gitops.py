"""The GitOps marks Preflight reads, and the patches that suspend and put back (pure logic)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from rollback_operator import engine, gitops
from rollback_operator.gitops import Manager
from rollback_operator.model import Phase, RollbackSpec, StepName
from rollback_operator.outcomes import Fail
from rollback_operator.status import Status
from rollback_operator.suspension import gitops_advice, gitops_conditions

NS = "lawyershub"


def _obj(labels=None, annotations=None, owners=None, spec=None, status=None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "resourceVersion": "7"}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    out: dict[str, Any] = {"metadata": meta, "spec": spec or {}}
    if status:
        out["status"] = status
    return out


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        # Argo CD 3's tracking id; an Application outside Argo CD's namespace is <ns>_<name>.
        (
            _obj(annotations={gitops.TRACKING_ID: "shop:apps/Deployment:lawyershub/web"}),
            [("Application", "argocd", "shop", True)],
        ),
        (
            _obj(annotations={gitops.TRACKING_ID: "team-a_shop:apps/Deployment:lawyershub/web"}),
            [("Application", "team-a", "shop", True)],
        ),
        # The instance label counts only if that Application exists: not certain.
        (
            _obj(labels={gitops.INSTANCE_LABEL: "shop"}),
            [("Application", "argocd", "shop", False)],
        ),
        (
            _obj(
                labels={
                    "kustomize.toolkit.fluxcd.io/name": "apps",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                    "helm.toolkit.fluxcd.io/name": "web",
                    "helm.toolkit.fluxcd.io/namespace": "team",
                }
            ),
            [
                ("Kustomization", "flux-system", "apps", True),
                ("HelmRelease", "team", "web", True),
            ],
        ),
        (
            _obj(owners=[{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "b"}]),
            [("ScaledObject", NS, "b", True)],
        ),
        # Another group's ScaledObject, or no marks at all: nobody.
        (_obj(owners=[{"apiVersion": "example.io/v1", "kind": "ScaledObject", "name": "b"}]), []),
        (_obj(labels={"app": "web"}), []),
    ],
)
def test_marks(obj: dict[str, Any], expected: list[tuple[str, str, str, bool]]) -> None:
    assert gitops._marks(obj, NS, "argocd") == expected


POLICY = {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["Validate=false"]}


def _apply(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 as the API server applies it, for the operations the operator sends."""
    out = copy.deepcopy(obj)
    for op in patch:
        *parents, last = [
            t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]
        ]
        node = out
        for token in parents:
            node = node[token]
        if op["op"] == "test":
            assert node[last] == op["value"], "test failed: the object changed"
        elif op["op"] == "remove":
            del node[last]
        elif op["op"] == "replace":
            assert last in node
            node[last] = copy.deepcopy(op["value"])
        else:
            assert op["op"] == "add"
            node[last] = copy.deepcopy(op["value"])
    return out


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("Kustomization", _obj(spec={"interval": "5m"}, status={"lastAppliedRevision": "main@1"})),
        ("HelmRelease", _obj(spec={"suspend": False})),
        ("Application", _obj(spec={"syncPolicy": copy.deepcopy(POLICY)})),
        ("ScaledObject", _obj()),
        ("ScaledObject", _obj(annotations={gitops.KEDA_PAUSED: "false", "team": "a"})),
    ],
)
def test_suspend_then_resume_gives_back_exactly_what_was_there(
    kind: str, obj: dict[str, Any]
) -> None:
    saved = gitops.saved_state(kind, obj)
    patch = gitops.suspend_patch(kind, obj)
    assert patch is not None and patch[0]["op"] == "test"  # guarded by the version read
    suspended = _apply(obj, patch)
    assert gitops.is_suspended(kind, suspended)
    assert gitops.suspend_patch(kind, suspended) is None  # idempotent
    back, what = gitops.resume_patch(kind, suspended, saved)
    assert back is not None, what
    restored = _apply(suspended, back)
    expected = copy.deepcopy(obj["spec"])
    if kind in gitops.FLUX_LABELS:
        expected["suspend"] = False  # written explicitly, the same as absent
    assert restored["spec"] == expected
    annotations = restored["metadata"].get("annotations") or {}
    assert annotations == (obj["metadata"].get("annotations") or {})


def test_argo_cd_automated_turned_back_on_by_someone_is_left_as_is() -> None:
    obj = _obj(spec={"syncPolicy": copy.deepcopy(POLICY)})
    saved = gitops.saved_state("Application", obj)
    theirs = _obj(spec={"syncPolicy": {"automated": {"prune": False}}})
    patch, what = gitops.resume_patch("Application", theirs, saved)
    assert patch is None and "turned on again since" in what


def test_an_application_without_sync_policy_gets_none_back() -> None:
    obj = _obj(spec={"project": "default"})
    assert gitops.suspend_patch("Application", obj) is None  # nothing automated: nothing to do
    assert gitops.saved_state("Application", obj) == {}


def test_a_flux_object_suspended_before_the_run_stays_suspended() -> None:
    obj = _obj(spec={"suspend": True})
    saved = gitops.saved_state("Kustomization", obj)
    assert gitops.suspend_patch("Kustomization", obj) is None
    patch, what = gitops.resume_patch("Kustomization", obj, saved)
    assert patch is None and "before the run" in what


def test_hand_commands_name_the_object() -> None:
    assert gitops.hand_commands(Manager("Kustomization", "flux-system", "apps", ())) == (
        "flux suspend kustomization apps -n flux-system"
    )
    assert "autoscaling.keda.sh/paused=true" in gitops.hand_commands(
        Manager("ScaledObject", NS, "b", ())
    )


def test_gitops_spec_defaults_to_suspend_in_argocd() -> None:
    assert gitops.GitOpsSpec.of({}) == gitops.GitOpsSpec("Suspend", "argocd")
    assert gitops.GitOpsSpec.of({"gitops": {"policy": "Ignore"}}).policy == "Ignore"


def test_marks_with_names_that_are_not_kubernetes_names_are_left_out() -> None:
    """A tracking id is free text: its names end up in API paths, so they must be names."""
    hostile = "x_../../api/v1/namespaces/kube-system/secrets/token:apps/Deployment:ns/web"
    assert gitops._marks(_obj(annotations={gitops.TRACKING_ID: hostile}), NS, "argocd") == []
    assert gitops._marks(_obj(labels={gitops.INSTANCE_LABEL: "Shop_1"}), NS, "argocd") == []


def _target(kind: str = "Deployment", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": NS, **meta}}


def test_a_manager_counts_only_if_its_own_record_lists_the_target() -> None:
    kustomization = {"status": {"inventory": {"entries": [{"id": f"{NS}_web_apps_Deployment"}]}}}
    assert gitops.lists("Kustomization", kustomization, "Deployment", _target())
    assert not gitops.lists("Kustomization", kustomization, "Ingress", _target())
    application = {
        "status": {
            "resources": [
                {"group": "networking.k8s.io", "kind": "Ingress", "namespace": NS, "name": "web"}
            ]
        }
    }
    assert gitops.lists("Application", application, "Ingress", _target())
    assert not gitops.lists("Application", application, "Deployment", _target())
    assert not gitops.lists("Application", {}, "Deployment", _target())
    release = {"status": {"history": [{"name": "web", "namespace": NS}]}}
    helm = {"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": NS}
    assert gitops.lists("HelmRelease", release, "Deployment", _target(annotations=helm))
    assert not gitops.lists("HelmRelease", release, "Deployment", _target())
    scaled = {"metadata": {"uid": "u-1"}}
    owned = _target(ownerReferences=[{"kind": "ScaledObject", "name": "web", "uid": "u-1"}])
    other = _target(ownerReferences=[{"kind": "ScaledObject", "name": "web", "uid": "u-2"}])
    assert gitops.lists("ScaledObject", scaled, "HorizontalPodAutoscaler", owned)
    assert not gitops.lists("ScaledObject", scaled, "HorizontalPodAutoscaler", other)


# --- the end of a run that suspended GitOps: still suspended, and said so, whatever the ending


def _suspended_status() -> Status:
    status = Status(phase=Phase.RUNNING, started_at="2026-01-10T03:00:00Z")
    status.saved["gitops"] = {
        "Kustomization/flux-system/apps": {
            "kind": "Kustomization",
            "namespace": "flux-system",
            "name": "apps",
            "manages": ["Deployment/backend"],
            "suspend": False,
        }
    }
    return status


@pytest.mark.parametrize("ending", ["Succeeded", "Failed", "Aborted"])
def test_every_ending_keeps_gitops_suspended_and_says_what_to_do(ending: str) -> None:

    spec = RollbackSpec.parse(
        {
            "reason": "r",
            "trigger": "ErrorRate",
            "traffic": {
                "ingresses": ["web"],
                "maintenanceBackend": {"service": "maintenance-page", "port": 80},
            },
            "workloads": [{"deployment": "backend"}],
        }
    )
    now = datetime(2026, 1, 10, 3, 5, tzinfo=UTC)
    status = _suspended_status()
    if ending == "Succeeded":
        end = engine.completed(status, spec, now)
    elif ending == "Failed":
        end = engine.stepped(status, StepName.VERIFY, Fail("images differ"), spec, now)
    else:
        end = engine.aborted(status, spec, now)
    assert str(end.phase) == ending
    assert "GitOps stays suspended (Kustomization flux-system/apps)" in end.message
    assert "Revert the go-live commit in Git" in end.message
    assert "kubectl rollback resume-gitops" in end.message
    condition = next(c for c in end.conditions if c["type"] == "GitOpsSuspended")
    assert condition["status"] == "True" and condition["reason"] == "Suspended"


def test_no_gitops_condition_when_nothing_was_suspended() -> None:

    assert gitops_conditions(Status(), None) == []  # type: ignore[arg-type]
    assert gitops_advice(Status(), "Rolled back") == "Rolled back"


def test_an_http_route_counts_as_managed_as_an_ingress_does() -> None:
    """An Argo CD Application or Flux Kustomization that syncs an HTTPRoute would undo its
    switch to the maintenance page: it is found (and suspended) like an Ingress's."""
    application = {
        "status": {
            "resources": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "HTTPRoute",
                    "namespace": NS,
                    "name": "web",
                }
            ]
        }
    }
    assert gitops.lists("Application", application, "HTTPRoute", _target())
    assert not gitops.lists("Application", application, "Ingress", _target())
    kustomization = {
        "status": {
            "inventory": {"entries": [{"id": f"{NS}_web_gateway.networking.k8s.io_HTTPRoute"}]}
        }
    }
    assert gitops.lists("Kustomization", kustomization, "HTTPRoute", _target())
