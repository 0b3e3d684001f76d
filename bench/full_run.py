"""Benchmark 2: what a whole rollback costs in time and API requests, against a plain script.

With kwok the rollouts are instant, so what is left of a run's wall time is orchestration: the
operator's status writes, Events, checks and waits. The plain script (`bench.plain_rollback`)
makes the runbook's calls in sequence and nothing else: that is the floor.

Requests are counted from the API server's own metrics, in three views:

- the client's own requests, exactly: the operator and the script run as an identity that
  only they use, matched by FlowSchemas of its own, one per kind of request, and
  `apiserver_flowcontrol_dispatched_requests_total` of those FlowSchemas counts them whatever
  else runs on the cluster. The targets are judged on this view first;
- `apiserver_request_total`, summed over every verb and resource, diffed over a window from
  just before the run to a few seconds after it (the controllers' and kwok's work for the
  rollouts is inside, on both sides). It counts every client, so an idle window of the same
  kind (nothing running, or the operator running idle) is measured right before each run and
  its rate, times the run's window, is subtracted: raw and net are both reported. A watch is
  counted there only when it ends, so the operator's long-lived watches, opened before the
  window, are not in it (the first view shows what the idle operator sends meanwhile);
- the same counter restricted to "object traffic" (GET, POST, PUT, PATCH of objects), which
  leaves out the namespace controller's LIST/DELETE sweeps and discovery: on a shared cluster
  those come in bursts of hundreds and drown a rollback's hundred-odd requests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import plain_rollback
from bench.api import JSON, Api, request_path
from bench.app import TERMINAL_PHASES, bench_namespaces, cleanup, create_apps, rollback_request
from bench.identity import bench_identity
from bench.measure import Usage, machine, scrape, write_result
from bench.process import OperatorProcess
from bench.watch import Watcher, request_state, step_timeline

SETTLE_SECONDS = 3.0  # after a run, for the controllers to finish the rollouts it started
# The idle window measured before each run: one whole period of the HPA controller (15 s),
# whose periodic syncs of every HPA on the cluster are the steadiest part of the background.
IDLE_SECONDS = 15.0


def idle_window(api: Api, seconds: float = IDLE_SECONDS) -> Usage:
    before = scrape(api)
    time.sleep(seconds)
    return scrape(api).since(before)


# The namespace controller's sweeps of terminating namespaces (LIST and DELETE of every
# resource type, discovery, namespace reads) are the bulk of a shared cluster's background and
# come in bursts. "Object traffic" leaves those verbs out: the reads and writes of objects that
# a rollback and its rollouts make (GET, POST, PUT, PATCH), far steadier between windows.
OBJECT_VERBS = ("GET", "POST", "PUT", "PATCH", "APPLY")
NOT_OBJECTS = ("api", "apis", "namespaces", "openapi/v2", "openapi/v3", "version", "/readyz")


def is_object_traffic(key: str) -> bool:
    verb, resource = key.split(" ", 1)
    return verb in OBJECT_VERBS and resource not in NOT_OBJECTS and not resource.startswith("/")


def net(usage: Usage, idle: Usage) -> JSON:
    """The run's counts, raw and with the idle rate over the same duration taken off."""
    scale = usage.seconds / idle.seconds

    def view(keep: Any) -> JSON:
        raw = sum(v for k, v in usage.requests.items() if keep(k))
        background = scale * sum(v for k, v in idle.requests.items() if keep(k))
        return {"raw": raw, "background": round(background, 1), "net": round(raw - background, 1)}

    idle_objects: dict[str, float] = {}
    for key, count in idle.requests.items():
        if is_object_traffic(key):
            idle_objects[key] = idle_objects.get(key, 0) + count * scale
    return {
        **usage.to_dict(),
        "idle_seconds": round(idle.seconds, 3),
        "idle_client": idle.client_total,
        "all": view(lambda k: True),
        "objects": view(is_object_traffic),
        "objects_net_by_request": {
            key: round(usage.requests.get(key, 0) - idle_objects.get(key, 0), 1)
            for key in sorted(set(usage.requests) | set(idle_objects))
            if is_object_traffic(key)
        },
    }


def script_run(api: Api, identity: Api, ns: str) -> JSON:
    idle = idle_window(api)
    before = scrape(api)
    start = time.monotonic()
    done = plain_rollback.run(identity, ns)
    wall = time.monotonic() - start
    time.sleep(SETTLE_SECONDS)
    usage = scrape(api).since(before)
    return {
        "wall_s": round(wall, 3),
        "script_requests": done.requests,
        "polls": done.polls,
        **net(usage, idle),
    }


