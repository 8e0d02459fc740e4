"""Small, dependency-free SVG charts for the HTML report and the dashboard.

Every function returns one self-contained ``<svg>`` string (inline styles, no
scripts, no fonts to fetch), so a page that embeds them works offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "bar_chart", "donut_chart", "line_chart", "nice_ticks", "text_width"]

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563"]

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


#: Estimated width of one character at font-size 11 (system-ui averages about 0.55 em; rounded up).
CHAR_W = 6.5


def text_width(text: str, size: float = 11.0) -> float:
    """An estimate of ``text``'s rendered width in px: what the layout leaves room for."""
    return len(str(text)) * CHAR_W * size / 11.0


def _nice_step(span: float, n: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``n`` intervals over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / n
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp * 1.0000001:
            return m * exp
    return 10 * exp


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values from ``lo`` to ``hi`` (both included when they are round), about ``n`` intervals."""
    if hi <= lo:
        hi = lo + 1
    step = _nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    out, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        out.append(round(first + k * step, 12))
        k += 1
    return out


def _nice_max(v: float) -> float:
    """The smallest round tick at or above ``v``."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    step = _nice_step(v, 4)
    return math.ceil(v / step - 1e-9) * step


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _u(v: float, unit: str) -> str:
    """A value with its unit: currency before the number, ``"share"`` (0-1) as a percentage, anything
    else after."""
    if unit == "share":
        return _pct(v)
    return f"{unit}{_fmt(v)}" if unit in ("$", "€", "£") else f"{_fmt(v)}{unit}"


def _pct(v: float) -> str:
    """A share as a percentage with as many decimals as the ticks need (95%, 97.5%)."""
    text = f"{v * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _frame(width: int, height: int, title: str, body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{_esc(label or title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {_FONT} font-size="11">'
        f'<text x="8" y="16" font-size="13" font-weight="600" fill="#111827">'
        f"{_esc(_fit(title, width - 16, 13))}</text>"
        f"{body}</svg>"
    )


def _fit(text: str, room: float, size: float = 11.0) -> str:
    """``text``, cut with an ellipsis where it would be wider than ``room`` px."""
    text = str(text)
    if text_width(text, size) <= room:
        return text
    keep = max(1, int(room / (CHAR_W * size / 11.0)) - 1)
    return text[:keep] + "…"


