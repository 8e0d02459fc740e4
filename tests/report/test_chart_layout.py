"""The report's charts, parsed as SVG: nothing drawn outside the viewBox, round ticks, a readable top.

Text is measured with a width estimate of 0.6 em per character (a little wider than
system-ui's average), and an ascent of 0.8 em and descent of 0.25 em.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from smallfleet.report.html import render_report
from smallfleet.report.svg import bar_chart, line_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def _rotate(points: list[tuple[float, float]], transform: str | None) -> list[tuple[float, float]]:
    if not transform:
        return points
    m = re.fullmatch(r"rotate\(([-\d.]+) ([-\d.]+) ([-\d.]+)\)", transform.strip())
    assert m, f"unexpected transform {transform!r}"
    a, cx, cy = (float(g) for g in m.groups())
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _extent(el: ET.Element, size: float) -> list[tuple[float, float]]:
    """The corners of what ``el`` draws."""
    tag = el.tag.removeprefix(NS)
    if tag == "text":
        x, y = float(el.get("x", 0)), float(el.get("y", 0))
        width = len(el.text or "") * 0.6 * size
        start = {"start": x, "middle": x - width / 2, "end": x - width}[el.get("text-anchor", "start")]
        box = [(start, y - 0.8 * size), (start + width, y - 0.8 * size)]
        box += [(start, y + 0.25 * size), (start + width, y + 0.25 * size)]
        return _rotate(box, el.get("transform"))
    if tag == "rect":
        x, y = float(el.get("x", 0)), float(el.get("y", 0))
        return [(x, y), (x + float(el.get("width", 0)), y + float(el.get("height", 0)))]
    if tag == "circle":
        cx, cy, r = (float(el.get(k, 0)) for k in ("cx", "cy", "r"))
        return [(cx - r, cy - r), (cx + r, cy + r)]
    if tag == "line":
        return [
            (float(el.get("x1", 0)), float(el.get("y1", 0))),
            (float(el.get("x2", 0)), float(el.get("y2", 0))),
        ]
    if tag == "path":
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", el.get("d", ""))]
        return list(zip(nums[::2], nums[1::2], strict=False))
    return []


def outside(svg: str) -> list[str]:
    """What an SVG draws outside its viewBox (empty when nothing is clipped)."""
    root = ET.fromstring(svg)
    _, _, width, height = (float(v) for v in root.get("viewBox", "").split())
    base = float(root.get("font-size", 11))
    out = []
    for el in root.iter():
        size = float(el.get("font-size", base))
        for x, y in _extent(el, size):
            if not (-0.5 <= x <= width + 0.5 and -0.5 <= y <= height + 0.5):
                out.append(
                    f"{el.tag.removeprefix(NS)} {el.text or el.get('d', '')[:30]!r} at ({x:.0f}, {y:.0f})"
                )
                break
    return out


def _charts(page: str) -> list[str]:
    return re.findall(r"<svg .*?</svg>", page, flags=re.S)


def _y_ticks(svg: str) -> dict[str, float]:
    """Tick label → its y, for the y axis's labels (right-aligned text)."""
    root = ET.fromstring(svg)
    ticks = [t for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end" and not t.get("transform")]
    return {t.text or "": float(t.get("y", 0)) for t in ticks}


def _is_round(step: float) -> bool:
    exp = 10 ** math.floor(math.log10(step))
    return any(math.isclose(step, m * exp, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))


def summary() -> dict[str, Any]:
    """A flywheel summary with what used to clip: long names, a threshold marker in the top-right
    corner, a curve that falls far below the target, and candidates with no base model."""
    curve = [
        {"threshold": 1 - c, "coverage": c, "accuracy": 1.0 - 0.35 * c**4}
        for c in (0.01, *[i / 20 for i in range(1, 21)])
    ]
    cands = [
        {"kind": "classifier", "base_model": None, "threshold": 0.91, "promoted": True, "curve": curve,
         "test": {"accuracy": 0.65, "kept_accuracy": 0.995, "coverage": 0.98}, "train_seconds": 3.0},
        {"kind": "tool_caller", "base_model": None, "threshold": None, "promoted": False, "curve": curve[:5],
         "test": {"accuracy": 0.5, "coverage": 0.0}, "reason": "no threshold reaches 95%"},
    ]  # fmt: skip
    clusters = [
        {"key": f"refund-requests-with-long-names-{i}",
         "name": f"issue_refund: order, refund, amount {i} and more",
         "size": 1200 if i == 0 else 90 - i, "shape": "tool_call",
         "status": "promoted" if i == 0 else "too_small",
         "cost_usd": 12.5 * (i + 1), "latency_p50_ms": 1234.0, "candidates": cands if i == 0 else []}
        for i in range(7)
    ]  # fmt: skip
    return {
        "run_id": "r1",
        "params": {"target_accuracy": 0.95, "confidence": 0.5, "min_examples": 100, "min_coverage": 0.2},
        "traffic": {"calls": 9000, "cost_usd": 123.4},
        "clusters": clusters,
        "noise": {"calls": 40, "cost_usd": 1.0, "latency_p50_ms": 900.0},
        "projection": {"share_small": 0.6, "monthly_calls": 40000, "monthly_cost_before": 5000.0,
                       "monthly_cost_after": 2100.0, "monthly_saved_usd": 2900.0,
                       "latency_p50_before_ms": 1100.0, "latency_p50_after_ms": 25.0},
        "curation": {"total": 10000, "kept": 9000, "dropped": {"exact_duplicate": 700, "refusal": 300}},
        "replay": {"calls": 1500, "served_small": 900, "share_small": 0.6, "agreement": 0.974,
                   "cost_before_usd": 20.0, "cost_after_usd": 7.0, "latency_p50_before_ms": 1100.0,
                   "latency_p50_after_ms": 30.0, "escalations": {"low_confidence": 400}},
    }  # fmt: skip


def test_no_chart_of_the_report_draws_outside_its_viewbox() -> None:
    charts = _charts(render_report(summary()))
    assert len(charts) >= 8
    for svg in charts:
        assert outside(svg) == [], svg[:200]


@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_bar_charts_keep_long_category_labels_inside(n: int) -> None:
    cats = [f"a-long-category-name-{i}" for i in range(n)]
    for width in (320, 640):
        svg = bar_chart(
            cats, {"calls": [10_000.0 * (i + 1) for i in range(n)], "cost": [1.0] * n}, width=width
        )
        assert outside(svg) == []


def test_a_threshold_marker_in_a_corner_stays_inside() -> None:
    for mx, my in ((1.0, 1.0), (0.0, 1.0), (1.0, 0.5), (0.0, 0.5)):
        svg = line_chart([0, 0.5, 1], {"acc": [1, 0.97, 0.9]}, x_min=0, x_max=1, y_min=0.5, y_max=1,
                         unit="share", markers={"threshold 0.123": (mx, my)})  # fmt: skip
        assert outside(svg) == []


def test_ticks_are_round() -> None:
    assert nice_ticks(0.01, 0.5) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert nice_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.85, 1.0, 4) == [0.85, 0.9, 0.95, 1.0]
    svg = line_chart([0.01, 0.26, 0.5], {"acc": [1, 0.99, 0.97]}, x_min=0, x_max=1, unit="share")
    labels = [t.text for t in ET.fromstring(svg).iter(f"{NS}text") if t.get("text-anchor") == "middle"]
    assert labels == ["0%", "25%", "50%", "75%", "100%"]
    for svg in _charts(render_report(summary())):
        values = []
        for label in _y_ticks(svg):
            number = re.sub(r"[^\d.]", "", label)
            scale = 1e3 if label.endswith("k") else 1.0
            values.append(float(number) * scale)
        steps = {round(b - a, 9) for a, b in itertools.pairwise(values)}
        assert len(steps) <= 1, (values, svg[:120])  # evenly spaced
        assert all(_is_round(s) for s in steps if s), values


def test_coverage_curves_give_the_top_of_the_accuracy_axis_room() -> None:
    page = render_report(summary())
    curves = [svg for svg in _charts(page) if "Coverage curve" in svg]
    assert curves
    for svg in curves:
        ticks = _y_ticks(svg)
        top, bottom = ticks["100%"], max(ticks.values())
        assert "95%" in ticks
        # 95-100% takes at least a fifth of the plot's height (it was a twentieth)
        assert (ticks["95%"] - top) >= 0.2 * (bottom - top), ticks


def test_the_base_model_column_is_filled() -> None:
    page = render_report(summary())
    table = page[page.index("<th>base model</th>") :]
    first_row = table[table.index("<tr><td>") :]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", first_row)
    assert cells[0] == "classifier" and "all-MiniLM-L6-v2" in cells[1]


def test_the_replay_is_shown_beside_the_projection_and_not_promoted_task_types_say_why() -> None:
    page = render_report(summary())
    assert 'id="replay"' in page and "60.0%" in page and "97.4%" in page
    assert page.index('id="replay"') < page.index('id="projection"')
    assert "Not promoted" in page and "fewer than min_examples (100)" in page
