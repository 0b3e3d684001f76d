"""Finished requests kept in the cluster: labelled once, then out of the operator's sight.

The operator watches only requests without FINISHED_LABEL (handlers.py). A request that ends
while the operator runs is labelled by `handlers.mark_finished`, once Kopf has released its
finalizer. Requests that ended otherwise (under a version of the operator without the label, or
restored from a backup) would all reach Kopf at once when it starts: a worker each, a connection
each for its patch, the whole history in memory at the same moment, enough to starve the leader
Lease's renewals. So before Kopf starts, `label_history` labels them: listed a page at a time,
filtered server-side to the unlabelled, patched a few at a time. After that first start, a start
lists only the unfinished requests here, one page per namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rollback_operator import GROUP
from rollback_operator.kube import ApiError, Kube, request_path, requests_path
from rollback_operator.model import FINISHED_LABEL, ended

PAGE = 100
PARALLEL = 16
# Kopf's finalizer (handlers.configure): a finished request that still holds it is left to
# Kopf, which releases it; handlers.mark_finished labels it after that.
FINALIZER = f"{GROUP}/finalizer"
UNLABELLED = f"!{FINISHED_LABEL}"


def to_label(item: Mapping[str, Any]) -> bool:
    """Over and announced, and no finalizer of ours left to release."""
    meta = item.get("metadata") or {}
    return ended(item.get("status") or {}) and FINALIZER not in (meta.get("finalizers") or [])


def label_history(kube: Kube, namespaces: Iterable[str] | None) -> int:
    """Labels every finished request of `namespaces` (None: all) that is not yet; returns how
    many it labelled."""
    labelled = 0
    with ThreadPoolExecutor(PARALLEL) as pool:
        for namespace in list(namespaces) if namespaces else [None]:
            token = ""
            while True:
                query = {"labelSelector": UNLABELLED, "limit": str(PAGE)}
                if token:
                    query["continue"] = token
                page: dict[str, Any] = kube.request("GET", requests_path(namespace), query=query)
                found = [item["metadata"] for item in page.get("items", []) if to_label(item)]
                labelled += sum(pool.map(lambda meta: _label(kube, meta), found))
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
    return labelled


def _label(kube: Kube, meta: Mapping[str, Any]) -> int:
    try:
        kube.patch(
            request_path(meta["namespace"], meta["name"]),
            {"metadata": {"labels": {FINISHED_LABEL: "true"}}},
        )
    except ApiError as error:
        if error.status == 404:  # deleted meanwhile
            return 0
        raise
    return 1
