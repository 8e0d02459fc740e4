from __future__ import annotations

import xml.etree.ElementTree as ET

from smallfleet.report.svg import bar_chart, donut_chart, line_chart

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{NS}svg"
    return root


def test_bar_chart_draws_one_bar_per_value_scaled_to_the_axis() -> None:
    root = parse(bar_chart(["a", "b<&>"], {"calls": [10, 20], "cost": [1, 0]}, title="T", unit="$"))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 4
    heights = {r.find(f"{NS}title").text: float(r.get("height")) for r in bars}  # type: ignore[union-attr]
    assert heights["b<&> · calls: $20"] == 2 * heights["a · calls: $10"]
    assert heights["b<&> · cost: $0"] == 0


def test_stacked_bars_stack() -> None:
    root = parse(bar_chart(["x"], {"small": [3], "large": [1]}, stacked=True))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    small, large = bars
    assert abs(float(large.get("y")) + float(large.get("height")) - float(small.get("y"))) < 0.2  # type: ignore[arg-type]


def test_line_chart_breaks_on_none_and_marks_points() -> None:
    root = parse(line_chart([0, 0.5, 1], {"acc": [1.0, None, 0.8]}, y_max=1, markers={"t=0.7": (0.5, 0.9)}))
    (path,) = list(root.iter(f"{NS}path"))
    assert path.get("d").count("M") == 2  # type: ignore[union-attr]
    assert any(t.text == "t=0.7" for t in root.iter(f"{NS}text"))


def test_donut_shares() -> None:
    root = parse(donut_chart({"small": 3, "large": 1}, title="share"))
    titles = [t.text for t in root.iter(f"{NS}title")]
    assert titles == ["small: 75.0%", "large: 25.0%"]
    parse(donut_chart({"all": 1}))
    parse(donut_chart({}))
