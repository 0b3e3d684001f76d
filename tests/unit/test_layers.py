"""The layers of the operator's code (docs/architecture.md), held by its import graph: the
engine and what it decides on import nothing that does I/O, and no module imports one of a
higher layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "rollback_operator"
# A module longer than this holds more than one idea: split it along its seam.
MAX_LINES = 450
IO = {"rollback_operator.kube", "httpx", "kubernetes", "kopf", "prometheus_client"}

# Lowest first; a module may import modules of its own layer or of lower ones only.
LAYERS: list[set[str]] = [
    # The packages' own modules (docstrings) first: importing a package's module imports it.
    {"rollback_operator", "steps", "database"},
    {"clock", "model", "images", "outcomes", "status", "suspension", "engine", "admin_policy"},
    {"metrics", "kube", "ledger", "redaction"},
    {
        "traffic",
        "routes",
        "route_checks",
        "gitops",
        "autoscaling",
        "rollout",
        "watches",
        "takeover",
        "cdn",
        "cdn_http",
        "monitoring",
        "monitoring_watch",
        "prometheus",
        "verification",
        "notify",
        "webhook_post",
        "throttling",
        "deadlines",
        "egress",
        "postmortem",
        "runonce",
        "history",
        "database.spec",
        "database.scripts",
        "database.inspection",
        "database.sql_guard",
        "database.sql_guard_job",
        "admin_policy_reader",
    },
    {
        "steps.base",
        "steps.jobs",
        "steps.limits",
        "steps.gates",
        "database.jobs",
        "database.preflight",
    },
    {"steps.*"},
    {"registry"},
    {"announce", "queue", "locks", "runner", "leadership"},
    {"handlers", "__main__"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "rollback_operator"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


PATHS = {_module(p): p for p in PACKAGE.rglob("*.py") if p.name != "plugin.py"}
MODULES = {module: _imports(path) for module, path in PATHS.items()}


def _local(name: str) -> str | None:
    """The package module an import names, relative to the package, if it is one."""
    if name == "rollback_operator":
        return "rollback_operator"
    if not name.startswith("rollback_operator."):
        return None
    name = name.removeprefix("rollback_operator.")
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or "rollback_operator"


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if module in layer:
            return index
    if module.startswith("steps."):  # a runbook step
        return next(i for i, layer in enumerate(LAYERS) if "steps.*" in layer)
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def _reaches(module: str, seen: set[str] | None = None) -> set[str]:
    """Everything `module` imports, directly or through other modules of the package."""
    seen = set() if seen is None else seen
    for name in MODULES.get(module, set()):
        local = _local(name)
        if local is None:
            seen.add(name.partition(".")[0] if not name.startswith("rollback_operator") else name)
        elif local not in seen:
            seen.add(local)
            seen.add(f"rollback_operator.{local}")
            _reaches(local, seen)
    return seen


@pytest.mark.parametrize("module", ["engine", "status", "model", "outcomes", "admin_policy"])
def test_the_engine_and_its_data_import_nothing_that_does_io(module: str) -> None:
    assert not (_reaches(module) & IO), sorted(_reaches(module) & IO)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    mine = _layer(module)
    higher = {
        local
        for name in MODULES[module]
        if (local := _local(name)) is not None and local != module and _layer(local) > mine
    }
    assert not higher, f"{module} (layer {mine}) imports {sorted(higher)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_450_lines(module: str) -> None:
    lines = len(PATHS[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it along a seam"