def _legend(names: Sequence[str], x: float, y: float, right: float) -> tuple[str, int]:
    """The legend from (``x``, ``y``), wrapping before ``right``; returns it and how many rows it took."""
    out, cx, row = [], x, 0
    for i, name in enumerate(names):
        label = _fit(name, right - x - 14)
        item = 24 + text_width(label)
        if cx > x and cx + item - 10 > right:
            cx, row = x, row + 1
        ly = y + 14 * row
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{cx:.1f}" y="{ly - 8:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{cx + 14:.1f}" y="{ly + 1:.1f}" fill="#374151">{_esc(label)}</text>')
        cx += item
    return "".join(out), row + 1


def _legend_rows(names: Sequence[str], x: float, right: float) -> int:
    return _legend(names, x, 0, right)[1] if len(names) > 1 else 0


def _y_axis(
    x0: float, y0: float, w: float, h: float, ticks: Sequence[float], lo: float, hi: float, unit: str
) -> str:
    out = []
    for v in ticks:
        y = y0 + h - h * (v - lo) / (hi - lo)
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(
            f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{_esc(_u(v, unit))}</text>'
        )
    return "".join(out)


def _left_margin(ticks: Sequence[float], unit: str) -> float:
    """Room for the widest y tick label, at least the usual 56 px."""
    return max(56.0, 12 + max((text_width(_u(v, unit)) for v in ticks), default=0.0))


#: Category labels of bar charts are drawn at this angle (degrees, rising to the right).
_TILT = 25.0


def bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    unit: str = "",
    stacked: bool = False,
    width: int = 640,
    height: int = 260,
) -> str:
    """Vertical bars per category; several series side by side, or stacked. ``unit="share"``:
    shares (0-1) on a 0-100% axis."""
    names = list(series)
    n = max(len(categories), 1)
    totals = [sum(series[s][i] for s in names) for i in range(len(categories))]
    peak = max(totals or [0]) if stacked else max((max(v, default=0) for v in series.values()), default=0)
    ymax = 1.0 if unit == "share" and peak <= 1 else _nice_max(peak)
    ticks = nice_ticks(0.0, ymax, 4)
    labels = [str(c) if len(str(c)) <= 14 else str(c)[:13] + "…" for c in categories]
    longest = max((text_width(lb) for lb in labels), default=0.0)
    cos, sin = math.cos(math.radians(_TILT)), math.sin(math.radians(_TILT))
    x0 = _left_margin(ticks, unit)
    w = width - x0 - 16.0
    slot = w / n
    # the first label runs down and to the left of its bar: leave it room
    x0 = max(x0, 8 + longest * cos - slot / 2)
    w = width - x0 - 16.0
    slot = w / n
    rows = _legend_rows(names, x0, width - 8)
    y0 = 40.0 + 14 * max(rows - 1, 0)
    h = height - y0 - (20 + longest * sin + 6)
    parts = [_y_axis(x0, y0, w, h, ticks, 0.0, ymax, unit)]
    for i, cat in enumerate(categories):
        base = y0 + h
        bw = slot * 0.7 / (1 if stacked else max(len(names), 1))
        for j, name in enumerate(names):
            v = float(series[name][i])
            bh = h * min(max(v, 0.0), ymax) / ymax
            bx = x0 + slot * i + slot * 0.15 + (0 if stacked else j * bw)
            by = base - bh
            color = PALETTE[j % len(PALETTE)]
            parts.append(
                f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="{max(bh, 0):.1f}" fill="{color}">'
                f"<title>{_esc(cat)} · {_esc(name)}: {_esc(_u(v, unit))}</title></rect>"
            )
            if stacked:
                base = by
        tx, ty = x0 + slot * (i + 0.5), y0 + h + 14
        parts.append(
            f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="end" fill="#374151" '
            f'transform="rotate(-{_TILT:g} {tx:.1f} {ty:.1f})">{_esc(labels[i])}</text>'
        )
    if len(names) > 1:
        parts.append(_legend(names, x0, 30, width - 8)[0])
    return _frame(width, height, title, "".join(parts), title)


