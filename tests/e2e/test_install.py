"""Installing the operator from manifests/, and proof that its RBAC is enough and no more.

The manifests are applied to the local control plane as an admin would (`kubectl apply -k
--server-side`). The operator then runs as their ServiceAccount, with a token minted through
the TokenRequest API, and completes a full rollback; calls outside its grants are refused; and
the roles are held to an allow-list kept here, so that they cannot grow without this file
saying so (and docs/install.md saying why).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    create_request,
    deploy_app,
    request_body,
    wait_phase,
)
from tests.e2e.people import admission_settled
from tests.e2e.support import REPO_ROOT

pytestmark = pytest.mark.e2e

MANIFESTS = REPO_ROOT / "manifests"
NAMESPACED = MANIFESTS / "namespaced"
OPERATOR_NAMESPACE = "rollback-operator"
SERVICE_ACCOUNT = "rollback-operator"
CRD = f"{PLURAL}.{GROUP}"

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def _grants(group: str, resource: str, *verbs: str) -> set[Grant]:
    return {(group, resource, verb) for verb in verbs}


# Every call the operator makes in a namespace it watches. Growing this set needs a reason, in
# docs/install.md, and the code that makes the call.
IN_NAMESPACE: frozenset[Grant] = frozenset(
    _grants(GROUP, PLURAL, "get", "list", "watch", "patch")
    | _grants(GROUP, "rollbackpolicies", "get", "list", "watch")
    | _grants(GROUP, f"{PLURAL}/status", "patch")
    | _grants("coordination.k8s.io", "leases", "get", "create", "update", "delete")
    | _grants("", "events", "create")
    | _grants("", "configmaps", "get", "create", "patch")
    | _grants("networking.k8s.io", "ingresses", "get", "patch")
    | _grants("gateway.networking.k8s.io", "httproutes", "get", "patch")
    | _grants("gateway.networking.k8s.io", "referencegrants", "list")
    | _grants("", "services", "get")
    # A watch per Deployment and per Job follows a rollout or a Job (watches.py); a watch too
    # old to resume is replaced by a list of that one object.
    | _grants("apps", "deployments", "get", "list", "watch", "patch")
    | _grants("autoscaling", "horizontalpodautoscalers", "get", "list", "patch")
    | _grants("batch", "jobs", "get", "list", "watch", "create", "delete")
    | _grants("", "pods", "list")
    | _grants("", "serviceaccounts", "create")
    | _grants("", "persistentvolumeclaims", "get")
    | _grants("", "secrets", "get")
    # The GitOps objects that manage a run's targets: read, and suspended (SuspendGitOps).
    | _grants("argoproj.io", "applications", "get", "patch")
    | _grants("kustomize.toolkit.fluxcd.io", "kustomizations", "get", "patch")
    | _grants("helm.toolkit.fluxcd.io", "helmreleases", "get", "patch")
    | _grants("keda.sh", "scaledobjects", "get", "patch")
)
# What Kopf reads at cluster scope: the CRDs always; the namespaces only when given -n.
CRD_OBSERVATION: frozenset[Grant] = frozenset(
    _grants("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch")
)
NAMESPACE_OBSERVATION: frozenset[Grant] = frozenset(_grants("", "namespaces", "list", "watch"))

# The roles for people (manifests/common/user-roles.yaml), bound by the admin, not the operator.
REQUESTER: frozenset[Grant] = frozenset(
    _grants(GROUP, PLURAL, "get", "list", "watch", "create", "patch", "delete")
    | _grants("", "configmaps", "get")
)
APPROVER: frozenset[Grant] = frozenset(_grants(GROUP, PLURAL, "get", "list", "watch", "patch"))
# Leader election, in the operator's own namespace (manifests/common/leader-election.yaml).
LEADER_ELECTION: frozenset[Grant] = frozenset(
    _grants("coordination.k8s.io", "leases", "create", "get", "update")
)
# The cluster-wide RollbackPolicy, in the operator's own namespace (admin-settings.yaml).
SETTINGS_ROLE = "rollback-operator-settings"
SETTINGS: frozenset[Grant] = frozenset(_grants(GROUP, "rollbackpolicies", "get", "list", "watch"))

ALLOWED = {
    # manifests/: one ClusterRole, bound cluster-wide, for --all-namespaces.
    (MANIFESTS, "ClusterRole", "rollback-operator"): IN_NAMESPACE | CRD_OBSERVATION,
    # manifests/namespaced/: a Role per watched namespace, and what Kopf reads cluster-wide.
    (NAMESPACED, "Role", "rollback-operator"): IN_NAMESPACE,
    (NAMESPACED, "ClusterRole", "rollback-operator-cluster-scope"): (
        CRD_OBSERVATION | NAMESPACE_OBSERVATION
    ),
    **{
        (variant, "ClusterRole", name): grants
        for variant in (MANIFESTS, NAMESPACED)
        for name, grants in (("rollback-requester", REQUESTER), ("rollback-approver", APPROVER))
    },
    **{
        (variant, "Role", "rollback-operator-leader-election"): LEADER_ELECTION
        for variant in (MANIFESTS, NAMESPACED)
    },
    **{
        (variant, "Role", "rollback-operator-settings"): SETTINGS
        for variant in (MANIFESTS, NAMESPACED)
    },
}
ROLE_KINDS = ("Role", "ClusterRole")
BINDING_KINDS = ("RoleBinding", "ClusterRoleBinding")


# --- helpers -----------------------------------------------------------------------------------


def _kubectl(
    kubeconfig: str | None, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"
    prefix = [kubectl] if kubeconfig is None else [kubectl, "--kubeconfig", kubeconfig]
    return subprocess.run(
        [*prefix, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def _render(path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k path` would apply."""
    built = _kubectl(None, "kustomize", str(path))
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def _rule_grants(rule: dict[str, Any]) -> set[Grant]:
    return {
        (group, resource, verb)
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def _service_account_token(api: client.ApiClient, namespace: str, service_account: str) -> str:
    """A token for the ServiceAccount from the TokenRequest API, as the kubelet gets a pod's."""
    return str(
        client.CoreV1Api(api)
        .create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": 3600}}
        )
        .status.token
    )


