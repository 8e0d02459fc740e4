"""The dashboard's charts, drawn with :mod:`smallfleet.report.svg` (server-side SVG, no scripts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from smallfleet.report.svg import bar_chart, donut_chart, line_chart

if TYPE_CHECKING:
    from smallfleet.dashboard.queries import Overview

__all__ = ["agreement_chart", "cluster_share_chart", "overview_charts"]

_WIDE = 620


def _labels(buckets: Sequence[float], width_s: float, every: int) -> list[str]:
    """Bucket start times as axis labels, one in ``every`` shown (the rest blank so they do not overlap)."""
    fmt = "%H:%M" if width_s < 86400 else "%m-%d"
    out = []
    for i, t in enumerate(buckets):
        show = i % every == 0 or (i == len(buckets) - 1 and (len(buckets) - 1) % every > every // 2)
        out.append(dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt) if show else "")
    return out


def _x_axis(buckets: Sequence[float], now_ref: float) -> tuple[list[float], str, str]:
    """x values relative to the last bucket, in hours or days, with the axis format and label."""
    span = (buckets[-1] - buckets[0]) if len(buckets) > 1 else 3600.0
    unit, name = (3600.0, "h") if span <= 3 * 86400 else (86400.0, "d")
    return (
        [(t - now_ref) / unit for t in buckets],
        "{:.0f}" + name,
        ("hours" if name == "h" else "days") + " (0 = latest)",
    )


def overview_charts(ov: Overview) -> dict[str, str]:
    """SVG strings for the overview page, by name."""
    large, small = ov.series["large"], ov.series["small"]
    every = max(1, len(ov.buckets) // 12)
    cats = _labels(ov.buckets, ov.bucket_s, every)
    charts = {
        "calls": bar_chart(
            cats,
            {"large model": large.calls, "small models": small.calls},
            title="Calls",
            stacked=True,
            width=_WIDE,
        ),
        "tokens": bar_chart(
            cats,
            {"large model": large.tokens, "small models": small.tokens},
            title="Tokens",
            stacked=True,
            width=_WIDE,
        ),
        "cost": bar_chart(
            cats,
            {"large model": large.cost, "small models": small.cost},
            title="Cost (USD)",
            stacked=True,
            width=_WIDE,
        ),
        "share": donut_chart(
            {
                "large model": ov.totals["calls"] - ov.totals["small_calls"],
                "small models": ov.totals["small_calls"],
            },
            title="Share served small",
        ),
    }
    if ov.buckets:
        x, fmt, label = _x_axis(ov.buckets, ov.buckets[-1])
        charts["latency"] = line_chart(
            x,
            {
                "large p50": large.p50,
                "large p95": large.p95,
                "small p50": small.p50,
                "small p95": small.p95,
            },
            title="Latency p50 / p95",
            unit=" ms",
            x_format=fmt,
            x_label=label,
            width=_WIDE,
        )
    if ov.escalations:
        charts["escalations"] = bar_chart(
            [e["reason"] for e in ov.escalations],
            {"share of calls": [100.0 * e["rate"] for e in ov.escalations]},
            title="Escalations by reason",
            unit="%",
            width=420,
        )
    return charts


def cluster_share_chart(rows: Sequence[dict[str, Any]]) -> str:
    """Share of calls and of cost per task cluster of one flywheel run."""
    top = list(rows)[:12]
    names = [str(r["name"]) for r in top]
    calls = [100.0 * float((r.get("stats") or {}).get("share_calls") or 0.0) for r in top]
    cost = [100.0 * float((r.get("stats") or {}).get("share_cost") or 0.0) for r in top]
    return bar_chart(names, {"share of calls": calls, "share of cost": cost}, title="Task types", unit="%")


def agreement_chart(x: Sequence[float], series: dict[str, list[float | None]]) -> str:
    """Shadow and guard agreement with the large model over time, one line per route."""
    if not x or not series:
        return ""
    if len(x) == 1:  # one time bucket: a line would be a lone point
        names = list(series)
        return bar_chart(
            names,
            {"agreement": [100.0 * (series[n][0] or 0.0) for n in names]},
            title="Agreement with the large model",
            unit="%",
            width=420,
        )
    xs, fmt, label = _x_axis(x, x[-1])
    pct = {name: [None if v is None else 100.0 * v for v in vals] for name, vals in series.items()}
    return line_chart(
        xs, pct, title="Agreement with the large model", unit="%", x_format=fmt, x_label=label, y_max=100.0,
        width=_WIDE,
    )  # fmt: skip
