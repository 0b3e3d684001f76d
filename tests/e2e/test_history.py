"""Finished requests kept in the cluster cost the operator nothing.

The operator labels a request finished (rollback.lawyershub.io/finished) once it has released
its finalizer, and its watch selects only requests without that label, server-side:
a finished request is never listed, watched, patched or handled again. A request created
already finished (history restored from a backup, or left by an earlier version) is labelled
once, and left alone after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    create_request,
    events_for,
    get_request,
    request_body,
    running_operator,
    wait_outcome,
)
from tests.e2e.people import _server_side_apply
from tests.e2e.support import REPO_ROOT

pytestmark = pytest.mark.e2e

FINISHED = f"{GROUP}/finished"
FINALIZER = f"{GROUP}/finalizer"
STEPS = [
    "Preflight", "SuspendGitOps", "EnableMaintenance", "PauseAutoscaling", "RevertWorkloads",
    "PurgeCDN", "MigrateDatabaseDown", "RestoreDatabase", "Verify", "ResumeAutoscaling",
    "DisableMaintenance", "Monitor", "Report",
]  # fmt: skip


def create_finished(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phase: str,
    *,
    labelled: bool,
    finalizer: bool = False,
) -> dict[str, Any]:
    """A request created directly with a finished, announced status (status subresource),
    then labelled finished as the operator labels it, if `labelled`; holding the operator's
    finalizer, if `finalizer` (an operator stopped before it released it)."""
    objects = client.CustomObjectsApi(api)
    body = request_body(name)
    body["metadata"]["labels"] = {"team": "web"}
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    state = "Succeeded" if phase == "Succeeded" else "Failed"
    status = {
        "phase": phase,
        "message": f"{phase} long ago",
        "startedAt": "2026-01-10T10:00:00Z",
        "finishedAt": "2026-01-10T10:05:00Z",
        "announced": True,
        "steps": [{"name": step, "state": state if step == "Preflight" else "Skipped"}
                  for step in STEPS],
    }  # fmt: skip
    done: dict[str, Any] = objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )
    if finalizer:
        done = objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"finalizers": [FINALIZER]}}
        )
    if labelled:
        done = objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"labels": {FINISHED: "true"}}}
        )
    return done


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def labelled_finished(
    api: client.ApiClient, namespace: str, name: str, *, timeout: float, what: str
) -> dict[str, Any]:
    """The request, once it carries the finished label."""

    def probe() -> dict[str, Any] | None:
        obj = get_request(api, namespace, name)
        return obj if FINISHED in labels_of(obj) else None

    return wait_until(probe, timeout=timeout, what=what)


def test_finished_requests_are_labelled_once_then_never_touched_and_a_new_one_still_runs(
    api: client.ApiClient, app: str, kubeconfig: str, tmp_path: Path
) -> None:
    namespace = app
    # History as this operator leaves it (labelled), and as an earlier version left it.
    kept = create_finished(api, namespace, "kept", "Succeeded", labelled=True)
    old = create_finished(api, namespace, "old", "Failed", labelled=False)
    held = create_finished(api, namespace, "held", "Aborted", labelled=False, finalizer=True)

    with running_operator(namespace, kubeconfig, tmp_path) as operator:
        # The unlabelled one is labelled once: no finalizer, no Event, no run, its status as is.
        labelled = labelled_finished(
            api, namespace, "old", timeout=60, what="the finished request created by hand labelled"
        )
        assert labelled["status"] == old["status"]
        assert not labelled["metadata"].get("finalizers")
        assert labels_of(labelled)["team"] == "web"
        # One that still held the finalizer is left to Kopf: labelled, and released.
        released = labelled_finished(
            api, namespace, "held", timeout=60, what="the request holding the finalizer labelled"
        )
        assert not released["metadata"].get("finalizers")
        assert released["status"] == held["status"]

        # A new request in the same namespace runs as ever, and ends labelled, its finalizer
        # released.
        create_request(api, namespace, "golive")
        done = wait_outcome(api, namespace, "golive", "Succeeded")
        finished = labelled_finished(
            api, namespace, "golive", timeout=30, what="the request that ran labelled finished"
        )
        assert not finished["metadata"].get("finalizers")
        assert finished["status"]["finishedAt"] == done["status"]["finishedAt"]

        # The operator has been live all along (it ran golive): the labelled history was never
        # written to, and the hand-made one only the once.
        assert (
            get_request(api, namespace, "kept")["metadata"]["resourceVersion"]
            == (kept["metadata"]["resourceVersion"])
        )
        assert (
            get_request(api, namespace, "old")["metadata"]["resourceVersion"]
            == (labelled["metadata"]["resourceVersion"])
        )
        assert not events_for(api, namespace, "kept")
        assert not events_for(api, namespace, "old")

        # The label removed by hand (a tool that prunes labels): the request is seen again and
        # labelled again, never run again.
        events_before = len(events_for(api, namespace, "golive"))
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "golive", {"metadata": {"labels": {FINISHED: None}}}
        )
        again = labelled_finished(
            api, namespace, "golive", timeout=30, what="the request labelled finished again"
        )
        assert again["status"] == finished["status"]
        assert not again["metadata"].get("finalizers")
        assert len(events_for(api, namespace, "golive")) == events_before
        assert operator.process is not None and operator.process.poll() is None

    # A finished request is deleted at once, with no operator running.
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "golive"
    )
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object
    wait_until(
        lambda: all(
            item["metadata"]["name"] != "golive"
            for item in listed(GROUP, VERSION, namespace, PLURAL)["items"]
        ),
        timeout=30,
        what="the finished request gone",
    )


POLICY = REPO_ROOT / "manifests" / "common" / "finished-label.yaml"


def test_the_api_server_refuses_the_finished_label_where_it_would_hide_a_request(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    """Copied from an old request's YAML onto a new one, the label would keep it from ever
    running; added by hand to a running one, it would leave the run half-way."""
    for obj in yaml.safe_load_all(POLICY.read_text()):
        _server_side_apply(api, obj)
    objects = client.CustomObjectsApi(api)
    copied = request_body("copied")
    copied["metadata"]["labels"] = {FINISHED: "true"}

    def refused_on_create() -> str | None:
        try:
            objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, copied, dry_run="All"
            )
        except ApiException as error:
            return str(error.body) if error.status == 422 else None
        return None

    message = wait_until(refused_on_create, timeout=30, what="the finished-label policy in force")
    assert "a new request with it would never run" in message

    create_request(api, namespace, "running")  # no operator here: it stays unfinished
    with pytest.raises(ApiException) as hidden:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "running", {"metadata": {"labels": {FINISHED: "1"}}}
        )
    assert hidden.value.status == 403
    assert "kubectl rollback abort running" in str(hidden.value.body)

    # Over and announced: the label is what the operator sets, and removing and setting it
    # again is allowed.
    done = create_finished(api, namespace, "done", "Aborted", labelled=True)
    assert labels_of(done)[FINISHED] == "true"
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "done", {"metadata": {"labels": {FINISHED: None}}}
    )
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "done", {"metadata": {"labels": {FINISHED: "true"}}}
    )
