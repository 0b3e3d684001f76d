"""Kopf handlers: registration only. The work is in `runner` (I/O) and `engine` (decisions).

One daemon per unfinished RollbackRequest drives it to a terminal phase. Kopf starts the
daemons again when the operator starts, which is how a run survives a crash. Kopf holds a
finalizer on a request only while its daemon runs: the phase filter releases it as soon as
the request is finished, so a finished request is deleted at once, operator or not.
An index of what each live request touches gives the queue its view without API calls.

Finished requests cost nothing: once Kopf has released the finalizer, the request is labelled
finished (FINISHED_LABEL), and the watch selects only requests without that label, server-side.
A finished request then leaves the operator's watch: no memory, no handler, no request for it,
however many are kept (a request created already finished is labelled once, when first seen).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from rollback_operator import GROUP, PLURAL, VERSION, queue
from rollback_operator.history import FINALIZER
from rollback_operator.kube import Kube
from rollback_operator.locks import Gate, TargetLocks
from rollback_operator.model import FINISHED_LABEL, ended
from rollback_operator.runner import Runner

WORKER_THREADS = 32
# Connections to the API server kept open for reuse: each worker thread's call, Preflight's
# parallel reads, and a watch stream per run waiting on its rollouts or Jobs. Beyond this many
# at once, a call opens a connection of its own (a TLS handshake on both sides) and drops it.
CONNECTIONS_KEPT = 4 * WORKER_THREADS


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # the runner posts its own, meaningful Events
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.watching.reconnect_backoff = 1
    watch_only_unfinished(settings)
    settings.execution.max_workers = WORKER_THREADS
    # Steps call the synchronous Kubernetes client from threads: enough of them that one
    # request's calls never wait for another's.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(WORKER_THREADS))
    memo.kube = Kube.from_environment(pool_size=CONNECTIONS_KEPT)


def watch_only_unfinished(settings: kopf.OperatorSettings) -> None:
    """Server-side: the API server lists and sends only requests not labelled finished (see
    mark_finished), so the history kept in the cluster is never read into memory."""
    settings.watching.label_selectors[GROUP, PLURAL] = f"!{FINISHED_LABEL}"


# Async although it does no I/O: Kopf runs a sync handler in a worker thread, and at startup it
# is called for every request listed; inline, it costs no thread hop and no GIL contention.
@kopf.index(GROUP, VERSION, PLURAL)
async def rollback_claims(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    **_: Any,
) -> dict[queue.ClaimKey, queue.Claim]:
    return queue.claims(
        namespace or "", name, spec, status, meta["creationTimestamp"], uid=meta["uid"]
    )


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    """Not yet terminal, or terminal and its end not yet announced (status.announced)."""
    return not ended(status)


# Kopf passes indices as extra keyword arguments, which its DaemonFn protocol does not declare.
@kopf.daemon(  # type: ignore[arg-type]
    GROUP, VERSION, PLURAL, id="rollback", when=_unfinished, backoff=2, cancellation_timeout=10
)
async def rollback(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    rollback_claims: kopf.Index[queue.ClaimKey, queue.Claim],
    **_: Any,
) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    me = queue.Claim(name=name, order=(meta["creationTimestamp"], name), started=False)
    spec = queue.parsed_spec(meta["uid"], body["spec"])
    keys = [(namespace, kind, target) for kind, target in queue.target_keys(spec)]
    locks = None if spec.dry_run else TargetLocks(memo.kube, namespace, name, meta["uid"])
    gate = Gate(me, keys, rollback_claims, locks)
    await Runner(memo.kube, body, spec, gate, logger).drive(stopped)


def _ended_unmarked(status: kopf.Status, labels: kopf.Labels, meta: kopf.Meta, **_: Any) -> bool:
    released = FINALIZER not in (meta.get("finalizers") or [])
    return ended(status) and released and FINISHED_LABEL not in labels


@kopf.on.event(GROUP, VERSION, PLURAL, id="finished", when=_ended_unmarked)
async def mark_finished(patch: kopf.Patch, **_: Any) -> None:
    """Labels a finished request, so that the watch's selector drops it.

    Only once Kopf has released the finalizer: Kopf sends a label (a merge patch) before a
    finalizer's removal (a JSON patch), and the label takes the request out of the watch, so in
    one cycle the finalizer could be left on a request the operator no longer sees. Nothing else
    is done to a finished request: with the label removed by hand it is seen again and only
    labelled again, never run again. Async, so that no thread hop is spent on it.
    """
    patch.metadata.labels[FINISHED_LABEL] = "true"
