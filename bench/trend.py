"""Each headline figure against the one the previous BENCHMARKS.md printed: "was X" beside it.

The previous page's figures are kept in bench/previous.json (committed with the page they come
from): `bench/report.py --previous` reads them, and `--record` writes this run's in their place
once the page is written, so the next run compares with this one. Figures are read from the
results by `figures`, under stable keys; a key the previous page did not have shows no trend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bench.api import JSON

PREVIOUS = Path(__file__).with_name("previous.json")


def load(path: Path | None) -> JSON:
    """{"source": what page they come from, "figures": {key: value}}, or nothing."""
    if path is None or not path.exists():
        return {"source": "", "figures": {}}
    loaded: JSON = json.loads(path.read_text())
    return loaded


def record(path: Path, source: str, current: dict[str, float]) -> None:
    path.write_text(json.dumps({"source": source, "figures": current}, indent=2) + "\n")


def was(previous: JSON, key: str, show: Callable[[float], str]) -> str:
    """The text ` (was X)` when the previous page had the figure, else nothing."""
    value = previous.get("figures", {}).get(key)
    return "" if value is None else f" (was {show(value)})"


def comparable(previous: JSON, size_key: str, size: float) -> JSON:
    """The previous figures if they were measured at the same size (BENCH_SCALE, ...), else
    none: 100 at once and 20 at once are not a trend."""
    figures = previous.get("figures", {})
    if figures.get(size_key, size) != size:
        return {"source": previous.get("source", ""), "figures": {}}
    return previous


def _side(out: dict[str, float], prefix: str, side: JSON | None) -> None:
    if side:
        for key in ("ready_s", "first_action_s", "idle_rss_mib", "idle_beyond_watches_per_min"):
            if key in side:
                out[f"{prefix}_{key}"] = side[key]


def figures(
    ttm: JSON | None, full: JSON | None, scale: JSON | None, history: JSON | None
) -> dict[str, float]:
    """The headline figures of one run, under the keys the trend compares."""
    out: dict[str, float] = {}
    if ttm:
        out["ttm_median_ms"] = ttm["operator"]["median"]
        out["ttm_p95_ms"] = ttm["operator"]["p95"]
        if "idle_rss_mib" in ttm:
            out["ttm_idle_rss_mib"] = ttm["idle_rss_mib"]
    if full:
        out["full_wall_s"] = full["operator"]["wall_s"]
        out["full_client"] = full["operator"]["client"]
        out["full_objects_net"] = full["operator"]["objects_net"]
    if scale:
        n = scale["n"]
        out["scale_n"] = n
        out["scale_peak_rss_mib"] = scale["peak_rss_mib"]
        out["scale_idle_rss_mib"] = scale["idle_rss_mib"]
        out["scale_ttm_median_ms"] = scale["time_to_maintenance_ms"]["median"]
        out["scale_ttm_p95_ms"] = scale["time_to_maintenance_ms"]["p95"]
        out["scale_wall_s"] = scale["wall_s"]
        cpu = scale.get("cpu_s", {})
        if "kube-apiserver" in cpu:
            out["scale_apiserver_cpu_per_rollback_s"] = round(cpu["kube-apiserver"] / n, 3)
        if "operator" in cpu:
            out["scale_operator_cpu_s"] = cpu["operator"]
        floor = scale.get("floor")
        if floor:
            out["floor_ttm_p95_ms"] = floor["time_to_maintenance_ms"]["p95"]
            out["floor_wall_s"] = floor["wall_s"]
            api_cpu = floor.get("cpu_s", {}).get("kube-apiserver")
            if api_cpu is not None:
                out["floor_apiserver_cpu_per_rollback_s"] = round(api_cpu / floor["n"], 3)
    if history:
        out["history_finished"] = history["finished"]
        _side(out, "history", history["sides"].get("restart"))
        _side(out, "history_baseline", history["sides"].get("baseline"))
    return out
