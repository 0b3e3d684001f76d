"""Installing the operator with its Helm chart (charts/rollback-operator/), with the real Helm.

Helm is built from the Go module proxy by `cluster/build.sh helm` (cluster/up.sh builds it),
at the version in cluster/versions.env; the Prometheus Operator's CRDs, which the
ServiceMonitor and PrometheusRule need, come from its module the same way. The chart is
linted; it renders the very objects of the kustomize base for the default values (so the two
cannot drift apart); its output passes a server-side dry run; its ServiceMonitor gives the job
label the alerts read; and a release is installed, proven by a full rollback run as the
chart's ServiceAccount, upgraded to watching named namespaces (proven again by a full run),
and uninstalled, leaving nothing but the CRD.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import GROUP, PLURAL, VERSION
from tests.e2e.people import admission_settled
from tests.e2e.support import REPO_ROOT
from tests.e2e.test_install import (
    CRD,
    MANIFESTS,
    NAMESPACED,
    SERVICE_ACCOUNT,
    _full_run,
    _key,
    _kubectl,
    _namespaced_variant,
    _render,
    _token_kubeconfig,
    _whoami,
)

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "rollback-operator"
MONITORING = MANIFESTS / "monitoring"
RELEASE = "rollback-operator"
# Labels Helm's templates add to the kustomize base's (the comparison leaves them out).
HELM_LABELS = ("app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart")
# Cluster-scoped objects the chart owns, by fixed name. Other tests apply some of them from
# manifests/ (the approval policy, the people's roles): Helm would refuse to adopt those.
CLUSTER_SCOPED = {
    "validatingadmissionpolicybindings": [
        "rollback-approvals",
        "rollback-approvals-namespace",
        "rollback-approvals-cluster",
        "rollback-finished-label",
        "rollback-requested-by",
        "rollback-requester-rights",
    ],
    "validatingadmissionpolicies": [
        "rollback-approvals",
        "rollback-finished-label",
        "rollback-requested-by",
        "rollback-requester-rights",
    ],
    "mutatingadmissionpolicybindings": ["rollback-requested-by"],
    "mutatingadmissionpolicies": ["rollback-requested-by"],
    "clusterrolebindings": ["rollback-operator", "rollback-operator-cluster-scope"],
    "clusterroles": [
        "rollback-operator",
        "rollback-operator-cluster-scope",
        "rollback-requester",
        "rollback-approver",
    ],
}
MONITORING_CRDS = ("servicemonitors", "prometheusrules")
WITH_MONITORING = ("--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true")
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}

Helm = Callable[..., subprocess.CompletedProcess[str]]


def _versions() -> dict[str, str]:
    lines = (REPO_ROOT / "cluster" / "versions.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def _cache() -> Path:
    """Where cluster/build.sh keeps what it builds (as cluster/lib.sh computes it)."""
    if "ROLLBACK_OPERATOR_CACHE" in os.environ:
        return Path(os.environ["ROLLBACK_OPERATOR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rollback-operator"


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for label in HELM_LABELS:
            meta.get("labels", {}).pop(label, None)
    return obj


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Runs the cached Helm against the test cluster, with homes of its own (nothing of the
    user's Helm configuration read or written)."""
    binary = _cache() / "bin" / f"helm-{_versions()['HELM_VERSION']}" / "helm"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no Helm at {binary}: run `cluster/build.sh helm` (cluster/up.sh builds it)")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(binary), *args], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        if check:
            assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done

    return run


