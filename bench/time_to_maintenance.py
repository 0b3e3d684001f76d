"""Benchmark 1: how long after a RollbackRequest is created the site shows the maintenance page.

This is the figure an SRE feels at 3 a.m.: the users stop hitting the bad release only when the
Ingress points at the maintenance page. It is measured from just before the request's POST to
the moment a watch on the Ingress delivers the switched object, both on this process's
monotonic clock, so the figure includes the API server's watch fan-out on both ends, exactly as
any Ingress controller would see it.

The floor is the same Ingress patch sent directly by a plain script, measured the same way
(from issuing the PATCH to the watch seeing it): what no orchestration can beat.

Each run uses a fresh namespace with the sample application already rolled out; the operator
is already running (watching all of the run's namespaces) and idle when a run starts. Watches
on the request and on its Events also time the operator's milestones, so the report can say
where the time goes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import plain_rollback
from bench.api import JSON, Api, ingress_path, request_path
from bench.app import (
    TERMINAL_PHASES,
    bench_namespaces,
    cleanup,
    create_apps,
    in_maintenance,
    rollback_request,
)
from bench.identity import bench_identity
from bench.measure import machine, summary, write_result
from bench.process import OperatorProcess
from bench.watch import Seen, Watcher, request_state

# Milestones of a run, in the order they happen, read from the request's own status.
MILESTONES = (
    ("first write by the operator", lambda s: True),
    ("Preflight running", lambda s: s["steps"].get("Preflight") == "Running"),
    ("Preflight succeeded", lambda s: s["steps"].get("Preflight") == "Succeeded"),
    ("EnableMaintenance running", lambda s: s["steps"].get("EnableMaintenance") == "Running"),
)


def operator_event(obj: JSON) -> str | None:
    """The reason of an Event the operator posted, None for anyone else's (the HPA's)."""
    if obj.get("reportingComponent") == "rollback-operator" or (
        (obj.get("source") or {}).get("component") == "rollback-operator"
    ):
        return str(obj.get("reason"))
    return None


def operator_run(api: Api, ns: str) -> JSON:
    """One request, timed: to the Ingress switch, to each milestone, and to Succeeded."""
    with (
        Watcher(api, ingress_path(ns), keep=in_maintenance) as ingress,
        Watcher(api, request_path(ns), keep=request_state) as request,
        Watcher(api, f"/api/v1/namespaces/{ns}/events", keep=operator_event) as events,
    ):
        start = time.monotonic()
        api.create(request_path(ns), rollback_request(ns))
        switched = ingress.first(lambda e: bool(e.object), timeout=60).at
        done = request.first(lambda e: e.object["phase"] in TERMINAL_PHASES, timeout=300).object[
            "phase"
        ]
        finished = time.monotonic()
        time.sleep(0.5)  # the last Event follows the last status write

    def ms(at: float) -> float:
        return round((at - start) * 1000, 1)

    modified = [e for e in request.events if e.type == "MODIFIED"]
    milestones: dict[str, float] = {}
    for label, matches in MILESTONES:
        found = next((e for e in modified if matches(e.object)), None)
        if found is not None:
            milestones[label] = ms(found.at)
    posted = [e for e in events.events if e.type == "ADDED" and e.object]
    return {
        "ms": ms(switched),
        "phase": done,
        "full_run_ms": ms(finished),
        "milestones": milestones,
        "writes_before_switch": sum(1 for e in modified if e.at < switched),
        "events_before_switch": [e.object for e in posted if e.at < switched],
        "writes_total": len(modified),
        "events_total": len(posted),
    }


def baseline_run(api: Api, ns: str) -> float:
    """The same Ingress patch, sent directly; ms from issuing it to the watch seeing it."""
    ingress = api.get(ingress_path(ns, plain_rollback.INGRESS))
    assert ingress is not None and not in_maintenance(ingress)
    with Watcher(api, ingress_path(ns), keep=in_maintenance) as watch:
        start = time.monotonic()
        api.patch(
            ingress_path(ns, plain_rollback.INGRESS), plain_rollback.maintenance_patch(ingress)
        )
        seen: Seen = watch.first(lambda e: bool(e.object), timeout=60)
    api.patch(ingress_path(ns, plain_rollback.INGRESS), plain_rollback.restore_patch(ingress))
    return round((seen.at - start) * 1000, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time to maintenance, operator vs plain patch")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    api = Api.from_kubeconfig()
    namespaces = bench_namespaces("ttm", args.runs)
    result: JSON = {"benchmark": "time_to_maintenance", "machine": machine(), "runs": []}
    print(f"time to maintenance: {args.runs} runs, setting up {len(namespaces)} namespaces")
    try:
        create_apps(api, namespaces)
        with bench_identity(api) as kubeconfig:
            operator = OperatorProcess(kubeconfig, namespaces, args.logs / "operator-ttm.log")
            try:
                operator.start()
                result["operator_code"] = operator.code
                operator.wait_idle(api)
                result["idle_rss_mib"] = round(operator.memory_kib("VmRSS") / 1024, 1)
                for i, ns in enumerate(namespaces):
                    run: dict[str, Any] = operator_run(api, ns)
                    operator.wait_idle(api, quiet=1.0)
                    run["baseline_ms"] = baseline_run(api, ns)
                    result["runs"].append(run)
                    print(
                        f"  run {i + 1:2d}: operator {run['ms']:7.1f} ms ({run['phase']}, "
                        f"full run {run['full_run_ms'] / 1000:.2f} s), plain patch "
                        f"{run['baseline_ms']:6.1f} ms"
                    )
            finally:
                cleanup(api, namespaces, operator)
    finally:
        cleanup(api, namespaces, None)
    runs = result["runs"]
    result["operator"] = summary([r["ms"] for r in runs])
    result["baseline"] = summary([r["baseline_ms"] for r in runs])
    result["succeeded"] = sum(1 for r in runs if r["phase"] == "Succeeded")
    result["milestones"] = {
        label: statistics.median(r["milestones"][label] for r in runs if label in r["milestones"])
        for label, _ in MILESTONES
        if any(label in r["milestones"] for r in runs)
    }
    result["writes_before_switch"] = statistics.median(r["writes_before_switch"] for r in runs)
    result["events_before_switch"] = statistics.median(len(r["events_before_switch"]) for r in runs)
    write_result(args.out, result)
    print(
        f"time to maintenance: operator median {result['operator']['median']:.1f} ms, "
        f"p95 {result['operator']['p95']:.1f} ms; plain patch median "
        f"{result['baseline']['median']:.1f} ms"
    )


if __name__ == "__main__":
    main()