def line_chart(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    unit: str = "",
    x_label: str = "",
    x_format: str = "{:.0%}",
    x_min: float | None = None,
    x_max: float | None = None,
    y_min: float = 0.0,
    y_max: float | None = None,
    markers: Mapping[str, tuple[float, float]] | None = None,
    width: int = 480,
    height: int = 260,
) -> str:
    """Lines over a shared x axis (None values break a line); optional labelled marker points.

    ``y_min`` starts the y axis above 0 (values below it are drawn on the axis), so a region
    that matters, e.g. accuracy from 90% to 100%, gets the chart's height. ``unit="share"``:
    shares (0-1) labelled as percentages. Ticks are round values.
    """
    names = list(series)
    xs = [float(v) for v in x]
    xmin = x_min if x_min is not None else (min(xs) if xs else 0.0)
    xmax = x_max if x_max is not None else (max(xs) if xs else 1.0)
    if xmax <= xmin:
        xmax = xmin + 1
    values = [v for s in series.values() for v in s if v is not None]
    ymax = y_max if y_max is not None else _nice_max(max(values or [0]))
    ylo = y_min if y_min < ymax else 0.0
    y_ticks = nice_ticks(ylo, ymax, 4)
    x0 = _left_margin(y_ticks, unit)
    w = width - x0 - 24.0
    rows = _legend_rows(names, x0, width - 8)
    y0 = 40.0 + 14 * max(rows - 1, 0)
    h = height - y0 - (44.0 if x_label else 28.0)

    def px(v: float) -> float:
        return x0 + w * (min(max(v, xmin), xmax) - xmin) / (xmax - xmin)

    def py(v: float) -> float:
        return y0 + h - h * (min(max(v, ylo), ymax) - ylo) / (ymax - ylo)

    parts = [_y_axis(x0, y0, w, h, y_ticks, ylo, ymax, unit)]
    for v in nice_ticks(xmin, xmax, 4):
        label = x_format.format(v)
        # the outermost labels are kept inside the chart
        tx = min(max(px(v), text_width(label) / 2 + 2), width - text_width(label) / 2 - 2)
        parts.append(
            f'<text x="{tx:.1f}" y="{y0 + h + 14:.1f}" text-anchor="middle" fill="#6b7280">'
            f"{_esc(label)}</text>"
        )
    if x_label:
        parts.append(
            f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 30:.1f}" text-anchor="middle" fill="#374151">'
            f"{_esc(x_label)}</text>"
        )
    for j, name in enumerate(names):
        color = PALETTE[j % len(PALETTE)]
        path, pen = [], "M"
        for xv, yv in zip(xs, series[name], strict=False):
            if yv is None:
                pen = "M"
                continue
            path.append(f"{pen}{px(xv):.1f},{py(float(yv)):.1f}")
            pen = "L"
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2"/>')
    for label, (mx, my) in (markers or {}).items():
        cx, cy = px(mx), py(my)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#111827"/>')
        tw = text_width(label)
        # right of the point and above it, unless that leaves the plot: then left of it, or below
        tx = cx + 7 if cx + 7 + tw <= x0 + w else cx - 7 - tw
        ty = cy - 7 if cy - 7 - 11 >= y0 else cy + 16
        parts.append(f'<text x="{max(tx, 2):.1f}" y="{ty:.1f}" fill="#111827">{_esc(label)}</text>')
    if len(names) > 1:
        parts.append(_legend(names, x0, 30, width - 8)[0])
    return _frame(width, height, title, "".join(parts), title)


def donut_chart(shares: Mapping[str, float], *, title: str = "", width: int = 320, height: int = 220) -> str:
    """A donut of the shares (any non-negative numbers; drawn as fractions of their sum)."""
    total = sum(max(v, 0) for v in shares.values()) or 1.0
    cx, cy, r, inner = 90.0, 120.0, 70.0, 42.0
    parts, angle = [], -math.pi / 2
    for i, (name, v) in enumerate(shares.items()):
        frac = max(v, 0) / total
        color = PALETTE[i % len(PALETTE)]
        if frac >= 0.9999:
            parts.append(
                f'<circle cx="{cx}" cy="{cy}" r="{(r + inner) / 2}" fill="none" stroke="{color}" '
                f'stroke-width="{r - inner}"><title>{_esc(name)}: 100%</title></circle>'
            )
        elif frac > 0:
            a2 = angle + 2 * math.pi * frac
            large = 1 if frac > 0.5 else 0
            p = [
                (cx + r * math.cos(angle), cy + r * math.sin(angle)),
                (cx + r * math.cos(a2), cy + r * math.sin(a2)),
                (cx + inner * math.cos(a2), cy + inner * math.sin(a2)),
                (cx + inner * math.cos(angle), cy + inner * math.sin(angle)),
            ]
            d = (
                f"M{p[0][0]:.1f},{p[0][1]:.1f} A{r},{r} 0 {large} 1 {p[1][0]:.1f},{p[1][1]:.1f} "
                f"L{p[2][0]:.1f},{p[2][1]:.1f} A{inner},{inner} 0 {large} 0 {p[3][0]:.1f},{p[3][1]:.1f} Z"
            )
            parts.append(f'<path d="{d}" fill="{color}"><title>{_esc(name)}: {frac:.1%}</title></path>')
            angle = a2
        ly = 50 + 18 * i
        parts.append(f'<rect x="180" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="195" y="{ly}" fill="#374151">{_esc(name)} {frac:.0%}</text>')
    return _frame(width, height, title, "".join(parts), title)
