"""BENCHMARKS.md as bench/report.py writes it from results: the scale benchmark against its floor
(plain scripts at once), the history benchmark, and each figure's trend against the previous
page's."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from bench import report, trend

MACHINE = {
    "nproc": 2,
    "memory_gib": 23.5,
    "cpu": "Xeon",
    "kernel": "6.18",
    "python": "3.11.7",
    "loadavg": [0.5, 1.0, 1.5],
    "date": "2026-12-06 21:00 UTC",
}
CODE = {"commit": "abc1234", "changed": [], "sources_sha256": "0123456789ab"}


def summary(median: float, p95: float) -> dict[str, Any]:
    return {"n": 100, "min": median / 2, "median": median, "p95": p95, "max": p95 * 1.1}


def scale_result(*, p95: float = 3000.0, apiserver_cpu: float = 50.0) -> dict[str, Any]:
    return {
        "benchmark": "scale",
        "machine": MACHINE,
        "operator_code": CODE,
        "n": 100,
        "setup_s": 12.0,
        "startup_to_idle_s": 4.0,
        "created_in_s": 1.5,
        "idle_rss_mib": 100.0,
        "idle_hwm_mib": 100.0,
        "succeeded": 100,
        "phases": {"Succeeded": 100},
        "switched": 100,
        "wall_s": 60.0,
        "time_to_maintenance_ms": summary(2500.0, p95),
        "time_to_end_s": summary(55.0, 58.0),
        "peak_rss_mib": 140.0,
        "hwm_mib": 140.0,
        "operator_requests": 7000,
        "operator_requests_by_bucket": {"get deployments": 2000, "create events": 1700},
        "cpu_s": {
            "kube-apiserver": apiserver_cpu,
            "operator": 18.0,
            "etcd": 9.0,
            "bench client": 1.0,
        },
        "floor": {
            "n": 100,
            "wall_s": 20.0,
            "succeeded": 100,
            "errors": {},
            "switched": 100,
            "time_to_maintenance_ms": summary(1200.0, 2000.0),
            "client_requests": 3000,
            "cpu_s": {"kube-apiserver": 40.0, "etcd": 7.0, "bench client": 6.0},
        },
    }


def history_side(rss: float, ready: float, first: float, idle: float) -> dict[str, Any]:
    return {
        "ready_s": ready,
        "first_action_s": first,
        "startup_requests": {"list": 3, "watch": 3, "patch rollbackrequests": 2},
        "startup_cpu_s": 1.2,
        "idle_rss_mib": rss,
        "hwm_mib": rss,
        "idle_cpu_s": 0.05,
        "idle_window_s": 60.0,
        "idle_requests": {"leases": 60},
        "idle_beyond_watches_per_min": idle,
        "idle_watches_per_min": 0.0,
        "idle_lease_per_min": 60.0,
        "operator_code": CODE,
    }


def history_result(restart_rss: float = 76.0, restart_idle: float = 0.0) -> dict[str, Any]:
    first = history_side(120.0, 2.9, 9.5, 0.0)
    first["startup_requests"]["patch rollbackrequests"] = 1002
    return {
        "benchmark": "history",
        "machine": MACHINE,
        "operator_code": CODE,
        "finished": 1000,
        "namespaces": 10,
        "idle_s": 60,
        "create_s": 40.0,
        "history_labels": {"rollback.lawyershub.io/finished": "true"},
        "sides": {
            "baseline": history_side(75.0, 2.1, 2.2, 0.0),
            "first_start": first,
            "restart": history_side(restart_rss, 2.2, 2.3, restart_idle),
        },
    }


PREVIOUS = {
    "source": "BENCHMARKS.md of 2026-11-29 13:03 UTC (commit 258f464)",
    "figures": {"scale_n": 100, "scale_ttm_p95_ms": 5882, "scale_peak_rss_mib": 136.4},
}


def summary_line(page: str, start: str) -> str:
    return next(line for line in page.splitlines() if line.startswith(f"| {start}"))


def test_scale_is_read_against_plain_scripts_at_once_with_cpu_per_component() -> None:
    page = report.render(None, None, scale_result(), "make bench", "local", previous=PREVIOUS)
    p95 = summary_line(page, "time to maintenance p95, 100 at once")
    assert "3,000 ms (was 5,882 ms)" in p95
    assert "2,000 ms (100 plain scripts at once)" in p95
    assert "<= 2x" in p95 and "**met**: 1.5x" in p95
    cpu = summary_line(page, "kube-apiserver CPU-seconds per rollback, 100 at once")
    assert "0.50 s" in cpu and "0.40 s" in cpu and "**met**: 1.2x" in cpu
    assert "140.0 MiB (was 136.4 MiB)" in summary_line(page, "operator peak RSS")
    # The side-by-side table: every component on both sides, "-" where a side has none.
    assert "| CPU-seconds, kube-apiserver | 50 | 40 |" in page
    assert "| CPU-seconds, operator | 18 | - |" in page
    assert "| CPU-seconds, bench client | 1 | 6 |" in page
    assert "| time to maintenance, median / p95 / max | 2,500 ms / 3,000 ms" in page


def test_scale_targets_missed_say_by_how_much() -> None:
    page = report.render(
        None, None, scale_result(p95=9000.0, apiserver_cpu=80.0), "make bench", "local"
    )
    assert "**missed**: 4.5x, 2.2x over the 2x limit" in summary_line(
        page, "time to maintenance p95, 100 at once"
    )
    assert "**missed**: 2.0x, 1.3x over the 1.5x limit" in summary_line(
        page, "kube-apiserver CPU-seconds per rollback"
    )
    assert "(was" not in page  # no previous figures given


def test_a_trend_is_shown_only_against_the_same_size() -> None:
    smaller = scale_result()
    smaller["n"] = smaller["floor"]["n"] = 20
    page = report.render(None, None, smaller, "make bench", "local", previous=PREVIOUS)
    assert "(was" not in summary_line(page, "time to maintenance p95, 20 at once")


def test_results_without_a_floor_still_render_as_before() -> None:
    old = scale_result()
    del old["floor"]
    page = report.render(None, None, old, "make bench", "local")
    assert "plain scripts at once" not in page
    assert summary_line(page, "wall time, 100 at once")


def test_history_rows_and_section() -> None:
    page = report.render(None, None, None, "make bench", "local", history=history_result())
    assert "**met** (74.0 MiB to spare)" in summary_line(page, "operator idle RSS, 1,000")
    assert "75.0 MiB (none kept)" in summary_line(page, "operator idle RSS, 1,000")
    assert "**met**" in summary_line(page, "operator ready after start, 1,000")
    assert "**met**" in summary_line(page, "operator's requests when idle")
    assert "## 4. History: 1,000 finished requests kept" in page
    assert "| first action on a waiting request | 2.20 s | 9.50 s | 2.30 s |" in page
    assert "| ... of which patches of requests (labels, finalizers) | 2 | 1,002 | 2 |" in page
    assert "`rollback.lawyershub.io/finished`" in page


def test_history_targets_missed() -> None:
    page = report.render(
        None,
        None,
        None,
        "make bench",
        "local",
        history=history_result(restart_rss=180.0, restart_idle=4.0),
    )
    assert "**missed** by 30.0 MiB" in summary_line(page, "operator idle RSS, 1,000")
    assert "**missed**: 4/min" in summary_line(page, "operator's requests when idle")


def test_figures_are_recorded_and_read_back_as_the_next_runs_trend(tmp_path: Path) -> None:
    figures = trend.figures(None, None, scale_result(), history_result())
    assert figures["scale_apiserver_cpu_per_rollback_s"] == 0.5
    assert figures["floor_apiserver_cpu_per_rollback_s"] == 0.4
    assert figures["history_idle_rss_mib"] == 76.0
    assert figures["history_baseline_ready_s"] == 2.1
    path = tmp_path / "previous.json"
    trend.record(path, "BENCHMARKS.md of today", figures)
    again = trend.load(path)
    assert again["figures"] == json.loads(json.dumps(figures))
    later = history_result(restart_rss=80.0)
    page = report.render(None, None, None, "make bench", "local", history=later, previous=again)
    assert "80.0 MiB (was 76.0 MiB)" in summary_line(page, "operator idle RSS, 1,000")
    assert '"was" is the figure the previous page printed: BENCHMARKS.md of today.' in page


def test_the_committed_previous_figures_are_the_current_pages() -> None:
    """bench/previous.json holds what BENCHMARKS.md printed, each figure under its key."""
    previous = trend.load(trend.PREVIOUS)
    assert previous["source"]
    page = (Path(report.__file__).parents[1] / "BENCHMARKS.md").read_text()
    shown = copy.deepcopy(previous["figures"])
    assert f"{shown['scale_peak_rss_mib']} MiB" in page
    assert report.ms(shown["scale_ttm_p95_ms"]) in page
    assert report.ms(shown["ttm_median_ms"]) in page
