"""Benchmark 4: history doesn't cost. A thousand finished requests kept in the cluster, against
none.

RollbackRequests are kept after they end: they are the record of what was done (the post-mortem
points at them, `kubectl rollback list` shows them). An operator that lists, watches and keeps
each of them in memory, or runs anything per object, gets slower to start and heavier with every
rollback ever made. This measures what they cost it, beside a baseline from the same run: the
same operator, on the same namespaces, with no finished request at all.

The finished requests are created directly with a finished status (POST, then the status
subresource), spread over the watched namespaces, unlabelled, as an earlier version of the
operator left them or as a restore from a backup brings them back. The operator is started three
times: on no history (the baseline), on the unlabelled history (its first start on it), and
again (every start after, the history as the operator leaves it). Each start is measured the
same way:

- ready: from just before the process starts to its health endpoint answering as the leader
  (what the Deployment's readiness and liveness probes ask, `/healthz`);
- first action: from the same moment to the operator's first write on a request waiting for it
  (created just before the start, in a namespace with the sample application): Kopf runs no
  handler before it has indexed every request it lists, so this is when it is ready to work;
- idle RSS, once that request has ended, has been deleted and the operator has gone idle;
- idle requests: the operator's own requests over an idle window (by FlowSchema, as the other
  benchmarks count them), apart from its watches and from the leader Lease's renewals.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.api import BENCH_LABEL, JSON, Api, request_path
from bench.app import (
    TERMINAL_PHASES,
    bench_namespaces,
    cleanup,
    create_apps,
    rollback_request,
)
from bench.identity import bench_identity
from bench.measure import LEASE_BUCKET, machine, scrape, write_result
from bench.process import OperatorProcess, cpu_seconds
from bench.watch import Watcher
from rollback_operator.model import STEP_ORDER

CREATE_THREADS = 16
IDLE_SETTLE_SECONDS = 5.0
POD_NAME = "rollback-bench-history"  # the same holder of the leader Lease at every start


def finished_status(index: int) -> JSON:
    """A finished, announced status, as the operator writes one: every 4th Failed."""
    failed = index % 4 == 3
    at = f"2026-{1 + index % 12:02d}-{1 + index % 28:02d}T10:{index % 60:02d}:00Z"
    steps = []
    for step in STEP_ORDER:
        state = "Skipped"
        if step == "Preflight":
            state = "Failed" if failed else "Succeeded"
        steps.append(
            {"name": str(step), "state": state, "startedAt": at, "finishedAt": at, "message": ""}
        )
    return {
        "phase": "Failed" if failed else "Succeeded",
        "message": "Preflight: the Ingress lawyershub is not there" if failed else "Rolled back",
        "startedAt": at,
        "finishedAt": at,
        "announced": True,
        "steps": steps,
    }


def create_history(api: Api, namespaces: list[str], count: int) -> float:
    """`count` finished requests spread over `namespaces`; returns the seconds taken."""

    def one(index: int) -> None:
        ns = namespaces[index % len(namespaces)]
        name = f"history-{index:05d}"
        api.create(request_path(ns), rollback_request(ns, name))
        api.patch(request_path(ns, name) + "/status", {"status": finished_status(index)})

    started = time.monotonic()
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def leading(url: str) -> bool:
    """The health endpoint answers as Kopf's (the leader), not as a standby's."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200 and "standby" not in json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False


