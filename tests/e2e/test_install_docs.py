"""docs/install.md, read as a newcomer would: whatever it names must exist, as it says.

Every path, `make` target, kustomize directory, chart and chart value the page mentions is
looked up in the repository; its values table names exactly the chart's top-level values; the
versions it states are those of cluster/versions.env and of the chart; its table of what
`kubectl apply -k manifests/` creates is what kustomize renders; the kustomize directories it
applies render, its overlay really swaps the image, and its Helm commands render with its
values file. Nothing here installs anything: test_install.py and test_helm.py do.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.support import REPO_ROOT
from tests.e2e.test_helm import _cache, _versions
from tests.e2e.test_install import _render

pytestmark = pytest.mark.e2e

DOC = REPO_ROOT / "docs" / "install.md"
CHART = REPO_ROOT / "charts" / "rollback-operator"
TOP_DIRS = "charts|manifests|crds|scripts|examples|cluster|tests|operator|docs|standins|bench"
TOP_FILES = r"Dockerfile|Makefile|pyproject\.toml|requirements\.lock|BENCHMARKS\.md"
PATH = re.compile(rf"(?<![\w./~-])((?:{TOP_DIRS})/[\w./-]*|(?:{TOP_FILES})(?![\w.]))")
# The page's own overlay and values file: not in the repository, checked below instead.
USERS_FILES = ("my-install", "my-values.yaml")


def _text() -> str:
    return DOC.read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", _text(), flags=re.S | re.M)


def _commands() -> list[str]:
    """The shell commands of the page: its sh blocks, continuation lines joined, comments off."""
    commands = []
    for block in _blocks("sh"):
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _mentions() -> list[str]:
    """Commands in sh blocks and in inline code: what a reader may copy."""
    return _commands() + re.findall(r"`([^`\n]+)`", _text())


def _values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(values, dict)
    return values


def _has_value(dotted: str) -> bool:
    node: Any = _values()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"\n{title}\n")
    following = re.search(r"^#{1,3} ", text[start + len(title) + 2 :], flags=re.M)
    return text[start : start + len(title) + 2 + (following.start() if following else len(text))]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2 and re.fullmatch(r"[-| :]+", rows[1]), "no table here"
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors() -> set[str]:
    text = _text()
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {_slug(h) for h in headings} | set(re.findall(r'<a id="([^"]+)"></a>', text))


# --- what the page names exists ------------------------------------------------------------------


def test_every_path_the_page_names_exists() -> None:
    paths = {match.rstrip(".") for match in PATH.findall(_text())}
    assert len(paths) >= 25, sorted(paths)  # the pattern still finds the page's paths
    missing = sorted(path for path in paths if not (REPO_ROOT / path).exists())
    assert not missing, f"docs/install.md names paths the repository lacks: {missing}"


def test_every_relative_link_resolves() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", _text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        if target:
            assert (DOC.parent / target).exists(), f"link to {target}: no such file"
        elif anchor:
            assert anchor in _anchors(), f"link to #{anchor}: no such section in install.md"


def test_the_anchors_other_pages_link_to_are_kept() -> None:
    pages = [
        REPO_ROOT / "README.md",
        *REPO_ROOT.glob("docs/*.md"),
        *REPO_ROOT.glob("manifests/**/*.md"),
    ]
    linked = {
        anchor for page in pages for anchor in re.findall(r"install\.md#([\w-]+)", page.read_text())
    }
    assert {"helm", "approvals-and-the-people-of-the-runbook"} <= linked
    assert linked <= _anchors(), f"links into install.md that lead nowhere: {linked - _anchors()}"


def test_every_make_target_exists() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    named = {t for m in _mentions() for t in re.findall(r"(?:^|[\s(])make ([a-z][\w-]*)", m)}
    assert {"image", "image-test", "lint"} <= named
    assert named <= targets, f"make targets the Makefile lacks: {named - targets}"


def test_every_kustomize_directory_applied_is_one() -> None:
    directories = {
        path
        for command in _mentions()
        for path in re.findall(r"kubectl (?:apply|delete|get) -k (\S+)", command)
    }
    assert {"manifests/", "manifests/namespaced/", "manifests/monitoring/"} <= directories
    for directory in directories - {"my-install/"}:
        assert (REPO_ROOT / directory / "kustomization.yaml").is_file(), directory


def test_helm_commands_name_the_chart_and_its_values() -> None:
    commands = [c for c in _commands() if c.startswith("helm ")]
    installs = [c for c in commands if c.split()[1] in ("install", "upgrade")]
    assert len(installs) >= 3
    for command in installs:
        words = shlex.split(command)
        assert words[3] == "charts/rollback-operator", command
        assert (REPO_ROOT / words[3] / "Chart.yaml").is_file()
    settings = {s for m in _mentions() for s in re.findall(r"--set ([\w.]+)=", m)}
    assert "image.repository" in settings
    unknown = sorted(name for name in settings if not _has_value(name))
    assert not unknown, f"--set of values the chart does not have: {unknown}"


def test_the_values_table_names_exactly_the_charts_values() -> None:
    named: list[str] = []
    for row in _table_rows(_section("### Values")):
        last = ""
        for given in re.findall(r"`([^`]+)`", row[0]):
            name = f"{last.rsplit('.', 1)[0]}{given}" if given.startswith(".") else given
            named.append(name)
            last = name
    unknown = sorted(name for name in named if not _has_value(name))
    assert not unknown, f"the values table names values the chart lacks: {unknown}"
    assert {name.split(".")[0] for name in named} == set(_values())


def test_the_values_file_uses_only_the_charts_values() -> None:
    (block,) = [b for b in _blocks("yaml") if b.startswith("# my-values.yaml")]

    def check(given: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
        for key, value in given.items():
            assert key in defaults, f"my-values.yaml: {where}{key} is not a value of the chart"
            if isinstance(value, dict) and defaults[key]:  # an empty default is a free map
                check(value, defaults[key], f"{where}{key}.")

    check(yaml.safe_load(block), _values(), "")


def test_the_versions_stated_are_the_tested_ones() -> None:
    text = _text()
    versions = _versions()
    assert f"Kubernetes {versions['KUBERNETES_VERSION']}" in text
    assert f"Helm {versions['HELM_VERSION']}" in text
    minimum = re.search(r"\*\*Kubernetes (1\.\d+) or later\.\*\*", text)
    assert minimum, "the requirements state no minimum Kubernetes version"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={minimum.group(1)}.0-0"
    # The reason given: the requested-by MutatingAdmissionPolicy's API, GA (v1) from 1.36.
    policy = yaml.safe_load_all((REPO_ROOT / "manifests/common/approvals.yaml").read_text())
    first = next(policy)
    assert (first["apiVersion"], first["kind"]) == (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicy",
    )
    assert minimum.group(1) == "1.36"


def test_the_image_named_is_the_one_the_installs_run() -> None:
    version = re.search(r'^version = "(.+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    image = f"rollback-operator:{version.group(1)}"
    assert f"run the image `{image}`" in _text()
    deployment = (REPO_ROOT / "manifests/common/deployment.yaml").read_text()
    assert f"image: {image}\n" in deployment
    assert _values()["image"]["repository"] == "rollback-operator"
    assert f"localhost/{image}" in _text()  # what `make image` tags (scripts/containers-env.sh)
    assert (
        'IMAGE="localhost/$IMAGE_NAME:$IMAGE_VERSION"'
        in (REPO_ROOT / "scripts/containers-env.sh").read_text()
    )


# --- what the page shows renders ---------------------------------------------------------------


def test_the_objects_table_is_what_kustomize_renders() -> None:
    section = _section("## Install with kustomize")
    table = set()
    for kinds, cell, _ in _table_rows(section.split("Every object carries")[0]):
        named = re.match(r"`([^`]+)`", cell)
        assert named, cell
        namespace, _, name = named.group(1).rpartition("/")
        table |= {(kind, namespace, name) for kind in kinds.split(", ")}
    rendered = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in _render(REPO_ROOT / "manifests")
    }
    assert table == rendered, (
        f"only in the page: {table - rendered}; only applied: {rendered - table}"
    )


def test_every_kustomize_directory_renders() -> None:
    for directory in ("manifests", "manifests/namespaced", "manifests/monitoring"):
        assert _render(REPO_ROOT / directory), directory


def test_the_image_overlay_swaps_the_image(tmp_path: Path) -> None:
    (block,) = [b for b in _blocks("yaml") if "images:" in b]
    overlay = yaml.safe_load(block)
    assert overlay["resources"] == ["../manifests"]
    overlay["resources"] = [os.path.relpath(REPO_ROOT / "manifests", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    (deployment,) = [o for o in _render(tmp_path) if o["kind"] == "Deployment"]
    (wanted,) = overlay["images"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{wanted['newName']}:{wanted['newTag']}"


def test_the_helm_commands_render_with_the_pages_values(tmp_path: Path) -> None:
    helm = _cache() / "bin" / f"helm-{_versions()['HELM_VERSION']}" / "helm"
    if not os.access(helm, os.X_OK):
        pytest.fail(f"no Helm at {helm}: run `cluster/build.sh helm` (cluster/up.sh builds it)")
    (block,) = [b for b in _blocks("yaml") if b.startswith("# my-values.yaml")]
    (tmp_path / "my-values.yaml").write_text(block)
    env = {
        **os.environ,
        **{f"HELM_{d}_HOME": str(tmp_path / d) for d in ("CONFIG", "CACHE", "DATA")},
    }
    installs = [c for c in _commands() if re.match(r"helm (install|upgrade) ", c)]
    for command in installs:
        words = shlex.split(command)
        words[:2] = [str(helm), "template"]
        words = [str(tmp_path / w) if w == "my-values.yaml" else w for w in words]
        done = subprocess.run(
            words, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{command}:\n{done.stderr}"
        assert "kind: Deployment" in done.stdout
