"""Small inline SVG charts for the HTML report, drawn without any plotting library.

A chart is a string of ``<svg>`` markup meant to sit inside the report's HTML, so the report
stays one file that opens offline. The markup omits the ``xmlns`` attribute (HTML5 does not need
it inline), which keeps every ``http://`` string out of the report. All text that reaches the
SVG (titles, series labels) is escaped here. The x axis is categorical (the batch sizes that were
timed, evenly spaced) because batches are usually powers of two and a linear axis would bunch
the small ones together; the y axis starts at zero so bar-like comparisons are honest. The
views' charts (calibrators, accuracy vs latency) are dot and scatter plots whose axes fit the
data, because accuracies differ by tenths of a point; bars (sensitivity) always include zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from html import escape

from qdqbench.report.layers import SensitivityView
from qdqbench.report.rows import ThroughputChart, fmt_shape, fmt_sig, fmt_throughput
from qdqbench.report.views import CalibratorChart, ParetoChart

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


# ----------------------------------------------------------------------------------------------
# the views' charts: calibrators (dots), accuracy vs latency (scatter), sensitivity (bars)


def _svg_open(element_id: str, title: str, width: int, height: int) -> list[str]:
    e = escape
    return [
        f'<svg id="{e(element_id)}" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{e(element_id)}-title" '
        'font-family="system-ui, sans-serif" font-size="11" fill="#1f2328">',
        f'<title id="{e(element_id)}-title">{e(title)}</title>',
        f'<text x="10" y="20" font-size="13" font-weight="600">{e(_clip(title, 90))}</text>',
    ]


def _y_axis(
    ticks: Sequence[float],
    py: Callable[[float], float],
    left: int,
    right_x: float,
    fmt: Callable[[float], str],
) -> list[str]:
    return [
        f'<line x1="{left}" y1="{py(t):.1f}" x2="{right_x:.1f}" y2="{py(t):.1f}" stroke="#eaeef2"/>'
        f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>'
        for t in ticks
    ]


def _hline(y: float, left: float, right: float, colour: str, dash: str, label: str) -> str:
    return (
        f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{colour}" '
        f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
        f'<text x="{right + 4:.1f}" y="{y + 4:.1f}" fill="{colour}">{escape(label)}</text>'
    )


def _pts(x: float | None) -> float | None:
    return x * 100 if x is not None and math.isfinite(x) else None


def _fmt_pts(x: float) -> str:
    return f"{x:.2f}"


def calibrator_chart_svg(chart: CalibratorChart, element_id: str) -> str:
    """Each calibrated scheme's score (torch fake-quant dots, engine squares) grouped by method,
    with the fp32 score (grey dashed) and the bound's threshold (red dotted) as lines."""
    slots = list(chart.rows)
    width = max(420, 130 + 70 * len(slots) + 110)
    height = 330
    left, right, top, bottom = 56, 110, 34, 80
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [
        v for r in slots for v in (_pts(r.torch_value), _pts(r.engine_value)) if v is not None
    ] + [v for v in (_pts(chart.fp32_value), _pts(chart.threshold)) if v is not None]
    ticks = nice_range(min(values, default=0.0), max(values, default=1.0))
    lo, hi = ticks[0], ticks[-1]

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    slot_w = plot_w / max(1, len(slots))

    def px(i: int) -> float:
        return left + slot_w * (i + 0.5)

    title = f"{chart.model} · {chart.task}: {chart.metric} by calibrator"
    out = _svg_open(element_id, title, width, height)
    out += _y_axis(ticks, py, left, left + plot_w, _fmt_pts)
    e = escape
    # method brackets under the x axis
    start = 0
    for method in chart.methods:
        n = sum(1 for r in slots if r.method == method)
        x0, x1 = left + slot_w * start + 4, left + slot_w * (start + n) - 4
        out.append(
            f'<line x1="{x0:.1f}" y1="{top + plot_h + 30}" x2="{x1:.1f}" y2="{top + plot_h + 30}" '
            'stroke="#8c959f"/>'
            f'<text x="{(x0 + x1) / 2:.1f}" y="{top + plot_h + 46}" text-anchor="middle" '
            f'font-weight="600">{e(method)}</text>'
        )
        start += n
    for i, r in enumerate(slots):
        out.append(
            f'<text x="{px(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{e(_clip(r.scheme, 12))}</text>"
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#8c959f"/>'
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{e(chart.metric)} (pts)</text>'
    )
    if _pts(chart.fp32_value) is not None:
        out.append(
            _hline(
                py(_pts(chart.fp32_value)),
                left,
                left + plot_w,
                BASELINE_COLOUR,
                "6 4",
                f"fp32 {_fmt_pts(_pts(chart.fp32_value))}",
            )
        )
    if _pts(chart.threshold) is not None:
        out.append(
            _hline(
                py(_pts(chart.threshold)),
                left,
                left + plot_w,
                "#cf222e",
                "2 3",
                f"bound {_fmt_pts(_pts(chart.threshold))}",
            )
        )
    torch_colour, engine_colour = PALETTE[0], PALETTE[1]
    for i, r in enumerate(slots):
        t, g = _pts(r.torch_value), _pts(r.engine_value)
        if t is not None:
            out.append(
                f'<circle cx="{px(i) - 7:.1f}" cy="{py(t):.1f}" r="5" fill="{torch_colour}">'
                f"<title>{e(r.scheme)} ({e(r.calibrator)}), torch fake-quant: "
                f"{_fmt_pts(t)}</title></circle>"
            )
        if g is not None:
            out.append(
                f'<rect x="{px(i) + 2:.1f}" y="{py(g) - 5:.1f}" width="10" height="10" '
                f'fill="none" stroke="{engine_colour}" stroke-width="2">'
                f"<title>{e(r.scheme)} ({e(r.calibrator)}), {e(r.engine)}: "
                f"{_fmt_pts(g)}</title></rect>"
            )
    ly = height - 12
    out.append(
        f'<circle cx="{left + 6}" cy="{ly - 4}" r="5" fill="{torch_colour}"/>'
        f'<text x="{left + 16}" y="{ly}">torch fake-quant</text>'
    )
    if chart.has_engine:
        out.append(
            f'<rect x="{left + 131}" y="{ly - 9}" width="10" height="10" fill="none" '
            f'stroke="{engine_colour}" stroke-width="2"/>'
            f'<text x="{left + 147}" y="{ly}">{e(chart.engine)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def pareto_chart_svg(chart: ParetoChart, element_id: str) -> str:
    """Accuracy against mean latency; Pareto-optimal points filled, ringed, joined and labelled,
    dominated ones hollow; one colour per backend."""
    width, height = 640, 340
    left, right, top, bottom = 60, 150, 34, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [(p, p.mean_ms, _pts(p.value)) for p in chart.points]
    pts = [(p, x, y) for p, x, y in pts if x is not None and y is not None and math.isfinite(x)]
    xs, ys = [x for _, x, _ in pts], [y for _, _, y in pts]
    xt = nice_range(min(xs, default=0.0), max(xs, default=1.0))
    yt = nice_range(min(ys, default=0.0), max(ys, default=1.0))

    def px(x: float) -> float:
        return left + plot_w * (x - xt[0]) / (xt[-1] - xt[0])

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - yt[0]) / (yt[-1] - yt[0]))

    e = escape
    title = f"{chart.model} · {chart.task}: {chart.metric} vs mean latency"
    out = _svg_open(element_id, title, width, height)
    out += _y_axis(yt, py, left, left + plot_w, _fmt_pts)
    for t in xt:
        out.append(
            f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + plot_h}" '
            'stroke="#f3f4f6"/>'
            f'<text x="{px(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{e(fmt_sig(t))}</text>"
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#8c959f"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        "mean latency (ms) at the largest timed batch; lower is better</text>"
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{e(chart.metric)} (pts)</text>'
    )
    backends = list(dict.fromkeys(p.backend for p, _, _ in pts))
    colour = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}
    frontier = sorted((x, y) for p, x, y in pts if p.optimal)
    if len(frontier) > 1:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in frontier)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="#1f2328" stroke-width="1" '
            'stroke-dasharray="3 3"/>'
        )
    for p, x, y in pts:
        c = colour[p.backend]
        tip = (
            f"<title>{e(p.scheme)} on {e(p.backend)} ({e(p.precision)}), "
            f"{e(fmt_shape(p.batch, p.seq))}: {_fmt_pts(y)} pts, {e(fmt_sig(x))} ms"
            f"{', Pareto-optimal' if p.optimal else ''}</title>"
        )
        if p.optimal:
            out.append(
                f'<circle class="pareto-optimal" cx="{px(x):.1f}" cy="{py(y):.1f}" r="6" '
                f'fill="{c}" stroke="#1f2328" stroke-width="1.5">{tip}</circle>'
                f'<text x="{px(x) + 8:.1f}" y="{py(y) - 6:.1f}">{e(_clip(p.scheme, 16))}</text>'
            )
        else:
            out.append(
                f'<circle class="pareto-dominated" cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" '
                f'fill="none" stroke="{c}" stroke-width="1.5">{tip}</circle>'
            )
    for i, b in enumerate(backends):
        ly, lx = top + 8 + 18 * i, left + plot_w + 16
        out.append(
            f'<circle cx="{lx + 6}" cy="{ly}" r="5" fill="{colour[b]}"/>'
            f'<text x="{lx + 16}" y="{ly + 4}">{e(_clip(b, 18))}</text>'
        )
    ly = top + 8 + 18 * len(backends) + 8
    out.append(
        f'<text x="{left + plot_w + 16}" y="{ly + 4}">filled: Pareto-optimal</text>'
        f'<text x="{left + plot_w + 16}" y="{ly + 20}">hollow: dominated</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def sensitivity_chart_svg(view: SensitivityView, element_id: str) -> str:
    """Horizontal bars per part in rank order: the proxy score with only that part quantized
    and with only that part left in float (the axis includes zero)."""
    parts = list(view.parts)
    bar, gap = 7, 8
    row_h = 2 * bar + gap
    left, right, top = 150, 40, 34
    height = top + row_h * max(1, len(parts)) + 44
    width = 640
    plot_w = width - left - right
    values = [
        v
        for p in parts
        for v in (p.only_quantized, p.only_float)
        if v is not None and math.isfinite(v)
    ]
    ticks = nice_range(min([0.0, *values]), max([0.0, *values]))
    lo, hi = ticks[0], ticks[-1]

    def px(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    e = escape
    unit = f" ({view.unit})" if view.unit else ""
    title = (
        f"{view.model} · {view.task} · {view.scheme}: sensitivity, {view.proxy or 'proxy'}{unit}"
    )
    out = _svg_open(element_id, title, width, height)
    plot_bottom = top + row_h * max(1, len(parts))
    for t in ticks:
        out.append(
            f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{plot_bottom}" '
            'stroke="#eaeef2"/>'
            f'<text x="{px(t):.1f}" y="{plot_bottom + 14}" text-anchor="middle">'
            f"{e(fmt_sig(t))}</text>"
        )
    zero = px(0.0)
    q_colour, f_colour = PALETTE[1], PALETTE[0]
    for i, p in enumerate(parts):
        y = top + i * row_h
        rank = f"{p.rank}. " if p.rank is not None else ""
        out.append(
            f'<text x="{left - 6}" y="{y + bar + 3}" text-anchor="end">'
            f"{e(_clip(rank + p.part, 24))}</text>"
        )
        for j, (v, c, what) in enumerate(
            (
                (p.only_quantized, q_colour, "only this part quantized"),
                (p.only_float, f_colour, "only this part in float"),
            )
        ):
            if v is None or not math.isfinite(v):
                continue
            x0, x1 = sorted((zero, px(v)))
            out.append(
                f'<rect x="{x0:.1f}" y="{y + j * bar:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="{bar - 1}" fill="{c}"><title>{e(p.part)}, {what}: '
                f"{e(fmt_sig(v))}{e(unit)}</title></rect>"
            )
    ly = height - 12
    out.append(
        f'<rect x="{left}" y="{ly - 8}" width="10" height="8" fill="{q_colour}"/>'
        f'<text x="{left + 14}" y="{ly}">only this part quantized</text>'
        f'<rect x="{left + 190}" y="{ly - 8}" width="10" height="8" fill="{f_colour}"/>'
        f'<text x="{left + 204}" y="{ly}">only this part in float</text>'
    )
    out.append("</svg>")
    return "\n".join(out)
