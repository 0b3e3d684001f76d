"""The operator's and the plugin's entry points: one version, log formats, and the plugin
working where the operator's dependencies are not installed."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.metadata import version as installed
from pathlib import Path

import kopf
import pytest
from kubernetes import client

import kubectl_rollback
import rollback_operator
from rollback_operator import GROUP, PLURAL, VERSION, handlers
from rollback_operator import __main__ as operator_main
from rollback_operator.kube import Kube
from rollback_operator.model import FINISHED_LABEL


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """Kopf configures the root logger: put it back as it was after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_version_is_the_distributions(capsys):
    assert rollback_operator.__version__ == installed("rollback-operator")
    with pytest.raises(SystemExit) as exited:
        operator_main.parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"rollback-operator {rollback_operator.__version__}\n"


def test_json_logs_cover_the_operators_own_loggers(root_logger, capsys):
    operator_main.configure_logging("json", verbose=False)
    logging.getLogger("rollback_operator.steps.purge_cdn").warning("purge refused: %s", "403")
    logging.getLogger("kopf.objects").info("Handler succeeded.")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["purge refused: 403", "Handler succeeded."]
    assert records[0]["severity"] == "warn"


def test_text_logs_are_the_default(root_logger, capsys):
    assert operator_main.parse_args(["-A"]).log_format == "text"
    operator_main.configure_logging("text", verbose=False)
    logging.getLogger("rollback_operator.runner").info("step Preflight started")
    line = capsys.readouterr().err.strip()
    assert line.endswith("step Preflight started")
    assert not line.startswith("{")


# Runs in a fresh interpreter where the operator's extra cannot be imported.
WITHOUT_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kopf", "httpx", "prometheus_client"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from kubectl_rollback.cli import main
print("plugin", main(sys.argv[1:]))
"""


def test_the_plugin_runs_without_the_operators_dependencies():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, "__complete", "rest"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "restore-traffic\n:4\nplugin 0\n"


def test_the_operator_without_its_extra_says_which_to_install():
    script = WITHOUT_EXTRA.replace(
        "from kubectl_rollback.cli import main",
        "from rollback_operator.__main__ import main",
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "-A"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "pip install 'rollback-operator[operator]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_transport_works_with_the_installed_kubernetes_client():
    """Kube builds its calls with ApiClient.param_serialize (kubernetes >= 37; with an older
    client, an AttributeError on the first call): a GET to a local server, answered."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"kind": "Namespace", "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.handle_request, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = Kube(client.ApiClient(configuration)).get("/api/v1/namespaces/default")
    finally:
        server.server_close()
    assert got == {"kind": "Namespace", "path": "/api/v1/namespaces/default"}


PLUGIN = Path(kubectl_rollback.__file__).parent
# What the plugin may use of the operator: its vocabulary and pure helpers, and the transport.
# Never the steps, the runner or Kopf: those need the operator's extra.
PLUGIN_MAY_IMPORT = {
    "rollback_operator",
    "rollback_operator.model",
    "rollback_operator.kube",
    "rollback_operator.images",
    "rollback_operator.traffic",
    "rollback_operator.routes",
    "rollback_operator.autoscaling",
    "rollback_operator.status",
    "rollback_operator.takeover",
    "rollback_operator.gitops",
}


@pytest.mark.parametrize("path", sorted(PLUGIN.glob("*.py")), ids=lambda p: p.name)
def test_the_plugin_uses_the_operators_vocabulary_not_its_machinery(path: Path) -> None:
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    operator_modules = {name for name in imported if name.startswith("rollback_operator")}
    assert operator_modules <= PLUGIN_MAY_IMPORT, operator_modules - PLUGIN_MAY_IMPORT
    assert not {n.split(".")[0] for n in imported} & {"kopf", "httpx", "prometheus_client"}
    assert len(path.read_text().splitlines()) <= 450


def test_the_operator_watches_only_requests_not_labelled_finished():
    """Finished requests are filtered by the API server, before they cost memory or handlers."""
    settings = kopf.OperatorSettings()
    handlers.watch_only_unfinished(settings)
    requests = kopf.Resource(GROUP, VERSION, PLURAL, namespaced=True)
    others = kopf.Resource("rbac.authorization.k8s.io", "v1", "roles", namespaced=True)
    assert list(settings.watching.label_selectors.collect(requests)) == [f"!{FINISHED_LABEL}"]
    assert not list(settings.watching.label_selectors.collect(others))
