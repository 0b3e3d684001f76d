"""The watch on Job pods: each that is bound to a node and not started is claimed and run; one
claimed by a runner of this machine that is no longer alive is failed, never run again."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from cluster.job_runner.api import (
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    Api,
    ApiError,
    ClusterObjects,
    WatchExpiredError,
)
from cluster.job_runner.claims import CLAIM_ANNOTATION, Claimant, kill_leftovers
from cluster.job_runner.run import PodRun, StopReason
from cluster.job_runner.sandbox import HostLayout
from cluster.job_runner.status import TERMINAL_PHASES, orphaned_status_patch

log = logging.getLogger("job-runner")

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Each watch ends after this long and the runner lists again: a pod whose runner died after
# the last list is found within that time, even if nothing else happens to it.
WATCH_SECONDS = 60


def _is_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def is_runnable(pod: dict[str, Any]) -> bool:
    """Bound to a node, not being deleted, and never started by anyone."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    return bool(
        spec.get("nodeName")
        and not meta.get("deletionTimestamp")
        and status.get("phase") in (None, "", "Pending")
        and not status.get("startTime")
    )


class Runner:
    """Watches Job pods; claims each that is bound and not started, and runs it in a PodRun.

    Only one runner is meant to serve a cluster, but a pod is claimed (an annotation patched
    with a resourceVersion precondition) before it runs, so that it never runs twice; a pod
    claimed by a runner of this machine that is no longer alive is failed, never re-run.
    """

    def __init__(
        self, api: Api, state_dir: Path, layout: HostLayout, shutdown_grace: float
    ) -> None:
        self.api = api
        self.source = ClusterObjects(api)
        self.state_dir = state_dir
        self.layout = layout
        self.shutdown_grace = shutdown_grace
        self.me = Claimant.this_process()
        self.runs: dict[str, PodRun] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._resource_version: str | None = None

    @property
    def ready_file(self) -> Path:
        """Exists once the first list went through: up.sh waits for it."""
        return self.state_dir / "ready"

    # -- watching

    def serve(self, stopping: threading.Event) -> None:
        """Lists, then watches, listing again after each watch, until stopped. A watch that
        breaks is resumed from where it was, unless its resourceVersion has expired."""
        delay = 0.5
        while not stopping.is_set():
            try:
                if self._resource_version is None:
                    self._resource_version = self._relist()
                self._watch()
                self._resource_version = None
                delay = 0.5
            except WatchExpiredError:
                self._resource_version = None
            except Exception as error:  # the API server restarting, or anything else: retry
                log.warning("watch: %s; again in %.1fs", error, delay)
                stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def _selectors(self) -> dict[str, str]:
        return {"labelSelector": JOB_NAME_LABEL, "fieldSelector": "spec.nodeName!="}

    def _relist(self) -> str:
        listed = self.api.request("GET", "/api/v1/pods", query=self._selectors())
        present = set()
        for pod in listed.get("items") or []:
            present.add((pod.get("metadata") or {}).get("uid"))
            self.handle("ADDED", pod)
        with self._lock:
            vanished = [run for uid, run in self.runs.items() if uid not in present]
        for run in vanished:
            run.stop(StopReason.DELETED)
        self.ready_file.touch()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self) -> None:
        """Handles events until the server ends the watch, keeping the resourceVersion to
        resume from."""
        query = {
            **self._selectors(),
            "watch": "true",
            "resourceVersion": str(self._resource_version),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            for event in self.api.stream("/api/v1/pods", query, WATCH_SECONDS + 30):
                kind, pod = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        raise WatchExpiredError
                    raise ApiError(int(pod.get("code") or 0), str(pod.get("message")))
                metadata = pod.get("metadata") or {}
                self._resource_version = metadata.get("resourceVersion", self._resource_version)
                if kind != "BOOKMARK":
                    self.handle(str(kind), pod)
        except ApiError as error:
            if error.status == 410:
                raise WatchExpiredError from None
            raise

    # -- one event

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """Never raises: a pod the runner cannot make sense of is logged and skipped."""
        try:
            self._handle(kind, pod)
        except Exception:
            meta = pod.get("metadata") or {}
            log.exception("pod %s/%s: event %s", meta.get("namespace"), meta.get("name"), kind)

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            run = self.runs.get(meta["uid"])
        if run is not None:
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                run.stop(StopReason.DELETED, meta.get("deletionGracePeriodSeconds"))
            return
        if kind == "DELETED" or _is_terminal(pod):
            return
        claim = (meta.get("annotations") or {}).get(CLAIM_ANNOTATION)
        if claim is None:
            if is_runnable(pod):
                self._claim_and_run(pod)
        elif claim != str(self.me) and not meta.get("deletionTimestamp"):
            self._fail_if_orphaned(pod, claim)

    def _pod_path(self, pod: dict[str, Any]) -> str:
        meta = pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def _claim_and_run(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            if self._closing:
                return
        body = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {CLAIM_ANNOTATION: str(self.me)},
            }
        }
        try:
            claimed = self.api.request(
                "PATCH", self._pod_path(pod), body=body, content_type=MERGE_PATCH
            )
        except ApiError as error:
            if error.status in (404, 409):  # changed or gone meanwhile: the next event decides
                return
            raise
        run = PodRun(
            claimed,
            api=self.api,
            source=self.source,
            layout=self.layout,
            state_dir=self.state_dir,
            on_done=self._done,
        )
        with self._lock:
            self.runs[meta["uid"]] = run
        log.info("%s/%s: claimed", meta["namespace"], meta["name"])
        run.start()

    def _done(self, run: PodRun) -> None:
        with self._lock:
            self.runs.pop(run.uid, None)

    def _fail_if_orphaned(self, pod: dict[str, Any], claim: str) -> None:
        owner = Claimant.parse(claim)
        if owner is None or owner.is_alive() is not False:
            return  # another live runner's, or one of another machine: not this runner's call
        meta = pod["metadata"]
        kill_leftovers(self.state_dir / "pods" / meta["uid"])
        message = (
            f"the job runner that ran this pod ({claim}) stopped while it was running; "
            f"the pod is not run again"
        )
        self.api.request(
            "PATCH",
            self._pod_path(pod) + "/status",
            body=orphaned_status_patch(pod, message),
            content_type=STRATEGIC_MERGE_PATCH,
        )
        shutil.rmtree(self.state_dir / "pods" / meta["uid"], ignore_errors=True)
        log.info("%s/%s: failed, its runner is gone", meta["namespace"], meta["name"])

    def shutdown(self) -> None:
        """Kills every running pod's processes and reports those pods Failed."""
        with self._lock:
            self._closing = True
            runs = list(self.runs.values())
        for run in runs:
            run.stop(StopReason.SHUTDOWN, self.shutdown_grace)
        for run in runs:
            run.thread.join(timeout=self.shutdown_grace + 2)
