"""GitOps: the rollback holds against a real Flux kustomize-controller, and Argo CD Applications
and KEDA ScaledObjects (their real CRDs) are suspended, saved and put back exactly.

Flux: kustomize-controller (built by cluster/build.sh, pinned in cluster/versions.env) runs as a
local process against the test cluster and reconciles a Kustomization every few seconds from a
GitRepository whose status.artifact the test writes, pointing at a tarball of the sample's
Deployments served on loopback (no source-controller). Both sides are shown: with
`gitops.policy: Ignore` Flux puts the bad image back within its interval; with the default the
revert holds for three intervals after Succeeded, and after the test serves the fixed release and
`kubectl rollback resume-gitops` runs, Flux applies it and nothing flips.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import io
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from standins.local import free_port, stop_process, wait_until
from tests.e2e.lawyershub import (
    conditions,
    create_request,
    events_for,
    get_request,
    ledger,
    sample_objects,
    wait_outcome,
)
from tests.e2e.support import REPO_ROOT

VENV_BIN = REPO_ROOT / ".venv" / "bin"
INTERVAL = 3  # seconds: the Kustomization's reconcile interval
BAD, GOOD = "2026.01.10-golive", "stable-last-known"
FLUX_CRDS = (
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    "source.toolkit.fluxcd.io_gitrepositories.yaml",
    "source.toolkit.fluxcd.io_ocirepositories.yaml",
    "source.toolkit.fluxcd.io_buckets.yaml",
)
OTHER_CRDS = ("application-crd.yaml", "keda.sh_scaledobjects.yaml")


def _versions() -> dict[str, str]:
    lines = (REPO_ROOT / "cluster" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rollback-operator"
    return Path(os.environ.get("ROLLBACK_OPERATOR_CACHE", default))


def _kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def gitops_crds(kubeconfig: str) -> None:
    """The upstream CRDs (cluster/build.sh gitops_crds, a no-op once cached), installed."""
    built = subprocess.run(
        [str(REPO_ROOT / "cluster" / "build.sh"), "gitops_crds"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    v = _versions()
    directory = (
        _cache()
        / "bin"
        / (
            f"gitops-crds-{v['KUSTOMIZE_CONTROLLER_VERSION']}-{v['FLUX_SOURCE_CONTROLLER_VERSION']}"
            f"-{v['ARGO_CD_VERSION']}-{v['KEDA_VERSION']}"
        )
    )
    for name in FLUX_CRDS + OTHER_CRDS:
        applied = _kubectl(kubeconfig, "apply", "--server-side", "-f", str(directory / name))
        assert applied.returncode == 0, applied.stderr
    names = [
        "crd/kustomizations.kustomize.toolkit.fluxcd.io",
        "crd/gitrepositories.source.toolkit.fluxcd.io",
        "crd/ocirepositories.source.toolkit.fluxcd.io",
        "crd/buckets.source.toolkit.fluxcd.io",
        "crd/applications.argoproj.io",
        "crd/scaledobjects.keda.sh",
    ]
    established = _kubectl(
        kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names
    )
    assert established.returncode == 0, established.stderr


@pytest.fixture(scope="module")
def kustomize_controller_binary() -> Path:
    """Flux's kustomize-controller, built once per version (several minutes cold)."""
    built = subprocess.run(
        [str(REPO_ROOT / "cluster" / "build.sh"), "kustomize_controller"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    version = _versions()["KUSTOMIZE_CONTROLLER_VERSION"]
    return _cache() / "bin" / f"kustomize-controller-{version}" / "kustomize-controller"


# --- the artifact server and the GitRepository the test writes


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@dataclass
class Source:
    """A GitRepository whose artifact is a tarball of the sample's Deployments at a tag."""

    api: client.ApiClient
    namespace: str
    directory: Path
    port: int
    serial: int = 0

    def publish(self, tag: str) -> str:
        """Serves the Deployments at `tag` as a new revision and points the GitRepository's
        status.artifact at it (as source-controller would); returns the revision."""
        self.serial += 1
        manifests = []
        for original in sample_objects():
            if (
                original["kind"] != "Deployment"
                or original["metadata"]["name"] == "maintenance-page"
            ):
                continue
            obj = copy.deepcopy(original)
            obj["metadata"]["namespace"] = self.namespace
            for kind in ("containers", "initContainers"):
                for c in obj["spec"]["template"]["spec"].get(kind) or []:
                    c["image"] = c["image"].rsplit(":", 1)[0] + ":" + tag
            manifests.append(yaml.safe_dump(obj))
        data = "---\n".join(manifests).encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("app.yaml")
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        blob = buffer.getvalue()
        name = f"app-{self.serial}.tar.gz"
        (self.directory / name).write_bytes(blob)
        revision = f"main@sha1:{hashlib.sha1(blob).hexdigest()}"
        artifact = {
            "path": f"gitrepository/{self.namespace}/app/{name}",
            "url": f"http://127.0.0.1:{self.port}/{name}",
            "revision": revision,
            "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
            "lastUpdateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size": len(blob),
        }
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
            "source.toolkit.fluxcd.io",
            "v1",
            self.namespace,
            "gitrepositories",
            "app",
            {"status": {"artifact": artifact}},
        )
        return revision


@pytest.fixture
def flux(
    api: client.ApiClient,
    app: str,
    kubeconfig: str,
    gitops_crds: None,
    kustomize_controller_binary: Path,
    tmp_path: Path,
) -> Iterator[Source]:
    """The sample's Deployments reconciled by a real kustomize-controller from the bad release,
    every INTERVAL seconds; yields the source, to publish the fixed release later."""
    namespace = app
    served = tmp_path / "artifacts"
    served.mkdir()
    handler = lambda *a: _Quiet(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        "source.toolkit.fluxcd.io",
        "v1",
        namespace,
        "gitrepositories",
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "app"},
            "spec": {"url": "https://git.lawyershub.example/app.git", "interval": "1h"},
        },
    )
    source = Source(api, namespace, served, server.server_address[1])
    revision = source.publish(BAD)
    custom.create_namespaced_custom_object(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        namespace,
        "kustomizations",
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "app"},
            "spec": {
                "interval": f"{INTERVAL}s",
                "path": "./",
                "prune": False,
                "sourceRef": {"kind": "GitRepository", "name": "app"},
            },
        },
    )
    log = (tmp_path / "kustomize-controller.log").open("wb")
    process = subprocess.Popen(
        [
            str(kustomize_controller_binary),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{free_port()}",
            "--enable-leader-election=false",
            "--watch-all-namespaces=false",
            "--no-remote-bases=true",
            "--concurrent=1",
            "--requeue-dependency=2s",
        ],
        env={**os.environ, "KUBECONFIG": kubeconfig, "RUNTIME_NAMESPACE": namespace},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: (
                _kustomization(api, namespace).get("status", {}).get("lastAppliedRevision")
                == revision
            ),
            timeout=90,
            what="the Kustomization applied the bad release",
        )
        yield source
    finally:
        stop_process(process)
        server.shutdown()
        log.close()
        print((tmp_path / "kustomize-controller.log").read_text()[-6000:])