def _token_kubeconfig(
    api: client.ApiClient, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig for the ServiceAccount: a token from the TokenRequest API, this cluster's
    server and CA, and nothing else (no admin credential to fall back on)."""
    token = _service_account_token(api, namespace, service_account)
    cluster: dict[str, Any] = {"server": api.configuration.host}
    assert api.configuration.ssl_ca_cert, "the admin kubeconfig names no CA"
    ca = Path(api.configuration.ssl_ca_cert).read_bytes()
    cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    user = f"{namespace}:{service_account}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "cluster", "cluster": cluster}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user}}],
                "current-context": user,
            }
        )
    )
    path.chmod(0o600)
    return path


def _whoami(kubeconfig: Path) -> str:
    review = client.AuthenticationV1Api(
        config.new_client_from_config(config_file=str(kubeconfig))
    ).create_self_subject_review({})
    return str(review.status.user_info.username)


class _Runnable(Protocol):
    """An operator that can be started and stopped: a process here, a container in
    test_image.py."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def logs(self) -> str: ...


def _full_run(
    api: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    log_dir: Path,
    lease_namespace: str | None = None,
) -> str:
    """Deploys the sample, runs the operator with `kubeconfig` on a request, returns its logs.
    The leader Lease is in `lease_namespace` (default: the watched one), as in a pod of the
    Deployment whose leader-election Role grants it there."""
    operator = Operator(namespace, str(kubeconfig), log_dir, lease_namespace=lease_namespace)
    return _full_run_of(api, namespace, operator)


def _full_run_of(api: client.ApiClient, namespace: str, operator: _Runnable) -> str:
    """Deploys the sample, runs `operator` on a request to Succeeded, returns its logs."""
    deploy_app(api, namespace)
    operator.start()
    try:
        create_request(api, namespace, "golive")
        done = wait_phase(api, namespace, "golive", "Succeeded", "Failed", "Aborted")
    finally:
        operator.stop()
        print(operator.logs()[-20000:])
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    states = {s["name"]: s["state"] for s in done["status"]["steps"]}
    for step in ("Preflight", "EnableMaintenance", "RevertWorkloads", "DisableMaintenance"):
        assert states[step] == "Succeeded", states
    return operator.logs()


@contextmanager
def _namespaced_variant(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    subject: dict[str, str],
    kinds: set[str],
) -> Iterator[None]:
    """Applies roles of manifests/namespaced/ (`kinds`: Role, ClusterRole), with their bindings,
    for `subject`: the Role and RoleBinding in `namespace`, the cluster-scoped ones under names
    of their own (deleted afterwards), so that tests never touch each other's grants."""
    wanted = kinds | {f"{kind}Binding" for kind in kinds}
    objects = [obj for obj in _render(NAMESPACED) if obj["kind"] in wanted]
    assert {obj["kind"] for obj in objects} == wanted
    for obj in objects:
        # The read of the cluster-wide RollbackPolicy stays in the operator's namespace, under
        # a name of this test's own, as the cluster-scoped roles do.
        elsewhere = obj["metadata"].get("name") == SETTINGS_ROLE
        if obj["kind"].startswith("Cluster") or elsewhere:
            obj["metadata"]["name"] += f"-{namespace}"
        else:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "ClusterRoleBinding" or (elsewhere and obj["kind"] == "RoleBinding"):
            obj["roleRef"]["name"] += f"-{namespace}"
        if obj["kind"] in BINDING_KINDS:
            obj["subjects"] = [subject]
    if any(obj["metadata"].get("name", "").startswith(SETTINGS_ROLE) for obj in objects):
        try:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
        except ApiException as error:
            if error.status != 409:
                raise
    applied = _kubectl(
        kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects)
    )
    assert applied.returncode == 0, applied.stderr
    try:
        yield
    finally:
        rbac = client.RbacAuthorizationV1Api(api)
        for obj in objects:
            if obj["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(obj["metadata"]["name"])
            elif obj["kind"] == "ClusterRole":
                rbac.delete_cluster_role(obj["metadata"]["name"])
            elif obj["metadata"]["name"] == f"{SETTINGS_ROLE}-{namespace}":
                delete = (
                    rbac.delete_namespaced_role_binding
                    if obj["kind"] == "RoleBinding"
                    else rbac.delete_namespaced_role
                )
                delete(obj["metadata"]["name"], OPERATOR_NAMESPACE)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(api: client.ApiClient, kubeconfig: str) -> Iterator[subprocess.CompletedProcess[str]]:
    """`kubectl apply -k manifests/ --server-side`; afterwards everything it created is deleted
    but the CRD, which the other tests share."""
    core = client.CoreV1Api(api)

    def namespace_usable() -> bool:  # not left Terminating by a previous run
        try:
            return core.read_namespace(OPERATOR_NAMESPACE).status.phase == "Active"
        except ApiException as error:
            if error.status == 404:
                return True
            raise

    wait_until(namespace_usable, timeout=60, what=f"namespace {OPERATOR_NAMESPACE} not terminating")
    applied = _kubectl(kubeconfig, "apply", "-k", str(MANIFESTS), "--server-side")
    if applied.returncode != 0:
        pytest.fail(f"kubectl apply -k manifests/ failed:\n{applied.stdout}{applied.stderr}")
    yield applied
    rest = [obj for obj in _render(MANIFESTS) if obj["kind"] != "CustomResourceDefinition"]
    deleted = _kubectl(
        kubeconfig,
        "delete",
        "--ignore-not-found",
        "--wait=false",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(rest),
    )
    assert deleted.returncode == 0, deleted.stderr
    admission_settled(api)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    api: client.ApiClient,
    installed: subprocess.CompletedProcess[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The operator's identity from manifests/: its ServiceAccount, by token."""
    path = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    return _token_kubeconfig(api, OPERATOR_NAMESPACE, SERVICE_ACCOUNT, path)


# --- (a) the install ---------------------------------------------------------------------------


@pytest.mark.serial  # `installed`: manifests/ applied, then deleted
def test_apply_k_creates_every_object(
    api: client.ApiClient,
    kubeconfig: str,
    crds_installed: None,  # first, so that the shared fixture cannot rewrite the CRD after
    installed: subprocess.CompletedProcess[str],
) -> None:
    rendered = _render(MANIFESTS)
    kinds = {obj["kind"] for obj in rendered}
    assert kinds == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    lines = installed.stdout.splitlines()
    assert len(lines) == len(rendered), installed.stdout
    assert all(line.endswith(" serverside-applied") for line in lines), installed.stdout

    found = _kubectl(kubeconfig, "get", "-k", str(MANIFESTS), "-o", "json")
    assert found.returncode == 0, found.stderr
    live = {_key(obj): obj for obj in yaml.safe_load(found.stdout)["items"]}
    assert set(live) == {_key(obj) for obj in rendered}
    for obj in rendered:  # what was applied is what the server keeps (labels included)
        labels = live[_key(obj)]["metadata"].get("labels") or {}
        assert obj["metadata"].get("labels", {}).items() <= labels.items(), _key(obj)

    # The pod is admitted under Pod Security "restricted" and the Deployment becomes Available.
    apps = client.AppsV1Api(api)

    def available() -> bool:
        deployment = apps.read_namespaced_deployment("rollback-operator", OPERATOR_NAMESPACE)
        return deployment.status.available_replicas == 2

    wait_until(available, timeout=30, what="the operator Deployment Available")
    pods = client.CoreV1Api(api).list_namespaced_pod(OPERATOR_NAMESPACE).items
    assert [p.spec.service_account_name for p in pods] == [SERVICE_ACCOUNT] * 2


def test_deployment_is_hardened() -> None:
    for variant, args in (
        (MANIFESTS, ["--all-namespaces"]),
        (NAMESPACED, ["--namespace=lawyershub"]),
    ):
        (deployment,) = [o for o in _render(variant) if o["kind"] == "Deployment"]
        spec = deployment["spec"]
        assert spec["replicas"] == 2  # one leads, one stands by
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        env = {
            e["name"]: e.get("valueFrom") for e in spec["template"]["spec"]["containers"][0]["env"]
        }
        assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        pod = spec["template"]["spec"]
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["image"] == "rollback-operator:0.1.0"
        assert container["args"] == args
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        liveness = container["livenessProbe"]["httpGet"]
        assert liveness["path"] == "/healthz"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[liveness["port"]] == 8080  # the operator's default --liveness


# --- (b) enough: a full run as the ServiceAccount ----------------------------------------------


@pytest.mark.serial  # `installed`: manifests/ applied, then deleted
def test_full_run_as_the_service_account(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """The ClusterRole variant, whose binding is cluster-wide already.

    The test's operator watches only the test's namespace (-n), not every namespace as the
    Deployment does: it must not drive other tests' requests. With -n, Kopf also lists and
    watches namespaces, which --all-namespaces does not; lacking that, it retries for 18 s and
    carries on. The namespaced variant's read-only cluster-scope role, from manifests/, gives
    it that, so that the run can be held to "not one call refused"."""
    identity = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"
    assert _whoami(operator_kubeconfig) == identity
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
    with _namespaced_variant(api, kubeconfig, namespace, subject, {"ClusterRole"}):
        logs = _full_run(api, namespace, operator_kubeconfig, tmp_path, OPERATOR_NAMESPACE)
    assert "Forbidden" not in logs


def test_full_run_with_the_namespaced_roles(
    api: client.ApiClient, kubeconfig: str, namespace: str, crds_installed: None, tmp_path: Path
) -> None:
    """The namespaced variant, its grants unchanged, bound to an identity of this test alone
    (a ServiceAccount in the test's namespace), which the cluster-wide binding of manifests/
    does not cover."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": SERVICE_ACCOUNT}})
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    with _namespaced_variant(api, kubeconfig, namespace, subject, {"Role", "ClusterRole"}):
        identity = _token_kubeconfig(api, namespace, SERVICE_ACCOUNT, tmp_path / "kubeconfig")
        assert _whoami(identity) == f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
        logs = _full_run(api, namespace, identity, tmp_path)
    assert "Forbidden" not in logs


# --- (c) no more: calls outside the grants are refused -----------------------------------------


@pytest.mark.serial  # `installed`: manifests/ applied, then deleted
def test_calls_outside_the_grants_are_refused(
    api: client.ApiClient, namespace: str, crds_installed: None, operator_kubeconfig: Path
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db-credentials"}, "stringData": {"password": "hunter2"}}
    )
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                },
            },
        },
    )
    me = config.new_client_from_config(config_file=str(operator_kubeconfig))
    my_core, my_apps = client.CoreV1Api(me), client.AppsV1Api(me)
    my_rbac, my_custom = client.RbacAuthorizationV1Api(me), client.CustomObjectsApi(me)

    # What it may do works: the refusals below are about grants, not about the credential.
    assert my_apps.read_namespaced_deployment("web", namespace).metadata.name == "web"

    operator = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
    admin = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    escalation = {"metadata": {"name": "escalate"}, "roleRef": admin, "subjects": [operator]}
    outside: dict[str, Callable[[], Any]] = {
        "list Secrets": lambda: my_core.list_namespaced_secret(namespace),
        "watch Secrets cluster-wide": lambda: my_core.list_secret_for_all_namespaces(
            watch=True, timeout_seconds=1
        ),
        "delete a Deployment": lambda: my_apps.delete_namespaced_deployment("web", namespace),
        "create a Pod": lambda: my_core.create_namespaced_pod(
            namespace,
            {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}},
        ),
        "delete a Secret": lambda: my_core.delete_namespaced_secret("db-credentials", namespace),
        "delete a ConfigMap": lambda: my_core.delete_namespaced_config_map(
            "kube-root-ca.crt", "default"
        ),
        "delete a Pod": lambda: my_core.delete_namespaced_pod("any", namespace),
        "read a Pod's logs": lambda: my_core.read_namespaced_pod_log("any", namespace),
        "bind itself to cluster-admin": lambda: my_rbac.create_namespaced_role_binding(
            namespace, escalation
        ),
        "create a RollbackRequest": lambda: my_custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, request_body("sneaky")
        ),
        "replace a RollbackRequest": lambda: my_custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "any", request_body("any")
        ),
        "delete a RollbackRequest": lambda: my_custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "any"
        ),
        "delete the CRD": lambda: client.ApiextensionsV1Api(me).delete_custom_resource_definition(
            CRD
        ),
    }
    allowed = []
    for what, call in outside.items():
        try:
            call()
        except ApiException as error:
            if error.status != 403:
                allowed.append(f"{what}: {error.status} {error.reason}")
        else:
            allowed.append(f"{what}: allowed")
    assert not allowed, "calls outside the grants were not refused (403):\n" + "\n".join(allowed)
    assert apps.read_namespaced_deployment("web", namespace).metadata.name == "web"


# --- (d) the roles cannot grow silently --------------------------------------------------------


@pytest.mark.parametrize("variant", [MANIFESTS, NAMESPACED], ids=["all-namespaces", "namespaced"])
def test_roles_grant_only_the_allow_list(variant: Path) -> None:
    rendered = _render(variant)
    roles = {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in ROLE_KINDS}
    expected = {(kind, name) for (where, kind, name) in ALLOWED if where == variant}
    assert set(roles) == expected, "a role without an allow-list entry in this test"

    for (kind, name), role in roles.items():
        assert "aggregationRule" not in role, f"{kind} {name} aggregates other roles"
        granted: set[Grant] = set()
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, rule
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in value for value in rule.get(field, [])), f"wildcard: {rule}"
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], f"Secrets beyond get: {rule}"
            granted |= _rule_grants(rule)
        beyond = granted - ALLOWED[(variant, kind, name)]
        assert not beyond, f"{kind} {name} grants beyond the allow-list: {sorted(beyond)}"
        missing = ALLOWED[(variant, kind, name)] - granted
        assert not missing, f"{kind} {name} lost grants the allow-list expects: {sorted(missing)}"

    # The bindings give those roles to the operator's ServiceAccount, and nothing else to it
    # (a binding to a built-in role such as cluster-admin or edit would bypass the above).
    bindings = [o for o in rendered if o["kind"] in BINDING_KINDS]
    assert bindings
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles, binding
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
        ]