def one_start(
    api: Api, kubeconfig: Path, namespaces: list[str], *, label: str, logs: Path, idle_s: float
) -> JSON:
    """Starts the operator, measures it as the module says, and stops it."""
    probe_ns = namespaces[0]
    probe = f"probe-{label}".replace("_", "-")
    url = f"http://127.0.0.1:{free_port()}/healthz"
    operator = OperatorProcess(
        kubeconfig, namespaces, logs / f"operator-history-{label}.log", POD_NAME, url
    )
    out: JSON = {}

    def acted(seen: Any) -> bool:
        finalizers, phase = seen.object
        return bool(finalizers or phase)

    keep = lambda o: (o["metadata"].get("finalizers"), (o.get("status") or {}).get("phase"))  # noqa: E731
    with Watcher(
        api, request_path(probe_ns), {"fieldSelector": f"metadata.name={probe}"}, keep
    ) as w:
        api.create(request_path(probe_ns), rollback_request(probe_ns, probe))
        before = scrape(api)
        start = time.monotonic()
        operator.start()
        try:
            deadline = start + 300
            while not leading(url):
                if not operator.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the operator never served {url}; see {operator.log}")
                time.sleep(0.05)
            out["ready_s"] = round(time.monotonic() - start, 2)
            out["first_action_s"] = round(w.first(acted, timeout=300).at - start, 2)
            # Up to its first action: listing, watching, the Lease, and whatever it does to
            # the history it lists (the probe's own run comes after).
            startup = scrape(api).since(before)
            out["startup_requests"] = startup.client
            out["startup_cpu_s"] = round(cpu_seconds(operator.pid), 2)
            w.first(lambda s: s.object[1] in TERMINAL_PHASES, timeout=300)
            out["probe_phase"] = w.events[-1].object[1]
            api.delete(request_path(probe_ns, probe))
            w.first(lambda s: s.type == "DELETED", timeout=120)
            operator.wait_idle(api, quiet=3.0)
            out["idle_after_s"] = round(time.monotonic() - start, 1)
            time.sleep(IDLE_SETTLE_SECONDS)
            out["idle_rss_mib"] = round(operator.memory_kib("VmRSS") / 1024, 1)
            out["hwm_mib"] = round(operator.memory_kib("VmHWM") / 1024, 1)
            cpu_before = cpu_seconds(operator.pid)
            quiet = scrape(api)
            time.sleep(idle_s)
            idle = scrape(api).since(quiet)
            out["idle_cpu_s"] = round(cpu_seconds(operator.pid) - cpu_before, 2)
        finally:
            operator.stop()
    minutes = idle.seconds / 60
    beyond = {b: v for b, v in idle.client.items() if b not in ("watch", LEASE_BUCKET)}
    out.update(
        {
            "operator_code": operator.code,
            "idle_window_s": round(idle.seconds, 1),
            "idle_requests": idle.client,
            "idle_beyond_watches_per_min": round(sum(beyond.values()) / minutes, 1),
            "idle_watches_per_min": round(idle.client.get("watch", 0) / minutes, 1),
            "idle_lease_per_min": round(idle.client.get(LEASE_BUCKET, 0) / minutes, 1),
        }
    )
    print(
        f"  {label}: ready {out['ready_s']} s, first action {out['first_action_s']} s, idle RSS "
        f"{out['idle_rss_mib']} MiB, {out['idle_beyond_watches_per_min']} requests/min idle "
        f"beyond watches and the Lease ({sum(startup.client.values())} while starting)"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="1,000 finished requests against none")
    parser.add_argument("--finished", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60, help="seconds of the idle window")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    api = Api.from_kubeconfig()
    namespaces = bench_namespaces("history", args.namespaces)
    result: JSON = {
        "benchmark": "history",
        "machine": machine(),
        "finished": args.finished,
        "namespaces": args.namespaces,
        "idle_s": args.idle,
        "sides": {},
    }
    print(f"history: {args.finished} finished requests in {args.namespaces} namespaces, or none")
    try:
        create_apps(api, namespaces[:1])  # the probe requests' application
        for ns in namespaces[1:]:
            api.create(
                "/api/v1/namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {BENCH_LABEL: "1"}},
                },
            )
        with bench_identity(api) as kubeconfig:
            sides = result["sides"]
            sides["baseline"] = one_start(
                api, kubeconfig, namespaces, label="baseline", logs=args.logs, idle_s=args.idle
            )
            result["create_s"] = round(create_history(api, namespaces, args.finished), 1)
            print(f"  {args.finished} finished requests created in {result['create_s']} s")
            for label in ("first_start", "restart"):
                sides[label] = one_start(
                    api, kubeconfig, namespaces, label=label, logs=args.logs, idle_s=args.idle
                )
            result["operator_code"] = sides["restart"]["operator_code"]
            # What the operator left on the history (its label, if it sets one).
            listed = api.get_query(request_path(namespaces[1]), {"limit": "1"}) or {}
            items = listed.get("items") or [{}]
            result["history_labels"] = items[0].get("metadata", {}).get("labels", {})
    finally:
        cleanup(api, namespaces, None)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