def _kustomization(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kustomize.toolkit.fluxcd.io", "v1", namespace, "kustomizations", "app"
    )
    return obj


def _frontend_tag(api: client.ApiClient, namespace: str) -> str:
    d = client.AppsV1Api(api).read_namespaced_deployment("frontend", namespace)
    image: str = d.spec.template.spec.containers[0].image
    return image.rsplit(":", 1)[1]


def _holds(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Asserts `check` stays true for `seconds` (polled): a property over time, not a wait."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what} stopped holding"
        time.sleep(0.2)


def _plugin(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "kubectl-rollback"), *args, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flux_puts_the_bad_image_back_when_told_to_ignore_it(
    api: client.ApiClient, flux: Source, operator: Any, kubeconfig: str
) -> None:
    """The other side: with gitops Ignore, Flux undoes the revert within its interval."""
    namespace = flux.namespace
    create_request(api, namespace, "ignored", gitops={"policy": "Ignore"})
    wait_until(
        lambda: _frontend_tag(api, namespace) == GOOD,
        timeout=60,
        what="the rollback to set frontend to stable-last-known",
    )
    reverted_at = time.monotonic()
    wait_until(
        lambda: _frontend_tag(api, namespace) == BAD,
        timeout=INTERVAL * 4 + 10,
        what="Flux to put the bad image back",
    )
    assert time.monotonic() - reverted_at < INTERVAL * 4 + 10
    obj = wait_until(
        lambda: (
            get_request(api, namespace, "ignored").get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and get_request(api, namespace, "ignored")
        ),
        timeout=180,
        what="the ignored run to end",
    )
    steps = ledger(obj)
    assert f"Kustomization {namespace}/app" in steps["Preflight"]["message"]
    assert "policy Ignore" in steps["Preflight"]["message"]
    assert not (obj["status"].get("saved") or {}).get("gitops")
    assert _kustomization(api, namespace)["spec"].get("suspend") is not True
    warnings = [
        e for e in events_for(api, namespace, "ignored") if e.reason == "GitOpsNotSuspended"
    ]
    assert warnings and warnings[0].type == "Warning"
    assert "may put back" in warnings[0].message


def test_the_rollback_holds_under_flux_until_the_fix_is_in_git_and_resumed(
    api: client.ApiClient, flux: Source, operator: Any, kubeconfig: str
) -> None:
    namespace = flux.namespace
    bad_revision = _kustomization(api, namespace)["status"]["lastAppliedRevision"]
    create_request(api, namespace, "held")
    obj = wait_outcome(api, namespace, "held", "Succeeded", timeout=180)
    steps, status = ledger(obj), obj["status"]
    assert f"Kustomization {namespace}/app" in steps["Preflight"]["message"]
    assert status["gitops"]["managers"] == [
        {
            "kind": "Kustomization",
            "namespace": namespace,
            "name": "app",
            "manages": ["Deployment/backend", "Deployment/frontend"],
        }
    ]
    assert steps["SuspendGitOps"]["state"] == "Succeeded"
    saved = status["saved"]["gitops"][f"Kustomization/{namespace}/app"]
    assert saved["suspend"] is False and saved["revision"] == bad_revision
    assert _kustomization(api, namespace)["spec"]["suspend"] is True
    assert conditions(obj)["GitOpsSuspended"] == "True"
    assert "Revert the go-live commit in Git" in status["message"]
    assert "resume-gitops" in status["message"]
    report = client.CoreV1Api(api).read_namespaced_config_map("held-postmortem", namespace)
    assert f"- Kustomization {namespace}/app (manages" in report.data["postmortem.md"]
    assert f"kubectl rollback resume-gitops held -n {namespace}" in report.data["postmortem.md"]
    # Three intervals after Succeeded, the revert still holds.
    _holds(lambda: _frontend_tag(api, namespace) == GOOD, INTERVAL * 3 + 1, "the revert")

    # The source still serves the bad release: resuming is refused, nothing changes.
    refused = _plugin(kubeconfig, "resume-gitops", "held", "-n", namespace)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"still serves revision {bad_revision}" in refused.stderr
    assert _kustomization(api, namespace)["spec"]["suspend"] is True

    # The revert is committed: the source serves the app at stable-last-known.
    fixed = flux.publish(GOOD)
    resumed = _plugin(kubeconfig, "resume-gitops", "held", "-n", namespace)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Kustomization {namespace}/app (spec.suspend back to false)" in resumed.stdout
    assert _kustomization(api, namespace)["spec"]["suspend"] is False
    wait_until(
        lambda: _kustomization(api, namespace)["status"].get("lastAppliedRevision") == fixed,
        timeout=INTERVAL * 5 + 30,
        what="Flux to apply the fixed release",
    )
    _holds(lambda: _frontend_tag(api, namespace) == GOOD, INTERVAL * 3 + 1, "the fixed release")
    meta = get_request(api, namespace, "held")["metadata"]
    assert "by " in meta["annotations"]["rollback.lawyershub.io/gitops-resumed"]


# --- Argo CD and KEDA: their real CRDs, no controller (what is proven is what the operator
# reads, saves, changes and puts back)

SYNC_POLICY = {
    "automated": {"prune": True, "selfHeal": True},
    "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
    "retry": {"limit": 5, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "3m"}},
}


