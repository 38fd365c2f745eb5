"""Line charts as inline SVG, drawn on the server: no chart library, nothing to load.

A chart is a list of series, each a name and its (unix time, value) points; the x axis spans
``start``..``end``, the y axis 0..the largest value. The SVG has a title and a description for
screen readers, and the last value of each series is written beside the chart as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH = 600
HEIGHT = 160
PAD_LEFT = 48
PAD_BOTTOM = 20
PAD_TOP = 8
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


def number(value: float, unit: str = "") -> str:
    """A value as a chart labels it: 1.2k, 3.4M, 0.25 s."""
    if not math.isfinite(value):
        return "no value"  # NaN (a quantile of nothing) or Inf: int(value) would raise
    size = abs(value)
    if size >= 1e6:
        text = f"{value / 1e6:.1f}M"
    elif size >= 1e3:
        text = f"{value / 1e3:.1f}k"
    elif size >= 10 or value == int(value):
        text = f"{value:.0f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def line_chart(
    title: str, series: Sequence[Series], start: float, end: float, unit: str = ""
) -> Markup:
    """An SVG line chart of ``series`` over [start, end] (unix seconds)."""
    top = max((v for s in series for _, v in s.points), default=0.0)
    top = top * 1.1 if top > 0 else 1.0
    span = max(end - start, 1.0)
    plot_w = WIDTH - PAD_LEFT - 4
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP

    def x(t: float) -> float:
        return PAD_LEFT + (t - start) / span * plot_w

    def y(v: float) -> float:
        return PAD_TOP + plot_h - v / top * plot_h

    last = (
        ", ".join(f"{s.name}: {number(s.points[-1][1], unit)}" for s in series if s.points)
        or "no data"
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="none" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title><desc>{escape(last)}</desc>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        v = top / 1.1 * fraction if top != 1.0 else fraction
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - 4}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}"/><text class="axis" x="{PAD_LEFT - 4}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end">{escape(number(v, unit))}</text>'
        )
    # Over a day or more, HH:MM alone would read the same at both ends: add the date.
    form = "%d %b %H:%M" if span >= 86400 else "%H:%M"
    for when, anchor in ((start, "start"), (end, "end")):
        label = datetime.fromtimestamp(when, UTC).strftime(form)
        parts.append(
            f'<text class="axis" x="{x(when):.1f}" y="{HEIGHT - 4}" '
            f'text-anchor="{anchor}">{label}</text>'
        )
    for i, s in enumerate(series):
        if not s.points:
            continue
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        if len(s.points) == 1:
            t, v = s.points[0]
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch c{i % len(COLOURS)}"></span>'
        f"{escape(s.name)}: {escape(number(s.points[-1][1], unit) if s.points else 'no data')}"
        "</li>"
        for i, s in enumerate(series)
    )
    return Markup(  # noqa: S704 - every interpolated value above is escaped or numeric
        f'<figure class="chart-box"><figcaption>{escape(title)}</figcaption>{"".join(parts)}'
        f'<ul class="legend">{legend}</ul></figure>'
    )
