"""The operator's image, built by `make image` and run as a pod would run it.

The image is built first (scripts/image.sh: quick when nothing changed), then started with
podman (scripts/podman.sh, the project's own container storage and configuration): as the
image's own non-root user, with a read-only root filesystem, every capability dropped and no
privilege escalation, and credentials the way the kubelet gives them to a pod: a ServiceAccount
token from the TokenRequest API and the cluster's CA in
/var/run/secrets/kubernetes.io/serviceaccount/, and KUBERNETES_SERVICE_HOST/PORT. The
container shares the host's network, where the API server listens on 127.0.0.1 (its
certificate names that address). It then drives a full run to Succeeded, with the namespaced
roles of manifests/ (test_install.py's helpers) and not one call refused.
"""

from __future__ import annotations

import subprocess
import tomllib
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from standins.local import free_port, wait_until
from tests.e2e.support import REPO_ROOT
from tests.e2e.test_install import (
    SERVICE_ACCOUNT,
    _full_run_of,
    _namespaced_variant,
    _service_account_token,
)

# Serial: the module's image fixture runs `make image` (one build at a time in the project's
# container storage), and the container runs as the operator's Deployment would.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/rollback-operator:{VERSION}"
BASE = "docker.io/library/python:3.11-slim-bookworm"
PODMAN = str(REPO_ROOT / "scripts" / "podman.sh")
UID = 65532
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# What the image adds to its base besides /opt/venv: the user's and group's entries.
ACCOUNT_FILES = {
    f"/etc/{name}{suffix}"
    for name in ("passwd", "group", "shadow", "gshadow")
    for suffix in ("", "-")
}


def _podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """scripts/podman.sh ARGS; `podman logs` gives the container's stdout and stderr in order on
    stdout."""
    return subprocess.run(
        [PODMAN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if args[:1] == ("logs",) else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


class Container:
    """The operator in a container of the image, watching one namespace; started as the
    Deployment's pod is, and checked to be confined so."""

    def __init__(self, namespace: str, api: client.ApiClient, secrets: Path) -> None:
        server = urlsplit(api.configuration.host)
        assert server.hostname and server.port, api.configuration.host
        self.namespace, self.server, self.secrets = namespace, server, secrets
        self.name = f"rollback-operator-{uuid.uuid4().hex[:10]}"
        self.liveness = free_port()

    def start(self) -> None:
        run = _podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp:size=16m",  # the Deployment's emptyDir
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={self.secrets}:{SA_DIR}:ro",
            f"--env=KUBERNETES_SERVICE_HOST={self.server.hostname}",
            f"--env=KUBERNETES_SERVICE_PORT={self.server.port}",
            IMAGE,
            f"--namespace={self.namespace}",
            f"--liveness=http://127.0.0.1:{self.liveness}/healthz",
            "--metrics=",
        )
        assert run.returncode == 0, run.stderr
        wait_until(self.healthy, timeout=60, what=f"/healthz of container {self.name}")
        self.check_confinement()

    def stop(self) -> None:
        _podman("stop", "--time=15", self.name)

    def remove(self) -> None:
        _podman("rm", "--force", self.name)

    def logs(self) -> str:
        return _podman("logs", self.name).stdout

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.liveness}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def check_confinement(self) -> None:
        """The operator's process, as the host's /proc shows it: the image's user, no
        capability, no privilege escalation, the root filesystem mounted read-only."""
        pid = _podman("inspect", "--format={{.State.Pid}}", self.name).stdout.strip()
        assert pid.isdigit() and pid != "0", f"{self.name} is not running:\n{self.logs()}"
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}
        assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
        assert status["Gid"].split() == [str(UID)] * 4, status["Gid"]
        for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
        assert status["NoNewPrivs"] == "1"
        mounts = [line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines()]
        (root,) = [m for m in mounts if m[1] == "/"]
        assert "ro" in root[3].split(","), root


@pytest.fixture(scope="module")
def image() -> str:
    """`make image`, in this checkout: the image the tests run is the code being tested."""
    built = subprocess.run(
        [str(REPO_ROOT / "scripts" / "image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, f"make image failed:\n{built.stdout[-5000:]}{built.stderr}"
    return IMAGE


def test_image_is_labelled_non_root_and_adds_only_the_environment(image: str) -> None:
    inspect = _podman(
        "image",
        "inspect",
        '--format={{.Config.User}} {{index .Labels "org.opencontainers.image.version"}}',
        image,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert inspect.stdout.split() == [f"{UID}:{UID}", VERSION]

    # Over its base, the image holds the virtual environment and the user: no wheels, no
    # sources, no pip cache, and not the CA bundle the build trusted (mounted, never copied).
    diff = _podman("image", "diff", image, BASE)
    assert diff.returncode == 0, diff.stderr
    changed = {line.split(" ", 1)[1] for line in diff.stdout.splitlines()}
    assert "/opt/venv/bin/rollback-operator" in changed
    extra = {p for p in changed if not p.startswith("/opt/venv/")} - {"/etc", "/opt", "/opt/venv"}
    assert extra <= ACCOUNT_FILES, sorted(extra - ACCOUNT_FILES)

    account = _podman("run", "--rm", "--entrypoint=id", image)
    assert account.returncode == 0, account.stderr
    assert account.stdout.split()[:2] == [
        f"uid={UID}(rollback-operator)",
        f"gid={UID}(rollback-operator)",
    ]


def test_image_runs_a_rollback(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    image: str,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": SERVICE_ACCOUNT}})
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    with _namespaced_variant(api, kubeconfig, namespace, subject, {"Role", "ClusterRole"}):
        # The files of a pod's service-account volume, readable by the container's user.
        secrets = tmp_path / "serviceaccount"
        secrets.mkdir(mode=0o755)
        assert api.configuration.ssl_ca_cert, "the admin kubeconfig names no CA"
        for name, content in (
            ("token", _service_account_token(api, namespace, SERVICE_ACCOUNT)),
            ("ca.crt", Path(api.configuration.ssl_ca_cert).read_text()),
            ("namespace", namespace),
        ):
            (secrets / name).write_text(content)
            (secrets / name).chmod(0o644)

        container = Container(namespace, api, secrets)
        try:
            logs = _full_run_of(api, namespace, container)
        finally:
            container.remove()
    assert "Forbidden" not in logs