def operator_run(api: Api, operator: OperatorProcess, ns: str) -> JSON:
    operator.wait_idle(api, quiet=1.0)
    idle = idle_window(api)
    with Watcher(api, request_path(ns), keep=request_state) as watch:
        before = scrape(api)
        start = time.monotonic()
        api.create(request_path(ns), rollback_request(ns))
        seen = watch.first(lambda e: e.object["phase"] in TERMINAL_PHASES, timeout=300)
        wall = seen.at - start
        time.sleep(SETTLE_SECONDS)
        usage = scrape(api).since(before)
    return {
        "wall_s": round(wall, 3),
        "phase": seen.object["phase"],
        "steps": step_timeline(watch.events, start),
        "status_writes_seen": sum(1 for e in watch.events if e.type == "MODIFIED"),
        **net(usage, idle),
    }


def medians(runs: list[JSON]) -> JSON:
    """Medians over the runs (min and max beside the headline figures)."""

    def med(values: Iterable[float]) -> float:
        return round(statistics.median(values), 3)

    def spread(key: str, values: list[float]) -> JSON:
        return {key: med(values), f"{key}_min": min(values), f"{key}_max": max(values)}

    buckets = sorted({b for r in runs for b in r["client"]})
    objects = sorted({k for r in runs for k in r["objects_net_by_request"]})
    out: JSON = {
        "n": len(runs),
        **spread("wall_s", [r["wall_s"] for r in runs]),
        **spread("client", [r["client_total"] for r in runs]),
        **spread("all_raw", [r["all"]["raw"] for r in runs]),
        **spread("all_net", [r["all"]["net"] for r in runs]),
        "all_background": med(r["all"]["background"] for r in runs),
        **spread("objects_raw", [r["objects"]["raw"] for r in runs]),
        **spread("objects_net", [r["objects"]["net"] for r in runs]),
        "objects_background": med(r["objects"]["background"] for r in runs),
        "idle_client": max(r["idle_client"] for r in runs),
        "client_by_bucket": {b: med(r["client"].get(b, 0) for r in runs) for b in buckets},
        "objects_net_by_request": {
            k: med(r["objects_net_by_request"].get(k, 0) for r in runs) for k in objects
        },
    }
    if all("steps" in r for r in runs):
        steps = [s for s in runs[0]["steps"] if all(s in r["steps"] for r in runs)]
        out["steps_ms"] = {
            s: [med(r["steps"][s][0] for r in runs), med(r["steps"][s][1] or 0 for r in runs)]
            for s in steps
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="full-run overhead, operator vs plain script")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    api = Api.from_kubeconfig()
    script_ns = bench_namespaces("full-plain", args.runs)
    operator_ns = bench_namespaces("full-op", args.runs)
    result: dict[str, Any] = {
        "benchmark": "full_run",
        "machine": machine(),
        "settle_s": SETTLE_SECONDS,
        "idle_s": IDLE_SECONDS,
        "script_runs": [],
        "operator_runs": [],
    }
    print(f"full run: {args.runs} plain-script runs, then {args.runs} operator runs")
    try:
        create_apps(api, script_ns + operator_ns)
        with bench_identity(api) as kubeconfig:
            identity = Api.from_kubeconfig(kubeconfig)
            time.sleep(SETTLE_SECONDS)
            for i, ns in enumerate(script_ns):
                run = script_run(api, identity, ns)
                result["script_runs"].append(run)
                print(
                    f"  script   {i + 1}: {run['wall_s']:.2f} s, {run['client_total']} own "
                    f"requests; object traffic {run['objects']['raw']} "
                    f"(net {run['objects']['net']:.0f}), all {run['all']['raw']} "
                    f"(net {run['all']['net']:.0f})"
                )
            # The script's namespaces go before the operator's runs: their HPAs would add to
            # the background of every window.
            cleanup(api, script_ns, None)
            operator = OperatorProcess(kubeconfig, operator_ns, args.logs / "operator-full.log")
            try:
                operator.start()
                result["operator_code"] = operator.code
                operator.wait_idle(api)
                result["idle_rss_mib"] = round(operator.memory_kib("VmRSS") / 1024, 1)
                for i, ns in enumerate(operator_ns):
                    run = operator_run(api, operator, ns)
                    result["operator_runs"].append(run)
                    print(
                        f"  operator {i + 1}: {run['wall_s']:.2f} s ({run['phase']}), "
                        f"{run['client_total']} own requests; object traffic "
                        f"{run['objects']['raw']} (net {run['objects']['net']:.0f}), all "
                        f"{run['all']['raw']} (net {run['all']['net']:.0f})"
                    )
            finally:
                cleanup(api, operator_ns, operator)
    finally:
        cleanup(api, script_ns + operator_ns, None)
    result["script"] = medians(result["script_runs"])
    result["operator"] = medians(result["operator_runs"])
    result["succeeded"] = sum(1 for r in result["operator_runs"] if r["phase"] == "Succeeded")
    write_result(args.out, result)
    s, o = result["script"], result["operator"]
    print(
        f"full run: operator {o['wall_s']:.2f} s, {o['client']:.0f} own requests "
        f"(object traffic net {o['objects_net']:.0f}); script {s['wall_s']:.2f} s, "
        f"{s['client']:.0f} own requests (object traffic net {s['objects_net']:.0f})"
    )


if __name__ == "__main__":
    main()
