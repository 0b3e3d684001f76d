"""`make cluster` is idempotent and `make cluster-down` leaves no process behind, the proxy's
(`ROLLBACK_CLUSTER_PROXY=1`, as `cluster/up.sh --proxy`) included.

Runs a second, throwaway control plane on ports nothing listens on and in another state
directory, so that the cluster the rest of the suite uses is not disturbed.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.support import REPO_ROOT

# Serial: a whole second control plane, started and stopped (minutes of CPU on a small machine).
pytestmark = [pytest.mark.e2e, pytest.mark.serial]


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


PORTS = (
    "ETCD_PORT",
    "ETCD_PEER_PORT",
    "APISERVER_PORT",
    "CONTROLLER_MANAGER_PORT",
    "SCHEDULER_PORT",
    "KWOK_PORT",
    "PROXY_PORT",
    "PROXY_PING_PORT",
)


def _unused_ports(count: int) -> list[str]:
    """Loopback ports nothing listens on now, below the kernel's ephemeral range, so that no
    outgoing connection takes one before the control plane binds it (and not the fixed ports
    another control plane on this machine may hold)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 8000), low))
    random.shuffle(candidates)
    found: list[str] = []
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(str(port))
        if len(found) == count:
            return found
    raise AssertionError(f"no {count} unused ports below {low}")


def test_cluster_twice_is_a_no_op_and_down_stops_everything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CLUSTER_DIR": str(tmp_path / "cluster"),
        **dict(zip(PORTS, _unused_ports(len(PORTS)), strict=True)),
        "ROLLBACK_CLUSTER_PROXY": "1",
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
