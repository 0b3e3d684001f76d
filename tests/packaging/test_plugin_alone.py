"""kubectl-rollback installs on its own: the wheel, without the `operator` extra, in a fresh
virtualenv, as `pipx install rollback-operator` would, and none of the operator's own
dependencies comes with it (aiohttp does: the kubernetes client >= 37 requires it itself).
Needs PyPI (or its mirror) for the build backend and the base dependencies."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_ONLY = ("kopf", "httpx", "httpcore", "prometheus-client", "prometheus_client")

pytestmark = pytest.mark.packaging


def run(*argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_plugin_installs_and_runs_without_the_operators_dependencies(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    built = run(*pip, "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist", REPO_ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("rollback_operator-*.whl")

    venv = tmp_path / "alone"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = run(*pip, "--python", python, "install", "--quiet", wheel)
    assert installed.returncode == 0, installed.stderr

    listed = run(*pip, "--python", python, "list", "--format", "freeze")
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert {"kubernetes", "pyyaml"} <= names
    assert not names & set(OPERATOR_ONLY), names & set(OPERATOR_ONLY)

    shown = run(venv / "bin" / "kubectl-rollback", "--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"kubectl-rollback {version('rollback-operator')}\n"
    helped = run(venv / "bin" / "kubectl-rollback", "--help")
    assert helped.returncode == 0, helped.stderr
    for verb in ("list", "status", "restore-traffic", "retry", "completion"):
        assert f"    {verb}" in helped.stdout
    completed = run(venv / "bin" / "kubectl_complete-rollback", "restore")
    assert completed.stdout == "restore-traffic\n:4\n", completed.stderr

    # The operator's entry point is there too, and says what it lacks instead of a traceback.
    operator = run(venv / "bin" / "rollback-operator", "--all-namespaces")
    assert operator.returncode == 1
    assert "pip install 'rollback-operator[operator]'" in operator.stderr
    assert "Traceback" not in operator.stderr
    assert run(venv / "bin" / "rollback-operator", "--version").returncode == 0
