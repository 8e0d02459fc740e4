"""The flywheel's report: one self-contained HTML page (no CDN, no scripts) plus the same numbers as JSON.

:func:`render_report` takes the summary a flywheel run writes (``FlywheelRun.to_dict()``,
also stored in ``flywheel_runs.summary``) and draws:

- traffic, cost and latency by task cluster;
- for each cluster, its candidates' scores and coverage curves with the chosen threshold;
- the projected share of traffic served small, and cost and latency saved per month;
- where the summary has a ``replay`` (the demo's), what serving the held-out traffic through
  the routes measured, beside the projection;
- what curation dropped, and why.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

from smallfleet.report.svg import bar_chart, donut_chart, line_chart

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f9fafb;color:#111827}
header{background:#111827;color:#f9fafb;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#d1d5db;font-size:13px}
main{padding:16px 32px;max-width:1280px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 12px} h3{font-size:15px;margin:18px 0 8px}
.kpis{display:flex;flex-wrap:wrap;gap:12px}
.kpi{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px;background:#fff}
.kpi b{display:block;font-size:22px} .kpi span{color:#6b7280;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
.ok{color:#15803d;font-weight:600} .no{color:#b91c1c} .muted{color:#6b7280}
code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:,.4f}"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><b>{_e(value)}</b><span>{_e(label)}</span></div>'


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _traffic_section(s: dict[str, Any]) -> str:
    clusters = s.get("clusters", [])
    names = [_short(c["name"]) for c in clusters]
    noise = s.get("noise") or {}
    if noise.get("calls"):
        names.append("(unclustered)")
    calls = [c.get("size", 0) for c in clusters] + ([noise["calls"]] if noise.get("calls") else [])
    cost = [c.get("cost_usd") or 0.0 for c in clusters] + (
        [noise.get("cost_usd") or 0.0] if noise.get("calls") else []
    )
    lat = [c.get("latency_p50_ms") or 0.0 for c in clusters] + (
        [noise.get("latency_p50_ms") or 0.0] if noise.get("calls") else []
    )
    charts = [
        bar_chart(names, {"calls": calls}, title="Calls by task type"),
        bar_chart(names, {"cost": cost}, title="Cost by task type (USD)", unit="$"),
        bar_chart(names, {"p50 latency": lat}, title="Large-model latency p50 by task type (ms)"),
    ]
    rows = []
    for c in clusters:
        route = c.get("route") or {}
        status = c.get("status", "")
        cls = "ok" if status == "promoted" else "muted"
        rows.append(
            f"<tr><td>{_e(c['name'])}</td><td>{c.get('size', 0)}</td><td>{_pct(c.get('share_calls'))}</td>"
            f"<td>{_pct(c.get('share_cost'))}</td><td>{_e(c.get('shape', ''))}</td>"
            f"<td>{_ms(c.get('latency_p50_ms'))}</td><td class='{cls}'>{_e(status)}</td>"
            f"<td>{_e(route.get('name', '–'))} {_e(route.get('mode', ''))}</td></tr>"
        )
    table = (
        "<table><tr><th>task type</th><th>calls</th><th>share of calls</th><th>share of cost</th><th>output</th>"
        "<th>latency p50</th><th>outcome</th><th>route</th></tr>" + "".join(rows) + "</table>"
    )
    return f'<section id="traffic"><h2>Traffic by task type</h2><div class="charts">{"".join(charts)}</div>{table}</section>'


def _base_model(cand: dict[str, Any]) -> str:
    """The model a candidate was trained from: None means the specialist's default, the bundled encoder."""
    if cand.get("base_model"):
        return str(cand["base_model"])
    if cand.get("kind") == "generator":
        return "–"
    from smallfleet.encoders import DEFAULT_ENCODER_ID

    return DEFAULT_ENCODER_ID.rsplit("/", 1)[-1] + " (default)"


def _accuracy_floor(accuracies: list[float], target: float | None) -> float:
    """Where a coverage curve's accuracy axis starts: a round value at least 10 points below the
    target and the curve's bulk, at most 50%, so 90-100% gets most of the chart's height."""
    low = min([*accuracies, *([target - 0.1] if target else [])], default=0.0)
    return max(0.5, min(0.9, int(low * 20) / 20))


