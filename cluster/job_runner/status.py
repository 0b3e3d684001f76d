"""A pod's status as a kubelet reports it: each container's state, the pod's conditions, and
the pods/status patches, including the one that fails a pod whose runner died."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster.job_runner.pod import NODE_IP, now


@dataclass
class ContainerRecord:
    """One container's state, as the pod's status reports it, kept current while it runs."""

    name: str
    image: str
    waiting_reason: str
    waiting_message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.exit_code is None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def finish(self, exit_code: int, message: str, reason: str = "") -> None:
        self.exit_code = exit_code
        self.finished_at = now()
        self.started_at = self.started_at or self.finished_at
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.message = message

    def status(self, *, init: bool) -> dict[str, Any]:
        """A containerStatuses entry; the states not in effect are nulled so that a strategic
        merge patch replaces the previous one."""
        state: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
        if self.exit_code is not None:
            terminated: dict[str, Any] = {
                "exitCode": self.exit_code,
                "reason": self.reason,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
            }
            if self.message:
                terminated["message"] = self.message
            state["terminated"] = terminated
        elif self.running:
            state["running"] = {"startedAt": self.started_at}
        else:
            state["waiting"] = {"reason": self.waiting_reason}
            if self.waiting_message:
                state["waiting"]["message"] = self.waiting_message
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.succeeded if init else self.running,
            "started": self.running,
            "restartCount": 0,
            "state": state,
        }
        if self.pid is not None:
            status["containerID"] = f"jobrunner://{self.pid}"
        return status


TERMINAL_PHASES = ("Succeeded", "Failed")


def pod_conditions(
    phase: str, init: Sequence[ContainerRecord], main: Sequence[ContainerRecord]
) -> dict[str, tuple[str, str]]:
    """The kubelet's pod conditions, as type -> (status, reason)."""
    terminal = phase in TERMINAL_PHASES
    ready = phase == "Running" and all(record.running for record in main)
    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    initialized = all(record.succeeded for record in init)
    return {
        "PodReadyToStartContainers": ("False", "") if terminal else ("True", ""),
        "Initialized": ("True", "") if initialized else ("False", "ContainersNotInitialized"),
        "ContainersReady": ("True", "") if ready else ("False", not_ready),
        "Ready": ("True", "") if ready else ("False", not_ready),
    }


def pod_status_patch(
    phase: str,
    start_time: str,
    conditions: list[dict[str, Any]],
    *,
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The body of a strategic merge patch of pods/status."""
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": start_time,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": NODE_IP,
        "podIPs": [{"ip": NODE_IP}],
        "conditions": conditions,
        "initContainerStatuses": [record.status(init=True) for record in init],
        "containerStatuses": [record.status(init=False) for record in main],
    }
    if reason:
        status["reason"] = reason
        status["message"] = message or ""
    return {"status": status}


def orphaned_status_patch(pod: dict[str, Any], message: str) -> dict[str, Any]:
    """Fails a pod whose runner died while running it: whatever had not finished is reported
    terminated with an unknown status, as the kubelet does for a container it lost."""
    status = pod.get("status") or {}
    finished_at = now()

    def finished(statuses: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        result = []
        for entry in statuses or []:
            state = entry.get("state") or {}
            if not state.get("terminated"):
                started_at = (state.get("running") or {}).get("startedAt")
                terminated = {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": message,
                    "startedAt": started_at,
                    "finishedAt": finished_at,
                }
                state = {"terminated": terminated, "running": None, "waiting": None}
                result.append({**entry, "ready": False, "started": False, "state": state})
            else:
                result.append(entry)
        return result

    not_ready = {"status": "False", "reason": "PodCompleted", "lastTransitionTime": finished_at}
    return {
        "status": {
            "phase": "Failed",
            "reason": "JobRunnerLost",
            "message": message,
            "initContainerStatuses": finished(status.get("initContainerStatuses")),
            "containerStatuses": finished(status.get("containerStatuses")),
            "conditions": [
                {"type": "Ready", **not_ready},
                {"type": "ContainersReady", **not_ready},
            ],
        }
    }
