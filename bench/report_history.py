"""BENCHMARKS.md's history section (bench/history.py's results): its summary rows and its
section, each figure beside the baseline of the same run (no finished request) and the
previous page's figure."""

from __future__ import annotations

from typing import Any

from bench import trend
from bench.api import JSON
from bench.markdown import seconds, table, verdict

# The targets the project set (the "Performance" issue).
HISTORY_RSS_MIB = 150.0
HISTORY_READY_S = 5.0
HISTORY_IDLE_PER_MIN = 0.0

SIDES = ("baseline", "first_start", "restart")


def mib(value: float) -> str:
    return f"{value:.1f} MiB"


def per_min(value: float) -> str:
    return f"{value:g}/min"


def zero_verdict(value: float) -> str:
    return "**met**" if value <= HISTORY_IDLE_PER_MIN else f"**missed**: {value:g}/min"


def summary_rows(h: JSON, previous: JSON) -> list[list[Any]]:
    """The summary's rows: the operator restarted on the history, against no history."""
    now, base = h["sides"]["restart"], h["sides"]["baseline"]
    n = f"{h['finished']:,}"
    return [
        [
            f"operator idle RSS, {n} finished requests kept",
            mib(now["idle_rss_mib"]) + trend.was(previous, "history_idle_rss_mib", mib),
            f"{mib(base['idle_rss_mib'])} (none kept)",
            f"<= {HISTORY_RSS_MIB:g} MiB",
            verdict(now["idle_rss_mib"], HISTORY_RSS_MIB, mib),
        ],
        [
            f"operator ready after start, {n} finished requests kept",
            seconds(now["ready_s"]) + trend.was(previous, "history_ready_s", seconds),
            f"{seconds(base['ready_s'])} (none kept)",
            f"<= {HISTORY_READY_S:g} s",
            verdict(now["ready_s"], HISTORY_READY_S, seconds),
        ],
        [
            f"operator's first action on a waiting request after start, {n} kept",
            seconds(now["first_action_s"]) + trend.was(previous, "history_first_action_s", seconds),
            f"{seconds(base['first_action_s'])} (none kept)",
            f"<= {HISTORY_READY_S:g} s",
            verdict(now["first_action_s"], HISTORY_READY_S, seconds),
        ],
        [
            f"operator's requests when idle, beyond watches and the Lease, {n} kept",
            per_min(now["idle_beyond_watches_per_min"])
            + trend.was(previous, "history_idle_beyond_watches_per_min", per_min),
            f"{per_min(base['idle_beyond_watches_per_min'])} (none kept)",
            "0/min",
            zero_verdict(now["idle_beyond_watches_per_min"]),
        ],
    ]


def _startup_total(side: JSON) -> int:
    return int(sum(side["startup_requests"].values()))


def render(h: JSON) -> list[str]:
    sides = [h["sides"][s] for s in SIDES if s in h["sides"]]
    n = f"{h['finished']:,}"

    def row(label: str, show: Any) -> list[Any]:
        return [label, *(show(side) for side in sides)]

    patched = [side["startup_requests"].get("patch rollbackrequests", 0) for side in sides]
    labels = h.get("history_labels") or {}
    marked = sorted(k for k in labels if not k.endswith("/bench"))
    out = [
        f"## 4. History: {n} finished requests kept",
        "",
        f"{n} finished requests (three Succeeded for one Failed, each with its ledger) were "
        "created directly with a finished status (the status subresource), spread over "
        f"{h['namespaces']} namespaces, in {h['create_s']:g} s, unlabelled, as an earlier "
        "version of the operator left them or a restore from a backup brings them back. The "
        "operator was started on those namespaces three times, one after the other: before "
        "they were created (the baseline), on them (its first start), and again (every start "
        "after: the history as the operator leaves it). Ready: from just before the process "
        "starts to its health endpoint (`/healthz`, what the probes ask) answering as the "
        "leader. First action: to its first write on a request created just before the start "
        "in a namespace with the sample application (Kopf runs no handler before it has "
        "indexed every request it lists). That request was then run to its end and deleted; "
        "idle memory was read once the operator had sent nothing for 3 s, and its requests "
        f"counted over {h['idle_s']:g} s after that.",
        "",
        *table(
            ["", "no history (baseline)", f"{n} kept, first start", f"{n} kept, restart"],
            [
                row("ready (health endpoint, as leader)", lambda s: seconds(s["ready_s"])),
                row("first action on a waiting request", lambda s: seconds(s["first_action_s"])),
                row("requests up to the first action", lambda s: f"{_startup_total(s):,}"),
                [
                    "... of which patches of requests (labels, finalizers)",
                    *(f"{p:,}" for p in patched),
                ],
                row("CPU-seconds up to the first action", lambda s: f"{s['startup_cpu_s']:g}"),
                row("idle RSS", lambda s: mib(s["idle_rss_mib"])),
                row("VmHWM (high-water mark)", lambda s: mib(s["hwm_mib"])),
                row(
                    "idle requests beyond watches and the Lease",
                    lambda s: per_min(s["idle_beyond_watches_per_min"]),
                ),
                row("idle: new watches", lambda s: per_min(s["idle_watches_per_min"])),
                row("idle: leader Lease renewals", lambda s: per_min(s["idle_lease_per_min"])),
                row(
                    "idle CPU-seconds", lambda s: f"{s['idle_cpu_s']:g} in {s['idle_window_s']:g} s"
                ),
            ],
        ),
        "",
    ]
    first, again = h["sides"].get("first_start"), h["sides"].get("restart")
    if first and again:
        text = (
            f"Up to its first action, the operator patched {patched[1]:,} requests on its first "
            f"start on the history and {patched[2]:,} on the restart ({patched[0]:,} with no "
            "history: the request waiting for it)."
        )
        if marked:
            text += (
                f" The history carries {', '.join(f'`{k}`' for k in marked)} after the first "
                "start: the operator's watch selects only requests without it (server-side), so "
                "from then on a finished request is neither listed nor held in memory."
            )
        text += (
            " The leader Lease is renewed every few seconds whatever the history (GET and "
            "update): it is counted apart from the target."
        )
        out += [text, ""]
    return out
