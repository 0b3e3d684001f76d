"""The Helm chart's metadata and its links to the repository's single sources (the CRD, the
alert rules). What the chart renders is compared with manifests/ in tests/e2e/test_helm.py,
which runs the real Helm."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "rollback-operator"


def test_chart_version_is_the_package_version() -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version)


def test_chart_reads_the_crd_and_the_alerts_from_their_one_source() -> None:
    """Links, not copies: Helm follows them when it loads or packages the chart."""
    links = {
        CHART / "crds" / "rollbackrequests.yaml": REPO_ROOT / "crds" / "rollbackrequests.yaml",
        CHART / "crds" / "rollbackpolicies.yaml": REPO_ROOT / "crds" / "rollbackpolicies.yaml",
        CHART / "files" / "alerts.yaml": REPO_ROOT / "manifests" / "monitoring" / "alerts.yaml",
    }
    for link, source in links.items():
        assert link.is_symlink(), f"{link} must link to {source}"
        assert link.resolve() == source.resolve()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        p.name for p in (REPO_ROOT / "crds").glob("*.yaml")
    )


def test_the_manifests_carry_the_package_version() -> None:
    """One version, pyproject.toml's: the kustomize base's image tag and version labels name it
    too (kustomize cannot read it, so this holds them to it)."""
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    manifests = REPO_ROOT / "manifests"
    deployment = yaml.safe_load((manifests / "common" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"rollback-operator:{version}"
    for kustomization in manifests.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text()).get("labels") or []:
            pairs = entry.get("pairs") or {}
            if "app.kubernetes.io/version" in pairs:
                assert pairs["app.kubernetes.io/version"] == version, kustomization
