"""Small inline SVG charts for the HTML report, drawn without any plotting library.

A chart is a string of ``<svg>`` markup meant to sit inside the report's HTML, so the report
stays one file that opens offline. The markup omits the ``xmlns`` attribute (HTML5 does not need
it inline), which keeps every ``http://`` string out of the report. All text that reaches the
SVG (titles, series labels) is escaped here. The x axis is categorical (the batch sizes that were
timed, evenly spaced) because batches are usually powers of two and a linear axis would bunch
the small ones together; the y axis starts at zero so bar-like comparisons are honest.
"""

from __future__ import annotations

import math
from html import escape
from typing import Callable, Collection, Mapping, Sequence

from qdqbench.report.rows import ThroughputChart, fmt_throughput

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
BASELINE_COLOUR = "#6e7781"

Series = tuple[str, Sequence[tuple[float, float]]]


def nice_ticks(upper: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``upper`` (steps of 1, 2 or 5 times a power of ten)."""
    if not math.isfinite(upper) or upper <= 0:
        return [0.0, 1.0]
    raw = upper / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.ceil(upper / step - 1e-9)
    return [i * step for i in range(n + 1)]


def nice_range(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high - low <= 0:
        pad = abs(high) * 0.01 or 1.0  # a flat trend: a small band around its level
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step + 1e-9)
    stop = math.ceil(high / step - 1e-9)
    return [i * step for i in range(start, stop + 1)]


def line_chart_svg(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    element_id: str,
    dashed: Collection[str] = (),
    width: int = 640,
    height: int = 300,
    x_labels: Mapping[float, str] | None = None,
    y_format: Callable[[float], str] = fmt_throughput,
    zero_based: bool = True,
    max_x_labels: int = 10,
) -> str:
    """An SVG line chart of y against a categorical x; series named in ``dashed`` draw dashed.

    ``x_labels`` names x values (e.g. run dates); ``zero_based=False`` fits the y axis to the
    data, for trends whose changes are small next to their level (an accuracy of 0.90 ± 0.01).
    """
    left, right, top, bottom = 64, 170, 34, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({x for _, points in series for x, _ in points})
    ys = [y for _, points in series for _, y in points if math.isfinite(y)]
    if zero_based:
        ticks = nice_ticks(max(ys, default=0.0))
    else:
        ticks = nice_range(min(ys, default=0.0), max(ys, default=1.0))
    y_min, y_max = ticks[0], ticks[-1]
    x_text = (lambda x: x_labels.get(x, str(x))) if x_labels is not None else str
    # Label at most max_x_labels x values (a year of nightly runs would overprint otherwise).
    label_every = max(1, math.ceil(len(xs) / max(1, max_x_labels)))

    inset = 24  # keep the first and last points off the axis and the legend

    def px(x: float) -> float:
        if len(xs) == 1:
            return left + plot_w / 2
        return left + inset + (plot_w - 2 * inset) * xs.index(x) / (len(xs) - 1)

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - y_min) / (y_max - y_min))

    e = escape
    out = [
        f'<svg id="{e(element_id)}" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{e(element_id)}-title" '
        'font-family="system-ui, sans-serif" font-size="11" fill="#1f2328">',
        f'<title id="{e(element_id)}-title">{e(title)}</title>',
        f'<text x="{left}" y="20" font-size="13" font-weight="600">{e(title)}</text>',
    ]
    for t in ticks:  # horizontal grid lines and y tick labels
        y = py(t)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{e(y_format(t))}</text>'
        )
    for i, x in enumerate(xs):
        if i % label_every:
            continue
        out.append(
            f'<text x="{px(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{e(x_text(x))}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#8c959f"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" '
        f'text-anchor="middle">{e(x_label)}</text>'
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{e(y_label)}</text>'
    )
    colour_index = 0
    for i, (name, points) in enumerate(series):
        if name in dashed:
            colour, dash = BASELINE_COLOUR, ' stroke-dasharray="6 4"'
        else:
            colour, dash = PALETTE[colour_index % len(PALETTE)], ""
            colour_index += 1
        pts = [(px(x), py(y), x, y) for x, y in sorted(points) if math.isfinite(y)]
        if len(pts) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in pts)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        for a, b, x, y in pts:
            out.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}">'
                f"<title>{e(name)}, {e(x_label)} {e(x_text(x))}: {e(y_format(y))}</title></circle>"
            )
        ly = top + 8 + 18 * i  # legend entry
        lx = left + plot_w + 16
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{lx + 28}" y="{ly + 4}">{e(_clip(name, 20))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def throughput_chart_svg(chart: ThroughputChart, element_id: str) -> str:
    """The throughput-vs-batch chart of one model x task x backend, fp32 series dashed."""
    return line_chart_svg(
        chart.series,
        title=f"{chart.model} · {chart.task} · {chart.backend}: throughput vs batch",
        x_label="batch size",
        y_label="throughput (seq/s)",
        element_id=element_id,
        dashed=chart.baselines,
    )
