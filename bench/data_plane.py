"""Benchmark: the maintenance page where customers see it, through the local cluster's proxy
(Traefik, `cluster/up.sh --proxy`).

A client sends GET / through the proxy every 20 ms for the whole run (standins/data_plane.py's
Visitor; the sample's Services are served by the stand-ins there). Measured on this process's
monotonic clock: from just before the RollbackRequest's POST to the first maintenance page the
client gets, and the requests that failed (no answer, or a 5xx) across both switches, to the
maintenance page and back to the restored release (target: none).

The floor is the same Ingress patch sent by a plain script, observed the same way (from
issuing the PATCH to the first maintenance page through the proxy), then patched back: what
no orchestration can beat, and the proxy's own share of the figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kubernetes import config

from bench import plain_rollback
from bench.api import ADMIN_KUBECONFIG, JSON, Api, ingress_path, request_path
from bench.app import TERMINAL_PHASES, bench_namespaces, cleanup, create_apps, rollback_request
from bench.identity import bench_identity
from bench.measure import machine, summary, write_result
from bench.process import OperatorProcess
from rollback_operator.model import DEFAULT_TARGET_TAG
from standins.data_plane import MAINTENANCE, Proxy, Visitor, data_plane

BAD = "2026.01.10-golive"


def host_of(ns: str) -> str:
    return f"{ns}.lawyershub.example"


def give_to_proxy(api: Api, proxy: Proxy, ns: str) -> None:
    """The sample's Ingress served by the proxy (its IngressClass), under the run's own host."""
    ingress = api.get(ingress_path(ns, plain_rollback.INGRESS))
    assert ingress is not None
    rules = ingress["spec"]["rules"]
    for rule in rules:
        rule["host"] = host_of(ns)
    api.patch(
        ingress_path(ns, plain_rollback.INGRESS),
        {"spec": {"ingressClassName": proxy.ingress_class, "rules": rules}},
    )


def operator_run(api: Api, proxy: Proxy, ns: str) -> JSON:
    """One request, timed to the first maintenance page through the proxy; then the client
    goes on until the restored release is served."""
    with Visitor(proxy, host_of(ns), interval=0.02) as visitor:
        since = visitor.first(BAD).at
        start = time.monotonic()
        api.create(request_path(ns), rollback_request(ns))
        served = visitor.first(MAINTENANCE, after=start, timeout=60)
        deadline = time.monotonic() + 300
        phase = ""
        while phase not in TERMINAL_PHASES and time.monotonic() < deadline:
            time.sleep(0.2)
            request = api.get(request_path(ns, "golive-2026-01-10")) or {}
            phase = request.get("status", {}).get("phase", "")
        back = visitor.first(DEFAULT_TARGET_TAG, after=served.at, timeout=60)
        visitor.first(DEFAULT_TARGET_TAG, after=back.at + 0.3)
    return {
        "ms": round((served.at - start) * 1000, 1),
        "phase": phase,
        "requests": len(visitor.answers),
        "failed": len(visitor.failures(since)),
        "phases": visitor.phases(since),
    }


def baseline_run(api: Api, proxy: Proxy, ns: str) -> JSON:
    """The same Ingress patch, sent directly, observed the same way; then patched back."""
    ingress = api.get(ingress_path(ns, plain_rollback.INGRESS))
    assert ingress is not None
    with Visitor(proxy, host_of(ns), interval=0.02) as visitor:
        since = visitor.first(DEFAULT_TARGET_TAG).at
        start = time.monotonic()
        api.patch(
            ingress_path(ns, plain_rollback.INGRESS), plain_rollback.maintenance_patch(ingress)
        )
        served = visitor.first(MAINTENANCE, after=start, timeout=60)
        api.patch(ingress_path(ns, plain_rollback.INGRESS), plain_rollback.restore_patch(ingress))
        back = visitor.first(DEFAULT_TARGET_TAG, after=served.at, timeout=60)
        visitor.first(DEFAULT_TARGET_TAG, after=back.at + 0.3)
    return {
        "ms": round((served.at - start) * 1000, 1),
        "requests": len(visitor.answers),
        "failed": len(visitor.failures(since)),
        "phases": visitor.phases(since),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time to the maintenance page, through a proxy")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    api = Api.from_kubeconfig()
    proxy = Proxy.of_cluster(str(ADMIN_KUBECONFIG))
    kube = config.new_client_from_config(config_file=str(ADMIN_KUBECONFIG))
    namespaces = bench_namespaces("proxy", args.runs)
    result: JSON = {"benchmark": "data_plane", "machine": machine(), "runs": []}
    print(f"maintenance page through the proxy: {args.runs} runs, {proxy.url}")
    try:
        create_apps(api, namespaces)
        with bench_identity(api) as kubeconfig:
            operator = OperatorProcess(kubeconfig, namespaces, args.logs / "operator-proxy.log")
            try:
                operator.start()
                result["operator_code"] = operator.code
                operator.wait_idle(api)
                for i, ns in enumerate(namespaces):
                    with data_plane(kube, ns):
                        give_to_proxy(api, proxy, ns)  # once its Services are the stand-ins'
                        run = operator_run(api, proxy, ns)
                        operator.wait_idle(api, quiet=1.0)
                        run["baseline"] = baseline_run(api, proxy, ns)
                    result["runs"].append(run)
                    print(
                        f"  run {i + 1:2d}: operator {run['ms']:7.1f} ms ({run['phase']}, "
                        f"{run['failed']}/{run['requests']} failed), plain patch "
                        f"{run['baseline']['ms']:6.1f} ms "
                        f"({run['baseline']['failed']}/{run['baseline']['requests']} failed)"
                    )
            finally:
                cleanup(api, namespaces, operator)
    finally:
        cleanup(api, namespaces, None)
        kube.close()
    runs = result["runs"]
    result["operator"] = summary([r["ms"] for r in runs])
    result["baseline"] = summary([r["baseline"]["ms"] for r in runs])
    result["failed"] = {
        "operator": sum(r["failed"] for r in runs),
        "operator_requests": sum(r["requests"] for r in runs),
        "baseline": sum(r["baseline"]["failed"] for r in runs),
        "baseline_requests": sum(r["baseline"]["requests"] for r in runs),
    }
    result["expected_phases"] = sum(
        1 for r in runs if r["phases"] == [BAD, MAINTENANCE, DEFAULT_TARGET_TAG]
    )
    result["succeeded"] = sum(1 for r in runs if r["phase"] == "Succeeded")
    write_result(args.out, result)
    print(
        f"maintenance page through the proxy: operator median {result['operator']['median']:.1f}"
        f" ms, p95 {result['operator']['p95']:.1f} ms; plain patch median "
        f"{result['baseline']['median']:.1f} ms; failed requests: "
        f"{result['failed']['operator']} (operator), {result['failed']['baseline']} (plain)"
    )


if __name__ == "__main__":
    main()