@pytest.fixture(scope="module")
def monitoring_crds(kubeconfig: str) -> None:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its module."""
    version = _versions()["PROMETHEUS_OPERATOR_VERSION"]
    directory = _cache() / "bin" / f"prometheus-operator-crds-{version}"
    for plural in MONITORING_CRDS:
        path = directory / f"monitoring.coreos.com_{plural}.yaml"
        if not path.is_file():
            pytest.fail(f"no {path}: run `cluster/build.sh prometheus_operator_crds`")
        applied = _kubectl(kubeconfig, "apply", "--server-side", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
    names = [f"crd/{plural}.monitoring.coreos.com" for plural in MONITORING_CRDS]
    established = _kubectl(
        kubeconfig, "wait", "--for=condition=Established", "--timeout=30s", *names
    )
    assert established.returncode == 0, established.stderr


@pytest.fixture
def release_namespace(api: client.ApiClient) -> Iterator[str]:
    """The release's own namespace, with Pod Security "restricted" enforced, as docs/install.md
    has the admin create it (the kustomize base's Namespace carries the same labels)."""
    name = f"rbo-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    yield name
    core.delete_namespace(name)


# --- the chart on its own ----------------------------------------------------------------------


def test_lint(helm: Helm) -> None:
    for values in ((), ("--set", "watchNamespaces={lawyershub,staging}", *WITH_MONITORING)):
        linted = helm("lint", "--strict", str(CHART), *values)
        assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout, linted.stdout
    # values.schema.json and the templates refuse what would install something broken.
    for wrong, why in (
        (("--set", "replicas=-1"), "/replicas"),
        (("--set", "watchNamespace={lawyershub}"), "'watchNamespace' not allowed"),
        (("--set", "approvals.approvers[0].step=Deploy"), "/approvals/approvers/0/step"),
        (
            ("--set", "approvals.approvers[0].step=Verify,approvals.approvers[0].group=q'a"),
            "quotes and backslashes are not allowed",
        ),
        (
            ("--set", "serviceMonitor.enabled=true,metrics.service.enabled=false"),
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ):
        refused = helm("template", str(CHART), *wrong, check=False)
        assert refused.returncode != 0, wrong
        assert why in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("values", "kustomizations"),
    [
        ((), [MANIFESTS]),
        (("--set", "watchNamespaces={lawyershub}"), [NAMESPACED]),
        (WITH_MONITORING, [MANIFESTS, MONITORING]),
    ],
    ids=["all-namespaces", "namespaced", "monitoring"],
)
def test_renders_the_objects_of_the_kustomize_base(
    helm: Helm, values: tuple[str, ...], kustomizations: list[Path]
) -> None:
    """One source of truth: the chart, with the default values (or the ones named), renders
    each object of the kustomize base as it is, Helm's own labels aside. The differences: no
    Namespace (Helm installs into the release's namespace, which the admin creates), and the
    CRD without the base's common labels (Helm installs crds/ as they are, untemplated)."""
    rendered = helm(
        "template", RELEASE, str(CHART), "-n", "rollback-operator", "--include-crds", *values
    )
    chart = {_key(obj): _without_helm_labels(obj) for obj in _documents(rendered.stdout)}
    kustomize = {_key(obj): obj for path in kustomizations for obj in _render(path)}
    assert set(kustomize) - set(chart) == {("Namespace", "", "rollback-operator")}
    assert set(chart) <= set(kustomize), f"only in the chart: {set(chart) - set(kustomize)}"
    for crd in kustomize:
        if crd[0] == "CustomResourceDefinition":
            kustomize[crd]["metadata"].pop("labels")
    for key, obj in chart.items():
        assert obj == kustomize[key], f"{key} differs from the kustomize base's"


def test_template_passes_a_server_side_dry_run(
    helm: Helm,
    kubeconfig: str,
    crds_installed: None,
    monitoring_crds: None,
    release_namespace: str,
    namespace: str,
) -> None:
    """`helm template | kubectl apply --server-side --dry-run=server`: every object, the CRD
    included, is valid for the API server, in both modes (the second with the people's role
    bindings too)."""
    people = (
        "--set", f"userRoles.bindings[0].namespace={namespace}",
        "--set", "userRoles.bindings[0].role=rollback-requester",
        "--set", "userRoles.bindings[0].groups={lead-engineers}",
        "--set", f"userRoles.bindings[1].namespace={namespace}",
        "--set", "userRoles.bindings[1].role=rollback-approver",
        "--set", "userRoles.bindings[1].groups={dba,qa}",
        "--set", "userRoles.bindings[1].users={dba-alice}",
    )  # fmt: skip
    for values in ((), ("--set", f"watchNamespaces={{{namespace}}}", *people)):
        rendered = helm(
            "template",
            RELEASE,
            str(CHART),
            "-n",
            release_namespace,
            "--include-crds",
            *WITH_MONITORING,
            *values,
        )
        objects = _documents(rendered.stdout)
        if values:
            bindings = [o for o in objects if o["kind"] == "RoleBinding"]
            # The operator's, its leader election's, its settings' read and the two people's.
            assert len(bindings) == 5, bindings
        applied = _kubectl(
            kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
            stdin=rendered.stdout,
        )
        assert applied.returncode == 0, applied.stderr
        lines = applied.stdout.splitlines()
        assert len(lines) == len(objects), applied.stdout
        assert all(line.endswith("serverside-applied (server dry run)") for line in lines), (
            applied.stdout
        )


def test_service_monitor_gives_the_job_the_alerts_read(
    helm: Helm, kubeconfig: str, monitoring_crds: None
) -> None:
    """The job label the Prometheus Operator gives the operator's series, by the rule its own
    ServiceMonitor CRD states, is the job RollbackOperatorDown reads, for the chart's objects
    (the kustomize base's are the same, and tests/unit/test_monitoring_files.py checks them)."""
    found = _kubectl(
        kubeconfig, "get", "crd", "servicemonitors.monitoring.coreos.com", "-o", "json"
    )
    assert found.returncode == 0, found.stderr
    (version,) = json.loads(found.stdout)["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rule = " ".join(spec["properties"]["jobLabel"]["description"].split())
    assert "which will be used as the `job` label for all metrics" in rule
    assert "defaults to the name of the associated Kubernetes `Service`" in rule

    rendered = helm("template", RELEASE, str(CHART), "-n", "rollback-operator", *WITH_MONITORING)
    objects = {obj["kind"]: obj for obj in _documents(rendered.stdout)}
    service, monitor = objects["Service"], objects["ServiceMonitor"]
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    job_label = monitor["spec"].get("jobLabel", "")
    job = labels.get(job_label) or service["metadata"]["name"]
    assert job == "rollback-operator"
    rules = [r for g in objects["PrometheusRule"]["spec"]["groups"] for r in g["rules"]]
    (down,) = [r for r in rules if r["alert"] == "RollbackOperatorDown"]
    assert f'up{{job="{job}"}}' in down["expr"]


# --- a release: install, full run, upgrade, full run, uninstall --------------------------------


def _clear_cluster_scoped(kubeconfig: str) -> None:
    """Deletes the chart's cluster-scoped objects that other tests applied from manifests/
    (they apply them again when they need them): a new cluster has none."""
    for resource, names in CLUSTER_SCOPED.items():
        deleted = _kubectl(
            kubeconfig, "delete", "--ignore-not-found", resource, *names, "--wait=true"
        )
        assert deleted.returncode == 0, deleted.stderr


def _release_objects(helm: Helm, namespace: str) -> list[dict[str, Any]]:
    return _documents(helm("get", "manifest", RELEASE, "-n", namespace).stdout)


def _exists(kubeconfig: str, obj: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    where = ["-n", meta["namespace"]] if "namespace" in meta else []
    kind = (
        f"{obj['kind']}.{obj['apiVersion'].split('/')[0]}"
        if "/" in obj["apiVersion"]
        else obj["kind"]
    )
    found = _kubectl(
        kubeconfig, "get", kind, meta["name"], *where, "--ignore-not-found", "-o", "name"
    )
    assert found.returncode == 0, found.stderr
    return bool(found.stdout.strip())


@pytest.mark.serial  # removes the shipped policies and roles every other test may rely on
def test_install_run_upgrade_run_uninstall(
    helm: Helm,
    api: client.ApiClient,
    kubeconfig: str,
    crds_installed: None,
    monitoring_crds: None,
    release_namespace: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    _clear_cluster_scoped(kubeconfig)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": release_namespace}
    watched = f"t-{uuid.uuid4().hex[:10]}"  # the namespace the upgraded release watches
    core.create_namespace({"metadata": {"name": watched}})
    wait_until(
        lambda: core.read_namespaced_service_account("default", watched),
        timeout=30,
        what=f"default ServiceAccount in {watched}",
    )
    for step in ("all-namespaces", "named-namespaces"):
        (tmp_path / step).mkdir()
    try:
        # helm install: every rendered object exists; the pod is admitted under "restricted".
        helm(
            "install", RELEASE, str(CHART), "-n", release_namespace, *WITH_MONITORING,
            "--wait", "--timeout", "2m",
        )  # fmt: skip
        installed = _release_objects(helm, release_namespace)
        kinds = {obj["kind"] for obj in installed}
        assert kinds >= {"Deployment", "ClusterRole", "ServiceMonitor", "PrometheusRule"}
        assert all(_exists(kubeconfig, obj) for obj in installed)
        deployment = apps.read_namespaced_deployment("rollback-operator", release_namespace)
        assert deployment.status.available_replicas == 2  # one leads, one stands by
        pods = core.list_namespaced_pod(release_namespace).items
        assert [p.spec.service_account_name for p in pods] == [SERVICE_ACCOUNT] * 2

        # A full run as the chart's ServiceAccount, watching every namespace. The test's
        # operator watches only the test's namespace (-n), for which Kopf also lists
        # namespaces: the kustomize base's read-only cluster-scope role gives it that, as in
        # test_install.py.
        identity = _token_kubeconfig(
            api, release_namespace, SERVICE_ACCOUNT, tmp_path / "kubeconfig"
        )
        assert _whoami(identity) == f"system:serviceaccount:{release_namespace}:{SERVICE_ACCOUNT}"
        with _namespaced_variant(api, kubeconfig, namespace, subject, {"ClusterRole"}):
            logs = _full_run(
                api, namespace, identity, tmp_path / "all-namespaces", release_namespace
            )
        assert "Forbidden" not in logs

        # helm upgrade to named namespaces: a Role in the watched one, no cluster-wide grant
        # left, and a full run there with the chart's grants alone.
        helm(
            "upgrade", RELEASE, str(CHART), "-n", release_namespace, *WITH_MONITORING,
            "--set", f"watchNamespaces={{{watched}}}", "--wait", "--timeout", "2m",
        )  # fmt: skip
        status = json.loads(helm("status", RELEASE, "-n", release_namespace, "-o", "json").stdout)
        assert (status["version"], status["info"]["status"]) == (2, "deployed")
        deployment = apps.read_namespaced_deployment("rollback-operator", release_namespace)
        assert deployment.spec.template.spec.containers[0].args == [f"--namespace={watched}"]
        assert rbac.read_namespaced_role("rollback-operator", watched).rules
        with pytest.raises(ApiException) as gone:
            rbac.read_cluster_role("rollback-operator")
        assert gone.value.status == 404
        upgraded = _release_objects(helm, release_namespace)
        logs = _full_run(api, watched, identity, tmp_path / "named-namespaces", release_namespace)
        assert "Forbidden" not in logs

        # helm uninstall: nothing of either revision is left, nor the release's record, but
        # the CRD (Helm keeps what crds/ installed), and so every RollbackRequest.
        helm("uninstall", RELEASE, "-n", release_namespace, "--wait", "--timeout", "2m")
        left = [_key(obj) for obj in installed + upgraded if _exists(kubeconfig, obj)]
        assert not left, f"left after helm uninstall: {left}"
        records = core.list_namespaced_secret(
            release_namespace, label_selector=f"owner=helm,name={RELEASE}"
        ).items
        assert not records
        assert client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
        requests = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, watched, PLURAL
        )
        assert [r["metadata"]["name"] for r in requests["items"]] == ["golive"]
    finally:
        helm("uninstall", RELEASE, "-n", release_namespace, "--ignore-not-found", check=False)
        core.delete_namespace(watched)
        admission_settled(api)
