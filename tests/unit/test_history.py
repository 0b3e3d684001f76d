"""Finished requests left unlabelled (by an earlier version, or a restore) are labelled before
Kopf lists them: page by page, only those over and announced, never one that still holds the
operator's finalizer (Kopf releases it, and labels it in the same patch)."""

from __future__ import annotations

from typing import Any

from rollback_operator import history
from rollback_operator.kube import ApiError
from rollback_operator.model import FINISHED_LABEL


def request(name: str, phase: str | None, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    status.update(extra.pop("status", {}))
    return {"metadata": {"name": name, "namespace": "ns", **extra}, "status": status}


class Pages:
    """The API server as the sweep sees it: pages of unlabelled requests, and the patches."""

    def __init__(self, pages: list[list[dict[str, Any]]], gone: set[str] = frozenset()) -> None:
        self.pages, self.gone = pages, gone
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.patched: list[tuple[str, Any]] = []

    def request(self, method: str, path: str, query: dict[str, str]) -> dict[str, Any]:
        assert method == "GET"
        self.queries.append((path, query))
        index = int(query.get("continue", "0"))
        token = str(index + 1) if index + 1 < len(self.pages) else ""
        return {"metadata": {"continue": token}, "items": self.pages[index]}

    def patch(self, path: str, body: Any) -> None:
        if path.rsplit("/", 1)[1] in self.gone:
            raise ApiError(404, "NotFound", "gone")
        self.patched.append((path, body))


def test_only_finished_announced_and_released_requests_are_labelled_page_by_page():
    kube = Pages(
        [
            [
                request("done", "Succeeded", status={"announced": True}),
                request("running", "Running"),
                request("pending", None),
                request("announcing", "Failed", status={"announced": False}),
            ],
            [
                request("old", "Aborted"),  # before status.announced existed: over
                request("held", "Failed", finalizers=[history.FINALIZER]),
                request("gone", "Succeeded"),
            ],
        ],
        gone={"gone"},
    )
    assert history.label_history(kube, ["ns"]) == 2  # type: ignore[arg-type]
    names = sorted(path.rsplit("/", 1)[1] for path, _ in kube.patched)
    assert names == ["done", "old"]
    assert all(
        body == {"metadata": {"labels": {FINISHED_LABEL: "true"}}} for _, body in kube.patched
    )
    # Filtered server-side, a bounded page at a time, following the continue token.
    assert [q.get("continue") for _, q in kube.queries] == [None, "1"]
    assert all(q["labelSelector"] == f"!{FINISHED_LABEL}" for _, q in kube.queries)
    assert all(q["limit"] == str(history.PAGE) for _, q in kube.queries)
    assert all("/namespaces/ns/" in path for path, _ in kube.queries)


def test_every_namespace_or_the_whole_cluster():
    kube = Pages([[]])
    history.label_history(kube, ["a", "b"])  # type: ignore[arg-type]
    assert [p.split("/namespaces/")[1].split("/")[0] for p, _ in kube.queries] == ["a", "b"]
    cluster = Pages([[]])
    history.label_history(cluster, None)  # type: ignore[arg-type]
    assert "/namespaces/" not in cluster.queries[0][0]