def _custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _application(name: str, namespace: str, sync_policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.lawyershub.example/deploy.git",
                "path": f"apps/{name}",
                "targetRevision": "main",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": copy.deepcopy(sync_policy),
        },
    }


def _get(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    group = {"applications": "argoproj.io", "scaledobjects": "keda.sh"}[plural]
    obj: dict[str, Any] = _custom(api).get_namespaced_custom_object(
        group, "v1alpha1", namespace, plural, name
    )
    return obj


def test_argo_cd_and_keda_are_found_suspended_and_put_back_exactly(
    api: client.ApiClient, app: str, gitops_crds: None, operator: Any, kubeconfig: str
) -> None:
    namespace = app
    custom, apps = _custom(api), client.AppsV1Api(api)
    # Argo CD 3 tracks the frontend by annotation; an older setup the backend by label.
    for name in ("guestbook", "legacy"):
        custom.create_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            namespace,
            "applications",
            _application(name, namespace, SYNC_POLICY),
        )
    # What each Application says it manages (Argo CD writes it; no Argo CD runs here).
    _manages(api, namespace, "guestbook", ("apps", "Deployment", "frontend"))
    _manages(api, namespace, "legacy", ("apps", "Deployment", "backend"))
    tracking = f"guestbook:apps/Deployment:{namespace}/frontend"
    apps.patch_namespaced_deployment(
        "frontend",
        namespace,
        {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": tracking}}},
    )
    apps.patch_namespaced_deployment(
        "backend", namespace, {"metadata": {"labels": {"app.kubernetes.io/instance": "legacy"}}}
    )
    # The same label on the Ingress names no Application: Helm sets it too, it does not count.
    # Its tracking id names guestbook, which does not list it: not touched either.
    ingress_marks = {
        "labels": {"app.kubernetes.io/instance": "web"},
        "annotations": {
            "argocd.argoproj.io/tracking-id": f"guestbook:networking.k8s.io/Ingress:{namespace}/x"
        },
    }
    client.NetworkingV1Api(api).patch_namespaced_ingress(
        "lawyershub", namespace, {"metadata": ingress_marks}
    )
    # KEDA owns the backend's HPA through its ScaledObject.
    scaled = custom.create_namespaced_custom_object(
        "keda.sh",
        "v1alpha1",
        namespace,
        "scaledobjects",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "backend"},
            "spec": {
                "scaleTargetRef": {"name": "backend"},
                "triggers": [{"type": "cpu", "metadata": {"value": "70"}}],
            },
        },
    )
    owner = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "name": "backend",
        "uid": scaled["metadata"]["uid"],
        "controller": True,
    }
    client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
        "backend", namespace, {"metadata": {"ownerReferences": [owner]}}
    )

    create_request(api, namespace, "argo", gitops={"argoCDNamespace": namespace})
    obj = wait_outcome(api, namespace, "argo", "Succeeded", timeout=120)
    status = obj["status"]
    preflight = ledger(obj)["Preflight"]["message"]
    assert f"Application {namespace}/guestbook (manages Deployment/frontend)" in preflight
    assert f"Application {namespace}/legacy (manages Deployment/backend)" in preflight
    assert (
        f"ScaledObject {namespace}/backend (manages HorizontalPodAutoscaler/backend)" in preflight
    )
    managed = preflight.split("managed by GitOps")[1].split("left alone")[0]
    assert "web" not in managed and "Ingress" not in managed
    assert f"left alone: Ingress/lawyershub (marked for Application {namespace}/guestbook)" in (
        preflight
    )
    saved = status["saved"]["gitops"]
    assert saved[f"Application/{namespace}/guestbook"]["syncPolicy"] == SYNC_POLICY
    assert "paused" not in saved[f"ScaledObject/{namespace}/backend"]
    suspended = {k: v for k, v in SYNC_POLICY.items() if k != "automated"}
    for name in ("guestbook", "legacy"):
        assert _get(api, namespace, "applications", name)["spec"]["syncPolicy"] == suspended
    paused = _get(api, namespace, "scaledobjects", "backend")["metadata"]["annotations"]
    assert paused["autoscaling.keda.sh/paused"] == "true"
    assert conditions(obj)["GitOpsSuspended"] == "True"

    # Someone turns legacy's automated sync back on, their own way: a newer change, left alone.
    theirs = {"automated": {"prune": False, "selfHeal": False}}
    custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        namespace,
        "applications",
        "legacy",
        {"spec": {"syncPolicy": theirs}},
    )
    # Argo CD still renders the bad frontend image: resuming is refused.
    bad = f"registry.lawyershub.example:5000/lawyershub/frontend:{BAD}"
    _argo_renders(api, namespace, "guestbook", bad)
    refused = _plugin(kubeconfig, "resume-gitops", "argo", "-n", namespace)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Application {namespace}/guestbook: it still renders {bad}" in refused.stderr
    assert _get(api, namespace, "applications", "guestbook")["spec"]["syncPolicy"] == suspended

    # The revert is in Git: Argo CD renders stable-last-known; resume puts back what was saved.
    good = f"registry.lawyershub.example:5000/lawyershub/frontend:{GOOD}"
    _argo_renders(api, namespace, "guestbook", good)
    resumed = _plugin(kubeconfig, "resume-gitops", "argo", "-n", namespace)
    assert resumed.returncode == 0, resumed.stderr
    assert _get(api, namespace, "applications", "guestbook")["spec"]["syncPolicy"] == SYNC_POLICY
    legacy = _get(api, namespace, "applications", "legacy")["spec"]["syncPolicy"]
    assert legacy["automated"] == theirs["automated"]
    assert (
        f"Application {namespace}/legacy: automated sync was turned on again since"
        in resumed.stdout
    )
    annotations = (
        _get(api, namespace, "scaledobjects", "backend")["metadata"].get("annotations") or {}
    )
    assert "autoscaling.keda.sh/paused" not in annotations
    assert any(e.reason == "GitOpsResumed" for e in events_for(api, namespace, "argo"))


