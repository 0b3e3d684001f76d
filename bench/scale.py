"""Benchmark 3: a hundred rollbacks at once, in a hundred namespaces, against a hundred plain
scripts at once.

A bad release that spans many tenants ends in many requests at the same moment. Every request
must still end Succeeded, the site of each must still switch to maintenance quickly, and the
operator must not grow without bound: one Kopf daemon, one status ledger and one set of watch
buffers per request are what this loads.

What "quickly" can mean on a given machine is measured in the same run, on the same cluster:
the floor is the same number of plain scripts (`bench.plain_rollback`, the same calls) run at
once, each in a namespace of its own with the same sample application. The two sides run one
after the other, never together, and the first side's namespaces are gone before the second
side's are created. On both sides a cluster-wide watch on the benchmark's Ingresses times each
switch to maintenance (from a script's first call, or from just before a request's POST), and
the CPU time of every process of the local control plane, of the operator and of this client
is read from /proc before and after.

Operator side: all namespaces and applications are created and rolled out first; the operator
is started on them (`-n`, one per namespace) and left to go idle, and its idle memory is read.
Then the requests are created as fast as a pool of client threads allows; a cluster-wide watch
on the requests tells when each one ends. The operator's VmRSS is sampled every 50 ms and its
VmHWM (the kernel's own high-water mark) read at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench import plain_rollback
from bench.api import BENCH_LABEL, GROUP, JSON, PLURAL, VERSION, Api, request_path
from bench.app import (
    TERMINAL_PHASES,
    bench_namespaces,
    cleanup,
    create_apps,
    in_maintenance,
    rollback_request,
)
from bench.identity import bench_identity
from bench.measure import machine, scrape, summary, write_result
from bench.process import MemorySampler, OperatorProcess, cluster_pids, cpu_usage
from bench.watch import Seen, Watcher

CREATE_THREADS = 16
IDLE_SETTLE_SECONDS = 5.0
# This process: it creates the requests (or runs the scripts) and reads the watches.
CLIENT = "bench client"


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="100 requests in 100 namespaces at once")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for all to finish")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    api = Api.from_kubeconfig()
    script_ns = bench_namespaces("scale-plain", args.requests)
    namespaces = bench_namespaces("scale", args.requests)
    result: dict[str, Any] = {"benchmark": "scale", "machine": machine(), "n": args.requests}
    print(f"scale: {args.requests} plain scripts at once, then {args.requests} requests")
    try:
        with bench_identity(api) as kubeconfig:
            try:
                create_apps(api, script_ns)
                result["floor"] = scripts_at_once(api, kubeconfig, script_ns, args.timeout)
            finally:
                # Gone before the operator's side begins: the cluster is quiet between.
                cleanup(api, script_ns, None)
            floor = result["floor"]
            print(
                f"  floor: {floor['succeeded']}/{args.requests} scripts done in "
                f"{floor['wall_s']} s; time to maintenance p95 "
                f"{floor['time_to_maintenance_ms']['p95']:.0f} ms"
            )
            started = time.monotonic()
            create_apps(api, namespaces)
            result["setup_s"] = round(time.monotonic() - started, 1)
            operator = OperatorProcess(kubeconfig, namespaces, args.logs / "operator-scale.log")
            try:
                operator.start()
                result["operator_code"] = operator.code
                result["startup_to_idle_s"] = round(operator.wait_idle(api, quiet=3.0), 1)
                time.sleep(IDLE_SETTLE_SECONDS)
                result["idle_rss_mib"] = mib(operator.memory_kib("VmRSS"))
                result["idle_hwm_mib"] = mib(operator.memory_kib("VmHWM"))
                print(
                    f"  operator idle on {len(namespaces)} namespaces: VmRSS "
                    f"{result['idle_rss_mib']} MiB (high-water {result['idle_hwm_mib']} MiB)"
                )
                result.update(in_flight(api, operator, namespaces, args.timeout))
            finally:
                cleanup(api, namespaces, operator)
    finally:
        cleanup(api, script_ns + namespaces, None)
    write_result(args.out, result)
    print(
        f"scale: {result['succeeded']}/{args.requests} Succeeded in {result['wall_s']} s; "
        f"time to maintenance p95 {result['time_to_maintenance_ms']['p95']:.0f} ms; peak RSS "
        f"{result['peak_rss_mib']} MiB (idle {result['idle_rss_mib']} MiB)"
    )


def in_flight(
    api: Api, operator: OperatorProcess, namespaces: list[str], timeout: float
) -> dict[str, Any]:
    """Creates every request at once and follows them to the end."""
    selector = {"labelSelector": BENCH_LABEL}
    created: dict[str, float] = {}
    wanted = set(namespaces)

    def ns_and(value: Any) -> Any:
        return lambda obj: (obj["metadata"]["namespace"], value(obj))

    def all_done(events: list[Seen]) -> bool:
        ended = {e.object[0] for e in events if e.object[1] in TERMINAL_PHASES}
        return wanted <= ended

    def create(ns: str) -> None:
        created[ns] = time.monotonic()
        api.create(request_path(ns), rollback_request(ns))

    with (
        Watcher(
            api, "/apis/networking.k8s.io/v1/ingresses", selector, keep=ns_and(in_maintenance)
        ) as ingresses,
        Watcher(
            api,
            f"/apis/{GROUP}/{VERSION}/{PLURAL}",
            selector,
            keep=ns_and(lambda o: (o.get("status") or {}).get("phase")),
        ) as requests,
        MemorySampler(operator) as memory,
    ):
        pids = {"operator": operator.pid, CLIENT: os.getpid(), **cluster_pids()}
        cpu_before = cpu_usage(pids)
        before = scrape(api)
        first = time.monotonic()
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, namespaces))
        created_in = time.monotonic() - first
        print(f"  {len(namespaces)} requests created in {created_in:.2f} s")
        try:
            requests.wait(all_done, timeout)
        except TimeoutError:
            print(f"  not every request ended within {timeout:g} s")
        cpu_after = cpu_usage(pids)
        usage = scrape(api).since(before)
        hwm = operator.memory_kib("VmHWM")

    switched = first_switches(ingresses.events, created)
    phases: dict[str, str] = {}
    ended_at: dict[str, float] = {}
    for seen in requests.events:
        ns, phase = seen.object
        if phase:
            phases[ns] = phase
        if phase in TERMINAL_PHASES and ns not in ended_at:
            ended_at[ns] = seen.at
    last = max(ended_at.values(), default=time.monotonic())
    samples = [
        {"t_s": round(at - first, 2), "rss_mib": mib(kib)} for at, kib in memory.samples[::10]
    ]
    result: JSON = {
        "created_in_s": round(created_in, 2),
        "wall_s": round(last - first, 2),
        "succeeded": sum(1 for p in phases.values() if p == "Succeeded"),
        "phases": {p: sum(1 for q in phases.values() if q == p) for p in set(phases.values())},
        "switched": len(switched),
        "time_to_maintenance_ms": summary(list(switched.values())) if switched else {"p95": -1},
        "time_to_end_s": summary([ended_at[ns] - created[ns] for ns in ended_at]),
        "peak_rss_mib": mib(max(memory.peak_kib, hwm)),
        "peak_sampled_rss_mib": mib(memory.peak_kib),
        "hwm_mib": mib(hwm),
        "operator_requests": usage.client_total,
        "operator_requests_by_bucket": usage.client,
        "apiserver_requests_all": usage.total,
        "rss_samples": samples,
        "cpu_s": cpu_used(cpu_before, cpu_after),
        "watch_reconnects": ingresses.reconnects + requests.reconnects,
    }
    return result


def scripts_at_once(api: Api, kubeconfig: Path, namespaces: list[str], timeout: float) -> JSON:
    """The floor: one plain script per namespace, all at once (one thread each), timed and
    measured as the operator's side is."""
    identity = Api.from_kubeconfig(kubeconfig, pool_size=len(namespaces))
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    own: dict[str, int] = {}
    errors: dict[str, str] = {}

    def one(ns: str) -> None:
        started[ns] = time.monotonic()
        try:
            own[ns] = plain_rollback.run(identity, ns, timeout=timeout).requests
            ended[ns] = time.monotonic()
        except Exception as error:  # recorded: the floor is reported with its failures
            errors[ns] = f"{type(error).__name__}: {error}"[:300]

    ns_and = lambda obj: (obj["metadata"]["namespace"], in_maintenance(obj))  # noqa: E731
    with Watcher(
        api, "/apis/networking.k8s.io/v1/ingresses", {"labelSelector": BENCH_LABEL}, keep=ns_and
    ) as ingresses:
        pids = {CLIENT: os.getpid(), **cluster_pids()}
        cpu_before = cpu_usage(pids)
        before = scrape(api)
        first = time.monotonic()
        with ThreadPoolExecutor(len(namespaces)) as pool:
            list(pool.map(one, namespaces))
        last = max(ended.values(), default=time.monotonic())
        cpu_after = cpu_usage(pids)
        usage = scrape(api).since(before)
        # The last switch may still be on its way to the watch when its script has ended.
        with suppress(TimeoutError):
            ingresses.wait(
                lambda _: len(first_switches(ingresses.events, started)) >= len(ended), 30
            )
    switched = first_switches(ingresses.events, started)
    return {
        "n": len(namespaces),
        "threads": len(namespaces),
        "wall_s": round(last - first, 2),
        "succeeded": len(ended),
        "errors": errors,
        "switched": len(switched),
        "time_to_maintenance_ms": summary(list(switched.values())) if switched else {"p95": -1},
        "time_to_end_s": summary([ended[ns] - started[ns] for ns in ended]) if ended else {},
        "script_requests": sum(own.values()),
        "client_requests": usage.client_total,
        "client_requests_by_bucket": usage.client,
        "apiserver_requests_all": usage.total,
        "cpu_s": cpu_used(cpu_before, cpu_after),
        "watch_reconnects": ingresses.reconnects,
    }


def first_switches(events: list[Seen], since: dict[str, float]) -> dict[str, float]:
    """ms from each namespace's start to the first watch event with its Ingress on the
    maintenance page."""
    switched: dict[str, float] = {}
    for seen in events:
        ns, maintenance = seen.object
        if maintenance and ns in since and ns not in switched:
            switched[ns] = (seen.at - since[ns]) * 1000
    return switched


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 1) for name in after if name in before}


if __name__ == "__main__":
    main()
