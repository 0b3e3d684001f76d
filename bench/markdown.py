"""Markdown pieces of BENCHMARKS.md: figures in their units, verdicts against targets, tables."""

from __future__ import annotations

from typing import Any


def ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def verdict(value: float, limit: float, show: Any = str) -> str:
    """Met, or missed with by how much, in the figure's own unit and as a ratio."""
    if value <= limit:
        return f"**met** ({show(limit - value)} to spare)"
    return f"**missed** by {show(value - limit)} ({value / limit:.1f}x the limit)"


def ratio_verdict(value: float, floor: float, limit: float) -> str:
    ratio = value / floor if floor else float("inf")
    if ratio <= limit:
        return f"**met**: {ratio:.1f}x"
    return f"**missed**: {ratio:.1f}x, {ratio / limit:.1f}x over the {limit:g}x limit"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines
