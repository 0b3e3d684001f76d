"""`make cluster` is idempotent and `make cluster-down` leaves no process behind, the proxy's
(`ROLLBACK_CLUSTER_PROXY=1`, as `cluster/up.sh --proxy`) included.

Runs a second, throwaway control plane on other ports and in another state directory, so
that the cluster the rest of the suite uses is not disturbed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.support import REPO_ROOT

pytestmark = pytest.mark.e2e


def _make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_twice_is_a_no_op_and_down_stops_everything(tmp_path: Path) -> None:
    # Ports of its own, below the kernel's ephemeral range, so no outgoing connection holds one.
    env = {
        **os.environ,
        "CLUSTER_DIR": str(tmp_path / "cluster"),
        "ETCD_PORT": "25790",
        "ETCD_PEER_PORT": "25800",
        "APISERVER_PORT": "27443",
        "CONTROLLER_MANAGER_PORT": "27257",
        "SCHEDULER_PORT": "27259",
        "KWOK_PORT": "27250",
        "ROLLBACK_CLUSTER_PROXY": "1",
        "PROXY_PORT": "18090",
        "PROXY_PING_PORT": "18091",
    }
    try:
        first = _make("cluster", env)
        assert first.returncode == 0, first.stdout + first.stderr
        pids = {p.name: int(p.read_text()) for p in (tmp_path / "cluster" / "pids").iterdir()}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "job-runner",
            "proxy",
        }
        assert all(_alive(pid) for pid in pids.values())

        second = _make("cluster", env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already up" in second.stdout
        again = {p.name: int(p.read_text()) for p in (tmp_path / "cluster" / "pids").iterdir()}
        assert again == pids, "the second `make cluster` restarted components"
    finally:
        down = _make("cluster-down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert not (tmp_path / "cluster").exists()
