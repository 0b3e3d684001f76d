"""The e2e tests that change what every other test shares carry the `serial` mark, so that the
tier's parallel phase (scripts/test.sh, pytest-xdist) never runs them beside others.

Each e2e module is read as source: a test is taken to touch what is shared when it reaches one
of the TRIGGERS below, in its own body or through the helpers and fixtures it uses (followed
across the e2e modules' imports); such a test must be marked `serial`, itself or by its
module's `pytestmark`. Every trigger must still be found somewhere in the suite, so that a
renamed helper fails here instead of silently leaving a test unwatched.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"
PACKAGE = "tests.e2e"


def _constants(call: ast.Call) -> list[object]:
    return [a.value for a in call.args if isinstance(a, ast.Constant)]


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _reads_pid_files(node: ast.AST) -> bool:
    """The local control plane's process ids (.cluster/pids/): to signal a component."""
    return isinstance(node, ast.Constant) and node.value == "pids"


def _runs_a_control_plane(node: ast.AST) -> bool:
    """`make cluster` / `make cluster-down`: a whole control plane of its own, started and
    stopped (minutes of CPU on a small machine)."""
    return isinstance(node, ast.Call) and _constants(node)[:1] in (["cluster"], ["cluster-down"])


def _helm_release(node: ast.AST) -> bool:
    """helm install/upgrade/uninstall: cluster-scoped objects by fixed name."""
    return (
        isinstance(node, ast.Call)
        and _callee(node) == "helm"
        and _constants(node)[:1] in (["install"], ["upgrade"], ["uninstall"])
    )


def _applies_or_deletes_manifests(node: ast.AST) -> bool:
    """`kubectl apply -k manifests/`, or a delete of what manifests/ renders: the shipped
    policies, roles and namespace, by fixed name."""
    if not isinstance(node, ast.Call) or _callee(node) != "_kubectl":
        return False
    words = _constants(node)
    return ("apply" in words and "-k" in words) or ("delete" in words and "-f" in words)


def _clears_cluster_scoped(node: ast.AST) -> bool:
    """Deletes the shipped cluster-scoped objects other tests apply."""
    return isinstance(node, ast.Name) and node.id == "CLUSTER_SCOPED"


def _writes_cluster_wide_policy(node: ast.AST) -> bool:
    """The RollbackPolicy of the operator's namespace, which holds in every namespace."""
    return (
        isinstance(node, ast.Call)
        and _callee(node) in ("admin_settings", "remove_admin_settings")
        and any(isinstance(a, ast.Name) and a.id == "OPERATOR_NAMESPACE" for a in node.args)
    )


def _builds_the_image(node: ast.AST) -> bool:
    """scripts/image.sh: one build at a time in the project's container storage."""
    return isinstance(node, ast.Constant) and node.value == "image.sh"


TRIGGERS: dict[str, Callable[[ast.AST], bool]] = {
    "signals the control plane's processes": _reads_pid_files,
    "starts and stops a control plane": _runs_a_control_plane,
    "installs a Helm release": _helm_release,
    "applies or deletes manifests/": _applies_or_deletes_manifests,
    "deletes the shipped cluster-scoped objects": _clears_cluster_scoped,
    "writes the cluster-wide RollbackPolicy": _writes_cluster_wide_policy,
    "builds the image": _builds_the_image,
}