def _candidate_rows(c: dict[str, Any]) -> str:
    rows = []
    for cand in c.get("candidates", []):
        test = cand.get("test") or {}
        promoted = cand.get("promoted")
        thr = cand.get("threshold")
        thr_txt = "–" if thr is None else f"{thr:.3f}"
        rows.append(
            f"<tr><td>{_e(cand.get('kind'))}</td><td>{_e(_base_model(cand))}</td>"
            f"<td>{_pct(test.get('accuracy'))}</td><td>{thr_txt}</td>"
            f"<td>{_pct(test.get('kept_accuracy'))}</td><td>{_pct(test.get('coverage'))}</td>"
            f"<td>{_ms(cand.get('latency_p50_ms'))}</td><td>{cand.get('train_seconds', 0):.1f} s</td>"
            f"<td class='{'ok' if promoted else 'no'}'>{'promoted' if promoted else _e(cand.get('reason') or 'not promoted')}</td></tr>"
        )
    return (
        "<table><tr><th>candidate</th><th>base model</th><th>accuracy (all answers)</th><th>threshold</th>"
        "<th>accuracy kept</th><th>coverage</th><th>latency p50</th><th>training</th><th>outcome</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _clusters_section(s: dict[str, Any]) -> str:
    parts = []
    target = (s.get("params") or {}).get("target_accuracy")
    for c in s.get("clusters", []):
        cands = c.get("candidates") or []
        if not cands:
            continue
        charts = [
            bar_chart(
                [cand["kind"] for cand in cands],
                {
                    "accuracy (all)": [(cand.get("test") or {}).get("accuracy") or 0 for cand in cands],
                    "accuracy kept": [(cand.get("test") or {}).get("kept_accuracy") or 0 for cand in cands],
                    "coverage": [(cand.get("test") or {}).get("coverage") or 0 for cand in cands],
                },
                title="Candidates on the test split",
                unit="share",
                width=420,
            )
        ]
        for cand in cands:
            curve = cand.get("curve") or []
            if not curve:
                continue
            xs = [p["coverage"] for p in curve]
            ys: dict[str, list[float | None]] = {"accuracy of kept answers": [p["accuracy"] for p in curve]}
            if target:
                ys[f"target {target:.0%}"] = [target for _ in curve]
            markers = {}
            test = cand.get("test") or {}
            if cand.get("threshold") is not None and test.get("coverage") is not None:
                markers[f"threshold {cand['threshold']:.2f}"] = (
                    test["coverage"],
                    test.get("kept_accuracy") or 0,
                )
            # the floor follows most of the curve: its tail at full coverage may run along the axis
            bulk = sorted(p["accuracy"] for p in curve if p.get("accuracy") is not None)
            charts.append(
                line_chart(
                    xs,
                    ys,
                    title=f"Coverage curve: {cand['kind']}",
                    x_label="coverage (share of answers kept)",
                    unit="share",
                    x_min=0.0,
                    x_max=1.0,
                    y_min=_accuracy_floor(bulk[len(bulk) // 4 :], target),
                    y_max=1.0,
                    markers=markers,
                )
            )
        parts.append(
            f"<h3>{_e(c['name'])} <span class='muted'>({c.get('size', 0)} calls, {_e(c.get('shape', ''))})</span></h3>"
            f"<div class='charts'>{''.join(charts)}</div>{_candidate_rows(c)}"
        )
    body = "".join(parts) or "<p class='muted'>No task type had enough examples to train a specialist.</p>"
    body += _why_not_promoted(s)
    return f'<section id="candidates"><h2>Specialists by task type</h2>{body}</section>'


def _why_not_promoted(s: dict[str, Any]) -> str:
    from smallfleet.report.outcomes import not_promoted_reasons, nothing_promoted_hint

    reasons = not_promoted_reasons(s)
    if not reasons:
        return ""
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{_e(why)}</td></tr>" for name, why in reasons)
    hint = nothing_promoted_hint(s)
    tip = f"<p><b>Nothing was promoted:</b> {_e(hint)}</p>" if hint else ""
    return f"<h3>Not promoted</h3>{tip}<table><tr><th>task type</th><th>why</th></tr>{rows}</table>"


def _projection_section(s: dict[str, Any]) -> str:
    p = s.get("projection") or {}
    if not p:
        return ""
    share = p.get("share_small") or 0.0
    charts = [
        donut_chart({"served small": share, "large model": 1 - share}, title="Projected share of calls"),
        bar_chart(
            ["before", "after"],
            {"USD per month": [p.get("monthly_cost_before") or 0, p.get("monthly_cost_after") or 0]},
            title="Projected cost per month",
            unit="$",
            width=320,
        ),
        bar_chart(
            ["before", "after"],
            {"ms": [p.get("latency_p50_before_ms") or 0, p.get("latency_p50_after_ms") or 0]},
            title="Median latency (ms)",
            width=320,
        ),
    ]
    kpis = "".join(
        [
            _kpi(_pct(share), "of calls served small"),
            _kpi(_usd(p.get("monthly_saved_usd")), "saved per month"),
            _kpi(_usd(p.get("monthly_cost_before")), "per month before"),
            _kpi(_usd(p.get("monthly_cost_after")), "per month after"),
            _kpi(_ms(p.get("latency_p50_before_ms")), "median latency before"),
            _kpi(_ms(p.get("latency_p50_after_ms")), "median latency after"),
        ]
    )
    note = (
        f"<p class='muted'>At the current volume of {p.get('monthly_calls', 0):,.0f} calls per month, "
        "if the promoted routes serve the share of their task types that their thresholds kept on the test split.</p>"
    )
    return f'<section id="projection"><h2>Projection</h2><div class="kpis">{kpis}</div>{note}<div class="charts">{"".join(charts)}</div></section>'


def _replay_section(s: dict[str, Any]) -> str:
    """What the demo measured by serving held-out traffic through the routes (its console headline)."""
    r = s.get("replay") or {}
    if not r:
        return ""
    before, after = r.get("cost_before_usd") or 0.0, r.get("cost_after_usd") or 0.0
    saved = 1 - after / before if before else 0.0
    lat_b, lat_a = r.get("latency_p50_before_ms"), r.get("latency_p50_after_ms")
    kpis = "".join(
        [
            _kpi(_pct(r.get("share_small")), f"of {r.get('calls', 0):,} replayed calls served small"),
            _kpi(_pct(r.get("agreement")), "agreement with the large model on those"),
            _kpi(f"{saved:.0%}", f"cost: {_usd(before)} → {_usd(after)}"),
            _kpi(_ms(lat_a), f"median latency (was {_ms(lat_b)})"),
        ]
    )
    stayed = ", ".join(f"{_e(k)} {v:,}" for k, v in sorted((r.get("escalations") or {}).items()))
    note = (
        "<p class='muted'>Measured, not projected: the newest held-out calls were sent through the "
        "router; the specialists answered theirs live on this CPU, and calls that stayed on the large "
        "model were answered from the recording." + (f" Stayed large: {stayed}." if stayed else "") + "</p>"
    )
    return f'<section id="replay"><h2>Replay</h2><div class="kpis">{kpis}</div>{note}</section>'


def _curation_section(s: dict[str, Any]) -> str:
    cur = s.get("curation") or {}
    dropped = cur.get("dropped") or {}
    splits = cur.get("splits") or {}
    chart = (
        bar_chart(list(dropped), {"dropped": list(dropped.values())}, title="Dropped in curation, by reason")
        if dropped
        else "<p class='muted'>Nothing was dropped.</p>"
    )
    split_txt = ", ".join(f"{k}: {v:,}" for k, v in splits.items())
    return (
        f'<section id="curation"><h2>Curation</h2><p>Kept {cur.get("kept", 0):,} of {cur.get("total", 0):,} calls '
        f"({_e(split_txt)}).</p>{chart}</section>"
    )


def render_report(summary: dict[str, Any]) -> str:
    """The HTML page for a flywheel run's summary."""
    s = summary
    when = dt.datetime.fromtimestamp(s.get("finished_at") or s.get("started_at") or 0, dt.UTC)
    traffic = s.get("traffic") or {}
    kpis = "".join(
        [
            _kpi(f"{traffic.get('calls', 0):,}", "calls analysed"),
            _kpi(_usd(traffic.get("cost_usd")), "their cost"),
            _kpi(str(len(s.get("clusters", []))), "task types found"),
            _kpi(
                str(sum(1 for c in s.get("clusters", []) if c.get("status") == "promoted")),
                "specialists promoted",
            ),
        ]
    )
    body = "".join(
        [
            f'<section id="summary"><h2>Summary</h2><div class="kpis">{kpis}</div></section>',
            _replay_section(s),
            _projection_section(s),
            _traffic_section(s),
            _clusters_section(s),
            _curation_section(s),
            f"<section id='data'><h2>Data</h2><p class='muted'>The same numbers as JSON: "
            f"<code>{_e(s.get('json_name', 'report.json'))}</code>, run <code>{_e(s.get('run_id', ''))}</code>.</p>"
            "</section>",
        ]
    )
    title = f"smallfleet report — {s.get('workload') or 'all workloads'}"
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>"
        f"<body><header><h1>{_e(title)}</h1><p>Flywheel run {_e(s.get('run_id', ''))}, "
        f"{when:%Y-%m-%d %H:%M} UTC</p></header><main>{body}</main></body></html>"
    )


def write_report(summary: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and the same numbers as JSON beside it; return both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    data = {**summary, "json_name": json_path.name}
    out.write_text(render_report(data))
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    return out, json_path
