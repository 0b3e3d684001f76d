"""What a benchmark measures and records: the API server's request counters (all requests, and
the bench identity's by bucket), the figures drawn from the timings, and what they were
measured on.

The operator and the plain script run as a dedicated ServiceAccount (bench/identity.py) that
FlowSchemas of its own match, one per bucket below. The API server's
`apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` then counts exactly that
client's requests, which separates them from the controllers, from kwok and from whatever else
uses the cluster meanwhile; `apiserver_request_total` gives the totals and the breakdown by
resource.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.api import BENCH_LABEL, GROUP, JSON, PLURAL, REPO_ROOT, Api

LEASE_BUCKET = "leases"
# Buckets of the bench identity's requests, each a FlowSchema: (bucket, verbs, group, resource).
# The API server evaluates FlowSchemas by precedence, so the first bucket that matches a request
# counts it; "watch" and "list" come first, "other" (discovery and the rest) last.
BUCKETS: tuple[tuple[str, str, str, str], ...] = (
    ("watch", "watch", "*", "*"),
    ("list", "list", "*", "*"),
    (f"get {PLURAL}", "get", GROUP, PLURAL),
    (f"patch {PLURAL}", "patch,update", GROUP, PLURAL),
    (f"patch {PLURAL}/status", "patch,update", GROUP, f"{PLURAL}/status"),
    ("create events", "create", "", "events"),
    ("create events", "create", "events.k8s.io", "events"),
    ("get ingresses", "get", "networking.k8s.io", "ingresses"),
    ("patch ingresses", "patch,update", "networking.k8s.io", "ingresses"),
    ("get services", "get", "", "services"),
    ("get deployments", "get", "apps", "deployments"),
    ("patch deployments", "patch,update", "apps", "deployments"),
    ("get horizontalpodautoscalers", "get", "autoscaling", "horizontalpodautoscalers"),
    ("patch horizontalpodautoscalers", "patch,update", "autoscaling", "horizontalpodautoscalers"),
    # The leader Lease (renewed every 2 s, busy or idle) and the targets' Leases: apart, so
    # that "idle" can mean no request beyond watches and the Lease.
    (LEASE_BUCKET, "get,create,update,patch,delete", "coordination.k8s.io", "leases"),
    ("other", "*", "*", "*"),
)
FLOW_PREFIX = "rollback-bench-"


def flow_schemas(ns: str, name: str) -> list[JSON]:
    """One FlowSchema per bucket, all matching only the bench ServiceAccount."""
    subject = {"kind": "ServiceAccount", "serviceAccount": {"namespace": ns, "name": name}}
    schemas = []
    for index, (bucket, verbs, group, resource) in enumerate(BUCKETS):
        rule: JSON = {
            "subjects": [subject],
            "resourceRules": [
                {
                    "verbs": verbs.split(","),
                    "apiGroups": [group],
                    "resources": [resource],
                    "clusterScope": True,
                    "namespaces": ["*"],
                }
            ],
        }
        if bucket == "other":
            rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        schemas.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {
                    "name": f"{FLOW_PREFIX}{index:02d}",
                    "labels": {BENCH_LABEL: "1"},
                    "annotations": {BENCH_LABEL + "-bucket": bucket},
                },
                "spec": {
                    "priorityLevelConfiguration": {"name": "exempt"},
                    "matchingPrecedence": 100 + index,
                    "rules": [rule],
                },
            }
        )
    return schemas


def beyond_lease(flows: dict[str, float]) -> float:
    """The bench identity's requests, leaving out the leader Lease's renewals."""
    return sum(v for bucket, v in flows.items() if bucket != LEASE_BUCKET)


def bucket_of(flow_schema: str) -> str | None:
    if not flow_schema.startswith(FLOW_PREFIX):
        return None
    return BUCKETS[int(flow_schema.removeprefix(FLOW_PREFIX))][0]


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    keys = set(after) | set(before)
    out = {k: int(after.get(k, 0) - before.get(k, 0)) for k in keys}
    return {k: v for k, v in sorted(out.items()) if v}


@dataclass
class Snapshot:
    """`apiserver_request_total` by "VERB resource[/subresource]", and the bench identity's
    requests by bucket (from `apiserver_flowcontrol_dispatched_requests_total`)."""

    at: float
    requests: dict[str, float]
    flows: dict[str, float]

    def since(self, before: Snapshot) -> Usage:
        return Usage(
            seconds=self.at - before.at,
            requests=_diff(self.requests, before.requests),
            client=_diff(self.flows, before.flows),
        )


@dataclass
class Usage:
    """What the API server served between two snapshots: all of it, and the bench client's."""

    seconds: float
    requests: dict[str, int]  # everything, by "VERB resource"
    client: dict[str, int]  # the bench identity (operator or plain script), by bucket

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def client_total(self) -> int:
        return sum(self.client.values())

    def by_resource(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for key, count in self.requests.items():
            out[key.split(" ", 1)[1]] += count
        return dict(out)

    def to_dict(self) -> JSON:
        return {
            "seconds": round(self.seconds, 3),
            "total": self.total,
            "client_total": self.client_total,
            "client": self.client,
            "requests": self.requests,
            "by_resource": dict(sorted(self.by_resource().items())),
        }


def scrape(api: Api) -> Snapshot:
    """One GET /metrics through the API server (what `kubectl get --raw /metrics` does).

    The scrapes themselves are left out: they are counted under GET /metrics, dropped here.
    """
    text = api.text("/metrics")
    at = time.monotonic()
    requests: Counter[str] = Counter()
    flows: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith(
            ("apiserver_request_total{", "apiserver_flowcontrol_dispatched_requests_total{")
        ):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        value = float(match["value"])
        if match["name"] == "apiserver_request_total":
            if labels.get("subresource") == "/metrics":
                continue
            resource = labels.get("resource") or labels.get("subresource") or "?"
            if labels.get("resource") and labels.get("subresource"):
                resource = f"{labels['resource']}/{labels['subresource']}"
            requests[f"{labels.get('verb', '?')} {resource}"] += int(value)
        else:
            bucket = bucket_of(labels.get("flow_schema", ""))
            if bucket is not None:
                flows[bucket] += int(value)
    return Snapshot(at=at, requests=dict(requests), flows=dict(flows))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: p95 of 20 values is the 19th smallest, an observed value."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> JSON:
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "max": max(values),
    }


def machine() -> JSON:
    """What the figures were measured on."""
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])  # type: ignore[index]
    model = ""
    with suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found[1].strip() if found else ""
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def operator_code() -> JSON:
    """Which operator code a benchmark ran: the commit, the files changed since, and a hash
    of the package's sources as they were when its operator process started (the tree may be
    edited while the benchmarks run; differing hashes show it)."""
    package = REPO_ROOT / "operator" / "rollback_operator"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.rstrip()  # not lstrip: `status --porcelain` starts with a column

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed": [
            line[3:] for line in git("status", "--porcelain", "--", "operator").splitlines()
        ],
        "sources_sha256": digest.hexdigest()[:12],
    }


def write_result(path: Path, result: JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
