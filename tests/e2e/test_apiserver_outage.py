"""The API server goes away for 20 s during RevertWorkloads, and again during Monitor: the run
still ends Succeeded, with the site as it began.

The API server is frozen (SIGSTOP, then SIGCONT): its connections hang instead of being
refused, the harder case (a server gone behind a load balancer). The leader cannot renew its
Lease, exits and is started again, as a kubelet restarts a container; the run resumes from its
ledger once the API server answers again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.lawyershub import (
    Operator,
    create_request,
    deploy_app,
    get_request,
    snapshot,
    wait_phase,
)
from tests.e2e.prometheus import (  # noqa: F401  (fixtures)
    PrometheusServer,
    TrafficTarget,
    prometheus_server,
    traffic_target,
)
from tests.e2e.support import REPO_ROOT, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.serial,  # every other test's API server freezes too
    pytest.mark.skipif(
        os.environ.get("ROLLBACK_E2E_EXISTING_CLUSTER") == "1",
        reason="freezes the local cluster's kube-apiserver process (make cluster)",
    ),
]

OUTAGE_SECONDS = 20


def _apiserver_pid() -> int:
    cluster = Path(os.environ.get("CLUSTER_DIR", REPO_ROOT / ".cluster"))
    return int((cluster / "pids" / "kube-apiserver").read_text())


@contextmanager
def _frozen_api_server() -> Iterator[None]:
    """The API server frozen for OUTAGE_SECONDS: the fault itself lasts that long (this is
    not a wait for a condition)."""
    pid = _apiserver_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(OUTAGE_SECONDS)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Kubelet:
    """Starts the operator again whenever it exits, as a kubelet restarts a container."""

    def __init__(self, operator: Operator) -> None:
        self.operator, self.restarts = operator, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Kubelet:
        self.operator.start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.operator.stop()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            process = self.operator.process
            if process is not None and process.poll() is not None:
                self.restarts += 1
                self.operator.start()


def _step(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return {s["name"]: s for s in obj.get("status", {}).get("steps", [])}.get(name, {})


def test_the_run_survives_the_api_server_going_away_twice(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    crds_installed: None,
    prometheus_server: PrometheusServer,  # noqa: F811
    traffic_target: TrafficTarget,  # noqa: F811
    tmp_path: Path,
) -> None:
    deploy_app(api, namespace, min_ready_seconds={"backend": 5, "frontend": 5})
    before = snapshot(api, namespace)
    traffic_target.traffic(namespace, error_ratio=0.01, latency=0.1)
    prometheus_server.wait_for_data(namespace)
    operator = Operator(namespace, kubeconfig, tmp_path)
    with Kubelet(operator) as kubelet:
        # The request, with a short watch evaluated every second.
        create_request(
            api,
            namespace,
            "outage",
            monitoring={
                "prometheus": {"url": prometheus_server.url},
                "duration": "30s",
                "interval": "1s",
                "for": 3,
            },
        )
        wait_until(
            lambda: (
                "rolling out"
                in _step(get_request(api, namespace, "outage"), "RevertWorkloads").get(
                    "message", ""
                )
            ),
            timeout=90,
            what="RevertWorkloads waiting on the rollout",
        )
        with _frozen_api_server():
            pass

        def watching() -> bool:
            status = get_request(api, namespace, "outage").get("status", {})
            return (
                status.get("phase") == "Monitoring"
                and (status.get("monitoring") or {}).get("evaluations", 0) >= 2
            )

        wait_until(watching, timeout=180, what="the watch under way")
        with _frozen_api_server():
            pass
        done = wait_phase(api, namespace, "outage", "Succeeded", "Failed", "Aborted", timeout=240)
        print(operator.logs()[-20000:])
    status = done["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert kubelet.restarts >= 1  # the leader lost its Lease and came back
    after = snapshot(api, namespace)
    assert after["ingresses"]["lawyershub"]["spec"] == before["ingresses"]["lawyershub"]["spec"]
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"]
