"""Small, dependency-free SVG charts for the HTML report and the dashboard.

Every function returns one self-contained ``<svg>`` string (inline styles, no
scripts, no fonts to fetch), so a page that embeds them works offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "bar_chart", "donut_chart", "line_chart"]

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563"]

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


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
    """A value with its unit: currency before the number, anything else after."""
    return f"{unit}{_fmt(v)}" if unit in ("$", "€", "£") else f"{_fmt(v)}{unit}"


def _frame(width: int, height: int, title: str, body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{_esc(label or title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {_FONT} font-size="11">'
        f'<text x="8" y="16" font-size="13" font-weight="600" fill="#111827">{_esc(title)}</text>{body}</svg>'
    )


def _legend(names: Sequence[str], x: float, y: float) -> str:
    out, cx = [], x
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{cx:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{cx + 14:.1f}" y="{y + 1:.1f}" fill="#374151">{_esc(name)}</text>')
        cx += 24 + 6.5 * len(str(name))
    return "".join(out)


def _y_axis(x0: float, y0: float, w: float, h: float, ymax: float, unit: str) -> str:
    out = []
    for i in range(5):
        v = ymax * i / 4
        y = y0 + h - h * i / 4
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(
            f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{_esc(_u(v, unit))}</text>'
        )
    return "".join(out)


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
    """Vertical bars per category; several series side by side, or stacked."""
    names = list(series)
    n = max(len(categories), 1)
    x0, y0, w, h = 56.0, 40.0, width - 72.0, height - 90.0
    totals = [sum(series[s][i] for s in names) for i in range(len(categories))]
    peak = max(totals or [0]) if stacked else max((max(v, default=0) for v in series.values()), default=0)
    ymax = _nice_max(peak)
    slot = w / n
    parts = [_y_axis(x0, y0, w, h, ymax, unit)]
    for i, cat in enumerate(categories):
        base = y0 + h
        bw = slot * 0.7 / (1 if stacked else max(len(names), 1))
        for j, name in enumerate(names):
            v = float(series[name][i])
            bh = h * v / ymax
            bx = x0 + slot * i + slot * 0.15 + (0 if stacked else j * bw)
            by = base - bh
            color = PALETTE[j % len(PALETTE)]
            parts.append(
                f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="{max(bh, 0):.1f}" fill="{color}">'
                f"<title>{_esc(cat)} · {_esc(name)}: {_esc(_u(v, unit))}</title></rect>"
            )
            if stacked:
                base = by
        label = str(cat) if len(str(cat)) <= 14 else str(cat)[:13] + "…"
        tx = x0 + slot * (i + 0.5)
        parts.append(
            f'<text x="{tx:.1f}" y="{y0 + h + 14}" text-anchor="end" fill="#374151" '
            f'transform="rotate(-25 {tx:.1f} {y0 + h + 14})">{_esc(label)}</text>'
        )
    if len(names) > 1:
        parts.append(_legend(names, x0, 30))
    return _frame(width, height, title, "".join(parts), title)


def line_chart(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    unit: str = "",
    x_label: str = "",
    x_format: str = "{:.0%}",
    y_max: float | None = None,
    markers: Mapping[str, tuple[float, float]] | None = None,
    width: int = 480,
    height: int = 260,
) -> str:
    """Lines over a shared x axis (None values break a line); optional labelled marker points."""
    names = list(series)
    x0, y0, w, h = 56.0, 40.0, width - 76.0, height - 80.0
    xs = [float(v) for v in x]
    xmin, xmax = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if xmax == xmin:
        xmax = xmin + 1
    values = [v for s in series.values() for v in s if v is not None]
    ymax = y_max if y_max is not None else _nice_max(max(values or [0]))

    def px(v: float) -> float:
        return x0 + w * (v - xmin) / (xmax - xmin)

    def py(v: float) -> float:
        return y0 + h - h * min(max(v, 0), ymax) / ymax

    parts = [_y_axis(x0, y0, w, h, ymax, unit)]
    for i in range(5):
        v = xmin + (xmax - xmin) * i / 4
        parts.append(
            f'<text x="{px(v):.1f}" y="{y0 + h + 14}" text-anchor="middle" fill="#6b7280">'
            f"{_esc(x_format.format(v))}</text>"
        )
    if x_label:
        parts.append(
            f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 30}" text-anchor="middle" fill="#374151">'
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
        parts.append(f'<circle cx="{px(mx):.1f}" cy="{py(my):.1f}" r="4" fill="#111827"/>')
        parts.append(f'<text x="{px(mx) + 6:.1f}" y="{py(my) - 6:.1f}" fill="#111827">{_esc(label)}</text>')
    if len(names) > 1:
        parts.append(_legend(names, x0, 30))
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