def _manages(
    api: client.ApiClient, namespace: str, app: str, *resources: tuple[str, str, str]
) -> None:
    """Writes an Application's status.resources, as Argo CD would after a sync."""
    listed = [
        {"group": g, "version": "v1", "kind": k, "namespace": namespace, "name": n}
        for g, k, n in resources
    ]
    _custom(api).patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "applications", app, {"status": {"resources": listed}}
    )


def test_refuse_fails_preflight_with_the_commands_and_changes_nothing(
    api: client.ApiClient, app: str, gitops_crds: None, operator: Any
) -> None:
    namespace = app
    _custom(api).create_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        namespace,
        "applications",
        _application("guestbook", namespace, SYNC_POLICY),
    )
    _manages(api, namespace, "guestbook", ("apps", "Deployment", "frontend"))
    tracking = f"guestbook:apps/Deployment:{namespace}/frontend"
    client.AppsV1Api(api).patch_namespaced_deployment(
        "frontend",
        namespace,
        {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": tracking}}},
    )
    create_request(
        api, namespace, "refused", gitops={"policy": "Refuse", "argoCDNamespace": namespace}
    )
    obj = wait_outcome(api, namespace, "refused", "Failed", timeout=90)
    message = ledger(obj)["Preflight"]["message"]
    assert "spec.gitops.policy is Refuse" in message
    assert f"kubectl patch applications.argoproj.io guestbook -n {namespace} --type json" in message
    assert _get(api, namespace, "applications", "guestbook")["spec"]["syncPolicy"] == SYNC_POLICY
    assert _frontend_tag(api, namespace) == BAD


def _argo_renders(api: client.ApiClient, namespace: str, app: str, image: str) -> None:
    """Writes what an Argo CD controller would report: the Application renders `image`."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        namespace,
        "applications",
        app,
        {"status": {"summary": {"images": [image]}}},
    )