def _is_serial_mark(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "serial"


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def _fixture_name(function: ast.FunctionDef) -> str | None:
    for decorator in function.decorator_list:
        if not _is_fixture(decorator):
            continue
        if isinstance(decorator, ast.Call):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
        return function.name
    return None


def _used_fixtures(function: ast.FunctionDef) -> Iterator[str]:
    yield from (a.arg for a in function.args.args)
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and _callee(decorator) == "usefixtures":
            yield from (str(c) for c in _constants(decorator))


@dataclass
class Module:
    name: str
    tree: ast.Module
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    fixtures: dict[str, ast.FunctionDef] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # name: (module, name)
    serial: bool = False

    @classmethod
    def read(cls, path: Path) -> Module:
        module = cls(path.stem, ast.parse(path.read_text()))
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef):
                module.functions[node.name] = node
                if (fixture := _fixture_name(node)) is not None:
                    module.fixtures[fixture] = node
            elif isinstance(node, ast.ClassDef):
                for item in node.body:  # a helper class's methods count as its module's code
                    if isinstance(item, ast.FunctionDef):
                        module.functions[f"{node.name}.{item.name}"] = item
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                source = (node.module or "").removeprefix(f"{PACKAGE}.")
                for alias in node.names:
                    module.imported[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                module.serial = any(_is_serial_mark(n) for n in ast.walk(node.value))
        return module


class Suite:
    def __init__(self) -> None:
        self.modules = {p.stem: Module.read(p) for p in sorted(E2E.glob("*.py"))}
        self.found: set[str] = set()
        self._cache: dict[int, tuple[set[str], list[tuple[Module, ast.FunctionDef, str]]]] = {}

    def _resolve(self, module: Module, name: str) -> tuple[Module, ast.FunctionDef] | None:
        if name in module.functions:
            return module, module.functions[name]
        if name in module.imported:
            source, original = module.imported[name]
            if source in self.modules:
                return self._resolve(self.modules[source], original)
        return None

    def _fixture(self, module: Module, name: str) -> tuple[Module, ast.FunctionDef] | None:
        if name in module.fixtures:
            return module, module.fixtures[name]
        if name in module.imported:  # `from tests.e2e.prometheus import prometheus_server`
            source, original = module.imported[name]
            found = self.modules.get(source)
            if found is not None and original in found.functions:
                return found, found.functions[original]
        conftest = self.modules["conftest"]
        if name in conftest.fixtures:
            return conftest, conftest.fixtures[name]
        return None

    def _direct(
        self, where: Module, function: ast.FunctionDef
    ) -> tuple[set[str], list[tuple[Module, ast.FunctionDef, str]]]:
        """The triggers in the function's own body, and the helpers and fixtures it uses."""
        key = id(function)
        if key not in self._cache:
            triggers: set[str] = set()
            uses: list[tuple[Module, ast.FunctionDef, str]] = []
            for name in _used_fixtures(function):
                if (fixture := self._fixture(where, name)) is not None:
                    uses.append((*fixture, f"fixture {name}"))
            classes = self._classes(where)
            for node in ast.walk(function):
                triggers |= {what for what, trigger in TRIGGERS.items() if trigger(node)}
                if isinstance(node, ast.Name):
                    name = node.id
                elif isinstance(node, ast.Attribute):
                    name = node.attr
                else:
                    continue
                for candidate in (name, *(f"{c}.{name}" for c in classes)):
                    if (resolved := self._resolve(where, candidate)) is not None:
                        uses.append((*resolved, candidate))
            self._cache[key] = (triggers, uses)
        return self._cache[key]

    def reached(self, module: Module, test: ast.FunctionDef) -> dict[str, str]:
        """Each trigger the test reaches, with the path by which it does."""
        triggers: dict[str, str] = {}
        seen: set[int] = set()
        todo = [(module, test, test.name)]
        while todo:
            where, function, path = todo.pop()
            if id(function) in seen:
                continue
            seen.add(id(function))
            direct, uses = self._direct(where, function)
            for what in direct:
                triggers.setdefault(what, path)
                self.found.add(what)
            todo += [(m, f, f"{path} -> {label}") for m, f, label in uses]
        return triggers

    @staticmethod
    def _classes(module: Module) -> set[str]:
        return {key.split(".")[0] for key in module.functions if "." in key}

    def tests(self) -> Iterator[tuple[Module, ast.FunctionDef]]:
        for module in self.modules.values():
            if module.name.startswith("test_"):
                for name, function in module.functions.items():
                    if name.startswith("test_"):
                        yield module, function


def _marked_serial(module: Module, test: ast.FunctionDef) -> bool:
    return module.serial or any(
        _is_serial_mark(n) for d in test.decorator_list for n in ast.walk(d)
    )


def test_every_e2e_test_that_touches_what_others_share_is_marked_serial() -> None:
    suite = Suite()
    unmarked = [
        f"{module.name}::{test.name} {what} ({path}) but is not marked serial"
        for module, test in suite.tests()
        for what, path in suite.reached(module, test).items()
        if not _marked_serial(module, test)
    ]
    assert not unmarked, "\n".join(unmarked)
    # Each trigger still matches something: none has gone stale with a rename.
    assert suite.found == set(TRIGGERS), set(TRIGGERS) - suite.found


def test_the_check_sees_the_known_cases() -> None:
    """The tests known to touch the control plane are found to, by the trigger that says why."""
    suite = Suite()
    reached = {
        f"{module.name}::{test.name}": set(suite.reached(module, test))
        for module, test in suite.tests()
    }
    expected = {
        "test_apiserver_outage::test_the_run_survives_the_api_server_going_away_twice": (
            "signals the control plane's processes"
        ),
        "test_cluster_lifecycle::test_cluster_twice_is_a_no_op_and_down_stops_everything": (
            "starts and stops a control plane"
        ),
        "test_helm::test_install_run_upgrade_run_uninstall": "installs a Helm release",
        "test_install::test_full_run_as_the_service_account": "applies or deletes manifests/",
        "test_approvals::test_the_cluster_wide_policy_holds_in_every_namespace": (
            "writes the cluster-wide RollbackPolicy"
        ),
        "test_image::test_image_runs_a_rollback": "builds the image",
    }
    for test, why in expected.items():
        assert why in reached[test], (test, reached[test])
    # And a test of a namespace of its own reaches none.
    own = "test_rollback::test_full_run_reverts_images_and_restores_traffic_exactly"
    assert reached[own] == set()
