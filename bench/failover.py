"""Benchmark 4: failover. Ten requests in flight, the leading instance SIGKILLed: how long until
another instance drives them again, and how they end.

Two setups, in the same run, each with ten requests whose rollouts are slowed down so that they
are all in flight (RevertWorkloads waiting) when the leader dies:
- **standby**: a second instance stands by (another pod of the Deployment); it must wait for the
  leader's Lease to expire (10 s unrenewed) before it leads;
- **restart in place** (the baseline): no standby; the same pod's container is started again at
  once, as a kubelet does, and leads at once (the Lease names the pod).

"Resumed" is the first status write of each request once the next leader holds the Lease: the
moment its run is driven again. Figures: the time from the kill to the new leader holding the
Lease, and to each request resumed (median, max); every request's end phase.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api import JSON, Api, request_path
from bench.app import TERMINAL_PHASES, bench_namespaces, cleanup, create_apps, rollback_request
from bench.identity import bench_identity
from bench.measure import machine, summary, write_result
from bench.process import OperatorProcess
from bench.watch import Watcher, request_state
from rollback_operator import GROUP, PLURAL, VERSION

LEASE = "rollback-operator-leader"
REQUESTS = 10
SLOW_SECONDS = 20  # minReadySeconds of the reverted Deployments: the runs stay in flight


def _state(obj: JSON) -> JSON:
    return {**request_state(obj), "namespace": obj["metadata"]["namespace"]}


def _holder(api: Api, ns: str) -> str | None:
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEASE}") or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def _slow_down(api: Api, namespaces: list[str]) -> None:
    for ns in namespaces:
        for name in ("backend", "frontend"):
            api.patch(
                f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                {"spec": {"minReadySeconds": SLOW_SECONDS, "progressDeadlineSeconds": 900}},
            )


def _wait(what: str, check: Any, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic()


def failover(api: Api, kubeconfig: Path, namespaces: list[str], logs: Path, standby: bool) -> JSON:
    """One setup: ten requests in flight, the leader killed, the next leader timed."""
    lease_ns = namespaces[0]
    label = "standby" if standby else "restart"
    leader = OperatorProcess(kubeconfig, namespaces, logs / f"failover-{label}-a.log", "pod-a")
    other = OperatorProcess(
        kubeconfig, namespaces, logs / f"failover-{label}-b.log", "pod-b" if standby else "pod-a"
    )
    leader.start()
    try:
        _wait("the first leader", lambda: _holder(api, lease_ns) == "pod-a", 60)
        if standby:
            other.start()
            time.sleep(2)  # the standby has seen the Lease held before the kill
        with Watcher(api, f"/apis/{GROUP}/{VERSION}/{PLURAL}", keep=_state) as requests:
            for ns in namespaces:
                api.create(request_path(ns), rollback_request(ns))

            def in_flight() -> bool:
                latest: dict[str, JSON] = {}
                for e in requests.events:
                    if e.object:
                        latest[e.object.get("namespace", "")] = e.object
                return sum(
                    1 for s in latest.values() if s["steps"].get("RevertWorkloads") == "Running"
                ) >= len(namespaces)

            _wait("every request in flight", in_flight, 120)
            killed = time.monotonic()
            count_before = len(requests.events)
            leader.kill()
            if not standby:
                other.start()
            new_holder = "pod-b" if standby else "pod-a"
            led = _wait("the next leader", lambda: _holder(api, lease_ns) == new_holder, 60)
            resumed: dict[str, float] = {}

            def all_resumed() -> bool:
                # Driven again: a write that arrived once the next leader held the Lease (a
                # write of the killed leader may still arrive after the kill).
                for e in requests.events[count_before:]:
                    ns = (e.object or {}).get("namespace", "")
                    if e.type == "MODIFIED" and ns and ns not in resumed and e.at >= led:
                        resumed[ns] = e.at
                return len(resumed) >= len(namespaces)

            _wait("every request resumed", all_resumed, 120)

            def ended() -> bool:
                phases: dict[str, str] = {}
                for e in requests.events:
                    if e.object:
                        phases[e.object.get("namespace", "")] = e.object["phase"]
                return all(phases.get(ns) in TERMINAL_PHASES for ns in namespaces)

            _wait("every request ended", ended, 600)
            phases: dict[str, str] = {}
            for e in requests.events:
                if e.object:
                    phases[e.object.get("namespace", "")] = e.object["phase"]
    finally:
        other.stop()
        leader.stop()
    seconds = [round(at - killed, 2) for at in resumed.values()]
    return {
        "setup": label,
        "lease_taken_s": round(led - killed, 2),
        "resumed_s": summary(seconds),
        "phases": sorted(phases.get(ns, "?") for ns in namespaces),
    }


TITLE = "## Failover"


def section(result: JSON, command: str) -> str:
    """BENCHMARKS.md's failover section, from a result."""
    names = {"standby": "standby (2 replicas)", "restart": "restart in place (baseline)"}
    rows = []
    for setup in result["setups"]:
        resumed = setup["resumed_s"]
        ended = ", ".join(f"{n} {p}" for p, n in _counts(setup["phases"]).items())
        rows.append(
            f"| {names[setup['setup']]} | {setup['lease_taken_s']} s | {resumed['median']} s "
            f"| {resumed['max']} s | {ended} |"
        )
    m = result["machine"]
    load = " / ".join(f"{x:.2f}" for x in m["loadavg"])
    return "\n".join(
        [
            "",
            TITLE,
            "",
            f"`{command}`, {m['date']}, {m['nproc']} CPUs, load average {load} at the start. "
            f"{REQUESTS} requests in flight (RevertWorkloads waiting on slowed rollouts), the "
            "leading instance SIGKILLed. Resumed: the first status write of each request "
            "once the next leader holds the Lease, timed from the kill. Target: the standby "
            "resumes them within 15 s.",
            "",
            "| setup | new leader holds the Lease | resumed, median | resumed, max | ended |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "The baseline is the same pod's container started again at once (the Lease names "
            "the pod, so it leads at once): what a standby adds is the Lease's 10 s expiry.",
            "",
        ]
    )


def _counts(phases: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def write_section(path: Path, text: str) -> None:
    """Replaces the failover section of `path` (or appends it), leaving the rest as it is."""
    page = path.read_text() if path.exists() else ""
    at = page.find("\n" + TITLE + "\n")
    if at >= 0:
        rest = page.find("\n## ", at + len(TITLE) + 2)
        page = page[:at] + (page[rest:] if rest >= 0 else "")
    path.write_text(page.rstrip("\n") + "\n" + text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="failover: standby vs restart in place")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--markdown", type=Path, help="write its section into this page")
    parser.add_argument("--command", default="make bench")
    args = parser.parse_args(argv)
    api = Api.from_kubeconfig()
    result: JSON = {"benchmark": "failover", "machine": machine(), "setups": []}
    with bench_identity(api) as kubeconfig:
        for standby in (True, False):
            namespaces = bench_namespaces("fo", REQUESTS)
            try:
                create_apps(api, namespaces)
                _slow_down(api, namespaces)
                setup = failover(api, kubeconfig, namespaces, args.logs, standby)
                result["setups"].append(setup)
                print(
                    f"  {setup['setup']:8}: Lease taken after {setup['lease_taken_s']} s, "
                    f"requests resumed after {setup['resumed_s']}, ended {setup['phases']}"
                )
            finally:
                cleanup(api, namespaces, None)
    write_result(args.out, result)
    if args.markdown:
        write_section(args.markdown, section(result, args.command))


if __name__ == "__main__":
    main()
