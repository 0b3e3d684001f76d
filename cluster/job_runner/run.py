"""Running one claimed pod to its end, in its own thread: volumes, init containers one by one,
then the containers together, reporting status at each step as a kubelet does."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cluster.job_runner.api import STRATEGIC_MERGE_PATCH, Api, ApiError
from cluster.job_runner.claims import process_start_time
from cluster.job_runner.plan import DEFAULT_GRACE_SECONDS, ContainerPlan, PodPlan, plan_pod
from cluster.job_runner.pod import MOUNT_ERROR, ObjectSource, PodConfigError, now
from cluster.job_runner.sandbox import Bind, HostLayout, Sandbox
from cluster.job_runner.status import ContainerRecord, pod_conditions, pod_status_patch
from cluster.job_runner.termination import termination_message
from cluster.job_runner.volumes import materialize, relative_path, volume_is_read_only

log = logging.getLogger("job-runner")

POLL_SECONDS = 0.1


class StopReason(enum.Enum):
    """Why a pod's processes are killed before they end on their own."""

    DELETED = "deleted"
    DEADLINE = "deadline"
    SHUTDOWN = "shutdown"


def _exit_code(returncode: int) -> int:
    """A runtime's exit code: a process killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _abridged(command: str, limit: int = 120) -> str:
    """A command line for the runner's log: one line, so that a script does not flood it."""
    line = command.replace("\n", " ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class PodRun:
    """One claimed pod, run to its end in its own thread: volumes, init containers one by one,
    then the containers together, reporting status at each step as a kubelet does."""

    def __init__(
        self,
        pod: dict[str, Any],
        *,
        api: Api,
        source: ObjectSource,
        layout: HostLayout,
        state_dir: Path,
        on_done: Callable[[PodRun], None],
    ) -> None:
        meta = pod["metadata"]
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.api, self.source, self.layout = api, source, layout
        self.pod_dir = state_dir / "pods" / self.uid
        self.logs_dir = state_dir / "logs"
        self._on_done = on_done
        self.start_time = now()
        self._started = time.monotonic()
        self._deadline: float | None = None
        self._grace: float = DEFAULT_GRACE_SECONDS
        self._stop = threading.Event()
        self._stop_reason: StopReason | None = None
        self._stop_grace: float | None = None
        self._gone = False
        self._conditions: dict[str, dict[str, Any]] = {}
        self._binds: dict[str, tuple[Bind, ...]] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        spec = pod.get("spec") or {}
        self.init_records = [
            ContainerRecord(c.get("name", ""), c.get("image", ""), "PodInitializing")
            for c in spec.get("initContainers") or []
        ]
        waiting = "PodInitializing" if self.init_records else "ContainerCreating"
        self.records = [
            ContainerRecord(c.get("name", ""), c.get("image", ""), waiting)
            for c in spec.get("containers") or []
        ]
        self.thread = threading.Thread(
            target=self._main, name=f"{self.namespace}/{self.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, reason: StopReason, grace: float | None = None) -> None:
        """Asks the run to kill its processes (SIGTERM, SIGKILL after the grace period)."""
        if self._stop_reason is None:
            self._stop_reason, self._stop_grace = reason, grace
        self._stop.set()

    # -- the run

    def _main(self) -> None:
        try:
            self._run()
        except Exception as error:  # a malformed pod or a bug: this pod fails, not the runner
            log.exception("%s/%s: the run failed", self.namespace, self.name)
            message = f"the local job runner could not run this pod: {error!r}"
            self._finish("Failed", "JobRunnerError", message)
        finally:
            for process in self._processes:  # nothing outlives its run, whatever happened
                if process.poll() is None:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            self._on_done(self)

    def _run(self) -> None:
        try:
            plan = plan_pod(self.pod, self.source)
            self._prepare(plan)
        except PodConfigError as error:
            self._fail_to_start(error)
            return
        if plan.active_deadline is not None:
            self._deadline = self._started + plan.active_deadline
        self._grace = plan.grace_seconds
        for index, container in enumerate(plan.init_containers):
            records = self.init_records[index : index + 1]
            if not self._run_together([container], records, "Pending"):
                self._end_stopped()
                return
            if not self.init_records[index].succeeded:
                self._finish("Failed")
                return
        if not self._run_together(plan.containers, self.records, "Running"):
            self._end_stopped()
            return
        succeeded = all(record.succeeded for record in self.records)
        self._finish("Succeeded" if succeeded else "Failed")

    def _prepare(self, plan: PodPlan) -> None:
        """Materializes the volumes and works out every container's binds, before anything
        runs."""
        for directory in ("volumes", "termination", "pids", "rootfs", "layers"):
            (self.pod_dir / directory).mkdir(parents=True, exist_ok=True)
        os.chmod(self.pod_dir, 0o700)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        on_host = {
            name: materialize(volume, self.pod_dir / "volumes" / name, plan.fs_group)
            for name, volume in plan.volumes.items()
        }
        for container in (*plan.init_containers, *plan.containers):
            try:
                self._binds[container.name] = self._container_binds(container, plan, on_host)
            except PodConfigError as error:
                error.container = container.name
                raise

    def _container_binds(
        self, container: ContainerPlan, plan: PodPlan, on_host: Mapping[str, Path]
    ) -> tuple[Bind, ...]:
        binds = []
        for mount in container.mounts:
            read_only = mount.read_only or volume_is_read_only(plan.volumes[mount.volume])
            source = on_host[mount.volume]
            if mount.sub_path:
                source = source / relative_path(mount.sub_path, f"subPath of {mount.volume}")
                if not source.exists():
                    if read_only:
                        raise PodConfigError(
                            f"subPath {mount.sub_path} does not exist in volume {mount.volume}",
                            reason=MOUNT_ERROR,
                        )
                    source.mkdir(mode=0o755, parents=True)
            binds.append(Bind(str(source), mount.path, read_only, source.is_dir()))
        message_file = self.pod_dir / "termination" / container.name
        message_file.touch()
        os.chmod(message_file, 0o666)  # whichever uid the process runs as may write it
        binds.append(Bind(str(message_file), container.termination_path, False, False))
        return tuple(binds)

    def _log_file(self, container: str) -> Path:
        return self.logs_dir / f"{self.namespace}_{self.name}_{container}.log"

    def _start(
        self, container: ContainerPlan, record: ContainerRecord
    ) -> subprocess.Popen[bytes] | None:
        sandbox = Sandbox(
            layout=self.layout,
            root=str(self.pod_dir / "rootfs" / container.name),
            layers=str(self.pod_dir / "layers" / container.name),
            binds=self._binds[container.name],
            working_dir=container.working_dir,
            identity=container.identity,
        )
        Path(sandbox.root).mkdir(exist_ok=True)
        Path(sandbox.layers).mkdir(exist_ok=True)
        record.started_at = now()
        try:
            with self._log_file(container.name).open("wb") as output:
                process = subprocess.Popen(
                    sandbox.command(container.argv),
                    env=dict(container.env),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed as one
                )
        except OSError as error:
            record.finish(128, f"failed to start: {error}", reason="StartError")
            return None
        record.pid = process.pid
        started = process_start_time(process.pid) or ""
        (self.pod_dir / "pids" / container.name).write_text(f"{process.pid} {started}\n")
        log.info(
            "%s/%s: container %s started (pid %d): %s",
            self.namespace,
            self.name,
            container.name,
            process.pid,
            _abridged(shlex.join(container.argv)),
        )
        return process

    def _collect(
        self, container: ContainerPlan, record: ContainerRecord, process: subprocess.Popen[bytes]
    ) -> None:
        """Records a container's exit: what is left of its process group is killed, as a
        runtime stops the whole container when its main process ends."""
        _signal_group(process.pid, signal.SIGKILL)
        exit_code = _exit_code(process.wait())
        message = termination_message(
            self.pod_dir / "termination" / container.name,
            self._log_file(container.name),
            exit_code,
            container.fallback_to_logs,
        )
        record.finish(exit_code, message)
        log.info(
            "%s/%s: container %s exited %d", self.namespace, self.name, container.name, exit_code
        )

    def _run_together(
        self, containers: Sequence[ContainerPlan], records: Sequence[ContainerRecord], phase: str
    ) -> bool:
        """Runs containers side by side until all have exited; False when stopped first.

        `phase` is the pod's while they run: Pending for an init container, else Running.
        """
        if self._stop.is_set():  # deleted, say, while the previous container ran
            return False
        running: dict[int, subprocess.Popen[bytes]] = {}
        for index, container in enumerate(containers):
            process = self._start(container, records[index])
            if process is not None:
                running[index] = process
                self._processes.append(process)
        self._report(phase)
        while running:
            exited = [index for index, process in running.items() if process.poll() is not None]
            for index in exited:
                self._collect(containers[index], records[index], running.pop(index))
            if exited and running:
                self._report(phase)
            if not running:
                break
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self.stop(StopReason.DEADLINE)
            if self._stop.wait(POLL_SECONDS):
                self._terminate(running, containers, records)
                return False
        return True

    def _terminate(
        self,
        running: dict[int, subprocess.Popen[bytes]],
        containers: Sequence[ContainerPlan],
        records: Sequence[ContainerRecord],
    ) -> None:
        """SIGTERM to every process group, SIGKILL to what outlives the grace period."""
        grace = self._grace if self._stop_grace is None else self._stop_grace
        for process in running.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in running.values()):
            time.sleep(POLL_SECONDS / 2)
        for index, process in running.items():
            self._collect(containers[index], records[index], process)

    # -- status

    def _end_stopped(self) -> None:
        if self._stop_reason is StopReason.DEADLINE:
            message = "Pod was active on the node longer than the specified deadline"
            self._finish("Failed", "DeadlineExceeded", message)
        elif self._stop_reason is StopReason.SHUTDOWN:
            message = "the local job runner stopped while this pod ran; it is not run again"
            self._finish("Failed", "JobRunnerStopped", message)
        else:  # deleted: reported for whoever still watches it, if it still exists
            self._finish("Failed")

    def _fail_to_start(self, error: PodConfigError) -> None:
        for record in (*self.init_records, *self.records):
            if record.name == error.container:
                record.waiting_reason, record.waiting_message = error.reason, error.message
        where = f"container {error.container}: " if error.container else ""
        log.info("%s/%s: cannot start: %s%s", self.namespace, self.name, where, error.message)
        self._finish("Failed", error.reason, where + error.message)

    def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        self._report(phase, reason, message, attempts=20)
        log.info("%s/%s: %s", self.namespace, self.name, phase)

    def _stamped_conditions(self, phase: str) -> list[dict[str, Any]]:
        """The conditions, each keeping its lastTransitionTime while its status holds."""
        for kind, (status, reason) in pod_conditions(
            phase, self.init_records, self.records
        ).items():
            previous = self._conditions.get(kind)
            if previous is None or previous["status"] != status:
                since = now()
            else:
                since = previous["lastTransitionTime"]
            condition = {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": since,
            }
            if reason:
                condition["reason"] = reason
            self._conditions[kind] = condition
        return list(self._conditions.values())

    def _report(
        self, phase: str, reason: str | None = None, message: str | None = None, attempts: int = 3
    ) -> None:
        """Patches pods/status; a pod that is gone ends the reporting, errors are retried."""
        if self._gone:
            return
        body = pod_status_patch(
            phase,
            self.start_time,
            self._stamped_conditions(phase),
            init=self.init_records,
            main=self.records,
            reason=reason,
            message=message,
        )
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        for attempt in range(attempts):
            try:
                self.api.request("PATCH", path, body=body, content_type=STRATEGIC_MERGE_PATCH)
                return
            except ApiError as error:
                if error.status == 404:
                    self._gone = True
                    return
                if error.status in (400, 422):
                    log.error("%s/%s: status refused: %s", self.namespace, self.name, error)
                    return
                log.warning("%s/%s: status not reported: %s", self.namespace, self.name, error)
                time.sleep(min(0.2 * 2**attempt, 2.0))
